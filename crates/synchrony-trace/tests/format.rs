//! The trace format reads what it writes, line for line, for every kind of event.

use synchrony_engine::{Event, GroupName, GroupView, MsgId, Order, PartitionReason, ProcessId, ViewId};
use synchrony_trace::{parse, EventKind, Recorder, TraceEvent};

const LINES: &str = r#"{"p":"n1#1","i":0,"t":0,"ev":"view","group":"g","view":1,"members":["n1#1"],"primary":true}
{"p":"n1#1","i":1,"t":40,"ev":"send","group":"g","msg":"n1#1/0","order":"causal","view":1}
{"p":"n2#1","i":1,"t":40,"ev":"send","group":"g","msg":"n2#1/0","order":"fifo","view":null}
{"p":"n1#1","i":2,"t":41,"ev":"deliver","group":"g","msg":"n1#1/0","from":"n1#1","order":"causal","view":1}
{"p":"n1#1","i":3,"t":90,"ev":"state_sent","group":"g","view":2,"to":"n2#1","digest":"9f2c"}
{"p":"n2#1","i":1,"t":96,"ev":"state","group":"g","view":2,"digest":"9f2c"}
{"p":"n1#1","i":4,"t":97,"ev":"flush","group":"g","view":2}
{"p":"n1#1","i":5,"t":98,"ev":"flush","group":"g","view":2,"covers":"n1#1/0"}
{"p":"n1#1","i":6,"t":99,"ev":"leave","group":"g"}
{"p":"n1#1","i":7,"t":100,"ev":"partitioned"}
{"p":"n2#1","i":2,"t":101,"ev":"crash"}
"#;

#[test]
fn every_kind_reads_and_writes_back_the_same_line() {
    let events = parse(LINES).expect("parses");
    assert_eq!(events.len(), 11);
    for (e, line) in events.iter().zip(LINES.lines()) {
        assert_eq!(e.to_json_line(), line);
    }
    assert_eq!(events[1].order, Some(Order::Causal));
    assert_eq!(events[9].ev, EventKind::Partitioned);
}

#[test]
fn a_torn_last_line_is_dropped_but_a_bad_line_elsewhere_is_an_error() {
    let torn = format!("{LINES}{{\"p\":\"n3#1\",\"i\":0,\"t\"");
    assert_eq!(parse(&torn).expect("a torn tail is a crash, not an error").len(), 11);
    let bad = format!("{{\"p\":1}}\n{LINES}");
    assert_eq!(parse(&bad).expect_err("not an event").line, 1);
    let order = LINES.replace("\"causal\"", "\"sideways\"");
    assert!(parse(&order).is_err(), "an order class that does not exist");
}

#[test]
fn kinds_from_a_newer_version_are_read_as_unknown() {
    let e = parse(r#"{"p":"n1#1","i":0,"t":0,"ev":"teleport"}"#).expect("parses");
    assert_eq!(e[0].ev, EventKind::Unknown);
}

#[test]
fn engine_events_map_to_their_trace_events() {
    let g = GroupName::new("g");
    let a = ProcessId::new("a", 1);
    let view = Event::View { group: g.clone(), view: GroupView { id: ViewId(3), members: vec![a.clone()] } };
    let e = TraceEvent::of_engine(&view).expect("a view is traced");
    assert_eq!((e.ev, e.view, e.members), (EventKind::View, Some(3), Some(vec!["a#1".to_string()])));
    let d = Event::Deliver(synchrony_engine::Delivery {
        group: g.clone(),
        view: ViewId(3),
        id: MsgId { sender: a.clone(), counter: 7 },
        order: Order::Safe,
        query: false,
        payload: Default::default(),
    });
    let e = TraceEvent::of_engine(&d).expect("a delivery is traced");
    assert_eq!((e.msg(), e.from.as_deref(), e.order), ("a#1/7", Some("a#1"), Some(Order::Safe)));
    let left = TraceEvent::of_engine(&Event::StateLost { group: g.clone() }).expect("traced as a leave");
    assert_eq!(left.ev, EventKind::Leave);
    let stop = TraceEvent::of_engine(&Event::Partitioned { reason: PartitionReason::Excluded });
    assert_eq!(stop.map(|e| e.ev), Some(EventKind::Partitioned));
    assert!(TraceEvent::of_engine(&Event::Joined).is_none());
}

#[test]
fn a_recorder_numbers_each_incarnation_from_zero() {
    let mut r = Recorder::new("n1#1");
    let a = r.stamp(TraceEvent::left("g"), 5);
    let b = r.stamp(TraceEvent::left("g"), 6);
    assert_eq!((a.p.as_str(), a.i, a.t, b.i), ("n1#1", 0, 5, 1));
    r.set_process("n1#2");
    let c = r.stamp(TraceEvent::bare(EventKind::Crash), 7);
    assert_eq!((c.p.as_str(), c.i), ("n1#2", 0));
}
