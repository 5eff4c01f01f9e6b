//! The simulated cluster: hosts (each around its engine, as the runtime hosts one), a
//! virtual clock, a faulty network, a workload, a trace.

use crate::app::{joined_late, App, Ctx, Pending, Proc, Writing};
use crate::profile::Profile;
use crate::workload::{Traffic, SEND_WINDOW};
use bytes::Bytes;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::time::Duration;
use synchrony_check::{Causality, Options};
use synchrony_engine::{Config, Event, GroupName, Instant, PeerList, ProcessId, RoundPhase, Status};
use synchrony_host::{
    ConsumerId, GroupEvent, Host, HostConfig, HostCounters, NodeEvent, Output, Piece, Reply, WaiterId,
};
use synchrony_trace::{EventKind, Recorder, TraceEvent};

/// The shape of one simulated run.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// The seed everything derives from.
    pub seed: u64,
    /// The fault profile.
    pub profile: Profile,
    /// Processes.
    pub nodes: usize,
    /// Groups.
    pub groups: usize,
    /// How long faults and traffic run (virtual time).
    pub fault_phase: Duration,
    /// How long traffic goes on after the faults stop.
    pub calm_traffic: Duration,
    /// How long the cluster then has to settle with no traffic.
    pub settle: Duration,
    /// Mean time between application actions (sends, queries, flushes) per process.
    pub action_every: Duration,
    /// How far the checker follows causality (G6).
    pub causality: Causality,
    /// Whether the engines keep causal order across groups (`Config::causal_across_groups`;
    /// off only to show what the rule buys).
    pub causal_across_groups: bool,
    /// With [`Profile::peer_list`]: how many peers each process is told its list names
    /// (default: the true number). Fewer is a misconfiguration that lets two clusters form
    /// at once, which the run must then report.
    pub listed: Option<usize>,
}

impl SimConfig {
    /// A run of `profile` with `seed` and the default shape (5 processes, 3 groups).
    pub fn new(seed: u64, profile: Profile) -> Self {
        let (nodes, groups) = profile.shape.unwrap_or((5, 3));
        let action_every = profile.action_every;
        Self {
            seed,
            profile,
            nodes,
            groups,
            fault_phase: Duration::from_millis(2500),
            calm_traffic: Duration::from_millis(400),
            settle: Duration::from_millis(3000),
            action_every: action_every.unwrap_or(Duration::from_millis(4)),
            causality: Causality::default(),
            causal_across_groups: true,
            listed: None,
        }
    }
}

/// What a run produced.
#[derive(Debug)]
pub struct Outcome {
    /// The trace, every process's events.
    pub trace: Vec<TraceEvent>,
    /// The checker's report (quiescent mode).
    pub report: synchrony_check::Report,
    /// The app's own invariants that did not hold (see [`App::finish`]).
    pub app_violations: Vec<String>,
    /// Simulation steps taken.
    pub steps: u64,
    /// Packets delivered.
    pub packets: u64,
    /// Anomalies the engines counted (cut messages that could not be delivered).
    pub anomalies: u64,
    /// Processes that were cluster members at the end (0: the run ended in total failure).
    pub survivors: usize,
    /// What the processes' hosts counted, added up over the run.
    pub host_counters: HostCounters,
}

impl Outcome {
    /// Whether the run passed.
    pub fn passed(&self) -> bool {
        self.report.violations.is_empty() && self.app_violations.is_empty() && self.anomalies == 0
    }

    /// The first thing that went wrong, in one paragraph (`None` if the run passed).
    pub fn first_problem(&self) -> Option<String> {
        if let Some(v) = self.report.violations.first() {
            return Some(v.to_string());
        }
        if let Some(v) = self.app_violations.first() {
            return Some(format!("app: {v}"));
        }
        (self.anomalies > 0).then(|| format!("{} engine anomalies", self.anomalies))
    }

    /// The trace as JSON Lines.
    pub fn trace_jsonl(&self) -> String {
        let mut s = String::new();
        for e in &self.trace {
            s.push_str(&e.to_json_line());
            s.push('\n');
        }
        s
    }
}

#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct InFlight {
    at: std::cmp::Reverse<(Instant, u64)>,
    from: usize,
    to: usize,
    frame: Bytes,
}

struct Sim<'a, A: App> {
    cfg: SimConfig,
    app: &'a mut A,
    rng: ChaCha8Rng,
    now: Instant,
    nodes: Vec<Proc>,
    net: BinaryHeap<InFlight>,
    seq: u64,
    blocked: BTreeSet<(usize, usize)>,
    heal_at: Option<Instant>,
    trace: Vec<TraceEvent>,
    groups: Vec<GroupName>,
    packets: u64,
    anomalies: u64,
    /// A leader crash waiting for its moment.
    leader_crash_armed: Option<LeaderCrash>,
    /// What went wrong that the checker does not judge (see [`Profile::no_false_suspicions`]).
    sim_violations: Vec<String>,
    /// With [`Profile::peer_list`]: the cluster each incarnation was a member of (by its
    /// trace name), and the next cluster's number.
    clusters: BTreeMap<String, u64>,
    next_cluster: u64,
    /// What the hosts gone so far counted.
    host_counters: HostCounters,
}

/// Adds what one host counted to `sum`.
fn add_counters(sum: &mut HostCounters, host: &Host) {
    let c = host.counters();
    sum.rejected_by_verifier += c.rejected_by_verifier;
    sum.reading_paused += c.reading_paused;
    sum.flow_waits += c.flow_waits;
}

/// A kind of fault a profile schedules, each at its own mean interval (see [`Profile`]).
#[derive(Clone, Copy, Debug)]
enum Fault {
    /// A process crashes (the leader, in the middle of a view change, with
    /// `Profile::crash_leader`) and restarts a little later.
    Crash,
    /// A minority is cut off, sometimes one way only, for a while.
    Partition,
    /// A process pauses past the failure timeout (or only its application, deaf).
    Pause,
    /// A process joins or leaves a group.
    Churn,
    /// Every member of the app's first group fails.
    GroupCrash,
    /// A process leaves the cluster cleanly, and restarts a little later.
    Leave,
    /// A process joins or leaves hundreds of groups at once.
    MassChurn,
    /// Every process crashes, and all restart a little later.
    TotalFailure,
}

impl Fault {
    // (A profile without a kind draws nothing for it: adding one changes no other run.)
    const ALL: [Fault; 8] = [
        Fault::Crash,
        Fault::Partition,
        Fault::Pause,
        Fault::Churn,
        Fault::GroupCrash,
        Fault::Leave,
        Fault::MassChurn,
        Fault::TotalFailure,
    ];

