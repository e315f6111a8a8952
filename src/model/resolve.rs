//! Validation and canonical form: a `QueryRequest` checked against a dataset
//! becomes a `ResolvedQuery` in which every name is canonical and every
//! default is filled, so equivalent requests resolve to equal values.

use chrono::NaiveDate;
use serde::Serialize;

use super::definition::Dataset;
use super::filters::{resolve_filters, ResolvedFilter};
use super::names::{known, lookup_dimension, truncate};
use super::request::{QueryError, QueryErrorCode, QueryRequest};

pub const MAX_METRICS: usize = 20;
pub const MAX_DIMENSIONS: usize = 10;
pub const MAX_OFFSET: u64 = 1_000_000;
/// Ranges one `compare_date_range` request may hold (each is a query).
pub const MAX_COMPARE_RANGES: usize = 12;

/// A validated query in canonical form; its JSON is what the cache key hashes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ResolvedQuery {
    pub dataset: String,
    /// Canonical metric names in request order (it is the column order),
    /// deduplicated.
    pub metrics: Vec<String>,
    /// Canonical dimension names in request order (it is the column order), deduplicated.
    pub dimensions: Vec<String>,
    /// Sorted by dimension, then operator.
    pub filters: Vec<ResolvedFilter>,
    pub date_range: Option<ResolvedDateRange>,
    /// Explicit order plus the remaining dimensions as tie-breakers, so paging is stable.
    pub order_by: Vec<ResolvedOrder>,
    pub limit: u64,
    pub offset: u64,
    /// Count the rows before limit/offset too. Left out of the JSON when
    /// false, so queries without it keep the keys they always had.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub total: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ResolvedDateRange {
    pub start: NaiveDate,
    pub end: NaiveDate,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ResolvedOrder {
    pub field: String,
    pub descending: bool,
}

/// Checks `request` against `dataset` and returns its canonical form.
pub fn resolve(dataset: &Dataset, request: &QueryRequest) -> Result<ResolvedQuery, QueryError> {
    if request.compare_date_range.is_some() {
        // `QueryService` splits such a request into one query per range
        // (`split_compare`); only a caller that cannot (the dry run, a key
        // lookup) gets here.
        return Err(QueryError::invalid(
            QueryErrorCode::InvalidDateRange,
            "compare_date_range",
            "this endpoint takes one `date_range`; send each range of `compare_date_range` as its own request",
        ));
    }
    let metrics = resolve_metrics(dataset, &request.metrics)?;
    let dimensions = resolve_dimensions(dataset, &request.dimensions)?;
    let filters = resolve_filters(dataset, &request.filters)?;
    let date_range = request
        .date_range
        .as_ref()
        .map(|range| {
            let start = parse_date("date_range.start_date", &range.start_date)?;
            let end = parse_date("date_range.end_date", &range.end_date)?;
            if start > end {
                return Err(QueryError::invalid(
                    QueryErrorCode::InvalidDateRange,
                    "date_range",
                    format!("start_date {start} is after end_date {end}"),
                ));
            }
            Ok(ResolvedDateRange { start, end })
        })
        .transpose()?;
    let order_by = resolve_order(dataset, request, &metrics, &dimensions)?;
    let limit = request.limit.unwrap_or(dataset.def.max_limit);
    if limit == 0 || limit > dataset.def.max_limit {
        return Err(QueryError::invalid(
            QueryErrorCode::InvalidLimit,
            "limit",
            format!("limit must be between 1 and {}", dataset.def.max_limit),
        ));
    }
    if request.offset > MAX_OFFSET {
        return Err(QueryError::invalid(
            QueryErrorCode::InvalidOffset,
            "offset",
            format!("offset must be at most {MAX_OFFSET}"),
        ));
    }
    Ok(ResolvedQuery {
        dataset: dataset.name.clone(),
        metrics,
        dimensions,
        filters,
        date_range,
        order_by,
        limit,
        offset: request.offset,
        total: request.total,
    })
}

