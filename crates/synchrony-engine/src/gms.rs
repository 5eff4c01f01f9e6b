//! The membership service (GMS): the cluster's process view, every group's view, and the
//! rounds that change them, decided one epoch at a time by the leader (the oldest member it
//! does not suspect) with the consent of a majority by weight of the previous process view.
//!
//! A round is single-decree Paxos per epoch, with the flush folded into phase 1:
//! `Prepare` (promise the ballot, freeze the listed groups, send flush reports) →
//! `Promise` → the leader computes the decision (new process view, new group views, one
//! cut per group) → `Accept` → `Accepted` from a majority → `Commit`. A leader that takes
//! over after a failure re-proposes any decision a member already accepted, so at most one
//! decision exists per epoch (G1, G10), whoever finishes the round.
//!
//! [`Gms`] is a state machine of its own: its handlers take what they need of the engine as
//! arguments ([`Ctx`], and a few facts about the groups) and write what they want done into
//! a [`GmsOut`] that the engine applies: messages to send, a promise to fill with flush
//! reports, a decision to apply. Applying a decision to the groups is the engine's work;
//! the membership's own part of it is [`Gms::commit`].

use crate::config::Config;
use crate::cut::{compute_cut, compute_cut_with_quiet};
use crate::id::{Ballot, GroupName, MsgId, ProcessId, ViewId};
use crate::time::Instant;
use crate::timer::{Timer, TimerTable};
use crate::verify::JoinVerifier;
use crate::wire::{Ctl, Cut, DataMsg, Decision, GroupChange, GroupOp, GroupView, Msg, Report, Requests, Snapshot};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

/// Gbcast ids remembered as delivered, so that a request repeated late is not delivered
/// twice; the oldest are forgotten past this.
const GBCAST_DONE_MAX: usize = 65536;

/// Requests carrying up to this many group operations go out whenever they change. Larger
/// ones (a process joining thousands of groups, one call at a time) go out at most once a
/// heartbeat interval: each carries the whole set, so sending one per change would cost
/// the square of the set's size in bytes, and the leader batches whatever it holds into
/// its next round anyway.
const REQUESTS_EAGER_OPS: usize = 64;

/// What every membership handler may read of the engine.
#[derive(Clone, Copy)]
pub(crate) struct Ctx<'a> {
    /// This process.
    pub(crate) me: &'a ProcessId,
    /// The engine's configuration.
    pub(crate) config: &'a Config,
    /// The time of the input being handled.
    pub(crate) now: Instant,
}

/// What a membership handler asks the engine to do, in this order: send `sends` (reliable,
/// in order) and `ctl` (unreliable), fill and send the `promise`, apply the `commit`.
#[derive(Default)]
pub(crate) struct GmsOut {
    pub(crate) sends: Vec<(ProcessId, Msg)>,
    pub(crate) ctl: Vec<(ProcessId, Ctl)>,
    /// A promise to send once the engine froze `groups` and added their flush reports.
    pub(crate) promise: Option<Promise>,
    /// A committed decision (with the configuration, for a process that joins by it).
    pub(crate) commit: Option<(Arc<Decision>, Option<Arc<Snapshot>>)>,
    /// Rounds this process started.
    pub(crate) rounds: u64,
}

impl GmsOut {
    fn send(&mut self, to: &ProcessId, msg: Msg) {
        self.sends.push((to.clone(), msg));
    }
}

/// A promise in the making: the engine freezes `groups` for `epoch` and adds their reports.
pub(crate) struct Promise {
    pub(crate) to: ProcessId,
    pub(crate) ballot: Ballot,
    pub(crate) committed: u64,
    pub(crate) accepted: Option<(Ballot, Arc<Decision>)>,
    pub(crate) epoch: u64,
    pub(crate) groups: Vec<GroupName>,
    /// The processes the round removes: the engine freezes every group of theirs too, and
    /// reports those where it is not quiet.
    pub(crate) removing: Vec<ProcessId>,
}

/// The phase of a membership round this process leads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RoundPhase {
    /// Phase 1: prepares sent, promises (with flush reports) coming in.
    Prepare,
    /// Phase 2: the decision proposed, acceptances coming in.
    Accept,
}

/// What a round changes, fixed when it starts.
#[derive(Clone, Debug, Default)]
struct Plan {
    failed: BTreeSet<ProcessId>,
    leaving: BTreeSet<ProcessId>,
    joins: Vec<(ProcessId, u32)>,
    group_joins: BTreeMap<GroupName, Vec<ProcessId>>,
    group_leaves: BTreeMap<GroupName, BTreeSet<ProcessId>>,
    gbcasts: BTreeMap<GroupName, Vec<DataMsg>>,
    refused: Vec<(GroupName, ProcessId)>,
    /// Some member's groups are frozen by a round that never ended (its leader lost the
    /// lead to an older member with nothing to change): a round must end it.
    resume: bool,
}

impl Plan {
    /// The groups flushed for something else than a removed member: joins, leaves,
    /// gbcasts (named in the prepare; the removed members' groups are implied).
    fn explicit(&self) -> BTreeSet<&GroupName> {
        self.group_joins.keys().chain(self.group_leaves.keys()).chain(self.gbcasts.keys()).collect()
    }

    /// The processes the round removes: failed, or leaving the cluster.
    fn removing(&self) -> Vec<ProcessId> {
        self.failed.union(&self.leaving).cloned().collect()
    }

    fn is_empty(&self) -> bool {
        self.failed.is_empty()
            && self.leaving.is_empty()
            && self.joins.is_empty()
            && self.group_joins.is_empty()
            && self.group_leaves.is_empty()
            && self.gbcasts.is_empty()
            && self.refused.is_empty()
            && !self.resume
    }
}

#[derive(Debug)]
enum Round {
    Idle,
    Preparing {
        ballot: Ballot,
        epoch: u64,
        plan: Box<Plan>,
        waiting: BTreeSet<ProcessId>,
        promises: BTreeMap<ProcessId, PromiseBody>,
        /// When the prepares last went out to those that have not promised.
        sent_at: Instant,
    },
    Accepting {
        ballot: Ballot,
        decision: Arc<Decision>,
        sent_to: BTreeSet<ProcessId>,
        accepted: BTreeSet<ProcessId>,
    },
}

/// Who asks to leave which group: (group, process).
type Leaves<'a> = BTreeSet<(&'a GroupName, &'a ProcessId)>;

/// What a promise carries: an accepted decision, if any, and flush reports.
type PromiseBody = (Option<(Ballot, Arc<Decision>)>, Vec<Report>);

/// What a prepare flushes: the groups it names, and the processes whose groups it implies.
type Flush = (Vec<GroupName>, Vec<ProcessId>);

