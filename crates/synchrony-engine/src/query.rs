//! Group RPC at the caller: the replies each outstanding query waits for, and when it is
//! done (enough replies, or every member it waited for answered, refused or failed).

use crate::event::{QueryOutcome, Replies};
use crate::id::{GroupName, MsgId, ProcessId};
use bytes::Bytes;
use std::collections::{BTreeMap, BTreeSet};

struct QueryState {
    group: GroupName,
    wanted: usize,
    /// Who is expected to answer: known when the query is sent (a non-member's) or
    /// delivered here (a member's: the view it was delivered in).
    expected: Option<BTreeSet<ProcessId>>,
    replies: Vec<(ProcessId, Bytes)>,
    nulls: BTreeSet<ProcessId>,
    failed: BTreeSet<ProcessId>,
}

impl QueryState {
    fn answered(&self, p: &ProcessId) -> bool {
        self.replies.iter().any(|(r, _)| r == p) || self.nulls.contains(p)
    }

    /// Every expected member that has not answered has failed.
    fn fail_unanswered(&mut self, gone: impl Fn(&ProcessId) -> bool) {
        let Some(e) = &self.expected else { return };
        let failed: Vec<ProcessId> = e.iter().filter(|p| gone(p) && !self.answered(p)).cloned().collect();
        self.failed.extend(failed);
    }
}

/// This process's outstanding queries.
#[derive(Default)]
pub(crate) struct Queries {
    map: BTreeMap<MsgId, QueryState>,
}

impl Queries {
    /// A query sent as `id` (nothing to track for `Replies::None`).
    pub(crate) fn track(
        &mut self,
        id: &MsgId,
        group: &GroupName,
        replies: Replies,
        expected: Option<BTreeSet<ProcessId>>,
    ) {
        let wanted = match replies {
            Replies::None => return,
            Replies::One => 1,
            Replies::Count(k) => k,
            Replies::All => usize::MAX,
        };
        debug_assert!(!self.map.contains_key(id), "message ids are never reused");
        let q = QueryState {
            group: group.clone(),
            wanted,
            expected,
            replies: Vec::new(),
            nulls: BTreeSet::new(),
            failed: BTreeSet::new(),
        };
        self.map.insert(id.clone(), q);
    }

    /// This process's own query was delivered here, in a view of `members`: unless known,
    /// they are who must answer. A message is delivered in one view (G3): of the members a
    /// non-member's query expected (those it knew of when it sent), one not in that view
    /// never delivers it and will not answer (it left before; waited for, the query would
    /// never end, chaos seed 12). Returns the outcome if that completes it.
    pub(crate) fn delivered(&mut self, id: &MsgId, members: Option<&[ProcessId]>) -> Option<QueryOutcome> {
        if let (Some(q), Some(m)) = (self.map.get_mut(id), members) {
            match &q.expected {
                None => q.expected = Some(m.iter().cloned().collect()),
                Some(_) => q.fail_unanswered(|p| !m.contains(p)),
            }
        }
        self.check(id)
    }

    /// A reply (`None`: a null reply) from `from`.
    pub(crate) fn on_reply(&mut self, from: &ProcessId, id: &MsgId, payload: Option<Bytes>) -> Option<QueryOutcome> {
        let q = self.map.get_mut(id)?;
        if q.answered(from) {
            return None;
        }
        match payload {
            Some(b) => q.replies.push((from.clone(), b)),
            None => {
                q.nulls.insert(from.clone());
            }
        }
        self.check(id)
    }

    fn check(&mut self, id: &MsgId) -> Option<QueryOutcome> {
        let q = self.map.get(id)?;
        let satisfied = q.replies.len() >= q.wanted;
        let exhausted = q.expected.as_ref().is_some_and(|e| e.iter().all(|p| q.answered(p) || q.failed.contains(p)));
        if !(satisfied || exhausted) {
            return None;
        }
        self.end(id)
    }

