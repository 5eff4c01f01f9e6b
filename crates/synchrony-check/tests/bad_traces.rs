//! For every guarantee, a hand-made trace that breaks it, and the checker must say so; and
//! a good trace that must pass.

use synchrony_check::{check, Causality, Guarantee, Options};
use synchrony_trace::parse;

fn violations(trace: &str, quiescent: bool) -> Vec<Guarantee> {
    violations_with(trace, &Options { quiescent, crash_bound_us: Some(1_000_000), ..Default::default() })
}

fn violations_with(trace: &str, opts: &Options) -> Vec<Guarantee> {
    let events = parse(trace).expect("parses");
    let report = check(&events, opts);
    for v in &report.violations {
        eprint!("{v}");
    }
    report.violations.iter().map(|v| v.guarantee).collect()
}

fn assert_breaks(g: Guarantee, trace: &str, quiescent: bool) {
    let found = violations(trace, quiescent);
    assert!(found.contains(&g), "expected {g}, found {found:?}");
}

/// Two members, a view each, each delivers both messages: the baseline good trace.
const GOOD: &str = r#"
{"p":"a#1","i":0,"t":0,"ev":"view","group":"g","view":1,"members":["a#1"],"primary":true}
{"p":"a#1","i":1,"t":10,"ev":"send","group":"g","msg":"a#1/0","order":"causal","view":1}
{"p":"a#1","i":2,"t":11,"ev":"deliver","group":"g","msg":"a#1/0","from":"a#1","order":"causal","view":1}
{"p":"a#1","i":3,"t":20,"ev":"state_sent","group":"g","view":2,"to":"b#1","digest":"DIGEST","content":"delivered"}
{"p":"a#1","i":4,"t":20,"ev":"view","group":"g","view":2,"members":["a#1","b#1"],"primary":true}
{"p":"b#1","i":0,"t":21,"ev":"view","group":"g","view":2,"members":["a#1","b#1"],"primary":true}
{"p":"b#1","i":1,"t":22,"ev":"state","group":"g","view":2,"digest":"DIGEST","content":"delivered"}
{"p":"a#1","i":5,"t":30,"ev":"send","group":"g","msg":"a#1/1","order":"total","view":2}
{"p":"a#1","i":6,"t":31,"ev":"deliver","group":"g","msg":"a#1/1","from":"a#1","order":"total","view":2}
{"p":"b#1","i":2,"t":32,"ev":"deliver","group":"g","msg":"a#1/1","from":"a#1","order":"total","view":2}
{"p":"b#1","i":3,"t":33,"ev":"send","group":"g","msg":"b#1/0","order":"safe","view":2}
{"p":"a#1","i":7,"t":34,"ev":"deliver","group":"g","msg":"b#1/0","from":"b#1","order":"safe","view":2}
{"p":"b#1","i":4,"t":35,"ev":"deliver","group":"g","msg":"b#1/0","from":"b#1","order":"safe","view":2}
{"p":"b#1","i":5,"t":36,"ev":"flush","group":"g","view":2}
"#;

fn good() -> String {
    GOOD.replace("DIGEST", &synchrony_trace::digest(["a#1/0"]))
}

#[test]
fn good_trace_passes() {
    assert_eq!(violations(&good(), true), Vec::<Guarantee>::new());
}

#[test]
fn g1_two_views_with_one_id() {
    let t = good()
        + r#"{"p":"b#1","i":6,"t":40,"ev":"view","group":"g","view":3,"members":["b#1"],"primary":true}
{"p":"a#1","i":8,"t":40,"ev":"view","group":"g","view":3,"members":["a#1"],"primary":true}
"#;
    assert_breaks(Guarantee::G1, &t, false);
}

#[test]
fn g2_duplicate_delivery_and_foreign_view() {
    let t = good()
        + r#"{"p":"b#1","i":6,"t":40,"ev":"deliver","group":"g","msg":"a#1/1","from":"a#1","order":"total","view":2}
"#;
    assert_breaks(Guarantee::G2, &t, false);
    let t = good()
        + r#"{"p":"b#1","i":6,"t":40,"ev":"view","group":"g","view":3,"members":["a#1"],"primary":true}
"#;
    assert_breaks(Guarantee::G2, &t, false);
    let t = good()
        + r#"{"p":"b#1","i":6,"t":40,"ev":"deliver","group":"g","msg":"a#1/9","from":"a#1","order":"fifo","view":2}
"#;
    assert_breaks(Guarantee::G2, &t, false);
}