/// Membership state of one process.
pub(crate) struct Gms {
    epoch: u64,
    members: Vec<(ProcessId, u32)>,
    removed: BTreeSet<ProcessId>,
    /// Every group's current view (the cluster configuration).
    views: BTreeMap<GroupName, GroupView>,
    promised: Option<Ballot>,
    accepted: Option<(Ballot, Arc<Decision>)>,
    log: VecDeque<Arc<Decision>>,
    suspects: BTreeSet<ProcessId>,
    max_round: u64,
    /// Backoff jitter; seeded from the configuration, so a run replays exactly.
    rng: ChaCha8Rng,
    // This process's own requests.
    ops: Vec<GroupOp>,
    /// How many of `ops` are about each group, and how many are joins: a process asking
    /// to join thousands of groups must not scan its requests for each.
    op_groups: BTreeMap<GroupName, u8>,
    join_ops: usize,
    /// How many operations `op_groups` counts.
    indexed: usize,
    /// Gbcasts this process asked for, with the view of the group it knew then.
    gbcasts: Vec<(GroupName, ViewId, DataMsg)>,
    /// Per group, the first view of its current lineage: a gbcast asked of an older lineage
    /// (one whose members all failed or left) is never delivered in a newer one.
    lineage_start: BTreeMap<GroupName, ViewId>,
    leave: bool,
    /// The requests changed since they were last sent. Set only inside this type, by every
    /// method that changes what [`Msg::Requests`] carries.
    requests_dirty: bool,
    requests_sent_epoch: u64,
    /// When requests with more than [`REQUESTS_EAGER_OPS`] operations were last sent.
    requests_sent_at: Option<Instant>,
    /// How many operations the requests last sent carried.
    ops_sent: usize,
    /// Since when a group of this process has been frozen for an epoch not decided yet.
    frozen_since: Option<Instant>,
    /// Whether the requests last sent said "stalled".
    stalled_sent: bool,
    /// This process's join verifiers and the verdicts they gave.
    join_verifiers: BTreeMap<GroupName, JoinVerifier>,
    verdicts: BTreeMap<(GroupName, ProcessId), bool>,
    /// Counts the changes to what a plan is made of (see [`Gms::touch`]).
    changes: u64,
    /// `changes` when the last plan came out empty: no need to plan again until it moves
    /// (a leader must not scan every request, thousands of group joins, per input).
    empty_plan_at: Option<u64>,
    // Leader state.
    round: Round,
    requests: BTreeMap<ProcessId, Requests>,
    /// Group joins refused by a verifier, while the joiner still asks.
    refused: BTreeSet<(GroupName, ProcessId)>,
    join_requests: BTreeMap<ProcessId, u32>,
    gbcast_done: BTreeSet<MsgId>,
    gbcast_done_order: VecDeque<MsgId>,
    /// Groups this process must leave before it may join them again.
    forced_leaves: BTreeSet<GroupName>,
}

impl Gms {
    pub(crate) fn new(rng_seed: u64) -> Self {
        Self {
            epoch: 0,
            members: Vec::new(),
            removed: BTreeSet::new(),
            views: BTreeMap::new(),
            promised: None,
            accepted: None,
            log: VecDeque::new(),
            suspects: BTreeSet::new(),
            max_round: 0,
            rng: ChaCha8Rng::seed_from_u64(rng_seed),
            ops: Vec::new(),
            op_groups: BTreeMap::new(),
            join_ops: 0,
            indexed: 0,
            gbcasts: Vec::new(),
            lineage_start: BTreeMap::new(),
            leave: false,
            requests_dirty: false,
            requests_sent_epoch: 0,
            requests_sent_at: None,
            ops_sent: 0,
            frozen_since: None,
            stalled_sent: false,
            join_verifiers: BTreeMap::new(),
            verdicts: BTreeMap::new(),
            changes: 0,
            empty_plan_at: None,
            round: Round::Idle,
            requests: BTreeMap::new(),
            refused: BTreeSet::new(),
            join_requests: BTreeMap::new(),
            gbcast_done: BTreeSet::new(),
            gbcast_done_order: VecDeque::new(),
            forced_leaves: BTreeSet::new(),
        }
    }

    /// Founds a cluster of one.
    pub(crate) fn found(&mut self, me: &ProcessId, weight: u32) {
        self.touch();
        self.epoch = 1;
        self.members = vec![(me.clone(), weight)];
    }

    // ------------------------------------------------------------------ what it knows

    /// The number of the current process view.
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The cluster's members, oldest first.
    pub(crate) fn members(&self) -> impl Iterator<Item = &ProcessId> + Clone {
        self.members.iter().map(|(p, _)| p)
    }

    pub(crate) fn is_member(&self, p: &ProcessId) -> bool {
        self.members.iter().any(|(m, _)| m == p)
    }

    /// Whether `p` was excluded from (or left) the cluster.
    pub(crate) fn is_removed(&self, p: &ProcessId) -> bool {
        self.removed.contains(p)
    }

    pub(crate) fn is_suspect(&self, p: &ProcessId) -> bool {
        self.suspects.contains(p)
    }

    /// The member called `name`, other than `me`.
    pub(crate) fn member_named(&self, name: &str, me: &ProcessId) -> Option<ProcessId> {
        self.members().find(|p| &*p.name == name && *p != me).cloned()
    }

    pub(crate) fn leader(&self) -> Option<&ProcessId> {
        self.members().find(|p| !self.suspects.contains(*p))
    }

    /// The current view of a group (member or not).
    pub(crate) fn view(&self, group: &GroupName) -> Option<&GroupView> {
        self.views.get(group)
    }

    pub(crate) fn views(&self) -> &BTreeMap<GroupName, GroupView> {
        &self.views
    }

    /// Whether `me` is in the current view of `group`.
    pub(crate) fn in_view(&self, group: &GroupName, me: &ProcessId) -> bool {
        self.views.get(group).is_some_and(|v| v.members.contains(me))
    }

    /// The phase of the round this process leads, if any.
    pub(crate) fn round_phase(&self) -> Option<RoundPhase> {
        match self.round {
            Round::Idle => None,
            Round::Preparing { .. } => Some(RoundPhase::Prepare),
            Round::Accepting { .. } => Some(RoundPhase::Accept),
        }
    }

    pub(crate) fn gbcast_done(&self, id: &MsgId) -> bool {
        self.gbcast_done.contains(id)
    }

    /// A gbcast this process asked for in `group` and is not yet delivered.
    pub(crate) fn pending_gbcast(&self, group: &GroupName, id: &MsgId) -> Option<DataMsg> {
        self.gbcasts.iter().find(|(g, _, m)| g == group && m.id == *id).map(|(_, _, m)| m.clone())
    }

