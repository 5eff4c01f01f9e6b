//! Reliable FIFO links between pairs of processes, and the per-peer failure detector.
//!
//! Every reliable message to a peer gets a link sequence number; packets carry a cumulative
//! acknowledgement; unacknowledged messages are retransmitted with backoff. On a stream
//! transport (TCP) losses only happen when a connection breaks, and then this layer repairs
//! them; under the simulator it repairs loss, duplication and reordering.

use crate::config::Config;
use crate::time::Instant;
use crate::wire::Msg;
use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

/// One peer's link state.
#[derive(Debug)]
pub(crate) struct Link {
    /// Link seq of `unacked[0]`.
    pub(crate) acked: u64,
    /// Messages not yet acknowledged by the peer.
    pub(crate) unacked: VecDeque<Msg>,
    /// Messages with seq below this were sent at least once.
    pub(crate) sent_upto: u64,
    /// Current retransmission timeout.
    rto: Duration,
    /// When to retransmit.
    pub(crate) retransmit_at: Option<Instant>,
    /// Next seq expected from the peer.
    pub(crate) recv_next: u64,
    /// Messages that arrived ahead of a gap.
    ooo: BTreeMap<u64, Msg>,
    /// An acknowledgement is owed.
    pub(crate) ack_dirty: bool,
    /// Last time anything was heard from the peer.
    pub(crate) last_heard: Option<Instant>,
    /// Last time anything was sent to it.
    pub(crate) last_sent: Option<Instant>,
    /// Mean and mean deviation of heartbeat inter-arrival times (for the adaptive timeout).
    mean: Duration,
    dev: Duration,
}

impl Link {
    pub(crate) fn new(config: &Config) -> Self {
        Self {
            acked: 0,
            unacked: VecDeque::new(),
            sent_upto: 0,
            rto: config.retransmit_timeout,
            retransmit_at: None,
            recv_next: 0,
            ooo: BTreeMap::new(),
            ack_dirty: false,
            last_heard: None,
            last_sent: None,
            mean: config.heartbeat_interval,
            dev: Duration::ZERO,
        }
    }

    /// Next seq to assign.
    pub(crate) fn next_seq(&self) -> u64 {
        self.acked + self.unacked.len() as u64
    }

    pub(crate) fn push(&mut self, msg: Msg) {
        self.unacked.push_back(msg);
    }

    /// Whether there is anything new to send.
    pub(crate) fn has_unsent(&self) -> bool {
        self.sent_upto < self.next_seq()
    }

    /// Processes the peer's cumulative ack.
    pub(crate) fn on_ack(&mut self, now: Instant, ack: u64, config: &Config) {
        if ack > self.acked && ack <= self.next_seq() {
            let n = (ack - self.acked) as usize;
            self.unacked.drain(..n);
            self.acked = ack;
            self.sent_upto = self.sent_upto.max(ack);
            self.rto = config.retransmit_timeout;
            self.retransmit_at = if self.unacked.is_empty() { None } else { Some(now + self.rto) };
        }
    }

    /// Records that something was heard, updating the inter-arrival estimate.
    pub(crate) fn heard(&mut self, now: Instant) {
        if let Some(last) = self.last_heard {
            let gap = now - last;
            // Jacobson's estimator, as TCP uses for its retransmission timeout.
            let err = gap.abs_diff(self.mean);
            self.dev = (self.dev * 3 + err) / 4;
            self.mean = (self.mean * 7 + gap) / 8;
        }
        self.last_heard = Some(now);
    }

    /// The transport heard the peer at `at` (not the inter-arrival estimate's business:
    /// keepalives come at the transport's pace).
    pub(crate) fn heard_by_transport(&mut self, at: Instant) {
        if self.last_heard.is_none_or(|h| at > h) {
            self.last_heard = Some(at);
        }
    }

    /// How long the peer has been silent (counting from now if it was never heard).
    pub(crate) fn silent_for(&mut self, now: Instant) -> Duration {
        now - *self.last_heard.get_or_insert(now)
    }

    /// Its silence counts from now at the latest (a new member: silence before it joined
    /// is no evidence).
    pub(crate) fn hear_from_now_on(&mut self, now: Instant) {
        self.last_heard.get_or_insert(now);
    }

    /// The peer just became a member: its silence counts from now. What was heard of it
    /// before (a joiner knocking at this process, perhaps long ago, and then waiting for a
    /// leader) says nothing of its silence as a member, which it owes nobody until it
    /// learns it joined.
    pub(crate) fn became_member(&mut self, now: Instant) {
        self.last_heard = Some(self.last_heard.map_or(now, |h| h.max(now)));
    }

    /// This process did not listen for `paused`: the peer's silence meanwhile does not
    /// count.
    pub(crate) fn excuse_silence(&mut self, paused: Duration, now: Instant) {
        if let Some(h) = &mut self.last_heard {
            *h = (*h + paused).min(now);
        }
    }

    /// The adaptive failure timeout for this peer.
    pub(crate) fn failure_timeout(&self, config: &Config) -> Duration {
        (self.mean * 3 + self.dev * 4).clamp(config.failure_timeout, config.failure_timeout_max)
    }

    /// Accepts reliable messages starting at `seq`; returns those now in order.
    pub(crate) fn receive(&mut self, seq: u64, msgs: Vec<Msg>, window: usize, out: &mut Vec<Msg>) {
        if msgs.is_empty() {
            return;
        }
        self.ack_dirty = true;
        for (i, m) in msgs.into_iter().enumerate() {
            let s = seq + i as u64;
            if s == self.recv_next {
                out.push(m);
                self.recv_next += 1;
                while let Some(m) = self.ooo.remove(&self.recv_next) {
                    out.push(m);
                    self.recv_next += 1;
                }
            } else if s > self.recv_next && s - self.recv_next < window as u64 {
                self.ooo.entry(s).or_insert(m);
            }
        }
    }

    /// Marks a retransmission due: everything unacked is sent again.
    pub(crate) fn on_retransmit(&mut self, now: Instant, config: &Config) {
        self.sent_upto = self.acked;
        self.rto = (self.rto * 2).min(config.failure_timeout);
        self.retransmit_at = Some(now + self.rto);
    }

    /// The next messages to put in a packet: from the first not yet sent, as many as fit in
    /// `max` bytes (at least one). Returns the link seq of the first, and the messages.
    pub(crate) fn next_batch(&self, max: usize) -> (u64, Vec<Msg>) {
        let start = self.sent_upto;
        let mut size = 0;
        let mut msgs = Vec::new();
        for m in self.unacked.iter().skip((start - self.acked) as usize) {
            let s = m.approx_size();
            if !msgs.is_empty() && size + s > max {
                break;
            }
            size += s;
            msgs.push(m.clone());
        }
        (start, msgs)
    }

    /// Counters for debug dumps: (acked, unacked, sent_upto, recv_next).
    pub(crate) fn debug_counts(&self) -> (u64, usize, u64, u64) {
        (self.acked, self.unacked.len(), self.sent_upto, self.recv_next)
    }

    /// Called after messages up to `upto` were put in packets.
    pub(crate) fn sent(&mut self, now: Instant, upto: u64) {
        self.sent_upto = upto;
        if self.retransmit_at.is_none() && !self.unacked.is_empty() {
            self.retransmit_at = Some(now + self.rto);
        }
        self.last_sent = Some(now);
    }
}
