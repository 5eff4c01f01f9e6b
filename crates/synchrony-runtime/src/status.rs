//! What `synchrony status` shows of a running node.

use serde::{Deserialize, Serialize};

/// One group this node is a member of.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct GroupStatus {
    /// The group's name.
    pub name: String,
    /// The current view's id.
    pub view: u64,
    /// The view's members, oldest first.
    pub members: Vec<String>,
    /// While this node, a joiner, receives the group's state: bytes received and the
    /// state's size (0 until the first chunk).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_transfer: Option<(u64, u64)>,
}

/// Counters of the transport.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct NetCounters {
    /// Connections established (both directions).
    pub connections_opened: u64,
    /// Connections that dropped.
    pub connections_lost: u64,
    /// Handshakes refused because authentication failed (wrong or missing secret).
    pub rejected_handshakes: u64,
    /// Connections closed because they sent bytes that are not a frame of this protocol.
    pub rejected_frames: u64,
    /// Frames dropped because a peer's queue was full (the engine retransmits them).
    pub frames_dropped: u64,
    /// Delivered messages a group's message verifier rejected.
    #[serde(default)]
    pub rejected_by_verifier: u64,
    /// Times this node stopped reading the network because an application was behind on
    /// its events (its group's queue full); it reads again once the application takes some.
    #[serde(default)]
    pub reading_paused: u64,
    /// Node events (joined, a send lost, partitioned) dropped because the application
    /// reads none and their queue was full (the driver never waits for it).
    #[serde(default)]
    pub node_events_dropped: u64,
}

/// A node's status.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct NodeStatus {
    /// `NAME#INCARNATION`.
    pub process: String,
    /// The address it listens on.
    pub listen: String,
    /// `member`, `joining`, `partitioned`, `left`, or `finding a contact`.
    pub status: String,
    /// The cluster's leader as this node sees it.
    pub leader: Option<String>,
    /// The cluster's members, oldest first.
    pub members: Vec<String>,
    /// The groups it is a member of.
    pub groups: Vec<GroupStatus>,
    /// Every group with members, as this node knows them (member or not).
    #[serde(default)]
    pub known: Vec<GroupStatus>,
    /// Peers it has a connection to.
    pub connections: Vec<String>,
    /// Multicasts sent per second (over the last second or so).
    pub sent_per_sec: f64,
    /// Multicasts delivered per second.
    pub delivered_per_sec: f64,
    /// The engine's counters, rejected frames included.
    pub engine: synchrony_engine::Stats,
    /// The transport's counters.
    pub net: NetCounters,
}

impl std::fmt::Display for NodeStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "{} at {}: {}", self.process, self.listen, self.status)?;
        writeln!(f, "  leader {}", self.leader.as_deref().unwrap_or("-"))?;
        writeln!(f, "  members {}", self.members.join(", "))?;
        for g in &self.groups {
            writeln!(f, "  group {} view {}: {}", g.name, g.view, g.members.join(", "))?;
            // The oldest member coordinates the group's view changes and sequences its
            // total order.
            if let Some(first) = g.members.first() {
                writeln!(f, "    coordinator and sequencer: {first}")?;
            }
            if let Some((got, total)) = g.state_transfer {
                writeln!(f, "    receiving the group's state: {got} of {total} bytes")?;
            }
        }
        writeln!(f, "  rates: {:.0} sent/s, {:.0} delivered/s", self.sent_per_sec, self.delivered_per_sec)?;
        let e = &self.engine;
        writeln!(
            f,
            "  engine: {} sent, {} delivered, {} views, {} frames in, {} retransmits",
            e.sent, e.delivered, e.views, e.frames_in, e.retransmits
        )?;
        writeln!(
            f,
            "  rejected: {} frames failed authentication, {} malformed frames, {} handshakes refused, {} connections closed for bad frames, {} messages by verifiers",
            e.rejected_auth, e.rejected_malformed, self.net.rejected_handshakes, self.net.rejected_frames, self.net.rejected_by_verifier
        )?;
        if self.net.reading_paused > 0 || self.net.node_events_dropped > 0 {
            writeln!(
                f,
                "  application behind: network reads paused {} times, {} node events dropped",
                self.net.reading_paused, self.net.node_events_dropped
            )?;
        }
        write!(f, "  connections: {}", self.connections.join(", "))
    }
}
