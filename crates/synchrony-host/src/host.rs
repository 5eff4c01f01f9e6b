//! The [`Host`]: the engine, and everything the application and the network wait on.

use crate::outbox::{MergedOut, Sink};
use crate::state::{Digest, Writer};
use crate::{Command, ConsumerId, HostConfig, HostCounters, Output, Verifiers, WaiterId};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;
use synchrony_engine::{Engine, GroupName, Instant, MsgId, ProcessId, Status, Transmit, ViewId};
use synchrony_trace::{Recorder, TraceEvent};

/// Own messages whose send-to-delivery time is measured at once.
pub(crate) const IN_FLIGHT_MAX: usize = 65_536;

/// What a call of [`Host::pump`] left.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pumped {
    /// The engine is drained: nothing more until the next input.
    Drained,
    /// The budget of events ran out: let timers and the rest run, then pump again.
    More,
}

/// A flush caller, what its flush covers (for the trace), and when it asked.
pub(crate) type FlushWaiter = (Option<WaiterId>, Option<String>, Instant);

/// The node's policy around its [`Engine`], sans-IO like the engine: it reads no clock (every
/// input carries `now`), opens no socket and starts no thread, and its maps are ordered, so
/// what it does is a function of its inputs (a simulated run replays exactly). A runtime feeds it commands
/// ([`Host::handle_command`]), frames and timer expiries, and carries out its outputs in
/// order: [`Host::poll_transmit`] (frames to peers), [`Host::poll_output`] (replies, event
/// batches for consumers, node events, state pieces, a stop) and [`Host::poll_trace`]; it
/// wakes it at [`Host::poll_timeout`]. The tokio runtime and the simulator both host it.
///
/// What it decides: flow control (a send waits while its group's window is full, with
/// everything sent after it to that group), joins parked while a past membership's events
/// are held back, the groups this node wants (asked again by each new incarnation), event
/// batches and their backlogs (a consumer is never waited for: while one is behind, the
/// host tells the engine it is not listening, and stops the node past
/// [`HostConfig::app_stall_timeout`]), the verifiers, the waiters of flushes, queries and
/// state writes, and the trace.
pub struct Host {
    pub(crate) config: HostConfig,
    pub(crate) engine: Option<Engine>,
    pub(crate) recorder: Recorder,
    pub(crate) tracing: bool,
    pub(crate) trace: VecDeque<TraceEvent>,
    pub(crate) out: VecDeque<Output>,
    pub(crate) sinks: BTreeMap<GroupName, Sink>,
    /// Batches each consumer can take before it tells of room again.
    pub(crate) room: BTreeMap<ConsumerId, usize>,
    /// Consumers shared by many groups.
    pub(crate) merged: BTreeMap<ConsumerId, MergedOut>,
    /// Shared consumers with events not yet handed over (see `hand_over_all`).
    pub(crate) merged_pending: Vec<ConsumerId>,
    /// Deliveries not yet handed to their groups' own consumers (see `deliver_to_group`).
    pub(crate) outgoing: BTreeMap<GroupName, Vec<GroupEvent>>,
    /// Batches a group's own consumer had no room for: while any wait, the engine is told
    /// this node is not listening (the runtime reads nothing from the network).
    pub(crate) backlog: BTreeMap<GroupName, VecDeque<Vec<GroupEvent>>>,
    /// Since when a consumer has been behind.
    pub(crate) behind_since: Option<Instant>,
    pub(crate) wanted: BTreeSet<GroupName>,
    pub(crate) verifiers: BTreeMap<GroupName, Verifiers>,
    /// The view each group's consumer was last given (only while tracing: a `sent` event
    /// names it).
    pub(crate) installed: BTreeMap<GroupName, ViewId>,
    pub(crate) queries: BTreeMap<MsgId, WaiterId>,
    pub(crate) flushes: BTreeMap<GroupName, VecDeque<FlushWaiter>>,
    /// When each group's join was asked (for the state transfer histogram).
    pub(crate) join_started: BTreeMap<GroupName, Instant>,
    /// Commands waiting: sends for room in their group's window, joins for a past
    /// membership's events to go; in order per group.
    pub(crate) parked: BTreeMap<GroupName, VecDeque<(Option<WaiterId>, Command)>>,
    /// Own messages in flight to their local delivery (bounded; for the latency histogram).
    pub(crate) in_flight: BTreeMap<MsgId, Instant>,
    pub(crate) last_sent: BTreeMap<GroupName, MsgId>,
    pub(crate) state_requests: BTreeMap<(GroupName, ViewId), Vec<ProcessId>>,
    /// States read as streams: the digest of what came (for the trace); then, once one is
    /// complete, its view, length and digest until its `State` event places it.
    pub(crate) state_sinks: BTreeMap<GroupName, Digest>,
    pub(crate) streamed: BTreeMap<GroupName, (ViewId, u64, String)>,
    /// States this node writes in parts, and the write waiting for its joiners to fetch.
    pub(crate) writers: BTreeMap<(GroupName, ViewId), Writer>,
    /// A shutdown under way: its waiter, and when to stop at the latest.
    pub(crate) shutdown: Option<(Option<WaiterId>, Instant)>,
    pub(crate) finished: bool,
    pub(crate) counters: HostCounters,
}

