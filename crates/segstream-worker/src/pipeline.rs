//! The consume → decode → merge → state → segments → transaction loop.
//!
//! Invariants (see ARCHITECTURE.md):
//! - One Kafka transaction per micro-batch carries the batch's segment
//!   changes, membership records, dead letters and the input offsets.
//! - The committed offset of a lane is its first unprocessed record, so the
//!   outputs of every record below it are in committed transactions.
//! - State is in memory and rebuilt on assignment by replaying each partition
//!   from its beginning with outputs suppressed below the committed offset.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use segstream_config::{Config, LatePolicy};
use segstream_events::schema::Schemas;
use segstream_events::{
    ClickBatch, CustomerId, DecodeError, EventTime, OrderBatch, RawRecord, SegmentChange, SegmentKind,
    decode_clicks, decode_orders,
};
use segstream_kafka::{Assignment, DeadLetter, RecoveringContext, dead_letter_headers};
use segstream_segments::{Cause, Transition, to_changes};
use segstream_telemetry::{Health, Metrics};
use tokio_util::sync::CancellationToken;

use crate::engine::{Engine, Input};
use crate::error::WorkerError;
use crate::lookup::{SnapshotRequest, snapshot};
use crate::merge::{Merger, Pending, Source};
use crate::snapshot::WarmStart;

/// Totals of one pipeline run, logged at exit.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Input records consumed.
    pub events: u64,
    /// Change records published.
    pub changes: u64,
    /// Dead letters published.
    pub dead_letters: u64,
    /// Transactions committed.
    pub transactions: u64,
}

/// A buffered input record.
#[derive(Debug)]
enum Item {
    Click {
        batch: Arc<ClickBatch>,
        row: usize,
        ts: Option<i64>,
    },
    Order {
        batch: Arc<OrderBatch>,
        row: usize,
        ts: Option<i64>,
    },
    Dead {
        key: Option<Vec<u8>>,
        payload: Option<Vec<u8>>,
        code: &'static str,
        message: String,
    },
    /// At or before the warm-start snapshot's time: already in the state.
    Covered,
}

/// One decoded poll of a partition.
enum Decoded {
    Clicks(Arc<ClickBatch>),
    Orders(Arc<OrderBatch>),
}

impl Decoded {
    fn customer(&self, row: usize) -> &str {
        match self {
            Self::Clicks(b) => b.row(row).customer_id,
            Self::Orders(b) => b.row(row).customer_id,
        }
    }

    fn item(&self, row: usize, ts: Option<i64>) -> (Option<EventTime>, Item) {
        match self {
            Self::Clicks(b) => (Some(b.row(row).event_time), Item::Click { batch: Arc::clone(b), row, ts }),
            Self::Orders(b) => (Some(b.row(row).event_time), Item::Order { batch: Arc::clone(b), row, ts }),
        }
    }
}

/// What one micro-batch produces, before its transaction.
struct BatchOut {
    outputs: Vec<Output>,
    /// Customers whose segments changed, with the time of their last change.
    touched: BTreeMap<CustomerId, EventTime>,
    /// Kafka timestamps of the inputs that caused changes.
    causes_ts: Vec<(SegmentKind, i64)>,
    emit_time: EventTime,
}

/// One record to produce in the current transaction.
struct Output {
    topic: String,
    key: Option<Vec<u8>>,
    payload: Option<Vec<u8>>,
    headers: Option<OwnedHeaders>,
}

const TX_TIMEOUT: Duration = Duration::from_secs(60);

pub(crate) struct Pipeline {
    config: Config,
    metrics: Metrics,
    health: Arc<Health>,
    consumer: BaseConsumer<RecoveringContext>,
    producer: ThreadedProducer<DefaultProducerContext>,
    merger: Merger<Item>,
    engine: Engine,
    /// Committed offset per lane at assignment: outputs below it are suppressed.
    resume: HashMap<(Source, i32), i64>,
    /// Lanes still replaying below their committed offset.
    recovering: HashSet<(Source, i32)>,
    assigned: bool,
    last_committed: HashMap<(Source, i32), i64>,
    max_event_time: Option<EventTime>,
    max_future_ms: i64,
    summary: Summary,
    last_report: Instant,
    /// Feature-table requests of `/sql`, answered between batches.
    snapshots: Receiver<SnapshotRequest>,
    /// The snapshot this worker started from, if any.
    warm: Option<WarmStart>,
}

