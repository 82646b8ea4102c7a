//! `segstream replay` and `segstream backfill`: history files through the
//! live worker's own engine ([`Processor`]), as fast as one core goes.
//!
//! Each event goes to the partition Kafka's default partitioner gives its
//! customer ([`segstream_kafka::partition_for`]); each partition's events
//! of each kind are put in event time order (ties keep their file order),
//! and their place in that order is their offset. So the result does not
//! depend on how the files are sorted (exports are often sorted by
//! customer). The files are the whole input: once pushed, every lane is at
//! its end, as a live worker's lanes are once it has consumed topics
//! holding the same events, and every partition then follows the input's
//! watermark (the largest event time at the end of the input, see
//! [`tail_target`]) as quiet live partitions do. So the changes, ids
//! included, are those a live run gives over topics with `partitions`
//! partitions holding the history in event time order. Files carry no Kafka
//! key or timestamp: the key and future-event checks have nothing to check.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use segstream_config::Config;
use segstream_events::{
    CustomerSegments, DecodeError, EventTime, InputRules, Lane, Positions, RawRecord, SegmentChange,
};
use segstream_telemetry::Metrics;

use crate::admission::{Decoded, InputSchemas, input_rules};
use crate::error::WorkerError;
use crate::processor::{Emitted, Processor};

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

/// Payloads as records, offsets counting from 0.
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
/// records pushed so far now and then. Returns, with the summary, every
/// customer's memberships at the end (what the compacted
/// `customer-segments` topic ends up holding).
pub fn replay(
    config: &Config,
    partitions: i32,
    clicks: &[Vec<u8>],
    orders: &[Vec<u8>],
    progress: impl FnMut(u64),
    mut on_change: impl FnMut(SegmentChange) -> std::io::Result<()>,
) -> Result<(ReplaySummary, Vec<CustomerSegments>), WorkerError> {
    let mut latest: BTreeMap<String, EventTime> = BTreeMap::new();
    let (summary, processor) = run_engine(config, partitions, clicks, orders, progress, |change| {
        let at = latest.entry(change.customer_id.to_string()).or_insert(change.cause_event_time);
        *at = (*at).max(change.cause_event_time);
        on_change(change)
    })?;
    let memberships = latest
        .into_iter()
        .filter_map(|(id, at)| processor.store().membership(&segstream_events::CustomerId::new(id), at))
        .collect();
    Ok((summary, memberships))
}

/// `segstream backfill`: the state a replay of the history ends with, written
/// as a snapshot file at `snapshot` (as of the latest event). Returns the
/// summary and the file's size in bytes; when no event decoded nothing is
/// written (size 0).
pub fn backfill(
    config: &Config,
    partitions: i32,
    clicks: &[Vec<u8>],
    orders: &[Vec<u8>],
    progress: impl FnMut(u64),
    snapshot: &Path,
) -> Result<(ReplaySummary, u64), WorkerError> {
    let (summary, processor) = run_engine(config, partitions, clicks, orders, progress, |_| Ok(()))?;
    if summary.clicks + summary.orders == 0 {
        // An empty snapshot would start a worker as if the history were empty.
        return Ok((summary, 0));
    }
    let as_of = summary.latest.unwrap_or(EventTime::from_millis(0));
    let mut state = processor.store().to_snapshot(as_of, partitions);
    state.stream_times = (0..partitions).map(|p| processor.stream_time(p)).collect();
    let bytes = state.write(snapshot)?;
    Ok((summary, bytes))
}

/// One lane of the history: decoded rows per partition, in event time
/// order, with their offsets on that partition.
struct LaneRows {
    decoded: Decoded,
    by_partition: BTreeMap<i32, Vec<(usize, i64)>>,
}

impl LaneRows {
    fn new(
        lane: Lane,
        payloads: &[Vec<u8>],
        partitions: i32,
        schemas: &mut InputSchemas,
        rules: InputRules,
    ) -> Result<(Self, Vec<(usize, DecodeError)>), WorkerError> {
        schemas.resolve(lane, payloads.iter().map(Vec::as_slice))?;
        let (decoded, rejected) = Decoded::decode(lane, raw(payloads), schemas.schemas(), rules)?;
        let mut rows_of: BTreeMap<i32, Vec<usize>> = BTreeMap::new();
        for row in 0..decoded.len() {
            let (customer, _) = decoded.row(row);
            rows_of
                .entry(segstream_kafka::partition_for(customer.as_bytes(), partitions))
                .or_default()
                .push(row);
        }
        // Event time order (ties in file order), whatever order the file is
        // in: history exported sorted by customer would otherwise be one
        // late event after another.
        let by_partition = rows_of
            .into_iter()
            .map(|(partition, mut rows)| {
                // Each time read once (a row's read decodes all its columns).
                rows.sort_by_cached_key(|&row| decoded.row(row).1);
                (partition, rows.into_iter().zip(0_i64..).collect())
            })
            .collect();
        let rejected =
            rejected.into_iter().map(|r| (usize::try_from(r.offset).unwrap_or(0), r.error)).collect();
        Ok((Self { decoded, by_partition }, rejected))
    }

