//! Settings: built-in defaults <- `config/default.toml` <- `config/{APP_ENV}.toml` <- environment.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

mod checks;
mod database;
mod redis;

pub use checks::{postgres_root_cert, REDIS_CA_SETTING};
pub use database::{DatabaseSettings, ReplicaSettings};
pub use redis::{RedisClusterSettings, RedisMode, RedisSentinelSettings, RedisSettings, RemoteRedisSettings};

/// Every tunable of the server. Each section documents why its fields exist;
/// `.env.example` lists the environment variable for each.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    pub server: ServerSettings,
    pub database: DatabaseSettings,
    /// Read replicas (`[databases.<name>]`) that datasets of the model may
    /// read (`database = "<name>"`); `primary` is `database` itself.
    pub databases: std::collections::BTreeMap<String, ReplicaSettings>,
    pub redis: RedisSettings,
    pub cache: CacheSettings,
    pub freshness: FreshnessSettings,
    pub rollups: RollupSettings,
    pub auth: AuthSettings,
    pub rate_limit: RateLimitSettings,
    pub model: ModelSettings,
    pub log: LogSettings,
    /// The files the settings were read from, in order (for the start-up log).
    #[serde(skip)]
    pub sources: Vec<PathBuf>,
}

/// The HTTP listener and the limits every request is held to.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerSettings {
    /// Interface to bind; 127.0.0.1 keeps a dev server off the network.
    pub host: String,
    /// TCP port; 0 picks a free one (the tests do this).
    pub port: u16,
    /// Whole-request deadline, so that no client can hold a worker forever.
    pub request_timeout_ms: u64,
    /// Largest accepted request body; bigger ones get 413.
    pub body_limit_bytes: usize,
    /// Origins allowed by CORS; `["*"]` allows any (dashboards run in browsers).
    /// Empty disables CORS headers entirely.
    pub cors_allowed_origins: Vec<String>,
    /// How long shutdown waits for in-flight requests after SIGTERM / Ctrl-C.
    pub shutdown_grace_ms: u64,
    /// Open connections at most; more are closed at accept, so a flood
    /// cannot exhaust file descriptors or memory.
    pub max_connections: usize,
    /// Deadline for a request's headers (a slowloris is cut off) and for the
    /// next request on an idle keep-alive connection.
    pub header_read_timeout_ms: u64,
    /// Largest request head (request line and headers) in bytes.
    pub max_header_bytes: usize,
    /// How connections are served.
    pub runtime: ServerRuntime,
    /// Serving threads of `thread_per_core`; 0 = one per CPU core.
    pub threads: usize,
}

/// How connections are served (bench/RESULTS.md, "Runtime shape").
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(try_from = "String")]
pub enum ServerRuntime {
    /// `server.threads` threads, each a single-threaded runtime accepting
    /// and serving its own connections: a cache hit never changes thread.
    /// Database and Redis work goes to the shared runtime (`offload`).
    ThreadPerCore,
    /// Every connection on the shared work-stealing runtime, which moves
    /// tasks between its threads to balance them.
    Shared,
    /// `thread_per_core` while L1 is on; `shared` when every hit needs
    /// Redis (L1 off), where the hop to the shared runtime costs more than
    /// staying on one thread saves.
    Auto,
}

impl ServerRuntime {
    /// Whether connections are served on threads of their own, given
    /// whether L1 is on.
    pub fn per_core(self, l1_enabled: bool) -> bool {
        match self {
            Self::ThreadPerCore => true,
            Self::Shared => false,
            Self::Auto => l1_enabled,
        }
    }
}

impl TryFrom<String> for ServerRuntime {
    type Error = String;

    fn try_from(value: String) -> Result<Self, String> {
        match value.to_ascii_lowercase().as_str() {
            "thread_per_core" => Ok(Self::ThreadPerCore),
            "shared" => Ok(Self::Shared),
            "auto" => Ok(Self::Auto),
            other => Err(format!(
                "APP__SERVER__RUNTIME (server.runtime) must be `auto`, `thread_per_core` or `shared`, not `{other}`"
            )),
        }
    }
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 8080,
            request_timeout_ms: 30_000,
            body_limit_bytes: 64 * 1024,
            cors_allowed_origins: vec!["*".into()],
            shutdown_grace_ms: 10_000,
            max_connections: 4_096,
            header_read_timeout_ms: 10_000,
            max_header_bytes: 64 * 1024,
            runtime: ServerRuntime::Auto,
            threads: 0,
        }
    }
}

