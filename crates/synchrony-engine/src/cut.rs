//! The cut: where a group's epoch ends, computed by the membership leader from the flush
//! reports of every surviving member, so that each survivor delivers exactly the same
//! messages of the old view before the next view or gbcast (G4, G8).

use crate::id::ProcessId;
use crate::wire::{Cut, DataMsg, GroupView, OrderEntry, Report};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// What the survivors hold of a group's streams, by the rank of each stream's owner.
struct Held<'a> {
    old: &'a GroupView,
    reports: &'a [&'a Report],
    /// Per stream: the fewest messages any reporter delivered (with quiet survivors unheard,
    /// no more than the last a reporter dropped as stable and delivered: see
    /// [`compute_cut_with_quiet`]).
    low: Vec<u64>,
    /// Where the known total order starts.
    order_base: u64,
    /// Per stream: every message some survivor holds, by seq.
    msgs: Vec<BTreeMap<u64, Arc<DataMsg>>>,
}

impl<'a> Held<'a> {
    fn gather(old: &'a GroupView, reports: &'a [&'a Report], quiet_unheard: bool) -> Self {
        let n = old.members.len();
        let mut held = Held { old, reports, low: vec![u64::MAX; n], order_base: 0, msgs: vec![BTreeMap::new(); n] };
        for rep in reports {
            for (owner, d) in &rep.delivered {
                if let Some(r) = held.rank(owner) {
                    held.low[r] = held.low[r].min(*d);
                }
            }
            for (owner, ms) in &rep.streams {
                if let Some(r) = held.rank(owner) {
                    if let Some(first) = ms.first().filter(|_| quiet_unheard) {
                        // A quiet survivor delivered at least every stable message, and a
                        // reporter holds every message it has not seen both stable and
                        // delivered: from there on the cut must carry what it holds.
                        held.low[r] = held.low[r].min(first.seq - 1);
                    }
                    for m in ms {
                        held.msgs[r].entry(m.seq).or_insert_with(|| m.clone());
                    }
                }
            }
        }
        held.order_base = if quiet_unheard {
            // Likewise, a quiet survivor delivered every order position a reporter no
            // longer holds.
            reports.iter().map(|r| r.order_base).min().unwrap_or(0)
        } else {
            reports.iter().map(|r| r.delivered_total).min().unwrap_or(0)
        };
        for l in &mut held.low {
            if *l == u64::MAX {
                *l = 0;
            }
        }
        held
    }

    fn rank(&self, p: &ProcessId) -> Option<usize> {
        self.old.members.iter().position(|m| m == p)
    }

    /// The most messages of stream `r` any survivor delivered.
    fn max_delivered(&self, r: usize) -> u64 {
        let of_r = self.reports.iter().flat_map(|rep| rep.delivered.iter()).filter(|(o, _)| self.rank(o) == Some(r));
        of_r.map(|(_, d)| *d).max().unwrap_or(0)
    }

    /// Per stream, the contiguous prefix that the survivors hold together.
    fn contiguous(&self) -> Vec<u64> {
        (0..self.msgs.len())
            .map(|r| {
                let mut h = self.low[r].max(self.max_delivered(r));
                while self.msgs[r].contains_key(&(h + 1)) {
                    h += 1;
                }
                h
            })
            .collect()
    }

    /// Cuts each stream before its first message whose causal past goes beyond what the
    /// cut keeps of another stream, to a fixpoint.
    fn prune_causally(&self, hi: &mut [u64]) {
        let n = hi.len();
        loop {
            let mut changed = false;
            for r in 0..n {
                let mut seq = self.low[r] + 1;
                while seq <= hi[r] {
                    if let Some(m) = self.msgs[r].get(&seq) {
                        if m.order.is_causal() && m.vt.len() == n && (0..n).any(|j| j != r && m.vt[j] > hi[j]) {
                            hi[r] = seq - 1;
                            changed = true;
                            break;
                        }
                    }
                    seq += 1;
                }
            }
            if !changed {
                break;
            }
        }
    }

    /// The messages of stream `r` the cut holds above what every survivor delivered.
    fn in_cut(&self, r: usize, hi: &[u64]) -> impl Iterator<Item = (&u64, &Arc<DataMsg>)> + '_ {
        let range = (hi[r] > self.low[r]).then(|| self.msgs[r].range(self.low[r] + 1..=hi[r]));
        range.into_iter().flatten()
    }

    /// The total order from the least any survivor delivered: the longest order known
    /// (within the cut), then the cut's total and safe messages that nobody delivered.
    fn order(&self, hi: &[u64]) -> (u64, Vec<OrderEntry>) {
        let n = hi.len();
        let base = self.order_base;
        let mut known: BTreeMap<u64, OrderEntry> = BTreeMap::new();
        for rep in self.reports {
            for (i, e) in rep.order.iter().enumerate() {
                known.entry(rep.order_base + i as u64).or_insert(*e);
            }
        }
        let mut order = Vec::new();
        let mut in_order = BTreeSet::new();
        let mut pos = base;
        while let Some(e) = known.get(&pos) {
            let (r, s) = (e.0 as usize, e.1);
            if r < n && s <= hi[r] && in_order.insert(*e) {
                order.push(*e);
            }
            pos += 1;
        }
        let mut rest: Vec<(u64, u32, u64)> = Vec::new();
        for r in 0..n {
            for (&s, m) in self.in_cut(r, hi) {
                if m.order.is_total() && !in_order.contains(&(r as u32, s)) {
                    // Messages already delivered by some survivor are in the known order;
                    // the rest are undelivered everywhere.
                    let delivered =
                        |rep: &&Report| rep.delivered.iter().any(|(o, d)| self.rank(o) == Some(r) && *d >= s);
                    if !self.reports.iter().any(delivered) {
                        rest.push((m.vt.iter().sum(), r as u32, s));
                    }
                }
            }
        }
        rest.sort();
        order.extend(rest.into_iter().map(|(_, r, s)| (r, s)));
        (base, order)
    }
}

/// Computes a group's cut from the flush reports of every surviving member.
///
/// The cut holds, per stream, everything any survivor holds, minus messages whose FIFO or
/// causal predecessors no survivor has (nobody can have delivered those); total and safe
/// messages get the longest known order, then the rest in a causal-consistent order
/// (vector timestamp sum, then rank, then seq) that every survivor computes alike.
pub fn compute_cut(old: &GroupView, reports: &[&Report]) -> Cut {
    cut_of(Held::gather(old, reports, false))
}

/// As [`compute_cut`], when some survivors did not report because they are quiet in the
/// group (see the engine's flush): each received every stable message and delivered every
/// message it received, so it lacks at most what a reporter holds that is not both stable
/// and delivered there; the cut carries all of that, and each survivor takes what it lacks.
pub fn compute_cut_with_quiet(old: &GroupView, reports: &[&Report]) -> Cut {
    cut_of(Held::gather(old, reports, true))
}

fn cut_of(held: Held<'_>) -> Cut {
    let old = held.old;
    let mut hi = held.contiguous();
    held.prune_causally(&mut hi);
    let (order_base, order) = held.order(&hi);
    let n = hi.len();
    let msgs =
        (0..n).flat_map(|r| held.in_cut(r, &hi).map(move |(_, m)| (old.members[r].clone(), m.clone()))).collect();
    Cut { streams: (0..n).map(|r| (old.members[r].clone(), hi[r])).collect(), msgs, order_base, order }
}
