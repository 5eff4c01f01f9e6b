//! The tools between nodes in one process, over real TCP on loopback: every tool's wrapper
//! on the public API.

use std::collections::BTreeMap;
use std::time::Duration;
use synchrony::tools::{self, Apply, Handler, Share, ToolError};
use synchrony::{JoinOptions, Node};
use tokio::time::{sleep, timeout};

mod common;

use common::node;

async fn cluster(n: usize) -> Vec<Node> {
    let first = node("n1", None).await;
    let mut nodes = vec![first];
    for i in 2..=n {
        let next = node(&format!("n{i}"), Some(&nodes[0])).await;
        nodes.push(next);
    }
    nodes
}

/// Polls `f` until it holds (or panics after 10 s).
async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..200 {
        if f() {
            return;
        }
        sleep(Duration::from_millis(50)).await;
    }
    panic!("{what} did not happen within 10 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicated_map_converges_and_a_joiner_gets_it() {
    timeout(Duration::from_secs(60), async {
        let nodes = cluster(3).await;
        let mut maps = Vec::new();
        for n in &nodes {
            let g = n.join("inventory", JoinOptions::default()).await.expect("joins");
            maps.push(tools::ReplicatedMap::<String, u64>::start(g));
        }
        // Concurrent writers: every replica applies the same order.
        let mut writers = Vec::new();
        for (i, m) in maps.iter().enumerate() {
            let m = m.clone();
            writers.push(tokio::spawn(async move {
                for k in 0..20u64 {
                    m.put(format!("k{}", k % 7), i as u64 * 100 + k).await.expect("put");
                }
            }));
        }
        for w in writers {
            w.await.expect("writer");
        }
        eventually("replicas converge", || maps.iter().all(|m| m.applied() == 60)).await;
        let first = maps[0].to_map();
        assert!(maps.iter().all(|m| m.to_map() == first), "replicas differ");
        // Under the lock, causal updates.
        let lock = maps[1].lock(Some(Duration::from_secs(5))).await.expect("locks");
        maps[1].put_locked(&lock, "locked".into(), 7).await.expect("put");
        maps[1].unlock(lock).await.expect("unlocks");
        eventually("the locked update everywhere", || maps.iter().all(|m| m.get(&"locked".into()) == Some(7))).await;
        // A joiner receives the map by state transfer.
        let late = node("n4", Some(&nodes[0])).await;
        let g = late.join("inventory", JoinOptions::default()).await.expect("joins");
        let joined = tools::ReplicatedMap::<String, u64>::start(g);
        // `ready` returns once the state is loaded: a read right after it sees the map.
        timeout(Duration::from_secs(10), joined.ready()).await.expect("ready in time").expect("ready");
        assert_eq!(joined.to_map(), maps[0].to_map(), "read right after ready");
        let view = joined.view().expect("a view");
        assert_eq!(view.members.len(), 4, "the joiner sees the group's view: {view:?}");
        // The founder's tool was ready at once.
        maps[0].ready().await.expect("ready");
        for n in nodes.iter().chain([&late]) {
            let _ = n.shutdown().await;
        }
    })
    .await
    .expect("within 60 s");
}

#[derive(Default, serde::Serialize, serde::Deserialize)]
struct Counter(i64);

