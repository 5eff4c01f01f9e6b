//! Many seeded simulations per fault profile, each checked for G1 to G13; determinism; and
//! a large cluster.

use std::time::Duration;
use synchrony_sim::{run, Profile, SimConfig};
use synchrony_trace::EventKind;

/// Runs `seeds` seeds of `profile` on two threads; panics with the replay commands of the
/// failing seeds.
fn seeds(profile: &str, start: u64, seeds: u64) {
    let prof = Profile::named(profile).expect("known profile");
    let failed: Vec<String> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..2)
            .map(|w| {
                let prof = prof.clone();
                s.spawn(move || {
                    let mut failed = Vec::new();
                    let mut dead = 0;
                    for seed in (start + w..start + seeds).step_by(2) {
                        let out = run(SimConfig::new(seed, prof.clone()));
                        if out.survivors == 0 {
                            dead += 1;
                        }
                        if !out.passed() {
                            let why = out.first_problem().unwrap_or_default();
                            failed.push(format!("synchrony sim --seed {seed} --profile {profile}\n{why}"));
                        }
                    }
                    // Faults are kept from taking the majority down, but chained false
                    // suspicions can; such runs check little, so they must stay rare.
                    if dead * 5 > seeds / 2 {
                        failed.push(format!("{dead} of {} runs ended in total failure", seeds / 2));
                    }
                    failed
                })
            })
            .collect();
        workers.into_iter().flat_map(|w| w.join().expect("worker")).collect()
    });
    assert!(failed.is_empty(), "{} of {seeds} seeds failed:\n{}", failed.len(), failed.join("\n"));
}

#[test]
fn calm() {
    seeds("calm", 1000, 40);
}

#[test]
fn lossy() {
    seeds("lossy", 2000, 50);
}

#[test]
fn churn() {
    seeds("churn", 3000, 50);
}

#[test]
fn partition() {
    seeds("partition", 4000, 50);
}

#[test]
fn leader_crash() {
    seeds("leader-crash", 5000, 50);
}

#[test]
fn pause() {
    seeds("pause", 6000, 40);
}

/// Pauses of the application only (the process reads nothing but keeps its heartbeats):
/// checked like the rest, and nobody is taken for failed for them (every pause the `pause`
/// profile makes excludes someone; these must not).
#[test]
fn deaf() {
    seeds("deaf", 9000, 30);
    for seed in 9000..9010 {
        let out = run(SimConfig::new(seed, Profile::named("deaf").expect("known profile")));
        let stopped = out.trace.iter().filter(|e| e.ev == EventKind::Partitioned).count();
        assert_eq!(stopped, 0, "synchrony sim --seed {seed} --profile deaf: a deaf pause excluded a process");
    }
}

#[test]
fn chaos() {
    seeds("chaos", 7000, 60);
}

/// Chaos with the engines corked as the runtime corks them (frames packed over 300 us).
#[test]
fn corked() {
    seeds("corked", 8000, 30);
}

/// Corked, with some multicasts sent several at a time (`Engine::send_batch`), as the
/// runtime sends them.
#[test]
fn batched() {
    seeds("batched", 10000, 30);
}

/// Processes leaving the cluster cleanly (`Engine::leave_cluster`) and coming back, among
/// crashes and group churn: a leaver's sends all arrive, and nobody else stops.
#[test]
fn leaves() {
    seeds("leaves", 11000, 30);
}

/// Messages of up to a dozen fragments and states of hundreds of chunks under chaos: each
/// message is delivered whole, with the bytes it was sent with, at one place of its order,
/// or nowhere, and a joiner whose provider fails in the middle of a transfer goes on from
/// another (`synchrony sim --profile large --seeds 2000` is the long run).
#[test]
fn large() {
    seeds("large", 13000, 40);
}

/// The same with states written and read as streams: providers write their states in
/// parts while their groups go on, joiners read the parts as they come, and one whose
/// provider fails starts again from the beginning with the next (`synchrony sim --profile
/// streamed --seeds 2000` is the long run).
#[test]
fn streamed() {
    seeds("streamed", 14000, 30);
}

/// Seven processes, 2,000 groups, hundreds joined or left at once, crashes, and work that
/// costs virtual time: nobody is suspected for being busy (`synchrony sim --profile
/// many-groups --seeds 1000` is the long run).
#[test]
fn many_groups() {
    seeds("many-groups", 12000, 4);
}

/// Clusters started from a peer list in a random order, among crashes, partitions and
/// total failures: one cluster forms each time a majority of the list is up, and never two
/// at once (`synchrony sim --profile bootstrap --seeds 2000` is the long run).
#[test]
fn bootstrap() {
    seeds("bootstrap", 14000, 40);
}

