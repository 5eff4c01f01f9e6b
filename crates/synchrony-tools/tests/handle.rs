//! The tool host on a one-member loopback group whose deliveries the test paces: a caller
//! that gives up waiting and waits again for the same message still gets its outcome.

use bytes::Bytes;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use synchrony_engine::{Delivery, GroupName, GroupView, MsgId, Order, ProcessId, QueryOutcome, Replies, ViewId};
use synchrony_tools::{GroupChannel, GroupInput, GroupSend, Locks, ToolError};
use tokio::sync::mpsc;

/// One member: every multicast is delivered to itself, and `send` returns only after the
/// host had time to take the delivery (so outcomes can come before the caller waits).
#[derive(Clone)]
struct Loopback {
    me: ProcessId,
    next: Arc<AtomicU64>,
    inputs: mpsc::UnboundedSender<GroupInput>,
}

impl GroupSend for Loopback {
    async fn send(&self, order: Order, payload: Bytes) -> Result<MsgId, ToolError> {
        let id = MsgId { sender: self.me.clone(), counter: self.next.fetch_add(1, Ordering::Relaxed) };
        let d = Delivery { group: GroupName::new("g"), view: ViewId(1), id: id.clone(), order, query: false, payload };
        self.inputs.send(GroupInput::Message(d)).map_err(|_| ToolError::Closed)?;
        tokio::time::sleep(Duration::from_millis(20)).await;
        Ok(id)
    }

    async fn query(&self, _: Order, _: Bytes, _: Replies) -> Result<QueryOutcome, ToolError> {
        Err(ToolError::Refused("no queries on the loopback".into()))
    }

    async fn reply(&self, _: MsgId, _: Option<Bytes>) {}

    async fn provide_state(&self, _: ViewId, _: Bytes) {}

    async fn flush(&self) -> Result<ViewId, ToolError> {
        Ok(ViewId(1))
    }
}

struct Channel {
    sender: Loopback,
    rx: mpsc::UnboundedReceiver<GroupInput>,
}

impl GroupChannel for Channel {
    type Sender = Loopback;

    fn me(&self) -> ProcessId {
        self.sender.me.clone()
    }

    fn sender(&self) -> Loopback {
        self.sender.clone()
    }

    async fn next_input(&mut self) -> Option<GroupInput> {
        self.rx.recv().await
    }
}

fn loopback() -> Channel {
    let me = ProcessId::new("solo", 1);
    let (tx, rx) = mpsc::unbounded_channel();
    tx.send(GroupInput::View(GroupView { id: ViewId(1), members: vec![me.clone()] })).expect("open");
    Channel { sender: Loopback { me, next: Arc::new(AtomicU64::new(0)), inputs: tx }, rx }
}

#[tokio::test(flavor = "current_thread")]
async fn a_timed_out_acquire_still_sees_its_cancel_and_the_lock_stays_usable() {
    let locks = Locks::start(loopback());
    let held = locks.acquire("printer").await.expect("free");
    // The cancel's outcome comes while `send` is still sleeping, before the caller waits
    // again: it must not be lost with the first (dropped) wait.
    let waited =
        tokio::time::timeout(Duration::from_secs(5), locks.acquire("printer").timeout(Duration::from_millis(300)))
            .await
            .expect("the timed-out acquire returns");
    assert!(matches!(waited, Err(ToolError::Timeout)), "{waited:?}");
    assert!(locks.waiters("printer").is_empty(), "the cancelled request still waits");
    locks.release(held).await.expect("releases");
    let again = locks.acquire("printer").timeout(Duration::from_secs(1)).await.expect("free again");
    assert_eq!(locks.holders("printer"), vec![again.request().clone()]);
}
