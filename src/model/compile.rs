//! SQL generation: a `ResolvedQuery` becomes one parameterized statement.
//! Only model text (operator-trusted) and whitelisted names become SQL; every
//! client value is a bind parameter.

use std::collections::BTreeSet;

use sqlx::{Postgres, QueryBuilder};

use super::definition::{Dataset, JoinKind, ValueType};
use super::filters::{FilterOp, FilterValue, ResolvedFilter};
use super::resolve::ResolvedQuery;
use super::rollup::Rollup;

/// Builds the statement for `query` on `dataset`, with `row_filters` (the
/// tenant's scope) ANDed in, reading `rollup` (under the fact table's alias,
/// metrics combined from its parts) or the raw table. It returns one row:
/// `(total_rows int8, data text)` where `data` is the compact JSON array of rows
/// built by PostgreSQL so the server never re-encodes it.
pub fn build_sql(
    dataset: &Dataset,
    query: &ResolvedQuery,
    row_filters: &[ResolvedFilter],
    rollup: Option<&Rollup>,
) -> QueryBuilder<'static, Postgres> {
    let def = &dataset.def;
    let mut sql = QueryBuilder::new(
        "SELECT count(*)::int8 AS total_rows, coalesce(array_to_json(array_agg(q)), '[]'::json)::text AS data FROM (SELECT ",
    );

    let mut columns = sql.separated(", ");
    for name in &query.dimensions {
        if let Some(dimension) = dataset.dimension(name) {
            columns.push(format_args!("{} AS \"{name}\"", dimension.sql));
        }
    }
    for name in &query.metrics {
        if let Some(metric) = dataset.metric(name) {
            let expression = rollup.and_then(|r| r.combine.get(name)).unwrap_or(&metric.sql);
            match metric.decimals {
                Some(decimals) => {
                    columns.push(format_args!("round(({expression})::numeric, {decimals}) AS \"{name}\""))
                }
                None => columns.push(format_args!("{expression} AS \"{name}\"")),
            };
        }
    }

    let table = rollup.map_or(&def.table, |r| &r.table);
    sql.push(format_args!(" FROM {table} {}", def.alias));
    for join_name in needed_joins(dataset, query, row_filters) {
        if let Some(join) = def.joins.get(&join_name) {
            let kind = match join.kind {
                JoinKind::Inner => "JOIN",
                JoinKind::Left => "LEFT JOIN",
            };
            sql.push(format_args!(" {kind} {} {} ON {}", join.table, join.alias, join.on));
        }
    }

    let mut conjunction = " WHERE ";
    if let Some(range) = query.date_range {
        let time = format!("{}.{}", def.alias, def.time_column);
        // Whole local days: [start 00:00, end + 1 day 00:00) in the dataset's zone,
        // written as a plain range on the column so its index applies.
        sql.push(format_args!("{conjunction}{time} >= ("));
        sql.push_bind(range.start);
        sql.push("::date::timestamp AT TIME ZONE ");
        sql.push_bind(def.timezone.clone());
        sql.push(format_args!(") AND {time} < (("));
        sql.push_bind(range.end);
        sql.push("::date + 1)::timestamp AT TIME ZONE ");
        sql.push_bind(def.timezone.clone());
        sql.push(")");
        conjunction = " AND ";
    }
    for filter in row_filters.iter().chain(&query.filters) {
        if let Some(dimension) = dataset.dimension(&filter.dimension) {
            sql.push(conjunction);
            push_filter(&mut sql, &dimension.sql, dimension.value_type, filter);
            conjunction = " AND ";
        }
    }

    if !query.dimensions.is_empty() {
        let positions: Vec<String> = (1..=query.dimensions.len()).map(|i| i.to_string()).collect();
        sql.push(format_args!(" GROUP BY {}", positions.join(", ")));
    }
    if !query.order_by.is_empty() {
        let keys: Vec<String> = query
            .order_by
            .iter()
            .map(|o| {
                format!(
                    "\"{}\" {}",
                    o.field,
                    if o.descending {
                        "DESC NULLS LAST"
                    } else {
                        "ASC NULLS FIRST"
                    }
                )
            })
            .collect();
        sql.push(format_args!(" ORDER BY {}", keys.join(", ")));
    }
    sql.push(" LIMIT ");
    sql.push_bind(i64::try_from(query.limit).unwrap_or(i64::MAX));
    sql.push(" OFFSET ");
    sql.push_bind(i64::try_from(query.offset).unwrap_or(i64::MAX));
    sql.push(") q");
    sql
}

/// Joins referenced by any chosen metric, dimension or filter, in a stable order.
fn needed_joins(dataset: &Dataset, query: &ResolvedQuery, row_filters: &[ResolvedFilter]) -> BTreeSet<String> {
    let metric_joins = query.metrics.iter().filter_map(|m| dataset.metric(m)?.join.clone());
    let dimension_joins = query
        .dimensions
        .iter()
        .chain(query.filters.iter().map(|f| &f.dimension))
        .chain(row_filters.iter().map(|f| &f.dimension))
        .filter_map(|d| dataset.dimension(d)?.join.clone());
    metric_joins.chain(dimension_joins).collect()
}

fn push_filter(
    sql: &mut QueryBuilder<'static, Postgres>,
    expression: &str,
    value_type: ValueType,
    filter: &ResolvedFilter,
) {
    // Date dimensions compare as ISO text, which orders like dates and works
    // whether the model's expression yields text or a real date.
    let cast = if value_type == ValueType::Date { "::text" } else { "" };
    let operator = match filter.op {
        FilterOp::Eq => "=",
        FilterOp::Ne => "<>",
        FilterOp::Gt => ">",
        FilterOp::Gte => ">=",
        FilterOp::Lt => "<",
        FilterOp::Lte => "<=",
        FilterOp::In => "= ANY(",
        FilterOp::NotIn => "<> ALL(",
    };
    sql.push(format_args!("({expression}){cast} {operator}"));
    if !filter.op.takes_list() {
        sql.push(" ");
    }
    match &filter.value {
        FilterValue::Integer(v) => sql.push_bind(*v),
        FilterValue::Number(v) => sql.push_bind(*v),
        FilterValue::Text(v) => sql.push_bind(v.clone()),
        FilterValue::IntegerList(v) => sql.push_bind(v.clone()),
        FilterValue::NumberList(v) => sql.push_bind(v.clone()),
        FilterValue::TextList(v) => sql.push_bind(v.clone()),
    };
    if filter.op.takes_list() {
        sql.push(")");
    }
}
