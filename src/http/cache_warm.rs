//! `POST /cache/warm`: runs a list of queries through the query service so
//! their results are cached before dashboards ask (admin token).

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::Json;
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use crate::analytics::ReadOptions;
use crate::cache::{Accept, ReadMode};
use crate::error::{ApiError, ErrorCode};
use crate::http::auth::{configured_tenant, Admin};
use crate::model::QueryRequest;
use crate::state::AppState;

/// Most queries one warm call runs, so one request cannot queue hours of SQL.
const MAX_WARM_QUERIES: usize = 100;
/// Warm queries run at most this many at a time, to spare the database.
const WARM_CONCURRENCY: usize = 2;

#[derive(Deserialize, utoipa::IntoParams)]
pub struct WarmParams {
    /// Run the queries as this tenant (with its row scope); `default` otherwise.
    #[param(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    pub tenant: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct WarmResponse {
    pub warmed: usize,
    pub failed: Vec<WarmFailure>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct WarmFailure {
    /// Position in the list of queries.
    pub index: usize,
    pub code: &'static str,
    pub message: String,
}

/// Runs a list of queries (the body, or `cache.warm_queries` without one) so
/// their results are cached.
#[utoipa::path(post, path = "/cache/warm", tag = "cache", params(WarmParams), security(("admin_token" = [])),
    request_body(content = Vec<QueryRequest>, description = "Queries to warm (at most 100); an empty body warms the configured `cache.warm_queries`"),
    responses((status = 200, body = WarmResponse), (status = 400), (status = 401), (status = 403)))]
pub async fn warm_cache(
    _admin: Admin,
    State(state): State<AppState>,
    Query(params): Query<WarmParams>,
    body: Bytes,
) -> Result<Json<WarmResponse>, ApiError> {
    let tenant = configured_tenant(&state, params.tenant.as_deref())?.scope;
    let queries: Vec<serde_json::Value> = if body.iter().all(u8::is_ascii_whitespace) {
        state.settings.cache.warm_queries.clone()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ApiError::new(
                ErrorCode::MalformedJson,
                format!("warm body must be a JSON array of queries: {e}"),
            )
        })?
    };
    if queries.len() > MAX_WARM_QUERIES {
        return Err(ApiError::new(
            ErrorCode::TooManyQueries,
            format!("at most {MAX_WARM_QUERIES} queries per warm call"),
        ));
    }
    let total = queries.len();
    let results: Vec<(usize, Result<(), ApiError>)> = futures::stream::iter(queries.into_iter().enumerate())
        .map(|(index, query)| {
            let state = state.clone();
            let tenant = tenant.clone();
            async move {
                let outcome = async {
                    let request: QueryRequest = serde_json::from_value(query)
                        .map_err(|e| ApiError::new(ErrorCode::InvalidRequest, e.to_string()))?;
                    state
                        .queries
                        .run(
                            &tenant,
                            &request,
                            ReadOptions {
                                mode: ReadMode::Normal,
                                accept: Accept::default(),
                            },
                        )
                        .await
                        .map(|_| ())
                        .map_err(ApiError::from)
                }
                .await;
                (index, outcome)
            }
        })
        .buffer_unordered(WARM_CONCURRENCY)
        .collect()
        .await;
    let mut failed: Vec<WarmFailure> = results
        .into_iter()
        .filter_map(|(index, outcome)| {
            outcome.err().map(|e| {
                if let Some(cause) = &e.cause {
                    tracing::warn!(index, code = e.code.as_str(), %cause, "warm query failed");
                }
                WarmFailure {
                    index,
                    code: e.code.as_str(),
                    message: e.message,
                }
            })
        })
        .collect();
    failed.sort_by_key(|f| f.index);
    Ok(Json(WarmResponse {
        warmed: total - failed.len(),
        failed,
    }))
}
