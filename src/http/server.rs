//! The accept loop: serves the router over HTTP/1.1 and HTTP/2 with limits
//! that `axum::serve` does not offer, so that no client can hold the server's
//! file descriptors or memory: a cap on open connections (over it, new ones
//! are closed at once), a deadline for a request's headers (a slowloris
//! sending a byte a second is cut off), which also closes keep-alive
//! connections left idle that long, and a bound on header size. Shutdown
//! stops accepting, lets in-flight requests finish and closes idle
//! connections, for at most the grace period. The errors hyper answers
//! itself (400, 414, 431) leave as the contract's JSON (`wire_errors`).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use super::wire_errors::JsonWireErrors;

/// The limits every connection is held to.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Open connections at most; further ones are closed on accept.
    pub max_connections: usize,
    /// Deadline for a request's headers, and for the next request on an
    /// idle keep-alive connection.
    pub header_read_timeout: Duration,
    /// Largest request head (request line and headers) in bytes.
    pub max_header_bytes: usize,
    /// How long shutdown waits for in-flight requests.
    pub shutdown_grace: Duration,
}

/// Serves `app` on `listener` until `shutdown` completes, then drains.
pub async fn serve(
    listener: TcpListener,
    app: impl super::AppService,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true)
        .max_buf_size(limits.max_header_bytes.max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        .keep_alive_interval(Some(limits.header_read_timeout))
        .keep_alive_timeout(limits.header_read_timeout);
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    metrics::gauge!("analytics_http_connections_open").set(0.0);
    loop {
        let (stream, _peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors, or a connection reset before
                    // accept: pause briefly instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            metrics::counter!("analytics_http_connections_rejected_total").increment(1);
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone());
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(JsonWireErrors::new(stream)), service)
            .into_owned();
        let connection = graceful.watch(connection);
        metrics::gauge!("analytics_http_connections_open").increment(1.0);
        tokio::spawn(async move {
            // Errors here are the client's (reset, timeout, bad framing).
            let _ = connection.await;
            metrics::gauge!("analytics_http_connections_open").decrement(1.0);
            drop(slot);
        });
    }
    drop(listener);
    tracing::info!("shutdown requested; draining in-flight requests");
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(limits.shutdown_grace) => {
            // A stuck client must not keep the process alive past the grace period.
            tracing::warn!("grace period over; exiting with requests still open");
        }
    }
    Ok(())
}
