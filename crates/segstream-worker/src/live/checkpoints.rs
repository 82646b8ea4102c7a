//! Checkpoints of the owned partitions. One is taken only while the state
//! is exactly the committed state (right after a commit, nothing processed
//! since): one partition at a time on `checkpoint.interval_ms`, and every
//! owned partition when it is revoked and at shutdown. The pipeline thread
//! only copies the partition's state; encoding, the Parquet feature file,
//! the write and the pruning run on the runtime, one checkpoint after the
//! other (so a partition's files are written in order).

use std::collections::HashMap;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use segstream_checkpoint::{CheckpointId, CheckpointStore, features_parquet};
use segstream_config::Config;
use segstream_events::Positions;
use segstream_telemetry::Metrics;
use tokio::runtime::Handle;

use crate::checkpoint::{PartitionState, empty_state};
use crate::error::WorkerError;
use crate::processor::Processor;

/// A partition's committed point, as a checkpoint of it must match.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Committed {
    /// Decision records committed.
    pub(crate) decisions: i64,
    /// The decisions topic's end (every committed record lies before it).
    pub(crate) decisions_offset: i64,
    /// Committed offsets of both lanes.
    pub(crate) positions: Positions,
}

/// What the writer reports back for one checkpoint.
#[derive(Debug)]
struct Written {
    partition: i32,
    result: Result<u64, String>,
}

/// See the module documentation.
#[derive(Debug)]
pub(crate) struct Checkpoints {
    store: CheckpointStore,
    runtime: Handle,
    group: String,
    config: Config,
    interval: Duration,
    /// States to write, in order (consumed by one task on the runtime).
    jobs: tokio::sync::mpsc::UnboundedSender<PartitionState>,
    written: mpsc::Receiver<Written>,
    /// Checkpoints handed to the writer and not reported back yet.
    pending: usize,
    /// Per owned partition: when its state was last handed over (or, before
    /// that, when it was assigned).
    taken: HashMap<i32, Instant>,
    /// Per owned partition: when its last checkpoint was written.
    last_written: HashMap<i32, Instant>,
    /// Per owned partition: the committed point of the last state handed
    /// over (a partition that has not moved since is not written again).
    handed: HashMap<i32, (Positions, i64)>,
    metrics: Metrics,
}

/// How long shutdown waits for the last checkpoints to be written.
const FINISH_WAIT: Duration = Duration::from_secs(60);

impl Checkpoints {
    /// `None` when checkpoints are off (`checkpoint.interval_ms = 0`).
    pub(crate) fn new(
        config: &Config,
        metrics: &Metrics,
        runtime: Handle,
    ) -> Result<Option<Self>, WorkerError> {
        if config.checkpoint.interval_ms == 0 {
            return Ok(None);
        }
        let group = config.kafka.group_id.clone();
        let store = CheckpointStore::open(&config.checkpoint.url, &config.checkpoint.options, &group)?;
        tracing::info!(location = %store.location(), "checkpoints");
        let (jobs, mut queue) = tokio::sync::mpsc::unbounded_channel::<PartitionState>();
        let (report, written) = mpsc::channel();
        let (writer_store, keep, writer_metrics) = (store.clone(), config.checkpoint.keep, metrics.clone());
        runtime.spawn(async move {
            while let Some(state) = queue.recv().await {
                let partition = state.partition;
                let started = Instant::now();
                let result = write(&writer_store, state, keep).await;
                writer_metrics.checkpoint_seconds.observe(started.elapsed().as_secs_f64());
                if report.send(Written { partition, result }).is_err() {
                    return;
                }
            }
        });
        Ok(Some(Self {
            store,
            runtime,
            group,
            config: config.clone(),
            interval: Duration::from_millis(config.checkpoint.interval_ms),
            jobs,
            written,
            pending: 0,
            taken: HashMap::new(),
            last_written: HashMap::new(),
            handed: HashMap::new(),
            metrics: metrics.clone(),
        }))
    }

    /// The latest checkpoint of `partition` that the committed offsets and
    /// decision records cover, read and decoded (`None`: there is none; one
    /// that cannot be read is logged and passed over for the next older).
    pub(crate) fn restore_point(
        &self,
        partition: i32,
        committed: Positions,
        decisions: i64,
    ) -> Result<Option<PartitionState>, WorkerError> {
        let started = Instant::now();
        for id in &self.runtime.block_on(self.store.within(partition, committed, decisions))? {
            let state = self
                .runtime
                .block_on(self.store.get(id))
                .map_err(|e| e.to_string())
                .and_then(|bytes| PartitionState::decode(&bytes));
            match state {
                Ok(state) if state.features != self.config.features => tracing::warn!(
                    partition,
                    checkpoint = ?id,
                    "checkpoint kept with other [features] windows: not used"
                ),
                Ok(state) if state.group != self.group || state.partition != partition => tracing::warn!(
                    partition,
                    checkpoint = ?id,
                    "checkpoint of another group or partition: not used"
                ),
                Ok(state) => {
                    self.metrics.restore_seconds.observe(started.elapsed().as_secs_f64());
                    return Ok(Some(state));
                }
                Err(e) => {
                    tracing::warn!(partition, checkpoint = ?id, error = %e, "checkpoint unreadable: not used")
                }
            }
        }
        Ok(None)
    }

    /// A partition is now owned (assigned, restored or rebuilt).
    pub(crate) fn owned(&mut self, partition: i32, now: Instant) {
        self.taken.insert(partition, now);
    }

