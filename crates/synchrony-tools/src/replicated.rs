//! Replicated data: every member holds a copy, reads are local, updates are multicast and
//! applied in the same order everywhere, and a joiner gets the copy by state transfer.
//!
//! Updates go in total order by default. A caller that holds the tool's lock may send its
//! updates in causal order instead (cheaper: no sequencer): the lock serializes the writers,
//! and causal order makes each holder's updates follow the previous holder's. Keys written
//! under the lock must only be written under the lock.

use crate::channel::Keyed;
use crate::lock::{acquire_with, release_with, LockHost, LockMsg, LockOutput, LockState, Permit};
use crate::{decode, encode, Core, Effects, GroupChannel, GroupSend, Semaphores, ToolError, ToolHandle};
use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use synchrony_engine::{Delivery, GroupView, MsgId, Order};

/// A type that can be replicated: a deterministic `apply` of updates (the same updates in
/// the same order give the same value at every member).
pub trait Apply: Serialize + DeserializeOwned + Default + Send + 'static {
    /// An update.
    type Update: Serialize + DeserializeOwned + Send + std::fmt::Debug + 'static;
    /// Applies an update. Must depend only on `self` and `update`.
    fn apply(&mut self, update: &Self::Update);
}

/// An update of a replicated map.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub enum MapUpdate<K, V> {
    /// Sets `key` to `value`.
    Put(K, V),
    /// Removes `key`.
    Remove(K),
}

impl<K, V> Apply for BTreeMap<K, V>
where
    K: Ord + Clone + Serialize + DeserializeOwned + Send + std::fmt::Debug + 'static,
    V: Clone + Serialize + DeserializeOwned + Send + std::fmt::Debug + 'static,
{
    type Update = MapUpdate<K, V>;

    fn apply(&mut self, update: &MapUpdate<K, V>) {
        match update {
            MapUpdate::Put(k, v) => {
                self.insert(k.clone(), v.clone());
            }
            MapUpdate::Remove(k) => {
                self.remove(k);
            }
        }
    }
}

/// A replicated value's message.
#[derive(Debug, Serialize, Deserialize)]
enum Msg<U> {
    Update(U),
    Lock(LockMsg),
}

/// What a replica tells its users.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReplicatedOutput {
    /// The update sent as `id` is applied here, as the `seq`-th update of the group.
    Applied {
        /// The update's message.
        id: MsgId,
        /// Updates applied so far (the same number at every member for the same update).
        seq: u64,
        /// The update as multicast (what a log keeps).
        update: Bytes,
    },
    /// The tool's lock.
    Lock(LockOutput),
    /// A view of the group was installed here (a logged replica records it: after a total
    /// failure, the last views tell which members failed last).
    View(GroupView),
}

impl Keyed for ReplicatedOutput {
    fn key(&self) -> Option<&MsgId> {
        match self {
            ReplicatedOutput::Applied { id, .. } => Some(id),
            ReplicatedOutput::Lock(l) => l.key(),
            ReplicatedOutput::View(_) => None,
        }
    }
}

/// The lock every replica embeds.
pub(crate) const LOCK: &str = "replica";

/// A replica of a `T` (a [`Core`]).
///
/// ```
/// use std::collections::BTreeMap;
/// use synchrony_tools::{Core, Effects, MapUpdate, Replica};
/// use synchrony_engine::{Delivery, GroupName, MsgId, ProcessId, ViewId};
/// let mut r: Replica<BTreeMap<String, u32>> = Replica::default();
/// let (order, payload) = Replica::<BTreeMap<String, u32>>::update(&MapUpdate::Put("x".into(), 1));
/// let d = Delivery { group: GroupName::new("g"), view: ViewId(1),
///     id: MsgId { sender: ProcessId::new("a", 1), counter: 0 }, order, query: false, payload };
/// r.on_message(&d, &mut Effects::default());
/// assert_eq!(r.value().get("x"), Some(&1));
/// // A joiner's copy is the snapshot.
/// let mut joiner: Replica<BTreeMap<String, u32>> = Replica::default();
/// joiner.restore(&r.snapshot()).unwrap();
/// assert_eq!(joiner.value(), r.value());
/// ```
#[derive(Debug, Default)]
pub struct Replica<T: Apply> {
    value: T,
    applied: u64,
    lock: Semaphores,
    rejected: u64,
}

