//! TLS to Redis (`rediss://` + `redis.tls_ca_file`) and to PostgreSQL
//! (`sslmode=verify-full&sslrootcert=`), against a redis-server and a
//! PostgreSQL cluster of the test's own that accept TLS only, with
//! certificates the test makes: the right CA serves, a wrong one is named.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use analytics_api::config::{Secret, Settings};
use analytics_api::redis::RedisClient;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use serde_json::{json, Value};
use sqlx::postgres::PgConnectOptions;
use sqlx::Connection;

use crate::helpers::{spawn_app_with, startup_error, SendJson};
use crate::pg_cluster::{create_and_seed, PrivateCluster};
use crate::processes::{free_port, redis_server};

/// In every URL, so that the tests can check no message shows it.
const PASSWORD: &str = "tls-test-secret-pw";

/// How long a server of the test's own may take to accept connections.
const READY_WITHIN: Duration = Duration::from_secs(20);

fn query() -> Value {
    json!({"metrics": ["revenue", "sales_count"], "dimensions": ["channel"]})
}

/// A CA, a server certificate it signed for `localhost` and 127.0.0.1, and
/// a second CA that signed nothing here; PEM files in a temporary directory
/// (removed on drop).
struct Pki {
    dir: PathBuf,
}

impl Pki {
    fn generate() -> Self {
        let dir = std::env::temp_dir().join(format!("analytics-tls-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("pki dir");
        let pki = Self { dir };
        let ca = certificate_authority("analytics test CA");
        let other = certificate_authority("an unrelated CA");
        let server_key = KeyPair::generate().expect("server key");
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).expect("server params");
        params.distinguished_name.push(DnType::CommonName, "localhost");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        let server = params.signed_by(&server_key, &ca).expect("server certificate");
        std::fs::write(pki.ca(), ca.pem()).expect("write ca");
        std::fs::write(pki.other_ca(), other.pem()).expect("write other ca");
        std::fs::write(pki.server_cert(), server.pem()).expect("write server certificate");
        std::fs::write(pki.server_key(), server_key.serialize_pem()).expect("write server key");
        pki
    }

    fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    fn other_ca(&self) -> PathBuf {
        self.dir.join("other-ca.pem")
    }

    fn server_cert(&self) -> PathBuf {
        self.dir.join("server.crt")
    }

    fn server_key(&self) -> PathBuf {
        self.dir.join("server.key")
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn certificate_authority(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    CertifiedIssuer::self_signed(params, KeyPair::generate().expect("ca key")).expect("ca certificate")
}

/// A redis-server of the test's own that speaks TLS only (no plain port),
/// with a password; killed by PID on drop.
struct TlsRedis {
    port: u16,
    child: Child,
    dir: PathBuf,
}

impl TlsRedis {
    async fn start(pki: &Pki) -> Self {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("analytics-redis-tls-{port}-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("redis dir");
        let child = redis_server(&dir)
            .args(["--port", "0", "--tls-port", &port.to_string()])
            .arg("--tls-cert-file")
            .arg(pki.server_cert())
            .arg("--tls-key-file")
            .arg(pki.server_key())
            .arg("--tls-ca-cert-file")
            .arg(pki.ca())
            .args(["--tls-auth-clients", "no", "--requirepass", PASSWORD])
            .spawn()
            .expect("redis-server must be installed (apt-get install redis-server)");
        let redis = Self { port, child, dir };
        let started = Instant::now();
        loop {
            if let Ok(mut connection) = redis.connection(pki).await {
                if redis::cmd("PING").query_async::<String>(&mut connection).await.is_ok() {
                    return redis;
                }
            }
            assert!(
                started.elapsed() < READY_WITHIN,
                "redis-server with TLS on port {port} did not start"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn url(&self) -> String {
        format!("rediss://:{PASSWORD}@127.0.0.1:{}", self.port)
    }

    /// A TLS connection trusting the test CA, for inspecting what the server stored.
    async fn connection(&self, pki: &Pki) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
        let certificates = redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(std::fs::read(pki.ca()).expect("read ca")),
        };
        redis::Client::build_with_tls(self.url(), certificates)?
            .get_multiplexed_async_connection()
            .await
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test]
async fn rediss_with_the_configured_ca_caches_and_an_untrusted_certificate_is_named() {
    let pki = Pki::generate();
    let redis = TlsRedis::start(&pki).await;
    let (url, ca) = (redis.url(), pki.ca());
    let app = spawn_app_with(move |s| {
        s.redis.url = Secret::new(url);
        s.redis.tls_ca_file = Some(ca);
        // A handshake on a loaded test machine may take longer than 200 ms.
        s.redis.connect_timeout_ms = 2_000;
        s.redis.command_timeout_ms = 1_000;
        s.cache.l1_enabled = false;
    })
    .await;
    let health: Value = app.client.get(app.url("/health")).json_body().await;
    assert_eq!(health["cache"]["redis"], json!("up"), "{health}");
    let first = app.query_ok(query()).await;
    assert_eq!(first["metadata"]["from_cache"], json!(false), "{first}");
    let second = app.query_ok(query()).await;
    assert_eq!(second["metadata"]["cache_tier"], json!("redis"), "{second}");
    assert_eq!(second["data"], first["data"]);
    // The entry is on the TLS server (the shared Redis was never named).
    let mut connection = redis.connection(&pki).await.expect("tls connection");
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}*", app.prefix))
        .query_async(&mut connection)
        .await
        .expect("keys");
    assert!(!keys.is_empty(), "no entry on the TLS redis-server");

    // A CA that did not sign the server's certificate: the client is built
    // (the server starts while Redis is unreachable, as for any outage),
    // and the failure names the server and the certificate, never the password.
    let mut settings = Settings::default();
    settings.redis.url = Secret::new(redis.url());
    settings.redis.tls_ca_file = Some(pki.other_ca());
    settings.redis.connect_timeout_ms = 2_000;
    let client = RedisClient::new(&settings.redis).expect("client builds");
    let error = client
        .ping_fresh()
        .await
        .expect_err("an untrusted certificate")
        .to_string();
    assert!(
        error.contains(&format!("127.0.0.1:{}", redis.port)) && error.contains("certificate was not trusted"),
        "{error}"
    );
    assert!(error.contains("APP__REDIS__TLS_CA_FILE"), "{error}");
    assert!(!error.contains(PASSWORD), "{error}");

    let (url, other) = (redis.url(), pki.other_ca());
    let untrusting = spawn_app_with(move |s| {
        s.redis.url = Secret::new(url);
        s.redis.tls_ca_file = Some(other);
        s.redis.connect_timeout_ms = 2_000;
        s.cache.l1_enabled = false;
    })
    .await;
    let health: Value = untrusting.client.get(untrusting.url("/health")).json_body().await;
    assert_eq!(health["cache"]["redis"], json!("down"), "{health}");
    let body = untrusting.query_ok(query()).await;
    assert_ne!(body["metadata"]["cache_tier"], json!("redis"), "{body}");
}

#[tokio::test]
async fn redis_ca_files_that_cannot_be_used_stop_the_start_naming_the_setting() {
    let missing = PathBuf::from("/nonexistent/analytics-tls/ca.pem");
    let path = missing.clone();
    let message = startup_error(move |s| {
        s.redis.url = Secret::new(format!("rediss://:{PASSWORD}@127.0.0.1:6380"));
        s.redis.tls_ca_file = Some(path);
    })
    .await;
    assert!(
        message.contains("APP__REDIS__TLS_CA_FILE") && message.contains(&missing.display().to_string()),
        "{message}"
    );
    assert!(!message.contains(PASSWORD), "{message}");

    let pki = Pki::generate();
    let ca = pki.ca();
    let message = startup_error(move |s| {
        s.redis.url = Secret::new("redis://127.0.0.1:6379");
        s.redis.tls_ca_file = Some(ca);
    })
    .await;
    assert!(
        message.contains("APP__REDIS__TLS_CA_FILE") && message.contains("rediss://"),
        "{message}"
    );
}

/// A PostgreSQL cluster of the test's own with `ssl = on` that accepts TCP
/// connections over TLS only (`hostssl`; plain ones are rejected); stopped
/// and removed on drop.
struct TlsPg {
    cluster: PrivateCluster,
}

impl TlsPg {
    async fn start(pki: &Pki) -> Self {
        let cluster = PrivateCluster::init("pg-tls").await;
        // The server's certificate and key, the key readable by postgres only.
        let (cert, key) = (cluster.dir().join("server.crt"), cluster.dir().join("server.key"));
        std::fs::copy(pki.server_cert(), &cert).expect("copy certificate");
        std::fs::copy(pki.server_key(), &key).expect("copy key");
        let run = |command: &mut Command, what: &str| {
            let status = command.status().expect(what);
            assert!(status.success(), "{what}");
        };
        run(Command::new("chown").arg("postgres:").arg(&cert).arg(&key), "chown");
        run(Command::new("chmod").arg("0600").arg(&key), "chmod");
        cluster.replace_hba(
            "local all all trust\n\
             hostssl all all 127.0.0.1/32 trust\n\
             hostssl all all ::1/128 trust\n\
             hostnossl all all 0.0.0.0/0 reject\n\
             hostnossl all all ::/0 reject\n",
        );
        cluster.configure(&format!(
            "ssl = on\nssl_cert_file = '{}'\nssl_key_file = '{}'",
            cert.display(),
            key.display()
        ));
        cluster.start().await;
        Self { cluster }
    }

    fn port(&self) -> u16 {
        self.cluster.port
    }

    /// The URL the operator would write: host name, password, verify-full.
    fn url(&self, db: &str, ca: &Path) -> String {
        format!(
            "postgres://postgres:{PASSWORD}@localhost:{}/{db}?sslmode=verify-full&sslrootcert={}",
            self.port(),
            ca.display()
        )
    }

    fn options(&self, db: &str, ca: &Path) -> PgConnectOptions {
        self.url(db, ca).parse().expect("url")
    }
}

#[tokio::test]
async fn postgres_over_verified_tls_serves_and_an_untrusted_certificate_stops_the_start() {
    let pki = Pki::generate();
    let cluster = TlsPg::start(&pki).await;

    // Plain TCP is refused: whatever works below went over TLS.
    let plain = format!(
        "postgres://postgres@127.0.0.1:{}/postgres?sslmode=disable",
        cluster.port()
    );
    let refused = sqlx::PgConnection::connect(&plain)
        .await
        .expect_err("plain TCP refused");
    assert!(refused.to_string().contains("no encryption"), "{refused}");

    // The schema and the test data, as in the shared template database.
    let pool = create_and_seed(cluster.options("postgres", &pki.ca())).await;

    let url = cluster.url("analytics", &pki.ca());
    let app = spawn_app_with(move |s| {
        s.database.url = Secret::new(url);
        s.database.create_database = false;
    })
    .await;
    let body = app.query_ok(query()).await;
    assert!(!body["data"].as_array().expect("rows").is_empty(), "{body}");
    // The server's pool and its LISTEN connection are both up (over TLS:
    // the cluster takes nothing else).
    let health: Value = app.client.get(app.url("/health")).json_body().await;
    assert_eq!(health["database"]["status"], json!("up"), "{health}");
    let started = Instant::now();
    loop {
        let health: Value = app.client.get(app.url("/health")).json_body().await;
        if health["freshness"]["listener"] == json!("up") {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "LISTEN not up: {health}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let plain_server_connections: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid)
         WHERE a.application_name LIKE 'analytics-api%' AND NOT s.ssl",
    )
    .fetch_one(&pool)
    .await
    .expect("pg_stat_ssl");
    assert_eq!(plain_server_connections, 0);

    // The command-line pool and database creation use the same options.
    let mut settings = Settings::default();
    settings.database.url = Secret::new(cluster.url("created_over_tls", &pki.ca()));
    assert!(analytics_api::db::create_database_if_missing(&settings.database)
        .await
        .expect("create over TLS"));
    let cli = analytics_api::db::cli_pool(&settings.database).expect("cli pool");
    sqlx::query("SELECT 1").execute(&cli).await.expect("cli pool over TLS");
    cli.close().await;
    pool.close().await;

    // A CA that did not sign the server's certificate: refused at once (not
    // after startup_wait_seconds), naming the server, never the password.
    for (mode, what) in [
        ("verify-full", "verify-full"),
        ("require", "require + sslrootcert (as libpq: verify-ca)"),
    ] {
        let url = cluster
            .url("analytics", &pki.other_ca())
            .replace("sslmode=verify-full", &format!("sslmode={mode}"));
        let started = Instant::now();
        let message = startup_error(move |s| {
            s.database.url = Secret::new(url);
            s.database.startup_wait_seconds = 60;
        })
        .await;
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{what}: a certificate problem was waited on"
        );
        assert!(
            message.contains(&format!("localhost:{}", cluster.port()))
                && message.contains("certificate was not trusted"),
            "{what}: {message}"
        );
        assert!(message.contains("sslrootcert"), "{what}: {message}");
        assert!(!message.contains(PASSWORD), "{what}: {message}");
    }

    // A CA file that is not there: refused, naming the URL's parameter and the path.
    let url = cluster.url("analytics", Path::new("/nonexistent/analytics-tls/root.crt"));
    let message = startup_error(move |s| s.database.url = Secret::new(url)).await;
    assert!(
        message.contains("DATABASE_URL sslrootcert") && message.contains("/nonexistent/analytics-tls/root.crt"),
        "{message}"
    );
    assert!(!message.contains(PASSWORD), "{message}");
}