    /// A partition is no longer owned.
    pub(crate) fn released(&mut self, partition: i32) {
        self.taken.remove(&partition);
        self.last_written.remove(&partition);
        self.handed.remove(&partition);
    }

    /// Call while the state equals the committed state: hands the partition
    /// whose last checkpoint is the oldest to the writer if the interval has
    /// passed and the writer is idle.
    pub(crate) fn maybe_take(&mut self, processor: &Processor, decisions: &dyn Fn(i32) -> Option<Committed>) {
        self.collect();
        if self.pending > 0 {
            return;
        }
        let due = self
            .taken
            .iter()
            .filter(|(_, at)| at.elapsed() >= self.interval)
            .min_by_key(|(_, at)| **at)
            .map(|(p, _)| *p);
        if let Some(partition) = due {
            self.take(processor, partition, decisions);
        }
    }

    /// Hands the state of `partition` to the writer (call while the state
    /// equals the committed state). Skipped while it rebuilds, if its
    /// offsets are not the committed ones, or if it has not moved since the
    /// last state handed over.
    pub(crate) fn take(
        &mut self,
        processor: &Processor,
        partition: i32,
        decisions: &dyn Fn(i32) -> Option<Committed>,
    ) {
        let Some(Committed { decisions: count, decisions_offset, positions: committed }) =
            decisions(partition)
        else {
            return;
        };
        if self.handed.get(&partition) == Some(&(committed, count)) {
            self.taken.insert(partition, Instant::now());
            return;
        }
        let started = Instant::now();
        let state = empty_state(&self.group, partition, self.config.features.clone());
        let Some(mut state) = processor.export(state) else { return };
        if state.committed != committed {
            tracing::warn!(partition, ?committed, at = ?state.committed, "not at its committed offsets: no checkpoint");
            return;
        }
        state.decisions = count;
        state.decisions_offset = decisions_offset;
        self.handed.insert(partition, (committed, count));
        self.metrics.checkpoint_copy_seconds.observe(started.elapsed().as_secs_f64());
        self.put(state);
    }

    /// Hands a state made elsewhere (a warm start's cut) to the writer.
    pub(crate) fn put(&mut self, state: PartitionState) {
        self.taken.insert(state.partition, Instant::now());
        if self.jobs.send(state).is_ok() {
            self.pending += 1;
        }
    }

    /// Takes in what the writer reported; updates the metrics.
    pub(crate) fn collect(&mut self) {
        while let Ok(w) = self.written.try_recv() {
            self.pending = self.pending.saturating_sub(1);
            match w.result {
                Ok(bytes) => {
                    self.metrics.checkpoints.with_label_values(&["written"]).inc();
                    self.metrics.checkpoint_bytes.set(i64::try_from(bytes).unwrap_or(i64::MAX));
                    if self.taken.contains_key(&w.partition) {
                        self.last_written.insert(w.partition, Instant::now());
                    }
                }
                Err(e) => {
                    // Written again at its next turn, moved or not.
                    self.handed.remove(&w.partition);
                    self.metrics.checkpoints.with_label_values(&["failed"]).inc();
                    tracing::warn!(partition = w.partition, error = %e, "checkpoint not written (the previous one stays)");
                }
            }
        }
        let age = self
            .taken
            .keys()
            .filter_map(|p| self.last_written.get(p).or(self.taken.get(p)))
            .map(Instant::elapsed)
            .max()
            .unwrap_or_default();
        self.metrics.checkpoint_age.set(i64::try_from(age.as_secs()).unwrap_or(i64::MAX));
    }

    /// Waits (bounded) until every checkpoint handed over is written.
    pub(crate) fn finish(&mut self) {
        let deadline = Instant::now() + FINISH_WAIT;
        while self.pending > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.written.recv_timeout(left) {
                Ok(w) => {
                    self.pending = self.pending.saturating_sub(1);
                    if let Err(e) = w.result {
                        tracing::warn!(partition = w.partition, error = %e, "checkpoint not written");
                    }
                }
                Err(_) => {
                    tracing::warn!(
                        pending = self.pending,
                        "checkpoints still being written at exit: given up"
                    );
                    return;
                }
            }
        }
    }
}

/// Encodes a state (and its feature table) off the runtime's threads and
/// writes both; prunes the partition's old checkpoints.
async fn write(store: &CheckpointStore, state: PartitionState, keep: usize) -> Result<u64, String> {
    let encoded = tokio::task::spawn_blocking(move || -> Result<_, String> {
        let id = CheckpointId {
            partition: state.partition,
            positions: state.committed,
            decisions: state.decisions,
        };
        let table = state.feature_table()?;
        let metadata = [
            ("segstream.clickstream_offset", state.committed.clicks.to_string()),
            ("segstream.orders_offset", state.committed.orders.to_string()),
            ("segstream.as_of_ms", state.stream_time.map_or(0, |t| t.millis()).to_string()),
        ];
        let parquet = features_parquet(state.partition, &table, &metadata).map_err(|e| e.to_string())?;
        Ok((id, Bytes::from(state.encode()?), parquet))
    })
    .await
    .map_err(|e| format!("encoding task failed: {e}"))?;
    let (id, bytes, parquet) = encoded?;
    let written = store.put(&id, bytes, Some(parquet)).await.map_err(|e| e.to_string())?;
    let pruned = store.prune(id.partition, keep).await.map_err(|e| e.to_string())?;
    tracing::info!(
        partition = id.partition,
        clickstream = id.positions.clicks,
        orders = id.positions.orders,
        bytes = written,
        pruned,
        "checkpoint written"
    );
    Ok(written)
}