    /// The mean time between two faults of this kind, if the profile has them.
    fn mean(self, p: &Profile) -> Option<Duration> {
        match self {
            Fault::Crash => p.crash_every,
            Fault::Partition => p.partition_every,
            Fault::Pause => p.pause_every,
            Fault::Churn => p.churn_every,
            Fault::GroupCrash => p.group_crash_every,
            Fault::Leave => p.leave_every,
            Fault::MassChurn => p.mass_churn_every,
            Fault::TotalFailure => p.total_failure_every,
        }
    }
}

/// Where in a view change an armed leader crash strikes.
#[derive(Clone, Copy, Debug)]
enum LeaderCrash {
    /// While the leader waits for promises (phase 1).
    InPrepare,
    /// While it waits for acceptances (phase 2).
    InAccept,
    /// Right after it sent its commits (some of which the network may then lose for good).
    AfterCommit,
}

/// When things happen in a run: its phases, the next action, the next fault of each kind.
struct Schedule {
    faults_end: Instant,
    traffic_end: Instant,
    end: Instant,
    next_action: Instant,
    /// Mean time between application actions, over all processes.
    action_gap: Duration,
    next_fault: [Option<Instant>; Fault::ALL.len()],
}

fn exp(rng: &mut ChaCha8Rng, mean: Duration) -> Duration {
    let u: f64 = rng.gen_range(1e-9..1.0);
    mean.mul_f64(-u.ln())
}

