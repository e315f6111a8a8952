//! `POST|GET /analytics/query`: parse the request, run it through the query
//! service, render the answer (JSON, or CSV through `export`) with its
//! HTTP caching headers.

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use crate::analytics::{Answer, ReadOptions, Reply};
use crate::cache::stats::Outcome;
use crate::cache::{Accept, ReadMode};
use crate::error::{ApiError, ErrorCode};
use crate::gzip;
use crate::http::auth::{AdminTenantParam, Caller};
use crate::http::export::{csv_body, CsvPart, Format};
use crate::model::QueryRequest;
use crate::state::AppState;

/// Header names parsed once, not on every response.
const X_CACHE: HeaderName = HeaderName::from_static("x-cache");
const X_TOTAL_COUNT: HeaderName = HeaderName::from_static("x-total-count");

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
    /// Rows before `limit`/`offset`; only when the request says `"total": true`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total: Option<u64>,
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

/// The values of `Accept-Encoding` (unreadable ones skipped).
fn accept_encoding(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
}

/// The rendered reply with its caching and the caller's rate-limit headers.
/// An answer deflated in L1 goes gzipped if `headers` accept gzip
/// (others are left to the compression layer).
fn respond(
    caller: &Caller,
    reply: &Reply,
    format: Format,
    if_none_match: Option<&HeaderValue>,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let answers: &[Answer] = match reply {
        Reply::One(answer) => std::slice::from_ref(answer),
        Reply::Compare(answers) => answers,
    };
    let etag = entity_tag(answers, format);
    let mut response = match if_none_match {
        Some(tags) if matches_etag(tags, &etag) => not_modified(),
        _ => match (reply, format) {
            (Reply::One(answer), Format::Json) => render(answer, headers),
            (Reply::Compare(answers), Format::Json) => render_comparison(answers),
            (_, Format::Csv) => render_csv(answers, matches!(reply, Reply::Compare(_)))?,
        },
    };
    // A gzip body is another representation of the same answer: its tag is
    // weak (RFC 9110 8.8.1), and If-None-Match compares weakly, so it still
    // gets its 304.
    let mut etag = etag;
    if response.headers().contains_key(header::CONTENT_ENCODING) {
        etag.insert_str(0, "W/");
    }
    caching_headers(response.headers_mut(), answers, etag);
    if let Reply::One(Answer { served, .. }) = reply {
        if let Some(total) = served.entry.total {
            response.headers_mut().insert(X_TOTAL_COUNT, HeaderValue::from(total));
        }
    }
    if let Some(decision) = &caller.rate {
        response.headers_mut().extend(decision.headers());
    }
    Ok(response)
}

/// The answer's validator: its entry (the key's hash), when it was computed
/// and the version counters it was computed under, so an answer recomputed
/// after a change gets a new tag even within the same second. A comparison's
/// tag covers every part; the CSV form has a tag of its own.
fn entity_tag(answers: &[Answer], format: Format) -> String {
    use std::fmt::Write;
    let write_tag = |out: &mut String, answer: &Answer| {
        let hash = answer.key.rsplit(':').next().unwrap_or_default();
        let entry = &answer.served.entry;
        // Writing to a String cannot fail.
        let _ = write!(
            out,
            "{hash}-{:x}-{:x}",
            entry.created_at,
            entry.versions.unwrap_or_default()
        );
    };
    // Room for `W/` (a gzip body's tag) and the quotes: one allocation.
    let mut etag = String::with_capacity(72);
    etag.push('"');
    match answers {
        // One answer (every hit) writes its tag in place; only a comparison hashes.
        [one] => write_tag(&mut etag, one),
        many => {
            use md5::Digest;
            let mut tags = String::new();
            for (i, answer) in many.iter().enumerate() {
                if i > 0 {
                    tags.push(',');
                }
                write_tag(&mut tags, answer);
            }
            etag.push_str("cmp-");
            etag.push_str(&hex::encode(md5::Md5::digest(tags.as_bytes())));
        }
    }
    if format == Format::Csv {
        etag.push_str("-csv");
    }
    etag.push('"');
    etag
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
/// changes the answer or its encoding. A comparison is as fresh as its
/// stalest part.
fn caching_headers(headers: &mut HeaderMap, answers: &[Answer], etag: String) {
    let remaining = answers
        .iter()
        .map(|answer| {
            let served = &answer.served;
            if served.stale {
                0
            } else {
                served.entry.ttl_seconds.saturating_sub(served.age_seconds)
            }
        })
        .min()
        .unwrap_or_default();
    let age = answers.iter().map(|a| a.served.age_seconds).max().unwrap_or_default();
    // From the owned strings: no second copy of either value.
    if let Ok(etag) = HeaderValue::try_from(etag) {
        headers.insert(header::ETAG, etag);
    }
    if let Ok(control) = HeaderValue::try_from(format!("private, max-age={remaining}")) {
        headers.insert(header::CACHE_CONTROL, control);
    }
    headers.insert(header::AGE, HeaderValue::from(age));
    headers.insert(
        header::VARY,
        HeaderValue::from_static("authorization, accept, accept-encoding"),
    );
}

/// `metadata` of one answer.
fn metadata(answer: &Answer) -> QueryMetadata<'_> {
    let served = &answer.served;
    let from_cache = served.from_cache();
    QueryMetadata {
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
        total: served.entry.total,
    }
}

