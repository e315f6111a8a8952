//! Load shedding: when every statement slot and queue place is taken, a
//! request that needs the database is refused at once with a JSON 503 and
//! `Retry-After`, the database never runs more than the configured number of
//! statements, and one tenant's burst cannot take every place.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::helpers::{spawn_app_with, TestApp};
use crate::tenancy::{tenant, KEY_A, KEY_B};

/// The demo model plus a metric whose statement takes about half a second.
fn slow_model() -> std::path::PathBuf {
    let model = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/model.toml")).expect("model");
    let model =
        format!("{model}\n[datasets.sales.metrics.slow_count]\nsql = \"count(*) + (SELECT 0 FROM pg_sleep(0.5))\"\n");
    let path = std::env::temp_dir().join(format!("slow-model-{}.toml", uuid::Uuid::new_v4().simple()));
    std::fs::write(&path, model).expect("write model");
    path
}

/// A distinct slow query per `i` (no two share a flight).
fn slow(i: usize) -> Value {
    json!({"metrics": ["slow_count"], "filters": {"store_id": {"ne": 1_000_000 + i}}})
}

async fn send(app: &TestApp, key: &str, query: Value) -> (u16, Option<String>, Value, Duration) {
    let started = Instant::now();
    let response = app
        .client
        .post(app.url("/analytics/query"))
        .bearer_auth(key)
        .json(&query)
        .send()
        .await
        .expect("request");
    let took = started.elapsed();
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    (status, retry_after, response.json().await.expect("json"), took)
}

#[tokio::test]
async fn over_the_slots_and_the_queue_requests_are_shed_at_once() {
    let model = slow_model();
    let app = spawn_app_with(|s| {
        s.model.path = model.clone();
        s.cache.enabled = false;
        s.database.max_in_flight = 2;
        s.database.max_queued = 2;
        // One tenant here: no fairness share in the way.
        s.database.max_per_tenant = 4;
    })
    .await;
    let burst = (0..10).map(|i| send(&app, "", slow(i)));
    let sampler = async {
        tokio::time::sleep(Duration::from_millis(250)).await;
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM pg_stat_activity
             WHERE datname = current_database() AND state = 'active' AND query LIKE '%pg_sleep%'
               AND pid <> pg_backend_pid()",
        )
        .fetch_one(&app.db)
        .await
        .expect("pg_stat_activity")
    };
    let (results, running) = tokio::join!(futures::future::join_all(burst), sampler);
    let _ = std::fs::remove_file(&model);
    assert!(running <= 2, "{running} statements ran at once");
    let ok = results.iter().filter(|r| r.0 == 200).count();
    let shed: Vec<_> = results.iter().filter(|r| r.0 == 503).collect();
    assert_eq!((ok, shed.len()), (4, 6), "2 running + 2 queued answered, the rest shed");
    for (_, retry_after, body, took) in shed {
        assert_eq!(body["error"]["code"], json!("overloaded"), "{body}");
        assert_eq!(retry_after.as_deref(), Some("1"));
        assert!(
            *took < Duration::from_millis(400),
            "shed at once, not after waiting: {took:?}"
        );
    }
}

#[tokio::test]
async fn one_tenants_burst_leaves_room_for_another() {
    let model = slow_model();
    let app = spawn_app_with(|s| {
        s.model.path = model.clone();
        s.cache.enabled = false;
        s.auth.required = true;
        s.auth.tenants = vec![
            tenant("tenant_a", KEY_A, json!({}), None),
            tenant("tenant_b", KEY_B, json!({}), None),
        ];
        s.database.max_in_flight = 2;
        s.database.max_queued = 2;
        s.database.max_per_tenant = 3;
    })
    .await;
    let burst = (0..8).map(|i| send(&app, KEY_A, slow(i)));
    let other = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        send(&app, KEY_B, slow(100)).await
    };
    let (a, b) = tokio::join!(futures::future::join_all(burst), other);
    let _ = std::fs::remove_file(&model);
    assert_eq!(
        a.iter().filter(|r| r.0 == 200).count(),
        3,
        "tenant A holds at most 3 places"
    );
    assert_eq!(b.0, 200, "tenant B still got a place: {}", b.2);
}
