//! `synchrony bench`: N member processes on loopback, K senders as fast as flow control
//! allows, and in the same run the raw baseline: the same bytes fanned out to the same
//! number of processes over plain TCP with the same batching and no guarantees.
//!
//! Each member is a child process (`synchrony bench-member`) that prints one JSON line of
//! results. A message carries its send time (wall clock, the same on one machine), so every
//! member measures send-to-delivery latency. `--rpc` and `--map` measure group RPCs and
//! replicated-map updates instead ([`calls`]).

mod calls;
mod churn;
mod groups;

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use synchrony_engine::{GroupName, Order};
use synchrony_runtime::{Config, GroupEvent, Runtime};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};

/// `synchrony bench` options.
#[derive(clap::Args, Clone, Debug)]
pub(crate) struct BenchArgs {
    /// Member processes.
    #[arg(long, default_value_t = 3)]
    members: usize,
    /// Payload bytes per message.
    #[arg(long, default_value_t = 1000)]
    size: usize,
    /// Order class.
    #[arg(long, default_value = "total")]
    order: String,
    /// How many members send.
    #[arg(long, default_value_t = 1)]
    senders: usize,
    /// Seconds of measured traffic (after one second of warm-up).
    #[arg(long, default_value_t = 5)]
    duration: u64,
    /// Messages per second per sender, one at a time (latency at light load); 0: as fast
    /// as flow control allows, in batches.
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
    /// Skip the raw TCP baseline.
    #[arg(long)]
    no_baseline: bool,
    /// Group RPCs waiting for every member's reply instead of multicasts: calls per second
    /// and call latency at the callers (no raw baseline).
    #[arg(long, conflicts_with = "map")]
    rpc: bool,
    /// Updates to the replicated map (values of SIZE bytes) instead of multicasts: puts per
    /// second and put latency at the callers (no raw baseline).
    #[arg(long)]
    map: bool,
    /// With --rpc or --map: concurrent callers per sending member (default 1 for --rpc,
    /// 16 for --map, as the etcd peer script's clients).
    #[arg(long)]
    clients: Option<usize>,
    /// Membership speed under load: kill a member (SIGKILL) and time the new view at every
    /// survivor, then time a new member's join with --state-mb of state; --rounds times.
    #[arg(long, conflicts_with_all = ["rpc", "map"])]
    churn: bool,
    /// With --churn: kill-and-join rounds.
    #[arg(long, default_value_t = 2)]
    rounds: usize,
    /// With --churn: the group's state in MB, one per round (cycled).
    #[arg(long, value_delimiter = ',', default_value = "1,100")]
    state_mb: Vec<f64>,
    /// Silence after which a member is suspected (heartbeats at a tenth of it).
    #[arg(long, default_value = "1s", value_parser = crate::node::parse_duration)]
    failure_timeout: Duration,
    /// With --churn: freeze the member (SIGSTOP: a hung process whose sockets stay open, so
    /// only missing heartbeats reveal it) instead of killing it; it is killed once the
    /// survivors moved on. A SIGKILLed process's sockets close at once and a refused
    /// reconnection is taken as its failure.
    #[arg(long)]
    freeze: bool,
    /// With --churn: SIGKILL the joiner's state provider (the oldest member) in the middle of
    /// its transfer; the joiner goes on from the next member where it was.
    #[arg(long)]
    kill_provider: bool,
    /// With --churn: states written and read as streams (`StateRequest::stream`,
    /// `JoinOptions::stream_state`): the provider makes its state as the joiner fetches it
    /// and the joiner reads it as it comes; neither holds it whole.
    #[arg(long)]
    stream: bool,
    /// Trace every member and check the traces at the end (with --churn, or a run of
    /// multicasts).
    #[arg(long)]
    check: bool,
    /// The last member also multicasts small (64-byte) messages at this rate to the same
    /// group, in the same order class, and their latency is reported apart: with large
    /// messages, whether small ones keep flowing beside them.
    #[arg(long, default_value_t = 0, conflicts_with_all = ["rpc", "map", "churn"])]
    small_rate: u64,
    /// The senders send each payload from a reader (`Runtime::send_reader`: spooled to a
    /// file and mapped) instead of a buffer they hold; each member also reports its peak
    /// anonymous (heap) memory apart from the file pages it maps.
    #[arg(long, conflicts_with_all = ["rpc", "map", "churn"])]
    from_reader: bool,
    /// Many groups per process instead of traffic: a founder makes N groups, --joiners
    /// processes join all N at once; reports the join time, memory per group, idle CPU,
    /// suspicions, and how long a SIGKILLed joiner takes to leave every view (--duration
    /// is the idle window measured).
    #[arg(long, conflicts_with_all = ["rpc", "map", "churn"])]
    groups_scale: Option<usize>,
    /// With --groups-scale: processes joining every group (the kill needs two: with one,
    /// the founder alone would be a minority).
    #[arg(long, default_value_t = 2)]
    joiners: usize,
    /// Every member first joins this many other groups and leaves them idle: traffic in one
    /// group beside thousands of idle ones.
    #[arg(long, default_value_t = 0)]
    idle_groups: usize,
}

