//! Query results compared with hand-written SQL over the same data.

use serde_json::{json, Value};
use sqlx::Row;

use crate::helpers::{assert_close, num, spawn_app, TestApp};

const MONTH: (&str, &str) = ("2024-03-01", "2024-03-31");

/// Per-channel values of every metric, computed by hand for March 2024.
async fn expected_by_channel(app: &TestApp) -> Vec<(String, [f64; 8])> {
    let rows = sqlx::query(
        "SELECT ch.name,
                coalesce(sum(s.total_amount) FILTER (WHERE s.status = 'COMPLETED'), 0)::float8,
                (count(*) FILTER (WHERE s.status = 'COMPLETED'))::float8,
                round(avg(s.total_amount) FILTER (WHERE s.status = 'COMPLETED'), 2)::float8,
                coalesce(sum(s.total_discount) FILTER (WHERE s.status = 'COMPLETED'), 0)::float8,
                (count(*) FILTER (WHERE s.status = 'CANCELLED'))::float8,
                round((count(*) FILTER (WHERE s.status = 'CANCELLED'))::numeric / count(*), 4)::float8,
                coalesce(round(avg(s.delivery_seconds) FILTER (WHERE s.status = 'COMPLETED' AND s.delivery_seconds IS NOT NULL), 1), -1)::float8,
                (count(DISTINCT s.customer_id) FILTER (WHERE s.status = 'COMPLETED'))::float8
         FROM sales s JOIN channels ch ON ch.id = s.channel_id
         WHERE s.created_at >= '2024-03-01'::date::timestamp AT TIME ZONE 'America/Sao_Paulo'
           AND s.created_at < '2024-04-01'::date::timestamp AT TIME ZONE 'America/Sao_Paulo'
         GROUP BY ch.name ORDER BY ch.name",
    )
    .fetch_all(&app.db)
    .await
    .expect("hand-written SQL");
    rows.iter()
        .map(|r| {
            let mut values = [0.0; 8];
            for (i, v) in values.iter_mut().enumerate() {
                *v = r.get::<f64, _>(i + 1);
            }
            (r.get(0), values)
        })
        .collect()
}

#[tokio::test]
async fn every_metric_by_channel_matches_hand_written_sql() {
    let app = spawn_app().await;
    let metrics = [
        "revenue",
        "sales_count",
        "average_ticket",
        "discount_total",
        "cancelled_count",
        "cancellation_rate",
        "avg_delivery_seconds",
        "unique_customers",
    ];
    let body = app
        .query_ok(json!({
            "metrics": metrics,
            "dimensions": ["channel"],
            "date_range": {"start_date": MONTH.0, "end_date": MONTH.1},
        }))
        .await;
    let expected = expected_by_channel(&app).await;
    let data = body["data"].as_array().expect("data array");
    assert_eq!(data.len(), expected.len());
    assert!(expected.len() >= 4, "the seed covers several channels in a month");
    assert_eq!(body["metadata"]["total_rows"], json!(expected.len()));
    for (row, (channel, values)) in data.iter().zip(&expected) {
        assert_eq!(row["channel"], json!(channel), "rows are ordered by the dimension");
        for (metric, value) in metrics.iter().zip(values) {
            if *metric == "avg_delivery_seconds" && *value < 0.0 {
                assert!(row[metric].is_null(), "no delivery times means null");
                continue;
            }
            assert_close(num(&row[*metric]), *value, &format!("{channel}.{metric}"));
        }
    }
}

#[tokio::test]
async fn portuguese_aliases_answer_under_canonical_names() {
    let app = spawn_app().await;
    let body = app
        .query_ok(json!({
            "metrics": ["faturamento", "qtd_vendas", "ticket_medio"],
            "date_range": {"start_date": MONTH.0, "end_date": MONTH.1},
        }))
        .await;
    let row = &body["data"][0];
    let expected: (f64, i64) = sqlx::query_as(
        "SELECT sum(total_amount)::float8, count(*) FROM sales WHERE status = 'COMPLETED'
         AND created_at >= '2024-03-01 00:00 America/Sao_Paulo' AND created_at < '2024-04-01 00:00 America/Sao_Paulo'",
    )
    .fetch_one(&app.db)
    .await
    .expect("sql");
    assert_close(num(&row["revenue"]), expected.0, "revenue");
    assert_eq!(row["sales_count"], json!(expected.1));
    assert!(row.get("faturamento").is_none());
}

