//! The Isis tools on this crate's groups: [`synchrony_tools`], with its channel traits
//! implemented for [`Group`] and [`GroupSender`], and type aliases that fill in the sender.
//!
//! ```
//! use synchrony::{tools::ReplicatedMap, Config, JoinOptions, Node};
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> anyhow::Result<()> {
//! let node = Node::start(Config::new("n1", "127.0.0.1:0")).await?;
//! let group = node.join("inventory", JoinOptions::default()).await?;
//! let stock: ReplicatedMap<String, u32> = ReplicatedMap::start(group);
//! stock.put("bolts".into(), 40).await?; // returns once applied here: a read sees it
//! assert_eq!(stock.get(&"bolts".to_string()), Some(40));
//! let lock = stock.lock(None).await?; // the map's lock: updates in causal order
//! stock.put_locked(&lock, "bolts".into(), 39).await?;
//! stock.unlock(lock).await?;
//! node.shutdown().await?;
//! # Ok(()) }
//! ```

use crate::{Event, Group, GroupSendError, GroupSender};
use bytes::Bytes;
use synchrony_engine::{MsgId, Order, ProcessId, QueryOutcome, Replies, SendError, ViewId};
pub use synchrony_tools::*;

/// A replicated map on a [`Group`].
pub type ReplicatedMap<K, V> = synchrony_tools::ReplicatedMap<K, V, GroupSender>;
/// Any replicated value on a [`Group`].
pub type Replicated<T> = synchrony_tools::Replicated<T, GroupSender>;
/// Semaphores on a [`Group`].
pub type Locks = synchrony_tools::Locks<GroupSender>;
/// A configuration on a [`Group`].
pub type ConfigHandle = synchrony_tools::ConfigHandle<GroupSender>;
/// News over channel [`Group`]s.
pub type NewsService = synchrony_tools::NewsService<GroupSender>;
/// Parallel queries on a [`Group`].
pub type ParallelQueries<S> = synchrony_tools::ParallelQueries<S, GroupSender>;
/// Coordinator-cohort on a [`Group`].
pub type CohortService<H> = synchrony_tools::CohortService<H, GroupSender>;

/// A logged group's update log in the node's store ([`synchrony_storage::Store`]), for
/// [`ReplicatedMap::start_logged`] and [`Replicated::start_logged`].
#[derive(Debug, Clone)]
pub struct StoreLog {
    store: std::sync::Arc<synchrony_storage::Store>,
    group: crate::GroupName,
}

impl StoreLog {
    /// The log of `group` in `store`.
    pub fn new(store: std::sync::Arc<synchrony_storage::Store>, group: impl Into<crate::GroupName>) -> Self {
        Self { store, group: group.into() }
    }
}

impl UpdateLog for StoreLog {
    fn append(&mut self, seq: u64, update: &[u8]) -> Result<(), String> {
        self.store.append(&self.group, seq, update).map_err(|e| e.to_string())
    }

    fn checkpoint(&mut self, seq: u64, state: &[u8]) -> Result<(), String> {
        self.store.checkpoint(&self.group, seq, state).map_err(|e| e.to_string())
    }

    fn load(&self) -> Result<LogContents, String> {
        let r = self.store.load(&self.group).map_err(|e| e.to_string())?;
        Ok((r.checkpoint, r.log))
    }

    fn record_view(&mut self, view: &synchrony_engine::GroupView) -> Result<(), String> {
        self.store.record_view(&self.group, view).map_err(|e| e.to_string())
    }

    fn last_view(&self) -> Result<Option<synchrony_engine::GroupView>, String> {
        self.store.views().map(|mut v| v.remove(&self.group)).map_err(|e| e.to_string())
    }
}

fn refused(e: GroupSendError) -> ToolError {
    match e {
        // Stopped or shut down: the group is gone for this node.
        GroupSendError::NotMember(_) | GroupSendError::Send(SendError::Stopped) => ToolError::Closed,
        GroupSendError::Send(e) => ToolError::Send(e),
        other => ToolError::Refused(other.to_string()),
    }
}

impl GroupSend for GroupSender {
    async fn send(&self, order: Order, payload: Bytes) -> Result<MsgId, ToolError> {
        GroupSender::send(self, order, payload).await.map_err(refused)
    }

    async fn query(&self, order: Order, payload: Bytes, replies: Replies) -> Result<QueryOutcome, ToolError> {
        GroupSender::query(self, order, payload, replies).await.map_err(refused)
    }

    async fn reply(&self, query: MsgId, payload: Option<Bytes>) {
        // A stopped node ends the tool's input too: nothing more to do here.
        let _ = self.runtime().reply(query, payload).await;
    }

    async fn provide_state(&self, view: ViewId, state: Bytes) {
        let _ = self.runtime().provide_state(self.name().clone(), view, state).await;
    }

    async fn flush(&self) -> Result<ViewId, ToolError> {
        GroupSender::flush(self).await.map_err(|e| ToolError::Refused(e.to_string()))
    }
}

impl GroupChannel for Group {
    type Sender = GroupSender;

    fn me(&self) -> ProcessId {
        self.sender().runtime().me().clone()
    }

    fn sender(&self) -> GroupSender {
        Group::sender(self)
    }

    async fn next_input(&mut self) -> Option<GroupInput> {
        Some(match self.next_event().await? {
            Event::View(v) => GroupInput::View(v),
            Event::Message(m) => GroupInput::Message(m.into_delivery()),
            // The tool answers it (`GroupSend::provide_state`) before its next input.
            Event::StateRequest(r) => GroupInput::StateRequest(r.handed_to_tool()),
            Event::State(s) => GroupInput::State(s),
            // The tool's state belongs to this incarnation's membership: it ends with it.
            // (A tool joins without a state stream: a streamed state is never its own.)
            Event::Left | Event::Partitioned(_) | Event::JoinRefused | Event::StateStreamed { .. } => return None,
        })
    }

    async fn leave(self) -> Result<(), ToolError> {
        match Group::leave(self).await {
            Ok(()) => Ok(()),
            // Gone already (stopped, or not a member any more): nothing to leave.
            Err(synchrony_engine::MembershipError::Stopped | synchrony_engine::MembershipError::Redundant(_)) => Ok(()),
            Err(e) => Err(ToolError::Refused(e.to_string())),
        }
    }
}

/// How a logged group came back when this node restarted (see [`recover`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Recovery {
    /// The group was running: this node joined it and got its state by state transfer.
    Rejoined,
    /// Every member had failed, and this node's log reflected the most updates (it failed
    /// last): the group restarted from it.
    Restarted {
        /// Updates in the restarted state.
        applied: u64,
    },
    /// Every member had failed; the group restarted from `from`'s log and this node joined
    /// it (its own log is replaced by the group's state).
    Followed {
        /// The node the group restarted from.
        from: String,
    },
}