impl Pipeline {
    pub(crate) fn new(
        config: Config,
        metrics: Metrics,
        health: Arc<Health>,
        consumer: BaseConsumer<RecoveringContext>,
        producer: ThreadedProducer<DefaultProducerContext>,
        snapshots: Receiver<SnapshotRequest>,
        warm: Option<WarmStart>,
    ) -> Result<Self, WorkerError> {
        let max_future_ms = i64::try_from(config.time.max_future_ms).unwrap_or(i64::MAX);
        let mut engine = Engine::new(&config)?;
        if let Some(w) = &warm {
            let (categories, payments) = w.names();
            engine.store.seed_dictionaries(categories, payments);
        }
        Ok(Self {
            merger: Merger::new(Duration::from_millis(config.worker.partition_idle_ms)),
            config,
            metrics,
            health,
            consumer,
            producer,
            engine,
            resume: HashMap::new(),
            recovering: HashSet::new(),
            assigned: false,
            last_committed: HashMap::new(),
            max_event_time: None,
            max_future_ms,
            summary: Summary::default(),
            last_report: Instant::now(),
            snapshots,
            warm,
        })
    }

    fn source_of(&self, topic: &str) -> Option<Source> {
        if topic == self.config.topics.clickstream {
            Some(Source::Clicks)
        } else if topic == self.config.topics.orders {
            Some(Source::Orders)
        } else {
            None
        }
    }

    fn topic_of(&self, source: Source) -> &str {
        match source {
            Source::Clicks => &self.config.topics.clickstream,
            Source::Orders => &self.config.topics.orders,
        }
    }

    /// Runs until `shutdown` is cancelled; the batch in progress is finished
    /// and committed first.
    pub(crate) fn run(mut self, shutdown: &CancellationToken) -> Result<Summary, WorkerError> {
        while !shutdown.is_cancelled() {
            let messages = self.poll_batch()?;
            self.step(messages)?;
            self.answer_snapshots();
        }
        tracing::info!(summary = ?self.summary, "pipeline stopped; last batch committed");
        Ok(self.summary)
    }

    /// Collects up to `batch_max_events` messages within `batch_max_wait_ms`,
    /// handling rebalances as they happen.
    fn poll_batch(&mut self) -> Result<Vec<OwnedMessage>, WorkerError> {
        let max_wait = Duration::from_millis(self.config.worker.batch_max_wait_ms);
        let deadline = Instant::now() + max_wait;
        let mut out = Vec::new();
        while out.len() < self.config.worker.batch_max_events {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let polled = self.consumer.poll(left).map(|r| r.map(|m| m.detach()));
            let rebalanced = self.handle_rebalances()?;
            match polled {
                Some(Ok(m)) => out.push(m),
                Some(Err(e)) => tracing::warn!(error = %e, "consumer error (librdkafka retries by itself)"),
                None => break,
            }
            if rebalanced {
                // Messages polled before a revocation belong to the next owner now.
                out.retain(|m| self.owns(m.topic(), m.partition()));
                break;
            }
        }
        Ok(out)
    }

    fn owns(&self, topic: &str, partition: i32) -> bool {
        self.source_of(topic).is_some_and(|source| self.resume.contains_key(&(source, partition)))
    }

    /// Forgets everything about a partition: buffered records, customers,
    /// timers, stream time.
    fn forget_partition(&mut self, partition: i32) {
        let dropped = self.engine.forget_partition(partition);
        if self.merger.partitions().any(|p| p == partition) {
            self.merger.close(partition);
            tracing::info!(partition, dropped, "partition state dropped");
        }
    }

