//! Twenty questions, the application of the Isis paper (Birman and Joseph, SOSP 1987,
//! section 5), rebuilt on synchrony.
//!
//! A database of objects (animals with a colour, a number of legs, a size and a habitat) is
//! replicated on a group of member processes. The first `--active` members (oldest first)
//! share the work: a *vertical* query ("what colour is object 17?") is answered by the one
//! member that owns the object (id mod active = rank); a *horizontal* query ("how many
//! grey four-legged land animals?") by every active member for its own rows, the caller
//! adding up the parts. The other members are *hot standbys*: they hold the data and send
//! null replies until an active member fails, when the next one in rank takes its share.
//! Updates are totally ordered with the queries, so every answer reflects exactly the
//! updates before it. A new member gets the database by state transfer, and a supervisor
//! restarts members (as new processes) up to the target count.
//!
//! `cargo run --release -p synchrony --example twenty_questions` starts the members as
//! separate processes, runs queries and updates from a client process while it SIGKILLs
//! members, and checks every answer against a non-replicated copy of the database. It
//! exits non-zero if any answer differs.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use synchrony::tools::{Core, Effects, GroupChannel, ToolError, ToolHandle};
use synchrony::{Config, Delivery, GroupView, JoinOptions, Node, Order, ProcessId, Replies};

const GROUP: &str = "twenty";
const COLOURS: [&str; 5] = ["red", "green", "blue", "brown", "grey"];
const HABITATS: [&str; 3] = ["land", "sea", "air"];

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Object {
    colour: String,
    legs: u8,
    habitat: String,
}

/// The database: objects by id.
type Db = BTreeMap<u32, Object>;

/// A tiny deterministic generator (the client and the check need the same sequence).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn pick<'a>(&mut self, of: &[&'a str]) -> &'a str {
        of[(self.next() % of.len() as u64) as usize]
    }
}

fn initial_db(objects: u32) -> Db {
    let mut r = Rng(0x2b1d_5eed);
    (0..objects)
        .map(|id| {
            let o = Object {
                colour: r.pick(&COLOURS).into(),
                legs: (r.next() % 5) as u8 * 2,
                habitat: r.pick(&HABITATS).into(),
            };
            (id, o)
        })
        .collect()
}

#[derive(Clone, Debug, Serialize, Deserialize)]
enum Request {
    /// Sets an object's colour (idempotent: a retried update does no harm).
    Update { id: u32, colour: String },
    /// What colour is object `id`? Its owner answers.
    Vertical { id: u32 },
    /// How many objects match? Every active member answers for its rows.
    Horizontal { colour: Option<String>, legs: Option<u8>, habitat: Option<String> },
}

#[derive(Debug, Serialize, Deserialize)]
struct Part {
    view: u64,
    rank: u32,
    active: u32,
    count: u32,
}

fn matches(o: &Object, colour: &Option<String>, legs: &Option<u8>, habitat: &Option<String>) -> bool {
    colour.as_ref().is_none_or(|c| *c == o.colour)
        && legs.is_none_or(|l| l == o.legs)
        && habitat.as_ref().is_none_or(|h| *h == o.habitat)
}

/// A member: the replicated database and its share of the work (a tool core of its own).
struct Member {
    me: ProcessId,
    db: Db,
    view: Option<GroupView>,
    active: usize,
}

impl Member {
    /// This member's rank among the active ones, if it is active.
    fn active_rank(&self) -> Option<(usize, usize)> {
        let v = self.view.as_ref()?;
        let k = self.active.min(v.members.len());
        let r = v.members.iter().position(|m| *m == self.me)?;
        (r < k).then_some((r, k))
    }
}

impl Core for Member {
    type Output = Nothing;

    fn on_view(&mut self, view: &GroupView, _fx: &mut Effects<Nothing>) {
        self.view = Some(view.clone());
    }

