//! Locks and semaphores: named counting semaphores per group, FIFO queueing, timeouts, and
//! release on the holder's failure.
//!
//! Every request, release and cancel is a totally ordered multicast, and every member runs
//! the same queue over them: a grant is not a message but a deduction every member makes at
//! the same point of the group's history. A holder that fails disappears from the view,
//! which every member sees at the same point too; its permit returns if it asked for that.

use crate::channel::Keyed;
use crate::{decode, encode, Core, Effect, Effects, GroupChannel, GroupSend, ToolError, ToolHandle};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;
use synchrony_engine::{Delivery, GroupView, MsgId, Order, ProcessId};
use tokio::sync::mpsc;

/// A lock message (every one in total order).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) enum LockMsg {
    /// Acquire one permit of `name` (created with `permits` if it does not exist).
    P { name: String, permits: u32, free_on_failure: bool },
    /// Release the permit granted to `request`.
    V { name: String, request: MsgId },
    /// Withdraw `request` (its caller stopped waiting); releases it if it was granted.
    Cancel { name: String, request: MsgId },
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
struct Ticket {
    request: MsgId,
    free_on_failure: bool,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
struct Sem {
    permits: u32,
    holders: Vec<Ticket>,
    waiters: VecDeque<Ticket>,
}

/// What the semaphores tell their users. Every member sees the same outputs in the same
/// order; a caller looks for those of its own requests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LockOutput {
    /// `request` now holds a permit of `name`.
    Granted {
        /// The semaphore.
        name: String,
        /// The `P` request (its sender is the holder).
        request: MsgId,
    },
    /// The permit of `request` returned (released by its holder).
    Released {
        /// The semaphore.
        name: String,
        /// The request that held it.
        request: MsgId,
    },
    /// The holder of `request` failed or left, and asked for its permit to return then.
    Freed {
        /// The semaphore.
        name: String,
        /// The request that held it.
        request: MsgId,
    },
    /// `request` will never be granted: cancelled by its caller, its process left, or it
    /// came from a process outside the group.
    Cancelled {
        /// The semaphore.
        name: String,
        /// The request.
        request: MsgId,
    },
}

impl Keyed for LockOutput {
    fn key(&self) -> Option<&MsgId> {
        match self {
            LockOutput::Granted { request, .. } | LockOutput::Cancelled { request, .. } => Some(request),
            LockOutput::Released { .. } | LockOutput::Freed { .. } => None,
        }
    }
}

/// The semaphores of one group (a [`Core`]).
///
/// ```
/// use synchrony_tools::{Core, Effects, Effect, LockOutput, Semaphores};
/// use synchrony_engine::{Delivery, GroupName, GroupView, MsgId, Order, ProcessId, ViewId};
/// let (a, b) = (ProcessId::new("a", 1), ProcessId::new("b", 1));
/// let mut sems = Semaphores::default();
/// let mut fx = Effects::default();
/// sems.on_view(&GroupView { id: ViewId(1), members: vec![a.clone(), b.clone()] }, &mut fx);
/// // Deliver one P from each: with one permit, a holds and b waits.
/// for (p, n) in [(&a, 0), (&b, 0)] {
///     let (order, payload) = Semaphores::acquire("disk", 1, true);
///     let d = Delivery { group: GroupName::new("g"), view: ViewId(1), id: MsgId { sender: p.clone(), counter: n },
///         order, query: false, payload };
///     sems.on_message(&d, &mut fx);
/// }
/// assert!(matches!(&fx.outputs[..], [LockOutput::Granted { request, .. }] if request.sender == a));
/// assert_eq!(sems.holders("disk").len(), 1);
/// // a fails: its permit returns and b gets it.
/// let mut fx = Effects::default();
/// sems.on_view(&GroupView { id: ViewId(2), members: vec![b.clone()] }, &mut fx);
/// assert!(matches!(&fx.outputs[1], LockOutput::Granted { request, .. } if request.sender == b));
/// ```
#[derive(Clone, Debug, Default)]
pub struct Semaphores {
    sems: BTreeMap<String, Sem>,
    members: BTreeSet<ProcessId>,
    rejected: u64,
}

impl Semaphores {
    /// The multicast that asks for a permit of `name` (`permits` is its size if this
    /// request creates it; `free_on_failure`: the permit returns if the holder fails).
    pub fn acquire(name: &str, permits: u32, free_on_failure: bool) -> (Order, Bytes) {
        (Order::Total, encode(&LockMsg::P { name: name.into(), permits: permits.max(1), free_on_failure }))
    }

