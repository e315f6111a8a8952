//! Redis as L2: every command is bounded by a timeout and guarded by the
//! circuit breaker; failures are counted and logged, never returned to a
//! request.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use bb8::Pool;
use bb8_redis::RedisConnectionManager;
use redis::aio::MultiplexedConnection;

use super::breaker::{Breaker, Transition};
use super::stats::CacheStats;
use crate::config::RedisSettings;

/// Admin commands (SCAN, INFO) may take longer than hot-path GETs.
const ADMIN_COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

/// Why an admin operation could not reach Redis.
#[derive(Debug, thiserror::Error)]
pub enum RedisUnavailable {
    #[error("redis is disabled in the configuration")]
    Disabled,
    #[error("redis is unreachable (circuit breaker open)")]
    BreakerOpen,
    #[error("redis command timed out")]
    Timeout,
    #[error("redis error: {0}")]
    Command(String),
}

pub struct RedisStore {
    manager: RedisConnectionManager,
    /// Swapped for a fresh pool when the breaker closes: connections of a
    /// Redis that went away stay broken and bb8-redis never discards them.
    pool: RwLock<Pool<RedisConnectionManager>>,
    breaker: Breaker,
    settings: RedisSettings,
    stats: Arc<CacheStats>,
}

impl RedisStore {
    pub fn new(settings: &RedisSettings, stats: Arc<CacheStats>) -> Result<Arc<Self>, redis::RedisError> {
        let manager = RedisConnectionManager::new(settings.url.expose())?;
        let pool = build_pool(&manager, settings);
        Ok(Arc::new(Self {
            manager,
            pool: RwLock::new(pool),
            breaker: Breaker::new(settings.breaker_failure_threshold),
            settings: settings.clone(),
            stats,
        }))
    }

    pub fn breaker(&self) -> &Breaker {
        &self.breaker
    }

    fn current_pool(&self) -> Pool<RedisConnectionManager> {
        match self.pool.read() {
            Ok(pool) => pool.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Runs `op` on a pooled connection within `limit`. `None` when the
    /// breaker is open or the command failed; failures feed the breaker.
    async fn run<T, F, Fut>(self: &Arc<Self>, limit: Duration, op: F) -> Result<T, RedisUnavailable>
    where
        F: FnOnce(MultiplexedConnection) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        if self.breaker.is_open() {
            return Err(RedisUnavailable::BreakerOpen);
        }
        let pool = self.current_pool();
        let attempt = tokio::time::timeout(limit, async {
            let connection = pool.get().await.map_err(|e| RedisUnavailable::Command(e.to_string()))?;
            // Multiplexed connections are cheap clones of one socket; cloning
            // lets `op` own it without holding the pool guard across awaits.
            let owned: MultiplexedConnection = (*connection).clone();
            drop(connection);
            op(owned).await.map_err(|e| RedisUnavailable::Command(e.to_string()))
        })
        .await;
        let result = attempt.unwrap_or(Err(RedisUnavailable::Timeout));
        match &result {
            Ok(_) => self.breaker.record_success(),
            Err(error) => self.on_failure(error),
        }
        result
    }

    fn on_failure(self: &Arc<Self>, error: &RedisUnavailable) {
        self.stats
            .record_redis_error(matches!(error, RedisUnavailable::Timeout));
        if self.breaker.record_failure() == Transition::Opened {
            metrics::gauge!("analytics_cache_breaker_open").set(1.0);
            tracing::warn!(%error, "redis failing; cache circuit breaker opened, serving from L1 and the database");
            let store = Arc::clone(self);
            tokio::spawn(async move { store.probe_until_healthy().await });
        } else {
            tracing::debug!(%error, "redis command failed");
        }
    }

    /// While the breaker is open: PING on a fresh connection every interval;
    /// on the first answer, swap in a new pool and close the breaker.
    async fn probe_until_healthy(self: Arc<Self>) {
        let interval = Duration::from_millis(self.settings.breaker_probe_interval_ms.max(10));
        loop {
            tokio::time::sleep(interval).await;
            if self.ping_fresh().await.is_ok() {
                let fresh = build_pool(&self.manager, &self.settings);
                match self.pool.write() {
                    Ok(mut pool) => *pool = fresh,
                    Err(poisoned) => *poisoned.into_inner() = fresh,
                }
                self.breaker.close();
                metrics::gauge!("analytics_cache_breaker_open").set(0.0);
                tracing::info!("redis reachable again; cache circuit breaker closed");
                return;
            }
        }
    }

    /// PING over a new connection (not the pool), bounded by connect + command timeouts.
    pub async fn ping_fresh(&self) -> Result<Duration, RedisUnavailable> {
        use bb8::ManageConnection;
        let started = Instant::now();
        let limit = Duration::from_millis(self.settings.connect_timeout_ms + self.settings.command_timeout_ms.max(100));
        tokio::time::timeout(limit, async {
            let mut connection = self
                .manager
                .connect()
                .await
                .map_err(|e| RedisUnavailable::Command(e.to_string()))?;
            redis::cmd("PING")
                .query_async::<String>(&mut connection)
                .await
                .map_err(|e| RedisUnavailable::Command(e.to_string()))
        })
        .await
        .unwrap_or(Err(RedisUnavailable::Timeout))?;
        Ok(started.elapsed())
    }

    /// Runs `op` within the hot-path command timeout, behind the breaker
    /// (for other modules' commands, like the rate limiter's script).
    pub async fn run_hot<T, F, Fut>(self: &Arc<Self>, op: F) -> Result<T, RedisUnavailable>
    where
        F: FnOnce(MultiplexedConnection) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        self.run(self.command_timeout(), op).await
    }

