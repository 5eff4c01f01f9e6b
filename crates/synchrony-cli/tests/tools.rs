//! Each tool across real processes on loopback, with a member SIGKILLed while it works:
//! the survivors' accounts (printed by `synchrony tool` as JSON lines) must agree and be
//! complete.

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

struct Member {
    name: String,
    child: Child,
    lines: Arc<Mutex<Vec<Value>>>,
}

impl Member {
    fn events(&self, kind: &str) -> Vec<Value> {
        self.lines.lock().expect("lines").iter().filter(|v| v["event"] == kind).cloned().collect()
    }

    /// Once it is a member.
    fn ready(self) -> Self {
        self.wait_for("member", Duration::from_secs(10));
        self
    }

    fn wait_for(&self, kind: &str, within: Duration) {
        let t = Instant::now();
        while self.events(kind).is_empty() {
            assert!(t.elapsed() < within, "{} printed no {kind} within {within:?}", self.name);
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("binds").local_addr().expect("addr").port()
}

/// Starts `synchrony tool --tool TOOL` as `name`, joining through `contact`.
fn member(tool: &str, name: &str, port: u16, contact: Option<u16>, extra: &[&str]) -> Member {
    spawn_member(tool, name, port, contact, extra, None).ready()
}

/// Starts `synchrony tool --tool TOOL` as `name` (see [`member`]) with one environment
/// variable set, without waiting for it to be a member.
fn spawn_member(
    tool: &str,
    name: &str,
    port: u16,
    contact: Option<u16>,
    extra: &[&str],
    env: Option<(&str, &str)>,
) -> Member {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_synchrony"));
    cmd.envs(env);
    cmd.args(["tool", "--tool", tool, "--name", name, "--listen", &format!("127.0.0.1:{port}")]);
    cmd.args(["--failure-timeout", "300ms", "--heartbeat", "30ms", "--exit-after", "6s"]);
    if let Some(c) = contact {
        cmd.args(["--contact", &format!("127.0.0.1:{c}")]);
    }
    // (SYNCHRONY_TEST_LOGS=DIR keeps each member's log there, for a failure's story.)
    let stderr = match std::env::var_os("SYNCHRONY_TEST_LOGS") {
        Some(dir) => {
            Stdio::from(std::fs::File::create(PathBuf::from(dir).join(format!("{name}-{port}.log"))).expect("log"))
        }
        None => Stdio::null(),
    };
    cmd.args(extra).stdout(Stdio::piped()).stderr(stderr);
    let mut child = cmd.spawn().expect("starts");
    let out = child.stdout.take().expect("stdout");
    let lines: Arc<Mutex<Vec<Value>>> = Arc::default();
    let sink = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str(&line) {
                sink.lock().expect("lines").push(v);
            }
        }
    });
    Member { name: name.into(), child, lines }
}

/// Three members (the third killed `kill_after` after it started); waits for the others to
/// exit and returns them.
fn three(tool: &str, args: [&[&str]; 3], kill_after: Duration) -> Vec<Member> {
    let p: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let a = member(tool, "n1", p[0], None, args[0]);
    let b = member(tool, "n2", p[1], Some(p[0]), args[1]);
    let mut c = member(tool, "n3", p[2], Some(p[0]), args[2]);
    std::thread::sleep(kill_after);
    c.child.kill().expect("SIGKILL");
    let _ = c.child.wait();
    let mut survivors = vec![a, b];
    for m in &mut survivors {
        let status = m.child.wait().expect("exits");
        assert!(status.success(), "{} failed: {status}", m.name);
    }
    survivors
}

#[test]
fn replicated_map_survivors_agree_and_keep_every_acknowledged_put() {
    let ops: &[&str] = &["--ops", "150", "--every", "5ms"];
    let ms = three("map", [ops, ops, ops], Duration::from_millis(800));
    let last: Vec<Value> = ms.iter().map(|m| m.events("map").last().cloned().expect("a map line")).collect();
    assert_eq!(last[0]["digest"], last[1]["digest"], "survivors differ: {last:?}");
    let acked: u64 = ms.iter().map(|m| m.events("put").iter().filter(|p| p["ok"] == true).count() as u64).sum();
    assert_eq!(acked, 300, "every survivor's put returned");
    assert!(last[0]["len"].as_u64().expect("len") >= acked, "acknowledged puts lost: {last:?}");
}

