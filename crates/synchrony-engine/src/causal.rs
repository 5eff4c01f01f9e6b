//! Causal order across groups (G6), by the ISIS "conservative" rule.
//!
//! Inside a group, vector timestamps keep causal order. Across groups nothing travels with
//! a message: instead, a process holds an ordered send to group `g` until everything
//! ordered it sent or delivered in other groups is delivered at every member there. Then
//! no receiver can meet the send before its causal past in another group, and no receiver
//! ever waits on another group: the sequencer, the flush cut and state transfer stay
//! per group. One group alone pays nothing; a process that moves from one group to another
//! waits for one round of acknowledgements.
//!
//! Three things make "delivered at every member" hold through failures and relays:
//! - Members acknowledge what they delivered as well as what they hold, and each stream's
//!   owner announces the prefix every member delivered (`Stable::delivered`).
//! - A view change (or a gbcast) settles the old view's past by its cut. Every message
//!   carries its sender's membership epoch (`pepoch`), and a receiver holds it until it has
//!   applied that decision too, so what the sender delivered in a cut is delivered first
//!   everywhere, without waiting for anyone to say so.
//! - A relay acknowledges a non-member's message only once every member delivered it (or
//!   the view ended), with its epoch; the origin's later ordered sends wait for the
//!   acknowledgement and for that epoch.
//!
//! [`CrossGroup`] holds the sends and what they wait for; the engine answers whether a [`Need`]
//! is met, and sends what the gate releases. Unordered and fifo sends neither wait nor make
//! others wait (they wait only behind a held send to their own group, to keep its stream in
//! send order).

use crate::group::Queued;
use crate::id::{GroupName, ViewId};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// What must hold before a held ordered send may go.
#[derive(Debug)]
pub(crate) enum Need {
    /// This process's sends to `group` up to `counter` are delivered at every member.
    Sent { group: GroupName, counter: u64 },
    /// What this process had delivered of each stream of `group` in view `view`, epoch
    /// `epoch`, is delivered at every member (met at once if the view or epoch is over).
    Delivered { group: GroupName, view: ViewId, epoch: u32, upto: Vec<u64> },
}

/// What this process did in a group since its past there was last handed to a send.
#[derive(Debug, Default)]
struct Touch {
    /// The counter of its last ordered send there.
    sent: Option<u64>,
    /// When (the gate's clock) it first delivered an ordered message there since then.
    delivered: Option<u64>,
}

/// A send held by the gate.
#[derive(Debug)]
struct Held {
    group: GroupName,
    q: Queued,
    /// The gate's clock when the application sent it: deliveries after it are not in its
    /// causal past.
    at: u64,
    /// Taken when the send is the first ordered one held; what remains unmet.
    needs: Option<Vec<Need>>,
}

/// What [`CrossGroup::release`] lets go: the sends to make, in order, and the flushes
/// (group, last counter) to hand on.
pub(crate) type Released = (Vec<(GroupName, Queued)>, Vec<(GroupName, u64)>);

/// The sends held for causal order across groups, and this process's unsettled past.
#[derive(Debug, Default)]
pub(crate) struct CrossGroup {
    /// Orders deliveries and sends at this process.
    clock: u64,
    touched: BTreeMap<GroupName, Touch>,
    held: VecDeque<Held>,
    /// Flush calls (group, last counter) waiting for the held sends to their group.
    flushes: Vec<(GroupName, u64)>,
}

impl CrossGroup {
    /// This process delivered an ordered message in `group`.
    pub(crate) fn delivered(&mut self, group: &GroupName) {
        self.clock += 1;
        let now = self.clock;
        if let Some(t) = self.touched.get_mut(group) {
            t.delivered.get_or_insert(now);
        } else {
            self.touched.insert(group.clone(), Touch { sent: None, delivered: Some(now) });
        }
    }

    /// A send to `group`; it goes out through [`CrossGroup::release`], at once if nothing holds it.
    pub(crate) fn push(&mut self, group: GroupName, q: Queued) {
        self.clock += 1;
        self.held.push_back(Held { group, q, at: self.clock, needs: None });
    }

