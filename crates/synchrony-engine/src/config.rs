//! Engine configuration.

use crate::id::ProcessId;
use std::time::Duration;

/// How one engine behaves. Every field has a default that suits a LAN or loopback.
#[derive(Clone, Debug)]
pub struct Config {
    /// Contact processes to join the cluster through (tried in turn). Empty, or only this
    /// process itself, means: start a new cluster (unless `peer_list` is set).
    pub contacts: Vec<ProcessId>,
    /// Bootstrap from a peer list (this process is on it): `contacts` are the others whose
    /// names are known (`Engine::add_peer` adds more). Then no process founds a cluster
    /// alone: the first one forms once a majority of the list agree on its members (one
    /// round of Paxos among them), and a cluster needs a majority of the list (by weight:
    /// `min_commit_weight` is raised to it) to go on, so that two never run at once.
    /// Listed peers should weigh 1 and other processes 0.
    pub peer_list: Option<PeerList>,
    /// This process's weight in majority decisions (Isis: servers 1, clients 0).
    pub weight: u32,
    /// A view change also needs at least this much weight to accept it.
    pub min_commit_weight: u32,
    /// How often a heartbeat goes to each peer when nothing else does.
    pub heartbeat_interval: Duration,
    /// The least silence after which a peer is suspected. The detector adapts upward from
    /// it when heartbeats arrive irregularly, up to `failure_timeout_max`.
    pub failure_timeout: Duration,
    /// The most the adaptive failure timeout grows to.
    pub failure_timeout_max: Duration,
    /// First retransmission timeout of the reliable link layer (it backs off).
    pub retransmit_timeout: Duration,
    /// How long a joining process waits for an answer before trying the next contact.
    pub join_retry: Duration,
    /// Largest packet the engine builds (bytes, before authentication).
    pub packet_bytes_max: usize,
    /// Largest chunk of state sent in one state-transfer message.
    pub state_chunk_bytes: usize,
    /// How many bytes of a state a joiner asks for at once: the provider sends them in
    /// chunks one after another, and the joiner asks for the next window when half of
    /// this one has come, so that a transfer is not one round trip per chunk.
    pub state_window_bytes: usize,
    /// How many bytes of messages a joiner holds for a group while its state comes (they
    /// wait behind the state) before it holds back its acknowledgements: the senders'
    /// messages then stay unstable and their flow control waits for the joiner, instead
    /// of the joiner holding ever more for a large state.
    pub joiner_hold_bytes: usize,
    /// The largest payload a member may multicast (`SendError::TooLarge` above it).
    pub max_message_bytes: usize,
    /// A multicast larger than this goes in fragments of this size, each a message of its
    /// sender's stream, reassembled by every member; its order is its last fragment's. (A
    /// non-member's send, through a relay, and a gbcast cannot be larger.)
    pub fragment_bytes: usize,
    /// How many bytes of a large message's fragments a member has in flight in one group
    /// (sent, not yet held by every member): the rest waits, so a large message holds a
    /// bounded window of frames and flush reports, and other traffic interleaves.
    pub fragment_window_bytes: usize,
    /// Messages buffered for a future view or a future link sequence number, per peer.
    pub reorder_buffer_max: usize,
    /// Decisions kept to bring lagging members up to date.
    pub decision_log_max: usize,
    /// A shared secret: when set, every packet carries an HMAC-SHA256 tag and packets
    /// without a valid tag are dropped and counted.
    pub secret: Option<Vec<u8>>,
    /// Seed of the engine's random number generator (backoff jitter).
    pub rng_seed: u64,
    /// Keep causal order across groups (G6 as DESIGN words it), by the ISIS conservative
    /// rule: an ordered send to one group waits until this process's ordered past in other
    /// groups is delivered at their members. On by default; off, causal order holds inside
    /// each group only and a process that alternates groups never waits (the rule's cost
    /// is one round of acknowledgements when a process moves from one group to another).
    pub causal_across_groups: bool,
    /// The most groups this process is in or asking to join at once: a join over it is
    /// refused (`MembershipError::TooManyGroups`), never a crash or a stalled cluster.
    pub max_groups: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            contacts: Vec::new(),
            peer_list: None,
            weight: 1,
            min_commit_weight: 0,
            heartbeat_interval: Duration::from_millis(100),
            failure_timeout: Duration::from_millis(1000),
            failure_timeout_max: Duration::from_millis(1500),
            retransmit_timeout: Duration::from_millis(40),
            join_retry: Duration::from_millis(500),
            packet_bytes_max: 64 * 1024,
            state_chunk_bytes: 256 * 1024,
            state_window_bytes: 8 << 20,
            joiner_hold_bytes: 64 << 20,
            max_message_bytes: 1 << 30,
            fragment_bytes: 256 * 1024,
            fragment_window_bytes: 8 << 20,
            reorder_buffer_max: 4096,
            decision_log_max: 256,
            secret: None,
            rng_seed: 0,
            causal_across_groups: true,
            max_groups: 100_000,
        }
    }
}

impl Config {
    /// Sets the heartbeat interval and the failure timeout, and the timeouts that follow
    /// from them: the adaptive timeout's ceiling (one and a half times the failure
    /// timeout), the first retransmission timeout (half a heartbeat, at least 5 ms) and
    /// the join retry (half the failure timeout).
    pub fn with_timeouts(self, heartbeat: Duration, failure: Duration) -> Self {
        Self {
            heartbeat_interval: heartbeat,
            failure_timeout: failure,
            failure_timeout_max: failure + failure / 2,
            retransmit_timeout: (heartbeat / 2).max(Duration::from_millis(5)),
            join_retry: failure / 2,
            ..self
        }
    }

    /// Timeouts scaled for tests and simulation: 10 ms heartbeats, 100 ms suspicion.
    pub fn fast() -> Self {
        Self {
            heartbeat_interval: Duration::from_millis(10),
            failure_timeout: Duration::from_millis(100),
            failure_timeout_max: Duration::from_millis(200),
            retransmit_timeout: Duration::from_millis(8),
            join_retry: Duration::from_millis(60),
            ..Self::default()
        }
    }
}

/// A peer list, as the engine needs it (see [`Config::peer_list`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerList {
    /// How many processes the list names, this one included.
    pub size: usize,
    /// A digest of the list (the same on every process given the same list): a process
    /// whose list differs takes no part in this one's bootstrap, and says so.
    pub digest: u64,
}

impl PeerList {
    /// The list of these entries (addresses, say), in any order, repeats counted once.
    pub fn of<S: AsRef<str>>(entries: &[S]) -> Self {
        let mut sorted: Vec<&str> = entries.iter().map(AsRef::as_ref).collect();
        sorted.sort_unstable();
        sorted.dedup();
        let mut h = crate::Fnv1a::default();
        for e in &sorted {
            h.write(e.as_bytes());
            h.write(b"\n");
        }
        Self { size: sorted.len(), digest: h.finish() }
    }
}
