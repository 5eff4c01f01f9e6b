//! # synchrony
//!
//! Virtual synchrony for Rust, in the line of Isis, Horus, Ensemble, Spread, JGroups and
//! Derecho. Processes join named groups and multicast to a group without knowing who is in
//! it; every member sees the same events — messages and membership views — in the same
//! order, so a group of processes acts like one object that does not fail.
//!
//! Start a [`Node`] from a [`Config`], [`Node::join`] a group to get a [`Group`] handle,
//! [`Group::send`] with an [`Order`], and read [`Event`]s with [`Group::next_event`].
//!
//! ```
//! use synchrony::{Config, Event, JoinOptions, Node, Order};
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> anyhow::Result<()> {
//! // A node with no contacts founds a cluster of its own.
//! let node = Node::start(Config::new("n1", "127.0.0.1:0")).await?;
//! let mut chat = node.join("chat", JoinOptions::default()).await?;
//! chat.send(Order::Total, "hello").await?;
//! loop {
//!     match chat.next_event().await {
//!         Some(Event::Message(m)) => {
//!             assert_eq!(&m.payload()[..], b"hello");
//!             break;
//!         }
//!         Some(_) => continue, // the first view comes first
//!         None => anyhow::bail!("the node stopped"),
//!     }
//! }
//! node.shutdown().await?;
//! # Ok(()) }
//! ```
//!
//! ## Many groups
//! Groups are light: one per replicated object is fine. [`Node::join_many`] joins thousands
//! with one call (one membership round), and [`Node::join_set`] does so with every group's
//! events on one stream (a [`GroupSet`]: one task reads them all, in batches), and a process's work per message or timer does
//! not grow with the groups it is in but idle; [`Config`]'s `engine.max_groups` bounds
//! them (100,000 by default). A process with thousands of groups allocates a lot of
//! small, long-lived objects: the `synchrony` binary uses mimalloc as its global
//! allocator for that reason (glibc's malloc made messages beside 10,000 idle groups 27%
//! slower), and an application with as many groups may want to do the same.
//!
//! ## Order classes
//! - [`Order::Unordered`], [`Order::Fifo`]: reliable, per-sender order for FIFO.
//! - [`Order::Causal`]: a message comes after every message its sender had delivered.
//! - [`Order::Total`]: one order for all members.
//! - [`Order::Safe`]: total, and delivered only once every member has it.
//! - [`Order::Gbcast`]: ordered with view changes and every other message.
//!
//! ## Tools
//! [`tools`] has the Isis tools on top of groups: replicated data, locks, coordinator-cohort,
//! news, configuration and parallel query.

mod group;
mod group_set;
mod node;
mod state_writer;
pub mod tools;

pub use group::{
    Event, Group, GroupSendError, GroupSender, JoinError, Message, ReplyError, StateRequest, StateWriter, ValueReplies,
};
pub use group_set::GroupSet;
pub use node::{JoinOptions, Node, NodeEvent};
pub use synchrony_engine::{
    Delivery, FlushError, GroupName, GroupView, MembershipError, MsgId, Order, PartitionReason, ProcessId,
    QueryOutcome, Replies, SendError, ViewId,
};
pub use synchrony_runtime::{
    Config, ConfigError, NodeStatus, NodeStopped, StartError, StatePart, StateStream, StateWriteError, TRACE_DIR_ENV,
};
/// Stable storage: a node's views, checkpoints and update logs ([`synchrony_storage`]).
pub use synchrony_storage as storage;

/// Encodes a value the way [`Group::send_value`] does (postcard).
pub fn encode<T: serde::Serialize>(value: &T) -> Result<bytes::Bytes, postcard::Error> {
    postcard::to_allocvec(value).map(bytes::Bytes::from)
}

/// Decodes what [`encode`] made.
pub fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, postcard::Error> {
    postcard::from_bytes(bytes)
}
