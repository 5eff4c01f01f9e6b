//! The public API between nodes in one process, over real TCP on loopback.

use std::time::Duration;
use synchrony::{Event, Group, GroupSendError, JoinOptions, Order, Replies};
use tokio::time::timeout;

mod common;

use common::{node, trio, until_view};

/// Reads `n` messages, answering queries (`null_replies`: with a null reply).
async fn messages(g: &mut Group, n: usize, null_replies: bool) -> Vec<String> {
    let mut got = Vec::new();
    while got.len() < n {
        match g.next_event().await.expect("event") {
            Event::Message(m) => {
                if m.is_query() {
                    if null_replies {
                        m.reply_null().await.expect("running");
                    } else {
                        m.reply_value(&m.sender().to_string()).await.expect("encodes");
                    }
                }
                got.push(m.value::<String>().unwrap_or_else(|_| String::from_utf8_lossy(m.payload()).to_string()));
            }
            Event::StateRequest(r) => {
                let _ = r.provide("").await;
            }
            _ => {}
        }
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_agree_on_order_answer_queries_flush_and_leave() {
    timeout(Duration::from_secs(60), async {
        let a = node("a", None).await;
        let b = node("b", Some(&a)).await;
        let c = node("c", Some(&a)).await;
        let mut ga = a.join("g", JoinOptions::default()).await.expect("joins");
        until_view(&mut ga, 1).await;
        let mut gb = b.join("g", JoinOptions::default()).await.expect("joins");
        until_view(&mut ga, 2).await;
        until_view(&mut gb, 2).await;
        let mut gc = c.join("g", JoinOptions::default()).await.expect("joins");
        for g in [&mut ga, &mut gb, &mut gc] {
            until_view(g, 3).await;
        }
        // Concurrent total-order sends from all three: everyone sees one order.
        for (k, g) in [&ga, &gb, &gc].iter().enumerate() {
            let s = g.sender();
            tokio::spawn(async move {
                for i in 0..50 {
                    s.send_value(Order::Total, &format!("{k}-{i}")).await.expect("sends");
                }
            });
        }
        let (ma, mb, mc) =
            tokio::join!(messages(&mut ga, 150, false), messages(&mut gb, 150, false), messages(&mut gc, 150, true));
        assert_eq!(ma, mb);
        assert_eq!(mb, mc);
        // A group RPC waiting for all: a and b answer, c answers null.
        let q = {
            let s = ga.sender();
            tokio::spawn(async move {
                s.query(Order::Total, synchrony::encode(&"who?".to_string()).unwrap(), Replies::All).await
            })
        };
        let (_, _, _) =
            tokio::join!(messages(&mut ga, 1, false), messages(&mut gb, 1, false), messages(&mut gc, 1, true));
        let outcome = q.await.expect("joined").expect("query ok");
        assert!(outcome.failed.is_empty(), "{outcome:?}");
        assert_eq!(outcome.replies.len(), 2, "{outcome:?}");
        assert_eq!(outcome.nulls, vec![c.id().clone()]);
        // flush returns once a's messages are stable.
        ga.send(Order::Fifo, "last").await.expect("sends");
        let flushed = ga.sender();
        let f = tokio::spawn(async move { flushed.flush().await });
        let _ = tokio::join!(messages(&mut ga, 1, false), messages(&mut gb, 1, false), messages(&mut gc, 1, false));
        f.await.expect("joined").expect("flush ok");
        // c leaves: the others see it go, and c's old sender refuses clearly.
        let c_sender = gc.sender();
        gc.leave().await.expect("leaves");
        until_view(&mut ga, 2).await;
        until_view(&mut gb, 2).await;
        assert!(matches!(c_sender.send(Order::Fifo, "late").await, Err(GroupSendError::NotMember(_))));
        // c, now outside the group, can still multicast to it by name.
        c.send("g", Order::Total, "from outside").await.expect("non-member send");
        let (ma, mb) = tokio::join!(messages(&mut ga, 1, false), messages(&mut gb, 1, false));
        assert_eq!(ma, vec!["from outside".to_string()]);
        assert_eq!(mb, ma);
        for n in [c, b, a] {
            let _ = n.shutdown().await;
        }
    })
    .await
    .expect("finishes in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verifiers_refuse_joins_and_drop_messages() {
    timeout(Duration::from_secs(60), async {
        let options = || {
            JoinOptions::default()
                .join_verifier(|joiner| !joiner.name.starts_with("mallory"))
                .message_verifier(|_, payload| payload != b"spam")
        };
        let a = node("a", None).await;
        let bob = node("bob", Some(&a)).await;
        let mallory = node("mallory", Some(&a)).await;
        let mut ga = a.join("vip", options()).await.expect("joins");
        let mut gb = bob.join("vip", options()).await.expect("bob is admitted");
        until_view(&mut ga, 2).await;
        until_view(&mut gb, 2).await;
        match mallory.join("vip", JoinOptions::default()).await {
            Err(synchrony::JoinError::Refused(g)) => assert_eq!(g.as_str(), "vip"),
            other => panic!("mallory's join was not refused: {other:?}"),
        }
        gb.send(Order::Total, "spam").await.expect("sends");
        gb.send(Order::Total, "ham").await.expect("sends");
        let (ma, mb) = tokio::join!(messages(&mut ga, 1, false), messages(&mut gb, 1, false));
        assert_eq!(ma, vec!["ham".to_string()]);
        assert_eq!(mb, ma);
        let status = a.status().await.expect("running");
        assert_eq!(status.net.rejected_by_verifier, 1);
        for n in [mallory, bob, a] {
            let _ = n.shutdown().await;
        }
    })
    .await
    .expect("finishes in time");
}

/// A `Group` is a `Stream` of its events: the view, then what is sent to it.
#[tokio::test(flavor = "current_thread")]
async fn a_group_is_a_stream_of_its_events() {
    use futures_core::Stream;
    use std::pin::Pin;
    timeout(Duration::from_secs(30), async {
        let a = node("s", None).await;
        let mut g = a.join("streamed", JoinOptions::default()).await.expect("joins");
        g.send(Order::Total, "over the stream").await.expect("sends");
        async fn next(g: &mut Group) -> Option<Event> {
            std::future::poll_fn(|cx| Pin::new(&mut *g).poll_next(cx)).await
        }
        assert!(matches!(next(&mut g).await, Some(Event::View(v)) if v.members.len() == 1));
        match next(&mut g).await {
            Some(Event::Message(m)) => assert_eq!(&m.payload()[..], b"over the stream"),
            other => panic!("expected the message, got {other:?}"),
        }
        let _ = a.shutdown().await;
    })
    .await
    .expect("in time");
}

/// A shutdown is a clean leave: the other of a pair goes on alone (it would lose its
/// majority if the leaver were taken for failed), and sees the new view by the time the
/// shutdown returned; whichever of the two leads. The leaver first serves the state of the
/// joiner it just let in (which would otherwise be lost with it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_is_a_clean_leave_that_a_pair_survives() {
    timeout(Duration::from_secs(60), async {
        for leader_leaves in [false, true] {
            let a = node(if leader_leaves { "pa2" } else { "pa1" }, None).await;
            let b = node(if leader_leaves { "pb2" } else { "pb1" }, Some(&a)).await;
            let mut ga = a.join("pair", JoinOptions::default()).await.expect("joins");
            let mut gb = b.join("pair", JoinOptions::default()).await.expect("joins");
            until_view(&mut ga, 2).await;
            until_view(&mut gb, 2).await;
            let (stays, mut group, leaves) = if leader_leaves { (&b, gb, &a) } else { (&a, ga, &b) };
            let started = std::time::Instant::now();
            leaves.shutdown().await.expect("was running");
            // Bounded by three failure timeouts; a clean leave takes far less.
            assert!(started.elapsed() < Duration::from_millis(1500), "{:?}", started.elapsed());
            let alone = timeout(Duration::from_millis(500), until_view(&mut group, 1)).await;
            assert!(
                alone.is_ok(),
                "leader_leaves {leader_leaves}: the survivor has no view without the leaver: {:?}",
                stays.status().await
            );
            let s = stays.status().await.expect("still running");
            assert_eq!(s.status, "member", "leader_leaves {leader_leaves}: {s:?}");
            group.send(Order::Total, "still here").await.expect("the survivor goes on");
            loop {
                match group.next_event().await.expect("event") {
                    Event::Message(m) if &m.payload()[..] == b"still here" => break,
                    Event::Partitioned(r) => panic!("the survivor stopped: {r:?}"),
                    _ => {}
                }
            }
            let _ = stays.shutdown().await;
        }
    })
    .await
    .expect("in time");
}

/// Dropping a `Node` leaves cleanly in the background: the other of a pair goes on alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_node_leaves_cleanly() {
    timeout(Duration::from_secs(60), async {
        let a = node("d1", None).await;
        let b = node("d2", Some(&a)).await;
        let mut ga = a.join("dropped", JoinOptions::default()).await.expect("joins");
        let mut gb = b.join("dropped", JoinOptions::default()).await.expect("joins");
        until_view(&mut ga, 2).await;
        until_view(&mut gb, 2).await;
        drop(b);
        assert!(
            timeout(Duration::from_millis(1500), until_view(&mut ga, 1)).await.is_ok(),
            "no view without the dropped node: {:?}",
            a.status().await
        );
        assert_eq!(a.status().await.expect("running").status, "member");
        // The dropped node's group ends.
        let ended = timeout(Duration::from_secs(5), async {
            loop {
                match gb.next_event().await {
                    None | Some(Event::Left) | Some(Event::Partitioned(_)) => break,
                    Some(_) => {}
                }
            }
        })
        .await;
        assert!(ended.is_ok(), "the dropped node's group never ended");
        let _ = a.shutdown().await;
    })
    .await
    .expect("in time");
}

/// Two of three stopped at once: the third goes on alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_of_three_shut_down_at_once_and_the_third_goes_on() {
    timeout(Duration::from_secs(60), async {
        let ([a, b, c], [mut ga, _gb, _gc]) = trio(["t1", "t2", "t3"], "trio").await;
        let (rb, rc) = tokio::join!(b.shutdown(), c.shutdown());
        assert!(rb.is_ok() && rc.is_ok());
        assert!(timeout(Duration::from_millis(1000), until_view(&mut ga, 1)).await.is_ok(), "a alone");
        assert_eq!(a.status().await.expect("running").status, "member");
        let _ = a.shutdown().await;
    })
    .await
    .expect("in time");
}

