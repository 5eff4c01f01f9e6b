//! Real processes on loopback: `synchrony demo` starts `synchrony load` processes, SIGKILLs
//! one, SIGSTOPs one past the failure timeout and SIGCONTs it, starts a joiner during the
//! traffic, and checks every trace; with `--intruders` the cluster has a secret, and an
//! intruder with the wrong secret and a sender of garbage bytes must be turned away and
//! counted. Each trace must then also pass `synchrony check --quiescent` on its own.

use std::path::Path;
use std::process::Command;

fn synchrony() -> Command {
    Command::new(env!("CARGO_BIN_EXE_synchrony"))
}

fn leftovers(dir: &Path) -> String {
    let out = Command::new("pgrep").arg("-af").arg(dir.to_str().expect("utf-8 path")).output();
    out.map(|o| String::from_utf8_lossy(&o.stdout).to_string()).unwrap_or_default()
}

fn demo(extra: &[&str], name: &str) {
    let dir = std::env::temp_dir().join(format!("synchrony-test-{name}-{}", std::process::id()));
    let out = synchrony().arg("demo").args(extra).arg("--keep").arg(&dir).output().expect("runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "demo {extra:?} failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("every guarantee holds"), "{stdout}");
    assert!(stdout.contains("n6#1 loaded the state"), "the joiner got no state:\n{stdout}");
    assert!(stdout.contains("- n5#1"), "the killed member was not excluded:\n{stdout}");
    assert!(stdout.contains("n4#2"), "the paused member did not rejoin as a new incarnation:\n{stdout}");
    assert!(stdout.contains("the replicated map: t1 and t2 hold the same"), "no map verdict:\n{stdout}");
    assert!(stdout.contains("t3's permit came back"), "the killed holder's lock did not return:\n{stdout}");
    let traces: Vec<_> = std::fs::read_dir(&dir)
        .expect("traces kept")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    assert_eq!(traces.len(), 6, "one trace per process: {traces:?}");
    let check = synchrony().arg("check").arg("--quiescent").args(&traces).output().expect("runs");
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stdout));
    assert_eq!(leftovers(&dir), "", "processes left running");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn five_loads_with_a_kill_a_pause_and_a_joiner_then_with_a_secret_and_intruders() {
    demo(&[], "plain");
    demo(&["--intruders"], "secret");
}

/// A `synchrony node` in group `g` with a 300 ms failure timeout, founding or joining.
fn node(name: &str, listen: &str, contact: Option<&str>) -> std::process::Child {
    let mut c = synchrony();
    c.args(["node", "--name", name, "--listen", listen, "--join", "g", "--failure-timeout", "300ms"]);
    if let Some(c2) = contact {
        c.args(["--contact", c2]);
    }
    c.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null()).spawn().expect("starts")
}

/// A node SIGKILLed and restarted at once, without a data directory, is a new incarnation
/// and joins again (it did not, when incarnations were the clock's seconds).
#[test]
fn a_node_killed_and_restarted_at_once_rejoins() {
    let port = |k: u16| 17300 + (std::process::id() % 500) as u16 * 3 + k;
    let (a, b, c) =
        (format!("127.0.0.1:{}", port(0)), format!("127.0.0.1:{}", port(1)), format!("127.0.0.1:{}", port(2)));
    let mut first = node("a", &a, None);
    std::thread::sleep(std::time::Duration::from_millis(500));
    // Three, so that the two that stay keep their majority.
    let mut third = node("c", &c, Some(&a));
    std::thread::sleep(std::time::Duration::from_millis(800));
    // Start, kill and restart b within one second of the clock (the case that hung).
    while std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("after 1970").subsec_millis() > 50 {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let mut b1 = node("b", &b, Some(&a));
    std::thread::sleep(std::time::Duration::from_millis(400));
    b1.kill().expect("SIGKILL");
    let _ = b1.wait();
    let mut b2 = node("b", &b, Some(&a));
    // The new incarnation is a member within a few seconds (the join timeout is 30 s).
    let mut joined = false;
    for _ in 0..50 {
        std::thread::sleep(std::time::Duration::from_millis(100));
        let out = synchrony().args(["status", &b]).output().expect("status runs");
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        if text.lines().next().is_some_and(|l| l.starts_with("b#") && l.ends_with(": member")) {
            joined = true;
            break;
        }
    }
    for p in [&mut first, &mut third, &mut b2] {
        let _ = p.kill();
        let _ = p.wait();
    }
    assert!(joined, "the restarted node did not become a member within 5 s");
}

/// SIGTERM is a clean leave: of two `synchrony node` processes, the one that stays goes on as
/// a member on its own (it lost its majority when the other's exit was taken for a failure).
#[test]
fn a_sigtermed_node_leaves_and_its_pair_goes_on() {
    let port = |k: u16| 18400 + (std::process::id() % 500) as u16 * 2 + k;
    let (a, b) = (format!("127.0.0.1:{}", port(0)), format!("127.0.0.1:{}", port(1)));
    let status = |addr: &str| {
        let out = synchrony().args(["status", addr]).output().expect("status runs");
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let mut first = node("a", &a, None);
    std::thread::sleep(std::time::Duration::from_millis(500));
    let mut second = node("b", &b, Some(&a));
    let both = (0..50).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(100));
        status(&a).contains("group g view 2")
    });
    let _ = Command::new("kill").args(["-TERM", &second.id().to_string()]).status();
    let exited = second.wait().expect("b exits");
    // Well past the failure timeout: had b's exit been a failure, a would have stopped.
    std::thread::sleep(std::time::Duration::from_millis(1200));
    let after = status(&a);
    let _ = first.kill();
    let _ = first.wait();
    assert!(both, "b never joined g");
    assert!(exited.success(), "b exits cleanly on SIGTERM: {exited:?}");
    let head = after.lines().next().unwrap_or("");
    assert!(head.ends_with(": member"), "a stopped after b left: {after}");
    assert!(after.lines().any(|l| l.trim_start().starts_with("group g view 3: a#")), "{after}");
}

