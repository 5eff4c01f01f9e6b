//! The semaphores under the simulator's faults: never more holders than permits, waiters
//! served in request order, every replica granting in the same order, and the permits of
//! failed holders returned.

mod common;

use common::{check_seeds, Input, Scenario};
use rand::seq::SliceRandom;
use rand::Rng;
use std::collections::{BTreeMap, BTreeSet};
use synchrony_engine::{MsgId, ProcessId};
use synchrony_sim::Ctx;
use synchrony_tools::{Effect, LockOutput, Semaphores};

/// (name, permits). `s3` is taken without `free_on_failure`.
const SEMS: [(&str, u32); 3] = [("s1", 1), ("s2", 2), ("s3", 1)];

#[derive(Default)]
struct LockScenario {
    /// Per slot: requests in the order this replica received them, per semaphore.
    seen: BTreeMap<usize, BTreeMap<String, Vec<MsgId>>>,
    /// Per slot: requests granted, cancelled or freed at this replica.
    resolved: BTreeMap<usize, BTreeSet<MsgId>>,
    /// Per slot incarnation: the grants in order, per semaphore.
    grants: Vec<(String, BTreeMap<String, Vec<MsgId>>)>,
    current: BTreeMap<usize, usize>,
    /// Per slot: the members of the last view.
    members: BTreeMap<usize, BTreeSet<ProcessId>>,
    /// Grants given back by their holder (it sent the release).
    released: BTreeSet<MsgId>,
    violations: Vec<String>,
    granted_total: u64,
}

impl LockScenario {
    fn grants_of(&mut self, slot: usize, me: &ProcessId) -> &mut BTreeMap<String, Vec<MsgId>> {
        let k = match self.current.get(&slot) {
            Some(&k) if self.grants[k].0 == me.to_string() => k,
            _ => {
                self.grants.push((me.to_string(), BTreeMap::new()));
                self.current.insert(slot, self.grants.len() - 1);
                self.grants.len() - 1
            }
        };
        &mut self.grants[k].1
    }
}

impl common::Scenario for LockScenario {
    type C = Semaphores;

    fn new_core(&mut self, slot: usize, _me: &ProcessId) -> Semaphores {
        self.seen.remove(&slot);
        self.resolved.remove(&slot);
        self.current.remove(&slot);
        Semaphores::default()
    }

    fn act(&mut self, _slot: usize, me: &ProcessId, core: &Semaphores, ctx: &mut Ctx<'_>) -> Vec<Effect> {
        let (name, permits) = *SEMS.choose(ctx.rng()).expect("sems");
        let mine = |l: Vec<MsgId>| l.into_iter().filter(|r| r.sender == *me).collect::<Vec<_>>();
        let held: Vec<MsgId> = mine(core.holders(name)).into_iter().filter(|r| !self.released.contains(r)).collect();
        let waiting = mine(core.waiters(name));
        let roll: f64 = ctx.rng().gen();
        let (order, payload) = if !held.is_empty() && roll < 0.5 {
            let r = held[0].clone();
            self.released.insert(r.clone());
            Semaphores::release(name, &r)
        } else if !waiting.is_empty() && roll < 0.6 {
            // It stopped waiting (a timeout).
            Semaphores::cancel(name, &waiting[0])
        } else if waiting.len() + held.len() < 2 && roll < 0.9 {
            Semaphores::acquire(name, permits, name != "s3")
        } else {
            return Vec::new();
        };
        vec![Effect::Send { order, payload }]
    }

