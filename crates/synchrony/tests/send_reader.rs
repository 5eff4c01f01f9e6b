//! A payload sent from a reader (`Group::send_reader`): spooled, mapped, sent in fragments,
//! delivered whole at every member (the sender too) in its order; one over the limit is
//! refused with its size and the limit.

use std::time::Duration;
use synchrony::{Config, Event, GroupSendError, JoinOptions, Node, Order, SendError};
use tokio::time::timeout;

async fn node(name: &str, contact: Option<&Node>, limit: usize) -> Node {
    let mut config = Config::new(name, "127.0.0.1:0");
    config.set_timeouts(Duration::from_millis(50), Duration::from_millis(500));
    config.engine.max_message_bytes = limit;
    config.contacts.extend(contact.map(|n| n.listen_addr().to_string()));
    Node::start(config).await.expect("starts")
}

fn byte_at(i: usize) -> u8 {
    (i.wrapping_mul(131) ^ (i >> 16)) as u8
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payload_sent_from_a_reader_arrives_whole_at_every_member() {
    const SIZE: usize = 20 << 20;
    timeout(Duration::from_secs(60), async {
        let a = node("r1", None, 1 << 30).await;
        let b = node("r2", Some(&a), 1 << 30).await;
        let mut ga = a.join("files", JoinOptions::default()).await.expect("joins");
        let mut gb = b.join("files", JoinOptions::default()).await.expect("joins");
        let data: Vec<u8> = (0..SIZE).map(byte_at).collect();
        ga.send(Order::Total, "before").await.expect("sends");
        let id = ga.send_reader(Order::Total, &data[..]).await.expect("sends");
        ga.send(Order::Total, "after").await.expect("sends");
        for g in [&mut ga, &mut gb] {
            let mut got = Vec::new();
            while got.len() < 3 {
                match g.next_event().await.expect("event") {
                    Event::Message(m) => got.push((m.id().clone(), m.payload().clone())),
                    Event::StateRequest(r) => r.provide("").await.expect("running"),
                    _ => {}
                }
            }
            assert_eq!(&got[0].1[..], b"before");
            assert!(got[1].0 == id && got[1].1 == data[..], "the payload whole, in its place");
            assert_eq!(&got[2].1[..], b"after");
        }
        // Over the limit: refused once the reading passes it.
        let small = node("r3", None, 1000).await;
        let gs = small.join("limited", JoinOptions::default()).await.expect("joins");
        match gs.send_reader(Order::Fifo, &data[..5000]).await {
            Err(GroupSendError::Send(SendError::TooLarge { size, limit })) => assert_eq!((size, limit), (1001, 1000)),
            other => panic!("{other:?}"),
        }
        for n in [&a, &b, &small] {
            let _ = n.shutdown().await;
        }
    })
    .await
    .expect("in time");
}
