//! The Kafka loop of a worker. It only moves records: from the input
//! consumers into the [`Processor`], from the processor into a Kafka
//! transaction, and commits that transaction with the input offsets every
//! `worker.commit_interval_ms`. Everything the records cause is decided by
//! the processor (see ARCHITECTURE.md for the invariants).
//!
//! Rebalances (eager protocol, handled here rather than in librdkafka's
//! callback): before giving partitions up, the worker commits what it did
//! with them while its generation is still valid, and keeps their state for
//! a moment. When the group hands a partition back and nobody committed it
//! since (the committed token is the worker's own), the state is kept and
//! reading resumes at the committed offsets; otherwise the partition is
//! rebuilt from the start of its logs, repeating the committed decisions,
//! with outputs suppressed up to the committed offsets.

mod checkpoints;
mod erasures;
mod gaps;
mod inputs;
mod models;
mod outbox;
mod ownership;
mod probe;
mod progress;
mod rebalance;
mod rollouts;
mod transaction;
mod unowned;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::array::RecordBatch;
use rdkafka::message::{Message, OwnedMessage};
use segstream_config::{Config, ProcessingGuarantee};
use segstream_events::schema::{CUSTOMER_SEGMENTS_AVSC, SEGMENT_CHANGES_AVSC};
use segstream_events::{CustomerId, EventTime, Lane, SegmentKind};
use segstream_kafka::{check_copartitioned, describe_shares, wait_for_broker};
use segstream_registry::RegistryError;
use segstream_segments::SegmentRules;
use segstream_telemetry::{Health, Metrics};
use tokio_util::sync::CancellationToken;

use crate::admission::Incoming;
use crate::error::WorkerError;
use crate::lookup::{Snapshots, snapshot};
use crate::processor::{Emitted, Processor};
use crate::snapshot::WarmStart;

use self::checkpoints::{Checkpoints, Committed};
use self::erasures::Erasures;
use self::gaps::{OffsetWatch, Step};
use self::inputs::Inputs;
use self::models::Models;
use self::outbox::{Outbox, Record};
use self::ownership::{DecisionLog, Owned, Tokens};
use self::probe::Probe;
use self::progress::Progress;
use self::rollouts::Rollouts;
use self::unowned::{Unowned, Verdict};

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

impl Summary {
    /// Adds another pipeline thread's totals.
    pub(crate) fn add(&mut self, other: &Self) {
        self.events += other.events;
        self.changes += other.changes;
        self.dead_letters += other.dead_letters;
        self.transactions += other.transactions;
    }
}

/// A lane whose backlog in the merge exceeds this many micro-batches is
/// paused until it is down to one.
const PAUSE_AT_BATCHES: usize = 4;

/// How long start-up waits for the broker before giving up.
const BROKER_WAIT: Duration = Duration::from_secs(30);

/// How long a look at the group's shares may take (it holds up the pipeline).
const DESCRIBE_WAIT: Duration = Duration::from_secs(2);

/// See the module documentation.
#[derive(Debug)]
pub(crate) struct Pipeline {
    config: Config,
    metrics: Metrics,
    health: Arc<Health>,
    inputs: Inputs,
    outbox: Outbox,
    processor: Processor,
    decision_log: DecisionLog,
    probe: Probe,
    tokens: Tokens,
    /// Partition pairs assigned now, as of their last commit.
    owned: BTreeMap<i32, Owned>,
    /// Revoked partition pairs whose state is kept until the next assignment.
    parked: BTreeMap<i32, Owned>,
    /// Assigned partition pairs not processed, and why (the records their
    /// state needs are gone).
    stopped: BTreeMap<i32, String>,
    /// Partitions of each input topic (and of the decisions topic), checked
    /// again at every assignment.
    partitions: usize,
    /// Where the owned partitions' state is checkpointed (`None`: off).
    checkpoints: Option<Checkpoints>,
    /// The snapshot a partition without a checkpoint starts from
    /// (`worker.warm_start`).
    warm: Option<WarmStart>,
    /// An assignment (perhaps empty) is in force.
    assigned: bool,
    /// When the group consumer was fenced by its own earlier session.
    rejoins: Vec<Instant>,
    /// Customers whose membership record is due at the next commit.
    touched: BTreeMap<CustomerId, EventTime>,
    /// Kafka timestamps of the inputs behind this transaction's changes.
    causes_ts: Vec<(SegmentKind, i64)>,
    /// Since when something is waiting to be committed.
    dirty_since: Option<Instant>,
    /// When the last commit began.
    last_commit: Option<Instant>,
    /// The last cycle released a full micro-batch: more may be ready.
    backlogged: bool,
    summary: Summary,
    last_report: Instant,
    /// Feature-table requests of `/sql`, answered between batches.
    snapshots: Snapshots,
    /// Whether the input lanes come in offset order and whole.
    offsets: OffsetWatch,
    /// The feature table the last requests read, and when it was built.
    sql_table: Option<(Instant, RecordBatch)>,
    /// What should move, for `/healthz`.
    progress: Progress,
    /// The schema ids the outputs carry.
    output_ids: OutputIds,
    /// Erasure requests, and the tombstones written.
    erasures: Erasures,
    /// The segment definitions the group should be under.
    rollouts: Rollouts,
    models: Models,
    /// Input partitions nobody in the group holds.
    unowned: Unowned,
}

