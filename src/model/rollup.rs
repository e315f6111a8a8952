//! Rollups, the pure part: pre-aggregated tables declared in the model, the
//! check that a rollup can serve what it lists, the choice of the rollup
//! that covers a query, and the SQL that builds, refreshes and reads them.
//!
//! A rollup table has one row per (time bucket, dimension values) and one
//! column per additive part of its metrics (see `aggregate`). Its columns are
//! named after the fact table's (`created_at` holds the bucket's start as an
//! instant, `channel_id` the channel), and queries read it under the fact
//! table's alias, so the model's dimension expressions and join conditions
//! run on it unchanged: `ch.name` joins `ch.id = s.channel_id` as before.
//!
//! A query is covered when every metric is one the rollup stores, and every
//! dimension and filter (the tenant's row filters included) reads only the
//! rollup's columns, directly or through a join from them, and no time
//! dimension is finer than the rollup's buckets. Date ranges are whole local
//! days, and buckets (hours, days of the dataset's zone) never straddle a
//! local midnight, so every range is aligned to every rollup.

use std::collections::BTreeMap;

use md5::{Digest, Md5};

use super::definition::{is_public_name, is_sql_identifier, DatasetDef};
use super::filters::ResolvedFilter;
use super::resolve::ResolvedQuery;
pub use super::rollup_def::*;

/// Most rollups per dataset: each adds work to every change.
const MAX_ROLLUPS: usize = 16;

/// Checks and prepares the rollups of a dataset whose metrics and dimensions
/// are already validated (`{time}` expanded), smallest first.
pub fn validate(dataset: &str, def: &DatasetDef) -> Result<Vec<Rollup>, RollupProblem> {
    if def.rollups.len() > MAX_ROLLUPS {
        return Err(("rollups".into(), format!("at most {MAX_ROLLUPS} rollups per dataset")));
    }
    let mut rollups = Vec::new();
    for (name, rollup) in &def.rollups {
        rollups.push(validate_one(dataset, def, name, rollup)?);
    }
    // Smallest first: coarser buckets, then fewer dimensions, then name.
    rollups.sort_by(|a, b| {
        (std::cmp::Reverse(a.granularity), a.columns.len(), &a.name).cmp(&(
            std::cmp::Reverse(b.granularity),
            b.columns.len(),
            &b.name,
        ))
    });
    Ok(rollups)
}

fn validate_one(dataset: &str, def: &DatasetDef, name: &str, rollup: &RollupDef) -> Result<Rollup, RollupProblem> {
    let field = format!("rollups.{name}");
    let table = format!("analytics_rollup_{dataset}_{name}");
    if !is_public_name(name) || table.len() > 56 {
        return Err((
            field,
            "a rollup name must be a short lower-case identifier (its table is analytics_rollup_<dataset>_<name>, at most 56 characters)".into(),
        ));
    }
    if rollup.metrics.is_empty() {
        return Err((format!("{field}.metrics"), "a rollup needs at least one metric".into()));
    }
    let mut columns = Vec::new();
    for (i, dimension_name) in rollup.dimensions.iter().enumerate() {
        let at = format!("{field}.dimensions[{i}]");
        let dimension = def.dimensions.get(dimension_name).ok_or_else(|| {
            (
                at.clone(),
                format!("`{dimension_name}` is not a declared dimension (use its canonical name)"),
            )
        })?;
        let column = dimension
            .sql
            .trim()
            .strip_prefix(&format!("{}.", def.alias))
            .filter(|c| is_sql_identifier(c, false) && dimension.join.is_none())
            .filter(|c| *c != def.time_column)
            .ok_or_else(|| {
                (
                    at.clone(),
                    format!(
                        "dimension `{dimension_name}` is not a plain column of the fact table (`{}.<column>`); keep ids in rollups, names come from joins at query time",
                        def.alias
                    ),
                )
            })?;
        if !columns.iter().any(|c| c == column) {
            columns.push(column.to_owned());
        }
    }
    let mut parts: Vec<String> = Vec::new();
    let mut combine = BTreeMap::new();
    for (i, metric_name) in rollup.metrics.iter().enumerate() {
        let at = format!("{field}.metrics[{i}]");
        let metric = def.metrics.get(metric_name).ok_or_else(|| {
            (
                at.clone(),
                format!("`{metric_name}` is not a declared metric (use its canonical name)"),
            )
        })?;
        let Some(typed) = metric.typed() else {
            return Err((
                at,
                format!("metric `{metric_name}` is free SQL and does not decompose into additive parts (declare it with `aggregate`, or leave it out of rollups)"),
            ));
        };
        if metric.join.is_some() {
            return Err((
                at,
                format!("metric `{metric_name}` reads a join; rollups store fact-table aggregates only"),
            ));
        }
        let decomposition = typed.decomposition();
        let mut sql = decomposition.combine.clone();
        for (k, part) in decomposition.parts.iter().enumerate() {
            let index = parts.iter().position(|p| p == part).unwrap_or_else(|| {
                parts.push(part.clone());
                parts.len() - 1
            });
            sql = sql.replace(&format!("{{{k}}}"), &format!("{}.__p{index}", def.alias));
        }
        combine.insert(metric_name.clone(), sql);
    }
    let identity = serde_json::json!({
        "table": def.table, "alias": def.alias, "time": def.time_column, "zone": def.timezone,
        "granularity": rollup.granularity, "columns": columns, "parts": parts,
    });
    let hash = hex::encode(Md5::digest(identity.to_string().as_bytes()));
    Ok(Rollup {
        name: name.to_owned(),
        id: format!("{dataset}.{name}"),
        dataset: dataset.to_owned(),
        table,
        granularity: rollup.granularity,
        columns,
        parts,
        combine,
        hash,
    })
}

