//! # synchrony-runtime
//!
//! Runs the sans-IO [`synchrony_engine::Engine`] between real processes: one tokio task
//! (the driver) owns the engine and feeds it frames from TCP connections, commands from the
//! application and timer expiries; frames go out batched, one connection per pair of
//! processes. Most users want the `synchrony` crate, which wraps this one in `Node` and
//! `Group` handles.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use synchrony_runtime::{Config, Runtime, GroupEvent};
//! use synchrony_engine::{GroupName, Order, Replies};
//! let (rt, _node_events) = Runtime::start(Config::new("n1", "127.0.0.1:7001")).await?;
//! let mut events = rt.join(GroupName::new("chat")).await?;
//! rt.send(GroupName::new("chat"), Order::Total, "hello".into(), Replies::None).await?;
//! while let Some(ev) = events.recv().await {
//!     if let GroupEvent::Message(m) = ev { println!("{:?}", m.payload); break }
//! }
//! # Ok(()) }
//! ```

mod command;
mod config;
mod driver;
mod listed;
mod merged;
mod metrics;
mod net;
mod spool;
mod state_stream;
mod status;
mod trace;
mod transport;

pub use config::{Config, ConfigError};
pub use merged::MergedEvents;
pub use net::NetError;
pub use spool::SendReaderError;
pub use state_stream::{StatePart, StateStream};
pub use status::{GroupStatus, NetCounters, NodeStatus};
pub use synchrony_host::{GroupEvent, MessageVerifier, NodeEvent, StateWriteError, Verifiers};

use bytes::Bytes;
use command::Command;
use driver::Driver;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use synchrony_engine::{
    FlushError, GroupName, MembershipError, MsgId, Order, ProcessId, QueryOutcome, Replies, SendError, ViewId,
};
use tokio::sync::{mpsc, oneshot};

/// Transport events (connections, books, batches of frames) waiting for the driver, per
/// channel (the frames' and the others').
const NET_EVENT_QUEUE: usize = 4096;
/// Application commands waiting for the driver (sends past it wait in the caller).
const COMMAND_QUEUE: usize = 4096;
/// Node events waiting for the application; past it they are dropped and counted.
const NODE_EVENT_QUEUE: usize = 1024;

/// The events of one group this node joined ([`Runtime::join`]), in the order the engine
/// produced them. The driver hands deliveries over in batches; `recv` gives them one by one.
#[derive(Debug)]
pub struct GroupEvents(merged::Batches<GroupEvent>);

impl GroupEvents {
    pub(crate) fn new(rx: mpsc::Receiver<Vec<GroupEvent>>) -> Self {
        Self(merged::Batches::new(rx))
    }

    /// The next event; `None` once the node has shut down or left the group. Cancel-safe
    /// (in `select!`, no event is lost).
    pub async fn recv(&mut self) -> Option<GroupEvent> {
        std::future::poll_fn(|cx| self.0.poll_recv(cx)).await
    }

