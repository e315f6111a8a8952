//! Read replicas per dataset: `sales` reads a streaming replica of the
//! test's own while it is healthy, falls back to the primary (no request
//! fails) when the replica stops, and moves back once it is up again. Runs a
//! primary and a replica cluster of its own, never the shared one.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use analytics_api::config::{ReplicaSettings, Secret};
use reqwest::StatusCode;
use serde_json::{json, Value};
use sqlx::{Connection, PgConnection};

use crate::helpers::{spawn_app_with, SendJson, TestApp};
use crate::pg_cluster::{create_and_seed, PrivateCluster};

/// How long the replica may take to be routed to again.
const READY_WITHIN: Duration = Duration::from_secs(30);
/// The replica's lag probe interval in this test.
const PROBE_MS: u64 = 200;

/// A primary (`wal_level=replica`) with the test data and a streaming
/// replica of it made with `pg_basebackup`, each on a free port; both
/// stopped (replica first) and removed on drop.
struct Pair {
    replica: PrivateCluster,
    primary: PrivateCluster,
}

impl Pair {
    async fn start() -> Self {
        let primary = PrivateCluster::init("pg-primary").await;
        primary.allow("host replication postgres 127.0.0.1/32 trust");
        primary.configure("wal_level = replica\nmax_wal_senders = 4");
        primary.start().await;
        let options = primary.url("postgres").parse().expect("url");
        create_and_seed(options).await.close().await;

        let replica = PrivateCluster::base_backup("pg-replica", &primary).await;
        replica.configure("hot_standby = on");
        replica.start().await;
        Self { replica, primary }
    }

    /// Connections of the server's query pool on `cluster`
    /// (`application_name`) whose last statement was an analytics query.
    async fn query_connections(cluster: &PrivateCluster, application_name: &str) -> i64 {
        let mut connection = PgConnection::connect(&cluster.url("analytics"))
            .await
            .expect("connect for pg_stat_activity");
        let count = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 AND query LIKE '%total_rows%'",
        )
        .bind(application_name)
        .fetch_one(&mut connection)
        .await
        .expect("pg_stat_activity");
        let _ = connection.close().await;
        count
    }
}

/// A query no other asks, run past the cache (`?cache=refresh`).
async fn refreshed(app: &TestApp, store: u64) -> (StatusCode, Value) {
    let response = app
        .client
        .post(app.url("/analytics/query?cache=refresh"))
        .json(&json!({"metrics": ["revenue", "sales_count"], "filters": {"store_id": store}}))
        .send()
        .await
        .expect("request");
    let status = response.status();
    (status, response.json().await.expect("json body"))
}

