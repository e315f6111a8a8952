//! `DELETE /cache/key?prefix=&data=`: deleting one entry by the query that
//! made it. The key depends on the tenant (and its row scope), so the entry
//! deleted must be the caller's own, or for the admin the named tenant's.

use serde_json::{json, Value};

use crate::helpers::{spawn_app_with, SendJson, TestApp};
use crate::tenancy::{ok_as, tenant, two_tenants, KEY_A, KEY_B};

fn revenue_by_state() -> Value {
    json!({"metrics": ["revenue"], "dimensions": ["state"]})
}

async fn key_of(app: &TestApp, credential: &str, query: &Value) -> String {
    ok_as(app, credential, query).await["metadata"]["cache_key"]
        .as_str()
        .expect("cache_key")
        .to_owned()
}

async fn exists(app: &TestApp, key: &str) -> bool {
    let mut redis = app.redis().await;
    redis::AsyncCommands::exists(&mut redis, key).await.expect("EXISTS")
}

fn delete_by_query(app: &TestApp, query: &Value, tenant: Option<&str>) -> reqwest::RequestBuilder {
    let mut params = vec![("prefix", app.prefix.clone()), ("data", query.to_string())];
    if let Some(tenant) = tenant {
        params.push(("tenant", tenant.to_owned()));
    }
    app.client.delete(app.url("/cache/key")).query(&params)
}

#[tokio::test]
async fn a_tenant_deletes_its_own_entry_by_query() {
    let app = spawn_app_with(two_tenants).await;
    let query = revenue_by_state();
    let a_key = key_of(&app, KEY_A, &query).await;
    let b_key = key_of(&app, KEY_B, &query).await;

    let body: Value = delete_by_query(&app, &query, None).bearer_auth(KEY_A).json_body().await;
    assert_eq!(body["key"], json!(a_key), "{body}");
    assert_eq!(body["deleted"], json!(1), "{body}");
    assert!(!exists(&app, &a_key).await, "A's entry is gone");
    assert!(exists(&app, &b_key).await, "B's entry for the same query survives");

    let foreign = delete_by_query(&app, &query, Some("tenant_b"))
        .bearer_auth(KEY_A)
        .send()
        .await
        .expect("delete");
    assert_eq!(foreign.status(), 403, "a tenant cannot name another tenant");
    assert!(exists(&app, &b_key).await);
}

#[tokio::test]
async fn the_admin_deletes_a_tenants_entry_by_query_with_tenant() {
    let app = spawn_app_with(two_tenants).await;
    let query = revenue_by_state();
    let a_key = key_of(&app, KEY_A, &query).await;
    let b_key = key_of(&app, KEY_B, &query).await;

    let body: Value = app
        .admin(delete_by_query(&app, &query, Some("tenant_b")))
        .json_body()
        .await;
    assert_eq!(body["key"], json!(b_key), "{body}");
    assert_eq!(body["deleted"], json!(1), "{body}");
    assert!(!exists(&app, &b_key).await);
    assert!(exists(&app, &a_key).await, "only the named tenant's entry is deleted");

    let unknown = app
        .admin(delete_by_query(&app, &query, Some("nobody")))
        .send()
        .await
        .expect("delete");
    assert_eq!(unknown.status(), 422);
}

#[tokio::test]
async fn the_admin_deletes_the_default_tenants_entry_with_its_row_scope() {
    // `default` itself may carry row filters: its key must be computed with them.
    let app = spawn_app_with(|s| {
        s.auth.tenants = vec![tenant("default", KEY_A, json!({"state": "RJ"}), None)];
    })
    .await;
    let query = revenue_by_state();
    let key = app.query_ok(query.clone()).await["metadata"]["cache_key"]
        .as_str()
        .expect("cache_key")
        .to_owned();
    let body: Value = app.admin(delete_by_query(&app, &query, None)).json_body().await;
    assert_eq!(body["key"], json!(key), "{body}");
    assert_eq!(body["deleted"], json!(1), "{body}");
    assert_eq!(app.x_cache(query).await, "MISS");
}
