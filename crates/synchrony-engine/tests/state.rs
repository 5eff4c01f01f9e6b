//! State transfer in chunks (`Config::state_chunk_bytes`), a window of them asked for at
//! once (`Config::state_window_bytes`): a joiner whose provider fails in the middle of a
//! transfer goes on from the next provider where it was, if that one's state begins with
//! the same bytes, and starts again otherwise.

mod harness;

use bytes::Bytes;
use harness::{g, Fate, Net};
use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;
use synchrony_engine::wire::Msg;
use synchrony_engine::Event;

const SIZE: usize = 200_000;

fn state(salt: u8) -> Bytes {
    (0..SIZE).map(|i| (i as u8).wrapping_mul(7).wrapping_add(salt) ^ (i >> 9) as u8).collect::<Vec<u8>>().into()
}

/// A fetch the joiner sent.
struct Fetch {
    to: usize,
    offset: u64,
    len: u64,
    resuming: bool,
}

/// Every state fetch `joiner` sends from now on.
fn record_fetches(net: &mut Net, joiner: usize) -> Rc<RefCell<Vec<Fetch>>> {
    let fetches = Rc::new(RefCell::new(Vec::new()));
    let seen = fetches.clone();
    net.set_filter(move |from, to, p| {
        for m in p.msgs.iter().filter(|_| from == joiner) {
            if let Msg::StateFetch { offset, len, prefix, .. } = m {
                seen.borrow_mut().push(Fetch { to, offset: *offset, len: *len, resuming: prefix.is_some() });
            }
        }
        Fate::Deliver
    });
    fetches
}

/// n1, n2 and n3 in `g`; n4 joins, and the three provide `state_of(i)`. Once n4 has a
/// quarter of its state, the provider it is fetching from crashes. Returns the state n4
/// loaded, how many transfers it resumed, and the fetches it sent (to, offset, resuming).
fn join_and_crash_the_provider(state_of: fn(usize) -> Bytes) -> (Bytes, u64, Vec<(usize, u64, bool)>) {
    let mut net = Net::cluster_with(4, |c| {
        c.state_chunk_bytes = 1024;
        c.state_window_bytes = 4096;
    });
    net.join_all("g", &[0, 1, 2]);
    net.auto_state = false;
    let fetches = record_fetches(&mut net, 3);
    net.with(3, |e, now| e.join(now, g("g")).expect("joins"));
    let requests = |net: &Net, i: usize| -> Vec<synchrony_engine::ViewId> {
        let views = net.nodes[i].events.iter().filter_map(|e| match e {
            Event::StateRequest { view, .. } => Some(*view),
            _ => None,
        });
        views.collect()
    };
    // The requests of n2's and n3's joins were answered already.
    let mut provided: Vec<usize> = (0..3).map(|i| requests(&net, i).len()).collect();
    let mut crashed = false;
    let loaded = |net: &Net| {
        net.nodes[3].events.iter().find_map(|e| match e {
            Event::State { state, .. } => Some(state.clone()),
            _ => None,
        })
    };
    let deadline = net.now + Duration::from_secs(10);
    while net.now < deadline {
        for (i, answered) in provided.iter_mut().enumerate() {
            if net.nodes[i].engine.is_none() {
                continue;
            }
            for view in requests(&net, i).into_iter().skip(*answered) {
                let s = state_of(i);
                net.with(i, |e, now| e.provide_state(now, &g("g"), view, s));
                *answered += 1;
            }
        }
        let last = fetches.borrow().last().map(|f| (f.to, f.offset));
        if let Some((to, offset)) = last.filter(|&(_, o)| !crashed && o >= (SIZE / 4) as u64) {
            assert!(offset < SIZE as u64, "still under way");
            net.crash(to);
            crashed = true;
        }
        if loaded(&net).is_some() || !net.step() {
            break;
        }
    }
    let state = loaded(&net).expect("n4 loaded a state");
    let resumed = net.engine_ref(3).stats().state_resumed;
    let list = fetches.borrow().iter().map(|f| (f.to, f.offset, f.resuming)).collect();
    (state, resumed, list)
}

