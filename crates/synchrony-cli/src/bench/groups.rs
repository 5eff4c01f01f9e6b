//! `synchrony bench --groups-scale N`: many groups per process. A founder makes N groups
//! with one `join_many`; then `--joiners` processes (default 2) join all N at once through
//! it. Reported: the time until every joiner has every group's state, resident memory per
//! process (and per group), CPU per process while idle afterwards, suspicions (there must
//! be none), and how long until a SIGKILLed joiner is out of every group's view.
//!
//! The parent drives the members through their standard input (`report`, `watch NAME`)
//! and reads what they see as JSON lines on their standard output; it kills them at the end.

use super::{cpu_seconds, memory_mb, now_us, BenchArgs, MemberArgs};
use anyhow::{bail, Context, Result};
use bytes::Bytes;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::Duration;
use synchrony_engine::{GroupName, ProcessId};
use synchrony_runtime::{GroupEvent, Runtime};
use tokio::io::AsyncBufReadExt;

fn say(v: Value) {
    println!("{v}");
}

/// The latest view's members of each group at one member, and how many of those views
/// hold the member being watched (kept as views come, so watching scans nothing; each
/// view's members are kept as they came, so a view costs the bench no allocation).
#[derive(Default)]
struct Views {
    members: Vec<Vec<ProcessId>>,
    watched: Option<String>,
    holding: usize,
}

impl Views {
    fn set(&mut self, k: usize, members: Vec<ProcessId>) {
        if let Some(w) = &self.watched {
            let has = |ms: &[ProcessId]| ms.iter().any(|m| &*m.name == w);
            let (had, has) = (has(&self.members[k]), has(&members));
            self.holding = self.holding + usize::from(has) - usize::from(had);
        }
        self.members[k] = members;
    }

    fn watch(&mut self, who: String) {
        self.holding = self.members.iter().filter(|ms| ms.iter().any(|m| *m.name == *who)).count();
        self.watched = Some(who);
    }
}

/// What one member's groups showed so far: read from the one merged receiver of all of
/// them, one batch at a time.
struct Groups {
    rt: Runtime,
    founder: bool,
    index: HashMap<GroupName, usize>,
    views: Views,
    /// Per group, whether it said it is ready: in its first view (the founder) or with
    /// its state (a joiner).
    ready: Vec<bool>,
    ready_count: usize,
}

impl Groups {
    /// Takes a batch of events; `Err` with the reason once this process stopped.
    async fn take(&mut self, batch: Vec<(GroupName, GroupEvent)>) -> Result<(), String> {
        for (g, ev) in batch {
            let Some(&k) = self.index.get(&g) else { continue };
            let ready = match ev {
                GroupEvent::View(v) => {
                    self.views.set(k, v.members);
                    self.founder
                }
                GroupEvent::State { .. } => true,
                GroupEvent::StateRequest { view, .. } => {
                    let state = Bytes::from_static(b"state");
                    self.rt.provide_state(g, view, state).await.map_err(|e| e.to_string())?;
                    false
                }
                GroupEvent::Partitioned(reason) => return Err(format!("{reason:?}")),
                _ => false,
            };
            if ready && !std::mem::replace(&mut self.ready[k], true) {
                self.ready_count += 1;
            }
        }
        Ok(())
    }
}

/// One member of `--groups-scale`: joins `a.groups` groups with one call, their events on
/// one receiver, serves their (small) states, and reports when it has every group's view
/// (the founder) or state.
pub(super) async fn groups_member(a: MemberArgs) -> Result<()> {
    let c = super::member_config(&a);
    let (rt, _node) = Runtime::start(c).await.context("starting")?;
    let rss_before = memory_mb("VmRSS:");
    let names: Vec<GroupName> = (0..a.groups).map(|k| GroupName::new(format!("s{k}"))).collect();
    let asked_us = now_us();
    let (mut events, joined) = rt.join_merged(names.iter().cloned()).await;
    for (g, r) in names.iter().zip(joined) {
        r.with_context(|| format!("joining {g}"))?;
    }
    let mut groups = Groups {
        rt: rt.clone(),
        founder: a.index == 0,
        index: names.iter().cloned().enumerate().map(|(k, g)| (g, k)).collect(),
        views: Views { members: vec![Vec::new(); names.len()], ..Views::default() },
        ready: vec![false; names.len()],
        ready_count: 0,
    };
    while groups.ready_count < names.len() {
        let Some(batch) = events.recv_batch().await else { return Ok(()) };
        if let Err(why) = groups.take(batch).await {
            say(json!({"event": "stopped", "reason": why}));
            return Ok(());
        }
    }
    say(json!({"event": "ready", "asked_us": asked_us, "at_us": now_us(), "groups": groups.ready_count}));
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut watching: Option<String> = None;
    loop {
        tokio::select! {
            line = lines.next_line() => {
                let Ok(Some(line)) = line else { return Ok(()) };
                let mut words = line.split_whitespace();
                match words.next() {
                    Some("report") => {
                        // (CPU first: the status of every group is not idle work.)
                        let cpu_s = cpu_seconds();
                        let st = rt.status().await.unwrap_or_default();
                        say(json!({"event": "report", "cpu_s": cpu_s, "rss_mb": memory_mb("VmRSS:"),
                            "rss_before_mb": rss_before, "suspicions": st.engine.suspicions,
                            "members": st.members.len()}));
                    }
                    Some("watch") => {
                        watching = words.next().map(str::to_string);
                        if let Some(w) = &watching {
                            groups.views.watch(w.clone());
                        }
                    }
                    _ => return Ok(()),
                }
            }
            batch = events.recv_batch() => {
                let Some(batch) = batch else { return Ok(()) };
                if let Err(why) = groups.take(batch).await {
                    say(json!({"event": "stopped", "reason": why}));
                }
                // (Looked at as each batch is taken: the time is the application's.)
                if let Some(who) = watching.take_if(|_| groups.views.holding == 0) {
                    say(json!({"event": "gone", "who": who, "at_us": now_us()}));
                }
            }
        }
    }
}

