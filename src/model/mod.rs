//! The semantic model: the operator's datasets, request validation, canonical
//! form, SQL compilation and TTL policy. Everything here is pure: no I/O,
//! and no import from any other module of ours (the ground floor).
//!
//! - `definition`: the model file, validated at start-up
//! - `aggregate`: typed metrics and their additive parts
//! - `rollup_def`: rollup declarations, their tables' names (leaf)
//! - `rollup`: pre-aggregated tables: checks, coverage, their SQL
//! - `load`: the model file read, its datasets and rollups validated
//! - `catalog`: the model as `GET /analytics/meta` shows it
//! - `request`: the query as clients send it, and why one is refused
//! - `names`: name lookups shared by resolution and filters
//! - `resolve`: a request checked against a dataset, in canonical form
//! - `filters`: filter values typed and canonicalised
//! - `compile`: the one parameterized SQL statement
//! - `freshness`: the data slices an answer depends on and a change touches
//! - `triggers`: the change-capture trigger DDL for the datasets' tables
//! - `ttl`: how long a result may be cached

mod aggregate;
pub mod catalog;
mod compile;
mod definition;
mod filters;
pub mod freshness;
mod load;
mod names;
mod request;
mod resolve;
pub mod rollup;
mod rollup_def;
pub mod triggers;
mod ttl;

use std::collections::BTreeMap;

use chrono::NaiveDate;
use md5::{Digest, Md5};
use serde::Serialize;

pub use compile::{build_sql, Statement};
pub use definition::{
    is_sql_identifier, Dataset, DatasetDef, DimensionDef, MetricDef, ModelError, SemanticModel, ValueType,
};
pub use filters::{resolve_filters, FilterOp, FilterValue, ResolvedFilter};
pub use request::{DateRange, OrderBy, QueryError, QueryErrorCode, QueryRequest};
pub use resolve::{resolve, split_compare, ResolvedQuery, MAX_COMPARE_RANGES};
pub use rollup::Rollup;
pub use ttl::TtlPolicy;

/// Who a query runs for: part of the cache key, and the source of row filters
/// that the compiler ANDs into every statement.
#[derive(Debug, Clone, Default)]
pub struct TenantScope {
    pub id: String,
    /// Dataset -> filters that confine this tenant's rows.
    pub row_filters: BTreeMap<String, Vec<ResolvedFilter>>,
}

impl TenantScope {
    pub fn unscoped(id: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            row_filters: BTreeMap::new(),
        }
    }
}

/// What compilation needs besides the model and the request.
#[derive(Debug, Clone, Copy)]
pub struct CompileContext {
    pub ttl: TtlPolicy,
    /// Stale windows for datasets that set none.
    pub stale: StaleWindows,
    /// "Today" in UTC, passed in so compilation stays a pure function.
    pub today: NaiveDate,
}

/// How long past its TTL an answer may still be served (RFC 5861).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StaleWindows {
    /// Served at once while one background flight refreshes it.
    pub while_revalidate_seconds: u64,
    /// Served, marked stale, while the database cannot answer.
    pub if_error_seconds: u64,
}

/// A validated request: its cache identity and lifetime. The SQL is built
/// only on a miss ([`SemanticModel::sql_for`]): a cache hit never pays for it.
#[derive(Debug, Clone)]
pub struct CompiledQuery {
    pub dataset: String,
    pub tenant: String,
    pub resolved: ResolvedQuery,
    /// The tenant's row filters for this dataset.
    pub scope: Vec<ResolvedFilter>,
    /// MD5 (hex) of everything that can change the result; the key space
    /// turns it into the cache key.
    pub hash: String,
    pub ttl_seconds: u64,
    pub stale: StaleWindows,
    /// The slices of the dataset the answer depends on (see `freshness`).
    pub tags: Vec<freshness::Tag>,
}

impl CompiledQuery {
    /// Short human description for logs and the status page.
    pub fn summary(&self) -> String {
        summarize(&self.resolved)
    }
}

/// The hashed identity of a query: everything that can change its result.
#[derive(Serialize)]
struct CacheIdentity<'a> {
    query: &'a ResolvedQuery,
    model: &'a str,
    scope: &'a [ResolvedFilter],
}

impl SemanticModel {
    /// Validates and compiles `request` for `tenant`.
    pub fn compile(
        &self,
        context: &CompileContext,
        tenant: &TenantScope,
        request: &QueryRequest,
    ) -> Result<CompiledQuery, QueryError> {
        let dataset = self.dataset(request.dataset.as_deref()).ok_or_else(|| {
            QueryError::invalid(
                QueryErrorCode::UnknownDataset,
                "dataset",
                format!(
                    "unknown dataset `{}`; known: {}",
                    request.dataset.as_deref().unwrap_or_default(),
                    self.datasets.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            )
        })?;
        let resolved = resolve(dataset, request)?;
        let scope = tenant
            .row_filters
            .get(&dataset.name)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let identity = CacheIdentity {
            query: &resolved,
            model: &dataset.definition_hash,
            scope,
        };
        // Serializing plain data structures cannot fail; an empty digest input
        // would still give a valid (if shared) key, never a panic.
        let canonical = serde_json::to_vec(&identity).unwrap_or_default();
        let hash = hex::encode(Md5::digest(&canonical));
        let ttl_seconds = context.ttl.ttl_for(
            dataset.def.ttl_seconds,
            resolved.date_range.map(|r| r.end),
            context.today,
        );
        let stale = StaleWindows {
            while_revalidate_seconds: dataset
                .def
                .stale_while_revalidate_seconds
                .unwrap_or(context.stale.while_revalidate_seconds),
            if_error_seconds: dataset
                .def
                .stale_if_error_seconds
                .unwrap_or(context.stale.if_error_seconds),
        };
        let tags = freshness::dependencies(dataset, &resolved, scope);
        Ok(CompiledQuery {
            dataset: dataset.name.clone(),
            tenant: tenant.id.clone(),
            resolved,
            scope: scope.to_vec(),
            hash,
            ttl_seconds,
            stale,
            tags,
        })
    }

    /// The smallest rollup that covers `compiled` among those `usable`
    /// says may serve now; `None`: the raw table.
    pub fn route(&self, compiled: &CompiledQuery, usable: impl Fn(&Rollup) -> bool) -> Option<&Rollup> {
        let dataset = self.datasets.get(&compiled.dataset)?;
        dataset.rollups.iter().find(|rollup| {
            usable(rollup)
                && rollup::covers(
                    &dataset.def,
                    &dataset.reads,
                    rollup,
                    &compiled.resolved,
                    &compiled.scope,
                )
        })
    }

    /// The statement for a compiled query, on `rollup` (which must cover
    /// it, see [`SemanticModel::route`]) or on the raw table.
    pub fn sql_for(&self, compiled: &CompiledQuery, rollup: Option<&Rollup>) -> Option<Statement> {
        let dataset = self.datasets.get(&compiled.dataset)?;
        Some(build_sql(dataset, &compiled.resolved, &compiled.scope, rollup))
    }
}

fn summarize(query: &ResolvedQuery) -> String {
    let mut summary = query.metrics.join(",");
    if !query.dimensions.is_empty() {
        summary.push_str(" by ");
        summary.push_str(&query.dimensions.join(","));
    }
    if let Some(range) = query.date_range {
        summary.push_str(&format!(" {}..{}", range.start, range.end));
    }
    if !query.filters.is_empty() {
        summary.push_str(&format!(" ({} filters)", query.filters.len()));
    }
    summary
}

#[cfg(test)]
mod tests;
