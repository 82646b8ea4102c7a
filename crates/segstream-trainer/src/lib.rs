//! Model fitting for the trainer, with no Kafka in it: the
//! models are fitted here from the population's purchase summaries and
//! published by the trainer's binary.
//!
//! - [`bgnbd`]: the BG/NBD model of repeat purchasing (Fader, Hardie and Lee,
//!   2005), fitted by maximum likelihood; P(alive) and expected purchases
//!   per customer.
//! - [`gamma_gamma`]: the Gamma–Gamma model of spend per order, fitted on
//!   repeat buyers; expected spend and lifetime value per customer.
//! - [`clusters`]: k-means or Gaussian-mixture clusters of the population,
//!   named from their centres, with ids kept across retrains.
//! - [`model`]: the published model (`schemas/segment-model.avsc`) and the
//!   per-customer scores workers compute with it.
//! - [`train`]: one run, from the population's feature table to a model.

pub mod bgnbd;
pub mod clusters;
pub mod gamma_gamma;
pub mod model;
mod optimise;
#[cfg(test)]
mod testdata;
pub mod train;

pub use bgnbd::{BgNbd, FitError, Summary};
pub use clusters::{
    Algorithm, Cluster, ClusterError, ClusterSettings, Clustering, Drift, Gaussian, KScore, ScaledFeature,
};
pub use gamma_gamma::{GammaGamma, Spend, SpendFitError};
pub use model::{ModelCodecError, RfmQuintiles, ScoreInputs, Scores, SegmentModel};
pub use train::{Population, TrainError, train};
