//! The cut a leader computes from the survivors' flush reports.

use bytes::Bytes;
use std::sync::Arc;
use synchrony_engine::internals::{compute_cut, compute_cut_with_quiet};
use synchrony_engine::wire::{DataMsg, Report};
use synchrony_engine::{GroupName, GroupView, MsgId, Order, ProcessId, ViewId};

fn p(n: &str) -> ProcessId {
    ProcessId::new(n, 1)
}

fn view() -> GroupView {
    GroupView { id: ViewId(1), members: vec![p("a"), p("b"), p("c")] }
}

fn msg(owner: &str, seq: u64, order: Order, vt: Vec<u64>) -> Arc<DataMsg> {
    Arc::new(DataMsg {
        id: MsgId { sender: p(owner), counter: seq },
        seq,
        order,
        vt: vt.into(),
        query: false,
        relayed: false,
        frag: None,
        payload: Bytes::new(),
    })
}

/// A report: per owner, the messages held and how many were delivered.
fn report(streams: &[(&str, Vec<Arc<DataMsg>>, u64)], order: Vec<(u32, u64)>, delivered_total: u64) -> Report {
    Report {
        group: GroupName::new("g"),
        view: ViewId(1),
        streams: streams.iter().map(|(o, ms, _)| (p(o), ms.clone())).collect(),
        delivered: streams.iter().map(|(o, _, d)| (p(o), *d)).collect(),
        order_base: 0,
        order,
        delivered_total,
    }
}

fn hi(cut: &synchrony_engine::wire::Cut, owner: &str) -> u64 {
    cut.streams.iter().find(|(o, _)| *o == p(owner)).map(|(_, h)| *h).expect("every stream")
}

#[test]
fn the_cut_holds_what_any_survivor_holds() {
    // c failed; a holds c's messages 1 and 2, b only 1: both go in the cut, so b gets 2.
    let c1 = msg("c", 1, Order::Fifo, vec![]);
    let c2 = msg("c", 2, Order::Fifo, vec![]);
    let a = report(&[("a", vec![], 0), ("b", vec![], 0), ("c", vec![c1.clone(), c2.clone()], 0)], vec![], 0);
    let b = report(&[("a", vec![], 0), ("b", vec![], 0), ("c", vec![c1], 0)], vec![], 0);
    let cut = compute_cut(&view(), &[&a, &b]);
    assert_eq!(hi(&cut, "c"), 2);
    assert!(cut.msgs.iter().any(|(o, m)| *o == p("c") && m.seq == 2));
}

#[test]
fn a_message_whose_causal_past_no_survivor_holds_is_cut_off() {
    // b's message 1 depends on c's message 3, which no survivor holds: nobody can deliver
    // it, so the cut stops b's stream before it (and everything after it in b's stream).
    let c1 = msg("c", 1, Order::Fifo, vec![]);
    let b1 = msg("b", 1, Order::Causal, vec![0, 1, 3]);
    let b2 = msg("b", 2, Order::Fifo, vec![]);
    let a = report(&[("a", vec![], 0), ("b", vec![b1.clone(), b2.clone()], 0), ("c", vec![c1.clone()], 0)], vec![], 0);
    let b = report(&[("a", vec![], 0), ("b", vec![b1, b2], 0), ("c", vec![c1], 0)], vec![], 0);
    let cut = compute_cut(&view(), &[&a, &b]);
    assert_eq!(hi(&cut, "b"), 0);
    assert_eq!(hi(&cut, "c"), 1);
}

#[test]
fn the_total_order_is_the_longest_known_then_the_rest_causally() {
    // The sequencer (a) ordered b:1 before a:1 and failed; b knows that order, c knows
    // nothing. c:1 was never ordered: it goes last, after what it causally follows.
    let a1 = msg("a", 1, Order::Total, vec![1, 0, 0]);
    let b1 = msg("b", 1, Order::Total, vec![0, 1, 0]);
    let c1 = msg("c", 1, Order::Total, vec![1, 1, 1]);
    let streams = |d| vec![("a", vec![a1.clone()], d), ("b", vec![b1.clone()], d), ("c", vec![c1.clone()], 0)];
    let b = report(&streams(0), vec![(1, 1), (0, 1)], 0);
    let c = report(&streams(0), vec![], 0);
    let old = GroupView { id: ViewId(1), members: vec![p("a"), p("b"), p("c")] };
    let cut = compute_cut(&old, &[&b, &c]);
    assert_eq!(cut.order_base, 0);
    assert_eq!(cut.order, vec![(1, 1), (0, 1), (2, 1)]);
}

#[test]
fn what_some_survivor_delivered_is_never_cut_off() {
    // b delivered a's first two messages; c holds none of them: the cut keeps them.
    let a1 = msg("a", 1, Order::Fifo, vec![]);
    let a2 = msg("a", 2, Order::Fifo, vec![]);
    let b = report(&[("a", vec![a1, a2], 2), ("b", vec![], 0), ("c", vec![], 0)], vec![], 0);
    let c = report(&[("a", vec![], 0), ("b", vec![], 0), ("c", vec![], 0)], vec![], 0);
    let cut = compute_cut(&view(), &[&b, &c]);
    assert_eq!(hi(&cut, "a"), 2);
    assert_eq!(cut.msgs.len(), 2);
}

#[test]
fn the_order_starts_where_the_least_advanced_survivor_is() {
    // Both survivors delivered the first two positions; the known order goes on from there.
    let a1 = msg("a", 1, Order::Total, vec![1, 0, 0]);
    let a2 = msg("a", 2, Order::Total, vec![2, 0, 0]);
    let a3 = msg("a", 3, Order::Total, vec![3, 0, 0]);
    let mut b = report(&[("a", vec![a3.clone()], 2), ("b", vec![], 0), ("c", vec![], 0)], vec![(0, 3)], 2);
    b.order_base = 2;
    let mut c = report(&[("a", vec![a3], 2), ("b", vec![], 0), ("c", vec![], 0)], vec![(0, 3)], 2);
    c.order_base = 2;
    let _ = (a1, a2);
    let cut = compute_cut(&view(), &[&b, &c]);
    assert_eq!(cut.order_base, 2);
    assert_eq!(cut.order, vec![(0, 3)]);
}

#[test]
fn a_quiet_survivor_that_did_not_report_gets_what_a_reporter_delivered_beyond_it() {
    // c failed. b is quiet (it delivered all it received, all stable) and sent no report;
    // a delivered c:1 and c:2 in total order, c:1 stable (so dropped), c:2 not (b lacks
    // it). The cut must carry c:2 and its order position to b, though a delivered it.
    let c2 = msg("c", 2, Order::Total, vec![]);
    let a =
        Report { order_base: 1, ..report(&[("a", vec![], 0), ("b", vec![], 0), ("c", vec![c2], 2)], vec![(2, 2)], 2) };
    let with_quiet = compute_cut_with_quiet(&view(), &[&a]);
    assert_eq!(hi(&with_quiet, "c"), 2);
    assert!(with_quiet.msgs.iter().any(|(o, m)| *o == p("c") && m.seq == 2), "c:2 is in the cut");
    assert_eq!((with_quiet.order_base, &with_quiet.order[..]), (1, &[(2, 2)][..]), "and its place in the order");
    // Read as if every survivor had reported, a's report says all delivered c:2 already.
    let complete = compute_cut(&view(), &[&a]);
    assert!(complete.msgs.is_empty() && complete.order.is_empty());
}
