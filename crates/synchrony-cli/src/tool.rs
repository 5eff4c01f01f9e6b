//! `synchrony tool`: one member process of a tool, for multi-process tests on loopback. It
//! prints what it sees as JSON lines on stdout, so a test can kill processes and check
//! the survivors' accounts against each other.

use crate::node::{parse_duration, NodeArgs};
use anyhow::{bail, Context, Result};
use serde_json::json;
use std::time::Duration;
use synchrony::tools::{self, Handler, Share};
use synchrony::{JoinOptions, Node, Order};

/// Which tool, and what this member does with it.
#[derive(clap::Args, Clone, Debug)]
pub(crate) struct ToolArgs {
    #[command(flatten)]
    pub(crate) node: NodeArgs,
    /// map, lock, cohort, pquery, config, news, or showcase (map and lock at once).
    #[arg(long)]
    pub(crate) tool: String,
    /// Operations this member makes (puts, lock rounds, calls, queries, changes, postings).
    #[arg(long, default_value_t = 0)]
    pub(crate) ops: usize,
    /// Pause between operations (for `lock`: how long each hold lasts).
    #[arg(long, default_value = "10ms", value_parser = parse_duration)]
    pub(crate) every: Duration,
    /// Wait this long before the first operation.
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    pub(crate) delay: Duration,
    /// `lock`: take the lock once and never give it back (to be killed holding it).
    #[arg(long)]
    pub(crate) hold_forever: bool,
    /// `durable`: after a total failure, restart without the members still missing after
    /// this long (they are taken as lost; by default recovery waits for them).
    #[arg(long, value_parser = parse_duration)]
    pub(crate) give_up_after: Option<Duration>,
    /// `news`: subscribe to this pattern and print what arrives.
    #[arg(long)]
    pub(crate) subscribe: Option<String>,
    /// Exit this long after starting.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub(crate) exit_after: Duration,
}

fn say(v: serde_json::Value) {
    println!("{v}");
}

fn now_us() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros())
}

struct Rows(u64);

impl Share for Rows {
    fn answer(&mut self, _query: &[u8], rank: usize, n: usize) -> bytes::Bytes {
        let sum: u64 = (0..self.0).filter(|r| *r as usize % n == rank).sum();
        sum.to_le_bytes().to_vec().into()
    }
}

struct Echo(String);

impl Handler for Echo {
    fn execute(&mut self, request: &[u8]) -> bytes::Bytes {
        format!("{}|{}", String::from_utf8_lossy(request), self.0).into()
    }
}

/// `synchrony tool`.
pub(crate) async fn run_tool(args: ToolArgs) -> Result<()> {
    let node = Node::start(args.node.config()?).await.context("starting the node")?;
    let me = node.id().clone();
    say(json!({"event": "member", "me": me.to_string()}));
    let group = |name: &str| node.join(format!("tools.{name}"), JoinOptions::default());
    let work = async {
        tokio::time::sleep(args.delay).await;
        match args.tool.as_str() {
            "map" => run_map(&node, &args).await?,
            "durable" => run_durable(&node, &args).await?,
            "lock" => run_lock(&node, &args).await?,
            // The demo's part: the map and the lock at once.
            "showcase" => {
                let (m, l) = tokio::join!(run_map(&node, &args), run_lock(&node, &args));
                m?;
                l?;
            }
            "cohort" => {
                let host = format!("host-{}", args.node.name);
                let svc = tools::CohortService::start(group("cohort").await?, me.clone(), &host, Echo(me.to_string()));
                for i in 0..args.ops {
                    let r = tools::cohort_call(svc.sender(), "elsewhere", format!("req{i}").as_bytes()).await;
                    match r {
                        Ok(b) => {
                            let text = String::from_utf8_lossy(&b).to_string();
                            let (req, by) = text.split_once('|').unwrap_or_default();
                            say(json!({"event": "reply", "req": req, "want": format!("req{i}"), "by": by}));
                        }
                        Err(e) => say(json!({"event": "error", "error": e.to_string()})),
                    }
                    tokio::time::sleep(args.every).await;
                }
                say(json!({"event": "done"}));
                std::future::pending::<()>().await;
            }
            "pquery" => {
                let rows = 10_000u64;
                let pq = tools::ParallelQueries::start(group("pquery").await?, me.clone(), Rows(rows));
                for _ in 0..args.ops {
                    match pq.query(b"sum").await {
                        Ok(a) => {
                            let sum: u64 =
                                a.parts.iter().map(|p| u64::from_le_bytes(p[..8].try_into().unwrap_or([0; 8]))).sum();
                            say(
                                json!({"event": "answer", "sum": sum, "want": rows * (rows - 1) / 2, "parts": a.parts.len()}),
                            );
                        }
                        Err(e) => say(json!({"event": "error", "error": e.to_string()})),
                    }
                    tokio::time::sleep(args.every).await;
                }
                say(json!({"event": "done"}));
                std::future::pending::<()>().await;
            }
            "config" => {
                let (config, mut rx) = tools::ConfigHandle::start(group("config").await?);
                let sender = config.sender().clone();
                let name = args.node.name.clone();
                let (ops, every) = (args.ops, args.every);
                // A clone for the writer: `config` stays here, so the tool (and this node's
                // membership) lasts until the group ends, not until the writer is done.
                let cfg = config.clone();
                tokio::spawn(async move {
                    for i in 0..ops {
                        if i % 5 == 0 {
                            let _ = cfg.set("round", &i.to_string()).await;
                        }
                        let _ = sender.send(Order::Fifo, format!("{name}-{i}")).await;
                        tokio::time::sleep(every).await;
                    }
                });
                while let Some(o) = rx.recv().await {
                    if let tools::ConfigOutput::Message { delivery, version } = o {
                        say(json!({"event": "msg", "id": delivery.id.to_string(), "version": version}));
                    }
                }
                say(json!({"event": "closed"})); // the others left: this one stops with them
                drop(config);
                return Ok(());
            }
            "news" => {
                let mut channels = Vec::new();
                for k in 0..2 {
                    channels.push(node.join(tools::channel_group("tools", k), JoinOptions::default()).await?);
                }
                let news = tools::NewsService::start(channels);
                let mut sub = args.subscribe.as_deref().map(|p| news.subscribe(p));
                let name = args.node.name.clone();
                let news = std::sync::Arc::new(news);
                let poster = news.clone();
                let (ops, every) = (args.ops, args.every);
                tokio::spawn(async move {
                    for i in 0..ops {
                        let _ = poster.post(&format!("prices.{name}"), &(i as u64).to_be_bytes()).await;
                        tokio::time::sleep(every).await;
                    }
                });
                match sub.as_mut() {
                    Some(rx) => {
                        while let Some(p) = rx.recv().await {
                            let n = u64::from_be_bytes(p.body[..8].try_into().unwrap_or([0; 8]));
                            say(json!({"event": "posting", "subject": p.subject, "from": p.from.to_string(), "n": n}));
                        }
                        say(json!({"event": "closed"}));
                        return Ok(());
                    }
                    None => std::future::pending::<()>().await,
                }
            }
            other => bail!("no tool called {other} (map, lock, cohort, pquery, config, news, showcase)"),
        }
        #[allow(unreachable_code)]
        Ok(())
    };
    let outcome = tokio::select! {
        r = work => r,
        _ = tokio::time::sleep(args.exit_after) => Ok(()),
    };
    let _ = node.shutdown().await;
    outcome
}

