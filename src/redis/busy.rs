//! Is this process starved of CPU right now? A Redis command that times out
//! because our own runtime could not run the connection's task in time (the
//! machine saturated by PostgreSQL and the load) is not Redis being down, and
//! must not open the breaker: that would send every miss to the database
//! and make the overload worse. A task ticking every [`TICK`] measures how
//! late the runtime wakes it; a timeout while ticks run late is counted as
//! `busy` and left out of the breaker's count.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

const TICK: Duration = Duration::from_millis(10);
/// A tick this late means runnable tasks are waiting for a worker.
const LATE: Duration = Duration::from_millis(20);
/// How long one late tick keeps the process counted as busy.
const HOLD_MS: u64 = 1_000;

pub struct Busy {
    created: Instant,
    /// When a tick last ran late (ms since `created`, +1; 0 = never).
    late_at_ms: AtomicU64,
}

impl Busy {
    /// Starts the ticking task on the current runtime; it ends with the
    /// returned handle.
    pub fn start() -> Arc<Self> {
        let busy = Arc::new(Self {
            created: Instant::now(),
            late_at_ms: AtomicU64::new(0),
        });
        let weak = Arc::downgrade(&busy);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(tick(weak));
        }
        busy
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.created.elapsed().as_millis()).unwrap_or(u64::MAX)
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

async fn tick(busy: Weak<Busy>) {
    loop {
        let asked = Instant::now();
        tokio::time::sleep(TICK).await;
        let Some(busy) = busy.upgrade() else { return };
        if asked.elapsed() >= TICK + LATE {
            busy.mark();
        }
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
}
