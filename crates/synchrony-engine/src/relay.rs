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
//!
//! [`Relay`] holds both sides (this process's sends as a non-member, and the forwards it
//! relays) and writes what it wants done into a list of [`RelayAction`]s that the engine
//! carries out in order.

use crate::group::Queued;
use crate::id::{GroupName, MsgId, ProcessId, ViewId};
use crate::order::Order;
use crate::wire::{DataMsg, GroupView, Msg};
use std::collections::{BTreeMap, VecDeque};

/// Forwards a relay holds for one origin and group before it drops the newest.
const RELAY_HELD_MAX: usize = 4096;

/// What the relay reads of the engine.
#[derive(Clone, Copy)]
pub(crate) struct RelayCtx<'a> {
    pub(crate) me: &'a ProcessId,
    /// Every group's current view (the relay of a group is its oldest member).
    pub(crate) views: &'a BTreeMap<GroupName, GroupView>,
}

/// What the relay asks the engine to do, carried out in the order given.
pub(crate) enum RelayAction {
    /// A reliable message to a peer.
    Send(ProcessId, Msg),
    /// Ask the membership leader to deliver this gbcast (the group's view here was `ViewId`).
    Gbcast(GroupName, ViewId, DataMsg),
    /// Into this process's own stream of the group, in this order.
    ToStream(GroupName, Vec<Handover>),
    /// A forward dropped: too many held for one origin.
    Overflow,
}

/// One step of handing messages to the group's stream.
pub(crate) enum Handover {
    /// Multicast it in the stream.
    Send(Queued),
    /// This gbcast is already asked of the leader: later sends wait for its delivery.
    Hold(MsgId),
}

/// A non-member's send in flight.
#[derive(Debug)]
struct Pending {
    msg: DataMsg,
    fseq: u64,
    /// The relay it went to, once sent.
    relay: Option<ProcessId>,
    /// Ticks since it was sent without an acknowledgement.
    waited: u32,
}

/// A non-member's sends to one group.
#[derive(Debug, Default)]
struct Outbox {
    next_fseq: u64,
    queue: VecDeque<Pending>,
}

/// A relay's view of one origin's forwards to one group.
#[derive(Debug, Default)]
struct RelayIn {
    next: u64,
    held: BTreeMap<u64, DataMsg>,
}

/// Both sides of sends by non-members.
#[derive(Debug, Default)]
pub(crate) struct Relay {
    /// This process's sends as a non-member, per group, in send order.
    outbox: BTreeMap<GroupName, Outbox>,
    /// Relay side: non-members' forwards per (group, origin), released in order.
    relay_in: BTreeMap<(GroupName, ProcessId), RelayIn>,
}

impl Relay {
    /// This process's sends to `group` as a non-member not yet acknowledged by a relay.
    pub(crate) fn outstanding(&self, group: &GroupName) -> usize {
        self.outbox.get(group).map_or(0, |o| o.queue.len())
    }

    /// Whether any send of this process to a group it is not in is still in flight.
    pub(crate) fn any_outstanding(&self) -> bool {
        self.outbox.values().any(|o| !o.queue.is_empty())
    }

    /// Whether a send of this process to `group` with a counter up to `counter` is still
    /// in flight (not acknowledged by a relay, or a gbcast not delivered).
    pub(crate) fn in_flight_upto(&self, group: &GroupName, counter: u64) -> bool {
        self.outbox.get(group).is_some_and(|o| o.queue.iter().any(|p| p.msg.id.counter <= counter))
    }

    /// A one-line dump of this process's sends to `group`, for debugging.
    pub(crate) fn debug_outbox(&self, group: &GroupName) -> Option<String> {
        self.outbox.get(group).map(|q| format!("{q:?}"))
    }

    /// A non-member's multicast (or gbcast) to `group`.
    pub(crate) fn push(&mut self, ctx: RelayCtx, group: GroupName, msg: DataMsg, out: &mut Vec<RelayAction>) {
        let ob = self.outbox.entry(group.clone()).or_default();
        let fseq = ob.next_fseq;
        if msg.order != Order::Gbcast {
            ob.next_fseq += 1;
        }
        ob.queue.push_back(Pending { msg, fseq, relay: None, waited: 0 });
        self.pump(ctx, &group, out);
    }

    /// Sends what may go now: forwards up to the first gbcast, and that gbcast once it
    /// heads the queue.
    fn pump(&mut self, ctx: RelayCtx, group: &GroupName, out: &mut Vec<RelayAction>) {
        let relay = ctx.views.get(group).and_then(|v| v.members.first());
        let Some(ob) = self.outbox.get_mut(group) else { return };
        let acked = ob.queue.iter().find(|p| p.msg.order != Order::Gbcast).map_or(ob.next_fseq, |p| p.fseq);
        let mut gbcast = None;
        for (n, p) in ob.queue.iter_mut().enumerate() {
            if p.msg.order == Order::Gbcast {
                if n == 0 && p.relay.is_none() {
                    p.relay = Some(ctx.me.clone());
                    gbcast = Some(p.msg.clone());
                }
                break;
            }
            match (relay, &p.relay) {
                // Never its own relay: if the view names it, it is about to be a member and
                // will send these itself.
                (Some(r), sent) if sent.as_ref() != Some(r) && r != ctx.me => {
                    p.relay = Some(r.clone());
                    p.waited = 0;
                    // (The engine stamps `pepoch` as it leaves.)
                    let forward =
                        Msg::Forward { group: group.clone(), fseq: p.fseq, acked, pepoch: 0, msg: p.msg.clone() };
                    out.push(RelayAction::Send(r.clone(), forward));
                }
                _ => {}
            }
        }
        if let Some(m) = gbcast {
            let view = ctx.views.get(group).map_or(ViewId(0), |v| v.id);
            out.push(RelayAction::Gbcast(group.clone(), view, m));
        }
    }

