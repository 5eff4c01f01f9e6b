//! The workload the guarantee checker runs on: every order class, flushes, group RPCs with
//! 1, 2 or all replies (and null replies), across several groups with overlapping members.

use crate::app::{App, Ctx};
use bytes::Bytes;
use rand::seq::SliceRandom;
use rand::Rng;
use synchrony_engine::{Event, GroupName, Order, Replies};

/// Random traffic over `groups` groups; its state is the delivered ids the simulator keeps,
/// so it has no state of its own.
#[derive(Debug)]
pub struct Traffic {
    groups: Vec<GroupName>,
}

impl Traffic {
    /// Traffic over the groups `g0` .. `g{groups - 1}`.
    pub fn new(groups: usize) -> Self {
        Self { groups: (0..groups).map(|g| GroupName::new(format!("g{g}"))).collect() }
    }
}

/// Sends of one process to one group in flight before it waits.
const SEND_WINDOW: usize = 32;

const ORDERS: [Order; 5] = [Order::Unordered, Order::Fifo, Order::Causal, Order::Total, Order::Safe];

impl App for Traffic {
    fn groups(&self) -> Vec<GroupName> {
        self.groups.clone()
    }

    fn event(&mut self, ctx: &mut Ctx<'_>, event: &Event) {
        if let Event::Deliver(d) = event {
            if d.query {
                let answer = ctx.rng().gen_bool(0.7).then(|| Bytes::from(ctx.me().to_string()));
                ctx.reply(&d.id, answer);
            }
        }
    }

    fn state(&mut self, _ctx: &mut Ctx<'_>, _group: &GroupName) -> Bytes {
        Bytes::new()
    }

    fn act(&mut self, ctx: &mut Ctx<'_>) {
        let g = self.groups.choose(ctx.rng()).expect("groups").clone();
        let roll: f64 = ctx.rng().gen();
        let member = ctx.engine().my_groups().any(|x| *x == g);
        // Do not send to a group this process is leaving (such sends may be dropped).
        if member && !ctx.in_group(&g) {
            return;
        }
        // Flow control, as the runtime's send window: a process whose sends to the group
        // are not getting through (held for causal order across groups, queued behind a
        // view change, not yet stable) waits rather than piling up more.
        if ctx.engine().outstanding(&g) >= SEND_WINDOW {
            return;
        }
        if roll < 0.05 {
            if member {
                let _ = ctx.flush(&g);
            }
            return;
        }
        let order = if roll < 0.07 { Order::Gbcast } else { ORDERS[ctx.rng().gen_range(0..5)] };
        let replies = match ctx.rng().gen_range(0..12) {
            0 => Replies::One,
            1 => Replies::All,
            2 => Replies::Count(2),
            _ => Replies::None,
        };
        // Where the profile batches (as the runtime does), some plain multicasts go several
        // at a time through one engine call.
        if ctx.batches() && order != Order::Gbcast && replies == Replies::None && ctx.rng().gen_bool(0.3) {
            let n = ctx.rng().gen_range(2..6);
            let payloads = (0..n).map(|_| Bytes::from(vec![0u8; ctx.rng().gen_range(8..200)])).collect();
            let _ = ctx.send_batch(&g, order, payloads);
            return;
        }
        let payload = Bytes::from(vec![0u8; ctx.rng().gen_range(8..200)]);
        let _ = ctx.query(&g, order, payload, replies);
    }

    fn finish(&mut self, _live: &[usize]) -> Vec<String> {
        Vec::new()
    }
}
