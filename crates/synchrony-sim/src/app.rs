//! The application side of a simulated process: what the simulator hosts on each engine.
//!
//! The simulator owns the engines, the network, the faults and the trace; an [`App`] owns
//! what the processes do with their groups. [`crate::Traffic`] is the workload that drives
//! every order class for the guarantee checker; the tools of `synchrony-tools` bring their
//! own apps, so that their invariants are checked under the same faults.

use bytes::Bytes;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use synchrony_engine::{
    Engine, Event, FlushError, GroupName, Instant, MsgId, Order, ProcessId, Replies, SendError, ViewId,
};
use synchrony_trace::{Recorder, TraceEvent};

/// What the processes of a simulated run do. One value serves every process: it keeps
/// per-process state indexed by the process's slot (`Ctx::slot`).
pub trait App {
    /// The groups the run uses.
    fn groups(&self) -> Vec<GroupName>;

    /// The groups slot `slot` wants to be in from the start. By default a random subset
    /// (each with probability 0.6), always the first group, and every group for slot 0, so
    /// that the first group spans the cluster.
    fn initial_groups(&mut self, slot: usize, groups: &[GroupName], rng: &mut ChaCha8Rng) -> BTreeSet<GroupName> {
        let mut wanted: BTreeSet<GroupName> = groups.iter().filter(|_| rng.gen_bool(0.6)).cloned().collect();
        wanted.insert(groups[0].clone());
        if slot == 0 {
            wanted.extend(groups.iter().cloned());
        }
        wanted
    }

    /// Whether a new incarnation joins `group` again by itself when a former one was in it
    /// (by default yes). An app that decides how a group comes back after a failure (as the
    /// recovery manager does) says no, and joins it itself.
    fn rejoin_on_restart(&self, group: &GroupName) -> bool {
        let _ = group;
        true
    }

    /// A new incarnation of the process in `slot` started: whatever the app kept for the
    /// previous one is gone (it crashed or stopped).
    fn started(&mut self, slot: usize) {
        let _ = slot;
    }