impl<T: Apply> Replica<T> {
    /// The multicast of an update in total order.
    pub fn update(update: &T::Update) -> (Order, Bytes) {
        (Order::Total, encode(&Msg::<&T::Update>::Update(update)))
    }

    /// The multicast of an update by the holder of the tool's lock (causal order).
    pub fn update_locked(update: &T::Update) -> (Order, Bytes) {
        (Order::Causal, encode(&Msg::<&T::Update>::Update(update)))
    }

    /// The multicast that asks for the tool's lock.
    pub fn lock_request(free_on_failure: bool) -> (Order, Bytes) {
        let m = LockMsg::P { name: LOCK.into(), permits: 1, free_on_failure };
        (Order::Total, encode(&Msg::<()>::Lock(m)))
    }

    /// The multicast that gives the tool's lock back.
    pub fn lock_release(request: &MsgId) -> (Order, Bytes) {
        let m = LockMsg::V { name: LOCK.into(), request: request.clone() };
        (Order::Total, encode(&Msg::<()>::Lock(m)))
    }

    /// The local copy (a read: no message).
    pub fn value(&self) -> &T {
        &self.value
    }

    /// Updates applied so far.
    pub fn applied(&self) -> u64 {
        self.applied
    }

    /// The request holding the tool's lock, if any.
    pub fn lock_holder(&self) -> Option<MsgId> {
        self.lock.holders(LOCK).into_iter().next()
    }

    /// Messages that were not this tool's.
    pub fn rejected(&self) -> u64 {
        self.rejected + self.lock.rejected()
    }
}

/// A replica's whole state: what a checkpoint holds.
#[derive(Serialize, Deserialize)]
struct State<T> {
    value: T,
    applied: u64,
    lock: LockState,
}

/// What a joiner receives.
#[derive(Serialize, Deserialize)]
enum Transfer<T> {
    /// The provider's state, from memory.
    Full(State<T>),
    /// A logged provider's log as on its disk: its last checkpoint (a [`State`]'s bytes)
    /// and the updates after it, with the lock's state now (lock messages are not logged).
    Logged { checkpoint: Option<(u64, Vec<u8>)>, tail: Vec<(u64, Vec<u8>)>, lock: LockState },
}

fn lift(fx: &mut Effects<ReplicatedOutput>, inner: Effects<LockOutput>) {
    fx.effects.extend(inner.effects);
    fx.outputs.extend(inner.outputs.into_iter().map(ReplicatedOutput::Lock));
}

impl<T: Apply> Core for Replica<T> {
    type Output = ReplicatedOutput;

    fn on_view(&mut self, view: &GroupView, fx: &mut Effects<ReplicatedOutput>) {
        let mut inner = Effects::default();
        self.lock.view(view, &mut inner);
        lift(fx, inner);
        fx.output(ReplicatedOutput::View(view.clone()));
    }

    fn on_message(&mut self, msg: &Delivery, fx: &mut Effects<ReplicatedOutput>) {
        match decode::<Msg<T::Update>>(&msg.payload) {
            Ok(Msg::Update(u)) => {
                self.value.apply(&u);
                self.applied += 1;
                fx.output(ReplicatedOutput::Applied {
                    id: msg.id.clone(),
                    seq: self.applied,
                    update: msg.payload.clone(),
                });
            }
            Ok(Msg::Lock(m)) => {
                let mut inner = Effects::default();
                self.lock.handle(&msg.id, m, &mut inner);
                lift(fx, inner);
            }
            Err(_) => {
                self.rejected += 1;
                crate::not_understood(msg, fx);
            }
        }
    }

