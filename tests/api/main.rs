//! Black-box API tests: each spawns the real server on 127.0.0.1:0 against
//! its own PostgreSQL database and its own Redis key prefix (or its own
//! redis-server, for fault tests). One binary keeps link time down.

mod helpers;

mod admin;
mod cache;
mod cache_delete;
mod connections;
mod dry_run;
mod errors;
mod export;
mod faults;
mod freshness;
mod health;
mod http_caching;
mod hybrid;
mod injection;
mod load_balancer;
mod observability;
mod openapi;
mod outage;
mod pg_cluster;
mod processes;
mod properties;
mod query;
mod redis_modes;
mod replicas;
mod rollups;
mod seed;
mod shedding;
mod status_page;
mod tenancy;
mod tls;
