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
