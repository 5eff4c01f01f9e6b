//! What the host does with the engine's events: each goes to its group's consumer (after
//! the deliveries before it), to a waiter, or to the node's events, and into the trace.

use crate::host::Host;
use crate::state::{Piece, StateWriteError};
use crate::{GroupEvent, NodeEvent, Output, Reply};
use synchrony_engine::{Delivery, Event, FlushError, GroupName, Instant, PartitionReason, StateData};
use synchrony_trace::TraceEvent;

impl Host {
    pub(crate) fn on_event(&mut self, now: Instant, ev: Event) {
        // What the event makes in the trace by itself (built only when tracing).
        let traced = if self.tracing { TraceEvent::of_engine(&ev) } else { None };
        // Replies to flushes and queries, and node events, come after the deliveries the
        // engine made before them. (An event that goes through the group's own stream needs
        // no shared batch handed over before it: thousands of views share one.)
        match ev {
            Event::Deliver(_) => {}
            Event::View { .. }
            | Event::StateRequest { .. }
            | Event::State { .. }
            | Event::Left { .. }
            | Event::StateLost { .. }
            | Event::JoinRefused { .. } => self.hand_over_outgoing(),
            _ => self.hand_over_all(),
        }
        match ev {
            Event::Joined => self.on_joined(now),
            Event::View { group, view } => {
                self.record_traced(now, traced);
                if self.tracing {
                    // (Only the trace's `sent` events read it: a map insert per view.)
                    self.installed.insert(group.clone(), view.id);
                }
                self.deliver_to_group(&group, GroupEvent::View(view));
            }
            Event::Deliver(d) => self.on_delivery(now, d, traced),
            Event::StateRequest { group, view, joiners } => {
                if self.tracing {
                    // For the trace's state_sent events (see `ProvideState`).
                    self.state_requests.insert((group.clone(), view), joiners.clone());
                }
                if !self.has_sink(&group) {
                    // No consumer to answer it (dropped, and its leave is on the way).
                    return self.decline_state(now, &group, view);
                }
                self.deliver_to_group(&group, GroupEvent::StateRequest { view, joiners });
            }
            Event::State { group, view, state } => self.on_state(now, group, view, state),
            Event::Flushed { group, view } => {
                if let Some((waiter, covers, asked)) = self.flushes.get_mut(&group).and_then(|q| q.pop_front()) {
                    time("synchrony_flush_seconds", now.saturating_since(asked));
                    self.record(now, || TraceEvent::flushed(group.as_str(), view.0, covers));
                    self.reply(waiter, Reply::Flushed(Ok(view)));
                }
            }
            Event::QueryDone(q) => {
                if let Some(waiter) = self.queries.remove(&q.id) {
                    self.reply(Some(waiter), Reply::QueryDone(q));
                }
            }
            Event::Left { group } | Event::StateLost { group } => {
                self.record_traced(now, traced);
                // A state still being read as a stream never comes whole.
                self.state_sinks.remove(&group);
                self.installed.remove(&group);
                self.wanted.remove(&group);
                for (waiter, _, _) in self.flushes.remove(&group).unwrap_or_default() {
                    self.reply(waiter, Reply::Flushed(Err(FlushError::NotMember(group.clone()))));
                }
                self.deliver_to_group(&group, GroupEvent::Left);
            }
            Event::JoinRefused { group } => {
                tracing::warn!(group = %group, "join refused by a member's verifier");
                self.wanted.remove(&group);
                self.verifiers.remove(&group);
                self.state_sinks.remove(&group);
                self.deliver_to_group(&group, GroupEvent::JoinRefused);
                if let Some(crate::outbox::Sink::Own(c)) = self.sinks.remove(&group) {
                    self.room.remove(&c);
                }
            }
            Event::SendLost { group, id } => self.out.push_back(Output::Node(NodeEvent::SendLost { group, id })),
            Event::Partitioned { reason } => {
                self.record_traced(now, traced);
                self.on_stopped(reason);
            }
        }
    }

    /// Writes what an engine event made in the trace (see `TraceEvent::of_engine`).
    fn record_traced(&mut self, now: Instant, traced: Option<TraceEvent>) {
        if let Some(e) = traced {
            self.record(now, || e);
        }
    }

    /// This incarnation is a member of the cluster: it asks for the groups it wants.
    fn on_joined(&mut self, now: Instant) {
        let Some(me) = self.me().cloned() else { return };
        tracing::info!(me = %me, "joined the cluster");
        self.out.push_back(Output::Node(NodeEvent::Joined { me }));
        let wanted: Vec<GroupName> = self.wanted.iter().cloned().collect();
        let Some(e) = &mut self.engine else { return };
        for g in wanted {
            // A group joined only if it runs is joined again the same way: a new incarnation
            // must not start it anew, empty, while its members are down.
            let _ = match self.verifiers.get(&g).is_some_and(|v| v.only_if_running) {
                true => e.join_running(now, g),
                false => e.join(now, g),
            };
        }
    }

    /// A joiner's state: whole, or (read as a stream) its place among the group's events.
    fn on_state(&mut self, now: Instant, group: GroupName, view: synchrony_engine::ViewId, state: bytes::Bytes) {
        if let Some(t) = self.join_started.remove(&group) {
            time("synchrony_state_transfer_seconds", now.saturating_since(t));
        }
        match self.streamed.remove(&group).filter(|(v, _, _)| *v == view) {
            Some((_, len, digest)) => {
                self.record_state(now, || TraceEvent::state_loaded(group.as_str(), view.0, digest));
                self.deliver_to_group(&group, GroupEvent::StateStreamed { view, len });
            }
            None => {
                if self.tracing {
                    let dg = self.digest_of(&state);
                    self.record_state(now, || TraceEvent::state_loaded(group.as_str(), view.0, dg));
                }
                self.deliver_to_group(&group, GroupEvent::State { view, state });
            }
        }
    }