#[tokio::test]
async fn two_dimensions_with_filters_order_and_limit_match_sql() {
    let app = spawn_app().await;
    let body = app
        .query_ok(json!({
            "metrics": ["revenue"],
            "dimensions": ["state", "channel_type"],
            "filters": {"channel_id": {"in": [1, 2, 3]}, "store_id": {"gte": 5, "lt": 40}},
            "date_range": {"start_date": "2024-01-01", "end_date": "2024-06-30"},
            "order_by": [{"field": "revenue", "direction": "desc"}],
            "limit": 3,
        }))
        .await;
    let expected: Vec<(String, String, f64)> = sqlx::query_as(
        "SELECT st.state::text, ch.type, coalesce(sum(s.total_amount) FILTER (WHERE s.status = 'COMPLETED'), 0)::float8 AS revenue
         FROM sales s JOIN stores st ON st.id = s.store_id JOIN channels ch ON ch.id = s.channel_id
         WHERE s.created_at >= '2024-01-01 00:00 America/Sao_Paulo' AND s.created_at < '2024-07-01 00:00 America/Sao_Paulo'
           AND s.channel_id IN (1, 2, 3) AND s.store_id >= 5 AND s.store_id < 40
         GROUP BY 1, 2 ORDER BY revenue DESC, 1, 2 LIMIT 3",
    )
    .fetch_all(&app.db)
    .await
    .expect("sql");
    let data = body["data"].as_array().expect("data");
    assert_eq!(data.len(), 3);
    for (row, (state, kind, revenue)) in data.iter().zip(&expected) {
        assert_eq!(row["state"], json!(state));
        assert_eq!(row["channel_type"], json!(kind));
        assert_close(num(&row["revenue"]), *revenue, "revenue");
    }
}

/// One query per operator on an integer dimension, each checked against SQL.
#[tokio::test]
async fn every_filter_operator_matches_sql() {
    let app = spawn_app().await;
    let cases: Vec<(Value, &str)> = vec![
        (json!({"eq": 3}), "s.store_id = 3"),
        (json!({"ne": 3}), "s.store_id <> 3"),
        (json!({"in": [1, 2, 3, 3]}), "s.store_id IN (1, 2, 3)"),
        (json!({"not_in": [1, 2]}), "s.store_id NOT IN (1, 2)"),
        (json!({"gt": 10}), "s.store_id > 10"),
        (json!({"gte": 10}), "s.store_id >= 10"),
        (json!({"lt": 10}), "s.store_id < 10"),
        (json!({"lte": 10}), "s.store_id <= 10"),
        (json!(7), "s.store_id = 7"),
        (json!([7, 8]), "s.store_id IN (7, 8)"),
    ];
    for (filter, condition) in cases {
        let body = app
            .query_ok(json!({"metrics": ["sales_count"], "filters": {"store_id": filter}}))
            .await;
        let expected: i64 = sqlx::query_scalar(&format!(
            "SELECT count(*) FROM sales s WHERE s.status = 'COMPLETED' AND {condition}"
        ))
        .fetch_one(&app.db)
        .await
        .expect("sql");
        assert_eq!(body["data"][0]["sales_count"], json!(expected), "filter {filter}");
    }
}