fn join_error(e: crate::JoinError) -> ToolError {
    ToolError::Refused(e.to_string())
}

/// The recovery manager: brings a logged replicated `T` of `group` back when this node
/// restarts. If the group is running, the node joins it (state transfer). If every member
/// failed, the restarting members report their logs (how many updates, the last view they
/// installed) in a recovery group whose state carries the reports to late restarters; the
/// group restarts from the log with the most updates once every member of that log's last
/// view has reported (Skeen's rule: any of them may have failed later and logged more; see
/// [`RecoveryCore`]), and the others join it.
///
/// With `give_up_after`, a member still missing then is taken as lost for good: the group
/// restarts from the best log of those that came back (updates only the missing ones
/// logged are lost). Without it, recovery waits for them. If the group fails again while
/// this node joins it, the join is refused and `recover` returns the error: call it again.
pub async fn recover<T: Apply>(
    node: &crate::Node,
    group: &str,
    store: std::sync::Arc<synchrony_storage::Store>,
    give_up_after: Option<std::time::Duration>,
    checkpoint_every: u64,
) -> Result<(Replicated<T>, Recovery), ToolError> {
    use crate::JoinOptions;
    let log = || StoreLog::new(store.clone(), group);
    let running = || async { node.status().await.is_ok_and(|s| s.known.iter().any(|g| g.name == group)) };
    let start = |how: Recovery| async move {
        // Only the restarter may found the group: the others join it running, or fail.
        let options = match how {
            Recovery::Restarted { .. } => JoinOptions::default(),
            _ => JoinOptions::default().only_if_running(),
        };
        let g = node.join(group, options).await.map_err(join_error)?;
        Ok::<_, ToolError>((Replicated::start_logged(g, log(), checkpoint_every)?, how))
    };
    if running().await {
        return start(Recovery::Rejoined).await;
    }
    let me = node.id().name.to_string();
    let applied = Replica::<T>::from_log(&log())?.applied();
    let last_view = log().last_view().map_err(ToolError::Refused)?;
    let mut r = node.join(format!("{group}.recovery"), JoinOptions::default()).await.map_err(join_error)?;
    let report = RecoveryMsg::Report(RecoveryReport::new(me.clone(), applied, last_view.as_ref()));
    let send = |r: &crate::Group, m: RecoveryMsg| {
        let sender = r.sender();
        async move { sender.send(crate::Order::Total, m.encode()).await.map(|_| ()).map_err(refused) }
    };
    send(&r, report).await?;
    let mut core = RecoveryCore::default();
    let started = tokio::time::Instant::now();
    let mut said_missing: Vec<String> = Vec::new();
    let decision = loop {
        if running().await && core.ready().is_none() {
            break RecoveryDecision::Join { from: String::new() };
        }
        let late = give_up_after.is_some_and(|g| started.elapsed() >= g);
        match if late { core.decide_without_missing(&me) } else { core.decide(&me) } {
            RecoveryDecision::Wait { missing } => {
                if missing != said_missing {
                    tracing::warn!(group, ?missing, "waiting for members that may have failed last");
                    said_missing = missing;
                }
            }
            d @ (RecoveryDecision::Restart | RecoveryDecision::Join { .. }) => break d,
            RecoveryDecision::AwaitReady { .. } => {}
        }
        let tick = tokio::time::Instant::now() + std::time::Duration::from_millis(200);
        match tokio::time::timeout_at(tick, r.next_event()).await {
            Ok(Some(crate::Event::Message(m))) => {
                if let Ok(msg) = m.value::<RecoveryMsg>() {
                    core.handle(msg);
                }
            }
            Ok(Some(crate::Event::StateRequest(req))) => {
                req.provide(core.snapshot()).await.map_err(|_| ToolError::Closed)?
            }
            Ok(Some(crate::Event::State(s))) => core.restore(&s)?,
            Ok(Some(_)) | Err(_) => {}
            Ok(None) => return Err(ToolError::Closed),
        }
    };
    let joined = match decision {
        RecoveryDecision::Restart if !running().await => match start(Recovery::Restarted { applied }).await {
            Ok(out) => send(&r, RecoveryMsg::Ready { name: me.clone() }).await.map(|()| out),
            Err(e) => Err(e),
        },
        RecoveryDecision::Join { from } if !from.is_empty() && from != me => start(Recovery::Followed { from }).await,
        _ => start(Recovery::Rejoined).await,
    };
    let outcome = match joined {
        Ok(o) => o,
        Err(e) => {
            // The group died while this node joined it (a refused join): leave the recovery
            // group, so that recovering again starts clean.
            let _ = r.leave().await;
            return Err(e);
        }
    };
    // Stay in the recovery group a while, serving its state, so that a late restarter
    // learns who restarted (it then sees the group running anyway).
    tokio::spawn(async move {
        let until = tokio::time::Instant::now() + std::time::Duration::from_secs(2);
        while let Ok(Some(ev)) = tokio::time::timeout_at(until, r.next_event()).await {
            match ev {
                crate::Event::StateRequest(req) => {
                    let _ = req.provide(core.snapshot()).await; // a stopped node ends the loop
                }
                crate::Event::Message(m) => {
                    if let Ok(msg) = m.value::<RecoveryMsg>() {
                        core.handle(msg);
                    }
                }
                _ => {}
            }
        }
        let _ = r.leave().await;
    });
    Ok(outcome)
}
