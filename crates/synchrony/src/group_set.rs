//! Many groups read as one: every group's events on one stream.

use crate::group::{event_of, Event, GroupSender, JoinError};
use std::collections::HashMap;
use std::task::{Context, Poll};
use synchrony_engine::{GroupName, GroupView, MembershipError};
use synchrony_runtime::{GroupEvent, MergedEvents, Runtime};

/// Many groups this node joined, read as one stream of `(group, event)`: Spread's one
/// mailbox per connection, and the way to be in thousands of groups (one per replicated
/// object, say) without a task per group. Each group's events come in the same order as
/// on its own [`crate::Group`] handle, and in the same order at every member; events of
/// different groups come in the order this node produced them. The node hands them over
/// in batches, so a view change of every group (a member crashed) wakes the reader a few
/// times, not once per group.
///
/// ```
/// use synchrony::{Config, Event, Node, Order};
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> anyhow::Result<()> {
/// let node = Node::start(Config::new("n1", "127.0.0.1:0")).await?;
/// let (mut set, joined) = node.join_set((0..100).map(|k| format!("account-{k}"))).await;
/// assert!(joined.iter().all(Result::is_ok));
/// let account = synchrony::GroupName::new("account-7");
/// set.sender(&account).expect("in the set").send(Order::Total, "deposit 10").await?;
/// loop {
///     match set.next_event().await {
///         Some((group, Event::Message(m))) => {
///             assert_eq!(group, account);
///             assert_eq!(&m.payload()[..], b"deposit 10");
///             break;
///         }
///         Some((_, _)) => {} // each group's first view comes first
///         None => anyhow::bail!("the node stopped"),
///     }
/// }
/// assert_eq!(set.view(&account).map(|v| v.members.len()), Some(1));
/// node.shutdown().await?;
/// # Ok(()) }
/// ```
///
/// Dropped, it leaves every group in it in the background, and the state requests it had
/// not handed out are declined (the joiners ask another member).
#[derive(Debug)]
pub struct GroupSet {
    rt: Runtime,
    events: MergedEvents,
    groups: HashMap<GroupName, Member>,
}

/// One group of a set: what sends to it, and its last view.
#[derive(Debug)]
struct Member {
    sender: GroupSender,
    view: Option<GroupView>,
}

impl GroupSet {
    /// Joins `groups` into a new set (see `Node::join_set`).
    pub(crate) async fn start(
        rt: Runtime,
        groups: impl IntoIterator<Item = GroupName>,
    ) -> (Self, Vec<Result<(), JoinError>>) {
        let names: Vec<GroupName> = groups.into_iter().collect();
        let (events, joined) = rt.join_merged(names.iter().cloned()).await;
        let mut set = Self { rt, events, groups: HashMap::new() };
        let joined = set.admit(names, joined);
        (set, joined)
    }

    /// Joins more groups into this set: their events come on the same stream. One result
    /// per group, in order; a group of the set (or one this node is in otherwise) fails
    /// as redundant.
    pub async fn join<G: Into<GroupName>>(
        &mut self,
        groups: impl IntoIterator<Item = G>,
    ) -> Vec<Result<(), JoinError>> {
        let names: Vec<GroupName> = groups.into_iter().map(Into::into).collect();
        let joined = self.rt.join_into(&self.events, names.iter().cloned()).await;
        self.admit(names, joined)
    }

    fn admit(&mut self, names: Vec<GroupName>, joined: Vec<Result<(), MembershipError>>) -> Vec<Result<(), JoinError>> {
        let mut out = Vec::with_capacity(names.len());
        for (name, r) in names.into_iter().zip(joined) {
            if r.is_ok() {
                let sender = GroupSender::new(name.clone(), self.rt.clone());
                self.groups.insert(name, Member { sender, view: None });
            }
            out.push(r.map_err(JoinError::from));
        }
        out
    }

    /// The next event and its group; `None` once the node has shut down. Cancel-safe. (A
    /// `GroupSet` is also a [`futures_core::Stream`] of them.)
    pub async fn next_event(&mut self) -> Option<(GroupName, Event)> {
        std::future::poll_fn(|cx| self.poll_event(cx)).await
    }

    fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<Option<(GroupName, Event)>> {
        loop {
            let (group, ev) = match self.events.poll_recv(cx) {
                Poll::Ready(Some(x)) => x,
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            };
            let Some(m) = self.groups.get_mut(&group) else {
                // (Not expected: a group is in the set from its join to its `Left`.)
                if let GroupEvent::StateRequest { view, .. } = ev {
                    self.rt.decline_state_in_background(group, view);
                }
                continue;
            };
            let gone = matches!(ev, GroupEvent::Left | GroupEvent::JoinRefused);
            let ev = event_of(&m.sender, &mut m.view, ev);
            if gone {
                self.groups.remove(&group);
            }
            return Poll::Ready(Some((group, ev)));
        }
    }

    /// The view `group` last showed on this stream (`None` before its first, or if it is
    /// not in the set).
    pub fn view(&self, group: &GroupName) -> Option<&GroupView> {
        self.groups.get(group)?.view.as_ref()
    }

    /// What sends, queries and flushes to `group`, if it is in the set.
    pub fn sender(&self, group: &GroupName) -> Option<GroupSender> {
        Some(self.groups.get(group)?.sender.clone())
    }

    /// The groups in the set (joined, and not yet left).
    pub fn groups(&self) -> impl Iterator<Item = &GroupName> {
        self.groups.keys()
    }

    /// How many groups are in the set.
    pub fn len(&self) -> usize {
        self.groups.len()
    }

    /// Whether the set has no group.
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    /// Leaves `group`: its [`Event::Left`] comes on the stream when the leave is done, and
    /// the group is out of the set from then on. Sends to it fail at once.
    pub async fn leave(&mut self, group: &GroupName) -> Result<(), MembershipError> {
        let Some(m) = self.groups.get(group) else { return Err(MembershipError::Redundant(group.clone())) };
        self.rt.leave(group.clone()).await?;
        m.sender.mark_left();
        Ok(())
    }
}

impl Drop for GroupSet {
    fn drop(&mut self) {
        self.events.close();
        while let Some((group, ev)) = self.events.try_recv() {
            if let GroupEvent::StateRequest { view, .. } = ev {
                self.rt.decline_state_in_background(group, view);
            }
        }
        for m in self.groups.values() {
            m.sender.mark_left();
        }
        self.rt.leave_merged_in_background(&self.events);
    }
}

impl futures_core::Stream for GroupSet {
    type Item = (GroupName, Event);

    fn poll_next(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().poll_event(cx)
    }
}
