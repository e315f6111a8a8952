//! Knowing when data changes: change capture reaches every instance (and its
//! L1) within a second, precisely; stale answers only when they help; one
//! statement across instances. Real PostgreSQL, real Redis, two servers.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::helpers::{spawn_app, spawn_app_with, SendJson, TestApp};
use crate::tenancy::{ok_as, two_tenants, KEY_A, KEY_B};

/// How long a change may take to reach an instance.
const PROPAGATION: Duration = Duration::from_secs(1);

fn total_revenue() -> Value {
    json!({"metrics": ["revenue", "sales_count"]})
}

fn may_2024(filters: Value) -> Value {
    json!({"metrics": ["revenue", "sales_count"], "filters": filters,
           "date_range": {"start_date": "2024-05-01", "end_date": "2024-05-31"}})
}

/// POSTs `query` and returns (X-Cache, body).
async fn ask(app: &TestApp, query: &Value) -> (String, Value) {
    let response = app.query(query.clone()).await;
    assert_eq!(response.status(), 200);
    let x_cache = response.headers()["x-cache"].to_str().expect("x-cache").to_owned();
    (x_cache, response.json().await.expect("json"))
}

fn revenue(body: &Value) -> f64 {
    body["data"][0]["revenue"].as_f64().expect("revenue")
}

/// Polls until `check` holds, for at most `limit`; returns how long it took.
async fn within<F, Fut>(limit: Duration, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    loop {
        if check().await {
            return started.elapsed();
        }
        assert!(started.elapsed() < limit, "not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn insert_sale_now(app: &TestApp, channel: i32, amount: f64) {
    sqlx::query(
        "INSERT INTO sales (id, store_id, channel_id, created_at, status, total_amount)
         SELECT max(id) + 1, 1, $1, now(), 'COMPLETED', $2 FROM sales",
    )
    .bind(channel)
    .bind(amount)
    .execute(&app.db)
    .await
    .expect("insert");
}

#[tokio::test]
async fn a_new_sale_reaches_both_instances_and_their_l1_while_closed_months_stay_cached() {
    let a = spawn_app().await;
    let b = a.spawn_peer(|_| {}).await;
    a.rollups_settled().await;
    b.rollups_settled().await;
    let closed = may_2024(json!({}));
    let mut before = 0.0;
    for app in [&a, &b] {
        let (_, body) = ask(app, &total_revenue()).await;
        before = revenue(&body);
        ask(app, &closed).await;
        assert_eq!(ask(app, &total_revenue()).await.0, "HIT", "from L1 now");
        assert_eq!(ask(app, &closed).await.0, "HIT");
    }
    let closed_age = ask(&a, &closed).await.1["metadata"]["age_seconds"].clone();

    insert_sale_now(&a, 2, 1000.0).await;
    for app in [&a, &b] {
        within(PROPAGATION, || async {
            let (_, body) = ask(app, &total_revenue()).await;
            (revenue(&body) - (before + 1000.0)).abs() < 1e-6
        })
        .await;
        let (x_cache, body) = ask(app, &closed).await;
        assert_eq!(x_cache, "HIT", "a closed month is not touched by today's sale");
        assert!(body["metadata"]["age_seconds"].as_u64() >= closed_age.as_u64());
    }
    assert!(a.app_counter("invalidations").await >= 1);
}

#[tokio::test]
async fn moving_a_sale_between_channels_refreshes_both_and_spares_the_others() {
    let app = spawn_app().await;
    app.rollups_settled().await;
    let channel = |id: i64| may_2024(json!({"channel_id": id}));
    let mut before = Vec::new();
    for id in [2, 3, 5] {
        before.push(revenue(&ask(&app, &channel(id)).await.1));
        assert_eq!(ask(&app, &channel(id)).await.0, "HIT");
    }
    let moved: f64 = sqlx::query_scalar(
        "WITH one AS (SELECT id FROM sales WHERE channel_id = 2 AND status = 'COMPLETED'
                        AND created_at >= '2024-05-05' AND created_at < '2024-05-25' LIMIT 1)
         UPDATE sales s SET channel_id = 3 FROM one WHERE s.id = one.id RETURNING s.total_amount::float8",
    )
    .fetch_one(&app.db)
    .await
    .expect("update");
    within(PROPAGATION, || async { ask(&app, &channel(2)).await.0 == "MISS" }).await;
    let after2 = revenue(&ask(&app, &channel(2)).await.1);
    let (_, body3) = ask(&app, &channel(3)).await;
    assert!((after2 - (before[0] - moved)).abs() < 0.01, "channel 2 lost the sale");
    assert!(
        (revenue(&body3) - (before[1] + moved)).abs() < 0.01,
        "channel 3 gained it"
    );
    assert_eq!(ask(&app, &channel(5)).await.0, "HIT", "channel 5 is untouched");
}

#[tokio::test]
async fn a_copy_of_100000_rows_sends_one_notification() {
    let app = spawn_app().await;
    let mut listener = sqlx::postgres::PgListener::connect_with(&app.db)
        .await
        .expect("listener");
    listener.listen("analytics_changes").await.expect("listen");
    let mut rows = String::with_capacity(6_000_000);
    for i in 0..100_000u64 {
        rows.push_str(&format!(
            "{},{},{},2024-05-{:02} 12:00:00+00,COMPLETED,10.00\n",
            10_000_000 + i,
            1 + i % 5,
            1 + i % 6,
            1 + i % 28
        ));
    }
    let mut connection = app.db.acquire().await.expect("connection");
    let mut copy = connection
        .copy_in_raw("COPY sales (id, store_id, channel_id, created_at, status, total_amount) FROM STDIN (FORMAT csv)")
        .await
        .expect("copy");
    copy.send(rows.as_bytes()).await.expect("send");
    assert_eq!(copy.finish().await.expect("finish"), 100_000);
    let first = tokio::time::timeout(Duration::from_secs(5), listener.recv())
        .await
        .expect("a notification")
        .expect("recv");
    let payload: Value = serde_json::from_str(first.payload()).expect("json payload");
    assert_eq!(payload["table"], json!("sales"));
    assert_eq!(payload["spans"]["sales"], json!(["2024-05-01", "2024-05-28"]));
    assert_eq!(payload["values"]["channel_id"], json!(["1", "2", "3", "4", "5", "6"]));
    let second = tokio::time::timeout(Duration::from_millis(500), listener.recv()).await;
    assert!(second.is_err(), "one statement, one notification");
}

#[tokio::test]
async fn the_listener_reconnects_after_its_connection_is_killed() {
    let app = spawn_app().await;
    let before = revenue(&ask(&app, &total_revenue()).await.1);
    let killed: i64 = sqlx::query_scalar(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
         WHERE datname = current_database() AND query ILIKE 'LISTEN%'",
    )
    .fetch_one(&app.db)
    .await
    .expect("terminate");
    assert_eq!(killed, 1, "the server's LISTEN connection");
    within(Duration::from_secs(5), || async {
        let health: Value = app.client.get(app.url("/health")).json_body().await;
        let listening: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND query ILIKE 'LISTEN%'",
        )
        .fetch_one(&app.db)
        .await
        .unwrap_or(0);
        health["freshness"]["listener"] == json!("up") && listening == 1
    })
    .await;
    insert_sale_now(&app, 3, 500.0).await;
    within(PROPAGATION, || async {
        (revenue(&ask(&app, &total_revenue()).await.1) - (before + 500.0)).abs() < 1e-6
    })
    .await;
}

