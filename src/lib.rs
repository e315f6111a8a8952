//! analytics-api: dashboards POST a query (metrics, dimensions, filters, a
//! date range); the server validates it against the operator's semantic
//! model, compiles it to one parameterized SQL statement, runs it on
//! PostgreSQL and answers JSON, with an L1 + Redis cache in front.
//!
//! Layout:
//! - `config`: layered settings (defaults, TOML files, environment)
//! - `telemetry`: logging and the Prometheus recorder
//! - `error`: `ApiError`, the one JSON error shape clients see
//! - `model`: semantic model, request validation, canonical form, SQL (pure)
//! - `cache`: L1 + Redis cache-aside, breaker, single-flight, stats
//! - `db`: PostgreSQL pool, migrations, query execution, demo data seeding
//! - `http`: routes, extractors, middleware, OpenAPI
//! - `state`: `AppState`, the handles handlers share
//! - `status`: traffic history and hot keys for the status page
//! - `tenancy`: tenants, API keys, rate limits
//! - `startup`: `Application::build` / `run`, used by `main` and the tests

pub mod cache;
pub mod config;
pub mod db;
pub mod error;
pub mod http;
pub mod model;
pub mod startup;
pub mod state;
pub mod status;
pub mod telemetry;
pub mod tenancy;

pub use startup::Application;
