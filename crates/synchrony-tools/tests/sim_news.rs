//! News under the simulator's faults: subscribers receive only what they subscribed to, each
//! poster's postings in the order posted, and every subscriber a subject's postings in one
//! order.

mod common;

use common::{check_seeds, Input, Scenario};
use rand::Rng;
use std::collections::BTreeMap;
use synchrony_engine::ProcessId;
use synchrony_sim::Ctx;
use synchrony_tools::{matches, Effect, News, NewsOutput};

const PATTERNS: [&str; 5] = ["*", "a.*", "b.*", "a.1", "b.2"];

#[derive(Default)]
struct NewsScenario {
    /// Per poster incarnation and subject: postings so far.
    posted: BTreeMap<(String, String), u64>,
    /// Per subscriber incarnation and subject: (poster, number) received, in order.
    got: BTreeMap<(String, String), Vec<(String, u64)>>,
    received: u64,
    /// The incarnation last seen in each slot.
    last: BTreeMap<usize, String>,
    violations: Vec<String>,
}

impl Scenario for NewsScenario {
    type C = News;

    fn new_core(&mut self, slot: usize, _me: &ProcessId) -> News {
        let mut n = News::default();
        n.subscribe(PATTERNS[slot % PATTERNS.len()]);
        n
    }

    fn act(&mut self, _slot: usize, me: &ProcessId, _core: &News, ctx: &mut Ctx<'_>) -> Vec<Effect> {
        let subject = format!("{}.{}", ["a", "b"][ctx.rng().gen_range(0..2)], ctx.rng().gen_range(0..4));
        let n = self.posted.entry((me.to_string(), subject.clone())).or_default();
        *n += 1;
        let (order, payload) = News::post(&subject, &n.to_be_bytes());
        vec![Effect::Send { order, payload }]
    }

    fn observe(&mut self, slot: usize, me: &ProcessId, _core: &News, _input: Input<'_>, outputs: &[NewsOutput]) {
        self.last.insert(slot, me.to_string());
        for NewsOutput::Posting(p) in outputs {
            self.received += 1;
            let pattern = PATTERNS[slot % PATTERNS.len()];
            if !matches(pattern, &p.subject) {
                self.violations.push(format!("{me} (subscribed to {pattern}) received {}", p.subject));
            }
            let n = u64::from_be_bytes(p.body[..8].try_into().expect("8 bytes"));
            let list = self.got.entry((me.to_string(), p.subject.clone())).or_default();
            let from = p.from.to_string();
            if let Some((_, last)) = list.iter().rev().find(|(f, _)| *f == from) {
                if *last >= n {
                    self.violations.push(format!("{me} got {from}'s posting {n} on {} after {last}", p.subject));
                }
            }
            list.push((from, n));
        }
    }

    fn finish(&mut self, cores: &BTreeMap<usize, &News>) -> Vec<String> {
        let mut v = Vec::new();
        // Total order is not uniform: a subscriber that failed may have delivered a few
        // postings in an order the survivors did not (as G7 allows). Compare survivors.
        let live: std::collections::BTreeSet<&String> = cores.keys().filter_map(|s| self.last.get(s)).collect();
        let keys: Vec<&(String, String)> = self.got.keys().filter(|k| live.contains(&k.0)).collect();
        for (i, a) in keys.iter().enumerate() {
            for b in &keys[i + 1..] {
                if a.1 != b.1 {
                    continue;
                }
                let (la, lb) = (&self.got[*a], &self.got[*b]);
                let fa: Vec<_> = la.iter().filter(|x| lb.contains(x)).collect();
                let fb: Vec<_> = lb.iter().filter(|x| la.contains(x)).collect();
                if fa != fb {
                    let k = fa.iter().zip(&fb).position(|(x, y)| x != y).unwrap_or(0);
                    v.push(format!(
                        "{} and {} received {} in different orders: {:?} / {:?}",
                        a.0,
                        b.0,
                        a.1,
                        &fa[k.saturating_sub(1)..(k + 3).min(fa.len())],
                        &fb[k.saturating_sub(1)..(k + 3).min(fb.len())]
                    ));
                }
            }
        }
        if self.received == 0 {
            v.push("nothing was received: the run checked nothing".into());
        }
        v
    }

    fn violations(&mut self) -> Vec<String> {
        std::mem::take(&mut self.violations)
    }
}

#[test]
fn news_under_faults() {
    check_seeds("news", common::seeds(200), NewsScenario::default);
}

/// Subjects spread over a bounded number of channels.
#[test]
fn a_million_subjects_fit_in_a_few_channels() {
    let mut used = std::collections::BTreeSet::new();
    for s in 0..1_000_000u32 {
        used.insert(synchrony_tools::channel_of(&format!("subject.{s}"), 16));
    }
    assert_eq!(used.len(), 16);
}

/// The order check is not vacuous.
#[test]
fn postings_in_two_orders_are_caught() {
    let mut s = NewsScenario { received: 2, ..NewsScenario::default() };
    let x = ("n1#1".to_string(), 1);
    let y = ("n2#1".to_string(), 1);
    s.got.insert(("n3#1".into(), "a.1".into()), vec![x.clone(), y.clone()]);
    s.got.insert(("n4#1".into(), "a.1".into()), vec![y, x]);
    s.last.insert(2, "n3#1".into());
    s.last.insert(3, "n4#1".into());
    let core = News::default();
    let v = s.finish(&BTreeMap::from([(2, &core), (3, &core)]));
    assert!(v.iter().any(|m| m.contains("different orders")), "{v:?}");
}