impl<A: App> Sim<'_, A> {
    fn config_for(&self, idx: usize, inc: u64) -> Config {
        // The first process founds the cluster. After a total failure nobody answers a
        // restarted process: recovering from that is the durability layer's job.
        let contacts = if idx == 0 && inc == 1 && !self.cfg.profile.peer_list {
            Vec::new()
        } else {
            (0..self.nodes.len())
                .filter(|&j| j != idx)
                .map(|j| ProcessId::contact(self.nodes[j].name.as_str()))
                .collect()
        };
        let mut config = Config {
            contacts,
            rng_seed: self.cfg.seed ^ ((idx as u64) << 32) ^ inc.wrapping_mul(0x9e37_79b9_7f4a_7c15),
            causal_across_groups: self.cfg.causal_across_groups,
            peer_list: self.cfg.profile.peer_list.then(|| {
                let names: Vec<&str> = self.nodes.iter().map(|n| n.name.as_str()).collect();
                let list = PeerList::of(&names[..self.cfg.listed.unwrap_or(names.len()).min(names.len())]);
                PeerList { size: self.cfg.listed.unwrap_or(list.size), ..list }
            }),
            ..Config::fast()
        };
        if let Some(f) = self.cfg.profile.fragments {
            config.fragment_bytes = f.bytes;
            config.fragment_window_bytes = f.window;
            config.state_chunk_bytes = f.state_chunk;
            config.state_window_bytes = f.state_window;
        }
        if self.cfg.profile.streamed_state {
            // Joiners hold back their acknowledgements after a message or two.
            config.joiner_hold_bytes = 1000;
        }
        config
    }

    fn record(&mut self, idx: usize, e: TraceEvent) {
        self.nodes[idx].record(self.now, &mut self.trace, e);
    }

    /// What a process's host does (the runtime's defaults where the simulation does not
    /// say otherwise; the flow control window is the workload's).
    fn host_config(&self) -> HostConfig {
        let p = &self.cfg.profile;
        let engine = Config::fast();
        HostConfig {
            send_window: p.slow_readers.map_or(SEND_WINDOW, |s| s.send_window),
            send_window_bytes: 64 << 20,
            app_stall_timeout: p.slow_readers.map_or(Duration::from_secs(10), |s| s.stall_timeout),
            rejoin: self.app.rejoins(),
            on_list: p.peer_list,
            consumer_queue: p.slow_readers.map_or(256, |s| s.queue),
            trace: true,
            // States carry the delivered ids, which the trace's digest is of (G11).
            state_digest: Some(crate::app::state_digest),
            trace_states_as_delivered_sets: true,
            time_deliveries: false,
            heartbeat_interval: engine.heartbeat_interval,
            failure_timeout: engine.failure_timeout,
            state_window_bytes: p.fragments.map_or(engine.state_window_bytes, |f| f.state_window),
        }
    }

    /// The app's handle on process `idx` (which must be running).
    fn ctx(&mut self, idx: usize) -> (&mut A, Ctx<'_>) {
        let ctx = Ctx {
            slot: idx,
            proc: &mut self.nodes[idx],
            now: self.now,
            rng: &mut self.rng,
            trace: &mut self.trace,
            batches: self.cfg.profile.batches,
        };
        (self.app, ctx)
    }

    /// Starts process `idx`'s next incarnation: on its host if it has one that rejoins (it
    /// was excluded, or left the cluster), else on a fresh host (it crashed, or its app
    /// starts afresh), whose app joins its groups once it is a member.
    fn start(&mut self, idx: usize) {
        let inc = self.nodes[idx].incarnation + 1;
        let config = self.config_for(idx, inc);
        let host_config = self.host_config();
        let now = self.now;
        let n = &mut self.nodes[idx];
        n.incarnation = inc;
        n.recorder.set_process(format!("{}#{inc}", n.name));
        n.delivered.clear();
        n.paused_until = None;
        n.deaf = false;
        n.held.clear();
        n.restart_at = None;
        n.uncork_at = None;
        n.inbox.clear();
        n.work = Duration::ZERO;
        n.cluster = None;
        n.incoming.clear();
        n.writing.clear();
        n.unread.clear();
        n.read_at = None;
        n.busy_until = now;
        if n.host.is_none() {
            n.host = Some(Host::new(host_config));
            n.fresh = true;
            n.pending.clear();
        }
        let me = ProcessId::new(n.name.as_str(), inc);
        n.host.as_mut().expect("made").start(now, me, config);
        self.app.started(idx);
        self.pump(idx);
    }

    fn crash(&mut self, idx: usize, restart_after: Duration) {
        let Some(host) = self.nodes[idx].host.take() else { return };
        add_counters(&mut self.host_counters, &host);
        // (A process stopped already, waiting to rejoin, writes nothing more.)
        if host.engine().is_some_and(|e| e.status() != Status::Partitioned) {
            // What it had sent but not yet put on the wire dies with it: half of its
            // packets still in flight are lost.
            let net = std::mem::take(&mut self.net);
            for f in net.into_vec() {
                if f.from != idx || self.rng.gen_bool(0.5) {
                    self.net.push(f);
                }
            }
            self.record(idx, TraceEvent::bare(EventKind::Crash));
        }
        self.nodes[idx].inbox.clear();
        self.nodes[idx].restart_at = Some(self.now + restart_after);
    }

    fn live(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| {
                self.nodes[i].engine().is_some_and(|e| e.status() == Status::Member)
                    && self.nodes[i].paused_until.is_none()
            })
            .collect()
    }

    /// With a leader crash armed, crashes the leader in the middle of a view change: in
    /// phase 1, in phase 2, or right after it sent its commits (some of which the network
    /// may then lose for good), a third of the time each.
    fn crash_leader_in_round(&mut self) {
        let Some(when) = self.leader_crash_armed else { return };
        for i in 0..self.nodes.len() {
            let phase = self.nodes[i].engine().and_then(|e| e.round_phase());
            let was = std::mem::replace(&mut self.nodes[i].last_phase, phase);
            let hit = match when {
                LeaderCrash::InPrepare => phase == Some(RoundPhase::Prepare),
                LeaderCrash::InAccept => phase == Some(RoundPhase::Accept),
                LeaderCrash::AfterCommit => was == Some(RoundPhase::Accept) && phase.is_none(),
            };
            if hit {
                self.leader_crash_armed = None;
                let back = Duration::from_millis(self.rng.gen_range(100..600));
                self.crash(i, back);
                return;
            }
        }
    }

    /// Drains a host's outputs: frames into the network, the rest to the application, until
    /// nothing more comes (what the app does makes more).
    fn pump(&mut self, idx: usize) {
        let cost = self.cost();
        let now = self.now;
        while let Some(n) = self.nodes.get_mut(idx).filter(|n| n.host.is_some()) {
            let host = n.host.as_mut().expect("live");
            host.pump(now, usize::MAX);
            let mut frames = Vec::new();
            while let Some(t) = host.poll_transmit() {
                frames.push(t);
            }
            let mut outs = Vec::new();
            while let Some(o) = host.poll_output() {
                outs.push(o);
            }
            // Read at every step, not only once the engine is drained: an output may stop
            // the process (its host dropped) before that, and its count with it.
            let anomalies = host.engine().map_or(0, |e| e.stats().cut_anomalies);
            self.anomalies = self.anomalies.max(anomalies);
            n.take_trace(now, &mut self.trace);
            for t in frames {
                if let Some(c) = cost {
                    self.charge(idx, c.per_kib.mul_f64(t.frame.len() as f64 / 1024.0));
                }
                self.transmit(idx, t.to.name.as_ref(), t.frame);
            }
            if outs.is_empty() {
                break;
            }
            for o in outs {
                if let Some(c) = cost {
                    self.charge(idx, c.per_event);
                }
                self.on_output(idx, o);
            }
        }
        if cost.is_some() {
            let n = &mut self.nodes[idx];
            n.busy_until = n.busy_until.max(self.now) + std::mem::take(&mut n.work);
        }
    }

    fn transmit(&mut self, from: usize, to_name: &str, frame: Bytes) {
        let Some(to) = self.nodes.iter().position(|n| n.name == to_name) else { return };
        if self.blocked.contains(&(from, to)) {
            return;
        }
        let p = &self.cfg.profile;
        if self.rng.gen_bool(p.loss) {
            return;
        }
        let copies = if self.rng.gen_bool(p.dup) { 2 } else { 1 };
        // With a cost model, a frame leaves once the work that made it is done.
        let leaves = match p.cost {
            Some(_) => self.nodes[from].busy_until.max(self.now) + self.nodes[from].work,
            None => self.now,
        };
        for _ in 0..copies {
            let lat = self.rng.gen_range(p.latency.0..=p.latency.1);
            self.seq += 1;
            self.net.push(InFlight { at: std::cmp::Reverse((leaves + lat, self.seq)), from, to, frame: frame.clone() });
        }
    }

    /// One output of process `idx`'s host (which is running).
    fn on_output(&mut self, idx: usize, out: Output) {
        if self.nodes[idx].host.is_none() {
            return; // it stopped for good in an earlier output of the same pump
        }
        match out {
            Output::Reply { waiter, reply } => self.on_reply(idx, waiter, reply),
            Output::Forget(waiter) => drop(self.nodes[idx].pending.remove(&waiter)),
            Output::Events { consumer, group, events } => self.on_batch(idx, consumer, group, events),
            Output::Merged { consumer, events } => {
                for (group, ev) in events {
                    self.on_batch(idx, consumer, group, vec![ev]);
                }
            }
            Output::Node(NodeEvent::Joined { .. }) => self.on_joined(idx),
            Output::Node(NodeEvent::SendLost { group, id }) => self.tell_app(idx, &Event::SendLost { group, id }),
            Output::Node(_) => {}
            Output::StatePiece { group, piece } => {
                // Read at once (before the `StateStreamed` event that ends it).
                let Piece::Data { offset, data } = piece else { return };
                let n = &mut self.nodes[idx];
                let buf = n.incoming.entry(group.clone()).or_default();
                if offset == 0 {
                    buf.clear();
                }
                buf.extend_from_slice(&data);
                n.tell(self.now, synchrony_host::Command::StateRead { group, bytes: data.len() as u64 });
            }
            Output::Stopped { reason, rejoin } => {
                if self.cfg.profile.no_false_suspicions {
                    let who = format!("{}#{}", self.nodes[idx].name, self.nodes[idx].incarnation);
                    self.sim_violations.push(format!(
                        "{who} stopped ({reason:?}) at {:?} though only crashes were injected: a live process was suspected",
                        self.now.since_epoch()
                    ));
                }
                if !rejoin {
                    // The app starts afresh (its host is gone: nothing of it rejoins).
                    if let Some(h) = self.nodes[idx].host.take() {
                        add_counters(&mut self.host_counters, &h);
                    }
                }
                let back = Duration::from_millis(self.rng.gen_range(50..300));
                self.nodes[idx].restart_at = Some(self.now + back);
            }
        }
    }

    /// Process `idx` is a member of the cluster. A fresh host's app joins the groups it
    /// wants (those it joins again after a restart); a host that rejoined did so itself.
    fn on_joined(&mut self, idx: usize) {
        if self.cfg.profile.peer_list {
            self.note_cluster(idx);
        }
        if !std::mem::take(&mut self.nodes[idx].fresh) {
            return;
        }
        let app = &self.app;
        self.nodes[idx].wanted.retain(|g| app.rejoin_on_restart(g));
        let wanted: Vec<GroupName> = self.nodes[idx].wanted.iter().cloned().collect();
        let (_, mut ctx) = self.ctx(idx);
        for g in wanted {
            ctx.join(&g);
        }
    }

    /// A command's answer that came later.
    fn on_reply(&mut self, idx: usize, waiter: WaiterId, reply: Reply) {
        let Some(p) = self.nodes[idx].pending.remove(&waiter) else { return };
        match (p, reply) {
            (Pending::Send { group, outcome }, Reply::Sent(Ok(id))) => {
                if let Some(o) = outcome {
                    self.nodes[idx].pending.insert(o, Pending::Query(Some(id.clone())));
                }
                let (app, mut ctx) = self.ctx(idx);
                app.sent(&mut ctx, &group, &id, outcome.is_some());
            }
            (Pending::Query(_), Reply::QueryDone(q)) => self.tell_app(idx, &Event::QueryDone(q)),
            (Pending::Join(group), Reply::Joined(r)) => joined_late(&mut self.nodes[idx], &group, &r),
            (Pending::Flush(group), Reply::Flushed(Ok(view))) => self.tell_app(idx, &Event::Flushed { group, view }),
            (Pending::Write { group, view }, Reply::StateWritten(r)) => {
                let n = &mut self.nodes[idx];
                let w = n.writing.iter().position(|w| w.group == group && w.view == view);
                match (w, r) {
                    (Some(k), Ok(())) => n.writing[k].waiting = false,
                    (Some(k), Err(_)) => drop(n.writing.remove(k)),
                    (None, _) => {}
                }
            }
            _ => {}
        }
    }

    /// A batch of a group's events for process `idx`: read now, or (with slow readers)
    /// when the app next reads, if it has not fallen too far behind.
    fn on_batch(&mut self, idx: usize, consumer: ConsumerId, group: GroupName, events: Vec<GroupEvent>) {
        if self.cfg.profile.slow_readers.is_some() {
            self.nodes[idx].unread.entry(consumer).or_default().push_back((group, events));
            if self.nodes[idx].read_at.is_none() {
                let at = self.now + self.read_gap();
                self.nodes[idx].read_at = Some(at);
            }
            return;
        }
        for ev in events {
            self.on_group_event(idx, &group, ev);
        }
        // Read at once: its consumer has all its room again.
        let (now, queue) = (self.now, self.host_config().consumer_queue);
        if let Some(h) = self.nodes[idx].host.as_mut() {
            h.handle_room(now, consumer, queue);
        }
    }

    /// One of a group's events, as its consumer reads it.
    fn on_group_event(&mut self, idx: usize, group: &GroupName, ev: GroupEvent) {
        if self.nodes[idx].host.is_none() {
            return;
        }
        let group = group.clone();
        match ev {
            GroupEvent::View(view) => {
                self.nodes[idx].delivered.entry(group.clone()).or_default();
                self.tell_app(idx, &Event::View { group, view });
            }
            GroupEvent::Message(d) => {
                self.nodes[idx].delivered.entry(d.group.clone()).or_default().insert(d.id.to_string());
                self.tell_app(idx, &Event::Deliver(d));
            }
            GroupEvent::StateRequest { view, joiners } => {
                let (app, mut ctx) = self.ctx(idx);
                let state = app.state(&mut ctx, &group);
                ctx.provide_state(&group, view, &joiners, state);
            }
            GroupEvent::State { view, state } => self.load_state(idx, group, view, state),
            GroupEvent::StateStreamed { view, .. } => {
                // Read as a stream: the parts came before.
                let state = self.nodes[idx].incoming.remove(&group).map(Bytes::from).unwrap_or_default();
                self.load_state(idx, group, view, state);
            }
            GroupEvent::Left => {
                self.nodes[idx].delivered.remove(&group);
                self.tell_app(idx, &Event::Left { group });
            }
            GroupEvent::JoinRefused => {
                self.nodes[idx].wanted.remove(&group);
                self.tell_app(idx, &Event::JoinRefused { group });
            }
            GroupEvent::Partitioned(_) => {}
        }
    }

    /// A joiner's state: the delivered ids the checker needs are taken out, the rest is
    /// the app's.
    fn load_state(&mut self, idx: usize, group: GroupName, view: synchrony_engine::ViewId, state: Bytes) {
        let (app, mut ctx) = self.ctx(idx);
        let state = ctx.load_state(&group, &state);
        app.event(&mut ctx, &Event::State { group, view, state });
    }

    /// Hands an event to the app at process `idx`.
    fn tell_app(&mut self, idx: usize, ev: &Event) {
        let (app, mut ctx) = self.ctx(idx);
        app.event(&mut ctx, ev);
    }

    /// One application action at a random live process.
    fn act(&mut self, churn: bool) {
        let live = self.live();
        let Some(&idx) = live.choose(&mut self.rng) else { return };
        if churn {
            let g = self.groups.choose(&mut self.rng).expect("groups").clone();
            let several = self.nodes[idx].wanted.len() > 1;
            let member = self.nodes[idx].engine().is_some_and(|e| e.my_groups().any(|x| *x == g));
            let (_, mut ctx) = self.ctx(idx);
            if member && several {
                ctx.leave(&g);
            } else if !member {
                ctx.join(&g);
            }
            drop(ctx);
            if let Some(c) = self.cost() {
                self.charge(idx, c.per_input);
            }
            self.pump(idx);
            return;
        }
        let (app, mut ctx) = self.ctx(idx);
        app.act(&mut ctx);
        drop(ctx);
        if let Some(c) = self.cost() {
            self.charge(idx, c.per_input);
        }
        self.pump(idx);
    }

    /// Whether the cluster keeps a working majority if the processes `out` are faulted: of
    /// the largest current view (it still lists members that crashed and are not yet
    /// excluded), more than half must be live and not in `out`. Faults are meant to be
    /// survivable; a total failure is the durability layer's case.
    fn majority_survives(&self, live: &[usize], out: &[usize]) -> bool {
        let view = live.iter().filter_map(|&i| self.nodes[i].engine()).map(|e| e.members()).max_by_key(|m| m.len());
        let Some(view) = view else { return false };
        let up = view
            .iter()
            .filter(|m| live.iter().any(|&i| !out.contains(&i) && self.nodes[i].engine().is_some_and(|e| e.id() == *m)))
            .count();
        up > view.len() / 2
    }

    /// Every member of the app's first group fails, at once or one by one (a total
    /// failure of the group), keeping a working majority of the cluster; all restart after.
    fn crash_group(&mut self) {
        let live = self.live();
        let busy = self.nodes.iter().any(|n| n.paused_until.is_some() || n.crash_at.is_some() || n.engine().is_none());
        if self.heal_at.is_some() || busy {
            return;
        }
        let g = &self.groups[0];
        let mut targets: Vec<usize> = live
            .iter()
            .copied()
            .filter(|&i| self.nodes[i].engine().is_some_and(|e| e.my_groups().any(|x| x == g)))
            .collect();
        if targets.is_empty() || !self.majority_survives(&live, &targets) {
            return;
        }
        targets.shuffle(&mut self.rng);
        let one_by_one = self.rng.gen_bool(0.5);
        let mut at = self.now;
        let mut crashes = Vec::new();
        for (k, &t) in targets.iter().enumerate() {
            if one_by_one && k > 0 {
                at = at + Duration::from_millis(self.rng.gen_range(20..300));
            }
            crashes.push((t, at));
        }
        let last = at;
        for (t, at) in crashes {
            let back = last.saturating_since(at) + Duration::from_millis(self.rng.gen_range(100..500));
            self.nodes[t].crash_at = Some((at, back));
        }
    }

    fn fault(&mut self, fault: Fault) {
        match fault {
            Fault::Crash => self.crash_one(),
            Fault::Partition => self.partition(),
            Fault::Pause => self.pause(),
            Fault::Churn => self.act(true),
            Fault::GroupCrash => self.crash_group(),
            Fault::Leave => self.leave_one(),
            Fault::MassChurn => self.mass_churn(),
            Fault::TotalFailure => self.total_failure(),
        }
    }

    /// Every process crashes (the cluster is gone), and each restarts a little later, at
    /// its own moment, with the same peer list.
    fn total_failure(&mut self) {
        for i in 0..self.nodes.len() {
            let back = Duration::from_millis(self.rng.gen_range(50..800));
            if self.nodes[i].host.is_some() {
                self.crash(i, back);
            } else {
                self.nodes[i].restart_at = Some(self.now + back);
            }
        }
    }

    /// A live process joins a few hundred groups it is not in, all in one call, or leaves
    /// a few hundred it is in.
    fn mass_churn(&mut self) {
        let live = self.live();
        let Some(&idx) = live.choose(&mut self.rng) else { return };
        let n = self.rng.gen_range(100..500);
        let join = self.rng.gen_bool(0.5);
        let mine: BTreeSet<GroupName> =
            self.nodes[idx].engine().map(|e| e.my_groups().cloned().collect()).unwrap_or_default();
        let mut pick: Vec<GroupName> = self.groups.iter().filter(|g| mine.contains(*g) != join).cloned().collect();
        pick.shuffle(&mut self.rng);
        pick.truncate(n);
        // (It keeps at least the first group: a process in no group has no traffic.)
        let first = self.groups[0].clone();
        let (_, mut ctx) = self.ctx(idx);
        if join {
            ctx.join_many(pick);
        } else {
            for g in pick.into_iter().filter(|g| *g != first) {
                ctx.leave(&g);
            }
        }
        drop(ctx);
        self.charge(idx, self.cost().map_or(Duration::ZERO, |c| c.per_input));
        self.pump(idx);
    }

    fn cost(&self) -> Option<crate::Cost> {
        self.cfg.profile.cost
    }

    /// Adds to the work of the input process `idx` is handling (see [`crate::Cost`]).
    fn charge(&mut self, idx: usize, d: Duration) {
        self.nodes[idx].work += d;
    }

    /// Whether process `idx`'s app is behind on its events (its host then reads no frames).
    fn behind(&self, idx: usize) -> bool {
        self.nodes[idx].host.as_ref().is_some_and(|h| h.behind())
    }

    /// With slow readers: how long until an app next reads its events.
    fn read_gap(&mut self) -> Duration {
        let gap = self.cfg.profile.slow_readers.map_or(Duration::ZERO, |s| s.read_every);
        exp(&mut self.rng, gap)
    }

    /// With slow readers: the app at process `i` reads a few batches of each of its
    /// consumers, and its host hears that they have room again.
    fn read_events(&mut self, i: usize) {
        let Some(slow) = self.cfg.profile.slow_readers else { return };
        self.nodes[i].read_at = None;
        let consumers: Vec<ConsumerId> = self.nodes[i].unread.keys().copied().collect();
        for c in consumers {
            let take = self.rng.gen_range(1..=slow.queue);
            for _ in 0..take {
                let Some((group, events)) = self.nodes[i].unread.get_mut(&c).and_then(|q| q.pop_front()) else {
                    break;
                };
                for ev in events {
                    self.on_group_event(i, &group, ev);
                }
            }
            let n = &mut self.nodes[i];
            let left = n.unread.get(&c).map_or(0, |q| q.len());
            if left == 0 {
                n.unread.remove(&c);
            }
            let now = self.now;
            if let Some(h) = n.host.as_mut() {
                h.handle_room(now, c, slow.queue.saturating_sub(left));
            }
        }
        if !self.nodes[i].unread.is_empty() {
            self.nodes[i].read_at = Some(self.now + self.read_gap());
        }
        self.pump(i);
    }

    /// Whether process `idx` is still busy with earlier work.
    fn busy(&self, idx: usize) -> bool {
        self.cost().is_some() && self.nodes[idx].busy_until > self.now
    }

    /// A clean leave of the cluster (not while a partition or a pause is on), and a restart
    /// as a new incarnation a little later.
    fn leave_one(&mut self) {
        let live = self.live();
        let paused = self.nodes.iter().any(|n| n.paused_until.is_some());
        if self.heal_at.is_some() || paused {
            return;
        }
        let Some(t) = live.choose(&mut self.rng).copied().filter(|&t| self.majority_survives(&live, &[t])) else {
            return;
        };
        let back = Duration::from_millis(self.rng.gen_range(300..900));
        let now = self.now;
        if let Some(e) = self.nodes[t].engine_mut() {
            e.leave_cluster(now);
        }
        self.pump(t);
        self.nodes[t].restart_at = Some(now + back);
    }

    /// A crash (not while a partition or a pause is on: one fault at a time).
    fn crash_one(&mut self) {
        let live = self.live();
        let paused = self.nodes.iter().any(|n| n.paused_until.is_some());
        if self.heal_at.is_some() || paused || !live.iter().any(|&t| self.majority_survives(&live, &[t])) {
            return;
        }
        let target = if self.cfg.profile.crash_leader {
            // The leader, preferably in the middle of a view change (it is then
            // crashed as soon as it is there: see `crash_leader_in_round`).
            let leader = live.iter().copied().find(|&i| {
                let e = self.nodes[i].engine().expect("live");
                e.leader() == Some(e.id())
            });
            if leader.is_some_and(|l| self.nodes[l].engine().is_some_and(|e| e.round_phase().is_none())) {
                // (Drawn as a u8, as it always was: the same seeds make the same runs.)
                let when = [LeaderCrash::InPrepare, LeaderCrash::InAccept, LeaderCrash::AfterCommit];
                self.leader_crash_armed = Some(when[usize::from(self.rng.gen_range(0..3u8))]);
                return;
            }
            leader
        } else {
            live.choose(&mut self.rng).copied()
        };
        if let Some(t) = target.filter(|&t| self.majority_survives(&live, &[t])) {
            let back = Duration::from_millis(self.rng.gen_range(100..600));
            self.crash(t, back);
        }
    }

    /// A partition: a random minority (sometimes one-way) for a while.
    fn partition(&mut self) {
        let n = self.nodes.len();
        let live = self.live();
        if self.heal_at.is_some() {
            return;
        }
        let mut ids: Vec<usize> = (0..n).collect();
        ids.shuffle(&mut self.rng);
        let k = self.rng.gen_range(1..=(n - 1) / 2);
        let (side, rest) = ids.split_at(k);
        // Keep a working majority on the other side (faults come one at a time).
        if !self.majority_survives(&live, side) {
            return;
        }
        let one_way = self.rng.gen_bool(0.3);
        for &a in side {
            for &b in rest {
                self.blocked.insert((a, b));
                if !one_way {
                    self.blocked.insert((b, a));
                }
            }
        }
        self.heal_at = Some(self.now + Duration::from_millis(self.rng.gen_range(150..700)));
    }

    /// A pause past the failure timeout, keeping a working majority.
    fn pause(&mut self) {
        let live = self.live();
        if self.heal_at.is_some() || self.nodes.iter().any(|n| n.paused_until.is_some()) {
            return;
        }
        if let Some(&t) = live.choose(&mut self.rng).filter(|&&t| self.majority_survives(&live, &[t])) {
            let d = Duration::from_millis(self.rng.gen_range(250..600));
            self.nodes[t].paused_until = Some(self.now + d);
            if self.cfg.profile.deaf {
                self.nodes[t].deaf = true;
                let now = self.now;
                if let Some(e) = self.nodes[t].engine_mut() {
                    e.handle_listening(now, false);
                }
            }
        }
    }
}