use crate::GroupEvent;

impl Host {
    /// A host with no engine yet ([`Host::start`] starts one).
    pub fn new(config: HostConfig) -> Self {
        Self {
            tracing: config.trace,
            config,
            engine: None,
            recorder: Recorder::default(),
            trace: VecDeque::new(),
            out: VecDeque::new(),
            sinks: BTreeMap::new(),
            room: BTreeMap::new(),
            merged: BTreeMap::new(),
            merged_pending: Vec::new(),
            outgoing: BTreeMap::new(),
            backlog: BTreeMap::new(),
            behind_since: None,
            wanted: BTreeSet::new(),
            verifiers: BTreeMap::new(),
            installed: BTreeMap::new(),
            queries: BTreeMap::new(),
            flushes: BTreeMap::new(),
            join_started: BTreeMap::new(),
            parked: BTreeMap::new(),
            in_flight: BTreeMap::new(),
            last_sent: BTreeMap::new(),
            state_requests: BTreeMap::new(),
            state_sinks: BTreeMap::new(),
            streamed: BTreeMap::new(),
            writers: BTreeMap::new(),
            shutdown: None,
            finished: false,
            counters: HostCounters::default(),
        }
    }

    /// Starts an engine (the first, or a new incarnation's after a stop): the trace's events
    /// are this incarnation's from now on, and its join verifiers are installed. The groups
    /// this node wants are asked once it is a member of the cluster.
    pub fn start(&mut self, now: Instant, me: ProcessId, config: synchrony_engine::Config) {
        tracing::info!(me = %me, "starting the engine");
        self.recorder.set_process(me.to_string());
        let mut engine = Engine::new(config, me, now);
        for (g, v) in &self.verifiers {
            engine.set_join_verifier(g.clone(), v.join.clone());
        }
        self.engine = Some(engine);
        // A new incarnation's engine hears of a backlog (if any) at the next pump.
        self.behind_since = None;
    }

    /// The engine, if one started.
    pub fn engine(&self) -> Option<&Engine> {
        self.engine.as_ref()
    }

    /// The engine, for the transport's inputs (frames, peers heard or unreachable, peers
    /// found on a peer list) and for corking.
    pub fn engine_mut(&mut self) -> Option<&mut Engine> {
        self.engine.as_mut()
    }

    /// Whether the engine runs as a member or a joiner (its peers must hear from it).
    pub fn alive(&self) -> bool {
        self.engine.as_ref().is_some_and(|e| matches!(e.status(), Status::Member | Status::Joining))
    }

    /// What the host counted.
    pub fn counters(&self) -> &HostCounters {
        &self.counters
    }

    /// Sends waiting for room in their groups' windows (or joins parked).
    pub fn waiting(&self) -> usize {
        self.parked.values().map(VecDeque::len).sum()
    }

