//! The `analytics-api` binary: parses the command line, loads settings, starts
//! logging and hands over to the library.

use std::path::PathBuf;
use std::process::ExitCode;

use analytics_api::config::Settings;
use analytics_api::model::{triggers, SemanticModel};
use analytics_api::rollups::{Built, Rollups};
use analytics_api::tenancy::{keys, Tenants};
use analytics_api::{db, telemetry, Application};
use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

/// mimalloc: the request path allocates many small short-lived buffers, which
/// glibc's malloc served at ~15% of CPU in the hot-path profile.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "analytics-api",
    version,
    about = "Analytics HTTP API over PostgreSQL with an L1 + Redis cache"
)]
struct Cli {
    /// Directory holding default.toml and {APP_ENV}.toml.
    #[arg(long, global = true, default_value = "config", env = "CONFIG_DIR")]
    config_dir: PathBuf,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the HTTP server (the default).
    Serve,
    /// Create the database if missing and run pending migrations.
    Migrate,
    /// Replace the demo data with freshly generated rows.
    Seed {
        /// Number of sales to generate.
        #[arg(long, default_value_t = 200_000)]
        sales: u64,
        /// PRNG seed: the same seed (on the same day) gives the same data.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Last day of the 3-year window (YYYY-MM-DD); today by default.
        #[arg(long)]
        anchor: Option<chrono::NaiveDate>,
        /// Seed even while servers are connected to the database (their
        /// uncached queries then wait on the seed's locks and time out).
        #[arg(long)]
        force: bool,
    },
    /// Validate the settings, the semantic model and the tenants, then exit.
    CheckConfig,
    /// Manage API keys stored in the `api_keys` table.
    Keys {
        #[command(subcommand)]
        action: KeysAction,
    },
    /// Manage the change-capture triggers on the model's tables (`serve`
    /// installs them itself unless `freshness.install_triggers` is off).
    Triggers {
        #[command(subcommand)]
        action: TriggersAction,
    },
    /// Pre-aggregated tables declared in the model (`rollups`).
    Rollups {
        #[command(subcommand)]
        action: RollupsAction,
    },
}

#[derive(Subcommand)]
enum RollupsAction {
    /// Build (or rebuild) rollups now, with progress; all when none is named.
    Build { names: Vec<String> },
    /// Each rollup's state, rows, size, last refresh and pending changes.
    Status,
    /// Drop rollup tables and their state; queries then read the raw table
    /// (a running `serve` with build_on_start rebuilds them).
    Drop { names: Vec<String> },
}

#[derive(Subcommand)]
enum TriggersAction {
    /// Install or update them (needs the tables' owner).
    Install,
    /// Remove them: answers are then only as fresh as their TTL.
    Drop,
    /// Print the SQL `install` runs, for a DBA to review or run by hand.
    Show,
}

