//! Tenant isolation, API keys and rate limits. Data leaking between tenants
//! through the cache is the worst failure of this kind of system, so every
//! path is checked here rather than assumed.

use std::collections::BTreeMap;

use analytics_api::config::{Settings, TenantSettings};
use analytics_api::tenancy::keys;
use serde_json::{json, Value};

use crate::helpers::{spawn_app_with, RedisProcess, SendJson, TestApp};

pub const KEY_A: &str = "ak_tenant_a_test_key_0000000000000000000000";
pub const KEY_B: &str = "ak_tenant_b_test_key_1111111111111111111111";

pub fn tenant(id: &str, key: &str, filters: Value, rate_limit: Option<u64>) -> TenantSettings {
    let filters: BTreeMap<String, Value> = serde_json::from_value(filters).expect("filters");
    TenantSettings {
        id: id.into(),
        api_key_hashes: vec![keys::digest_hex(key)],
        row_filters: [("sales".to_owned(), filters)].into_iter().collect(),
        rate_limit_per_minute: rate_limit,
    }
}

pub fn two_tenants(settings: &mut Settings) {
    settings.auth.required = true;
    settings.auth.tenants = vec![
        tenant("tenant_a", KEY_A, json!({"store_id": {"in": [1, 2, 3]}}), None),
        tenant("tenant_b", KEY_B, json!({"state": "RJ"}), None),
    ];
}

pub async fn ok_as(app: &TestApp, key: &str, body: &Value) -> Value {
    let response = app.query_as(key, body).await;
    assert_eq!(response.status(), 200);
    response.json().await.expect("json")
}

fn by_store() -> Value {
    json!({"metrics": ["revenue", "sales_count"], "dimensions": ["store_id", "state"]})
}

async fn assert_only_own_rows(app: &TestApp, key: &str, tenant: &str) -> Value {
    let body = ok_as(app, key, &by_store()).await;
    let rows = body["data"].as_array().expect("rows");
    assert!(!rows.is_empty(), "{tenant} sees its own rows");
    for row in rows {
        match tenant {
            "tenant_a" => assert!(
                [1, 2, 3].contains(&row["store_id"].as_i64().unwrap_or(-1)),
                "{tenant}: {row}"
            ),
            _ => assert_eq!(row["state"], json!("RJ"), "{tenant}: {row}"),
        }
    }
    body
}

#[tokio::test]
async fn tenants_never_receive_each_others_rows_in_either_order() {
    for first_is_a in [true, false] {
        let app = spawn_app_with(two_tenants).await;
        let order = if first_is_a {
            [("tenant_a", KEY_A), ("tenant_b", KEY_B)]
        } else {
            [("tenant_b", KEY_B), ("tenant_a", KEY_A)]
        };
        // Twice each: the second answer comes from the cache.
        for _ in 0..2 {
            for (tenant, key) in order {
                let body = assert_only_own_rows(&app, key, tenant).await;
                assert!(body["metadata"]["cache_key"]
                    .as_str()
                    .is_some_and(|k| k.contains(&format!(":query:{tenant}:"))));
            }
        }
        // Same through Redis only (L1 holds the first answers; clear it by key).
        let a = ok_as(&app, KEY_A, &by_store()).await;
        let b = ok_as(&app, KEY_B, &by_store()).await;
        assert_ne!(a["metadata"]["cache_key"], b["metadata"]["cache_key"]);
        assert_ne!(a["data"], b["data"]);
    }
}

#[tokio::test]
async fn a_request_filter_cannot_widen_the_tenant_scope() {
    let app = spawn_app_with(two_tenants).await;
    let widened = json!({"metrics": ["sales_count"], "dimensions": ["store_id"], "filters": {"store_id": {"in": [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]}}});
    let body = ok_as(&app, KEY_A, &widened).await;
    for row in body["data"].as_array().expect("rows") {
        assert!([1, 2, 3].contains(&row["store_id"].as_i64().unwrap_or(-1)), "{row}");
    }
    let expected: i64 =
        sqlx::query_scalar("SELECT count(*) FROM sales WHERE status = 'COMPLETED' AND store_id IN (1, 2, 3)")
            .fetch_one(&app.db)
            .await
            .expect("sql");
    let total: i64 = body["data"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| r["sales_count"].as_i64().unwrap_or(0))
        .sum();
    assert_eq!(total, expected);
    // A `tenant` parameter is ignored for tenant keys.
    let response = app
        .client
        .post(app.url("/analytics/query?tenant=tenant_b"))
        .bearer_auth(KEY_A)
        .json(&by_store())
        .send()
        .await
        .expect("request");
    let body: Value = response.json().await.expect("json");
    assert!(body["metadata"]["cache_key"]
        .as_str()
        .is_some_and(|k| k.contains(":query:tenant_a:")));
}