    /// The gbcasts this process asked for in `group`, for debug dumps.
    pub(crate) fn pending_gbcasts_of<'a>(&'a self, group: &'a GroupName) -> impl Iterator<Item = &'a MsgId> + 'a {
        self.gbcasts.iter().filter(move |(g, _, _)| g == group).map(|(_, _, m)| &m.id)
    }

    /// Whether this process must stay out of `group` until its forced leave is decided.
    pub(crate) fn forced_out(&self, group: &GroupName) -> bool {
        self.forced_leaves.contains(group)
    }

    /// Whether this process asked to leave the cluster.
    pub(crate) fn leaving(&self) -> bool {
        self.leave
    }

    /// The round and the promised ballot, the suspicions and the requests held, for debug
    /// dumps.
    pub(crate) fn debug_state(&self) -> String {
        let round = match &self.round {
            Round::Idle => "idle".to_string(),
            Round::Preparing { ballot, epoch, waiting, promises, .. } => format!(
                "preparing {ballot:?} epoch {epoch} waiting {waiting:?} promised by {:?}",
                promises.keys().collect::<Vec<_>>()
            ),
            Round::Accepting { ballot, accepted, .. } => format!("accepting {ballot:?} accepted by {accepted:?}"),
        };
        let requests: Vec<String> = self
            .requests
            .iter()
            .map(|(p, r)| {
                let g: Vec<String> = r.gbcasts.iter().map(|(_, _, m)| m.id.to_string()).collect();
                format!("{p}: suspects {:?} ops {} gbcasts {g:?} leave {}", r.suspects, r.ops.len(), r.leave)
            })
            .collect();
        format!(
            "epoch {} suspects {:?} round {round}; promised {:?}; max round {} requests [{}]",
            self.epoch,
            self.suspects,
            self.promised,
            self.max_round,
            requests.join("; ")
        )
    }

    // ------------------------------------------------------------------ this process's requests

    /// Notes a change to what [`Gms::plan`] reads: every method the engine calls that
    /// changes the membership, the views, others' requests or the suspicions says so first.
    fn touch(&mut self) {
        self.changes += 1;
    }

    /// Asks to join or leave a group.
    pub(crate) fn request_op(&mut self, op: GroupOp) {
        // The last request about a group replaces the others, but a forced leave (state
        // lost) stands: a join then follows it.
        let forced = op.joins().is_some_and(|g| self.forced_leaves.contains(g));
        if !self.op_groups.contains_key(op.group()) {
            // Nothing asked of this group yet: no scan (the common case by far).
            self.ops.push(op);
        } else {
            if !forced {
                self.ops.retain(|o| o.group() != op.group() || *o == op);
            }
            if !self.ops.contains(&op) {
                self.ops.push(op);
            }
        }
        self.ops_changed();
        self.requests_dirty = true;
    }

    /// Keeps the index of `ops` true after a change. A push is counted in constant time;
    /// anything else (done once per decision, not per call) recounts.
    fn ops_changed(&mut self) {
        if self.indexed + 1 == self.ops.len() {
            let op = self.ops.last().expect("just pushed");
            *self.op_groups.entry(op.group().clone()).or_default() += 1;
            self.join_ops += usize::from(op.joins().is_some());
            self.indexed += 1;
            return;
        }
        self.op_groups.clear();
        self.join_ops = 0;
        self.indexed = self.ops.len();
        for op in &self.ops {
            *self.op_groups.entry(op.group().clone()).or_default() += 1;
            self.join_ops += usize::from(op.joins().is_some());
        }
    }

    /// Groups this process asked to join and is not in yet (`is_member` says which it is).
    pub(crate) fn pending_joins(&self, is_member: impl Fn(&GroupName) -> bool) -> usize {
        self.ops.iter().filter_map(GroupOp::joins).filter(|g| !is_member(g)).count()
    }

    /// Joins asked for: at least [`Gms::pending_joins`], in constant time.
    pub(crate) fn join_ops(&self) -> usize {
        self.join_ops
    }

    /// This process must leave the group whatever it asks later (its state is lost).
    pub(crate) fn force_leave(&mut self, group: GroupName) {
        self.ops.retain(|o| o.joins() != Some(&group));
        self.ops_changed();
        self.request_op(GroupOp::Leave(group.clone()));
        self.forced_leaves.insert(group);
    }

    /// Asks to leave the cluster.
    pub(crate) fn request_leave_cluster(&mut self) {
        self.leave = true;
        self.requests_dirty = true;
    }

    /// Asks the leader to deliver a gbcast in `group` (whose view here is `view`).
    pub(crate) fn request_gbcast(&mut self, group: GroupName, view: ViewId, msg: DataMsg) {
        self.gbcasts.push((group, view, msg));
        self.requests_dirty = true;
    }

    /// Forgets the gbcasts asked of `group` (its lineage died), adding their ids to `lost`
    /// after those already there.
    pub(crate) fn drop_gbcasts_of(&mut self, group: &GroupName, lost: &mut Vec<MsgId>) {
        self.gbcasts.retain(|(g, _, m)| {
            if g == group && !lost.contains(&m.id) {
                lost.push(m.id.clone());
            }
            g != group
        });
        self.requests_dirty = true;
    }

    /// Installs (or with `None` removes) the join verifier of `group`.
    pub(crate) fn set_join_verifier(&mut self, group: GroupName, verifier: Option<JoinVerifier>) {
        match verifier {
            Some(f) => self.join_verifiers.insert(group, f),
            None => self.join_verifiers.remove(&group),
        };
        self.requests_dirty = true;
    }

    // ------------------------------------------------------------------ failure detection

    /// Suspects `p`; false if it was suspected already.
    pub(crate) fn suspect(&mut self, p: ProcessId) -> bool {
        self.touch();
        let new = self.suspects.insert(p);
        if new {
            self.requests_dirty = true;
        }
        new
    }

    /// `p` was heard from. A suspected member heard again before any view change acted on
    /// it was wrongly suspected (a partition healed, a slow spell passed); sticky
    /// suspicions could otherwise leave no leader able to gather a quorum.
    pub(crate) fn heard(&mut self, p: &ProcessId) {
        if self.is_member(p) && self.suspects.remove(p) {
            self.touch();
            self.requests_dirty = true;
        }
    }

    /// Whether the members not suspected carry a majority (G10).
    pub(crate) fn live_quorum(&self, config: &Config) -> bool {
        self.quorum(self.members().filter(|p| !self.suspects.contains(*p)), config.min_commit_weight)
    }

    fn weight_of<'a>(&self, ps: impl Iterator<Item = &'a ProcessId>) -> u64 {
        let set: BTreeSet<&ProcessId> = ps.collect();
        self.members.iter().filter(|(p, _)| set.contains(p)).map(|(_, w)| *w as u64).sum()
    }

    fn total_weight(&self) -> u64 {
        self.members.iter().map(|(_, w)| *w as u64).sum()
    }

    /// Whether `ps` carry a majority (by weight) of the current view and the minimum
    /// commit weight. With all weights zero, a plain majority of heads counts.
    fn quorum<'a>(&self, ps: impl Iterator<Item = &'a ProcessId> + Clone, min_commit: u32) -> bool {
        let total = self.total_weight();
        if total == 0 {
            let n = ps.clone().filter(|p| self.is_member(p)).count();
            return 2 * n > self.members.len();
        }
        let w = self.weight_of(ps);
        2 * w > total && w >= min_commit as u64
    }

    /// No new round before a random part of half the failure timeout has passed.
    fn backoff(&mut self, ctx: &Ctx, timers: &mut TimerTable) {
        let jitter = self.rng.gen_range(0..=ctx.config.failure_timeout.as_micros() as u64 / 2);
        timers.set(Timer::RoundBackoff, ctx.now + std::time::Duration::from_micros(jitter));
    }

    // ------------------------------------------------------------------ messages

    /// A process asks a member to let it into the cluster.
    pub(crate) fn on_join_cluster(&mut self, ctx: &Ctx, from: &ProcessId, weight: u32, out: &mut GmsOut) {
        self.touch();
        if self.is_member(from) {
            // It is in, but missed its commit (its leader failed): send the latest again.
            if let Some(d) = self.log.back().cloned() {
                let snapshot = Some(Arc::new(self.snapshot()));
                out.send(from, Msg::Commit { decision: d, snapshot });
            }
            return;
        }
        match self.leader().cloned() {
            Some(l) if l == *ctx.me => {
                self.join_requests.insert(from.clone(), weight);
            }
            Some(l) => {
                out.send(&l, Msg::JoinRequest { who: from.clone(), weight });
                // Control messages ride in the next frame to that peer.
                out.ctl.push((from.clone(), Ctl::Redirect { leader: l }));
            }
            None => {}
        }
    }

    fn snapshot(&self) -> Snapshot {
        Snapshot {
            groups: self.views.iter().map(|(n, v)| (n.clone(), v.clone())).collect(),
            lineages: self.lineage_start.iter().map(|(g, v)| (g.clone(), *v)).collect(),
        }
    }

    /// A membership message from `from` (a member, or a process it relays for).
    pub(crate) fn handle(&mut self, ctx: &Ctx, timers: &mut TimerTable, from: &ProcessId, msg: Msg, out: &mut GmsOut) {
        self.touch();
        match msg {
            Msg::JoinRequest { who, weight } if self.leader() == Some(ctx.me) && !self.removed.contains(&who) => {
                self.join_requests.insert(who, weight);
            }
            Msg::Requests(r) => {
                // A refusal is remembered until the joiner stops asking.
                self.refused.retain(|(g, p)| p != from || r.ops.iter().any(|o| o.joins() == Some(g)));
                self.requests.insert(from.clone(), r);
            }
            Msg::Prepare { ballot, epoch, groups, removing } => {
                self.on_prepare(from, ballot, epoch, (groups, removing), out)
            }
            Msg::Promise { ballot, committed, accepted, reports } => {
                self.on_promise(from, ballot, committed, accepted, reports, out)
            }
            Msg::Nack { promised } => {
                self.max_round = self.max_round.max(promised.round);
                if !matches!(self.round, Round::Idle) {
                    self.round = Round::Idle;
                    self.backoff(ctx, timers);
                }
            }
            Msg::Accept { ballot, decision } => {
                if let Some(promised) = self.promised.clone().filter(|p| *p > ballot) {
                    out.send(from, Msg::Nack { promised });
                    return;
                }
                if decision.epoch != self.epoch + 1 {
                    return;
                }
                self.max_round = self.max_round.max(ballot.round);
                self.promised = Some(ballot.clone());
                let epoch = decision.epoch;
                self.accepted = Some((ballot.clone(), decision));
                out.send(from, Msg::Accepted { ballot, epoch });
            }
            Msg::Accepted { ballot, epoch } => {
                if let Round::Accepting { ballot: b, decision, accepted, .. } = &mut self.round {
                    if *b == ballot && decision.epoch == epoch {
                        accepted.insert(from.clone());
                    }
                }
            }
            Msg::Commit { decision, snapshot } => out.commit = Some((decision, snapshot)),
            _ => {}
        }
    }

    fn on_prepare(&mut self, from: &ProcessId, ballot: Ballot, epoch: u64, flush: Flush, out: &mut GmsOut) {
        if epoch <= self.epoch {
            // The proposer is behind: send it what it missed.
            for d in self.log.iter().filter(|d| d.epoch >= epoch) {
                out.send(from, Msg::Commit { decision: d.clone(), snapshot: None });
            }
            return;
        }
        if let Some(promised) = self.promised.clone().filter(|p| *p > ballot) {
            out.send(from, Msg::Nack { promised });
            return;
        }
        self.max_round = self.max_round.max(ballot.round);
        self.promised = Some(ballot.clone());
        let committed = self.epoch;
        if epoch > committed + 1 {
            // Behind: the leader will send the missing commits and ask again.
            out.send(from, Msg::Promise { ballot, committed, accepted: None, reports: Vec::new() });
            return;
        }
        let accepted = self.accepted.clone().filter(|(_, d)| d.epoch == epoch);
        let (groups, removing) = flush;
        out.promise = Some(Promise { to: from.clone(), ballot, committed, accepted, epoch, groups, removing });
    }

    fn on_promise(
        &mut self,
        from: &ProcessId,
        ballot: Ballot,
        committed: u64,
        accepted: Option<(Ballot, Arc<Decision>)>,
        reports: Vec<Report>,
        out: &mut GmsOut,
    ) {
        let my_epoch = self.epoch;
        let (groups, removing) = self.prepare_groups();
        let Round::Preparing { ballot: b, epoch, promises, waiting, .. } = &mut self.round else {
            return;
        };
        if *b != ballot || !waiting.contains(from) {
            return;
        }
        if committed + 1 < *epoch {
            // Bring it up to date, then ask again (FIFO links keep the order).
            let e = *epoch;
            let missing: Vec<Arc<Decision>> =
                self.log.iter().filter(|d| d.epoch > committed && d.epoch <= my_epoch).cloned().collect();
            if missing.first().is_none_or(|d| d.epoch != committed + 1) {
                // Too far behind to catch up: it will be excluded as it cannot follow.
                self.suspects.insert(from.clone());
                return;
            }
            for d in missing {
                out.send(from, Msg::Commit { decision: d, snapshot: None });
            }
            out.send(from, Msg::Prepare { ballot, epoch: e, groups, removing });
            return;
        }
        promises.insert(from.clone(), (accepted, reports));
    }

    /// Sends the prepare again to members that have not promised for a while: one that
    /// was still joining when it came (its commit, from a leader that crashed, arrived
    /// late) dropped it, and would otherwise hold the round forever.
    fn prepare_again(&mut self, ctx: &Ctx, out: &mut GmsOut) {
        let patience = ctx.config.failure_timeout / 2;
        let Round::Preparing { sent_at, .. } = &self.round else { return };
        if ctx.now.saturating_since(*sent_at) < patience {
            return;
        }
        let (groups, removing) = self.prepare_groups();
        let Round::Preparing { ballot, epoch, waiting, promises, sent_at, .. } = &mut self.round else { return };
        *sent_at = ctx.now;
        for p in waiting.iter().filter(|p| !promises.contains_key(*p)) {
            let (groups, removing) = (groups.clone(), removing.clone());
            out.send(p, Msg::Prepare { ballot: ballot.clone(), epoch: *epoch, groups, removing });
        }
    }

    /// What the prepare of the round being prepared flushes.
    fn prepare_groups(&self) -> Flush {
        match &self.round {
            Round::Preparing { plan, .. } => (plan.explicit().into_iter().cloned().collect(), plan.removing()),
            _ => (Vec::new(), Vec::new()),
        }
    }

    // ------------------------------------------------------------------ the leader's rounds

    /// The suspicions the leader acts on: its own, and those of members it trusts that do
    /// not suspect a majority (those will stop by themselves). Members are heard oldest
    /// first, and an excluded member's suspicions are ignored: two members that suspect each
    /// other (a link cut between them) lose only the younger, not both (which could cost the
    /// majority and stall every round).
    fn effective_suspects(&self, me: &ProcessId) -> BTreeSet<ProcessId> {
        let mut s = self.suspects.clone();
        let n = self.members.len();
        for p in self.members() {
            if s.contains(p) {
                continue;
            }
            let Some(r) = self.requests.get(p) else { continue };
            if 2 * r.suspects.len() >= n {
                continue;
            }
            if r.suspects.contains(me) {
                // It cannot hear its leader, so it cannot take part in a view change.
                s.insert(p.clone());
            } else {
                s.extend(r.suspects.iter().cloned());
            }
        }
        s.retain(|p| self.is_member(p));
        s
    }

    fn plan(&self, me: &ProcessId) -> Plan {
        let mut plan = Plan { failed: self.effective_suspects(me), ..Plan::default() };
        // Who asks to leave which group, looked up for every join below.
        let group_leaves: BTreeSet<(&GroupName, &ProcessId)> = (self.requests.iter())
            .flat_map(|(p, r)| r.ops.iter().filter(|o| matches!(o, GroupOp::Leave(_))).map(move |o| (o.group(), p)))
            .collect();
        for (p, r) in &self.requests {
            if !self.is_member(p) || plan.failed.contains(p) {
                continue;
            }
            if r.leave {
                plan.leaving.insert(p.clone());
            }
            plan.resume |= r.stalled;
            for op in &r.ops {
                self.plan_op(&mut plan, &group_leaves, p, r.leave, op);
            }
            for (g, asked_in, m) in &r.gbcasts {
                let lineage = self.lineage_start.get(g).copied().unwrap_or(ViewId(0));
                if !self.gbcast_done.contains(&m.id)
                    && *asked_in >= lineage
                    && self.views.get(g).is_some_and(|v| !v.members.is_empty())
                {
                    let list = plan.gbcasts.entry(g.clone()).or_default();
                    if !list.iter().any(|x| x.id == m.id) {
                        list.push(m.clone());
                    }
                }
            }
        }
        for (p, w) in &self.join_requests {
            if !self.is_member(p) && !self.removed.contains(p) {
                plan.joins.push((p.clone(), *w));
            }
        }
        // (The groups of the removed processes are not listed: the decision looks only at
        // those a survivor reported on, the others change as implied.)
        plan
    }

    /// Adds member `p`'s request `op` to the plan (`leaving`: it also leaves the cluster).
    fn plan_op(&self, plan: &mut Plan, group_leaves: &Leaves, p: &ProcessId, leaving: bool, op: &GroupOp) {
        let inside = |g: &GroupName| self.views.get(g).is_some_and(|v| v.members.contains(p));
        let refused_already = |g: &GroupName| self.refused.contains(&(g.clone(), p.clone()));
        match op {
            GroupOp::JoinRunning(g) if !inside(g) => {
                if !leaving && self.goes_on(g, &plan.failed, group_leaves) {
                    plan.group_joins.entry(g.clone()).or_default().push(p.clone());
                } else if !leaving && !refused_already(g) {
                    plan.refused.push((g.clone(), p.clone()));
                }
            }
            GroupOp::JoinRunning(_) => {}
            GroupOp::Join(g) => {
                if !inside(g) && !leaving {
                    match self.admission(g, p) {
                        Some(true) => plan.group_joins.entry(g.clone()).or_default().push(p.clone()),
                        Some(false) if !refused_already(g) => plan.refused.push((g.clone(), p.clone())),
                        _ => {} // a verifier has not answered yet, or refused already
                    }
                }
            }
            GroupOp::Leave(g) => {
                if inside(g) {
                    plan.group_leaves.entry(g.clone()).or_default().insert(p.clone());
                }
            }
        }
    }

    /// Whether a member of `group` stays in it through a round where `failed` go: one that
    /// neither failed nor asks to leave the cluster or the group (a joiner that asked to
    /// join only a running group gets its state from such a member).
    fn goes_on(&self, group: &GroupName, failed: &BTreeSet<ProcessId>, group_leaves: &Leaves) -> bool {
        let leaves =
            |m: &ProcessId| self.requests.get(m).is_some_and(|r| r.leave || group_leaves.contains(&(group, m)));
        self.views.get(group).is_some_and(|v| v.members.iter().any(|m| !failed.contains(m) && !leaves(m)))
    }

    /// Whether `p` may join `g`: `Some(true)` when every member of `g` that verifies joins
    /// admitted it (or none verifies), `Some(false)` when one refused, `None` while a
    /// verdict is missing.
    fn admission(&self, g: &GroupName, p: &ProcessId) -> Option<bool> {
        let Some(view) = self.views.get(g) else { return Some(true) };
        let mut all = true;
        for m in &view.members {
            let Some(r) = self.requests.get(m).filter(|r| r.verifying.contains(g)) else { continue };
            match r.verdicts.iter().find(|(vg, vp, _)| vg == g && vp == p) {
                Some((_, _, false)) => return Some(false),
                Some(_) => {}
                None => all = false,
            }
        }
        all.then_some(true)
    }

    /// The groups this process is in and verifies joins for.
    fn verifying(&self, me: &ProcessId) -> Vec<GroupName> {
        self.join_verifiers.keys().filter(|g| self.in_view(g, me)).cloned().collect()
    }

    /// Runs this process's join verifiers on the joins others ask for, and forgets verdicts
    /// on joins no longer asked for.
    fn judge_joins(&mut self, me: &ProcessId) {
        if self.join_verifiers.is_empty() && self.verdicts.is_empty() {
            return;
        }
        let mine = self.verifying(me);
        let mut wanted: BTreeSet<(GroupName, ProcessId)> = BTreeSet::new();
        for (p, r) in &self.requests {
            for g in r.ops.iter().filter_map(GroupOp::joins) {
                if mine.contains(g) && !self.in_view(g, p) {
                    wanted.insert((g.clone(), p.clone()));
                }
            }
        }
        let before = self.verdicts.len();
        self.verdicts.retain(|k, _| wanted.contains(k));
        let mut changed = before != self.verdicts.len();
        for (g, p) in wanted {
            if !self.verdicts.contains_key(&(g.clone(), p.clone())) {
                let ok = self.join_verifiers.get(&g).is_none_or(|f| f(&p));
                if !ok {
                    tracing::warn!(%me, group = %g, joiner = %p, "join verifier refused a join");
                }
                self.verdicts.insert((g, p), ok);
                changed = true;
            }
        }
        if changed {
            self.requests_dirty = true;
        }
    }

    /// Every member's request forwarding, and the leader's side of rounds. `frozen_ahead`:
    /// some group of this process is frozen for an epoch not decided yet; `inputs_pending`:
    /// the engine has messages to itself still to handle (a round waits for them).
    pub(crate) fn drive(
        &mut self,
        ctx: &Ctx,
        timers: &mut TimerTable,
        frozen_ahead: bool,
        inputs_pending: bool,
        out: &mut GmsOut,
    ) {
        let me = ctx.me;
        let leader = self.leader().cloned();
        self.judge_joins(me);
        if frozen_ahead {
            self.frozen_since.get_or_insert(ctx.now);
        } else {
            self.frozen_since = None;
        }
        let stalled = self.frozen_since.is_some_and(|t| ctx.now.saturating_since(t) >= ctx.config.failure_timeout);
        self.send_requests(ctx, stalled, out);
        // The requests just sent to itself count as input still to handle.
        let inputs_pending = inputs_pending || out.sends.iter().any(|(to, _)| to == me);
        if leader.as_ref() != Some(me) {
            self.round = Round::Idle;
            return;
        }
        match &self.round {
            Round::Idle if !timers.expired(Timer::RoundBackoff, ctx.now) || inputs_pending => {}
            Round::Idle => self.start_round(ctx, timers, stalled, out),
            Round::Preparing { waiting, promises, plan, .. } => {
                let now_failed = self.effective_suspects(me);
                if waiting.iter().any(|p| now_failed.contains(p)) || now_failed.iter().any(|p| !plan.failed.contains(p))
                {
                    self.round = Round::Idle; // restart with the new suspicions
                    return;
                }
                if promises.len() < waiting.len() {
                    self.prepare_again(ctx, out);
                    return;
                }
                self.decide(ctx, out);
            }
            Round::Accepting { accepted, sent_to, .. } => {
                let now_failed = self.effective_suspects(me);
                let reachable = sent_to.iter().filter(|p| !now_failed.contains(*p));
                if !self.quorum(reachable, ctx.config.min_commit_weight) {
                    self.round = Round::Idle;
                    return;
                }
                if self.quorum(accepted.iter(), ctx.config.min_commit_weight) {
                    self.commit_round(me, out);
                }
            }
        }
    }

    /// Requests go to every member whenever they change or the membership does: whoever
    /// leads (even one this process cannot hear) has them.
    fn send_requests(&mut self, ctx: &Ctx, stalled: bool, out: &mut GmsOut) {
        let me = ctx.me;
        if stalled != self.stalled_sent {
            self.requests_dirty = true;
        }
        if !self.requests_dirty && self.requests_sent_epoch == self.epoch {
            return;
        }
        // (Fewer operations than last sent go at once: the leader must not plan with
        // requests a decision satisfied.)
        if self.ops.len() > REQUESTS_EAGER_OPS && self.ops.len() > self.ops_sent {
            let pace = ctx.config.heartbeat_interval;
            if self.requests_sent_at.is_some_and(|t| ctx.now.saturating_since(t) < pace) {
                return; // still dirty: a tick sends them
            }
            self.requests_sent_at = Some(ctx.now);
        }
        self.ops_sent = self.ops.len();
        self.stalled_sent = stalled;
        self.requests_dirty = false;
        self.requests_sent_epoch = self.epoch;
        let msg = Msg::Requests(Requests {
            suspects: self.suspects.iter().cloned().collect(),
            ops: self.ops.clone(),
            gbcasts: self.gbcasts.clone(),
            leave: self.leave,
            verdicts: self.verdicts.iter().map(|((g, p), ok)| (g.clone(), p.clone(), *ok)).collect(),
            verifying: self.verifying(me),
            stalled,
        });
        for p in self.members() {
            out.send(p, msg.clone());
        }
    }

    /// Phase 1 of a new round, if there is anything to change.
    fn start_round(&mut self, ctx: &Ctx, timers: &mut TimerTable, stalled: bool, out: &mut GmsOut) {
        if !stalled && self.empty_plan_at == Some(self.changes) {
            return;
        }
        let mut plan = self.plan(ctx.me);
        self.empty_plan_at = plan.is_empty().then_some(self.changes);
        plan.resume |= stalled;
        if plan.is_empty() {
            return;
        }
        let alive = self.members().filter(|p| !plan.failed.contains(*p));
        if !self.quorum(alive, ctx.config.min_commit_weight) {
            // Too many members suspect this process (or each other) for it to win a
            // round: it would only outbid, round after round, a leader that can.
            self.backoff(ctx, timers);
            return;
        }
        self.max_round += 1;
        let ballot = Ballot { round: self.max_round, leader: ctx.me.clone() };
        let epoch = self.epoch + 1;
        let waiting: BTreeSet<ProcessId> = self.members().filter(|p| !plan.failed.contains(*p)).cloned().collect();
        let groups: Vec<GroupName> = plan.explicit().into_iter().cloned().collect();
        let removing = plan.removing();
        out.rounds += 1;
        tracing::debug!(me = %ctx.me, epoch, ?plan.failed, joins = plan.joins.len(), groups = groups.len(), "starting a membership round");
        for p in &waiting {
            let (groups, removing) = (groups.clone(), removing.clone());
            out.send(p, Msg::Prepare { ballot: ballot.clone(), epoch, groups, removing });
        }
        self.round = Round::Preparing {
            ballot,
            epoch,
            plan: Box::new(plan),
            waiting,
            promises: BTreeMap::new(),
            sent_at: ctx.now,
        };
    }

    /// Phase 1 is complete: re-propose an accepted decision, or compute a new one.
    fn decide(&mut self, ctx: &Ctx, out: &mut GmsOut) {
        let Round::Preparing { ballot, epoch, plan, promises, .. } = std::mem::replace(&mut self.round, Round::Idle)
        else {
            return;
        };
        if !self.quorum(promises.keys(), ctx.config.min_commit_weight) {
            return; // not enough weight alive; the failure detector will stop this process
        }
        let prior = promises
            .values()
            .filter_map(|(a, _)| a.clone())
            .filter(|(_, d)| d.epoch == epoch)
            .max_by(|a, b| a.0.cmp(&b.0));
        let decision = match prior {
            Some((_, d)) => d,
            None => Arc::new(self.compute_decision(epoch, &plan, &promises)),
        };
        let sent_to: BTreeSet<ProcessId> = promises.keys().cloned().collect();
        for p in &sent_to {
            out.send(p, Msg::Accept { ballot: ballot.clone(), decision: decision.clone() });
        }
        self.round = Round::Accepting { ballot, decision, sent_to, accepted: BTreeSet::new() };
    }

    /// Phase 2 is complete: the decision goes to every member (with the configuration to
    /// the processes it lets in) and is applied here.
    fn commit_round(&mut self, me: &ProcessId, out: &mut GmsOut) {
        let Round::Accepting { decision, .. } = std::mem::replace(&mut self.round, Round::Idle) else { return };
        let newcomers: Vec<&ProcessId> =
            decision.members.iter().map(|(p, _)| p).filter(|p| !self.is_member(p)).collect();
        for p in self.members().filter(|p| *p != me) {
            out.send(p, Msg::Commit { decision: decision.clone(), snapshot: None });
        }
        if !newcomers.is_empty() {
            let mut views = self.views.clone();
            let mut lineages = self.lineage_start.clone();
            for gc in decision.groups.iter().chain(&self.implied_changes(&decision)) {
                if let Some(v) = &gc.new_view {
                    views.insert(gc.group.clone(), v.clone());
                    if starts_lineage(gc, v) {
                        lineages.insert(gc.group.clone(), v.id);
                    }
                }
            }
            let snap =
                Arc::new(Snapshot { groups: views.into_iter().collect(), lineages: lineages.into_iter().collect() });
            for p in newcomers {
                out.send(p, Msg::Commit { decision: decision.clone(), snapshot: Some(snap.clone()) });
            }
        }
        out.commit = Some((decision, None));
    }

    fn compute_decision(&self, epoch: u64, plan: &Plan, promises: &BTreeMap<ProcessId, PromiseBody>) -> Decision {
        let gone: BTreeSet<&ProcessId> = plan.failed.iter().chain(plan.leaving.iter()).collect();
        let mut members: Vec<(ProcessId, u32)> =
            self.members.iter().filter(|(p, _)| !gone.contains(p)).cloned().collect();
        members.extend(plan.joins.iter().cloned());
        let mut groups = Vec::new();
        // Each member's reports by group, in the order it sent them (a round may change
        // thousands of groups: no scan of every report for each).
        let mut by_group: BTreeMap<(&GroupName, &ProcessId), Vec<&Report>> = BTreeMap::new();
        for (p, (_, rs)) in promises {
            for r in rs {
                by_group.entry((&r.group, p)).or_default().push(r);
            }
        }
        let explicit = plan.explicit();
        let unknown = GroupView { id: ViewId(0), members: Vec::new() };
        // The round's groups are those it names and those of the removed processes; of the
        // latter only those some survivor reported on can need more than their implied
        // change (see `implied_changes`), so only they are looked at, not every group of a
        // crashed process.
        let reported = by_group.keys().map(|(g, _)| *g);
        let candidates: BTreeSet<&GroupName> = explicit.iter().copied().chain(reported).collect();
        for g in candidates {
            let old = self.views.get(g).unwrap_or(&unknown);
            if !explicit.contains(g) && !old.members.iter().any(|m| gone.contains(m)) {
                continue; // not a group of this round
            }
            // The survivors' reports; a survivor that sent none is quiet in the group (or
            // holds nothing of it).
            let mut reports: Vec<&Report> = Vec::new();
            let mut unheard = false;
            for m in old.members.iter().filter(|m| !plan.failed.contains(*m)) {
                let before = reports.len();
                let of_m = by_group.get(&(g, m)).into_iter().flatten();
                reports.extend(of_m.copied().filter(|r| r.view == old.id));
                unheard |= reports.len() == before;
            }
            if reports.is_empty() && !explicit.contains(g) {
                // Only a removed member changes it and every survivor is quiet in it: the
                // change is implied (see `implied_changes`), at no cost in the decision.
                continue;
            }
            let cut = if unheard { compute_cut_with_quiet(old, &reports) } else { compute_cut(old, &reports) };
            let leavers: Vec<ProcessId> = old
                .members
                .iter()
                .filter(|m| plan.leaving.contains(*m) || plan.group_leaves.get(g).is_some_and(|l| l.contains(*m)))
                .cloned()
                .collect();
            let mut new_members: Vec<ProcessId> =
                old.members.iter().filter(|m| !gone.contains(m) && !leavers.contains(m)).cloned().collect();
            for j in plan.group_joins.get(g).into_iter().flatten() {
                if !new_members.contains(j) && members.iter().any(|(m, _)| m == j) {
                    new_members.push(j.clone());
                }
            }
            let gbcasts =
                if old.members.is_empty() { Vec::new() } else { plan.gbcasts.get(g).cloned().unwrap_or_default() };
            let new_view =
                (new_members != old.members).then(|| GroupView { id: ViewId(old.id.0 + 1), members: new_members });
            if new_view.is_none() && gbcasts.is_empty() {
                continue;
            }
            groups.push(GroupChange { group: g.clone(), old_view: old.id, new_view, cut, gbcasts, leavers });
        }
        Decision { epoch, members, removed: gone.into_iter().cloned().collect(), groups, refused: plan.refused.clone() }
    }

    // ------------------------------------------------------------------ applying decisions

    /// A joining process is let in by `decision`, with the configuration `snap`.
    pub(crate) fn install(&mut self, decision: Arc<Decision>, snap: &Snapshot) {
        self.touch();
        self.epoch = decision.epoch;
        self.members = decision.members.clone();
        self.removed.extend(decision.removed.iter().cloned());
        self.views = snap.groups.iter().cloned().collect();
        self.lineage_start = snap.lineages.iter().cloned().collect();
        self.log.push_back(decision);
        self.requests_dirty = true;
    }

    /// The group changes `d` implies (see [`Decision::groups`]), by group name, with the
    /// views before `d`: each group it does not list whose view holds a process it removes
    /// goes on without them, and its cut delivers nothing more. The cut's streams here are
    /// the old members at 0: a member of the group delivers what it delivered already
    /// (see the engine's `quiet_cut`).
    pub(crate) fn implied_changes(&self, d: &Decision) -> Vec<GroupChange> {
        if d.removed.is_empty() {
            return Vec::new();
        }
        let implied = Implies::of(d);
        (self.views.iter().filter(|(g, v)| implied.changes(g, v)))
            .map(|(g, v)| {
                let (group, old_view, old_members) = (g.clone(), v.id, v.members.clone());
                Implied { group, old_view, old_members, view: implied.next(v) }.take_change()
            })
            .collect()
    }

    /// Applies to the group views the changes `d` implies (as [`Gms::implied_changes`]
    /// lists them, in one pass over the views): returns each, by group name, with the
    /// old view's members. A group left with no member starts a new lineage.
    pub(crate) fn apply_implied(&mut self, d: &Decision) -> Vec<Implied> {
        if d.removed.is_empty() {
            return Vec::new();
        }
        let implied = Implies::of(d);
        let mut changes = Vec::new();
        for (g, v) in self.views.iter_mut() {
            if !implied.changes(g, v) {
                continue;
            }
            let next = implied.next(v);
            if next.members.is_empty() {
                self.lineage_start.insert(g.clone(), next.id);
            }
            let old = std::mem::replace(v, next.clone());
            changes.push(Implied { group: g.clone(), old_view: old.id, old_members: old.members, view: next });
        }
        if !changes.is_empty() {
            self.touch();
        }
        changes
    }

    /// A group change of a decision being applied: the group's new view. Returns whether
    /// the group starts over (no member goes on from the old view: a new lineage, with no
    /// state).
    pub(crate) fn set_group_view(&mut self, gc: &GroupChange) -> bool {
        self.touch();
        let Some(v) = &gc.new_view else { return false };
        // An emptied group keeps its last (empty) view, so that a group created again
        // under the same name goes on numbering its views (G1).
        match self.views.get_mut(&gc.group) {
            Some(old) => old.clone_from(v),
            None => {
                self.views.insert(gc.group.clone(), v.clone());
            }
        }
        let fresh = starts_lineage(gc, v);
        if fresh {
            self.lineage_start.insert(gc.group.clone(), v.id);
        }
        fresh
    }

    /// Records a gbcast as delivered.
    pub(crate) fn remember_gbcast(&mut self, id: MsgId) {
        self.touch();
        if self.gbcast_done.insert(id.clone()) {
            self.gbcast_done_order.push_back(id);
            if self.gbcast_done_order.len() > GBCAST_DONE_MAX {
                if let Some(old) = self.gbcast_done_order.pop_front() {
                    self.gbcast_done.remove(&old);
                }
            }
        }
    }

    /// The membership's part of applying `d` (after its group changes): the new process
    /// view; the round, if it is overtaken; the decision log; what this process knew of
    /// the processes `d` removes.
    pub(crate) fn commit(&mut self, config: &Config, decision: Arc<Decision>) {
        self.touch();
        debug_assert_eq!(decision.epoch, self.epoch + 1, "decisions are applied one epoch at a time");
        let d = decision.clone();
        self.epoch = d.epoch;
        self.members = d.members.clone();
        self.accepted = None;
        let stale = match &self.round {
            Round::Idle => false,
            Round::Preparing { epoch, .. } => *epoch <= d.epoch,
            Round::Accepting { decision, .. } => decision.epoch <= d.epoch,
        };
        if stale {
            self.round = Round::Idle;
        }
        self.log.push_back(decision);
        while self.log.len() > config.decision_log_max {
            self.log.pop_front();
        }
        for p in &d.removed {
            self.removed.insert(p.clone());
            self.suspects.remove(p);
            self.requests.remove(p);
            self.join_requests.remove(p);
        }
        for (p, _) in &d.members {
            self.join_requests.remove(p);
        }
    }

    /// The refusals of `d`: returns the groups whose join this process asked for and was
    /// refused (it hears `JoinRefused` of each).
    pub(crate) fn apply_refusals(&mut self, d: &Decision, me: &ProcessId) -> Vec<GroupName> {
        self.touch();
        let mut mine = Vec::new();
        let mut asked: BTreeSet<&GroupName> = BTreeSet::new();
        if d.refused.iter().any(|(g, p)| p == me && self.op_groups.contains_key(g)) {
            asked = self.ops.iter().filter_map(GroupOp::joins).collect();
        }
        for (g, p) in &d.refused {
            self.refused.insert((g.clone(), p.clone()));
            if p == me && asked.remove(g) {
                mine.push(g.clone());
            }
        }
        if !mine.is_empty() {
            let gone: BTreeSet<&GroupName> = mine.iter().collect();
            self.ops.retain(|o| o.joins().is_none_or(|g| !gone.contains(g)));
            self.ops_changed();
            self.requests_dirty = true;
        }
        mine
    }

    /// After a decision: forgets this process's requests that it satisfied (`member_of`:
    /// whether this process is now a member of a group).
    pub(crate) fn settle_requests(&mut self, me: &ProcessId, member_of: impl Fn(&GroupName) -> bool) {
        let before = (self.ops.len(), self.gbcasts.len());
        let views = &self.views;
        let inside = |g: &GroupName| views.get(g).is_some_and(|v| v.members.contains(me));
        self.forced_leaves.retain(|g| inside(g));
        self.ops.retain(|op| match op {
            GroupOp::Join(g) | GroupOp::JoinRunning(g) => !member_of(g),
            GroupOp::Leave(g) => inside(g),
        });
        let done = &self.gbcast_done;
        self.gbcasts.retain(|(_, _, m)| !done.contains(&m.id));
        if before != (self.ops.len(), self.gbcasts.len()) {
            self.ops_changed();
            self.requests_dirty = true;
        }
    }
}

