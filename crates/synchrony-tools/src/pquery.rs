//! Parallel query: a query goes to every member, each answers for its share of the rows
//! (by its rank in the view the query was delivered in: rows where row mod n = rank), and
//! the caller collects every answer. Virtual synchrony makes the shares exact: every member
//! delivers the query in the same view, so the shares partition the rows. When a member
//! fails before it answers, the caller learns it and asks again in the new view, so no row
//! is lost or counted twice.

use crate::channel::Keyed;
use crate::{decode, encode, Core, Effect, Effects, GroupChannel, GroupSend, ToolError, ToolHandle};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use synchrony_engine::{Delivery, GroupView, MsgId, Order, ProcessId, QueryOutcome, Replies, ViewId};

/// Marks a parallel query.
const MAGIC: &[u8; 4] = b"pq01";

/// What a member answers for its share.
pub trait Share: Send + 'static {
    /// The answer to `query` for the rows where `row % n == rank`.
    fn answer(&mut self, query: &[u8], rank: usize, n: usize) -> Bytes;
}

#[derive(Serialize, Deserialize)]
struct Part {
    view: u64,
    rank: u32,
    n: u32,
    answer: Vec<u8>,
}

/// A complete answer: one part per rank of the view it was answered in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueryAnswer {
    /// The query (the last attempt's message).
    pub id: MsgId,
    /// The view the parts were computed in.
    pub view: ViewId,
    /// The parts, by rank.
    pub parts: Vec<Bytes>,
}

/// What the caller's side tells its user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum QueryProgress {
    /// Every share answered.
    Answered(QueryAnswer),
    /// The view changed under the query (a member failed or joined before answering): it
    /// is asked again.
    Retried {
        /// The attempt that fell short.
        id: MsgId,
        /// Members that failed before they answered.
        failed: Vec<ProcessId>,
    },
}

impl Keyed for QueryProgress {
    fn key(&self) -> Option<&MsgId> {
        None
    }
}

/// Combines the replies of one attempt: the parts by rank, or `None` when they do not
/// cover one view's ranks exactly once (a member failed, or answered in another view).
pub fn combine(outcome: &QueryOutcome) -> Option<(ViewId, Vec<Bytes>)> {
    if !outcome.failed.is_empty() || !outcome.nulls.is_empty() || outcome.replies.is_empty() {
        return None;
    }
    let parts: Vec<Part> = outcome.replies.iter().filter_map(|(_, b)| decode(b).ok()).collect();
    let first = parts.first()?;
    let (view, n) = (first.view, first.n as usize);
    if parts.len() != n || parts.iter().any(|p| p.view != view || p.n as usize != n) {
        return None;
    }
    let mut by_rank: Vec<Option<Bytes>> = vec![None; n];
    for p in parts {
        let slot = by_rank.get_mut(p.rank as usize)?;
        if slot.is_some() {
            return None;
        }
        *slot = Some(p.answer.into());
    }
    by_rank.into_iter().collect::<Option<Vec<_>>>().map(|v| (ViewId(view), v))
}

/// A member's side and a caller's side of parallel queries over one group (a [`Core`]).
/// The caller multicasts [`ParallelQuery::ask`]; its outcome becomes a [`QueryProgress`]:
/// the answer, or `Retried` and the caller asks again.
#[derive(Debug)]
pub struct ParallelQuery<S: Share> {
    me: ProcessId,
    share: S,
    view: Option<GroupView>,
}

impl<S: Share> ParallelQuery<S> {
    /// `me` answers with `share`.
    pub fn new(me: ProcessId, share: S) -> Self {
        Self { me, share, view: None }
    }

    /// The query to multicast (total order, waiting for every member).
    pub fn ask(body: &[u8]) -> Effect {
        let mut b = MAGIC.to_vec();
        b.extend_from_slice(body);
        Effect::Query { order: Order::Total, payload: Bytes::from(b), replies: Replies::All }
    }

    /// The member's data.
    pub fn share(&self) -> &S {
        &self.share
    }

    /// The member's data, to change.
    pub fn share_mut(&mut self) -> &mut S {
        &mut self.share
    }
}

impl<S: Share> Core for ParallelQuery<S> {
    type Output = QueryProgress;

    fn on_view(&mut self, view: &GroupView, _fx: &mut Effects<QueryProgress>) {
        self.view = Some(view.clone());
    }