    /// The multicast that releases the permit granted to `request`.
    pub fn release(name: &str, request: &MsgId) -> (Order, Bytes) {
        (Order::Total, encode(&LockMsg::V { name: name.into(), request: request.clone() }))
    }

    /// The multicast that withdraws `request` (released if it was granted meanwhile).
    pub fn cancel(name: &str, request: &MsgId) -> (Order, Bytes) {
        (Order::Total, encode(&LockMsg::Cancel { name: name.into(), request: request.clone() }))
    }

    /// The requests holding a permit of `name`.
    pub fn holders(&self, name: &str) -> Vec<MsgId> {
        self.sems.get(name).map(|s| s.holders.iter().map(|t| t.request.clone()).collect()).unwrap_or_default()
    }

    /// The requests waiting for `name`, first served first.
    pub fn waiters(&self, name: &str) -> Vec<MsgId> {
        self.sems.get(name).map(|s| s.waiters.iter().map(|t| t.request.clone()).collect()).unwrap_or_default()
    }

    /// The permits of `name` (0 if nobody uses it).
    pub fn permits(&self, name: &str) -> u32 {
        self.sems.get(name).map_or(0, |s| s.permits)
    }

    /// The semaphores in use.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.sems.keys().map(|s| s.as_str())
    }

    /// Messages that were not lock messages.
    pub fn rejected(&self) -> u64 {
        self.rejected
    }

    pub(crate) fn handle(&mut self, id: &MsgId, msg: LockMsg, fx: &mut Effects<LockOutput>) {
        match msg {
            LockMsg::P { name, permits, free_on_failure } => {
                if !self.members.contains(&id.sender) {
                    fx.output(LockOutput::Cancelled { name, request: id.clone() });
                    return;
                }
                let sem = self.sems.entry(name.clone()).or_insert_with(|| Sem { permits, ..Sem::default() });
                sem.waiters.push_back(Ticket { request: id.clone(), free_on_failure });
                self.grant(&name, fx);
            }
            LockMsg::V { name, request } | LockMsg::Cancel { name, request } => {
                let Some(sem) = self.sems.get_mut(&name) else { return };
                // Only the requester may give its permit back.
                if request.sender != id.sender {
                    return;
                }
                if let Some(k) = sem.holders.iter().position(|t| t.request == request) {
                    sem.holders.remove(k);
                    fx.output(LockOutput::Released { name: name.clone(), request });
                } else if let Some(k) = sem.waiters.iter().position(|t| t.request == request) {
                    sem.waiters.remove(k);
                    fx.output(LockOutput::Cancelled { name: name.clone(), request });
                }
                self.grant(&name, fx);
            }
        }
    }

    /// Serves waiters in request order while permits are free.
    fn grant(&mut self, name: &str, fx: &mut Effects<LockOutput>) {
        let Some(sem) = self.sems.get_mut(name) else { return };
        while sem.holders.len() < sem.permits as usize {
            let Some(t) = sem.waiters.pop_front() else { break };
            fx.output(LockOutput::Granted { name: name.into(), request: t.request.clone() });
            sem.holders.push(t);
        }
        if sem.holders.is_empty() && sem.waiters.is_empty() {
            self.sems.remove(name);
        }
    }

    pub(crate) fn view(&mut self, view: &GroupView, fx: &mut Effects<LockOutput>) {
        self.members_changed(view.members.iter().cloned().collect(), fx);
    }

    /// Frees the permits and drops the requests of processes no longer in the group.
    fn members_changed(&mut self, members: BTreeSet<ProcessId>, fx: &mut Effects<LockOutput>) {
        self.members = members;
        let names: Vec<String> = self.sems.keys().cloned().collect();
        for name in names {
            let sem = self.sems.get_mut(&name).expect("listed");
            let members = &self.members;
            sem.holders.retain(|t| {
                let keep = members.contains(&t.request.sender) || !t.free_on_failure;
                if !keep {
                    fx.output(LockOutput::Freed { name: name.clone(), request: t.request.clone() });
                }
                keep
            });
            sem.waiters.retain(|t| {
                let keep = members.contains(&t.request.sender);
                if !keep {
                    fx.output(LockOutput::Cancelled { name: name.clone(), request: t.request.clone() });
                }
                keep
            });
            self.grant(&name, fx);
        }
    }

    pub(crate) fn snapshot_value(&self) -> LockState {
        LockState { sems: self.sems.clone(), members: self.members.clone() }
    }

    /// Loads a joiner's state. The state is as of just before the join view, which this
    /// core has already seen: the view is applied again on top, as the provider did.
    pub(crate) fn restore_value(&mut self, s: LockState) {
        let current = std::mem::take(&mut self.members);
        self.sems = s.sems;
        self.members = s.members;
        if !current.is_empty() {
            self.members_changed(current, &mut Effects::default());
        }
    }
}

