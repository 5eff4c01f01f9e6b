//! `synchrony bench --churn`: membership speed under load. N members, the senders sending
//! (full speed or `--rate`); each round SIGKILLs a member that does not send and times how
//! long until every survivor installed a view without it, then starts a new member whose
//! state is `--state-mb` and times its join, from the request to its first delivery. At the
//! end every sender must still be sending (flow control rebuilt after every view change);
//! with `--check` every trace goes through the checker.
//!
//! The parent drives the members through their standard input (`state BYTES`, `stop`) and
//! reads what they see as JSON lines on their standard output.

use super::{cpu_seconds, now_us, peak_rss_mb, BenchArgs, MemberArgs, Pace};
use anyhow::{bail, Context, Result};
use bytes::Bytes;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;
use synchrony_check::{check, Options};
use synchrony_engine::{GroupName, Order};
use synchrony_runtime::{GroupEvent, Runtime};
use synchrony_trace::parse;
use tokio::io::AsyncBufReadExt;

const GROUP: &str = "bench";

fn say(v: Value) {
    println!("{v}");
}

/// The state a member gives a joiner: when tracing, the ids it delivered (the state the
/// checker recomputes), padded to `bytes` with empty lines, which the digest ignores.
fn make_state(ids: Option<&BTreeSet<String>>, bytes: usize) -> Bytes {
    let mut s = Vec::with_capacity(bytes);
    for id in ids.into_iter().flatten() {
        s.extend_from_slice(id.as_bytes());
        s.push(b'\n');
    }
    s.resize(s.len().max(bytes), b'\n');
    Bytes::from(s)
}

/// `--stream`: a provider writes its state (the ids, then newlines up to `bytes`) in
/// blocks of one shared buffer, as fast as its joiners fetch it.
async fn write_state(rt: Runtime, group: GroupName, view: synchrony_engine::ViewId, ids: Bytes, bytes: usize) {
    const BLOCK: usize = 1 << 20;
    let block = Bytes::from(vec![b'\n'; BLOCK]);
    let mut left = bytes.saturating_sub(ids.len());
    if rt.write_state(group.clone(), view, ids, false).await.is_err() {
        return;
    }
    while left > 0 {
        let n = left.min(BLOCK);
        if rt.write_state(group.clone(), view, block.slice(..n), false).await.is_err() {
            return; // nobody needs it any more, or the node stopped
        }
        left -= n;
    }
    let _ = rt.write_state(group, view, Bytes::new(), true).await;
}

/// `--stream`: a joiner reads its state as it comes, keeping only the ids in it (when
/// tracing) and nothing else.
async fn read_state(mut stream: synchrony_runtime::StateStream, keep_ids: bool) -> BTreeSet<String> {
    let mut ids = synchrony_trace::LineSet::default();
    while let Some(part) = stream.next().await {
        match part {
            synchrony_runtime::StatePart::Data(bytes) if keep_ids => ids.write(&bytes),
            synchrony_runtime::StatePart::Data(_) => {}
            synchrony_runtime::StatePart::Restart => ids = Default::default(),
        }
    }
    ids.into_lines()
}