    /// Whether commands to `group` wait (a send for room in its window, a join for a past
    /// membership's events): a sender that waits for its answer is blocked.
    pub fn is_waiting(&self, group: &GroupName) -> bool {
        self.parked.contains_key(group)
    }

    /// Takes the answer to `waiter` out of the outputs, if it is there already (a command
    /// answered at once), ahead of the outputs before it: for a host whose caller wants
    /// the answer of the command it just gave (the simulator's applications).
    pub fn take_reply(&mut self, waiter: WaiterId) -> Option<crate::Reply> {
        let at = self.out.iter().rposition(|o| matches!(o, Output::Reply { waiter: w, .. } if *w == waiter))?;
        match self.out.remove(at) {
            Some(Output::Reply { reply, .. }) => Some(reply),
            _ => None,
        }
    }

    /// Stops or starts writing the trace (a process about to exit without leaving stops, so
    /// that what the others do after it is gone is not taken for its own history).
    pub fn set_tracing(&mut self, on: bool) {
        self.tracing = on && self.config.trace;
        if !self.tracing {
            self.trace.clear();
        }
    }

    /// Whether a shutdown ended: the runtime stops.
    pub fn finished(&self) -> bool {
        self.finished
    }

    /// An application command; its answer (if it has one) goes to `waiter`.
    pub fn handle_command(&mut self, now: Instant, waiter: Option<WaiterId>, c: Command) {
        if let Some(g) = self.must_wait(&c, true) {
            self.parked.entry(g).or_default().push_back((waiter, c));
            return;
        }
        self.execute(now, waiter, c);
    }