/// The semaphores' state, as a joiner receives it.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct LockState {
    sems: BTreeMap<String, Sem>,
    members: BTreeSet<ProcessId>,
}

impl Core for Semaphores {
    type Output = LockOutput;

    fn on_view(&mut self, view: &GroupView, fx: &mut Effects<LockOutput>) {
        self.view(view, fx);
    }

    fn on_message(&mut self, msg: &Delivery, fx: &mut Effects<LockOutput>) {
        match decode::<LockMsg>(&msg.payload) {
            Ok(m) => self.handle(&msg.id, m, fx),
            Err(_) => {
                self.rejected += 1;
                crate::not_understood(msg, fx);
            }
        }
    }

    fn snapshot(&self) -> Bytes {
        encode(&self.snapshot_value())
    }

    fn restore(&mut self, state: &[u8]) -> Result<(), ToolError> {
        self.restore_value(decode(state)?);
        Ok(())
    }
}

/// A permit held by this process; give it back with [`Locks::release`] (which returns
/// once the release is sent), or drop it (the release goes out in the background, as
/// tokio's `SemaphorePermit` does).
#[must_use = "a permit is held until released or dropped"]
pub struct Permit {
    name: String,
    request: MsgId,
    /// Where the release goes when the permit is dropped, and the release itself.
    on_drop: Option<(mpsc::UnboundedSender<Effect>, Bytes)>,
}

impl Permit {
    /// The semaphore.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The request that was granted.
    pub fn request(&self) -> &MsgId {
        &self.request
    }
}

impl std::fmt::Debug for Permit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Permit").field("name", &self.name).field("request", &self.request).finish()
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some((effects, release)) = self.on_drop.take() {
            // A tool that has stopped has no group to release in: its permits return by
            // `free_on_failure` at the others, if asked.
            let _ = effects.send(Effect::Send { order: Order::Total, payload: release });
        }
    }
}

/// A request for a permit, with its options; `.await` it. Made by [`Locks::acquire`].
///
/// By default: one permit (the semaphore's size if this request creates it), returned if
/// this process fails while holding it, no time limit.
#[must_use = "nothing is asked until the request is awaited"]
pub struct Acquire<'a> {
    options: AcquireOptions,
    run: Box<dyn FnOnce(AcquireOptions) -> BoxFuture<'a, Result<Permit, ToolError>> + Send + 'a>,
}

type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

#[derive(Clone, Debug)]
struct AcquireOptions {
    name: String,
    permits: u32,
    free_on_failure: bool,
    timeout: Option<Duration>,
}

impl std::fmt::Debug for Acquire<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Acquire").field("options", &self.options).finish_non_exhaustive()
    }
}

impl<'a> Acquire<'a> {
    /// The semaphore's size, if this request creates it (ignored otherwise; at least 1).
    pub fn permits(mut self, permits: u32) -> Self {
        self.options.permits = permits.max(1);
        self
    }

    /// The permit stays taken if this process fails or leaves while holding it (by
    /// default it returns then).
    pub fn keep_on_failure(mut self) -> Self {
        self.options.free_on_failure = false;
        self
    }

    /// Gives up after `timeout`: [`ToolError::Timeout`] (the request is withdrawn).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.options.timeout = Some(timeout);
        self
    }
}

impl<'a> std::future::IntoFuture for Acquire<'a> {
    type Output = Result<Permit, ToolError>;
    type IntoFuture = BoxFuture<'a, Result<Permit, ToolError>>;

    fn into_future(self) -> Self::IntoFuture {
        (self.run)(self.options)
    }
}

/// The semaphores of a group, for async callers.
///
/// ```no_run
/// # async fn f(group: impl synchrony_tools::GroupChannel) -> Result<(), synchrony_tools::ToolError> {
/// use std::time::Duration;
/// let locks = synchrony_tools::Locks::start(group);
/// // One permit, returned if this process fails while holding it; wait at most 1 s.
/// let permit = locks.acquire("printer").timeout(Duration::from_secs(1)).await?;
/// // ... use the printer ...
/// locks.release(permit).await?;
/// // A semaphore of three permits; this one is kept if its holder fails.
/// let slot = locks.acquire("slots").permits(3).keep_on_failure().await?;
/// drop(slot); // released in the background
/// # Ok(()) }
/// ```
pub struct Locks<S: GroupSend> {
    tool: ToolHandle<Semaphores, S>,
}

