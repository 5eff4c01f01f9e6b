//! Hosts a tool core on every simulated process, so that the tool's invariants are checked
//! under the simulator's faults (and its trace under G1 to G13).

#![allow(dead_code, unreachable_pub)]

use bytes::Bytes;
use std::collections::BTreeMap;
use std::time::Duration;
use synchrony_engine::{Delivery, Event, GroupName, ProcessId};
use synchrony_sim::{run_app, App, Ctx, Profile, SimConfig};
use synchrony_tools::{Core, Effect, Effects};

/// What a tool's simulation does and checks.
pub trait Scenario {
    /// The core under test.
    type C: Core;
    /// A fresh core for a new member.
    fn new_core(&mut self, slot: usize, me: &ProcessId) -> Self::C;
    /// An application action at a member; returns the effects to make.
    fn act(&mut self, slot: usize, me: &ProcessId, core: &Self::C, ctx: &mut Ctx<'_>) -> Vec<Effect>;
    /// After the core handled an input (the delivery, if it was one) and made `outputs`.
    fn observe(
        &mut self,
        slot: usize,
        me: &ProcessId,
        core: &Self::C,
        input: Input<'_>,
        outputs: &[<Self::C as Core>::Output],
    );
    /// A query the host made for the core or the scenario went out as `id`.
    fn queried(&mut self, slot: usize, id: &synchrony_engine::MsgId) {
        let _ = (slot, id);
    }
    /// A query of a process that is no longer in the group ended.
    fn ended_outside(&mut self, slot: usize, outcome: &synchrony_engine::QueryOutcome) {
        let _ = (slot, outcome);
    }

    /// At the end: the cores of the processes that are members, by slot.
    fn finish(&mut self, cores: &BTreeMap<usize, &Self::C>) -> Vec<String>;
    /// Problems found while running.
    fn violations(&mut self) -> Vec<String>;
}

/// What the core just handled.
pub enum Input<'a> {
    View(&'a synchrony_engine::GroupView),
    Message(&'a Delivery),
    State,
    QueryDone(&'a synchrony_engine::QueryOutcome),
}

/// The tool's group, and a second group so that churn makes processes leave and rejoin it.
pub fn tool_group() -> GroupName {
    GroupName::new("tool")
}

pub struct Host<S: Scenario> {
    pub scenario: S,
    cores: Vec<Option<S::C>>,
}

impl<S: Scenario> Host<S> {
    pub fn new(scenario: S, nodes: usize) -> Self {
        Self { scenario, cores: (0..nodes).map(|_| None).collect() }
    }

    fn run_effects(&mut self, ctx: &mut Ctx<'_>, effects: Vec<Effect>) {
        let g = tool_group();
        for e in effects {
            match e {
                Effect::Send { order, payload } => {
                    let _ = ctx.send(&g, order, payload);
                }
                Effect::Query { order, payload, replies } => {
                    if let Ok(Some(id)) = ctx.query(&g, order, payload, replies) {
                        self.scenario.queried(ctx.slot(), &id);
                    }
                }
                Effect::Reply { query, payload } => ctx.reply(&query, payload),
            }
        }
    }
}

impl<S: Scenario> App for Host<S> {
    fn groups(&self) -> Vec<GroupName> {
        vec![tool_group(), GroupName::new("aux")]
    }

    fn initial_groups(
        &mut self,
        _slot: usize,
        groups: &[GroupName],
        _rng: &mut rand_chacha::ChaCha8Rng,
    ) -> std::collections::BTreeSet<GroupName> {
        groups.iter().cloned().collect()
    }

    fn started(&mut self, slot: usize) {
        self.cores[slot] = None;
    }

    fn sent(&mut self, ctx: &mut Ctx<'_>, group: &GroupName, id: &synchrony_engine::MsgId, query: bool) {
        // A query that waited for room in the window went out.
        if query && *group == tool_group() {
            self.scenario.queried(ctx.slot(), id);
        }
    }

    fn event(&mut self, ctx: &mut Ctx<'_>, event: &Event) {
        let slot = ctx.slot();
        if event.group() != Some(&tool_group()) && !matches!(event, Event::QueryDone(_)) {
            return;
        }
        let me = ctx.me().clone();
        let mut fx = Effects::default();
        match event {
            Event::View { view, .. } => {
                let core = self.cores[slot].get_or_insert_with(|| self.scenario.new_core(slot, &me));
                core.on_view(view, &mut fx);
                self.scenario.observe(slot, &me, core, Input::View(view), &fx.outputs);
            }
            Event::Deliver(d) => {
                let Some(core) = self.cores[slot].as_mut() else { return };
                core.on_message(d, &mut fx);
                self.scenario.observe(slot, &me, core, Input::Message(d), &fx.outputs);
            }
            Event::State { state, .. } => {
                let core = self.cores[slot].get_or_insert_with(|| self.scenario.new_core(slot, &me));
                if let Err(e) = core.restore(state) {
                    panic!("state did not load: {e}");
                }
                self.scenario.observe(slot, &me, core, Input::State, &fx.outputs);
            }
            Event::QueryDone(q) if q.group == tool_group() => {
                let Some(core) = self.cores[slot].as_mut() else {
                    // A query ends even after its caller left the group (it fails then).
                    self.scenario.ended_outside(slot, q);
                    return;
                };
                core.on_query_done(q, &mut fx);
                self.scenario.observe(slot, &me, core, Input::QueryDone(q), &fx.outputs);
            }
            Event::Left { .. } | Event::StateLost { .. } => {
                self.cores[slot] = None;
            }
            _ => {}
        }
        self.run_effects(ctx, fx.effects);
    }

    fn state(&mut self, _ctx: &mut Ctx<'_>, group: &GroupName) -> Bytes {
        if *group != tool_group() {
            return Bytes::new();
        }
        self.cores[_ctx.slot()].as_ref().map(|c| c.snapshot()).unwrap_or_default()
    }

    fn act(&mut self, ctx: &mut Ctx<'_>) {
        let slot = ctx.slot();
        if !ctx.in_group(&tool_group()) {
            return;
        }
        let me = ctx.me().clone();
        let Some(core) = self.cores[slot].as_ref() else { return };
        let effects = self.scenario.act(slot, &me, core, ctx);
        self.run_effects(ctx, effects);
    }

    fn finish(&mut self, live: &[usize]) -> Vec<String> {
        let cores: BTreeMap<usize, &S::C> =
            live.iter().filter_map(|&s| self.cores[s].as_ref().map(|c| (s, c))).collect();
        let mut v = self.scenario.violations();
        v.extend(self.scenario.finish(&cores));
        v
    }
}

/// The profiles a tool is checked under, in turn.
pub const PROFILES: [&str; 5] = ["chaos", "churn", "leader-crash", "partition", "lossy"];

/// `default` seeds, or `SEEDS` from the environment (for longer runs by hand).
pub fn seeds(default: u64) -> u64 {
    std::env::var("SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(default)
}

/// Runs `seeds` seeds (profiles in turn). `ONLY=seed` runs one of them, and `TRACE_OUT=file`
/// writes its trace. on two threads; panics with the failures.
pub fn check_seeds<S: Scenario>(name: &str, seeds: u64, make: impl Fn() -> S + Sync) {
    let failed: Vec<String> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..2u64)
            .map(|w| {
                let make = &make;
                s.spawn(move || {
                    let mut failed = Vec::new();
                    let only: Option<u64> = std::env::var("ONLY").ok().and_then(|s| s.parse().ok());
                    for seed in (w..seeds).step_by(2).filter(|s| only.is_none_or(|o| o == *s)) {
                        let profile = PROFILES[(seed % PROFILES.len() as u64) as usize];
                        // Shorter than the checker's runs: a tool's state is checked at the
                        // end of each, and many seeds beat long ones.
                        let cfg = SimConfig {
                            fault_phase: Duration::from_millis(1500),
                            calm_traffic: Duration::from_millis(300),
                            settle: Duration::from_millis(2000),
                            ..SimConfig::new(seed, Profile::named(profile).expect("profile"))
                        };
                        let mut host = Host::new(make(), cfg.nodes);
                        let out = run_app(cfg, &mut host);
                        if let Ok(path) = std::env::var("TRACE_OUT") {
                            std::fs::write(path, out.trace_jsonl()).expect("trace written");
                        }
                        if let Some(why) = out.first_problem() {
                            failed.push(format!("{name} seed {seed} profile {profile}: {why}"));
                        }
                    }
                    failed
                })
            })
            .collect();
        workers.into_iter().flat_map(|w| w.join().expect("worker")).collect()
    });
    assert!(failed.is_empty(), "{} of {seeds} seeds failed:\n{}", failed.len(), failed.join("\n"));
}
