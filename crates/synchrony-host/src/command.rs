//! A host's inputs from the application ([`Command`]s, each with the [`WaiterId`] its
//! answer goes to) and its outputs ([`Output`]).

use crate::{GroupEvent, NodeEvent, Piece, StateWriteError, Verifiers};
use bytes::Bytes;
use std::time::Duration;
use synchrony_engine::{
    FlushError, GroupName, MembershipError, MsgId, Order, PartitionReason, QueryOutcome, Replies, SendError, ViewId,
};

/// Who waits for a command's answer: an id the caller chose (the runtime keeps a channel per
/// id; the simulator keeps the answers). The host never looks inside.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WaiterId(pub u64);

/// Who reads a group's events: an id the caller chose when it joined (the runtime keeps a
/// bounded channel per id). A consumer takes its events in batches, as many as it has room
/// for ([`crate::Host::handle_room`]); what it has no room for waits in the host.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConsumerId(pub u64);

/// Where the groups of a [`Command::JoinMany`] send their events.
#[derive(Clone, Debug)]
pub enum JoinInto {
    /// A consumer each, in the order of the groups.
    Each(Vec<ConsumerId>),
    /// One consumer shared by every group (kept until [`Command::DropMerged`], even if no
    /// group joins now); its events come as [`Output::Merged`].
    Merged(ConsumerId),
}

/// What the application asks of the host. The answer, if the command has one, comes as an
/// [`Output::Reply`] to the command's waiter.
#[derive(Clone, Debug)]
pub enum Command {
    /// Joins a group; its events go to `consumer`. Answer: [`Reply::Joined`].
    Join {
        /// The group.
        group: GroupName,
        /// The checks installed on it.
        verifiers: Verifiers,
        /// The state is read as a stream ([`Output::StatePiece`]).
        stream: bool,
        /// Who reads its events.
        consumer: ConsumerId,
    },
    /// Joins many groups in one round. Answer: [`Reply::JoinedMany`].
    JoinMany {
        /// The groups.
        groups: Vec<GroupName>,
        /// Who reads their events.
        into: JoinInto,
    },
    /// A shared consumer is gone: its groups are left. No answer.
    DropMerged {
        /// The consumer.
        consumer: ConsumerId,
    },
    /// Leaves a group. Answer: [`Reply::Left`].
    Leave {
        /// The group.
        group: GroupName,
        /// Its consumer is gone (a dropped handle's leave): nothing more goes to it.
        dropped: bool,
    },
    /// Multicasts. Answer: [`Reply::Sent`]; a query's outcome goes to `outcome`.
    Send {
        /// The group.
        group: GroupName,
        /// Its order class.
        order: Order,
        /// The payload.
        payload: Bytes,
        /// The replies it waits for.
        replies: Replies,
        /// Where a query's outcome goes ([`Reply::QueryDone`]; forgotten if the send fails).
        outcome: Option<WaiterId>,
    },
    /// Multicasts many payloads at once. Answer: [`Reply::SentBatch`].
    SendBatch {
        /// The group.
        group: GroupName,
        /// Their order class.
        order: Order,
        /// The payloads.
        payloads: Vec<Bytes>,
    },
    /// Answers a delivered query (`None`: a null reply). No answer.
    Reply {
        /// The query.
        id: MsgId,
        /// The reply.
        payload: Option<Bytes>,
    },
    /// Waits until what this node sent to the group before is stable. Answer:
    /// [`Reply::Flushed`].
    Flush {
        /// The group.
        group: GroupName,
    },
    /// Gives the state a [`GroupEvent::StateRequest`] asked for. No answer.
    ProvideState {
        /// The group.
        group: GroupName,
        /// The request's view.
        view: ViewId,
        /// The state.
        state: Bytes,
    },
    /// Declines a state request (the joiners ask another member). No answer.
    DeclineState {
        /// The group.
        group: GroupName,
        /// The request's view.
        view: ViewId,
    },
    /// Answers a state request with a state written in parts. No answer.
    BeginState {
        /// The group.
        group: GroupName,
        /// The request's view.
        view: ViewId,
    },
    /// The next part of a state begun in parts. Answer: [`Reply::StateWritten`], once the
    /// joiners have fetched enough of what came before.
    WriteState {
        /// The group.
        group: GroupName,
        /// The request's view.
        view: ViewId,
        /// The part.
        part: Bytes,
        /// It is the last.
        last: bool,
    },
    /// A state begun in parts will not be finished. No answer.
    AbandonState {
        /// The group.
        group: GroupName,
        /// The request's view.
        view: ViewId,
    },
    /// A streaming joiner read `bytes` more of its state. No answer.
    StateRead {
        /// The group.
        group: GroupName,
        /// How much.
        bytes: u64,
    },
    /// Ends a query with the replies it has. No answer (the outcome comes as usual).
    GiveUpQuery {
        /// The query.
        id: MsgId,
    },
    /// Leaves the cluster cleanly. Answer: [`Reply::ShutDown`], once it left, stopped, or
    /// ran out of time; the host is then [`crate::Host::finished`].
    Shutdown,
}