impl BenchArgs {
    fn mode(&self) -> &'static str {
        if self.rpc {
            "rpc"
        } else if self.map {
            "map"
        } else {
            "multicast"
        }
    }

    fn clients(&self) -> usize {
        self.clients.unwrap_or(if self.map { 16 } else { 1 })
    }
}

/// `synchrony bench-member` (started by `bench`).
#[derive(clap::Args, Clone, Debug)]
pub(crate) struct MemberArgs {
    #[arg(long)]
    raw: bool,
    #[arg(long)]
    index: usize,
    /// Every member's address, in index order.
    #[arg(long, value_delimiter = ',')]
    addrs: Vec<String>,
    #[arg(long)]
    senders: usize,
    #[arg(long)]
    size: usize,
    #[arg(long)]
    order: String,
    /// When sending starts (microseconds since the Unix epoch).
    #[arg(long)]
    start_at: u64,
    #[arg(long)]
    warmup: u64,
    #[arg(long)]
    duration: u64,
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// multicast, rpc or map.
    #[arg(long, default_value = "multicast")]
    mode: String,
    #[arg(long, default_value_t = 1)]
    clients: usize,
    #[arg(long, value_parser = crate::node::parse_duration)]
    failure_timeout: Option<Duration>,
    #[arg(long)]
    trace: Option<std::path::PathBuf>,
    /// A member started during the run (reports its join's timing).
    #[arg(long)]
    joiner: bool,
    /// The state it gives joiners, in bytes.
    #[arg(long, default_value_t = 0)]
    state_bytes: usize,
    /// States written and read as streams (`bench --stream`).
    #[arg(long)]
    stream: bool,
    /// Groups to join (`--groups-scale`), or idle groups to join first.
    #[arg(long, default_value_t = 0)]
    groups: usize,
    /// Small messages a second from the last member (`bench --small-rate`).
    #[arg(long, default_value_t = 0)]
    small_rate: u64,
    /// Send from a reader (`bench --from-reader`).
    #[arg(long)]
    from_reader: bool,
}

impl MemberArgs {
    /// What the member measures: multicast, rpc, map, churn or groups.
    pub(crate) fn mode(&self) -> &str {
        &self.mode
    }
}

/// The size of `--small-rate` messages.
const SMALL: usize = 64;

