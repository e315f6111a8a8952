//! The operator's semantic model: TOML shape, loading and validation.

use std::collections::{BTreeMap, HashMap};

use md5::{Digest, Md5};
use serde::{Deserialize, Serialize};

use super::aggregate::{Aggregate, TypedMetric};
use super::rollup_def::{fact_columns, Granularity, Reads, Rollup, RollupDef};

/// Why a model file was refused, naming the dataset and the field.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("cannot read model file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("model file {path} is not valid TOML for a model: {source}")]
    Parse { path: String, source: Box<toml::de::Error> },
    #[error("dataset `{dataset}`: {field}: {message}")]
    Invalid {
        dataset: String,
        field: String,
        message: String,
    },
    #[error("model: {0}")]
    Global(String),
}

/// The whole model file.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ModelFile {
    /// Dataset used when a request names none; optional with one dataset.
    pub default_dataset: Option<String>,
    pub datasets: BTreeMap<String, DatasetDef>,
}

/// One queryable dataset: a fact table plus optional joined dimension tables.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetDef {
    /// Fact table (optionally schema-qualified).
    pub table: String,
    /// SQL alias of the fact table; expressions refer to it.
    pub alias: String,
    /// Timestamp column that `date_range` filters on.
    pub time_column: String,
    /// IANA zone in which `date_range` days and time dimensions are read.
    #[serde(default = "default_timezone")]
    pub timezone: String,
    /// Largest `limit` a request may ask for.
    #[serde(default = "default_max_limit")]
    pub max_limit: u64,
    /// Cache TTL for this dataset; falls back to `cache.default_ttl_seconds`.
    pub ttl_seconds: Option<u64>,
    /// How long past its TTL an entry may be served while one background
    /// flight refreshes it (RFC 5861); falls back to
    /// `freshness.stale_while_revalidate_seconds`.
    pub stale_while_revalidate_seconds: Option<u64>,
    /// How long past its TTL (or after a change invalidated it) an entry may
    /// be served, marked stale, while the database cannot answer; falls back
    /// to `freshness.stale_if_error_seconds`.
    pub stale_if_error_seconds: Option<u64>,
    /// Low-cardinality dimensions whose changed values the change-capture
    /// triggers report (each a plain column of the fact table, e.g.
    /// `s.channel_id`), so a change on channel 2 leaves entries filtered on
    /// channel 5 cached.
    #[serde(default)]
    pub track: Vec<String>,
    /// Joins, added to the SQL only when a chosen field needs them.
    #[serde(default)]
    pub joins: BTreeMap<String, JoinDef>,
    pub metrics: BTreeMap<String, MetricDef>,
    #[serde(default)]
    pub dimensions: BTreeMap<String, DimensionDef>,
    /// The database its statements read: `primary` (`database`, the
    /// default) or a read replica configured as `[databases.<name>]`. Not
    /// part of the definition hash: a replica answers what the primary does.
    #[serde(default, skip_serializing)]
    pub database: Option<String>,
    /// Pre-aggregated tables (see `rollup`). Not part of the definition
    /// hash: a rollup answers exactly what the raw table answers.
    #[serde(default, skip_serializing)]
    pub rollups: BTreeMap<String, RollupDef>,
}

fn default_timezone() -> String {
    "UTC".into()
}

