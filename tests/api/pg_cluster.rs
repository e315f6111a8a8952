//! PostgreSQL clusters of a test's own (never the shared one): `initdb` as
//! user `postgres` into a temporary directory, extra `postgresql.conf` and
//! `pg_hba.conf` lines, started on a free port and waited for, stopped
//! (immediate shutdown, by data directory) and removed on drop. Plus
//! [`create_and_seed`]: the schema and the test data, as in the template
//! database of the shared cluster.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use analytics_api::db::seed::{seed_demo, SeedOptions};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgConnection, PgPool};

use crate::helpers::{anchor, SEED, TEST_SALES};
use crate::processes::free_port;

/// Where the PostgreSQL 15 binaries are.
const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// How long a cluster may take to accept connections.
const READY_WITHIN: Duration = Duration::from_secs(30);

/// A PostgreSQL `program` run as user `postgres` (it refuses to run as root).
fn as_postgres(program: &str) -> tokio::process::Command {
    let mut command = tokio::process::Command::new("runuser");
    command.args(["-u", "postgres", "--", &format!("{PG_BIN}/{program}")]);
    command
}

/// Runs `command` to its end; panics with its stderr unless it succeeded.
async fn run(command: &mut tokio::process::Command, what: &str) {
    let output = command.stdout(Stdio::null()).output().await.expect(what);
    assert!(
        output.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A cluster of the test's own on a free port, running as user `postgres`
/// with `fsync=off`, its socket and log in its own temporary directory.
/// Not running until [`PrivateCluster::start`]; stopped and removed on drop.
pub struct PrivateCluster {
    pub port: u16,
    dir: PathBuf,
}

impl PrivateCluster {
    /// A new directory named after `kind`, owned by `postgres`.
    async fn empty(kind: &str) -> Self {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("analytics-{kind}-{port}-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("cluster dir");
        run(
            tokio::process::Command::new("chown").arg("postgres:").arg(&dir),
            "chown",
        )
        .await;
        Self { port, dir }
    }

    /// `initdb` (trust authentication, UTF8, locale C); not started yet.
    pub async fn init(kind: &str) -> Self {
        let cluster = Self::empty(kind).await;
        run(
            as_postgres("initdb")
                .args(["-A", "trust", "-U", "postgres"])
                .args(["--no-sync", "-E", "UTF8", "--locale", "C", "-D"])
                .arg(cluster.data()),
            "initdb (runs as user postgres)",
        )
        .await;
        cluster
    }

    /// A streaming replica of `primary` (`pg_basebackup -R`); not started yet.
    pub async fn base_backup(kind: &str, primary: &Self) -> Self {
        let cluster = Self::empty(kind).await;
        run(
            as_postgres("pg_basebackup")
                .args(["-h", "127.0.0.1", "-p", &primary.port.to_string(), "-U", "postgres"])
                .args(["-R", "-X", "stream", "-c", "fast", "-D"])
                .arg(cluster.data()),
            "pg_basebackup",
        )
        .await;
        cluster
    }

    /// The cluster's own temporary directory (removed on drop).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn log(&self) -> PathBuf {
        self.dir.join("log")
    }

    /// Appends `lines` to `postgresql.conf`.
    pub fn configure(&self, lines: &str) {
        self.append(&self.data().join("postgresql.conf"), lines);
    }

    /// Appends `rules` to `pg_hba.conf` (earlier rules match first).
    pub fn allow(&self, rules: &str) {
        self.append(&self.data().join("pg_hba.conf"), rules);
    }

    /// Replaces `pg_hba.conf` with `rules`.
    pub fn replace_hba(&self, rules: &str) {
        std::fs::write(self.data().join("pg_hba.conf"), rules).expect("pg_hba.conf");
    }

    fn append(&self, path: &Path, lines: &str) {
        let mut text = std::fs::read_to_string(path).expect("read configuration");
        text.push('\n');
        text.push_str(lines);
        text.push('\n');
        std::fs::write(path, text).expect("write configuration");
    }

    /// A plain TCP URL to `db` as user `postgres`.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// Starts the (stopped) cluster and waits until it accepts connections
    /// (on its Unix socket, which `pg_hba.conf` always trusts here).
    pub async fn start(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.display()
        );
        run(
            as_postgres("pg_ctl")
                .args(["start", "-W", "-D"])
                .arg(self.data())
                .arg("-l")
                .arg(self.log())
                .args(["-o", &options]),
            "pg_ctl start",
        )
        .await;
        let socket = PgConnectOptions::new()
            .socket(&self.dir)
            .port(self.port)
            .username("postgres")
            .database("postgres");
        let started = Instant::now();
        loop {
            if let Ok(connection) = socket.connect().await {
                let _ = connection.close().await;
                return;
            }
            assert!(
                started.elapsed() < READY_WITHIN,
                "PostgreSQL on port {} did not start; see {}",
                self.port,
                self.log().display()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Immediate shutdown: the server processes exit at once, connections drop.
    pub fn stop(&self) {
        let _ = std::process::Command::new("runuser")
            .args(["-u", "postgres", "--", &format!("{PG_BIN}/pg_ctl")])
            .args(["stop", "-m", "immediate", "-D"])
            .arg(self.data())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Creates database `analytics` on the server of `server` (its own database
/// name is ignored; `postgres` is used to create), migrates it and seeds the
/// test data; returns a pool of two on it.
pub async fn create_and_seed(server: PgConnectOptions) -> PgPool {
    let mut admin = PgConnection::connect_with(&server.clone().database("postgres"))
        .await
        .expect("connect postgres");
    sqlx::query("CREATE DATABASE analytics")
        .execute(&mut admin)
        .await
        .expect("create database");
    admin.close().await.expect("close");
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .connect_with(server.database("analytics"))
        .await
        .expect("pool");
    migrate_and_seed(&pool).await;
    pool
}

/// The schema and the test data (`TEST_SALES`, `SEED`, `anchor()`) on `pool`.
pub async fn migrate_and_seed(pool: &PgPool) {
    analytics_api::db::migrate(pool).await.expect("migrate");
    let options = SeedOptions {
        sales: TEST_SALES,
        seed: SEED,
        anchor: anchor(),
    };
    seed_demo(pool, &options).await.expect("seed");
}
