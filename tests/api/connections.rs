//! Connections a client cannot hold forever: a slowloris is cut off at the
//! header deadline, idle keep-alive connections close, and a flood over the
//! connection cap is refused at accept while the server keeps answering.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{spawn_app_with, TestApp};

async fn connect(app: &TestApp) -> TcpStream {
    let address = app.address.trim_start_matches("http://").to_owned();
    TcpStream::connect(address).await.expect("connect")
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
    let mut flood = Vec::new();
    for _ in 0..7 {
        let mut stream = connect(&app).await;
        stream.write_all(b"GET /health/live HTTP/1.1\r\n").await.expect("write");
        flood.push(stream);
    }
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
