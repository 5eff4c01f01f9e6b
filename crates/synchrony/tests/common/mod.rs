//! What the API tests share.

use std::time::Duration;
use synchrony::{Config, Node};

/// A node on loopback with short timeouts, joining through `contact` (or founding).
pub(crate) async fn node(name: &str, contact: Option<&Node>) -> Node {
    let mut config = Config::new(name, "127.0.0.1:0");
    config.failure_timeout = Duration::from_millis(500);
    config.heartbeat_interval = Duration::from_millis(50);
    config.contacts.extend(contact.map(|n| n.listen_addr().to_string()));
    Node::start(config).await.expect("starts")
}
