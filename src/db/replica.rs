//! Read replicas per dataset: a dataset whose model names a database
//! (`database = "<name>"`, configured as `[databases.<name>]`) reads that
//! replica while it answers and its replay lag is within `max_lag_seconds`;
//! otherwise it reads the primary, and moves back once the replica is healthy.
//!
//! - Each replica has a pool of its own (`application_name`
//!   `analytics-api-replica`) behind a guard and breaker of its own, so its
//!   failures never refuse the primary's statements.
//! - A background probe (its own connection, `analytics-api-replica-probe`)
//!   measures the replay lag every `lag_probe_interval_ms`.
//! - A statement that fails on the replica for want of a connection (or is
//!   cancelled by a recovery conflict) runs again on the primary, so a
//!   replica dying mid-stream fails no request; a connection failure also
//!   moves its datasets to the primary until the probe finds it healthy.
//! - Moving to the primary is logged once (warn) and counted
//!   (`analytics_replica_fallbacks_total`), moving back is logged once (info).
//!
//! Everything that writes or listens (migrations, seed, key administration,
//! change capture, rollup builds and refreshes, the model check) uses the
//! primary's pool only: nothing here is handed to them.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use serde::Serialize;
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, PgConnection, Postgres, QueryBuilder};

use super::{connect_options, Database, DbError, QueryResult};
use crate::config::{ReplicaSettings, Settings};
use crate::model::SemanticModel;
use crate::sync::lock;

/// `application_name` of a replica pool's connections.
pub const APPLICATION_NAME: &str = "analytics-api-replica";
/// `application_name` of the lag probe's connection.
pub const PROBE_APPLICATION_NAME: &str = "analytics-api-replica-probe";
/// The name of `database` (DATABASE_URL) in the model's `database = ...`.
pub const PRIMARY: &str = "primary";

/// Replay lag in seconds: 0 on a primary, and 0 while everything received
/// has been replayed (receive LSN <= replay LSN) (an idle primary sends nothing, so the last replayed
/// transaction's age grows without any lag); NULL when unknown (nothing
/// replayed since the replica started, or no WAL receiver yet).
const LAG_SQL: &str = "SELECT CASE \
     WHEN NOT pg_is_in_recovery() THEN 0::float8 \
     WHEN pg_last_wal_receive_lsn() <= pg_last_wal_replay_lsn() THEN 0::float8 \
     ELSE extract(epoch FROM now() - pg_last_xact_replay_timestamp())::float8 END";

/// Refuses a model whose datasets name databases that are not configured.
pub fn check_model(settings: &Settings, model: &SemanticModel) -> Result<(), String> {
    for (name, dataset) in &model.datasets {
        let database = dataset.database();
        if database != PRIMARY && !settings.databases.contains_key(database) {
            let configured: Vec<&str> = std::iter::once(PRIMARY)
                .chain(settings.databases.keys().map(String::as_str))
                .collect();
            return Err(format!(
                "dataset `{name}`: database: `{database}` is not a configured database (configured: {}); \
                 add [databases.{database}] with its url, or name one of those",
                configured.join(", ")
            ));
        }
    }
    Ok(())
}

/// Where a replica's datasets read now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    /// Before the first probe: the primary.
    Unknown,
    Replica,
    Primary,
}

struct ProbeState {
    route: Route,
    /// The last probe (or statement) reached it.
    reachable: Option<bool>,
    lag_seconds: Option<f64>,
    /// Why its datasets read the primary.
    reason: Option<String>,
}

/// One read replica.
pub struct Replica {
    name: String,
    db: Database,
    max_lag_seconds: f64,
    interval: Duration,
    probe_options: PgConnectOptions,
    /// The datasets that read it.
    datasets: Vec<String>,
    state: Mutex<ProbeState>,
}