/// A joiner shows its state transfer's progress (what `synchrony status` shows too) until
/// its state came; `expected` stands for the total while a streamed state has none.
async fn report_progress(rt: Runtime, waiting: Arc<AtomicBool>, expected: u64) {
    while waiting.load(Ordering::Relaxed) {
        let st = rt.status().await.unwrap_or_default();
        if let Some((got, total)) = st.groups.iter().find(|g| g.name == GROUP).and_then(|g| g.state_transfer) {
            let total = if total == 0 { expected } else { total };
            say(json!({"event": "progress", "received": got, "total": total}));
        }
        // (Often: `--kill-provider` strikes in the middle of a transfer of a second.)
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A sender sends until told to stop, noting when a send last went through; returns how
/// many went.
async fn send_until(
    rt: Runtime,
    group: GroupName,
    order: Order,
    size: usize,
    mut pace: Pace,
    stop: Arc<AtomicBool>,
    last_ok: Arc<AtomicU64>,
) -> u64 {
    let mut sent = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let ok = super::send_paced(&rt, &group, order, size, &mut pace).await;
        if ok > 0 {
            sent += ok;
            last_ok.store(now_us(), Ordering::Relaxed);
        }
    }
    sent
}

/// The parent's commands, a line each from standard input.
fn read_commands() -> tokio::sync::mpsc::Receiver<String> {
    let (tx, rx) = tokio::sync::mpsc::channel::<String>(8);
    tokio::spawn(async move {
        let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
        while let Ok(Some(l)) = lines.next_line().await {
            if tx.send(l).await.is_err() {
                break;
            }
        }
    });
    rx
}

/// One member of `--churn` (see the module docs).
pub(super) async fn churn_member(a: MemberArgs) -> Result<()> {
    let start_us = now_us();
    let c = super::member_config(&a);
    let order: Order = a.order.parse().map_err(|e| anyhow::anyhow!("{e}"))?;
    let (rt, _node) = Runtime::start(c).await.context("starting")?;
    let group = GroupName::new(GROUP);
    let (mut events, mut reader) = if a.joiner && a.stream {
        let (events, stream) = rt.join_streaming(group.clone(), Default::default()).await?;
        (events, Some(tokio::spawn(read_state(stream, a.trace.is_some()))))
    } else {
        (rt.join(group.clone()).await?, None)
    };
    let joined_us = now_us();
    let waiting = Arc::new(AtomicBool::new(a.joiner));
    if a.joiner {
        tokio::spawn(report_progress(rt.clone(), waiting.clone(), a.state_bytes as u64));
    }
    let mut cmds = read_commands();
    let stop = Arc::new(AtomicBool::new(false));
    let last_ok = Arc::new(AtomicU64::new(now_us()));
    let sender = (a.index < a.senders).then(|| {
        let pace = Pace::new(a.rate, now_us());
        tokio::spawn(send_until(rt.clone(), group.clone(), order, a.size, pace, stop.clone(), last_ok.clone()))
    });
    let mut ids = a.trace.is_some().then(BTreeSet::new);
    let mut state_bytes = a.state_bytes;
    // (Streamed, the state is made as it is written.)
    let mut padding = if a.stream { Bytes::new() } else { make_state(None, state_bytes) };
    let (mut delivered, mut state_us, mut reported) = (0u64, None, false);
    let mut stop_at = None;
    let mut ended = "stopped".to_string();
    loop {
        // After `stop`, two more seconds for what was sent to arrive everywhere.
        let wait =
            stop_at.map_or(Duration::from_secs(3600), |t: u64| Duration::from_micros(t.saturating_sub(now_us())));
        tokio::select! {
            ev = events.recv() => match ev {
                Some(GroupEvent::View(v)) => say(json!({
                    "event": "view", "at_us": now_us(),
                    "members": v.members.iter().map(|m| m.to_string()).collect::<Vec<_>>(),
                })),
                Some(GroupEvent::Message(m)) => {
                    delivered += 1;
                    if let Some(ids) = &mut ids {
                        ids.insert(m.id.to_string());
                    }
                    if let (Some(s), false, true) = (state_us, reported, a.joiner) {
                        reported = true;
                        say(json!({"event": "joined", "start_us": start_us, "joined_us": joined_us,
                            "state_us": s, "first_us": now_us(), "state_bytes": state_bytes}));
                    }
                }
                Some(GroupEvent::StateRequest { view, .. }) if a.stream => {
                    if rt.begin_state(group.clone(), view).await.is_err() {
                        break;
                    }
                    let ids = make_state(ids.as_ref(), 0);
                    tokio::spawn(write_state(rt.clone(), group.clone(), view, ids, state_bytes));
                }
                Some(GroupEvent::StateRequest { view, .. }) => {
                    let state = match &ids {
                        // (Off the runtime's threads: zeroing a large state's pages would hold
                        // up the driver that shares them.)
                        Some(ids) => {
                            let ids = ids.clone();
                            tokio::task::spawn_blocking(move || make_state(Some(&ids), state_bytes)).await?
                        }
                        None => padding.clone(),
                    };
                    if rt.provide_state(group.clone(), view, state).await.is_err() {
                        break;
                    }
                }
                Some(GroupEvent::StateStreamed { len, .. }) => {
                    state_us = Some(now_us());
                    waiting.store(false, Ordering::Relaxed);
                    state_bytes = len as usize;
                    if let Some(read) = reader.take() {
                        let got = read.await.unwrap_or_default();
                        ids.iter_mut().for_each(|ids| ids.extend(got.iter().cloned()));
                    }
                }
                Some(GroupEvent::State { state, .. }) => {
                    state_us = Some(now_us());
                    waiting.store(false, Ordering::Relaxed);
                    state_bytes = state.len();
                    if let Some(ids) = &mut ids {
                        let text = String::from_utf8_lossy(&state);
                        ids.extend(text.split('\n').filter(|l| !l.is_empty()).map(str::to_string));
                    }
                }
                Some(GroupEvent::Partitioned(reason)) => {
                    ended = format!("partitioned: {reason:?}");
                    break;
                }
                Some(GroupEvent::Left) | None => {
                    ended = "left".to_string();
                    break;
                }
                Some(_) => {}
            },
            cmd = cmds.recv() => match cmd.as_deref().map(str::split_whitespace).map(|mut w| (w.next(), w.next())) {
                Some((Some("state"), Some(n))) => {
                    state_bytes = n.parse().unwrap_or(state_bytes);
                    // Made now, before the joiner comes: not while heartbeats wait.
                    if !a.stream {
                        padding = tokio::task::spawn_blocking(move || make_state(None, state_bytes)).await?;
                    }
                }
                Some((Some("stop"), _)) | None if stop_at.is_none() => {
                    stop.store(true, Ordering::Relaxed);
                    stop_at = Some(now_us() + 2_000_000);
                }
                _ => {}
            },
            _ = tokio::time::sleep(wait), if stop_at.is_some() => break,
        }
    }
    let stopped_at = stop_at.map_or(now_us(), |t| t - 2_000_000);
    let sent = match sender {
        Some(h) => h.await.unwrap_or(0),
        None => 0,
    };
    let resumed = rt.status().await.map_or(0, |st| st.engine.state_resumed);
    say(json!({"event": "result", "index": a.index, "sent": sent, "delivered": delivered, "ended": ended,
        "state_resumed": resumed,
        "last_send_age_us": stopped_at.saturating_sub(last_ok.load(Ordering::Relaxed)),
        "cpu_seconds": cpu_seconds(), "peak_rss_mb": peak_rss_mb()}));
    // Every member closes its trace when told, and leaves only once all have: a member that
    // left first would make a last view the others' traces show and its own does not.
    while let Some(cmd) = cmds.recv().await {
        if cmd.trim() == "close" {
            break;
        }
    }
    let _ = rt.close_trace().await;
    say(json!({"event": "closed", "index": a.index}));
    while cmds.recv().await.is_some() {}
    Ok(())
}

/// The member processes of a churn run, killed when it ends however it ends.
struct Members {
    exe: PathBuf,
    args: BenchArgs,
    addrs: Vec<String>,
    traces: Option<PathBuf>,
    children: BTreeMap<usize, (Child, ChildStdin)>,
    lines: mpsc::Sender<(usize, Value)>,
}

impl Drop for Members {
    fn drop(&mut self) {
        for (c, _) in self.children.values_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Members {
    fn trace(&self, i: usize) -> Option<PathBuf> {
        self.traces.as_ref().map(|d| d.join(format!("b{i}.jsonl")))
    }

    fn start(&mut self, i: usize, joiner: bool, state_bytes: usize) -> Result<()> {
        let mut cmd = super::member_command(&self.exe, &self.args, i, &self.addrs, "churn");
        cmd.args(["--start-at", "0", "--warmup", "0", "--duration", "0", "--state-bytes", &state_bytes.to_string()]);
        if joiner {
            cmd.arg("--joiner");
        }
        if self.args.stream {
            cmd.arg("--stream");
        }
        if let Some(t) = self.trace(i) {
            cmd.arg("--trace").arg(t);
        }
        // SYNCHRONY_BENCH_LOG_DIR keeps each member's log (RUST_LOG sets what it says).
        let log = match std::env::var_os("SYNCHRONY_BENCH_LOG_DIR") {
            Some(dir) => Stdio::from(std::fs::File::create(std::path::Path::new(&dir).join(format!("b{i}.log")))?),
            None => Stdio::null(),
        };
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(log);
        let mut child = cmd.spawn().context("starting a bench member")?;
        let (stdin, stdout) = (child.stdin.take().context("stdin")?, child.stdout.take().context("stdout")?);
        let lines = self.lines.clone();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for l in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str(&l) {
                    if lines.send((i, v)).is_err() {
                        break;
                    }
                }
            }
        });
        self.children.insert(i, (child, stdin));
        Ok(())
    }

    fn tell(&mut self, what: &str) {
        for (_, stdin) in self.children.values_mut() {
            let _ = writeln!(stdin, "{what}");
        }
    }
}