/// Runs one simulated cluster with `cfg` and the [`Traffic`] workload, checks its trace,
/// and returns the outcome.
pub fn run(cfg: SimConfig) -> Outcome {
    let mut traffic = Traffic::new(cfg.groups);
    if let Some(f) = cfg.profile.fragments {
        traffic = traffic.with_large(f.bytes * 12);
    }
    run_app(cfg, &mut traffic)
}

/// Runs one simulated cluster with `cfg` hosting `app`, checks its trace (G1 to G13) and the
/// app's own invariants, and returns the outcome.
pub fn run_app<A: App>(cfg: SimConfig, app: &mut A) -> Outcome {
    let mut sim = Sim::new(cfg, app);
    let mut schedule = sim.schedule();
    let mut steps = 0u64;
    loop {
        steps += 1;
        let t = sim.next_instant(&schedule);
        if t >= schedule.end {
            break;
        }
        sim.now = t.max(sim.now);
        sim.step(&mut schedule);
        if steps > MAX_STEPS {
            break;
        }
    }
    if std::env::var_os("SYNCHRONY_SIM_DEBUG").is_some() {
        for e in sim.nodes.iter().filter_map(|n| n.engine()) {
            eprintln!("{e:?}\n");
        }
        for n in &sim.nodes {
            let queries: Vec<_> = n
                .pending
                .values()
                .filter_map(|p| if let Pending::Query(Some(id)) = p { Some(id) } else { None })
                .collect();
            if !queries.is_empty() {
                eprintln!("{}#{}: queries whose outcome did not come: {queries:?}", n.name, n.incarnation);
            }
        }
    }
    sim.outcome(steps)
}

