//! Carrying out the application's commands: flow control first (a send that must wait is
//! parked, in order), then the engine call, the host's bookkeeping and the answer.

use crate::host::{Host, IN_FLIGHT_MAX};
use crate::outbox::Sink;
use crate::state::{StateWriteError, Writer};
use crate::{Command, ConsumerId, JoinInto, Reply, Verifiers, WaiterId};
use bytes::Bytes;
use std::collections::BTreeSet;
use synchrony_engine::{FlushError, GroupName, Instant, MembershipError, MsgId, Order, SendError, Status, ViewId};
use synchrony_trace::TraceEvent;

impl Host {
    /// Flow control: a send to a group whose outstanding messages fill the window waits
    /// (with everything sent after it to that group) until the slowest member catches up.
    /// A join of a group whose last membership's events (its `Left`) are still held back
    /// waits until they went to the old consumer: the new one must not take them.
    pub(crate) fn must_wait(&self, c: &Command, behind_parked: bool) -> Option<GroupName> {
        let held = |g: &GroupName| self.engine.as_ref().is_some_and(|e| e.holds_past_membership(g));
        let (group, n, bytes) = match c {
            Command::Join { group, .. } => return held(group).then(|| group.clone()),
            Command::JoinMany { groups, .. } => return groups.iter().find(|g| held(g)).cloned(),
            Command::Send { group, payload, .. } => (group, 1, payload.len()),
            Command::SendBatch { group, payloads, .. } => {
                (group, payloads.len(), payloads.iter().map(Bytes::len).sum::<usize>())
            }
            _ => return None,
        };
        if behind_parked && self.parked.contains_key(group) {
            return Some(group.clone());
        }
        let e = self.engine.as_ref()?;
        if e.status() != Status::Member {
            return None; // the engine answers at once (an error, or a join still under way)
        }
        let out = e.outstanding(group);
        let out_bytes = e.outstanding_bytes(group);
        // A batch larger than a window goes alone.
        let full = out + n > self.config.send_window || out_bytes + bytes > self.config.send_window_bytes;
        (out > 0 && full).then(|| group.clone())
    }

    /// Lets waiting commands go while their groups have room; returns how many went.
    pub(crate) fn release_parked(&mut self, now: Instant) -> usize {
        if self.parked.is_empty() {
            return 0;
        }
        let mut released = 0;
        let groups: Vec<GroupName> = self.parked.keys().cloned().collect();
        for g in groups {
            loop {
                let Some((w, c)) = self.parked.get_mut(&g).and_then(|q| q.pop_front()) else { break };
                if self.must_wait(&c, false).is_some() {
                    self.parked.entry(g.clone()).or_default().push_front((w, c));
                    break;
                }
                released += 1;
                self.execute(now, w, c);
            }
            if self.parked.get(&g).is_some_and(|q| q.is_empty()) {
                self.parked.remove(&g);
            }
        }
        self.counters.flow_waits += released as u64;
        released
    }

    pub(crate) fn execute(&mut self, now: Instant, waiter: Option<WaiterId>, c: Command) {
        match c {
            Command::Join { group, verifiers, stream, consumer } => {
                let joined = self.join(now, group, verifiers, stream, consumer);
                self.reply(waiter, Reply::Joined(joined));
            }
            Command::JoinMany { groups, into } => {
                let joined = self.join_many(now, groups, into);
                self.reply(waiter, Reply::JoinedMany(joined));
            }
            Command::DropMerged { consumer } => self.merged_dropped(now, consumer, Vec::new()),
            Command::Leave { group, dropped } => {
                let left = self.leave(now, group, dropped);
                self.reply(waiter, Reply::Left(left));
            }
            Command::Send { group, order, payload, replies, outcome } => {
                let sent = self.send(now, &group, order, payload, replies, outcome);
                if let (Err(_), Some(o)) = (&sent, outcome) {
                    self.out.push_back(crate::Output::Forget(o));
                }
                self.reply(waiter, Reply::Sent(sent));
            }
            Command::SendBatch { group, order, payloads } => {
                let sent = self.send_batch(now, &group, order, payloads);
                self.reply(waiter, Reply::SentBatch(sent));
            }
            Command::Reply { id, payload } => {
                if let Some(e) = self.engine.as_mut() {
                    e.reply(now, &id, payload);
                }
            }
            Command::Flush { group } => self.flush(now, waiter, group),
            Command::WriteState { group, view, part, last } => self.write_state(now, waiter, group, view, part, last),
            Command::Shutdown => self.begin_shutdown(now, waiter),
            c => self.execute_state(now, c),
        }
    }

