//! The node: one process's membership in the cluster.

use crate::group::{Group, JoinError};
use crate::group_set::GroupSet;
use bytes::Bytes;
use std::sync::Arc;
use synchrony_engine::{GroupName, MsgId, Order, ProcessId, QueryOutcome, Replies, SendError};
use synchrony_runtime::{Config, NodeStatus, NodeStopped, Runtime, StartError, Verifiers};
use tokio::sync::mpsc;

pub use synchrony_runtime::NodeEvent;

/// How to join a group: optionally with a join verifier (who may join after this node)
/// and a message verifier (which delivered messages reach this application).
///
/// ```
/// use synchrony::JoinOptions;
/// let options = JoinOptions::default()
///     .join_verifier(|joiner| !joiner.name.starts_with("guest"))
///     .message_verifier(|_sender, payload| payload.len() <= 4096);
/// # let _ = options;
/// ```
#[derive(Clone, Debug, Default)]
pub struct JoinOptions {
    verifiers: Verifiers,
    stream_state: bool,
}

impl JoinOptions {
    /// While this node is a member, a process may join only if `f` admits it (and every
    /// other member's verifier too). A refused joiner's `join` fails with
    /// [`JoinError::Refused`]. `f` should decide the same way at every member.
    pub fn join_verifier(mut self, f: impl Fn(&ProcessId) -> bool + Send + Sync + 'static) -> Self {
        self.verifiers.join = Some(Arc::new(f));
        self
    }

    /// Delivered messages `f` rejects (by sender and payload) are dropped before the
    /// application sees them, counted, and a rejected query gets a null reply. `f` must
    /// decide the same way at every member.
    pub fn message_verifier(mut self, f: impl Fn(&ProcessId, &[u8]) -> bool + Send + Sync + 'static) -> Self {
        self.verifiers.message = Some(Arc::new(f));
        self
    }

    /// Joins only if the group is running: when no member goes on in it to hand over its
    /// state, `join` fails with [`JoinError::Refused`] instead of starting the group anew
    /// (what a restarting member of a logged group needs: see `tools::recover`).
    pub fn only_if_running(mut self) -> Self {
        self.verifiers.only_if_running = true;
        self
    }

    /// Reads the group's state as a stream ([`Group::state_stream`]) as it arrives, part
    /// by part, instead of whole in [`Event::State`](crate::Event::State): for a state too
    /// large to hold twice. The joiner fetches more only as the application reads, and the
    /// group's events give [`Event::StateStreamed`](crate::Event::StateStreamed) at the
    /// state's place. (A rejoin as a new incarnation gets its state whole.)
    pub fn stream_state(mut self) -> Self {
        self.stream_state = true;
        self
    }
}

/// A process in a synchrony cluster. Share it (`Arc<Node>`) to join, send and call from
/// many tasks: every method takes `&self` but [`Node::next_event`], which its owner reads.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> anyhow::Result<()> {
/// use synchrony::{Config, JoinOptions, Node, Order, Replies};
/// let a = Node::start(Config::new("a", "127.0.0.1:0")).await?;
/// let _group = a.join("orders", JoinOptions::default()).await?; // returns in its first view
/// let mut config = Config::new("b", "127.0.0.1:0");
/// config.contacts.push(a.listen_addr().to_string()); // b joins a's cluster
/// let b = Node::start(config).await?;
/// // b is not in the group, and multicasts to it all the same.
/// b.send("orders", Order::Total, "from outside").await?;
/// b.shutdown().await?;
/// a.shutdown().await?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Node {
    rt: Runtime,
    events: mpsc::Receiver<NodeEvent>,
}

impl Node {
    /// Starts the node and returns once it is a member of the cluster: it founds one if
    /// `config.contacts` is empty, and joins through a contact otherwise.
    pub async fn start(config: Config) -> Result<Node, StartError> {
        let (rt, events) = Runtime::start(config).await?;
        Ok(Node { rt, events })
    }

    /// This node's process id (`NAME#INCARNATION`).
    pub fn id(&self) -> &synchrony_engine::ProcessId {
        self.rt.me()
    }

    /// The address the node listens on (useful with port 0).
    pub fn listen_addr(&self) -> &str {
        self.rt.listen_addr()
    }

