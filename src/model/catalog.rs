//! What a client may ask for, as `GET /analytics/meta` lists it: every
//! dataset with its metrics and dimensions (names, aliases, types,
//! descriptions, time grains) and the rollups that may answer. Built once
//! from the validated model; no SQL text leaves the server through it.

use serde::Serialize;
use utoipa::ToSchema;

use super::aggregate::Aggregate;
use super::definition::{SemanticModel, ValueType};
use super::rollup_def::Granularity;

#[derive(Debug, Serialize, ToSchema)]
pub struct Catalog {
    pub default_dataset: String,
    pub datasets: Vec<DatasetInfo>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DatasetInfo {
    pub name: String,
    /// The IANA zone in which date ranges and time dimensions are read.
    pub timezone: String,
    /// Largest `limit` a request may ask for.
    pub max_limit: u64,
    pub metrics: Vec<MetricInfo>,
    pub dimensions: Vec<DimensionInfo>,
    /// Rollups that may answer covered queries (`metadata.source`).
    pub rollups: Vec<RollupInfo>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MetricInfo {
    pub name: String,
    pub aliases: Vec<String>,
    pub description: String,
    /// `sum`, `count`, `avg`, `ratio`; absent for free-SQL metrics (which
    /// rollups never serve).
    #[schema(value_type = Option<String>)]
    pub aggregate: Option<Aggregate>,
    /// Decimal places of the value, when rounded.
    pub decimals: Option<u32>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DimensionInfo {
    pub name: String,
    pub aliases: Vec<String>,
    /// `integer`, `number`, `text` or `date`: what filter values must be.
    #[serde(rename = "type")]
    #[schema(value_type = String)]
    pub value_type: ValueType,
    pub description: String,
    /// For time dimensions: the finest unit the value depends on.
    #[schema(value_type = Option<String>)]
    pub grain: Option<Granularity>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RollupInfo {
    pub name: String,
    #[schema(value_type = String)]
    pub granularity: Granularity,
    pub dimensions: Vec<String>,
    pub metrics: Vec<String>,
}

impl SemanticModel {
    /// The model as clients may read it.
    pub fn catalog(&self) -> Catalog {
        Catalog {
            default_dataset: self.default_dataset.clone(),
            datasets: self
                .datasets
                .values()
                .map(|dataset| {
                    let def = &dataset.def;
                    DatasetInfo {
                        name: dataset.name.clone(),
                        timezone: def.timezone.clone(),
                        max_limit: def.max_limit,
                        metrics: def
                            .metrics
                            .iter()
                            .map(|(name, m)| MetricInfo {
                                name: name.clone(),
                                aliases: m.aliases.clone(),
                                description: m.description.clone(),
                                aggregate: m.aggregate,
                                decimals: m.decimals,
                            })
                            .collect(),
                        dimensions: def
                            .dimensions
                            .iter()
                            .map(|(name, d)| DimensionInfo {
                                name: name.clone(),
                                aliases: d.aliases.clone(),
                                value_type: d.value_type,
                                description: d.description.clone(),
                                grain: d.grain,
                            })
                            .collect(),
                        rollups: def
                            .rollups
                            .iter()
                            .map(|(name, r)| RollupInfo {
                                name: name.clone(),
                                granularity: r.granularity,
                                dimensions: r.dimensions.clone(),
                                metrics: r.metrics.clone(),
                            })
                            .collect(),
                    }
                })
                .collect(),
        }
    }
}
