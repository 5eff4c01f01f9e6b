//! Bootstrap from a peer list across a true partition: five hosts in network namespaces of
//! their own (veth pairs on one bridge, as `shared/peers/corosync/run.sh` builds them), a
//! partition made by setting links down (silence, no reset). Needs root and iproute2, so
//! it runs by name: `cargo test --release -p synchrony-cli --test partition -- --ignored`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The namespaces this test made, removed (with every process in them killed) on drop.
struct Hosts {
    prefix: String,
    n: usize,
    children: Vec<Child>,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("runs ip");
    assert!(out.status.success(), "ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
}

impl Hosts {
    /// `n` hosts `PREFIX1..n` at 10.198.77.1..n, each with a veth to the bridge host.
    fn new(n: usize) -> Hosts {
        let prefix = format!("syb{}-", std::process::id() % 100_000);
        let hosts = Hosts { prefix: prefix.clone(), n, children: Vec::new() };
        ip(&["netns", "add", &format!("{prefix}br")]);
        ip(&["-n", &format!("{prefix}br"), "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &format!("{prefix}br"), "link", "set", "br0", "up"]);
        for i in 1..=n {
            let ns = format!("{prefix}{i}");
            ip(&["netns", "add", &ns]);
            ip(&["-n", &ns, "link", "set", "lo", "up"]);
            let v = format!("v{i}");
            ip(&[
                "-n",
                &format!("{prefix}br"),
                "link",
                "add",
                &v,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                &ns,
            ]);
            ip(&["-n", &format!("{prefix}br"), "link", "set", &v, "master", "br0"]);
            ip(&["-n", &format!("{prefix}br"), "link", "set", &v, "up"]);
            ip(&["-n", &ns, "addr", "add", &format!("10.198.77.{i}/24"), "dev", "eth0"]);
            ip(&["-n", &ns, "link", "set", "eth0", "up"]);
        }
        hosts
    }

    /// Host `i`'s link to the bridge up or down (down: a true partition of that host).
    fn link(&self, i: usize, up: bool) {
        ip(&["-n", &format!("{}br", self.prefix), "link", "set", &format!("v{i}"), if up { "up" } else { "down" }]);
    }

    /// Starts `synchrony node` on host `i` with the peer list of every host.
    fn start(&mut self, i: usize, dir: &Path) {
        let list: Vec<String> = (1..=self.n).map(|j| format!("10.198.77.{j}:7001")).collect();
        let log = std::fs::File::create(dir.join(format!("n{i}.log"))).expect("log");
        let child = Command::new("ip")
            .args(["netns", "exec", &format!("{}{i}", self.prefix), env!("CARGO_BIN_EXE_synchrony"), "node"])
            .args(["--name", &format!("n{i}"), "--listen", &format!("10.198.77.{i}:7001"), "--peers", &list.join(",")])
            .args(["--join", "g", "--failure-timeout", "300ms", "--heartbeat", "30ms"])
            .arg("--trace")
            .arg(dir.join(format!("n{i}.jsonl")))
            .env("RUST_LOG", "synchrony_engine=info,synchrony_runtime=info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starts");
        self.children.push(child);
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for i in 1..=self.n {
            let _ = Command::new("ip").args(["netns", "del", &format!("{}{i}", self.prefix)]).status();
        }
        let _ = Command::new("ip").args(["netns", "del", &format!("{}br", self.prefix)]).status();
    }
}

/// The last view of `g` each node installed (its id and members), from its trace.
fn last_views(dir: &Path, nodes: &[usize]) -> Vec<Option<(u64, Vec<String>)>> {
    nodes
        .iter()
        .map(|i| {
            let text = std::fs::read_to_string(dir.join(format!("n{i}.jsonl"))).unwrap_or_default();
            text.lines()
                .rev()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .find(|v| v["ev"] == "view")
                .map(|v| {
                    let members =
                        v["members"].as_array().expect("members").iter().map(|m| m.as_str().expect("id").to_string());
                    (v["view"].as_u64().expect("id"), members.collect())
                })
        })
        .collect()
}

fn wait_until(secs: u64, mut done: impl FnMut() -> bool) -> bool {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(secs) {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    done()
}

/// Two peers of five on each side of a partition form nothing (neither side has a majority
/// of the list); a third on one side makes that side the cluster, the other side still
/// nothing; when the partition heals, the other two join the same cluster. Every trace
/// passes the checker.
#[test]
#[ignore = "needs root and iproute2 (network namespaces): run by name"]
fn peers_on_both_sides_of_a_partition_never_form_two_clusters() {
    let dir: PathBuf = std::env::temp_dir().join(format!("synchrony-partition-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let mut hosts = Hosts::new(5);
    // Side A: hosts 1, 2 (and later 5); side B: hosts 3, 4, cut off from A.
    hosts.link(3, false);
    hosts.link(4, false);
    for i in [1, 3, 2, 4] {
        hosts.start(i, &dir);
        std::thread::sleep(Duration::from_millis(300));
    }
    std::thread::sleep(Duration::from_secs(4));
    let views = last_views(&dir, &[1, 2, 3, 4]);
    assert!(views.iter().all(Option::is_none), "two of five on each side formed something: {views:?}");
    hosts.start(5, &dir);
    let a = wait_until(15, || last_views(&dir, &[1, 2, 5]).iter().all(|v| v.as_ref().is_some_and(|v| v.1.len() == 3)));
    assert!(a, "three of five formed the cluster on their side: {:?}", last_views(&dir, &[1, 2, 5]));
    std::thread::sleep(Duration::from_secs(2));
    assert!(last_views(&dir, &[3, 4]).iter().all(Option::is_none), "the minority side formed a second cluster");
    hosts.link(3, true);
    hosts.link(4, true);
    let all = wait_until(20, || {
        let v = last_views(&dir, &[1, 2, 3, 4, 5]);
        v.iter().all(|v| v.as_ref().is_some_and(|v| v.1.len() == 5)) && v.windows(2).all(|w| w[0] == w[1])
    });
    assert!(all, "after the heal, one cluster of five: {:?}", last_views(&dir, &[1, 2, 3, 4, 5]));
    drop(hosts);
    let traces: Vec<PathBuf> = (1..=5).map(|i| dir.join(format!("n{i}.jsonl"))).collect();
    let out = Command::new(env!("CARGO_BIN_EXE_synchrony")).arg("check").args(&traces).output().expect("check runs");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "the traces fail the checker:\n{report}");
    println!("{}", report.lines().last().unwrap_or(""));
    let _ = std::fs::remove_dir_all(&dir);
}
