//! One `Config` for a node: its name and address, where to find the cluster, timeouts,
//! a data directory and a secret.

use std::path::PathBuf;
use std::time::Duration;

/// How a node runs. Build with [`Config::new`] and adjust the public fields. What the
/// runtime does (addresses, files, queues) is here; how the protocol behaves (timeouts,
/// the cluster secret, weights, buffer bounds) is in [`Config::engine`], set once there.
///
/// ```
/// use std::time::Duration;
/// let mut config = synchrony_runtime::Config::new("n1", "127.0.0.1:7001");
/// config.contacts.push("127.0.0.1:7000".into());
/// config.set_timeouts(Duration::from_millis(30), Duration::from_millis(300));
/// config.engine.secret = Some(b"cluster secret".to_vec());
/// assert_eq!(config.engine.failure_timeout, Duration::from_millis(300));
/// ```
#[derive(Clone, Debug)]
pub struct Config {
    /// The node's name, unique in the cluster (`p` in traces is `NAME#INCARNATION`).
    pub name: String,
    /// The address to listen on (`host:port`).
    pub listen: String,
    /// Addresses of members to join through. Empty, or only this node's own address,
    /// starts a new cluster; otherwise the node joins through whichever contact answers.
    /// (The engine's own `contacts` are the names found at these addresses: the runtime
    /// sets them.)
    pub contacts: Vec<String>,
    /// Bootstrap from a peer list: the addresses of the nodes that form the cluster, each
    /// as that node's `listen` gives it, the same list (in any order) on every node. A node
    /// on the list never founds a cluster alone: the first cluster forms once a majority
    /// of the list can reach each other (they agree on its members by a round of Paxos),
    /// later nodes join it, and a cluster that loses the majority of the list stops (so
    /// that two never run at once) and forms again when a majority is back. Such a node
    /// waits to be a member without `join_timeout`, and rejoins after it stops (as with
    /// `rejoin`). A node not on the list joins through the listed ones, with weight 0.
    pub peers: Vec<String>,
    /// Where the node keeps what must outlive it (its incarnation counter). `None` keeps
    /// nothing, and the incarnation is taken from the clock.
    pub data_dir: Option<PathBuf>,
    /// Writes a TRACE.md trace of this node's events to this file, one line per event as
    /// it happens.
    pub trace: Option<PathBuf>,
    /// Serve Prometheus metrics over HTTP at this address (one node per process).
    pub metrics: Option<std::net::SocketAddr>,
    /// The incarnation to use (normally left `None`: see `data_dir`).
    pub incarnation: Option<u64>,
    /// How long [`crate::Runtime::start`] waits to become a member of the cluster.
    pub join_timeout: Duration,
    /// After this node finds itself excluded (e.g. it was paused), rejoin as a new
    /// incarnation, with the same groups.
    pub rejoin: bool,
    /// Flow control: messages a node may have outstanding per group (sent and not yet held
    /// by every member); further sends wait for room.
    pub send_window: usize,
    /// Flow control by size: bytes a node may have outstanding per group (as
    /// `send_window`, and counting a large message whole until every member holds it);
    /// a send that would go past it waits, unless nothing is outstanding (a message larger
    /// than the window goes alone).
    pub send_window_bytes: usize,
    /// Frames queued for one peer before more are dropped (the engine retransmits).
    pub peer_queue_frames: usize,
    /// The application's state for joiners is the set of message ids it delivered in the
    /// group, one per line (as `synchrony node` and `synchrony load` keep it): the trace's
    /// `state_sent` and `state` events say so (`"content":"delivered"`), and the checker
    /// recomputes each joiner's state from the provider's deliveries (G11). Off, the state
    /// is the application's own, and the checker checks its transfer only.
    pub trace_states_as_delivered_sets: bool,
    /// How long the application may leave a group's events untaken (its queue full).
    /// Meanwhile this node stops reading from the network (so senders slow down to its
    /// pace) but keeps its heartbeats, so that a busy application is not taken for a failed
    /// process. Past this, the node stops (`PartitionReason::Stalled`) and the others go on
    /// without it.
    pub app_stall_timeout: Duration,
    /// The protocol's settings: timeouts (see [`Config::set_timeouts`]), the cluster
    /// secret (when set, every frame carries an HMAC-SHA256 tag and a peer without the
    /// secret can neither connect nor inject anything), weights, buffer bounds, packet
    /// size. Its `contacts` and `rng_seed` are the runtime's to set, per incarnation.
    pub engine: synchrony_engine::Config,
}

/// A setting [`Config::validate`] refused: which, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("config {field}: {why}")]
pub struct ConfigError {
    /// The field, as written in code (`engine.failure_timeout`).
    pub field: &'static str,
    /// What is wrong with it.
    pub why: String,
}

