//! Numbering a process's events as it records them.

use crate::TraceEvent;

/// Stamps one process's events with its name `p` and its counter `i` (from 0, +1 per
/// event); a new incarnation is a new process, counting from 0 again.
#[derive(Clone, Debug, Default)]
pub struct Recorder {
    p: String,
    i: u64,
}

impl Recorder {
    /// A recorder for process `p` (`NAME#INCARNATION`).
    pub fn new(p: impl Into<String>) -> Self {
        Self { p: p.into(), i: 0 }
    }

    /// A new incarnation: its own `p`, its counter from 0.
    pub fn set_process(&mut self, p: impl Into<String>) {
        self.p = p.into();
        self.i = 0;
    }

    /// The process being recorded.
    pub fn process(&self) -> &str {
        &self.p
    }

    /// Stamps `e` as this process's next event, at `t` microseconds.
    pub fn stamp(&mut self, mut e: TraceEvent, t: u64) -> TraceEvent {
        e.p = self.p.clone();
        e.i = self.i;
        e.t = t;
        self.i += 1;
        e
    }
}