#[tokio::test]
async fn stale_while_revalidate_answers_at_once_and_refreshes_once() {
    let app = spawn_app_with(|s| {
        // Long enough that the refreshed entry does not expire again while
        // a loaded machine gets round to checking it (a second refresh).
        s.cache.default_ttl_seconds = 2;
        s.cache.recent_ttl_seconds = 2;
        s.cache.l1_enabled = false;
        s.freshness.stale_while_revalidate_seconds = 60;
    })
    .await;
    assert_eq!(ask(&app, &total_revenue()).await.0, "MISS");
    // TTLs are whole seconds: wait until the entry is past its TTL.
    tokio::time::sleep(Duration::from_millis(3_100)).await;
    let statements = app.app_counter("db_queries").await;
    let (x_cache, body) = ask(&app, &total_revenue()).await;
    assert_eq!(x_cache, "STALE");
    assert_eq!(body["metadata"]["stale"], json!(true));
    assert!(body["metadata"]["age_seconds"].as_u64() >= Some(2));
    within(Duration::from_secs(2), || async {
        ask(&app, &total_revenue()).await.0 == "HIT"
    })
    .await;
    assert_eq!(
        app.app_counter("db_queries").await,
        statements + 1,
        "one background refresh"
    );
}

#[tokio::test]
async fn request_directives_tighten_or_forbid_the_computation() {
    let app = spawn_app().await;
    let query = may_2024(json!({"store_id": 3}));
    let only_cached = |app: &TestApp| {
        app.client
            .post(app.url("/analytics/query"))
            .header("cache-control", "only-if-cached")
            .json(&query)
            .send()
    };
    let cold = only_cached(&app).await.expect("request");
    assert_eq!(cold.status(), 504);
    let error: Value = cold.json().await.expect("json");
    assert_eq!(error["error"]["code"], json!("not_cached"));
    ask(&app, &query).await;
    assert_eq!(only_cached(&app).await.expect("request").headers()["x-cache"], "HIT");
    let max_age_0 = || {
        app.client
            .post(app.url("/analytics/query"))
            .header("cache-control", "max-age=0")
            .json(&query)
            .send()
    };
    let fresh = max_age_0().await.expect("request");
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let older = max_age_0().await.expect("request");
    assert_eq!(fresh.status(), 200);
    assert_eq!(
        older.headers()["x-cache"],
        "MISS",
        "an entry a second old is older than max-age=0"
    );
}

