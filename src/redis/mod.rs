//! Redis as shared infrastructure: one client (pool, timeouts, circuit
//! breaker, background probe) that the cache and the rate limiter both sit
//! on. Every command names its caller, so a failed rate-limit script is never
//! counted as a failed cache read.
//!
//! - `info`: the INFO fields `/cache/stats` reports
//!
//! `rediss://` URLs connect over TLS (rustls), trusting the Mozilla roots, or
//! the CA in `redis.tls_ca_file` for a managed Redis with a private CA.

pub mod busy;
mod info;
mod topology;

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use bb8::Pool;

use crate::breaker::{Breaker, Transition};
use crate::config::{RedisSettings, REDIS_CA_SETTING};
pub use info::RedisInfo;
pub use topology::RedisConnection;
use topology::{Backend, Manager};

/// Admin commands (SCAN, INFO) may take longer than hot-path GETs.
const ADMIN_COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

/// Who sent a command: the label of `analytics_redis_errors_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedisCaller {
    /// Cache reads and writes on the request path.
    Cache,
    /// The rate limiter's script.
    RateLimit,
    /// Operator commands: clear, delete, stats.
    Admin,
}

impl RedisCaller {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Cache => "cache",
            Self::RateLimit => "ratelimit",
            Self::Admin => "admin",
        }
    }
}

/// Why a command did not run or did not succeed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RedisUnavailable {
    #[error("redis is disabled in the configuration")]
    Disabled,
    #[error("redis is unreachable (circuit breaker open)")]
    BreakerOpen,
    #[error("redis command timed out")]
    Timeout,
    /// The connection is gone (Redis restarted, network cut): the pool is
    /// replaced at once, so one failure does not become many.
    #[error("redis connection lost: {0}")]
    Connection(String),
    #[error("redis error: {0}")]
    Command(String),
}

impl RedisUnavailable {
    /// Whether the command reached (or tried to reach) Redis and failed, as
    /// opposed to being skipped by the breaker or the configuration.
    pub fn is_failure(&self) -> bool {
        matches!(self, Self::Timeout | Self::Connection(_) | Self::Command(_))
    }

    fn from_redis(error: redis::RedisError) -> Self {
        if let Some(failure) = crate::tls::handshake_failure(&error) {
            Self::Connection(format!("TLS handshake failed: {failure}"))
        } else if error.is_io_error()
            || error.is_connection_dropped()
            || error.is_connection_refusal()
            // A primary demoted to a replica (after a failover) refuses
            // writes: its connections must go, so new ones find the new one.
            || error.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::ReadOnly)
        {
            Self::Connection(error.to_string())
        } else {
            Self::Command(error.to_string())
        }
    }
}

/// Why the Redis client cannot be built from the settings.
#[derive(Debug, thiserror::Error)]
pub enum RedisConfigError {
    #[error("REDIS_URL: {0}")]
    Url(#[source] redis::RedisError),
    /// The CA file cannot be used; the message names the setting and path.
    #[error("{0}")]
    Tls(String),
}

/// The clients of `settings.mode`: over TLS trusting the CA file when one
/// is set (read now: a missing or unreadable one stops the start).
fn open_backend(settings: &RedisSettings, replicas: bool) -> Result<Backend, RedisConfigError> {
    let pem = settings.ca_pem().map_err(RedisConfigError::Tls)?;
    Backend::open(settings, pem, replicas).map_err(RedisConfigError::Url)
}

/// Whether `url` asks for TLS.
fn is_tls_url(url: &str) -> bool {
    url.trim_start().to_ascii_lowercase().starts_with("rediss://")
}

/// Which Redis a client talks to: its metric names and log label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// `redis.url` (or the sentinels' primary, or the cluster).
    Local,
    /// The remote Redis of `[redis.remote]`.
    Remote,
    /// The sentinels' replicas, for cache reads (`read_from_replicas`).
    Replica,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Self::Local => "local",
            Self::Remote => "remote",
            Self::Replica => "replica",
        }
    }
}

/// Pool replacements after lost connections are at most this frequent.
const POOL_REFRESH_INTERVAL: Duration = Duration::from_millis(500);

/// The one Redis connection of the process.
pub struct RedisClient {
    /// Where connections come from in `redis.mode` (the pool's, and those
    /// outside it: probes and pub/sub subscriptions).
    backend: Arc<Backend>,
    /// Swapped for a fresh pool when the breaker closes: connections of a
    /// Redis that went away stay broken and the manager never discards them.
    pool: RwLock<Pool<Manager>>,
    breaker: Breaker,
    settings: RedisSettings,
    /// When the pool was last replaced (ms since `created`), to rate-limit it.
    pool_refreshed_at_ms: AtomicU64,
    created: Instant,
    /// Whether our own runtime is starved (timeouts then say nothing of Redis).
    busy: Arc<busy::Busy>,
    /// Local, remote or replicas: its own metric names.
    role: Role,
}