    /// The caller stops waiting (its deadline passed): the outcome with what came so far.
    pub(crate) fn give_up(&mut self, id: &MsgId) -> Option<QueryOutcome> {
        self.end(id)
    }

    fn end(&mut self, id: &MsgId) -> Option<QueryOutcome> {
        let q = self.map.remove(id)?;
        Some(QueryOutcome {
            id: id.clone(),
            group: q.group,
            satisfied: q.replies.len() >= q.wanted.min(q.expected.as_ref().map_or(usize::MAX, |e| e.len())),
            replies: q.replies,
            nulls: q.nulls.into_iter().collect(),
            failed: q.failed.into_iter().collect(),
        })
    }

    /// The outstanding queries, for a debug dump: each one's expected members, who
    /// answered, who failed.
    pub(crate) fn debug_state(&self) -> String {
        let show = |s: &mut dyn Iterator<Item = &ProcessId>| s.map(|p| p.to_string()).collect::<Vec<_>>().join(" ");
        self.map
            .iter()
            .map(|(id, q)| {
                let expected = q.expected.as_ref().map(|e| show(&mut e.iter())).unwrap_or_else(|| "?".into());
                let replied = show(&mut q.replies.iter().map(|(p, _)| p).chain(q.nulls.iter()));
                format!(
                    "{id} in {}: expects [{expected}] answered [{replied}] failed [{}]",
                    q.group,
                    show(&mut q.failed.iter())
                )
            })
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// Whether no query is outstanding (a view change of thousands of groups looks here
    /// first).
    pub(crate) fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    fn ids_of(&self, group: &GroupName) -> Vec<MsgId> {
        self.map.iter().filter(|(_, q)| q.group == *group).map(|(id, _)| id.clone()).collect()
    }

    /// The view of `group` changed to `members`: those no longer in it will not answer.
    /// Returns the queries this completes, in id order.
    pub(crate) fn view_changed(&mut self, group: &GroupName, members: &BTreeSet<ProcessId>) -> Vec<QueryOutcome> {
        let mut done = Vec::new();
        for id in self.ids_of(group) {
            if let Some(q) = self.map.get_mut(&id) {
                q.fail_unanswered(|p| !members.contains(p));
            }
            done.extend(self.check(&id));
        }
        done
    }

    /// Nobody of `group` will answer any more (this process left it, or stopped).
    pub(crate) fn fail_group(&mut self, group: &GroupName) -> Vec<QueryOutcome> {
        let mut done = Vec::new();
        for id in self.ids_of(group) {
            if let Some(q) = self.map.get_mut(&id) {
                q.expected.get_or_insert_with(BTreeSet::new);
                q.fail_unanswered(|_| true);
            }
            done.extend(self.check(&id));
        }
        done
    }

    /// This process stopped: every query fails, group by group.
    pub(crate) fn fail_all(&mut self) -> Vec<QueryOutcome> {
        let groups: BTreeSet<GroupName> = self.map.values().map(|q| q.group.clone()).collect();
        groups.iter().flat_map(|g| self.fail_group(g)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(name: &str) -> ProcessId {
        ProcessId::new(name, 1)
    }

    /// A non-member's query expects the members it knew of; once it joined and delivered
    /// the query itself, one of them not in that view will not answer (chaos seed 12: a
    /// member it knew of left without delivering it, and the query never ended).
    #[test]
    fn a_query_delivered_at_its_sender_does_not_wait_for_who_left_before() {
        let mut q = Queries::default();
        let id = MsgId { sender: p("c"), counter: 7 };
        let g = GroupName::new("g");
        q.track(&id, &g, Replies::All, Some([p("a"), p("b")].into_iter().collect()));
        assert!(q.delivered(&id, Some(&[p("a"), p("c")])).is_none());
        let done = q.on_reply(&p("a"), &id, Some(Bytes::from_static(b"a"))).expect("every member expected answered");
        assert_eq!(done.replies.len(), 1);
        assert_eq!(done.failed, vec![p("b")], "b left before the view it was delivered in");
    }
}
