//! The wire format: what engines say to each other, and its versioned, authenticated framing.
//!
//! A frame is `b"SY"`, a version byte, a flags byte, the postcard-encoded [`Packet`], and,
//! when a cluster secret is set, a 32-byte HMAC-SHA256 tag over everything before it.
//! Decoding never panics: every failure is a [`DecodeError`] that the engine counts and
//! drops (see [`crate::Stats`]).

use crate::id::{Ballot, GroupName, MsgId, ProcessId, ViewId};
use crate::order::Order;
use bytes::Bytes;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use std::sync::Arc;

/// The wire version this engine speaks.
pub const WIRE_VERSION: u8 = 5;
const MAGIC: &[u8; 2] = b"SY";
const FLAG_TAG: u8 = 1;
const TAG_LEN: usize = 32;

/// One packet between two engines.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Packet {
    /// The sender.
    pub from: ProcessId,
    /// The addressee (incarnation 0: whoever is at that name).
    pub to: ProcessId,
    /// Link acknowledgement: how many reliable messages from `to` the sender has received
    /// in order.
    pub ack: u64,
    /// Link sequence number of `msgs[0]`.
    pub seq: u64,
    /// Reliable messages, FIFO per pair of processes, retransmitted until acknowledged.
    pub msgs: Vec<Msg>,
    /// Unreliable control messages.
    pub ctl: Vec<Ctl>,
}

/// Unreliable control messages (lost ones are simply repeated later).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Ctl {
    /// A process asks to join the cluster.
    JoinCluster {
        /// Its weight.
        weight: u32,
    },
    /// The answer of a contact that is not the leader: ask this one.
    Redirect {
        /// The current leader.
        leader: ProcessId,
    },
    /// "You were excluded from the cluster": the addressee must stop (G10).
    Excluded,
    /// Bootstrap from a peer list (see `boot.rs`), phase 1: promise this ballot.
    BootPrepare {
        /// The ballot.
        ballot: Ballot,
        /// The proposer's peer list's digest (`PeerList::digest`): a process with another
        /// list does not answer.
        list: u64,
    },
    /// Phase 1 answer: the promise, the promiser's weight, and the first membership it
    /// accepted last, if any, with its ballot.
    BootPromise {
        /// The ballot promised.
        ballot: Ballot,
        /// The promiser's weight.
        weight: u32,
        /// What it accepted, if anything.
        accepted: Option<(Ballot, Vec<(ProcessId, u32)>)>,
    },
    /// Phase 2: accept this first membership.
    BootAccept {
        /// The ballot.
        ballot: Ballot,
        /// The cluster's first members, with their weights (the first leads).
        members: Vec<(ProcessId, u32)>,
    },
    /// Phase 2 answer.
    BootAccepted {
        /// The ballot accepted.
        ballot: Ballot,
    },
    /// A majority of the list accepted this first membership: it is the cluster's.
    BootChosen {
        /// The cluster's first members, with their weights.
        members: Vec<(ProcessId, u32)>,
    },
}

/// A multicast as it travels in its sender's stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataMsg {
    /// The run-wide id (the origin's process and counter).
    pub id: MsgId,
    /// Position in the stream of the member that multicast it, from 1.
    pub seq: u64,
    /// Order class.
    pub order: Order,
    /// Vector timestamp by view rank (causal, total and safe only; empty otherwise):
    /// entry j counts the messages from member j the sender had delivered, and the
    /// sender's own entry is `seq`.
    pub vt: VectorTime,
    /// Whether the sender waits for replies (group RPC).
    pub query: bool,
    /// Sent while its origin was not a member of the group: it may also arrive by another
    /// path (a relay, or the origin's own stream once it joined), so every member delivers
    /// it only once it is stable, in the view where it is stable (G3).
    pub relayed: bool,
    /// A part of a message larger than `Config::fragment_bytes`: the payload is its bytes
    /// at `offset`. Every member delivers the whole once it delivered the last part.
    pub frag: Option<Frag>,
    /// The application's bytes.
    #[serde(deserialize_with = "shared_bytes")]
    pub payload: Bytes,
}

