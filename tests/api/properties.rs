//! Property test: random JSON thrown at `/analytics/query` never gets a 500
//! and never brings the server down.

use proptest::prelude::*;
use serde_json::{json, Map, Value};

use crate::helpers::spawn_app;

/// Names that exist mixed with names that do not, so generated requests
/// reach validation and SQL generation, not only the parser.
const NAMES: &[&str] = &[
    "revenue",
    "faturamento",
    "sales_count",
    "channel",
    "store_id",
    "day",
    "hour",
    "state",
    "nope",
    "",
    "'; --",
    "dataset",
    "metrics",
    "in",
    "eq",
    "gte",
    "not_in",
    "2024-01-01",
    "sales",
];

fn name() -> impl Strategy<Value = String> {
    prop_oneof![prop::sample::select(NAMES).prop_map(str::to_owned), "\\PC{0,12}"]
}

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        name().prop_map(Value::from),
    ]
}

fn value() -> impl Strategy<Value = Value> {
    scalar().prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(name(), inner, 0..5).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Mostly well-shaped requests with random parts, plus fully random JSON.
fn request() -> impl Strategy<Value = Value> {
    let shaped = (
        prop::collection::vec(name(), 0..4),
        prop::collection::vec(name(), 0..3),
        prop::collection::btree_map(name(), value(), 0..3),
        prop::option::of(value()),
        prop::option::of(value()),
        prop::option::of(value()),
    )
        .prop_map(|(metrics, dimensions, filters, date_range, order_by, limit)| {
            let mut object = Map::new();
            object.insert("metrics".into(), json!(metrics));
            object.insert("dimensions".into(), json!(dimensions));
            object.insert("filters".into(), Value::Object(filters.into_iter().collect()));
            for (key, part) in [("date_range", date_range), ("order_by", order_by), ("limit", limit)] {
                if let Some(part) = part {
                    object.insert(key.into(), part);
                }
            }
            Value::Object(object)
        });
    prop_oneof![3 => shaped, 1 => value()]
}

#[test]
fn random_json_never_gets_a_500() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let app = runtime.block_on(spawn_app());
    let config = ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    proptest!(config, |(body in request())| {
        let status = runtime.block_on(async {
            app.client
                .post(app.url("/analytics/query"))
                .header("content-type", "application/json")
                .body(body.to_string())
                .send()
                .await
                .map(|r| r.status().as_u16())
        });
        let status = status.map_err(|e| TestCaseError::fail(format!("server unreachable: {e}")))?;
        prop_assert!(status < 500, "{} for {}", status, body);
    });
    let health = runtime.block_on(async { app.client.get(app.url("/health/live")).send().await.map(|r| r.status()) });
    assert_eq!(health.map(|s| s.as_u16()).ok(), Some(200), "the server is still up");
}

/// Query-string parameters the routes read, with random values.
const PARAMS: &[&str] = &[
    "q", "cache", "tenant", "pattern", "key", "prefix", "data", "dataset", "limit",
];

fn query_string() -> impl Strategy<Value = Vec<(String, String)>> {
    prop::collection::vec((prop::sample::select(PARAMS).prop_map(str::to_owned), name()), 0..3)
}

/// The equivalent of schemathesis against `/openapi.json`: every route of the
/// route table (the table the spec is checked against), with random query
/// parameters, bodies, content types and credentials, never answers a 5xx,
/// and every error is the contract's JSON.
#[test]
fn every_route_answers_random_input_without_a_server_error() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let app = runtime.block_on(spawn_app());
    let routes: Vec<(String, String)> = analytics_api::http::routes()
        .into_iter()
        .map(|r| (r.method.to_string(), r.path.replace("{*key}", "x")))
        .collect();
    let config = ProptestConfig {
        cases: 384,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    let strategy = (
        prop::sample::select(routes),
        query_string(),
        prop::option::of(request()),
        prop::sample::select(&["application/json", "text/plain", ""][..]),
        any::<bool>(),
        name(),
    );
    proptest!(config, |(((method, path), params, body, content_type, admin, tail) in strategy)| {
        let path = if path.ends_with("/x") { format!("{}/{}", &path[..path.len() - 2], urlencoding(&tail)) } else { path };
        let (status, json_error) = runtime.block_on(async {
            let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
            let mut request = app.client.request(method, app.url(&path)).query(&params);
            if admin {
                request = app.admin(request);
            }
            if !content_type.is_empty() {
                request = request.header("content-type", content_type);
            }
            if let Some(body) = &body {
                request = request.body(body.to_string());
            }
            let response = request.send().await?;
            let status = response.status().as_u16();
            let is_json = response
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.starts_with("application/json"));
            let text = response.text().await?;
            let shaped = serde_json::from_str::<Value>(&text).is_ok_and(|v| v["error"]["code"].is_string());
            Ok::<_, reqwest::Error>((status, status < 400 || (is_json && shaped)))
        }).map_err(|e| TestCaseError::fail(format!("server unreachable: {e}")))?;
        prop_assert!(status < 500, "{} for {} {} {:?}", status, path, content_type, body);
        prop_assert!(json_error, "{} for {}: not the contract's JSON error", status, path);
    });
    let health = runtime.block_on(async { app.client.get(app.url("/health/live")).send().await.map(|r| r.status()) });
    assert_eq!(health.map(|s| s.as_u16()).ok(), Some(200), "the server is still up");
}

/// Percent-encodes a path segment (reqwest encodes query strings itself).
fn urlencoding(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b':' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
