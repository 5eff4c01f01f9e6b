//! One group at one member: streams, ordering, delivery, stability, flush reports and cuts.
//!
//! Each member multicasts on its own stream (seq 1, 2, ...) in the current view; links are
//! FIFO so a stream arrives in order. A message is delivered when it heads its stream and
//! its class allows: causal (and total, safe) messages wait until their vector timestamp is
//! covered; total and safe messages wait for their position in the sequencer's order (the
//! sequencer is the view's oldest member); safe messages also wait until every member holds
//! the message and its order position. Members acknowledge to each stream's owner, which
//! announces its stable prefix; stable, delivered messages are dropped.
//!
//! A membership round freezes the group (no delivery, no acknowledgement, no sending): the
//! member reports what it holds, the leader computes one [`Cut`] from all reports, and each
//! survivor delivers exactly the cut before the next view or gbcast (G4, G8).

use crate::id::{GroupName, MsgId, ProcessId, ViewId};
use crate::order::Order;
use crate::transfer::{Checkpoint, JoinState};
use crate::wire::{Cut, DataMsg, Frag, GroupView, Msg, OrderEntry, Report, VectorTime};
use bytes::Bytes;
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

/// Outputs of group operations, drained by the engine.
#[derive(Default)]
pub(crate) struct Out {
    pub(crate) sends: Vec<(ProcessId, Msg)>,
    pub(crate) delivered: Vec<Delivered>,
    pub(crate) flushed: usize,
    /// Gbcasts released from the queue: they go to the membership leader.
    pub(crate) gbcasts: Vec<DataMsg>,
    /// Non-members' messages this member relayed that may be acknowledged to their origin.
    pub(crate) forward_acks: Vec<MsgId>,
    /// Fragments delivered out of their place in a message (only a broken sender makes
    /// them): dropped with the message they belong to.
    pub(crate) bad_fragments: usize,
}

/// A delivery, before the engine turns it into an event.
pub(crate) struct Delivered {
    pub(crate) view: ViewId,
    pub(crate) msg: Arc<DataMsg>,
}

/// One member's stream as seen here.
#[derive(Debug)]
pub(crate) struct Stream {
    pub(crate) owner: ProcessId,
    /// Seq of `msgs[0]`.
    base: u64,
    msgs: VecDeque<Arc<DataMsg>>,
    /// Highest seq held (contiguous).
    pub(crate) received: u64,
    /// Highest seq delivered.
    pub(crate) delivered: u64,
    /// Highest seq every member holds, as its owner announced.
    pub(crate) stable: u64,
    /// Highest seq every member has delivered, as its owner announced (for the own stream:
    /// as the members acknowledged).
    pub(crate) dstable: u64,
}

impl Stream {
    fn new(owner: ProcessId) -> Self {
        Self { owner, base: 1, msgs: VecDeque::new(), received: 0, delivered: 0, stable: 0, dstable: 0 }
    }

    fn get(&self, seq: u64) -> Option<&Arc<DataMsg>> {
        seq.checked_sub(self.base).and_then(|i| self.msgs.get(i as usize))
    }

    fn push(&mut self, msg: Arc<DataMsg>) -> bool {
        if msg.seq != self.received + 1 {
            return false;
        }
        if self.msgs.is_empty() {
            self.base = msg.seq;
        }
        self.received = msg.seq;
        self.msgs.push_back(msg);
        true
    }

    /// Drops what is delivered and stable; returns how many messages it dropped.
    fn gc(&mut self) -> usize {
        let (upto, before) = (self.delivered.min(self.stable), self.msgs.len());
        while self.msgs.front().is_some_and(|m| m.seq <= upto) {
            self.msgs.pop_front();
            self.base += 1;
        }
        before - self.msgs.len()
    }

    /// Drops what is past `hi`; returns how many messages it dropped.
    fn truncate(&mut self, hi: u64) -> usize {
        let before = self.msgs.len();
        while self.msgs.back().is_some_and(|m| m.seq > hi) {
            self.msgs.pop_back();
        }
        self.received = self.received.min(hi);
        before - self.msgs.len()
    }
}

/// An application send waiting for the group to be unfrozen.
#[derive(Debug)]
pub(crate) struct Queued {
    pub(crate) id: MsgId,
    pub(crate) order: Order,
    pub(crate) query: bool,
    /// Sent while the origin was not a member (see [`DataMsg::relayed`]).
    pub(crate) relayed: bool,
    pub(crate) payload: Bytes,
}

/// How large messages travel (`Config::fragment_bytes` and the rest).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Fragmenting {
    /// A payload larger than this goes in fragments of this size.
    pub(crate) bytes: usize,
    /// Fragment bytes in flight (sent, not yet stable) before the next waits.
    pub(crate) window: usize,
    /// The largest message a member accepts to reassemble.
    pub(crate) max: usize,
}

impl Fragmenting {
    pub(crate) fn of(config: &crate::Config) -> Self {
        Self {
            bytes: config.fragment_bytes.max(1),
            window: config.fragment_window_bytes,
            max: config.max_message_bytes,
        }
    }
}

/// A large message of this member going out in fragments, as far as the window lets it.
#[derive(Debug)]
struct Outgoing {
    q: Queued,
    /// Offset of the next fragment to send.
    next: usize,
}

/// Another member's large message being put together from its fragments, in its stream's
/// order (a stream carries one message's fragments one after the other).
#[derive(Debug)]
struct Assembly {
    id: MsgId,
    buf: Vec<u8>,
}

