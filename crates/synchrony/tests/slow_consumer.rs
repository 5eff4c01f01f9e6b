//! An application that falls behind on its events: the node stops reading the network but
//! stays alive (heartbeats), and nobody is excluded; past `app_stall_timeout` it stops and
//! the others go on without it.

use bytes::Bytes;
use std::time::Duration;
use synchrony::{Config, Event, Group, JoinOptions, Node, Order, PartitionReason};
use tokio::time::{sleep, timeout};

mod common;

use common::until_view;

async fn node(name: &str, contact: Option<&Node>, stall: Duration) -> Node {
    let mut config = Config::new(name, "127.0.0.1:0");
    config.set_timeouts(Duration::from_millis(30), Duration::from_millis(300));
    config.app_stall_timeout = stall;
    config.contacts.extend(contact.map(|n| n.listen_addr().to_string()));
    Node::start(config).await.expect("starts")
}

/// Three members in group "g"; `c` is the slow one.
async fn cluster(stall: Duration) -> ([Node; 3], [Group; 3]) {
    let a = node("a", None, Duration::from_secs(10)).await;
    let b = node("b", Some(&a), Duration::from_secs(10)).await;
    let c = node("c", Some(&a), stall).await;
    let mut ga = a.join("g", JoinOptions::default()).await.expect("joins");
    until_view(&mut ga, 1).await;
    let mut gb = b.join("g", JoinOptions::default()).await.expect("joins");
    until_view(&mut gb, 2).await;
    let mut gc = c.join("g", JoinOptions::default()).await.expect("joins");
    for g in [&mut ga, &mut gb, &mut gc] {
        until_view(g, 3).await;
    }
    ([a, b, c], [ga, gb, gc])
}

/// Sends `n` small fifo messages (numbered from 0) from `g`'s node in the background, in
/// batches; stops at the first refusal.
fn send_many(g: &Group, n: u32) -> tokio::task::JoinHandle<()> {
    let s = g.sender();
    tokio::spawn(async move {
        for from in (0..n).step_by(1000) {
            let batch = (from..(from + 1000).min(n)).map(|k| Bytes::from(k.to_le_bytes().to_vec())).collect();
            if s.send_many(Order::Fifo, batch).await.iter().any(|r| r.is_err()) {
                return;
            }
        }
    })
}

/// Takes `g`'s events in the background (the sender's own deliveries).
fn drain(mut g: Group) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move { while g.next_event().await.is_some() {} })
}

/// Reads messages (counting them in order from 0) until `n`, failing on any view change.
async fn read_all(g: &mut Group, n: u32) -> Result<(), String> {
    let mut next = 0u32;
    while next < n {
        match g.next_event().await {
            Some(Event::Message(m)) => {
                let k = u32::from_le_bytes(m.payload()[..4].try_into().expect("4 bytes"));
                if k != next {
                    return Err(format!("got message {k}, expected {next}"));
                }
                next += 1;
            }
            Some(Event::State(_)) => {} // c's (empty) state, before any message
            Some(Event::View(v)) => return Err(format!("a view change: {:?}", v.members)),
            other => return Err(format!("unexpected {other:?}")),
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_application_is_not_taken_for_a_failed_process() {
    timeout(Duration::from_secs(120), async {
        let ([_a, _b, c], [ga, mut gb, mut gc]) = cluster(Duration::from_secs(30)).await;
        // More than c's queue holds (256 batches of 256), while c's application sleeps for
        // ten failure timeouts.
        let n = 120_000;
        let sending = send_many(&ga, n);
        let _a_reads = drain(ga);
        let reading_b = tokio::spawn(async move { read_all(&mut gb, n).await });
        sleep(Duration::from_secs(3)).await;
        let status = c.status().await.expect("running");
        assert!(status.net.reading_paused > 0, "c's queue never filled: the test tests nothing");
        read_all(&mut gc, n).await.expect("c gets every message, in order, in the same view");
        reading_b.await.expect("joins").expect("b gets every message in the same view");
        sending.await.expect("joins");
    })
    .await
    .expect("in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_application_stalled_past_the_limit_stops_its_node_and_the_others_go_on() {
    timeout(Duration::from_secs(120), async {
        let ([_a, _b, _c], [ga, mut gb, mut gc]) = cluster(Duration::from_secs(1)).await;
        let sending = send_many(&ga, 120_000);
        let _a_reads = drain(ga);
        // b sees c go (c's application took nothing for longer than its limit).
        loop {
            match gb.next_event().await.expect("event") {
                Event::View(v) if v.members.len() == 2 => {
                    assert!(v.members.iter().all(|m| &*m.name != "c"), "{:?}", v.members);
                    break;
                }
                Event::View(v) => panic!("unexpected view {:?}", v.members),
                _ => {}
            }
        }
        sending.abort();
        // c, reading at last, learns it was stopped for being stalled.
        loop {
            match gc.next_event().await.expect("event") {
                Event::Partitioned(reason) => {
                    assert_eq!(reason, PartitionReason::Stalled);
                    break;
                }
                Event::View(v) => panic!("c saw a view change before it stopped: {:?}", v.members),
                _ => {}
            }
        }
    })
    .await
    .expect("in time");
}
