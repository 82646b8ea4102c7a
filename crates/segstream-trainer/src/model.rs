//! The published model (`schemas/segment-model.avsc`): what `segstream
//! train` fits and the workers score customers with. It carries parameters,
//! not customers: a worker computes each customer's figures itself, per event.

use apache_avro::Schema;
use segstream_events::schema::{
    SEGMENT_MODEL_AVSC, SEGMENT_MODEL_SCHEMA_ID, SEGMENT_MODEL_V1_AVSC, SEGMENT_MODEL_V1_SCHEMA_ID,
};
use segstream_events::wire;
use serde::{Deserialize, Serialize};

use crate::bgnbd::{BgNbd, Summary};
use crate::clusters::{Cluster, Clustering};
use crate::gamma_gamma::{GammaGamma, Spend};

/// See the module documentation; the fields are the schema's.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SegmentModel {
    /// 1, 2, ... per group.
    pub version: i64,
    /// The consumer group it is for.
    pub group_id: String,
    /// Wall-clock ms the fit ended.
    pub trained_at: i64,
    /// Latest event time (ms) of the features fitted on.
    pub data_as_of: i64,
    /// Where the features came from.
    pub source: String,
    /// Customers read.
    pub customers: i64,
    /// Customers with a net order.
    pub buyers: i64,
    /// Buyers with a repeat order.
    pub repeat_buyers: i64,
    /// Duration of the fit, ms.
    pub training_ms: i64,
    /// The purchase model, in days.
    pub purchase: Option<BgNbd>,
    /// The spend model.
    pub spend: Option<GammaGamma>,
    /// Horizon of expected purchases, days.
    pub expected_horizon_days: f64,
    /// Horizon of the lifetime value, days.
    pub clv_horizon_days: f64,
    /// RFM score boundaries from the population's quintiles.
    pub rfm: Option<RfmQuintiles>,
    /// The clusters.
    pub clusters: Option<Clustering>,
}

/// The buyers' quintiles as RFM score boundaries (ascending, strictly).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RfmQuintiles {
    /// Window of the frequency and monetary values, days.
    pub window_days: i32,
    /// Upper bounds of days since the last order for R = 5, 4, 3, 2.
    pub recency_max_days: Vec<f64>,
    /// Lower bounds of orders in the window for F = 2, 3, 4, 5.
    pub frequency_min: Vec<f64>,
    /// Lower bounds of revenue in the window for M = 2, 3, 4, 5.
    pub monetary_min: Vec<f64>,
}

/// A model record that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum ModelCodecError {
    /// Not our framing, or another schema id.
    #[error("not a segment model record: {0}")]
    Framing(String),
    /// The Avro body does not match the schema.
    #[error("segment model record: {0}")]
    Avro(String),
}

/// What the models say about one customer.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Scores<'m> {
    /// Probability the customer is still a customer (buyers only).
    pub p_alive: Option<f64>,
    /// Expected purchases in the model's expected horizon.
    pub expected_orders: Option<f64>,
    /// Expected revenue in the model's lifetime-value horizon.
    pub clv: Option<f64>,
    /// Their cluster (buyers only).
    pub cluster: Option<&'m Cluster>,
}

/// The features a customer is scored on.
#[derive(Clone, Copy, Debug)]
pub struct ScoreInputs<'a> {
    /// Net orders ever.
    pub lifetime_orders: u32,
    /// Days since the first order.
    pub tenure_days: Option<f64>,
    /// Days since the latest net order.
    pub days_since_last_order: Option<f64>,
    /// Average net order value.
    pub avg_order_value: Option<f64>,
    /// The clustering features' values, in the model's order.
    pub cluster_values: &'a [Option<f64>],
}