/// One member's results.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct MemberResult {
    index: usize,
    /// What the rate and latencies count: `delivered` messages, `calls` (RPCs made),
    /// `puts` (map updates made), `applied` (map updates applied here).
    kind: String,
    delivered_per_sec: f64,
    mb_per_sec: f64,
    latency_p50_us: u64,
    latency_p99_us: u64,
    latency_p999_us: u64,
    sent: u64,
    cpu_seconds: f64,
    peak_rss_mb: f64,
    /// The most anonymous (heap) memory seen, sampled every 20 ms (`RssAnon`: without the
    /// file pages a payload sent from a reader maps).
    #[serde(default)]
    peak_anon_mb: f64,
    /// Resident memory sampled each second from the start of sending to the end of the
    /// measured window (flat when buffers are bounded).
    #[serde(default)]
    rss_mb_each_second: Vec<f64>,
    /// With `--small-rate`: the small messages delivered here (rate and latency).
    #[serde(default)]
    small: Option<Box<MemberResult>>,
}

/// Samples resident memory once a second from `from` to `to` (microseconds since the epoch).
fn sample_memory(from: u64, to: u64) -> tokio::task::JoinHandle<Vec<f64>> {
    tokio::spawn(async move {
        let mut samples = Vec::new();
        let mut at = from;
        while at <= to {
            sleep_until_us(at).await;
            samples.push(memory_mb("VmRSS:"));
            at += 1_000_000;
        }
        samples
    })
}

fn now_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

/// CPU seconds used by this process (user + system), from /proc.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0 // utime, stime; USER_HZ is 100 on Linux
}

fn peak_rss_mb() -> f64 {
    memory_mb("VmHWM:")
}

/// A memory figure of this process from /proc (`VmHWM:` peak, `VmRSS:` now), in MB.
fn memory_mb(field: &str) -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .unwrap_or(0.0);
    kb / 1024.0
}

/// Counts deliveries whose send time falls in the measured window, with their latencies.
/// Latencies are a uniform sample (reservoir) of at most this many, in a buffer filled at
/// the start, so the meter's own memory stays flat during a run.
const SAMPLES: usize = 1 << 18;

struct Meter {
    from: u64,
    to: u64,
    size: usize,
    count: u64,
    samples: Vec<u32>,
    /// xorshift state for the reservoir.
    rng: u64,
    /// With `--small-rate`: the small messages, measured apart.
    small: Option<Box<Meter>>,
}

impl Meter {
    fn new(a: &MemberArgs) -> Self {
        let from = a.start_at + a.warmup * 1_000_000;
        let samples = vec![0; SAMPLES];
        let small = (a.small_rate > 0 && a.size != SMALL).then(|| {
            let mut m = Meter::new(&MemberArgs { small_rate: 0, size: SMALL, ..a.clone() });
            m.samples.truncate(1 << 14);
            Box::new(m)
        });
        let to = from + a.duration * 1_000_000;
        Self { from, to, size: a.size, count: 0, samples, rng: 0x9e37_79b9_7f4a_7c15, small }
    }

    fn deliver(&mut self, payload: &[u8]) {
        if let Some(small) = self.small.as_mut().filter(|_| payload.len() == SMALL) {
            return small.deliver(payload);
        }
        let Some(stamp) = payload.get(..8).map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes"))) else { return };
        if stamp < self.from || stamp >= self.to {
            return;
        }
        let latency = now_us().saturating_sub(stamp).min(u32::MAX as u64) as u32;
        let slot = if (self.count as usize) < self.samples.len() {
            self.count as usize
        } else {
            self.rng ^= self.rng << 13;
            self.rng ^= self.rng >> 7;
            self.rng ^= self.rng << 17;
            (self.rng % (self.count + 1)) as usize
        };
        if let Some(s) = self.samples.get_mut(slot) {
            *s = latency;
        }
        self.count += 1;
    }

    fn result(mut self, index: usize, sent: u64, kind: &str) -> MemberResult {
        let small = self.small.take().map(|m| Box::new(m.result(index, 0, "small")));
        self.samples.truncate(self.count.min(self.samples.len() as u64) as usize);
        self.samples.sort_unstable();
        let q = |p: f64| {
            self.samples
                .get(((self.samples.len() as f64 * p) as usize).min(self.samples.len().saturating_sub(1)))
                .copied()
                .unwrap_or(0) as u64
        };
        let secs = (self.to - self.from) as f64 / 1e6;
        MemberResult {
            index,
            kind: kind.to_string(),
            delivered_per_sec: self.count as f64 / secs,
            mb_per_sec: self.count as f64 * self.size as f64 / secs / 1e6,
            latency_p50_us: q(0.5),
            latency_p99_us: q(0.99),
            latency_p999_us: q(0.999),
            sent,
            cpu_seconds: cpu_seconds(),
            peak_rss_mb: peak_rss_mb(),
            peak_anon_mb: 0.0,
            rss_mb_each_second: Vec::new(),
            small,
        }
    }
}

