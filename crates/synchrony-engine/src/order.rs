//! Order classes of multicasts.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// How a multicast is ordered with respect to others. Every class is also FIFO per sender
/// (G5) and delivered in one view at every member (G3, G4).
///
/// The ordered classes (`Causal`, `Total`, `Safe`, `Gbcast`) keep causal order across
/// groups (G6): one is never delivered before a message of any group that happened before
/// its send, where a send happens before every later event of its process and before the
/// ordered deliveries of its message. `Unordered` and `Fifo` messages neither wait for
/// their causal past nor carry it: delivering one makes no later send wait. An ordered
/// send after this process sent or delivered ordered messages in another group waits (in
/// the engine, not the caller) until those are delivered at every member there.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
pub enum Order {
    /// Reliable, FIFO per sender, nothing more.
    Unordered,
    /// FIFO per sender.
    Fifo,
    /// Causal: never delivered before a message that happened before its send (G6).
    Causal,
    /// Total: one order at every member, respecting causality (G7).
    Total,
    /// Total and uniform: delivered only once every member has it (G9).
    Safe,
    /// Ordered with views and every other delivery (G8): runs a flush.
    Gbcast,
}

impl Order {
    /// Every order class, weakest first.
    pub const ALL: [Order; 6] =
        [Order::Unordered, Order::Fifo, Order::Causal, Order::Total, Order::Safe, Order::Gbcast];

    /// The name used in traces and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Order::Unordered => "unordered",
            Order::Fifo => "fifo",
            Order::Causal => "causal",
            Order::Total => "total",
            Order::Safe => "safe",
            Order::Gbcast => "gbcast",
        }
    }

    /// Whether the sequencer orders this class.
    pub fn is_total(self) -> bool {
        matches!(self, Order::Total | Order::Safe)
    }

    /// Whether a message of this class waits for its causal predecessors.
    pub fn is_causal(self) -> bool {
        matches!(self, Order::Causal | Order::Total | Order::Safe)
    }

    /// Whether this class keeps causal order across groups (G6): its delivery carries the
    /// sender's causal past to the receiver, and its send waits for the sender's ordered
    /// past in other groups to be delivered there. `Unordered` and `Fifo` neither wait nor
    /// make others wait.
    pub fn is_ordered(self) -> bool {
        matches!(self, Order::Causal | Order::Total | Order::Safe | Order::Gbcast)
    }
}

impl fmt::Display for Order {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An unknown order class name.
#[derive(Debug, thiserror::Error)]
#[error("unknown order class {0:?} (expected unordered, fifo, causal, total, safe or gbcast)")]
pub struct ParseOrderError(String);

impl FromStr for Order {
    type Err = ParseOrderError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Order::ALL.into_iter().find(|o| o.as_str() == s).ok_or_else(|| ParseOrderError(s.to_string()))
    }
}
