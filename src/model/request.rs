//! The query request as clients send it (wire types of `POST /analytics/query`).

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;
use utoipa::ToSchema;

/// A dashboard query. Unknown fields are refused so typos surface as 400s
/// instead of silently ignored filters.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "dataset": "sales",
    "metrics": ["revenue", "average_ticket"],
    "dimensions": ["channel"],
    "filters": {"channel_id": {"in": [2, 3]}},
    "date_range": {"start_date": "2024-01-01", "end_date": "2024-01-31"},
    "order_by": [{"field": "revenue", "direction": "desc"}],
    "limit": 100,
    "offset": 0
}))]
pub struct QueryRequest {
    /// Dataset name; the model's default dataset when absent.
    #[schema(example = "sales")]
    pub dataset: Option<String>,
    /// 1..20 metric names or aliases.
    #[schema(example = json!(["revenue", "average_ticket"]), min_items = 1, max_items = 20)]
    pub metrics: Vec<String>,
    /// 0..10 dimension names or aliases.
    #[serde(default)]
    #[schema(example = json!(["channel"]), max_items = 10)]
    pub dimensions: Vec<String>,
    /// Dimension -> `{operator: value}`. A bare scalar means `eq`, a bare array `in`.
    /// Operators: eq, ne, in, not_in, gt, gte, lt, lte.
    #[serde(default)]
    #[schema(value_type = Object, example = json!({"channel_id": {"in": [2, 3]}}))]
    pub filters: BTreeMap<String, Value>,
    /// Inclusive calendar days in the dataset's time zone.
    // Its example is the whole request's (`http::openapi` copies it): an
    // `example` here is lost on a reference type.
    pub date_range: Option<DateRange>,
    /// Sort keys; the default is the dimensions, ascending.
    #[serde(default)]
    #[schema(example = json!([{"field": "revenue", "direction": "desc"}]))]
    pub order_by: Vec<OrderBy>,
    /// Row limit, at most the dataset's `max_limit` (the default).
    #[schema(example = 100, minimum = 1)]
    pub limit: Option<u64>,
    /// Rows to skip.
    #[serde(default)]
    #[schema(example = 0, minimum = 0, maximum = 1_000_000)]
    pub offset: u64,
    /// Also count the rows before `limit`/`offset` (`metadata.total`), so a
    /// dashboard can page; `total_rows` stays the rows returned.
    #[serde(default)]
    #[schema(example = false)]
    pub total: bool,
    /// Period over period: the same query once per `[start_date, end_date]`
    /// (inclusive days, as in `date_range`), answered as one result per
    /// range, each its own cache entry. Excludes `date_range`.
    #[schema(value_type = Option<Vec<Vec<String>>>, example = json!([["2024-01-01", "2024-01-31"], ["2024-02-01", "2024-02-29"]]))]
    pub compare_date_range: Option<Vec<(String, String)>>,
}

#[derive(Debug, Clone, Deserialize, serde::Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DateRange {
    #[schema(example = "2024-01-01", format = Date)]
    pub start_date: String,
    #[schema(example = "2024-01-31", format = Date)]
    pub end_date: String,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"field": "revenue", "direction": "desc"}))]
pub struct OrderBy {
    /// A requested metric or dimension.
    #[schema(example = "revenue")]
    pub field: String,
    /// `asc` (default) or `desc`.
    #[serde(default)]
    #[schema(value_type = Option<Direction>)]
    pub direction: Option<String>,
}

/// A sort direction, for the schema only: the field stays a string, which
/// the compiler checks (`invalid_order_by`).
#[derive(ToSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)]
pub enum Direction {
    Asc,
    Desc,
}

/// Why a request was refused: a code from the contract, a message for a
/// person and the request field at fault. The HTTP status of each code is
/// decided in one place, `crate::error`.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct QueryError {
    pub code: QueryErrorCode,
    pub message: String,
    pub field: Option<String>,
}

/// The contract's codes for a refused query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryErrorCode {
    // Shape: the body is not the request the contract describes.
    MalformedJson,
    InvalidRequest,
    // Meaning: unknown names, bad values, out-of-range numbers.
    UnknownDataset,
    UnknownMetric,
    UnknownDimension,
    UnknownOperator,
    InvalidMetrics,
    InvalidDimensions,
    InvalidFilter,
    InvalidFilterValue,
    InvalidDate,
    InvalidDateRange,
    InvalidOrderBy,
    InvalidLimit,
    InvalidOffset,
}

impl QueryError {
    /// A request whose values the model refuses, naming the field at fault.
    pub fn invalid(code: QueryErrorCode, field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            field: Some(field.into()),
        }
    }

    /// A request whose shape is wrong (no single field to name).
    pub fn malformed(code: QueryErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            field: None,
        }
    }
}

impl QueryRequest {
    /// Parses a JSON body or `q` parameter, classifying serde's errors into
    /// the contract's codes: syntax -> `malformed_json`, shape -> `invalid_request`.
    pub fn from_json(bytes: &[u8]) -> Result<Self, QueryError> {
        serde_json::from_slice(bytes).map_err(|error| {
            use serde_json::error::Category;
            match error.classify() {
                Category::Data => QueryError::malformed(QueryErrorCode::InvalidRequest, error.to_string()),
                Category::Syntax | Category::Eof | Category::Io => QueryError::malformed(
                    QueryErrorCode::MalformedJson,
                    format!("request body is not valid JSON: {error}"),
                ),
            }
        })
    }
}
