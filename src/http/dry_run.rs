//! `POST /analytics/sql`: what a query would do, without running it: the
//! statement and its parameters, the rollup (or raw table) it would read,
//! its cache key, TTL and whether it is cached now. The admin sees any
//! tenant's plan (`?tenant=`); a tenant key only its own scope.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;

use crate::analytics::Plan;
use crate::error::{ApiError, ErrorCode};
use crate::http::auth::{AdminTenantParam, Caller};
use crate::http::query::is_json;
use crate::model::QueryRequest;
use crate::state::AppState;

/// Compiles a query (same body as `/analytics/query`) and explains it.
#[utoipa::path(
    post, path = "/analytics/sql", tag = "query",
    params(AdminTenantParam),
    request_body = QueryRequest,
    security(("tenant_key" = []), ("admin_token" = []), ()),
    responses(
        (status = 200, description = "The statement, its parameters, source and cache state", body = Plan),
        (status = 400, description = "Malformed JSON or wrong types", body = crate::error::ErrorBody),
        (status = 415, description = "Body is not JSON", body = crate::error::ErrorBody),
        (status = 422, description = "Unknown metric, dimension, operator; bad values", body = crate::error::ErrorBody),
    )
)]
pub async fn explain_query(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Plan>, ApiError> {
    if !is_json(&headers) {
        return Err(ApiError::new(
            ErrorCode::UnsupportedMediaType,
            "send the query as a JSON body with `Content-Type: application/json`",
        ));
    }
    let request = QueryRequest::from_json(&body)?;
    Ok(Json(state.queries.plan(&caller.tenant, &request).await?))
}
