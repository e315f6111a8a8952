//! Servers of a test's own, on free ports, which the test may kill, pause,
//! stop and restart without touching the shared Redis (PostgreSQL clusters
//! of a test's own: `pg_cluster`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// `redis-server` on 127.0.0.1 keeping nothing on disk (no RDB, no AOF),
/// `dir` its working directory, output discarded; add the ports and spawn.
pub fn redis_server(dir: &Path) -> Command {
    let mut command = Command::new("redis-server");
    command
        .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    command
}

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
        let child = redis_server(&self.dir)
            .args(["--port", &self.port.to_string()])
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

/// A free TCP port on 127.0.0.1 for a server the test starts itself.
///
/// Not one the kernel picks for port 0: those come from the ephemeral range
/// (`net.ipv4.ip_local_port_range`), the same range every outgoing
/// connection takes its local port from, and between this call and the
/// server's own bind another test's connection (the suite opens thousands)
/// can take it (the likeliest reason a cluster node once never came up in
/// CI: its log was not kept; `redis_modes` keeps them now). So ports come
/// from one sequence per test process below that range, each checked free
/// by binding it, and no port is handed out twice.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::OnceLock;
    const LOWEST: u32 = 20_000;
    static NEXT: OnceLock<(AtomicU32, u32)> = OnceLock::new();
    let (next, below) = NEXT.get_or_init(|| {
        let below = ephemeral_low().unwrap_or(32_768);
        // A start that differs between runs: a server a killed run left
        // behind holds its ports for a while.
        let span = below.saturating_sub(LOWEST).max(1);
        (AtomicU32::new(std::process::id() % span), below)
    });
    if *below <= LOWEST + 1_000 {
        // No room below the range: the kernel's pick is all there is.
        return std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port");
    }
    let span = below - LOWEST;
    for _ in 0..span {
        let port = (LOWEST + next.fetch_add(1, Ordering::Relaxed) % span) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {LOWEST}..{below}");
}

/// The lowest port of the kernel's ephemeral range, where Linux tells it.
fn ephemeral_low() -> Option<u32> {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
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
