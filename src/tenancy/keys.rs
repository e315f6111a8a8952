//! API keys: random, shown once, stored and compared only as SHA-256 digests.

use std::time::Duration;

use rand::RngCore;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use subtle::ConstantTimeEq;

/// Keys look like `ak_` + 40 hex characters (160 random bits).
pub const KEY_PREFIX: &str = "ak_";

pub fn generate() -> String {
    let mut bytes = [0u8; 20];
    rand::rng().fill_bytes(&mut bytes);
    format!("{KEY_PREFIX}{}", hex::encode(bytes))
}

pub fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

pub fn digest_hex(key: &str) -> String {
    hex::encode(digest(key))
}

/// Compares digests so that neither the content nor the length of the
/// expected secret leaks through timing.
pub fn constant_time_eq(presented: &str, expected: &str) -> bool {
    digest(presented).ct_eq(&digest(expected)).into()
}

pub fn parse_digest(hex_digest: &str) -> Option<[u8; 32]> {
    let bytes = hex::decode(hex_digest.trim()).ok()?;
    bytes.try_into().ok()
}

/// A row of `api_keys`, as `keys list` shows it.
#[derive(Debug, sqlx::FromRow)]
pub struct StoredKey {
    pub id: i64,
    pub key_prefix: String,
    pub tenant: String,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub last_used_at: Option<chrono::DateTime<chrono::Utc>>,
    pub revoked_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// Creates a key for `tenant`; returns the key (the only time it exists in clear).
pub async fn create(pool: &PgPool, tenant: &str) -> Result<String, sqlx::Error> {
    let key = generate();
    sqlx::query("INSERT INTO api_keys (key_hash, key_prefix, tenant) VALUES ($1, $2, $3)")
        .bind(digest_hex(&key))
        .bind(&key[..KEY_PREFIX.len() + 8])
        .bind(tenant)
        .execute(pool)
        .await?;
    Ok(key)
}

pub async fn list(pool: &PgPool, tenant: Option<&str>) -> Result<Vec<StoredKey>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, key_prefix, tenant, created_at, last_used_at, revoked_at FROM api_keys
         WHERE $1::text IS NULL OR tenant = $1 ORDER BY id",
    )
    .bind(tenant)
    .fetch_all(pool)
    .await
}

/// Revokes by id or by key prefix; returns how many keys were revoked.
pub async fn revoke(pool: &PgPool, id_or_prefix: &str) -> Result<u64, sqlx::Error> {
    let result = sqlx::query(
        "UPDATE api_keys SET revoked_at = now()
         WHERE revoked_at IS NULL AND (id::text = $1 OR key_prefix = $1)",
    )
    .bind(id_or_prefix)
    .execute(pool)
    .await?;
    Ok(result.rows_affected())
}

/// The tenant of an active (not revoked) key with this digest.
pub async fn lookup(pool: &PgPool, digest_hex: &str) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT tenant FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL")
        .bind(digest_hex)
        .fetch_optional(pool)
        .await
}

/// Records use, at most once per `every` per key (a write per request would
/// turn every cache hit into a database write).
pub async fn touch(pool: &PgPool, digest_hex: &str, every: Duration) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE api_keys SET last_used_at = now()
         WHERE key_hash = $1 AND (last_used_at IS NULL OR last_used_at < now() - make_interval(secs => $2))",
    )
    .bind(digest_hex)
    .bind(every.as_secs_f64())
    .execute(pool)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_are_distinct_and_well_formed() {
        let a = generate();
        let b = generate();
        assert_ne!(a, b);
        assert!(a.starts_with(KEY_PREFIX) && a.len() == KEY_PREFIX.len() + 40);
        assert_eq!(parse_digest(&digest_hex(&a)), Some(digest(&a)));
        assert_eq!(parse_digest("abc"), None);
        assert!(constant_time_eq(&a, &a.clone()));
        assert!(!constant_time_eq(&a, &b));
        assert!(!constant_time_eq("", &a));
    }
}
