//! Named fault profiles.

use std::time::Duration;

/// What goes wrong in a simulated run, and how often.
#[derive(Clone, Debug)]
pub struct Profile {
    /// The profile's name.
    pub name: &'static str,
    /// Probability a packet is lost.
    pub loss: f64,
    /// Probability a packet is duplicated.
    pub dup: f64,
    /// Packet latency range (a range reorders packets).
    pub latency: (Duration, Duration),
    /// Mean time between crashes (of any process).
    pub crash_every: Option<Duration>,
    /// Whether crashes pick the leader (the oldest member).
    pub crash_leader: bool,
    /// Mean time between partitions.
    pub partition_every: Option<Duration>,
    /// Mean time between pauses (a process stops past the failure timeout, then wakes).
    pub pause_every: Option<Duration>,
    /// Mean time between group joins and leaves.
    pub churn_every: Option<Duration>,
    /// Mean time between total failures of the app's first group: every member crashes,
    /// at once or one by one, and all restart a little later (the rest of the cluster
    /// keeps going; bringing the group back is the app's job).
    pub group_crash_every: Option<Duration>,
    /// Cork a process's engine when a packet reaches it and uncork it this much later, as
    /// the runtime corks around each batch of inputs: what it receives and sends in between
    /// shares frames.
    pub cork: Option<Duration>,
    /// Pauses stop the application, not the process: the process reads nothing (its
    /// packets wait) while its timers and heartbeats go on, as the runtime does while an
    /// application is behind on its events (`Engine::handle_listening`).
    pub deaf: bool,
    /// Some plain multicasts go several at a time through one `Engine::send_batch` call,
    /// as the runtime sends what its application queued.
    pub batches: bool,
    /// Mean time between clean leaves of the cluster (`Engine::leave_cluster`: a process
    /// shuts down, the others install views without it with its consent), each followed
    /// by a restart as a new incarnation.
    pub leave_every: Option<Duration>,
}

const US: fn(u64) -> Duration = Duration::from_micros;
const MS: fn(u64) -> Duration = Duration::from_millis;

impl Profile {
    /// Every profile's name.
    pub const NAMES: [&'static str; 12] = [
        "calm",
        "lossy",
        "churn",
        "partition",
        "leader-crash",
        "pause",
        "deaf",
        "chaos",
        "corked",
        "batched",
        "total-failure",
        "leaves",
    ];

    /// The profile called `name`.
    pub fn named(name: &str) -> Option<Profile> {
        let base = Profile {
            name: "calm",
            loss: 0.0,
            dup: 0.0,
            latency: (US(50), US(300)),
            crash_every: None,
            crash_leader: false,
            partition_every: None,
            pause_every: None,
            churn_every: None,
            group_crash_every: None,
            cork: None,
            deaf: false,
            batches: false,
            leave_every: None,
        };
        Some(match name {
            "calm" => base,
            "lossy" => Profile { name: "lossy", loss: 0.08, dup: 0.03, latency: (US(50), MS(3)), ..base },
            "churn" => Profile { name: "churn", churn_every: Some(MS(40)), crash_every: Some(MS(600)), ..base },
            "partition" => {
                Profile { name: "partition", partition_every: Some(MS(500)), latency: (US(50), MS(1)), ..base }
            }
            "leader-crash" => {
                Profile { name: "leader-crash", loss: 0.02, crash_every: Some(MS(300)), crash_leader: true, ..base }
            }
            "pause" => Profile { name: "pause", pause_every: Some(MS(500)), ..base },
            "deaf" => Profile { name: "deaf", loss: 0.02, pause_every: Some(MS(400)), deaf: true, ..base },
            "chaos" => Profile {
                name: "chaos",
                loss: 0.05,
                dup: 0.02,
                latency: (US(50), MS(2)),
                crash_every: Some(MS(500)),
                crash_leader: false,
                partition_every: Some(MS(900)),
                pause_every: Some(MS(900)),
                churn_every: Some(MS(80)),
                group_crash_every: None,
                cork: None,
                deaf: false,
                batches: false,
                leave_every: None,
            },
            "corked" => Profile { name: "corked", cork: Some(US(300)), ..Profile::named("chaos")? },
            "batched" => Profile { name: "batched", batches: true, ..Profile::named("corked")? },
            "total-failure" => Profile {
                name: "total-failure",
                loss: 0.01,
                latency: (US(50), MS(1)),
                group_crash_every: Some(MS(700)),
                ..base
            },
            // Processes shutting down cleanly (alone or while others crash and groups
            // churn) and coming back: scaling down and up, rolling restarts.
            "leaves" => Profile {
                name: "leaves",
                loss: 0.02,
                latency: (US(50), MS(1)),
                churn_every: Some(MS(80)),
                crash_every: Some(MS(1200)),
                leave_every: Some(MS(400)),
                ..base
            },
            _ => return None,
        })
    }
}