impl ScoreInputs<'_> {
    /// The BG/NBD summary of a buyer: repeat orders, days from the first to
    /// the last order, days since the first; `None` without a net order.
    /// Training and scoring both read customers through this.
    pub fn purchases(&self) -> Option<Summary> {
        if self.lifetime_orders == 0 {
            return None;
        }
        let age = self.tenure_days?.max(0.0);
        let recency = (age - self.days_since_last_order?).clamp(0.0, age);
        let frequency = f64::from(self.lifetime_orders - 1);
        Some(Summary { frequency, recency: if frequency > 0.0 { recency } else { 0.0 }, age })
    }

    /// The Gamma-Gamma input of a buyer: their average over all their net
    /// orders, so the count is their orders.
    pub fn spend(&self) -> Option<Spend> {
        let summary = self.purchases()?;
        Some(Spend { frequency: summary.frequency + 1.0, average: self.avg_order_value? })
    }
}

impl SegmentModel {
    /// The schema, parsed once.
    pub fn schema() -> &'static Schema {
        static SCHEMA: std::sync::OnceLock<Schema> = std::sync::OnceLock::new();
        SCHEMA.get_or_init(|| parse(SEGMENT_MODEL_AVSC, "segment-model.avsc"))
    }

    /// The layout of schema id 9 (before the Gaussian mixture), parsed once.
    fn schema_v1() -> &'static Schema {
        static SCHEMA: std::sync::OnceLock<Schema> = std::sync::OnceLock::new();
        SCHEMA.get_or_init(|| parse(SEGMENT_MODEL_V1_AVSC, "segment-model-v1.avsc"))
    }

    /// Confluent-framed Avro, as published.
    pub fn to_avro(&self) -> Result<Vec<u8>, ModelCodecError> {
        let value = apache_avro::to_value(self).map_err(|e| ModelCodecError::Avro(e.to_string()))?;
        let value = value.resolve(Self::schema()).map_err(|e| ModelCodecError::Avro(e.to_string()))?;
        let body = apache_avro::writer::datum::GenericDatumWriter::builder(Self::schema())
            .build()
            .and_then(|w| w.write_value_to_vec(value))
            .map_err(|e| ModelCodecError::Avro(e.to_string()))?;
        Ok(wire::frame(SEGMENT_MODEL_SCHEMA_ID, &body))
    }

    /// Reads a record written by [`SegmentModel::to_avro`].
    pub fn from_avro(payload: &[u8]) -> Result<Self, ModelCodecError> {
        let (id, mut body) = wire::split(payload).map_err(|e| ModelCodecError::Framing(e.to_string()))?;
        // An older model reads through the current schema (k-means, no mixture).
        let (writer, reader) = match id {
            SEGMENT_MODEL_SCHEMA_ID => (Self::schema(), None),
            SEGMENT_MODEL_V1_SCHEMA_ID => (Self::schema_v1(), Some(Self::schema())),
            _ => {
                return Err(ModelCodecError::Framing(format!(
                    "schema id {id}, expected {SEGMENT_MODEL_SCHEMA_ID} (or {SEGMENT_MODEL_V1_SCHEMA_ID})"
                )));
            }
        };
        let value = apache_avro::reader::datum::GenericDatumReader::builder(writer)
            .maybe_reader_schema(reader)
            .build()
            .and_then(|r| r.read_value(&mut body))
            .map_err(|e| ModelCodecError::Avro(e.to_string()))?;
        apache_avro::from_value(&value).map_err(|e| ModelCodecError::Avro(e.to_string()))
    }

    /// The customer's figures under this model.
    pub fn score(&self, inputs: &ScoreInputs<'_>) -> Scores<'_> {
        let Some(history) = inputs.purchases() else {
            return Scores::default();
        };
        let expected = self.purchase.and_then(|p| p.expected_purchases(&history, self.expected_horizon_days));
        let clv = match (self.purchase, self.spend, inputs.spend()) {
            (Some(p), Some(s), Some(spend)) => s.lifetime_value(&p, &history, &spend, self.clv_horizon_days),
            _ => None,
        };
        Scores {
            p_alive: self.purchase.map(|p| p.p_alive(&history)),
            expected_orders: expected,
            clv,
            cluster: self.clusters.as_ref().and_then(|c| c.assign(inputs.cluster_values)),
        }
    }
}

fn parse(text: &str, file: &str) -> Schema {
    // Our own files, checked by the unit tests: failing here is a build defect.
    Schema::parse_str(text).unwrap_or_else(|e| panic!("embedded schema {file} does not parse: {e}"))
}
