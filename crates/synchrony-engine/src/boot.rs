//! Bootstrap from a peer list: processes started with the same list of peers, in any order,
//! form one cluster once a majority of the list can reach each other, and never two.
//!
//! The cluster's first membership is chosen by single-decree Paxos among the listed peers
//! that are in no cluster yet (each is an acceptor; any may propose): the value is a set of
//! processes, at least a majority of the list, and once a majority accepted one, every later
//! proposer learns it in its first phase and can only choose it again. The chosen members
//! install it as the cluster's first process view (epoch 1); a peer that is not in it, or
//! that hears from a process already in a cluster, joins that cluster the ordinary way.
//!
//! What keeps a second cluster from forming later: a cluster made this way needs a majority
//! of the list's weight alive to go on at all (the engine sets `min_commit_weight` so), and
//! its members never take part in another bootstrap. So while it lives, at most a minority
//! of the list is free to bootstrap. A restarted peer forgets what it promised, so it waits
//! out a quiet period first (twice the longest failure timeout): by then any cluster that
//! counted its previous incarnation has found that one silent and, if that cost it its
//! majority, stopped.

use crate::id::{Ballot, ProcessId};
use crate::time::Instant;
use crate::wire::Ctl;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

/// A proposed first membership: processes and their weights, in order (the first leads).
pub(crate) type Members = Vec<(ProcessId, u32)>;

/// A promise: who made it, its weight, and what it had accepted.
type Promise = (ProcessId, u32, Option<(Ballot, Members)>);

/// What one input to the bootstrap asks the engine to do.
#[derive(Debug, Default)]
pub(crate) struct BootOut {
    /// Control messages to send.
    pub(crate) ctl: Vec<(ProcessId, Ctl)>,
    /// The first membership was chosen (this process learnt it).
    pub(crate) chosen: Option<Members>,
    /// A bootstrap message came from a process with another peer list (ignored).
    pub(crate) list_mismatch: bool,
}

/// A proposal in progress.
#[derive(Debug)]
enum Attempt {
    /// Phase 1: promises gathered so far, with what each had accepted.
    /// (Keyed by name: a restarted process is a new acceptor, and counts once with the
    /// incarnation that answered last.)
    Prepare { ballot: Ballot, promises: BTreeMap<Arc<str>, Promise> },
    /// Phase 2: acceptances of `value` gathered so far (by name, as above).
    Accept { ballot: Ballot, value: Members, accepted: BTreeSet<Arc<str>> },
}

/// One process's part in a bootstrap, as acceptor and as proposer.
#[derive(Debug)]
pub(crate) struct Boot {
    /// The other listed peers whose names the runtime found, as contacts.
    peers: BTreeSet<Arc<str>>,
    /// How many processes the list names, this one included, and its digest.
    listed: usize,
    digest: u64,
    /// No promise, acceptance or proposal before this (see the module's words).
    quiet_until: Instant,
    promised: Option<Ballot>,
    /// The first membership it accepted last, and since when it has held that one.
    accepted: Option<(Ballot, Members)>,
    accepted_since: Instant,
    /// How long it holds an accepted membership (see [`Boot::accepted`]).
    hold: Duration,
    attempt: Option<Attempt>,
    /// The highest round seen in any ballot.
    round: u64,
    /// When this process next starts a proposal (or gives up its current one for a higher
    /// ballot).
    next_try: Instant,
    /// The base wait between proposals (the join retry period).
    retry: Duration,
    /// Processes heard from with another peer list (each is warned of once).
    disagreeing: BTreeSet<Arc<str>>,
    /// Joining a running cluster it heard of, the ordinary way, until then: no proposals
    /// meanwhile (it still answers as an acceptor); if it is not in by then (that cluster
    /// died, say), it takes up the bootstrap again.
    joining_until: Option<Instant>,
    rng: ChaCha8Rng,
}

