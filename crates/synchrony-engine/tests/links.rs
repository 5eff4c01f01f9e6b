//! The reliable links under the engine: what a lost or repeated frame costs.

mod harness;

use bytes::Bytes;
use harness::{carries, g, Fate, Net};
use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;
use synchrony_engine::wire::Msg;
use synchrony_engine::Order;

fn payloads(n: usize) -> Vec<Bytes> {
    (0..n).map(|k| Bytes::from(format!("m{k}"))).collect()
}

#[test]
fn lost_frames_are_sent_again_and_delivered_in_order() {
    let mut net = Net::cluster(2);
    net.join_all("g", &[0, 1]);
    // Everything from n1 to n2 is lost for a while (less than the failure timeout).
    net.set_filter(|from, to, _| if from == 0 && to == 1 { Fate::Drop } else { Fate::Deliver });
    for p in payloads(10) {
        net.with(0, |e, now| e.send(now, g("g"), Order::Fifo, p).expect("sends"));
    }
    net.run_for(Duration::from_millis(40));
    assert!(net.nodes[1].delivered("g").is_empty(), "nothing got through");
    net.clear_filter();
    let ok = net.run_until(Duration::from_secs(1), |net| net.nodes[1].delivered("g").len() == 10);
    assert!(ok, "n2 delivered {:?}", net.nodes[1].delivered("g"));
    assert_eq!(net.nodes[1].delivered("g"), payloads(10));
    assert!(net.engine(0).stats().retransmits > 0, "the link retransmitted");
    assert!(net.dropped > 0);
}

#[test]
fn a_frame_that_arrives_twice_is_delivered_once() {
    let mut net = Net::cluster(2);
    net.join_all("g", &[0, 1]);
    let seen: Rc<RefCell<Vec<Bytes>>> = Rc::default();
    let keep = seen.clone();
    // Keep a copy of each data frame from n1 to n2 by re-encoding what the filter sees.
    net.set_filter(move |from, _, p| {
        if from == 0 && carries(p, |m| matches!(m, Msg::Data { .. })) {
            keep.borrow_mut().push(synchrony_engine::wire::encode(p, None));
        }
        Fate::Deliver
    });
    for p in payloads(3) {
        net.with(0, |e, now| e.send(now, g("g"), Order::Causal, p).expect("sends"));
    }
    net.run_for(Duration::from_millis(20));
    let copies = seen.borrow().clone();
    assert!(!copies.is_empty());
    for f in copies.iter().rev() {
        net.with(1, |e, now| e.handle_frame(now, f).expect("well formed"));
    }
    net.run_for(Duration::from_millis(20));
    assert_eq!(net.nodes[1].delivered("g"), payloads(3));
}
