//! The one engine: admission, the merge of co-partitioned lanes, event time,
//! timers and change emission, in one code path shared by the live worker,
//! `replay`, `backfill` and the rebuild of a partition after an assignment.
//! It knows nothing of Kafka: records come in per lane and partition, and
//! what they cause comes out as [`Emitted`] records; the Kafka loop only
//! moves records and commits them.
//!
//! A partition being rebuilt runs exactly like a live one, with the
//! committed decisions repeated and the outputs of everything below the
//! committed offsets suppressed (they are in committed transactions).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use segstream_config::Config;
use segstream_events::{
    CustomerId, Decision, DecisionAction, EventTime, Lane, Positions, SegmentChange, SegmentKind, Trigger,
};
use segstream_segments::{Cause, SegmentDefinitions, SegmentRules, Transition, to_changes};
use segstream_telemetry::Metrics;

use crate::admission::{Admission, Decoded, Incoming, Item, Rejection, Verdict};
use crate::checkpoint::PartitionState;
use crate::engine::{Engine, Fired, Input};
use crate::error::WorkerError;
use crate::merge::{Merger, Opening, Pending, Step};
use crate::store::{CustomFired, CustomerStore, OutputTag};

/// A record for the dead-letter topic.
#[derive(Debug)]
pub(crate) struct DeadLetterOut {
    /// Source lane.
    pub(crate) lane: Lane,
    /// Source partition.
    pub(crate) partition: i32,
    /// Source offset.
    pub(crate) offset: i64,
    /// Original bytes and why.
    pub(crate) rejection: Rejection,
}

/// What processing produced, to publish.
#[derive(Debug)]
pub(crate) struct Emitted {
    /// Change records, in order.
    pub(crate) changes: Vec<SegmentChange>,
    /// Dead letters, in order.
    pub(crate) dead_letters: Vec<DeadLetterOut>,
    /// Customers whose segments changed, with the time of their last change
    /// (their membership record is due).
    pub(crate) touched: BTreeMap<CustomerId, EventTime>,
    /// Kafka timestamps of the inputs that caused changes.
    pub(crate) causes_ts: Vec<(SegmentKind, i64)>,
    /// Wall-clock time stamped on change records.
    pub(crate) emit_time: EventTime,
}

impl Emitted {
    /// Nothing to publish.
    pub(crate) fn is_empty(&self) -> bool {
        self.changes.is_empty() && self.dead_letters.is_empty() && self.touched.is_empty()
    }
}

impl Default for Emitted {
    fn default() -> Self {
        Self {
            changes: Vec::new(),
            dead_letters: Vec::new(),
            touched: BTreeMap::new(),
            causes_ts: Vec::new(),
            emit_time: EventTime::now(),
        }
    }
}

/// Per partition: what rebuilding it means.
#[derive(Debug, Default)]
struct Rebuild {
    /// Committed offsets: outputs caused below them are suppressed.
    committed: Option<Positions>,
}

/// See the module documentation.
#[derive(Debug)]
pub(crate) struct Processor {
    engine: Engine,
    merger: Merger<Item>,
    admission: Admission,
    /// Largest event time admitted per lane, in offset order (lateness).
    admitted_max: foldhash::HashMap<(Lane, i32), EventTime>,
    /// Largest event time released per lane: what `admitted_max` is when
    /// reading starts again from the first unreleased record.
    released_max: foldhash::HashMap<(Lane, i32), EventTime>,
    /// Partitions still rebuilding up to their committed offsets.
    rebuilding: BTreeMap<i32, Rebuild>,
    metrics: Metrics,
    topics: [String; 2],
    /// Largest event time released, all partitions (for `/sql` and metrics).
    max_event_time: Option<EventTime>,
    /// More due timers than this fire in parts (`worker.max_timers_per_step`).
    max_timers_per_step: usize,
}

impl Processor {
    pub(crate) fn new(config: &Config, metrics: Metrics) -> Result<Self, WorkerError> {
        let engine = Engine::new(config)?;
        Ok(Self {
            engine,
            merger: Merger::new(Duration::from_millis(config.worker.partition_idle_ms)),
            admission: Admission::new(config)?,
            admitted_max: foldhash::HashMap::default(),
            released_max: foldhash::HashMap::default(),
            rebuilding: BTreeMap::new(),
            metrics,
            topics: [config.topics.clickstream.clone(), config.topics.orders.clone()],
            max_event_time: None,
            max_timers_per_step: config.worker.max_timers_per_step,
        })
    }

