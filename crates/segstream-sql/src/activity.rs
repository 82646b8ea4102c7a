//! The streaming path's per-batch plan: each micro-batch's clicks are
//! counted per customer and day by one DataFusion plan, built once and
//! re-executed on every batch, and the counts are merged into the day
//! buckets of the customers' state.
//!
//! The counts are sums, so merging them batch by batch gives the same
//! buckets whatever the batch boundaries; the batch query
//! ([`crate::definition`]) computes them with the same SQL
//! ([`crate::definition::DAY_COUNTS`]).

use std::sync::{Arc, Mutex};

use datafusion::arrow::array::{Array, Int64Array, Int64Builder, RecordBatch, StringArray, StringBuilder};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::streaming::StreamingTable;
use datafusion::execution::TaskContext;
use datafusion::physical_plan::memory::MemoryStream;
use datafusion::physical_plan::streaming::PartitionStream;
use datafusion::physical_plan::{EmptyRecordBatchStream, ExecutionPlan, SendableRecordBatchStream, collect};
use datafusion::prelude::{SessionConfig, SessionContext};
use segstream_events::ClickRow;
use segstream_features::DayCounts;

use crate::SqlError;
use crate::definition::{DAY_COUNTS, click_columns, day_counts_sql};

/// Counted clicks of the current micro-batch, as the plan reads them.
#[derive(Debug, Default)]
pub struct ClickTally {
    customer_id: StringBuilder,
    t: Int64Builder,
    event_type: StringBuilder,
    device: StringBuilder,
    len: usize,
}

impl ClickTally {
    /// Adds one counted click (not a repeat).
    pub fn push(&mut self, row: &ClickRow<'_>) {
        self.customer_id.append_value(row.customer_id);
        self.t.append_value(row.event_time.millis());
        self.event_type.append_value(row.event_type.as_str());
        self.device.append_option(row.device);
        self.len += 1;
    }

    /// Clicks tallied since the last [`ClickTally::finish`].
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when nothing was tallied.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("customer_id", DataType::Utf8, false),
            Field::new("t", DataType::Int64, false),
            Field::new("event_type", DataType::Utf8, false),
            Field::new("device", DataType::Utf8, true),
        ]))
    }

    fn finish(&mut self) -> Result<RecordBatch, SqlError> {
        self.len = 0;
        Ok(RecordBatch::try_new(
            Self::schema(),
            vec![
                Arc::new(self.customer_id.finish()),
                Arc::new(self.t.finish()),
                Arc::new(self.event_type.finish()),
                Arc::new(self.device.finish()),
            ],
        )?)
    }
}

/// The plan's input: whatever batch was put in the slot before execution.
#[derive(Debug)]
struct Slot {
    schema: SchemaRef,
    batch: Arc<Mutex<Option<RecordBatch>>>,
}

impl PartitionStream for Slot {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let batch = self.batch.lock().map(|mut b| b.take()).unwrap_or_default();
        match MemoryStream::try_new(batch.into_iter().collect(), Arc::clone(&self.schema), None) {
            Ok(s) => Box::pin(s),
            // Only a projection can make this fail, and there is none.
            Err(_) => Box::pin(EmptyRecordBatchStream::new(Arc::clone(&self.schema))),
        }
    }
}

/// Counts per customer and day: the physical plan, built once.
#[derive(Debug)]
pub struct ActivityPlan {
    plan: Arc<dyn ExecutionPlan>,
    task: Arc<TaskContext>,
    input: Arc<Mutex<Option<RecordBatch>>>,
    runtime: tokio::runtime::Runtime,
}

impl ActivityPlan {
    /// Plans the per-day counts once (a current-thread runtime of its own
    /// runs it: the callers are plain threads).
    pub fn new() -> Result<Self, SqlError> {
        let runtime = tokio::runtime::Builder::new_current_thread().build().map_err(SqlError::Runtime)?;
        let input = Arc::new(Mutex::new(None));
        let ctx = SessionContext::new_with_config(SessionConfig::new().with_target_partitions(1));
        let slot = Arc::new(Slot { schema: ClickTally::schema(), batch: Arc::clone(&input) });
        ctx.register_table("batch", Arc::new(StreamingTable::try_new(ClickTally::schema(), vec![slot])?))?;
        let sql = day_counts_sql(&format!("(SELECT {} FROM batch) clicks", click_columns()));
        let plan = runtime.block_on(async { ctx.sql(&sql).await?.create_physical_plan().await })?;
        Ok(Self { plan, task: ctx.task_ctx(), input, runtime })
    }

    /// Counts the tallied clicks (and empties the tally): one entry per
    /// customer and day.
    pub fn run(&self, tally: &mut ClickTally) -> Result<Vec<(String, i64, DayCounts)>, SqlError> {
        if tally.is_empty() {
            return Ok(Vec::new());
        }
        let batch = tally.finish()?;
        if let Ok(mut slot) = self.input.lock() {
            *slot = Some(batch);
        }
        let out = self.runtime.block_on(collect(Arc::clone(&self.plan), Arc::clone(&self.task)))?;
        let mut counts = Vec::new();
        for b in &out {
            let column = |name: &str| -> Result<&Int64Array, SqlError> {
                b.column_by_name(name).and_then(|c| c.as_any().downcast_ref::<Int64Array>()).ok_or_else(
                    || SqlError::Column { column: name.to_owned(), problem: "not a BIGINT".into() },
                )
            };
            let ids = b
                .column_by_name("customer_id")
                .and_then(|c| c.as_any().downcast_ref::<StringArray>())
                .ok_or_else(|| SqlError::Column {
                    column: "customer_id".into(),
                    problem: "not text".into(),
                })?;
            let days = column("d")?;
            let sums: Vec<&Int64Array> =
                DAY_COUNTS.iter().map(|(name, _)| column(name)).collect::<Result<_, _>>()?;
            for row in 0..b.num_rows() {
                let mut values = [0u32; 13];
                for (v, sum) in values.iter_mut().zip(&sums) {
                    *v = u32::try_from(sum.value(row)).unwrap_or(u32::MAX);
                }
                counts.push((ids.value(row).to_owned(), days.value(row), DayCounts::from_array(values)));
            }
        }
        Ok(counts)
    }
}
