//! Rollups at run time: which of the model's rollups may answer now, their
//! builds in the background, their refreshes from the change log, and what
//! `/metrics`, `/cache/stats` and `/health` say about them.
//!
//! A rollup answers only while it is *usable*: built with the model's
//! current definition, and its last refresh succeeded. Otherwise queries go
//! to the raw table, which is always exact. Every refresh that re-aggregated
//! something reports it on a channel that `freshness` drains into
//! invalidations (after the refresh committed), so an answer computed from a
//! rollup before it saw a change never stays valid.

mod store;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use sqlx::PgPool;
use tokio::sync::mpsc;

use crate::config::RollupSettings;
use crate::model::freshness::Change;
use crate::model::{CompiledQuery, Rollup, SemanticModel};
use crate::sync::lock;
use crate::telemetry::ErrorChain;

pub use store::{Built, Measured, Refreshed};

/// A refresh that re-aggregated `change` of `dataset`: to invalidate.
#[derive(Debug, Clone)]
pub struct Reaggregated {
    pub dataset: String,
    pub change: Change,
}

/// How long a failed build waits before it is tried again.
const BUILD_RETRY: Duration = Duration::from_secs(30);
/// How often another instance's build is looked for.
const BUILD_POLL: Duration = Duration::from_secs(2);
/// The periodic sweep takes only changes logged at least this long ago:
/// younger ones belong to notifications on their way, whose own narrower
/// invalidation (by tracked values) follows their refresh.
const SWEEP_MIN_AGE_MS: u64 = 10_000;

#[derive(Default)]
struct State {
    /// Built with the current definition and caught up once.
    built: AtomicBool,
    /// The last refresh failed: answer from raw until one succeeds.
    failing: Mutex<Option<String>>,
    /// Its table is gone or outdated: the background loop rebuilds it.
    needs_build: AtomicBool,
    /// Computations it answered.
    served: AtomicU64,
    measured: Mutex<Measured>,
}

/// Per rollup, for `/cache/stats` and `rollups status`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RollupStatus {
    /// `<dataset>.<rollup>`.
    pub name: String,
    pub table: String,
    pub granularity: &'static str,
    /// `ready`, `building`, `failing` (its refresh fails: raw answers),
    /// `missing` (not built) or `disabled`.
    pub state: &'static str,
    /// Live rows (PostgreSQL's statistics).
    pub rows: u64,
    pub bytes: u64,
    /// Unix seconds of the last refresh or build.
    pub refreshed_at: Option<f64>,
    /// Seconds since the oldest change it has not re-aggregated (0: none).
    pub lag_seconds: f64,
    pub pending_changes: u64,
    /// Computed answers it served since start, and their share of all
    /// computed answers.
    pub queries_served: u64,
    pub share: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The rollups of every dataset.
pub struct Rollups {
    model: Arc<SemanticModel>,
    pool: PgPool,
    settings: RollupSettings,
    /// Whether rollups may answer at all (settings, and change capture on).
    active: bool,
    states: BTreeMap<String, State>,
    /// Computations answered from the raw table.
    raw_served: AtomicU64,
    reaggregated: mpsc::UnboundedSender<Reaggregated>,
}

impl Rollups {
    /// `capture` says whether change capture runs: without it nothing keeps
    /// rollups exact, so they do not answer. The receiver yields what each
    /// refresh re-aggregated, for invalidation.
    pub fn new(
        model: Arc<SemanticModel>,
        pool: PgPool,
        settings: RollupSettings,
        capture: bool,
    ) -> (Arc<Self>, mpsc::UnboundedReceiver<Reaggregated>) {
        let states = all(&model).map(|r| (r.id.clone(), State::default())).collect();
        let (reaggregated, receiver) = mpsc::unbounded_channel();
        let active = settings.enabled && capture && all(&model).next().is_some();
        let this = Arc::new(Self {
            model,
            pool,
            settings,
            active,
            states,
            raw_served: AtomicU64::new(0),
            reaggregated,
        });
        (this, receiver)
    }

    fn state(&self, rollup: &Rollup) -> Option<&State> {
        self.states.get(&rollup.id)
    }

    /// Whether `rollups.enabled` is on (the capture triggers then write the
    /// change log).
    pub fn enabled(&self) -> bool {
        self.settings.enabled
    }

    /// Whether `rollup` may answer now.
    pub fn usable(&self, rollup: &Rollup) -> bool {
        self.active
            && self
                .state(rollup)
                .is_some_and(|s| s.built.load(Ordering::Acquire) && lock(&s.failing).is_none())
    }

