//! The remote Redis of `[redis.remote]` (local + remote deployment): a
//! second Redis, farther away, that every entry is also written to (off the
//! request path, bounded) and that is read when the local one misses or is
//! down. Entries on the remote are judged against the remote's own version
//! counters (bumped there before the local ones, see `QueryCache::bump`).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use serde::Serialize;

use crate::clock::unix_now;
use crate::redis::{RedisCaller, RedisClient, RedisUnavailable};

/// The remote Redis and what this instance did with it.
pub struct Remote {
    pub client: Arc<RedisClient>,
    max_pending_writes: usize,
    pending: AtomicUsize,
    hits: AtomicU64,
    errors: AtomicU64,
    writes: AtomicU64,
    writes_dropped: AtomicU64,
    /// Entries created at or before this second (unix) are not trusted: a
    /// bump of the remote's counters failed then, so they may be stale.
    distrust_until: AtomicU64,
}

/// This instance's remote counters, for `/cache/stats`.
#[derive(Debug, Clone, Copy, Serialize, utoipa::ToSchema)]
pub struct RemoteCounters {
    /// Lookups the remote answered with a valid entry.
    pub hits: u64,
    /// Failed or timed-out remote commands.
    pub errors: u64,
    /// Entries written to the remote.
    pub writes: u64,
    /// Writes dropped because `max_pending_writes` were already waiting.
    pub writes_dropped: u64,
    /// Writes waiting for the remote's answer now.
    pub pending_writes: u64,
}

impl Remote {
    pub fn new(client: Arc<RedisClient>, max_pending_writes: usize) -> Self {
        Self {
            client,
            max_pending_writes: max_pending_writes.max(1),
            pending: AtomicUsize::new(0),
            hits: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            writes: AtomicU64::new(0),
            writes_dropped: AtomicU64::new(0),
            distrust_until: AtomicU64::new(0),
        }
    }

    pub fn record_hit(&self) {
        self.hits.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("analytics_cache_remote_hits_total").increment(1);
    }

    pub fn record_failure(&self, error: &RedisUnavailable) {
        if error.is_failure() {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A bump of the remote's counters failed: what it holds now may be stale.
    pub fn distrust_existing(&self) {
        self.distrust_until.fetch_max(unix_now(), Ordering::AcqRel);
    }

    /// Whether an entry created at `created_at` may be served from the remote.
    pub fn trusts(&self, created_at: u64) -> bool {
        created_at > self.distrust_until.load(Ordering::Acquire)
    }

    /// SET with EX on the remote in the background; dropped (and counted)
    /// when `max_pending_writes` are already waiting.
    pub fn spawn_write(self: &Arc<Self>, key: String, value: Vec<u8>, ttl_seconds: u64) {
        if self.client.breaker().is_open() {
            return;
        }
        if self.pending.fetch_add(1, Ordering::AcqRel) >= self.max_pending_writes {
            self.pending.fetch_sub(1, Ordering::AcqRel);
            self.writes_dropped.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("analytics_cache_remote_writes_dropped_total").increment(1);
            return;
        }
        let remote = Arc::clone(self);
        tokio::spawn(async move {
            match remote.client.set_ex(RedisCaller::Cache, &key, value, ttl_seconds).await {
                Ok(()) => {
                    remote.writes.fetch_add(1, Ordering::Relaxed);
                    metrics::counter!("analytics_cache_remote_writes_total").increment(1);
                }
                Err(error) => remote.record_failure(&error),
            }
            remote.pending.fetch_sub(1, Ordering::AcqRel);
        });
    }

    pub fn counters(&self) -> RemoteCounters {
        RemoteCounters {
            hits: self.hits.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            writes: self.writes.load(Ordering::Relaxed),
            writes_dropped: self.writes_dropped.load(Ordering::Relaxed),
            pending_writes: self.pending.load(Ordering::Relaxed) as u64,
        }
    }
}
