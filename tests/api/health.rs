//! Health endpoints.

use serde_json::{json, Value};

use crate::helpers::{spawn_app, spawn_app_with, SendJson};

#[tokio::test]
async fn health_reports_database_cache_and_version() {
    let app = spawn_app().await;
    let response = app.client.get(app.url("/health")).send().await.expect("health");
    assert_eq!(response.status(), 200);
    assert!(
        response.headers().contains_key("x-request-id"),
        "every response carries a request id"
    );
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["status"], json!("ok"));
    assert_eq!(body["database"]["status"], json!("up"));
    assert!(body["database"]["latency_ms"].as_f64().is_some());
    assert_eq!(body["cache"]["redis"], json!("up"));
    assert_eq!(body["cache"]["breaker"], json!("closed"));
    assert_eq!(body["version"], json!(env!("CARGO_PKG_VERSION")));
}

#[tokio::test]
async fn live_and_ready_answer() {
    let app = spawn_app().await;
    for (path, status) in [("/health/live", "ok"), ("/health/ready", "ready")] {
        let body: Value = app.client.get(app.url(path)).json_body().await;
        assert_eq!(body["status"], json!(status), "{path}");
    }
}

#[tokio::test]
async fn health_is_503_when_the_database_is_down() {
    let app = spawn_app_with(|s| {
        s.database.url = analytics_api::config::Secret::new("postgres://postgres@127.0.0.1:1/none");
        s.database.create_database = false;
        s.database.migrate_on_start = false;
        s.database.acquire_timeout_ms = 300;
    })
    .await;
    let response = app.client.get(app.url("/health")).send().await.expect("health");
    assert_eq!(response.status(), 503);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["database"]["status"], json!("down"));
    let ready = app.client.get(app.url("/health/ready")).send().await.expect("ready");
    assert_eq!(ready.status(), 503);
    let live = app.client.get(app.url("/health/live")).send().await.expect("live");
    assert_eq!(live.status(), 200, "liveness does no I/O");
}

#[tokio::test]
async fn health_is_degraded_with_200_when_redis_is_down() {
    let app = spawn_app_with(|s| s.redis.url = analytics_api::config::Secret::new("redis://127.0.0.1:1")).await;
    let response = app.client.get(app.url("/health")).send().await.expect("health");
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["status"], json!("degraded"));
    assert_eq!(body["cache"]["redis"], json!("down"));
}

#[tokio::test]
async fn cors_preflight_is_answered() {
    let app = spawn_app().await;
    let response = app
        .client
        .request(reqwest::Method::OPTIONS, app.url("/analytics/query"))
        .header("origin", "https://dashboard.example")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .expect("preflight");
    assert!(response.status().is_success());
    assert!(response.headers().contains_key("access-control-allow-origin"));
}

#[tokio::test]
async fn shutdown_stops_the_server_without_failing_a_request_sent_before_it() {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (app, server) = crate::helpers::spawn_app_until(|_| {}, async {
        let _ = stopped.await;
    })
    .await;
    // A cold, heavy query sent just before shutdown begins.
    let in_flight = tokio::spawn({
        let client = app.client.clone();
        let url = app.url("/analytics/query");
        async move {
            client
                .post(url)
                .json(&json!({"metrics": ["unique_customers"], "dimensions": ["day", "store", "hour"]}))
                .send()
                .await
                .map(|r| r.status().as_u16())
        }
    });
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let _ = stop.send(());
    assert_eq!(
        in_flight.await.expect("task").expect("response"),
        200,
        "the in-flight request completed"
    );
    let finished = tokio::time::timeout(std::time::Duration::from_secs(15), server).await;
    assert!(finished.is_ok(), "the server stopped after draining");
    let refused = reqwest::Client::new().get(app.url("/health/live")).send().await;
    assert!(refused.is_err(), "no longer listening");
}