    fn snapshot(&self) -> Bytes {
        encode(&Transfer::Full(State { value: &self.value, applied: self.applied, lock: self.lock.snapshot_value() }))
    }

    fn restore(&mut self, state: &[u8]) -> Result<(), ToolError> {
        match decode::<Transfer<T>>(state)? {
            Transfer::Full(s) => self.load_state(s),
            Transfer::Logged { checkpoint, tail, lock } => {
                let mut r = Replica::<T>::default();
                r.replay(checkpoint, tail)?;
                self.value = r.value;
                self.applied = r.applied;
                self.lock.restore_value(lock);
            }
        }
        Ok(())
    }
}

impl<T: Apply> LockHost for Replica<T> {
    fn lock_msg(msg: LockMsg) -> Bytes {
        encode(&Msg::<()>::Lock(msg))
    }

    fn as_lock(o: ReplicatedOutput) -> Option<LockOutput> {
        match o {
            ReplicatedOutput::Lock(l) => Some(l),
            ReplicatedOutput::Applied { .. } | ReplicatedOutput::View(_) => None,
        }
    }
}

/// A log's contents: the last checkpoint (the last update it covers, the state) and the
/// updates after it (sequence number, bytes).
pub type LogContents = (Option<(u64, Vec<u8>)>, Vec<(u64, Vec<u8>)>);

/// Where a logged replica keeps its updates, on stable storage (`synchrony::tools`
/// implements it over the node's store).
pub trait UpdateLog: Send + 'static {
    /// Appends update `seq`; durable when this returns.
    fn append(&mut self, seq: u64, update: &[u8]) -> Result<(), String>;
    /// Stores a checkpoint of the state after update `seq`, replacing the whole log (after a
    /// state transfer the old log may hold updates of a past the group did not keep).
    fn checkpoint(&mut self, seq: u64, state: &[u8]) -> Result<(), String>;
    /// The last checkpoint and the updates after it.
    fn load(&self) -> Result<LogContents, String>;
    /// Records a view of the group this member installed.
    fn record_view(&mut self, view: &GroupView) -> Result<(), String>;
    /// The last view recorded (what recovery after a total failure reports).
    fn last_view(&self) -> Result<Option<GroupView>, String>;
}

impl<T: Apply> Replica<T> {
    /// A replica rebuilt from its log: the last checkpoint, then the updates after it.
    pub fn from_log(log: &dyn UpdateLog) -> Result<Self, ToolError> {
        let (checkpoint, updates) = log.load().map_err(ToolError::Refused)?;
        let mut r = Replica::<T>::default();
        r.replay(checkpoint, updates)?;
        Ok(r)
    }

    /// The whole state, as a checkpoint in a log keeps it.
    pub fn checkpoint_state(&self) -> Bytes {
        encode(&State { value: &self.value, applied: self.applied, lock: self.lock.snapshot_value() })
    }

    /// What a logged member hands a joiner: its log's last checkpoint and the updates after
    /// it, as on its disk (no new serialization of the state), with the lock's state now.
    /// If the log does not end at this replica's state (it could not be written), the
    /// state from memory instead.
    pub fn transfer_from_log(&self, log: &dyn UpdateLog) -> Bytes {
        match log.load() {
            Ok((checkpoint, tail)) => {
                let end = tail.last().map(|(s, _)| *s).or(checkpoint.as_ref().map(|(s, _)| *s)).unwrap_or(0);
                if end == self.applied {
                    return encode(&Transfer::<()>::Logged { checkpoint, tail, lock: self.lock.snapshot_value() });
                }
                tracing::warn!(log = end, applied = self.applied, "the log lags the replica: full state sent");
            }
            Err(e) => tracing::error!(error = %e, "the log could not be read: full state sent"),
        }
        self.snapshot()
    }

