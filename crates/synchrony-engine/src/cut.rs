//! The cut: where a group's epoch ends, computed by the membership leader from the flush
//! reports of every surviving member, so that each survivor delivers exactly the same
//! messages of the old view before the next view or gbcast (G4, G8).

use crate::id::ProcessId;
use crate::wire::{Cut, DataMsg, GroupView, OrderEntry, Report};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// Computes a group's cut from the flush reports of every surviving member.
///
/// The cut holds, per stream, everything any survivor holds, minus messages whose FIFO or
/// causal predecessors no survivor has (nobody can have delivered those); total and safe
/// messages get the longest known order, then the rest in a causal-consistent order
/// (vector timestamp sum, then rank, then seq) that every survivor computes alike.
pub fn compute_cut(old: &GroupView, reports: &[&Report]) -> Cut {
    let n = old.members.len();
    let rank = |p: &ProcessId| old.members.iter().position(|m| m == p);
    let mut low = vec![u64::MAX; n];
    let mut msgs: Vec<BTreeMap<u64, Arc<DataMsg>>> = vec![BTreeMap::new(); n];
    for rep in reports {
        for (owner, d) in &rep.delivered {
            if let Some(r) = rank(owner) {
                low[r] = low[r].min(*d);
            }
        }
        for (owner, ms) in &rep.streams {
            if let Some(r) = rank(owner) {
                for m in ms {
                    msgs[r].entry(m.seq).or_insert_with(|| m.clone());
                }
            }
        }
    }
    for l in &mut low {
        if *l == u64::MAX {
            *l = 0;
        }
    }
    // hi: the contiguous prefix that survivors hold together.
    let mut hi: Vec<u64> = (0..n)
        .map(|r| {
            let mut h = low[r];
            let max_delivered = reports
                .iter()
                .flat_map(|rep| rep.delivered.iter())
                .filter(|(o, _)| rank(o) == Some(r))
                .map(|(_, d)| *d)
                .max()
                .unwrap_or(0);
            h = h.max(max_delivered);
            while msgs[r].contains_key(&(h + 1)) {
                h += 1;
            }
            h
        })
        .collect();
    // Causal pruning to a fixpoint.
    loop {
        let mut changed = false;
        for r in 0..n {
            let mut seq = low[r] + 1;
            while seq <= hi[r] {
                if let Some(m) = msgs[r].get(&seq) {
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
    // The order: longest known, then the rest deterministically.
    let base = reports.iter().map(|r| r.delivered_total).min().unwrap_or(0);
    let mut known: BTreeMap<u64, OrderEntry> = BTreeMap::new();
    for rep in reports {
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
        if hi[r] <= low[r] {
            continue;
        }
        for (&s, m) in msgs[r].range(low[r] + 1..=hi[r]) {
            if m.order.is_total() && !in_order.contains(&(r as u32, s)) {
                // Messages already delivered by some survivor are in the known order; the
                // rest are undelivered everywhere.
                let already =
                    reports.iter().any(|rep| rep.delivered.iter().any(|(o, d)| rank(o) == Some(r) && *d >= s));
                if !already {
                    rest.push((m.vt.iter().sum(), r as u32, s));
                }
            }
        }
    }
    rest.sort();
    order.extend(rest.into_iter().map(|(_, r, s)| (r, s)));
    let mut cut_msgs = Vec::new();
    for r in 0..n {
        if hi[r] <= low[r] {
            continue;
        }
        for (_, m) in msgs[r].range(low[r] + 1..=hi[r]) {
            cut_msgs.push((old.members[r].clone(), m.clone()));
        }
    }
    Cut { streams: (0..n).map(|r| (old.members[r].clone(), hi[r])).collect(), msgs: cut_msgs, order_base: base, order }
}