/// The schema ids of the output topics: with a schema registry, the ids it
/// gave our schemas under `<topic>-value`; without, the fixed ones.
#[derive(Debug, Clone, Copy, Default)]
struct OutputIds {
    registered: Option<(u32, u32)>,
}

impl OutputIds {
    /// Registers the output schemas when a registry is configured.
    fn register(config: &Config, shutdown: &CancellationToken) -> Result<Self, WorkerError> {
        let Some(registry) = segstream_registry::Registry::from_config(&config.schema_registry)? else {
            return Ok(Self::default());
        };
        let (topics, stop) = (&config.topics, || shutdown.is_cancelled());
        let register =
            |topic: &str, schema: &str| registry.waiting(&stop, |r| r.register_value_schema(topic, schema));
        let changes = register(&topics.segment_changes, SEGMENT_CHANGES_AVSC)?;
        let memberships = register(&topics.customer_segments, CUSTOMER_SEGMENTS_AVSC)?;
        tracing::info!(registry = registry.url(), changes, memberships, "output schemas registered");
        Ok(Self { registered: Some((changes, memberships)) })
    }

    fn changes(self, payload: &mut [u8]) {
        if let Some((id, _)) = self.registered {
            segstream_events::wire::set_schema_id(payload, id);
        }
    }

    fn memberships(self, payload: &mut [u8]) {
        if let Some((_, id)) = self.registered {
            segstream_events::wire::set_schema_id(payload, id);
        }
    }
}

impl Pipeline {
    /// Connects to Kafka, checks the topics, fences any previous
    /// incarnation and joins the group.
    pub(crate) fn connect(
        config: Config,
        metrics: Metrics,
        health: Arc<Health>,
        snapshots: Snapshots,
        runtime: tokio::runtime::Handle,
        shutdown: &CancellationToken,
    ) -> Result<Self, WorkerError> {
        let inputs = Inputs::new(&config, &metrics)?;
        wait_for_broker(inputs.client(), &config.kafka.bootstrap_servers, BROKER_WAIT)?;
        let topics = &config.topics;
        let count =
            check_copartitioned(inputs.client(), &topics.clickstream, &topics.orders, &topics.decisions)?;
        let partitions = i32::try_from(count).unwrap_or(i32::MAX);
        let warm = match config.worker.warm_start.as_str() {
            "" => None,
            path => Some(WarmStart::load(std::path::Path::new(path), &config.features, partitions)?),
        };
        // Transactions first: a twin's producer then fences this worker's
        // before its consumer can fence this one's (see `member_fenced`).
        let outbox = Outbox::new(&config)?;
        inputs.join()?;
        tracing::info!(
            group = %config.kafka.group_id,
            instance = %config.instance_id(),
            transactional_id = %outbox.transactional_id(),
            partitions,
            clickstream = %topics.clickstream,
            orders = %topics.orders,
            "worker started"
        );
        let config_health = config.health.clone();
        let unowned = Unowned::new(Duration::from_millis(config.worker.session_timeout_ms), Instant::now());
        let output_ids = OutputIds::register(&config, shutdown)?;
        // Before any partition is taken: a restored or rebuilt state never
        // brings an erased customer back.
        let (erasures, known) = Erasures::load(&config)?;
        let mut processor = Processor::new(&config, metrics.clone())?;
        processor.check_placement(partitions);
        for (id, at) in known {
            processor.erase(&id, at);
        }
        let configured = SegmentRules::from_config(&config)?;
        let models = Models::load(&config, configured.clone(), metrics.clone())?;
        let rollouts = Rollouts::load(&config, configured, metrics.clone())?;
        Ok(Self {
            output_ids,
            unowned,
            erasures,
            rollouts,
            models,
            checkpoints: Checkpoints::new(&config, &metrics, runtime)?,
            partitions: count,
            processor,
            warm,
            decision_log: DecisionLog::new(&config)?,
            probe: Probe::new(&config, partitions)?,
            tokens: Tokens::new(&config.instance_id()),
            config,
            metrics,
            health,
            inputs,
            outbox,
            owned: BTreeMap::new(),
            parked: BTreeMap::new(),
            stopped: BTreeMap::new(),
            assigned: false,
            rejoins: Vec::new(),
            touched: BTreeMap::new(),
            causes_ts: Vec::new(),
            dirty_since: None,
            last_commit: None,
            backlogged: false,
            summary: Summary::default(),
            last_report: Instant::now(),
            snapshots,
            offsets: OffsetWatch::default(),
            sql_table: None,
            progress: Progress::new(
                Duration::from_millis(config_health.stall_ms),
                config_health.producer_queue_max,
            ),
        })
    }

