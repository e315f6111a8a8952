//! Change capture on the database side: installing the trigger DDL the model
//! generates (`model::triggers`), and the dedicated LISTEN connection.

use sqlx::postgres::PgListener;
use sqlx::PgPool;

/// Serializes installs across instances starting at once (an arbitrary,
/// fixed advisory-lock key).
const INSTALL_LOCK: i64 = 0x616e_616c_7974_6963;

/// Runs `statements` in one transaction under an advisory lock, free of the
/// query statement timeout (DDL waits for table locks).
pub async fn run_ddl(pool: &PgPool, statements: &[String]) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("SET LOCAL statement_timeout = 0").execute(&mut *tx).await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(INSTALL_LOCK)
        .execute(&mut *tx)
        .await?;
    for statement in statements {
        sqlx::query(statement).execute(&mut *tx).await?;
    }
    tx.commit().await
}

/// A connection of its own, listening on `channel`.
pub async fn listen(pool: &PgPool, channel: &str) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    // Reconnects are ours to make (and to follow with a conservative
    // invalidation), not the listener's.
    listener.eager_reconnect(false);
    listener.listen(channel).await?;
    Ok(listener)
}
