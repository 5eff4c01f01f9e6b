//! Sends from processes that are not members of the group.
//!
//! A non-member hands its multicasts to the group's oldest member (the relay), which puts
//! them in its own stream and acknowledges once they are stable there (so in every cut).
//! Unacknowledged messages go again to the new relay when the view changes; members drop
//! the duplicates this can make by the origin's counter (the table travels with state
//! transfer). A non-member's gbcast waits until its earlier sends are acknowledged, and
//! later sends wait for the gbcast, so its messages stay in send order (G5).

use crate::engine::Engine;
use crate::event::Event;
use crate::id::{GroupName, MsgId, ProcessId};
use crate::order::Order;
use crate::wire::{DataMsg, Msg};

/// A non-member's send in flight.
#[derive(Debug)]
pub(crate) struct Pending {
    msg: DataMsg,
    /// The relay it went to, once sent.
    relay: Option<ProcessId>,
    /// Ticks since it was sent without an acknowledgement.
    waited: u32,
}

impl Engine {
    pub(crate) fn outbox_push(&mut self, group: GroupName, msg: DataMsg) {
        self.outbox.entry(group.clone()).or_default().push_back(Pending { msg, relay: None, waited: 0 });
        self.outbox_pump(&group);
    }

    /// Sends what may go now: forwards up to the first gbcast, and that gbcast once it
    /// heads the queue.
    fn outbox_pump(&mut self, group: &GroupName) {
        let relay = self.views.get(group).and_then(|v| v.members.first()).cloned();
        let Some(queue) = self.outbox.get_mut(group) else { return };
        let mut sends = Vec::new();
        let mut gbcast = None;
        for (n, p) in queue.iter_mut().enumerate() {
            if p.msg.order == Order::Gbcast {
                if n == 0 && p.relay.is_none() {
                    p.relay = Some(self.me.clone());
                    gbcast = Some(p.msg.clone());
                }
                break;
            }
            match (&relay, &p.relay) {
                (Some(r), sent) if sent.as_ref() != Some(r) => {
                    p.relay = Some(r.clone());
                    p.waited = 0;
                    sends.push((r.clone(), p.msg.clone()));
                }
                _ => {}
            }
        }
        if queue.is_empty() {
            self.outbox.remove(group);
        }
        for (to, msg) in sends {
            self.send_to(&to, Msg::Forward { group: group.clone(), msg });
        }
        if let Some(m) = gbcast {
            self.gms.gbcasts.push((group.clone(), m));
            self.gms.requests_dirty = true;
        }
    }

    /// Sends that waited too long go again (the relay may not have known the group yet);
    /// members drop the duplicates.
    pub(crate) fn outbox_tick(&mut self) {
        let patience = (self.config.failure_timeout.as_micros() / self.config.heartbeat_interval.as_micros().max(1) * 2) as u32;
        let mut due = Vec::new();
        for (g, q) in &mut self.outbox {
            for p in q.iter_mut().filter(|p| p.msg.order != Order::Gbcast && p.relay.is_some()) {
                p.waited += 1;
                if p.waited > patience {
                    p.relay = None;
                    due.push(g.clone());
                }
            }
        }
        due.dedup();
        for g in due {
            self.outbox_pump(&g);
        }
    }

    pub(crate) fn outbox_acked(&mut self, id: &MsgId) {
        let groups: Vec<GroupName> = self.outbox.keys().cloned().collect();
        for g in groups {
            if let Some(q) = self.outbox.get_mut(&g) {
                q.retain(|p| p.msg.id != *id);
            }
            self.outbox_pump(&g);
        }
    }

    /// After a decision: gbcasts delivered leave the queue; a new relay gets what the old
    /// one did not acknowledge.
    pub(crate) fn outbox_decided(&mut self) {
        let groups: Vec<GroupName> = self.outbox.keys().cloned().collect();
        for g in groups {
            let done = &self.gms.gbcast_done;
            if let Some(q) = self.outbox.get_mut(&g) {
                q.retain(|p| !(p.msg.order == Order::Gbcast && done.contains(&p.msg.id)));
            }
            if self.views.get(&g).is_none_or(|v| v.members.is_empty()) {
                // Every member failed or left: the group's lineage (and whatever it delivered)
                // is gone. A message in flight may or may not have been delivered; say so.
                for p in self.outbox.remove(&g).unwrap_or_default() {
                    self.push_event(Event::SendLost { group: g.clone(), id: p.msg.id });
                }
                continue;
            }
            self.outbox_pump(&g);
        }
    }

    /// This process joined the group: what it sent as a non-member and is not yet
    /// acknowledged goes out again in its own stream, ahead of anything new.
    pub(crate) fn outbox_to_stream(&mut self, group: &GroupName) {
        let Some(queue) = self.outbox.remove(group) else { return };
        let me = self.me.clone();
        self.with_group(group, |g, out| {
            for p in queue {
                if p.msg.order == Order::Gbcast && p.relay.as_ref() == Some(&me) {
                    // Already asked of the leader: later sends wait for its delivery.
                    g.hold = Some(p.msg.id.clone());
                    continue;
                }
                let m = p.msg;
                g.send(crate::group::Queued { id: m.id, order: m.order, query: m.query, payload: m.payload }, out);
            }
        });
    }

    /// The relay's side: multicast a non-member's message in this member's stream.
    pub(crate) fn on_forward(&mut self, from: &ProcessId, group: GroupName, msg: DataMsg) {
        if msg.id.sender != *from || msg.order == Order::Gbcast {
            return;
        }
        if !self.groups.contains_key(&group) {
            return; // the sender moves to the new relay when it learns the view
        }
        let q = crate::group::Queued { id: msg.id, order: msg.order, query: msg.query, payload: msg.payload };
        self.with_group(&group, |g, out| g.send(q, out));
    }
}
