//! Event gates: what an application sees while a state transfer is under way.

mod harness;

use bytes::Bytes;
use harness::{g, Net};
use std::time::Duration;
use synchrony_engine::{Event, Order};

#[test]
fn a_provider_sees_nothing_of_the_group_until_it_provides_the_state() {
    let mut net = Net::cluster(2);
    net.join_all("g", &[0]);
    net.auto_state = false;
    net.with(1, |e, now| e.join(now, g("g")).expect("joins"));
    let asked = net.run_until(Duration::from_secs(1), |net| {
        net.nodes[0].events.iter().any(|e| matches!(e, Event::StateRequest { .. }))
    });
    assert!(asked);
    let Some(Event::StateRequest { view, .. }) =
        net.nodes[0].events.iter().find(|e| matches!(e, Event::StateRequest { .. })).cloned()
    else {
        unreachable!()
    };
    // The provider sends before it answers: its own delivery waits behind the request.
    net.with(0, |e, now| e.send(now, g("g"), Order::Total, Bytes::from_static(b"after")).expect("sends"));
    net.run_for(Duration::from_millis(30));
    assert!(net.nodes[0].delivered("g").is_empty(), "held behind the state request");
    assert!(net.nodes[1].delivered("g").is_empty(), "the joiner has no state yet");
    net.with(0, |e, now| e.provide_state(now, &g("g"), view, Bytes::from_static(b"state")));
    let done = net.run_until(Duration::from_secs(1), |net| net.nodes.iter().all(|n| n.delivered("g").len() == 1));
    assert!(done);
    // The joiner's state comes before any delivery of the group, and is what was provided.
    let joiner = &net.nodes[1].events;
    let state = joiner.iter().position(|e| matches!(e, Event::State { state, .. } if &state[..] == b"state"));
    let first = joiner.iter().position(|e| matches!(e, Event::Deliver(_)));
    assert!(state.is_some() && state < first, "{joiner:?}");
}