#[test]
fn a_transfer_whose_provider_fails_goes_on_from_the_next_provider_where_it_was() {
    let (loaded, resumed, fetches) = join_and_crash_the_provider(|_| state(1));
    assert!(loaded == state(1), "the state arrived whole and as provided");
    assert_eq!(resumed, 1);
    let first = fetches[0].0;
    let (to, offset, resuming) = *fetches.iter().find(|f| f.0 != first).expect("a fetch to another provider");
    assert!(resuming && offset >= (SIZE / 4) as u64, "asked {} from {offset}, resuming {resuming}", to + 1);
    let from_zero = fetches.iter().filter(|f| f.0 == to && f.1 == 0).count();
    assert_eq!(from_zero, 0, "nothing fetched twice from the start");
}

#[test]
fn a_transfer_whose_next_provider_has_other_bytes_starts_again() {
    // Providers whose states differ (an application whose state is not a function of what
    // it delivered): the next provider's bytes cannot continue the first one's.
    let (loaded, resumed, _) = join_and_crash_the_provider(|i| state(i as u8 + 1));
    assert_eq!(resumed, 0);
    assert!(loaded == state(2) || loaded == state(3), "the whole state of one provider, not a mix");
}

/// A joiner asks for a window of chunks at a time, and for the next window when half of
/// the last one came: a 200 KB state in 1 KiB chunks takes a fetch per 16 KiB, not one per
/// chunk, and arrives whole.
#[test]
fn a_transfer_asks_for_a_window_of_chunks_at_a_time() {
    let (loaded, fetches) = {
        let mut net = Net::cluster_with(2, |c| {
            c.state_chunk_bytes = 1024;
            c.state_window_bytes = 16 * 1024;
        });
        net.join_all("g", &[0]);
        net.auto_state = false;
        let fetches = record_fetches(&mut net, 1);
        net.with(1, |e, now| e.join(now, g("g")).expect("joins"));
        let mut loaded = None;
        let deadline = net.now + Duration::from_secs(5);
        while loaded.is_none() && net.now < deadline && net.step() {
            let asked = net.nodes[0].events.iter().rev().find_map(|e| match e {
                Event::StateRequest { view, .. } => Some(*view),
                _ => None,
            });
            if let Some(view) = asked {
                net.with(0, |e, now| e.provide_state(now, &g("g"), view, state(5)));
            }
            loaded = net.nodes[1].events.iter().find_map(|e| match e {
                Event::State { state, .. } => Some(state.clone()),
                _ => None,
            });
        }
        let asked: Vec<(u64, u64)> = fetches.borrow().iter().map(|f| (f.offset, f.len)).collect();
        (loaded.expect("n2 loaded a state"), asked)
    };
    assert!(loaded == state(5), "the state arrived whole");
    let windows = SIZE.div_ceil(16 * 1024);
    assert!(fetches.len() <= windows + 2, "{} fetches for {windows} windows: {fetches:?}", fetches.len());
    // Each window is asked for from where the last one ends.
    for w in fetches.windows(2).filter(|w| w[1].0 > 0) {
        assert_eq!(w[1].0, w[0].0 + w[0].1, "windows follow each other: {fetches:?}");
    }
}

/// Runs until process `i` has a state request; its view.
fn first_request(net: &mut Net, i: usize) -> synchrony_engine::ViewId {
    loop {
        let asked = net.nodes[i].events.iter().find_map(|e| match e {
            Event::StateRequest { view, .. } => Some(*view),
            _ => None,
        });
        if let Some(view) = asked {
            return view;
        }
        assert!(net.step(), "the join goes on");
    }
}

/// What a joiner that reads its state as a stream ends with: the bytes since the last
/// restart (a part at offset 0 after others), and how many restarts there were.
fn streamed(net: &Net, i: usize) -> (Vec<u8>, usize) {
    let (mut bytes, mut restarts) = (Vec::new(), 0);
    for d in &net.nodes[i].state_data {
        if d.offset < bytes.len() as u64 {
            assert_eq!(d.offset, 0, "a part goes on where the last ended, or starts again");
            bytes.clear();
            restarts += 1;
        }
        assert_eq!(d.offset, bytes.len() as u64);
        bytes.extend_from_slice(&d.data);
    }
    (bytes, restarts)
}

