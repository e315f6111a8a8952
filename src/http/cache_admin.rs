//! Cache administration: stats, clear by pattern, delete one entry. The
//! admin token acts on every tenant's entries; a tenant key on its own. Which
//! keys each may touch is the key space's rule (`cache::keys`).

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};

use crate::cache::remote::RemoteCounters;
use crate::cache::stats::StatsSnapshot;
use crate::error::{ApiError, ErrorCode};
use crate::http::auth::{configured_tenant, CacheActor};
use crate::model::QueryRequest;
use crate::rollups::RollupStatus;
use crate::state::AppState;

#[derive(Serialize, utoipa::ToSchema)]
pub struct CacheStatsResponse {
    /// `connected`, `degraded` (breaker open: L1 and database serve) or `disconnected`.
    pub status: &'static str,
    pub memory_used_mb: Option<f64>,
    pub total_keys: Option<u64>,
    /// Redis' own keyspace hit rate.
    pub hit_rate: Option<f64>,
    pub connected_clients: Option<u64>,
    pub uptime_seconds: Option<u64>,
    pub redis_version: Option<String>,
    /// `closed`, `open` or `disabled`.
    pub breaker: &'static str,
    pub l1: L1Stats,
    /// This instance's counters.
    pub app: StatsSnapshot,
    /// The remote Redis of `[redis.remote]`, when one is configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote: Option<RemoteStats>,
    /// Per rollup: state, rows, size, last refresh, lag, share of computed
    /// answers it served (this instance).
    pub rollups: Vec<RollupStatus>,
}

/// The remote Redis (`[redis.remote]`) as `/cache/stats` reports it.
#[derive(Serialize, utoipa::ToSchema)]
pub struct RemoteStats {
    /// `connected`, `degraded` (its breaker open) or `disconnected`.
    pub status: &'static str,
    /// Its own circuit breaker: `closed` or `open`.
    pub breaker: &'static str,
    pub memory_used_mb: Option<f64>,
    pub total_keys: Option<u64>,
    /// This instance's remote hits, errors and writes.
    #[serde(flatten)]
    pub app: RemoteCounters,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct L1Stats {
    pub enabled: bool,
    pub entries: u64,
    pub bytes: u64,
    pub max_bytes: u64,
}

/// What a tenant key sees of the cache: its own namespace only.
#[derive(Serialize, utoipa::ToSchema)]
pub struct TenantCacheStatsResponse {
    pub tenant: String,
    /// `connected`, `degraded` or `disconnected`, as for the admin.
    pub status: &'static str,
    /// Entries in this tenant's namespace (counted up to 100000).
    pub keys: Option<u64>,
    pub breaker: &'static str,
}

/// What `/cache/stats` answers: the admin's view, or a tenant key's (for
/// the OpenAPI document; the handler renders either struct).
#[derive(utoipa::ToSchema)]
#[serde(untagged)]
#[allow(dead_code)]
pub enum CacheStats {
    Admin(Box<CacheStatsResponse>),
    Tenant(TenantCacheStatsResponse),
}

/// Most keys a tenant's stats call counts, so the SCAN stays bounded.
const TENANT_KEY_COUNT_LIMIT: u64 = 100_000;

/// Admin: Redis INFO, breaker state, L1 size and this instance's counters.
/// Tenant key: the number of entries in its own namespace.
#[utoipa::path(get, path = "/cache/stats", tag = "cache", security(("admin_token" = []), ("tenant_key" = [])),
    responses((status = 200, body = CacheStats), (status = 401), (status = 403)))]
pub async fn get_cache_stats(actor: CacheActor, State(state): State<AppState>) -> Response {
    if let CacheActor::Tenant(tenant) = &actor {
        let keys = state.queries.keys();
        let count = match keys.scope(actor.owner(), None, None) {
            Ok(scope) => {
                let pattern = keys.pattern(&scope, None);
                state.queries.cache().count(&pattern, TENANT_KEY_COUNT_LIMIT).await.ok()
            }
            Err(_) => None,
        };
        let breaker = state.queries.cache().breaker_state();
        return Json(TenantCacheStatsResponse {
            tenant: tenant.clone(),
            status: redis_status(count.is_some(), breaker),
            keys: count,
            breaker,
        })
        .into_response();
    }
    Json(admin_stats(&state).await).into_response()
}

