//! `redis.mode = "sentinel"` and `"cluster"` against real processes of the
//! test's own (free ports, temporary directories, stopped by PID on drop):
//! a Sentinel failover under load, and a three-primary cluster (hits, clear
//! on every primary, the rate limiter, a dead primary).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use analytics_api::config::{RedisMode, Secret};
use serde_json::{json, Value};

use crate::helpers::{spawn_app_with, SendJson, TestApp};
use crate::processes::{free_port, redis_server};
use crate::tenancy::{tenant, KEY_A};

/// Redis processes of one test, killed (by PID) with their directory on drop.
struct Servers {
    dir: PathBuf,
    children: Vec<(u16, Child)>,
}

impl Servers {
    fn new(kind: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("analytics-{kind}-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        Self {
            dir,
            children: Vec::new(),
        }
    }

    fn spawn(&mut self, port: u16, command: &mut Command) {
        let child = command.spawn().expect("redis-server must be installed");
        self.children.push((port, child));
    }

    /// A data node on `port` (`extra`: replication or cluster options).
    fn server(&mut self, port: u16, extra: &[&str]) {
        let mut command = redis_server(&self.dir);
        command
            .args(["--port", &port.to_string()])
            .arg("--logfile")
            .arg(self.dir.join(format!("redis-{port}.log")))
            .args(extra);
        self.spawn(port, &mut command);
    }