    /// Polls for the next event (`Ready(None)` once the node has shut down or left the
    /// group): what a `Stream` of the events is built on.
    pub fn poll_recv(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Option<GroupEvent>> {
        self.0.poll_recv(cx)
    }

    /// Takes no more batches from the driver (those already handed over can still be
    /// read with `try_recv`): the driver then treats the group's handle as dropped (it
    /// leaves the group and declines the state requests it still had to hand over).
    pub fn close(&mut self) {
        self.0.close();
    }

    /// The next event if one is ready.
    pub fn try_recv(&mut self) -> Option<GroupEvent> {
        self.0.try_recv()
    }
}

/// When set (to a directory), every node started in the process writes its trace there, as
/// `NAME-INCARNATION.jsonl`, unless its `Config::trace` names a file.
pub const TRACE_DIR_ENV: &str = "SYNCHRONY_TRACE_DIR";

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The listen address is taken or invalid.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The data directory or the trace file could not be used.
    #[error("cannot use {path}: {source}")]
    Storage {
        /// The path.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// A setting makes no sense (see [`Config::validate`]).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The data directory belongs to another node (its `node` file names it).
    #[error("the data directory {path} belongs to node {owner:?}, not {name:?}: give each node its own")]
    DataDirOwner {
        /// The directory.
        path: String,
        /// The node that wrote it.
        owner: String,
        /// This node.
        name: String,
    },
    /// Every contact refused this node's handshake: authentication failed there.
    #[error("every contact refused this node: authentication failed at {0:?} (is the secret the same?)")]
    Refused(Vec<String>),
    /// No contact let this node in within `Config::join_timeout`: what each contact did
    /// when last tried ("no answer" if nothing was heard).
    #[error("not a member of the cluster after {waited:?}: {seen}")]
    JoinTimeout {
        /// How long it waited.
        waited: std::time::Duration,
        /// Per contact, its last failure (`contact ADDR: ...; ...`).
        seen: String,
    },
}

/// Why `synchrony status` could not get an answer.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    /// The connection failed or the node refused the request.
    #[error(transparent)]
    Net(#[from] NetError),
    /// The answer did not parse.
    #[error("bad status answer: {0}")]
    Parse(#[from] serde_json::Error),
    /// The node closed the connection without answering: it refuses requests that lack its
    /// secret or carry another one.
    #[error("the node closed the connection without answering: a wrong or missing secret? (both sides need the same --secret-file)")]
    Refused,
}

/// A handle on a running node's driver. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Runtime {
    commands: mpsc::Sender<Command>,
    me: ProcessId,
    listen: String,
    spool: std::sync::Arc<spool::Spool>,
}

/// The incarnation to start with: one more than the last, kept in the data directory, or
/// the clock's seconds when there is none.
/// Makes `dir` this node's data directory: a directory another node wrote (its `node`
/// file names another) is refused, for two nodes sharing one would share incarnations and
/// logs.
fn claim_data_dir(dir: &std::path::Path, name: &str) -> Result<(), StartError> {
    let storage = |source| StartError::Storage { path: dir.display().to_string(), source };
    std::fs::create_dir_all(dir).map_err(storage)?;
    let path = dir.join("node");
    match std::fs::read_to_string(&path) {
        Ok(owner) if owner.trim() == name => Ok(()),
        Ok(owner) => Err(StartError::DataDirOwner {
            path: dir.display().to_string(),
            owner: owner.trim().to_string(),
            name: name.to_string(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::write(&path, name).map_err(storage),
        Err(e) => Err(storage(e)),
    }
}

pub(crate) fn next_incarnation(config: &Config, previous: Option<u64>) -> u64 {
    if let Some(i) = config.incarnation.filter(|_| previous.is_none()) {
        return i;
    }
    // Microseconds: a process killed and restarted at once (within the same second) is a
    // new incarnation all the same, and a later start has a larger one.
    let clock =
        || std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_micros() as u64);
    let Some(dir) = &config.data_dir else {
        return previous.map_or_else(clock, |p| p + 1);
    };
    let path = dir.join("incarnation");
    let last: u64 = std::fs::read_to_string(&path).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0);
    let next = last.max(previous.unwrap_or(0)) + 1;
    if let Err(e) = std::fs::create_dir_all(dir).and_then(|_| std::fs::write(&path, next.to_string())) {
        tracing::error!(path = %path.display(), error = %e, "cannot record the incarnation");
    }
    next
}

impl Runtime {
    /// Starts a node: listens, finds the cluster through the contacts (or founds one), and
    /// returns once the node is a member. Node-wide events arrive on the receiver.
    pub async fn start(config: Config) -> Result<(Runtime, mpsc::Receiver<NodeEvent>), StartError> {
        config.validate()?;
        let spool = std::sync::Arc::new(spool::Spool::of(&config));
        let listener = tokio::net::TcpListener::bind(&config.listen)
            .await
            .map_err(|source| StartError::Listen { addr: config.listen.clone(), source })?;
        let listen = listener.local_addr().map(|a| a.to_string()).unwrap_or_else(|_| config.listen.clone());
        if let Some(dir) = &config.data_dir {
            claim_data_dir(dir, &config.name)?;
        }
        let incarnation = next_incarnation(&config, None);
        // `SYNCHRONY_TRACE_DIR` traces any program without changing it: one file per
        // incarnation, so a process restarted under the same name keeps its history.
        let trace_path = config.trace.clone().or_else(|| {
            std::env::var_os(TRACE_DIR_ENV)
                .map(|d| std::path::PathBuf::from(d).join(format!("{}-{incarnation}.jsonl", config.name)))
        });
        let trace = match &trace_path {
            Some(p) => Some(
                trace::TraceWriter::create(p)
                    .map_err(|source| StartError::Storage { path: p.display().to_string(), source })?,
            ),
            None => None,
        };
        if let Some(addr) = config.metrics {
            if let Err(e) = metrics::serve(addr) {
                tracing::warn!(%addr, error = %e, "no metrics endpoint");
            }
        }
        let (control_tx, control_rx) = mpsc::channel(NET_EVENT_QUEUE);
        let (frames_tx, frames_rx) = mpsc::channel(NET_EVENT_QUEUE);
        let net_tx = net::NetSenders { control: control_tx, frames: frames_tx };
        let (cmd_tx, cmd_rx) = mpsc::channel(COMMAND_QUEUE);
        let (node_tx, node_rx) = mpsc::channel(NODE_EVENT_QUEUE);
        let ids = Arc::new(AtomicU64::new(1));
        let hello = net::Hello::new(&config.name, incarnation, &listen);
        let queue = config.peer_queue_frames;
        let keepalive = net::Keepalive::new(&config);
        let (transport, stop_transport) =
            net::spawn_thread(&config.name).map_err(|source| StartError::Listen { addr: listen.clone(), source })?;
        let listener = listener.into_std().map_err(|source| StartError::Listen { addr: listen.clone(), source })?;
        transport.spawn(transport::accept_loop(
            listener,
            hello,
            config.engine.secret.clone(),
            net_tx.clone(),
            ids.clone(),
            queue,
            keepalive.clone(),
        ));
        let listed = listed::Listed::resolve(&config.peers).await;
        let on_list = listed.names_node(&listen, &config.listen);
        if !listed.is_empty() && !on_list {
            tracing::info!(%listen, "not on the peer list: joining through it, with weight 0");
        }
        // On a peer list a node waits for a majority of it, however long that takes.
        let join_timeout =
            if on_list { std::time::Duration::from_secs(100 * 365 * 24 * 3600) } else { config.join_timeout };
        let contacts: std::collections::BTreeSet<String> = config
            .contacts
            .iter()
            .chain(listed.entries().filter(|_| !on_list))
            .filter(|c| **c != listen && **c != config.listen)
            .cloned()
            .collect();
        if on_list {
            tracing::info!(peers = listed.len(), "bootstrapping from the peer list: waiting for a majority of it");
        }
        let mut driver =
            Driver::new(config, incarnation, listen.clone(), net_tx, ids, node_tx, trace, keepalive, transport, listed);
        let (refused_tx, refused_rx) = mpsc::unbounded_channel::<(String, NetError)>();
        driver.report_refusals(refused_tx);
        tokio::spawn(async move {
            driver.run(cmd_rx, control_rx, frames_rx).await;
            let _ = stop_transport.send(());
        });
        let (me, out_rx) = await_membership(node_rx, refused_rx, &contacts, join_timeout).await?;
        Ok((Runtime { commands: cmd_tx, me, listen, spool }, out_rx))
    }

    /// This node's process id (its first incarnation's, if it rejoined since).
    pub fn me(&self) -> &ProcessId {
        &self.me
    }

    /// The address this node listens on.
    pub fn listen_addr(&self) -> &str {
        &self.listen
    }

    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Option<T> {
        let (tx, rx) = oneshot::channel();
        self.commands.send(make(tx)).await.ok()?;
        rx.await.ok()
    }

    /// Joins `group`; its events (first of all its view, then its state if it had
    /// members) arrive on the receiver.
    pub async fn join(&self, group: GroupName) -> Result<GroupEvents, MembershipError> {
        self.join_verified(group, Verifiers::default()).await
    }

    /// Joins `group` with join and message verifiers installed for it.
    pub async fn join_verified(&self, group: GroupName, verifiers: Verifiers) -> Result<GroupEvents, MembershipError> {
        let stream = None;
        self.ask(|reply| Command::Join { group, verifiers, stream, reply })
            .await
            .unwrap_or(Err(MembershipError::Stopped))
    }

    /// Joins `group` and reads its state as a stream: the parts come through the
    /// [`StateStream`] as they arrive (the group's events give [`GroupEvent::StateStreamed`]
    /// at the state's place instead of [`GroupEvent::State`]). A join that needs no state
    /// (this node founds the group) ends the stream at once, empty. A rejoin as a new
    /// incarnation (`Config::rejoin`) gets its state whole, in `GroupEvent::State`.
    pub async fn join_streaming(
        &self,
        group: GroupName,
        verifiers: Verifiers,
    ) -> Result<(GroupEvents, StateStream), MembershipError> {
        let (reader, tx) = StateStream::new(group.clone(), self.clone());
        let stream = Some(tx);
        let joined = self.ask(|reply| Command::Join { group, verifiers, stream, reply }).await;
        joined.unwrap_or(Err(MembershipError::Stopped)).map(|events| (events, reader))
    }

    /// Joins many groups with one trip to the driver: the joins go to the membership
    /// leader together and are decided in one round when it has them all (joining 10,000
    /// groups one call at a time works too, but costs a round trip to the driver each).
    /// One result per group, in order.
    pub async fn join_many(
        &self,
        groups: impl IntoIterator<Item = GroupName>,
    ) -> Vec<Result<GroupEvents, MembershipError>> {
        let asked = self.join_many_with(groups, None).await;
        asked.into_iter().map(|r| r.and_then(|h| h.ok_or(MembershipError::Stopped))).collect()
    }

    async fn join_many_with(
        &self,
        groups: impl IntoIterator<Item = GroupName>,
        into: Option<merged::MergedTx>,
    ) -> Vec<Result<Option<GroupEvents>, MembershipError>> {
        let groups: Vec<GroupName> = groups.into_iter().collect();
        let n = groups.len();
        let asked = self.ask(|reply| Command::JoinMany { groups, into, reply }).await;
        asked.unwrap_or_else(|| (0..n).map(|_| Err(MembershipError::Stopped)).collect())
    }

    /// Joins many groups as [`Runtime::join_many`] does, their events all on one receiver
    /// (each with its group's name): one task reads every group, and the driver hands
    /// their events over in batches (one wake-up per batch, not per group), so a view
    /// change of thousands of groups (a member crashed) reaches the application at once.
    /// One result per group, in order; more groups join the same receiver with
    /// [`Runtime::join_into`].
    pub async fn join_merged(
        &self,
        groups: impl IntoIterator<Item = GroupName>,
    ) -> (MergedEvents, Vec<Result<(), MembershipError>>) {
        let (events, tx) = MergedEvents::new();
        let asked = self.join_many_with(groups, Some(tx)).await;
        (events, asked.into_iter().map(|r| r.map(drop)).collect())
    }

    /// Joins more groups into a receiver made by [`Runtime::join_merged`].
    pub async fn join_into(
        &self,
        events: &MergedEvents,
        groups: impl IntoIterator<Item = GroupName>,
    ) -> Vec<Result<(), MembershipError>> {
        let groups: Vec<GroupName> = groups.into_iter().collect();
        let Some(tx) = events.sender() else { return groups.iter().map(|_| Err(MembershipError::Stopped)).collect() };
        let asked = self.join_many_with(groups, Some(tx)).await;
        asked.into_iter().map(|r| r.map(drop)).collect()
    }

    /// For `Drop` implementations: every group of a merged receiver is left in the
    /// background and the state requests the driver still held for it are declined (what
    /// the driver does by itself once it finds the receiver dropped, but at once).
    pub fn leave_merged_in_background(&self, events: &MergedEvents) {
        self.command_in_background(Command::DropMerged { id: events.id() });
    }

    /// Leaves `group`; [`GroupEvent::Left`] follows.
    pub async fn leave(&self, group: GroupName) -> Result<(), MembershipError> {
        self.ask(|reply| Command::Leave { group, reply }).await.unwrap_or(Err(MembershipError::Stopped))
    }

    /// Multicasts `payload` to `group` (a member's or a non-member's send).
    pub async fn send(
        &self,
        group: GroupName,
        order: Order,
        payload: Bytes,
        replies: Replies,
    ) -> Result<MsgId, SendError> {
        let sent = self.ask(|reply| Command::Send { group, order, payload, replies, reply }).await;
        sent.unwrap_or(Err(SendError::Stopped)).map(|s| s.id)
    }

    /// Multicasts what `reader` gives, to its end, without holding it on the heap: it goes to
    /// a spool file (in `DATA_DIR/spool`, or the system's temporary directory), unlinked at
    /// once, that is mapped back and sent from there in fragments like any large message
    /// (the kernel pages it in as they go, and may drop those pages again). Larger than
    /// `engine.max_message_bytes` is refused (`SendError::TooLarge`) once the reading passes
    /// it.
    pub async fn send_reader(
        &self,
        group: GroupName,
        order: Order,
        reader: impl tokio::io::AsyncRead + Unpin,
    ) -> Result<MsgId, SendReaderError> {
        let payload = spool::spool(reader, &self.spool.dir, self.spool.limit).await?;
        Ok(self.send(group, order, payload, Replies::None).await?)
    }

    /// Multicasts many payloads at once (one trip to the driver, and they share frames).
    pub async fn send_batch(
        &self,
        group: GroupName,
        order: Order,
        payloads: Vec<Bytes>,
    ) -> Vec<Result<MsgId, SendError>> {
        let n = payloads.len();
        let sent = self.ask(|reply| Command::SendBatch { group, order, payloads, reply }).await;
        sent.unwrap_or_else(|| (0..n).map(|_| Err(SendError::Stopped)).collect())
    }

    /// A group RPC: multicasts and waits for `replies`.
    pub async fn query(
        &self,
        group: GroupName,
        order: Order,
        payload: Bytes,
        replies: Replies,
    ) -> Result<QueryOutcome, SendError> {
        let sent = self.ask(|reply| Command::Send { group, order, payload, replies, reply }).await;
        let sent = sent.unwrap_or(Err(SendError::Stopped))?;
        match sent.outcome {
            Some(rx) => rx.await.map_err(|_| SendError::Stopped),
            None => Err(SendError::Stopped),
        }
    }

    /// As [`Runtime::query`], waiting at most `deadline`: then the outcome holds the
    /// replies received so far (`satisfied` false unless enough came).
    pub async fn query_within(
        &self,
        group: GroupName,
        order: Order,
        payload: Bytes,
        replies: Replies,
        deadline: std::time::Duration,
    ) -> Result<QueryOutcome, SendError> {
        let sent = self.ask(|reply| Command::Send { group, order, payload, replies, reply }).await;
        let sent = sent.unwrap_or(Err(SendError::Stopped))?;
        let Some(mut rx) = sent.outcome else { return Err(SendError::Stopped) };
        if let Ok(done) = tokio::time::timeout(deadline, &mut rx).await {
            return done.map_err(|_| SendError::Stopped);
        }
        // The engine ends the query with what it has; the outcome comes the usual way.
        self.commands.send(Command::GiveUpQuery { id: sent.id }).await.map_err(|_| SendError::Stopped)?;
        rx.await.map_err(|_| SendError::Stopped)
    }

    /// Answers a query (`None`: a null reply, "I will not answer").
    pub async fn reply(&self, id: MsgId, payload: Option<Bytes>) -> Result<(), NodeStopped> {
        self.commands.send(Command::Reply { id, payload }).await.map_err(|_| NodeStopped)
    }

    /// Waits until every message this node sent to `group` before the call is stable.
    pub async fn flush(&self, group: GroupName) -> Result<ViewId, FlushError> {
        self.ask(|reply| Command::Flush { group, reply }).await.unwrap_or(Err(FlushError::Stopped))
    }

    /// Gives the state a [`GroupEvent::StateRequest`] asked for.
    pub async fn provide_state(&self, group: GroupName, view: ViewId, state: Bytes) -> Result<(), NodeStopped> {
        self.commands.send(Command::ProvideState { group, view, state }).await.map_err(|_| NodeStopped)
    }

    /// Answers a [`GroupEvent::StateRequest`] with a state to be written in parts
    /// ([`Runtime::write_state`]): the group's later events flow from now on, so what is
    /// written must be the state as it was at the request (a snapshot).
    pub async fn begin_state(&self, group: GroupName, view: ViewId) -> Result<(), NodeStopped> {
        self.commands.send(Command::BeginState { group, view }).await.map_err(|_| NodeStopped)
    }

    /// Writes the next part of a state begun with [`Runtime::begin_state`] (`last` ends
    /// it). Returns once the part is handed over and the joiners have fetched enough of the
    /// parts before it (at most two of their windows, `engine.state_window_bytes`, wait at
    /// this provider), so a provider never holds much more than that of its state.
    pub async fn write_state(
        &self,
        group: GroupName,
        view: ViewId,
        part: Bytes,
        last: bool,
    ) -> Result<(), StateWriteError> {
        let asked = self.ask(|reply| Command::WriteState { group, view, part, last, reply }).await;
        asked.unwrap_or(Err(StateWriteError::Stopped))
    }

    /// A state begun with [`Runtime::begin_state`] will not be finished: its joiners ask
    /// another member (for `Drop` implementations: no waiting).
    pub fn abandon_state_in_background(&self, group: GroupName, view: ViewId) {
        self.command_in_background(Command::AbandonState { group, view });
    }

    /// A [`StateStream`]'s reader read `bytes` more.
    pub(crate) fn state_read_in_background(&self, group: GroupName, bytes: u64) {
        self.command_in_background(Command::StateRead { group, bytes });
    }

    /// The node's status.
    pub async fn status(&self) -> Result<NodeStatus, NodeStopped> {
        self.ask(|reply| Command::Status { reply }).await.ok_or(NodeStopped)
    }

    /// Stops writing the trace (before a process exits without leaving, so that what the
    /// others do after it is gone is not mistaken for its own history).
    pub async fn close_trace(&self) -> Result<(), NodeStopped> {
        self.ask(|reply| Command::CloseTrace { reply }).await.ok_or(NodeStopped)
    }

    /// Leaves the cluster cleanly (see `Engine::leave_cluster`: the others install views
    /// without this node, with its consent) and stops the driver, once it has left or after
    /// three failure timeouts. `Err` if the node had stopped already (it was excluded, lost
    /// its majority, or was shut down).
    pub async fn shutdown(&self) -> Result<(), NodeStopped> {
        self.ask(|reply| Command::Shutdown { reply }).await.ok_or(NodeStopped)
    }

    /// Starts the same clean leave as [`Runtime::shutdown`] without waiting for it (what
    /// dropping a `Node` does). Nothing happens if the node has stopped already.
    pub fn shutdown_in_background(&self) {
        let (reply, _) = oneshot::channel();
        self.command_in_background(Command::Shutdown { reply });
    }

    /// Starts leaving `group` without waiting (what dropping its handle does).
    pub fn leave_in_background(&self, group: GroupName) {
        let (reply, _) = oneshot::channel();
        self.command_in_background(Command::Leave { group, reply });
    }

    /// Tells the engine the application will not give the state a
    /// [`GroupEvent::StateRequest`] asked for (what dropping the request does): the joiners
    /// ask another member, and this group's later events go on.
    pub fn decline_state_in_background(&self, group: GroupName, view: ViewId) {
        self.command_in_background(Command::DeclineState { group, view });
    }

    /// For `Drop` implementations: no waiting, and nothing happens once the node stopped.
    fn command_in_background(&self, command: Command) {
        if let Err(mpsc::error::TrySendError::Full(command)) = self.commands.try_send(command) {
            // A full queue drains soon: hand the command to a task, if a runtime is there.
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                let commands = self.commands.clone();
                handle.spawn(async move {
                    let _ = commands.send(command).await;
                });
            }
        }
    }
}

/// Waits until the node is a member (passing on whatever node events come first), every
/// contact refused it, or `join_timeout` passed; then hands the node's events on to the
/// receiver it returns.
async fn await_membership(
    mut node_rx: mpsc::Receiver<NodeEvent>,
    mut refused_rx: mpsc::UnboundedReceiver<(String, NetError)>,
    contacts: &std::collections::BTreeSet<String>,
    join_timeout: std::time::Duration,
) -> Result<(ProcessId, mpsc::Receiver<NodeEvent>), StartError> {
    let (out_tx, out_rx) = mpsc::channel(NODE_EVENT_QUEUE);
    let mut refused = std::collections::BTreeSet::new();
    let mut last_error: std::collections::BTreeMap<String, String> = std::collections::BTreeMap::new();
    let joined = tokio::time::timeout(join_timeout, async {
        loop {
            tokio::select! {
                ev = node_rx.recv() => {
                    let ev = ev?;
                    if let NodeEvent::Joined { me } = &ev {
                        let me = me.clone();
                        let _ = out_tx.send(ev).await;
                        return Some(Ok(me));
                    }
                    let _ = out_tx.send(ev).await;
                }
                Some((by, error)) = refused_rx.recv() => {
                    last_error.insert(by.clone(), error.to_string());
                    if !matches!(error, NetError::Refused) {
                        continue;
                    }
                    refused.insert(by);
                    // Every contact said no: nothing will let this node in.
                    if !contacts.is_empty() && contacts.is_subset(&refused) {
                        return Some(Err(()));
                    }
                }
            }
        }
    })
    .await;
    let me = match joined {
        Ok(Some(Ok(me))) => me,
        // (Dropping the command sender stops the driver, as after a timeout.)
        Ok(Some(Err(()))) => return Err(StartError::Refused(refused.into_iter().collect())),
        _ if !refused.is_empty() => return Err(StartError::Refused(refused.into_iter().collect())),
        _ => {
            let seen = if last_error.is_empty() {
                "no contact answered (are they up?)".to_string()
            } else {
                last_error.iter().map(|(c, e)| format!("contact {c}: {e}")).collect::<Vec<_>>().join("; ")
            };
            return Err(StartError::JoinTimeout { waited: join_timeout, seen });
        }
    };
    tokio::spawn(async move {
        while let Some(ev) = node_rx.recv().await {
            if out_tx.send(ev).await.is_err() {
                return;
            }
        }
    });
    Ok((me, out_rx))
}

/// The node's driver has stopped: it takes no more commands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("this node has stopped")]
pub struct NodeStopped;

/// Asks the node listening at `addr` for its status (what `synchrony status` does).
pub async fn request_status(addr: &str, secret: Option<&[u8]>) -> Result<NodeStatus, StatusError> {
    use tokio::io::AsyncWriteExt;
    let go = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.map_err(NetError::Io)?;
        s.write_all(&net::control(net::KIND_STATUS_REQUEST, &(), secret)).await.map_err(NetError::Io)?;
        let (kind, body) = match net::read_frame(&mut s).await {
            Err(NetError::Io(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Err(StatusError::Refused),
            r => r?,
        };
        if kind == net::KIND_REFUSED {
            return Err(StatusError::Refused);
        }
        if kind != net::KIND_STATUS {
            return Err(StatusError::Net(NetError::Malformed(format!("expected a status, got kind {kind}"))));
        }
        Ok(serde_json::from_slice(&body)?)
    };
    tokio::time::timeout(net::HANDSHAKE_TIMEOUT, go).await.map_err(|_| StatusError::Net(NetError::Timeout))?
}

#[cfg(test)]
mod data_dir_tests {
    use super::{claim_data_dir, StartError};

    #[test]
    fn a_data_directory_is_one_nodes() {
        let dir = std::env::temp_dir().join(format!("synchrony-claim-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        claim_data_dir(&dir, "a").expect("a fresh directory is taken");
        claim_data_dir(&dir, "a").expect("and is its own again");
        match claim_data_dir(&dir, "b") {
            Err(StartError::DataDirOwner { owner, name, .. }) => {
                assert_eq!((owner.as_str(), name.as_str()), ("a", "b"))
            }
            other => panic!("another node's directory was not refused: {other:?}"),
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
