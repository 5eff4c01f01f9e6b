//! The TCP transport: one connection per pair of processes, length-prefixed frames, an
//! authenticated handshake, batched writes.
//!
//! A stream frame is `[length: u32 BE][kind: u8][body]`. Engine frames (kind 1) carry the
//! engine's own tag; the transport's control frames (hello, address book, status) carry an
//! HMAC-SHA256 tag of their own when a secret is set, so that a process without the
//! secret is turned away at the handshake.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

pub(crate) const KIND_HELLO: u8 = 0;
pub(crate) const KIND_ENGINE: u8 = 1;
pub(crate) const KIND_BOOK: u8 = 2;
pub(crate) const KIND_STATUS_REQUEST: u8 = 3;
pub(crate) const KIND_STATUS: u8 = 4;
/// Sent, unauthenticated, to a peer whose handshake failed authentication, before closing:
/// it learns why at once (it may be misconfigured) instead of waiting out its timeout.
pub(crate) const KIND_REFUSED: u8 = 5;
/// Written by a connection's writer when it has had nothing to write for a heartbeat
/// interval: the peer hears this node even while its driver is busy with one long input.
/// Its body is a counter, authenticated like every control frame, and a reader takes only
/// a counter above the last it took (a recorded keepalive cannot be played again).
pub(crate) const KIND_KEEPALIVE: u8 = 6;
/// The largest stream frame accepted (a state-transfer chunk is far smaller).
pub(crate) const MAX_FRAME: usize = 64 << 20;
const TAG_LEN: usize = 32;
/// Bytes gathered into one write when frames queue up.
const WRITE_BATCH: usize = 256 * 1024;
/// A reader's buffer: one read takes up to this much.
const READ_BUF: usize = 64 * 1024;
/// Room below which the reader gets a new buffer before reading.
const READ_MIN: usize = 4 * 1024;
/// The transport's protocol version, in the hello.
const VERSION: u8 = 1;
/// How long a handshake may take.
pub(crate) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(3);

/// Why a connection was refused or closed.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// The socket failed (its error is the cause, said once).
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// What answered is not a synchrony node: its first bytes are text (say, an HTTP
    /// server's), not a frame's length.
    #[error("not a synchrony node: it answered {0:?}")]
    NotSynchrony(String),
    /// A frame longer than the limit.
    #[error("frame of {0} bytes is over the limit")]
    TooLong(usize),
    /// The peer's tag is missing or wrong (it lacks the secret).
    #[error("authentication failed")]
    Auth,
    /// The bytes are not a frame of this protocol.
    #[error("malformed frame: {0}")]
    Malformed(String),
    /// The handshake took too long.
    #[error("handshake timed out")]
    Timeout,
    /// The peer refused this node's handshake: authentication failed there (an
    /// unauthenticated notice, so a hint rather than proof).
    #[error("the peer refused this node: authentication failed there (is the secret the same?)")]
    Refused,
}

impl NetError {
    /// Whether the peer sent something it should not have (as opposed to a dead socket).
    pub(crate) fn is_rejection(&self) -> bool {
        matches!(self, NetError::Auth | NetError::Malformed(_) | NetError::TooLong(_) | NetError::NotSynchrony(_))
    }
}

/// The first frame each side sends.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Hello {
    pub(crate) version: u8,
    pub(crate) name: String,
    pub(crate) incarnation: u64,
    /// Where the sender listens.
    pub(crate) listen: String,
}

impl Hello {
    pub(crate) fn new(name: &str, incarnation: u64, listen: &str) -> Self {
        Self { version: VERSION, name: name.into(), incarnation, listen: listen.into() }
    }
}

fn mac(secret: &[u8], kind: u8, body: &[u8]) -> Hmac<Sha256> {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("hmac takes any key length");
    m.update(b"synchrony-transport");
    m.update(&[kind]);
    m.update(body);
    m
}

/// A frame queued for a connection's writer: its kind and body (the writer adds the
/// header as it copies the body into its batch, so the body is never copied twice).
#[derive(Clone, Debug)]
pub(crate) struct Outgoing {
    pub(crate) kind: u8,
    pub(crate) body: Bytes,
}

