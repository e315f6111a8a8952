//! Unit tests of validation, canonical form and SQL generation (no database).

use serde_json::json;

use super::*;

fn demo_model() -> SemanticModel {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/model.toml")).expect("demo model");
    SemanticModel::from_toml(&text).expect("demo model is valid")
}

fn context() -> CompileContext {
    CompileContext {
        ttl: TtlPolicy {
            default_seconds: 300,
            recent_seconds: 60,
            historical_seconds: 86_400,
            historical_after_days: 30,
        },
        stale: StaleWindows::default(),
        today: NaiveDate::from_ymd_opt(2026, 11, 21).expect("date"),
    }
}

fn request(value: serde_json::Value) -> QueryRequest {
    QueryRequest::from_json(value.to_string().as_bytes()).expect("valid request shape")
}

fn compile(value: serde_json::Value) -> Result<CompiledQuery, QueryError> {
    demo_model().compile(&context(), &TenantScope::unscoped("default"), &request(value))
}

fn sql_of(compiled: &CompiledQuery) -> String {
    demo_model()
        .sql_for(compiled, None)
        .expect("dataset exists")
        .builder
        .sql()
        .to_owned()
}

#[test]
fn the_demo_model_declares_every_contract_field() {
    let model = demo_model();
    let sales = model.dataset(None).expect("default dataset");
    for metric in [
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
        assert!(sales.metric_name(metric).is_some(), "{metric}");
    }
    for dimension in [
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
        assert!(sales.dimension_name(dimension).is_some(), "{dimension}");
    }
}

#[test]
fn values_become_binds_never_sql_text() {
    let compiled = compile(json!({
        "metrics": ["revenue"],
        "dimensions": ["channel"],
        "filters": {"city": "Robert'); DROP TABLE sales;--", "store_id": {"in": [1, 2]}},
        "date_range": {"start_date": "2024-01-01", "end_date": "2024-01-31"},
    }))
    .expect("compiles");
    let sql = sql_of(&compiled);
    assert!(!sql.contains("Robert"), "{sql}");
    assert!(!sql.contains("2024-01-01"), "{sql}");
    assert!(
        sql.contains("$1") && sql.contains("$7"),
        "date range (4), two filters, limit, offset: {sql}"
    );
    assert!(sql.contains("= ANY($"), "{sql}");
}

#[test]
fn joins_are_added_only_when_needed() {
    let plain = compile(json!({"metrics": ["revenue"], "dimensions": ["store_id"]})).expect("compiles");
    assert!(!sql_of(&plain).contains("JOIN"), "{}", sql_of(&plain));
    let by_channel = compile(json!({"metrics": ["revenue"], "dimensions": ["channel"]})).expect("compiles");
    assert!(sql_of(&by_channel).contains("JOIN channels ch"));
    assert!(!sql_of(&by_channel).contains("JOIN stores"));
    let filtered = compile(json!({"metrics": ["revenue"], "filters": {"state": "SP"}})).expect("compiles");
    assert!(sql_of(&filtered).contains("JOIN stores st"));
}

#[test]
fn default_order_is_the_dimensions_and_explicit_order_comes_first() {
    let default = compile(json!({"metrics": ["revenue"], "dimensions": ["state", "city"]})).expect("compiles");
    assert!(sql_of(&default).contains("ORDER BY \"state\" ASC NULLS FIRST, \"city\" ASC NULLS FIRST"));
    let explicit = compile(json!({
        "metrics": ["revenue"], "dimensions": ["state", "city"],
        "order_by": [{"field": "faturamento", "direction": "desc"}, {"field": "city"}],
    }))
    .expect("compiles");
    assert!(sql_of(&explicit)
        .contains("ORDER BY \"revenue\" DESC NULLS LAST, \"city\" ASC NULLS FIRST, \"state\" ASC NULLS FIRST"));
}

#[test]
fn equivalent_requests_have_one_cache_key() {
    let base = compile(json!({"metrics": ["revenue", "sales_count"], "filters": {"channel_id": {"in": [2, 3]}}}))
        .expect("compiles")
        .hash;
    for variant in [
        json!({"metrics": ["faturamento", "qtd_vendas"], "filters": {"channel_id": {"in": [3, 2, 2]}}}),
        json!({"dataset": "sales", "metrics": ["revenue", "sales_count", "faturamento"], "filters": {"channel_id": [3, 2]}}),
        json!({"metrics": ["revenue", "sales_count"], "filters": {"channel_id": {"in": [2, 3]}}, "limit": 10000, "order_by": [], "total": false}),
    ] {
        assert_eq!(compile(variant.clone()).expect("compiles").hash, base, "{variant}");
    }
    assert_ne!(compile(json!({"metrics": ["revenue"]})).expect("compiles").hash, base);
    // Metrics come back in the order requested, so another order is another answer.
    let reordered = json!({"metrics": ["sales_count", "revenue"], "filters": {"channel_id": {"in": [2, 3]}}});
    assert_ne!(compile(reordered).expect("compiles").hash, base);
    let counted =
        json!({"metrics": ["revenue", "sales_count"], "filters": {"channel_id": {"in": [2, 3]}}, "total": true});
    assert_ne!(compile(counted).expect("compiles").hash, base);
    assert_eq!(base.len(), 32, "an MD5 in hex: {base}");
}

