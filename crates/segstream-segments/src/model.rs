//! A trained model in force (`segstream train` publishes it on the
//! segment-models topic): the customers' scores (P(alive), expected orders,
//! lifetime value), their cluster segment and micro-segment (lifecycle stage
//! × cluster), and the RFM boundaries from the population's quintiles.
//!
//! A buyer is in one cluster segment, `cluster_<id>` (the id is stable
//! across retrains: a matched cluster keeps it), and one micro-segment,
//! `<stage>:cluster_<id>`; both change as their features move (an event or a
//! timer) and when a new model comes into force (trigger `model_update`).

use std::collections::BTreeMap;
use std::sync::Arc;

use segstream_config::FeaturesConfig;
use segstream_features::Features;
use segstream_sql::table::NumericColumn;
use segstream_trainer::{Cluster, ScoreInputs, Scores, SegmentModel};

/// A model record a worker cannot use; the model in force stays.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// Not a segment model record.
    #[error("{0}")]
    Codec(#[from] segstream_trainer::ModelCodecError),
    /// The model reads a column this worker's feature table does not have.
    #[error(
        "model {version} clusters on `{column}`, which is not a numeric column of this worker's feature table: train it with the same [features] windows and trainer.cluster_features naming numeric columns"
    )]
    Column {
        /// The model's version.
        version: i64,
        /// The column.
        column: String,
    },
}

/// A model as the rules use it: the model, its record (what decisions and
/// checkpoints keep) and how its cluster features are read.
pub struct ModelRules {
    model: SegmentModel,
    record: Arc<[u8]>,
    columns: Vec<NumericColumn>,
}

impl ModelRules {
    /// Reads a model record (Confluent-framed Avro) and checks that this
    /// worker can score with it.
    pub fn from_record(record: &[u8], features: &FeaturesConfig) -> Result<Self, ModelError> {
        let model = SegmentModel::from_avro(record)?;
        let names = model.clusters.iter().flat_map(|c| c.features.iter().map(|f| f.name.as_str()));
        let columns = names
            .map(|name| {
                NumericColumn::named(features, name)
                    .ok_or_else(|| ModelError::Column { version: model.version, column: name.to_owned() })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { model, record: record.into(), columns })
    }

    /// The model.
    pub fn model(&self) -> &SegmentModel {
        &self.model
    }

    /// Its version.
    pub fn version(&self) -> i64 {
        self.model.version
    }

    /// The record it was read from.
    pub fn record(&self) -> &Arc<[u8]> {
        &self.record
    }

    /// A buyer's cluster (`None` without a net order): what each
    /// evaluation reads, without the scores.
    pub fn cluster(&self, f: &Features) -> Option<&Cluster> {
        if f.lifetime_orders == 0 {
            return None;
        }
        let values: Vec<Option<f64>> = self.columns.iter().map(|c| c.read(f)).collect();
        self.model.clusters.as_ref()?.assign(&values)
    }

    /// A customer's scores and cluster from their features.
    pub fn score(&self, f: &Features) -> Scores<'_> {
        let values: Vec<Option<f64>> = self.columns.iter().map(|c| c.read(f)).collect();
        let inputs = ScoreInputs {
            lifetime_orders: f.lifetime_orders,
            tenure_days: f.tenure_days,
            days_since_last_order: f.days_since_last_order,
            avg_order_value: f.avg_order_value,
            cluster_values: &values,
        };
        self.model.score(&inputs)
    }

    /// A customer's scores in the feature table's score column order
    /// (P(alive), expected orders, lifetime value).
    pub fn score_columns(&self, f: &Features) -> [Option<f64>; 3] {
        let s = self.score(f);
        [s.p_alive, s.expected_orders, s.clv]
    }

    /// The cluster's features and the customer's values of them, for a
    /// change record ("the values that decided").
    pub fn explain(&self, f: &Features, scores: &Scores<'_>) -> BTreeMap<String, f64> {
        let mut values = BTreeMap::new();
        let features = self.model.clusters.iter().flat_map(|c| c.features.iter());
        for (feature, column) in features.zip(&self.columns) {
            if let Some(v) = column.read(f) {
                values.insert(feature.name.clone(), round4(v));
            }
        }
        let scores =
            [("p_alive", scores.p_alive), ("expected_orders", scores.expected_orders), ("clv", scores.clv)];
        values.extend(scores.into_iter().filter_map(|(k, v)| Some((k.to_owned(), round4(v?)))));
        values
    }
}

fn round4(v: f64) -> f64 {
    (v * 10_000.0).round() / 10_000.0
}

/// The name of a cluster's segment.
pub fn cluster_segment(id: u32) -> String {
    format!("cluster_{id}")
}

impl std::fmt::Debug for ModelRules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelRules").field("version", &self.model.version).finish_non_exhaustive()
    }
}

impl PartialEq for ModelRules {
    fn eq(&self, other: &Self) -> bool {
        self.record == other.record
    }
}
