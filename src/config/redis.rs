//! `[redis]`: the shared L2 cache's Redis in each deployment shape
//! (standalone, sentinel, cluster), its timeouts and breaker, TLS, and the
//! optional remote Redis of `[redis.remote]`.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::checks::{self, REDIS_CA_SETTING};
use super::Secret;

/// Redis, the shared L2 cache. Everything here bounds how long Redis may slow
/// a request: the cache is an optimisation and must never fail one.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisSettings {
    /// Connection URL; may carry a password, so it is never logged.
    pub url: Secret,
    /// Turn L2 off entirely (L1 and the database still serve).
    pub enabled: bool,
    /// Pooled multiplexed connections.
    pub pool_size: u32,
    /// Deadline for opening a connection.
    pub connect_timeout_ms: u64,
    /// Deadline for any single Redis command on the request path.
    pub command_timeout_ms: u64,
    /// Failures or timeouts that open the circuit breaker, when they are at
    /// least half of the commands ...
    pub breaker_failure_threshold: u32,
    /// ... within this window (so a CPU-starved process, which sees a few
    /// timeouts among many answers, does not read Redis as down).
    pub breaker_window_ms: u64,
    /// How often the background probe PINGs Redis while the breaker is open.
    pub breaker_probe_interval_ms: u64,
    /// PEM file of the CA that signed a `rediss://` server's certificate (a
    /// managed Redis with a private CA); unset, the Mozilla roots are trusted.
    /// A relative path is read from the config directory.
    pub tls_ca_file: Option<PathBuf>,
    /// How Redis is deployed: one server (`url`), a primary found through
    /// Sentinel, or a Redis Cluster.
    pub mode: RedisMode,
    /// Used when `mode = "sentinel"`.
    pub sentinel: RedisSentinelSettings,
    /// Used when `mode = "cluster"`.
    pub cluster: RedisClusterSettings,
    /// A second, remote Redis (`[redis.remote]`, env `APP__REDIS__REMOTE__URL`):
    /// written too, read on a local miss or while the local one is down.
    /// Unset (or an empty `url`): off.
    pub remote: Option<RemoteRedisSettings>,
}

/// `[redis.remote]`: a managed Redis farther away (tens of ms), written
/// beside the local one off the request path and read when the local one
/// misses or is down. Its own timeouts and circuit breaker; one server
/// (standalone) reached at `url` (`rediss://` for TLS).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RemoteRedisSettings {
    pub url: Secret,
    pub pool_size: u32,
    pub connect_timeout_ms: u64,
    pub command_timeout_ms: u64,
    pub breaker_failure_threshold: u32,
    pub breaker_window_ms: u64,
    pub breaker_probe_interval_ms: u64,
    /// PEM file of the CA of a `rediss://` remote with a private CA.
    pub tls_ca_file: Option<PathBuf>,
    /// Writes to the remote waiting for an answer at most; beyond this,
    /// writes are dropped (and counted) rather than queued.
    pub max_pending_writes: usize,
}

impl Default for RemoteRedisSettings {
    fn default() -> Self {
        Self {
            url: Secret::new(""),
            pool_size: 8,
            connect_timeout_ms: 500,
            command_timeout_ms: 250,
            breaker_failure_threshold: 3,
            breaker_window_ms: 2_000,
            breaker_probe_interval_ms: 1_000,
            tls_ca_file: None,
            max_pending_writes: 1_000,
        }
    }
}

impl RemoteRedisSettings {
    /// The remote as a standalone [`RedisSettings`], for its own client.
    pub fn as_redis(&self) -> RedisSettings {
        RedisSettings {
            url: self.url.clone(),
            enabled: true,
            pool_size: self.pool_size,
            connect_timeout_ms: self.connect_timeout_ms,
            command_timeout_ms: self.command_timeout_ms,
            breaker_failure_threshold: self.breaker_failure_threshold,
            breaker_window_ms: self.breaker_window_ms,
            breaker_probe_interval_ms: self.breaker_probe_interval_ms,
            tls_ca_file: self.tls_ca_file.clone(),
            mode: RedisMode::Standalone,
            sentinel: RedisSentinelSettings::default(),
            cluster: RedisClusterSettings::default(),
            remote: None,
        }
    }
}

/// `redis.mode`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RedisMode {
    /// One Redis server at `redis.url`.
    #[default]
    Standalone,
    /// The primary of `redis.sentinel.service_name`, asked of the sentinels
    /// (again after every lost connection, so a failover is followed).
    Sentinel,
    /// A Redis Cluster reached through `redis.cluster.nodes`.
    Cluster,
}

/// `[redis.sentinel]`: where the sentinels are and which primary to ask for.
/// The primary's password, user name, database and TLS come from `redis.url`
/// (its host is not used); a sentinel's own password goes in its address
/// (`redis://:password@host:26379`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisSentinelSettings {
    /// The master name of `sentinel monitor <name> ...`.
    pub service_name: String,
    /// `host:port` or `redis://` URLs of the sentinels (env: comma-separated).
    pub addresses: Vec<Secret>,
    /// Cache reads (an entry and its version counters) go to a replica the
    /// sentinels name, falling back to the primary; writes, leases,
    /// broadcasts and the rate limiter stay on the primary.
    pub read_from_replicas: bool,
}

/// `[redis.cluster]`: the seed nodes of a Redis Cluster.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisClusterSettings {
    /// `host:port` or `redis://` URLs of some nodes (env: comma-separated);
    /// the rest of the cluster is discovered from them.
    pub nodes: Vec<Secret>,
}

impl RedisSettings {
    /// The CA file, if one is set (an empty value counts as unset).
    pub fn ca_file(&self) -> Option<&Path> {
        self.tls_ca_file.as_deref().filter(|p| !p.as_os_str().is_empty())
    }

    /// The CA file's PEM, if one is set; an error names the setting and the
    /// path (unreadable, no certificate in it) or says the URL is not
    /// `rediss://`.
    pub fn ca_pem(&self) -> Result<Option<Vec<u8>>, String> {
        let Some(path) = self.ca_file() else {
            return Ok(None);
        };
        if !checks::is_rediss(self.url.expose()) {
            return Err(format!(
                "{REDIS_CA_SETTING} is set, but REDIS_URL ({}) is not a rediss:// URL: TLS to Redis needs rediss://",
                self.url.address(6379)
            ));
        }
        crate::tls::read_ca_file(REDIS_CA_SETTING, path).map(Some)
    }
}

impl Default for RedisSettings {
    fn default() -> Self {
        Self {
            url: Secret::new("redis://127.0.0.1:6379"),
            enabled: true,
            pool_size: 8,
            connect_timeout_ms: 200,
            command_timeout_ms: 50,
            breaker_failure_threshold: 3,
            breaker_window_ms: 1_000,
            breaker_probe_interval_ms: 1_000,
            tls_ca_file: None,
            mode: RedisMode::Standalone,
            sentinel: RedisSentinelSettings::default(),
            cluster: RedisClusterSettings::default(),
            remote: None,
        }
    }
}