#[test]
fn a_model_change_changes_the_cache_key() {
    let query = request(json!({"metrics": ["revenue"]}));
    let tenant = TenantScope::unscoped("default");
    let before = demo_model()
        .compile(&context(), &tenant, &query)
        .expect("compiles")
        .hash;
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/model.toml")).expect("model");
    let changed = SemanticModel::from_toml(&text.replace(
        "decimals = 2\ndescription = \"Sum of total_amount",
        "decimals = 3\ndescription = \"Sum of total_amount",
    ))
    .expect("still valid");
    let after = changed.compile(&context(), &tenant, &query).expect("compiles").hash;
    assert_ne!(before, after);
}

#[test]
fn tenants_get_their_own_keys_and_row_filters() {
    let model = demo_model();
    let dataset = model.dataset(None).expect("sales");
    let filters = resolve_filters(
        dataset,
        &[("store_id".to_owned(), json!({"in": [1, 2]}))].into_iter().collect(),
    )
    .expect("row filter");
    let scoped = TenantScope {
        id: "acme".into(),
        row_filters: [("sales".to_owned(), filters)].into_iter().collect(),
    };
    let query = request(json!({"metrics": ["revenue"]}));
    let compiled = model.compile(&context(), &scoped, &query).expect("compiles");
    assert_eq!((compiled.tenant.as_str(), compiled.dataset.as_str()), ("acme", "sales"));
    assert!(
        sql_of(&compiled).contains("(s.store_id) = ANY($"),
        "{}",
        sql_of(&compiled)
    );
    let unscoped = model
        .compile(&context(), &TenantScope::unscoped("acme"), &query)
        .expect("compiles");
    assert_ne!(compiled.hash, unscoped.hash, "the row filter is part of the identity");
}

#[test]
fn validation_names_the_field_at_fault() {
    let cases = [
        (
            json!({"metrics": ["revenue", "bogus"]}),
            QueryErrorCode::UnknownMetric,
            "metrics[1]",
        ),
        (
            json!({"metrics": ["revenue"], "filters": {"hour": {"between": 1}}}),
            QueryErrorCode::UnknownOperator,
            "filters.hour.between",
        ),
        (
            json!({"metrics": ["revenue"], "filters": {"hour": 1.5}}),
            QueryErrorCode::InvalidFilterValue,
            "filters.hour",
        ),
        (
            json!({"metrics": ["revenue"], "filters": {"week": {"in": ["2024-13-01"]}}}),
            QueryErrorCode::InvalidFilterValue,
            "filters.week.in[0]",
        ),
    ];
    for (value, code, field) in cases {
        let error = compile(value.clone())
            .err()
            .unwrap_or_else(|| panic!("{value} should fail"));
        assert_eq!((error.code, error.field.as_deref()), (code, Some(field)), "{value}");
    }
}

#[test]
fn ttl_depends_on_the_range() {
    let old =
        compile(json!({"metrics": ["revenue"], "date_range": {"start_date": "2024-01-01", "end_date": "2024-01-31"}}));
    assert_eq!(old.expect("compiles").ttl_seconds, 86_400);
    let today =
        compile(json!({"metrics": ["revenue"], "date_range": {"start_date": "2026-11-01", "end_date": "2026-11-21"}}));
    assert_eq!(today.expect("compiles").ttl_seconds, 60);
}