impl Outgoing {
    /// An engine frame.
    pub(crate) fn engine(body: Bytes) -> Self {
        Self { kind: KIND_ENGINE, body }
    }

    fn put(&self, buf: &mut BytesMut) {
        put_frame(buf, self.kind, &self.body);
    }
}

/// Appends one stream frame around `body` to `buf`.
fn put_frame(buf: &mut BytesMut, kind: u8, body: &[u8]) {
    buf.reserve(5 + body.len());
    buf.put_u32((body.len() + 1) as u32);
    buf.put_u8(kind);
    buf.put_slice(body);
}

/// One stream frame around `body`.
pub(crate) fn frame(kind: u8, body: &[u8]) -> Bytes {
    let mut b = BytesMut::new();
    put_frame(&mut b, kind, body);
    b.freeze()
}

/// A control frame's body: `value` encoded, with a tag when `secret` is set.
pub(crate) fn control_body<T: Serialize>(kind: u8, value: &T, secret: Option<&[u8]>) -> Outgoing {
    let mut body = postcard::to_allocvec(value).expect("encoding into a Vec cannot fail");
    if let Some(s) = secret {
        let tag = mac(s, kind, &body).finalize().into_bytes();
        body.extend_from_slice(&tag);
    }
    Outgoing { kind, body: body.into() }
}

/// A control frame: `value` encoded, with a tag when `secret` is set.
pub(crate) fn control<T: Serialize>(kind: u8, value: &T, secret: Option<&[u8]>) -> Bytes {
    let o = control_body(kind, value, secret);
    frame(kind, &o.body)
}

/// Checks and decodes a control frame's body.
pub(crate) fn open_control<T: for<'a> Deserialize<'a>>(
    kind: u8,
    body: &[u8],
    secret: Option<&[u8]>,
) -> Result<T, NetError> {
    let body = match secret {
        Some(s) => {
            if body.len() < TAG_LEN {
                return Err(NetError::Auth);
            }
            let (b, tag) = body.split_at(body.len() - TAG_LEN);
            mac(s, kind, b).verify_slice(tag).map_err(|_| NetError::Auth)?;
            b
        }
        None => body,
    };
    postcard::from_bytes(body).map_err(|e| NetError::Malformed(e.to_string()))
}

/// Reads one frame: its kind and body.
pub(crate) async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> Result<(u8, Bytes), NetError> {
    let len = r.read_u32().await?;
    let head = len.to_be_bytes();
    if len as usize > MAX_FRAME {
        // A length this large is, in practice, a text protocol's first bytes.
        if head.iter().all(|b| b.is_ascii_graphic() || *b == b' ') {
            return Err(NetError::NotSynchrony(String::from_utf8_lossy(&head).into_owned()));
        }
        return Err(NetError::TooLong(len as usize));
    }
    let len = len as usize;
    if len == 0 {
        return Err(NetError::Malformed("empty frame".into()));
    }
    let mut buf = BytesMut::zeroed(len);
    r.read_exact(&mut buf).await?;
    let kind = buf[0];
    let body = buf.freeze().slice(1..);
    Ok((kind, body))
}

/// Reads the peer's hello and checks it.
pub(crate) async fn read_hello<R: AsyncRead + Unpin>(r: &mut R, secret: Option<&[u8]>) -> Result<Hello, NetError> {
    let (kind, body) = read_frame(r).await?;
    if kind == KIND_REFUSED {
        return Err(NetError::Refused);
    }
    if kind != KIND_HELLO {
        return Err(NetError::Malformed(format!("expected a hello, got kind {kind}")));
    }
    let hello: Hello = open_control(KIND_HELLO, &body, secret)?;
    if hello.version != VERSION {
        return Err(NetError::Malformed(format!("transport version {}", hello.version)));
    }
    if hello.name.is_empty() {
        return Err(NetError::Malformed("empty name".into()));
    }
    Ok(hello)
}