/// The run catches two clusters at once: processes told their list names two peers where
/// it names five each take two for a majority, and a partition lets two clusters form.
#[test]
fn a_peer_list_too_short_forms_two_clusters_and_the_run_fails() {
    // (About one seed in fifty: 74 and 92 here, since the simulator hosts the host.)
    let two = (60..100).find_map(|seed| {
        let out = run(SimConfig { listed: Some(3), ..SimConfig::new(seed, Profile::named("bootstrap").unwrap()) });
        out.app_violations.iter().find(|v| v.contains("two clusters at once")).cloned()
    });
    assert!(two.is_some(), "no run of a too-short list saw two clusters at once");
}

/// The cost model is what makes the many-groups profile mean something: where work costs
/// a hundred times more, processes swamped by joins fall silent past the failure timeout,
/// are suspected, and the run says so.
#[test]
fn under_a_heavy_cost_model_busy_processes_are_suspected_and_the_run_fails() {
    let mut prof = Profile::named("many-groups").unwrap();
    let cost = prof.cost.as_mut().expect("the profile has a cost model");
    cost.per_kib *= 100;
    cost.per_event *= 100;
    let out = run(SimConfig::new(12000, prof));
    let suspected = out.app_violations.iter().filter(|v| v.contains("a live process was suspected")).count();
    assert!(suspected > 0, "no false suspicion under a heavy cost model: {:?}", out.app_violations);
    assert!(!out.passed());
}

/// Seeds of the long acceptance runs that once failed, each with the bug it found.
#[test]
fn seeds_that_once_failed_pass() {
    let past = [
        // A non-member's messages were acked on stream stability, not on delivery (G13).
        ("chaos", 13989),
        // An excluded process behind the cut delivered the decision's gbcast after fewer
        // messages than the survivors (G8).
        ("partition", 3333),
        // An excluded process that had delivered past the cut (messages no survivor got)
        // delivered the decision's gbcast after other messages than the survivors (G8).
        ("corked", 1303),
        // Causal order across groups (G6 as DESIGN.md words it), before the engine kept it:
        // a safe message in g1 then a non-member's message in g2 delivered in the other
        // order by a member of both; a chain total (g1), total (g0), causal (g1).
        ("calm", 11),
        ("lossy", 11),
        // A relay dropped a non-member's forwards as stale: the origin numbered them from
        // 0 again after it had been a member in between (its sends were held forever).
        ("churn", 6),
        // A joiner's gbcast delivery, held back with the group's events until its state
        // came, was overtaken by a message sent after the gbcast in another group.
        ("churn", 8),
        // A cut delivered, in another group, a message sent after what a joiner still held
        // back: the cut's events now wait behind the held ones, released in push order.
        ("churn", 1),
        // A sender left a group whose cut deliveries waited behind another group's held
        // events; its next send elsewhere, shown at once, overtook its own earlier one.
        ("chaos", 17198),
        // Two groups held back at once (a joiner of both waiting for their states): the
        // first state to come released deliveries that followed ones the other still held.
        // Released events now wait behind the fence of every other closed gate.
        ("chaos", 19815),
        // A group's lineage died (its one member, a joiner whose provider failed, lost the
        // state and left) and the same process founded it again: a non-member's forward
        // meant for the dead lineage, delivered there by a member before it failed, was
        // delivered again in the new one (G3, G2, G6). Forwards sent before the death are
        // now dropped by the new lineage's relay. (Found by the `large` profile, whose
        // small state chunks make transfers long enough for a provider to fail in them.)
        ("large", 419),
        ("large", 535),
        ("large", 566),
        ("large", 589),
        ("chaos", 11621),
        // A cut's deliveries fenced behind another group's held ones, in a group this
        // process then left: its next data was no longer held for them (`left_gated`).
        ("chaos", 226),
        // A wait cycle in one process: a gate closed behind another group's held events
        // (as cuts were once chained) waited for that group, whose events waited behind
        // the fence for the first gate. Cuts' deliveries now pass the fence instead.
        ("chaos", 2760),
        // A joiner that knocked at a process still joining itself, then waited past the
        // failure timeout for the leader, was suspected by it at once when it got in (its
        // silence counted from the knock): a new member's silence now counts from its
        // joining.
        ("many-groups", 4089),
        // A flush deferred behind sends held for causal order across groups outlived the
        // membership it was asked in; handed on to the next membership of the group, it
        // completed at once and answered that membership's flush early (G12).
        ("chaos", 3055),
        // A non-member's queries, delivered at their sender after it joined, waited for a
        // member that had left before: they never ended (with the check that every command
        // of a live process is answered; queries are not yet part of it).
        ("chaos", 12),
    ];
    for (profile, seed) in past {
        let out = run(SimConfig::new(seed, Profile::named(profile).expect("known profile")));
        assert!(out.passed(), "synchrony sim --seed {seed} --profile {profile}: {:?}", out.first_problem());
    }
}

