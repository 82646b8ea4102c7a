//! One training run: the population's feature table in, a [`SegmentModel`]
//! out, or why none may be published.

use std::time::Instant;

use arrow_array::{Array, Float64Array, RecordBatch, StringArray, TimestampMillisecondArray, UInt32Array};
use arrow_schema::DataType;
use ndarray::Array2;
use segstream_config::TrainerConfig;

use crate::bgnbd::{BgNbd, FitError, Summary};
use crate::clusters::{Algorithm, ClusterError, ClusterSettings, Clustering};
use crate::gamma_gamma::{GammaGamma, Spend, SpendFitError};
use crate::model::{RfmQuintiles, ScoreInputs, SegmentModel};

/// The buyers' features the models are fitted on (customers without a net
/// order are counted, not kept).
#[derive(Clone, Debug, Default)]
pub struct Population {
    /// Customers read.
    pub customers: usize,
    /// Latest `as_of` among them, ms.
    pub data_as_of: i64,
    /// Per buyer: BG/NBD history, in whole days.
    pub purchases: Vec<Summary>,
    /// Per buyer: average net order value.
    pub average_order: Vec<Option<f64>>,
    /// Per buyer: days since the last net order, orders and revenue in the RFM window.
    pub rfm: Vec<[f64; 3]>,
    /// The clustering features' names.
    pub cluster_features: Vec<String>,
    /// Per buyer, per clustering feature: the value (NaN when missing).
    pub cluster_values: Vec<f64>,
    /// Per buyer: the customer id (buyers are kept in id order, so the
    /// same population gives the same model whatever the order it is read in).
    pub customer_ids: Vec<String>,
}