    fn load_state(&mut self, s: State<T>) {
        self.value = s.value;
        self.applied = s.applied;
        self.lock.restore_value(s.lock);
    }

    fn replay(&mut self, checkpoint: Option<(u64, Vec<u8>)>, tail: Vec<(u64, Vec<u8>)>) -> Result<(), ToolError> {
        if let Some((_, state)) = checkpoint {
            self.load_state(decode(&state)?);
        }
        for (seq, bytes) in tail {
            if let Msg::Update(u) = decode::<Msg<T::Update>>(&bytes)? {
                self.value.apply(&u);
                self.applied = seq;
            }
        }
        Ok(())
    }
}

/// One log written by the observer and read for joiners.
struct SharedLog<L>(Arc<Mutex<L>>);

impl<L> Clone for SharedLog<L> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<L: UpdateLog> SharedLog<L> {
    fn log(&self) -> std::sync::MutexGuard<'_, L> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl<L: UpdateLog> UpdateLog for SharedLog<L> {
    fn append(&mut self, seq: u64, update: &[u8]) -> Result<(), String> {
        self.log().append(seq, update)
    }

    fn checkpoint(&mut self, seq: u64, state: &[u8]) -> Result<(), String> {
        self.log().checkpoint(seq, state)
    }

    fn load(&self) -> Result<LogContents, String> {
        self.log().load()
    }

    fn record_view(&mut self, view: &GroupView) -> Result<(), String> {
        self.log().record_view(view)
    }

    fn last_view(&self) -> Result<Option<GroupView>, String> {
        self.log().last_view()
    }
}

/// The observer of a logged replica: it records every view and logs every applied update
/// before anyone is told of it, checkpointing (compacting the log) every `every` updates.
/// A view is recorded only once the log reflects the replica's state: after a state
/// transfer (the replica no longer at `last`, the last update logged) the whole state is
/// checkpointed first. Recovery reads a member's last view as "the members that may have
/// outlived this log", so a joiner must not record its first view before its state is on
/// disk: the host passes a joiner's first view to the observer only after the state loaded
/// ([`ToolHandle`](crate::ToolHandle) does). [`Replicated::start_logged`] uses it; a host
/// of a bare [`Replica`] (the simulator's) calls it with each output.
pub fn log_observer<T: Apply>(
    mut log: Box<dyn UpdateLog>,
    every: u64,
    mut last: u64,
) -> crate::channel::Observer<Replica<T>> {
    let mut since = 0;
    Box::new(move |core: &Replica<T>, o: &ReplicatedOutput| {
        if let ReplicatedOutput::View(v) = o {
            if core.applied() != last {
                match log.checkpoint(core.applied(), &core.checkpoint_state()) {
                    Ok(()) => last = core.applied(),
                    Err(e) => tracing::error!(error = %e, "a transferred state could not be logged"),
                }
            }
            if let Err(e) = log.record_view(v) {
                tracing::error!(view = %v.id, error = %e, "a view could not be recorded");
            }
            return;
        }
        let ReplicatedOutput::Applied { seq, update, .. } = o else { return };
        let result = if *seq == last + 1 && since < every {
            since += 1;
            log.append(*seq, update)
        } else {
            since = 0;
            log.checkpoint(*seq, &core.checkpoint_state())
        };
        match result {
            Ok(()) => last = *seq,
            Err(e) => tracing::error!(seq, error = %e, "an update could not be logged"),
        }
    })
}

