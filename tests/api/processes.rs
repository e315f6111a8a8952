//! Servers of a test's own, on free ports, which the test may kill, pause,
//! stop and restart without touching the shared PostgreSQL and Redis.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use sqlx::{Connection, PgConnection};

/// A redis-server of the test's own on a free port, which the test may kill,
/// pause and restart without touching the shared one.
pub struct RedisProcess {
    pub port: u16,
    child: Option<Child>,
    dir: PathBuf,
}

impl RedisProcess {
    pub async fn start() -> Self {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("analytics-redis-{port}-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("redis dir");
        let mut process = Self { port, child: None, dir };
        process.launch().await;
        process
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    async fn launch(&mut self) {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (apt-get install redis-server)");
        self.child = Some(child);
        for _ in 0..100 {
            if let Ok(client) = redis::Client::open(self.url()) {
                if let Ok(mut c) = client.get_multiplexed_async_connection().await {
                    if redis::cmd("PING").query_async::<String>(&mut c).await.is_ok() {
                        return;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("redis-server on port {} did not start", self.port);
    }

    /// SIGKILL: the process is gone, connections drop.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port (empty: it keeps nothing on disk).
    pub async fn restart(&mut self) {
        self.kill();
        self.launch().await;
    }

    /// SIGSTOP: the process hangs, connections stay open but nothing answers.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        if let Some(child) = &self.child {
            let _ = Command::new("kill").args([signal, &child.id().to_string()]).status();
        }
    }
}

impl Drop for RedisProcess {
    fn drop(&mut self) {
        self.resume();
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Where the PostgreSQL 15 binaries are.
const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// A PostgreSQL cluster of the test's own on a free port, which the test may
/// stop and start again; the shared one is never touched. Its data lives in a
/// temporary directory (removed on drop); it runs as user `postgres` with
/// trust authentication and `fsync=off`.
pub struct PgCluster {
    pub port: u16,
    dir: PathBuf,
}

impl PgCluster {
    pub async fn start() -> Self {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("analytics-pg-{port}-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("cluster dir");
        let chown = Command::new("chown").arg("postgres:").arg(&dir).status();
        assert!(chown.is_ok_and(|s| s.success()), "chown {}", dir.display());
        let cluster = Self { port, dir };
        let data = cluster.data();
        let initdb = as_postgres("initdb")
            .args(["-A", "trust", "-U", "postgres"])
            .args(["--no-sync", "-E", "UTF8", "--locale", "C"])
            .arg("-D")
            .arg(&data)
            .stdout(Stdio::null())
            .output()
            .await
            .expect("initdb (runs as user postgres)");
        assert!(
            initdb.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&initdb.stderr)
        );
        cluster.start_again().await;
        cluster
    }

    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// Starts the (stopped) cluster and waits until it accepts connections.
    pub async fn start_again(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.display()
        );
        let started = as_postgres("pg_ctl")
            .args(["start", "-W", "-D"])
            .arg(self.data())
            .arg("-l")
            .arg(self.dir.join("log"))
            .args(["-o", &options])
            .stdout(Stdio::null())
            .status()
            .await;
        assert!(started.is_ok_and(|s| s.success()), "pg_ctl start");
        for _ in 0..200 {
            if let Ok(connection) = PgConnection::connect(&self.url("postgres")).await {
                let _ = connection.close().await;
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "PostgreSQL on port {} did not start; see {}",
            self.port,
            self.dir.join("log").display()
        );
    }

    /// Immediate shutdown: the server processes exit at once, connections drop.
    pub fn stop(&self) {
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--", &format!("{PG_BIN}/pg_ctl")])
            .args(["stop", "-m", "immediate", "-D"])
            .arg(self.data())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }
}

/// A PostgreSQL `program` run as user `postgres` (it refuses to run as root).
fn as_postgres(program: &str) -> tokio::process::Command {
    let mut command = tokio::process::Command::new("runuser");
    command.args(["-u", "postgres", "--", &format!("{PG_BIN}/{program}")]);
    command
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A TCP proxy of the test's own that delays every chunk by a settable
/// number of milliseconds in both directions: a slow network to a server.
pub struct DelayProxy {
    pub port: u16,
    delay_ms: std::sync::Arc<std::sync::atomic::AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl DelayProxy {
    pub async fn start(upstream_port: u16, delay: Duration) -> Self {
        use std::sync::atomic::{AtomicU64, Ordering};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let delay_ms = std::sync::Arc::new(AtomicU64::new(delay.as_millis() as u64));
        let shared = std::sync::Arc::clone(&delay_ms);
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", upstream_port)).await else {
                    continue;
                };
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                for (mut from, mut to) in [
                    (
                        Box::new(client_read) as Box<dyn tokio::io::AsyncRead + Unpin + Send>,
                        Box::new(server_write) as Box<dyn tokio::io::AsyncWrite + Unpin + Send>,
                    ),
                    (Box::new(server_read), Box::new(client_write)),
                ] {
                    let delay = std::sync::Arc::clone(&shared);
                    tokio::spawn(async move {
                        use tokio::io::{AsyncReadExt, AsyncWriteExt};
                        let mut buffer = vec![0u8; 16 * 1024];
                        while let Ok(read) = from.read(&mut buffer).await {
                            if read == 0 {
                                break;
                            }
                            tokio::time::sleep(Duration::from_millis(delay.load(Ordering::Acquire))).await;
                            if to.write_all(&buffer[..read]).await.is_err() {
                                break;
                            }
                        }
                        let _ = to.shutdown().await;
                    });
                }
            }
        });
        Self { port, delay_ms, task }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn set_delay(&self, delay: Duration) {
        self.delay_ms
            .store(delay.as_millis() as u64, std::sync::atomic::Ordering::Release);
    }
}

impl Drop for DelayProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}
