//! The engine: one process's whole part in the protocol, driven by `handle_*` inputs and
//! drained by `poll_*` outputs.
//!
//! [`Engine`] orchestrates rooms that own their data: the links to each peer
//! ([`Link`]), the membership service ([`Gms`]), each group this process is a member of
//! ([`GroupState`]), the relay of non-member sends ([`Relay`]), the outstanding group RPCs
//! ([`Queries`]) and the application's event queue ([`EventQueue`]). Each room writes what
//! it wants done into an output value; the engine carries it out, in order, and routes what
//! one room produces to the next (a decision to the groups, a delivery to the queries, a
//! group's gbcast to the membership).

use crate::boot::{Boot, BootOut};
use crate::causal::{CrossGroup, Need};
use crate::config::Config;
use crate::event::*;
use crate::gate::EventQueue;
use crate::gms::{Ctx, Gms, GmsOut, Implied, RoundPhase};
use crate::group::{Fragmenting, GroupState, Out, Queued};
use crate::id::{GroupName, MsgId, ProcessId, ViewId};
use crate::link::Link;
use crate::order::Order;
use crate::query::Queries;
use crate::relay::{Handover, Relay, RelayAction, RelayCtx};
use crate::time::Instant;
use crate::timer::{Timer, TimerTable};
use crate::transfer::{Checkpoint, JoinState, StateBytes, StateData, TOTAL_UNKNOWN};
use crate::wire::{self, Ctl, Decision, DecodeError, GroupChange, GroupView, Msg, Packet, Snapshot};
use bytes::Bytes;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

/// Messages held for views or epochs not installed here yet, across all groups, in reorder
/// windows (`Config::reorder_buffer_max`): past it, the newest are dropped and counted.
const FUTURE_WINDOWS: usize = 16;

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

/// One process's virtual synchrony engine. Sans-IO: it never touches a socket, a clock or
/// a thread. Feed it packets, commands and timeouts with the current time; after every
/// call drain [`Engine::poll_transmit`], then [`Engine::poll_event`], and sleep until
/// [`Engine::poll_timeout`].
pub struct Engine {
    config: Config,
    me: ProcessId,
    status: Status,
    links: BTreeMap<ProcessId, Link>,
    gms: Gms,
    /// Groups this process is a member of.
    groups: BTreeMap<GroupName, Box<GroupState>>,
    /// Messages for views or epochs not installed here yet.
    future: BTreeMap<GroupName, Vec<(ProcessId, Msg)>>,
    future_len: usize,
    relay: Relay,
    /// Messages to this process itself, handled after the current input.
    local: VecDeque<Msg>,
    /// Groups touched by the current input: they may owe acks, tokens or stability.
    dirty: BTreeSet<GroupName>,
    /// Frames are held back until `uncork` (see [`Engine::cork`]).
    corked: bool,
    counter: u64,
    queries: Queries,
    events: EventQueue,
    transmits: VecDeque<Transmit>,
    ctl_out: BTreeMap<ProcessId, Vec<Ctl>>,
    excluded_replied: BTreeMap<ProcessId, Instant>,
    timers: TimerTable,
    join_attempt: usize,
    /// Since when the runtime has not been reading from peers (see `handle_listening`).
    deaf_since: Option<Instant>,
    /// Asked to leave the cluster: the request goes out once no joiner waits for a state
    /// this process holds for it.
    leave_when_served: bool,
    /// `leave_cluster` was called: no new sends are taken.
    leave_asked: bool,
    /// Sends held for causal order across groups (causal.rs).
    cross: CrossGroup,
    /// The epoch of the decision being applied: messages sent meanwhile carry it.
    applying: u64,
    /// Senders whose data for a group is held until this process applies the decision
    /// their message was sent after (later data of theirs waits behind it).
    barrier: BTreeSet<(GroupName, ProcessId)>,
    /// Forwards held for the same reason (a relay relays only what its epoch allows).
    held_forwards: Vec<(ProcessId, Msg)>,
    /// Per group, the membership epoch of the decision in which its last lineage died
    /// (every member failed or left): a non-member's forward sent before it (`pepoch`) was
    /// meant for the dead lineage, and its origin counts it lost; a relay of a new lineage
    /// must not deliver it there.
    lineage_deaths: BTreeMap<GroupName, u64>,
    /// The highest epoch a relay acknowledged one of this process's forwards in: later
    /// ordered sends wait until this process applied it too.
    forward_ack_epoch: u64,
    /// A group's held-back events were shown: held data may go on (`lift_barrier`).
    lift_pending: bool,
    /// Groups this process left while their events were still held back with a
    /// decision's deliveries among them, with that decision (see `shown_epoch`).
    left_gated: BTreeMap<GroupName, u64>,
    /// (decision, group) for each group's `gated_decision` as it was set; entries that no
    /// longer hold are dropped when they come first, so `shown_epoch` does not scan every
    /// group for each message.
    gated_index: BTreeSet<(u64, GroupName)>,
    /// The groups frozen by a promise, by its epoch, kept the same way for `frozen_ahead`
    /// (a round that removes a process freezes each of its groups: an entry is a push).
    frozen_index: BTreeMap<u64, Vec<GroupName>>,
    /// Groups whose state fetch waits to be asked again (at least those: see
    /// `retry_state_fetches`).
    fetch_retries: BTreeSet<GroupName>,
    /// Groups whose state, when this process joins them, the application reads in parts
    /// (`stream_state`), and the parts not yet polled.
    streamed_joins: BTreeSet<GroupName>,
    state_out: VecDeque<StateData>,
    stats: Stats,
    /// The bootstrap from a peer list, while it runs (see `boot.rs`).
    boot: Option<Box<Boot>>,
}

/// A dump of the engine's internal state (membership, links, and each group it knows),
/// for debugging; its format is not an interface.
impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let links: Vec<String> = self
            .links
            .iter()
            .map(|(p, l)| {
                let (acked, unacked, sent_upto, recv_next) = l.debug_counts();
                format!("{p}: acked {acked} unacked {unacked} sent_upto {sent_upto} recv_next {recv_next}")
            })
            .collect();
        write!(f, "{} {:?} {}\n  links [{}]", self.me, self.status, self.gms.debug_state(), links.join("; "))?;
        if !self.cross.is_idle() || !self.barrier.is_empty() || !self.held_forwards.is_empty() {
            write!(
                f,
                "\n  across groups: {:?} barrier {:?} held forwards {} forward ack epoch {}",
                self.cross,
                self.barrier,
                self.held_forwards.len(),
                self.forward_ack_epoch
            )?;
        }
        if !self.queries.is_empty() {
            write!(f, "\n  queries: {}", self.queries.debug_state())?;
        }
        write!(f, "\n  events: {:?}", self.events)?;
        for g in self.gms.views().keys() {
            let pending: Vec<String> = self.gms.pending_gbcasts_of(g).map(|id| id.to_string()).collect();
            let outbox = self.relay.debug_outbox(g);
            let tail = outbox.as_ref().map(|q| format!(" outbox: {q}")).unwrap_or_default()
                + &format!(" gbcasts requested: {pending:?}");
            match self.groups.get(g) {
                Some(gs) => write!(f, "\n  {g}: {gs:?}{tail}")?,
                None if outbox.is_some() || !pending.is_empty() => write!(f, "\n  {g}:{tail}")?,
                None => {}
            }
        }
        Ok(())
    }
}

