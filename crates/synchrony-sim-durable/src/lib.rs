//! # synchrony-sim-durable
//!
//! The simulator's `total-failure` profile: a logged replicated ledger on three of the
//! cluster's processes, whose group fails whole (every member crashes, at once or one by
//! one) again and again while the rest of the cluster goes on.
//!
//! Each ledger process keeps a simulated disk that survives its crashes: the checkpoint, the
//! update log and the last view it installed, written by the same logging observer the
//! runtime uses ([`synchrony_tools::log_observer`]). A restarted process rejoins the ledger
//! if it runs (`join_running`: never founding it again by mistake), and otherwise goes
//! through the recovery manager's decision ([`synchrony_tools::RecoveryCore`], Skeen's rule)
//! in a recovery group: the best log restarts the group, the others join it.
//!
//! Updates are multicast safely; one is acknowledged as durable when its sender applies
//! (and logs) it. The durability check: at the end every ledger process is a member again,
//! all hold the same ledger, and it holds every acknowledged update.

use bytes::Bytes;
use rand::Rng;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use synchrony_engine::{Event, GroupName, GroupView, MsgId, Order};
use synchrony_sim::{run_app, App, Ctx, Outcome, SimConfig};
use synchrony_tools::{
    log_observer, Core, Effects, LogContents, MapUpdate, Observer, RecoveryCore, RecoveryDecision, RecoveryMsg,
    RecoveryReport, Replica, ReplicatedOutput, UpdateLog,
};

/// The ledger's content: update name to its sender's counter.
type Book = BTreeMap<String, u64>;

/// The slots that keep the ledger (a minority of the cluster, so that the rest goes on).
const LEDGER_SLOTS: [usize; 3] = [1, 2, 3];

/// Updates between checkpoints: small, so that checkpoints and logs both matter.
const CHECKPOINT_EVERY: u64 = 16;

fn ledger() -> GroupName {
    GroupName::new("ledger")
}

fn recovery() -> GroupName {
    GroupName::new("ledger.recovery")
}

/// How restarting processes choose the log the ledger comes back from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rule {
    /// The recovery manager's rule: wait for every member of the best log's last view.
    Skeen,
    /// A deliberately broken rule, to show the durability check catches it: decide at once
    /// among the reports received.
    NoWait,
}

/// Runs one seed of the `total-failure` profile (at least 7 processes, 2 s of traffic
/// after the faults).
pub fn run(cfg: SimConfig) -> Outcome {
    run_with(cfg, Rule::Skeen)
}

/// [`run`] with the given recovery rule.
pub fn run_with(cfg: SimConfig, rule: Rule) -> Outcome {
    // Recovery is driven by the app's actions: they go on long enough after the last
    // crash for the last restarted process to come back.
    let calm_traffic = cfg.calm_traffic.max(std::time::Duration::from_secs(2));
    let cfg = SimConfig { nodes: cfg.nodes.max(7), calm_traffic, ..cfg };
    let mut app = Ledger::new(cfg.nodes, rule);
    run_app(cfg, &mut app)
}

/// What a process's stable storage holds.
#[derive(Default)]
struct Disk {
    checkpoint: Option<(u64, Vec<u8>)>,
    log: Vec<(u64, Vec<u8>)>,
    last_view: Option<GroupView>,
}

/// A process's disk as the logging observer writes it (each write is atomic, as a redb
/// transaction is).
#[derive(Clone, Default)]
struct DiskLog(Arc<Mutex<Disk>>);

impl DiskLog {
    fn disk(&self) -> std::sync::MutexGuard<'_, Disk> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl UpdateLog for DiskLog {
    fn append(&mut self, seq: u64, update: &[u8]) -> Result<(), String> {
        self.disk().log.push((seq, update.to_vec()));
        Ok(())
    }

