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
