//! Where each group's events go, and how they are handed over: in batches, to consumers
//! that have room, the rest waiting in order (a backlog) while a consumer is behind.

use crate::host::Host;
use crate::{Batch, ConsumerId, GroupEvent, Output};
use std::collections::VecDeque;
use synchrony_engine::{GroupName, Instant, ViewId};

/// Deliveries handed to a consumer at once (one hand-over and one wake-up).
pub(crate) const GROUP_BATCH: usize = 256;

/// Where a group's events go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Sink {
    /// The group's own consumer.
    Own(ConsumerId),
    /// A consumer shared with other groups.
    Merged(ConsumerId),
}

impl Sink {
    fn consumer(self) -> ConsumerId {
        match self {
            Sink::Own(c) | Sink::Merged(c) => c,
        }
    }
}

/// A shared consumer's side in the host: the batch being filled, and the batches it had no
/// room for.
#[derive(Default)]
pub(crate) struct MergedOut {
    pub(crate) pending: Vec<(GroupName, GroupEvent)>,
    pub(crate) backlog: VecDeque<Vec<(GroupName, GroupEvent)>>,
}

impl Host {
    /// Takes one batch's room of `consumer`, if it has any.
    fn take_room(&mut self, consumer: ConsumerId) -> bool {
        match self.room.get_mut(&consumer) {
            Some(n) if *n > 0 => {
                *n -= 1;
                true
            }
            _ => false,
        }
    }

    /// A consumer has room for `batches` more batches (what it waited for since it was
    /// behind, or more): what waits for it is handed over.
    pub fn handle_room(&mut self, now: Instant, consumer: ConsumerId, batches: usize) {
        if let Some(n) = self.room.get_mut(&consumer) {
            *n = batches;
        }
        if self.merged.contains_key(&consumer) {
            self.drain_merged(consumer);
        } else {
            let groups: Vec<GroupName> =
                self.backlog.keys().filter(|g| self.sinks.get(*g) == Some(&Sink::Own(consumer))).cloned().collect();
            for g in groups {
                self.drain_backlog(&g);
            }
        }
        self.listen_after_room(now);
    }

    fn listen_after_room(&mut self, now: Instant) {
        if self.behind_since.is_some() && !self.behind() {
            self.behind_since = None;
            if let Some(e) = self.engine.as_mut() {
                e.handle_listening(now, true);
            }
        }
    }

    /// A consumer is gone (the runtime found its reader dropped), with a batch it could not
    /// take: each of its groups is treated as a dropped handle (left, and the state requests
    /// it will never answer declined).
    pub fn handle_consumer_gone(&mut self, now: Instant, consumer: ConsumerId, batch: Batch) {
        match batch {
            Batch::Merged(batch) => self.merged_dropped(now, consumer, batch),
            Batch::Events(group, mut batch) => {
                if self.sinks.get(&group) == Some(&Sink::Own(consumer)) {
                    for rest in self.backlog.remove(&group).unwrap_or_default() {
                        batch.extend(rest);
                    }
                    return self.handle_dropped(now, &group, batch);
                }
                // Its group was let go already: only the requests in the batch remain.
                self.decline_requests(now, &group, batch);
            }
        }
    }

    /// A consumer had no room for a batch after all (it took fewer than it was counted to
    /// have room for): the batch waits first in its backlog, until [`Host::handle_room`].
    pub fn handle_full(&mut self, consumer: ConsumerId, batch: Batch) {
        self.room.insert(consumer, 0);
        match batch {
            Batch::Merged(b) => match self.merged.get_mut(&consumer) {
                Some(m) => m.backlog.push_front(b),
                None => tracing::error!("a batch for a shared consumer the host let go"),
            },
            Batch::Events(group, b) => self.backlog.entry(group).or_default().push_front(b),
        }
    }

    /// The consumer of a group's events, if it has one.
    pub fn consumer_of(&self, group: &GroupName) -> Option<ConsumerId> {
        self.sinks.get(group).map(|s| s.consumer())
    }

