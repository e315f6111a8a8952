//! One miss, end to end: the Redis read, the computation and the stores that
//! follow it. A flight owns everything it needs, so it runs in its own task
//! (single-flight) and a client that disconnects cannot cancel it.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::entry::{self, CachedData};
use super::stats::{CacheStats, Outcome};
use super::{Served, L1};
use crate::clock::unix_now;
use crate::redis::{RedisCaller, RedisClient, RedisUnavailable};

/// What a computation produced: the JSON array of rows, ready to splice.
#[derive(Debug, Clone)]
pub struct Fresh {
    pub data: bytes::Bytes,
    pub rows: u64,
    /// Time the computation spent (the database's time, for the span).
    pub elapsed: Duration,
}

pub(super) struct Flight {
    pub key: String,
    pub ttl_seconds: u64,
    pub read_redis: bool,
    pub store: bool,
    pub compress_above: usize,
    pub max_entry_bytes: usize,
    pub l1: Option<L1>,
    pub redis: Option<Arc<RedisClient>>,
    pub stats: Arc<CacheStats>,
}

impl Flight {
    pub async fn run<F, Fut, E>(self, compute: F) -> Result<Served, E>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<Fresh, E>> + Send + 'static,
    {
        if self.read_redis {
            if let Some(entry) = self.redis_get().await {
                let entry = Arc::new(entry);
                if let Some(l1) = &self.l1 {
                    l1.insert(self.key.clone(), Arc::clone(&entry)).await;
                }
                return Ok(Served {
                    entry,
                    outcome: Outcome::Redis,
                    stored: true,
                    compute_elapsed: None,
                });
            }
        }

        self.stats.record_db_query();
        let fresh = compute().await?;
        let entry = Arc::new(CachedData {
            data: fresh.data,
            rows: fresh.rows,
            created_at: unix_now(),
            ttl_seconds: self.ttl_seconds,
        });
        let stored = self.store && self.save(&entry).await;
        Ok(Served {
            entry,
            outcome: Outcome::Miss,
            stored,
            compute_elapsed: Some(fresh.elapsed),
        })
    }

    /// A Redis GET that decodes; a failure or a corrupt entry is a miss (the
    /// corrupt one is counted and deleted).
    async fn redis_get(&self) -> Option<CachedData> {
        let redis = self.redis.as_ref()?;
        let bytes = match redis.get(RedisCaller::Cache, &self.key).await {
            Ok(found) => found?,
            Err(error) => {
                self.record_failure(&error);
                return None;
            }
        };
        match entry::decode(&bytes, self.max_entry_bytes) {
            Ok(entry) => Some(entry),
            Err(error) => {
                self.stats.record_corrupt();
                tracing::warn!(key = %self.key, %error, "corrupt cache entry; treating as a miss and deleting it");
                let _ = redis.unlink(RedisCaller::Cache, vec![self.key.clone()]).await;
                None
            }
        }
    }

    /// Stores in L1 and Redis; returns whether any tier holds it now.
    async fn save(&self, entry: &Arc<CachedData>) -> bool {
        if entry.data.len() > self.max_entry_bytes {
            self.stats.record_uncacheable();
            return false;
        }
        let mut stored = false;
        if let Some(redis) = &self.redis {
            let started = Instant::now();
            let encoded = entry::encode(entry, self.compress_above);
            match redis
                .set_ex(RedisCaller::Cache, &self.key, encoded, self.ttl_seconds)
                .await
            {
                Ok(()) => {
                    self.stats.record_set(started.elapsed());
                    stored = true;
                }
                Err(error) => self.record_failure(&error),
            }
        }
        if let Some(l1) = &self.l1 {
            l1.insert(self.key.clone(), Arc::clone(entry)).await;
            stored = true;
        }
        stored
    }

    fn record_failure(&self, error: &RedisUnavailable) {
        if error.is_failure() {
            self.stats
                .record_redis_error(matches!(error, RedisUnavailable::Timeout));
        }
    }
}