/// A `synchrony node` in `groups` groups, traced to `trace`, printing its groups' events.
fn many_groups_node(name: &str, listen: &str, contact: Option<&str>, groups: usize, trace: &Path) -> Lines {
    let mut c = synchrony();
    c.args(["node", "--name", name, "--listen", listen, "--failure-timeout", "1s", "--trace"]).arg(trace);
    for k in 0..groups {
        c.args(["--join", &format!("s{k}")]);
    }
    if let Some(c2) = contact {
        c.args(["--contact", c2]);
    }
    let mut child = c.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::null()).spawn().expect("starts");
    let out = child.stdout.take().expect("stdout");
    let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = lines.clone();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for l in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            sink.lock().expect("lock").push(l);
        }
    });
    Lines { child, lines }
}

/// A child process and the lines it printed so far.
struct Lines {
    child: std::process::Child,
    lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Lines {
    /// Lines printed from line `from` on that `keep` accepts.
    fn count(&self, from: usize, keep: impl Fn(&str) -> bool) -> usize {
        self.lines.lock().expect("lock").iter().skip(from).filter(|l| keep(l)).count()
    }

    fn len(&self) -> usize {
        self.lines.lock().expect("lock").len()
    }
}

/// Waits up to `secs` for `done`.
fn wait_for(secs: u64, mut done: impl FnMut() -> bool) -> bool {
    let until = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while std::time::Instant::now() < until {
        if done() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    done()
}

/// 2,000 groups on three processes, joined at once (two processes joining all of them
/// through the founder), then one SIGKILLed: the others go on in every group without it,
/// nobody else stops, and every trace passes the checker.
#[test]
fn two_thousand_groups_on_three_processes_joined_at_once_then_a_kill() {
    const GROUPS: usize = 2000;
    let dir = std::env::temp_dir().join(format!("synchrony-test-groups-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let port = |k: u16| 19400 + (std::process::id() % 500) as u16 * 3 + k;
    let addr = |k: u16| format!("127.0.0.1:{}", port(k));
    let trace = |n: &str| dir.join(format!("{n}.jsonl"));
    let mut a = many_groups_node("a", &addr(0), None, GROUPS, &trace("a"));
    assert!(wait_for(60, || a.count(0, |l| l.contains("is a member")) == 1), "the founder did not start");
    let mut b = many_groups_node("b", &addr(1), Some(&addr(0)), GROUPS, &trace("b"));
    let mut c = many_groups_node("c", &addr(2), Some(&addr(0)), GROUPS, &trace("c"));
    let loaded = |p: &Lines| p.count(0, |l| l.contains("state loaded"));
    let all_joined = wait_for(60, || loaded(&b) == GROUPS && loaded(&c) == GROUPS);
    let (from_a, from_b) = (a.len(), b.len());
    c.child.kill().expect("SIGKILL");
    let _ = c.child.wait();
    let without_c = |l: &str| l.contains(": view ") && !l.contains("c#");
    let all_moved_on =
        all_joined && wait_for(30, || a.count(from_a, without_c) == GROUPS && b.count(from_b, without_c) == GROUPS);
    let stopped = |p: &Lines| p.count(0, |l| l.contains("stopped"));
    let stops = (stopped(&a), stopped(&b));
    for p in [&mut a, &mut b] {
        // SIGTERM: a clean leave, and the trace is closed.
        let _ = Command::new("kill").arg(p.child.id().to_string()).status();
    }
    for p in [&mut a, &mut b] {
        if !wait_for(20, || p.child.try_wait().ok().flatten().is_some()) {
            let _ = p.child.kill();
        }
        let _ = p.child.wait();
    }
    assert!(all_joined, "joiners had {} and {} of {GROUPS} states", loaded(&b), loaded(&c));
    assert!(all_moved_on, "views without c: a {}, b {}", a.count(from_a, without_c), b.count(from_b, without_c));
    assert_eq!(stops, (0, 0), "a process stopped (a false suspicion)");
    // The killed process's last words, as a test harness writes them (after its last whole
    // line: the kill may have cut its trace in the middle of one).
    let text = std::fs::read_to_string(trace("c")).expect("c's trace");
    let whole: Vec<&str> = text.lines().filter(|l| serde_json::from_str::<serde_json::Value>(l).is_ok()).collect();
    let last: serde_json::Value = serde_json::from_str(whole.last().expect("a line")).expect("json");
    let crash = format!(
        "{{\"p\":{},\"i\":{},\"t\":{},\"ev\":\"crash\"}}",
        last["p"],
        last["i"].as_u64().expect("i") + 1,
        last["t"].as_u64().expect("t") + 1
    );
    std::fs::write(trace("c"), whole.join("\n") + "\n" + &crash + "\n").expect("writes");
    let check = synchrony().arg("check").arg(trace("a")).arg(trace("b")).arg(trace("c")).output().expect("runs");
    let stdout = String::from_utf8_lossy(&check.stdout);
    eprintln!("{stdout}");
    assert!(check.status.success(), "check failed:\n{stdout}");
    assert!(stdout.contains(" 0 violations"), "{stdout}");
    let _ = std::fs::remove_dir_all(&dir);
}
