//! What the application's handles ask of the driver ([`Command`]), and how the driver turns
//! each into a host command with a waiter: the channels the answers go to, kept by id
//! until the host answers (`Waiters`).

use crate::merged::{MergedId, MergedTx, GROUP_QUEUE};
use crate::status::NodeStatus;
use crate::StateWriteError;
use crate::{GroupEvent, GroupEvents, Verifiers};
use bytes::Bytes;
use std::collections::HashMap;
use synchrony_engine::{
    FlushError, GroupName, MembershipError, MsgId, Order, QueryOutcome, Replies, SendError, ViewId,
};
use synchrony_host::{Command as HostCommand, ConsumerId, JoinInto, Piece, Reply, WaiterId};
use tokio::sync::{mpsc, oneshot};

/// A message handed to the engine: its id, and for a query the place its outcome goes.
pub(crate) struct Sent {
    pub(crate) id: MsgId,
    pub(crate) outcome: Option<oneshot::Receiver<QueryOutcome>>,
}

/// What the application asks of the driver.
pub(crate) enum Command {
    Join {
        group: GroupName,
        verifiers: Verifiers,
        /// The joiner reads its state as a stream (`Runtime::join_streaming`).
        stream: Option<mpsc::UnboundedSender<Piece>>,
        reply: oneshot::Sender<Result<GroupEvents, MembershipError>>,
    },
    JoinMany {
        groups: Vec<GroupName>,
        /// The receiver they share (`Runtime::join_merged`), or none: a handle each.
        into: Option<MergedTx>,
        /// A handle per group (none for a merged join).
        reply: oneshot::Sender<Vec<Result<Option<GroupEvents>, MembershipError>>>,
    },
    /// A merged receiver is dropped: its groups are left.
    DropMerged {
        id: MergedId,
    },
    Leave {
        group: GroupName,
        reply: oneshot::Sender<Result<(), MembershipError>>,
    },
    Send {
        group: GroupName,
        order: Order,
        payload: Bytes,
        replies: Replies,
        reply: oneshot::Sender<Result<Sent, SendError>>,
    },
    SendBatch {
        group: GroupName,
        order: Order,
        payloads: Vec<Bytes>,
        reply: oneshot::Sender<Vec<Result<MsgId, SendError>>>,
    },
    Reply {
        id: MsgId,
        payload: Option<Bytes>,
    },
    Flush {
        group: GroupName,
        reply: oneshot::Sender<Result<ViewId, FlushError>>,
    },
    ProvideState {
        group: GroupName,
        view: ViewId,
        state: Bytes,
    },
    DeclineState {
        group: GroupName,
        view: ViewId,
    },
    BeginState {
        group: GroupName,
        view: ViewId,
    },
    WriteState {
        group: GroupName,
        view: ViewId,
        part: Bytes,
        last: bool,
        reply: oneshot::Sender<Result<(), StateWriteError>>,
    },
    AbandonState {
        group: GroupName,
        view: ViewId,
    },
    StateRead {
        group: GroupName,
        bytes: u64,
    },
    GiveUpQuery {
        id: MsgId,
    },
    Status {
        reply: oneshot::Sender<NodeStatus>,
    },
    CloseTrace {
        reply: oneshot::Sender<()>,
    },
    Shutdown {
        reply: oneshot::Sender<()>,
    },
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Command")
    }
}

/// A consumer's channel: a group's own handle, or a receiver many groups share.
#[derive(Clone)]
pub(crate) enum Consumer {
    Own(mpsc::Sender<Vec<GroupEvent>>),
    Merged(mpsc::Sender<crate::merged::MergedBatch>),
}

impl Consumer {
    pub(crate) fn is_closed(&self) -> bool {
        match self {
            Consumer::Own(tx) => tx.is_closed(),
            Consumer::Merged(tx) => tx.is_closed(),
        }
    }
}

