//! Admin endpoints: auth, stats, clear, delete, warm.

use redis::AsyncCommands;
use serde_json::{json, Value};

use crate::helpers::{spawn_app, spawn_app_with, SendJson, TestApp};

async fn cache_key_of(app: &TestApp, query: Value) -> String {
    let body = app.query_ok(query).await;
    body["metadata"]["cache_key"].as_str().expect("key").to_owned()
}

#[tokio::test]
async fn admin_endpoints_need_the_token() {
    let app = spawn_app().await;
    let calls = [
        app.client.get(app.url("/cache/stats")),
        app.client.post(app.url("/cache/clear")),
        app.client.delete(app.url("/cache/key/x")),
        app.client.post(app.url("/cache/warm")),
        app.client.get(app.url("/api/v1/analytics/cache/stats")),
    ];
    for call in calls {
        let missing = call.try_clone().expect("clone").send().await.expect("send");
        assert_eq!(missing.status(), 401);
        assert_eq!(missing.headers()["www-authenticate"], "Bearer");
        let wrong = call.bearer_auth("not-the-token").send().await.expect("send");
        assert_eq!(wrong.status(), 401);
    }
}

#[tokio::test]
async fn admin_endpoints_are_403_naming_admin_token_when_none_is_configured() {
    let app = spawn_app_with(|s| s.auth.admin_token = None).await;
    let response = app
        .admin(app.client.get(app.url("/cache/stats")))
        .send()
        .await
        .expect("stats");
    assert_eq!(response.status(), 403);
    let body: Value = response.json().await.expect("json");
    assert!(body["error"]["message"]
        .as_str()
        .is_some_and(|m| m.contains("ADMIN_TOKEN")));
}

#[tokio::test]
async fn stats_counters_move_with_traffic() {
    let app = spawn_app().await;
    let before = app.cache_stats().await;
    assert_eq!(before["status"], json!("connected"));
    assert_eq!(before["breaker"], json!("closed"));
    let query = json!({"metrics": ["revenue"], "dimensions": ["channel"]});
    app.query_ok(query.clone()).await;
    app.query_ok(query.clone()).await;
    app.query_ok(query).await;
    let after = app.cache_stats().await;
    let app_stats = &after["app"];
    assert_eq!(app_stats["misses"], json!(1));
    assert_eq!(app_stats["hits"], json!(2));
    assert_eq!(app_stats["hits_l1"], json!(2));
    assert_eq!(app_stats["sets"], json!(1));
    assert_eq!(app_stats["total_requests"], json!(3));
    assert!((app_stats["hit_rate"].as_f64().unwrap_or_default() - 0.6667).abs() < 1e-3);
    assert!(app_stats["average_hit_ms"].as_f64().is_some());
    assert_eq!(after["l1"]["entries"], json!(1));
    assert!(after["l1"]["bytes"].as_u64().is_some_and(|b| b > 0));
    for field in [
        "memory_used_mb",
        "total_keys",
        "hit_rate",
        "connected_clients",
        "uptime_seconds",
    ] {
        assert!(after[field].is_number(), "{field}: {after}");
    }
}

#[tokio::test]
async fn clear_by_pattern_removes_only_matching_keys_and_never_foreign_ones() {
    let app = spawn_app().await;
    let mut redis = app.redis().await;
    let foreign = format!("other:{}", app.prefix);
    let lookalike = format!("{}x:query", app.prefix);
    let _: () = redis.set(&foreign, "keep").await.expect("SET");
    let _: () = redis.set(&lookalike, "keep").await.expect("SET");
    let revenue = cache_key_of(&app, json!({"metrics": ["revenue"]})).await;
    let count = cache_key_of(&app, json!({"metrics": ["sales_count"]})).await;

    let response = app
        .admin(app.client.post(app.url("/cache/clear")))
        .query(&[("pattern", revenue.as_str())])
        .send()
        .await
        .expect("clear");
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["deleted"], json!(1));
    assert!(!redis.exists::<_, bool>(&revenue).await.expect("EXISTS"));
    assert!(redis.exists::<_, bool>(&count).await.expect("EXISTS"));

    let body: Value = app
        .admin(app.client.post(app.url("/api/v1/analytics/cache/clear")))
        .query(&[("pattern", "*")])
        .json_body()
        .await;
    assert_eq!(body["deleted"], json!(1));
    assert_eq!(body["pattern"], json!(format!("{}:*", app.prefix)));
    assert!(!redis.exists::<_, bool>(&count).await.expect("EXISTS"));
    assert!(
        redis.exists::<_, bool>(&foreign).await.expect("EXISTS"),
        "a non-cache key survives"
    );
    assert!(
        redis.exists::<_, bool>(&lookalike).await.expect("EXISTS"),
        "a key sharing the prefix text survives"
    );
    let header = app.x_cache(json!({"metrics": ["sales_count"]})).await;
    assert_eq!(header, "MISS", "L1 was cleared too");
    let _: () = redis.del(&[&foreign, &lookalike]).await.expect("DEL");
}

#[tokio::test]
async fn delete_key_by_name_and_by_query_data() {
    let app = spawn_app().await;
    let query = json!({"metrics": ["revenue"], "dimensions": ["state"]});
    let key = cache_key_of(&app, query.clone()).await;
    let body: Value = app
        .admin(app.client.delete(app.url(&format!("/cache/key/{key}"))))
        .json_body()
        .await;
    assert_eq!(body["deleted"], json!(1));
    assert_eq!(app.x_cache(query.clone()).await, "MISS");

    let body: Value = app
        .admin(app.client.delete(app.url("/cache/key")))
        .query(&[("prefix", app.prefix.as_str()), ("data", &query.to_string())])
        .json_body()
        .await;
    assert_eq!(body["deleted"], json!(1));
    assert_eq!(body["key"], json!(key));

    let outside = app
        .admin(app.client.delete(app.url("/cache/key/session:123")))
        .send()
        .await
        .expect("delete");
    assert_eq!(outside.status(), 422, "keys outside the namespace are refused");
}

#[tokio::test]
async fn warm_runs_given_queries_and_reports_failures() {
    let app = spawn_app().await;
    let queries = json!([
        {"metrics": ["revenue"], "dimensions": ["channel"]},
        {"metrics": ["sales_count"], "dimensions": ["city"]},
        {"metrics": ["nope"]},
    ]);
    let body: Value = app
        .admin(app.client.post(app.url("/cache/warm")))
        .json(&queries)
        .json_body()
        .await;
    assert_eq!(body["warmed"], json!(2));
    assert_eq!(body["failed"][0]["index"], json!(2));
    assert_eq!(body["failed"][0]["code"], json!("unknown_metric"));
    let response = app.query(queries[1].clone()).await;
    assert_eq!(response.headers()["x-cache"], "HIT");
}

#[tokio::test]
async fn warm_without_a_body_uses_the_configured_list() {
    let app = spawn_app_with(|s| s.cache.warm_queries = vec![json!({"metrics": ["discount_total"]})]).await;
    let body: Value = app.admin(app.client.post(app.url("/cache/warm"))).json_body().await;
    assert_eq!(body["warmed"], json!(1));
    assert_eq!(app.x_cache(json!({"metrics": ["discount_total"]})).await, "HIT");
}
