//! Time as the engine sees it: passed in, never read from a clock.

use std::ops::{Add, Sub};
use std::time::Duration;

/// A point in time: a duration since an epoch the driver chooses (the simulator's start,
/// or the runtime's start). The engine never reads a clock; every input carries `now`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default)]
pub struct Instant(Duration);

impl Instant {
    /// The epoch.
    pub const ZERO: Instant = Instant(Duration::ZERO);

    /// The instant `d` after the epoch.
    pub fn from_epoch(d: Duration) -> Self {
        Self(d)
    }

    /// The time since the epoch.
    pub fn since_epoch(self) -> Duration {
        self.0
    }

    /// The time from `earlier` to `self`, zero if `earlier` is later.
    pub fn saturating_since(self, earlier: Instant) -> Duration {
        self.0.saturating_sub(earlier.0)
    }
}

impl Add<Duration> for Instant {
    type Output = Instant;
    fn add(self, d: Duration) -> Instant {
        Instant(self.0 + d)
    }
}

impl Sub<Instant> for Instant {
    type Output = Duration;
    fn sub(self, other: Instant) -> Duration {
        self.saturating_since(other)
    }
}