/// A member process and the lines it prints.
struct Member {
    child: Child,
    name: String,
}

fn spawn(args: &BenchArgs, i: usize, addrs: &[String], lines: &mpsc::Sender<(usize, Value)>) -> Result<Member> {
    let exe = std::env::current_exe()?;
    let mut cmd = super::member_command(&exe, args, i, addrs, "groups");
    cmd.args(["--start-at", "0", "--warmup", "0", "--duration", "0"]);
    cmd.args(["--groups", &args.groups_scale.unwrap_or(0).to_string()]);
    let log = std::env::var_os("SYNCHRONY_BENCH_LOG")
        .and_then(|d| std::fs::File::create(std::path::Path::new(&d).join(format!("b{i}.log"))).ok());
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(log.map_or_else(Stdio::null, Stdio::from));
    let mut child = cmd.spawn().context("starting a bench member")?;
    let out = child.stdout.take().context("stdout")?;
    let tx = lines.clone();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str::<Value>(&line) {
                if tx.send((i, v)).is_err() {
                    return;
                }
            }
        }
    });
    Ok(Member { child, name: format!("b{i}") })
}

fn tell(m: &mut Member, line: &str) {
    if let Some(stdin) = m.child.stdin.as_mut() {
        let _ = writeln!(stdin, "{line}");
        let _ = stdin.flush();
    }
}

/// Waits for `event` from each of `from`, failing on a stop or after `within`.
fn await_all(
    rx: &mpsc::Receiver<(usize, Value)>,
    from: &[usize],
    event: &str,
    within: Duration,
) -> Result<Vec<(usize, Value)>> {
    let deadline = std::time::Instant::now() + within;
    let mut got: Vec<(usize, Value)> = Vec::new();
    while got.len() < from.len() {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let Ok((i, v)) = rx.recv_timeout(left) else {
            bail!(
                "waited {within:?} for {event} from members {from:?}; got it from {:?}",
                got.iter().map(|g| g.0).collect::<Vec<_>>()
            );
        };
        if v["event"] == "stopped" {
            bail!("member {i} stopped: {}", v["reason"]);
        }
        if v["event"] == event && from.contains(&i) && !got.iter().any(|(j, _)| *j == i) {
            got.push((i, v));
        }
    }
    got.sort_by_key(|(i, _)| *i);
    Ok(got)
}

/// `synchrony bench --groups-scale N`.
pub(super) fn run_groups_scale(args: &BenchArgs) -> Result<()> {
    let mut members = Vec::new();
    let r = scale(args, &mut members);
    for m in &mut members {
        if let Ok(Some(status)) = m.child.try_wait() {
            if r.is_err() && !status.success() {
                eprintln!("member {} exited early: {status}", m.name);
            }
        }
        let _ = m.child.kill();
        let _ = m.child.wait();
    }
    r
}