/// A replica as `/health` shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ReplicaHealth {
    /// `up` (answering, lag within bounds), `lagging` (answering, lag above
    /// `max_lag_seconds` or not known yet), `down` or `unknown` (not probed yet).
    pub status: &'static str,
    /// Replay lag at the last probe.
    pub lag_seconds: Option<f64>,
    /// Whether its datasets read it now (else the primary).
    pub routed: bool,
    /// The datasets whose model names it.
    pub datasets: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Replica {
    fn new(name: &str, settings: &ReplicaSettings, datasets: Vec<String>, tenants: usize) -> Result<Self, sqlx::Error> {
        let database = settings.as_database();
        let db = Database::for_replica(name, &database, tenants)?;
        let probe_options = connect_options(&database)?.application_name(PROBE_APPLICATION_NAME);
        metrics::counter!("analytics_replica_fallbacks_total", "database" => name.to_owned()).increment(0);
        metrics::gauge!("analytics_replica_routed", "database" => name.to_owned()).set(0.0);
        Ok(Self {
            name: name.to_owned(),
            db,
            max_lag_seconds: settings.max_lag_seconds as f64,
            interval: Duration::from_millis(settings.lag_probe_interval_ms.max(50)),
            probe_options,
            datasets,
            state: Mutex::new(ProbeState {
                route: Route::Unknown,
                reachable: None,
                lag_seconds: None,
                reason: None,
            }),
        })
    }

    /// Whether its datasets read it now.
    pub fn routed(&self) -> bool {
        lock(&self.state).route == Route::Replica
    }

    fn health(&self) -> ReplicaHealth {
        let state = lock(&self.state);
        let status = match state.reachable {
            None => "unknown",
            Some(false) => "down",
            Some(true) if state.route == Route::Replica => "up",
            Some(true) => "lagging",
        };
        ReplicaHealth {
            status,
            lag_seconds: state.lag_seconds.map(|l| (l * 1e3).round() / 1e3),
            routed: state.route == Route::Replica,
            datasets: self.datasets.clone(),
            error: state.reason.clone(),
        }
    }

    /// Moves its datasets to `route`, logging and counting a change once.
    fn set_route(&self, route: Route, reason: Option<String>) {
        let previous = {
            let mut state = lock(&self.state);
            state.reason = reason.clone();
            std::mem::replace(&mut state.route, route)
        };
        if previous == route {
            return;
        }
        let database = self.name.as_str();
        let datasets = self.datasets.join(",");
        match route {
            Route::Primary => {
                metrics::counter!("analytics_replica_fallbacks_total", "database" => database.to_owned()).increment(1);
                metrics::gauge!("analytics_replica_routed", "database" => database.to_owned()).set(0.0);
                tracing::warn!(
                    database,
                    datasets,
                    reason = reason.as_deref().unwrap_or_default(),
                    "read replica unusable; its datasets read the primary until it is healthy"
                );
            }
            Route::Replica => {
                metrics::gauge!("analytics_replica_routed", "database" => database.to_owned()).set(1.0);
                tracing::info!(database, datasets, "read replica healthy; its datasets read it");
            }
            Route::Unknown => {}
        }
    }

    /// A statement could not reach it: to the primary until a probe says otherwise.
    fn fall_back(&self, cause: &str) {
        lock(&self.state).reachable = Some(false);
        self.set_route(Route::Primary, Some(format!("a statement could not reach it: {cause}")));
    }

    /// One probe: reachable? replay lag? Then route accordingly.
    async fn probe(&self, connection: &mut Option<PgConnection>) {
        let limit = self.interval.clamp(Duration::from_millis(500), Duration::from_secs(5));
        let measured = tokio::time::timeout(limit, measure(connection, &self.probe_options))
            .await
            .unwrap_or_else(|_| Err(format!("no answer within {limit:?}")));
        if measured.is_err() {
            // A connection that failed or hung is not used again.
            *connection = None;
        }
        let (route, reason) = {
            let mut state = lock(&self.state);
            match measured {
                Err(error) => {
                    state.reachable = Some(false);
                    (Route::Primary, Some(format!("unreachable: {error}")))
                }
                Ok(lag) => {
                    state.reachable = Some(true);
                    state.lag_seconds = lag;
                    if let Some(lag) = lag {
                        metrics::gauge!("analytics_replica_lag_seconds", "database" => self.name.clone()).set(lag);
                    }
                    match lag {
                        None => (
                            Route::Primary,
                            Some("replay lag not known yet (catching up)".to_owned()),
                        ),
                        Some(lag) if lag > self.max_lag_seconds => (
                            Route::Primary,
                            Some(format!(
                                "replay lag {lag:.1} s exceeds max_lag_seconds ({})",
                                self.max_lag_seconds
                            )),
                        ),
                        Some(_) if self.db.breaker_open() => (Route::Primary, Some("its breaker is open".to_owned())),
                        Some(_) => (Route::Replica, None),
                    }
                }
            }
        };
        self.set_route(route, reason);
    }
}

