//! The engine's queue of events for the application, with a gate per group.
//!
//! A group's gate holds its events back while the application owes the group something
//! (its state for joiners, after a `StateRequest`) or while this process, a joiner, waits
//! for its state. Events of other groups flow on.
//!
//! Events a gate releases pass a fence first: none is shown after an ordered delivery
//! another closed gate still holds from earlier (it may be that delivery's effect: causal
//! order across groups). What the fence stops waits, in push order, until that gate opens.

use crate::event::Event;
use crate::id::{GroupName, ViewId};
use bytes::Bytes;
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// Events held back for one group, with their place in the order of pushes.
#[derive(Default)]
struct Gate {
    /// How many reasons hold the gate closed.
    count: usize,
    held: VecDeque<(u64, Event)>,
    /// The payload bytes of the deliveries in `held`.
    bytes: usize,
    /// The place of the first ordered delivery in `held` (see [`EventQueue::fence`]).
    first_ordered: Option<u64>,
}

impl Gate {
    fn find_first_ordered(&self) -> Option<u64> {
        self.held.iter().find(|(_, ev)| is_ordered_delivery(ev)).map(|(at, _)| *at)
    }
}

fn delivery_bytes(ev: &Event) -> usize {
    match ev {
        Event::Deliver(d) => d.payload.len(),
        _ => 0,
    }
}

fn is_ordered_delivery(ev: &Event) -> bool {
    matches!(ev, Event::Deliver(d) if d.order.is_ordered())
}

/// Events for the application, in order, with a gate per group.
///
/// Every event keeps its place in the order of pushes: events a gate releases go back to
/// that place among the events not yet taken, and wait behind the fence (see the module's
/// docs) while it is before them.
#[derive(Default)]
pub(crate) struct EventQueue {
    ready: VecDeque<(u64, Event)>,
    gates: BTreeMap<GroupName, Gate>,
    /// (first ordered delivery held, group) of every gate holding one: the fence is the
    /// first, found without looking at every gate (a joiner may wait for thousands).
    fronts: BTreeSet<(u64, GroupName)>,
    /// The next push's place (even; a joiner's state takes the odd place before the first
    /// event its gate held).
    next: u64,
    /// Released events were appended out of place: sort before the next pop.
    unsorted: bool,
    /// Released events behind the fence, by place.
    fenced: BTreeMap<u64, Event>,
    /// How many events of each group wait behind the fence (a group with some is still
    /// held back: its later events queue behind them).
    fenced_per_group: BTreeMap<GroupName, usize>,
    /// Groups whose last fenced event went to the application (see `take_opened`).
    opened: Vec<GroupName>,
    /// Pushes pass the fence too (a cut's deliveries while another group holds back
    /// deliveries a decision settled: see `fence_pushes`).
    fencing: bool,
}

impl std::fmt::Debug for EventQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let gates: Vec<String> = self
            .gates
            .iter()
            .map(|(g, gate)| {
                let first = gate.held.front().map(|(at, ev)| format!("{at} {ev:?}")).unwrap_or_default();
                format!("{g}: count {} held {} first [{:.120}]", gate.count, gate.held.len(), first)
            })
            .collect();
        write!(
            f,
            "ready {} gates {:?} fenced {:?} fence {}",
            self.ready.len(),
            gates,
            self.fenced_per_group,
            self.fence()
        )
    }
}

impl EventQueue {
    /// The next event the application may see.
    pub(crate) fn pop(&mut self) -> Option<Event> {
        if std::mem::take(&mut self.unsorted) {
            self.ready.make_contiguous().sort_by_key(|(at, _)| *at);
        }
        self.ready.pop_front().map(|(_, ev)| ev)
    }

    fn place(&mut self) -> u64 {
        let at = self.next;
        self.next += 2;
        at
    }

    /// Queues an event, behind its group's gate if that is closed. A state request closes
    /// its group's gate behind it until the application answers.
    pub(crate) fn push(&mut self, ev: Event) {
        let at = self.place();
        if let Some(g) = ev.group() {
            if let Some(gate) = self.gates.get_mut(g) {
                if gate.first_ordered.is_none() && is_ordered_delivery(&ev) {
                    gate.first_ordered = Some(at);
                    self.fronts.insert((at, g.clone()));
                }
                gate.bytes += delivery_bytes(&ev);
                gate.held.push_back((at, ev));
                return;
            }
            if matches!(ev, Event::StateRequest { .. }) {
                self.gates.entry(g.clone()).or_default().count += 1;
            }
            if self.fenced_per_group.contains_key(g) || (self.fencing && at >= self.fence()) {
                // Behind its group's fenced events, or behind the fence itself.
                *self.fenced_per_group.entry(g.clone()).or_default() += 1;
                self.fenced.insert(at, ev);
                return;
            }
        }
        self.ready.push_back((at, ev));
    }

