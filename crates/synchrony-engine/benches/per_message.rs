//! The engine's per-message path: encoding and decoding frames, and ordering and
//! delivering multicasts between three engines in one thread (no I/O).
#![allow(missing_docs)] // criterion_group! generates an undocumented function

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use std::sync::Arc;
use std::time::Duration;
use synchrony_engine::wire::{self, DataMsg, Msg, Packet};
use synchrony_engine::{Config, Engine, Event, GroupName, Instant, MsgId, Order, ProcessId, ViewId};

fn packet(n: usize, size: usize) -> Packet {
    let me = ProcessId::new("a", 1);
    let msgs = (0..n)
        .map(|k| Msg::Data {
            group: GroupName::new("g"),
            view: ViewId(1),
            epoch: 0,
            pepoch: 0,
            msg: Arc::new(DataMsg {
                id: MsgId { sender: me.clone(), counter: k as u64 },
                seq: k as u64 + 1,
                order: Order::Total,
                vt: vec![k as u64 + 1, 0, 0].into(),
                query: false,
                relayed: false,
                frag: None,
                payload: Bytes::from(vec![7u8; size]),
            }),
        })
        .collect();
    Packet { from: me, to: ProcessId::new("b", 1), ack: 0, seq: 0, msgs, ctl: Vec::new() }
}

fn codec(c: &mut Criterion) {
    let mut g = c.benchmark_group("frame");
    let p = packet(64, 1000);
    g.throughput(Throughput::Elements(64));
    g.bench_function("encode 64 x 1 KB", |b| b.iter(|| wire::encode(&p, Some(b"secret"))));
    let f = wire::encode(&p, Some(b"secret"));
    g.bench_function("decode 64 x 1 KB", |b| b.iter(|| wire::decode(&f, Some(b"secret")).expect("decodes")));
    g.bench_function("decode shared 64 x 1 KB", |b| {
        b.iter(|| wire::decode_shared(&f, Some(b"secret")).expect("decodes"))
    });
    g.finish();
}

/// Three engines in one thread: moves frames between them until nothing is left.
struct Trio {
    engines: Vec<Engine>,
    now: Instant,
    delivered: usize,
    /// Cork every engine around each round of frames, as the runtime does.
    corked: bool,
}

impl Trio {
    fn new() -> Self {
        let now = Instant::ZERO;
        let mut engines = vec![Engine::new(Config::default(), ProcessId::new("n0", 1), now)];
        for i in 1..3 {
            let config = Config { contacts: vec![ProcessId::contact("n0")], ..Config::default() };
            engines.push(Engine::new(config, ProcessId::new(format!("n{i}"), 1), now));
        }
        let mut t = Trio { engines, now, delivered: 0, corked: false };
        t.engines[0].join(now, GroupName::new("g")).expect("joins");
        for _ in 0..200 {
            t.step(Duration::from_millis(5));
            if (1..3).all(|i| t.engines[i].status() == synchrony_engine::Status::Member) {
                break;
            }
        }
        for i in 1..3 {
            let now = t.now;
            t.engines[i].join(now, GroupName::new("g")).expect("joins");
        }
        for _ in 0..200 {
            t.step(Duration::from_millis(5));
        }
        assert!(t.engines.iter().all(|e| e.view(&GroupName::new("g")).is_some_and(|v| v.members.len() == 3)));
        t
    }

    /// Delivers every frame in flight (repeatedly), then advances the clock.
    fn step(&mut self, tick: Duration) {
        loop {
            let mut frames = Vec::new();
            for e in &mut self.engines {
                while let Some(t) = e.poll_transmit() {
                    frames.push(t);
                }
                while let Some(ev) = e.poll_event() {
                    match ev {
                        Event::Deliver(_) => self.delivered += 1,
                        Event::StateRequest { group, view, .. } => {
                            e.provide_state(self.now, &group, view, Bytes::new())
                        }
                        _ => {}
                    }
                }
            }
            if frames.is_empty() {
                break;
            }
            if self.corked {
                self.engines.iter_mut().for_each(Engine::cork);
            }
            for t in frames {
                if let Some(e) = self.engines.iter_mut().find(|e| e.id().name == t.to.name) {
                    let _ = e.handle_frame(self.now, &t.frame);
                }
            }
            if self.corked {
                let now = self.now;
                self.engines.iter_mut().for_each(|e| e.uncork(now));
            }
        }
        self.now = Instant::from_epoch(self.now.since_epoch() + tick);
        for e in &mut self.engines {
            e.handle_timeout(self.now);
        }
    }
}

fn order_and_deliver(c: &mut Criterion) {
    let mut g = c.benchmark_group("multicast");
    g.sample_size(20);
    for order in [Order::Fifo, Order::Total, Order::Safe] {
        g.throughput(Throughput::Elements(3 * 256));
        g.bench_function(format!("{} 256 x 1 KB to 3 members", order.as_str()), |b| {
            b.iter_batched(
                Trio::new,
                |mut t| {
                    let start = t.delivered;
                    let now = t.now;
                    for _ in 0..256 {
                        t.engines[1]
                            .send(now, GroupName::new("g"), order, Bytes::from(vec![1u8; 1000]))
                            .expect("sends");
                    }
                    while t.delivered - start < 3 * 256 {
                        t.step(Duration::from_millis(1));
                    }
                },
                BatchSize::LargeInput,
            )
        });
    }
    // As the runtime drives it: one send_batch, engines corked around each round of frames.
    for order in [Order::Fifo, Order::Total] {
        g.throughput(Throughput::Elements(3 * 256));
        g.bench_function(format!("{} 256 x 1 KB to 3 members, batched and corked", order.as_str()), |b| {
            b.iter_batched(
                || Trio { corked: true, ..Trio::new() },
                |mut t| {
                    let start = t.delivered;
                    let now = t.now;
                    let batch = (0..256).map(|_| Bytes::from(vec![1u8; 1000]));
                    t.engines[1].send_batch(now, &GroupName::new("g"), order, batch);
                    while t.delivered - start < 3 * 256 {
                        t.step(Duration::from_millis(1));
                    }
                },
                BatchSize::LargeInput,
            )
        });
    }
    g.finish();
}

criterion_group!(benches, codec, order_and_deliver);
criterion_main!(benches);
