//! The driver: the tokio shell around the [`Host`]. One task feeds it commands, frames
//! (through the transport) and timer expiries, waits for room at a consumer that is behind,
//! and carries out what the host asks: frames to peers, answers and event batches to the
//! application's channels, the trace to its file.

use crate::command::{Command, Consumer, Submitted, Waiters};
use crate::config::Config;
use crate::listed::Listed;
use crate::net::{self, DialTarget, Hello, NetError, NetEvent};
use crate::status::{GroupStatus, NetCounters, NodeStatus};
use crate::trace::TraceWriter;
use crate::transport::{Admitted, Conn, Peers};
use crate::NodeEvent;
use bytes::Bytes;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;
use synchrony_engine::{Instant, ProcessId, Status};
use synchrony_host::{Batch, ConsumerId, Host, HostConfig, Output, Piece, Pumped};
use tokio::sync::mpsc;
use tokio::time::Instant as TokioInstant;

/// Events moved to the application between checks of the engine's timers.
const TIMERS_EVERY: usize = 4096;
/// How often the driver samples rates and retries connections.
const HOUSEKEEPING: Duration = Duration::from_millis(50);
/// Inputs handled before the engine's output is flushed: this is what batches frames.
const INPUT_BATCH: usize = 512;

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

/// The host, the transport, and the channels of everything the application waits on.
pub(crate) struct Driver {
    config: Config,
    /// Contacts that could not be joined through, and why, for `Runtime::start`'s error.
    refusals: Option<mpsc::UnboundedSender<(String, NetError)>>,
    epoch: TokioInstant,
    /// Shared with every connection's tasks (see `net::Keepalive`).
    keepalive: net::Keepalive,
    host: Host,
    incarnation: u64,
    peers: Peers,
    /// Contacts still to be found (contact phase, before the engine exists).
    contacts: Vec<String>,
    contact_names: BTreeSet<String>,
    waiters: Waiters,
    node_events: mpsc::Sender<NodeEvent>,
    node_events_dropped: u64,
    trace: Option<TraceWriter>,
    rates: Rates,
    /// The peer list (`Config::peers`), and whether this node is on it.
    listed: Listed,
    on_list: bool,
}