    fn checkpoint(&mut self, seq: u64, state: &[u8]) -> Result<(), String> {
        let mut d = self.disk();
        d.checkpoint = Some((seq, state.to_vec()));
        // The checkpoint replaces the whole log, as the store's does.
        let _ = seq;
        d.log.clear();
        Ok(())
    }

    fn load(&self) -> Result<LogContents, String> {
        let d = self.disk();
        Ok((d.checkpoint.clone(), d.log.clone()))
    }

    fn record_view(&mut self, view: &GroupView) -> Result<(), String> {
        self.disk().last_view = Some(view.clone());
        Ok(())
    }

    fn last_view(&self) -> Result<Option<GroupView>, String> {
        Ok(self.disk().last_view.clone())
    }
}

/// How far a ledger process's current incarnation is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Just started: look whether the ledger runs.
    Start,
    /// Asked to join the running ledger.
    Rejoining,
    /// In the recovery group (`reported`: its report went out).
    Recovering { reported: bool },
    /// Restarting the ledger from its own log.
    Restarting,
    /// Joining the ledger another restarted.
    Following,
    /// A member of the ledger.
    Member,
}

struct Slot {
    phase: Phase,
    replica: Option<Replica<Book>>,
    observer: Option<Observer<Replica<Book>>>,
    /// A joiner's first view, held from the logging observer until its state is loaded
    /// (as the runtime's tool host does).
    held: Vec<ReplicatedOutput>,
    recovery: RecoveryCore,
}

impl Slot {
    fn fresh() -> Self {
        Self { phase: Phase::Start, replica: None, observer: None, held: Vec::new(), recovery: RecoveryCore::default() }
    }
}

/// The total-failure app.
struct Ledger {
    disks: Vec<DiskLog>,
    slots: Vec<Slot>,
    sent: BTreeMap<MsgId, String>,
    acked: BTreeSet<String>,
    counter: u64,
    restarts: u64,
    violations: Vec<String>,
    rule: Rule,
}

impl Ledger {
    fn new(nodes: usize, rule: Rule) -> Self {
        Self {
            disks: (0..nodes).map(|_| DiskLog::default()).collect(),
            slots: (0..nodes).map(|_| Slot::fresh()).collect(),
            sent: BTreeMap::new(),
            acked: BTreeSet::new(),
            counter: 0,
            restarts: 0,
            violations: Vec::new(),
            rule,
        }
    }

    /// A replica from this slot's disk, with its logging observer.
    fn load(&mut self, slot: usize) {
        let log = self.disks[slot].clone();
        match Replica::<Book>::from_log(&log) {
            Ok(r) => {
                let last = r.applied();
                self.slots[slot].observer = Some(log_observer::<Book>(Box::new(log), CHECKPOINT_EVERY, last));
                self.slots[slot].replica = Some(r);
            }
            Err(e) => self.violations.push(format!("slot {slot}: its log does not load: {e}")),
        }
    }

    /// Feeds a core's outputs to the logging observer, and notes acknowledged updates.
    fn outputs(&mut self, ctx: &Ctx<'_>, outputs: Vec<ReplicatedOutput>) {
        let s = &mut self.slots[ctx.slot()];
        let (Some(r), Some(obs)) = (s.replica.as_ref(), s.observer.as_mut()) else { return };
        for o in std::mem::take(&mut s.held).iter().chain(&outputs) {
            obs(r, o);
            if let ReplicatedOutput::Applied { id, .. } = o {
                if id.sender == *ctx.me() {
                    if let Some(key) = self.sent.remove(id) {
                        self.acked.insert(key);
                    }
                }
            }
        }
    }

    fn running(ctx: &Ctx<'_>) -> bool {
        ctx.engine().known_groups().any(|(g, v)| *g == ledger() && !v.members.is_empty())
    }

    fn report(&self, ctx: &mut Ctx<'_>) {
        let slot = ctx.slot();
        let log = &self.disks[slot];
        let applied = Replica::<Book>::from_log(log).map(|r| r.applied()).unwrap_or(0);
        let view = log.disk().last_view.clone();
        let r = RecoveryReport::new(ctx.me().name.to_string(), applied, view.as_ref());
        let _ = ctx.send(&recovery(), Order::Total, RecoveryMsg::Report(r).encode());
    }
}