    fn on_message(&mut self, msg: &Delivery, fx: &mut Effects<Nothing>) {
        let Ok(req) = synchrony::decode::<Request>(&msg.payload) else { return };
        let answer = match req {
            Request::Update { id, colour } => {
                if let Some(o) = self.db.get_mut(&id) {
                    o.colour = colour;
                }
                Some(Bytes::from_static(b"ok"))
            }
            Request::Vertical { id } => match self.active_rank() {
                Some((r, k)) if id as usize % k == r => {
                    self.db.get(&id).map(|o| synchrony::encode(&o.colour).expect("encodes"))
                }
                _ => None, // not the owner, or a hot standby: a null reply
            },
            Request::Horizontal { colour, legs, habitat } => self.active_rank().map(|(r, k)| {
                let count = self
                    .db
                    .iter()
                    .filter(|(id, o)| **id as usize % k == r && matches(o, &colour, &legs, &habitat))
                    .count() as u32;
                let view = self.view.as_ref().map_or(0, |v| v.id.0);
                synchrony::encode(&Part { view, rank: r as u32, active: k as u32, count }).expect("encodes")
            }),
        };
        if msg.query {
            fx.reply(msg.id.clone(), answer);
        }
    }

    fn snapshot(&self) -> Bytes {
        synchrony::encode(&self.db).expect("encodes")
    }

    fn restore(&mut self, state: &[u8]) -> Result<(), ToolError> {
        self.db = synchrony::decode(state).map_err(|e| ToolError::Decode(e.to_string()))?;
        Ok(())
    }
}

/// A member tells its users nothing: it only answers.
#[derive(Clone, Debug)]
struct Nothing;

impl synchrony::tools::Keyed for Nothing {
    fn key(&self) -> Option<&synchrony::MsgId> {
        None
    }
}

fn config(name: &str, listen: &str, contact: Option<&str>) -> Config {
    let mut c = Config::new(name, listen);
    c.set_timeouts(Duration::from_millis(30), Duration::from_millis(300));
    c.contacts.extend(contact.map(String::from));
    c
}

/// `twenty_questions member NAME LISTEN CONTACT ACTIVE OBJECTS`: serves until killed.
async fn member(args: &[String]) -> anyhow::Result<()> {
    let [name, listen, contact, active, objects] = args else {
        anyhow::bail!("member NAME LISTEN CONTACT ACTIVE OBJECTS");
    };
    let node = Node::start(config(name, listen, Some(contact))).await?;
    let group = node.join(GROUP, JoinOptions::default()).await?;
    let me = group.me();
    // The first member starts the database; joiners replace it with the group's.
    let core = Member { me, db: initial_db(objects.parse()?), view: None, active: active.parse()? };
    let _tool = ToolHandle::start(group, core, None);
    std::future::pending::<()>().await;
    Ok(())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map_or(0, |a| a.port())
}

struct Cluster {
    contact: String,
    active: usize,
    objects: u32,
    members: Vec<(String, Child)>,
    started: usize,
}

