//! A group handle, and what it receives.

pub use crate::state_writer::StateWriter;
use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use synchrony_engine::{
    Delivery, FlushError, GroupName, GroupView, MembershipError, MsgId, Order, PartitionReason, ProcessId,
    QueryOutcome, Replies, SendError, ViewId,
};
use synchrony_runtime::{GroupEvent, NodeStopped, Runtime, StateStream};

/// Why a join failed.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    /// The engine refused (already a member, or this node stopped).
    #[error(transparent)]
    Membership(#[from] MembershipError),
    /// A member's join verifier refused this node.
    #[error("a member of group {0} refused this node's join")]
    Refused(GroupName),
}

/// Why a send or query on a [`Group`] failed.
#[derive(Debug, thiserror::Error)]
pub enum GroupSendError {
    /// The engine refused it (this node stopped, the payload is too large, ...).
    #[error(transparent)]
    Send(#[from] SendError),
    /// This node is no longer in the group (it left, or its state could not be fetched).
    #[error("this node is no longer a member of group {0}")]
    NotMember(GroupName),
    /// The value could not be encoded.
    #[error("cannot encode the value: {0}")]
    Encode(#[from] postcard::Error),
    /// A payload read from a reader could not be read, or spooled ([`Group::send_reader`]).
    #[error("cannot spool the payload in {dir}: {error}")]
    Spool {
        /// The spool directory.
        dir: std::path::PathBuf,
        /// What failed.
        error: std::io::Error,
    },
    /// A reply to [`Group::query_value`] is not a value of the type asked for.
    #[error("the reply from {from} is not the type asked for: {error}")]
    Decode {
        /// Who replied.
        from: ProcessId,
        /// What did not decode.
        error: postcard::Error,
    },
}

/// The outcome of [`Group::query_value`]: a `QueryOutcome` with the replies decoded.
#[derive(Debug, Clone)]
pub struct ValueReplies<R> {
    /// The query.
    pub id: MsgId,
    /// The replies, decoded, in arrival order.
    pub replies: Vec<(ProcessId, R)>,
    /// Members that answered with a null reply.
    pub nulls: Vec<ProcessId>,
    /// Members that failed or left before answering.
    pub failed: Vec<ProcessId>,
    /// Whether as many replies as asked for came in.
    pub satisfied: bool,
}

impl<R: DeserializeOwned> ValueReplies<R> {
    fn decode(outcome: QueryOutcome) -> Result<Self, GroupSendError> {
        let replies = outcome
            .replies
            .into_iter()
            .map(|(from, b)| match crate::decode(&b) {
                Ok(v) => Ok((from, v)),
                Err(error) => Err(GroupSendError::Decode { from, error }),
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { id: outcome.id, replies, nulls: outcome.nulls, failed: outcome.failed, satisfied: outcome.satisfied })
    }
}

/// Why a reply with a value failed.
#[derive(Debug, thiserror::Error)]
pub enum ReplyError {
    /// The value could not be encoded.
    #[error("cannot encode the value: {0}")]
    Encode(#[from] postcard::Error),
    /// This node has stopped.
    #[error(transparent)]
    Stopped(#[from] NodeStopped),
}

/// A delivered multicast. Queries are answered with [`Message::reply`] or
/// [`Message::reply_null`].
#[derive(Debug, Clone)]
pub struct Message {
    delivery: Delivery,
    rt: Runtime,
}

impl Message {
    /// The message's id (its sender and counter).
    pub fn id(&self) -> &MsgId {
        &self.delivery.id
    }

    /// The process that sent it.
    pub fn sender(&self) -> &ProcessId {
        &self.delivery.id.sender
    }

    /// Its order class.
    pub fn order(&self) -> synchrony_engine::Order {
        self.delivery.order
    }

    /// The view it was delivered in.
    pub fn view(&self) -> ViewId {
        self.delivery.view
    }

    /// The bytes. They are a slice of the buffer the network read them into (no copy),
    /// so keeping them keeps up to 64 KB alive: copy them (`Bytes::copy_from_slice`) to
    /// hold many small payloads for long.
    pub fn payload(&self) -> &Bytes {
        &self.delivery.payload
    }

    /// The payload decoded as a value sent with [`Group::send_value`].
    pub fn value<T: DeserializeOwned>(&self) -> Result<T, postcard::Error> {
        crate::decode(&self.delivery.payload)
    }

    /// Whether the sender waits for replies.
    pub fn is_query(&self) -> bool {
        self.delivery.query
    }

    /// Answers the query.
    pub async fn reply(&self, payload: impl Into<Bytes>) -> Result<(), NodeStopped> {
        self.rt.reply(self.delivery.id.clone(), Some(payload.into())).await
    }

    /// Answers the query with a value.
    pub async fn reply_value<T: Serialize>(&self, value: &T) -> Result<(), ReplyError> {
        Ok(self.reply(crate::encode(value)?).await?)
    }

    /// The delivery as the engine gave it.
    pub fn into_delivery(self) -> Delivery {
        self.delivery
    }

    /// Says "I will not answer", so the caller does not wait for this member.
    pub async fn reply_null(&self) -> Result<(), NodeStopped> {
        self.rt.reply(self.delivery.id.clone(), None).await
    }
}

/// Joiners need the group's state: [`StateRequest::provide`] it before handling the next
/// event (the group's later events wait for it). Dropped unanswered, it is declined: the
/// joiners ask another member, or, if none has the state, learn that it is lost.
///
/// With causal order across groups (the default), once an ordered message of this group is
/// held behind the request, the later view changes of this node's other groups wait too
/// (the first view of a group it joins among them), until the request is answered: a task
/// that must answer it should not wait on such a join first.
#[derive(Debug)]
#[must_use = "the joiners and this group's later events wait until the state is provided"]
pub struct StateRequest {
    group: GroupName,
    view: ViewId,
    joiners: Vec<ProcessId>,
    rt: Runtime,
    answered: bool,
}

impl Drop for StateRequest {
    fn drop(&mut self) {
        if !self.answered {
            self.rt.decline_state_in_background(self.group.clone(), self.view);
        }
    }
}

impl StateRequest {
    /// The joiners' first view.
    pub fn view(&self) -> ViewId {
        self.view
    }

    /// Who joins.
    pub fn joiners(&self) -> &[ProcessId] {
        &self.joiners
    }

    /// Gives the state as it is now (after every message delivered so far).
    pub async fn provide(mut self, state: impl Into<Bytes>) -> Result<(), NodeStopped> {
        self.answered = true;
        self.rt.provide_state(self.group.clone(), self.view, state.into()).await
    }

    /// The request's view, for a tool that answers it through the runtime.
    pub(crate) fn handed_to_tool(mut self) -> ViewId {
        self.answered = true;
        self.view
    }

    /// Gives the state in parts, written while the group goes on: the group's later events
    /// flow from this call on, so what the [`StateWriter`] writes must be the state as it
    /// was now (a snapshot: a copy-on-write structure, a read transaction of a store). Each
    /// write waits while the joiners have not fetched what came before (at most two of their
    /// windows, `engine.state_window_bytes`, wait here), so neither side holds the state
    /// whole. Dropped before [`StateWriter::finish`], the joiners ask another member.
    pub async fn stream(mut self) -> Result<StateWriter, NodeStopped> {
        self.answered = true;
        self.rt.begin_state(self.group.clone(), self.view).await?;
        Ok(StateWriter::new(self.group.clone(), self.view, self.rt.clone()))
    }

    /// Gives no state (what dropping the request does): the joiners ask another member
    /// that has it, or, with none, learn that the state is lost and leave; this group's
    /// later events go on at once.
    pub fn decline(self) {}
}

/// What a group handle receives, in the same order at every member.
#[derive(Debug)]
#[non_exhaustive]
#[must_use = "a StateRequest in it must be answered, or the group waits"]
pub enum Event {
    /// A new view is installed (members oldest first).
    View(GroupView),
    /// A multicast.
    Message(Message),
    /// Joiners need the state.
    StateRequest(StateRequest),
    /// This node joined and here is the group's state at its join point; no message is
    /// delivered to it before this.
    State(Bytes),
    /// This node joined with [`JoinOptions::stream_state`](crate::JoinOptions::stream_state)
    /// and its state, `len` bytes, has all come through [`Group::state_stream`]; no message
    /// is delivered to it before this.
    StateStreamed {
        /// The state's length.
        len: u64,
    },
    /// This node left the group.
    Left,
    /// A member's join verifier refused this node's join (after a rejoin as a new
    /// incarnation, see `Config::rejoin`): it is not in the group.
    JoinRefused,
    /// This node's incarnation stopped (it was excluded, or lost the majority). With
    /// `Config::rejoin` it comes back as a new incarnation and the views go on.
    Partitioned(PartitionReason),
}

/// A handle on one group this node joined: its events, and (through [`Group::sender`] or
/// directly) sends, queries and flushes.
///
/// ```
/// use synchrony::{Config, Event, JoinOptions, Node, Order, Replies};
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> anyhow::Result<()> {
/// let node = Node::start(Config::new("n1", "127.0.0.1:0")).await?;
/// let mut group = node.join("prices", JoinOptions::default()).await?;
/// assert_eq!(group.view().map(|v| v.members.len()), Some(1));
/// group.send_value(Order::Safe, &("ACME", 101.5)).await?;
/// // A query waits for replies: answer it from the event loop.
/// let sender = group.sender();
/// let call = tokio::spawn(async move { sender.query(Order::Total, "quote?", Replies::All).await });
/// let mut answered = 0;
/// while answered < 1 {
///     match group.next_event().await {
///         Some(Event::Message(m)) if m.is_query() => {
///             m.reply("101.5").await?;
///             answered += 1;
///         }
///         Some(Event::Message(m)) => assert_eq!(m.value::<(String, f64)>()?, ("ACME".into(), 101.5)),
///         Some(_) => {}
///         None => anyhow::bail!("stopped"),
///     }
/// }
/// let outcome = call.await??;
/// assert_eq!(outcome.replies.len(), 1);
/// group.flush().await?; // everything sent so far is held by every member
/// group.leave().await?;
/// node.shutdown().await?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Group {
    sender: GroupSender,
    events: synchrony_runtime::GroupEvents,
    /// Events read ahead while waiting for the first view, handed out first.
    ahead: VecDeque<GroupEvent>,
    view: Option<GroupView>,
    pub(crate) state_stream: Option<StateStream>,
}

/// The sending half of a [`Group`]: cheap to clone, so that several tasks can send while
/// one reads the events.
#[derive(Debug, Clone)]
pub struct GroupSender {
    name: GroupName,
    rt: Runtime,
    left: Arc<AtomicBool>,
}

impl Group {
    pub(crate) fn new(name: GroupName, rt: Runtime, events: synchrony_runtime::GroupEvents) -> Self {
        let sender = GroupSender::new(name, rt);
        Self { sender, events, ahead: VecDeque::new(), view: None, state_stream: None }
    }

    /// Reads ahead until the first view (kept for `next_event`).
    pub(crate) async fn wait_for_view(&mut self) -> Result<(), crate::JoinError> {
        let stopped = || crate::JoinError::Membership(MembershipError::Stopped);
        while let Some(ev) = self.events.recv().await {
            match &ev {
                GroupEvent::View(v) => {
                    self.view = Some(v.clone());
                    self.ahead.push_back(ev);
                    return Ok(());
                }
                GroupEvent::JoinRefused => return Err(crate::JoinError::Refused(self.sender.name.clone())),
                GroupEvent::Left | GroupEvent::Partitioned(_) => return Err(stopped()),
                GroupEvent::Message(_)
                | GroupEvent::StateRequest { .. }
                | GroupEvent::State { .. }
                | GroupEvent::StateStreamed { .. } => self.ahead.push_back(ev),
            }
        }
        Err(stopped())
    }

    /// The group's name.
    pub fn name(&self) -> &GroupName {
        &self.sender.name
    }

    /// The view this handle last received (`None` before the first).
    pub fn view(&self) -> Option<&GroupView> {
        self.view.as_ref()
    }

    /// The group's state as a stream, for a join with
    /// [`JoinOptions::stream_state`](crate::JoinOptions::stream_state) (taken: `None` the
    /// second time). Read it to the end (`next` gives `None`) before waiting for the next
    /// event: the state comes ahead of every message, and the joiner fetches more only as
    /// it is read.
    ///
    /// ```no_run
    /// # use synchrony::{JoinOptions, Node, StatePart};
    /// # async fn f(node: Node) -> anyhow::Result<()> {
    /// let mut group = node.join("big", JoinOptions::default().stream_state()).await?;
    /// let mut state = group.state_stream().expect("asked for a stream");
    /// let mut table = Vec::new();
    /// while let Some(part) = state.next().await {
    ///     match part {
    ///         StatePart::Data(bytes) => table.extend_from_slice(&bytes),
    ///         StatePart::Restart => table.clear(), // another provider: from the beginning
    ///     }
    /// }
    /// assert!(state.is_complete());
    /// # Ok(()) }
    /// ```
    pub fn state_stream(&mut self) -> Option<StateStream> {
        self.state_stream.take()
    }

    /// A sending handle for other tasks.
    pub fn sender(&self) -> GroupSender {
        self.sender.clone()
    }

    /// The next event; `None` once the node has shut down. Cancel-safe. (A `Group` is also
    /// a [`futures_core::Stream`] of its events.)
    pub async fn next_event(&mut self) -> Option<Event> {
        std::future::poll_fn(|cx| self.poll_event(cx)).await
    }

    /// Polls for the next event.
    fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        let ev = match self.ahead.pop_front() {
            Some(ev) => ev,
            None => match self.events.poll_recv(cx) {
                Poll::Ready(Some(ev)) => ev,
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            },
        };
        Poll::Ready(Some(self.event_of(ev)))
    }

    /// What the application sees of an event the runtime handed over.
    fn event_of(&mut self, ev: GroupEvent) -> Event {
        event_of(&self.sender, &mut self.view, ev)
    }

    /// Multicasts bytes to the group.
    pub async fn send(&self, order: Order, payload: impl Into<Bytes>) -> Result<MsgId, GroupSendError> {
        self.sender.send(order, payload).await
    }

    /// Multicasts a value (encoded with postcard; read it with [`Message::value`]).
    pub async fn send_value<T: Serialize>(&self, order: Order, value: &T) -> Result<MsgId, GroupSendError> {
        self.sender.send_value(order, value).await
    }

    /// Multicasts what `reader` gives to its end, never holding it on the heap; see
    /// [`GroupSender::send_reader`].
    pub async fn send_reader(
        &self,
        order: Order,
        reader: impl tokio::io::AsyncRead + Unpin,
    ) -> Result<MsgId, GroupSendError> {
        self.sender.send_reader(order, reader).await
    }

    /// Multicasts many payloads at once; see [`GroupSender::send_many`].
    pub async fn send_many(&self, order: Order, payloads: Vec<Bytes>) -> Vec<Result<MsgId, GroupSendError>> {
        self.sender.send_many(order, payloads).await
    }

    /// A group RPC: multicasts and waits for `replies` (none, one, k, or all members;
    /// null replies and members that fail count as answered, and the outcome says which).
    pub async fn query(
        &self,
        order: Order,
        payload: impl Into<Bytes>,
        replies: Replies,
    ) -> Result<QueryOutcome, GroupSendError> {
        self.sender.query(order, payload, replies).await
    }

    /// As [`Group::query`], waiting at most `deadline`: then the outcome holds the replies
    /// received so far (`satisfied` false unless enough came), and later ones are ignored.
    pub async fn query_within(
        &self,
        order: Order,
        payload: impl Into<Bytes>,
        replies: Replies,
        deadline: std::time::Duration,
    ) -> Result<QueryOutcome, GroupSendError> {
        self.sender.query_within(order, payload, replies, deadline).await
    }

    /// A group RPC with values: the query is `value` encoded (read it with
    /// [`Message::value`]), the replies are decoded as `R` (answer with
    /// [`Message::reply_value`]).
    pub async fn query_value<Q: Serialize, R: DeserializeOwned>(
        &self,
        order: Order,
        value: &Q,
        replies: Replies,
    ) -> Result<ValueReplies<R>, GroupSendError> {
        self.sender.query_value(order, value, replies).await
    }

    /// Returns once every message this node sent to the group before the call is stable
    /// (held by every member), with the view at that moment.
    pub async fn flush(&self) -> Result<ViewId, FlushError> {
        self.sender.flush().await
    }

    /// Leaves the group and waits until the leave is done.
    pub async fn leave(mut self) -> Result<(), MembershipError> {
        self.sender.rt.leave(self.sender.name.clone()).await?;
        self.sender.left.store(true, Ordering::Relaxed);
        while let Some(ev) = self.events.recv().await {
            if matches!(ev, GroupEvent::Left | GroupEvent::Partitioned(_)) {
                break;
            }
        }
        Ok(())
    }
}

/// What the application sees of an event the runtime handed over for the group `sender`
/// sends to, whose last view is `view` (kept up to date here).
pub(crate) fn event_of(sender: &GroupSender, view: &mut Option<GroupView>, ev: GroupEvent) -> Event {
    let rt = &sender.rt;
    match ev {
        GroupEvent::View(v) => {
            *view = Some(v.clone());
            Event::View(v)
        }
        GroupEvent::Message(delivery) => Event::Message(Message { delivery, rt: rt.clone() }),
        GroupEvent::StateRequest { view, joiners } => Event::StateRequest(StateRequest {
            group: sender.name.clone(),
            view,
            joiners,
            rt: rt.clone(),
            answered: false,
        }),
        GroupEvent::State { state, .. } => Event::State(state),
        GroupEvent::StateStreamed { len, .. } => Event::StateStreamed { len },
        GroupEvent::Left => {
            sender.left.store(true, Ordering::Relaxed);
            *view = None;
            Event::Left
        }
        GroupEvent::Partitioned(reason) => {
            *view = None;
            Event::Partitioned(reason)
        }
        GroupEvent::JoinRefused => {
            sender.left.store(true, Ordering::Relaxed);
            *view = None;
            Event::JoinRefused
        }
    }
}

/// Dropped without [`Group::leave`], a handle leaves the group in the background, and the
/// state requests it had not handed out are declined (the joiners ask another member).
impl Drop for Group {
    fn drop(&mut self) {
        self.events.close();
        let rt = &self.sender.rt;
        let unread = self.ahead.drain(..).chain(std::iter::from_fn(|| self.events.try_recv()));
        for ev in unread {
            if let GroupEvent::StateRequest { view, .. } = ev {
                rt.decline_state_in_background(self.sender.name.clone(), view);
            }
        }
        if !self.sender.left.swap(true, Ordering::Relaxed) {
            rt.leave_in_background(self.sender.name.clone());
        }
    }
}

impl futures_core::Stream for Group {
    type Item = Event;

    fn poll_next(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        self.get_mut().poll_event(cx)
    }
}

impl GroupSender {
    pub(crate) fn new(name: GroupName, rt: Runtime) -> Self {
        Self { name, rt, left: Arc::default() }
    }

    /// Sends fail with `NotMember` from now on (this node left, or is leaving).
    pub(crate) fn mark_left(&self) -> bool {
        self.left.swap(true, Ordering::Relaxed)
    }

    fn check_member(&self) -> Result<(), GroupSendError> {
        if self.left.load(Ordering::Relaxed) {
            return Err(GroupSendError::NotMember(self.name.clone()));
        }
        Ok(())
    }

    /// The group's name.
    pub fn name(&self) -> &GroupName {
        &self.name
    }

    pub(crate) fn runtime(&self) -> &Runtime {
        &self.rt
    }

    /// Multicasts bytes to the group.
    pub async fn send(&self, order: Order, payload: impl Into<Bytes>) -> Result<MsgId, GroupSendError> {
        self.check_member()?;
        Ok(self.rt.send(self.name.clone(), order, payload.into(), Replies::None).await?)
    }

    /// Multicasts a value (encoded with postcard; read it with [`Message::value`]).
    pub async fn send_value<T: Serialize>(&self, order: Order, value: &T) -> Result<MsgId, GroupSendError> {
        self.send(order, crate::encode(value)?).await
    }

    /// Multicasts what `reader` gives to its end (a file, a socket, a decompressor), never
    /// holding it on the heap: it is spooled to a file (in `DATA_DIR/spool`, or the system's
    /// temporary directory) that is unlinked at once and mapped back, and goes out in
    /// fragments like any large message; the kernel pages it in as they go and may drop
    /// those pages again. Larger than `engine.max_message_bytes` is refused as soon as the
    /// reading passes it.
    pub async fn send_reader(
        &self,
        order: Order,
        reader: impl tokio::io::AsyncRead + Unpin,
    ) -> Result<MsgId, GroupSendError> {
        self.check_member()?;
        self.rt.send_reader(self.name.clone(), order, reader).await.map_err(|e| match e {
            synchrony_runtime::SendReaderError::Send(e) => GroupSendError::Send(e),
            synchrony_runtime::SendReaderError::Spool { dir, error } => GroupSendError::Spool { dir, error },
        })
    }

    /// Multicasts many payloads in this order, as one step: they share frames and the
    /// trip to the node's driver, so small messages go many times faster than one `send`
    /// at a time. One result per payload; flow control waits for room for the whole batch.
    pub async fn send_many(&self, order: Order, payloads: Vec<Bytes>) -> Vec<Result<MsgId, GroupSendError>> {
        if self.check_member().is_err() {
            return payloads.iter().map(|_| Err(GroupSendError::NotMember(self.name.clone()))).collect();
        }
        let sent = self.rt.send_batch(self.name.clone(), order, payloads).await;
        sent.into_iter().map(|r| r.map_err(GroupSendError::from)).collect()
    }

    /// A group RPC; see [`Group::query`].
    pub async fn query(
        &self,
        order: Order,
        payload: impl Into<Bytes>,
        replies: Replies,
    ) -> Result<QueryOutcome, GroupSendError> {
        self.check_member()?;
        Ok(self.rt.query(self.name.clone(), order, payload.into(), replies).await?)
    }

    /// See [`Group::query_within`].
    pub async fn query_within(
        &self,
        order: Order,
        payload: impl Into<Bytes>,
        replies: Replies,
        deadline: std::time::Duration,
    ) -> Result<QueryOutcome, GroupSendError> {
        self.check_member()?;
        Ok(self.rt.query_within(self.name.clone(), order, payload.into(), replies, deadline).await?)
    }

    /// See [`Group::query_value`].
    pub async fn query_value<Q: Serialize, R: DeserializeOwned>(
        &self,
        order: Order,
        value: &Q,
        replies: Replies,
    ) -> Result<ValueReplies<R>, GroupSendError> {
        ValueReplies::decode(self.query(order, crate::encode(value)?, replies).await?)
    }

    /// See [`Group::flush`].
    pub async fn flush(&self) -> Result<ViewId, FlushError> {
        self.rt.flush(self.name.clone()).await
    }
}