/// Who waits for the host's answer to a command.
enum Waiting {
    Join(oneshot::Sender<Result<GroupEvents, MembershipError>>, mpsc::Receiver<Vec<GroupEvent>>, ConsumerId, GroupName),
    JoinMany(
        oneshot::Sender<Vec<Result<Option<GroupEvents>, MembershipError>>>,
        Vec<(ConsumerId, mpsc::Receiver<Vec<GroupEvent>>)>,
    ),
    Left(oneshot::Sender<Result<(), MembershipError>>),
    Sent(oneshot::Sender<Result<Sent, SendError>>, Option<oneshot::Receiver<QueryOutcome>>),
    SentBatch(oneshot::Sender<Vec<Result<MsgId, SendError>>>),
    Flushed(oneshot::Sender<Result<ViewId, FlushError>>),
    Written(oneshot::Sender<Result<(), StateWriteError>>),
    Query(oneshot::Sender<QueryOutcome>),
    ShutDown(oneshot::Sender<()>),
}

/// The driver's side of the host's waiters and consumers: each id's channel.
#[derive(Default)]
pub(crate) struct Waiters {
    next: u64,
    waiting: HashMap<WaiterId, Waiting>,
    pub(crate) consumers: HashMap<ConsumerId, Consumer>,
    /// The streams of states read in parts, by group.
    pub(crate) streams: HashMap<GroupName, mpsc::UnboundedSender<Piece>>,
}

/// A merged receiver's consumer id (apart from those of own handles, which count up from 1).
pub(crate) fn merged_consumer(id: MergedId) -> ConsumerId {
    ConsumerId(id.0 | 1 << 63)
}

/// What a command becomes: the host's command and its waiter, or what the driver answers
/// itself.
pub(crate) enum Submitted {
    Host(Option<WaiterId>, HostCommand),
    Status(oneshot::Sender<NodeStatus>),
    CloseTrace(oneshot::Sender<()>),
}

impl Waiters {
    fn id(&mut self) -> u64 {
        self.next += 1;
        self.next
    }

    fn wait(&mut self, w: Waiting) -> Option<WaiterId> {
        let id = WaiterId(self.id());
        self.waiting.insert(id, w);
        Some(id)
    }

    fn own_consumer(&mut self) -> (ConsumerId, mpsc::Receiver<Vec<GroupEvent>>) {
        let (tx, rx) = mpsc::channel(GROUP_QUEUE);
        let id = ConsumerId(self.id());
        self.consumers.insert(id, Consumer::Own(tx));
        (id, rx)
    }

    /// Turns a command into the host's, keeping its answer's channel. `dropped` says, of a
    /// leave, whether the group's consumer is gone (a dropped handle's leave).
    pub(crate) fn submit(&mut self, c: Command, dropped: bool) -> Submitted {
        let (waiter, command) = match c {
            Command::Join { group, verifiers, stream, reply } => {
                let (consumer, rx) = self.own_consumer();
                let streamed = stream.is_some();
                if let Some(tx) = stream {
                    self.streams.insert(group.clone(), tx);
                }
                let w = self.wait(Waiting::Join(reply, rx, consumer, group.clone()));
                (w, HostCommand::Join { group, verifiers, stream: streamed, consumer })
            }
            Command::JoinMany { groups, into, reply } => self.join_many(groups, into, reply),
            Command::DropMerged { id } => (None, HostCommand::DropMerged { consumer: merged_consumer(id) }),
            Command::Leave { group, reply } => (self.wait(Waiting::Left(reply)), HostCommand::Leave { group, dropped }),
            Command::Send { group, order, payload, replies, reply } => {
                let (outcome, rx) = match replies {
                    Replies::None => (None, None),
                    _ => {
                        let (tx, rx) = oneshot::channel();
                        (self.wait(Waiting::Query(tx)), Some(rx))
                    }
                };
                (self.wait(Waiting::Sent(reply, rx)), HostCommand::Send { group, order, payload, replies, outcome })
            }
            Command::SendBatch { group, order, payloads, reply } => {
                (self.wait(Waiting::SentBatch(reply)), HostCommand::SendBatch { group, order, payloads })
            }
            Command::Flush { group, reply } => (self.wait(Waiting::Flushed(reply)), HostCommand::Flush { group }),
            Command::WriteState { group, view, part, last, reply } => {
                (self.wait(Waiting::Written(reply)), HostCommand::WriteState { group, view, part, last })
            }
            Command::Shutdown { reply } => (self.wait(Waiting::ShutDown(reply)), HostCommand::Shutdown),
            Command::Status { reply } => return Submitted::Status(reply),
            Command::CloseTrace { reply } => return Submitted::CloseTrace(reply),
            c => (None, unanswered(c)),
        };
        Submitted::Host(waiter, command)
    }

