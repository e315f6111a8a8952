//! `AppState`: the cheap-to-clone handles every handler needs.

use std::sync::Arc;

use crate::analytics::QueryService;
use crate::config::Settings;
use crate::freshness::Freshness;
use crate::health::HealthChecker;
use crate::status::StatusTracker;
use crate::tenancy::rate_limit::RateLimiter;
use crate::tenancy::Authenticator;

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
    /// The query use case (model, key space, cache, database, status).
    pub queries: QueryService,
    /// Change capture and invalidation (shares the query service's cache).
    pub freshness: Arc<Freshness>,
    /// Dependency checks for the health endpoints and the status page.
    pub health: HealthChecker,
    /// Credentials -> identity (admin token, tenant keys).
    pub auth: Authenticator,
    /// Per-tenant rate limits.
    pub rate_limiter: RateLimiter,
    /// Traffic history and hot keys for the status page (written by `queries`).
    pub status: Arc<StatusTracker>,
    /// Server start, for uptime.
    pub started_at: std::time::Instant,
}
