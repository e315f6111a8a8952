//! Freshness, the pure part: which slices of a dataset a cached answer
//! depends on, and which slices a data change touches. A slice is a [`Tag`]:
//! a time bucket (everything, a year or a month of local days) crossed with a
//! slot (any value, or one value of a tracked dimension). An answer must be
//! invalidated when a change touches one of its tags; the cache turns tags
//! into version counters (see `cache::freshness`).
//!
//! Why this is sound: a change bumps every bucket level (all, each year and
//! each month of its span) and, for each level, the `Any` slot plus either
//! each changed value of every tracked dimension or, when the values are
//! unknown, that dimension's `Column` slot. An answer restricted to values
//! V of a tracked dimension depends on the `Column` slot and on each value in
//! V; any other answer depends on `Any`. So every change that can alter an
//! answer bumps one of its tags; some that cannot do too (over-invalidation,
//! never under-invalidation).

use std::collections::{BTreeMap, BTreeSet};

use chrono::{Datelike, NaiveDate};

use super::definition::Dataset;
use super::filters::{FilterOp, FilterValue, ResolvedFilter};
use super::resolve::ResolvedQuery;

/// Answers spanning at most this many months depend on month buckets.
const MAX_MONTH_BUCKETS: i64 = 12;
/// ... at most this many years on year buckets; longer ones on `All`.
const MAX_YEAR_BUCKETS: i64 = 5;
/// An answer restricted to more values than this depends on `Any` instead.
const MAX_RESTRICTED_VALUES: usize = 8;
/// A change touching more tags than this invalidates the whole dataset
/// instead (one counter instead of thousands).
const MAX_TOUCHED_TAGS: usize = 2_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Bucket {
    All,
    Year(i32),
    /// Year and month (1-12).
    Month(i32, u32),
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Slot {
    /// Every row of the bucket.
    Any,
    /// Rows whose value of this tracked dimension is not known to the change.
    Column(String),
    /// Rows with this value (as text) of this tracked dimension.
    Value(String, String),
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Tag {
    pub bucket: Bucket,
    pub slot: Slot,
}

/// A change of a dataset's data, in the model's terms.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Change {
    /// Local days changed, inclusive; `None` when unknown (the whole dataset).
    pub span: Option<(NaiveDate, NaiveDate)>,
    /// Tracked dimension -> the values changed rows had (old and new), as
    /// text; a dimension that is absent or `None` is unknown.
    pub values: BTreeMap<String, Option<BTreeSet<String>>>,
}

/// What a change touches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Touched {
    /// Everything of the dataset (unknown span, or too much to list).
    Everything,
    Tags(Vec<Tag>),
}

/// The tags an answer over `query` (with the tenant's `scope`) depends on.
pub fn dependencies(dataset: &Dataset, query: &ResolvedQuery, scope: &[ResolvedFilter]) -> Vec<Tag> {
    let buckets = match query.date_range {
        None => vec![Bucket::All],
        Some(range) => answer_buckets(range.start, range.end),
    };
    let slots = match restriction(dataset, query.filters.iter().chain(scope)) {
        Some((dimension, values)) => std::iter::once(Slot::Column(dimension.clone()))
            .chain(values.into_iter().map(|v| Slot::Value(dimension.clone(), v)))
            .collect(),
        None => vec![Slot::Any],
    };
    cross(&buckets, &slots)
}

/// Every bucket with every slot.
fn cross(buckets: &[Bucket], slots: &[Slot]) -> Vec<Tag> {
    buckets
        .iter()
        .flat_map(|bucket| {
            slots.iter().map(|slot| Tag {
                bucket: *bucket,
                slot: slot.clone(),
            })
        })
        .collect()
}