#[derive(Subcommand)]
enum KeysAction {
    /// Create a key for a configured tenant; the key is printed once.
    Create {
        #[arg(long)]
        tenant: String,
    },
    /// List keys (prefix, tenant, dates), never the keys themselves.
    List {
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Revoke a key by its id or its printed prefix (e.g. ak_1a2b3c4d).
    Revoke { id_or_prefix: String },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = match Settings::load(&cli.config_dir) {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("error: configuration: {error}");
            return ExitCode::from(2);
        }
    };
    let _log_guard = telemetry::init_logging(&settings.log);
    let json_logs = settings.log.format == analytics_api::config::LogFormat::Json;
    let files: Vec<String> = settings.sources.iter().map(|f| f.display().to_string()).collect();
    tracing::info!(files = ?files, model = %settings.model.path.display(), "settings loaded (then the environment)");
    match run(cli.command.unwrap_or(Command::Serve), settings).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // Once: into the JSON log where log shippers read it, else on
            // stderr for the person at the terminal. `{:#}` prints the whole
            // context chain on one line.
            if json_logs {
                tracing::error!("{error:#}");
            } else {
                eprintln!("error: {error:#}");
            }
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command, settings: Settings) -> anyhow::Result<()> {
    match command {
        Command::Serve => {
            let app = Application::build(settings).await?;
            tracing::info!(address = %app.local_addr()?, "listening");
            app.run_until_stopped().await.context("serving")
        }
        Command::Migrate => {
            if db::create_database_if_missing(&settings.database).await? {
                tracing::info!("created the database");
            }
            let pool = db::pool(&settings.database)?;
            db::migrate(&pool).await?;
            tracing::info!("migrations applied");
            Ok(())
        }
        Command::Seed {
            sales,
            seed,
            anchor,
            force,
        } => {
            let pool = db::cli_pool(&settings.database)?;
            db::migrate(&pool).await?;
            let serving = db::seed::serving_connections(&pool).await?;
            if serving > 0 && !force {
                bail!(
                    "{serving} server connection(s) are open on this database: seeding replaces every sale under a \
                     table lock, so their uncached queries would wait and time out. Stop the servers first, or pass --force"
                );
            }
            let options = db::seed::SeedOptions {
                sales,
                seed,
                anchor: anchor.unwrap_or_else(|| chrono::Utc::now().date_naive()),
            };
            let report = db::seed::seed_demo(&pool, &options).await?;
            tracing::info!(
                sales = report.sales,
                product_sales = report.product_sales,
                seconds = report.elapsed.as_secs_f64(),
                "seed complete"
            );
            Ok(())
        }
        Command::Keys { action } => manage_keys(action, &settings).await,
        Command::Triggers { action } => manage_triggers(action, &settings).await,
        Command::Rollups { action } => manage_rollups(action, settings).await,
        Command::CheckConfig => {
            let model = SemanticModel::load(&settings.model.path)?;
            Tenants::from_settings(&settings.auth, &settings.rate_limit, &model)?;
            db::replica::check_model(&settings, &model).map_err(anyhow::Error::msg)?;
            for (name, dataset) in &model.datasets {
                println!(
                    "dataset `{name}`: {} metrics, {} dimensions, {} joins, {} rollups",
                    dataset.def.metrics.len(),
                    dataset.def.dimensions.len(),
                    dataset.def.joins.len(),
                    dataset.rollups.len()
                );
            }
            println!("{} tenants configured", settings.auth.tenants.len());
            // With the database reachable, the model's SQL is planned against it.
            let pool = db::pool(&settings.database)?;
            match sqlx::query("SELECT 1").execute(&pool).await {
                Ok(_) => {
                    db::model_check::check(&pool, &model).await?;
                    println!("model checked against the database");
                }
                Err(error) => println!("database not reachable ({error}); the model was not checked against it"),
            }
            println!("configuration OK");
            Ok(())
        }
    }
}

async fn manage_triggers(action: TriggersAction, settings: &Settings) -> anyhow::Result<()> {
    let model = SemanticModel::load(&settings.model.path)?;
    let channel = &settings.freshness.channel;
    let statements = match action {
        TriggersAction::Install | TriggersAction::Show => {
            triggers::install_statements(&model, channel, settings.rollups.enabled)
        }
        TriggersAction::Drop => triggers::drop_statements(&model),
    };
    if matches!(action, TriggersAction::Show) {
        for statement in statements {
            println!("{statement};\n");
        }
        return Ok(());
    }
    let pool = db::pool(&settings.database)?;
    db::capture::run_ddl(&pool, &statements)
        .await
        .context("running the trigger statements (see them with `triggers show`)")?;
    match action {
        TriggersAction::Drop => println!("change-capture triggers removed"),
        _ => println!("change-capture triggers installed; they notify on channel `{channel}`"),
    }
    Ok(())
}

