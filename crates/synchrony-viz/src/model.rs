//! The diagram's content, computed once from a trace: rows, view bands, arrows, marks.

use serde::Serialize;
use std::collections::BTreeMap;
use synchrony_check::{Report, Violation};
use synchrony_engine::Order;
use synchrony_trace::{EventKind, TraceEvent};

/// The order classes, in the order their colours are listed.
pub(crate) const ORDERS: [&str; 6] = ["unordered", "fifo", "causal", "total", "safe", "gbcast"];

/// What a mark on a process line shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[repr(u8)]
pub enum MarkKind {
    /// A view installed.
    View = 0,
    /// A crash.
    Crash = 1,
    /// The process found it was excluded, or lost the majority.
    Partitioned = 2,
    /// A new incarnation starts on this line.
    Incarnation = 3,
    /// A `flush()` returned.
    Flush = 4,
    /// The process left a group.
    Leave = 5,
    /// A joiner loaded its state.
    State = 6,
    /// The process's trace ends here and later views exclude it: taken as crashed (a
    /// SIGKILL writes nothing).
    SilentEnd = 7,
}

impl MarkKind {
    /// Every kind, in legend order.
    pub const ALL: [MarkKind; 8] = [
        MarkKind::View,
        MarkKind::Crash,
        MarkKind::Partitioned,
        MarkKind::Incarnation,
        MarkKind::Flush,
        MarkKind::Leave,
        MarkKind::State,
        MarkKind::SilentEnd,
    ];

    /// What the mark means, as the legend says it.
    pub fn meaning(self) -> &'static str {
        match self {
            MarkKind::View => "view installed",
            MarkKind::Crash => "crash",
            MarkKind::Partitioned => "partitioned (stopped)",
            MarkKind::Incarnation => "new incarnation",
            MarkKind::Flush => "flush returned",
            MarkKind::Leave => "left the group",
            MarkKind::State => "state loaded",
            MarkKind::SilentEnd => "trace ends: taken as crashed",
        }
    }
}

/// A mark: an event on a process line.
#[derive(Clone, Debug, Serialize)]
pub struct Mark {
    /// Microseconds since the first event.
    pub t: u64,
    /// The process line.
    pub row: usize,
    /// What it is.
    pub kind: MarkKind,
    /// Index of the event in [`Diagram::lines`].
    pub event: usize,
}

/// An arrow from a send to a delivery, or from a state provider to a joiner.
#[derive(Clone, Debug, Serialize)]
pub struct Arrow {
    /// Send time and line.
    pub t0: u64,
    /// The sender's line.
    pub r0: usize,
    /// Delivery time.
    pub t1: u64,
    /// The receiver's line.
    pub r1: usize,
    /// Index into [`ORDERS`]; 6 for a state transfer.
    pub kind: u8,
    /// Index into [`Diagram::groups`].
    pub group: usize,
}

/// A shaded band: a process in one view of a group, from the view's installation to the
/// next view (or a leave, a crash, the end).
#[derive(Clone, Debug, Serialize)]
pub struct Band {
    /// The process line.
    pub row: usize,
    /// Start.
    pub t0: u64,
    /// End.
    pub t1: u64,
    /// Index into [`Diagram::groups`].
    pub group: usize,
    /// The view id.
    pub view: u64,
    /// Members of the view, oldest first.
    pub members: String,
}

/// A violation the checker found, with the events that prove it.
#[derive(Clone, Debug, Serialize)]
pub struct Finding {
    /// `G1` to `G13` and what is wrong.
    pub what: String,
    /// Indices into [`Diagram::lines`].
    pub events: Vec<usize>,
}

/// Everything a renderer draws.
#[derive(Clone, Debug, Serialize)]
pub struct Diagram {
    /// Process names, one line each (all incarnations of a name share it).
    pub rows: Vec<String>,
    /// Groups, in first-seen order.
    pub groups: Vec<String>,
    /// Duration in microseconds.
    pub span: u64,
    /// The first event's time (microseconds, as in the trace).
    pub start: u64,
    /// View bands.
    pub bands: Vec<Band>,
    /// Arrows.
    pub arrows: Vec<Arrow>,
    /// Marks.
    pub marks: Vec<Mark>,
    /// The events as JSON lines (shown on hover).
    pub lines: Vec<String>,
    /// Each event's place: (time, line).
    pub at: Vec<(u64, usize)>,
    /// Violations.
    pub findings: Vec<Finding>,
}

fn name_of(p: &str) -> &str {
    p.rsplit_once('#').map_or(p, |(n, _)| n)
}

impl Diagram {
    /// Builds the diagram of `events` (any order; sorted here by time) and the checker's
    /// `violations`.
    pub fn new(events: &[TraceEvent], violations: &[Violation]) -> Self {
        Self::build(events, violations, &[])
    }

    /// Builds the diagram of `events` and the checker's report of them: its violations,
    /// and the processes it took as crashed where their traces end (marked there, their
    /// view bands ending with them).
    pub fn of_report(events: &[TraceEvent], report: &Report) -> Self {
        let ends: Vec<(&str, u64)> = report.inferred_crashes.iter().map(|c| (c.last.p.as_str(), c.last.i)).collect();
        Self::build(events, &report.violations, &ends)
    }

