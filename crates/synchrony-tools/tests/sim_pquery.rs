//! Parallel query under the simulator's faults: each complete answer covers every row
//! exactly once, even when members fail or join while the query runs.

mod common;

use common::{check_seeds, Input, Scenario};
use rand::Rng;
use std::collections::BTreeMap;
use synchrony_engine::ProcessId;
use synchrony_sim::Ctx;
use synchrony_tools::{Effect, ParallelQuery, QueryProgress, Share};

const ROWS: u32 = 100;

/// Every member holds the rows 0..ROWS and answers with the ids of its share.
struct Rows;

impl Share for Rows {
    fn answer(&mut self, _query: &[u8], rank: usize, n: usize) -> bytes::Bytes {
        let mine: Vec<u32> = (0..ROWS).filter(|r| *r as usize % n == rank).collect();
        postcard::to_allocvec(&mine).expect("encodes").into()
    }
}

#[derive(Default)]
struct QueryScenario {
    answered: u64,
    retried: u64,
    violations: Vec<String>,
}

impl Scenario for QueryScenario {
    type C = ParallelQuery<Rows>;

    fn new_core(&mut self, _slot: usize, me: &ProcessId) -> ParallelQuery<Rows> {
        ParallelQuery::new(me.clone(), Rows)
    }

    fn act(&mut self, _slot: usize, _me: &ProcessId, _core: &ParallelQuery<Rows>, ctx: &mut Ctx<'_>) -> Vec<Effect> {
        if ctx.rng().gen_bool(0.3) {
            vec![ParallelQuery::<Rows>::ask(b"rows")]
        } else {
            Vec::new()
        }
    }

    fn observe(
        &mut self,
        _slot: usize,
        me: &ProcessId,
        _core: &ParallelQuery<Rows>,
        _input: Input<'_>,
        outputs: &[QueryProgress],
    ) {
        for o in outputs {
            match o {
                QueryProgress::Answered(a) => {
                    self.answered += 1;
                    let mut rows: Vec<u32> = Vec::new();
                    for p in &a.parts {
                        rows.extend(postcard::from_bytes::<Vec<u32>>(p).expect("rows"));
                    }
                    rows.sort_unstable();
                    if rows != (0..ROWS).collect::<Vec<_>>() {
                        self.violations.push(format!(
                            "{me}: query {} got {} rows in view {} ({} parts), not each of the {ROWS} once",
                            a.id,
                            rows.len(),
                            a.view,
                            a.parts.len()
                        ));
                    }
                }
                QueryProgress::Retried { .. } => self.retried += 1,
            }
        }
    }

    fn finish(&mut self, _cores: &BTreeMap<usize, &ParallelQuery<Rows>>) -> Vec<String> {
        if self.answered == 0 {
            return vec!["no query was answered: the run checked nothing".into()];
        }
        Vec::new()
    }

    fn violations(&mut self) -> Vec<String> {
        std::mem::take(&mut self.violations)
    }
}

#[test]
fn parallel_query_under_faults() {
    check_seeds("parallel query", common::seeds(200), QueryScenario::default);
}