async fn manage_rollups(action: RollupsAction, settings: Settings) -> anyhow::Result<()> {
    let model = std::sync::Arc::new(SemanticModel::load(&settings.model.path)?);
    let pool = db::pool(&settings.database)?;
    let (rollups, _) = Rollups::new(model, pool, settings.rollups.clone(), true);
    rollups
        .ensure_schema()
        .await
        .context("creating the rollup state tables")?;
    match action {
        RollupsAction::Build { names } => {
            for rollup in rollups.select(&names).map_err(anyhow::Error::msg)? {
                let bar = ProgressBar::new(0).with_style(
                    ProgressStyle::with_template("{prefix:24} [{bar:40}] {pos}/{len} months, {elapsed}")
                        .unwrap_or_else(|_| ProgressStyle::default_bar())
                        .progress_chars("=> "),
                );
                bar.set_prefix(rollup.id.clone());
                let progress = |done: usize, total: usize| {
                    bar.set_length(total as u64);
                    bar.set_position(done as u64);
                };
                let built = rollups
                    .build(&rollup, &progress)
                    .await
                    .with_context(|| format!("building rollup {}", rollup.id))?;
                bar.finish();
                match built {
                    Built::Done { rows } => println!("{}: {rows} rows in {}", rollup.id, rollup.table),
                    Built::Busy => println!("{}: another process is building it; skipped", rollup.id),
                }
            }
        }
        RollupsAction::Status => {
            println!(
                "{:<28} {:<8} {:>10} {:>10} {:>8} {:<25} error",
                "rollup", "state", "rows", "MB", "pending", "refreshed_at"
            );
            for rollup in rollups.select(&[]).map_err(anyhow::Error::msg)? {
                let m = rollups.measure(&rollup).await?;
                let refreshed = m
                    .refreshed_at
                    .and_then(|t| chrono::DateTime::from_timestamp(t as i64, 0))
                    .map(|t| t.to_rfc3339())
                    .unwrap_or_else(|| "-".into());
                println!(
                    "{:<28} {:<8} {:>10} {:>10.1} {:>8} {:<25} {}",
                    rollup.id,
                    m.state.as_deref().unwrap_or("missing"),
                    m.rows,
                    m.bytes as f64 / 1e6,
                    m.pending_changes,
                    refreshed,
                    m.error.as_deref().unwrap_or("")
                );
            }
        }
        RollupsAction::Drop { names } => {
            for rollup in rollups.select(&names).map_err(anyhow::Error::msg)? {
                rollups.drop_rollup(&rollup).await?;
                println!("{}: dropped {}", rollup.id, rollup.table);
            }
        }
    }
    Ok(())
}

async fn manage_keys(action: KeysAction, settings: &Settings) -> anyhow::Result<()> {
    let pool = db::pool(&settings.database)?;
    db::migrate(&pool).await?;
    match action {
        KeysAction::Create { tenant } => {
            let model = SemanticModel::load(&settings.model.path)?;
            let tenants = Tenants::from_settings(&settings.auth, &settings.rate_limit, &model)?;
            // A key for an undeclared tenant would authenticate to nothing
            // (or, after a typo, to an unscoped tenant): refuse it up front.
            if !tenants.is_declared(&tenant) {
                bail!("tenant `{tenant}` is not declared under [[auth.tenants]] in the configuration");
            }
            let key = keys::create(&pool, &tenant).await?;
            println!("{key}");
            eprintln!("API key for tenant `{tenant}` created. It is shown only now; store it safely.");
            Ok(())
        }
        KeysAction::List { tenant } => {
            let rows = keys::list(&pool, tenant.as_deref()).await?;
            println!(
                "{:<6} {:<14} {:<20} {:<20} {:<20} revoked_at",
                "id", "prefix", "tenant", "created_at (UTC)", "last_used_at"
            );
            // Fixed-width times, so the columns line up.
            let at = |t: chrono::DateTime<chrono::Utc>| t.format("%Y-%m-%d %H:%M:%S").to_string();
            let show = |t: Option<chrono::DateTime<chrono::Utc>>| t.map(at).unwrap_or_else(|| "-".into());
            for row in rows {
                println!(
                    "{:<6} {:<14} {:<20} {:<20} {:<20} {}",
                    row.id,
                    row.key_prefix,
                    row.tenant,
                    at(row.created_at),
                    show(row.last_used_at),
                    show(row.revoked_at)
                );
            }
            Ok(())
        }
        KeysAction::Revoke { id_or_prefix } => {
            let revoked = keys::revoke(&pool, &id_or_prefix).await?;
            if revoked == 0 {
                bail!("no active key with id or prefix `{id_or_prefix}`");
            }
            println!("revoked {revoked} key(s); running servers stop accepting it within auth.key_cache_seconds");
            Ok(())
        }
    }
}
