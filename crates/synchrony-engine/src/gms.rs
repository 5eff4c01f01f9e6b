//! The membership service (GMS): the cluster's process view and every group view change,
//! decided one epoch at a time by the leader (the oldest member it does not suspect) with
//! the consent of a majority by weight of the previous process view.
//!
//! A round is single-decree Paxos per epoch, with the flush folded into phase 1:
//! `Prepare` (promise the ballot, freeze the listed groups, send flush reports) →
//! `Promise` → the leader computes the decision (new process view, new group views, one
//! cut per group) → `Accept` → `Accepted` from a majority → `Commit`. A leader that takes
//! over after a failure re-proposes any decision a member already accepted, so at most one
//! decision exists per epoch (G1, G10), whoever finishes the round.

use crate::engine::{Engine, Status};
use crate::event::{Event, PartitionReason};
use crate::group::{compute_cut, GroupState, JoinState, Out};
use crate::id::{Ballot, GroupName, MsgId, ProcessId, ViewId};
use crate::link::Link;
use crate::time::Instant;
use crate::wire::{Ctl, DataMsg, Decision, GroupChange, GroupOp, GroupView, Msg, Report, Snapshot};
use rand::Rng;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

/// A member's outstanding requests, as the leader holds them.
#[derive(Clone, Debug, Default)]
pub(crate) struct Requests {
    pub(crate) suspects: Vec<ProcessId>,
    pub(crate) ops: Vec<GroupOp>,
    pub(crate) gbcasts: Vec<(GroupName, ViewId, DataMsg)>,
    pub(crate) leave: bool,
    pub(crate) verdicts: Vec<(GroupName, ProcessId, bool)>,
    pub(crate) verifying: Vec<GroupName>,
    pub(crate) stalled: bool,
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
    groups: BTreeSet<GroupName>,
    refused: Vec<(GroupName, ProcessId)>,
    /// Some member's groups are frozen by a round that never ended (its leader lost the
    /// lead to an older member with nothing to change): a round must end it.
    resume: bool,
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

/// What a promise carries: an accepted decision, if any, and flush reports.
type PromiseBody = (Option<(Ballot, Arc<Decision>)>, Vec<Report>);

/// Membership state of one process.
pub(crate) struct Gms {
    pub(crate) epoch: u64,
    pub(crate) members: Vec<(ProcessId, u32)>,
    pub(crate) removed: BTreeSet<ProcessId>,
    promised: Option<Ballot>,
    accepted: Option<(Ballot, Arc<Decision>)>,
    log: VecDeque<Arc<Decision>>,
    pub(crate) suspects: BTreeSet<ProcessId>,
    max_round: u64,
    // This process's own requests.
    ops: Vec<GroupOp>,
    /// Gbcasts this process asked for, with the view of the group it knew then.
    pub(crate) gbcasts: Vec<(GroupName, ViewId, DataMsg)>,
    /// Per group, the first view of its current lineage: a gbcast asked of an older lineage
    /// (one whose members all failed or left) is never delivered in a newer one.
    pub(crate) lineage_start: BTreeMap<GroupName, ViewId>,
    pub(crate) leave: bool,
    pub(crate) requests_dirty: bool,
    requests_sent_epoch: u64,
    /// Since when a group of this process has been frozen for an epoch not decided yet.
    frozen_since: Option<Instant>,
    /// Whether the requests last sent said "stalled".
    stalled_sent: bool,
    // Leader state.
    round: Round,
    backoff_until: Instant,
    pub(crate) requests: BTreeMap<ProcessId, Requests>,
    /// Group joins refused by a verifier, while the joiner still asks.
    refused: BTreeSet<(GroupName, ProcessId)>,
    join_requests: BTreeMap<ProcessId, u32>,
    pub(crate) gbcast_done: BTreeSet<MsgId>,
    /// Groups this process must leave before it may join them again.
    pub(crate) forced_leaves: BTreeSet<GroupName>,
    gbcast_done_order: VecDeque<MsgId>,
}

impl Gms {
    pub(crate) fn new(now: Instant) -> Self {
        Self {
            epoch: 0,
            members: Vec::new(),
            removed: BTreeSet::new(),
            promised: None,
            accepted: None,
            log: VecDeque::new(),
            suspects: BTreeSet::new(),
            max_round: 0,
            ops: Vec::new(),
            gbcasts: Vec::new(),
            lineage_start: BTreeMap::new(),
            leave: false,
            requests_dirty: false,
            requests_sent_epoch: 0,
            frozen_since: None,
            stalled_sent: false,
            round: Round::Idle,
            backoff_until: now,
            requests: BTreeMap::new(),
            refused: BTreeSet::new(),
            join_requests: BTreeMap::new(),
            gbcast_done: BTreeSet::new(),
            forced_leaves: BTreeSet::new(),
            gbcast_done_order: VecDeque::new(),
        }
    }

    pub(crate) fn found(&mut self, me: &ProcessId, weight: u32) {
        self.epoch = 1;
        self.members = vec![(me.clone(), weight)];
    }

