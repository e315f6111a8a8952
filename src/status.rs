//! In-process traffic history for the `/status` page: a ring of 10-second
//! buckets over the last 15 minutes (requests, hits, misses and latency
//! histograms by tier) and the hottest cache keys.
//!
//! Recording is a handful of relaxed atomic adds, so the hot path stays hot;
//! reading (every 2 s, by the page) does the summing.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use foldhash::HashMap;
use serde::Serialize;

use crate::cache::stats::Outcome;

pub const BUCKET_SECONDS: u64 = 10;
pub const BUCKETS: usize = 90;
/// Latency histogram: bucket i holds samples up to `10 µs * 1.6^i`; 32
/// buckets reach past 30 s.
const LATENCY_BUCKETS: usize = 32;
const TIERS: [Outcome; 4] = [Outcome::L1, Outcome::Redis, Outcome::Miss, Outcome::Bypass];
/// Most distinct keys tracked for the hot-keys table before the coldest are dropped.
const HOT_KEYS_CAPACITY: usize = 2_048;

struct Bucket {
    /// Which 10-second slot (unix seconds / 10) this bucket currently counts.
    slot: AtomicU64,
    requests: AtomicU64,
    hits: AtomicU64,
    misses: AtomicU64,
    latency: [[AtomicU64; LATENCY_BUCKETS]; 4],
}

impl Bucket {
    fn new() -> Self {
        Self {
            slot: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            latency: std::array::from_fn(|_| std::array::from_fn(|_| AtomicU64::new(0))),
        }
    }

    fn reset(&self, slot: u64) {
        self.requests.store(0, Ordering::Relaxed);
        self.hits.store(0, Ordering::Relaxed);
        self.misses.store(0, Ordering::Relaxed);
        for tier in &self.latency {
            for cell in tier {
                cell.store(0, Ordering::Relaxed);
            }
        }
        self.slot.store(slot, Ordering::Release);
    }
}

/// What the hot-keys table shows about one key.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct HotKey {
    pub dataset: String,
    pub tenant: String,
    pub summary: String,
    pub hits: u64,
}

pub struct StatusTracker {
    buckets: Vec<Bucket>,
    /// foldhash: hashed on every answer (keys are MD5-derived, bounded).
    hot_keys: Mutex<HashMap<String, HotKey>>,
    /// When tracking began (unix s): a young server's request rate is over
    /// its lifetime, not over a 15-minute window it has not lived yet.
    started_at_secs: u64,
}

impl Default for StatusTracker {
    fn default() -> Self {
        Self::new(crate::clock::unix_now())
    }
}

fn tier_index(outcome: Outcome) -> usize {
    match outcome {
        Outcome::L1 => 0,
        Outcome::Redis => 1,
        Outcome::Miss => 2,
        Outcome::Bypass => 3,
    }
}

fn latency_index(elapsed: Duration) -> usize {
    let micros = elapsed.as_secs_f64() * 1e6;
    if micros <= 10.0 {
        return 0;
    }
    ((micros / 10.0).ln() / 1.6f64.ln())
        .ceil()
        .clamp(0.0, (LATENCY_BUCKETS - 1) as f64) as usize
}

fn latency_upper_ms(index: usize) -> f64 {
    0.01 * 1.6f64.powi(index as i32)
}

impl StatusTracker {
    pub fn new(started_at_secs: u64) -> Self {
        Self {
            buckets: (0..BUCKETS).map(|_| Bucket::new()).collect(),
            hot_keys: Mutex::new(HashMap::default()),
            started_at_secs,
        }
    }