/// A run that takes more steps than this is cut short (a livelock the checker then sees).
const MAX_STEPS: u64 = 20_000_000;

impl<'a, A: App> Sim<'a, A> {
    /// The cluster of `cfg.nodes` processes hosting `app`, none started yet.
    fn new(cfg: SimConfig, app: &'a mut A) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
        let groups = app.groups();
        let nodes: Vec<Proc> = (0..cfg.nodes)
            .map(|i| {
                let wanted = app.initial_groups(i, &groups, &mut rng);
                Proc {
                    name: format!("n{}", i + 1),
                    incarnation: 0,
                    host: None,
                    fresh: false,
                    recorder: Recorder::default(),
                    delivered: BTreeMap::new(),
                    wanted,
                    paused_until: None,
                    deaf: false,
                    held: Vec::new(),
                    restart_at: Some(Instant::from_epoch(Duration::from_millis(i as u64 * 3))),
                    crash_at: None,
                    uncork_at: None,
                    last_phase: None,
                    busy_until: Instant::ZERO,
                    inbox: std::collections::VecDeque::new(),
                    work: Duration::ZERO,
                    cluster: None,
                    streams: cfg.profile.streamed_state,
                    incoming: BTreeMap::new(),
                    writing: Vec::new(),
                    next_id: 0,
                    pending: BTreeMap::new(),
                    unread: BTreeMap::new(),
                    read_at: None,
                }
            })
            .collect();
        let mut nodes = nodes;
        if cfg.profile.peer_list {
            // The same command on every machine, started in any order.
            for n in &mut nodes {
                n.restart_at = Some(Instant::from_epoch(Duration::from_millis(rng.gen_range(0..400))));
            }
        }
        Sim {
            app,
            rng,
            now: Instant::ZERO,
            nodes,
            net: BinaryHeap::new(),
            seq: 0,
            blocked: BTreeSet::new(),
            heal_at: None,
            trace: Vec::new(),
            groups,
            packets: 0,
            anomalies: 0,
            leader_crash_armed: None,
            sim_violations: Vec::new(),
            clusters: BTreeMap::new(),
            next_cluster: 1,
            host_counters: HostCounters::default(),
            cfg,
        }
    }

