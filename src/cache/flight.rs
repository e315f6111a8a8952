//! One lookup past L1, end to end: the Redis read (entry and version
//! counters in one round trip), the decision to serve it fresh, stale or not
//! at all, and on a miss the computation under a cross-instance lease, then
//! the stores. A flight owns everything it needs, so it runs in its own task
//! (single-flight) and a client that disconnects cannot cancel it.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::entry::{self, CachedData, EntryDeps};
use super::recent::Recent;
use super::remote::Remote;
use super::singleflight::SingleFlight;
use super::stats::{CacheStats, Outcome};
use super::versions::Versions;
use super::{lease, ComputeError, NotCached, ReadMode, Served, L1};
use crate::clock::unix_now;
use crate::redis::{RedisCaller, RedisClient, RedisUnavailable};

/// Entries larger than this are deflated on the blocking pool, not on the
/// runtime's worker: deflate runs at ~80-100 MB/s here, so 64 KB takes
/// ~0.7 ms, and an entry of `max_entry_bytes` (8 MB) ~100 ms, long enough to
/// stall every task sharing the worker (a Redis command's timeout is 50 ms).
const DEFLATE_INLINE_MAX: usize = 64 * 1024;

/// How often a waiter looks for the lease holder's result.
const LEASE_POLL: Duration = Duration::from_millis(25);

/// What a computation produced: the JSON array of rows, ready to splice.
#[derive(Debug, Clone)]
pub struct Fresh {
    pub data: bytes::Bytes,
    pub rows: u64,
    /// Rows before limit/offset, when the query asked (`"total": true`).
    pub total: Option<u64>,
    /// Time the computation spent (the database's time, for the span).
    pub elapsed: Duration,
    /// The rollup that answered; `None`: the raw table.
    pub source: Option<Arc<str>>,
}

/// What the client accepts (`Cache-Control` request directives, RFC 9111).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Accept {
    /// `max-age=N`: nothing older than N seconds.
    pub max_age: Option<u64>,
    /// `max-stale=N`: an entry up to N seconds past its TTL will do.
    pub max_stale: Option<u64>,
    /// `only-if-cached`: never compute; fail if nothing usable is cached.
    pub only_if_cached: bool,
}

/// One entry as the caller describes it.
#[derive(Debug, Clone)]
pub struct EntryRequest {
    pub key: String,
    pub ttl_seconds: u64,
    pub stale_while_revalidate_seconds: u64,
    pub stale_if_error_seconds: u64,
    /// Every version counter the entry depends on (see `versions`).
    pub counters: Arc<[String]>,
    /// The cross-instance lease on computing it (see `lease`).
    pub lease_key: String,
    pub deps: Arc<EntryDeps>,
    pub mode: ReadMode,
    pub accept: Accept,
}

impl EntryRequest {
    /// How long Redis keeps the entry: its TTL plus the longest stale window.
    fn retention_seconds(&self) -> u64 {
        self.ttl_seconds + self.stale_while_revalidate_seconds.max(self.stale_if_error_seconds)
    }
}

/// Lease settings, shared by every flight.
#[derive(Debug, Clone)]
pub struct LeasePolicy {
    /// Length of a lease; renewed by a third of it while the statement runs.
    pub length: Duration,
    /// Longest a waiter waits for another instance's result before it runs
    /// the statement itself.
    pub wait: Duration,
    /// This instance's name in leases.
    pub token: String,
}

#[derive(Clone)]
pub(super) struct Flight<E: Clone> {
    pub request: EntryRequest,
    pub store: bool,
    pub compress_above: usize,
    pub max_entry_bytes: usize,
    pub l1: Option<L1>,
    /// Invalidations of L1: one that arrived while this flight ran and
    /// applies to its entry keeps the entry out of L1.
    pub recent: Arc<Recent>,
    pub started_after: u64,
    pub redis: Option<Arc<RedisClient>>,
    /// The sentinels' replicas, for first looks (`read_from_replicas`).
    pub replicas: Option<Arc<RedisClient>>,
    /// The remote Redis of `[redis.remote]`, when configured.
    pub remote: Option<Arc<Remote>>,
    pub versions: Arc<Versions>,
    pub lease: Arc<LeasePolicy>,
    pub stats: Arc<CacheStats>,
    /// For the background refresh of a stale-while-revalidate serve.
    pub flights: Arc<SingleFlight<Result<Served, E>>>,
}

