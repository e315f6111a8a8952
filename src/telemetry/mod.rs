//! Logging (tracing subscriber, pretty or JSON, and how errors are shown in
//! it) and the Prometheus recorder.

pub mod catalog;

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::{fmt, EnvFilter};

use crate::config::{LogFormat, LogSettings};

/// Installs the global subscriber. `RUST_LOG` (already folded into
/// `settings.level`) picks what is logged. Safe to call more than once.
///
/// Lines are written by a background thread, so a request never waits on a
/// slow stdout; keep the returned guard alive until exit to flush them.
pub fn init_logging(settings: &LogSettings) -> Option<WorkerGuard> {
    let filter = EnvFilter::try_new(&settings.level).unwrap_or_else(|_| EnvFilter::new("info"));
    // Colour only for people at a terminal, never into log files.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let (writer, guard) = tracing_appender::non_blocking(std::io::stdout());
    let builder = fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(ansi)
        .with_writer(writer);
    let installed = match settings.format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
        LogFormat::Pretty => builder.compact().try_init(),
    };
    installed.ok().map(|_| guard)
}

/// Seconds buckets for request and query durations: sub-millisecond cache
/// hits up to the 30 s request timeout.
const DURATION_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Result sizes: one row to the 10,000-row limit; a few bytes to 8 MiB entries.
const ROW_BUCKETS: &[f64] = &[1.0, 5.0, 10.0, 50.0, 100.0, 500.0, 1_000.0, 5_000.0, 10_000.0];
const BYTE_BUCKETS: &[f64] = &[
    256.0,
    1_024.0,
    4_096.0,
    16_384.0,
    65_536.0,
    262_144.0,
    1_048_576.0,
    4_194_304.0,
    8_388_608.0,
];

static METRICS: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// The process-wide Prometheus recorder (installed on first use; a process
/// has one global recorder, and tests start several apps in one process).
/// Its upkeep task drains histograms so memory does not grow.
pub fn metrics_handle() -> Option<PrometheusHandle> {
    METRICS
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), DURATION_BUCKETS)
                .ok()?
                .set_buckets_for_metric(Matcher::Full("analytics_result_rows".into()), ROW_BUCKETS)
                .ok()?
                .set_buckets_for_metric(Matcher::Full("analytics_result_bytes".into()), BYTE_BUCKETS)
                .ok()?
                .install_recorder()
                .map_err(|error| tracing::warn!(%error, "prometheus recorder not installed"))
                .ok()?;
            catalog::register();
            let upkeep = recorder.clone();
            // The upkeep runs on a plain thread: it must outlive any one tokio
            // runtime (each test has its own).
            std::thread::Builder::new()
                .name("metrics-upkeep".into())
                .spawn(move || loop {
                    std::thread::sleep(Duration::from_secs(5));
                    upkeep.run_upkeep();
                })
                .ok()?;
            Some(recorder)
        })
        .clone()
}

/// Displays an error with its whole `source()` chain: `a: b: c`.
pub struct ErrorChain<'a>(pub &'a dyn std::error::Error);

impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}