/// How a sender paces itself: `rate` messages a second one by one, or batches of 64 as
/// fast as it can. Returns how many messages to make now (after waiting for their time).
struct Pace {
    interval_us: u64,
    next: u64,
}

impl Pace {
    fn new(rate: u64, start: u64) -> Self {
        Self { interval_us: 1_000_000u64.checked_div(rate).map_or(0, |i| i.max(1)), next: start }
    }

    async fn batch(&mut self) -> usize {
        if self.interval_us == 0 {
            return 64;
        }
        sleep_until_us(self.next).await;
        self.next += self.interval_us;
        1
    }
}

/// Large payloads go a few at a time (a batch is made in memory before it is sent): at
/// most `n`, and at most 8 MB unless one message is larger.
fn fit_batch(n: usize, size: usize) -> usize {
    n.min((8 << 20) / size.max(1)).max(1)
}

fn payload(size: usize) -> Vec<u8> {
    let mut p = vec![0u8; size.max(8)];
    p[..8].copy_from_slice(&now_us().to_le_bytes());
    p
}

async fn sleep_until_us(t: u64) {
    let now = now_us();
    if t > now {
        tokio::time::sleep(Duration::from_micros(t - now)).await;
    }
}

/// A member's node settings: `b{index}`, joining through member 0.
fn member_config(a: &MemberArgs) -> Config {
    let mut c = Config::new(format!("b{}", a.index), a.addrs[a.index].clone());
    if a.index > 0 {
        c.contacts.push(a.addrs[0].clone());
    }
    if let Some(t) = a.failure_timeout {
        c.set_timeouts(t / 10, t);
    }
    c.trace = a.trace.clone();
    c
}

/// Waits for the pace, then multicasts its batch of stamped payloads; returns how many the
/// runtime accepted.
async fn send_paced(rt: &Runtime, group: &GroupName, order: Order, size: usize, pace: &mut Pace) -> u64 {
    let n = fit_batch(pace.batch().await, size);
    let make = move || (0..n).map(|_| Bytes::from(payload(size))).collect::<Vec<Bytes>>();
    // Making a large payload (zeroing fresh pages) takes a while: off the thread that the
    // member's runtime (and its driver) runs on.
    let batch = if size > 1 << 20 { tokio::task::spawn_blocking(make).await.unwrap_or_default() } else { make() };
    rt.send_batch(group.clone(), order, batch).await.iter().filter(|r| r.is_ok()).count() as u64
}

/// `--from-reader`: each payload from a reader (its send time, then zeros), which the
/// runtime spools and maps; nothing of it is held here.
async fn send_from_reader(rt: &Runtime, group: &GroupName, order: Order, size: usize, pace: &mut Pace) -> u64 {
    use tokio::io::AsyncReadExt;
    let n = fit_batch(pace.batch().await, size);
    let mut sent = 0;
    for _ in 0..n {
        let stamp = std::io::Cursor::new(now_us().to_le_bytes());
        let reader = stamp.chain(tokio::io::repeat(0).take(size.saturating_sub(8) as u64));
        sent += u64::from(rt.send_reader(group.clone(), order, reader).await.is_ok());
    }
    sent
}

/// The most anonymous memory (`RssAnon`) seen until the flag is set, sampled every 20 ms.
fn peak_anon_mb() -> (tokio::task::JoinHandle<f64>, std::sync::Arc<std::sync::atomic::AtomicBool>) {
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop = done.clone();
    let task = tokio::spawn(async move {
        let mut peak: f64 = 0.0;
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            peak = peak.max(memory_mb("RssAnon:"));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        peak
    });
    (task, done)
}

