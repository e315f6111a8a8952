//! Deterministic demo data generator: fills the demo schema with set-based SQL.
//!
//! Every pseudo-random value is derived inside PostgreSQL from
//! `hashint8extended(row id, seed XOR column salt)` mapped into `[0, 1)`, never
//! from `random()`: a hash of the row id does not depend on the order in which
//! the executor happens to produce rows, so the same `(seed, anchor)` always
//! yields byte-identical tables whatever plan PostgreSQL picks. All option
//! values travel as bind parameters; the SQL text is static.
//!
//! The load runs in one transaction (readers see either the old or the new
//! data set) and inserts sales in chunks with `INSERT ... SELECT` so progress
//! can be logged. Each chunk statement writes both `sales` and their
//! `product_sales` lines through a data-modifying CTE, so a sale's
//! `total_amount` is exactly the sum of its lines minus discount plus fee.

use std::time::Instant;

use chrono::NaiveDate;
use sqlx::{ConnectOptions, Connection, PgConnection, PgPool};

mod sql;

use sql::*;
/// Options of one demo-data generation run.
pub struct SeedOptions {
    /// Number of sales rows to generate.
    pub sales: u64,
    /// PRNG seed: the same seed + anchor produces byte-identical data.
    pub seed: u64,
    /// Last day of the generated 3-year window (sales fall in (anchor - 3 years, anchor]).
    pub anchor: chrono::NaiveDate,
}

/// Row counts written by [`seed_demo`] and how long the whole run took.
pub struct SeedReport {
    /// Rows in `channels` (always 6).
    pub channels: u64,
    /// Rows in `stores`.
    pub stores: u64,
    /// Rows in `products`.
    pub products: u64,
    /// Rows in `customers`.
    pub customers: u64,
    /// Rows in `sales` (equals [`SeedOptions::sales`]).
    pub sales: u64,
    /// Rows in `product_sales` (about 2.5 per sale).
    pub product_sales: u64,
    /// Wall-clock time of the run, commit included.
    pub elapsed: std::time::Duration,
}

/// Replaces all demo data (TRUNCATE the demo tables first) with freshly generated rows.
///
/// Runs in a single transaction: on error nothing changes, and concurrent
/// readers block on the truncated tables until the commit rather than see a
/// half-filled data set.
pub async fn seed_demo(pool: &PgPool, options: &SeedOptions) -> Result<SeedReport, sqlx::Error> {
    let started = Instant::now();
    if options.sales > MAX_SALES {
        return Err(sqlx::Error::Configuration(
            format!("demo seed: at most {MAX_SALES} sales, got {}", options.sales).into(),
        ));
    }
    tracing::info!(
        sales = options.sales,
        seed = options.seed,
        anchor = %options.anchor,
        "seeding demo data"
    );

    // A dedicated connection with the pool's settings but without sqlx's
    // statement logging: every chunk statement exceeds the slow-statement
    // threshold and would otherwise be logged in full (~9 kB of SQL) at WARN;
    // progress is reported below instead.
    let connect_options = (*pool.connect_options()).clone().disable_statement_logging();
    let mut conn = connect_options.connect().await?;
    let report = seed_on(&mut conn, options, started).await;
    // The data is committed (or rolled back) at this point; a failure to say
    // goodbye cleanly must not hide the outcome.
    if let Err(error) = conn.close().await {
        tracing::debug!(%error, "closing the seeding connection failed");
    }
    report
}

