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
//! node.shutdown().await;
//! # Ok(()) }
//! ```

use crate::{Event, Group, GroupSendError, GroupSender};
use bytes::Bytes;
use synchrony_engine::{MsgId, Order, ProcessId, QueryOutcome, Replies, ViewId};
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
}

fn refused(e: GroupSendError) -> ToolError {
    match e {
        GroupSendError::NotMember(_) => ToolError::Closed,
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
        self.runtime().reply(query, payload).await;
    }

    async fn provide_state(&self, view: ViewId, state: Bytes) {
        self.runtime().provide_state(self.name().clone(), view, state).await;
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
        loop {
            return Some(match self.next_event().await? {
                Event::View(v) => GroupInput::View(v),
                Event::Message(m) => GroupInput::Message(m.into_delivery()),
                Event::StateRequest(r) => GroupInput::StateRequest(r.view()),
                Event::State(s) => GroupInput::State(s),
                // The tool's state belongs to this incarnation's membership: it ends with it.
                Event::Left | Event::Partitioned(_) => return None,
                #[allow(unreachable_patterns)]
                _ => continue,
            });
        }
    }
}
