//! Cache counters: process-local atomics for `/cache/stats`, mirrored as
//! Prometheus series for `/metrics`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;

/// Where a lookup was answered from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    L1,
    Redis,
    Miss,
    Bypass,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::L1 => "l1",
            Self::Redis => "redis",
            Self::Miss => "miss",
            Self::Bypass => "bypass",
        }
    }
}

#[derive(Debug, Default)]
pub struct CacheStats {
    hits_l1: AtomicU64,
    hits_redis: AtomicU64,
    misses: AtomicU64,
    bypasses: AtomicU64,
    sets: AtomicU64,
    deletes: AtomicU64,
    errors: AtomicU64,
    timeouts: AtomicU64,
    corrupt: AtomicU64,
    uncacheable: AtomicU64,
    db_queries: AtomicU64,
    stale_served: AtomicU64,
    lease_waits: AtomicU64,
    invalidations: AtomicU64,
    hit_micros: AtomicU64,
    set_micros: AtomicU64,
}

/// A point-in-time copy of the counters, as `/cache/stats` reports them.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct StatsSnapshot {
    pub hits: u64,
    pub hits_l1: u64,
    pub hits_redis: u64,
    pub misses: u64,
    pub bypasses: u64,
    pub sets: u64,
    pub deletes: u64,
    /// The cache's own Redis command failures (timeouts included); the rate
    /// limiter's and admin commands' are in `analytics_redis_errors_total`.
    pub errors: u64,
    pub timeouts: u64,
    /// Entries that failed to decode and were treated as misses.
    pub corrupt: u64,
    /// Results served but too large to cache.
    pub uncacheable: u64,
    /// Statements this instance sent to the database on behalf of the cache
    /// (single-flight makes this lower than `misses` under concurrency).
    pub db_queries: u64,
    /// Answers served past their TTL or after an invalidation, marked stale.
    pub stale_served: u64,
    /// Misses that waited for another instance's computation (lease).
    pub lease_waits: u64,
    /// Invalidations this instance applied (change capture, API, gaps).
    pub invalidations: u64,
    pub total_requests: u64,
    /// hits / (hits + misses); bypasses do not count either way.
    pub hit_rate: f64,
    pub average_hit_ms: f64,
    pub average_set_ms: f64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

fn micros(elapsed: Duration) -> u64 {
    u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX)
}

impl CacheStats {
    pub fn record_lookup(&self, outcome: Outcome, elapsed: Duration) {
        let counter = match outcome {
            Outcome::L1 => &self.hits_l1,
            Outcome::Redis => &self.hits_redis,
            Outcome::Miss => &self.misses,
            Outcome::Bypass => &self.bypasses,
        };
        bump(counter);
        if matches!(outcome, Outcome::L1 | Outcome::Redis) {
            self.hit_micros.fetch_add(micros(elapsed), Ordering::Relaxed);
        }
        lookup_counter(outcome).increment(1);
    }

    pub fn record_set(&self, elapsed: Duration) {
        bump(&self.sets);
        self.set_micros.fetch_add(micros(elapsed), Ordering::Relaxed);
        metrics::counter!("analytics_cache_sets_total").increment(1);
    }

    pub fn record_deletes(&self, count: u64) {
        self.deletes.fetch_add(count, Ordering::Relaxed);
        metrics::counter!("analytics_cache_deletes_total").increment(count);
    }

    pub fn record_redis_error(&self, timed_out: bool) {
        bump(&self.errors);
        let kind = if timed_out {
            bump(&self.timeouts);
            "timeout"
        } else {
            "error"
        };
        // The lookup that saw this failure is counted once, as the miss it
        // became; this counter says why.
        metrics::counter!("analytics_cache_redis_errors_total", "kind" => kind).increment(1);
    }

    pub fn record_corrupt(&self) {
        bump(&self.corrupt);
        metrics::counter!("analytics_cache_corrupt_entries_total").increment(1);
    }

    pub fn record_uncacheable(&self) {
        bump(&self.uncacheable);
        metrics::counter!("analytics_cache_uncacheable_total").increment(1);
    }

    pub fn record_db_query(&self) {
        bump(&self.db_queries);
    }

    pub fn record_stale(&self) {
        bump(&self.stale_served);
        metrics::counter!("analytics_cache_stale_served_total").increment(1);
    }

    pub fn record_lease_wait(&self) {
        bump(&self.lease_waits);
        metrics::counter!("analytics_cache_lease_waits_total").increment(1);
    }

    /// `source`: `trigger`, `api` or `gap`.
    pub fn record_invalidation(&self, source: &'static str) {
        bump(&self.invalidations);
        metrics::counter!("analytics_cache_invalidations_total", "source" => source).increment(1);
    }

    pub fn snapshot(&self) -> StatsSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let hits_l1 = get(&self.hits_l1);
        let hits_redis = get(&self.hits_redis);
        let hits = hits_l1 + hits_redis;
        let misses = get(&self.misses);
        let bypasses = get(&self.bypasses);
        let sets = get(&self.sets);
        let ratio = |num: f64, den: u64| if den == 0 { 0.0 } else { num / den as f64 };
        StatsSnapshot {
            hits,
            hits_l1,
            hits_redis,
            misses,
            bypasses,
            sets,
            deletes: get(&self.deletes),
            errors: get(&self.errors),
            timeouts: get(&self.timeouts),
            corrupt: get(&self.corrupt),
            uncacheable: get(&self.uncacheable),
            db_queries: get(&self.db_queries),
            stale_served: get(&self.stale_served),
            lease_waits: get(&self.lease_waits),
            invalidations: get(&self.invalidations),
            total_requests: hits + misses + bypasses,
            hit_rate: round4(ratio(hits as f64, hits + misses)),
            average_hit_ms: round4(ratio(get(&self.hit_micros) as f64 / 1e3, hits)),
            average_set_ms: round4(ratio(get(&self.set_micros) as f64 / 1e3, sets)),
        }
    }
}

fn round4(value: f64) -> f64 {
    (value * 1e4).round() / 1e4
}

/// `analytics_cache_requests_total{outcome}`, one handle per outcome made
/// once: every lookup counts, and building the key and searching the
/// registry each time showed in profiles of cache hits.
fn lookup_counter(outcome: Outcome) -> &'static metrics::Counter {
    static COUNTERS: std::sync::OnceLock<[metrics::Counter; 4]> = std::sync::OnceLock::new();
    let counters = COUNTERS.get_or_init(|| {
        [Outcome::L1, Outcome::Redis, Outcome::Miss, Outcome::Bypass]
            .map(|o| metrics::counter!("analytics_cache_requests_total", "outcome" => o.as_str()))
    });
    &counters[match outcome {
        Outcome::L1 => 0,
        Outcome::Redis => 1,
        Outcome::Miss => 2,
        Outcome::Bypass => 3,
    }]
}