/// Reads events until a view with `n` members, dropping the state requests on the way.
async fn until_view_declining(g: &mut Group, n: usize) {
    loop {
        match g.next_event().await.expect("event") {
            Event::View(v) if v.members.len() == n => return,
            Event::StateRequest(r) => drop(r),
            _ => {}
        }
    }
}

/// The joiner's state, or the end of its group.
async fn state_or_end(g: &mut Group) -> Option<bytes::Bytes> {
    loop {
        match g.next_event().await {
            Some(Event::State(s)) => return Some(s),
            None | Some(Event::Left) | Some(Event::Partitioned(_)) => return None,
            Some(_) => {}
        }
    }
}

/// A member that drops a `StateRequest` does not stall the join: the joiner takes the state
/// from another member, and the dropping member's events go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_state_request_does_not_stall_the_join() {
    timeout(Duration::from_secs(60), async {
        let a = node("s1", None).await;
        let b = node("s2", Some(&a)).await;
        let c = node("s3", Some(&a)).await;
        let mut ga = a.join("declined", JoinOptions::default()).await.expect("joins");
        let mut gb = b.join("declined", JoinOptions::default()).await.expect("joins");
        until_view(&mut ga, 2).await;
        until_view(&mut gb, 2).await;
        let mut gc = c.join("declined", JoinOptions::default()).await.expect("joins");
        // a drops its request; b provides.
        let (_, _, state) = tokio::join!(
            until_view_declining(&mut ga, 3),
            async {
                loop {
                    if let Event::StateRequest(r) = gb.next_event().await.expect("event") {
                        break r.provide("from b").await.expect("running");
                    }
                }
            },
            timeout(Duration::from_secs(5), state_or_end(&mut gc)),
        );
        assert_eq!(state.expect("the joiner's state in time").as_deref(), Some(&b"from b"[..]));
        // a's later events were not held behind the dropped request.
        gb.send(Order::Total, "after").await.expect("sends");
        let got = timeout(Duration::from_secs(5), messages(&mut ga, 1, false)).await.expect("a goes on");
        assert_eq!(got, ["after"]);
        for n in [&a, &b, &c] {
            let _ = n.shutdown().await;
        }
    })
    .await
    .expect("in time");
}

