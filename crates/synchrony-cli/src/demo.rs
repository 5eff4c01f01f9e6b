//! `synchrony demo`: a local cluster of separate processes on loopback, with a member
//! killed, a joiner, a member paused past the failure timeout, narrated as it happens and
//! checked at the end. The multi-process tests run it too (with a secret and intruders).

use anyhow::{bail, Context, Result};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use synchrony_check::{check, Options};
use synchrony_trace::{parse, EventKind, TraceEvent};

/// What the demo does besides the basic run.
#[derive(clap::Args, Clone, Debug, Default)]
pub(crate) struct DemoArgs {
    /// Run the cluster with a shared secret (every frame authenticated).
    #[arg(long)]
    pub(crate) secret: bool,
    /// Also start an intruder with the wrong secret and a process that sends garbage
    /// bytes, and show that neither gets in (implies --secret).
    #[arg(long)]
    pub(crate) intruders: bool,
    /// Keep the traces in this directory (default: a temporary one, removed at the end).
    #[arg(long)]
    pub(crate) keep: Option<PathBuf>,
}

const GROUP: &str = "demo";
const FAILURE_TIMEOUT: &str = "300ms";
const ORDERS: [&str; 6] = ["fifo,causal", "total,safe", "causal,total", "safe,fifo", "unordered,total", "causal,safe"];

/// The processes the demo started; all are killed when it ends, however it ends.
struct Procs {
    exe: PathBuf,
    dir: PathBuf,
    secret: Option<PathBuf>,
    children: Vec<(String, Child)>,
    ports: BTreeMap<String, u16>,
    /// What each tool process printed (JSON lines).
    tool_lines: BTreeMap<String, Arc<Mutex<Vec<serde_json::Value>>>>,
}

impl Drop for Procs {
    fn drop(&mut self) {
        for (_, c) in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

pub(crate) fn signal(child: &Child, sig: &str) -> Result<()> {
    let ok = Command::new("kill").arg(format!("-{sig}")).arg(child.id().to_string()).status()?.success();
    if !ok {
        bail!("kill -{sig} {} failed", child.id());
    }
    Ok(())
}

impl Procs {
    fn addr(&self, name: &str) -> String {
        format!("127.0.0.1:{}", self.ports[name])
    }

    fn trace(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.jsonl"))
    }

    /// Starts `synchrony load` as `name`, through `contact` (none: it founds the cluster).
    fn start_load(&mut self, name: &str, contact: Option<&str>, orders: &str, duration: &str) -> Result<()> {
        let port = free_port()?;
        self.ports.insert(name.to_string(), port);
        let mut cmd = Command::new(&self.exe);
        cmd.args(["load", "--name", name, "--listen", &self.addr(name), "--group", GROUP, "--order", orders]);
        cmd.args(["--rate", "200", "--size", "100", "--duration", duration, "--rejoin"]);
        cmd.args(["--failure-timeout", FAILURE_TIMEOUT]);
        cmd.arg("--trace").arg(self.trace(name));
        cmd.arg("--data-dir").arg(self.dir.join(name));
        if let Some(c) = contact {
            cmd.args(["--contact", &self.addr(c)]);
        }
        if let Some(s) = &self.secret {
            cmd.arg("--secret-file").arg(s);
        }
        cmd.stdout(Stdio::null()).stderr(Stdio::null());
        let child = cmd.spawn().with_context(|| format!("starting {}", self.exe.display()))?;
        self.children.push((name.to_string(), child));
        Ok(())
    }

    /// Starts `synchrony tool --tool showcase` as `name` (the replicated map and the lock),
    /// joining the cluster through n1; its JSON lines are kept.
    fn start_tool(&mut self, name: &str, extra: &[&str]) -> Result<()> {
        let port = free_port()?;
        self.ports.insert(name.to_string(), port);
        let mut cmd = Command::new(&self.exe);
        cmd.args(["tool", "--tool", "showcase", "--name", name, "--listen", &self.addr(name)]);
        cmd.args(["--contact", &self.addr("n1"), "--failure-timeout", FAILURE_TIMEOUT, "--exit-after", "30s"]);
        cmd.args(["--ops", "60", "--every", "30ms"]).args(extra);
        if let Some(s) = &self.secret {
            cmd.arg("--secret-file").arg(s);
        }
        cmd.stdout(Stdio::piped()).stderr(Stdio::null());
        let mut child = cmd.spawn().with_context(|| format!("starting {}", self.exe.display()))?;
        let out = child.stdout.take().context("the tool's output")?;
        let lines: Arc<Mutex<Vec<serde_json::Value>>> = Arc::default();
        let sink = lines.clone();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str(&line) {
                    sink.lock().unwrap_or_else(|e| e.into_inner()).push(v);
                }
            }
        });
        self.tool_lines.insert(name.to_string(), lines);
        self.children.push((name.to_string(), child));
        Ok(())
    }

    /// The lines tool process `name` printed with `"event": kind`.
    fn tool_events(&self, name: &str, kind: &str) -> Vec<serde_json::Value> {
        let Some(lines) = self.tool_lines.get(name) else { return Vec::new() };
        let lines = lines.lock().unwrap_or_else(|e| e.into_inner());
        lines.iter().filter(|v| v["event"] == kind).cloned().collect()
    }

    fn child(&self, name: &str) -> &Child {
        &self.children.iter().find(|(n, _)| n == name).expect("started").1
    }
}

