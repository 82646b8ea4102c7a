//! The durable home of the worker's state (see ARCHITECTURE.md, "State
//! recovery"): one checkpoint per input partition pair, named by the offsets
//! of both lanes it covers and the decision records it repeated, written
//! through `object_store` (a local directory by default; `s3://`, `gs://`,
//! `az://` URLs), and the partition's feature table as Parquet.
//!
//! Layout under the configured root, per consumer group:
//!
//! ```text
//! <group>/state/partition-00003/00000000000000001234-00000000000000000056-000000000007.ckpt
//! <group>/features/partition-00003.parquet
//! ```
//!
//! A checkpoint is one object written in one `put` (atomic on every store:
//! a local directory writes a temporary file and renames it), so a reader
//! sees a whole checkpoint or none. The feature files are overwritten with
//! each checkpoint: the `features/` folder holds one file per partition, the
//! population snapshot that the trainer and any query engine read. This
//! crate moves bytes; what a checkpoint holds is the worker's business.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use datafusion::arrow::array::RecordBatch;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use datafusion::parquet::file::metadata::KeyValue;
use datafusion::parquet::file::properties::WriterProperties;
use futures::TryStreamExt;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use segstream_events::Positions;
use thiserror::Error;

/// Checkpoint storage failed or is misconfigured.
#[derive(Debug, Error)]
pub enum CheckpointError {
    /// `checkpoint.url` cannot be used.
    #[error("checkpoint.url {url:?}: {problem}")]
    Url {
        /// The configured location.
        url: String,
        /// What is wrong and how to fix it.
        problem: String,
    },
    /// The store refused or failed an operation.
    #[error("checkpoint store: {what}: {source}")]
    Store {
        /// What was being done (with the object's path).
        what: String,
        /// The store's error.
        #[source]
        source: object_store::Error,
    },
    /// A feature file could not be read as Parquet.
    #[error("reading the feature table of partition {partition}: {problem}")]
    ReadParquet {
        /// Input partition.
        partition: i32,
        /// The reader's error.
        problem: String,
    },
    /// The feature table could not be written as Parquet.
    #[error("writing the feature table of partition {partition} as Parquet: {problem}")]
    Parquet {
        /// Input partition.
        partition: i32,
        /// The writer's error.
        problem: String,
    },
}

fn store_error(what: impl Into<String>) -> impl FnOnce(object_store::Error) -> CheckpointError {
    let what = what.into();
    move |source| CheckpointError::Store { what, source }
}

/// What a checkpoint covers: everything below `positions` on both lanes of
/// `partition`, with the first `decisions` decision records repeated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckpointId {
    /// Input partition pair.
    pub partition: i32,
    /// First offset not covered, per lane.
    pub positions: Positions,
    /// Decision records of the partition whose decisions are in the state.
    pub decisions: i64,
}

impl CheckpointId {
    /// The object's name within its partition's folder (fixed width, so the
    /// names sort like the offsets).
    fn file_name(&self) -> String {
        format!("{:020}-{:020}-{:012}.ckpt", self.positions.clicks, self.positions.orders, self.decisions)
    }

    fn parse(partition: i32, name: &str) -> Option<Self> {
        let mut parts = name.strip_suffix(".ckpt")?.split('-');
        let clicks = parts.next()?.parse().ok()?;
        let orders = parts.next()?.parse().ok()?;
        let decisions = parts.next()?.parse().ok()?;
        parts.next().is_none().then_some(Self {
            partition,
            positions: Positions { clicks, orders },
            decisions,
        })
    }

    /// True if everything this checkpoint covers is also covered by
    /// `committed` (offsets) and `decisions` (committed decision records).
    pub fn within(&self, committed: Positions, decisions: i64) -> bool {
        self.positions.clicks <= committed.clicks
            && self.positions.orders <= committed.orders
            && self.decisions <= decisions
    }
}

/// Where one consumer group's checkpoints live.
#[derive(Debug, Clone)]
pub struct CheckpointStore {
    store: Arc<dyn ObjectStore>,
    /// `<root>/<group>`.
    base: Path,
    /// For messages.
    location: String,
}

impl CheckpointStore {
    /// Opens `url` for `group`: a local directory (a path, created if
    /// missing, or `file:///...`) or an object store URL (`s3://bucket/prefix`,
    /// `gs://`, `az://`, `abfss://`) configured by `options` (the store's own
    /// keys, e.g. `aws_endpoint`, `aws_region`, `aws_access_key_id`) and by
    /// the environment variables the store reads (`AWS_*`, ...).
    pub fn open(url: &str, options: &BTreeMap<String, String>, group: &str) -> Result<Self, CheckpointError> {
        let bad = |problem: String| CheckpointError::Url { url: url.to_owned(), problem };
        let (store, root): (Arc<dyn ObjectStore>, Path) = if url.contains("://") {
            let parsed = url::Url::parse(url)
                .map_err(|e| bad(format!("{e}: use a directory path or a URL such as s3://bucket/prefix")))?;
            let (store, root) = object_store::parse_url_opts(&parsed, options.iter())
                .map_err(|e| bad(format!("{e}: check the scheme and [checkpoint.options]")))?;
            (Arc::from(store), root)
        } else {
            if url.trim().is_empty() {
                return Err(bad("empty: set a directory or an object store URL".into()));
            }
            std::fs::create_dir_all(url)
                .map_err(|e| bad(format!("cannot create the directory: {e}; choose a writable path")))?;
            let local = LocalFileSystem::new_with_prefix(url)
                .map_err(|e| bad(format!("{e}: choose a writable directory")))?;
            (Arc::new(local), Path::default())
        };
        let base = root.clone().join(group);
        Ok(Self { store, base, location: url.trim_end_matches('/').to_owned() })
    }

