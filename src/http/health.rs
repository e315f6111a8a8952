//! Health endpoints: `/health` (database + cache), `/health/live`,
//! `/health/ready`; the checks themselves are `crate::health`'s.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Serialize;

use crate::freshness::FreshnessHealth;
use crate::health::{CacheHealth, ComponentHealth};
use crate::state::AppState;

#[derive(Serialize, utoipa::ToSchema)]
pub struct HealthResponse {
    /// `ok`, `degraded` (cache down (local or remote Redis, or no Redis replica it reads), a rollup failing, a read replica not up
    /// or the model broken by a schema change; still serving) or `down`
    /// (database down).
    pub status: &'static str,
    pub database: ComponentHealth,
    /// Each read replica (`[databases.<name>]`): `status`, `lag_seconds`
    /// and whether its datasets read it (`routed`); one not `up` makes the
    /// status `degraded` (its datasets read the primary).
    pub databases: std::collections::BTreeMap<String, crate::db::replica::ReplicaHealth>,
    pub cache: CacheHealth,
    /// Change capture and the L1 sync between instances.
    pub freshness: FreshnessHealth,
    /// Rollups whose refresh fails (their queries go to the raw table,
    /// exact but slower): `degraded` while any.
    pub rollups_failing: Vec<String>,
    /// `ok`, or the model field the database refuses since the schema
    /// changed (its queries answer `model_error`): `degraded` meanwhile.
    pub model: String,
    pub version: &'static str,
    pub uptime_seconds: u64,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct SimpleStatus {
    pub status: &'static str,
}

/// Database and cache status. 503 only when the database is down; a Redis
/// outage is `degraded` with 200, because queries are still answered.
#[utoipa::path(get, path = "/health", tag = "health", responses(
    (status = 200, description = "Serving (ok or degraded)", body = HealthResponse),
    (status = 503, description = "Database down", body = HealthResponse),
))]
pub async fn get_health(State(state): State<AppState>) -> (StatusCode, Json<HealthResponse>) {
    let (database, cache) = tokio::join!(state.health.database(), state.health.cache());
    let rollups_failing = state.queries.rollups().failing();
    let model_broken = state.queries.model_broken();
    let databases = state.health.replicas();
    let replica_down = databases.values().any(|r| r.status != "up");
    let (code, status) = if !database.is_up() {
        (StatusCode::SERVICE_UNAVAILABLE, "down")
    } else if cache.redis == "down"
        || cache.remote.as_ref().is_some_and(|r| r.redis == "down")
        || cache.replicas.as_ref().is_some_and(|r| r.redis == "down")
        || !rollups_failing.is_empty()
        || model_broken.is_some()
        || replica_down
    {
        (StatusCode::OK, "degraded")
    } else {
        (StatusCode::OK, "ok")
    };
    let body = HealthResponse {
        status,
        database,
        databases,
        cache,
        freshness: state.freshness.health(),
        rollups_failing,
        model: model_broken.unwrap_or_else(|| "ok".into()),
        version: env!("CARGO_PKG_VERSION"),
        uptime_seconds: state.started_at.elapsed().as_secs(),
    };
    (code, Json(body))
}

/// Liveness: the process answers. No I/O.
#[utoipa::path(get, path = "/health/live", tag = "health", responses((status = 200, body = SimpleStatus)))]
pub async fn get_live() -> Json<SimpleStatus> {
    Json(SimpleStatus { status: "ok" })
}

/// Readiness: the database answers, so this instance can serve queries.
#[utoipa::path(get, path = "/health/ready", tag = "health", responses(
    (status = 200, body = SimpleStatus), (status = 503, body = SimpleStatus)))]
pub async fn get_ready(State(state): State<AppState>) -> (StatusCode, Json<SimpleStatus>) {
    if state.health.database().await.is_up() {
        (StatusCode::OK, Json(SimpleStatus { status: "ready" }))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(SimpleStatus { status: "unavailable" }),
        )
    }
}
