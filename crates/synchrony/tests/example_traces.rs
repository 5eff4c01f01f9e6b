//! The examples, traced with `SYNCHRONY_TRACE_DIR` (no change to their code), give traces
//! the checker accepts: a correct program is not flagged (their states are their own, so G11
//! checks the transfers and says what it skipped).

use std::path::{Path, PathBuf};
use std::process::Command;
use synchrony_check::{check, Options};

/// `cargo test` builds the examples next to the test binaries: target/PROFILE/examples.
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary");
    let profile_dir = exe.parent().and_then(|deps| deps.parent()).expect("target/PROFILE");
    profile_dir.join("examples").join(name)
}

/// Runs an example with its traces in a directory of its own, and checks them.
fn traced(name: &str, args: &[&str]) -> (usize, synchrony_check::Report) {
    let dir = std::env::temp_dir().join(format!("synchrony-example-traces-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let out = Command::new(example(name))
        .args(args)
        .env(synchrony::TRACE_DIR_ENV, &dir)
        .output()
        .expect("the example runs (built by cargo test)");
    assert!(out.status.success(), "{name}: {}", String::from_utf8_lossy(&out.stderr));
    let (files, events) = read_traces(&dir);
    let _ = std::fs::remove_dir_all(&dir);
    (files, check(&events, &Options::default()))
}

fn read_traces(dir: &Path) -> (usize, Vec<synchrony_trace::TraceEvent>) {
    let mut events = Vec::new();
    let mut files = 0;
    for f in std::fs::read_dir(dir).expect("traces").flatten() {
        let text = std::fs::read_to_string(f.path()).expect("reads");
        events.extend(synchrony_trace::parse(&text).expect("parses"));
        files += 1;
    }
    (files, events)
}

#[test]
fn the_counter_examples_traces_pass_the_checker() {
    let (files, report) = traced("counter", &[]);
    assert_eq!(files, 4, "one trace per node");
    assert!(report.events > 1000, "{} events", report.events);
    assert!(report.violations.is_empty(), "{:?}", report.violations.iter().map(|v| v.to_string()).collect::<Vec<_>>());
    assert!(report.skipped.iter().any(|s| s.contains("G11")), "the joiner's state is the counter's own");
}

/// Twenty questions with members SIGKILLed and restarted (its supervisor restarts them under
/// the same names: each incarnation traces to its own file).
#[test]
fn the_twenty_questions_examples_traces_pass_the_checker() {
    let (files, report) = traced("twenty_questions", &["--ops", "200", "--kills", "2", "--seed", "11"]);
    assert!(files >= 5, "{files} traces");
    assert!(report.violations.is_empty(), "{:?}", report.violations.iter().map(|v| v.to_string()).collect::<Vec<_>>());
}

/// Two chat processes driven through their standard input: each sees both lines, in the
/// same order, and their traces pass the checker.
#[test]
fn the_chat_examples_traces_pass_the_checker() {
    use std::io::{BufRead, BufReader, Write};
    use std::process::Stdio;
    use std::sync::mpsc;
    let dir = std::env::temp_dir().join(format!("synchrony-example-traces-chat-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let spawn = |args: &[&str]| {
        let mut child = Command::new(example("chat"))
            .args(args)
            .env(synchrony::TRACE_DIR_ENV, &dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("the example runs (built by cargo test)");
        let (tx, rx) = mpsc::channel::<String>();
        let out = BufReader::new(child.stdout.take().expect("stdout"));
        std::thread::spawn(move || {
            for line in out.lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        (child, rx)
    };
    let wait_for = |rx: &mpsc::Receiver<String>, what: &dyn Fn(&str) -> bool| -> Vec<String> {
        let mut seen = Vec::new();
        let until = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while std::time::Instant::now() < until {
            if let Ok(l) = rx.recv_timeout(std::time::Duration::from_millis(100)) {
                let done = what(&l);
                seen.push(l);
                if done {
                    return seen;
                }
            }
        }
        panic!("not seen in 20 s; saw {seen:?}");
    };
    let (mut alice, arx) = spawn(&["alice", "127.0.0.1:0"]);
    let first = wait_for(&arx, &|l| l.contains("listening on"));
    let addr =
        first.last().and_then(|l| l.split("listening on ").nth(1)).and_then(|r| r.split(';').next()).expect("address");
    let (mut bob, brx) = spawn(&["bob", "127.0.0.1:0", addr]);
    for rx in [&arx, &brx] {
        wait_for(rx, &|l| l.starts_with("* in the room") && l.contains("alice") && l.contains("bob"));
    }
    writeln!(alice.stdin.as_mut().expect("stdin"), "hello from alice").expect("writes");
    writeln!(bob.stdin.as_mut().expect("stdin"), "hello from bob").expect("writes");
    let said = |l: &str| l.contains("hello from");
    let mut orders = Vec::new();
    for rx in [&arx, &brx] {
        let mut got: Vec<String> = wait_for(rx, &|l| said(l)).into_iter().filter(|l| said(l)).collect();
        got.extend(wait_for(rx, &|l| said(l)).into_iter().filter(|l| said(l)));
        orders.push(got);
    }
    assert_eq!(orders[0], orders[1], "both see the lines in the same (total) order");
    drop(alice.stdin.take());
    drop(bob.stdin.take());
    for c in [&mut alice, &mut bob] {
        assert!(c.wait().expect("exits").success(), "Ctrl-D leaves cleanly");
    }
    let (files, events) = read_traces(&dir);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(files, 2);
    let report = check(&events, &Options { quiescent: true, ..Options::default() });
    assert!(report.violations.is_empty(), "{:?}", report.violations.iter().map(|v| v.to_string()).collect::<Vec<_>>());
}
