//! Version counters: how the cache knows an entry went stale without
//! scanning keys. Every entry depends on a few counters (its dataset's
//! generation, its tenant's generation and one per tag, see
//! `model::freshness`); a change increments the counters of what it touched.
//! An entry remembers a snapshot (a hash) of its counters' values when it was
//! computed and is valid only while they still hash the same.
//!
//! The entry and its counters are read in one round trip (a GET and an MGET
//! pipelined: cheaper for Redis than a script), so invalidation costs the
//! hot path one extra command in the same round trip, and costs the
//! invalidation itself one INCR per touched counter, whatever the number of
//! cached keys. A counter that does not exist (never set, or evicted) is
//! created with a random value by a script (once per counter), so a counter
//! that vanished and came back can never match an old snapshot.

use std::sync::Arc;

use md5::{Digest, Md5};
use rand::Rng;

use crate::redis::{RedisCaller, RedisClient, RedisUnavailable};

/// KEYS[1] = the entry, KEYS[2..] = its counters; ARGV[1] = a seed for
/// counters that do not exist. Returns `{entry or false, {counter values}}`.
const READ_SCRIPT: &str = r"
local entry = redis.call('GET', KEYS[1]) or false
local versions = {}
for i = 2, #KEYS do
  local v = redis.call('GET', KEYS[i])
  if not v then
    redis.call('SET', KEYS[i], ARGV[1])
    v = ARGV[1]
  end
  versions[i - 1] = v
end
return {entry, versions}
";

/// Reads entries with their counters and bumps counters.
pub struct Versions {
    script: redis::Script,
}

impl Default for Versions {
    fn default() -> Self {
        Self {
            script: redis::Script::new(READ_SCRIPT),
        }
    }
}

/// The hash of counter values an entry is valid under.
pub fn snapshot(values: &[String]) -> u64 {
    let mut hasher = Md5::new();
    for value in values {
        hasher.update(value.as_bytes());
        hasher.update(b",");
    }
    let digest = hasher.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_le_bytes(first)
}

impl Versions {
    /// GET `key` and the snapshot of `counters`, in one round trip (two
    /// when a counter has to be created first).
    pub async fn read(
        &self,
        redis: &Arc<RedisClient>,
        key: &str,
        counters: &[String],
    ) -> Result<(Option<Vec<u8>>, u64), RedisUnavailable> {
        self.read_from(redis, redis, key, counters).await
    }

    /// [`Self::read`] from `reader` (a replica, or the primary itself);
    /// a counter that does not exist yet is created on `primary`, since a
    /// replica refuses writes.
    pub async fn read_from(
        &self,
        reader: &Arc<RedisClient>,
        primary: &Arc<RedisClient>,
        key: &str,
        counters: &[String],
    ) -> Result<(Option<Vec<u8>>, u64), RedisUnavailable> {
        let (owned_key, owned_counters) = (key.to_owned(), counters.to_vec());
        let (entry, values): (Option<Vec<u8>>, Vec<Option<String>>) = reader
            .run_hot(RedisCaller::Cache, |mut c| async move {
                redis::pipe()
                    .cmd("GET")
                    .arg(owned_key)
                    .cmd("MGET")
                    .arg(owned_counters)
                    .query_async(&mut c)
                    .await
            })
            .await?;
        if let Some(values) = values.into_iter().collect::<Option<Vec<String>>>() {
            return Ok((entry, snapshot(&values)));
        }
        self.read_creating(primary, key, counters).await
    }

    /// The same read through the script that creates missing counters.
    async fn read_creating(
        &self,
        redis: &Arc<RedisClient>,
        key: &str,
        counters: &[String],
    ) -> Result<(Option<Vec<u8>>, u64), RedisUnavailable> {
        let mut invocation = self.script.key(key);
        for counter in counters {
            invocation.key(counter);
        }
        // Far above anything INCR reaches from 0, and below i64::MAX.
        let seed: i64 = rand::rng().random_range(1_000_000_000_000_000..4_000_000_000_000_000_000);
        invocation.arg(seed);
        let (entry, values): (Option<Vec<u8>>, Vec<String>) = redis
            .run_hot(RedisCaller::Cache, |mut c| async move {
                invocation.invoke_async(&mut c).await
            })
            .await?;
        Ok((entry, snapshot(&values)))
    }

    /// INCR every counter in `counters` (one pipeline; in a cluster, one
    /// per hash tag, since a pipeline runs on one slot there).
    pub async fn bump(&self, redis: &Arc<RedisClient>, counters: Vec<String>) -> Result<(), RedisUnavailable> {
        if counters.is_empty() {
            return Ok(());
        }
        let groups: Vec<Vec<String>> = if redis.is_cluster() {
            let mut by_tag: std::collections::BTreeMap<String, Vec<String>> = Default::default();
            for counter in counters {
                by_tag.entry(hash_tag(&counter).to_owned()).or_default().push(counter);
            }
            by_tag.into_values().collect()
        } else {
            vec![counters]
        };
        for group in groups {
            redis
                .run_admin(RedisCaller::Cache, |mut c| async move {
                    let mut pipe = redis::pipe();
                    for counter in &group {
                        pipe.cmd("INCR").arg(counter).ignore();
                    }
                    pipe.query_async::<()>(&mut c).await
                })
                .await?;
        }
        Ok(())
    }
}

/// What a Redis Cluster hashes of `key`: the text of its first non-empty
/// `{...}`, or the whole key.
fn hash_tag(key: &str) -> &str {
    if let Some(open) = key.find('{') {
        if let Some(close) = key[open + 1..].find('}') {
            if close > 0 {
                return &key[open + 1..open + 1 + close];
            }
        }
    }
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_tags_are_what_a_cluster_hashes() {
        assert_eq!(hash_tag("version:a:{sales}:gen"), "sales");
        assert_eq!(hash_tag("version:a:sales:gen"), "version:a:sales:gen");
        assert_eq!(hash_tag("a{}b{c}"), "a{}b{c}");
    }

    #[test]
    fn snapshots_change_with_any_counter_and_with_order() {
        let base = snapshot(&["1".into(), "2".into()]);
        assert_eq!(base, snapshot(&["1".into(), "2".into()]));
        assert_ne!(base, snapshot(&["1".into(), "3".into()]));
        assert_ne!(base, snapshot(&["2".into(), "1".into()]));
        assert_ne!(snapshot(&["12".into()]), snapshot(&["1".into(), "2".into()]));
    }
}