/// A group change a decision implies (see [`Gms::apply_implied`]).
pub(crate) struct Implied {
    pub(crate) group: GroupName,
    pub(crate) old_view: ViewId,
    /// The old view's members, oldest first.
    pub(crate) old_members: Vec<ProcessId>,
    /// The new view: the old one without the processes the decision removed.
    pub(crate) view: GroupView,
}

impl Implied {
    /// The new view, taken (an empty one left).
    pub(crate) fn take_view(&mut self) -> GroupView {
        std::mem::replace(&mut self.view, GroupView { id: ViewId(0), members: Vec::new() })
    }

    /// The change as a decision would list it (its cut: the old members at 0); takes the
    /// views, leaves the name.
    pub(crate) fn take_change(&mut self) -> GroupChange {
        let cut = Cut {
            streams: std::mem::take(&mut self.old_members).into_iter().map(|m| (m, 0)).collect(),
            msgs: Vec::new(),
            order_base: 0,
            order: Vec::new(),
        };
        GroupChange {
            group: self.group.clone(),
            old_view: self.old_view,
            new_view: Some(self.take_view()),
            cut,
            gbcasts: Vec::new(),
            leavers: Vec::new(),
        }
    }
}

/// Which group views a decision changes without listing them, and how.
struct Implies<'a> {
    d: &'a Decision,
    listed: BTreeSet<&'a GroupName>,
}