    /// A sentinel on `port` monitoring `master` at `primary` (quorum 2).
    fn sentinel(&mut self, port: u16, master: &str, primary: u16) {
        let conf = self.dir.join(format!("sentinel-{port}.conf"));
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\ndir {0}\nlogfile {0}/sentinel-{port}.log\n\
                 sentinel monitor {master} 127.0.0.1 {primary} 2\n\
                 sentinel down-after-milliseconds {master} 1000\n\
                 sentinel failover-timeout {master} 3000\n",
                self.dir.display()
            ),
        )
        .expect("sentinel.conf");
        let mut command = Command::new("redis-server");
        command
            .arg(&conf)
            .arg("--sentinel")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        self.spawn(port, &mut command);
    }

    /// SIGKILL the process on `port`.
    fn kill(&mut self, port: u16) {
        if let Some(index) = self.children.iter().position(|(p, _)| *p == port) {
            let (_, mut child) = self.children.remove(index);
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // What the servers said, beside the failed assertion.
            for entry in std::fs::read_dir(&self.dir).into_iter().flatten().flatten() {
                let path = entry.path();
                if path.extension().is_some_and(|e| e == "log") {
                    let log = std::fs::read_to_string(&path).unwrap_or_default();
                    let tail: Vec<&str> = log.lines().rev().take(15).collect();
                    eprintln!("--- {}:", path.display());
                    tail.iter().rev().for_each(|line| eprintln!("{line}"));
                }
            }
        }
        for (_, child) in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `redis-cli -p port args...`, its output (empty when it failed).
fn cli(port: u16, args: &[&str]) -> String {
    Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .stderr(Stdio::null())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// The non-empty lines of a `redis-cli` answer (an empty list prints one empty line).
fn count_lines(output: &str) -> usize {
    output.lines().filter(|l| !l.trim().is_empty()).count()
}

/// Waits (at most `limit`) until `ready` holds.
async fn wait_until(what: &str, limit: Duration, mut ready: impl FnMut() -> bool) {
    let started = Instant::now();
    while !ready() {
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Queries `body` until its second answer comes from Redis (at most `limit`).
async fn until_redis_hit(app: &TestApp, body: &Value, limit: Duration) {
    let started = Instant::now();
    loop {
        assert_eq!(app.query(body.clone()).await.status(), 200);
        let second: Value = app.query(body.clone()).await.json().await.expect("json");
        if second["metadata"]["cache_tier"] == json!("redis") {
            return;
        }
        assert!(
            started.elapsed() < limit,
            "no Redis hit within {limit:?}: {}",
            second["metadata"]
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Queries in a loop until stopped; counts answers and failures.
struct Load {
    stop: Arc<AtomicBool>,
    answered: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<Vec<String>>,
}

impl Load {
    fn start(app: &TestApp) -> Self {
        let (client, url) = (app.client.clone(), app.url("/analytics/query"));
        let stop = Arc::new(AtomicBool::new(false));
        let answered = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn({
            let (stop, answered) = (Arc::clone(&stop), Arc::clone(&answered));
            async move {
                let mut failures = Vec::new();
                let mut i = 0usize;
                while !stop.load(Ordering::Acquire) {
                    let body = json!({"metrics": ["revenue", "sales_count"], "filters": {"store_id": (i % 20) + 1}});
                    match client.post(&url).json(&body).send().await {
                        Ok(response) if response.status() == 200 => {}
                        Ok(response) => failures.push(format!("request {i}: {}", response.status())),
                        Err(error) => failures.push(format!("request {i}: {error}")),
                    }
                    answered.fetch_add(1, Ordering::AcqRel);
                    i += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                failures
            }
        });
        Self { stop, answered, task }
    }

    async fn finish(self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::Release);
        let failures = self.task.await.expect("load task");
        (self.answered.load(Ordering::Acquire), failures)
    }
}

#[tokio::test]
async fn sentinel_mode_follows_a_failover_without_failing_a_request() {
    let mut servers = Servers::new("sentinel");
    let (primary, replica) = (free_port(), free_port());
    servers.server(primary, &[]);
    servers.server(replica, &["--replicaof", "127.0.0.1", &primary.to_string()]);
    wait_until("replica in sync", Duration::from_secs(10), || {
        cli(replica, &["INFO", "replication"]).contains("master_link_status:up")
    })
    .await;
    let sentinels = [free_port(), free_port(), free_port()];
    for port in sentinels {
        servers.sentinel(port, "analytics", primary);
    }
    // Failover needs the sentinels to know the replica and each other.
    wait_until("sentinels ready", Duration::from_secs(20), || {
        sentinels.iter().all(|&s| {
            cli(s, &["SENTINEL", "replicas", "analytics"]).contains(&replica.to_string())
                && cli(s, &["SENTINEL", "sentinels", "analytics"]).matches("runid").count() >= 2
        })
    })
    .await;

    let app = spawn_app_with(move |s| {
        s.redis.mode = RedisMode::Sentinel;
        // Only the primary's credentials and database are read from it.
        s.redis.url = Secret::new("redis://127.0.0.1:1/0");
        s.redis.sentinel.service_name = "analytics".into();
        s.redis.sentinel.addresses = sentinels
            .iter()
            .map(|p| Secret::new(format!("127.0.0.1:{p}")))
            .collect();
        s.redis.breaker_probe_interval_ms = 200;
        s.cache.l1_enabled = false;
    })
    .await;
    let probe = json!({"metrics": ["cancelled_count"]});
    until_redis_hit(&app, &probe, Duration::from_secs(5)).await;
    assert!(
        cli(primary, &["DBSIZE"]).trim().parse::<u64>().unwrap_or(0) > 0,
        "entries are written to the primary"
    );

    let load = Load::start(&app);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    servers.kill(primary);
    wait_until("the sentinels promote the replica", Duration::from_secs(30), || {
        cli(sentinels[0], &["SENTINEL", "get-master-addr-by-name", "analytics"]).contains(&replica.to_string())
    })
    .await;
    let promoted = started.elapsed();
    // A query not asked before: computed, stored on the new primary, then hit.
    let after = json!({"metrics": ["discount_total"]});
    until_redis_hit(&app, &after, Duration::from_secs(15)).await;
    let recovered = started.elapsed();
    assert!(
        count_lines(&cli(replica, &["KEYS", &format!("{}:*", app.prefix)])) > 0,
        "entries are written to the promoted replica"
    );
    let (answered, failures) = load.finish().await;
    assert!(failures.is_empty(), "requests failed during the failover: {failures:?}");
    assert!(answered > 20, "the load ran ({answered} requests)");
    eprintln!("sentinel failover: promoted after {promoted:?}, Redis hits again after {recovered:?}, {answered} requests, none failed");
}

/// `calls` of `command` in the server's `INFO commandstats` (0 when absent).
fn command_calls(port: u16, command: &str) -> u64 {
    let stats = cli(port, &["INFO", "commandstats"]);
    let prefix = format!("cmdstat_{command}:calls=");
    stats
        .lines()
        .find_map(|line| line.trim().strip_prefix(prefix.as_str()))
        .and_then(|rest| rest.split(',').next()?.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn sentinel_replicas_serve_cache_reads_and_a_dead_replica_sends_them_to_the_primary() {
    let mut servers = Servers::new("sentinel-replicas");
    let (primary, replica) = (free_port(), free_port());
    servers.server(primary, &[]);
    servers.server(replica, &["--replicaof", "127.0.0.1", &primary.to_string()]);
    wait_until("replica in sync", Duration::from_secs(10), || {
        cli(replica, &["INFO", "replication"]).contains("master_link_status:up")
    })
    .await;
    let sentinel = free_port();
    servers.sentinel(sentinel, "analytics", primary);
    wait_until("the sentinel knows the replica", Duration::from_secs(20), || {
        cli(sentinel, &["SENTINEL", "replicas", "analytics"]).contains(&replica.to_string())
    })
    .await;

    let app = spawn_app_with(move |s| {
        s.redis.mode = RedisMode::Sentinel;
        s.redis.url = Secret::new("redis://127.0.0.1:1/0");
        s.redis.sentinel.service_name = "analytics".into();
        s.redis.sentinel.addresses = vec![Secret::new(format!("127.0.0.1:{sentinel}"))];
        s.redis.sentinel.read_from_replicas = true;
        s.redis.breaker_probe_interval_ms = 200;
        s.cache.l1_enabled = false;
    })
    .await;
    let body = json!({"metrics": ["revenue"], "filters": {"store_id": 4}});
    until_redis_hit(&app, &body, Duration::from_secs(5)).await;

    // (1) Hits read the replica; the primary only took the write.
    let (replica_before, primary_before) = (command_calls(replica, "mget"), command_calls(primary, "mget"));
    for i in 0..10 {
        let hit = app.query_ok(body.clone()).await;
        assert_eq!(hit["metadata"]["cache_tier"], json!("redis"), "hit {i}: {hit}");
    }
    assert!(
        command_calls(replica, "mget") >= replica_before + 10,
        "the replica served the hits' reads"
    );
    assert_eq!(
        command_calls(primary, "mget"),
        primary_before,
        "no hit read the primary"
    );
    assert!(
        count_lines(&cli(replica, &["KEYS", &format!("{}:*", app.prefix)])) > 0,
        "entries replicated"
    );
    let report: Value = app.client.get(app.url("/health")).json_body().await;
    assert_eq!(report["cache"]["replicas"]["redis"], json!("up"), "{report}");

    // (2) The replica dies: no request fails, hits come from the primary,
    // /health says no replica answers (degraded, still serving).
    servers.kill(replica);
    for i in 0..20 {
        let hit = app.query_ok(body.clone()).await;
        assert_eq!(
            hit["metadata"]["cache_tier"],
            json!("redis"),
            "request {i} after the replica died: {hit}"
        );
    }
    assert!(
        command_calls(primary, "mget") > primary_before,
        "reads went to the primary"
    );
    let report: Value = app.client.get(app.url("/health")).json_body().await;
    assert_eq!(report["cache"]["replicas"]["redis"], json!("down"), "{report}");
    assert_eq!(report["cache"]["redis"], json!("up"), "{report}");
    assert_eq!(report["status"], json!("degraded"), "{report}");
}

#[tokio::test]
async fn cluster_mode_hits_clears_every_primary_limits_and_survives_a_dead_primary() {
    let mut servers = Servers::new("cluster");
    let nodes = [free_port(), free_port(), free_port()];
    for port in nodes {
        let conf = servers.dir.join(format!("nodes-{port}.conf")).display().to_string();
        // The bus port defaults to port + 10000, which `free_port` never
        // checked: name one it did.
        let bus = free_port().to_string();
        servers.server(
            port,
            &[
                "--cluster-enabled",
                "yes",
                "--cluster-port",
                &bus,
                "--cluster-config-file",
                &conf,
                "--cluster-node-timeout",
                "1000",
            ],
        );
    }
    wait_until("nodes up", Duration::from_secs(10), || {
        nodes.iter().all(|&p| cli(p, &["PING"]).contains("PONG"))
    })
    .await;
    let addresses: Vec<String> = nodes.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let created = Command::new("redis-cli")
        .args(["--cluster", "create"])
        .args(&addresses)
        .args(["--cluster-replicas", "0", "--cluster-yes"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("redis-cli --cluster create");
    assert!(created.success(), "redis-cli --cluster create");
    wait_until("cluster_state:ok", Duration::from_secs(20), || {
        nodes
            .iter()
            .all(|&p| cli(p, &["CLUSTER", "INFO"]).contains("cluster_state:ok"))
    })
    .await;

    let seeds = addresses.clone();
    let app = spawn_app_with(move |s| {
        s.redis.mode = RedisMode::Cluster;
        s.redis.cluster.nodes = seeds.into_iter().map(Secret::new).collect();
        s.redis.breaker_probe_interval_ms = 200;
        s.cache.l1_enabled = false;
        // Unauthenticated requests still run as `default`; tenant_a is limited.
        s.auth.tenants = vec![tenant("tenant_a", KEY_A, json!({}), Some(3))];
    })
    .await;

    // Hits, with the entry and its counters on one slot.
    let probe = json!({"metrics": ["cancelled_count"]});
    until_redis_hit(&app, &probe, Duration::from_secs(5)).await;
    for i in 0..5 {
        let body = json!({"metrics": ["revenue"], "filters": {"store_id": i + 1}});
        assert_eq!(app.query(body).await.status(), 200);
    }
    let cluster =
        redis::cluster::ClusterClient::new(addresses.iter().map(|a| format!("redis://{a}")).collect::<Vec<_>>())
            .expect("cluster client");
    let mut connection = cluster.get_async_connection().await.expect("cluster connection");
    // Keys of the namespace in slots of every primary (the server's own
    // entries share the `{sales}` slot).
    for i in 0..30 {
        redis::cmd("SET")
            .arg(format!("{}:query:other:{{d{i}}}:x", app.prefix))
            .arg(1)
            .query_async::<()>(&mut connection)
            .await
            .expect("set");
    }
    let namespace_keys = |port: u16| count_lines(&cli(port, &["KEYS", &format!("{}:*", app.prefix)]));
    // Entries are written after the answer: wait for all six (one slot).
    let entries = format!("{}:query:*:{{sales}}:*", app.prefix);
    wait_until("the entries are stored", Duration::from_secs(5), || {
        nodes
            .iter()
            .map(|&p| count_lines(&cli(p, &["KEYS", &entries])))
            .sum::<usize>()
            == 6
    })
    .await;
    assert!(
        nodes.iter().all(|&p| namespace_keys(p) > 0),
        "the namespace spans every primary"
    );
    let stats = app.cache_stats().await;
    assert!(
        stats["total_keys"].as_u64().unwrap_or(0) >= 30,
        "DBSIZE summed over the primaries: {stats}"
    );
    let cleared: Value = app
        .admin(app.client.post(app.url("/cache/clear")))
        .query(&[("pattern", "*")])
        .send()
        .await
        .expect("clear")
        .json()
        .await
        .expect("json");
    for port in nodes {
        let left = cli(port, &["KEYS", &format!("{}:*", app.prefix)]);
        assert!(
            left.trim().is_empty(),
            "node {port} after the clear ({cleared}): {left}"
        );
    }

    // The rate limit (the GCRA script on one key) is enforced by the cluster.
    let statuses: Vec<u16> = {
        let mut statuses = Vec::new();
        for _ in 0..4 {
            statuses.push(app.query_as(KEY_A, &probe).await.status().as_u16());
        }
        statuses
    };
    assert_eq!(statuses, [200, 200, 200, 429]);
    let state: Option<String> = redis::cmd("GET")
        .arg(format!("ratelimit:{}:tenant_a", app.prefix))
        .query_async(&mut connection)
        .await
        .expect("get");
    assert!(state.is_some(), "the budget lives in the cluster");

    // A dead primary: the cache degrades, requests still answer.
    servers.kill(nodes[2]);
    for i in 0..30 {
        let body = json!({"metrics": ["revenue", "sales_count"], "filters": {"store_id": (i % 10) + 1}});
        let status = app.query(body).await.status();
        assert_eq!(status, 200, "request {i} after a primary died");
    }
}