/// Any replicated `T`, for async callers: local reads, updates that return once applied
/// here (so a read after `update` sees it), and the tool's lock.
///
/// ```no_run
/// # async fn f(group: impl synchrony_tools::GroupChannel) -> Result<(), synchrony_tools::ToolError> {
/// use serde::{Deserialize, Serialize};
/// use synchrony_tools::{Apply, Replicated};
/// #[derive(Default, Serialize, Deserialize)]
/// struct Counter(i64);
/// impl Apply for Counter {
///     type Update = i64;
///     fn apply(&mut self, by: &i64) { self.0 += by }
/// }
/// let counter: Replicated<Counter, _> = Replicated::start(group);
/// counter.update(&5).await?;
/// assert!(counter.read(|c| c.0) >= 5);
/// # Ok(()) }
/// ```
pub struct Replicated<T: Apply, S: GroupSend> {
    tool: ToolHandle<Replica<T>, S>,
}

impl<T: Apply, S: GroupSend> std::fmt::Debug for Replicated<T, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replicated").finish_non_exhaustive()
    }
}

impl<T: Apply, S: GroupSend> Clone for Replicated<T, S> {
    fn clone(&self) -> Self {
        Self { tool: self.tool.clone() }
    }
}

impl<T: Apply, S: GroupSend> Replicated<T, S> {
    crate::group_access!(tool);

    /// Replicates a `T` on `group` (a joiner receives the members' copy).
    pub fn start<G: GroupChannel<Sender = S>>(group: G) -> Self {
        Self { tool: ToolHandle::start(group, Replica::default(), None) }
    }

    /// Replicates a `T` on `group` in logging mode: every update is on `log` before
    /// `update` returns (or anyone is told of it), and the log is compacted into a
    /// checkpoint every `checkpoint_every` updates. The replica starts from the log: if
    /// this member starts the group (after a total failure, the last to fail does), that
    /// is the group's state; if the group runs, a state transfer replaces it. Joiners
    /// receive this member's checkpoint and log tail ([`Replica::transfer_from_log`]).
    pub fn start_logged<G: GroupChannel<Sender = S>>(
        group: G,
        log: impl UpdateLog,
        checkpoint_every: u64,
    ) -> Result<Self, ToolError> {
        let core = Replica::<T>::from_log(&log)?;
        let last = core.applied();
        let log = SharedLog(Arc::new(Mutex::new(log)));
        let observer = log_observer::<T>(Box::new(log.clone()), checkpoint_every.max(1), last);
        let source: crate::StateSource<Replica<T>> = Box::new(move |core: &Replica<T>| core.transfer_from_log(&log));
        Ok(Self { tool: ToolHandle::start_observed(group, core, None, Some(observer), Some(source)) })
    }

    /// Reads the local copy.
    pub fn read<R>(&self, f: impl FnOnce(&T) -> R) -> R {
        self.tool.read(|r| f(r.value()))
    }

    /// Updates every copy (total order); returns once applied here, with its sequence
    /// number (the same at every member).
    pub async fn update(&self, update: &T::Update) -> Result<u64, ToolError> {
        let (order, payload) = Replica::<T>::update(update);
        applied(self.tool.send_and_wait(order, payload).await?)
    }

    /// Updates in causal order, as the holder of the tool's lock.
    pub async fn update_locked(&self, _lock: &Permit, update: &T::Update) -> Result<u64, ToolError> {
        let (order, payload) = Replica::<T>::update_locked(update);
        applied(self.tool.send_and_wait(order, payload).await?)
    }

    /// Takes the tool's lock (released if this process fails), waiting at most `timeout`.
    pub async fn lock(&self, timeout: Option<Duration>) -> Result<Permit, ToolError> {
        acquire_with(&self.tool, LOCK, 1, true, timeout).await
    }

    /// Gives the tool's lock back.
    pub async fn unlock(&self, permit: Permit) -> Result<(), ToolError> {
        release_with(&self.tool, permit).await
    }

    /// Updates applied here so far.
    pub fn applied(&self) -> u64 {
        self.tool.read(|r| r.applied())
    }

    /// Returns once every update this member made is held by every member: after it, the
    /// updates survive any failure that leaves a member (do this before an external action
    /// such as answering a client).
    pub async fn flush(&self) -> Result<(), ToolError> {
        self.tool.sender().flush().await.map(|_| ())
    }
}

