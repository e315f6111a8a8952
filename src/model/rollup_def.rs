//! Rollup declarations and the names they live under: the types the model
//! file and the validated dataset hold, the fixed tables of the change log
//! and of rollup state, and small helpers with no knowledge of datasets.
//! Checking, routing and SQL are in `rollup`, which builds on these.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// The append-only log the change-capture triggers write, one row per
/// statement and rollup of the changed table: the local days it touched
/// (`NULL` for a TRUNCATE: everything). A refresh deletes the rows it
/// applies in the transaction that applies them, so no change is lost to a
/// dropped notification or a server that was down.
pub const CHANGE_LOG: &str = "analytics_rollup_changes";

/// DDL of the change log; idempotent.
pub const CHANGE_LOG_DDL: [&str; 2] = [
    "CREATE TABLE IF NOT EXISTS analytics_rollup_changes (
       rollup text NOT NULL,
       first_day date,
       last_day date,
       at timestamptz NOT NULL DEFAULT clock_timestamp())",
    "CREATE INDEX IF NOT EXISTS analytics_rollup_changes_rollup_idx ON analytics_rollup_changes (rollup)",
];

/// DDL of the table that records each rollup's state; idempotent.
pub const STATE_DDL: &str = "CREATE TABLE IF NOT EXISTS analytics_rollups (
       name text PRIMARY KEY,
       definition_hash text NOT NULL,
       state text NOT NULL,
       built_at timestamptz,
       refreshed_at timestamptz,
       build_seconds float8,
       error text)";

/// Run when the triggers stop writing the change log (installed with
/// rollups off, or dropped): from then on nothing keeps the rollup tables
/// exact, so an instance with rollups on must rebuild them, not adopt them.
pub const MARK_STALE: &str = "DO $stale$ BEGIN
  IF to_regclass('analytics_rollups') IS NOT NULL THEN
    UPDATE analytics_rollups SET state = 'stale' WHERE state = 'ready';
  END IF;
END $stale$";

/// How fine a rollup's time buckets are (and the finest time unit a
/// dimension's value depends on).
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Granularity {
    Hour,
    Day,
}

impl Granularity {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hour => "hour",
            Self::Day => "day",
        }
    }
}

/// A rollup as declared under `[datasets.<name>.rollups.<rollup>]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RollupDef {
    pub granularity: Granularity,
    /// Canonical names of dimensions that are plain columns of the fact
    /// table (store ids, not names: names come from joins at query time).
    #[serde(default)]
    pub dimensions: Vec<String>,
    /// Canonical names of typed metrics (see `aggregate`).
    pub metrics: Vec<String>,
}

/// A validated rollup with its table and SQL pieces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rollup {
    /// The name in the model, as `metadata.source` reports it.
    pub name: String,
    /// `<dataset>.<rollup>`: the key of its state and of its change log rows.
    pub id: String,
    pub dataset: String,
    pub table: String,
    pub granularity: Granularity,
    /// Fact-table columns kept (besides the time column), in order.
    pub columns: Vec<String>,
    /// Additive part aggregates over raw rows; stored as `__p<i>`.
    pub parts: Vec<String>,
    /// Metric -> its value over the rollup's rows (aggregates of the parts).
    pub combine: BTreeMap<String, String>,
    /// MD5 of what the table holds: a different hash means a rebuild.
    pub hash: String,
}

/// Why a rollup was refused: the field and the message.
pub type RollupProblem = (String, String);

/// What validation knows about each dimension and join, for coverage.
#[derive(Debug, Clone, Default)]
pub struct Reads {
    /// Dimension -> fact-table columns its SQL (and its join's condition) reads.
    pub dimension_columns: BTreeMap<String, BTreeSet<String>>,
    /// Dimension -> its declared grain (dimensions that read the time column).
    pub grains: BTreeMap<String, Granularity>,
}

/// The fact-table columns an expression reads, as `alias.column`. Operator
/// text; an unqualified column is not seen, which is why the README asks for
/// qualified columns in expressions meant to be served from rollups.
pub fn fact_columns(sql: &str, alias: &str) -> BTreeSet<String> {
    let bytes = sql.as_bytes();
    let prefix = format!("{alias}.");
    let is_ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let mut found = BTreeSet::new();
    let mut from = 0;
    while let Some(at) = sql[from..].find(&prefix).map(|i| i + from) {
        let start = at + prefix.len();
        let preceded = at > 0 && (is_ident(bytes[at - 1]) || bytes[at - 1] == b'.');
        let end = start + bytes[start..].iter().take_while(|b| is_ident(**b)).count();
        if !preceded && end > start {
            found.insert(sql[start..end].to_ascii_lowercase());
        }
        from = start;
    }
    found
}

/// Merges spans of local days (inclusive) that overlap or touch, so a burst
/// of single-row inserts on one day is re-aggregated once.
pub fn merge_spans(
    mut spans: Vec<(chrono::NaiveDate, chrono::NaiveDate)>,
) -> Vec<(chrono::NaiveDate, chrono::NaiveDate)> {
    spans.sort();
    let mut merged: Vec<(chrono::NaiveDate, chrono::NaiveDate)> = Vec::new();
    for (start, end) in spans {
        let (start, end) = (start.min(end), start.max(end));
        match merged.last_mut() {
            Some(last) if start <= last.1 + chrono::Days::new(1) => last.1 = last.1.max(end),
            _ => merged.push((start, end)),
        }
    }
    merged
}