    /// `silent_ends`: the last events (process, index) of processes taken as crashed there.
    fn build(events: &[TraceEvent], violations: &[Violation], silent_ends: &[(&str, u64)]) -> Self {
        let mut ev: Vec<&TraceEvent> = events.iter().collect();
        ev.sort_by_key(|e| (e.t, e.p.clone(), e.i));
        let start = ev.first().map_or(0, |e| e.t);
        let span = ev.last().map_or(0, |e| e.t - start).max(1);
        let mut rows: Vec<String> = ev.iter().map(|e| name_of(&e.p).to_string()).collect();
        rows.sort_by(|a, b| (a.len(), a).cmp(&(b.len(), b)));
        rows.dedup();
        let row_of = |p: &str| rows.iter().position(|r| r == name_of(p)).unwrap_or(0);
        let mut groups: Vec<String> = Vec::new();
        let mut group_of = |g: &str| match groups.iter().position(|x| x == g) {
            Some(i) => i,
            None => {
                groups.push(g.to_string());
                groups.len() - 1
            }
        };
        let index: BTreeMap<(&str, u64), usize> =
            ev.iter().enumerate().map(|(k, e)| ((e.p.as_str(), e.i), k)).collect();
        let lines: Vec<String> = ev.iter().map(|e| e.to_json_line()).collect();
        let at: Vec<(u64, usize)> = ev.iter().map(|e| (e.t - start, row_of(&e.p))).collect();
        let mut sends: BTreeMap<&str, (u64, usize)> = BTreeMap::new();
        let mut state_sent: BTreeMap<(&str, u64, &str), (u64, usize)> = BTreeMap::new();
        // (process, group) -> (band start, view, members)
        let mut open: BTreeMap<(String, usize), (u64, u64, String)> = BTreeMap::new();
        let (mut bands, mut arrows, mut marks) = (Vec::new(), Vec::new(), Vec::new());
        let mut seen_incarnation: BTreeMap<usize, String> = BTreeMap::new();
        for (k, e) in ev.iter().enumerate() {
            let t = e.t - start;
            let row = row_of(&e.p);
            if seen_incarnation.get(&row) != Some(&e.p) && seen_incarnation.insert(row, e.p.clone()).is_some() {
                marks.push(Mark { t, row, kind: MarkKind::Incarnation, event: k });
            }
            let group = e.group.as_deref().map(&mut group_of);
            let close = |open: &mut BTreeMap<(String, usize), (u64, u64, String)>, g: usize, bands: &mut Vec<Band>| {
                if let Some((t0, view, members)) = open.remove(&(e.p.clone(), g)) {
                    bands.push(Band { row, t0, t1: t, group: g, view, members });
                }
            };
            match e.ev {
                EventKind::Send => {
                    if let Some(m) = &e.msg {
                        sends.insert(m, (t, row));
                    }
                }
                EventKind::Deliver => {
                    if let (Some((t0, r0)), Some(g)) = (e.msg.as_deref().and_then(|m| sends.get(m)), group) {
                        let kind = e.order.and_then(|o| Order::ALL.iter().position(|x| *x == o)).unwrap_or(0) as u8;
                        arrows.push(Arrow { t0: *t0, r0: *r0, t1: t, r1: row, kind, group: g });
                    }
                }
                EventKind::View => {
                    let g = group.unwrap_or(0);
                    close(&mut open, g, &mut bands);
                    let members = e.members.clone().unwrap_or_default().join(", ");
                    open.insert((e.p.clone(), g), (t, e.view.unwrap_or(0), members));
                    marks.push(Mark { t, row, kind: MarkKind::View, event: k });
                }
                EventKind::Leave => {
                    close(&mut open, group.unwrap_or(0), &mut bands);
                    marks.push(Mark { t, row, kind: MarkKind::Leave, event: k });
                }
                EventKind::Crash | EventKind::Partitioned => {
                    let mine: Vec<usize> = open.keys().filter(|(p, _)| *p == e.p).map(|(_, g)| *g).collect();
                    for g in mine {
                        close(&mut open, g, &mut bands);
                    }
                    let kind = if e.ev == EventKind::Crash { MarkKind::Crash } else { MarkKind::Partitioned };
                    marks.push(Mark { t, row, kind, event: k });
                }
                EventKind::Flush => marks.push(Mark { t, row, kind: MarkKind::Flush, event: k }),
                EventKind::StateSent => {
                    if let (Some(g), Some(to)) = (e.group.as_deref(), e.to.as_deref()) {
                        state_sent.entry((g, e.view.unwrap_or(0), to)).or_insert((t, row));
                    }
                }
                EventKind::State => {
                    marks.push(Mark { t, row, kind: MarkKind::State, event: k });
                    let key = (e.group.as_deref().unwrap_or(""), e.view.unwrap_or(0), e.p.as_str());
                    if let (Some((t0, r0)), Some(g)) = (state_sent.get(&key), group) {
                        arrows.push(Arrow { t0: *t0, r0: *r0, t1: t, r1: row, kind: 6, group: g });
                    }
                }
                _ => {}
            }
            if silent_ends.contains(&(e.p.as_str(), e.i)) {
                let mine: Vec<usize> = open.keys().filter(|(p, _)| *p == e.p).map(|(_, g)| *g).collect();
                for g in mine {
                    close(&mut open, g, &mut bands);
                }
                marks.push(Mark { t, row, kind: MarkKind::SilentEnd, event: k });
            }
        }
        for ((p, g), (t0, view, members)) in open {
            bands.push(Band { row: row_of(&p), t0, t1: span, group: g, view, members });
        }
        let findings = violations
            .iter()
            .map(|v| Finding {
                what: format!("{} violated: {}", v.guarantee, v.what),
                events: v.events.iter().filter_map(|e| index.get(&(e.p.as_str(), e.i)).copied()).collect(),
            })
            .collect();
        Diagram { rows, groups, span, start, bands, arrows, marks, lines, at, findings }
    }
}
