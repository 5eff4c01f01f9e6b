//! The application side of a simulated process: what the simulator hosts on each engine.
//!
//! The simulator owns the processes (each a [`synchrony_host::Host`] around its engine, as
//! the runtime hosts one), the network, the faults and the trace; an [`App`] owns what the
//! processes do with their groups, through the host's commands as the public API gives
//! them. [`crate::Traffic`] is the workload that drives
//! every order class for the guarantee checker; the tools of `synchrony-tools` bring their
//! own apps, so that their invariants are checked under the same faults.

use bytes::Bytes;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use synchrony_engine::{
    Engine, Event, FlushError, GroupName, Instant, MembershipError, MsgId, Order, ProcessId, Replies, SendError, ViewId,
};
use synchrony_host::{Command, ConsumerId, GroupEvent, Host, JoinInto, Reply, Verifiers, WaiterId};
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
    /// recovery manager does) says no, and joins it itself; such an app's processes also
    /// start afresh after being excluded (their hosts do not rejoin as `Config::rejoin`
    /// does, see [`App::rejoins`]).
    fn rejoin_on_restart(&self, group: &GroupName) -> bool {
        let _ = group;
        true
    }

    /// Whether a process that was excluded starts again as a new incarnation of the same
    /// host, which joins the groups it was in again (`Config::rejoin`); by default yes,
    /// unless [`App::rejoin_on_restart`] says no for a group.
    fn rejoins(&self) -> bool {
        self.groups().iter().all(|g| self.rejoin_on_restart(g))
    }

    /// A send that had to wait for room in its group's window went out as `id` (`query`:
    /// it asked for replies, which come as `Event::QueryDone`).
    fn sent(&mut self, ctx: &mut Ctx<'_>, group: &GroupName, id: &MsgId, query: bool) {
        let _ = (ctx, group, id, query);
    }

    /// A new incarnation of the process in `slot` started: whatever the app kept for the
    /// previous one is gone (it crashed or stopped).
    fn started(&mut self, slot: usize) {
        let _ = slot;
    }

    /// An event at `ctx.slot()`, as its host handed it over (a group's events through its
    /// consumer, in the engine's terms: `View`, `Deliver`, `State`, `Left`, `JoinRefused`;
    /// answers as `Flushed` and `QueryDone`; node events as `SendLost`). It is in the trace
    /// already. `StateRequest` never comes here (see [`App::state`]); `State` carries what
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
    /// Its host (and the engine in it); none while the process is down (crashed, or stopped
    /// for good until it restarts afresh).
    pub(crate) host: Option<Host>,
    /// The host was made for this incarnation (the process started afresh): the app joins
    /// its groups once it is a member. (A host that rejoins does so itself.)
    pub(crate) fresh: bool,
    /// Numbers this incarnation's trace events (the host's and the simulator's own).
    pub(crate) recorder: Recorder,
    /// Per group: the delivered message ids (what the checker recomputes a joiner's state
    /// from, G11).
    pub(crate) delivered: BTreeMap<GroupName, BTreeSet<String>>,
    /// The groups the app wants this process in (it joins them when it starts afresh).
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
    pub(crate) incoming: BTreeMap<GroupName, Vec<u8>>,
    pub(crate) writing: Vec<Writing>,
    /// Ids of waiters and consumers (never reused in a run of the process).
    pub(crate) next_id: u64,
    /// What each waiter whose answer did not come at once was.
    pub(crate) pending: BTreeMap<WaiterId, Pending>,
    /// With [`crate::Profile::slow_readers`]: batches each consumer has not read yet.
    pub(crate) unread: BTreeMap<ConsumerId, VecDeque<(GroupName, Vec<GroupEvent>)>>,
    /// When it next reads what its consumers hold.
    pub(crate) read_at: Option<Instant>,
}