    /// A delivery goes to its group's consumer, unless the group's message verifier rejects
    /// it (a rejected query gets a null reply).
    fn on_delivery(&mut self, now: Instant, d: Delivery, traced: Option<TraceEvent>) {
        let verifier = self.verifiers.get(&d.group).and_then(|v| v.message.clone());
        if verifier.is_some_and(|f| !f(&d.id.sender, &d.payload)) {
            self.counters.rejected_by_verifier += 1;
            tracing::warn!(group = %d.group, sender = %d.id.sender, "message verifier rejected a message");
            if let (true, Some(e)) = (d.query, self.engine.as_mut()) {
                e.reply(now, &d.id, None);
            }
            return;
        }
        if let Some(t) = (!self.in_flight.is_empty()).then(|| self.in_flight.remove(&d.id)).flatten() {
            time("synchrony_send_to_delivery_seconds", now.saturating_since(t));
        }
        self.record_traced(now, traced);
        let group = d.group.clone();
        self.deliver_to_group(&group, GroupEvent::Message(d));
    }

    /// This incarnation stopped: every waiter hears of it, every consumer gets
    /// `Partitioned`, and the runtime is told whether to start a new incarnation.
    fn on_stopped(&mut self, reason: PartitionReason) {
        if let Some(me) = self.me() {
            tracing::warn!(me = %me, ?reason, "this incarnation stopped");
        }
        self.installed.clear();
        for (_, q) in std::mem::take(&mut self.flushes) {
            for (waiter, _, _) in q {
                self.reply(waiter, Reply::Flushed(Err(FlushError::Stopped)));
            }
        }
        for (_, waiter) in std::mem::take(&mut self.queries) {
            self.out.push_back(Output::Forget(waiter));
        }
        self.in_flight.clear();
        self.state_sinks.clear();
        self.streamed.clear();
        for (_, w) in std::mem::take(&mut self.writers) {
            self.reply(w.waiting, Reply::StateWritten(Err(StateWriteError::Stopped)));
        }
        let groups: Vec<GroupName> = self.sinks.keys().cloned().collect();
        for g in groups {
            self.deliver_to_group(&g, GroupEvent::Partitioned(reason));
        }
        self.hand_over_all();
        self.out.push_back(Output::Node(NodeEvent::Partitioned { reason }));
        self.last_sent.clear();
        // (On a peer list, always: the cluster forms again when a majority is back.)
        let rejoin = self.config.rejoin || self.config.on_list;
        self.out.push_back(Output::Stopped { reason, rejoin });
    }

    /// A part of a state read as a stream goes to its reader; the empty last part ends the
    /// stream.
    pub(crate) fn on_state_data(&mut self, now: Instant, d: StateData) {
        let tracing = self.tracing;
        let fresh = if tracing && d.offset == 0 { Some(self.digest()) } else { None };
        let Some(digest) = self.state_sinks.get_mut(&d.group) else {
            // Nobody reads it: it counts as read (the transfer must not wait for it).
            return self.handle_state_unread(now, &d.group, d.data.len() as u64);
        };
        if d.data.is_empty() {
            let digest = self.state_sinks.remove(&d.group).expect("present").finish();
            self.streamed.insert(d.group.clone(), (d.view, d.offset, digest));
            self.out.push_back(Output::StatePiece { group: d.group, piece: Piece::End });
            return;
        }
        if tracing {
            if let Some(fresh) = fresh {
                *digest = fresh;
            }
            digest.write(&d.data);
        }
        self.out
            .push_back(Output::StatePiece { group: d.group, piece: Piece::Data { offset: d.offset, data: d.data } });
    }

    /// A piece of a streamed state that nobody will read (its reader is gone): it counts as
    /// read, so the transfer goes on.
    pub fn handle_state_unread(&mut self, now: Instant, group: &GroupName, bytes: u64) {
        if let (true, Some(e)) = (bytes > 0, self.engine.as_mut()) {
            e.state_read(now, group, bytes);
        }
    }

    /// Writes of states in parts waiting for their joiners: they return once what is held is
    /// under two windows, or nobody needs the state any more.
    pub(crate) fn release_writers(&mut self) {
        if self.writers.values().all(|w| w.waiting.is_none()) {
            return;
        }
        let limit = 2 * self.config.state_window_bytes as u64;
        let Some(e) = self.engine.as_ref() else { return };
        let mut answers = Vec::new();
        for ((g, v), w) in self.writers.iter_mut() {
            let answer = match e.state_backlog(g, *v) {
                None => Err(StateWriteError::NotNeeded),
                Some(held) if held < limit => Ok(()),
                Some(_) => continue,
            };
            if let Some(waiter) = w.waiting.take() {
                answers.push((waiter, answer));
            }
        }
        for (waiter, answer) in answers {
            self.reply(Some(waiter), Reply::StateWritten(answer));
        }
    }
}

/// Records a duration in a histogram (through the `metrics` facade: nothing without a
/// recorder installed).
fn time(name: &'static str, d: std::time::Duration) {
    metrics::histogram!(name).record(d.as_secs_f64());
}
