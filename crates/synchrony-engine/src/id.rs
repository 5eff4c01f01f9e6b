//! Identifiers: processes, groups, messages, ballots.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::Arc;

/// A process: a name (an address in real runs, `n3` in simulation) and an incarnation.
///
/// A restarted process gets a higher incarnation and counts as a new process: an excluded
/// incarnation never comes back. Incarnation 0 means "whoever answers at this name" and is
/// only used to address contact points.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ProcessId {
    /// The process's name, unique in the cluster.
    #[serde(deserialize_with = "interned")]
    pub name: Arc<str>,
    /// The incarnation, from 1.
    pub incarnation: u64,
}

/// Names remembered by [`intern`] on one thread before it starts afresh.
const NAMES_MAX: usize = 1 << 16;

std::thread_local! {
    /// Names decoded on this thread (see `intern`).
    static NAMES: std::cell::RefCell<std::collections::HashSet<Arc<str>>> =
        std::cell::RefCell::new(std::collections::HashSet::new());
}

/// The same names come in message after message (processes, and groups: a process may be
/// in thousands): decoding shares one `Arc<str>` per name instead of allocating each
/// again. A hash set, so a name costs the same to look up among thousands; bounded, so
/// names from long ago do not pile up.
fn intern(s: &str) -> Arc<str> {
    NAMES.with(|names| {
        let mut names = names.borrow_mut();
        if let Some(a) = names.get(s) {
            return a.clone();
        }
        if names.len() >= NAMES_MAX {
            names.clear();
        }
        let a: Arc<str> = Arc::from(s);
        names.insert(a.clone());
        a
    })
}

fn interned<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Arc<str>, D::Error> {
    struct Name;
    impl serde::de::Visitor<'_> for Name {
        type Value = Arc<str>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a name")
        }
        fn visit_str<E>(self, v: &str) -> Result<Arc<str>, E> {
            Ok(intern(v))
        }
    }
    d.deserialize_str(Name)
}

impl ProcessId {
    /// Builds a process id.
    pub fn new(name: impl Into<Arc<str>>, incarnation: u64) -> Self {
        Self { name: name.into(), incarnation }
    }

    /// The contact address form of a name: any incarnation.
    pub fn contact(name: impl Into<Arc<str>>) -> Self {
        Self::new(name, 0)
    }

    /// Whether this id addresses any incarnation at its name.
    pub fn is_contact(&self) -> bool {
        self.incarnation == 0
    }
}

impl fmt::Display for ProcessId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}", self.name, self.incarnation)
    }
}

impl fmt::Debug for ProcessId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// The name of a process group.
///
/// Ordered by its bytes, as a string is. Its first eight bytes are kept beside the shared
/// string, so that comparing two names seldom reads either string: a process in thousands
/// of groups looks names up in ordered maps of thousands, and a string behind a pointer is
/// a cache miss per comparison on the way.
#[derive(Clone, Serialize, Deserialize)]
#[serde(from = "NameRepr", into = "NameRepr")]
pub struct GroupName {
    name: Arc<str>,
    /// The first eight bytes, big-endian, zero-padded: when two heads differ, they order
    /// the names as their strings do (the first difference is within them).
    head: u64,
}

/// The wire (and trace) form of a [`GroupName`]: the string alone, as a newtype.
#[derive(Serialize, Deserialize)]
#[serde(rename = "GroupName")]
struct NameRepr(#[serde(deserialize_with = "interned")] Arc<str>);

impl From<NameRepr> for GroupName {
    fn from(r: NameRepr) -> Self {
        Self::new(r.0)
    }
}

impl From<GroupName> for NameRepr {
    fn from(g: GroupName) -> Self {
        NameRepr(g.name)
    }
}

impl GroupName {
    /// Builds a group name.
    pub fn new(name: impl Into<Arc<str>>) -> Self {
        let name: Arc<str> = name.into();
        let mut head = [0u8; 8];
        let n = name.len().min(8);
        head[..n].copy_from_slice(&name.as_bytes()[..n]);
        Self { name, head: u64::from_be_bytes(head) }
    }

    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.name
    }
}

impl PartialEq for GroupName {
    fn eq(&self, other: &Self) -> bool {
        self.head == other.head && (Arc::ptr_eq(&self.name, &other.name) || self.name == other.name)
    }
}

impl Eq for GroupName {}

impl PartialOrd for GroupName {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for GroupName {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.head.cmp(&other.head).then_with(|| self.name.as_bytes().cmp(other.name.as_bytes()))
    }
}

impl std::hash::Hash for GroupName {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.name.hash(state);
    }
}

impl fmt::Display for GroupName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

impl fmt::Debug for GroupName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", &*self.name)
    }
}

impl From<&str> for GroupName {
    fn from(s: &str) -> Self {
        Self::new(s)
    }
}

impl From<String> for GroupName {
    fn from(s: String) -> Self {
        Self::new(s)
    }
}

/// A group view's id: views of one group are numbered 1, 2, 3, ...
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
pub struct ViewId(pub u64);

impl fmt::Display for ViewId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A multicast's id, unique in the run: the sending process and its counter.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct MsgId {
    /// The process that handed the message to the system.
    pub sender: ProcessId,
    /// That process's counter, from 0.
    pub counter: u64,
}

impl fmt::Display for MsgId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.sender, self.counter)
    }
}

impl fmt::Debug for MsgId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A membership round's ballot: higher ballots win; ties cannot happen because the
/// proposer's id is part of it.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
pub struct Ballot {
    /// The round counter.
    pub round: u64,
    /// The proposing leader.
    pub leader: ProcessId,
}

#[cfg(test)]
mod tests {
    use super::GroupName;
    use proptest::prelude::*;

    /// Names of up to 12 characters from a small alphabet with NUL: shared prefixes,
    /// names that are prefixes of others and zero bytes past the head are all common.
    fn name() -> impl Strategy<Value = String> {
        proptest::collection::vec(prop_oneof![Just('\0'), Just('a'), Just('b'), Just('\u{ff}')], 0..12)
            .prop_map(|cs| cs.into_iter().collect())
    }

    proptest! {
        #[test]
        fn group_names_order_and_compare_as_their_strings_do(a in name(), b in name()) {
            let (ga, gb) = (GroupName::new(a.as_str()), GroupName::new(b.as_str()));
            prop_assert_eq!(ga.cmp(&gb), a.cmp(&b));
            prop_assert_eq!(ga == gb, a == b);
        }
    }

    #[test]
    fn a_group_name_goes_on_the_wire_as_its_string() {
        let g = GroupName::new("orders");
        let bytes = postcard::to_allocvec(&g).expect("encodes");
        assert_eq!(bytes, postcard::to_allocvec("orders").expect("encodes"));
        let back: GroupName = postcard::from_bytes(&bytes).expect("decodes");
        assert_eq!(back, g);
    }
}