    /// The run's phases, and the first action and fault of each kind.
    fn schedule(&mut self) -> Schedule {
        let cfg = &self.cfg;
        let faults_end = Instant::from_epoch(cfg.fault_phase);
        let traffic_end = faults_end + cfg.calm_traffic;
        let (end, action_gap) = (traffic_end + cfg.settle, cfg.action_every / cfg.nodes.max(1) as u32);
        let means = Fault::ALL.map(|f| f.mean(&cfg.profile));
        let next_fault = means.map(|m| m.map(|d| Instant::ZERO + Duration::from_millis(300) + exp(&mut self.rng, d)));
        let next_action = Instant::from_epoch(Duration::from_millis(50));
        Schedule { faults_end, traffic_end, end, next_action, action_gap, next_fault }
    }

    /// The next moment anything happens (at most the end of the run).
    fn next_instant(&self, sch: &Schedule) -> Instant {
        let mut t = sch.end;
        if let Some(f) = self.net.peek() {
            t = t.min(f.at.0 .0);
        }
        for n in &self.nodes {
            let crash = n.crash_at.map(|(c, _)| c);
            let read = n.read_at.filter(|_| n.paused_until.is_none());
            for x in [n.restart_at, crash, n.uncork_at, n.paused_until, read].into_iter().flatten() {
                t = t.min(x);
            }
            for w in n.writing.iter().filter(|w| n.paused_until.is_none() && n.host.is_some() && !w.waiting) {
                t = t.min(w.next_at.max(n.busy_until));
            }
            if n.paused_until.is_none() || n.deaf {
                if let Some(x) = n.host.as_ref().and_then(|h| h.poll_timeout()) {
                    // (A busy process's timers wait for it: see below.)
                    t = t.min(if self.cost().is_some() { x.max(n.busy_until) } else { x });
                }
            }
        }
        if let Some(h) = self.heal_at {
            t = t.min(h);
        }
        if self.cost().is_some() {
            // A busy process's waiting frames and late timers go on when it is free.
            for n in self.nodes.iter().filter(|n| n.busy_until > self.now) {
                t = t.min(n.busy_until);
            }
        }
        if sch.next_action < sch.traffic_end {
            t = t.min(sch.next_action);
        }
        for f in sch.next_fault.iter().flatten().filter(|f| **f < sch.faults_end) {
            t = t.min(*f);
        }
        t
    }