impl Apply for Counter {
    type Update = i64;
    fn apply(&mut self, by: &i64) {
        self.0 += by;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locks_queue_time_out_and_pass_on() {
    timeout(Duration::from_secs(60), async {
        let nodes = cluster(3).await;
        let mut locks = Vec::new();
        for n in &nodes {
            let g = n.join("locks", JoinOptions::default()).await.expect("joins");
            locks.push(tools::Locks::start(g));
        }
        let held = locks[0].acquire("printer").await.expect("free");
        let waited = locks[1].acquire("printer").timeout(Duration::from_millis(300)).await;
        assert!(matches!(waited, Err(ToolError::Timeout)), "{waited:?}");
        let l2 = locks[2].clone();
        let second = tokio::spawn(async move { l2.acquire("printer").timeout(Duration::from_secs(10)).await });
        sleep(Duration::from_millis(200)).await;
        locks[0].release(held).await.expect("releases");
        let p = second.await.expect("task").expect("granted after the release");
        eventually("every replica knows the holder", || {
            locks.iter().all(|l| l.holders("printer") == vec![p.request().clone()])
        })
        .await;
        // A dropped permit is released (in the background).
        drop(p);
        eventually("the dropped permit is free again", || locks.iter().all(|l| l.holders("printer").is_empty())).await;
        // A replicated value of the user's own type.
        let g = nodes[0].join("counter", JoinOptions::default()).await.expect("joins");
        let counter: tools::Replicated<Counter> = tools::Replicated::start(g);
        counter.update(&5).await.expect("update");
        counter.update(&-2).await.expect("update");
        assert_eq!(counter.read(|c| c.0), 3);
        for n in &nodes {
            let _ = n.shutdown().await;
        }
    })
    .await
    .expect("within 60 s");
}

struct Rows(Vec<u64>);

impl Share for Rows {
    fn answer(&mut self, _query: &[u8], rank: usize, n: usize) -> bytes::Bytes {
        let sum: u64 = self.0.iter().enumerate().filter(|(i, _)| i % n == rank).map(|(_, v)| v).sum();
        sum.to_le_bytes().to_vec().into()
    }
}

struct Echo(String);

impl Handler for Echo {
    fn execute(&mut self, request: &[u8]) -> bytes::Bytes {
        format!("{} by {}", String::from_utf8_lossy(request), self.0).into()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configuration_news_parallel_query_and_coordinator_cohort() {
    timeout(Duration::from_secs(60), async {
        let nodes = cluster(3).await;
        // Configuration: a change, then an application message, seen under one version.
        let mut configs = Vec::new();
        for n in &nodes {
            let g = n.join("config", JoinOptions::default()).await.expect("joins");
            configs.push(tools::ConfigHandle::start(g));
        }
        let v = configs[0].0.set("mode", "fast").await.expect("set");
        configs[1].0.sender().send(synchrony::Order::Fifo, "hello").await.expect("sends");
        for (_, rx) in configs.iter_mut() {
            loop {
                match rx.recv().await.expect("runs") {
                    tools::ConfigOutput::Message { version, .. } => {
                        assert_eq!(version, v);
                        break;
                    }
                    tools::ConfigOutput::Changed { .. } => {}
                }
            }
        }
        assert!(configs.iter().all(|(c, _)| c.get("mode").as_deref() == Some("fast")));
        // News on 2 channels.
        let mut services = Vec::new();
        for n in &nodes {
            let mut channels = Vec::new();
            for k in 0..2 {
                channels.push(n.join(tools::channel_group("market", k), JoinOptions::default()).await.expect("joins"));
            }
            services.push(tools::NewsService::start(channels));
        }
        let mut acme = services[2].subscribe("prices.*");
        let mut weather = services[1].subscribe("weather.paris");
        for i in 0..5u8 {
            services[0].post("prices.acme", &[i]).await.expect("posts");
            services[1].post("weather.paris", b"rain").await.expect("posts");
        }
        for i in 0..5u8 {
            let p = acme.recv().await.expect("posting");
            assert_eq!((p.subject.as_str(), &p.body[..]), ("prices.acme", &[i][..]));
        }
        assert_eq!(&weather.recv().await.expect("posting").body[..], b"rain");
        // Parallel query: three shares of 0..1000.
        let mut pqs = Vec::new();
        for n in &nodes {
            let g = n.join("rows", JoinOptions::default()).await.expect("joins");
            pqs.push(tools::ParallelQueries::start(g, n.id().clone(), Rows((0..1000).collect())));
        }
        sleep(Duration::from_millis(300)).await;
        let answer = pqs[0].query(b"sum").await.expect("answered");
        let total: u64 = answer.parts.iter().map(|p| u64::from_le_bytes(p[..8].try_into().expect("8 bytes"))).sum();
        assert_eq!((answer.parts.len(), total), (3, 499_500));
        // Coordinator-cohort: every call gets one reply, from a member on the caller's
        // machine if there is one, else from one spread by hash.
        let mut services = Vec::new();
        for (i, n) in nodes.iter().enumerate() {
            let g = n.join("service", JoinOptions::default()).await.expect("joins");
            services.push(tools::CohortService::start(
                g,
                n.id().clone(),
                &format!("host{i}"),
                Echo(n.id().to_string()),
            ));
        }
        sleep(Duration::from_millis(300)).await;
        let by = |r: bytes::Bytes| String::from_utf8_lossy(&r).split(" by ").nth(1).unwrap_or_default().to_string();
        for (i, s) in services.iter().enumerate() {
            let r = s.call(b"local").await.expect("one reply");
            assert_eq!(by(r), nodes[i].id().to_string(), "the member on the caller's machine coordinates");
        }
        let mut spread = BTreeMap::new();
        for i in 0..30 {
            let r = tools::cohort_call(services[0].sender(), "elsewhere", format!("req{i}").as_bytes())
                .await
                .expect("one reply");
            assert!(String::from_utf8_lossy(&r).starts_with(&format!("req{i} by ")));
            *spread.entry(by(r)).or_insert(0) += 1;
        }
        assert!(spread.len() >= 2, "the coordinators were not spread: {spread:?}");
        for n in &nodes {
            let _ = n.shutdown().await;
        }
    })
    .await
    .expect("within 60 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logged_map_comes_back_from_its_log_after_every_member_stopped() {
    timeout(Duration::from_secs(60), async {
        let dir = std::env::temp_dir().join(format!("synchrony-logged-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = std::sync::Arc::new(synchrony::storage::Store::open(&dir, "a").expect("store"));
        {
            let a = node("a", None).await;
            let g = a.join("ledger", JoinOptions::default()).await.expect("joins");
            let log = tools::StoreLog::new(store.clone(), "ledger");
            let ledger = tools::ReplicatedMap::<String, u64>::start_logged(g, log, 10).expect("starts");
            for i in 0..25u64 {
                ledger.put(format!("acct{i}"), i * 100).await.expect("durable once it returns");
            }
            let on_disk = store.load(&"ledger".into()).expect("loads");
            assert_eq!(on_disk.checkpoint.as_ref().map(|c| c.0), Some(22), "checkpoints every 10 updates (+1)");
            assert_eq!(on_disk.log.len(), 3);
            let views = store.views().expect("reads");
            assert_eq!(views.get(&"ledger".into()).map(|v| v.members.len()), Some(1), "the installed view is recorded");
            let _ = a.shutdown().await; // the whole group is gone
        }
        // The member restarts alone: the group comes back from its log.
        let a = node("a", None).await;
        let g = a.join("ledger", JoinOptions::default()).await.expect("joins");
        let ledger =
            tools::ReplicatedMap::<String, u64>::start_logged(g, tools::StoreLog::new(store.clone(), "ledger"), 10)
                .expect("starts");
        assert_eq!(ledger.len(), 25);
        assert_eq!(ledger.get(&"acct24".to_string()), Some(2400));
        // A joiner gets it by state transfer.
        let b = node("b", Some(&a)).await;
        let g = b.join("ledger", JoinOptions::default()).await.expect("joins");
        let copy = tools::ReplicatedMap::<String, u64>::start(g);
        eventually("the joiner has the ledger", || copy.to_map() == ledger.to_map()).await;
        let _ = a.shutdown().await;
        let _ = b.shutdown().await;
        let _ = std::fs::remove_dir_all(&dir);
    })
    .await
    .expect("within 60 s");
}

/// After its node shut down, a tool says its group is closed (not a refusal in words).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tool_of_a_node_that_shut_down_is_closed() {
    timeout(Duration::from_secs(30), async {
        let n = node("closing", None).await;
        let g = n.join("closing-map", JoinOptions::default()).await.expect("joins");
        let map: tools::ReplicatedMap<String, u32> = tools::ReplicatedMap::start(g);
        map.put("a".into(), 1).await.expect("applied");
        n.shutdown().await.expect("was running");
        assert_eq!(map.put("b".into(), 2).await, Err(ToolError::Closed));
    })
    .await
    .expect("in time");
}

/// Tools give their group back: `leave` leaves it (the others see the view without this
/// member, and the tool answers `Closed`), and dropping the last clone of a tool leaves too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tool_left_or_dropped_gives_its_group_back() {
    timeout(Duration::from_secs(60), async {
        let nodes = cluster(3).await;
        let mut maps = Vec::new();
        for n in &nodes {
            let g = n.join("given-back", JoinOptions::default()).await.expect("joins");
            maps.push(tools::ReplicatedMap::<String, u32>::start(g));
        }
        for m in &maps {
            m.ready().await.expect("state");
        }
        let members = |m: &tools::ReplicatedMap<String, u32>| m.view().map_or(0, |v| v.members.len());
        eventually("all three in the view", || maps.iter().all(|m| members(m) == 3)).await;
        maps[2].leave().await.expect("leaves");
        assert_eq!(maps[2].put("late".into(), 1).await, Err(ToolError::Closed));
        eventually("the others see two", || members(&maps[0]) == 2 && members(&maps[1]) == 2).await;
        let kept = maps[1].clone();
        maps.truncate(1);
        // A clone still runs the tool: nothing is left yet.
        kept.put("kept".into(), 1).await.expect("applied");
        drop(kept);
        eventually("the last one sees itself alone", || members(&maps[0]) == 1).await;
        // The dropped tool's node stays in the cluster and can join the group again.
        let g = nodes[1].join("given-back", JoinOptions::default()).await.expect("joins again");
        let again = tools::ReplicatedMap::<String, u32>::start(g);
        again.ready().await.expect("state");
        assert_eq!(again.get(&"kept".to_string()), Some(1));
        for n in &nodes {
            let _ = n.shutdown().await;
        }
    })
    .await
    .expect("in time");
}