#[tokio::test]
async fn missing_wrong_and_revoked_keys_get_401() {
    let app = spawn_app_with(two_tenants).await;
    let query = json!({"metrics": ["revenue"]});
    assert_eq!(app.query(query.clone()).await.status(), 401, "missing key");
    assert_eq!(app.query_as("ak_wrong", &query).await.status(), 401, "wrong key");
    let x_api_key = app
        .client
        .post(app.url("/analytics/query"))
        .header("x-api-key", KEY_A)
        .json(&query)
        .send()
        .await
        .expect("request");
    assert_eq!(x_api_key.status(), 200, "X-API-Key works too");

    let stored = keys::create(&app.db, "tenant_b").await.expect("create key");
    assert_eq!(
        app.query_as(&stored, &query).await.status(),
        200,
        "a key from the api_keys table"
    );
    // Revocation is seen once the server's key cache entry expires
    // (auth.key_cache_seconds); a key revoked before first use fails at once.
    let revoked = keys::create(&app.db, "tenant_b").await.expect("create key");
    assert_eq!(
        keys::revoke(&app.db, &revoked[..keys::KEY_PREFIX.len() + 8])
            .await
            .expect("revoke"),
        1
    );
    assert_eq!(app.query_as(&revoked, &query).await.status(), 401, "revoked key");

    let undeclared = keys::create(&app.db, "nobody").await.expect("create key");
    assert_eq!(
        app.query_as(&undeclared, &query).await.status(),
        401,
        "a key of an undeclared tenant fails closed"
    );
}

#[tokio::test]
async fn tenant_keys_reach_only_their_own_cache_namespace() {
    let app = spawn_app_with(two_tenants).await;
    let a_key = ok_as(&app, KEY_A, &by_store()).await["metadata"]["cache_key"]
        .as_str()
        .expect("key")
        .to_owned();
    let b_key = ok_as(&app, KEY_B, &by_store()).await["metadata"]["cache_key"]
        .as_str()
        .expect("key")
        .to_owned();
    let clear = |key: &'static str, params: Vec<(&'static str, String)>| {
        app.client
            .post(app.url("/cache/clear"))
            .bearer_auth(key)
            .query(&params)
            .send()
    };
    // B's patterns, B's tenant parameter and B's exact key never reach B's entries.
    for pattern in [
        "*",
        &b_key,
        &format!("{}:query:tenant_b:*", app.prefix),
        "../*",
        "*tenant_b*",
    ] {
        let response = clear(KEY_A, vec![("pattern", pattern.to_owned())])
            .await
            .expect("clear");
        assert_eq!(response.status(), 200, "{pattern}");
        let body: Value = response.json().await.expect("json");
        assert!(
            body["pattern"]
                .as_str()
                .is_some_and(|p| p.starts_with(&format!("{}:query:tenant_a:", app.prefix))),
            "{body}"
        );
    }
    let mut redis = app.redis().await;
    assert!(
        redis::AsyncCommands::exists::<_, bool>(&mut redis, &b_key)
            .await
            .expect("EXISTS"),
        "B's entry survived A's clears"
    );
    assert!(
        !redis::AsyncCommands::exists::<_, bool>(&mut redis, &a_key)
            .await
            .expect("EXISTS"),
        "A cleared its own"
    );
    let other = clear(KEY_A, vec![("tenant", "tenant_b".into())]).await.expect("clear");
    assert_eq!(other.status(), 403);
    let delete = app
        .client
        .delete(app.url(&format!("/cache/key/{b_key}")))
        .bearer_auth(KEY_A)
        .send()
        .await
        .expect("delete");
    assert_eq!(delete.status(), 422);
    // Stats for a tenant count its own entries only.
    let stats: Value = app
        .client
        .get(app.url("/cache/stats"))
        .bearer_auth(KEY_B)
        .json_body()
        .await;
    assert_eq!(stats["tenant"], json!("tenant_b"));
    assert_eq!(stats["keys"], json!(1));
    assert!(stats.get("app").is_none(), "tenants do not see instance-wide counters");
    // Warm is admin-only.
    let warm = app
        .client
        .post(app.url("/cache/warm"))
        .bearer_auth(KEY_A)
        .send()
        .await
        .expect("warm");
    assert_eq!(warm.status(), 401);
}

