//! Circuit breaker around a dependency (Redis, PostgreSQL): after N
//! consecutive failures within a window every caller skips it entirely (no
//! per-request timeout tax) until its owner's background probe sees it answer
//! again. Failures older than the window do not count, so a few scattered
//! errors over an hour never add up to an outage. The owner exports its
//! state and how often it opened, at the transition.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct Breaker {
    open: AtomicBool,
    consecutive_failures: AtomicU32,
    threshold: u32,
    /// Failures further apart than this start a new streak.
    window: Duration,
    /// When the current streak began (ms since `created`).
    streak_started_ms: AtomicU64,
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
            consecutive_failures: AtomicU32::new(0),
            threshold: threshold.max(1),
            window,
            streak_started_ms: AtomicU64::new(0),
            created: Instant::now(),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.created.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    pub fn is_open(&self) -> bool {
        self.open.load(Ordering::Acquire)
    }

    pub fn record_success(&self) {
        self.consecutive_failures.store(0, Ordering::Relaxed);
    }

    pub fn record_failure(&self) -> Transition {
        self.record_failure_at(self.now_ms())
    }

    fn record_failure_at(&self, now_ms: u64) -> Transition {
        let started = self.streak_started_ms.load(Ordering::Acquire);
        let window = u64::try_from(self.window.as_millis()).unwrap_or(u64::MAX);
        if self.consecutive_failures.load(Ordering::Acquire) == 0 || now_ms.saturating_sub(started) > window {
            // A new streak: older failures are outside the window.
            self.streak_started_ms.store(now_ms, Ordering::Release);
            self.consecutive_failures.store(0, Ordering::Release);
        }
        let failures = self.consecutive_failures.fetch_add(1, Ordering::AcqRel) + 1;
        // compare_exchange makes exactly one caller the one that opened it,
        // so the probe starts once and the warning is logged once.
        if failures >= self.threshold
            && self
                .open
                .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            return Transition::Opened;
        }
        Transition::None
    }

    /// Called by the probe when Redis answers again.
    pub fn close(&self) {
        self.consecutive_failures.store(0, Ordering::Relaxed);
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
    fn opens_after_threshold_consecutive_failures_exactly_once() {
        let breaker = Breaker::new(3, Duration::from_secs(10));
        assert_eq!(breaker.record_failure(), Transition::None);
        assert_eq!(breaker.record_failure(), Transition::None);
        assert_eq!(breaker.record_failure(), Transition::Opened);
        assert!(breaker.is_open());
        assert_eq!(breaker.record_failure(), Transition::None, "already open");
    }

    #[test]
    fn a_success_resets_the_failure_streak() {
        let breaker = Breaker::new(3, Duration::from_secs(10));
        breaker.record_failure();
        breaker.record_failure();
        breaker.record_success();
        breaker.record_failure();
        assert!(!breaker.is_open());
    }

    #[test]
    fn failures_further_apart_than_the_window_never_open_it() {
        let breaker = Breaker::new(3, Duration::from_secs(10));
        for minute in 0..10 {
            assert_eq!(breaker.record_failure_at(minute * 60_000), Transition::None);
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
    fn close_reopens_only_after_a_new_streak() {
        let breaker = Breaker::new(2, Duration::from_secs(10));
        breaker.record_failure();
        breaker.record_failure();
        breaker.close();
        assert!(!breaker.is_open());
        assert_eq!(breaker.record_failure(), Transition::None);
        assert_eq!(breaker.record_failure(), Transition::Opened);
    }
}
