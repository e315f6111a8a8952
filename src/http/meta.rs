//! `GET /analytics/meta`: the datasets, metrics, dimensions and rollups a
//! caller may use, so dashboards and generators discover the model instead
//! of hard-coding it. Any caller that may query may read it.

use axum::extract::State;
use axum::Json;

use crate::http::auth::{AdminTenantParam, Caller};
use crate::model::catalog::Catalog;
use crate::state::AppState;

/// The semantic model as clients may use it (no SQL).
#[utoipa::path(
    get, path = "/analytics/meta", tag = "query",
    params(AdminTenantParam),
    security(("tenant_key" = []), ("admin_token" = []), ()),
    responses(
        (status = 200, description = "Datasets with their metrics, dimensions and rollups", body = Catalog),
        (status = 401, description = "A key is required", body = crate::error::ErrorBody),
    )
)]
pub async fn get_meta(State(state): State<AppState>, _caller: Caller) -> Json<Catalog> {
    Json(state.queries.model().catalog())
}
