//! Whether the model still fits the database. A statement PostgreSQL
//! refuses as a model error (a column renamed under a running server) is
//! diagnosed once: the dataset is re-checked field by field, the answer
//! names the field, the log says it once, and `/health` reports the model
//! broken until a re-check passes.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::PgPool;

use crate::db::model_check::{self, CheckError, ModelMismatch};
use crate::model::SemanticModel;
use crate::sync::lock;

/// How often a broken model is checked again.
const RECHECK: Duration = Duration::from_secs(15);

pub struct ModelHealth {
    model: Arc<SemanticModel>,
    pool: PgPool,
    broken: Mutex<Option<ModelMismatch>>,
}

impl ModelHealth {
    pub fn new(model: Arc<SemanticModel>, pool: PgPool) -> Self {
        Self {
            model,
            pool,
            broken: Mutex::default(),
        }
    }

    /// `None` while the model fits the database; else what does not.
    pub fn broken(&self) -> Option<String> {
        lock(&self.broken).as_ref().map(ToString::to_string)
    }

    /// Names the field of `dataset` the database refuses, after a statement
    /// failed with a model error (`cause`); records it for `/health`.
    pub async fn diagnose(self: &Arc<Self>, dataset: &str, cause: &str) -> String {
        let Some(definition) = self.model.datasets.get(dataset) else {
            return cause.to_owned();
        };
        match model_check::check_dataset(&self.pool, definition).await {
            Ok(()) | Err(CheckError::Unreachable(_)) => cause.to_owned(),
            Err(CheckError::Mismatch(mismatch)) => {
                let first = lock(&self.broken).replace(mismatch.clone()).is_none();
                if first {
                    tracing::error!(error = %mismatch, "the model no longer matches the database; queries on this field fail until the model or the schema is fixed");
                    let this = Arc::clone(self);
                    tokio::spawn(async move { this.recheck_until_fixed().await });
                }
                mismatch.to_string()
            }
        }
    }

    async fn recheck_until_fixed(self: Arc<Self>) {
        loop {
            tokio::time::sleep(RECHECK).await;
            if model_check::check(&self.pool, &self.model).await.is_ok() {
                lock(&self.broken).take();
                tracing::info!("the model matches the database again");
                return;
            }
        }
    }
}