/// With its only provider dropping the request, the joiner learns the state is lost (its
/// group ends) instead of waiting for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joiner_whose_only_provider_declines_is_told() {
    timeout(Duration::from_secs(60), async {
        let a = node("o1", None).await;
        let b = node("o2", Some(&a)).await;
        let mut ga = a.join("alone", JoinOptions::default()).await.expect("joins");
        until_view(&mut ga, 1).await;
        let mut gb = b.join("alone", JoinOptions::default()).await.expect("joins");
        let (_, ended) =
            tokio::join!(until_view_declining(&mut ga, 2), timeout(Duration::from_secs(5), state_or_end(&mut gb)));
        assert_eq!(ended.expect("told in time"), None, "no state: the joiner's group ends");
        for n in [&a, &b] {
            let _ = n.shutdown().await;
        }
    })
    .await
    .expect("in time");
}

/// Dropping a `Group` handle leaves the group: the others install a view without it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_group_handle_leaves_the_group() {
    timeout(Duration::from_secs(60), async {
        let a = node("h1", None).await;
        let b = node("h2", Some(&a)).await;
        let mut ga = a.join("handles", JoinOptions::default()).await.expect("joins");
        let mut gb = b.join("handles", JoinOptions::default()).await.expect("joins");
        until_view(&mut ga, 2).await;
        until_view(&mut gb, 2).await;
        drop(gb);
        assert!(timeout(Duration::from_secs(2), until_view(&mut ga, 1)).await.is_ok(), "b left on drop");
        // b is still a member of the cluster: it joins again (once it applied its leave).
        let mut gb = loop {
            match b.join("handles", JoinOptions::default()).await {
                Ok(g) => break g,
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        };
        until_view(&mut gb, 2).await;
        for n in [&a, &b] {
            let _ = n.shutdown().await;
        }
    })
    .await
    .expect("in time");
}