impl<'a> Implies<'a> {
    fn of(d: &'a Decision) -> Self {
        Self { d, listed: d.groups.iter().map(|gc| &gc.group).collect() }
    }

    fn changes(&self, g: &GroupName, v: &GroupView) -> bool {
        v.members.iter().any(|m| self.d.removed.contains(m)) && !self.listed.contains(g)
    }

    fn next(&self, v: &GroupView) -> GroupView {
        let members = v.members.iter().filter(|m| !self.d.removed.contains(m)).cloned().collect();
        GroupView { id: ViewId(v.id.0 + 1), members }
    }
}

/// Whether a group change's new view starts a new lineage: nobody in it goes on from the
/// old view (every member of the old one failed or left).
fn starts_lineage(gc: &GroupChange, v: &GroupView) -> bool {
    !v.members.iter().any(|m| gc.cut.streams.iter().any(|(o, _)| o == m))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(name: &str) -> ProcessId {
        ProcessId::new(name, 1)
    }

    fn sent(out: &GmsOut, what: fn(&Msg) -> bool) -> Vec<&ProcessId> {
        out.sends.iter().filter(|(_, m)| what(m)).map(|(to, _)| to).collect()
    }

    /// A membership round, step by step, on a `Gms` alone: what the leader sends for a
    /// suspicion, and the decision it commits once a majority promised and accepted.
    #[test]
    fn a_leader_excludes_a_suspect_without_an_engine() {
        let config = Config::fast();
        let (a, b, c) = (p("a"), p("b"), p("c"));
        let mut gms = Gms::new(7);
        let three = Decision {
            epoch: 2,
            members: vec![(a.clone(), 1), (b.clone(), 1), (c.clone(), 1)],
            removed: vec![],
            groups: vec![],
            refused: vec![],
        };
        gms.install(Arc::new(three), &Snapshot { groups: vec![], lineages: vec![] });
        let mut timers = TimerTable::all_at(Instant::ZERO);
        let ctx = Ctx { me: &a, config: &config, now: Instant::ZERO };
        assert!(gms.suspect(c.clone()));
        assert!(gms.live_quorum(&config), "two of three go on");

        // Its requests go to every member first (itself too): no round before it read its own.
        let mut out = GmsOut::default();
        gms.drive(&ctx, &mut timers, false, false, &mut out);
        assert_eq!(sent(&out, |m| matches!(m, Msg::Requests(_))), [&a, &b, &c]);
        assert!(sent(&out, |m| matches!(m, Msg::Prepare { .. })).is_empty());
        let (_, mine) = out.sends.into_iter().find(|(to, _)| *to == a).expect("to itself");
        gms.handle(&ctx, &mut timers, &a, mine, &mut GmsOut::default());

        // Phase 1 to the members it does not suspect.
        let mut out = GmsOut::default();
        gms.drive(&ctx, &mut timers, false, false, &mut out);
        assert_eq!(out.rounds, 1);
        assert_eq!(gms.round_phase(), Some(RoundPhase::Prepare));
        assert_eq!(sent(&out, |m| matches!(m, Msg::Prepare { .. })), [&a, &b]);
        let Some((_, Msg::Prepare { ballot, epoch: 3, .. })) =
            out.sends.iter().find(|(_, m)| matches!(m, Msg::Prepare { .. })).cloned()
        else {
            panic!("a prepare for epoch 3");
        };
        for from in [&a, &b] {
            let promise = Msg::Promise { ballot: ballot.clone(), committed: 2, accepted: None, reports: Vec::new() };
            gms.handle(&ctx, &mut timers, from, promise, &mut GmsOut::default());
        }

        // Phase 2: the decision removes c.
        let mut out = GmsOut::default();
        gms.drive(&ctx, &mut timers, false, false, &mut out);
        assert_eq!(gms.round_phase(), Some(RoundPhase::Accept));
        let accepts: Vec<Arc<Decision>> = out
            .sends
            .iter()
            .filter_map(|(_, m)| match m {
                Msg::Accept { decision, .. } => Some(decision.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(accepts.len(), 2);
        assert_eq!(accepts[0].members, vec![(a.clone(), 1), (b.clone(), 1)]);
        assert_eq!(accepts[0].removed, vec![c.clone()]);

        // One acceptance is not a majority of three; two are.
        let accepted = |epoch| Msg::Accepted { ballot: ballot.clone(), epoch };
        gms.handle(&ctx, &mut timers, &a, accepted(3), &mut GmsOut::default());
        let mut out = GmsOut::default();
        gms.drive(&ctx, &mut timers, false, false, &mut out);
        assert!(out.commit.is_none());
        gms.handle(&ctx, &mut timers, &b, accepted(3), &mut GmsOut::default());
        let mut out = GmsOut::default();
        gms.drive(&ctx, &mut timers, false, false, &mut out);
        assert_eq!(sent(&out, |m| matches!(m, Msg::Commit { .. })), [&b, &c], "to the old members but itself");
        let (decision, _) = out.commit.expect("committed");
        assert_eq!(decision.epoch, 3);
        assert_eq!(gms.round_phase(), None);
        gms.commit(&config, decision);
        assert_eq!(gms.members().cloned().collect::<Vec<_>>(), [a.clone(), b.clone()]);
        assert!(gms.is_removed(&c) && !gms.is_suspect(&c));
    }
}