fn default_max_limit() -> u64 {
    10_000
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct JoinDef {
    pub table: String,
    pub alias: String,
    /// Join condition, e.g. `ch.id = s.channel_id`.
    pub on: String,
    #[serde(default)]
    pub kind: JoinKind,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum JoinKind {
    #[default]
    Inner,
    Left,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MetricDef {
    /// SQL aggregate expression; `{time}` expands to the local time column.
    /// Written by the server for typed metrics (`aggregate`).
    #[serde(default)]
    pub sql: String,
    /// A typed metric: `sum`, `count`, `avg` or `ratio` (see `aggregate`);
    /// only typed metrics can be served from rollups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aggregate: Option<Aggregate>,
    /// Typed `sum` and `avg`: the row expression.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub of: Option<String>,
    /// Typed metrics: the row condition (`FILTER (WHERE ...)`).
    #[serde(default, rename = "where", skip_serializing_if = "Option::is_none")]
    pub condition: Option<String>,
    /// Typed `ratio`: the rows counted below the line (all when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub denominator_where: Option<String>,
    #[serde(default)]
    pub aliases: Vec<String>,
    /// Rounding applied in SQL; absent means the value is returned as is.
    pub decimals: Option<u32>,
    pub join: Option<String>,
    #[serde(default)]
    pub description: String,
}

impl MetricDef {
    /// The typed view of this metric, if it is declared with `aggregate`.
    pub fn typed(&self) -> Option<TypedMetric<'_>> {
        Some(TypedMetric {
            aggregate: self.aggregate?,
            of: self.of.as_deref(),
            condition: self.condition.as_deref(),
            denominator_condition: self.denominator_where.as_deref(),
        })
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DimensionDef {
    /// SQL expression; `{time}` expands to the local time column.
    pub sql: String,
    #[serde(rename = "type")]
    pub value_type: ValueType,
    pub join: Option<String>,
    /// For a dimension that reads the time column: the finest unit its value
    /// depends on (`hour`, `day`). Rollups no coarser serve it; without it,
    /// it is answered from the raw table only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grain: Option<Granularity>,
    #[serde(default)]
    pub aliases: Vec<String>,
    #[serde(default)]
    pub description: String,
}

/// The type of a dimension's values, which filter values must match.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ValueType {
    Integer,
    Number,
    Text,
    /// ISO `YYYY-MM-DD` strings.
    Date,
}

/// A validated dataset with its name lookups and definition hash.
#[derive(Debug, Clone)]
pub struct Dataset {
    pub name: String,
    pub def: DatasetDef,
    /// MD5 of the definition: part of every cache key, so a model change can
    /// never serve an entry of the old shape.
    pub definition_hash: String,
    /// Metric name or alias -> canonical metric name.
    metric_names: HashMap<String, String>,
    /// Dimension name or alias -> canonical dimension name.
    dimension_names: HashMap<String, String>,
    /// Tracked dimension -> its column in the fact table.
    pub tracked: BTreeMap<String, String>,
    /// Validated rollups, smallest first.
    pub rollups: Vec<Rollup>,
    /// The fact columns each dimension reads, for rollup coverage.
    pub reads: Reads,
}

impl Dataset {
    /// The database its statements read (`primary` unless the model names one).
    pub fn database(&self) -> &str {
        self.def.database.as_deref().unwrap_or("primary")
    }

    pub fn metric_name(&self, name_or_alias: &str) -> Option<&str> {
        self.metric_names.get(name_or_alias).map(String::as_str)
    }

    pub fn dimension_name(&self, name_or_alias: &str) -> Option<&str> {
        self.dimension_names.get(name_or_alias).map(String::as_str)
    }

    pub fn metric(&self, canonical: &str) -> Option<&MetricDef> {
        self.def.metrics.get(canonical)
    }

    pub fn dimension(&self, canonical: &str) -> Option<&DimensionDef> {
        self.def.dimensions.get(canonical)
    }
}

/// The validated model the server runs with.
#[derive(Debug, Clone)]
pub struct SemanticModel {
    pub default_dataset: String,
    pub datasets: BTreeMap<String, Dataset>,
}

impl SemanticModel {
    pub fn dataset(&self, name: Option<&str>) -> Option<&Dataset> {
        self.datasets.get(name.unwrap_or(&self.default_dataset))
    }
}

pub(super) fn invalid(dataset: &str, field: impl Into<String>, message: impl Into<String>) -> ModelError {
    ModelError::Invalid {
        dataset: dataset.into(),
        field: field.into(),
        message: message.into(),
    }
}

/// Names clients use: lower-case identifiers, safe to quote in SQL.
pub fn is_public_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c == '_')
        && name.len() <= 63
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// An SQL identifier (optionally schema-qualified): safe to write unquoted.
pub fn is_sql_identifier(name: &str, allow_dot: bool) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && name.len() <= 127
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || (allow_dot && c == '.'))
}

