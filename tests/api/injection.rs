//! Injection attempts: names are refused by the whitelist, values are bound.

use serde_json::json;

use crate::helpers::spawn_app;

const PAYLOADS: &[&str] = &[
    "revenue; DROP TABLE sales; --",
    "revenue\" FROM sales; --",
    "1) OR (1=1",
    "' OR '1'='1",
    "channel\"; DELETE FROM sales; --",
    "pg_sleep(10)",
];

#[tokio::test]
async fn injected_names_are_refused_with_422() {
    let app = spawn_app().await;
    for payload in PAYLOADS {
        for body in [
            json!({"metrics": [payload]}),
            json!({"metrics": ["revenue"], "dimensions": [payload]}),
            json!({"metrics": ["revenue"], "filters": {*payload: 1}}),
            json!({"metrics": ["revenue"], "filters": {"store_id": {*payload: 1}}}),
            json!({"metrics": ["revenue"], "order_by": [{"field": payload}]}),
            json!({"dataset": payload, "metrics": ["revenue"]}),
        ] {
            let response = app.query(body.clone()).await;
            assert_eq!(response.status(), 422, "{body}");
        }
    }
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM sales")
        .fetch_one(&app.db)
        .await
        .expect("sales survive");
    assert_eq!(count, crate::helpers::TEST_SALES as i64);
}

#[tokio::test]
async fn injected_values_are_bound_harmlessly() {
    let app = spawn_app().await;
    for payload in PAYLOADS {
        for filter in [
            json!({"channel": payload}),
            json!({"city": {"in": [payload, "São Paulo"]}}),
            json!({"status": {"ne": payload}}),
        ] {
            let body = json!({"metrics": ["sales_count"], "filters": filter});
            let response = app.query(body.clone()).await;
            assert_eq!(response.status(), 200, "{body}");
        }
        let body = app
            .query_ok(json!({"metrics": ["sales_count"], "filters": {"channel": payload}}))
            .await;
        assert_eq!(
            body["data"][0]["sales_count"],
            json!(0),
            "the payload is a value that matches nothing"
        );
    }
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM sales")
        .fetch_one(&app.db)
        .await
        .expect("sales survive");
    assert_eq!(count, crate::helpers::TEST_SALES as i64);
}
