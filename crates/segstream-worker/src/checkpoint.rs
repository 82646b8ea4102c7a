//! What a checkpoint of one partition pair holds, and its feature table.
//!
//! A checkpoint is taken right after a transaction committed, so the state
//! is exactly the committed state: everything below the committed offsets
//! released, the committed decision records repeated. Restore loads it, then
//! reads the tail up to the group's committed offsets with outputs
//! suppressed, repeating the decision records committed after it.

use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use segstream_config::FeaturesConfig;
use segstream_events::{EventTime, Positions, SegmentKind};
use segstream_features::{Dictionaries, Features};
use segstream_segments::{CustomerSegments, ModelRules, cluster_segment};
use segstream_sql::table;
use serde::{Deserialize, Serialize};

use crate::snapshot::{SavedCustomer, decode, encode};

/// Bumped whenever the encoded state changes shape.
const FORMAT: u32 = 6;
/// The first bytes of a checkpoint.
const MAGIC: &[u8; 8] = b"SEGCKPT\0";

/// The complete state of one partition pair at a committed point.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct PartitionState {
    pub(crate) format: u32,
    /// Consumer group whose committed offsets it matches.
    pub(crate) group: String,
    pub(crate) partition: i32,
    /// The windows the state was kept for.
    pub(crate) features: FeaturesConfig,
    /// Offsets committed with it (the first record not in it, per lane).
    pub(crate) committed: Positions,
    /// Where the merge stood (after the last released record, per lane):
    /// below `committed` when only markers or gaps lie between.
    pub(crate) merged: Positions,
    /// Decision records of the partition repeated in it.
    pub(crate) decisions: i64,
    /// An offset of the decisions topic's partition at or before the first
    /// decision record not in it (its end when the checkpoint was taken):
    /// a restore reads the decisions from here, not from the start.
    pub(crate) decisions_offset: i64,
    /// The partition's stream time.
    pub(crate) stream_time: Option<EventTime>,
    /// Largest event time released per lane (lateness of what comes next).
    pub(crate) released: [Option<EventTime>; 2],
    /// Dictionary names the customers' ids refer to.
    pub(crate) categories: Vec<Arc<str>>,
    pub(crate) payments: Vec<Arc<str>>,
    /// The partition's customers, in the order they were first seen (timer
    /// ties fire in that order).
    pub(crate) customers: Vec<SavedCustomer>,
    /// The segment definitions file the customers' segments are under
    /// (`None`: a snapshot's cut, under whatever the worker has).
    pub(crate) definitions: Option<String>,
    /// The segment-models record of the trained model the customers'
    /// segments are under, if one is in force.
    pub(crate) model: Option<Vec<u8>>,
}

impl PartitionState {
    /// The checkpoint's bytes.
    pub(crate) fn encode(&self) -> Result<Vec<u8>, String> {
        encode(MAGIC, self)
    }

    /// Reads [`PartitionState::encode`]'s bytes.
    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, String> {
        decode(MAGIC, FORMAT, bytes, "checkpoint", "a checkpoint's state object")
    }

    /// The partition's feature table as of its stream time (one row per
    /// customer, sorted by id, with their segments and, under a model, their
    /// scores), as `/sql` builds it.
    pub(crate) fn feature_table(&self) -> Result<RecordBatch, String> {
        let dict = Dictionaries::with_names(self.categories.clone(), self.payments.clone());
        let as_of = self.stream_time.unwrap_or(EventTime::from_millis(0));
        let model = match &self.model {
            Some(record) => Some(ModelRules::from_record(record, &self.features).map_err(|e| e.to_string())?),
            None => None,
        };
        let mut customers: Vec<_> = self
            .customers
            .iter()
            .map(|c| {
                let features = c.features.features(as_of, &self.features, &dict);
                let named = row_segments(&c.segments, model.as_ref(), &features);
                (c.id.as_str(), features, named)
            })
            .collect();
        feature_rows(&mut customers, &self.features)
    }
}

/// A customer's segments by kind, and their scores under `model`, for the
/// feature table.
pub(crate) fn row_segments(
    segments: &CustomerSegments,
    model: Option<&ModelRules>,
    features: &Features,
) -> table::RowSegments {
    let mut row = table::RowSegments::default();
    for m in segments.memberships() {
        match m.kind {
            SegmentKind::Lifecycle => row.lifecycle = Some(m.segment),
            SegmentKind::Rfm => row.rfm = Some(m.segment),
            SegmentKind::Behaviour => row.behaviour.push(m.segment),
            SegmentKind::Custom => row.custom.push(m.segment),
            SegmentKind::Cluster => {}
        }
    }
    row.cluster = segments.cluster().map(cluster_segment);
    if let Some(model) = model {
        row.scores = model.score_columns(features);
    }
    row.behaviour.sort();
    row.custom.sort();
    row
}

/// The feature table of `customers` (id, features, segments), sorted by id.
pub(crate) fn feature_rows(
    customers: &mut [(&str, segstream_features::Features, table::RowSegments)],
    config: &FeaturesConfig,
) -> Result<RecordBatch, String> {
    customers.sort_by(|a, b| a.0.cmp(b.0));
    let rows: Vec<_> = customers
        .iter()
        .map(|(id, features, named)| table::Row { customer_id: id, features, segments: Some(named) })
        .collect();
    table::build(&rows, config, true).map_err(|e| e.to_string())
}

/// A fresh state of the current format (filled by the processor).
pub(crate) fn empty_state(group: &str, partition: i32, features: FeaturesConfig) -> PartitionState {
    let zero = Positions { clicks: 0, orders: 0 };
    PartitionState {
        format: FORMAT,
        group: group.to_owned(),
        partition,
        features,
        committed: zero,
        merged: zero,
        decisions: 0,
        decisions_offset: 0,
        stream_time: None,
        released: [None, None],
        categories: Vec::new(),
        payments: Vec::new(),
        customers: Vec::new(),
        definitions: None,
        model: None,
    }
}

#[cfg(test)]
mod tests {
    use segstream_config::Config;

    use super::*;

    #[test]
    fn a_partition_state_reads_back_and_another_kind_of_file_is_refused() {
        let mut state = empty_state("g", 2, Config::default().features);
        state.committed = Positions { clicks: 10, orders: 4 };
        state.stream_time = Some(EventTime::from_millis(1_700_000_000_000));
        let back = PartitionState::decode(&state.encode().expect("encode")).expect("decode");
        assert_eq!(
            (back.partition, back.committed, back.stream_time),
            (2, state.committed, state.stream_time)
        );
        let e = PartitionState::decode(b"SEGSNAP\0rest").expect_err("refused");
        assert!(e.contains("not a segstream checkpoint"), "{e}");
    }
}
