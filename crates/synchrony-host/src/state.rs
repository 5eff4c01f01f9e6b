//! States written and read in parts: the pieces a streaming joiner reads, the digest a
//! trace gives a state, and what a provider writing in parts waits for.

use crate::WaiterId;
use bytes::Bytes;
use std::collections::BTreeSet;
use synchrony_engine::{Fnv1a, ProcessId};
use synchrony_trace::LineSet;

/// A provider's write of its state could not go on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StateWriteError {
    /// Every joiner has its state (from another member) or is gone: stop writing.
    #[error("no joiner needs this state any more")]
    NotNeeded,
    /// The node stopped.
    #[error("this node has stopped")]
    Stopped,
}

/// What a joiner reading its state as a stream is handed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Piece {
    /// The state's bytes from `offset` (an offset below what came before: the transfer
    /// started again from the beginning, its provider having failed).
    Data {
        /// Where `data` starts in the state.
        offset: u64,
        /// The bytes.
        data: Bytes,
    },
    /// The state is complete.
    End,
}

/// The digest a trace gives a state (TRACE.md: equal states give equal digests), fed in
/// parts: of the bytes, or, for an application whose state is the set of message ids it
/// delivered ([`crate::HostConfig::trace_states_as_delivered_sets`]), of that set (the
/// checker recomputes it).
#[derive(Debug)]
pub enum Digest {
    /// Of the bytes.
    Bytes(Fnv1a),
    /// Of the set of lines.
    Lines(LineSet),
    /// By a function of the whole state (see [`crate::HostConfig::state_digest`]): the
    /// bytes so far.
    Whole(fn(&[u8]) -> String, Vec<u8>),
}

impl Digest {
    /// An empty digest of either kind.
    pub fn new(delivered_sets: bool) -> Self {
        if delivered_sets {
            Digest::Lines(LineSet::default())
        } else {
            Digest::Bytes(Fnv1a::new())
        }
    }

    /// Feeds the next bytes.
    pub fn write(&mut self, bytes: &[u8]) {
        match self {
            Digest::Bytes(h) => h.write(bytes),
            Digest::Lines(l) => l.write(bytes),
            Digest::Whole(_, b) => b.extend_from_slice(bytes),
        }
    }

    /// The digest of what was fed, as the trace writes it.
    pub fn finish(&self) -> String {
        match self {
            Digest::Bytes(h) => format!("{:016x}", h.finish()),
            Digest::Lines(l) => l.digest(),
            Digest::Whole(f, b) => f(b),
        }
    }

    /// The digest of a state given whole.
    pub fn of(state: &[u8], delivered_sets: bool) -> String {
        if delivered_sets {
            // (Without copying the lines.)
            let text = String::from_utf8_lossy(state);
            let ids: BTreeSet<&str> = text.split('\n').filter(|s| !s.is_empty()).collect();
            return synchrony_trace::digest(ids);
        }
        let mut d = Self::new(false);
        d.write(state);
        d.finish()
    }
}

/// A state this node writes in parts: who it is for (for the trace), its digest, and the
/// write waiting while the joiners have not fetched enough of it.
pub(crate) struct Writer {
    pub(crate) joiners: Vec<ProcessId>,
    pub(crate) digest: Digest,
    pub(crate) waiting: Option<WaiterId>,
}

#[cfg(test)]
mod tests {
    use super::Digest;

    /// A state fed in parts, cut anywhere, digests as the same state given whole.
    #[test]
    fn a_digest_fed_in_parts_is_the_digest_of_the_whole() {
        let state = b"n1#1/3\nn2#1/7\n\n\nn1#1/3\nn3#2/1";
        for delivered_sets in [false, true] {
            let whole = Digest::of(state, delivered_sets);
            for cut in 0..=state.len() {
                let mut d = Digest::new(delivered_sets);
                d.write(&state[..cut]);
                d.write(&state[cut..]);
                assert_eq!(d.finish(), whole, "cut at {cut}, delivered sets {delivered_sets}");
            }
        }
    }
}
