//! A state given in parts ([`crate::StateRequest::stream`]): written part by part, or as a
//! `tokio::io::AsyncWrite` (so `tokio::io::copy` from a file or a store's export works).

use bytes::{Bytes, BytesMut};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use synchrony_engine::{GroupName, ViewId};
use synchrony_runtime::{Runtime, StateWriteError};

/// How many bytes the `AsyncWrite` side gathers into one part.
const PART: usize = 1 << 20;

type Pending = Pin<Box<dyn Future<Output = Result<(), StateWriteError>> + Send>>;

/// A state given in parts ([`crate::StateRequest::stream`]). Either `write` parts and
/// `finish`, or use it as a `tokio::io::AsyncWrite` (bytes are gathered into parts of 1 MiB;
/// `shutdown` finishes the state). Dropped unfinished, the joiners ask another member.
#[must_use = "the joiners wait for the state until it is finished (dropped, they ask another member)"]
pub struct StateWriter {
    group: GroupName,
    view: ViewId,
    rt: Runtime,
    finished: bool,
    /// The `AsyncWrite` side: bytes not yet in a part, and the part on its way.
    gathered: BytesMut,
    pending: Option<Pending>,
}

impl std::fmt::Debug for StateWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateWriter").field("group", &self.group).field("view", &self.view).finish()
    }
}

impl StateWriter {
    pub(crate) fn new(group: GroupName, view: ViewId, rt: Runtime) -> Self {
        Self { group, view, rt, finished: false, gathered: BytesMut::new(), pending: None }
    }

    /// Writes the next part; returns once it is handed over and the joiners have fetched
    /// enough of what came before. [`StateWriteError::NotNeeded`]: every joiner has its
    /// state (from another member) or is gone, stop writing.
    pub async fn write(&mut self, part: impl Into<Bytes>) -> Result<(), StateWriteError> {
        std::future::poll_fn(|cx| self.poll_parts(cx)).await?;
        self.rt.write_state(self.group.clone(), self.view, part.into(), false).await
    }

    /// The state is complete.
    pub async fn finish(mut self) -> Result<(), StateWriteError> {
        std::future::poll_fn(|cx| self.poll_parts(cx)).await?;
        self.finished = true;
        self.rt.write_state(self.group.clone(), self.view, Bytes::new(), true).await
    }

    /// The part on its way, then whatever was gathered, handed over.
    fn poll_parts(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), StateWriteError>> {
        loop {
            if let Some(p) = self.pending.as_mut() {
                std::task::ready!(p.as_mut().poll(cx))?;
                self.pending = None;
            }
            if self.gathered.is_empty() {
                return Poll::Ready(Ok(()));
            }
            self.send_gathered(false);
        }
    }

    fn send_gathered(&mut self, last: bool) {
        let part = self.gathered.split().freeze();
        let (rt, group, view) = (self.rt.clone(), self.group.clone(), self.view);
        self.pending = Some(Box::pin(async move { rt.write_state(group, view, part, last).await }));
    }
}

fn io_error(e: StateWriteError) -> std::io::Error {
    std::io::Error::other(e)
}

impl tokio::io::AsyncWrite for StateWriter {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        // The part before must be on its way first: that is the joiners' back pressure.
        if let Some(p) = this.pending.as_mut() {
            std::task::ready!(p.as_mut().poll(cx)).map_err(io_error)?;
            this.pending = None;
        }
        this.gathered.extend_from_slice(buf);
        if this.gathered.len() >= PART {
            this.send_gathered(false);
        }
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.poll_parts(cx).map_err(io_error)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        if !this.finished {
            std::task::ready!(this.poll_parts(cx)).map_err(io_error)?;
            this.finished = true;
            this.send_gathered(true);
        }
        this.poll_parts(cx).map_err(io_error)
    }
}

impl Drop for StateWriter {
    fn drop(&mut self) {
        if !self.finished {
            self.rt.abandon_state_in_background(self.group.clone(), self.view);
        }
    }
}
