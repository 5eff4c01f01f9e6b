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