pub(super) fn validate_dataset(name: &str, mut def: DatasetDef) -> Result<Dataset, ModelError> {
    if !is_public_name(name) {
        return Err(invalid(
            name,
            "name",
            "must be a lower-case identifier ([a-z_][a-z0-9_]*)",
        ));
    }
    if !is_sql_identifier(&def.table, true) {
        return Err(invalid(name, "table", format!("`{}` is not a table name", def.table)));
    }
    if !is_sql_identifier(&def.alias, false) {
        return Err(invalid(name, "alias", format!("`{}` is not an SQL alias", def.alias)));
    }
    if !is_sql_identifier(&def.time_column, false) {
        return Err(invalid(
            name,
            "time_column",
            format!("`{}` is not a column name", def.time_column),
        ));
    }
    if def.timezone.is_empty()
        || !def
            .timezone
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_/+-".contains(c))
    {
        return Err(invalid(
            name,
            "timezone",
            format!("`{}` is not a time zone name", def.timezone),
        ));
    }
    if let Some(database) = def.database.as_deref().filter(|d| !is_public_name(d)) {
        return Err(invalid(
            name,
            "database",
            format!("`{database}` is not a database name ([a-z_][a-z0-9_]*)"),
        ));
    }
    if def.max_limit == 0 || def.max_limit > 1_000_000 {
        return Err(invalid(name, "max_limit", "must be between 1 and 1000000"));
    }
    if def.metrics.is_empty() {
        return Err(invalid(name, "metrics", "a dataset needs at least one metric"));
    }
    for (join_name, join) in &def.joins {
        let field = format!("joins.{join_name}");
        if !is_sql_identifier(&join.table, true) || !is_sql_identifier(&join.alias, false) {
            return Err(invalid(name, field, "table and alias must be SQL identifiers"));
        }
        check_expression(name, &format!("{field}.on"), &join.on)?;
    }

    // Expand `{time}` once here so compilation never has to.
    let local_time = format!("({}.{} AT TIME ZONE '{}')", def.alias, def.time_column, def.timezone);
    let mut metric_names = HashMap::new();
    let mut dimension_names = HashMap::new();
    let mut taken: HashMap<String, String> = HashMap::new();
    let mut claim = |public: &str, owner: String| -> Result<(), ModelError> {
        if !is_public_name(public) {
            return Err(invalid(
                name,
                &owner,
                format!("`{public}` must be a lower-case identifier"),
            ));
        }
        if let Some(previous) = taken.insert(public.to_owned(), owner.clone()) {
            return Err(invalid(
                name,
                &owner,
                format!("`{public}` is already used by {previous}"),
            ));
        }
        Ok(())
    };
    for (metric_name, metric) in def.metrics.iter_mut() {
        let field = format!("metrics.{metric_name}");
        if let Some(typed) = metric.typed() {
            if !metric.sql.is_empty() {
                return Err(invalid(name, &field, "declare either `sql` or `aggregate`, not both"));
            }
            typed
                .check()
                .map_err(|(part, message)| invalid(name, format!("{field}.{part}"), message))?;
            for (part, text) in [
                ("of", &metric.of),
                ("where", &metric.condition),
                ("denominator_where", &metric.denominator_where),
            ] {
                if let Some(text) = text {
                    check_expression(name, &format!("{field}.{part}"), text)?;
                }
            }
            metric.sql = typed.sql();
        }
        check_expression(name, &format!("{field}.sql"), &metric.sql)?;
        check_join(name, &field, metric.join.as_deref(), &def.joins)?;
        if metric.decimals.is_some_and(|d| d > 12) {
            return Err(invalid(name, format!("{field}.decimals"), "must be at most 12"));
        }
        metric.sql = metric.sql.replace("{time}", &local_time);
        for public in std::iter::once(metric_name).chain(&metric.aliases) {
            claim(public, field.clone())?;
            metric_names.insert(public.clone(), metric_name.clone());
        }
    }
    for (dimension_name, dimension) in def.dimensions.iter_mut() {
        let field = format!("dimensions.{dimension_name}");
        check_expression(name, &format!("{field}.sql"), &dimension.sql)?;
        check_join(name, &field, dimension.join.as_deref(), &def.joins)?;
        dimension.sql = dimension.sql.replace("{time}", &local_time);
        for public in std::iter::once(dimension_name).chain(&dimension.aliases) {
            claim(public, field.clone())?;
            dimension_names.insert(public.clone(), dimension_name.clone());
        }
    }
    let tracked = tracked_columns(name, &def)?;
    let reads = dimension_reads(&def);
    let serialized = serde_json::to_vec(&def).map_err(|e| invalid(name, "definition", e.to_string()))?;
    let definition_hash = hex::encode(Md5::digest(&serialized));
    Ok(Dataset {
        name: name.to_owned(),
        def,
        definition_hash,
        metric_names,
        dimension_names,
        tracked,
        // Checked once the dataset is (see `load`).
        rollups: Vec::new(),
        reads,
    })
}

