//! The engine: one process's whole part in the protocol, driven by `handle_*` inputs and
//! drained by `poll_*` outputs.

use crate::config::Config;
use crate::event::*;
use crate::gms::Gms;
use crate::group::{Checkpoint, GroupState, JoinState, Out, Queued, StateBytes};
use crate::id::{GroupName, MsgId, ProcessId, ViewId};
use crate::link::Link;
use crate::order::Order;
use crate::time::Instant;
use crate::wire::{self, Ctl, DecodeError, GroupView, Msg, Packet};
use bytes::Bytes;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

/// Where this process stands in the cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Asking contacts to let it in.
    Joining,
    /// A member of the cluster.
    Member,
    /// Stopped: excluded or cut off from the majority (G10).
    Partitioned,
    /// Left the cluster voluntarily.
    Left,
}

pub(crate) struct QueryState {
    pub(crate) group: GroupName,
    pub(crate) wanted: usize,
    pub(crate) expected: Option<BTreeSet<ProcessId>>,
    pub(crate) replies: Vec<(ProcessId, Bytes)>,
    pub(crate) nulls: BTreeSet<ProcessId>,
    pub(crate) failed: BTreeSet<ProcessId>,
}

/// Events held back per group: while a joiner waits for its state, and while the
/// application has not answered a state request.
#[derive(Default)]
pub(crate) struct Gate {
    count: usize,
    held: VecDeque<Event>,
}

/// One process's virtual synchrony engine. Sans-IO: it never touches a socket, a clock or
/// a thread. Feed it packets, commands and timeouts with the current time; after every
/// call drain [`Engine::poll_transmit`], then [`Engine::poll_event`], and sleep until
/// [`Engine::poll_timeout`].
pub struct Engine {
    pub(crate) config: Config,
    pub(crate) me: ProcessId,
    pub(crate) rng: ChaCha8Rng,
    pub(crate) status: Status,
    pub(crate) links: BTreeMap<ProcessId, Link>,
    pub(crate) gms: Gms,
    /// Every group's current view (the cluster configuration).
    pub(crate) views: BTreeMap<GroupName, GroupView>,
    /// Groups this process is a member of.
    pub(crate) groups: BTreeMap<GroupName, GroupState>,
    /// Messages for views or epochs not installed here yet.
    future: BTreeMap<GroupName, Vec<(ProcessId, Msg)>>,
    future_len: usize,
    /// Non-member sends, per group, in send order.
    pub(crate) outbox: BTreeMap<GroupName, crate::outbox::Outbox>,
    /// Relay side: non-members' forwards per (group, origin), released in order.
    pub(crate) relay_in: BTreeMap<(GroupName, ProcessId), crate::outbox::RelayIn>,
    /// Messages to this process itself, handled after the current input.
    pub(crate) local: VecDeque<Msg>,
    dirty: BTreeSet<GroupName>,
    /// Frames are held back until `uncork` (see [`Engine::cork`]).
    corked: bool,
    counter: u64,
    pub(crate) queries: BTreeMap<MsgId, QueryState>,
    events: VecDeque<Event>,
    pub(crate) gates: BTreeMap<GroupName, Gate>,
    transmits: VecDeque<Transmit>,
    pub(crate) ctl_out: BTreeMap<ProcessId, Vec<Ctl>>,
    excluded_replied: BTreeMap<ProcessId, Instant>,
    pub(crate) join_next_try: Instant,
    join_attempt: usize,
    next_tick: Instant,
    /// Since when the runtime has not been reading from peers (see `handle_listening`).
    pub(crate) deaf_since: Option<Instant>,
    pub(crate) stats: Stats,
    pub(crate) verifiers: crate::verify::Verifiers,
}

impl Engine {
    /// Creates the engine of process `me`. With no contacts (or only itself) it founds a
    /// new cluster at once; otherwise it asks its contacts to join.
    pub fn new(config: Config, me: ProcessId, now: Instant) -> Self {
        assert!(me.incarnation > 0, "incarnations start at 1");
        let found = config.contacts.iter().all(|c| c.name == me.name);
        let rng = ChaCha8Rng::seed_from_u64(config.rng_seed);
        let mut e = Self {
            gms: Gms::new(now),
            config,
            me,
            rng,
            status: Status::Joining,
            links: BTreeMap::new(),
            views: BTreeMap::new(),
            groups: BTreeMap::new(),
            future: BTreeMap::new(),
            future_len: 0,
            outbox: BTreeMap::new(),
            relay_in: BTreeMap::new(),
            local: VecDeque::new(),
            dirty: BTreeSet::new(),
            corked: false,
            counter: 0,
            queries: BTreeMap::new(),
            events: VecDeque::new(),
            gates: BTreeMap::new(),
            transmits: VecDeque::new(),
            ctl_out: BTreeMap::new(),
            excluded_replied: BTreeMap::new(),
            join_next_try: now,
            join_attempt: 0,
            next_tick: now,
            deaf_since: None,
            stats: Stats::default(),
            verifiers: Default::default(),
        };
        if found {
            e.gms.found(&e.me.clone(), e.config.weight);
            e.status = Status::Member;
            e.events.push_back(Event::Joined);
        }
        e
    }

    /// This process.
    pub fn id(&self) -> &ProcessId {
        &self.me
    }

    /// Where this process stands.
    pub fn status(&self) -> Status {
        self.status
    }

    /// Counters of traffic, rejections and protocol activity.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The cluster's members (the process view), oldest first.
    pub fn members(&self) -> Vec<ProcessId> {
        self.gms.members.iter().map(|(p, _)| p.clone()).collect()
    }

    /// The current view of a group, as this process knows it (member or not).
    pub fn view(&self, group: &GroupName) -> Option<&GroupView> {
        self.views.get(group)
    }

    /// Every group this process knows a view of (member or not; an empty view: nobody is
    /// in the group any more).
    pub fn known_groups(&self) -> impl Iterator<Item = (&GroupName, &GroupView)> {
        self.views.iter()
    }

