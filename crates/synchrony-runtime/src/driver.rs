//! The driver: one tokio task that owns the engine, feeds it packets, commands and timer
//! expiries, and routes what comes out to sockets, group handles and the trace.

use crate::config::Config;
use crate::listed::Listed;
use crate::merged::{MergedBatch, MergedId, MergedOut, MergedTx, GROUP_QUEUE};
use crate::net::{self, DialTarget, Hello, NetError, NetEvent};
use crate::state_stream::{Digest, Piece, StateWriteError};
use crate::status::{GroupStatus, NetCounters, NodeStatus};
use crate::trace::TraceWriter;
use crate::transport::{Admitted, Conn, Peers};
use crate::{GroupEvent, NodeEvent, Verifiers};
use bytes::Bytes;
use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;
use synchrony_engine::{
    Delivery, Engine, Event, FlushError, GroupName, Instant, MembershipError, MsgId, Order, PartitionReason, ProcessId,
    QueryOutcome, Replies, SendError, ViewId,
};
use synchrony_trace::TraceEvent;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant as TokioInstant;

/// Deliveries handed to a group's handle at once (one channel operation and one wake-up).
const GROUP_BATCH: usize = 256;
/// Events moved to the application between checks of the engine's timers.
const TIMERS_EVERY: usize = 4096;
/// How often the driver samples rates and retries connections.
const HOUSEKEEPING: Duration = Duration::from_millis(50);
/// Inputs handled before the engine's output is flushed: this is what batches frames.
const INPUT_BATCH: usize = 512;
/// Own messages whose send-to-delivery time is being measured at once.
const IN_FLIGHT_MAX: usize = 65_536;

/// A message handed to the engine: its id, and for a query the place its outcome goes.
pub(crate) struct Sent {
    pub(crate) id: MsgId,
    pub(crate) outcome: Option<oneshot::Receiver<QueryOutcome>>,
}

/// A `flush()` caller, and the last message it had sent when it called.
type FlushWaiter = (oneshot::Sender<Result<ViewId, FlushError>>, Option<String>, TokioInstant);

/// A state this node writes in parts: who it is for (for the trace), its digest, and the
/// writer's call waiting while the joiners have not fetched enough of it.
struct Writer {
    joiners: Vec<ProcessId>,
    digest: Digest,
    waiting: Option<oneshot::Sender<Result<(), StateWriteError>>>,
}

/// Where a group's events go.
enum Sink {
    /// The group's own handle (`Runtime::join`, `Runtime::join_many`).
    Own(mpsc::Sender<Vec<GroupEvent>>),
    /// A receiver shared with other groups (`Runtime::join_merged`).
    Merged(MergedId),
}

/// A receiver with a backlog, whose room the driver waits for.
enum Room {
    Own(mpsc::Sender<Vec<GroupEvent>>),
    Merged(mpsc::Sender<MergedBatch>),
}

/// What the application asks of the driver.
pub(crate) enum Command {
    Join {
        group: GroupName,
        verifiers: Verifiers,
        /// The joiner reads its state as a stream (`Runtime::join_streaming`).
        stream: Option<mpsc::UnboundedSender<Piece>>,
        reply: oneshot::Sender<Result<crate::GroupEvents, MembershipError>>,
    },
    JoinMany {
        groups: Vec<GroupName>,
        /// The receiver they share (`Runtime::join_merged`), or none: a handle each.
        into: Option<MergedTx>,
        /// A handle per group (none for a merged join).
        reply: oneshot::Sender<Vec<Result<Option<crate::GroupEvents>, MembershipError>>>,
    },
    /// A merged receiver is dropped: its groups are left.
    DropMerged {
        id: MergedId,
    },
    Leave {
        group: GroupName,
        reply: oneshot::Sender<Result<(), MembershipError>>,
    },
    Send {
        group: GroupName,
        order: Order,
        payload: Bytes,
        replies: Replies,
        reply: oneshot::Sender<Result<Sent, SendError>>,
    },
    SendBatch {
        group: GroupName,
        order: Order,
        payloads: Vec<Bytes>,
        reply: oneshot::Sender<Vec<Result<MsgId, SendError>>>,
    },
    Reply {
        id: MsgId,
        payload: Option<Bytes>,
    },
    Flush {
        group: GroupName,
        reply: oneshot::Sender<Result<ViewId, FlushError>>,
    },
    ProvideState {
        group: GroupName,
        view: ViewId,
        state: Bytes,
    },
    DeclineState {
        group: GroupName,
        view: ViewId,
    },
    BeginState {
        group: GroupName,
        view: ViewId,
    },
    WriteState {
        group: GroupName,
        view: ViewId,
        part: Bytes,
        last: bool,
        reply: oneshot::Sender<Result<(), StateWriteError>>,
    },
    AbandonState {
        group: GroupName,
        view: ViewId,
    },
    StateRead {
        group: GroupName,
        bytes: u64,
    },
    GiveUpQuery {
        id: MsgId,
    },
    Status {
        reply: oneshot::Sender<NodeStatus>,
    },
    CloseTrace {
        reply: oneshot::Sender<()>,
    },
    Shutdown {
        reply: oneshot::Sender<()>,
    },
}

/// Messages sent and delivered per second, over the last second or so.
struct Rates {
    since: TokioInstant,
    sent: u64,
    delivered: u64,
    sent_per_sec: f64,
    delivered_per_sec: f64,
}

impl Rates {
    fn new() -> Self {
        Self { since: TokioInstant::now(), sent: 0, delivered: 0, sent_per_sec: 0.0, delivered_per_sec: 0.0 }
    }

    /// The engine's counters now: the rates move on once a second has passed.
    fn update(&mut self, sent: u64, delivered: u64) {
        let elapsed = self.since.elapsed().as_secs_f64();
        if elapsed >= 1.0 {
            let rate = |a: u64, b: u64| a.saturating_sub(b) as f64 / elapsed;
            self.sent_per_sec = rate(sent, self.sent);
            self.delivered_per_sec = rate(delivered, self.delivered);
            *self = Self { since: TokioInstant::now(), sent, delivered, ..*self };
        }
    }
}

