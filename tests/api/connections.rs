//! Connections a client cannot hold forever: a slowloris is cut off at the
//! header deadline, idle keep-alive connections close, and a flood over the
//! connection cap is refused at accept while the server keeps answering.

use std::time::{Duration, Instant};

use analytics_api::config::ServerRuntime;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{spawn_app, spawn_app_with, TestApp};

async fn connect(app: &TestApp) -> TcpStream {
    let address = app.address.trim_start_matches("http://").to_owned();
    TcpStream::connect(address).await.expect("connect")
}

/// `n` connections, each holding a connection slot with a request head it
/// never finishes (until the header deadline cuts it).
async fn hold_slots(app: &TestApp, n: usize) -> Vec<TcpStream> {
    let mut held = Vec::with_capacity(n);
    for _ in 0..n {
        let mut stream = connect(app).await;
        stream.write_all(b"GET /health/live HTTP/1.1\r\n").await.expect("write");
        held.push(stream);
    }
    held
}

/// Reads until the server closes the connection; returns how long it took.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> Duration {
    let started = Instant::now();
    let mut buffer = [0u8; 4096];
    loop {
        match tokio::time::timeout(limit, stream.read(&mut buffer)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return started.elapsed(),
            Ok(Ok(_)) => continue,
            Err(_) => panic!("the server kept the connection open for {limit:?}"),
        }
    }
}

