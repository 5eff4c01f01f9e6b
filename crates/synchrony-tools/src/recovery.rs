//! The recovery manager's decision after a total failure of a logged group: which
//! restarting member's log the group comes back from, and when it is safe to decide.
//!
//! Every restarting member reports, in a recovery group, how many updates its log holds and
//! the last view of the logged group it installed. The member whose log reflects the most
//! updates is the candidate (ties: the later view, then the name). Following Skeen
//! ("Determining the Last Process to Fail"), the decision waits until every member of the
//! candidate's last view has reported: any of them may have outlived the candidate and
//! logged more (and its own last view then names who may have outlived it in turn). Once
//! they all reported, nobody absent can hold an update the candidate lacks, and the
//! candidate restarts the group from its log while the others join it.

use crate::{decode, encode, Core, Effects, ToolError};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use synchrony_engine::{Delivery, GroupView};

/// What a restarting member knows from its own log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecoveryReport {
    /// The member's node name (the same across its incarnations).
    pub name: String,
    /// Updates its log reflects (checkpoint and tail).
    pub applied: u64,
    /// The last view of the logged group it installed: its id and its members' node names.
    pub last_view: Option<(u64, Vec<String>)>,
}

impl RecoveryReport {
    /// The report of `name`, whose log holds `applied` updates and whose last recorded view
    /// of the group is `last_view`.
    pub fn new(name: impl Into<String>, applied: u64, last_view: Option<&GroupView>) -> Self {
        let last_view = last_view.map(|v| (v.id.0, v.members.iter().map(|m| m.name.to_string()).collect()));
        Self { name: name.into(), applied, last_view }
    }

    fn rank(&self) -> (u64, u64, &str) {
        (self.applied, self.last_view.as_ref().map_or(0, |(v, _)| *v), self.name.as_str())
    }
}

/// A recovery group's message.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum RecoveryMsg {
    /// A restarting member's report.
    Report(RecoveryReport),
    /// The group restarted from this node's log: the others join it.
    Ready {
        /// The node that restarted the group.
        name: String,
    },
}

impl RecoveryMsg {
    /// The bytes to multicast (total order) in the recovery group.
    pub fn encode(&self) -> Bytes {
        encode(self)
    }
}

/// Where a restarting member stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecoveryDecision {
    /// Some member that may have failed after the best log seen so far has not reported.
    Wait {
        /// Their node names.
        missing: Vec<String>,
    },
    /// This node's log is the one: restart the group from it.
    Restart,
    /// Another node's log is the one: wait for its `Ready`, then join.
    AwaitReady {
        /// That node.
        from: String,
    },
    /// The group was restarted from `from`'s log: join it.
    Join {
        /// The node that restarted it.
        from: String,
    },
}

/// The recovery group's replicated state: the reports, and who restarted the group. It is
/// a [`Core`], so a late restarter receives the reports by state transfer.
#[derive(Clone, Debug, Default)]
pub struct RecoveryCore {
    reports: BTreeMap<String, RecoveryReport>,
    ready: Option<String>,
}

impl RecoveryCore {
    /// The reports received.
    pub fn reports(&self) -> impl Iterator<Item = &RecoveryReport> {
        self.reports.values()
    }

    /// The node that restarted the group, once one did.
    pub fn ready(&self) -> Option<&str> {
        self.ready.as_deref()
    }

    /// What node `me` should do now.
    pub fn decide(&self, me: &str) -> RecoveryDecision {
        if let Some(from) = &self.ready {
            return RecoveryDecision::Join { from: from.clone() };
        }
        let Some(best) = self.reports.values().max_by(|a, b| a.rank().cmp(&b.rank())) else {
            return RecoveryDecision::Wait { missing: vec![me.to_string()] };
        };
        let must: BTreeSet<&String> = best.last_view.iter().flat_map(|(_, members)| members).collect();
        let missing: Vec<String> = must.into_iter().filter(|m| !self.reports.contains_key(*m)).cloned().collect();
        if !missing.is_empty() {
            return RecoveryDecision::Wait { missing };
        }
        if best.name == me {
            RecoveryDecision::Restart
        } else {
            RecoveryDecision::AwaitReady { from: best.name.clone() }
        }
    }

    /// Decides among the reports received, ignoring members that never came back: the
    /// operator's choice when they are known to be lost for good (updates only they logged
    /// are lost with them).
    pub fn decide_without_missing(&self, me: &str) -> RecoveryDecision {
        if let Some(from) = &self.ready {
            return RecoveryDecision::Join { from: from.clone() };
        }
        match self.reports.values().max_by(|a, b| a.rank().cmp(&b.rank())) {
            Some(best) if best.name == me => RecoveryDecision::Restart,
            Some(best) => RecoveryDecision::AwaitReady { from: best.name.clone() },
            None => RecoveryDecision::Wait { missing: vec![me.to_string()] },
        }
    }

