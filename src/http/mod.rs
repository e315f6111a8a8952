//! The HTTP surface: every route in one table, the middleware stack, and the
//! OpenAPI document.
//!
//! Handlers only parse, call a service and render; none touches the
//! database.
//!
//! - `query`: `/analytics/query`
//! - `export`: CSV answers (`Accept: text/csv`)
//! - `dry_run`: `/analytics/sql` (the plan of a query, not run)
//! - `meta`: `/analytics/meta` (the model as clients may use it)
//! - `health`: `/health*`
//! - `cache_admin`: `/cache/stats`, `/cache/clear`, `/cache/key`
//! - `cache_warm`: `/cache/warm`
//! - `cache_invalidate`: `/cache/invalidate`
//! - `auth`: admin and tenant extractors
//! - `middleware`: request span, JSON error bodies, CORS, the hand-off to the shared runtime
//! - `observability`: `/metrics`, `/status`, `/status.json`
//! - `openapi`: the document at `/openapi.json`, completed for the loaded model
//! - `server`: the accept loop: connection cap, header deadline, drain
//! - `wire_errors`: hyper's own 400/414/431 rewritten as JSON

pub mod auth;
pub mod cache_admin;
pub mod cache_invalidate;
pub mod cache_warm;
pub mod dry_run;
pub mod export;
pub mod health;
pub mod meta;
pub mod middleware;
pub mod observability;
pub mod openapi;
pub mod query;
mod render;
pub mod server;
mod wire_errors;