    /// Applies the rebalances seen during the last poll; true if there was one.
    fn handle_rebalances(&mut self) -> Result<bool, WorkerError> {
        let events = self.consumer.context().take_assignments();
        let rebalanced = !events.is_empty();
        for event in events {
            match event {
                Assignment::Assigned(parts) => {
                    let now = Instant::now();
                    for (topic, partition, committed) in parts {
                        let Some(source) = self.source_of(&topic) else { continue };
                        if !self.resume.keys().any(|(_, p)| *p == partition) {
                            // Nothing may survive from an earlier ownership of this partition.
                            self.forget_partition(partition);
                            if let Some(warm) = &self.warm {
                                for saved in warm.customers_of(partition) {
                                    self.engine.store.insert_saved(saved.clone());
                                }
                            }
                        }
                        self.merger.open(partition, now);
                        self.merger.set_floor(source, partition, committed.unwrap_or(0));
                        let resume = committed.unwrap_or(0);
                        self.resume.insert((source, partition), resume);
                        self.last_committed.insert((source, partition), resume);
                        if resume > 0 {
                            self.recovering.insert((source, partition));
                        }
                    }
                    self.assigned = true;
                    tracing::info!(
                        partitions = ?self.merger.partitions().collect::<Vec<_>>(),
                        replaying = self.recovering.len(),
                        "partitions assigned; replaying from the beginning to rebuild state"
                    );
                }
                Assignment::Revoked(parts) => {
                    for (topic, partition) in parts {
                        let Some(source) = self.source_of(&topic) else { continue };
                        self.resume.remove(&(source, partition));
                        self.recovering.remove(&(source, partition));
                        self.last_committed.remove(&(source, partition));
                        self.forget_partition(partition);
                    }
                    self.assigned = false;
                }
                Assignment::Failed(why) => return Err(WorkerError::Rebalance(why)),
            }
        }
        self.metrics.assigned_partitions.set(i64::try_from(self.resume.len()).unwrap_or(i64::MAX));
        Ok(rebalanced)
    }

    /// Decodes the polled messages into the merge buffer, processes what it
    /// releases, and commits the outputs with the offsets.
    fn step(&mut self, messages: Vec<OwnedMessage>) -> Result<(), WorkerError> {
        let started = Instant::now();
        self.buffer(messages)?;
        let released = self.merger.release(Instant::now());
        let mut out = BatchOut {
            outputs: Vec::new(),
            touched: BTreeMap::new(),
            causes_ts: Vec::new(),
            emit_time: EventTime::now(),
        };
        for (source, partition, pending) in released {
            let suppress = pending.offset < self.resume.get(&(source, partition)).copied().unwrap_or(0);
            if suppress {
                self.metrics.replayed.inc();
            }
            let topic = self.topic_of(source).to_owned();
            let (input, ts) = match &pending.item {
                Item::Click { batch, row, ts } => (Input::Click(batch.row(*row)), *ts),
                Item::Order { batch, row, ts } => (Input::Order(batch.row(*row)), *ts),
                Item::Dead { .. } | Item::Covered => (Input::Other, None),
            };
            if let Some(t) = pending.time {
                self.note_time(t);
            }
            for fired in self.engine.process(partition, pending.time, input) {
                if fired.cause.is_none() {
                    self.metrics.timers_fired.inc_by(fired.transitions.len() as u64);
                }
                if !suppress {
                    let cause = Cause { event_id: fired.cause.as_deref() };
                    let ts = if fired.cause.is_some() { ts } else { None };
                    self.emit(&mut out, &fired.id, &fired.transitions, cause, ts)?;
                }
            }
            if let Item::Dead { key, payload, code, message } = pending.item
                && !suppress
            {
                let headers = dead_letter_headers(&DeadLetter {
                    topic: &topic,
                    partition,
                    offset: pending.offset,
                    code,
                    message: &message,
                });
                out.outputs.push(Output {
                    topic: self.config.topics.dead_letter.clone(),
                    key,
                    payload,
                    headers: Some(headers),
                });
                self.metrics.dead_letters.with_label_values(&[topic.as_str()]).inc();
                self.summary.dead_letters += 1;
            }
        }
        self.engine.end_batch()?;
        self.advance_quiet_partitions(&mut out)?;
        let BatchOut { mut outputs, touched, causes_ts, .. } = out;
        for (id, updated_at) in &touched {
            if let Some(record) = self.engine.store.membership(id, *updated_at) {
                outputs.push(Output {
                    topic: self.config.topics.customer_segments.clone(),
                    key: Some(id.as_str().as_bytes().to_vec()),
                    payload: Some(record.to_avro()?),
                    headers: None,
                });
            }
        }
        let offsets = self.offsets_to_commit()?;
        if !outputs.is_empty() || offsets.count() > 0 {
            self.commit(outputs, &offsets)?;
            let now_ms = EventTime::now().millis();
            for (kind, ts) in causes_ts {
                let seconds = (now_ms - ts).max(0) as f64 / 1000.0;
                self.metrics.change_latency.with_label_values(&[kind.as_str()]).observe(seconds);
            }
            self.metrics.batch_seconds.observe(started.elapsed().as_secs_f64());
        }
        self.update_readiness();
        self.report();
        Ok(())
    }

