//! Circuit breaker around a dependency (Redis, PostgreSQL). It opens when,
//! within one window, at least `threshold` calls failed and they were at
//! least half of all calls, or when `threshold` calls in a row failed with
//! no success between (however far apart: a dependency that never answers
//! is down, even for a lone client whose calls each wait a long timeout);
//! then every caller skips the dependency (no
//! per-request timeout tax) until its owner's background probe sees it answer
//! again. The rate matters as much as the count: a process starved of CPU
//! sees a few of its many commands time out, which must not read as the
//! dependency being down (that would send every miss to the database, making
//! the overload worse); a dependency that is down fails nearly every call.
//! The owner exports its state and how often it opened, at the transition.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct Breaker {
    open: AtomicBool,
    threshold: u32,
    /// Length of the counting window; counts start afresh after it.
    window: Duration,
    /// When the current window began (ms since `created`).
    window_started_ms: AtomicU64,
    failures: AtomicU32,
    calls: AtomicU32,
    /// Failures since the last success.
    in_a_row: AtomicU32,
    created: Instant,
}

/// What a recorded failure did to the breaker.
#[derive(Debug, PartialEq, Eq)]
pub enum Transition {
    None,
    /// This failure opened it: the caller starts the probe and logs once.
    Opened,
}

impl Breaker {
    pub fn new(threshold: u32, window: Duration) -> Self {
        Self {
            open: AtomicBool::new(false),
            threshold: threshold.max(1),
            window,
            window_started_ms: AtomicU64::new(0),
            failures: AtomicU32::new(0),
            calls: AtomicU32::new(0),
            in_a_row: AtomicU32::new(0),
            created: Instant::now(),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.created.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Starts a new window when the current one is over (one caller does).
    fn roll(&self, now_ms: u64) {
        let started = self.window_started_ms.load(Ordering::Acquire);
        let window = u64::try_from(self.window.as_millis()).unwrap_or(u64::MAX);
        if now_ms.saturating_sub(started) > window
            && self
                .window_started_ms
                .compare_exchange(started, now_ms, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            self.failures.store(0, Ordering::Release);
            self.calls.store(0, Ordering::Release);
        }
    }

    pub fn is_open(&self) -> bool {
        self.open.load(Ordering::Acquire)
    }

    pub fn record_success(&self) {
        self.record_success_at(self.now_ms());
    }

    fn record_success_at(&self, now_ms: u64) {
        self.roll(now_ms);
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.in_a_row.store(0, Ordering::Release);
    }

    pub fn record_failure(&self) -> Transition {
        self.record_failure_at(self.now_ms())
    }

    fn record_failure_at(&self, now_ms: u64) -> Transition {
        self.roll(now_ms);
        let calls = self.calls.fetch_add(1, Ordering::AcqRel) + 1;
        let failures = self.failures.fetch_add(1, Ordering::AcqRel) + 1;
        let in_a_row = self.in_a_row.fetch_add(1, Ordering::AcqRel) + 1;
        let by_rate = failures >= self.threshold && failures.saturating_mul(2) >= calls;
        // compare_exchange makes exactly one caller the one that opened it,
        // so the probe starts once and the warning is logged once.
        if (by_rate || in_a_row >= self.threshold)
            && self
                .open
                .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            return Transition::Opened;
        }
        Transition::None
    }

    /// Called by the probe when the dependency answers again.
    pub fn close(&self) {
        self.failures.store(0, Ordering::Release);
        self.in_a_row.store(0, Ordering::Release);
        self.calls.store(0, Ordering::Release);
        self.window_started_ms.store(self.now_ms(), Ordering::Release);
        self.open.store(false, Ordering::Release);
    }

    pub fn state_name(&self) -> &'static str {
        if self.is_open() {
            "open"
        } else {
            "closed"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_threshold_failures_exactly_once() {
        let breaker = Breaker::new(3, Duration::from_secs(10));
        assert_eq!(breaker.record_failure(), Transition::None);
        assert_eq!(breaker.record_failure(), Transition::None);
        assert_eq!(breaker.record_failure(), Transition::Opened);
        assert!(breaker.is_open());
        assert_eq!(breaker.record_failure(), Transition::None, "already open");
    }

    #[test]
    fn a_few_failures_among_many_successes_never_open_it() {
        // A process starved of CPU: some commands time out, most succeed.
        let breaker = Breaker::new(3, Duration::from_secs(1));
        for call in 0..1_000u64 {
            if call % 10 == 0 {
                assert_eq!(breaker.record_failure_at(call), Transition::None, "call {call}");
            } else {
                breaker.record_success_at(call);
            }
        }
        assert!(!breaker.is_open(), "10% failures is busy, not down");
        // The dependency goes down: nearly every call fails, and it opens.
        let opened = (1_000..1_200u64).any(|call| breaker.record_failure_at(call) == Transition::Opened);
        assert!(opened);
    }

    #[test]
    fn failures_further_apart_than_the_window_with_successes_between_never_open_it() {
        let breaker = Breaker::new(3, Duration::from_secs(10));
        for minute in 0..10 {
            assert_eq!(breaker.record_failure_at(minute * 60_000), Transition::None);
            breaker.record_success_at(minute * 60_000 + 1);
        }
        assert!(!breaker.is_open());
        assert_eq!(breaker.record_failure_at(600_001), Transition::None);
        assert_eq!(breaker.record_failure_at(600_002), Transition::None);
        assert_eq!(
            breaker.record_failure_at(600_003),
            Transition::Opened,
            "three within the window"
        );
    }

    #[test]
    fn failures_in_a_row_open_it_however_far_apart() {
        // A lone client against a database that refuses: each call waits
        // the pool's 2 s before it fails, more than the window.
        let breaker = Breaker::new(3, Duration::from_secs(1));
        breaker.record_success_at(0);
        assert_eq!(breaker.record_failure_at(2_000), Transition::None);
        assert_eq!(breaker.record_failure_at(4_000), Transition::None);
        assert_eq!(breaker.record_failure_at(6_000), Transition::Opened);
    }

    #[test]
    fn close_starts_counting_afresh() {
        let breaker = Breaker::new(2, Duration::from_secs(10));
        breaker.record_failure();
        breaker.record_failure();
        breaker.close();
        assert!(!breaker.is_open());
        assert_eq!(breaker.record_failure(), Transition::None);
        assert_eq!(breaker.record_failure(), Transition::Opened);
    }
}
