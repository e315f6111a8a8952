//! The model checked against the database: every dataset's table, time
//! column, joins, metrics and dimensions planned with `EXPLAIN` (nothing
//! runs), so a typo in the operator's SQL (`s.total_amout`, `table =
//! "sale"`) stops the server at start-up with the dataset, the field and
//! PostgreSQL's own words, instead of answering 500s later. The same check,
//! run on one dataset, names the field when a query meets a schema that
//! changed under a running server.

use sqlx::PgPool;

use crate::model::{Dataset, SemanticModel};

/// The first field of a dataset that PostgreSQL refuses.
#[derive(Debug, Clone, thiserror::Error)]
#[error("dataset `{dataset}`: {field}: the database refuses it: {message}")]
pub struct ModelMismatch {
    pub dataset: String,
    pub field: String,
    pub message: String,
}

/// SQLSTATEs that mean "the model's SQL does not fit this schema": undefined
/// column, table, function or object, wrong types, ambiguous or grouping
/// errors, syntax.
pub fn is_model_error(code: &str) -> bool {
    code.starts_with("42") || code == "0A000"
}

/// Why a check did not pass.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// The database refuses a field: the model or the schema must change.
    #[error(transparent)]
    Mismatch(#[from] ModelMismatch),
    /// The database could not be asked (down, or too slow): inconclusive.
    #[error("the model could not be checked against the database: {0}")]
    Unreachable(sqlx::Error),
}

/// Longest a check's planning may take (the query statement timeout can be
/// far shorter; planning a cold catalog is not a query).
const CHECK_TIMEOUT: &str = "SET LOCAL statement_timeout = '30s'";

/// Checks every dataset of `model`.
pub async fn check(pool: &PgPool, model: &SemanticModel) -> Result<(), CheckError> {
    for dataset in model.datasets.values() {
        check_dataset(pool, dataset).await?;
    }
    Ok(())
}

/// The fields of `dataset`, each as the statement that plans it.
fn probes(dataset: &Dataset) -> Vec<(String, String)> {
    let def = &dataset.def;
    let from = format!("{} {}", def.table, def.alias);
    let joined = |join: Option<&String>| -> String {
        match join.and_then(|j| def.joins.get(j)) {
            Some(j) => format!("{from} LEFT JOIN {} {} ON {}", j.table, j.alias, j.on),
            None => from.clone(),
        }
    };
    let mut probes = vec![
        ("table".to_owned(), format!("SELECT 1 FROM {from}")),
        (
            "time_column".to_owned(),
            format!("SELECT {}.{} FROM {from}", def.alias, def.time_column),
        ),
    ];
    for name in def.joins.keys() {
        probes.push((format!("joins.{name}"), format!("SELECT 1 FROM {}", joined(Some(name)))));
    }
    for (name, metric) in &def.metrics {
        probes.push((
            format!("metrics.{name}"),
            format!("SELECT {} FROM {}", metric.sql, joined(metric.join.as_ref())),
        ));
    }
    for (name, dimension) in &def.dimensions {
        probes.push((
            format!("dimensions.{name}"),
            format!(
                "SELECT {} FROM {} GROUP BY 1",
                dimension.sql,
                joined(dimension.join.as_ref())
            ),
        ));
    }
    probes
}

/// Checks one dataset; the error names the first field refused. Planned on
/// one connection, in a transaction that is rolled back.
pub async fn check_dataset(pool: &PgPool, dataset: &Dataset) -> Result<(), CheckError> {
    let mut tx = pool.begin().await.map_err(CheckError::Unreachable)?;
    sqlx::query(CHECK_TIMEOUT)
        .execute(&mut *tx)
        .await
        .map_err(CheckError::Unreachable)?;
    for (field, statement) in probes(dataset) {
        // The first refused probe ends the check (and the transaction).
        match sqlx::query(&format!("EXPLAIN {statement}")).execute(&mut *tx).await {
            Ok(_) => {}
            Err(sqlx::Error::Database(db)) if db.code().is_some_and(|c| is_model_error(&c)) => {
                return Err(ModelMismatch {
                    dataset: dataset.name.clone(),
                    field,
                    message: db.message().to_owned(),
                }
                .into());
            }
            Err(error) => return Err(CheckError::Unreachable(error)),
        }
    }
    Ok(())
}
