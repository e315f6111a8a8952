//! Cache administration for operators: stats, clear by pattern, delete one
//! key, warm. All require the admin token.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use crate::cache::keys;
use crate::cache::redis_store::RedisUnavailable;
use crate::cache::stats::StatsSnapshot;
use crate::cache::ReadMode;
use crate::error::ApiError;
use crate::http::auth::{Admin, CacheActor, Caller};
use crate::http::query::serve;
use crate::model::{QueryRequest, TenantScope};
use crate::state::AppState;
use crate::tenancy::DEFAULT_TENANT;

/// Most queries one warm call runs, so one request cannot queue hours of SQL.
const MAX_WARM_QUERIES: usize = 100;
/// Warm queries run at most this many at a time, to spare the database.
const WARM_CONCURRENCY: usize = 2;

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

/// Most keys a tenant's stats call counts, so the SCAN stays bounded.
const TENANT_KEY_COUNT_LIMIT: u64 = 100_000;

/// Admin: Redis INFO, breaker state, L1 size and this instance's counters.
/// Tenant key: the number of entries in its own namespace.
#[utoipa::path(get, path = "/cache/stats", tag = "cache", security(("admin_token" = [])),
    responses((status = 200, body = CacheStatsResponse), (status = 401), (status = 403)))]
pub async fn get_cache_stats(actor: CacheActor, State(state): State<AppState>) -> Response {
    if let CacheActor::Tenant(tenant) = actor {
        let namespace = keys::tenant_namespace(&state.settings.cache.prefix, &tenant);
        let count = match state.cache.redis() {
            Some(redis) => redis
                .count_matching(&format!("{namespace}*"), TENANT_KEY_COUNT_LIMIT)
                .await
                .ok(),
            None => None,
        };
        let breaker = state.cache.breaker_state();
        return Json(TenantCacheStatsResponse {
            tenant,
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
    let cache = &state.cache;
    let info = cache.redis_info().await;
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
            enabled: state.settings.cache.enabled && state.settings.cache.l1_enabled,
            entries,
            bytes,
            max_bytes: state.settings.cache.l1_max_bytes,
        },
        app: cache.stats().snapshot(),
    }
}

#[derive(Deserialize, utoipa::IntoParams)]
pub struct ClearParams {
    /// Redis glob, confined to the caller's namespace: `*` means every entry
    /// under it, never other keys.
    pub pattern: Option<String>,
    /// Admin only: narrow to one tenant's entries.
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
#[utoipa::path(post, path = "/cache/clear", tag = "cache", params(ClearParams), security(("admin_token" = [])),
    responses((status = 200, body = ClearResponse), (status = 401), (status = 403), (status = 503)))]
pub async fn clear_cache(
    actor: CacheActor,
    State(state): State<AppState>,
    Query(params): Query<ClearParams>,
) -> Result<Json<ClearResponse>, ApiError> {
    let namespace = clear_namespace(&state, &actor, params.tenant.as_deref(), params.dataset.as_deref())?;
    let pattern = keys::confine(&namespace, params.pattern.as_deref());
    let deleted = state.cache.clear(&pattern).await.map_err(redis_unavailable)?;
    tracing::info!(%pattern, deleted, "cache cleared");
    Ok(Json(ClearResponse {
        deleted,
        message: format!(
            "deleted {deleted} Redis entries and this instance's matching L1 entries; \
             other instances' L1 copies expire within {} s",
            state.settings.cache.l1_ttl_seconds
        ),
        pattern,
    }))
}

/// The literal key prefix a clear may touch: a tenant's own namespace, or
/// for the admin the whole cache, narrowed by `tenant` and `dataset`.
fn clear_namespace(
    state: &AppState,
    actor: &CacheActor,
    tenant: Option<&str>,
    dataset: Option<&str>,
) -> Result<String, ApiError> {
    let prefix = &state.settings.cache.prefix;
    let tenant = match (actor, tenant) {
        (CacheActor::Tenant(own), Some(asked)) if asked != own => {
            return Err(ApiError::forbidden("a tenant key acts on its own namespace only").with_field("tenant"));
        }
        (CacheActor::Tenant(own), _) => Some(own.as_str()),
        (CacheActor::Admin, asked) => asked,
    };
    if let Some(tenant) = tenant.filter(|t| !keys::is_safe_segment(t)) {
        return Err(
            ApiError::unprocessable("invalid_tenant", format!("`{tenant}` is not a tenant id")).with_field("tenant"),
        );
    }
    if let Some(dataset) = dataset.filter(|d| !state.model.datasets.contains_key(*d)) {
        return Err(
            ApiError::unprocessable("unknown_dataset", format!("unknown dataset `{dataset}`")).with_field("dataset"),
        );
    }
    Ok(match (tenant, dataset) {
        (Some(tenant), Some(dataset)) => format!("{}{dataset}:", keys::tenant_namespace(prefix, tenant)),
        (Some(tenant), None) => keys::tenant_namespace(prefix, tenant),
        // Datasets are model names (no glob characters), so the literal
        // `{prefix}:` still bounds what this can match.
        (None, Some(dataset)) => format!("{prefix}:query:*:{dataset}:"),
        (None, None) => keys::namespace(prefix),
    })
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
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct DeleteKeyResponse {
    pub deleted: u64,
    pub key: String,
}

/// Deletes one entry by its full key.
#[utoipa::path(delete, path = "/cache/key/{key}", tag = "cache", security(("admin_token" = [])),
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
#[utoipa::path(delete, path = "/cache/key", tag = "cache", params(DeleteKeyParams), security(("admin_token" = [])),
    responses((status = 200, body = DeleteKeyResponse), (status = 401), (status = 403), (status = 422)))]
