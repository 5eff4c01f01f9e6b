//! What the API tests share.

use std::time::Duration;
use synchrony::{Config, Event, Group, Node};

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