    /// The event time of each partition's last record.
    fn tails(&self) -> impl Iterator<Item = EventTime> + '_ {
        self.by_partition.values().filter_map(|rows| rows.last().map(|(row, _)| self.decoded.row(*row).1))
    }
}

/// The input's watermark at the end of the files: the largest event time
/// among the last record of every lane of every partition, as a live
/// worker's probe reads it at the end of the topics.
fn tail_target(lanes: &[&LaneRows]) -> Option<EventTime> {
    lanes.iter().flat_map(|l| l.tails()).max()
}

fn run_engine(
    config: &Config,
    partitions: i32,
    clicks: &[Vec<u8>],
    orders: &[Vec<u8>],
    mut progress: impl FnMut(u64),
    mut on_change: impl FnMut(SegmentChange) -> std::io::Result<()>,
) -> Result<(ReplaySummary, Processor), WorkerError> {
    let mut summary = ReplaySummary::default();
    let rules = input_rules(config);
    let mut schemas = InputSchemas::new(config)?;
    let (clicks, rejected) = LaneRows::new(Lane::Clicks, clicks, partitions, &mut schemas, rules)?;
    summary.rejected.extend(rejected.into_iter().map(|(i, e)| ("clicks", i, e)));
    let (orders, rejected) = LaneRows::new(Lane::Orders, orders, partitions, &mut schemas, rules)?;
    summary.rejected.extend(rejected.into_iter().map(|(i, e)| ("orders", i, e)));
    summary.clicks = clicks.decoded.len();
    summary.orders = orders.decoded.len();

    let metrics = Metrics::new();
    let mut processor = Processor::new(config, metrics.clone())?;
    for partition in 0..partitions {
        processor.open(partition, Positions { clicks: 0, orders: 0 }, None, Vec::new());
    }
    let mut emit = |out: Emitted, summary: &mut ReplaySummary| -> Result<(), WorkerError> {
        for change in out.changes {
            summary.changes += 1;
            on_change(change).map_err(|e| WorkerError::Output(e.to_string()))?;
        }
        summary.late_set_aside += out.dead_letters.len() as u64;
        Ok(())
    };
    // Micro-batches of the worker's size (their size changes nothing).
    let chunk = config.worker.batch_max_events.max(1);
    let now = Instant::now();
    // Everything the merge lets go now, one micro-batch at a time.
    let mut drain = |processor: &mut Processor, summary: &mut ReplaySummary| -> Result<(), WorkerError> {
        loop {
            let mut out = Emitted::default();
            let released = processor.process(now, chunk, &mut out)?;
            emit(out, summary)?;
            if released < chunk {
                return Ok(());
            }
        }
    };
    let mut pushed = 0_u64;
    // Orders first: they are few, and clicks then flow through in chunks.
    for (lane, rows) in [(Lane::Orders, &orders), (Lane::Clicks, &clicks)] {
        for (&partition, part) in &rows.by_partition {
            for batch in part.chunks(chunk) {
                processor.push_rows(lane, partition, &rows.decoded, batch);
                drain(&mut processor, &mut summary)?;
                pushed += batch.len() as u64;
                progress(pushed);
            }
        }
    }
    // The files end here: every lane is at its end.
    for partition in 0..partitions {
        for lane in Lane::BOTH {
            processor.mark_end(lane, partition, now);
        }
    }
    drain(&mut processor, &mut summary)?;
    let mut out = Emitted::default();
    if config.time.idle_partition_ms > 0
        && let Some(target) = tail_target(&[&clicks, &orders])
    {
        for partition in 0..partitions {
            // In parts when many timers are due, as live.
            while !processor.follow(partition, target, &mut out)? {}
        }
    }
    emit(out, &mut summary)?;
    let topics = [config.topics.clickstream.as_str(), config.topics.orders.as_str()];
    summary.late = topics.iter().map(|t| metrics.late_events.with_label_values(&[*t]).get()).sum();
    summary.latest = processor.max_event_time();
    summary.customers = processor.store().len();
    Ok((summary, processor))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const DAY: i64 = 86_400_000;
    const T0: i64 = 1_700_000_000_000;

    /// One customer's history: orders (day, ms into the day, cancelled) and
    /// clicks (day, ms, kind).
    type History = Vec<(Vec<(i64, i64, bool)>, Vec<(i64, i64, u8)>)>;

    /// One line of a history file: its customer, event time and payload.
    type Line = (String, i64, Vec<u8>);

    fn payloads(history: &History) -> (Vec<Line>, Vec<Line>) {
        let (mut orders, mut clicks) = (Vec::new(), Vec::new());
        for (c, (placed, browsing)) in history.iter().enumerate() {
            let customer = format!("c{c}");
            for (k, (day, ms, cancelled)) in placed.iter().enumerate() {
                let t = T0 + day * DAY + ms;
                let order = |status: &str, t: i64| {
                    let json = format!(
                        r#"{{"order_id":"{customer}-o{k}","customer_id":"{customer}","event_time":{t},"status":"{status}","total":{}.5}}"#,
                        10 + k
                    );
                    (customer.clone(), t, json.into_bytes())
                };
                orders.push(order("placed", t));
                if *cancelled {
                    orders.push(order("cancelled", t + DAY / 2));
                }
            }
            for (k, (day, ms, kind)) in browsing.iter().enumerate() {
                let t = T0 + day * DAY + ms;
                let (kind, price) = match kind % 3 {
                    0 => ("page_view", ""),
                    1 => ("add_to_cart", r#","price":12.5"#),
                    _ => ("remove_from_cart", r#","price":12.5"#),
                };
                let json = format!(
                    r#"{{"event_id":"{customer}-e{k}","customer_id":"{customer}","session_id":"s","event_type":"{kind}","event_time":{t}{price}}}"#
                );
                clicks.push((customer.clone(), t, json.into_bytes()));
            }
        }
        (clicks, orders)
    }

    /// Every customer's memberships after a replay of the files in this order.
    fn memberships(config: &Config, clicks: &[Vec<u8>], orders: &[Vec<u8>]) -> Vec<CustomerSegments> {
        let (_, mut out) = replay(config, 3, clicks, orders, |_| {}, |_| Ok(())).expect("replay");
        out.sort_by(|a, b| a.customer_id.cmp(&b.customer_id));
        out
    }

    fn history() -> impl Strategy<Value = History> {
        let orders = prop::collection::vec((0..400_i64, 0..DAY, prop::bool::weighted(0.15)), 0..8);
        let clicks = prop::collection::vec((0..400_i64, 0..DAY, 0..3_u8), 0..8);
        prop::collection::vec((orders, clicks), 1..12)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        /// History files sorted by time, by customer (as warehouse exports
        /// are) or not at all give every customer the same segments.
        #[test]
        fn replay_gives_the_same_segments_whatever_the_order_of_the_files(history in history(), seed in any::<u64>()) {
            let (config, _file) = crate::engine::tests::with_custom(CUSTOM);
            let (clicks, orders) = payloads(&history);
            let arranged = |rows: &[Line], key: &dyn Fn(&Line) -> (String, i64)| {
                let mut rows = rows.to_vec();
                rows.sort_by_key(|r| key(r));
                rows.into_iter().map(|r| r.2).collect::<Vec<_>>()
            };
            let by_time = |r: &Line| (String::new(), r.1);
            let by_customer = |r: &Line| (r.0.clone(), r.1);
            let mut x = seed | 1;
            let mut shuffled = |rows: &[Line]| {
                let mut rows: Vec<Vec<u8>> = rows.iter().map(|r| r.2.clone()).collect();
                for i in (1..rows.len()).rev() {
                    x ^= x << 13; x ^= x >> 7; x ^= x << 17;
                    rows.swap(i, (x % (i as u64 + 1)) as usize);
                }
                rows
            };
            let timed = memberships(&config, &arranged(&clicks, &by_time), &arranged(&orders, &by_time));
            let grouped = memberships(&config, &arranged(&clicks, &by_customer), &arranged(&orders, &by_customer));
            let (c, o) = (shuffled(&clicks), shuffled(&orders));
            let mixed = memberships(&config, &c, &o);
            prop_assert_eq!(&timed, &grouped);
            prop_assert_eq!(&timed, &mixed);
        }

        /// The user-defined segments are evaluated once per micro-batch, on
        /// a row per evaluation: the changes, ids included, and memberships
        /// do not depend on where batches end.
        #[test]
        fn user_defined_segments_decide_the_same_whatever_the_batch_size(history in history(), size in 1..40_usize) {
            let (mut config, _file) = crate::engine::tests::with_custom(CUSTOM);
            let (clicks, orders) = payloads(&history);
            let (clicks, orders): (Vec<_>, Vec<_>) =
                (clicks.into_iter().map(|r| r.2).collect(), orders.into_iter().map(|r| r.2).collect());
            let run = |config: &Config| {
                let mut changes = Vec::new();
                let (_, mut out) = replay(config, 3, &clicks, &orders, |_| {}, |c| {
                    changes.push((c.event_id, c.customer_id, c.segment, c.change, c.cause_event_time, c.features));
                    Ok(())
                }).expect("replay");
                changes.sort_by(|a, b| a.0.cmp(&b.0));
                out.sort_by(|a, b| a.customer_id.cmp(&b.customer_id));
                (changes, out)
            };
            let whole = run(&config);
            config.worker.batch_max_events = size;
            prop_assert_eq!(&run(&config), &whole);
        }
    }

    /// User-defined segments on orders, time, the cart, sessions and other segments.
    const CUSTOM: &[(&str, &str)] = &[
        ("regular", "lifetime_orders >= 2 AND days_since_last_order <= 60"),
        ("cart_watcher", "cart_value > 20 AND lifecycle <> 'churned'"),
        ("recent_visitor", "sessions_7d >= 1 AND tenure_days BETWEEN 0 AND 90"),
        ("steady", "orders_90d >= 2 OR revenue_30d > 15"),
    ];
}