    /// The engine's timer, if it is due.
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some(e) = self.engine.as_mut().filter(|e| e.poll_timeout().is_some_and(|t| t <= now)) {
            e.handle_timeout(now);
        }
    }

    /// When to call [`Host::handle_timeout`] (and pump) next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let engine = self.engine.as_ref().and_then(|e| e.poll_timeout());
        let shutdown = self.shutdown.as_ref().map(|(_, until)| *until);
        match (engine, shutdown) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// A frame for a peer.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.engine.as_mut()?.poll_transmit()
    }

    /// The next thing to do for the application, in order.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// The next trace event (TRACE.md), stamped with this incarnation's `p` and `i`; the
    /// runtime sets its time `t`.
    pub fn poll_trace(&mut self) -> Option<TraceEvent> {
        self.trace.pop_front()
    }

    /// Moves the engine's events to the outputs: up to `budget` of them, then
    /// [`Pumped::More`]. Uncork the engine before, and take the transmits and outputs
    /// after. A stop ends the pump at once (with `Output::Stopped` last), so that the
    /// runtime can start the next incarnation before pumping again.
    pub fn pump(&mut self, now: Instant, budget: usize) -> Pumped {
        let mut events = 0usize;
        while let Some(engine) = self.engine.as_mut() {
            if let Some(d) = engine.poll_state_data() {
                self.on_state_data(now, d);
                continue;
            }
            match engine.poll_event() {
                Some(ev) => {
                    let stopped = matches!(ev, synchrony_engine::Event::Partitioned { .. });
                    self.on_event(now, ev);
                    events += 1;
                    if stopped {
                        break;
                    }
                    if events >= budget {
                        return Pumped::More;
                    }
                }
                // Room may have opened for waiting sends; what they make goes round again.
                None if self.release_parked(now) > 0 => {}
                None => break,
            }
        }
        self.release_writers();
        self.hand_over_all();
        self.listen(now);
        self.shutdown_check(now);
        Pumped::Drained
    }

    /// Tells the engine whether this node listens (it does not while a consumer is behind),
    /// and stops the node if one has been behind for too long.
    fn listen(&mut self, now: Instant) {
        let behind = self.behind();
        let Some(e) = self.engine.as_mut() else { return };
        match self.behind_since {
            None if behind => {
                self.behind_since = Some(now);
                self.counters.reading_paused += 1;
                e.handle_listening(now, false);
            }
            Some(_) if !behind => {
                self.behind_since = None;
                e.handle_listening(now, true);
            }
            Some(since)
                if now.saturating_since(since) > self.config.app_stall_timeout && e.status() == Status::Member =>
            {
                tracing::warn!(me = %e.id(), "the application took no events for too long: stopping");
                e.handle_stalled(now);
            }
            _ => {}
        }
    }

    /// Whether any consumer had no room for what waits for it (the runtime then reads no
    /// frames from the network until it has).
    pub fn behind(&self) -> bool {
        !self.backlog.is_empty() || self.merged.values().any(|m| !m.backlog.is_empty())
    }

    /// A consumer that is behind, to wait for room in ([`Host::handle_room`] once it has).
    pub fn behind_consumer(&self) -> Option<ConsumerId> {
        let own = self.backlog.keys().find_map(|g| match self.sinks.get(g) {
            Some(Sink::Own(c)) => Some(*c),
            _ => None,
        });
        own.or_else(|| self.merged.iter().find(|(_, m)| !m.backlog.is_empty()).map(|(c, _)| *c))
    }

    /// Ends a shutdown under way when it may: this node left the cluster (and its last
    /// frames had a moment to go out), stopped, never joined, or ran out of time.
    fn shutdown_check(&mut self, now: Instant) {
        let Some((_, until)) = &mut self.shutdown else { return };
        let done = match self.engine.as_ref().map(|e| e.status()) {
            Some(Status::Member) => now >= *until,
            Some(Status::Left) => {
                // A moment for its last frames (a commit it led) to reach the others.
                *until = (*until).min(now + self.config.heartbeat_interval * 2);
                now >= *until
            }
            _ => true,
        };
        if done {
            let (waiter, _) = self.shutdown.take().expect("under way");
            self.reply(waiter, crate::Reply::ShutDown);
            self.finished = true;
        }
    }

    /// How long one turn of many inputs may take before timers and heartbeats get theirs: a
    /// burst of costly inputs (thousands of joins and state transfers at once) must not keep
    /// the node silent until its peers suspect it.
    pub fn turn_budget(&self) -> Duration {
        self.config.heartbeat_interval / 2
    }

    /// Writes a trace event; it is only built while tracing (off the hot path).
    pub(crate) fn record(&mut self, now: Instant, e: impl FnOnce() -> TraceEvent) {
        if self.tracing {
            let e = self.recorder.stamp(e(), now.since_epoch().as_micros() as u64);
            self.trace.push_back(e);
        }
    }

    /// Writes a `state_sent` or `state` event, marked as the delivered set when the
    /// application says its state is ([`HostConfig::trace_states_as_delivered_sets`]).
    pub(crate) fn record_state(&mut self, now: Instant, e: impl FnOnce() -> TraceEvent) {
        let delivered = self.config.trace_states_as_delivered_sets;
        self.record(now, || if delivered { e().of_delivered_set() } else { e() });
    }

    /// An empty digest of a state, as the trace digests one.
    pub(crate) fn digest(&self) -> Digest {
        match self.config.state_digest {
            Some(f) => Digest::Whole(f, Vec::new()),
            None => Digest::new(self.config.trace_states_as_delivered_sets),
        }
    }

    /// The trace's digest of a state given whole.
    pub(crate) fn digest_of(&self, state: &[u8]) -> String {
        match self.config.state_digest {
            Some(f) => f(state),
            None => Digest::of(state, self.config.trace_states_as_delivered_sets),
        }
    }

    /// Answers a waiter (if anyone waits).
    pub(crate) fn reply(&mut self, waiter: Option<WaiterId>, reply: crate::Reply) {
        if let Some(waiter) = waiter {
            self.out.push_back(Output::Reply { waiter, reply });
        }
    }

    pub(crate) fn me(&self) -> Option<&ProcessId> {
        self.engine.as_ref().map(|e| e.id())
    }

    /// Whether this node's engine runs as a member.
    pub(crate) fn running(&self) -> bool {
        self.engine.as_ref().is_some_and(|e| e.status() == Status::Member)
    }
}
