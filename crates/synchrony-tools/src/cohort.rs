//! Coordinator-cohort: a request to a group is executed by one member, the coordinator,
//! while the others (the cohorts) watch; if the coordinator fails, the next in rank takes
//! over. The coordinator is chosen from the view, the same at every member: a member on the
//! caller's machine if there is one, else one spread by a hash of the request.
//!
//! The caller sends a query that waits for one reply. The coordinator executes and
//! multicasts the result (total order) before it replies, so every cohort has it: if the
//! coordinator fails after that, the next in rank replies with the kept result (the engine
//! takes one reply per query, so the caller gets exactly one); if it fails before, nobody
//! has the result and the next in rank executes. When every member fails, the caller's
//! query ends with no reply and it learns that.

use crate::channel::Keyed;
use crate::{decode, encode, Core, Effects, GroupChannel, GroupSend, ToolError, ToolHandle};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use synchrony_engine::{Delivery, GroupView, MsgId, Order, ProcessId, Replies};

/// Marks a coordinator-cohort message.
const MAGIC: &[u8; 4] = b"cc01";

/// Results kept for re-replies after a coordinator's failure.
const RESULTS_KEPT: usize = 1024;

/// What the coordinator runs.
pub trait Handler: Send + 'static {
    /// Executes a request and returns the reply.
    fn execute(&mut self, request: &[u8]) -> Bytes;
}

#[derive(Debug, Serialize, Deserialize)]
enum Wire {
    /// A member says which machine it is on.
    Hello { host: String },
    /// A caller's request (a query).
    Request { host: String, body: Vec<u8> },
    /// The coordinator's result, before it replies.
    Done { request: MsgId, result: Vec<u8> },
}

/// What the tool tells its users at a member.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CohortOutput {
    /// This member executed `request` as its coordinator.
    Executed {
        /// The request.
        request: MsgId,
    },
    /// This member replied to `request` (as coordinator, or taking over from a failed one).
    Replied {
        /// The request.
        request: MsgId,
    },
}

