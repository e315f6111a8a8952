//! Cache-aside behaviour against the shared Redis (each test has its own prefix).

use std::time::Duration;

use redis::AsyncCommands;
use serde_json::{json, Value};

use crate::helpers::{spawn_app, spawn_app_with, TestApp};

fn month_query() -> Value {
    json!({
        "metrics": ["revenue", "average_ticket", "sales_count"],
        "dimensions": ["channel"],
        "date_range": {"start_date": "2024-03-01", "end_date": "2024-03-31"},
    })
}

async fn post(app: &TestApp, body: &Value) -> (String, Value) {
    let response = app.query(body.clone()).await;
    assert_eq!(response.status(), 200);
    let x_cache = response.headers()["x-cache"].to_str().expect("x-cache").to_owned();
    (x_cache, response.json().await.expect("json"))
}

#[tokio::test]
async fn a_miss_is_followed_by_an_l1_hit_with_the_same_data() {
    let app = spawn_app().await;
    let (first_header, first) = post(&app, &month_query()).await;
    let (second_header, second) = post(&app, &month_query()).await;
    assert_eq!((first_header.as_str(), second_header.as_str()), ("MISS", "HIT"));
    assert_eq!(second["metadata"]["from_cache"], json!(true));
    assert_eq!(second["metadata"]["cache_tier"], json!("l1"));
    assert_eq!(second["data"], first["data"]);
    assert_eq!(second["metadata"]["total_rows"], first["metadata"]["total_rows"]);
}

#[tokio::test]
async fn with_l1_off_hits_come_from_redis() {
    let app = spawn_app_with(|s| s.cache.l1_enabled = false).await;
    let (_, first) = post(&app, &month_query()).await;
    let (header, second) = post(&app, &month_query()).await;
    assert_eq!(header, "HIT");
    assert_eq!(second["metadata"]["cache_tier"], json!("redis"));
    assert_eq!(second["data"], first["data"]);
}

#[tokio::test]
async fn equivalent_requests_share_one_entry() {
    let app = spawn_app().await;
    let (_, base) = post(
        &app,
        &json!({"metrics": ["revenue", "sales_count"], "filters": {"channel_id": {"in": [2, 3]}}}),
    )
    .await;
    let key = base["metadata"]["cache_key"].clone();
    // Metrics come back in the order requested: aliases and repeats of the
    // same order share the entry, another order does not.
    let variants = [
        json!({"metrics": ["revenue", "sales_count"], "filters": {"channel_id": {"in": [3, 2]}}}),
        json!({"metrics": ["faturamento", "qtd_vendas", "revenue"], "filters": {"channel_id": {"in": [2, 3, 3, 2]}}}),
        json!({"filters": {"channel_id": [3, 2]}, "metrics": ["faturamento", "qtd_vendas"], "dataset": "sales"}),
        json!({"metrics": ["revenue", "sales_count"], "filters": {"channel_id": {"in": [2, 3]}}, "limit": 10000, "offset": 0}),
    ];
    for variant in variants {
        let (header, body) = post(&app, &variant).await;
        assert_eq!(body["metadata"]["cache_key"], key, "{variant}");
        assert_eq!(header, "HIT", "{variant}");
    }
    let (_, different) = post(
        &app,
        &json!({"metrics": ["revenue"], "filters": {"channel_id": {"in": [2, 3]}}}),
    )
    .await;
    assert_ne!(different["metadata"]["cache_key"], key);
}

#[tokio::test]
async fn ttls_follow_the_policy_and_are_set_in_redis() {
    let app = spawn_app().await;
    let mut redis = app.redis().await;
    let today = chrono::Utc::now().date_naive();
    let cases = [
        (
            json!({"metrics": ["revenue"], "date_range": {"start_date": "2024-01-01", "end_date": "2024-01-31"}}),
            600,
        ),
        (
            json!({"metrics": ["revenue"], "date_range": {"start_date": (today - chrono::Days::new(10)).to_string(), "end_date": (today - chrono::Days::new(5)).to_string()}}),
            300,
        ),
        (
            json!({"metrics": ["revenue"], "date_range": {"start_date": (today - chrono::Days::new(3)).to_string(), "end_date": today.to_string()}}),
            60,
        ),
        (json!({"metrics": ["revenue"]}), 60),
    ];
    for (query, expected) in cases {
        let (_, body) = post(&app, &query).await;
        assert_eq!(body["metadata"]["ttl_seconds"], json!(expected), "{query}");
        let key = body["metadata"]["cache_key"].as_str().expect("key").to_owned();
        let ttl: i64 = redis.ttl(&key).await.expect("TTL");
        assert!(
            ttl > expected - 5 && ttl <= expected,
            "{query}: redis TTL {ttl}, want ~{expected}"
        );
    }
}

