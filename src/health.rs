//! Health of the dependencies, as `/health`, `/health/ready`, `/status.json`
//! and `/metrics` report it: the database (a round trip on the pool) and the
//! cache's Redis (a PING on a fresh connection, skipped while the breaker is
//! open because its probe is already pinging). Both answer at once while
//! their breaker is open, so health checks never wait on a dead dependency.

use std::sync::Arc;
use std::time::Duration;

use crate::db::replica::{ReplicaHealth, Replicas};
use crate::db::{Database, DbError};
use crate::redis::RedisClient;
use serde::Serialize;

#[derive(Serialize, utoipa::ToSchema)]
pub struct ComponentHealth {
    /// `up` or `down`.
    pub status: &'static str,
    pub latency_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl ComponentHealth {
    pub fn is_up(&self) -> bool {
        self.status == "up"
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct CacheHealth {
    /// Redis `up`, `down` or `disabled`.
    pub redis: &'static str,
    /// Circuit breaker `closed`, `open` or `disabled`.
    pub breaker: &'static str,
    pub latency_ms: Option<f64>,
    pub l1_enabled: bool,
    /// The remote Redis of `[redis.remote]`, when one is configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote: Option<RemoteHealth>,
    /// The replicas the cache reads (sentinel `read_from_replicas`), when
    /// configured: `down` means no replica answers and reads go to the primary.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replicas: Option<RemoteHealth>,
}

/// A Redis the cache reads besides its own: the remote one
/// (`[redis.remote]`) or the sentinels' replicas.
#[derive(Serialize, utoipa::ToSchema)]
pub struct RemoteHealth {
    /// `up` or `down`.
    pub redis: &'static str,
    /// Its own circuit breaker: `closed` or `open`.
    pub breaker: &'static str,
    pub latency_ms: Option<f64>,
}

/// Checks the dependencies the server answers from.
pub struct HealthChecker {
    db: Database,
    /// The read replicas (`[databases.<name>]`), as their probes saw them.
    replicas: Arc<Replicas>,
    /// The Redis the cache reads, `None` when the cache or Redis is disabled.
    cache_redis: Option<Arc<RedisClient>>,
    /// The remote Redis of `[redis.remote]`, when configured.
    cache_remote: Option<Arc<RedisClient>>,
    /// The sentinels' replicas the cache reads, when configured.
    cache_replicas: Option<Arc<RedisClient>>,
    l1_enabled: bool,
}

/// A PING on a fresh connection, skipped while the breaker is open.
async fn ping(redis: &Arc<RedisClient>) -> Option<Duration> {
    if redis.breaker().is_open() {
        None
    } else {
        redis.ping_fresh().await.ok()
    }
}

/// The health of a Redis the cache reads besides its own, when configured.
async fn other_redis(redis: Option<&Arc<RedisClient>>) -> Option<RemoteHealth> {
    let redis = redis?;
    let ping = ping(redis).await;
    Some(RemoteHealth {
        redis: if ping.is_some() { "up" } else { "down" },
        breaker: redis.breaker().state_name(),
        latency_ms: ping.map(millis),
    })
}

fn millis(duration: Duration) -> f64 {
    (duration.as_secs_f64() * 1e6).round() / 1e3
}

impl HealthChecker {
    pub fn new(
        (db, replicas): (Database, Arc<Replicas>),
        cache_redis: Option<Arc<RedisClient>>,
        l1_enabled: bool,
    ) -> Self {
        Self {
            db,
            replicas,
            cache_redis,
            cache_remote: None,
            cache_replicas: None,
            l1_enabled,
        }
    }

    /// Adds the remote Redis of `[redis.remote]` to the cache's health.
    pub fn with_remote(mut self, remote: Option<Arc<RedisClient>>) -> Self {
        self.cache_remote = remote;
        self
    }

    /// Adds the sentinels' replicas the cache reads to the cache's health.
    pub fn with_replicas(mut self, replicas: Option<Arc<RedisClient>>) -> Self {
        self.cache_replicas = replicas;
        self
    }

    pub async fn database(&self) -> ComponentHealth {
        match self.db.ping().await {
            Ok(latency) => ComponentHealth {
                status: "up",
                latency_ms: Some(millis(latency)),
                error: None,
            },
            Err(error) => ComponentHealth {
                status: "down",
                latency_ms: None,
                error: Some(
                    match error {
                        DbError::Timeout => "timeout",
                        DbError::Unavailable(_) => "unavailable",
                        DbError::Overloaded(_) => "overloaded",
                        DbError::Query(_) | DbError::InvalidValue(_) | DbError::Model(_) => "query failed",
                    }
                    .into(),
                ),
            },
        }
    }

    /// Each read replica's state, by name (no I/O: the probes' last word).
    pub fn replicas(&self) -> std::collections::BTreeMap<String, ReplicaHealth> {
        self.replicas.health()
    }

    pub async fn cache(&self) -> CacheHealth {
        let Some(redis) = &self.cache_redis else {
            return CacheHealth {
                redis: "disabled",
                breaker: "disabled",
                latency_ms: None,
                l1_enabled: self.l1_enabled,
                remote: None,
                replicas: None,
            };
        };
        let (ping, remote, replicas) = tokio::join!(
            ping(redis),
            other_redis(self.cache_remote.as_ref()),
            other_redis(self.cache_replicas.as_ref())
        );
        CacheHealth {
            redis: if ping.is_some() { "up" } else { "down" },
            breaker: redis.breaker().state_name(),
            latency_ms: ping.map(millis),
            l1_enabled: self.l1_enabled,
            remote,
            replicas,
        }
    }

    /// Exports the database pool's idle and in-use connections as gauges.
    pub fn record_pool_gauges(&self) {
        let pool = self.db.pool();
        let idle = pool.num_idle() as f64;
        metrics::gauge!("analytics_db_pool_connections", "state" => "idle").set(idle);
        metrics::gauge!("analytics_db_pool_connections", "state" => "in_use").set(f64::from(pool.size()) - idle);
    }
}
