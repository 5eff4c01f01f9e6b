//! The CLI's edges with pipes and files: output into a pipe closed early ends a command
//! quietly (no panic), no terminal codes go into a pipe or a file, and bad durations are
//! refused with a clear message.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

fn synchrony() -> Command {
    Command::new(env!("CARGO_BIN_EXE_synchrony"))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// Waits for a child, killing it after `limit`.
fn wait_bounded(child: &mut Child, limit: Duration) -> ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs the command with its output read up to `lines` lines, as `| head -n` would, then
/// closes the pipe; returns what it printed, its stderr and how it ended.
fn head(args: &[&str], lines: usize) -> (String, String, ExitStatus) {
    let mut child = synchrony().args(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("starts");
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut seen = String::new();
    for _ in 0..lines {
        if out.read_line(&mut seen).expect("reads") == 0 {
            break;
        }
    }
    drop(out);
    let status = wait_bounded(&mut child, Duration::from_secs(30));
    let mut err = String::new();
    child.stderr.take().expect("stderr").read_to_string(&mut err).expect("reads stderr");
    (seen, err, status)
}

/// Ended well, or by the closed pipe's signal (as `yes | head -1` does).
fn ended_quietly(status: ExitStatus) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if status.signal() == Some(libc_sigpipe()) {
            return true;
        }
    }
    status.success()
}

const fn libc_sigpipe() -> i32 {
    13
}

#[test]
fn help_and_a_simulation_into_a_closed_pipe_end_quietly() {
    for args in [&["--help"][..], &["sim", "--help"], &["sim", "--seeds", "2", "--profile", "calm"]] {
        let (seen, err, status) = head(args, 1);
        assert!(!seen.is_empty(), "{args:?} printed nothing");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert!(ended_quietly(status), "{args:?} ended with {status}: {err}");
    }
    let (seen, ..) = head(&["--help"], 1);
    for cmd in ["demo", "node", "load", "status", "sim", "check", "viz", "bench", "tool"] {
        assert!(seen.contains(cmd), "the first help line names {cmd}: {seen}");
    }
}

#[test]
fn status_watch_into_a_closed_pipe_ends_quietly_with_no_terminal_codes() {
    let addr = format!("127.0.0.1:{}", free_port());
    let mut node = synchrony()
        .args(["node", "--name", "p1", "--listen", &addr, "--join", "g", "--failure-timeout", "300ms"])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("node starts");
    let start = Instant::now();
    while !synchrony().args(["status", &addr]).output().expect("runs").status.success() {
        assert!(start.elapsed() < Duration::from_secs(20), "the node never answered");
        std::thread::sleep(Duration::from_millis(100));
    }
    let (seen, err, status) = head(&["status", "--watch", &addr], 3);
    let _ = node.kill();
    let _ = node.wait();
    let mut log = String::new();
    node.stderr.take().expect("stderr").read_to_string(&mut log).expect("reads the log");
    assert!(!seen.contains('\x1b'), "no terminal codes into a pipe: {seen:?}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(ended_quietly(status), "status --watch ended with {status}: {err}");
    assert!(!log.is_empty(), "the node logged at info");
    assert!(!log.contains('\x1b'), "no colour codes in a log that is not a terminal: {log:?}");
}

#[test]
fn bad_durations_are_refused_with_what_is_wrong() {
    for (value, says) in [("0s", "above zero"), ("-1s", "cannot be negative"), ("soon", "not a duration")] {
        let out = synchrony()
            .args(["node", "--name", "x", "--listen", "127.0.0.1:1", "--failure-timeout", value])
            .output()
            .expect("runs");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{value} accepted");
        assert!(err.contains(says), "{value}: {err}");
    }
}
