//! Is this process starved of CPU right now? A Redis command that times out
//! because our own runtime could not run the connection's task in time (the
//! machine saturated by PostgreSQL and the load) is not Redis being down, and
//! must not open the breaker: that would send every miss to the database
//! and make the overload worse. A task ticking every [`TICK`] measures how
//! late the runtime wakes it; a timeout while ticks run late is counted as
//! `busy` and left out of the breaker's count.
//!
//! The ticker only runs while Redis is used: after [`IDLE`] without a
//! command it parks until the next one ([`Busy::touch`]), so an idle server
//! is not woken 100 times a second per Redis client.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

const TICK: Duration = Duration::from_millis(10);
/// A tick this late means runnable tasks are waiting for a worker.
const LATE: Duration = Duration::from_millis(20);
/// How long one late tick keeps the process counted as busy.
const HOLD_MS: u64 = 1_000;
/// Without a command for this long, the ticker parks.
const IDLE: Duration = Duration::from_secs(2);

pub struct Busy {
    created: Instant,
    /// When a tick last ran late (ms since `created`, +1; 0 = never).
    late_at_ms: AtomicU64,
    /// A command ran since the ticker last looked.
    used: AtomicBool,
    /// The ticker is parked, waiting for `wake`.
    parked: AtomicBool,
    /// Shared with the ticker, which holds no strong reference to `Busy`
    /// while parked (dropping `Busy` wakes it to end).
    wake: Arc<Notify>,
}

impl Busy {
    /// Starts the ticking task on the current runtime; it ends with the
    /// returned handle.
    pub fn start() -> Arc<Self> {
        Self::start_idling_after(IDLE)
    }

    fn start_idling_after(idle: Duration) -> Arc<Self> {
        let busy = Arc::new(Self {
            created: Instant::now(),
            late_at_ms: AtomicU64::new(0),
            used: AtomicBool::new(false),
            parked: AtomicBool::new(false),
            wake: Arc::new(Notify::new()),
        });
        let (weak, wake) = (Arc::downgrade(&busy), Arc::clone(&busy.wake));
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(tick(weak, wake, idle));
        }
        busy
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.created.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// A command is about to run: keeps the ticker going, or wakes it. Two
    /// relaxed atomics on the hot path, no clock read.
    pub fn touch(&self) {
        self.used.store(true, Ordering::Relaxed);
        if self.parked.load(Ordering::Relaxed) && self.parked.swap(false, Ordering::AcqRel) {
            self.wake.notify_one();
        }
    }

    /// Marks the process busy now (the ticker, or a test).
    pub fn mark(&self) {
        self.late_at_ms.store(self.now_ms() + 1, Ordering::Release);
    }

    /// Whether a tick ran late within the last second.
    pub fn is_busy(&self) -> bool {
        match self.late_at_ms.load(Ordering::Acquire) {
            0 => false,
            at => self.now_ms().saturating_sub(at - 1) < HOLD_MS,
        }
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        // A parked ticker wakes, finds `Busy` gone and ends.
        self.wake.notify_one();
    }
}

async fn tick(busy: Weak<Busy>, wake: Arc<Notify>, idle: Duration) {
    let mut quiet = Duration::ZERO;
    loop {
        let asked = Instant::now();
        tokio::time::sleep(TICK).await;
        let Some(strong) = busy.upgrade() else { return };
        let took = asked.elapsed();
        if took >= TICK + LATE {
            strong.mark();
        }
        quiet = if strong.used.swap(false, Ordering::Relaxed) {
            Duration::ZERO
        } else {
            quiet + took
        };
        if quiet < idle {
            continue;
        }
        strong.parked.store(true, Ordering::Release);
        // A command between the swap above and this store did not see
        // `parked`: look again before sleeping.
        if strong.used.load(Ordering::Acquire) {
            strong.parked.store(false, Ordering::Release);
            continue;
        }
        drop(strong);
        wake.notified().await;
        quiet = Duration::ZERO;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn a_blocked_runtime_reads_as_busy_and_a_free_one_does_not() {
        let busy = Busy::start();
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert!(!busy.is_busy(), "an idle runtime is not busy");
        // Hog the only worker: the ticker wakes late.
        tokio::task::yield_now().await;
        std::thread::sleep(Duration::from_millis(80));
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert!(busy.is_busy(), "a starved runtime is busy");
    }

    #[tokio::test]
    async fn the_ticker_parks_when_redis_is_idle_and_wakes_on_the_next_command() {
        let busy = Busy::start_idling_after(Duration::from_millis(50));
        let parked = |busy: &Busy| busy.parked.load(Ordering::Acquire);
        let deadline = Instant::now() + Duration::from_secs(5);
        while !parked(&busy) {
            assert!(Instant::now() < deadline, "the ticker did not park");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        busy.touch();
        assert!(!parked(&busy), "a command wakes it");
        // Awake, it measures again: a late tick is seen.
        busy.touch();
        tokio::time::sleep(Duration::from_millis(15)).await;
        std::thread::sleep(Duration::from_millis(60));
        let deadline = Instant::now() + Duration::from_secs(5);
        while !busy.is_busy() {
            assert!(Instant::now() < deadline, "the woken ticker did not measure");
            busy.touch();
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}