use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, Method, StatusCode};
use axum::routing::{delete, get, post, MethodRouter};
use axum::Router;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::compression::predicate::{NotForContentType, Predicate, SizeAbove};
use tower_http::compression::CompressionLayer;
use tower_http::request_id::{PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::error::{ApiError, ErrorCode};
use crate::state::AppState;

/// One row of the route table: the router is built from these rows, and the
/// OpenAPI test checks the spec against the same rows.
pub struct Route {
    pub method: Method,
    pub path: String,
    pub handler: MethodRouter<AppState>,
}

/// A route whose handler runs whole on the shared runtime: it reaches
/// PostgreSQL or Redis itself (or is rare), and their connections live
/// there (`crate::offload`).
fn route(method: Method, path: &str, handler: MethodRouter<AppState>) -> Route {
    let handler = handler.layer(axum::middleware::from_fn(middleware::on_shared_runtime));
    route_in_place(method, path, handler)
}

/// A route served where its connection is (a serving thread): the query,
/// whose hits never leave it and whose misses offload themselves, and the
/// liveness probe.
fn route_in_place(method: Method, path: &str, handler: MethodRouter<AppState>) -> Route {
    Route {
        method,
        path: path.to_owned(),
        handler,
    }
}

/// Path prefixes under which the original runbooks call the same API.
pub const ALIASES: &[(&str, &str)] = &[
    ("/analytics/query", "/api/v1/analytics/query"),
    ("/cache/", "/api/v1/analytics/cache/"),
];

/// Every route of the API, aliases included, in one table.
pub fn routes() -> Vec<Route> {
    let canonical = vec![
        route_in_place(Method::POST, "/analytics/query", post(query::run_query)),
        route_in_place(Method::GET, "/analytics/query", get(query::run_query_get)),
        route(Method::POST, "/analytics/sql", post(dry_run::explain_query)),
        route(Method::GET, "/analytics/meta", get(meta::get_meta)),
        route(Method::GET, "/cache/stats", get(cache_admin::get_cache_stats)),
        route(Method::POST, "/cache/clear", post(cache_admin::clear_cache)),
        route(
            Method::DELETE,
            "/cache/key",
            delete(cache_admin::delete_cache_key_by_query),
        ),
        route(
            Method::DELETE,
            "/cache/key/{*key}",
            delete(cache_admin::delete_cache_key),
        ),
        route(Method::POST, "/cache/warm", post(cache_warm::warm_cache)),
        route(
            Method::POST,
            "/cache/invalidate",
            post(cache_invalidate::invalidate_cache),
        ),
        route(Method::GET, "/health", get(health::get_health)),
        route_in_place(Method::GET, "/health/live", get(health::get_live)),
        route(Method::GET, "/health/ready", get(health::get_ready)),
        route(Method::GET, "/metrics", get(observability::get_metrics)),
        route(Method::GET, "/status", get(observability::get_status_page)),
        route(Method::GET, "/status.json", get(observability::get_status_json)),
    ];
    let aliases: Vec<Route> = canonical
        .iter()
        .filter_map(|r| {
            let (from, to) = ALIASES.iter().find(|(from, _)| r.path.starts_with(from))?;
            // The handler as it is: placed already.
            Some(route_in_place(
                r.method.clone(),
                &r.path.replacen(from, to, 1),
                r.handler.clone(),
            ))
        })
        .collect();
    canonical.into_iter().chain(aliases).collect()
}

/// What [`router`] builds: a service hyper can serve, cheap to clone.
pub trait AppService:
    tower::Service<
        axum::http::Request<hyper::body::Incoming>,
        Response = axum::http::Response<Self::Body>,
        Error = std::convert::Infallible,
        Future: Send + 'static,
    > + Clone
    + Send
    + Sync
    + 'static
{
    type Body: axum::body::HttpBody<Data = bytes::Bytes, Error: Into<axum::BoxError>> + Send + 'static;
}

impl<S, B> AppService for S
where
    S: tower::Service<
            axum::http::Request<hyper::body::Incoming>,
            Response = axum::http::Response<B>,
            Error = std::convert::Infallible,
            Future: Send + 'static,
        > + Clone
        + Send
        + Sync
        + 'static,
    B: axum::body::HttpBody<Data = bytes::Bytes, Error: Into<axum::BoxError>> + Send + 'static,
{
    type Body = B;
}

/// The whole application: the routes inside the middleware stack.
///
/// The stack wraps the router as one service instead of being layered onto
/// every route: hyper clones the service per request, and a clone of this
/// stack is a few reference counts, where a route-level stack is boxed and
/// cloned whole on every request. Only what needs the matched route (the
/// duration histogram, the body limit, CORS) stays inside the router.
pub fn router(state: AppState) -> impl AppService {
    let server = &state.settings.server;
    let request_id = HeaderName::from_static("x-request-id");
    let compression = CompressionLayer::new().compress_when(
        SizeAbove::new(crate::gzip::MIN_BYTES as u16)
            .and(NotForContentType::GRPC)
            .and(NotForContentType::IMAGES)
            .and(NotForContentType::SSE),
    );
    let cors = middleware::cors(&server.cors_allowed_origins);
    let spec = openapi::openapi(state.queries.model(), &state.settings.auth);
    let routes = routes()
        .into_iter()
        .fold(Router::new(), |router, r| router.route(&r.path, r.handler))
        // Swagger UI's assets are vendored into the binary: /docs works offline.
        .merge(utoipa_swagger_ui::SwaggerUi::new("/docs").url("/openapi.json", spec))
        .fallback(|| async { ApiError::new(ErrorCode::NotFound, "no such route; see /openapi.json for the API") })
        .layer(DefaultBodyLimit::max(server.body_limit_bytes))
        .layer(observability::TrackRequestsLayer)
        .with_state(state.clone());
    let routes = match cors {
        Some(cors) => routes.layer(cors),
        None => routes,
    };
    ServiceBuilder::new()
        // The layers below (and the router) read axum's body type.
        .map_request(|request: axum::http::Request<hyper::body::Incoming>| request.map(axum::body::Body::new))
        .layer(CatchPanicLayer::custom(|_| {
            tracing::error!("handler panicked");
            axum::response::IntoResponse::into_response(ApiError::new(
                ErrorCode::InternalError,
                "internal server error",
            ))
        }))
        .layer(SetRequestIdLayer::new(
            request_id.clone(),
            middleware::CountedRequestId::new(),
        ))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(middleware::make_span)
                .on_request(())
                .on_response(middleware::on_response)
                // Failures are logged once, where they happen (with their cause), not again here.
                .on_failure(()),
        )
        .layer(PropagateRequestIdLayer::new(request_id))
        .map_response(middleware::json_error_bodies)
        .layer(compression)
        .layer(TimeoutLayer::with_status_code(
            StatusCode::GATEWAY_TIMEOUT,
            Duration::from_millis(server.request_timeout_ms),
        ))
        .service(routes)
}
