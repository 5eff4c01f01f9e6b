//! Weighted membership (Isis: servers weigh 1, clients 0): a view commits only with a
//! majority of the previous view's weight, so with weights 1,1,1,0,0 a side holding two
//! servers goes on and a side with one server and two clients stops (G10), the opposite of
//! what a count of processes would decide.

use std::collections::BTreeSet;
use std::time::Duration;
use synchrony_engine::{Config, Engine, Event, GroupName, Instant, PartitionReason, ProcessId, Status};

/// Engines on a lossless network with a fixed latency, and a partition.
struct Net {
    now: Instant,
    engines: Vec<Engine>,
    names: Vec<String>,
    in_flight: Vec<(Instant, usize, usize, bytes::Bytes)>,
    cut: BTreeSet<(usize, usize)>,
    partitioned: Vec<Option<PartitionReason>>,
}

const LATENCY: Duration = Duration::from_micros(200);

impl Net {
    fn new(weights: &[u32]) -> Self {
        let names: Vec<String> = (1..=weights.len()).map(|i| format!("n{i}")).collect();
        let now = Instant::ZERO;
        let engines = weights
            .iter()
            .enumerate()
            .map(|(i, &w)| {
                let contacts = if i == 0 { Vec::new() } else { vec![ProcessId::contact("n1")] };
                let config = Config { contacts, weight: w, rng_seed: i as u64, ..Config::fast() };
                Engine::new(config, ProcessId::new(names[i].as_str(), 1), now)
            })
            .collect();
        Self { now, engines, partitioned: vec![None; names.len()], names, in_flight: Vec::new(), cut: BTreeSet::new() }
    }

    fn pump(&mut self, i: usize) {
        while let Some(t) = self.engines[i].poll_transmit() {
            if let Some(j) = self.names.iter().position(|n| *n == t.to.name.as_ref()) {
                if !self.cut.contains(&(i, j)) {
                    self.in_flight.push((self.now + LATENCY, i, j, t.frame));
                }
            }
        }
        while let Some(e) = self.engines[i].poll_event() {
            if let Event::Partitioned { reason } = e {
                self.partitioned[i] = Some(reason);
            }
        }
    }

    /// Runs for `d` of virtual time, in steps of 100 us.
    fn run(&mut self, d: Duration) {
        let end = self.now + d;
        while self.now < end {
            self.now = self.now + Duration::from_micros(100);
            let now = self.now;
            let (due, later): (Vec<_>, Vec<_>) = self.in_flight.drain(..).partition(|f| f.0 <= now);
            self.in_flight = later;
            for (_, from, to, frame) in due {
                if !self.cut.contains(&(from, to)) {
                    let _ = self.engines[to].handle_packet(now, &frame);
                    self.pump(to);
                }
            }
            for i in 0..self.engines.len() {
                if self.engines[i].poll_timeout().is_some_and(|t| t <= now) {
                    self.engines[i].handle_timeout(now);
                    self.pump(i);
                }
            }
        }
    }

    fn join_all(&mut self, g: &GroupName) {
        self.run(Duration::from_secs(1));
        for i in 0..self.engines.len() {
            assert_eq!(self.engines[i].status(), Status::Member, "{} is not a member", self.names[i]);
            let now = self.now;
            self.engines[i].join(now, g.clone()).expect("joins");
            self.pump(i);
        }
        self.run(Duration::from_secs(1));
        for e in &self.engines {
            assert_eq!(e.view(g).map(|v| v.members.len()), Some(self.names.len()), "not everyone in the group");
        }
    }

    fn split(&mut self, side: &[usize]) {
        for a in 0..self.names.len() {
            for b in 0..self.names.len() {
                if side.contains(&a) != side.contains(&b) {
                    self.cut.insert((a, b));
                }
            }
        }
    }

    fn goes_on(&self, i: usize) -> bool {
        self.engines[i].status() == Status::Member && self.partitioned[i].is_none()
    }
}

#[test]
fn two_servers_go_on_and_one_server_with_two_clients_stops() {
    let g = GroupName::new("g");
    let mut net = Net::new(&[1, 1, 1, 0, 0]);
    net.join_all(&g);
    net.split(&[0, 1]);
    net.run(Duration::from_secs(2));
    for i in [0, 1] {
        assert!(net.goes_on(i), "{} (a server with the other) stopped", net.names[i]);
        let members = net.engines[i].view(&g).expect("in g").members.len();
        assert_eq!(members, 2, "{}'s view of g should hold the two servers", net.names[i]);
    }
    for i in [2, 3, 4] {
        assert!(!net.goes_on(i), "{} (one server, two clients: weight 1 of 3) went on", net.names[i]);
        assert_eq!(net.partitioned[i], Some(PartitionReason::LostMajority));
    }
}

#[test]
fn without_weights_the_three_processes_go_on() {
    let g = GroupName::new("g");
    let mut net = Net::new(&[1, 1, 1, 1, 1]);
    net.join_all(&g);
    net.split(&[0, 1]);
    net.run(Duration::from_secs(2));
    for i in [0, 1] {
        assert!(!net.goes_on(i), "{} (2 of 5) went on", net.names[i]);
    }
    for i in [2, 3, 4] {
        assert!(net.goes_on(i), "{} (3 of 5) stopped", net.names[i]);
    }
}