/// Appends `"data":<cached bytes>,"metadata":{...}` (no braces) to `body`,
/// splicing the data unparsed.
fn push_result(body: &mut Vec<u8>, answer: &Answer) {
    body.extend_from_slice(b"\"data\":");
    body.extend_from_slice(&answer.served.entry.data);
    push_metadata(body, answer);
}

/// Appends `,"metadata":{...}` to `body`.
fn push_metadata(body: &mut Vec<u8>, answer: &Answer) {
    body.extend_from_slice(b",\"metadata\":");
    metadata(answer).write_json(body);
}

impl QueryMetadata<'_> {
    /// Appends the bytes `serde_json::to_writer` would (a test holds them
    /// equal) on every response: the field names are literals here, where
    /// serde_json would escape each of them byte by byte (about a twentieth
    /// of an L1 hit's instructions); the values still go through serde_json.
    fn write_json(&self, out: &mut Vec<u8>) {
        fn field(out: &mut Vec<u8>, name: &[u8], value: &impl Serialize) {
            out.extend_from_slice(name);
            // Numbers, booleans and strings: serializing them cannot fail.
            let _ = serde_json::to_writer(&mut *out, value);
        }
        // A string serde_json would not escape (the cache key, the source:
        // no quote, backslash or control byte) is copied as it is.
        fn text(out: &mut Vec<u8>, name: &[u8], value: &str) {
            if value.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
                out.extend_from_slice(name);
                out.push(b'"');
                out.extend_from_slice(value.as_bytes());
                out.push(b'"');
            } else {
                field(out, name, &value);
            }
        }
        field(out, b"{\"total_rows\":", &self.total_rows);
        field(out, b",\"query_time_ms\":", &self.query_time_ms);
        field(out, b",\"cached\":", &self.cached);
        field(out, b",\"from_cache\":", &self.from_cache);
        text(out, b",\"cache_key\":", self.cache_key);
        field(out, b",\"cache_tier\":", &self.cache_tier);
        field(out, b",\"ttl_seconds\":", &self.ttl_seconds);
        field(out, b",\"stale\":", &self.stale);
        field(out, b",\"age_seconds\":", &self.age_seconds);
        text(out, b",\"source\":", self.source);
        if let Some(total) = self.total {
            field(out, b",\"total\":", &total);
        }
        out.push(b'}');
    }
}

/// `{"data": ..., "metadata": ...}`, gzipped around the data deflated in L1
/// when the entry has that form and `headers` accept gzip (read only then:
/// most answers are small and have none).
fn render(answer: &Answer, headers: &HeaderMap) -> Response {
    if let Some(deflated) = &answer.served.entry.deflated {
        if gzip::accepted(accept_encoding(headers)) {
            return render_gzip(answer, deflated);
        }
    }
    let mut body = Vec::with_capacity(answer.served.entry.data.len() + 320);
    body.push(b'{');
    push_result(&mut body, answer);
    body.push(b'}');
    json_response(body, std::slice::from_ref(answer))
}

/// The answer as one gzip member: `{"data":`, the entry's deflated data,
/// then the metadata of this response (see `crate::gzip`).
fn render_gzip(answer: &Answer, deflated: &gzip::Segment) -> Response {
    let mut tail = Vec::with_capacity(320);
    push_metadata(&mut tail, answer);
    tail.push(b'}');
    let body = gzip::member(b"{\"data\":", deflated, &tail);
    let mut response = json_response(body, std::slice::from_ref(answer));
    response
        .headers_mut()
        .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    response
}

