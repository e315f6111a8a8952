//! Cross-cutting HTTP behaviour: the request span and id, JSON bodies for
//! errors the framework produces, CORS from settings, and the hand-off of
//! backend-bound routes to the shared runtime.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use tower_http::cors::{AllowOrigin, Any, CorsLayer};
use tower_http::request_id::{MakeRequestId, RequestId};
use tracing::Span;

use crate::error::{ApiError, ErrorCause, ErrorCode};

/// One span per request; handlers and the cache fill `tenant`, `cache` and
/// `db_ms` as they learn them, and `observability::TrackRequests` the
/// `route` (the span starts before routing).
/// Nothing is built when the filter drops request spans (`RUST_LOG=warn`):
/// a cache hit should not pay for a span no one sees.
pub fn make_span(request: &Request<Body>) -> Span {
    if !tracing::span_enabled!(tracing::Level::INFO) {
        return Span::none();
    }
    let request_id = request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    tracing::info_span!(
        "request",
        method = %request.method(),
        route = "unmatched",
        request_id = %request_id,
        tenant = tracing::field::Empty,
        cache = tracing::field::Empty,
        db_ms = tracing::field::Empty,
        status = tracing::field::Empty,
    )
}

/// `X-Request-Id` for requests that come without one: this process's random
/// prefix and a counter, unique across instances without a random draw (a
/// `getrandom` syscall) and a UUID to format on every request.
#[derive(Clone)]
pub struct CountedRequestId {
    prefix: Arc<str>,
    next: Arc<AtomicU64>,
}

impl CountedRequestId {
    pub fn new() -> Self {
        Self {
            prefix: format!("{:016x}", rand::random::<u64>()).into(),
            next: Arc::default(),
        }
    }
}

impl Default for CountedRequestId {
    fn default() -> Self {
        Self::new()
    }
}

impl MakeRequestId for CountedRequestId {
    fn make_request_id<B>(&mut self, _request: &axum::http::Request<B>) -> Option<RequestId> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        HeaderValue::try_from(format!("{}-{n:x}", self.prefix))
            .ok()
            .map(RequestId::new)
    }
}

/// One line per request, with status and latency. A failure's internal
/// cause (see `crate::error`) is logged here, once: at error for a 500, at
/// warn for other server-side failures.
pub fn on_response(response: &Response, latency: Duration, span: &Span) {
    let status = response.status();
    span.record("status", status.as_u16());
    let latency_ms = (latency.as_secs_f64() * 1e6).round() / 1e3;
    match response.extensions().get::<ErrorCause>() {
        Some(ErrorCause(cause)) if status == StatusCode::INTERNAL_SERVER_ERROR => {
            tracing::error!(latency_ms, %cause, "finished")
        }
        Some(ErrorCause(cause)) => tracing::warn!(latency_ms, %cause, "finished"),
        None => tracing::info!(latency_ms, "finished"),
    }
}

/// Gives every error response that has no body of ours (405 from the router,
/// 408 from the timeout layer, 413 from the body limit) the contract's JSON shape.
/// A plain response mapping (`ServiceBuilder::map_response`), not an async
/// middleware: that would box and move the inner future on every request.
pub fn json_error_bodies<B>(response: axum::http::Response<B>) -> Response
where
    B: axum::body::HttpBody<Data = axum::body::Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    let response = response.map(Body::new);
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (code, message) = match status {
        StatusCode::METHOD_NOT_ALLOWED => (ErrorCode::MethodNotAllowed, "method not allowed on this route"),
        StatusCode::REQUEST_TIMEOUT | StatusCode::GATEWAY_TIMEOUT => {
            (ErrorCode::RequestTimeout, "the request took too long")
        }
        StatusCode::PAYLOAD_TOO_LARGE => (ErrorCode::PayloadTooLarge, "the request body is over the size limit"),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => (ErrorCode::UnsupportedMediaType, "unsupported content type"),
        StatusCode::NOT_FOUND => (ErrorCode::NotFound, "no such route"),
        s if s.is_server_error() => (ErrorCode::InternalError, "internal server error"),
        _ => (ErrorCode::BadRequest, "bad request"),
    };
    let mut rebuilt = ApiError::new(code, message).into_response();
    // The framework chose the status (408 and 504 share one code); keep it.
    *rebuilt.status_mut() = status;
    for name in [header::ALLOW, header::RETRY_AFTER] {
        if let Some(value) = response.headers().get(&name) {
            rebuilt.headers_mut().insert(name, value.clone());
        }
    }
    rebuilt
}

/// CORS from `server.cors_allowed_origins`: `*` allows any origin.
pub fn cors(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let allow_origin = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow_origin)
            .allow_methods([Method::GET, Method::POST, Method::DELETE, Method::OPTIONS])
            .allow_headers(Any)
            .expose_headers([
                header::HeaderName::from_static("x-cache"),
                header::HeaderName::from_static("x-request-id"),
            ])
            .max_age(Duration::from_secs(600)),
    )
}

/// Runs the rest of the request (extractors, handler) on the shared
/// runtime: for handlers that reach PostgreSQL or Redis themselves, so that
/// their connections are opened and driven there (`crate::offload`).
pub async fn on_shared_runtime(request: Request, next: axum::middleware::Next) -> Response {
    crate::offload::shared(next.run(request)).await
}