/// `--kill-provider`: once `joiner` reports half its state, SIGKILLs its provider (the
/// oldest member); returns its name, when, and the part of the state the joiner had then.
fn kill_provider_halfway(
    heard: &mut Heard,
    m: &mut Members,
    alive: &mut BTreeSet<usize>,
    joiner: usize,
) -> Result<(String, u64, f64)> {
    let halfway = |v: &Value| {
        let (got, total) = (v["received"].as_u64().unwrap_or(0), v["total"].as_u64().unwrap_or(0));
        v["event"] == "progress" && total > 0 && got * 2 >= total && got < total
    };
    heard.until(&format!("b{joiner}'s state transfer half done"), Duration::from_secs(120), |h| {
        h.iter().any(|(k, v)| *k == joiner && (halfway(v) || v["event"] == "joined"))
    })?;
    if heard.all.iter().any(|(k, v)| *k == joiner && v["event"] == "joined") {
        bail!("b{joiner}'s state transfer ended before its middle was seen: no provider killed (a larger --state-mb)");
    }
    let provider = *alive.iter().next().expect("members");
    let got = heard
        .all
        .iter()
        .rev()
        .find(|(k, v)| *k == joiner && v["event"] == "progress")
        .map(|(_, v)| v["received"].as_u64().unwrap_or(0) as f64 / v["total"].as_u64().unwrap_or(1).max(1) as f64);
    let (mut child, _stdin) = m.children.remove(&provider).expect("alive");
    child.kill()?;
    let at = now_us();
    alive.remove(&provider);
    let _ = child.wait();
    Ok((format!("b{provider}"), at, got.unwrap_or(0.0)))
}