/// `{"results": [{"date_range": ..., "data": ..., "metadata": ...}, ...]}`.
fn render_comparison(answers: &[Answer]) -> Response {
    let size: usize = answers.iter().map(|a| a.served.entry.data.len() + 400).sum();
    let mut body = Vec::with_capacity(size + 16);
    body.extend_from_slice(b"{\"results\":[");
    for (i, answer) in answers.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        let range = answer
            .compiled
            .resolved
            .date_range
            .map(|r| serde_json::json!({"start_date": r.start.to_string(), "end_date": r.end.to_string()}));
        body.extend_from_slice(b"{\"date_range\":");
        body.extend_from_slice(serde_json::to_string(&range).unwrap_or_default().as_bytes());
        body.push(b',');
        push_result(&mut body, answer);
        body.push(b'}');
    }
    body.extend_from_slice(b"]}");
    json_response(body, answers)
}

fn json_response(body: Vec<u8>, answers: &[Answer]) -> Response {
    let mut response = Response::new(Body::from(body));
    // Room for every header an answer gets (here, the caching headers, the
    // request id, the rate limit's), so the map never grows per response.
    *response.headers_mut() = HeaderMap::with_capacity(16);
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(X_CACHE, x_cache(answers));
    response
}

/// The answer as CSV (streamed): the columns are the dimensions, then the
/// metrics, as requested; a comparison leads each row with its range.
fn render_csv(answers: &[Answer], compared: bool) -> Result<Response, ApiError> {
    let Some(first) = answers.first() else {
        return Err(ApiError::new(ErrorCode::InternalError, "no answer to export"));
    };
    let resolved = &first.compiled.resolved;
    let columns = resolved.dimensions.iter().chain(&resolved.metrics).cloned().collect();
    let parts = answers
        .iter()
        .map(|answer| CsvPart {
            data: answer.served.entry.data.clone(),
            range: compared
                .then(|| {
                    answer
                        .compiled
                        .resolved
                        .date_range
                        .map(|r| format!("{}/{}", r.start, r.end))
                })
                .flatten(),
        })
        .collect();
    let mut response = Response::new(csv_body(columns, parts)?);
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=utf-8; header=present"),
    );
    if let Ok(disposition) = HeaderValue::from_str(&format!("attachment; filename=\"{}.csv\"", resolved.dataset)) {
        headers.insert(header::CONTENT_DISPOSITION, disposition);
    }
    headers.insert(X_CACHE, x_cache(answers));
    Ok(response)
}

/// `STALE` when any part was served stale, `HIT` when every part came from
/// the cache, else `MISS`.
fn x_cache(answers: &[Answer]) -> HeaderValue {
    let value = if answers.iter().any(|a| a.served.stale) {
        "STALE"
    } else if answers.iter().all(|a| a.served.from_cache()) {
        "HIT"
    } else {
        "MISS"
    };
    HeaderValue::from_static(value)
}

#[cfg(test)]
mod tests {
    use super::*;

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

    /// The metadata writer says what serde_json would, byte for byte,
    /// including strings that need escaping and the optional `total`.
    #[test]
    fn metadata_is_written_as_serde_json_writes_it() {
        let cases = [
            QueryMetadata {
                total_rows: 3,
                query_time_ms: 0.125,
                cached: true,
                from_cache: true,
                cache_key: "analytics:v3:default:sales:0123abcd",
                cache_tier: Some("l1"),
                ttl_seconds: 300,
                stale: false,
                age_seconds: 7,
                // Copied as it is: serde_json escapes neither DEL nor non-ASCII.
                source: "raw \u{7f} ünï",
                total: None,
            },
            QueryMetadata {
                total_rows: 0,
                query_time_ms: 1234.5,
                cached: false,
                from_cache: false,
                cache_key: "a \"quoted\" key\\ with \u{7} and ünïcode",
                cache_tier: None,
                ttl_seconds: 0,
                stale: true,
                age_seconds: u64::MAX,
                source: "daily_store",
                total: Some(42),
            },
        ];
        for metadata in cases {
            let mut written = Vec::new();
            metadata.write_json(&mut written);
            let expected = serde_json::to_vec(&metadata).expect("serializes");
            assert_eq!(String::from_utf8_lossy(&written), String::from_utf8_lossy(&expected));
        }
    }
}