    /// Partitions that received nothing for `time.idle_partition_ms` follow
    /// the worker's watermark: their due timers fire in this batch.
    fn advance_quiet_partitions(&mut self, out: &mut BatchOut) -> Result<(), WorkerError> {
        let idle = self.config.time.idle_partition_ms;
        if idle == 0 || !self.recovering.is_empty() {
            return Ok(());
        }
        let quiet: Vec<i32> =
            self.merger.quiet_partitions(Instant::now(), Duration::from_millis(idle)).collect();
        for partition in quiet {
            for fired in self.engine.advance_quiet(partition) {
                self.metrics.timers_fired.inc_by(fired.transitions.len() as u64);
                self.emit(out, &fired.id, &fired.transitions, Cause { event_id: None }, None)?;
            }
        }
        Ok(())
    }

    /// Answers waiting `/sql` requests with the feature table as of the
    /// latest event time seen (a query that gave up waiting is skipped).
    fn answer_snapshots(&mut self) {
        while let Ok(reply) = self.snapshots.try_recv() {
            if reply.is_closed() {
                continue;
            }
            let warm = self.warm.as_ref().map(|w| w.as_of);
            let as_of = self.max_event_time.max(warm).unwrap_or(EventTime::from_millis(0));
            if reply.send(snapshot(&self.engine.store, &self.config.features, as_of)).is_err() {
                tracing::debug!("a /sql request gave up before its snapshot was ready");
            }
        }
    }

    fn note_time(&mut self, t: EventTime) {
        self.max_event_time = Some(self.max_event_time.map_or(t, |m| m.max(t)));
    }

    fn buffer(&mut self, messages: Vec<OwnedMessage>) -> Result<(), WorkerError> {
        self.summary.events += messages.len() as u64;
        let mut groups: BTreeMap<(Source, i32), Vec<OwnedMessage>> = BTreeMap::new();
        for m in messages {
            match self.source_of(m.topic()) {
                Some(source) if self.resume.contains_key(&(source, m.partition())) => {
                    groups.entry((source, m.partition())).or_default().push(m);
                }
                _ => tracing::warn!(
                    topic = m.topic(),
                    partition = m.partition(),
                    "message from a partition we do not own"
                ),
            }
        }
        let schemas = Schemas::builtin();
        let now = Instant::now();
        for ((source, partition), msgs) in groups {
            let topic = self.topic_of(source).to_owned();
            self.metrics.events_in.with_label_values(&[topic.as_str()]).inc_by(msgs.len() as u64);
            let raw = msgs.iter().map(|m| RawRecord { payload: m.payload(), partition, offset: m.offset() });
            let (decoded, rejected) = match source {
                Source::Clicks => {
                    let d = decode_clicks(raw, schemas)?;
                    (Decoded::Clicks(Arc::new(d.batch)), d.rejected)
                }
                Source::Orders => {
                    let d = decode_orders(raw, schemas)?;
                    (Decoded::Orders(Arc::new(d.batch)), d.rejected)
                }
            };
            // Decoded rows keep input order minus the rejects: walk both in step.
            let mut rejected: HashMap<i64, DecodeError> =
                rejected.into_iter().map(|r| (r.offset, r.error)).collect();
            let mut row = 0;
            for m in &msgs {
                let (time, item) = match rejected.remove(&m.offset()) {
                    Some(error) => {
                        self.metrics.decode_errors.with_label_values(&[topic.as_str(), error.code()]).inc();
                        tracing::debug!(topic, partition, offset = m.offset(), %error, "undecodable record");
                        (None, dead(m, error.code(), error.to_string()))
                    }
                    None => {
                        row += 1;
                        self.admit(source, partition, m, &decoded, row - 1)
                    }
                };
                self.merger.push(source, partition, Pending { offset: m.offset(), time, item }, now);
            }
        }
        Ok(())
    }

