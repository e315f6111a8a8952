//! The rollups' transactions on PostgreSQL: build a table, re-aggregate the
//! days the change log names, read state and sizes, drop. Every statement is
//! generated from the validated model (`model::rollup`); the only values are
//! days and names, bound as parameters.

use chrono::{Datelike, Days, NaiveDate};
use sqlx::{PgPool, Postgres, Transaction};

use crate::model::rollup::{self, Rollup, CHANGE_LOG, CHANGE_LOG_DDL, STATE_DDL};
use crate::model::DatasetDef;

/// More merged spans than this in one refresh are re-aggregated as one span.
const MAX_SPANS: usize = 64;

const NOT_BUILT: &str = "is not built with the current definition";

/// Whether a refresh failed because the rollup must be built again: its
/// table is gone (undefined_table) or its stored state is not `ready` with
/// the current definition.
pub fn needs_build(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Database(e) => e.code().as_deref() == Some("42P01"),
        sqlx::Error::Protocol(message) => message.contains(NOT_BUILT),
        _ => false,
    }
}

/// What a refresh re-aggregated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refreshed {
    Nothing,
    /// Local days, inclusive, merged.
    Spans(Vec<(NaiveDate, NaiveDate)>),
    /// The whole table (a TRUNCATE, or a change of unknown days).
    Everything,
}

/// How a build went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Built {
    Done {
        rows: u64,
    },
    /// Another session holds the build lock: another instance is building.
    Busy,
}

/// One row of `analytics_rollups`.
#[derive(Debug, Clone, Default)]
pub struct StoredState {
    pub state: String,
    pub definition_hash: String,
    pub table_exists: bool,
}

/// Creates the state table and the change log; idempotent.
pub async fn ensure_schema(pool: &PgPool) -> Result<(), sqlx::Error> {
    for statement in CHANGE_LOG_DDL.iter().chain([&STATE_DDL]) {
        sqlx::query(statement).execute(pool).await?;
    }
    Ok(())
}

/// Drops change-log rows of rollups the model no longer declares (the
/// triggers of an older model may have written them).
pub async fn forget_others(pool: &PgPool, known: &[String]) -> Result<u64, sqlx::Error> {
    Ok(
        sqlx::query(&format!("DELETE FROM {CHANGE_LOG} WHERE rollup <> ALL($1)"))
            .bind(known)
            .execute(pool)
            .await?
            .rows_affected(),
    )
}

pub async fn stored_state(pool: &PgPool, rollup: &Rollup) -> Result<StoredState, sqlx::Error> {
    let row: Option<(String, String, bool)> = sqlx::query_as(
        "SELECT state, definition_hash, to_regclass($2) IS NOT NULL FROM analytics_rollups WHERE name = $1",
    )
    .bind(&rollup.id)
    .bind(&rollup.table)
    .fetch_optional(pool)
    .await?;
    Ok(row
        .map(|(state, definition_hash, table_exists)| StoredState {
            state,
            definition_hash,
            table_exists,
        })
        .unwrap_or_default())
}

/// A stable advisory-lock key per rollup.
fn lock_key(rollup: &Rollup) -> i64 {
    use md5::{Digest, Md5};
    let digest = Md5::digest(format!("analytics_rollup:{}", rollup.id).as_bytes());
    i64::from_le_bytes(digest[..8].try_into().unwrap_or_default())
}

async fn set_state(pool: &PgPool, rollup: &Rollup, state: &str, error: Option<&str>) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO analytics_rollups (name, definition_hash, state, error) VALUES ($1, $2, $3, $4)
         ON CONFLICT (name) DO UPDATE SET definition_hash = $2, state = $3, error = $4",
    )
    .bind(&rollup.id)
    .bind(&rollup.hash)
    .bind(state)
    .bind(error)
    .execute(pool)
    .await?;
    Ok(())
}

/// Records a failed build, for `rollups status` and other instances.
pub async fn record_failure(pool: &PgPool, rollup: &Rollup, error: &str) -> Result<(), sqlx::Error> {
    set_state(pool, rollup, "failed", Some(error)).await
}

/// The local days the fact table spans, month by month: the build's chunks
/// as `[first, day after last)`.
async fn month_chunks(
    tx: &mut Transaction<'static, Postgres>,
    def: &DatasetDef,
) -> Result<Vec<(NaiveDate, NaiveDate)>, sqlx::Error> {
    let local = format!(
        "({}.{} AT TIME ZONE '{}')::date",
        def.alias, def.time_column, def.timezone
    );
    let (first, last): (Option<NaiveDate>, Option<NaiveDate>) = sqlx::query_as(&format!(
        "SELECT min({local}), max({local}) FROM {} {}",
        def.table, def.alias
    ))
    .fetch_one(&mut **tx)
    .await?;
    let (Some(first), Some(last)) = (first, last) else {
        return Ok(Vec::new());
    };
    let mut chunks = Vec::new();
    let mut start = first.with_day(1).unwrap_or(first);
    while start <= last {
        let next = start
            .checked_add_months(chrono::Months::new(1))
            .unwrap_or(NaiveDate::MAX);
        chunks.push((start, next));
        start = next;
    }
    Ok(chunks)
}