/// Puts `ops` entries, then reports the map whenever it changes.
async fn run_map(node: &Node, args: &ToolArgs) -> Result<()> {
    let group = node.join("tools.map", JoinOptions::default()).await?;
    let map: tools::ReplicatedMap<String, u64> = tools::ReplicatedMap::start(group);
    for i in 0..args.ops {
        let key = format!("{}-{i}", args.node.name);
        let ok = map.put(key.clone(), i as u64).await.is_ok();
        say(json!({"event": "put", "key": key, "ok": ok}));
        tokio::time::sleep(args.every).await;
    }
    let mut last = (0, 0);
    loop {
        let entries = map.to_map();
        if (map.applied(), entries.len()) != last {
            last = (map.applied(), entries.len());
            let lines: Vec<String> = entries.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let digest = synchrony_trace::digest(lines.iter().map(|s| s.as_str()));
            say(json!({"event": "map", "applied": last.0, "len": last.1, "digest": digest}));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Takes the lock `res` for `every`, `ops` times (or once and forever, to be killed).
async fn run_lock(node: &Node, args: &ToolArgs) -> Result<()> {
    let locks = tools::Locks::start(node.join("tools.lock", JoinOptions::default()).await?);
    if args.hold_forever {
        let _held = locks.acquire("res").await?;
        say(json!({"event": "granted", "at_us": now_us()}));
        std::future::pending::<()>().await;
    }
    let rounds = if args.tool == "showcase" { args.ops / 10 } else { args.ops };
    for _ in 0..rounds {
        let p = locks.acquire("res").timeout(Duration::from_secs(20)).await?;
        say(json!({"event": "granted", "at_us": now_us()}));
        tokio::time::sleep(args.every).await;
        say(json!({"event": "released", "at_us": now_us()}));
        locks.release(p).await?;
    }
    say(json!({"event": "done"}));
    std::future::pending::<()>().await;
    Ok(())
}

/// A logged replicated map: recovers it (rejoin, or restart from the last to fail), makes
/// `ops` puts, each reported `durable` once applied, logged and flushed, then reports the
/// keys whenever they change.
async fn run_durable(node: &Node, args: &ToolArgs) -> Result<()> {
    let dir = args.node.data_dir.clone().context("--data-dir is needed")?;
    let store = std::sync::Arc::new(synchrony::storage::Store::open(&dir.join("store"), &args.node.name)?);
    // A join refused because the group died meanwhile (or a recovery cut short) is
    // transient: recover again.
    let mut attempt = 0;
    let (replica, how) = loop {
        let store = store.clone();
        match tools::recover::<std::collections::BTreeMap<String, u64>>(
            node,
            "tools.durable",
            store,
            args.give_up_after,
            20,
        )
        .await
        {
            Ok(r) => break r,
            Err(e) if attempt < 20 => {
                attempt += 1;
                say(json!({"event": "recovery_retry", "error": e.to_string()}));
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(e.into()),
        }
    };
    let map: tools::ReplicatedMap<String, u64> = replica.into();
    say(json!({"event": "recovered", "how": format!("{how:?}"), "len": map.len()}));
    let me = node.id().to_string();
    for i in 0..args.ops {
        let key = format!("{me}-{i}");
        if map.put(key.clone(), i as u64).await.is_ok() && map.flush().await.is_ok() {
            say(json!({"event": "durable", "key": key}));
        }
        tokio::time::sleep(args.every).await;
    }
    let mut last = usize::MAX;
    loop {
        let keys: Vec<String> = map.to_map().into_keys().collect();
        if keys.len() != last {
            last = keys.len();
            say(json!({"event": "keys", "keys": keys}));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
