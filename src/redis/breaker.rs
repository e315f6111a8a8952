//! Circuit breaker around Redis: after N consecutive failures every caller
//! skips Redis entirely (no per-request timeout tax) until the client's
//! background probe sees it answer again. How often it opened is exported as
//! `analytics_redis_breaker_opened_total` by the client, at the transition.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

#[derive(Debug)]
pub struct Breaker {
    open: AtomicBool,
    consecutive_failures: AtomicU32,
    threshold: u32,
}

/// What a recorded failure did to the breaker.
#[derive(Debug, PartialEq, Eq)]
pub enum Transition {
    None,
    /// This failure opened it: the caller starts the probe and logs once.
    Opened,
}

impl Breaker {
    pub fn new(threshold: u32) -> Self {
        Self {
            open: AtomicBool::new(false),
            consecutive_failures: AtomicU32::new(0),
            threshold: threshold.max(1),
        }
    }

    pub fn is_open(&self) -> bool {
        self.open.load(Ordering::Acquire)
    }

    pub fn record_success(&self) {
        self.consecutive_failures.store(0, Ordering::Relaxed);
    }

    pub fn record_failure(&self) -> Transition {
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
        let breaker = Breaker::new(3);
        assert_eq!(breaker.record_failure(), Transition::None);
        assert_eq!(breaker.record_failure(), Transition::None);
        assert_eq!(breaker.record_failure(), Transition::Opened);
        assert!(breaker.is_open());
        assert_eq!(breaker.record_failure(), Transition::None, "already open");
    }

    #[test]
    fn a_success_resets_the_failure_streak() {
        let breaker = Breaker::new(3);
        breaker.record_failure();
        breaker.record_failure();
        breaker.record_success();
        breaker.record_failure();
        assert!(!breaker.is_open());
    }

    #[test]
    fn close_reopens_only_after_a_new_streak() {
        let breaker = Breaker::new(2);
        breaker.record_failure();
        breaker.record_failure();
        breaker.close();
        assert!(!breaker.is_open());
        assert_eq!(breaker.record_failure(), Transition::None);
        assert_eq!(breaker.record_failure(), Transition::Opened);
    }
}
