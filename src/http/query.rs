//! `POST|GET /analytics/query`: parse the request, run it through the query
//! service, render the answer.

use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::Response;
use serde::{Deserialize, Serialize};

use crate::analytics::{Answer, ReadOptions};
use crate::cache::stats::Outcome;
use crate::cache::{Accept, ReadMode};
use crate::error::{ApiError, ErrorCode};
use crate::http::auth::Caller;
use crate::model::QueryRequest;
use crate::state::AppState;

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
pub struct QueryMetadata<'a> {
    pub total_rows: u64,
    pub query_time_ms: f64,
    /// The result is stored in the cache now.
    pub cached: bool,
    /// This response was served from the cache.
    pub from_cache: bool,
    pub cache_key: &'a str,
    /// `l1`, `redis`, or null when not served from the cache.
    pub cache_tier: Option<&'static str>,
    pub ttl_seconds: u64,
    /// Served past its TTL or after a data change (stale-while-revalidate,
    /// `max-stale`, or stale-if-error while the database cannot answer).
    pub stale: bool,
    /// Seconds since the answer was computed.
    pub age_seconds: u64,
    /// What computed the answer: `raw` (the fact table) or the name of the
    /// rollup that did.
    pub source: &'a str,
}

/// The documented response shape (the handler splices `data` unparsed).
#[derive(Serialize, utoipa::ToSchema)]
pub struct QueryResponse {
    #[schema(value_type = Vec<Object>)]
    pub data: Vec<serde_json::Value>,
    pub metadata: QueryMetadata<'static>,
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
            ErrorCode::UnsupportedMediaType,
            "send the query as a JSON body with `Content-Type: application/json`",
        ));
    }
    let answer = state
        .queries
        .run_body(&caller.tenant, &body, read_options(&headers, &params))
        .await?;
    Ok(respond(&caller, &answer, None))
}

/// Runs an analytics query given as `?q=<url-encoded JSON>`.
#[utoipa::path(
    get, path = "/analytics/query", tag = "query",
    params(QueryParams),
    responses(
        (status = 200, description = "Result rows and metadata", body = QueryResponse),
        (status = 304, description = "`If-None-Match` holds the answer's ETag: unchanged, no body"),
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
        ApiError::new(
            ErrorCode::InvalidRequest,
            "missing `q` parameter: the URL-encoded JSON query",
        )
        .with_field("q")
    })?;
    let request = QueryRequest::from_json(q.as_bytes()).map_err(|e| ApiError::from(e).with_field("q"))?;
    execute(&state, caller, request, &headers, &params).await
}

pub(super) fn is_json(headers: &HeaderMap) -> bool {
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

/// `Cache-Control` request directives (RFC 9111): `no-cache`/`no-store` (or
/// `?cache=refresh`) force fresh data; `max-age=N` refuses older answers;
/// `max-stale[=N]` accepts answers up to N s past their TTL; `only-if-cached`
/// never runs the query.
fn read_options(headers: &HeaderMap, params: &QueryParams) -> ReadOptions {
    let mut mode = if params.cache.as_deref() == Some("refresh") {
        ReadMode::Refresh
    } else {
        ReadMode::Normal
    };
    let mut accept = Accept::default();
    let directives = headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|d| d.trim().to_ascii_lowercase());
    for directive in directives {
        let (name, value) = match directive.split_once('=') {
            Some((name, value)) => (name.trim().to_owned(), Some(value.trim().trim_matches('"').to_owned())),
            None => (directive.clone(), None),
        };
        let seconds = value.as_deref().and_then(|v| v.parse::<u64>().ok());
        match name.as_str() {
            "no-cache" | "no-store" => mode = ReadMode::Refresh,
            "max-age" => accept.max_age = seconds.or(accept.max_age),
            // Without a value, any staleness will do.
            "max-stale" => {
                accept.max_stale = Some(if value.is_some() {
                    seconds.unwrap_or(0)
                } else {
                    u64::MAX
                })
            }
            "only-if-cached" => accept.only_if_cached = true,
            _ => {}
        }
    }
    ReadOptions { mode, accept }
}

