//! Every metric the server exports, with its `# HELP` text: one list, so a
//! dashboard author can read what exists, and a test checks that no series
//! is recorded without an entry here. Counters start at 0 (for the label
//! values known in advance), so alerts and `rate()` see them before they
//! first fire.

/// What kind of series a metric is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// `(kind, name, help, label sets to start at 0)`.
type Entry = (
    Kind,
    &'static str,
    &'static str,
    &'static [&'static [(&'static str, &'static str)]],
);

/// No labels: the series itself starts at 0.
const PLAIN: &[&[(&str, &str)]] = &[&[]];
/// Labels not known in advance (tenants, rollups): nothing to start.
const NONE: &[&[(&str, &str)]] = &[];

pub const CATALOG: &[Entry] = &[
    (
        Kind::Histogram,
        "analytics_http_request_duration_seconds",
        "Time to answer a request, by method, route and status.",
        NONE,
    ),
    (
        Kind::Counter,
        "analytics_http_connections_rejected_total",
        "Connections closed at accept because server.max_connections were open.",
        PLAIN,
    ),
    (
        Kind::Gauge,
        "analytics_http_connections_open",
        "Open client connections.",
        NONE,
    ),
    (
        Kind::Counter,
        "analytics_cache_requests_total",
        "Query answers by where they came from: l1, redis, miss (computed), bypass (cache skipped).",
        &[
            &[("outcome", "l1")],
            &[("outcome", "redis")],
            &[("outcome", "miss")],
            &[("outcome", "bypass")],
        ],
    ),
    (
        Kind::Counter,
        "analytics_cache_sets_total",
        "Entries written to Redis.",
        PLAIN,
    ),
    (
        Kind::Counter,
        "analytics_cache_deletes_total",
        "Entries deleted from Redis by clears and deletes.",
        PLAIN,
    ),
    (
        Kind::Counter,
        "analytics_cache_redis_errors_total",
        "Cache operations that failed on Redis, by kind.",
        NONE,
    ),
    (
        Kind::Counter,
        "analytics_cache_corrupt_entries_total",
        "Undecodable entries, treated as misses and deleted.",
        PLAIN,
    ),
    (
        Kind::Counter,
        "analytics_cache_uncacheable_total",
        "Results larger than cache.max_entry_bytes, answered but not stored.",
        PLAIN,
    ),
    (
        Kind::Counter,
        "analytics_cache_stale_served_total",
        "Answers served past their TTL or after an invalidation (stale-while-revalidate, max-stale, stale-if-error).",
        PLAIN,
    ),
    (
        Kind::Counter,
        "analytics_cache_lease_waits_total",
        "Misses that waited for another instance's computation.",
        PLAIN,
    ),
    (
        Kind::Counter,
        "analytics_cache_invalidations_total",
        "Invalidations applied, by source: trigger, api, gap, rollup.",
        &[
            &[("source", "trigger")],
            &[("source", "api")],
            &[("source", "gap")],
            &[("source", "rollup")],
        ],
    ),
    (
        Kind::Histogram,
        "analytics_cache_invalidation_lag_seconds",
        "From a change's trigger to its invalidation on this instance.",
        NONE,
    ),
    (
        Kind::Gauge,
        "analytics_cache_breaker_open",
        "1 while the cache's Redis circuit breaker is open.",
        NONE,
    ),
    (
        Kind::Gauge,
        "analytics_cache_remote_breaker_open",
        "1 while the remote Redis' ([redis.remote]) circuit breaker is open.",
        NONE,
    ),
    (
        Kind::Counter,
        "analytics_cache_remote_hits_total",
        "Lookups the remote Redis ([redis.remote]) answered with a valid entry (local miss or local down).",
        PLAIN,
    ),
    (
        Kind::Counter,
        "analytics_cache_remote_errors_total",
        "Failed remote Redis ([redis.remote]) commands, by kind (timeout, timeout_busy, error).",
        NONE,
    ),
    (
        Kind::Counter,
        "analytics_cache_remote_writes_total",
        "Entries written to the remote Redis ([redis.remote]) in the background.",
        PLAIN,
    ),
    (
        Kind::Counter,
        "analytics_cache_remote_writes_dropped_total",
        "Writes to the remote Redis dropped because redis.remote.max_pending_writes were already waiting.",
        PLAIN,
    ),
    (
        Kind::Counter,
        "analytics_redis_replica_reads_total",
        "Cache lookups sent to the sentinels' replicas (redis.sentinel.read_from_replicas), by who answered: \
         replica, or primary (the replica failed).",
        NONE,
    ),
    (
        Kind::Counter,
        "analytics_redis_replica_errors_total",
        "Failed commands on the sentinels' replicas, by kind (timeout, timeout_busy, error).",
        NONE,
    ),
    (
        Kind::Gauge,
        "analytics_redis_replica_breaker_open",
        "1 while the circuit breaker of the sentinels' replicas is open (cache lookups read the primary).",
        NONE,
    ),
    (
        Kind::Gauge,
        "analytics_singleflight_waiters",
        "Requests waiting on another request's computation of the same key.",
        NONE,
    ),
    (
        Kind::Counter,
        "analytics_redis_errors_total",
        "Failed Redis commands, by caller (cache, ratelimit, admin) and kind (timeout, timeout_busy: timed out while this process was starved of CPU, not counted by the breaker; error).",
        NONE,
    ),
    (
        Kind::Counter,
        "analytics_redis_breaker_opened_total",
        "Times the Redis circuit breaker opened.",
        PLAIN,
    ),
    (
        Kind::Counter,
        "analytics_ratelimit_rejections_total",
        "Requests refused with 429.",
        NONE,
    ),
    (
        Kind::Histogram,
        "analytics_db_query_duration_seconds",
        "Statement time on PostgreSQL, by status.",
        NONE,
    ),
    (
        Kind::Histogram,
        "analytics_result_rows",
        "Rows per computed answer.",
        NONE,
    ),
    (
        Kind::Histogram,
        "analytics_result_bytes",
        "Bytes of data per computed answer.",
        NONE,
    ),
    (
        Kind::Counter,
        "analytics_db_shed_total",
        "Requests refused with 503 overloaded (no statement slot or queue place).",
        PLAIN,
    ),
    (
        Kind::Gauge,
        "analytics_db_breaker_open",
        "1 while the database circuit breaker is open.",
        NONE,
    ),
    (
        Kind::Gauge,
        "analytics_db_pool_connections",
        "Database pool connections, by state (idle, in_use).",
        NONE,
    ),
    (
        Kind::Counter,
        "analytics_replica_fallbacks_total",
        "Times a read replica's datasets moved to the primary (replica down, lagging past max_lag_seconds, or a statement could not reach it), by database.",
        NONE,
    ),
    (
        Kind::Gauge,
        "analytics_replica_lag_seconds",
        "Replay lag of a read replica at its last probe, by database (0 while it has replayed all it received).",
        NONE,
    ),
    (
        Kind::Gauge,
        "analytics_replica_routed",
        "1 while a read replica's datasets read it, 0 while they read the primary, by database.",
        NONE,
    ),
    (
        Kind::Gauge,
        "analytics_freshness_listener_up",
        "1 while the change-capture LISTEN connection is up.",
        NONE,
    ),
    (
        Kind::Counter,
        "analytics_rollup_queries_total",
        "Computed answers by source: a rollup, or raw (the fact table).",
        &[&[("source", "raw")]],
    ),
    (
        Kind::Counter,
        "analytics_rollup_refresh_failures_total",
        "Rollup refreshes that failed (the rollup answers nothing until one succeeds).",
        NONE,
    ),
    (
        Kind::Histogram,
        "analytics_rollup_build_seconds",
        "Time to build a rollup.",
        NONE,
    ),
    (
        Kind::Histogram,
        "analytics_rollup_refresh_seconds",
        "Time to re-aggregate the changed days of a rollup.",
        NONE,
    ),
    (
        Kind::Gauge,
        "analytics_rollup_rows",
        "Rows of a rollup table (PostgreSQL's estimate).",
        NONE,
    ),
    (
        Kind::Gauge,
        "analytics_rollup_bytes",
        "Size of a rollup table with its index.",
        NONE,
    ),
    (
        Kind::Gauge,
        "analytics_rollup_lag_seconds",
        "Age of the oldest change a rollup has not re-aggregated (0: none).",
        NONE,
    ),
    (
        Kind::Gauge,
        "analytics_rollup_last_refresh_timestamp_seconds",
        "Unix time of a rollup's last refresh or build.",
        NONE,
    ),
    (
        Kind::Gauge,
        "analytics_rollup_usable",
        "1 while a rollup may answer queries.",
        NONE,
    ),
];

