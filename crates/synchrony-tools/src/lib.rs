//! # synchrony-tools
//!
//! The tools of the Isis Toolkit, built on synchrony process groups: what virtual synchrony
//! makes easy.
//!
//! - [`Replicated`] and [`ReplicatedMap`]: replicated data with local reads, updates in
//!   total order (or causal order under the tool's lock), state transfer to joiners.
//! - [`Semaphores`] and [`Locks`]: named counting semaphores with FIFO queueing, timeouts, and release on
//!   the holder's failure.
//! - [`Cohort`] and [`CohortService`]: coordinator-cohort, one member executes a request while the others watch
//!   and take over.
//! - [`News`] and [`NewsService`]: publish-subscribe on subjects mapped onto a bounded number of groups.
//! - [`Configuration`] and [`ConfigHandle`]: a replicated configuration ordered with every message and view.
//! - [`ParallelQuery`] and [`ParallelQueries`]: a query answered by every member for its share of the rows.
//!
//! ## How a tool is built
//! Each tool has a pure core (a [`Core`]: no I/O, no clock) that reads one group's views and
//! messages and asks for [`Effect`]s (multicasts, replies). The same core runs in the
//! deterministic simulator, where the tool's invariants are checked under faults, and under
//! a thin async wrapper ([`ToolHandle`]) over any [`GroupChannel`]: the `synchrony` crate
//! implements it for its `Group`.

mod channel;
mod cohort;
mod config;
mod lock;
mod news;
mod pquery;
mod recovery;
mod replicated;

pub use channel::{GroupChannel, GroupInput, GroupSend, Keyed, Observer, StateSource, ToolError, ToolHandle};
pub use cohort::{call as cohort_call, Cohort, CohortOutput, CohortService, Handler};
pub use config::{ConfigHandle, ConfigOutput, Configuration};
pub use lock::{Acquire, LockOutput, Locks, Permit, Semaphores};
pub use news::{channel_group, channel_of, matches, News, NewsOutput, NewsService, Posting};
pub use pquery::{combine, ParallelQueries, ParallelQuery, QueryAnswer, QueryProgress, Share};
pub use recovery::{RecoveryCore, RecoveryDecision, RecoveryMsg, RecoveryReport};
pub use replicated::{
    log_observer, Apply, LogContents, MapUpdate, Replica, Replicated, ReplicatedMap, ReplicatedOutput, UpdateLog,
};

use bytes::Bytes;
use synchrony_engine::{Delivery, GroupView, MsgId, Order, QueryOutcome, Replies};

/// What a core asks its host to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Multicast to the group.
    Send {
        /// The order class.
        order: Order,
        /// The bytes.
        payload: Bytes,
    },
    /// A group RPC; the outcome comes back through [`Core::on_query_done`].
    Query {
        /// The order class.
        order: Order,
        /// The bytes.
        payload: Bytes,
        /// How many replies to wait for.
        replies: Replies,
    },
    /// Answer a delivered query (`None`: a null reply).
    Reply {
        /// The query.
        query: MsgId,
        /// The answer.
        payload: Option<Bytes>,
    },
}

/// What a core produced while handling one input: effects for the group, and outputs for
/// the tool's local users.
#[derive(Debug)]
pub struct Effects<O> {
    /// Multicasts and replies, in the order they must be made.
    pub effects: Vec<Effect>,
    /// What the tool tells its users (a lock granted, a posting ...).
    pub outputs: Vec<O>,
}

impl<O> Default for Effects<O> {
    fn default() -> Self {
        Self { effects: Vec::new(), outputs: Vec::new() }
    }
}

impl<O> Effects<O> {
    /// Asks for a multicast.
    pub fn send(&mut self, order: Order, payload: Bytes) {
        self.effects.push(Effect::Send { order, payload });
    }

    /// Asks to answer a query.
    pub fn reply(&mut self, query: MsgId, payload: Option<Bytes>) {
        self.effects.push(Effect::Reply { query, payload });
    }

    /// Tells the tool's users.
    pub fn output(&mut self, o: O) {
        self.outputs.push(o);
    }
}

/// A tool's pure state machine over one group: the same inputs in the same order give the
/// same state and effects at every member (virtual synchrony does the rest).
pub trait Core: Send + 'static {
    /// What the tool tells its local users.
    type Output: Send + std::fmt::Debug + 'static;

    /// A new view of the group.
    fn on_view(&mut self, view: &GroupView, fx: &mut Effects<Self::Output>);

    /// A delivered message. Bytes that do not decode as this tool's message are ignored
    /// (and counted by the caller): they cannot come from a correct member of the tool; if
    /// they came as a query, the core answers it with a null reply, so its caller is not
    /// left waiting.
    fn on_message(&mut self, msg: &Delivery, fx: &mut Effects<Self::Output>);

    /// A query this process asked finished.
    fn on_query_done(&mut self, outcome: &QueryOutcome, fx: &mut Effects<Self::Output>) {
        let _ = (outcome, fx);
    }

    /// The state for a joiner.
    fn snapshot(&self) -> Bytes;

    /// Loads a joiner's state (replaces whatever the core had). It comes after
    /// [`Core::on_view`] of the joiner's first view, and is the group's state just before
    /// that view: a core whose state depends on views applies the view again on top.
    fn restore(&mut self, state: &[u8]) -> Result<(), ToolError>;
}

pub use synchrony_engine::fnv1a;

/// The group access every tool wrapper gives: waiting for the group's state, and its view.
macro_rules! group_access {
    ($($tool:ident).+) => {
        /// Returns once this member has the group's state: at once for the member that
        /// founded the group, once the state transfer is done for a joiner (a read before
        /// it sees an empty tool). `ToolError::Closed` if the group ended before.
        pub async fn ready(&self) -> Result<(), crate::ToolError> {
            self.$($tool).+.ready().await
        }

        /// The group's view as this member last saw it (`None` before the first).
        pub fn view(&self) -> Option<synchrony_engine::GroupView> {
            self.$($tool).+.view()
        }

        /// Stops the tool and leaves its group; returns once the leave is done (at once
        /// if the group had ended). Every clone then answers `ToolError::Closed`.
        /// Dropping the last clone of the tool leaves the group too, in the background.
        pub async fn leave(&self) -> Result<(), crate::ToolError> {
            self.$($tool).+.leave().await
        }
    };
}
pub(crate) use group_access;

/// A message whose bytes this tool does not understand: if it is a query, every member
/// answers it with a null reply, so its caller learns at once that nobody will answer
/// instead of waiting forever.
pub(crate) fn not_understood<O>(msg: &Delivery, fx: &mut Effects<O>) {
    if msg.query {
        fx.reply(msg.id.clone(), None);
    }
}

/// Encodes a tool message.
pub(crate) fn encode<T: serde::Serialize>(value: &T) -> Bytes {
    // Encoding our own types into a Vec cannot fail.
    Bytes::from(postcard::to_allocvec(value).expect("encodable"))
}

/// Decodes a tool message or state.
pub(crate) fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ToolError> {
    postcard::from_bytes(bytes).map_err(|e| ToolError::Decode(e.to_string()))
}
