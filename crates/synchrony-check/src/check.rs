//! Checks of the guarantees G1 to G13 over a set of traces.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use synchrony_trace::{digest, TraceEvent};

/// A broken guarantee, with the events that prove it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The guarantee, `G1` to `G13`.
    pub guarantee: &'static str,
    /// What is wrong.
    pub what: String,
    /// The events that show it.
    pub events: Vec<TraceEvent>,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{} violated: {}", self.guarantee, self.what)?;
        for e in &self.events {
            writeln!(f, "    {}", e.to_json_line())?;
        }
        Ok(())
    }
}

/// What to check beyond safety.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// The run ended quiescent (faults healed, traffic finished): check liveness (G13).
    pub quiescent: bool,
    /// With `quiescent`: a crashed process must be out of every surviving view of its groups
    /// within this many microseconds of its crash.
    pub crash_bound_us: Option<u64>,
}

/// What a check found.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// Events read.
    pub events: usize,
    /// Processes seen.
    pub processes: usize,
    /// Broken guarantees.
    pub violations: Vec<Violation>,
}

struct Seg {
    view: u64,
    view_ev: usize,
    /// Deliveries: event indices.
    delivers: Vec<usize>,
    /// The next view installed directly after, if any.
    next: Option<u64>,
    /// The process did not go on to a next view (crash, partition, leave, end of trace).
    survived: bool,
}

struct Episode {
    join_view: u64,
    join_ev: usize,
    state_ev: Option<usize>,
    segs: Vec<Seg>,
    left: bool,
}

