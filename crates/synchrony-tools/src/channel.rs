//! The async host of a tool core: it reads a group's events, feeds the core, makes the
//! core's multicasts and replies, and wakes the tool's callers.

use crate::{Core, Effect, Effects};
use bytes::Bytes;
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use synchrony_engine::{Delivery, GroupView, MsgId, Order, ProcessId, QueryOutcome, Replies, ViewId};
use tokio::sync::{mpsc, oneshot};

/// Why a tool operation failed.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ToolError {
    /// The group handle is gone: this node left the group, stopped, or shut down.
    #[error("the group is no longer available to this node (left, stopped or shut down)")]
    Closed,
    /// The engine refused the multicast (too large, no such group, not joined yet).
    #[error("the group refused the operation: {0}")]
    Send(#[from] synchrony_engine::SendError),
    /// The operation was refused for another reason, said here.
    #[error("the group refused the operation: {0}")]
    Refused(String),
    /// Bytes that are not this tool's message or state.
    #[error("cannot decode: {0}")]
    Decode(String),
    /// A wait ran out of time.
    #[error("timed out")]
    Timeout,
    /// Every member that could have answered failed or left.
    #[error("every member that could answer failed or left")]
    NoSurvivor,
}

/// What a tool reads from its group, in delivery order.
#[derive(Debug, Clone)]
pub enum GroupInput {
    /// A new view.
    View(GroupView),
    /// A delivered multicast.
    Message(Delivery),
    /// Joiners need the state for this view: the host provides the core's snapshot.
    StateRequest(ViewId),
    /// This node joined; the group's state at its join point.
    State(Bytes),
}

/// The sending side of a group, as a tool uses it. `synchrony::GroupSender` implements it.
pub trait GroupSend: Clone + Send + Sync + 'static {
    /// Multicasts and returns the message's id.
    fn send(&self, order: Order, payload: Bytes) -> impl Future<Output = Result<MsgId, ToolError>> + Send;
    /// A group RPC.
    fn query(
        &self,
        order: Order,
        payload: Bytes,
        replies: Replies,
    ) -> impl Future<Output = Result<QueryOutcome, ToolError>> + Send;
    /// Answers a delivered query (`None`: a null reply).
    fn reply(&self, query: MsgId, payload: Option<Bytes>) -> impl Future<Output = ()> + Send;
    /// Hands joiners the state for `view`.
    fn provide_state(&self, view: ViewId, state: Bytes) -> impl Future<Output = ()> + Send;
    /// Returns once everything this node sent before is stable.
    fn flush(&self) -> impl Future<Output = Result<ViewId, ToolError>> + Send;
}

/// A group handle a tool can own: its inputs and a sender. `synchrony::Group` implements it.
pub trait GroupChannel: Send + 'static {
    /// The sending side.
    type Sender: GroupSend;
    /// This process.
    fn me(&self) -> ProcessId;
    /// A sender for the group.
    fn sender(&self) -> Self::Sender;
    /// The next input; `None` once the node left the group or stopped. Cancel-safe (the
    /// host stops waiting for it when the tool is left or dropped).
    fn next_input(&mut self) -> impl Future<Output = Option<GroupInput>> + Send;
    /// Leaves the group and returns once the leave is done. By default the channel is
    /// just dropped (for a `synchrony::Group`, a leave in the background).
    fn leave(self) -> impl Future<Output = Result<(), ToolError>> + Send
    where
        Self: Sized,
    {
        async { Ok(()) }
    }
}

/// Why a tool's reader stops before its group ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stop {
    Running,
    /// [`ToolHandle::leave`]: leave the group, and wait.
    Leave,
    /// Every handle the application held is gone: drop the group (it leaves).
    Dropped,
}

/// Held by the application's handles only (not the tool's own tasks): when the last goes,
/// the tool stops and gives its group back.
struct Life {
    stop: Arc<tokio::sync::watch::Sender<Stop>>,
}

impl Drop for Life {
    fn drop(&mut self) {
        self.stop.send_if_modified(|s| {
            let running = *s == Stop::Running;
            if running {
                *s = Stop::Dropped;
            }
            running
        });
    }
}

/// Sees each output of a core with the core, before callers are woken.
pub type Observer<C> = Box<dyn FnMut(&C, &<C as Core>::Output) + Send>;

/// Makes the state a joiner receives, in place of [`Core::snapshot`] (a logged replica
/// sends its log's checkpoint and tail).
pub type StateSource<C> = Box<dyn FnMut(&C) -> Bytes + Send>;

