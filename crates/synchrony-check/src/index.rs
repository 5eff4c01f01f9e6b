//! The shared index of a trace that every guarantee's check reads: each process's events
//! in local order, the sends, the stops, and each process's episodes of membership in each
//! group (a join, the views it installed, what it delivered in each).
//!
//! Building it walks every process's history once; the few rules that are about one
//! process's own history (G1 its views in order, G2 only views that contain it, G3 no
//! delivery outside a view, G10 nothing after a stop) are checked on that walk.

use crate::{Guarantee, Violation};
use std::collections::BTreeMap;
use synchrony_trace::{EventKind, TraceEvent};

/// A process's stay in one view of a group.
pub(crate) struct Seg {
    pub(crate) view: u64,
    pub(crate) view_ev: usize,
    /// Deliveries: event indices.
    pub(crate) delivers: Vec<usize>,
    /// The next view installed directly after, if any.
    pub(crate) next: Option<u64>,
    /// The process went on to a next view (not: crash, partition, leave, end of trace).
    pub(crate) survived: bool,
}

/// A process's membership of a group, from a join to a leave (or the end).
pub(crate) struct Episode {
    pub(crate) join_view: u64,
    pub(crate) join_ev: usize,
    pub(crate) state_ev: Option<usize>,
    pub(crate) segs: Vec<Seg>,
    pub(crate) left: bool,
}

impl Episode {
    /// Every delivery of the episode, in order.
    pub(crate) fn delivers(&self) -> impl Iterator<Item = usize> + '_ {
        self.segs.iter().flat_map(|s| s.delivers.iter().copied())
    }
}

/// The trace, indexed.
pub(crate) struct Index<'a> {
    pub(crate) ev: &'a [TraceEvent],
    /// Each process's events in local order.
    pub(crate) by_p: BTreeMap<&'a str, Vec<usize>>,
    /// Each message's send: (event, index among its sender's sends to that group).
    pub(crate) sends: BTreeMap<&'a str, (usize, usize)>,
    /// Each process that crashed or stopped: its first such event (for a process whose
    /// trace just ends, taken as crashed: its last event).
    pub(crate) dead: BTreeMap<&'a str, usize>,
    /// The processes taken as crashed because their traces just end: their last event, and
    /// the groups whose later views exclude them.
    pub(crate) silent: BTreeMap<&'a str, (usize, Vec<&'a str>)>,
    /// Episodes of group membership per (group, process).
    pub(crate) eps: BTreeMap<(&'a str, &'a str), Vec<Episode>>,
    /// The first event of each view (group, id).
    pub(crate) views: BTreeMap<(&'a str, u64), usize>,
    /// The first delivery of each message.
    pub(crate) first_delivery: BTreeMap<&'a str, usize>,
}

impl<'a> Index<'a> {
    /// Indexes `ev`; what one process's own history breaks goes into `v`.
    /// With `infer_crashes`, a process whose trace ends silently and whom later views
    /// exclude is taken as crashed (see `Options::infer_crashes`).
    pub(crate) fn build(ev: &'a [TraceEvent], infer_crashes: bool, v: &mut Vec<Violation>) -> Self {
        let mut by_p: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for (k, e) in ev.iter().enumerate() {
            by_p.entry(e.p.as_str()).or_default().push(k);
        }
        for list in by_p.values_mut() {
            list.sort_by_key(|&k| ev[k].i);
        }
        let mut ix = Index {
            ev,
            by_p,
            sends: BTreeMap::new(),
            dead: BTreeMap::new(),
            silent: BTreeMap::new(),
            eps: BTreeMap::new(),
            views: BTreeMap::new(),
            first_delivery: BTreeMap::new(),
        };
        ix.index_sends();
        ix.index_episodes(v);
        for (k, e) in ev.iter().enumerate() {
            match e.ev {
                EventKind::View => {
                    ix.views.entry((e.group(), e.view.unwrap_or(0))).or_insert(k);
                }
                EventKind::Deliver => {
                    ix.first_delivery.entry(e.msg()).or_insert(k);
                }
                _ => {}
            }
        }
        if infer_crashes {
            ix.infer_crashes();
        }
        ix
    }

