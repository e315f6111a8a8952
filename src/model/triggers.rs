//! Change capture, the pure part: the DDL of the statement-level triggers
//! that report data changes with `pg_notify`, and the reading of what they
//! send. One owner of the payload format, on both of its ends.
//!
//! Each table a dataset reads gets a trigger function. For a dataset's fact
//! table it reports, once per statement, the span of local days the changed
//! rows (old and new) cover for every dataset on that table, and the distinct
//! values of the tracked columns (up to [`MAX_REPORTED_VALUES`] each, else
//! unknown). A joined table reports only that it changed. A bulk load of a
//! million rows is one statement and so one notification.
//!
//! Payload: `{"table": "sales", "at": <epoch ms>, "spans": {"sales":
//! ["2026-11-23", "2026-11-23"]}, "values": {"channel_id": ["2"], "store_id":
//! null}}`; `spans` and `values` are absent for joined tables and TRUNCATE.

use std::collections::{BTreeMap, BTreeSet};

use chrono::NaiveDate;
use serde::Deserialize;

use super::definition::SemanticModel;
use super::freshness::Change;
use super::rollup::{CHANGE_LOG, CHANGE_LOG_DDL, MARK_STALE};

/// More distinct values than this in one statement are reported as unknown.
pub const MAX_REPORTED_VALUES: usize = 50;
/// `pg_notify` refuses payloads of 8000 bytes or more; past this the
/// function sends the table alone (the whole of its datasets is invalidated).
const MAX_PAYLOAD_BYTES: usize = 7_900;

/// The tables of the model and what each is to which dataset.
#[derive(Debug, Default)]
struct Table {
    /// Datasets whose fact table this is.
    fact_of: BTreeSet<String>,
    /// Tracked columns over those datasets.
    columns: BTreeSet<String>,
}

fn tables(model: &SemanticModel) -> BTreeMap<String, Table> {
    let mut tables: BTreeMap<String, Table> = BTreeMap::new();
    for (name, dataset) in &model.datasets {
        let table = tables.entry(dataset.def.table.clone()).or_default();
        table.fact_of.insert(name.clone());
        table.columns.extend(dataset.tracked.values().cloned());
        for join in dataset.def.joins.values() {
            tables.entry(join.table.clone()).or_default();
        }
    }
    tables
}

/// A function name per table: `analytics_capture_` + the table with `.` as `__`.
fn function_name(table: &str) -> String {
    format!("analytics_capture_{}", table.replace('.', "__"))
}

const TRIGGERS: [&str; 5] = [
    "analytics_capture_insert",
    "analytics_capture_update",
    "analytics_capture_delete",
    "analytics_capture_truncate",
    // Joined tables: one trigger for every row-changing statement.
    "analytics_capture_change",
];

/// The rows a fact table's trigger appends to the rollup change log (see
/// `rollup::CHANGE_LOG`) for `rows` (a transition table, or empty for a
/// TRUNCATE: every day), one per rollup of each dataset on the table.
fn rollup_log(model: &SemanticModel, datasets: &BTreeSet<String>, rows: &str) -> String {
    let mut sql = String::new();
    for name in datasets {
        let dataset = &model.datasets[name];
        if dataset.rollups.is_empty() {
            continue;
        }
        let ids: Vec<String> = dataset.rollups.iter().map(|r| format!("'{}'", r.id)).collect();
        let ids = format!("unnest(ARRAY[{}]::text[])", ids.join(", "));
        if rows.is_empty() {
            sql.push_str(&format!("\n    INSERT INTO {CHANGE_LOG} (rollup) SELECT {ids};"));
        } else {
            let def = &dataset.def;
            let local = format!("(r.{} AT TIME ZONE '{}')::date", def.time_column, def.timezone);
            sql.push_str(&format!(
                "\n    INSERT INTO {CHANGE_LOG} (rollup, first_day, last_day) \
                 SELECT {ids}, d.first_day, d.last_day FROM \
                 (SELECT min({local}) AS first_day, max({local}) AS last_day FROM {rows} r HAVING count(*) > 0) d;"
            ));
        }
    }
    sql
}