/// Describes every metric and starts the known counters at 0; run once,
/// right after the recorder is installed.
pub fn register() {
    for (kind, name, help, zeroes) in CATALOG {
        match kind {
            Kind::Counter => {
                metrics::describe_counter!(*name, *help);
                for labels in *zeroes {
                    let labels: Vec<metrics::Label> = labels.iter().map(|(k, v)| metrics::Label::new(*k, *v)).collect();
                    metrics::counter!(*name, labels).increment(0);
                }
            }
            Kind::Gauge => metrics::describe_gauge!(*name, *help),
            Kind::Histogram => metrics::describe_histogram!(*name, *help),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `counter!`/`gauge!`/`histogram!` name in the sources has an
    /// entry, of the same kind.
    #[test]
    fn every_recorded_series_is_in_the_catalog() {
        let mut missing = Vec::new();
        let mut stack = vec![std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/src"))];
        while let Some(path) = stack.pop() {
            if path.ends_with("telemetry/catalog.rs") {
                continue;
            }
            if path.is_dir() {
                stack.extend(std::fs::read_dir(&path).expect("dir").map(|e| e.expect("entry").path()));
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("source");
            for (macro_name, kind) in [
                ("counter!(", Kind::Counter),
                ("gauge!(", Kind::Gauge),
                ("histogram!(", Kind::Histogram),
            ] {
                for (at, _) in text.match_indices(macro_name) {
                    let rest = text[at + macro_name.len()..].trim_start();
                    let Some(name) = rest.strip_prefix('"').and_then(|r| r.split('"').next()) else {
                        continue;
                    };
                    if !CATALOG.iter().any(|(k, n, _, _)| *k == kind && *n == name) {
                        missing.push(format!("{}: {macro_name}\"{name}\"", path.display()));
                    }
                }
            }
        }
        assert!(missing.is_empty(), "series without a catalog entry: {missing:#?}");
    }
}
