//! Model fitting for the trainer (issue 19), with no Kafka in it: the
//! models are fitted here from the population's purchase summaries and
//! published by the trainer's binary.
//!
//! - [`bgnbd`]: the BG/NBD model of repeat purchasing (Fader, Hardie and Lee,
//!   2005), fitted by maximum likelihood; P(alive) per customer.

pub mod bgnbd;

pub use bgnbd::{BgNbd, FitError, Summary};