/// Opens a connection to `addr` and exchanges hellos.
pub(crate) async fn connect(addr: &str, mine: &Hello, secret: Option<&[u8]>) -> Result<(TcpStream, Hello), NetError> {
    let go = async {
        let mut s = TcpStream::connect(addr).await?;
        s.set_nodelay(true)?;
        s.write_all(&control(KIND_HELLO, mine, secret)).await?;
        let theirs = read_hello(&mut s, secret).await?;
        Ok::<_, NetError>((s, theirs))
    };
    tokio::time::timeout(HANDSHAKE_TIMEOUT, go).await.map_err(|_| NetError::Timeout)?
}

/// The transport's own thread: a one-thread tokio runtime that runs every connection's
/// reader and writer, the dials and the accept loop. The operating system schedules it
/// whatever the application's runtime is doing, so one long input of the driver, or a
/// flood of application tasks, holds up neither keepalives nor the reading of frames.
/// It ends when the returned sender is dropped or fired (the driver's end).
pub(crate) fn spawn_thread(name: &str) -> std::io::Result<(tokio::runtime::Handle, oneshot::Sender<()>)> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let handle = rt.handle().clone();
    let (stop, stopped) = oneshot::channel::<()>();
    std::thread::Builder::new().name(format!("synchrony-net-{name}")).spawn(move || {
        rt.block_on(async {
            let _ = stopped.await;
        });
    })?;
    Ok((handle, stop))
}

/// Heartbeats that do not wait for the driver: what a connection's tasks share with it so
/// that peers hear this node, and it hears them, whatever one input keeps the driver busy
/// with. Times are microseconds since the driver's clock origin (`epoch`).
#[derive(Clone, Debug)]
pub(crate) struct Keepalive {
    pub(crate) epoch: tokio::time::Instant,
    /// A keepalive goes after this long with nothing written (the heartbeat interval).
    pub(crate) every: Duration,
    /// When the driver last began a turn: a writer stops its keepalives once the driver
    /// has not turned for `stall_after`, so that a node hung for good is still found out.
    pub(crate) driver_turn: Arc<AtomicU64>,
    pub(crate) stall_after: Duration,
    pub(crate) secret: Option<Vec<u8>>,
}

impl Keepalive {
    /// A node's, from its configuration, with its clock origin now: keepalives every
    /// heartbeat interval, none once the driver has not turned for ten times the longest
    /// failure timeout.
    pub(crate) fn new(config: &crate::Config) -> Self {
        let k = Self {
            epoch: tokio::time::Instant::now(),
            every: config.engine.heartbeat_interval,
            driver_turn: Arc::default(),
            stall_after: config.engine.failure_timeout_max * 10,
            secret: config.engine.secret.clone(),
        };
        k.driver_turned(true);
        k
    }

    /// Microseconds since the origin.
    pub(crate) fn stamp(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64
    }

    /// The driver began a turn, with its engine running (`false`: it has none, or it
    /// stopped, and the peers must stop hearing this node at once).
    pub(crate) fn driver_turned(&self, engine_alive: bool) {
        self.driver_turn.store(if engine_alive { self.stamp().max(1) } else { 0 }, Ordering::Relaxed);
    }

    fn driver_alive(&self) -> bool {
        let last = self.driver_turn.load(Ordering::Relaxed);
        last > 0 && self.stamp().saturating_sub(last) < self.stall_after.as_micros() as u64
    }
}

/// Writes queued frames, batched: every frame queued when it wakes (up to a write's worth)
/// goes out in one write; after `keepalive.every` with nothing to write, a keepalive.
pub(crate) async fn writer<W: AsyncWrite + Unpin>(mut w: W, mut rx: mpsc::Receiver<Outgoing>, keepalive: Keepalive) {
    let mut buf = BytesMut::with_capacity(WRITE_BATCH);
    let mut got = Vec::with_capacity(64);
    let mut count = 0u64;
    loop {
        // One wake-up takes every frame queued so far (up to a write's worth). (`recv_many`
        // is cancel safe: a timeout loses nothing.)
        match tokio::time::timeout(keepalive.every, rx.recv_many(&mut got, 64)).await {
            Ok(0) => break,
            Ok(_) => {
                for f in got.drain(..) {
                    f.put(&mut buf);
                }
                while buf.len() < WRITE_BATCH {
                    match rx.try_recv() {
                        Ok(f) => f.put(&mut buf),
                        Err(_) => break,
                    }
                }
            }
            Err(_) if keepalive.driver_alive() => {
                count += 1;
                control_body(KIND_KEEPALIVE, &count, keepalive.secret.as_deref()).put(&mut buf);
            }
            Err(_) => continue,
        }
        if w.write_all(&buf).await.is_err() {
            return;
        }
        buf.clear();
    }
    let _ = w.shutdown().await;
}