    /// Everything due now happens: heals, crashes and restarts, wake-ups, packets, uncorks,
    /// timers, then the application's next action and the next faults.
    fn step(&mut self, sch: &mut Schedule) {
        let now = self.now;
        // Faults end: heal everything, wake everyone.
        if self.heal_at.is_some_and(|h| h <= now) || (now >= sch.faults_end && self.heal_at.is_some()) {
            self.blocked.clear();
            self.heal_at = None;
        }
        for i in 0..self.nodes.len() {
            self.wake(i, sch.faults_end);
        }
        for i in 0..self.nodes.len() {
            if self.nodes[i].read_at.is_some_and(|r| r <= now) && self.nodes[i].paused_until.is_none() {
                self.read_events(i);
            }
        }
        if self.cost().is_some() || self.cfg.profile.slow_readers.is_some() {
            self.read_inboxes();
        }
        self.deliver_packets();
        for i in 0..self.nodes.len() {
            if self.nodes[i].uncork_at.is_some_and(|u| u <= now) {
                self.nodes[i].uncork_at = None;
                if let Some(e) = self.nodes[i].engine_mut() {
                    e.uncork(now);
                }
                self.pump(i);
            }
        }
        for i in 0..self.nodes.len() {
            if self.nodes[i].paused_until.is_some() && !self.nodes[i].deaf {
                continue;
            }
            let due = self.nodes[i].host.as_ref().and_then(|h| h.poll_timeout()).is_some_and(|x| x <= now);
            if due && !self.busy(i) {
                if let Some(c) = self.cost() {
                    self.charge(i, c.per_input);
                    self.hear_keepalives(i);
                }
                self.nodes[i].host.as_mut().expect("live").handle_timeout(now);
                self.pump(i);
            }
        }
        for i in 0..self.nodes.len() {
            if !self.nodes[i].writing.is_empty() && self.nodes[i].paused_until.is_none() && !self.busy(i) {
                self.write_states(i);
            }
        }
        if now < sch.faults_end {
            self.crash_leader_in_round();
        }
        if sch.next_action <= now && now < sch.traffic_end {
            self.act(false);
            sch.next_action = now + exp(&mut self.rng, sch.action_gap);
        }
        for (k, fault) in Fault::ALL.into_iter().enumerate() {
            if let (Some(f), Some(mean)) = (sch.next_fault[k], fault.mean(&self.cfg.profile)) {
                if f <= now && now < sch.faults_end {
                    self.fault(fault);
                    sch.next_fault[k] = Some(now + exp(&mut self.rng, mean));
                }
            }
        }
        if self.cfg.profile.peer_list {
            self.check_one_cluster();
        }
    }

    /// A provider writes the next part of each state it writes whose time has come, unless
    /// its last part waits for the joiners to fetch what came before (the host answers
    /// the write then); it stops writing a state nobody needs any more.
    fn write_states(&mut self, i: usize) {
        let now = self.now;
        let n = &mut self.nodes[i];
        if n.engine().is_none_or(|e| e.status() != Status::Member) {
            // It stopped: its states die with it.
            n.writing.clear();
            return;
        }
        let mut writing = std::mem::take(&mut n.writing);
        let mut wrote = false;
        writing.retain_mut(|w| {
            if w.waiting || w.next_at > now {
                return true;
            }
            w.next_at = now + Writing::GAP;
            wrote = true;
            w.write_part(n, now)
        });
        // (Answers that came meanwhile went to the writings put aside: none can, as the
        // host answers a waiting write only when it pumps.)
        n.writing.extend(writing);
        if wrote {
            if let Some(c) = self.cost() {
                self.charge(i, c.per_input);
            }
            self.pump(i);
        }
    }

    /// Process `idx` became a member: of the cluster of the members it names that are
    /// running (it joined one), or of a new one (it formed one: a bootstrap chose it).
    fn note_cluster(&mut self, idx: usize) {
        let Some(e) = self.nodes[idx].engine() else { return };
        let mut found = BTreeSet::new();
        for m in e.members() {
            for n in &self.nodes {
                let running = n.engine().is_some_and(|e| e.status() != Status::Partitioned);
                if n.name.as_str() == &*m.name && n.incarnation == m.incarnation && running {
                    found.extend(n.cluster);
                }
            }
        }
        let who = format!("{}#{}", self.nodes[idx].name, self.nodes[idx].incarnation);
        if found.len() > 1 {
            self.sim_violations.push(format!("{who} joined a cluster whose members were in clusters {found:?}"));
        }
        let c = match found.first() {
            Some(c) => *c,
            None => {
                self.next_cluster += 1;
                self.next_cluster - 1
            }
        };
        self.nodes[idx].cluster = Some(c);
        self.clusters.insert(who, c);
    }

    /// With [`Profile::peer_list`]: never two clusters at once. Every running member (not
    /// paused: a paused one cannot act, and stops when it wakes) is of the same cluster.
    fn check_one_cluster(&mut self) {
        let mut running = BTreeMap::new();
        for n in &self.nodes {
            if n.paused_until.is_none() && n.engine().is_some_and(|e| e.status() == Status::Member) {
                if let Some(c) = n.cluster {
                    running.entry(c).or_insert_with(Vec::new).push(format!("{}#{}", n.name, n.incarnation));
                }
            }
        }
        let said = self.sim_violations.iter().any(|v| v.starts_with("two clusters at once"));
        if running.len() > 1 && !said {
            self.sim_violations.push(format!("two clusters at once at {:?}: {running:?}", self.now.since_epoch()));
        }
    }