    /// The rollup that answers `compiled` now, if any.
    pub fn route<'m>(&'m self, compiled: &CompiledQuery) -> Option<&'m Rollup> {
        if !self.active {
            return None;
        }
        self.model.route(compiled, |r| self.usable(r))
    }

    /// Counts a computed answer by where it came from.
    pub fn record_served(&self, rollup: Option<&Rollup>) {
        let source = match rollup.and_then(|r| self.state(r).map(|s| (r, s))) {
            Some((rollup, state)) => {
                state.served.fetch_add(1, Ordering::Relaxed);
                rollup.id.as_str()
            }
            None => {
                self.raw_served.fetch_add(1, Ordering::Relaxed);
                "raw"
            }
        };
        metrics::counter!("analytics_rollup_queries_total", "source" => source.to_owned()).increment(1);
    }

    /// Starts the background work: build or adopt each rollup, then refresh
    /// from the change log every `refresh_interval_ms` and measure sizes.
    pub fn start(self: &Arc<Self>) {
        if !self.active {
            if self.settings.enabled && all(&self.model).next().is_some() {
                tracing::warn!("rollups are declared but change capture is off (freshness.enabled = false): answering from the raw tables");
            }
            return;
        }
        let this = Arc::clone(self);
        tokio::spawn(async move { this.run().await });
    }

    async fn run(self: Arc<Self>) {
        let mut backoff = Duration::from_millis(500);
        loop {
            match self.prepare().await {
                Ok(()) => break,
                Err(error) => {
                    tracing::warn!(error = %ErrorChain(&error), "cannot prepare the rollup tables; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
        }
        let rollups: Vec<Rollup> = all(&self.model).cloned().collect();
        for rollup in rollups {
            let this = Arc::clone(&self);
            tokio::spawn(async move { this.adopt_or_build(&rollup).await });
        }
        let interval = Duration::from_millis(self.settings.refresh_interval_ms.max(100));
        loop {
            tokio::time::sleep(interval).await;
            for rollup in all(&self.model) {
                if self.state(rollup).is_some_and(|s| s.built.load(Ordering::Acquire)) {
                    self.refresh_one(rollup, None, SWEEP_MIN_AGE_MS).await;
                }
            }
            for rollup in all(&self.model) {
                let rebuild = self
                    .state(rollup)
                    .is_some_and(|s| s.needs_build.swap(false, Ordering::AcqRel));
                if rebuild {
                    tracing::warn!(rollup = %rollup.id, "rollup table missing or outdated; rebuilding (answering from the raw table meanwhile)");
                    let this = Arc::clone(&self);
                    let rollup = rollup.clone();
                    tokio::spawn(async move { this.adopt_or_build(&rollup).await });
                }
            }
            self.measure_all().await;
        }
    }

    async fn prepare(&self) -> Result<(), sqlx::Error> {
        store::ensure_schema(&self.pool).await?;
        let known: Vec<String> = all(&self.model).map(|r| r.id.clone()).collect();
        let forgotten = store::forget_others(&self.pool, &known).await?;
        if forgotten > 0 {
            tracing::info!(
                forgotten,
                "dropped change-log rows of rollups the model no longer declares"
            );
        }
        Ok(())
    }

    /// Uses the stored table if it was built with the current definition,
    /// else builds it (or waits for the instance that is building it).
    async fn adopt_or_build(&self, rollup: &Rollup) {
        loop {
            match store::stored_state(&self.pool, rollup).await {
                Ok(stored)
                    if stored.state == "ready" && stored.definition_hash == rollup.hash && stored.table_exists =>
                {
                    tracing::info!(rollup = %rollup.id, "rollup is built; catching up with the change log");
                    self.mark_built(rollup).await;
                    return;
                }
                Ok(_) if !self.settings.build_on_start => {
                    tracing::warn!(rollup = %rollup.id, "rollup is not built and rollups.build_on_start is off; run `analytics-api rollups build`");
                    tokio::time::sleep(BUILD_RETRY).await;
                    continue;
                }
                Ok(_) => {}
                Err(error) => {
                    tracing::warn!(rollup = %rollup.id, error = %ErrorChain(&error), "cannot read rollup state; retrying");
                    tokio::time::sleep(BUILD_POLL).await;
                    continue;
                }
            }
            match self.build(rollup, &|_, _| {}).await {
                Ok(Built::Done { rows }) => {
                    tracing::info!(rollup = %rollup.id, rows, "rollup built");
                    self.mark_built(rollup).await;
                    return;
                }
                Ok(Built::Busy) => tokio::time::sleep(BUILD_POLL).await,
                Err(error) => {
                    tracing::warn!(rollup = %rollup.id, error = %ErrorChain(&error), "rollup build failed; answering from the raw table, retrying later");
                    let _ = store::record_failure(&self.pool, rollup, &error.to_string()).await;
                    tokio::time::sleep(BUILD_RETRY).await;
                }
            }
        }
    }

    /// Re-aggregates what changed during the build, then lets `rollup`
    /// answer. Nothing has read it yet, so the first catch-up needs no
    /// invalidation (entries computed meanwhile came from the raw table); a
    /// change that slips in before `built` is set is caught by the second,
    /// which is reported like any refresh.
    async fn mark_built(&self, rollup: &Rollup) {
        let nothing_read_it = Change::default();
        self.refresh_one(rollup, Some(&nothing_read_it), 0).await;
        let Some(state) = self.state(rollup) else { return };
        if state.needs_build.load(Ordering::Acquire) {
            return; // the loop rebuilds it
        }
        // A refresh that failed for a passing reason leaves it `failing`
        // (no answers) until the sweep's next refresh succeeds.
        state.built.store(true, Ordering::Release);
        self.refresh_one(rollup, None, 0).await;
        self.measure_all().await;
    }

    /// Builds `rollup` now (`progress(done, total)` per month of data).
    pub async fn build(
        &self,
        rollup: &Rollup,
        progress: &(dyn Fn(usize, usize) + Send + Sync),
    ) -> Result<Built, sqlx::Error> {
        let def = &self.model.datasets[&rollup.dataset].def;
        let started = std::time::Instant::now();
        let built = store::build(&self.pool, def, rollup, self.settings.build_timeout_seconds, progress).await?;
        if let Built::Done { .. } = built {
            metrics::histogram!("analytics_rollup_build_seconds", "rollup" => rollup.id.clone())
                .record(started.elapsed().as_secs_f64());
        }
        Ok(built)
    }

    /// Re-aggregates the pending changes of every built rollup of `dataset`.
    /// Returns once they are committed (or failed: the rollup then answers
    /// nothing until a refresh succeeds). `covered` is the change the caller
    /// invalidates next (a notification's): days within it are not reported
    /// again, so its narrower invalidation (by tracked values) stands alone.
    pub async fn refresh_dataset(&self, dataset: &str, covered: Option<&Change>) {
        if !self.active {
            return;
        }
        let Some(definition) = self.model.datasets.get(dataset) else {
            return;
        };
        for rollup in &definition.rollups {
            if self.state(rollup).is_some_and(|s| s.built.load(Ordering::Acquire)) {
                self.refresh_one(rollup, covered, 0).await;
            }
        }
    }

    /// Re-aggregates `rollup`'s logged changes at least `older_than_ms` old
    /// and reports what it did for invalidation, unless `covered` includes it.
    async fn refresh_one(&self, rollup: &Rollup, covered: Option<&Change>, older_than_ms: u64) {
        let Some(state) = self.state(rollup) else { return };
        let def = &self.model.datasets[&rollup.dataset].def;
        let started = std::time::Instant::now();
        match store::refresh(&self.pool, def, rollup, self.settings.refresh_timeout_ms, older_than_ms).await {
            Ok(refreshed) => {
                if let Some(error) = lock(&state.failing).take() {
                    tracing::info!(rollup = %rollup.id, %error, "rollup refreshes again; answering from it");
                }
                let change = match refreshed {
                    Refreshed::Nothing => return,
                    Refreshed::Everything => Change::default(),
                    Refreshed::Spans(spans) => Change {
                        span: Some((spans[0].0, spans[spans.len() - 1].1)),
                        values: BTreeMap::new(),
                    },
                };
                metrics::histogram!("analytics_rollup_refresh_seconds", "rollup" => rollup.id.clone())
                    .record(started.elapsed().as_secs_f64());
                if covered.is_some_and(|c| within(&change, c)) {
                    return;
                }
                let _ = self.reaggregated.send(Reaggregated {
                    dataset: rollup.dataset.clone(),
                    change,
                });
            }
            Err(error) => {
                let message = ErrorChain(&error).to_string();
                if store::needs_build(&error) {
                    // Not a passing fault: the table must be built again.
                    state.built.store(false, Ordering::Release);
                    state.needs_build.store(true, Ordering::Release);
                }
                let first = lock(&state.failing).replace(message.clone()).is_none();
                if first {
                    tracing::warn!(rollup = %rollup.id, error = %message, "rollup refresh failed; answering from the raw table until one succeeds");
                }
                metrics::counter!("analytics_rollup_refresh_failures_total", "rollup" => rollup.id.clone())
                    .increment(1);
            }
        }
    }

    async fn measure_all(&self) {
        for rollup in all(&self.model) {
            let Some(state) = self.state(rollup) else { continue };
            match store::measure(&self.pool, rollup).await {
                Ok(measured) => {
                    let labels = [("rollup", rollup.id.clone())];
                    metrics::gauge!("analytics_rollup_rows", &labels).set(measured.rows as f64);
                    metrics::gauge!("analytics_rollup_bytes", &labels).set(measured.bytes as f64);
                    metrics::gauge!("analytics_rollup_lag_seconds", &labels).set(measured.lag_seconds);
                    if let Some(at) = measured.refreshed_at {
                        metrics::gauge!("analytics_rollup_last_refresh_timestamp_seconds", &labels).set(at);
                    }
                    metrics::gauge!("analytics_rollup_usable", &labels).set(if self.usable(rollup) {
                        1.0
                    } else {
                        0.0
                    });
                    *lock(&state.measured) = measured;
                }
                Err(error) => {
                    tracing::debug!(rollup = %rollup.id, error = %ErrorChain(&error), "cannot measure rollup")
                }
            }
        }
    }

    /// Every rollup's state, as last measured.
    pub fn status(&self) -> Vec<RollupStatus> {
        let served: u64 = self
            .states
            .values()
            .map(|s| s.served.load(Ordering::Relaxed))
            .sum::<u64>()
            + self.raw_served.load(Ordering::Relaxed);
        all(&self.model)
            .filter_map(|rollup| {
                let state = self.state(rollup)?;
                let measured = lock(&state.measured).clone();
                let failing = lock(&state.failing).clone();
                let queries_served = state.served.load(Ordering::Relaxed);
                Some(RollupStatus {
                    name: rollup.id.clone(),
                    table: rollup.table.clone(),
                    granularity: rollup.granularity.as_str(),
                    state: if !self.active {
                        "disabled"
                    } else if failing.is_some() {
                        "failing"
                    } else if state.built.load(Ordering::Acquire) {
                        "ready"
                    } else if measured.state.as_deref() == Some("building") {
                        "building"
                    } else {
                        "missing"
                    },
                    rows: measured.rows,
                    bytes: measured.bytes,
                    refreshed_at: measured.refreshed_at,
                    lag_seconds: measured.lag_seconds,
                    pending_changes: measured.pending_changes,
                    queries_served,
                    share: if served == 0 {
                        0.0
                    } else {
                        queries_served as f64 / served as f64
                    },
                    error: failing.or(measured.error),
                })
            })
            .collect()
    }

    /// Names of rollups whose refresh fails, for `/health`.
    pub fn failing(&self) -> Vec<String> {
        all(&self.model)
            .filter(|r| self.state(r).is_some_and(|s| lock(&s.failing).is_some()))
            .map(|r| r.id.clone())
            .collect()
    }

    /// The rollups named (`dataset.rollup` or just `rollup`), or all.
    pub fn select(&self, names: &[String]) -> Result<Vec<Rollup>, String> {
        if names.is_empty() {
            return Ok(all(&self.model).cloned().collect());
        }
        names
            .iter()
            .map(|name| {
                all(&self.model)
                    .find(|r| r.id == *name || r.name == *name)
                    .cloned()
                    .ok_or_else(|| format!("no rollup `{name}` in the model"))
            })
            .collect()
    }

    /// Creates the state table and the change log if missing: `serve` does
    /// it once when it starts; a command-line task before its work.
    pub async fn ensure_schema(&self) -> Result<(), sqlx::Error> {
        store::ensure_schema(&self.pool).await
    }

    /// Measures `rollup` now (for `rollups status`).
    pub async fn measure(&self, rollup: &Rollup) -> Result<Measured, sqlx::Error> {
        store::measure(&self.pool, rollup).await
    }

    /// Drops `rollup`'s table and state (`rollups drop`).
    pub async fn drop_rollup(&self, rollup: &Rollup) -> Result<(), sqlx::Error> {
        store::drop(&self.pool, rollup).await
    }
}

/// Whether invalidating `covering` invalidates everything `change` touches.
fn within(change: &Change, covering: &Change) -> bool {
    match (change.span, covering.span) {
        (_, None) => true,
        (Some((first, last)), Some((from, to))) => from <= first && last <= to,
        (None, Some(_)) => false,
    }
}

fn all(model: &SemanticModel) -> impl Iterator<Item = &Rollup> {
    model.datasets.values().flat_map(|d| d.rollups.iter())
}
