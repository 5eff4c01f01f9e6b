//! Messages from a view this process has not installed yet wait for it.

mod harness;

use bytes::Bytes;
use harness::{g, Net};
use std::time::Duration;
use synchrony_engine::wire::Msg;
use synchrony_engine::{Event, Order};

#[test]
fn a_message_of_a_view_not_yet_installed_is_held_and_delivered_in_it() {
    let mut net = Net::cluster(3);
    net.join_all("g", &[0, 1]);
    // The leader's commits to n3 are lost for a while: n3 hears of its own join late.
    let hold = net.drop_msgs(Some(0), Some(2), |m| matches!(m, Msg::Commit { .. }));
    net.with(2, |e, now| e.join(now, g("g")).expect("joins"));
    let n2_in_view_2 = net.run_until(Duration::from_secs(1), |net| net.nodes[1].views("g").len() == 2);
    assert!(n2_in_view_2, "{:?}", net.nodes[1].views("g"));
    net.with(1, |e, now| e.send(now, g("g"), Order::Fifo, Bytes::from_static(b"m")).expect("sends"));
    net.run_for(Duration::from_millis(10));
    assert!(!net.nodes[2].in_group("g"), "n3 has not heard of the view yet");
    hold.set(false);
    let got = net.run_until(Duration::from_secs(1), |net| net.nodes[2].delivered("g").len() == 1);
    assert!(got, "{:?}", net.nodes[2].events);
    let ev = &net.nodes[2].events;
    let view = ev.iter().position(|e| matches!(e, Event::View { .. })).expect("a view");
    let installed = net.nodes[2].views("g")[0].0;
    let Some((at, Event::Deliver(d))) = ev.iter().enumerate().find(|(_, e)| matches!(e, Event::Deliver(_))) else {
        unreachable!()
    };
    assert!(view < at && d.view.0 == installed, "delivered in the view it was sent in");
    assert_eq!(net.nodes[1].views("g").last().map(|v| v.0), Some(installed), "the sender's view");
}