impl Command {
    /// The group a command concerns, if one.
    pub fn group(&self) -> Option<&GroupName> {
        match self {
            Command::Join { group, .. }
            | Command::Leave { group, .. }
            | Command::Send { group, .. }
            | Command::SendBatch { group, .. }
            | Command::Flush { group }
            | Command::ProvideState { group, .. }
            | Command::DeclineState { group, .. }
            | Command::BeginState { group, .. }
            | Command::WriteState { group, .. }
            | Command::AbandonState { group, .. }
            | Command::StateRead { group, .. } => Some(group),
            _ => None,
        }
    }
}

/// The answer to a command.
#[derive(Debug)]
pub enum Reply {
    /// To [`Command::Join`].
    Joined(Result<(), MembershipError>),
    /// To [`Command::JoinMany`]: one per group, in order.
    JoinedMany(Vec<Result<(), MembershipError>>),
    /// To [`Command::Leave`].
    Left(Result<(), MembershipError>),
    /// To [`Command::Send`].
    Sent(Result<MsgId, SendError>),
    /// To [`Command::SendBatch`].
    SentBatch(Vec<Result<MsgId, SendError>>),
    /// To [`Command::Flush`].
    Flushed(Result<ViewId, FlushError>),
    /// To [`Command::WriteState`].
    StateWritten(Result<(), StateWriteError>),
    /// A query's outcome, to its `outcome` waiter.
    QueryDone(QueryOutcome),
    /// To [`Command::Shutdown`].
    ShutDown,
}

/// What a host asks its runtime to do, in the order it must be done (a reply after the
/// events made before it).
#[derive(Debug)]
pub enum Output {
    /// Answer a waiter.
    Reply {
        /// The waiter.
        waiter: WaiterId,
        /// The answer.
        reply: Reply,
    },
    /// A waiter will get no answer (its query or node stopped): drop it.
    Forget(WaiterId),
    /// A batch of one group's events for its consumer (which had room for it).
    Events {
        /// The consumer.
        consumer: ConsumerId,
        /// The group.
        group: GroupName,
        /// The events.
        events: Vec<GroupEvent>,
    },
    /// A batch of events of many groups for their shared consumer.
    Merged {
        /// The consumer.
        consumer: ConsumerId,
        /// The events, each with its group.
        events: Vec<(GroupName, GroupEvent)>,
    },
    /// A node event (never waited for: drop it if its reader has no room).
    Node(NodeEvent),
    /// A piece of a state read as a stream, for the join of `group` made with `stream`.
    /// Tell the host of a piece nobody will read ([`crate::Host::handle_state_unread`]).
    StatePiece {
        /// The group.
        group: GroupName,
        /// The piece.
        piece: Piece,
    },
    /// This incarnation stopped. With `rejoin`, start a new one ([`crate::Host::start`]).
    Stopped {
        /// Why.
        reason: PartitionReason,
        /// A new incarnation must start (`HostConfig::rejoin`, or on a peer list).
        rejoin: bool,
    },
}

/// A batch that a consumer could not take (it is gone), handed back to the host.
#[derive(Debug)]
pub enum Batch {
    /// A group's own consumer's.
    Events(GroupName, Vec<GroupEvent>),
    /// A shared consumer's.
    Merged(Vec<(GroupName, GroupEvent)>),
}

/// What a host does, as opposed to how the protocol behaves (the engine's config).
#[derive(Clone, Debug)]
pub struct HostConfig {
    /// Messages one member may have outstanding per group before its sends wait.
    pub send_window: usize,
    /// Bytes one member may have outstanding per group before its sends wait.
    pub send_window_bytes: usize,
    /// How long an application may take no events before the node stops.
    pub app_stall_timeout: Duration,
    /// After being excluded, start again as a new incarnation.
    pub rejoin: bool,
    /// The node bootstraps from a peer list (it always starts again after a stop).
    pub on_list: bool,
    /// Batches a consumer takes before it has told of room again.
    pub consumer_queue: usize,
    /// Write a trace ([`crate::Host::poll_trace`]).
    pub trace: bool,
    /// How the trace digests a state, if not as [`HostConfig::trace_states_as_delivered_sets`]
    /// says: a function of the whole state (an application whose state carries the set of
    /// message ids it delivered, framed its own way, as the simulator's does).
    pub state_digest: Option<fn(&[u8]) -> String>,
    /// The application's state is the set of message ids it delivered (see
    /// [`crate::Digest`]).
    pub trace_states_as_delivered_sets: bool,
    /// Time each own message from send to delivery here (a metrics histogram).
    pub time_deliveries: bool,
    /// Half a heartbeat interval: how long one turn of many inputs may take (a burst must
    /// not keep the node silent), and the moment a leaving node gives its last frames.
    pub heartbeat_interval: Duration,
    /// Three of these bound a clean leave of the cluster.
    pub failure_timeout: Duration,
    /// A provider writing in parts waits while more than two of these are held for its
    /// joiners.
    pub state_window_bytes: usize,
}

/// What a host counted.
#[derive(Clone, Debug, Default)]
pub struct HostCounters {
    /// Delivered messages a group's message verifier rejected.
    pub rejected_by_verifier: u64,
    /// Times this node stopped reading the network because a consumer was behind.
    pub reading_paused: u64,
    /// Sends that had to wait for room in their group's window.
    pub flow_waits: u64,
}