#[tokio::test]
async fn half_sent_headers_and_idle_keep_alive_connections_are_closed() {
    let app = spawn_app_with(|s| s.server.header_read_timeout_ms = 300).await;
    let mut slow = connect(&app).await;
    slow.write_all(b"GET /health/live HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("write");
    let took = closed_within(&mut slow, Duration::from_secs(5)).await;
    assert!(took >= Duration::from_millis(250), "not before the deadline: {took:?}");

    let mut idle = connect(&app).await;
    idle.write_all(b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let mut response = [0u8; 1024];
    let read = idle.read(&mut response).await.expect("response");
    assert!(
        response[..read].starts_with(b"HTTP/1.1 200"),
        "a full request is served"
    );
    closed_within(&mut idle, Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_flood_over_the_cap_is_refused_at_accept_and_the_server_keeps_answering() {
    let app = spawn_app_with(|s| {
        s.server.max_connections = 8;
        s.server.header_read_timeout_ms = 1_000;
    })
    .await;
    // A cheap client: one keep-alive connection, opened before the flood.
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .build()
        .expect("client");
    assert_eq!(
        client.get(app.url("/health/live")).send().await.expect("live").status(),
        200
    );
    let mut flood = hold_slots(&app, 7).await;
    let mut refused = connect(&app).await;
    closed_within(&mut refused, Duration::from_millis(500)).await;
    assert_eq!(
        client.get(app.url("/health/live")).send().await.expect("live").status(),
        200,
        "the connection opened before the flood still serves"
    );
    // The flood is cut at the header deadline and its slots come back.
    for stream in &mut flood {
        closed_within(stream, Duration::from_secs(5)).await;
    }
    let fresh = reqwest::Client::new();
    assert_eq!(
        fresh.get(app.url("/health/live")).send().await.expect("live").status(),
        200
    );
}

/// Both runtime shapes serve the API alike: a miss (computed on the shared
/// runtime), its hit (served on the connection's thread), an admin route
/// (run whole on the shared runtime), concurrent clients, and one
/// connection cap for all the serving threads: with three threads and a
/// cap of 4, the fifth connection is refused wherever it lands.
#[tokio::test]
async fn both_runtime_shapes_serve_queries_admin_routes_and_share_one_connection_cap() {
    for runtime in [ServerRuntime::ThreadPerCore, ServerRuntime::Shared] {
        let app = spawn_app_with(|s| {
            s.server.runtime = runtime;
            s.server.threads = 3;
            s.server.max_connections = 4;
            s.server.header_read_timeout_ms = 1_000;
        })
        .await;
        // Nothing else is connected yet: four held, the fifth refused.
        let mut held = hold_slots(&app, 4).await;
        let mut refused = connect(&app).await;
        closed_within(&mut refused, Duration::from_millis(500)).await;
        // Cut at the header deadline, they give their slots back.
        for stream in &mut held {
            closed_within(stream, Duration::from_secs(5)).await;
        }

        let query = json!({"metrics": ["revenue"], "dimensions": ["channel"]});
        assert_eq!(app.x_cache(query.clone()).await, "MISS", "{runtime:?}");
        assert_eq!(app.x_cache(query).await, "HIT", "{runtime:?}");
        assert_eq!(app.app_counter("hits").await, 1, "{runtime:?}: /cache/stats");
        let client = reqwest::Client::new();
        let answers = futures::future::join_all((1..=3).map(|limit| {
            let body = json!({"metrics": ["revenue"], "dimensions": ["channel"], "limit": limit});
            client.post(app.url("/analytics/query")).json(&body).send()
        }))
        .await;
        assert!(
            answers.iter().all(|a| a.as_ref().is_ok_and(|r| r.status() == 200)),
            "{runtime:?}: {answers:?}"
        );
    }
}

/// Resident memory of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// Memory stays bounded under a flood of half-sent requests: measured on
/// the real binary in a process of its own, so its RSS is the server's alone.
#[tokio::test]
async fn a_connection_flood_costs_bounded_memory() {
    const FLOOD: usize = 1_000;
    let app = spawn_app().await; // for its database and key prefix
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let mut server = tokio::process::Command::new(env!("CARGO_BIN_EXE_analytics-api"))
        .args(["--config-dir", concat!(env!("CARGO_MANIFEST_DIR"), "/config"), "serve"])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", app.database_url())
        .env("REDIS_URL", &app.redis_url)
        .env("HOST", "127.0.0.1")
        .env("PORT", port.to_string())
        .env("RUST_LOG", "error")
        .env("APP__CACHE__PREFIX", &app.prefix)
        .env("APP__SERVER__MAX_CONNECTIONS", (FLOOD + 100).to_string())
        .env("APP__SERVER__HEADER_READ_TIMEOUT_MS", "60000")
        .env("APP__DATABASE__SEED_DEMO_ON_EMPTY", "false")
        .env("APP__FRESHNESS__ENABLED", "false")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("server process");
    let pid = server.id().expect("pid");
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let live = || async {
        client
            .get(format!("{base}/health/live"))
            .send()
            .await
            .map(|r| r.status().as_u16())
    };
    let started = Instant::now();
    while live().await.ok() != Some(200) {
        assert!(started.elapsed() < Duration::from_secs(30), "server did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let before = rss_kib(pid);
    let mut flood = Vec::with_capacity(FLOOD);
    for _ in 0..FLOOD {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
        stream
            .write_all(b"GET /health/live HTTP/1.1\r\nHost: x\r\n")
            .await
            .expect("write");
        flood.push(stream);
    }
    // Until the server has read every half-sent head.
    let open = || async {
        let text = client
            .get(format!("{base}/metrics"))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix("analytics_http_connections_open "))
            .and_then(|v| v.trim().parse::<f64>().ok())
    };
    let started = Instant::now();
    while open().await.unwrap_or(0.0) < FLOOD as f64 {
        assert!(started.elapsed() < Duration::from_secs(20), "flood not accepted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let during = rss_kib(pid);
    assert_eq!(live().await.ok(), Some(200), "still answering under the flood");
    // hyper's read buffer and the connection task: tens of KiB each at most.
    let per_connection = during.saturating_sub(before) / FLOOD as u64;
    eprintln!("flood: RSS {before} -> {during} KiB for {FLOOD} held connections ({per_connection} KiB each)");
    assert!(
        per_connection < 48,
        "{per_connection} KiB per held connection ({before} -> {during} KiB)"
    );
    drop(flood);
    server.kill().await.expect("kill");
}