impl RedisClient {
    /// Builds the client without connecting: the server starts while Redis is
    /// down (but not with a CA file it cannot read).
    pub fn new(settings: &RedisSettings) -> Result<Arc<Self>, RedisConfigError> {
        Self::build(settings, Role::Local, busy::Busy::start())
    }

    /// The client of the remote Redis (`[redis.remote]`) beside this one:
    /// the same client, its failures and breaker exported under
    /// `analytics_cache_remote_*`. Both run on one runtime, so they share
    /// one starvation ticker.
    pub fn remote(&self, settings: &RedisSettings) -> Result<Arc<Self>, RedisConfigError> {
        Self::build(settings, Role::Remote, Arc::clone(&self.busy))
    }

    /// A client of the replicas the sentinels name (sentinel mode with
    /// `read_from_replicas`) of this client's settings, for cache reads:
    /// each pooled connection goes to a random replica; its failures and
    /// breaker are exported under `analytics_redis_replica_*`.
    pub fn replicas(&self) -> Result<Arc<Self>, RedisConfigError> {
        Self::build(&self.settings, Role::Replica, Arc::clone(&self.busy))
    }

    fn build(settings: &RedisSettings, role: Role, busy: Arc<busy::Busy>) -> Result<Arc<Self>, RedisConfigError> {
        crate::tls::install_crypto_provider();
        let backend = Arc::new(open_backend(settings, role == Role::Replica)?);
        let pool = build_pool(&backend, settings);
        let client = Arc::new(Self {
            backend,
            pool: RwLock::new(pool),
            breaker: Breaker::new(
                settings.breaker_failure_threshold,
                Duration::from_millis(settings.breaker_window_ms),
            ),
            settings: settings.clone(),
            pool_refreshed_at_ms: AtomicU64::new(0),
            created: Instant::now(),
            busy,
            role,
        });
        // Export the breaker state from the start, not only after a first trip.
        client.set_breaker_gauge(false);
        Ok(client)
    }

    /// `analytics_cache_breaker_open` (or the remote's, or the replicas') to 1 or 0.
    fn set_breaker_gauge(&self, open: bool) {
        let value = if open { 1.0 } else { 0.0 };
        match self.role {
            Role::Local => metrics::gauge!("analytics_cache_breaker_open").set(value),
            Role::Remote => metrics::gauge!("analytics_cache_remote_breaker_open").set(value),
            Role::Replica => metrics::gauge!("analytics_redis_replica_breaker_open").set(value),
        }
    }