/// The tags `change` touches in `dataset`.
pub fn touched(dataset: &Dataset, change: &Change) -> Touched {
    let Some((start, end)) = change.span else {
        return Touched::Everything;
    };
    let (start, end) = (start.min(end), start.max(end));
    let mut buckets = vec![Bucket::All];
    buckets.extend((start.year()..=end.year()).map(Bucket::Year));
    let months = month_index(end) - month_index(start) + 1;
    if months * 2 > MAX_TOUCHED_TAGS as i64 {
        return Touched::Everything;
    }
    buckets.extend((month_index(start)..=month_index(end)).map(month_bucket));

    let mut slots = vec![Slot::Any];
    for dimension in dataset.tracked.keys() {
        match change.values.get(dimension) {
            Some(Some(values)) => slots.extend(values.iter().map(|v| Slot::Value(dimension.clone(), v.clone()))),
            _ => slots.push(Slot::Column(dimension.clone())),
        }
    }
    if buckets.len() * slots.len() > MAX_TOUCHED_TAGS {
        return Touched::Everything;
    }
    Touched::Tags(cross(&buckets, &slots))
}

fn month_index(day: NaiveDate) -> i64 {
    i64::from(day.year()) * 12 + i64::from(day.month0())
}

fn month_bucket(index: i64) -> Bucket {
    let year = i32::try_from(index.div_euclid(12)).unwrap_or(i32::MAX);
    Bucket::Month(year, index.rem_euclid(12) as u32 + 1)
}

/// Month buckets for short ranges, years for longer, everything beyond.
fn answer_buckets(start: NaiveDate, end: NaiveDate) -> Vec<Bucket> {
    let (start, end) = (start.min(end), start.max(end));
    let months = month_index(end) - month_index(start) + 1;
    if months <= MAX_MONTH_BUCKETS {
        return (month_index(start)..=month_index(end)).map(month_bucket).collect();
    }
    if i64::from(end.year() - start.year()) < MAX_YEAR_BUCKETS {
        return (start.year()..=end.year()).map(Bucket::Year).collect();
    }
    vec![Bucket::All]
}

