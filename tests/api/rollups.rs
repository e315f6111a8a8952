//! Rollups: covered queries answered from pre-aggregated tables, to the last
//! decimal what the raw table answers (a second instance with rollups off
//! runs every query on the raw table), kept exact through inserts, updates
//! and deletes; queries no rollup covers go to the raw table.

use std::time::{Duration, Instant};

use analytics_api::config::Settings;
use serde_json::{json, Value};

use crate::helpers::{spawn_app_with, SendJson, TestApp};
use crate::tenancy::{tenant, two_tenants, KEY_A, KEY_B};

const KEY_ALL: &str = "ak_tenant_all_test_key_22222222222222222222";

fn tenants(settings: &mut Settings) {
    two_tenants(settings);
    settings
        .auth
        .tenants
        .push(tenant("tenant_all", KEY_ALL, json!({}), None));
}

/// Waits until every rollup of `app` is built and answering.
async fn rollups_ready(app: &TestApp) -> Value {
    let started = Instant::now();
    loop {
        let stats = app.cache_stats().await;
        let rollups = stats["rollups"].as_array().cloned().unwrap_or_default();
        if !rollups.is_empty() && rollups.iter().all(|r| r["state"] == "ready") {
            return stats;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "rollups not ready: {stats}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// POSTs `query` as `key`; returns the `data` array exactly as sent (text)
/// and `metadata.source`.
async fn answer(app: &TestApp, key: &str, query: &Value) -> (String, String) {
    let response = app.query_as(key, query).await;
    let status = response.status();
    let text = response.text().await.expect("body");
    assert_eq!(status, 200, "{query}: {text}");
    let data_end = text.rfind(",\"metadata\":").expect("metadata");
    let data = text["{\"data\":".len()..data_end].to_owned();
    let body: Value = serde_json::from_str(&text).expect("json");
    let source = body["metadata"]["source"].as_str().expect("source").to_owned();
    (data, source)
}

/// Two instances on one database: rollups on, and rollups off (the raw table).
async fn pair(customize: impl Fn(&mut Settings) + Clone + Send + 'static) -> (TestApp, TestApp) {
    let with_rollups = customize.clone();
    let app = spawn_app_with(move |s| with_rollups(s)).await;
    let raw = app
        .spawn_peer(move |s| {
            customize(s);
            s.rollups.enabled = false;
            // Leave the triggers as the rollup instance installed them.
            s.freshness.install_triggers = false;
            // The reference: every answer computed now, from the raw table.
            s.cache.enabled = false;
        })
        .await;
    rollups_ready(&app).await;
    (app, raw)
}

fn no_cache(settings: &mut Settings) {
    tenants(settings);
    settings.cache.enabled = false;
}

const ALL_METRICS: [&str; 7] = [
    "revenue",
    "sales_count",
    "average_ticket",
    "discount_total",
    "cancelled_count",
    "cancellation_rate",
    "avg_delivery_seconds",
];

/// The held set: every rollup metric, dimension, operator and granularity,
/// ranges that start and end mid-month (in the dataset's zone) and none.
fn held_queries() -> Vec<(Value, &'static str)> {
    let range = json!({"start_date": "2024-02-13", "end_date": "2024-05-17"});
    let short = json!({"start_date": "2024-06-29", "end_date": "2024-06-30"});
    let mut queries = vec![
        (json!({"metrics": ALL_METRICS}), "daily_channel"),
        (json!({"metrics": ALL_METRICS, "date_range": range}), "daily_channel"),
        (
            json!({"metrics": ALL_METRICS, "dimensions": ["status"], "date_range": short}),
            "daily_channel",
        ),
        (
            json!({"metrics": ["revenue", "average_ticket"], "dimensions": ["month", "channel_type"]}),
            "daily_channel",
        ),
        (
            json!({"metrics": ["average_ticket", "cancellation_rate", "cancelled_count"],
                "dimensions": ["hour", "channel"], "date_range": range}),
            "hourly_channel",
        ),
        (
            json!({"metrics": ["sales_count"], "dimensions": ["weekday"], "date_range": range,
                "filters": {"channel_type": "D"}}),
            "daily_channel",
        ),
        (
            json!({"metrics": ["revenue", "sales_count"], "dimensions": ["week"],
                "filters": {"week": {"gte": "2024-03-04", "lt": "2024-04-29"}}}),
            "daily_channel",
        ),
        (
            json!({"metrics": ["revenue"], "dimensions": ["day"], "date_range": range,
                "filters": {"day": {"gt": "2024-03-01", "lte": "2024-03-20"}}}),
            "daily_channel",
        ),
        (
            json!({"metrics": ["cancelled_count", "discount_total"], "dimensions": ["status", "channel_id"],
                "filters": {"channel_id": {"not_in": [2, 5]}, "status": {"ne": "CANCELLED"}}}),
            "daily_channel",
        ),
        (
            json!({"metrics": ALL_METRICS, "dimensions": ["store", "city", "state"], "date_range": range,
                "order_by": [{"field": "revenue", "direction": "desc"}], "limit": 7, "offset": 2}),
            "daily_store",
        ),
        (
            json!({"metrics": ["revenue", "sales_count"], "dimensions": ["state"],
                "filters": {"store_id": {"in": [1, 4, 19, 25]}, "channel": ["iFood", "Rappi"]}}),
            "daily_store",
        ),
        (
            json!({"metrics": ["average_ticket"], "dimensions": ["city", "month"],
                "filters": {"state": {"in": ["SP", "RJ"]}, "store_id": {"lt": 30}}, "date_range": range}),
            "daily_store",
        ),
    ];
    // Every metric alone, by every plain dimension, over a mid-month range.
    for metric in ALL_METRICS {
        queries.push((
            json!({"metrics": [metric], "dimensions": ["channel", "day"],
                   "date_range": {"start_date": "2024-04-09", "end_date": "2024-04-23"}}),
            "daily_channel",
        ));
    }
    queries
}

/// Which rollup answers `query` for the tenant of `key`. Tenant A's row
/// filter (store_id) and tenant B's (state, through the stores join on
/// store_id) need `store_id`: only `daily_store` has it, and it has neither
/// hours nor status.
fn expected_source(query: &Value, rollup: &'static str, key: &str) -> &'static str {
    if key == KEY_ALL || rollup == "daily_store" {
        return rollup;
    }
    let mentions = |name: &str| {
        query["dimensions"].as_array().is_some_and(|d| d.contains(&json!(name))) || query["filters"].get(name).is_some()
    };
    if rollup == "hourly_channel" || mentions("status") {
        "raw"
    } else {
        "daily_store"
    }
}

#[tokio::test]
async fn rollup_answers_equal_raw_answers_to_the_last_decimal() {
    let (app, raw) = pair(no_cache).await;
    let mut compared = 0;
    for (query, rollup) in held_queries() {
        for key in [KEY_ALL, KEY_A, KEY_B] {
            let (from_raw, raw_source) = answer(&raw, key, &query).await;
            assert_eq!(raw_source, "raw");
            let (from_rollup, source) = answer(&app, key, &query).await;
            assert_eq!(source, expected_source(&query, rollup, key), "{key} {query}");
            assert!(
                from_rollup == from_raw,
                "{source} vs raw for {key}: {query}\n{from_rollup}\n{from_raw}"
            );
            compared += 1;
        }
    }
    assert!(compared > 50);

    // Operable: sizes, refresh time and the share of answers each served.
    let stats = app.cache_stats().await;
    for rollup in stats["rollups"].as_array().expect("rollups") {
        assert!(rollup["rows"].as_u64().expect("rows") > 0, "{rollup}");
        assert!(rollup["bytes"].as_u64().expect("bytes") > 0, "{rollup}");
        assert!(rollup["refreshed_at"].as_f64().is_some(), "{rollup}");
        assert!(rollup["queries_served"].as_u64().expect("served") > 0, "{rollup}");
    }
    let metrics = app.metrics_text().await;
    assert!(
        metrics.contains("analytics_rollup_rows{rollup=\"sales.daily_store\"}"),
        "{metrics}"
    );
    assert!(metrics.contains("analytics_rollup_queries_total{source=\"sales.daily_channel\"}"));
}

#[tokio::test]
async fn queries_no_rollup_covers_are_answered_from_the_raw_table() {
    let (app, _raw) = pair(no_cache).await;
    for query in [
        // A distinct count does not add up.
        json!({"metrics": ["unique_customers"], "dimensions": ["channel"]}),
        json!({"metrics": ["revenue", "unique_customers"]}),
        // Hours of a store: the hourly rollup has no stores, the daily ones no hours.
        json!({"metrics": ["revenue"], "dimensions": ["hour", "store"]}),
        // Store and status together are in no rollup.
        json!({"metrics": ["revenue"], "dimensions": ["store"], "filters": {"status": "COMPLETED"}}),
        // A metric the hourly rollup does not store.
        json!({"metrics": ["discount_total"], "dimensions": ["hour"]}),
    ] {
        let (_, source) = answer(&app, KEY_ALL, &query).await;
        assert_eq!(source, "raw", "{query}");
    }
}

async fn sql(app: &TestApp, statement: &str) {
    sqlx::query(statement).execute(&app.db).await.expect(statement);
}

#[tokio::test]
async fn changes_are_reaggregated_before_they_are_invalidated() {
    let (app, raw) = pair(|s| {
        tenants(s);
        // Only the rollup app caches; the raw one is the reference.
    })
    .await;
    let query = json!({"metrics": ALL_METRICS, "dimensions": ["channel", "store_id"],
                       "date_range": {"start_date": "2024-05-10", "end_date": "2024-05-25"}});
    let (before, source) = answer(&app, KEY_ALL, &query).await;
    assert_eq!(source, "daily_store");

    // A query loop racing every change: whatever it caches must not outlive
    // the change's invalidation.
    let racer = {
        let client = app.client.clone();
        let url = app.url("/analytics/query");
        let query = query.clone();
        tokio::spawn(async move {
            loop {
                let _ = client.post(&url).bearer_auth(KEY_ALL).json(&query).send().await;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let changes = [
        "INSERT INTO sales (id, store_id, channel_id, created_at, status, total_amount, total_discount, delivery_seconds)
         SELECT max(id) + g, 1 + g % 7, 1 + g % 6, timestamptz '2024-05-17 23:30:00-03', 'COMPLETED', 100 + g, g, 600 * g
         FROM sales, generate_series(1, 40) g GROUP BY g",
        "UPDATE sales SET status = 'CANCELLED' WHERE id IN (SELECT id FROM sales
         WHERE created_at >= '2024-05-12' AND created_at < '2024-05-14' ORDER BY id LIMIT 25)",
        "DELETE FROM sales WHERE created_at >= '2024-05-20' AND created_at < '2024-05-21'",
        // A month end in the dataset's zone that is already the next day in UTC.
        "UPDATE sales SET total_amount = total_amount + 1.11, created_at = timestamptz '2024-05-25 22:15:00-03'
         WHERE id = (SELECT min(id) FROM sales WHERE created_at >= '2024-05-01' AND created_at < '2024-05-02')",
    ];
    let mut previous = before;
    // Deleting sales needs their items gone first (a change the answer does not see).
    sql(
        &app,
        "DELETE FROM product_sales WHERE sale_id IN (SELECT id FROM sales
         WHERE created_at >= '2024-05-20' AND created_at < '2024-05-21')",
    )
    .await;
    for change in changes {
        sql(&app, change).await;
        let (expected, _) = answer(&raw, KEY_ALL, &query).await;
        assert!(expected != previous, "the change changes the answer: {change}");
        let started = Instant::now();
        loop {
            let (now, source) = answer(&app, KEY_ALL, &query).await;
            if now == expected {
                assert_eq!(source, "daily_store");
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "not converged after {change}: {now} vs {expected}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Once right, right for good: nothing stale was cached by the racer.
        for _ in 0..20 {
            assert!(
                answer(&app, KEY_ALL, &query).await.0 == expected,
                "stale after {change}"
            );
        }
        previous = expected;
    }
    racer.abort();
    let stats = rollups_ready(&app).await;
    let store = stats["rollups"]
        .as_array()
        .and_then(|r| r.iter().find(|r| r["name"] == "sales.daily_store"))
        .cloned()
        .expect("daily_store");
    assert_eq!(store["pending_changes"], 0, "{store}");
}

#[tokio::test]
async fn a_rollup_that_cannot_refresh_is_reported_then_rebuilt() {
    let (app, raw) = pair(|s| {
        no_cache(s);
        s.rollups.refresh_interval_ms = 2_000;
    })
    .await;
    let query = json!({"metrics": ["revenue", "sales_count"], "dimensions": ["channel"]});
    assert_eq!(answer(&app, KEY_ALL, &query).await.1, "daily_channel");

    // The table vanishes under the server; the next change cannot be applied.
    sql(&app, "DROP TABLE analytics_rollup_sales_daily_channel").await;
    sql(
        &app,
        "INSERT INTO sales (id, store_id, channel_id, created_at, status, total_amount)
         SELECT max(id) + 1, 3, 2, timestamptz '2024-06-10 12:00:00-03', 'COMPLETED', 77.70 FROM sales",
    )
    .await;
    let started = Instant::now();
    loop {
        let health: Value = app.client.get(app.url("/health")).json_body().await;
        if health["rollups_failing"] == json!(["sales.daily_channel"]) {
            assert_eq!(health["status"], "degraded", "{health}");
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(2), "not reported: {health}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Meanwhile the next smallest rollup answers, exactly, once it has
    // re-aggregated the change (right after daily_channel's attempt).
    let expected = answer(&raw, KEY_ALL, &query).await.0;
    let started = Instant::now();
    loop {
        let (data, source) = answer(&app, KEY_ALL, &query).await;
        assert_eq!(source, "daily_store");
        if data == expected {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "daily_store never saw the change"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The background loop rebuilds it; then it answers again, with the change.
    let started = Instant::now();
    loop {
        let (data, source) = answer(&app, KEY_ALL, &query).await;
        if source == "daily_channel" {
            assert!(data == answer(&raw, KEY_ALL, &query).await.0);
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(15), "not rebuilt");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let health: Value = app.client.get(app.url("/health")).json_body().await;
    assert_eq!(health["rollups_failing"], json!([]), "{health}");
}