    /// At each tick: sends that waited more than `patience` ticks go again, in order (the
    /// relay may have been slow to learn the view); members drop the duplicates.
    pub(crate) fn tick(&mut self, ctx: RelayCtx, patience: u32, out: &mut Vec<RelayAction>) {
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
            self.pump(ctx, &g, out);
        }
    }

    /// A relay delivered this process's message `id` (and, when causal order across
    /// groups is kept, so did every member).
    pub(crate) fn acked(&mut self, ctx: RelayCtx, id: &MsgId, out: &mut Vec<RelayAction>) {
        let groups: Vec<GroupName> = self.outbox.keys().cloned().collect();
        for g in groups {
            if let Some(ob) = self.outbox.get_mut(&g) {
                ob.queue.retain(|p| p.msg.id != *id);
            }
            self.pump(ctx, &g, out);
        }
    }

    /// After a decision: gbcasts delivered leave the queue; a new relay gets what the old
    /// one did not acknowledge; a relay that became a member releases what it held.
    pub(crate) fn decided(
        &mut self,
        ctx: RelayCtx,
        gbcast_done: impl Fn(&MsgId) -> bool,
        member_of: impl Fn(&GroupName) -> bool,
        out: &mut Vec<RelayAction>,
    ) {
        let groups: Vec<GroupName> = self.outbox.keys().cloned().collect();
        for g in groups {
            if let Some(ob) = self.outbox.get_mut(&g) {
                ob.queue.retain(|p| !(p.msg.order == Order::Gbcast && gbcast_done(&p.msg.id)));
            }
            self.pump(ctx, &g, out);
        }
        let keys: Vec<(GroupName, ProcessId)> = self.relay_in.keys().cloned().collect();
        for (g, origin) in keys {
            if member_of(&g) {
                self.release(&g, &origin, out);
            } else if ctx.views.get(&g).is_some_and(|v| !v.members.contains(ctx.me)) {
                // Not a member after all: the origin moves on to the real relay.
                self.relay_in.remove(&(g, origin));
            }
        }
    }

    /// This process left the group with its gbcast `msg` still pending: it heads the
    /// outbox, so what it sends next as a non-member stays behind it.
    pub(crate) fn adopt_gbcast(&mut self, me: &ProcessId, group: &GroupName, msg: DataMsg) {
        let ob = self.outbox.entry(group.clone()).or_default();
        ob.queue.push_front(Pending { msg, fseq: 0, relay: Some(me.clone()), waited: 0 });
    }

    /// Every member of the group failed or left: this process's sends to it in flight are
    /// lost (returned, in send order), and forwards held for the dead lineage must not
    /// reach the new one.
    pub(crate) fn lineage_died(&mut self, group: &GroupName) -> Vec<MsgId> {
        let lost = self.outbox.get_mut(group).map(|ob| ob.queue.drain(..).map(|p| p.msg.id).collect());
        self.relay_in.retain(|(g, _), _| g != group);
        lost.unwrap_or_default()
    }

    /// This process joined the group: what it sent as a non-member and is not yet
    /// acknowledged goes out again in its own stream, ahead of anything new; then the
    /// forwards it held as the group's relay.
    pub(crate) fn hand_to_stream(&mut self, me: &ProcessId, group: &GroupName, out: &mut Vec<RelayAction>) {
        // The outbox stays, empty: its numbering goes on if this process leaves and sends
        // as a non-member again (a relay drops forwards numbered below what it relayed).
        let Some(ob) = self.outbox.get_mut(group) else { return };
        let items = std::mem::take(&mut ob.queue)
            .into_iter()
            .map(|p| {
                if p.msg.order == Order::Gbcast && p.relay.as_ref() == Some(me) {
                    return Handover::Hold(p.msg.id);
                }
                let m = p.msg;
                Handover::Send(Queued { id: m.id, order: m.order, query: m.query, relayed: true, payload: m.payload })
            })
            .collect();
        out.push(RelayAction::ToStream(group.clone(), items));
        let keys: Vec<(GroupName, ProcessId)> = self.relay_in.keys().filter(|(g, _)| g == group).cloned().collect();
        for (g, origin) in keys {
            self.release(&g, &origin, out);
        }
    }

    /// The relay's side: take a non-member's message, in the origin's order. `member`:
    /// whether this process is a member of the group.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn on_forward(
        &mut self,
        ctx: RelayCtx,
        member: bool,
        from: &ProcessId,
        group: GroupName,
        fseq: u64,
        acked: u64,
        msg: DataMsg,
        out: &mut Vec<RelayAction>,
    ) {
        if msg.id.sender != *from || from == ctx.me || msg.order == Order::Gbcast {
            return;
        }
        if !member && ctx.views.get(&group).is_some_and(|v| !v.members.contains(ctx.me)) {
            // Not a relay of this group (the sender's view is stale): it moves on by itself.
            return;
        }
        let r = self.relay_in.entry((group.clone(), from.clone())).or_default();
        r.next = r.next.max(acked);
        if fseq >= r.next {
            if r.held.len() >= RELAY_HELD_MAX {
                out.push(RelayAction::Overflow);
                return;
            }
            r.held.insert(fseq, msg);
        }
        if member {
            self.release(&group, from, out);
        }
    }

    /// Releases an origin's forwards that are next in its order into this member's stream.
    fn release(&mut self, group: &GroupName, origin: &ProcessId, out: &mut Vec<RelayAction>) {
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
            let q = Queued { id: m.id, order: m.order, query: m.query, relayed: true, payload: m.payload };
            out.push(RelayAction::ToStream(group.clone(), vec![Handover::Send(q)]));
        }
    }
}
