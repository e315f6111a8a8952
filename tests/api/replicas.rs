//! Read replicas per dataset: `sales` reads a streaming replica of the
//! test's own while it is healthy, falls back to the primary (no request
//! fails) when the replica stops, and moves back once it is up again. Runs a
//! primary and a replica cluster of its own, never the shared one.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use analytics_api::config::{ReplicaSettings, Secret};
use analytics_api::db::seed::{seed_demo, SeedOptions};
use reqwest::StatusCode;
use serde_json::{json, Value};
use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, PgConnection};

use crate::helpers::{anchor, spawn_app_with, SendJson, TestApp, SEED, TEST_SALES};

/// Where the PostgreSQL 15 binaries are.
const PG_BIN: &str = "/usr/lib/postgresql/15/bin";
/// How long a cluster may take to accept connections, and the replica to be
/// routed to again.
const READY_WITHIN: Duration = Duration::from_secs(30);
/// The replica's lag probe interval in this test.
const PROBE_MS: u64 = 200;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A PostgreSQL program run as user `postgres` (it refuses to run as root).
fn as_postgres(program: &str) -> tokio::process::Command {
    let mut command = tokio::process::Command::new("runuser");
    command.args(["-u", "postgres", "--", &format!("{PG_BIN}/{program}")]);
    command
}

async fn run(command: &mut tokio::process::Command, what: &str) {
    let output = command.stdout(Stdio::null()).output().await.expect(what);
    assert!(
        output.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A primary (`wal_level=replica`) with the test data and a streaming
/// replica of it made with `pg_basebackup`, each on a free port; both
/// stopped (by data directory) and removed on drop.
struct Pair {
    dir: PathBuf,
    primary_port: u16,
    replica_port: u16,
}

impl Pair {
    async fn start() -> Self {
        let dir = std::env::temp_dir().join(format!("analytics-pg-replica-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("pair dir");
        let pair = Self {
            dir,
            primary_port: free_port(),
            replica_port: free_port(),
        };
        run(
            tokio::process::Command::new("chown").arg("postgres:").arg(&pair.dir),
            "chown",
        )
        .await;
        run(
            as_postgres("initdb")
                .args([
                    "-A",
                    "trust",
                    "-U",
                    "postgres",
                    "--no-sync",
                    "-E",
                    "UTF8",
                    "--locale",
                    "C",
                    "-D",
                ])
                .arg(pair.data("primary")),
            "initdb (runs as user postgres)",
        )
        .await;
        let hba = pair.data("primary").join("pg_hba.conf");
        let mut rules = std::fs::read_to_string(&hba).expect("pg_hba.conf");
        rules.push_str("\nhost replication postgres 127.0.0.1/32 trust\n");
        std::fs::write(&hba, rules).expect("pg_hba.conf");
        pair.start_cluster(
            "primary",
            pair.primary_port,
            "-c wal_level=replica -c max_wal_senders=4",
        )
        .await;

        // The schema and the test data, as in the shared template database.
        let mut admin = PgConnection::connect(&pair.url(pair.primary_port, "postgres"))
            .await
            .expect("connect primary");
        sqlx::query("CREATE DATABASE analytics")
            .execute(&mut admin)
            .await
            .expect("create database");
        admin.close().await.expect("close");
        let pool = PgPoolOptions::new()
            .max_connections(2)
            .connect(&pair.url(pair.primary_port, "analytics"))
            .await
            .expect("pool");
        analytics_api::db::migrate(&pool).await.expect("migrate");
        let options = SeedOptions {
            sales: TEST_SALES,
            seed: SEED,
            anchor: anchor(),
        };
        seed_demo(&pool, &options).await.expect("seed");
        pool.close().await;

        run(
            as_postgres("pg_basebackup")
                .args([
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &pair.primary_port.to_string(),
                    "-U",
                    "postgres",
                ])
                .args(["-R", "-X", "stream", "-c", "fast", "-D"])
                .arg(pair.data("replica")),
            "pg_basebackup",
        )
        .await;
        pair.start_replica().await;
        pair
    }

    fn data(&self, which: &str) -> PathBuf {
        self.dir.join(which)
    }

    fn url(&self, port: u16, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{port}/{db}")
    }

    async fn start_replica(&self) {
        self.start_cluster("replica", self.replica_port, "-c hot_standby=on")
            .await;
    }

    /// Starts cluster `which` and waits until it accepts connections.
    async fn start_cluster(&self, which: &str, port: u16, extra: &str) {
        let options = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off {extra}",
            self.dir.display()
        );
        run(
            as_postgres("pg_ctl")
                .args(["start", "-W", "-D"])
                .arg(self.data(which))
                .arg("-l")
                .arg(self.dir.join(format!("{which}.log")))
                .args(["-o", &options]),
            "pg_ctl start",
        )
        .await;
        let started = Instant::now();
        loop {
            if let Ok(connection) = PgConnection::connect(&self.url(port, "postgres")).await {
                let _ = connection.close().await;
                return;
            }
            assert!(
                started.elapsed() < READY_WITHIN,
                "PostgreSQL {which} on port {port} did not start; see {}",
                self.dir.join(format!("{which}.log")).display()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Immediate shutdown: the server processes exit at once, connections drop.
    fn stop(&self, which: &str) {
        let _ = std::process::Command::new("runuser")
            .args(["-u", "postgres", "--", &format!("{PG_BIN}/pg_ctl")])
            .args(["stop", "-m", "immediate", "-D"])
            .arg(self.data(which))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }

    /// Connections of the server's query pool on the cluster at `port`
    /// (`application_name`) whose last statement was an analytics query.
    async fn query_connections(&self, port: u16, application_name: &str) -> i64 {
        let mut connection = PgConnection::connect(&self.url(port, "analytics"))
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

impl Drop for Pair {
    fn drop(&mut self) {
        self.stop("replica");
        self.stop("primary");
        let _ = std::fs::remove_dir_all(&self.dir);
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
    let model_path = pair.dir.join("model.toml");
    std::fs::write(&model_path, model).expect("write model");

    let (primary, replica) = (
        pair.url(pair.primary_port, "analytics"),
        pair.url(pair.replica_port, "analytics"),
    );
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
        pair.query_connections(pair.replica_port, "analytics-api-replica").await > 0,
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
    pair.stop("replica");
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
        pair.query_connections(pair.primary_port, "analytics-api").await > 0,
        "the answers did not come from the primary"
    );
    let metrics = app.metrics_text().await;
    assert!(fallbacks(&metrics) > before, "the fallback counter did not rise");
    assert!(
        metrics.contains("analytics_replica_routed{database=\"replica\"} 0"),
        "routed gauge"
    );
    // (3) Back: queries read the replica again, within a bounded wait.
    pair.start_replica().await;
    let restarted = Instant::now();
    let health = health_until(&app, restarted + READY_WITHIN, |h| {
        h["databases"]["replica"]["routed"] == json!(true)
    })
    .await;
    assert_eq!(health["databases"]["replica"]["status"], json!("up"), "{health}");
    let (status, body) = refreshed(&app, 3).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        pair.query_connections(pair.replica_port, "analytics-api-replica").await > 0,
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