#[tokio::test]
async fn the_admin_invalidates_by_tenant_by_dataset_or_both() {
    let app = spawn_app_with(two_tenants).await;
    let query = json!({"metrics": ["revenue"]});
    let fill = || async {
        ok_as(&app, KEY_A, &query).await;
        ok_as(&app, KEY_B, &query).await;
    };
    let app = &app;
    let clear = |params: Vec<(&'static str, &'static str)>| async move {
        let response = app
            .admin(app.client.post(app.url("/cache/clear")))
            .query(&params)
            .send()
            .await
            .expect("clear");
        assert_eq!(response.status(), 200);
        response.json::<Value>().await.expect("json")["deleted"]
            .as_u64()
            .expect("deleted")
    };
    fill().await;
    assert_eq!(clear(vec![("tenant", "tenant_a")]).await, 1);
    assert_eq!(clear(vec![("tenant", "tenant_b"), ("dataset", "sales")]).await, 1);
    fill().await;
    assert_eq!(clear(vec![("dataset", "sales")]).await, 2);
    let unknown = app
        .admin(app.client.post(app.url("/cache/clear")))
        .query(&[("dataset", "nope")])
        .send()
        .await
        .expect("clear");
    assert_eq!(unknown.status(), 422);
    // The admin may also query as a tenant, with that tenant's scope.
    let as_b = app
        .admin(app.client.post(app.url("/analytics/query?tenant=tenant_b")))
        .json(&by_store())
        .send()
        .await
        .expect("query");
    let body: Value = as_b.json().await.expect("json");
    assert!(body["data"]
        .as_array()
        .is_some_and(|rows| rows.iter().all(|r| r["state"] == json!("RJ"))));
}

fn limited(settings: &mut Settings, redis_url: String, limit: u64) {
    settings.redis.url = analytics_api::config::Secret::new(redis_url);
    settings.redis.breaker_probe_interval_ms = 200;
    settings.auth.required = true;
    settings.auth.tenants = vec![tenant("tenant_a", KEY_A, json!({}), Some(limit))];
}

#[tokio::test]
async fn the_rate_limit_is_shared_by_instances_and_falls_back_when_redis_dies() {
    let mut redis = RedisProcess::start().await;
    let url = redis.url();
    let first = spawn_app_with({
        let url = url.clone();
        move |s| limited(s, url, 6)
    })
    .await;
    // The second instance shares the first one's Redis and key prefix.
    let prefix = first.prefix.clone();
    let second = spawn_app_with(move |s| {
        limited(s, url, 6);
        s.cache.prefix = prefix;
    })
    .await;
    let query = json!({"metrics": ["revenue"]});
    let mut statuses = Vec::new();
    for i in 0..8 {
        let app = if i % 2 == 0 { &first } else { &second };
        let response = app.query_as(KEY_A, &query).await;
        if response.status() == 200 {
            assert_eq!(response.headers()["ratelimit-limit"], "6");
        }
        if response.status() == 429 {
            assert!(response.headers().contains_key("retry-after"));
            assert_eq!(response.headers()["ratelimit-remaining"], "0");
            assert!(response.headers().contains_key("ratelimit-reset"));
            let body: Value = response.json().await.expect("json");
            assert_eq!(body["error"]["code"], json!("rate_limited"));
            statuses.push(429);
        } else {
            statuses.push(response.status().as_u16());
        }
    }
    assert_eq!(
        statuses,
        vec![200, 200, 200, 200, 200, 200, 429, 429],
        "one budget of 6 across both instances"
    );

    redis.kill();
    // Without Redis each instance limits locally with the same budget.
    let mut allowed = 0;
    for _ in 0..8 {
        let response = first.query_as(KEY_A, &query).await;
        assert!(
            response.status() == 200 || response.status() == 429,
            "{}",
            response.status()
        );
        if response.status() == 200 {
            allowed += 1;
        }
    }
    assert_eq!(
        allowed, 6,
        "the local fallback admits the per-instance budget, then refuses"
    );
}