impl App for Ledger {
    fn groups(&self) -> Vec<GroupName> {
        vec![ledger(), recovery()]
    }

    fn initial_groups(
        &mut self,
        _slot: usize,
        _groups: &[GroupName],
        _rng: &mut rand_chacha::ChaCha8Rng,
    ) -> BTreeSet<GroupName> {
        BTreeSet::new()
    }

    fn rejoin_on_restart(&self, _group: &GroupName) -> bool {
        false
    }

    fn started(&mut self, slot: usize) {
        self.slots[slot] = Slot::fresh();
    }

    fn event(&mut self, ctx: &mut Ctx<'_>, event: &Event) {
        let slot = ctx.slot();
        let mut fx = Effects::default();
        match event {
            Event::View { group, view } if *group == ledger() => {
                if self.slots[slot].replica.is_none() {
                    // A joiner: its state comes by transfer; its log stays until then.
                    self.load(slot);
                }
                if let Some(r) = self.slots[slot].replica.as_mut() {
                    r.on_view(view, &mut fx);
                }
                let s = &mut self.slots[slot];
                let joining = matches!(s.phase, Phase::Rejoining | Phase::Following);
                if s.phase == Phase::Restarting {
                    self.restarts += 1;
                    let ready = RecoveryMsg::Ready { name: ctx.me().name.to_string() };
                    let _ = ctx.send(&recovery(), Order::Total, ready.encode());
                } else if s.phase != Phase::Member && ctx.in_group(&recovery()) {
                    ctx.leave(&recovery());
                }
                s.phase = Phase::Member;
                if joining {
                    s.held = fx.outputs;
                } else {
                    self.outputs(ctx, fx.outputs);
                }
            }
            Event::Deliver(d) if d.group == ledger() => {
                if let Some(r) = self.slots[slot].replica.as_mut() {
                    r.on_message(d, &mut fx);
                }
                self.outputs(ctx, fx.outputs);
            }
            Event::State { group, state, .. } if *group == ledger() => {
                let s = &mut self.slots[slot];
                let Some(r) = s.replica.as_mut() else { return };
                if let Err(e) = r.restore(state) {
                    self.violations.push(format!("{}: the ledger's state did not load: {e}", ctx.me()));
                    return;
                }
                // The held view now: the observer checkpoints the state, then records it.
                self.outputs(ctx, Vec::new());
            }
            Event::Deliver(d) if d.group == recovery() => {
                let mut fx = Effects::default();
                self.slots[slot].recovery.on_message(d, &mut fx);
            }
            Event::State { group, state, .. } if *group == recovery() => {
                if let Err(e) = self.slots[slot].recovery.restore(state) {
                    self.violations.push(format!("{}: the recovery state did not load: {e}", ctx.me()));
                }
            }
            Event::JoinRefused { group } if *group == ledger() => {
                // Nobody went on in the ledger: recover it.
                self.slots[slot].phase = Phase::Start;
                self.slots[slot].replica = None;
            }
            Event::Left { group } | Event::StateLost { group } if *group == ledger() => {
                self.slots[slot] = Slot::fresh();
            }
            _ => {}
        }
    }

    fn state(&mut self, ctx: &mut Ctx<'_>, group: &GroupName) -> Bytes {
        let s = &self.slots[ctx.slot()];
        if *group == ledger() {
            // The checkpoint and log tail on this process's disk, as a logged member sends.
            s.replica.as_ref().map(|r| r.transfer_from_log(&self.disks[ctx.slot()])).unwrap_or_default()
        } else {
            s.recovery.snapshot()
        }
    }

