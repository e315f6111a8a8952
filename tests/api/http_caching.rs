//! HTTP caching of query answers (RFC 9110/9111): `ETag`, `If-None-Match` →
//! 304 without a body on GET, `Cache-Control: private, max-age=<remaining
//! TTL>`, `Age`, `Vary`; a data change gives the answer a new tag.

use serde_json::json;

use crate::helpers::{spawn_app, TestApp};

#[tokio::test]
async fn a_polling_dashboard_costs_a_header_exchange() {
    let app = spawn_app().await;
    let query = json!({"metrics": ["revenue"], "dimensions": ["channel"],
                       "date_range": {"start_date": "2024-05-01", "end_date": "2024-05-31"}})
    .to_string();
    let get = |etag: Option<String>| {
        let mut request = app.client.get(app.url("/analytics/query")).query(&[("q", &query)]);
        if let Some(etag) = etag {
            request = request.header("if-none-match", etag);
        }
        request.send()
    };
    let first = get(None).await.expect("first");
    assert_eq!(first.status(), 200);
    let headers = first.headers().clone();
    let etag = headers["etag"].to_str().expect("etag").to_owned();
    assert!(etag.starts_with('"') && etag.ends_with('"'), "{etag}");
    let control = headers["cache-control"].to_str().expect("cache-control");
    let max_age: u64 = control
        .strip_prefix("private, max-age=")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{control}"));
    assert!(max_age > 0 && max_age <= 600, "{control}");
    assert_eq!(headers["age"], "0");
    assert!(headers["vary"].to_str().expect("vary").contains("authorization"));

    // Unchanged: 304, no body, the same tag.
    let again = get(Some(etag.clone())).await.expect("again");
    assert_eq!(again.status(), 304);
    assert_eq!(again.headers()["etag"].to_str().expect("etag"), etag);
    assert!(again.bytes().await.expect("body").is_empty());
    assert_eq!(
        get(Some("\"other\", W/".to_owned() + &etag))
            .await
            .expect("list")
            .status(),
        304
    );
    assert_eq!(get(Some("\"other\"".into())).await.expect("other").status(), 200);

    // POST answers carry the same tag for the same entry.
    let post = app
        .client
        .post(app.url("/analytics/query"))
        .header("content-type", "application/json")
        .body(query.clone())
        .send()
        .await
        .expect("post");
    assert_eq!(post.headers()["etag"].to_str().expect("etag"), etag);

    // A change in May 2024: the answer is recomputed, with a new tag.
    sqlx::query(
        "INSERT INTO sales (id, store_id, channel_id, created_at, status, total_amount)
         SELECT max(id) + 1, 1, 2, timestamptz '2024-05-15 12:00:00-03', 'COMPLETED', 10 FROM sales",
    )
    .execute(&app.db)
    .await
    .expect("insert");
    let started = std::time::Instant::now();
    loop {
        let response = get(Some(etag.clone())).await.expect("after change");
        if response.status() == 200 {
            assert_ne!(response.headers()["etag"].to_str().expect("etag"), etag);
            break;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(3),
            "still 304 after a change"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Decodes a gzip body (one member, as any HTTP client reads it).
fn gunzip(bytes: &[u8]) -> serde_json::Value {
    use std::io::Read;
    let mut text = String::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_string(&mut text)
        .expect("a valid gzip body");
    serde_json::from_str(&text).expect("JSON inside")
}

/// POSTs `query` with `Accept-Encoding: encoding`.
async fn post_accepting(
    app: &TestApp,
    query: &serde_json::Value,
    encoding: &str,
) -> reqwest::Result<reqwest::Response> {
    app.client
        .post(app.url("/analytics/query"))
        .header("accept-encoding", encoding)
        .json(query)
        .send()
        .await
}

/// Past 64 KB the entry is deflated on the blocking pool, not inline: its
/// gzip hits still come from that form (a weak tag and the same data).
#[tokio::test]
async fn an_answer_over_64_kb_is_deflated_off_the_runtime_and_served_gzipped() {
    let app = spawn_app().await;
    let query = json!({"metrics": ["revenue", "sales_count"], "dimensions": ["store", "day"]});
    let post = |encoding: &'static str| post_accepting(&app, &query, encoding);
    let plain: serde_json::Value = post("identity").await.expect("plain").json().await.expect("json");
    let size = plain["data"].to_string().len();
    assert!(size > 64 * 1024, "the data must pass 64 KB: {size} bytes");
    let response = post("gzip").await.expect("gzip");
    assert_eq!(response.headers()["content-encoding"], "gzip");
    assert_eq!(response.headers()["x-cache"], "HIT");
    let etag = response.headers()["etag"].to_str().expect("etag").to_owned();
    assert!(etag.starts_with("W/\""), "from the L1 form: {etag}");
    let answer = gunzip(&response.bytes().await.expect("body"));
    assert_eq!(answer["data"], plain["data"]);
}

#[tokio::test]
async fn a_large_answer_is_gzipped_from_its_l1_form_for_clients_that_take_gzip() {
    let app = spawn_app().await;
    let query = json!({"metrics": ["revenue", "sales_count"], "dimensions": ["store", "channel"]});
    let post = |encoding: &'static str| post_accepting(&app, &query, encoding);
    let plain = post("identity").await.expect("plain");
    assert_eq!(plain.status(), 200);
    assert!(plain.headers().get("content-encoding").is_none());
    let plain: serde_json::Value = plain.json().await.expect("json");
    assert!(plain.to_string().len() > 1024, "a large answer");

    for (i, encoding) in ["gzip", "br;q=1, gzip;q=0.5", "*"].into_iter().enumerate() {
        let response = post(encoding).await.expect("gzip");
        assert_eq!(response.status(), 200);
        let headers = response.headers().clone();
        assert_eq!(headers["content-encoding"], "gzip", "{encoding}");
        assert_eq!(headers["x-cache"], "HIT");
        assert!(headers["vary"].to_str().expect("vary").contains("accept-encoding"));
        let etag = headers["etag"].to_str().expect("etag");
        assert!(etag.starts_with("W/\""), "a gzip body's tag is weak: {etag}");
        let body = response.bytes().await.expect("body");
        let answer = gunzip(&body);
        assert_eq!(answer["data"], plain["data"], "{encoding}");
        assert_eq!(answer["metadata"]["cache_tier"], "l1");
        assert_eq!(answer["metadata"]["from_cache"], true);
        assert_eq!(answer["metadata"]["total_rows"], plain["metadata"]["total_rows"]);
        if i == 0 {
            assert!(
                body.len() * 3 < plain.to_string().len(),
                "compressed: {} bytes",
                body.len()
            );
        }
    }
    // Refused or not offered: plain JSON.
    for encoding in ["gzip;q=0", "br", "identity"] {
        let response = post(encoding).await.expect("plain");
        assert!(response.headers().get("content-encoding").is_none(), "{encoding}");
        let answer: serde_json::Value = response.json().await.expect("json");
        assert_eq!(answer["data"], plain["data"]);
    }
    // The weak tag still earns a 304 on GET.
    let get = |etag: Option<String>| {
        let mut request = app
            .client
            .get(app.url("/analytics/query"))
            .query(&[("q", query.to_string())])
            .header("accept-encoding", "gzip");
        if let Some(etag) = etag {
            request = request.header("if-none-match", etag);
        }
        request.send()
    };
    let first = get(None).await.expect("get");
    let etag = first.headers()["etag"].to_str().expect("etag").to_owned();
    assert_eq!(get(Some(etag)).await.expect("conditional").status(), 304);
}
