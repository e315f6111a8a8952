//! Tests of settings layering and of `.env.example`.

use super::*;
fn load(vars: &[(&str, &str)]) -> Settings {
    let vars: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    Settings::load_from(&empty_dir(), &vars).expect("settings load")
}

/// A config directory without files.
fn empty_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("analytics-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn refused(dir: &Path, vars: &[(&str, &str)]) -> String {
    let vars: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    match Settings::load_from(dir, &vars) {
        Ok(_) => panic!("{vars:?} loads"),
        Err(error) => error.to_string(),
    }
}

#[test]
fn numbers_out_of_range_are_refused_naming_the_variable() {
    let dir = empty_dir();
    for (variable, value) in [
        ("APP__DATABASE__MAX_CONNECTIONS", "0"),
        ("APP__SERVER__REQUEST_TIMEOUT_MS", "0"),
        ("APP__REDIS__POOL_SIZE", "0"),
        ("APP__ROLLUPS__REFRESH_INTERVAL_MS", "5"),
    ] {
        let message = refused(&dir, &[(variable, value)]);
        assert!(
            message.contains(variable) && message.contains("out of range"),
            "{message}"
        );
    }
    let message = refused(&dir, &[("CACHE_TTL", "0")]);
    assert!(message.contains("CACHE_TTL"), "{message}");
}

#[test]
fn files_the_operator_named_must_exist() {
    let message = refused(Path::new("/nonexistent-config-dir"), &[]);
    assert!(
        message.contains("/nonexistent-config-dir") && message.contains("does not exist"),
        "{message}"
    );
    let message = refused(&empty_dir(), &[("APP_ENV", "production")]);
    assert!(
        message.contains("APP_ENV=production") && message.contains("production.toml"),
        "{message}"
    );
    // The developer's overlay is optional, and a relative model path is the config directory's.
    let settings = load(&[("APP_ENV", "local"), ("MODEL_PATH", "models/shop.toml")]);
    assert_eq!(settings.model.path, empty_dir().join("models/shop.toml"));
    assert!(settings.sources.is_empty());
}

#[test]
fn defaults_apply_without_files_or_environment() {
    let settings = load(&[]);
    assert_eq!(settings.server.port, 8080);
    assert_eq!(settings.server.host, "127.0.0.1");
    assert_eq!(
        settings.database.url.expose(),
        "postgres://postgres@127.0.0.1:5432/analytics"
    );
    assert_eq!(settings.cache.default_ttl_seconds, 300);
    assert!(settings.auth.admin_token.is_none());
}

#[test]
fn conventional_variables_override_defaults() {
    let settings = load(&[
        ("PORT", "9999"),
        ("DATABASE_URL", "postgres://x@y/z"),
        ("CACHE_TTL", "42"),
        ("ADMIN_TOKEN", "s3cret"),
        ("LOG_FORMAT", "json"),
    ]);
    assert_eq!(settings.server.port, 9999);
    assert_eq!(settings.database.url.expose(), "postgres://x@y/z");
    assert_eq!(settings.cache.default_ttl_seconds, 42);
    assert_eq!(settings.auth.admin_token.as_ref().map(Secret::expose), Some("s3cret"));
    assert_eq!(settings.log.format, LogFormat::Json);
}

#[test]
fn app_prefixed_variables_reach_nested_settings() {
    let settings = load(&[
        ("APP__CACHE__L1_TTL_SECONDS", "7"),
        (
            "APP__SERVER__CORS_ALLOWED_ORIGINS",
            "https://a.example,https://b.example",
        ),
    ]);
    assert_eq!(settings.cache.l1_ttl_seconds, 7);
    assert_eq!(settings.server.cors_allowed_origins.len(), 2);
}

/// Every variable `.env.example` documents must be one the loader knows
/// (unknown keys are refused), and its documented value the default.
#[test]
fn env_example_lists_real_settings_with_their_defaults() {
    let example = include_str!("../../.env.example");
    let vars: HashMap<String, String> = example
        .lines()
        .filter(|line| !line.starts_with('#') && line.contains('='))
        .filter_map(|line| line.split_once('='))
        .filter(|(_, value)| !value.is_empty())
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    assert!(vars.len() > 40, "the example documents every setting");
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let from_example = Settings::load_from(&repo, &vars).expect(".env.example loads");
    let defaults = Settings::load_from(&repo, &HashMap::new()).expect("defaults load");
    assert_eq!(
        format!("{from_example:?}"),
        format!("{defaults:?}"),
        ".env.example values are the defaults"
    );
}

#[test]
fn secrets_do_not_appear_in_debug_output() {
    let settings = load(&[("ADMIN_TOKEN", "hunter2"), ("DATABASE_URL", "postgres://u:pw@h/d")]);
    let debug = format!("{settings:?}");
    assert!(!debug.contains("hunter2"));
    assert!(!debug.contains("pw@"));
}

#[test]
fn log_settings_that_cannot_work_say_what_would() {
    let dir = empty_dir();
    let message = refused(&dir, &[("LOG_FORMAT", "text")]);
    assert!(
        message.contains("`pretty` or `json`") && message.contains("text"),
        "{message}"
    );
    let message = refused(&dir, &[("RUST_LOG", "foo=[")]);
    assert!(
        message.contains("RUST_LOG") && message.contains("info,sqlx=warn"),
        "{message}"
    );
    assert_eq!(load(&[("LOG_FORMAT", "JSON")]).log.format, LogFormat::Json);
}

