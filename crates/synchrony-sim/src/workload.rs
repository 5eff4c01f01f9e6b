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
    /// With large messages: the largest payload, how many payloads were made (each one's
    /// bytes differ), and deliveries whose bytes were not the ones sent.
    large: Option<Large>,
}

#[derive(Debug)]
struct Large {
    max: usize,
    made: u64,
    corrupt: Vec<String>,
}

impl Traffic {
    /// Traffic over the groups `g0` .. `g{groups - 1}`.
    pub fn new(groups: usize) -> Self {
        Self { groups: (0..groups).map(|g| GroupName::new(format!("g{g}"))).collect(), large: None }
    }

    /// Some multicasts are up to `max` bytes, and every payload ends with a digest of its
    /// other bytes, checked at each delivery (a message put together wrongly from its
    /// fragments fails the run).
    pub fn with_large(mut self, max: usize) -> Self {
        self.large = Some(Large { max, made: 0, corrupt: Vec::new() });
        self
    }

    /// A payload of `len` bytes (with large messages: sometimes longer, and checkable).
    fn payload(&mut self, ctx: &mut Ctx<'_>, len: usize) -> Bytes {
        let Some(large) = &mut self.large else {
            return Bytes::from(vec![0u8; len]);
        };
        let len = if ctx.rng().gen_bool(0.3) { ctx.rng().gen_range(len..=large.max.max(len)) } else { len };
        large.made += 1;
        Bytes::from(checkable(large.made, len))
    }
}

/// `len` bytes (at least 9) that differ by position and by `salt`, the last 8 a digest of
/// the others.
fn checkable(salt: u64, len: usize) -> Vec<u8> {
    let mut v: Vec<u8> = (0..len - 8).map(|i| (i as u64).wrapping_mul(131).wrapping_add(salt) as u8).collect();
    let digest = synchrony_engine::fnv1a(&v);
    v.extend_from_slice(&digest.to_le_bytes());
    v
}

/// Whether a payload made by [`Traffic::payload`] with large messages arrived as sent.
fn intact(payload: &[u8]) -> bool {
    let Some(split) = payload.len().checked_sub(8) else { return false };
    let (body, digest) = payload.split_at(split);
    digest == synchrony_engine::fnv1a(body).to_le_bytes()
}

/// Sends of one process to one group in flight before it waits.
/// Messages a process may have outstanding per group before its sends wait (the hosts' flow
/// control window in the simulator).
pub(crate) const SEND_WINDOW: usize = 32;

const ORDERS: [Order; 5] = [Order::Unordered, Order::Fifo, Order::Causal, Order::Total, Order::Safe];

impl App for Traffic {
    fn groups(&self) -> Vec<GroupName> {
        self.groups.clone()
    }

    fn event(&mut self, ctx: &mut Ctx<'_>, event: &Event) {
        if let Event::Deliver(d) = event {
            if let Some(large) = &mut self.large {
                if !intact(&d.payload) {
                    let (me, n) = (ctx.me().clone(), d.payload.len());
                    large.corrupt.push(format!("{me} delivered {} ({n} bytes) not as it was sent", d.id));
                }
            }
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
        // A sender whose send waits for room in the group's window (the host's flow
        // control: its sends are not getting through, held for causal order across groups,
        // queued behind a view change, not yet stable) is blocked, as one of the public API
        // is until its send returns.
        if ctx.blocked(&g) {
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
            let payloads = (0..n)
                .map(|_| {
                    let len = ctx.rng().gen_range(8..200);
                    self.payload(ctx, len)
                })
                .collect();
            let _ = ctx.send_batch(&g, order, payloads);
            return;
        }
        let len = ctx.rng().gen_range(8..200);
        let payload = self.payload(ctx, len);
        let _ = ctx.query(&g, order, payload, replies);
    }

    fn finish(&mut self, _live: &[usize]) -> Vec<String> {
        self.large.as_mut().map(|l| std::mem::take(&mut l.corrupt)).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::{checkable, intact};

    #[test]
    fn a_message_put_together_wrongly_is_caught() {
        let sent = checkable(7, 300);
        assert!(intact(&sent));
        // Two fragments swapped, one lost, one twice, the tail cut off.
        let mut swapped = sent.clone();
        let (a, b) = swapped.split_at_mut(128);
        a[64..128].swap_with_slice(&mut b[..64]);
        let lost = [&sent[..64], &sent[128..]].concat();
        let twice = [&sent[..128], &sent[64..]].concat();
        for wrong in [swapped, lost, twice, sent[..200].to_vec()] {
            assert!(!intact(&wrong));
        }
    }
}
