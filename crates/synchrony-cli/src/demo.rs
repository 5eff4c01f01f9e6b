//! `synchrony demo`: a narrated run of a cluster under faults, then its verdict.

use anyhow::Result;
use std::collections::BTreeMap;
use synchrony_check::{check, Options};
use synchrony_sim::{run, Profile, SimConfig};

/// Runs a simulated chaos cluster and narrates what the trace shows.
pub(crate) fn run_demo(seed: u64) -> Result<()> {
    println!("synchrony demo: 5 processes, 3 groups, lossy network, crashes, partitions, pauses.");
    println!("(This demo runs the real engine inside the deterministic simulator; seed {seed}.)\n");
    let mut cfg = SimConfig::new(seed, Profile::named("chaos").expect("known"));
    cfg.groups = 2;
    let out = run(cfg);
    let mut delivered: BTreeMap<String, u64> = BTreeMap::new();
    let mut shown = 0;
    for e in &out.trace {
        let at = format!("{:>8.3} s", e.t as f64 / 1e6);
        match e.ev.as_str() {
            "view" if e.p == e.members.as_ref().and_then(|m| m.first()).cloned().unwrap_or_default() => {
                println!(
                    "{at}  view {} of {}: {}",
                    e.view.unwrap_or(0),
                    e.group.as_deref().unwrap_or(""),
                    e.members.as_ref().map(|m| m.join(", ")).unwrap_or_default()
                );
            }
            "crash" => println!("{at}  {} crashed", e.p),
            "partitioned" => println!("{at}  {} found itself cut off (paused or partitioned) and stopped", e.p),
            "state" => println!(
                "{at}  {} loaded the state of {} by state transfer (digest {})",
                e.p,
                e.group.as_deref().unwrap_or(""),
                e.digest.as_deref().unwrap_or("")
            ),
            "deliver" => {
                *delivered.entry(e.order.clone().unwrap_or_default()).or_default() += 1;
                shown += 1;
            }
            _ => {}
        }
    }
    println!("\n{shown} deliveries: {delivered:?}");
    let report = check(&out.trace, &Options { quiescent: true, crash_bound_us: None });
    println!(
        "checker: {} events from {} processes, {} violations",
        report.events,
        report.processes,
        report.violations.len()
    );
    for v in &report.violations {
        print!("{v}");
    }
    if report.violations.is_empty() {
        println!("verdict: every guarantee G1..G13 held.");
        Ok(())
    } else {
        anyhow::bail!("verdict: guarantees broken")
    }
}