    /// Runs until `shutdown` is cancelled; what was processed is committed
    /// before it returns.
    pub(crate) fn run(mut self, shutdown: &CancellationToken) -> Result<Summary, WorkerError> {
        self.processor.stop_waiting_on(shutdown.clone());
        while !shutdown.is_cancelled() {
            match self.cycle() {
                // Records held for the registry were not admitted: what was
                // processed before them commits below, as at any stop.
                Err(WorkerError::Registry(RegistryError::Stopped { .. })) => break,
                other => other?,
            }
            // Also after a cycle cut short by an aborted transaction.
            self.watch_group()?;
            self.check_progress();
            self.answer_snapshots();
        }
        if self.commit()? {
            let all: Vec<i32> = self.owned.keys().copied().collect();
            self.checkpoint(&all);
        } else {
            tracing::warn!("the last transaction did not commit: the next owner redoes its work");
        }
        if let Some(c) = &mut self.checkpoints {
            c.finish();
        }
        tracing::info!(summary = ?self.summary, "pipeline stopped; last transaction committed");
        Ok(self.summary)
    }

    /// One poll, what it releases, and a commit when one is due.
    fn cycle(&mut self) -> Result<(), WorkerError> {
        if !self.apply_erasures()? {
            return self.restore_all();
        }
        let polled = self.inputs.poll(self.config.worker.batch_max_events, self.poll_wait())?;
        if polled.fenced {
            return self.member_fenced();
        }
        let started = Instant::now();
        self.summary.events += polled.count as u64;
        // Records polled before a rebalance are admitted first: a partition
        // the worker keeps is not read again (under cooperative rebalancing
        // its fetch position stays past them), and those of a partition it
        // gives up go with its state, for the next owner to read again from
        // the committed offsets.
        let mut refetching = Vec::new();
        for ((lane, partition), messages) in &polled.records {
            if !self.owned.contains_key(partition) {
                continue;
            }
            let (incoming, refetch) = self.whole(*lane, *partition, messages)?;
            if refetch {
                refetching.push((*lane, *partition));
            }
            self.processor.push(*lane, *partition, &incoming)?;
        }
        for (lane, partition) in polled.ends {
            // A lane read again is not at its end.
            if self.owned.contains_key(&partition) && !refetching.contains(&(lane, partition)) {
                self.processor.mark_end(lane, partition, started);
            }
        }
        if !polled.rebalances.is_empty() {
            for rebalance in polled.rebalances {
                self.rebalance(rebalance)?;
            }
            return Ok(());
        }
        let mut out = Emitted::default();
        let redefined = self.roll_out(&mut out)?;
        let batch = self.config.worker.batch_max_events;
        let released = self.processor.process(started, batch, &mut out)?;
        self.backlogged = released >= batch;
        self.pace_lanes()?;
        let followed = self.follow_quiet(started, &mut out)?;
        // Records released without output still move the offsets to commit;
        // records the merge still holds do not (a commit now would not
        // carry them, and would push the one that does an interval later).
        if released > 0 || followed || redefined || !out.is_empty() {
            self.dirty_since.get_or_insert(started);
        }
        if !self.publish(out)? {
            return self.restore_all();
        }
        if polled.count > 0 {
            self.metrics.batch_seconds.observe(started.elapsed().as_secs_f64());
        }
        if self.until_commit() == Some(Duration::ZERO) && !self.commit()? {
            return self.restore_all();
        }
        if self.dirty_since.is_none() && !self.outbox.is_open() {
            self.checkpoint_due();
        }
        self.outbox.poll();
        self.update_readiness();
        self.report();
        Ok(())
    }

