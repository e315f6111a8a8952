//! `AppState`: the cheap-to-clone handles every handler needs.

use std::sync::Arc;

use sqlx::PgPool;

use crate::cache::ttl::TtlPolicy;
use crate::cache::QueryCache;
use crate::config::Settings;
use crate::model::{CompileContext, SemanticModel};

/// The handles every handler needs, behind one `Arc`: axum clones the state
/// for every request, and one reference count is cheaper than eight.
#[derive(Clone)]
pub struct AppState(Arc<AppComponents>);

impl AppState {
    pub fn new(components: AppComponents) -> Self {
        Self(Arc::new(components))
    }
}

impl std::ops::Deref for AppState {
    type Target = AppComponents;

    fn deref(&self) -> &AppComponents {
        &self.0
    }
}

pub struct AppComponents {
    /// Read-only configuration, shared.
    pub settings: Arc<Settings>,
    /// The validated semantic model.
    pub model: Arc<SemanticModel>,
    /// The PostgreSQL pool (lazy: the server runs while the database is down).
    pub db: PgPool,
    /// L1 + Redis cache-aside layer.
    pub cache: Arc<QueryCache>,
    /// Credentials -> identity (admin token, tenant keys).
    pub auth: Arc<crate::tenancy::Authenticator>,
    /// Per-tenant rate limits.
    pub rate_limiter: Arc<crate::tenancy::rate_limit::RateLimiter>,
    /// Traffic history and hot keys for the status page.
    pub status: Arc<crate::status::StatusTracker>,
    /// Server start, for uptime.
    pub started_at: std::time::Instant,
}

impl AppComponents {
    /// Compilation context for a request arriving now.
    pub fn compile_context(&self) -> CompileContext {
        let cache = &self.settings.cache;
        CompileContext {
            key_prefix: cache.prefix.clone(),
            ttl: TtlPolicy {
                default_seconds: cache.default_ttl_seconds,
                recent_seconds: cache.recent_ttl_seconds,
                historical_seconds: cache.historical_ttl_seconds,
                historical_after_days: cache.historical_after_days,
            },
            today: chrono::Utc::now().date_naive(),
        }
    }
}