/// The cache-aside policy: keys, TTLs, sizes and the in-process L1.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheSettings {
    /// Master switch; off means every query goes to the database.
    pub enabled: bool,
    /// First segment of every key, so one Redis can hold other data safely.
    pub prefix: String,
    /// TTL when a dataset sets none (`CACHE_TTL`).
    pub default_ttl_seconds: u64,
    /// TTL for ranges that include today: fresh data changes.
    pub recent_ttl_seconds: u64,
    /// TTL for ranges that ended long ago: closed history does not change.
    pub historical_ttl_seconds: u64,
    /// How many days ago a range must have ended to count as historical.
    pub historical_after_days: u64,
    /// Entries larger than this are lz4-compressed.
    pub compress_above_bytes: usize,
    /// Results larger than this are served but never cached.
    pub max_entry_bytes: usize,
    /// Keep hot entries in process memory (L1).
    pub l1_enabled: bool,
    /// L1 capacity in bytes of stored values.
    pub l1_max_bytes: u64,
    /// Upper bound on an L1 entry's life, so instances do not drift apart for long.
    pub l1_ttl_seconds: u64,
    /// Keys deleted per UNLINK during a pattern clear.
    pub clear_batch_size: usize,
    /// Queries `POST /cache/warm` runs when called without a body.
    pub warm_queries: Vec<serde_json::Value>,
}

impl Default for CacheSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            prefix: "analytics".into(),
            default_ttl_seconds: 300,
            recent_ttl_seconds: 60,
            historical_ttl_seconds: 86_400,
            historical_after_days: 30,
            compress_above_bytes: 16 * 1024,
            max_entry_bytes: 8 * 1024 * 1024,
            l1_enabled: true,
            l1_max_bytes: 64 * 1024 * 1024,
            l1_ttl_seconds: 30,
            clear_batch_size: 500,
            warm_queries: Vec::new(),
        }
    }
}

/// Knowing when data changes: change capture, stale answers, leases.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FreshnessSettings {
    /// LISTEN for change-capture notifications and invalidate what changed;
    /// off, answers are only as fresh as their TTL.
    pub enabled: bool,
    /// Install (or update) the statement-level capture triggers on the
    /// model's tables when `serve` starts; needs the tables' owner. Off when
    /// the DBA installs them (`analytics-api triggers install`).
    pub install_triggers: bool,
    /// The NOTIFY channel the triggers and the listeners share.
    pub channel: String,
    /// Default (datasets may override) for serving an entry up to this many
    /// seconds past its TTL while one background flight refreshes it; 0 off.
    pub stale_while_revalidate_seconds: u64,
    /// Default (datasets may override) for serving an entry, marked stale, up
    /// to this many seconds past its TTL (or after a change invalidated it)
    /// while the database is down, saturated or timing out; 0 off.
    pub stale_if_error_seconds: u64,
    /// Length of the cross-instance lease on computing one entry (renewed
    /// while the statement runs), so one statement serves every instance.
    pub lease_ms: u64,
    /// Longest a request waits for another instance's statement before it
    /// runs its own.
    pub lease_wait_ms: u64,
    /// Longest pause between LISTEN reconnect attempts.
    pub reconnect_max_ms: u64,
}

impl Default for FreshnessSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            install_triggers: true,
            channel: "analytics_changes".into(),
            stale_while_revalidate_seconds: 0,
            stale_if_error_seconds: 0,
            lease_ms: 5_000,
            lease_wait_ms: 11_000,
            reconnect_max_ms: 5_000,
        }
    }
}

/// Pre-aggregated tables (the model's `rollups`), kept exact by change capture.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RollupSettings {
    /// Answer covered queries from the model's rollups. They are kept exact
    /// by change capture, so they are used only while `freshness.enabled`.
    pub enabled: bool,
    /// `serve` builds missing or outdated rollups in the background (and
    /// answers from the raw table until they are ready); off, only
    /// `analytics-api rollups build` builds them.
    pub build_on_start: bool,
    /// How often pending changes are re-aggregated even without a
    /// notification (after a gap, or changes made while no server ran).
    pub refresh_interval_ms: u64,
    /// Longest one refresh transaction may run before it is abandoned (the
    /// rollup then answers nothing until a refresh succeeds).
    pub refresh_timeout_ms: u64,
    /// Longest one build may run.
    pub build_timeout_seconds: u64,
}