    /// `local`, `remote` or `replica`, for logs.
    fn role(&self) -> &'static str {
        self.role.as_str()
    }

    pub fn breaker(&self) -> &Breaker {
        &self.breaker
    }

    /// The starvation signal (tests mark it to show its effect).
    pub fn busy(&self) -> &busy::Busy {
        &self.busy
    }

    /// Whether Redis is a cluster (multi-key commands then need one slot).
    pub fn is_cluster(&self) -> bool {
        self.backend.is_cluster()
    }

    fn current_pool(&self) -> Pool<Manager> {
        match self.pool.read() {
            Ok(pool) => pool.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Runs `op` on a pooled connection within `limit`, behind the breaker.
    /// Failures feed the breaker and are counted under `caller`.
    async fn run<T, F, Fut>(
        self: &Arc<Self>,
        caller: RedisCaller,
        limit: Duration,
        op: F,
    ) -> Result<T, RedisUnavailable>
    where
        F: FnOnce(RedisConnection) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        if self.breaker.is_open() {
            return Err(RedisUnavailable::BreakerOpen);
        }
        // The starvation ticker runs while commands do (see `busy`).
        self.busy.touch();
        let pool = self.current_pool();
        let attempt = tokio::time::timeout(limit, async {
            let connection = pool.get().await.map_err(|e| match e {
                bb8::RunError::User(error) => RedisUnavailable::from_redis(error),
                bb8::RunError::TimedOut => {
                    RedisUnavailable::Connection("no connection within the connect timeout".into())
                }
            })?;
            // Multiplexed and cluster connections are cheap clones of a
            // shared one; cloning lets `op` own it without holding the pool
            // guard across awaits.
            let owned: RedisConnection = (*connection).clone();
            drop(connection);
            op(owned).await.map_err(RedisUnavailable::from_redis)
        })
        .await;
        let result = attempt.unwrap_or(Err(RedisUnavailable::Timeout));
        match &result {
            Ok(_) => self.breaker.record_success(),
            Err(error) => self.on_failure(caller, error),
        }
        result
    }

    fn on_failure(self: &Arc<Self>, caller: RedisCaller, error: &RedisUnavailable) {
        let timeout = matches!(error, RedisUnavailable::Timeout);
        // A timeout while our own runtime runs late is our CPU, not Redis.
        let busy = timeout && self.busy.is_busy();
        let kind = match (timeout, busy) {
            (true, true) => "timeout_busy",
            (true, false) => "timeout",
            (false, _) => "error",
        };
        match self.role {
            Role::Local => {
                metrics::counter!("analytics_redis_errors_total", "caller" => caller.as_str(), "kind" => kind)
                    .increment(1);
            }
            Role::Remote => metrics::counter!("analytics_cache_remote_errors_total", "kind" => kind).increment(1),
            Role::Replica => metrics::counter!("analytics_redis_replica_errors_total", "kind" => kind).increment(1),
        }
        if busy {
            tracing::debug!(
                caller = caller.as_str(),
                "redis command timed out while this process was starved of CPU; not counted against redis"
            );
            return;
        }
        if matches!(error, RedisUnavailable::Connection(_)) {
            self.refresh_pool();
        }
        if self.breaker.record_failure() == Transition::Opened {
            self.set_breaker_gauge(true);
            if self.role == Role::Local {
                metrics::counter!("analytics_redis_breaker_opened_total").increment(1);
            }
            tracing::warn!(%error, caller = caller.as_str(), redis = self.role(), "redis failing; circuit breaker opened, serving from the other tiers and the database");
            let client = Arc::clone(self);
            tokio::spawn(async move { client.probe_until_healthy().await });
        } else {
            tracing::debug!(%error, caller = caller.as_str(), "redis command failed");
        }
    }

    /// Replaces the pool (its connections may all be dead after a Redis
    /// restart), at most once per [`POOL_REFRESH_INTERVAL`].
    fn refresh_pool(&self) {
        let now = u64::try_from(self.created.elapsed().as_millis()).unwrap_or(u64::MAX);
        let last = self.pool_refreshed_at_ms.load(Ordering::Acquire);
        let due = last == 0 || now.saturating_sub(last) >= POOL_REFRESH_INTERVAL.as_millis() as u64;
        if due
            && self
                .pool_refreshed_at_ms
                .compare_exchange(last, now.max(1), Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            self.swap_pool();
            tracing::debug!("redis connection lost; pool replaced");
        }
    }

    fn swap_pool(&self) {
        let fresh = build_pool(&self.backend, &self.settings);
        match self.pool.write() {
            Ok(mut pool) => *pool = fresh,
            Err(poisoned) => *poisoned.into_inner() = fresh,
        }
    }

    /// While the breaker is open: PING on a fresh connection every interval;
    /// on the first answer, swap in a new pool and close the breaker.
    async fn probe_until_healthy(self: Arc<Self>) {
        let interval = Duration::from_millis(self.settings.breaker_probe_interval_ms.max(10));
        loop {
            tokio::time::sleep(interval).await;
            if self.ping_fresh().await.is_ok() {
                self.swap_pool();
                self.breaker.close();
                self.set_breaker_gauge(false);
                tracing::info!(redis = self.role(), "redis reachable again; circuit breaker closed");
                return;
            }
        }
    }

    /// The bound on opening a connection outside the pool and getting a first answer.
    fn fresh_connection_limit(&self) -> Duration {
        Duration::from_millis(self.settings.connect_timeout_ms + self.settings.command_timeout_ms.max(100))
    }

    /// `host:port` of the configured Redis (or its sentinels or cluster
    /// nodes), for messages (never the password).
    pub fn address(&self) -> String {
        self.backend.describe(&self.settings)
    }

    /// Says once, at start, whether Redis answers, naming where it was
    /// looked for: an unreachable Redis otherwise shows only when the
    /// breaker opens on the first requests.
    pub fn report_at_start(self: &Arc<Self>) {
        let client = Arc::clone(self);
        tokio::spawn(async move {
            match client.ping_fresh().await {
                Ok(latency) => {
                    tracing::info!(redis = %client.address(), role = client.role(), ?latency, "redis answers")
                }
                Err(error) if client.role == Role::Replica => tracing::warn!(
                    redis = %client.address(),
                    %error,
                    "no redis replica answers; cache reads go to the primary until one does"
                ),
                Err(error) => tracing::warn!(
                    redis = %client.address(),
                    role = client.role(),
                    %error,
                    "redis does not answer (REDIS_URL); serving from L1 and the database until it does"
                ),
            }
        });
    }

    /// PING over a new connection (not the pool), bounded by connect + command timeouts.
    pub async fn ping_fresh(&self) -> Result<Duration, RedisUnavailable> {
        let started = Instant::now();
        let limit = self.fresh_connection_limit();
        tokio::time::timeout(limit, async {
            let mut connection = self.backend.connect().await.map_err(|e| self.connect_error(e))?;
            redis::cmd("PING")
                .query_async::<String>(&mut connection)
                .await
                .map_err(|e| RedisUnavailable::Command(e.to_string()))
        })
        .await
        .unwrap_or(Err(RedisUnavailable::Timeout))?;
        Ok(started.elapsed())
    }

    /// A failure to open a connection; a failed TLS handshake names the
    /// server and, for a certificate it did not trust, the setting to fix.
    fn connect_error(&self, error: redis::RedisError) -> RedisUnavailable {
        match crate::tls::handshake_failure(&error) {
            Some(failure) if failure.certificate => RedisUnavailable::Command(format!(
                "TLS handshake with {} failed: {failure}; {REDIS_CA_SETTING} must name the CA file that signed it \
                 (public CAs are trusted without it)",
                self.address()
            )),
            Some(failure) => {
                RedisUnavailable::Command(format!("TLS handshake with {} failed: {failure}", self.address()))
            }
            None => RedisUnavailable::Command(error.to_string()),
        }
    }

    /// Runs `op` within the hot-path command timeout, behind the breaker
    /// (for commands this client has no method for, like a Lua script).
    pub async fn run_hot<T, F, Fut>(self: &Arc<Self>, caller: RedisCaller, op: F) -> Result<T, RedisUnavailable>
    where
        F: FnOnce(RedisConnection) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        self.run(caller, self.command_timeout(), op).await
    }

    /// Runs `op` within the admin timeout (2 s), behind the breaker: for
    /// background work that may send many commands (counter bumps).
    pub async fn run_admin<T, F, Fut>(self: &Arc<Self>, caller: RedisCaller, op: F) -> Result<T, RedisUnavailable>
    where
        F: FnOnce(RedisConnection) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        self.run(caller, ADMIN_COMMAND_TIMEOUT, op).await
    }

    /// PUBLISH `message` on `channel`.
    pub async fn publish(
        self: &Arc<Self>,
        caller: RedisCaller,
        channel: &str,
        message: String,
    ) -> Result<(), RedisUnavailable> {
        let channel = channel.to_owned();
        self.run(caller, ADMIN_COMMAND_TIMEOUT, |mut c| async move {
            redis::cmd("PUBLISH")
                .arg(channel)
                .arg(message)
                .query_async::<()>(&mut c)
                .await
        })
        .await
    }

    /// A dedicated subscription to `channel` (not pooled: a subscribed
    /// connection can do nothing else), within the connect timeout.
    pub async fn subscribe(&self, channel: &str) -> Result<redis::aio::PubSub, RedisUnavailable> {
        let limit = self.fresh_connection_limit();
        tokio::time::timeout(limit, async {
            let mut pubsub = self.backend.pubsub().await.map_err(|e| self.connect_error(e))?;
            pubsub
                .subscribe(channel)
                .await
                .map_err(|e| RedisUnavailable::Command(e.to_string()))?;
            Ok(pubsub)
        })
        .await
        .unwrap_or(Err(RedisUnavailable::Timeout))
    }

    fn command_timeout(&self) -> Duration {
        Duration::from_millis(self.settings.command_timeout_ms)
    }

    /// GET within the hot-path timeout; `Ok(None)` on a miss.
    pub async fn get(self: &Arc<Self>, caller: RedisCaller, key: &str) -> Result<Option<Vec<u8>>, RedisUnavailable> {
        let key = key.to_owned();
        self.run(caller, self.command_timeout(), |mut c| async move {
            redis::cmd("GET").arg(key).query_async::<Option<Vec<u8>>>(&mut c).await
        })
        .await
    }

    /// SET with EX (at least 1 s) within the hot-path timeout.
    pub async fn set_ex(
        self: &Arc<Self>,
        caller: RedisCaller,
        key: &str,
        value: Vec<u8>,
        ttl_seconds: u64,
    ) -> Result<(), RedisUnavailable> {
        let key = key.to_owned();
        self.run(caller, self.command_timeout(), |mut c| async move {
            redis::cmd("SET")
                .arg(key)
                .arg(value)
                .arg("EX")
                .arg(ttl_seconds.max(1))
                .query_async::<()>(&mut c)
                .await
        })
        .await
    }

    /// UNLINK keys; returns how many existed.
    pub async fn unlink(self: &Arc<Self>, caller: RedisCaller, keys: Vec<String>) -> Result<u64, RedisUnavailable> {
        if keys.is_empty() {
            return Ok(0);
        }
        self.run(caller, ADMIN_COMMAND_TIMEOUT, |mut c| async move {
            redis::cmd("UNLINK").arg(keys).query_async::<u64>(&mut c).await
        })
        .await
    }

    /// The servers a keyspace-wide command (SCAN, INFO) must visit: every
    /// primary of a cluster that serves slots, or (`None`) the one server.
    async fn keyspace_nodes(self: &Arc<Self>, caller: RedisCaller) -> Result<Vec<Option<String>>, RedisUnavailable> {
        if !self.is_cluster() {
            return Ok(vec![None]);
        }
        let nodes: String = self
            .run(caller, ADMIN_COMMAND_TIMEOUT, |mut c| async move {
                redis::cmd("CLUSTER").arg("NODES").query_async(&mut c).await
            })
            .await?;
        let primaries = topology::primaries_with_slots(&nodes);
        if primaries.is_empty() {
            return Err(RedisUnavailable::Command("no cluster primary serves slots".into()));
        }
        Ok(primaries.into_iter().map(Some).collect())
    }

    /// One SCAN step on `node` (a cluster primary, or the one server): the
    /// next cursor and a page of keys matching `pattern`.
    async fn scan_page(
        self: &Arc<Self>,
        caller: RedisCaller,
        node: Option<String>,
        cursor: u64,
        pattern: &str,
        count: usize,
    ) -> Result<(u64, Vec<String>), RedisUnavailable> {
        let mut scan = redis::cmd("SCAN");
        scan.arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(count.max(1));
        self.run(caller, ADMIN_COMMAND_TIMEOUT, |mut c| async move {
            c.query_on(node.as_deref(), scan).await
        })
        .await
    }

    /// SCAN + UNLINK in batches (never KEYS, which blocks Redis) for keys
    /// matching `pattern`, on every primary of a cluster; returns how many
    /// were deleted.
    pub async fn delete_matching(
        self: &Arc<Self>,
        caller: RedisCaller,
        pattern: &str,
        batch: usize,
    ) -> Result<u64, RedisUnavailable> {
        let mut deleted = 0;
        for node in self.keyspace_nodes(caller).await? {
            let mut cursor = 0;
            loop {
                let (next, keys) = self.scan_page(caller, node.clone(), cursor, pattern, batch).await?;
                deleted += self.unlink(caller, keys).await?;
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        Ok(deleted)
    }

    /// Counts keys matching `pattern` with SCAN (on every primary of a
    /// cluster), stopping at `limit`.
    pub async fn count_matching(
        self: &Arc<Self>,
        caller: RedisCaller,
        pattern: &str,
        limit: u64,
    ) -> Result<u64, RedisUnavailable> {
        let mut count = 0;
        for node in self.keyspace_nodes(caller).await? {
            let mut cursor = 0;
            loop {
                let (next, keys) = self.scan_page(caller, node.clone(), cursor, pattern, 1000).await?;
                count += keys.len() as u64;
                if count >= limit {
                    return Ok(limit);
                }
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        Ok(count)
    }

    /// The INFO fields `/cache/stats` reports, plus DBSIZE (summed over the
    /// primaries of a cluster).
    pub async fn info(self: &Arc<Self>, caller: RedisCaller) -> Result<RedisInfo, RedisUnavailable> {
        let mut answers = Vec::new();
        for node in self.keyspace_nodes(caller).await? {
            let answer: (String, u64) = self
                .run(caller, ADMIN_COMMAND_TIMEOUT, |mut c| async move {
                    let info: String = c.query_on(node.as_deref(), redis::cmd("INFO")).await?;
                    let keys: u64 = c.query_on(node.as_deref(), redis::cmd("DBSIZE")).await?;
                    Ok((info, keys))
                })
                .await?;
            answers.push(answer);
        }
        Ok(RedisInfo::combine(&answers))
    }
}

fn build_pool(backend: &Arc<Backend>, settings: &RedisSettings) -> Pool<Manager> {
    Pool::builder()
        .max_size(settings.pool_size.max(1))
        .connection_timeout(Duration::from_millis(settings.connect_timeout_ms))
        // No PING on checkout: it would double the round trips of every hit.
        .test_on_check_out(false)
        .retry_connection(false)
        .build_unchecked(Manager(Arc::clone(backend)))
}