    /// This process must leave the group whatever it asks later (its state is lost).
    pub(crate) fn force_leave(&mut self, group: GroupName) {
        self.ops.retain(|o| o.joins() != Some(&group));
        self.request_op(GroupOp::Leave(group.clone()));
        self.forced_leaves.insert(group);
    }

    /// The phase of the round this process leads, if any: "prepare" or "accept".
    pub(crate) fn round_phase(&self) -> Option<&'static str> {
        match self.round {
            Round::Idle => None,
            Round::Preparing { .. } => Some("prepare"),
            Round::Accepting { .. } => Some("accept"),
        }
    }

    /// The round and the promised ballot, for debug dumps.
    pub(crate) fn debug_round(&self) -> String {
        let round = match &self.round {
            Round::Idle => "idle".to_string(),
            Round::Preparing { ballot, epoch, waiting, promises, .. } => format!(
                "preparing {ballot:?} epoch {epoch} waiting {waiting:?} promised by {:?}",
                promises.keys().collect::<Vec<_>>()
            ),
            Round::Accepting { ballot, accepted, .. } => format!("accepting {ballot:?} accepted by {accepted:?}"),
        };
        format!("{round}; promised {:?}; max round {}", self.promised, self.max_round)
    }

    pub(crate) fn leader(&self) -> Option<&ProcessId> {
        self.members.iter().map(|(p, _)| p).find(|p| !self.suspects.contains(*p))
    }

    pub(crate) fn request_op(&mut self, op: GroupOp) {
        // The last request about a group replaces the others, but a forced leave (state
        // lost) stands: a join then follows it.
        let forced = op.joins().is_some_and(|g| self.forced_leaves.contains(g));
        if !forced {
            self.ops.retain(|o| o.group() != op.group() || *o == op);
        }
        if !self.ops.contains(&op) {
            self.ops.push(op);
        }
        self.requests_dirty = true;
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
            let n = ps.clone().filter(|p| self.members.iter().any(|(m, _)| m == *p)).count();
            return 2 * n > self.members.len();
        }
        let w = self.weight_of(ps);
        2 * w > total && w >= min_commit as u64
    }

    fn remember_gbcast(&mut self, id: MsgId) {
        if self.gbcast_done.insert(id.clone()) {
            self.gbcast_done_order.push_back(id);
            if self.gbcast_done_order.len() > 65536 {
                if let Some(old) = self.gbcast_done_order.pop_front() {
                    self.gbcast_done.remove(&old);
                }
            }
        }
    }
}

impl Engine {
    pub(crate) fn on_join_cluster(&mut self, _now: Instant, from: &ProcessId, weight: u32) {
        if self.status != Status::Member {
            return;
        }
        if self.gms.members.iter().any(|(p, _)| p == from) {
            // It is in, but missed its commit (its leader failed): send the latest again.
            if let Some(d) = self.gms.log.back().cloned() {
                let snapshot = Some(Arc::new(self.snapshot()));
                self.send_to(from, Msg::Commit { decision: d, snapshot });
            }
            return;
        }
        match self.gms.leader().cloned() {
            Some(l) if l == self.me => {
                self.gms.join_requests.insert(from.clone(), weight);
            }
            Some(l) => {
                self.send_to(&l, Msg::JoinRequest { who: from.clone(), weight });
                self.ctl_queue(from, Ctl::Redirect { leader: l });
            }
            None => {}
        }
    }

    fn ctl_queue(&mut self, to: &ProcessId, ctl: Ctl) {
        // Control messages ride in the next frame to that peer.
        self.ctl_out.entry(to.clone()).or_default().push(ctl);
    }

    fn snapshot(&self) -> Snapshot {
        Snapshot {
            groups: self.views.iter().map(|(n, v)| (n.clone(), v.clone())).collect(),
            lineages: self.gms.lineage_start.iter().map(|(g, v)| (g.clone(), *v)).collect(),
        }
    }

    /// Suspects silent members; stops when the majority is out of reach.
    pub(crate) fn detect_failures(&mut self, now: Instant) {
        if self.deaf_since.is_some() {
            return; // not reading: no silence to judge (see `Engine::handle_listening`)
        }
        let members: Vec<ProcessId> = self.gms.members.iter().map(|(p, _)| p.clone()).collect();
        let config = self.config.clone();
        for p in members {
            if p == self.me || self.gms.suspects.contains(&p) {
                continue;
            }
            let link = self.links.entry(p.clone()).or_insert_with(|| Link::new(&config));
            let last = *link.last_heard.get_or_insert(now);
            if now - last > link.failure_timeout(&config) {
                tracing::info!(me = %self.me, suspect = %p, "suspecting a silent member");
                self.gms.suspects.insert(p);
                self.gms.requests_dirty = true;
            }
        }
        self.check_majority();
    }

    fn check_majority(&mut self) {
        let alive: Vec<ProcessId> =
            self.gms.members.iter().map(|(p, _)| p).filter(|p| !self.gms.suspects.contains(*p)).cloned().collect();
        if !self.gms.quorum(alive.iter(), self.config.min_commit_weight) {
            self.stop(PartitionReason::LostMajority);
        }
    }