#[test]
fn g3_same_message_in_two_views() {
    let t = good()
        + r#"{"p":"a#1","i":8,"t":40,"ev":"send","group":"g","msg":"a#1/2","order":"fifo","view":2}
{"p":"a#1","i":9,"t":41,"ev":"deliver","group":"g","msg":"a#1/2","from":"a#1","order":"fifo","view":2}
{"p":"a#1","i":10,"t":50,"ev":"view","group":"g","view":3,"members":["a#1","b#1"],"primary":true}
{"p":"b#1","i":6,"t":50,"ev":"view","group":"g","view":3,"members":["a#1","b#1"],"primary":true}
{"p":"b#1","i":7,"t":51,"ev":"deliver","group":"g","msg":"a#1/2","from":"a#1","order":"fifo","view":3}
"#;
    assert_breaks(Guarantee::G3, &t, false);
}

#[test]
fn g4_different_sets_between_the_same_views() {
    let t = good()
        + r#"{"p":"a#1","i":8,"t":40,"ev":"send","group":"g","msg":"a#1/2","order":"fifo","view":2}
{"p":"a#1","i":9,"t":41,"ev":"deliver","group":"g","msg":"a#1/2","from":"a#1","order":"fifo","view":2}
{"p":"a#1","i":10,"t":50,"ev":"view","group":"g","view":3,"members":["a#1","b#1"],"primary":true}
{"p":"b#1","i":6,"t":50,"ev":"view","group":"g","view":3,"members":["a#1","b#1"],"primary":true}
"#;
    assert_breaks(Guarantee::G4, &t, false);
}

#[test]
fn g5_fifo_out_of_order() {
    let t = good()
        + r#"{"p":"a#1","i":8,"t":40,"ev":"send","group":"g","msg":"a#1/2","order":"fifo","view":2}
{"p":"a#1","i":9,"t":41,"ev":"send","group":"g","msg":"a#1/3","order":"fifo","view":2}
{"p":"b#1","i":6,"t":42,"ev":"deliver","group":"g","msg":"a#1/3","from":"a#1","order":"fifo","view":2}
{"p":"b#1","i":7,"t":43,"ev":"deliver","group":"g","msg":"a#1/2","from":"a#1","order":"fifo","view":2}
"#;
    assert_breaks(Guarantee::G5, &t, false);
}

#[test]
fn g6_causal_delivered_on_arrival() {
    // a sends m1; b delivers it and sends causal m2; c delivers m2 before m1.
    let t = r#"
{"p":"a#1","i":0,"t":0,"ev":"view","group":"g","view":1,"members":["a#1","b#1","c#1"],"primary":true}
{"p":"b#1","i":0,"t":0,"ev":"view","group":"g","view":1,"members":["a#1","b#1","c#1"],"primary":true}
{"p":"c#1","i":0,"t":0,"ev":"view","group":"g","view":1,"members":["a#1","b#1","c#1"],"primary":true}
{"p":"a#1","i":1,"t":1,"ev":"send","group":"g","msg":"a#1/0","order":"causal","view":1}
{"p":"b#1","i":1,"t":2,"ev":"deliver","group":"g","msg":"a#1/0","from":"a#1","order":"causal","view":1}
{"p":"b#1","i":2,"t":3,"ev":"send","group":"g","msg":"b#1/0","order":"causal","view":1}
{"p":"c#1","i":1,"t":4,"ev":"deliver","group":"g","msg":"b#1/0","from":"b#1","order":"causal","view":1}
{"p":"c#1","i":2,"t":5,"ev":"deliver","group":"g","msg":"a#1/0","from":"a#1","order":"causal","view":1}
"#;
    assert_breaks(Guarantee::G6, t, false);
}

#[test]
fn g7_total_in_two_orders() {
    let t = good()
        + r#"{"p":"a#1","i":8,"t":40,"ev":"send","group":"g","msg":"a#1/2","order":"total","view":2}
{"p":"b#1","i":6,"t":40,"ev":"send","group":"g","msg":"b#1/1","order":"total","view":2}
{"p":"a#1","i":9,"t":41,"ev":"deliver","group":"g","msg":"a#1/2","from":"a#1","order":"total","view":2}
{"p":"a#1","i":10,"t":42,"ev":"deliver","group":"g","msg":"b#1/1","from":"b#1","order":"total","view":2}
{"p":"b#1","i":7,"t":41,"ev":"deliver","group":"g","msg":"b#1/1","from":"b#1","order":"total","view":2}
{"p":"b#1","i":8,"t":42,"ev":"deliver","group":"g","msg":"a#1/2","from":"a#1","order":"total","view":2}
"#;
    assert_breaks(Guarantee::G7, &t, false);
}