    /// Records one answered query at unix time `now_secs`.
    pub fn record(&self, now_secs: u64, outcome: Outcome, elapsed: Duration) {
        let slot = now_secs / BUCKET_SECONDS;
        let bucket = &self.buckets[(slot % BUCKETS as u64) as usize];
        let current = bucket.slot.load(Ordering::Acquire);
        if current != slot
            && bucket
                .slot
                .compare_exchange(current, u64::MAX, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            // This caller won the right to recycle the bucket; a concurrent
            // record during the reset may be lost, which a status page tolerates.
            bucket.reset(slot);
        }
        bucket.requests.fetch_add(1, Ordering::Relaxed);
        match outcome {
            Outcome::L1 | Outcome::Redis => bucket.hits.fetch_add(1, Ordering::Relaxed),
            Outcome::Miss => bucket.misses.fetch_add(1, Ordering::Relaxed),
            Outcome::Bypass => 0,
        };
        bucket.latency[tier_index(outcome)][latency_index(elapsed)].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a lookup of `key`; `describe` runs only the first time a key is seen.
    pub fn record_key(&self, key: &str, describe: impl FnOnce() -> HotKey) {
        let mut keys = crate::sync::lock(&self.hot_keys);
        if let Some(entry) = keys.get_mut(key) {
            entry.hits += 1;
            return;
        }
        if keys.len() >= HOT_KEYS_CAPACITY {
            // Keep the hotter half: amortized O(1) per insert, bounded memory.
            let mut counts: Vec<u64> = keys.values().map(|k| k.hits).collect();
            let middle = counts.len() / 2;
            let (_, median, _) = counts.select_nth_unstable(middle);
            let median = *median;
            keys.retain(|_, k| k.hits > median);
        }
        let mut entry = describe();
        entry.hits = 1;
        keys.insert(key.to_owned(), entry);
    }

    /// The window as the status page wants it.
    pub fn snapshot(&self, now_secs: u64) -> WindowSnapshot {
        let newest = now_secs / BUCKET_SECONDS;
        let oldest = newest.saturating_sub(BUCKETS as u64 - 1);
        let mut series = Vec::with_capacity(BUCKETS);
        let mut latency = [[0u64; LATENCY_BUCKETS]; 4];
        let (mut requests, mut hits, mut misses) = (0, 0, 0);
        for slot in oldest..=newest {
            let bucket = &self.buckets[(slot % BUCKETS as u64) as usize];
            if bucket.slot.load(Ordering::Acquire) != slot {
                continue;
            }
            let point = SeriesPoint {
                t: slot * BUCKET_SECONDS,
                requests: bucket.requests.load(Ordering::Relaxed),
                hits: bucket.hits.load(Ordering::Relaxed),
                misses: bucket.misses.load(Ordering::Relaxed),
            };
            requests += point.requests;
            hits += point.hits;
            misses += point.misses;
            for (tier, cells) in bucket.latency.iter().enumerate() {
                for (i, cell) in cells.iter().enumerate() {
                    latency[tier][i] += cell.load(Ordering::Relaxed);
                }
            }
            series.push(point);
        }
        let percentiles = |tier: usize| {
            let total: u64 = latency[tier].iter().sum();
            let at = |q: f64| {
                (total > 0).then(|| {
                    let rank = ((total as f64) * q).ceil().max(1.0) as u64;
                    let mut seen = 0;
                    let index = latency[tier].iter().position(|&c| {
                        seen += c;
                        seen >= rank
                    });
                    (latency_upper_ms(index.unwrap_or(LATENCY_BUCKETS - 1)) * 1e3).round() / 1e3
                })
            };
            Percentiles {
                p50: at(0.5),
                p99: at(0.99),
            }
        };
        let window_start = (oldest * BUCKET_SECONDS).max(self.started_at_secs);
        let elapsed_window = now_secs.saturating_sub(window_start).max(1) as f64;
        WindowSnapshot {
            series,
            hit_rate: (hits + misses > 0).then(|| ((hits as f64 / (hits + misses) as f64) * 1e4).round() / 1e4),
            request_rate: ((requests as f64 / elapsed_window) * 1e3).round() / 1e3,
            latency_ms: TIERS
                .iter()
                .map(|t| (t.as_str(), percentiles(tier_index(*t))))
                .collect(),
        }
    }

    /// The `n` keys with the most lookups.
    pub fn hot_keys(&self, n: usize) -> Vec<HotKey> {
        let keys = crate::sync::lock(&self.hot_keys);
        let mut hottest: Vec<HotKey> = keys.values().cloned().collect();
        hottest.sort_by(|a, b| b.hits.cmp(&a.hits).then_with(|| a.summary.cmp(&b.summary)));
        hottest.truncate(n);
        hottest
    }
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SeriesPoint {
    /// Bucket start, unix seconds.
    pub t: u64,
    pub requests: u64,
    pub hits: u64,
    pub misses: u64,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Percentiles {
    pub p50: Option<f64>,
    pub p99: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct WindowSnapshot {
    pub series: Vec<SeriesPoint>,
    pub hit_rate: Option<f64>,
    pub request_rate: f64,
    pub latency_ms: std::collections::BTreeMap<&'static str, Percentiles>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_count_requests_and_roll_over() {
        let t0 = 1_700_000_000;
        let tracker = StatusTracker::new(t0);
        tracker.record(t0, Outcome::Miss, Duration::from_millis(5));
        tracker.record(t0 + 1, Outcome::L1, Duration::from_micros(40));
        tracker.record(t0 + 2, Outcome::L1, Duration::from_micros(40));
        tracker.record(t0 + 30, Outcome::Redis, Duration::from_micros(400));
        let window = tracker.snapshot(t0 + 30);
        assert_eq!(window.series.iter().map(|p| p.requests).sum::<u64>(), 4);
        assert_eq!(window.hit_rate, Some(0.75));
        assert_eq!(window.request_rate, 0.133, "4 requests over the 30 s lived so far");
        let l1 = &window.latency_ms["l1"];
        assert!(l1.p50.is_some_and(|p| (0.04..0.07).contains(&p)), "{l1:?}");
        assert!(window.latency_ms["bypass"].p50.is_none());

        // 15 minutes later the old buckets are out of the window.
        let later = t0 + 30 + 900;
        tracker.record(later, Outcome::Miss, Duration::from_millis(1));
        let window = tracker.snapshot(later);
        assert_eq!(window.series.iter().map(|p| p.requests).sum::<u64>(), 1);
        assert_eq!(window.hit_rate, Some(0.0));
    }

    #[test]
    fn hot_keys_are_ranked_and_bounded() {
        let tracker = StatusTracker::default();
        let describe = |name: &str| {
            let name = name.to_owned();
            move || HotKey {
                dataset: "sales".into(),
                tenant: "default".into(),
                summary: name,
                hits: 0,
            }
        };
        for _ in 0..5 {
            tracker.record_key("a", describe("a"));
        }
        tracker.record_key("b", describe("b"));
        for i in 0..(HOT_KEYS_CAPACITY * 2) {
            tracker.record_key(&format!("cold{i}"), describe("cold"));
        }
        let hottest = tracker.hot_keys(2);
        assert_eq!(hottest[0].summary, "a");
        assert_eq!(hottest[0].hits, 5);
        assert!(tracker.hot_keys.lock().map(|k| k.len()).unwrap_or(0) <= HOT_KEYS_CAPACITY);
    }
}