impl Cluster {
    fn spawn(&mut self) -> anyhow::Result<()> {
        self.started += 1;
        let name = format!("m{}", self.started);
        let listen = format!("127.0.0.1:{}", free_port());
        let child = Command::new(std::env::current_exe()?)
            .args(["member", &name, &listen, &self.contact, &self.active.to_string(), &self.objects.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        self.members.push((name, child));
        Ok(())
    }

    /// Restarts members that exited, up to `target`.
    fn supervise(&mut self, target: usize) -> anyhow::Result<usize> {
        self.members.retain_mut(|(_, c)| c.try_wait().ok().flatten().is_none());
        let mut restarted = 0;
        while self.members.len() < target {
            self.spawn()?;
            restarted += 1;
        }
        Ok(restarted)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for (_, c) in &mut self.members {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Asks until the answer is complete: a member that fails before it answers makes the
/// query run again in the next view.
async fn ask(node: &Node, req: &Request, reruns: &mut u32) -> anyhow::Result<Vec<Bytes>> {
    let payload = synchrony::encode(req)?;
    for _ in 0..50 {
        let want = if matches!(req, Request::Update { .. }) { Replies::One } else { Replies::All };
        let out = match node.query(GROUP, Order::Total, payload.clone(), want).await {
            Ok(o) => o,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                *reruns += 1;
                continue;
            }
        };
        let replies: Vec<Bytes> = out.replies.into_iter().map(|(_, b)| b).collect();
        let complete = match req {
            Request::Update { .. } => !replies.is_empty(),
            Request::Vertical { .. } => replies.len() == 1,
            Request::Horizontal { .. } => {
                let parts: Vec<Part> = replies.iter().filter_map(|b| synchrony::decode(b).ok()).collect();
                let k = parts.first().map_or(0, |p| p.active as usize);
                let mut ranks: Vec<u32> = parts.iter().map(|p| p.rank).collect();
                ranks.sort_unstable();
                k > 0 && ranks == (0..k as u32).collect::<Vec<_>>() && parts.iter().all(|p| p.view == parts[0].view)
            }
        };
        if complete && out.failed.is_empty() {
            return Ok(replies);
        }
        *reruns += 1;
    }
    anyhow::bail!("no complete answer to {req:?} after 50 tries")
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("member") {
        return member(&args[1..]).await;
    }
    let opt = |name: &str, default: u64| -> u64 {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let (target, active, ops, kills, objects) = (
        opt("--members", 4) as usize,
        opt("--active", 3) as usize,
        opt("--ops", 400),
        opt("--kills", 3),
        opt("--objects", 200) as u32,
    );
    let client = Node::start(config("client", "127.0.0.1:0", None)).await?;
    let mut cluster =
        Cluster { contact: client.listen_addr().to_string(), active, objects, members: Vec::new(), started: 0 };
    println!("twenty questions: {objects} objects, {target} members ({active} active, the rest hot standbys)");
    for _ in 0..target {
        cluster.spawn()?;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut db = initial_db(objects);
    let mut r = Rng(opt("--seed", 7) | 1);
    let (mut vertical, mut horizontal, mut updates, mut reruns, mut killed, mut restarted) = (0, 0, 0, 0, 0u64, 0);
    let kill_every = (ops / (kills + 1)).max(1);
    let started = Instant::now();
    for op in 0..ops {
        if op > 0 && op % kill_every == 0 && killed < kills {
            let k = (r.next() % cluster.members.len() as u64) as usize;
            let (name, child) = &mut cluster.members[k];
            child.kill()?;
            let _ = child.wait();
            killed += 1;
            println!("  SIGKILL {name} while queries run");
        }
        let n = cluster.supervise(target)?;
        if n > 0 {
            restarted += n;
            println!(
                "  the supervisor restarted {n} member(s): {} joins with state transfer",
                cluster.members.last().map_or("?", |m| m.0.as_str())
            );
        }
        let req = match r.next() % 5 {
            0 => {
                let id = (r.next() % u64::from(objects)) as u32;
                Request::Update { id, colour: r.pick(&COLOURS).into() }
            }
            1 | 2 => Request::Vertical { id: (r.next() % u64::from(objects)) as u32 },
            _ => Request::Horizontal {
                colour: r.next().is_multiple_of(2).then(|| r.pick(&COLOURS).to_string()),
                legs: r.next().is_multiple_of(2).then(|| (r.next() % 5) as u8 * 2),
                habitat: r.next().is_multiple_of(2).then(|| r.pick(&HABITATS).to_string()),
            },
        };
        // A steady pace, so that queries are in flight while members fail and join.
        tokio::time::sleep(Duration::from_millis(opt("--pause-ms", 5))).await;
        let replies = ask(&client, &req, &mut reruns).await?;
        match &req {
            Request::Update { id, colour } => {
                if let Some(o) = db.get_mut(id) {
                    o.colour.clone_from(colour);
                }
                updates += 1;
            }
            Request::Vertical { id } => {
                let got: String = synchrony::decode(&replies[0])?;
                let want = &db[id].colour;
                if got != *want {
                    anyhow::bail!("object {id}: the group says {got}, the database says {want}");
                }
                vertical += 1;
            }
            Request::Horizontal { colour, legs, habitat } => {
                let got: u32 = replies.iter().filter_map(|b| synchrony::decode::<Part>(b).ok()).map(|p| p.count).sum();
                let want = db.values().filter(|o| matches(o, colour, legs, habitat)).count() as u32;
                if got != want {
                    anyhow::bail!("{req:?}: the group counts {got}, the database {want}");
                }
                horizontal += 1;
            }
        }
    }
    println!(
        "{vertical} vertical and {horizontal} horizontal queries and {updates} updates in {:.1} s; {killed} members \
         killed and {restarted} restarted; {reruns} queries asked again after a failure",
        started.elapsed().as_secs_f64()
    );
    println!("every answer matched the non-replicated database");
    let _ = client.shutdown().await;
    Ok(())
}
