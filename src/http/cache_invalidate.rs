//! `POST /cache/invalidate`: for writers that bypass the capture triggers
//! (an ETL loading a replica, another system): invalidates what a change of
//! a dataset can affect, in Redis and in every instance's L1. The admin acts
//! on every tenant (or one, with `tenant`); a tenant key on its own entries.

use std::collections::{BTreeMap, BTreeSet};

use axum::extract::State;
use axum::Json;
use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::cache::keys::Owner;
use crate::error::{ApiError, ErrorCode};
use crate::http::auth::CacheActor;
use crate::model::freshness::Change;
use crate::state::AppState;

/// Most values one dimension may list.
const MAX_VALUES: usize = 1_000;

/// What changed. Without dates, the whole dataset; without `values`, every
/// value of the tracked dimensions.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InvalidateRequest {
    /// The dataset that changed; the model's default when absent.
    pub dataset: Option<String>,
    /// First local day changed (`YYYY-MM-DD`), with `end_date`.
    pub start_date: Option<String>,
    /// Last local day changed, inclusive.
    pub end_date: Option<String>,
    /// Tracked dimension -> the values changed rows had, e.g.
    /// `{"channel_id": [2, 3]}`.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub values: BTreeMap<String, Value>,
    /// Admin only: just this tenant's entries.
    #[schema(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    pub tenant: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct InvalidateResponse {
    pub dataset: String,
    /// The tenant whose entries were invalidated; absent for all tenants.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    pub message: String,
}

/// Invalidates the entries a change can affect, on every instance.
#[utoipa::path(post, path = "/cache/invalidate", tag = "cache", request_body = InvalidateRequest,
    security(("admin_token" = []), ("tenant_key" = [])),
    responses((status = 200, body = InvalidateResponse), (status = 400), (status = 401), (status = 403), (status = 422)))]
pub async fn invalidate_cache(
    actor: CacheActor,
    State(state): State<AppState>,
    body: axum::body::Bytes,
) -> Result<Json<InvalidateResponse>, ApiError> {
    let request: InvalidateRequest = serde_json::from_slice(&body).map_err(|e| {
        let code = if e.is_syntax() || e.is_eof() {
            ErrorCode::MalformedJson
        } else {
            ErrorCode::InvalidRequest
        };
        ApiError::new(code, format!("invalidate body: {e}"))
    })?;
    let model = state.queries.model();
    let dataset = model.dataset(request.dataset.as_deref()).ok_or_else(|| {
        ApiError::new(
            ErrorCode::UnknownDataset,
            format!("unknown dataset `{}`", request.dataset.as_deref().unwrap_or_default()),
        )
        .with_field("dataset")
    })?;
    // A tenant key acts on its own entries only (the key space's rule).
    let tenant = match actor.owner() {
        Owner::Admin => {
            if let Some(tenant) = &request.tenant {
                state.queries.keys().scope(Owner::Admin, Some(tenant), None)?;
            }
            request.tenant.clone()
        }
        owner @ Owner::Tenant(own) => {
            state.queries.keys().scope(owner, request.tenant.as_deref(), None)?;
            Some(own.to_owned())
        }
    };
    let span = match (&request.start_date, &request.end_date) {
        (None, None) => None,
        (Some(start), Some(end)) => {
            let start = day("start_date", start)?;
            let end = day("end_date", end)?;
            if start > end {
                return Err(ApiError::new(
                    ErrorCode::InvalidDateRange,
                    format!("start_date {start} is after end_date {end}"),
                )
                .with_field("start_date"));
            }
            Some((start, end))
        }
        _ => {
            return Err(ApiError::new(
                ErrorCode::InvalidDateRange,
                "give both start_date and end_date, or neither",
            )
            .with_field("start_date"))
        }
    };
    let mut values = BTreeMap::new();
    for (name, given) in &request.values {
        let field = format!("values.{name}");
        let canonical = dataset
            .dimension_name(name)
            .filter(|d| dataset.tracked.contains_key(*d))
            .ok_or_else(|| {
                ApiError::new(
                    ErrorCode::InvalidFilter,
                    format!(
                        "`{name}` is not a tracked dimension of `{}`; tracked: {}",
                        dataset.name,
                        dataset.tracked.keys().cloned().collect::<Vec<_>>().join(", ")
                    ),
                )
                .with_field(field.clone())
            })?;
        values.insert(canonical.to_owned(), Some(texts(given, &field)?));
    }
    let change = Change { span, values };
    state
        .freshness
        .invalidate(&dataset.name, tenant.as_deref(), &change)
        .await;
    Ok(Json(InvalidateResponse {
        dataset: dataset.name.clone(),
        message: match &tenant {
            Some(t) => format!(
                "invalidated tenant `{t}`'s entries of `{}` that the change can affect",
                dataset.name
            ),
            None => format!(
                "invalidated the entries of `{}` that the change can affect",
                dataset.name
            ),
        },
        tenant,
    }))
}

fn day(field: &str, text: &str) -> Result<NaiveDate, ApiError> {
    NaiveDate::parse_from_str(text, "%Y-%m-%d").map_err(|_| {
        ApiError::new(
            ErrorCode::InvalidDate,
            format!("`{field}` must be a date in YYYY-MM-DD form"),
        )
        .with_field(field)
    })
}

/// A scalar or a list of integers or strings, as the text the triggers report.
fn texts(value: &Value, field: &str) -> Result<BTreeSet<String>, ApiError> {
    let list = match value {
        Value::Array(items) => items.as_slice(),
        single => std::slice::from_ref(single),
    };
    if list.is_empty() || list.len() > MAX_VALUES {
        return Err(
            ApiError::new(ErrorCode::InvalidFilterValue, format!("give 1 to {MAX_VALUES} values")).with_field(field),
        );
    }
    list.iter()
        .map(|item| match item {
            Value::Number(n) if n.is_i64() => Ok(n.to_string()),
            Value::String(s) if !s.contains('\0') => Ok(s.clone()),
            _ => Err(
                ApiError::new(ErrorCode::InvalidFilterValue, "values must be integers or strings").with_field(field),
            ),
        })
        .collect()
}