impl Keyed for CohortOutput {
    fn key(&self) -> Option<&MsgId> {
        None
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Pending {
    body: Vec<u8>,
    coordinator: ProcessId,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Finished {
    result: Vec<u8>,
    replier: ProcessId,
}

#[derive(Serialize, Deserialize)]
struct State {
    hosts: BTreeMap<ProcessId, String>,
    pending: BTreeMap<MsgId, Pending>,
    finished: Vec<(MsgId, Finished)>,
}

/// One member's side of coordinator-cohort (a [`Core`]).
#[derive(Debug)]
pub struct Cohort<H: Handler> {
    me: ProcessId,
    host: String,
    handler: H,
    members: Vec<ProcessId>,
    hosts: BTreeMap<ProcessId, String>,
    pending: BTreeMap<MsgId, Pending>,
    finished: BTreeMap<MsgId, Finished>,
    finished_order: VecDeque<MsgId>,
    said_hello: bool,
}

impl<H: Handler> Cohort<H> {
    /// `me`, on machine `host`, executes requests with `handler` when it coordinates.
    pub fn new(me: ProcessId, host: impl Into<String>, handler: H) -> Self {
        Self {
            me,
            host: host.into(),
            handler,
            members: Vec::new(),
            hosts: BTreeMap::new(),
            pending: BTreeMap::new(),
            finished: BTreeMap::new(),
            finished_order: VecDeque::new(),
            said_hello: false,
        }
    }

    /// The query a caller on machine `host` sends (total order, one reply).
    pub fn request(host: &str, body: &[u8]) -> (Order, Bytes, Replies) {
        (Order::Total, wire(&Wire::Request { host: host.into(), body: body.to_vec() }), Replies::One)
    }

    /// The coordinator of a request from `host` with id `id` in a view of `members`: the
    /// oldest member on the caller's machine, else one chosen by the request's hash.
    pub fn choose(members: &[ProcessId], hosts: &BTreeMap<ProcessId, String>, host: &str, id: &MsgId) -> ProcessId {
        if let Some(local) = members.iter().find(|m| hosts.get(*m).is_some_and(|h| h == host)) {
            return local.clone();
        }
        let k = crate::fnv1a(id.to_string().as_bytes()) % members.len().max(1) as u64;
        members[k as usize].clone()
    }

    /// Requests waiting for their coordinator.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// The coordinator of a pending request.
    pub fn coordinator_of(&self, request: &MsgId) -> Option<&ProcessId> {
        self.pending.get(request).map(|p| &p.coordinator)
    }

    fn execute(&mut self, request: &MsgId, fx: &mut Effects<CohortOutput>) {
        let Some(p) = self.pending.get(request) else { return };
        let result = self.handler.execute(&p.body).to_vec();
        fx.output(CohortOutput::Executed { request: request.clone() });
        fx.send(Order::Total, wire(&Wire::Done { request: request.clone(), result }));
    }

    /// Reassigns the requests and results of members that left; `act`: execute and reply
    /// for those that fall to this member (not when re-applying a view a joiner's state
    /// predates: the members acted then).
    fn members_changed(&mut self, members: Vec<ProcessId>, fx: &mut Effects<CohortOutput>, act: bool) {
        self.members = members;
        let alive = |p: &ProcessId, ms: &[ProcessId]| ms.contains(p);
        self.hosts.retain(|p, _| alive(p, &self.members));
        let Some(oldest) = self.members.first().cloned() else { return };
        // Requests whose coordinator failed before its result was delivered: the next in
        // rank (the oldest survivor) executes.
        let orphans: Vec<MsgId> = self
            .pending
            .iter()
            .filter(|(_, p)| !alive(&p.coordinator, &self.members))
            .map(|(id, _)| id.clone())
            .collect();
        for id in orphans {
            if let Some(p) = self.pending.get_mut(&id) {
                p.coordinator = oldest.clone();
            }
            if act && oldest == self.me {
                self.execute(&id, fx);
            }
        }
        // Results whose replier failed, maybe before its reply got out: the oldest
        // survivor replies again (a caller that has its reply ignores a second one).
        let orphans: Vec<MsgId> =
            self.finished.iter().filter(|(_, f)| !alive(&f.replier, &self.members)).map(|(id, _)| id.clone()).collect();
        for id in orphans {
            let f = self.finished.get_mut(&id).expect("listed");
            f.replier = oldest.clone();
            if act && oldest == self.me {
                let result = Bytes::from(f.result.clone());
                fx.reply(id.clone(), Some(result));
                fx.output(CohortOutput::Replied { request: id });
            }
        }
    }
}

fn wire(w: &Wire) -> Bytes {
    let mut b = MAGIC.to_vec();
    b.extend_from_slice(&encode(w));
    Bytes::from(b)
}

impl<H: Handler> Core for Cohort<H> {
    type Output = CohortOutput;

    fn on_view(&mut self, view: &GroupView, fx: &mut Effects<CohortOutput>) {
        if !self.said_hello && view.members.contains(&self.me) {
            self.said_hello = true;
            fx.send(Order::Total, wire(&Wire::Hello { host: self.host.clone() }));
        }
        self.members_changed(view.members.clone(), fx, true);
    }

    fn on_message(&mut self, msg: &Delivery, fx: &mut Effects<CohortOutput>) {
        let Some(rest) = msg.payload.strip_prefix(MAGIC) else { return crate::not_understood(msg, fx) };
        let Ok(w) = decode::<Wire>(rest) else {
            tracing::warn!(id = %msg.id, "a coordinator-cohort message that does not decode was ignored");
            return crate::not_understood(msg, fx);
        };
        match w {
            Wire::Hello { host } => {
                if self.members.contains(&msg.id.sender) {
                    self.hosts.insert(msg.id.sender.clone(), host);
                }
            }
            Wire::Request { host, body } => {
                if self.members.is_empty() {
                    return;
                }
                let coordinator = Self::choose(&self.members, &self.hosts, &host, &msg.id);
                self.pending.insert(msg.id.clone(), Pending { body, coordinator: coordinator.clone() });
                if coordinator == self.me {
                    self.execute(&msg.id, fx);
                }
            }
            Wire::Done { request, result } => {
                if self.pending.remove(&request).is_none() || self.finished.contains_key(&request) {
                    return; // a second execution after a takeover: the first result stands
                }
                // A coordinator that left the group as it sent its result (a non-member's
                // message now) will not see it delivered, so will not reply: the oldest
                // member replies in its place, as for a replier that fails later.
                let replier = match self.members.first() {
                    Some(oldest) if !self.members.contains(&msg.id.sender) => oldest.clone(),
                    _ => msg.id.sender.clone(),
                };
                if replier == self.me {
                    fx.reply(request.clone(), Some(Bytes::from(result.clone())));
                    fx.output(CohortOutput::Replied { request: request.clone() });
                }
                if self.finished_order.len() >= RESULTS_KEPT {
                    if let Some(old) = self.finished_order.pop_front() {
                        self.finished.remove(&old);
                    }
                }
                self.finished_order.push_back(request.clone());
                self.finished.insert(request, Finished { result, replier });
            }
        }
    }

    fn snapshot(&self) -> Bytes {
        let finished = self.finished_order.iter().filter_map(|id| Some((id.clone(), self.finished.get(id)?.clone())));
        encode(&State { hosts: self.hosts.clone(), pending: self.pending.clone(), finished: finished.collect() })
    }

    fn restore(&mut self, state: &[u8]) -> Result<(), ToolError> {
        let s: State = decode(state)?;
        self.hosts = s.hosts;
        self.pending = s.pending;
        self.finished_order = s.finished.iter().map(|(id, _)| id.clone()).collect();
        self.finished = s.finished.into_iter().collect();
        // The state is from before the join view: apply the view again, as the provider did
        // (without acting: the provider's members acted on it already).
        let members = std::mem::take(&mut self.members);
        self.members_changed(members, &mut Effects::default(), false);
        Ok(())
    }
}

/// Coordinator-cohort on a group, for async callers: members serve with a [`Handler`],
/// anyone with the group's sender asks.
///
/// ```no_run
/// # async fn f(group: impl synchrony_tools::GroupChannel) -> Result<(), synchrony_tools::ToolError> {
/// use synchrony_tools::{CohortService, Handler};
/// struct Echo;
/// impl Handler for Echo {
///     fn execute(&mut self, request: &[u8]) -> bytes::Bytes { bytes::Bytes::copy_from_slice(request) }
/// }
/// let me = synchrony_engine::ProcessId::new("n1", 1);
/// let service = CohortService::start(group, me, "host-a", Echo);
/// let reply = service.call(b"ping").await?;
/// assert_eq!(&reply[..], b"ping");
/// # Ok(()) }
/// ```
pub struct CohortService<H: Handler, S: GroupSend> {
    tool: ToolHandle<Cohort<H>, S>,
    host: String,
}

impl<H: Handler, S: GroupSend> Clone for CohortService<H, S> {
    fn clone(&self) -> Self {
        Self { tool: self.tool.clone(), host: self.host.clone() }
    }
}

impl<H: Handler, S: GroupSend> std::fmt::Debug for CohortService<H, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CohortService").field("host", &self.host).finish_non_exhaustive()
    }
}

impl<H: Handler, S: GroupSend> CohortService<H, S> {
    crate::group_access!(tool);

