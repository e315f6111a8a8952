//! Fault tests: each runs its own redis-server, then kills, pauses or
//! corrupts it. The shared Redis is never touched.

use std::time::{Duration, Instant};

use redis::AsyncCommands;
use serde_json::{json, Value};

use crate::helpers::{spawn_app_with, DelayProxy, RedisProcess, SendJson, TestApp};

async fn spawn_with_own_redis(l1: bool) -> (TestApp, RedisProcess) {
    let redis = RedisProcess::start().await;
    let url = redis.url();
    let app = spawn_app_with(move |s| {
        s.redis.url = analytics_api::config::Secret::new(url);
        s.cache.l1_enabled = l1;
        s.redis.breaker_probe_interval_ms = 200;
    })
    .await;
    (app, redis)
}

fn query(i: usize) -> Value {
    json!({"metrics": ["revenue", "sales_count"], "filters": {"store_id": (i % 50) + 1}})
}

#[tokio::test]
async fn killing_redis_mid_run_never_fails_a_request() {
    let (app, mut redis) = spawn_with_own_redis(true).await;
    for i in 0..20 {
        assert_eq!(app.query(query(i)).await.status(), 200);
    }
    redis.kill();
    for i in 0..60 {
        let response = app.query(query(i)).await;
        assert_eq!(response.status(), 200, "request {i} after the kill");
    }
    let health: Value = app.client.get(app.url("/health")).json_body().await;
    assert_eq!(health["status"], json!("degraded"));
    assert_eq!(health["cache"]["breaker"], json!("open"));
}

