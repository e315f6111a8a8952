//! Every error code of the contract, each with its JSON shape.

use serde_json::{json, Value};

use crate::helpers::spawn_app;
use crate::helpers::SendJson;

async fn error_of(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body: Value = response
        .json()
        .await
        .unwrap_or_else(|e| panic!("status {status}: body is not JSON ({e})"));
    assert!(content_type.starts_with("application/json"), "{content_type}");
    assert!(
        body["error"]["code"].is_string() && body["error"]["message"].is_string(),
        "shape: {body}"
    );
    (status, body["error"].clone())
}

#[tokio::test]
async fn semantic_errors_are_422_with_code_and_field() {
    let app = spawn_app().await;
    let cases = [
        (json!({"metrics": ["nope"]}), "unknown_metric", "metrics[0]"),
        (
            json!({"metrics": ["revenue"], "dimensions": ["nope"]}),
            "unknown_dimension",
            "dimensions[0]",
        ),
        (
            json!({"metrics": ["revenue"], "filters": {"channel_id": {"like": 1}}}),
            "unknown_operator",
            "filters.channel_id.like",
        ),
        (
            json!({"metrics": ["revenue"], "filters": {"nope": 1}}),
            "unknown_dimension",
            "filters.nope",
        ),
        (
            json!({"metrics": ["revenue"], "filters": {"channel_id": "two"}}),
            "invalid_filter_value",
            "filters.channel_id",
        ),
        (
            json!({"metrics": ["revenue"], "filters": {"channel": {"in": "iFood"}}}),
            "invalid_filter_value",
            "filters.channel.in",
        ),
        (
            json!({"metrics": ["revenue"], "filters": {"channel_id": {"in": [1, "x"]}}}),
            "invalid_filter_value",
            "filters.channel_id.in[1]",
        ),
        (
            json!({"metrics": ["revenue"], "filters": {"day": {"gte": "2024-02-30"}}}),
            "invalid_filter_value",
            "filters.day.gte",
        ),
        (
            json!({"metrics": ["revenue"], "date_range": {"start_date": "2024-02-30", "end_date": "2024-03-01"}}),
            "invalid_date",
            "date_range.start_date",
        ),
        (
            json!({"metrics": ["revenue"], "date_range": {"start_date": "2024-03-02", "end_date": "2024-03-01"}}),
            "invalid_date_range",
            "date_range",
        ),
        (json!({"metrics": []}), "invalid_metrics", "metrics"),
        (json!({"metrics": vec!["revenue"; 21]}), "invalid_metrics", "metrics"),
        (
            json!({"metrics": ["revenue"], "dimensions": vec!["day"; 11]}),
            "invalid_dimensions",
            "dimensions",
        ),
        (
            json!({"metrics": ["revenue"], "limit": 10001}),
            "invalid_limit",
            "limit",
        ),
        (json!({"metrics": ["revenue"], "limit": 0}), "invalid_limit", "limit"),
        (
            json!({"metrics": ["revenue"], "offset": 100000000}),
            "invalid_offset",
            "offset",
        ),
        (
            json!({"metrics": ["revenue"], "order_by": [{"field": "channel"}]}),
            "invalid_order_by",
            "order_by[0].field",
        ),
        (
            json!({"metrics": ["revenue"], "order_by": [{"field": "revenue", "direction": "up"}]}),
            "invalid_order_by",
            "order_by[0].direction",
        ),
        (
            json!({"dataset": "nope", "metrics": ["revenue"]}),
            "unknown_dataset",
            "dataset",
        ),
        (
            json!({"metrics": ["revenue"], "filters": {"store_id": {"in": (0..1001).collect::<Vec<_>>()}}}),
            "invalid_filter_value",
            "filters.store_id.in",
        ),
    ];
    for (body, code, field) in cases {
        let (status, error) = error_of(app.query(body.clone()).await).await;
        assert_eq!(status, 422, "{body}: {error}");
        assert_eq!(error["code"], json!(code), "{body}: {error}");
        assert_eq!(error["field"], json!(field), "{body}: {error}");
    }
}

#[tokio::test]
async fn malformed_json_and_wrong_types_are_400() {
    let app = spawn_app().await;
    for (raw, code) in [
        ("{\"metrics\": [\"revenue\"", "malformed_json"),
        ("not json", "malformed_json"),
        ("{\"metrics\": \"revenue\"}", "invalid_request"),
        ("{\"metrics\": [\"revenue\"], \"limit\": -1}", "invalid_request"),
        ("{\"metrics\": [\"revenue\"], \"typo_field\": 1}", "invalid_request"),
        ("[]", "invalid_request"),
    ] {
        let response = app
            .client
            .post(app.url("/analytics/query"))
            .header("content-type", "application/json")
            .body(raw)
            .send()
            .await
            .expect("request");
        let (status, error) = error_of(response).await;
        assert_eq!(status, 400, "{raw}");
        assert_eq!(error["code"], json!(code), "{raw}");
    }
}

