//! Test harness: `spawn_app()` and friends.

use std::path::PathBuf;

use std::time::Duration;

use analytics_api::config::{Secret, Settings};
use analytics_api::Application;

pub use crate::processes::{DelayProxy, RedisProcess};
use chrono::NaiveDate;
use serde_json::Value;
use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, PgConnection, PgPool};
use tokio::sync::OnceCell;

pub const ADMIN_TOKEN: &str = "test-admin-token";
/// The demo data of every test database ends on this day.
pub const ANCHOR: &str = "2024-06-30";
pub const TEST_SALES: u64 = 3_000;
/// The demo generator's seed of every test database.
pub const SEED: u64 = 7;

/// Where PostgreSQL is: `TEST_DATABASE_URL` without a database name.
fn server_url() -> String {
    std::env::var("TEST_DATABASE_SERVER").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

pub fn redis_url() -> String {
    std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

pub fn anchor() -> NaiveDate {
    NaiveDate::parse_from_str(ANCHOR, "%Y-%m-%d").expect("anchor date")
}

pub struct TestApp {
    /// The test's own database, dropped with the `TestApp` that created it.
    db_name: String,
    /// False for a peer (a second instance on the same database).
    owns_database: bool,
    pub address: String,
    pub client: reqwest::Client,
    /// A pool on the test's own database, for hand-written SQL.
    pub db: PgPool,
    pub prefix: String,
    pub redis_url: String,
}

impl TestApp {
    /// The URL of the test's own database (for a server process of its own).
    pub fn database_url(&self) -> String {
        format!("{}/{}", server_url(), self.db_name)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    pub async fn query(&self, body: Value) -> reqwest::Response {
        self.client
            .post(self.url("/analytics/query"))
            .json(&body)
            .send()
            .await
            .expect("request")
    }

    /// POSTs a query that must succeed and returns the body.
    pub async fn query_ok(&self, body: Value) -> Value {
        let response = self.query(body.clone()).await;
        let status = response.status();
        let json: Value = response.json().await.expect("json body");
        assert_eq!(status, 200, "query {body} failed: {json}");
        json
    }

    pub fn admin(&self, builder: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        builder.bearer_auth(ADMIN_TOKEN)
    }

    /// `GET /cache/stats` with the admin token.
    pub async fn cache_stats(&self) -> Value {
        let response = self
            .admin(self.client.get(self.url("/cache/stats")))
            .send()
            .await
            .expect("stats");
        assert_eq!(response.status(), 200);
        response.json().await.expect("stats json")
    }

    /// POSTs a query and returns its `X-Cache` header.
    pub async fn x_cache(&self, body: Value) -> String {
        let response = self.query(body).await;
        assert_eq!(response.status(), 200);
        response.headers()["x-cache"].to_str().expect("x-cache").to_owned()
    }

    /// A Redis connection for inspecting what the server stored.
    pub async fn redis(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.redis_url.as_str())
            .expect("redis url")
            .get_multiplexed_async_connection()
            .await
            .expect("redis connection")
    }
}

impl Drop for TestApp {
    /// Drops the test's database so runs do not pile up copies. `Drop` cannot
    /// await, so a short-lived thread with its own runtime does it; `FORCE`
    /// ends the server's still-open connections.
    fn drop(&mut self) {
        if !self.owns_database {
            return;
        }
        let name = std::mem::take(&mut self.db_name);
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(async {
                let mut admin = PgConnection::connect(&format!("{}/postgres", server_url()))
                    .await
                    .ok()?;
                sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                    .execute(&mut admin)
                    .await
                    .ok()
            })
        })
        .join();
    }
}

/// Spawns the app with test defaults.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Spawns the app after `customize` has adjusted the test settings.
pub async fn spawn_app_with(customize: impl FnOnce(&mut Settings)) -> TestApp {
    spawn_app_until(customize, std::future::pending()).await.0
}

