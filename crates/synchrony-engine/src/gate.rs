//! The engine's queue of events for the application, with a gate per group.
//!
//! A group's gate holds its events back while the application owes the group something
//! (its state for joiners, after a `StateRequest`) or while this process, a joiner, waits
//! for its state. Events of other groups flow on.

use crate::event::Event;
use crate::id::{GroupName, ViewId};
use bytes::Bytes;
use std::collections::{BTreeMap, VecDeque};

/// Events held back for one group, with their place in the order of pushes.
#[derive(Default)]
struct Gate {
    /// How many reasons hold the gate closed.
    count: usize,
    held: VecDeque<(u64, Event)>,
}

/// Events for the application, in order, with a gate per group.
///
/// Every event keeps its place in the order of pushes: events a gate releases go back to
/// that place among the events not yet taken, so gates that open together (one group's
/// events held behind another's, see the engine's `open_chained`) release in push order.
#[derive(Default)]
pub(crate) struct EventQueue {
    ready: VecDeque<(u64, Event)>,
    gates: BTreeMap<GroupName, Gate>,
    /// The next push's place (even; a joiner's state takes the odd place before the first
    /// event its gate held).
    next: u64,
    /// Released events were appended out of place: sort before the next pop.
    unsorted: bool,
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
                gate.held.push_back((at, ev));
                return;
            }
            if matches!(ev, Event::StateRequest { .. }) {
                self.gates.entry(g.clone()).or_default().count += 1;
            }
        }
        self.ready.push_back((at, ev));
    }

    fn release(&mut self, mut events: VecDeque<(u64, Event)>) {
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

    /// Closes a group's gate once more (a joiner waits for its state).
    pub(crate) fn gate(&mut self, group: &GroupName) {
        self.gates.entry(group.clone()).or_default().count += 1;
    }

    /// Whether a group's gate is closed.
    pub(crate) fn is_gated(&self, group: &GroupName) -> bool {
        self.gates.contains_key(group)
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
        }
        if gate.count == 0 && gate.held.is_empty() {
            self.gates.remove(group);
        }
        self.release(released);
    }

    /// A joiner's state arrived: it goes ahead of everything held for the group, the held
    /// deliveries that `dups` marks (in order) as duplicates are dropped, and the gate
    /// opens once.
    pub(crate) fn state_arrived(&mut self, group: &GroupName, view: ViewId, state: Bytes, dups: Vec<bool>) {
        let fresh = self.place();
        let gate = self.gates.entry(group.clone()).or_default();
        if dups.contains(&true) {
            let mut dups = dups.into_iter();
            gate.held.retain(|(_, ev)| match ev {
                Event::Deliver(d) if d.group == *group => !dups.next().unwrap_or(false),
                _ => true,
            });
        }
        let at = gate.held.front().map_or(fresh, |(first, _)| first.saturating_sub(1));
        self.release(VecDeque::from([(at, Event::State { group: group.clone(), view, state })]));
        self.ungate(group);
    }

    /// Drops what a joiner held for a group it leaves before its state came: deliveries and
    /// views were never its to see, but the outcomes of its own queries still are (their
    /// callers wait for them).
    pub(crate) fn drop_gate(&mut self, group: &GroupName) {
        if let Some(gate) = self.gates.remove(group) {
            self.release(gate.held.into_iter().filter(|(_, e)| matches!(e, Event::QueryDone(_))).collect());
        }
    }

    /// The process stops: what every gate held is released, but for the groups where it
    /// still waits for its state (`waiting`), which never see what they held.
    pub(crate) fn release_all(&mut self, waiting: impl Fn(&GroupName) -> bool) {
        for (g, gate) in std::mem::take(&mut self.gates) {
            if !waiting(&g) {
                self.release(gate.held);
            }
        }
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
}