/// Runs one request through the query service and renders the answer.
async fn execute(
    state: &AppState,
    caller: Caller,
    request: QueryRequest,
    headers: &HeaderMap,
    params: &QueryParams,
) -> Result<Response, ApiError> {
    let answer = state
        .queries
        .run(&caller.tenant, &request, read_options(headers, params))
        .await?;
    Ok(respond(&caller, &answer, headers.get(header::IF_NONE_MATCH)))
}

/// The rendered answer with the caller's rate-limit headers.
fn respond(caller: &Caller, answer: &Answer, if_none_match: Option<&HeaderValue>) -> Response {
    let etag = entity_tag(answer);
    let mut response = match if_none_match {
        Some(tags) if matches_etag(tags, &etag) => not_modified(),
        _ => render(answer),
    };
    caching_headers(response.headers_mut(), answer, etag);
    if let Some(decision) = &caller.rate {
        response.headers_mut().extend(decision.headers());
    }
    response
}

/// The answer's validator: its entry (the key's hash), when it was computed
/// and the version counters it was computed under, so an answer recomputed
/// after a change gets a new tag even within the same second.
fn entity_tag(answer: &Answer) -> String {
    let hash = answer.key.rsplit(':').next().unwrap_or_default();
    let entry = &answer.served.entry;
    format!(
        "\"{hash}-{:x}-{:x}\"",
        entry.created_at,
        entry.versions.unwrap_or_default()
    )
}

/// `If-None-Match`: `*` or a list of (possibly weak) tags (RFC 9110 13.1.2).
fn matches_etag(header: &HeaderValue, etag: &str) -> bool {
    let Ok(tags) = header.to_str() else { return false };
    tags.split(',')
        .map(|t| t.trim().trim_start_matches("W/"))
        .any(|t| t == "*" || t == etag)
}

fn not_modified() -> Response {
    let mut response = Response::new(Body::empty());
    *response.status_mut() = axum::http::StatusCode::NOT_MODIFIED;
    response
}

/// HTTP caching (RFC 9111): the tag, `Cache-Control: private` (answers are
/// per tenant) with the entry's remaining TTL, its `Age`, and `Vary` on what
/// changes the answer or its encoding.
fn caching_headers(headers: &mut HeaderMap, answer: &Answer, etag: String) {
    let served = &answer.served;
    let remaining = if served.stale {
        0
    } else {
        served.entry.ttl_seconds.saturating_sub(served.age_seconds)
    };
    if let Ok(etag) = HeaderValue::from_str(&etag) {
        headers.insert(header::ETAG, etag);
    }
    if let Ok(control) = HeaderValue::from_str(&format!("private, max-age={remaining}")) {
        headers.insert(header::CACHE_CONTROL, control);
    }
    headers.insert(header::AGE, HeaderValue::from(served.age_seconds));
    headers.insert(
        header::VARY,
        HeaderValue::from_static("authorization, accept, accept-encoding"),
    );
}

/// Splices the cached `data` bytes with fresh metadata, without parsing them.
fn render(answer: &Answer) -> Response {
    let served = &answer.served;
    let from_cache = served.from_cache();
    let metadata = QueryMetadata {
        total_rows: served.entry.rows,
        query_time_ms: (answer.started.elapsed().as_secs_f64() * 1e6).round() / 1e3,
        cached: served.stored,
        from_cache,
        cache_key: &answer.key,
        cache_tier: match served.outcome {
            Outcome::L1 => Some("l1"),
            Outcome::Redis => Some("redis"),
            Outcome::Miss | Outcome::Bypass => None,
        },
        ttl_seconds: if from_cache {
            served.entry.ttl_seconds
        } else {
            answer.compiled.ttl_seconds
        },
        stale: served.stale,
        age_seconds: served.age_seconds,
        source: served.entry.source.as_deref().unwrap_or("raw"),
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
    let x_cache = match (served.stale, from_cache) {
        (true, _) => "STALE",
        (false, true) => "HIT",
        (false, false) => "MISS",
    };
    headers.insert("x-cache", HeaderValue::from_static(x_cache));
    response
}
