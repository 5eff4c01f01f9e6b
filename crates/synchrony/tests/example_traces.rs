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
