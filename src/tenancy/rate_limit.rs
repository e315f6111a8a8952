//! Per-tenant rate limits: GCRA ("generic cell rate algorithm") in one Lua
//! script on Redis, so every instance shares one budget per tenant; while
//! Redis is unreachable each instance falls back to the same algorithm in
//! process (so the effective limit is per instance until Redis returns).
//!
//! A limit of L per minute admits up to L requests at once and then one
//! every 60/L seconds: the budget refills continuously, with no window edges
//! to game.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::http::{HeaderName, HeaderValue};

use crate::cache::keys::KeySpace;
use crate::redis::{RedisCaller, RedisClient};

const PERIOD_MS: f64 = 60_000.0;

/// Returns `{allowed, remaining, retry_after_ms, reset_ms}`. Uses Redis' own
/// clock (TIME), so instances with skewed clocks still agree.
const GCRA_SCRIPT: &str = r"
local period = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local interval = period / limit
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local new_tat = tat + interval
local allow_at = new_tat - period
if now < allow_at then
  return {0, 0, math.ceil(allow_at - now), math.ceil(tat - now)}
end
redis.call('SET', KEYS[1], tostring(new_tat), 'PX', math.ceil(new_tat - now))
return {1, math.floor((now - allow_at) / interval), 0, math.ceil(new_tat - now)}
";

/// The verdict for one request, with what the rate-limit headers report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// Requests per minute.
    pub limit: u64,
    pub remaining: u64,
    /// Seconds until a request would be admitted (0 when allowed).
    pub retry_after_seconds: u64,
    /// Seconds until the whole budget is available again.
    pub reset_seconds: u64,
    /// Whether Redis decided (false: this instance's fallback did).
    pub shared: bool,
}

impl Decision {
    /// `RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset`.
    pub fn headers(&self) -> [(HeaderName, HeaderValue); 3] {
        [
            (
                HeaderName::from_static("ratelimit-limit"),
                HeaderValue::from(self.limit),
            ),
            (
                HeaderName::from_static("ratelimit-remaining"),
                HeaderValue::from(self.remaining),
            ),
            (
                HeaderName::from_static("ratelimit-reset"),
                HeaderValue::from(self.reset_seconds),
            ),
        ]
    }
}

pub struct RateLimiter {
    /// The shared Redis, `None` when Redis is disabled (every instance then
    /// limits on its own).
    redis: Option<Arc<RedisClient>>,
    keys: KeySpace,
    script: redis::Script,
    /// Tenant -> theoretical arrival time (ms), for the local fallback.
    local: Mutex<HashMap<String, f64>>,
}

impl RateLimiter {
    pub fn new(redis: Option<Arc<RedisClient>>, keys: KeySpace) -> Self {
        Self {
            redis,
            keys,
            script: redis::Script::new(GCRA_SCRIPT),
            local: Mutex::new(HashMap::new()),
        }
    }

    /// Admits or refuses one request of `tenant` under `limit` per minute.
    pub async fn check(&self, tenant: &str, limit: u64) -> Decision {
        let limit = limit.max(1);
        if let Some(redis) = &self.redis {
            let (redis, key, script) = (Arc::clone(redis), self.keys.rate_limit_key(tenant), self.script.clone());
            // On the shared runtime, where the Redis connections live (`offload`).
            let outcome = crate::offload::shared(async move {
                redis
                    .run_hot(RedisCaller::RateLimit, move |mut connection| async move {
                        script
                            .key(key)
                            .arg(PERIOD_MS as u64)
                            .arg(limit)
                            .invoke_async::<(u64, u64, u64, u64)>(&mut connection)
                            .await
                    })
                    .await
            })
            .await;
            if let Ok((allowed, remaining, retry_ms, reset_ms)) = outcome {
                return Decision {
                    allowed: allowed == 1,
                    limit,
                    remaining,
                    retry_after_seconds: retry_ms.div_ceil(1000),
                    reset_seconds: reset_ms.div_ceil(1000),
                    shared: true,
                };
            }
        }
        self.check_locally(tenant, limit, crate::clock::unix_now_ms() as f64)
    }

    /// The same GCRA in process, used while Redis is unreachable.
    fn check_locally(&self, tenant: &str, limit: u64, now: f64) -> Decision {
        let interval = PERIOD_MS / limit as f64;
        let mut tats = crate::sync::lock(&self.local);
        let tat = tats.get(tenant).copied().unwrap_or(0.0).max(now);
        let new_tat = tat + interval;
        let allow_at = new_tat - PERIOD_MS;
        if now < allow_at {
            return Decision {
                allowed: false,
                limit,
                remaining: 0,
                retry_after_seconds: ((allow_at - now) / 1000.0).ceil() as u64,
                reset_seconds: ((tat - now) / 1000.0).ceil() as u64,
                shared: false,
            };
        }
        tats.insert(tenant.to_owned(), new_tat);
        Decision {
            allowed: true,
            limit,
            remaining: ((now - allow_at) / interval).floor() as u64,
            retry_after_seconds: 0,
            reset_seconds: ((new_tat - now) / 1000.0).ceil() as u64,
            shared: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_gcra_admits_the_limit_at_once_then_refills_steadily() {
        let limiter = RateLimiter::new(None, KeySpace::new("t").expect("safe prefix"));
        let now = 1_000_000.0;
        for i in 0..5 {
            let decision = limiter.check_locally("a", 5, now);
            assert!(decision.allowed, "request {i}");
            assert_eq!(decision.remaining, 4 - i);
        }
        let refused = limiter.check_locally("a", 5, now);
        assert!(!refused.allowed);
        assert_eq!(refused.retry_after_seconds, 12, "one request every 60/5 s");
        assert!(
            limiter.check_locally("b", 5, now).allowed,
            "tenants have separate budgets"
        );
        assert!(
            limiter.check_locally("a", 5, now + 12_000.0).allowed,
            "refilled after one interval"
        );
        assert!(!limiter.check_locally("a", 5, now + 12_000.0).allowed);
    }
}