/// Where the transport's tasks report to the driver: engine frames on one channel, which
/// the driver stops reading while an application is behind (TCP then slows the senders),
/// and everything else (connections up and down, address books, status requests) on the
/// other, which it always reads, so that a node that is behind still connects to a new
/// member and keeps its heartbeats flowing.
#[derive(Clone)]
pub(crate) struct NetSenders {
    pub(crate) control: mpsc::Sender<NetEvent>,
    pub(crate) frames: mpsc::Sender<NetEvent>,
}

impl NetSenders {
    /// Sends `ev` on its channel; an error when the driver is gone.
    pub(crate) async fn send(&self, ev: NetEvent) -> Result<(), mpsc::error::SendError<NetEvent>> {
        match ev {
            NetEvent::Frames { .. } => self.frames.send(ev).await,
            _ => self.control.send(ev).await,
        }
    }
}

/// What an outgoing connection is for: a peer known by name, or a contact address whose
/// name is not known yet (the handshake tells it).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum DialTarget {
    Peer(String),
    Contact(String),
}

impl std::fmt::Display for DialTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DialTarget::Peer(name) => f.write_str(name),
            DialTarget::Contact(addr) => write!(f, "contact {addr}"),
        }
    }
}

/// What the transport's tasks tell the driver.
pub(crate) enum NetEvent {
    /// A handshake completed.
    Up {
        name: String,
        incarnation: u64,
        listen: String,
        conn: u64,
        tx: mpsc::Sender<Outgoing>,
        by_me: bool,
        reader: tokio::task::AbortHandle,
        heard: Heard,
    },
    /// A connection ended (socket closed or failed, or the peer misbehaved).
    Down { name: String, conn: u64, error: Option<NetError> },
    /// An outgoing connection could not be made.
    ConnectFailed { target: DialTarget, error: NetError },
    /// Engine frames from a peer, in the order they came.
    Frames { name: String, conn: u64, frames: Vec<Bytes> },
    /// A peer's address book.
    Book { entries: Vec<(String, String)> },
    /// A handshake was refused (bad secret, garbage).
    Rejected { from: String, error: NetError },
    /// Someone asks for this node's status.
    Status { reply: oneshot::Sender<Bytes> },
}

impl NetEvent {
    /// How many engine frames it carries.
    pub(crate) fn frames(&self) -> usize {
        match self {
            NetEvent::Frames { frames, .. } => frames.len(),
            _ => 0,
        }
    }
}

