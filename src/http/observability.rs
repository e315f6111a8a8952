//! `/metrics` (Prometheus), the per-request duration histogram, and the
//! operator status page (`/status`, `/status.json`).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{OnceLock, PoisonError, RwLock};
use std::task::{Context, Poll};
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderValue, Method};
use axum::response::{Html, IntoResponse, Response};
use axum::Json;
use metrics::Histogram;
use serde::Serialize;

use crate::clock::{unix_now, unix_now_ms};
use crate::http::auth::Admin;
use crate::state::AppState;
use crate::status::{HotKey, Percentiles, SeriesPoint, BUCKETS, BUCKET_SECONDS};

/// Records `analytics_http_request_duration_seconds{method, route, status}`
/// around each route (it needs the matched route). Routes are the matched
/// templates and methods the standard ones (else `other`), so label
/// cardinality stays bounded. A tower layer rather than `from_fn`, whose
/// boxed future would be allocated and moved on every request.
#[derive(Debug, Clone, Copy, Default)]
pub struct TrackRequestsLayer;

impl<S> tower::Layer<S> for TrackRequestsLayer {
    type Service = TrackRequests<S>;

    fn layer(&self, inner: S) -> Self::Service {
        TrackRequests { inner }
    }
}

#[derive(Debug, Clone)]
pub struct TrackRequests<S> {
    inner: S,
}

impl<S, B> tower::Service<Request<B>> for TrackRequests<S>
where
    S: tower::Service<Request<B>, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Tracked<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let route = request.extensions().get::<MatchedPath>().cloned();
        if let Some(route) = &route {
            // The request span starts before routing (see `make_span`).
            tracing::Span::current().record("route", route.as_str());
        }
        let method = request.method().clone();
        Tracked {
            started: Instant::now(),
            route,
            method,
            inner: self.inner.call(request),
        }
    }
}

pin_project_lite::pin_project! {
    /// A route's response future, timed.
    pub struct Tracked<F> {
        #[pin]
        inner: F,
        started: Instant,
        route: Option<MatchedPath>,
        method: Method,
    }
}

impl<F, E> Future for Tracked<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let output = std::task::ready!(this.inner.poll(cx));
        if let Ok(response) = &output {
            let route = this.route.as_ref().map_or("unmatched", MatchedPath::as_str);
            request_histogram(route, this.method, response.status().as_u16())
                .record(this.started.elapsed().as_secs_f64());
        }
        Poll::Ready(output)
    }
}

/// Handles by route, then method and status, resolved once: a request then
/// records without building labels or searching the registry (it showed in
/// profiles of cache hits).
type Histograms = RwLock<HashMap<String, Vec<(Method, u16, Histogram)>>>;

fn request_histogram(route: &str, method: &Method, status: u16) -> Histogram {
    static HANDLES: OnceLock<Histograms> = OnceLock::new();
    let handles = HANDLES.get_or_init(Histograms::default);
    let find = |row: &Vec<(Method, u16, Histogram)>| {
        row.iter()
            .find(|(m, s, _)| m == method && *s == status)
            .map(|(_, _, h)| h.clone())
    };
    if let Some(found) = handles
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .get(route)
        .and_then(find)
    {
        return found;
    }
    let mut handles = handles.write().unwrap_or_else(PoisonError::into_inner);
    let row = handles.entry(route.to_owned()).or_default();
    if let Some(found) = find(row) {
        return found;
    }
    let label = match *method {
        Method::GET | Method::POST | Method::PUT | Method::DELETE | Method::HEAD | Method::OPTIONS | Method::PATCH => {
            method.as_str().to_owned()
        }
        _ => "other".to_owned(),
    };
    let histogram = metrics::histogram!(
        "analytics_http_request_duration_seconds",
        "method" => label,
        "route" => route.to_owned(),
        "status" => status.to_string(),
    );
    row.push((method.clone(), status, histogram.clone()));
    histogram
}

/// Prometheus text exposition of every series.
#[utoipa::path(get, path = "/metrics", tag = "observability",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
pub async fn get_metrics(State(state): State<AppState>) -> Response {
    state.health.record_pool_gauges();
    let body = crate::telemetry::metrics_handle()
        .map(|h| h.render())
        .unwrap_or_default();
    let mut response = body.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    response
}

/// The self-contained operator page; it polls `/status.json` every 2 s.
#[utoipa::path(get, path = "/status", tag = "observability",
    responses((status = 200, description = "HTML status page", content_type = "text/html")))]
pub async fn get_status_page() -> Html<&'static str> {
    Html(include_str!("../../assets/status.html"))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct StatusResponse {
    pub generated_at_ms: u64,
    pub uptime_seconds: u64,
    pub window_seconds: u64,
    pub bucket_seconds: u64,
    pub series: Vec<SeriesPoint>,
    pub hit_rate: Option<f64>,
    pub request_rate: f64,
    #[schema(value_type = Object)]
    pub latency_ms: std::collections::BTreeMap<&'static str, Percentiles>,
    pub breaker: &'static str,
    pub redis: &'static str,
    pub database: &'static str,
    pub l1: crate::http::cache_admin::L1Stats,
    pub freshness: FreshnessStatus,
    pub hot_keys: Vec<HotKey>,
}

/// Change capture on the status page.
#[derive(Serialize, utoipa::ToSchema)]
pub struct FreshnessStatus {
    /// The LISTEN connection: `up`, `down` or `disabled`.
    pub listener: &'static str,
    /// The pub/sub subscription keeping every instance's L1 in step.
    pub l1_sync: &'static str,
    /// Invalidations this instance applied since it started.
    pub invalidations: u64,
    /// Answers served stale (past TTL, or invalidated while the database was down).
    pub stale_served: u64,
}

/// The status page's data: the last 15 minutes of traffic and current health.
#[utoipa::path(get, path = "/status.json", tag = "observability", security(("admin_token" = [])),
    responses((status = 200, body = StatusResponse), (status = 401), (status = 403)))]
pub async fn get_status_json(_admin: Admin, State(state): State<AppState>) -> Json<StatusResponse> {
    let now = unix_now();
    let window = state.status.snapshot(now);
    let (cache, database, (entries, bytes)) = tokio::join!(
        state.health.cache(),
        state.health.database(),
        state.queries.cache().l1_size()
    );
    Json(StatusResponse {
        generated_at_ms: unix_now_ms(),
        uptime_seconds: state.started_at.elapsed().as_secs(),
        window_seconds: BUCKETS as u64 * BUCKET_SECONDS,
        bucket_seconds: BUCKET_SECONDS,
        series: window.series,
        hit_rate: window.hit_rate,
        request_rate: window.request_rate,
        latency_ms: window.latency_ms,
        breaker: cache.breaker,
        redis: cache.redis,
        database: database.status,
        l1: crate::http::cache_admin::L1Stats {
            enabled: cache.l1_enabled,
            entries,
            bytes,
            max_bytes: state.settings.cache.l1_max_bytes,
        },
        freshness: {
            let health = state.freshness.health();
            let counters = state.queries.cache().stats().snapshot();
            FreshnessStatus {
                listener: health.listener,
                l1_sync: health.l1_sync,
                invalidations: counters.invalidations,
                stale_served: counters.stale_served,
            }
        },
        hot_keys: state.status.hot_keys(10),
    })
}