    /// Checks a decoded record before it enters the merge: keyed by its
    /// customer, not from the future, not later than the allowed lateness (or
    /// the late policy says apply). Every check depends only on the record and
    /// its lane's history, so a replay decides the same.
    fn admit(
        &mut self,
        source: Source,
        partition: i32,
        m: &OwnedMessage,
        decoded: &Decoded,
        row: usize,
    ) -> (Option<EventTime>, Item) {
        let kafka_ts = m.timestamp().to_millis();
        let (time, item) = decoded.item(row, kafka_ts);
        let customer = decoded.customer(row);
        if m.key() != Some(customer.as_bytes()) {
            let message = format!(
                "message key {:?} is not the customer_id {customer:?}: key every record by customer_id so both topics are co-partitioned",
                m.key().map(String::from_utf8_lossy)
            );
            return (None, dead(m, "key_mismatch", message));
        }
        if let (Some(t), Some(warm)) = (time, &self.warm)
            && t <= warm.as_of
        {
            self.metrics.snapshot_covered.inc();
            return (None, Item::Covered);
        }
        let future_limit = kafka_ts.map(|ts| EventTime::from_millis(ts).plus_millis(self.max_future_ms));
        if let (Some(t), Some(limit)) = (time, future_limit)
            && t > limit
        {
            self.metrics.future_events.with_label_values(&[self.topic_of(source)]).inc();
            let message = format!(
                "event time {t} is more than time.max_future_ms ({} ms) after the record's Kafka timestamp",
                self.max_future_ms
            );
            return (None, dead(m, "future_event", message));
        }
        match time.and_then(|t| self.late_by(source, partition, t)) {
            Some(limit) if self.config.time.late_events == LatePolicy::DeadLetter => {
                let message = format!(
                    "event time {} is before {limit}: later than time.allowed_lateness_ms ({} ms) behind its partition",
                    time.map(|t| t.to_string()).unwrap_or_default(),
                    self.engine.lateness_ms()
                );
                (None, dead(m, "late_event", message))
            }
            _ => (time, item),
        }
    }

    /// Checks lateness (see [`Engine::late_by`]) and counts a late record.
    fn late_by(&mut self, source: Source, partition: i32, t: EventTime) -> Option<EventTime> {
        let limit = self.engine.late_by(source, partition, t)?;
        let topic = self.topic_of(source).to_owned();
        self.metrics.late_events.with_label_values(&[topic.as_str()]).inc();
        Some(limit)
    }

    /// Turns transitions into change records of this batch, marks the
    /// customer for a membership record, and remembers the cause's Kafka
    /// timestamp for the latency histogram.
    fn emit(
        &mut self,
        out: &mut BatchOut,
        id: &CustomerId,
        transitions: &[Transition],
        cause: Cause<'_>,
        ts: Option<i64>,
    ) -> Result<(), WorkerError> {
        let Some(last) = transitions.last() else { return Ok(()) };
        out.touched.insert(id.clone(), last.at);
        out.causes_ts.extend(transitions.iter().filter_map(|t| Some((t.kind, ts?))));
        for t in transitions {
            let (from, to) = (t.from.unwrap_or("none"), t.to.unwrap_or("none"));
            self.metrics
                .transitions
                .with_label_values(&[t.kind.as_str(), from, to, t.trigger.as_str()])
                .inc();
            for change in to_changes(id, t, cause, out.emit_time) {
                self.metrics
                    .segment_changes
                    .with_label_values(&[change.kind.as_str(), change.change.as_str()])
                    .inc();
                self.summary.changes += 1;
                out.outputs.push(change_output(&self.config.topics.segment_changes, &change)?);
            }
        }
        Ok(())
    }

    /// Offsets to commit now: per lane, the first unprocessed record, never
    /// below what was committed before.
    fn offsets_to_commit(&mut self) -> Result<TopicPartitionList, WorkerError> {
        let mut tpl = TopicPartitionList::new();
        let lanes: Vec<(Source, i32)> = self.resume.keys().copied().collect();
        for (source, partition) in lanes {
            let Some(next) = self.merger.commit_offset(source, partition) else { continue };
            let floor = self.resume.get(&(source, partition)).copied().unwrap_or(0);
            let offset = next.max(floor);
            if self.last_committed.get(&(source, partition)) == Some(&offset) {
                continue;
            }
            let topic = self.topic_of(source).to_owned();
            tpl.add_partition_offset(&topic, partition, Offset::Offset(offset))
                .map_err(|source| WorkerError::Transaction { context: "building the offset list", source })?;
            self.last_committed.insert((source, partition), offset);
        }
        Ok(tpl)
    }

