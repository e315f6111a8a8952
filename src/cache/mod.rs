//! Cache-aside in front of a computation (the database, for queries): L1
//! (moka, in process) and L2 (Redis, through the shared [`RedisClient`]),
//! with single-flight on misses. The cache can never fail a request: a Redis
//! failure is a miss, counted and logged.
//!
//! - `entry`: the stored value format
//! - `flight`: one miss: Redis read, computation, stores
//! - `keys`: the key space, the one owner of key formats and scopes
//! - `singleflight`: one computation per key
//! - `stats`: counters for `/cache/stats` and `/metrics`

pub mod entry;
mod flight;
pub mod keys;
pub mod singleflight;
pub mod stats;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::future::Cache as MokaCache;

use crate::clock::unix_now;
use crate::config::CacheSettings;
use crate::redis::{RedisCaller, RedisClient, RedisInfo, RedisUnavailable};
use entry::CachedData;
use flight::Flight;
pub use flight::Fresh;
use singleflight::SingleFlight;
use stats::{CacheStats, Outcome};

/// How a request wants the cache used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadMode {
    /// Read L1, then Redis, then compute.
    Normal,
    /// Skip the reads, compute, and overwrite the entry (`Cache-Control: no-cache`).
    Refresh,
}

/// A result and how it was obtained.
#[derive(Debug, Clone)]
pub struct Served {
    pub entry: Arc<CachedData>,
    pub outcome: Outcome,
    /// Whether the result is in the cache now (the contract's `cached`).
    pub stored: bool,
    /// Time the computation took, when this request's flight ran it.
    pub compute_elapsed: Option<Duration>,
}

impl Served {
    pub fn from_cache(&self) -> bool {
        matches!(self.outcome, Outcome::L1 | Outcome::Redis)
    }
}

/// The computation's task panicked; the error type of a computation must be
/// able to say so, because single-flight waiters need an answer.
#[derive(Debug, Clone, Copy)]
pub struct ComputePanicked;

type L1 = MokaCache<String, Arc<CachedData>>;

/// The cache of results whose computation fails with `E`.
pub struct QueryCache<E: Clone> {
    settings: CacheSettings,
    l1: Option<L1>,
    redis: Option<Arc<RedisClient>>,
    flights: SingleFlight<Result<Served, E>>,
    stats: Arc<CacheStats>,
}

/// L1 entries live no longer than the entry's remaining TTL nor `l1_ttl`.
struct L1Expiry {
    l1_ttl: Duration,
}

impl moka::Expiry<String, Arc<CachedData>> for L1Expiry {
    fn expire_after_create(
        &self,
        _key: &String,
        value: &Arc<CachedData>,
        _now: std::time::Instant,
    ) -> Option<Duration> {
        let remaining = (value.created_at + value.ttl_seconds).saturating_sub(unix_now());
        Some(self.l1_ttl.min(Duration::from_secs(remaining)))
    }
}