/// Where a fragment's payload sits in its message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Frag {
    /// The offset of the fragment's first byte in the message.
    pub offset: u64,
    /// The whole message's size.
    pub total: u64,
}

impl Frag {
    /// Whether a fragment of `len` bytes fits this place: not empty, inside the message.
    pub fn fits(&self, len: usize) -> bool {
        len > 0 && self.offset.checked_add(len as u64).is_some_and(|end| end <= self.total)
    }
}

/// A vector timestamp, shared by every copy of its message (a message is copied once per
/// peer and again into each frame: the timestamp is not). On the wire, a sequence of `u64`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VectorTime(Option<Arc<[u64]>>);

impl From<Vec<u64>> for VectorTime {
    fn from(v: Vec<u64>) -> Self {
        Self((!v.is_empty()).then(|| Arc::from(v)))
    }
}

impl std::ops::Deref for VectorTime {
    type Target = [u64];
    fn deref(&self) -> &[u64] {
        self.0.as_deref().unwrap_or(&[])
    }
}

impl Serialize for VectorTime {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        (**self).serialize(s)
    }
}

impl<'de> Deserialize<'de> for VectorTime {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Vec::<u64>::deserialize(d).map(Self::from)
    }
}

/// One position of the total order: (rank of the stream's owner in the view, seq).
pub type OrderEntry = (u32, u64);

/// A group view: id and members, oldest first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupView {
    /// The view id.
    pub id: ViewId,
    /// Members, oldest first.
    pub members: Vec<ProcessId>,
}

/// What a member holds of one group when a flush asks (its flush report).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Report {
    /// The group.
    pub group: GroupName,
    /// The reporter's view of it.
    pub view: ViewId,
    /// Per stream owner: every message still buffered (undelivered, or not yet stable).
    pub streams: Vec<(ProcessId, Vec<Arc<DataMsg>>)>,
    /// How many messages of each stream the reporter delivered.
    pub delivered: Vec<(ProcessId, u64)>,
    /// Position of `order[0]` in the view's total order.
    pub order_base: u64,
    /// The known part of the total order not yet delivered and stable.
    pub order: Vec<OrderEntry>,
    /// The next order position the reporter would deliver.
    pub delivered_total: u64,
}

/// The agreed end of a group epoch: every survivor delivers exactly this.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cut {
    /// Per stream owner, the last seq delivered in the epoch.
    pub streams: Vec<(ProcessId, u64)>,
    /// Messages some survivor may lack.
    pub msgs: Vec<(ProcessId, Arc<DataMsg>)>,
    /// Position of `order[0]`.
    pub order_base: u64,
    /// The final total order from `order_base` on.
    pub order: Vec<OrderEntry>,
}

/// One group's part of a membership decision.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupChange {
    /// The group.
    pub group: GroupName,
    /// The view the change ends (`ViewId(0)` when the group is new).
    pub old_view: ViewId,
    /// The new view; `None` when only gbcasts are delivered and the view goes on.
    pub new_view: Option<GroupView>,
    /// Where the old epoch ends.
    pub cut: Cut,
    /// Gbcasts delivered after the cut, in this order.
    pub gbcasts: Vec<DataMsg>,
    /// Members that left voluntarily (empty in an implied change).
    pub leavers: Vec<ProcessId>,
}

/// A membership decision: the cluster's next configuration, agreed by a majority.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// The configuration number it makes.
    pub epoch: u64,
    /// Members of the cluster (process view), oldest first, with weights.
    pub members: Vec<(ProcessId, u32)>,
    /// Processes excluded by this decision (failed, or left the cluster).
    pub removed: Vec<ProcessId>,
    /// Group changes, by group name. A group whose view holds a process of `removed`
    /// and that is not listed here changes too, implicitly: its next view is the old one
    /// without them, and its cut delivers nothing more (every survivor was quiet in it,
    /// see [`crate::Engine`]'s flush). One process failing changes thousands of groups
    /// with a decision of a few bytes.
    pub groups: Vec<GroupChange>,
    /// Group joins a member's join verifier refused.
    pub refused: Vec<(GroupName, ProcessId)>,
}

