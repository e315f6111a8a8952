//! PostgreSQL: the pool, database creation and migrations, running a
//! compiled query, and change capture.
//!
//! - `capture`: trigger install and the LISTEN connection
//! - `guard`: admission control (load shedding) and the breaker
//! - `model_check`: the model's SQL planned against the database
//! - `replica`: read replicas, per dataset, with fallback to the primary
//! - `seed`: the demo dataset generator

pub mod capture;
pub mod guard;
pub mod model_check;
pub mod replica;
pub mod seed;

use std::sync::Arc;

use std::str::FromStr;
use std::time::{Duration, Instant};

use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgSslMode};
use sqlx::{PgPool, Postgres, QueryBuilder, Row};

use crate::config::DatabaseSettings;

/// Why a database call failed, in the terms the API answers with.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DbError {
    /// The statement ran past `statement_timeout` (504).
    #[error("query exceeded the statement timeout")]
    Timeout,
    /// No connection could be had: pool exhausted or server unreachable (503).
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// Refused at once: every place for statements is taken (503).
    #[error("database overloaded: {0}")]
    Overloaded(String),
    /// PostgreSQL refused a value (SQLSTATE class 22, data exception: a
    /// character it cannot store, a number out of range): the request's
    /// fault, so a 422, never a 500.
    #[error("the database refused a value: {0}")]
    InvalidValue(String),
    /// The model's SQL does not fit the schema (a column renamed under a
    /// running server): the operator's to fix (500 `model_error`).
    #[error("the model does not match the database: {0}")]
    Model(String),
    /// Anything else; a bug (500).
    #[error("database error: {0}")]
    Query(String),
}

impl From<sqlx::Error> for DbError {
    fn from(error: sqlx::Error) -> Self {
        match &error {
            sqlx::Error::Database(db) if db.code().as_deref() == Some("57014") => Self::Timeout,
            sqlx::Error::Database(db) if db.code().is_some_and(|c| c.starts_with("22")) => {
                Self::InvalidValue(error.to_string())
            }
            // 57P01..57P03: admin shutdown, crash shutdown, cannot connect now.
            sqlx::Error::Database(db) if db.code().is_some_and(|c| c.starts_with("57P") || c.starts_with("08")) => {
                Self::Unavailable(error.to_string())
            }
            sqlx::Error::Database(db) if db.code().is_some_and(|c| model_check::is_model_error(&c)) => {
                Self::Model(error.to_string())
            }
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) | sqlx::Error::Tls(_) => {
                Self::Unavailable(error.to_string())
            }
            _ => Self::Query(crate::telemetry::ErrorChain(&error).to_string()),
        }
    }
}

/// `host:port/database` of the configured database, for messages (never the
/// password).
pub fn describe(settings: &DatabaseSettings) -> String {
    settings.url.address(5432)
}

/// Connection options shared by every pool and connection (servers, CLI,
/// LISTEN, migrations, database creation): the statement timeout is set per
/// connection at connect time, so no query pays an extra round trip for it.
///
/// TLS comes from the URL (`sslmode`, `sslrootcert`), as in libpq: the CA
/// file is read now, so a wrong path stops the start with its name, and a
/// CA file with `sslmode=require` verifies the chain (`verify-ca`) rather
/// than being ignored.
pub fn connect_options(settings: &DatabaseSettings) -> Result<PgConnectOptions, sqlx::Error> {
    crate::tls::install_crypto_provider();
    let mut options = PgConnectOptions::from_str(settings.url.expose())?
        .application_name("analytics-api")
        .options([("statement_timeout", format!("{}ms", settings.statement_timeout_ms))]);
    if let Some(path) = crate::config::postgres_root_cert(settings.url.expose()) {
        crate::tls::read_ca_file("DATABASE_URL sslrootcert", std::path::Path::new(&path))
            .map_err(|problem| sqlx::Error::Configuration(problem.into()))?;
        if matches!(options.get_ssl_mode(), PgSslMode::Require) {
            options = options.ssl_mode(PgSslMode::VerifyCa);
        }
    }
    Ok(options)
}