#[tokio::test]
async fn identical_cold_requests_spread_over_two_instances_run_one_statement() {
    let a = spawn_app().await;
    let b = a.spawn_peer(|_| {}).await;
    let query = json!({"metrics": ["revenue", "unique_customers"], "dimensions": ["city", "weekday"]});
    let before = a.app_counter("db_queries").await + b.app_counter("db_queries").await;
    let requests = (0..100).map(|i| {
        let app = if i % 2 == 0 { &a } else { &b };
        let query = query.clone();
        async move { app.query(query).await.status() }
    });
    let statuses = futures::future::join_all(requests).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    let after = a.app_counter("db_queries").await + b.app_counter("db_queries").await;
    assert_eq!(after - before, 1, "one statement for 100 requests on 2 instances");
}

#[tokio::test]
async fn a_clear_reaches_the_other_instances_l1() {
    let a = spawn_app().await;
    let b = a.spawn_peer(|_| {}).await;
    let query = may_2024(json!({"channel_id": 4}));
    for app in [&a, &b] {
        ask(app, &query).await;
        assert_eq!(ask(app, &query).await.0, "HIT");
    }
    let cleared: Value = a.admin(a.client.post(a.url("/cache/clear"))).json_body().await;
    assert!(cleared["deleted"].as_u64() >= Some(1), "{cleared}");
    within(PROPAGATION, || async { ask(&b, &query).await.0 == "MISS" }).await;
}

#[tokio::test]
async fn api_invalidation_reaches_every_instance_and_a_tenant_only_its_own() {
    let a = spawn_app_with(two_tenants).await;
    let b = a.spawn_peer(two_tenants).await;
    let query = json!({"metrics": ["revenue"], "dimensions": ["store_id"]});
    for app in [&a, &b] {
        ok_as(app, KEY_A, &query).await;
        ok_as(app, KEY_B, &query).await;
    }
    let invalidate = |key: &'static str, body: Value| {
        a.client
            .post(a.url("/cache/invalidate"))
            .bearer_auth(key)
            .json(&body)
            .send()
    };
    let foreign = invalidate(KEY_A, json!({"tenant": "tenant_b"}))
        .await
        .expect("invalidate");
    assert_eq!(foreign.status(), 403);
    // Each instance in turn: the invalidation (sent to `a`) empties that
    // instance's L1 and Redis entry of tenant A, and never tenant B's.
    for app in [&b, &a] {
        let own = invalidate(KEY_A, json!({"start_date": "2024-01-01", "end_date": "2024-01-31"}))
            .await
            .expect("invalidate");
        assert_eq!(own.status(), 200);
        within(PROPAGATION, || async { x_cache_as(app, KEY_A, &query).await == "MISS" }).await;
        assert_eq!(
            x_cache_as(app, KEY_B, &query).await,
            "HIT",
            "tenant B's entries are not A's to touch"
        );
    }
    let bad = invalidate(KEY_A, json!({"values": {"city": ["X"]}}))
        .await
        .expect("invalidate");
    assert_eq!(bad.status(), 422, "only tracked dimensions narrow an invalidation");
}

async fn x_cache_as(app: &TestApp, key: &str, query: &Value) -> String {
    let response = app.query_as(key, query).await;
    response.headers()["x-cache"].to_str().expect("x-cache").to_owned()
}

#[tokio::test]
async fn a_burst_of_changes_behind_a_slow_remote_redis_reaches_every_answer() {
    use analytics_api::config::{RemoteRedisSettings, Secret};
    // Each invalidation waits for the remote (60 ms each way) before the
    // local bump: thirty changes in a row must all reach the answers.
    let remote = crate::helpers::RedisProcess::start().await;
    let proxy = crate::helpers::DelayProxy::start(remote.port, Duration::from_millis(60)).await;
    let remote_url = proxy.url();
    let app = spawn_app_with(move |s| {
        s.redis.remote = Some(RemoteRedisSettings {
            url: Secret::new(remote_url),
            command_timeout_ms: 2_000,
            connect_timeout_ms: 2_000,
            ..RemoteRedisSettings::default()
        });
    })
    .await;
    app.rollups_settled().await;
    let today = |channel: i64| json!({"metrics": ["revenue", "sales_count"], "filters": {"channel_id": channel}});
    let mut before = Vec::new();
    for channel in [2, 3, 5] {
        before.push(revenue(&ask(&app, &today(channel)).await.1));
        assert_eq!(ask(&app, &today(channel)).await.0, "HIT");
    }
    let total_before = revenue(&ask(&app, &total_revenue()).await.1);

    // Thirty statements, one after another, as fast as PostgreSQL takes them.
    for i in 0..30 {
        insert_sale_now(&app, [2, 3, 5][i % 3], 10.0).await;
    }
    within(Duration::from_secs(10), || async {
        (revenue(&ask(&app, &total_revenue()).await.1) - (total_before + 300.0)).abs() < 1e-6
    })
    .await;
    for (i, channel) in [2, 3, 5].into_iter().enumerate() {
        let now = revenue(&ask(&app, &today(channel)).await.1);
        assert!(
            (now - (before[i] + 100.0)).abs() < 1e-6,
            "channel {channel}: {now} after {}",
            before[i]
        );
    }
}
