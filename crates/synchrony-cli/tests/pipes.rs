//! The CLI's edges with pipes and files: output into a pipe closed early ends a command
//! quietly (no panic), no terminal codes go into a pipe or a file, and bad durations are
//! refused with a clear message; `status` errors say what happened.

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

/// Every command that prints as it goes, piped into `head -1`: no panic, and it ends by
/// itself (done, or the closed pipe's signal).
#[test]
fn every_command_into_a_closed_pipe_ends_quietly() {
    let dir = std::env::temp_dir().join(format!("synchrony-pipes-all-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let trace = dir.join("t.jsonl").display().to_string();
    let svg = dir.join("t.svg").display().to_string();
    let (seen, err, status) = head(&["sim", "--seed", "1", "--profile", "calm", "--trace-out", &trace], 1);
    assert!(ended_quietly(status) && !seen.is_empty(), "sim: {err}");
    let listen = |p: u16| format!("127.0.0.1:{p}");
    let (l1, l2) = (listen(free_port()), listen(free_port()));
    let runs: Vec<Vec<&str>> = vec![
        vec!["check", &trace],
        vec!["viz", &trace, "-o", &svg],
        vec!["load", "--name", "h1", "--listen", &l1, "--group", "g", "--duration", "1s", "--exit-after", "1s"],
        vec!["tool", "--tool", "map", "--name", "h2", "--listen", &l2, "--ops", "5", "--exit-after", "1s"],
        vec!["bench", "--help"],
    ];
    for args in &runs {
        let (_, err, status) = head(args, 1);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert!(ended_quietly(status), "{args:?} ended with {status}: {err}");
    }
    let _ = std::fs::remove_dir_all(&dir);
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

/// `synchrony status` against what is not a synchrony node, a closed port and a node with
/// another secret: each error says what happened, once.
#[test]
fn status_errors_say_what_happened() {
    let status = |addr: &str, extra: &[&str]| {
        let out = synchrony().arg("status").arg(addr).args(extra).env("RUST_BACKTRACE", "0").output().expect("runs");
        assert!(!out.status.success(), "{addr}: succeeded");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    // An HTTP server: its first bytes are not a frame's length.
    let http = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let http_addr = http.local_addr().expect("addr").to_string();
    let server = std::thread::spawn(move || {
        use std::io::Write;
        if let Ok((mut s, _)) = http.accept() {
            let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n");
        }
    });
    let err = status(&http_addr, &[]);
    assert!(err.contains("not a synchrony node"), "{err}");
    server.join().expect("server");
    // A closed port: the cause once.
    let closed = format!("127.0.0.1:{}", free_port());
    let err = status(&closed, &[]);
    assert_eq!(err.matches("Connection refused").count(), 1, "{err}");
    // A node with a secret, asked without it.
    let dir = std::env::temp_dir().join(format!("synchrony-pipes-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let secret = dir.join("secret");
    std::fs::write(&secret, "s3cret\n").expect("secret");
    let addr = format!("127.0.0.1:{}", free_port());
    let mut node = synchrony()
        .args(["node", "--name", "p1", "--listen", &addr, "--secret-file"])
        .arg(&secret)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("node starts");
    let start = Instant::now();
    let secret_arg = secret.to_string_lossy().into_owned();
    while !synchrony().args(["status", &addr, "--secret-file", &secret_arg]).output().expect("runs").status.success() {
        assert!(start.elapsed() < Duration::from_secs(20), "the node never answered");
        std::thread::sleep(Duration::from_millis(100));
    }
    let err = status(&addr, &[]);
    // A joiner with another secret learns it was refused, at once, not after its 30 s
    // join timeout.
    let other = dir.join("other");
    std::fs::write(&other, "not the secret\n").expect("secret");
    let started = Instant::now();
    let joiner = synchrony()
        .args(["node", "--name", "p2", "--listen", &format!("127.0.0.1:{}", free_port()), "--contact", &addr])
        .arg("--secret-file")
        .arg(&other)
        .output()
        .expect("runs");
    let took = started.elapsed();
    let _ = node.kill();
    let _ = node.wait();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(err.contains("secret"), "{err}");
    let joiner_err = String::from_utf8_lossy(&joiner.stderr);
    assert!(!joiner.status.success(), "the joiner with the wrong secret exits with an error");
    assert!(joiner_err.contains("refused") && joiner_err.contains("secret"), "{joiner_err}");
    assert!(took < Duration::from_secs(10), "refused after {took:?}");
}

/// A node whose contact never lets it in says what the contact did, not a guess.
#[test]
fn a_join_that_times_out_names_what_each_contact_did() {
    let closed = format!("127.0.0.1:{}", free_port());
    let out = synchrony()
        .args(["node", "--name", "lonely", "--listen", &format!("127.0.0.1:{}", free_port())])
        .args(["--contact", &closed, "--join-timeout", "1500ms"])
        .output()
        .expect("runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "it cannot join");
    assert!(err.contains(&format!("contact {closed}")) && err.contains("refused"), "{err}");
}
