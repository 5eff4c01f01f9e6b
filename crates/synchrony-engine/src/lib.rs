//! # synchrony-engine
//!
//! The sans-IO heart of synchrony: one [`Engine`] per process implements virtual
//! synchrony (Birman and Joseph, SOSP 1987) — process membership, named process groups,
//! multicast in six order classes, the flush at every view change, state transfer and
//! group RPC — without owning a socket, a thread, a clock or unseeded randomness.
//!
//! ## The handle/poll contract
//!
//! Inputs come in through `handle_*` and the commands ([`Engine::join`],
//! [`Engine::send`], [`Engine::query`], [`Engine::flush`], ...), each with the current
//! [`Instant`]. After every input, drain [`Engine::poll_transmit`] (frames to peers), then
//! [`Engine::poll_event`] (views, deliveries, state requests ...), then sleep until
//! [`Engine::poll_timeout`] and call [`Engine::handle_timeout`]. The same engine runs under
//! the tokio runtime and under the deterministic simulator.
//!
//! ```
//! use synchrony_engine::{Config, Engine, Event, GroupName, Instant, Order, ProcessId};
//! let now = Instant::ZERO;
//! // A process with no contacts founds a cluster of its own.
//! let mut e = Engine::new(Config::fast(), ProcessId::new("n1", 1), now);
//! e.join(now, GroupName::new("g")).unwrap();
//! let mut views = 0;
//! while let Some(ev) = e.poll_event() {
//!     if let Event::View { .. } = ev { views += 1 }
//! }
//! assert_eq!(views, 1);
//! let id = e.send(now, GroupName::new("g"), Order::Total, "hello".into()).unwrap();
//! let delivered: Vec<_> = std::iter::from_fn(|| e.poll_event()).collect();
//! assert!(matches!(&delivered[0], Event::Deliver(d) if d.id == id));
//! ```
//!
//! ## Glossary
//! - **view**: a group's membership at one time, members oldest first, numbered 1, 2, ...
//! - **stable**: a message every member of the view holds.
//! - **flush**: at a view change, every survivor delivers the same set of the old view's
//!   messages (the *cut*) before the new view (G4).
//! - **safe**: a message delivered only once stable, so delivered by every survivor if by
//!   anyone (G9).
//! - **gbcast**: a multicast ordered with views and every other delivery (G8).

mod boot;
mod causal;
mod config;
mod cut;
mod engine;
mod event;
mod gate;
mod gms;
mod group;
mod hash;
mod id;
mod link;
mod order;
mod query;
mod relay;
mod time;
mod timer;
mod transfer;
mod verify;
#[doc(hidden)]
pub mod wire;

pub use config::{Config, PeerList};
pub use engine::{Engine, Status};
pub use event::{
    Delivery, Event, FlushError, MembershipError, PartitionReason, QueryOutcome, Replies, SendError, Stats, Transmit,
};
pub use gms::RoundPhase;
pub use hash::{fnv1a, Fnv1a};
pub use id::{Ballot, GroupName, MsgId, ProcessId, ViewId};
pub use order::{Order, ParseOrderError};
pub use time::Instant;
pub use transfer::StateData;
pub use verify::JoinVerifier;
pub use wire::GroupView;

/// Pieces of the engine exposed for its own tests and benches; not an interface.
#[doc(hidden)]
pub mod internals {
    pub use crate::cut::{compute_cut, compute_cut_with_quiet};
}
