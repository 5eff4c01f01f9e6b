//! `synchrony node` and `synchrony load`: a long-running member whose application state is
//! the set of message ids it has delivered (what TRACE.md's digest is computed over), so
//! that its trace can be checked, state transfers included.

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use std::collections::BTreeSet;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use synchrony_engine::{GroupName, Order};
use synchrony_runtime::{Config, GroupEvent, Runtime};

/// Parses `300ms`, `2s`, `1.5s` or a bare number of seconds.
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    if s.trim_start().starts_with('-') {
        return Err(format!("{s:?}: a duration cannot be negative"));
    }
    let (num, unit) = match s.strip_suffix("ms") {
        Some(n) => (n, 1e-3),
        None => (s.strip_suffix('s').unwrap_or(s), 1.0),
    };
    let v: f64 = num.trim().parse().map_err(|_| format!("{s:?} is not a duration (try 300ms or 2s)"))?;
    if !(0.0..1e7).contains(&v) {
        return Err(format!("{s:?} is out of range"));
    }
    Ok(Duration::from_secs_f64(v * unit))
}

/// As [`parse_duration`], for timeouts and periods that must be above zero.
pub(crate) fn parse_timeout(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d.is_zero() {
        return Err(format!("{s:?}: must be above zero"));
    }
    Ok(d)
}

/// The options every long-running node takes.
#[derive(clap::Args, Clone, Debug)]
pub(crate) struct NodeArgs {
    /// Read options from this TOML file (e.g. synchrony.toml): its keys are the long option
    /// names (name, listen, peers = ["a:7001", "b:7001"], failure-timeout = "300ms", ...).
    /// Options on the command line override it.
    #[arg(long)]
    pub(crate) config: Option<PathBuf>,
    /// This node's name, unique in the cluster (traces show NAME#INCARNATION).
    #[arg(long)]
    pub(crate) name: String,
    /// The address to listen on, e.g. 127.0.0.1:7001.
    #[arg(long)]
    pub(crate) listen: String,
    /// A member to join the cluster through (repeat for several; none: start a new cluster).
    #[arg(long = "contact")]
    pub(crate) contacts: Vec<String>,
    /// Bootstrap from a peer list: the addresses of the nodes that form the cluster, as
    /// each one's --listen gives it, comma-separated, the same on every node (e.g.
    /// a:7001,b:7001,c:7001). Start them in any order: the cluster forms once a majority
    /// of the list is up, never two at once, and forms again after a total failure. A node
    /// not on the list joins through it (with weight 0).
    #[arg(long, value_delimiter = ',')]
    pub(crate) peers: Vec<String>,
    /// A group to join (repeat for several).
    #[arg(long = "join")]
    pub(crate) join: Vec<String>,
    /// Write this node's trace (TRACE.md format) to FILE.
    #[arg(long)]
    pub(crate) trace: Option<PathBuf>,
    /// A file holding the cluster secret: frames are authenticated with it.
    #[arg(long)]
    pub(crate) secret_file: Option<PathBuf>,
    /// Where this node keeps what outlives it: its incarnation counter, and the store of
    /// logged tools (views, checkpoints, updates) that recovery restarts from.
    #[arg(long)]
    pub(crate) data_dir: Option<PathBuf>,
    /// Silence after which a peer is suspected (200ms is fine on loopback). Durations: 300ms,
    /// 2s, 1.5s, or a bare number of seconds.
    #[arg(long, default_value = "1s", value_parser = parse_timeout, allow_hyphen_values = true)]
    pub(crate) failure_timeout: Duration,
    /// Heartbeat period (default: a tenth of the failure timeout).
    #[arg(long, value_parser = parse_timeout, allow_hyphen_values = true)]
    pub(crate) heartbeat: Option<Duration>,
    /// After being excluded (e.g. paused too long), rejoin as a new incarnation.
    #[arg(long)]
    pub(crate) rejoin: bool,
    /// Serve Prometheus metrics at this address (GET any path), e.g. 127.0.0.1:9100.
    #[arg(long)]
    pub(crate) metrics: Option<std::net::SocketAddr>,
    /// This process's weight in majority decisions (Isis: servers 1, clients 0).
    #[arg(long, default_value_t = 1)]
    pub(crate) weight: u32,
    /// A view change also needs at least this much weight.
    #[arg(long, default_value_t = 0)]
    pub(crate) min_commit_weight: u32,
    /// Give up if not a member of the cluster after this long.
    #[arg(long, default_value = "30s", value_parser = parse_timeout, allow_hyphen_values = true)]
    pub(crate) join_timeout: Duration,
}