    fn commit(&mut self, outputs: Vec<Output>, offsets: &TopicPartitionList) -> Result<(), WorkerError> {
        let tx =
            |context: &'static str| move |source: KafkaError| WorkerError::Transaction { context, source };
        self.producer.begin_transaction().map_err(tx("beginning a transaction"))?;
        let result = (|| {
            for out in &outputs {
                self.send(out)?;
            }
            if offsets.count() > 0 {
                let group = self.consumer.group_metadata().ok_or(WorkerError::NoGroupMetadata)?;
                self.producer
                    .send_offsets_to_transaction(offsets, &group, TX_TIMEOUT)
                    .map_err(tx("adding input offsets to the transaction"))?;
            }
            self.producer.commit_transaction(TX_TIMEOUT).map_err(tx("committing the transaction"))
        })();
        match result {
            Ok(()) => {
                self.metrics.transactions.with_label_values(&["committed"]).inc();
                self.summary.transactions += 1;
                Ok(())
            }
            Err(e) => {
                self.metrics.transactions.with_label_values(&["aborted"]).inc();
                if let Err(abort) = self.producer.abort_transaction(TX_TIMEOUT) {
                    tracing::error!(error = %abort, "aborting the failed transaction also failed");
                }
                Err(e)
            }
        }
    }

    fn send(&self, out: &Output) -> Result<(), WorkerError> {
        loop {
            let mut record: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(&out.topic);
            if let Some(k) = &out.key {
                record = record.key(k.as_slice());
            }
            if let Some(p) = &out.payload {
                record = record.payload(p.as_slice());
            }
            if let Some(h) = &out.headers {
                record = record.headers(h.clone());
            }
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                // The local queue is full: the background thread is delivering; wait a little.
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err((source, _)) => {
                    return Err(WorkerError::Transaction { context: "producing an output", source });
                }
            }
        }
    }

    /// Ready once partitions are assigned and every replaying lane has read
    /// up to its committed offset.
    fn update_readiness(&mut self) {
        if !self.recovering.is_empty()
            && let Ok(positions) = self.consumer.position()
        {
            for e in positions.elements() {
                let Some(source) = self.source_of(e.topic()) else { continue };
                let key = (source, e.partition());
                if let (Offset::Offset(pos), Some(resume)) = (e.offset(), self.resume.get(&key))
                    && pos >= *resume
                {
                    self.recovering.remove(&key);
                    self.merger.finish_replay(key.0, key.1);
                }
            }
            if self.recovering.is_empty() {
                tracing::info!(
                    customers = self.engine.store.len(),
                    "state rebuilt up to the committed offsets"
                );
            }
        }
        self.health.set_ready(self.assigned && self.recovering.is_empty());
    }

    fn report(&mut self) {
        for ((kind, segment), n) in self.engine.store.population() {
            self.metrics.population.with_label_values(&[kind.as_str(), segment]).set(n);
        }
        self.metrics.customers.set(i64::try_from(self.engine.store.len()).unwrap_or(i64::MAX));
        self.metrics
            .timers_pending
            .set(i64::try_from(self.engine.store.pending_timers()).unwrap_or(i64::MAX));
        if let Some(t) = self.max_event_time {
            self.metrics.event_time_max.set(t.millis() / 1000);
            self.metrics.watermark_lag.set((EventTime::now().millis() - t.millis()) / 1000);
        }
        if self.last_report.elapsed() >= Duration::from_secs(10) {
            self.last_report = Instant::now();
            self.metrics.state_bytes.set(i64::try_from(self.engine.store.approx_bytes()).unwrap_or(i64::MAX));
            tracing::info!(
                events = self.summary.events,
                changes = self.summary.changes,
                customers = self.engine.store.len(),
                buffered = self.merger.buffered(),
                "progress"
            );
        }
    }
}

fn dead(m: &OwnedMessage, code: &'static str, message: String) -> Item {
    Item::Dead { key: m.key().map(<[u8]>::to_vec), payload: m.payload().map(<[u8]>::to_vec), code, message }
}

fn change_output(topic: &str, change: &SegmentChange) -> Result<Output, WorkerError> {
    Ok(Output {
        topic: topic.to_owned(),
        key: Some(change.customer_id.as_str().as_bytes().to_vec()),
        payload: Some(change.to_avro()?),
        headers: None,
    })
}