/// Typed queries, and a query with a deadline that returns what came by then.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_value_and_query_within() {
    timeout(Duration::from_secs(60), async {
        let a = node("q1", None).await;
        let b = node("q2", Some(&a)).await;
        let mut ga = a.join("typed", JoinOptions::default()).await.expect("joins");
        let mut gb = b.join("typed", JoinOptions::default()).await.expect("joins");
        until_view(&mut ga, 2).await;
        until_view(&mut gb, 2).await;
        // b answers the first query with a value and ignores the second.
        let silent_b = tokio::spawn(async move {
            let mut seen = 0;
            while let Some(ev) = gb.next_event().await {
                if let Event::Message(m) = ev {
                    if m.is_query() {
                        seen += 1;
                        if seen == 1 {
                            let asked: String = m.value().expect("a string");
                            m.reply_value(&(asked.len() as u32 * 2)).await.expect("replies");
                        }
                    }
                }
            }
        });
        let sender = ga.sender();
        let asking = tokio::spawn(async move {
            let typed = sender.query_value::<_, u32>(Order::Total, &"four", Replies::All).await;
            let started = std::time::Instant::now();
            let late = sender.query_within(Order::Total, "anyone?", Replies::All, Duration::from_millis(300)).await;
            (typed, late, started.elapsed())
        });
        // a answers both itself.
        let mut answered = 0;
        while answered < 2 {
            if let Event::Message(m) = ga.next_event().await.expect("event") {
                if m.is_query() {
                    answered += 1;
                    if answered == 1 {
                        m.reply_value(&8u32).await.expect("replies");
                    } else {
                        m.reply("here").await.expect("replies");
                    }
                }
            }
        }
        let (typed, late, took) = asking.await.expect("task");
        let typed = typed.expect("typed query");
        assert!(typed.satisfied);
        assert_eq!(typed.replies.iter().map(|(_, v)| *v).collect::<Vec<u32>>(), [8, 8]);
        let late = late.expect("the deadline gives an outcome, not an error");
        assert!(!late.satisfied, "b never answered");
        assert_eq!(late.replies.len(), 1, "a's reply came: {late:?}");
        assert!(took >= Duration::from_millis(300) && took < Duration::from_secs(3), "took {took:?}");
        for n in [&a, &b] {
            let _ = n.shutdown().await;
        }
        let _ = silent_b.await;
    })
    .await
    .expect("in time");
}

