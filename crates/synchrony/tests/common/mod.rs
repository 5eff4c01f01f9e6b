//! What the API tests share.

use std::time::Duration;
use synchrony::{Config, Event, Group, JoinOptions, Node};

/// A node on loopback with short timeouts, joining through `contact` (or founding).
#[allow(dead_code)] // not every test file starts its nodes this way
pub(crate) async fn node(name: &str, contact: Option<&Node>) -> Node {
    let mut config = Config::new(name, "127.0.0.1:0");
    config.set_timeouts(Duration::from_millis(50), Duration::from_millis(500));
    config.contacts.extend(contact.map(|n| n.listen_addr().to_string()));
    Node::start(config).await.expect("starts")
}

/// Reads events until a view with `n` members, answering state requests.
#[allow(dead_code)] // not every test file waits for views this way
pub(crate) async fn until_view(g: &mut Group, n: usize) {
    loop {
        match g.next_event().await.expect("event") {
            Event::View(v) if v.members.len() == n => return,
            Event::StateRequest(r) => {
                let _ = r.provide("").await;
            }
            _ => {}
        }
    }
}

/// Three nodes named `names` (the first founds), each in `group`, once every one of them
/// has the view of three.
#[allow(dead_code)] // not every test file starts three this way
pub(crate) async fn trio(names: [&str; 3], group: &str) -> ([Node; 3], [Group; 3]) {
    let a = node(names[0], None).await;
    let b = node(names[1], Some(&a)).await;
    let c = node(names[2], Some(&a)).await;
    let mut groups = Vec::new();
    for n in [&a, &b, &c] {
        groups.push(n.join(group, JoinOptions::default()).await.expect("joins"));
    }
    for g in &mut groups {
        until_view(g, 3).await;
    }
    let [ga, gb, gc]: [Group; 3] = groups.try_into().unwrap_or_else(|_| unreachable!("three groups"));
    ([a, b, c], [ga, gb, gc])
}