/// A failed TLS negotiation with the database (a certificate not trusted, a
/// server without TLS), in words that say what to fix; `None` for any other
/// error. Such a failure does not go away by waiting.
pub fn tls_failure(error: &sqlx::Error) -> Option<String> {
    if let sqlx::Error::Tls(inner) = error {
        if inner.to_string().contains("does not support TLS") {
            return Some("the server does not support TLS, but sslmode in DATABASE_URL requires it".into());
        }
    }
    let failure = crate::tls::handshake_failure(error)?;
    Some(if failure.certificate {
        format!(
            "TLS handshake failed: {failure}; sslrootcert in DATABASE_URL must name the CA file that signed it \
             (public CAs are trusted without it)"
        )
    } else {
        format!("TLS handshake failed: {failure}")
    })
}

/// A lazy pool: the server starts (and `/health` reports) even while the
/// database is down.
pub fn pool(settings: &DatabaseSettings) -> Result<PgPool, sqlx::Error> {
    Ok(PgPoolOptions::new()
        .max_connections(settings.max_connections)
        .min_connections(settings.min_connections)
        .acquire_timeout(Duration::from_millis(settings.acquire_timeout_ms))
        .connect_lazy_with(connect_options(settings)?))
}

/// A small pool for a command-line task, named apart from the servers'
/// connections (`analytics-api-cli`), so it can tell them from its own.
pub fn cli_pool(settings: &DatabaseSettings) -> Result<PgPool, sqlx::Error> {
    Ok(PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(Duration::from_millis(settings.acquire_timeout_ms))
        .connect_lazy_with(connect_options(settings)?.application_name("analytics-api-cli")))
}

/// Creates the database named in the URL when it does not exist yet, over
/// the same connection options (TLS included) as every other connection,
/// from the maintenance database `createdb` would use.
pub async fn create_database_if_missing(settings: &DatabaseSettings) -> Result<bool, sqlx::Error> {
    use sqlx::{ConnectOptions, Connection};
    let options = connect_options(settings)?;
    let name = options.get_database().unwrap_or(options.get_username()).to_owned();
    let maintenance = if name == "postgres" { "template1" } else { "postgres" };
    // No statement timeout: CREATE DATABASE copies a template.
    let mut admin = options
        .database(maintenance)
        .options([("statement_timeout", "0")])
        .connect()
        .await?;
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
        .bind(&name)
        .fetch_one(&mut admin)
        .await?;
    let created = if exists {
        false
    } else {
        let statement = format!("CREATE DATABASE \"{}\"", name.replace('"', "\"\""));
        match sqlx::query(&statement).execute(&mut admin).await {
            Ok(_) => true,
            // 42P04 duplicate_database: another instance created it meanwhile.
            Err(sqlx::Error::Database(error)) if error.code().as_deref() == Some("42P04") => false,
            Err(error) => return Err(error),
        }
    };
    let _ = admin.close().await;
    Ok(created)
}

/// Runs pending migrations from `migrations/` (embedded at build time).
///
/// On a connection of its own, opened without the per-query
/// `statement_timeout` (a later `-c` option wins): a schema change may
/// legitimately take longer than a dashboard query is allowed to, and even a
/// `SET` could miss a timeout of a few milliseconds on a busy server.
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    use sqlx::{ConnectOptions, Connection};
    let options = (*pool.connect_options()).clone().options([("statement_timeout", "0")]);
    let mut connection = options.connect().await?;
    sqlx::migrate!("./migrations").run(&mut connection).await?;
    connection.close().await?;
    Ok(())
}

/// One result set, as PostgreSQL rendered it.
#[derive(Debug, Clone)]
pub struct QueryResult {
    pub rows: u64,
    /// The JSON array of result rows, ready to be spliced into a response.
    pub data: String,
    /// Rows before limit/offset, when the statement counted them (`total`).
    pub total: Option<u64>,
    pub elapsed: Duration,
}