#[test]
fn a_killed_holder_returns_its_permit_and_holders_never_overlap() {
    let p: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let rounds: &[&str] = &["--ops", "10", "--every", "20ms", "--delay", "1500ms"];
    let a = member("lock", "n1", p[0], None, rounds);
    let mut c = member("lock", "n3", p[2], Some(p[0]), &["--hold-forever"]);
    c.wait_for("granted", Duration::from_secs(5));
    let b = member("lock", "n2", p[1], Some(p[0]), rounds);
    std::thread::sleep(Duration::from_millis(1000));
    let killed_at = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_micros();
    c.child.kill().expect("SIGKILL");
    let _ = c.child.wait();
    let mut intervals = Vec::new();
    for mut m in [a, b] {
        assert!(m.child.wait().expect("exits").success());
        assert_eq!(m.events("done").len(), 1, "{} did not finish its rounds", m.name);
        let g = m.events("granted");
        let r = m.events("released");
        assert_eq!((g.len(), r.len()), (10, 10));
        for (g, r) in g.iter().zip(&r) {
            let (s, e) = (g["at_us"].as_u64().expect("us") as u128, r["at_us"].as_u64().expect("us") as u128);
            assert!(s > killed_at, "{} held the lock while the killed holder had it", m.name);
            intervals.push((s, e, m.name.clone()));
        }
    }
    intervals.sort();
    for w in intervals.windows(2) {
        assert!(w[0].1 <= w[1].0, "two holders at once: {:?} and {:?}", w[0], w[1]);
    }
}

#[test]
fn coordinator_cohort_answers_every_call_once_through_a_coordinators_death() {
    let calls: &[&str] = &["--ops", "60", "--every", "20ms"];
    let ms = three("cohort", [calls, calls, &[]], Duration::from_millis(600));
    let mut by = std::collections::BTreeSet::new();
    for m in &ms {
        assert!(m.events("error").is_empty(), "{}: {:?}", m.name, m.events("error"));
        let replies = m.events("reply");
        assert_eq!(replies.len(), 60, "{} got {} replies", m.name, replies.len());
        for r in replies {
            assert_eq!(r["req"], r["want"], "a reply to another request");
            by.insert(r["by"].as_str().expect("by").to_string());
        }
    }
    assert!(by.iter().any(|b| b.starts_with("n3#")), "the killed member never coordinated: {by:?}");
    assert!(by.len() >= 2, "no takeover: {by:?}");
}

#[test]
fn parallel_queries_count_every_row_once_while_a_member_dies() {
    let q: &[&str] = &["--ops", "40", "--every", "20ms"];
    let ms = three("pquery", [q, &[], &[]], Duration::from_millis(400));
    let answers = ms[0].events("answer");
    assert!(ms[0].events("error").is_empty(), "{:?}", ms[0].events("error"));
    assert_eq!(answers.len(), 40);
    for a in &answers {
        assert_eq!(a["sum"], a["want"], "a row lost or counted twice: {a}");
    }
    assert!(answers.iter().any(|a| a["parts"] == 3) && answers.iter().any(|a| a["parts"] == 2));
}

#[test]
fn configuration_versions_agree_on_every_message() {
    let ops: &[&str] = &["--ops", "100", "--every", "10ms"];
    let ms = three("config", [ops, ops, ops], Duration::from_millis(500));
    let seen: Vec<std::collections::BTreeMap<String, u64>> = ms
        .iter()
        .map(|m| {
            m.events("msg")
                .iter()
                .map(|e| (e["id"].as_str().expect("id").to_string(), e["version"].as_u64().expect("version")))
                .collect()
        })
        .collect();
    let both: Vec<(&String, &u64, u64)> =
        seen[0].iter().filter_map(|(id, v)| seen[1].get(id).map(|w| (id, v, *w))).collect();
    assert!(both.len() >= 150, "too few messages seen by both: {}", both.len());
    let differ: Vec<_> = both.iter().filter(|(_, v, w)| **v != *w).collect();
    assert!(differ.is_empty(), "messages seen under different configurations: {differ:?}");
}

