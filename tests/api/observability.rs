//! `/metrics`, OpenAPI, `/docs` and the status data.

use std::collections::BTreeSet;

use serde_json::{json, Value};

use crate::helpers::{spawn_app, SendJson};

fn normalize(path: &str) -> String {
    path.replace("{*", "{")
}

#[tokio::test]
async fn openapi_lists_every_route_of_the_router_and_nothing_else() {
    let app = spawn_app().await;
    let spec: Value = app.client.get(app.url("/openapi.json")).json_body().await;
    assert!(
        spec["openapi"].as_str().is_some_and(|v| v.starts_with("3.1")),
        "OpenAPI 3.1: {}",
        spec["openapi"]
    );
    let mut documented = BTreeSet::new();
    for (path, item) in spec["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("path item").keys() {
            if ["get", "post", "put", "delete", "patch"].contains(&method.as_str()) {
                documented.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    let routed: BTreeSet<(String, String)> = analytics_api::http::routes()
        .iter()
        .map(|r| (r.method.to_string(), normalize(&r.path)))
        .collect();
    assert_eq!(documented, routed, "spec and router disagree");
    // And each documented route really answers (not 404/405).
    for (method, path) in &routed {
        let url = app.url(&path.replace("{key}", "analytics:query:x"));
        let response = app
            .client
            .request(method.parse().expect("method"), url)
            .send()
            .await
            .expect("request");
        assert!(
            ![404, 405].contains(&response.status().as_u16()),
            "{method} {path}: {}",
            response.status()
        );
    }
}

#[tokio::test]
async fn openapi_schemas_carry_the_contract_fields() {
    let app = spawn_app().await;
    let spec: Value = app.client.get(app.url("/openapi.json")).json_body().await;
    let schemas = &spec["components"]["schemas"];
    let fields = |name: &str| -> BTreeSet<String> {
        schemas[name]["properties"]
            .as_object()
            .unwrap_or_else(|| panic!("schema {name}"))
            .keys()
            .cloned()
            .collect()
    };
    let expect = |name: &str, wanted: &[&str]| {
        let have = fields(name);
        for field in wanted {
            assert!(have.contains(*field), "{name} lacks {field}: {have:?}");
        }
    };
    expect(
        "QueryRequest",
        &[
            "dataset",
            "metrics",
            "dimensions",
            "filters",
            "date_range",
            "order_by",
            "limit",
            "offset",
        ],
    );
    expect("DateRange", &["start_date", "end_date"]);
    expect("QueryResponse", &["data", "metadata"]);
    expect(
        "QueryMetadata",
        &[
            "total_rows",
            "query_time_ms",
            "cached",
            "from_cache",
            "cache_key",
            "cache_tier",
            "ttl_seconds",
        ],
    );
    expect("ErrorBody", &["error"]);
    expect("ErrorDetail", &["code", "message", "field"]);
    expect(
        "CacheStatsResponse",
        &[
            "status",
            "memory_used_mb",
            "total_keys",
            "hit_rate",
            "connected_clients",
            "uptime_seconds",
            "app",
        ],
    );
    expect(
        "StatsSnapshot",
        &[
            "hits",
            "misses",
            "sets",
            "deletes",
            "errors",
            "total_requests",
            "hit_rate",
            "average_hit_ms",
            "average_set_ms",
        ],
    );
    expect("ClearResponse", &["deleted", "pattern", "message"]);
    expect("WarmResponse", &["warmed", "failed"]);
    expect("HealthResponse", &["status", "database", "cache", "version"]);
}

#[tokio::test]
async fn swagger_ui_is_served_from_the_binary() {
    let app = spawn_app().await;
    let page = app.client.get(app.url("/docs/")).send().await.expect("docs");
    assert_eq!(page.status(), 200);
    let html = page.text().await.expect("html");
    assert!(html.to_lowercase().contains("swagger"), "{html}");
    let bundle = app
        .client
        .get(app.url("/docs/swagger-ui-bundle.js"))
        .send()
        .await
        .expect("bundle");
    assert_eq!(bundle.status(), 200, "vendored assets, no CDN");
    assert!(bundle.text().await.expect("js").len() > 100_000);
}

/// Sums the samples of `name` whose labels contain every `label`.
fn sample_sum(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter(|line| line.starts_with(name) && line[name.len()..].starts_with(['{', ' ']))
        .filter(|line| labels.iter().all(|label| line.contains(label)))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn metrics_move_under_a_short_load() {
    let app = spawn_app().await;
    let scrape = || async { app.metrics_text().await };
    let before = scrape().await;
    let query = json!({"metrics": ["revenue", "sales_count"], "dimensions": ["month"]});
    for _ in 0..20 {
        app.query_ok(query.clone()).await;
    }
    let after = scrape().await;
    let delta = |name: &str, labels: &[&str]| sample_sum(&after, name, labels) - sample_sum(&before, name, labels);
    assert!(
        delta("analytics_cache_requests_total", &["outcome=\"l1\""]) >= 19.0,
        "{after}"
    );
    assert!(delta("analytics_cache_requests_total", &["outcome=\"miss\""]) >= 1.0);
    assert!(delta("analytics_cache_sets_total", &[]) >= 1.0);
    assert!(
        delta(
            "analytics_http_request_duration_seconds_count",
            &["route=\"/analytics/query\"", "status=\"200\""]
        ) >= 20.0,
        "{after}"
    );
    assert!(delta("analytics_db_query_duration_seconds_count", &["status=\"ok\""]) >= 1.0);
    assert!(
        after.contains("analytics_http_request_duration_seconds_bucket"),
        "explicit buckets"
    );
    assert!(after.contains("analytics_db_pool_connections{state=\"idle\"}"));
    assert!(after.contains("analytics_result_rows"));
    assert!(!after.contains(&app.prefix), "no cache keys in labels");
    // Every series says what it is, and counters are there before they fire.
    for line in after.lines().filter(|l| l.starts_with("# TYPE ")) {
        let name = line.split(' ').nth(2).expect("name");
        assert!(after.contains(&format!("# HELP {name} ")), "no HELP for {name}");
    }
    for counter in [
        "analytics_redis_breaker_opened_total",
        "analytics_cache_corrupt_entries_total",
        "analytics_http_connections_rejected_total",
    ] {
        assert!(
            after.contains(&format!("\n{counter} ")),
            "{counter} exported before it fires"
        );
    }
}

#[tokio::test]
async fn status_json_needs_the_admin_token_and_reports_traffic() {
    let app = spawn_app().await;
    assert_eq!(
        app.client
            .get(app.url("/status.json"))
            .send()
            .await
            .expect("status")
            .status(),
        401
    );
    let page = app.client.get(app.url("/status")).send().await.expect("page");
    assert_eq!(page.status(), 200);
    assert!(page.text().await.expect("html").contains("status.json"));
    let query = json!({"metrics": ["revenue"], "dimensions": ["channel"]});
    for _ in 0..5 {
        app.query_ok(query.clone()).await;
    }
    let status: Value = app.admin(app.client.get(app.url("/status.json"))).json_body().await;
    let requests: u64 = status["series"]
        .as_array()
        .expect("series")
        .iter()
        .map(|p| p["requests"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(requests, 5);
    assert_eq!(status["hit_rate"], json!(0.8));
    assert!(status["latency_ms"]["l1"]["p50"].is_number());
    assert_eq!(status["hot_keys"][0]["hits"], json!(5));
    assert_eq!(status["hot_keys"][0]["summary"], json!("revenue by channel"));
    assert_eq!(status["database"], json!("up"));
    assert_eq!(status["breaker"], json!("closed"));
    assert_eq!(status["freshness"]["listener"], json!("up"));
    assert!(
        status["freshness"]["invalidations"].as_u64() >= Some(1),
        "the start-up gap counts"
    );
}

#[tokio::test]
async fn request_ids_are_propagated() {
    let app = spawn_app().await;
    let response = app
        .client
        .get(app.url("/health/live"))
        .header("x-request-id", "abc-123")
        .send()
        .await
        .expect("live");
    assert_eq!(response.headers()["x-request-id"], "abc-123");
    // Without one, each request gets its own.
    let mut ids = std::collections::HashSet::new();
    for _ in 0..5 {
        let response = app.client.get(app.url("/health/live")).send().await.expect("live");
        let id = response.headers()["x-request-id"].to_str().expect("id").to_owned();
        assert!(id.len() > 16, "{id}");
        assert!(ids.insert(id), "request ids repeat");
    }
}

#[tokio::test]
async fn request_durations_are_labelled_with_bounded_values() {
    let app = spawn_app().await;
    let odd = reqwest::Method::from_bytes(b"BREW").expect("method");
    let response = app
        .client
        .request(odd, app.url("/health/live"))
        .send()
        .await
        .expect("brew");
    assert_eq!(response.status(), 405);
    app.client.get(app.url("/no/such/route")).send().await.expect("404");
    let text = app.metrics_text().await;
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("analytics_http_request_duration_seconds_count"))
        .collect();
    assert!(
        lines.iter().any(|l| l.contains("method=\"other\"")
            && l.contains("route=\"/health/live\"")
            && l.contains("status=\"405\"")),
        "{lines:#?}"
    );
    assert!(lines.iter().all(|l| !l.contains("BREW")), "{lines:#?}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("route=\"unmatched\"") && l.contains("status=\"404\"")),
        "{lines:#?}"
    );
}

/// Metric names emitted anywhere in `src/` (`counter!`, `gauge!`, `histogram!`).
fn emitted_metric_names() -> BTreeSet<String> {
    fn walk(dir: &std::path::Path, names: &mut BTreeSet<String>) {
        for entry in std::fs::read_dir(dir).expect("src dir").flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, names);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).expect("source");
                for macro_name in ["counter!(", "gauge!(", "histogram!("] {
                    for piece in text.split(macro_name).skip(1) {
                        let piece = piece.trim_start();
                        if let Some(name) = piece.strip_prefix('"').and_then(|p| p.split('"').next()) {
                            names.insert(name.to_owned());
                        }
                    }
                }
            }
        }
    }
    let mut names = BTreeSet::new();
    walk(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &mut names,
    );
    names
}

/// Dashboards and alerts that name a metric the server never emits show
/// nothing and never fire: keep `deploy/` in step with the code.
#[test]
fn deploy_files_only_use_metrics_the_server_emits() {
    let emitted = emitted_metric_names();
    assert!(emitted.contains("analytics_cache_requests_total"), "{emitted:?}");
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy");
    for file in ["alerts.yml", "grafana-dashboard.json"] {
        let text = std::fs::read_to_string(root.join(file)).expect("deploy file");
        let mut used = BTreeSet::new();
        for (i, _) in text.match_indices("analytics_") {
            let name: String = text[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            let base = ["_bucket", "_count", "_sum"]
                .iter()
                .fold(name.clone(), |n, s| n.strip_suffix(s).map(str::to_owned).unwrap_or(n));
            used.insert(base);
        }
        assert!(!used.is_empty(), "{file} uses metrics");
        for name in used.iter().filter(|n| n.as_str() != "analytics_") {
            assert!(
                emitted.contains(name),
                "{file} uses {name}, which the server does not emit"
            );
        }
    }
}