/// The `synchrony bench-member` command for member `i` with the run's common settings
/// (each mode adds its own).
fn member_command(exe: &std::path::Path, args: &BenchArgs, i: usize, addrs: &[String], mode: &str) -> Command {
    let mut cmd = Command::new(exe);
    cmd.args(["bench-member", "--mode", mode, "--index", &i.to_string(), "--addrs", &addrs.join(",")]);
    cmd.args(["--senders", &args.senders.to_string(), "--size", &args.size.to_string(), "--order", &args.order]);
    cmd.args(["--rate", &args.rate.to_string(), "--clients", &args.clients().to_string()]);
    cmd.args(["--failure-timeout", &format!("{}ms", args.failure_timeout.as_millis())]);
    if args.idle_groups > 0 {
        cmd.args(["--groups", &args.idle_groups.to_string()]);
    }
    if args.small_rate > 0 {
        cmd.args(["--small-rate", &args.small_rate.to_string()]);
    }
    if args.from_reader {
        cmd.arg("--from-reader");
    }
    cmd
}

/// One synchrony member: joins, waits for everyone, sends if it is a sender, measures.
async fn sync_member(a: MemberArgs) -> Result<MemberResult> {
    let c = member_config(&a);
    let order: Order = a.order.parse().map_err(|e| anyhow::anyhow!("{e}"))?;
    let (rt, _node) = Runtime::start(c).await.context("starting")?;
    let _idle = join_idle(&rt, a.groups).await?;
    let group = GroupName::new("bench");
    let mut events = rt.join(group.clone()).await?;
    let mut meter = Meter::new(&a);
    let memory = sample_memory(a.start_at, meter.to);
    let end = meter.to + 2_000_000;
    let small = (a.small_rate > 0 && a.index + 1 == a.addrs.len()).then(|| {
        let (rt, group, stop) = (rt.clone(), group.clone(), meter.to);
        let mut pace = Pace::new(a.small_rate, a.start_at);
        tokio::spawn(async move {
            sleep_until_us(a.start_at).await;
            while now_us() < stop {
                send_paced(&rt, &group, order, SMALL, &mut pace).await;
            }
        })
    });
    let anon = peak_anon_mb();
    let sender = (a.index < a.senders).then(|| {
        let (rt, group, size, stop, from_reader) = (rt.clone(), group.clone(), a.size, meter.to, a.from_reader);
        let mut pace = Pace::new(a.rate, a.start_at);
        tokio::spawn(async move {
            sleep_until_us(a.start_at).await;
            let mut sent = 0u64;
            while now_us() < stop {
                sent += if from_reader {
                    send_from_reader(&rt, &group, order, size, &mut pace).await
                } else {
                    send_paced(&rt, &group, order, size, &mut pace).await
                };
            }
            sent
        })
    });
    loop {
        let wait = end.saturating_sub(now_us());
        if wait == 0 {
            break;
        }
        match tokio::time::timeout(Duration::from_micros(wait), events.recv()).await {
            Ok(Some(GroupEvent::Message(m))) => meter.deliver(&m.payload),
            Ok(Some(GroupEvent::StateRequest { view, .. })) => {
                if rt.provide_state(group.clone(), view, Bytes::new()).await.is_err() {
                    break;
                }
            }
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }
    let sent = match sender {
        Some(h) => h.await.unwrap_or(0),
        None => 0,
    };
    if let Some(h) = small {
        let _ = h.await;
    }
    if a.trace.is_some() {
        let _ = rt.close_trace().await;
    }
    let mut r = meter.result(a.index, sent, "delivered");
    r.rss_mb_each_second = memory.await.unwrap_or_default();
    anon.1.store(true, std::sync::atomic::Ordering::Relaxed);
    r.peak_anon_mb = anon.0.await.unwrap_or(0.0);
    Ok(r)
}

/// Joins `n` groups to leave idle beside the measured one, and serves their (empty)
/// states; returns their tasks.
async fn join_idle(rt: &Runtime, n: usize) -> Result<Vec<tokio::task::JoinHandle<()>>> {
    let names: Vec<GroupName> = (0..n).map(|k| GroupName::new(format!("idle{k}"))).collect();
    let mut tasks = Vec::new();
    for (g, events) in names.iter().zip(rt.join_many(names.iter().cloned()).await) {
        let mut events = events.with_context(|| format!("joining {g}"))?;
        let (rt, g) = (rt.clone(), g.clone());
        tasks.push(tokio::spawn(async move {
            while let Some(ev) = events.recv().await {
                if let GroupEvent::StateRequest { view, .. } = ev {
                    let _ = rt.provide_state(g.clone(), view, Bytes::new()).await;
                }
            }
        }));
    }
    Ok(tasks)
}

/// One raw member: a TCP listener that counts; a sender also writes to every other member.
async fn raw_member(a: MemberArgs) -> Result<MemberResult> {
    let listener = tokio::net::TcpListener::bind(&a.addrs[a.index]).await?;
    let meter = std::sync::Arc::new(std::sync::Mutex::new(Meter::new(&a)));
    let memory = sample_memory(a.start_at, meter.lock().expect("lock").to);
    let (size, end) = (a.size.max(8), meter.lock().expect("lock").to + 2_000_000);
    {
        let meter = meter.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let meter = meter.clone();
                tokio::spawn(async move {
                    // Room for two messages at least: a message is counted once it is whole.
                    let mut buf = vec![0u8; (256 * 1024).max(2 * (4 + size))];
                    let mut have = 0usize;
                    loop {
                        let Ok(n) = s.read(&mut buf[have..]).await else { return };
                        if n == 0 {
                            return;
                        }
                        have += n;
                        let mut at = 0;
                        let mut m = meter.lock().expect("lock");
                        while have - at >= 4 + size {
                            m.deliver(&buf[at + 4..at + 4 + size]);
                            at += 4 + size;
                        }
                        drop(m);
                        buf.copy_within(at..have, 0);
                        have -= at;
                    }
                });
            }
        });
    }
    let mut sent = 0u64;
    if a.index < a.senders {
        // Connect to every other member, then write the same batches to each (no guarantees).
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut outs = Vec::new();
        for (k, addr) in a.addrs.iter().enumerate().filter(|(k, _)| *k != a.index) {
            let s = tokio::net::TcpStream::connect(addr).await.with_context(|| format!("raw member {k}"))?;
            s.set_nodelay(true)?;
            outs.push(BufWriter::with_capacity(256 * 1024, s));
        }
        sleep_until_us(a.start_at).await;
        let stop = meter.lock().expect("lock").to;
        let mut pace = Pace::new(a.rate, a.start_at);
        while now_us() < stop {
            let n = fit_batch(pace.batch().await, size);
            let mut batch = Vec::with_capacity(n * (4 + size));
            for _ in 0..n {
                batch.extend_from_slice(&(size as u32).to_le_bytes());
                batch.extend_from_slice(&payload(size));
            }
            for o in &mut outs {
                o.write_all(&batch).await?;
                o.flush().await?;
            }
            // The sender delivers its own message to itself, as a group member does.
            let mut m = meter.lock().expect("lock");
            for k in 0..n {
                m.deliver(&batch[k * (4 + size) + 4..(k + 1) * (4 + size)]);
            }
            sent += n as u64;
        }
    }
    sleep_until_us(end).await;
    let m = std::mem::replace(&mut *meter.lock().expect("lock"), Meter::new(&a));
    let mut r = m.result(a.index, sent, "delivered");
    r.rss_mb_each_second = memory.await.unwrap_or_default();
    Ok(r)
}