#[test]
fn news_subscriber_gets_a_posters_postings_in_order_and_none_lost() {
    let ms = three(
        "news",
        [
            &["--ops", "100", "--every", "10ms", "--delay", "1s"],
            &["--subscribe", "prices.*"],
            &["--ops", "100", "--every", "10ms", "--delay", "1s"],
        ],
        Duration::from_millis(1500),
    );
    let from_n1: Vec<u64> = ms[1]
        .events("posting")
        .iter()
        .filter(|p| p["from"].as_str().is_some_and(|f| f.starts_with("n1#")))
        .map(|p| p["n"].as_u64().expect("n"))
        .collect();
    assert_eq!(from_n1, (0..100).collect::<Vec<_>>());
    assert!(ms[1].events("posting").iter().any(|p| p["subject"] == "prices.n3"));
}

/// How the members of a logged map fail.
#[derive(Clone, Copy, Debug)]
enum Failure {
    /// SIGKILL, all at once.
    AtOnce,
    /// SIGKILL one by one, the last a while after the others.
    OneByOne,
    /// n1 dies in the middle of a log append and n2 in the middle of a checkpoint (fault
    /// injection cuts a disk write in half and aborts); n3 is SIGKILLed after both.
    MidWrite,
}

/// Three members of a logged map make durable updates (applied, logged, flushed) and all
/// fail (see [`Failure`]). All three restart; the group must come back from the last to
/// fail, with every update any of them reported durable, and every member's map equal.
fn total_failure(how: Failure) {
    let dirs: Vec<PathBuf> = (1..=3)
        .map(|i| std::env::temp_dir().join(format!("synchrony-durable-{}-{how:?}-n{i}", std::process::id())))
        .collect();
    for d in &dirs {
        let _ = std::fs::remove_dir_all(d);
    }
    let run = |ops: &str, crashes: [Option<(&str, &str)>; 3]| -> Vec<Member> {
        let p: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let mut ms = Vec::new();
        for i in 0..3 {
            let dir = dirs[i].to_str().expect("utf-8").to_string();
            let extra = ["--data-dir", &dir, "--ops", ops, "--every", "5ms"];
            let contact = (i > 0).then_some(p[0]);
            ms.push(spawn_member("durable", &format!("n{}", i + 1), p[i], contact, &extra, crashes[i]).ready());
        }
        ms
    };
    let crashes = match how {
        // The map checkpoints every 20 updates: the 4th checkpoint comes around update 80.
        Failure::MidWrite => [
            Some((synchrony::storage::CRASH_ENV, "append:150")),
            Some((synchrony::storage::CRASH_ENV, "checkpoint:4")),
            None,
        ],
        _ => [None, None, None],
    };
    let mut first = run("1000", crashes);
    for m in &first {
        m.wait_for("recovered", Duration::from_secs(10));
    }
    match how {
        Failure::AtOnce => {
            std::thread::sleep(Duration::from_millis(1200));
            for m in &mut first {
                m.child.kill().expect("SIGKILL");
            }
        }
        Failure::OneByOne => {
            std::thread::sleep(Duration::from_millis(1200));
            for (k, pause) in [(2, 300), (1, 700), (0, 0)] {
                first[k].child.kill().expect("SIGKILL");
                std::thread::sleep(Duration::from_millis(pause));
            }
        }
        Failure::MidWrite => {
            use std::os::unix::process::ExitStatusExt;
            let t = Instant::now();
            for m in &mut first[..2] {
                let status = loop {
                    if let Some(s) = m.child.try_wait().expect("status") {
                        break s;
                    }
                    assert!(t.elapsed() < Duration::from_secs(30), "{} did not die in its write", m.name);
                    std::thread::sleep(Duration::from_millis(10));
                };
                assert_eq!(status.signal(), Some(6), "{} was to abort in the middle of a write: {status}", m.name);
            }
            std::thread::sleep(Duration::from_millis(300));
            first[2].child.kill().expect("SIGKILL");
        }
    }
    let mut durable = std::collections::BTreeSet::new();
    for m in &mut first {
        let _ = m.child.wait();
        durable.extend(m.events("durable").iter().map(|e| e["key"].as_str().expect("key").to_string()));
    }
    assert!(durable.len() > 50, "too few durable updates to check: {}", durable.len());
    let second = run("0", [None, None, None]);
    let mut maps = Vec::new();
    for m in &second {
        m.wait_for("keys", Duration::from_secs(15));
    }
    std::thread::sleep(Duration::from_millis(1500));
    for m in &second {
        let how = m.events("recovered")[0]["how"].as_str().expect("how").to_string();
        let keys: std::collections::BTreeSet<String> = m.events("keys").last().expect("keys")["keys"]
            .as_array()
            .expect("array")
            .iter()
            .map(|k| k.as_str().expect("key").to_string())
            .collect();
        let lost: Vec<&String> = durable.difference(&keys).take(5).collect();
        assert!(
            lost.is_empty(),
            "{} ({how}) lost durable updates, e.g. {lost:?} ({} of {})",
            m.name,
            durable.len() - durable.intersection(&keys).count(),
            durable.len()
        );
        maps.push((how, keys));
    }
    assert!(maps.windows(2).all(|w| w[0].1 == w[1].1), "the restarted members differ");
    let hows: Vec<&str> = maps.iter().map(|(h, _)| h.as_str()).collect();
    println!(
        "{} durable updates before the kills; after the restart {} keys everywhere; {hows:?}",
        durable.len(),
        maps[0].1.len()
    );
    assert_eq!(
        maps.iter().filter(|(h, _)| h.starts_with("Restarted")).count(),
        1,
        "one member restarts the group: {maps:?}"
    );
    for mut m in second {
        let _ = m.child.kill();
        let _ = m.child.wait();
    }
    for d in &dirs {
        let _ = std::fs::remove_dir_all(d);
    }
}