    /// Queues an event for a group's consumer. Deliveries go in batches (handed over when
    /// one is full and at the end of each pump); any other event goes at once, after the
    /// deliveries before it.
    pub(crate) fn deliver_to_group(&mut self, group: &GroupName, ev: GroupEvent) {
        match self.sinks.get(group) {
            None => return,
            Some(Sink::Merged(id)) => return self.deliver_merged(*id, group, ev),
            Some(Sink::Own(_)) => {}
        }
        let message = matches!(ev, GroupEvent::Message(_));
        if !message && self.outgoing.is_empty() && self.backlog.is_empty() {
            // Nothing queued before it anywhere (a view change of thousands of groups
            // comes this way): straight to the consumer, as `hand_over` would send it.
            return self.send_batch_to(group, vec![ev]);
        }
        let batch = self.outgoing.entry(group.clone()).or_default();
        batch.push(ev);
        if !message || batch.len() >= GROUP_BATCH {
            self.hand_over(group);
        }
    }

    /// Hands a group's queued events to its consumer, behind any batches still waiting.
    fn hand_over(&mut self, group: &GroupName) {
        let Some(batch) = self.outgoing.remove(group).filter(|b| !b.is_empty()) else { return };
        if let Some(q) = self.backlog.get_mut(group) {
            q.push_back(batch);
            return self.drain_backlog(group);
        }
        self.send_batch_to(group, batch);
    }

    /// Queues an event for a shared consumer: every event goes in its batch, handed over
    /// when the batch is full and at the end of each pump (`hand_over_all`), so that a view
    /// change of thousands of groups costs the application a few wake-ups.
    fn deliver_merged(&mut self, id: ConsumerId, group: &GroupName, ev: GroupEvent) {
        let Some(m) = self.merged.get_mut(&id) else { return };
        if m.pending.is_empty() {
            self.merged_pending.push(id);
        }
        m.pending.push((group.clone(), ev));
        if m.pending.len() >= GROUP_BATCH {
            self.hand_over_merged(id);
        }
    }

    /// Hands a shared consumer's queued events over, behind any batches still waiting.
    fn hand_over_merged(&mut self, id: ConsumerId) {
        let Some(m) = self.merged.get_mut(&id).filter(|m| !m.pending.is_empty()) else { return };
        let batch = std::mem::take(&mut m.pending);
        if !m.backlog.is_empty() {
            m.backlog.push_back(batch);
            return self.drain_merged(id);
        }
        if self.take_room(id) {
            self.out.push_back(Output::Merged { consumer: id, events: batch });
        } else if let Some(m) = self.merged.get_mut(&id) {
            m.backlog.push_back(batch);
        }
    }

    /// Hands a shared consumer's waiting batches over while it has room.
    fn drain_merged(&mut self, id: ConsumerId) {
        while self.merged.get(&id).is_some_and(|m| !m.backlog.is_empty()) && self.take_room(id) {
            let batch = self.merged.get_mut(&id).and_then(|m| m.backlog.pop_front()).expect("waiting");
            self.out.push_back(Output::Merged { consumer: id, events: batch });
        }
    }

    /// A shared consumer is gone: each of its groups is treated as a dropped handle (left,
    /// its state requests declined), with what was still to be handed over to it.
    pub(crate) fn merged_dropped(&mut self, now: Instant, id: ConsumerId, batch: Vec<(GroupName, GroupEvent)>) {
        self.room.remove(&id);
        let Some(m) = self.merged.remove(&id) else {
            return self.decline_merged_requests(now, batch);
        };
        let groups: Vec<GroupName> =
            self.sinks.iter().filter(|(_, s)| **s == Sink::Merged(id)).map(|(g, _)| g.clone()).collect();
        for g in groups {
            self.handle_dropped(now, &g, Vec::new());
        }
        let rest = batch.into_iter().chain(m.backlog.into_iter().flatten()).chain(m.pending).collect();
        self.decline_merged_requests(now, rest);
    }