/// The snapshots of an entry's counters in each Redis, as read by this
/// flight: an entry is stored in a Redis only under that Redis' snapshot.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Snapshots {
    pub local: Option<u64>,
    pub remote: Option<u64>,
}

/// An entry read from Redis, judged against its counters.
pub(super) struct Found {
    entry: CachedData,
    /// Its counters have not moved since it was computed.
    pub(super) valid: bool,
    pub(super) age: u64,
}

impl<E: ComputeError> Flight<E> {
    pub async fn run<F, Fut>(self, compute: F) -> Result<Served, E>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<Fresh, E>> + Send + 'static,
    {
        let request = &self.request;
        let (found, mut snapshot) = self.read().await;
        if let (Some(found), ReadMode::Normal) = (&found, request.mode) {
            if self.fresh_enough(found) {
                let entry = self.keep(found.entry.clone()).await;
                return Ok(Served::cached(entry, Outcome::Redis, false, found.age));
            }
            let past_ttl = found.age.saturating_sub(request.ttl_seconds);
            let revalidate = past_ttl < request.stale_while_revalidate_seconds;
            let client_accepts = request.accept.max_stale.is_some_and(|max| past_ttl < max);
            if found.valid && request.accept.max_age.is_none() && (revalidate || client_accepts) {
                if revalidate {
                    self.refresh_in_background(compute);
                }
                self.stats.record_stale();
                let entry = Arc::new(found.entry.clone());
                return Ok(Served::cached(entry, Outcome::Redis, true, found.age));
            }
        }
        if request.accept.only_if_cached {
            return Err(E::from(NotCached));
        }

        let computed = match self.redis.clone() {
            Some(redis) => self.compute_under_lease(&redis, compute, &mut snapshot).await,
            None => self.compute_and_store(compute, snapshot).await,
        };
        match computed {
            Err(error) if error.is_outage() => match found {
                // stale-if-error: past its TTL or invalidated, but within the window.
                Some(found)
                    if found.age.saturating_sub(request.ttl_seconds) < request.stale_if_error_seconds
                        && request.accept.max_age.is_none_or(|max| found.age <= max) =>
                {
                    self.stats.record_stale();
                    Ok(Served::cached(Arc::new(found.entry), Outcome::Redis, true, found.age))
                }
                _ => Err(error),
            },
            other => other,
        }
    }

    /// Valid, within its TTL and within the client's `max-age`.
    fn fresh_enough(&self, found: &Found) -> bool {
        found.valid
            && found.age < self.request.ttl_seconds
            && self.request.accept.max_age.is_none_or(|max| found.age <= max)
    }

    /// The entry and the snapshots of its counters now: the local Redis
    /// first (a replica of it, with `read_from_replicas`); the remote (when
    /// configured) on a local miss, a local entry not fresh enough, or a
    /// local failure.
    pub(super) async fn read(&self) -> (Option<Found>, Snapshots) {
        self.read_tiers(true).await
    }