/// The statements that (re)install capture on every table of the model,
/// notifying on `channel`. Idempotent: `CREATE OR REPLACE` throughout.
/// Every name in them is a validated identifier from the model. With
/// `rollups` on and rollups declared, the triggers also append to the rollup
/// change log (created here, first); with them off, nothing would ever read
/// the log, so nothing writes it.
pub fn install_statements(model: &SemanticModel, channel: &str, rollups: bool) -> Vec<String> {
    let mut statements = Vec::new();
    let rollups = rollups && model.datasets.values().any(|d| !d.rollups.is_empty());
    if rollups {
        statements.extend(CHANGE_LOG_DDL.map(str::to_owned));
    } else {
        statements.push(MARK_STALE.to_owned());
    }
    for (table, info) in tables(model) {
        let function = function_name(&table);
        let bare = format!(
            "json_build_object('table', '{table}', 'at', floor(extract(epoch FROM clock_timestamp()) * 1000))::text"
        );
        let body = if info.fact_of.is_empty() {
            format!("payload := {bare};")
        } else {
            let spans: Vec<String> = info
                .fact_of
                .iter()
                .map(|name| {
                    let def = &model.datasets[name].def;
                    let local = format!("(r.{} AT TIME ZONE '{}')::date", def.time_column, def.timezone);
                    format!("'{name}', json_build_array(min({local}), max({local}))")
                })
                .collect();
            let values: Vec<String> = info
                .columns
                .iter()
                .map(|c| {
                    format!(
                        "'{c}', CASE WHEN count(DISTINCT r.{c}) <= {MAX_REPORTED_VALUES} \
                         THEN json_agg(DISTINCT r.{c}::text) END"
                    )
                })
                .collect();
            let report = format!(
                "SELECT json_build_object('table', '{table}', 'at', floor(extract(epoch FROM clock_timestamp()) * 1000), \
                 'spans', json_build_object({}), 'values', json_build_object({}))::text INTO payload",
                spans.join(", "),
                values.join(", ")
            );
            let log = |rows: &str| {
                if rollups {
                    rollup_log(model, &info.fact_of, rows)
                } else {
                    String::new()
                }
            };
            let both = "(SELECT * FROM old_rows UNION ALL SELECT * FROM new_rows)";
            format!(
                "IF TG_OP = 'TRUNCATE' THEN
    payload := {bare};{truncated}
  ELSIF TG_OP = 'INSERT' THEN
    {report} FROM new_rows r HAVING count(*) > 0;{inserted}
  ELSIF TG_OP = 'DELETE' THEN
    {report} FROM old_rows r HAVING count(*) > 0;{deleted}
  ELSE
    {report} FROM {both} r HAVING count(*) > 0;{updated}
  END IF;
  IF octet_length(payload) > {MAX_PAYLOAD_BYTES} THEN
    payload := {bare};
  END IF;",
                truncated = log(""),
                inserted = log("new_rows"),
                deleted = log("old_rows"),
                updated = log(both),
            )
        };
        statements.push(format!(
            "CREATE OR REPLACE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS $capture$
DECLARE
  payload text;
BEGIN
  {body}
  IF payload IS NOT NULL THEN
    PERFORM pg_notify('{channel}', payload);
  END IF;
  RETURN NULL;
END
$capture$"
        ));
        let execute = format!("FOR EACH STATEMENT EXECUTE FUNCTION {function}()");
        if info.fact_of.is_empty() {
            statements.push(format!(
                "CREATE OR REPLACE TRIGGER {} AFTER INSERT OR UPDATE OR DELETE ON {table} {execute}",
                TRIGGERS[4]
            ));
        } else {
            statements.push(format!(
                "CREATE OR REPLACE TRIGGER {} AFTER INSERT ON {table} REFERENCING NEW TABLE AS new_rows {execute}",
                TRIGGERS[0]
            ));
            statements.push(format!(
                "CREATE OR REPLACE TRIGGER {} AFTER UPDATE ON {table} \
                 REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows {execute}",
                TRIGGERS[1]
            ));
            statements.push(format!(
                "CREATE OR REPLACE TRIGGER {} AFTER DELETE ON {table} REFERENCING OLD TABLE AS old_rows {execute}",
                TRIGGERS[2]
            ));
        }
        statements.push(format!(
            "CREATE OR REPLACE TRIGGER {} AFTER TRUNCATE ON {table} {execute}",
            TRIGGERS[3]
        ));
    }
    statements
}

/// The statements that remove capture from every table of the model.
pub fn drop_statements(model: &SemanticModel) -> Vec<String> {
    let mut statements = vec![MARK_STALE.to_owned()];
    for table in tables(model).keys() {
        for trigger in TRIGGERS {
            statements.push(format!("DROP TRIGGER IF EXISTS {trigger} ON {table}"));
        }
        statements.push(format!("DROP FUNCTION IF EXISTS {}()", function_name(table)));
    }
    statements
}

#[derive(Deserialize)]
struct Payload {
    table: String,
    /// When the trigger ran (epoch ms), for the notification-lag metric.
    at: Option<f64>,
    spans: Option<BTreeMap<String, [Option<NaiveDate>; 2]>>,
    values: Option<BTreeMap<String, Option<Vec<String>>>>,
}