/// A `compare_date_range` request as one request per range, each with that
/// range as its `date_range`; `None` for an ordinary request.
pub fn split_compare(request: &QueryRequest) -> Result<Option<Vec<QueryRequest>>, QueryError> {
    let Some(ranges) = &request.compare_date_range else {
        return Ok(None);
    };
    let refuse = |message: String| {
        Err(QueryError::invalid(
            QueryErrorCode::InvalidDateRange,
            "compare_date_range",
            message,
        ))
    };
    if request.date_range.is_some() {
        return refuse("send either `date_range` or `compare_date_range`, not both".into());
    }
    if ranges.is_empty() || ranges.len() > MAX_COMPARE_RANGES {
        return refuse(format!(
            "between 1 and {MAX_COMPARE_RANGES} `[start_date, end_date]` ranges are required"
        ));
    }
    ranges
        .iter()
        .enumerate()
        .map(|(i, (start_date, end_date))| {
            let start = parse_date(&format!("compare_date_range[{i}][0]"), start_date)?;
            let end = parse_date(&format!("compare_date_range[{i}][1]"), end_date)?;
            if start > end {
                return Err(QueryError::invalid(
                    QueryErrorCode::InvalidDateRange,
                    format!("compare_date_range[{i}]"),
                    format!("start_date {start} is after end_date {end}"),
                ));
            }
            Ok(QueryRequest {
                date_range: Some(super::request::DateRange {
                    start_date: start_date.clone(),
                    end_date: end_date.clone(),
                }),
                compare_date_range: None,
                ..request.clone()
            })
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

fn resolve_metrics(dataset: &Dataset, requested: &[String]) -> Result<Vec<String>, QueryError> {
    if requested.is_empty() || requested.len() > MAX_METRICS {
        return Err(QueryError::invalid(
            QueryErrorCode::InvalidMetrics,
            "metrics",
            format!("between 1 and {MAX_METRICS} metrics are required"),
        ));
    }
    let mut metrics = requested
        .iter()
        .enumerate()
        .map(|(i, name)| {
            dataset.metric_name(name).map(str::to_owned).ok_or_else(|| {
                QueryError::invalid(
                    QueryErrorCode::UnknownMetric,
                    format!("metrics[{i}]"),
                    format!(
                        "unknown metric `{}` in dataset `{}`; known: {}",
                        truncate(name),
                        dataset.name,
                        known(dataset.def.metrics.keys())
                    ),
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    // Keep the first of each: `[revenue, faturamento]` is one column.
    let mut seen = std::collections::HashSet::with_capacity(metrics.len());
    metrics.retain(|m| seen.insert(m.clone()));
    Ok(metrics)
}

fn resolve_dimensions(dataset: &Dataset, requested: &[String]) -> Result<Vec<String>, QueryError> {
    if requested.len() > MAX_DIMENSIONS {
        return Err(QueryError::invalid(
            QueryErrorCode::InvalidDimensions,
            "dimensions",
            format!("at most {MAX_DIMENSIONS} dimensions are allowed"),
        ));
    }
    let mut dimensions: Vec<String> = Vec::with_capacity(requested.len());
    for (i, name) in requested.iter().enumerate() {
        let canonical = lookup_dimension(dataset, name, &format!("dimensions[{i}]"))?;
        if !dimensions.iter().any(|d| d == canonical) {
            dimensions.push(canonical.to_owned());
        }
    }
    Ok(dimensions)
}

fn parse_date(field: &str, text: &str) -> Result<NaiveDate, QueryError> {
    NaiveDate::parse_from_str(text, "%Y-%m-%d").map_err(|_| {
        QueryError::invalid(
            QueryErrorCode::InvalidDate,
            field,
            format!("`{}` is not a real calendar date in YYYY-MM-DD form", truncate(text)),
        )
    })
}

fn resolve_order(
    dataset: &Dataset,
    request: &QueryRequest,
    metrics: &[String],
    dimensions: &[String],
) -> Result<Vec<ResolvedOrder>, QueryError> {
    let mut order: Vec<ResolvedOrder> = Vec::new();
    for (i, item) in request.order_by.iter().enumerate() {
        let field = format!("order_by[{i}]");
        let canonical = dataset
            .metric_name(&item.field)
            .filter(|m| metrics.iter().any(|x| x == m))
            .or_else(|| {
                dataset
                    .dimension_name(&item.field)
                    .filter(|d| dimensions.iter().any(|x| x == d))
            })
            .ok_or_else(|| {
                QueryError::invalid(
                    QueryErrorCode::InvalidOrderBy,
                    format!("{field}.field"),
                    format!(
                        "`{}` is not one of the requested metrics or dimensions",
                        truncate(&item.field)
                    ),
                )
            })?;
        let descending = match item.direction.as_deref().map(str::to_ascii_lowercase).as_deref() {
            None | Some("asc") => false,
            Some("desc") => true,
            Some(_) => {
                return Err(QueryError::invalid(
                    QueryErrorCode::InvalidOrderBy,
                    format!("{field}.direction"),
                    "direction must be `asc` or `desc`",
                ))
            }
        };
        if !order.iter().any(|o| o.field == canonical) {
            order.push(ResolvedOrder {
                field: canonical.to_owned(),
                descending,
            });
        }
    }
    for dimension in dimensions {
        if !order.iter().any(|o| &o.field == dimension) {
            order.push(ResolvedOrder {
                field: dimension.clone(),
                descending: false,
            });
        }
    }
    Ok(order)
}
