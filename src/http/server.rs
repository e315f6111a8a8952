//! The accept loop: serves the router over HTTP/1.1 and HTTP/2 with limits
//! that `axum::serve` does not offer, so that no client can hold the server's
//! file descriptors or memory: a cap on open connections (over it, new ones
//! are closed at once), a deadline for a request's headers (a slowloris
//! sending a byte a second is cut off), which also closes keep-alive
//! connections left idle that long, and a bound on header size. Shutdown
//! stops accepting, lets in-flight requests finish and closes idle
//! connections, for at most the grace period. The errors hyper answers
//! itself (400, 414, 431) leave as the contract's JSON (`wire_errors`).
//!
//! Two runtime shapes (`server.runtime`): thread per core, where each
//! serving thread runs its own accept loop on a single-threaded runtime,
//! and shared, where one accept loop runs on the process's work-stealing
//! runtime. The limits are the same in both (one connection cap for all).

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

/// Serves `app` on `listener` until `shutdown` completes, then drains:
/// on the calling (shared) runtime, or on `threads` serving threads.
pub async fn serve(
    listener: TcpListener,
    app: impl super::AppService,
    limits: ConnectionLimits,
    threads: Option<usize>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    metrics::gauge!("analytics_http_connections_open").set(0.0);
    match threads {
        None => accept_loop(listener, app, limits, slots, shutdown).await,
        Some(threads) => serve_per_thread(listener, app, limits, slots, threads, shutdown).await,
    }
}

/// Thread per core: `threads` threads, each a single-threaded runtime that
/// accepts from the same listening socket (a duplicate of it, registered in
/// its own epoll: an idle thread wakes and accepts first) and serves those
/// connections to the end. No request changes thread, so a cache hit costs
/// no wake-up of another thread. Backend work leaves for the shared runtime
/// (`crate::offload`). Measured in bench/RESULTS.md ("Runtime shape").
async fn serve_per_thread(
    listener: TcpListener,
    app: impl super::AppService,
    limits: ConnectionLimits,
    slots: Arc<Semaphore>,
    threads: usize,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let shared = tokio::runtime::Handle::current();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let listener = listener.into_std()?;
    let mut serving = Vec::with_capacity(threads);
    for n in 0..threads.max(1) {
        let (listener, app, slots, shared) = (listener.try_clone()?, app.clone(), Arc::clone(&slots), shared.clone());
        let mut stopped = stopped.clone();
        let thread = std::thread::Builder::new()
            .name(format!("http-{n}"))
            .spawn(move || -> std::io::Result<()> {
                crate::offload::serve_here(shared);
                let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
                let served = runtime.block_on(async move {
                    let stop = async move {
                        let _ = stopped.wait_for(|stop| *stop).await;
                    };
                    accept_loop(TcpListener::from_std(listener)?, app, limits, slots, stop).await
                });
                // Said at once: the other threads go on serving until shutdown.
                if let Err(error) = &served {
                    tracing::error!(%error, thread = n, "a serving thread stopped");
                }
                served
            })?;
        serving.push(thread);
    }
    drop(listener);
    shutdown.await;
    let _ = stop.send(true);
    // Each thread drains its own connections (for at most the grace period).
    let joined = tokio::task::spawn_blocking(move || serving.into_iter().map(|t| t.join()).collect::<Vec<_>>())
        .await
        .map_err(std::io::Error::other)?;
    for outcome in joined {
        match outcome {
            Ok(result) => result?,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
    Ok(())
}

/// Accepts and serves connections on the current runtime until `shutdown`,
/// then drains them for at most the grace period.
async fn accept_loop(
    listener: TcpListener,
    app: impl super::AppService,
    limits: ConnectionLimits,
    slots: Arc<Semaphore>,
    shutdown: impl Future<Output = ()>,
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
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
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