/// A command whose answer comes later.
#[derive(Clone, Debug)]
pub(crate) enum Pending {
    /// A send that waited for room in its window (and where its query's outcome goes).
    Send { group: GroupName, outcome: Option<WaiterId> },
    /// A batch of sends that waited.
    SendBatch,
    /// A query's outcome, when it comes (the query, once it went).
    Query(Option<MsgId>),
    /// A join that waited for a past membership's events to go.
    Join(GroupName),
    /// A flush.
    Flush(GroupName),
    /// A part of a state written in parts, waiting for the joiners to fetch.
    Write { group: GroupName, view: ViewId },
}

/// A state a provider writes in parts, as fast as its joiners fetch it.
pub(crate) struct Writing {
    pub(crate) group: GroupName,
    pub(crate) view: ViewId,
    /// What is left to write.
    pub(crate) rest: Bytes,
    pub(crate) next_at: Instant,
    /// The last part's write is waiting for the joiners (see `Pending::Write`).
    pub(crate) waiting: bool,
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

    /// The engine, if the process runs one.
    pub(crate) fn engine(&self) -> Option<&Engine> {
        self.host.as_ref().and_then(|h| h.engine())
    }

    /// The engine, for inputs of the network and the clock.
    pub(crate) fn engine_mut(&mut self) -> Option<&mut Engine> {
        self.host.as_mut().and_then(|h| h.engine_mut())
    }

    /// A fresh waiter or consumer id.
    pub(crate) fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// Moves the host's trace events to the run's trace, numbered with the process's own.
    pub(crate) fn take_trace(&mut self, now: Instant, trace: &mut Vec<TraceEvent>) {
        while let Some(e) = self.host.as_mut().and_then(|h| h.poll_trace()) {
            self.record(now, trace, e);
        }
    }

    /// Gives the host a command; returns its answer if it came at once (else `pending`
    /// remembers what it was, for when it comes).
    pub(crate) fn command(&mut self, now: Instant, c: Command, pending: Option<Pending>) -> Option<Reply> {
        let w = WaiterId(self.id());
        let host = self.host.as_mut().expect("an app runs only on a live process");
        host.handle_command(now, Some(w), c);
        let reply = host.take_reply(w);
        if reply.is_none() {
            if let Some(p) = pending {
                self.pending.insert(w, p);
            }
        }
        reply
    }

    /// Gives the host a command nobody waits on.
    pub(crate) fn tell(&mut self, now: Instant, c: Command) {
        if let Some(h) = self.host.as_mut() {
            h.handle_command(now, None, c);
        }
    }
}

/// One process's handle on the simulation while the app handles an event or acts: its
/// host, the clock, the run's random numbers; commands go through the host as the public
/// API's do (the host writes their trace events as the runtime's does).
pub struct Ctx<'a> {
    pub(crate) slot: usize,
    pub(crate) proc: &'a mut Proc,
    pub(crate) now: Instant,
    pub(crate) rng: &'a mut ChaCha8Rng,
    pub(crate) trace: &'a mut Vec<TraceEvent>,
    pub(crate) batches: bool,
}