    /// Where the checkpoints are, for messages.
    pub fn location(&self) -> String {
        format!("{}/{}", self.location, self.base)
    }

    fn partition_dir(&self, partition: i32) -> Path {
        self.base.clone().join("state").join(format!("partition-{partition:05}"))
    }

    fn state_path(&self, id: &CheckpointId) -> Path {
        self.partition_dir(id.partition).join(id.file_name())
    }

    /// The feature file of a partition (overwritten by every checkpoint).
    pub fn features_path(&self, partition: i32) -> Path {
        self.base.clone().join("features").join(format!("partition-{partition:05}.parquet"))
    }

    /// Writes a checkpoint's state (one object: atomic), then, if given, the
    /// partition's feature table. Returns the bytes written.
    pub async fn put(
        &self,
        id: &CheckpointId,
        state: Bytes,
        features: Option<Bytes>,
    ) -> Result<u64, CheckpointError> {
        let mut written = state.len() as u64;
        let path = self.state_path(id);
        self.store
            .put(&path, PutPayload::from_bytes(state))
            .await
            .map_err(store_error(format!("writing {path}")))?;
        if let Some(parquet) = features {
            written += parquet.len() as u64;
            let path = self.features_path(id.partition);
            self.store
                .put(&path, PutPayload::from_bytes(parquet))
                .await
                .map_err(store_error(format!("writing {path}")))?;
        }
        Ok(written)
    }

    /// The checkpoints of a partition, oldest first (by offsets).
    pub async fn list(&self, partition: i32) -> Result<Vec<CheckpointId>, CheckpointError> {
        let dir = self.partition_dir(partition);
        let objects: Vec<_> =
            self.store.list(Some(&dir)).try_collect().await.map_err(store_error(format!("listing {dir}")))?;
        let mut ids: Vec<CheckpointId> =
            objects.iter().filter_map(|o| CheckpointId::parse(partition, o.location.filename()?)).collect();
        ids.sort_by_key(|id| (id.positions.clicks + id.positions.orders, id.decisions));
        Ok(ids)
    }

    /// The checkpoints of `partition` that `committed` offsets and
    /// `decisions` committed decision records cover, latest first (a
    /// restore tries them in turn until one reads).
    pub async fn within(
        &self,
        partition: i32,
        committed: Positions,
        decisions: i64,
    ) -> Result<Vec<CheckpointId>, CheckpointError> {
        let mut ids = self.list(partition).await?;
        ids.retain(|id| id.within(committed, decisions));
        ids.reverse();
        Ok(ids)
    }

    /// Reads a checkpoint's state.
    pub async fn get(&self, id: &CheckpointId) -> Result<Bytes, CheckpointError> {
        let path = self.state_path(id);
        let what = format!("reading {path}");
        let result = self.store.get(&path).await.map_err(store_error(what.clone()))?;
        result.bytes().await.map_err(store_error(what))
    }

    /// Every partition's latest feature table, by partition (the population
    /// as the checkpoints last saw it: what the trainer fits on).
    pub async fn feature_tables(&self) -> Result<Vec<(i32, Vec<RecordBatch>)>, CheckpointError> {
        let dir = self.base.clone().join("features");
        let objects: Vec<_> =
            self.store.list(Some(&dir)).try_collect().await.map_err(store_error(format!("listing {dir}")))?;
        let mut tables = Vec::new();
        for o in objects {
            let Some(partition) = o
                .location
                .filename()
                .and_then(|f| f.strip_prefix("partition-")?.strip_suffix(".parquet")?.parse::<i32>().ok())
            else {
                continue;
            };
            let what = format!("reading {}", o.location);
            let bytes = self
                .store
                .get(&o.location)
                .await
                .map_err(store_error(what.clone()))?
                .bytes()
                .await
                .map_err(store_error(what))?;
            let fail = |e: &dyn std::fmt::Display| CheckpointError::ReadParquet {
                partition,
                problem: e.to_string(),
            };
            let batches = ParquetRecordBatchReaderBuilder::try_new(bytes)
                .and_then(|b| b.build())
                .map_err(|e| fail(&e))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| fail(&e))?;
            tables.push((partition, batches));
        }
        tables.sort_by_key(|(p, _)| *p);
        Ok(tables)
    }

    /// Deletes all but the latest `keep` checkpoints of a partition; returns
    /// how many went.
    pub async fn prune(&self, partition: i32, keep: usize) -> Result<usize, CheckpointError> {
        let ids = self.list(partition).await?;
        let old = ids.len().saturating_sub(keep.max(1));
        for id in &ids[..old] {
            let path = self.state_path(id);
            self.store.delete(&path).await.map_err(store_error(format!("deleting {path}")))?;
        }
        Ok(old)
    }
}

/// A feature table as a Parquet file, with `metadata` (offsets, as-of time)
/// in its key-value metadata.
pub fn features_parquet(
    partition: i32,
    batch: &RecordBatch,
    metadata: &[(&str, String)],
) -> Result<Bytes, CheckpointError> {
    let fail = |e: datafusion::parquet::errors::ParquetError| CheckpointError::Parquet {
        partition,
        problem: e.to_string(),
    };
    let kv = metadata.iter().map(|(k, v)| KeyValue::new((*k).to_owned(), v.clone())).collect();
    let props = WriterProperties::builder().set_key_value_metadata(Some(kv)).build();
    let mut out = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut out, batch.schema(), Some(props)).map_err(fail)?;
    writer.write(batch).map_err(fail)?;
    writer.close().map_err(fail)?;
    Ok(Bytes::from(out))
}

#[cfg(test)]
mod tests;
