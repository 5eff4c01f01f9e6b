//! Many groups read as one stream (`Node::join_set`), over real TCP on loopback: each
//! group's events as its own handle would give them, states served and fetched through the
//! set, a leave of one group, a set dropped (its groups left), and a reader that falls far
//! behind losing nothing.

use bytes::Bytes;
use std::collections::HashMap;
use std::time::Duration;
use synchrony::{Event, GroupName, GroupSendError, GroupSet, Order};
use tokio::time::{sleep, timeout};

mod common;

use common::node;

/// What one node saw of each group, in order: views (member names), states, messages.
#[derive(Default)]
struct Seen {
    log: HashMap<GroupName, Vec<String>>,
    members: HashMap<GroupName, usize>,
    messages: HashMap<GroupName, usize>,
}

impl Seen {
    /// Reads `set` until `done` holds, answering state requests with `state-GROUP`.
    async fn read_until(&mut self, set: &mut GroupSet, done: impl Fn(&Seen) -> bool) {
        while !done(self) {
            let (g, ev) = set.next_event().await.expect("the node runs");
            let entry = match ev {
                Event::View(v) => {
                    self.members.insert(g.clone(), v.members.len());
                    format!("view {:?}", v.members.iter().map(|m| m.name.to_string()).collect::<Vec<_>>())
                }
                Event::Message(m) => {
                    *self.messages.entry(g.clone()).or_default() += 1;
                    format!("message {}", String::from_utf8_lossy(m.payload()))
                }
                Event::StateRequest(r) => {
                    r.provide(format!("state-{g}")).await.expect("the node runs");
                    continue;
                }
                Event::State(s) => format!("state {}", String::from_utf8_lossy(&s)),
                Event::Left => "left".to_string(),
                other => format!("{other:?}"),
            };
            self.log.entry(g).or_default().push(entry);
        }
    }

    fn all_have(&self, names: &[GroupName], members: usize) -> bool {
        names.iter().all(|g| self.members.get(g) == Some(&members))
    }
}

fn names(n: usize) -> Vec<GroupName> {
    (0..n).map(|k| GroupName::new(format!("obj-{k:02}"))).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_set_carries_every_groups_views_states_and_messages_in_order() {
    timeout(Duration::from_secs(60), async {
        let groups = names(40);
        let a = node("a", None).await;
        let b = node("b", Some(&a)).await;
        let (mut set_a, joined) = a.join_set(groups.clone()).await;
        assert!(joined.iter().all(Result::is_ok), "a founds every group");
        let (mut set_b, joined) = b.join_set(groups.clone()).await;
        assert!(joined.iter().all(Result::is_ok), "b joins every group");
        assert_eq!((set_a.len(), set_b.len()), (40, 40));
        let (mut seen_a, mut seen_b) = (Seen::default(), Seen::default());
        // a serves b's states while b takes them.
        let with_state = |s: &Seen| groups.iter().all(|g| s.log.get(g).is_some_and(|l| l.len() == 2));
        tokio::join!(
            seen_a.read_until(&mut set_a, |s| s.all_have(&groups, 2)),
            seen_b.read_until(&mut set_b, with_state)
        );
        for g in &groups {
            assert_eq!(
                seen_b.log[g],
                vec!["view [\"a\", \"b\"]".to_string(), format!("state state-{g}")],
                "b's first view of {g}, then a's state of it"
            );
        }
        // Both send to every group; each group's messages in one order at both.
        for (set, who) in [(&set_a, "a"), (&set_b, "b")] {
            for g in &groups {
                let s = set.sender(g).expect("in the set");
                let payloads = (0..5).map(|i| Bytes::from(format!("{who}{i}"))).collect();
                assert!(s.send_many(Order::Total, payloads).await.iter().all(Result::is_ok));
            }
        }
        let ten = |s: &Seen| groups.iter().all(|g| s.messages.get(g) == Some(&10));
        tokio::join!(seen_a.read_until(&mut set_a, ten), seen_b.read_until(&mut set_b, ten));
        for g in &groups {
            let tail = |s: &Seen| s.log[g][s.log[g].len() - 10..].to_vec();
            assert_eq!(tail(&seen_a), tail(&seen_b), "{g}: one order at both members");
        }
        // b leaves one group: its `Left` comes on b's stream, and the group is out of the set.
        let gone = groups[5].clone();
        set_b.leave(&gone).await.expect("b is in it");
        seen_b.read_until(&mut set_b, |s| s.log[&gone].last().is_some_and(|e| e == "left")).await;
        assert_eq!(set_b.len(), 39);
        assert!(set_b.sender(&gone).is_none() && set_b.view(&gone).is_none());
        let one = |g: GroupName| move |s: &Seen| s.members.get(&g) == Some(&1);
        seen_a.read_until(&mut set_a, one(gone.clone())).await;
        // b drops its set: it leaves every other group, and a sees it go from each.
        let kept = set_b.sender(&groups[0]).expect("in the set");
        drop(set_b);
        seen_a.read_until(&mut set_a, |s| s.all_have(&groups, 1)).await;
        assert!(matches!(kept.send(Order::Fifo, "late").await, Err(GroupSendError::NotMember(_))));
        assert_eq!(set_a.view(&groups[0]).map(|v| v.members.len()), Some(1));
        b.shutdown().await.expect("running");
        a.shutdown().await.expect("running");
    })
    .await
    .expect("in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_set_read_late_loses_nothing_and_keeps_each_senders_order() {
    timeout(Duration::from_secs(120), async {
        let groups = names(3);
        let a = node("a", None).await;
        let b = node("b", Some(&a)).await;
        let (mut set_a, _) = a.join_set(groups.clone()).await;
        let (mut set_b, _) = b.join_set(groups.clone()).await;
        let (mut seen_a, mut seen_b) = (Seen::default(), Seen::default());
        tokio::join!(
            seen_a.read_until(&mut set_a, |s| s.all_have(&groups, 2)),
            seen_b.read_until(&mut set_b, |s| s.all_have(&groups, 2)),
        );
        // More than a set's queue holds (256 batches of 256) while a reads nothing: b's
        // messages to two groups, interleaved.
        let n = 50_000u32;
        let senders: Vec<_> = groups[..2].iter().map(|g| set_b.sender(g).expect("in the set")).collect();
        let sending = tokio::spawn(async move {
            for from in (0..n).step_by(1000) {
                for s in &senders {
                    let batch = (from..from + 1000).map(|k| Bytes::from(k.to_le_bytes().to_vec())).collect();
                    assert!(s.send_many(Order::Fifo, batch).await.iter().all(Result::is_ok));
                }
            }
        });
        let b_reads = tokio::spawn(async move { while set_b.next_event().await.is_some() {} });
        sleep(Duration::from_secs(2)).await;
        assert!(a.status().await.expect("running").net.reading_paused > 0, "a's set never filled");
        let mut next: HashMap<GroupName, u32> = HashMap::new();
        while next.values().filter(|k| **k == n).count() < 2 {
            match set_a.next_event().await.expect("running") {
                (g, Event::Message(m)) => {
                    let k = u32::from_le_bytes(m.payload()[..4].try_into().expect("4 bytes"));
                    let want = next.entry(g.clone()).or_default();
                    assert_eq!(k, *want, "{g}: b's messages in the order b sent them, none lost");
                    *want += 1;
                }
                (g, other) => panic!("{g}: unexpected {other:?}"),
            }
        }
        sending.await.expect("sent");
        b_reads.abort();
        a.shutdown().await.expect("running");
    })
    .await
    .expect("in time");
}
