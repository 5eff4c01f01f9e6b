//! Messages larger than a fragment (`Config::fragment_bytes`): sent in pieces through the
//! sender's stream, a window at a time, put together by every member and delivered whole
//! at one place of the order; a view change in the middle sends the message again whole,
//! and a sender that dies in the middle leaves nothing of it delivered.

mod harness;

use bytes::Bytes;
use harness::{g, Fate, Net};
use std::cell::RefCell;
use std::collections::BTreeSet;
use std::rc::Rc;
use std::time::Duration;
use synchrony_engine::wire::Msg;
use synchrony_engine::{Config, Event, Order, SendError};

const FRAGMENT: usize = 1024;
const WINDOW: usize = 4 * FRAGMENT;

fn small_fragments(c: &mut Config) {
    c.fragment_bytes = FRAGMENT;
    c.fragment_window_bytes = WINDOW;
}

/// `n` bytes, different at every position and for every `salt`.
fn big(n: usize, salt: u8) -> Bytes {
    (0..n).map(|i| (i as u8).wrapping_mul(31).wrapping_add(salt) ^ (i >> 8) as u8).collect::<Vec<u8>>().into()
}

/// The views in which node `i` delivered `payload` in `group`.
fn delivered_in(net: &Net, i: usize, group: &str, payload: &Bytes) -> Vec<u64> {
    net.nodes[i]
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Deliver(d) if d.group.as_str() == group && d.payload == *payload => Some(d.view.0),
            _ => None,
        })
        .collect()
}

#[test]
fn a_large_message_is_delivered_whole_at_one_place_of_the_total_order_while_small_ones_flow() {
    let mut net = Net::cluster_with(3, small_fragments);
    net.join_all("g", &[0, 1, 2]);
    let m = big(100_000, 7);
    net.with(0, |e, now| e.send(now, g("g"), Order::Total, m.clone()).expect("sends"));
    // Another member keeps sending small messages while the large one goes out.
    for i in 0..20 {
        let s = Bytes::from(format!("small {i}"));
        net.with(1, |e, now| e.send(now, g("g"), Order::Total, s).expect("sends"));
        net.run_for(Duration::from_millis(1));
    }
    let all = |net: &Net| net.nodes.iter().all(|n| n.delivered("g").len() == 21);
    assert!(net.run_until(Duration::from_secs(5), all), "every member delivers all 21");
    let first = net.nodes[0].delivered("g");
    for n in &net.nodes[1..] {
        assert_eq!(n.delivered("g"), first, "{} delivered another order", n.name);
    }
    let at = first.iter().position(|p| *p == m).expect("the large message, whole");
    assert!(at > 0, "small messages sent while it went out were not held behind it");
}

#[test]
fn a_sender_has_at_most_a_window_of_fragments_in_flight() {
    let mut net = Net::cluster_with(3, small_fragments);
    net.join_all("g", &[0, 1, 2]);
    // Nobody acknowledges n1's stream, so its window never opens again; count the
    // fragments that reach n2.
    let offsets = Rc::new(RefCell::new(BTreeSet::new()));
    let seen = offsets.clone();
    let hold = Rc::new(std::cell::Cell::new(true));
    let holding = hold.clone();
    net.set_filter(move |from, to, p| {
        for m in &p.msgs {
            if let (0, 1, Msg::Data { msg, .. }) = (from, to, m) {
                if let Some(f) = msg.frag {
                    seen.borrow_mut().insert(f.offset);
                }
            }
        }
        let ack = p.msgs.iter().any(|m| matches!(m, Msg::Ack { .. }));
        if holding.get() && to == 0 && ack {
            Fate::Drop
        } else {
            Fate::Deliver
        }
    });
    let m = big(100_000, 3);
    net.with(0, |e, now| e.send(now, g("g"), Order::Fifo, m.clone()).expect("sends"));
    net.run_for(Duration::from_millis(50));
    let sent = offsets.borrow().len();
    assert!((1..=WINDOW / FRAGMENT).contains(&sent), "{sent} fragments in flight, window {WINDOW} bytes");
    assert!(net.nodes[1].delivered("g").is_empty());
    // Flow control counts the whole message until every member holds it.
    assert_eq!(net.engine_ref(0).outstanding(&g("g")), 1 + sent);
    assert_eq!(net.engine_ref(0).outstanding_bytes(&g("g")), 100_000);
    hold.set(false);
    let all = |net: &Net| net.nodes.iter().all(|n| n.delivered("g") == [m.clone()]);
    assert!(net.run_until(Duration::from_secs(5), all), "the window opens again and the message completes");
    assert_eq!(offsets.borrow().len(), 100_000usize.div_ceil(FRAGMENT));
    net.run_for(Duration::from_millis(20));
    assert_eq!(net.engine_ref(0).outstanding_bytes(&g("g")), 0);
}

