//! `segstream replay`: history through the live worker's event-time engine,
//! as fast as the CPU allows.
//!
//! Each event goes to the partition Kafka's default partitioner gives its
//! customer ([`segstream_kafka::partition_for`]), keeps its place in its
//! file as its offset, and the two lanes of each partition are merged in
//! event time exactly as the worker merges them. The engine is the worker's
//! own, so the segment changes (ids included) are those a live run over the
//! same topics gives, when the topics have `partitions` partitions and the
//! history was produced in file order. The end of the files is the end of the
//! input: every partition then follows the worker's watermark, as a live
//! worker's partitions do once quiet for `time.idle_partition_ms`.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use segstream_config::{Config, LatePolicy};
use segstream_events::schema::Schemas;
use segstream_events::{
    ClickBatch, DecodeError, EventTime, OrderBatch, RawRecord, SegmentChange, decode_clicks, decode_orders,
};
use segstream_segments::{Cause, to_changes};

use crate::engine::{Engine, Fired, Input};
use crate::error::WorkerError;
use crate::merge::{Merger, Pending, Source};

/// What a replay read and produced.
#[derive(Debug, Default)]
pub struct ReplaySummary {
    /// Click events that decoded.
    pub clicks: usize,
    /// Order events that decoded.
    pub orders: usize,
    /// Payloads that did not decode: `clicks` or `orders`, index in that
    /// input (0-based), why. A live worker dead-letters these.
    pub rejected: Vec<(&'static str, usize, DecodeError)>,
    /// Events later than the allowed lateness.
    pub late: u64,
    /// Of those, how many the `dead_letter` policy set aside.
    pub late_set_aside: u64,
    /// Segment change records produced.
    pub changes: u64,
    /// Customers in the state at the end.
    pub customers: usize,
    /// The latest event time applied.
    pub latest: Option<EventTime>,
}

/// A record waiting in the merge: which input and which row.
#[derive(Debug, Clone, Copy)]
struct Row(Source, usize);

/// Payloads as records of one partition, offsets counting from 0.
fn raw(payloads: &[Vec<u8>]) -> impl Iterator<Item = RawRecord<'_>> {
    payloads.iter().zip(0_i64..).map(|(p, offset)| RawRecord {
        payload: Some(p.as_slice()),
        partition: 0,
        offset,
    })
}

/// Replays `clicks` and `orders` (payloads in their topic order, as the
/// worker would read them) over `partitions` partitions. Every change is
/// passed to `on_change` in output order; `progress` gets the number of
/// records processed so far now and then.
pub fn replay(
    config: &Config,
    partitions: i32,
    clicks: &[Vec<u8>],
    orders: &[Vec<u8>],
    progress: impl FnMut(u64),
    on_change: impl FnMut(SegmentChange) -> std::io::Result<()>,
) -> Result<ReplaySummary, WorkerError> {
    run_engine(config, partitions, clicks, orders, progress, on_change).map(|(summary, _)| summary)
}

/// `segstream backfill`: the state a replay of the history ends with, written
/// as a snapshot file at `snapshot` (as of the latest event). Returns the
/// summary and the file's size in bytes.
pub fn backfill(
    config: &Config,
    partitions: i32,
    clicks: &[Vec<u8>],
    orders: &[Vec<u8>],
    progress: impl FnMut(u64),
    snapshot: &Path,
) -> Result<(ReplaySummary, u64), WorkerError> {
    let (summary, engine) = run_engine(config, partitions, clicks, orders, progress, |_| Ok(()))?;
    let as_of = summary.latest.unwrap_or(EventTime::from_millis(0));
    let bytes = engine.store.to_snapshot(as_of, partitions).write(snapshot)?;
    Ok((summary, bytes))
}