fn redis_status(reachable: bool, breaker: &str) -> &'static str {
    match (reachable, breaker) {
        (true, _) => "connected",
        (false, "open") => "degraded",
        (false, _) => "disconnected",
    }
}

async fn admin_stats(state: &AppState) -> CacheStatsResponse {
    let cache = state.queries.cache();
    let (info, remote_info) = tokio::join!(cache.redis_info(), cache.remote_info());
    let remote = match (remote_info, cache.remote_breaker_state(), cache.remote_counters()) {
        (Some(remote_info), Some(breaker), Some(app)) => Some(RemoteStats {
            status: redis_status(remote_info.is_ok(), breaker),
            breaker,
            memory_used_mb: remote_info.as_ref().ok().map(|i| i.memory_used_mb),
            total_keys: remote_info.as_ref().ok().map(|i| i.total_keys),
            app,
        }),
        _ => None,
    };
    let (entries, bytes) = cache.l1_size().await;
    let status = redis_status(info.is_ok(), cache.breaker_state());
    let info = info.ok();
    CacheStatsResponse {
        status,
        memory_used_mb: info.as_ref().map(|i| i.memory_used_mb),
        total_keys: info.as_ref().map(|i| i.total_keys),
        hit_rate: info.as_ref().map(|i| i.hit_rate),
        connected_clients: info.as_ref().map(|i| i.connected_clients),
        uptime_seconds: info.as_ref().map(|i| i.uptime_seconds),
        redis_version: info.map(|i| i.version),
        breaker: cache.breaker_state(),
        l1: L1Stats {
            enabled: cache.l1_enabled(),
            entries,
            bytes,
            max_bytes: state.settings.cache.l1_max_bytes,
        },
        app: cache.stats().snapshot(),
        remote,
        rollups: state.queries.rollups().status(),
    }
}

#[derive(Deserialize, utoipa::IntoParams)]
pub struct ClearParams {
    /// Redis glob, confined to the caller's namespace: `*` means every entry
    /// under it, never other keys.
    pub pattern: Option<String>,
    /// Admin only: narrow to one tenant's entries.
    #[param(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    pub tenant: Option<String>,
    /// Narrow to one dataset's entries.
    pub dataset: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ClearResponse {
    /// Redis keys deleted.
    pub deleted: u64,
    /// The pattern actually applied (confined to the namespace).
    pub pattern: String,
    pub message: String,
}

/// Deletes matching entries with SCAN + UNLINK (never KEYS), and this
/// instance's matching L1 entries.
#[utoipa::path(post, path = "/cache/clear", tag = "cache", params(ClearParams), security(("admin_token" = []), ("tenant_key" = [])),
    responses((status = 200, body = ClearResponse), (status = 401), (status = 403), (status = 503)))]
pub async fn clear_cache(
    actor: CacheActor,
    State(state): State<AppState>,
    Query(params): Query<ClearParams>,
) -> Result<Json<ClearResponse>, ApiError> {
    if let Some(dataset) = params.dataset.as_deref() {
        known_dataset(&state, dataset)?;
    }
    let keys = state.queries.keys();
    let scope = keys.scope(actor.owner(), params.tenant.as_deref(), params.dataset.as_deref())?;
    let pattern = keys.pattern(&scope, params.pattern.as_deref());
    let deleted = state.queries.cache().clear(&pattern).await?;
    state.freshness.broadcast_clear(&pattern).await;
    tracing::info!(%pattern, deleted, "cache cleared");
    Ok(Json(ClearResponse {
        deleted,
        message: format!(
            "deleted {deleted} Redis entries and the matching L1 entries of every instance \
             listening on Redis (any other copy expires within {} s)",
            state.settings.cache.l1_ttl_seconds
        ),
        pattern,
    }))
}

