//! `POST|GET /analytics/query`: validate, compile, serve from cache or database.

use std::sync::Arc;
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::Response;
use serde::{Deserialize, Serialize};

use crate::cache::stats::Outcome;
use crate::cache::{ReadMode, Served};
use crate::db::{self, DbError};
use crate::error::ApiError;
use crate::http::auth::Caller;
use crate::model::{CompiledQuery, QueryError, QueryErrorKind, QueryRequest};
use crate::state::AppState;
use crate::status::HotKey;

/// Query-string options shared by both methods.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct QueryParams {
    /// GET only: the URL-encoded JSON request.
    pub q: Option<String>,
    /// `refresh` skips the cache read and overwrites the entry.
    pub cache: Option<String>,
}

/// `metadata` of a query response.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct QueryMetadata {
    pub total_rows: u64,
    pub query_time_ms: f64,
    /// The result is stored in the cache now.
    pub cached: bool,
    /// This response was served from the cache.
    pub from_cache: bool,
    pub cache_key: String,
    /// `l1`, `redis`, or null when not served from the cache.
    pub cache_tier: Option<&'static str>,
    pub ttl_seconds: u64,
}

/// The documented response shape (the handler splices `data` unparsed).
#[derive(Serialize, utoipa::ToSchema)]
pub struct QueryResponse {
    #[schema(value_type = Vec<Object>)]
    pub data: Vec<serde_json::Value>,
    pub metadata: QueryMetadata,
}

/// Runs an analytics query given as a JSON body.
#[utoipa::path(
    post, path = "/analytics/query", tag = "query",
    params(QueryParams),
    request_body = QueryRequest,
    responses(
        (status = 200, description = "Result rows and metadata", body = QueryResponse),
        (status = 400, description = "Malformed JSON or wrong types", body = crate::error::ErrorBody),
        (status = 413, description = "Body too large", body = crate::error::ErrorBody),
        (status = 415, description = "Body is not JSON", body = crate::error::ErrorBody),
        (status = 422, description = "Unknown metric, dimension, operator; bad values", body = crate::error::ErrorBody),
        (status = 503, description = "Database unavailable", body = crate::error::ErrorBody),
        (status = 504, description = "Statement timeout", body = crate::error::ErrorBody),
    )
)]
pub async fn run_query(
    State(state): State<AppState>,
    caller: Caller,
    Query(params): Query<QueryParams>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    if !is_json(&headers) {
        return Err(ApiError::new(
            axum::http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the query as a JSON body with `Content-Type: application/json`",
        ));
    }
    let request = QueryRequest::from_json(&body)?;
    execute(&state, caller, request, read_mode(&headers, &params)).await
}

/// Runs an analytics query given as `?q=<url-encoded JSON>`.
#[utoipa::path(
    get, path = "/analytics/query", tag = "query",
    params(QueryParams),
    responses(
        (status = 200, description = "Result rows and metadata", body = QueryResponse),
        (status = 400, description = "Missing or malformed `q`", body = crate::error::ErrorBody),
        (status = 422, description = "Unknown metric, dimension, operator; bad values", body = crate::error::ErrorBody),
    )
)]
pub async fn run_query_get(
    State(state): State<AppState>,
    caller: Caller,
    Query(params): Query<QueryParams>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let q = params.q.as_deref().ok_or_else(|| {
        ApiError::bad_request("invalid_request", "missing `q` parameter: the URL-encoded JSON query").with_field("q")
    })?;
    let request = QueryRequest::from_json(q.as_bytes()).map_err(|e| ApiError::from(e).with_field("q"))?;
    execute(&state, caller, request, read_mode(&headers, &params)).await
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|mime| {
            let mime = mime.trim().to_ascii_lowercase();
            mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
        })
        .unwrap_or(false)
}

/// `Cache-Control: no-cache` or `?cache=refresh` forces fresh data.
fn read_mode(headers: &HeaderMap, params: &QueryParams) -> ReadMode {
    let no_cache_header = headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|d| matches!(d.trim().to_ascii_lowercase().as_str(), "no-cache" | "no-store"));
    if no_cache_header || params.cache.as_deref() == Some("refresh") {
        ReadMode::Refresh
    } else {
        ReadMode::Normal
    }
}