/// Whether `rollup` can answer `query` (with the tenant's `scope`) exactly.
pub fn covers(
    def: &DatasetDef,
    reads: &Reads,
    rollup: &Rollup,
    query: &ResolvedQuery,
    scope: &[ResolvedFilter],
) -> bool {
    if !query.metrics.iter().all(|m| rollup.combine.contains_key(m)) {
        return false;
    }
    let readable = |dimension: &String| {
        let Some(columns) = reads.dimension_columns.get(dimension) else {
            return false;
        };
        columns.iter().all(|column| {
            if *column == def.time_column {
                // A time dimension: served when its value depends on no
                // finer unit than the rollup's buckets.
                reads
                    .grains
                    .get(dimension)
                    .is_some_and(|grain| *grain >= rollup.granularity)
            } else {
                rollup.columns.iter().any(|c| c == column)
            }
        })
    };
    query
        .dimensions
        .iter()
        .chain(query.filters.iter().map(|f| &f.dimension))
        .chain(scope.iter().map(|f| &f.dimension))
        .all(readable)
}

/// The rollup's rows for a span of local days (`$1` first day, `$2` the day
/// after the last), or for everything when `bounded` is false.
pub fn select_sql(def: &DatasetDef, rollup: &Rollup, bounded: bool) -> String {
    let alias = &def.alias;
    let time = format!("{alias}.{}", def.time_column);
    let zone = &def.timezone;
    let mut columns = vec![format!(
        "(date_trunc('{}', {time} AT TIME ZONE '{zone}') AT TIME ZONE '{zone}') AS {}",
        rollup.granularity.as_str(),
        def.time_column
    )];
    columns.extend(rollup.columns.iter().map(|c| format!("{alias}.{c} AS {c}")));
    columns.extend(rollup.parts.iter().enumerate().map(|(i, p)| format!("{p} AS __p{i}")));
    let mut sql = format!("SELECT {} FROM {} {alias}", columns.join(", "), def.table);
    if bounded {
        sql.push_str(&format!(
            " WHERE {time} >= ($1::date::timestamp AT TIME ZONE '{zone}') AND {time} < ($2::date::timestamp AT TIME ZONE '{zone}')"
        ));
    }
    let positions: Vec<String> = (1..=rollup.columns.len() + 1).map(|i| i.to_string()).collect();
    sql.push_str(&format!(" GROUP BY {}", positions.join(", ")));
    sql
}

/// Statements that create an empty table `name` shaped for `rollup`.
pub fn create_sql(def: &DatasetDef, rollup: &Rollup, name: &str) -> Vec<String> {
    vec![
        format!("DROP TABLE IF EXISTS {name}"),
        format!("CREATE TABLE {name} AS {} WITH NO DATA", select_sql(def, rollup, false)),
        format!(
            "CREATE INDEX {name}_time_idx ON {name} ({}{})",
            def.time_column,
            rollup.columns.iter().map(|c| format!(", {c}")).collect::<String>()
        ),
    ]
}

/// Fills `name` with the rollup's rows of a span (`$1`, `$2` as in
/// [`select_sql`]) or of everything.
pub fn insert_sql(def: &DatasetDef, rollup: &Rollup, name: &str, bounded: bool) -> String {
    format!("INSERT INTO {name} {}", select_sql(def, rollup, bounded))
}

/// Removes the rollup's rows of a span of local days (`$1`, `$2`).
pub fn delete_sql(def: &DatasetDef, rollup: &Rollup) -> String {
    let zone = &def.timezone;
    format!(
        "DELETE FROM {} WHERE {time} >= ($1::date::timestamp AT TIME ZONE '{zone}') AND {time} < ($2::date::timestamp AT TIME ZONE '{zone}')",
        rollup.table,
        time = def.time_column
    )
}
