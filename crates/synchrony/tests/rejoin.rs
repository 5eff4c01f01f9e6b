//! A group left and joined again at once: the new handle sees the new membership only,
//! even when the old membership's `Left` was held back (behind another group's delivery
//! that waits for a state the application owes: causal order across groups).

mod common;

use common::{node, until_view};
use std::time::Duration;
use synchrony::{Event, Group, JoinOptions, Order, StateRequest};
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(10);

/// The first state request of `g`, reading past its views.
async fn state_request(g: &mut Group) -> StateRequest {
    loop {
        match timeout(WAIT, g.next_event()).await.expect("in time").expect("event") {
            Event::StateRequest(r) => return r,
            Event::View(_) | Event::Message(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// Reads `g` until its state came.
async fn has_state(g: &mut Group) {
    loop {
        match timeout(WAIT, g.next_event()).await.expect("in time").expect("event") {
            Event::State(_) => return,
            Event::View(_) | Event::Message(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_joined_again_while_its_leave_is_held_back_hears_only_the_new_membership() {
    let a = node("ra", None).await;
    let b = node("rb", Some(&a)).await;
    let mut a_in_x = a.join("x", JoinOptions::default()).await.expect("joins");
    let mut a_in_y = a.join("y", JoinOptions::default()).await.expect("joins");
    let mut b_in_x = b.join("x", JoinOptions::default()).await.expect("joins");
    let mut b_in_y = b.join("y", JoinOptions::default()).await.expect("joins");
    for g in [&mut a_in_x, &mut a_in_y] {
        state_request(g).await.provide("state").await.expect("provides");
    }
    for g in [&mut b_in_x, &mut b_in_y] {
        has_state(g).await;
    }

    // A third node joins x: its members are asked for the state, and a holds its request
    // (x's later events wait at a until it answers). An ordered message of b is delivered
    // at a behind that gate.
    let c = node("rc", Some(&a)).await;
    let mut c_in_x = tokio::spawn(async move {
        let g = c.join("x", JoinOptions::default()).await.expect("joins");
        (c, g)
    });
    let owed = state_request(&mut a_in_x).await;
    b_in_x.send(Order::Total, "held at a").await.expect("sends");
    // (b gives the state if asked too, and reads x on.)
    tokio::spawn(async move {
        while let Some(ev) = b_in_x.next_event().await {
            if let Event::StateRequest(r) = ev {
                let _ = r.provide("x state").await;
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;

    // a leaves y (its handle dropped): the leave is decided, and its `Left` waits at a
    // behind x's held delivery. a joins y again at once.
    drop(a_in_y);
    timeout(WAIT, until_view(&mut b_in_y, 1)).await.expect("a left y");
    // Its first view could not be shown before x's held delivery anyway: the join returns
    // once x's state is given, and then what x held goes to the application, and so does
    // y's old `Left`, which is not the new membership's.
    let rejoin = tokio::spawn(async move {
        let r = a.join("y", JoinOptions::default()).await;
        (a, r)
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    owed.provide("x state").await.expect("provides");
    let (_a, again) = timeout(WAIT, rejoin).await.expect("in time").expect("joined");
    let mut again = again.expect("a member of y again");
    timeout(WAIT, until_view(&mut b_in_y, 2)).await.expect("a in y again");
    let (_c, _c_in_x) = timeout(WAIT, &mut c_in_x).await.expect("in time").expect("joined");
    loop {
        match timeout(WAIT, again.next_event()).await.expect("in time").expect("event") {
            Event::View(v) if v.members.len() == 2 => break,
            Event::Left => panic!("the new membership of y heard the old one's Left"),
            Event::StateRequest(r) => r.provide("y state").await.expect("provides"),
            _ => {}
        }
    }
    again.send(Order::Total, "still a member").await.expect("a member can send");
    loop {
        match timeout(WAIT, b_in_y.next_event()).await.expect("in time").expect("event") {
            Event::Message(m) if m.payload().as_ref() == b"still a member" => break,
            Event::StateRequest(r) => r.provide("y state").await.expect("provides"),
            _ => {}
        }
    }
}