#[tokio::test]
async fn text_and_date_filters_match_sql() {
    let app = spawn_app().await;
    let body = app
        .query_ok(json!({
            "metrics": ["sales_count"],
            "dimensions": ["city"],
            "filters": {"state": "SP", "channel": {"not_in": ["Presencial"]}, "day": {"gte": "2024-02-01", "lte": "2024-02-29"}},
        }))
        .await;
    let expected: Vec<(String, i64)> = sqlx::query_as(
        "SELECT st.city, count(*) FILTER (WHERE s.status = 'COMPLETED')
         FROM sales s JOIN stores st ON st.id = s.store_id JOIN channels ch ON ch.id = s.channel_id
         WHERE st.state = 'SP' AND ch.name <> 'Presencial'
           AND s.created_at >= '2024-02-01 00:00 America/Sao_Paulo' AND s.created_at < '2024-03-01 00:00 America/Sao_Paulo'
         GROUP BY 1 ORDER BY 1",
    )
    .fetch_all(&app.db)
    .await
    .expect("sql");
    let data = body["data"].as_array().expect("data");
    assert!(!expected.is_empty());
    assert_eq!(data.len(), expected.len());
    for (row, (city, count)) in data.iter().zip(&expected) {
        assert_eq!(row["city"], json!(city));
        assert_eq!(row["sales_count"], json!(count));
    }
}

#[tokio::test]
async fn time_dimensions_render_as_documented() {
    let app = spawn_app().await;
    let body = app
        .query_ok(json!({
            "metrics": ["sales_count"],
            "dimensions": ["month", "week", "day", "hour", "weekday"],
            "date_range": {"start_date": "2024-03-04", "end_date": "2024-03-04"},
            "limit": 5,
        }))
        .await;
    let row = &body["data"][0];
    assert_eq!(row["month"], json!("2024-03"));
    assert_eq!(row["week"], json!("2024-03-04"), "2024-03-04 is a Monday");
    assert_eq!(row["day"], json!("2024-03-04"));
    assert_eq!(row["weekday"], json!(1));
    assert!(row["hour"].as_i64().is_some_and(|h| (0..24).contains(&h)));
}

#[tokio::test]
async fn limit_and_offset_page_through_a_stable_order() {
    let app = spawn_app().await;
    let all = app
        .query_ok(json!({"metrics": ["revenue"], "dimensions": ["store_id"]}))
        .await;
    let page = app
        .query_ok(json!({"metrics": ["revenue"], "dimensions": ["store_id"], "limit": 5, "offset": 10}))
        .await;
    assert_eq!(page["data"].as_array().map(Vec::len), Some(5));
    assert_eq!(page["data"][0], all["data"][10]);
    assert_eq!(page["data"][4], all["data"][14]);
}

#[tokio::test]
async fn get_with_q_parameter_answers_like_post() {
    let app = spawn_app().await;
    let query = json!({"metrics": ["revenue"], "dimensions": ["channel"]});
    let posted = app.query_ok(query.clone()).await;
    let response = app
        .client
        .get(app.url("/api/v1/analytics/query"))
        .query(&[("q", query.to_string())])
        .send()
        .await
        .expect("get");
    assert_eq!(response.status(), 200);
    let got: Value = response.json().await.expect("json");
    assert_eq!(got["data"], posted["data"]);
}

#[tokio::test]
async fn empty_results_are_an_empty_array() {
    let app = spawn_app().await;
    let body = app
        .query_ok(json!({
            "metrics": ["revenue"],
            "dimensions": ["channel"],
            "date_range": {"start_date": "1999-01-01", "end_date": "1999-01-31"},
        }))
        .await;
    assert_eq!(body["data"], json!([]));
    assert_eq!(body["metadata"]["total_rows"], json!(0));
}

#[tokio::test]
async fn metadata_reports_cache_fields() {
    let app = spawn_app().await;
    let response = app
        .query(json!({"metrics": ["revenue"], "dimensions": ["channel"]}))
        .await;
    assert_eq!(response.headers()["x-cache"], "MISS");
    let body: Value = response.json().await.expect("json");
    let metadata = &body["metadata"];
    assert_eq!(metadata["from_cache"], json!(false));
    assert_eq!(metadata["cached"], json!(true));
    assert!(metadata["cache_tier"].is_null());
    assert!(metadata["query_time_ms"].as_f64().is_some());
    let key = metadata["cache_key"].as_str().expect("key");
    assert!(
        key.starts_with(&format!("{}:query:default:sales:", app.prefix)),
        "{key}"
    );
    assert_eq!(key.rsplit(':').next().map(str::len), Some(32), "md5 hex");
}
