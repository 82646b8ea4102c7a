//! The streaming worker: consume `clickstream` and `orders`, decode each
//! poll straight into Arrow, merge co-partitions in event time, update the
//! customer state, evaluate segments, and publish changes, memberships,
//! dead letters and the merge's timing-dependent decisions together with the
//! input offsets in one Kafka transaction per commit interval.
//!
//! The pipeline runs on a dedicated thread (all of its work is CPU or
//! blocking librdkafka calls); tokio serves HTTP and signals beside it.

mod admission;
mod checkpoint;
mod diff;
mod engine;
mod error;
mod live;
mod lookup;
mod merge;
mod processor;
mod replay;
mod run;
mod snapshot;
mod store;

pub use admission::input_rules;
pub use diff::{DefinitionsDiff, DiffSource, SegmentMoves, diff_definitions};
pub use error::WorkerError;
pub use live::Summary;
pub use lookup::snapshot_features;
pub use replay::{ReplaySummary, backfill, replay};
pub use run::run;
pub use store::CustomerStore;
