//! Filters: `{dimension: {op: value}}` checked against the dimension's type
//! and put in canonical form (typed values, sorted and deduplicated lists).

use chrono::NaiveDate;
use serde::Serialize;
use serde_json::Value;

use super::definition::{Dataset, ValueType};
use super::names::{lookup_dimension, truncate};
use super::request::{QueryError, QueryErrorCode};

pub const MAX_LIST_VALUES: usize = 1_000;
pub const MAX_FILTERED_DIMENSIONS: usize = 32;
pub const MAX_TEXT_VALUE_CHARS: usize = 1_000;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ResolvedFilter {
    pub dimension: String,
    pub op: FilterOp,
    pub value: FilterValue,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FilterOp {
    Eq,
    Ne,
    In,
    NotIn,
    Gt,
    Gte,
    Lt,
    Lte,
}

impl FilterOp {
    pub const ALL: &'static str = "eq, ne, in, not_in, gt, gte, lt, lte";

    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "eq" => Self::Eq,
            "ne" => Self::Ne,
            "in" => Self::In,
            "not_in" => Self::NotIn,
            "gt" => Self::Gt,
            "gte" => Self::Gte,
            "lt" => Self::Lt,
            "lte" => Self::Lte,
            _ => return None,
        })
    }

    pub fn takes_list(self) -> bool {
        matches!(self, Self::In | Self::NotIn)
    }
}

/// A typed filter operand; lists are sorted and deduplicated.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum FilterValue {
    Integer(i64),
    Number(f64),
    Text(String),
    IntegerList(Vec<i64>),
    NumberList(Vec<f64>),
    TextList(Vec<String>),
}

/// Resolves filters given as `{dimension: {op: value}}`, `{dimension: scalar}`
/// (eq) or `{dimension: [values]}` (in).
pub fn resolve_filters(
    dataset: &Dataset,
    filters: &std::collections::BTreeMap<String, Value>,
) -> Result<Vec<ResolvedFilter>, QueryError> {
    if filters.len() > MAX_FILTERED_DIMENSIONS {
        return Err(QueryError::invalid(
            QueryErrorCode::InvalidFilter,
            "filters",
            format!("at most {MAX_FILTERED_DIMENSIONS} dimensions may be filtered"),
        ));
    }
    let mut resolved = Vec::new();
    for (name, spec) in filters {
        let field = format!("filters.{}", truncate(name));
        let dimension = lookup_dimension(dataset, name, &field)?;
        let value_type = dataset
            .dimension(dimension)
            .map(|d| d.value_type)
            .unwrap_or(ValueType::Text);
        let operations: Vec<(FilterOp, &Value, String)> = match spec {
            Value::Object(ops) if ops.is_empty() => {
                return Err(QueryError::invalid(
                    QueryErrorCode::InvalidFilter,
                    field,
                    "a filter needs an operator",
                ))
            }
            Value::Object(ops) => ops
                .iter()
                .map(|(op_name, value)| {
                    let op = FilterOp::parse(op_name).ok_or_else(|| {
                        QueryError::invalid(
                            QueryErrorCode::UnknownOperator,
                            format!("{field}.{}", truncate(op_name)),
                            format!("unknown operator `{}`; known: {}", truncate(op_name), FilterOp::ALL),
                        )
                    })?;
                    Ok((op, value, format!("{field}.{op_name}")))
                })
                .collect::<Result<_, QueryError>>()?,
            Value::Array(_) => vec![(FilterOp::In, spec, field.clone())],
            _ => vec![(FilterOp::Eq, spec, field.clone())],
        };
        for (op, value, op_field) in operations {
            let value = typed_value(op, value, value_type, &op_field)?;
            resolved.push(ResolvedFilter {
                dimension: dimension.to_owned(),
                op,
                value,
            });
        }
    }
    // Aliases can map two request keys onto one dimension; sorting makes the
    // canonical form independent of which spelling came first.
    resolved.sort_by(|a, b| (&a.dimension, a.op).cmp(&(&b.dimension, b.op)));
    if let Some(pair) = resolved
        .windows(2)
        .find(|w| w[0].dimension == w[1].dimension && w[0].op == w[1].op)
    {
        return Err(QueryError::invalid(
            QueryErrorCode::InvalidFilter,
            format!("filters.{}", pair[0].dimension),
            "the same operator is given twice for this dimension (through an alias)",
        ));
    }
    Ok(resolved)
}

fn typed_value(op: FilterOp, value: &Value, value_type: ValueType, field: &str) -> Result<FilterValue, QueryError> {
    if op.takes_list() {
        let Value::Array(items) = value else {
            return Err(QueryError::invalid(
                QueryErrorCode::InvalidFilterValue,
                field,
                "`in`/`not_in` take an array",
            ));
        };
        if items.is_empty() || items.len() > MAX_LIST_VALUES {
            return Err(QueryError::invalid(
                QueryErrorCode::InvalidFilterValue,
                field,
                format!("the list must hold between 1 and {MAX_LIST_VALUES} values"),
            ));
        }
        return Ok(match value_type {
            ValueType::Integer => {
                let mut list = collect(items, field, |v| v.as_i64(), "integers")?;
                list.sort_unstable();
                list.dedup();
                FilterValue::IntegerList(list)
            }
            ValueType::Number => {
                let mut list = collect(items, field, Value::as_f64, "numbers")?;
                list.sort_by(f64::total_cmp);
                list.dedup();
                FilterValue::NumberList(list)
            }
            ValueType::Text | ValueType::Date => {
                let mut list = collect(items, field, |v| text_value(v, value_type), text_kind(value_type))?;
                list.sort_unstable();
                list.dedup();
                FilterValue::TextList(list)
            }
        });
    }
    let mismatch = |expected: &str| {
        QueryError::invalid(
            QueryErrorCode::InvalidFilterValue,
            field,
            format!("expected {expected}, got {}", kind_of(value)),
        )
    };
    Ok(match value_type {
        ValueType::Integer => FilterValue::Integer(value.as_i64().ok_or_else(|| mismatch("an integer"))?),
        ValueType::Number => FilterValue::Number(value.as_f64().ok_or_else(|| mismatch("a number"))?),
        ValueType::Text | ValueType::Date => {
            FilterValue::Text(text_value(value, value_type).ok_or_else(|| mismatch(text_kind(value_type)))?)
        }
    })
}

fn collect<T>(
    items: &[Value],
    field: &str,
    convert: impl Fn(&Value) -> Option<T>,
    expected: &str,
) -> Result<Vec<T>, QueryError> {
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            convert(item).ok_or_else(|| {
                QueryError::invalid(
                    QueryErrorCode::InvalidFilterValue,
                    format!("{field}[{i}]"),
                    format!("expected {expected}, got {}", kind_of(item)),
                )
            })
        })
        .collect()
}

fn text_value(value: &Value, value_type: ValueType) -> Option<String> {
    let text = value.as_str()?;
    // PostgreSQL's text cannot hold NUL: refused here, named, instead of
    // failing in the database.
    if text.chars().count() > MAX_TEXT_VALUE_CHARS || text.contains('\0') {
        return None;
    }
    if value_type == ValueType::Date && NaiveDate::parse_from_str(text, "%Y-%m-%d").is_err() {
        return None;
    }
    Some(text.to_owned())
}

fn text_kind(value_type: ValueType) -> &'static str {
    match value_type {
        ValueType::Date => "a YYYY-MM-DD date string",
        _ => "a string of at most 1000 characters, without NUL",
    }
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "an integer",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
