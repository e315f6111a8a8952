//! Typed metrics: a metric declared as an aggregate kind (`sum`, `count`,
//! `avg`, `ratio`) over a row expression and a row condition, instead of
//! free SQL. The server writes its SQL, and knows how it decomposes into
//! additive parts, so a rollup can store the parts per bucket and combine
//! them at query time into exactly the value the raw table gives.
//!
//! Exactness, kind by kind (PostgreSQL 15):
//! - `sum`: `coalesce(sum(x), 0)` = `coalesce(sum(sum(x) per group), 0)`.
//! - `count`: `count(*)` = `coalesce(sum(count(*) per group), 0)::int8`.
//! - `avg`: `avg(x)` is computed by PostgreSQL as `sum(x)::numeric /
//!   count(x)::numeric` (`numeric_avg`, `int8_avg`), so summing both parts
//!   and dividing the same way gives the same digits.
//! - `ratio`: a count over a count, both summed, divided as numerics.
//!
//! Free-SQL metrics (`sql = "..."`, e.g. `count(DISTINCT ...)`) never
//! decompose and are always answered from the raw table.

use serde::{Deserialize, Serialize};

/// How a typed metric aggregates its rows.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Aggregate {
    /// `coalesce(sum(of), 0)`.
    Sum,
    /// `count(*)`.
    Count,
    /// `avg(of)`.
    Avg,
    /// Rows matching `where` over rows matching `denominator_where` (all rows
    /// when absent); 0 when there are none.
    Ratio,
}

/// The typed fields of a metric, as declared.
#[derive(Debug, Clone, Copy)]
pub struct TypedMetric<'a> {
    pub aggregate: Aggregate,
    /// Row expression for `sum` and `avg`.
    pub of: Option<&'a str>,
    /// Row condition (SQL `FILTER (WHERE ...)`).
    pub condition: Option<&'a str>,
    /// `ratio` only: the rows counted below the line.
    pub denominator_condition: Option<&'a str>,
}

/// A metric split into additive parts: `parts` are aggregates over raw rows
/// whose per-bucket values may be summed; `combine` is the SQL over the sums
/// of the parts, with `{0}`, `{1}` standing for the stored part columns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decomposition {
    pub parts: Vec<String>,
    pub combine: String,
}

fn filtered(aggregate: &str, condition: Option<&str>) -> String {
    match condition {
        Some(condition) => format!("{aggregate} FILTER (WHERE {condition})"),
        None => aggregate.to_owned(),
    }
}

impl TypedMetric<'_> {
    /// Checks the fields the kind needs; the error names the field.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        let needs_of = matches!(self.aggregate, Aggregate::Sum | Aggregate::Avg);
        match (needs_of, self.of) {
            (true, None) => return Err(("of", "`sum` and `avg` need `of`, the row expression".into())),
            (false, Some(_)) => return Err(("of", "only `sum` and `avg` take `of`".into())),
            _ => {}
        }
        if self.denominator_condition.is_some() && self.aggregate != Aggregate::Ratio {
            return Err(("denominator_where", "only `ratio` takes `denominator_where`".into()));
        }
        if self.aggregate == Aggregate::Ratio && self.condition.is_none() {
            return Err(("where", "`ratio` needs `where`, the rows counted above the line".into()));
        }
        Ok(())
    }

    /// The aggregate over raw rows.
    pub fn sql(&self) -> String {
        let of = self.of.unwrap_or("*");
        match self.aggregate {
            Aggregate::Sum => format!("coalesce({}, 0)", filtered(&format!("sum({of})"), self.condition)),
            Aggregate::Count => filtered("count(*)", self.condition),
            Aggregate::Avg => filtered(&format!("avg({of})"), self.condition),
            Aggregate::Ratio => format!(
                "coalesce(({})::numeric / nullif({}, 0), 0)",
                filtered("count(*)", self.condition),
                filtered("count(*)", self.denominator_condition)
            ),
        }
    }

    /// The additive parts and how they combine.
    pub fn decomposition(&self) -> Decomposition {
        let of = self.of.unwrap_or("*");
        let (parts, combine) = match self.aggregate {
            Aggregate::Sum => (
                vec![filtered(&format!("sum({of})"), self.condition)],
                "coalesce(sum({0}), 0)",
            ),
            Aggregate::Count => (
                vec![filtered("count(*)", self.condition)],
                "coalesce(sum({0}), 0)::int8",
            ),
            Aggregate::Avg => (
                vec![
                    filtered(&format!("sum({of})"), self.condition),
                    filtered(&format!("count({of})"), self.condition),
                ],
                "sum({0})::numeric / nullif(sum({1}), 0)",
            ),
            Aggregate::Ratio => (
                vec![
                    filtered("count(*)", self.condition),
                    filtered("count(*)", self.denominator_condition),
                ],
                "coalesce(sum({0})::numeric / nullif(sum({1}), 0), 0)",
            ),
        };
        Decomposition {
            parts,
            combine: combine.to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metric(aggregate: Aggregate, of: Option<&'static str>, condition: Option<&'static str>) -> TypedMetric<'static> {
        TypedMetric {
            aggregate,
            of,
            condition,
            denominator_condition: None,
        }
    }

    #[test]
    fn typed_metrics_write_the_sql_the_demo_model_used_to_spell_out() {
        let completed = Some("s.status = 'COMPLETED'");
        assert_eq!(
            metric(Aggregate::Sum, Some("s.total_amount"), completed).sql(),
            "coalesce(sum(s.total_amount) FILTER (WHERE s.status = 'COMPLETED'), 0)"
        );
        assert_eq!(
            metric(Aggregate::Count, None, completed).sql(),
            "count(*) FILTER (WHERE s.status = 'COMPLETED')"
        );
        assert_eq!(
            metric(Aggregate::Avg, Some("s.total_amount"), completed).sql(),
            "avg(s.total_amount) FILTER (WHERE s.status = 'COMPLETED')"
        );
        assert_eq!(
            metric(Aggregate::Ratio, None, Some("s.status = 'CANCELLED'")).sql(),
            "coalesce((count(*) FILTER (WHERE s.status = 'CANCELLED'))::numeric / nullif(count(*), 0), 0)"
        );
    }

    #[test]
    fn averages_decompose_into_a_sum_and_a_count_of_the_same_rows() {
        let d = metric(Aggregate::Avg, Some("s.delivery_seconds"), None).decomposition();
        assert_eq!(d.parts, ["sum(s.delivery_seconds)", "count(s.delivery_seconds)"]);
        assert_eq!(d.combine, "sum({0})::numeric / nullif(sum({1}), 0)");
    }

    #[test]
    fn each_kind_names_the_field_it_misses() {
        assert_eq!(metric(Aggregate::Sum, None, None).check().unwrap_err().0, "of");
        assert_eq!(metric(Aggregate::Count, Some("x"), None).check().unwrap_err().0, "of");
        assert_eq!(metric(Aggregate::Ratio, None, None).check().unwrap_err().0, "where");
        let mut count = metric(Aggregate::Count, None, None);
        count.denominator_condition = Some("true");
        assert_eq!(count.check().unwrap_err().0, "denominator_where");
        assert!(metric(Aggregate::Avg, Some("x"), Some("y")).check().is_ok());
    }
}