    /// `first_look`: the read before any lease. Re-reads under a lease
    /// (looking for what another instance just stored) read the local
    /// primary only: a replica may not have it yet, nor the remote.
    pub(super) async fn read_tiers(&self, first_look: bool) -> (Option<Found>, Snapshots) {
        let mut snapshots = Snapshots::default();
        let mut found = None;
        if let Some(redis) = &self.redis {
            match self.read_local(redis, first_look).await {
                Ok((bytes, snapshot)) => {
                    snapshots.local = Some(snapshot);
                    found = bytes.and_then(|bytes| self.judge(redis, &bytes, snapshot, None));
                }
                Err(error) => self.record_failure(&error),
            }
        }
        let Some(remote) = self.remote.as_ref().filter(|_| first_look) else {
            return (found, snapshots);
        };
        if self.request.mode == ReadMode::Normal && found.as_ref().is_some_and(|f| self.fresh_enough(f)) {
            return (found, snapshots);
        }
        match self
            .versions
            .read(&remote.client, &self.request.key, &self.request.counters)
            .await
        {
            Ok((bytes, snapshot)) => {
                snapshots.remote = Some(snapshot);
                match bytes.and_then(|bytes| self.judge(&remote.client, &bytes, snapshot, Some(remote))) {
                    Some(theirs) if theirs.valid => {
                        remote.record_hit();
                        if let (Some(local), Some(local_snapshot)) = (&self.redis, snapshots.local) {
                            self.fill_local(local, &theirs, local_snapshot);
                        }
                        if found.as_ref().is_none_or(|ours| !ours.valid || ours.age > theirs.age) {
                            found = Some(theirs);
                        }
                    }
                    theirs => found = found.or(theirs),
                }
            }
            Err(error) => remote.record_failure(&error),
        }
        (found, snapshots)
    }

    /// The entry and its counters' snapshot from the local Redis: on a first
    /// look from a replica when one is configured and its breaker is closed,
    /// else (or when the replica fails) from the primary. A replica trails
    /// the primary by its replication lag, so an entry invalidated a moment
    /// ago may still read as valid there; a snapshot read there and stamped
    /// on a new entry can only make that entry stale early, never wrong.
    async fn read_local(
        &self,
        primary: &Arc<RedisClient>,
        first_look: bool,
    ) -> Result<(Option<Vec<u8>>, u64), RedisUnavailable> {
        let (key, counters) = (&self.request.key, &self.request.counters);
        if let Some(replica) = self.replicas.as_ref().filter(|r| first_look && !r.breaker().is_open()) {
            // The replica's own client counts its failures and trips its breaker.
            match self.versions.read_from(replica, primary, key, counters).await {
                Ok(read) => {
                    metrics::counter!("analytics_redis_replica_reads_total", "served_by" => "replica").increment(1);
                    return Ok(read);
                }
                Err(_) => {
                    metrics::counter!("analytics_redis_replica_reads_total", "served_by" => "primary").increment(1);
                }
            }
        }
        self.versions.read(primary, key, counters).await
    }

    /// Decodes an entry read from `redis` and judges it against `snapshot`
    /// (and, for the remote, against the bumps it missed); a corrupt one is
    /// deleted and reads as a miss.
    fn judge(
        &self,
        redis: &Arc<RedisClient>,
        bytes: &[u8],
        snapshot: u64,
        remote: Option<&Arc<Remote>>,
    ) -> Option<Found> {
        match entry::decode(bytes, self.max_entry_bytes) {
            Ok(entry) => Some(Found {
                valid: entry.versions == Some(snapshot) && remote.is_none_or(|r| r.trusts(entry.created_at)),
                age: entry.age(unix_now()),
                entry,
            }),
            Err(error) => {
                self.stats.record_corrupt();
                tracing::warn!(key = %self.request.key, %error, "corrupt cache entry; treating as a miss and deleting it");
                let (redis, key) = (Arc::clone(redis), self.request.key.clone());
                tokio::spawn(async move {
                    let _ = redis.unlink(RedisCaller::Cache, vec![key]).await;
                });
                None
            }
        }
    }