/// Reads frames from an established connection until it ends. Each read takes what the
/// socket holds (up to [`READ_BUF`]); the engine frames in it go to the driver together,
/// as slices of the read buffer (a retained payload keeps at most one buffer alive).
pub(crate) async fn reader<R: AsyncRead + Unpin>(
    mut r: R,
    name: String,
    conn: u64,
    secret: Option<Vec<u8>>,
    events: NetSenders,
    heard: Heard,
) {
    let mut buf = BytesMut::with_capacity(READ_BUF);
    let mut keepalives = 0u64;
    let error = 'read: loop {
        let mut frames = Vec::new();
        let mut whole = false;
        while buf.len() >= 4 {
            let len = u32::from_be_bytes(buf[..4].try_into().expect("4 bytes")) as usize;
            if len > MAX_FRAME {
                break 'read Some(NetError::TooLong(len));
            }
            if len == 0 {
                break 'read Some(NetError::Malformed("empty frame".into()));
            }
            if buf.len() < 4 + len {
                buf.reserve(4 + len - buf.len());
                break;
            }
            buf.advance(4);
            let mut body = buf.split_to(len).freeze();
            let kind = body.split_to(1)[0];
            whole = true;
            match kind {
                KIND_ENGINE => frames.push(body),
                KIND_KEEPALIVE => match open_control::<u64>(KIND_KEEPALIVE, &body, secret.as_deref()) {
                    Ok(n) if n > keepalives => keepalives = n,
                    Ok(_) => break 'read Some(NetError::Malformed("a keepalive played again".into())),
                    Err(e) => break 'read Some(e),
                },
                KIND_BOOK => match open_control::<Vec<(String, String)>>(KIND_BOOK, &body, secret.as_deref()) {
                    Ok(entries) => {
                        // On the control channel: the driver reads it even while behind.
                        let _ = events.send(NetEvent::Book { entries }).await;
                    }
                    Err(e) => break 'read Some(e),
                },
                kind => break 'read Some(NetError::Malformed(format!("unexpected frame kind {kind}"))),
            }
        }
        if whole {
            // Heard, whether or not the driver gets to these frames soon.
            heard.now();
        }
        if !frames.is_empty() && !forward(&events, &name, conn, frames, &heard).await {
            return;
        }
        if buf.capacity() - buf.len() < READ_MIN {
            buf.reserve(READ_BUF);
        }
        match r.read_buf(&mut buf).await {
            Ok(0) if buf.is_empty() => break None,
            Ok(0) => break Some(NetError::Malformed("connection closed inside a frame".into())),
            Ok(_) => {}
            Err(e) => break Some(NetError::Io(e)),
        }
    };
    let _ = events.send(NetEvent::Down { name, conn, error }).await;
}

/// When a connection's reader last took a whole frame from the peer (microseconds since the
/// driver's clock origin; 0: never), for the driver to pass on before it judges silence.
#[derive(Clone, Debug)]
pub(crate) struct Heard {
    pub(crate) epoch: tokio::time::Instant,
    pub(crate) at: Arc<AtomicU64>,
    /// While the driver has no room for frames, the peer counts as heard this often.
    excuse_every: Duration,
}

impl Heard {
    pub(crate) fn new(epoch: tokio::time::Instant, excuse_every: Duration) -> Self {
        Self { epoch, at: Arc::new(AtomicU64::new(0)), excuse_every }
    }

    fn now(&self) {
        self.at.store(self.epoch.elapsed().as_micros().max(1) as u64, Ordering::Relaxed);
    }

    /// When, if ever.
    pub(crate) fn last(&self) -> Option<Duration> {
        let at = self.at.load(Ordering::Relaxed);
        (at > 0).then(|| Duration::from_micros(at))
    }
}