/// The narrowest `eq`/`in` restriction on a tracked dimension, if any:
/// (dimension, values as text).
fn restriction<'f>(
    dataset: &Dataset,
    filters: impl Iterator<Item = &'f ResolvedFilter>,
) -> Option<(String, BTreeSet<String>)> {
    filters
        .filter(|f| matches!(f.op, FilterOp::Eq | FilterOp::In) && dataset.tracked.contains_key(&f.dimension))
        .filter_map(|f| {
            let values: BTreeSet<String> = match &f.value {
                FilterValue::Integer(i) => [i.to_string()].into(),
                FilterValue::Text(t) => [t.clone()].into(),
                FilterValue::IntegerList(list) => list.iter().map(i64::to_string).collect(),
                FilterValue::TextList(list) => list.iter().cloned().collect(),
                FilterValue::Number(_) | FilterValue::NumberList(_) => return None,
            };
            (values.len() <= MAX_RESTRICTED_VALUES).then(|| (f.dimension.clone(), values))
        })
        .min_by_key(|(_, values)| values.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{resolve, QueryRequest, SemanticModel};

    fn sales() -> Dataset {
        let text =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/model.toml")).expect("demo model");
        let model = SemanticModel::from_toml(&text).expect("valid");
        model.datasets["sales"].clone()
    }

    fn deps(request: serde_json::Value) -> BTreeSet<Tag> {
        let dataset = sales();
        let request = QueryRequest::from_json(request.to_string().as_bytes()).expect("request");
        let resolved = resolve(&dataset, &request).expect("resolves");
        dependencies(&dataset, &resolved, &[]).into_iter().collect()
    }

    fn day(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").expect("date")
    }

    fn change(start: &str, end: &str, channels: Option<&[&str]>, stores: Option<&[&str]>) -> BTreeSet<Tag> {
        let set = |v: Option<&[&str]>| v.map(|v| v.iter().map(|s| s.to_string()).collect());
        let change = Change {
            span: Some((day(start), day(end))),
            values: [
                ("channel_id".to_owned(), set(channels)),
                ("store_id".to_owned(), set(stores)),
            ]
            .into(),
        };
        match touched(&sales(), &change) {
            Touched::Tags(tags) => tags.into_iter().collect(),
            Touched::Everything => panic!("expected tags"),
        }
    }

    fn invalidates(entry: &BTreeSet<Tag>, change: &BTreeSet<Tag>) -> bool {
        !entry.is_disjoint(change)
    }

    const OCTOBER: &str = r#"{"start_date": "2026-10-01", "end_date": "2026-10-31"}"#;

    fn query(filters: serde_json::Value, range: Option<&str>) -> serde_json::Value {
        let mut q = serde_json::json!({"metrics": ["revenue"], "filters": filters});
        if let Some(range) = range {
            q["date_range"] = serde_json::from_str(range).expect("range");
        }
        q
    }

    #[test]
    fn a_change_today_leaves_closed_months_alone() {
        let today = change("2026-11-23", "2026-11-23", Some(&["2"]), Some(&["7"]));
        assert!(!invalidates(&deps(query(serde_json::json!({}), Some(OCTOBER))), &today));
        assert!(invalidates(&deps(query(serde_json::json!({}), None)), &today));
        let this_year = r#"{"start_date": "2025-01-01", "end_date": "2026-12-31"}"#;
        assert!(invalidates(
            &deps(query(serde_json::json!({}), Some(this_year))),
            &today
        ));
        let long_ago = r#"{"start_date": "2019-01-01", "end_date": "2020-12-31"}"#;
        assert!(!invalidates(
            &deps(query(serde_json::json!({}), Some(long_ago))),
            &today
        ));
    }

    #[test]
    fn tracked_values_keep_other_filters_cached() {
        let moved = change("2026-10-10", "2026-10-10", Some(&["2", "3"]), Some(&["7"]));
        for (filters, expected) in [
            (serde_json::json!({"channel_id": 2}), true),
            (serde_json::json!({"channel_id": {"in": [3, 4]}}), true),
            (serde_json::json!({"channel_id": 5}), false),
            (serde_json::json!({"store_id": 8}), false),
            (serde_json::json!({"store_id": 7, "channel_id": 5}), false),
            (serde_json::json!({"channel_id": {"ne": 5}}), true),
            (serde_json::json!({"state": "SP"}), true),
        ] {
            assert_eq!(
                invalidates(&deps(query(filters.clone(), Some(OCTOBER))), &moved),
                expected,
                "{filters}"
            );
        }
    }

    #[test]
    fn unknown_values_invalidate_every_restriction_on_that_dimension() {
        let bulk = change("2026-10-01", "2026-10-31", None, Some(&["7"]));
        assert!(invalidates(
            &deps(query(serde_json::json!({"channel_id": 5}), Some(OCTOBER))),
            &bulk
        ));
        assert!(!invalidates(
            &deps(query(serde_json::json!({"store_id": 8}), Some(OCTOBER))),
            &bulk
        ));
    }

    #[test]
    fn an_unknown_span_touches_everything() {
        assert_eq!(touched(&sales(), &Change::default()), Touched::Everything);
        let huge = Change {
            span: Some((day("1900-01-01"), day("2026-01-01"))),
            ..Change::default()
        };
        assert_eq!(touched(&sales(), &huge), Touched::Everything);
    }

    #[test]
    fn answers_use_month_year_or_all_buckets_by_length() {
        assert_eq!(answer_buckets(day("2026-10-05"), day("2026-11-02")).len(), 2);
        assert_eq!(
            answer_buckets(day("2024-06-01"), day("2026-10-31")),
            vec![Bucket::Year(2024), Bucket::Year(2025), Bucket::Year(2026)]
        );
        assert_eq!(answer_buckets(day("2000-01-01"), day("2026-10-31")), vec![Bucket::All]);
    }
}
