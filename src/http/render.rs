//! The reply to a query, rendered: JSON spliced around the cached data
//! bytes (gzip straight from the form deflated in L1), a comparison, CSV
//! through `export`, and the HTTP caching headers (ETag, `Cache-Control`,
//! `Age`, `Vary`, `X-Cache`). The `metadata` wire type lives here, beside
//! the writer that must say what serde would. Every cache hit goes through
//! here: keep it free of parsing and of copies of the data.

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue};
use axum::response::Response;
use serde::Serialize;

use crate::analytics::{Answer, Reply};
use crate::cache::stats::Outcome;
use crate::error::{ApiError, ErrorCode};
use crate::gzip;
use crate::http::auth::Caller;
use crate::http::export::{csv_body, CsvPart, Format};

/// Header names parsed once, not on every response.
const X_CACHE: HeaderName = HeaderName::from_static("x-cache");
const X_TOTAL_COUNT: HeaderName = HeaderName::from_static("x-total-count");

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
pub(super) fn respond(
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
