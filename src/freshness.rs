//! Knowing when data changes: every instance LISTENs for the change-capture
//! notifications of PostgreSQL and, for each, bumps the version counters of
//! what the change touched (Redis; shared) and drops the matching entries of
//! its own L1 (local). Invalidations that arrive through the API (writers
//! that bypass the triggers) and cache clears are also broadcast on Redis
//! pub/sub, so every instance's L1 follows within a second.
//!
//! After a gap in which notifications may have been lost (the LISTEN
//! connection dropped, or this instance just started) every dataset is
//! invalidated: conservative, logged, counted as `gap`. A bump that fails
//! because Redis is down is retried, as a whole-dataset bump, until it lands.

use std::collections::{BTreeSet, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use serde::{Deserialize, Serialize};
use sqlx::postgres::PgListener;
use sqlx::PgPool;
use tokio::sync::mpsc;

use crate::analytics::AnalyticsError;
use crate::cache::keys::KeySpace;
use crate::cache::{L1Target, QueryCache};
use crate::clock::unix_now_ms;
use crate::config::FreshnessSettings;
use crate::db::capture;
use crate::model::freshness::{touched, Change, Touched};
use crate::model::{triggers, SemanticModel};
use crate::redis::{RedisCaller, RedisClient, RedisUnavailable};
use crate::rollups::{Reaggregated, Rollups};
use crate::sync::lock;

/// How long start-up waits for the first LISTEN before serving anyway.
const STARTUP_LISTEN_LIMIT: Duration = Duration::from_secs(5);

/// Where an invalidation came from (the `source` label of its metric).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Trigger,
    Api,
    Gap,
    /// A rollup refresh re-aggregated days (broadcast like an API one).
    Rollup,
}

impl Source {
    fn as_str(self) -> &'static str {
        match self {
            Self::Trigger => "trigger",
            Self::Api => "api",
            Self::Gap => "gap",
            Self::Rollup => "rollup",
        }
    }
}

/// What one instance tells the others' L1 over pub/sub.
#[derive(Debug, Serialize, Deserialize)]
struct Broadcast {
    /// The sending instance, which has applied it already.
    origin: String,
    #[serde(flatten)]
    what: BroadcastKind,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum BroadcastKind {
    Invalidate { target: L1Target },
    Clear { pattern: String },
}

/// `up`, `down` or `disabled`, for `/health`.
#[derive(Debug, Clone, Copy, Serialize, utoipa::ToSchema)]
pub struct FreshnessHealth {
    /// The LISTEN connection for change capture.
    pub listener: &'static str,
    /// The pub/sub subscription that keeps every instance's L1 in step;
    /// while `down`, L1 entries live at most `cache.l1_ttl_seconds`.
    pub l1_sync: &'static str,
}

/// The change-capture side of the cache.
pub struct Freshness {
    model: Arc<SemanticModel>,
    keys: KeySpace,
    cache: Arc<QueryCache<AnalyticsError>>,
    /// The cache's Redis, for pub/sub; `None` when Redis or the cache is off.
    redis: Option<Arc<RedisClient>>,
    settings: FreshnessSettings,
    /// This instance's name in broadcasts and leases.
    instance: String,
    listener_up: AtomicBool,
    l1_sync_up: AtomicBool,
    /// Datasets whose counters could not be bumped (Redis down): retried.
    unbumped: Mutex<BTreeSet<String>>,
    /// Re-aggregated before a change is invalidated (see `on_notification`).
    rollups: Arc<Rollups>,
}

impl Freshness {
    pub fn new(
        model: Arc<SemanticModel>,
        keys: KeySpace,
        cache: Arc<QueryCache<AnalyticsError>>,
        redis: Option<Arc<RedisClient>>,
        settings: FreshnessSettings,
        instance: String,
        rollups: Arc<Rollups>,
    ) -> Self {
        Self {
            model,
            keys,
            cache,
            redis,
            settings,
            instance,
            listener_up: AtomicBool::new(false),
            l1_sync_up: AtomicBool::new(false),
            unbumped: Mutex::default(),
            rollups,
        }
    }

    /// Starts change capture: the first LISTEN (with the trigger install and
    /// the conservative invalidation that follows it) happens before this
    /// returns, within a few seconds, so the server never serves an entry
    /// from before it started listening as valid; then the background tasks:
    /// LISTEN with reconnects, the pub/sub subscription, retries of bumps.
    pub async fn start(self: &Arc<Self>, pool: PgPool, mut reaggregated: mpsc::UnboundedReceiver<Reaggregated>) {
        // Whatever a rollup refresh re-aggregated (it has committed): answers
        // computed from the rollup before it saw the change are invalidated.
        let this = Arc::clone(self);
        tokio::spawn(async move {
            while let Some(done) = reaggregated.recv().await {
                this.invalidate_as(Source::Rollup, &done.dataset, None, &done.change)
                    .await;
            }
        });
        if self.settings.enabled {
            self.set_listener_up(false);
            let mut installed = !self.settings.install_triggers;
            let first = tokio::time::timeout(STARTUP_LISTEN_LIMIT, self.connect(&pool, &mut installed, true))
                .await
                .ok()
                .flatten();
            let this = Arc::clone(self);
            tokio::spawn(async move { this.listen_forever(pool, first, installed).await });
        }
        if let Some(redis) = self.redis.clone() {
            let this = Arc::clone(self);
            tokio::spawn(async move { this.subscribe_forever(redis).await });
            let this = Arc::clone(self);
            tokio::spawn(async move { this.retry_unbumped().await });
        }
    }

