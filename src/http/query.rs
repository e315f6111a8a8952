//! `POST|GET /analytics/query`: the wire types, parsing the request and its
//! `Cache-Control`, running it through the query service; the answer is
//! rendered by `render`.

use axum::body::Bytes;
use axum::extract::{FromRequest, Query, Request, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use crate::analytics::ReadOptions;
use crate::cache::{Accept, ReadMode};
use crate::error::{ApiError, ErrorCode};
use crate::http::auth::{AdminTenantParam, Caller};
use crate::http::export::Format;
use crate::http::render::{respond, QueryMetadata};
use crate::model::QueryRequest;
use crate::state::AppState;

/// Query-string options shared by both methods.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct QueryParams {
    /// GET only: the URL-encoded JSON request.
    pub q: Option<String>,
    /// `refresh` skips the cache read and overwrites the entry.
    pub cache: Option<String>,
    /// `json` (default) or `csv`; overrides the `Accept` header.
    #[param(value_type = Option<FormatParam>, inline)]
    pub format: Option<String>,
}

/// The values of `?format=` (documentation only: the handler reads a string
/// so that any other value gets a message naming these).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub enum FormatParam {
    #[schema(rename = "json")]
    Json,
    #[schema(rename = "csv")]
    Csv,
}

/// The documented response shape (the handler splices `data` unparsed).
#[derive(Serialize, utoipa::ToSchema)]
pub struct QueryResponse {
    #[schema(value_type = Vec<Object>)]
    pub data: Vec<serde_json::Value>,
    pub metadata: QueryMetadata<'static>,
}

/// What `/analytics/query` answers in JSON: one result, or one per range of
/// `compare_date_range` (documentation only; the handler splices bytes).
#[derive(Serialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum QueryAnswer {
    One(QueryResponse),
    Compare(CompareResponse),
}

/// The answer to a `compare_date_range` request: one result per range, in
/// the request's order.
#[derive(Serialize, utoipa::ToSchema)]
pub struct CompareResponse {
    pub results: Vec<CompareResult>,
}

/// One range of a comparison: the range, then the same shape as a
/// [`QueryResponse`].
#[derive(Serialize, utoipa::ToSchema)]
pub struct CompareResult {
    pub date_range: crate::model::DateRange,
    #[schema(value_type = Vec<Object>)]
    pub data: Vec<serde_json::Value>,
    pub metadata: QueryMetadata<'static>,
}

/// Runs an analytics query given as a JSON body.
#[utoipa::path(
    post, path = "/analytics/query", tag = "query",
    params(QueryParams, AdminTenantParam),
    security(("tenant_key" = []), ("admin_token" = []), ()),
    request_body = QueryRequest,
    responses(
        (status = 200, description = "Result rows and metadata (`{\"results\": [...]}` for `compare_date_range`), \
            or CSV with a header row for `Accept: text/csv` / `?format=csv`", content(
            (QueryAnswer = "application/json"),
            (String = "text/csv"),
        )),
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
    request: Request,
) -> Result<Response, ApiError> {
    // The headers are taken out of the request, not cloned (axum's
    // `HeaderMap` extractor copies the whole map on every request); the body
    // is read as the `Bytes` extractor reads it, under `DefaultBodyLimit`,
    // and its refusal (413, a broken body) is answered as it would be.
    let (mut parts, body) = request.into_parts();
    let headers = std::mem::take(&mut parts.headers);
    let body = match Bytes::from_request(Request::from_parts(parts, body), &state).await {
        Ok(body) => body,
        Err(refused) => return Ok(refused.into_response()),
    };
    if !is_json(&headers) {
        return Err(ApiError::new(
            ErrorCode::UnsupportedMediaType,
            "send the query as a JSON body with `Content-Type: application/json`",
        ));
    }
    let format = Format::negotiate(params.format.as_deref(), &headers)?;
    let reply = state
        .queries
        .run_body(&caller.tenant, &body, read_options(&headers, &params))
        .await?;
    respond(&caller, &reply, format, None, &headers)
}

/// Runs an analytics query given as `?q=<url-encoded JSON>`.
#[utoipa::path(
    get, path = "/analytics/query", tag = "query",
    params(QueryParams, AdminTenantParam),
    security(("tenant_key" = []), ("admin_token" = []), ()),
    responses(
        (status = 200, description = "Result rows and metadata (`{\"results\": [...]}` for `compare_date_range`), \
            or CSV with a header row for `Accept: text/csv` / `?format=csv`", content(
            (QueryAnswer = "application/json"),
            (String = "text/csv"),
        )),
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
            let mime = mime.trim().as_bytes();
            let ends_with = |suffix: &[u8]| {
                mime.len() >= suffix.len() && mime[mime.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
            };
            mime.eq_ignore_ascii_case(b"application/json")
                || (mime.len() > 12 && mime[..12].eq_ignore_ascii_case(b"application/") && ends_with(b"+json"))
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
    let format = Format::negotiate(params.format.as_deref(), headers)?;
    let reply = state
        .queries
        .run(&caller.tenant, &request, read_options(headers, params))
        .await?;
    respond(&caller, &reply, format, headers.get(header::IF_NONE_MATCH), headers)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn json_bodies_are_recognised_by_their_media_type_in_any_case() {
        let with = |value: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(value));
            is_json(&headers)
        };
        for yes in [
            "application/json",
            "Application/JSON; charset=utf-8",
            " application/json ",
            "application/vnd.api+json",
            "APPLICATION/PROBLEM+JSON",
        ] {
            assert!(with(yes), "{yes}");
        }
        for no in [
            "text/json",
            "application/jsonx",
            "application+json",
            "application/",
            "text/plain+json",
        ] {
            assert!(!with(no), "{no}");
        }
        assert!(!is_json(&HeaderMap::new()), "no Content-Type");
    }
}
