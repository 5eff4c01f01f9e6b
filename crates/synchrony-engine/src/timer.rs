//! The engine's timers, in one typed table (as quinn-proto keeps a connection's).
//!
//! Two kinds of deadline live here. [`Timer::Tick`] wakes the engine: the runtime sleeps
//! until [`TimerTable::next_wake`] (or a link's retransmission, which each link keeps with
//! its own state) and calls `handle_timeout`. The others are "not before" times that the
//! engine checks at each tick or round (the tick is finer than any of them), so they never
//! wake it by themselves.

use crate::time::Instant;

/// One of the engine's timers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Timer {
    /// Failure detection, heartbeats, join and state-fetch retries, relay patience: every
    /// half heartbeat interval.
    Tick,
    /// A joining process asks its next contact no sooner than this.
    JoinRetry,
    /// The leader starts a new membership round no sooner than this (after a refusal or a
    /// lost quorum, with random jitter, so that two would-be leaders do not keep outbidding
    /// each other).
    RoundBackoff,
}

impl Timer {
    const COUNT: usize = 3;

    fn index(self) -> usize {
        self as usize
    }

    /// Whether the timer wakes the engine when it expires.
    fn wakes(self) -> bool {
        matches!(self, Timer::Tick)
    }

    const ALL: [Timer; Timer::COUNT] = [Timer::Tick, Timer::JoinRetry, Timer::RoundBackoff];
}

/// Every timer's deadline, if set.
#[derive(Clone, Debug, Default)]
pub(crate) struct TimerTable {
    at: [Option<Instant>; Timer::COUNT],
}

impl TimerTable {
    /// A table with every timer set to `now`.
    pub(crate) fn all_at(now: Instant) -> Self {
        Self { at: [Some(now); Timer::COUNT] }
    }

    pub(crate) fn set(&mut self, timer: Timer, at: Instant) {
        self.at[timer.index()] = Some(at);
    }

    pub(crate) fn get(&self, timer: Timer) -> Option<Instant> {
        self.at[timer.index()]
    }

    /// Whether `timer` is set and its deadline has come.
    pub(crate) fn expired(&self, timer: Timer, now: Instant) -> bool {
        self.get(timer).is_some_and(|t| t <= now)
    }

    /// The earliest deadline of the timers that wake the engine.
    pub(crate) fn next_wake(&self) -> Option<Instant> {
        Timer::ALL.iter().filter(|t| t.wakes()).filter_map(|t| self.get(*t)).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn only_waking_timers_count_for_the_next_wake() {
        let t0 = Instant::ZERO;
        let mut t = TimerTable::all_at(t0 + Duration::from_millis(5));
        t.set(Timer::JoinRetry, t0);
        t.set(Timer::RoundBackoff, t0);
        assert_eq!(t.next_wake(), Some(t0 + Duration::from_millis(5)));
        assert!(t.expired(Timer::JoinRetry, t0) && !t.expired(Timer::Tick, t0));
    }
}