    /// A valid entry found on the remote is copied to the local Redis (in
    /// the background), under the local snapshot read before the remote's:
    /// counters are bumped on the remote first, so an entry the remote still
    /// finds valid was valid when the local snapshot was taken.
    fn fill_local(&self, local: &Arc<RedisClient>, found: &Found, local_snapshot: u64) {
        let keep = self.request.retention_seconds().saturating_sub(found.age);
        if keep == 0 || !self.store {
            return;
        }
        let mut copy = found.entry.clone();
        copy.versions = Some(local_snapshot);
        let encoded = entry::encode(&copy, self.compress_above);
        let (local, key, stats) = (Arc::clone(local), self.request.key.clone(), Arc::clone(&self.stats));
        tokio::spawn(async move {
            let started = Instant::now();
            if local.set_ex(RedisCaller::Cache, &key, encoded, keep).await.is_ok() {
                stats.record_set(started.elapsed());
            }
        });
    }

    /// Computes under the cross-instance lease, or waits for the instance
    /// that holds it to store the entry.
    async fn compute_under_lease<F, Fut>(
        &self,
        redis: &Arc<RedisClient>,
        compute: F,
        snapshot: &mut Snapshots,
    ) -> Result<Served, E>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<Fresh, E>> + Send + 'static,
    {
        let lease_key = self.request.lease_key.clone();
        let deadline = Instant::now() + self.lease.wait;
        let mut waited = false;
        loop {
            match lease::acquire(redis, lease_key.clone(), self.lease.token.clone(), self.lease.length).await {
                Ok(Some(lease)) => {
                    // Another instance may have computed and stored the entry
                    // (and released its lease) since our read: look once
                    // more, a round trip that saves a statement.
                    if self.request.mode == ReadMode::Normal {
                        let (found, now) = self.read_tiers(false).await;
                        snapshot.local = now.local;
                        if let Some(found) = found.filter(|f| self.fresh_enough(f)) {
                            lease.release().await;
                            let entry = self.keep(found.entry).await;
                            return Ok(Served::cached(entry, Outcome::Redis, false, found.age));
                        }
                    }
                    let result = self.compute_and_store(compute, *snapshot).await;
                    lease.release().await;
                    return result;
                }
                // Another instance computes it: wait for its entry.
                Ok(None) if Instant::now() < deadline => {
                    if !waited {
                        waited = true;
                        self.stats.record_lease_wait();
                    }
                    tokio::time::sleep(LEASE_POLL).await;
                    let (found, now) = self.read_tiers(false).await;
                    snapshot.local = now.local;
                    if let Some(found) = found.filter(|f| self.fresh_enough(f)) {
                        let entry = self.keep(found.entry).await;
                        return Ok(Served::cached(entry, Outcome::Redis, false, found.age));
                    }
                }
                Ok(None) => return self.compute_and_store(compute, *snapshot).await,
                // Redis failed: run it here (single-flight still holds in process).
                Err(error) => {
                    self.record_failure(&error);
                    return self.compute_and_store(compute, *snapshot).await;
                }
            }
        }
    }

    /// Runs the computation and stores its result under `snapshot`.
    async fn compute_and_store<F, Fut>(&self, compute: F, snapshot: Snapshots) -> Result<Served, E>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<Fresh, E>> + Send + 'static,
    {
        self.stats.record_db_query();
        let fresh = compute().await?;
        let mut entry = CachedData {
            data: fresh.data,
            rows: fresh.rows,
            total: fresh.total,
            created_at: unix_now(),
            ttl_seconds: self.request.ttl_seconds,
            versions: snapshot.local,
            source: fresh.source,
            deps: Some(Arc::clone(&self.request.deps)),
            deflated: None,
        };
        self.deflate_for_l1(&mut entry).await;
        let entry = Arc::new(entry);
        let stored = self.store && self.save(&entry, snapshot.remote).await;
        Ok(Served {
            entry,
            outcome: Outcome::Miss,
            stored,
            compute_elapsed: Some(fresh.elapsed),
            stale: false,
            age_seconds: 0,
        })
    }

    /// stale-while-revalidate: one background flight recomputes the entry.
    fn refresh_in_background<F, Fut>(&self, compute: F)
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<Fresh, E>> + Send + 'static,
    {
        let mut refresh = self.clone();
        refresh.request.mode = ReadMode::Refresh;
        refresh.request.accept = super::Accept::default();
        let flights = Arc::clone(&self.flights);
        let key = super::flight_key(&refresh.request);
        tokio::spawn(async move {
            let _ = flights
                .run(&key, refresh.run(compute), || Err(E::from(super::ComputePanicked)))
                .await;
        });
    }