impl Boot {
    /// A process's bootstrap: its peer list, the names of the others on it it knows so
    /// far, started at `now`.
    pub(crate) fn new(
        list: crate::PeerList,
        peers: impl IntoIterator<Item = Arc<str>>,
        quiet: Duration,
        retry: Duration,
        seed: u64,
        now: Instant,
    ) -> Self {
        use rand::SeedableRng;
        let quiet_until = now + quiet;
        Self {
            peers: peers.into_iter().collect(),
            listed: list.size.max(1),
            digest: list.digest,
            quiet_until,
            promised: None,
            accepted: None,
            accepted_since: now,
            hold: quiet,
            attempt: None,
            round: 0,
            next_try: quiet_until,
            retry,
            disagreeing: BTreeSet::new(),
            joining_until: None,
            rng: ChaCha8Rng::seed_from_u64(seed),
        }
    }

    /// How many acceptors make a majority of the list.
    pub(crate) fn majority(&self) -> usize {
        self.listed / 2 + 1
    }

    /// The runtime found the listed peer `name`.
    pub(crate) fn add_peer(&mut self, name: Arc<str>) {
        self.peers.insert(name);
    }

    /// The peers known, as contacts (to join through once the bootstrap is over).
    pub(crate) fn peers(&self) -> impl Iterator<Item = &Arc<str>> {
        self.peers.iter()
    }

    /// It heard of a running cluster: it joins it the ordinary way until `until`.
    pub(crate) fn join_until(&mut self, until: Instant) {
        self.joining_until = Some(until);
        self.attempt = None;
    }

    /// Whether it is joining a running cluster (else it bootstraps); once the time it gave
    /// that is up, it bootstraps again.
    pub(crate) fn joining(&mut self, now: Instant) -> bool {
        match self.joining_until {
            Some(t) if now < t => true,
            Some(_) => {
                self.joining_until = None;
                self.next_try = self.next_try.min(now);
                false
            }
            None => false,
        }
    }

    /// What it accepted, unless it has held it longer than the quiet period: a membership
    /// chosen that long ago is a cluster that has installed it (its members no longer
    /// bootstrap, and it holds a majority of the list, so no other can form while it
    /// runs) or one that died (its members gone), which no proposer should take up again.
    fn accepted(&mut self, now: Instant) -> Option<(Ballot, Members)> {
        if self.accepted.is_some() && now >= self.accepted_since + self.hold {
            self.accepted = None;
        }
        self.accepted.clone()
    }

    /// Accepts `value` at `ballot` (holding it since now if it is a new one).
    fn accept(&mut self, ballot: Ballot, value: Members, now: Instant) {
        if self.accepted(now).is_none_or(|(_, v)| v != value) {
            self.accepted_since = now;
        }
        self.promised = Some(ballot.clone());
        self.accepted = Some((ballot, value));
    }

    fn quiet(&self, now: Instant) -> bool {
        now < self.quiet_until
    }

    fn to_all(&self, ctl: Ctl, out: &mut BootOut) {
        for p in &self.peers {
            out.ctl.push((ProcessId::contact(p.clone()), ctl.clone()));
        }
    }

    /// A random wait before the next proposal, so that two proposers do not keep
    /// outbidding each other.
    fn backoff(&mut self) -> Duration {
        let r = self.retry.as_micros() as u64;
        Duration::from_micros(r + self.rng.gen_range(0..=r))
    }

    /// The timer: starts a proposal when due (this process's own promise first).
    pub(crate) fn tick(&mut self, me: &ProcessId, weight: u32, now: Instant, out: &mut BootOut) {
        if self.quiet(now) || now < self.next_try {
            return;
        }
        self.next_try = now + self.backoff();
        self.round = self.round.max(self.promised.as_ref().map_or(0, |b| b.round)) + 1;
        let ballot = Ballot { round: self.round, leader: me.clone() };
        self.promised = Some(ballot.clone());
        let mut promises = BTreeMap::new();
        promises.insert(me.name.clone(), (me.clone(), weight, self.accepted(now)));
        self.attempt = Some(Attempt::Prepare { ballot: ballot.clone(), promises });
        self.to_all(Ctl::BootPrepare { ballot, list: self.digest }, out);
        self.advance(me, now, out);
    }

