//! Export and paging: CSV answers (`Accept: text/csv`, `?format=csv`),
//! `"total": true`, metrics in the order requested, and period over period
//! (`compare_date_range`).

use serde_json::{json, Value};

use crate::helpers::{num, spawn_app, TestApp};

const MARCH: [&str; 2] = ["2024-03-01", "2024-03-31"];
const APRIL: [&str; 2] = ["2024-04-01", "2024-04-30"];

fn by_channel(range: [&str; 2]) -> Value {
    json!({"metrics": ["sales_count", "revenue"], "dimensions": ["channel"],
           "date_range": {"start_date": range[0], "end_date": range[1]}})
}

/// POSTs `body` with `Accept: accept` (and `?format=` when given); returns
/// status, headers and the body text.
async fn post(
    app: &TestApp,
    body: &Value,
    accept: &str,
    format: Option<&str>,
) -> (u16, reqwest::header::HeaderMap, String) {
    let mut request = app
        .client
        .post(app.url("/analytics/query"))
        .json(body)
        .header("accept", accept);
    if let Some(format) = format {
        request = request.query(&[("format", format)]);
    }
    let response = request.send().await.expect("request");
    let (status, headers) = (response.status().as_u16(), response.headers().clone());
    (status, headers, response.text().await.expect("body"))
}

/// Parses CSV text (the test's own reader, the `csv` crate).
fn records(text: &str) -> Vec<Vec<String>> {
    csv::ReaderBuilder::new()
        .has_headers(false)
        .from_reader(text.as_bytes())
        .records()
        .map(|r| r.expect("valid CSV").iter().map(str::to_owned).collect())
        .collect()
}

#[tokio::test]
async fn csv_has_a_header_row_and_the_json_answers_rows_in_the_requested_column_order() {
    let app = spawn_app().await;
    let json_body = app.query_ok(by_channel(MARCH)).await;
    let rows = json_body["data"].as_array().expect("rows");
    assert!(rows.len() >= 3, "{json_body}");

    for (accept, format) in [
        ("text/csv", None),
        ("*/*", Some("csv")),
        ("text/csv;q=0.9, */*;q=0.1", None),
    ] {
        let (status, headers, text) = post(&app, &by_channel(MARCH), accept, format).await;
        assert_eq!(status, 200, "{text}");
        assert!(headers["content-type"].to_str().expect("type").starts_with("text/csv"));
        assert_eq!(headers["x-cache"], "HIT", "the CSV comes from the JSON's entry");
        assert!(headers["content-disposition"]
            .to_str()
            .expect("disposition")
            .contains("sales.csv"));
        let records = records(&text);
        assert_eq!(records[0], ["channel", "sales_count", "revenue"]);
        assert_eq!(records.len(), rows.len() + 1);
        for (record, row) in records[1..].iter().zip(rows) {
            assert_eq!(record[0], row["channel"].as_str().expect("channel"));
            assert_eq!(record[1].parse::<f64>().expect("count"), num(&row["sales_count"]));
            assert_eq!(record[2].parse::<f64>().expect("revenue"), num(&row["revenue"]));
        }
    }

    // Each representation has its own validator.
    let (_, json_headers, _) = post(&app, &by_channel(MARCH), "application/json", None).await;
    let (_, csv_headers, _) = post(&app, &by_channel(MARCH), "text/csv", None).await;
    assert_ne!(json_headers["etag"], csv_headers["etag"]);
    assert!(json_headers["vary"].to_str().expect("vary").contains("accept"));

    // Metrics in the order requested, in the JSON text too.
    let (_, _, text) = post(&app, &by_channel(MARCH), "application/json", None).await;
    let (count_at, revenue_at) = (
        text.find("\"sales_count\"").expect("count"),
        text.find("\"revenue\"").expect("revenue"),
    );
    assert!(count_at < revenue_at, "{text}");
    let mut reversed = by_channel(MARCH);
    reversed["metrics"] = json!(["revenue", "sales_count"]);
    let (_, _, text) = post(&app, &reversed, "text/csv", None).await;
    assert_eq!(records(&text)[0], ["channel", "revenue", "sales_count"]);

    // Unknown formats are refused, errors stay JSON.
    let (status, _, text) = post(&app, &by_channel(MARCH), "*/*", Some("xml")).await;
    assert_eq!(status, 400, "{text}");
    let error: Value = serde_json::from_str(&text).expect("json error");
    assert_eq!(error["error"]["field"], "format");
    let (status, headers, _) = post(&app, &json!({"metrics": ["bogus"]}), "text/csv", None).await;
    assert_eq!(status, 422);
    assert!(headers["content-type"]
        .to_str()
        .expect("type")
        .starts_with("application/json"));
}

#[tokio::test]
async fn a_csv_of_many_chunks_arrives_whole() {
    let app = spawn_app().await;
    // Every sale-day by store: more rows than one chunk of the stream (512).
    let query = json!({"metrics": ["revenue"], "dimensions": ["day", "store"], "limit": 10000,
                       "date_range": {"start_date": "2024-01-01", "end_date": "2024-12-31"}});
    let expected = app.query_ok(query.clone()).await["data"]
        .as_array()
        .expect("rows")
        .len();
    assert!(expected > 512, "{expected} rows");
    let (status, _, text) = post(&app, &query, "text/csv", None).await;
    assert_eq!(status, 200);
    let records = records(&text);
    assert_eq!(records.len(), expected + 1);
    assert!(records.iter().all(|r| r.len() == 3));
}