/// The `crash` event a harness writes for a process it killed at `killed_us` (TRACE.md):
/// after the last event of the incarnation whose id starts with `prefix` (`NAME#`).
pub(crate) fn crash_event(events: &[TraceEvent], prefix: &str, killed_us: u64) -> Option<TraceEvent> {
    let last = events.iter().filter(|e| e.p.starts_with(prefix)).max_by_key(|e| (e.t, e.i))?;
    Some(TraceEvent {
        p: last.p.clone(),
        i: last.i + 1,
        t: last.t.max(killed_us),
        ..TraceEvent::bare(EventKind::Crash)
    })
}

/// Follows the trace files and tells what they show.
struct Narrator {
    start: Instant,
    offsets: BTreeMap<PathBuf, u64>,
    events: Vec<TraceEvent>,
    views: BTreeMap<u64, Vec<String>>,
    last_members: Vec<String>,
    delivered: BTreeMap<String, u64>,
    state_sent: BTreeSet<(Option<u64>, Option<String>)>,
    verbose: bool,
}

impl Narrator {
    fn say(&self, what: &str) {
        if self.verbose {
            println!("[{:>5.1} s] {what}", self.start.elapsed().as_secs_f64());
        }
    }

    fn read_new(&mut self, files: &[PathBuf]) {
        for f in files {
            let Ok(mut file) = std::fs::File::open(f) else { continue };
            let off = self.offsets.entry(f.clone()).or_default();
            if file.seek(SeekFrom::Start(*off)).is_err() {
                continue;
            }
            let mut text = String::new();
            if file.read_to_string(&mut text).is_err() {
                continue;
            }
            let complete = text.rfind('\n').map_or(0, |i| i + 1);
            *off += complete as u64;
            let new = parse(&text[..complete]).unwrap_or_default();
            for e in new {
                self.narrate(&e);
                self.events.push(e);
            }
        }
    }

    fn narrate(&mut self, e: &TraceEvent) {
        match e.ev {
            EventKind::View => {
                let (id, members) = (e.view.unwrap_or(0), e.members.clone().unwrap_or_default());
                if self.views.insert(id, members.clone()).is_none() {
                    let gone: Vec<&String> = self.last_members.iter().filter(|m| !members.contains(m)).collect();
                    let new: Vec<&String> = members.iter().filter(|m| !self.last_members.contains(m)).collect();
                    let mut what = format!("view {id} of {GROUP}: [{}]", members.join(", "));
                    if !new.is_empty() {
                        what += &format!("  + {}", new.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", "));
                    }
                    if !gone.is_empty() {
                        what += &format!("  - {}", gone.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", "));
                    }
                    self.say(&what);
                    self.last_members = members;
                }
            }
            // Every old member makes the checkpoint (any of them can finish the transfer).
            EventKind::StateSent if self.state_sent.insert((e.view, e.to.clone())) => self.say(&format!(
                "{} and the other members produced the state for {} (digest {})",
                e.p,
                e.to.as_deref().unwrap_or("?"),
                e.digest.as_deref().unwrap_or("?")
            )),
            EventKind::State => self.say(&format!(
                "{} loaded the state by state transfer (digest {}); it delivers from here on",
                e.p,
                e.digest.as_deref().unwrap_or("?")
            )),
            EventKind::Partitioned => self.say(&format!(
                "{} found it was excluded while paused: it stops delivering (G10) and rejoins as a new incarnation",
                e.p
            )),
            EventKind::Deliver => *self.delivered.entry(e.p.clone()).or_default() += 1,
            _ => {}
        }
    }

    fn rates(&mut self) {
        if !self.delivered.is_empty() {
            let parts: Vec<String> = self.delivered.iter().map(|(p, n)| format!("{p} {n}")).collect();
            self.say(&format!("delivered in the last second: {}", parts.join(", ")));
        }
        self.delivered.clear();
    }
}

