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