    fn on_message(&mut self, msg: &Delivery, fx: &mut Effects<QueryProgress>) {
        let Some(body) = msg.payload.strip_prefix(MAGIC) else { return crate::not_understood(msg, fx) };
        if !msg.query {
            return;
        }
        let Some(view) = &self.view else { return };
        let Some(rank) = view.members.iter().position(|m| *m == self.me) else {
            fx.reply(msg.id.clone(), None);
            return;
        };
        let n = view.members.len();
        let answer = self.share.answer(body, rank, n).to_vec();
        let part = Part { view: view.id.0, rank: rank as u32, n: n as u32, answer };
        fx.reply(msg.id.clone(), Some(encode(&part)));
    }

    fn on_query_done(&mut self, outcome: &QueryOutcome, fx: &mut Effects<QueryProgress>) {
        fx.output(match combine(outcome) {
            Some((view, parts)) => QueryProgress::Answered(QueryAnswer { id: outcome.id.clone(), view, parts }),
            None => QueryProgress::Retried { id: outcome.id.clone(), failed: outcome.failed.clone() },
        });
    }

    fn snapshot(&self) -> Bytes {
        Bytes::new()
    }

    fn restore(&mut self, _state: &[u8]) -> Result<(), ToolError> {
        Ok(())
    }
}

/// Parallel queries on a group, for async callers: every member runs one with its share.
///
/// ```no_run
/// # async fn f(group: impl synchrony_tools::GroupChannel) -> Result<(), synchrony_tools::ToolError> {
/// use synchrony_tools::{ParallelQueries, Share};
/// struct Rows(Vec<u64>);
/// impl Share for Rows {
///     fn answer(&mut self, _q: &[u8], rank: usize, n: usize) -> bytes::Bytes {
///         let sum: u64 = self.0.iter().enumerate().filter(|(i, _)| i % n == rank).map(|(_, v)| v).sum();
///         sum.to_le_bytes().to_vec().into()
///     }
/// }
/// let me = synchrony_engine::ProcessId::new("n1", 1);
/// let pq = ParallelQueries::start(group, me, Rows((0..1000).collect()));
/// let answer = pq.query(b"sum").await?;
/// let total: u64 = answer.parts.iter().map(|p| u64::from_le_bytes(p[..8].try_into().unwrap())).sum();
/// assert_eq!(total, 499_500);
/// # Ok(()) }
/// ```
pub struct ParallelQueries<S: Share, G: GroupSend> {
    tool: ToolHandle<ParallelQuery<S>, G>,
}

impl<S: Share, G: GroupSend> Clone for ParallelQueries<S, G> {
    fn clone(&self) -> Self {
        Self { tool: self.tool.clone() }
    }
}

impl<S: Share, G: GroupSend> std::fmt::Debug for ParallelQueries<S, G> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParallelQueries").finish_non_exhaustive()
    }
}

impl<S: Share, G: GroupSend> ParallelQueries<S, G> {
    crate::group_access!(tool);

    /// Answers queries on `group` with `share`, as `me`.
    pub fn start<C: GroupChannel<Sender = G>>(group: C, me: ProcessId, share: S) -> Self {
        Self { tool: ToolHandle::start(group, ParallelQuery::new(me, share), None) }
    }

    /// Asks every member for its share and returns all parts, asking again (up to 16 times)
    /// while members fail midway.
    pub async fn query(&self, body: &[u8]) -> Result<QueryAnswer, ToolError> {
        for attempt in 1..=16 {
            let Effect::Query { order, payload, replies } = ParallelQuery::<S>::ask(body) else {
                unreachable!("ask makes a query")
            };
            let outcome = self.tool.sender().query(order, payload, replies).await?;
            if let Some((view, parts)) = combine(&outcome) {
                return Ok(QueryAnswer { id: outcome.id, view, parts });
            }
            tracing::debug!(attempt, failed = ?outcome.failed, "a parallel query is asked again");
        }
        Err(ToolError::NoSurvivor)
    }

    /// Reads this member's data.
    pub fn with_share<R>(&self, f: impl FnOnce(&S) -> R) -> R {
        self.tool.read(|c| f(c.share()))
    }

    /// Changes this member's data (local: replicate it with another tool if it must be).
    pub fn update_share<R>(&self, f: impl FnOnce(&mut S) -> R) -> R {
        self.tool.write(|c| f(c.share_mut()))
    }
}
