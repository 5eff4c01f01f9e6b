//! Checks of the guarantees G1 to G13 over a set of traces: one function per guarantee,
//! each reading the shared [`Index`].

use crate::index::{Episode, Index};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use synchrony_engine::Order;
use synchrony_trace::{digest, EventKind, TraceEvent, DELIVERED_SET};

/// The guarantees of DESIGN.md, section 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Guarantee {
    /// View agreement: one membership per view id, installed in order.
    G1,
    /// Integrity: delivered at most once, only if sent; only views that contain it.
    G2,
    /// Same view: a message is delivered in one view everywhere.
    G3,
    /// Virtual synchrony: the same set of messages between the same two views.
    G4,
    /// FIFO: one sender's messages in the order it sent them.
    G5,
    /// Causal: never after a message whose send it happened before.
    G6,
    /// Total: one order of total and safe messages at every member.
    G7,
    /// View order: a gbcast sees the same deliveries before it everywhere.
    G8,
    /// Safe: delivered by every member that installs the next view, if by anyone.
    G9,
    /// Primary partition: no two views with one id, nothing after a stop.
    G10,
    /// State transfer: a joiner's first state is the group's at its join.
    G11,
    /// Flush: when `flush()` returns, the caller's messages are stable.
    G12,
    /// Liveness: at quiescence, every correct member's message is delivered and views
    /// settle.
    G13,
}

impl fmt::Display for Guarantee {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// A broken guarantee, with the events that prove it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The guarantee.
    pub guarantee: Guarantee,
    /// What is wrong.
    pub what: String,
    /// The events that show it.
    pub events: Vec<TraceEvent>,
}

impl Violation {
    pub(crate) fn new<'e>(
        guarantee: Guarantee,
        what: String,
        events: impl IntoIterator<Item = &'e TraceEvent>,
    ) -> Self {
        Self { guarantee, what, events: events.into_iter().cloned().collect() }
    }
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

/// How far causality reaches when G6 is checked.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Causality {
    /// Within each group: happens-before is carried by the sends and deliveries of one
    /// group only (one vector clock per group), and every delivery is checked against the
    /// causal past of the ordered messages delivered before it (what engines configured
    /// with `causal_across_groups: false` keep).
    WithinGroups,
    /// Across groups, as DESIGN.md words G6 (CBCAST's causality): program order at each
    /// process over every group, and a send before each delivery of an ordered message
    /// (`causal`, `total`, `safe`, `gbcast`); only ordered messages are held for their causal
    /// past (`unordered` and `fifo` neither wait nor make others wait).
    #[default]
    AcrossGroups,
}

/// What to check beyond safety.
#[derive(Clone, Debug)]
pub struct Options {
    /// How far causality reaches for G6.
    pub causality: Causality,
    /// The run ended quiescent (faults healed, traffic finished): check liveness (G13).
    pub quiescent: bool,
    /// With `quiescent`: a crashed process must be out of every surviving view of its groups
    /// within this many microseconds of its crash.
    pub crash_bound_us: Option<u64>,
    /// A process whose trace ends without a `leave`, `partitioned` or `crash` event, and
    /// which later views of each group it was still in no longer contain, is taken as
    /// crashed after its last event (TRACE.md: a SIGKILL writes nothing). On by default; a
    /// harness that writes every crash (the simulator) turns it off to be strict.
    pub infer_crashes: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self { causality: Causality::default(), quiescent: false, crash_bound_us: None, infer_crashes: true }
    }
}

/// A process taken as crashed because its trace just ends (see [`Options::infer_crashes`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InferredCrash {
    /// The process (`name#incarnation`).
    pub process: String,
    /// Its last event: it crashed after it.
    pub last: TraceEvent,
    /// The groups whose later views exclude it.
    pub groups: Vec<String>,
}