/// One group at this member.
#[derive(Debug)]
pub(crate) struct GroupState {
    pub(crate) name: GroupName,
    pub(crate) view: GroupView,
    pub(crate) rank: usize,
    pub(crate) epoch: u32,
    /// Frozen by the membership round for this epoch.
    pub(crate) frozen: Option<u64>,
    /// A joiner holding back its acknowledgements (see `Config::joiner_hold_bytes`).
    pub(crate) acks_held: bool,
    pub(crate) streams: Vec<Stream>,
    /// Messages held in all the streams (`quiet` reads it: a crash asks it of every group).
    buffered: usize,
    /// Position of `order[0]` in the view's total order.
    order_base: u64,
    /// Known order entries not yet both delivered and stable.
    order: VecDeque<OrderEntry>,
    /// Next position to deliver.
    pub(crate) delivered_total: u64,
    /// Positions every member holds (from the sequencer).
    order_stable: u64,
    /// Sequencer: tokens not yet sent, and how much of the order each member acknowledged.
    seq_pending: Vec<OrderEntry>,
    seq_pending_first: u64,
    seq_acks: Vec<u64>,
    /// Sequencer: per stream, the highest seq it considered for ordering.
    sequenced: Vec<u64>,
    /// Own stream: next seq, acks by member, what was last announced stable.
    next_seq: u64,
    acks: Vec<u64>,
    /// What was last announced: stable prefix, stable order, delivered prefix.
    stable_sent: (u64, u64, u64),
    ack_dirty: Vec<bool>,
    pub(crate) queued: VecDeque<Queued>,
    /// Flush calls waiting: the last own counter each covers,
    /// and, in the view of the call, what the caller had delivered then: the flush also
    /// waits for that to be stable, so that every survivor can deliver the covered
    /// messages (their causal past included) after a failure (G12).
    pub(crate) flushes: Vec<(u64, Option<Vec<u64>>)>,
    /// Own messages sent and not yet stable: (seq, counter, bytes).
    own_unstable: VecDeque<(u64, u64, usize)>,
    /// Bytes of the own messages not yet stable, and of the sends queued.
    own_unstable_bytes: usize,
    queued_bytes: usize,
    pub(crate) join: JoinState,
    pub(crate) checkpoints: BTreeMap<ViewId, Checkpoint>,
    /// Whether the next delivery pass is a cut (ignore stability, no new tokens).
    cut_mode: bool,
    /// A gbcast of this member not yet delivered: later sends wait for it (G5).
    pub(crate) hold: Option<MsgId>,
    /// Per non-member origin, the highest counter delivered (drops relay duplicates).
    pub(crate) external: BTreeMap<ProcessId, u64>,
    /// Causal order across groups is kept (`Config::causal_across_groups`): members
    /// acknowledge what they delivered, and relayed messages are acknowledged to their
    /// origin only once every member delivered them.
    pub(crate) across: bool,
    /// Own stream: how much of it each member has delivered.
    dacks: Vec<u64>,
    /// The application's events of this group are held back (a state is owed or awaited):
    /// what is delivered now is not shown yet, so not acknowledged as delivered.
    pub(crate) gated: bool,
    /// Per stream, how much was delivered while the group was not gated.
    shown: Vec<u64>,
    /// The first decision that delivered here while gated (a cut or gbcasts).
    pub(crate) gated_decision: Option<u64>,
    /// Own messages (seq, counter) not yet delivered at every member.
    own_undelivered: VecDeque<(u64, u64)>,
    /// Relayed messages of the own stream delivered here, not yet at every member.
    relayed_undelivered: VecDeque<(u64, MsgId)>,
    /// While a joiner waits for its state: its deliveries, to check against the table that
    /// comes with the state (id, relayed).
    /// (`false`: a gbcast, never a duplicate.)
    pub(crate) unchecked: Option<VecDeque<(MsgId, bool)>>,
    /// How large messages travel (set from the engine's configuration).
    pub(crate) frag: Fragmenting,
    /// The own large message going out in fragments. In a new view it starts over: the
    /// old view's members dropped what they had of it, and joiners never had it.
    outgoing: Option<Outgoing>,
    /// Own fragments not yet stable (seq, bytes), and their bytes in all.
    frag_unstable: VecDeque<(u64, usize)>,
    frag_unstable_bytes: usize,
    /// Own large messages fragmented and not yet delivered here: delivered whole from the
    /// application's buffer, never copied.
    own_whole: VecDeque<(MsgId, Bytes)>,
    /// Per stream, the large message being reassembled (dropped with the view: a message
    /// cut short by a view change is sent again whole in the next). Empty until the first
    /// fragment: most groups never see one, and a process may be in 100,000 groups.
    assembling: Vec<Option<Assembly>>,
}

/// The per-member vectors of a group's state, kept from one view to the next: a view
/// change of thousands of groups need not allocate them all again.
#[derive(Default)]
struct PerMember {
    streams: Vec<Stream>,
    seq_acks: Vec<u64>,
    sequenced: Vec<u64>,
    acks: Vec<u64>,
    ack_dirty: Vec<bool>,
    dacks: Vec<u64>,
    shown: Vec<u64>,
}

impl PerMember {
    /// The vectors for `members`, every count at zero.
    fn reset(mut self, members: &[ProcessId]) -> Self {
        let n = members.len();
        self.streams.clear();
        self.streams.extend(members.iter().cloned().map(Stream::new));
        for v in [&mut self.seq_acks, &mut self.sequenced, &mut self.acks, &mut self.dacks, &mut self.shown] {
            v.clear();
            v.resize(n, 0);
        }
        self.ack_dirty.clear();
        self.ack_dirty.resize(n, false);
        self
    }
}

impl GroupState {
    pub(crate) fn new(name: GroupName, view: GroupView, me: &ProcessId) -> Self {
        Self::with_vectors(name, view, me, PerMember::default())
    }