impl Drop for Ctx<'_> {
    fn drop(&mut self) {
        // What the app's commands wrote goes in order with the rest of the process's trace.
        self.proc.take_trace(self.now, self.trace);
    }
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
        self.proc.engine().expect("an app runs only on a live process")
    }

    fn host(&self) -> &Host {
        self.proc.host.as_ref().expect("an app runs only on a live process")
    }

    /// Whether this process is a member of `group` and not leaving it.
    pub fn in_group(&self, group: &GroupName) -> bool {
        self.proc.wanted.contains(group) && self.engine().my_groups().any(|g| g == group)
    }

    /// Whether sends to `group` wait for room in its window: a sender that waits for its
    /// send's answer, as one of the public API does, is blocked and sends nothing more.
    pub fn blocked(&self, group: &GroupName) -> bool {
        self.host().is_waiting(group)
    }

    /// Multicasts (the host writes it to the trace as `sent`). `Ok(None)`: it waits for room
    /// in the group's window; [`App::sent`] tells when it goes.
    pub fn send(&mut self, group: &GroupName, order: Order, payload: Bytes) -> Result<Option<MsgId>, SendError> {
        self.query(group, order, payload, Replies::None)
    }

    /// Whether the profile sends in batches as the runtime does (see [`Ctx::send_batch`]).
    pub fn batches(&self) -> bool {
        self.batches
    }

    /// Multicasts several payloads in one host command (as the runtime sends what its
    /// application queued); empty if they wait for room in the window.
    pub fn send_batch(
        &mut self,
        group: &GroupName,
        order: Order,
        payloads: Vec<Bytes>,
    ) -> Vec<Result<MsgId, SendError>> {
        let c = Command::SendBatch { group: group.clone(), order, payloads };
        match self.proc.command(self.now, c, Some(Pending::SendBatch)) {
            Some(Reply::SentBatch(sent)) => sent,
            _ => Vec::new(),
        }
    }

    /// A group RPC; its outcome comes back as `Event::QueryDone`. `Ok(None)`: it waits for
    /// room in the group's window.
    pub fn query(
        &mut self,
        group: &GroupName,
        order: Order,
        payload: Bytes,
        replies: Replies,
    ) -> Result<Option<MsgId>, SendError> {
        let query = replies != Replies::None;
        let outcome = query.then(|| WaiterId(self.proc.id()));
        if let Some(o) = outcome {
            self.proc.pending.insert(o, Pending::Query(None));
        }
        let c = Command::Send { group: group.clone(), order, payload, replies, outcome };
        match self.proc.command(self.now, c, Some(Pending::Send { group: group.clone(), outcome })) {
            Some(Reply::Sent(r)) => {
                if let (Ok(id), Some(o)) = (&r, outcome) {
                    self.proc.pending.insert(o, Pending::Query(Some(id.clone())));
                }
                r.map(Some)
            }
            _ => Ok(None),
        }
    }

    /// Answers a delivered query (`None`: a null reply).
    pub fn reply(&mut self, query: &MsgId, payload: Option<Bytes>) {
        self.proc.tell(self.now, Command::Reply { id: query.clone(), payload });
    }

    /// Asks for `Event::Flushed` (the host's trace says what it covers).
    pub fn flush(&mut self, group: &GroupName) -> Result<(), FlushError> {
        let c = Command::Flush { group: group.clone() };
        match self.proc.command(self.now, c, Some(Pending::Flush(group.clone()))) {
            Some(Reply::Flushed(Err(e))) => Err(e),
            _ => Ok(()),
        }
    }

    /// Joins a group (and wants to stay in it across incarnations).
    pub fn join(&mut self, group: &GroupName) -> bool {
        self.join_with(group, false)
    }

    /// Joins a group only if a member goes on in it (else `JoinRefused` comes).
    pub fn join_running(&mut self, group: &GroupName) -> bool {
        self.join_with(group, true)
    }

    fn join_with(&mut self, group: &GroupName, only_if_running: bool) -> bool {
        let consumer = ConsumerId(self.proc.id());
        let verifiers = Verifiers { only_if_running, ..Verifiers::default() };
        let c = Command::Join { group: group.clone(), verifiers, stream: self.proc.streams, consumer };
        let ok = match self.proc.command(self.now, c, Some(Pending::Join(group.clone()))) {
            Some(Reply::Joined(r)) => r.is_ok(),
            _ => true, // it waits for the group's last membership's events to go
        };
        if ok {
            self.proc.wanted.insert(group.clone());
        }
        ok
    }

    /// Joins many groups in one command (one round), each with a consumer of its own;
    /// returns the groups joined (or waiting to).
    pub(crate) fn join_many(&mut self, groups: Vec<GroupName>) -> Vec<GroupName> {
        let consumers = groups.iter().map(|_| ConsumerId(self.proc.id())).collect();
        let c = Command::JoinMany { groups: groups.clone(), into: JoinInto::Each(consumers) };
        let joined = match self.proc.command(self.now, c, None) {
            Some(Reply::JoinedMany(r)) => {
                groups.into_iter().zip(r).filter(|(_, r)| r.is_ok()).map(|(g, _)| g).collect()
            }
            _ => groups,
        };
        self.proc.wanted.extend(joined.iter().cloned());
        joined
    }

    /// Leaves a group.
    pub fn leave(&mut self, group: &GroupName) -> bool {
        let c = Command::Leave { group: group.clone(), dropped: false };
        let ok = matches!(self.proc.command(self.now, c, None), Some(Reply::Left(Ok(()))));
        if ok {
            self.proc.wanted.remove(group);
        }
        ok
    }

    /// Hands state to joiners, wrapped with the delivered ids the checker needs (G11).
    pub(crate) fn provide_state(&mut self, group: &GroupName, view: ViewId, joiners: &[ProcessId], app: Bytes) {
        // (The host writes the `state_sent` events, with `state_digest`'s digest.)
        let _ = joiners;
        let ids = self.proc.delivered.get(group).cloned().unwrap_or_default();
        let ids = ids.into_iter().collect::<Vec<_>>().join("\n");
        let mut state = Vec::with_capacity(4 + ids.len() + app.len());
        state.extend_from_slice(&(ids.len() as u32).to_be_bytes());
        state.extend_from_slice(ids.as_bytes());
        state.extend_from_slice(&app);
        let now = self.now;
        let state = Bytes::from(state);
        if !self.proc.streams {
            self.proc.tell(now, Command::ProvideState { group: group.clone(), view, state });
            return;
        }
        // The first part now (the group goes on from here), the rest as the joiners fetch.
        self.proc.tell(now, Command::BeginState { group: group.clone(), view });
        let mut w = Writing { group: group.clone(), view, rest: state, next_at: now, waiting: false };
        if w.write_part(self.proc, now) {
            w.next_at = now + Writing::GAP;
            self.proc.writing.push(w);
        }
    }

    /// Unwraps what [`Ctx::provide_state`] made: keeps the delivered ids and returns the
    /// app's part. (The host wrote the `state` event when the engine gave the state.)
    pub(crate) fn load_state(&mut self, group: &GroupName, state: &Bytes) -> Bytes {
        let (n, set) = delivered_in(state);
        self.proc.delivered.insert(group.clone(), set.into_iter().map(String::from).collect());
        state.slice((4 + n).min(state.len())..)
    }
}

