//! The peer list of `Config::peers`: which addresses are on it.

use std::collections::BTreeSet;
use std::net::SocketAddr;

/// The peer list, as written and as resolved: an address is on it if it is written the
/// same way, or if both name the same socket address (`localhost:7001` and
/// `127.0.0.1:7001`).
#[derive(Clone, Debug, Default)]
pub(crate) struct Listed {
    entries: BTreeSet<String>,
    addrs: BTreeSet<SocketAddr>,
}

impl Listed {
    /// The list of `entries`, each resolved now (one that does not resolve yet is matched
    /// as written).
    pub(crate) async fn resolve(entries: &[String]) -> Self {
        let mut addrs = BTreeSet::new();
        for e in entries {
            match tokio::net::lookup_host(e.as_str()).await {
                Ok(found) => addrs.extend(found),
                Err(error) => tracing::warn!(peer = %e, %error, "a listed peer's address does not resolve yet"),
            }
        }
        Self { entries: entries.iter().cloned().collect(), addrs }
    }

    /// Whether there is a list at all.
    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// How many nodes it names.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether `addr` (a `listen` address as a node gives it) is on the list.
    pub(crate) fn contains(&self, addr: &str) -> bool {
        self.entries.contains(addr) || addr.parse::<SocketAddr>().is_ok_and(|a| self.addrs.contains(&a))
    }

    /// Whether this node is on the list: listening at `bound` (the address it got) as set
    /// up with `configured` (as its configuration wrote it).
    pub(crate) fn names_node(&self, bound: &str, configured: &str) -> bool {
        self.contains(bound) || self.contains(configured)
    }

    /// The entries, as written.
    pub(crate) fn entries(&self) -> impl Iterator<Item = &String> {
        self.entries.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::Listed;

    #[tokio::test]
    async fn an_address_is_on_the_list_as_written_or_as_resolved() {
        let l = Listed::resolve(&["localhost:7001".into(), "127.0.0.1:7002".into(), "nowhere.invalid:1".into()]).await;
        assert!(l.contains("127.0.0.1:7001"), "resolved");
        assert!(l.contains("127.0.0.1:7002"));
        assert!(l.contains("nowhere.invalid:1"), "as written");
        assert!(!l.contains("127.0.0.1:7003"));
        assert_eq!(l.len(), 3);
    }
}