    fn join_many(
        &mut self,
        groups: Vec<GroupName>,
        into: Option<MergedTx>,
        reply: oneshot::Sender<Vec<Result<Option<GroupEvents>, MembershipError>>>,
    ) -> (Option<WaiterId>, HostCommand) {
        let (into, rxs) = match into {
            Some((id, tx)) => {
                let consumer = merged_consumer(id);
                self.consumers.entry(consumer).or_insert(Consumer::Merged(tx));
                (JoinInto::Merged(consumer), Vec::new())
            }
            None => {
                let made: Vec<_> = groups.iter().map(|_| self.own_consumer()).collect();
                (JoinInto::Each(made.iter().map(|(c, _)| *c).collect()), made)
            }
        };
        (self.wait(Waiting::JoinMany(reply, rxs)), HostCommand::JoinMany { groups, into })
    }

    /// The host answered `waiter`.
    pub(crate) fn answer(&mut self, waiter: WaiterId, reply: Reply) {
        let Some(w) = self.waiting.remove(&waiter) else { return };
        match (w, reply) {
            (Waiting::Join(tx, rx, consumer, group), Reply::Joined(r)) => {
                if r.is_err() {
                    self.consumers.remove(&consumer);
                    self.streams.remove(&group);
                }
                let _ = tx.send(r.map(|()| GroupEvents::new(rx)));
            }
            (Waiting::JoinMany(tx, rxs), Reply::JoinedMany(results)) => {
                let _ = tx.send(self.joined_many(rxs, results));
            }
            (Waiting::Left(tx), Reply::Left(r)) => drop(tx.send(r)),
            (Waiting::Sent(tx, outcome), Reply::Sent(r)) => drop(tx.send(r.map(|id| Sent { id, outcome }))),
            (Waiting::SentBatch(tx), Reply::SentBatch(r)) => drop(tx.send(r)),
            (Waiting::Flushed(tx), Reply::Flushed(r)) => drop(tx.send(r)),
            (Waiting::Written(tx), Reply::StateWritten(r)) => drop(tx.send(r)),
            (Waiting::Query(tx), Reply::QueryDone(q)) => drop(tx.send(q)),
            (Waiting::ShutDown(tx), Reply::ShutDown) => drop(tx.send(())),
            (_, reply) => tracing::error!(?reply, "an answer to another kind of command"),
        }
    }

    /// The handles of a `JoinMany` (own handles: the groups that joined; a shared receiver:
    /// none).
    fn joined_many(
        &mut self,
        rxs: Vec<(ConsumerId, mpsc::Receiver<Vec<GroupEvent>>)>,
        results: Vec<Result<(), MembershipError>>,
    ) -> Vec<Result<Option<GroupEvents>, MembershipError>> {
        if rxs.is_empty() {
            return results.into_iter().map(|r| r.map(|()| None)).collect();
        }
        let mut out = Vec::with_capacity(results.len());
        for ((consumer, rx), r) in rxs.into_iter().zip(results) {
            if r.is_err() {
                self.consumers.remove(&consumer);
            }
            out.push(r.map(|()| Some(GroupEvents::new(rx))));
        }
        out
    }

    /// Whether a consumer's channel is closed (its reader dropped).
    pub(crate) fn closed(&self, c: ConsumerId) -> bool {
        self.consumers.get(&c).is_some_and(Consumer::is_closed)
    }

    /// A waiter will get no answer: its channel is dropped (the caller sees the node stop).
    pub(crate) fn forget(&mut self, waiter: WaiterId) {
        self.waiting.remove(&waiter);
    }
}

/// The commands nobody waits on.
fn unanswered(c: Command) -> HostCommand {
    match c {
        Command::Reply { id, payload } => HostCommand::Reply { id, payload },
        Command::ProvideState { group, view, state } => HostCommand::ProvideState { group, view, state },
        Command::DeclineState { group, view } => HostCommand::DeclineState { group, view },
        Command::BeginState { group, view } => HostCommand::BeginState { group, view },
        Command::AbandonState { group, view } => HostCommand::AbandonState { group, view },
        Command::StateRead { group, bytes } => HostCommand::StateRead { group, bytes },
        Command::GiveUpQuery { id } => HostCommand::GiveUpQuery { id },
        _ => unreachable!("answered commands are submitted with a waiter"),
    }
}
