//! analytics-api: dashboards POST a query (metrics, dimensions, filters, a
//! date range); the server validates it against the operator's semantic
//! model, compiles it to one parameterized SQL statement, runs it on
//! PostgreSQL and answers JSON, with an L1 + Redis cache in front.
//!
//! Layout, from the ground floor up (a module imports only those above it
//! in this list):
//! - `clock`: wall-clock helpers
//! - `breaker`: the circuit breaker of a dependency (Redis, PostgreSQL)
//! - `sync`: poison-tolerant locking
//! - `offload`: backend work from a serving thread to the shared runtime
//! - `gzip`: gzip responses from data deflated once (segments, one member)
//! - `tls`: TLS to PostgreSQL and Redis: CA files, the rustls provider, failed
//!   handshakes in words
//! - `config`: layered settings (defaults, TOML files, environment)
//! - `model`: semantic model, validation, canonical form, SQL, TTL policy (pure)
//! - `telemetry`: logging, error chains in logs, the Prometheus recorder
//! - `redis`: the shared Redis client: pool, timeouts, breaker, probe
//! - `db`: PostgreSQL pool, migrations, query execution, demo data seeding
//! - `rollups`: pre-aggregated tables: builds, refreshes, routing state
//! - `cache`: key space, L1 + Redis cache-aside, single-flight, stats
//! - `status`: traffic history and hot keys for the status page
//! - `tenancy`: tenants, API keys, rate limits (on `redis`)
//! - `analytics`: the query use case: compile -> cache -> database -> status
//! - `freshness`: change capture (LISTEN) and invalidation across instances
//! - `health`: dependency checks for health endpoints and the status page
//! - `error`: `ApiError`, the one table of error codes and statuses
//! - `state`: `AppState`, the handles handlers share
//! - `http`: routes, extractors, middleware, OpenAPI (thin: parse, call, render)
//! - `startup`: `Application::build` / `run`, used by `main` and the tests

pub mod analytics;
pub mod breaker;
pub mod cache;
pub mod clock;
pub mod config;
pub mod db;
pub mod error;
pub mod freshness;
pub mod gzip;
pub mod health;
pub mod http;
pub mod model;
pub mod offload;
pub mod redis;
pub mod rollups;
pub mod startup;
pub mod state;
pub mod status;
pub mod sync;
pub mod telemetry;
pub mod tenancy;
pub mod tls;

pub use startup::Application;
