//! Local + remote Redis (`[redis.remote]`): a private local redis-server and
//! a private "remote" one behind a proxy adding 60 ms each way. Writes reach
//! both, hits are local, a dead local is covered by the remote, and a local
//! that comes back empty is refilled from the remote.

use std::time::{Duration, Instant};

use analytics_api::config::{RemoteRedisSettings, Secret};
use serde_json::{json, Value};

use crate::helpers::{spawn_app_with, DelayProxy, RedisProcess, SendJson, TestApp};

const REMOTE_DELAY: Duration = Duration::from_millis(60);

fn query() -> Value {
    json!({"metrics": ["revenue", "sales_count"], "filters": {"store_id": 7}})
}

/// A server with L1 off (every hit a Redis read), its local Redis at
/// `local_url` and `remote` as `[redis.remote]`; both breakers probe every
/// 100 ms.
async fn hybrid_app(local_url: String, remote: RemoteRedisSettings) -> TestApp {
    spawn_app_with(move |s| {
        s.redis.url = Secret::new(local_url);
        s.redis.breaker_probe_interval_ms = 100;
        s.cache.l1_enabled = false;
        s.redis.remote = Some(RemoteRedisSettings {
            breaker_probe_interval_ms: 100,
            ..remote
        });
    })
    .await
}

/// `command` on the redis-server at `url`, reached directly (None: it did
/// not answer).
async fn ask_redis<T: redis::FromRedisValue>(url: &str, command: &redis::Cmd) -> Option<T> {
    let client = redis::Client::open(url).ok()?;
    let mut c = client.get_multiplexed_async_connection().await.ok()?;
    command.query_async(&mut c).await.ok()
}

/// Entry keys of `app` on the redis-server at `url`.
async fn entry_keys(app: &TestApp, url: &str) -> Vec<String> {
    let keys = redis::cmd("KEYS").arg(format!("{}:query:*", app.prefix)).clone();
    ask_redis(url, &keys).await.unwrap_or_default()
}