    /// The commands about states that have no answer.
    fn execute_state(&mut self, now: Instant, c: Command) {
        match c {
            Command::ProvideState { group, view, state } => {
                // Only for the trace: digesting a large state takes long enough (about 0.4 s
                // for 100 MB) to silence the heartbeats. (A node that stopped meanwhile sends
                // nothing: its trace says nothing either.)
                let running = self.running();
                if let Some(joiners) = self.state_requests.remove(&(group.clone(), view)).filter(|_| running) {
                    let dg = self.digest_of(&state);
                    for j in joiners {
                        let dg = dg.clone();
                        self.record_state(now, || TraceEvent::state_sent(group.as_str(), view.0, j.to_string(), dg));
                    }
                }
                if let Some(e) = self.engine.as_mut() {
                    e.provide_state(now, &group, view, state);
                }
            }
            Command::DeclineState { group, view } => self.decline_state(now, &group, view),
            Command::BeginState { group, view } => {
                let joiners = self.state_requests.remove(&(group.clone(), view)).unwrap_or_default();
                let digest = self.digest();
                self.writers.insert((group.clone(), view), Writer { joiners, digest, waiting: None });
                if let Some(e) = self.engine.as_mut() {
                    e.begin_state(now, &group, view);
                }
            }
            Command::AbandonState { group, view } => {
                self.writers.remove(&(group.clone(), view));
                if let Some(e) = self.engine.as_mut() {
                    e.abandon_state(now, &group, view);
                }
            }
            Command::StateRead { group, bytes } => {
                if let Some(e) = self.engine.as_mut() {
                    e.state_read(now, &group, bytes);
                }
            }
            Command::GiveUpQuery { id } => {
                if let Some(e) = self.engine.as_mut() {
                    e.give_up_query(&id);
                }
            }
            _ => unreachable!("answered by execute"),
        }
    }

    /// `Command::Join`: the engine's join, and (if it took it) the group's consumer.
    fn join(
        &mut self,
        now: Instant,
        group: GroupName,
        verifiers: Verifiers,
        stream: bool,
        consumer: ConsumerId,
    ) -> Result<(), MembershipError> {
        let redundant = self.has_sink(&group) && self.wanted.contains(&group);
        let Some(e) = self.engine.as_mut() else { return Err(MembershipError::Stopped) };
        if redundant {
            return Err(MembershipError::Redundant(group));
        }
        e.set_join_verifier(group.clone(), verifiers.join.clone());
        if stream {
            e.stream_state(group.clone());
        }
        let asked =
            if verifiers.only_if_running { e.join_running(now, group.clone()) } else { e.join(now, group.clone()) };
        if asked.is_ok() {
            if stream {
                let digest = self.digest();
                self.state_sinks.insert(group.clone(), digest);
            }
            self.open_sink(now, group, verifiers, Sink::Own(consumer));
        }
        asked
    }

    /// `Command::JoinMany`: one result per group, in order.
    fn join_many(&mut self, now: Instant, groups: Vec<GroupName>, into: JoinInto) -> Vec<Result<(), MembershipError>> {
        if let JoinInto::Merged(id) = &into {
            // Kept until its consumer is dropped, even if no group joins now.
            self.merged.entry(*id).or_default();
            self.room.entry(*id).or_insert(self.config.consumer_queue);
        }
        // Groups joined already, or named twice, are redundant; the rest go to the engine
        // at once.
        let mut seen = BTreeSet::new();
        let fresh: Vec<bool> =
            groups.iter().map(|g| !(self.has_sink(g) && self.wanted.contains(g)) && seen.insert(g.clone())).collect();
        let Some(e) = self.engine.as_mut() else {
            return groups.iter().map(|_| Err(MembershipError::Stopped)).collect();
        };
        for (g, _) in groups.iter().zip(&fresh).filter(|(_, f)| **f) {
            e.set_join_verifier(g.clone(), None);
        }
        let asked = groups.iter().zip(&fresh).filter(|(_, f)| **f).map(|(g, _)| g.clone());
        let mut results = e.join_many(now, asked).into_iter();
        let mut out = Vec::with_capacity(groups.len());
        for (k, (g, fresh)) in groups.into_iter().zip(fresh).enumerate() {
            if !fresh {
                out.push(Err(MembershipError::Redundant(g)));
                continue;
            }
            if let Err(err) = results.next().unwrap_or(Err(MembershipError::Stopped)) {
                out.push(Err(err));
                continue;
            }
            let sink = match &into {
                JoinInto::Each(consumers) => Sink::Own(consumers[k]),
                JoinInto::Merged(id) => Sink::Merged(*id),
            };
            self.open_sink(now, g, Verifiers::default(), sink);
            out.push(Ok(()));
        }
        out
    }

    /// `Command::Leave`.
    fn leave(&mut self, now: Instant, group: GroupName, dropped: bool) -> Result<(), MembershipError> {
        let r = match self.engine.as_mut() {
            Some(e) => e.leave(now, group.clone()),
            None => Err(MembershipError::Stopped),
        };
        if r.is_ok() {
            self.wanted.remove(&group);
            if dropped {
                // A dropped consumer's leave: nothing more goes to it (nor to the consumer of
                // a later join, which would take this membership's `Left`).
                if let Some(Sink::Own(c)) = self.sinks.remove(&group) {
                    self.room.remove(&c);
                }
                self.backlog.remove(&group);
                self.outgoing.remove(&group);
            }
        }
        r
    }