/// The whole configuration, for a process joining the cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Every group's current view.
    pub groups: Vec<(GroupName, GroupView)>,
    /// Every group's first view of its current lineage.
    pub lineages: Vec<(GroupName, ViewId)>,
}

/// A group operation a member asks the leader for.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum GroupOp {
    /// Join the group.
    Join(GroupName),
    /// Join the group only if a member goes on in it to hand over its state; otherwise the
    /// join is refused (so a process never founds a group it meant to rejoin).
    JoinRunning(GroupName),
    /// Leave the group.
    Leave(GroupName),
}

impl GroupOp {
    /// The group it is about.
    pub fn group(&self) -> &GroupName {
        match self {
            GroupOp::Join(g) | GroupOp::JoinRunning(g) | GroupOp::Leave(g) => g,
        }
    }

    /// The group it joins, if it is a join.
    pub fn joins(&self) -> Option<&GroupName> {
        match self {
            GroupOp::Join(g) | GroupOp::JoinRunning(g) => Some(g),
            GroupOp::Leave(_) => None,
        }
    }
}

/// A member's outstanding requests, as it sends them to every member (whoever leads holds
/// them). On the wire, the same bytes as a struct variant of [`Msg`].
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Requests {
    /// Processes it suspects.
    pub suspects: Vec<ProcessId>,
    /// Group joins and leaves it asks for.
    pub ops: Vec<GroupOp>,
    /// Gbcasts it wants delivered.
    pub gbcasts: Vec<(GroupName, ViewId, DataMsg)>,
    /// It wants to leave the cluster.
    pub leave: bool,
    /// Its verdicts on joins to groups it verifies: (group, joiner, admitted).
    pub verdicts: Vec<(GroupName, ProcessId, bool)>,
    /// The groups it is a member of and has a join verifier for.
    pub verifying: Vec<GroupName>,
    /// Its groups have been frozen by a round that never ended, for longer than the
    /// failure timeout: the leader must run a round (even an empty one) to end it.
    pub stalled: bool,
}

