//! Every numeric setting's range, checked once after loading with an error
//! naming the variable to fix: a 0 pool size or a 0 ms request timeout is a
//! typo, not a configuration, and must not start a server that then panics
//! or answers every request 504. The TLS files the settings name are read
//! here too, so that a wrong path stops the start instead of every connection.

use super::Settings;

/// `(variable, value, least, most)`.
type Range = (&'static str, u64, u64, u64);

const SECOND_MS: u64 = 1_000;
const HOUR_MS: u64 = 3_600 * SECOND_MS;
const DAY_S: u64 = 86_400;
const GIB: u64 = 1 << 30;

fn ranges(s: &Settings) -> Vec<Range> {
    let u = |v: usize| v as u64;
    vec![
        (
            "APP__SERVER__REQUEST_TIMEOUT_MS",
            s.server.request_timeout_ms,
            100,
            HOUR_MS,
        ),
        (
            "APP__SERVER__BODY_LIMIT_BYTES",
            u(s.server.body_limit_bytes),
            1_024,
            GIB,
        ),
        ("APP__SERVER__SHUTDOWN_GRACE_MS", s.server.shutdown_grace_ms, 0, HOUR_MS),
        (
            "APP__SERVER__MAX_CONNECTIONS",
            u(s.server.max_connections),
            1,
            1_000_000,
        ),
        (
            "APP__SERVER__HEADER_READ_TIMEOUT_MS",
            s.server.header_read_timeout_ms,
            100,
            HOUR_MS,
        ),
        (
            "APP__SERVER__MAX_HEADER_BYTES",
            u(s.server.max_header_bytes),
            1_024,
            16 << 20,
        ),
        ("APP__SERVER__THREADS", u(s.server.threads), 0, 1_024),
        (
            "APP__DATABASE__MAX_CONNECTIONS",
            u64::from(s.database.max_connections),
            1,
            10_000,
        ),
        (
            "APP__DATABASE__MIN_CONNECTIONS",
            u64::from(s.database.min_connections),
            0,
            u64::from(s.database.max_connections),
        ),
        (
            "APP__DATABASE__ACQUIRE_TIMEOUT_MS",
            s.database.acquire_timeout_ms,
            10,
            HOUR_MS,
        ),
        (
            "APP__DATABASE__STATEMENT_TIMEOUT_MS",
            s.database.statement_timeout_ms,
            10,
            HOUR_MS,
        ),
        (
            "APP__DATABASE__SEED_DEMO_SALES",
            s.database.seed_demo_sales,
            0,
            1_000_000_000,
        ),
        (
            "APP__DATABASE__MAX_IN_FLIGHT",
            u64::from(s.database.max_in_flight),
            0,
            10_000,
        ),
        (
            "APP__DATABASE__MAX_QUEUED",
            u64::from(s.database.max_queued),
            0,
            1_000_000,
        ),
        (
            "APP__DATABASE__MAX_PER_TENANT",
            u64::from(s.database.max_per_tenant),
            0,
            1_000_000,
        ),
        (
            "APP__DATABASE__BREAKER_FAILURE_THRESHOLD",
            u64::from(s.database.breaker_failure_threshold),
            1,
            1_000_000,
        ),
        (
            "APP__DATABASE__BREAKER_WINDOW_MS",
            s.database.breaker_window_ms,
            10,
            HOUR_MS,
        ),
        (
            "APP__DATABASE__BREAKER_PROBE_INTERVAL_MS",
            s.database.breaker_probe_interval_ms,
            10,
            HOUR_MS,
        ),
        ("APP__REDIS__POOL_SIZE", u64::from(s.redis.pool_size), 1, 1_024),
        ("APP__REDIS__CONNECT_TIMEOUT_MS", s.redis.connect_timeout_ms, 1, HOUR_MS),
        ("APP__REDIS__COMMAND_TIMEOUT_MS", s.redis.command_timeout_ms, 1, HOUR_MS),
        (
            "APP__REDIS__BREAKER_FAILURE_THRESHOLD",
            u64::from(s.redis.breaker_failure_threshold),
            1,
            1_000_000,
        ),
        ("APP__REDIS__BREAKER_WINDOW_MS", s.redis.breaker_window_ms, 10, HOUR_MS),
        (
            "APP__REDIS__BREAKER_PROBE_INTERVAL_MS",
            s.redis.breaker_probe_interval_ms,
            10,
            HOUR_MS,
        ),
        (
            "CACHE_TTL (APP__CACHE__DEFAULT_TTL_SECONDS)",
            s.cache.default_ttl_seconds,
            1,
            365 * DAY_S,
        ),
        (
            "APP__CACHE__RECENT_TTL_SECONDS",
            s.cache.recent_ttl_seconds,
            1,
            365 * DAY_S,
        ),
        (
            "APP__CACHE__HISTORICAL_TTL_SECONDS",
            s.cache.historical_ttl_seconds,
            1,
            365 * DAY_S,
        ),
        (
            "APP__CACHE__HISTORICAL_AFTER_DAYS",
            s.cache.historical_after_days,
            0,
            36_500,
        ),
        (
            "APP__CACHE__COMPRESS_ABOVE_BYTES",
            u(s.cache.compress_above_bytes),
            0,
            GIB,
        ),
        ("APP__CACHE__MAX_ENTRY_BYTES", u(s.cache.max_entry_bytes), 1_024, GIB),
        ("APP__CACHE__L1_MAX_BYTES", s.cache.l1_max_bytes, 0, 64 * GIB),
        ("APP__CACHE__L1_TTL_SECONDS", s.cache.l1_ttl_seconds, 1, 365 * DAY_S),
        ("APP__CACHE__CLEAR_BATCH_SIZE", u(s.cache.clear_batch_size), 1, 100_000),
        (
            "APP__FRESHNESS__STALE_WHILE_REVALIDATE_SECONDS",
            s.freshness.stale_while_revalidate_seconds,
            0,
            365 * DAY_S,
        ),
        (
            "APP__FRESHNESS__STALE_IF_ERROR_SECONDS",
            s.freshness.stale_if_error_seconds,
            0,
            365 * DAY_S,
        ),
        ("APP__FRESHNESS__LEASE_MS", s.freshness.lease_ms, 100, HOUR_MS),
        ("APP__FRESHNESS__LEASE_WAIT_MS", s.freshness.lease_wait_ms, 0, HOUR_MS),
        (
            "APP__FRESHNESS__RECONNECT_MAX_MS",
            s.freshness.reconnect_max_ms,
            100,
            HOUR_MS,
        ),
        (
            "APP__ROLLUPS__REFRESH_INTERVAL_MS",
            s.rollups.refresh_interval_ms,
            100,
            HOUR_MS,
        ),
        (
            "APP__ROLLUPS__REFRESH_TIMEOUT_MS",
            s.rollups.refresh_timeout_ms,
            100,
            HOUR_MS,
        ),
        (
            "APP__ROLLUPS__BUILD_TIMEOUT_SECONDS",
            s.rollups.build_timeout_seconds,
            1,
            7 * DAY_S,
        ),
        ("APP__AUTH__KEY_CACHE_SECONDS", s.auth.key_cache_seconds, 0, DAY_S),
        (
            "APP__RATE_LIMIT__DEFAULT_PER_MINUTE",
            s.rate_limit.default_per_minute,
            0,
            100_000_000,
        ),
    ]
}

/// The first setting out of its range (or a log filter that does not
/// parse), as a message naming the variable.
pub fn out_of_range(settings: &Settings) -> Option<String> {
    if let Err(error) = tracing_subscriber::EnvFilter::try_new(&settings.log.level) {
        return Some(format!(
            "RUST_LOG (log.level) `{}` is not a valid filter ({error}); e.g. `info,sqlx=warn`",
            settings.log.level
        ));
    }
    ranges(settings)
        .into_iter()
        .find(|(_, value, least, most)| value < least || value > most)
        .map(|(variable, value, least, most)| {
            format!("{variable} = {value} is out of range: it must be between {least} and {most}")
        })
}

/// The setting of the Redis CA file, as messages name it.
pub const REDIS_CA_SETTING: &str = "APP__REDIS__TLS_CA_FILE (redis.tls_ca_file)";

/// The CA files the settings name, when one cannot be used: unreadable, not
/// PEM certificates, or a Redis CA without a `rediss://` URL.
pub fn tls_files(settings: &Settings) -> Option<String> {
    if settings.redis.enabled {
        if let Err(problem) = settings.redis.ca_pem() {
            return Some(problem);
        }
    }
    if let Some(path) = postgres_root_cert(settings.database.url.expose()) {
        if let Err(problem) = crate::tls::read_ca_file("DATABASE_URL sslrootcert", std::path::Path::new(&path)) {
            return Some(problem);
        }
    }
    None
}

/// Settings of one Redis mode given in another, where they would do nothing.
pub fn redis_mode(settings: &Settings) -> Option<String> {
    let redis = &settings.redis;
    (redis.sentinel.read_from_replicas && redis.mode != super::RedisMode::Sentinel).then(|| {
        "APP__REDIS__SENTINEL__READ_FROM_REPLICAS (redis.sentinel.read_from_replicas) needs \
         APP__REDIS__MODE=sentinel: replicas are found through the sentinels"
            .to_owned()
    })
}

/// Whether a Redis URL asks for TLS.
pub fn is_rediss(url: &str) -> bool {
    url.trim_start().to_ascii_lowercase().starts_with("rediss://")
}

/// The CA file a PostgreSQL URL names (`sslrootcert`, or sqlx's spellings
/// `ssl-root-cert` and `ssl-ca`; the last one wins), unless it is inline PEM.
pub fn postgres_root_cert(url: &str) -> Option<String> {
    let url = url::Url::parse(url).ok()?;
    url.query_pairs()
        .filter(|(key, _)| matches!(key.as_ref(), "sslrootcert" | "ssl-root-cert" | "ssl-ca"))
        .map(|(_, value)| value.into_owned())
        .last()
        .filter(|value| !value.trim_start().starts_with("-----BEGIN"))
}

/// The read replicas (`[databases.<name>]`): a usable name, a URL, every
/// number in range (as for `database`) and a readable `sslrootcert`.
pub fn replicas(settings: &Settings) -> Option<String> {
    for (name, replica) in &settings.databases {
        let upper = name.to_ascii_uppercase();
        if name == "primary" {
            return Some(
                "databases.primary: `primary` is the name of `database` (DATABASE_URL); name a replica otherwise"
                    .into(),
            );
        }
        let mut chars = name.chars();
        let identifier = matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c == '_')
            && name.len() <= 63
            && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !identifier {
            return Some(format!(
                "databases.{name}: a database name must be a lower-case identifier ([a-z_][a-z0-9_]*)"
            ));
        }
        if replica.url.expose().trim().is_empty() {
            return Some(format!(
                "APP__DATABASES__{upper}__URL (databases.{name}.url) is not set: a replica needs its URL"
            ));
        }
        let ranges: [(&str, u64, u64, u64); 12] = [
            ("MAX_CONNECTIONS", replica.max_connections.into(), 1, 10_000),
            (
                "MIN_CONNECTIONS",
                replica.min_connections.into(),
                0,
                replica.max_connections.into(),
            ),
            ("ACQUIRE_TIMEOUT_MS", replica.acquire_timeout_ms, 10, HOUR_MS),
            ("STATEMENT_TIMEOUT_MS", replica.statement_timeout_ms, 10, HOUR_MS),
            ("MAX_IN_FLIGHT", replica.max_in_flight.into(), 0, 10_000),
            ("MAX_QUEUED", replica.max_queued.into(), 0, 1_000_000),
            ("MAX_PER_TENANT", replica.max_per_tenant.into(), 0, 1_000_000),
            (
                "BREAKER_FAILURE_THRESHOLD",
                replica.breaker_failure_threshold.into(),
                1,
                1_000_000,
            ),
            ("BREAKER_WINDOW_MS", replica.breaker_window_ms, 10, HOUR_MS),
            (
                "BREAKER_PROBE_INTERVAL_MS",
                replica.breaker_probe_interval_ms,
                10,
                HOUR_MS,
            ),
            ("MAX_LAG_SECONDS", replica.max_lag_seconds, 0, 7 * DAY_S),
            ("LAG_PROBE_INTERVAL_MS", replica.lag_probe_interval_ms, 50, HOUR_MS),
        ];
        if let Some((key, value, least, most)) = ranges
            .into_iter()
            .find(|(_, value, least, most)| value < least || value > most)
        {
            return Some(format!(
                "APP__DATABASES__{upper}__{key} = {value} is out of range: it must be between {least} and {most}"
            ));
        }
        if let Some(path) = postgres_root_cert(replica.url.expose()) {
            let setting = format!("APP__DATABASES__{upper}__URL sslrootcert");
            if let Err(problem) = crate::tls::read_ca_file(&setting, std::path::Path::new(&path)) {
                return Some(problem);
            }
        }
    }
    None
}
