//! The membership round after a crash, with every process in N groups: three engines in
//! one thread (the tests' harness, no I/O), the third crashed and both survivors told it is
//! unreachable; timed until both installed a view without it in every group. The work per
//! group of that round is what this measures: it should grow with what changed, and a
//! process in 10,000 groups should lose a member about as fast as one in a single group.
#![allow(missing_docs)] // criterion_group! generates an undocumented function

#[path = "../tests/harness/mod.rs"]
mod harness;

use criterion::{criterion_group, criterion_main, Criterion};
use harness::{g, Net};
use std::time::Duration;
use synchrony_engine::{Config, Event};

/// The allocator `synchrony` itself runs on (see its `main.rs`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Three processes, each in the same `n` groups.
fn cluster_in(n: usize) -> Net {
    let mut net = Net::cluster_with(3, |c: &mut Config| c.max_groups = 1_000_000);
    let groups: Vec<_> = (0..n).map(|k| g(&format!("g{k}"))).collect();
    for i in 0..3 {
        net.with(i, |e, now| e.join_many(now, groups.clone()));
        let ok = net.run_until(Duration::from_secs(60), |net| net.engine_ref(i).my_groups().count() == n);
        assert!(ok, "n{} did not get into its groups", i + 1);
    }
    net.run_for(Duration::from_millis(100));
    net
}

/// Tells the survivors n3 (crashed) is unreachable, and runs until each installed a view
/// without it in each of the `n` groups (counted from their events as they come: a scan of
/// every group after each step would cost more than the round).
fn kill_round(mut net: Net, n: usize) -> Net {
    for i in 0..2 {
        net.with(i, |e, now| e.handle_unreachable(now, "n3"));
    }
    let mut seen = [net.nodes[0].events.len(), net.nodes[1].events.len()];
    let mut views = [0; 2];
    let done = net.run_until(Duration::from_secs(10), |net| {
        for i in 0..2 {
            let new = &net.nodes[i].events[seen[i]..];
            views[i] += new.iter().filter(|e| matches!(e, Event::View { view, .. } if view.members.len() == 2)).count();
            seen[i] = net.nodes[i].events.len();
        }
        views == [n, n]
    });
    assert!(done, "the survivors did not drop n3 from every group: {views:?} of {n}");
    net
}

fn view_change(c: &mut Criterion) {
    let mut group = c.benchmark_group("kill round");
    group.sample_size(10);
    for n in [1, 1_000, 10_000] {
        group.bench_function(format!("{n} groups"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let mut net = cluster_in(n);
                    // The crash, untimed: dropping an engine in 10,000 groups is no part
                    // of the survivors' round.
                    let dead = net.nodes[2].engine.take();
                    let start = std::time::Instant::now();
                    let net = std::hint::black_box(kill_round(net, n));
                    total += start.elapsed();
                    drop((net, dead)); // (not timed: tearing down 30,000 groups)
                }
                total
            });
        });
    }
    group.finish();
}

criterion_group!(benches, view_change);
criterion_main!(benches);