fn scale(args: &BenchArgs, members: &mut Vec<Member>) -> Result<()> {
    let n = args.groups_scale.unwrap_or(0);
    let joiners = args.joiners;
    if n == 0 {
        bail!("--groups-scale needs at least one group");
    }
    let addrs: Vec<String> =
        (0..=joiners).map(|_| super::free_port().map(|p| format!("127.0.0.1:{p}"))).collect::<Result<_>>()?;
    let (tx, rx) = mpsc::channel();
    members.push(spawn(args, 0, &addrs, &tx)?);
    let founded = await_all(&rx, &[0], "ready", Duration::from_secs(600))?;
    let found_s =
        (founded[0].1["at_us"].as_u64().unwrap_or(0) - founded[0].1["asked_us"].as_u64().unwrap_or(0)) as f64 / 1e6;
    let start_us = now_us();
    for i in 1..=joiners {
        members.push(spawn(args, i, &addrs, &tx)?);
    }
    let others: Vec<usize> = (1..=joiners).collect();
    let joined = await_all(&rx, &others, "ready", Duration::from_secs(600))?;
    let join_s =
        joined.iter().map(|(_, v)| v["at_us"].as_u64().unwrap_or(0)).max().unwrap_or(start_us).saturating_sub(start_us)
            as f64
            / 1e6;
    // Idle: CPU over a few quiet seconds, after one to settle.
    std::thread::sleep(Duration::from_secs(1));
    let all: Vec<usize> = (0..=joiners).collect();
    let report = |members: &mut [Member], alive: &[usize]| -> Result<Vec<(usize, Value)>> {
        for &i in alive {
            tell(&mut members[i], "report");
        }
        await_all(&rx, alive, "report", Duration::from_secs(30))
    };
    let before = report(members, &all)?;
    let idle = Duration::from_secs(args.duration.max(1));
    std::thread::sleep(idle);
    let after = report(members, &all)?;
    let mut rows = Vec::new();
    for ((i, b), (_, a)) in before.iter().zip(&after) {
        let cpu = (a["cpu_s"].as_f64().unwrap_or(0.0) - b["cpu_s"].as_f64().unwrap_or(0.0)) / idle.as_secs_f64();
        let rss = a["rss_mb"].as_f64().unwrap_or(0.0);
        let per_group = (rss - a["rss_before_mb"].as_f64().unwrap_or(0.0)) * 1024.0 * 1024.0 / n as f64;
        rows.push(json!({"member": members[*i].name, "rss_mb": rss, "bytes_per_group": per_group.round() as i64,
            "idle_cpu_percent": cpu * 100.0, "suspicions": a["suspicions"], "cluster_members": a["members"]}));
    }
    // A joiner killed: how long until it is out of every group's view at every survivor.
    // (With one joiner the founder alone would be a minority of two: it stops, as it must.)
    let mut exclusion_ms = None;
    if joiners >= 2 {
        let victim = joiners;
        let survivors: Vec<usize> = (0..victim).collect();
        let name = members[victim].name.clone();
        for &i in &survivors {
            tell(&mut members[i], &format!("watch {name}"));
        }
        std::thread::sleep(Duration::from_millis(100));
        let killed_us = now_us();
        members[victim].child.kill().context("killing a member")?;
        let gone = await_all(&rx, &survivors, "gone", Duration::from_secs(60))?;
        let last = gone.iter().map(|(_, v)| v["at_us"].as_u64().unwrap_or(0)).max().unwrap_or(killed_us);
        exclusion_ms = Some(last.saturating_sub(killed_us) as f64 / 1e3);
    }
    let suspicions: u64 = rows.iter().map(|r| r["suspicions"].as_u64().unwrap_or(0)).sum();
    if args.json {
        say(json!({"groups": n, "joiners": joiners, "found_s": found_s, "join_s": join_s,
            "failure_timeout_ms": args.failure_timeout.as_millis() as u64, "members": rows,
            "suspicions_before_kill": suspicions, "kill_excluded_ms": exclusion_ms}));
    } else {
        println!("synchrony bench --groups-scale {n}: a founder with {n} groups, {joiners} process(es) joining all of them at once");
        println!("founder made {n} groups in {found_s:.2} s; every joiner had every group's state {join_s:.2} s after they started");
        println!("{:<8} {:>8} {:>16} {:>16} {:>11}", "member", "rss MB", "bytes per group", "idle cpu %", "suspicions");
        for r in &rows {
            println!(
                "{:<8} {:>8.1} {:>16} {:>16.2} {:>11}",
                r["member"].as_str().unwrap_or(""),
                r["rss_mb"].as_f64().unwrap_or(0.0),
                r["bytes_per_group"],
                r["idle_cpu_percent"].as_f64().unwrap_or(0.0),
                r["suspicions"]
            );
        }
        if let Some(ms) = exclusion_ms {
            println!(
                "a SIGKILLed joiner was out of every group's view at every survivor {ms:.1} ms after the kill (failure timeout {} ms)",
                args.failure_timeout.as_millis()
            );
        }
    }
    if suspicions > 0 {
        bail!("{suspicions} suspicion(s) before the kill: a process was suspected while nothing failed");
    }
    Ok(())
}