/// Completions kept for callers that have not asked yet (a caller learns its message id
/// only after the send returns, and a local delivery may come first).
const DONE_KEPT: usize = 4096;

/// What the reader task and the callers share.
struct Shared<C: Core> {
    core: C,
    me: ProcessId,
    waiters: HashMap<MsgId, oneshot::Sender<C::Output>>,
    done: HashMap<MsgId, C::Output>,
    done_order: VecDeque<MsgId>,
    closed: bool,
    /// The group's view as this member last saw it.
    view: Option<GroupView>,
    /// Inputs that did not decode as this tool's (a bug or a foreign sender in the group).
    pub(crate) foreign: u64,
}

/// An output a caller may be waiting for: the id of the message it concerns.
pub trait Keyed {
    /// The message this output completes, if any.
    fn key(&self) -> Option<&MsgId>;
}

/// A running tool: its core (for local reads), its group's sender, and the waits of its
/// callers. Built by each tool's wrapper with [`ToolHandle::start`].
///
/// When the last clone is dropped, the tool stops reading its group and the group is
/// dropped too (for a `synchrony::Group`: this node leaves it); [`ToolHandle::leave`]
/// does the same and waits for the leave.
pub struct ToolHandle<C: Core, S: GroupSend> {
    shared: Arc<Mutex<Shared<C>>>,
    sender: S,
    effects: mpsc::UnboundedSender<Effect>,
    /// Whether this member has the group's state (see [`ToolHandle::ready`]); closed when
    /// the reader ends.
    ready: tokio::sync::watch::Receiver<bool>,
    stop: Arc<tokio::sync::watch::Sender<Stop>>,
    /// `None` in the tool's own tasks' copies (see `Life`).
    life: Option<Arc<Life>>,
}

impl<C: Core, S: GroupSend> Clone for ToolHandle<C, S> {
    fn clone(&self) -> Self {
        Self { life: self.life.clone(), ..self.task_copy() }
    }
}

impl<C: Core, S: GroupSend> ToolHandle<C, S> {
    /// A copy for the tool's own tasks: it does not keep the tool running.
    fn task_copy(&self) -> Self {
        Self {
            shared: self.shared.clone(),
            sender: self.sender.clone(),
            effects: self.effects.clone(),
            ready: self.ready.clone(),
            stop: self.stop.clone(),
            life: None,
        }
    }
}

impl<C: Core, S: GroupSend> std::fmt::Debug for ToolHandle<C, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ToolHandle").finish_non_exhaustive()
    }
}