    /// With a cost model, what a runtime's transport thread does beside a busy driver: a
    /// peer busy with a long input still sends keepalives (after a heartbeat interval with
    /// nothing written), so when process `i`'s timers run it has heard every such peer no
    /// longer ago than an interval and the longest latency, as the runtime's driver tells
    /// its engine (`Engine::handle_heard`). A crashed, stopped or paused peer sends none,
    /// nor does one cut off from `i`; an idle peer's own frames speak for it.
    fn hear_keepalives(&mut self, i: usize) {
        let now = self.now;
        let lag = Config::fast().heartbeat_interval + self.cfg.profile.latency.1;
        let Some(at) = now.since_epoch().checked_sub(lag).map(Instant::from_epoch) else { return };
        for j in (0..self.nodes.len()).filter(|&j| j != i) {
            let peer = &self.nodes[j];
            let sending = peer.busy_until > now
                && peer.paused_until.is_none()
                && !self.blocked.contains(&(j, i))
                && peer.engine().is_some_and(|e| matches!(e.status(), Status::Member | Status::Joining));
            if sending {
                let id = ProcessId::new(peer.name.as_str(), peer.incarnation);
                if let Some(e) = self.nodes[i].engine_mut() {
                    e.handle_heard(&id, at);
                }
            }
        }
    }

    /// Process `i`'s scheduled crash, restart or end of pause, if due.
    fn wake(&mut self, i: usize, faults_end: Instant) {
        let now = self.now;
        if let Some((_, back)) = self.nodes[i].crash_at.filter(|(c, _)| *c <= now) {
            self.nodes[i].crash_at = None;
            self.crash(i, back);
        }
        if self.nodes[i].restart_at.is_some_and(|r| r <= now) {
            if self.nodes[i].engine().is_some_and(|e| matches!(e.status(), Status::Member | Status::Joining)) {
                // Its clean leave did not finish in time: it is stopped all the same.
                self.crash(i, Duration::ZERO);
            }
            self.start(i);
        }
        if self.nodes[i].paused_until.is_some_and(|u| u <= now || now >= faults_end) {
            self.nodes[i].paused_until = None;
            if std::mem::take(&mut self.nodes[i].deaf) {
                if let Some(e) = self.nodes[i].engine_mut() {
                    e.handle_listening(now, true);
                }
            }
            let held = std::mem::take(&mut self.nodes[i].held);
            for f in held {
                if let Some(e) = self.nodes[i].engine_mut() {
                    let _ = e.handle_frame(now, &f);
                }
            }
            if let Some(e) = self.nodes[i].engine_mut() {
                e.handle_timeout(now);
            }
            self.pump(i);
        }
    }

    /// Packets whose time has come reach their process (a paused one holds them).
    fn deliver_packets(&mut self) {
        let now = self.now;
        while self.net.peek().is_some_and(|f| f.at.0 .0 <= now) {
            let f = self.net.pop().expect("peeked");
            self.packets += 1;
            let n = &mut self.nodes[f.to];
            if n.paused_until.is_some() {
                n.held.push(f.frame);
                continue;
            }
            // A busy process reads later; so does one whose app is behind on its events (the
            // runtime reads no frames then).
            let behind = n.host.as_ref().is_some_and(|h| h.behind());
            if (self.cfg.profile.cost.is_some() && n.busy_until > now) || behind {
                n.inbox.push_back(f.frame);
                continue;
            }
            self.handle_frame(f.to, &f.frame);
        }
    }

    /// Process `idx` (not busy) reads a frame and acts on it.
    fn handle_frame(&mut self, to: usize, frame: &Bytes) {
        let now = self.now;
        if let Some(c) = self.cost() {
            self.charge(to, c.per_input + c.per_kib.mul_f64(frame.len() as f64 / 1024.0));
        }
        let n = &mut self.nodes[to];
        let uncork = n.uncork_at;
        if let Some(e) = n.engine_mut() {
            // Corking as a runtime does: the packets of the next moments, and what the
            // node does about them, go out together.
            let corks = matches!((self.cfg.profile.cork, uncork), (Some(_), None));
            if corks {
                e.cork();
            }
            let _ = e.handle_frame(now, frame);
            if corks {
                n.uncork_at = self.cfg.profile.cork.map(|d| now + d);
            }
            self.pump(to);
        }
    }

    /// Frames that waited while their process was busy, in order, as long as it is not.
    fn read_inboxes(&mut self) {
        for i in 0..self.nodes.len() {
            while !self.busy(i) && self.nodes[i].paused_until.is_none() && !self.behind(i) {
                let Some(f) = self.nodes[i].inbox.pop_front() else { break };
                self.handle_frame(i, &f);
            }
        }
    }

    /// The trace checked (quiescent: every process still running at the end is alive;
    /// crashed ones were recorded), and the app's own invariants.
    fn outcome(mut self, steps: u64) -> Outcome {
        // Every crash is in the trace: nothing is inferred (a silent end would be a bug).
        let options =
            Options { quiescent: true, crash_bound_us: None, causality: self.cfg.causality, infer_crashes: false };
        let report = if self.cfg.profile.peer_list {
            // Each cluster is a world of its own (a new one starts its groups afresh): each
            // is checked alone, with the incarnations that were its members.
            let mut report = synchrony_check::Report::default();
            for c in self.clusters.values().collect::<BTreeSet<_>>() {
                let part: Vec<TraceEvent> =
                    self.trace.iter().filter(|e| self.clusters.get(&e.p) == Some(c)).cloned().collect();
                let r = synchrony_check::check(&part, &options);
                report.events += r.events;
                report.processes += r.processes;
                report.violations.extend(r.violations);
                report.skipped.extend(r.skipped);
            }
            report.skipped.dedup();
            report
        } else {
            synchrony_check::check(&self.trace, &options)
        };
        let live = self.live();
        // At quiescence every command of a running process has had its answer: a send that
        // waited for room went, a join that waited went, a flush returned, a write of a state
        // in parts went on. (Not yet a query's outcome: a member's query to a group it then
        // left may never end, chaos seeds 59 and 87, backpressure 3; to be found in the
        // engine. `SYNCHRONY_SIM_DEBUG` lists those whose outcome did not come.)
        for &i in &live {
            let n = &self.nodes[i];
            let open: Vec<_> = n.pending.iter().filter(|(_, p)| !matches!(p, Pending::Query(_))).collect();
            if let Some((w, p)) = open.first() {
                self.sim_violations.push(format!(
                    "{}#{}: {} commands never answered, e.g. waiter {} ({p:?})",
                    n.name,
                    n.incarnation,
                    open.len(),
                    w.0
                ));
            }
        }
        let mut host_counters = self.host_counters.clone();
        for h in self.nodes.iter().filter_map(|n| n.host.as_ref()) {
            add_counters(&mut host_counters, h);
        }
        let mut app_violations = self.app.finish(&live);
        app_violations.extend(self.sim_violations);
        Outcome {
            trace: self.trace,
            report,
            app_violations,
            steps,
            packets: self.packets,
            anomalies: self.anomalies,
            survivors: live.len(),
            host_counters,
        }
    }
}