/// Builds `rollup` from the whole fact table into a new table, month by
/// month (`progress(done, total)` after each), and swaps it in, all in one
/// transaction. The change log's rows for it are deleted at the start, in
/// that transaction: every change committed before is in the build, every
/// later one stays in the log for the next refresh.
pub async fn build(
    pool: &PgPool,
    def: &DatasetDef,
    rollup: &Rollup,
    timeout_seconds: u64,
    progress: &(dyn Fn(usize, usize) + Send + Sync),
) -> Result<Built, sqlx::Error> {
    let started = std::time::Instant::now();
    let mut tx = pool.begin().await?;
    let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
        .bind(lock_key(rollup))
        .fetch_one(&mut *tx)
        .await?;
    if !locked {
        return Ok(Built::Busy);
    }
    set_state(pool, rollup, "building", None).await?;
    sqlx::query(&format!("SET LOCAL statement_timeout = '{}s'", timeout_seconds.max(1)))
        .execute(&mut *tx)
        .await?;
    sqlx::query(&format!("DELETE FROM {CHANGE_LOG} WHERE rollup = $1"))
        .bind(&rollup.id)
        .execute(&mut *tx)
        .await?;
    let building = format!("{}_build", rollup.table);
    for statement in rollup::create_sql(def, rollup, &building) {
        sqlx::query(&statement).execute(&mut *tx).await?;
    }
    let chunks = month_chunks(&mut tx, def).await?;
    let insert = rollup::insert_sql(def, rollup, &building, true);
    let mut rows = 0;
    progress(0, chunks.len());
    for (i, (start, end)) in chunks.iter().enumerate() {
        rows += sqlx::query(&insert)
            .bind(start)
            .bind(end)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        progress(i + 1, chunks.len());
    }
    for statement in [
        format!("DROP TABLE IF EXISTS {}", rollup.table),
        format!("ALTER TABLE {building} RENAME TO {}", rollup.table),
        format!("ALTER INDEX {building}_time_idx RENAME TO {}_time_idx", rollup.table),
        format!("ANALYZE {}", rollup.table),
    ] {
        sqlx::query(&statement).execute(&mut *tx).await?;
    }
    sqlx::query(
        "UPDATE analytics_rollups SET definition_hash = $2, state = 'ready', error = NULL,
           built_at = now(), refreshed_at = now(), build_seconds = $3 WHERE name = $1",
    )
    .bind(&rollup.id)
    .bind(&rollup.hash)
    .bind(started.elapsed().as_secs_f64())
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Built::Done { rows })
}

/// Re-aggregates the days the change log names for `rollup` (rows logged
/// at least `older_than_ms` ago), in one transaction that also deletes those
/// log rows. Refreshes of one rollup are serialized (its state row is
/// locked), so an instance that finds nothing to do returns only once
/// another's refresh has committed.
pub async fn refresh(
    pool: &PgPool,
    def: &DatasetDef,
    rollup: &Rollup,
    timeout_ms: u64,
    older_than_ms: u64,
) -> Result<Refreshed, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query(&format!("SET LOCAL statement_timeout = '{}ms'", timeout_ms.max(1)))
        .execute(&mut *tx)
        .await?;
    // A build holds the state row for its whole length: wait a little, then
    // give up (and answer from raw) rather than stall change handling.
    sqlx::query("SET LOCAL lock_timeout = '2s'").execute(&mut *tx).await?;
    let state: Option<(String, String)> =
        sqlx::query_as("SELECT state, definition_hash FROM analytics_rollups WHERE name = $1 FOR UPDATE")
            .bind(&rollup.id)
            .fetch_optional(&mut *tx)
            .await?;
    if !matches!(&state, Some((state, hash)) if state == "ready" && *hash == rollup.hash) {
        return Err(sqlx::Error::Protocol(format!(
            "rollup {} {NOT_BUILT} (state {:?})",
            rollup.id,
            state.map(|(s, _)| s)
        )));
    }
    let changes: Vec<(Option<NaiveDate>, Option<NaiveDate>)> = sqlx::query_as(&format!(
        "DELETE FROM {CHANGE_LOG} WHERE rollup = $1
           AND at <= clock_timestamp() - make_interval(secs => $2::float8 / 1000)
         RETURNING first_day, last_day"
    ))
    .bind(&rollup.id)
    .bind(older_than_ms as f64)
    .fetch_all(&mut *tx)
    .await?;
    if changes.is_empty() {
        tx.commit().await?;
        return Ok(Refreshed::Nothing);
    }
    let spans: Option<Vec<(NaiveDate, NaiveDate)>> = changes.into_iter().map(|(a, b)| Some((a?, b?))).collect();
    let refreshed = match spans.map(rollup::merge_spans) {
        Some(spans) if spans.len() <= MAX_SPANS => Refreshed::Spans(spans),
        Some(spans) => Refreshed::Spans(vec![(spans[0].0, spans[spans.len() - 1].1)]),
        None => Refreshed::Everything,
    };
    match &refreshed {
        Refreshed::Spans(spans) => {
            let delete = rollup::delete_sql(def, rollup);
            let insert = rollup::insert_sql(def, rollup, &rollup.table, true);
            for (first, last) in spans {
                let after = last.checked_add_days(Days::new(1)).unwrap_or(*last);
                for statement in [&delete, &insert] {
                    sqlx::query(statement).bind(first).bind(after).execute(&mut *tx).await?;
                }
            }
        }
        Refreshed::Everything | Refreshed::Nothing => {
            sqlx::query(&format!("DELETE FROM {}", rollup.table))
                .execute(&mut *tx)
                .await?;
            sqlx::query(&rollup::insert_sql(def, rollup, &rollup.table, false))
                .execute(&mut *tx)
                .await?;
        }
    }
    sqlx::query("UPDATE analytics_rollups SET refreshed_at = now() WHERE name = $1")
        .bind(&rollup.id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(refreshed)
}

