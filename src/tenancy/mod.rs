//! Tenants: who is calling, which rows they may see, and how fast they may ask.
//!
//! - `keys`: API key generation, hashing and the `api_keys` table
//! - `rate_limit`: GCRA limits shared through Redis, with a local fallback

pub mod keys;
pub mod rate_limit;

use std::collections::HashMap;

use crate::cache::keys::is_safe_segment;
use crate::config::{AuthSettings, RateLimitSettings};
use crate::model::{resolve_filters, SemanticModel, TenantScope};

/// The tenant unauthenticated requests run as when `auth.required` is off.
pub const DEFAULT_TENANT: &str = "default";

/// Why the tenant configuration was refused.
#[derive(Debug, thiserror::Error)]
#[error("tenant `{tenant}`: {message}")]
pub struct TenantConfigError {
    pub tenant: String,
    pub message: String,
}

/// A configured tenant, resolved against the model at startup.
#[derive(Debug, Clone)]
pub struct Tenant {
    pub scope: TenantScope,
    /// Requests per minute; `None` is unlimited.
    pub rate_limit_per_minute: Option<u64>,
}

/// Every configured tenant and the SHA-256 digests of their config keys.
#[derive(Debug, Default)]
pub struct Tenants {
    by_id: HashMap<String, Tenant>,
    config_keys: Vec<([u8; 32], String)>,
    default_rate_limit: Option<u64>,
}

impl Tenants {
    /// Validates the tenants of `auth` against `model`; errors name the tenant.
    pub fn from_settings(
        auth: &AuthSettings,
        limits: &RateLimitSettings,
        model: &SemanticModel,
    ) -> Result<Self, TenantConfigError> {
        let default_rate_limit = (limits.enabled && limits.default_per_minute > 0).then_some(limits.default_per_minute);
        let mut tenants = Self {
            default_rate_limit,
            ..Self::default()
        };
        for settings in &auth.tenants {
            let fail = |message: String| TenantConfigError {
                tenant: settings.id.clone(),
                message,
            };
            if !is_safe_segment(&settings.id) {
                return Err(fail("id must be 1-64 of [A-Za-z0-9_-]".into()));
            }
            let mut row_filters = std::collections::BTreeMap::new();
            for (dataset_name, filters) in &settings.row_filters {
                let dataset = model
                    .datasets
                    .get(dataset_name)
                    .ok_or_else(|| fail(format!("row_filters: unknown dataset `{dataset_name}`")))?;
                let resolved = resolve_filters(dataset, filters).map_err(|e| {
                    fail(format!(
                        "row_filters.{dataset_name}: {e} ({})",
                        e.field.clone().unwrap_or_default()
                    ))
                })?;
                row_filters.insert(dataset_name.clone(), resolved);
            }
            for hash in &settings.api_key_hashes {
                let digest = keys::parse_digest(hash).ok_or_else(|| {
                    fail(format!(
                        "api_key_hashes: `{hash}` is not a 64-character SHA-256 hex digest"
                    ))
                })?;
                tenants.config_keys.push((digest, settings.id.clone()));
            }
            let rate_limit_per_minute = if limits.enabled {
                settings.rate_limit_per_minute.or(default_rate_limit).filter(|l| *l > 0)
            } else {
                None
            };
            let tenant = Tenant {
                scope: TenantScope {
                    id: settings.id.clone(),
                    row_filters,
                },
                rate_limit_per_minute,
            };
            if tenants.by_id.insert(settings.id.clone(), tenant).is_some() {
                return Err(fail("declared twice".into()));
            }
        }
        Ok(tenants)
    }

    /// A declared tenant, or an unscoped one for the default tenant.
    pub fn get(&self, id: &str) -> Option<Tenant> {
        self.by_id.get(id).cloned().or_else(|| {
            (id == DEFAULT_TENANT).then(|| Tenant {
                scope: TenantScope::unscoped(DEFAULT_TENANT),
                rate_limit_per_minute: self.default_rate_limit,
            })
        })
    }

    pub fn is_declared(&self, id: &str) -> bool {
        self.by_id.contains_key(id)
    }