impl Default for RollupSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            build_on_start: true,
            refresh_interval_ms: 5_000,
            refresh_timeout_ms: 30_000,
            build_timeout_seconds: 3_600,
        }
    }
}

/// Who may call what.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSettings {
    /// Bearer token for the admin endpoints; unset means they answer 403.
    pub admin_token: Option<Secret>,
    /// Refuse queries without a valid API key (401). Off in development,
    /// where unauthenticated requests run as tenant `default`.
    pub required: bool,
    /// How long a key looked up in the `api_keys` table is trusted before it
    /// is checked again (so a revocation takes effect within this time).
    pub key_cache_seconds: u64,
    /// The tenants: who they are, their keys and their row scope.
    pub tenants: Vec<TenantSettings>,
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            admin_token: None,
            required: false,
            key_cache_seconds: 30,
            tenants: Vec::new(),
        }
    }
}

/// One customer of the server.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct TenantSettings {
    /// Tenant id: part of every cache key (`[A-Za-z0-9_-]`).
    pub id: String,
    /// SHA-256 (hex) of each API key; the keys themselves are never stored.
    pub api_key_hashes: Vec<String>,
    /// Dataset -> filters over the model's dimensions, in the request's
    /// filter syntax (`store_id = { in = [1, 2] }`, `state = "SP"`). ANDed
    /// into every statement this tenant runs.
    pub row_filters: std::collections::BTreeMap<String, std::collections::BTreeMap<String, serde_json::Value>>,
    /// Requests per minute; falls back to `rate_limit.default_per_minute`.
    pub rate_limit_per_minute: Option<u64>,
}

/// Per-tenant request rate limits, shared across instances through Redis.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitSettings {
    /// Off means no limits at all.
    pub enabled: bool,
    /// Requests per minute for tenants that set none (the `default` tenant
    /// included); 0 means unlimited. A limit of L admits L requests at once,
    /// then refills one every 60/L seconds.
    pub default_per_minute: u64,
    /// Label `analytics_ratelimit_rejections_total` by tenant (cardinality!).
    pub per_tenant_metrics: bool,
}

impl Default for RateLimitSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            default_per_minute: 0,
            per_tenant_metrics: false,
        }
    }
}

/// Where the operator's semantic model lives.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelSettings {
    /// Path of the model TOML file; a relative one is read from the config
    /// directory.
    pub path: PathBuf,
}

impl Default for ModelSettings {
    fn default() -> Self {
        Self {
            path: PathBuf::from("model.toml"),
        }
    }
}

/// Log output.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSettings {
    /// `pretty` for people, `json` for log shippers.
    pub format: LogFormat,
    /// Filter directives (`RUST_LOG` syntax); `RUST_LOG` itself wins.
    pub level: String,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            format: LogFormat::Pretty,
            level: "info,sqlx=warn".into(),
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(try_from = "String")]
pub enum LogFormat {
    Pretty,
    Json,
}

impl TryFrom<String> for LogFormat {
    type Error = String;

    fn try_from(value: String) -> Result<Self, String> {
        match value.to_ascii_lowercase().as_str() {
            "pretty" => Ok(Self::Pretty),
            "json" => Ok(Self::Json),
            other => Err(format!(
                "LOG_FORMAT (log.format) must be `pretty` or `json`, not `{other}`"
            )),
        }
    }
}

