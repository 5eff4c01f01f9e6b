//! States written and read as streams. A joiner that asked for it ([`crate::Runtime::join_streaming`])
//! reads its state from a [`StateStream`] as the parts arrive, and fetches more only as it
//! reads; a provider writes its state part by part ([`crate::Runtime::write_state`]), each
//! write waiting while its joiners have not fetched what it wrote before. Neither holds the
//! whole state.

use bytes::Bytes;
use std::collections::BTreeSet;
use synchrony_engine::{Fnv1a, GroupName};
use synchrony_trace::LineSet;
use tokio::sync::mpsc;

/// What a [`StateStream`] gives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StatePart {
    /// The next bytes of the state.
    Data(Bytes),
    /// The transfer starts again from the beginning (its provider failed, and the next one's
    /// bytes may differ): forget what came so far; the whole state follows.
    Restart,
}

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

/// What the driver hands a [`StateStream`].
#[derive(Debug)]
pub(crate) enum Piece {
    Data {
        offset: u64,
        data: Bytes,
    },
    /// The state is complete.
    End,
}

/// The state of a group joined with [`crate::Runtime::join_streaming`], part by part as it
/// arrives. The joiner fetches the next window only once most of what came was read, so
/// read it to the end (`next` gives `None`) before waiting for the group's next event:
/// the state goes ahead of every message.
#[derive(Debug)]
pub struct StateStream {
    group: GroupName,
    rx: mpsc::UnboundedReceiver<Piece>,
    rt: crate::Runtime,
    /// Bytes handed out since the last restart.
    have: u64,
    /// Data held back while the `Restart` before it is handed out.
    pending: Option<Bytes>,
    complete: bool,
}

impl StateStream {
    pub(crate) fn new(group: GroupName, rt: crate::Runtime) -> (Self, mpsc::UnboundedSender<Piece>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Self { group, rx, rt, have: 0, pending: None, complete: false }, tx)
    }

    /// The next part; `None` at the end: the state is complete ([`StateStream::is_complete`]),
    /// or the join ended before it was (the group's events say why).
    pub async fn next(&mut self) -> Option<StatePart> {
        if let Some(data) = self.pending.take() {
            return Some(self.hand(data));
        }
        match self.rx.recv().await? {
            Piece::Data { offset, data } if offset < self.have => {
                self.have = 0;
                self.pending = Some(data);
                Some(StatePart::Restart)
            }
            Piece::Data { data, .. } => Some(self.hand(data)),
            Piece::End => {
                self.complete = true;
                None
            }
        }
    }

    fn hand(&mut self, data: Bytes) -> StatePart {
        self.have += data.len() as u64;
        // The joiner asks for more once this is read.
        self.rt.state_read_in_background(self.group.clone(), data.len() as u64);
        StatePart::Data(data)
    }

    /// Whether the whole state came (after `next` gave `None`).
    pub fn is_complete(&self) -> bool {
        self.complete
    }

    /// Bytes of the state read so far (since the last restart).
    pub fn read(&self) -> u64 {
        self.have
    }
}

/// The digest a trace gives a state (TRACE.md: equal states give equal digests), fed in
/// parts: of the bytes, or, for an application whose state is the set of message ids it
/// delivered (`Config::trace_states_as_delivered_sets`), of that set (the checker recomputes
/// it).
#[derive(Debug)]
pub(crate) enum Digest {
    Bytes(Fnv1a),
    Lines(LineSet),
}

impl Digest {
    pub(crate) fn new(delivered_sets: bool) -> Self {
        if delivered_sets {
            Digest::Lines(LineSet::default())
        } else {
            Digest::Bytes(Fnv1a::new())
        }
    }

    pub(crate) fn write(&mut self, bytes: &[u8]) {
        match self {
            Digest::Bytes(h) => h.write(bytes),
            Digest::Lines(l) => l.write(bytes),
        }
    }

    pub(crate) fn finish(&self) -> String {
        match self {
            Digest::Bytes(h) => format!("{:016x}", h.finish()),
            Digest::Lines(l) => l.digest(),
        }
    }

    /// The digest of a state given whole.
    pub(crate) fn of(state: &[u8], delivered_sets: bool) -> String {
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