    /// The member called `name`, other than this process.
    pub(crate) fn gms_member_named(&self, name: &str) -> Option<ProcessId> {
        self.gms.members.iter().map(|(p, _)| p).find(|p| &*p.name == name && **p != self.me).cloned()
    }

    /// Suspects `p` on the runtime's word (its connection is gone).
    pub(crate) fn suspect(&mut self, p: ProcessId) {
        if self.gms.suspects.insert(p.clone()) {
            tracing::info!(me = %self.me, suspect = %p, "suspecting an unreachable member");
            self.gms.requests_dirty = true;
            self.check_majority();
        }
    }

    pub(crate) fn on_gms(&mut self, now: Instant, from: &ProcessId, msg: Msg) {
        match msg {
            Msg::JoinRequest { who, weight }
                if self.gms.leader() == Some(&self.me) && !self.gms.removed.contains(&who) =>
            {
                self.gms.join_requests.insert(who, weight);
            }
            Msg::Requests { suspects, ops, gbcasts, leave, verdicts, verifying, stalled } => {
                // A refusal is remembered until the joiner stops asking.
                self.gms.refused.retain(|(g, p)| p != from || ops.iter().any(|o| o.joins() == Some(g)));
                let r = Requests { suspects, ops, gbcasts, leave, verdicts, verifying, stalled };
                self.gms.requests.insert(from.clone(), r);
            }
            Msg::Prepare { ballot, epoch, groups } => self.on_prepare(from, ballot, epoch, groups),
            Msg::Promise { ballot, committed, accepted, reports } => {
                self.on_promise(from, ballot, committed, accepted, reports)
            }
            Msg::Nack { promised } => {
                self.gms.max_round = self.gms.max_round.max(promised.round);
                if !matches!(self.gms.round, Round::Idle) {
                    self.gms.round = Round::Idle;
                    let jitter = self.rng.gen_range(0..=self.config.failure_timeout.as_micros() as u64 / 2);
                    self.gms.backoff_until = now + std::time::Duration::from_micros(jitter);
                }
            }
            Msg::Accept { ballot, decision } => {
                if self.gms.promised.as_ref().is_some_and(|p| *p > ballot) {
                    let promised = self.gms.promised.clone().expect("checked");
                    self.send_to(from, Msg::Nack { promised });
                    return;
                }
                if decision.epoch != self.gms.epoch + 1 {
                    return;
                }
                self.gms.max_round = self.gms.max_round.max(ballot.round);
                self.gms.promised = Some(ballot.clone());
                let epoch = decision.epoch;
                self.gms.accepted = Some((ballot.clone(), decision));
                self.send_to(from, Msg::Accepted { ballot, epoch });
            }
            Msg::Accepted { ballot, epoch } => {
                if let Round::Accepting { ballot: b, decision, accepted, .. } = &mut self.gms.round {
                    if *b == ballot && decision.epoch == epoch {
                        accepted.insert(from.clone());
                    }
                }
            }
            Msg::Commit { decision, snapshot } => self.apply_decision(now, decision, snapshot),
            _ => {}
        }
    }

    fn on_prepare(&mut self, from: &ProcessId, ballot: Ballot, epoch: u64, groups: Vec<GroupName>) {
        if self.status != Status::Member {
            return;
        }
        if epoch <= self.gms.epoch {
            // The proposer is behind: send it what it missed.
            let missing: Vec<Arc<Decision>> = self.gms.log.iter().filter(|d| d.epoch >= epoch).cloned().collect();
            for d in missing {
                self.send_to(from, Msg::Commit { decision: d, snapshot: None });
            }
            return;
        }
        if self.gms.promised.as_ref().is_some_and(|p| *p > ballot) {
            let promised = self.gms.promised.clone().expect("checked");
            self.send_to(from, Msg::Nack { promised });
            return;
        }
        self.gms.max_round = self.gms.max_round.max(ballot.round);
        self.gms.promised = Some(ballot.clone());
        let committed = self.gms.epoch;
        if epoch > committed + 1 {
            // Behind: the leader will send the missing commits and ask again.
            self.send_to(from, Msg::Promise { ballot, committed, accepted: None, reports: Vec::new() });
            return;
        }
        let mut reports = Vec::new();
        for g in &groups {
            if let Some(gs) = self.groups.get_mut(g) {
                gs.frozen = Some(epoch);
                reports.push(gs.report());
            }
        }
        let accepted = self.gms.accepted.clone().filter(|(_, d)| d.epoch == epoch);
        self.send_to(from, Msg::Promise { ballot, committed, accepted, reports });
    }