/// The engine, and everything the application and the network are waiting on.
pub(crate) struct Driver {
    config: Config,
    /// Contacts that could not be joined through, and why, for `Runtime::start`'s error.
    refusals: Option<mpsc::UnboundedSender<(String, NetError)>>,
    epoch: TokioInstant,
    /// Shared with every connection's tasks (see `net::Keepalive`).
    keepalive: net::Keepalive,
    engine: Option<Engine>,
    incarnation: u64,
    peers: Peers,
    /// Contacts still to be found (contact phase, before the engine exists).
    contacts: Vec<String>,
    contact_names: BTreeSet<String>,
    groups: HashMap<GroupName, Sink>,
    /// Receivers shared by many groups (`Runtime::join_merged`).
    merged: HashMap<MergedId, MergedOut>,
    /// Merged receivers with events not yet handed over (see `hand_over_all`).
    merged_pending: Vec<MergedId>,
    /// Deliveries not yet handed to their groups' handles (see `deliver_to_group`).
    outgoing: HashMap<GroupName, Vec<GroupEvent>>,
    /// Batches a group's handle had no room for: while any wait, the driver reads nothing
    /// from the network (see `listen`), so these stay few.
    backlog: HashMap<GroupName, VecDeque<Vec<GroupEvent>>>,
    /// Since when an application has been behind (a backlog exists).
    behind_since: Option<TokioInstant>,
    wanted: BTreeSet<GroupName>,
    verifiers: HashMap<GroupName, Verifiers>,
    installed: HashMap<GroupName, ViewId>,
    queries: HashMap<MsgId, oneshot::Sender<QueryOutcome>>,
    flushes: HashMap<GroupName, VecDeque<FlushWaiter>>,
    /// When each group's join was asked (for the state transfer histogram).
    join_started: HashMap<GroupName, TokioInstant>,
    /// Sends waiting for room in their group's window (flow control), in order.
    parked: HashMap<GroupName, VecDeque<Command>>,
    /// Sends that had to wait, for the metrics.
    flow_waits: u64,
    /// Own messages in flight to their local delivery (bounded; for the latency histogram).
    in_flight: HashMap<MsgId, TokioInstant>,
    last_sent: HashMap<GroupName, MsgId>,
    state_requests: HashMap<(GroupName, ViewId), Vec<ProcessId>>,
    /// States read as streams: where each group's parts go, and the digest of what came
    /// (for the trace); then, once one is complete, its view, length and digest until its
    /// `State` event places it.
    state_sinks: HashMap<GroupName, (mpsc::UnboundedSender<Piece>, Digest)>,
    streamed: HashMap<GroupName, (ViewId, u64, String)>,
    /// States this node writes in parts, and the write waiting for its joiners to fetch.
    writers: HashMap<(GroupName, ViewId), Writer>,
    node_events: mpsc::Sender<NodeEvent>,
    trace: Option<TraceWriter>,
    rates: Rates,
    /// A shutdown under way: its caller, and when to stop at the latest.
    shutdown: Option<(oneshot::Sender<()>, TokioInstant)>,
    /// The peer list (`Config::peers`), and whether this node is on it.
    listed: Listed,
    on_list: bool,
}