/// Why a run published nothing; the previous model stays.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// The feature table lacks a column the run needs.
    #[error("the feature table has no numeric column {column:?} ({hint})")]
    Column {
        /// The column.
        column: String,
        /// What to do.
        hint: String,
    },
    /// Too few buyers for models worth publishing.
    #[error(
        "{buyers} buyers (customers with a net order) among {customers} customers; trainer.min_buyers is {min}"
    )]
    TooFew {
        /// Buyers found.
        buyers: usize,
        /// Customers read.
        customers: usize,
        /// The configured minimum.
        min: usize,
    },
    /// The purchase model failed.
    #[error("purchase model (BG/NBD): {0}")]
    Purchase(#[from] FitError),
    /// The spend model failed.
    #[error("spend model (Gamma-Gamma): {0}")]
    Spend(#[from] SpendFitError),
    /// The clusters failed.
    #[error("clusters: {0}")]
    Clusters(#[from] ClusterError),
    /// A fitted figure is not a number.
    #[error("the fit gave a value that is not a number: {0}")]
    NotANumber(String),
}

/// A numeric column of a batch as f64 (UInt32 or Float64), nulls as None.
fn numeric(batch: &RecordBatch, column: &str) -> Result<Vec<Option<f64>>, TrainError> {
    let missing = |hint: &str| TrainError::Column { column: column.to_owned(), hint: hint.to_owned() };
    let array = batch.column_by_name(column).ok_or_else(|| {
        missing(
            "a trainer setting names a column the feature table lacks: see `segstream sql` for the columns",
        )
    })?;
    let values = match array.data_type() {
        DataType::UInt32 | DataType::Float64 | DataType::Int64 | DataType::Int32 => {
            arrow_cast::cast(array, &DataType::Float64).map_err(|e| missing(&e.to_string()))?
        }
        other => return Err(missing(&format!("it is {other}, not a number"))),
    };
    let values = values.as_any().downcast_ref::<Float64Array>().ok_or_else(|| missing("not a number"))?;
    Ok(values.iter().map(|v| v.filter(|v| v.is_finite())).collect())
}

impl Population {
    /// The buyers of feature-table `batches` (the live worker's table, or a
    /// snapshot's), with the RFM values of `rfm_window` days.
    pub fn from_batches(
        batches: &[RecordBatch],
        config: &TrainerConfig,
        rfm_window: u32,
    ) -> Result<Self, TrainError> {
        let mut population = Self { cluster_features: config.cluster_features.clone(), ..Self::default() };
        for batch in batches {
            population.add(batch, rfm_window)?;
        }
        Ok(population.in_id_order())
    }

    /// The same buyers sorted by customer id.
    fn in_id_order(self) -> Self {
        let mut order: Vec<usize> = (0..self.customer_ids.len()).collect();
        order.sort_by(|a, b| self.customer_ids[*a].cmp(&self.customer_ids[*b]));
        let width = self.cluster_features.len();
        Self {
            purchases: order.iter().map(|i| self.purchases[*i]).collect(),
            average_order: order.iter().map(|i| self.average_order[*i]).collect(),
            rfm: order.iter().map(|i| self.rfm[*i]).collect(),
            cluster_values: order
                .iter()
                .flat_map(|i| self.cluster_values[i * width..(i + 1) * width].iter().copied())
                .collect(),
            customer_ids: order.iter().map(|i| self.customer_ids[*i].clone()).collect(),
            ..self
        }
    }

    fn add(&mut self, batch: &RecordBatch, rfm_window: u32) -> Result<(), TrainError> {
        let ids = batch
            .column_by_name("customer_id")
            .and_then(|a| a.as_any().downcast_ref::<StringArray>())
            .ok_or_else(|| TrainError::Column {
                column: "customer_id".into(),
                hint: "not a feature table".into(),
            })?;
        let orders = batch
            .column_by_name("lifetime_orders")
            .and_then(|a| a.as_any().downcast_ref::<UInt32Array>())
            .ok_or_else(|| TrainError::Column {
                column: "lifetime_orders".into(),
                hint: "not a feature table".into(),
            })?;
        let tenure = numeric(batch, "tenure_days")?;
        let recency = numeric(batch, "days_since_last_order")?;
        let average = numeric(batch, "avg_order_value")?;
        let window_orders = numeric(batch, &format!("orders_{rfm_window}d"))?;
        let window_revenue = numeric(batch, &format!("revenue_{rfm_window}d"))?;
        let clusters =
            self.cluster_features.iter().map(|c| numeric(batch, c)).collect::<Result<Vec<_>, _>>()?;
        if let Some(as_of) =
            batch.column_by_name("as_of").and_then(|a| a.as_any().downcast_ref::<TimestampMillisecondArray>())
        {
            self.data_as_of = as_of.iter().flatten().fold(self.data_as_of, i64::max);
        }
        self.customers += batch.num_rows();
        for row in 0..batch.num_rows() {
            let inputs = ScoreInputs {
                lifetime_orders: if orders.is_null(row) { 0 } else { orders.value(row) },
                // Whole days, as summaries usually are: equal histories
                // collapse, which is what makes the fit fast.
                tenure_days: tenure[row].map(f64::round),
                days_since_last_order: recency[row].map(f64::round),
                avg_order_value: average[row],
                cluster_values: &[],
            };
            let Some(summary) = inputs.purchases() else { continue };
            self.customer_ids.push(ids.value(row).to_owned());
            self.purchases.push(summary);
            self.average_order.push(inputs.avg_order_value);
            self.rfm.push([
                recency[row].unwrap_or_default(),
                window_orders[row].unwrap_or_default(),
                window_revenue[row].unwrap_or_default(),
            ]);
            self.cluster_values.extend(clusters.iter().map(|c| c[row].unwrap_or(f64::NAN)));
        }
        Ok(())
    }

    /// Buyers in the population.
    pub fn buyers(&self) -> usize {
        self.purchases.len()
    }
}

/// Fits every model on `population`. `previous` is the group's latest
/// published model: its clusters' ids are kept and its version is raised.
/// `now_ms` is the wall-clock time recorded as `trained_at`.
pub fn train(
    population: &Population,
    config: &TrainerConfig,
    rfm_window: u32,
    previous: Option<&SegmentModel>,
    group_id: &str,
    source: &str,
    now_ms: i64,
) -> Result<SegmentModel, TrainError> {
    let started = Instant::now();
    let buyers = population.buyers();
    if buyers < config.min_buyers.max(1) {
        return Err(TrainError::TooFew { buyers, customers: population.customers, min: config.min_buyers });
    }
    tracing::info!(buyers, "fitting the purchase model (BG/NBD)");
    let purchase = BgNbd::fit(&population.purchases)?;
    tracing::info!(elapsed_ms = started.elapsed().as_millis() as u64, ?purchase, "purchase model fitted");
    // Repeat buyers; their average is over all their net orders (the
    // feature table's avg_order_value), so the count is orders, not repeats.
    let repeat: Vec<Spend> = population
        .purchases
        .iter()
        .zip(&population.average_order)
        .filter(|(s, _)| s.frequency >= 1.0)
        .filter_map(|(s, avg)| Some(Spend { frequency: s.frequency + 1.0, average: (*avg)? }))
        .filter(|s| s.average > 0.0)
        .collect();
    tracing::info!(repeat_buyers = repeat.len(), "fitting the spend model (Gamma-Gamma)");
    let spend = GammaGamma::fit(&repeat)?;
    tracing::info!(elapsed_ms = started.elapsed().as_millis() as u64, ?spend, "spend model fitted");
    let column = |i: usize| population.rfm.iter().map(|r| r[i]).collect::<Vec<f64>>();
    let rfm = RfmQuintiles {
        window_days: i32::try_from(rfm_window).unwrap_or(i32::MAX),
        // Recency bounds are upper bounds of the better score (R5: at most
        // the 20th percentile's days); frequency and monetary bounds are
        // lower bounds of the better score, so a quintile's value itself
        // stays in the lower score (F1 holds the buyers at the 20th
        // percentile, e.g. the one-order buyers).
        recency_max_days: strict_quintiles(column(0), 1.0, 0.0),
        frequency_min: strict_quintiles(column(1), 1.0, 1.0),
        monetary_min: strict_quintiles(column(2), 0.01, 0.01),
    };
    let features = population.cluster_features.len();
    let data = Array2::from_shape_vec((buyers, features), population.cluster_values.clone())
        .map_err(|e| TrainError::NotANumber(e.to_string()))?;
    let settings = ClusterSettings {
        algorithm: if config.algorithm == "gmm" { Algorithm::Gmm } else { Algorithm::Kmeans },
        k_min: config.k_min,
        k_max: config.k_max,
        sample: config.k_sample,
        silhouette_sample: config.silhouette_sample,
        match_distance: config.match_distance,
    };
    tracing::info!(buyers, features, k_min = config.k_min, k_max = config.k_max, "fitting the clusters");
    let clusters = Clustering::fit(
        &population.cluster_features,
        data.view(),
        &settings,
        previous.and_then(|p| p.clusters.as_ref()),
    )?;
    let model = SegmentModel {
        version: previous.map_or(1, |p| p.version + 1),
        group_id: group_id.to_owned(),
        trained_at: now_ms,
        data_as_of: population.data_as_of,
        source: source.to_owned(),
        customers: population.customers as i64,
        buyers: buyers as i64,
        repeat_buyers: repeat.len() as i64,
        training_ms: i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX),
        purchase: Some(purchase),
        spend: Some(spend),
        expected_horizon_days: config.expected_horizon_days,
        clv_horizon_days: config.clv_horizon_days,
        rfm: Some(rfm),
        clusters: Some(clusters),
    };
    check_finite(&model)?;
    Ok(model)
}

/// The 20th, 40th, 60th and 80th percentiles (nearest rank) plus `above`,
/// made strictly rising by at least `step` (ties are common: many buyers
/// have one order), not negative, rounded to cents.
fn strict_quintiles(mut values: Vec<f64>, step: f64, above: f64) -> Vec<f64> {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    let mut bounds: Vec<f64> = Vec::with_capacity(4);
    for q in [0.2, 0.4, 0.6, 0.8] {
        let rank = ((q * n as f64).ceil() as usize).clamp(1, n.max(1)) - 1;
        let v = values.get(rank).copied().unwrap_or_default().max(0.0) + above;
        let v = match bounds.last() {
            Some(last) if v < last + step => last + step,
            _ => v,
        };
        bounds.push((v * 100.0).round() / 100.0);
    }
    bounds
}

/// A model with a value that is not a number must not reach the workers.
fn check_finite(m: &SegmentModel) -> Result<(), TrainError> {
    let mut values: Vec<(&str, f64)> = Vec::new();
    if let Some(p) = m.purchase {
        values.extend([("r", p.r), ("alpha", p.alpha), ("a", p.a), ("b", p.b)]);
    }
    if let Some(s) = m.spend {
        values.extend([("p", s.p), ("q", s.q), ("gamma", s.gamma)]);
    }
    if let Some(r) = &m.rfm {
        values.extend(
            r.recency_max_days.iter().chain(&r.frequency_min).chain(&r.monetary_min).map(|v| ("rfm", *v)),
        );
    }
    if let Some(c) = &m.clusters {
        values.push(("silhouette", c.silhouette));
        values.extend(c.features.iter().flat_map(|f| [("mean", f.mean), ("std", f.std)]));
        values.extend(c.clusters.iter().flat_map(|c| c.centre.iter().map(|v| ("centre", *v))));
    }
    match values.iter().find(|(_, v)| !v.is_finite()) {
        Some((name, v)) => Err(TrainError::NotANumber(format!("{name} = {v}"))),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests;