    fn on_promise(
        &mut self,
        from: &ProcessId,
        ballot: Ballot,
        committed: u64,
        accepted: Option<(Ballot, Arc<Decision>)>,
        reports: Vec<Report>,
    ) {
        let my_epoch = self.gms.epoch;
        let Round::Preparing { ballot: b, epoch, promises, waiting, .. } = &mut self.gms.round else {
            return;
        };
        if *b != ballot || !waiting.contains(from) {
            return;
        }
        if committed + 1 < *epoch {
            // Bring it up to date, then ask again (FIFO links keep the order).
            let (e, g) = (*epoch, self.prepare_groups());
            let missing: Vec<Arc<Decision>> =
                self.gms.log.iter().filter(|d| d.epoch > committed && d.epoch <= my_epoch).cloned().collect();
            if missing.first().is_none_or(|d| d.epoch != committed + 1) {
                // Too far behind to catch up: it will be excluded as it cannot follow.
                self.gms.suspects.insert(from.clone());
                return;
            }
            for d in missing {
                self.send_to(from, Msg::Commit { decision: d, snapshot: None });
            }
            self.send_to(from, Msg::Prepare { ballot, epoch: e, groups: g });
            return;
        }
        promises.insert(from.clone(), (accepted, reports));
    }

    /// Sends the prepare again to members that have not promised for a while: one that
    /// was still joining when it came (its commit, from a leader that crashed, arrived
    /// late) dropped it, and would otherwise hold the round forever.
    fn prepare_again(&mut self, now: Instant) {
        let patience = self.config.failure_timeout / 2;
        let groups = self.prepare_groups();
        let Round::Preparing { ballot, epoch, waiting, promises, sent_at, .. } = &mut self.gms.round else { return };
        if now.saturating_since(*sent_at) < patience {
            return;
        }
        *sent_at = now;
        let (ballot, epoch) = (ballot.clone(), *epoch);
        let late: Vec<ProcessId> = waiting.iter().filter(|p| !promises.contains_key(*p)).cloned().collect();
        for p in late {
            self.send_to(&p, Msg::Prepare { ballot: ballot.clone(), epoch, groups: groups.clone() });
        }
    }

    fn prepare_groups(&self) -> Vec<GroupName> {
        match &self.gms.round {
            Round::Preparing { plan, .. } => plan.groups.iter().cloned().collect(),
            _ => Vec::new(),
        }
    }

    /// The suspicions the leader acts on: its own, and those of members it trusts that do
    /// not suspect a majority (those will stop by themselves). Members are heard oldest
    /// first, and an excluded member's suspicions are ignored: two members that suspect each
    /// other (a link cut between them) lose only the younger, not both (which could cost the
    /// majority and stall every round).
    fn effective_suspects(&self) -> BTreeSet<ProcessId> {
        let mut s = self.gms.suspects.clone();
        let n = self.gms.members.len();
        for (p, _) in &self.gms.members {
            if s.contains(p) {
                continue;
            }
            let Some(r) = self.gms.requests.get(p) else { continue };
            if 2 * r.suspects.len() >= n {
                continue;
            }
            if r.suspects.contains(&self.me) {
                // It cannot hear its leader, so it cannot take part in a view change.
                s.insert(p.clone());
            } else {
                s.extend(r.suspects.iter().cloned());
            }
        }
        s.retain(|p| self.gms.members.iter().any(|(m, _)| m == p));
        s
    }

