//! TTL policy: how long a result may be served from the cache. Part of the
//! model because it is a pure function of the query's date range; the
//! settings build it once at start-up.

use chrono::NaiveDate;

/// Closed history does not change, so it lives long; ranges that include
/// today change by the minute, so they live short.
#[derive(Debug, Clone, Copy)]
pub struct TtlPolicy {
    pub default_seconds: u64,
    pub recent_seconds: u64,
    pub historical_seconds: u64,
    pub historical_after_days: u64,
}

impl TtlPolicy {
    /// `dataset_ttl` overrides the default; `range_end` is the last day the
    /// query covers (`None`: no range, so it includes today).
    pub fn ttl_for(&self, dataset_ttl: Option<u64>, range_end: Option<NaiveDate>, today: NaiveDate) -> u64 {
        let base = dataset_ttl.unwrap_or(self.default_seconds);
        match range_end {
            None => self.recent_seconds.min(base),
            Some(end) if end >= today => self.recent_seconds.min(base),
            Some(end) if (today - end).num_days() > self.historical_after_days as i64 => self.historical_seconds,
            Some(_) => base,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: TtlPolicy = TtlPolicy {
        default_seconds: 300,
        recent_seconds: 60,
        historical_seconds: 86_400,
        historical_after_days: 30,
    };

    fn day(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").expect("test date")
    }

    #[test]
    fn range_including_today_gets_recent_ttl() {
        assert_eq!(POLICY.ttl_for(None, Some(day("2026-11-21")), day("2026-11-21")), 60);
        assert_eq!(POLICY.ttl_for(None, Some(day("2027-01-01")), day("2026-11-21")), 60);
        assert_eq!(POLICY.ttl_for(None, None, day("2026-11-21")), 60);
    }

    #[test]
    fn range_ended_long_ago_gets_historical_ttl() {
        assert_eq!(POLICY.ttl_for(None, Some(day("2026-10-01")), day("2026-11-21")), 86_400);
    }

    #[test]
    fn range_ended_recently_gets_dataset_or_default_ttl() {
        assert_eq!(POLICY.ttl_for(None, Some(day("2026-11-10")), day("2026-11-21")), 300);
        assert_eq!(
            POLICY.ttl_for(Some(120), Some(day("2026-11-10")), day("2026-11-21")),
            120
        );
        assert_eq!(POLICY.ttl_for(Some(30), None, day("2026-11-21")), 30);
    }
}