#[tokio::test]
async fn get_without_or_with_bad_q_is_400() {
    let app = spawn_app().await;
    let (status, error) = error_of(app.client.get(app.url("/analytics/query")).send().await.expect("get")).await;
    assert_eq!((status, error["field"].clone()), (400, json!("q")));
    let response = app
        .client
        .get(app.url("/analytics/query"))
        .query(&[("q", "{oops")])
        .send()
        .await
        .expect("get");
    let (status, error) = error_of(response).await;
    assert_eq!((status, error["code"].clone()), (400, json!("malformed_json")));
}

#[tokio::test]
async fn non_json_body_is_415() {
    let app = spawn_app().await;
    let response = app
        .client
        .post(app.url("/analytics/query"))
        .header("content-type", "text/plain")
        .body("{\"metrics\": [\"revenue\"]}")
        .send()
        .await
        .expect("request");
    let (status, error) = error_of(response).await;
    assert_eq!((status, error["code"].clone()), (415, json!("unsupported_media_type")));
}

#[tokio::test]
async fn body_over_the_limit_is_413() {
    let app = spawn_app_with_small_body_limit().await;
    let big = json!({"metrics": ["revenue"], "filters": {"channel": {"in": vec!["x".repeat(100); 200]}}});
    let (status, error) = error_of(app.query(big).await).await;
    assert_eq!((status, error["code"].clone()), (413, json!("payload_too_large")));
}

async fn spawn_app_with_small_body_limit() -> crate::helpers::TestApp {
    crate::helpers::spawn_app_with(|s| s.server.body_limit_bytes = 4096).await
}

#[tokio::test]
async fn unknown_routes_are_404_and_wrong_methods_405_in_json() {
    let app = spawn_app().await;
    let (status, error) = error_of(app.client.get(app.url("/nope")).send().await.expect("get")).await;
    assert_eq!((status, error["code"].clone()), (404, json!("not_found")));
    let (status, error) = error_of(app.client.put(app.url("/analytics/query")).send().await.expect("put")).await;
    assert_eq!((status, error["code"].clone()), (405, json!("method_not_allowed")));
}

#[tokio::test]
async fn statement_timeout_is_504() {
    let app = crate::helpers::spawn_app_with(|s| s.database.statement_timeout_ms = 1).await;
    let (status, error) = error_of(
        app.query(json!({"metrics": ["unique_customers", "revenue"], "dimensions": ["day", "store", "hour"]}))
            .await,
    )
    .await;
    assert_eq!((status, error["code"].clone()), (504, json!("query_timeout")));
}

#[tokio::test]
async fn unreachable_database_is_503_with_retry_after() {
    let app = crate::helpers::spawn_app().await;
    // Point a second app at a port where nothing listens: every acquire fails.
    let broken = crate::helpers::spawn_app_with(|s| {
        s.database.url = analytics_api::config::Secret::new("postgres://postgres@127.0.0.1:1/none");
        s.database.create_database = false;
        s.database.migrate_on_start = false;
        s.database.acquire_timeout_ms = 300;
    })
    .await;
    drop(app);
    let response = broken.query(json!({"metrics": ["revenue"]})).await;
    assert_eq!(
        response
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap_or_default().to_owned()),
        Some("1".into())
    );
    let (status, error) = error_of(response).await;
    assert_eq!((status, error["code"].clone()), (503, json!("database_unavailable")));
}

#[tokio::test]
async fn nul_characters_in_values_are_422_naming_the_field_never_500() {
    let app = spawn_app().await;
    for (filters, field) in [
        (json!({"state": "S\u{0}P"}), "filters.state"),
        (json!({"state": {"in": ["SP", "R\u{0}J"]}}), "filters.state.in[1]"),
    ] {
        let query = json!({"metrics": ["revenue"], "filters": filters});
        let (status, error) = error_of(app.query(query.clone()).await).await;
        assert_eq!(status, 422, "{query}");
        assert_eq!(error["code"], json!("invalid_filter_value"));
        assert_eq!(error["field"], json!(field));
        let get = app
            .client
            .get(app.url("/analytics/query"))
            .query(&[("q", query.to_string())])
            .send()
            .await
            .expect("get");
        assert_eq!(error_of(get).await.0, 422, "GET ?q= {query}");
    }
    let warm: Value = app
        .admin(app.client.post(app.url("/cache/warm")))
        .json(&json!([{"metrics": ["revenue"], "filters": {"state": "S\u{0}P"}}]))
        .send()
        .await
        .expect("warm")
        .json()
        .await
        .expect("json");
    assert_eq!(warm["failed"][0]["code"], json!("invalid_filter_value"), "{warm}");
}

#[tokio::test]
async fn values_the_database_refuses_are_422_not_500() {
    // A dimension whose expression makes PostgreSQL refuse the values it
    // reads (SQLSTATE 22P02): the data-exception class answers 422.
    let model = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/model.toml")).expect("model");
    let model =
        format!("{model}\n[datasets.sales.dimensions.status_number]\nsql = \"(s.status)::int\"\ntype = \"integer\"\n");
    let path = std::env::temp_dir().join(format!("model-{}.toml", uuid::Uuid::new_v4().simple()));
    std::fs::write(&path, model).expect("write model");
    let app = crate::helpers::spawn_app_with(|s| s.model.path = path.clone()).await;
    let (status, error) = error_of(
        app.query(json!({"metrics": ["revenue"], "dimensions": ["status_number"]}))
            .await,
    )
    .await;
    let _ = std::fs::remove_file(&path);
    assert_eq!((status, error["code"].clone()), (422, json!("invalid_value")));
}

