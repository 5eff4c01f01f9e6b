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
    /// Mean time between mass churns: a process joins or leaves hundreds of groups at once.
    pub mass_churn_every: Option<Duration>,
    /// Work costs virtual time (see [`Cost`]): a busy process reads its packets and runs
    /// its timers late, as a real one does.
    pub cost: Option<Cost>,
    /// Processes and groups, if not the default (5 and 3).
    pub shape: Option<(usize, usize)>,
    /// Mean time between application actions per process, if not the default (4 ms).
    pub action_every: Option<Duration>,
    /// Every fault of the profile is a crash: a process that is excluded or stops anyway
    /// was suspected for being slow (busy with joins, say), and the run fails.
    pub no_false_suspicions: bool,
    /// Large messages and states: the engines cut multicasts and transferred states into
    /// small pieces, and the workload sends messages of many fragments (their bytes
    /// checked at every delivery).
    pub fragments: Option<Fragments>,
    /// States written and read as streams: a provider writes its state in parts while the
    /// group goes on (`Engine::provide_state_part`, as fast as the joiner fetches), a joiner
    /// reads it in parts (`Engine::stream_state`), and one whose provider fails starts again
    /// from the beginning with the next; and a joiner holds back its acknowledgements once
    /// it holds more than a message or two for the group (`Config::joiner_hold_bytes`).
    pub streamed_state: bool,
    /// Every process starts with the same peer list (`Config::peer_list`), in a random
    /// order at random moments: no founder picked by hand. A cluster forms when a majority
    /// of the list agrees, needs that majority to go on, and is checked never to run beside
    /// another; one that loses it stops, and the peers form a new one.
    pub peer_list: bool,
    /// Mean time between total failures: every process crashes, and all restart (at random
    /// moments) with the same command.
    pub total_failure_every: Option<Duration>,
    /// Applications that read their events late and senders that block on flow control
    /// (see [`SlowReaders`]): the hosts' backlogs, paused reading, parked sends and the
    /// stall timeout all come into play.
    pub slow_readers: Option<SlowReaders>,
}

/// How slowly the applications of a profile read, and how small their hosts' queues are.
#[derive(Clone, Copy, Debug)]
pub struct SlowReaders {
    /// Batches a consumer holds before its host keeps the rest (and stops reading frames).
    pub queue: usize,
    /// Mean time between an application's reads (each takes up to `queue` batches of each
    /// of its groups).
    pub read_every: Duration,
    /// Messages a process may have outstanding per group before its sends wait.
    pub send_window: usize,
    /// How long a host lets its application take nothing before it stops the node.
    pub stall_timeout: Duration,
}

/// How the engines of a profile with large messages fragment them (`Config::fragment_bytes`,
/// `Config::fragment_window_bytes`) and chunk states (`Config::state_chunk_bytes`), scaled
/// down so that a message of a few hundred bytes is many fragments and the window fills, and
/// a state of a few KB many chunks (a provider that crashes in the middle of a transfer
/// leaves the joiner to another).
#[derive(Clone, Copy, Debug)]
pub struct Fragments {
    /// Fragment size.
    pub bytes: usize,
    /// Fragment bytes in flight per member and group.
    pub window: usize,
    /// Chunk of a transferred state.
    pub state_chunk: usize,
    /// How much of a state a joiner asks for at once (several chunks in flight).
    pub state_window: usize,
}

/// What work costs a simulated process in virtual time. While it works, what reaches it
/// waits and its timers (heartbeats, failure detection) are late; what it sends leaves when
/// the work that made it is done. So a process swamped by its inputs starves its failure
/// detection in simulation as it would for real.
#[derive(Clone, Copy, Debug)]
pub struct Cost {
    /// Each input handled: a packet, a timer, an application call.
    pub per_input: Duration,
    /// Each KiB of frames received or sent.
    pub per_kib: Duration,
    /// Each event handed to the application.
    pub per_event: Duration,
}

const US: fn(u64) -> Duration = Duration::from_micros;
const MS: fn(u64) -> Duration = Duration::from_millis;

impl Profile {
    /// Every profile's name.
    pub const NAMES: [&'static str; 17] = [
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
        "many-groups",
        "large",
        "streamed",
        "bootstrap",
        "backpressure",
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
            mass_churn_every: None,
            cost: None,
            shape: None,
            action_every: None,
            no_false_suspicions: false,
            fragments: None,
            streamed_state: false,
            peer_list: false,
            total_failure_every: None,
            slow_readers: None,
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
                partition_every: Some(MS(900)),
                pause_every: Some(MS(900)),
                churn_every: Some(MS(80)),
                ..base
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
            // Thousands of groups with overlapping members, processes joining and leaving
            // hundreds at once, crashes (each restart rejoins a thousand groups), and work
            // that costs time: a join storm must not make anyone suspect anyone.
            "many-groups" => Profile {
                name: "many-groups",
                latency: (US(50), US(500)),
                crash_every: Some(MS(900)),
                churn_every: Some(MS(100)),
                mass_churn_every: Some(MS(400)),
                cost: Some(Cost { per_input: US(2), per_kib: US(2), per_event: US(1) }),
                shape: Some((7, 2000)),
                // (Traffic is not what this profile is about; the checker's vector clocks
                // over thousands of groups cost per message.)
                action_every: Some(MS(40)),
                no_false_suspicions: true,
                ..base
            },
            // Messages of up to a dozen fragments and states of hundreds of chunks, with
            // crashes, partitions, pauses and churn cutting them short: every member
            // delivers each message whole or not at all, and a joiner whose provider
            // fails gets its whole state from another.
            "large" => Profile {
                name: "large",
                fragments: Some(Fragments { bytes: 64, window: 256, state_chunk: 48, state_window: 240 }),
                ..Profile::named("chaos")?
            },
            // The same with states written and read as streams.
            "streamed" => Profile { name: "streamed", streamed_state: true, ..Profile::named("large")? },
            // Clusters that start from a peer list, as deployed: processes started in a
            // random order, crashes and partitions that cost the cluster its majority of
            // the list (it stops; the peers form a new one), total failures and restarts.
            "bootstrap" => Profile {
                name: "bootstrap",
                peer_list: true,
                total_failure_every: Some(MS(1800)),
                ..Profile::named("chaos")?
            },
            // Applications that read late (a few batches at a time, every few milliseconds)
            // with small queues, and senders that block on a small window, among crashes,
            // partitions and churn: hosts keep what a reader has no room for (reading no
            // frames meanwhile), parked sends go in order, and nothing is lost or reordered.
            "backpressure" => Profile {
                name: "backpressure",
                slow_readers: Some(SlowReaders {
                    queue: 2,
                    read_every: MS(3),
                    send_window: 4,
                    stall_timeout: Duration::from_secs(5),
                }),
                ..Profile::named("chaos")?
            },
            _ => return None,
        })
    }
}
