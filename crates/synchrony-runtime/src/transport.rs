//! The transport: connections to peers by name (dialled, accepted, backed off, the
//! address book they share), the handshake, and the tasks that read and write each
//! connection (`net`). The driver hands it frames to send and gets back what the engine
//! must hear of (a peer up, a peer unreachable).

use crate::net::{self, DialTarget, Hello, NetError, NetEvent};
use crate::status::NetCounters;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant as TokioInstant;

const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(1);
/// How often a source refused again and again is warned about.
const REJECTION_LOG_EVERY: Duration = Duration::from_secs(10);

/// An established connection to a peer.
pub(crate) struct Conn {
    pub(crate) id: u64,
    pub(crate) tx: mpsc::Sender<net::Outgoing>,
    pub(crate) by_me: bool,
    pub(crate) incarnation: u64,
    pub(crate) reader: tokio::task::AbortHandle,
    /// When its reader last heard the peer, and what of it the engine was told.
    pub(crate) heard: net::Heard,
    pub(crate) passed: Option<Duration>,
}

/// Connections to peers, by name, and the address book they share.
pub(crate) struct Peers {
    pub(crate) my_name: String,
    pub(crate) hello: Hello,
    pub(crate) book: HashMap<String, String>,
    pub(crate) conns: HashMap<String, Conn>,
    pub(crate) connecting: HashSet<DialTarget>,
    pub(crate) retry_at: HashMap<String, (TokioInstant, Duration)>,
    /// Names whose connection dropped: if a new one cannot be made, the engine hears of it.
    pub(crate) lost: HashSet<String>,
    pub(crate) pending: HashMap<String, VecDeque<net::Outgoing>>,
    pub(crate) queue_max: usize,
    pub(crate) keepalive: net::Keepalive,
    /// The transport's runtime (`net::spawn_thread`).
    pub(crate) net: tokio::runtime::Handle,
    pub(crate) next_conn: Arc<AtomicU64>,
    pub(crate) events: net::NetSenders,
    pub(crate) counters: NetCounters,
    /// When refused connections were last warned about, per source host, and how many
    /// since.
    pub(crate) rejections_logged: BTreeMap<String, (TokioInstant, u64)>,
}

impl Peers {
    pub(crate) fn send(&mut self, to: &str, frame: net::Outgoing) {
        if to == self.my_name {
            return;
        }
        if let Some(c) = self.conns.get(to) {
            if c.tx.try_send(frame).is_err() {
                self.counters.frames_dropped += 1; // the peer is slow or gone; the engine retransmits
            }
            return;
        }
        let q = self.pending.entry(to.to_string()).or_default();
        if q.len() >= self.queue_max {
            q.pop_front();
            self.counters.frames_dropped += 1;
        }
        q.push_back(frame);
        self.connect(to, false);
    }

    /// Starts a connection to `name` unless one is under way or backing off.
    pub(crate) fn connect(&mut self, name: &str, now_anyway: bool) {
        let target = DialTarget::Peer(name.to_string());
        if self.connecting.contains(&target) || self.conns.contains_key(name) {
            return;
        }
        if !now_anyway && self.retry_at.get(name).is_some_and(|(t, _)| *t > TokioInstant::now()) {
            return;
        }
        let Some(addr) = self.book.get(name).cloned() else { return };
        self.connecting.insert(target.clone());
        self.dial(target, addr);
    }

    /// Dials `addr` for `target`.
    pub(crate) fn dial(&self, target: DialTarget, addr: String) {
        let (hello, secret, events, ids) =
            (self.hello.clone(), self.keepalive.secret.clone(), self.events.clone(), self.next_conn.clone());
        let (queue, keepalive) = (self.queue_max, self.keepalive.clone());
        self.net.spawn(async move {
            match net::connect(&addr, &hello, secret.as_deref()).await {
                Ok((stream, theirs)) => {
                    let id = ids.fetch_add(1, Ordering::Relaxed);
                    let up = establish(stream, theirs, true, id, events.clone(), queue, &keepalive);
                    let _ = events.send(up).await;
                }
                Err(error) => {
                    let _ = events.send(NetEvent::ConnectFailed { target, error }).await;
                }
            }
        });
    }

    pub(crate) fn book_frame(&self) -> net::Outgoing {
        let entries: Vec<(String, String)> = self.book.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        net::control_body(net::KIND_BOOK, &entries, self.keepalive.secret.as_deref())
    }

    pub(crate) fn broadcast_book(&mut self) {
        let f = self.book_frame();
        for c in self.conns.values() {
            let _ = c.tx.try_send(f.clone());
        }
    }

