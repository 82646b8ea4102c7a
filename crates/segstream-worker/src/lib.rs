//! The streaming worker: consume `clickstream` and `orders`, decode each
//! poll straight into Arrow, merge co-partitions in event time, update the
//! customer state, evaluate segments, and publish changes, memberships and
//! dead letters together with the input offsets in one Kafka transaction per
//! micro-batch.
//!
//! The pipeline runs on a dedicated thread (all of its work is CPU or
//! blocking librdkafka calls); tokio serves HTTP and signals beside it.

mod engine;
mod error;
mod lookup;
mod merge;
mod pipeline;
mod replay;
mod run;
mod snapshot;
mod store;

pub use error::WorkerError;
pub use lookup::snapshot_features;
pub use pipeline::Summary;
pub use replay::{ReplaySummary, backfill, replay};
pub use run::run;
pub use store::CustomerStore;