    /// A bootstrap message from `from` (another process in no cluster).
    pub(crate) fn handle(
        &mut self,
        me: &ProcessId,
        weight: u32,
        from: &ProcessId,
        ctl: Ctl,
        now: Instant,
        out: &mut BootOut,
    ) {
        match ctl {
            Ctl::BootPrepare { list, .. } if list != self.digest => {
                if self.disagreeing.insert(from.name.clone()) {
                    tracing::warn!(
                        peer = %from,
                        "this peer was given another peer list: it takes no part in this one's bootstrap \
                         (start every peer with the same list)"
                    );
                }
                out.list_mismatch = true;
                return;
            }
            _ => {}
        }
        self.peers.insert(from.name.clone());
        match ctl {
            Ctl::BootPrepare { ballot, .. } => {
                self.round = self.round.max(ballot.round);
                if self.quiet(now) || self.promised.as_ref().is_some_and(|p| *p >= ballot) {
                    return;
                }
                self.promised = Some(ballot.clone());
                if self.attempt.take().is_some() {
                    // Outbid: leave it to that proposer for a while.
                    self.next_try = now + self.backoff();
                }
                let accepted = self.accepted(now);
                out.ctl.push((from.clone(), Ctl::BootPromise { ballot, weight, accepted }));
            }
            Ctl::BootPromise { ballot, weight, accepted } => {
                if let Some(Attempt::Prepare { ballot: b, promises }) = &mut self.attempt {
                    if *b == ballot {
                        promises.insert(from.name.clone(), (from.clone(), weight, accepted));
                        self.advance(me, now, out);
                    }
                }
            }
            Ctl::BootAccept { ballot, members } => {
                self.round = self.round.max(ballot.round);
                if self.quiet(now) || self.promised.as_ref().is_some_and(|p| *p > ballot) {
                    return;
                }
                self.accept(ballot.clone(), members, now);
                out.ctl.push((from.clone(), Ctl::BootAccepted { ballot }));
            }
            Ctl::BootAccepted { ballot } => {
                if let Some(Attempt::Accept { ballot: b, accepted, .. }) = &mut self.attempt {
                    if *b == ballot {
                        accepted.insert(from.name.clone());
                        self.advance(me, now, out);
                    }
                }
            }
            Ctl::BootChosen { members } => out.chosen = Some(members),
            _ => {}
        }
    }

    /// Moves the proposal on once it has a majority: from promises to the accept phase
    /// (with the value a majority may already have chosen, else the promisers), from
    /// acceptances to the news that the value is chosen.
    fn advance(&mut self, me: &ProcessId, now: Instant, out: &mut BootOut) {
        let majority = self.majority();
        match self.attempt.take() {
            Some(Attempt::Prepare { ballot, promises }) if promises.len() >= majority => {
                let earlier = promises.values().filter_map(|(_, _, a)| a.as_ref()).max_by(|x, y| x.0.cmp(&y.0));
                let value = match earlier {
                    Some((_, v)) => v.clone(),
                    None => {
                        // The proposer leads; the others follow in the order of their ids.
                        let mut v: Members = promises.values().map(|(p, w, _)| (p.clone(), *w)).collect();
                        v.sort_by_key(|(p, _)| p != me);
                        v
                    }
                };
                self.accept(ballot.clone(), value.clone(), now);
                let accepted = BTreeSet::from([me.name.clone()]);
                self.to_all(Ctl::BootAccept { ballot: ballot.clone(), members: value.clone() }, out);
                self.attempt = Some(Attempt::Accept { ballot, value, accepted });
                self.advance(me, now, out);
            }
            Some(Attempt::Accept { value, accepted, .. }) if accepted.len() >= majority => {
                self.to_all(Ctl::BootChosen { members: value.clone() }, out);
                out.chosen = Some(value);
            }
            other => self.attempt = other,
        }
    }
}