    fn command_timeout(&self) -> Duration {
        Duration::from_millis(self.settings.command_timeout_ms)
    }

    /// GET; `None` on a miss, an open breaker or any failure.
    pub async fn get(self: &Arc<Self>, key: &str) -> Option<Vec<u8>> {
        let key = key.to_owned();
        self.run(self.command_timeout(), |mut c| async move {
            redis::cmd("GET").arg(key).query_async::<Option<Vec<u8>>>(&mut c).await
        })
        .await
        .ok()
        .flatten()
    }

    /// SET with EX; returns whether it was stored.
    pub async fn set(self: &Arc<Self>, key: &str, value: Vec<u8>, ttl_seconds: u64) -> bool {
        let key = key.to_owned();
        self.run(self.command_timeout(), |mut c| async move {
            redis::cmd("SET")
                .arg(key)
                .arg(value)
                .arg("EX")
                .arg(ttl_seconds.max(1))
                .query_async::<()>(&mut c)
                .await
        })
        .await
        .is_ok()
    }

    /// UNLINK keys; returns how many existed.
    pub async fn unlink(self: &Arc<Self>, keys: Vec<String>) -> Result<u64, RedisUnavailable> {
        if keys.is_empty() {
            return Ok(0);
        }
        self.run(ADMIN_COMMAND_TIMEOUT, |mut c| async move {
            redis::cmd("UNLINK").arg(keys).query_async::<u64>(&mut c).await
        })
        .await
    }

    /// One SCAN step: the next cursor and a page of keys matching `pattern`.
    async fn scan_page(
        self: &Arc<Self>,
        cursor: u64,
        pattern: &str,
        count: usize,
    ) -> Result<(u64, Vec<String>), RedisUnavailable> {
        let pattern = pattern.to_owned();
        self.run(ADMIN_COMMAND_TIMEOUT, |mut c| async move {
            redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(pattern)
                .arg("COUNT")
                .arg(count.max(1))
                .query_async(&mut c)
                .await
        })
        .await
    }

    /// SCAN + UNLINK in batches (never KEYS, which blocks Redis) for keys
    /// matching `pattern`; returns how many were deleted.
    pub async fn delete_matching(self: &Arc<Self>, pattern: &str, batch: usize) -> Result<u64, RedisUnavailable> {
        let (mut cursor, mut deleted) = (0, 0);
        loop {
            let (next, keys) = self.scan_page(cursor, pattern, batch).await?;
            deleted += self.unlink(keys).await?;
            if next == 0 {
                return Ok(deleted);
            }
            cursor = next;
        }
    }

    /// Counts keys matching `pattern` with SCAN, stopping at `limit`.
    pub async fn count_matching(self: &Arc<Self>, pattern: &str, limit: u64) -> Result<u64, RedisUnavailable> {
        let (mut cursor, mut count) = (0, 0);
        loop {
            let (next, keys) = self.scan_page(cursor, pattern, 1000).await?;
            count += keys.len() as u64;
            if next == 0 || count >= limit {
                return Ok(count.min(limit));
            }
            cursor = next;
        }
    }

    /// The INFO fields `/cache/stats` reports, plus DBSIZE.
    pub async fn info(self: &Arc<Self>) -> Result<RedisInfo, RedisUnavailable> {
        let (info, keys): (String, u64) = self
            .run(ADMIN_COMMAND_TIMEOUT, |mut c| async move {
                redis::pipe().cmd("INFO").cmd("DBSIZE").query_async(&mut c).await
            })
            .await?;
        Ok(RedisInfo::parse(&info, keys))
    }

    /// TTL of a key in seconds (-2 missing, -1 no expiry); used by tests and stats.
    pub async fn ttl(self: &Arc<Self>, key: &str) -> Result<i64, RedisUnavailable> {
        let key = key.to_owned();
        self.run(ADMIN_COMMAND_TIMEOUT, |mut c| async move {
            redis::cmd("TTL").arg(key).query_async(&mut c).await
        })
        .await
    }
}

fn build_pool(manager: &RedisConnectionManager, settings: &RedisSettings) -> Pool<RedisConnectionManager> {
    Pool::builder()
        .max_size(settings.pool_size.max(1))
        .connection_timeout(Duration::from_millis(settings.connect_timeout_ms))
        // No PING on checkout: it would double the round trips of every hit.
        .test_on_check_out(false)
        .retry_connection(false)
        .build_unchecked(manager.clone())
}

/// The subset of Redis INFO that operators read at 3 a.m.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RedisInfo {
    pub memory_used_mb: f64,
    pub total_keys: u64,
    /// Redis' own keyspace hit rate (all clients of this Redis).
    pub hit_rate: f64,
    pub connected_clients: u64,
    pub uptime_seconds: u64,
    pub version: String,
}

impl RedisInfo {
    fn parse(info: &str, total_keys: u64) -> Self {
        let field = |name: &str| {
            info.lines()
                .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
                .map(str::trim)
                .unwrap_or_default()
                .to_owned()
        };
        let number = |name: &str| field(name).parse::<u64>().unwrap_or_default();
        let hits = number("keyspace_hits");
        let misses = number("keyspace_misses");
        Self {
            memory_used_mb: ((number("used_memory") as f64 / 1_048_576.0) * 100.0).round() / 100.0,
            total_keys,
            hit_rate: if hits + misses == 0 {
                0.0
            } else {
                ((hits as f64 / (hits + misses) as f64) * 1e4).round() / 1e4
            },
            connected_clients: number("connected_clients"),
            uptime_seconds: number("uptime_in_seconds"),
            version: field("redis_version"),
        }
    }
}