    fn with_vectors(name: GroupName, view: GroupView, me: &ProcessId, vectors: PerMember) -> Self {
        let rank = view.members.iter().position(|p| p == me).expect("a member installs only views that contain it");
        let v = vectors.reset(&view.members);
        Self {
            name,
            streams: v.streams,
            buffered: 0,
            view,
            rank,
            epoch: 0,
            frozen: None,
            acks_held: false,
            order_base: 0,
            order: VecDeque::new(),
            delivered_total: 0,
            order_stable: 0,
            seq_pending: Vec::new(),
            seq_pending_first: 0,
            seq_acks: v.seq_acks,
            sequenced: v.sequenced,
            next_seq: 1,
            acks: v.acks,
            stable_sent: (0, 0, 0),
            ack_dirty: v.ack_dirty,
            queued: VecDeque::new(),
            flushes: Vec::new(),
            own_unstable: VecDeque::new(),
            own_unstable_bytes: 0,
            queued_bytes: 0,
            join: JoinState::Ready,
            checkpoints: BTreeMap::new(),
            cut_mode: false,
            hold: None,
            external: BTreeMap::new(),
            unchecked: None,
            across: false,
            dacks: v.dacks,
            gated: false,
            shown: v.shown,
            gated_decision: None,
            own_undelivered: VecDeque::new(),
            relayed_undelivered: VecDeque::new(),
            frag: Fragmenting { bytes: usize::MAX, window: usize::MAX, max: usize::MAX },
            outgoing: None,
            frag_unstable: VecDeque::new(),
            frag_unstable_bytes: 0,
            own_whole: VecDeque::new(),
            assembling: Vec::new(),
        }
    }

    /// Carries what outlives a view into the state for the next one, in place (a crash may
    /// move thousands of groups to their next view). Every field is named: one added later
    /// is reset or carried on purpose.
    pub(crate) fn succeed(&mut self, view: GroupView, me: &ProcessId) {
        let rank = view.members.iter().position(|p| p == me).expect("a member installs only views that contain it");
        let Self {
            // Carried on.
            name: _,
            queued,
            queued_bytes,
            flushes,
            join: _,
            checkpoints: _,
            hold: _,
            external: _,
            unchecked: _,
            across: _,
            gated: _,
            gated_decision: _,
            frag: _,
            // The next view's.
            view: current,
            rank: my_rank,
            streams,
            seq_acks,
            sequenced,
            acks,
            ack_dirty,
            dacks,
            shown,
            // Reset.
            buffered,
            epoch,
            frozen,
            acks_held,
            order_base,
            order,
            delivered_total,
            order_stable,
            seq_pending,
            seq_pending_first,
            next_seq,
            stable_sent,
            own_unstable,
            own_unstable_bytes,
            cut_mode,
            own_undelivered,
            relayed_undelivered,
            outgoing,
            frag_unstable,
            frag_unstable_bytes,
            own_whole,
            assembling,
        } = self;
        let v = PerMember {
            streams: std::mem::take(streams),
            seq_acks: std::mem::take(seq_acks),
            sequenced: std::mem::take(sequenced),
            acks: std::mem::take(acks),
            ack_dirty: std::mem::take(ack_dirty),
            dacks: std::mem::take(dacks),
            shown: std::mem::take(shown),
        }
        .reset(&view.members);
        (*streams, *seq_acks, *sequenced, *acks, *ack_dirty, *dacks, *shown) =
            (v.streams, v.seq_acks, v.sequenced, v.acks, v.ack_dirty, v.dacks, v.shown);
        *current = view;
        *my_rank = rank;
        if let Some(o) = outgoing.take() {
            // Cut short by the view change: sent again from its first byte.
            *queued_bytes += o.q.payload.len();
            queued.push_front(o.q);
        }
        // In the next view the old view's messages are settled by its cut.
        for f in flushes.iter_mut() {
            f.1 = None;
        }
        (*epoch, *frozen, *acks_held, *cut_mode) = (0, None, false, false);
        (*order_base, *delivered_total, *order_stable, *seq_pending_first) = (0, 0, 0, 0);
        (*next_seq, *stable_sent) = (1, (0, 0, 0));
        (*own_unstable_bytes, *frag_unstable_bytes, *buffered) = (0, 0, 0);
        *order = VecDeque::new();
        *seq_pending = Vec::new();
        *own_unstable = VecDeque::new();
        *own_undelivered = VecDeque::new();
        *relayed_undelivered = VecDeque::new();
        *frag_unstable = VecDeque::new();
        *own_whole = VecDeque::new();
        *assembling = Vec::new();
    }

    /// Whether a crash can change this group's view here with nothing but the view: it is
    /// quiet (see [`GroupState::quiet`]), nothing is queued, transferred, held behind a
    /// gbcast or behind its gate, and no relayed message waits to be acknowledged to its
    /// origin (a cut acknowledges them all). Its cut then delivers and sends nothing.
    pub(crate) fn changes_quietly(&self) -> bool {
        self.quiet()
            && self.relayed_undelivered.is_empty()
            && self.queued.is_empty()
            && !self.transferring()
            && self.hold.is_none()
            && !self.gated
            && self.unchecked.is_none()
    }

    /// Whether a state transfer of this group is under way here: checkpoints kept for
    /// joiners, or this member waiting for its state.
    pub(crate) fn transferring(&self) -> bool {
        !self.checkpoints.is_empty() || matches!(self.join, JoinState::Waiting { .. })
    }

    /// A joiner whose state is coming (its provider answered): it holds back its
    /// acknowledgements while the messages held for it pass `Config::joiner_hold_bytes`, so
    /// the senders' flow control waits for it (see the engine's `settle`).
    pub(crate) fn state_coming(&self) -> bool {
        matches!(self.join, JoinState::Waiting { total, .. } if total > 0)
    }

    fn is_sequencer(&self) -> bool {
        self.rank == 0
    }

    fn known_end(&self) -> u64 {
        self.order_base + self.order.len() as u64
    }

    pub(crate) fn rank_of(&self, p: &ProcessId) -> Option<usize> {
        self.view.members.iter().position(|m| m == p)
    }