    pub fn health(&self) -> FreshnessHealth {
        let state = |enabled: bool, up: &AtomicBool| match (enabled, up.load(Ordering::Acquire)) {
            (false, _) => "disabled",
            (true, true) => "up",
            (true, false) => "down",
        };
        FreshnessHealth {
            listener: state(self.settings.enabled, &self.listener_up),
            l1_sync: state(self.redis.is_some(), &self.l1_sync_up),
        }
    }

    /// Applies a change of `dataset` (all tenants, or one): bumps the
    /// counters it touched and drops the matching L1 entries. Returns the
    /// L1 target, for broadcasting.
    pub async fn apply(&self, source: Source, dataset: &str, tenant: Option<&str>, change: &Change) -> L1Target {
        let Some(definition) = self.model.datasets.get(dataset) else {
            return L1Target::default();
        };
        let (counters, keys) = match (tenant, touched(definition, change)) {
            (Some(tenant), _) => (vec![self.keys.tenant_generation_key(dataset, tenant)], None),
            (None, Touched::Everything) => (vec![self.keys.generation_key(dataset)], None),
            (None, Touched::Tags(tags)) => {
                let counters: Vec<String> = tags.iter().map(|t| self.keys.version_key(dataset, t)).collect();
                let keys: HashSet<String> = counters.iter().cloned().collect();
                (counters, Some(keys))
            }
        };
        let target = L1Target {
            dataset: dataset.to_owned(),
            tenant: tenant.map(str::to_owned),
            keys,
        };
        match self.cache.bump(counters).await {
            // Without Redis, L1 (below) is all there is to invalidate.
            Ok(()) | Err(RedisUnavailable::Disabled) => {}
            Err(error) => {
                tracing::warn!(%error, dataset, "could not bump version counters; retrying as a whole-dataset invalidation");
                lock(&self.unbumped).insert(dataset.to_owned());
            }
        }
        self.cache.invalidate_l1(target.clone());
        self.cache.stats().record_invalidation(source.as_str());
        target
    }

    /// Everything of every dataset: after a gap in the notifications.
    async fn apply_everything(&self, source: Source) {
        for dataset in self.model.datasets.keys() {
            self.apply(source, dataset, None, &Change::default()).await;
        }
    }

    /// An invalidation through the API: applied here, then broadcast to the
    /// other instances' L1.
    pub async fn invalidate(&self, dataset: &str, tenant: Option<&str>, change: &Change) {
        self.invalidate_as(Source::Api, dataset, tenant, change).await;
    }

    async fn invalidate_as(&self, source: Source, dataset: &str, tenant: Option<&str>, change: &Change) {
        let target = self.apply(source, dataset, tenant, change).await;
        self.broadcast(BroadcastKind::Invalidate { target }).await;
    }

    /// Tells the other instances to drop L1 entries matching `pattern` (this
    /// instance's clear has done so already).
    pub async fn broadcast_clear(&self, pattern: &str) {
        self.broadcast(BroadcastKind::Clear {
            pattern: pattern.to_owned(),
        })
        .await;
    }

    async fn broadcast(&self, what: BroadcastKind) {
        let Some(redis) = &self.redis else { return };
        let message = Broadcast {
            origin: self.instance.clone(),
            what,
        };
        let Ok(text) = serde_json::to_string(&message) else {
            return;
        };
        if let Err(error) = redis
            .publish(RedisCaller::Admin, &self.keys.invalidation_channel(), text)
            .await
        {
            tracing::warn!(%error, "could not broadcast to the other instances; their L1 entries expire within cache.l1_ttl_seconds");
        }
    }

    /// One attempt: install the triggers (until that succeeds once), LISTEN,
    /// then invalidate everything, since changes may have been missed until
    /// now. `log_failure` is false for the repeated failures of one outage.
    async fn connect(&self, pool: &PgPool, installed: &mut bool, log_failure: bool) -> Option<PgListener> {
        if !*installed {
            let statements = triggers::install_statements(&self.model, &self.settings.channel, self.rollups.enabled());
            match capture::run_ddl(pool, &statements).await {
                Ok(()) => {
                    *installed = true;
                    tracing::info!(channel = %self.settings.channel, "change-capture triggers installed");
                }
                Err(error) if log_failure => tracing::warn!(
                    error = %crate::telemetry::ErrorChain(&error),
                    "could not install the change-capture triggers; will retry (or run `analytics-api triggers install`)"
                ),
                Err(_) => {}
            }
        }
        match capture::listen(pool, &self.settings.channel).await {
            Ok(listener) => {
                self.set_listener_up(true);
                tracing::info!(
                    channel = %self.settings.channel,
                    "listening for data changes; invalidating every dataset, since changes may have been missed until now"
                );
                self.apply_everything(Source::Gap).await;
                Some(listener)
            }
            Err(error) => {
                if log_failure {
                    tracing::warn!(error = %crate::telemetry::ErrorChain(&error), "change-capture LISTEN failed; retrying with backoff");
                }
                None
            }
        }
    }

