//! SQL generation: a `ResolvedQuery` becomes one parameterized statement.
//! Only model text (operator-trusted) and whitelisted names become SQL; every
//! client value is a bind parameter.

use std::collections::BTreeSet;

use sqlx::{Postgres, QueryBuilder};

use super::definition::{Dataset, JoinKind, ValueType};
use super::filters::{FilterOp, FilterValue, ResolvedFilter};
use super::resolve::ResolvedQuery;
use super::rollup::Rollup;

/// A statement ready to run, and its parameters as JSON for the dry run
/// (`POST /analytics/sql`): recorded as they are bound, so the two cannot
/// drift apart.
pub struct Statement {
    pub builder: QueryBuilder<'static, Postgres>,
    pub params: Vec<serde_json::Value>,
}

impl Statement {
    fn bind<T>(&mut self, value: T)
    where
        T: 'static + Send + sqlx::Encode<'static, Postgres> + sqlx::Type<Postgres> + serde::Serialize,
    {
        self.params.push(serde_json::to_value(&value).unwrap_or_default());
        self.builder.push_bind(value);
    }
}

/// Builds the statement for `query` on `dataset`, with `row_filters` (the
/// tenant's scope) ANDed in, reading `rollup` (under the fact table's alias,
/// metrics combined from its parts) or the raw table. It returns one row:
/// `(total_rows int8, data text)` where `data` is the compact JSON array of rows
/// built by PostgreSQL so the server never re-encodes it, and with
/// `query.total` a third column `total int8`: the rows before limit/offset.
pub fn build_sql(
    dataset: &Dataset,
    query: &ResolvedQuery,
    row_filters: &[ResolvedFilter],
    rollup: Option<&Rollup>,
) -> Statement {
    let def = &dataset.def;
    let mut statement = Statement {
        builder: QueryBuilder::new(""),
        params: Vec::new(),
    };
    // With `total`, the grouped rows are a CTE read twice: counted whole,
    // and paged. Without it the page is the subquery itself.
    statement.builder.push(if query.total {
        "WITH r AS (SELECT "
    } else {
        "SELECT count(*)::int8 AS total_rows, coalesce(array_to_json(array_agg(q)), '[]'::json)::text AS data FROM (SELECT "
    });

    let mut columns = statement.builder.separated(", ");
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
    statement.builder.push(format_args!(" FROM {table} {}", def.alias));
    for join_name in needed_joins(dataset, query, row_filters) {
        if let Some(join) = def.joins.get(&join_name) {
            let kind = match join.kind {
                JoinKind::Inner => "JOIN",
                JoinKind::Left => "LEFT JOIN",
            };
            statement
                .builder
                .push(format_args!(" {kind} {} {} ON {}", join.table, join.alias, join.on));
        }
    }

    let mut conjunction = " WHERE ";
    if let Some(range) = query.date_range {
        let time = format!("{}.{}", def.alias, def.time_column);
        // Whole local days: [start 00:00, end + 1 day 00:00) in the dataset's zone,
        // written as a plain range on the column so its index applies.
        statement.builder.push(format_args!("{conjunction}{time} >= ("));
        statement.bind(range.start);
        statement.builder.push("::date::timestamp AT TIME ZONE ");
        statement.bind(def.timezone.clone());
        statement.builder.push(format_args!(") AND {time} < (("));
        statement.bind(range.end);
        statement.builder.push("::date + 1)::timestamp AT TIME ZONE ");
        statement.bind(def.timezone.clone());
        statement.builder.push(")");
        conjunction = " AND ";
    }
    for filter in row_filters.iter().chain(&query.filters) {
        if let Some(dimension) = dataset.dimension(&filter.dimension) {
            statement.builder.push(conjunction);
            push_filter(&mut statement, &dimension.sql, dimension.value_type, filter);
            conjunction = " AND ";
        }
    }

    if !query.dimensions.is_empty() {
        let positions: Vec<String> = (1..=query.dimensions.len()).map(|i| i.to_string()).collect();
        statement
            .builder
            .push(format_args!(" GROUP BY {}", positions.join(", ")));
    }
    if query.total {
        statement.builder.push(
            ") SELECT count(*)::int8 AS total_rows, coalesce(array_to_json(array_agg(q)), '[]'::json)::text AS data, \
             (SELECT count(*) FROM r)::int8 AS total FROM (SELECT * FROM r",
        );
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
        statement.builder.push(format_args!(" ORDER BY {}", keys.join(", ")));
    }
    statement.builder.push(" LIMIT ");
    statement.bind(i64::try_from(query.limit).unwrap_or(i64::MAX));
    statement.builder.push(" OFFSET ");
    statement.bind(i64::try_from(query.offset).unwrap_or(i64::MAX));
    statement.builder.push(") q");
    statement
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

fn push_filter(statement: &mut Statement, expression: &str, value_type: ValueType, filter: &ResolvedFilter) {
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
    statement.builder.push(format_args!("({expression}){cast} {operator}"));
    if !filter.op.takes_list() {
        statement.builder.push(" ");
    }
    match &filter.value {
        FilterValue::Integer(v) => statement.bind(*v),
        FilterValue::Number(v) => statement.bind(*v),
        FilterValue::Text(v) => statement.bind(v.clone()),
        FilterValue::IntegerList(v) => statement.bind(v.clone()),
        FilterValue::NumberList(v) => statement.bind(v.clone()),
        FilterValue::TextList(v) => statement.bind(v.clone()),
    };
    if filter.op.takes_list() {
        statement.builder.push(")");
    }
}
