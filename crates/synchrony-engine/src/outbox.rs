//! Sends from processes that are not members of the group.
//!
//! A non-member hands its multicasts to the group's oldest member (the relay), which puts
//! them in its own stream and acknowledges once it delivered them (a relayed message is
//! delivered under the uniform rule, so then it is in every cut).
//! Forwards carry a sequence number per origin and group, and a relay releases them in
//! that order (holding them while it is not yet a member), so one relay never reorders an
//! origin's messages. Unacknowledged messages go again, in order, to a new relay when the
//! view changes, or after a while; members drop the duplicates this can make by the origin's
//! counter (the table travels with state transfer). A non-member's gbcast waits until its
//! earlier sends are acknowledged, and later sends wait for the gbcast, so its messages stay
//! in send order (G5).

use crate::engine::Engine;
use crate::event::Event;
use crate::id::{GroupName, MsgId, ProcessId};
use crate::order::Order;
use crate::wire::{DataMsg, Msg};
use std::collections::{BTreeMap, VecDeque};

/// A non-member's send in flight.
#[derive(Debug)]
pub(crate) struct Pending {
    msg: DataMsg,
    fseq: u64,
    /// The relay it went to, once sent.
    relay: Option<ProcessId>,
    /// Ticks since it was sent without an acknowledgement.
    waited: u32,
}

/// A non-member's sends to one group.
#[derive(Debug, Default)]
pub(crate) struct Outbox {
    next_fseq: u64,
    queue: VecDeque<Pending>,
}

impl Outbox {
    /// Sends not yet acknowledged by a relay.
    pub(crate) fn len(&self) -> usize {
        self.queue.len()
    }
}

/// A relay's view of one origin's forwards to one group.
#[derive(Debug, Default)]
pub(crate) struct RelayIn {
    next: u64,
    held: BTreeMap<u64, DataMsg>,
}

/// Forwards a relay holds for one origin and group before it drops the newest.
const RELAY_HELD_MAX: usize = 4096;

impl Engine {
    pub(crate) fn outbox_push(&mut self, group: GroupName, msg: DataMsg) {
        let ob = self.outbox.entry(group.clone()).or_default();
        let fseq = ob.next_fseq;
        if msg.order != Order::Gbcast {
            ob.next_fseq += 1;
        }
        ob.queue.push_back(Pending { msg, fseq, relay: None, waited: 0 });
        self.outbox_pump(&group);
    }

    /// Sends what may go now: forwards up to the first gbcast, and that gbcast once it
    /// heads the queue.
    fn outbox_pump(&mut self, group: &GroupName) {
        let relay = self.views.get(group).and_then(|v| v.members.first()).cloned();
        let Some(ob) = self.outbox.get_mut(group) else { return };
        let acked = ob.queue.iter().find(|p| p.msg.order != Order::Gbcast).map_or(ob.next_fseq, |p| p.fseq);
        let mut sends = Vec::new();
        let mut gbcast = None;
        for (n, p) in ob.queue.iter_mut().enumerate() {
            if p.msg.order == Order::Gbcast {
                if n == 0 && p.relay.is_none() {
                    p.relay = Some(self.me.clone());
                    gbcast = Some(p.msg.clone());
                }
                break;
            }
            match (&relay, &p.relay) {
                // Never its own relay: if the view names it, it is about to be a member and
                // will send these itself.
                (Some(r), sent) if sent.as_ref() != Some(r) && *r != self.me => {
                    p.relay = Some(r.clone());
                    p.waited = 0;
                    sends.push((r.clone(), p.fseq, p.msg.clone()));
                }
                _ => {}
            }
        }
        if ob.queue.is_empty() && gbcast.is_none() {
            // Keep the sequence going: a relay may still expect the next number.
        }
        for (to, fseq, msg) in sends {
            self.send_to(&to, Msg::Forward { group: group.clone(), fseq, acked, msg });
        }
        if let Some(m) = gbcast {
            let view = self.views.get(group).map_or(crate::ViewId(0), |v| v.id);
            self.gms.gbcasts.push((group.clone(), view, m));
            self.gms.requests_dirty = true;
        }
    }

    /// Sends that waited too long go again, in order (the relay may have been slow to
    /// learn the view); members drop the duplicates.
    pub(crate) fn outbox_tick(&mut self) {
        let patience =
            (self.config.failure_timeout.as_micros() / self.config.heartbeat_interval.as_micros().max(1) * 2) as u32;
        let mut due = Vec::new();
        for (g, ob) in &mut self.outbox {
            if ob.queue.iter_mut().filter(|p| p.msg.order != Order::Gbcast && p.relay.is_some()).any(|p| {
                p.waited += 1;
                p.waited > patience
            }) {
                for p in ob.queue.iter_mut().filter(|p| p.msg.order != Order::Gbcast) {
                    p.relay = None;
                }
                due.push(g.clone());
            }
        }
        for g in due {
            self.outbox_pump(&g);
        }
    }

    pub(crate) fn outbox_acked(&mut self, id: &MsgId) {
        let groups: Vec<GroupName> = self.outbox.keys().cloned().collect();
        for g in groups {
            if let Some(ob) = self.outbox.get_mut(&g) {
                ob.queue.retain(|p| p.msg.id != *id);
            }
            self.outbox_pump(&g);
        }
    }