/// Spawns the app, serving until `shutdown` completes; also returns the
/// server task, which ends once the server has drained.
pub async fn spawn_app_until(
    customize: impl FnOnce(&mut Settings),
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> (TestApp, tokio::task::JoinHandle<std::io::Result<()>>) {
    init_test_logging();
    let db_name = format!("t_{}", uuid::Uuid::new_v4().simple());
    create_test_database(&db_name).await;
    let prefix = format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    start_instance(db_name, prefix, true, customize, shutdown).await
}

/// Why the server refuses to start with these settings (on a test database
/// of its own), as its error message.
pub async fn startup_error(customize: impl FnOnce(&mut Settings)) -> String {
    init_test_logging();
    let db_name = format!("t_{}", uuid::Uuid::new_v4().simple());
    create_test_database(&db_name).await;
    let mut settings = test_settings(&db_name, "tstartup");
    customize(&mut settings);
    let error = match Application::build(settings).await {
        Ok(_) => panic!("the server started"),
        Err(error) => error.to_string(),
    };
    if let Ok(mut admin) = PgConnection::connect(&format!("{}/postgres", server_url())).await {
        let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS \"{db_name}\" WITH (FORCE)"))
            .execute(&mut admin)
            .await;
    }
    error
}

impl TestApp {
    /// POSTs a query as the holder of `key`.
    pub async fn query_as(&self, key: &str, body: &Value) -> reqwest::Response {
        self.client
            .post(self.url("/analytics/query"))
            .bearer_auth(key)
            .json(body)
            .send()
            .await
            .expect("request")
    }

    /// The Prometheus text of `/metrics`.
    pub async fn metrics_text(&self) -> String {
        self.client
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text")
    }