/// Connects if needed, then reads the replay lag.
async fn measure(connection: &mut Option<PgConnection>, options: &PgConnectOptions) -> Result<Option<f64>, String> {
    if connection.is_none() {
        *connection = Some(options.connect().await.map_err(|e| e.to_string())?);
    }
    let Some(open) = connection.as_mut() else {
        return Err("no connection".into());
    };
    sqlx::query_scalar::<_, Option<f64>>(LAG_SQL)
        .fetch_one(open)
        .await
        .map_err(|e| e.to_string())
}

/// Every configured replica, and which datasets read which.
#[derive(Default)]
pub struct Replicas {
    replicas: BTreeMap<String, Arc<Replica>>,
    by_dataset: HashMap<String, Arc<Replica>>,
}

impl Replicas {
    /// The replicas of `settings.databases` (pools are lazy: nothing
    /// connects yet); a dataset naming an unknown database is refused.
    pub fn new(settings: &Settings, model: &SemanticModel, tenants: usize) -> Result<Arc<Self>, String> {
        check_model(settings, model)?;
        let mut this = Self::default();
        for (name, replica_settings) in &settings.databases {
            let datasets: Vec<String> = model
                .datasets
                .iter()
                .filter(|(_, d)| d.database() == name)
                .map(|(n, _)| n.clone())
                .collect();
            if datasets.is_empty() {
                tracing::warn!(database = %name, "read replica configured, but no dataset of the model reads it");
            }
            let replica = Replica::new(name, replica_settings, datasets, tenants)
                .map_err(|e| format!("databases.{name}: {e}"))?;
            let replica = Arc::new(replica);
            for dataset in &replica.datasets {
                this.by_dataset.insert(dataset.clone(), Arc::clone(&replica));
            }
            this.replicas.insert(name.clone(), replica);
        }
        Ok(Arc::new(this))
    }