    fn act(&mut self, ctx: &mut Ctx<'_>) {
        let slot = ctx.slot();
        if !LEDGER_SLOTS.contains(&slot) {
            return;
        }
        let me = ctx.me().name.to_string();
        match self.slots[slot].phase {
            Phase::Start => {
                if Self::running(ctx) {
                    if ctx.join_running(&ledger()) {
                        self.slots[slot].phase = Phase::Rejoining;
                    }
                } else if ctx.in_group(&recovery()) || ctx.join(&recovery()) {
                    self.slots[slot].phase = Phase::Recovering { reported: false };
                }
            }
            Phase::Recovering { reported: false } => {
                if ctx.in_group(&recovery()) {
                    self.report(ctx);
                    self.slots[slot].phase = Phase::Recovering { reported: true };
                }
            }
            Phase::Recovering { reported: true } => {
                let decision = match self.rule {
                    Rule::Skeen => self.slots[slot].recovery.decide(&me),
                    Rule::NoWait => self.slots[slot].recovery.decide_without_missing(&me),
                };
                if Self::running(ctx) && self.slots[slot].recovery.ready().is_none() {
                    if ctx.join_running(&ledger()) {
                        self.slots[slot].phase = Phase::Rejoining;
                    }
                    return;
                }
                match decision {
                    RecoveryDecision::Restart => {
                        self.load(slot);
                        if ctx.join(&ledger()) {
                            self.slots[slot].phase = Phase::Restarting;
                        }
                    }
                    RecoveryDecision::Join { .. } => {
                        if ctx.join_running(&ledger()) {
                            self.slots[slot].phase = Phase::Following;
                        }
                    }
                    RecoveryDecision::Wait { .. } | RecoveryDecision::AwaitReady { .. } => {}
                }
            }
            Phase::Member => {
                // (A sender blocked on flow control sends nothing more until its send went.)
                if ctx.in_group(&ledger()) && !ctx.blocked(&ledger()) && ctx.rng().gen_bool(0.5) {
                    self.counter += 1;
                    let key = format!("{}/{}", ctx.me(), self.counter);
                    let (_, payload) = Replica::<Book>::update(&MapUpdate::Put(key.clone(), self.counter));
                    // (One that waits for room in the window is not followed: its id comes later.)
                    if let Ok(Some(id)) = ctx.send(&ledger(), Order::Safe, payload) {
                        self.sent.insert(id, key);
                    }
                }
            }
            Phase::Rejoining | Phase::Restarting | Phase::Following => {}
        }
    }

    fn finish(&mut self, live: &[usize]) -> Vec<String> {
        let mut v = std::mem::take(&mut self.violations);
        if std::env::var_os("SYNCHRONY_SIM_STATS").is_some() {
            // Restarts from a log: the first founding, then one per total failure.
            eprintln!("ledger: {} restarts from a log, {} acknowledged updates", self.restarts, self.acked.len());
        }
        if self.acked.len() < 20 {
            v.push(format!("only {} acknowledged updates: the run checks too little", self.acked.len()));
        }
        let mut books: Vec<(usize, &Book)> = Vec::new();
        for &slot in &LEDGER_SLOTS {
            let s = &self.slots[slot];
            match (&s.replica, live.contains(&slot) && s.phase == Phase::Member) {
                (Some(r), true) => books.push((slot, r.value())),
                _ => v.push(format!("slot {slot} is not a ledger member at the end ({:?})", s.phase)),
            }
        }
        if let Some((first, book)) = books.first() {
            for (slot, other) in &books[1..] {
                if other != book {
                    v.push(format!("the ledgers of slots {first} and {slot} differ"));
                }
            }
            let lost: Vec<&String> = self.acked.iter().filter(|k| !book.contains_key(*k)).collect();
            if !lost.is_empty() {
                v.push(format!(
                    "{} of {} acknowledged updates lost, e.g. {:?}",
                    lost.len(),
                    self.acked.len(),
                    &lost[..lost.len().min(3)]
                ));
            }
        }
        v
    }
}