    /// Waits (at most 30 s) until no rollup of this instance is still being
    /// built: a build that completes mid-test invalidates what changed during
    /// it by days, not by the tracked values, which would blur tests of
    /// precise invalidation.
    pub async fn rollups_settled(&self) {
        let started = std::time::Instant::now();
        loop {
            let stats = self.cache_stats().await;
            let rollups = stats["rollups"].as_array().cloned().unwrap_or_default();
            if rollups
                .iter()
                .all(|r| matches!(r["state"].as_str(), Some("ready" | "disabled" | "failing")))
            {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "rollups still building: {stats}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A second instance of the server on this test's database and cache
    /// prefix (sharing its Redis), as behind a load balancer.
    pub async fn spawn_peer(&self, customize: impl FnOnce(&mut Settings)) -> TestApp {
        let redis_url = self.redis_url.clone();
        let customize = move |s: &mut Settings| {
            s.redis.url = Secret::new(redis_url);
            customize(s);
        };
        start_instance(
            self.db_name.clone(),
            self.prefix.clone(),
            false,
            customize,
            std::future::pending(),
        )
        .await
        .0
    }

    /// An admin `/cache/stats` counter of this instance (`app.<name>`).
    pub async fn app_counter(&self, name: &str) -> u64 {
        self.cache_stats().await["app"][name]
            .as_u64()
            .unwrap_or_else(|| panic!("app.{name}"))
    }
}

fn test_settings(db_name: &str, prefix: &str) -> Settings {
    let mut settings = Settings::default();
    settings.server.host = "127.0.0.1".into();
    settings.server.port = 0;
    settings.database.url = Secret::new(format!("{}/{db_name}", server_url()));
    settings.database.max_connections = 8;
    settings.database.migrate_on_start = true;
    settings.database.seed_demo_on_empty = false;
    settings.redis.url = Secret::new(redis_url());
    settings.cache.prefix = prefix.to_owned();
    // Test keys in the shared Redis should not outlive the run by much.
    settings.cache.historical_ttl_seconds = 600;
    settings.auth.admin_token = Some(Secret::new(ADMIN_TOKEN));
    settings.model.path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config/model.toml");
    settings
}

async fn start_instance(
    db_name: String,
    prefix: String,
    owns_database: bool,
    customize: impl FnOnce(&mut Settings),
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> (TestApp, tokio::task::JoinHandle<std::io::Result<()>>) {
    let mut settings = test_settings(&db_name, &prefix);
    customize(&mut settings);
    let redis_url = settings.redis.url.expose().to_owned();

    let app = Application::build(settings).await.expect("application builds");
    let address = format!("http://127.0.0.1:{}", app.port());
    let server = tokio::spawn(app.run_with_shutdown(shutdown));

    let db = PgPoolOptions::new()
        .max_connections(4)
        .connect(&format!("{}/{db_name}", server_url()))
        .await
        .expect("test pool");
    let app = TestApp {
        db_name,
        owns_database,
        address,
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("client"),
        db,
        prefix,
        redis_url,
    };
    (app, server)
}

fn init_test_logging() {
    if std::env::var_os("TEST_LOG").is_some() {
        // The guard must outlive every test in this process; leak it.
        std::mem::forget(analytics_api::telemetry::init_logging(&Default::default()));
    }
}

static TEMPLATE: OnceCell<String> = OnceCell::const_new();

/// Creates `name` as a copy of a migrated and seeded template database; the
/// template is built once per migration set and reused across runs.
async fn create_test_database(name: &str) {
    let template = TEMPLATE.get_or_init(build_template).await;
    let mut admin = PgConnection::connect(&format!("{}/postgres", server_url()))
        .await
        .expect("connect postgres");
    // CREATE DATABASE ... TEMPLATE fails while anyone else copies the same
    // template; retry briefly.
    for attempt in 0..50 {
        match sqlx::query(&format!("CREATE DATABASE \"{name}\" TEMPLATE \"{template}\""))
            .execute(&mut admin)
            .await
        {
            Ok(_) => return,
            Err(error) if attempt < 49 => {
                tracing::debug!(%error, "template busy; retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(error) => panic!("create test database: {error}"),
        }
    }
}

async fn build_template() -> String {
    let migrations: String = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations"))
        .expect("migrations dir")
        .filter_map(|e| e.ok())
        .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
        .collect();
    let seed_source = [
        include_str!("../../src/db/seed/mod.rs"),
        include_str!("../../src/db/seed/sql.rs"),
    ]
    .concat();
    let fingerprint = md5_hex(&format!("{migrations}{seed_source}{TEST_SALES}{SEED}{ANCHOR}"));
    let template = format!("tmpl_{}", &fingerprint[..16]);

    let mut admin = PgConnection::connect(&format!("{}/postgres", server_url()))
        .await
        .expect("connect postgres");
    // Serialize template builds across test processes.
    sqlx::query("SELECT pg_advisory_lock(727274)")
        .execute(&mut admin)
        .await
        .expect("lock");
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
        .bind(&template)
        .fetch_one(&mut admin)
        .await
        .expect("check template");
    if !exists {
        // Templates of older migrations or seeds are of no further use.
        let stale: Vec<String> =
            sqlx::query_scalar("SELECT datname FROM pg_database WHERE datname LIKE 'tmpl\\_%' AND datname <> $1")
                .bind(&template)
                .fetch_all(&mut admin)
                .await
                .unwrap_or_default();
        for name in stale {
            let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                .execute(&mut admin)
                .await;
        }
        let building = format!("{template}_building");
        sqlx::query(&format!("DROP DATABASE IF EXISTS \"{building}\""))
            .execute(&mut admin)
            .await
            .expect("drop");
        sqlx::query(&format!("CREATE DATABASE \"{building}\""))
            .execute(&mut admin)
            .await
            .expect("create template");
        {
            let pool = PgPoolOptions::new()
                .max_connections(2)
                .connect(&format!("{}/{building}", server_url()))
                .await
                .expect("template pool");
            crate::pg_cluster::migrate_and_seed(&pool).await;
            pool.close().await;
        }
        sqlx::query(&format!("ALTER DATABASE \"{building}\" RENAME TO \"{template}\""))
            .execute(&mut admin)
            .await
            .expect("rename template");
    }
    sqlx::query("SELECT pg_advisory_unlock(727274)")
        .execute(&mut admin)
        .await
        .expect("unlock");
    template
}

pub fn md5_hex(text: &str) -> String {
    use md5::{Digest, Md5};
    hex::encode(Md5::digest(text.as_bytes()))
}

/// `.json_body().await`: send, then parse the response body as JSON.
pub trait SendJson {
    fn json_body(self) -> impl std::future::Future<Output = Value> + Send;
}

impl SendJson for reqwest::RequestBuilder {
    async fn json_body(self) -> Value {
        self.send().await.expect("request").json().await.expect("JSON body")
    }
}

/// JSON number as f64, for comparing API values with SQL ones.
pub fn num(value: &Value) -> f64 {
    value
        .as_f64()
        .unwrap_or_else(|| panic!("expected a number, got {value}"))
}

pub fn assert_close(actual: f64, expected: f64, what: &str) {
    assert!(
        (actual - expected).abs() <= 1e-6 * expected.abs().max(1.0),
        "{what}: api {actual} != sql {expected}"
    );
}