    /// Probes every replica once (bounded), so queries are routed from the
    /// first request, then keeps probing in the background for as long as
    /// the replicas are in use.
    pub async fn start(self: &Arc<Self>) {
        let mut connections: Vec<Option<PgConnection>> = (0..self.replicas.len()).map(|_| None).collect();
        futures::future::join_all(
            self.replicas
                .values()
                .zip(connections.iter_mut())
                .map(|(replica, connection)| replica.probe(connection)),
        )
        .await;
        for (replica, mut connection) in self.replicas.values().zip(connections) {
            let weak: Weak<Replica> = Arc::downgrade(replica);
            let interval = replica.interval;
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(interval).await;
                    let Some(replica) = weak.upgrade() else {
                        return;
                    };
                    replica.probe(&mut connection).await;
                }
            });
        }
    }

    /// Each configured replica's state, by name.
    pub fn health(&self) -> BTreeMap<String, ReplicaHealth> {
        self.replicas
            .iter()
            .map(|(name, replica)| (name.clone(), replica.health()))
            .collect()
    }

    /// Runs `dataset`'s statement on its replica while that is routed, else
    /// (or when the replica cannot be reached for it) on `primary`.
    /// `statement` builds the statement (again, for a retry).
    pub async fn fetch(
        &self,
        primary: &Database,
        dataset: &str,
        tenant: &str,
        statement: impl Fn() -> Result<QueryBuilder<'static, Postgres>, DbError>,
    ) -> Result<QueryResult, DbError> {
        if let Some(replica) = self.by_dataset.get(dataset).filter(|r| r.routed()) {
            match replica.db.fetch(tenant, statement()?).await {
                Err(DbError::Unavailable(cause)) => replica.fall_back(&cause),
                // A hot standby cancels statements that conflict with the
                // replay (SQLSTATE 40001): the primary has no such conflict.
                Err(DbError::Query(cause)) if cause.contains("conflict with recovery") => {
                    tracing::debug!(database = %replica.name, %cause, "statement cancelled on the replica; running it on the primary");
                }
                other => return other,
            }
        }
        primary.fetch(tenant, statement()?).await
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::path::Path;

    use super::*;

    fn load(vars: &[(&str, &str)]) -> Result<Settings, String> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
        let vars: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Settings::load_from(&dir, &vars).map_err(|e| e.to_string())
    }

    #[test]
    fn replicas_load_from_the_environment_and_bad_ones_are_named() {
        let settings = load(&[
            ("APP__DATABASES__REPLICA__URL", "postgres://u:pw@replica/analytics"),
            ("APP__DATABASES__REPLICA__MAX_LAG_SECONDS", "5"),
        ])
        .expect("loads");
        let replica = &settings.databases["replica"];
        assert_eq!(replica.max_lag_seconds, 5);
        assert_eq!(replica.max_connections, 16);
        assert!(!format!("{settings:?}").contains("pw@"), "the URL is a secret");

        let message = load(&[
            ("APP__DATABASES__REPLICA__URL", "postgres://replica/analytics"),
            ("APP__DATABASES__REPLICA__MAX_CONNECTIONS", "0"),
        ])
        .expect_err("out of range");
        assert!(
            message.contains("APP__DATABASES__REPLICA__MAX_CONNECTIONS = 0"),
            "{message}"
        );
        let message = load(&[("APP__DATABASES__REPLICA__MAX_LAG_SECONDS", "5")]).expect_err("no url");
        assert!(message.contains("APP__DATABASES__REPLICA__URL"), "{message}");
        let message = load(&[("APP__DATABASES__PRIMARY__URL", "postgres://x/y")]).expect_err("primary");
        assert!(message.contains("databases.primary"), "{message}");
    }

    #[test]
    fn a_dataset_naming_an_unknown_database_is_refused() {
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/model.toml")).expect("model");
        let text = text.replacen("[datasets.sales]\n", "[datasets.sales]\ndatabase = \"replica\"\n", 1);
        let model = SemanticModel::from_toml(&text).expect("model");
        assert_eq!(model.datasets["sales"].database(), "replica");
        let mut settings = Settings::default();
        let message = check_model(&settings, &model).expect_err("unknown");
        assert!(
            message.contains("dataset `sales`") && message.contains("`replica`") && message.contains("primary"),
            "{message}"
        );
        settings.databases.insert(
            "replica".into(),
            ReplicaSettings {
                url: crate::config::Secret::new("postgres://replica/analytics"),
                ..ReplicaSettings::default()
            },
        );
        assert!(check_model(&settings, &model).is_ok());
        // Routing is not part of the definition: cache keys do not change.
        let plain = SemanticModel::from_toml(
            &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/model.toml")).expect("model"),
        )
        .expect("model");
        assert_eq!(
            plain.datasets["sales"].definition_hash,
            model.datasets["sales"].definition_hash
        );
    }
}