#[test]
fn g8_gbcast_after_different_messages() {
    let t = good()
        + r#"{"p":"a#1","i":8,"t":40,"ev":"send","group":"g","msg":"a#1/2","order":"fifo","view":2}
{"p":"b#1","i":6,"t":40,"ev":"send","group":"g","msg":"b#1/1","order":"gbcast","view":2}
{"p":"a#1","i":9,"t":41,"ev":"deliver","group":"g","msg":"a#1/2","from":"a#1","order":"fifo","view":2}
{"p":"a#1","i":10,"t":42,"ev":"deliver","group":"g","msg":"b#1/1","from":"b#1","order":"gbcast","view":2}
{"p":"b#1","i":7,"t":42,"ev":"deliver","group":"g","msg":"b#1/1","from":"b#1","order":"gbcast","view":2}
{"p":"b#1","i":8,"t":43,"ev":"deliver","group":"g","msg":"a#1/2","from":"a#1","order":"fifo","view":2}
"#;
    assert_breaks(Guarantee::G8, &t, false);
}

#[test]
fn g9_safe_not_uniform() {
    // b delivers a safe message and crashes; a goes on to the next view without it.
    let t = good()
        + r#"{"p":"c#1","i":0,"t":21,"ev":"view","group":"g","view":2,"members":["a#1","b#1"],"primary":true}
{"p":"a#1","i":8,"t":40,"ev":"send","group":"g","msg":"a#1/2","order":"safe","view":2}
{"p":"b#1","i":6,"t":41,"ev":"deliver","group":"g","msg":"a#1/2","from":"a#1","order":"safe","view":2}
{"p":"b#1","i":7,"t":42,"ev":"crash"}
{"p":"a#1","i":9,"t":50,"ev":"view","group":"g","view":3,"members":["a#1"],"primary":true}
"#;
    assert_breaks(Guarantee::G9, &t, false);
}

#[test]
fn g10_acting_after_partitioned_and_non_primary_views() {
    let t = good()
        + r#"{"p":"b#1","i":6,"t":40,"ev":"partitioned"}
{"p":"b#1","i":7,"t":41,"ev":"deliver","group":"g","msg":"a#1/0","from":"a#1","order":"causal","view":2}
"#;
    assert_breaks(Guarantee::G10, &t, false);
    let t = good()
        + r#"{"p":"a#1","i":8,"t":40,"ev":"view","group":"g","view":3,"members":["a#1"],"primary":false}
"#;
    assert_breaks(Guarantee::G10, &t, false);
}

#[test]
fn g11_wrong_state_and_delivery_before_state() {
    let t = GOOD.replace("DIGEST", "0000000000000000");
    assert_breaks(Guarantee::G11, &t, false);
    let t = good().replace(
        r#"{"p":"b#1","i":1,"t":22,"ev":"state","group":"g","view":2,"digest""#,
        r#"{"p":"b#1","i":1,"t":22,"ev":"stateX","group":"g","view":2,"digest""#,
    );
    assert_breaks(Guarantee::G11, &t, false);
}

