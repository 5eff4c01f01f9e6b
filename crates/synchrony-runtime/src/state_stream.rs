//! States written and read as streams. A joiner that asked for it ([`crate::Runtime::join_streaming`])
//! reads its state from a [`StateStream`] as the parts arrive, and fetches more only as it
//! reads; a provider writes its state part by part ([`crate::Runtime::write_state`]), each
//! write waiting while its joiners have not fetched what it wrote before. Neither holds the
//! whole state.

use bytes::Bytes;
use synchrony_engine::GroupName;
use synchrony_host::Piece;
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