/// The provider writes its state in parts while the group goes on (a message is sent and
/// delivered at the provider before the last part), at most two windows held at a time;
/// the joiner reads the parts as they come, stalls the transfer while it does not read,
/// and gets the message after its (empty) `State` event.
#[test]
fn a_state_written_in_parts_while_the_group_goes_on_is_read_in_parts() {
    const WINDOW: usize = 4096;
    let mut net = Net::cluster_with(2, |c| {
        c.state_chunk_bytes = 1024;
        c.state_window_bytes = WINDOW;
    });
    net.join_all("g", &[0]);
    net.auto_state = false;
    net.read_state = false;
    net.with(1, |e, now| {
        e.stream_state(g("g"));
        e.join(now, g("g")).expect("joins")
    });
    let whole = state(9);
    let view = first_request(&mut net, 0);
    // The first part opens the group: a message goes on while the rest is written.
    net.with(0, |e, now| {
        e.begin_state(now, &g("g"), view);
        e.provide_state_part(now, &g("g"), view, whole.slice(..1000), false)
    });
    net.with(0, |e, now| e.send(now, g("g"), synchrony_engine::Order::Total, "after".into()).expect("sends"));
    let (mut written, mut most_held) = (1000, 0);
    let (mut read, mut blocked) = (0, false);
    let deadline = net.now + Duration::from_secs(10);
    while net.now < deadline {
        let held = net.engine_ref(0).state_backlog(&g("g"), view);
        most_held = most_held.max(held.unwrap_or(0));
        if written < SIZE && held.is_some_and(|h| h < 2 * WINDOW as u64) {
            let to = (written + 3000).min(SIZE);
            net.with(0, |e, now| e.provide_state_part(now, &g("g"), view, whole.slice(written..to), to == SIZE));
            written = to;
        }
        // The joiner reads nothing until the provider must wait for it.
        blocked |= held.is_some_and(|h| h >= 2 * WINDOW as u64);
        let unread: u64 = net.nodes[1].state_data.iter().map(|d| d.data.len() as u64).sum::<u64>() - read;
        if blocked && unread > 0 {
            net.with(1, |e, now| e.state_read(now, &g("g"), unread));
            read += unread;
        } else {
            assert!(unread <= 2 * WINDOW as u64, "the joiner was handed {unread} bytes it has not read");
        }
        let done = net.nodes[1].events.iter().any(|e| matches!(e, Event::State { .. }));
        if done || !net.step() {
            break;
        }
    }
    net.run_for(Duration::from_millis(50));
    let (bytes, restarts) = streamed(&net, 1);
    let got = bytes.len();
    assert!(blocked && bytes == whole[..] && restarts == 0, "{got} of {SIZE} bytes in order, {restarts} restarts");
    let end = net.nodes[1].state_data.last().expect("parts");
    assert!(end.data.is_empty() && end.offset == SIZE as u64, "an empty part ends the state: {end:?}");
    let events: Vec<&Event> =
        net.nodes[1].events.iter().filter(|e| matches!(e, Event::State { .. } | Event::Deliver(_))).collect();
    assert!(matches!(events[0], Event::State { state, .. } if state.is_empty()), "{events:?}");
    assert!(matches!(events[1], Event::Deliver(d) if d.payload == "after"), "{events:?}");
    let at_provider = net.nodes[0].events.iter().any(|e| matches!(e, Event::Deliver(d) if d.payload == "after"));
    assert!(at_provider, "the provider's group went on while it wrote");
    assert!(most_held <= (2 * WINDOW + 3000) as u64 + 16, "the provider held {most_held} bytes at most");
    assert_eq!(net.engine_ref(0).state_backlog(&g("g"), view), None, "the joiner is done: nothing is held");
}

/// A provider writing its state in parts crashes in the middle of a transfer: the joiner
/// starts again from the beginning with the next provider (a part at offset 0), and ends
/// with that provider's whole state.
#[test]
fn a_streamed_transfer_whose_provider_fails_starts_again_at_the_next() {
    let mut net = Net::cluster_with(3, |c| {
        c.state_chunk_bytes = 1024;
        c.state_window_bytes = 4096;
    });
    net.join_all("g", &[0, 1]);
    net.auto_state = false;
    net.with(2, |e, now| {
        e.stream_state(g("g"));
        e.join(now, g("g")).expect("joins")
    });
    let whole = state(3);
    let mut written = [0usize; 2];
    let mut crashed = false;
    let deadline = net.now + Duration::from_secs(10);
    while net.now < deadline {
        for (i, w) in written.iter_mut().enumerate() {
            let asked = net.nodes[i].events.iter().rev().find_map(|e| match e {
                Event::StateRequest { view, .. } => Some(*view),
                _ => None,
            });
            let Some(view) = asked.filter(|_| net.nodes[i].engine.is_some() && *w < SIZE) else { continue };
            if *w == 0 {
                net.with(i, |e, now| e.begin_state(now, &g("g"), view));
            }
            if net.engine_ref(i).state_backlog(&g("g"), view).is_some_and(|h| h < 8192) {
                let to = (*w + 2000).min(SIZE);
                net.with(i, |e, now| e.provide_state_part(now, &g("g"), view, whole.slice(*w..to), to == SIZE));
                *w = to;
            }
        }
        let (bytes, _) = streamed(&net, 2);
        if !crashed && bytes.len() >= SIZE / 4 {
            net.crash(0);
            crashed = true;
        }
        if net.nodes[2].events.iter().any(|e| matches!(e, Event::State { .. })) || !net.step() {
            break;
        }
    }
    let (bytes, restarts) = streamed(&net, 2);
    assert!(crashed && restarts == 1, "crashed {crashed}, restarts {restarts}");
    assert!(bytes == whole[..], "the next provider's whole state");
}

