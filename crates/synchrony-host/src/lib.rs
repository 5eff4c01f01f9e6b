//! # synchrony-host
//!
//! The node's policy above the sans-IO [`synchrony_engine::Engine`], sans-IO itself: a
//! [`Host`] owns the engine and decides what the application and the network wait on (flow
//! control, parked commands and joins, the groups a node wants across incarnations, event
//! batches for each consumer and their backlogs, the join and message verifiers, the
//! waiters of flushes, queries and state writes, and the trace). Inputs are
//! [`Command`]s with the [`WaiterId`] their answer goes to, frames and timer expiries, and
//! room at a consumer; outputs are transmits, [`Output`]s in order and trace events. No
//! tokio, no clock, no thread: `synchrony-runtime` hosts it over TCP, and the simulator
//! hosts the same code for every simulated process.

mod command;
mod events;
mod exec;
mod host;
mod outbox;
mod react;
mod state;

pub use command::{Batch, Command, ConsumerId, HostConfig, HostCounters, JoinInto, Output, Reply, WaiterId};
pub use events::{GroupEvent, MessageVerifier, NodeEvent, Verifiers};
pub use host::{Host, Pumped};
pub use state::{Digest, Piece, StateWriteError};