#[tokio::test]
async fn total_counts_the_rows_before_the_page() {
    let app = spawn_app().await;
    let all = json!({"metrics": ["revenue"], "dimensions": ["store"],
                     "date_range": {"start_date": MARCH[0], "end_date": MARCH[1]}});
    let everything = app.query_ok(all.clone()).await["data"].as_array().expect("rows").len() as u64;
    assert!(everything > 4);
    assert!(
        app.query_ok(all.clone()).await["metadata"].get("total").is_none(),
        "no total unless asked"
    );

    let mut page = all.clone();
    page["limit"] = json!(3);
    page["offset"] = json!(2);
    page["total"] = json!(true);
    for tier in ["database", "cache"] {
        let response = app.query(page.clone()).await;
        assert_eq!(
            response.headers()["x-total-count"],
            everything.to_string().as_str(),
            "{tier}"
        );
        let body: Value = response.json().await.expect("json");
        assert_eq!(body["metadata"]["total"], everything, "{tier}: {body}");
        assert_eq!(
            body["metadata"]["total_rows"], 3,
            "{tier}: total_rows is the rows returned"
        );
        assert_eq!(body["data"].as_array().expect("rows").len(), 3);
    }

    // Past the end: no rows, and still the count.
    page["offset"] = json!(everything + 10);
    let body = app.query_ok(page).await;
    assert_eq!(body["data"], json!([]));
    assert_eq!(body["metadata"]["total"], everything);
}

#[tokio::test]
async fn compare_date_range_answers_one_result_per_range_each_its_own_entry() {
    let app = spawn_app().await;
    let march = app.query_ok(by_channel(MARCH)).await;
    let compare = json!({"metrics": ["sales_count", "revenue"], "dimensions": ["channel"],
                         "compare_date_range": [MARCH, APRIL]});
    let body = app.query_ok(compare.clone()).await;
    let results = body["results"].as_array().expect("results");
    assert_eq!(results.len(), 2, "{body}");
    assert_eq!(
        results[0]["date_range"],
        json!({"start_date": MARCH[0], "end_date": MARCH[1]})
    );
    assert_eq!(
        results[1]["date_range"],
        json!({"start_date": APRIL[0], "end_date": APRIL[1]})
    );
    // March was cached by the plain query: the same entry answers it.
    assert_eq!(results[0]["metadata"]["cache_key"], march["metadata"]["cache_key"]);
    assert_eq!(results[0]["metadata"]["from_cache"], true);
    assert_eq!(results[0]["data"], march["data"]);
    assert_eq!(results[1]["metadata"]["from_cache"], false);
    let april = app.query_ok(by_channel(APRIL)).await;
    assert_eq!(
        april["metadata"]["from_cache"], true,
        "the comparison stored April's entry"
    );
    assert_eq!(results[1]["data"], april["data"]);

    // GET: one tag for the whole comparison, 304 while nothing changed.
    let q = compare.to_string();
    let first = app
        .client
        .get(app.url("/analytics/query"))
        .query(&[("q", &q)])
        .send()
        .await
        .expect("get");
    assert_eq!(first.headers()["x-cache"], "HIT");
    let etag = first.headers()["etag"].clone();
    let again = app
        .client
        .get(app.url("/analytics/query"))
        .query(&[("q", &q)])
        .header("if-none-match", etag)
        .send()
        .await
        .expect("get");
    assert_eq!(again.status(), 304);

    // CSV: the range leads each row.
    let (status, _, text) = post(&app, &compare, "text/csv", None).await;
    assert_eq!(status, 200);
    let records = records(&text);
    assert_eq!(records[0], ["date_range", "channel", "sales_count", "revenue"]);
    let march_rows = march["data"].as_array().expect("rows").len();
    assert_eq!(
        records.len(),
        1 + march_rows + april["data"].as_array().expect("rows").len()
    );
    assert_eq!(records[1][0], "2024-03-01/2024-03-31");
    assert_eq!(records.last().expect("row")[0], "2024-04-01/2024-04-30");
}

#[tokio::test]
async fn bad_comparisons_are_refused_naming_the_field() {
    let app = spawn_app().await;
    let cases = [
        (
            json!([["2024-03-01", "2024-02-30"]]),
            None,
            422,
            "compare_date_range[0][1]",
        ),
        (
            json!([["2024-03-01", "2024-03-31"], ["2024-05-01", "2024-04-01"]]),
            None,
            422,
            "compare_date_range[1]",
        ),
        (json!([]), None, 422, "compare_date_range"),
        (
            json!([MARCH]),
            Some(json!({"start_date": MARCH[0], "end_date": MARCH[1]})),
            422,
            "compare_date_range",
        ),
    ];
    for (ranges, date_range, status, field) in cases {
        let mut body = json!({"metrics": ["revenue"], "compare_date_range": ranges});
        if let Some(date_range) = date_range {
            body["date_range"] = date_range;
        }
        let response = app.query(body.clone()).await;
        assert_eq!(response.status(), status, "{body}");
        let error: Value = response.json().await.expect("json");
        assert_eq!(error["error"]["field"], field, "{error}");
    }
    // Not a pair: the request's shape is wrong.
    let response = app
        .query(json!({"metrics": ["revenue"], "compare_date_range": [["2024-03-01", "2024-03-02", "2024-03-03"]]}))
        .await;
    assert_eq!(response.status(), 400);
    // The dry run plans one query: it says so instead of ignoring the ranges.
    let plan = app
        .admin(app.client.post(app.url("/analytics/sql")))
        .json(&json!({"metrics": ["revenue"], "compare_date_range": [MARCH]}))
        .send()
        .await
        .expect("plan");
    assert_eq!(plan.status(), 422);
}