    /// Takes one recovery message (in delivery order).
    pub fn handle(&mut self, msg: RecoveryMsg) {
        match msg {
            RecoveryMsg::Report(r) => {
                if self.ready.take().is_some() {
                    // A report after a restart: the restarted group failed whole in turn
                    // (its restarter or a follower could not join it). A new round begins,
                    // and the old reports say nothing of the logs now.
                    self.reports.clear();
                }
                self.reports.insert(r.name.clone(), r);
            }
            RecoveryMsg::Ready { name } => {
                self.ready.get_or_insert(name);
            }
        }
    }
}

impl Core for RecoveryCore {
    type Output = ();

    fn on_view(&mut self, _view: &GroupView, _fx: &mut Effects<()>) {}

    fn on_message(&mut self, msg: &Delivery, fx: &mut Effects<()>) {
        match decode::<RecoveryMsg>(&msg.payload) {
            Ok(m) => self.handle(m),
            Err(_) => crate::not_understood(msg, fx),
        }
    }

    fn snapshot(&self) -> Bytes {
        encode(&(&self.reports, &self.ready))
    }

    fn restore(&mut self, state: &[u8]) -> Result<(), ToolError> {
        let (reports, ready): (BTreeMap<String, RecoveryReport>, Option<String>) = decode(state)?;
        self.reports = reports;
        self.ready = ready;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use synchrony_engine::{ProcessId, ViewId};

    fn view(id: u64, names: &[&str]) -> GroupView {
        GroupView { id: ViewId(id), members: names.iter().map(|n| ProcessId::new(*n, 1)).collect() }
    }

    fn report(core: &mut RecoveryCore, name: &str, applied: u64, v: Option<GroupView>) {
        core.handle(RecoveryMsg::Report(RecoveryReport::new(name, applied, v.as_ref())));
    }

    #[test]
    fn waits_for_every_member_of_the_best_logs_last_view() {
        let mut c = RecoveryCore::default();
        // b failed first (its last view still lists a and c), then a, then c alone.
        report(&mut c, "b", 10, Some(view(5, &["a", "b", "c"])));
        assert_eq!(c.decide("b"), RecoveryDecision::Wait { missing: vec!["a".into(), "c".into()] });
        report(&mut c, "a", 12, Some(view(6, &["a", "c"])));
        assert_eq!(c.decide("a"), RecoveryDecision::Wait { missing: vec!["c".into()] });
        report(&mut c, "c", 15, Some(view(7, &["c"])));
        assert_eq!(c.decide("c"), RecoveryDecision::Restart);
        assert_eq!(c.decide("a"), RecoveryDecision::AwaitReady { from: "c".into() });
        c.handle(RecoveryMsg::Ready { name: "c".into() });
        assert_eq!(c.decide("b"), RecoveryDecision::Join { from: "c".into() });
    }

    #[test]
    fn the_last_to_fail_alone_can_decide_and_ties_go_to_the_later_view() {
        let mut c = RecoveryCore::default();
        report(&mut c, "c", 15, Some(view(7, &["c"])));
        assert_eq!(c.decide("c"), RecoveryDecision::Restart);
        let mut t = RecoveryCore::default();
        report(&mut t, "a", 9, Some(view(3, &["a", "b"])));
        report(&mut t, "b", 9, Some(view(4, &["b"])));
        assert_eq!(t.decide("a"), RecoveryDecision::AwaitReady { from: "b".into() });
    }

    #[test]
    fn a_report_after_a_restart_begins_a_new_round() {
        let mut c = RecoveryCore::default();
        report(&mut c, "a", 5, Some(view(2, &["a", "b"])));
        report(&mut c, "b", 4, Some(view(2, &["a", "b"])));
        c.handle(RecoveryMsg::Ready { name: "a".into() });
        // The restarted group failed whole too: b comes back first, with a newer log.
        report(&mut c, "b", 9, Some(view(4, &["b"])));
        assert_eq!(c.ready(), None);
        assert_eq!(c.reports().count(), 1, "a's old report is dropped");
        assert_eq!(c.decide("b"), RecoveryDecision::Restart);
    }

    #[test]
    fn state_carries_reports_to_a_late_restarter() {
        let mut c = RecoveryCore::default();
        report(&mut c, "a", 3, Some(view(2, &["a", "b"])));
        let mut late = RecoveryCore::default();
        late.restore(&c.snapshot()).expect("loads");
        report(&mut late, "b", 1, Some(view(1, &["a", "b"])));
        assert_eq!(late.decide("b"), RecoveryDecision::AwaitReady { from: "a".into() });
        assert_eq!(
            late.decide_without_missing("z"),
            RecoveryDecision::AwaitReady { from: "a".into() },
            "without waiting, the best log so far"
        );
    }
}