    /// Whether pushes from now on pass the fence as released events do: a view change's
    /// cut delivers messages that may follow deliveries another group's gate still holds
    /// (ones a decision settled, which nothing else waits for).
    pub(crate) fn fence_pushes(&mut self, on: bool) {
        self.fencing = on;
    }

    /// The place of the first ordered delivery a closed gate holds: released events from
    /// later wait for it.
    fn fence(&self) -> u64 {
        self.fronts.first().map_or(u64::MAX, |(at, _)| *at)
    }

    /// Keeps `fronts` true after `group`'s gate changed other than by a push (or went).
    fn refresh_front(&mut self, group: &GroupName) {
        let Some(gate) = self.gates.get_mut(group) else { return };
        let first = gate.find_first_ordered();
        if first != gate.first_ordered {
            if let Some(old) = gate.first_ordered {
                self.fronts.remove(&(old, group.clone()));
            }
            if let Some(new) = first {
                self.fronts.insert((new, group.clone()));
            }
            gate.first_ordered = first;
        }
    }

    /// Removes `group`'s gate.
    fn remove_gate(&mut self, group: &GroupName) -> Option<Gate> {
        let gate = self.gates.remove(group)?;
        if let Some(at) = gate.first_ordered {
            self.fronts.remove(&(at, group.clone()));
        }
        Some(gate)
    }

    /// Events a gate let go: to the application up to the fence, the rest behind it.
    fn release(&mut self, events: VecDeque<(u64, Event)>) {
        if events.is_empty() {
            return;
        }
        let fence = self.fence();
        let mut shown = VecDeque::with_capacity(events.len());
        for (at, ev) in events {
            match ev.group() {
                // Behind the fence, or behind its group's events that are.
                Some(g) if at >= fence || self.fenced_per_group.contains_key(g) => {
                    *self.fenced_per_group.entry(g.clone()).or_default() += 1;
                    self.fenced.insert(at, ev);
                }
                _ if at >= fence => {
                    self.fenced.insert(at, ev);
                }
                _ => shown.push_back((at, ev)),
            }
        }
        self.show(shown);
    }

    fn show(&mut self, mut events: VecDeque<(u64, Event)>) {
        if events.is_empty() {
            return;
        }
        if self.ready.is_empty() {
            self.ready = events;
        } else {
            self.ready.append(&mut events);
            self.unsorted = true;
        }
    }

    /// A gate opened or went: fenced events before the new fence go to the application.
    fn settle(&mut self) {
        if self.fenced.is_empty() {
            return;
        }
        let fence = self.fence();
        let rest = self.fenced.split_off(&fence);
        let due = std::mem::replace(&mut self.fenced, rest);
        let mut shown = VecDeque::with_capacity(due.len());
        for (at, ev) in due {
            if let Some(g) = ev.group() {
                if let Some(n) = self.fenced_per_group.get_mut(g) {
                    *n -= 1;
                    if *n == 0 {
                        self.fenced_per_group.remove(g);
                        if !self.gates.contains_key(g) {
                            self.opened.push(g.clone());
                        }
                    }
                }
            }
            shown.push_back((at, ev));
        }
        self.show(shown);
    }

    /// Groups whose events were held back only behind the fence, and no longer are.
    pub(crate) fn take_opened(&mut self) -> Vec<GroupName> {
        std::mem::take(&mut self.opened)
    }

    /// Closes a group's gate once more (a joiner waits for its state).
    pub(crate) fn gate(&mut self, group: &GroupName) {
        self.gates.entry(group.clone()).or_default().count += 1;
    }

    /// The payload bytes of the deliveries a group's gate holds.
    pub(crate) fn held_bytes(&self, group: &GroupName) -> usize {
        self.gates.get(group).map_or(0, |g| g.bytes)
    }

    /// Whether a group's events are held back (its gate is closed, or some wait behind
    /// the fence).
    pub(crate) fn is_gated(&self, group: &GroupName) -> bool {
        self.gates.contains_key(group) || self.fenced_per_group.contains_key(group)
    }

    /// Opens a group's gate once: when nothing holds it any more, everything up to and
    /// including the next state request goes (which closes it again).
    pub(crate) fn ungate(&mut self, group: &GroupName) {
        let Some(gate) = self.gates.get_mut(group) else {
            return;
        };
        gate.count = gate.count.saturating_sub(1);
        let mut released = VecDeque::new();
        if gate.count == 0 {
            // At once, not one by one: a joiner's gate may hold hundreds of thousands of
            // deliveries.
            let found = gate.held.iter().position(|(_, ev)| matches!(ev, Event::StateRequest { .. }));
            let rest = found.map(|k| gate.held.split_off(k + 1)).unwrap_or_default();
            if found.is_some() {
                gate.count += 1;
            }
            released = std::mem::replace(&mut gate.held, rest);
            gate.bytes = gate.held.iter().map(|(_, ev)| delivery_bytes(ev)).sum();
        }
        if gate.count == 0 && gate.held.is_empty() {
            self.remove_gate(group);
        } else {
            self.refresh_front(group);
        }
        self.release(released);
        self.settle();
    }