/// Waits `d`, narrating meanwhile.
fn wait(n: &mut Narrator, files: &[PathBuf], d: Duration, last_rate: &mut Instant) {
    let until = Instant::now() + d;
    while Instant::now() < until {
        std::thread::sleep(Duration::from_millis(100));
        n.read_new(files);
        if last_rate.elapsed() >= Duration::from_secs(1) {
            n.rates();
            *last_rate = Instant::now();
        }
    }
}

fn status_of(exe: &Path, addr: &str, secret: Option<&Path>) -> Result<String> {
    let mut cmd = Command::new(exe);
    cmd.args(["status", addr]);
    if let Some(s) = secret {
        cmd.arg("--secret-file").arg(s);
    }
    let out = cmd.output()?;
    if !out.status.success() {
        bail!("synchrony status {addr} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).to_string())
}

/// Checks and tells what the tool processes did: equal maps holding every acknowledged put,
/// and lock holds that never overlapped.
fn tools_verdict(procs: &Procs, n: &Narrator, killed_micros: u64) -> Result<()> {
    let maps: Vec<serde_json::Value> =
        ["t1", "t2"].iter().filter_map(|t| procs.tool_events(t, "map").last().cloned()).collect();
    let acked: usize =
        ["t1", "t2"].iter().map(|t| procs.tool_events(t, "put").iter().filter(|p| p["ok"] == true).count()).sum();
    if maps.len() != 2 || maps[0]["digest"] != maps[1]["digest"] {
        bail!("the replicated map differs between t1 and t2: {maps:?}");
    }
    let len = maps[0]["len"].as_u64().unwrap_or(0) as usize;
    if len < acked {
        bail!("the replicated map lost acknowledged puts ({len} entries, {acked} acknowledged)");
    }
    n.say(&format!(
        "the replicated map: t1 and t2 hold the same {len} entries (digest {}), with all {acked} puts acknowledged to them",
        maps[0]["digest"].as_str().unwrap_or("?")
    ));
    let mut holds: Vec<(u64, u64)> = Vec::new();
    for t in ["t1", "t2"] {
        let g = procs.tool_events(t, "granted");
        let r = procs.tool_events(t, "released");
        holds.extend(
            g.iter().zip(&r).map(|(g, r)| (g["at_us"].as_u64().unwrap_or(0), r["at_us"].as_u64().unwrap_or(0))),
        );
    }
    holds.sort_unstable();
    if holds.windows(2).any(|w| w[0].1 > w[1].0) || holds.first().is_some_and(|h| h.0 < killed_micros) {
        bail!("two processes held the lock at once");
    }
    n.say(&format!("the lock: {} holds by t1 and t2 after t3's failure, never two at once", holds.len()));
    Ok(())
}

/// Runs the demo. Returns an error (and the command exits non-zero) if a check fails.
pub(crate) fn run_demo(args: DemoArgs) -> Result<()> {
    let mut d = Demo::new(&args)?;
    println!("synchrony demo: separate processes on loopback, one group `{GROUP}`, every order class.");
    println!(
        "Each process is `synchrony load`: it sends 200 messages a second and its state is the set of messages it has"
    );
    println!("delivered. Failure timeout {FAILURE_TIMEOUT}. Traces in {}.\n", d.dir.display());
    d.start_cluster()?;
    if args.intruders {
        d.intruders()?;
    }
    let killed_micros = d.kill_members()?;
    d.join_and_pause()?;
    d.settle(args.intruders)?;
    tools_verdict(&d.procs, &d.n, killed_micros)?;
    d.stop_all()?;
    d.verdict(args.keep.as_deref())
}

/// One run of the demo: its processes, what it narrates, the traces it reads.
struct Demo {
    dir: PathBuf,
    secret: Option<PathBuf>,
    procs: Procs,
    n: Narrator,
    files: Vec<PathBuf>,
    last_rate: Instant,
}

impl Demo {
    fn new(args: &DemoArgs) -> Result<Self> {
        let dir = match &args.keep {
            Some(d) => d.clone(),
            None => std::env::temp_dir().join(format!("synchrony-demo-{}", std::process::id())),
        };
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let secret = if args.secret || args.intruders {
            let p = dir.join("secret");
            std::fs::write(&p, format!("demo-secret-{}", std::process::id()))?;
            Some(p)
        } else {
            None
        };
        let procs = Procs {
            exe: std::env::current_exe()?,
            dir: dir.clone(),
            secret: secret.clone(),
            children: Vec::new(),
            ports: BTreeMap::new(),
            tool_lines: BTreeMap::new(),
        };
        let n = Narrator {
            start: Instant::now(),
            offsets: BTreeMap::new(),
            events: Vec::new(),
            views: BTreeMap::new(),
            last_members: Vec::new(),
            delivered: BTreeMap::new(),
            state_sent: BTreeSet::new(),
            verbose: true,
        };
        Ok(Self { dir, secret, procs, n, files: Vec::new(), last_rate: Instant::now() })
    }

    /// Narrates what the traces show for `d`.
    fn wait(&mut self, d: Duration) {
        wait(&mut self.n, &self.files, d, &mut self.last_rate);
    }

    /// n1..n5 under load, and the tools' three processes, t3 holding the lock.
    fn start_cluster(&mut self) -> Result<()> {
        let names = ["n1", "n2", "n3", "n4", "n5"];
        self.procs.start_load("n1", None, ORDERS[0], "12")?;
        self.files.push(self.procs.trace("n1"));
        self.wait(Duration::from_millis(600));
        for (k, name) in names.iter().enumerate().skip(1) {
            self.procs.start_load(name, Some("n1"), ORDERS[k], "12")?;
            self.files.push(self.procs.trace(name));
        }
        self.n.say("started n1 (it founds the cluster) and n2..n5 (they join through n1)");
        self.wait(Duration::from_millis(500));
        // The tools: a replicated map and a lock, in three more processes of the same cluster.
        self.procs.start_tool("t3", &["--hold-forever"])?;
        self.wait(Duration::from_millis(300));
        self.procs.start_tool("t1", &["--delay", "1s"])?;
        self.procs.start_tool("t2", &["--delay", "1s"])?;
        self.n
            .say("started t1, t2, t3: each puts 60 entries into a replicated map (tools.map); t3 takes the lock `res`");
        self.n.say("and keeps it, t1 and t2 then queue for it (tools.lock, FIFO, released if a holder fails)");
        self.wait(Duration::from_millis(2200));
        if self.procs.tool_events("t3", "granted").is_empty() {
            bail!("t3 did not get the lock");
        }
        Ok(())
    }

    /// An intruder with the wrong secret, and garbage bytes: both refused.
    fn intruders(&mut self) -> Result<()> {
        self.n.say("an intruder with the wrong secret tries to join, and a process sends garbage bytes to n1");
        let wrong = self.dir.join("wrong-secret");
        std::fs::write(&wrong, "not-the-secret")?;
        let port = free_port()?;
        let mut intruder = Command::new(&self.procs.exe)
            .args(["node", "--name", "intruder", "--listen", &format!("127.0.0.1:{port}"), "--join", GROUP])
            .args(["--contact", &self.procs.addr("n1"), "--join-timeout", "2s"])
            .arg("--secret-file")
            .arg(&wrong)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let mut garbage = std::net::TcpStream::connect(self.procs.addr("n1"))?;
        let _ = garbage.write_all(b"\x00\x00\x00\x10GET / HTTP/1.1\r\n\r\nthis is not a frame");
        let _ = garbage.write_all(&[0xff; 64]);
        drop(garbage);
        self.wait(Duration::from_millis(2500));
        if intruder.wait()?.success() {
            bail!("the intruder with the wrong secret got in");
        }
        self.n.say("the intruder gave up: it could not join without the secret");
        Ok(())
    }

    /// SIGKILL n5, and t3 while it holds the lock: its permit must come back. Returns when
    /// (microseconds since the epoch) they were killed.
    fn kill_members(&mut self) -> Result<u64> {
        self.n.say("SIGKILL n5, and t3 while it holds the lock");
        // Taken before the signals: a failure on loopback is seen within milliseconds.
        let killed_micros =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64);
        signal(self.procs.child("n5"), "KILL")?;
        signal(self.procs.child("t3"), "KILL")?;
        self.wait(Duration::from_secs(2));
        let procs = &self.procs;
        let first = ["t1", "t2"]
            .iter()
            .flat_map(|t| {
                procs.tool_events(t, "granted").into_iter().map(move |g| (g["at_us"].as_u64().unwrap_or(0), *t))
            })
            .min();
        match first {
            Some((at, t)) if at > killed_micros => self.n.say(&format!(
                "the lock: t3's permit came back when it was excluded; {t} got the lock {} ms after the kill",
                (at - killed_micros) / 1000
            )),
            Some((at, t)) => bail!(
                "{t} held the lock at {at} while t3 still had it (killed at {killed_micros}; t3 granted {:?})",
                self.procs.tool_events("t3", "granted")
            ),
            None => bail!("t3's lock never came back after it was killed"),
        }
        Ok(killed_micros)
    }

    /// n6 joins under load (state transfer); n4 is SIGSTOPped past the failure timeout.
    fn join_and_pause(&mut self) -> Result<()> {
        self.n.say("starting n6, which joins during the traffic and gets the state by state transfer");
        self.procs.start_load("n6", Some("n1"), "total,causal", "8")?;
        self.files.push(self.procs.trace("n6"));
        self.wait(Duration::from_secs(2));
        self.n.say("SIGSTOP n4 for 1.5 s (five times the failure timeout)");
        signal(self.procs.child("n4"), "STOP")?;
        self.wait(Duration::from_millis(1500));
        self.n.say("SIGCONT n4");
        signal(self.procs.child("n4"), "CONT")?;
        self.wait(Duration::from_secs(3));
        Ok(())
    }

    /// The cluster settles; n1's status (with intruders: its counted rejections).
    fn settle(&mut self, intruders: bool) -> Result<()> {
        self.n.say("traffic is over; letting the cluster settle");
        self.wait(Duration::from_secs(3));
        let status = status_of(&self.procs.exe, &self.procs.addr("n1"), self.secret.as_deref())?;
        if !intruders {
            println!("\n`synchrony status {}`:\n{status}", self.procs.addr("n1"));
            return Ok(());
        }
        let rejected = status.lines().find(|l| l.contains("rejected:")).unwrap_or("").to_string();
        self.n.say(&format!("n1's status shows the rejections: {}", rejected.trim()));
        let refused = |what: &str| {
            rejected
                .split(',')
                .find(|p| p.contains(what))
                .and_then(|p| p.split_whitespace().find_map(|w| w.parse::<u64>().ok()))
        };
        if refused("handshakes refused").unwrap_or(0) == 0 || refused("bad frames").unwrap_or(0) == 0 {
            bail!("n1 did not count the intruders' rejections: {rejected}");
        }
        Ok(())
    }

    /// Stops the others (SIGTERM). The killed process's trace just ends (a SIGKILL writes
    /// nothing): the checker takes it as crashed there, as TRACE.md says.
    fn stop_all(&mut self) -> Result<()> {
        for (name, c) in &self.procs.children {
            if name != "n5" && name != "t3" {
                signal(c, "TERM")?;
            }
        }
        for (_, c) in &mut self.procs.children {
            let _ = c.wait();
        }
        self.procs.children.clear();
        self.n.read_new(&self.files);
        Ok(())
    }

    /// Every trace through the checker, and the run's diagram.
    fn verdict(self, keep: Option<&Path>) -> Result<()> {
        let events = &self.n.events;
        let report = check(events, &Options { quiescent: true, crash_bound_us: None, ..Default::default() });
        let processes: BTreeSet<&str> = events.iter().map(|e| e.p.as_str()).collect();
        println!();
        for v in &report.violations {
            print!("{v}");
        }
        for c in &report.inferred_crashes {
            println!("{c}");
        }
        let delivered = events.iter().filter(|e| e.ev == EventKind::Deliver).count();
        if !report.inferred_crashes.iter().any(|c| c.process.starts_with("n5#")) {
            bail!("the checker did not find that n5 was killed (kept in {})", self.dir.display());
        }
        let verdict = if report.violations.is_empty() {
            "every guarantee holds (G1 to G13, quiescent)".to_string()
        } else {
            format!("{} violations", report.violations.len())
        };
        println!(
            "checked {} trace events from {} processes ({delivered} deliveries): {verdict}",
            report.events,
            processes.len()
        );
        let diagram = match keep {
            Some(d) => d.join("run.html"),
            None => std::env::temp_dir().join(format!("synchrony-demo-{}.html", std::process::id())),
        };
        match crate::write_diagram(events, true, &diagram) {
            Ok(_) => println!("the run's time-space diagram: {} (open it in a browser)", diagram.display()),
            Err(e) => println!("could not draw the run: {e:#}"),
        }
        if keep.is_none() && report.violations.is_empty() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
        if !report.violations.is_empty() {
            bail!("the traces break the guarantees (kept in {})", self.dir.display());
        }
        Ok(())
    }
}
