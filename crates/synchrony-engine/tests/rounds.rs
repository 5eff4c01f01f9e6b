//! Membership rounds, step by step: prepare, accept, commit, and a leader that takes over
//! in the middle of one.

mod harness;

use bytes::Bytes;
use harness::{g, Fate, Net};
use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;
use synchrony_engine::wire::Msg;
use synchrony_engine::{Order, RoundPhase, Status};

fn names(net: &Net, i: usize) -> Vec<String> {
    net.engine_ref(i).members().iter().map(|m| m.name.to_string()).collect()
}

#[test]
fn a_failure_goes_through_prepare_then_accept_then_commit() {
    let mut net = Net::cluster(3);
    net.join_all("g", &[0, 1, 2]);
    net.crash(2);
    let mut phases = Vec::new();
    // Step by step, recording the leader's phase whenever it changes.
    let deadline = net.now + Duration::from_secs(2);
    while net.now < deadline && names(&net, 0).len() == 3 {
        let phase = net.engine_ref(0).round_phase();
        if phases.last() != Some(&phase) {
            phases.push(phase);
        }
        net.step();
    }
    phases.push(net.engine_ref(0).round_phase());
    phases.dedup();
    assert_eq!(phases, vec![None, Some(RoundPhase::Prepare), Some(RoundPhase::Accept), None]);
    assert_eq!(names(&net, 0), ["n1", "n2"]);
    net.run_for(Duration::from_millis(20));
    assert_eq!(names(&net, 1), ["n1", "n2"]);
    assert_eq!(net.nodes[1].views("g").last().map(|v| v.1.clone()), Some(vec!["n1".into(), "n2".into()]));
}

#[test]
fn sends_during_a_round_wait_for_its_end_and_are_delivered_in_the_next_view() {
    let mut net = Net::cluster(3);
    net.join_all("g", &[0, 1, 2]);
    // Hold the round in phase 2: acceptances to the leader are lost for now.
    let hold = net.drop_msgs(None, Some(0), |m| matches!(m, Msg::Accepted { .. }));
    net.crash(2);
    let in_accept =
        net.run_until(Duration::from_secs(2), |net| net.engine_ref(0).round_phase() == Some(RoundPhase::Accept));
    assert!(in_accept);
    // n2 promised, so its group is frozen: what it sends now waits.
    net.with(1, |e, now| e.send(now, g("g"), Order::Fifo, Bytes::from_static(b"during")).expect("queued"));
    net.run_for(Duration::from_millis(10));
    assert!(net.nodes.iter().all(|n| n.delivered("g").is_empty()), "nothing delivered while frozen");
    hold.set(false);
    let done = net.run_until(Duration::from_secs(2), |net| net.nodes[0].delivered("g").len() == 1);
    assert!(done);
    net.run_for(Duration::from_millis(20));
    for i in [0, 1] {
        let ev = &net.nodes[i].events;
        let d = ev
            .iter()
            .find_map(|e| match e {
                synchrony_engine::Event::Deliver(d) => Some(d.view.0),
                _ => None,
            })
            .expect("delivered");
        assert_eq!(d, net.nodes[i].views("g").last().expect("a view").0, "in the new view");
    }
}

#[test]
fn a_new_leader_finishes_the_decision_its_predecessor_got_accepted() {
    let mut net = Net::cluster(5);
    net.join_all("g", &[0, 1, 2, 3, 4]);
    // The leader's commits never arrive: it will crash right after committing.
    net.drop_msgs(Some(0), None, |m| matches!(m, Msg::Commit { .. }));
    net.crash(4);
    let in_accept =
        net.run_until(Duration::from_secs(2), |net| net.engine_ref(0).round_phase() == Some(RoundPhase::Accept));
    assert!(in_accept);
    let committed = net.run_until(Duration::from_secs(2), |net| net.engine_ref(0).round_phase().is_none());
    assert!(committed);
    assert_eq!(names(&net, 0), ["n1", "n2", "n3", "n4"], "n1 applied its own decision");
    net.crash(0);
    // n2 takes over. The others accepted n1's decision (n5 out), so it must be decided
    // again for that epoch, before a later round takes n1 out.
    let settled = net.run_until(Duration::from_secs(3), |net| {
        (1..4).all(|i| net.nodes[i].views("g").last().is_some_and(|v| v.1 == ["n2", "n3", "n4"]))
    });
    assert!(settled, "{:?}", net.nodes[1].views("g"));
    for i in 1..4 {
        let views: Vec<Vec<String>> = net.nodes[i].views("g").into_iter().map(|v| v.1).collect();
        assert_eq!(
            views[views.len() - 2..],
            [
                vec!["n1".to_string(), "n2".into(), "n3".into(), "n4".into()],
                vec!["n2".into(), "n3".into(), "n4".into()]
            ],
            "n{}: the accepted decision first, then the takeover's own",
            i + 1
        );
        assert_eq!(net.nodes[i].status(), Some(Status::Member));
    }
}

