//! The query use case, one owner from request to answer: compile the request
//! against the model (pure), name its entry in the key space, serve it from
//! the cache or the database, and record it for the status page. HTTP
//! handlers and cache warming both call [`QueryService::run`]; neither
//! touches the model, the cache or the database on its own. `memo` lets a
//! repeated request body skip compilation; `model_health` names the field
//! when the schema changed under the model.

mod memo;
pub mod model_health;

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use chrono::{Datelike, NaiveDate};

use crate::cache::keys::KeySpace;
use crate::cache::{
    Accept, ComputeError, ComputePanicked, EntryDeps, EntryRequest, Fresh, NotCached, QueryCache, ReadMode, Served,
};
use crate::clock::unix_now;
use crate::config::{CacheSettings, FreshnessSettings};
use crate::db::replica::Replicas;
use crate::db::{Database, DbError};
use crate::model::{
    split_compare, CompileContext, CompiledQuery, QueryError, QueryRequest, SemanticModel, StaleWindows, TenantScope,
    TtlPolicy,
};
use crate::rollups::Rollups;
use crate::status::{HotKey, StatusTracker};

/// Why a query got no answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AnalyticsError {
    /// The request is malformed or the model refuses it.
    #[error(transparent)]
    Query(#[from] QueryError),
    /// The database could not answer it.
    #[error(transparent)]
    Database(#[from] DbError),
    /// `only-if-cached`, and nothing usable is cached.
    #[error("nothing usable is cached for this query")]
    NotCached,
}

impl From<ComputePanicked> for AnalyticsError {
    fn from(_: ComputePanicked) -> Self {
        Self::Database(DbError::Query("the query task panicked".into()))
    }
}

impl From<NotCached> for AnalyticsError {
    fn from(_: NotCached) -> Self {
        Self::NotCached
    }
}

impl ComputeError for AnalyticsError {
    fn is_outage(&self) -> bool {
        matches!(
            self,
            Self::Database(DbError::Timeout | DbError::Unavailable(_) | DbError::Overloaded(_))
        )
    }
}

/// How a request wants the cache used: `mode` plus its `Cache-Control`
/// request directives.
#[derive(Debug, Clone, Copy)]
pub struct ReadOptions {
    pub mode: ReadMode,
    pub accept: Accept,
}

/// An answered query: its entry, and how it was served.
#[derive(Debug)]
pub struct Answer {
    pub compiled: Arc<CompiledQuery>,
    /// The full cache key, as clients see it in `metadata.cache_key`.
    pub key: Arc<str>,
    pub served: Served,
    /// When the service started on it, for `query_time_ms`.
    pub started: Instant,
}

/// What a request gets: one answer, or with `compare_date_range` one per
/// range, in the request's order.
#[derive(Debug)]
pub enum Reply {
    One(Answer),
    Compare(Vec<Answer>),
}

/// What a query would do, without running it (`POST /analytics/sql`).
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Plan {
    pub dataset: String,
    pub tenant: String,
    /// The statement a miss would run now, with `$n` placeholders.
    pub sql: String,
    /// The values bound to `$1`, `$2`, ... in order.
    #[schema(value_type = Vec<Value>)]
    pub params: Vec<serde_json::Value>,
    /// `raw` or the rollup that would answer.
    pub source: String,
    pub cache_key: String,
    pub ttl_seconds: u64,
    /// An entry is cached now that a query would be served (valid and
    /// within its TTL).
    pub cached: bool,
    /// Where an entry was found (`l1`, `redis`), even an unusable one.
    pub cache_tier: Option<&'static str>,
    pub age_seconds: Option<u64>,
}

/// Compile -> cache -> database -> status.
pub struct QueryService {
    model: Arc<SemanticModel>,
    keys: KeySpace,
    /// Built once from the settings; compilation reads it on every request.
    ttl: TtlPolicy,
    stale: StaleWindows,
    cache: Arc<QueryCache<AnalyticsError>>,
    /// Request bodies compiled a moment ago.
    memo: memo::CompileMemo,
    db: Database,
    /// The read replicas datasets may read instead of `db`.
    replicas: Arc<Replicas>,
    /// Which rollup (if any) answers a computation.
    rollups: Arc<Rollups>,
    /// Whether the model still fits the database.
    model_health: Arc<model_health::ModelHealth>,
    status: Arc<StatusTracker>,
}

impl QueryService {
    pub fn new(
        model: Arc<SemanticModel>,
        keys: KeySpace,
        (settings, freshness): (&CacheSettings, &FreshnessSettings),
        cache: Arc<QueryCache<AnalyticsError>>,
        (db, replicas, rollups): (Database, Arc<Replicas>, Arc<Rollups>),
        status: Arc<StatusTracker>,
    ) -> Self {
        let model_health = Arc::new(model_health::ModelHealth::new(Arc::clone(&model), db.pool().clone()));
        Self {
            model,
            model_health,
            keys,
            ttl: TtlPolicy {
                default_seconds: settings.default_ttl_seconds,
                recent_seconds: settings.recent_ttl_seconds,
                historical_seconds: settings.historical_ttl_seconds,
                historical_after_days: settings.historical_after_days,
            },
            stale: StaleWindows {
                while_revalidate_seconds: freshness.stale_while_revalidate_seconds,
                if_error_seconds: freshness.stale_if_error_seconds,
            },
            cache,
            memo: memo::CompileMemo::default(),
            db,
            replicas,
            rollups,
            status,
        }
    }

    pub fn rollups(&self) -> &Rollups {
        &self.rollups
    }

    /// `None` while the model fits the database; else what does not.
    pub fn model_broken(&self) -> Option<String> {
        self.model_health.broken()
    }

    pub fn model(&self) -> &SemanticModel {
        &self.model
    }

    pub fn keys(&self) -> &KeySpace {
        &self.keys
    }

    pub fn cache(&self) -> &QueryCache<AnalyticsError> {
        &self.cache
    }

    /// Compiles `request` for `tenant` as of now.
    fn compile(&self, tenant: &TenantScope, request: &QueryRequest) -> Result<(CompiledQuery, String), QueryError> {
        self.compile_on(tenant, request, chrono::Utc::now().date_naive())
    }

    /// Compiles `request` for `tenant` as of `today` (UTC).
    fn compile_on(
        &self,
        tenant: &TenantScope,
        request: &QueryRequest,
        today: NaiveDate,
    ) -> Result<(CompiledQuery, String), QueryError> {
        let context = CompileContext {
            ttl: self.ttl,
            stale: self.stale,
            today,
        };
        let compiled = self.model.compile(&context, tenant, request)?;
        let key = self.keys.query_key(&compiled.tenant, &compiled.dataset, &compiled.hash);
        Ok((compiled, key))
    }

    /// The cache key `request` has for `tenant` (for deleting its entry).
    pub fn key_for(&self, tenant: &TenantScope, request: &QueryRequest) -> Result<String, QueryError> {
        self.compile(tenant, request).map(|(_, key)| key)
    }

    /// Answers `request` for `tenant`: from L1, Redis or the database.
    pub async fn run(
        &self,
        tenant: &TenantScope,
        request: &QueryRequest,
        options: ReadOptions,
    ) -> Result<Reply, AnalyticsError> {
        let started = Instant::now();
        if let Some(parts) = split_compare(request)? {
            return self.compare(started, tenant, &parts, options).await;
        }
        let (compiled, key) = self.compile(tenant, request)?;
        let answer = self
            .answer(started, Arc::new(compiled), Arc::from(key), options)
            .await?;
        Ok(Reply::One(answer))
    }

    /// Answers a JSON request `body` for `tenant`, as [`QueryService::run`]
    /// does; a body compiled a moment ago (same tenant, same day) is not
    /// parsed or compiled again (see `memo`).
    pub async fn run_body(
        &self,
        tenant: &TenantScope,
        body: &Bytes,
        options: ReadOptions,
    ) -> Result<Reply, AnalyticsError> {
        let started = Instant::now();
        let today = chrono::Utc::now().date_naive();
        let day = today.num_days_from_ce();
        let (compiled, key) = match self.memo.get(&tenant.id, body, day) {
            Some(memo) => (Arc::clone(&memo.compiled), Arc::clone(&memo.key)),
            None => {
                let request = QueryRequest::from_json(body)?;
                // Comparisons are several queries: not memoized.
                if let Some(parts) = split_compare(&request)? {
                    return self.compare(started, tenant, &parts, options).await;
                }
                let (compiled, key) = self.compile_on(tenant, &request, today)?;
                let (compiled, key) = (Arc::new(compiled), Arc::<str>::from(key));
                self.memo
                    .put(&tenant.id, body, day, Arc::clone(&compiled), Arc::clone(&key));
                (compiled, key)
            }
        };
        let answer = self.answer(started, compiled, key, options).await?;
        Ok(Reply::One(answer))
    }

    /// One answer per range of a `compare_date_range` request: every part
    /// is compiled first (a bad one refuses the request before anything
    /// runs), then all are served at once, each through its own entry.
    async fn compare(
        &self,
        started: Instant,
        tenant: &TenantScope,
        parts: &[QueryRequest],
        options: ReadOptions,
    ) -> Result<Reply, AnalyticsError> {
        let compiled = parts
            .iter()
            .map(|part| self.compile(tenant, part))
            .collect::<Result<Vec<_>, _>>()?;
        let answers = futures::future::try_join_all(
            compiled
                .into_iter()
                .map(|(compiled, key)| self.answer(started, Arc::new(compiled), Arc::from(key), options)),
        )
        .await?;
        Ok(Reply::Compare(answers))
    }

    /// L1, else Redis or the database, for a compiled query; recorded for
    /// the status page.
    async fn answer(
        &self,
        started: Instant,
        compiled: Arc<CompiledQuery>,
        key: Arc<str>,
        options: ReadOptions,
    ) -> Result<Answer, AnalyticsError> {
        let span = tracing::Span::current();
        span.record("tenant", compiled.tenant.as_str());
        let served = match self.cache.lookup_l1(&key, options.mode, options.accept).await {
            Some(hit) => hit,
            // Boxed: the miss path's future (Redis, leases, the database)
            // is large, and every layer between hyper and here moves the
            // request's future; inline, an L1 hit would pay for copying
            // that state several times (the top cost in callgrind).
            None => Box::pin(self.serve_past_l1(&compiled, &key, options)).await?,
        };
        span.record("cache", served.outcome.as_str());
        if let Some(elapsed) = served.compute_elapsed {
            span.record("db_ms", elapsed.as_secs_f64() * 1e3);
        }
        self.status.record(unix_now(), served.outcome, started.elapsed());
        self.status.record_key(&key, || HotKey {
            dataset: compiled.dataset.clone(),
            tenant: compiled.tenant.clone(),
            summary: compiled.summary(),
            hits: 0,
        });
        Ok(Answer {
            compiled,
            key,
            served,
            started,
        })
    }

    /// The statement, source and cache state of `request` for `tenant`,
    /// as a miss would see them now; nothing runs, nothing is counted.
    pub async fn plan(&self, tenant: &TenantScope, request: &QueryRequest) -> Result<Plan, AnalyticsError> {
        let (compiled, key) = self.compile(tenant, request)?;
        let rollup = self.rollups.route(&compiled);
        let statement = self
            .model
            .sql_for(&compiled, rollup)
            .ok_or_else(|| vanished(&compiled.dataset))?;
        let options = ReadOptions {
            mode: ReadMode::Normal,
            accept: Accept::default(),
        };
        let peek = self.cache.peek(self.entry_request(&compiled, &key, options)).await;
        Ok(Plan {
            sql: statement.builder.sql().to_owned(),
            params: statement.params,
            source: rollup.map_or("raw", |r| r.name.as_str()).to_owned(),
            cached: peek.is_some_and(|p| p.valid && p.age_seconds < compiled.ttl_seconds),
            cache_tier: peek.map(|p| p.tier),
            age_seconds: peek.map(|p| p.age_seconds),
            ttl_seconds: compiled.ttl_seconds,
            cache_key: key,
            dataset: compiled.dataset,
            tenant: compiled.tenant,
        })
    }

    /// The cache's description of `compiled`'s entry: key, lifetimes and the
    /// version counters it depends on.
    fn entry_request(&self, compiled: &CompiledQuery, key: &str, options: ReadOptions) -> EntryRequest {
        let dataset = compiled.dataset.as_str();
        let deps = Arc::new(EntryDeps {
            dataset: dataset.to_owned(),
            tenant: compiled.tenant.clone(),
            keys: compiled
                .tags
                .iter()
                .map(|t| self.keys.version_key(dataset, t))
                .collect(),
        });
        let counters: Arc<[String]> = [
            self.keys.generation_key(dataset),
            self.keys.tenant_generation_key(dataset, &compiled.tenant),
        ]
        .into_iter()
        .chain(deps.keys.iter().cloned())
        .collect();
        EntryRequest {
            key: key.to_owned(),
            ttl_seconds: compiled.ttl_seconds,
            stale_while_revalidate_seconds: compiled.stale.while_revalidate_seconds,
            stale_if_error_seconds: compiled.stale.if_error_seconds,
            counters,
            lease_key: self.keys.lease_key(key),
            deps,
            mode: options.mode,
            accept: options.accept,
        }
    }

    /// Redis, then the database: computed only if nothing usable is cached.
    async fn serve_past_l1(
        &self,
        compiled: &Arc<CompiledQuery>,
        key: &str,
        options: ReadOptions,
    ) -> Result<Served, AnalyticsError> {
        let entry = self.entry_request(compiled, key, options);
        let model = Arc::clone(&self.model);
        let database = self.db.clone();
        let replicas = Arc::clone(&self.replicas);
        let rollups = Arc::clone(&self.rollups);
        let health = Arc::clone(&self.model_health);
        let for_compute = Arc::clone(compiled);
        // The statement is built inside the computation: hits never pay for
        // it, and the rollup is chosen as of the moment the statement runs.
        let compute = move || async move {
            let mut rollup = rollups.route(&for_compute);
            // On the dataset's replica while it is healthy, else the primary
            // (the statement is built again for a retry there).
            let fetch = |rollup| {
                let (model, for_compute) = (&model, &for_compute);
                replicas.fetch(&database, &for_compute.dataset, &for_compute.tenant, move || {
                    model
                        .sql_for(for_compute, rollup)
                        .map(|sql| sql.builder)
                        .ok_or_else(|| vanished(&for_compute.dataset))
                })
            };
            let result = match fetch(rollup).await {
                // A rollup statement PostgreSQL refuses (an expression that
                // reads a column the rollup lacks) is answered from raw.
                Err(DbError::Query(error) | DbError::Model(error)) if rollup.is_some() => {
                    tracing::warn!(%error, rollup = rollup.map(|r| r.id.as_str()), "rollup statement failed; answering from the raw table");
                    rollup = None;
                    fetch(None).await
                }
                other => other,
            };
            let result = match result {
                Err(DbError::Model(cause)) => {
                    return Err(DbError::Model(health.diagnose(&for_compute.dataset, &cause).await).into())
                }
                other => other?,
            };
            rollups.record_served(rollup);
            Ok(Fresh {
                data: result.data.into(),
                rows: result.rows,
                total: result.total,
                elapsed: result.elapsed,
                source: rollup.map(|r| Arc::from(r.name.as_str())),
            })
        };
        // Redis and PostgreSQL: on the shared runtime, where their
        // connections live (`offload`); the flight outlives a client that
        // goes away, for the others waiting on it. Boxed: the flight's
        // future is several KB, and unboxed every layer it passes through
        // would copy it whole (+16,000 instructions per Redis hit in
        // callgrind).
        let cache = Arc::clone(&self.cache);
        let flight = Box::pin(async move { cache.get_or_compute(entry, compute).await });
        crate::offload::shared(flight).await
    }
}

/// A compiled query whose dataset the model no longer has (a bug: the
/// model is fixed for the life of the process).
fn vanished(dataset: &str) -> DbError {
    DbError::Query(format!("dataset `{dataset}` vanished from the model"))
}