/// The fact-table columns each dimension reads, through its join too, and
/// the grain of those that read the time column.
fn dimension_reads(def: &DatasetDef) -> Reads {
    let mut reads = Reads::default();
    for (dimension_name, dimension) in &def.dimensions {
        let mut columns = fact_columns(&dimension.sql, &def.alias);
        if let Some(join) = dimension.join.as_ref().and_then(|j| def.joins.get(j)) {
            columns.extend(fact_columns(&join.on, &def.alias));
        }
        reads.dimension_columns.insert(dimension_name.clone(), columns);
        if let Some(grain) = dimension.grain {
            reads.grains.insert(dimension_name.clone(), grain);
        }
    }
    reads
}

/// Most dimensions a dataset may track: each adds work to every trigger.
const MAX_TRACKED: usize = 8;

/// Checks `track`: each entry a declared integer or text dimension whose SQL
/// is a plain column of the fact table (the triggers read that column).
fn tracked_columns(name: &str, def: &DatasetDef) -> Result<BTreeMap<String, String>, ModelError> {
    if def.track.len() > MAX_TRACKED {
        return Err(invalid(name, "track", format!("at most {MAX_TRACKED} dimensions")));
    }
    let mut tracked = BTreeMap::new();
    for (i, dimension_name) in def.track.iter().enumerate() {
        let field = format!("track[{i}]");
        let dimension = def.dimensions.get(dimension_name).ok_or_else(|| {
            invalid(
                name,
                &field,
                format!("`{dimension_name}` is not a declared dimension (use its canonical name)"),
            )
        })?;
        if !matches!(dimension.value_type, ValueType::Integer | ValueType::Text) {
            return Err(invalid(name, &field, "only integer and text dimensions can be tracked"));
        }
        let column = dimension
            .sql
            .trim()
            .strip_prefix(&format!("{}.", def.alias))
            .filter(|column| is_sql_identifier(column, false) && dimension.join.is_none())
            .ok_or_else(|| {
                invalid(
                    name,
                    &field,
                    format!(
                        "dimension `{dimension_name}` must be a plain column of the fact table (`{}.<column>`) to be tracked",
                        def.alias
                    ),
                )
            })?;
        tracked.insert(dimension_name.clone(), column.to_owned());
    }
    Ok(tracked)
}

/// Expressions are the operator's and trusted, but a `;` or an empty string is
/// always a mistake worth refusing at startup rather than at query time.
fn check_expression(dataset: &str, field: &str, sql: &str) -> Result<(), ModelError> {
    if sql.trim().is_empty() {
        return Err(invalid(dataset, field, "must not be empty"));
    }
    if sql.contains(';') {
        return Err(invalid(dataset, field, "must be a single expression (no `;`)"));
    }
    Ok(())
}

fn check_join(
    dataset: &str,
    field: &str,
    join: Option<&str>,
    joins: &BTreeMap<String, JoinDef>,
) -> Result<(), ModelError> {
    match join {
        Some(join) if !joins.contains_key(join) => Err(invalid(
            dataset,
            format!("{field}.join"),
            format!("`{join}` is not declared under [datasets.{dataset}.joins]"),
        )),
        _ => Ok(()),
    }
}
