//! The `synchrony` command.

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant as WallClock;
use synchrony_check::{check, Causality, Options};
use synchrony_sim::{Outcome, Profile, SimConfig};
use synchrony_trace::parse;

/// mimalloc, not the system allocator: glibc's slows down as a process's heap fills with
/// thousands of groups (`bench --idle-groups 10000`: 27% fewer messages a second, a third
/// of a kill round's CPU in malloc and free).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod bench;
mod config_file;
mod demo;
mod node;
mod tool;

/// Virtual synchrony for Rust: process groups whose members see the same events in the
/// same order.
#[derive(Parser)]
#[command(name = "synchrony", version, about, args_override_self = true)]
pub(crate) struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run seeded simulations of a faulty cluster and check every trace (G1 to G13).
    Sim {
        /// How many seeds to run.
        #[arg(long, default_value_t = 100)]
        seeds: u64,
        /// The first seed.
        #[arg(long, default_value_t = 0)]
        start: u64,
        /// Run exactly this seed (overrides --seeds/--start).
        #[arg(long)]
        seed: Option<u64>,
        /// Fault profile: calm, lossy, churn, partition, leader-crash, pause, deaf (the application pauses, not the process), chaos, corked, batched (corked with batched sends), leaves (clean leaves of the cluster and restarts), many-groups (7 processes, 2,000 groups, mass joins and leaves, crashes, work that costs virtual time), total-failure
        /// (a logged ledger whose group fails whole, with a durability check), large (chaos with
        /// messages and states of many small fragments), bootstrap (every process started with
        /// the same peer list in a random order, total failures; never two clusters at once),
        /// backpressure (chaos with applications that read late from small queues and senders
        /// that block on a small window).
        #[arg(long, default_value = "chaos")]
        profile: String,
        /// Processes in the cluster (default: 5, or the profile's own: many-groups has 7).
        #[arg(long)]
        nodes: Option<usize>,
        /// Groups (default: 3, or the profile's own: many-groups has 2,000).
        #[arg(long)]
        groups: Option<usize>,
        /// Write the trace of the run (with --seed) to this file.
        #[arg(long)]
        trace_out: Option<PathBuf>,
        /// Worker threads (default: the number of cores).
        #[arg(long)]
        threads: Option<usize>,
        /// Check causal order (G6) within each group only, not across groups as DESIGN.md
        /// words it (for processes run with causal order across groups switched off).
        #[arg(long)]
        within_groups: bool,
    },
    /// Check traces (JSON Lines, TRACE.md format) for the guarantees G1 to G13.
    ///
    /// A process whose trace ends without a leave, partitioned or crash event, and which
    /// later views of its groups no longer contain, is taken as crashed after its last event
    /// (a SIGKILL writes nothing; TRACE.md); the report names each one.
    Check {
        /// The run ended quiescent: also check liveness (G13).
        #[arg(long)]
        quiescent: bool,
        /// Take no process as crashed unless its trace has a `crash` event (a harness that
        /// writes every crash can check strictly).
        #[arg(long)]
        no_inferred_crashes: bool,
        /// Check causal order (G6) within each group only, not across groups as DESIGN.md
        /// words it (for processes run with causal order across groups switched off).
        #[arg(long)]
        within_groups: bool,
        /// Trace files, merged.
        #[arg(required = true)]
        traces: Vec<PathBuf>,
    },
    /// The main job: a local cluster of separate processes on loopback, with a member
    /// killed, a joiner receiving state, a member paused past the failure timeout,
    /// narrated as it happens and checked at the end (under a minute).
    Demo(demo::DemoArgs),
    /// Draw a time-space diagram of traces: one line per process, view bands, an arrow
    /// per delivery, crashes and state transfers, violations circled.
    ///
    /// A process whose trace just ends and which later views exclude is drawn as crashed
    /// after its last event (marked "trace ends: taken as crashed"), as `check` takes it.
    Viz {
        /// Trace files, merged.
        #[arg(required = true)]
        traces: Vec<PathBuf>,
        /// Output file: `.html` (interactive: zoom, pan, filters, hover) or `.svg`.
        #[arg(short, long)]
        output: PathBuf,
        /// Also check liveness (G13) when marking violations.
        #[arg(long)]
        quiescent: bool,
    },
    /// Measure delivered messages per second, latency, CPU and memory of N member
    /// processes on loopback, beside a raw TCP fan-out baseline measured in the same run.
    Bench(bench::BenchArgs),
    /// One member of `synchrony bench` (started by it).
    #[command(hide = true)]
    BenchMember(bench::MemberArgs),
    /// One member process of a tool, printing what it sees as JSON lines (for tests).
    #[command(hide = true)]
    Tool(tool::ToolArgs),
    /// Run a long-lived member of a cluster until SIGTERM or Ctrl-C.
    Node(node::NodeArgs),
    /// Join a group, send traffic at a rate for a while, keep taking part until SIGTERM or
    /// --exit-after; the trace (--trace) can then be checked with `synchrony check`.
    Load(node::LoadArgs),
    /// Show the groups, views, members, rates and rejection counts of a running node.
    Status {
        /// The node's listen address.
        addr: String,
        /// The cluster secret, if the node has one.
        #[arg(long)]
        secret_file: Option<PathBuf>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// Refresh every second until Ctrl-C.
        #[arg(long)]
        watch: bool,
    },
}