/// One notification, read: which datasets changed and how.
#[derive(Debug, Clone, PartialEq)]
pub struct Notification {
    pub table: String,
    /// When the change's trigger ran, epoch ms.
    pub at_ms: Option<f64>,
    /// Dataset -> its change; datasets that do not read `table` are absent.
    pub changes: BTreeMap<String, Change>,
}

/// Reads a payload sent by the installed functions. A dataset whose span or
/// values are missing gets an unknown (whole-dataset) change: reading never
/// errs on the side of keeping an answer.
pub fn read_notification(model: &SemanticModel, payload: &str) -> Result<Notification, serde_json::Error> {
    let payload: Payload = serde_json::from_str(payload)?;
    let mut changes = BTreeMap::new();
    for (name, dataset) in &model.datasets {
        let joined = dataset.def.joins.values().any(|j| j.table == payload.table);
        if dataset.def.table == payload.table {
            let span = payload
                .spans
                .as_ref()
                .and_then(|spans| spans.get(name))
                .and_then(|[min, max]| Some(((*min)?, (*max)?)));
            let values = dataset
                .tracked
                .iter()
                .map(|(dimension, column)| {
                    let reported = payload
                        .values
                        .as_ref()
                        .and_then(|values| values.get(column).cloned().flatten())
                        .map(|list| list.into_iter().collect::<BTreeSet<_>>());
                    (dimension.clone(), reported)
                })
                .collect();
            // A change to a joined table as well as the fact table cannot be
            // narrowed: the whole dataset then.
            let change = if joined {
                Change::default()
            } else {
                Change { span, values }
            };
            changes.insert(name.clone(), change);
        } else if joined {
            changes.insert(name.clone(), Change::default());
        }
    }
    Ok(Notification {
        table: payload.table,
        at_ms: payload.at,
        changes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn demo() -> SemanticModel {
        let text =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/model.toml")).expect("demo model");
        SemanticModel::from_toml(&text).expect("valid")
    }

    #[test]
    fn every_table_a_dataset_reads_gets_capture() {
        let statements = install_statements(&demo(), "analytics_changes", true).join("\n");
        assert!(statements.contains("INSERT INTO analytics_rollup_changes (rollup, first_day, last_day)"));
        let without = install_statements(&demo(), "analytics_changes", false).join("\n");
        assert!(!without.contains("analytics_rollup_changes"));
        assert!(
            without.contains("SET state = 'stale'"),
            "log writes stop: rollups must be rebuilt"
        );
        for table in ["sales", "channels", "stores"] {
            assert!(
                statements.contains(&format!("FUNCTION analytics_capture_{table}()")),
                "{table}"
            );
            assert!(statements.contains(&format!("AFTER TRUNCATE ON {table} ")), "{table}");
        }
        assert!(statements.contains("REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows"));
        assert!(statements.contains("(r.created_at AT TIME ZONE 'America/Sao_Paulo')::date"));
        assert!(statements.contains("'channel_id', CASE WHEN count(DISTINCT r.channel_id) <= 50"));
        assert!(statements.contains("pg_notify('analytics_changes', payload)"));
        assert_eq!(drop_statements(&demo()).len(), 1 + 3 * 6);
    }

    #[test]
    fn fact_table_payloads_become_narrow_changes() {
        let payload = r#"{"table": "sales", "at": 1700000000000,
            "spans": {"sales": ["2026-11-23", "2026-11-24"]},
            "values": {"channel_id": ["2", "3"], "store_id": null}}"#;
        let read = read_notification(&demo(), payload).expect("reads");
        let change = &read.changes["sales"];
        assert_eq!(
            change.span,
            Some((
                NaiveDate::from_ymd_opt(2026, 11, 23).expect("day"),
                NaiveDate::from_ymd_opt(2026, 11, 24).expect("day")
            ))
        );
        assert_eq!(
            change.values["channel_id"],
            Some(["2".to_owned(), "3".to_owned()].into())
        );
        assert_eq!(change.values["store_id"], None, "too many values is unknown");
        assert_eq!(read.at_ms, Some(1.7e12));
    }

    #[test]
    fn joined_tables_truncates_and_odd_payloads_touch_the_whole_dataset() {
        for payload in [
            r#"{"table": "stores", "at": 1}"#,
            r#"{"table": "sales", "at": 1}"#,
            r#"{"table": "sales", "spans": {"sales": [null, null]}}"#,
        ] {
            let read = read_notification(&demo(), payload).expect("reads");
            assert_eq!(read.changes["sales"].span, None, "{payload}");
        }
        let unrelated = read_notification(&demo(), r#"{"table": "products"}"#).expect("reads");
        assert!(unrelated.changes.is_empty());
        assert!(read_notification(&demo(), "not json").is_err());
    }
}