    /// Whether nothing is held.
    pub(crate) fn is_idle(&self) -> bool {
        self.held.is_empty() && self.flushes.is_empty()
    }

    /// Sends held for `group`.
    pub(crate) fn held_for(&self, group: &GroupName) -> usize {
        self.held.iter().filter(|h| h.group == *group).count()
    }

    /// A flush of `group` covering sends up to `last`, some of them still held: it is
    /// handed on once none of the group's sends is held.
    pub(crate) fn defer_flush(&mut self, group: GroupName, last: u64) {
        self.flushes.push((group, last));
    }

    /// This process's membership of `group` ended: the flushes it asked there, still
    /// waiting for held sends, are answered no more (the runtime told their callers the
    /// process left). Kept, they would be handed on to a later membership of the group and
    /// complete there at once, answering that membership's flushes early (G12, chaos seed
    /// 3055).
    pub(crate) fn left(&mut self, group: &GroupName) {
        self.flushes.retain(|(g, _)| g != group);
    }

    /// Drops everything (the process stopped or left: its queries fail all at once).
    pub(crate) fn clear(&mut self) {
        self.touched.clear();
        self.flushes.clear();
        self.held.clear();
    }

    /// Releases, in order, the sends that may go, up to and including the first ordered
    /// one released (call again once it is sent): an ordered send once it is the first
    /// ordered one held and its needs are met (taken from what this process did in other
    /// groups when it got there: `snapshot` gives a member group's view, epoch and
    /// delivered vector), any send once no earlier send to its group is held. Returns the
    /// sends to make, and the flushes that may now be handed on.
    pub(crate) fn release(
        &mut self,
        snapshot: impl Fn(&GroupName) -> Option<(ViewId, u32, Vec<u64>)>,
        met: impl Fn(&Need) -> bool,
    ) -> Released {
        let mut out = Vec::new();
        let mut blocked: BTreeSet<GroupName> = BTreeSet::new();
        let mut ordered_blocked = false;
        let Self { touched, held, flushes, .. } = self;
        let mut i = 0;
        while i < held.len() {
            let h = &mut held[i];
            let ordered = h.q.order.is_ordered();
            let go = if blocked.contains(&h.group) || (ordered && ordered_blocked) {
                false
            } else if !ordered {
                true
            } else {
                let (group, at) = (&h.group, h.at);
                let needs = h.needs.get_or_insert_with(|| take_needs(touched, group, at, &snapshot));
                needs.retain(|n| !met(n));
                needs.is_empty()
            };
            if go {
                let h = held.remove(i).expect("an index in range");
                out.push((h.group.clone(), h.q));
                if ordered {
                    touched.entry(h.group).or_default().sent = Some(out.last().expect("just pushed").1.id.counter);
                    // The next ordered send's needs are judged once this one has left
                    // (its place in a stream or an outbox is what they look at).
                    break;
                }
            } else {
                blocked.insert(h.group.clone());
                ordered_blocked |= ordered;
                i += 1;
            }
        }
        let mut due = Vec::new();
        flushes.retain(|(g, last)| {
            let waiting = held.iter().any(|h| h.group == *g);
            if !waiting {
                due.push((g.clone(), *last));
            }
            waiting
        });
        (out, due)
    }
}