    /// A joiner's state arrived: it goes ahead of everything held for the group since it
    /// joined (what its gate still holds from an earlier membership, up to that `Left` and
    /// the view it joined with, goes first), the held deliveries that `dups` marks (in order) as duplicates are
    /// dropped, and the gate opens once.
    pub(crate) fn state_arrived(&mut self, group: &GroupName, view: ViewId, state: Bytes, dups: Vec<bool>) {
        let fresh = self.place();
        let gate = self.gates.entry(group.clone()).or_default();
        // After its last `Left` and the view it joined with (both still held when an earlier
        // membership's events were held back too).
        let since = match gate.held.iter().rposition(|(_, ev)| matches!(ev, Event::Left { .. })) {
            Some(k) if matches!(gate.held.get(k + 1), Some((_, Event::View { .. }))) => k + 2,
            Some(k) => k + 1,
            None => 0,
        };
        if dups.contains(&true) {
            let mut dups = dups.into_iter();
            let mut k = 0;
            gate.held.retain(|(_, ev)| {
                k += 1;
                match ev {
                    Event::Deliver(d) if k > since && d.group == *group => !dups.next().unwrap_or(false),
                    _ => true,
                }
            });
        }
        let at = match (since.checked_sub(1).and_then(|k| gate.held.get(k)), gate.held.get(since)) {
            (Some((left, _)), _) => left + 1,
            (None, Some((first, _))) => first.saturating_sub(1),
            (None, None) => fresh,
        };
        gate.held.insert(since, (at, Event::State { group: group.clone(), view, state }));
        self.ungate(group);
    }

    /// Drops what a joiner held for a group it leaves before its state came: deliveries and
    /// views were never its to see, but the outcomes of its own queries still are (their
    /// callers wait for them).
    pub(crate) fn drop_gate(&mut self, group: &GroupName) {
        if let Some(gate) = self.remove_gate(group) {
            self.release(gate.held.into_iter().filter(|(_, e)| matches!(e, Event::QueryDone(_))).collect());
            self.settle();
        }
    }

