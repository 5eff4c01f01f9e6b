//! # synchrony-check
//!
//! A checker of the guarantees G1 to G13 (DESIGN.md) over traces in the format of
//! `shared/TRACE.md` (`synchrony-trace`), simulated or real: one function per guarantee over
//! a shared index of the trace. `synchrony check TRACE...` is its command.
//!
//! Choices where the guarantees leave room, made explicit here:
//! - G6 (causal) is checked within a group, with happens-before carried by the sends and
//!   deliveries of causal-class messages (causal, total, safe, gbcast) and each process's
//!   own order: delivering an unordered or fifo message does not make its sender's past part
//!   of the receiver's, as in Isis where only CBCAST carries a vector timestamp.
//! - G7 (total) compares every pair of processes; a process that does not survive a view
//!   (crashes or is partitioned before the next) is exempt for its `total` messages of that
//!   view, because non-uniform total order may differ at a failing process. `safe` messages
//!   are compared everywhere.
//! - G11 recomputes each joiner's state from its provider's history with
//!   [`synchrony_trace::digest`].

mod check;
mod index;

pub use check::{check, Causality, Guarantee, InferredCrash, Options, Report, Violation};