    /// Takes as crashed each process whose trace ends without a leave, stop or crash while
    /// it is still in some group, where every such group went on to a later view without
    /// it (the survivors excluded it: it was killed, as a SIGKILL writes nothing). A process
    /// that the survivors still count as a member stays alive, and owes and is owed as one.
    fn infer_crashes(&mut self) {
        let ev = self.ev;
        // Per process: the groups it is still in at the end, and the view it ended in.
        let mut open: BTreeMap<&str, Vec<(&str, u64)>> = BTreeMap::new();
        for (&(g, p), eps) in &self.eps {
            if let Some(seg) = eps.last().filter(|ep| !ep.left).and_then(|ep| ep.segs.last()) {
                open.entry(p).or_default().push((g, seg.view));
            }
        }
        for (p, groups) in open {
            let Some(&last) = self.by_p.get(p).and_then(|l| l.last()) else { continue };
            if self.dead.contains_key(p) || ev[last].is(EventKind::Leave) {
                continue;
            }
            // Each group's last view, if later than the one `p` ended in, must leave it out.
            let excluded = groups.iter().all(|&(g, view)| {
                let later = self.views.range((g, view + 1)..=(g, u64::MAX)).next_back();
                later.is_some_and(|(_, &k)| !ev[k].members.as_ref().is_some_and(|m| m.iter().any(|x| x == p)))
            });
            if excluded {
                self.silent.insert(p, (last, groups.into_iter().map(|(g, _)| g).collect()));
            }
        }
        for (p, (last, _)) in &self.silent {
            self.dead.insert(p, *last);
        }
    }

    fn index_sends(&mut self) {
        let ev = self.ev;
        let mut count: BTreeMap<(&str, &str), usize> = BTreeMap::new();
        for (p, list) in &self.by_p {
            for &k in list {
                let e = &ev[k];
                match e.ev {
                    EventKind::Send => {
                        let c = count.entry((p, e.group())).or_default();
                        if let Some(m) = e.msg.as_deref() {
                            self.sends.insert(m, (k, *c));
                        }
                        *c += 1;
                    }
                    EventKind::Crash | EventKind::Partitioned => {
                        self.dead.entry(p).or_insert(k);
                    }
                    _ => {}
                }
            }
        }
    }

    fn index_episodes(&mut self, v: &mut Vec<Violation>) {
        let ev = self.ev;
        let by_p = std::mem::take(&mut self.by_p);
        for (p, list) in &by_p {
            let mut after_stop: Option<usize> = None;
            for &k in list {
                let e = &ev[k];
                if let Some(s) = after_stop.filter(|_| e.ev != EventKind::Crash) {
                    v.push(Violation::new(Guarantee::G10, format!("{p} acted after it stopped"), [&ev[s], e]));
                    after_stop = None;
                }
                match e.ev {
                    EventKind::View => self.on_view(p, k, v),
                    EventKind::Deliver | EventKind::State => {
                        let g = e.group();
                        match self.eps.get_mut(&(g, p)).and_then(|l| l.last_mut()).filter(|ep| !ep.left) {
                            Some(ep) if e.ev == EventKind::State => {
                                ep.state_ev.get_or_insert(k);
                            }
                            Some(ep) => ep.segs.last_mut().expect("episodes have a segment").delivers.push(k),
                            None => v.push(Violation::new(
                                Guarantee::G3,
                                format!("{p} delivered in {g} outside any view"),
                                [e],
                            )),
                        }
                    }
                    EventKind::Leave => {
                        if let Some(ep) = self.eps.get_mut(&(e.group(), p)).and_then(|l| l.last_mut()) {
                            ep.left = true;
                        }
                    }
                    EventKind::Partitioned => after_stop = Some(k),
                    _ => {}
                }
            }
        }
        self.by_p = by_p;
    }

    /// Process `p` installs the view at event `k`: the next segment of its open episode,
    /// or a new episode.
    fn on_view(&mut self, p: &'a str, k: usize, v: &mut Vec<Violation>) {
        let ev = self.ev;
        let e = &ev[k];
        let g = e.group();
        let id = e.view.unwrap_or(0);
        if !e.members.as_ref().is_some_and(|m| m.iter().any(|x| x == p)) {
            let what = format!("{p} installed a view of {g} that does not contain it");
            v.push(Violation::new(Guarantee::G2, what, [e]));
        }
        let list = self.eps.entry((g, p)).or_default();
        let seg = Seg { view: id, view_ev: k, delivers: Vec::new(), next: None, survived: false };
        match list.last_mut().filter(|ep| !ep.left) {
            Some(ep) => {
                let last = ep.segs.last_mut().expect("episodes have a segment");
                if id <= last.view {
                    let what = format!("{p} installed view {id} of {g} after view {}", last.view);
                    v.push(Violation::new(Guarantee::G1, what, [&ev[last.view_ev], e]));
                }
                last.next = Some(id);
                last.survived = true;
                ep.segs.push(seg);
            }
            None => list.push(Episode { join_view: id, join_ev: k, state_ev: None, segs: vec![seg], left: false }),
        }
    }

    /// Whether `p` neither crashed nor stopped.
    pub(crate) fn alive(&self, p: &str) -> bool {
        !self.dead.contains_key(p)
    }

    /// Every episode, with its group and process.
    pub(crate) fn episodes(&self) -> impl Iterator<Item = (&'a str, &'a str, &Episode)> + '_ {
        self.eps.iter().flat_map(|(&(g, p), list)| list.iter().map(move |ep| (g, p, ep)))
    }

    /// The message id of event `k` (`""` if none).
    pub(crate) fn msg(&self, k: usize) -> &'a str {
        self.ev[k].msg()
    }
}