    /// A Redis entry about to be served: kept in L1 unless an invalidation
    /// that applies to it arrived since this flight started.
    async fn keep(&self, mut entry: CachedData) -> Arc<CachedData> {
        entry.deps = Some(Arc::clone(&self.request.deps));
        self.deflate_for_l1(&mut entry).await;
        let entry = Arc::new(entry);
        if let Some(l1) = &self.l1 {
            self.fill_l1(l1, &entry).await;
        }
        entry
    }

    /// Stores in Redis and L1 (and, in the background, on the remote under
    /// its own snapshot); returns whether any tier holds it now.
    async fn save(&self, entry: &Arc<CachedData>, remote_snapshot: Option<u64>) -> bool {
        if entry.data.len() > self.max_entry_bytes {
            self.stats.record_uncacheable();
            return false;
        }
        let mut stored = false;
        if let (Some(remote), Some(snapshot)) = (&self.remote, remote_snapshot) {
            let mut copy = CachedData::clone(entry);
            copy.versions = Some(snapshot);
            let encoded = entry::encode(&copy, self.compress_above);
            remote.spawn_write(self.request.key.clone(), encoded, self.request.retention_seconds());
            stored = true;
        }
        if let (Some(redis), Some(_)) = (&self.redis, entry.versions) {
            let started = Instant::now();
            let encoded = entry::encode(entry, self.compress_above);
            match redis
                .set_ex(
                    RedisCaller::Cache,
                    &self.request.key,
                    encoded,
                    self.request.retention_seconds(),
                )
                .await
            {
                Ok(()) => {
                    self.stats.record_set(started.elapsed());
                    stored = true;
                }
                Err(error) => self.record_failure(&error),
            }
        }
        if let Some(l1) = &self.l1 {
            stored |= self.fill_l1(l1, entry).await;
        }
        stored
    }

    /// Puts the entry into L1 unless an invalidation that applies to it
    /// arrived since this flight started; returns whether it stayed. Checked
    /// after the insert: an invalidation recorded before the check is seen
    /// here, one recorded after it removes the entry itself.
    async fn fill_l1(&self, l1: &L1, entry: &Arc<CachedData>) -> bool {
        l1.insert(self.request.key.clone(), Arc::clone(entry)).await;
        if self.recent.touched_since(self.started_after, &self.request.key, entry) {
            l1.invalidate(&self.request.key).await;
            return false;
        }
        true
    }

    /// Deflates an entry about to enter L1 (see `CachedData::deflated`):
    /// once here, so its hits never compress. Without L1 there is nothing
    /// to keep it in, and responses are compressed as they go. A large
    /// entry is deflated on the blocking pool (see [`DEFLATE_INLINE_MAX`]).
    async fn deflate_for_l1(&self, entry: &mut CachedData) {
        let size = entry.data.len();
        let kept = self.store && self.l1.is_some() && size <= self.max_entry_bytes;
        if !kept || entry.deflated.is_some() || size < crate::gzip::MIN_BYTES {
            return;
        }
        let deflated = if size <= DEFLATE_INLINE_MAX {
            crate::gzip::Segment::new(&entry.data)
        } else {
            let data = entry.data.clone();
            // A failed task leaves the entry without its deflated form:
            // its gzip responses are then compressed as they go.
            tokio::task::spawn_blocking(move || crate::gzip::Segment::new(&data))
                .await
                .ok()
                .flatten()
        };
        entry.deflated = deflated.map(Arc::new);
    }

    fn record_failure(&self, error: &RedisUnavailable) {
        if error.is_failure() {
            self.stats
                .record_redis_error(matches!(error, RedisUnavailable::Timeout));
        }
    }
}