/// What the members said, and a way to wait until they have said something.
struct Heard {
    rx: mpsc::Receiver<(usize, Value)>,
    all: Vec<(usize, Value)>,
    bar: Option<indicatif::ProgressBar>,
}

impl Heard {
    /// Waits up to `limit` until `done` holds of everything heard so far.
    fn until(&mut self, what: &str, limit: Duration, done: impl Fn(&[(usize, Value)]) -> bool) -> Result<()> {
        let deadline = std::time::Instant::now() + limit;
        while !done(&self.all) {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.rx.recv_timeout(left) {
                Ok((i, v)) => {
                    if let (Some(bar), "progress") = (&self.bar, v["event"].as_str().unwrap_or("")) {
                        bar.set_length(v["total"].as_u64().unwrap_or(0));
                        bar.set_position(v["received"].as_u64().unwrap_or(0));
                    }
                    self.all.push((i, v));
                }
                Err(_) => {
                    // What the members said goes where it can be read after the failure.
                    let path = std::env::temp_dir().join(format!("synchrony-churn-{}.jsonl", std::process::id()));
                    let text: String =
                        self.all.iter().map(|(i, v)| format!("{{\"member\":{i},\"line\":{v}}}\n")).collect();
                    let _ = std::fs::write(&path, text);
                    bail!("timed out after {limit:?} waiting for {what} (what the members said: {})", path.display())
                }
            }
        }
        Ok(())
    }
}

/// The members of a `view` line, by name (without incarnations).
fn view_names(v: &Value) -> BTreeSet<String> {
    v["members"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m.as_str()?.split('#').next().map(str::to_string))
        .collect()
}