    /// An event of the engine at `ctx.slot()`. The simulator has already written it to the
    /// trace. `StateRequest` never comes here (see [`App::state`]); `State` carries what
    /// [`App::state`] returned at the provider.
    fn event(&mut self, ctx: &mut Ctx<'_>, event: &Event);

    /// The state of `group` at `ctx.slot()`, for a joiner.
    fn state(&mut self, ctx: &mut Ctx<'_>, group: &GroupName) -> Bytes;

    /// Time for an application action at `ctx.slot()`, a live cluster member.
    fn act(&mut self, ctx: &mut Ctx<'_>);

    /// After the run: the app's invariants, checked over the processes that were live
    /// members at the end (`live`, slots). Returns one line per violation.
    fn finish(&mut self, live: &[usize]) -> Vec<String>;
}

/// A simulated process, as the simulator keeps it.
pub(crate) struct Proc {
    pub(crate) name: String,
    pub(crate) incarnation: u64,
    pub(crate) engine: Option<Engine>,
    /// Numbers this incarnation's trace events.
    pub(crate) recorder: Recorder,
    /// Per group: the delivered message ids (what the checker recomputes a joiner's state
    /// from, G11).
    pub(crate) delivered: BTreeMap<GroupName, BTreeSet<String>>,
    pub(crate) wanted: BTreeSet<GroupName>,
    pub(crate) paused_until: Option<Instant>,
    /// The pause is deaf (see [`crate::Profile::deaf`]): timers run meanwhile.
    pub(crate) deaf: bool,
    pub(crate) held: Vec<Bytes>,
    pub(crate) restart_at: Option<Instant>,
    /// A crash scheduled (a group's members failing one by one), and when it restarts.
    pub(crate) crash_at: Option<(Instant, std::time::Duration)>,
    /// With [`crate::Profile::cork`]: the engine is corked and its frames go out then.
    pub(crate) uncork_at: Option<Instant>,
    /// The membership round phase it was in at the last step (to catch a fresh commit).
    pub(crate) last_phase: Option<synchrony_engine::RoundPhase>,
    /// The last message sent to each group, and what each pending flush covers.
    pub(crate) last_sent: BTreeMap<GroupName, String>,
    pub(crate) flushes: BTreeMap<GroupName, VecDeque<Option<String>>>,
    /// With [`crate::Profile::cost`]: busy until then; frames that came meanwhile wait in
    /// `inbox`; `work` is what the input being handled has cost so far.
    pub(crate) busy_until: Instant,
    pub(crate) inbox: VecDeque<Bytes>,
    pub(crate) work: std::time::Duration,
    /// With [`crate::Profile::peer_list`]: the cluster this incarnation is a member of (the
    /// simulator numbers each cluster that forms).
    pub(crate) cluster: Option<u64>,
    /// With [`crate::Profile::streamed_state`]: states are written and read in parts; the
    /// parts of each state this process reads so far, and the states it writes.
    pub(crate) streams: bool,
    pub(crate) incoming: BTreeMap<(GroupName, ViewId), Vec<u8>>,
    pub(crate) writing: Vec<Writing>,
}

/// A state a provider writes in parts, as fast as its joiners fetch it.
pub(crate) struct Writing {
    pub(crate) group: GroupName,
    pub(crate) view: ViewId,
    /// What is left to write.
    pub(crate) rest: Bytes,
    pub(crate) next_at: Instant,
}

impl Writing {
    /// Bytes per part (not a multiple of the `large` profile's chunk: parts straddle chunks).
    pub(crate) const PART: usize = 100;
    /// How long between parts.
    pub(crate) const GAP: std::time::Duration = std::time::Duration::from_millis(1);
}

impl Proc {
    pub(crate) fn record(&mut self, now: Instant, trace: &mut Vec<TraceEvent>, e: TraceEvent) {
        trace.push(self.recorder.stamp(e, now.since_epoch().as_micros() as u64));
    }
}

/// One process's handle on the simulation while the app handles an event or acts: its
/// engine, the clock, the run's random numbers, and commands that are written to the trace
/// the way the runtime writes them.
pub struct Ctx<'a> {
    pub(crate) slot: usize,
    pub(crate) proc: &'a mut Proc,
    pub(crate) now: Instant,
    pub(crate) rng: &'a mut ChaCha8Rng,
    pub(crate) trace: &'a mut Vec<TraceEvent>,
    pub(crate) batches: bool,
}

impl Ctx<'_> {
    /// The process's slot (0 .. nodes), the same across its incarnations.
    pub fn slot(&self) -> usize {
        self.slot
    }

    /// The current incarnation's id.
    pub fn me(&self) -> &ProcessId {
        self.engine().id()
    }

    /// The virtual time.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// The run's random numbers (everything derives from the seed).
    pub fn rng(&mut self) -> &mut ChaCha8Rng {
        self.rng
    }

    /// The engine, to read views and status.
    pub fn engine(&self) -> &Engine {
        self.proc.engine.as_ref().expect("an app runs only on a live process")
    }

    fn engine_mut(&mut self) -> &mut Engine {
        self.proc.engine.as_mut().expect("an app runs only on a live process")
    }

    /// Whether this process is a member of `group` and not leaving it.
    pub fn in_group(&self, group: &GroupName) -> bool {
        self.proc.wanted.contains(group) && self.engine().my_groups().any(|g| g == group)
    }

    /// Multicasts (written to the trace as `sent`).
    pub fn send(&mut self, group: &GroupName, order: Order, payload: Bytes) -> Result<MsgId, SendError> {
        self.query(group, order, payload, Replies::None)
    }

    /// Whether the profile sends in batches as the runtime does (see [`Ctx::send_batch`]).
    pub fn batches(&self) -> bool {
        self.batches
    }

    /// Multicasts several payloads in one engine call (`Engine::send_batch`, as the runtime
    /// sends what its application queued); each accepted one is written to the trace.
    pub fn send_batch(
        &mut self,
        group: &GroupName,
        order: Order,
        payloads: Vec<Bytes>,
    ) -> Vec<Result<MsgId, SendError>> {
        let (now, view) = (self.now, self.send_view(group));
        let sent = self.engine_mut().send_batch(now, group, order, payloads);
        for id in sent.iter().flatten() {
            self.record_sent(group, order, id, view);
        }
        sent
    }

    /// The view a send is made in (the trace's `view` of a `send`): none for a non-member.
    fn send_view(&self, group: &GroupName) -> Option<u64> {
        let member = self.engine().my_groups().any(|g| g == group);
        self.engine().view(group).map(|v| v.id.0).filter(|_| member)
    }

    /// Writes an accepted send to the trace.
    fn record_sent(&mut self, group: &GroupName, order: Order, id: &MsgId, view: Option<u64>) {
        self.proc.last_sent.insert(group.clone(), id.to_string());
        let e = TraceEvent::sent(group.as_str(), id.to_string(), order, view);
        self.proc.record(self.now, self.trace, e);
    }

    /// A group RPC; its outcome comes back as `Event::QueryDone`.
    pub fn query(
        &mut self,
        group: &GroupName,
        order: Order,
        payload: Bytes,
        replies: Replies,
    ) -> Result<MsgId, SendError> {
        let (now, view) = (self.now, self.send_view(group));
        let id = self.engine_mut().query(now, group.clone(), order, payload, replies)?;
        self.record_sent(group, order, &id, view);
        Ok(id)
    }

    /// Answers a delivered query (`None`: a null reply).
    pub fn reply(&mut self, query: &MsgId, payload: Option<Bytes>) {
        let now = self.now;
        self.engine_mut().reply(now, query, payload);
    }

    /// Asks for `Event::Flushed` (its `covers` in the trace is the last message sent).
    pub fn flush(&mut self, group: &GroupName) -> Result<(), FlushError> {
        let now = self.now;
        self.engine_mut().flush(now, group)?;
        // "" when nothing was sent before the call: the flush covers nothing.
        let last = Some(self.proc.last_sent.get(group).cloned().unwrap_or_default());
        self.proc.flushes.entry(group.clone()).or_default().push_back(last);
        Ok(())
    }

    /// Joins a group (and wants to stay in it across incarnations).
    pub fn join(&mut self, group: &GroupName) -> bool {
        let now = self.now;
        let streams = self.proc.streams;
        let e = self.engine_mut();
        if streams {
            e.stream_state(group.clone());
        }
        let ok = e.join(now, group.clone()).is_ok();
        if ok {
            self.proc.wanted.insert(group.clone());
        }
        ok
    }

    /// Joins a group only if a member goes on in it (else `JoinRefused` comes).
    pub fn join_running(&mut self, group: &GroupName) -> bool {
        let now = self.now;
        let streams = self.proc.streams;
        let e = self.engine_mut();
        if streams {
            e.stream_state(group.clone());
        }
        let ok = e.join_running(now, group.clone()).is_ok();
        if ok {
            self.proc.wanted.insert(group.clone());
        }
        ok
    }

    /// Leaves a group.
    pub fn leave(&mut self, group: &GroupName) -> bool {
        let now = self.now;
        let ok = self.engine_mut().leave(now, group.clone()).is_ok();
        if ok {
            self.proc.wanted.remove(group);
        }
        ok
    }

    /// Hands state to joiners, wrapped with the delivered ids the checker needs (G11).
    pub(crate) fn provide_state(&mut self, group: &GroupName, view: ViewId, joiners: &[ProcessId], app: Bytes) {
        let ids = self.proc.delivered.get(group).cloned().unwrap_or_default();
        let dg = synchrony_trace::digest(ids.iter().map(|s| s.as_str()));
        let ids = ids.into_iter().collect::<Vec<_>>().join("\n");
        let mut state = Vec::with_capacity(4 + ids.len() + app.len());
        state.extend_from_slice(&(ids.len() as u32).to_be_bytes());
        state.extend_from_slice(ids.as_bytes());
        state.extend_from_slice(&app);
        for j in joiners {
            let e = TraceEvent::state_sent(group.as_str(), view.0, j.to_string(), dg.clone()).of_delivered_set();
            self.proc.record(self.now, self.trace, e);
        }
        let now = self.now;
        let state = Bytes::from(state);
        if !self.proc.streams {
            self.engine_mut().provide_state(now, group, view, state);
            return;
        }
        // The first part now (the group goes on from here), the rest as the joiners fetch.
        let first = state.slice(..Writing::PART.min(state.len()));
        let rest = state.slice(first.len()..);
        let e = self.engine_mut();
        e.begin_state(now, group, view);
        e.provide_state_part(now, group, view, first, rest.is_empty());
        if !rest.is_empty() {
            self.proc.writing.push(Writing { group: group.clone(), view, rest, next_at: now + Writing::GAP });
        }
    }

    /// Unwraps what [`Ctx::provide_state`] made: records the delivered ids and returns the
    /// app's part.
    pub(crate) fn load_state(&mut self, group: &GroupName, view: ViewId, state: &Bytes) -> Bytes {
        let n = state.get(..4).map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize);
        let ids = state.get(4..4 + n).map(String::from_utf8_lossy).unwrap_or_default();
        let set: BTreeSet<String> = ids.split('\n').filter(|s| !s.is_empty()).map(String::from).collect();
        let dg = synchrony_trace::digest(set.iter().map(|s| s.as_str()));
        self.proc.delivered.insert(group.clone(), set);
        self.proc.record(self.now, self.trace, TraceEvent::state_loaded(group.as_str(), view.0, dg).of_delivered_set());
        state.slice((4 + n).min(state.len())..)
    }
}