/// Reliable messages.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Msg {
    // ---- membership ----
    /// A contact forwards a joiner to the leader.
    JoinRequest {
        /// The joiner.
        who: ProcessId,
        /// Its weight.
        weight: u32,
    },
    /// A member's outstanding requests to the leader (the whole set each time).
    Requests(Requests),
    /// Phase 1: promise ballot, stop the listed groups and report them.
    Prepare {
        /// The ballot.
        ballot: Ballot,
        /// The epoch to be decided.
        epoch: u64,
        /// Groups to flush (joins, leaves, gbcasts), besides those of `removing`.
        groups: Vec<GroupName>,
        /// Processes the round removes: every group whose view holds one is flushed too,
        /// and reported only where it is not quiet (see [`Decision`]).
        removing: Vec<ProcessId>,
    },
    /// Phase 1 answer.
    Promise {
        /// The ballot promised.
        ballot: Ballot,
        /// The promiser's committed epoch.
        committed: u64,
        /// A decision it accepted for `committed + 1`, with its ballot.
        accepted: Option<(Ballot, Arc<Decision>)>,
        /// Flush reports for the listed groups it belongs to, and for the groups of the
        /// processes removed where it is not quiet.
        reports: Vec<Report>,
    },
    /// Phase 1 or 2 refusal: a higher ballot was promised.
    Nack {
        /// That ballot.
        promised: Ballot,
    },
    /// Phase 2: accept this decision.
    Accept {
        /// The ballot.
        ballot: Ballot,
        /// The decision.
        decision: Arc<Decision>,
    },
    /// Phase 2 answer.
    Accepted {
        /// The ballot.
        ballot: Ballot,
        /// The decision's epoch.
        epoch: u64,
    },
    /// The decision is chosen: apply it.
    Commit {
        /// The decision.
        decision: Arc<Decision>,
        /// The full configuration after it, for processes that join with it.
        snapshot: Option<Arc<Snapshot>>,
    },
    // ---- groups ----
    /// A multicast.
    Data {
        /// Group.
        group: GroupName,
        /// Sender's view.
        view: ViewId,
        /// Epoch in the view (bumped by each gbcast).
        epoch: u32,
        /// The sender's membership epoch when it sent: a receiver that has not applied that
        /// decision yet holds the message until it has (causal order across groups: what the
        /// sender delivered in that decision's cuts comes first everywhere).
        pepoch: u64,
        /// The message, shared by the copies queued for each peer.
        #[serde(deserialize_with = "arc_data")]
        msg: Arc<DataMsg>,
    },
    /// Total order tokens from the sequencer.
    Order {
        /// Group.
        group: GroupName,
        /// View.
        view: ViewId,
        /// Epoch.
        epoch: u32,
        /// Position of `entries[0]`.
        first: u64,
        /// Positions.
        entries: Vec<OrderEntry>,
    },
    /// A receiver tells a stream's owner how much of it it holds (and the sequencer how
    /// much of the order).
    Ack {
        /// Group.
        group: GroupName,
        /// View.
        view: ViewId,
        /// Messages received from the addressee's stream.
        received: u64,
        /// Messages delivered from the addressee's stream.
        delivered: u64,
        /// Order positions received (meaningful to the sequencer).
        order_len: u64,
    },
    /// A stream's owner says every member holds its stream up to `seq`; the sequencer also
    /// says every member holds the order up to `order_len`.
    Stable {
        /// Group.
        group: GroupName,
        /// View.
        view: ViewId,
        /// Stable prefix of the sender's stream.
        seq: u64,
        /// Prefix of the sender's stream that every member has delivered.
        delivered: u64,
        /// Stable prefix of the order (sequencer only).
        order_len: u64,
    },
    /// A group RPC reply (None: a null reply).
    Reply {
        /// The query.
        query: MsgId,
        /// The answer.
        payload: Option<Bytes>,
    },
    /// A non-member's multicast, to be relayed by a member.
    Forward {
        /// Group.
        group: GroupName,
        /// The origin's sequence number of its sends to this group (from 0).
        fseq: u64,
        /// Every send of the origin below this was acknowledged by some relay.
        acked: u64,
        /// The origin's membership epoch when it sent (as [`Msg::Data`]'s `pepoch`).
        pepoch: u64,
        /// Message (seq unused).
        msg: DataMsg,
    },
    /// The relay multicast it and every member delivered it (or the view it was delivered
    /// in ended, so every survivor did).
    ForwardAck {
        /// The message.
        id: MsgId,
        /// The relay's membership epoch: the origin's later ordered sends wait until it
        /// applied that decision too.
        epoch: u64,
    },
    /// A joiner asks for state from `offset`.
    StateFetch {
        /// Group.
        group: GroupName,
        /// The joiner's first view.
        view: ViewId,
        /// Byte offset.
        offset: u64,
        /// How many bytes from `offset` (the provider sends them in chunks, in order).
        len: u64,
        /// Resuming a transfer another provider began: the FNV-1a digest of the `offset`
        /// bytes the joiner has. The provider goes on from `offset` if its state begins with
        /// those bytes, and starts again from 0 otherwise.
        prefix: Option<u64>,
    },
    /// A piece of state.
    StateChunk {
        /// Group.
        group: GroupName,
        /// The joiner's first view.
        view: ViewId,
        /// Byte offset.
        offset: u64,
        /// Total length.
        total: u64,
        /// The bytes.
        #[serde(deserialize_with = "shared_bytes")]
        data: Bytes,
    },
    /// The provider has no checkpoint yet; ask again later.
    StateNotReady {
        /// Group.
        group: GroupName,
        /// View.
        view: ViewId,
    },
    /// The provider has no checkpoint for that view and never will: ask another.
    StateUnavailable {
        /// Group.
        group: GroupName,
        /// View.
        view: ViewId,
    },
    /// The joiner has the whole state; providers may drop their checkpoint.
    StateDone {
        /// Group.
        group: GroupName,
        /// View.
        view: ViewId,
    },
}

