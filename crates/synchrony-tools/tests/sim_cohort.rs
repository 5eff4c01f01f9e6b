//! Coordinator-cohort under the simulator's faults: every request a live caller makes gets
//! exactly one reply, the right one, while coordinators fail and cohorts take over.

mod common;

use common::{check_seeds, Input, Scenario};
use rand::Rng;
use std::collections::BTreeMap;
use synchrony_engine::ProcessId;
use synchrony_sim::Ctx;
use synchrony_tools::{Cohort, CohortOutput, Effect, Handler};

/// Replies with the request itself, so the caller can tell its reply from another's.
struct Echo;

impl Handler for Echo {
    fn execute(&mut self, request: &[u8]) -> bytes::Bytes {
        bytes::Bytes::copy_from_slice(request)
    }
}

fn host(slot: usize) -> String {
    format!("h{}", slot % 2)
}

#[derive(Default)]
struct CohortScenario {
    /// Per caller incarnation: requests asked and requests done.
    asked: BTreeMap<String, u64>,
    /// Requests in flight, by slot.
    open: BTreeMap<usize, std::collections::BTreeSet<synchrony_engine::MsgId>>,
    /// The last incarnation seen in each slot.
    last: BTreeMap<usize, String>,
    replied: u64,
    unanswered: u64,
    takeovers: u64,
    violations: Vec<String>,
}

impl Scenario for CohortScenario {
    type C = Cohort<Echo>;

    fn new_core(&mut self, slot: usize, me: &ProcessId) -> Cohort<Echo> {
        Cohort::new(me.clone(), host(slot), Echo)
    }

    fn act(&mut self, slot: usize, me: &ProcessId, _core: &Cohort<Echo>, ctx: &mut Ctx<'_>) -> Vec<Effect> {
        if !ctx.rng().gen_bool(0.3) {
            return Vec::new();
        }
        let n = self.asked.entry(me.to_string()).or_default();
        *n += 1;
        self.last.insert(slot, me.to_string());
        let body = format!("{me}:{n}");
        let (order, payload, replies) = Cohort::<Echo>::request(&host(slot), body.as_bytes());
        vec![Effect::Query { order, payload, replies }]
    }

    fn observe(
        &mut self,
        slot: usize,
        me: &ProcessId,
        _core: &Cohort<Echo>,
        input: Input<'_>,
        outputs: &[CohortOutput],
    ) {
        self.last.insert(slot, me.to_string());
        for o in outputs {
            if let CohortOutput::Replied { .. } = o {
                self.replied += 1;
            }
        }
        let Input::QueryDone(q) = input else { return };
        if let Some(open) = self.open.get_mut(&slot) {
            open.remove(&q.id);
        }
        match q.replies.len() {
            0 => self.unanswered += 1,
            1 => {
                let body = String::from_utf8_lossy(&q.replies[0].1).to_string();
                if !body.starts_with(&format!("{me}:")) {
                    self.violations.push(format!("{me}'s request {} got another's reply: {body}", q.id));
                }
                if q.replies[0].0 != q.id.sender && !q.failed.is_empty() {
                    self.takeovers += 1;
                }
            }
            k => self.violations.push(format!("{me}'s request {} got {k} replies", q.id)),
        }
    }

    fn ended_outside(&mut self, slot: usize, outcome: &synchrony_engine::QueryOutcome) {
        if let Some(open) = self.open.get_mut(&slot) {
            open.remove(&outcome.id);
        }
    }

    fn queried(&mut self, slot: usize, id: &synchrony_engine::MsgId) {
        self.open.entry(slot).or_default().insert(id.clone());
    }

    fn finish(&mut self, cores: &BTreeMap<usize, &Cohort<Echo>>) -> Vec<String> {
        let mut v = Vec::new();
        for slot in cores.keys() {
            let Some(me) = self.last.get(slot) else { continue };
            let open: Vec<_> =
                self.open.get(slot).into_iter().flatten().filter(|id| id.sender.to_string() == *me).collect();
            if !open.is_empty() {
                v.push(format!("{me}'s requests {open:?} never ended"));
            }
        }
        for (slot, c) in cores {
            if c.pending() > 0 {
                v.push(format!("slot {slot}: {} requests still wait for a coordinator at quiescence", c.pending()));
            }
        }
        if self.replied == 0 {
            v.push("no request was answered: the run checked nothing".into());
        }
        v
    }

    fn violations(&mut self) -> Vec<String> {
        std::mem::take(&mut self.violations)
    }
}

#[test]
fn coordinator_cohort_under_faults() {
    check_seeds("coordinator-cohort", common::seeds(200), CohortScenario::default);
}

/// The coordinator is on the caller's machine when one is, and spread by hash otherwise.
#[test]
fn the_coordinator_is_local_or_spread() {
    let ms: Vec<ProcessId> = (1..=4).map(|i| ProcessId::new(format!("n{i}"), 1)).collect();
    let hosts: BTreeMap<ProcessId, String> =
        ms.iter().enumerate().map(|(i, m)| (m.clone(), format!("h{}", i % 2))).collect();
    let id = |c| synchrony_engine::MsgId { sender: ProcessId::new("c", 1), counter: c };
    assert_eq!(Cohort::<Echo>::choose(&ms, &hosts, "h1", &id(0)), ms[1]);
    let spread: std::collections::BTreeSet<ProcessId> =
        (0..64).map(|c| Cohort::<Echo>::choose(&ms, &hosts, "elsewhere", &id(c))).collect();
    assert_eq!(spread.len(), 4);
}
