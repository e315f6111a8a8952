//! Cache-aside in front of a computation (the database, for queries): L1
//! (moka, in process) and L2 (Redis, through the shared [`RedisClient`]),
//! with single-flight on misses (in process) and leases (across instances).
//! Entries are checked against version counters, so a data change
//! invalidates exactly what it can affect; stale entries are served only
//! when that helps (RFC 5861). The cache can never fail a request: a Redis
//! failure is a miss, counted and logged.
//!
//! - `entry`: the stored value format
//! - `flight`: one lookup past L1: read, judge, compute under a lease, store
//! - `keys`: the key space, the one owner of key formats and scopes
//! - `lease`: one computation per key across instances
//! - `recent`: the invalidations L1 saw lately, for flights that overlap them
//! - `remote`: the second, remote Redis of `[redis.remote]` (local + remote)
//! - `singleflight`: one computation per key in this process
//! - `stats`: counters for `/cache/stats` and `/metrics`
//! - `versions`: the version counters entries are valid under

pub mod entry;
mod flight;
pub mod keys;
mod lease;
mod recent;
pub mod remote;
pub mod singleflight;
pub mod stats;
pub mod versions;

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::future::Cache as MokaCache;

use crate::clock::unix_now;
use crate::config::CacheSettings;
use crate::redis::{RedisCaller, RedisClient, RedisInfo, RedisUnavailable};
use entry::CachedData;
pub use entry::EntryDeps;
use flight::Flight;
pub use flight::{Accept, EntryRequest, Fresh, LeasePolicy};
use recent::{Dropped, Recent};
use remote::{Remote, RemoteCounters};
use singleflight::SingleFlight;
use stats::{CacheStats, Outcome};
use versions::Versions;

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
    /// Served past its TTL (stale-while-revalidate, max-stale) or after an
    /// invalidation (stale-if-error).
    pub stale: bool,
    /// Seconds since the entry was computed.
    pub age_seconds: u64,
}

impl Served {
    pub fn from_cache(&self) -> bool {
        matches!(self.outcome, Outcome::L1 | Outcome::Redis)
    }

    fn cached(entry: Arc<CachedData>, outcome: Outcome, stale: bool, age_seconds: u64) -> Self {
        Self {
            entry,
            outcome,
            stored: true,
            compute_elapsed: None,
            stale,
            age_seconds,
        }
    }
}

/// The computation's task panicked; the error type of a computation must be
/// able to say so, because single-flight waiters need an answer.
#[derive(Debug, Clone, Copy)]
pub struct ComputePanicked;

/// `only-if-cached` and nothing usable is cached.
#[derive(Debug, Clone, Copy)]
pub struct NotCached;

/// What the cache needs of a computation's error type.
pub trait ComputeError: Clone + Send + Sync + 'static + From<ComputePanicked> + From<NotCached> {
    /// Whether the source is down, saturated or timed out: only then may a
    /// stale entry stand in for the answer (stale-if-error).
    fn is_outage(&self) -> bool;
}

/// foldhash instead of SipHash: the key is hashed on every lookup (keys
/// are MD5-derived, so a client cannot aim them at collisions cheaply).
type L1 = MokaCache<String, Arc<CachedData>, foldhash::fast::RandomState>;

/// Which L1 entries an invalidation removes: those of `dataset` (and of
/// `tenant`, when given) that depend on one of `keys` (all, when `None`).
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct L1Target {
    pub dataset: String,
    pub tenant: Option<String>,
    pub keys: Option<HashSet<String>>,
}

impl L1Target {
    pub(crate) fn matches(&self, entry: &CachedData) -> bool {
        let Some(deps) = &entry.deps else {
            return true;
        };
        deps.dataset == self.dataset
            && self.tenant.as_ref().is_none_or(|t| *t == deps.tenant)
            && self
                .keys
                .as_ref()
                .is_none_or(|keys| deps.keys.iter().any(|k| keys.contains(k)))
    }
}

/// The cache of results whose computation fails with `E`.
pub struct QueryCache<E: Clone> {
    settings: CacheSettings,
    l1: Option<L1>,
    /// Recent invalidations of L1 (see `recent`).
    recent: Arc<Recent>,
    redis: Option<Arc<RedisClient>>,
    /// The sentinels' replicas (`read_from_replicas`), when configured.
    replicas: Option<Arc<RedisClient>>,
    /// The remote Redis (`[redis.remote]`), when configured.
    remote: Option<Arc<Remote>>,
    versions: Arc<Versions>,
    lease: Arc<LeasePolicy>,
    flights: Arc<SingleFlight<Result<Served, E>>>,
    stats: Arc<CacheStats>,
}