    fn decline_merged_requests(&mut self, now: Instant, events: Vec<(GroupName, GroupEvent)>) {
        for (g, ev) in events {
            if let GroupEvent::StateRequest { view, .. } = ev {
                self.decline_state(now, &g, view);
            }
        }
    }

    /// Sends a batch to a group's own consumer, nothing of the group waiting before it.
    fn send_batch_to(&mut self, group: &GroupName, batch: Vec<GroupEvent>) {
        let Some(Sink::Own(c)) = self.sinks.get(group).copied() else { return };
        if self.take_room(c) {
            self.out.push_back(Output::Events { consumer: c, group: group.clone(), events: batch });
        } else {
            self.backlog.insert(group.clone(), VecDeque::from([batch]));
        }
    }

    /// A group's consumer is gone without leaving: the node leaves the group, and the state
    /// requests it will never answer are declined.
    pub(crate) fn handle_dropped(&mut self, now: Instant, group: &GroupName, batch: Vec<GroupEvent>) {
        if let Some(Sink::Own(c)) = self.sinks.remove(group) {
            self.room.remove(&c);
        }
        self.backlog.remove(group);
        self.outgoing.remove(group);
        if self.wanted.remove(group) {
            if let Some(e) = self.engine.as_mut() {
                let _ = e.leave(now, group.clone());
            }
        }
        self.decline_requests(now, group, batch);
    }

    /// Declines the state requests among `events` of `group`.
    fn decline_requests(&mut self, now: Instant, group: &GroupName, events: Vec<GroupEvent>) {
        for ev in events {
            if let GroupEvent::StateRequest { view, .. } = ev {
                self.decline_state(now, group, view);
            }
        }
    }

    pub(crate) fn decline_state(&mut self, now: Instant, group: &GroupName, view: ViewId) {
        self.state_requests.remove(&(group.clone(), view));
        if let Some(e) = self.engine.as_mut() {
            e.decline_state(now, group, view);
        }
    }

    /// Hands a group's waiting batches over while its consumer has room.
    fn drain_backlog(&mut self, group: &GroupName) {
        let Some(Sink::Own(c)) = self.sinks.get(group).copied() else {
            self.backlog.remove(group);
            return;
        };
        while self.backlog.get(group).is_some_and(|q| !q.is_empty()) && self.take_room(c) {
            let batch = self.backlog.get_mut(group).and_then(|q| q.pop_front()).expect("waiting");
            self.out.push_back(Output::Events { consumer: c, group: group.clone(), events: batch });
        }
        if self.backlog.get(group).is_some_and(|q| q.is_empty()) {
            self.backlog.remove(group);
        }
    }

    /// Hands every group's queued events over (before anything that must follow them).
    pub(crate) fn hand_over_all(&mut self) {
        for id in std::mem::take(&mut self.merged_pending) {
            self.hand_over_merged(id);
        }
        self.hand_over_outgoing();
    }

    /// Hands the queued deliveries of groups with their own consumers over.
    pub(crate) fn hand_over_outgoing(&mut self) {
        if self.outgoing.is_empty() {
            return;
        }
        let groups: Vec<GroupName> = self.outgoing.keys().cloned().collect();
        for g in groups {
            self.hand_over(&g);
        }
    }

    /// Whether a group's consumer (own or shared) is registered.
    pub(crate) fn has_sink(&self, group: &GroupName) -> bool {
        self.sinks.contains_key(group)
    }

    /// Registers a group's consumer, with a queue's room if it is new.
    pub(crate) fn open_sink(&mut self, now: Instant, group: GroupName, verifiers: crate::Verifiers, sink: Sink) {
        self.room.entry(sink.consumer()).or_insert(self.config.consumer_queue);
        self.verifiers.insert(group.clone(), verifiers);
        self.join_started.insert(group.clone(), now);
        self.sinks.insert(group.clone(), sink);
        self.wanted.insert(group);
    }
}
