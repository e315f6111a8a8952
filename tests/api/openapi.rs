//! `/openapi.json` as code generators and Swagger UI use it: unique
//! operationIds, resolvable references, the loaded model's names as enums,
//! documented errors and security, and examples that really run. The
//! `#[ignore]`d tests check it with real tools (openapi-spec-validator,
//! schemathesis, Swagger UI in Chromium); `.ci/run` installs them and runs
//! them with `--ignored`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

use crate::helpers::{spawn_app, spawn_app_with, SendJson, TestApp, ADMIN_TOKEN};
use crate::tenancy::{two_tenants, KEY_A};

const METHODS: &[&str] = &["get", "put", "post", "delete", "patch", "head", "options", "trace"];

async fn spec(app: &TestApp) -> Value {
    app.client.get(app.url("/openapi.json")).json_body().await
}

/// Every (method, path, operation) of the document.
fn operations(spec: &Value) -> Vec<(String, String, &Value)> {
    let mut found = Vec::new();
    for (path, item) in spec["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("path item") {
            if METHODS.contains(&method.as_str()) {
                found.push((method.clone(), path.clone(), operation));
            }
        }
    }
    found
}

/// Every `$ref` anywhere in `value`.
fn refs<'a>(value: &'a Value, found: &mut Vec<&'a str>) {
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                match (key.as_str(), child) {
                    ("$ref", Value::String(target)) => found.push(target),
                    _ => refs(child, found),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|child| refs(child, found)),
        _ => {}
    }
}

fn strings(value: &Value) -> BTreeSet<String> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("an array: {value}"))
        .iter()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect()
}

/// A schema's example: OpenAPI's `example` or JSON Schema's `examples[0]`.
fn example(schema: &Value) -> Option<&Value> {
    schema.get("example").or_else(|| schema["examples"].get(0))
}

#[tokio::test]
async fn openapi_operation_ids_are_unique_and_aliases_deprecated() {
    let app = spawn_app().await;
    let spec = spec(&app).await;
    let mut seen = BTreeSet::new();
    for (method, path, operation) in operations(&spec) {
        let id = operation["operationId"]
            .as_str()
            .unwrap_or_else(|| panic!("{method} {path} has an operationId"));
        assert!(seen.insert(id.to_owned()), "operationId `{id}` twice ({method} {path})");
        let alias = path.starts_with("/api/v1/");
        assert_eq!(
            operation["deprecated"] == json!(true),
            alias,
            "{method} {path}: deprecated only for aliases"
        );
        if alias {
            assert!(id.ends_with("_v1"), "{method} {path}: {id}");
            let description = operation["description"].as_str().unwrap_or_default();
            assert!(description.contains("runbooks"), "{method} {path}: {description}");
        }
    }
    assert!(seen.contains("run_query") && seen.contains("run_query_v1"), "{seen:?}");
}

#[tokio::test]
async fn openapi_references_all_resolve() {
    let app = spawn_app().await;
    let spec = spec(&app).await;
    let mut found = Vec::new();
    refs(&spec, &mut found);
    assert!(found.len() > 20, "the document uses references: {found:?}");
    for target in found {
        let pointer = target
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("`{target}` is a local reference"));
        assert!(spec.pointer(pointer).is_some(), "`{target}` does not resolve");
    }
    // Every security requirement names a declared scheme.
    let schemes = spec["components"]["securitySchemes"]
        .as_object()
        .expect("security schemes");
    for (method, path, operation) in operations(&spec) {
        for requirement in operation["security"].as_array().into_iter().flatten() {
            for scheme in requirement.as_object().expect("requirement").keys() {
                assert!(schemes.contains_key(scheme), "{method} {path}: unknown scheme {scheme}");
            }
        }
    }
}