#[test]
fn the_runtime_shape_follows_l1_unless_named() {
    let runtime = load(&[]).server.runtime;
    assert_eq!(runtime, ServerRuntime::Auto);
    assert!(runtime.per_core(true) && !runtime.per_core(false));
    let named = load(&[("APP__SERVER__RUNTIME", "Shared")]).server.runtime;
    assert!(!named.per_core(true));
    let named = load(&[("APP__SERVER__RUNTIME", "thread_per_core")]).server.runtime;
    assert!(named.per_core(false));
    let message = refused(&empty_dir(), &[("APP__SERVER__RUNTIME", "tokio")]);
    assert!(
        message.contains("APP__SERVER__RUNTIME") && message.contains("tokio"),
        "{message}"
    );
}

#[test]
fn tls_ca_files_are_checked_when_the_settings_load() {
    let dir = empty_dir();
    // Empty (as in .env.example) is unset.
    let settings = load(&[("APP__REDIS__TLS_CA_FILE", "")]);
    assert_eq!(settings.redis.ca_file(), None);
    let message = refused(
        &dir,
        &[
            ("REDIS_URL", "rediss://:pw@cache.example.com:6380"),
            ("APP__REDIS__TLS_CA_FILE", "certs/redis-ca.pem"),
        ],
    );
    assert!(
        message.contains("APP__REDIS__TLS_CA_FILE")
            && message.contains(&dir.join("certs/redis-ca.pem").display().to_string())
            && message.contains("cannot read"),
        "a relative path is the config directory's: {message}"
    );
    assert!(!message.contains("pw@"), "{message}");
    let ca = dir.join("tls-check-ca.pem");
    std::fs::write(&ca, "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n").expect("write");
    let ca = ca.display().to_string();
    let message = refused(&dir, &[("APP__REDIS__TLS_CA_FILE", ca.as_str())]);
    assert!(message.contains("rediss://"), "a CA needs a rediss:// URL: {message}");
    // Redis off: its CA file is not looked at.
    load(&[
        ("APP__REDIS__TLS_CA_FILE", "missing.pem"),
        ("APP__REDIS__ENABLED", "false"),
    ]);
    let message = refused(
        &dir,
        &[(
            "DATABASE_URL",
            "postgres://u:pw@db.example.com/app?sslmode=verify-full&sslrootcert=/nonexistent/pg-ca.pem",
        )],
    );
    assert!(
        message.contains("DATABASE_URL sslrootcert") && message.contains("/nonexistent/pg-ca.pem"),
        "{message}"
    );
    assert!(!message.contains("pw@"), "{message}");
}

#[test]
fn redis_topologies_read_their_lists_from_the_environment() {
    let settings = load(&[
        ("APP__REDIS__MODE", "sentinel"),
        ("APP__REDIS__SENTINEL__SERVICE_NAME", "analytics"),
        (
            "APP__REDIS__SENTINEL__ADDRESSES",
            "10.0.0.1:26379,redis://10.0.0.2:26379",
        ),
        (
            "APP__REDIS__CLUSTER__NODES",
            "10.0.0.3:6379,10.0.0.4:6379,10.0.0.5:6379",
        ),
    ]);
    assert_eq!(settings.redis.mode, RedisMode::Sentinel);
    assert_eq!(settings.redis.sentinel.service_name, "analytics");
    let addresses: Vec<&str> = settings.redis.sentinel.addresses.iter().map(Secret::expose).collect();
    assert_eq!(addresses, ["10.0.0.1:26379", "redis://10.0.0.2:26379"]);
    assert_eq!(settings.redis.cluster.nodes.len(), 3);
    assert_eq!(load(&[]).redis.mode, RedisMode::Standalone);
}

#[test]
fn replica_reads_need_sentinel_mode() {
    assert!(!load(&[]).redis.sentinel.read_from_replicas);
    let on = [("APP__REDIS__SENTINEL__READ_FROM_REPLICAS", "true")];
    let message = refused(&empty_dir(), &on);
    assert!(
        message.contains("APP__REDIS__SENTINEL__READ_FROM_REPLICAS") && message.contains("APP__REDIS__MODE=sentinel"),
        "{message}"
    );
    let settings = load(&[on[0], ("APP__REDIS__MODE", "sentinel")]);
    assert!(settings.redis.sentinel.read_from_replicas);
}

#[test]
fn a_remote_redis_is_off_unless_its_url_is_set() {
    assert!(load(&[]).redis.remote.is_none());
    assert!(load(&[("APP__REDIS__REMOTE__URL", "")]).redis.remote.is_none());
    let settings = load(&[
        ("APP__REDIS__REMOTE__URL", "rediss://:pw@remote.example:6380"),
        ("APP__REDIS__REMOTE__COMMAND_TIMEOUT_MS", "300"),
    ]);
    let remote = settings.redis.remote.expect("remote set");
    assert_eq!(remote.url.expose(), "rediss://:pw@remote.example:6380");
    assert_eq!((remote.connect_timeout_ms, remote.command_timeout_ms), (500, 300));
    let as_redis = remote.as_redis();
    assert_eq!(as_redis.mode, RedisMode::Standalone);
    assert!(as_redis.remote.is_none());
}