    /// A lane's polled records in offset order and whole (see
    /// [`gaps`]): those delivered again are dropped; at a skip, the lane is
    /// read again from the first missing offset and the records from the
    /// skip on are dropped (true: the lane is read again).
    fn whole<'m>(
        &mut self,
        lane: Lane,
        partition: i32,
        messages: &'m [OwnedMessage],
    ) -> Result<(Vec<Incoming<'m>>, bool), WorkerError> {
        let mut incoming = Vec::with_capacity(messages.len());
        let mut expected = self.processor.expected_offset(lane, partition);
        let topic = self.inputs.lane_topic(lane).to_owned();
        for m in messages {
            let step = match expected.as_mut() {
                Some(next) => self.offsets.step(lane, partition, next, m.offset()),
                None => Step::Take,
            };
            let jumped = |kind: &str, records: i64| {
                let records = u64::try_from(records).unwrap_or(0);
                self.metrics.input_offset_jumps.with_label_values(&[topic.as_str(), kind]).inc_by(records);
            };
            match step {
                Step::Take => {}
                Step::TakeRecovered { skipped } => {
                    jumped("skipped", skipped);
                    tracing::warn!(
                        topic,
                        partition,
                        from = m.offset(),
                        skipped,
                        "the consumer had skipped records: read again"
                    );
                }
                Step::TakeAfterGap { missing, first } => {
                    jumped("log_gap", missing);
                    if first {
                        tracing::info!(
                            topic,
                            partition,
                            before = m.offset(),
                            missing,
                            "a gap in the input's log (read twice): taken as it is, and this log's later gaps too (transactional markers, aborted or compacted records)"
                        );
                    }
                }
                Step::Repeat => {
                    jumped("repeat", 1);
                    continue;
                }
                Step::Refetch { from } => {
                    tracing::info!(
                        topic,
                        partition,
                        expected = from,
                        got = m.offset(),
                        "records missing before this one: reading the lane again from the expected offset"
                    );
                    self.inputs.refetch(lane, partition, from)?;
                    return Ok((incoming, true));
                }
            }
            incoming.push(Incoming {
                key: m.key(),
                payload: m.payload(),
                offset: m.offset(),
                timestamp: m.timestamp().to_millis(),
            });
        }
        Ok((incoming, false))
    }

    fn commit_interval(&self) -> Duration {
        Duration::from_millis(self.config.worker.commit_interval_ms())
    }

    /// How long until the next commit is due (zero: now), if anything
    /// waits to be committed. Commits keep a cadence of one per
    /// `worker.commit_interval_ms` counted from the last one's start, as
    /// Kafka Streams counts `commit.interval.ms`: a change waits at most an
    /// interval for its transaction to begin committing, however long the
    /// commit before it took, and the first change after a quiet spell
    /// commits at once. Over a backlog (its events are not fresh, and each
    /// commit stops the pipeline) and under at-least-once (its changes are
    /// readable before their commit) a whole interval of processing comes
    /// between two commits.
    fn until_commit(&self) -> Option<Duration> {
        let dirty = self.dirty_since?;
        let cadence =
            !self.backlogged && self.config.worker.processing_guarantee == ProcessingGuarantee::ExactlyOnce;
        let since = match self.last_commit {
            Some(last) if cadence => last,
            None if cadence => return Some(Duration::ZERO),
            _ => dirty,
        };
        Some(self.commit_interval().saturating_sub(since.elapsed()))
    }

    /// How long the next poll may wait: never past the commit that is due,
    /// not at all while the merge has more to release.
    fn poll_wait(&self) -> Duration {
        if self.backlogged {
            return Duration::ZERO;
        }
        let wait = Duration::from_millis(self.config.worker.batch_max_wait_ms);
        self.until_commit().map_or(wait, |due| wait.min(due))
    }

    /// Bounds the merge buffer: a lane holding more than
    /// [`PAUSE_AT_BATCHES`] micro-batches (its co-partition is behind) is
    /// not fetched until it is down to one.
    fn pace_lanes(&mut self) -> Result<(), WorkerError> {
        let batch = self.config.worker.batch_max_events;
        for &partition in self.owned.keys() {
            for lane in Lane::BOTH {
                let backlog = self.processor.backlog(lane, partition);
                let paused = self.inputs.is_paused(lane, partition);
                if !paused && backlog > PAUSE_AT_BATCHES * batch {
                    self.inputs.set_paused(lane, partition, true)?;
                } else if paused && backlog <= batch {
                    self.inputs.set_paused(lane, partition, false)?;
                }
            }
        }
        self.metrics.paused_lanes.set(i64::try_from(self.inputs.paused_lanes()).unwrap_or(i64::MAX));
        Ok(())
    }

    /// Puts the definitions and the trained model the group should be
    /// under in force in every owned partition not under them yet (a
    /// rollout, a new model, a partition started afresh, or a checkpoint of
    /// others), before the next records: a recorded decision each. True if
    /// any moved.
    ///
    /// A partition the group never committed gets its decision before its
    /// first record, so it changes no customer and is where any run, live
    /// or replayed, starts: only a rollout's point depends on timing.
    fn roll_out(&mut self, out: &mut Emitted) -> Result<bool, WorkerError> {
        let desired = Arc::clone(self.rollouts.desired());
        let mut moved = false;
        for &partition in self.owned.keys() {
            if self.processor.repeating(partition) {
                continue;
            }
            let (definitions, recorded) = self.processor.definitions(partition);
            if recorded && definitions.text == desired.definitions.text {
                continue;
            }
            let from = definitions.version;
            let before = out.changes.len();
            self.processor.apply_definitions(partition, &desired.definitions, out)?;
            tracing::info!(
                partition,
                from,
                to = desired.definitions.version,
                changes = out.changes.len() - before,
                "segment definitions put in force"
            );
            moved = true;
        }
        let Some(model) = self.models.desired().cloned() else { return Ok(moved) };
        for &partition in self.owned.keys() {
            let from = self.processor.model_version(partition);
            if self.processor.repeating(partition) || from == Some(model.version) {
                continue;
            }
            let before = out.changes.len();
            self.processor.apply_model(partition, model.version, &model.record, out)?;
            let changes = out.changes.len() - before;
            tracing::info!(partition, ?from, to = model.version, changes, "trained model put in force");
            moved = true;
        }
        Ok(moved)
    }

    /// Quiet partitions follow the input's watermark.
    fn follow_quiet(&mut self, now: Instant, out: &mut Emitted) -> Result<bool, WorkerError> {
        let idle = self.config.time.idle_partition_ms;
        if idle == 0 {
            return Ok(false);
        }
        let quiet = self.processor.quiet_partitions(now, Duration::from_millis(idle));
        if quiet.is_empty() {
            return Ok(false);
        }
        let Some(target) = self.probe.target(now)? else { return Ok(false) };
        let mut followed = false;
        for partition in quiet {
            let stream = self.processor.stream_time(partition);
            if stream.is_none_or(|s| s < target) {
                let before = out.changes.len();
                let done = self.processor.follow(partition, target, out)?;
                tracing::info!(
                    partition,
                    from = ?stream,
                    to = %target,
                    changes = out.changes.len() - before,
                    done,
                    "quiet partition follows the input's watermark"
                );
                // Not done: a part of its timers fired; the rest go next cycle.
                self.backlogged |= !done;
                followed = true;
            }
        }
        Ok(followed)
    }

    /// Answers waiting `/sql` requests with the feature table as of the
    /// latest event time seen, rebuilt only when the last copy is older
    /// than `sql.refresh_ms` (a query that gave up waiting is skipped).
    fn answer_snapshots(&mut self) {
        let refresh = Duration::from_millis(self.config.sql.refresh_ms);
        // Every cycle: the other threads' answers are as of this thread's time too.
        let as_of = self.snapshots.as_of(self.processor.max_event_time());
        while let Ok(reply) = self.snapshots.requests.try_recv() {
            if reply.is_closed() {
                continue;
            }
            let table = match &self.sql_table {
                Some((built, table)) if built.elapsed() < refresh => Ok(table.clone()),
                _ => {
                    let table = snapshot(self.processor.store(), &self.config.features, as_of);
                    if let Ok(t) = &table {
                        self.sql_table = Some((Instant::now(), t.clone()));
                    }
                    table
                }
            };
            if reply.send(table).is_err() {
                tracing::debug!("a /sql request gave up before its snapshot was ready");
            }
        }
    }

    /// The state equals the committed state: the partition whose
    /// checkpoint is the oldest is checkpointed if its interval has passed.
    fn checkpoint_due(&mut self) {
        let Self { checkpoints, processor, owned, decision_log, .. } = self;
        if let Some(c) = checkpoints {
            c.maybe_take(processor, &|p| committed_point(owned, decision_log, p));
        }
    }

    /// Right after a commit: these owned partitions are checkpointed (on
    /// revocation and at shutdown).
    fn checkpoint(&mut self, partitions: &[i32]) {
        let Self { checkpoints, processor, owned, decision_log, .. } = self;
        if let Some(c) = checkpoints {
            for &partition in partitions.iter().filter(|p| owned.contains_key(p)) {
                c.take(processor, partition, &|p| committed_point(owned, decision_log, p));
            }
        }
    }

    /// Ready once an assignment is in force, no partition is rebuilding and
    /// none is stopped.
    fn update_readiness(&mut self) {
        let rebuilding = self.owned.keys().filter(|p| self.processor.rebuilding(**p)).count();
        self.metrics.partitions_rebuilding.set(i64::try_from(rebuilding).unwrap_or(i64::MAX));
        self.metrics.partitions_stopped.set(i64::try_from(self.stopped.len()).unwrap_or(i64::MAX));
        let reason =
            self.stopped.iter().map(|(p, why)| format!("partition {p} stopped: {why}")).collect::<Vec<_>>();
        self.health.set_reason(&reason.join("; "));
        let ready = self.assigned && rebuilding == 0 && self.stopped.is_empty();
        if ready && !self.health.is_ready() && !self.owned.is_empty() {
            tracing::info!(
                customers = self.processor.store().len(),
                "state rebuilt up to the committed offsets"
            );
        }
        self.health.set_ready(ready);
    }

    /// New erasures drop the customers' state here; the tombstones of the
    /// erased customers of the partitions this worker owns (and has
    /// rebuilt) go into the open transaction, once per run. False if the
    /// transaction failed.
    fn apply_erasures(&mut self) -> Result<bool, WorkerError> {
        for (id, at) in self.erasures.poll_new() {
            let held = self.processor.erase(&id, at);
            // Its membership record must not follow its tombstone.
            self.touched.remove(&id);
            self.metrics.erasures.with_label_values(&[if held { "dropped_state" } else { "recorded" }]).inc();
        }
        let partitions = i32::try_from(self.partitions).unwrap_or(i32::MAX);
        let eligible: Vec<i32> =
            self.owned.keys().copied().filter(|p| !self.processor.rebuilding(*p)).collect();
        let due = self.erasures.unwritten(partitions, eligible);
        for id in due {
            let record = Record {
                topic: &self.config.topics.customer_segments,
                partition: None,
                key: Some(id.as_str().as_bytes()),
                payload: None,
                headers: None,
            };
            let sent = self.outbox.send_output(record);
            if !self.settle(sent)? {
                return Ok(false);
            }
            self.erasures.written(id);
            self.dirty_since.get_or_insert_with(Instant::now);
        }
        Ok(true)
    }

    /// Looks at the group's shares when it is time; leaves the group and
    /// joins it again when partitions nobody holds call for it (see
    /// [`unowned`]).
    fn watch_group(&mut self) -> Result<(), WorkerError> {
        let now = Instant::now();
        if !self.assigned || !self.unowned.due(now) {
            return Ok(());
        }
        let (group, topic) = (&self.config.kafka.group_id, &self.config.topics.clickstream);
        let shares = describe_shares(self.inputs.client(), group, topic, DESCRIBE_WAIT)
            .inspect_err(
                |e| tracing::debug!(error = %e, "the group's shares are unknown; looking again later"),
            )
            .ok();
        let partitions = i32::try_from(self.partitions).unwrap_or(i32::MAX);
        let held = self.owned.len() + self.stopped.len();
        let verdict = self.unowned.seen(now, shares.as_ref(), partitions, held);
        let gap = match &verdict {
            Verdict::Held => None,
            Verdict::Gap { partitions, since } | Verdict::Repair { partitions, since } => {
                Some((partitions.clone(), *since))
            }
        };
        let count = gap.as_ref().map_or(0, |(p, _)| p.len());
        self.metrics.group_unowned_partitions.set(i64::try_from(count).unwrap_or(i64::MAX));
        self.progress.unowned(gap);
        if let Verdict::Repair { partitions, since } = verdict {
            tracing::warn!(
                ?partitions,
                seconds = now.saturating_duration_since(since).as_secs(),
                held,
                "input partitions held by no member of the group (a member died between the rounds of a rebalance and came back): leaving the group and joining again so that it rebalances"
            );
            self.metrics.rebalances.with_label_values(&["repair"]).inc();
            self.assigned = false;
            self.inputs.leave_and_rejoin()?;
            self.update_readiness();
        }
        Ok(())
    }

    /// Tells `/healthz` what has stood still too long.
    fn check_progress(&mut self) {
        let now = Instant::now();
        // A partition rebuilding its state does not move its lanes by design:
        // /readyz tells that (the commit clock covers a rebuild that loops).
        let processor = &self.processor;
        let counted = |p: i32| !processor.rebuilding(p);
        let owned = &self.owned;
        self.progress.keep(|p| owned.contains_key(&p) && counted(p));
        for (&partition, o) in owned.iter().filter(|(p, _)| counted(**p)) {
            for lane in Lane::BOTH {
                let waiting = i64::try_from(processor.backlog(lane, partition)).unwrap_or(i64::MAX);
                let offset = o.committed.map(|c| if lane == Lane::Clicks { c.clicks } else { c.orders });
                self.progress.lane(now, lane, partition, offset, waiting);
            }
        }
        self.progress.owned(now, owned.keys().copied());
        let waiting = self.dirty_since.is_some() || processor.buffered() > 0 || self.outbox.is_open();
        self.progress.work_waiting(waiting);
        self.progress.queue(now, self.outbox.in_flight());
        let problems = self.progress.problems(now);
        if !problems.is_empty() && self.health.problems().is_empty() {
            tracing::warn!(problems = %problems.join("; "), "unhealthy: the worker does not progress");
        }
        self.health.set_problems(&problems.join("; "));
    }

    fn report(&mut self) {
        if let Some(c) = &mut self.checkpoints {
            c.collect();
        }
        let store = self.processor.store();
        for ((kind, segment), n) in store.population() {
            self.metrics.population.with_label_values(&[kind.as_str(), segment]).set(n);
        }
        self.metrics.customers.set(i64::try_from(store.len()).unwrap_or(i64::MAX));
        self.metrics.timers_pending.set(i64::try_from(store.pending_timers()).unwrap_or(i64::MAX));
        if let Some(t) = self.processor.max_event_time() {
            self.metrics.event_time_max.set(t.millis() / 1000);
            self.metrics.watermark_lag.set((EventTime::now().millis() - t.millis()) / 1000);
        }
        if self.last_report.elapsed() >= Duration::from_secs(10) {
            self.last_report = Instant::now();
            self.metrics.state_bytes.set(i64::try_from(store.approx_bytes()).unwrap_or(i64::MAX));
            self.metrics.customers_compacted.set(i64::try_from(store.compacted()).unwrap_or(i64::MAX));
            tracing::info!(
                events = self.summary.events,
                changes = self.summary.changes,
                customers = store.len(),
                buffered = self.processor.buffered(),
                "progress"
            );
        }
    }
}

/// A partition's committed point (decision records, the decisions topic's
/// end, offsets), if it has committed any: what a checkpoint of it must
/// match. The end is asked of the broker (checkpoints are rare); if it
/// cannot be, a restore reads the decisions from the start.
fn committed_point(owned: &BTreeMap<i32, Owned>, log: &DecisionLog, partition: i32) -> Option<Committed> {
    let o = owned.get(&partition)?;
    let positions = o.committed?;
    let decisions_offset = log.end_offset(partition).unwrap_or_else(|e| {
        tracing::warn!(partition, error = %e, "decisions topic end unknown: a restore from this checkpoint reads the decisions from the start");
        0
    });
    Some(Committed { decisions: o.decisions, decisions_offset, positions })
}