/// A process and the total/safe messages it delivered, with their event indices.
type TotalSeq<'a> = (&'a str, Vec<(&'a str, usize)>);
/// A process that went on to a next view: what it delivered in the view, and its view event.
type Successor<'a> = (&'a str, BTreeSet<&'a str>, usize);

/// How long after a group's fresh start a non-member may still have sent to the old one.
const NON_MEMBER_GRACE_US: u64 = 1_000_000;

const CAUSAL: [&str; 3] = ["causal", "total", "safe"];

/// Checks every guarantee over `events` (any number of processes, in any order).
pub fn check(events: &[TraceEvent], opts: &Options) -> Report {
    let mut v = Vec::new();
    let ev = events;
    // Events of each process in local order.
    let mut by_p: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (k, e) in ev.iter().enumerate() {
        by_p.entry(e.p.as_str()).or_default().push(k);
    }
    for list in by_p.values_mut() {
        list.sort_by_key(|&k| ev[k].i);
    }
    let g_of = |k: usize| ev[k].group.as_deref().unwrap_or("");
    // Sends: msg -> (event, index among the sender's sends to that group).
    let mut sends: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    let mut send_count: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    let mut dead: BTreeMap<&str, usize> = BTreeMap::new();
    for (p, list) in &by_p {
        for &k in list {
            let e = &ev[k];
            match e.ev.as_str() {
                "send" => {
                    let c = send_count.entry((p, g_of(k))).or_default();
                    if let Some(m) = e.msg.as_deref() {
                        sends.insert(m, (k, *c));
                    }
                    *c += 1;
                }
                "crash" | "partitioned" => {
                    dead.entry(p).or_insert(k);
                }
                _ => {}
            }
        }
    }
    // Episodes of group membership per (group, process).
    let mut eps: BTreeMap<(&str, &str), Vec<Episode>> = BTreeMap::new();
    for (p, list) in &by_p {
        let mut after_stop: Option<usize> = None;
        for &k in list {
            let e = &ev[k];
            if let Some(s) = after_stop {
                if e.ev.as_str() != "crash" {
                    v.push(Violation {
                        guarantee: "G10",
                        what: format!("{p} acted after it stopped"),
                        events: vec![ev[s].clone(), e.clone()],
                    });
                    after_stop = None;
                }
            }
            match e.ev.as_str() {
                "view" => {
                    let g = g_of(k);
                    let id = e.view.unwrap_or(0);
                    if !e.members.as_ref().is_some_and(|m| m.iter().any(|x| x == p)) {
                        v.push(Violation {
                            guarantee: "G2",
                            what: format!("{p} installed a view of {g} that does not contain it"),
                            events: vec![e.clone()],
                        });
                    }
                    let list = eps.entry((g, p)).or_default();
                    let open = list.last_mut().filter(|ep| !ep.left);
                    let seg = Seg { view: id, view_ev: k, delivers: Vec::new(), next: None, survived: false };
                    match open {
                        Some(ep) => {
                            let last = ep.segs.last_mut().expect("episodes have a segment");
                            if id <= last.view {
                                v.push(Violation {
                                    guarantee: "G1",
                                    what: format!("{p} installed view {id} of {g} after view {}", last.view),
                                    events: vec![ev[last.view_ev].clone(), e.clone()],
                                });
                            }
                            last.next = Some(id);
                            last.survived = true;
                            ep.segs.push(seg);
                        }
                        None => list.push(Episode {
                            join_view: id,
                            join_ev: k,
                            state_ev: None,
                            segs: vec![seg],
                            left: false,
                        }),
                    }
                }
                "deliver" | "state" => {
                    let g = g_of(k);
                    match eps.get_mut(&(g, p)).and_then(|l| l.last_mut()).filter(|ep| !ep.left) {
                        Some(ep) => {
                            if e.ev.as_str() == "state" {
                                if ep.state_ev.is_none() {
                                    ep.state_ev = Some(k);
                                }
                            } else {
                                ep.segs.last_mut().expect("segment").delivers.push(k);
                            }
                        }
                        None => v.push(Violation {
                            guarantee: "G3",
                            what: format!("{p} delivered in {g} outside any view"),
                            events: vec![e.clone()],
                        }),
                    }
                }
                "leave" => {
                    if let Some(ep) = eps.get_mut(&(g_of(k), p)).and_then(|l| l.last_mut()) {
                        ep.left = true;
                    }
                }
                "partitioned" => after_stop = Some(k),
                _ => {}
            }
        }
    }
    let alive = |p: &str| !dead.contains_key(p);

    // G1: one membership per view id.
    let mut views: BTreeMap<(&str, u64), usize> = BTreeMap::new();
    for (k, e) in ev.iter().enumerate().filter(|(_, e)| e.ev.as_str() == "view") {
        let key = (g_of(k), e.view.unwrap_or(0));
        match views.get(&key) {
            Some(&first) => {
                let f = &ev[first];
                if f.members != e.members || f.primary != e.primary {
                    v.push(Violation {
                        guarantee: "G1",
                        what: format!("two different views {} of group {}", key.1, key.0),
                        events: vec![f.clone(), e.clone()],
                    });
                }
            }
            None => {
                views.insert(key, k);
            }
        }
        if e.primary == Some(false) {
            v.push(Violation {
                guarantee: "G10",
                what: "a non-primary view was installed".into(),
                events: vec![e.clone()],
            });
        }
    }

    // G2 and G3.
    let mut seen: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    let mut view_of: BTreeMap<&str, usize> = BTreeMap::new();
    for (k, e) in ev.iter().enumerate().filter(|(_, e)| e.ev.as_str() == "deliver") {
        let m = e.msg.as_deref().unwrap_or("");
        if let Some(&d) = seen.get(&(e.p.as_str(), m)) {
            v.push(Violation {
                guarantee: "G2",
                what: format!("{} delivered {m} twice", e.p),
                events: vec![ev[d].clone(), e.clone()],
            });
        }
        seen.insert((e.p.as_str(), m), k);
        let sender = m.rsplit_once('/').map(|(s, _)| s).unwrap_or("");
        if by_p.contains_key(sender) && !sends.contains_key(m) {
            v.push(Violation {
                guarantee: "G2",
                what: format!("{m} was delivered but never sent"),
                events: vec![e.clone()],
            });
        }
        match view_of.get(m) {
            Some(&first) if ev[first].view != e.view => v.push(Violation {
                guarantee: "G3",
                what: format!("{m} delivered in different views"),
                events: vec![ev[first].clone(), e.clone()],
            }),
            Some(_) => {}
            None => {
                view_of.insert(m, k);
            }
        }
    }

    // G4: same set between the same consecutive views.
    let mut sets: BTreeMap<(&str, u64, u64), (usize, BTreeSet<&str>)> = BTreeMap::new();
    for ((g, _), list) in &eps {
        for ep in list {
            for seg in &ep.segs {
                let Some(next) = seg.next else { continue };
                let set: BTreeSet<&str> = seg.delivers.iter().map(|&k| ev[k].msg.as_deref().unwrap_or("")).collect();
                match sets.get(&(g, seg.view, next)) {
                    Some((first, s0)) if *s0 != set => {
                        let diff: Vec<&&str> = s0.symmetric_difference(&set).take(5).collect();
                        v.push(Violation {
                            guarantee: "G4",
                            what: format!("members moved from view {} to {next} of {g} having delivered different sets (differ in {diff:?})", seg.view),
                            events: vec![ev[*first].clone(), ev[seg.view_ev].clone()],
                        });
                    }
                    Some(_) => {}
                    None => {
                        sets.insert((g, seg.view, next), (seg.view_ev, set));
                    }
                }
            }
        }
    }

    // G5 (fifo) and G6 (causal), per group.
    let mut vc_of: BTreeMap<&str, BTreeMap<&str, usize>> = BTreeMap::new();
    {
        // Vector clocks of sends, within each group: walk every process in local order,
        // repeating until every delivered message's clock is known.
        let mut clock: BTreeMap<(&str, &str), BTreeMap<&str, usize>> = BTreeMap::new();
        let mut pos: BTreeMap<&str, usize> = BTreeMap::new();
        loop {
            let mut progress = false;
            for (p, list) in &by_p {
                let at = pos.entry(p).or_default();
                while *at < list.len() {
                    let k = list[*at];
                    let e = &ev[k];
                    let g = g_of(k);
                    match e.ev.as_str() {
                        "send" => {
                            let c = clock.entry((g, p)).or_default();
                            let m = e.msg.as_deref().unwrap_or("");
                            c.insert(p, sends[m].1);
                            vc_of.insert(m, c.clone());
                        }
                        "deliver" => {
                            let m = e.msg.as_deref().unwrap_or("");
                            // Only causal-class messages carry their sender's past along.
                            let carries =
                                e.order.map(|o| o.as_str()).is_some_and(|o| CAUSAL.contains(&o) || o == "gbcast");
                            if carries && sends.contains_key(m) {
                                let Some(mc) = vc_of.get(m).cloned() else { break };
                                let c = clock.entry((g, p)).or_default();
                                for (s, i) in mc {
                                    let x = c.entry(s).or_insert(i);
                                    *x = (*x).max(i);
                                }
                            }
                        }
                        _ => {}
                    }
                    *at += 1;
                    progress = true;
                }
            }
            if !progress {
                break;
            }
        }
    }
    for (p, list) in &by_p {
        let mut last: BTreeMap<(&str, &str), (usize, usize)> = BTreeMap::new();
        let mut floor: BTreeMap<(&str, &str), (usize, usize)> = BTreeMap::new();
        for &k in list {
            let e = &ev[k];
            if e.ev.as_str() != "deliver" {
                continue;
            }
            let g = g_of(k);
            let m = e.msg.as_deref().unwrap_or("");
            let Some(&(sk, idx)) = sends.get(m) else { continue };
            let s = ev[sk].p.as_str();
            if let Some(&(pk, pidx)) = last.get(&(g, s)) {
                if pidx > idx {
                    v.push(Violation {
                        guarantee: "G5",
                        what: format!("{p} delivered {s}'s messages out of send order"),
                        events: vec![ev[pk].clone(), e.clone()],
                    });
                }
            }
            last.insert((g, s), (k, idx));
            if let Some(&(fk, f)) = floor.get(&(g, s)) {
                if idx <= f && ev[fk].msg.as_deref() != Some(m) {
                    v.push(Violation {
                        guarantee: "G6",
                        what: format!(
                            "{p} delivered {m} after {} although {m} happened before its send",
                            ev[fk].msg.as_deref().unwrap_or("")
                        ),
                        events: vec![ev[fk].clone(), e.clone()],
                    });
                }
            }
            if e.order.map(|o| o.as_str()).is_some_and(|o| CAUSAL.contains(&o)) {
                if let Some(vc) = vc_of.get(m) {
                    for (s2, &i2) in vc {
                        if *s2 == s && i2 == idx {
                            continue;
                        }
                        let f = floor.entry((g, s2)).or_insert((k, i2));
                        if i2 > f.1 || (i2 == f.1 && f.0 != k) {
                            *f = (k, i2.max(f.1));
                        }
                    }
                }
            }
        }
    }

    // G7: one order of total and safe messages (a process that does not survive a view is
    // exempt for its non-safe messages of that view: total order is not uniform).
    let mut seqs: BTreeMap<&str, Vec<TotalSeq>> = BTreeMap::new();
    for ((g, p), list) in &eps {
        let mut s = Vec::new();
        for ep in list {
            for seg in &ep.segs {
                let survives = seg.survived || (alive(p) && !ep.left);
                for &k in &seg.delivers {
                    let o = ev[k].order.map(|o| o.as_str()).unwrap_or("");
                    if o == "safe" || (o == "total" && survives) {
                        s.push((ev[k].msg.as_deref().unwrap_or(""), k));
                    }
                }
            }
        }
        seqs.entry(g).or_default().push((p, s));
    }
    for list in seqs.values() {
        'pairs: for a in 0..list.len() {
            let pos: BTreeMap<&str, (usize, usize)> =
                list[a].1.iter().enumerate().map(|(n, (m, k))| (*m, (n, *k))).collect();
            for b in a + 1..list.len() {
                let mut prev: Option<(usize, usize)> = None;
                for (m, k) in &list[b].1 {
                    if let Some(&(n, ka)) = pos.get(m) {
                        if let Some((pn, pk)) = prev {
                            if n < pn {
                                v.push(Violation {
                                    guarantee: "G7",
                                    what: format!(
                                        "{} and {} delivered total messages in different orders",
                                        list[a].0, list[b].0
                                    ),
                                    events: vec![ev[pk].clone(), ev[*k].clone(), ev[ka].clone()],
                                });
                                continue 'pairs;
                            }
                        }
                        prev = Some((n, *k));
                    }
                }
            }
        }
    }

    // G8: a gbcast sees the same deliveries before it everywhere; G9: safe is uniform.
    let mut gb: BTreeMap<&str, (usize, BTreeSet<&str>)> = BTreeMap::new();
    let mut next_of: BTreeMap<(&str, u64), Vec<Successor>> = BTreeMap::new();
    for ((g, p), list) in &eps {
        for ep in list {
            for seg in &ep.segs {
                let mut before = BTreeSet::new();
                for &k in &seg.delivers {
                    let m = ev[k].msg.as_deref().unwrap_or("");
                    if ev[k].order.map(|o| o.as_str()) == Some("gbcast") {
                        match gb.get(m) {
                            Some((first, b0)) if *b0 != before => v.push(Violation {
                                guarantee: "G8",
                                what: format!("gbcast {m} was delivered after different messages"),
                                events: vec![ev[*first].clone(), ev[k].clone()],
                            }),
                            Some(_) => {}
                            None => {
                                gb.insert(m, (k, before.clone()));
                            }
                        }
                    }
                    before.insert(m);
                }
                if seg.next.is_some() {
                    next_of.entry((g, seg.view)).or_default().push((p, before, seg.view_ev));
                }
            }
        }
    }
    for ((g, _), list) in &eps {
        for ep in list {
            for seg in &ep.segs {
                for &k in &seg.delivers {
                    if ev[k].order.map(|o| o.as_str()) != Some("safe") {
                        continue;
                    }
                    let m = ev[k].msg.as_deref().unwrap_or("");
                    for (q, set, qk) in next_of.get(&(g, seg.view)).into_iter().flatten() {
                        if !set.contains(m) {
                            v.push(Violation {
                                guarantee: "G9",
                                what: format!(
                                    "safe {m} was delivered by {} but not by {q}, which installed the next view",
                                    ev[k].p
                                ),
                                events: vec![ev[k].clone(), ev[*qk].clone()],
                            });
                        }
                    }
                }
            }
        }
    }

    // G11: state transfer, with each joiner's state recomputed from its provider's history.
    let mut state_sent: BTreeMap<(&str, u64), Vec<usize>> = BTreeMap::new();
    for (k, e) in ev.iter().enumerate().filter(|(_, e)| e.ev.as_str() == "state_sent") {
        state_sent.entry((g_of(k), e.view.unwrap_or(0))).or_default().push(k);
    }
    let mut has: BTreeMap<(&str, &str, usize), BTreeSet<&str>> = BTreeMap::new();
    let mut joins: Vec<(&str, u64, &str, usize)> = Vec::new();
    for ((g, p), list) in &eps {
        for (n, ep) in list.iter().enumerate() {
            joins.push((g, ep.join_view, p, n));
        }
    }
    joins.sort();
    for (g, view, p, n) in joins {
        let ep = &eps[&(g, p)][n];
        let first = &ev[ep.join_ev];
        let others_old = first.members.as_ref().is_some_and(|ms| {
            ms.iter().any(|m| {
                m != p
                    && eps
                        .get(&(g, m.as_str()))
                        // Some other member came from the previous view: there is a state to give.
                        .is_some_and(|l| l.iter().any(|e| e.join_view < view && e.segs.iter().any(|s| s.view == view)))
            })
        });
        let mut set: BTreeSet<&str> = BTreeSet::new();
        if others_old || ep.state_ev.is_some() {
            let Some(sk) = ep.state_ev else {
                if let Some(&d) = ep.segs.iter().flat_map(|s| s.delivers.iter()).next() {
                    v.push(Violation {
                        guarantee: "G11",
                        what: format!("{p} joined {g} in view {view} and delivered without a state"),
                        events: vec![first.clone(), ev[d].clone()],
                    });
                }
                continue;
            };
            if let Some(&d) = ep.segs.iter().flat_map(|s| s.delivers.iter()).find(|&&d| ev[d].i < ev[sk].i) {
                v.push(Violation {
                    guarantee: "G11",
                    what: format!("{p} delivered in {g} before its state arrived"),
                    events: vec![ev[d].clone(), ev[sk].clone()],
                });
            }
            let got = ev[sk].digest.as_deref().unwrap_or("");
            let senders = state_sent.get(&(g, view)).cloned().unwrap_or_default();
            for &s in &senders {
                if ev[s].digest.as_deref() != Some(got) && ev[s].to.as_deref() == Some(p) {
                    v.push(Violation {
                        guarantee: "G11",
                        what: format!("{p}'s state differs from what was sent to it"),
                        events: vec![ev[s].clone(), ev[sk].clone()],
                    });
                }
            }
            // Recompute from a provider that installed the join view.
            let provider = senders.iter().map(|&s| ev[s].p.as_str()).find(|q| eps.contains_key(&(g, *q)));
            if let Some(q) = provider {
                let qeps = &eps[&(g, q)];
                if let Some((qn, qep)) = qeps.iter().enumerate().rev().find(|(_, e)| e.join_view < view) {
                    let mut expect: BTreeSet<&str> = has.get(&(g, q, qn)).cloned().unwrap_or_default();
                    for seg in qep.segs.iter().filter(|s| s.view < view) {
                        expect.extend(seg.delivers.iter().map(|&k| ev[k].msg.as_deref().unwrap_or("")));
                    }
                    let want = digest(expect.iter().copied());
                    if want != got {
                        v.push(Violation {
                            guarantee: "G11",
                            what: format!("{p}'s state for view {view} of {g} is not the group's state at the join ({} messages expected, digest {want})", expect.len()),
                            events: vec![first.clone(), ev[sk].clone()],
                        });
                    }
                    set = expect;
                }
            }
        }
        has.insert((g, p, n), set);
    }
    // The full state each episode reached.
    let mut full: BTreeMap<(&str, &str), Vec<BTreeSet<&str>>> = BTreeMap::new();
    for ((g, p), list) in &eps {
        for (n, ep) in list.iter().enumerate() {
            let mut s = has.get(&(g, p, n)).cloned().unwrap_or_default();
            for seg in &ep.segs {
                s.extend(seg.delivers.iter().map(|&k| ev[k].msg.as_deref().unwrap_or("")));
            }
            full.entry((g, p)).or_default().push(s);
        }
    }
    let holds = |g: &str, q: &str, m: &str| full.get(&(g, q)).is_some_and(|l| l.iter().any(|s| s.contains(m)));

    // G12: after flush, the caller's earlier messages reach every member that goes on.
    for (p, list) in &by_p {
        for (n, &k) in list.iter().enumerate() {
            let e = &ev[k];
            if e.ev.as_str() != "flush" {
                continue;
            }
            let g = g_of(k);
            let Some(&vk) = views.get(&(g, e.view.unwrap_or(0))) else { continue };
            let members = ev[vk].members.clone().unwrap_or_default();
            // The caller's messages since it (last) joined the group.
            let joined = eps
                .get(&(g, *p))
                .and_then(|l| l.iter().rev().find(|ep| ev[ep.join_ev].i <= e.i))
                .map_or(0, |ep| ev[ep.join_ev].i);
            // With `covers`, the sends up to that message; else every send before the return.
            let upto = match &e.covers {
                Some(c) => list[..n]
                    .iter()
                    .position(|&k| ev[k].ev.as_str() == "send" && ev[k].msg.as_deref() == Some(c))
                    .map_or(0, |x| x + 1),
                None => n,
            };
            for &sk in &list[..upto] {
                let s = &ev[sk];
                if s.ev.as_str() != "send" || s.group.as_deref() != Some(g) || s.i < joined {
                    continue;
                }
                let m = s.msg.as_deref().unwrap_or("");
                for q in &members {
                    let goes_on = eps.get(&(g, q.as_str())).is_some_and(|l| {
                        l.iter().any(|ep| {
                            ep.segs
                                .iter()
                                .any(|sg| sg.view == e.view.unwrap_or(0) && (sg.survived || (alive(q) && !ep.left)))
                        })
                    });
                    if goes_on && !holds(g, q, m) {
                        v.push(Violation {
                            guarantee: "G12",
                            what: format!("{p} flushed but {q} never got {m}"),
                            events: vec![s.clone(), e.clone()],
                        });
                    }
                }
            }
        }
    }

    // G13: liveness at quiescence.
    if opts.quiescent {
        let mut finals: BTreeMap<&str, Vec<(&str, &Seg)>> = BTreeMap::new();
        for ((g, p), list) in &eps {
            if let Some(ep) = list.last().filter(|ep| !ep.left && alive(p)) {
                finals.entry(g).or_default().push((p, ep.segs.last().expect("segment")));
            }
        }
        for (g, list) in &finals {
            let top = list.iter().map(|(_, s)| s.view).max().unwrap_or(0);
            for (p, s) in list {
                if s.view != top {
                    v.push(Violation {
                        guarantee: "G13",
                        what: format!("{p} ended in view {} of {g}, not the last view {top}", s.view),
                        events: vec![ev[s.view_ev].clone()],
                    });
                }
            }
        }
        let left: BTreeSet<(&str, &str)> = ev
            .iter()
            .filter(|e| e.ev.as_str() == "leave")
            .map(|e| (e.group.as_deref().unwrap_or(""), e.p.as_str()))
            .collect();
        // A group whose members all failed starts over with no state (recovery from total
        // failure is the durability layer's job): messages delivered before its last fresh
        // start are not owed to its final members.
        let mut fresh: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
        for (&(g, id), &k) in &views {
            let before = views.get(&(g, id.wrapping_sub(1))).and_then(|&pk| ev[pk].members.as_ref());
            let members = ev[k].members.as_deref().unwrap_or(&[]);
            if !before.is_some_and(|b| members.iter().any(|m| b.contains(m))) {
                let t = ev
                    .iter()
                    .filter(|e| e.ev.as_str() == "view" && e.group.as_deref() == Some(g) && e.view == Some(id));
                fresh.insert(g, (id, t.map(|e| e.t).min().unwrap_or(0)));
            }
        }
        for (m, &(sk, _)) in &sends {
            let s = &ev[sk];
            let g = g_of(sk);
            if !alive(&s.p) || left.contains(&(g, s.p.as_str())) {
                continue;
            }
            // Messages to an earlier lineage are not owed to this one: delivered there, or
            // reported lost to their sender when it died.
            let (start, since) = fresh.get(g).copied().unwrap_or((0, 0));
            if view_of.get(m).is_some_and(|&d| ev[d].view.unwrap_or(0) < start) || (start > 1 && s.t < since) {
                continue;
            }
            // G13 promises delivery of a member's sends. A non-member's send is owed too,
            // unless the group's last lineage began around it: a non-member learns of a new
            // lineage late, and what it handed to the dead one is reported lost to it.
            if s.view.is_none() && start > 1 && s.t < since + NON_MEMBER_GRACE_US {
                continue;
            }
            for (q, _) in finals.get(g).into_iter().flatten() {
                if !holds(g, q, m) {
                    v.push(Violation {
                        guarantee: "G13",
                        what: format!("{q} never got {m}, sent by a correct process"),
                        events: vec![s.clone()],
                    });
                    break;
                }
            }
        }
        if let Some(bound) = opts.crash_bound_us {
            for (p, &ck) in &dead {
                if ev[ck].ev.as_str() != "crash" {
                    continue;
                }
                let t = ev[ck].t;
                for (g, list) in &finals {
                    for (q, _) in list {
                        let late = eps[&(*g, *q)].iter().flat_map(|ep| ep.segs.iter()).find(|s| {
                            let e = &ev[s.view_ev];
                            e.t > t + bound && e.members.as_ref().is_some_and(|m| m.iter().any(|x| x == p))
                        });
                        if let Some(s) = late {
                            v.push(Violation {
                                guarantee: "G13",
                                what: format!("{p} crashed but was still in a view of {g} after the bound"),
                                events: vec![ev[ck].clone(), ev[s.view_ev].clone()],
                            });
                        }
                    }
                }
            }
        }
    }
    Report { events: events.len(), processes: by_p.len(), violations: v }
}