impl Writing {
    /// Writes the next part; returns whether more is to be written (the writing goes on:
    /// maybe once the joiners fetched what came before, `waiting`).
    pub(crate) fn write_part(&mut self, proc: &mut Proc, now: Instant) -> bool {
        let part = self.rest.split_to(Writing::PART.min(self.rest.len()));
        let last = self.rest.is_empty();
        let c = Command::WriteState { group: self.group.clone(), view: self.view, part, last };
        let pending = Pending::Write { group: self.group.clone(), view: self.view };
        match proc.command(now, c, Some(pending)) {
            Some(Reply::StateWritten(Ok(()))) => !last,
            Some(_) => false, // nobody needs it any more, or the process stopped
            None => {
                self.waiting = true;
                !last
            }
        }
    }
}

/// A join's answer that came late: refused joins are no longer wanted.
pub(crate) fn joined_late(proc: &mut Proc, group: &GroupName, r: &Result<(), MembershipError>) {
    if r.is_err() {
        proc.wanted.remove(group);
    }
}

/// The delivered ids a state made by [`Ctx::provide_state`] carries, and the length of
/// their part.
fn delivered_in(state: &[u8]) -> (usize, BTreeSet<&str>) {
    let n = state.get(..4).map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize);
    let ids = state.get(4..4 + n).and_then(|b| std::str::from_utf8(b).ok()).unwrap_or_default();
    (n, ids.split('\n').filter(|s| !s.is_empty()).collect())
}

/// The trace's digest of a state made by [`Ctx::provide_state`]: of the delivered ids it
/// carries, as the checker recomputes it (G11).
pub(crate) fn state_digest(state: &[u8]) -> String {
    synchrony_trace::digest(delivered_in(state).1)
}