/// Sizes and lag of the rollups, as PostgreSQL sees them now.
#[derive(Debug, Clone, Default)]
pub struct Measured {
    /// Rows (PostgreSQL's estimate).
    pub rows: u64,
    pub bytes: u64,
    /// Seconds since the oldest change not yet re-aggregated; 0 when none.
    pub lag_seconds: f64,
    /// Unix seconds of the last refresh (or build).
    pub refreshed_at: Option<f64>,
    pub state: Option<String>,
    pub error: Option<String>,
    pub pending_changes: u64,
}

pub async fn measure(pool: &PgPool, rollup: &Rollup) -> Result<Measured, sqlx::Error> {
    // The statistics collector's live count lags behind a build; the
    // build's ANALYZE sets reltuples at once. The larger is the better guess.
    let (rows, bytes): (Option<i64>, Option<i64>) = sqlx::query_as(
        "SELECT greatest((SELECT n_live_tup FROM pg_stat_user_tables WHERE relid = to_regclass($1)),
                         (SELECT reltuples::int8 FROM pg_class WHERE oid = to_regclass($1))),
                pg_total_relation_size(to_regclass($1))",
    )
    .bind(&rollup.table)
    .fetch_one(pool)
    .await?;
    let (pending, lag): (i64, Option<f64>) = sqlx::query_as(&format!(
        "SELECT count(*), extract(epoch FROM clock_timestamp() - min(at))::float8 FROM {CHANGE_LOG} WHERE rollup = $1"
    ))
    .bind(&rollup.id)
    .fetch_one(pool)
    .await?;
    let state: Option<(String, Option<String>, Option<f64>)> = sqlx::query_as(
        "SELECT state, error, extract(epoch FROM refreshed_at)::float8 FROM analytics_rollups WHERE name = $1",
    )
    .bind(&rollup.id)
    .fetch_optional(pool)
    .await?;
    let (state, error, refreshed_at) = state.map_or((None, None, None), |(s, e, r)| (Some(s), e, r));
    Ok(Measured {
        rows: rows.unwrap_or(0).max(0) as u64,
        bytes: bytes.unwrap_or(0).max(0) as u64,
        lag_seconds: lag.unwrap_or(0.0).max(0.0),
        refreshed_at,
        state,
        error,
        pending_changes: pending.max(0) as u64,
    })
}

/// Drops the rollup's table, its state and its pending changes.
pub async fn drop(pool: &PgPool, rollup: &Rollup) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("SET LOCAL statement_timeout = 0").execute(&mut *tx).await?;
    for statement in [
        format!("DROP TABLE IF EXISTS {}", rollup.table),
        format!("DROP TABLE IF EXISTS {}_build", rollup.table),
    ] {
        sqlx::query(&statement).execute(&mut *tx).await?;
    }
    sqlx::query("DELETE FROM analytics_rollups WHERE name = $1")
        .bind(&rollup.id)
        .execute(&mut *tx)
        .await?;
    sqlx::query(&format!("DELETE FROM {CHANGE_LOG} WHERE rollup = $1"))
        .bind(&rollup.id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await
}