    fn observe(&mut self, slot: usize, me: &ProcessId, core: &Semaphores, input: Input<'_>, outputs: &[LockOutput]) {
        match input {
            Input::View(v) => {
                self.members.insert(slot, v.members.iter().cloned().collect());
            }
            Input::State => {
                // Requests from before the join: the restored queues, in their order.
                let seen = self.seen.entry(slot).or_default();
                for (name, _) in SEMS {
                    let list = seen.entry(name.to_string()).or_default();
                    list.extend(core.holders(name));
                    list.extend(core.waiters(name));
                    self.resolved.entry(slot).or_default().extend(core.holders(name));
                }
            }
            Input::Message(d) => {
                for (name, _) in SEMS {
                    let is_request = core.waiters(name).contains(&d.id)
                        || outputs.iter().any(|o| matches!(o, LockOutput::Granted { request, name: n } | LockOutput::Cancelled { request, name: n } if *request == d.id && n == name));
                    if is_request {
                        self.seen.entry(slot).or_default().entry(name.to_string()).or_default().push(d.id.clone());
                    }
                }
            }
            Input::QueryDone(_) => {}
        }
        for o in outputs {
            match o {
                LockOutput::Granted { name, request } => {
                    self.granted_total += 1;
                    // Everything asked for before it here is already served or withdrawn.
                    let seen = self.seen.get(&slot).and_then(|s| s.get(name)).cloned().unwrap_or_default();
                    let resolved = self.resolved.entry(slot).or_default();
                    if let Some(k) = seen.iter().position(|r| r == request) {
                        if let Some(skipped) = seen[..k].iter().find(|r| !resolved.contains(*r)) {
                            self.violations.push(format!(
                                "{me} granted {name} to {request} before {skipped}, asked for earlier (not FIFO)"
                            ));
                        }
                    }
                    resolved.insert(request.clone());
                    self.grants_of(slot, me).entry(name.clone()).or_default().push(request.clone());
                }
                LockOutput::Cancelled { request, .. } | LockOutput::Freed { request, .. } => {
                    self.resolved.entry(slot).or_default().insert(request.clone());
                }
                LockOutput::Released { .. } => {}
            }
        }
        for (name, _) in SEMS {
            let (holders, permits) = (core.holders(name).len(), core.permits(name));
            if holders > permits as usize {
                self.violations.push(format!("{me} has {holders} holders of {name}, which has {permits} permits"));
            }
        }
    }

    fn finish(&mut self, cores: &BTreeMap<usize, &Semaphores>) -> Vec<String> {
        let mut v = Vec::new();
        // A failed holder's permit returned (s1, s2: free_on_failure).
        for (&slot, core) in cores {
            let members = self.members.get(&slot).cloned().unwrap_or_default();
            for name in ["s1", "s2"] {
                for h in core.holders(name) {
                    if !members.contains(&h.sender) {
                        v.push(format!("slot {slot}: {h} holds {name} but its process is no longer a member"));
                    }
                }
            }
        }
        // Every surviving replica granted in one order (total order is not uniform: one that
        // failed may have run a few requests in an order the survivors did not, as G7 allows).
        let live: Vec<usize> = cores.keys().filter_map(|slot| self.current.get(slot).copied()).collect();
        for a in 0..self.grants.len() {
            for b in a + 1..self.grants.len() {
                if !live.contains(&a) || !live.contains(&b) {
                    continue;
                }
                for (name, ga) in &self.grants[a].1 {
                    let Some(gb) = self.grants[b].1.get(name) else { continue };
                    let common: BTreeSet<&MsgId> = ga.iter().filter(|r| gb.contains(r)).collect();
                    let fa: Vec<&MsgId> = ga.iter().filter(|r| common.contains(r)).collect();
                    let fb: Vec<&MsgId> = gb.iter().filter(|r| common.contains(r)).collect();
                    if fa != fb {
                        v.push(format!(
                            "{} and {} granted {name} in different orders",
                            self.grants[a].0, self.grants[b].0
                        ));
                    }
                }
            }
        }
        // And at quiescence they agree.
        let snaps: BTreeSet<Vec<u8>> = cores.values().map(|c| synchrony_tools::Core::snapshot(*c).to_vec()).collect();
        if snaps.len() > 1 {
            v.push(format!("{} different semaphore states at quiescence", snaps.len()));
        }
        if self.granted_total == 0 {
            v.push("no permit was ever granted: the run checked nothing".into());
        }
        v
    }

    fn violations(&mut self) -> Vec<String> {
        std::mem::take(&mut self.violations)
    }
}

#[test]
fn semaphores_under_faults() {
    check_seeds("semaphores", common::seeds(200), LockScenario::default);
}

/// The FIFO check is not vacuous: a grant that skips an earlier request is reported.
#[test]
fn an_unfair_grant_is_caught() {
    let mut s = LockScenario::default();
    let me = ProcessId::new("n1", 1);
    let r = |c| MsgId { sender: me.clone(), counter: c };
    s.seen.entry(0).or_default().insert("s1".into(), vec![r(0), r(1)]);
    let core = Semaphores::default();
    let out = [LockOutput::Granted { name: "s1".into(), request: r(1) }];
    s.observe(0, &me, &core, Input::QueryDone(&dummy_outcome()), &out);
    let v = s.violations();
    assert!(v.iter().any(|x| x.contains("not FIFO")), "{v:?}");
}

fn dummy_outcome() -> synchrony_engine::QueryOutcome {
    synchrony_engine::QueryOutcome {
        id: MsgId { sender: ProcessId::new("n1", 1), counter: 9 },
        group: common::tool_group(),
        replies: Vec::new(),
        nulls: Vec::new(),
        failed: Vec::new(),
        satisfied: true,
    }
}
