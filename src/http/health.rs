//! Health endpoints: `/health` (database + cache), `/health/live`, `/health/ready`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Serialize;

use crate::db;
use crate::state::AppState;

#[derive(Serialize, utoipa::ToSchema)]
pub struct HealthResponse {
    /// `ok`, `degraded` (cache down, still serving) or `down` (database down).
    pub status: &'static str,
    pub database: ComponentHealth,
    pub cache: CacheHealth,
    pub version: &'static str,
    pub uptime_seconds: u64,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ComponentHealth {
    /// `up` or `down`.
    pub status: &'static str,
    pub latency_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct CacheHealth {
    /// Redis `up`, `down` or `disabled`.
    pub redis: &'static str,
    /// Circuit breaker `closed`, `open` or `disabled`.
    pub breaker: &'static str,
    pub latency_ms: Option<f64>,
    pub l1_enabled: bool,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct SimpleStatus {
    pub status: &'static str,
}

fn millis(duration: std::time::Duration) -> f64 {
    (duration.as_secs_f64() * 1e6).round() / 1e3
}

/// Database and cache status. 503 only when the database is down; a Redis
/// outage is `degraded` with 200, because queries are still answered.
#[utoipa::path(get, path = "/health", tag = "health", responses(
    (status = 200, description = "Serving (ok or degraded)", body = HealthResponse),
    (status = 503, description = "Database down", body = HealthResponse),
))]
pub async fn get_health(State(state): State<AppState>) -> (StatusCode, Json<HealthResponse>) {
    let (database, cache) = tokio::join!(database_health(&state), cache_health(&state));
    let (code, status) = if database.status != "up" {
        (StatusCode::SERVICE_UNAVAILABLE, "down")
    } else if cache.redis == "down" {
        (StatusCode::OK, "degraded")
    } else {
        (StatusCode::OK, "ok")
    };
    let body = HealthResponse {
        status,
        database,
        cache,
        version: env!("CARGO_PKG_VERSION"),
        uptime_seconds: state.started_at.elapsed().as_secs(),
    };
    (code, Json(body))
}

async fn database_health(state: &AppState) -> ComponentHealth {
    match db::ping(&state.db).await {
        Ok(latency) => ComponentHealth {
            status: "up",
            latency_ms: Some(millis(latency)),
            error: None,
        },
        Err(error) => ComponentHealth {
            status: "down",
            latency_ms: None,
            error: Some(match error {
                db::DbError::Timeout => "timeout".into(),
                db::DbError::Unavailable(_) => "unavailable".into(),
                db::DbError::Query(_) => "query failed".into(),
            }),
        },
    }
}

pub async fn cache_health(state: &AppState) -> CacheHealth {
    let l1_enabled = state.settings.cache.enabled && state.settings.cache.l1_enabled;
    let Some(redis) = state.cache.redis() else {
        return CacheHealth {
            redis: "disabled",
            breaker: "disabled",
            latency_ms: None,
            l1_enabled,
        };
    };
    // While the breaker is open the probe is already pinging; don't add load.
    let ping = if redis.breaker().is_open() {
        None
    } else {
        redis.ping_fresh().await.ok()
    };
    CacheHealth {
        redis: if ping.is_some() { "up" } else { "down" },
        breaker: redis.breaker().state_name(),
        latency_ms: ping.map(millis),
        l1_enabled,
    }
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
    match db::ping(&state.db).await {
        Ok(_) => (StatusCode::OK, Json(SimpleStatus { status: "ready" })),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(SimpleStatus { status: "unavailable" }),
        ),
    }
}
