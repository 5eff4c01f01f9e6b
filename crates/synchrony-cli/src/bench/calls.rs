//! `synchrony bench --rpc` and `--map`: group RPCs waiting for every member's reply, and
//! updates to the replicated map, each made by `clients` concurrent callers per sending
//! member (closed loop: a caller makes its next call when the last one returned, or at its
//! pace with `--rate`). The callers report calls per second and call latency; the other
//! members report what they delivered (queries) or applied (updates).

use super::{now_us, payload, sleep_until_us, MemberArgs, MemberResult, Meter, Pace};
use anyhow::{Context, Result};
use bytes::Bytes;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use synchrony::{tools::ReplicatedMap, Event, Group, JoinOptions, Node, Order, Replies};

async fn start(a: &MemberArgs) -> Result<(Node, Group)> {
    let node = Node::start(super::member_config(a)).await.context("starting")?;
    let group = node.join("bench", JoinOptions::default()).await?;
    Ok((node, group))
}

/// Runs `a.clients` callers until the measured window ends; each makes one call at a time
/// with `call` (given a stamped payload; true if it succeeded) and meters it.
async fn callers<F, Fut>(a: &MemberArgs, meter: Arc<Mutex<Meter>>, call: F) -> u64
where
    F: Fn(Bytes) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let stop = meter.lock().expect("lock").to;
    let mut tasks = Vec::new();
    for c in 0..a.clients.max(1) {
        let (meter, call, size) = (meter.clone(), call.clone(), a.size);
        // Paced callers spread over the interval so they do not all call at once.
        let offset = 1_000_000u64.checked_div(a.rate.max(1) * a.clients.max(1) as u64).unwrap_or(0) * c as u64;
        let mut pace = Pace::new(a.rate, a.start_at + offset);
        let start_at = a.start_at;
        tasks.push(tokio::spawn(async move {
            sleep_until_us(start_at).await;
            let mut made = 0u64;
            while now_us() < stop {
                if pace.interval_us > 0 {
                    pace.batch().await;
                }
                let p = Bytes::from(payload(size));
                if call(p.clone()).await {
                    meter.lock().expect("lock").deliver(&p);
                    made += 1;
                }
            }
            made
        }));
    }
    let mut made = 0;
    for t in tasks {
        made += t.await.unwrap_or(0);
    }
    made
}

/// A member of `--rpc`: answers every query with an empty reply; a sender also calls.
pub(super) async fn rpc_member(a: MemberArgs) -> Result<MemberResult> {
    let order: Order = a.order.parse().map_err(|e| anyhow::anyhow!("{e}"))?;
    let (_node, mut group) = start(&a).await?;
    let calls = Arc::new(Mutex::new(Meter::new(&a)));
    let mut delivered = Meter::new(&a);
    let end = delivered.to + 2_000_000;
    let caller = (a.index < a.senders).then(|| {
        let (a, calls, sender) = (a.clone(), calls.clone(), group.sender());
        tokio::spawn(async move {
            callers(&a, calls, move |p| {
                let sender = sender.clone();
                async move { sender.query(order, p, Replies::All).await.is_ok_and(|o| o.satisfied) }
            })
            .await
        })
    });
    loop {
        let wait = end.saturating_sub(now_us());
        if wait == 0 {
            break;
        }
        match tokio::time::timeout(Duration::from_micros(wait), group.next_event()).await {
            Ok(Some(Event::Message(m))) => {
                delivered.deliver(m.payload());
                if m.is_query() && m.reply(Bytes::new()).await.is_err() {
                    break;
                }
            }
            Ok(Some(Event::StateRequest(r))) => {
                if r.provide(Bytes::new()).await.is_err() {
                    break;
                }
            }
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }
    let Some(caller) = caller else { return Ok(delivered.result(a.index, 0, "delivered")) };
    let made = caller.await.unwrap_or(0);
    let m = std::mem::replace(&mut *calls.lock().expect("lock"), Meter::new(&a));
    Ok(m.result(a.index, made, "calls"))
}

/// A member of `--map`: a replicated map of `u64` keys (1000 of them, rewritten over and
/// over, as the etcd script does) to values of `size` bytes; a sender's callers put.
pub(super) async fn map_member(a: MemberArgs) -> Result<MemberResult> {
    let (_node, group) = start(&a).await?;
    let map: ReplicatedMap<u64, Vec<u8>> = ReplicatedMap::start(group);
    let puts = Arc::new(Mutex::new(Meter::new(&a)));
    let (from, to) = {
        let m = puts.lock().expect("lock");
        (m.from, m.to)
    };
    let caller = (a.index < a.senders).then(|| {
        let (a, puts, map) = (a.clone(), puts.clone(), map.clone());
        let next_key = Arc::new(std::sync::atomic::AtomicU64::new(a.index as u64 * 1_000_000));
        tokio::spawn(async move {
            callers(&a, puts, move |p| {
                let (map, key) = (map.clone(), next_key.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 1000);
                async move { map.put(key, p.to_vec()).await.is_ok() }
            })
            .await
        })
    });
    // Everyone: updates applied here during the window.
    sleep_until_us(from).await;
    let before = map.applied();
    sleep_until_us(to).await;
    let applied = map.applied() - before;
    sleep_until_us(to + 2_000_000).await;
    let Some(caller) = caller else {
        let mut r = Meter::new(&a).result(a.index, 0, "applied");
        r.delivered_per_sec = applied as f64 / ((to - from) as f64 / 1e6);
        r.mb_per_sec = r.delivered_per_sec * a.size as f64 / 1e6;
        return Ok(r);
    };
    let made = caller.await.unwrap_or(0);
    let m = std::mem::replace(&mut *puts.lock().expect("lock"), Meter::new(&a));
    Ok(m.result(a.index, made, "puts"))
}