impl fmt::Display for InferredCrash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} taken as crashed after its last event (its trace ends without leave, partitioned or crash, \
             and later views of {} exclude it)",
            self.process,
            self.groups.join(", ")
        )
    }
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
    /// What the trace did not allow to check, said once per kind.
    pub skipped: Vec<String>,
    /// Processes taken as crashed at the end of their traces ([`Options::infer_crashes`]).
    pub inferred_crashes: Vec<InferredCrash>,
}

/// A process and the total/safe messages it delivered, with their event indices.
type TotalSeq<'a> = (&'a str, Vec<(&'a str, usize)>);
/// A process that went on to a next view: what it delivered in the view, and its view event.
type Successor<'a> = (&'a str, BTreeSet<&'a str>, usize);

/// How long after a group's fresh start a non-member may still have sent to the old one.
const NON_MEMBER_GRACE_US: u64 = 1_000_000;

/// Whether delivering a message of this class carries its sender's past to the receiver
/// (only the ordered classes do, as in Isis only CBCAST carries a vector timestamp).
fn carries_causality(order: Option<Order>) -> bool {
    order.is_some_and(|o| o.is_causal() || o == Order::Gbcast)
}

/// Checks every guarantee over `events` (any number of processes, in any order).
pub fn check(events: &[TraceEvent], opts: &Options) -> Report {
    let mut v = Vec::new();
    let ix = Index::build(events, opts.infer_crashes, &mut v);
    g1_one_view_per_id(&ix, &mut v);
    g2_g3_deliveries(&ix, &mut v);
    g4_same_set(&ix, &mut v);
    g5_fifo(&ix, &mut v);
    g6_causal(&ix, opts.causality, &mut v);
    g7_total(&ix, &mut v);
    g8_gbcast(&ix, &mut v);
    g9_safe(&ix, &mut v);
    let states = g11_state_transfer(&ix, &mut v);
    g12_flush(&ix, &states, &mut v);
    if opts.quiescent {
        g13_liveness(&ix, &states, opts, &mut v);
    }
    let mut skipped = Vec::new();
    if opts.quiescent && opts.crash_bound_us.is_some() && !ix.silent.is_empty() {
        skipped.push(format!(
            "G13: whether {} processes taken as crashed were excluded within the bound (when they \
             crashed is not in their traces)",
            ix.silent.len()
        ));
    }
    if states.own > 0 {
        skipped.push(format!(
            "G11: {} joiner states are the application's own (no \"content\":\"delivered\"): checked that \
             each joiner loaded what its provider sent before delivering anything, and delivered nothing \
             its state stood for, not what the states hold",
            states.own
        ));
    }
    let inferred_crashes = ix
        .silent
        .iter()
        .map(|(p, (k, groups))| InferredCrash {
            process: p.to_string(),
            last: events[*k].clone(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
        })
        .collect();
    Report { events: events.len(), processes: ix.by_p.len(), violations: v, skipped, inferred_crashes }
}

/// G1: one membership per view id; G10: no view is non-primary.
fn g1_one_view_per_id(ix: &Index, v: &mut Vec<Violation>) {
    let ev = ix.ev;
    for e in ev.iter().filter(|e| e.is(EventKind::View)) {
        let first = &ev[ix.views[&(e.group(), e.view.unwrap_or(0))]];
        if first.members != e.members || first.primary != e.primary {
            let what = format!("two different views {} of group {}", e.view.unwrap_or(0), e.group());
            v.push(Violation::new(Guarantee::G1, what, [first, e]));
        }
        if e.primary == Some(false) {
            v.push(Violation::new(Guarantee::G10, "a non-primary view was installed".into(), [e]));
        }
    }
}

/// G2: delivered at most once, and only if sent; G3: in one view everywhere.
fn g2_g3_deliveries(ix: &Index, v: &mut Vec<Violation>) {
    let ev = ix.ev;
    let mut seen: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    for (k, e) in ev.iter().enumerate().filter(|(_, e)| e.is(EventKind::Deliver)) {
        let m = e.msg();
        if let Some(&d) = seen.get(&(e.p.as_str(), m)) {
            v.push(Violation::new(Guarantee::G2, format!("{} delivered {m} twice", e.p), [&ev[d], e]));
        }
        seen.insert((e.p.as_str(), m), k);
        let sender = m.rsplit_once('/').map(|(s, _)| s).unwrap_or("");
        if ix.by_p.contains_key(sender) && !ix.sends.contains_key(m) {
            v.push(Violation::new(Guarantee::G2, format!("{m} was delivered but never sent"), [e]));
        }
        let first = &ev[ix.first_delivery[m]];
        if first.view != e.view {
            v.push(Violation::new(Guarantee::G3, format!("{m} delivered in different views"), [first, e]));
        }
    }
}

/// G4: members that go from one view to the same next view delivered the same set in it.
fn g4_same_set(ix: &Index, v: &mut Vec<Violation>) {
    let ev = ix.ev;
    let mut sets: BTreeMap<(&str, u64, u64), (usize, BTreeSet<&str>)> = BTreeMap::new();
    for (g, _, ep) in ix.episodes() {
        for seg in &ep.segs {
            let Some(next) = seg.next else { continue };
            let set: BTreeSet<&str> = seg.delivers.iter().map(|&k| ix.msg(k)).collect();
            match sets.get(&(g, seg.view, next)) {
                Some((first, s0)) if *s0 != set => {
                    let diff: Vec<&&str> = s0.symmetric_difference(&set).take(5).collect();
                    let what = format!(
                        "members moved from view {} to {next} of {g} having delivered different sets (differ in {diff:?})",
                        seg.view
                    );
                    v.push(Violation::new(Guarantee::G4, what, [&ev[*first], &ev[seg.view_ev]]));
                }
                Some(_) => {}
                None => {
                    sets.insert((g, seg.view, next), (seg.view_ev, set));
                }
            }
        }
    }
}

/// G5: each process delivers a sender's messages to a group in the order it sent them.
fn g5_fifo(ix: &Index, v: &mut Vec<Violation>) {
    let ev = ix.ev;
    for (p, list) in &ix.by_p {
        let mut last: BTreeMap<(&str, &str), (usize, usize)> = BTreeMap::new();
        for &k in list.iter().filter(|&&k| ev[k].is(EventKind::Deliver)) {
            let e = &ev[k];
            let Some(&(sk, idx)) = ix.sends.get(e.msg()) else { continue };
            let s = ev[sk].p.as_str();
            if let Some(&(pk, pidx)) = last.get(&(e.group(), s)) {
                if pidx > idx {
                    let what = format!("{p} delivered {s}'s messages out of send order");
                    v.push(Violation::new(Guarantee::G5, what, [&ev[pk], e]));
                }
            }
            last.insert((e.group(), s), (k, idx));
        }
    }
}

/// A vector clock: per (group, sender), the index of the sender's latest send to the group
/// in the causal past.
type Clock<'a> = BTreeMap<(&'a str, &'a str), usize>;

/// The vector clock of each send: walks every process in local order, repeating until every
/// delivered message's clock is known. Happens-before is carried by program order and by
/// deliveries of the ordered classes; `across` groups (one clock per process) or within
/// each group (one clock per process and group).
fn causal_clocks<'a>(ix: &Index<'a>, across: bool) -> BTreeMap<&'a str, Clock<'a>> {
    let ev = ix.ev;
    let scope = |g: &'a str| if across { "" } else { g };
    let mut vc_of: BTreeMap<&str, Clock> = BTreeMap::new();
    let mut clock: BTreeMap<(&str, &str), Clock> = BTreeMap::new();
    let mut pos: BTreeMap<&str, usize> = BTreeMap::new();
    loop {
        let mut progress = false;
        for (p, list) in &ix.by_p {
            let at = pos.entry(p).or_default();
            while *at < list.len() {
                let e = &ev[list[*at]];
                let m = e.msg();
                match e.ev {
                    EventKind::Send => {
                        let c = clock.entry((scope(e.group()), p)).or_default();
                        c.insert((e.group(), p), ix.sends[m].1);
                        vc_of.insert(m, c.clone());
                    }
                    EventKind::Deliver if carries_causality(e.order) && ix.sends.contains_key(m) => {
                        let Some(mc) = vc_of.get(m).cloned() else { break };
                        let c = clock.entry((scope(e.group()), p)).or_default();
                        for (s, i) in mc {
                            let x = c.entry(s).or_insert(i);
                            *x = (*x).max(i);
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
    vc_of
}

/// G6: no process delivers a message after one whose send it happened before (see
/// [`Causality`] for how far causality reaches).
fn g6_causal(ix: &Index, causality: Causality, v: &mut Vec<Violation>) {
    let ev = ix.ev;
    let across = causality == Causality::AcrossGroups;
    let vc_of = causal_clocks(ix, across);
    for (p, list) in &ix.by_p {
        // Per (group, sender): the highest send index already in the causal past of what
        // this process delivered, and the delivery that put it there.
        let mut floor: BTreeMap<(&str, &str), (usize, usize)> = BTreeMap::new();
        for &k in list.iter().filter(|&&k| ev[k].is(EventKind::Deliver)) {
            let e = &ev[k];
            let (g, m) = (e.group(), e.msg());
            let Some(&(sk, idx)) = ix.sends.get(m) else { continue };
            let s = ev[sk].p.as_str();
            // Across groups, only ordered messages wait for their causal past.
            let held = !across || carries_causality(e.order);
            if let Some(&(fk, f)) = floor.get(&(g, s)).filter(|_| held) {
                if idx <= f && ev[fk].msg() != m {
                    let what =
                        format!("{p} delivered {m} after {} although {m} happened before its send", ev[fk].msg());
                    v.push(Violation::new(Guarantee::G6, what, [&ev[fk], e]));
                }
            }
            let carries = if across { carries_causality(e.order) } else { e.order.is_some_and(Order::is_causal) };
            if !carries {
                continue;
            }
            for (&(g2, s2), &i2) in vc_of.get(m).into_iter().flatten() {
                if (g2, s2) == (g, s) && i2 == idx {
                    continue;
                }
                let f = floor.entry((g2, s2)).or_insert((k, i2));
                if i2 > f.1 || (i2 == f.1 && f.0 != k) {
                    *f = (k, i2.max(f.1));
                }
            }
        }
    }
}

/// G7: one order of total and safe messages. A process that does not survive a view is
/// exempt for its total (not safe) messages of that view: total order is not uniform.
fn g7_total(ix: &Index, v: &mut Vec<Violation>) {
    let ev = ix.ev;
    // Per group: each process and the total/safe messages it delivered, in order.
    let mut seqs: BTreeMap<&str, Vec<TotalSeq>> = BTreeMap::new();
    for ((g, p), list) in &ix.eps {
        let mut s = Vec::new();
        for ep in list {
            for seg in &ep.segs {
                let survives = seg.survived || (ix.alive(p) && !ep.left);
                for &k in &seg.delivers {
                    let o = ev[k].order;
                    if o == Some(Order::Safe) || (o == Some(Order::Total) && survives) {
                        s.push((ix.msg(k), k));
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
                    let Some(&(n, ka)) = pos.get(m) else { continue };
                    if let Some((_, pk)) = prev.filter(|(pn, _)| n < *pn) {
                        let what =
                            format!("{} and {} delivered total messages in different orders", list[a].0, list[b].0);
                        v.push(Violation::new(Guarantee::G7, what, [&ev[pk], &ev[*k], &ev[ka]]));
                        continue 'pairs;
                    }
                    prev = Some((n, *k));
                }
            }
        }
    }
}

/// G8: a gbcast was delivered after the same messages (of its view) everywhere.
fn g8_gbcast(ix: &Index, v: &mut Vec<Violation>) {
    let ev = ix.ev;
    let mut gb: BTreeMap<&str, (usize, BTreeSet<&str>)> = BTreeMap::new();
    for (_, _, ep) in ix.episodes() {
        for seg in &ep.segs {
            let mut before = BTreeSet::new();
            for &k in &seg.delivers {
                let m = ix.msg(k);
                if ev[k].order == Some(Order::Gbcast) {
                    match gb.get(m) {
                        Some((first, b0)) if *b0 != before => {
                            let what = format!("gbcast {m} was delivered after different messages");
                            v.push(Violation::new(Guarantee::G8, what, [&ev[*first], &ev[k]]));
                        }
                        Some(_) => {}
                        None => {
                            gb.insert(m, (k, before.clone()));
                        }
                    }
                }
                before.insert(m);
            }
        }
    }
}

/// G9: a safe message delivered by anyone in a view is delivered by every member that
/// goes on to the next view.
fn g9_safe(ix: &Index, v: &mut Vec<Violation>) {
    let ev = ix.ev;
    // Per (group, view): who went on to a next view, what it delivered, its next view.
    let mut went_on: BTreeMap<(&str, u64), Vec<Successor>> = BTreeMap::new();
    for (g, p, ep) in ix.episodes() {
        for seg in ep.segs.iter().filter(|s| s.next.is_some()) {
            let set = seg.delivers.iter().map(|&k| ix.msg(k)).collect();
            went_on.entry((g, seg.view)).or_default().push((p, set, seg.view_ev));
        }
    }
    for (g, _, ep) in ix.episodes() {
        for seg in &ep.segs {
            for &k in seg.delivers.iter().filter(|&&k| ev[k].order == Some(Order::Safe)) {
                let m = ix.msg(k);
                for (q, set, qk) in went_on.get(&(g, seg.view)).into_iter().flatten() {
                    if !set.contains(m) {
                        let what = format!(
                            "safe {m} was delivered by {} but not by {q}, which installed the next view",
                            ev[k].p
                        );
                        v.push(Violation::new(Guarantee::G9, what, [&ev[k], &ev[*qk]]));
                    }
                }
            }
        }
    }
}

/// What each process held of each group: per (group, process), for each of its episodes,
/// every message in its state (what came by state transfer, then what it delivered).
struct States<'a> {
    full: BTreeMap<(&'a str, &'a str), Vec<BTreeSet<&'a str>>>,
    /// Joiner states that are the application's own (not the delivered set).
    own: usize,
}

impl States<'_> {
    /// Whether `q` ever held `m` in `g`.
    fn holds(&self, g: &str, q: &str, m: &str) -> bool {
        self.full.get(&(g, q)).is_some_and(|l| l.iter().any(|s| s.contains(m)))
    }
}

/// G11: a joiner's first state is the group's state at its join, recomputed from a
/// provider's history (the state of the simulator's workload is the set of delivered
/// messages, and its digest is [`digest`] of them), and it delivers nothing before it.
fn g11_state_transfer<'a>(ix: &Index<'a>, v: &mut Vec<Violation>) -> States<'a> {
    let ev = ix.ev;
    let mut state_sent: BTreeMap<(&str, u64), Vec<usize>> = BTreeMap::new();
    for (k, e) in ev.iter().enumerate().filter(|(_, e)| e.is(EventKind::StateSent)) {
        state_sent.entry((e.group(), e.view.unwrap_or(0))).or_default().push(k);
    }
    // The state each episode started with, in join order so a provider's is known first.
    let mut has: BTreeMap<(&str, &str, usize), BTreeSet<&str>> = BTreeMap::new();
    let mut joins: Vec<(&str, u64, &str, usize)> = Vec::new();
    for ((g, p), list) in &ix.eps {
        for (n, ep) in list.iter().enumerate() {
            joins.push((g, ep.join_view, p, n));
        }
    }
    joins.sort();
    for (g, view, p, n) in joins {
        let ep = &ix.eps[&(g, p)][n];
        let sent = state_sent.get(&(g, view)).map(Vec::as_slice).unwrap_or_default();
        let set = joiner_state(ix, &has, (g, view, p), ep, sent, v);
        has.insert((g, p, n), set);
    }
    let mut full: BTreeMap<(&str, &str), Vec<BTreeSet<&str>>> = BTreeMap::new();
    for ((g, p), list) in &ix.eps {
        for (n, ep) in list.iter().enumerate() {
            let mut s = has.get(&(g, p, n)).cloned().unwrap_or_default();
            s.extend(ep.delivers().map(|k| ix.msg(k)));
            full.entry((g, p)).or_default().push(s);
        }
    }
    let own = ev.iter().filter(|e| e.is(EventKind::State) && e.content.as_deref() != Some(DELIVERED_SET)).count();
    States { full, own }
}

/// The state joiner `p` of `g` started its episode `ep` (first view `view`) with, checked
/// against what was sent to it (`sent`: the `state_sent` events for that view) and against
/// the provider's history (`has`: the states of episodes that joined earlier).
fn joiner_state<'a>(
    ix: &Index<'a>,
    has: &BTreeMap<(&'a str, &'a str, usize), BTreeSet<&'a str>>,
    (g, view, p): (&'a str, u64, &'a str),
    ep: &Episode,
    sent: &[usize],
    v: &mut Vec<Violation>,
) -> BTreeSet<&'a str> {
    let ev = ix.ev;
    let first = &ev[ep.join_ev];
    // Some other member came from the previous view: there is a state to give.
    let others_old = first.members.as_ref().is_some_and(|ms| {
        ms.iter().any(|m| {
            m != p
                && ix
                    .eps
                    .get(&(g, m.as_str()))
                    .is_some_and(|l| l.iter().any(|e| e.join_view < view && e.segs.iter().any(|s| s.view == view)))
        })
    });
    if !others_old && ep.state_ev.is_none() {
        return BTreeSet::new();
    }
    let Some(sk) = ep.state_ev else {
        if let Some(d) = ep.delivers().next() {
            let what = format!("{p} joined {g} in view {view} and delivered without a state");
            v.push(Violation::new(Guarantee::G11, what, [first, &ev[d]]));
        }
        return BTreeSet::new();
    };
    if let Some(d) = ep.delivers().find(|&d| ev[d].i < ev[sk].i) {
        v.push(Violation::new(
            Guarantee::G11,
            format!("{p} delivered in {g} before its state arrived"),
            [&ev[d], &ev[sk]],
        ));
    }
    let got = ev[sk].digest.as_deref().unwrap_or("");
    for &s in sent {
        if ev[s].digest.as_deref() != Some(got) && ev[s].to.as_deref() == Some(p) {
            v.push(Violation::new(
                Guarantee::G11,
                format!("{p}'s state differs from what was sent to it"),
                [&ev[s], &ev[sk]],
            ));
        }
    }
    // Recompute from a provider that installed the join view.
    let Some(q) = sent.iter().map(|&s| ev[s].p.as_str()).find(|q| ix.eps.contains_key(&(g, *q))) else {
        return BTreeSet::new();
    };
    let Some((qn, qep)) = ix.eps[&(g, q)].iter().enumerate().rev().find(|(_, e)| e.join_view < view) else {
        return BTreeSet::new();
    };
    let mut expect: BTreeSet<&str> = has.get(&(g, q, qn)).cloned().unwrap_or_default();
    for seg in qep.segs.iter().filter(|s| s.view < view) {
        expect.extend(seg.delivers.iter().map(|&k| ix.msg(k)));
    }
    if let Some(d) = ep.delivers().find(|&d| expect.contains(ix.msg(d))) {
        let what = format!("{p} delivered {} in {g} after a state that stood for it", ix.msg(d));
        v.push(Violation::new(Guarantee::G11, what, [&ev[sk], &ev[d]]));
    }
    if ev[sk].content.as_deref() != Some(DELIVERED_SET) {
        return expect; // the application's own state: its contents are not the checker's to know
    }
    let want = digest(expect.iter().copied());
    if want != got {
        let what = format!(
            "{p}'s state for view {view} of {g} is not the group's state at the join ({} messages expected, digest {want})",
            expect.len()
        );
        v.push(Violation::new(Guarantee::G11, what, [first, &ev[sk]]));
    }
    expect
}

/// G12: when a flush returns, the caller's earlier messages reach every member that goes
/// on in the view.
fn g12_flush(ix: &Index, states: &States, v: &mut Vec<Violation>) {
    let ev = ix.ev;
    for (p, list) in &ix.by_p {
        for (n, &k) in list.iter().enumerate() {
            let e = &ev[k];
            if !e.is(EventKind::Flush) {
                continue;
            }
            let g = e.group();
            let Some(&vk) = ix.views.get(&(g, e.view.unwrap_or(0))) else { continue };
            let members = ev[vk].members.clone().unwrap_or_default();
            // The caller's messages since it (last) joined the group.
            let joined = ix
                .eps
                .get(&(g, *p))
                .and_then(|l| l.iter().rev().find(|ep| ev[ep.join_ev].i <= e.i))
                .map_or(0, |ep| ev[ep.join_ev].i);
            // With `covers`, the sends up to that message; else every send before the return.
            let upto = match &e.covers {
                Some(c) => list[..n]
                    .iter()
                    .position(|&k| ev[k].is(EventKind::Send) && ev[k].msg.as_deref() == Some(c))
                    .map_or(0, |x| x + 1),
                None => n,
            };
            for s in list[..upto].iter().map(|&sk| &ev[sk]) {
                if !s.is(EventKind::Send) || s.group.as_deref() != Some(g) || s.i < joined {
                    continue;
                }
                let m = s.msg();
                for q in &members {
                    let goes_on = ix.eps.get(&(g, q.as_str())).is_some_and(|l| {
                        l.iter().any(|ep| {
                            ep.segs
                                .iter()
                                .any(|sg| sg.view == e.view.unwrap_or(0) && (sg.survived || (ix.alive(q) && !ep.left)))
                        })
                    });
                    if goes_on && !states.holds(g, q, m) {
                        v.push(Violation::new(Guarantee::G12, format!("{p} flushed but {q} never got {m}"), [s, e]));
                    }
                }
            }
        }
    }
}

/// G13, at quiescence: the surviving members of each group end in its last view, every
/// correct process's message reaches them, and (with a bound) a crashed process is out of
/// every view in time.
fn g13_liveness(ix: &Index, states: &States, opts: &Options, v: &mut Vec<Violation>) {
    let ev = ix.ev;
    // Per group: the live members' last segments.
    let mut finals: BTreeMap<&str, Vec<(&str, &crate::index::Seg)>> = BTreeMap::new();
    for ((g, p), list) in &ix.eps {
        if let Some(ep) = list.last().filter(|ep| !ep.left && ix.alive(p)) {
            finals.entry(g).or_default().push((p, ep.segs.last().expect("segment")));
        }
    }
    for (g, list) in &finals {
        let top = list.iter().map(|(_, s)| s.view).max().unwrap_or(0);
        for (p, s) in list.iter().filter(|(_, s)| s.view != top) {
            let what = format!("{p} ended in view {} of {g}, not the last view {top}", s.view);
            v.push(Violation::new(Guarantee::G13, what, [&ev[s.view_ev]]));
        }
    }
    g13_messages_delivered(ix, states, &finals, v);
    if let Some(bound) = opts.crash_bound_us {
        g13_crashed_excluded(ix, &finals, bound, v);
    }
}

/// G13: every message a correct process sent reaches every final member of its group.
fn g13_messages_delivered(
    ix: &Index,
    states: &States,
    finals: &BTreeMap<&str, Vec<(&str, &crate::index::Seg)>>,
    v: &mut Vec<Violation>,
) {
    let ev = ix.ev;
    let left: BTreeSet<(&str, &str)> =
        ev.iter().filter(|e| e.is(EventKind::Leave)).map(|e| (e.group(), e.p.as_str())).collect();
    // A group whose members all failed starts over with no state (recovery from total
    // failure is the durability layer's job): messages delivered before its last fresh
    // start are not owed to its final members.
    let mut fresh: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    // When each view was first installed (one pass: a run may have thousands of groups).
    let mut installed: BTreeMap<(&str, u64), u64> = BTreeMap::new();
    for e in ev.iter().filter(|e| e.is(EventKind::View)) {
        if let (Some(g), Some(id)) = (e.group.as_deref(), e.view) {
            let t = installed.entry((g, id)).or_insert(e.t);
            *t = (*t).min(e.t);
        }
    }
    for (&(g, id), &k) in &ix.views {
        let before = ix.views.get(&(g, id.wrapping_sub(1))).and_then(|&pk| ev[pk].members.as_ref());
        let members = ev[k].members.as_deref().unwrap_or(&[]);
        if !before.is_some_and(|b| members.iter().any(|m| b.contains(m))) {
            fresh.insert(g, (id, installed.get(&(g, id)).copied().unwrap_or(0)));
        }
    }
    for (m, &(sk, _)) in &ix.sends {
        let s = &ev[sk];
        let g = s.group();
        if !ix.alive(&s.p) || left.contains(&(g, s.p.as_str())) {
            continue;
        }
        // Messages to an earlier lineage are not owed to this one: delivered there, or
        // reported lost to their sender when it died.
        let (start, since) = fresh.get(g).copied().unwrap_or((0, 0));
        if ix.first_delivery.get(m).is_some_and(|&d| ev[d].view.unwrap_or(0) < start) || (start > 1 && s.t < since) {
            continue;
        }
        // G13 promises delivery of a member's sends. A non-member's send is owed too,
        // unless the group's last lineage began around it: a non-member learns of a new
        // lineage late, and what it handed to the dead one is reported lost to it.
        if s.view.is_none() && start > 1 && s.t < since + NON_MEMBER_GRACE_US {
            continue;
        }
        if let Some((q, _)) = finals.get(g).into_iter().flatten().find(|(q, _)| !states.holds(g, q, m)) {
            v.push(Violation::new(Guarantee::G13, format!("{q} never got {m}, sent by a correct process"), [s]));
        }
    }
}

/// G13: a crashed process is out of every surviving view of its groups within `bound`
/// microseconds of its crash.
fn g13_crashed_excluded(
    ix: &Index,
    finals: &BTreeMap<&str, Vec<(&str, &crate::index::Seg)>>,
    bound: u64,
    v: &mut Vec<Violation>,
) {
    let ev = ix.ev;
    for (p, &ck) in ix.dead.iter().filter(|(_, &ck)| ev[ck].is(EventKind::Crash)) {
        let t = ev[ck].t;
        for (g, list) in finals {
            for (q, _) in list {
                let late = ix.eps[&(*g, *q)].iter().flat_map(|ep| ep.segs.iter()).find(|s| {
                    let e = &ev[s.view_ev];
                    e.t > t + bound && e.members.as_ref().is_some_and(|m| m.iter().any(|x| x == p))
                });
                if let Some(s) = late {
                    let what = format!("{p} crashed but was still in a view of {g} after the bound");
                    v.push(Violation::new(Guarantee::G13, what, [&ev[ck], &ev[s.view_ev]]));
                }
            }
        }
    }
}
