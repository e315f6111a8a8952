//! Authentication extractors: the admin token for cache administration, and
//! the calling tenant (with its rate limit) for queries.

use axum::extract::FromRequestParts;
use axum::http::{header, request::Parts};

use crate::cache::keys::Owner;
use crate::error::{ApiError, ErrorCode};
use crate::model::TenantScope;
use crate::state::AppState;
use crate::tenancy::rate_limit::Decision;
use crate::tenancy::{AuthError, Identity, Tenant, DEFAULT_TENANT};

/// Proof that the request carried the admin token.
pub struct Admin;

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        if !state.auth.admin_configured() {
            return Err(ApiError::admin_disabled());
        }
        let presented = bearer_token(parts)
            .ok_or_else(|| ApiError::unauthorized("missing `Authorization: Bearer <ADMIN_TOKEN>` header"))?;
        if state.auth.is_admin_token(presented) {
            Ok(Admin)
        } else {
            Err(ApiError::unauthorized("invalid admin token"))
        }
    }
}

/// Who a cache-administration request acts for: the admin (any tenant,
/// optionally narrowed with `?tenant=`), or a tenant (its own namespace only).
pub enum CacheActor {
    Admin,
    Tenant(String),
}

impl CacheActor {
    /// Whose entries this actor may act on, in the key space's terms.
    pub fn owner(&self) -> Owner<'_> {
        match self {
            Self::Admin => Owner::Admin,
            Self::Tenant(tenant) => Owner::Tenant(tenant),
        }
    }
}

impl FromRequestParts<AppState> for CacheActor {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let Some(credential) = credential(parts) else {
            if !state.auth.admin_configured() {
                return Err(ApiError::admin_disabled());
            }
            return Err(ApiError::unauthorized(
                "send the admin token or a tenant API key as `Authorization: Bearer <token>`",
            ));
        };
        match state.auth.identify(Some(credential)).await {
            Ok(Identity::Admin) => Ok(CacheActor::Admin),
            Ok(Identity::Tenant(tenant)) => Ok(CacheActor::Tenant(tenant.scope.id)),
            // Not a tenant key, and no admin token could match: say what to configure.
            Err(AuthError::Invalid) if !state.auth.admin_configured() => Err(ApiError::admin_disabled()),
            Err(error) => Err(error.into()),
        }
    }
}

/// Who is calling `/analytics/query`, after authentication and rate limiting.
pub struct Caller {
    pub tenant: TenantScope,
    /// The rate-limit verdict, echoed in response headers.
    pub rate: Option<Decision>,
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let identity = state.auth.identify(credential(parts)).await?;
        let tenant = match identity {
            // The admin may query as any tenant, with that tenant's scope.
            Identity::Admin => {
                let id = query_param(parts, "tenant");
                configured_tenant(state, id.as_deref())?
            }
            Identity::Tenant(tenant) => tenant,
        };
        let rate = match tenant.rate_limit_per_minute {
            Some(limit) => Some(state.rate_limiter.check(&tenant.scope.id, limit).await),
            None => None,
        };
        if let Some(decision) = rate.filter(|d| !d.allowed) {
            let label = if state.settings.rate_limit.per_tenant_metrics {
                tenant.scope.id.clone()
            } else {
                "all".to_owned()
            };
            metrics::counter!("analytics_ratelimit_rejections_total", "tenant" => label).increment(1);
            return Err(ApiError::rate_limited(&decision));
        }
        Ok(Caller {
            tenant: tenant.scope,
            rate,
        })
    }
}

/// `?tenant=` as [`Caller`] reads it, for the OpenAPI document of the routes
/// that take a `Caller`.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct AdminTenantParam {
    /// With the admin token: run as this configured tenant, in its row scope
    /// (`default` when absent). Ignored with a tenant key.
    #[param(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    pub tenant: Option<String>,
}

/// The tenant the admin names with `?tenant=` (`default` when absent).
pub fn configured_tenant(state: &AppState, id: Option<&str>) -> Result<Tenant, ApiError> {
    let id = id.unwrap_or(DEFAULT_TENANT);
    state.auth.tenants.get(id).ok_or_else(|| {
        ApiError::new(ErrorCode::UnknownTenant, format!("tenant `{id}` is not configured")).with_field("tenant")
    })
}

/// The presented credential: `Authorization: Bearer` or `X-API-Key`.
fn credential(parts: &Parts) -> Option<&str> {
    bearer_token(parts).or_else(|| {
        parts
            .headers
            .get("x-api-key")
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|k| !k.is_empty())
    })
}

fn query_param(parts: &Parts, name: &str) -> Option<String> {
    url::form_urlencoded::parse(parts.uri.query()?.as_bytes())
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.into_owned())
}

/// The token of an `Authorization: Bearer <token>` header.
pub fn bearer_token(parts: &Parts) -> Option<&str> {
    let value = parts.headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}