/// Waits (bounded) until an entry of `app` is on the server at `url`.
async fn wait_for_entry(app: &TestApp, url: &str, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while entry_keys(app, url).await.is_empty() {
        assert!(Instant::now() < deadline, "no entry on the {what} Redis within 10 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn health(app: &TestApp) -> Value {
    app.client.get(app.url("/health")).json_body().await
}

#[tokio::test]
async fn local_and_remote_redis_write_both_read_local_and_cover_for_each_other() {
    let mut local = RedisProcess::start().await;
    let remote = RedisProcess::start().await;
    let proxy = DelayProxy::start(remote.port, REMOTE_DELAY).await;
    let (local_url, remote_url) = (local.url(), proxy.url());
    let app = hybrid_app(
        local_url,
        RemoteRedisSettings {
            url: Secret::new(remote_url),
            // Connecting through the proxy takes a few delayed round trips.
            command_timeout_ms: 1_000,
            connect_timeout_ms: 1_000,
            ..RemoteRedisSettings::default()
        },
    )
    .await;

    // (1) A miss is written to both.
    let first = app.query_ok(query()).await;
    assert_eq!(first["metadata"]["from_cache"], json!(false), "{first}");
    wait_for_entry(&app, &local.url(), "local").await;
    wait_for_entry(&app, &remote.url(), "remote").await;

    // (2) Hits are local: well under the remote's 120 ms round trip.
    for i in 0..5 {
        let hit = app.query_ok(query()).await;
        assert_eq!(hit["metadata"]["cache_tier"], json!("redis"), "hit {i}: {hit}");
        let took = hit["metadata"]["query_time_ms"].as_f64().expect("query_time_ms");
        assert!(took < 60.0, "hit {i} took {took} ms: not local");
    }
    let stats = app.cache_stats().await;
    assert_eq!(stats["remote"]["breaker"], json!("closed"), "{stats}");
    assert!(stats["remote"]["writes"].as_u64() >= Some(1), "{stats}");
    let before = health(&app).await;
    assert_eq!(before["cache"]["remote"]["redis"], json!("up"), "{before}");

    // (3) The local Redis dies: the remote answers, no request fails.
    local.kill();
    let mut from_remote = 0;
    for i in 0..20 {
        let response = app.query(query()).await;
        assert_eq!(response.status(), 200, "request {i} after the local Redis died");
        let body: Value = response.json().await.expect("json");
        if body["metadata"]["cache_tier"] == json!("redis") {
            from_remote += 1;
        }
    }
    assert!(from_remote >= 15, "only {from_remote} of 20 hits came from the remote");
    let stats = app.cache_stats().await;
    assert!(stats["remote"]["hits"].as_u64() >= Some(15), "{stats}");
    assert_eq!(stats["breaker"], json!("open"), "{stats}");
    assert_eq!(stats["remote"]["breaker"], json!("closed"), "{stats}");

    // (4) The local Redis comes back empty: once its breaker closes, a hit
    // (from the remote) refills it.
    local.restart().await;
    assert!(entry_keys(&app, &local.url()).await.is_empty());
    let deadline = Instant::now() + Duration::from_secs(10);
    while health(&app).await["cache"]["breaker"] != json!("closed") {
        assert!(Instant::now() < deadline, "the local breaker did not close within 10 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let refill = app.query_ok(query()).await;
    assert_eq!(refill["metadata"]["cache_tier"], json!("redis"), "{refill}");
    wait_for_entry(&app, &local.url(), "restarted local").await;
    let hit = app.query_ok(query()).await;
    assert_eq!(hit["metadata"]["cache_tier"], json!("redis"), "{hit}");
    let took = hit["metadata"]["query_time_ms"].as_f64().expect("query_time_ms");
    assert!(took < 60.0, "after the refill a hit took {took} ms: not local");
}

/// Distinct queries, so each is a miss and a write.
fn store_query(store: u64) -> Value {
    json!({"metrics": ["revenue"], "filters": {"store_id": store}})
}

#[tokio::test]
async fn a_slow_remote_drops_writes_beyond_its_bound_and_a_dead_one_fails_nothing() {
    let local = RedisProcess::start().await;
    let mut remote = RedisProcess::start().await;
    // Slow enough that writes pile up behind it (the proxy delays each chunk
    // in turn, so commands queue behind each other as on a thin link).
    let proxy = DelayProxy::start(remote.port, Duration::from_millis(100)).await;
    let (local_url, remote_url) = (local.url(), proxy.url());
    let app = hybrid_app(
        local_url,
        RemoteRedisSettings {
            url: Secret::new(remote_url),
            command_timeout_ms: 5_000,
            connect_timeout_ms: 5_000,
            max_pending_writes: 2,
            ..RemoteRedisSettings::default()
        },
    )
    .await;

    // (1) Twelve misses at once: every one answers; at most two remote
    // writes wait at a time, the rest are dropped and counted, never queued.
    let answers = futures::future::join_all((1..=12).map(|store| app.query(store_query(store)))).await;
    for (i, answer) in answers.into_iter().enumerate() {
        assert_eq!(answer.status(), 200, "miss {i}");
    }
    let stats = app.cache_stats().await;
    let remote_stats = &stats["remote"];
    assert!(remote_stats["pending_writes"].as_u64() <= Some(2), "{stats}");
    assert!(remote_stats["writes_dropped"].as_u64() >= Some(1), "{stats}");
    // Every entry is on the local Redis whatever the remote did.
    let deadline = Instant::now() + Duration::from_secs(10);
    while entry_keys(&app, &local.url()).await.len() < 12 {
        assert!(Instant::now() < deadline, "not every entry reached the local Redis");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // (2) The remote dies: hits stay local, misses still answer, its
    // breaker opens and /health says it is down (degraded, not down).
    remote.kill();
    for store in 1..=12 {
        let hit = app.query_ok(store_query(store)).await;
        assert_eq!(hit["metadata"]["from_cache"], json!(true), "{hit}");
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        for store in 13..=15 {
            let answer = app.query(store_query(store)).await;
            assert_eq!(answer.status(), 200, "a miss while the remote is down");
        }
        let report = health(&app).await;
        if report["cache"]["remote"]["redis"] != json!("up") {
            assert_eq!(report["cache"]["redis"], json!("up"), "{report}");
            assert_ne!(report["status"], json!("down"), "{report}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "/health still shows the dead remote up: {report}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The whole-dataset counter of `app` on the server at `url` (None: never bumped).
async fn remote_generation(app: &TestApp, url: &str) -> Option<String> {
    let get = redis::cmd("GET")
        .arg(format!("version:{}:sales:gen", app.prefix))
        .clone();
    ask_redis::<Option<String>>(url, &get).await.flatten()
}

#[tokio::test]
async fn with_the_local_redis_down_the_deferred_invalidation_leaves_the_remote_alone() {
    let mut local = RedisProcess::start().await;
    let remote = RedisProcess::start().await;
    // Down from the start: the start-up invalidation cannot reach it and is
    // retried every second until it can.
    local.kill();
    let (local_url, remote_url) = (local.url(), remote.url());
    let app = hybrid_app(
        local_url,
        RemoteRedisSettings {
            url: Secret::new(remote_url),
            ..RemoteRedisSettings::default()
        },
    )
    .await;
    app.query_ok(query()).await;
    wait_for_entry(&app, &remote.url(), "remote").await;
    let generation = remote_generation(&app, &remote.url()).await;
    assert!(generation.is_some(), "the remote holds the dataset's counter");

    // Several retries later the remote's counter has not moved and its entry
    // is still a hit.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert_eq!(
        remote_generation(&app, &remote.url()).await,
        generation,
        "the retry of the local bump invalidated the remote"
    );
    let hit = app.query_ok(query()).await;
    assert_eq!(hit["metadata"]["from_cache"], json!(true), "{hit}");

    // The local Redis comes back: the deferred invalidation reaches it.
    local.restart().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let local_generation = remote_generation(&app, &local.url()).await;
        if local_generation.is_some() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the deferred invalidation never reached the local Redis"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(remote_generation(&app, &remote.url()).await, generation);
}
