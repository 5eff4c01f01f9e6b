//! A query a tool does not understand gets a null reply from each member's core, so its
//! caller learns at once that nobody will answer (it waited forever before); a message that
//! is not a query gets nothing.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use synchrony_engine::{Delivery, GroupName, MsgId, Order, ProcessId, ViewId};
use synchrony_tools::{Apply, Cohort, Core, Effect, Effects, Handler, News, ParallelQuery, Replica, Semaphores, Share};

#[derive(Default, Serialize, Deserialize)]
struct Counter(i64);

impl Apply for Counter {
    type Update = i64;
    fn apply(&mut self, by: &i64) {
        self.0 += by;
    }
}

struct Echo;

impl Handler for Echo {
    fn execute(&mut self, request: &[u8]) -> Bytes {
        Bytes::copy_from_slice(request)
    }
}

struct Rows;

impl Share for Rows {
    fn answer(&mut self, _query: &[u8], _rank: usize, _n: usize) -> Bytes {
        Bytes::new()
    }
}

fn stranger(query: bool) -> Delivery {
    Delivery {
        group: GroupName::new("g"),
        view: ViewId(1),
        id: MsgId { sender: ProcessId::new("caller", 1), counter: 7 },
        order: Order::Total,
        query,
        payload: Bytes::from_static(b"\xffnot this tool's bytes at all"),
    }
}

/// The replies a core makes to the stranger's message.
fn replies<C: Core>(core: &mut C, query: bool) -> Vec<Option<Bytes>> {
    let mut fx = Effects::default();
    core.on_message(&stranger(query), &mut fx);
    fx.effects
        .into_iter()
        .filter_map(|e| match e {
            Effect::Reply { query, payload } if query.counter == 7 => Some(payload),
            _ => None,
        })
        .collect()
}

fn null_reply_once<C: Core>(name: &str, mut core: C) {
    assert_eq!(replies(&mut core, true), [None], "{name}: one null reply to a query it does not understand");
    assert!(replies(&mut core, false).is_empty(), "{name}: nothing for a plain message");
}

#[test]
fn every_tool_answers_a_query_it_does_not_understand_with_a_null_reply() {
    let me = ProcessId::new("m", 1);
    null_reply_once("replicated", Replica::<Counter>::default());
    null_reply_once("locks", Semaphores::default());
    null_reply_once("cohort", Cohort::new(me.clone(), "h", Echo));
    null_reply_once("news", News::default());
    null_reply_once("parallel query", ParallelQuery::new(me, Rows));
}