/// The single-flight key of a request: requests that would decide
/// differently never share a flight.
fn flight_key(request: &EntryRequest) -> String {
    match (request.mode, request.accept == Accept::default()) {
        (ReadMode::Normal, true) => request.key.clone(),
        (ReadMode::Refresh, _) => format!("refresh\u{0}{}", request.key),
        (ReadMode::Normal, false) => format!(
            "accept\u{0}{:?}\u{0}{:?}\u{0}{}\u{0}{}",
            request.accept.max_age, request.accept.max_stale, request.accept.only_if_cached, request.key
        ),
    }
}

/// A cached entry as the dry run reports it.
#[derive(Debug, Clone, Copy)]
pub struct Peek {
    /// `l1` or `redis`.
    pub tier: &'static str,
    pub age_seconds: u64,
    /// No change has invalidated it (it may still be past its TTL).
    pub valid: bool,
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

impl<E: ComputeError> QueryCache<E> {
    /// `redis` is the shared client, or `None` when Redis is disabled.
    pub fn new(settings: &CacheSettings, redis: Option<Arc<RedisClient>>, lease: LeasePolicy) -> Self {
        let l1 = (settings.enabled && settings.l1_enabled).then(|| {
            MokaCache::builder()
                .max_capacity(settings.l1_max_bytes)
                .weigher(|key: &String, value: &Arc<CachedData>| {
                    let deflated = value.deflated.as_ref().map_or(0, |d| d.deflated.len());
                    u32::try_from(key.len() + value.data.len() + deflated).unwrap_or(u32::MAX)
                })
                .expire_after(L1Expiry {
                    l1_ttl: Duration::from_secs(settings.l1_ttl_seconds.max(1)),
                })
                .support_invalidation_closures()
                .build_with_hasher(foldhash::fast::RandomState::default())
        });
        Self {
            settings: settings.clone(),
            l1,
            recent: Arc::default(),
            redis: redis.filter(|_| settings.enabled),
            replicas: None,
            remote: None,
            versions: Arc::default(),
            lease: Arc::new(lease),
            flights: Arc::default(),
            stats: Arc::default(),
        }
    }

    /// Adds the remote Redis of `[redis.remote]` (local + remote): written
    /// in the background, at most `max_pending_writes` at a time, and read on
    /// a local miss or while the local one is down. Ignored without a local
    /// Redis or with the cache off.
    pub fn with_remote(mut self, remote: Option<Arc<RedisClient>>, max_pending_writes: usize) -> Self {
        self.remote = remote
            .filter(|_| self.redis.is_some())
            .map(|client| Arc::new(Remote::new(client, max_pending_writes)));
        self
    }

    /// Adds the sentinels' replicas (`read_from_replicas`): lookups read
    /// an entry and its counters there, and the primary when they fail.
    /// Everything else (writes, leases, invalidations) stays on the primary.
    pub fn with_replicas(mut self, replicas: Option<Arc<RedisClient>>) -> Self {
        self.replicas = replicas.filter(|_| self.redis.is_some());
        self
    }

    pub fn stats(&self) -> &CacheStats {
        &self.stats
    }

    /// An L1 hit for `key`, if the client takes it; counted as a lookup.
    /// The cheapest path: callers try it before describing the entry.
    pub async fn lookup_l1(&self, key: &str, mode: ReadMode, accept: Accept) -> Option<Served> {
        if mode != ReadMode::Normal || !self.settings.enabled {
            return None;
        }
        let started = Instant::now();
        let entry = self.l1_get(key).await?;
        let age = entry.age(unix_now());
        if accept.max_age.is_some_and(|max| age > max) {
            return None;
        }
        self.stats.record_lookup(Outcome::L1, started.elapsed());
        Some(Served::cached(entry, Outcome::L1, false, age))
    }

    /// Looks the entry up (within one flight per key) in Redis, and finally
    /// runs `compute` (under a lease), storing its result in both tiers.
    /// Callers try [`QueryCache::lookup_l1`] first.
    pub async fn get_or_compute<F, Fut>(&self, request: EntryRequest, compute: F) -> Result<Served, E>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<Fresh, E>> + Send + 'static,
    {
        let started = Instant::now();
        let enabled = self.settings.enabled;
        let key = flight_key(&request);
        let mode = request.mode;
        let flight = self.flight(request);
        let (mut result, _joined) = self
            .flights
            .run(&key, flight.run(compute), || Err(E::from(ComputePanicked)))
            .await;
        match &mut result {
            Ok(served) => {
                if mode == ReadMode::Refresh || !enabled {
                    served.outcome = Outcome::Bypass;
                }
                self.stats.record_lookup(served.outcome, started.elapsed());
            }
            // A lookup whose computation failed was still a miss: counting
            // it keeps the hit rate honest during an outage.
            Err(_) => self
                .stats
                .record_lookup(if enabled { Outcome::Miss } else { Outcome::Bypass }, started.elapsed()),
        }
        result
    }