pub async fn delete_cache_key_by_query(
    actor: CacheActor,
    State(state): State<AppState>,
    Query(params): Query<DeleteKeyParams>,
) -> Result<Json<DeleteKeyResponse>, ApiError> {
    let key = match (params.key, params.prefix, params.data) {
        (Some(key), _, _) => key,
        (None, prefix, Some(data)) => {
            let configured = &state.settings.cache.prefix;
            if let Some(prefix) = prefix.filter(|p| p != configured && *p != format!("{configured}:query")) {
                return Err(ApiError::unprocessable(
                    "invalid_prefix",
                    format!("prefix `{prefix}` is not this cache's prefix `{configured}`"),
                )
                .with_field("prefix"));
            }
            let request = QueryRequest::from_json(data.as_bytes()).map_err(|e| ApiError::from(e).with_field("data"))?;
            let tenant = TenantScope::unscoped(DEFAULT_TENANT);
            state
                .model
                .compile(&state.compile_context(), &tenant, &request)?
                .cache_key
        }
        (None, _, None) => {
            return Err(ApiError::bad_request(
                "invalid_request",
                "give `key`, or `prefix` and `data`",
            ));
        }
    };
    delete_one(&state, &actor, key).await
}

async fn delete_one(state: &AppState, actor: &CacheActor, key: String) -> Result<Json<DeleteKeyResponse>, ApiError> {
    let namespace = match actor {
        CacheActor::Admin => keys::namespace(&state.settings.cache.prefix),
        CacheActor::Tenant(own) => keys::tenant_namespace(&state.settings.cache.prefix, own),
    };
    if !keys::within(&namespace, &key) {
        return Err(ApiError::unprocessable(
            "invalid_key",
            format!("key must start with `{namespace}`: keys outside the caller's namespace cannot be deleted"),
        )
        .with_field("key"));
    }
    let deleted = state.cache.delete_key(&key).await.map_err(redis_unavailable)?;
    Ok(Json(DeleteKeyResponse { deleted, key }))
}

#[derive(Deserialize, utoipa::IntoParams)]
pub struct WarmParams {
    /// Run the queries as this tenant (with its row scope); `default` otherwise.
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
    pub code: String,
    pub message: String,
}

/// Runs a list of queries (the body, or `cache.warm_queries` without one) so
/// their results are cached.
#[utoipa::path(post, path = "/cache/warm", tag = "cache", params(WarmParams), security(("admin_token" = [])),
    request_body(content = Vec<QueryRequest>, description = "Queries to warm; empty body = configured list"),
    responses((status = 200, body = WarmResponse), (status = 400), (status = 401), (status = 403)))]
pub async fn warm_cache(
    _admin: Admin,
    State(state): State<AppState>,
    Query(params): Query<WarmParams>,
    body: Bytes,
) -> Result<Json<WarmResponse>, ApiError> {
    let tenant_id = params.tenant.as_deref().unwrap_or(DEFAULT_TENANT);
    let tenant = state.auth.tenants.get(tenant_id).map(|t| t.scope).ok_or_else(|| {
        ApiError::unprocessable("unknown_tenant", format!("tenant `{tenant_id}` is not configured"))
            .with_field("tenant")
    })?;
    let queries: Vec<serde_json::Value> = if body.iter().all(u8::is_ascii_whitespace) {
        state.settings.cache.warm_queries.clone()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ApiError::bad_request(
                "malformed_json",
                format!("warm body must be a JSON array of queries: {e}"),
            )
        })?
    };
    if queries.len() > MAX_WARM_QUERIES {
        return Err(ApiError::unprocessable(
            "too_many_queries",
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
                        .map_err(|e| ApiError::bad_request("invalid_request", e.to_string()))?;
                    let caller = Caller::internal(tenant);
                    serve(&state, &caller, &request, ReadMode::Normal).await.map(|_| ())
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
            outcome.err().map(|e| WarmFailure {
                index,
                code: e.code.to_owned(),
                message: e.message,
            })
        })
        .collect();
    failed.sort_by_key(|f| f.index);
    Ok(Json(WarmResponse {
        warmed: total - failed.len(),
        failed,
    }))
}

fn redis_unavailable(error: RedisUnavailable) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "cache_unavailable",
        format!("{error}; this instance's L1 was cleared, Redis entries were not"),
    )
    .with_retry_after(1)
}
