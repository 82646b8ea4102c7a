//! State snapshot files: every customer's state, segments and partition, the
//! name dictionaries, and the event time they are as of. `segstream
//! backfill` writes one from history; `segstream sql --snapshot` queries it;
//! a worker starts from one (`worker.warm_start`) as from a checkpoint cut
//! at the first input records published after the snapshot's time.

use std::path::Path;
use std::sync::Arc;

use segstream_config::FeaturesConfig;
use segstream_events::{CustomerId, EventTime, Positions};
use segstream_features::CustomerState;
use segstream_segments::CustomerSegments;
use serde::{Deserialize, Serialize};

use crate::checkpoint::{PartitionState, empty_state};
use crate::error::WorkerError;

/// Bumped whenever the encoded state changes shape.
const FORMAT: u32 = 6;
/// The first bytes of a snapshot file.
const MAGIC: &[u8; 8] = b"SEGSNAP\0";

/// One customer as a snapshot keeps it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct SavedCustomer {
    pub(crate) id: CustomerId,
    pub(crate) partition: i32,
    pub(crate) features: CustomerState,
    pub(crate) segments: CustomerSegments,
}

/// The content of a snapshot file.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Snapshot {
    pub(crate) format: u32,
    /// The latest event time applied.
    pub(crate) as_of: EventTime,
    /// Partitions the history was spread over.
    pub(crate) partitions: i32,
    /// Each partition's stream time at the end of the history (index =
    /// partition): where its timers stand.
    pub(crate) stream_times: Vec<Option<EventTime>>,
    /// The windows the state was kept for: a worker with other windows
    /// would read it wrongly.
    pub(crate) features: FeaturesConfig,
    pub(crate) categories: Vec<Arc<str>>,
    pub(crate) payments: Vec<Arc<str>>,
    pub(crate) customers: Vec<SavedCustomer>,
}

fn io_error(path: &Path, e: impl std::fmt::Display) -> WorkerError {
    WorkerError::Snapshot(format!("{}: {e}", path.display()))
}

impl Snapshot {
    pub(crate) fn new(as_of: EventTime, partitions: i32, features: FeaturesConfig) -> Self {
        Self {
            format: FORMAT,
            as_of,
            partitions,
            stream_times: Vec::new(),
            features,
            categories: Vec::new(),
            payments: Vec::new(),
            customers: Vec::new(),
        }
    }

    /// Writes the snapshot (to a temporary file first, then renamed, so a
    /// reader never sees half a file).
    pub(crate) fn write(&self, path: &Path) -> Result<u64, WorkerError> {
        let bytes = encode(MAGIC, self).map_err(|e| io_error(path, e))?;
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, &bytes).map_err(|e| io_error(&tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| io_error(path, e))?;
        Ok(bytes.len() as u64)
    }

    /// Reads a snapshot written by [`Snapshot::write`].
    pub(crate) fn read(path: &Path) -> Result<Self, WorkerError> {
        let bytes = std::fs::read(path).map_err(|e| io_error(path, e))?;
        decode(MAGIC, FORMAT, &bytes, "snapshot", "write one with `segstream backfill`")
            .map_err(|e| io_error(path, e))
    }
}

/// `magic`, then `value` in postcard; `value` begins with its format number.
pub(crate) fn encode<T: Serialize>(magic: &[u8; 8], value: &T) -> Result<Vec<u8>, String> {
    postcard::to_extend(value, magic.to_vec()).map_err(|e| e.to_string())
}

/// Reads what [`encode`] wrote, refusing another kind of file (`what`, with
/// how to get one) or another format by its number.
pub(crate) fn decode<T: serde::de::DeserializeOwned>(
    magic: &[u8; 8],
    format: u32,
    bytes: &[u8],
    what: &str,
    how: &str,
) -> Result<T, String> {
    let body =
        bytes.strip_prefix(magic.as_slice()).ok_or_else(|| format!("not a segstream {what} ({how})"))?;
    // The format comes first: checked before the rest, whose shape it names.
    let (found, _) = postcard::take_from_bytes::<u32>(body).map_err(|e| e.to_string())?;
    if found != format {
        return Err(format!(
            "{what} format {found} (this build reads {format}): write it again with this version"
        ));
    }
    postcard::from_bytes(body).map_err(|e| e.to_string())
}