async fn seed_on(conn: &mut PgConnection, options: &SeedOptions, started: Instant) -> Result<SeedReport, sqlx::Error> {
    // Both conversions are lossless: sales is bounded above and the seed is
    // only ever used as hash input, so reinterpreting its bits is fine.
    let total_sales = i64::try_from(options.sales).unwrap_or(i64::MAX);
    let seed = i64::from_ne_bytes(options.seed.to_ne_bytes());
    let anchor: NaiveDate = options.anchor;

    let mut tx = conn.begin().await?;
    for sql in SESSION_SETTINGS {
        execute(&mut tx, sql).await?;
    }
    execute(&mut tx, TRUNCATE).await?;
    for sql in DROP_FOREIGN_KEYS {
        execute(&mut tx, sql).await?;
    }
    for sql in HELPER_FUNCTIONS {
        execute(&mut tx, sql).await?;
    }

    let channels = execute(&mut tx, INSERT_CHANNELS).await?;
    execute(&mut tx, CREATE_SEED_STORES).await?;
    let stores = sqlx::query(INSERT_STORES)
        .bind(seed)
        .bind(anchor)
        .persistent(false)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    execute(&mut tx, CREATE_STORE_BUCKETS).await?;
    let products = sqlx::query(INSERT_PRODUCTS)
        .bind(seed)
        .persistent(false)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    let customers = sqlx::query(INSERT_CUSTOMERS)
        .bind(seed)
        .bind(anchor)
        .bind(CUSTOMERS)
        .persistent(false)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    tracing::info!(channels, stores, products, customers, "seeded dimension tables");

    execute(&mut tx, CREATE_SEED_DAYS).await?;
    sqlx::query(INSERT_SEED_DAYS)
        .bind(seed)
        .bind(anchor)
        .bind(total_sales)
        .persistent(false)
        .execute(&mut *tx)
        .await?;

    let mut sales: u64 = 0;
    let mut first_id: i64 = 1;
    while first_id <= total_sales {
        let last_id = first_id.saturating_add(CHUNK_SALES - 1).min(total_sales);
        sales += sqlx::query(INSERT_SALES_CHUNK)
            .bind(seed)
            .bind(first_id)
            .bind(last_id)
            .bind(CUSTOMERS)
            .persistent(false)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tracing::info!(
            "seeded {sales}/{} sales ({:.1}s)",
            options.sales,
            started.elapsed().as_secs_f64()
        );
        first_id = last_id + 1;
    }

    for sql in ADD_FOREIGN_KEYS {
        execute(&mut tx, sql).await?;
    }
    tracing::info!("validated foreign keys ({:.1}s)", started.elapsed().as_secs_f64());
    execute(&mut tx, DROP_HELPER_FUNCTIONS).await?;
    execute(&mut tx, ANALYZE).await?;
    // Line ids are dense from 1 (see INSERT_SALES_CHUNK), so the maximum is
    // the row count without scanning the biggest table.
    let product_sales: i64 = sqlx::query_scalar("SELECT coalesce(max(id), 0) FROM product_sales")
        .persistent(false)
        .fetch_one(&mut *tx)
        .await?;
    tx.commit().await?;

    let report = SeedReport {
        channels,
        stores,
        products,
        customers,
        sales,
        product_sales: u64::try_from(product_sales).unwrap_or(0),
        elapsed: started.elapsed(),
    };
    tracing::info!(
        sales = report.sales,
        product_sales = report.product_sales,
        elapsed_ms = u64::try_from(report.elapsed.as_millis()).unwrap_or(u64::MAX),
        "demo data seeded"
    );
    Ok(report)
}

/// True when the sales table has no rows (used by `serve` to seed on first start).
pub async fn sales_table_is_empty(pool: &sqlx::PgPool) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT NOT EXISTS (SELECT 1 FROM sales)")
        .fetch_one(pool)
        .await
}

/// Runs one parameterless statement of the load and returns the affected rows.
/// Not cached as a prepared statement: each runs once per seed, and several
/// refer to temporary objects that are dropped at commit.
async fn execute(conn: &mut PgConnection, sql: &str) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query(sql).persistent(false).execute(conn).await?.rows_affected())
}

/// Connections of running servers (`application_name = 'analytics-api'`)
/// on this database (a CLI pool is named `analytics-api-cli`).
pub async fn serving_connections(pool: &PgPool) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity
         WHERE datname = current_database() AND application_name = 'analytics-api'",
    )
    .fetch_one(pool)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn foreign_key_statements_cover_every_demo_key() {
        // The seeder drops and re-adds exactly these five keys; a key missing
        // from one list would be silently lost or fail to re-add.
        for name in [
            "product_sales_sale_id_fkey",
            "product_sales_product_id_fkey",
            "sales_store_id_fkey",
            "sales_channel_id_fkey",
            "sales_customer_id_fkey",
        ] {
            assert!(DROP_FOREIGN_KEYS.iter().any(|s| s.contains(name)), "{name}");
            assert!(ADD_FOREIGN_KEYS.iter().any(|s| s.contains(name)), "{name}");
        }
    }

    #[test]
    fn seed_bits_roundtrip() {
        let seed = u64::MAX - 7;
        let signed = i64::from_ne_bytes(seed.to_ne_bytes());
        assert_eq!(u64::from_ne_bytes(signed.to_ne_bytes()), seed);
    }
}