impl Config {
    /// A node called `name` listening on `listen`, with defaults for everything else:
    /// a new cluster, no secret, 100 ms heartbeats, 1 s failure timeout.
    pub fn new(name: impl Into<String>, listen: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            listen: listen.into(),
            contacts: Vec::new(),
            peers: Vec::new(),
            data_dir: None,
            trace: None,
            metrics: None,
            incarnation: None,
            join_timeout: Duration::from_secs(30),
            rejoin: false,
            send_window: 2048,
            send_window_bytes: 64 << 20,
            peer_queue_frames: 8192,
            app_stall_timeout: Duration::from_secs(10),
            trace_states_as_delivered_sets: false,
            engine: synchrony_engine::Config::default()
                .with_timeouts(Duration::from_millis(100), Duration::from_secs(1)),
        }
    }

    /// How often heartbeats go out when nothing else does, and the least silence after
    /// which a peer is suspected (it adapts upward by half); the engine's other timeouts
    /// follow from them (see `synchrony_engine::Config::with_timeouts`).
    pub fn set_timeouts(&mut self, heartbeat: Duration, failure: Duration) {
        self.engine = std::mem::take(&mut self.engine).with_timeouts(heartbeat, failure);
    }

    /// Checks the settings that would make a node misbehave rather than fail: zero or
    /// inverted timeouts, empty windows and buffers, a name that cannot be a process id.
    /// [`crate::Runtime::start`] calls it.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |field: &'static str, why: String| Err(ConfigError { field, why });
        let e = &self.engine;
        if self.name.is_empty() || self.name.contains('#') || self.name.chars().any(char::is_whitespace) {
            return bad("name", format!("{:?} must be non-empty, without '#' or spaces", self.name));
        }
        if self.listen.is_empty() {
            return bad("listen", "an address to listen on is needed (host:port; port 0 picks one)".into());
        }
        for (field, d) in [
            ("engine.heartbeat_interval", e.heartbeat_interval),
            ("engine.failure_timeout", e.failure_timeout),
            ("engine.retransmit_timeout", e.retransmit_timeout),
            ("engine.join_retry", e.join_retry),
            ("join_timeout", self.join_timeout),
            ("app_stall_timeout", self.app_stall_timeout),
        ] {
            if d.is_zero() {
                return bad(field, "must be more than zero".into());
            }
        }
        if e.failure_timeout <= e.heartbeat_interval {
            return bad(
                "engine.failure_timeout",
                format!(
                    "{:?} must be longer than the heartbeat interval ({:?}), or every peer is suspected at once",
                    e.failure_timeout, e.heartbeat_interval
                ),
            );
        }
        if e.failure_timeout_max < e.failure_timeout {
            return bad(
                "engine.failure_timeout_max",
                format!("{:?} is below the failure timeout {:?}", e.failure_timeout_max, e.failure_timeout),
            );
        }
        for (field, n) in [
            ("send_window", self.send_window),
            ("send_window_bytes", self.send_window_bytes),
            ("engine.fragment_bytes", e.fragment_bytes),
            ("peer_queue_frames", self.peer_queue_frames),
            ("engine.state_chunk_bytes", e.state_chunk_bytes),
            ("engine.reorder_buffer_max", e.reorder_buffer_max),
            ("engine.decision_log_max", e.decision_log_max),
            ("engine.max_groups", e.max_groups),
        ] {
            if n == 0 {
                return bad(field, "must be at least 1".into());
            }
        }
        if e.packet_bytes_max < 1024 {
            return bad(
                "engine.packet_bytes_max",
                format!("{} bytes is too small (at least 1024)", e.packet_bytes_max),
            );
        }
        // A fragment, a chunk of state and a gbcast each travel in one stream frame.
        let frame = crate::net::MAX_FRAME / 2;
        for (field, n) in
            [("engine.fragment_bytes", e.fragment_bytes), ("engine.state_chunk_bytes", e.state_chunk_bytes)]
        {
            if n > frame {
                return bad(field, format!("{n} bytes is more than a frame carries (at most {frame})"));
            }
        }
        if e.secret.as_ref().is_some_and(|s| s.is_empty()) {
            return bad("engine.secret", "an empty secret authenticates nothing: use None or a real secret".into());
        }
        Ok(())
    }

    /// The engine configuration of an incarnation: the contacts it found and its seed;
    /// with a peer list, the list (if this node, listening at `listen`, is on it) or
    /// weight 0 (if not).
    pub(crate) fn engine_config(
        &self,
        contacts: Vec<synchrony_engine::ProcessId>,
        seed: u64,
        listed: bool,
    ) -> synchrony_engine::Config {
        let mut c = synchrony_engine::Config { contacts, rng_seed: seed, ..self.engine.clone() };
        if listed {
            c.peer_list = Some(synchrony_engine::PeerList::of(&self.peers));
        } else if !self.peers.is_empty() {
            c.weight = 0;
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_valid_and_nonsense_is_refused_by_name() {
        assert_eq!(Config::new("n1", "127.0.0.1:0").validate(), Ok(()));
        let refused = |f: fn(&mut Config)| {
            let mut c = Config::new("n1", "127.0.0.1:0");
            f(&mut c);
            c.validate().expect_err("refused").field
        };
        assert_eq!(refused(|c| c.name = "a#1".into()), "name");
        assert_eq!(refused(|c| c.set_timeouts(Duration::from_millis(100), Duration::ZERO)), "engine.failure_timeout");
        assert_eq!(
            refused(|c| c.set_timeouts(Duration::from_millis(500), Duration::from_millis(200))),
            "engine.failure_timeout"
        );
        assert_eq!(refused(|c| c.send_window = 0), "send_window");
        assert_eq!(refused(|c| c.engine.secret = Some(Vec::new())), "engine.secret");
        let msg = {
            let mut c = Config::new("n1", "127.0.0.1:0");
            c.engine.packet_bytes_max = 10;
            c.validate().expect_err("refused").to_string()
        };
        assert!(msg.contains("engine.packet_bytes_max") && msg.contains("10 bytes"), "{msg}");
    }
}
