//! The DataFusion side of segstream.
//!
//! - [`definition`]: the batch definition of every feature, one SQL query over
//!   the decoded `clicks` and `orders` tables. The streaming state in
//!   `segstream-features` must give the same values; a property test over
//!   random histories (out of order, with duplicates) holds the two together.
//! - [`table`]: the feature table (one row per customer), built from live
//!   state or from the batch query, with one schema for both.
//! - [`history`]: history files (JSON lines, CSV, Parquet) read into the same
//!   payloads the worker decodes from Kafka, so backfill, replay and the batch
//!   query see exactly what a live run would.
//! - [`query`]: ad-hoc SQL over a feature table and the event tables, printed
//!   as a table or JSON.

pub mod definition;
mod error;
pub mod history;
pub mod query;
pub mod table;

pub use error::SqlError;

#[cfg(test)]
mod tests;