    /// The groups this process is a member of.
    pub fn my_groups(&self) -> impl Iterator<Item = &GroupName> {
        self.groups.keys()
    }

    /// How much of its state this joiner of `group` has received: `(bytes, total)`, the
    /// total 0 until the first chunk came; `None` if it is not waiting for state.
    pub fn state_progress(&self, group: &GroupName) -> Option<(u64, u64)> {
        match &self.groups.get(group)?.join {
            JoinState::Waiting { buf, total, .. } => Some((buf.len() as u64, *total)),
            JoinState::Ready => None,
        }
    }

    /// A one-line dump of a group's internal state, for debugging and `synchrony status`.
    pub fn debug_group(&self, group: &GroupName) -> Option<String> {
        let pending: Vec<String> =
            self.gms.gbcasts.iter().filter(|(g, _, _)| g == group).map(|(_, _, m)| m.id.to_string()).collect();
        let outbox = self.outbox.get(group).map(|q| format!(" outbox: {q:?}")).unwrap_or_default()
            + &format!(" gbcasts requested: {pending:?}");
        match self.groups.get(group) {
            Some(g) => Some(format!("{g:?}{outbox}")),
            None if !outbox.is_empty() => Some(outbox),
            None => None,
        }
    }

    /// A one-line summary of this process's membership state (epoch, suspicions, requests
    /// it holds from others), for the simulator's debug dump.
    pub fn debug_membership(&self) -> String {
        let requests: Vec<String> = self
            .gms
            .requests
            .iter()
            .map(|(p, r)| {
                let g: Vec<String> = r.gbcasts.iter().map(|(_, _, m)| m.id.to_string()).collect();
                format!("{p}: suspects {:?} ops {} gbcasts {g:?} leave {}", r.suspects, r.ops.len(), r.leave)
            })
            .collect();
        let links: Vec<String> = self
            .links
            .iter()
            .map(|(p, l)| {
                format!(
                    "{p}: acked {} unacked {} sent_upto {} recv_next {}",
                    l.acked,
                    l.unacked.len(),
                    l.sent_upto,
                    l.recv_next
                )
            })
            .collect();
        format!(
            "epoch {} suspects {:?} round {} links [{}] requests [{}]",
            self.gms.epoch,
            self.gms.suspects,
            self.gms.debug_round(),
            links.join("; "),
            requests.join("; ")
        )
    }