    /// A wait for the schema registry ends when `stop` is cancelled.
    pub(crate) fn stop_waiting_on(&mut self, stop: tokio_util::sync::CancellationToken) {
        self.admission.stop_waiting_on(stop);
    }

    /// Records read from Kafka are checked to be on their key's partition
    /// of `partitions` from now on.
    pub(crate) fn check_placement(&mut self, partitions: i32) {
        self.admission.check_placement(partitions);
    }

    fn topic(&self, lane: Lane) -> &str {
        match lane {
            Lane::Clicks => &self.topics[0],
            Lane::Orders => &self.topics[1],
        }
    }

    /// Starts a partition from the start of its logs (`start`): nothing of
    /// it is kept, the committed
    /// decisions are repeated, and outputs below `committed` are suppressed.
    pub(crate) fn open(
        &mut self,
        partition: i32,
        start: Positions,
        committed: Option<Positions>,
        script: Vec<Decision>,
    ) {
        self.close(partition);
        self.merger.open(partition, Opening { positions: start, fetch_from: start, script });
        self.rebuilding.insert(partition, Rebuild { committed });
    }

    /// Starts a partition from a checkpoint's state: reading resumes at
    /// `fetch_from` (the checkpoint's committed offsets, or later ones when
    /// the records between are gone), the decisions committed after it are
    /// repeated, and outputs below `committed` are suppressed.
    pub(crate) fn restore(
        &mut self,
        state: PartitionState,
        fetch_from: Positions,
        committed: Option<Positions>,
        script: Vec<Decision>,
    ) -> Result<(), WorkerError> {
        let partition = state.partition;
        self.close(partition);
        let PartitionState {
            committed: saved,
            merged,
            stream_time,
            released,
            categories,
            payments,
            customers,
            definitions,
            model,
            ..
        } = state;
        self.engine.store.restore_rules(partition, definitions.as_deref(), model.as_deref())?;
        self.engine.store.restore_partition(customers, &categories, &payments);
        // A checkpoint older than an erasure still holds the customer.
        let erased = self.engine.drop_erased().len();
        if erased > 0 {
            tracing::info!(partition, erased, "erased customers dropped from the restored checkpoint");
        }
        self.engine.set_stream_time(partition, stream_time);
        for (lane, time) in Lane::BOTH.into_iter().zip(released) {
            if let Some(t) = time {
                self.released_max.insert((lane, partition), t);
                self.admitted_max.insert((lane, partition), t);
            }
        }
        self.max_event_time = self.max_event_time.max(stream_time);
        // Where the merge stood, unless records after it are gone: then the
        // merge goes on from the first one still there.
        let at = |lane: Lane| {
            if fetch_from.of(lane) > saved.of(lane) { fetch_from.of(lane) } else { merged.of(lane) }
        };
        let positions = Positions { clicks: at(Lane::Clicks), orders: at(Lane::Orders) };
        self.merger.open(partition, Opening { positions, fetch_from, script });
        self.rebuilding.insert(partition, Rebuild { committed });
        Ok(())
    }

    /// A new erasure (see [`Engine::erase`]); whether the customer's state
    /// was held here.
    pub(crate) fn erase(&mut self, id: &CustomerId, requested_at: EventTime) -> bool {
        self.engine.erase(id, requested_at)
    }

    /// The state of a partition as it stands (call right after a commit: it
    /// is then the committed state), for a checkpoint; `None` while it
    /// rebuilds or is not here.
    pub(crate) fn export(&self, mut state: PartitionState) -> Option<PartitionState> {
        let partition = state.partition;
        if self.rebuilding(partition) {
            return None;
        }
        state.merged = self.merger.positions(partition)?;
        state.committed = Positions {
            clicks: self.commit_offset(Lane::Clicks, partition)?,
            orders: self.commit_offset(Lane::Orders, partition)?,
        };
        state.stream_time = self.engine.stream_time(partition);
        state.released = Lane::BOTH.map(|lane| self.released_max.get(&(lane, partition)).copied());
        (state.customers, state.categories, state.payments) = self.engine.store.save_partition(partition);
        state.definitions = Some(self.engine.store.definitions(partition).text.to_string());
        state.model = self.engine.store.model(partition).map(|m| m.record().to_vec());
        Some(state)
    }

    /// Keeps a revoked partition as it is, owned by nobody here: nothing of
    /// it is processed until [`Processor::reopen`] or [`Processor::close`].
    pub(crate) fn freeze(&mut self, partition: i32) {
        self.merger.freeze(partition);
    }