/// An application's own state (no `content`): its digest is not the delivered set, and
/// that is no violation; the checker says what it did not check. Its transfer still is
/// checked: what was loaded is what was sent.
#[test]
fn g11_an_applications_own_state_is_checked_as_far_as_the_trace_allows() {
    let own = GOOD.replace(r#","content":"delivered""#, "").replace("DIGEST", "0000000000000000");
    let report = check(&parse(&own).expect("parses"), &Options::default());
    assert!(report.violations.is_empty(), "{:?}", report.violations);
    assert_eq!(report.skipped.len(), 1, "says what it skipped");
    assert!(report.skipped[0].contains("G11"), "{:?}", report.skipped);
    let differs = own.replacen(r#""digest":"0000000000000000"}"#, r#""digest":"1111111111111111"}"#, 1);
    assert_breaks(Guarantee::G11, &differs, false);
    let good = check(&parse(&good()).expect("parses"), &Options::default());
    assert!(good.skipped.is_empty(), "delivered-set states are checked whole: {:?}", good.skipped);
}

#[test]
fn g12_flush_returned_before_stable() {
    // a flushes after sending a#1/2, but b goes on to the next view without it.
    let t = good()
        + r#"{"p":"a#1","i":8,"t":40,"ev":"send","group":"g","msg":"a#1/2","order":"fifo","view":2}
{"p":"a#1","i":9,"t":41,"ev":"deliver","group":"g","msg":"a#1/2","from":"a#1","order":"fifo","view":2}
{"p":"a#1","i":10,"t":42,"ev":"flush","group":"g","view":2,"covers":"a#1/2"}
{"p":"b#1","i":6,"t":50,"ev":"view","group":"g","view":3,"members":["b#1"],"primary":true}
{"p":"a#1","i":11,"t":60,"ev":"crash"}
"#;
    assert_breaks(Guarantee::G12, &t, false);
}

#[test]
fn g13_lost_message_and_split_final_views() {
    let t = good()
        + r#"{"p":"a#1","i":8,"t":40,"ev":"send","group":"g","msg":"a#1/2","order":"fifo","view":2}
"#;
    assert_breaks(Guarantee::G13, &t, true);
    assert!(!violations(&t, false).contains(&Guarantee::G13), "liveness is only checked at quiescence");
    let t = good()
        + r#"{"p":"a#1","i":8,"t":40,"ev":"view","group":"g","view":3,"members":["a#1","b#1"],"primary":true}
"#;
    assert_breaks(Guarantee::G13, &t, true);
}

#[test]
fn g13_crash_not_detected_in_time() {
    let t = good()
        + r#"{"p":"c#1","i":0,"t":40,"ev":"crash"}
{"p":"a#1","i":8,"t":5000000,"ev":"view","group":"g","view":3,"members":["a#1","b#1","c#1"],"primary":true}
{"p":"b#1","i":6,"t":5000000,"ev":"view","group":"g","view":3,"members":["a#1","b#1","c#1"],"primary":true}
"#;
    assert_breaks(Guarantee::G13, &t, true);
}

#[test]
fn torn_last_line_is_tolerated_but_garbage_is_not() {
    let t = good() + r#"{"p":"a#1","i":8,"t":40,"ev":"se"#;
    assert!(parse(&t).is_ok());
    assert!(parse("{\"p\":1}\n{}\n").is_err());
}

#[test]
fn written_lines_follow_trace_md_field_order() {
    let events = parse(&good()).unwrap();
    let line = events[0].to_json_line();
    assert_eq!(line, r#"{"p":"a#1","i":0,"t":0,"ev":"view","group":"g","view":1,"members":["a#1"],"primary":true}"#);
    for (e, original) in events.iter().zip(good().lines().filter(|l| !l.is_empty())) {
        assert_eq!(e.to_json_line(), original);
    }
}

/// The violations of a trace with G6 followed across groups (the default, named here).
fn across(trace: &str) -> Vec<Guarantee> {
    violations_with(trace, &Options { causality: Causality::AcrossGroups, ..Default::default() })
}

/// `a` and `b` in groups `g` and `h`; `a` sends in `g` (class `first`), then in `h`
/// (causal), and `b` delivers the second first.
fn two_groups(first: &str) -> String {
    let views = r#"
{"p":"a#1","i":0,"t":0,"ev":"view","group":"g","view":1,"members":["a#1","b#1"],"primary":true}
{"p":"a#1","i":1,"t":0,"ev":"view","group":"h","view":1,"members":["a#1","b#1"],"primary":true}
{"p":"b#1","i":0,"t":0,"ev":"view","group":"g","view":1,"members":["a#1","b#1"],"primary":true}
{"p":"b#1","i":1,"t":0,"ev":"view","group":"h","view":1,"members":["a#1","b#1"],"primary":true}
"#;
    let sends = r#"{"p":"a#1","i":2,"t":10,"ev":"send","group":"g","msg":"a#1/0","order":"FIRST","view":1}
{"p":"a#1","i":3,"t":11,"ev":"deliver","group":"g","msg":"a#1/0","from":"a#1","order":"FIRST","view":1}
{"p":"a#1","i":4,"t":12,"ev":"send","group":"h","msg":"a#1/1","order":"causal","view":1}
{"p":"a#1","i":5,"t":13,"ev":"deliver","group":"h","msg":"a#1/1","from":"a#1","order":"causal","view":1}
{"p":"b#1","i":2,"t":14,"ev":"deliver","group":"h","msg":"a#1/1","from":"a#1","order":"causal","view":1}
{"p":"b#1","i":3,"t":15,"ev":"deliver","group":"g","msg":"a#1/0","from":"a#1","order":"FIRST","view":1}
"#;
    format!("{views}{}", sends.replace("FIRST", first))
}

#[test]
fn g6_across_groups_two_sends_of_one_process() {
    let t = two_groups("causal");
    assert!(across(&t).contains(&Guarantee::G6));
    assert!(violations(&t, false).contains(&Guarantee::G6), "across groups is the default");
    let within = violations_with(&t, &Options { causality: Causality::WithinGroups, ..Default::default() });
    assert!(!within.contains(&Guarantee::G6), "within groups it is not a violation");
}

#[test]
fn g6_across_groups_total_then_causal() {
    assert!(across(&two_groups("total")).contains(&Guarantee::G6));
}

#[test]
fn g6_across_groups_a_chain_through_a_third_process_and_group() {
    // g = {a, c}, h = {a, b}, k = {b, c}: a's message in g happened before b's in k (a sent
    // in h after it, b delivered that), but c delivers b's first.
    let t = r#"
{"p":"a#1","i":0,"t":0,"ev":"view","group":"g","view":1,"members":["a#1","c#1"],"primary":true}
{"p":"a#1","i":1,"t":0,"ev":"view","group":"h","view":1,"members":["a#1","b#1"],"primary":true}
{"p":"b#1","i":0,"t":0,"ev":"view","group":"h","view":1,"members":["a#1","b#1"],"primary":true}
{"p":"b#1","i":1,"t":0,"ev":"view","group":"k","view":1,"members":["b#1","c#1"],"primary":true}
{"p":"c#1","i":0,"t":0,"ev":"view","group":"g","view":1,"members":["a#1","c#1"],"primary":true}
{"p":"c#1","i":1,"t":0,"ev":"view","group":"k","view":1,"members":["b#1","c#1"],"primary":true}
{"p":"a#1","i":2,"t":10,"ev":"send","group":"g","msg":"a#1/0","order":"causal","view":1}
{"p":"a#1","i":3,"t":11,"ev":"send","group":"h","msg":"a#1/1","order":"safe","view":1}
{"p":"b#1","i":2,"t":12,"ev":"deliver","group":"h","msg":"a#1/1","from":"a#1","order":"safe","view":1}
{"p":"b#1","i":3,"t":13,"ev":"send","group":"k","msg":"b#1/0","order":"causal","view":1}
{"p":"c#1","i":2,"t":14,"ev":"deliver","group":"k","msg":"b#1/0","from":"b#1","order":"causal","view":1}
{"p":"c#1","i":3,"t":15,"ev":"deliver","group":"g","msg":"a#1/0","from":"a#1","order":"causal","view":1}
"#;
    assert!(across(t).contains(&Guarantee::G6));
}

#[test]
fn g6_across_groups_through_a_non_member_send() {
    // a is in g only; it sends in g, then to h as a non-member (view null); b, in both,
    // delivers the second first.
    let t = r#"
{"p":"a#1","i":0,"t":0,"ev":"view","group":"g","view":1,"members":["a#1","b#1"],"primary":true}
{"p":"b#1","i":0,"t":0,"ev":"view","group":"g","view":1,"members":["a#1","b#1"],"primary":true}
{"p":"b#1","i":1,"t":0,"ev":"view","group":"h","view":1,"members":["b#1"],"primary":true}
{"p":"a#1","i":1,"t":10,"ev":"send","group":"g","msg":"a#1/0","order":"causal","view":1}
{"p":"a#1","i":2,"t":11,"ev":"send","group":"h","msg":"a#1/1","order":"total","view":null}
{"p":"b#1","i":2,"t":12,"ev":"deliver","group":"h","msg":"a#1/1","from":"a#1","order":"total","view":1}
{"p":"b#1","i":3,"t":13,"ev":"deliver","group":"g","msg":"a#1/0","from":"a#1","order":"causal","view":1}
"#;
    assert!(across(t).contains(&Guarantee::G6));
}

#[test]
fn g6_across_groups_fifo_neither_waits_nor_makes_others_wait() {
    // The same order as the first case, but the first message is fifo: no violation.
    assert_eq!(across(&two_groups("fifo")), Vec::<Guarantee>::new());
}

/// `c#1` joins in view 3, sends, and its trace just ends (SIGKILLed: nothing written);
/// `a#1` and `b#1` go on in view 4 without it.
fn killed_silently() -> String {
    let rest = r#"{"p":"a#1","i":8,"t":40,"ev":"state_sent","group":"g","view":3,"to":"c#1","digest":"D3","content":"delivered"}
{"p":"a#1","i":9,"t":41,"ev":"view","group":"g","view":3,"members":["a#1","b#1","c#1"],"primary":true}
{"p":"b#1","i":6,"t":41,"ev":"view","group":"g","view":3,"members":["a#1","b#1","c#1"],"primary":true}
{"p":"c#1","i":0,"t":42,"ev":"view","group":"g","view":3,"members":["a#1","b#1","c#1"],"primary":true}
{"p":"c#1","i":1,"t":43,"ev":"state","group":"g","view":3,"digest":"D3","content":"delivered"}
{"p":"c#1","i":2,"t":44,"ev":"send","group":"g","msg":"c#1/0","order":"total","view":3}
{"p":"c#1","i":3,"t":45,"ev":"deliver","group":"g","msg":"c#1/0","from":"c#1","order":"total","view":3}
{"p":"a#1","i":10,"t":46,"ev":"deliver","group":"g","msg":"c#1/0","from":"c#1","order":"total","view":3}
{"p":"b#1","i":7,"t":46,"ev":"deliver","group":"g","msg":"c#1/0","from":"c#1","order":"total","view":3}
{"p":"a#1","i":11,"t":900,"ev":"view","group":"g","view":4,"members":["a#1","b#1"],"primary":true}
{"p":"b#1","i":8,"t":900,"ev":"view","group":"g","view":4,"members":["a#1","b#1"],"primary":true}
"#;
    good() + &rest.replace("D3", &synchrony_trace::digest(["a#1/0", "a#1/1", "b#1/0"]))
}

fn report(trace: &str, opts: &Options) -> synchrony_check::Report {
    let report = check(&parse(trace).expect("parses"), opts);
    for v in &report.violations {
        eprint!("{v}");
    }
    report
}

#[test]
fn a_trace_that_just_ends_is_taken_as_a_crash() {
    let quiescent = Options { quiescent: true, ..Default::default() };
    let r = report(&killed_silently(), &quiescent);
    assert_eq!(r.violations, vec![], "the killed process owes and is owed nothing");
    assert_eq!(r.inferred_crashes.len(), 1);
    assert_eq!(r.inferred_crashes[0].process, "c#1");
    assert_eq!(r.inferred_crashes[0].last.i, 3, "crashed after its last event");
    assert_eq!(r.inferred_crashes[0].groups, vec!["g".to_string()]);
    // Strict, as a harness that writes every crash asks: the same trace fails G13.
    let strict = report(&killed_silently(), &Options { infer_crashes: false, ..quiescent.clone() });
    assert!(strict.violations.iter().any(|v| v.guarantee == Guarantee::G13));
    assert!(strict.inferred_crashes.is_empty());
    // A process still in the survivors' last view is not taken as crashed: it owes its
    // deliveries (the baseline trace ends with both members silent and in view 2).
    assert!(report(&good(), &quiescent).inferred_crashes.is_empty());
}

#[test]
fn a_delivery_really_missing_still_fails_beside_a_silent_end() {
    let quiescent = Options { quiescent: true, ..Default::default() };
    // A survivor's message that the other survivor never gets.
    let t = killed_silently()
        + r#"{"p":"a#1","i":12,"t":910,"ev":"send","group":"g","msg":"a#1/2","order":"fifo","view":4}
{"p":"a#1","i":13,"t":911,"ev":"deliver","group":"g","msg":"a#1/2","from":"a#1","order":"fifo","view":4}
"#;
    let r = report(&t, &quiescent);
    assert!(r.violations.iter().any(|v| v.guarantee == Guarantee::G13 && v.what.contains("b#1 never got a#1/2")));
    // The killed process's message delivered by one survivor only, before both went on to
    // the same next view: virtual synchrony is broken whoever sent it.
    let t = killed_silently().replace(
        "{\"p\":\"b#1\",\"i\":7,\"t\":46,\"ev\":\"deliver\",\"group\":\"g\",\"msg\":\"c#1/0\",\"from\":\"c#1\",\"order\":\"total\",\"view\":3}\n",
        "",
    );
    let t = t.replace(r#""p":"b#1","i":8,"#, r#""p":"b#1","i":7,"#);
    let r = report(&t, &quiescent);
    assert_eq!(r.inferred_crashes.len(), 1);
    assert!(r.violations.iter().any(|v| v.guarantee == Guarantee::G4), "{:?}", r.violations);
}