    /// The tenant whose config key has this digest. Every digest is compared,
    /// in constant time, so the time taken says nothing about which matched.
    pub fn tenant_for_config_key(&self, digest: &[u8; 32]) -> Option<&str> {
        use subtle::ConstantTimeEq;
        let mut found = None;
        for (candidate, tenant) in &self.config_keys {
            if bool::from(candidate.ct_eq(digest)) {
                found = Some(tenant.as_str());
            }
        }
        found
    }
}

/// Who a request's credentials say it is.
#[derive(Debug, Clone)]
pub enum Identity {
    /// The admin token.
    Admin,
    /// A tenant's API key (or no key, as `default`, when auth is optional).
    Tenant(Tenant),
}

/// Why credentials were refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("an API key is required: send `Authorization: Bearer <key>` or `X-API-Key: <key>`")]
    Missing,
    #[error("invalid or revoked API key")]
    Invalid,
    #[error("the key lookup failed; retry shortly")]
    Unavailable,
}

/// Resolves credentials to an identity: admin token, config keys, then the
/// `api_keys` table (through a short-lived cache, so hits stay in memory).
pub struct Authenticator {
    pub tenants: Tenants,
    admin_token: Option<crate::config::Secret>,
    required: bool,
    pool: sqlx::PgPool,
    /// Key digest -> tenant id (None: unknown or revoked), for `key_cache_seconds`.
    key_cache: moka::future::Cache<[u8; 32], Option<String>>,
}

impl Authenticator {
    pub fn new(tenants: Tenants, auth: &AuthSettings, pool: sqlx::PgPool) -> Self {
        Self {
            tenants,
            admin_token: auth.admin_token.clone().filter(|t| !t.expose().is_empty()),
            required: auth.required,
            pool,
            key_cache: moka::future::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(std::time::Duration::from_secs(auth.key_cache_seconds.max(1)))
                .build(),
        }
    }

    pub fn admin_configured(&self) -> bool {
        self.admin_token.is_some()
    }

    pub fn is_admin_token(&self, presented: &str) -> bool {
        self.admin_token
            .as_ref()
            .is_some_and(|expected| keys::constant_time_eq(presented, expected.expose()))
    }

    /// `credential` is the presented key or token, if any.
    pub async fn identify(&self, credential: Option<&str>) -> Result<Identity, AuthError> {
        let Some(credential) = credential else {
            if self.required {
                return Err(AuthError::Missing);
            }
            return self
                .tenants
                .get(DEFAULT_TENANT)
                .map(Identity::Tenant)
                .ok_or(AuthError::Invalid);
        };
        if self.is_admin_token(credential) {
            return Ok(Identity::Admin);
        }
        let digest = keys::digest(credential);
        let tenant_id = match self.tenants.tenant_for_config_key(&digest) {
            Some(id) => Some(id.to_owned()),
            None => self.lookup_stored_key(digest).await?,
        };
        // A stored key whose tenant is no longer configured fails closed.
        tenant_id
            .and_then(|id| self.tenants.is_declared(&id).then(|| self.tenants.get(&id)).flatten())
            .map(Identity::Tenant)
            .ok_or(AuthError::Invalid)
    }

    async fn lookup_stored_key(&self, digest: [u8; 32]) -> Result<Option<String>, AuthError> {
        if let Some(cached) = self.key_cache.get(&digest).await {
            return Ok(cached);
        }
        let (digest_hex, pool) = (hex::encode(digest), self.pool.clone());
        // On the shared runtime, where the pool's connections live (`offload`).
        let tenant = crate::offload::shared(async move {
            let tenant = keys::lookup(&pool, &digest_hex).await?;
            if tenant.is_some() {
                tokio::spawn(async move {
                    let _ = keys::touch(&pool, &digest_hex, std::time::Duration::from_secs(60)).await;
                });
            }
            Ok::<_, sqlx::Error>(tenant)
        })
        .await
        .map_err(|error| {
            tracing::warn!(error = %crate::telemetry::ErrorChain(&error), "api key lookup failed");
            AuthError::Unavailable
        })?;
        self.key_cache.insert(digest, tenant.clone()).await;
        Ok(tenant)
    }
}