fn known_dataset(state: &AppState, dataset: &str) -> Result<(), ApiError> {
    if state.queries.model().datasets.contains_key(dataset) {
        Ok(())
    } else {
        Err(ApiError::new(ErrorCode::UnknownDataset, format!("unknown dataset `{dataset}`")).with_field("dataset"))
    }
}

#[derive(Deserialize, utoipa::IntoParams)]
pub struct DeleteKeyParams {
    /// A full cache key.
    pub key: Option<String>,
    /// With `data`: the key prefix of the original runbook (must be the
    /// configured prefix, optionally followed by `:query`).
    pub prefix: Option<String>,
    /// With `prefix`: the query JSON whose entry to delete.
    pub data: Option<String>,
    /// With `data`: whose entry (admin only; a tenant key names its own).
    /// The key depends on the tenant and its row scope; `default` when absent.
    #[param(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    pub tenant: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct DeleteKeyResponse {
    pub deleted: u64,
    pub key: String,
}

/// Deletes one entry by its full key.
#[utoipa::path(delete, path = "/cache/key/{key}", tag = "cache", security(("admin_token" = []), ("tenant_key" = [])),
    params(("key" = String, Path, description = "Full cache key")),
    responses((status = 200, body = DeleteKeyResponse), (status = 401), (status = 403), (status = 422)))]
pub async fn delete_cache_key(
    actor: CacheActor,
    State(state): State<AppState>,
    Path(key): Path<String>,
) -> Result<Json<DeleteKeyResponse>, ApiError> {
    delete_one(&state, &actor, key).await
}

/// Deletes one entry named by `?key=`, or by `?prefix=&data=<query JSON>`.
#[utoipa::path(delete, path = "/cache/key", tag = "cache", params(DeleteKeyParams), security(("admin_token" = []), ("tenant_key" = [])),
    responses((status = 200, body = DeleteKeyResponse), (status = 401), (status = 403), (status = 422)))]
pub async fn delete_cache_key_by_query(
    actor: CacheActor,
    State(state): State<AppState>,
    Query(params): Query<DeleteKeyParams>,
) -> Result<Json<DeleteKeyResponse>, ApiError> {
    let key = match (params.key, params.prefix, params.data) {
        (Some(key), _, _) => key,
        (None, prefix, Some(data)) => {
            let configured = state.queries.keys().prefix();
            if let Some(prefix) = prefix.filter(|p| p != configured && *p != format!("{configured}:query")) {
                return Err(ApiError::new(
                    ErrorCode::InvalidPrefix,
                    format!("prefix `{prefix}` is not this cache's prefix `{configured}`"),
                )
                .with_field("prefix"));
            }
            let request = QueryRequest::from_json(data.as_bytes()).map_err(|e| ApiError::from(e).with_field("data"))?;
            let tenant = match &actor {
                CacheActor::Admin => configured_tenant(&state, params.tenant.as_deref())?,
                CacheActor::Tenant(own) => {
                    // The scope check refuses a tenant naming another one.
                    state
                        .queries
                        .keys()
                        .scope(actor.owner(), params.tenant.as_deref(), None)?;
                    configured_tenant(&state, Some(own))?
                }
            };
            state.queries.key_for(&tenant.scope, &request)?
        }
        (None, _, None) => {
            return Err(ApiError::new(
                ErrorCode::InvalidRequest,
                "give `key`, or `prefix` and `data`",
            ));
        }
    };
    delete_one(&state, &actor, key).await
}

async fn delete_one(state: &AppState, actor: &CacheActor, key: String) -> Result<Json<DeleteKeyResponse>, ApiError> {
    state.queries.keys().check_delete(actor.owner(), &key)?;
    let deleted = state.queries.cache().delete_key(&key).await?;
    Ok(Json(DeleteKeyResponse { deleted, key }))
}