/// `synchrony bench-member`: runs one member and prints its result as JSON.
pub(crate) async fn run_member(a: MemberArgs) -> Result<()> {
    if a.mode == "churn" {
        return churn::churn_member(a).await;
    }
    if a.mode == "groups" {
        return groups::groups_member(a).await;
    }
    let r = match (a.raw, a.mode.as_str()) {
        (true, _) => raw_member(a).await?,
        (false, "rpc") => calls::rpc_member(a).await?,
        (false, "map") => calls::map_member(a).await?,
        _ => sync_member(a).await?,
    };
    println!("{}", serde_json::to_string(&r)?);
    Ok(())
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Runs one side (raw or synchrony) and collects every member's result.
fn run_side(args: &BenchArgs, raw: bool) -> Result<Vec<MemberResult>> {
    let exe = std::env::current_exe()?;
    let addrs: Vec<String> =
        (0..args.members).map(|_| free_port().map(|p| format!("127.0.0.1:{p}"))).collect::<Result<_>>()?;
    // (Idle groups are joined first: about 0.1 ms each per member.)
    let start_at = now_us() + 2_000_000 + args.members as u64 * (300_000 + args.idle_groups as u64 * 100);
    let traces =
        (args.check && !raw).then(|| std::env::temp_dir().join(format!("synchrony-bench-{}", std::process::id())));
    if let Some(d) = &traces {
        std::fs::create_dir_all(d)?;
    }
    let mut children = Vec::new();
    for i in 0..args.members {
        let mut cmd = member_command(&exe, args, i, &addrs, args.mode());
        if raw {
            cmd.arg("--raw");
        }
        if let Some(d) = &traces {
            cmd.arg("--trace").arg(d.join(format!("b{i}.jsonl")));
        }
        cmd.args(["--start-at", &start_at.to_string(), "--warmup", "1", "--duration", &args.duration.to_string()]);
        cmd.stdout(Stdio::piped()).stderr(Stdio::null());
        children.push(cmd.spawn().context("starting a bench member")?);
        if i == 0 && !raw {
            std::thread::sleep(Duration::from_millis(300)); // the first founds the cluster
        }
    }
    let mut results = Vec::new();
    for c in children {
        let out = c.wait_with_output()?;
        let line = String::from_utf8_lossy(&out.stdout).lines().last().unwrap_or("").to_string();
        match serde_json::from_str::<MemberResult>(&line) {
            Ok(r) => results.push(r),
            Err(_) => bail!("a bench member failed (exit {:?})", out.status.code()),
        }
    }
    results.sort_by_key(|r| r.index);
    if let Some(d) = traces {
        let verdict = churn::check_traces(&d, &[])?;
        if !verdict.starts_with("every guarantee holds") {
            bail!("{verdict} (traces kept in {})", d.display());
        }
        eprintln!("synchrony bench --check: {verdict}");
        std::fs::remove_dir_all(&d)?;
    }
    Ok(results)
}

/// `synchrony bench`.
pub(crate) fn run_bench(args: BenchArgs) -> Result<()> {
    if args.members < 2 || args.senders == 0 || args.senders > args.members || args.size < 8 {
        bail!("need at least 2 members, 1 to MEMBERS senders, and messages of at least 8 bytes");
    }
    if args.small_rate > 0 && (args.senders >= args.members || args.size == SMALL) {
        bail!(
            "--small-rate needs a member that does not send (fewer senders than members) and --size other than {SMALL}"
        );
    }
    let _: Order = args.order.parse().map_err(|e| anyhow::anyhow!("{e}"))?;
    if args.churn {
        return churn::run_churn(&args);
    }
    if args.groups_scale.is_some() {
        return groups::run_groups_scale(&args);
    }
    let sync = run_side(&args, false)?;
    let raw = if args.no_baseline || args.rpc || args.map { Vec::new() } else { run_side(&args, true)? };
    // Calls made (RPCs or puts), summed over the callers.
    let calls: f64 =
        sync.iter().filter(|r| matches!(r.kind.as_str(), "calls" | "puts")).map(|r| r.delivered_per_sec).sum();
    let mean = |rs: &[MemberResult], f: fn(&MemberResult) -> f64| {
        if rs.is_empty() {
            0.0
        } else {
            rs.iter().map(f).sum::<f64>() / rs.len() as f64
        }
    };
    let (s_rate, r_rate) = (mean(&sync, |r| r.delivered_per_sec), mean(&raw, |r| r.delivered_per_sec));
    let ratio = if r_rate > 0.0 { s_rate / r_rate } else { 0.0 };
    if args.json {
        let v = serde_json::json!({
            "members": args.members, "size": args.size, "order": args.order, "senders": args.senders,
            "duration_s": args.duration, "rate": args.rate, "mode": args.mode(), "clients": args.clients(),
            "idle_groups": args.idle_groups,
            "calls_per_sec": calls, "synchrony": sync, "raw": raw,
            "delivered_per_sec_mean": { "synchrony": s_rate, "raw": r_rate, "ratio": ratio },
        });
        println!("{v}");
        return Ok(());
    }
    println!(
        "synchrony bench{}: {} members, {} sender(s), {} B messages, order {}, {} s measured, {}{}",
        match args.mode() {
            "multicast" => String::new(),
            m => format!(" --{m} ({} caller(s) per sender)", args.clients()),
        },
        args.members,
        args.senders,
        args.size,
        args.order,
        args.duration,
        if args.rate == 0 { "full speed".to_string() } else { format!("{} msgs/s per sender", args.rate) },
        if args.idle_groups > 0 { format!(", {} idle groups beside", args.idle_groups) } else { String::new() }
    );
    println!(
        "{:<10} {:>6} {:>9} {:>12} {:>9} {:>9} {:>9} {:>10} {:>8} {:>8}",
        "side", "member", "counts", "per s", "MB/s", "p50 us", "p99 us", "p99.9 us", "cpu s", "rss MB"
    );
    for (side, rs) in [("synchrony", &sync), ("raw tcp", &raw)] {
        for r in rs.iter() {
            println!(
                "{side:<10} {:>6} {:>9} {:>12.0} {:>9.1} {:>9} {:>9} {:>10} {:>8.2} {:>8.1}",
                r.index,
                r.kind,
                r.delivered_per_sec,
                r.mb_per_sec,
                r.latency_p50_us,
                r.latency_p99_us,
                r.latency_p999_us,
                r.cpu_seconds,
                r.peak_rss_mb
            );
        }
    }
    if args.from_reader {
        for r in &sync {
            println!("member {}: peak anonymous (heap) memory {:.1} MB", r.index, r.peak_anon_mb);
        }
    }
    for r in sync.iter().filter_map(|r| r.small.as_deref()) {
        println!(
            "{:<10} {:>6} {:>9} {:>12.0} {:>9.1} {:>9} {:>9} {:>10}",
            "  small",
            r.index,
            "delivered",
            r.delivered_per_sec,
            r.mb_per_sec,
            r.latency_p50_us,
            r.latency_p99_us,
            r.latency_p999_us
        );
    }
    for (side, rs) in [("synchrony", &sync), ("raw tcp", &raw)] {
        let flat: Vec<String> = rs
            .iter()
            .filter_map(|r| {
                let (first, last) = (r.rss_mb_each_second.first()?, r.rss_mb_each_second.last()?);
                let max = r.rss_mb_each_second.iter().copied().fold(0.0, f64::max);
                Some(format!("{} {first:.1} -> {last:.1} (max {max:.1})", r.index))
            })
            .collect();
        if !flat.is_empty() {
            println!("{side} resident memory MB, first to last second: {}", flat.join(", "));
        }
    }
    if calls > 0.0 {
        println!("{} per second, all callers: {calls:.0}", if args.rpc { "calls" } else { "puts" });
    }
    if !raw.is_empty() {
        println!("delivered msgs/s per member: synchrony {s_rate:.0}, raw {r_rate:.0}: ratio {ratio:.3}");
    }
    Ok(())
}