impl<S: GroupSend> Clone for Locks<S> {
    fn clone(&self) -> Self {
        Self { tool: self.tool.clone() }
    }
}

impl<S: GroupSend> std::fmt::Debug for Locks<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Locks").finish_non_exhaustive()
    }
}

impl<S: GroupSend> Locks<S> {
    crate::group_access!(tool);

    /// Runs the semaphores on `group` (every member that uses them must).
    pub fn start<G: GroupChannel<Sender = S>>(group: G) -> Self {
        Self { tool: ToolHandle::start(group, Semaphores::default(), None) }
    }

    /// A request for a permit of `name`, served in request order: set its options (see
    /// [`Acquire`]), then `.await` it.
    pub fn acquire(&self, name: &str) -> Acquire<'_> {
        Acquire {
            options: AcquireOptions { name: name.into(), permits: 1, free_on_failure: true, timeout: None },
            run: Box::new(move |o: AcquireOptions| {
                Box::pin(
                    async move { acquire_with(&self.tool, &o.name, o.permits, o.free_on_failure, o.timeout).await },
                )
            }),
        }
    }

    /// Gives a permit back.
    pub async fn release(&self, permit: Permit) -> Result<(), ToolError> {
        release_with(&self.tool, permit).await
    }

    /// The requests holding `name` now, as this member's replica knows them.
    pub fn holders(&self, name: &str) -> Vec<MsgId> {
        self.tool.read(|s| s.holders(name))
    }

    /// The requests waiting for `name` now, first served first, as this member knows them.
    pub fn waiters(&self, name: &str) -> Vec<MsgId> {
        self.tool.read(|s| s.waiters(name))
    }
}

/// A tool whose core embeds [`Semaphores`]: how its lock messages and outputs look.
pub(crate) trait LockHost: Core {
    /// The multicast carrying `msg`.
    fn lock_msg(msg: LockMsg) -> Bytes;
    /// The lock output inside one of the tool's outputs.
    fn as_lock(o: Self::Output) -> Option<LockOutput>;
}

impl LockHost for Semaphores {
    fn lock_msg(msg: LockMsg) -> Bytes {
        encode(&msg)
    }

    fn as_lock(o: LockOutput) -> Option<LockOutput> {
        Some(o)
    }
}

/// Acquires through any tool that embeds the semaphores.
pub(crate) async fn acquire_with<C, S>(
    tool: &ToolHandle<C, S>,
    name: &str,
    permits: u32,
    free_on_failure: bool,
    timeout: Option<Duration>,
) -> Result<Permit, ToolError>
where
    C: LockHost,
    C::Output: Keyed + Clone,
    S: GroupSend,
{
    let send = |msg: LockMsg| tool.sender().send(Order::Total, C::lock_msg(msg));
    let id = send(LockMsg::P { name: name.into(), permits: permits.max(1), free_on_failure }).await?;
    let first = match timeout {
        Some(t) => tokio::time::timeout(t, tool.wait(id.clone())).await.ok(),
        None => Some(tool.wait(id.clone()).await),
    };
    let outcome = match first {
        Some(o) => o?,
        None => {
            // Out of time: withdraw, then see which came first, the grant or the cancel.
            send(LockMsg::Cancel { name: name.into(), request: id.clone() }).await?;
            if let Some(LockOutput::Granted { .. }) = C::as_lock(tool.wait(id.clone()).await?) {
                send(LockMsg::V { name: name.into(), request: id.clone() }).await?;
            }
            return Err(ToolError::Timeout);
        }
    };
    match C::as_lock(outcome) {
        Some(LockOutput::Granted { name, request }) => {
            let release = C::lock_msg(LockMsg::V { name: name.clone(), request: request.clone() });
            Ok(Permit { name, request, on_drop: Some((tool.effect_sender(), release)) })
        }
        _ => Err(ToolError::Refused("the request was cancelled (did this process leave the group?)".into())),
    }
}

/// Releases through any tool that embeds the semaphores.
pub(crate) async fn release_with<C: LockHost, S: GroupSend>(
    tool: &ToolHandle<C, S>,
    mut permit: Permit,
) -> Result<(), ToolError>
where
    C::Output: Keyed + Clone,
{
    permit.on_drop = None; // released here, not again when dropped
    let msg = LockMsg::V { name: permit.name.clone(), request: permit.request.clone() };
    tool.sender().send(Order::Total, C::lock_msg(msg)).await.map(|_| ())
}