    /// Receives notifications; reconnects with backoff when the connection
    /// drops (each reconnect is a gap, see `connect`).
    async fn listen_forever(self: Arc<Self>, pool: PgPool, mut listener: Option<PgListener>, mut installed: bool) {
        let max_backoff = Duration::from_millis(self.settings.reconnect_max_ms.max(100));
        let mut backoff = Duration::from_millis(100);
        let mut failures = 0u32;
        loop {
            let Some(mut current) = listener.take() else {
                tokio::time::sleep(backoff).await;
                listener = self.connect(&pool, &mut installed, failures == 0).await;
                if listener.is_none() {
                    failures += 1;
                    backoff = (backoff * 2).min(max_backoff);
                } else {
                    failures = 0;
                    backoff = Duration::from_millis(100);
                }
                continue;
            };
            loop {
                match current.try_recv().await {
                    Ok(Some(notification)) => self.on_notification(notification.payload()).await,
                    Ok(None) => {
                        tracing::warn!("change-capture connection lost; reconnecting");
                        break;
                    }
                    Err(error) => {
                        tracing::warn!(error = %crate::telemetry::ErrorChain(&error), "change-capture connection failed; reconnecting");
                        break;
                    }
                }
            }
            self.set_listener_up(false);
        }
    }

    fn set_listener_up(&self, up: bool) {
        self.listener_up.store(up, Ordering::Release);
        metrics::gauge!("analytics_freshness_listener_up").set(if up { 1.0 } else { 0.0 });
    }

    async fn on_notification(&self, payload: &str) {
        let notification = match triggers::read_notification(&self.model, payload) {
            Ok(notification) => notification,
            Err(error) => {
                tracing::warn!(%error, "unreadable change notification; invalidating every dataset");
                self.apply_everything(Source::Gap).await;
                return;
            }
        };
        for (dataset, change) in &notification.changes {
            // Rollups first: the change is invalidated only once they have
            // re-aggregated it, so no answer computed from a rollup that had
            // not seen it can be cached as valid.
            self.rollups.refresh_dataset(dataset, Some(change)).await;
            self.apply(Source::Trigger, dataset, None, change).await;
        }
        if let Some(at) = notification.at_ms {
            let lag = (unix_now_ms() as f64 - at).max(0.0) / 1e3;
            metrics::histogram!("analytics_cache_invalidation_lag_seconds").record(lag);
        }
    }

    /// Follows the other instances' broadcasts, resubscribing with backoff.
    async fn subscribe_forever(self: Arc<Self>, redis: Arc<RedisClient>) {
        let channel = self.keys.invalidation_channel();
        let mut backoff = Duration::from_millis(100);
        loop {
            match redis.subscribe(&channel).await {
                Ok(pubsub) => {
                    self.l1_sync_up.store(true, Ordering::Release);
                    backoff = Duration::from_millis(100);
                    let mut messages = pubsub.into_on_message();
                    while let Some(message) = messages.next().await {
                        let Ok(text) = message.get_payload::<String>() else {
                            continue;
                        };
                        self.on_broadcast(&text);
                    }
                    self.l1_sync_up.store(false, Ordering::Release);
                    tracing::warn!("invalidation subscription lost; L1 entries expire within cache.l1_ttl_seconds until it is back");
                }
                Err(error) => {
                    tracing::debug!(%error, "invalidation subscription failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    fn on_broadcast(&self, text: &str) {
        let Ok(message) = serde_json::from_str::<Broadcast>(text) else {
            tracing::debug!("ignoring an unreadable broadcast");
            return;
        };
        if message.origin == self.instance {
            return;
        }
        match message.what {
            BroadcastKind::Invalidate { target } => self.cache.invalidate_l1(target),
            BroadcastKind::Clear { pattern } => self.cache.clear_l1(&pattern),
        }
    }

    /// Bumps, as whole-dataset invalidations, what could not be bumped in
    /// the local Redis. Only there: the remote's half of the bump ran (or
    /// its failure was handled) when it failed, and bumping the remote every
    /// second while the local Redis is down would invalidate every remote
    /// entry of the dataset every second, for every instance sharing it.
    async fn retry_unbumped(self: Arc<Self>) {
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let pending: Vec<String> = lock(&self.unbumped).iter().cloned().collect();
            for dataset in pending {
                if self
                    .cache
                    .bump_local(vec![self.keys.generation_key(&dataset)])
                    .await
                    .is_ok()
                {
                    lock(&self.unbumped).remove(&dataset);
                    tracing::info!(dataset, "deferred invalidation applied");
                }
            }
        }
    }
}