    fn plan(&self) -> Plan {
        let mut plan = Plan { failed: self.effective_suspects(), ..Plan::default() };
        let member = |p: &ProcessId| self.gms.members.iter().any(|(m, _)| m == p);
        for (p, r) in &self.gms.requests {
            if !member(p) || plan.failed.contains(p) {
                continue;
            }
            if r.leave {
                plan.leaving.insert(p.clone());
            }
            plan.resume |= r.stalled;
            for op in &r.ops {
                match op {
                    GroupOp::JoinRunning(g) if !self.views.get(g).is_some_and(|v| v.members.contains(p)) => {
                        if !r.leave && self.goes_on(g, &plan.failed) {
                            plan.group_joins.entry(g.clone()).or_default().push(p.clone());
                        } else if !r.leave && !self.gms.refused.contains(&(g.clone(), p.clone())) {
                            plan.refused.push((g.clone(), p.clone()));
                        }
                    }
                    GroupOp::JoinRunning(_) => {}
                    GroupOp::Join(g) => {
                        let inside = self.views.get(g).is_some_and(|v| v.members.contains(p));
                        if !inside && !r.leave {
                            match self.admission(g, p) {
                                Some(true) => plan.group_joins.entry(g.clone()).or_default().push(p.clone()),
                                Some(false) if !self.gms.refused.contains(&(g.clone(), p.clone())) => {
                                    plan.refused.push((g.clone(), p.clone()))
                                }
                                _ => {} // a verifier has not answered yet, or refused already
                            }
                        }
                    }
                    GroupOp::Leave(g) => {
                        if self.views.get(g).is_some_and(|v| v.members.contains(p)) {
                            plan.group_leaves.entry(g.clone()).or_default().insert(p.clone());
                        }
                    }
                }
            }
            for (g, asked_in, m) in &r.gbcasts {
                let lineage = self.gms.lineage_start.get(g).copied().unwrap_or(ViewId(0));
                if !self.gms.gbcast_done.contains(&m.id)
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
        for (p, w) in &self.gms.join_requests {
            if !member(p) && !self.gms.removed.contains(p) {
                plan.joins.push((p.clone(), *w));
            }
        }
        let gone: BTreeSet<&ProcessId> = plan.failed.iter().chain(plan.leaving.iter()).collect();
        for (g, v) in &self.views {
            if v.members.iter().any(|m| gone.contains(m)) {
                plan.groups.insert(g.clone());
            }
        }
        plan.groups.extend(plan.group_joins.keys().cloned());
        plan.groups.extend(plan.group_leaves.keys().cloned());
        plan.groups.extend(plan.gbcasts.keys().cloned());
        plan
    }

    /// Whether a member of `group` stays in it through a round where `failed` go: one that
    /// neither failed nor asks to leave the cluster or the group (a joiner that asked to
    /// join only a running group gets its state from such a member).
    fn goes_on(&self, group: &GroupName, failed: &BTreeSet<ProcessId>) -> bool {
        let leaves = |m: &ProcessId| {
            self.gms
                .requests
                .get(m)
                .is_some_and(|r| r.leave || r.ops.iter().any(|o| matches!(o, GroupOp::Leave(g) if g == group)))
        };
        self.views.get(group).is_some_and(|v| v.members.iter().any(|m| !failed.contains(m) && !leaves(m)))
    }

    fn plan_is_empty(plan: &Plan) -> bool {
        plan.failed.is_empty()
            && plan.leaving.is_empty()
            && plan.joins.is_empty()
            && plan.groups.is_empty()
            && plan.refused.is_empty()
            && !plan.resume
    }

    /// Whether `p` may join `g`: `Some(true)` when every member of `g` that verifies joins
    /// admitted it (or none verifies), `Some(false)` when one refused, `None` while a
    /// verdict is missing.
    fn admission(&self, g: &GroupName, p: &ProcessId) -> Option<bool> {
        let Some(view) = self.views.get(g) else { return Some(true) };
        let mut all = true;
        for m in &view.members {
            let Some(r) = self.gms.requests.get(m).filter(|r| r.verifying.contains(g)) else { continue };
            match r.verdicts.iter().find(|(vg, vp, _)| vg == g && vp == p) {
                Some((_, _, false)) => return Some(false),
                Some(_) => {}
                None => all = false,
            }
        }
        all.then_some(true)
    }

    /// The groups this process is in and verifies joins for.
    fn verifying(&self) -> Vec<GroupName> {
        let me = &self.me;
        self.verifiers
            .join
            .keys()
            .filter(|g| self.views.get(*g).is_some_and(|v| v.members.contains(me)))
            .cloned()
            .collect()
    }

    /// Runs this process's join verifiers on the joins others ask for, and forgets verdicts
    /// on joins no longer asked for.
    fn judge_joins(&mut self) {
        if self.verifiers.join.is_empty() && self.verifiers.verdicts.is_empty() {
            return;
        }
        let mine = self.verifying();
        let mut wanted: BTreeSet<(GroupName, ProcessId)> = BTreeSet::new();
        for (p, r) in &self.gms.requests {
            for op in &r.ops {
                if let Some(g) = op.joins() {
                    if mine.contains(g) && !self.views.get(g).is_some_and(|v| v.members.contains(p)) {
                        wanted.insert((g.clone(), p.clone()));
                    }
                }
            }
        }
        let before = self.verifiers.verdicts.len();
        self.verifiers.verdicts.retain(|k, _| wanted.contains(k));
        let mut changed = before != self.verifiers.verdicts.len();
        for (g, p) in wanted {
            if !self.verifiers.verdicts.contains_key(&(g.clone(), p.clone())) {
                let ok = self.verifiers.join.get(&g).is_none_or(|f| f(&p));
                if !ok {
                    tracing::warn!(me = %self.me, group = %g, joiner = %p, "join verifier refused a join");
                }
                self.verifiers.verdicts.insert((g, p), ok);
                changed = true;
            }
        }
        if changed {
            self.gms.requests_dirty = true;
        }
    }

    /// The leader's side of rounds, and every member's request forwarding.
    pub(crate) fn gms_drive(&mut self, now: Instant) {
        if self.status != Status::Member {
            return;
        }
        // Requests go to every member whenever they change or the membership does: whoever
        // leads (even one this process cannot hear) has them.
        let leader = self.gms.leader().cloned();
        self.judge_joins();
        let epoch = self.gms.epoch;
        if self.groups.values().any(|g| g.frozen.is_some_and(|e| e > epoch)) {
            self.gms.frozen_since.get_or_insert(now);
        } else {
            self.gms.frozen_since = None;
        }
        let stalled = self.gms.frozen_since.is_some_and(|t| now.saturating_since(t) >= self.config.failure_timeout);
        if stalled != self.gms.stalled_sent {
            self.gms.requests_dirty = true;
        }
        if self.gms.requests_dirty || self.gms.requests_sent_epoch != self.gms.epoch {
            self.gms.stalled_sent = stalled;
            self.gms.requests_dirty = false;
            self.gms.requests_sent_epoch = self.gms.epoch;
            let msg = Msg::Requests {
                suspects: self.gms.suspects.iter().cloned().collect(),
                ops: self.gms.ops.clone(),
                gbcasts: self.gms.gbcasts.clone(),
                leave: self.gms.leave,
                verdicts: self.verifiers.verdicts.iter().map(|((g, p), ok)| (g.clone(), p.clone(), *ok)).collect(),
                verifying: self.verifying(),
                stalled,
            };
            let members: Vec<ProcessId> = self.gms.members.iter().map(|(p, _)| p.clone()).collect();
            for p in members {
                self.send_to(&p, msg.clone());
            }
        }
        if leader.as_ref() != Some(&self.me) {
            self.gms.round = Round::Idle;
            return;
        }
        match &self.gms.round {
            Round::Idle => {
                if now < self.gms.backoff_until || !self.local.is_empty() {
                    return;
                }
                let mut plan = self.plan();
                plan.resume |= stalled;
                if Self::plan_is_empty(&plan) {
                    return;
                }
                let alive = self.gms.members.iter().map(|(p, _)| p).filter(|p| !plan.failed.contains(*p));
                if !self.gms.quorum(alive, self.config.min_commit_weight) {
                    // Too many members suspect this process (or each other) for it to win a
                    // round: it would only outbid, round after round, a leader that can.
                    let jitter = self.rng.gen_range(0..=self.config.failure_timeout.as_micros() as u64 / 2);
                    self.gms.backoff_until = now + std::time::Duration::from_micros(jitter);
                    return;
                }
                self.gms.max_round += 1;
                let ballot = Ballot { round: self.gms.max_round, leader: self.me.clone() };
                let epoch = self.gms.epoch + 1;
                let waiting: BTreeSet<ProcessId> =
                    self.gms.members.iter().map(|(p, _)| p).filter(|p| !plan.failed.contains(*p)).cloned().collect();
                let groups: Vec<GroupName> = plan.groups.iter().cloned().collect();
                self.stats.rounds += 1;
                tracing::debug!(me = %self.me, epoch, ?plan.failed, joins = plan.joins.len(), groups = groups.len(), "starting a membership round");
                for p in waiting.clone() {
                    self.send_to(&p, Msg::Prepare { ballot: ballot.clone(), epoch, groups: groups.clone() });
                }
                self.gms.round = Round::Preparing {
                    ballot,
                    epoch,
                    plan: Box::new(plan),
                    waiting,
                    promises: BTreeMap::new(),
                    sent_at: now,
                };
            }
            Round::Preparing { waiting, promises, plan, .. } => {
                let now_failed = self.effective_suspects();
                if waiting.iter().any(|p| now_failed.contains(p)) || now_failed.iter().any(|p| !plan.failed.contains(p))
                {
                    self.gms.round = Round::Idle; // restart with the new suspicions
                    return;
                }
                if promises.len() < waiting.len() {
                    self.prepare_again(now);
                    return;
                }
                self.decide();
            }
            Round::Accepting { accepted, decision, sent_to, .. } => {
                let now_failed = self.effective_suspects();
                let reachable = sent_to.iter().filter(|p| !now_failed.contains(*p));
                if !self.gms.quorum(reachable, self.config.min_commit_weight) {
                    self.gms.round = Round::Idle;
                    return;
                }
                if !self.gms.quorum(accepted.iter(), self.config.min_commit_weight) {
                    return;
                }
                let decision = decision.clone();
                let snapshot_needed: Vec<ProcessId> = decision
                    .members
                    .iter()
                    .map(|(p, _)| p)
                    .filter(|p| !self.gms.members.iter().any(|(m, _)| m == *p))
                    .cloned()
                    .collect();
                let olds: Vec<ProcessId> =
                    self.gms.members.iter().map(|(p, _)| p.clone()).filter(|p| *p != self.me).collect();
                for p in olds {
                    self.send_to(&p, Msg::Commit { decision: decision.clone(), snapshot: None });
                }
                if !snapshot_needed.is_empty() {
                    let mut views = self.views.clone();
                    for gc in &decision.groups {
                        if let Some(v) = &gc.new_view {
                            views.insert(gc.group.clone(), v.clone());
                        }
                    }
                    let mut lineages = self.gms.lineage_start.clone();
                    for gc in &decision.groups {
                        if let Some(v) = gc
                            .new_view
                            .as_ref()
                            .filter(|v| !v.members.iter().any(|m| gc.cut.streams.iter().any(|(o, _)| o == m)))
                        {
                            lineages.insert(gc.group.clone(), v.id);
                        }
                    }
                    let snap = Arc::new(Snapshot {
                        groups: views.into_iter().collect(),
                        lineages: lineages.into_iter().collect(),
                    });
                    for p in snapshot_needed {
                        self.send_to(&p, Msg::Commit { decision: decision.clone(), snapshot: Some(snap.clone()) });
                    }
                }
                self.gms.round = Round::Idle;
                self.apply_decision(now, decision, None);
            }
        }
    }

    /// Phase 1 is complete: re-propose an accepted decision, or compute a new one.
    fn decide(&mut self) {
        let Round::Preparing { ballot, epoch, plan, promises, .. } =
            std::mem::replace(&mut self.gms.round, Round::Idle)
        else {
            return;
        };
        if !self.gms.quorum(promises.keys(), self.config.min_commit_weight) {
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
            self.send_to(p, Msg::Accept { ballot: ballot.clone(), decision: decision.clone() });
        }
        self.gms.round = Round::Accepting { ballot, decision, sent_to, accepted: BTreeSet::new() };
    }

    fn compute_decision(&self, epoch: u64, plan: &Plan, promises: &BTreeMap<ProcessId, PromiseBody>) -> Decision {
        let gone: BTreeSet<&ProcessId> = plan.failed.iter().chain(plan.leaving.iter()).collect();
        let mut members: Vec<(ProcessId, u32)> =
            self.gms.members.iter().filter(|(p, _)| !gone.contains(p)).cloned().collect();
        members.extend(plan.joins.iter().cloned());
        let mut groups = Vec::new();
        for g in &plan.groups {
            let old = self.views.get(g).cloned().unwrap_or(GroupView { id: ViewId(0), members: Vec::new() });
            let reports: Vec<&Report> = old
                .members
                .iter()
                .filter(|m| !plan.failed.contains(*m))
                .filter_map(|m| promises.get(m))
                .flat_map(|(_, rs)| rs.iter().filter(|r| r.group == *g && r.view == old.id))
                .collect();
            let cut = compute_cut(&old, &reports);
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

    /// Applies a committed decision: cuts, gbcasts, new views, the new process view.
    pub(crate) fn apply_decision(&mut self, now: Instant, decision: Arc<Decision>, snapshot: Option<Arc<Snapshot>>) {
        if self.status == Status::Joining {
            let Some(snap) = snapshot else { return };
            if !decision.members.iter().any(|(p, _)| *p == self.me) {
                return;
            }
            self.gms.epoch = decision.epoch;
            self.gms.members = decision.members.clone();
            self.gms.removed.extend(decision.removed.iter().cloned());
            self.views = snap.groups.iter().cloned().collect();
            self.gms.lineage_start = snap.lineages.iter().cloned().collect();
            self.gms.log.push_back(decision);
            self.status = Status::Member;
            self.gms.requests_dirty = true;
            self.push_event(Event::Joined);
            tracing::info!(me = %self.me, "joined the cluster");
            return;
        }
        if self.status != Status::Member || decision.epoch != self.gms.epoch + 1 {
            return;
        }
        let d = decision.clone();
        let mut touched = Vec::new();
        for gc in &d.groups {
            self.apply_group_change(now, gc);
            touched.push(gc.group.clone());
            for m in &gc.gbcasts {
                self.gms.remember_gbcast(m.id.clone());
            }
        }
        self.gms.epoch = d.epoch;
        self.gms.members = d.members.clone();
        self.gms.accepted = None;
        let stale = match &self.gms.round {
            Round::Idle => false,
            Round::Preparing { epoch, .. } => *epoch <= d.epoch,
            Round::Accepting { decision, .. } => decision.epoch <= d.epoch,
        };
        if stale {
            self.gms.round = Round::Idle;
        }
        self.gms.log.push_back(decision);
        while self.gms.log.len() > self.config.decision_log_max {
            self.gms.log.pop_front();
        }
        for p in &d.removed {
            self.gms.removed.insert(p.clone());
            self.gms.suspects.remove(p);
            self.gms.requests.remove(p);
            self.gms.join_requests.remove(p);
            self.forget(p);
        }
        for (p, _) in &d.members {
            self.gms.join_requests.remove(p);
            if *p != self.me {
                let config = &self.config;
                let link = self.links.entry(p.clone()).or_insert_with(|| Link::new(config));
                link.last_heard.get_or_insert(now);
            }
        }
        // Groups frozen for this epoch that the decision did not touch go on; so do groups
        // whose held gbcast was delivered (possibly before this process joined them).
        let done = &self.gms.gbcast_done;
        let frozen: Vec<(GroupName, bool)> = self
            .groups
            .iter()
            .map(|(n, g)| {
                (n, g.frozen.is_some_and(|e| e <= d.epoch), g.hold.as_ref().is_some_and(|h| done.contains(h)))
            })
            .filter(|(_, frozen, hold_done)| *frozen || *hold_done)
            .map(|(n, _, hold_done)| (n.clone(), hold_done))
            .collect();
        for (g, hold_done) in frozen {
            self.with_group(&g, |gs, out| {
                if hold_done {
                    gs.hold = None;
                }
                if gs.frozen.is_some_and(|e| e <= d.epoch) {
                    gs.unfreeze(out);
                } else {
                    gs.release_queued(out);
                    gs.try_deliver(out);
                }
            });
        }
        for (g, p) in &d.refused {
            self.gms.refused.insert((g.clone(), p.clone()));
            if *p == self.me && self.gms.ops.iter().any(|o| o.joins() == Some(g)) {
                self.gms.ops.retain(|o| o.joins() != Some(g));
                self.gms.requests_dirty = true;
                self.push_event(Event::JoinRefused { group: g.clone() });
            }
        }
        // Requests now satisfied.
        let before = (self.gms.ops.len(), self.gms.gbcasts.len());
        let (groups, views, me) = (&self.groups, &self.views, &self.me);
        let inside = |g: &GroupName| views.get(g).is_some_and(|v| v.members.contains(me));
        self.gms.forced_leaves.retain(|g| inside(g));
        self.gms.ops.retain(|op| match op {
            GroupOp::Join(g) | GroupOp::JoinRunning(g) => !groups.contains_key(g),
            GroupOp::Leave(g) => inside(g),
        });
        let done = &self.gms.gbcast_done;
        self.gms.gbcasts.retain(|(_, _, m)| !done.contains(&m.id));
        if before != (self.gms.ops.len(), self.gms.gbcasts.len()) {
            self.gms.requests_dirty = true;
        }
        self.outbox_decided();
        for g in touched {
            self.replay_future(now, &g);
        }
        if !d.members.iter().any(|(p, _)| *p == self.me) {
            if self.gms.leave {
                self.status = Status::Left;
            } else {
                self.stop(PartitionReason::Excluded);
            }
        }
    }

    fn apply_group_change(&mut self, _now: Instant, gc: &GroupChange) {
        let g = &gc.group;
        let me = self.me.clone();
        let was_member = self.groups.get(g).is_some_and(|s| s.view.id == gc.old_view);
        // An emptied group keeps its last (empty) view, so that a group created again
        // under the same name goes on numbering its views (G1).
        if let Some(v) = &gc.new_view {
            self.views.insert(g.clone(), v.clone());
            if !v.members.iter().any(|m| gc.cut.streams.iter().any(|(o, _)| o == m)) {
                // No member goes on from the old view: the group starts over with no state.
                self.gms.lineage_start.insert(g.clone(), v.id);
                self.outbox_lineage_died(g);
            }
        }
        if was_member {
            let mut out = Out::default();
            let gs = self.groups.get_mut(g).expect("member");
            let missing = gs.apply_cut(&gc.cut, &gc.gbcasts, &mut out);
            if missing > 0 {
                self.stats.cut_anomalies += missing as u64;
                tracing::error!(me = %self.me, group = %g, missing, "cut not fully delivered");
            }
            match &gc.new_view {
                None => {
                    gs.next_epoch(&mut out);
                    self.absorb(g, out);
                }
                Some(v) if v.members.contains(&me) => {
                    self.absorb(g, out);
                    let old = self.groups.remove(g).expect("member");
                    let joiners: Vec<ProcessId> =
                        v.members.iter().filter(|m| !old.view.members.contains(m)).cloned().collect();
                    let mut next = old.succeed(v.clone(), &me);
                    next.epoch = 0;
                    self.groups.insert(g.clone(), next);
                    if !joiners.is_empty() {
                        self.expect_checkpoint(g, v.id, joiners);
                    }
                    self.stats.views += 1;
                    self.push_event(Event::View { group: g.clone(), view: v.clone() });
                    self.transfer_view_changed(g);
                    self.queries_view_changed(g);
                    self.with_group(g, |gs, out| {
                        gs.release_queued(out);
                        gs.try_deliver(out);
                    });
                }
                Some(_) => {
                    self.absorb(g, out);
                    let old = self.groups.remove(g);
                    if let Some(hold) = old.as_ref().and_then(|o| o.hold.clone()) {
                        // Its gbcast is still on the way: as a non-member now, later sends
                        // to the group wait for it all the same (G5).
                        self.outbox_adopt_gbcast(g, &hold);
                    }
                    if old.is_some_and(|o| matches!(o.join, JoinState::Waiting { .. })) {
                        // It leaves before its state came: what it held was never its to see.
                        self.drop_gate(g);
                    }
                    self.fail_queries_of(g);
                    self.push_event(Event::Left { group: g.clone() });
                }
            }
        } else if let Some(v) =
            gc.new_view.as_ref().filter(|v| v.members.contains(&me) && !self.gms.forced_leaves.contains(g))
        {
            // (A process whose state was lost stays out until its forced leave is decided:
            // it has nothing to continue the group with.)
            // Joining: the view now, the state when a provider sends it.
            let providers: Vec<ProcessId> = v
                .members
                .iter()
                .filter(|m| {
                    **m != me
                        && gc.old_view.0 > 0
                        && !gc.cut.streams.is_empty()
                        && gc.cut.streams.iter().any(|(o, _)| o == *m)
                })
                .cloned()
                .collect();
            let mut gs = GroupState::new(g.clone(), v.clone(), &me);
            if !providers.is_empty() {
                gs.join =
                    JoinState::Waiting { view: v.id, providers, idx: 0, buf: Vec::new(), total: 0, retry_at: None };
                gs.unchecked = Some(Default::default());
            }
            let waiting = matches!(gs.join, JoinState::Waiting { .. });
            self.groups.insert(g.clone(), gs);
            self.stats.views += 1;
            self.push_event(Event::View { group: g.clone(), view: v.clone() });
            if waiting {
                self.gate(g);
                self.start_fetch(g);
            }
            self.outbox_to_stream(g);
        } else if gc.new_view.is_some() {
            self.queries_view_changed(g);
        }
    }
}
