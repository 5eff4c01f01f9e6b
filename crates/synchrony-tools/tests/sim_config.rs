//! The configuration under the simulator's faults: every member sees the same configuration
//! version when any message arrives, and the replicas agree at quiescence.

mod common;

use common::{check_seeds, Input, Scenario};
use rand::Rng;
use std::collections::BTreeMap;
use synchrony_engine::{MsgId, Order, ProcessId};
use synchrony_sim::Ctx;
use synchrony_tools::{ConfigOutput, Configuration, Core, Effect};

#[derive(Default)]
struct ConfigScenario {
    /// For each application message: the first member that delivered it and the version.
    under: BTreeMap<MsgId, (ProcessId, u64)>,
    changes: u64,
    violations: Vec<String>,
}

const ORDERS: [Order; 5] = [Order::Unordered, Order::Fifo, Order::Causal, Order::Total, Order::Safe];

impl Scenario for ConfigScenario {
    type C = Configuration;

    fn new_core(&mut self, _slot: usize, _me: &ProcessId) -> Configuration {
        Configuration::default()
    }

    fn act(&mut self, _slot: usize, me: &ProcessId, _core: &Configuration, ctx: &mut Ctx<'_>) -> Vec<Effect> {
        let (order, payload) = if ctx.rng().gen_bool(0.15) {
            let key = format!("key{}", ctx.rng().gen_range(0..4));
            Configuration::set(&key, &me.to_string())
        } else {
            (ORDERS[ctx.rng().gen_range(0..5)], bytes::Bytes::from_static(b"application"))
        };
        vec![Effect::Send { order, payload }]
    }

    fn observe(
        &mut self,
        _slot: usize,
        me: &ProcessId,
        _core: &Configuration,
        _input: Input<'_>,
        outputs: &[ConfigOutput],
    ) {
        for o in outputs {
            match o {
                ConfigOutput::Message { delivery, version } => match self.under.get(&delivery.id) {
                    Some((p, v)) if v != version => self
                        .violations
                        .push(format!("{} arrived under configuration {v} at {p} but {version} at {me}", delivery.id)),
                    Some(_) => {}
                    None => {
                        self.under.insert(delivery.id.clone(), (me.clone(), *version));
                    }
                },
                ConfigOutput::Changed { .. } => self.changes += 1,
            }
        }
    }

    fn finish(&mut self, cores: &BTreeMap<usize, &Configuration>) -> Vec<String> {
        let mut v = Vec::new();
        let snaps: std::collections::BTreeSet<Vec<u8>> = cores.values().map(|c| c.snapshot().to_vec()).collect();
        if snaps.len() > 1 {
            v.push(format!("{} different configurations at quiescence", snaps.len()));
        }
        if self.changes == 0 || self.under.is_empty() {
            v.push("no change or no message: the run checked nothing".into());
        }
        v
    }

    fn violations(&mut self) -> Vec<String> {
        std::mem::take(&mut self.violations)
    }
}

#[test]
fn configuration_under_faults() {
    check_seeds("configuration", common::seeds(200), ConfigScenario::default);
}

/// The check is not vacuous: two members that see a message under different versions are
/// reported.
#[test]
fn a_message_under_two_versions_is_caught() {
    let mut s = ConfigScenario::default();
    let d = synchrony_engine::Delivery {
        group: common::tool_group(),
        view: synchrony_engine::ViewId(1),
        id: MsgId { sender: ProcessId::new("n1", 1), counter: 0 },
        order: Order::Fifo,
        query: false,
        payload: bytes::Bytes::from_static(b"application"),
    };
    let core = Configuration::default();
    for (p, version) in [("n1", 3), ("n2", 4)] {
        let out = [ConfigOutput::Message { delivery: d.clone(), version }];
        s.observe(0, &ProcessId::new(p, 1), &core, Input::Message(&d), &out);
    }
    assert_eq!(s.violations().len(), 1);
}
