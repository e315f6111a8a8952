//! `Application`: builds everything from `Settings`, binds the listener and
//! serves until a shutdown signal.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;

use crate::analytics::QueryService;
use crate::cache::keys::KeySpace;
use crate::cache::{LeasePolicy, QueryCache};
use crate::config::Settings;
use crate::db;
use crate::freshness::Freshness;
use crate::health::HealthChecker;
use crate::http::server::ConnectionLimits;
use crate::model::{ModelError, SemanticModel};
use crate::redis::RedisClient;
use crate::rollups::Rollups;
use crate::state::{AppComponents, AppState};
use crate::tenancy::rate_limit::RateLimiter;
use crate::tenancy::{Authenticator, Tenants};

/// Why the server could not start; each names what to fix.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("the model does not match the database: {0}")]
    ModelMismatch(#[from] crate::db::model_check::ModelMismatch),
    #[error(
        "the database at {at} (DATABASE_URL) did not answer within database.startup_wait_seconds ({waited} s): {cause}"
    )]
    DatabaseUnreachable { at: String, waited: u64, cause: String },
    /// TLS with the database failed in a way waiting does not mend (a
    /// certificate not trusted): refused at once, naming the server.
    #[error("the database at {at} (DATABASE_URL): {problem}")]
    DatabaseTls { at: String, problem: String },
    #[error("migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("redis settings: {0}")]
    Redis(#[from] crate::redis::RedisConfigError),
    #[error("cannot listen on {address}: {source}")]
    Bind { address: String, source: std::io::Error },
    #[error("configuration: {0}")]
    Config(String),
    #[error("configuration: {0}")]
    Tenant(#[from] crate::tenancy::TenantConfigError),
}

pub struct Application {
    listener: TcpListener,
    state: AppState,
}

impl Application {
    /// Loads the model, prepares the database (create, migrate, seed per
    /// settings), builds the cache and binds `host:port` (port 0 = any free).
    pub async fn build(settings: Settings) -> Result<Self, StartupError> {
        let keys = KeySpace::new(&settings.cache.prefix)
            .ok_or_else(|| {
                StartupError::Config(format!(
                    "cache.prefix `{}` must be letters, digits, `_` or `-`",
                    settings.cache.prefix
                ))
            })?
            // A cluster runs multi-key commands on one slot only.
            .with_hash_tags(settings.redis.mode == crate::config::RedisMode::Cluster);
        if !crate::model::is_sql_identifier(&settings.freshness.channel, false) {
            return Err(StartupError::Config(format!(
                "freshness.channel `{}` must be an SQL identifier (letters, digits, `_`)",
                settings.freshness.channel
            )));
        }
        // Install the Prometheus recorder before anything records a metric.
        let _ = crate::telemetry::metrics_handle();
        let model = Arc::new(SemanticModel::load(&settings.model.path)?);
        // A dataset naming a database that is not configured stops the start.
        db::replica::check_model(&settings, &model).map_err(StartupError::Config)?;
        let tenants = Tenants::from_settings(&settings.auth, &settings.rate_limit, &model)?;
        let pool = db::pool(&settings.database)?;
        prepare_database_when_up(&settings, &pool).await?;
        // Every metric, dimension and join planned against the database: a
        // typo in the model stops the start, naming the field. A database
        // that cannot be asked now does not stop it (queries answer 503 and
        // a schema mismatch is still named when one meets it).
        match crate::db::model_check::check(&pool, &model).await {
            Ok(()) => {}
            Err(crate::db::model_check::CheckError::Mismatch(mismatch)) => return Err(mismatch.into()),
            Err(error) => {
                tracing::warn!(error = %crate::telemetry::ErrorChain(&error), "starting without the model check")
            }
        }
        // One Redis client for the process: the cache and the rate limiter share it.
        let redis = if settings.redis.enabled {
            let client = RedisClient::new(&settings.redis)?;
            client.report_at_start();
            Some(client)
        } else {
            None
        };
        let cache_redis = redis.clone().filter(|_| settings.cache.enabled);
        // The remote Redis of `[redis.remote]` and the sentinels' replicas:
        // the cache's only (leases, the rate limiter and the L1 broadcasts
        // stay on the local one), beside the local client.
        let remote_redis = match (&cache_redis, &settings.redis.remote) {
            (Some(local), Some(remote)) => Some(local.remote(&remote.as_redis())?),
            _ => None,
        };
        let replicas_redis = match &cache_redis {
            Some(local)
                if settings.redis.mode == crate::config::RedisMode::Sentinel
                    && settings.redis.sentinel.read_from_replicas =>
            {
                Some(local.replicas()?)
            }
            _ => None,
        };
        for client in remote_redis.iter().chain(&replicas_redis) {
            client.report_at_start();
        }
        let max_pending_remote_writes = settings.redis.remote.as_ref().map_or(0, |r| r.max_pending_writes);
        let l1_enabled = settings.cache.enabled && settings.cache.l1_enabled;
        // Unauthenticated requests run as `default`: one more tenant.
        let query_tenants = settings.auth.tenants.len() + usize::from(!settings.auth.required);
        let database = db::Database::new(pool.clone(), &settings.database, query_tenants)?;
        // Read replicas: queries only (everything else below gets `pool`).
        let replicas = db::replica::Replicas::new(&settings, &model, query_tenants).map_err(StartupError::Config)?;
        replicas.start().await;
        let status = Arc::default();
        // Names this instance in leases and broadcasts.
        let instance = format!("{}-{:016x}", std::process::id(), rand::random::<u64>());
        let lease = LeasePolicy {
            length: Duration::from_millis(settings.freshness.lease_ms.max(100)),
            wait: Duration::from_millis(settings.freshness.lease_wait_ms),
            token: instance.clone(),
        };
        let cache = Arc::new(
            QueryCache::new(&settings.cache, cache_redis.clone(), lease)
                .with_remote(remote_redis.clone(), max_pending_remote_writes)
                .with_replicas(replicas_redis.clone()),
        );
        let (rollups, reaggregated) = Rollups::new(
            Arc::clone(&model),
            pool.clone(),
            settings.rollups.clone(),
            settings.freshness.enabled,
        );
        let queries = QueryService::new(
            Arc::clone(&model),
            keys.clone(),
            (&settings.cache, &settings.freshness),
            Arc::clone(&cache),
            (database.clone(), Arc::clone(&replicas), Arc::clone(&rollups)),
            Arc::clone(&status),
        );
        let freshness = Arc::new(Freshness::new(
            Arc::clone(&model),
            keys.clone(),
            cache,
            cache_redis.clone(),
            settings.freshness.clone(),
            instance,
            Arc::clone(&rollups),
        ));
        freshness.start(pool.clone(), reaggregated).await;
        // After the first LISTEN: a rollup adopted now catches up with the
        // change log, and what it re-aggregates is invalidated.
        rollups.start();
        let health = HealthChecker::new((database, replicas), cache_redis, l1_enabled)
            .with_remote(remote_redis)
            .with_replicas(replicas_redis);
        let rate_limiter = RateLimiter::new(redis, keys);
        let auth = Authenticator::new(tenants, &settings.auth, pool);
        let address = format!("{}:{}", settings.server.host, settings.server.port);
        let listener = TcpListener::bind(&address)
            .await
            .map_err(|source| StartupError::Bind { address, source })?;
        let state = AppState::new(AppComponents {
            settings: Arc::new(settings),
            queries,
            freshness,
            health,
            auth,
            rate_limiter,
            status,
            started_at: Instant::now(),
        });
        Ok(Self { listener, state })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub fn port(&self) -> u16 {
        self.local_addr().map(|a| a.port()).unwrap_or_default()
    }

    /// Serves until SIGTERM or Ctrl-C.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.run_with_shutdown(shutdown_signal()).await
    }

    /// Serves until `shutdown` completes, then drains in-flight requests for
    /// at most `server.shutdown_grace_ms`.
    pub async fn run_with_shutdown(self, shutdown: impl Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
        let server = &self.state.settings.server;
        let limits = ConnectionLimits {
            max_connections: server.max_connections,
            header_read_timeout: Duration::from_millis(server.header_read_timeout_ms),
            max_header_bytes: server.max_header_bytes,
            shutdown_grace: Duration::from_millis(server.shutdown_grace_ms),
        };
        let l1_enabled = self.state.settings.cache.enabled && self.state.settings.cache.l1_enabled;
        let threads = match server.threads {
            _ if !server.runtime.per_core(l1_enabled) => None,
            0 => Some(std::thread::available_parallelism().map_or(1, |n| n.get())),
            threads => Some(threads),
        };
        match threads {
            Some(threads) => tracing::info!(threads, "serving connections on a thread per core"),
            None => tracing::info!("serving connections on the shared runtime"),
        }
        let app = crate::http::router(self.state);
        crate::http::server::serve(self.listener, app, limits, threads, shutdown).await
    }
}

/// The database error behind a start-up error, if it is one.
fn database_error(error: &StartupError) -> Option<&sqlx::Error> {
    match error {
        StartupError::Database(error) => Some(error),
        StartupError::Migrate(sqlx::migrate::MigrateError::Execute(error)) => Some(error),
        _ => None,
    }
}

/// Whether a start-up error means "the database is not up yet" (refused,
/// unreachable, starting up), worth waiting for.
fn not_up_yet(error: &StartupError) -> bool {
    let Some(sqlx_error) = database_error(error) else {
        return false;
    };
    match sqlx_error {
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::Tls(_) => true,
        // 57P03 cannot_connect_now: the server is starting up.
        sqlx::Error::Database(db) => db.code().is_some_and(|c| c == "57P03" || c.starts_with("08")),
        _ => false,
    }
}

/// Prepares the database, waiting (with backoff, at most
/// `database.startup_wait_seconds`) while it is not up yet: `docker compose
/// up` on a fresh volume starts the API before PostgreSQL accepts TCP.
async fn prepare_database_when_up(settings: &Settings, pool: &sqlx::PgPool) -> Result<(), StartupError> {
    let deadline = Instant::now() + Duration::from_secs(settings.database.startup_wait_seconds);
    let mut pause = Duration::from_millis(250);
    loop {
        let outcome = prepare_database(settings, pool).await;
        if let Some(problem) = outcome
            .as_ref()
            .err()
            .and_then(database_error)
            .and_then(db::tls_failure)
        {
            return Err(StartupError::DatabaseTls {
                at: db::describe(&settings.database),
                problem,
            });
        }
        match outcome {
            Err(error) if not_up_yet(&error) && Instant::now() + pause < deadline => {
                tracing::warn!(
                    database = %db::describe(&settings.database),
                    error = %error,
                    retry_in_ms = pause.as_millis() as u64,
                    "the database is not up yet; waiting (database.startup_wait_seconds)"
                );
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(5));
            }
            Err(error) if not_up_yet(&error) => {
                return Err(StartupError::DatabaseUnreachable {
                    at: db::describe(&settings.database),
                    waited: settings.database.startup_wait_seconds,
                    cause: error.to_string(),
                })
            }
            other => return other,
        }
    }
}

async fn prepare_database(settings: &Settings, pool: &sqlx::PgPool) -> Result<(), StartupError> {
    let database = &settings.database;
    if database.create_database && db::create_database_if_missing(database).await? {
        tracing::info!("created the database");
    }
    if database.migrate_on_start {
        db::migrate(pool).await?;
    }
    if database.seed_demo_on_empty && db::seed::sales_table_is_empty(pool).await? {
        tracing::info!(
            sales = database.seed_demo_sales,
            "sales table is empty; seeding the demo dataset"
        );
        let options = db::seed::SeedOptions {
            sales: database.seed_demo_sales,
            seed: 42,
            anchor: chrono::Utc::now().date_naive(),
        };
        db::seed::seed_demo(pool, &options).await?;
    }
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}