    fn others(&self) -> impl Iterator<Item = &ProcessId> + '_ {
        let me = self.rank;
        self.view.members.iter().enumerate().filter(move |(i, _)| *i != me).map(|(_, p)| p)
    }

    fn broadcast(&self, msg: Msg, out: &mut Out) {
        for p in self.others() {
            out.sends.push((p.clone(), msg.clone()));
        }
    }

    /// The application sends (or a queued send is released).
    pub(crate) fn send(&mut self, q: Queued, out: &mut Out) {
        if self.frozen.is_some() || self.hold.is_some() || self.outgoing.is_some() {
            self.queued_bytes += q.payload.len();
            self.queued.push_back(q);
            return;
        }
        if q.id.sender != self.view.members[self.rank] && self.rank_of(&q.id.sender).is_some() {
            // The origin became a member: it sends this itself now, in its own stream,
            // so that its later messages stay behind it (G5).
            return;
        }
        if q.order == Order::Gbcast {
            // Gbcasts go through the membership leader; this stream waits until it is
            // delivered so that later sends stay behind it.
            self.hold = Some(q.id.clone());
            out.gbcasts.push(DataMsg {
                id: q.id,
                seq: 0,
                order: q.order,
                vt: VectorTime::default(),
                query: q.query,
                relayed: false,
                frag: None,
                payload: q.payload,
            });
            return;
        }
        let relayed = q.relayed || q.id.sender != self.view.members[self.rank];
        if q.payload.len() > self.frag.bytes && !relayed {
            self.outgoing = Some(Outgoing { q, next: 0 });
            self.send_fragments(out);
            return;
        }
        self.push_own(q, None, out);
    }

    /// Sends the own large message's next fragments, as far as the window lets them; once
    /// its last went, the sends queued behind it.
    fn send_fragments(&mut self, out: &mut Out) {
        while self.frozen.is_none() && self.hold.is_none() && self.frag_unstable_bytes < self.frag.window {
            let Some(o) = &mut self.outgoing else { return };
            let total = o.q.payload.len();
            let (start, end) = (o.next, (o.next + self.frag.bytes).min(total));
            o.next = end;
            if start == 0 {
                self.own_whole.push_back((o.q.id.clone(), o.q.payload.clone()));
            }
            let part = Queued {
                id: o.q.id.clone(),
                order: o.q.order,
                query: o.q.query,
                relayed: false,
                payload: o.q.payload.slice(start..end),
            };
            if end == total {
                self.outgoing = None;
            }
            let seq = self.push_own(part, Some(Frag { offset: start as u64, total: total as u64 }), out);
            self.frag_unstable.push_back((seq, end - start));
            self.frag_unstable_bytes += end - start;
            if self.outgoing.is_none() {
                self.release_queued(out);
                return;
            }
        }
    }

    /// Puts a message into this member's stream and sends it to the others; returns its seq.
    fn push_own(&mut self, q: Queued, frag: Option<Frag>, out: &mut Out) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        let vt = if q.order.is_causal() {
            let mut vt: Vec<u64> = self.streams.iter().map(|s| s.delivered).collect();
            vt[self.rank] = seq;
            VectorTime::from(vt)
        } else {
            VectorTime::default()
        };
        let relayed = q.relayed || q.id.sender != self.view.members[self.rank];
        let msg =
            Arc::new(DataMsg { id: q.id, seq, order: q.order, vt, query: q.query, relayed, frag, payload: q.payload });
        if msg.id.sender == self.view.members[self.rank] {
            self.own_unstable.push_back((seq, msg.id.counter, msg.payload.len()));
            self.own_unstable_bytes += msg.payload.len();
            if self.across {
                self.own_undelivered.push_back((seq, msg.id.counter));
            }
        }
        // (The engine stamps `pepoch` as the message leaves.)
        let wire =
            Msg::Data { group: self.name.clone(), view: self.view.id, epoch: self.epoch, pepoch: 0, msg: msg.clone() };
        self.broadcast(wire, out);
        let me = self.rank;
        self.on_data(me, msg);
        self.try_deliver(out);
        seq
    }

    /// Releases sends queued while frozen (after the large message under way, if any).
    pub(crate) fn release_queued(&mut self, out: &mut Out) {
        self.send_fragments(out);
        while self.frozen.is_none() && self.hold.is_none() && self.outgoing.is_none() {
            let Some(q) = self.queued.pop_front() else { break };
            self.queued_bytes -= q.payload.len();
            self.send(q, out);
        }
    }

    /// A multicast from the member at `rank` (current view and epoch).
    pub(crate) fn on_data(&mut self, rank: usize, msg: Arc<DataMsg>) {
        debug_assert!(rank < self.streams.len(), "a stream of this view");
        if !self.streams[rank].push(msg) {
            return;
        }
        self.buffered += 1;
        if self.frozen.is_none() {
            if rank != self.rank {
                self.ack_dirty[rank] = true;
            }
            self.sequence(rank);
        }
    }

    /// The sequencer orders the total and safe messages of stream `r` it holds and has not
    /// ordered yet (those that came while it was frozen wait until it is not).
    fn sequence(&mut self, r: usize) {
        if !self.is_sequencer() {
            return;
        }
        while self.sequenced[r] < self.streams[r].received {
            let seq = self.sequenced[r] + 1;
            self.sequenced[r] = seq;
            if self.streams[r].get(seq).is_some_and(|m| m.order.is_total()) {
                let entry = (r as u32, seq);
                if self.seq_pending.is_empty() {
                    self.seq_pending_first = self.known_end();
                }
                self.seq_pending.push(entry);
                self.order.push_back(entry);
            }
        }
    }

    /// A membership round ended without touching this group: it goes on where it was.
    pub(crate) fn unfreeze(&mut self, out: &mut Out) {
        self.frozen = None;
        for r in 0..self.streams.len() {
            self.sequence(r);
            if r != self.rank && self.streams[r].received > 0 {
                self.ack_dirty[r] = true;
            }
        }
        if self.rank != 0 {
            self.ack_dirty[0] = true;
        }
        self.release_queued(out);
        self.try_deliver(out);
    }

    /// Order tokens from the sequencer.
    pub(crate) fn on_order(&mut self, first: u64, entries: Vec<OrderEntry>) {
        let end = self.known_end();
        if first > end {
            return; // cannot happen on a FIFO link; ignore rather than corrupt the order
        }
        let skip = (end - first) as usize;
        let n = self.streams.len() as u32;
        for e in entries.into_iter().skip(skip) {
            if e.0 >= n {
                return;
            }
            self.order.push_back(e);
        }
        if self.frozen.is_none() && self.rank != 0 {
            self.ack_dirty[0] = true;
        }
    }

    pub(crate) fn on_ack(&mut self, rank: usize, received: u64, delivered: u64, order_len: u64) {
        self.acks[rank] = self.acks[rank].max(received.min(self.next_seq - 1));
        self.dacks[rank] = self.dacks[rank].max(delivered.min(self.next_seq - 1));
        self.seq_acks[rank] = self.seq_acks[rank].max(order_len.min(self.known_end()));
    }

    pub(crate) fn on_stable(&mut self, rank: usize, seq: u64, delivered: u64, order_len: u64) {
        let s = &mut self.streams[rank];
        s.stable = s.stable.max(seq.min(s.received));
        s.dstable = s.dstable.max(delivered.min(s.delivered));
        if rank == 0 {
            self.order_stable = self.order_stable.max(order_len);
        }
    }

    fn deliverable(&self, r: usize, msg: &DataMsg) -> bool {
        // Safe messages, and relayed ones (which may also travel another path after a view
        // change), are delivered only once they, their causal past and their place in the
        // total order are stable: then every survivor of a failure holds them and delivers
        // them in this view, and a relay excluded without knowing it cannot deliver in the
        // old view what the others deliver in the new one (G3, G9).
        let uniform = (msg.order == Order::Safe || msg.relayed) && !self.cut_mode;
        if uniform && (self.streams[r].stable < msg.seq || !self.past_stable()) {
            return false;
        }
        if msg.order.is_causal() {
            // Refused on arrival otherwise (`well_formed`); a cut carries only messages of
            // the view's own members.
            debug_assert_eq!(msg.vt.len(), self.streams.len(), "vector timestamp of {}", msg.id);
            for (j, s) in self.streams.iter().enumerate() {
                if j != r && msg.vt.get(j).is_some_and(|&v| s.delivered < v) {
                    return false;
                }
            }
        }
        if msg.order.is_total() {
            let pos = self.delivered_total;
            let Some(&(er, es)) = pos.checked_sub(self.order_base).and_then(|i| self.order.get(i as usize)) else {
                return false;
            };
            if er as usize != r || es != msg.seq {
                return false;
            }
            if uniform && self.order_stable <= pos {
                return false;
            }
        }
        true
    }

    /// Whether everything this member delivered in the view so far is stable. A uniform
    /// message waits for it: a survivor that lacked an earlier message (or one it depends
    /// on) could not deliver this one after a failure, as the cut drops what follows a
    /// lost message in its stream or its causal past (G3, G9).
    fn past_stable(&self) -> bool {
        self.streams.iter().all(|s| s.stable >= s.delivered)
    }

    /// Delivers whatever the rules allow.
    pub(crate) fn try_deliver(&mut self, out: &mut Out) {
        if self.frozen.is_some() && !self.cut_mode {
            return;
        }
        loop {
            let mut progress = false;
            for r in 0..self.streams.len() {
                loop {
                    let next = self.streams[r].delivered + 1;
                    let Some(msg) = self.streams[r].get(next) else {
                        break;
                    };
                    if !self.deliverable(r, msg) {
                        break;
                    }
                    let msg = msg.clone();
                    self.streams[r].delivered = next;
                    if !self.gated {
                        self.shown[r] = next;
                    }
                    if r != self.rank && self.across {
                        // Its owner learns what every member delivered (causal order
                        // across groups waits for that).
                        self.ack_dirty[r] = true;
                    }
                    if r == self.rank && msg.id.sender != self.view.members[r] {
                        // A non-member's message this member relayed: delivered here under
                        // the uniform rule, so every survivor delivers it (it is in every
                        // cut); only now may the origin forget it. Stability of the stream
                        // alone is not enough: a cut drops what follows a message whose
                        // causal past died with its sender (chaos seed 13989). Across
                        // groups, the origin's later ordered sends wait until every member
                        // delivered it: the acknowledgement waits for that too.
                        if self.across {
                            self.relayed_undelivered.push_back((next, msg.id.clone()));
                        } else {
                            out.forward_acks.push(msg.id.clone());
                        }
                    }
                    if msg.order.is_total() {
                        self.delivered_total += 1;
                    }
                    let msg = match msg.frag {
                        None => msg,
                        Some(f) => match self.assemble(r, &msg, f, out) {
                            Some(whole) => whole,
                            None => {
                                progress = true; // consumed: a part of a message
                                continue;
                            }
                        },
                    };
                    // A non-member's message may come twice: through a new relay, or from
                    // the origin itself once it joined. The first delivery counts. A joiner
                    // without its state yet decides when the state (and table) arrive.
                    if let Some(u) = &mut self.unchecked {
                        u.push_back((msg.id.clone(), true));
                    } else {
                        if self.external.get(&msg.id.sender).is_some_and(|&seen| msg.id.counter < seen) {
                            progress = true; // consumed, though not shown again
                            continue;
                        }
                        self.note_delivered(&msg.id);
                    }
                    out.delivered.push(Delivered { view: self.view.id, msg });
                    progress = true;
                }
            }
            if !progress {
                break;
            }
        }
        self.gc();
    }

    /// A fragment of stream `r` is delivered: the whole message once it was the last.
    fn assemble(&mut self, r: usize, part: &DataMsg, f: Frag, out: &mut Out) -> Option<Arc<DataMsg>> {
        let own = r == self.rank;
        if self.assembling.len() < self.streams.len() {
            self.assembling.resize_with(self.streams.len(), || None);
        }
        let slot = &mut self.assembling[r];
        if f.offset == 0 {
            let size = if own { 0 } else { usize::try_from(f.total).unwrap_or(usize::MAX).min(self.frag.max) };
            *slot = Some(Assembly { id: part.id.clone(), buf: Vec::with_capacity(size) });
        }
        // The own stream's fragments are slices of the message kept whole in `own_whole`.
        let fits = |a: &Assembly| a.id == part.id && (own || a.buf.len() as u64 == f.offset);
        let Some(a) = slot.as_mut().filter(|a| fits(a)) else {
            *slot = None;
            out.bad_fragments += 1;
            return None;
        };
        if !own {
            a.buf.extend_from_slice(&part.payload);
        }
        if f.offset + part.payload.len() as u64 != f.total {
            return None;
        }
        let a = slot.take().expect("just matched");
        let payload = if own {
            match self.own_whole.pop_front() {
                Some((id, whole)) if id == part.id => whole,
                _ => {
                    out.bad_fragments += 1;
                    return None;
                }
            }
        } else {
            Bytes::from(a.buf)
        };
        Some(Arc::new(DataMsg { frag: None, payload, ..part.clone() }))
    }

    fn gc(&mut self) {
        for s in &mut self.streams {
            self.buffered -= s.gc();
        }
        let upto = self.delivered_total.min(self.order_stable);
        while self.order_base < upto && !self.order.is_empty() {
            self.order.pop_front();
            self.order_base += 1;
        }
    }

    /// Sends owed acks, stability announcements and order tokens; completes flushes.
    pub(crate) fn housekeeping(&mut self, out: &mut Out) {
        if !self.seq_pending.is_empty() {
            let entries = std::mem::take(&mut self.seq_pending);
            let m = Msg::Order {
                group: self.name.clone(),
                view: self.view.id,
                epoch: self.epoch,
                first: self.seq_pending_first,
                entries,
            };
            self.broadcast(m, out);
        }
        if self.frozen.is_some() {
            return;
        }
        // Announcing stability may deliver (safe messages wait for it), which may move
        // the delivered prefix in turn: announce until nothing moves.
        while self.announce_stability(out) {}
        // Acknowledgements last: deliveries above owe some too. (A joiner holding back
        // its acknowledgements keeps them owed.)
        let order_len = self.known_end();
        for r in (0..self.ack_dirty.len()).filter(|_| !self.acks_held) {
            if std::mem::take(&mut self.ack_dirty[r]) {
                let m = Msg::Ack {
                    group: self.name.clone(),
                    view: self.view.id,
                    received: self.streams[r].received,
                    delivered: self.shown[r],
                    order_len,
                };
                out.sends.push((self.view.members[r].clone(), m));
            }
        }
        self.check_flushes(out);
    }

    /// Announces what of the own stream every member holds and (across groups) has
    /// delivered, and (the sequencer) what of the order every member holds, if any of it
    /// moved; then delivers what that allows. Returns whether it announced.
    fn announce_stability(&mut self, out: &mut Out) -> bool {
        let me = self.rank;
        let others = |v: &[u64]| (0..v.len()).filter(|&j| j != me).map(|j| v[j]).min();
        let own_stable = others(&self.acks).unwrap_or(self.next_seq - 1);
        let order_stable = if self.is_sequencer() { others(&self.seq_acks).unwrap_or(self.known_end()) } else { 0 };
        let own_delivered =
            if self.across { others(&self.dacks).map_or(self.shown[me], |d| d.min(self.shown[me])) } else { 0 };
        let (seq_sent, order_sent, delivered_sent) = self.stable_sent;
        if own_stable <= seq_sent && order_stable <= order_sent && own_delivered <= delivered_sent {
            return false;
        }
        self.stable_sent = (own_stable.max(seq_sent), order_stable.max(order_sent), own_delivered.max(delivered_sent));
        let m = Msg::Stable {
            group: self.name.clone(),
            view: self.view.id,
            seq: self.stable_sent.0,
            delivered: self.stable_sent.2,
            order_len: self.stable_sent.1,
        };
        self.broadcast(m, out);
        self.on_stable(me, self.stable_sent.0, self.stable_sent.2, self.stable_sent.1);
        let dstable = self.streams[me].dstable;
        while self.own_undelivered.front().is_some_and(|&(s, _)| s <= dstable) {
            self.own_undelivered.pop_front();
        }
        while self.relayed_undelivered.front().is_some_and(|(s, _)| *s <= dstable) {
            let (_, id) = self.relayed_undelivered.pop_front().expect("just seen");
            out.forward_acks.push(id);
        }
        while let Some(&(_, _, n)) = self.own_unstable.front().filter(|&&(s, _, _)| s <= own_stable) {
            self.own_unstable.pop_front();
            self.own_unstable_bytes -= n;
        }
        while let Some(&(_, n)) = self.frag_unstable.front().filter(|&&(s, _)| s <= own_stable) {
            self.frag_unstable.pop_front();
            self.frag_unstable_bytes -= n;
        }
        self.try_deliver(out);
        self.send_fragments(out);
        true
    }

    /// Own messages not yet stable, and sends queued behind a view change or a gbcast.
    pub(crate) fn unstable(&self) -> usize {
        self.own_unstable.len() + self.queued.len() + usize::from(self.outgoing.is_some())
    }

    /// The bytes of what [`GroupState::unstable`] counts (of a large message going out,
    /// the fragments not yet sent and those not yet stable).
    pub(crate) fn unstable_bytes(&self) -> usize {
        let outgoing = self.outgoing.as_ref().map_or(0, |o| o.q.payload.len() - o.next);
        self.own_unstable_bytes + self.queued_bytes + outgoing
    }

    /// Completes the flush calls whose messages are all stable.
    pub(crate) fn check_flushes(&mut self, out: &mut Out) {
        if self.flushes.is_empty() {
            return;
        }
        let lowest_pending = self
            .own_unstable
            .front()
            .map(|&(_, c, _)| c)
            .into_iter()
            .chain(self.queued.iter().map(|q| q.id.counter))
            .chain(self.outgoing.iter().map(|o| o.q.id.counter))
            .chain(self.hold.iter().map(|h| h.counter))
            .min();
        let before = self.flushes.len();
        let streams = &self.streams;
        let past_stable =
            |d: &Option<Vec<u64>>| d.as_ref().is_none_or(|d| streams.iter().zip(d).all(|(s, &x)| s.stable >= x));
        self.flushes.retain(|(c, d)| lowest_pending.is_some_and(|l| l <= *c) || !past_stable(d));
        out.flushed += before - self.flushes.len();
    }

    /// A `flush()` call: `last` is the counter of the caller's last message (`None`: it
    /// sent none, and the flush completes at once).
    pub(crate) fn flush(&mut self, last: Option<u64>, out: &mut Out) {
        if let Some(c) = last {
            let delivered = self.delivered_vector();
            self.flushes.push((c, Some(delivered)));
        }
        self.check_flushes(out);
        if last.is_none() {
            out.flushed += 1;
        }
    }

    /// Whether a multicast fits this view: a causal-class message carries one vector
    /// timestamp entry per member.
    pub(crate) fn well_formed(&self, msg: &DataMsg) -> bool {
        !msg.order.is_causal() || msg.vt.len() == self.streams.len()
    }

    /// The application's events of the group flow again: what was delivered meanwhile is
    /// shown now, and acknowledged as delivered. Returns whether a decision's deliveries
    /// were among them.
    pub(crate) fn open_gate(&mut self) -> bool {
        self.gated = false;
        for (r, s) in self.streams.iter().enumerate() {
            if self.shown[r] < s.delivered {
                self.shown[r] = s.delivered;
                if r != self.rank {
                    self.ack_dirty[r] = true;
                }
            }
        }
        self.gated_decision.take().is_some()
    }

    /// Whether some delivery is held back from the application (see `gated`).
    pub(crate) fn unshown(&self) -> bool {
        self.streams.iter().zip(&self.shown).any(|(s, &shown)| shown < s.delivered)
    }

    /// Whether every member has delivered at least `upto[j]` of each stream `j` (its
    /// owner said so; for the own stream, the members did).
    pub(crate) fn delivered_everywhere(&self, upto: &[u64]) -> bool {
        self.streams.iter().zip(upto).all(|(s, &u)| s.dstable >= u)
    }

    /// Whether this process's own sends to the group up to `counter` have left its queue
    /// and are delivered at every member (or were settled by a view change's cut).
    pub(crate) fn own_delivered_everywhere(&self, counter: u64) -> bool {
        let me = &self.view.members[self.rank];
        let mine_upto = |id: &MsgId| id.sender == *me && id.counter <= counter;
        !self.queued.iter().any(|q| mine_upto(&q.id))
            && !self.outgoing.as_ref().is_some_and(|o| mine_upto(&o.q.id))
            && !self.hold.as_ref().is_some_and(mine_upto)
            && self.own_undelivered.front().is_none_or(|&(_, c)| c > counter)
    }

    /// How many messages of each stream this member has delivered in the view.
    pub(crate) fn delivered_vector(&self) -> Vec<u64> {
        self.streams.iter().map(|s| s.delivered).collect()
    }

    /// The flush report for a membership round.
    pub(crate) fn report(&self) -> Report {
        Report {
            group: self.name.clone(),
            view: self.view.id,
            streams: self.streams.iter().map(|s| (s.owner.clone(), s.msgs.iter().cloned().collect())).collect(),
            delivered: self.streams.iter().map(|s| (s.owner.clone(), s.delivered)).collect(),
            order_base: self.order_base,
            order: self.order.iter().copied().collect(),
            delivered_total: self.delivered_total,
        }
    }

    /// Whether this member holds nothing another survivor could lack: every message it
    /// received is delivered here and stable (held by every member), and so is every
    /// order position it knows. When every survivor is quiet they all delivered the same
    /// messages, and the group's cut is [`GroupState::quiet_cut`] at each: a flush need
    /// not report it (see [`crate::wire::Decision::groups`]).
    pub(crate) fn quiet(&self) -> bool {
        debug_assert_eq!(self.buffered, self.streams.iter().map(|s| s.msgs.len()).sum::<usize>());
        self.order.is_empty() && self.buffered == 0
    }

    /// The cut that ends the epoch where it stands: what this member delivered, nothing
    /// more (what it received since it was frozen is dropped, as by any cut).
    pub(crate) fn quiet_cut(&self) -> Cut {
        Cut {
            streams: self.streams.iter().map(|s| (s.owner.clone(), s.delivered)).collect(),
            msgs: Vec::new(),
            order_base: self.delivered_total,
            order: Vec::new(),
        }
    }

    /// Delivers exactly the cut, then the gbcasts. Returns how many cut messages could not
    /// be delivered (always 0 unless the protocol is broken).
    pub(crate) fn apply_cut(&mut self, cut: &Cut, gbcasts: &[DataMsg], out: &mut Out) -> usize {
        debug_assert_eq!(cut.streams.len(), self.streams.len(), "a cut of this view");
        for (owner, hi) in &cut.streams {
            let Some(r) = self.rank_of(owner) else {
                continue;
            };
            let mut add: Vec<&Arc<DataMsg>> = cut
                .msgs
                .iter()
                .filter(|(o, m)| o == owner && m.seq > self.streams[r].received && m.seq <= *hi)
                .map(|(_, m)| m)
                .collect();
            add.sort_by_key(|m| m.seq);
            for m in add {
                self.buffered += usize::from(self.streams[r].push(m.clone()));
            }
            self.buffered -= self.streams[r].truncate(*hi);
        }
        if let Some(skip) = self.delivered_total.checked_sub(cut.order_base) {
            self.order = cut.order.iter().skip(skip as usize).copied().collect();
            self.order_base = self.delivered_total;
        }
        self.cut_mode = true;
        self.try_deliver(out);
        self.cut_mode = false;
        let (mut missing, mut beyond) = (0, 0);
        for (owner, hi) in &cut.streams {
            if let Some(r) = self.rank_of(owner) {
                missing += hi.saturating_sub(self.streams[r].delivered) as usize;
                beyond += self.streams[r].delivered.saturating_sub(*hi) as usize;
            }
        }
        for g in gbcasts {
            if self.hold.as_ref() == Some(&g.id) {
                self.hold = None;
            }
            if missing > 0 || beyond > 0 {
                // Only a process the decision excludes can lack part of the cut, or have
                // delivered past it (it did not report: what it delivered reached none of
                // the survivors): delivering the gbcast after other messages than the
                // survivors would break its place in the order (G8), so it never sees it.
                continue;
            }
            if let Some(u) = &mut self.unchecked {
                u.push_back((g.id.clone(), false));
            }
            out.delivered.push(Delivered { view: self.view.id, msg: Arc::new(g.clone()) });
        }
        // Everything of this epoch is now delivered everywhere that survives: own messages
        // count as stable for flush(), and as delivered for causal order across groups (a
        // receiver holds later messages until it applied this decision too).
        self.own_unstable.clear();
        self.own_unstable_bytes = 0;
        self.own_undelivered.clear();
        self.frag_unstable.clear();
        self.frag_unstable_bytes = 0;
        for s in &mut self.streams {
            s.dstable = s.dstable.max(s.delivered);
        }
        out.forward_acks.extend(self.relayed_undelivered.drain(..).map(|(_, id)| id));
        missing
    }

    /// The joiner's state arrived with the duplicate table: settles the deliveries made
    /// meanwhile. Returns, in order, whether each was a duplicate.
    pub(crate) fn settle_unchecked(&mut self, table: BTreeMap<ProcessId, u64>) -> Vec<bool> {
        self.external = table;
        let pending: Vec<(ViewId, usize)> =
            self.checkpoints.iter().filter_map(|(v, cp)| cp.unsettled.map(|n| (*v, n))).collect();
        let snapshot =
            |external: &BTreeMap<ProcessId, u64>, checkpoints: &mut BTreeMap<ViewId, Checkpoint>, at: usize| {
                for (v, n) in &pending {
                    if *n == at {
                        if let Some(cp) = checkpoints.get_mut(v) {
                            cp.engine_part = encode_table(external);
                            cp.unsettled = None;
                        }
                    }
                }
            };
        let unchecked = self.unchecked.take().unwrap_or_default();
        let total = unchecked.len();
        let mut dups = Vec::with_capacity(total);
        // A joiner may hold hundreds of thousands of ids, in long runs from one origin: the
        // origin's entry is looked up once per run and written back when the run ends.
        let mut run: Option<(ProcessId, Option<u64>)> = None;
        let write_back = |external: &mut BTreeMap<ProcessId, u64>, run: &mut Option<(ProcessId, Option<u64>)>| {
            if let Some((p, Some(seen))) = run.take() {
                external.insert(p, seen);
            }
        };
        for (at, (id, checked)) in unchecked.into_iter().enumerate() {
            if pending.iter().any(|(_, n)| *n == at) {
                write_back(&mut self.external, &mut run);
                snapshot(&self.external, &mut self.checkpoints, at);
            }
            if !checked {
                dups.push(false);
                continue;
            }
            if run.as_ref().is_none_or(|(p, _)| *p != id.sender) {
                write_back(&mut self.external, &mut run);
                let seen = self.external.get(&id.sender).copied();
                run = Some((id.sender.clone(), seen));
            }
            let seen = &mut run.as_mut().expect("just set").1;
            let dup = seen.is_some_and(|s| id.counter < s);
            if !dup {
                // As `note_delivered` does.
                *seen = Some(seen.unwrap_or(0).max(id.counter + 1));
            }
            dups.push(dup);
        }
        write_back(&mut self.external, &mut run);
        snapshot(&self.external, &mut self.checkpoints, total);
        dups
    }

    /// Records a delivery in the duplicate table (highest counter per origin).
    fn note_delivered(&mut self, id: &MsgId) {
        // Every origin is recorded: a member that leaves may find its earlier sends relayed
        // later by a relay that held them.
        let seen = self.external.entry(id.sender.clone()).or_default();
        *seen = (*seen).max(id.counter + 1);
    }

    /// After a gbcast-only round: the view goes on in a new epoch.
    pub(crate) fn next_epoch(&mut self, out: &mut Out) {
        self.epoch += 1;
        self.frozen = None;
        for s in &mut self.streams {
            s.stable = s.stable.max(s.delivered);
        }
        self.order_stable = self.order_stable.max(self.delivered_total);
        self.order.clear();
        self.order_base = self.delivered_total;
        if self.is_sequencer() {
            self.seq_pending.clear();
        }
        // Everything held is in the cut, hence ordered.
        self.sequenced = self.streams.iter().map(|s| s.received).collect();
        let me = self.rank;
        self.acks = vec![self.streams[me].delivered; self.streams.len()];
        self.seq_acks = vec![self.delivered_total; self.streams.len()];
        self.dacks = vec![self.streams[me].delivered; self.streams.len()];
        self.stable_sent = (self.streams[me].delivered, self.delivered_total, self.streams[me].delivered);
        self.gc();
        self.check_flushes(out);
        self.release_queued(out);
    }
}

/// The duplicate table as it travels at the head of a transferred state.
pub(crate) fn encode_table(external: &BTreeMap<ProcessId, u64>) -> Vec<u8> {
    let table: Vec<(&ProcessId, u64)> = external.iter().map(|(p, c)| (p, *c)).collect();
    postcard::to_allocvec(&table).expect("encoding into a Vec cannot fail")
}