impl Msg {
    /// A cheap estimate of the encoded size, to fill packets.
    pub fn approx_size(&self) -> usize {
        match self {
            Msg::Data { msg, .. } => 48 + msg.payload.len() + 8 * msg.vt.len(),
            Msg::Forward { msg, .. } => 48 + msg.payload.len() + 8 * msg.vt.len(),
            Msg::StateChunk { data, .. } => 48 + data.len(),
            Msg::Reply { payload, .. } => 48 + payload.as_ref().map_or(0, |p| p.len()),
            Msg::Order { entries, .. } => 32 + 12 * entries.len(),
            Msg::Promise { reports, accepted, .. } => {
                64 + reports
                    .iter()
                    .flat_map(|r| r.streams.iter())
                    .flat_map(|(_, m)| m.iter())
                    .map(|m| 48 + m.payload.len())
                    .sum::<usize>()
                    + accepted.as_ref().map_or(0, |(_, d)| decision_size(d))
            }
            Msg::Accept { decision, .. } | Msg::Commit { decision, .. } => 64 + decision_size(decision),
            _ => 64,
        }
    }
}

fn decision_size(d: &Decision) -> usize {
    64 + d
        .groups
        .iter()
        .map(|g| 64 + g.cut.msgs.iter().map(|(_, m)| 48 + m.payload.len()).sum::<usize>())
        .sum::<usize>()
}

/// Why a frame was rejected.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    /// Shorter than a header.
    #[error("frame too short ({0} bytes)")]
    TooShort(usize),
    /// Not a synchrony frame.
    #[error("bad magic")]
    BadMagic,
    /// A version this engine does not speak.
    #[error("unsupported wire version {0}")]
    Version(u8),
    /// A secret is set and the frame has no tag, or the tag is wrong.
    #[error("authentication failed")]
    Auth,
    /// The body does not decode.
    #[error("malformed body: {0}")]
    Body(String),
    /// The body decodes but is not what an engine sends.
    #[error("invalid message: {0}")]
    Invalid(&'static str),
}

type HmacSha256 = Hmac<Sha256>;

fn mac(secret: &[u8]) -> HmacSha256 {
    // HMAC accepts keys of any length, so this cannot fail.
    <HmacSha256 as Mac>::new_from_slice(secret).expect("hmac takes any key length")
}

/// Encodes a packet into a frame, with a tag when `secret` is set.
pub fn encode(packet: &Packet, secret: Option<&[u8]>) -> Bytes {
    // Room for the whole packet at once: no regrowing (and copying) a large one.
    let mut out = Vec::with_capacity(64 + TAG_LEN + packet.msgs.iter().map(Msg::approx_size).sum::<usize>());
    out.extend_from_slice(MAGIC);
    out.push(WIRE_VERSION);
    out.push(if secret.is_some() { FLAG_TAG } else { 0 });
    let mut out = postcard::to_extend(packet, out).expect("encoding into a Vec cannot fail");
    if let Some(secret) = secret {
        let mut m = mac(secret);
        m.update(&out);
        out.extend_from_slice(&m.finalize().into_bytes());
    }
    Bytes::from(out)
}

std::thread_local! {
    /// The frame [`decode_shared`] is decoding: payloads become slices of it, not copies.
    static FRAME: std::cell::RefCell<Option<Bytes>> = const { std::cell::RefCell::new(None) };
}