#[test]
fn a_pair_goes_on_as_one_when_either_leaves_the_cluster() {
    for leaver in [1, 0] {
        let mut net = Net::cluster(2);
        net.join_all("g", &[0, 1]);
        let stays = 1 - leaver;
        net.with(leaver, |e, now| e.leave_cluster(now));
        let done = net.run_until(Duration::from_secs(1), |net| {
            net.nodes[leaver].status() == Some(Status::Left)
                && net.nodes[stays].views("g").last().is_some_and(|v| v.1.len() == 1)
        });
        assert!(
            done,
            "leaver n{}: {:?} {:?} {:?}",
            leaver + 1,
            net.nodes[stays].views("g"),
            net.nodes[leaver].status(),
            net.nodes[leaver].events
        );
        // Even when the leaver led the round: its commit went out as it left.
        net.run_for(Duration::from_millis(500));
        assert_eq!(net.nodes[stays].status(), Some(Status::Member), "the one that stays goes on");
        assert_eq!(names(&net, stays).len(), 1);
    }
}

/// A joiner that first knocked at a process still joining itself (which ignores it), then
/// waited longer than any failure timeout before a member let it in, is not suspected for
/// that wait by the process it knocked at: a new member's silence counts from its joining.
#[test]
fn a_joiner_is_not_suspected_for_the_wait_before_it_joined() {
    let mut net = Net::cluster_with(2, |c| c.join_retry = Duration::from_millis(300));
    let n3 = net.add("n3", true);
    // n4 knocks at n3 while n3 is joining, and at n1 one retry later.
    let n4 = net.add_with_contacts("n4", &["n3", "n1"]);
    // Nothing of n4's reaches n3 but its knock, until a little after it is in: n3's timers
    // run in between (a race in a real network, made certain here).
    let quiet = Rc::new(Cell::new(true));
    let q = quiet.clone();
    net.set_filter(
        move |f, t, p| if q.get() && f == n4 && t == n3 && p.ctl.is_empty() { Fate::Drop } else { Fate::Deliver },
    );
    let all_in = net.run_until(Duration::from_secs(2), |net| {
        net.nodes.iter().all(|n| n.status() == Some(Status::Member))
            && (0..4).all(|i| net.engine_ref(i).members().len() == 4)
    });
    assert!(all_in, "all four are members");
    assert!(net.now.since_epoch() > Duration::from_millis(300), "n4 got in at its retry, past the failure timeouts");
    net.run_for(Duration::from_millis(30));
    quiet.set(false);
    net.run_for(Duration::from_millis(500));
    for i in [0, 1, n3, n4] {
        assert_eq!(net.engine_ref(i).stats().suspicions, 0, "{} suspected nobody", net.nodes[i].name);
        assert_eq!(net.engine_ref(i).members().len(), 4);
    }
}

#[test]
fn a_crash_changes_every_quiet_group_without_naming_it_and_names_a_busy_one() {
    let mut net = Net::cluster(3);
    let groups: Vec<String> = (0..40).map(|k| format!("q{k:02}")).collect();
    for i in 0..3 {
        net.with(i, |e, now| e.join_many(now, groups.iter().map(|x| g(x))));
        assert!(net.run_until(Duration::from_secs(5), |net| net.engine_ref(i).my_groups().count() == 40));
    }
    net.run_for(Duration::from_millis(200)); // every group quiet: all delivered and stable
                                             // One group is busy when n3 crashes: its message reached n1 only.
    let hold = net.drop_msgs(Some(2), Some(1), |m| matches!(m, Msg::Data { .. }));
    net.with(2, |e, now| e.send(now, g("q07"), Order::Fifo, Bytes::from_static(b"last")).expect("sends"));
    assert!(net.run_until(Duration::from_secs(1), |net| net.nodes[0].delivered("q07").len() == 1));
    hold.set(false);
    net.crash(2);
    // What the decisions of the round name, as they go by.
    let named = Rc::new(std::cell::RefCell::new(Vec::new()));
    let seen = named.clone();
    net.set_filter(move |_, _, p| {
        for m in &p.msgs {
            if let Msg::Commit { decision, .. } = m {
                if !decision.removed.is_empty() {
                    seen.borrow_mut().push(decision.groups.iter().map(|gc| gc.group.to_string()).collect::<Vec<_>>());
                }
            }
        }
        Fate::Deliver
    });
    let gone = |net: &Net| {
        (0..2).all(|i| groups.iter().all(|x| net.nodes[i].views(x).last().is_some_and(|v| v.1 == ["n1", "n2"])))
    };
    assert!(net.run_until(Duration::from_secs(3), gone), "n3 left every view");
    assert_eq!(*named.borrow(), vec![vec!["q07".to_string()]], "only the busy group is named");
    assert_eq!(net.engine_ref(1).stats().quiet_views, 39);
    // The busy group's cut gave n2 what only n1 had, in the view it was sent in.
    assert_eq!(net.nodes[1].delivered("q07"), vec![Bytes::from_static(b"last")]);
}
