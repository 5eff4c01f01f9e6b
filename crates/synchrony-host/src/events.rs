//! What a host hands its consumers: each group's events, the node's events, and the checks
//! an application installs on a group it joins.

use bytes::Bytes;
use synchrony_engine::{Delivery, GroupName, GroupView, MsgId, PartitionReason, ProcessId, ViewId};

/// What a group's consumer receives, in the order the engine produced it.
#[derive(Clone, Debug)]
pub enum GroupEvent {
    /// A new view is installed.
    View(GroupView),
    /// A multicast is delivered (answer queries with [`crate::Command::Reply`]).
    Message(Delivery),
    /// Joiners need the group's state: answer with [`crate::Command::ProvideState`] (or
    /// begin writing it in parts) before anything else of this group happens here.
    StateRequest {
        /// The joiners' first view.
        view: ViewId,
        /// Who joins.
        joiners: Vec<ProcessId>,
    },
    /// This node joined and here is the group's state at its join point.
    State {
        /// The join view.
        view: ViewId,
        /// The state as a member's application produced it.
        state: Bytes,
    },
    /// This node joined reading its state as a stream and the state, `len` bytes, has all
    /// come through its [`crate::Output::StatePiece`]s: its place among the group's events
    /// (no message is delivered before it).
    StateStreamed {
        /// The join view.
        view: ViewId,
        /// The state's length.
        len: u64,
    },
    /// This node left the group (or its state could not be fetched).
    Left,
    /// A member's join verifier refused this node's join.
    JoinRefused,
    /// This incarnation stopped (excluded, or cut off from the majority). With
    /// [`crate::HostConfig::rejoin`], a new incarnation joins the group again and its views
    /// follow.
    Partitioned(PartitionReason),
}

/// What concerns the node as a whole.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum NodeEvent {
    /// This node (incarnation `me`) is a member of the cluster.
    Joined {
        /// Its process id.
        me: ProcessId,
    },
    /// This incarnation stopped.
    Partitioned {
        /// Why.
        reason: PartitionReason,
    },
    /// A message this node sent to a group it is not in may be lost: every member of the
    /// group failed or left before it was known to be delivered.
    SendLost {
        /// The group.
        group: GroupName,
        /// The message.
        id: MsgId,
    },
}

/// Decides whether a delivered message reaches the application (by sender and payload). It
/// must decide the same way at every member, or members would see different messages.
pub type MessageVerifier = std::sync::Arc<dyn Fn(&ProcessId, &[u8]) -> bool + Send + Sync>;

/// The checks a member installs on a group it joins.
#[derive(Clone, Default)]
pub struct Verifiers {
    /// Admits or refuses processes asking to join (see [`synchrony_engine::JoinVerifier`]).
    pub join: Option<synchrony_engine::JoinVerifier>,
    /// Drops delivered messages it rejects (a rejected query gets a null reply); counted in
    /// [`crate::HostCounters::rejected_by_verifier`].
    pub message: Option<MessageVerifier>,
    /// Join only a running group: refused (as a verifier's refusal is) when no member goes
    /// on in it to hand over its state (see `Engine::join_running`).
    pub only_if_running: bool,
}

impl std::fmt::Debug for Verifiers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifiers")
            .field("join", &self.join.is_some())
            .field("message", &self.message.is_some())
            .field("only_if_running", &self.only_if_running)
            .finish()
    }
}
