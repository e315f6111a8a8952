//! A PostgreSQL outage: entries past their TTL, or invalidated by a change,
//! are served marked stale within the stale-if-error window, anything else
//! is a fast JSON 503, and the server recovers on its own once the database
//! is back. Runs and stops a PostgreSQL cluster of its own, never the shared one.

use std::time::{Duration, Instant};

use analytics_api::config::Secret;
use reqwest::StatusCode;
use serde_json::{json, Value};
use sqlx::{Connection, PgConnection};

use crate::helpers::{spawn_app_with, SendJson, TestApp};
use crate::pg_cluster::{create_and_seed, PrivateCluster};

const STALE_IF_ERROR_SECONDS: u64 = 3;

/// No date range, so the recent TTL (1 s); on channel 5, which the change
/// below does not touch: it becomes unusable only by ageing past its TTL.
fn aged() -> Value {
    json!({"metrics": ["revenue"], "filters": {"channel_id": 5}})
}

/// A closed month, so the historical TTL (600 s): it becomes unusable only
/// because the change below (a sale on channel 2 in May 2024) invalidates it.
fn changed() -> Value {
    json!({"metrics": ["revenue"], "filters": {"channel_id": 2},
           "date_range": {"start_date": "2024-05-01", "end_date": "2024-05-31"}})
}

/// Never asked before the outage.
fn uncached() -> Value {
    json!({"metrics": ["sales_count"], "dimensions": ["city"]})
}

/// A cluster of its own with the test data (as in the template database).
async fn seeded_cluster() -> PrivateCluster {
    let cluster = PrivateCluster::init("pg").await;
    cluster.start().await;
    let options = cluster.url("postgres").parse().expect("url");
    create_and_seed(options).await.close().await;
    cluster
}

/// POSTs `query`; returns (status, X-Cache, Retry-After, body).
async fn ask(app: &TestApp, query: &Value) -> (StatusCode, String, Option<String>, Value) {
    let response = app.query(query.clone()).await;
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .map(|v| v.to_str().expect("header").to_owned())
    };
    let (x_cache, retry_after) = (header("x-cache").unwrap_or_default(), header("retry-after"));
    let status = response.status();
    (status, x_cache, retry_after, response.json().await.expect("json body"))
}

fn assert_database_unavailable(status: StatusCode, retry_after: Option<String>, body: &Value, what: &str) {
    assert_eq!(status, 503, "{what}: {body}");
    assert_eq!(body["error"]["code"], json!("database_unavailable"), "{what}: {body}");
    assert!(retry_after.is_some(), "{what}: 503 without Retry-After");
}