    /// Serves requests on `group` as `me` on machine `host`.
    pub fn start<G: GroupChannel<Sender = S>>(group: G, me: ProcessId, host: &str, handler: H) -> Self {
        Self { tool: ToolHandle::start(group, Cohort::new(me, host, handler), None), host: host.into() }
    }

    /// The group's sender (for [`call`] from another machine's point of view).
    pub fn sender(&self) -> &S {
        self.tool.sender()
    }

    /// Sends a request and waits for its one reply; [`ToolError::NoSurvivor`] when every
    /// member that could answer failed.
    pub async fn call(&self, body: &[u8]) -> Result<Bytes, ToolError> {
        call(self.tool.sender(), &self.host, body).await
    }
}

/// Sends a coordinator-cohort request through any group sender (a member's or, with the
/// node's sender, a non-member's).
pub async fn call<S: GroupSend>(sender: &S, host: &str, body: &[u8]) -> Result<Bytes, ToolError> {
    let (order, payload, replies) = Cohort::<NoHandler>::request(host, body);
    let outcome = sender.query(order, payload, replies).await?;
    outcome.replies.into_iter().next().map(|(_, b)| b).ok_or(ToolError::NoSurvivor)
}

/// A handler for callers that never serve.
#[derive(Debug)]
struct NoHandler;

impl Handler for NoHandler {
    fn execute(&mut self, _request: &[u8]) -> Bytes {
        Bytes::new()
    }
}