    fn send(
        &mut self,
        now: Instant,
        group: &GroupName,
        order: Order,
        payload: Bytes,
        replies: synchrony_engine::Replies,
        outcome: Option<WaiterId>,
    ) -> Result<MsgId, SendError> {
        let e = self.engine.as_mut().ok_or(SendError::NotJoined)?;
        let id = e.query(now, group.clone(), order, payload, replies)?;
        self.last_sent.insert(group.clone(), id.clone());
        self.sent_one(now, group, order, &id);
        if let Some(o) = outcome.filter(|_| replies != synchrony_engine::Replies::None) {
            self.queries.insert(id.clone(), o);
        }
        Ok(id)
    }

    /// Multicasts a batch (the engine's follow-up work done once for all of it).
    fn send_batch(
        &mut self,
        now: Instant,
        group: &GroupName,
        order: Order,
        payloads: Vec<Bytes>,
    ) -> Vec<Result<MsgId, SendError>> {
        let Some(e) = self.engine.as_mut() else { return payloads.iter().map(|_| Err(SendError::NotJoined)).collect() };
        let sent = e.send_batch(now, group, order, payloads);
        if let Some(last) = sent.iter().rev().find_map(|r| r.as_ref().ok()) {
            self.last_sent.insert(group.clone(), last.clone());
        }
        if self.tracing || self.config.time_deliveries {
            for id in sent.iter().flatten() {
                self.sent_one(now, group, order, id);
            }
        }
        sent
    }

    /// What the trace and the latency histogram keep of each message sent.
    fn sent_one(&mut self, now: Instant, group: &GroupName, order: Order, id: &MsgId) {
        if self.tracing {
            let view = self.installed.get(group).map(|v| v.0);
            self.record(now, || TraceEvent::sent(group.as_str(), id.to_string(), order, view));
        }
        // Only when timed: it is a map insert per message.
        if self.config.time_deliveries && self.in_flight.len() < IN_FLIGHT_MAX {
            self.in_flight.insert(id.clone(), now);
        }
    }

    /// `Command::Flush`: answered once the engine says the group is flushed.
    fn flush(&mut self, now: Instant, waiter: Option<WaiterId>, group: GroupName) {
        let r = match self.engine.as_mut() {
            Some(e) => e.flush(now, &group),
            None => Err(FlushError::Stopped),
        };
        match r {
            Ok(()) => {
                // "" when nothing was sent before the call: the flush covers nothing.
                let covers = Some(self.last_sent.get(&group).map(|m| m.to_string()).unwrap_or_default());
                self.flushes.entry(group).or_default().push_back((waiter, covers, now));
            }
            Err(err) => self.reply(waiter, Reply::Flushed(Err(err))),
        }
    }

    /// `Command::WriteState`: the part goes to the engine; the writer waits while its
    /// joiners have not fetched enough (`release_writers` answers it then).
    fn write_state(
        &mut self,
        now: Instant,
        waiter: Option<WaiterId>,
        group: GroupName,
        view: ViewId,
        part: Bytes,
        last: bool,
    ) {
        let key = (group, view);
        let running = self.running();
        let tracing = self.tracing;
        let (Some(e), Some(w)) = (self.engine.as_mut().filter(|_| running), self.writers.get_mut(&key)) else {
            let err = if running { StateWriteError::NotNeeded } else { StateWriteError::Stopped };
            return self.reply(waiter, Reply::StateWritten(Err(err)));
        };
        if tracing {
            w.digest.write(&part);
        }
        e.provide_state_part(now, &key.0, view, part, last);
        let held = e.state_backlog(&key.0, view);
        if last {
            let w = self.writers.remove(&key).expect("present");
            let digest = w.digest.finish();
            for j in w.joiners {
                let dg = digest.clone();
                self.record_state(now, || TraceEvent::state_sent(key.0.as_str(), view.0, j.to_string(), dg));
            }
            return self.reply(waiter, Reply::StateWritten(Ok(())));
        }
        match held {
            None => {
                self.writers.remove(&key);
                self.reply(waiter, Reply::StateWritten(Err(StateWriteError::NotNeeded)));
            }
            Some(h) if h >= 2 * self.config.state_window_bytes as u64 => w.waiting = waiter,
            Some(_) => self.reply(waiter, Reply::StateWritten(Ok(()))),
        }
    }

    /// `Command::Shutdown`: a clean leave. The others install views without this node
    /// through the membership protocol (with its consent, so even a pair goes on as one)
    /// rather than suspect it. Bounded: with no majority to decide, it just stops.
    fn begin_shutdown(&mut self, now: Instant, waiter: Option<WaiterId>) {
        let bound = self.config.failure_timeout * 3;
        if let Some(e) = self.engine.as_mut() {
            e.leave_cluster(now);
        }
        self.shutdown = Some((waiter, now + bound));
    }
}