    /// The phase of the membership round this process is leading, if any (`"prepare"` or
    /// `"accept"`): for tests that crash a leader in the middle of a view change.
    pub fn round_phase(&self) -> Option<&'static str> {
        self.gms.round_phase()
    }

    /// How many of this process's messages to `group` are outstanding: sent and not yet
    /// stable (held by every member), queued behind a view change or a gbcast, or (from a
    /// non-member) not yet taken by a relay. A runtime's flow control holds further sends
    /// while this is at its window; it falls as the slowest member catches up, and a view
    /// change resets it.
    pub fn outstanding(&self, group: &GroupName) -> usize {
        self.groups.get(group).map_or(0, |g| g.unstable()) + self.outbox.get(group).map_or(0, |o| o.len())
    }

    /// Installs (or with `None` removes) the join verifier of `group`: while this process
    /// is a member, a process may join the group only if the verifier admits it.
    pub fn set_join_verifier(&mut self, group: GroupName, verifier: Option<crate::JoinVerifier>) {
        match verifier {
            Some(f) => self.verifiers.join.insert(group, f),
            None => self.verifiers.join.remove(&group),
        };
        self.gms.requests_dirty = true;
    }

    /// The current leader of the cluster, as this process sees it.
    pub fn leader(&self) -> Option<&ProcessId> {
        self.gms.leader()
    }

    fn alive(&self) -> bool {
        matches!(self.status, Status::Joining | Status::Member)
    }

    // ------------------------------------------------------------------ inputs

    /// A frame arrived from the network. Bad frames are dropped and counted, never a panic;
    /// the error says why, so that a runtime can close the connection it came on.
    pub fn handle_packet(&mut self, now: Instant, frame: &[u8]) -> Result<(), DecodeError> {
        self.on_frame(now, frame, None)
    }

    /// A frame arrived, as [`Engine::handle_packet`], held in a `Bytes` that the delivered
    /// payloads share instead of being copied out of it.
    pub fn handle_frame(&mut self, now: Instant, frame: &Bytes) -> Result<(), DecodeError> {
        self.on_frame(now, frame, Some(frame))
    }

    fn on_frame(&mut self, now: Instant, frame: &[u8], shared: Option<&Bytes>) -> Result<(), DecodeError> {
        if !self.alive() {
            return Ok(());
        }
        self.stats.frames_in += 1;
        let secret = self.config.secret.as_deref();
        let decoded = match shared {
            Some(b) => wire::decode_shared(b, secret),
            None => wire::decode(frame, secret),
        };
        let packet = match decoded {
            Ok(p) => p,
            Err(e) => {
                match e {
                    DecodeError::Auth => self.stats.rejected_auth += 1,
                    _ => self.stats.rejected_malformed += 1,
                }
                tracing::debug!(me = %self.me, error = %e, "dropped a frame");
                return Err(e);
            }
        };
        self.wake_check(now);
        if !self.alive() {
            return Ok(());
        }
        self.on_packet(now, packet);
        self.after_input(now);
        Ok(())
    }

    /// The runtime lost its connection to the process called `name` and could not open a
    /// new one: a suspicion (as if the failure detector had timed out), not a verdict; the
    /// leader still runs the view change that excludes it.
    pub fn handle_unreachable(&mut self, now: Instant, name: &str) {
        if self.status != Status::Member {
            return;
        }
        let peer = self.gms_member_named(name);
        if let Some(p) = peer {
            self.suspect(p);
            self.after_input(now);
        }
    }

    /// The runtime stopped (`false`) or resumed (`true`) reading from its peers, because its
    /// application is behind on the events already delivered. Meanwhile timers run and
    /// heartbeats go out, so the others do not suspect this process, and this process does
    /// not suspect them: silence it did not listen to is no evidence. On resuming, each
    /// peer's silence counts from where it stood when reading stopped.
    pub fn handle_listening(&mut self, now: Instant, listening: bool) {
        match (listening, self.deaf_since) {
            (false, None) => self.deaf_since = Some(now),
            (true, Some(since)) => {
                self.deaf_since = None;
                let paused = now - since;
                for link in self.links.values_mut() {
                    if let Some(h) = &mut link.last_heard {
                        *h = (*h + paused).min(now);
                    }
                }
            }
            _ => {}
        }
    }

    /// The runtime gives up on an application that has not taken its events for too long:
    /// this process stops (`PartitionReason::Stalled`), and being silent from then on, is
    /// excluded by the others.
    pub fn handle_stalled(&mut self, now: Instant) {
        self.stop(PartitionReason::Stalled);
        self.after_input(now);
    }

    /// A process that was stopped (SIGSTOP, a long pause) past the failure timeout must
    /// assume it was excluded: it runs failure detection before it handles anything that
    /// arrived meanwhile, so it cannot deliver in a view the others have left (G3, G10).
    fn wake_check(&mut self, now: Instant) {
        if self.status == Status::Member && now > self.next_tick + self.config.failure_timeout {
            self.detect_failures(now);
        }
    }

    fn on_packet(&mut self, now: Instant, p: Packet) {
        if p.to.name != self.me.name
            || (p.to.incarnation != 0 && p.to.incarnation != self.me.incarnation)
            || p.from.is_contact()
        {
            self.stats.rejected_misaddressed += 1;
            return;
        }
        if p.from == self.me {
            return;
        }
        if self.gms.removed.contains(&p.from) {
            self.stats.from_excluded += 1;
            let due = self.excluded_replied.get(&p.from).is_none_or(|&t| now - t >= self.config.heartbeat_interval);
            if due {
                self.excluded_replied.insert(p.from.clone(), now);
                self.ctl_out.entry(p.from).or_default().push(Ctl::Excluded);
            }
            return;
        }
        // A newer incarnation of a name supersedes older ones: the old one failed.
        let from = p.from.clone();
        for ctl in p.ctl {
            self.on_ctl(now, &from, ctl);
        }
        if !self.alive() {
            return;
        }
        let window = self.config.reorder_buffer_max;
        let config = self.config.clone();
        let link = self.links.entry(from.clone()).or_insert_with(|| Link::new(&config));
        link.heard(now);
        link.on_ack(now, p.ack, &config);
        let member = self.gms.members.iter().any(|(m, _)| *m == from);
        if member && self.gms.suspects.contains(&from) {
            // Heard again before any view change acted on it: the suspicion was wrong (a
            // partition healed, a slow spell passed). Sticky suspicions could otherwise
            // leave no leader able to gather a quorum.
            self.gms.suspects.remove(&from);
            self.gms.requests_dirty = true;
        }
        let mut inorder = Vec::new();
        link.receive(p.seq, p.msgs, window, &mut inorder);
        for m in inorder {
            self.on_msg(now, &from, m);
            if !self.alive() {
                return;
            }
        }
    }

    fn on_ctl(&mut self, now: Instant, from: &ProcessId, ctl: Ctl) {
        match ctl {
            Ctl::JoinCluster { weight } => self.on_join_cluster(now, from, weight),
            Ctl::Redirect { leader } => {
                if self.status == Status::Joining {
                    self.ctl_out.entry(leader).or_default().push(Ctl::JoinCluster { weight: self.config.weight });
                    self.join_next_try = now + self.config.join_retry;
                }
            }
            Ctl::Excluded => {
                let credible = self.gms.members.iter().any(|(p, _)| p == from);
                if self.status == Status::Member && credible {
                    self.stop(PartitionReason::Excluded);
                }
            }
        }
    }

    /// Timers: call when [`Engine::poll_timeout`] is reached (calling early is harmless).
    pub fn handle_timeout(&mut self, now: Instant) {
        self.wake_check(now);
        if !self.alive() {
            return;
        }
        let config = self.config.clone();
        for link in self.links.values_mut() {
            if link.retransmit_at.is_some_and(|t| t <= now) {
                link.on_retransmit(now, &config);
                self.stats.retransmits += 1;
            }
        }
        if now >= self.next_tick {
            self.next_tick = now + self.config.heartbeat_interval / 2;
            self.tick(now);
        }
        self.after_input(now);
    }

    fn tick(&mut self, now: Instant) {
        match self.status {
            Status::Joining if now >= self.join_next_try && !self.config.contacts.is_empty() => {
                let n = self.config.contacts.len();
                let contact = self.config.contacts[self.join_attempt % n].clone();
                self.join_attempt += 1;
                self.join_next_try = now + self.config.join_retry;
                if contact.name != self.me.name {
                    self.ctl_out.entry(contact).or_default().push(Ctl::JoinCluster { weight: self.config.weight });
                }
            }
            Status::Member => {
                self.detect_failures(now);
                self.retry_state_fetches(now);
                self.outbox_tick();
            }
            _ => {}
        }
    }

    // ------------------------------------------------------------------ commands

    fn next_id(&mut self) -> MsgId {
        let id = MsgId { sender: self.me.clone(), counter: self.counter };
        self.counter += 1;
        id
    }

    /// Joins a group (creating it if nobody is in it). The view arrives as an event; if the
    /// group had members, so does its state.
    pub fn join(&mut self, now: Instant, group: GroupName) -> Result<(), MembershipError> {
        self.request_join(now, wire::GroupOp::Join(group))
    }

    /// Joins a group only if it is running: a member that goes on hands over its state. If
    /// every member failed or leaves, `JoinRefused` comes instead (a restarting process
    /// must not found again, empty or from a stale log, a group it meant to rejoin).
    pub fn join_running(&mut self, now: Instant, group: GroupName) -> Result<(), MembershipError> {
        self.request_join(now, wire::GroupOp::JoinRunning(group))
    }

    fn request_join(&mut self, now: Instant, op: wire::GroupOp) -> Result<(), MembershipError> {
        if !self.alive() {
            return Err(MembershipError::Stopped);
        }
        if self.groups.contains_key(op.group()) {
            return Err(MembershipError::Redundant(op.group().clone()));
        }
        self.gms.request_op(op);
        self.after_input(now);
        Ok(())
    }

    /// Leaves a group. A `Left` event follows once the group has moved on without it.
    pub fn leave(&mut self, now: Instant, group: GroupName) -> Result<(), MembershipError> {
        if !self.alive() {
            return Err(MembershipError::Stopped);
        }
        if !self.groups.contains_key(&group) {
            return Err(MembershipError::Redundant(group));
        }
        self.gms.request_op(wire::GroupOp::Leave(group));
        self.after_input(now);
        Ok(())
    }

    /// Leaves the cluster (and every group).
    pub fn leave_cluster(&mut self, now: Instant) {
        if self.status == Status::Member {
            self.gms.leave = true;
            self.gms.requests_dirty = true;
            self.after_input(now);
        }
    }

    /// Multicasts to a group. Members send on their own stream; gbcasts go through the
    /// membership leader. Returns the message id the trace uses.
    pub fn send(&mut self, now: Instant, group: GroupName, order: Order, payload: Bytes) -> Result<MsgId, SendError> {
        self.query(now, group, order, payload, Replies::None)
    }

    /// A group RPC: multicasts and collects replies, reported by a `QueryDone` event
    /// (`Replies::None`: a plain multicast, as [`Engine::send`]).
    pub fn query(
        &mut self,
        now: Instant,
        group: GroupName,
        order: Order,
        payload: Bytes,
        replies: Replies,
    ) -> Result<MsgId, SendError> {
        let sent = self.enqueue(group, order, payload, replies);
        if sent.is_ok() {
            self.after_input(now);
        }
        sent
    }

    /// Multicasts several payloads to a group, as [`Engine::send`] would one after the other
    /// with no other input in between, but with the work that follows an input done once for
    /// the whole batch.
    pub fn send_batch(
        &mut self,
        now: Instant,
        group: &GroupName,
        order: Order,
        payloads: impl IntoIterator<Item = Bytes>,
    ) -> Vec<Result<MsgId, SendError>> {
        let sent: Vec<_> = payloads.into_iter().map(|p| self.enqueue(group.clone(), order, p, Replies::None)).collect();
        if sent.iter().any(Result::is_ok) {
            self.after_input(now);
        }
        sent
    }

    /// A send or query up to the point where the engine would do its follow-up work.
    fn enqueue(
        &mut self,
        group: GroupName,
        order: Order,
        payload: Bytes,
        replies: Replies,
    ) -> Result<MsgId, SendError> {
        match self.status {
            Status::Member => {}
            Status::Joining => return Err(SendError::NotJoined),
            _ => return Err(SendError::Stopped),
        }
        let limit = self.config.packet_bytes_max.max(self.config.state_chunk_bytes);
        if payload.len() > limit {
            return Err(SendError::TooLarge(payload.len()));
        }
        let member = self.groups.contains_key(&group);
        if !member {
            // Non-members send through the group's oldest member (see outbox.rs).
            let Some(v) = self.views.get(&group).filter(|v| !v.members.is_empty()).cloned() else {
                return Err(SendError::NoSuchGroup(group));
            };
            let id = self.next_id();
            self.stats.sent += 1;
            self.track_query(&id, &group, replies, Some(v.members.iter().cloned().collect()));
            let msg = wire::DataMsg {
                id: id.clone(),
                seq: 0,
                order,
                vt: Default::default(),
                query: replies != Replies::None,
                relayed: true,
                payload,
            };
            self.outbox_push(group, msg);
            return Ok(id);
        }
        let id = self.next_id();
        self.stats.sent += 1;
        self.track_query(&id, &group, replies, None);
        let q = Queued { id: id.clone(), order, query: replies != Replies::None, relayed: false, payload };
        self.with_group(&group, |g, out| g.send(q, out));
        Ok(id)
    }

    fn track_query(&mut self, id: &MsgId, group: &GroupName, replies: Replies, expected: Option<BTreeSet<ProcessId>>) {
        let wanted = match replies {
            Replies::None => return,
            Replies::One => 1,
            Replies::Count(k) => k,
            Replies::All => usize::MAX,
        };
        self.queries.insert(
            id.clone(),
            QueryState {
                group: group.clone(),
                wanted,
                expected,
                replies: Vec::new(),
                nulls: BTreeSet::new(),
                failed: BTreeSet::new(),
            },
        );
    }

    /// Replies to a delivered query (`None`: a null reply, "I will not answer").
    pub fn reply(&mut self, now: Instant, query: &MsgId, payload: Option<Bytes>) {
        if self.status != Status::Member {
            return;
        }
        if query.sender == self.me {
            self.on_reply(&self.me.clone(), query.clone(), payload);
        } else {
            self.send_to(&query.sender.clone(), Msg::Reply { query: query.clone(), payload });
        }
        self.after_input(now);
    }

    /// Asks for a `Flushed` event once every message this process has sent to the group
    /// so far is stable (held by every member of the view) (G12).
    pub fn flush(&mut self, now: Instant, group: &GroupName) -> Result<(), FlushError> {
        if self.status != Status::Member {
            return Err(FlushError::Stopped);
        }
        let last = self.counter.checked_sub(1);
        let Some(g) = self.groups.get_mut(group) else {
            return Err(FlushError::NotMember(group.clone()));
        };
        if let Some(c) = last {
            let delivered = g.delivered_vector();
            g.flushes.push((c, Some(delivered)));
        }
        let mut out = Out::default();
        g.check_flushes(&mut out);
        if last.is_none() {
            out.flushed += 1;
        }
        self.absorb(group, out);
        self.after_input(now);
        Ok(())
    }

    /// The application's answer to a `StateRequest`: the group's state at that point.
    pub fn provide_state(&mut self, now: Instant, group: &GroupName, view: ViewId, state: Bytes) {
        if let Some(g) = self.groups.get_mut(group) {
            if let Some(cp) = g.checkpoints.get_mut(&view) {
                // The engine's part of the state (captured at the join point) goes first.
                let mut head = Vec::with_capacity(4 + cp.engine_part.len());
                head.extend_from_slice(&(cp.engine_part.len() as u32).to_le_bytes());
                head.extend_from_slice(&cp.engine_part);
                cp.state = Some(StateBytes { head: Bytes::from(head), body: state });
            }
        }
        self.ungate(group);
        self.after_input(now);
    }

    // ------------------------------------------------------------------ outputs

    /// The next frame to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next event for the application.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When to call [`Engine::handle_timeout`] next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if !self.alive() {
            return None;
        }
        let mut t = self.next_tick;
        for l in self.links.values() {
            if let Some(r) = l.retransmit_at {
                t = t.min(r);
            }
        }
        Some(t)
    }

    // ------------------------------------------------------------------ internals

    pub(crate) fn send_to(&mut self, to: &ProcessId, msg: Msg) {
        if *to == self.me {
            self.local.push_back(msg);
            return;
        }
        let config = &self.config;
        self.links.entry(to.clone()).or_insert_with(|| Link::new(config)).push(msg);
    }

    pub(crate) fn stop(&mut self, reason: PartitionReason) {
        if !self.alive() {
            return;
        }
        tracing::info!(me = %self.me, ?reason, "stopping: partitioned");
        self.status = Status::Partitioned;
        self.fail_all_queries();
        // Events already queued stand; nothing more is delivered.
        for (g, gate) in std::mem::take(&mut self.gates) {
            // A joiner still waiting for its state never sees what it held.
            let waiting = self.groups.get(&g).is_some_and(|gs| matches!(gs.join, JoinState::Waiting { .. }));
            if !waiting {
                self.events.extend(gate.held);
            }
        }
        self.events.push_back(Event::Partitioned { reason });
        self.transmits.clear();
    }

    pub(crate) fn push_event(&mut self, ev: Event) {
        let group = ev.group().cloned();
        if let Some(g) = group {
            if let Some(gate) = self.gates.get_mut(&g) {
                gate.held.push_back(ev);
                return;
            }
            if matches!(ev, Event::StateRequest { .. }) {
                self.gates.entry(g).or_default().count += 1;
            }
        }
        self.events.push_back(ev);
    }

    pub(crate) fn gate(&mut self, group: &GroupName) {
        self.gates.entry(group.clone()).or_default().count += 1;
    }

    pub(crate) fn ungate(&mut self, group: &GroupName) {
        let Some(gate) = self.gates.get_mut(group) else {
            return;
        };
        gate.count = gate.count.saturating_sub(1);
        if gate.count == 0 {
            // Everything up to and including the next state request goes, at once (a
            // joiner's gate may hold hundreds of thousands of deliveries).
            let found = gate.held.iter().position(|ev| matches!(ev, Event::StateRequest { .. }));
            let rest = found.map(|k| gate.held.split_off(k + 1)).unwrap_or_default();
            if found.is_some() {
                gate.count += 1;
            }
            let mut released = std::mem::replace(&mut gate.held, rest);
            if self.events.is_empty() {
                self.events = released;
            } else {
                self.events.append(&mut released);
            }
        }
        if gate.count == 0 && gate.held.is_empty() {
            self.gates.remove(group);
        }
    }

    /// Drops what a joiner held for a group it leaves before its state came: deliveries and
    /// views were never its to see, but the outcomes of its own queries still are (their
    /// callers wait for them).
    pub(crate) fn drop_gate(&mut self, group: &GroupName) {
        if let Some(gate) = self.gates.remove(group) {
            self.events.extend(gate.held.into_iter().filter(|e| matches!(e, Event::QueryDone(_))));
        }
    }

    /// Runs `f` on a group and absorbs its outputs.
    pub(crate) fn with_group<R>(
        &mut self,
        group: &GroupName,
        f: impl FnOnce(&mut GroupState, &mut Out) -> R,
    ) -> Option<R> {
        let g = self.groups.get_mut(group)?;
        let mut out = Out::default();
        let r = f(g, &mut out);
        self.absorb(group, out);
        Some(r)
    }

    pub(crate) fn absorb(&mut self, group: &GroupName, out: Out) {
        // Whatever touched the group may owe acks, tokens or stability announcements.
        self.dirty.insert(group.clone());
        for (to, m) in out.sends {
            self.send_to(&to, m);
        }
        let view = self.groups.get(group).map_or(ViewId(0), |g| g.view.id);
        for m in out.gbcasts {
            self.gms.gbcasts.push((group.clone(), view, m));
            self.gms.requests_dirty = true;
        }
        for d in out.delivered {
            self.stats.delivered += 1;
            if d.msg.query && d.msg.id.sender == self.me {
                if let (Some(q), Some(v)) = (self.queries.get_mut(&d.msg.id), self.groups.get(group)) {
                    if q.expected.is_none() {
                        q.expected = Some(v.view.members.iter().cloned().collect());
                    }
                }
                self.check_query(&d.msg.id.clone());
            }
            // The last holder takes the fields; otherwise they are refcounted copies.
            let msg = Arc::unwrap_or_clone(d.msg);
            self.push_event(Event::Deliver(Delivery {
                group: group.clone(),
                view: d.view,
                id: msg.id,
                order: msg.order,
                query: msg.query,
                payload: msg.payload,
            }));
        }
        if out.flushed > 0 {
            if let Some(view) = self.groups.get(group).map(|g| g.view.id) {
                for _ in 0..out.flushed {
                    self.push_event(Event::Flushed { group: group.clone(), view });
                }
            }
        }
    }

    fn on_msg(&mut self, now: Instant, from: &ProcessId, msg: Msg) {
        match msg {
            Msg::Data { ref group, view, epoch, .. } | Msg::Order { ref group, view, epoch, .. } => {
                let group = group.clone();
                self.route(now, from, &group, view, Some(epoch), msg)
            }
            Msg::Ack { ref group, view, .. } | Msg::Stable { ref group, view, .. } => {
                let group = group.clone();
                self.route(now, from, &group, view, None, msg)
            }
            Msg::StateFetch { ref group, view, .. }
            | Msg::StateChunk { ref group, view, .. }
            | Msg::StateNotReady { ref group, view }
            | Msg::StateUnavailable { ref group, view }
            | Msg::StateDone { ref group, view } => {
                let group = group.clone();
                self.on_transfer(now, from, &group, view, msg)
            }
            Msg::Reply { query, payload } => self.on_reply(from, query, payload),
            Msg::Forward { group, fseq, acked, msg } => self.on_forward(from, group, fseq, acked, msg),
            Msg::ForwardAck { id } => self.outbox_acked(&id),
            other => self.on_gms(now, from, other),
        }
    }

    /// Routes a group message to its view and epoch, holding messages from the future.
    fn route(
        &mut self,
        _now: Instant,
        from: &ProcessId,
        group: &GroupName,
        view: ViewId,
        epoch: Option<u32>,
        msg: Msg,
    ) {
        let here = self.groups.get(group).map(|g| (g.view.id, g.epoch));
        let known = self.views.get(group).map(|v| v.id).unwrap_or(ViewId(0));
        let mine = here.unwrap_or((known, u32::MAX));
        let theirs = (view, epoch.unwrap_or(mine.1));
        if here.is_none() && view <= known || here.is_some() && theirs < mine {
            return; // from a view (or epoch) that is over here
        }
        if here.is_none() || theirs > mine {
            if self.future_len >= self.config.reorder_buffer_max * 16 {
                self.stats.dropped_overflow += 1;
                return;
            }
            self.future_len += 1;
            self.future.entry(group.clone()).or_default().push((from.clone(), msg));
            return;
        }
        let from = from.clone();
        self.with_group(group, |g, out| {
            let Some(r) = g.rank_of(&from) else { return };
            match msg {
                Msg::Data { msg, .. } => {
                    g.on_data(r, msg);
                    g.try_deliver(out);
                }
                Msg::Order { first, entries, .. } if r == 0 => {
                    g.on_order(first, entries);
                    g.try_deliver(out);
                }
                Msg::Ack { received, order_len, .. } => g.on_ack(r, received, order_len),
                Msg::Stable { seq, order_len, .. } => {
                    g.on_stable(r, seq, order_len);
                    g.try_deliver(out);
                }
                _ => {}
            }
        });
    }

    /// Re-routes held messages of a group after its view or epoch changed.
    pub(crate) fn replay_future(&mut self, now: Instant, group: &GroupName) {
        if let Some(msgs) = self.future.remove(group) {
            self.future_len -= msgs.len();
            for (from, m) in msgs {
                let (view, epoch) = match &m {
                    Msg::Data { view, epoch, .. } | Msg::Order { view, epoch, .. } => (*view, Some(*epoch)),
                    Msg::Ack { view, .. } | Msg::Stable { view, .. } => (*view, None),
                    _ => continue,
                };
                self.route(now, &from, group, view, epoch, m);
            }
        }
    }

    // ------------------------------------------------------------------ queries

    fn on_reply(&mut self, from: &ProcessId, query: MsgId, payload: Option<Bytes>) {
        let Some(q) = self.queries.get_mut(&query) else {
            return;
        };
        if q.replies.iter().any(|(p, _)| p == from) || q.nulls.contains(from) {
            return;
        }
        match payload {
            Some(b) => q.replies.push((from.clone(), b)),
            None => {
                q.nulls.insert(from.clone());
            }
        }
        self.check_query(&query);
    }

    pub(crate) fn check_query(&mut self, id: &MsgId) {
        let Some(q) = self.queries.get(id) else {
            return;
        };
        let satisfied = q.replies.len() >= q.wanted;
        let exhausted = q.expected.as_ref().is_some_and(|e| {
            e.iter().all(|p| q.replies.iter().any(|(r, _)| r == p) || q.nulls.contains(p) || q.failed.contains(p))
        });
        if satisfied || exhausted {
            let q = self.queries.remove(id).expect("present");
            let outcome = QueryOutcome {
                id: id.clone(),
                group: q.group,
                satisfied: q.replies.len() >= q.wanted.min(q.expected.as_ref().map_or(usize::MAX, |e| e.len())),
                replies: q.replies,
                nulls: q.nulls.into_iter().collect(),
                failed: q.failed.into_iter().collect(),
            };
            self.push_event(Event::QueryDone(outcome));
        }
    }

    /// Members no longer in the group will not answer.
    pub(crate) fn queries_view_changed(&mut self, group: &GroupName) {
        let members: BTreeSet<ProcessId> =
            self.views.get(group).map(|v| v.members.iter().cloned().collect()).unwrap_or_default();
        let ids: Vec<MsgId> =
            self.queries.iter().filter(|(_, q)| q.group == *group).map(|(id, _)| id.clone()).collect();
        for id in ids {
            if let Some(q) = self.queries.get_mut(&id) {
                if let Some(e) = &q.expected {
                    for p in e {
                        if !members.contains(p) && !q.nulls.contains(p) && !q.replies.iter().any(|(r, _)| r == p) {
                            q.failed.insert(p.clone());
                        }
                    }
                }
            }
            self.check_query(&id);
        }
    }

    pub(crate) fn fail_queries_of(&mut self, group: &GroupName) {
        let ids: Vec<MsgId> =
            self.queries.iter().filter(|(_, q)| q.group == *group).map(|(id, _)| id.clone()).collect();
        for id in ids {
            if let Some(q) = self.queries.get_mut(&id) {
                let e = q.expected.get_or_insert_with(BTreeSet::new).clone();
                for p in e {
                    if !q.nulls.contains(&p) && !q.replies.iter().any(|(r, _)| *r == p) {
                        q.failed.insert(p);
                    }
                }
                q.expected.get_or_insert_with(BTreeSet::new);
            }
            self.check_query(&id);
        }
    }

    fn fail_all_queries(&mut self) {
        let groups: BTreeSet<GroupName> = self.queries.values().map(|q| q.group.clone()).collect();
        for g in groups {
            self.fail_queries_of(&g);
        }
    }

    // ------------------------------------------------------------------ state transfer

    /// A provider records the checkpoint it will serve (filled by `provide_state`).
    pub(crate) fn expect_checkpoint(&mut self, group: &GroupName, view: ViewId, joiners: Vec<ProcessId>) {
        if let Some(g) = self.groups.get_mut(group) {
            let unsettled = g.unchecked.as_ref().map(|u| u.len());
            let engine_part = crate::group::encode_table(&g.external);
            let joiners = joiners.iter().cloned().collect();
            g.checkpoints.insert(view, Checkpoint { state: None, engine_part, unsettled, joiners });
        }
        self.push_event(Event::StateRequest { group: group.clone(), view, joiners });
    }

    pub(crate) fn start_fetch(&mut self, group: &GroupName) {
        let Some(g) = self.groups.get(group) else {
            return;
        };
        if let JoinState::Waiting { view, providers, idx, buf, .. } = &g.join {
            let (view, to, offset) = (*view, providers[*idx].clone(), buf.len() as u64);
            self.send_to(&to, Msg::StateFetch { group: group.clone(), view, offset });
        }
    }

    /// After a view change: a joiner drops the providers that left.
    pub(crate) fn transfer_view_changed(&mut self, group: &GroupName) {
        let Some(g) = self.groups.get_mut(group) else { return };
        let members: BTreeSet<ProcessId> = g.view.members.iter().cloned().collect();
        for cp in g.checkpoints.values_mut() {
            cp.joiners.retain(|j| members.contains(j));
        }
        g.checkpoints.retain(|_, cp| !cp.joiners.is_empty());
        let JoinState::Waiting { view, providers, .. } = &g.join else { return };
        let view = *view;
        let gone: Vec<ProcessId> = providers.iter().filter(|p| !members.contains(*p)).cloned().collect();
        for p in gone {
            self.drop_provider(group, view, &p);
        }
    }

    /// A joiner gives up on one provider: the next one, or, with none left, the state is
    /// lost (every member that had it is gone) and the process leaves the group.
    fn drop_provider(&mut self, group: &GroupName, view: ViewId, gone: &ProcessId) {
        let Some(g) = self.groups.get_mut(group) else { return };
        let JoinState::Waiting { view: v, providers, idx, buf, retry_at, .. } = &mut g.join else { return };
        let Some(pos) = providers.iter().position(|p| p == gone).filter(|_| *v == view) else { return };
        providers.remove(pos);
        if providers.is_empty() {
            tracing::warn!(me = %self.me, %group, "state transfer failed: no provider left");
            self.drop_gate(group);
            if let Some(hold) = self.groups.remove(group).and_then(|o| o.hold) {
                self.outbox_adopt_gbcast(group, &hold);
            }
            self.push_event(Event::StateLost { group: group.clone() });
            self.gms.force_leave(group.clone());
            return;
        }
        if pos < *idx {
            *idx -= 1;
        } else if pos == *idx {
            *idx %= providers.len();
            buf.clear();
            *retry_at = None;
            self.start_fetch(group);
        }
    }

    fn retry_state_fetches(&mut self, now: Instant) {
        let due: Vec<GroupName> = self
            .groups
            .iter()
            .filter(|(_, g)| matches!(g.join, JoinState::Waiting { retry_at: Some(t), .. } if t <= now))
            .map(|(n, _)| n.clone())
            .collect();
        for g in due {
            if let Some(JoinState::Waiting { retry_at, .. }) = self.groups.get_mut(&g).map(|g| &mut g.join) {
                *retry_at = None;
            }
            self.start_fetch(&g);
        }
    }

    fn on_transfer(&mut self, now: Instant, from: &ProcessId, group: &GroupName, view: ViewId, msg: Msg) {
        let chunk_max = self.config.state_chunk_bytes;
        let retry = now + self.config.heartbeat_interval;
        if let Msg::StateUnavailable { .. } = msg {
            self.drop_provider(group, view, from);
            return;
        }
        let Some(g) = self.groups.get_mut(group) else {
            if let Msg::StateFetch { .. } = msg {
                self.send_to(from, Msg::StateUnavailable { group: group.clone(), view });
            }
            return;
        };
        match msg {
            // Past the join point with no checkpoint for it: never will have one. (Before it,
            // the provider has simply not applied the join yet: "not ready".)
            Msg::StateFetch { .. } if !g.checkpoints.contains_key(&view) && g.view.id >= view => {
                self.send_to(from, Msg::StateUnavailable { group: group.clone(), view });
            }
            Msg::StateFetch { offset, .. } => {
                let reply = match g.checkpoints.get(&view).and_then(|cp| cp.state.as_ref()) {
                    Some(state) if offset <= state.len() as u64 => {
                        let start = offset as usize;
                        let end = (start + chunk_max).min(state.len());
                        Msg::StateChunk {
                            group: group.clone(),
                            view,
                            offset,
                            total: state.len() as u64,
                            data: state.slice(start, end),
                        }
                    }
                    _ => Msg::StateNotReady { group: group.clone(), view },
                };
                self.send_to(from, reply);
            }
            Msg::StateNotReady { .. } => {
                if let JoinState::Waiting { view: v, providers, idx, retry_at, .. } = &mut g.join {
                    if *v == view && providers[*idx] == *from {
                        *retry_at = Some(retry);
                    }
                }
            }
            Msg::StateChunk { offset, total, data, .. } => {
                let JoinState::Waiting { view: v, providers, idx, buf, total: known, .. } = &mut g.join else {
                    return;
                };
                if *v != view || providers[*idx] != *from || offset != buf.len() as u64 {
                    return;
                }
                *known = total;
                buf.extend_from_slice(&data);
                if (buf.len() as u64) < total {
                    self.start_fetch(group);
                    return;
                }
                let all = Bytes::from(std::mem::take(buf));
                let Some((external, state)) = split_state(&all) else {
                    self.stats.rejected_malformed += 1;
                    tracing::warn!(me = %self.me, %group, "malformed state received; asking again");
                    self.start_fetch(group);
                    return;
                };
                let providers = std::mem::take(providers);
                g.join = JoinState::Ready;
                let dups = g.settle_unchecked(external);
                let any_dup = dups.contains(&true);
                let mut dups = dups.into_iter();
                let members: BTreeSet<ProcessId> = g.view.members.iter().cloned().collect();
                for p in providers.iter().filter(|p| members.contains(*p)) {
                    self.send_to(p, Msg::StateDone { group: group.clone(), view });
                }
                // The state goes ahead of everything held for the group; deliveries that the
                // table shows were duplicates are dropped.
                let gate = self.gates.entry(group.clone()).or_default();
                if any_dup {
                    gate.held.retain(|ev| match ev {
                        Event::Deliver(d) if d.group == *group => !dups.next().unwrap_or(false),
                        _ => true,
                    });
                }
                gate.held.push_front(Event::State { group: group.clone(), view, state });
                let ev = gate.held.pop_front().expect("just pushed");
                self.events.push_back(ev);
                self.ungate(group);
            }
            Msg::StateDone { .. } => {
                if let Some(cp) = g.checkpoints.get_mut(&view) {
                    cp.joiners.remove(from);
                    if cp.joiners.is_empty() {
                        g.checkpoints.remove(&view);
                    }
                }
            }
            _ => {}
        }
    }

    // ------------------------------------------------------------------ output assembly

    fn after_input(&mut self, now: Instant) {
        if !self.alive() {
            return;
        }
        loop {
            while let Some(m) = self.local.pop_front() {
                let me = self.me.clone();
                self.on_msg(now, &me, m);
                if !self.alive() {
                    return;
                }
            }
            for g in std::mem::take(&mut self.dirty) {
                let mut out = Out::default();
                if let Some(gs) = self.groups.get_mut(&g) {
                    gs.housekeeping(&mut out);
                }
                self.absorb(&g, out);
            }
            // Housekeeping is done for every group absorbed above.
            self.dirty.clear();
            self.gms_drive(now);
            if !self.alive() {
                return;
            }
            if self.local.is_empty() {
                break;
            }
        }
        if !self.corked {
            self.flush_links(now);
        }
    }

    /// Holds frames back until [`Engine::uncork`]: the inputs handled in between share
    /// frames, so a burst of sends, or of received packets and the acknowledgements they
    /// owe, goes out as one frame per peer instead of one each. A runtime corks around each
    /// batch of inputs it drains at once; nothing changes but how messages are packed.
    pub fn cork(&mut self) {
        self.corked = true;
    }

    /// Packs what was held since [`Engine::cork`] into frames (see [`Engine::poll_transmit`]);
    /// nothing to do if the engine was not corked (every input flushed its own frames).
    pub fn uncork(&mut self, now: Instant) {
        if std::mem::take(&mut self.corked) && self.alive() {
            self.flush_links(now);
        }
    }

    /// Packs pending link messages, acks, heartbeats and control messages into frames.
    fn flush_links(&mut self, now: Instant) {
        let secret = self.config.secret.clone();
        let hb = self.config.heartbeat_interval;
        let max = self.config.packet_bytes_max;
        let members: BTreeSet<ProcessId> = self.gms.members.iter().map(|(p, _)| p.clone()).collect();
        let mut ctl_out = std::mem::take(&mut self.ctl_out);
        for (peer, link) in self.links.iter_mut() {
            let heartbeat =
                self.status == Status::Member && members.contains(peer) && link.last_sent.is_none_or(|t| now - t >= hb);
            let mut ctl = ctl_out.remove(peer).unwrap_or_default();
            if !(link.has_unsent() || link.ack_dirty || heartbeat || !ctl.is_empty()) {
                continue;
            }
            link.ack_dirty = false;
            loop {
                let start = link.sent_upto;
                let mut end = start;
                let mut size = 0;
                let mut msgs = Vec::new();
                while end < link.next_seq() {
                    let m = &link.unacked[(end - link.acked) as usize];
                    let s = m.approx_size();
                    if !msgs.is_empty() && size + s > max {
                        break;
                    }
                    size += s;
                    msgs.push(m.clone());
                    end += 1;
                }
                let packet = Packet {
                    from: self.me.clone(),
                    to: peer.clone(),
                    ack: link.recv_next,
                    seq: start,
                    msgs,
                    ctl: std::mem::take(&mut ctl),
                };
                self.transmits
                    .push_back(Transmit { to: peer.clone(), frame: wire::encode(&packet, secret.as_deref()) });
                self.stats.frames_out += 1;
                link.sent(now, end);
                if !link.has_unsent() {
                    break;
                }
            }
        }
        for (peer, ctl) in ctl_out {
            let packet = Packet { from: self.me.clone(), to: peer.clone(), ack: 0, seq: 0, msgs: Vec::new(), ctl };
            self.transmits.push_back(Transmit { to: peer, frame: wire::encode(&packet, secret.as_deref()) });
            self.stats.frames_out += 1;
        }
    }

    /// Forgets everything about processes that left the cluster.
    pub(crate) fn forget(&mut self, p: &ProcessId) {
        self.links.remove(p);
    }
}

/// Splits a transferred state into the engine's part and the application's.
fn split_state(all: &Bytes) -> Option<(BTreeMap<ProcessId, u64>, Bytes)> {
    let len = u32::from_le_bytes(all.get(..4)?.try_into().ok()?) as usize;
    let table: Vec<(ProcessId, u64)> = postcard::from_bytes(all.get(4..4usize.checked_add(len)?)?).ok()?;
    Some((table.into_iter().collect(), all.slice(4 + len..)))
}
