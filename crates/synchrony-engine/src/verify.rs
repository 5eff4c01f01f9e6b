//! Join verification: a group member may install a callback that admits or refuses
//! processes asking to join the group (Isis's protection tools).
//!
//! Verdicts travel in the members' requests: the leader admits a join once every member of
//! the group that verifies joins has admitted it, and refuses it (the joiner gets
//! [`crate::Event::JoinRefused`]) as soon as one has refused it.

use crate::id::ProcessId;
use std::sync::Arc;

/// Decides whether a process may join a group. It should be deterministic and cheap: it
/// runs in the engine, once per member that verifies and joiner.
pub type JoinVerifier = Arc<dyn Fn(&ProcessId) -> bool + Send + Sync>;