/// Polls `/health` until `check` holds, at the latest by `deadline`.
async fn health_until(app: &TestApp, deadline: Instant, check: impl Fn(&Value) -> bool) -> Value {
    loop {
        let health: Value = app.client.get(app.url("/health")).json_body().await;
        if check(&health) {
            return health;
        }
        assert!(Instant::now() < deadline, "/health not as expected in time: {health}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn fallbacks(metrics: &str) -> f64 {
    metrics
        .lines()
        .find(|l| l.starts_with("analytics_replica_fallbacks_total{database=\"replica\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no fallback counter in /metrics"))
}

#[tokio::test]
async fn a_dataset_reads_its_replica_falls_back_to_the_primary_and_moves_back() {
    let pair = Pair::start().await;
    // The shipped model, with `sales` reading the replica.
    let model = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/model.toml")).expect("model");
    assert!(model.contains("[datasets.sales]\n"), "the shipped model declares sales");
    let model = model.replacen("[datasets.sales]\n", "[datasets.sales]\ndatabase = \"replica\"\n", 1);
    let model_path = pair.primary.dir().join("model.toml");
    std::fs::write(&model_path, model).expect("write model");

    let (primary, replica) = (pair.primary.url("analytics"), pair.replica.url("analytics"));
    // `spawn_app_with` also copies the template on the shared cluster; that
    // copy is unused here: the server runs on the pair.
    let app = spawn_app_with(move |s| {
        s.database.url = Secret::new(primary);
        s.database.create_database = false;
        s.model.path = model_path;
        s.databases.insert(
            "replica".into(),
            ReplicaSettings {
                url: Secret::new(replica),
                max_connections: 4,
                acquire_timeout_ms: 500,
                max_lag_seconds: 30,
                lag_probe_interval_ms: PROBE_MS,
                ..ReplicaSettings::default()
            },
        );
    })
    .await;
    // (1) Routed to the replica: its analytics statement ran there.
    let health = health_until(&app, Instant::now() + READY_WITHIN, |h| {
        h["databases"]["replica"]["routed"] == json!(true)
    })
    .await;
    assert_eq!(health["databases"]["replica"]["status"], json!("up"), "{health}");
    assert_eq!(health["databases"]["replica"]["datasets"], json!(["sales"]), "{health}");
    assert!(
        health["databases"]["replica"]["lag_seconds"].as_f64().is_some(),
        "{health}"
    );
    let (status, body) = refreshed(&app, 1).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        Pair::query_connections(&pair.replica, "analytics-api-replica").await > 0,
        "the query did not run on the replica"
    );
    let before = fallbacks(&app.metrics_text().await);
    // (2) The replica stops while distinct uncached queries run: none fails.
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    let asking = {
        let done = Arc::clone(&done);
        let (client, url, stop) = (
            app.client.clone(),
            app.url("/analytics/query?cache=refresh"),
            Arc::clone(&stop),
        );
        tokio::spawn(async move {
            let mut outcomes = Vec::new();
            let mut store = 0u64;
            while !stop.load(Ordering::Acquire) {
                store = store % 20 + 1;
                let response = client
                    .post(&url)
                    .json(&json!({"metrics": ["revenue"], "dimensions": ["channel"], "filters": {"store_id": store}}))
                    .send()
                    .await
                    .expect("request");
                let status = response.status();
                let body = response.text().await.unwrap_or_default();
                outcomes.push((Instant::now(), status, body));
                done.fetch_add(1, Ordering::AcqRel);
            }
            outcomes
        })
    };
    // Some on the replica first, so that the stop hits statements in flight.
    let asking_since = Instant::now();
    while done.load(Ordering::Acquire) < 5 {
        assert!(
            asking_since.elapsed() < Duration::from_secs(10),
            "the queries do not answer"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    pair.replica.stop();
    let stopped = Instant::now();
    let health = health_until(&app, stopped + Duration::from_secs(10), |h| {
        h["databases"]["replica"]["status"] == json!("down")
    })
    .await;
    assert_eq!(health["status"], json!("degraded"), "{health}");
    assert_eq!(health["databases"]["replica"]["routed"], json!(false), "{health}");
    assert_eq!(health["database"]["status"], json!("up"), "{health}");
    let response = app.client.get(app.url("/health")).send().await.expect("health");
    assert_eq!(response.status(), 200, "only a replica down: still serving");
    // Let the loop run on the primary for a while.
    let asked = done.load(Ordering::Acquire);
    let waiting = Instant::now();
    while done.load(Ordering::Acquire) < asked + 10 {
        assert!(
            waiting.elapsed() < Duration::from_secs(10),
            "the queries stopped answering"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::Release);
    let outcomes = asking.await.expect("asking task");
    let failed: Vec<_> = outcomes.iter().filter(|(_, status, _)| *status != 200).collect();
    assert!(
        failed.is_empty(),
        "requests failed while the replica stopped: {failed:?}"
    );
    let after_stop = outcomes.iter().filter(|(at, _, _)| *at > stopped).count();
    assert!(after_stop >= 10, "only {after_stop} requests after the stop");
    assert!(
        Pair::query_connections(&pair.primary, "analytics-api").await > 0,
        "the answers did not come from the primary"
    );
    let metrics = app.metrics_text().await;
    assert!(fallbacks(&metrics) > before, "the fallback counter did not rise");
    assert!(
        metrics.contains("analytics_replica_routed{database=\"replica\"} 0"),
        "routed gauge"
    );
    // (3) Back: queries read the replica again, within a bounded wait.
    pair.replica.start().await;
    let restarted = Instant::now();
    let health = health_until(&app, restarted + READY_WITHIN, |h| {
        h["databases"]["replica"]["routed"] == json!(true)
    })
    .await;
    assert_eq!(health["databases"]["replica"]["status"], json!("up"), "{health}");
    let (status, body) = refreshed(&app, 3).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        Pair::query_connections(&pair.replica, "analytics-api-replica").await > 0,
        "the query did not run on the restarted replica"
    );
    assert!(
        app.metrics_text()
            .await
            .contains("analytics_replica_routed{database=\"replica\"} 1"),
        "routed gauge"
    );
}

/// A dataset naming a database that is not configured stops the start,
/// naming the dataset and the database.
#[tokio::test]
async fn an_unknown_database_in_the_model_stops_the_start() {
    let model = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/model.toml")).expect("model");
    let model = model.replacen("[datasets.sales]\n", "[datasets.sales]\ndatabase = \"archive\"\n", 1);
    let path = std::env::temp_dir().join(format!("analytics-model-{}.toml", uuid::Uuid::new_v4().simple()));
    std::fs::write(&path, model).expect("write model");
    let model_path = path.clone();
    let message = crate::helpers::startup_error(move |s| s.model.path = model_path).await;
    let _ = std::fs::remove_file(&path);
    assert!(
        message.contains("dataset `sales`")
            && message.contains("`archive`")
            && message.contains("not a configured database"),
        "{message}"
    );
}