#[test]
fn a_logged_map_comes_back_from_the_last_to_fail_after_all_are_killed_at_once() {
    total_failure(Failure::AtOnce);
}

#[test]
fn a_logged_map_comes_back_from_the_last_to_fail_after_one_by_one_kills() {
    total_failure(Failure::OneByOne);
}

#[test]
fn a_logged_map_comes_back_after_crashes_in_the_middle_of_a_log_append_and_a_checkpoint() {
    total_failure(Failure::MidWrite);
}

/// The traces of a tool's processes pass `synchrony check`: a joiner's state is the tool's
/// own (not the delivered set), which the checker says it did not check, instead of
/// flagging it as a G11 violation.
#[test]
fn the_traces_of_a_tools_processes_pass_the_checker() {
    let dir = std::env::temp_dir().join(format!("synchrony-tool-traces-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let trace = |n: &str| dir.join(format!("{n}.jsonl")).display().to_string();
    let (t1, t2, t3) = (trace("n1"), trace("n2"), trace("n3"));
    let args =
        |t: &str| vec!["--ops".to_string(), "60".into(), "--every".into(), "5ms".into(), "--trace".into(), t.into()];
    let (a1, a2, a3) = (args(&t1), args(&t2), args(&t3));
    let (r1, r2, r3): (Vec<&str>, Vec<&str>, Vec<&str>) = (
        a1.iter().map(String::as_str).collect(),
        a2.iter().map(String::as_str).collect(),
        a3.iter().map(String::as_str).collect(),
    );
    let _ = three("map", [&r1, &r2, &r3], Duration::from_millis(800));
    // The killed process's last words, as a test harness writes them.
    let text = std::fs::read_to_string(&t3).expect("n3's trace");
    let last: Value = serde_json::from_str(text.lines().last().expect("a line")).expect("json");
    let crash = format!(
        "{{\"p\":{},\"i\":{},\"t\":{},\"ev\":\"crash\"}}\n",
        last["p"],
        last["i"].as_u64().expect("i") + 1,
        last["t"].as_u64().expect("t") + 1
    );
    std::fs::write(&t3, text + &crash).expect("writes");
    let out = Command::new(env!("CARGO_BIN_EXE_synchrony")).args(["check", &t1, &t2, &t3]).output().expect("runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "check failed:\n{stdout}");
    assert!(stdout.contains(" 0 violations"), "{stdout}");
    assert!(stdout.contains("not checked: G11"), "says what it skipped: {stdout}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A small pseudo-random sequence (xorshift), seeded from the clock and printed, so that a
/// failing order can be told apart and replayed by hand.
struct Shuffle(u64);

impl Shuffle {
    fn new() -> Self {
        let seed =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64);
        println!("order seed {seed}");
        Shuffle(seed | 1)
    }

    fn next(&mut self, below: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % below
    }

    fn order(&mut self, n: usize) -> Vec<usize> {
        let mut v: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            v.swap(i, self.next(i as u64 + 1) as usize);
        }
        v
    }
}

/// Five members of a logged map, each started with the same `--peers` list (no founder
/// picked by hand), in a random order with random delays: one cluster forms (every member's
/// map is the same). All five are SIGKILLed and started again the same way: one cluster
/// again, with every update reported durable before the kills, restarted by one member.
#[test]
fn five_peers_started_in_any_order_form_one_cluster_and_come_back_after_all_are_killed() {
    let ports: Vec<u16> = (0..5).map(|_| free_port()).collect();
    let list = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect::<Vec<_>>().join(",");
    let dirs: Vec<PathBuf> =
        (1..=5).map(|i| std::env::temp_dir().join(format!("synchrony-peers-{}-n{i}", std::process::id()))).collect();
    for d in &dirs {
        let _ = std::fs::remove_dir_all(d);
    }
    let mut shuffle = Shuffle::new();
    let mut start_all = |ops: &str| -> Vec<Member> {
        let mut ms: Vec<Option<Member>> = (0..5).map(|_| None).collect();
        for i in shuffle.order(5) {
            std::thread::sleep(Duration::from_millis(shuffle.next(700)));
            let dir = dirs[i].to_str().expect("utf-8").to_string();
            let extra = ["--peers", &list, "--data-dir", &dir, "--ops", ops, "--every", "5ms", "--exit-after", "30s"];
            ms[i] = Some(spawn_member("durable", &format!("n{}", i + 1), ports[i], None, &extra, None));
        }
        let ms: Vec<Member> = ms.into_iter().map(|m| m.expect("started")).collect();
        for m in &ms {
            m.wait_for("recovered", Duration::from_secs(20));
        }
        ms
    };
    let keys_of = |m: &Member| -> std::collections::BTreeSet<String> {
        m.events("keys").last().map_or_else(Default::default, |k| {
            k["keys"].as_array().expect("array").iter().map(|k| k.as_str().expect("key").to_string()).collect()
        })
    };
    let settle = |ms: &[Member], want: usize| {
        let t = Instant::now();
        while !(ms.iter().all(|m| keys_of(m).len() >= want) && ms.windows(2).all(|w| keys_of(&w[0]) == keys_of(&w[1])))
        {
            assert!(t.elapsed() < Duration::from_secs(20), "the members' maps did not agree: one cluster?");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let mut first = start_all("100");
    settle(&first, 500);
    let mut durable = std::collections::BTreeSet::new();
    for m in &mut first {
        m.child.kill().expect("SIGKILL");
        let _ = m.child.wait();
        durable.extend(m.events("durable").iter().map(|e| e["key"].as_str().expect("key").to_string()));
    }
    assert_eq!(durable.len(), 500, "every put of the first run was durable");
    let mut second = start_all("0");
    settle(&second, durable.len());
    let restarted = second
        .iter()
        .filter(|m| m.events("recovered")[0]["how"].as_str().is_some_and(|h| h.starts_with("Restarted")))
        .count();
    assert_eq!(restarted, 1, "one member restarts the logged group");
    assert!(durable.is_subset(&keys_of(&second[0])), "every durable update is back");
    for m in &mut second {
        let _ = m.child.kill();
        let _ = m.child.wait();
    }
    for d in &dirs {
        let _ = std::fs::remove_dir_all(d);
    }
}