/// Checks `events`, draws them to `output` (HTML or SVG by its extension), and says what it did.
pub(crate) fn write_diagram(
    events: &[synchrony_trace::TraceEvent],
    quiescent: bool,
    output: &std::path::Path,
) -> Result<String> {
    let report = check(events, &Options { quiescent, crash_bound_us: None, ..Default::default() });
    let d = synchrony_viz::Diagram::of_report(events, &report);
    let svg = output.extension().is_some_and(|e| e == "svg");
    let text = if svg {
        synchrony_viz::render_svg(&d)
    } else {
        synchrony_viz::render_html(&d, &format!("synchrony run: {} events", events.len()))
    };
    std::fs::write(output, text).with_context(|| format!("writing {}", output.display()))?;
    Ok(format!(
        "diagram of {} events from {} processes ({} arrows, {} violations) written to {}",
        events.len(),
        d.rows.len(),
        d.arrows.len(),
        report.violations.len(),
        output.display()
    ))
}

fn tokio_main<F: std::future::Future<Output = Result<()>>>(f: F) -> Result<()> {
    tokio_main_on(f, None)
}

/// Runs `f` on a tokio runtime: `threads` worker threads (0: all on the calling thread;
/// `None`: one per core), unless `SYNCHRONY_WORKER_THREADS` says otherwise.
fn tokio_main_on<F: std::future::Future<Output = Result<()>>>(f: F, threads: Option<usize>) -> Result<()> {
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, never into a file or a pipe.
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let from_env = std::env::var("SYNCHRONY_WORKER_THREADS").ok().and_then(|n| n.parse::<usize>().ok());
    let rt = match from_env.or(threads) {
        Some(0) => tokio::runtime::Builder::new_current_thread().enable_all().build()?,
        Some(n) => tokio::runtime::Builder::new_multi_thread().worker_threads(n).enable_all().build()?,
        None => tokio::runtime::Builder::new_multi_thread().enable_all().build()?,
    };
    rt.block_on(f)
}

/// One simulated run: the checker's workload, or for `total-failure` the logged ledger
/// whose group fails whole (with its durability check).
fn run(cfg: SimConfig) -> Outcome {
    if cfg.profile.name == "total-failure" {
        synchrony_sim_durable::run(cfg)
    } else {
        synchrony_sim::run(cfg)
    }
}

/// `synchrony sim --seed S`: one run, its trace written if asked, what it found printed;
/// the engine's log on standard error if RUST_LOG asks for it (without times: its clock
/// means nothing in virtual time).
fn replay_seed(cfg: SimConfig, trace_out: Option<PathBuf>) -> Result<()> {
    if let Ok(filter) = tracing_subscriber::EnvFilter::try_from_default_env() {
        tracing_subscriber::fmt().with_writer(std::io::stderr).without_time().with_env_filter(filter).init();
    }
    let s = cfg.seed;
    let out = run(cfg);
    if let Some(path) = trace_out {
        std::fs::write(&path, out.trace_jsonl()).with_context(|| format!("writing {}", path.display()))?;
        println!("trace of seed {s} written to {} ({} events)", path.display(), out.trace.len());
    }
    for v in &out.report.violations {
        print!("{v}");
    }
    for v in &out.app_violations {
        println!("app: {v}");
    }
    if out.anomalies > 0 {
        println!("engine anomalies: {}", out.anomalies);
    }
    if out.survivors == 0 {
        println!("the run ended in total failure: no process was a member at the end");
    }
    println!("{} passed, {} failed", u64::from(out.passed()), u64::from(!out.passed()));
    if !out.passed() {
        std::process::exit(1);
    }
    Ok(())
}