/// Whether member `i`'s last view (in `heard`) is `want` exactly, by name.
fn last_view_is(heard: &[(usize, Value)], i: usize, want: &BTreeSet<String>) -> bool {
    let last = heard.iter().rev().find(|(k, v)| *k == i && v["event"] == "view");
    last.is_some_and(|(_, v)| view_names(v) == *want)
}

fn names(alive: &BTreeSet<usize>) -> BTreeSet<String> {
    alive.iter().map(|i| format!("b{i}")).collect()
}

/// One kill-and-join round's figures.
#[derive(serde::Serialize)]
struct Round {
    killed: String,
    #[serde(skip)]
    killed_at_us: u64,
    /// SIGKILL to the new view at each survivor (ms), and the slowest.
    failure_to_view_ms: BTreeMap<String, f64>,
    failure_to_view_max_ms: f64,
    joiner: String,
    state_bytes: u64,
    /// The joiner's start (its request) to its first delivery, through the state transfer.
    join_to_first_delivery_ms: f64,
    /// The joiner's group join to its state loaded.
    state_transfer_ms: f64,
    /// With `--kill-provider`: the provider SIGKILLed in the middle of the transfer, and the
    /// part of the state the joiner had then.
    provider_killed: Option<String>,
    provider_killed_at_fraction: Option<f64>,
}