    /// Joins `group` (creating it if nobody is in it) and returns once the first view is
    /// installed. The handle's first events are that view, then the group's state if it
    /// had members.
    pub async fn join(&self, group: impl Into<GroupName>, options: JoinOptions) -> Result<Group, JoinError> {
        let name = group.into();
        let mut g = if options.stream_state {
            let (events, stream) = self.rt.join_streaming(name.clone(), options.verifiers).await?;
            let mut g = Group::new(name, self.rt.clone(), events);
            g.state_stream = Some(stream);
            g
        } else {
            let events = self.rt.join_verified(name.clone(), options.verifiers).await?;
            Group::new(name, self.rt.clone(), events)
        };
        g.wait_for_view().await?;
        Ok(g)
    }

    /// Joins many groups at once (no verifiers) and returns once each is in its first view
    /// or has failed: one result per group, in order. The joins reach the membership
    /// leader together and are decided in one round when it has them all, so an
    /// application that keeps one group per object joins ten thousand in about a second.
    pub async fn join_many<G: Into<GroupName>>(
        &self,
        groups: impl IntoIterator<Item = G>,
    ) -> Vec<Result<Group, JoinError>> {
        let names: Vec<GroupName> = groups.into_iter().map(Into::into).collect();
        let asked = self.rt.join_many(names.iter().cloned()).await;
        let mut out = Vec::with_capacity(names.len());
        for (name, events) in names.into_iter().zip(asked) {
            out.push(match events {
                Ok(events) => {
                    let mut g = Group::new(name, self.rt.clone(), events);
                    g.wait_for_view().await.map(|()| g)
                }
                Err(e) => Err(e.into()),
            });
        }
        out
    }

    /// Joins many groups at once (no verifiers) as one [`GroupSet`]: every group's events
    /// come on its one stream, each with its group's name (first each group's view, then
    /// its state if it had members), so that one task serves them all. One result per
    /// group, in order; [`GroupSet::join`] adds more. For thousands of groups this costs
    /// far less than a [`Group`] each: no task, channel and wake-up per group.
    pub async fn join_set<G: Into<GroupName>>(
        &self,
        groups: impl IntoIterator<Item = G>,
    ) -> (GroupSet, Vec<Result<(), JoinError>>) {
        GroupSet::start(self.rt.clone(), groups.into_iter().map(Into::into)).await
    }

    /// Multicasts to a group this node is not in (it goes through a member).
    pub async fn send(
        &self,
        group: impl Into<GroupName>,
        order: Order,
        payload: impl Into<Bytes>,
    ) -> Result<MsgId, SendError> {
        self.rt.send(group.into(), order, payload.into(), Replies::None).await
    }

    /// Calls a group this node is not in, and waits for `replies`.
    pub async fn query(
        &self,
        group: impl Into<GroupName>,
        order: Order,
        payload: impl Into<Bytes>,
        replies: Replies,
    ) -> Result<QueryOutcome, SendError> {
        self.rt.query(group.into(), order, payload.into(), replies).await
    }

    /// The next node-wide event (joined, partitioned, a non-member send possibly lost).
    /// Read by the node's owner, as a tokio channel is; the node drops (and counts) them
    /// rather than wait for a reader that is behind.
    pub async fn next_event(&mut self) -> Option<NodeEvent> {
        self.events.recv().await
    }

    /// Groups, views, members, rates and counters.
    pub async fn status(&self) -> Result<NodeStatus, NodeStopped> {
        self.rt.status().await
    }

    /// Leaves the cluster cleanly and stops: the others install views without this node
    /// through the membership protocol, with its consent (so a pair goes on as one, and
    /// members stopping together never stop the rest), after it served the states it owes
    /// to joiners. Returns once it has left, or after three failure timeouts when no
    /// majority can decide. `Err` if the node had stopped already.
    pub async fn shutdown(&self) -> Result<(), NodeStopped> {
        self.rt.shutdown().await
    }
}

/// Dropping a `Node` starts a clean leave in the background, as [`Node::shutdown`] does
/// (without waiting for it): the others install views without it, and its groups and
/// tools end. Call `shutdown` to know when it is done.
impl Drop for Node {
    fn drop(&mut self) {
        self.rt.shutdown_in_background();
    }
}
