//! Loading the model: the file read and parsed, every dataset validated
//! (`definition`), then its rollups (`rollup`), which build on the
//! validated dataset.

use std::collections::BTreeMap;
use std::path::Path;

use super::definition::{invalid, validate_dataset, ModelError, ModelFile, SemanticModel};
use super::rollup;

impl SemanticModel {
    pub fn load(path: &Path) -> Result<Self, ModelError> {
        let text = std::fs::read_to_string(path).map_err(|source| ModelError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_toml(&text).map_err(|error| match error {
            ModelError::Parse { source, .. } => ModelError::Parse {
                path: path.display().to_string(),
                source,
            },
            other => other,
        })
    }

    pub fn from_toml(text: &str) -> Result<Self, ModelError> {
        let file: ModelFile = toml::from_str(text).map_err(|source| ModelError::Parse {
            path: "<inline>".into(),
            source: Box::new(source),
        })?;
        Self::from_file(file)
    }

    pub fn from_file(file: ModelFile) -> Result<Self, ModelError> {
        if file.datasets.is_empty() {
            return Err(ModelError::Global("declares no datasets".into()));
        }
        let default_dataset = match (&file.default_dataset, file.datasets.len()) {
            (Some(name), _) if file.datasets.contains_key(name) => name.clone(),
            (Some(name), _) => {
                return Err(ModelError::Global(format!(
                    "default_dataset `{name}` is not a declared dataset"
                )))
            }
            (None, 1) => file.datasets.keys().next().cloned().unwrap_or_default(),
            (None, _) => {
                return Err(ModelError::Global(
                    "default_dataset is required when several datasets are declared".into(),
                ))
            }
        };
        let mut datasets = BTreeMap::new();
        for (name, def) in file.datasets {
            let mut dataset = validate_dataset(&name, def)?;
            dataset.rollups =
                rollup::validate(&name, &dataset.def).map_err(|(field, message)| invalid(&name, field, message))?;
            datasets.insert(name, dataset);
        }
        Ok(Self {
            default_dataset,
            datasets,
        })
    }
}