fn applied(o: ReplicatedOutput) -> Result<u64, ToolError> {
    match o {
        ReplicatedOutput::Applied { seq, .. } => Ok(seq),
        ReplicatedOutput::Lock(_) | ReplicatedOutput::View(_) => Err(ToolError::Refused("not an update".into())),
    }
}

/// A replicated `BTreeMap<K, V>`: local reads, updates in total order (or causal under the
/// lock), state transfer to joiners.
///
/// ```no_run
/// # async fn f(group: impl synchrony_tools::GroupChannel) -> Result<(), synchrony_tools::ToolError> {
/// let prices: synchrony_tools::ReplicatedMap<String, f64, _> = synchrony_tools::ReplicatedMap::start(group);
/// prices.put("ACME".into(), 101.5).await?;
/// assert_eq!(prices.get(&"ACME".to_string()), Some(101.5)); // local: no message
/// # Ok(()) }
/// ```
pub struct ReplicatedMap<K, V, S: GroupSend>
where
    BTreeMap<K, V>: Apply<Update = MapUpdate<K, V>>,
{
    inner: Replicated<BTreeMap<K, V>, S>,
}

impl<K, V, S: GroupSend> std::fmt::Debug for ReplicatedMap<K, V, S>
where
    BTreeMap<K, V>: Apply<Update = MapUpdate<K, V>>,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplicatedMap").finish_non_exhaustive()
    }
}

impl<K, V, S: GroupSend> From<Replicated<BTreeMap<K, V>, S>> for ReplicatedMap<K, V, S>
where
    BTreeMap<K, V>: Apply<Update = MapUpdate<K, V>>,
{
    fn from(inner: Replicated<BTreeMap<K, V>, S>) -> Self {
        Self { inner }
    }
}

impl<K, V, S: GroupSend> Clone for ReplicatedMap<K, V, S>
where
    BTreeMap<K, V>: Apply<Update = MapUpdate<K, V>>,
{
    fn clone(&self) -> Self {
        Self { inner: self.inner.clone() }
    }
}