/// A join over `Config::max_groups` is refused with an error that says so, and the node
/// goes on (a leave makes room again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_over_the_group_limit_is_refused_and_says_so() {
    timeout(Duration::from_secs(30), async {
        let mut config = synchrony::Config::new("limited", "127.0.0.1:0");
        config.engine.max_groups = 2;
        let n = synchrony::Node::start(config).await.expect("starts");
        let first = n.join("l1", JoinOptions::default()).await.expect("joins");
        let _second = n.join("l2", JoinOptions::default()).await.expect("joins");
        let err = n.join("l3", JoinOptions::default()).await.expect_err("over the limit");
        let text = err.to_string();
        assert!(text.contains("l3") && text.contains("max_groups"), "{text}");
        first.leave().await.expect("leaves");
        let _third = n.join("l3", JoinOptions::default()).await.expect("room again");
        let _ = n.shutdown().await;
    })
    .await
    .expect("in time");
}

/// `join_many`: a founder makes 500 groups with one call, another node joins them all with
/// one call, each handle starts in a view with both and then the group's state; a group
/// named twice, or joined already, is redundant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_many_joins_hundreds_of_groups_with_one_call() {
    timeout(Duration::from_secs(60), async {
        let a = node("m1", None).await;
        let b = node("m2", Some(&a)).await;
        let names: Vec<String> = (0..500).map(|k| format!("obj{k}")).collect();
        let mut founded: Vec<Group> =
            a.join_many(names.iter().cloned()).await.into_iter().map(|g| g.expect("founds")).collect();
        // The founder answers each state request with the group's name.
        let serve = tokio::spawn(async move {
            let mut served = 0;
            for g in &mut founded {
                loop {
                    match g.next_event().await.expect("event") {
                        Event::StateRequest(r) => {
                            let name = g.name().to_string();
                            r.provide(name).await.expect("provides");
                            served += 1;
                            break;
                        }
                        _ => continue,
                    }
                }
            }
            (served, founded)
        });
        let mut asked = names.clone();
        asked.push(names[0].clone());
        let mut joined = b.join_many(asked).await;
        assert!(matches!(joined.pop(), Some(Err(synchrony::JoinError::Membership(_)))), "named twice: redundant");
        assert_eq!(joined.len(), 500);
        for (g, name) in joined.iter_mut().zip(&names) {
            let g = g.as_mut().expect("joins");
            assert_eq!(g.view().expect("in a view").members.len(), 2);
            loop {
                match g.next_event().await.expect("event") {
                    Event::State(s) => {
                        assert_eq!(&s[..], name.as_bytes(), "{name}: its own state");
                        break;
                    }
                    _ => continue,
                }
            }
        }
        let (served, _founded) = serve.await.expect("served");
        assert_eq!(served, 500);
        assert!(matches!(b.join_many([names[1].clone()]).await.pop(), Some(Err(synchrony::JoinError::Membership(_)))));
        for n in [&a, &b] {
            let _ = n.shutdown().await;
        }
    })
    .await
    .expect("in time");
}

/// An application that blocks its runtime (a long computation on a current-thread
/// runtime, as a large state can take) for several failure timeouts gets no one suspected:
/// the transport's own thread went on hearing the peers, and each node learns so before it
/// judges silence, whichever input wakes it first.
#[tokio::test(flavor = "current_thread")]
async fn a_runtime_blocked_for_seconds_suspects_no_one() {
    timeout(Duration::from_secs(60), async {
        let ([a, b, c], [ga, _gb, _gc]) = trio(["a", "b", "c"], "g").await;
        // Traffic in flight, then every node's driver and application stop for 1.5 s
        // (three times the failure timeout).
        for i in 0..50 {
            ga.send(Order::Total, format!("m{i}")).await.expect("sends");
        }
        std::thread::sleep(Duration::from_millis(1500));
        tokio::time::sleep(Duration::from_millis(800)).await;
        for n in [&a, &b, &c] {
            let st = n.status().await.expect("running");
            assert_eq!(st.members.len(), 3, "{}: {:?}", st.process, st.members);
            assert_eq!(st.engine.suspicions, 0, "{} suspected someone", st.process);
        }
    })
    .await
    .expect("in time");
}
