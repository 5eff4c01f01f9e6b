//! A replicated counter: three nodes add to it concurrently, a fourth joins and receives
//! the value by state transfer, and a group RPC reads it from every member. Every member
//! applies the same additions in the same (total) order, so all end with the same value.
//!
//! ```text
//! cargo run --example counter
//! ```

use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use synchrony::{Config, Event, Group, GroupSender, JoinOptions, Node, Order, Replies};

#[derive(Serialize, Deserialize)]
enum Op {
    Add(i64),
    Read,
}

/// Applies the group's events to one replica of the counter.
async fn replica(mut group: Group, value: Arc<AtomicI64>) {
    while let Some(ev) = group.next_event().await {
        match ev {
            Event::Message(m) => match m.value::<Op>() {
                Ok(Op::Add(n)) => {
                    value.fetch_add(n, Ordering::SeqCst);
                }
                Ok(Op::Read) => {
                    let _ = m.reply_value(&value.load(Ordering::SeqCst)).await;
                }
                Err(_) => {
                    let _ = m.reply_null().await; // a stopped node ends the loop
                }
            },
            // The state is the value; it is exact because later messages wait for it.
            Event::StateRequest(r) => {
                let _ = r.provide(value.load(Ordering::SeqCst).to_le_bytes().to_vec()).await;
            }
            Event::State(s) => {
                let bytes: [u8; 8] = s[..].try_into().unwrap_or([0; 8]);
                value.store(i64::from_le_bytes(bytes), Ordering::SeqCst);
            }
            _ => {}
        }
    }
}

/// Starts a node with a replica; returns the node and a sender for its group.
async fn start(name: &str, contact: Option<&str>) -> anyhow::Result<(Node, GroupSender)> {
    let mut config = Config::new(name, "127.0.0.1:0");
    config.contacts.extend(contact.map(String::from));
    let node = Node::start(config).await?;
    let group = node.join("counter", JoinOptions::default()).await?;
    let sender = group.sender();
    tokio::spawn(replica(group, Arc::new(AtomicI64::new(0))));
    Ok((node, sender))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (a, sa) = start("a", None).await?;
    let contact = a.listen_addr().to_string();
    let (b, sb) = start("b", Some(&contact)).await?;
    let (c, sc) = start("c", Some(&contact)).await?;
    // Everyone adds concurrently: 3 x the numbers 1 to 100.
    let mut tasks = Vec::new();
    for s in [sa, sb, sc] {
        tasks.push(tokio::spawn(async move {
            for k in 1..=100 {
                s.send_value(Order::Total, &Op::Add(k)).await.expect("send");
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    // A late joiner gets the value by state transfer, then reads it from everyone.
    let (d, sd) = start("d", Some(&contact)).await?;
    let outcome = sd.query(Order::Total, synchrony::encode(&Op::Read)?, Replies::All).await?;
    let answers: Vec<(String, i64)> =
        outcome.replies.iter().map(|(p, b)| (p.to_string(), synchrony::decode(b).unwrap_or(-1))).collect();
    println!("every member answers the read: {answers:?}");
    let expected = 3 * (1..=100).sum::<i64>();
    anyhow::ensure!(answers.len() == 4 && answers.iter().all(|(_, v)| *v == expected), "replicas disagree");
    println!("all 4 replicas hold {expected}");
    for n in [d, c, b, a] {
        let _ = n.shutdown().await;
    }
    Ok(())
}
