//! The `analytics-api` binary: parses the command line, loads settings, starts
//! logging and hands over to the library.

use std::path::PathBuf;
use std::process::ExitCode;

use analytics_api::config::Settings;
use analytics_api::model::SemanticModel;
use analytics_api::{db, telemetry, Application};
use clap::{Parser, Subcommand};

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
    },
    /// Validate the settings and the semantic model, then exit.
    CheckConfig,
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
    telemetry::init_logging(&settings.log);
    match run(cli.command.unwrap_or(Command::Serve), settings).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            tracing::error!("{message}");
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command, settings: Settings) -> Result<(), String> {
    match command {
        Command::Serve => {
            let app = Application::build(settings).await.map_err(|e| e.to_string())?;
            tracing::info!(address = %app.local_addr().map_err(|e| e.to_string())?, "listening");
            app.run_until_stopped().await.map_err(|e| e.to_string())
        }
        Command::Migrate => {
            if db::create_database_if_missing(&settings.database)
                .await
                .map_err(|e| e.to_string())?
            {
                tracing::info!("created the database");
            }
            let pool = db::pool(&settings.database).map_err(|e| e.to_string())?;
            db::migrate(&pool).await.map_err(|e| e.to_string())?;
            tracing::info!("migrations applied");
            Ok(())
        }
        Command::Seed { sales, seed, anchor } => {
            let pool = db::pool(&settings.database).map_err(|e| e.to_string())?;
            db::migrate(&pool).await.map_err(|e| e.to_string())?;
            let options = db::seed::SeedOptions {
                sales,
                seed,
                anchor: anchor.unwrap_or_else(|| chrono::Utc::now().date_naive()),
            };
            let report = db::seed::seed_demo(&pool, &options).await.map_err(|e| e.to_string())?;
            tracing::info!(
                sales = report.sales,
                product_sales = report.product_sales,
                seconds = report.elapsed.as_secs_f64(),
                "seed complete"
            );
            Ok(())
        }
        Command::CheckConfig => {
            let model = SemanticModel::load(&settings.model.path).map_err(|e| e.to_string())?;
            for (name, dataset) in &model.datasets {
                println!(
                    "dataset `{name}`: {} metrics, {} dimensions, {} joins",
                    dataset.def.metrics.len(),
                    dataset.def.dimensions.len(),
                    dataset.def.joins.len()
                );
            }
            println!("configuration OK");
            Ok(())
        }
    }
}
