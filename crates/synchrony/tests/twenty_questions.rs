//! The twenty questions example (SOSP 1987, section 5) under failures: its member processes
//! are SIGKILLed while queries run, restarted by its supervisor with state transfer, and
//! every answer must match the non-replicated database (the example checks and exits
//! non-zero otherwise).

use std::path::PathBuf;
use std::process::Command;

/// `cargo test` builds the examples next to the test binaries: target/PROFILE/examples.
fn example() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary");
    let profile_dir = exe.parent().and_then(|deps| deps.parent()).expect("target/PROFILE");
    profile_dir.join("examples").join("twenty_questions")
}

#[test]
fn answers_match_the_database_while_members_are_killed_and_restarted() {
    let out = Command::new(example())
        .args(["--ops", "600", "--kills", "4", "--seed", "11"])
        .output()
        .expect("the example runs (built by cargo test)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("every answer matched the non-replicated database"), "{stdout}");
    assert_eq!(stdout.matches("SIGKILL").count(), 4, "{stdout}");
    assert!(stdout.contains("joins with state transfer"), "{stdout}");
}