/// Runs a statement built by the model compiler.
#[tracing::instrument(name = "db.fetch", skip_all, fields(db_ms))]
pub async fn fetch(pool: &PgPool, mut sql: QueryBuilder<'static, Postgres>) -> Result<QueryResult, DbError> {
    let started = Instant::now();
    let outcome = sql.build().fetch_one(pool).await;
    let elapsed = started.elapsed();
    tracing::Span::current().record("db_ms", elapsed.as_secs_f64() * 1e3);
    let status = if outcome.is_ok() { "ok" } else { "error" };
    metrics::histogram!("analytics_db_query_duration_seconds", "status" => status).record(elapsed.as_secs_f64());
    let row = outcome?;
    let rows: i64 = row.try_get("total_rows")?;
    let data: String = row.try_get("data")?;
    // Only statements of `"total": true` requests have this column.
    let total = row.try_get::<i64, _>("total").ok().and_then(|t| u64::try_from(t).ok());
    metrics::histogram!("analytics_result_rows").record(rows as f64);
    metrics::histogram!("analytics_result_bytes").record(data.len() as f64);
    Ok(QueryResult {
        rows: u64::try_from(rows).unwrap_or_default(),
        data,
        total,
        elapsed,
    })
}

/// The database as the server uses it: the pool behind admission control
/// and a breaker (see `guard`).
#[derive(Clone)]
pub struct Database {
    pool: PgPool,
    guard: Arc<guard::Guard>,
}

/// How long a health check waits for the database.
const PING_LIMIT: Duration = Duration::from_secs(1);

impl Database {
    /// `tenants`: how many tenants can send queries (see `Guard::new`).
    pub fn new(pool: PgPool, settings: &DatabaseSettings, tenants: usize) -> Result<Self, sqlx::Error> {
        let guard = guard::Guard::new(settings, connect_options(settings)?, tenants);
        Ok(Self { pool, guard })
    }

    /// Read replica `name`: a pool of its own (`application_name`
    /// `analytics-api-replica`) behind a guard and breaker of its own.
    pub fn for_replica(name: &str, settings: &DatabaseSettings, tenants: usize) -> Result<Self, sqlx::Error> {
        let options = connect_options(settings)?.application_name(replica::APPLICATION_NAME);
        let pool = PgPoolOptions::new()
            .max_connections(settings.max_connections)
            .min_connections(settings.min_connections)
            .acquire_timeout(Duration::from_millis(settings.acquire_timeout_ms))
            .connect_lazy_with(options.clone());
        let guard = guard::Guard::for_replica(name, settings, options, tenants);
        Ok(Self { pool, guard })
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Whether its breaker has the database down.
    pub fn breaker_open(&self) -> bool {
        self.guard.is_open()
    }

    /// Runs a compiled statement for `tenant`, if admitted.
    pub async fn fetch(&self, tenant: &str, sql: QueryBuilder<'static, Postgres>) -> Result<QueryResult, DbError> {
        let _admission = self.guard.admit(tenant).await?;
        let outcome = fetch(&self.pool, sql).await;
        self.guard.record(&outcome);
        outcome
    }

    /// A cheap round trip for health checks: answered at once while the
    /// breaker has the database down, and bounded otherwise.
    pub async fn ping(&self) -> Result<Duration, DbError> {
        if self.guard.is_open() {
            return Err(DbError::Unavailable("breaker open".into()));
        }
        let started = Instant::now();
        // No answer within the limit is the database unreachable (waiting
        // for a connection), not a statement PostgreSQL cancelled: it must
        // count against the breaker, never for it.
        let outcome = tokio::time::timeout(PING_LIMIT, sqlx::query("SELECT 1").execute(&self.pool))
            .await
            .map_err(|_| DbError::Unavailable(format!("no answer to a ping within {PING_LIMIT:?}")))
            .and_then(|result| result.map_err(DbError::from));
        self.guard.record(&outcome);
        outcome.map(|_| started.elapsed())
    }
}