/// The rule that keeps causal order across groups is what keeps it: switched off, runs that
/// pass break G6 (the sends of one process in two groups are delivered out of order).
#[test]
fn without_the_cross_group_rule_causal_order_across_groups_breaks() {
    for (profile, seed) in [("calm", 11), ("lossy", 11)] {
        let mut cfg = SimConfig::new(seed, Profile::named(profile).expect("known profile"));
        assert!(run(cfg.clone()).passed(), "{profile} {seed} passes with the rule");
        cfg.causal_across_groups = false;
        let out = run(cfg);
        let g6 = out.report.violations.iter().filter(|v| v.to_string().contains("G6")).count();
        assert!(g6 > 0, "{profile} {seed} without the rule: {:?}", out.first_problem());
    }
}

#[test]
fn same_seed_same_trace_byte_for_byte() {
    let a = run(SimConfig::new(42, Profile::named("chaos").unwrap()));
    let b = run(SimConfig::new(42, Profile::named("chaos").unwrap()));
    assert!(a.trace.len() > 1000, "a run does real work ({} events)", a.trace.len());
    assert_eq!(a.trace_jsonl(), b.trace_jsonl());
    let c = run(SimConfig::new(43, Profile::named("chaos").unwrap()));
    assert_ne!(a.trace_jsonl(), c.trace_jsonl());
}

#[test]
fn every_order_class_and_event_kind_is_exercised() {
    let out = run(SimConfig::new(7, Profile::named("chaos").unwrap()));
    let jsonl = out.trace_jsonl();
    for needle in [
        "\"order\":\"unordered\"",
        "\"order\":\"fifo\"",
        "\"order\":\"causal\"",
        "\"order\":\"total\"",
        "\"order\":\"safe\"",
        "\"order\":\"gbcast\"",
        "\"ev\":\"state_sent\"",
        "\"ev\":\"state\"",
        "\"ev\":\"flush\"",
        "\"ev\":\"leave\"",
        "\"ev\":\"crash\"",
        "\"view\":null",
    ] {
        assert!(jsonl.contains(needle), "no {needle} in the trace");
    }
    assert!(out.passed());
}

/// One process in a group of 32 members and in 200 groups at once, under churn.
#[test]
fn thirty_two_members_two_hundred_groups_under_churn() {
    let mut cfg = SimConfig::new(11, Profile::named("churn").unwrap());
    cfg.nodes = 32;
    cfg.groups = 200;
    cfg.fault_phase = Duration::from_millis(800);
    cfg.calm_traffic = Duration::from_millis(200);
    cfg.settle = Duration::from_millis(1500);
    let out = run(cfg);
    for v in &out.report.violations {
        eprint!("{v}");
    }
    assert!(out.passed());
    let first_group_views = out.trace.iter().filter(|e| e.ev == EventKind::View && e.group.as_deref() == Some("g0"));
    let widest = first_group_views.map(|e| e.members.as_ref().map_or(0, |m| m.len())).max().unwrap_or(0);
    assert!(widest >= 32, "g0 reached {widest} members");
    let busiest = out
        .trace
        .iter()
        .filter(|e| e.ev == EventKind::View)
        .fold(std::collections::BTreeMap::<&str, std::collections::BTreeSet<&str>>::new(), |mut m, e| {
            m.entry(e.p.as_str()).or_default().insert(e.group.as_deref().unwrap_or(""));
            m
        })
        .values()
        .map(|s| s.len())
        .max()
        .unwrap_or(0);
    assert_eq!(busiest, 200, "the busiest process was in {busiest} groups");
}

/// Applications that read late and senders that block on a small window, among chaos: the
/// hosts keep what a reader has no room for, stop reading frames meanwhile, and let parked
/// sends go in order (`synchrony sim --profile backpressure --seeds 1000` is the long run).
#[test]
fn backpressure() {
    seeds("backpressure", 15000, 40);
}

/// The backpressure profile does what it says: consumers fall behind (their hosts stop
/// reading frames), and senders wait for room in their windows.
#[test]
fn slow_readers_fall_behind_and_senders_wait() {
    let out = run(SimConfig::new(15000, Profile::named("backpressure").unwrap()));
    assert!(out.passed(), "{:?}", out.first_problem());
    assert!(out.host_counters.reading_paused > 0, "no host ever had a reader behind: {:?}", out.host_counters);
    assert!(out.host_counters.flow_waits > 0, "no send ever waited for room: {:?}", out.host_counters);
}
