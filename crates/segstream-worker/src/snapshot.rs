//! State snapshot files: every customer's state, segments and partition, the
//! name dictionaries, and the event time they are as of. `segstream
//! backfill` writes one from history; `segstream sql --snapshot` queries it.

use std::path::Path;
use std::sync::Arc;

use segstream_config::FeaturesConfig;
use segstream_events::{CustomerId, EventTime};
use segstream_features::CustomerState;
use segstream_segments::CustomerSegments;
use serde::{Deserialize, Serialize};

use crate::error::WorkerError;

/// Bumped whenever the encoded state changes shape.
const FORMAT: u32 = 1;
/// The first bytes of a snapshot file.
const MAGIC: &[u8; 8] = b"SEGSNAP\0";

/// One customer as a snapshot keeps it.
#[derive(Debug, Serialize, Deserialize)]
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
            features,
            categories: Vec::new(),
            payments: Vec::new(),
            customers: Vec::new(),
        }
    }

    /// Writes the snapshot (to a temporary file first, then renamed, so a
    /// reader never sees half a file).
    pub(crate) fn write(&self, path: &Path) -> Result<u64, WorkerError> {
        let mut bytes = MAGIC.to_vec();
        bytes = postcard::to_extend(self, bytes).map_err(|e| io_error(path, e))?;
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, &bytes).map_err(|e| io_error(&tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| io_error(path, e))?;
        Ok(bytes.len() as u64)
    }

    /// Reads a snapshot written by [`Snapshot::write`].
    pub(crate) fn read(path: &Path) -> Result<Self, WorkerError> {
        let bytes = std::fs::read(path).map_err(|e| io_error(path, e))?;
        let body = bytes.strip_prefix(MAGIC.as_slice()).ok_or_else(|| {
            io_error(path, "not a segstream snapshot (write one with `segstream backfill`)")
        })?;
        let snapshot: Snapshot = postcard::from_bytes(body).map_err(|e| io_error(path, e))?;
        if snapshot.format != FORMAT {
            return Err(io_error(
                path,
                format!(
                    "snapshot format {} (this build reads {FORMAT}): write it again with this version",
                    snapshot.format
                ),
            ));
        }
        Ok(snapshot)
    }
}