/// `synchrony bench --churn`.
pub(super) fn run_churn(args: &BenchArgs) -> Result<()> {
    if args.members < 3 || args.senders >= args.members {
        bail!("--churn needs at least 3 members and a member that does not send");
    }
    let rounds = args.rounds.max(1);
    let sizes: Vec<u64> = args.state_mb.iter().map(|mb| (mb * 1e6) as u64).collect();
    let (tx, rx) = mpsc::channel();
    let traces = args.check.then(|| std::env::temp_dir().join(format!("synchrony-churn-{}", std::process::id())));
    if let Some(d) = &traces {
        std::fs::create_dir_all(d)?;
    }
    let addrs = (0..args.members + rounds)
        .map(|_| super::free_port().map(|p| format!("127.0.0.1:{p}")))
        .collect::<Result<Vec<_>>>()?;
    let mut m = Members {
        exe: std::env::current_exe()?,
        args: args.clone(),
        addrs,
        traces: traces.clone(),
        children: BTreeMap::new(),
        lines: tx,
    };
    let mut heard = Heard { rx, all: Vec::new(), bar: None };
    let mut alive: BTreeSet<usize> = BTreeSet::new();
    for i in 0..args.members {
        m.start(i, false, 0)?;
        alive.insert(i);
        if i == 0 {
            std::thread::sleep(Duration::from_millis(300)); // the first founds the cluster
        }
    }
    let want = names(&alive);
    let everyone = |alive: &BTreeSet<usize>, want: BTreeSet<String>| {
        let alive = alive.clone();
        move |h: &[(usize, Value)]| alive.iter().all(|i| last_view_is(h, *i, &want))
    };
    heard.until("the first full view", Duration::from_secs(30), everyone(&alive, want))?;
    std::thread::sleep(Duration::from_secs(1)); // traffic flows
    let mut results = Vec::new();
    // With --kill-provider: each provider killed, when, and how much of the state the joiner
    // had then.
    let mut provider_kills: Vec<(String, u64, f64)> = Vec::new();
    for r in 0..rounds {
        let victim = *alive.iter().rev().find(|i| **i >= args.senders).expect("a member that does not send");
        let killed_at = now_us();
        let (mut child, _stdin) = m.children.remove(&victim).expect("alive");
        if args.freeze {
            crate::demo::signal(&child, "STOP")?;
        } else {
            child.kill()?; // SIGKILL
        }
        alive.remove(&victim);
        let survivors = alive.clone();
        let want = names(&alive);
        heard.until(&format!("the view without b{victim}"), Duration::from_secs(60), everyone(&alive, want.clone()))?;
        let _ = child.kill();
        let _ = child.wait();
        let mut failure_to_view_ms = BTreeMap::new();
        for i in &survivors {
            // The first view at i without the victim, after the kill.
            let at = heard
                .all
                .iter()
                .filter(|(k, v)| *k == *i && v["event"] == "view" && v["at_us"].as_u64().unwrap_or(0) >= killed_at)
                .find(|(_, v)| !view_names(v).contains(&format!("b{victim}")))
                .and_then(|(_, v)| v["at_us"].as_u64())
                .unwrap_or(killed_at);
            failure_to_view_ms.insert(format!("b{i}"), (at - killed_at) as f64 / 1e3);
        }
        let size = sizes[r % sizes.len().max(1)];
        m.tell(&format!("state {size}"));
        let joiner = args.members + r;
        if std::io::stderr().is_terminal() {
            let bar = indicatif::ProgressBar::new(size);
            bar.set_style(
                indicatif::ProgressStyle::with_template("b{msg} state {bytes}/{total_bytes} {wide_bar}")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            bar.set_message(joiner.to_string());
            heard.bar = Some(bar);
        }
        // (Streamed, the joiner learns the size only at the end: it is told what to expect.)
        m.start(joiner, true, if args.stream { size as usize } else { 0 })?;
        alive.insert(joiner);
        let this_kill = if args.kill_provider {
            Some(kill_provider_halfway(&mut heard, &mut m, &mut alive, joiner)?)
        } else {
            None
        };
        heard.until(&format!("b{joiner}'s first delivery"), Duration::from_secs(120), |h| {
            h.iter().any(|(k, v)| *k == joiner && v["event"] == "joined")
        })?;
        if let Some(bar) = heard.bar.take() {
            bar.finish_and_clear();
        }
        heard.until("the view with the joiner", Duration::from_secs(60), everyone(&alive, names(&alive)))?;
        let j = &heard.all.iter().find(|(k, v)| *k == joiner && v["event"] == "joined").expect("heard").1;
        let t = |f: &str| j[f].as_u64().unwrap_or(0);
        let slowest = failure_to_view_ms.values().copied().fold(0.0, f64::max);
        results.push(Round {
            killed: format!("b{victim}"),
            killed_at_us: killed_at,
            failure_to_view_ms,
            failure_to_view_max_ms: slowest,
            joiner: format!("b{joiner}"),
            state_bytes: t("state_bytes"),
            join_to_first_delivery_ms: t("first_us").saturating_sub(t("start_us")) as f64 / 1e3,
            state_transfer_ms: t("state_us").saturating_sub(t("joined_us")) as f64 / 1e3,
            provider_killed: this_kill.as_ref().map(|(n, _, _)| n.clone()),
            provider_killed_at_fraction: this_kill.as_ref().map(|(_, _, f)| *f),
        });
        provider_kills.extend(this_kill);
        std::thread::sleep(Duration::from_secs(1)); // traffic flows again before the next kill
    }
    m.tell("stop");
    heard.until("every member's result", Duration::from_secs(60), |h| {
        alive.iter().all(|i| h.iter().any(|(k, v)| k == i && v["event"] == "result"))
    })?;
    m.tell("close");
    heard.until("every member's closed trace", Duration::from_secs(60), |h| {
        alive.iter().all(|i| h.iter().any(|(k, v)| k == i && v["event"] == "closed"))
    })?;
    let finals: Vec<Value> = heard.all.iter().filter(|(_, v)| v["event"] == "result").map(|(_, v)| v.clone()).collect();
    let blocked: Vec<u64> = finals
        .iter()
        .filter(|v| v["index"].as_u64().is_some_and(|i| (i as usize) < args.senders))
        .filter(|v| v["last_send_age_us"].as_u64().unwrap_or(u64::MAX) > 1_000_000)
        .filter_map(|v| v["index"].as_u64())
        .collect();
    for (_, (mut c, stdin)) in std::mem::take(&mut m.children) {
        drop(stdin); // its end of input lets the member's reader, and so the member, finish
        let _ = c.wait();
    }
    let mut killed: Vec<(String, u64)> = results.iter().map(|r| (r.killed.clone(), r.killed_at_us)).collect();
    killed.extend(provider_kills.iter().map(|(n, at, _)| (n.clone(), *at)));
    let verdict = traces.as_ref().map(|d| check_traces(d, &killed)).transpose()?;
    print_churn(args, &results, &finals, &blocked, verdict.as_deref());
    if !blocked.is_empty() {
        bail!("sender(s) {blocked:?} stayed blocked after the churn");
    }
    if let Some(v) = &verdict {
        if !v.starts_with("every") {
            bail!("the traces break the guarantees (kept in {})", traces.expect("traced").display());
        }
    }
    if let Some(d) = traces {
        let _ = std::fs::remove_dir_all(d);
    }
    Ok(())
}

/// Checks every member's trace in `dir` (with the `crash` event the harness writes for each
/// member killed, by name and time) and says what it found.
pub(super) fn check_traces(dir: &std::path::Path, killed: &[(String, u64)]) -> Result<String> {
    let mut all = Vec::new();
    for f in std::fs::read_dir(dir)? {
        let path = f?.path();
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        let mut events = parse(&text).with_context(|| format!("parsing {}", path.display()))?;
        let name = path.file_stem().and_then(|s| s.to_str()).unwrap_or("").to_string();
        if let Some((_, at)) = killed.iter().find(|(k, _)| *k == name) {
            events.extend(crate::demo::crash_event(&events, &format!("{name}#"), *at));
        }
        all.extend(events);
    }
    let report = check(&all, &Options { quiescent: true, crash_bound_us: None, ..Default::default() });
    for v in &report.violations {
        eprint!("{v}");
    }
    Ok(if report.violations.is_empty() {
        format!("every guarantee holds: {} events from {} processes", report.events, report.processes)
    } else {
        format!("{} violations in {} events", report.violations.len(), report.events)
    })
}

fn print_churn(args: &BenchArgs, rounds: &[Round], finals: &[Value], blocked: &[u64], verdict: Option<&str>) {
    if args.json {
        say(
            json!({"members": args.members, "senders": args.senders, "freeze": args.freeze, "size": args.size, "order": args.order,
            "rate": args.rate, "failure_timeout_ms": args.failure_timeout.as_millis() as u64,
            "rounds": rounds, "members_at_end": finals, "blocked_senders": blocked, "check": verdict}),
        );
        return;
    }
    println!(
        "synchrony bench --churn{}: {} members, {} sender(s) at {}, {} B messages, order {}, failure timeout {:?}",
        if args.freeze { " --freeze" } else { "" },
        args.members,
        args.senders,
        if args.rate == 0 { "full speed".to_string() } else { format!("{} msgs/s", args.rate) },
        args.size,
        args.order,
        args.failure_timeout
    );
    println!(
        "{:<8} {:>18} {:<8} {:>10} {:>22} {:>18}",
        "killed", "kill to view ms", "joiner", "state MB", "join to 1st delivery ms", "state transfer ms"
    );
    for r in rounds {
        println!(
            "{:<8} {:>18.1} {:<8} {:>10.1} {:>22.1} {:>18.1}",
            r.killed,
            r.failure_to_view_max_ms,
            r.joiner,
            r.state_bytes as f64 / 1e6,
            r.join_to_first_delivery_ms,
            r.state_transfer_ms
        );
        if let (Some(p), Some(at)) = (&r.provider_killed, r.provider_killed_at_fraction) {
            let resumed: u64 = finals.iter().filter_map(|v| v["state_resumed"].as_u64()).sum();
            println!(
                "  its provider {p} SIGKILLed with {:.0}% of the state at {}; transfers that went on from there: {resumed}",
                at * 100.0,
                r.joiner
            );
        }
    }
    for f in finals {
        println!(
            "b{}: sent {}, delivered {}, last send {} ms before the stop, cpu {:.2} s, rss {:.1} MB",
            f["index"],
            f["sent"],
            f["delivered"],
            f["last_send_age_us"].as_u64().unwrap_or(0) / 1000,
            f["cpu_seconds"].as_f64().unwrap_or(0.0),
            f["peak_rss_mb"].as_f64().unwrap_or(0.0)
        );
    }
    println!(
        "{}",
        if blocked.is_empty() { "no sender blocked".to_string() } else { format!("BLOCKED senders: {blocked:?}") }
    );
    if let Some(v) = verdict {
        println!("checker: {v}");
    }
}