    pub(crate) fn close(&mut self, name: &str) {
        if let Some(c) = self.conns.remove(name) {
            c.reader.abort();
        }
    }

    pub(crate) fn backoff(&mut self, name: &str) {
        let next = self.retry_at.get(name).map_or(BACKOFF_MIN, |(_, d)| (*d * 2).min(BACKOFF_MAX));
        self.retry_at.insert(name.to_string(), (TokioInstant::now() + next, next));
    }
}

/// Splits an established stream into its reader and writer tasks; the writer takes at
/// most `queue` frames (`Config::peer_queue_frames`) before the driver drops more, and
/// keeps the peer hearing from this node (`keepalive`).
pub(crate) fn establish(
    stream: tokio::net::TcpStream,
    theirs: Hello,
    by_me: bool,
    conn: u64,
    events: net::NetSenders,
    queue: usize,
    keepalive: &net::Keepalive,
) -> NetEvent {
    let (r, w) = stream.into_split();
    let (tx, rx) = mpsc::channel(queue.max(1));
    tokio::spawn(net::writer(w, rx, keepalive.clone()));
    let heard = net::Heard::new(keepalive.epoch, keepalive.every);
    let secret = keepalive.secret.clone();
    let reader = tokio::spawn(net::reader(r, theirs.name.clone(), conn, secret, events, heard.clone())).abort_handle();
    let (name, incarnation, listen) = (theirs.name, theirs.incarnation, theirs.listen);
    NetEvent::Up { name, incarnation, listen, conn, tx, by_me, reader, heard }
}

/// Accepts connections: handshakes and status requests. (On the transport's runtime: the
/// listener is registered with it here.)
pub(crate) async fn accept_loop(
    listener: std::net::TcpListener,
    hello: Hello,
    secret: Option<Vec<u8>>,
    events: net::NetSenders,
    ids: Arc<AtomicU64>,
    queue: usize,
    keepalive: net::Keepalive,
) {
    let Ok(listener) = TcpListener::from_std(listener) else {
        tracing::error!("the listener could not be registered with the transport");
        return;
    };
    loop {
        let Ok((mut stream, addr)) = listener.accept().await else { continue };
        let (hello, secret, events, ids) = (hello.clone(), secret.clone(), events.clone(), ids.clone());
        let keepalive = keepalive.clone();
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            let first = tokio::time::timeout(net::HANDSHAKE_TIMEOUT, net::read_frame(&mut stream)).await;
            let result = match first {
                Err(_) => Err(NetError::Timeout),
                Ok(Err(e)) => Err(e),
                Ok(Ok((net::KIND_STATUS_REQUEST, body))) => {
                    match net::open_control::<()>(net::KIND_STATUS_REQUEST, &body, secret.as_deref()) {
                        Ok(()) => {
                            let (reply, rx) = oneshot::channel();
                            let _ = events.send(NetEvent::Status { reply }).await;
                            if let Ok(json) = rx.await {
                                use tokio::io::AsyncWriteExt;
                                let _ = stream.write_all(&net::frame(net::KIND_STATUS, &json)).await;
                            }
                            return;
                        }
                        Err(e) => Err(e),
                    }
                }
                Ok(Ok((net::KIND_HELLO, body))) => {
                    net::open_control::<Hello>(net::KIND_HELLO, &body, secret.as_deref())
                }
                Ok(Ok((kind, _))) => Err(NetError::Malformed(format!("expected a hello, got kind {kind}"))),
            };
            match result {
                Ok(theirs) if !theirs.name.is_empty() => {
                    use tokio::io::AsyncWriteExt;
                    if stream.write_all(&net::control(net::KIND_HELLO, &hello, secret.as_deref())).await.is_err() {
                        return;
                    }
                    let id = ids.fetch_add(1, Ordering::Relaxed);
                    let up = establish(stream, theirs, false, id, events.clone(), queue, &keepalive);
                    let _ = events.send(up).await;
                }
                Ok(_) => {
                    let error = NetError::Malformed("empty name".into());
                    let _ = events.send(NetEvent::Rejected { from: addr.to_string(), error }).await;
                }
                Err(NetError::Io(_)) => {}
                Err(error) => {
                    if matches!(error, NetError::Auth) {
                        use tokio::io::AsyncWriteExt;
                        let _ = stream.write_all(&net::frame(net::KIND_REFUSED, b"authentication")).await;
                    }
                    let _ = events.send(NetEvent::Rejected { from: addr.to_string(), error }).await;
                }
            }
        });
    }
}

