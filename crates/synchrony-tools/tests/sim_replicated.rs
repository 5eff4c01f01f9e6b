//! The replicated map under the simulator's faults: at quiescence every replica is equal,
//! no read misses a write that causally precedes it, and the map's lock serializes the
//! writers that update in causal order.

mod common;

use common::{check_seeds, Input, Scenario};
use rand::Rng;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use synchrony_engine::{Order, ProcessId};
use synchrony_sim::Ctx;
use synchrony_tools::{Core, Effect, LockOutput, MapUpdate, Replica, ReplicatedOutput};

type Map = BTreeMap<String, String>;

/// A read check: "I had applied `applied` updates when I sent this": a member that
/// delivers it (causal order) must have applied at least as many.
#[derive(Serialize, Deserialize)]
struct ReadCheck {
    applied: u64,
}

#[derive(Default)]
struct MapScenario {
    counter: u64,
    /// Per slot: whether it has a lock request out.
    asked: BTreeMap<usize, bool>,
    /// Per slot: the grant it gave back (it writes no more under it).
    released: BTreeMap<usize, synchrony_engine::MsgId>,
    violations: Vec<String>,
    reads_checked: u64,
}

impl Scenario for MapScenario {
    type C = Replica<Map>;

    fn new_core(&mut self, slot: usize, _me: &ProcessId) -> Replica<Map> {
        self.asked.remove(&slot);
        Replica::default()
    }

    fn act(&mut self, slot: usize, me: &ProcessId, core: &Replica<Map>, ctx: &mut Ctx<'_>) -> Vec<Effect> {
        self.counter += 1;
        let value = format!("{me}:{}", self.counter);
        let holds = core.lock_holder().is_some_and(|r| r.sender == *me && self.released.get(&slot) != Some(&r));
        let roll: f64 = ctx.rng().gen();
        let send = |(order, payload)| vec![Effect::Send { order, payload }];
        if holds {
            // The holder writes its keys in causal order, then lets go.
            if roll < 0.7 {
                let key = format!("L{}", ctx.rng().gen_range(0..3));
                return send(Replica::<Map>::update_locked(&MapUpdate::Put(key, value)));
            }
            let req = core.lock_holder().expect("held");
            self.released.insert(slot, req.clone());
            return send(Replica::<Map>::lock_release(&req));
        }
        if roll < 0.55 {
            let key = format!("k{}", ctx.rng().gen_range(0..8));
            send(Replica::<Map>::update(&MapUpdate::Put(key, value)))
        } else if roll < 0.65 {
            let key = format!("k{}", ctx.rng().gen_range(0..8));
            send(Replica::<Map>::update(&MapUpdate::Remove(key)))
        } else if roll < 0.9 {
            let check = ReadCheck { applied: core.applied() };
            vec![Effect::Send { order: Order::Causal, payload: postcard::to_allocvec(&check).unwrap().into() }]
        } else if !self.asked.get(&slot).copied().unwrap_or(false) {
            self.asked.insert(slot, true);
            send(Replica::<Map>::lock_request(true))
        } else {
            Vec::new()
        }
    }

    fn observe(
        &mut self,
        slot: usize,
        me: &ProcessId,
        core: &Replica<Map>,
        input: Input<'_>,
        outputs: &[ReplicatedOutput],
    ) {
        if let Input::Message(d) = input {
            let is_update = outputs.iter().any(|o| matches!(o, ReplicatedOutput::Applied { .. }));
            if d.order == Order::Causal && !is_update {
                if let Ok(check) = postcard::from_bytes::<ReadCheck>(&d.payload) {
                    self.reads_checked += 1;
                    if core.applied() < check.applied {
                        self.violations.push(format!(
                            "{me} read with {} updates applied, after {} sent a read check with {} applied (causally before)",
                            core.applied(),
                            d.id,
                            check.applied
                        ));
                    }
                }
            }
        }
        for o in outputs {
            if let ReplicatedOutput::Lock(LockOutput::Granted { request, .. } | LockOutput::Cancelled { request, .. }) =
                o
            {
                if request.sender == *me {
                    self.asked.insert(slot, false);
                }
            }
        }
    }

    fn finish(&mut self, cores: &BTreeMap<usize, &Replica<Map>>) -> Vec<String> {
        let mut v = Vec::new();
        let mut first: Option<(usize, bytes::Bytes)> = None;
        for (&slot, core) in cores {
            let snap = core.snapshot();
            match &first {
                None => first = Some((slot, snap)),
                Some((s0, snap0)) if *snap0 != snap => {
                    v.push(format!(
                        "replicas differ at quiescence: slot {s0} and slot {slot} ({} and {} updates applied): {:?} / {:?}",
                        cores[s0].applied(),
                        core.applied(),
                        cores[s0].value().iter().filter(|(k, v)| core.value().get(*k) != Some(v)).collect::<Vec<_>>(),
                        core.value().iter().filter(|(k, v)| cores[s0].value().get(*k) != Some(v)).collect::<Vec<_>>(),
                    ));
                }
                _ => {}
            }
        }
        v
    }

    fn violations(&mut self) -> Vec<String> {
        std::mem::take(&mut self.violations)
    }
}

#[test]
fn replicated_map_under_faults() {
    check_seeds("replicated map", common::seeds(200), MapScenario::default);
}

/// A hand-made bad replica (one that drops an update) must be caught: the check is not
/// vacuous.
#[test]
fn a_diverging_replica_is_caught() {
    let mut s = MapScenario::default();
    let mut a: Replica<Map> = Replica::default();
    let b: Replica<Map> = Replica::default();
    let (order, payload) = Replica::<Map>::update(&MapUpdate::Put("x".into(), "1".into()));
    let d = synchrony_engine::Delivery {
        group: common::tool_group(),
        view: synchrony_engine::ViewId(1),
        id: synchrony_engine::MsgId { sender: ProcessId::new("n1", 1), counter: 0 },
        order,
        query: false,
        payload,
    };
    a.on_message(&d, &mut synchrony_tools::Effects::default());
    let cores = BTreeMap::from([(0, &a), (1, &b)]);
    let v = s.finish(&cores);
    assert_eq!(v.len(), 1, "{v:?}");
    assert!(v[0].contains("replicas differ"));
}