/// What a send to `group`, made at clock `at`, waits for: this process's past in every
/// other group, which is then no longer its unsettled past (later sends wait for this one
/// instead). Deliveries after `at` are not its past; deliveries before it that an earlier
/// send's needs covered are settled already (that send went first).
fn take_needs(
    touched: &mut BTreeMap<GroupName, Touch>,
    group: &GroupName,
    at: u64,
    snapshot: &impl Fn(&GroupName) -> Option<(ViewId, u32, Vec<u64>)>,
) -> Vec<Need> {
    let mut needs = Vec::new();
    for (g, t) in touched.iter_mut().filter(|(g, _)| *g != group) {
        if let Some(counter) = t.sent.take() {
            needs.push(Need::Sent { group: g.clone(), counter });
        }
        if t.delivered.is_some_and(|d| d < at) {
            t.delivered = None;
            // The vector now covers every delivery so far, those after `at` too.
            if let Some((view, epoch, upto)) = snapshot(g) {
                needs.push(Need::Delivered { group: g.clone(), view, epoch, upto });
            }
        }
    }
    touched.retain(|_, t| t.sent.is_some() || t.delivered.is_some());
    needs
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::{MsgId, ProcessId};
    use crate::order::Order;
    use bytes::Bytes;

    fn q(counter: u64, order: Order) -> Queued {
        let id = MsgId { sender: ProcessId::new("a", 1), counter };
        Queued { id, order, query: false, relayed: false, payload: Bytes::new() }
    }

    fn g(name: &str) -> GroupName {
        GroupName::new(name)
    }

    fn counters(sent: &[(GroupName, Queued)]) -> Vec<u64> {
        sent.iter().map(|(_, q)| q.id.counter).collect()
    }

    #[test]
    fn one_group_never_waits() {
        let mut gate = CrossGroup::default();
        gate.delivered(&g("a"));
        gate.push(g("a"), q(0, Order::Total));
        gate.push(g("a"), q(1, Order::Causal));
        let snapshot = |_: &GroupName| Some((ViewId(1), 0, vec![3]));
        assert_eq!(counters(&gate.release(snapshot, |_| false).0), [0]);
        assert_eq!(counters(&gate.release(snapshot, |_| false).0), [1]);
    }

    /// A flush deferred behind held sends of a group this process then left is not handed
    /// on to a later membership of the group (where it would complete at once: G12).
    #[test]
    fn a_deferred_flush_ends_with_the_membership_it_was_asked_in() {
        let mut gate = CrossGroup::default();
        gate.defer_flush(g("b"), 3);
        gate.defer_flush(g("c"), 4);
        gate.left(&g("b"));
        let (_, due) = gate.release(|_| None, |_| false);
        assert_eq!(due, vec![(g("c"), 4)]);
    }

    #[test]
    fn an_ordered_send_waits_for_the_past_in_other_groups_and_others_wait_behind_it() {
        let mut gate = CrossGroup::default();
        gate.push(g("a"), q(0, Order::Safe));
        let (sent, _) = gate.release(|_| None, |_| false);
        assert_eq!(counters(&sent), [0]);
        gate.delivered(&g("c"));
        gate.push(g("b"), q(1, Order::Causal)); // waits for a's send and c's delivery
        gate.push(g("c"), q(2, Order::Fifo)); // another group, fifo: goes
        gate.push(g("b"), q(3, Order::Fifo)); // behind the held send to b
        gate.push(g("c"), q(4, Order::Total)); // behind the held ordered send
        gate.defer_flush(g("b"), 3);
        let snapshot = |_: &GroupName| Some((ViewId(2), 0, vec![5, 6]));
        let (sent, due) = gate.release(snapshot, |_| false);
        assert_eq!(counters(&sent), [2]);
        assert!(due.is_empty());
        let held = gate.held.front().and_then(|h| h.needs.as_ref()).expect("needs taken");
        assert!(matches!(&held[0], Need::Sent { group, counter: 0 } if *group == g("a")));
        assert!(matches!(&held[1], Need::Delivered { group, upto, .. } if *group == g("c") && upto == &[5, 6]));
        let (sent, due) = gate.release(snapshot, |n| matches!(n, Need::Sent { .. }));
        assert!(sent.is_empty(), "one need met, one not");
        let (sent, due2) = gate.release(snapshot, |_| true);
        assert_eq!(counters(&sent), [1], "the pass ends with an ordered send");
        assert!(due2.is_empty());
        let (sent, due2) = gate.release(snapshot, |_| true);
        assert_eq!(counters(&sent), [3, 4]);
        assert!(due.is_empty());
        assert_eq!(due2, [(g("b"), 3)]);
        // The send to c took b's past (send 1) as its need; c's past is now that send.
        assert!(!gate.touched.contains_key(&g("b")));
        assert_eq!(gate.touched[&g("c")].sent, Some(4));
    }
}