/// Decodes a data message straight into its `Arc` (serde's own `Arc` decoding goes through
/// a `Box` and copies: two allocations per message instead of one).
fn arc_data<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Arc<DataMsg>, D::Error> {
    DataMsg::deserialize(d).map(Arc::new)
}

/// Deserializes bytes as a slice of the frame being decoded when they lie in it (see
/// [`decode_shared`]), and as a copy otherwise.
fn shared_bytes<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Bytes, D::Error> {
    struct Shared;
    impl<'de> serde::de::Visitor<'de> for Shared {
        type Value = Bytes;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("bytes")
        }
        fn visit_borrowed_bytes<E>(self, v: &'de [u8]) -> Result<Bytes, E> {
            Ok(FRAME.with(|f| match &*f.borrow() {
                Some(frame) if !v.is_empty() && within(frame, v) => frame.slice_ref(v),
                _ => Bytes::copy_from_slice(v),
            }))
        }
        fn visit_bytes<E>(self, v: &[u8]) -> Result<Bytes, E> {
            Ok(Bytes::copy_from_slice(v))
        }
        fn visit_byte_buf<E>(self, v: Vec<u8>) -> Result<Bytes, E> {
            Ok(Bytes::from(v))
        }
    }
    d.deserialize_bytes(Shared)
}

/// Whether `part` lies inside `whole`'s memory (what `Bytes::slice_ref` needs).
fn within(whole: &[u8], part: &[u8]) -> bool {
    let (w, p) = (whole.as_ptr() as usize, part.as_ptr() as usize);
    p >= w && p + part.len() <= w + whole.len()
}

/// Decodes a frame as [`decode`] does, with the messages' payloads sharing the frame's
/// buffer instead of being copied out of it.
pub fn decode_shared(frame: &Bytes, secret: Option<&[u8]>) -> Result<Packet, DecodeError> {
    FRAME.with(|f| *f.borrow_mut() = Some(frame.clone()));
    let packet = decode(frame, secret);
    FRAME.with(|f| *f.borrow_mut() = None);
    packet
}