#[test]
fn model_errors_name_dataset_and_field() {
    let base = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/model.toml")).expect("model");
    let cases = [
        (
            base.replace(
                "join = \"channels\"\n\n[datasets.sales.dimensions.channel_id]",
                "join = \"nope\"\n\n[datasets.sales.dimensions.channel_id]",
            ),
            "dimensions.channel.join",
        ),
        (
            base.replace("aliases = [\"qtd_vendas\"]", "aliases = [\"faturamento\"]"),
            "metrics.sales_count",
        ),
        (
            base.replace("sql = \"ch.name\"", "sql = \"ch.name; DROP TABLE x\""),
            "dimensions.channel.sql",
        ),
        (
            base.replace("timezone = \"America/Sao_Paulo\"", "timezone = \"UTC'; --\""),
            "timezone",
        ),
        // Tracked dimensions must be plain columns of the fact table.
        (
            base.replace(
                "track = [\"channel_id\", \"store_id\"]",
                "track = [\"channel_id\", \"city\"]",
            ),
            "track[1]",
        ),
        (
            base.replace("track = [\"channel_id\", \"store_id\"]", "track = [\"bogus\"]"),
            "track[0]",
        ),
    ];
    for (text, field) in cases {
        let error = SemanticModel::from_toml(&text).expect_err("invalid model").to_string();
        assert!(error.contains("dataset `sales`") && error.contains(field), "{error}");
    }
    let unknown_key = base.replace("alias = \"s\"", "alias = \"s\"\ncolour = \"red\"");
    assert!(SemanticModel::from_toml(&unknown_key)
        .expect_err("unknown key")
        .to_string()
        .contains("colour"));
}

fn with_rollup(rollup: &str) -> Result<SemanticModel, ModelError> {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/model.toml")).expect("demo model");
    SemanticModel::from_toml(&format!("{text}\n[datasets.sales.rollups.extra]\n{rollup}\n"))
}

#[test]
fn the_model_check_refuses_a_rollup_that_cannot_serve_what_it_lists() {
    for (rollup, field) in [
        (
            r#"granularity = "day"
               metrics = ["unique_customers"]"#,
            "rollups.extra.metrics[0]",
        ),
        (
            r#"granularity = "day"
               dimensions = ["store_id", "channel"]
               metrics = ["revenue"]"#,
            "rollups.extra.dimensions[1]",
        ),
        (
            r#"granularity = "day"
               dimensions = ["day"]
               metrics = ["revenue"]"#,
            "rollups.extra.dimensions[0]",
        ),
        (
            r#"granularity = "day"
               metrics = ["no_such_metric"]"#,
            "rollups.extra.metrics[0]",
        ),
        (
            r#"granularity = "day"
               metrics = []"#,
            "rollups.extra.metrics",
        ),
    ] {
        match with_rollup(rollup) {
            Err(ModelError::Invalid { field: got, .. }) => assert_eq!(got, field, "{rollup}"),
            other => panic!("{rollup}: {other:?}"),
        }
    }
    assert!(matches!(
        with_rollup(r#"granularity = "week""#),
        Err(ModelError::Parse { .. })
    ));
}

#[test]
fn typed_metrics_need_their_fields_and_exclude_free_sql() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/model.toml")).expect("demo model");
    for (metric, field) in [
        ("aggregate = \"sum\"", "metrics.extra.of"),
        ("aggregate = \"count\"\nsql = \"count(*)\"", "metrics.extra"),
        ("aggregate = \"ratio\"", "metrics.extra.where"),
    ] {
        match SemanticModel::from_toml(&format!("{text}\n[datasets.sales.metrics.extra]\n{metric}\n")) {
            Err(ModelError::Invalid { field: got, .. }) => assert_eq!(got, field, "{metric}"),
            other => panic!("{metric}: {other:?}"),
        }
    }
}

fn route(value: serde_json::Value, scope: &TenantScope) -> Option<String> {
    let model = demo_model();
    let compiled = model.compile(&context(), scope, &request(value)).expect("compiles");
    model.route(&compiled, |_| true).map(|r| r.name.clone())
}

#[test]
fn the_smallest_covering_rollup_is_chosen_and_raw_otherwise() {
    let all = TenantScope::unscoped("default");
    let cases = [
        (json!({"metrics": ["revenue"]}), Some("daily_channel")),
        (
            json!({"metrics": ["revenue"], "dimensions": ["channel_type", "month"]}),
            Some("daily_channel"),
        ),
        (
            json!({"metrics": ["revenue"], "dimensions": ["city"]}),
            Some("daily_store"),
        ),
        (
            json!({"metrics": ["revenue"], "dimensions": ["hour"]}),
            Some("hourly_channel"),
        ),
        (json!({"metrics": ["revenue"], "dimensions": ["hour", "store"]}), None),
        (json!({"metrics": ["unique_customers"]}), None),
        (
            json!({"metrics": ["revenue"], "dimensions": ["store"], "filters": {"status": "COMPLETED"}}),
            None,
        ),
    ];
    for (query, expected) in cases {
        assert_eq!(route(query.clone(), &all).as_deref(), expected, "{query}");
    }
    // A tenant's row filter must be expressible on the rollup too.
    let scoped = TenantScope {
        id: "a".into(),
        row_filters: [(
            "sales".to_owned(),
            vec![ResolvedFilter {
                dimension: "state".into(),
                op: FilterOp::Eq,
                value: FilterValue::Text("RJ".into()),
            }],
        )]
        .into(),
    };
    assert_eq!(
        route(json!({"metrics": ["revenue"]}), &scoped).as_deref(),
        Some("daily_store")
    );
    assert_eq!(
        route(json!({"metrics": ["revenue"], "dimensions": ["status"]}), &scoped),
        None
    );
}