impl<C, S> ToolHandle<C, S>
where
    C: Core,
    C::Output: Keyed + Clone,
    S: GroupSend,
{
    /// Starts the tool on `channel`: spawns a task that reads the group's inputs into
    /// `core` and one that makes the core's effects in order. Every output also goes to
    /// `listener` when there is one (a slow listener slows the group's reader, as any slow
    /// member does: it is flow control, not loss).
    pub fn start<G>(channel: G, core: C, listener: Option<mpsc::Sender<C::Output>>) -> Self
    where
        G: GroupChannel<Sender = S>,
    {
        Self::start_observed(channel, core, listener, None, None)
    }

    /// As [`ToolHandle::start`], with an observer that sees every output with the core it
    /// came from, in the reader, before any caller is woken: what it does (write a log,
    /// say) happens before the output is acknowledged to anyone; and with `source`, what
    /// joiners receive comes from it rather than from [`Core::snapshot`].
    pub fn start_observed<G>(
        mut channel: G,
        core: C,
        listener: Option<mpsc::Sender<C::Output>>,
        mut observer: Option<Observer<C>>,
        mut source: Option<StateSource<C>>,
    ) -> Self
    where
        G: GroupChannel<Sender = S>,
    {
        let sender = channel.sender();
        let shared = Arc::new(Mutex::new(Shared {
            core,
            me: channel.me(),
            waiters: HashMap::new(),
            done: HashMap::new(),
            done_order: VecDeque::new(),
            closed: false,
            foreign: 0,
            view: None,
        }));
        let (ready_tx, ready) = tokio::sync::watch::channel(false);
        // Unbounded on purpose: the reader must never wait for the driver (the driver may
        // be waiting for the reader to take the group's next event). Effects come only
        // from deliveries and callers, both already paced by flow control.
        let (etx, erx) = mpsc::unbounded_channel::<Effect>();
        let stop = Arc::new(tokio::sync::watch::channel(Stop::Running).0);
        let life = Some(Arc::new(Life { stop: stop.clone() }));
        let handle = Self { shared: shared.clone(), sender: sender.clone(), effects: etx, ready, stop, life };
        handle.task_copy().spawn_effects(erx);
        let h = handle.task_copy();
        let mut stop = handle.stop.subscribe();
        tokio::spawn(async move {
            // The outputs of this member's first view, held from the observer until its
            // state (if one comes: the next input then) is loaded: a logging observer must
            // not record a joiner's view before the log reflects the group's state.
            let mut first_view: Option<Vec<C::Output>> = None;
            let mut seen_view = false;
            loop {
                let input = tokio::select! {
                    biased;
                    _ = stop.changed() => {
                        let why = *stop.borrow();
                        if why == Stop::Leave {
                            if let Err(e) = channel.leave().await {
                                tracing::warn!(error = %e, "a tool's group could not be left");
                            }
                        }
                        break; // `Dropped`: the channel goes with this task
                    }
                    input = channel.next_input() => input,
                };
                let Some(input) = input else { break };
                let mut fx = Effects::default();
                if !matches!(input, GroupInput::State(_)) {
                    if let (Some(held), Some(obs)) = (first_view.take(), observer.as_mut()) {
                        let s = h.lock();
                        for o in &held {
                            obs(&s.core, o);
                        }
                    }
                }
                match input {
                    GroupInput::View(_) | GroupInput::Message(_) => {
                        let mut s = h.lock();
                        if let GroupInput::View(v) = &input {
                            // A first view with other members: the group had some, and
                            // their state follows; alone, this member has it already.
                            if !seen_view && v.members.len() == 1 {
                                ready_tx.send_replace(true);
                            }
                            s.view = Some(v.clone());
                        }
                        match &input {
                            GroupInput::View(v) => s.core.on_view(v, &mut fx),
                            GroupInput::Message(m) => s.core.on_message(m, &mut fx),
                            _ => {}
                        }
                        if matches!(input, GroupInput::View(_)) && !seen_view {
                            seen_view = true;
                            first_view = Some(fx.outputs.clone());
                        } else if let Some(obs) = observer.as_mut() {
                            for o in &fx.outputs {
                                obs(&s.core, o);
                            }
                        }
                    }
                    GroupInput::StateRequest(view) => {
                        let state = {
                            let s = h.lock();
                            match source.as_mut() {
                                Some(f) => f(&s.core),
                                None => s.core.snapshot(),
                            }
                        };
                        h.sender.provide_state(view, state).await;
                    }
                    GroupInput::State(state) => {
                        {
                            let mut s = h.lock();
                            if let Err(e) = s.core.restore(&state) {
                                s.foreign += 1;
                                tracing::error!(error = %e, "a tool's state did not load");
                            }
                            if let (Some(held), Some(obs)) = (first_view.take(), observer.as_mut()) {
                                for o in &held {
                                    obs(&s.core, o);
                                }
                            }
                        }
                        // Only once loaded: a read right after `ready` sees the state.
                        ready_tx.send_replace(true);
                    }
                }
                h.apply(fx, listener.as_ref()).await;
            }
            let mut s = h.lock();
            s.closed = true;
            // Callers waiting for what will never come get `Closed`.
            s.waiters.clear();
        });
        handle
    }

    /// Where effects go in line with the core's own (a dropped permit's release).
    pub(crate) fn effect_sender(&self) -> mpsc::UnboundedSender<Effect> {
        self.effects.clone()
    }

    /// Stops the tool and leaves its group; returns once the leave is done (at once if
    /// the group had ended). Every clone of the tool then answers `ToolError::Closed`.
    pub async fn leave(&self) -> Result<(), ToolError> {
        self.stop.send_if_modified(|s| {
            let running = *s == Stop::Running;
            if running {
                *s = Stop::Leave;
            }
            running
        });
        let mut ended = self.ready.clone();
        while ended.changed().await.is_ok() {}
        Ok(())
    }

    /// Makes the core's effects in order until the reader ends (its `ready` sender gone).
    fn spawn_effects(self, mut erx: mpsc::UnboundedReceiver<Effect>) {
        let h = self;
        let mut reader_done = h.ready.clone();
        tokio::spawn(async move {
            loop {
                let e = tokio::select! {
                    biased;
                    e = erx.recv() => e,
                    // The reader ended: what it asked for went out above; nothing more comes.
                    changed = reader_done.changed() => match changed {
                        Ok(()) => continue,
                        Err(_) => None,
                    },
                };
                let Some(e) = e else { break };
                match e {
                    Effect::Send { order, payload } => {
                        if let Err(err) = h.sender.send(order, payload).await {
                            tracing::warn!(error = %err, "a tool's multicast was refused");
                        }
                    }
                    Effect::Reply { query, payload } => h.sender.reply(query, payload).await,
                    Effect::Query { order, payload, replies } => {
                        // A query waits for replies, maybe our own: never in line.
                        let h = h.clone();
                        tokio::spawn(async move {
                            if let Ok(outcome) = h.sender.query(order, payload, replies).await {
                                let fx = {
                                    let mut fx = Effects::default();
                                    h.lock().core.on_query_done(&outcome, &mut fx);
                                    fx
                                };
                                h.apply(fx, None).await;
                            }
                        });
                    }
                }
            }
        });
    }

    fn lock(&self) -> MutexGuard<'_, Shared<C>> {
        self.shared.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn apply(&self, fx: Effects<C::Output>, listener: Option<&mpsc::Sender<C::Output>>) {
        for e in fx.effects {
            let _ = self.effects.send(e);
        }
        for o in fx.outputs {
            {
                let mut s = self.lock();
                if let Some(id) = o.key().filter(|id| id.sender == s.me).cloned() {
                    // A waiter that gave up (a caller's timeout dropped it) may wait again
                    // for the same id: what it would have missed is kept in `done`.
                    let unclaimed = match s.waiters.remove(&id) {
                        Some(w) => w.send(o.clone()).err(),
                        None => Some(o.clone()),
                    };
                    if let Some(o) = unclaimed {
                        if s.done_order.len() >= DONE_KEPT {
                            if let Some(old) = s.done_order.pop_front() {
                                s.done.remove(&old);
                            }
                        }
                        s.done_order.push_back(id.clone());
                        s.done.insert(id, o);
                    }
                }
            }
            if let Some(l) = listener {
                let _ = l.send(o).await;
            }
        }
    }

    /// Returns once this member has the group's state: at once for the member that founded
    /// the group, once the state transfer is done for a joiner (a read before it sees an
    /// empty tool). `ToolError::Closed` if the group ended before.
    pub async fn ready(&self) -> Result<(), ToolError> {
        let mut ready = self.ready.clone();
        ready.wait_for(|r| *r).await.map(|_| ()).map_err(|_| ToolError::Closed)
    }

    /// The group's view as this member last saw it (`None` before the first).
    pub fn view(&self) -> Option<GroupView> {
        self.lock().view.clone()
    }

    /// Reads the core (local, no message).
    pub fn read<R>(&self, f: impl FnOnce(&C) -> R) -> R {
        f(&self.lock().core)
    }

    /// Changes the core's local part (what is not replicated: subscriptions, a member's
    /// own data). Replicated state must only change through messages.
    pub fn write<R>(&self, f: impl FnOnce(&mut C) -> R) -> R {
        f(&mut self.lock().core)
    }

    /// The group's sender.
    pub fn sender(&self) -> &S {
        &self.sender
    }

    /// Makes a core effect, in line with the core's own.
    pub fn effect(&self, e: Effect) -> Result<(), ToolError> {
        self.effects.send(e).map_err(|_| ToolError::Closed)
    }

    /// Multicasts and waits for the output keyed by the message.
    pub async fn send_and_wait(&self, order: Order, payload: Bytes) -> Result<C::Output, ToolError> {
        let id = self.sender.send(order, payload).await?;
        self.wait(id).await
    }

    /// Waits for the output keyed by `id` (a message this process sent).
    pub async fn wait(&self, id: MsgId) -> Result<C::Output, ToolError> {
        let rx = {
            let mut s = self.lock();
            if let Some(o) = s.done.remove(&id) {
                return Ok(o);
            }
            if s.closed {
                return Err(ToolError::Closed);
            }
            let (tx, rx) = oneshot::channel();
            s.waiters.insert(id, tx);
            rx
        };
        rx.await.map_err(|_| ToolError::Closed)
    }

    /// Inputs that did not decode as this tool's.
    pub fn foreign(&self) -> u64 {
        self.lock().foreign
    }
}