/// Sends `request` on a raw connection and returns the whole response.
async fn raw_exchange(app: &crate::helpers::TestApp, request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let address = app.address.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address).await.expect("connect");
    stream.write_all(request).await.expect("write");
    let mut response = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), stream.read_to_end(&mut response)).await;
    String::from_utf8_lossy(&response).into_owned()
}

#[tokio::test]
async fn errors_made_below_the_router_are_json_too() {
    // A head buffer larger than hyper's URI limit (64 KiB), so a long URI
    // meets that limit (414) before the buffer's (431).
    let app = crate::helpers::spawn_app_with(|s| s.server.max_header_bytes = 150_000).await;
    let long_q = |n: usize| format!("{{\"metrics\":[\"revenue\"],\"x\":\"{}\"}}", "a".repeat(n));
    let cases = [
        (
            format!("GET /analytics/query?q={} HTTP/1.1\r\nHost: x\r\n\r\n", long_q(90_000)),
            "414",
            "uri_too_long",
        ),
        (
            format!(
                "GET /health HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
                "b".repeat(200_000)
            ),
            "431",
            "headers_too_large",
        ),
        ("NOT HTTP AT ALL\r\n\r\n".to_owned(), "400", "bad_request"),
    ];
    for (request, status, code) in cases {
        let response = raw_exchange(&app, request.as_bytes()).await;
        assert!(response.starts_with(&format!("HTTP/1.1 {status} ")), "{response:.200}");
        assert!(response.contains("content-type: application/json"), "{response:.300}");
        let body = response.split("\r\n\r\n").nth(1).expect("body");
        let body: serde_json::Value = serde_json::from_str(body).expect("json body");
        assert_eq!(body["error"]["code"], code, "{body}");
    }
    // The server is unharmed.
    let response = raw_exchange(
        &app,
        b"GET /health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 200 "), "{response}");
}

/// A model whose SQL does not fit the database: `(field, broken model text)`.
fn broken_models() -> Vec<(&'static str, String)> {
    let model = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/model.toml")).expect("model");
    vec![
        (
            "metrics.revenue",
            model.replacen("of = \"s.total_amount\"", "of = \"s.total_amout\"", 1),
        ),
        (
            "joins.channels",
            model.replace("on = \"ch.id = s.channel_id\"", "on = \"ch.id = s.chanel_id\""),
        ),
        ("table", model.replace("table = \"sales\"", "table = \"sale\"")),
    ]
}

#[tokio::test]
async fn a_model_the_database_refuses_stops_the_start_naming_the_field() {
    for (field, text) in broken_models() {
        let path = std::env::temp_dir().join(format!("model-{}.toml", uuid::Uuid::new_v4().simple()));
        std::fs::write(&path, text).expect("model file");
        let error = crate::helpers::startup_error(|s| s.model.path = path.clone()).await;
        let _ = std::fs::remove_file(&path);
        assert!(
            error.contains("dataset `sales`") && error.contains(field) && error.contains("does not exist"),
            "{field}: {error}"
        );
    }
}

#[tokio::test]
async fn a_schema_change_under_a_running_server_names_the_field() {
    let app = crate::helpers::spawn_app_with(|s| s.rollups.enabled = false).await;
    sqlx::query("ALTER TABLE sales RENAME COLUMN total_discount TO total_discount_renamed")
        .execute(&app.db)
        .await
        .expect("rename");
    let (status, body) = error_of(app.query(json!({"metrics": ["discount_total"]})).await).await;
    assert_eq!(status, 500);
    assert_eq!(body["code"], "model_error", "{body}");
    let message = body["message"].as_str().expect("message");
    assert!(message.contains("metrics.discount_total"), "{message}");
    assert!(
        !message.contains("total_discount_renamed"),
        "no schema details to clients: {message}"
    );
    let health: Value = app.client.get(app.url("/health")).json_body().await;
    assert_eq!(health["status"], "degraded", "{health}");
    assert!(
        health["model"]
            .as_str()
            .is_some_and(|m| m.contains("metrics.discount_total")),
        "{health}"
    );
    // Other metrics still answer.
    assert_eq!(app.query(json!({"metrics": ["revenue"]})).await.status(), 200);
}

#[tokio::test]
async fn a_database_that_never_comes_up_is_named_by_address() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let error = crate::helpers::startup_error(|s| {
        s.database.url =
            analytics_api::config::Secret::new(format!("postgres://postgres:s3cret@127.0.0.1:{port}/nowhere"));
        s.database.startup_wait_seconds = 1;
    })
    .await;
    assert!(
        error.contains(&format!("127.0.0.1:{port}/nowhere")) && error.contains("DATABASE_URL"),
        "{error}"
    );
    assert!(!error.contains("s3cret"), "no password in messages: {error}");
}