#[tokio::test]
async fn openapi_enums_follow_the_loaded_model() {
    let app = spawn_app().await;
    let spec = spec(&app).await;
    let request = &spec["components"]["schemas"]["QueryRequest"]["properties"];
    let metrics = strings(&request["metrics"]["items"]["enum"]);
    for name in [
        "revenue",
        "sales_count",
        "average_ticket",
        "discount_total",
        "cancelled_count",
        "cancellation_rate",
        "avg_delivery_seconds",
        "unique_customers",
        "faturamento",
        "qtd_vendas",
        "ticket_medio",
    ] {
        assert!(metrics.contains(name), "metrics enum lacks {name}: {metrics:?}");
    }
    let dimensions = strings(&request["dimensions"]["items"]["enum"]);
    for name in [
        "channel",
        "channel_id",
        "channel_type",
        "store",
        "store_id",
        "city",
        "state",
        "status",
        "day",
        "week",
        "month",
        "hour",
        "weekday",
    ] {
        assert!(
            dimensions.contains(name),
            "dimensions enum lacks {name}: {dimensions:?}"
        );
    }
    assert!(!dimensions.contains("revenue") && !metrics.contains("channel"));
    assert!(strings(&request["dataset"]["enum"]).contains("sales"));
    assert_eq!(
        strings(&request["filters"]["propertyNames"]["enum"]),
        dimensions,
        "filters are keyed by dimension"
    );
    // The names the model serves are the names /analytics/meta lists.
    let meta: Value = app.client.get(app.url("/analytics/meta")).json_body().await;
    for dataset in meta["datasets"].as_array().expect("datasets") {
        for metric in dataset["metrics"].as_array().expect("metrics") {
            assert!(metrics.contains(metric["name"].as_str().expect("name")), "{metric}");
        }
        for dimension in dataset["dimensions"].as_array().expect("dimensions") {
            assert!(
                dimensions.contains(dimension["name"].as_str().expect("name")),
                "{dimension}"
            );
        }
    }
    // `direction` documents its two values though the field stays a string.
    let direction = &spec["components"]["schemas"]["Direction"];
    assert_eq!(strings(&direction["enum"]), ["asc", "desc"].map(String::from).into());
}

#[tokio::test]
async fn openapi_documents_errors_and_security_of_the_query_routes() {
    let app = spawn_app().await;
    let spec = spec(&app).await;
    let schemes = &spec["components"]["securitySchemes"];
    for scheme in ["admin_token", "tenant_key"] {
        assert_eq!(schemes[scheme]["scheme"], "bearer", "{scheme}");
        assert!(schemes[scheme]["description"].is_string(), "{scheme}");
    }
    let error_body = json!({"$ref": "#/components/schemas/ErrorBody"});
    let mut checked = 0;
    for (method, path, operation) in operations(&spec) {
        let responses = &operation["responses"];
        if path.ends_with("/analytics/query") {
            checked += 1;
            for status in ["401", "422", "429", "503", "504"] {
                assert_eq!(
                    responses[status]["content"]["application/json"]["schema"], error_body,
                    "{method} {path} documents {status}"
                );
            }
            let security = operation["security"].as_array().expect("security");
            for alternative in [json!({"tenant_key": []}), json!({"admin_token": []}), json!({})] {
                assert!(
                    security.contains(&alternative),
                    "{method} {path}: {alternative} in {security:?}"
                );
            }
        }
        if path.contains("/cache/") {
            let security = operation["security"].as_array().expect("security");
            assert!(!security.contains(&json!({})), "{method} {path} needs a credential");
            assert!(security.contains(&json!({"admin_token": []})), "{method} {path}");
        }
        // Every operation but health, metrics and the status page has errors
        // to document (a new route needs its row in `http::openapi`).
        let quiet = path.starts_with("/health") || path == "/metrics" || path == "/status";
        let errors = responses
            .as_object()
            .expect("responses")
            .keys()
            .filter(|s| s.starts_with('4'));
        assert!(quiet || errors.count() > 0, "{method} {path} documents no error");
        // Every documented error has the contract's body (health answers its own 503).
        for (status, response) in responses.as_object().expect("responses") {
            if (status.starts_with('4') || status.starts_with('5')) && !path.starts_with("/health") {
                assert_eq!(
                    response["content"]["application/json"]["schema"], error_body,
                    "{method} {path} {status}"
                );
            }
        }
    }
    assert_eq!(checked, 4, "POST and GET, canonical and alias");

    // With `auth.required`, no query route is documented as anonymous.
    let strict = spawn_app_with(two_tenants).await;
    let spec = self::spec(&strict).await;
    for (method, path, operation) in operations(&spec) {
        let security = operation["security"].as_array().into_iter().flatten();
        for requirement in security {
            assert_ne!(requirement, &json!({}), "{method} {path}");
        }
    }
}

#[tokio::test]
async fn openapi_examples_run_against_the_demo_model() {
    let app = spawn_app().await;
    let spec = spec(&app).await;
    let schema = &spec["components"]["schemas"]["QueryRequest"];
    let request = example(schema)
        .expect("QueryRequest has a whole-request example")
        .clone();
    let response = app.query(request.clone()).await;
    let status = response.status();
    let body: Value = response.json().await.expect("json");
    assert_eq!(status, 200, "the example {request} answers: {body}");
    assert!(body["data"].is_array());

    // Each property's own example is valid too (next to the example's metrics).
    let properties = schema["properties"].as_object().expect("properties");
    for (name, property) in properties {
        let value = example(property)
            .unwrap_or_else(|| panic!("QueryRequest.{name} has an example"))
            .clone();
        let mut single = Map::new();
        single.insert("metrics".into(), request["metrics"].clone());
        single.insert("dimensions".into(), request["dimensions"].clone());
        single.insert(name.clone(), value);
        let single = Value::Object(single);
        let response = app.query(single.clone()).await;
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        assert_eq!(status, 200, "the example of `{name}`: {single} answers {body}");
    }

    // The other request bodies' examples are valid JSON of their schemas' shape.
    let order_by = &spec["components"]["schemas"]["OrderBy"]["properties"];
    assert_eq!(example(&order_by["direction"]), Some(&json!("desc")));
    let limit = &properties["limit"];
    assert_eq!(limit["minimum"], json!(1), "{limit}");
    assert_eq!(limit["maximum"], json!(10_000), "the demo model's max_limit: {limit}");
}