    /// Keeps a partition's state (it is exactly at `committed`): reading
    /// starts again there.
    pub(crate) fn reopen(&mut self, partition: i32, committed: Positions) {
        self.merger.reopen(partition, committed);
        for lane in Lane::BOTH {
            match self.released_max.get(&(lane, partition)) {
                Some(t) => self.admitted_max.insert((lane, partition), *t),
                None => self.admitted_max.remove(&(lane, partition)),
            };
        }
    }

    /// Forgets everything of a partition.
    pub(crate) fn close(&mut self, partition: i32) {
        let dropped = self.engine.forget_partition(partition);
        if dropped > 0 {
            tracing::info!(partition, dropped, "partition state dropped");
        }
        self.merger.close(partition);
        self.rebuilding.remove(&partition);
        for lane in Lane::BOTH {
            self.admitted_max.remove(&(lane, partition));
            self.released_max.remove(&(lane, partition));
        }
    }

    /// Admits one poll of a lane's Kafka records (offset order).
    pub(crate) fn push(
        &mut self,
        lane: Lane,
        partition: i32,
        records: &[Incoming<'_>],
    ) -> Result<(), WorkerError> {
        let topic = self.topic(lane).to_owned();
        self.metrics.events_in.with_label_values(&[topic.as_str()]).inc_by(records.len() as u64);
        let mut lane_max = self.admitted_max.get(&(lane, partition)).copied();
        let metrics = &self.metrics;
        let admitted =
            self.admission.admit(lane, partition, records, &mut lane_max, |v| count(metrics, &topic, v))?;
        self.note_admitted(lane, partition, lane_max, admitted);
        Ok(())
    }

    /// Admits rows of a history file as records of a lane (offset order).
    pub(crate) fn push_rows(&mut self, lane: Lane, partition: i32, decoded: &Decoded, rows: &[(usize, i64)]) {
        let topic = self.topic(lane).to_owned();
        self.metrics.events_in.with_label_values(&[topic.as_str()]).inc_by(rows.len() as u64);
        let mut lane_max = self.admitted_max.get(&(lane, partition)).copied();
        let metrics = &self.metrics;
        let admitted = self.admission.admit_rows(decoded, rows, &mut lane_max, |v| count(metrics, &topic, v));
        self.note_admitted(lane, partition, lane_max, admitted);
    }

    fn note_admitted(
        &mut self,
        lane: Lane,
        partition: i32,
        lane_max: Option<EventTime>,
        admitted: Vec<(i64, Option<EventTime>, Item)>,
    ) {
        if let Some(t) = lane_max {
            self.admitted_max.insert((lane, partition), t);
        }
        for (offset, time, item) in admitted {
            self.merger.push(lane, partition, Pending { offset, time, item });
        }
    }

    /// The consumer reached the end of a lane's log.
    pub(crate) fn mark_end(&mut self, lane: Lane, partition: i32, now: Instant) {
        self.merger.mark_end(lane, partition, now);
    }

    /// Releases what the merge lets go (at most `budget` records), applies
    /// it, and collects what it causes into `out`; ends the micro-batch.
    /// Returns how many steps were released (fewer than `budget`: nothing
    /// more can go now).
    pub(crate) fn process(
        &mut self,
        now: Instant,
        budget: usize,
        out: &mut Emitted,
    ) -> Result<usize, WorkerError> {
        let (engine, rebuilding, per_step) = (&self.engine, &self.rebuilding, self.max_timers_per_step);
        // Asked live only: a record below its lane's committed offset is
        // replayed, and its firing's parts were committed (repeated by the
        // script; its outputs are suppressed anyway); one at or past it is
        // live and split as a live worker splits it, also in the release
        // that ends the rebuild.
        let gate = |partition: i32, time: EventTime, lane: Lane, offset: i64| {
            let committed = rebuilding.get(&partition).and_then(|r| r.committed);
            if committed.is_some_and(|c| offset < c.of(lane)) {
                return None;
            }
            let up_to = engine.split_point(partition, time, per_step)?;
            Some((up_to, i64::try_from(per_step).unwrap_or(i64::MAX)))
        };
        let steps =
            self.merger.release(now, budget, &gate).map_err(|e| WorkerError::Divergence(e.to_string()))?;
        let mut released = steps.len();
        for (partition, step) in steps {
            match step {
                Step::Record(lane, pending) => self.apply(lane, partition, pending, out)?,
                Step::Follow(target) => {
                    // A committed decision: its outputs are committed too.
                    self.engine.store.set_tag(OutputTag { suppressed: true, ts: None });
                    if let Some(fired) = self.engine.follow(partition, target) {
                        self.count_timers(&fired);
                    }
                }
                Step::Fire { up_to, count, scripted: true } => {
                    self.engine.store.set_tag(OutputTag { suppressed: true, ts: None });
                    let fired = self.engine.fire_part(partition, up_to, usize::try_from(count).unwrap_or(0));
                    self.count_timers(&fired);
                }
                Step::Fire { up_to, count, scripted: false } => {
                    self.engine.store.set_tag(OutputTag::default());
                    for f in self.engine.fire_part(partition, up_to, usize::try_from(count).unwrap_or(0)) {
                        self.emit(out, f, None);
                    }
                    // The held-back record and the rest of the firing can go next.
                    released = released.max(budget);
                }
                Step::Definitions { version, text } => {
                    let origin =
                        format!("version {version} of the definitions decided for partition {partition}");
                    let rules = self.engine.store.rules_with(partition, &text, &origin)?;
                    self.redefine(partition, Arc::new(rules), true, Trigger::DefinitionChange, out)?;
                }
                Step::Model { version, record } => {
                    let origin = format!("model {version} decided for partition {partition}");
                    let rules = self.engine.store.rules_with_model(partition, &record, &origin)?;
                    self.redefine(partition, Arc::new(rules), true, Trigger::ModelUpdate, out)?;
                }
            }
        }
        self.emit_custom(out)?;
        self.metrics.erased_events.inc_by(self.engine.take_erased_events());
        self.finish_rebuilds();
        Ok(released)
    }

    fn apply(
        &mut self,
        lane: Lane,
        partition: i32,
        pending: Pending<Item>,
        out: &mut Emitted,
    ) -> Result<(), WorkerError> {
        let suppress = self
            .rebuilding
            .get(&partition)
            .and_then(|r| r.committed)
            .is_some_and(|c| pending.offset < c.of(lane));
        if suppress {
            self.metrics.replayed.inc();
        }
        if let Some(t) = pending.time {
            let max = self.released_max.entry((lane, partition)).or_insert(t);
            *max = (*max).max(t);
            self.max_event_time = Some(self.max_event_time.map_or(t, |m| m.max(t)));
        }
        let (input, ts) = match &pending.item {
            Item::Click { batch, row, ts } => (Input::Click(batch.row(*row)), *ts),
            Item::Order { batch, row, ts } => (Input::Order(batch.row(*row)), *ts),
            Item::Dead(_) => (Input::Other, None),
        };
        self.engine.store.set_tag(OutputTag { suppressed: suppress, ts });
        let fired = self.engine.process(partition, pending.time, input);
        if suppress {
            self.count_timers(&fired);
            return Ok(());
        }
        for f in fired {
            let ts = if f.cause.is_some() { ts } else { None };
            self.emit(out, f, ts);
        }
        if let Item::Dead(rejection) = pending.item {
            self.metrics.dead_letters.with_label_values(&[self.topic(lane), rejection.code]).inc();
            out.dead_letters.push(DeadLetterOut {
                lane,
                partition,
                offset: pending.offset,
                rejection: *rejection,
            });
        }
        Ok(())
    }

    /// Puts segment definitions in force in a partition here and now (a
    /// rollout reached the worker): the decision is recorded, every
    /// customer of the partition is evaluated under them once, and the
    /// changes (trigger `definition_change`) go into `out`. The model in
    /// force stays, as a rebuild repeating the decision keeps it.
    pub(crate) fn apply_definitions(
        &mut self,
        partition: i32,
        definitions: &SegmentDefinitions,
        out: &mut Emitted,
    ) -> Result<(), WorkerError> {
        let origin = format!("version {} of the definitions for partition {partition}", definitions.version);
        let rules = self.engine.store.rules_with(partition, &definitions.text, &origin)?;
        let action =
            DecisionAction::Definitions { version: definitions.version, text: Arc::clone(&definitions.text) };
        self.merger.note(partition, action);
        self.redefine(partition, Arc::new(rules), false, Trigger::DefinitionChange, out)
    }

    /// Puts a trained model in force in a partition here and now (it
    /// reached the worker on the models topic): the decision is recorded,
    /// every customer of the partition is evaluated under it once, and the
    /// changes (trigger `model_update`) go into `out`. Refused, with the
    /// model in force kept, when the partition's rules cannot take it.
    pub(crate) fn apply_model(
        &mut self,
        partition: i32,
        version: i64,
        record: &Arc<[u8]>,
        out: &mut Emitted,
    ) -> Result<(), WorkerError> {
        let origin = format!("model {version} for partition {partition}");
        let rules = self.engine.store.rules_with_model(partition, record, &origin)?;
        self.merger.note(partition, DecisionAction::Model { version, record: Arc::clone(record) });
        self.redefine(partition, Arc::new(rules), false, Trigger::ModelUpdate, out)
    }

    /// The version of the model in force in a partition, if any.
    pub(crate) fn model_version(&self, partition: i32) -> Option<i64> {
        self.engine.store.model(partition).map(|m| m.version())
    }

    /// The segment definitions in force in a partition, and whether that
    /// is recorded (by a decision or a checkpoint).
    pub(crate) fn definitions(&self, partition: i32) -> (&SegmentDefinitions, bool) {
        let store = &self.engine.store;
        (store.definitions(partition), store.definitions_recorded(partition))
    }

    fn redefine(
        &mut self,
        partition: i32,
        rules: Arc<SegmentRules>,
        scripted: bool,
        trigger: Trigger,
        out: &mut Emitted,
    ) -> Result<(), WorkerError> {
        // The rows evaluated so far were made under the rules they replace.
        self.emit_custom(out)?;
        self.engine.store.set_tag(OutputTag { suppressed: scripted, ts: None });
        let at = self.engine.watermark(partition).unwrap_or(EventTime::from_millis(0));
        for (id, transitions) in self.engine.store.redefine(partition, rules, at, trigger) {
            let fired = Fired { id, transitions, cause: None };
            if !scripted {
                self.emit(out, fired, None);
            }
        }
        self.emit_custom(out)
    }

    /// The user-defined segments' changes of the evaluations made since the
    /// last call, evaluated together, each emitted (or suppressed) as its
    /// evaluation's cause says.
    fn emit_custom(&mut self, out: &mut Emitted) -> Result<(), WorkerError> {
        let (fired, failures) = self.engine.store.evaluate_custom()?;
        for segment in failures {
            self.metrics.custom_segment_errors.with_label_values(&[segment]).inc();
        }
        for CustomFired { id, transitions, cause, tag } in fired {
            let fired = Fired { id, transitions, cause };
            if tag.suppressed {
                self.count_timers(std::slice::from_ref(&fired));
            } else {
                self.emit(out, fired, tag.ts);
            }
        }
        Ok(())
    }

    fn count_timers(&self, fired: &[Fired]) {
        let timers =
            fired.iter().flat_map(|f| &f.transitions).filter(|t| t.trigger == Trigger::Timer).count();
        self.metrics.timers_fired.inc_by(timers as u64);
    }

    /// Turns one customer's transitions into change records, marks the
    /// customer for a membership record and keeps the cause's Kafka
    /// timestamp for the latency histogram.
    fn emit(&self, out: &mut Emitted, fired: Fired, ts: Option<i64>) {
        let Fired { id, transitions, cause } = fired;
        let Some(last) = transitions.last() else { return };
        let at = out.touched.entry(id.clone()).or_insert(last.at);
        *at = (*at).max(last.at);
        out.causes_ts.extend(transitions.iter().filter_map(|t| Some((t.kind, ts?))));
        let timers = transitions.iter().filter(|t| t.trigger == Trigger::Timer).count();
        self.metrics.timers_fired.inc_by(timers as u64);
        for t in transitions {
            self.count_transition(&t);
            for change in to_changes(&id, t, Cause { event_id: cause.as_deref() }, out.emit_time) {
                self.metrics
                    .segment_changes
                    .with_label_values(&[change.kind.as_str(), change.change.as_str()])
                    .inc();
                out.changes.push(change);
            }
        }
    }

    fn count_transition(&self, t: &Transition) {
        let (from, to) = (t.from.unwrap_or("none"), t.to.unwrap_or("none"));
        self.metrics.transitions.with_label_values(&[t.kind.as_str(), from, to, t.trigger.as_str()]).inc();
    }

    /// Rebuilding partitions that have reached their committed offsets and
    /// repeated every committed decision are live from here on.
    fn finish_rebuilds(&mut self) {
        let merger = &self.merger;
        self.rebuilding.retain(|&partition, rebuild| {
            let reached = rebuild
                .committed
                .is_none_or(|c| Lane::BOTH.iter().all(|&lane| merger.reached(lane, partition, c.of(lane))));
            !reached || merger.scripted(partition)
        });
    }

    /// True while a partition is rebuilding up to its committed offsets.
    pub(crate) fn rebuilding(&self, partition: i32) -> bool {
        self.rebuilding.contains_key(&partition)
    }

    /// True while a partition repeats committed work (it has committed
    /// offsets not reached yet): a partition the group never committed
    /// counts as rebuilding until its first batch, but repeats nothing.
    pub(crate) fn repeating(&self, partition: i32) -> bool {
        self.rebuilding.get(&partition).is_some_and(|r| r.committed.is_some())
    }

    /// Partitions whose inputs have been at the end of their logs for
    /// `quiet`, and which are not rebuilding.
    pub(crate) fn quiet_partitions(&self, now: Instant, quiet: Duration) -> Vec<i32> {
        let mut quiet = self.merger.quiet_partitions(now, quiet);
        quiet.retain(|p| !self.rebuilding(*p));
        quiet
    }

    /// A quiet partition follows the input's watermark (`target`, the
    /// largest event time at the end of the input topics): its stream time
    /// moves up to it and its due timers fire. The decision is recorded.
    /// When more timers are due than a step may fire, only a part of them
    /// fires (recorded as such) and this returns false: call again.
    pub(crate) fn follow(
        &mut self,
        partition: i32,
        target: EventTime,
        out: &mut Emitted,
    ) -> Result<bool, WorkerError> {
        let per_step = self.max_timers_per_step;
        self.engine.store.set_tag(OutputTag::default());
        let (fired, done) = if let Some(up_to) = self.engine.split_point(partition, target, per_step) {
            let count = i64::try_from(per_step).unwrap_or(i64::MAX);
            self.merger.note(partition, DecisionAction::Fire { up_to, count });
            (self.engine.fire_part(partition, up_to, per_step), false)
        } else {
            let Some(fired) = self.engine.follow(partition, target) else { return Ok(true) };
            self.merger.note(partition, DecisionAction::Follow { stream_time: target });
            (fired, true)
        };
        for f in fired {
            self.emit(out, f, None);
        }
        self.emit_custom(out)?;
        Ok(done)
    }

    /// The timing-dependent decisions taken since the last call, per
    /// partition.
    pub(crate) fn take_decisions(&mut self) -> Vec<(i32, Vec<Decision>)> {
        self.merger.take_decisions()
    }

    /// The offset of the record a lane is to receive next (`None` for a
    /// partition not open here).
    pub(crate) fn expected_offset(&self, lane: Lane, partition: i32) -> Option<i64> {
        self.merger.expected(lane, partition)
    }

    /// The offset to commit for a lane (its first unprocessed record).
    pub(crate) fn commit_offset(&self, lane: Lane, partition: i32) -> Option<i64> {
        let next = self.merger.commit_offset(lane, partition)?;
        let committed = self.rebuilding.get(&partition).and_then(|r| r.committed).map(|c| c.of(lane));
        Some(committed.map_or(next, |c| next.max(c)))
    }

    /// The customer state.
    pub(crate) fn store(&self) -> &CustomerStore {
        &self.engine.store
    }

    /// The largest event time released (or restored).
    pub(crate) fn max_event_time(&self) -> Option<EventTime> {
        self.max_event_time
    }

    /// A partition's stream time.
    pub(crate) fn stream_time(&self, partition: i32) -> Option<EventTime> {
        self.engine.stream_time(partition)
    }

    /// Records buffered in the merge.
    pub(crate) fn buffered(&self) -> usize {
        self.merger.buffered()
    }

    /// Records buffered in one lane.
    pub(crate) fn backlog(&self, lane: Lane, partition: i32) -> usize {
        self.merger.backlog(lane, partition)
    }
}

fn count(metrics: &Metrics, topic: &str, verdict: Verdict) {
    match verdict {
        Verdict::Event => {}
        Verdict::Undecodable(code) => metrics.decode_errors.with_label_values(&[topic, code]).inc(),
        Verdict::Refused(code) => {
            if code == "future_event" {
                metrics.future_events.with_label_values(&[topic]).inc();
            }
        }
        Verdict::LateApplied | Verdict::LateSetAside => metrics.late_events.with_label_values(&[topic]).inc(),
    }
}
