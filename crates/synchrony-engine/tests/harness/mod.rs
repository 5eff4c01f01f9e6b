//! A few engines wired together by hand, with a manual clock (as quinn-proto's `Pair` wires
//! two connections): frames travel with a fixed latency, in order, unless a test drops or
//! holds them, and every event each engine emits is kept for the test to read.
#![allow(dead_code, unreachable_pub)] // each test file uses a part of it

use bytes::Bytes;
use std::cell::Cell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::time::Duration;
use synchrony_engine::wire::{self, Msg, Packet};
use synchrony_engine::{Config, Engine, Event, GroupName, Instant, ProcessId, StateData, Status};

/// What a filter decides about a frame in flight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fate {
    Deliver,
    Drop,
}

/// Decides the fate of each frame: `(from index, to index, decoded packet)`.
pub type Filter = Box<dyn FnMut(usize, usize, &Packet) -> Fate>;

pub struct Node {
    pub name: String,
    pub engine: Option<Engine>,
    /// Every event the engine emitted, in order.
    pub events: Vec<Event>,
    /// Every part of a state read as a stream, in order.
    pub state_data: Vec<StateData>,
}

pub struct Net {
    pub now: Instant,
    pub nodes: Vec<Node>,
    pub latency: Duration,
    in_flight: VecDeque<(Instant, usize, usize, Bytes)>,
    filter: Option<Filter>,
    /// Frames the filter dropped.
    pub dropped: usize,
    /// Answer every state request at once with an empty state (on by default).
    pub auto_state: bool,
    /// Read every part of a state read as a stream at once (on by default).
    pub read_state: bool,
    /// Changes every process's configuration (from `Config::fast`) before it starts.
    pub tweak: fn(&mut Config),
}

pub fn g(name: &str) -> GroupName {
    GroupName::new(name)
}

impl Net {
    /// `n` processes `n1..`: `n1` founds the cluster, the others join through it; runs
    /// until every one is a member.
    pub fn cluster(n: usize) -> Net {
        Self::cluster_with(n, |_| {})
    }

    /// As [`Net::cluster`], each process's configuration changed by `tweak`.
    pub fn cluster_with(n: usize, tweak: fn(&mut Config)) -> Net {
        let mut net = Net {
            now: Instant::ZERO,
            nodes: Vec::new(),
            latency: Duration::from_micros(100),
            in_flight: VecDeque::new(),
            filter: None,
            dropped: 0,
            auto_state: true,
            read_state: true,
            tweak,
        };
        for i in 0..n {
            net.add(&format!("n{}", i + 1), i > 0);
        }
        net.run_until(Duration::from_secs(5), |net| net.nodes.iter().all(|n| n.status() == Some(Status::Member)));
        assert!(net.nodes.iter().all(|n| n.status() == Some(Status::Member)), "the cluster did not form");
        net
    }

    /// Starts a process (joining through `n1` if `join`).
    pub fn add(&mut self, name: &str, join: bool) -> usize {
        self.add_with_contacts(name, if join { &["n1"] } else { &[] })
    }

    /// Starts a process that joins through `contacts`, tried in turn (none: it founds a
    /// cluster).
    pub fn add_with_contacts(&mut self, name: &str, contacts: &[&str]) -> usize {
        let contacts = contacts.iter().map(|c| ProcessId::contact(*c)).collect();
        let mut config = Config { contacts, rng_seed: self.nodes.len() as u64, ..Config::fast() };
        (self.tweak)(&mut config);
        let engine = Engine::new(config, ProcessId::new(name, 1), self.now);
        self.nodes.push(Node { name: name.into(), engine: Some(engine), events: Vec::new(), state_data: Vec::new() });
        let i = self.nodes.len() - 1;
        self.drain(i);
        i
    }

    pub fn index(&self, name: &str) -> usize {
        self.nodes.iter().position(|n| n.name == name).expect("a node of that name")
    }

    pub fn engine(&mut self, i: usize) -> &mut Engine {
        self.nodes[i].engine.as_mut().expect("running")
    }

    /// Runs `f` on engine `i` at the current time, then moves its output.
    pub fn with<R>(&mut self, i: usize, f: impl FnOnce(&mut Engine, Instant) -> R) -> R {
        let now = self.now;
        let r = f(self.engine(i), now);
        self.drain(i);
        r
    }

    /// The process stops at once; frames it sent and not yet delivered still arrive.
    pub fn crash(&mut self, i: usize) {
        self.nodes[i].engine = None;
    }

    pub fn set_filter(&mut self, f: impl FnMut(usize, usize, &Packet) -> Fate + 'static) {
        self.filter = Some(Box::new(f));
    }

    pub fn clear_filter(&mut self) {
        self.filter = None;
    }

    /// Drops every frame carrying a reliable message that `what` matches, from `from` (any
    /// process if `None`) to `to` (any if `None`), while the returned switch is on.
    pub fn drop_msgs(&mut self, from: Option<usize>, to: Option<usize>, what: fn(&Msg) -> bool) -> Rc<Cell<bool>> {
        let on = Rc::new(Cell::new(true));
        let switch = on.clone();
        self.set_filter(move |f, t, p| {
            let here = from.is_none_or(|x| x == f) && to.is_none_or(|x| x == t);
            if on.get() && here && carries(p, what) {
                Fate::Drop
            } else {
                Fate::Deliver
            }
        });
        switch
    }