/// What the host does, from the runtime's config.
fn host_config(config: &Config, on_list: bool, trace: bool) -> HostConfig {
    HostConfig {
        send_window: config.send_window,
        send_window_bytes: config.send_window_bytes,
        app_stall_timeout: config.app_stall_timeout,
        rejoin: config.rejoin,
        on_list,
        consumer_queue: crate::merged::GROUP_QUEUE,
        trace,
        state_digest: None,
        trace_states_as_delivered_sets: config.trace_states_as_delivered_sets,
        time_deliveries: config.metrics.is_some(),
        heartbeat_interval: config.engine.heartbeat_interval,
        failure_timeout: config.engine.failure_timeout,
        state_window_bytes: config.engine.state_window_bytes,
    }
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
        let host = Host::new(host_config(&config, on_list, trace.is_some()));
        let mut d = Self {
            refusals: None,
            config,
            epoch: keepalive.epoch,
            keepalive,
            host,
            incarnation,
            peers,
            contacts,
            contact_names: BTreeSet::new(),
            waiters: Waiters::default(),
            node_events,
            node_events_dropped: 0,
            trace,
            rates: Rates::new(),
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

    fn status_of(&self) -> Option<Status> {
        self.host.engine().map(|e| e.status())
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
        let now = self.now();
        self.host.start(now, self.me(), config);
    }

    /// The driver's loop; returns when the node shuts down. It never waits on the
    /// application: when a consumer is full it stops reading the network until the
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
            if self.host.finished() {
                return;
            }
            let deadline = self
                .host
                .poll_timeout()
                .map(|t| self.epoch + t.since_epoch())
                .unwrap_or_else(|| TokioInstant::now() + Duration::from_secs(3600));
            let behind = self.host.behind();
            // A consumer with a backlog, to wait for room in. (The permit goes unused: what
            // waits goes in order on the next pump.)
            let full = self.host.behind_consumer().and_then(|c| Some((c, self.waiters.consumers.get(&c)?.clone())));
            let room = async move {
                match full {
                    Some((c, Consumer::Own(tx))) => (c, tx.reserve_owned().await.map(|p| p.release().capacity()).ok()),
                    Some((c, Consumer::Merged(tx))) => {
                        (c, tx.reserve_owned().await.map(|p| p.release().capacity()).ok())
                    }
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
                        if turn.elapsed() >= self.host.turn_budget() {
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
                    self.host.handle_timeout(now);
                }
                (c, free) = room => {
                    let now = self.now();
                    // (A channel closed meanwhile is found when the next batch goes.)
                    self.host.handle_room(now, c, free.unwrap_or(1));
                }
                _ = tick.tick() => self.housekeeping(),
            }
        }
    }

    /// Keeps the connections' keepalives going while the engine runs (and stops them at
    /// once when it stopped: a stopped node must fall silent).
    fn turned(&self) {
        self.keepalive.driver_turned(self.host.alive());
    }

    /// Tells the engine when each peer was last heard by its connection's reader (frames,
    /// keepalives), before the engine judges silence: a peer is not suspected for frames
    /// this node has not got to, nor for a long input that kept its own driver busy.
    fn pass_heard(&mut self) {
        let Some(e) = self.host.engine_mut() else { return };
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
        while frames < INPUT_BATCH && turn.elapsed() < self.host.turn_budget() {
            match net_frames.try_recv() {
                Ok(ev) => {
                    frames += ev.frames();
                    self.on_net(ev);
                }
                Err(_) => break,
            }
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
        if let Some(e) = self.host.engine_mut().filter(|e| e.status() == Status::Joining) {
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
        let seeking = self.host.engine().is_none() || (self.on_list && self.status_of() == Some(Status::Joining));
        if seeking && !self.peers.connecting.iter().any(|t| matches!(t, DialTarget::Contact(_))) {
            self.dial_contacts();
        }
        if let Some(e) = self.host.engine() {
            let pending = self.peers.pending.values().map(|q| q.len()).sum();
            crate::metrics::publish(e.stats(), &self.counters(), pending, e.members().len());
            metrics::counter!("synchrony_flow_control_waits_total").absolute(self.host.counters().flow_waits);
            metrics::gauge!("synchrony_sends_waiting").set(self.host.waiting() as f64);
        }
        let (sent, delivered) = self.host.engine().map_or((0, 0), |e| (e.stats().sent, e.stats().delivered));
        self.rates.update(sent, delivered);
    }

    /// Lets the inputs of one batch share frames (released by `pump`).
    fn cork(&mut self) {
        if let Some(e) = self.host.engine_mut() {
            e.cork();
        }
    }

    /// Moves the engine's output to sockets and the application, through the host.
    async fn pump(&mut self) {
        let now = self.now();
        if let Some(e) = self.host.engine_mut() {
            e.uncork(now);
        }
        loop {
            // The frames the inputs made go out first, before their events are handed on.
            self.send_transmits();
            let pumped = self.host.pump(now, TIMERS_EVERY);
            let restarted = self.carry_out(now);
            match pumped {
                Pumped::More => self.timers_and_yield().await,
                Pumped::Drained if restarted => {}
                Pumped::Drained => return,
            }
        }
    }

    /// Carries out what the host asked, in order; returns whether a new incarnation started
    /// (its engine then has output of its own).
    fn carry_out(&mut self, now: Instant) -> bool {
        let mut restarted = false;
        loop {
            self.send_transmits();
            let mut gone: HashMap<ConsumerId, Batch> = HashMap::new();
            while let Some(out) = self.host.poll_output() {
                match out {
                    Output::Stopped { rejoin, .. } if rejoin => {
                        self.rejoin();
                        restarted = true;
                    }
                    out => self.output(now, out, &mut gone),
                }
            }
            self.write_trace();
            if gone.is_empty() {
                return restarted;
            }
            // Consumers found gone: their groups are left (which may make more output).
            for (c, batch) in gone {
                self.waiters.consumers.remove(&c);
                self.host.handle_consumer_gone(now, c, batch);
            }
        }
    }

    /// The engine's frames, to their peers; what the trace holds is written first (a frame
    /// must not reach a peer before its send is in this node's trace: a SIGKILL between the
    /// two would leave a delivery of a message never sent, G2).
    fn send_transmits(&mut self) {
        self.write_trace();
        while let Some(t) = self.host.poll_transmit() {
            self.peers.send(&t.to.name, net::Outgoing::engine(t.frame));
        }
    }

    /// One output of the host; batches for consumers found gone are kept in `gone`.
    fn output(&mut self, now: Instant, out: Output, gone: &mut HashMap<ConsumerId, Batch>) {
        match out {
            Output::Reply { waiter, reply } => self.waiters.answer(waiter, reply),
            Output::Forget(waiter) => self.waiters.forget(waiter),
            Output::Events { consumer, group, events } => {
                if let Some(Batch::Events(_, rest)) = gone.get_mut(&consumer) {
                    return rest.extend(events);
                }
                let Some(Consumer::Own(tx)) = self.waiters.consumers.get(&consumer) else {
                    gone.insert(consumer, Batch::Events(group, events));
                    return;
                };
                match tx.try_send(events) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(events)) => {
                        self.host.handle_full(consumer, Batch::Events(group, events))
                    }
                    Err(mpsc::error::TrySendError::Closed(events)) => {
                        gone.insert(consumer, Batch::Events(group, events));
                    }
                }
            }
            Output::Merged { consumer, events } => {
                if let Some(Batch::Merged(rest)) = gone.get_mut(&consumer) {
                    return rest.extend(events);
                }
                let Some(Consumer::Merged(tx)) = self.waiters.consumers.get(&consumer) else {
                    gone.insert(consumer, Batch::Merged(events));
                    return;
                };
                match tx.try_send(events) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(events)) => {
                        self.host.handle_full(consumer, Batch::Merged(events))
                    }
                    Err(mpsc::error::TrySendError::Closed(events)) => {
                        gone.insert(consumer, Batch::Merged(events));
                    }
                }
            }
            Output::Node(ev) => self.node_event(ev),
            Output::StatePiece { group, piece } => self.state_piece(now, group, piece),
            Output::Stopped { .. } => {}
        }
    }

    /// A part of a state read as a stream goes to its reader (one that is gone counts as
    /// read: the transfer must not wait for it); the last ends the stream.
    fn state_piece(&mut self, now: Instant, group: synchrony_engine::GroupName, piece: Piece) {
        let len = match &piece {
            Piece::Data { data, .. } => data.len() as u64,
            Piece::End => 0,
        };
        let end = piece == Piece::End;
        let unread = match self.waiters.streams.get(&group) {
            Some(tx) => tx.send(piece).is_err(),
            None => true,
        };
        if end {
            self.waiters.streams.remove(&group);
        } else if unread {
            self.host.handle_state_unread(now, &group, len);
        }
    }

    /// Writes the host's trace events to the trace file, stamped with the wall clock.
    fn write_trace(&mut self) {
        while let Some(mut e) = self.host.poll_trace() {
            if let Some(t) = &mut self.trace {
                e.t = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_micros() as u64);
                t.write(&e);
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
        self.host.handle_timeout(now);
        tokio::task::yield_now().await;
    }

    /// Passes an event to the node's handle; never waits: when the application reads no
    /// node events and their queue is full, the event is dropped and counted.
    fn node_event(&mut self, ev: NodeEvent) {
        if let Err(mpsc::error::TrySendError::Full(ev)) = self.node_events.try_send(ev) {
            self.node_events_dropped += 1;
            tracing::warn!(?ev, "dropped a node event: the application reads none and their queue is full");
        }
    }

    /// Starts over as a new incarnation, through every peer this node knows of.
    fn rejoin(&mut self) {
        self.incarnation = crate::next_incarnation(&self.config, Some(self.incarnation));
        self.peers.hello.incarnation = self.incarnation;
        self.contact_names = self.peers.book.keys().filter(|n| **n != self.config.name).cloned().collect();
        tracing::info!(me = %self.me(), "rejoining as a new incarnation");
        self.start_engine();
    }

    fn on_command(&mut self, c: Command) {
        let now = self.now();
        let dropped = match &c {
            Command::Leave { group, .. } => self.host.consumer_of(group).is_some_and(|c| self.waiters.closed(c)),
            _ => false,
        };
        match self.waiters.submit(c, dropped) {
            Submitted::Host(waiter, c) => self.host.handle_command(now, waiter, c),
            Submitted::Status(reply) => drop(reply.send(self.status())),
            Submitted::CloseTrace(reply) => {
                self.trace = None;
                self.host.set_tracing(false);
                let _ = reply.send(());
            }
        }
    }

    /// The transport's counters, with the host's.
    fn counters(&self) -> NetCounters {
        let h = self.host.counters();
        NetCounters {
            rejected_by_verifier: h.rejected_by_verifier,
            reading_paused: h.reading_paused,
            node_events_dropped: self.node_events_dropped,
            ..self.peers.counters.clone()
        }
    }

    fn status(&self) -> NodeStatus {
        let e = self.host.engine();
        let group_status = |g: &synchrony_engine::GroupName, v: &synchrony_engine::GroupView, t| GroupStatus {
            name: g.to_string(),
            view: v.id.0,
            members: v.members.iter().map(|m| m.to_string()).collect(),
            state_transfer: t,
        };
        let groups = e
            .map(|e| e.my_groups().filter_map(|g| e.view(g).map(|v| group_status(g, v, e.state_progress(g)))).collect())
            .unwrap_or_default();
        let known = e
            .map(|e| {
                e.known_groups().filter(|(_, v)| !v.members.is_empty()).map(|(g, v)| group_status(g, v, None)).collect()
            })
            .unwrap_or_default();
        NodeStatus {
            process: self.me().to_string(),
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
            net: self.counters(),
        }
    }

    fn on_net(&mut self, ev: NetEvent) {
        let now = self.now();
        match ev {
            NetEvent::Frames { name, conn, frames } => {
                let Some(e) = self.host.engine_mut() else { return };
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
                let engine_up = self.host.engine().is_some();
                if let Admitted::Dropped = self.peers.admit(name.clone(), incarnation, listen, new, engine_up) {
                    return;
                }
                if self.host.engine().is_none() {
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
                if let (Some(name), Some(e)) = (unreachable, self.host.engine_mut()) {
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
                let s = self.status();
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
            assert_eq!(d.counters().node_events_dropped, 3);
            assert!(node_rx.try_recv().is_ok() && node_rx.try_recv().is_ok() && node_rx.try_recv().is_err());
        });
    }
}