    /// The process stops: what every gate held is released, but for the groups where it
    /// still waits for its state (`waiting`), which never see what they held.
    pub(crate) fn release_all(&mut self, waiting: impl Fn(&GroupName) -> bool) {
        self.fronts.clear();
        for (g, gate) in std::mem::take(&mut self.gates) {
            if !waiting(&g) {
                self.show(gate.held);
            }
        }
        self.fenced_per_group.clear();
        let fenced = std::mem::take(&mut self.fenced);
        self.show(fenced.into_iter().collect());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(g: &GroupName, n: u64) -> Event {
        Event::View { group: g.clone(), view: crate::GroupView { id: ViewId(n), members: Vec::new() } }
    }

    #[test]
    fn a_state_request_holds_its_group_until_answered() {
        let (g, h) = (GroupName::new("g"), GroupName::new("h"));
        let mut q = EventQueue::default();
        q.push(Event::StateRequest { group: g.clone(), view: ViewId(2), joiners: Vec::new() });
        q.push(view(&g, 3));
        q.push(view(&h, 1));
        assert!(matches!(q.pop(), Some(Event::StateRequest { .. })));
        assert!(matches!(q.pop(), Some(Event::View { group, .. }) if group == h));
        assert!(q.pop().is_none());
        q.ungate(&g);
        assert!(matches!(q.pop(), Some(Event::View { view, .. }) if view.id == ViewId(3)));
        assert!(!q.is_gated(&g));
    }

    #[test]
    fn a_second_state_request_closes_the_gate_again() {
        let g = GroupName::new("g");
        let mut q = EventQueue::default();
        q.push(Event::StateRequest { group: g.clone(), view: ViewId(2), joiners: Vec::new() });
        q.push(view(&g, 2));
        q.push(Event::StateRequest { group: g.clone(), view: ViewId(3), joiners: Vec::new() });
        q.push(view(&g, 3));
        q.pop();
        q.ungate(&g);
        assert!(matches!(q.pop(), Some(Event::View { .. })));
        assert!(matches!(q.pop(), Some(Event::StateRequest { .. })));
        assert!(q.pop().is_none(), "held behind the second request");
        q.ungate(&g);
        assert!(matches!(q.pop(), Some(Event::View { .. })));
    }

    #[test]
    fn a_joiners_state_goes_first_and_duplicates_are_dropped() {
        let g = GroupName::new("g");
        let mut q = EventQueue::default();
        q.gate(&g);
        let d = |c: u64| {
            Event::Deliver(crate::Delivery {
                group: g.clone(),
                view: ViewId(2),
                id: crate::MsgId { sender: crate::ProcessId::new("a", 1), counter: c },
                order: crate::Order::Fifo,
                query: false,
                payload: Bytes::new(),
            })
        };
        q.push(d(0));
        q.push(d(1));
        q.state_arrived(&g, ViewId(2), Bytes::from_static(b"s"), vec![true, false]);
        assert!(matches!(q.pop(), Some(Event::State { .. })));
        assert!(matches!(q.pop(), Some(Event::Deliver(x)) if x.id.counter == 1));
        assert!(q.pop().is_none());
    }

    fn deliver(g: &GroupName, c: u64, order: crate::Order) -> Event {
        Event::Deliver(crate::Delivery {
            group: g.clone(),
            view: ViewId(2),
            id: crate::MsgId { sender: crate::ProcessId::new("a", 1), counter: c },
            order,
            query: false,
            payload: Bytes::new(),
        })
    }

    fn counter(ev: Option<Event>) -> Option<u64> {
        match ev {
            Some(Event::Deliver(d)) => Some(d.id.counter),
            Some(Event::State { .. }) => Some(u64::MAX),
            _ => None,
        }
    }

    #[test]
    fn a_gate_that_opens_first_waits_behind_an_earlier_ordered_delivery_another_holds() {
        let (g, h) = (GroupName::new("g"), GroupName::new("h"));
        let mut q = EventQueue::default();
        q.gate(&g);
        q.gate(&h);
        q.push(deliver(&h, 1, crate::Order::Causal));
        q.push(deliver(&g, 2, crate::Order::Causal));
        q.push(deliver(&h, 3, crate::Order::Fifo));
        q.push(deliver(&g, 4, crate::Order::Total));
        q.ungate(&g);
        assert!(q.pop().is_none(), "g's deliveries follow h's held causal one");
        assert!(q.is_gated(&g), "g's events still wait: not shown, not acknowledged");
        q.push(deliver(&g, 5, crate::Order::Fifo));
        q.ungate(&h);
        let order: Vec<u64> = std::iter::from_fn(|| counter(q.pop())).collect();
        assert_eq!(order, [1, 2, 3, 4, 5], "push order across both gates");
        assert!(!q.is_gated(&g) && !q.is_gated(&h));
        assert_eq!(q.take_opened(), [g]);
    }

    #[test]
    fn unordered_deliveries_held_elsewhere_make_no_fence() {
        let (g, h) = (GroupName::new("g"), GroupName::new("h"));
        let mut q = EventQueue::default();
        q.gate(&g);
        q.gate(&h);
        q.push(deliver(&h, 1, crate::Order::Fifo));
        q.push(deliver(&g, 2, crate::Order::Causal));
        q.ungate(&g);
        assert_eq!(counter(q.pop()), Some(2));
    }

    #[test]
    fn a_cut_pushed_behind_the_fence_waits_for_the_held_group() {
        let (g, h) = (GroupName::new("g"), GroupName::new("h"));
        let mut q = EventQueue::default();
        q.gate(&h);
        q.push(deliver(&h, 1, crate::Order::Safe));
        q.fence_pushes(true);
        q.push(deliver(&g, 2, crate::Order::Causal));
        q.fence_pushes(false);
        q.push(deliver(&g, 3, crate::Order::Causal));
        assert!(q.pop().is_none(), "g's later events queue behind its fenced ones");
        q.state_arrived(&h, ViewId(2), Bytes::from_static(b"s"), vec![false]);
        let order: Vec<u64> = std::iter::from_fn(|| counter(q.pop())).collect();
        assert_eq!(order, [u64::MAX, 1, 2, 3]);
    }

    #[test]
    fn a_rejoiners_state_goes_after_what_its_earlier_membership_left_held() {
        let g = GroupName::new("g");
        let mut q = EventQueue::default();
        q.gate(&g); // held back for another reason (a state owed)
        q.push(deliver(&g, 1, crate::Order::Causal));
        q.push(Event::Left { group: g.clone() });
        q.push(view(&g, 5));
        q.gate(&g); // joins again, waits for its state
        q.push(deliver(&g, 2, crate::Order::Causal));
        q.state_arrived(&g, ViewId(5), Bytes::from_static(b"s"), vec![false]);
        assert!(q.pop().is_none(), "the first reason still holds the gate");
        q.ungate(&g);
        assert_eq!(counter(q.pop()), Some(1));
        assert!(matches!(q.pop(), Some(Event::Left { .. })));
        assert!(matches!(q.pop(), Some(Event::View { .. })));
        assert_eq!(counter(q.pop()), Some(u64::MAX), "the state, after the view it joined with");
        assert_eq!(counter(q.pop()), Some(2));
    }
}