#[tokio::test]
async fn entries_expire_after_their_ttl() {
    let app = spawn_app_with(|s| s.cache.recent_ttl_seconds = 1).await;
    let query = json!({"metrics": ["sales_count"]});
    let (_, first) = post(&app, &query).await;
    assert_eq!(first["metadata"]["ttl_seconds"], json!(1));
    let (header, _) = post(&app, &query).await;
    assert_eq!(header, "HIT");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let key = first["metadata"]["cache_key"].as_str().expect("key").to_owned();
    let exists: bool = app.redis().await.exists(&key).await.expect("EXISTS");
    assert!(!exists, "Redis expired the entry");
    let (header, _) = post(&app, &query).await;
    assert_eq!(header, "MISS", "L1 expired it too");
}

#[tokio::test]
async fn no_cache_header_and_refresh_parameter_bypass_the_read() {
    let app = spawn_app().await;
    post(&app, &month_query()).await;
    let response = app
        .client
        .post(app.url("/analytics/query"))
        .header("cache-control", "no-cache")
        .json(&month_query())
        .send()
        .await
        .expect("request");
    assert_eq!(response.headers()["x-cache"], "MISS");
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["metadata"]["from_cache"], json!(false));
    assert_eq!(body["metadata"]["cached"], json!(true), "the entry was refreshed");
    let response = app
        .client
        .post(app.url("/analytics/query?cache=refresh"))
        .json(&month_query())
        .send()
        .await
        .expect("request");
    assert_eq!(response.headers()["x-cache"], "MISS");
    let (header, _) = post(&app, &month_query()).await;
    assert_eq!(header, "HIT");
    let stats = app.cache_stats().await;
    assert_eq!(stats["app"]["bypasses"], json!(2));
}

#[tokio::test]
async fn results_over_max_entry_bytes_are_served_but_not_cached() {
    let app = spawn_app_with(|s| s.cache.max_entry_bytes = 200).await;
    let query = json!({"metrics": ["revenue"], "dimensions": ["store"]});
    let (_, first) = post(&app, &query).await;
    assert_eq!(first["metadata"]["cached"], json!(false));
    assert!(first["data"].as_array().is_some_and(|rows| rows.len() > 10));
    let (header, _) = post(&app, &query).await;
    assert_eq!(header, "MISS");
    let stats = app.cache_stats().await;
    assert_eq!(stats["app"]["uncacheable"], json!(2));
}

#[tokio::test]
async fn large_entries_are_stored_compressed_and_served_intact() {
    let app = spawn_app_with(|s| {
        s.cache.compress_above_bytes = 256;
        s.cache.l1_enabled = false;
    })
    .await;
    let query = json!({"metrics": ["revenue", "sales_count"], "dimensions": ["store", "channel"]});
    let (_, first) = post(&app, &query).await;
    let key = first["metadata"]["cache_key"].as_str().expect("key").to_owned();
    let stored: Vec<u8> = app.redis().await.get(&key).await.expect("GET");
    let raw = serde_json::to_vec(&first["data"]).expect("json");
    assert_eq!(stored[3], 1, "lz4 flag set");
    assert!(
        stored.len() < raw.len() / 2,
        "stored {} bytes for {} bytes of JSON",
        stored.len(),
        raw.len()
    );
    let (header, second) = post(&app, &query).await;
    assert_eq!(header, "HIT");
    assert_eq!(second["data"], first["data"]);
}

#[tokio::test]
async fn a_hundred_concurrent_cold_requests_run_one_statement() {
    let app = spawn_app().await;
    let query = json!({"metrics": ["unique_customers", "revenue"], "dimensions": ["store", "day"]});
    let requests = (0..100).map(|_| {
        let client = app.client.clone();
        let url = app.url("/analytics/query");
        let query = query.clone();
        tokio::spawn(async move { client.post(url).json(&query).send().await.map(|r| r.status().as_u16()) })
    });
    for handle in futures::future::join_all(requests).await {
        assert_eq!(handle.expect("task").expect("request"), 200);
    }
    let stats = app.cache_stats().await;
    assert_eq!(stats["app"]["db_queries"], json!(1), "{stats}");
}

#[tokio::test]
async fn a_failed_computation_is_not_cached() {
    let app = spawn_app_with(|s| s.database.statement_timeout_ms = 1).await;
    let query = json!({"metrics": ["unique_customers"], "dimensions": ["day", "store", "hour"]});
    let first = app.query(query.clone()).await;
    assert_eq!(first.status(), 504);
    let second = app.query(query).await;
    assert_eq!(second.status(), 504, "the error was not cached as a result");
    let stats = app.cache_stats().await;
    assert_eq!(stats["app"]["sets"], json!(0));
    assert_eq!(stats["app"]["db_queries"], json!(2));
}