/// Polls `/health` until `check` holds, at the latest by `deadline`.
async fn health_until(app: &TestApp, deadline: Instant, check: impl Fn(&Value) -> bool) {
    loop {
        let health: Value = app.client.get(app.url("/health")).json_body().await;
        if check(&health) {
            return;
        }
        assert!(Instant::now() < deadline, "/health not as expected in time: {health}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn stale_if_error_serves_marked_entries_while_postgres_is_down_and_recovers() {
    let cluster = seeded_cluster().await;
    let url = cluster.url("analytics");
    // `spawn_app_with` also copies the template on the shared cluster; that
    // copy (`app.db`) is unused here: the server runs on `cluster`.
    let app = spawn_app_with(move |s| {
        s.database.url = Secret::new(url);
        s.database.create_database = false;
        s.database.seed_demo_on_empty = false;
        // A down database must fail requests fast.
        s.database.acquire_timeout_ms = 300;
        s.cache.default_ttl_seconds = 1;
        s.cache.recent_ttl_seconds = 1;
        s.cache.l1_enabled = false;
        s.freshness.stale_if_error_seconds = STALE_IF_ERROR_SECONDS;
    })
    .await;

    // The changed entry: cached, then invalidated by a new sale in its month.
    let (status, x_cache, _, before_change) = ask(&app, &changed()).await;
    assert_eq!((status, x_cache.as_str()), (StatusCode::OK, "MISS"));
    let invalidations = app.app_counter("invalidations").await;
    let mut writer = PgConnection::connect(&cluster.url("analytics")).await.expect("connect");
    sqlx::query(
        "INSERT INTO sales (id, store_id, channel_id, created_at, status, total_amount)
         SELECT max(id) + 1, 1, 2, '2024-05-15 12:00:00+00', 'COMPLETED', 10 FROM sales",
    )
    .execute(&mut writer)
    .await
    .expect("insert");
    writer.close().await.expect("close");
    let notified = Instant::now();
    while app.app_counter("invalidations").await == invalidations {
        assert!(
            notified.elapsed() < Duration::from_secs(2),
            "the change was not captured"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The aged entry: cached last, so that its short window holds the rest.
    let (status, x_cache, _, aged_before) = ask(&app, &aged()).await;
    assert_eq!((status, x_cache.as_str()), (StatusCode::OK, "MISS"));
    let aged_at = Instant::now();

    cluster.stop();
    // Ages are whole seconds: a second after it was computed it is past its
    // 1 s TTL; until three seconds after, within TTL + 3 s.
    tokio::time::sleep(Duration::from_millis(1_100).saturating_sub(aged_at.elapsed())).await;
    let (status, x_cache, _, body) = ask(&app, &aged()).await;
    assert_eq!(status, 200, "past its TTL, within the window: {body}");
    assert_eq!(x_cache, "STALE");
    assert_eq!(body["metadata"]["stale"], json!(true));
    let age = body["metadata"]["age_seconds"].as_u64().expect("age_seconds");
    assert!((1..=STALE_IF_ERROR_SECONDS).contains(&age), "age {age}");
    assert_eq!(body["data"], aged_before["data"]);

    let (status, x_cache, _, body) = ask(&app, &changed()).await;
    assert_eq!(status, 200, "invalidated, within its TTL: {body}");
    assert_eq!(x_cache, "STALE");
    assert_eq!(body["metadata"]["stale"], json!(true));
    assert_eq!(body["data"], before_change["data"], "the answer from before the change");

    let started = Instant::now();
    let (status, _, retry_after, body) = ask(&app, &uncached()).await;
    let took = started.elapsed();
    assert_database_unavailable(status, retry_after, &body, "nothing cached");
    assert!(
        took < Duration::from_secs(2),
        "a down database took {took:?} to fail a request"
    );

    // Three failures opened the database's breaker: now refused at once, and
    // health answers from the breaker, without waiting on the pool. "At
    // once" is checked against the pool's 2 s acquire timeout with a wide
    // margin (a loaded CI machine must not fail it); the latencies themselves
    // are measured by `bench/run.sh faults`.
    let started = Instant::now();
    let (status, _, retry_after, body) = ask(&app, &json!({"metrics": ["sales_count"], "dimensions": ["state"]})).await;
    let took = started.elapsed();
    assert_database_unavailable(status, retry_after, &body, "breaker open");
    assert!(
        took < Duration::from_millis(1_000),
        "the open breaker still took {took:?}"
    );
    let started = Instant::now();
    let health: Value = app.client.get(app.url("/health")).json_body().await;
    assert_eq!(health["database"]["status"], json!("down"), "{health}");
    assert!(
        started.elapsed() < Duration::from_millis(1_000),
        "health waited on the pool"
    );

    health_until(&app, Instant::now() + Duration::from_secs(5), |h| {
        h["status"] == json!("down") && h["freshness"]["listener"] == json!("down")
    })
    .await;

    // Beyond TTL + window: no longer served. Age >= 4 s once 4 s have passed.
    let beyond = Duration::from_secs(1 + STALE_IF_ERROR_SECONDS) + Duration::from_millis(100);
    tokio::time::sleep(beyond.saturating_sub(aged_at.elapsed())).await;
    let (status, _, retry_after, body) = ask(&app, &aged()).await;
    assert_database_unavailable(status, retry_after, &body, "past TTL + stale-if-error");

    // Back: the same server answers fresh again, and listens for changes.
    cluster.start().await;
    let restarted = Instant::now();
    loop {
        let (status, x_cache, _, body) = ask(&app, &aged()).await;
        if status == 200 {
            assert!(
                restarted.elapsed() < Duration::from_millis(1_500),
                "the breaker closes within a second of recovery"
            );
            assert_ne!(x_cache, "STALE", "{body}");
            assert_eq!(body["metadata"]["stale"], json!(false));
            break;
        }
        assert!(
            restarted.elapsed() < Duration::from_secs(10),
            "no answer 10 s after the restart: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, x_cache, _, body) = ask(&app, &changed()).await;
    assert_eq!((status, x_cache.as_str()), (StatusCode::OK, "MISS"), "{body}");
    let revenue = |b: &Value| b["data"][0]["revenue"].as_f64().expect("revenue");
    assert!(
        (revenue(&body) - (revenue(&before_change) + 10.0)).abs() < 1e-6,
        "the change is in the answer: {body}"
    );
    health_until(&app, restarted + Duration::from_secs(10), |h| {
        h["status"] == json!("ok") && h["freshness"]["listener"] == json!("up")
    })
    .await;
}

/// `docker compose up` on a fresh volume: the API starts before PostgreSQL
/// accepts connections. Start-up waits for it (bounded), then serves.
#[tokio::test]
async fn start_up_waits_for_a_database_that_is_not_up_yet() {
    let cluster = seeded_cluster().await;
    cluster.stop();
    let url = cluster.url("analytics");
    let (started, ()) = tokio::join!(
        spawn_app_with(move |s| {
            s.database.url = analytics_api::config::Secret::new(url);
            s.database.startup_wait_seconds = 60;
        }),
        async {
            tokio::time::sleep(Duration::from_millis(1_500)).await;
            cluster.start().await;
        }
    );
    let (status, _, _, body) = ask(&started, &uncached()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}
