//! What the engine tells the application, and what its commands can fail with.

use crate::id::{GroupName, MsgId, ProcessId, ViewId};
use crate::order::Order;
use crate::wire::GroupView;
use bytes::Bytes;

/// A frame to send to one peer.
#[derive(Clone, Debug)]
#[must_use]
pub struct Transmit {
    /// The addressee (incarnation 0: whoever is at that name).
    pub to: ProcessId,
    /// The encoded frame.
    pub frame: Bytes,
}

/// A delivered multicast.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// The group.
    pub group: GroupName,
    /// The view it is delivered in.
    pub view: ViewId,
    /// The message id (its sender is the process that sent it).
    pub id: MsgId,
    /// Its order class.
    pub order: Order,
    /// Whether the sender waits for a reply: answer with `reply` or `reply_null`.
    pub query: bool,
    /// The bytes.
    pub payload: Bytes,
}

/// The outcome of a group RPC.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueryOutcome {
    /// The query.
    pub id: MsgId,
    /// The group asked.
    pub group: GroupName,
    /// Replies received, in arrival order.
    pub replies: Vec<(ProcessId, Bytes)>,
    /// Members that answered with a null reply.
    pub nulls: Vec<ProcessId>,
    /// Members that failed or left before answering.
    pub failed: Vec<ProcessId>,
    /// Whether as many replies as asked for came in.
    pub satisfied: bool,
}

/// Why this process stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PartitionReason {
    /// It can no longer reach a majority (by weight) of its last view.
    LostMajority,
    /// The others excluded it (it was suspected, e.g. while paused).
    Excluded,
    /// Its application left delivered events untaken for longer than the runtime allows:
    /// it stopped so that the others go on without it.
    Stalled,
}

/// Events for the application, in the order they happen. Drain with
/// [`crate::Engine::poll_event`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// This process is now a member of the cluster.
    Joined,
    /// A new view of a group is installed.
    View {
        /// The group.
        group: GroupName,
        /// The view.
        view: GroupView,
    },
    /// A multicast is delivered.
    Deliver(Delivery),
    /// A joiner needs the group's state as it is now: call
    /// [`crate::Engine::provide_state`] before handling any later event of this group
    /// (later events of the group are held until then).
    StateRequest {
        /// The group.
        group: GroupName,
        /// The joiners' first view.
        view: ViewId,
        /// Who joins.
        joiners: Vec<ProcessId>,
    },
    /// This process joined the group and here is the group's state at its join point. No
    /// message of the group is delivered to it before this event.
    State {
        /// The group.
        group: GroupName,
        /// The join view.
        view: ViewId,
        /// The state, as a provider's application produced it; empty for a state read as a
        /// stream (`Engine::stream_state`): its parts came through `Engine::poll_state_data`.
        state: Bytes,
    },
    /// A `flush()` call returned: every message this process sent before it is stable.
    Flushed {
        /// The group.
        group: GroupName,
        /// The view at return.
        view: ViewId,
    },
    /// A group RPC completed.
    QueryDone(QueryOutcome),
    /// This process left the group.
    Left {
        /// The group.
        group: GroupName,
    },
    /// State transfer failed because every member that had the state left or failed; the
    /// process left the group again.
    StateLost {
        /// The group.
        group: GroupName,
    },
    /// A non-member's message to a group whose members all failed or left before it was
    /// known to be delivered: it may or may not have been delivered.
    SendLost {
        /// The group.
        group: GroupName,
        /// The message.
        id: MsgId,
    },
    /// This process's join of the group was refused: a member's join verifier said no, or
    /// (for `join_running`) no member goes on in the group.
    JoinRefused {
        /// The group.
        group: GroupName,
    },
    /// This incarnation stopped for good (G10). A restart must use a new incarnation.
    Partitioned {
        /// Why.
        reason: PartitionReason,
    },
}