impl Driver {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        config: Config,
        incarnation: u64,
        listen: String,
        events: net::NetSenders,
        ids: Arc<AtomicU64>,
        node_events: mpsc::Sender<NodeEvent>,
        trace: Option<TraceWriter>,
        keepalive: net::Keepalive,
        net: tokio::runtime::Handle,
        listed: Listed,
    ) -> Self {
        let hello = Hello::new(&config.name, incarnation, &listen);
        let on_list = listed.names_node(&listen, &config.listen);
        let mut book = HashMap::new();
        book.insert(config.name.clone(), listen.clone());
        let contacts: Vec<String> = config
            .contacts
            .iter()
            .chain(listed.entries())
            .filter(|c| **c != listen && **c != config.listen)
            .cloned()
            .collect::<BTreeSet<String>>()
            .into_iter()
            .collect();
        let peers = Peers {
            my_name: config.name.clone(),
            hello,
            book,
            conns: HashMap::new(),
            connecting: HashSet::new(),
            retry_at: HashMap::new(),
            lost: HashSet::new(),
            pending: HashMap::new(),
            queue_max: config.peer_queue_frames,
            keepalive: keepalive.clone(),
            net,
            next_conn: ids,
            events,
            counters: NetCounters::default(),
            rejections_logged: std::collections::BTreeMap::new(),
        };
        let mut d = Self {
            refusals: None,
            config,
            epoch: keepalive.epoch,
            keepalive,
            engine: None,
            incarnation,
            peers,
            contacts,
            contact_names: BTreeSet::new(),
            groups: HashMap::new(),
            merged: HashMap::new(),
            merged_pending: Vec::new(),
            outgoing: HashMap::new(),
            backlog: HashMap::new(),
            behind_since: None,
            wanted: BTreeSet::new(),
            verifiers: HashMap::new(),
            installed: HashMap::new(),
            queries: HashMap::new(),
            flushes: HashMap::new(),
            join_started: HashMap::new(),
            parked: HashMap::new(),
            flow_waits: 0,
            in_flight: HashMap::new(),
            last_sent: HashMap::new(),
            state_requests: HashMap::new(),
            state_sinks: HashMap::new(),
            streamed: HashMap::new(),
            writers: HashMap::new(),
            node_events,
            trace,
            rates: Rates::new(),
            shutdown: None,
            listed,
            on_list,
        };
        if d.contacts.is_empty() || d.on_list {
            // Founds a new cluster, or (on a peer list) bootstraps one with the listed peers.
            d.start_engine();
        }
        d.dial_contacts();
        d
    }

    fn now(&self) -> Instant {
        Instant::from_epoch(self.epoch.elapsed())
    }

    /// Where contacts that refuse this node's handshake are reported (while it starts).
    pub(crate) fn report_refusals(&mut self, tx: mpsc::UnboundedSender<(String, NetError)>) {
        self.refusals = Some(tx);
    }

    fn me(&self) -> ProcessId {
        ProcessId::new(self.config.name.as_str(), self.incarnation)
    }

    fn dial_contacts(&mut self) {
        for c in self.contacts.clone() {
            // (A listed peer already connected under its name needs no second connection.)
            let known = self.peers.book.iter().any(|(n, a)| *a == c && self.peers.conns.contains_key(n));
            if known {
                continue;
            }
            let target = DialTarget::Contact(c.clone());
            if self.peers.connecting.insert(target.clone()) {
                self.peers.dial(target, c);
            }
        }
    }

    fn start_engine(&mut self) {
        let mut names = self.contact_names.clone();
        if self.on_list {
            // The listed peers whose names it knows (more come as they connect).
            names = self.listed_names();
        }
        let contacts: Vec<ProcessId> = names.iter().map(|n| ProcessId::contact(n.as_str())).collect();
        let seed = self.incarnation ^ synchrony_engine::fnv1a(self.config.name.as_bytes());
        let config = self.config.engine_config(contacts, seed, self.on_list);
        let me = self.me();
        tracing::info!(me = %me, "starting the engine");
        if let Some(t) = &mut self.trace {
            t.set_process(me.to_string());
        }
        let mut engine = Engine::new(config, me, self.now());
        for (g, v) in &self.verifiers {
            engine.set_join_verifier(g.clone(), v.join.clone());
        }
        self.engine = Some(engine);
        // A new incarnation's engine hears of a backlog (if any) at the next `listen`.
        self.behind_since = None;
    }

    /// The driver's loop; returns when the node shuts down. It never waits on the
    /// application: when a group's handle is full it stops reading the network until the
    /// application takes a batch, and meanwhile keeps its timers and heartbeats going.
    pub(crate) async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut net_control: mpsc::Receiver<NetEvent>,
        mut net_frames: mpsc::Receiver<NetEvent>,
    ) {
        let mut tick = tokio::time::interval(HOUSEKEEPING);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            self.turned();
            self.pump().await;
            self.listen();
            if self.shutdown_done() {
                if let Some((reply, _)) = self.shutdown.take() {
                    let _ = reply.send(());
                }
                return;
            }
            let deadline = self
                .engine
                .as_ref()
                .and_then(|e| e.poll_timeout())
                .map(|t| self.epoch + t.since_epoch())
                .unwrap_or_else(|| TokioInstant::now() + Duration::from_secs(3600));
            let deadline = self.shutdown.as_ref().map_or(deadline, |(_, until)| deadline.min(*until));
            // A handle (or merged receiver) with a backlog, to wait for room in.
            let full = self.backlog.keys().next().and_then(|g| match self.groups.get(g) {
                Some(Sink::Own(tx)) => Some(Room::Own(tx.clone())),
                _ => None,
            });
            let full = full
                .or_else(|| self.merged.values().find(|m| !m.backlog.is_empty()).map(|m| Room::Merged(m.tx.clone())));
            let behind = full.is_some();
            // (The permit goes unused: the backlog drains in order on the next pump.)
            let room = async move {
                match full {
                    Some(Room::Own(tx)) => drop(tx.reserve_owned().await),
                    Some(Room::Merged(tx)) => drop(tx.reserve_owned().await),
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                c = commands.recv() => {
                    let Some(c) = c else { return };
                    let turn = TokioInstant::now();
                    self.cork();
                    self.on_command(c);
                    for _ in 0..INPUT_BATCH {
                        if turn.elapsed() >= self.turn_budget() {
                            break;
                        }
                        match commands.try_recv() {
                            Ok(c) => self.on_command(c),
                            Err(_) => break,
                        }
                    }
                }
                Some(ev) = net_frames.recv(), if !behind => {
                    // Up to INPUT_BATCH frames (a read may carry many) between pumps, so that
                    // timers and heartbeats are never long behind.
                    let turn = TokioInstant::now();
                    // A frame after a long stall makes the engine judge silence first (as
                    // after a SIGSTOP): it must know what the transport heard meanwhile.
                    self.pass_heard();
                    self.cork();
                    let frames = ev.frames();
                    self.on_net(ev);
                    self.read_queued(&mut net_frames, turn, frames);
                }
                Some(ev) = net_control.recv() => {
                    self.cork();
                    self.on_net(ev);
                }
                _ = tokio::time::sleep_until(deadline) => {
                    // Frames that came while the driver was busy are read before silence
                    // is judged: a peer is not suspected for what this process had not
                    // read yet (one costly input, thousands of groups' decision, say).
                    if !behind {
                        self.cork();
                        self.read_queued(&mut net_frames, TokioInstant::now(), 0);
                    }
                    self.pass_heard();
                    let now = self.now();
                    if let Some(e) = &mut self.engine {
                        e.handle_timeout(now);
                    }
                }
                () = room => self.drain_backlogs(),
                _ = tick.tick() => self.housekeeping(),
            }
        }
    }

    /// Keeps the connections' keepalives going while the engine runs (and stops them at
    /// once when it stopped: a stopped node must fall silent).
    fn turned(&self) {
        let alive = self.engine.as_ref().is_some_and(|e| {
            matches!(e.status(), synchrony_engine::Status::Member | synchrony_engine::Status::Joining)
        });
        self.keepalive.driver_turned(alive);
    }

    /// Tells the engine when each peer was last heard by its connection's reader (frames,
    /// keepalives), before the engine judges silence: a peer is not suspected for frames
    /// this node has not got to, nor for a long input that kept its own driver busy.
    fn pass_heard(&mut self) {
        let Some(e) = self.engine.as_mut() else { return };
        for (name, c) in self.peers.conns.iter_mut() {
            if let Some(at) = c.heard.last().filter(|at| c.passed.is_none_or(|p| *at > p)) {
                c.passed = Some(at);
                e.handle_heard(&ProcessId::new(name.as_str(), c.incarnation), Instant::from_epoch(at));
            }
        }
    }

    /// Handles the frames already queued, until `INPUT_BATCH` (counting the `frames` this
    /// turn began with) or the turn's budget since `turn` is spent.
    fn read_queued(&mut self, net_frames: &mut mpsc::Receiver<NetEvent>, turn: TokioInstant, mut frames: usize) {
        while frames < INPUT_BATCH && turn.elapsed() < self.turn_budget() {
            match net_frames.try_recv() {
                Ok(ev) => {
                    frames += ev.frames();
                    self.on_net(ev);
                }
                Err(_) => break,
            }
        }
    }

    /// How long one turn may take in a batch of inputs before timers, heartbeats and the
    /// other sources get theirs: a burst of costly inputs (thousands of joins and state
    /// transfers at once) must not keep the node silent until its peers suspect it.
    fn turn_budget(&self) -> Duration {
        self.config.engine.heartbeat_interval / 2
    }

    /// Whether a shutdown under way may end: this node left the cluster (and its last frames
    /// had a moment to go out), stopped, never joined, or ran out of time.
    fn shutdown_done(&mut self) -> bool {
        let Some((_, until)) = &mut self.shutdown else { return false };
        let now = TokioInstant::now();
        match self.engine.as_ref().map(|e| e.status()) {
            Some(synchrony_engine::Status::Member) => now >= *until,
            Some(synchrony_engine::Status::Left) => {
                // A moment for its last frames (a commit it led) to reach the others.
                *until = (*until).min(now + self.config.engine.heartbeat_interval * 2);
                now >= *until
            }
            _ => true,
        }
    }

    /// Tells the engine whether the network is being read (it is not while an application
    /// is behind), and stops the node if one has been behind for too long.
    fn listen(&mut self) {
        let behind = self.behind();
        let now = self.now();
        let Some(e) = self.engine.as_mut() else { return };
        match self.behind_since {
            None if behind => {
                self.behind_since = Some(TokioInstant::now());
                self.peers.counters.reading_paused += 1;
                e.handle_listening(now, false);
            }
            Some(_) if !behind => {
                self.behind_since = None;
                e.handle_listening(now, true);
            }
            Some(since)
                if since.elapsed() > self.config.app_stall_timeout
                    && e.status() == synchrony_engine::Status::Member =>
            {
                tracing::warn!(me = %e.id(), "the application took no events for too long: stopping");
                e.handle_stalled(now);
            }
            _ => {}
        }
    }

    /// The names of the peers on the list that this node knows of (connected, or named in
    /// a peer's address book), itself aside.
    fn listed_names(&self) -> BTreeSet<String> {
        let book = self.peers.book.iter();
        book.filter(|(n, a)| **n != self.config.name && self.listed.contains(a)).map(|(n, _)| n.clone()).collect()
    }

    /// Tells a bootstrapping engine of the listed peers it did not know of.
    fn pass_listed(&mut self) {
        if !self.on_list {
            return;
        }
        let names = self.listed_names();
        if let Some(e) = self.engine.as_mut().filter(|e| e.status() == synchrony_engine::Status::Joining) {
            for n in names {
                e.add_peer(&n);
            }
        }
    }

    fn housekeeping(&mut self) {
        let names: Vec<String> =
            self.peers.pending.iter().filter(|(_, q)| !q.is_empty()).map(|(n, _)| n.clone()).collect();
        for n in names {
            self.peers.connect(&n, false);
        }
        // Contacts until there is an engine; on a peer list, the listed peers not yet
        // reached, until it is a member (they may start at any time).
        let seeking = self.engine.is_none()
            || (self.on_list && self.engine.as_ref().is_some_and(|e| e.status() == synchrony_engine::Status::Joining));
        if seeking && !self.peers.connecting.iter().any(|t| matches!(t, DialTarget::Contact(_))) {
            self.dial_contacts();
        }
        if self.in_flight.len() >= IN_FLIGHT_MAX {
            self.in_flight.clear(); // messages that will not come back here (lost, or a group left)
        }
        if let Some(e) = &self.engine {
            let pending = self.peers.pending.values().map(|q| q.len()).sum();
            crate::metrics::publish(e.stats(), &self.peers.counters, pending, e.members().len());
            metrics::counter!("synchrony_flow_control_waits_total").absolute(self.flow_waits);
            let waiting: usize = self.parked.values().map(|q| q.len()).sum();
            metrics::gauge!("synchrony_sends_waiting").set(waiting as f64);
        }
        let (sent, delivered) = self.engine.as_ref().map_or((0, 0), |e| (e.stats().sent, e.stats().delivered));
        self.rates.update(sent, delivered);
    }

    /// Lets the inputs of one batch share frames (released by `pump`).
    fn cork(&mut self) {
        if let Some(e) = self.engine.as_mut() {
            e.cork();
        }
    }

    /// Moves the engine's output to sockets and the application.
    async fn pump(&mut self) {
        let now = self.now();
        if let Some(e) = self.engine.as_mut() {
            e.uncork(now);
        }
        let mut events = 0usize;
        loop {
            let Some(engine) = self.engine.as_mut() else { return };
            while let Some(t) = engine.poll_transmit() {
                self.peers.send(&t.to.name, net::Outgoing::engine(t.frame));
            }
            if let Some(d) = engine.poll_state_data() {
                self.on_state_data(now, d);
                continue;
            }
            match engine.poll_event() {
                Some(ev) => {
                    self.on_event(ev);
                    events += 1;
                    if events.is_multiple_of(TIMERS_EVERY) {
                        self.timers_and_yield().await;
                    }
                }
                // Room may have opened for waiting sends; what they make goes round again.
                None if self.release_parked() > 0 => {}
                None => {
                    self.release_writers();
                    return self.hand_over_all();
                }
            }
        }
    }

    /// A part of a state read as a stream goes to its reader (one that is gone counts as
    /// read: the transfer must not wait for it); the empty last part ends the stream.
    fn on_state_data(&mut self, now: Instant, d: synchrony_engine::StateData) {
        let delivered_sets = self.config.trace_states_as_delivered_sets;
        let tracing = self.trace.is_some();
        let unread = match self.state_sinks.get_mut(&d.group) {
            Some((tx, _)) if d.data.is_empty() => {
                let _ = tx.send(Piece::End);
                let (_, digest) = self.state_sinks.remove(&d.group).expect("present");
                self.streamed.insert(d.group, (d.view, d.offset, digest.finish()));
                return;
            }
            Some((tx, digest)) => {
                if tracing {
                    if d.offset == 0 {
                        *digest = Digest::new(delivered_sets);
                    }
                    digest.write(&d.data);
                }
                let len = d.data.len() as u64;
                tx.send(Piece::Data { offset: d.offset, data: d.data }).is_err().then_some(len)
            }
            None => Some(d.data.len() as u64),
        };
        if let (Some(len), Some(e)) = (unread.filter(|n| *n > 0), self.engine.as_mut()) {
            e.state_read(now, &d.group, len);
        }
    }

    /// Writes of states in parts waiting for their joiners: they return once what is held
    /// is under two windows, or nobody needs the state any more.
    fn release_writers(&mut self) {
        if self.writers.values().all(|w| w.waiting.is_none()) {
            return;
        }
        let limit = 2 * self.config.engine.state_window_bytes as u64;
        let Some(e) = self.engine.as_ref() else { return };
        for ((g, v), w) in self.writers.iter_mut() {
            let answer = match e.state_backlog(g, *v) {
                None => Err(StateWriteError::NotNeeded),
                Some(held) if held < limit => Ok(()),
                Some(_) => continue,
            };
            if let Some(reply) = w.waiting.take() {
                let _ = reply.send(answer);
            }
        }
    }

    /// In a long run of events (a joiner's backlog released with its state): the engine's
    /// timers, and (on a one-thread runtime) the writer tasks that put heartbeats on the
    /// wire, get their turn.
    async fn timers_and_yield(&mut self) {
        self.turned();
        self.pass_heard();
        let now = self.now();
        if let Some(e) = self.engine.as_mut().filter(|e| e.poll_timeout().is_some_and(|t| t <= now)) {
            e.handle_timeout(now);
        }
        tokio::task::yield_now().await;
    }

    /// Writes a trace event; it is only built when there is a trace (off the hot path).
    fn record(&mut self, e: impl FnOnce() -> TraceEvent) {
        if let Some(t) = &mut self.trace {
            t.record(e());
        }
    }

    /// Writes a `state_sent` or `state` event, marked as the delivered set when the
    /// application says its state is (`Config::trace_states_as_delivered_sets`).
    fn record_state(&mut self, e: impl FnOnce() -> TraceEvent) {
        let delivered = self.config.trace_states_as_delivered_sets;
        self.record(|| if delivered { e().of_delivered_set() } else { e() });
    }

    /// Writes what an engine event made in the trace (see `TraceEvent::of_engine`).
    fn record_traced(&mut self, traced: Option<TraceEvent>) {
        if let (Some(t), Some(e)) = (&mut self.trace, traced) {
            t.record(e);
        }
    }

    /// Queues an event for a group's handle. Deliveries go in batches (handed over when
    /// one is full and at the end of each pump); any other event goes at once, after the
    /// deliveries before it.
    fn deliver_to_group(&mut self, group: &GroupName, ev: GroupEvent) {
        match self.groups.get(group) {
            None => return,
            Some(Sink::Merged(id)) => return self.deliver_merged(*id, group, ev),
            Some(Sink::Own(_)) => {}
        }
        let message = matches!(ev, GroupEvent::Message(_));
        if !message && self.outgoing.is_empty() && self.backlog.is_empty() {
            // Nothing queued before it anywhere (a view change of thousands of groups
            // comes this way): straight to the handle, as `hand_over` would send it.
            return self.send_batch_to(group, vec![ev]);
        }
        let batch = self.outgoing.entry(group.clone()).or_default();
        batch.push(ev);
        if !message || batch.len() >= GROUP_BATCH {
            self.hand_over(group);
        }
    }

    /// Hands a group's queued events to its handle, behind any batches still waiting.
    fn hand_over(&mut self, group: &GroupName) {
        let Some(batch) = self.outgoing.remove(group).filter(|b| !b.is_empty()) else { return };
        if let Some(q) = self.backlog.get_mut(group) {
            q.push_back(batch);
            return self.drain_backlog(group);
        }
        self.send_batch_to(group, batch);
    }

    /// Queues an event for a merged receiver: every event goes in its batch, handed over
    /// when the batch is full and at the end of each pump (`hand_over_all`), so that a
    /// view change of thousands of groups costs the application a few wake-ups.
    fn deliver_merged(&mut self, id: MergedId, group: &GroupName, ev: GroupEvent) {
        let Some(m) = self.merged.get_mut(&id) else { return };
        if m.pending.is_empty() {
            self.merged_pending.push(id);
        }
        m.pending.push((group.clone(), ev));
        if m.pending.len() >= GROUP_BATCH {
            self.hand_over_merged(id);
        }
    }

    /// Hands a merged receiver's queued events over, behind any batches still waiting.
    fn hand_over_merged(&mut self, id: MergedId) {
        let Some(m) = self.merged.get_mut(&id).filter(|m| !m.pending.is_empty()) else { return };
        let batch = std::mem::take(&mut m.pending);
        if !m.backlog.is_empty() {
            m.backlog.push_back(batch);
            return self.drain_merged(id);
        }
        match m.tx.try_send(batch) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(batch)) => m.backlog.push_back(batch),
            Err(mpsc::error::TrySendError::Closed(batch)) => self.merged_dropped(id, batch),
        }
    }

    /// Hands a merged receiver's waiting batches over while it has room.
    fn drain_merged(&mut self, id: MergedId) {
        let Some(m) = self.merged.get_mut(&id) else { return };
        while let Some(batch) = m.backlog.pop_front() {
            match m.tx.try_send(batch) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(batch)) => {
                    m.backlog.push_front(batch);
                    return;
                }
                Err(mpsc::error::TrySendError::Closed(batch)) => return self.merged_dropped(id, batch),
            }
        }
    }

    /// A merged receiver is gone: each of its groups is treated as a dropped handle (left,
    /// its state requests declined), with what was still to be handed over to it.
    fn merged_dropped(&mut self, id: MergedId, batch: MergedBatch) {
        let Some(m) = self.merged.remove(&id) else { return };
        let groups: Vec<GroupName> = self
            .groups
            .iter()
            .filter(|(_, s)| matches!(s, Sink::Merged(i) if *i == id))
            .map(|(g, _)| g.clone())
            .collect();
        for g in groups {
            self.handle_dropped(&g, Vec::new());
        }
        let now = self.now();
        for (g, ev) in batch.into_iter().chain(m.backlog.into_iter().flatten()).chain(m.pending) {
            if let GroupEvent::StateRequest { view, .. } = ev {
                self.decline_state(now, &g, view);
            }
        }
    }

    /// Sends a batch to a group's handle, nothing of the group waiting before it.
    fn send_batch_to(&mut self, group: &GroupName, batch: Vec<GroupEvent>) {
        let Some(Sink::Own(tx)) = self.groups.get(group) else { return };
        match tx.try_send(batch) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(batch)) => {
                self.backlog.insert(group.clone(), VecDeque::from([batch]));
            }
            Err(mpsc::error::TrySendError::Closed(batch)) => self.handle_dropped(group, batch),
        }
    }

    /// A group's handle is gone without leaving: the node leaves the group, and the state
    /// requests it will never answer are declined.
    fn handle_dropped(&mut self, group: &GroupName, batch: Vec<GroupEvent>) {
        self.groups.remove(group);
        self.backlog.remove(group);
        let now = self.now();
        if self.wanted.remove(group) {
            if let Some(e) = self.engine.as_mut() {
                let _ = e.leave(now, group.clone());
            }
        }
        for ev in batch {
            if let GroupEvent::StateRequest { view, .. } = ev {
                self.decline_state(now, group, view);
            }
        }
    }

    fn decline_state(&mut self, now: Instant, group: &GroupName, view: ViewId) {
        self.state_requests.remove(&(group.clone(), view));
        if let Some(e) = self.engine.as_mut() {
            e.decline_state(now, group, view);
        }
    }

    /// Hands a group's waiting batches over while its handle has room.
    fn drain_backlog(&mut self, group: &GroupName) {
        let Some(q) = self.backlog.get_mut(group) else { return };
        let Some(Sink::Own(tx)) = self.groups.get(group) else {
            self.backlog.remove(group);
            return;
        };
        while let Some(batch) = q.pop_front() {
            match tx.try_send(batch) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(batch)) => {
                    q.push_front(batch);
                    return;
                }
                Err(mpsc::error::TrySendError::Closed(mut batch)) => {
                    for rest in self.backlog.remove(group).unwrap_or_default() {
                        batch.extend(rest);
                    }
                    return self.handle_dropped(group, batch);
                }
            }
        }
        self.backlog.remove(group);
    }

    fn drain_backlogs(&mut self) {
        let groups: Vec<GroupName> = self.backlog.keys().cloned().collect();
        for g in groups {
            self.drain_backlog(&g);
        }
        let merged: Vec<MergedId> =
            self.merged.iter().filter(|(_, m)| !m.backlog.is_empty()).map(|(i, _)| *i).collect();
        for id in merged {
            self.drain_merged(id);
        }
    }

    /// Whether some handle or merged receiver had no room for what waits for it.
    fn behind(&self) -> bool {
        !self.backlog.is_empty() || self.merged.values().any(|m| !m.backlog.is_empty())
    }

    /// Hands every group's queued events over (before anything that must follow them).
    fn hand_over_all(&mut self) {
        for id in std::mem::take(&mut self.merged_pending) {
            self.hand_over_merged(id);
        }
        self.hand_over_outgoing();
    }

    /// Hands the queued deliveries of groups with their own handles over.
    fn hand_over_outgoing(&mut self) {
        if self.outgoing.is_empty() {
            return;
        }
        let groups: Vec<GroupName> = self.outgoing.keys().cloned().collect();
        for g in groups {
            self.hand_over(&g);
        }
    }

    /// Passes an event to the node's handle; never waits: when the application reads no
    /// node events and their queue is full, the event is dropped and counted.
    fn node_event(&mut self, ev: NodeEvent) {
        if let Err(mpsc::error::TrySendError::Full(ev)) = self.node_events.try_send(ev) {
            self.peers.counters.node_events_dropped += 1;
            tracing::warn!(?ev, "dropped a node event: the application reads none and their queue is full");
        }
    }

    fn on_event(&mut self, ev: Event) {
        let now = self.now();
        // What the event makes in the trace by itself (built only when tracing).
        let traced = self.trace.as_ref().and_then(|_| TraceEvent::of_engine(&ev));
        // Replies to flushes and queries, and node events, come after the deliveries the
        // engine made before them. (An event that goes through the group's own stream
        // needs no merged batch handed over before it: thousands of views share one.)
        match ev {
            Event::Deliver(_) => {}
            Event::View { .. }
            | Event::StateRequest { .. }
            | Event::State { .. }
            | Event::Left { .. }
            | Event::StateLost { .. }
            | Event::JoinRefused { .. } => self.hand_over_outgoing(),
            _ => self.hand_over_all(),
        }
        match ev {
            Event::Joined => self.on_joined(now),
            Event::View { group, view } => {
                self.record_traced(traced);
                if self.trace.is_some() {
                    // (Only the trace's `sent` events read it: a map insert per view.)
                    self.installed.insert(group.clone(), view.id);
                }
                self.deliver_to_group(&group, GroupEvent::View(view));
            }
            Event::Deliver(d) => self.on_delivery(now, d, traced),
            Event::StateRequest { group, view, joiners } => {
                if self.trace.is_some() {
                    // For the trace's state_sent events (see `ProvideState`).
                    self.state_requests.insert((group.clone(), view), joiners.clone());
                }
                if !self.groups.contains_key(&group) {
                    // No handle to answer it (dropped, and its leave is on the way).
                    self.decline_state(now, &group, view);
                    return;
                }
                self.deliver_to_group(&group, GroupEvent::StateRequest { view, joiners });
            }
            Event::State { group, view, state } => {
                if let Some(t) = self.join_started.remove(&group) {
                    crate::metrics::time("synchrony_state_transfer_seconds", t.elapsed());
                }
                match self.streamed.remove(&group).filter(|(v, _, _)| *v == view) {
                    Some((_, len, digest)) => {
                        self.record_state(|| TraceEvent::state_loaded(group.as_str(), view.0, digest));
                        self.deliver_to_group(&group, GroupEvent::StateStreamed { view, len });
                    }
                    None => {
                        let delivered_sets = self.config.trace_states_as_delivered_sets;
                        self.record_state(|| {
                            TraceEvent::state_loaded(group.as_str(), view.0, Digest::of(&state, delivered_sets))
                        });
                        self.deliver_to_group(&group, GroupEvent::State { view, state });
                    }
                }
            }
            Event::Flushed { group, view } => {
                if let Some((reply, covers, asked)) = self.flushes.get_mut(&group).and_then(|q| q.pop_front()) {
                    crate::metrics::time("synchrony_flush_seconds", asked.elapsed());
                    self.record(|| TraceEvent::flushed(group.as_str(), view.0, covers));
                    let _ = reply.send(Ok(view));
                }
            }
            Event::QueryDone(q) => {
                if let Some(reply) = self.queries.remove(&q.id) {
                    let _ = reply.send(q);
                }
            }
            Event::Left { group } | Event::StateLost { group } => {
                self.record_traced(traced);
                // A state still being read as a stream never comes whole.
                self.state_sinks.remove(&group);
                self.installed.remove(&group);
                self.wanted.remove(&group);
                for (reply, _, _) in self.flushes.remove(&group).unwrap_or_default() {
                    let _ = reply.send(Err(FlushError::NotMember(group.clone())));
                }
                self.deliver_to_group(&group, GroupEvent::Left);
            }
            Event::JoinRefused { group } => {
                tracing::warn!(group = %group, "join refused by a member's verifier");
                self.wanted.remove(&group);
                self.verifiers.remove(&group);
                self.state_sinks.remove(&group);
                self.deliver_to_group(&group, GroupEvent::JoinRefused);
                self.groups.remove(&group);
            }
            Event::SendLost { group, id } => {
                self.node_event(NodeEvent::SendLost { group, id });
            }
            Event::Partitioned { reason } => {
                self.record_traced(traced);
                self.on_stopped(reason);
            }
        }
    }

    /// This incarnation is a member of the cluster: it asks for the groups it wants.
    fn on_joined(&mut self, now: Instant) {
        let me = self.me();
        tracing::info!(me = %me, "joined the cluster");
        self.node_event(NodeEvent::Joined { me });
        let wanted: Vec<GroupName> = self.wanted.iter().cloned().collect();
        if let Some(e) = &mut self.engine {
            for g in wanted {
                let _ = e.join(now, g);
            }
        }
    }

    /// A delivery goes to its group's handle, unless the group's message verifier rejects
    /// it (a rejected query gets a null reply).
    fn on_delivery(&mut self, now: Instant, d: Delivery, traced: Option<TraceEvent>) {
        let verifier = self.verifiers.get(&d.group).and_then(|v| v.message.clone());
        if verifier.is_some_and(|f| !f(&d.id.sender, &d.payload)) {
            self.peers.counters.rejected_by_verifier += 1;
            tracing::warn!(group = %d.group, sender = %d.id.sender, "message verifier rejected a message");
            if let (true, Some(e)) = (d.query, self.engine.as_mut()) {
                e.reply(now, &d.id, None);
            }
            return;
        }
        if let Some(t) = (!self.in_flight.is_empty()).then(|| self.in_flight.remove(&d.id)).flatten() {
            crate::metrics::time("synchrony_send_to_delivery_seconds", t.elapsed());
        }
        self.record_traced(traced);
        let group = d.group.clone();
        self.deliver_to_group(&group, GroupEvent::Message(d));
    }

    /// This incarnation stopped: every waiter hears of it, and with `Config::rejoin` a new
    /// incarnation starts.
    fn on_stopped(&mut self, reason: PartitionReason) {
        tracing::warn!(me = %self.me(), ?reason, "this incarnation stopped");
        self.installed.clear();
        for (_, q) in self.flushes.drain() {
            for (reply, _, _) in q {
                let _ = reply.send(Err(FlushError::Stopped));
            }
        }
        self.queries.clear();
        self.in_flight.clear();
        self.state_sinks.clear();
        self.streamed.clear();
        for (_, w) in self.writers.drain() {
            if let Some(reply) = w.waiting {
                let _ = reply.send(Err(StateWriteError::Stopped));
            }
        }
        let groups: Vec<GroupName> = self.groups.keys().cloned().collect();
        for g in groups {
            self.deliver_to_group(&g, GroupEvent::Partitioned(reason));
        }
        self.hand_over_all();
        self.node_event(NodeEvent::Partitioned { reason });
        // (On a peer list, always: the cluster forms again when a majority is back.)
        if self.config.rejoin || self.on_list {
            self.rejoin();
        }
    }

    /// Starts over as a new incarnation, through every peer this node knows of.
    fn rejoin(&mut self) {
        self.incarnation = crate::next_incarnation(&self.config, Some(self.incarnation));
        self.last_sent.clear();
        self.peers.hello.incarnation = self.incarnation;
        self.contact_names = self.peers.book.keys().filter(|n| **n != self.config.name).cloned().collect();
        tracing::info!(me = %self.me(), "rejoining as a new incarnation");
        self.start_engine();
    }

    /// Flow control: a send to a group whose outstanding messages fill the window waits
    /// (with everything sent after it to that group) until the slowest member catches up.
    /// A join of a group whose last membership's events (its `Left`) are still held back
    /// waits until they went to the old handle: the new one must not take them.
    fn must_wait(&self, c: &Command, behind_parked: bool) -> Option<GroupName> {
        let held = |g: &GroupName| self.engine.as_ref().is_some_and(|e| e.holds_past_membership(g));
        let (group, n, bytes) = match c {
            Command::Join { group, .. } => return held(group).then(|| group.clone()),
            Command::JoinMany { groups, .. } => return groups.iter().find(|g| held(g)).cloned(),
            Command::Send { group, payload, .. } => (group, 1, payload.len()),
            Command::SendBatch { group, payloads, .. } => {
                (group, payloads.len(), payloads.iter().map(Bytes::len).sum::<usize>())
            }
            _ => return None,
        };
        if behind_parked && self.parked.contains_key(group) {
            return Some(group.clone());
        }
        let e = self.engine.as_ref()?;
        if e.status() != synchrony_engine::Status::Member {
            return None; // the engine answers at once (an error, or a join still under way)
        }
        let out = e.outstanding(group);
        let out_bytes = e.outstanding_bytes(group);
        // A batch larger than a window goes alone.
        let full = out + n > self.config.send_window || out_bytes + bytes > self.config.send_window_bytes;
        (out > 0 && full).then(|| group.clone())
    }

    /// Lets waiting sends go while their groups have room; returns how many went.
    fn release_parked(&mut self) -> usize {
        let mut released = 0;
        let groups: Vec<GroupName> = self.parked.keys().cloned().collect();
        for g in groups {
            loop {
                let Some(c) = self.parked.get_mut(&g).and_then(|q| q.pop_front()) else { break };
                if self.must_wait(&c, false).is_some() {
                    self.parked.entry(g.clone()).or_default().push_front(c);
                    break;
                }
                released += 1;
                self.execute(c);
            }
            if self.parked.get(&g).is_some_and(|q| q.is_empty()) {
                self.parked.remove(&g);
            }
        }
        self.flow_waits += released as u64;
        released
    }

    fn on_command(&mut self, c: Command) {
        if let Some(g) = self.must_wait(&c, true) {
            self.parked.entry(g).or_default().push_back(c);
            return;
        }
        self.execute(c);
    }

    fn execute(&mut self, c: Command) {
        let now = self.now();
        let me = self.me();
        match c {
            Command::Join { group, verifiers, stream, reply } => {
                let Some(e) = self.engine.as_mut() else {
                    let _ = reply.send(Err(MembershipError::Stopped));
                    return;
                };
                if self.groups.contains_key(&group) && self.wanted.contains(&group) {
                    let _ = reply.send(Err(MembershipError::Redundant(group)));
                    return;
                }
                e.set_join_verifier(group.clone(), verifiers.join.clone());
                if stream.is_some() {
                    e.stream_state(group.clone());
                }
                let asked = if verifiers.only_if_running {
                    e.join_running(now, group.clone())
                } else {
                    e.join(now, group.clone())
                };
                if let Some(tx) = stream.filter(|_| asked.is_ok()) {
                    let digest = Digest::new(self.config.trace_states_as_delivered_sets);
                    self.state_sinks.insert(group.clone(), (tx, digest));
                }
                let _ = reply.send(asked.map(|()| self.open_handle(group, verifiers)));
            }
            Command::JoinMany { groups, into, reply } => {
                let _ = reply.send(self.join_many(now, groups, into));
            }
            Command::DropMerged { id } => self.merged_dropped(id, Vec::new()),
            Command::Leave { group, reply } => {
                let r = match self.engine.as_mut() {
                    Some(e) => e.leave(now, group.clone()),
                    None => Err(MembershipError::Stopped),
                };
                if r.is_ok() {
                    self.wanted.remove(&group);
                    if self.handle_closed(&group) {
                        // A dropped handle's leave: nothing more goes to it (nor to a handle
                        // of a later join, which would take this membership's `Left`).
                        self.groups.remove(&group);
                        self.backlog.remove(&group);
                        self.outgoing.remove(&group);
                    }
                }
                let _ = reply.send(r);
            }
            Command::Send { group, order, payload, replies, reply } => {
                let _ = reply.send(self.send(now, &group, order, payload, replies));
            }
            Command::SendBatch { group, order, payloads, reply } => {
                let _ = reply.send(self.send_batch(now, &group, order, payloads));
            }
            Command::Reply { id, payload } => {
                if let Some(e) = self.engine.as_mut() {
                    e.reply(now, &id, payload);
                }
            }
            Command::Flush { group, reply } => {
                let r = match self.engine.as_mut() {
                    Some(e) => e.flush(now, &group),
                    None => Err(FlushError::Stopped),
                };
                match r {
                    Ok(()) => {
                        // "" when nothing was sent before the call: the flush covers nothing.
                        let covers = Some(self.last_sent.get(&group).map(|m| m.to_string()).unwrap_or_default());
                        self.flushes.entry(group).or_default().push_back((reply, covers, TokioInstant::now()));
                    }
                    Err(err) => {
                        let _ = reply.send(Err(err));
                    }
                }
            }
            Command::ProvideState { group, view, state } => {
                // Only for the trace: digesting a large state takes the driver long enough
                // (about 0.4 s for 100 MB) to silence its heartbeats.
                // (A node that stopped meanwhile sends nothing: its trace says nothing either.)
                let running = self.engine.as_ref().is_some_and(|e| e.status() == synchrony_engine::Status::Member);
                if let Some(joiners) = self.state_requests.remove(&(group.clone(), view)).filter(|_| running) {
                    let dg = Digest::of(&state, self.config.trace_states_as_delivered_sets);
                    for j in joiners {
                        self.record_state(|| TraceEvent::state_sent(group.as_str(), view.0, j.to_string(), dg.clone()));
                    }
                }
                if let Some(e) = self.engine.as_mut() {
                    e.provide_state(now, &group, view, state);
                }
            }
            Command::DeclineState { group, view } => self.decline_state(now, &group, view),
            Command::BeginState { group, view } => {
                let joiners = self.state_requests.remove(&(group.clone(), view)).unwrap_or_default();
                let digest = Digest::new(self.config.trace_states_as_delivered_sets);
                self.writers.insert((group.clone(), view), Writer { joiners, digest, waiting: None });
                if let Some(e) = self.engine.as_mut() {
                    e.begin_state(now, &group, view);
                }
            }
            Command::WriteState { group, view, part, last, reply } => {
                self.write_state(now, group, view, part, last, reply)
            }
            Command::AbandonState { group, view } => {
                self.writers.remove(&(group.clone(), view));
                if let Some(e) = self.engine.as_mut() {
                    e.abandon_state(now, &group, view);
                }
            }
            Command::StateRead { group, bytes } => {
                if let Some(e) = self.engine.as_mut() {
                    e.state_read(now, &group, bytes);
                }
            }
            Command::GiveUpQuery { id } => {
                if let Some(e) = self.engine.as_mut() {
                    e.give_up_query(&id);
                }
            }
            Command::Status { reply } => {
                let _ = reply.send(self.status(me));
            }
            Command::CloseTrace { reply } => {
                self.trace = None;
                let _ = reply.send(());
            }
            Command::Shutdown { reply } => {
                // A clean leave: the others install views without this node through the
                // membership protocol (with its consent, so even a pair goes on as one)
                // rather than suspect it. Bounded: with no majority to decide, it just stops.
                let bound = self.config.engine.failure_timeout * 3;
                if let Some(e) = self.engine.as_mut() {
                    e.leave_cluster(now);
                }
                self.shutdown = Some((reply, TokioInstant::now() + bound));
            }
        }
    }

    /// A join the engine took: the group's handle, and what the driver keeps of it.
    /// `Command::WriteState`: the part goes to the engine; the writer waits while its
    /// joiners have not fetched enough (`release_writers` answers it then).
    fn write_state(
        &mut self,
        now: Instant,
        group: GroupName,
        view: ViewId,
        part: Bytes,
        last: bool,
        reply: oneshot::Sender<Result<(), StateWriteError>>,
    ) {
        let key = (group, view);
        let running = self.engine.as_ref().is_some_and(|e| e.status() == synchrony_engine::Status::Member);
        let (Some(e), Some(w)) = (self.engine.as_mut().filter(|_| running), self.writers.get_mut(&key)) else {
            let _ = reply.send(Err(if running { StateWriteError::NotNeeded } else { StateWriteError::Stopped }));
            return;
        };
        if self.trace.is_some() {
            w.digest.write(&part);
        }
        e.provide_state_part(now, &key.0, view, part, last);
        let held = e.state_backlog(&key.0, view);
        if last {
            let w = self.writers.remove(&key).expect("present");
            let digest = w.digest.finish();
            for j in w.joiners {
                self.record_state(|| TraceEvent::state_sent(key.0.as_str(), view.0, j.to_string(), digest.clone()));
            }
            let _ = reply.send(Ok(()));
            return;
        }
        match held {
            None => {
                self.writers.remove(&key);
                let _ = reply.send(Err(StateWriteError::NotNeeded));
            }
            Some(h) if h >= 2 * self.config.engine.state_window_bytes as u64 => w.waiting = Some(reply),
            Some(_) => {
                let _ = reply.send(Ok(()));
            }
        }
    }

    /// Whether a group's handle (or its merged receiver) is gone.
    fn handle_closed(&self, group: &GroupName) -> bool {
        match self.groups.get(group) {
            Some(Sink::Own(tx)) => tx.is_closed(),
            Some(Sink::Merged(id)) => self.merged.get(id).is_none_or(|m| m.tx.is_closed()),
            None => false,
        }
    }

    fn open_handle(&mut self, group: GroupName, verifiers: Verifiers) -> crate::GroupEvents {
        let (tx, rx) = mpsc::channel(GROUP_QUEUE);
        self.open_sink(group, verifiers, Sink::Own(tx));
        crate::GroupEvents::new(rx)
    }

    fn open_sink(&mut self, group: GroupName, verifiers: Verifiers, sink: Sink) {
        self.verifiers.insert(group.clone(), verifiers);
        self.join_started.insert(group.clone(), TokioInstant::now());
        self.groups.insert(group.clone(), sink);
        self.wanted.insert(group);
    }

    /// `Command::JoinMany`: one result per group, in order.
    fn join_many(
        &mut self,
        now: Instant,
        groups: Vec<GroupName>,
        into: Option<MergedTx>,
    ) -> Vec<Result<Option<crate::GroupEvents>, MembershipError>> {
        if let Some((id, tx)) = &into {
            // Kept until the receiver is dropped, even if no group joins now.
            self.merged.entry(*id).or_insert_with(|| MergedOut::new(tx.clone()));
        }
        let Some(e) = self.engine.as_mut() else {
            return groups.iter().map(|_| Err(MembershipError::Stopped)).collect();
        };
        // Groups joined already, or named twice, are redundant; the rest go to the
        // engine at once.
        let mut seen = HashSet::new();
        let fresh: Vec<bool> = groups
            .iter()
            .map(|g| !(self.groups.contains_key(g) && self.wanted.contains(g)) && seen.insert(g.clone()))
            .collect();
        for (g, _) in groups.iter().zip(&fresh).filter(|(_, f)| **f) {
            e.set_join_verifier(g.clone(), None);
        }
        let asked = groups.iter().zip(&fresh).filter(|(_, f)| **f).map(|(g, _)| g.clone());
        let mut results = e.join_many(now, asked).into_iter();
        let mut out = Vec::with_capacity(groups.len());
        for (g, fresh) in groups.into_iter().zip(fresh) {
            if !fresh {
                out.push(Err(MembershipError::Redundant(g)));
                continue;
            }
            if let Err(err) = results.next().unwrap_or(Err(MembershipError::Stopped)) {
                out.push(Err(err));
                continue;
            }
            out.push(Ok(match &into {
                None => Some(self.open_handle(g, Verifiers::default())),
                Some((id, _)) => {
                    self.open_sink(g, Verifiers::default(), Sink::Merged(*id));
                    None
                }
            }));
        }
        out
    }

    fn send(
        &mut self,
        now: Instant,
        group: &GroupName,
        order: Order,
        payload: Bytes,
        replies: Replies,
    ) -> Result<Sent, SendError> {
        let e = self.engine.as_mut().ok_or(SendError::NotJoined)?;
        let id = e.query(now, group.clone(), order, payload, replies)?;
        Ok(self.sent(group, order, id, replies))
    }

    /// Multicasts a batch (the engine's follow-up work done once for all of it).
    fn send_batch(
        &mut self,
        now: Instant,
        group: &GroupName,
        order: Order,
        payloads: Vec<Bytes>,
    ) -> Vec<Result<MsgId, SendError>> {
        let Some(e) = self.engine.as_mut() else { return payloads.iter().map(|_| Err(SendError::NotJoined)).collect() };
        let sent = e.send_batch(now, group, order, payloads);
        if let Some(last) = sent.iter().rev().find_map(|r| r.as_ref().ok()) {
            self.last_sent.insert(group.clone(), last.clone());
        }
        if self.trace.is_some() || self.config.metrics.is_some() {
            for id in sent.iter().flatten() {
                self.sent_one(group, order, id);
            }
        }
        sent
    }

    /// The driver's bookkeeping of a message the engine accepted.
    fn sent(&mut self, group: &GroupName, order: Order, id: MsgId, replies: Replies) -> Sent {
        self.last_sent.insert(group.clone(), id.clone());
        self.sent_one(group, order, &id);
        let outcome = (replies != Replies::None).then(|| {
            let (tx, rx) = oneshot::channel();
            self.queries.insert(id.clone(), tx);
            rx
        });
        Sent { id, outcome }
    }

    /// What the trace and the metrics keep of each message sent.
    fn sent_one(&mut self, group: &GroupName, order: Order, id: &MsgId) {
        if self.trace.is_some() {
            let view = self.installed.get(group).map(|v| v.0);
            self.record(|| TraceEvent::sent(group.as_str(), id.to_string(), order, view));
        }
        // Only with a metrics endpoint: it is a map insert per message.
        if self.config.metrics.is_some() && self.in_flight.len() < IN_FLIGHT_MAX {
            self.in_flight.insert(id.clone(), TokioInstant::now());
        }
    }

    fn status(&self, me: ProcessId) -> NodeStatus {
        let e = self.engine.as_ref();
        let groups = e
            .map(|e| {
                e.my_groups()
                    .filter_map(|g| {
                        e.view(g).map(|v| GroupStatus {
                            name: g.to_string(),
                            view: v.id.0,
                            members: v.members.iter().map(|m| m.to_string()).collect(),
                            state_transfer: e.state_progress(g),
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        let known = e
            .map(|e| {
                e.known_groups()
                    .filter(|(_, v)| !v.members.is_empty())
                    .map(|(g, v)| GroupStatus {
                        name: g.to_string(),
                        view: v.id.0,
                        members: v.members.iter().map(|m| m.to_string()).collect(),
                        state_transfer: None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        NodeStatus {
            process: me.to_string(),
            known,
            listen: self.peers.book.get(&self.config.name).cloned().unwrap_or_default(),
            status: e.map_or("finding a contact".into(), |e| format!("{:?}", e.status()).to_lowercase()),
            leader: e.and_then(|e| e.leader().map(|l| l.to_string())),
            members: e.map(|e| e.members().iter().map(|m| m.to_string()).collect()).unwrap_or_default(),
            groups,
            connections: self.peers.conns.keys().cloned().collect(),
            sent_per_sec: self.rates.sent_per_sec,
            delivered_per_sec: self.rates.delivered_per_sec,
            engine: e.map(|e| e.stats().clone()).unwrap_or_default(),
            net: self.peers.counters.clone(),
        }
    }

    fn on_net(&mut self, ev: NetEvent) {
        let now = self.now();
        match ev {
            NetEvent::Frames { name, conn, frames } => {
                let Some(e) = self.engine.as_mut() else { return };
                for frame in &frames {
                    if let Err(err) = e.handle_frame(now, frame) {
                        tracing::warn!(peer = %name, error = %err, "rejected a frame; closing its connection");
                        if self.peers.conns.get(&name).is_some_and(|c| c.id == conn) {
                            self.peers.close(&name);
                        }
                        return;
                    }
                }
            }
            NetEvent::Up { name, incarnation, listen, conn, tx, by_me, reader, heard } => {
                let new = Conn { id: conn, tx, by_me, incarnation, reader, heard, passed: None };
                let engine_up = self.engine.is_some();
                if let Admitted::Dropped = self.peers.admit(name.clone(), incarnation, listen, new, engine_up) {
                    return;
                }
                if self.engine.is_none() {
                    self.contact_names.insert(name);
                    self.start_engine();
                }
                self.pass_listed();
            }
            NetEvent::Down { name, conn, error } => self.peers.down(&name, conn, error.as_ref()),
            NetEvent::ConnectFailed { target, error } => {
                let unreachable = self.peers.dial_failed(&target, &error);
                if let (DialTarget::Contact(addr), Some(tx)) = (&target, &self.refusals) {
                    let _ = tx.send((addr.clone(), error));
                }
                if let (Some(name), Some(e)) = (unreachable, self.engine.as_mut()) {
                    e.handle_unreachable(now, &name);
                }
            }
            NetEvent::Book { entries } => {
                if self.peers.merge_book(entries) {
                    self.pass_listed();
                }
            }
            NetEvent::Rejected { from, error } => self.peers.refused(&from, &error),
            NetEvent::Status { reply } => {
                let s = self.status(self.me());
                let _ = reply.send(Bytes::from(serde_json::to_vec(&s).unwrap_or_default()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use synchrony_engine::PartitionReason;

    /// An application that never reads node events cannot stop the driver: past the
    /// queue's room, events are dropped and counted.
    #[test]
    fn node_events_never_make_the_driver_wait() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        rt.block_on(async {
            let (control, _c) = mpsc::channel(8);
            let (frames, _f) = mpsc::channel(8);
            let (node_tx, mut node_rx) = mpsc::channel(2);
            let config = Config::new("n", "127.0.0.1:0");
            let keepalive = net::Keepalive::new(&config);
            let mut d = Driver::new(
                config,
                1,
                "127.0.0.1:1".into(),
                net::NetSenders { control, frames },
                Arc::new(AtomicU64::new(1)),
                node_tx,
                None,
                keepalive,
                tokio::runtime::Handle::current(),
                crate::listed::Listed::default(),
            );
            for _ in 0..5 {
                d.node_event(NodeEvent::Partitioned { reason: PartitionReason::Stalled });
            }
            assert_eq!(d.peers.counters.node_events_dropped, 3);
            assert!(node_rx.try_recv().is_ok() && node_rx.try_recv().is_ok() && node_rx.try_recv().is_err());
        });
    }
}