/// A joiner whose state is coming holds back its acknowledgements once the messages held
/// for it pass `Config::joiner_hold_bytes`: the sender's messages stay unstable (its flow
/// control would wait) until the state is in, then all become stable and are delivered
/// after the state.
#[test]
fn a_joiner_holding_too_much_for_its_state_holds_back_its_acknowledgements() {
    let mut net = Net::cluster_with(2, |c| {
        c.state_chunk_bytes = 1024;
        c.state_window_bytes = 4096;
        c.joiner_hold_bytes = 1000;
    });
    net.join_all("g", &[0]);
    net.auto_state = false;
    net.with(1, |e, now| e.join(now, g("g")).expect("joins"));
    let view = first_request(&mut net, 0);
    // The provider writes the first part only: the transfer is under way.
    net.with(0, |e, now| {
        e.begin_state(now, &g("g"), view);
        e.provide_state_part(now, &g("g"), view, Bytes::from_static(b"first"), false)
    });
    for k in 0..50 {
        let payload = Bytes::from(vec![k as u8; 100]);
        net.with(0, |e, now| e.send(now, g("g"), synchrony_engine::Order::Fifo, payload).expect("sends"));
        net.run_for(Duration::from_millis(2));
    }
    net.run_for(Duration::from_millis(100));
    let unstable = net.engine_ref(0).outstanding(&g("g"));
    assert!(unstable >= 40, "only {unstable} of 50 messages unstable: the joiner acknowledged what it held");
    assert_eq!(net.engine_ref(1).stats().joiner_throttles, 1);
    net.with(0, |e, now| e.provide_state_part(now, &g("g"), view, Bytes::new(), true));
    net.run_for(Duration::from_millis(100));
    assert_eq!(net.engine_ref(0).outstanding(&g("g")), 0, "all stable once the state is in");
    let after: Vec<&Event> =
        net.nodes[1].events.iter().filter(|e| matches!(e, Event::State { .. } | Event::Deliver(_))).collect();
    assert!(matches!(after[0], Event::State { state, .. } if &state[..] == b"first"));
    assert_eq!(after.len(), 51, "the state, then every message");
}

/// A join refused after `stream_state` leaves no stream behind: the process's next join of
/// the group, not asked to stream, gets its state whole.
#[test]
fn a_refused_join_leaves_no_state_stream_behind() {
    let mut net = Net::cluster(2);
    net.join_all("g", &[0, 1]);
    let refused = net.with(1, |e, now| {
        e.stream_state(g("g"));
        e.join(now, g("g"))
    });
    assert!(refused.is_err(), "already a member");
    net.with(1, |e, now| e.leave(now, g("g")).expect("leaves"));
    assert!(net.run_until(Duration::from_secs(5), |net| !net.engine_ref(1).my_groups().any(|x| *x == g("g"))));
    net.auto_state = false;
    net.nodes[0].events.clear();
    net.nodes[1].events.clear();
    net.with(1, |e, now| e.join(now, g("g")).expect("joins"));
    let view = first_request(&mut net, 0);
    net.with(0, |e, now| e.provide_state(now, &g("g"), view, Bytes::from_static(b"whole")));
    let loaded = |net: &Net| {
        net.nodes[1].events.iter().find_map(|e| match e {
            Event::State { state, .. } => Some(state.clone()),
            _ => None,
        })
    };
    assert!(net.run_until(Duration::from_secs(5), |net| loaded(net).is_some()));
    assert_eq!(&loaded(&net).expect("loaded")[..], b"whole");
    assert!(net.nodes[1].state_data.is_empty(), "nothing came as a stream");
}