/// Compiles and serves one request; shared by both methods and by cache warming.
pub async fn execute(
    state: &AppState,
    caller: Caller,
    request: QueryRequest,
    mode: ReadMode,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let (compiled, served) = serve(state, &caller, &request, mode).await?;
    let elapsed = started.elapsed();
    let span = tracing::Span::current();
    span.record("cache", served.outcome.as_str());
    if let Some(db) = served.db_elapsed {
        span.record("db_ms", db.as_secs_f64() * 1e3);
    }
    state.status.record(crate::cache::unix_now(), served.outcome, elapsed);
    state.status.record_key(&compiled.cache_key, || HotKey {
        dataset: compiled.dataset.clone(),
        tenant: compiled.tenant.clone(),
        summary: compiled.summary(),
        hits: 0,
    });
    let mut response = render(&compiled.cache_key, compiled.ttl_seconds, &served, started);
    if let Some(decision) = &caller.rate {
        response
            .headers_mut()
            .extend(crate::http::auth::rate_limit_headers(decision));
    }
    Ok(response)
}

/// Compiles and runs through the cache.
pub async fn serve(
    state: &AppState,
    caller: &Caller,
    request: &QueryRequest,
    mode: ReadMode,
) -> Result<(Arc<CompiledQuery>, Served), ApiError> {
    let compiled = Arc::new(state.model.compile(&state.compile_context(), &caller.tenant, request)?);
    tracing::Span::current().record("tenant", compiled.tenant.as_str());
    let pool = state.db.clone();
    let model = Arc::clone(&state.model);
    let for_compute = Arc::clone(&compiled);
    // The statement is built inside the computation: hits never pay for it.
    let compute = move || async move {
        let sql = model
            .sql_for(&for_compute)
            .ok_or_else(|| DbError::Query(format!("dataset `{}` vanished from the model", for_compute.dataset)))?;
        db::fetch(&pool, sql).await
    };
    let served = state
        .cache
        .get_or_compute(&compiled.cache_key, compiled.ttl_seconds, mode, compute)
        .await?;
    Ok((compiled, served))
}

/// Splices the cached `data` bytes with fresh metadata, without parsing them.
fn render(cache_key: &str, ttl_seconds: u64, served: &Served, started: Instant) -> Response {
    let from_cache = served.from_cache();
    let metadata = QueryMetadata {
        total_rows: served.entry.rows,
        query_time_ms: (started.elapsed().as_secs_f64() * 1e6).round() / 1e3,
        cached: served.stored,
        from_cache,
        cache_key: cache_key.to_owned(),
        cache_tier: match served.outcome {
            Outcome::L1 => Some("l1"),
            Outcome::Redis => Some("redis"),
            Outcome::Miss | Outcome::Bypass => None,
        },
        ttl_seconds: if from_cache {
            served.entry.ttl_seconds
        } else {
            ttl_seconds
        },
    };
    // Serializing a struct of numbers and strings cannot fail.
    let metadata = serde_json::to_vec(&metadata).unwrap_or_else(|_| b"{}".to_vec());
    let data = &served.entry.data;
    let mut body = Vec::with_capacity(data.len() + metadata.len() + 24);
    body.extend_from_slice(b"{\"data\":");
    body.extend_from_slice(data);
    body.extend_from_slice(b",\"metadata\":");
    body.extend_from_slice(&metadata);
    body.push(b'}');
    let mut response = Response::new(Body::from(body));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(
        "x-cache",
        HeaderValue::from_static(if from_cache { "HIT" } else { "MISS" }),
    );
    response
}

impl From<QueryError> for ApiError {
    fn from(error: QueryError) -> Self {
        let base = match error.kind {
            QueryErrorKind::Malformed => ApiError::bad_request(error.code, error.message),
            QueryErrorKind::Invalid => ApiError::unprocessable(error.code, error.message),
        };
        match error.field {
            Some(field) => base.with_field(field),
            None => base,
        }
    }
}

impl From<DbError> for ApiError {
    fn from(error: DbError) -> Self {
        match error {
            DbError::Timeout => {
                tracing::warn!("query exceeded the database statement timeout");
                ApiError::new(
                    axum::http::StatusCode::GATEWAY_TIMEOUT,
                    "query_timeout",
                    "the query exceeded the database statement timeout; narrow the date range or filters",
                )
            }
            DbError::Unavailable(cause) => {
                tracing::warn!(%cause, "database unavailable");
                ApiError::new(
                    axum::http::StatusCode::SERVICE_UNAVAILABLE,
                    "database_unavailable",
                    "the database is unavailable and the result is not cached; retry shortly",
                )
                .with_retry_after(1)
            }
            DbError::Query(_) => ApiError::internal(&error),
        }
    }
}