#[tokio::test]
async fn a_restarted_redis_is_used_again_within_two_seconds() {
    let (app, mut redis) = spawn_with_own_redis(false).await;
    assert_eq!(app.query(query(1)).await.status(), 200);
    redis.kill();
    for i in 0..5 {
        assert_eq!(app.query(query(i)).await.status(), 200);
    }
    redis.restart().await;
    let restarted = Instant::now();
    let probe = json!({"metrics": ["cancelled_count"]});
    loop {
        let first = app.query(probe.clone()).await;
        assert_eq!(first.status(), 200);
        let second: Value = app.query(probe.clone()).await.json().await.expect("json");
        if second["metadata"]["cache_tier"] == json!("redis") {
            break;
        }
        assert!(
            restarted.elapsed() < Duration::from_secs(2),
            "cache not used again 2 s after the restart"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_hung_redis_costs_at_most_the_timeouts_then_nothing() {
    let (app, redis) = spawn_with_own_redis(false).await;
    assert_eq!(app.query(query(0)).await.status(), 200);
    redis.pause();
    let mut slowest = Duration::ZERO;
    for i in 0..10 {
        let started = Instant::now();
        assert_eq!(app.query(query(i + 100)).await.status(), 200);
        slowest = slowest.max(started.elapsed());
    }
    // A hung Redis must not hang requests: the bound is the command timeouts
    // (50 ms each) plus the query, far below what an unbounded wait would take.
    assert!(
        slowest < Duration::from_secs(2),
        "a request took {slowest:?} while Redis was stopped"
    );
    let stats = app.cache_stats().await;
    assert_eq!(
        stats["breaker"],
        json!("open"),
        "the breaker opened: later requests skip Redis"
    );
    assert!(stats["app"]["timeouts"].as_u64().is_some_and(|t| t >= 3));
    redis.resume();
}

#[tokio::test]
async fn a_garbage_entry_is_a_miss_not_an_error() {
    let (app, redis) = spawn_with_own_redis(false).await;
    let body = app.query_ok(query(3)).await;
    let key = body["metadata"]["cache_key"].as_str().expect("key").to_owned();
    let mut connection = redis::Client::open(redis.url())
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("conn");
    let _: () = connection.set(&key, b"\x00garbage\xff".to_vec()).await.expect("SET");
    let response = app.query(query(3)).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-cache"], "MISS");
    let again: Value = response.json().await.expect("json");
    assert_eq!(again["data"], body["data"]);
    let stats = app.cache_stats().await;
    assert_eq!(stats["app"]["corrupt"], json!(1));
    let header = app.x_cache(query(3)).await;
    assert_eq!(header, "HIT", "the garbage was replaced by a good entry");
}

#[tokio::test]
async fn a_restarted_redis_raises_no_false_alarm() {
    let (app, mut redis) = spawn_with_own_redis(false).await;
    // Fill the pool with live connections, then make every one of them dead.
    for i in 0..20 {
        assert_eq!(app.query(query(i)).await.status(), 200);
    }
    let errors_before = app.cache_stats().await["app"]["errors"].as_u64().expect("errors");
    redis.restart().await;
    for i in 0..30 {
        assert_eq!(app.query(query(i)).await.status(), 200, "request {i} after the restart");
    }
    // Redis came back empty: the answers were stored again and now hit.
    for i in 0..10 {
        assert_eq!(app.x_cache(query(i)).await, "HIT", "request {i} from Redis");
    }
    let stats = app.cache_stats().await;
    let errors = stats["app"]["errors"].as_u64().expect("errors") - errors_before;
    assert!(
        errors <= 1,
        "one dead connection replaces the pool; saw {errors} errors"
    );
    assert_eq!(stats["breaker"], json!("closed"));
}

#[tokio::test]
async fn a_slowed_redis_never_fails_a_request_and_is_used_again_once_fast() {
    let redis = RedisProcess::start().await;
    let proxy = DelayProxy::start(redis.port, Duration::ZERO).await;
    let url = proxy.url();
    let app = spawn_app_with(move |s| {
        s.redis.url = analytics_api::config::Secret::new(url);
        s.cache.l1_enabled = false;
        s.redis.breaker_probe_interval_ms = 100;
    })
    .await;
    for i in 0..5 {
        assert_eq!(app.query(query(i)).await.status(), 200);
    }
    // 100 ms each way: every command misses its 50 ms timeout.
    proxy.set_delay(Duration::from_millis(100));
    let mut slowest = Duration::ZERO;
    for i in 0..30 {
        let started = Instant::now();
        assert_eq!(
            app.query(query(i)).await.status(),
            200,
            "request {i} while Redis is slow"
        );
        slowest = slowest.max(started.elapsed());
    }
    assert!(slowest < Duration::from_secs(2), "a request took {slowest:?}");
    let stats = app.cache_stats().await;
    assert_eq!(stats["breaker"], json!("open"), "a slow Redis is skipped: {stats}");
    proxy.set_delay(Duration::ZERO);
    let fast_again = Instant::now();
    loop {
        let body: Value = app.query_ok(query(1)).await;
        if body["metadata"]["cache_tier"] == json!("redis") {
            break;
        }
        assert!(
            fast_again.elapsed() < Duration::from_secs(5),
            "Redis not used again 5 s after it became fast"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The same slow Redis while this process is starved of CPU (a task that
/// blocks the runtime's worker 50 ms at a time): its timeouts are our CPU's,
/// not Redis', so they do not open the breaker; the control above shows the
/// same timeouts open it when the process is not starved.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn timeouts_while_our_own_cpu_is_starved_do_not_open_the_breaker() {
    let redis = RedisProcess::start().await;
    let proxy = DelayProxy::start(redis.port, Duration::ZERO).await;
    let url = proxy.url();
    let app = spawn_app_with(move |s| {
        s.redis.url = analytics_api::config::Secret::new(url);
        s.cache.l1_enabled = false;
    })
    .await;
    assert_eq!(app.query(query(0)).await.status(), 200);
    let hog = tokio::spawn(async {
        loop {
            std::thread::sleep(Duration::from_millis(50));
            tokio::task::yield_now().await;
        }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    proxy.set_delay(Duration::from_millis(100));
    for i in 0..12 {
        assert_eq!(app.query(query(i)).await.status(), 200, "request {i}");
    }
    hog.abort();
    let stats = app.cache_stats().await;
    assert_eq!(stats["breaker"], json!("closed"), "starved, not down: {stats}");
    let metrics = app.metrics_text().await;
    assert!(
        metrics.contains("kind=\"timeout_busy\""),
        "the timeouts were seen, as busy"
    );
}