/// What a new connection means for the driver.
pub(crate) enum Admitted {
    /// The connection was not kept (to itself, or the other of two dialled at once).
    Dropped,
    /// It is the peer's connection now (the book sent on if its address was new).
    Kept,
}

impl Peers {
    /// Makes `name`'s new connection (its reader `reader`, its writer fed by `tx`) the one
    /// to it, unless one kept by both sides is there already; sends it the book and the
    /// frames that waited.
    pub(crate) fn admit(
        &mut self,
        name: String,
        incarnation: u64,
        listen: String,
        conn: Conn,
        engine_up: bool,
    ) -> Admitted {
        if name == self.my_name {
            conn.reader.abort(); // a contact address that is this node
            return Admitted::Dropped;
        }
        self.connecting.remove(&DialTarget::Peer(name.clone()));
        self.connecting.retain(|t| !(engine_up && matches!(t, DialTarget::Contact(_))));
        self.retry_at.remove(&name);
        self.lost.remove(&name);
        self.counters.connections_opened += 1;
        let keep_new = match self.conns.get(&name) {
            None => true,
            Some(old) if incarnation != old.incarnation || conn.by_me == old.by_me => true,
            // Both sides dialled at once: both keep the one dialled by the smaller name.
            Some(_) => conn.by_me == (self.my_name < name),
        };
        if !keep_new {
            conn.reader.abort();
            return Admitted::Dropped;
        }
        self.close(&name);
        let book_changed = self.book.insert(name.clone(), listen.clone()).as_ref() != Some(&listen);
        let _ = conn.tx.try_send(self.book_frame());
        for f in self.pending.remove(&name).unwrap_or_default() {
            let _ = conn.tx.try_send(f);
        }
        self.conns.insert(name, conn);
        if book_changed {
            self.broadcast_book();
        }
        Admitted::Kept
    }

    /// Connection `conn` to `name` ended: another is dialled at once.
    pub(crate) fn down(&mut self, name: &str, conn: u64, error: Option<&NetError>) {
        if let Some(err) = error.filter(|e| e.is_rejection()) {
            self.counters.rejected_frames += 1;
            tracing::warn!(peer = %name, error = %err, "closed a connection that sent a bad frame");
        }
        if self.conns.get(name).is_some_and(|c| c.id == conn) {
            self.conns.remove(name);
            self.counters.connections_lost += 1;
            self.lost.insert(name.to_string());
            self.connect(name, true);
        }
    }

    /// A dial failed. For a peer, returns its name if the engine must hear that it is
    /// unreachable (its connection had dropped and none could be made again); the dial
    /// backs off.
    pub(crate) fn dial_failed(&mut self, target: &DialTarget, error: &NetError) -> Option<String> {
        self.connecting.remove(target);
        if error.is_rejection() {
            self.counters.rejected_handshakes += 1;
            tracing::warn!(peer = %target, error = %error, "a peer failed the handshake");
        }
        let DialTarget::Peer(name) = target else {
            tracing::info!(%target, error = %error, "contact did not answer");
            return None;
        };
        self.backoff(name);
        self.lost.remove(name).then(|| name.clone())
    }

    /// Takes in a peer's address book; returns whether this one changed (and then sent it on).
    pub(crate) fn merge_book(&mut self, entries: Vec<(String, String)>) -> bool {
        let mut changed = false;
        for (n, a) in entries {
            if n != self.my_name && self.book.get(&n) != Some(&a) {
                self.book.insert(n, a);
                changed = true;
            }
        }
        if changed {
            self.broadcast_book();
        }
        changed
    }

    /// Counts a refused connection, and warns of it once per source host per interval (a
    /// misconfigured peer retries fast).
    pub(crate) fn refused(&mut self, from: &str, error: &NetError) {
        match error {
            NetError::Auth => self.counters.rejected_handshakes += 1,
            _ => self.counters.rejected_frames += 1,
        }
        let host = from.rsplit_once(':').map_or(from, |(h, _)| h).to_string();
        let now = TokioInstant::now();
        let due = match self.rejections_logged.get_mut(&host) {
            Some((at, quiet)) if now.duration_since(*at) < REJECTION_LOG_EVERY => {
                *quiet += 1;
                None
            }
            Some((at, quiet)) => {
                *at = now;
                Some(std::mem::take(quiet))
            }
            None => {
                self.rejections_logged.insert(host.clone(), (now, 0));
                Some(0)
            }
        };
        if let Some(quiet) = due {
            tracing::warn!(peer = %from, error = %error, "refused a connection ({quiet} more from {host} since the last warning)");
        }
    }
}