    /// Engine `i`, which must be running.
    pub fn engine_ref(&self, i: usize) -> &Engine {
        self.nodes[i].engine.as_ref().expect("running")
    }

    fn drain(&mut self, i: usize) {
        let at = self.now + self.latency;
        let node = &mut self.nodes[i];
        let Some(e) = node.engine.as_mut() else { return };
        let mut frames = Vec::new();
        while let Some(t) = e.poll_transmit() {
            frames.push(t);
        }
        let mut provide = Vec::new();
        while let Some(ev) = e.poll_event() {
            if let (Event::StateRequest { group, view, .. }, true) = (&ev, self.auto_state) {
                provide.push((group.clone(), *view));
            }
            node.events.push(ev);
        }
        let mut read = Vec::new();
        while let Some(d) = e.poll_state_data() {
            read.extend(self.read_state.then(|| (d.group.clone(), d.data.len() as u64)));
            node.state_data.push(d);
        }
        if !provide.is_empty() || !read.is_empty() {
            let now = self.now;
            for (group, view) in provide {
                e.provide_state(now, &group, view, Bytes::new());
            }
            for (group, n) in read {
                e.state_read(now, &group, n);
            }
            return self.drain(i);
        }
        for t in frames {
            if let Some(to) = self.nodes.iter().position(|n| *n.name == *t.to.name) {
                self.in_flight.push_back((at, i, to, t.frame));
            }
        }
    }

    /// The next moment something happens: a frame arrives or an engine's timer is due.
    fn next_time(&self) -> Option<Instant> {
        let frames = self.in_flight.front().map(|f| f.0);
        let timers = self.nodes.iter().filter_map(|n| n.engine.as_ref().and_then(|e| e.poll_timeout()));
        frames.into_iter().chain(timers).min()
    }

    /// One step: everything due at the next moment happens.
    pub fn step(&mut self) -> bool {
        let Some(t) = self.next_time() else { return false };
        self.now = self.now.max(t);
        while self.in_flight.front().is_some_and(|f| f.0 <= self.now) {
            let (_, from, to, frame) = self.in_flight.pop_front().expect("due");
            if let Some(f) = self.filter.as_mut() {
                let p = wire::decode(&frame, None).expect("our own frames decode");
                if f(from, to, &p) == Fate::Drop {
                    self.dropped += 1;
                    continue;
                }
            }
            let now = self.now;
            if let Some(e) = self.nodes[to].engine.as_mut() {
                e.handle_frame(now, &frame).expect("our own frames are well formed");
                self.drain(to);
            }
        }
        for i in 0..self.nodes.len() {
            let now = self.now;
            if let Some(e) = self.nodes[i].engine.as_mut().filter(|e| e.poll_timeout().is_some_and(|t| t <= now)) {
                e.handle_timeout(now);
                self.drain(i);
            }
        }
        true
    }

    /// Runs for `d` of virtual time.
    pub fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        while self.next_time().is_some_and(|t| t <= end) {
            self.step();
        }
        self.now = self.now.max(end);
    }

    /// Runs until `done` holds (checked after each step) or `limit` passes; returns whether
    /// it holds.
    pub fn run_until(&mut self, limit: Duration, mut done: impl FnMut(&Net) -> bool) -> bool {
        let end = self.now + limit;
        while !done(self) {
            if self.next_time().is_none_or(|t| t > end) {
                self.now = end;
                return done(self);
            }
            self.step();
        }
        true
    }

    /// Every process named joins `group`, one after the other, each waiting for its view.
    pub fn join_all(&mut self, group: &str, who: &[usize]) {
        for &i in who {
            self.with(i, |e, now| e.join(now, g(group)).expect("joins"));
            let ok = self.run_until(Duration::from_secs(5), |net| net.nodes[i].in_group(group));
            assert!(ok, "{} did not get into {group}", self.nodes[i].name);
        }
        // Let state transfers finish and views settle everywhere.
        self.run_for(Duration::from_millis(50));
    }
}

impl Node {
    pub fn status(&self) -> Option<Status> {
        self.engine.as_ref().map(|e| e.status())
    }

    pub fn in_group(&self, group: &str) -> bool {
        self.engine.as_ref().is_some_and(|e| e.my_groups().any(|x| x.as_str() == group))
    }

    /// The payloads delivered in `group`, in order.
    pub fn delivered(&self, group: &str) -> Vec<Bytes> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::Deliver(d) if d.group.as_str() == group => Some(d.payload.clone()),
                _ => None,
            })
            .collect()
    }

    /// The views of `group` installed, as lists of member names.
    pub fn views(&self, group: &str) -> Vec<(u64, Vec<String>)> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::View { group: g, view } if g.as_str() == group => {
                    Some((view.id.0, view.members.iter().map(|m| m.name.to_string()).collect()))
                }
                _ => None,
            })
            .collect()
    }
}

/// Whether a packet carries a reliable message matching `f`.
pub fn carries(p: &Packet, f: impl Fn(&Msg) -> bool) -> bool {
    p.msgs.iter().any(f)
}