fn main() -> Result<()> {
    // Output into a pipe closed early (`synchrony status --watch | head -3`) ends the
    // command quietly, as for other Unix tools, instead of a panic in `println!`.
    #[cfg(unix)]
    // SAFETY: restoring the default disposition of SIGPIPE at start, before any thread.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    match Cli::parse_from(config_file::expand(std::env::args_os().collect())?).cmd {
        Cmd::Sim { seeds, start, seed, profile, nodes, groups, trace_out, threads, within_groups } => {
            let causality = if within_groups { Causality::WithinGroups } else { Causality::AcrossGroups };
            let prof = Profile::named(&profile)
                .with_context(|| format!("unknown profile {profile:?}; known: {}", Profile::NAMES.join(", ")))?;
            let (nodes, groups) = {
                let default = SimConfig::new(0, prof.clone());
                (nodes.unwrap_or(default.nodes), groups.unwrap_or(default.groups))
            };
            let shape = move |s: u64| SimConfig { nodes, groups, causality, ..SimConfig::new(s, prof.clone()) };
            if let Some(s) = seed {
                return replay_seed(shape(s), trace_out);
            }
            let threads = threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
            let next = Arc::new(AtomicU64::new(start));
            let failed = Arc::new(Mutex::new(Vec::new()));
            let events = Arc::new(AtomicU64::new(0));
            let dead = Arc::new(AtomicU64::new(0));
            let clock = WallClock::now();
            let workers: Vec<_> = (0..threads)
                .map(|_| {
                    let (next, failed, events, shape) = (next.clone(), failed.clone(), events.clone(), shape.clone());
                    let dead = dead.clone();
                    std::thread::spawn(move || loop {
                        let s = next.fetch_add(1, Ordering::SeqCst);
                        if s >= start + seeds {
                            break;
                        }
                        let out = run(shape(s));
                        events.fetch_add(out.trace.len() as u64, Ordering::Relaxed);
                        if out.survivors == 0 {
                            dead.fetch_add(1, Ordering::Relaxed);
                        }
                        if !out.passed() {
                            let first = out.first_problem().unwrap_or_default();
                            failed.lock().expect("lock").push((s, first));
                        }
                    })
                })
                .collect();
            for w in workers {
                w.join().expect("worker panicked");
            }
            let mut failed = failed.lock().expect("lock").clone();
            failed.sort();
            for (s, why) in &failed {
                println!("seed {s} failed: replay with `synchrony sim --seed {s} --profile {profile} --nodes {nodes} --groups {groups}`");
                print!("    {}", why.lines().next().unwrap_or(""));
                println!();
            }
            println!(
                "profile {profile}: {seeds} seeds, {} trace events, {:.1} s",
                events.load(Ordering::Relaxed),
                clock.elapsed().as_secs_f64()
            );
            let dead = dead.load(Ordering::Relaxed);
            if dead > 0 {
                println!("{dead} runs ended in total failure (no member left; recovery is the durability layer's job)");
            }
            println!("{} passed, {} failed", seeds - failed.len() as u64, failed.len());
            if !failed.is_empty() {
                std::process::exit(1);
            }
            Ok(())
        }
        Cmd::Check { quiescent, no_inferred_crashes, within_groups, traces } => {
            let mut all = Vec::new();
            for t in &traces {
                let text = std::fs::read_to_string(t).with_context(|| format!("reading {}", t.display()))?;
                all.extend(parse(&text).with_context(|| format!("parsing {}", t.display()))?);
            }
            let causality = if within_groups { Causality::WithinGroups } else { Causality::AcrossGroups };
            let infer_crashes = !no_inferred_crashes;
            let report = check(&all, &Options { quiescent, crash_bound_us: None, causality, infer_crashes });
            for v in &report.violations {
                print!("{v}");
            }
            for s in &report.skipped {
                println!("not checked: {s}");
            }
            for c in &report.inferred_crashes {
                println!("{c}");
            }
            println!(
                "{} events from {} processes: {} violations",
                report.events,
                report.processes,
                report.violations.len()
            );
            if !report.violations.is_empty() {
                bail!("the traces break the guarantees");
            }
            Ok(())
        }
        Cmd::Viz { traces, output, quiescent } => {
            let mut all = Vec::new();
            for t in &traces {
                let text = std::fs::read_to_string(t).with_context(|| format!("reading {}", t.display()))?;
                all.extend(parse(&text).with_context(|| format!("parsing {}", t.display()))?);
            }
            let written = write_diagram(&all, quiescent, &output)?;
            println!("{written}");
            Ok(())
        }
        Cmd::Demo(args) => demo::run_demo(args),
        Cmd::Bench(args) => bench::run_bench(args),
        // One thread: with the members and the machine's two cores, wake-ups across
        // threads cost more than they give (both sides of the bench run so).
        // Traffic members run on one thread, as the raw baseline's do; a groups-scale member
        // runs as `synchrony node` does (a worker per core), so that its connections' tasks
        // keep the peers hearing it while the driver is busy with one large input.
        Cmd::BenchMember(args) => {
            let threads = (args.mode() != "groups").then_some(0);
            tokio_main_on(bench::run_member(args), threads)
        }
        Cmd::Node(args) => tokio_main(node::run_node(args)),
        Cmd::Tool(args) => tokio_main(tool::run_tool(args)),
        Cmd::Load(args) => tokio_main(node::run_load(args)),
        Cmd::Status { addr, secret_file, json, watch } => tokio_main(node::run_status(addr, secret_file, json, watch)),
    }
}