/// A string that never shows itself in `Debug` output or logs.
#[derive(Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The raw value; call sites that use it are the places to audit.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// For a URL: `host:port` and its path, for messages; the credentials
    /// never leave it.
    pub fn address(&self, default_port: u16) -> String {
        match url::Url::parse(&self.0) {
            Ok(url) => format!(
                "{}:{}{}",
                url.host_str().unwrap_or("localhost"),
                url.port().unwrap_or(default_port),
                url.path().trim_end_matches('/')
            ),
            Err(_) => "an unparseable URL".into(),
        }
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// The conventional variable names honoured beside `APP__SECTION__KEY`, and
/// the setting each one overrides.
const CONVENTIONAL_VARIABLES: &[(&str, &str)] = &[
    ("DATABASE_URL", "database.url"),
    ("REDIS_URL", "redis.url"),
    ("CACHE_TTL", "cache.default_ttl_seconds"),
    ("ADMIN_TOKEN", "auth.admin_token"),
    ("HOST", "server.host"),
    ("PORT", "server.port"),
    ("LOG_FORMAT", "log.format"),
    ("MODEL_PATH", "model.path"),
];

impl Settings {
    /// Loads settings from `config_dir` and the process environment.
    pub fn load(config_dir: &Path) -> Result<Self, config::ConfigError> {
        Self::load_from(config_dir, &std::env::vars().collect())
    }

    /// Same as [`Settings::load`] with an injectable environment, so the
    /// layering can be tested without touching the process environment.
    pub fn load_from(config_dir: &Path, environment: &HashMap<String, String>) -> Result<Self, config::ConfigError> {
        let env = |name: &str| environment.get(name).cloned();
        if !config_dir.is_dir() {
            return Err(config::ConfigError::Message(format!(
                "config directory {} does not exist (--config-dir / CONFIG_DIR)",
                config_dir.display()
            )));
        }
        let app_env = env("APP_ENV")
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| "local".into());
        // `local.toml` is a developer's optional overlay; any other
        // environment the operator names must have its file (a missing
        // `production.toml` could mean a server without authentication).
        let named = config_dir.join(format!("{app_env}.toml"));
        if app_env != "local" && !named.is_file() {
            return Err(config::ConfigError::Message(format!(
                "APP_ENV={app_env} but {} does not exist",
                named.display()
            )));
        }
        let files = [config_dir.join("default.toml"), named];
        let sources: Vec<PathBuf> = files.iter().filter(|f| f.is_file()).cloned().collect();
        let mut builder = config::Config::builder();
        for file in &files {
            builder = builder.add_source(config::File::from(file.as_path()).required(false));
        }

        let app_vars: config::Map<String, String> = environment
            .iter()
            .filter(|(k, _)| k.starts_with("APP__"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        builder = builder.add_source(
            config::Environment::with_prefix("APP")
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true)
                .list_separator(",")
                .with_list_parse_key("server.cors_allowed_origins")
                .with_list_parse_key("redis.sentinel.addresses")
                .with_list_parse_key("redis.cluster.nodes")
                .source(Some(app_vars)),
        );
        for (variable, key) in CONVENTIONAL_VARIABLES {
            if let Some(value) = env(variable).filter(|v| !v.is_empty()) {
                builder = builder.set_override(*key, value)?;
            }
        }
        if let Some(filter) = env("RUST_LOG").filter(|v| !v.is_empty()) {
            builder = builder.set_override("log.level", filter)?;
        }
        let mut settings: Settings = builder.build()?.try_deserialize()?;
        if let Some(problem) = checks::out_of_range(&settings) {
            return Err(config::ConfigError::Message(problem));
        }
        if settings.model.path.is_relative() {
            settings.model.path = config_dir.join(&settings.model.path);
        }
        if let Some(ca) = settings.redis.ca_file().filter(|p| p.is_relative()) {
            settings.redis.tls_ca_file = Some(config_dir.join(ca));
        }
        // An empty remote URL (an env override that blanks it) means off.
        if settings
            .redis
            .remote
            .as_ref()
            .is_some_and(|r| r.url.expose().trim().is_empty())
        {
            settings.redis.remote = None;
        }
        if let Some(remote) = settings.redis.remote.as_mut() {
            if let Some(ca) = remote
                .tls_ca_file
                .as_ref()
                .filter(|p| p.is_relative() && !p.as_os_str().is_empty())
            {
                remote.tls_ca_file = Some(config_dir.join(ca));
            }
        }
        if let Some(problem) = checks::tls_files(&settings) {
            return Err(config::ConfigError::Message(problem));
        }
        if let Some(problem) = checks::replicas(&settings) {
            return Err(config::ConfigError::Message(problem));
        }
        if let Some(problem) = checks::redis_mode(&settings) {
            return Err(config::ConfigError::Message(problem));
        }
        settings.sources = sources;
        Ok(settings)
    }
}

#[cfg(test)]
mod tests;
