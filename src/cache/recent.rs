//! The invalidations L1 saw lately. A flight that read or computed an entry
//! while an invalidation arrived must not put that entry into L1 if the
//! invalidation applies to it (the entry may predate the change), but should
//! if it does not: with changes streaming in, refusing every fill would leave
//! L1 empty. So each invalidation is numbered and kept for a while, and a
//! flight asks whether any since its start matches its entry.

use std::collections::VecDeque;
use std::sync::Mutex;

use super::entry::CachedData;
use super::{keys, L1Target};
use crate::sync::lock;

/// How many recent invalidations are kept; a flight older than all of them
/// assumes the worst.
const KEPT: usize = 256;

/// One invalidation of L1.
#[derive(Debug, Clone)]
pub enum Dropped {
    /// Entries matching a target (a data change).
    Target(L1Target),
    /// Keys matching a key-space pattern (a clear).
    Pattern(String),
}

impl Dropped {
    fn applies_to(&self, key: &str, entry: &CachedData) -> bool {
        match self {
            Self::Target(target) => target.matches(entry),
            Self::Pattern(pattern) => keys::glob_matches(pattern, key),
        }
    }
}

/// Numbered recent invalidations.
#[derive(Debug, Default)]
pub struct Recent {
    /// (number, invalidation), oldest first; numbers start at 1.
    log: Mutex<(u64, VecDeque<(u64, Dropped)>)>,
}

impl Recent {
    /// The number of the latest invalidation (0: none yet).
    pub fn now(&self) -> u64 {
        self.lock().0
    }

    /// Records an invalidation.
    pub fn push(&self, dropped: Dropped) {
        let mut log = self.lock();
        log.0 += 1;
        let number = log.0;
        log.1.push_back((number, dropped));
        if log.1.len() > KEPT {
            log.1.pop_front();
        }
    }

    /// Whether an invalidation after `since` applies to `entry` (under `key`).
    pub fn touched_since(&self, since: u64, key: &str, entry: &CachedData) -> bool {
        let log = self.lock();
        if log.0 == since {
            return false;
        }
        let oldest_kept = log.1.front().map(|(n, _)| *n).unwrap_or(u64::MAX);
        if oldest_kept > since + 1 {
            // Some of what happened since is forgotten: assume it applies.
            return true;
        }
        log.1
            .iter()
            .filter(|(n, _)| *n > since)
            .any(|(_, dropped)| dropped.applies_to(key, entry))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (u64, VecDeque<(u64, Dropped)>)> {
        lock(&self.log)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;

    use super::*;
    use crate::cache::EntryDeps;

    fn entry(dataset: &str, keys: &[&str]) -> CachedData {
        CachedData {
            data: Bytes::from_static(b"[]"),
            rows: 0,
            total: None,
            created_at: 0,
            ttl_seconds: 60,
            versions: Some(1),
            source: None,
            deflated: None,
            deps: Some(Arc::new(EntryDeps {
                dataset: dataset.into(),
                tenant: "t".into(),
                keys: keys.iter().map(|k| k.to_string()).collect(),
            })),
        }
    }

    #[test]
    fn only_invalidations_since_the_start_that_apply_count() {
        let recent = Recent::default();
        recent.push(Dropped::Pattern("a:*".into()));
        let start = recent.now();
        let october = entry("sales", &["m2026-10"]);
        assert!(!recent.touched_since(start, "a:1", &october));
        recent.push(Dropped::Target(L1Target {
            dataset: "sales".into(),
            tenant: None,
            keys: Some(["m2026-11".to_owned()].into()),
        }));
        assert!(!recent.touched_since(start, "a:1", &october), "November's change");
        assert!(recent.touched_since(start, "a:1", &entry("sales", &["m2026-11"])));
        recent.push(Dropped::Pattern("a:*".into()));
        assert!(recent.touched_since(start, "a:1", &october), "a clear of its key");
    }

    #[test]
    fn a_flight_older_than_the_log_assumes_the_worst() {
        let recent = Recent::default();
        let start = recent.now();
        for _ in 0..=KEPT {
            recent.push(Dropped::Pattern("other:*".into()));
        }
        assert!(recent.touched_since(start, "a:1", &entry("sales", &[])));
    }
}
