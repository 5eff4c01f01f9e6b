//! The order classes, rule by rule: what each waits for, with frames held by hand.

mod harness;

use bytes::Bytes;
use harness::{g, Net};
use std::time::Duration;
use synchrony_engine::wire::Msg;
use synchrony_engine::{Event, Order, PartitionReason, Status};

fn b(s: &'static str) -> Bytes {
    Bytes::from_static(s.as_bytes())
}

fn is_data(m: &Msg) -> bool {
    matches!(m, Msg::Data { .. })
}

#[test]
fn a_causal_message_waits_for_what_its_sender_had_delivered() {
    let mut net = Net::cluster(3);
    net.join_all("g", &[0, 1, 2]);
    // n1's multicasts reach n3 late; n2 answers n1's message at once.
    let hold = net.drop_msgs(Some(0), Some(2), is_data);
    net.with(0, |e, now| e.send(now, g("g"), Order::Causal, b("question")).expect("sends"));
    assert!(net.run_until(Duration::from_secs(1), |net| net.nodes[1].delivered("g").len() == 1));
    net.with(1, |e, now| e.send(now, g("g"), Order::Causal, b("answer")).expect("sends"));
    net.run_for(Duration::from_millis(20));
    assert!(net.nodes[2].delivered("g").is_empty(), "the answer waits for the question");
    hold.set(false);
    assert!(net.run_until(Duration::from_secs(1), |net| net.nodes[2].delivered("g").len() == 2));
    assert_eq!(net.nodes[2].delivered("g"), [b("question"), b("answer")]);
}

#[test]
fn total_order_is_one_order_at_every_member() {
    let mut net = Net::cluster(3);
    net.join_all("g", &[0, 1, 2]);
    // Two senders at the same instant: each hears its own message first.
    for round in 0..5 {
        let (x, y) = (Bytes::from(format!("n1-{round}")), Bytes::from(format!("n2-{round}")));
        net.with(1, |e, now| e.send(now, g("g"), Order::Total, y).expect("sends"));
        net.with(2, |e, now| e.send(now, g("g"), Order::Total, x).expect("sends"));
    }
    assert!(net.run_until(Duration::from_secs(1), |net| net.nodes.iter().all(|n| n.delivered("g").len() == 10)));
    let first = net.nodes[0].delivered("g");
    for n in &net.nodes[1..] {
        assert_eq!(n.delivered("g"), first, "{} delivered another order", n.name);
    }
}

#[test]
fn a_safe_message_waits_until_every_member_holds_it() {
    let mut net = Net::cluster(3);
    net.join_all("g", &[0, 1, 2]);
    // The sender is not the sequencer: its stream's stability comes from the others' acks
    // alone (the sequencer's order tokens still reach n3).
    let hold = net.drop_msgs(Some(1), Some(2), is_data);
    net.with(1, |e, now| e.send(now, g("g"), Order::Safe, b("uniform")).expect("sends"));
    net.run_for(Duration::from_millis(40));
    for n in &net.nodes {
        assert!(n.delivered("g").is_empty(), "{} delivered before n3 held it", n.name);
    }
    hold.set(false);
    assert!(net.run_until(Duration::from_secs(1), |net| net.nodes.iter().all(|n| n.delivered("g").len() == 1)));
}

#[test]
fn what_a_crashed_sender_got_to_one_survivor_reaches_every_survivor_in_the_old_view() {
    let mut net = Net::cluster(3);
    net.join_all("g", &[0, 1, 2]);
    let view = net.nodes[0].views("g").last().expect("a view").0;
    // n3's message reaches n1 only, then n3 crashes: the flush must give it to n2 too,
    // in the view it was sent in (G4).
    net.drop_msgs(Some(2), Some(1), is_data);
    net.with(2, |e, now| e.send(now, g("g"), Order::Fifo, b("last words")).expect("sends"));
    assert!(net.run_until(Duration::from_secs(1), |net| net.nodes[0].delivered("g").len() == 1));
    net.crash(2);
    let next = |net: &Net| net.nodes[1].views("g").last().is_some_and(|v| v.1 == ["n1", "n2"]);
    assert!(net.run_until(Duration::from_secs(3), next));
    let delivered_in = |i: usize| {
        net.nodes[i].events.iter().find_map(|e| match e {
            Event::Deliver(d) if d.payload == b("last words") => Some(d.view.0),
            _ => None,
        })
    };
    assert_eq!(delivered_in(0), Some(view));
    assert_eq!(delivered_in(1), Some(view), "n2 got it from the cut, before the next view");
}

#[test]
fn a_process_cut_off_from_the_majority_stops_and_installs_nothing() {
    let mut net = Net::cluster(3);
    net.join_all("g", &[0, 1, 2]);
    let views_before = net.nodes[0].views("g").len();
    // n1 (the leader) hears nobody and nobody hears it.
    net.set_filter(|from, to, _| if from == 0 || to == 0 { harness::Fate::Drop } else { harness::Fate::Deliver });
    assert!(net.run_until(Duration::from_secs(3), |net| net.nodes[0].status() == Some(Status::Partitioned)));
    assert!(net.nodes[0]
        .events
        .iter()
        .any(|e| matches!(e, Event::Partitioned { reason: PartitionReason::LostMajority })));
    assert_eq!(net.nodes[0].views("g").len(), views_before, "no view without a majority");
    // The majority goes on without it.
    let on = net
        .run_until(Duration::from_secs(3), |net| net.nodes[1].views("g").last().is_some_and(|v| v.1 == ["n2", "n3"]));
    assert!(on, "{:?}", net.nodes[1].views("g"));
}
