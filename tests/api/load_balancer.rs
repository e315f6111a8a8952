//! Two instances behind the load balancer of the scale-out deployment:
//! HAProxy running `deploy/haproxy.cfg` itself (the file docker-compose's
//! `scale` profile mounts), with the instances' addresses in its
//! environment. They share one database and one Redis prefix, as in
//! production: an entry one instance computed is answered by the other, and
//! an instance that stops loses no request.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::helpers::{spawn_app_until, TestApp};
use crate::processes::free_port;

/// HAProxy of the test's own on a free port, stopped (by PID) when dropped.
struct Haproxy {
    port: u16,
    child: Child,
    /// HAProxy's stderr, shown when it does not come up.
    log: std::path::PathBuf,
}

impl Haproxy {
    /// Starts `deploy/haproxy.cfg` in front of `instances` and waits until a
    /// request through it is answered.
    async fn start(instances: [&TestApp; 2]) -> Self {
        let config = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/haproxy.cfg");
        let port = free_port();
        let host_port = |app: &TestApp| app.address.trim_start_matches("http://").to_owned();
        let log = std::env::temp_dir().join(format!("analytics-haproxy-{port}.log"));
        let child = Command::new("haproxy")
            // -db: foreground, so the PID is HAProxy's own.
            .args(["-db", "-f", config])
            .env("LB_BIND", format!("127.0.0.1:{port}"))
            .env("API_1", host_port(instances[0]))
            .env("API_2", host_port(instances[1]))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("haproxy log"))
            .spawn()
            .expect("haproxy must be installed (apt-get install haproxy)");
        let lb = Self { port, child, log };
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let answered = client.get(lb.url("/health/live")).send().await;
            if answered.is_ok_and(|r| r.status() == 200) {
                return lb;
            }
            if Instant::now() > deadline {
                let log = std::fs::read_to_string(&lb.log).unwrap_or_default();
                panic!("haproxy did not answer within 10 s:\n{log}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

fn query() -> Value {
    json!({"metrics": ["revenue", "sales_count"], "dimensions": ["channel"], "filters": {"store_id": 3}})
}

/// POSTs `body` through the balancer; the status and `X-Cache`.
async fn through(lb: &Haproxy, client: &reqwest::Client, body: &Value) -> (u16, String) {
    let response = client
        .post(lb.url("/analytics/query"))
        .json(body)
        .send()
        .await
        .expect("request through haproxy");
    let x_cache = response
        .headers()
        .get("x-cache")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    (response.status().as_u16(), x_cache)
}

#[tokio::test]
async fn two_instances_behind_the_balancer_answer_one_computed_entry() {
    let (a, _server) = spawn_app_until(|_| {}, std::future::pending()).await;
    let b = a.spawn_peer(|_| {}).await;
    let lb = Haproxy::start([&a, &b]).await;
    let client = reqwest::Client::new();

    let mut x_cache = Vec::new();
    for _ in 0..6 {
        let (status, cache) = through(&lb, &client, &query()).await;
        assert_eq!(status, 200);
        x_cache.push(cache);
    }
    assert_eq!(x_cache[0], "MISS", "{x_cache:?}");
    assert!(x_cache[1..].iter().all(|c| c == "HIT"), "{x_cache:?}");

    // Round robin: both instances answered, and only one asked PostgreSQL.
    let (sa, sb) = (
        a.cache_stats().await["app"].clone(),
        b.cache_stats().await["app"].clone(),
    );
    let answered = |s: &Value| s["hits"].as_u64().unwrap_or(0) + s["misses"].as_u64().unwrap_or(0);
    assert!(answered(&sa) >= 1 && answered(&sb) >= 1, "a: {sa}\nb: {sb}");
    let computed = sa["db_queries"].as_u64().unwrap_or(0) + sb["db_queries"].as_u64().unwrap_or(0);
    assert_eq!(computed, 1, "one computation for both instances\na: {sa}\nb: {sb}");
    // The instance that did not compute it read it from the shared Redis.
    let (computer, other) = if sa["db_queries"] == json!(1) {
        (&sa, &sb)
    } else {
        (&sb, &sa)
    };
    assert_eq!(computer["misses"], json!(1), "{computer}");
    assert!(other["hits_redis"].as_u64() >= Some(1), "{other}");
}

#[tokio::test]
async fn an_instance_stopping_under_load_loses_no_request() {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (a, server) = spawn_app_until(|_| {}, async {
        let _ = stopped.await;
    })
    .await;
    let b = a.spawn_peer(|_| {}).await;
    let lb = Haproxy::start([&a, &b]).await;
    let client = reqwest::Client::new();

    // A steady stream through the balancer; a stops halfway.
    let mut failures = Vec::new();
    let mut stop = Some(stop);
    for i in 0..200 {
        if i == 60 {
            let _ = stop.take().map(|s| s.send(()));
        }
        // Distinct entries every 10 requests: misses as well as hits.
        let body = json!({"metrics": ["revenue"], "filters": {"store_id": 1 + i / 10}});
        let (status, _) = through(&lb, &client, &body).await;
        if status != 200 {
            failures.push((i, status));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(failures.is_empty(), "failed requests: {failures:?}");
    tokio::time::timeout(Duration::from_secs(15), server)
        .await
        .expect("a drained")
        .expect("server task")
        .expect("a stopped cleanly");
    // After the stop, b answered the rest.
    assert!(b.cache_stats().await["app"]["misses"].as_u64() >= Some(5));
}
