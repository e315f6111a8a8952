//! Authentication extractors: the admin token for cache administration, and
//! the calling tenant (with its rate limit) for queries.

use axum::extract::FromRequestParts;
use axum::http::{header, request::Parts, HeaderName, HeaderValue, StatusCode};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::ApiError;
use crate::model::TenantScope;
use crate::state::AppState;
use crate::tenancy::rate_limit::Decision;
use crate::tenancy::{AuthError, Identity, DEFAULT_TENANT};

/// Proof that the request carried the admin token.
pub struct Admin;

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        if !state.auth.admin_configured() {
            return Err(admin_disabled());
        }
        let presented = bearer_token(parts).ok_or_else(|| {
            with_challenge(ApiError::unauthorized(
                "missing `Authorization: Bearer <ADMIN_TOKEN>` header",
            ))
        })?;
        if state.auth.is_admin_token(presented) {
            Ok(Admin)
        } else {
            Err(with_challenge(ApiError::unauthorized("invalid admin token")))
        }
    }
}

fn admin_disabled() -> ApiError {
    ApiError::forbidden("admin endpoints are disabled: set ADMIN_TOKEN (or APP__AUTH__ADMIN_TOKEN) to enable them")
}

/// Who a cache-administration request acts for: the admin (any tenant,
/// optionally narrowed with `?tenant=`), or a tenant (its own namespace only).
pub enum CacheActor {
    Admin,
    Tenant(String),
}

impl FromRequestParts<AppState> for CacheActor {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let Some(credential) = credential(parts) else {
            if !state.auth.admin_configured() {
                return Err(admin_disabled());
            }
            return Err(with_challenge(ApiError::unauthorized(
                "send the admin token or a tenant API key as `Authorization: Bearer <token>`",
            )));
        };
        match state.auth.identify(Some(credential)).await {
            Ok(Identity::Admin) => Ok(CacheActor::Admin),
            Ok(Identity::Tenant(tenant)) => Ok(CacheActor::Tenant(tenant.scope.id)),
            // Not a tenant key, and no admin token could match: say what to configure.
            Err(AuthError::Invalid) if !state.auth.admin_configured() => Err(admin_disabled()),
            Err(error) => Err(auth_rejection(error)),
        }
    }
}

/// Who is calling `/analytics/query`, after authentication and rate limiting.
pub struct Caller {
    pub tenant: TenantScope,
    /// The rate-limit verdict, echoed in response headers.
    pub rate: Option<Decision>,
}

impl Caller {
    /// A caller for server-side work (warming), exempt from rate limits.
    pub fn internal(tenant: TenantScope) -> Self {
        Self { tenant, rate: None }
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let identity = state.auth.identify(credential(parts)).await.map_err(auth_rejection)?;
        let tenant = match identity {
            // The admin may query as any tenant, with that tenant's scope.
            Identity::Admin => {
                let id = query_param(parts, "tenant").unwrap_or_else(|| DEFAULT_TENANT.to_owned());
                state.auth.tenants.get(&id).ok_or_else(|| {
                    ApiError::unprocessable("unknown_tenant", format!("tenant `{id}` is not configured"))
                        .with_field("tenant")
                })?
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
            let mut error = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!(
                    "rate limit of {} requests per minute exceeded; retry later",
                    decision.limit
                ),
            )
            .with_retry_after(decision.retry_after_seconds.max(1));
            error.headers.extend(rate_limit_headers(&decision));
            return Err(error);
        }
        Ok(Caller {
            tenant: tenant.scope,
            rate,
        })
    }
}

/// `RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset`.
pub fn rate_limit_headers(decision: &Decision) -> Vec<(HeaderName, HeaderValue)> {
    vec![
        (
            HeaderName::from_static("ratelimit-limit"),
            HeaderValue::from(decision.limit),
        ),
        (
            HeaderName::from_static("ratelimit-remaining"),
            HeaderValue::from(decision.remaining),
        ),
        (
            HeaderName::from_static("ratelimit-reset"),
            HeaderValue::from(decision.reset_seconds),
        ),
    ]
}

fn auth_rejection(error: AuthError) -> ApiError {
    match error {
        AuthError::Unavailable => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "auth_unavailable", error.to_string()).with_retry_after(1)
        }
        AuthError::Missing | AuthError::Invalid => with_challenge(ApiError::unauthorized(error.to_string())),
    }
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

/// Compares digests so that neither the content nor the length of the
/// expected secret leaks through timing.
pub fn constant_time_eq(presented: &str, expected: &str) -> bool {
    let presented = Sha256::digest(presented.as_bytes());
    let expected = Sha256::digest(expected.as_bytes());
    presented.ct_eq(&expected).into()
}

fn with_challenge(mut error: ApiError) -> ApiError {
    error
        .headers
        .push((header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer")));
    error
}