impl Engine {
    /// Creates the engine of process `me`. With no contacts (or only itself) it founds a
    /// new cluster at once; otherwise it asks its contacts to join.
    pub fn new(mut config: Config, me: ProcessId, now: Instant) -> Self {
        assert!(me.incarnation > 0, "incarnations start at 1");
        let mut found = config.contacts.iter().all(|c| c.name == me.name);
        let mut boot = None;
        if let Some(list) = config.peer_list.filter(|l| l.size > 1) {
            // A cluster of the list needs a majority of it, always (see `boot.rs`).
            config.min_commit_weight = config.min_commit_weight.max((list.size / 2 + 1) as u32);
            found = false;
            let peers = config.contacts.iter().filter(|c| c.name != me.name).map(|c| c.name.clone());
            let quiet = config.failure_timeout_max * 2;
            let seed = config.rng_seed ^ 0xb007;
            boot = Some(Box::new(Boot::new(list, peers, quiet, config.join_retry, seed, now)));
        }
        let mut e = Self {
            gms: Gms::new(config.rng_seed),
            config,
            me,
            status: Status::Joining,
            links: BTreeMap::new(),
            groups: BTreeMap::new(),
            future: BTreeMap::new(),
            future_len: 0,
            relay: Relay::default(),
            local: VecDeque::new(),
            dirty: BTreeSet::new(),
            corked: false,
            counter: 0,
            queries: Queries::default(),
            events: EventQueue::default(),
            transmits: VecDeque::new(),
            ctl_out: BTreeMap::new(),
            excluded_replied: BTreeMap::new(),
            timers: TimerTable::all_at(now),
            join_attempt: 0,
            deaf_since: None,
            leave_when_served: false,
            leave_asked: false,
            cross: CrossGroup::default(),
            applying: 0,
            barrier: BTreeSet::new(),
            held_forwards: Vec::new(),
            lineage_deaths: BTreeMap::new(),
            forward_ack_epoch: 0,
            lift_pending: false,
            left_gated: BTreeMap::new(),
            gated_index: BTreeSet::new(),
            frozen_index: BTreeMap::new(),
            fetch_retries: BTreeSet::new(),
            streamed_joins: BTreeSet::new(),
            state_out: VecDeque::new(),
            stats: Stats::default(),
            boot,
        };
        if found {
            e.gms.found(&e.me, e.config.weight);
            e.status = Status::Member;
            e.events.push(Event::Joined);
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
        self.gms.members().cloned().collect()
    }

    /// The current view of a group, as this process knows it (member or not).
    pub fn view(&self, group: &GroupName) -> Option<&GroupView> {
        self.gms.view(group)
    }

    /// Every group this process knows a view of (member or not; an empty view: nobody is
    /// in the group any more).
    pub fn known_groups(&self) -> impl Iterator<Item = (&GroupName, &GroupView)> {
        self.gms.views().iter()
    }

    /// The groups this process is a member of.
    pub fn my_groups(&self) -> impl Iterator<Item = &GroupName> {
        self.groups.keys()
    }

    /// How much of its state this joiner of `group` has received: `(bytes, total)`, the
    /// total 0 until a chunk told it (a state still being written in parts has none yet);
    /// `None` if it is not waiting for state.
    pub fn state_progress(&self, group: &GroupName) -> Option<(u64, u64)> {
        match &self.groups.get(group)?.join {
            JoinState::Waiting { buf, total, stream, .. } => {
                let total = if *total == TOTAL_UNKNOWN { 0 } else { *total };
                Some((stream.as_ref().map_or(buf.len() as u64, |s| s.received), total))
            }
            JoinState::Ready => None,
        }
    }

    /// The phase of the membership round this process is leading, if any: for tests that
    /// crash a leader in the middle of a view change.
    pub fn round_phase(&self) -> Option<RoundPhase> {
        self.gms.round_phase()
    }

    /// How many of this process's messages to `group` are outstanding: sent and not yet
    /// stable (held by every member), queued behind a view change or a gbcast, or (from a
    /// non-member) not yet taken by a relay. A runtime's flow control holds further sends
    /// while this is at its window; it falls as the slowest member catches up, and a view
    /// change resets it.
    pub fn outstanding(&self, group: &GroupName) -> usize {
        self.groups.get(group).map_or(0, |g| g.unstable()) + self.relay.outstanding(group) + self.cross.held_for(group)
    }

    /// The bytes of this process's messages to `group` that [`Engine::outstanding`] counts
    /// as a member (sent and not yet stable, queued, or a large message not yet all sent):
    /// a runtime's flow control counts bytes with it, so that large messages are paced by
    /// their size.
    pub fn outstanding_bytes(&self, group: &GroupName) -> usize {
        self.groups.get(group).map_or(0, |g| g.unstable_bytes())
    }

    /// The runtime heard `peer` at `at`: its transport read a frame or a keepalive from it
    /// that the engine may not have handled yet. The peer's silence counts from then at
    /// the latest, so that neither a backlog of unread frames nor one long input of this
    /// process's own gets a live peer suspected. Nothing else changes.
    pub fn handle_heard(&mut self, peer: &ProcessId, at: Instant) {
        if let Some(link) = self.links.get_mut(peer) {
            link.heard_by_transport(at);
        }
    }

    /// Installs (or with `None` removes) the join verifier of `group`: while this process
    /// is a member, a process may join the group only if the verifier admits it.
    pub fn set_join_verifier(&mut self, group: GroupName, verifier: Option<crate::JoinVerifier>) {
        self.gms.set_join_verifier(group, verifier);
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
        if let Some(p) = self.gms.member_named(name, &self.me) {
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
                    link.excuse_silence(paused, now);
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
        let tick = self.timers.get(Timer::Tick).unwrap_or(now);
        if self.status == Status::Member && now > tick + self.config.failure_timeout {
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
        if self.gms.is_removed(&p.from) {
            self.stats.from_excluded += 1;
            let due = self.excluded_replied.get(&p.from).is_none_or(|&t| now - t >= self.config.heartbeat_interval);
            if due {
                self.excluded_replied.insert(p.from.clone(), now);
                self.ctl_out.entry(p.from).or_default().push(Ctl::Excluded);
            }
            return;
        }
        let from = p.from.clone();
        for ctl in p.ctl {
            self.on_ctl(now, &from, ctl);
        }
        if !self.alive() {
            return;
        }
        let window = self.config.reorder_buffer_max;
        let config = &self.config;
        let link = self.links.entry(from.clone()).or_insert_with(|| Link::new(config));
        link.heard(now);
        link.on_ack(now, p.ack, config);
        let mut inorder = Vec::new();
        link.receive(p.seq, p.msgs, window, &mut inorder);
        self.gms.heard(&from);
        for m in inorder {
            self.on_msg(now, &from, m);
            if !self.alive() {
                return;
            }
        }
    }

    fn on_ctl(&mut self, now: Instant, from: &ProcessId, ctl: Ctl) {
        match ctl {
            Ctl::JoinCluster { weight } if self.status == Status::Member => {
                let mut out = GmsOut::default();
                let ctx = Ctx { me: &self.me, config: &self.config, now };
                self.gms.on_join_cluster(&ctx, from, weight, &mut out);
                self.apply_gms(now, out);
            }
            Ctl::JoinCluster { .. } => {}
            Ctl::Redirect { leader } => {
                if self.status == Status::Joining {
                    if self.boot.is_some() {
                        // A cluster is running: join it, through any listed peer later.
                        self.end_boot(now, Some(&leader));
                    }
                    self.ctl_out.entry(leader).or_default().push(Ctl::JoinCluster { weight: self.config.weight });
                    self.timers.set(Timer::JoinRetry, now + self.config.join_retry);
                }
            }
            Ctl::BootPrepare { .. }
            | Ctl::BootPromise { .. }
            | Ctl::BootAccept { .. }
            | Ctl::BootAccepted { .. }
            | Ctl::BootChosen { .. } => match (self.status, self.boot.as_mut()) {
                (Status::Member, _) => {
                    // A peer still bootstrapping: a cluster is running, it should join it.
                    if let Some(leader) = self.gms.leader().cloned() {
                        self.ctl_out.entry(from.clone()).or_default().push(Ctl::Redirect { leader });
                    }
                }
                (Status::Joining, Some(b)) => {
                    let mut out = BootOut::default();
                    b.handle(&self.me, self.config.weight, from, ctl, now, &mut out);
                    self.apply_boot(now, out);
                }
                _ => {}
            },
            Ctl::Excluded => {
                if self.status == Status::Member && self.gms.is_member(from) {
                    if self.gms.leaving() {
                        // It asked to leave, and the others went on without it (the word may
                        // come ahead of the commit that says so): the leave is done.
                        self.finish_leave();
                    } else {
                        self.stop(PartitionReason::Excluded);
                    }
                } else if self.status == Status::Joining && self.boot.is_some() {
                    // It was among a bootstrap's chosen members, missed the news, and the
                    // cluster removed it meanwhile: this incarnation is done (a new one joins).
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
        let config = &self.config;
        for link in self.links.values_mut() {
            if link.retransmit_at.is_some_and(|t| t <= now) {
                link.on_retransmit(now, config);
                self.stats.retransmits += 1;
            }
        }
        if self.timers.expired(Timer::Tick, now) {
            self.timers.set(Timer::Tick, now + self.config.heartbeat_interval / 2);
            self.tick(now);
        }
        self.after_input(now);
    }

    fn tick(&mut self, now: Instant) {
        // (`Boot::joining` ends a join attempt whose time is up: asked once per tick, here.)
        let bootstrapping = self.status == Status::Joining && self.boot.as_mut().is_some_and(|b| !b.joining(now));
        match self.status {
            Status::Joining if bootstrapping => {
                let mut out = BootOut::default();
                if let Some(b) = self.boot.as_mut() {
                    b.tick(&self.me, self.config.weight, now, &mut out);
                }
                self.apply_boot(now, out);
            }
            Status::Joining if self.timers.expired(Timer::JoinRetry, now) && !self.config.contacts.is_empty() => {
                let n = self.config.contacts.len();
                let contact = self.config.contacts[self.join_attempt % n].clone();
                self.join_attempt += 1;
                self.timers.set(Timer::JoinRetry, now + self.config.join_retry);
                if contact.name != self.me.name {
                    self.ctl_out.entry(contact).or_default().push(Ctl::JoinCluster { weight: self.config.weight });
                }
            }
            Status::Member => {
                self.detect_failures(now);
                self.retry_state_fetches(now);
                // A non-member's send waits this many ticks for its relay's acknowledgement.
                let patience = (self.config.failure_timeout.as_micros()
                    / self.config.heartbeat_interval.as_micros().max(1)
                    * 2) as u32;
                let mut out = Vec::new();
                self.relay.tick(RelayCtx { me: &self.me, views: self.gms.views() }, patience, &mut out);
                self.apply_relay(out);
            }
            _ => {}
        }
    }

    /// What the bootstrap asked for: its messages, and the cluster's first membership once
    /// chosen (this process is in it: a member; else it joins the cluster through it).
    fn apply_boot(&mut self, now: Instant, out: BootOut) {
        if out.list_mismatch {
            self.stats.peer_list_mismatches += 1;
        }
        for (to, ctl) in out.ctl {
            self.ctl_out.entry(to).or_default().push(ctl);
        }
        let Some(members) = out.chosen else { return };
        if !members.iter().any(|(p, _)| *p == self.me) {
            let first = members.first().map(|(p, _)| p.clone());
            self.end_boot(now, first.as_ref());
            return;
        }
        self.boot = None;
        let decision = Decision { epoch: 1, members, removed: Vec::new(), groups: Vec::new(), refused: Vec::new() };
        self.gms.install(Arc::new(decision), &Snapshot { groups: Vec::new(), lineages: Vec::new() });
        let others: Vec<ProcessId> = self.gms.members().filter(|p| **p != self.me).cloned().collect();
        for p in others {
            let config = &self.config;
            self.links.entry(p).or_insert_with(|| Link::new(config)).became_member(now);
        }
        self.status = Status::Member;
        self.events.push(Event::Joined);
        tracing::info!(me = %self.me, members = self.gms.members().count(), "formed the cluster with the listed peers");
    }

    /// A cluster is running (or was just chosen without this process): it joins it the
    /// ordinary way, through `via` first, then the listed peers. If it is not in after
    /// twice the longest failure timeout (that cluster died meanwhile, say), it takes up
    /// the bootstrap again.
    fn end_boot(&mut self, now: Instant, via: Option<&ProcessId>) {
        let patience = self.config.failure_timeout_max * 2;
        let Some(boot) = self.boot.as_mut() else { return };
        boot.join_until(now + patience);
        let mut contacts: Vec<ProcessId> = via.map(|p| ProcessId::contact(p.name.clone())).into_iter().collect();
        for p in boot.peers() {
            if contacts.iter().all(|c| c.name != *p) {
                contacts.push(ProcessId::contact(p.clone()));
            }
        }
        self.config.contacts = contacts;
        self.join_attempt = 0;
    }

    /// The runtime found the listed peer `name` (bootstrap from a peer list): it takes part
    /// in the bootstrap, and is a contact to join through.
    pub fn add_peer(&mut self, name: &str) {
        if *name == *self.me.name {
            return;
        }
        if let Some(b) = self.boot.as_mut() {
            b.add_peer(name.into());
        }
        if self.config.contacts.iter().all(|c| &*c.name != name) {
            self.config.contacts.push(ProcessId::contact(name));
        }
    }

    /// Whether this process is still bootstrapping from its peer list (in no cluster yet).
    pub fn bootstrapping(&self) -> bool {
        self.boot.is_some()
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

    /// Joins many groups at once: each result says what [`Engine::join`] of that group
    /// would have, and the joins asked for go to the membership leader together (one
    /// request, decided in one round when the leader has them all).
    pub fn join_many(
        &mut self,
        now: Instant,
        groups: impl IntoIterator<Item = GroupName>,
    ) -> Vec<Result<(), MembershipError>> {
        let results = groups.into_iter().map(|g| self.ask_join(wire::GroupOp::Join(g))).collect();
        self.after_input(now);
        results
    }

    fn request_join(&mut self, now: Instant, op: wire::GroupOp) -> Result<(), MembershipError> {
        self.ask_join(op)?;
        self.after_input(now);
        Ok(())
    }

    /// Records a join request after checking it; the caller settles the input.
    fn ask_join(&mut self, op: wire::GroupOp) -> Result<(), MembershipError> {
        let group = op.group().clone();
        let asked = self.try_join(op);
        if asked.is_err() {
            // A refused join reads no state: a later join must not take its stream.
            self.streamed_joins.remove(&group);
        }
        asked
    }

    fn try_join(&mut self, op: wire::GroupOp) -> Result<(), MembershipError> {
        if !self.alive() {
            return Err(MembershipError::Stopped);
        }
        if self.groups.contains_key(op.group()) {
            return Err(MembershipError::Redundant(op.group().clone()));
        }
        let groups = &self.groups;
        // (Counting exactly scans every request: only near the limit.)
        let near = groups.len() + self.gms.join_ops() >= self.config.max_groups;
        if near && groups.len() + self.gms.pending_joins(|g| groups.contains_key(g)) >= self.config.max_groups {
            let limit = self.config.max_groups;
            tracing::warn!(me = %self.me, group = %op.group(), limit, "join refused: too many groups");
            return Err(MembershipError::TooManyGroups { group: op.group().clone(), limit });
        }
        self.gms.request_op(op);
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

    /// Whether events of a past membership of `group` (its `Left` last) are still held back
    /// from the application, behind a gate or the fence (causal order across groups): a
    /// runtime that joined the group again now would hand them to the new membership's
    /// handle, so it waits until they went.
    pub fn holds_past_membership(&self, group: &GroupName) -> bool {
        !self.groups.contains_key(group) && self.events.is_gated(group)
    }

    /// Leaves the cluster (and every group), cleanly: the others install views without this
    /// process through the membership protocol, with its consent (so a pair goes on as one).
    /// It first serves the states it holds for joiners (a joiner whose only provider left
    /// would lose its state) and lets its own sends arrive (new ones are refused meanwhile);
    /// [`Status::Left`] says when it is done.
    pub fn leave_cluster(&mut self, now: Instant) {
        if self.status == Status::Member {
            self.leave_when_served = true;
            self.leave_asked = true;
            self.after_input(now);
        }
    }

    /// Whether a joiner still waits for a state this process holds for it.
    fn serving_state(&self) -> bool {
        self.groups.values().any(|g| !g.checkpoints.is_empty())
    }

    /// Whether a send of this process is still on its way: held for causal order, queued
    /// or not yet stable in a group it is in, or not yet acknowledged by a relay. A clean
    /// leave waits for them (its sends are a correct process's: they must arrive).
    fn sends_unsettled(&self) -> bool {
        !self.cross.is_idle() || self.groups.values().any(|g| g.unstable() > 0) || self.relay.any_outstanding()
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
            // Leaving the cluster: what it sent goes on, nothing new is taken.
            Status::Member if self.leave_asked => return Err(SendError::Stopped),
            Status::Member => {}
            Status::Joining => return Err(SendError::NotJoined),
            _ => return Err(SendError::Stopped),
        }
        // A member's multicast goes in fragments; a gbcast (one message in a decision) and
        // a non-member's send (relayed whole) are at most one fragment.
        let member = self.groups.contains_key(&group);
        let limit = if member && order != Order::Gbcast {
            self.config.max_message_bytes
        } else {
            self.config.fragment_bytes.max(self.config.packet_bytes_max)
        };
        if payload.len() > limit {
            return Err(SendError::TooLarge { size: payload.len(), limit });
        }
        let expected = if member {
            None
        } else {
            // Non-members send through the group's oldest member (see relay.rs).
            let Some(v) = self.gms.view(&group).filter(|v| !v.members.is_empty()) else {
                return Err(SendError::NoSuchGroup(group));
            };
            Some(v.members.iter().cloned().collect())
        };
        let id = self.next_id();
        self.stats.sent += 1;
        let relayed = expected.is_some();
        self.queries.track(&id, &group, replies, expected);
        let q = Queued { id: id.clone(), order, query: replies != Replies::None, relayed, payload };
        if self.config.causal_across_groups {
            // Released by `release_cross` once its causal past in other groups is settled.
            self.cross.push(group, q);
        } else {
            self.dispatch(group, q);
        }
        Ok(id)
    }

    /// A send leaves: into this member's stream, or to the group's relay. (`q.relayed`: it
    /// was sent as a non-member.)
    fn dispatch(&mut self, group: GroupName, q: Queued) {
        if self.groups.contains_key(&group) {
            self.with_group(&group, |g, out| g.send(q, out));
            return;
        }
        if !q.relayed {
            // Sent as a member of a group it has left since: dropped, as the sends its
            // group still queued when it left (the group went on without it).
            return;
        }
        if self.gms.view(&group).is_none_or(|v| v.members.is_empty()) {
            // The group ended while the send was held.
            self.events.push(Event::SendLost { group, id: q.id });
            return;
        }
        let msg = wire::DataMsg {
            id: q.id,
            seq: 0,
            order: q.order,
            vt: Default::default(),
            query: q.query,
            relayed: true,
            frag: None,
            payload: q.payload,
        };
        let mut out = Vec::new();
        self.relay.push(RelayCtx { me: &self.me, views: self.gms.views() }, group, msg, &mut out);
        self.apply_relay(out);
    }

    /// Sends what causal order across groups allows now (see causal.rs), and hands on the
    /// flushes that waited for them. Returns whether anything went.
    fn release_cross(&mut self) -> bool {
        let mut any = false;
        while self.release_cross_once() {
            any = true;
        }
        any
    }

    fn release_cross_once(&mut self) -> bool {
        if self.cross.is_idle() {
            return false;
        }
        let (groups, relay, gms, events) = (&self.groups, &self.relay, &self.gms, &self.events);
        let settled_epoch = gms.epoch() >= self.forward_ack_epoch;
        let snapshot = |g: &GroupName| groups.get(g).map(|gs| (gs.view.id, gs.epoch, gs.delivered_vector()));
        let met = |n: &Need| match n {
            Need::Sent { group, counter } => {
                settled_epoch
                    // (Its own deliveries of them must have reached the application too:
                    // not while the group's events are held back, for a state or behind
                    // another group's, even once it left the group.)
                    && !events.is_gated(group)
                    && groups.get(group).is_none_or(|gs| gs.own_delivered_everywhere(*counter))
                    && !relay.in_flight_upto(group, *counter)
            }
            Need::Delivered { group, view, epoch, upto } => groups
                .get(group)
                .is_none_or(|gs| gs.view.id != *view || gs.epoch != *epoch || gs.delivered_everywhere(upto)),
        };
        let (sends, flushes) = self.cross.release(snapshot, met);
        let any = !sends.is_empty() || !flushes.is_empty();
        for (group, q) in sends {
            self.dispatch(group, q);
        }
        for (group, last) in flushes {
            self.with_group(&group, |g, out| g.flush(Some(last), out));
        }
        any
    }

    /// Replies to a delivered query (`None`: a null reply, "I will not answer").
    pub fn reply(&mut self, now: Instant, query: &MsgId, payload: Option<Bytes>) {
        if self.status != Status::Member {
            return;
        }
        if query.sender == self.me {
            let me = self.me.clone();
            self.on_reply(&me, query, payload);
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
        if !self.groups.contains_key(group) {
            return Err(FlushError::NotMember(group.clone()));
        }
        match last {
            // Some of the sends it covers are still held for causal order across groups.
            Some(last) if self.cross.held_for(group) > 0 => self.cross.defer_flush(group.clone(), last),
            _ => {
                self.with_group(group, |g, out| g.flush(last, out));
            }
        }
        self.after_input(now);
        Ok(())
    }

    /// The application's answer to a `StateRequest`: the group's state at that point.
    pub fn provide_state(&mut self, now: Instant, group: &GroupName, view: ViewId, state: Bytes) {
        if let Some(cp) = self.groups.get_mut(group).and_then(|g| g.checkpoints.get_mut(&view)) {
            // The engine's part of the state (captured at the join point) goes first.
            cp.state = Some(StateBytes::whole(cp.head(), state));
        }
        self.events.ungate(group);
        self.sync_gate(group);
        self.after_input(now);
    }

    /// The application's answer to a `StateRequest`, to be written in parts
    /// ([`Engine::provide_state_part`]): the state at that point, written while the group
    /// goes on (its later events flow from this call on, so the application must write a
    /// snapshot of the state as it was at the request). Joiners fetch the parts as they
    /// come; the bytes sent to every joiner are dropped, so [`Engine::state_backlog`] says
    /// how much is held. (A joiner that comes to this provider from another one in the
    /// middle of a transfer starts again from the beginning.)
    pub fn begin_state(&mut self, now: Instant, group: &GroupName, view: ViewId) {
        if let Some(cp) = self.groups.get_mut(group).and_then(|g| g.checkpoints.get_mut(&view)) {
            cp.state = Some(StateBytes::streamed(cp.head()));
        }
        self.events.ungate(group);
        self.sync_gate(group);
        self.after_input(now);
    }

    /// The next part of a state begun with [`Engine::begin_state`]; `last` ends it.
    pub fn provide_state_part(&mut self, now: Instant, group: &GroupName, view: ViewId, part: Bytes, last: bool) {
        let Some(cp) = self.groups.get_mut(group).and_then(|g| g.checkpoints.get_mut(&view)) else { return };
        let Some(state) = cp.state.as_mut().filter(|s| s.is_streamed() && !s.is_done()) else { return };
        state.append(part);
        if last {
            state.finish();
        }
        self.serve_waiting(group, view);
        self.after_input(now);
    }

    /// A state begun with [`Engine::begin_state`] will not be finished (the application
    /// stopped writing it): its joiners ask another member, or learn that the state is
    /// lost.
    pub fn abandon_state(&mut self, now: Instant, group: &GroupName, view: ViewId) {
        let cp = self.groups.get_mut(group).and_then(|g| g.checkpoints.remove(&view));
        for j in cp.map(|cp| cp.joiners).unwrap_or_default() {
            self.send_to(&j, Msg::StateUnavailable { group: group.clone(), view });
        }
        self.after_input(now);
    }

    /// Bytes of a state written in parts ([`Engine::provide_state_part`]) that are held
    /// because they were not sent to every joiner yet; `None` once no joiner needs that state
    /// (each has it, or left): the application may stop writing it.
    pub fn state_backlog(&self, group: &GroupName, view: ViewId) -> Option<u64> {
        let cp = self.groups.get(group)?.checkpoints.get(&view)?;
        Some(cp.state.as_ref().map_or(0, |s| s.held() as u64))
    }

    /// The state of `group`, when this process next joins it, comes out in parts through
    /// [`Engine::poll_state_data`] as it arrives, instead of whole in `Event::State` (whose
    /// `state` is then empty: it only marks where the state stands among the group's
    /// events). The joiner fetches the next window of it only once the application has read
    /// (`state_read`) most of what it was handed.
    pub fn stream_state(&mut self, group: GroupName) {
        self.streamed_joins.insert(group);
    }

    /// The next part of a state read as a stream (see [`Engine::stream_state`]).
    pub fn poll_state_data(&mut self) -> Option<StateData> {
        self.state_out.pop_front()
    }

    /// The application read `bytes` more of the state parts it was handed for `group`.
    pub fn state_read(&mut self, now: Instant, group: &GroupName, bytes: u64) {
        if let Some(JoinState::Waiting { stream: Some(s), .. }) = self.groups.get_mut(group).map(|g| &mut g.join) {
            s.unread = s.unread.saturating_sub(bytes);
            self.fetch_more(group);
            self.after_input(now);
        }
    }

    /// The application will not give the state a `StateRequest` asked for (it dropped the
    /// request): the joiners ask another member that has it, or, with none left, learn
    /// that the state is lost (`StateLost`) and leave; this group's later events go on.
    pub fn decline_state(&mut self, now: Instant, group: &GroupName, view: ViewId) {
        let joiners = self
            .groups
            .get_mut(group)
            .and_then(|g| g.checkpoints.remove(&view))
            .map(|cp| cp.joiners)
            .unwrap_or_default();
        if !joiners.is_empty() {
            tracing::warn!(me = %self.me, %group, ?view, "the application declined a state request");
        }
        for j in joiners {
            self.send_to(&j, Msg::StateUnavailable { group: group.clone(), view });
        }
        self.events.ungate(group);
        self.sync_gate(group);
        self.after_input(now);
    }

    /// The caller of a query stops waiting (its deadline passed): a `QueryDone` with the
    /// replies received so far (`satisfied` unless enough came); later replies are ignored.
    pub fn give_up_query(&mut self, id: &MsgId) {
        if let Some(done) = self.queries.give_up(id) {
            self.events.push(Event::QueryDone(done));
        }
    }

    // ------------------------------------------------------------------ outputs

    /// The next frame to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next event for the application.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop()
    }

    /// When to call [`Engine::handle_timeout`] next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if !self.alive() {
            return None;
        }
        let links = self.links.values().filter_map(|l| l.retransmit_at);
        self.timers.next_wake().into_iter().chain(links).min()
    }

    // ------------------------------------------------------------------ the rooms' outputs

    fn send_to(&mut self, to: &ProcessId, mut msg: Msg) {
        if let Msg::Data { pepoch, .. } | Msg::Forward { pepoch, .. } = &mut msg {
            *pepoch = self.gms.epoch().max(self.applying);
        }
        if *to == self.me {
            self.local.push_back(msg);
            return;
        }
        let config = &self.config;
        self.links.entry(to.clone()).or_insert_with(|| Link::new(config)).push(msg);
    }

    /// Carries out what the membership asked for, in order.
    fn apply_gms(&mut self, now: Instant, out: GmsOut) {
        self.stats.rounds += out.rounds;
        for (to, m) in out.sends {
            self.send_to(&to, m);
        }
        for (to, c) in out.ctl {
            // Control messages ride in the next frame to that peer.
            self.ctl_out.entry(to).or_default().push(c);
        }
        if let Some(p) = out.promise {
            // Phase 1 freezes the round's groups here and reports what they hold: those it
            // names, and those of the processes it removes, where this member is not quiet
            // (a group quiet at every survivor changes with nothing in the decision).
            let mut reports = Vec::new();
            let mut freeze = |g: &GroupName, gs: &mut GroupState, report: bool| {
                gs.frozen = Some(p.epoch);
                self.frozen_index.entry(p.epoch).or_default().push(g.clone());
                if report || !gs.quiet() {
                    reports.push(gs.report());
                }
            };
            if p.removing.is_empty() {
                for g in &p.groups {
                    if let Some(gs) = self.groups.get_mut(g) {
                        freeze(g, gs, true);
                    }
                }
            } else {
                // (Every group of this process is looked at: a removal is rare, a round
                // for joins is not.)
                let named: BTreeSet<&GroupName> = p.groups.iter().collect();
                for (g, gs) in &mut self.groups {
                    let is_named = !named.is_empty() && named.contains(g);
                    if is_named || gs.view.members.iter().any(|m| p.removing.contains(m)) {
                        freeze(g, gs, is_named);
                    }
                }
            }
            let promise = Msg::Promise { ballot: p.ballot, committed: p.committed, accepted: p.accepted, reports };
            self.send_to(&p.to, promise);
        }
        if let Some((decision, snapshot)) = out.commit {
            self.apply_decision(now, decision, snapshot);
        }
    }

    /// Carries out what the relay asked for, in order.
    fn apply_relay(&mut self, out: Vec<RelayAction>) {
        for action in out {
            match action {
                RelayAction::Send(to, m) => self.send_to(&to, m),
                RelayAction::Gbcast(group, view, m) => self.gms.request_gbcast(group, view, m),
                RelayAction::ToStream(group, items) => {
                    self.with_group(&group, |g, out| {
                        for item in items {
                            match item {
                                Handover::Send(q) => g.send(q, out),
                                Handover::Hold(id) => g.hold = Some(id),
                            }
                        }
                    });
                }
                RelayAction::Overflow => self.stats.dropped_overflow += 1,
            }
        }
    }

    /// Runs `f` on a group and absorbs its outputs.
    fn with_group<R>(&mut self, group: &GroupName, f: impl FnOnce(&mut GroupState, &mut Out) -> R) -> Option<R> {
        let g = self.groups.get_mut(group)?;
        let mut out = Out::default();
        let r = f(g, &mut out);
        self.absorb(group, out);
        Some(r)
    }

    /// Carries out what a group asked for: sends, gbcasts for the membership, deliveries
    /// (and the queries they complete), completed flushes.
    fn absorb(&mut self, group: &GroupName, out: Out) {
        // Whatever touched the group may owe acks, tokens or stability announcements.
        self.dirty.insert(group.clone());
        self.carry_out(group, out);
    }

    /// [`Engine::absorb`] without marking the group dirty (its housekeeping just ran).
    fn carry_out(&mut self, group: &GroupName, out: Out) {
        if out.bad_fragments > 0 {
            self.stats.rejected_malformed += out.bad_fragments as u64;
            tracing::warn!(me = %self.me, %group, n = out.bad_fragments, "fragments out of place dropped");
        }
        for (to, m) in out.sends {
            self.send_to(&to, m);
        }
        if !out.gbcasts.is_empty() {
            let view = self.groups.get(group).map_or(ViewId(0), |g| g.view.id);
            for m in out.gbcasts {
                self.gms.request_gbcast(group.clone(), view, m);
            }
        }
        for id in out.forward_acks {
            let epoch = self.gms.epoch().max(self.applying);
            self.send_to(&id.sender.clone(), Msg::ForwardAck { id, epoch });
        }
        if self.config.causal_across_groups && out.delivered.iter().any(|d| d.msg.order.is_ordered()) {
            self.cross.delivered(group);
        }
        for d in out.delivered {
            self.stats.delivered += 1;
            if d.msg.query && d.msg.id.sender == self.me {
                let members = self.groups.get(group).map(|g| &g.view.members[..]);
                if let Some(done) = self.queries.delivered(&d.msg.id, members) {
                    self.events.push(Event::QueryDone(done));
                }
            }
            // The last holder takes the fields; otherwise they are refcounted copies.
            let msg = Arc::unwrap_or_clone(d.msg);
            self.events.push(Event::Deliver(Delivery {
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
                    self.events.push(Event::Flushed { group: group.clone(), view });
                }
            }
        }
    }

    /// Tells a group whether its events are held back from the application (what is
    /// delivered meanwhile is not acknowledged as delivered: see causal.rs).
    fn sync_gate(&mut self, group: &GroupName) {
        self.sync_one_gate(group);
        self.sync_opened();
    }

    /// Groups whose events waited only behind another group's gate (the fence) and went
    /// to the application once it opened.
    fn sync_opened(&mut self) {
        for g in self.events.take_opened() {
            self.sync_one_gate(&g);
        }
    }

    fn sync_one_gate(&mut self, group: &GroupName) {
        self.sync_gate_of(group, true);
    }

    /// As `sync_one_gate`; `owes_housekeeping`: whether a gate opening owes the group its
    /// housekeeping (acknowledgements of what it showed), which a group fresh in its view
    /// with no flush waiting does not.
    fn sync_gate_of(&mut self, group: &GroupName, owes_housekeeping: bool) {
        let gated = self.events.is_gated(group);
        if !gated && self.left_gated.remove(group).is_some() {
            self.lift_pending = true;
        }
        if let Some(gs) = self.groups.get_mut(group) {
            if gs.gated && !gated {
                if gs.open_gate() {
                    self.lift_pending = true;
                }
                if owes_housekeeping {
                    self.dirty.insert(group.clone());
                }
            }
            gs.gated = gated;
        }
    }

    /// This process left the cluster: it leaves every group it was in, and is done.
    fn finish_leave(&mut self) {
        let groups: Vec<GroupName> = self.groups.keys().cloned().collect();
        for g in groups {
            if self.groups.remove(&g).is_some_and(|o| matches!(o.join, JoinState::Waiting { .. })) {
                self.events.drop_gate(&g);
            }
            self.fail_queries_of(&g);
            self.events.push(Event::Left { group: g });
        }
        for done in self.queries.fail_all() {
            self.events.push(Event::QueryDone(done));
        }
        self.cross.clear();
        tracing::info!(me = %self.me, "left the cluster");
        self.status = Status::Left;
    }

    fn stop(&mut self, reason: PartitionReason) {
        if !self.alive() {
            return;
        }
        tracing::info!(me = %self.me, ?reason, "stopping: partitioned");
        self.status = Status::Partitioned;
        self.cross.clear();
        for done in self.queries.fail_all() {
            self.events.push(Event::QueryDone(done));
        }
        // Events already queued stand; nothing more is delivered. A joiner still waiting
        // for its state never sees what it held.
        let groups = &self.groups;
        self.events.release_all(|g| groups.get(g).is_some_and(|gs| matches!(gs.join, JoinState::Waiting { .. })));
        self.events.push(Event::Partitioned { reason });
        self.transmits.clear();
    }

    // ------------------------------------------------------------------ routing

    fn on_msg(&mut self, now: Instant, from: &ProcessId, msg: Msg) {
        match msg {
            Msg::Data { ref group, view, epoch, .. } | Msg::Order { ref group, view, epoch, .. } => {
                let group = group.clone();
                self.route(from, &group, view, Some(epoch), msg)
            }
            Msg::Ack { ref group, view, .. } | Msg::Stable { ref group, view, .. } => {
                let group = group.clone();
                self.route(from, &group, view, None, msg)
            }
            Msg::StateFetch { group, view, offset, len, prefix } => {
                self.on_state_fetch(from, &group, view, offset, len, prefix)
            }
            Msg::StateChunk { group, view, offset, total, data } => {
                self.on_state_chunk(from, &group, view, offset, total, data)
            }
            Msg::StateNotReady { group, view } => self.on_state_not_ready(now, from, &group, view),
            Msg::StateUnavailable { group, view } => self.drop_provider(&group, view, from),
            Msg::StateDone { group, view } => self.on_state_done(from, &group, view),
            Msg::Reply { query, payload } => self.on_reply(from, &query, payload),
            Msg::Forward { group, pepoch, .. } if self.lineage_deaths.get(&group).is_some_and(|&e| pepoch < e) => {
                // For a lineage of the group that died since (its origin says SendLost).
            }
            Msg::Forward { pepoch, .. } if self.config.causal_across_groups && pepoch > self.shown_epoch() => {
                // Relayed only once this relay applied the decision the origin sent after.
                if self.held_forwards.len() >= self.config.reorder_buffer_max {
                    self.stats.dropped_overflow += 1; // the origin sends it again
                } else {
                    self.held_forwards.push((from.clone(), msg));
                }
            }
            Msg::Forward { group, fseq, acked, msg, .. } => {
                let member = self.groups.contains_key(&group);
                let mut out = Vec::new();
                self.relay.on_forward(
                    RelayCtx { me: &self.me, views: self.gms.views() },
                    member,
                    from,
                    group,
                    fseq,
                    acked,
                    msg,
                    &mut out,
                );
                self.apply_relay(out);
            }
            Msg::ForwardAck { id, epoch } => {
                self.forward_ack_epoch = self.forward_ack_epoch.max(epoch);
                let mut out = Vec::new();
                self.relay.acked(RelayCtx { me: &self.me, views: self.gms.views() }, &id, &mut out);
                self.apply_relay(out);
            }
            other => self.on_gms(now, from, other),
        }
    }

    /// Routes a group message to its view and epoch, holding messages from the future.
    fn route(&mut self, from: &ProcessId, group: &GroupName, view: ViewId, epoch: Option<u32>, msg: Msg) {
        if let Msg::Data { pepoch, .. } = &msg {
            let key = (group.clone(), from.clone());
            if self.config.causal_across_groups && (*pepoch > self.shown_epoch() || self.barrier.contains(&key)) {
                // Sent after a decision not applied here yet: what the sender delivered in
                // its cuts comes first (causal order across groups). Its later data waits
                // behind it, in order.
                if self.future_len >= self.config.reorder_buffer_max * FUTURE_WINDOWS {
                    self.stats.dropped_overflow += 1;
                    return;
                }
                self.future_len += 1;
                self.future.entry(group.clone()).or_default().push((from.clone(), msg));
                self.barrier.insert(key);
                return;
            }
        }
        let here = self.groups.get(group).map(|g| (g.view.id, g.epoch));
        let known = self.gms.view(group).map(|v| v.id).unwrap_or(ViewId(0));
        let mine = here.unwrap_or((known, u32::MAX));
        let theirs = (view, epoch.unwrap_or(mine.1));
        if here.is_none() && view <= known || here.is_some() && theirs < mine {
            return; // from a view (or epoch) that is over here
        }
        if here.is_none() || theirs > mine {
            if self.future_len >= self.config.reorder_buffer_max * FUTURE_WINDOWS {
                self.stats.dropped_overflow += 1;
                return;
            }
            self.future_len += 1;
            self.future.entry(group.clone()).or_default().push((from.clone(), msg));
            return;
        }
        let from = from.clone();
        let malformed = self.with_group(group, |g, out| {
            let Some(r) = g.rank_of(&from) else { return false };
            match msg {
                Msg::Data { msg, .. } if !g.well_formed(&msg) => return true,
                Msg::Data { msg, .. } => {
                    g.on_data(r, msg);
                    g.try_deliver(out);
                }
                Msg::Order { first, entries, .. } if r == 0 => {
                    g.on_order(first, entries);
                    g.try_deliver(out);
                }
                Msg::Ack { received, delivered, order_len, .. } => g.on_ack(r, received, delivered, order_len),
                Msg::Stable { seq, delivered, order_len, .. } => {
                    g.on_stable(r, seq, delivered, order_len);
                    g.try_deliver(out);
                }
                _ => {}
            }
            false
        });
        if malformed == Some(true) {
            // Authenticated, yet not what this view's members send: a broken peer. Its
            // stream cannot go on past the message, so the view goes on without it.
            self.stats.rejected_malformed += 1;
            tracing::warn!(me = %self.me, %from, %group, "a member sent a malformed message; suspecting it");
            self.suspect(from);
        }
    }

    /// The last decision whose deliveries the application has all been shown: the one
    /// applied, unless a group's events are held back (a state owed or awaited) with a
    /// decision's deliveries (a cut or gbcasts) among them. Data sent after a later
    /// decision waits (causal order across groups).
    fn shown_epoch(&mut self) -> u64 {
        let groups = &self.groups;
        while let Some((e, g)) = self.gated_index.first() {
            if groups.get(g).is_some_and(|gs| gs.gated_decision == Some(*e)) {
                break;
            }
            self.gated_index.pop_first();
        }
        let first = self.gated_index.first().map(|(e, _)| *e);
        let gated = first.into_iter().chain(self.left_gated.values().copied()).min();
        gated.map_or(self.gms.epoch(), |e| e.saturating_sub(1).min(self.gms.epoch()))
    }

    /// Whether some group here is frozen for an epoch not decided yet.
    fn frozen_ahead(&mut self) -> bool {
        let (groups, epoch) = (&self.groups, self.gms.epoch());
        if self.frozen_index.first_key_value().is_some_and(|(e, _)| *e <= epoch) {
            // Entries of decided epochs tell nothing: a group frozen for a later one has
            // an entry of its own. (A round that froze thousands of groups is over: its
            // entries go at once, not with a lookup each.)
            self.frozen_index = self.frozen_index.split_off(&(epoch + 1));
        }
        while let Some(mut first) = self.frozen_index.first_entry() {
            while let Some(g) = first.get().last() {
                if groups.get(g).is_some_and(|gs| gs.frozen.is_some_and(|e| e > epoch)) {
                    return true;
                }
                first.get_mut().pop();
            }
            first.remove();
        }
        false
    }

    /// After a decision (or once a group's held-back events are shown): data and forwards
    /// held until then go on.
    fn lift_barrier(&mut self, now: Instant) {
        let groups: BTreeSet<GroupName> = self.barrier.iter().map(|(g, _)| g.clone()).collect();
        for g in groups {
            self.replay_future(&g);
        }
        for (from, m) in std::mem::take(&mut self.held_forwards) {
            self.on_msg(now, &from, m);
        }
    }

    /// Re-routes held messages of a group after its view or epoch changed.
    fn replay_future(&mut self, group: &GroupName) {
        self.barrier.retain(|(g, _)| g != group);
        if let Some(msgs) = self.future.remove(group) {
            self.future_len -= msgs.len();
            for (from, m) in msgs {
                let (view, epoch) = match &m {
                    Msg::Data { view, epoch, .. } | Msg::Order { view, epoch, .. } => (*view, Some(*epoch)),
                    Msg::Ack { view, .. } | Msg::Stable { view, .. } => (*view, None),
                    _ => continue,
                };
                self.route(&from, group, view, epoch, m);
            }
        }
    }

    fn on_reply(&mut self, from: &ProcessId, query: &MsgId, payload: Option<Bytes>) {
        if let Some(done) = self.queries.on_reply(from, query, payload) {
            self.events.push(Event::QueryDone(done));
        }
    }

    // ------------------------------------------------------------------ membership

    /// Suspects silent members; stops when the majority is out of reach.
    fn detect_failures(&mut self, now: Instant) {
        if self.deaf_since.is_some() {
            return; // not reading: no silence to judge (see `Engine::handle_listening`)
        }
        let members: Vec<ProcessId> = self.gms.members().cloned().collect();
        for p in members {
            if p == self.me || self.gms.is_suspect(&p) {
                continue;
            }
            let config = &self.config;
            let link = self.links.entry(p.clone()).or_insert_with(|| Link::new(config));
            if link.silent_for(now) > link.failure_timeout(config) {
                tracing::info!(me = %self.me, suspect = %p, "suspecting a silent member");
                self.gms.suspect(p);
                self.stats.suspicions += 1;
            }
        }
        self.check_majority();
    }

    fn check_majority(&mut self) {
        if !self.gms.live_quorum(&self.config) {
            self.stop(PartitionReason::LostMajority);
        }
    }

    /// Suspects `p` on the runtime's word (its connection is gone), or for what it sent.
    fn suspect(&mut self, p: ProcessId) {
        if self.status != Status::Member {
            return;
        }
        tracing::info!(me = %self.me, suspect = %p, "suspecting an unreachable member");
        if self.gms.suspect(p) {
            self.stats.suspicions += 1;
            self.check_majority();
        }
    }

    fn on_gms(&mut self, now: Instant, from: &ProcessId, msg: Msg) {
        if matches!(msg, Msg::Prepare { .. }) && self.status != Status::Member {
            return;
        }
        let mut out = GmsOut::default();
        let ctx = Ctx { me: &self.me, config: &self.config, now };
        self.gms.handle(&ctx, &mut self.timers, from, msg, &mut out);
        self.apply_gms(now, out);
    }

    /// The membership's side of each input: requests, and the leader's rounds.
    fn gms_drive(&mut self, now: Instant) {
        if self.status != Status::Member {
            return;
        }
        if self.leave_when_served && !self.serving_state() && !self.sends_unsettled() {
            self.leave_when_served = false;
            self.gms.request_leave_cluster();
        }
        let frozen_ahead = self.frozen_ahead();
        let mut out = GmsOut::default();
        let ctx = Ctx { me: &self.me, config: &self.config, now };
        self.gms.drive(&ctx, &mut self.timers, frozen_ahead, !self.local.is_empty(), &mut out);
        self.apply_gms(now, out);
    }

    /// Applies a committed decision: cuts, gbcasts, new views, the new process view.
    fn apply_decision(&mut self, now: Instant, decision: Arc<Decision>, snapshot: Option<Arc<Snapshot>>) {
        if self.status == Status::Joining {
            let Some(snap) = snapshot else { return };
            if !decision.members.iter().any(|(p, _)| *p == self.me) {
                return;
            }
            self.gms.install(decision, &snap);
            self.status = Status::Member;
            self.boot = None;
            self.events.push(Event::Joined);
            tracing::info!(me = %self.me, "joined the cluster");
            return;
        }
        if self.status != Status::Member || decision.epoch != self.gms.epoch() + 1 {
            return;
        }
        debug_assert!(self.gms.is_member(&self.me), "a member applies decisions");
        self.applying = decision.epoch;
        let d = decision.clone();
        // The changes it lists and those it implies, by group name.
        let mut implied = self.gms.apply_implied(&d);
        let mut listed = d.groups.iter().peekable();
        let mut quiet = implied.iter_mut().peekable();
        loop {
            let take_listed = match (listed.peek(), quiet.peek()) {
                (Some(a), Some(b)) => a.group < b.group,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (None, None) => break,
            };
            if take_listed {
                let gc = listed.next().expect("peeked");
                let fresh = self.gms.set_group_view(gc);
                self.group_changed(gc, fresh, false);
                for m in &gc.gbcasts {
                    self.gms.remember_gbcast(m.id.clone());
                }
            } else {
                self.apply_implied(quiet.next().expect("peeked"));
            }
        }
        let new: Vec<ProcessId> =
            d.members.iter().map(|(p, _)| p).filter(|p| !self.gms.is_member(p)).cloned().collect();
        self.gms.commit(&self.config, decision);
        for p in &d.removed {
            self.links.remove(p); // forgets everything about processes that left
        }
        for (p, _) in d.members.iter().filter(|(p, _)| *p != self.me) {
            let config = &self.config;
            let link = self.links.entry(p.clone()).or_insert_with(|| Link::new(config));
            if new.contains(p) {
                link.became_member(now);
            } else {
                link.hear_from_now_on(now);
            }
        }
        self.resume_frozen(d.epoch);
        for g in self.gms.apply_refusals(&d, &self.me) {
            self.events.push(Event::JoinRefused { group: g });
        }
        let groups = &self.groups;
        self.gms.settle_requests(&self.me, |g| groups.contains_key(g));
        let mut out = Vec::new();
        let (gms, groups) = (&self.gms, &self.groups);
        self.relay.decided(
            RelayCtx { me: &self.me, views: gms.views() },
            |id| gms.gbcast_done(id),
            |g| groups.contains_key(g),
            &mut out,
        );
        self.apply_relay(out);
        for gc in &d.groups {
            self.replay_future(&gc.group);
        }
        if !self.future.is_empty() || !self.barrier.is_empty() {
            // (Nothing held, nothing to replay: most rounds, and every group a crash
            // changes quietly.)
            for imp in &implied {
                self.replay_future(&imp.group);
            }
        }
        self.lift_barrier(now);
        if !d.members.iter().any(|(p, _)| *p == self.me) {
            if self.gms.leaving() {
                self.status = Status::Left;
            } else {
                self.stop(PartitionReason::Excluded);
            }
        }
    }

    /// Groups frozen for epoch `epoch` that its decision did not touch go on; so do groups
    /// whose held gbcast was delivered (possibly before this process joined them).
    fn resume_frozen(&mut self, epoch: u64) {
        let frozen: Vec<(GroupName, bool)> = self
            .groups
            .iter()
            .map(|(n, g)| {
                let hold_done = g.hold.as_ref().is_some_and(|h| self.gms.gbcast_done(h));
                (n, g.frozen.is_some_and(|e| e <= epoch), hold_done)
            })
            .filter(|(_, frozen, hold_done)| *frozen || *hold_done)
            .map(|(n, _, hold_done)| (n.clone(), hold_done))
            .collect();
        for (g, hold_done) in frozen {
            self.with_group(&g, |gs, out| {
                if hold_done {
                    gs.hold = None;
                }
                if gs.frozen.is_some_and(|e| e <= epoch) {
                    gs.unfreeze(out);
                } else {
                    gs.release_queued(out);
                    gs.try_deliver(out);
                }
            });
        }
    }

    /// A change a decision implies (see `Gms::apply_implied`), its view already set. Most
    /// are a quiet group of this process going on without a crashed member: nothing to
    /// deliver, nothing queued or transferred, so its state goes to the next view at once.
    /// (Its view is taken: only the group's name is left for the replay of held messages.)
    fn apply_implied(&mut self, imp: &mut Implied) {
        let fresh = imp.view.members.is_empty();
        let me = &self.me;
        let quick =
            |gs: &GroupState| gs.view.id == imp.old_view && gs.changes_quietly() && imp.view.members.contains(me);
        if fresh || !self.groups.get(&imp.group).is_some_and(|gs| quick(gs)) {
            return self.group_changed(&imp.take_change(), fresh, true);
        }
        let view = imp.take_view();
        let g = &imp.group;
        // As `end_epoch` does it, without what such a group has none of. Its cut (where it
        // stands: `quiet_cut`) delivers nothing, and what applying it would change the
        // next view does not keep. (While a decision is applied `shown_epoch() < applying`
        // always holds: `end_epoch`'s fence is up whenever causal order across groups is.)
        let fence = self.config.causal_across_groups;
        let gs = self.groups.get_mut(g).expect("looked up");
        self.stats.quiet_views += 1;
        if fence {
            gs.gated = true;
            self.events.fence_pushes(true);
            if gs.unshown() && gs.gated_decision.is_none() {
                gs.gated_decision = Some(self.applying);
                self.gated_index.insert((self.applying, g.clone()));
            }
        }
        gs.succeed(view.clone(), &self.me);
        // Housekeeping of a group fresh in its view does nothing unless a flush may
        // complete: only then is it owed (a crash may change thousands of groups).
        let owed = !gs.flushes.is_empty();
        if owed {
            self.dirty.insert(g.clone());
        }
        self.stats.views += 1;
        self.events.push(Event::View { group: g.clone(), view });
        self.queries_view_changed(g);
        if fence {
            self.events.fence_pushes(false);
            self.sync_gate_of(g, owed);
            self.sync_opened();
        }
    }

    /// One group's part of a decision, its view set in the membership (`fresh`: the
    /// group starts a new lineage; `implied`: not listed in the decision, see
    /// `Decision::groups`).
    fn group_changed(&mut self, gc: &GroupChange, fresh: bool, implied: bool) {
        let g = &gc.group;
        let was_member = self.groups.get(g).is_some_and(|s| s.view.id == gc.old_view);
        if fresh {
            self.lineage_died(g);
        }
        if was_member {
            self.stats.quiet_views += u64::from(implied);
            self.end_epoch(gc, implied);
        } else if let Some(v) = gc.new_view.as_ref().filter(|v| v.members.contains(&self.me) && !self.gms.forced_out(g))
        {
            // (A process whose state was lost stays out until its forced leave is decided:
            // it has nothing to continue the group with.)
            self.enter_group(gc, v);
        } else if gc.new_view.is_some() {
            self.queries_view_changed(g);
        }
    }

    /// A member's group: deliver the cut and the gbcasts, then go on in the next epoch,
    /// install the next view, or leave. An `implied` change's cut is where this member
    /// stands: every survivor was quiet in the group, so all delivered the same.
    fn end_epoch(&mut self, gc: &GroupChange, implied: bool) {
        let g = &gc.group;
        let mut out = Out::default();
        // Another group's events are held back with a decision's deliveries: a cut
        // delivers what the barrier would hold, so its deliveries wait behind them (the
        // event queue's fence), not shown, so not acknowledged, until they go.
        let fence = self.config.causal_across_groups && self.shown_epoch() < self.applying;
        let gs = self.groups.get_mut(g).expect("a member");
        debug_assert_eq!(gs.view.id, gc.old_view, "the change ends this member's view");
        let fence = fence && !gs.gated;
        if fence {
            gs.gated = true;
            self.events.fence_pushes(true);
        }
        let quiet;
        let cut = if implied {
            quiet = gs.quiet_cut();
            &quiet
        } else {
            &gc.cut
        };
        let missing = gs.apply_cut(cut, &gc.gbcasts, &mut out);
        if gs.gated && (!out.delivered.is_empty() || gs.unshown()) {
            // Deliveries of the epoch the cut ends are held back from the application, yet
            // the others count them as settled by the cut: messages sent after this
            // decision wait here until they are shown (see `shown_epoch`).
            if gs.gated_decision.is_none() {
                gs.gated_decision = Some(self.applying);
                self.gated_index.insert((self.applying, g.clone()));
            }
        }
        if missing > 0 {
            // Only a broken protocol leaves a cut undelivered; counted (the simulator fails
            // the run on it) and, in debug builds, fatal.
            self.stats.cut_anomalies += missing as u64;
            tracing::error!(me = %self.me, group = %g, missing, "cut not fully delivered");
            debug_assert_eq!(missing, 0, "{}: cut of {g} not fully delivered", self.me);
        }
        match &gc.new_view {
            None => {
                gs.next_epoch(&mut out);
                self.absorb(g, out);
            }
            Some(v) if v.members.contains(&self.me) => {
                self.absorb(g, out);
                let gs = self.groups.get_mut(g).expect("a member");
                let joiners: Vec<ProcessId> =
                    v.members.iter().filter(|m| !gs.view.members.contains(m)).cloned().collect();
                gs.succeed(v.clone(), &self.me);
                // (A view change of thousands of groups looks each up as few times as it
                // can: most have no transfer under way and nothing queued.)
                let transfer = !joiners.is_empty() || gs.transferring();
                let queued = !gs.queued.is_empty();
                if !joiners.is_empty() {
                    self.expect_checkpoint(g, v.id, joiners);
                }
                self.stats.views += 1;
                self.events.push(Event::View { group: g.clone(), view: v.clone() });
                if transfer {
                    self.transfer_view_changed(g);
                }
                self.queries_view_changed(g);
                if queued {
                    self.with_group(g, |gs, out| {
                        gs.release_queued(out);
                        gs.try_deliver(out);
                    });
                }
            }
            Some(_) => {
                self.absorb(g, out);
                let old = self.groups.remove(g);
                let old_decision = old.as_ref().and_then(|o| o.gated_decision);
                if let Some(hold) = old.as_ref().and_then(|o| o.hold.clone()) {
                    // Its gbcast is still on the way: as a non-member now, later sends
                    // to the group wait for it all the same (G5).
                    self.adopt_gbcast(g, &hold);
                }
                if old.is_some_and(|o| matches!(o.join, JoinState::Waiting { .. })) {
                    // It leaves before its state came: what it held was never its to see.
                    self.events.drop_gate(g);
                }
                self.fail_queries_of(g);
                self.cross.left(g);
                self.events.push(Event::Left { group: g.clone() });
                if let Some(e) = old_decision.filter(|_| self.events.is_gated(g)) {
                    // Its deliveries are still held back: later data waits all the same.
                    let e = self.left_gated.get(g).map_or(e, |&k| k.min(e));
                    self.left_gated.insert(g.clone(), e);
                }
            }
        }
        if fence {
            self.events.fence_pushes(false);
            self.sync_gate(g);
        }
    }

    /// This process joins a group: the view now, the state when a provider sends it.
    fn enter_group(&mut self, gc: &GroupChange, v: &GroupView) {
        let g = &gc.group;
        let me = &self.me;
        // Members that go on from the old view hold the group's state.
        let providers: Vec<ProcessId> = v
            .members
            .iter()
            .filter(|m| {
                *m != me
                    && gc.old_view.0 > 0
                    && !gc.cut.streams.is_empty()
                    && gc.cut.streams.iter().any(|(o, _)| o == *m)
            })
            .cloned()
            .collect();
        let mut gs = GroupState::new(g.clone(), v.clone(), me);
        gs.across = self.config.causal_across_groups;
        gs.frag = Fragmenting::of(&self.config);
        let waiting = !providers.is_empty();
        let streamed = self.streamed_joins.remove(g);
        if waiting {
            gs.join = JoinState::waiting(v.id, providers, streamed);
            gs.unchecked = Some(Default::default());
        }
        if streamed && !waiting {
            // Nothing to transfer: the stream ends at once.
            self.state_out.push_back(StateData { group: g.clone(), view: v.id, offset: 0, data: Bytes::new() });
        }
        self.groups.insert(g.clone(), Box::new(gs));
        self.stats.views += 1;
        self.events.push(Event::View { group: g.clone(), view: v.clone() });
        if waiting {
            self.events.gate(g);
            self.sync_gate(g);
            self.start_fetch(g);
        }
        let mut out = Vec::new();
        self.relay.hand_to_stream(&self.me, g, &mut out);
        self.apply_relay(out);
    }

    /// Every member of the group failed or left (the new view, if any, has nobody from the
    /// old one): the group's lineage, and whatever it delivered, is gone. A message in
    /// flight may or may not have been delivered; the sender is told.
    fn lineage_died(&mut self, group: &GroupName) {
        self.lineage_deaths.insert(group.clone(), self.applying);
        let mut lost = self.relay.lineage_died(group);
        // Its gbcasts not yet delivered go with it.
        self.gms.drop_gbcasts_of(group, &mut lost);
        for id in lost {
            self.events.push(Event::SendLost { group: group.clone(), id });
        }
    }

    /// This process left the group with its gbcast `id` still pending: later sends, as a
    /// non-member, stay behind it.
    fn adopt_gbcast(&mut self, group: &GroupName, id: &MsgId) {
        if let Some(msg) = self.gms.pending_gbcast(group, id) {
            self.relay.adopt_gbcast(&self.me, group, msg);
        }
    }

    /// Members no longer in the group will not answer.
    fn queries_view_changed(&mut self, group: &GroupName) {
        if self.queries.is_empty() {
            return;
        }
        let members: BTreeSet<ProcessId> =
            self.gms.view(group).map(|v| v.members.iter().cloned().collect()).unwrap_or_default();
        for done in self.queries.view_changed(group, &members) {
            self.events.push(Event::QueryDone(done));
        }
    }

    fn fail_queries_of(&mut self, group: &GroupName) {
        for done in self.queries.fail_group(group) {
            self.events.push(Event::QueryDone(done));
        }
    }

    // ------------------------------------------------------------------ state transfer

    /// A provider records the checkpoint it will serve (filled by `provide_state`).
    fn expect_checkpoint(&mut self, group: &GroupName, view: ViewId, joiners: Vec<ProcessId>) {
        if let Some(g) = self.groups.get_mut(group) {
            let unsettled = g.unchecked.as_ref().map(|u| u.len());
            let engine_part = crate::group::encode_table(&g.external);
            let joiners = joiners.iter().cloned().collect();
            g.checkpoints.insert(view, Checkpoint::new(engine_part, unsettled, joiners));
        }
        self.events.push(Event::StateRequest { group: group.clone(), view, joiners });
        self.sync_gate(group);
    }

    fn start_fetch(&mut self, group: &GroupName) {
        let len = self.config.state_window_bytes.max(1) as u64;
        let Some(g) = self.groups.get_mut(group) else { return };
        if let JoinState::Waiting { view, providers, idx, buf, resuming, asked, stream, .. } = &mut g.join {
            if let Some(s) = stream.as_mut() {
                // Read as a stream, the state starts again from the beginning with each
                // provider: what the application has read cannot be checked against this
                // provider's bytes (its next part says offset 0).
                *s = Default::default();
                buf.clear();
                *resuming = false;
            }
            let (view, to, offset) = (*view, providers[*idx].clone(), buf.len() as u64);
            // (Digested once per provider that fails in the middle of a transfer.)
            let prefix = (*resuming && offset > 0).then(|| crate::hash::fnv1a(buf));
            *asked = offset + len;
            self.send_to(&to, Msg::StateFetch { group: group.clone(), view, offset, len, prefix });
        }
    }

    /// A joiner's next window, asked for once half of the last one came (the provider
    /// sends the next while the rest of this one is on its way).
    fn fetch_more(&mut self, group: &GroupName) {
        let len = self.config.state_window_bytes.max(1) as u64;
        let Some(g) = self.groups.get_mut(group) else { return };
        if let JoinState::Waiting { view, providers, idx, buf, total, asked, stream, .. } = &mut g.join {
            // Read as a stream: what the application has not read yet counts as not come.
            let have = stream.as_ref().map_or(buf.len() as u64, |s| s.received.saturating_sub(s.unread));
            if *asked >= *total || have + len / 2 < *asked {
                return;
            }
            let (view, to, offset) = (*view, providers[*idx].clone(), *asked);
            *asked = offset + len;
            self.send_to(&to, Msg::StateFetch { group: group.clone(), view, offset, len, prefix: None });
        }
    }

    /// After a view change: a joiner drops the providers that left.
    fn transfer_view_changed(&mut self, group: &GroupName) {
        let Some(g) = self.groups.get_mut(group) else { return };
        let members: BTreeSet<ProcessId> = g.view.members.iter().cloned().collect();
        for cp in g.checkpoints.values_mut() {
            cp.joiners.retain(|j| members.contains(j));
            cp.waiting.retain(|j, _| members.contains(j));
            cp.drop_sent();
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
        let JoinState::Waiting { view: v, providers, idx, buf, retry_at, resuming, .. } = &mut g.join else {
            return;
        };
        let Some(pos) = providers.iter().position(|p| p == gone).filter(|_| *v == view) else { return };
        providers.remove(pos);
        if providers.is_empty() {
            tracing::warn!(me = %self.me, %group, "state transfer failed: no provider left");
            self.events.drop_gate(group);
            if let Some(hold) = self.groups.remove(group).and_then(|o| o.hold) {
                self.adopt_gbcast(group, &hold);
            }
            self.events.push(Event::StateLost { group: group.clone() });
            self.gms.force_leave(group.clone());
            return;
        }
        if pos < *idx {
            *idx -= 1;
        } else if pos == *idx {
            // The next provider goes on from what this one sent, if its state is the same.
            *idx %= providers.len();
            *resuming = !buf.is_empty();
            *retry_at = None;
            self.start_fetch(group);
        }
    }

    fn retry_state_fetches(&mut self, now: Instant) {
        // Only groups whose provider said "not ready" (a tick must not look at every group).
        let groups = &self.groups;
        let retry_at = |g: &GroupName| match groups.get(g).map(|gs| &gs.join) {
            Some(JoinState::Waiting { retry_at, .. }) => *retry_at,
            _ => None,
        };
        self.fetch_retries.retain(|g| retry_at(g).is_some());
        let due: Vec<GroupName> =
            self.fetch_retries.iter().filter(|g| retry_at(g).is_some_and(|t| t <= now)).cloned().collect();
        for g in due {
            if let Some(JoinState::Waiting { retry_at, .. }) = self.groups.get_mut(&g).map(|g| &mut g.join) {
                *retry_at = None;
            }
            self.start_fetch(&g);
        }
    }

    /// A provider's side: the checkpoint for `view` from `offset`, `len` bytes in chunks,
    /// "not ready" while the application has not provided it, "unavailable" if it never
    /// will.
    fn on_state_fetch(
        &mut self,
        from: &ProcessId,
        group: &GroupName,
        view: ViewId,
        offset: u64,
        len: u64,
        prefix: Option<u64>,
    ) {
        let streamed = |cp: &Checkpoint| cp.state.as_ref().is_some_and(|s| s.is_streamed());
        if let Some(cp) =
            self.groups.get_mut(group).and_then(|g| g.checkpoints.get_mut(&view)).filter(|cp| streamed(cp))
        {
            // Written in parts: a resumed transfer starts again from the beginning (this
            // state may not be written that far yet, to compare), and what is not written
            // yet is sent as it comes.
            let start = if prefix.is_some() { 0 } else { offset };
            if start < cp.state.as_ref().map_or(0, |s| s.held_from() as u64) {
                // Dropped: it was sent to every joiner.
                self.send_to(from, Msg::StateUnavailable { group: group.clone(), view });
                return;
            }
            match cp.waiting.get_mut(from) {
                // The next window, asked for while some of the last is still owed.
                Some((_, end)) if *end == start => *end = start.saturating_add(len),
                _ => {
                    cp.waiting.insert(from.clone(), (start, start.saturating_add(len)));
                }
            }
            self.serve_waiting(group, view);
            return;
        }
        let chunk_max = self.config.state_chunk_bytes.max(1);
        let reply = match self.groups.get(group) {
            None => Msg::StateUnavailable { group: group.clone(), view },
            // Past the join point with no checkpoint for it: never will have one. (Before it,
            // the provider has simply not applied the join yet: "not ready".)
            Some(g) if !g.checkpoints.contains_key(&view) && g.view.id >= view => {
                Msg::StateUnavailable { group: group.clone(), view }
            }
            Some(g) => match g.checkpoints.get(&view).and_then(|cp| cp.state.as_ref()) {
                Some(state) if offset <= state.len() as u64 => {
                    // A resumed transfer goes on only over the same bytes.
                    let same = prefix.is_none_or(|d| state.prefix_digest(offset as usize) == d);
                    let start = if same { offset as usize } else { 0 };
                    let window_end = usize::try_from(len).unwrap_or(usize::MAX).saturating_add(start);
                    let end = window_end.min(state.len()).max(start + 1).min(state.len());
                    let total = state.len() as u64;
                    // Every chunk but the last of the window goes here; the last is the reply.
                    let mut at = start;
                    let mut chunks = Vec::new();
                    loop {
                        let to = (at + chunk_max).min(end);
                        chunks.push(Msg::StateChunk {
                            group: group.clone(),
                            view,
                            offset: at as u64,
                            total,
                            data: state.slice(at, to),
                        });
                        at = to;
                        if at >= end {
                            break;
                        }
                    }
                    let last = chunks.pop().expect("one chunk at least");
                    for c in chunks {
                        self.send_to(from, c);
                    }
                    last
                }
                _ => Msg::StateNotReady { group: group.clone(), view },
            },
        };
        self.send_to(from, reply);
    }

    /// A state written in parts: each joiner gets what it asked for as far as it is
    /// written, and learns the total once the last part came.
    fn serve_waiting(&mut self, group: &GroupName, view: ViewId) {
        let chunk_max = self.config.state_chunk_bytes.max(1) as u64;
        let Some(cp) = self.groups.get_mut(group).and_then(|g| g.checkpoints.get_mut(&view)) else { return };
        let Some(state) = cp.state.as_ref() else { return };
        let (len, total, done) = (state.len() as u64, state.total(), state.is_done());
        let mut sends = Vec::new();
        let sent = &mut cp.sent;
        cp.waiting.retain(|j, (next, end)| {
            let upto = (*end).min(len);
            let sent_now = *next < upto;
            while *next < upto {
                let to = (*next + chunk_max).min(upto);
                let data = state.slice(*next as usize, to as usize);
                sends.push((j.clone(), Msg::StateChunk { group: group.clone(), view, offset: *next, total, data }));
                *next = to;
            }
            sent.insert(j.clone(), *next);
            if done && !sent_now && *next >= len {
                // Nothing more to send: an empty chunk tells the total.
                let offset = (*next).min(len);
                sends.push((
                    j.clone(),
                    Msg::StateChunk { group: group.clone(), view, offset, total, data: Bytes::new() },
                ));
            }
            *next < *end && !(done && *next >= len)
        });
        cp.drop_sent();
        for (j, m) in sends {
            self.send_to(&j, m);
        }
    }

    /// The provider has no state to give yet: ask it again after a while.
    fn on_state_not_ready(&mut self, now: Instant, from: &ProcessId, group: &GroupName, view: ViewId) {
        let retry = now + self.config.heartbeat_interval;
        if let Some(JoinState::Waiting { view: v, providers, idx, retry_at, .. }) =
            self.groups.get_mut(group).map(|g| &mut g.join)
        {
            if *v == view && providers[*idx] == *from {
                *retry_at = Some(retry);
                self.fetch_retries.insert(group.clone());
            }
        }
    }

    /// A joiner's side: one chunk of its state; the last one completes the transfer.
    fn on_state_chunk(
        &mut self,
        from: &ProcessId,
        group: &GroupName,
        view: ViewId,
        offset: u64,
        total: u64,
        data: Bytes,
    ) {
        let Some(g) = self.groups.get_mut(group) else { return };
        let JoinState::Waiting { view: v, providers, idx, buf, total: known, resuming, asked, stream, .. } =
            &mut g.join
        else {
            return;
        };
        if *v != view || providers[*idx] != *from {
            return;
        }
        if *resuming && offset == 0 {
            // The provider's state differs from the one the failed provider was sending: it
            // sends its own from the start, as much as this joiner asked for.
            *asked = asked.saturating_sub(buf.len() as u64);
            buf.clear();
        }
        if offset != stream.as_ref().map_or(buf.len() as u64, |s| s.received) {
            return;
        }
        if *resuming {
            self.stats.state_resumed += u64::from(offset > 0);
            *resuming = false;
        }
        *known = total;
        let received = match stream {
            None => {
                if buf.is_empty() && total != TOTAL_UNKNOWN {
                    // Room for the whole state at once: growing by doubling would copy it
                    // and hold up to twice its size. (A peer's `total` is trusted only so far.)
                    buf.reserve_exact(usize::try_from(total).unwrap_or(usize::MAX).min(1 << 32));
                }
                buf.extend_from_slice(&data);
                buf.len() as u64
            }
            Some(s) => {
                s.received += data.len() as u64;
                // The engine's head (its length first) stays here; the application's
                // bytes go on.
                let mut data = data;
                loop {
                    let need = match buf.get(..4) {
                        Some(len) => 4 + u32::from_le_bytes(len.try_into().expect("4 bytes")) as usize,
                        None => 4,
                    };
                    if buf.len() >= need || data.is_empty() {
                        break;
                    }
                    let take = (need - buf.len()).min(data.len());
                    buf.extend_from_slice(&data.split_to(take));
                }
                if !data.is_empty() {
                    let n = data.len() as u64;
                    self.state_out.push_back(StateData { group: group.clone(), view, offset: s.handed, data });
                    s.handed += n;
                    s.unread += n;
                }
                s.received
            }
        };
        if received < total {
            self.fetch_more(group);
            return;
        }
        let all = Bytes::from(std::mem::take(buf));
        let Some((external, state)) = split_state(&all) else {
            self.stats.rejected_malformed += 1;
            tracing::warn!(me = %self.me, %group, "malformed state received; asking again");
            self.start_fetch(group);
            return;
        };
        if let Some(s) = stream {
            self.state_out.push_back(StateData { group: group.clone(), view, offset: s.handed, data: Bytes::new() });
        }
        let providers = std::mem::take(providers);
        g.join = JoinState::Ready;
        let dups = g.settle_unchecked(external);
        let members: BTreeSet<ProcessId> = g.view.members.iter().cloned().collect();
        for p in providers.iter().filter(|p| members.contains(*p)) {
            self.send_to(p, Msg::StateDone { group: group.clone(), view });
        }
        // The state goes ahead of everything held for the group; deliveries that the
        // table shows were duplicates are dropped. (Acknowledgements held back go now.)
        self.events.state_arrived(group, view, state, dups);
        self.dirty.insert(group.clone());
        self.sync_gate(group);
    }

    /// A joiner has its state: the provider forgets the checkpoint once every joiner did.
    fn on_state_done(&mut self, from: &ProcessId, group: &GroupName, view: ViewId) {
        let Some(g) = self.groups.get_mut(group) else { return };
        if let Some(cp) = g.checkpoints.get_mut(&view) {
            cp.joiners.remove(from);
            cp.waiting.remove(from);
            if cp.joiners.is_empty() {
                g.checkpoints.remove(&view);
            } else {
                cp.drop_sent();
            }
        }
    }

    // ------------------------------------------------------------------ output assembly

    fn after_input(&mut self, now: Instant) {
        if self.alive() {
            self.settle(now);
        }
        if !self.corked && self.sends_out() {
            self.flush_links(now);
        }
    }

    /// Whether frames still go out: while alive, and once more after leaving the cluster
    /// (its last messages, a commit it led or its acceptance, are what let the others go
    /// on without it).
    fn sends_out(&self) -> bool {
        self.alive() || self.status == Status::Left
    }

    /// Handles what the input left to do: messages to itself, groups' housekeeping, the
    /// membership's requests and rounds, until nothing is left.
    fn settle(&mut self, now: Instant) {
        loop {
            self.sync_opened();
            if std::mem::take(&mut self.lift_pending) {
                self.lift_barrier(now);
            }
            while let Some(m) = self.local.pop_front() {
                let me = self.me.clone();
                self.on_msg(now, &me, m);
                if !self.alive() {
                    return;
                }
            }
            loop {
                for g in std::mem::take(&mut self.dirty) {
                    let mut out = Out::default();
                    if let Some(gs) = self.groups.get_mut(&g) {
                        // (One lookup per dirty group: this runs after every input.)
                        let hold = gs.state_coming() && self.events.held_bytes(&g) > self.config.joiner_hold_bytes;
                        self.stats.joiner_throttles += u64::from(hold && !gs.acks_held);
                        gs.acks_held = hold;
                        gs.housekeeping(&mut out);
                    }
                    self.carry_out(&g, out);
                }
                // What it learnt may release held sends; the groups they go to owe
                // housekeeping in turn.
                if !self.release_cross() {
                    break;
                }
            }
            self.gms_drive(now);
            if !self.alive() || self.local.is_empty() {
                return;
            }
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
        if std::mem::take(&mut self.corked) && self.sends_out() {
            self.flush_links(now);
        }
    }

    /// Packs pending link messages, acks, heartbeats and control messages into frames.
    fn flush_links(&mut self, now: Instant) {
        let secret = self.config.secret.clone();
        let hb = self.config.heartbeat_interval;
        let max = self.config.packet_bytes_max;
        let member = self.status == Status::Member;
        let mut ctl_out = std::mem::take(&mut self.ctl_out);
        for (peer, link) in self.links.iter_mut() {
            let heartbeat = member && self.gms.is_member(peer) && link.last_sent.is_none_or(|t| now - t >= hb);
            let mut ctl = ctl_out.remove(peer).unwrap_or_default();
            if !(link.has_unsent() || link.ack_dirty || heartbeat || !ctl.is_empty()) {
                continue;
            }
            link.ack_dirty = false;
            loop {
                let (seq, msgs) = link.next_batch(max);
                let end = seq + msgs.len() as u64;
                let packet = Packet {
                    from: self.me.clone(),
                    to: peer.clone(),
                    ack: link.recv_next,
                    seq,
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
}

/// Splits a transferred state into the engine's part and the application's.
fn split_state(all: &Bytes) -> Option<(BTreeMap<ProcessId, u64>, Bytes)> {
    let len = u32::from_le_bytes(all.get(..4)?.try_into().ok()?) as usize;
    let table: Vec<(ProcessId, u64)> = postcard::from_bytes(all.get(4..4usize.checked_add(len)?)?).ok()?;
    Some((table.into_iter().collect(), all.slice(4 + len..)))
}