// ---- real tools -----------------------------------------------------------

/// A tool from the environment variable `var` (a relative path is taken
/// from the crate's directory), or `default` on `PATH`.
fn tool(var: &str, default: &str) -> String {
    match std::env::var(var) {
        Ok(path) if path.contains('/') => workspace().join(path).to_string_lossy().into_owned(),
        Ok(name) => name,
        Err(_) => default.to_owned(),
    }
}

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `program args` (at most `limit`), returning (success, stdout + stderr).
async fn run(program: &str, args: &[&str], cwd: &Path, limit: Duration) -> (bool, String) {
    let started = Instant::now();
    let mut command = tokio::process::Command::new(program);
    command.args(args).current_dir(cwd).kill_on_drop(true);
    let output = tokio::time::timeout(limit, command.output())
        .await
        .unwrap_or_else(|_| panic!("`{program}` finished within {limit:?}"))
        .unwrap_or_else(|e| panic!("`{program}` runs ({e}); see .ci/run for how it is installed"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    eprintln!("{program}: {:.1} s", started.elapsed().as_secs_f64());
    (output.status.success(), text)
}

#[tokio::test]
#[ignore = "needs openapi-spec-validator and schemathesis; .ci/run installs them and runs this test"]
async fn openapi_passes_a_validator_and_schemathesis() {
    let app = spawn_app().await;
    let text = app
        .client
        .get(app.url("/openapi.json"))
        .send()
        .await
        .expect("spec")
        .text()
        .await
        .expect("text");
    let dir = std::env::temp_dir().join(format!("openapi-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("openapi.json");
    std::fs::write(&file, &text).expect("write spec");

    let validator = tool("OPENAPI_SPEC_VALIDATOR", "openapi-spec-validator");
    let (ok, output) = run(
        &validator,
        &[file.to_str().expect("path")],
        &dir,
        Duration::from_secs(60),
    )
    .await;
    assert!(ok, "openapi-spec-validator refuses the document:\n{output}");

    let schemathesis = tool("SCHEMATHESIS", "schemathesis");
    // Cases per operation: 15 keeps CI's run near 15 s; raise it for a deeper local search.
    let examples = std::env::var("SCHEMATHESIS_MAX_EXAMPLES").unwrap_or_else(|_| "15".into());
    let spec_url = app.url("/openapi.json");
    let auth = format!("Authorization: Bearer {ADMIN_TOKEN}");
    let (ok, output) = run(
        &schemathesis,
        &[
            "run",
            &spec_url,
            "--header",
            &auth,
            "--checks",
            "not_a_server_error,response_schema_conformance,status_code_conformance,content_type_conformance",
            "--max-examples",
            &examples,
            "--seed",
            "1",
            // One worker: hypothesis' lambda introspection is not thread-safe on
            // CPython 3.11 ("AST constructor recursion depth mismatch").
            "--workers",
            "1",
            "--exclude-deprecated",
            "--generation-database",
            "none",
            "--no-color",
            "--request-timeout",
            "30",
        ],
        &dir,
        Duration::from_secs(300),
    )
    .await;
    let _ = std::fs::remove_dir_all(&dir);
    assert!(ok, "schemathesis found problems:\n{output}");
    eprintln!("{output}");
}

#[tokio::test]
#[ignore = "needs Chromium and `npm ci` in tests/browser; .ci/run does both and runs this test"]
async fn swagger_ui_try_it_out_answers_200_in_a_real_browser() {
    // Keys are required here, so the 200 also proves Swagger UI sent the key.
    let app = spawn_app_with(two_tenants).await;
    let browser = workspace().join("tests/browser");
    let node = tool("NODE", "node");
    let (ok, output) = run(
        &node,
        &["try_it_out.mjs", &app.address, KEY_A],
        &browser,
        Duration::from_secs(120),
    )
    .await;
    assert!(ok, "Swagger UI's Try it out failed:\n{output}");
    assert!(output.contains("status 200"), "{output}");
}