impl<E> QueryCache<E>
where
    E: From<ComputePanicked> + Clone + Send + Sync + 'static,
{
    /// `redis` is the shared client, or `None` when Redis is disabled.
    pub fn new(settings: &CacheSettings, redis: Option<Arc<RedisClient>>) -> Self {
        let l1 = (settings.enabled && settings.l1_enabled).then(|| {
            MokaCache::builder()
                .max_capacity(settings.l1_max_bytes)
                .weigher(|key: &String, value: &Arc<CachedData>| {
                    u32::try_from(key.len() + value.data.len()).unwrap_or(u32::MAX)
                })
                .expire_after(L1Expiry {
                    l1_ttl: Duration::from_secs(settings.l1_ttl_seconds.max(1)),
                })
                .support_invalidation_closures()
                .build()
        });
        Self {
            settings: settings.clone(),
            l1,
            redis: redis.filter(|_| settings.enabled),
            flights: SingleFlight::default(),
            stats: Arc::default(),
        }
    }

    pub fn stats(&self) -> &CacheStats {
        &self.stats
    }

    /// Looks `key` up in L1, then (within one flight per key) in Redis, and
    /// finally runs `compute`, storing its result in both tiers.
    pub async fn get_or_compute<F, Fut>(
        &self,
        key: &str,
        ttl_seconds: u64,
        mode: ReadMode,
        compute: F,
    ) -> Result<Served, E>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<Fresh, E>> + Send + 'static,
    {
        let started = Instant::now();
        if mode == ReadMode::Normal && self.settings.enabled {
            if let Some(entry) = self.l1_get(key).await {
                self.stats.record_lookup(Outcome::L1, started.elapsed());
                return Ok(Served {
                    entry,
                    outcome: Outcome::L1,
                    stored: true,
                    compute_elapsed: None,
                });
            }
        }

        let flight = Flight {
            key: key.to_owned(),
            ttl_seconds,
            read_redis: mode == ReadMode::Normal && self.settings.enabled,
            store: self.settings.enabled,
            compress_above: self.settings.compress_above_bytes,
            max_entry_bytes: self.settings.max_entry_bytes,
            l1: self.l1.clone(),
            redis: self.redis.clone(),
            stats: Arc::clone(&self.stats),
        };
        // Refreshes get their own flight key: they must not be answered by a
        // concurrent normal flight that may return the entry being replaced.
        let flight_key = match mode {
            ReadMode::Normal => key.to_owned(),
            ReadMode::Refresh => format!("refresh\u{0}{key}"),
        };
        let (mut result, _joined) = self
            .flights
            .run(&flight_key, flight.run(compute), || Err(E::from(ComputePanicked)))
            .await;
        if let Ok(served) = &mut result {
            if mode == ReadMode::Refresh || !self.settings.enabled {
                served.outcome = Outcome::Bypass;
            }
            self.stats.record_lookup(served.outcome, started.elapsed());
        }
        result
    }

    async fn l1_get(&self, key: &str) -> Option<Arc<CachedData>> {
        self.l1.as_ref()?.get(key).await
    }

    fn redis(&self) -> Result<&Arc<RedisClient>, RedisUnavailable> {
        self.redis.as_ref().ok_or(RedisUnavailable::Disabled)
    }

    /// Deletes keys matching a `pattern` built by the key space from Redis
    /// (SCAN + UNLINK) and from this instance's L1.
    pub async fn clear(&self, pattern: &str) -> Result<u64, RedisUnavailable> {
        if let Some(l1) = &self.l1 {
            let owned = pattern.to_owned();
            if l1
                .invalidate_entries_if(move |key, _| keys::glob_matches(&owned, key))
                .is_err()
            {
                l1.invalidate_all();
            }
        }
        let deleted = self
            .redis()?
            .delete_matching(RedisCaller::Admin, pattern, self.settings.clear_batch_size)
            .await?;
        self.stats.record_deletes(deleted);
        Ok(deleted)
    }

    /// Deletes one key from both tiers; returns how many Redis entries existed.
    pub async fn delete_key(&self, key: &str) -> Result<u64, RedisUnavailable> {
        if let Some(l1) = &self.l1 {
            l1.invalidate(key).await;
        }
        let deleted = self.redis()?.unlink(RedisCaller::Admin, vec![key.to_owned()]).await?;
        self.stats.record_deletes(deleted);
        Ok(deleted)
    }

    /// Redis entries matching `pattern`, counted up to `limit`.
    pub async fn count(&self, pattern: &str, limit: u64) -> Result<u64, RedisUnavailable> {
        self.redis()?.count_matching(RedisCaller::Admin, pattern, limit).await
    }

    /// L1 entry count and weighted bytes.
    pub async fn l1_size(&self) -> (u64, u64) {
        match &self.l1 {
            Some(l1) => {
                l1.run_pending_tasks().await;
                (l1.entry_count(), l1.weighted_size())
            }
            None => (0, 0),
        }
    }

    pub fn l1_enabled(&self) -> bool {
        self.l1.is_some()
    }

    pub async fn redis_info(&self) -> Result<RedisInfo, RedisUnavailable> {
        self.redis()?.info(RedisCaller::Admin).await
    }

    /// `open`, `closed` or `disabled`.
    pub fn breaker_state(&self) -> &'static str {
        self.redis
            .as_ref()
            .map(|r| r.breaker().state_name())
            .unwrap_or("disabled")
    }
}