/// Decodes a frame. With `secret` set, a frame without a valid tag is rejected.
pub fn decode(frame: &[u8], secret: Option<&[u8]>) -> Result<Packet, DecodeError> {
    if frame.len() < 4 {
        return Err(DecodeError::TooShort(frame.len()));
    }
    if &frame[..2] != MAGIC {
        return Err(DecodeError::BadMagic);
    }
    if frame[2] != WIRE_VERSION {
        return Err(DecodeError::Version(frame[2]));
    }
    let tagged = frame[3] & FLAG_TAG != 0;
    let body = match (secret, tagged) {
        (Some(secret), true) => {
            if frame.len() < 4 + TAG_LEN {
                return Err(DecodeError::Auth);
            }
            let (signed, tag) = frame.split_at(frame.len() - TAG_LEN);
            let mut m = mac(secret);
            m.update(signed);
            m.verify_slice(tag).map_err(|_| DecodeError::Auth)?;
            &signed[4..]
        }
        (Some(_), false) => return Err(DecodeError::Auth),
        (None, true) => &frame[4..frame.len().saturating_sub(TAG_LEN).max(4)],
        (None, false) => &frame[4..],
    };
    let packet: Packet = postcard::from_bytes(body).map_err(|e| DecodeError::Body(e.to_string()))?;
    for m in &packet.msgs {
        if let Msg::Data { msg, .. } = m {
            // Only the ordered classes carry a vector timestamp (its length is checked
            // against the view on arrival), and a stream's positions start at 1.
            if msg.order.is_causal() == msg.vt.is_empty() {
                return Err(DecodeError::Invalid("a vector timestamp that does not fit the order class"));
            }
            if msg.seq == 0 || msg.order == Order::Gbcast {
                return Err(DecodeError::Invalid("a stream message out of any stream"));
            }
            if msg.frag.is_some_and(|f| !f.fits(msg.payload.len()) || msg.relayed) {
                return Err(DecodeError::Invalid("a fragment that does not fit its message"));
            }
        }
    }
    Ok(packet)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Packet {
        Packet {
            from: ProcessId::new("a", 1),
            to: ProcessId::new("b", 2),
            ack: 3,
            seq: 4,
            msgs: vec![Msg::Data {
                group: GroupName::new("g"),
                view: ViewId(1),
                epoch: 0,
                pepoch: 0,
                msg: Arc::new(DataMsg {
                    id: MsgId { sender: ProcessId::new("a", 1), counter: 9 },
                    seq: 1,
                    order: Order::Causal,
                    vt: vec![1, 0].into(),
                    query: false,
                    relayed: false,
                    frag: None,
                    payload: Bytes::from_static(b"hello"),
                }),
            }],
            ctl: vec![Ctl::JoinCluster { weight: 1 }],
        }
    }

    #[test]
    fn a_shared_decode_slices_payloads_out_of_the_frame_and_equals_a_copying_one() {
        for secret in [None, Some(&b"k"[..])] {
            let frame = encode(&sample(), secret);
            let copied = decode(&frame, secret).expect("decodes");
            let shared = decode_shared(&frame, secret).expect("decodes");
            assert_eq!(format!("{copied:?}"), format!("{shared:?}"));
            let Msg::Data { msg, .. } = &shared.msgs[0] else { panic!("a data message") };
            assert!(within(&frame, &msg.payload), "the payload is a slice of the frame");
            let Msg::Data { msg, .. } = &copied.msgs[0] else { panic!("a data message") };
            assert!(!within(&frame, &msg.payload), "the plain decode copies");
        }
        // After a shared decode, a plain one of another buffer copies again.
        let other = encode(&sample(), None).to_vec();
        let Msg::Data { msg, .. } = &decode(&other, None).expect("decodes").msgs[0] else { panic!() };
        assert!(!within(&other, &msg.payload));
    }

    #[test]
    fn round_trip_plain_and_tagged() {
        let p = sample();
        let f = encode(&p, None);
        let q = decode(&f, None).unwrap();
        assert_eq!(format!("{q:?}"), format!("{p:?}"));
        let f = encode(&p, Some(b"secret"));
        assert!(decode(&f, Some(b"secret")).is_ok());
        assert_eq!(decode(&f, Some(b"other")).unwrap_err(), DecodeError::Auth);
        assert_eq!(decode(&encode(&p, None), Some(b"secret")).unwrap_err(), DecodeError::Auth);
    }

    #[test]
    fn flipped_bit_fails_authentication() {
        let f = encode(&sample(), Some(b"k")).to_vec();
        for i in 4..f.len() {
            let mut g = f.clone();
            g[i] ^= 0x10;
            assert!(decode(&g, Some(b"k")).is_err(), "byte {i}");
        }
    }

    #[test]
    fn a_causal_message_without_a_vector_timestamp_is_refused() {
        let mut p = sample();
        if let Msg::Data { msg, .. } = &mut p.msgs[0] {
            Arc::make_mut(msg).vt = VectorTime::default();
        }
        assert!(matches!(decode(&encode(&p, None), None), Err(DecodeError::Invalid(_))));
        let mut p = sample();
        if let Msg::Data { msg, .. } = &mut p.msgs[0] {
            Arc::make_mut(msg).order = Order::Fifo;
        }
        assert!(matches!(decode(&encode(&p, None), None), Err(DecodeError::Invalid(_))));
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode(&bytes, None);
            let _ = decode(&bytes, Some(b"k"));
        }

        #[test]
        fn decode_never_panics_on_mutated_frames(
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
            cut in any::<usize>(),
        ) {
            let mut f = encode(&sample(), None).to_vec();
            for (i, b) in flips {
                let n = f.len();
                f[i % n] = b;
            }
            let keep = 4 + cut % (f.len() - 3);
            let _ = decode(&f[..keep.min(f.len())], None);
            let _ = decode(&f, None);
        }
    }
}