impl<K, V, S: GroupSend> ReplicatedMap<K, V, S>
where
    BTreeMap<K, V>: Apply<Update = MapUpdate<K, V>>,
    K: Ord + Clone,
    V: Clone,
{
    crate::group_access!(inner);

    /// Replicates a map on `group`.
    pub fn start<G: GroupChannel<Sender = S>>(group: G) -> Self {
        Self { inner: Replicated::start(group) }
    }

    /// Replicates a map on `group` in logging mode (see [`Replicated::start_logged`]).
    pub fn start_logged<G: GroupChannel<Sender = S>>(
        group: G,
        log: impl UpdateLog,
        checkpoint_every: u64,
    ) -> Result<Self, ToolError> {
        Ok(Self { inner: Replicated::start_logged(group, log, checkpoint_every)? })
    }

    /// The local value of `key`.
    pub fn get(&self, key: &K) -> Option<V> {
        self.inner.read(|m| m.get(key).cloned())
    }

    /// Entries in the local copy.
    pub fn len(&self) -> usize {
        self.inner.read(|m| m.len())
    }

    /// Whether the local copy is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A copy of the whole local map.
    pub fn to_map(&self) -> BTreeMap<K, V> {
        self.inner.read(|m| m.clone())
    }

    /// Sets `key` at every member; returns once applied here.
    pub async fn put(&self, key: K, value: V) -> Result<u64, ToolError> {
        self.inner.update(&MapUpdate::Put(key, value)).await
    }

    /// Removes `key` at every member; returns once applied here.
    pub async fn remove(&self, key: K) -> Result<u64, ToolError> {
        self.inner.update(&MapUpdate::Remove(key)).await
    }

    /// Sets `key` in causal order, as the holder of the map's lock.
    pub async fn put_locked(&self, lock: &Permit, key: K, value: V) -> Result<u64, ToolError> {
        self.inner.update_locked(lock, &MapUpdate::Put(key, value)).await
    }

    /// Takes the map's lock.
    pub async fn lock(&self, timeout: Option<Duration>) -> Result<Permit, ToolError> {
        self.inner.lock(timeout).await
    }

    /// Gives the map's lock back.
    pub async fn unlock(&self, permit: Permit) -> Result<(), ToolError> {
        self.inner.unlock(permit).await
    }

    /// Updates applied here so far.
    pub fn applied(&self) -> u64 {
        self.inner.applied()
    }

    /// See [`Replicated::flush`].
    pub async fn flush(&self) -> Result<(), ToolError> {
        self.inner.flush().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use synchrony_engine::{GroupName, ProcessId, ViewId};

    #[derive(Default)]
    struct MemLog {
        checkpoint: Option<(u64, Vec<u8>)>,
        log: Vec<(u64, Vec<u8>)>,
        view: Option<GroupView>,
    }

    impl UpdateLog for MemLog {
        fn append(&mut self, seq: u64, update: &[u8]) -> Result<(), String> {
            self.log.push((seq, update.to_vec()));
            Ok(())
        }
        fn checkpoint(&mut self, seq: u64, state: &[u8]) -> Result<(), String> {
            self.checkpoint = Some((seq, state.to_vec()));
            self.log.clear();
            Ok(())
        }
        fn load(&self) -> Result<LogContents, String> {
            Ok((self.checkpoint.clone(), self.log.clone()))
        }
        fn record_view(&mut self, view: &GroupView) -> Result<(), String> {
            self.view = Some(view.clone());
            Ok(())
        }
        fn last_view(&self) -> Result<Option<GroupView>, String> {
            Ok(self.view.clone())
        }
    }

    type Map = BTreeMap<String, u64>;

    #[test]
    fn a_joiner_gets_the_checkpoint_and_log_tail_and_logs_it_before_its_view() {
        let log = SharedLog(Arc::new(Mutex::new(MemLog::default())));
        let mut observer = log_observer::<Map>(Box::new(log.clone()), 8, 0);
        let mut r = Replica::<Map>::default();
        for k in 0..21u64 {
            let (order, payload) = Replica::<Map>::update(&MapUpdate::Put(format!("k{}", k % 5), k));
            let id = MsgId { sender: ProcessId::new("a", 1), counter: k };
            let d = Delivery { group: GroupName::new("g"), view: ViewId(1), id, order, query: false, payload };
            let mut fx = Effects::default();
            r.on_message(&d, &mut fx);
            for o in &fx.outputs {
                observer(&r, o);
            }
        }
        let (checkpoint, tail) = log.load().expect("loads");
        assert!(checkpoint.is_some() && !tail.is_empty(), "both a checkpoint and a tail: {checkpoint:?} {tail:?}");
        let sent = r.transfer_from_log(&log);
        assert!(matches!(decode::<Transfer<Map>>(&sent), Ok(Transfer::Logged { .. })), "the log went as it is");
        // The joiner: its first view reaches its observer only after the state.
        let mut joiner = Replica::<Map>::default();
        joiner.restore(&sent).expect("loads");
        assert_eq!((joiner.value(), joiner.applied()), (r.value(), r.applied()));
        let jlog = SharedLog(Arc::new(Mutex::new(MemLog::default())));
        let mut jobs = log_observer::<Map>(Box::new(jlog.clone()), 8, 0);
        let view = GroupView { id: ViewId(2), members: vec![ProcessId::new("a", 1), ProcessId::new("b", 1)] };
        jobs(&joiner, &ReplicatedOutput::View(view.clone()));
        assert_eq!(jlog.last_view().expect("view"), Some(view));
        let back = Replica::<Map>::from_log(&jlog).expect("its log loads");
        assert_eq!((back.value(), back.applied()), (r.value(), r.applied()), "the state was on disk with the view");
    }
}