#[test]
fn a_large_message_cut_short_by_a_view_change_is_sent_again_whole_in_the_next_view() {
    let mut net = Net::cluster_with(4, small_fragments);
    net.join_all("g", &[0, 1, 2]);
    let m = big(400_000, 11);
    net.with(0, |e, now| e.send(now, g("g"), Order::Causal, m.clone()).expect("sends"));
    net.run_for(Duration::from_millis(3));
    assert!(net.nodes[1].delivered("g").is_empty(), "still going out when the view changes");
    net.with(3, |e, now| e.join(now, g("g")).expect("joins"));
    let all = |net: &Net| (0..4).all(|i| !delivered_in(net, i, "g", &m).is_empty());
    assert!(net.run_until(Duration::from_secs(10), all), "every member of the new view delivers it");
    let joined = net.nodes[3].views("g")[0].0;
    for i in 0..4 {
        assert_eq!(delivered_in(&net, i, "g", &m), [joined], "{} delivers it once, in the view n4 joined", i + 1);
    }
}

#[test]
fn a_large_message_whose_sender_dies_half_way_is_delivered_nowhere() {
    let mut net = Net::cluster_with(3, small_fragments);
    net.join_all("g", &[0, 1, 2]);
    let m = big(400_000, 5);
    net.with(2, |e, now| e.send(now, g("g"), Order::Fifo, m.clone()).expect("sends"));
    net.run_for(Duration::from_millis(3));
    net.crash(2);
    let two = |net: &Net| (0..2).all(|i| net.nodes[i].views("g").last().is_some_and(|(_, ms)| ms.len() == 2));
    assert!(net.run_until(Duration::from_secs(5), two), "the survivors install a view without n3");
    // The group goes on, and nothing of the message shows anywhere.
    net.with(0, |e, now| e.send(now, g("g"), Order::Fifo, big(5_000, 1)).expect("sends"));
    let after = |net: &Net| (0..2).all(|i| net.nodes[i].delivered("g").len() == 1);
    assert!(net.run_until(Duration::from_secs(5), after));
    for i in 0..2 {
        assert_eq!(net.nodes[i].delivered("g"), [big(5_000, 1)], "n{} delivered only the later message", i + 1);
    }
}

#[test]
fn a_payload_over_the_limit_is_refused_with_its_size_and_the_limit() {
    let mut net = Net::cluster_with(1, |c| {
        small_fragments(c);
        c.max_message_bytes = 10_000;
    });
    net.join_all("g", &[0]);
    let refused = net.with(0, |e, now| e.send(now, g("g"), Order::Fifo, big(10_001, 0)));
    assert_eq!(refused, Err(SendError::TooLarge { size: 10_001, limit: 10_000 }));
    let text = SendError::TooLarge { size: 10_001, limit: 10_000 }.to_string();
    assert!(text.contains("10001") && text.contains("10000"), "{text}");
    // A gbcast travels whole in a membership decision: at most one packet or fragment.
    let limit = Config::fast().packet_bytes_max;
    let gbcast = net.with(0, |e, now| e.send(now, g("g"), Order::Gbcast, big(limit + 1, 0)));
    assert_eq!(gbcast, Err(SendError::TooLarge { size: limit + 1, limit }));
    // At the limit, alone in the group: delivered whole at once.
    net.with(0, |e, now| e.send(now, g("g"), Order::Safe, big(10_000, 2)).expect("sends"));
    net.run_for(Duration::from_millis(20));
    assert_eq!(net.nodes[0].delivered("g"), [big(10_000, 2)]);
}