/// Hands engine frames to the driver; false when the driver is gone. While the driver has
/// no room (it is behind), this reader reads nothing and the peer is counted as heard: this
/// node is not listening, and a peer is not to blame for what it did not hear (as the
/// engine excuses the silence of a node whose application is behind). Once the driver
/// catches up, a peer that died meanwhile is found silent or closed as usual.
async fn forward(events: &NetSenders, name: &str, conn: u64, frames: Vec<Bytes>, heard: &Heard) -> bool {
    let frames_ev = NetEvent::Frames { name: name.to_string(), conn, frames };
    let permit = match events.frames.try_reserve() {
        Ok(permit) => permit,
        Err(mpsc::error::TrySendError::Closed(())) => return false,
        Err(mpsc::error::TrySendError::Full(())) => loop {
            tokio::select! {
                permit = events.frames.reserve() => match permit {
                    Ok(permit) => break permit,
                    Err(_) => return false,
                },
                _ = tokio::time::sleep(heard.excuse_every) => heard.now(),
            }
        },
    };
    permit.send(frames_ev);
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread().enable_time().build().expect("runtime").block_on(f)
    }

    #[test]
    fn a_hello_round_trips_and_the_wrong_secret_is_refused() {
        let hello = Hello::new("n1", 3, "127.0.0.1:7001");
        let f = control(KIND_HELLO, &hello, Some(b"secret"));
        let got = block_on(read_hello(&mut &f[..], Some(b"secret"))).expect("decodes");
        assert_eq!((got.name.as_str(), got.incarnation), ("n1", 3));
        assert!(matches!(block_on(read_hello(&mut &f[..], Some(b"other"))), Err(NetError::Auth)));
        // A node without a secret reads it (it is the secured side that refuses the other).
        assert!(block_on(read_hello(&mut &f[..], None)).is_ok());
        let plain = control(KIND_HELLO, &hello, None);
        assert!(matches!(block_on(read_hello(&mut &plain[..], Some(b"secret"))), Err(NetError::Auth)));
    }

    /// Hands out a byte string in the chunk sizes given (cycled), as a socket may.
    struct Chunked {
        bytes: Vec<u8>,
        at: usize,
        sizes: Vec<usize>,
        k: usize,
    }

    impl AsyncRead for Chunked {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            let size = self.sizes[self.k % self.sizes.len()].max(1);
            self.k += 1;
            let n = size.min(buf.remaining()).min(self.bytes.len() - self.at);
            let at = self.at;
            buf.put_slice(&self.bytes[at..at + n]);
            self.at += n;
            std::task::Poll::Ready(Ok(()))
        }
    }

    /// What a reader told the driver, in order: engine frames, books, and how it ended.
    fn read_all(bytes: Vec<u8>, sizes: Vec<usize>) -> (Vec<Vec<u8>>, usize, Option<String>) {
        block_on(async move {
            let (tx, mut rx) = mpsc::channel(1024);
            let senders = NetSenders { control: tx.clone(), frames: tx };
            let heard = Heard::new(tokio::time::Instant::now(), Duration::from_millis(100));
            reader(Chunked { bytes, at: 0, sizes, k: 0 }, "p".into(), 1, None, senders, heard).await;
            let (mut frames, mut books, mut end) = (Vec::new(), 0, None);
            while let Ok(ev) = rx.try_recv() {
                match ev {
                    NetEvent::Frames { frames: f, .. } => frames.extend(f.iter().map(|b| b.to_vec())),
                    NetEvent::Book { .. } => books += 1,
                    NetEvent::Down { error, .. } => end = Some(error.map_or("eof".into(), |e| e.to_string())),
                    _ => {}
                }
            }
            (frames, books, end)
        })
    }

    proptest! {
        /// However the socket splits the stream, the reader hands over every engine frame
        /// whole and in order, and the books between them.
        #[test]
        fn the_reader_reassembles_frames_split_anywhere(
            bodies in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..3000), 0..20),
            sizes in proptest::collection::vec(1usize..5000, 1..8),
            book_at in any::<usize>(),
        ) {
            let mut stream = Vec::new();
            for (i, b) in bodies.iter().enumerate() {
                if !bodies.is_empty() && i == book_at % bodies.len() {
                    stream.extend_from_slice(&control(KIND_BOOK, &vec![("a".to_string(), "b".to_string())], None));
                }
                stream.extend_from_slice(&frame(KIND_ENGINE, b));
            }
            let (frames, books, end) = read_all(stream, sizes);
            prop_assert_eq!(frames, bodies.clone());
            prop_assert_eq!(books, usize::from(!bodies.is_empty()));
            prop_assert_eq!(end.as_deref(), Some("eof"));
        }
    }

    #[test]
    fn the_reader_refuses_a_truncated_an_oversized_and_an_unknown_frame() {
        let mut cut = frame(KIND_ENGINE, b"hello").to_vec();
        cut.pop();
        assert!(read_all(cut, vec![3]).2.is_some_and(|e| e.contains("inside a frame")));
        let huge = ((MAX_FRAME + 1) as u32).to_be_bytes().to_vec();
        assert!(read_all(huge, vec![7]).2.is_some_and(|e| e.contains("over the limit")));
        assert!(read_all(frame(9, b"x").to_vec(), vec![100]).2.is_some_and(|e| e.contains("kind 9")));
    }

    fn keepalive(every_ms: u64, secret: Option<&[u8]>) -> Keepalive {
        let k = Keepalive {
            epoch: tokio::time::Instant::now(),
            every: Duration::from_millis(every_ms),
            driver_turn: Arc::default(),
            stall_after: Duration::from_millis(200),
            secret: secret.map(<[u8]>::to_vec),
        };
        k.driver_turned(true);
        k
    }

    /// A writer with nothing to write sends keepalives at its interval while the driver
    /// turns, and none once the driver has not turned for `stall_after`; a reader takes
    /// them as hearing the peer, authenticated, and refuses one played again.
    #[test]
    fn an_idle_writer_keeps_the_peer_hearing_while_the_driver_lives() {
        block_on(async {
            let k = keepalive(20, Some(b"k"));
            let (w, mut r) = tokio::io::duplex(1 << 16);
            let (_tx, rx) = mpsc::channel::<Outgoing>(8);
            tokio::spawn(writer(w, rx, k.clone()));
            tokio::time::sleep(Duration::from_millis(110)).await;
            let mut got = Vec::new();
            while let Ok(Ok((kind, body))) = tokio::time::timeout(Duration::from_millis(5), read_frame(&mut r)).await {
                assert_eq!(kind, KIND_KEEPALIVE);
                got.push(open_control::<u64>(KIND_KEEPALIVE, &body, Some(b"k")).expect("authenticated"));
            }
            assert!((2..=6).contains(&got.len()), "{} keepalives in 110 ms at 20 ms", got.len());
            assert!(got.windows(2).all(|w| w[1] == w[0] + 1), "counted: {got:?}");
            // The driver stops turning: after stall_after, nothing more.
            tokio::time::sleep(Duration::from_millis(250)).await;
            while tokio::time::timeout(Duration::from_millis(5), read_frame(&mut r)).await.is_ok() {}
            tokio::time::sleep(Duration::from_millis(60)).await;
            let more = tokio::time::timeout(Duration::from_millis(5), read_frame(&mut r)).await;
            assert!(more.is_err(), "no keepalive from a node whose driver is hung");
        });
        // A reader: a keepalive is heard; the same one again ends the connection.
        let ka = |n: u64| control(KIND_KEEPALIVE, &n, None).to_vec();
        let (frames, _, end) = read_all([ka(1), ka(2)].concat(), vec![1000]);
        assert!(frames.is_empty() && end.as_deref() == Some("eof"), "{end:?}");
        let (_, _, end) = read_all([ka(1), ka(2), ka(2)].concat(), vec![1000]);
        assert!(end.is_some_and(|e| e.contains("played again")));
        let heard = block_on(async {
            let (tx, _rx) = mpsc::channel(8);
            let heard = Heard::new(tokio::time::Instant::now(), Duration::from_millis(100));
            let senders = NetSenders { control: tx.clone(), frames: tx };
            reader(
                Chunked { bytes: ka(1), at: 0, sizes: vec![100], k: 0 },
                "p".into(),
                1,
                None,
                senders,
                heard.clone(),
            )
            .await;
            heard.last()
        });
        assert!(heard.is_some(), "a keepalive is hearing the peer");
    }

    proptest! {
        /// The transport's decoders never panic on arbitrary bytes (the engine's frame
        /// decoder has the same property test in `synchrony-engine`).
        #[test]
        fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512), secret in any::<bool>()) {
            let secret = secret.then_some(&b"s"[..]);
            let _ = block_on(read_frame(&mut &bytes[..]));
            let _ = block_on(read_hello(&mut &bytes[..], secret));
            let _ = open_control::<Vec<(String, String)>>(KIND_BOOK, &bytes, secret);
            let _ = open_control::<Hello>(KIND_HELLO, &bytes, secret);
        }

        /// Flipping any byte of an authenticated hello makes it fail, never pass as another.
        #[test]
        fn a_tampered_hello_is_refused(at in 5usize..60, bit in 0u8..8) {
            let f = control(KIND_HELLO, &Hello::new("n1", 1, "127.0.0.1:1"), Some(b"k"));
            let mut bad = f.to_vec();
            let at = at.min(bad.len() - 1);
            bad[at] ^= 1 << bit;
            prop_assert!(block_on(read_hello(&mut &bad[..], Some(b"k"))).is_err());
        }
    }
}