#[test]
fn rollup_sql_reads_the_rollup_under_the_fact_alias() {
    let model = demo_model();
    let compiled = compile(json!({"metrics": ["average_ticket"], "dimensions": ["channel"]})).expect("compiles");
    let rollup = model.route(&compiled, |_| true).expect("covered");
    let sql = model
        .sql_for(&compiled, Some(rollup))
        .expect("sql")
        .builder
        .sql()
        .to_owned();
    assert!(
        sql.contains("FROM analytics_rollup_sales_daily_channel s JOIN channels ch ON ch.id = s.channel_id"),
        "{sql}"
    );
    assert!(sql.contains("sum(s.__p"), "{sql}");
    assert!(!sql.contains("avg("), "{sql}");
}

#[test]
fn metrics_keep_the_request_order_and_total_counts_before_the_page() {
    let compiled = compile(json!({
        "metrics": ["sales_count", "faturamento", "revenue"], "dimensions": ["channel"],
        "total": true, "limit": 2, "offset": 1,
    }))
    .expect("compiles");
    assert_eq!(compiled.resolved.metrics, ["sales_count", "revenue"]);
    let sql = sql_of(&compiled);
    assert!(sql.starts_with("WITH r AS (SELECT "), "{sql}");
    assert!(sql.find("\"sales_count\"") < sql.find("\"revenue\""), "{sql}");
    assert!(
        sql.contains("(SELECT count(*) FROM r)::int8 AS total FROM (SELECT * FROM r ORDER BY"),
        "{sql}"
    );
    let plain = compile(json!({"metrics": ["revenue"]})).expect("compiles");
    assert!(!sql_of(&plain).contains("WITH r"));
}

#[test]
fn compare_date_range_splits_into_one_request_per_range() {
    let parts = split_compare(&request(json!({
        "metrics": ["revenue"],
        "compare_date_range": [["2024-01-01", "2024-01-31"], ["2024-02-01", "2024-02-29"]],
    })))
    .expect("valid")
    .expect("a comparison");
    let ranges: Vec<_> = parts
        .iter()
        .map(|p| {
            p.date_range
                .as_ref()
                .map(|r| (r.start_date.as_str(), r.end_date.as_str()))
        })
        .collect();
    assert_eq!(
        ranges,
        [Some(("2024-01-01", "2024-01-31")), Some(("2024-02-01", "2024-02-29"))]
    );
    assert!(parts.iter().all(|p| p.compare_date_range.is_none()));
    assert!(split_compare(&request(json!({"metrics": ["revenue"]})))
        .expect("valid")
        .is_none());
    let refused = |body: serde_json::Value| split_compare(&request(body)).err().and_then(|e| e.field);
    assert_eq!(
        refused(json!({"metrics": ["revenue"], "compare_date_range": [["2024-01-01", "2024-02-30"]]})),
        Some("compare_date_range[0][1]".into())
    );
    assert_eq!(
        refused(
            json!({"metrics": ["revenue"], "compare_date_range": [["2024-01-01", "2024-01-02"], ["2024-03-01", "2024-02-01"]]})
        ),
        Some("compare_date_range[1]".into())
    );
    assert_eq!(
        refused(json!({"metrics": ["revenue"], "compare_date_range": []})),
        Some("compare_date_range".into())
    );
    let both = json!({"metrics": ["revenue"], "date_range": {"start_date": "2024-01-01", "end_date": "2024-01-02"}, "compare_date_range": [["2024-01-01", "2024-01-02"]]});
    assert_eq!(refused(both), Some("compare_date_range".into()));
    let too_many: Vec<_> = (0..=MAX_COMPARE_RANGES).map(|_| ["2024-01-01", "2024-01-02"]).collect();
    assert_eq!(
        refused(json!({"metrics": ["revenue"], "compare_date_range": too_many})),
        Some("compare_date_range".into())
    );
    // Compiling a comparison as one query is refused, not silently ranged.
    assert!(compile(json!({"metrics": ["revenue"], "compare_date_range": [["2024-01-01", "2024-01-02"]]})).is_err());
}