impl NodeArgs {
    pub(crate) fn config(&self) -> Result<Config> {
        let mut c = Config::new(self.name.clone(), self.listen.clone());
        c.contacts = self.contacts.clone();
        c.peers = self.peers.clone();
        c.trace = self.trace.clone();
        c.data_dir = self.data_dir.clone();
        c.set_timeouts(self.heartbeat.unwrap_or(self.failure_timeout / 10), self.failure_timeout);
        c.rejoin = self.rejoin;
        c.join_timeout = self.join_timeout;
        c.metrics = self.metrics;
        c.engine.weight = self.weight;
        c.engine.min_commit_weight = self.min_commit_weight;
        if let Some(f) = &self.secret_file {
            let s = std::fs::read(f).with_context(|| format!("reading the secret from {}", f.display()))?;
            let s = s.strip_suffix(b"\n").unwrap_or(&s).to_vec();
            if s.is_empty() {
                bail!("the secret file {} is empty", f.display());
            }
            c.engine.secret = Some(s);
        }
        Ok(c)
    }
}

/// The traffic generator's options.
#[derive(clap::Args, Clone, Debug)]
pub(crate) struct LoadArgs {
    #[command(flatten)]
    pub(crate) node: NodeArgs,
    /// The group to join and load; repeat it to load several, message by message in turn
    /// (each group's messages through the order classes in turn).
    #[arg(long = "group", required = true)]
    pub(crate) groups: Vec<String>,
    /// Order class, or a comma-separated list used in turn (e.g. fifo,causal,total,safe).
    #[arg(long, default_value = "total")]
    pub(crate) order: String,
    /// Messages a second.
    #[arg(long, default_value_t = 100.0)]
    pub(crate) rate: f64,
    /// Payload bytes.
    #[arg(long, default_value_t = 64)]
    pub(crate) size: usize,
    /// How long to send, in seconds.
    #[arg(long, default_value = "10", value_parser = parse_duration)]
    pub(crate) duration: Duration,
    /// Exit this long after starting (default: run until SIGTERM).
    #[arg(long, value_parser = parse_duration)]
    pub(crate) exit_after: Option<Duration>,
}

/// One group's application: the set of delivered ids; answers queries and state requests.
async fn serve_group(rt: Runtime, group: GroupName, mut events: synchrony_runtime::GroupEvents, verbose: bool) {
    let state: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let me = rt.me().name.to_string();
    while let Some(ev) = events.recv().await {
        match ev {
            GroupEvent::Message(m) => {
                state.lock().expect("not poisoned").insert(m.id.to_string());
                if m.query && rt.reply(m.id, Some(Bytes::from(me.clone()))).await.is_err() {
                    break;
                }
            }
            GroupEvent::StateRequest { view, .. } => {
                let s = state.lock().expect("not poisoned").iter().cloned().collect::<Vec<_>>().join("\n");
                if rt.provide_state(group.clone(), view, Bytes::from(s)).await.is_err() {
                    break;
                }
            }
            GroupEvent::State { state: bytes, view } => {
                let text = String::from_utf8_lossy(&bytes).to_string();
                let set: BTreeSet<String> = text.split('\n').filter(|s| !s.is_empty()).map(String::from).collect();
                if verbose {
                    println!("{group}: state loaded at view {view} ({} messages)", set.len());
                }
                *state.lock().expect("not poisoned") = set;
            }
            GroupEvent::View(v) if verbose => {
                let members: Vec<String> = v.members.iter().map(|m| m.to_string()).collect();
                println!("{group}: view {} [{}]", v.id, members.join(", "));
            }
            GroupEvent::Partitioned(reason) => {
                state.lock().expect("not poisoned").clear();
                if verbose {
                    println!("{group}: this incarnation stopped ({reason:?})");
                }
            }
            GroupEvent::Left if verbose => println!("{group}: left"),
            _ => {}
        }
    }
}

async fn start(args: &NodeArgs, groups: &[String], verbose: bool) -> Result<Runtime> {
    let mut config = args.config()?;
    // `serve_group`'s state is the set of delivered ids: the checker can recompute it.
    config.trace_states_as_delivered_sets = true;
    if verbose && !config.peers.is_empty() {
        // (It may wait long, and says nothing else meanwhile.)
        eprintln!(
            "{}: waiting for a majority of the peer list ({} nodes) to form the cluster, or for the cluster",
            config.name,
            config.peers.len()
        );
    }
    let (rt, mut node_events) = Runtime::start(config).await.context("starting the node")?;
    tokio::spawn(async move { while node_events.recv().await.is_some() {} });
    // All at once: thousands of `--join`s are one request to the membership leader.
    let names: Vec<GroupName> = groups.iter().map(|g| GroupName::new(g.as_str())).collect();
    for (g, events) in names.iter().zip(rt.join_many(names.iter().cloned()).await) {
        let events = events.with_context(|| format!("joining {g}"))?;
        tokio::spawn(serve_group(rt.clone(), g.clone(), events, verbose));
    }
    Ok(rt)
}

