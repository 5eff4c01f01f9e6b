//! Bootstrap from a peer list: the same configuration on every process, started in any
//! order, forms one cluster once a majority of the list is up, and later ones join it.

mod harness;

use harness::{g, Net};
use std::time::Duration;
use synchrony_engine::{Config, PeerList, Status};

fn listed(c: &mut Config) {
    c.peer_list = Some(PeerList::of(&["n1", "n2", "n3", "n4", "n5"]));
}

/// A net of no processes yet, each to be started with the five-name peer list.
fn empty() -> Net {
    let mut net = Net::cluster_with(0, listed);
    net.latency = Duration::from_micros(200);
    net
}

fn start(net: &mut Net, i: usize) -> usize {
    let name = format!("n{i}");
    let others: Vec<String> = (1..=5).filter(|j| *j != i).map(|j| format!("n{j}")).collect();
    let refs: Vec<&str> = others.iter().map(String::as_str).collect();
    net.add_with_contacts(&name, &refs)
}

fn members(net: &Net, i: usize) -> Vec<String> {
    net.engine_ref(i).members().iter().map(|m| m.name.to_string()).collect()
}

#[test]
fn a_majority_of_the_list_forms_one_cluster_and_the_rest_join_it() {
    let mut net = empty();
    let a = start(&mut net, 3);
    let b = start(&mut net, 1);
    net.run_for(Duration::from_secs(1));
    // Two of five: no cluster.
    assert!(net.nodes.iter().all(|n| n.status() == Some(Status::Joining)), "two of five form nothing");
    let c = start(&mut net, 5);
    let formed = net.run_until(Duration::from_secs(3), |net| {
        [a, b, c].iter().all(|&i| net.nodes[i].status() == Some(Status::Member))
    });
    assert!(formed, "three of five form the cluster");
    assert_eq!(members(&net, a).len(), 3);
    net.with(a, |e, now| e.join(now, g("g")).expect("joins"));
    assert!(net.run_until(Duration::from_secs(1), |net| net.nodes[a].in_group("g")), "the cluster works");
    let d = start(&mut net, 2);
    let e = start(&mut net, 4);
    let all = net.run_until(Duration::from_secs(3), |net| {
        net.nodes.iter().all(|n| n.status() == Some(Status::Member))
            && (0..5).all(|i| net.engine_ref(i).members().len() == 5)
    });
    assert!(all, "later peers join the running cluster: {:?}", members(&net, d));
    assert_eq!(members(&net, e), members(&net, a));
}

/// A process given another list takes no part: two of the list and one with another list
/// form nothing, and each side counts the other's messages as a mismatch.
#[test]
fn a_process_with_another_peer_list_takes_no_part() {
    let mut net = empty();
    let a = start(&mut net, 1);
    let b = start(&mut net, 2);
    net.tweak = |c| c.peer_list = Some(PeerList::of(&["n1", "n2", "n3", "n4", "n6"]));
    let c = start(&mut net, 3);
    net.run_for(Duration::from_secs(2));
    assert!(net.nodes.iter().all(|n| n.status() == Some(Status::Joining)), "no majority agrees: no cluster");
    assert!(net.engine_ref(a).stats().peer_list_mismatches > 0);
    assert!(net.engine_ref(c).stats().peer_list_mismatches > 0);
    // With the right list, it completes the majority.
    net.tweak = listed;
    net.crash(c);
    let d = start(&mut net, 4);
    let formed = net.run_until(Duration::from_secs(3), |net| {
        [a, b, d].iter().all(|&i| net.nodes[i].status() == Some(Status::Member))
    });
    assert!(formed);
}
