//! Leases: one computation per key across instances. Before running a
//! statement for a missing entry an instance takes a short lease in Redis
//! (`SET NX PX`); the others wait for the entry instead of running the same
//! statement. The holder renews the lease while the statement runs and
//! releases it when done (or on error), only if it is still its own.

use std::sync::Arc;
use std::time::Duration;

use crate::redis::{RedisCaller, RedisClient, RedisUnavailable};

const RENEW_SCRIPT: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
";

const RELEASE_SCRIPT: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// A lease this instance holds; renewed in the background until dropped.
pub struct Lease {
    redis: Arc<RedisClient>,
    key: String,
    token: String,
    renewer: tokio::task::JoinHandle<()>,
}

/// Tries to take the lease on `key` for `length`; `Ok(None)` when another
/// instance holds it.
pub async fn acquire(
    redis: &Arc<RedisClient>,
    key: String,
    token: String,
    length: Duration,
) -> Result<Option<Lease>, RedisUnavailable> {
    let millis = u64::try_from(length.as_millis()).unwrap_or(u64::MAX).max(1);
    let (k, t) = (key.clone(), token.clone());
    let taken: Option<String> = redis
        .run_hot(RedisCaller::Cache, |mut c| async move {
            redis::cmd("SET")
                .arg(k)
                .arg(t)
                .arg("NX")
                .arg("PX")
                .arg(millis)
                .query_async(&mut c)
                .await
        })
        .await?;
    if taken.is_none() {
        return Ok(None);
    }
    let renewer = {
        let (redis, key, token) = (Arc::clone(redis), key.clone(), token.clone());
        tokio::spawn(async move {
            let script = redis::Script::new(RENEW_SCRIPT);
            loop {
                tokio::time::sleep(length / 3).await;
                let mut invocation = script.key(&key);
                invocation.arg(&token).arg(millis);
                let renewed = redis
                    .run_hot(RedisCaller::Cache, |mut c| async move {
                        invocation.invoke_async::<i64>(&mut c).await
                    })
                    .await;
                if !matches!(renewed, Ok(1)) {
                    return;
                }
            }
        })
    };
    Ok(Some(Lease {
        redis: Arc::clone(redis),
        key,
        token,
        renewer,
    }))
}

impl Lease {
    /// Releases the lease if it is still ours (waiters then stop waiting).
    pub async fn release(self) {
        self.renewer.abort();
        let script = redis::Script::new(RELEASE_SCRIPT);
        let mut invocation = script.key(&self.key);
        invocation.arg(&self.token);
        let _ = self
            .redis
            .run_hot(RedisCaller::Cache, |mut c| async move {
                invocation.invoke_async::<i64>(&mut c).await
            })
            .await;
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        // A lease dropped without release (a panicking flight) stops being
        // renewed and expires by itself.
        self.renewer.abort();
    }
}
