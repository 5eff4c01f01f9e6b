//! Many groups' events on one receiver ([`crate::Runtime::join_merged`]): Spread's one
//! mailbox per connection. An application in thousands of groups reads them all from one
//! task, the driver hands them over in batches (one channel operation and one wake-up per
//! batch, not per group), and a crash that changes every group's view costs a few wake-ups.

use crate::GroupEvent;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use synchrony_engine::GroupName;
use tokio::sync::mpsc;

/// Batches of events queued for one handle or merged receiver (a batch holds at most 256
/// events): about 65k events before the driver waits for the application.
pub(crate) const GROUP_QUEUE: usize = 256;

/// Events of many groups, each with its group's name, handed over together.
pub(crate) type MergedBatch = Vec<(GroupName, GroupEvent)>;

/// Names one merged receiver in the driver.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct MergedId(pub(crate) u64);

impl MergedId {
    fn fresh() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        Self(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

/// What a join into a merged receiver gives the driver: the receiver's name and a sender
/// to it (the driver keeps one; the receiver only a weak one, so that it ends when the
/// driver does).
pub(crate) type MergedTx = (MergedId, mpsc::Sender<MergedBatch>);

/// The events of every group joined into it ([`crate::Runtime::join_merged`],
/// [`crate::Runtime::join_into`]), each with its group's name. Each group's events come in
/// the order the engine produced them, exactly as a [`crate::GroupEvents`] of that group
/// would give them; events of different groups come in the order the driver made them.
///
/// Dropping it (or [`MergedEvents::close`]) leaves every group in it, and the state
/// requests not yet read are declined, as dropping a group's own receiver does.
#[derive(Debug)]
pub struct MergedEvents {
    id: MergedId,
    tx: mpsc::WeakSender<MergedBatch>,
    events: Batches<(GroupName, GroupEvent)>,
}

impl MergedEvents {
    /// A new receiver and the sender its first join gives the driver.
    pub(crate) fn new() -> (Self, MergedTx) {
        let (tx, rx) = mpsc::channel(GROUP_QUEUE);
        let id = MergedId::fresh();
        (Self { id, tx: tx.downgrade(), events: Batches::new(rx) }, (id, tx))
    }

    pub(crate) fn id(&self) -> MergedId {
        self.id
    }

    /// The sender a further join gives the driver; `None` once the driver is gone.
    pub(crate) fn sender(&self) -> Option<MergedTx> {
        Some((self.id, self.tx.upgrade()?))
    }

    /// The next event and its group; `None` once the node has shut down. Cancel-safe.
    pub async fn recv(&mut self) -> Option<(GroupName, GroupEvent)> {
        std::future::poll_fn(|cx| self.events.poll_recv(cx)).await
    }

    /// Every event handed over so far (at least one; waits for one if there is none);
    /// `None` once the node has shut down. Cancel-safe.
    pub async fn recv_batch(&mut self) -> Option<Vec<(GroupName, GroupEvent)>> {
        self.events.recv_batch().await
    }

    /// Polls for the next event (`Ready(None)` once the node has shut down).
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<(GroupName, GroupEvent)>> {
        self.events.poll_recv(cx)
    }

    /// The next event if one is ready.
    pub fn try_recv(&mut self) -> Option<(GroupName, GroupEvent)> {
        self.events.try_recv()
    }

    /// Takes no more batches from the driver (those already handed over can still be read
    /// with `try_recv`): the driver then leaves every group in it and declines the state
    /// requests it still had to hand over.
    pub fn close(&mut self) {
        self.events.close();
    }
}

/// What the driver hands over in batches, taken one item at a time: the receiving side of
/// a group's own handle ([`crate::GroupEvents`]) and of a merged one.
#[derive(Debug)]
pub(crate) struct Batches<T> {
    rx: mpsc::Receiver<Vec<T>>,
    ahead: VecDeque<T>,
}

impl<T> Batches<T> {
    pub(crate) fn new(rx: mpsc::Receiver<Vec<T>>) -> Self {
        Self { rx, ahead: VecDeque::new() }
    }

    pub(crate) fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<T>> {
        loop {
            if let Some(x) = self.ahead.pop_front() {
                return Poll::Ready(Some(x));
            }
            match self.rx.poll_recv(cx) {
                Poll::Ready(Some(batch)) => self.ahead.extend(batch),
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    pub(crate) fn try_recv(&mut self) -> Option<T> {
        loop {
            if let Some(x) = self.ahead.pop_front() {
                return Some(x);
            }
            self.ahead.extend(self.rx.try_recv().ok()?);
        }
    }

    /// Everything handed over so far, waiting for at least one.
    pub(crate) async fn recv_batch(&mut self) -> Option<Vec<T>> {
        if self.ahead.is_empty() {
            let first = std::future::poll_fn(|cx| self.rx.poll_recv(cx)).await?;
            self.ahead.extend(first);
        }
        while let Ok(more) = self.rx.try_recv() {
            self.ahead.extend(more);
        }
        Some(self.ahead.drain(..).collect())
    }

    pub(crate) fn close(&mut self) {
        self.rx.close();
    }
}