impl Event {
    /// The group the event belongs to, if any.
    pub fn group(&self) -> Option<&GroupName> {
        match self {
            Event::View { group, .. }
            | Event::StateRequest { group, .. }
            | Event::State { group, .. }
            | Event::Flushed { group, .. }
            | Event::Left { group }
            | Event::StateLost { group }
            | Event::JoinRefused { group }
            | Event::SendLost { group, .. } => Some(group),
            Event::Deliver(d) => Some(&d.group),
            Event::QueryDone(q) => Some(&q.group),
            Event::Joined | Event::Partitioned { .. } => None,
        }
    }
}

/// How many replies a query waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Replies {
    /// None: a plain multicast.
    None,
    /// The first reply.
    One,
    /// The first `k` replies.
    Count(usize),
    /// A reply (or null reply, or failure) from every member of the view it is delivered in.
    All,
}

/// Why a send or query was refused.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum SendError {
    /// This process stopped (partitioned or left the cluster).
    #[error("this process has stopped (partitioned or left the cluster)")]
    Stopped,
    /// The process is not in the cluster yet.
    #[error("not yet a member of the cluster")]
    NotJoined,
    /// Nobody is in the group.
    #[error("group {0} has no members")]
    NoSuchGroup(GroupName),
    /// The payload is larger than this send may be (`Config::max_message_bytes` for a
    /// member's multicast, `Config::fragment_bytes` for a non-member's or a gbcast).
    #[error("payload of {size} bytes is larger than the limit of {limit} bytes")]
    TooLarge {
        /// The payload's size.
        size: usize,
        /// The limit it is over.
        limit: usize,
    },
}

/// Why a join or leave was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum MembershipError {
    /// This process stopped.
    #[error("this process has stopped (partitioned or left the cluster)")]
    Stopped,
    /// Already a member (join) or not a member (leave).
    #[error("already in that state for group {0}")]
    Redundant(GroupName),
    /// The join would put this process in more groups than `Config::max_groups`.
    #[error("cannot join {group}: this process is in or joining {limit} groups, its limit (Config::max_groups)")]
    TooManyGroups {
        /// The group asked for.
        group: GroupName,
        /// The limit.
        limit: usize,
    },
}

/// Why a flush was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum FlushError {
    /// This process stopped.
    #[error("this process has stopped")]
    Stopped,
    /// Not a member of the group.
    #[error("not a member of group {0}")]
    NotMember(GroupName),
}

/// Counters of what the engine did and refused; see [`crate::Engine::stats`].
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Stats {
    /// Frames received.
    pub frames_in: u64,
    /// Frames sent.
    pub frames_out: u64,
    /// Frames dropped because they failed to decode.
    pub rejected_malformed: u64,
    /// Frames dropped because authentication failed.
    pub rejected_auth: u64,
    /// Frames dropped because they were addressed to another process or incarnation.
    pub rejected_misaddressed: u64,
    /// Frames from excluded processes (answered with "excluded").
    pub from_excluded: u64,
    /// Messages dropped because a bounded buffer was full.
    pub dropped_overflow: u64,
    /// Link retransmission rounds.
    pub retransmits: u64,
    /// Multicasts sent by this process.
    pub sent: u64,
    /// Multicasts delivered here.
    pub delivered: u64,
    /// Views installed here.
    pub views: u64,
    /// State transfers that went on from another provider's offset after the first one
    /// failed in the middle (not counting those that had to start again).
    pub state_resumed: u64,
    /// Times a joiner held back its acknowledgements because the messages held for it while
    /// its state came passed `Config::joiner_hold_bytes`.
    pub joiner_throttles: u64,
    /// Membership rounds this process started as leader.
    pub rounds: u64,
    /// Epochs of groups quiet at every survivor that a decision ended without naming them
    /// (see [`crate::wire::Decision::groups`]), here.
    pub quiet_views: u64,
    /// Cut messages that could not be delivered (a protocol bug if ever non-zero).
    pub cut_anomalies: u64,
    /// Members this process began to suspect (silent past the failure timeout, or
    /// unreachable): each is a crash, a partition, or a process too busy to be heard.
    pub suspicions: u64,
    /// Bootstrap messages from processes given another peer list (ignored).
    pub peer_list_mismatches: u64,
}
