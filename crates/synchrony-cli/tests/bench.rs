//! `synchrony bench` end to end, small: at a fixed light rate every member of both sides
//! (synchrony and the raw baseline) delivers what the sender sent, and the JSON has the
//! figures the README's table is made of.

use serde_json::Value;
use std::process::Command;

#[test]
fn a_paced_run_delivers_the_rate_at_every_member_on_both_sides() {
    let out = Command::new(env!("CARGO_BIN_EXE_synchrony"))
        .args(["bench", "--members", "3", "--rate", "200", "--duration", "2", "--json"])
        .output()
        .expect("runs");
    assert!(out.status.success(), "bench failed: {}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(v["rate"], 200);
    for side in ["synchrony", "raw"] {
        let members = v[side].as_array().expect("members");
        assert_eq!(members.len(), 3, "{side}: every member reports");
        for m in members {
            let rate = m["delivered_per_sec"].as_f64().expect("rate");
            assert!((180.0..=220.0).contains(&rate), "{side} member {}: {rate} msgs/s, not 200", m["index"]);
            assert!(m["latency_p50_us"].as_u64().expect("p50") > 0, "{side}: a latency was measured");
            assert!(m["peak_rss_mb"].as_f64().expect("rss") > 0.0);
        }
    }
    let ratio = v["delivered_per_sec_mean"]["ratio"].as_f64().expect("ratio");
    assert!((0.9..=1.1).contains(&ratio), "at a light rate both sides deliver it all: ratio {ratio}");
}

/// Runs `synchrony bench` with `args` and the JSON flag, and returns its object.
fn bench_json(args: &[&str]) -> Value {
    let out =
        Command::new(env!("CARGO_BIN_EXE_synchrony")).arg("bench").args(args).arg("--json").output().expect("runs");
    assert!(out.status.success(), "bench {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("one JSON object")
}

#[test]
fn paced_rpcs_and_map_puts_are_made_by_the_caller_and_seen_by_every_member() {
    // 2 callers at 100 calls/s each: 200 a second, each answered by all 3 (or applied by all 3).
    for (mode, callers_kind, others_kind) in [("--rpc", "calls", "delivered"), ("--map", "puts", "applied")] {
        let v = bench_json(&["--members", "3", mode, "--clients", "2", "--rate", "100", "--duration", "2"]);
        assert_eq!(v["raw"].as_array().map(Vec::len), Some(0), "{mode}: no raw baseline");
        let members = v["synchrony"].as_array().expect("members");
        assert_eq!(members.len(), 3);
        for m in members {
            let kind = if m["index"] == 0 { callers_kind } else { others_kind };
            assert_eq!(m["kind"], kind, "{mode}: member {}", m["index"]);
            let rate = m["delivered_per_sec"].as_f64().expect("rate");
            assert!((180.0..=220.0).contains(&rate), "{mode} member {}: {rate} a second, not 200", m["index"]);
        }
        let caller = &members[0];
        assert!(caller["latency_p50_us"].as_u64().expect("p50") > 0, "{mode}: call latency measured");
        assert!(caller["latency_p99_us"].as_u64() >= caller["latency_p50_us"].as_u64());
        let calls = v["calls_per_sec"].as_f64().expect("calls");
        assert!((180.0..=220.0).contains(&calls), "{mode}: {calls} calls a second");
    }
}

#[test]
fn a_churn_run_times_failures_and_joins_and_its_traces_pass_the_checker() {
    let v = bench_json(&["--churn", "--rate", "300", "--rounds", "2", "--state-mb", "0.5,2", "--check"]);
    let rounds = v["rounds"].as_array().expect("rounds");
    assert_eq!(rounds.len(), 2);
    for (r, want_mb) in rounds.iter().zip([0.5, 2.0]) {
        let to_view = r["failure_to_view_max_ms"].as_f64().expect("failure to view");
        assert!(to_view > 0.0 && to_view < 5000.0, "{r}: the survivors saw the new view ({to_view} ms)");
        assert_eq!(r["failure_to_view_ms"].as_object().map(|m| m.len()), Some(2), "{r}: both survivors timed");
        assert_eq!(r["state_bytes"].as_f64(), Some(want_mb * 1e6), "{r}: the joiner got the whole state");
        let join = r["join_to_first_delivery_ms"].as_f64().expect("join");
        assert!(join >= r["state_transfer_ms"].as_f64().expect("transfer") && join > 0.0, "{r}");
    }
    assert_eq!(v["blocked_senders"].as_array().map(Vec::len), Some(0), "no sender blocked");
    let verdict = v["check"].as_str().expect("checked");
    assert!(verdict.starts_with("every guarantee holds"), "{verdict}");
    // The killed members are gone and the joiners are in: three members report at the end.
    let finals = v["members_at_end"].as_array().expect("finals");
    let mut at_end: Vec<u64> = finals.iter().filter_map(|f| f["index"].as_u64()).collect();
    at_end.sort();
    assert_eq!(at_end, vec![0, 1, 4]);
    assert!(finals.iter().all(|f| f["delivered"].as_u64() > Some(0)));
}

/// `bench --churn` with 4 members, 2 senders at 2,000/s, one join with 100 MB of state whose
/// provider (b0, the oldest) is SIGKILLed halfway through, traces checked; `extra` adds
/// options. Checks what every such run must show and returns its report.
fn provider_killed_halfway(extra: &[&str]) -> Value {
    let mut args = vec![
        "--churn",
        "--members",
        "4",
        "--senders",
        "2",
        "--rate",
        "2000",
        "--rounds",
        "1",
        "--state-mb",
        "100",
        "--kill-provider",
        "--check",
    ];
    args.extend_from_slice(extra);
    let v = bench_json(&args);
    let round = &v["rounds"][0];
    assert_eq!(round["provider_killed"], "b0");
    assert_eq!(round["state_bytes"], 100_000_000);
    assert!(v["check"].as_str().expect("checked").starts_with("every guarantee holds"), "{}", v["check"]);
    v
}

/// A joiner's state provider SIGKILLed in the middle of a 100 MB transfer under load: the
/// joiner goes on from the next member where it was, and every trace passes the checker.
#[test]
fn a_state_transfer_goes_on_from_another_member_when_its_provider_is_killed_halfway() {
    let v = provider_killed_halfway(&[]);
    let at = v["rounds"][0]["provider_killed_at_fraction"].as_f64().expect("fraction");
    assert!((0.5..1.0).contains(&at), "killed halfway: at {at}");
    let resumed: u64 =
        v["members_at_end"].as_array().expect("members").iter().filter_map(|m| m["state_resumed"].as_u64()).sum();
    assert_eq!(resumed, 1, "the transfer went on from where it was");
}

/// The same with the state written and read as a stream (`--stream`): the joiner starts
/// again from the beginning with the next member, holds far less than the state (it reads
/// it as it comes), and every trace passes the checker.
#[test]
fn a_streamed_state_transfer_starts_again_at_another_member_when_its_provider_is_killed() {
    let v = provider_killed_halfway(&["--stream"]);
    let members = v["members_at_end"].as_array().expect("members");
    let joiner = members.iter().find(|m| m["index"] == 4).expect("the joiner");
    let rss = joiner["peak_rss_mb"].as_f64().expect("rss");
    eprintln!("joiner's peak resident memory {rss:.0} MB for a 100 MB state");
    assert!(rss < 90.0, "the joiner held {rss:.0} MB: more than a streamed 100 MB state needs");
}

/// Large messages on real processes: 64 MiB multicasts in total order (each 256 fragments),
/// with a stream of small ones from another member beside them. Every member delivers
/// both, the small ones keep flowing (not held for a large one's whole transfer), each
/// member's peak memory is reported, and the traces pass the checker (`--check`).
/// (`synchrony bench --size 1073741824 --small-rate 200 --check` is the 1 GiB run.)
#[test]
fn large_messages_beside_a_stream_of_small_ones_in_total_order() {
    const SIZE: u64 = 64 << 20;
    let size = SIZE.to_string();
    let v = bench_json(&[
        "--members",
        "3",
        "--size",
        &size,
        "--small-rate",
        "200",
        "--duration",
        "3",
        "--no-baseline",
        "--check",
    ]);
    for m in v["synchrony"].as_array().expect("members") {
        let i = &m["index"];
        let large = m["delivered_per_sec"].as_f64().expect("rate");
        assert!(large > 0.5, "member {i}: {large} large messages a second");
        let rss = m["peak_rss_mb"].as_f64().expect("rss");
        eprintln!("member {i}: {large:.1} large messages/s, peak resident memory {rss:.0} MB");
        let small = &m["small"];
        let rate = small["delivered_per_sec"].as_f64().expect("small rate");
        assert!((180.0..=220.0).contains(&rate), "member {i}: {rate} small messages a second, not 200");
        let p99 = small["latency_p99_us"].as_u64().expect("p99");
        assert!(p99 < 500_000, "member {i}: small messages held {p99} us (p99) beside the large ones");
    }
}
