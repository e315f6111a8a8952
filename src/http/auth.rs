//! Authentication extractors: the admin token for cache administration, and
//! the calling tenant for queries.

use axum::extract::FromRequestParts;
use axum::http::{header, request::Parts, HeaderValue};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::ApiError;
use crate::model::TenantScope;
use crate::state::AppState;

/// The tenant every request runs as until tenancy is configured.
pub const DEFAULT_TENANT: &str = "default";

/// Proof that the request carried the admin token.
pub struct Admin;

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let Some(expected) = state
            .settings
            .auth
            .admin_token
            .as_ref()
            .filter(|t| !t.expose().is_empty())
        else {
            return Err(ApiError::forbidden(
                "admin endpoints are disabled: set ADMIN_TOKEN (or APP__AUTH__ADMIN_TOKEN) to enable them",
            ));
        };
        let presented = bearer_token(parts).ok_or_else(|| {
            with_challenge(ApiError::unauthorized(
                "missing `Authorization: Bearer <ADMIN_TOKEN>` header",
            ))
        })?;
        if constant_time_eq(presented, expected.expose()) {
            Ok(Admin)
        } else {
            Err(with_challenge(ApiError::unauthorized("invalid admin token")))
        }
    }
}

/// Who is calling `/analytics/query`.
pub struct Caller {
    pub tenant: TenantScope,
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(_parts: &mut Parts, _state: &AppState) -> Result<Self, Self::Rejection> {
        Ok(Caller {
            tenant: TenantScope::unscoped(DEFAULT_TENANT),
        })
    }
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
