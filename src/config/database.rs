//! `[database]` (the primary PostgreSQL) and `[databases.<name>]` (read
//! replicas): connection, pool, admission and breaker settings.

use serde::Deserialize;

use super::Secret;

/// PostgreSQL: where the data lives and how hard we may lean on it.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseSettings {
    /// Connection URL; may carry a password, so it is never logged.
    pub url: Secret,
    /// Upper bound on connections, so a load spike cannot exhaust the server.
    pub max_connections: u32,
    /// Connections kept open so the first queries after idle are not slow.
    pub min_connections: u32,
    /// How long a request waits for a free connection before answering 503.
    pub acquire_timeout_ms: u64,
    /// Per-statement deadline set on every connection; exceeding it answers 504.
    pub statement_timeout_ms: u64,
    /// Create the database when it does not exist (serve and migrate).
    pub create_database: bool,
    /// Run pending migrations when `serve` starts.
    pub migrate_on_start: bool,
    /// Seed the demo dataset when `serve` finds the sales table empty.
    pub seed_demo_on_empty: bool,
    /// How many sales that first-start seed generates.
    pub seed_demo_sales: u64,
    /// Statements running at once at most; 0 means `max_connections`.
    pub max_in_flight: u32,
    /// Statements waiting for a turn at most; over it, 503 at once.
    pub max_queued: u32,
    /// Running plus waiting statements one tenant may hold; 0 means all of
    /// them with a single tenant, else three quarters, so one tenant's burst
    /// leaves room for others.
    pub max_per_tenant: u32,
    /// Failures to reach the database that open its breaker, when they are
    /// at least half of the statements ...
    pub breaker_failure_threshold: u32,
    /// ... within this window.
    pub breaker_window_ms: u64,
    /// How often the probe tries the database while the breaker is open.
    pub breaker_probe_interval_ms: u64,
    /// How long start-up waits for a database that is not up yet (refused,
    /// starting) before it gives up; 0 fails at once.
    pub startup_wait_seconds: u64,
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        Self {
            url: Secret::new("postgres://postgres@127.0.0.1:5432/analytics"),
            max_connections: 16,
            min_connections: 1,
            acquire_timeout_ms: 2_000,
            statement_timeout_ms: 10_000,
            create_database: true,
            migrate_on_start: true,
            seed_demo_on_empty: true,
            seed_demo_sales: 200_000,
            max_in_flight: 0,
            max_queued: 64,
            max_per_tenant: 0,
            breaker_failure_threshold: 3,
            breaker_window_ms: 1_000,
            breaker_probe_interval_ms: 250,
            startup_wait_seconds: 60,
        }
    }
}

/// A read replica of `database` (`[databases.<name>]`, variables
/// `APP__DATABASES__<NAME>__<KEY>`): the datasets that name it read it while
/// it answers and its replay lag is within `max_lag_seconds`, else the
/// primary. Pool and guard settings mean what they mean for `database`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReplicaSettings {
    /// Connection URL (required); may carry a password, so it is never logged.
    pub url: Secret,
    pub max_connections: u32,
    pub min_connections: u32,
    pub acquire_timeout_ms: u64,
    pub statement_timeout_ms: u64,
    pub max_in_flight: u32,
    pub max_queued: u32,
    pub max_per_tenant: u32,
    pub breaker_failure_threshold: u32,
    pub breaker_window_ms: u64,
    pub breaker_probe_interval_ms: u64,
    /// Replay lag above which its datasets read the primary instead.
    pub max_lag_seconds: u64,
    /// How often a background probe measures its health and replay lag.
    pub lag_probe_interval_ms: u64,
}

impl Default for ReplicaSettings {
    fn default() -> Self {
        let primary = DatabaseSettings::default();
        Self {
            url: Secret::new(""),
            max_connections: primary.max_connections,
            min_connections: 0,
            acquire_timeout_ms: primary.acquire_timeout_ms,
            statement_timeout_ms: primary.statement_timeout_ms,
            max_in_flight: primary.max_in_flight,
            max_queued: primary.max_queued,
            max_per_tenant: primary.max_per_tenant,
            breaker_failure_threshold: primary.breaker_failure_threshold,
            breaker_window_ms: primary.breaker_window_ms,
            breaker_probe_interval_ms: primary.breaker_probe_interval_ms,
            max_lag_seconds: 30,
            lag_probe_interval_ms: 2_000,
        }
    }
}

impl ReplicaSettings {
    /// As `DatabaseSettings`, for the pool, connection options and guard
    /// (nothing is created, migrated or seeded on a replica).
    pub fn as_database(&self) -> DatabaseSettings {
        DatabaseSettings {
            url: self.url.clone(),
            max_connections: self.max_connections,
            min_connections: self.min_connections,
            acquire_timeout_ms: self.acquire_timeout_ms,
            statement_timeout_ms: self.statement_timeout_ms,
            create_database: false,
            migrate_on_start: false,
            seed_demo_on_empty: false,
            seed_demo_sales: 0,
            max_in_flight: self.max_in_flight,
            max_queued: self.max_queued,
            max_per_tenant: self.max_per_tenant,
            breaker_failure_threshold: self.breaker_failure_threshold,
            breaker_window_ms: self.breaker_window_ms,
            breaker_probe_interval_ms: self.breaker_probe_interval_ms,
            startup_wait_seconds: 0,
        }
    }
}