/// A snapshot the worker starts from (`worker.warm_start`). A partition
/// that has no checkpoint starts from the snapshot's part of it as from a
/// checkpoint whose offsets are the cut: the first input records published
/// (by Kafka timestamp) after the snapshot's time. Records before the cut
/// are taken as in the snapshot; every record after it is applied, whatever
/// its event time (a refund of an old order published later counts).
#[derive(Debug)]
pub(crate) struct WarmStart {
    /// The latest event time in the snapshot: the cut is at the first
    /// records published after it.
    pub(crate) as_of: EventTime,
    by_partition: std::collections::HashMap<i32, Vec<SavedCustomer>>,
    stream_times: Vec<Option<EventTime>>,
    features: FeaturesConfig,
    categories: Vec<Arc<str>>,
    payments: Vec<Arc<str>>,
}

impl WarmStart {
    /// Reads `path` and checks it fits these topics and windows.
    pub(crate) fn load(path: &Path, features: &FeaturesConfig, partitions: i32) -> Result<Self, WorkerError> {
        let snapshot = Snapshot::read(path)?;
        if snapshot.partitions != partitions {
            return Err(io_error(
                path,
                format!(
                    "spreads customers over {} partitions, the input topics have {partitions}: run `segstream backfill --partitions {partitions}` again",
                    snapshot.partitions
                ),
            ));
        }
        if &snapshot.features != features {
            return Err(io_error(
                path,
                "was kept with other [features] windows than this config: use the same [features] or backfill again",
            ));
        }
        let mut by_partition: std::collections::HashMap<i32, Vec<SavedCustomer>> = Default::default();
        let customers = snapshot.customers.len();
        for c in snapshot.customers {
            by_partition.entry(c.partition).or_default().push(c);
        }
        tracing::info!(path = %path.display(), customers, as_of = %snapshot.as_of, "warm start: snapshot loaded");
        Ok(Self {
            as_of: snapshot.as_of,
            by_partition,
            stream_times: snapshot.stream_times,
            features: snapshot.features,
            categories: snapshot.categories,
            payments: snapshot.payments,
        })
    }

    /// The snapshot's part of `partition` as the state of a checkpoint of
    /// `group` at offsets `cut`, with no decision repeated in it.
    pub(crate) fn state(&self, group: &str, partition: i32, cut: Positions) -> PartitionState {
        let mut state = empty_state(group, partition, self.features.clone());
        let stream_time = usize::try_from(partition)
            .ok()
            .and_then(|p| self.stream_times.get(p).copied().flatten())
            .or(Some(self.as_of));
        state.committed = cut;
        state.merged = cut;
        state.stream_time = stream_time;
        state.released = [stream_time, stream_time];
        state.categories = self.categories.clone();
        state.payments = self.payments.clone();
        state.customers = self.by_partition.get(&partition).cloned().unwrap_or_default();
        state
    }
}

#[cfg(test)]
mod tests {
    use segstream_config::Config;

    use super::*;

    #[test]
    fn a_snapshot_reads_back_as_written() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.snap");
        let mut snapshot =
            Snapshot::new(EventTime::from_millis(1_700_000_000_000), 3, Config::default().features);
        snapshot.categories = vec![Arc::from("shoes")];
        snapshot.write(&path).expect("write");
        let back = Snapshot::read(&path).expect("read");
        assert_eq!((back.as_of, back.partitions, back.categories), (snapshot.as_of, 3, snapshot.categories));
    }

    #[test]
    fn a_snapshot_of_another_format_is_refused_by_its_format_number() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("old.snap");
        // An older format: its number, then a body of another shape.
        let mut bytes = MAGIC.to_vec();
        bytes = postcard::to_extend(&(FORMAT - 1), bytes).expect("encode");
        bytes.extend_from_slice(&[0xff; 7]);
        std::fs::write(&path, bytes).expect("write");
        let e = Snapshot::read(&path).expect_err("refused").to_string();
        assert!(
            e.contains(&format!("snapshot format {}", FORMAT - 1)) && e.contains("write it again"),
            "{e}"
        );
    }
}