async fn terminated() {
    use tokio::signal::unix::{signal, SignalKind};
    match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
        (Ok(mut t), Ok(mut i)) => {
            tokio::select! { _ = t.recv() => {}, _ = i.recv() => {} }
        }
        _ => std::future::pending().await,
    }
}

/// `synchrony node`: runs until SIGTERM or Ctrl-C, then leaves the cluster.
pub(crate) async fn run_node(args: NodeArgs) -> Result<()> {
    let rt = start(&args, &args.join, true).await?;
    println!("{} is a member, listening on {}", rt.me(), rt.listen_addr());
    terminated().await;
    let _ = rt.shutdown().await;
    Ok(())
}

/// `synchrony load`: joins, sends at the given rate for the duration, keeps taking part
/// until SIGTERM or `--exit-after`, then closes its trace and exits.
pub(crate) async fn run_load(args: LoadArgs) -> Result<()> {
    let orders: Vec<Order> = args
        .order
        .split(',')
        .map(|o| o.trim().parse::<Order>().map_err(|e| anyhow::anyhow!("{e}")))
        .collect::<Result<_>>()?;
    if orders.is_empty() || args.rate < 0.0 {
        bail!("need at least one order class and a rate of zero or more");
    }
    let started = tokio::time::Instant::now();
    let rt = start(&args.node, &args.groups, false).await?;
    let groups: Vec<GroupName> = args.groups.iter().map(|g| GroupName::new(g.as_str())).collect();
    let payload = Bytes::from(vec![0u8; args.size]);
    let sender = {
        let rt = rt.clone();
        async move {
            let tick = Duration::from_millis(10);
            let mut interval = tokio::time::interval(tick);
            let (mut credit, mut k, mut failed) = (0.0f64, 0usize, 0u64);
            let end = tokio::time::Instant::now() + args.duration;
            while tokio::time::Instant::now() < end {
                interval.tick().await;
                credit += args.rate * tick.as_secs_f64();
                // One batch per group and order class per tick: one trip to the driver,
                // shared frames. Message k goes to group k mod G, in order class k / G mod O.
                let n = credit.floor() as usize;
                credit -= n as f64;
                let (g, o) = (groups.len(), orders.len());
                let mut batches: Vec<Vec<Bytes>> = vec![Vec::new(); g * o];
                for _ in 0..n {
                    batches[(k % g) * o + (k / g) % o].push(payload.clone());
                    k += 1;
                }
                for (i, batch) in batches.into_iter().enumerate().filter(|(_, b)| !b.is_empty()) {
                    let sent = rt.send_batch(groups[i / o].clone(), orders[i % o], batch).await;
                    failed += sent.iter().filter(|r| r.is_err()).count() as u64;
                    // e.g. while rejoining
                }
            }
            (k, failed)
        }
    };
    let exit = async {
        match args.exit_after {
            Some(d) => tokio::time::sleep_until(started + d).await,
            None => std::future::pending().await,
        }
    };
    let sent = tokio::select! {
        r = sender => Some(r),
        _ = terminated() => None,
    };
    if let Some((k, failed)) = sent {
        println!("{}: sent {} messages ({} refused)", rt.me(), k - failed as usize, failed);
        tokio::select! { _ = exit => {}, _ = terminated() => {} }
    }
    // Freeze the trace first: the other loads stop at about the same moment, and what they
    // would do about this one's exit is not part of the run.
    let _ = rt.close_trace().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    Ok(())
}

/// `synchrony status ADDR`.
pub(crate) async fn run_status(addr: String, secret_file: Option<PathBuf>, json: bool, watch: bool) -> Result<()> {
    let secret = match &secret_file {
        Some(f) => Some(std::fs::read(f).with_context(|| format!("reading {}", f.display()))?),
        None => None,
    };
    let secret = secret.map(|s| s.strip_suffix(b"\n").unwrap_or(&s).to_vec());
    loop {
        let s = synchrony_runtime::request_status(&addr, secret.as_deref())
            .await
            .with_context(|| format!("asking {addr} for its status"))?;
        if watch && std::io::stdout().is_terminal() {
            print!("\x1b[2J\x1b[H"); // clear the terminal (not a file or a pipe)
        }
        if json {
            println!("{}", serde_json::to_string_pretty(&s)?);
        } else {
            println!("{s}");
        }
        if !watch {
            return Ok(());
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = terminated() => return Ok(()),
        }
    }
}
