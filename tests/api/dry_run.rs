//! `POST /analytics/sql`: the plan of a query (statement, parameters, the
//! rollup it would read, cache key and state) without running it.

use serde_json::{json, Value};

use crate::helpers::{spawn_app_with, TestApp};
use crate::tenancy::{two_tenants, KEY_A};

async fn plan(app: &TestApp, key: Option<&str>, body: &Value) -> (u16, Value) {
    let mut request = app.client.post(app.url("/analytics/sql")).json(body);
    request = match key {
        Some(key) => request.bearer_auth(key),
        None => app.admin(request),
    };
    let response = request.send().await.expect("request");
    (response.status().as_u16(), response.json().await.expect("json"))
}

#[tokio::test]
async fn the_plan_shows_the_statement_the_rollup_and_the_cache_state_without_running() {
    let app = spawn_app_with(two_tenants).await;
    let query = json!({"metrics": ["revenue", "faturamento"], "dimensions": ["channel"],
                       "date_range": {"start_date": "2024-05-01", "end_date": "2024-05-31"}});
    let (status, before) = plan(&app, Some(KEY_A), &query).await;
    assert_eq!(status, 200, "{before}");
    let sql = before["sql"].as_str().expect("sql");
    assert!(sql.starts_with("SELECT count(*)::int8 AS total_rows"), "{sql}");
    assert!(
        sql.contains("$1") && !sql.contains("2024-05"),
        "values are parameters: {sql}"
    );
    // Dates, zone, tenant A's row filter (store_id in 1,2,3), limit, offset.
    let params = before["params"].as_array().expect("params");
    assert!(
        params.contains(&json!("2024-05-01")) && params.contains(&json!([1, 2, 3])),
        "{before}"
    );
    assert_eq!(before["cached"], false);
    assert_eq!(before["tenant"], "tenant_a");
    assert!(before["cache_key"].as_str().expect("key").contains(":tenant_a:sales:"));
    assert!(["raw", "daily_store"].contains(&before["source"].as_str().expect("source")));

    // Nothing ran: the query's first answer is still a miss, with that key.
    let answer: Value = app
        .client
        .post(app.url("/analytics/query"))
        .bearer_auth(KEY_A)
        .json(&query)
        .send()
        .await
        .expect("query")
        .json()
        .await
        .expect("json");
    assert_eq!(answer["metadata"]["from_cache"], false);
    assert_eq!(answer["metadata"]["cache_key"], before["cache_key"]);
    let (_, after) = plan(&app, Some(KEY_A), &query).await;
    assert_eq!(after["cached"], true, "{after}");
    assert_eq!(after["cache_tier"], "l1");
    assert_eq!(after["source"], answer["metadata"]["source"]);

    // The admin plans for a tenant; bad requests are the query's errors.
    let (status, admin) = plan(&app, None, &query).await;
    assert_eq!((status, admin["tenant"].as_str()), (200, Some("default")));
    let (status, error) = plan(&app, Some(KEY_A), &json!({"metrics": ["nope"]})).await;
    assert_eq!((status, error["error"]["code"].as_str()), (422, Some("unknown_metric")));
    let response = app
        .client
        .post(app.url("/analytics/sql"))
        .bearer_auth(KEY_A)
        .body("{}")
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 415);
}

#[tokio::test]
async fn meta_lists_what_a_caller_may_ask_for_without_sql() {
    let app = spawn_app_with(two_tenants).await;
    let response = app
        .client
        .get(app.url("/analytics/meta"))
        .bearer_auth(KEY_A)
        .send()
        .await
        .expect("meta");
    assert_eq!(response.status(), 200);
    let meta: Value = response.json().await.expect("json");
    assert_eq!(meta["default_dataset"], "sales");
    let sales = &meta["datasets"][0];
    let metric = |name: &str| {
        sales["metrics"]
            .as_array()
            .and_then(|m| m.iter().find(|m| m["name"] == name))
            .cloned()
            .unwrap_or_else(|| panic!("{name}"))
    };
    assert_eq!(metric("revenue")["aliases"], json!(["faturamento"]));
    assert_eq!(metric("revenue")["aggregate"], "sum");
    assert_eq!(metric("revenue")["decimals"], 2);
    assert_eq!(metric("unique_customers")["aggregate"], Value::Null);
    let day = sales["dimensions"]
        .as_array()
        .and_then(|d| d.iter().find(|d| d["name"] == "day"))
        .cloned()
        .expect("day");
    assert_eq!(
        (day["type"].as_str(), day["grain"].as_str()),
        (Some("date"), Some("day"))
    );
    assert!(sales["rollups"].as_array().is_some_and(|r| r.len() == 3));
    assert!(!meta.to_string().contains("sum(s."), "no SQL leaves the server");
    // Like a query, it needs a key when keys are required.
    let anonymous = app.client.get(app.url("/analytics/meta")).send().await.expect("meta");
    assert_eq!(anonymous.status(), 401);
}
