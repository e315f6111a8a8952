//! Cache-aside in front of PostgreSQL: L1 (moka, in process) and L2 (Redis),
//! with single-flight on misses. The cache can never fail a request.
//!
//! - `entry`: the stored value format
//! - `keys`: key namespaces and pattern confinement
//! - `ttl`: the TTL policy
//! - `breaker`, `redis_store`: Redis behind timeouts and a circuit breaker
//! - `singleflight`: one computation per key
//! - `stats`: counters for `/cache/stats` and `/metrics`

pub mod breaker;
pub mod entry;
pub mod keys;
pub mod redis_store;
pub mod singleflight;
pub mod stats;
pub mod ttl;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use moka::future::Cache as MokaCache;

use crate::config::{CacheSettings, RedisSettings};
use crate::db::{DbError, QueryResult};
use entry::CachedData;
use redis_store::{RedisInfo, RedisStore, RedisUnavailable};
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
    /// Time spent in the database, when this request's flight ran the query.
    pub db_elapsed: Option<Duration>,
}

impl Served {
    pub fn from_cache(&self) -> bool {
        matches!(self.outcome, Outcome::L1 | Outcome::Redis)
    }
}

type L1 = MokaCache<String, Arc<CachedData>>;

pub struct QueryCache {
    settings: CacheSettings,
    l1: Option<L1>,
    redis: Option<Arc<RedisStore>>,
    flights: SingleFlight<Result<Served, DbError>>,
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

impl QueryCache {
    pub fn new(settings: &CacheSettings, redis_settings: &RedisSettings) -> Result<Self, redis::RedisError> {
        let stats = Arc::new(CacheStats::default());
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
        // Export the breaker state from the start, not only after a first trip.
        metrics::gauge!("analytics_cache_breaker_open").set(0.0);
        let redis = if settings.enabled && redis_settings.enabled {
            Some(RedisStore::new(redis_settings, Arc::clone(&stats))?)
        } else {
            None
        };
        Ok(Self {
            settings: settings.clone(),
            l1,
            redis,
            flights: SingleFlight::default(),
            stats,
        })
    }

    pub fn settings(&self) -> &CacheSettings {
        &self.settings
    }

    pub fn stats(&self) -> &CacheStats {
        &self.stats
    }

    pub fn redis(&self) -> Option<&Arc<RedisStore>> {
        self.redis.as_ref()
    }

    /// Looks `key` up in L1, then (within one flight per key) in Redis, and
    /// finally runs `compute`, storing its result in both tiers.
    pub async fn get_or_compute<F, Fut>(
        &self,
        key: &str,
        ttl_seconds: u64,
        mode: ReadMode,
        compute: F,
    ) -> Result<Served, DbError>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<QueryResult, DbError>> + Send + 'static,
    {
        let started = Instant::now();
        if mode == ReadMode::Normal && self.settings.enabled {
            if let Some(entry) = self.l1_get(key).await {
                self.stats.record_lookup(Outcome::L1, started.elapsed());
                return Ok(Served {
                    entry,
                    outcome: Outcome::L1,
                    stored: true,
                    db_elapsed: None,
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
            .run(&flight_key, flight.run(compute), || {
                Err(DbError::Query("the query task panicked".into()))
            })
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

    /// Deletes keys matching an already-confined `pattern` from Redis (SCAN +
    /// UNLINK) and from this instance's L1.
    pub async fn clear(&self, confined_pattern: &str) -> Result<u64, RedisUnavailable> {
        if let Some(l1) = &self.l1 {
            let pattern = confined_pattern.to_owned();
            if l1
                .invalidate_entries_if(move |key, _| keys::glob_matches(&pattern, key))
                .is_err()
            {
                l1.invalidate_all();
            }
        }
        let redis = self.redis.as_ref().ok_or(RedisUnavailable::Disabled)?;
        let deleted = redis
            .delete_matching(confined_pattern, self.settings.clear_batch_size)
            .await?;
        self.stats.record_deletes(deleted);
        Ok(deleted)
    }

    /// Deletes one key from both tiers; returns how many Redis entries existed.
    pub async fn delete_key(&self, key: &str) -> Result<u64, RedisUnavailable> {
        if let Some(l1) = &self.l1 {
            l1.invalidate(key).await;
        }
        let redis = self.redis.as_ref().ok_or(RedisUnavailable::Disabled)?;
        let deleted = redis.unlink(vec![key.to_owned()]).await?;
        self.stats.record_deletes(deleted);
        Ok(deleted)
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

    pub async fn redis_info(&self) -> Result<RedisInfo, RedisUnavailable> {
        self.redis.as_ref().ok_or(RedisUnavailable::Disabled)?.info().await
    }

    /// `open`, `closed` or `disabled`.
    pub fn breaker_state(&self) -> &'static str {
        self.redis
            .as_ref()
            .map(|r| r.breaker().state_name())
            .unwrap_or("disabled")
    }
}

/// Everything one flight needs, owned, so it can run in its own task.
struct Flight {
    key: String,
    ttl_seconds: u64,
    read_redis: bool,
    store: bool,
    compress_above: usize,
    max_entry_bytes: usize,
    l1: Option<L1>,
    redis: Option<Arc<RedisStore>>,
    stats: Arc<CacheStats>,
}

impl Flight {
    async fn run<F, Fut>(self, compute: F) -> Result<Served, DbError>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<QueryResult, DbError>> + Send + 'static,
    {
        if self.read_redis {
            if let Some(entry) = self.redis_get().await {
                let entry = Arc::new(entry);
                if let Some(l1) = &self.l1 {
                    l1.insert(self.key.clone(), Arc::clone(&entry)).await;
                }
                return Ok(Served {
                    entry,
                    outcome: Outcome::Redis,
                    stored: true,
                    db_elapsed: None,
                });
            }
        }

        self.stats.record_db_query();
        let result = compute().await?;
        let entry = Arc::new(CachedData {
            data: Bytes::from(result.data),
            rows: result.rows,
            created_at: unix_now(),
            ttl_seconds: self.ttl_seconds,
        });
        let stored = self.store && self.save(&entry).await;
        Ok(Served {
            entry,
            outcome: Outcome::Miss,
            stored,
            db_elapsed: Some(result.elapsed),
        })
    }

    /// A Redis GET that decodes; a corrupt entry is counted, deleted and
    /// reported as a miss.
    async fn redis_get(&self) -> Option<CachedData> {
        let redis = self.redis.as_ref()?;
        let bytes = redis.get(&self.key).await?;
        match entry::decode(&bytes, self.max_entry_bytes) {
            Ok(entry) => Some(entry),
            Err(error) => {
                self.stats.record_corrupt();
                tracing::warn!(key = %self.key, %error, "corrupt cache entry; treating as a miss and deleting it");
                let _ = redis.unlink(vec![self.key.clone()]).await;
                None
            }
        }
    }

    /// Stores in L1 and Redis; returns whether any tier holds it now.
    async fn save(&self, entry: &Arc<CachedData>) -> bool {
        if entry.data.len() > self.max_entry_bytes {
            self.stats.record_uncacheable();
            return false;
        }
        let mut stored = false;
        if let Some(redis) = &self.redis {
            let started = Instant::now();
            let encoded = entry::encode(entry, self.compress_above);
            if redis.set(&self.key, encoded, self.ttl_seconds).await {
                self.stats.record_set(started.elapsed());
                stored = true;
            }
        }
        if let Some(l1) = &self.l1 {
            l1.insert(self.key.clone(), Arc::clone(entry)).await;
            stored = true;
        }
        stored
    }
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}