    /// After a decision: gbcasts delivered leave the queue; a new relay gets what the old
    /// one did not acknowledge; a relay that became a member releases what it held.
    pub(crate) fn outbox_decided(&mut self) {
        let groups: Vec<GroupName> = self.outbox.keys().cloned().collect();
        for g in groups {
            let done = &self.gms.gbcast_done;
            if let Some(ob) = self.outbox.get_mut(&g) {
                ob.queue.retain(|p| !(p.msg.order == Order::Gbcast && done.contains(&p.msg.id)));
            }
            self.outbox_pump(&g);
        }
        let keys: Vec<(GroupName, ProcessId)> = self.relay_in.keys().cloned().collect();
        for (g, origin) in keys {
            if self.groups.contains_key(&g) {
                self.relay_release(&g, &origin);
            } else if self.views.get(&g).is_some_and(|v| !v.members.contains(&self.me)) {
                // Not a member after all: the origin moves on to the real relay.
                self.relay_in.remove(&(g, origin));
            }
        }
    }

    /// This process left the group with a gbcast still pending: it heads the outbox, so
    /// what it sends next as a non-member stays behind it.
    pub(crate) fn outbox_adopt_gbcast(&mut self, group: &GroupName, id: &MsgId) {
        let Some(msg) = self.gms.gbcasts.iter().find(|(g, _, m)| g == group && m.id == *id).map(|(_, _, m)| m.clone())
        else {
            return;
        };
        let me = self.me.clone();
        let ob = self.outbox.entry(group.clone()).or_default();
        ob.queue.push_front(Pending { msg, fseq: 0, relay: Some(me), waited: 0 });
    }

    /// Every member of the group failed or left (the new view, if any, has nobody from the
    /// old one): the group's lineage, and whatever it delivered, is gone. A message in
    /// flight may or may not have been delivered; the sender is told.
    pub(crate) fn outbox_lineage_died(&mut self, group: &GroupName) {
        let mut lost: Vec<MsgId> =
            self.outbox.get_mut(group).map(|ob| ob.queue.drain(..).map(|p| p.msg.id).collect()).unwrap_or_default();
        // Its gbcasts not yet delivered go with it.
        self.gms.gbcasts.retain(|(g, _, m)| {
            if g == group && !lost.contains(&m.id) {
                lost.push(m.id.clone());
            }
            g != group
        });
        self.gms.requests_dirty = true;
        // Forwards held for the dead lineage must not reach the new one.
        self.relay_in.retain(|(g, _), _| g != group);
        for id in lost {
            self.push_event(Event::SendLost { group: group.clone(), id });
        }
    }

    /// This process joined the group: what it sent as a non-member and is not yet
    /// acknowledged goes out again in its own stream, ahead of anything new.
    pub(crate) fn outbox_to_stream(&mut self, group: &GroupName) {
        let Some(ob) = self.outbox.remove(group) else { return };
        let me = self.me.clone();
        self.with_group(group, |g, out| {
            for p in ob.queue {
                if p.msg.order == Order::Gbcast && p.relay.as_ref() == Some(&me) {
                    // Already asked of the leader: later sends wait for its delivery.
                    g.hold = Some(p.msg.id.clone());
                    continue;
                }
                let m = p.msg;
                let q = crate::group::Queued {
                    id: m.id,
                    order: m.order,
                    query: m.query,
                    relayed: true,
                    payload: m.payload,
                };
                g.send(q, out);
            }
        });
        let keys: Vec<(GroupName, ProcessId)> = self.relay_in.keys().filter(|(g, _)| g == group).cloned().collect();
        for (g, origin) in keys {
            self.relay_release(&g, &origin);
        }
    }

    /// The relay's side: take a non-member's message, in the origin's order.
    pub(crate) fn on_forward(&mut self, from: &ProcessId, group: GroupName, fseq: u64, acked: u64, msg: DataMsg) {
        if msg.id.sender != *from || *from == self.me || msg.order == Order::Gbcast {
            return;
        }
        if !self.groups.contains_key(&group) && self.views.get(&group).is_some_and(|v| !v.members.contains(&self.me)) {
            // Not a relay of this group (the sender's view is stale): it moves on by itself.
            return;
        }
        let r = self.relay_in.entry((group.clone(), from.clone())).or_default();
        r.next = r.next.max(acked);
        if fseq >= r.next {
            if r.held.len() >= RELAY_HELD_MAX {
                self.stats.dropped_overflow += 1;
                return;
            }
            r.held.insert(fseq, msg);
        }
        if self.groups.contains_key(&group) {
            self.relay_release(&group, from);
        }
    }

    fn relay_release(&mut self, group: &GroupName, origin: &ProcessId) {
        let key = (group.clone(), origin.clone());
        let Some(r) = self.relay_in.get_mut(&key) else { return };
        let mut ready = Vec::new();
        while let Some(m) = r.held.remove(&r.next) {
            r.next += 1;
            ready.push(m);
        }
        // Anything older than the acknowledged point is stale.
        let next = r.next;
        r.held.retain(|&f, _| f >= next);
        for m in ready {
            let q =
                crate::group::Queued { id: m.id, order: m.order, query: m.query, relayed: true, payload: m.payload };
            self.with_group(group, |g, out| g.send(q, out));
        }
    }
}
