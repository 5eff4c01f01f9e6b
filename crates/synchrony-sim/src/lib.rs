//! # synchrony-sim
//!
//! A deterministic simulator of synchrony clusters. Many [`synchrony_engine::Engine`]s run
//! in one thread over a virtual clock and a network with latency, loss, duplication,
//! reordering and partitions; processes crash, restart as new incarnations, pause past the
//! failure timeout, and join and leave groups while a workload sends in every order class,
//! flushes, queries and transfers state. Everything derives from one `u64` seed: the same
//! seed gives the same trace, byte for byte.
//!
//! A run has a fault phase, a calm traffic phase and a settling phase; its trace is then
//! checked for G1 to G13 by [`synchrony_check`] (quiescent mode, so liveness too).

mod app;
mod cluster;
mod profile;
mod workload;

pub use app::{App, Ctx};
pub use cluster::{run, run_app, Outcome, SimConfig};
pub use profile::{Cost, Fragments, Profile};
pub use workload::Traffic;