fn run_engine(
    config: &Config,
    partitions: i32,
    clicks: &[Vec<u8>],
    orders: &[Vec<u8>],
    mut progress: impl FnMut(u64),
    mut on_change: impl FnMut(SegmentChange) -> std::io::Result<()>,
) -> Result<(ReplaySummary, Engine), WorkerError> {
    let mut summary = ReplaySummary::default();
    let schemas = Schemas::builtin();
    let c = decode_clicks(raw(clicks), schemas)?;
    let o = decode_orders(raw(orders), schemas)?;
    let rejected = |kind: &'static str, r: Vec<segstream_events::Rejected>| {
        r.into_iter().map(move |r| (kind, usize::try_from(r.offset).unwrap_or(0), r.error))
    };
    summary.rejected.extend(rejected("clicks", c.rejected));
    summary.rejected.extend(rejected("orders", o.rejected));
    let (clicks, orders): (Arc<ClickBatch>, Arc<OrderBatch>) = (Arc::new(c.batch), Arc::new(o.batch));
    summary.clicks = clicks.len();
    summary.orders = orders.len();

    let mut engine = Engine::new(config)?;
    // Nothing arrives later: an empty lane is simply exhausted.
    let idle = Duration::from_millis(1);
    let mut merger = Merger::new(idle);
    let start = Instant::now();
    for p in 0..partitions {
        merger.open(p, start);
    }
    let mut next_offset = std::collections::HashMap::new();
    let dead_letter_late = config.time.late_events == LatePolicy::DeadLetter;
    let lanes = [(Source::Clicks, clicks.len()), (Source::Orders, orders.len())];
    for (source, len) in lanes {
        for i in 0..len {
            let (customer, t) = match source {
                Source::Clicks => (clicks.row(i).customer_id, clicks.row(i).event_time),
                Source::Orders => (orders.row(i).customer_id, orders.row(i).event_time),
            };
            let partition = segstream_kafka::partition_for(customer.as_bytes(), partitions);
            summary.latest = Some(summary.latest.map_or(t, |l| l.max(t)));
            let offset = next_offset.entry((source, partition)).or_insert(0_i64);
            let late = engine.late_by(source, partition, t).is_some();
            summary.late += u64::from(late);
            let (time, row) = if late && dead_letter_late {
                summary.late_set_aside += 1;
                (None, None)
            } else {
                (Some(t), Some(Row(source, i)))
            };
            merger.push(source, partition, Pending { offset: *offset, time, item: row }, start);
            *offset += 1;
        }
    }
    let released = merger.release(start + idle * 2);
    let emit_time = EventTime::now();
    let mut emit = |fired: Vec<Fired>, summary: &mut ReplaySummary| -> Result<(), WorkerError> {
        for f in fired {
            for t in &f.transitions {
                for change in to_changes(&f.id, t, Cause { event_id: f.cause.as_deref() }, emit_time) {
                    summary.changes += 1;
                    on_change(change).map_err(|e| WorkerError::Output(e.to_string()))?;
                }
            }
        }
        Ok(())
    };
    for (n, (_, partition, pending)) in released.into_iter().enumerate() {
        let input = match pending.item {
            Some(Row(Source::Clicks, i)) => Input::Click(clicks.row(i)),
            Some(Row(Source::Orders, i)) => Input::Order(orders.row(i)),
            None => Input::Other,
        };
        emit(engine.process(partition, pending.time, input), &mut summary)?;
        // Micro-batches as the worker cuts them (their size changes nothing).
        if (n + 1).is_multiple_of(config.worker.batch_max_events) {
            engine.end_batch()?;
            progress(n as u64 + 1);
        }
    }
    engine.end_batch()?;
    // The input ends here: a live worker whose input stays quiet for
    // `time.idle_partition_ms` moves every partition up to its watermark.
    if config.time.idle_partition_ms > 0 {
        for partition in 0..partitions {
            emit(engine.advance_quiet(partition), &mut summary)?;
        }
    }
    progress((summary.clicks + summary.orders) as u64);
    summary.customers = engine.store.len();
    Ok((summary, engine))
}