    /// What is cached for `request` now, without counting a lookup, filling
    /// L1 or computing anything (the dry run).
    pub async fn peek(&self, request: EntryRequest) -> Option<Peek> {
        if !self.settings.enabled {
            return None;
        }
        if let Some(entry) = self.l1_get(&request.key).await {
            // L1 entries are dropped in place when invalidated.
            return Some(Peek {
                tier: "l1",
                age_seconds: entry.age(unix_now()),
                valid: true,
            });
        }
        let (found, _) = self.flight(request).read().await;
        found.map(|found| Peek {
            tier: "redis",
            age_seconds: found.age,
            valid: found.valid,
        })
    }

    fn flight(&self, request: EntryRequest) -> Flight<E> {
        Flight {
            request,
            store: self.settings.enabled,
            compress_above: self.settings.compress_above_bytes,
            max_entry_bytes: self.settings.max_entry_bytes,
            l1: self.l1.clone(),
            recent: Arc::clone(&self.recent),
            started_after: self.recent.now(),
            redis: self.redis.clone(),
            replicas: self.replicas.clone(),
            remote: self.remote.clone(),
            versions: Arc::clone(&self.versions),
            lease: Arc::clone(&self.lease),
            stats: Arc::clone(&self.stats),
            flights: Arc::clone(&self.flights),
        }
    }

    /// INCR version counters in Redis (an invalidation's shared half). With
    /// a remote Redis, its counters are bumped first, then the local ones:
    /// an entry the remote still finds valid was then valid under the local
    /// snapshot read before it (see `flight::fill_local`). A remote bump that
    /// fails makes this instance distrust what the remote holds now. An
    /// error is the local half's: retry it with [`Self::bump_local`], never
    /// with `bump` (that would invalidate the remote's entries again).
    pub async fn bump(&self, counters: Vec<String>) -> Result<(), RedisUnavailable> {
        let local = self.redis()?;
        if let Some(remote) = &self.remote {
            if let Err(error) = self.versions.bump(&remote.client, counters.clone()).await {
                remote.record_failure(&error);
                remote.distrust_existing();
                tracing::warn!(%error, "bumping the remote Redis' version counters failed; its current entries are no longer trusted here");
            }
        }
        self.versions.bump(local, counters).await
    }

    /// INCR version counters in the local Redis only: the retry of a
    /// [`Self::bump`] whose local half failed (its remote half already ran).
    pub async fn bump_local(&self, counters: Vec<String>) -> Result<(), RedisUnavailable> {
        self.versions.bump(self.redis()?, counters).await
    }

    /// Drops matching entries from this instance's L1 (an invalidation's
    /// local half). In-flight computations that started before this call
    /// will not fill L1.
    pub fn invalidate_l1(&self, target: L1Target) {
        self.recent.push(Dropped::Target(target.clone()));
        if let Some(l1) = &self.l1 {
            if l1.invalidate_entries_if(move |_, entry| target.matches(entry)).is_err() {
                l1.invalidate_all();
            }
        }
    }

    /// Drops entries matching a key-space `pattern` from this instance's L1.
    pub fn clear_l1(&self, pattern: &str) {
        self.recent.push(Dropped::Pattern(pattern.to_owned()));
        if let Some(l1) = &self.l1 {
            let owned = pattern.to_owned();
            if l1
                .invalidate_entries_if(move |key, _| keys::glob_matches(&owned, key))
                .is_err()
            {
                l1.invalidate_all();
            }
        }
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
        self.clear_l1(pattern);
        if let Some(remote) = &self.remote {
            if let Err(error) = remote
                .client
                .delete_matching(RedisCaller::Admin, pattern, self.settings.clear_batch_size)
                .await
            {
                remote.record_failure(&error);
                remote.distrust_existing();
                tracing::warn!(%error, "clearing the remote Redis failed; its current entries are no longer trusted here");
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
        if let Some(remote) = &self.remote {
            if let Err(error) = remote.client.unlink(RedisCaller::Admin, vec![key.to_owned()]).await {
                remote.record_failure(&error);
                remote.distrust_existing();
            }
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

    /// The remote Redis' breaker (`open`, `closed`), when one is configured.
    pub fn remote_breaker_state(&self) -> Option<&'static str> {
        self.remote.as_ref().map(|r| r.client.breaker().state_name())
    }

    /// The remote Redis' INFO fields, when one is configured.
    pub async fn remote_info(&self) -> Option<Result<RedisInfo, RedisUnavailable>> {
        let remote = self.remote.as_ref()?;
        Some(remote.client.info(RedisCaller::Admin).await)
    }

    /// This instance's remote counters, when a remote is configured.
    pub fn remote_counters(&self) -> Option<RemoteCounters> {
        self.remote.as_ref().map(|r| r.counters())
    }
}
