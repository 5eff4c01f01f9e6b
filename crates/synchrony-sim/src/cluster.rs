//! The simulated cluster: engines, a virtual clock, a faulty network, a workload, a trace.

use crate::profile::Profile;
use bytes::Bytes;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::time::Duration;
use synchrony_check::{digest, Options, TraceEvent};
use synchrony_engine::{Config, Engine, Event, GroupName, Instant, Order, ProcessId, Replies, Status};

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
}

impl SimConfig {
    /// A run of `profile` with `seed` and the default shape (5 processes, 3 groups).
    pub fn new(seed: u64, profile: Profile) -> Self {
        Self {
            seed,
            profile,
            nodes: 5,
            groups: 3,
            fault_phase: Duration::from_millis(2500),
            calm_traffic: Duration::from_millis(400),
            settle: Duration::from_millis(3000),
            action_every: Duration::from_millis(4),
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
    /// Simulation steps taken.
    pub steps: u64,
    /// Packets delivered.
    pub packets: u64,
    /// Anomalies the engines counted (cut messages that could not be delivered).
    pub anomalies: u64,
    /// Processes that were cluster members at the end (0: the run ended in total failure).
    pub survivors: usize,
}

impl Outcome {
    /// Whether the run passed.
    pub fn passed(&self) -> bool {
        self.report.violations.is_empty() && self.anomalies == 0
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

struct Node {
    name: String,
    incarnation: u64,
    engine: Option<Engine>,
    counter: u64,
    /// Per group: the delivered message ids (the workload's state).
    state: BTreeMap<GroupName, BTreeSet<String>>,
    wanted: BTreeSet<GroupName>,
    paused_until: Option<Instant>,
    held: Vec<Bytes>,
    restart_at: Option<Instant>,
    /// The membership round phase it was in at the last step (to catch a fresh commit).
    last_phase: Option<&'static str>,
    /// The last message sent to each group, and what each pending flush covers.
    last_sent: BTreeMap<GroupName, String>,
    flushes: BTreeMap<GroupName, std::collections::VecDeque<Option<String>>>,
}

#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct InFlight {
    at: std::cmp::Reverse<(Instant, u64)>,
    from: usize,
    to: usize,
    frame: Bytes,
}

struct Sim {
    cfg: SimConfig,
    rng: ChaCha8Rng,
    now: Instant,
    nodes: Vec<Node>,
    net: BinaryHeap<InFlight>,
    seq: u64,
    blocked: BTreeSet<(usize, usize)>,
    heal_at: Option<Instant>,
    trace: Vec<TraceEvent>,
    groups: Vec<GroupName>,
    packets: u64,
    anomalies: u64,
    /// A leader crash waiting for its moment: 0 phase 1, 1 phase 2, 2 just after commit.
    leader_crash_armed: Option<u8>,
}

fn exp(rng: &mut ChaCha8Rng, mean: Duration) -> Duration {
    let u: f64 = rng.gen_range(1e-9..1.0);
    mean.mul_f64(-u.ln())
}

const ORDERS: [Order; 6] = [Order::Unordered, Order::Fifo, Order::Causal, Order::Total, Order::Safe, Order::Gbcast];

impl Sim {
    fn config_for(&self, idx: usize, inc: u64) -> Config {
        // The first process founds the cluster. After a total failure nobody answers a
        // restarted process: recovering from that is the durability layer's job.
        let contacts = if idx == 0 && inc == 1 {
            Vec::new()
        } else {
            (0..self.nodes.len())
                .filter(|&j| j != idx)
                .map(|j| ProcessId::contact(self.nodes[j].name.as_str()))
                .collect()
        };
        Config {
            contacts,
            rng_seed: self.cfg.seed ^ ((idx as u64) << 32) ^ inc.wrapping_mul(0x9e37_79b9_7f4a_7c15),
            ..Config::fast()
        }
    }

    fn pid(&self, idx: usize) -> String {
        format!("{}#{}", self.nodes[idx].name, self.nodes[idx].incarnation)
    }

    fn record(&mut self, idx: usize, mut e: TraceEvent) {
        e.p = self.pid(idx);
        e.i = self.nodes[idx].counter;
        e.t = self.now.since_epoch().as_micros() as u64;
        self.nodes[idx].counter += 1;
        self.trace.push(e);
    }

    fn start(&mut self, idx: usize) {
        let inc = self.nodes[idx].incarnation + 1;
        let config = self.config_for(idx, inc);
        let n = &mut self.nodes[idx];
        n.incarnation = inc;
        n.counter = 0;
        n.state.clear();
        n.paused_until = None;
        n.held.clear();
        n.restart_at = None;
        n.last_sent.clear();
        n.flushes.clear();
        n.engine = Some(Engine::new(config, ProcessId::new(n.name.as_str(), inc), self.now));
        self.pump(idx);
    }

    fn crash(&mut self, idx: usize, restart_after: Duration) {
        if self.nodes[idx].engine.take().is_some() {
            // What it had sent but not yet put on the wire dies with it: half of its
            // packets still in flight are lost.
            let net = std::mem::take(&mut self.net);
            for f in net.into_vec() {
                if f.from != idx || self.rng.gen_bool(0.5) {
                    self.net.push(f);
                }
            }
            self.record(idx, TraceEvent::bare("crash"));
            self.nodes[idx].restart_at = Some(self.now + restart_after);
        }
    }

    fn live(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| {
                self.nodes[i].engine.as_ref().is_some_and(|e| e.status() == Status::Member)
                    && self.nodes[i].paused_until.is_none()
            })
            .collect()
    }

    /// With a leader crash armed, crashes the leader in the middle of a view change: in
    /// phase 1, in phase 2, or right after it sent its commits (some of which the network
    /// may then lose for good), a third of the time each.
    fn crash_leader_in_round(&mut self) {
        let Some(mode) = self.leader_crash_armed else { return };
        for i in 0..self.nodes.len() {
            let phase = self.nodes[i].engine.as_ref().and_then(|e| e.round_phase());
            let was = std::mem::replace(&mut self.nodes[i].last_phase, phase);
            let hit = match mode {
                0 => phase == Some("prepare"),
                1 => phase == Some("accept"),
                _ => was == Some("accept") && phase.is_none(),
            };
            if hit {
                self.leader_crash_armed = None;
                let back = Duration::from_millis(self.rng.gen_range(100..600));
                self.crash(i, back);
                return;
            }
        }
    }

    /// Drains an engine's outputs: frames into the network, events into the application.
    fn pump(&mut self, idx: usize) {
        loop {
            let Some(engine) = self.nodes[idx].engine.as_mut() else { return };
            let mut frames = Vec::new();
            while let Some(t) = engine.poll_transmit() {
                frames.push(t);
            }
            let ev = engine.poll_event();
            for t in frames {
                self.transmit(idx, t.to.name.as_ref(), t.frame);
            }
            match ev {
                Some(ev) => self.on_event(idx, ev),
                None => {
                    let anomalies = self.nodes[idx].engine.as_ref().map_or(0, |e| e.stats().cut_anomalies);
                    self.anomalies = self.anomalies.max(anomalies);
                    return;
                }
            }
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
        for _ in 0..copies {
            let lat = self.rng.gen_range(p.latency.0..=p.latency.1);
            self.seq += 1;
            self.net.push(InFlight {
                at: std::cmp::Reverse((self.now + lat, self.seq)),
                from,
                to,
                frame: frame.clone(),
            });
        }
    }

    fn on_event(&mut self, idx: usize, ev: Event) {
        let now = self.now;
        match ev {
            Event::Joined => {
                let wanted: Vec<GroupName> = self.nodes[idx].wanted.iter().cloned().collect();
                let e = self.nodes[idx].engine.as_mut().expect("live");
                for g in wanted {
                    let _ = e.join(now, g);
                }
            }
            Event::View { group, view } => {
                let members = view.members.iter().map(|m| m.to_string()).collect();
                self.record(idx, TraceEvent::view_installed(group.as_str(), view.id.0, members));
                self.nodes[idx].state.entry(group).or_default();
            }
            Event::Deliver(d) => {
                let msg = d.id.to_string();
                let from = d.id.sender.to_string();
                self.record(
                    idx,
                    TraceEvent::delivered(d.group.as_str(), msg.clone(), from, d.order.as_str(), d.view.0),
                );
                self.nodes[idx].state.entry(d.group.clone()).or_default().insert(msg);
                if d.query {
                    let answer = self.rng.gen_bool(0.7).then(|| Bytes::from(self.pid(idx)));
                    let e = self.nodes[idx].engine.as_mut().expect("live");
                    e.reply(now, &d.id, answer);
                }
            }
            Event::StateRequest { group, view, joiners } => {
                let set = self.nodes[idx].state.get(&group).cloned().unwrap_or_default();
                let dg = digest(set.iter().map(|s| s.as_str()));
                let bytes = Bytes::from(set.into_iter().collect::<Vec<_>>().join("\n"));
                for j in joiners {
                    self.record(idx, TraceEvent::state_sent(group.as_str(), view.0, j.to_string(), dg.clone()));
                }
                let e = self.nodes[idx].engine.as_mut().expect("live");
                e.provide_state(now, &group, view, bytes);
            }
            Event::State { group, view, state } => {
                let text = String::from_utf8_lossy(&state).to_string();
                let set: BTreeSet<String> = text.split('\n').filter(|s| !s.is_empty()).map(String::from).collect();
                let dg = digest(set.iter().map(|s| s.as_str()));
                self.nodes[idx].state.insert(group.clone(), set);
                self.record(idx, TraceEvent::state_loaded(group.as_str(), view.0, dg));
            }
            Event::Flushed { group, view } => {
                let covers = self.nodes[idx].flushes.get_mut(&group).and_then(|q| q.pop_front()).flatten();
                self.record(idx, TraceEvent::flushed(group.as_str(), view.0, covers));
            }
            Event::Left { group } | Event::StateLost { group } => {
                self.nodes[idx].state.remove(&group);
                self.record(idx, TraceEvent::left(group.as_str()));
            }
            Event::Partitioned { .. } => {
                self.record(idx, TraceEvent::bare("partitioned"));
                self.nodes[idx].engine = None;
                let back = Duration::from_millis(self.rng.gen_range(50..300));
                self.nodes[idx].restart_at = Some(now + back);
            }
            Event::QueryDone(_) => {}
            _ => {}
        }
    }

    /// One application action at a random live process.
    fn act(&mut self, churn: bool) {
        let live = self.live();
        let Some(&idx) = live.choose(&mut self.rng) else { return };
        let now = self.now;
        let g = self.groups.choose(&mut self.rng).expect("groups").clone();
        if churn {
            let several = self.nodes[idx].wanted.len() > 1;
            let e = self.nodes[idx].engine.as_mut().expect("live");
            let member = e.my_groups().any(|x| *x == g);
            if member && several {
                if e.leave(now, g.clone()).is_ok() {
                    self.nodes[idx].wanted.remove(&g);
                }
            } else if !member && e.join(now, g.clone()).is_ok() {
                self.nodes[idx].wanted.insert(g);
            }
            self.pump(idx);
            return;
        }
        let roll: f64 = self.rng.gen();
        let e = self.nodes[idx].engine.as_ref().expect("live");
        let member = e.my_groups().any(|x| *x == g);
        // Do not send to a group this process is leaving (such sends may be dropped).
        if member && !self.nodes[idx].wanted.contains(&g) {
            return;
        }
        let view = e.view(&g).map(|v| v.id.0);
        if roll < 0.05 {
            if member {
                let e = self.nodes[idx].engine.as_mut().expect("live");
                if e.flush(now, &g).is_ok() {
                    // "" when nothing was sent before the call: the flush covers nothing.
                    let last = Some(self.nodes[idx].last_sent.get(&g).cloned().unwrap_or_default());
                    self.nodes[idx].flushes.entry(g.clone()).or_default().push_back(last);
                }
            }
        } else {
            let order = if roll < 0.07 { Order::Gbcast } else { ORDERS[self.rng.gen_range(0..5)] };
            let replies = match self.rng.gen_range(0..12) {
                0 => Replies::One,
                1 => Replies::All,
                2 => Replies::Count(2),
                _ => Replies::None,
            };
            let payload = Bytes::from(vec![0u8; self.rng.gen_range(8..200)]);
            let e = self.nodes[idx].engine.as_mut().expect("live");
            if let Ok(id) = e.query(now, g.clone(), order, payload, replies) {
                self.nodes[idx].last_sent.insert(g.clone(), id.to_string());
                let view = if member { view } else { None };
                self.record(idx, TraceEvent::sent(g.as_str(), id.to_string(), order.as_str(), view));
            }
        }
        self.pump(idx);
    }

    /// Whether the cluster keeps a working majority if the processes `out` are faulted: of
    /// the largest current view (it still lists members that crashed and are not yet
    /// excluded), more than half must be live and not in `out`. Faults are meant to be
    /// survivable; a total failure is the durability layer's case.
    fn majority_survives(&self, live: &[usize], out: &[usize]) -> bool {
        let view =
            live.iter().filter_map(|&i| self.nodes[i].engine.as_ref()).map(|e| e.members()).max_by_key(|m| m.len());
        let Some(view) = view else { return false };
        let up = view
            .iter()
            .filter(|m| {
                live.iter().any(|&i| !out.contains(&i) && self.nodes[i].engine.as_ref().is_some_and(|e| e.id() == *m))
            })
            .count();
        up > view.len() / 2
    }

    fn fault(&mut self, kind: u8) {
        let n = self.nodes.len();
        let live = self.live();
        match kind {
            0 => {
                // crash (not while a partition or a pause is on: one fault at a time)
                let paused = self.nodes.iter().any(|n| n.paused_until.is_some());
                if self.heal_at.is_some() || paused || !live.iter().any(|&t| self.majority_survives(&live, &[t])) {
                    return;
                }
                let target = if self.cfg.profile.crash_leader {
                    // The leader, preferably in the middle of a view change (it is then
                    // crashed as soon as it is there: see `crash_leader_in_round`).
                    let leader = live.iter().copied().find(|&i| {
                        let e = self.nodes[i].engine.as_ref().expect("live");
                        e.leader() == Some(e.id())
                    });
                    if leader.is_some_and(|l| self.nodes[l].engine.as_ref().is_some_and(|e| e.round_phase().is_none()))
                    {
                        self.leader_crash_armed = Some(self.rng.gen_range(0..3));
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
            1 => {
                // partition: a random minority (sometimes one-way) for a while
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
            _ => {
                // pause past the failure timeout, keeping a working majority
                if self.heal_at.is_some() || self.nodes.iter().any(|n| n.paused_until.is_some()) {
                    return;
                }
                if let Some(&t) = live.choose(&mut self.rng).filter(|&&t| self.majority_survives(&live, &[t])) {
                    let d = Duration::from_millis(self.rng.gen_range(250..600));
                    self.nodes[t].paused_until = Some(self.now + d);
                }
            }
        }
    }
}

/// Runs one simulated cluster with `cfg`, checks its trace, and returns the outcome.
pub fn run(cfg: SimConfig) -> Outcome {
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let groups: Vec<GroupName> = (0..cfg.groups).map(|g| GroupName::new(format!("g{g}"))).collect();
    let nodes: Vec<Node> = (0..cfg.nodes)
        .map(|i| {
            let mut wanted: BTreeSet<GroupName> = groups.iter().filter(|_| rng.gen_bool(0.6)).cloned().collect();
            // Everyone starts in the first group, so it spans the whole cluster, and the
            // first process starts in every group.
            wanted.insert(groups[0].clone());
            if i == 0 {
                wanted.extend(groups.iter().cloned());
            }
            Node {
                name: format!("n{}", i + 1),
                incarnation: 0,
                engine: None,
                counter: 0,
                state: BTreeMap::new(),
                wanted,
                paused_until: None,
                held: Vec::new(),
                restart_at: Some(Instant::from_epoch(Duration::from_millis(i as u64 * 3))),
                last_phase: None,
                last_sent: BTreeMap::new(),
                flushes: BTreeMap::new(),
            }
        })
        .collect();
    let mut sim = Sim {
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
        cfg: cfg.clone(),
    };
    let faults_end = Instant::from_epoch(cfg.fault_phase);
    let traffic_end = faults_end + cfg.calm_traffic;
    let end = traffic_end + cfg.settle;
    let p = cfg.profile.clone();
    let mut next_action = Instant::from_epoch(Duration::from_millis(50));
    let mut next_fault: [Option<Instant>; 4] = [
        p.crash_every.map(|d| Instant::ZERO + Duration::from_millis(300) + exp(&mut sim.rng, d)),
        p.partition_every.map(|d| Instant::ZERO + Duration::from_millis(300) + exp(&mut sim.rng, d)),
        p.pause_every.map(|d| Instant::ZERO + Duration::from_millis(300) + exp(&mut sim.rng, d)),
        p.churn_every.map(|d| Instant::ZERO + Duration::from_millis(300) + exp(&mut sim.rng, d)),
    ];
    let action_gap = cfg.action_every / cfg.nodes.max(1) as u32;
    let mut steps = 0u64;
    loop {
        steps += 1;
        // The next thing to happen.
        let mut t = end;
        if let Some(f) = sim.net.peek() {
            t = t.min(f.at.0 .0);
        }
        for n in &sim.nodes {
            if let Some(r) = n.restart_at {
                t = t.min(r);
            }
            if let Some(u) = n.paused_until {
                t = t.min(u);
            } else if let Some(e) = &n.engine {
                if let Some(x) = e.poll_timeout() {
                    t = t.min(x);
                }
            }
        }
        if let Some(h) = sim.heal_at {
            t = t.min(h);
        }
        if next_action < traffic_end {
            t = t.min(next_action);
        }
        for f in next_fault.iter().flatten() {
            if *f < faults_end {
                t = t.min(*f);
            }
        }
        if t >= end {
            break;
        }
        sim.now = t.max(sim.now);
        let now = sim.now;
        // Faults end: heal everything, wake everyone.
        if sim.heal_at.is_some_and(|h| h <= now) || (now >= faults_end && sim.heal_at.is_some()) {
            sim.blocked.clear();
            sim.heal_at = None;
        }
        for i in 0..sim.nodes.len() {
            if sim.nodes[i].restart_at.is_some_and(|r| r <= now) {
                sim.start(i);
            }
            if sim.nodes[i].paused_until.is_some_and(|u| u <= now || now >= faults_end) {
                sim.nodes[i].paused_until = None;
                let held = std::mem::take(&mut sim.nodes[i].held);
                for f in held {
                    if let Some(e) = sim.nodes[i].engine.as_mut() {
                        let _ = e.handle_packet(now, &f);
                    }
                }
                if let Some(e) = sim.nodes[i].engine.as_mut() {
                    e.handle_timeout(now);
                }
                sim.pump(i);
            }
        }
        while sim.net.peek().is_some_and(|f| f.at.0 .0 <= now) {
            let f = sim.net.pop().expect("peeked");
            sim.packets += 1;
            let n = &mut sim.nodes[f.to];
            if n.paused_until.is_some() {
                n.held.push(f.frame);
                continue;
            }
            if let Some(e) = n.engine.as_mut() {
                let _ = e.handle_packet(now, &f.frame);
                sim.pump(f.to);
            }
        }
        for i in 0..sim.nodes.len() {
            if sim.nodes[i].paused_until.is_some() {
                continue;
            }
            let due = sim.nodes[i].engine.as_ref().and_then(|e| e.poll_timeout()).is_some_and(|x| x <= now);
            if due {
                sim.nodes[i].engine.as_mut().expect("live").handle_timeout(now);
                sim.pump(i);
            }
        }
        if now < faults_end {
            sim.crash_leader_in_round();
        }
        if next_action <= now && now < traffic_end {
            sim.act(false);
            next_action = now + exp(&mut sim.rng, action_gap);
        }
        for k in 0..4 {
            if let (Some(f), Some(mean)) =
                (next_fault[k], [p.crash_every, p.partition_every, p.pause_every, p.churn_every][k])
            {
                if f <= now && now < faults_end {
                    if k == 3 {
                        sim.act(true);
                    } else {
                        sim.fault(k as u8);
                    }
                    next_fault[k] = Some(now + exp(&mut sim.rng, mean));
                }
            }
        }
        if steps > 20_000_000 {
            break;
        }
    }
    if std::env::var_os("SYNCHRONY_SIM_DEBUG").is_some() {
        for n in &sim.nodes {
            if let Some(e) = &n.engine {
                eprintln!(
                    "{} {:?} leader {:?} round {:?} members {:?}",
                    e.id(),
                    e.status(),
                    e.leader(),
                    e.round_phase(),
                    e.members()
                );
                eprintln!("{} {}", e.id(), e.debug_membership());
                for g in &sim.groups {
                    if let Some(d) = e.debug_group(g) {
                        eprintln!("{} {g}: {:?} {d}\n", e.id(), e.status());
                    }
                }
            }
        }
    }
    // Every process still running at the end is "alive"; crashed ones were recorded.
    let report = synchrony_check::check(&sim.trace, &Options { quiescent: true, crash_bound_us: None });
    let survivors = sim.live().len();
    Outcome { trace: sim.trace, report, steps, packets: sim.packets, anomalies: sim.anomalies, survivors }
}
