//! The customers this worker owns: features and segments per customer, the
//! timers of their time-driven transitions, and the population per segment.
//! Owned by the pipeline thread alone.
//!
//! Timers are derived state: after every evaluation a customer's next due
//! time (first order + new days, last order + at-risk days, ...) is
//! (re)scheduled in its partition's timer set, so rebuilding the customers
//! (replay) rebuilds the timers too. The same timer compacts a customer
//! silent past every window (`CustomerState::compact`): at an event time,
//! so a replay compacts at the same points.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;

use compact_str::CompactString;
use hashbrown::HashTable;

use segstream_config::FeaturesConfig;
use segstream_events::Trigger;
use segstream_events::{
    ClickRow, CustomerId, CustomerSegments as MembershipRecord, EventTime, OrderRow, SegmentKind,
};
use segstream_features::{CustomerState, Dictionaries, Features};
use segstream_segments::{CustomerSegments, ModelRules, SegmentRules, Transition};
use segstream_sql::table::{self, RowSegments};

use crate::error::WorkerError;
use crate::snapshot::{SavedCustomer, Snapshot};

#[derive(Debug)]
struct Customer {
    /// Inline up to 24 bytes: most customer ids cost no allocation.
    id: CompactString,
    features: CustomerState,
    segments: CustomerSegments,
    /// Input partition the customer's events come from (same index on both topics).
    partition: i32,
    /// Due time of this customer's entry in the timer set.
    scheduled: Option<EventTime>,
}

impl Customer {
    /// The customer as snapshots and checkpoints keep it.
    fn saved(&self) -> SavedCustomer {
        SavedCustomer {
            id: CustomerId::new(self.id.as_str()),
            partition: self.partition,
            features: self.features.clone(),
            segments: self.segments.clone(),
        }
    }
}

/// How the outputs of what is being processed go out: set by the processor
/// before each step and carried by the user-defined segments' rows, which
/// are evaluated at the end of the batch.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct OutputTag {
    /// Below the committed offsets (or a repeated decision): the outputs are
    /// already committed.
    pub(crate) suppressed: bool,
    /// Kafka timestamp of the causing record, for the latency histogram.
    pub(crate) ts: Option<i64>,
}

/// One evaluation of a customer, kept for the user-defined segments: the
/// features and segments as of then.
#[derive(Debug)]
struct CustomRow {
    slot: usize,
    partition: i32,
    id: CompactString,
    at: EventTime,
    trigger: Trigger,
    /// The event's cause id, for an event's evaluation.
    cause: Option<String>,
    tag: OutputTag,
    features: Features,
    segments: RowSegments,
}

/// The user-defined segments' changes of one evaluation.
#[derive(Debug)]
pub(crate) struct CustomFired {
    pub(crate) id: CustomerId,
    pub(crate) transitions: Vec<Transition>,
    pub(crate) cause: Option<String>,
    pub(crate) tag: OutputTag,
}

/// All customers of this worker: their features, segments and timers, and
/// the population per segment. Public for the state benchmark; the pipeline
/// is its only other user.
#[derive(Debug)]
pub struct CustomerStore {
    /// Where each customer is in `slots`, hashed by the slot's id.
    /// Customers live in `slots`, not in the table itself: a hash table pays
    /// its spare capacity per bucket, which is 4 bytes of slot number here
    /// (the id is read from the slot, stored once) and most of a customer
    /// there.
    index: HashTable<u32>,
    /// SipHash with random keys: customer ids come from outside, so the
    /// index must not degrade under ids chosen to collide.
    hasher: RandomState,
    slots: Slots,
    /// Customers per (kind, segment).
    population: BTreeMap<(SegmentKind, &'static str), i64>,
    /// Per partition: (due time, slot), earliest first; ties in the order
    /// the customers were first seen (slot order, kept by drops and warm
    /// starts), so a replay fires them in the live order.
    timers: BTreeMap<i32, BTreeSet<(EventTime, u32)>>,
    /// The rules of the configuration: in force in a partition until a
    /// definitions decision (or its checkpoint) puts others in force there.
    rules: SegmentRules,
    /// Per partition: the rules a definitions decision or a checkpoint put
    /// in force.
    partition_rules: foldhash::HashMap<i32, Arc<SegmentRules>>,
    features: FeaturesConfig,
    /// Category and payment names shared by all customers.
    dict: Dictionaries,
    /// Evaluations of this batch the user-defined segments have not seen.
    custom_rows: Vec<CustomRow>,
    /// What the evaluations being made now carry.
    tag: OutputTag,
}

impl CustomerStore {
    /// An empty store with these rules and feature windows (plans the
    /// per-batch click aggregation).
    pub fn new(rules: SegmentRules, features: FeaturesConfig) -> Result<Self, WorkerError> {
        Ok(Self {
            index: HashTable::new(),
            hasher: RandomState::new(),
            slots: Slots::default(),
            population: BTreeMap::new(),
            timers: BTreeMap::new(),
            rules,
            partition_rules: foldhash::HashMap::default(),
            features,
            dict: Dictionaries::default(),
            custom_rows: Vec::new(),
            tag: OutputTag::default(),
        })
    }

    /// What the evaluations from now on carry to their user-defined
    /// segments' changes.
    pub(crate) fn set_tag(&mut self, tag: OutputTag) {
        self.tag = tag;
    }

    /// Applies a click: time-driven transitions due before it, then the
    /// evaluation after it. The customer and their transitions, if any.
    /// `at` is when it is judged: its event time, or the partition's
    /// watermark when that is later (a late event).
    pub fn on_click(&mut self, row: &ClickRow<'_>, at: EventTime) -> Option<(CustomerId, Vec<Transition>)> {
        let cause = || row.event_id.to_owned();
        self.process(row.customer_id, row.partition, at, &cause, |state, config, _| {
            state.apply_click(row, config);
        })
    }

    /// Applies an order event; see [`CustomerStore::on_click`].
    pub fn on_order(&mut self, row: &OrderRow<'_>, at: EventTime) -> Option<(CustomerId, Vec<Transition>)> {
        self.process(row.customer_id, row.partition, at, &|| order_cause(row), |state, config, dict| {
            state.apply_order(row, config, dict);
        })
    }

    /// Applies an event to a customer's state and evaluates them at `t`.
    fn process(
        &mut self,
        customer_id: &str,
        partition: i32,
        t: EventTime,
        cause: &dyn Fn() -> String,
        apply: impl FnOnce(&mut CustomerState, &FeaturesConfig, &mut Dictionaries),
    ) -> Option<(CustomerId, Vec<Transition>)> {
        let slot = match self.slot_of(customer_id) {
            Some(slot) => slot,
            None => self.push(Customer {
                id: CompactString::from(customer_id),
                features: CustomerState::default(),
                segments: CustomerSegments::default(),
                partition,
                scheduled: None,
            }),
        };
        let Some(c) = self.slots.get_mut(slot) else { unreachable!("slot {slot} was just found or pushed") };
        let Customer { id, features: state, segments, scheduled, .. } = c;
        let (config, dict, rows) = (&self.features, &mut self.dict, &mut self.custom_rows);
        let rules = rules_in(&self.rules, &self.partition_rules, partition);
        let mut row = Observer { rules, config, slot, id, partition, tag: self.tag, rows };
        // The customer's timer is their next due time as of their latest
        // evaluation: when it is after `t`, nothing is due before the event
        // and the walk that would find that out (two readings of the
        // features) is skipped.
        let mut transitions = if scheduled.is_none_or(|due| due > t) {
            segments.pass_to(t);
            Vec::new()
        } else {
            segments.advance_observed(
                rules,
                t,
                rules.subject(state, config, dict),
                &mut row.of(state, dict, None),
            )
        };
        apply(state, config, dict);
        let subject = rules.subject(state, config, dict);
        let cause = (!rules.definitions.custom.is_empty()).then(cause);
        let (moved, due) = segments.on_event_then_due(rules, t, subject, &mut row.of(state, dict, cause));
        transitions.extend(moved);
        self.schedule(slot, due);
        self.count(&transitions);
        (!transitions.is_empty()).then(|| (CustomerId::new(customer_id), transitions))
    }

    /// Where the customer with this id is, if it is here.
    fn slot_of(&self, id: &str) -> Option<usize> {
        let hash = self.hasher.hash_one(id);
        let found =
            self.index.find(hash, |&s| self.slots.get(s as usize).is_some_and(|c| c.id.as_str() == id));
        found.map(|&s| s as usize)
    }

    /// Adds a customer not yet here; returns its slot.
    fn push(&mut self, customer: Customer) -> usize {
        let hash = self.hasher.hash_one(customer.id.as_str());
        let slot = self.slots.push(customer);
        let Self { index, hasher, slots, .. } = self;
        index.insert_unique(hash, slot_key(slot), |&s| rehash(hasher, slots, s));
        slot
    }

    /// Fires the timers of `partition` due at or before `watermark`, earliest
    /// first (ties in slot order, the order the partition's customers were
    /// first seen), at most `limit` of them: each customer moves to the
    /// stage its silence has earned.
    pub fn fire_timers(
        &mut self,
        partition: i32,
        watermark: EventTime,
        limit: usize,
    ) -> Vec<(CustomerId, Vec<Transition>)> {
        let mut out = Vec::new();
        let mut fired = 0;
        while fired < limit
            && let Some((due, slot)) = self.next_due_timer(partition, watermark)
        {
            fired += 1;
            let slot = slot as usize;
            let Some(c) = self.slots.get_mut(slot) else { continue };
            c.scheduled = None;
            let Customer { id, features: state, segments, .. } = c;
            let rules = rules_in(&self.rules, &self.partition_rules, partition);
            let (config, dict) = (&self.features, &self.dict);
            let mut row =
                Observer { rules, config, slot, id, partition, tag: self.tag, rows: &mut self.custom_rows };
            let (transitions, next) = segments.advance_then_due(
                rules,
                due,
                rules.subject(state, config, dict),
                &mut row.of(state, dict, None),
            );
            if state.compact_due(config).is_some_and(|at| at <= due) {
                // The next due time is read again from what compaction kept.
                state.compact(due, config);
                self.reschedule(slot);
            } else {
                self.schedule(slot, next);
            }
            self.count(&transitions);
            if let Some(c) = self.slots.get(slot).filter(|_| !transitions.is_empty()) {
                out.push((CustomerId::new(c.id.as_str()), transitions));
            }
        }
        out
    }

    /// Evaluates the user-defined segments on every evaluation of the batch
    /// so far, vectorised, and moves the customers' memberships in the
    /// order the evaluations were made. Returns the changes per evaluation
    /// and how many rows failed to evaluate (per segment).
    pub(crate) fn evaluate_custom(&mut self) -> Result<(Vec<CustomFired>, Vec<&'static str>), WorkerError> {
        if self.custom_rows.is_empty() {
            return Ok((Vec::new(), Vec::new()));
        }
        let rows = std::mem::take(&mut self.custom_rows);
        // Each partition's rows together, under its rules.
        let mut groups: BTreeMap<i32, Vec<usize>> = BTreeMap::new();
        for (k, r) in rows.iter().enumerate() {
            groups.entry(r.partition).or_default().push(k);
        }
        let mut place = vec![(0, 0); rows.len()];
        let mut batches = Vec::with_capacity(groups.len());
        let mut failures = Vec::new();
        for (partition, members) in groups {
            let table_rows: Vec<table::Row<'_>> = members
                .iter()
                .filter_map(|&k| rows.get(k))
                .map(|r| table::Row {
                    customer_id: r.id.as_str(),
                    features: &r.features,
                    segments: Some(&r.segments),
                })
                .collect();
            let batch = table::build(&table_rows, &self.features, true)?;
            let rules = rules_in(&self.rules, &self.partition_rules, partition);
            let evaluation = rules.definitions.custom.evaluate(&batch);
            failures.extend(evaluation.failures);
            for (j, &k) in members.iter().enumerate() {
                place[k] = (batches.len(), j);
            }
            batches.push((partition, batch, evaluation.holds));
        }
        if let Some((segment, error)) = failures.first() {
            tracing::warn!(
                segment,
                error,
                "a user-defined segment failed on a row; it counts as not holding there"
            );
        }
        let mut out = Vec::new();
        for (r, (b, j)) in rows.into_iter().zip(place) {
            let Some((partition, batch, holds)) = batches.get(b) else { continue };
            let rules = rules_in(&self.rules, &self.partition_rules, *partition);
            let Some(c) = self.slots.get_mut(r.slot).filter(|c| c.id == r.id) else { continue };
            let custom = &rules.definitions.custom;
            let holds = |i: usize| holds.get(i).and_then(|h| h.get(j)).copied().unwrap_or(false);
            let transitions =
                c.segments.apply_custom(rules, r.at, r.trigger, holds, |i| custom.values(i, batch, j));
            if !transitions.is_empty() {
                out.push(CustomFired {
                    id: CustomerId::new(r.id.as_str()),
                    transitions,
                    cause: r.cause,
                    tag: r.tag,
                });
            }
        }
        for fired in &out {
            self.count(&fired.transitions);
        }
        Ok((out, failures.into_iter().map(|(segment, _)| segment).collect()))
    }

    /// The partitions whose customers are here.
    pub(crate) fn partitions(&self) -> Vec<i32> {
        let set: BTreeSet<i32> = self.slots.iter().map(|c| c.partition).collect();
        set.into_iter().collect()
    }

    /// The segment definitions in force in `partition`.
    pub(crate) fn definitions(&self, partition: i32) -> &segstream_segments::SegmentDefinitions {
        &rules_in(&self.rules, &self.partition_rules, partition).definitions
    }

    /// Whether a decision or a checkpoint put the partition's definitions
    /// in force (a partition started afresh runs under the configured ones,
    /// recorded by no one yet).
    pub(crate) fn definitions_recorded(&self, partition: i32) -> bool {
        self.partition_rules.contains_key(&partition)
    }

    /// The rules in force in `partition` with the definitions `text` (from
    /// a decision or a checkpoint); the model in force stays.
    pub(crate) fn rules_with(
        &self,
        partition: i32,
        text: &str,
        origin: &str,
    ) -> Result<SegmentRules, WorkerError> {
        let rules = rules_in(&self.rules, &self.partition_rules, partition);
        Ok(rules.with_definitions(text, origin, &self.features)?)
    }

    /// The rules in force in `partition` with the trained model `record`
    /// (from a decision, a checkpoint or the models topic).
    pub(crate) fn rules_with_model(
        &self,
        partition: i32,
        record: &[u8],
        origin: &str,
    ) -> Result<SegmentRules, WorkerError> {
        let problem = |problem: String| WorkerError::Model { origin: origin.to_owned(), problem };
        let model = ModelRules::from_record(record, &self.features).map_err(|e| problem(e.to_string()))?;
        rules_in(&self.rules, &self.partition_rules, partition).with_model(Arc::new(model)).map_err(problem)
    }

    /// The trained model in force in `partition`, if any.
    pub(crate) fn model(&self, partition: i32) -> Option<&Arc<ModelRules>> {
        rules_in(&self.rules, &self.partition_rules, partition).model.as_ref()
    }

    /// Puts a checkpoint's definitions and model in force in `partition`
    /// without evaluating anyone: the customers it holds are under them.
    pub(crate) fn restore_rules(
        &mut self,
        partition: i32,
        definitions: Option<&str>,
        model: Option<&[u8]>,
    ) -> Result<(), WorkerError> {
        let origin = format!("the checkpoint of partition {partition}");
        if let Some(text) = definitions {
            let rules = self.rules_with(partition, text, &origin)?;
            self.partition_rules.insert(partition, Arc::new(rules));
        }
        if let Some(record) = model {
            let rules = self.rules_with_model(partition, record, &origin)?;
            self.partition_rules.insert(partition, Arc::new(rules));
        }
        Ok(())
    }

    /// Puts `rules` in force in `partition` and evaluates each of its
    /// customers once under them, as of `at` (the partition's watermark) or
    /// their latest evaluation if later: the changes (with `trigger`: new
    /// definitions or a new model), per customer, in the order the
    /// customers were first seen.
    pub(crate) fn redefine(
        &mut self,
        partition: i32,
        rules: Arc<SegmentRules>,
        at: EventTime,
        trigger: Trigger,
    ) -> Vec<(CustomerId, Vec<Transition>)> {
        self.partition_rules.insert(partition, rules);
        let slots: Vec<usize> = (0..self.slots.len())
            .filter(|s| self.slots.get(*s).is_some_and(|c| c.partition == partition))
            .collect();
        let mut out = Vec::new();
        for slot in slots {
            let rules = rules_in(&self.rules, &self.partition_rules, partition);
            let Some(c) = self.slots.get_mut(slot) else { continue };
            let Customer { id, features: state, segments, .. } = c;
            let (config, dict) = (&self.features, &self.dict);
            let mut row =
                Observer { rules, config, slot, id, partition, tag: self.tag, rows: &mut self.custom_rows };
            let subject = rules.subject(state, config, dict);
            let transitions =
                segments.reevaluate(rules, at, subject, trigger, &mut row.of(state, dict, None));
            let id = CustomerId::new(id.as_str());
            self.reschedule(slot);
            self.count(&transitions);
            if !transitions.is_empty() {
                out.push((id, transitions));
            }
        }
        out
    }

    /// True if more than `n` timers of `partition` are due by `watermark`
    /// (cheap when none is).
    pub fn due_more_than(&self, partition: i32, watermark: EventTime, n: usize) -> bool {
        let Some(set) = self.timers.get(&partition) else { return false };
        // Asked before every record: without this, every due timer would be
        // counted each time.
        if set.len() <= n || set.first().is_none_or(|(due, _)| *due > watermark) {
            return false;
        }
        set.iter().take_while(|(due, _)| *due <= watermark).nth(n).is_some()
    }

    /// Takes the earliest timer of `partition` if it is due by `watermark`.
    fn next_due_timer(&mut self, partition: i32, watermark: EventTime) -> Option<(EventTime, u32)> {
        let set = self.timers.get_mut(&partition)?;
        if set.first().is_some_and(|(due, _)| *due <= watermark) { set.pop_first() } else { None }
    }

    /// Timers waiting, all partitions.
    pub fn pending_timers(&self) -> usize {
        self.timers.values().map(BTreeSet::len).sum()
    }

    fn reschedule(&mut self, slot: usize) {
        let Some(c) = self.slots.get(slot) else { return };
        let rules = rules_in(&self.rules, &self.partition_rules, c.partition);
        let stage_due = c.segments.next_due(rules, rules.subject(&c.features, &self.features, &self.dict));
        self.schedule(slot, stage_due);
    }

    /// Puts the customer's timer at `stage_due` (their segments' next due
    /// time) or their compaction, whichever comes first.
    fn schedule(&mut self, slot: usize, stage_due: Option<EventTime>) {
        let features = &self.features;
        let Some(c) = self.slots.get_mut(slot) else { return };
        let next = [stage_due, c.features.compact_due(features)].into_iter().flatten().min();
        if next == c.scheduled {
            return;
        }
        let set = self.timers.entry(c.partition).or_default();
        if let Some(old) = c.scheduled.take() {
            set.remove(&(old, slot_key(slot)));
        }
        if let Some(due) = next {
            set.insert((due, slot_key(slot)));
        }
        c.scheduled = next;
    }

    fn count(&mut self, transitions: &[Transition]) {
        for tr in transitions {
            if let Some(from) = tr.from {
                *self.population.entry((tr.kind, from)).or_default() -= 1;
            }
            if let Some(to) = tr.to {
                *self.population.entry((tr.kind, to)).or_default() += 1;
            }
        }
    }

    /// The membership record of a customer, as of `updated_at`.
    pub(crate) fn membership(&self, id: &CustomerId, updated_at: EventTime) -> Option<MembershipRecord> {
        let c = self.slots.get(self.slot_of(id.as_str())?)?;
        Some(MembershipRecord {
            customer_id: id.clone(),
            segments: c.segments.memberships(),
            updated_at,
            rule_version: self.rules.lifecycle.version(),
        })
    }

    /// Drops every customer of a revoked partition; returns how many.
    pub(crate) fn drop_partition(&mut self, partition: i32) -> usize {
        self.timers.remove(&partition);
        self.partition_rules.remove(&partition);
        if !self.slots.iter().any(|c| c.partition == partition) {
            // Nothing moves (a newly assigned partition, or one revoked twice).
            return 0;
        }
        self.drop_where(|c| c.partition == partition).len()
    }

    /// Drops the customers `erased` picks by id and latest event time
    /// (their state, segments and timers); returns their ids.
    pub(crate) fn erase(&mut self, erased: impl Fn(&str, Option<EventTime>) -> bool) -> Vec<CustomerId> {
        let pick = |c: &Customer| erased(c.id.as_str(), c.features.last_seen());
        if !self.slots.iter().any(pick) {
            return Vec::new();
        }
        self.drop_where(pick).into_iter().map(|c| CustomerId::new(c.id.as_str())).collect()
    }

    /// Takes out the customers `drop` picks; the others keep their order
    /// (timer ties depend on it), index and timers are built anew (rare:
    /// rebalances and erasures).
    fn drop_where(&mut self, drop: impl Fn(&Customer) -> bool) -> Vec<Customer> {
        let dropped = self.slots.take_where(drop);
        for c in &dropped {
            self.count_memberships(&c.segments, -1);
        }
        let Self { index, hasher, slots, timers, .. } = self;
        *index = HashTable::with_capacity(slots.len());
        timers.clear();
        for (slot, c) in slots.iter().enumerate() {
            index
                .insert_unique(hasher.hash_one(c.id.as_str()), slot_key(slot), |&s| rehash(hasher, slots, s));
            if let Some(due) = c.scheduled {
                timers.entry(c.partition).or_default().insert((due, slot_key(slot)));
            }
        }
        dropped
    }

    /// Memberships of segments of `kind`, all segments together.
    pub fn population_of(&self, kind: SegmentKind) -> i64 {
        self.population.range((kind, "")..).take_while(|((k, _), _)| *k == kind).map(|(_, n)| n).sum()
    }

    /// Customers per (kind, segment).
    pub(crate) fn population(&self) -> impl Iterator<Item = ((SegmentKind, &'static str), i64)> + '_ {
        self.population.iter().map(|(s, n)| (*s, *n))
    }

    /// Every customer with their features as of `as_of` and their segments.
    pub(crate) fn features_as_of(
        &self,
        as_of: EventTime,
    ) -> impl Iterator<Item = (&str, segstream_features::Features, segstream_sql::table::RowSegments)> + '_
    {
        self.slots.iter().map(move |c| {
            let features = c.features.features(as_of, &self.features, &self.dict);
            let model = self.model(c.partition).map(Arc::as_ref);
            let named = crate::checkpoint::row_segments(&c.segments, model, &features);
            (c.id.as_str(), features, named)
        })
    }

    /// Everything this store holds, as a snapshot as of `as_of`.
    pub(crate) fn to_snapshot(&self, as_of: EventTime, partitions: i32) -> Snapshot {
        let mut snapshot = Snapshot::new(as_of, partitions, self.features.clone());
        snapshot.categories = self.dict.categories.names().to_vec();
        snapshot.payments = self.dict.payments.names().to_vec();
        snapshot.customers = self.slots.iter().map(Customer::saved).collect();
        snapshot
    }

    /// A store holding a snapshot's customers, timers rescheduled. The
    /// snapshot must have been kept with the same feature windows.
    pub(crate) fn from_snapshot(
        rules: SegmentRules,
        features: FeaturesConfig,
        snapshot: Snapshot,
    ) -> Result<Self, WorkerError> {
        if snapshot.features != features {
            return Err(WorkerError::Snapshot(format!(
                "the snapshot was kept with [features] {:?}, this config has {:?}: use the same [features] or build the snapshot again",
                snapshot.features, features
            )));
        }
        let mut store = Self::new(rules, features)?;
        store.seed_dictionaries(snapshot.categories, snapshot.payments);
        for saved in snapshot.customers {
            store.insert_saved(saved);
        }
        Ok(store)
    }

    /// The customers of one partition as a checkpoint keeps them, in slot
    /// order (the order timer ties fire in), and the dictionary names their
    /// ids refer to.
    pub(crate) fn save_partition(
        &self,
        partition: i32,
    ) -> (Vec<SavedCustomer>, Vec<Arc<str>>, Vec<Arc<str>>) {
        let customers = self.slots.iter().filter(|c| c.partition == partition).map(Customer::saved).collect();
        (customers, self.dict.categories.names().to_vec(), self.dict.payments.names().to_vec())
    }

    /// Adds a checkpoint's customers (their partition holds nothing here),
    /// translating the dictionary ids they were saved with to this store's.
    pub(crate) fn restore_partition(
        &mut self,
        customers: Vec<SavedCustomer>,
        categories: &[Arc<str>],
        payments: &[Arc<str>],
    ) {
        let same = |saved: &[Arc<str>], here: &[Arc<str>]| here.starts_with(saved);
        let remap =
            !same(categories, self.dict.categories.names()) || !same(payments, self.dict.payments.names());
        let category_ids = self.dict.categories.adopt(categories);
        let payment_ids = self.dict.payments.adopt(payments);
        for mut saved in customers {
            if remap {
                let (cats, pays) = (&self.dict.categories, &self.dict.payments);
                saved.features.remap_names(
                    |id| cats.translate(&category_ids, id),
                    |id| u8::try_from(pays.translate(&payment_ids, u16::from(id))).unwrap_or(u8::MAX),
                );
            }
            self.insert_saved(saved);
        }
    }

    /// A partition's customers encoded as a checkpoint holds them (copy,
    /// then encoding), for the checkpoint benchmark: the two steps' bytes
    /// are what the worker copies on its pipeline thread and then writes.
    pub fn checkpoint_partition(&self, partition: i32) -> Result<Vec<u8>, WorkerError> {
        let mut state = crate::checkpoint::empty_state("bench", partition, self.features.clone());
        (state.customers, state.categories, state.payments) = self.save_partition(partition);
        state.encode().map_err(WorkerError::Snapshot)
    }

    /// Adds the customers of a checkpoint written by
    /// [`CustomerStore::checkpoint_partition`]; returns how many.
    pub fn restore_checkpoint(&mut self, bytes: &[u8]) -> Result<usize, WorkerError> {
        let state = crate::checkpoint::PartitionState::decode(bytes).map_err(WorkerError::Snapshot)?;
        let n = state.customers.len();
        self.restore_partition(state.customers, &state.categories, &state.payments);
        Ok(n)
    }

    /// Takes the names a snapshot's customers refer to; call before any event.
    pub(crate) fn seed_dictionaries(&mut self, categories: Vec<Arc<str>>, payments: Vec<Arc<str>>) {
        self.dict = Dictionaries::with_names(categories, payments);
    }

    /// Adds a customer saved in a snapshot (replacing none: call on a
    /// partition that holds nothing yet), its timer scheduled.
    pub(crate) fn insert_saved(&mut self, saved: SavedCustomer) {
        if self.slot_of(saved.id.as_str()).is_some() {
            return;
        }
        self.count_memberships(&saved.segments, 1);
        let slot = self.push(Customer {
            id: CompactString::from(saved.id.as_str()),
            features: saved.features,
            segments: saved.segments,
            partition: saved.partition,
            scheduled: None,
        });
        self.reschedule(slot);
    }

    fn count_memberships(&mut self, segments: &CustomerSegments, delta: i64) {
        for segment in segments.current() {
            *self.population.entry(segment).or_default() += delta;
        }
    }

    /// Customers held.
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Customers held compacted (see `CustomerState::compact`; walks every
    /// customer: call rarely).
    pub(crate) fn compacted(&self) -> usize {
        self.slots.iter().filter(|c| c.features.is_compacted()).count()
    }

    /// Approximate bytes of the whole state (walks every customer: call rarely).
    pub(crate) fn approx_bytes(&self) -> usize {
        // The slot without the inline state (`approx_bytes` counts it), up to
        // about two and a third index buckets (a slot number and a control
        // byte each: at most 7/8 full, sizes double) and a timer.
        let per_slot = std::mem::size_of::<Customer>() - std::mem::size_of::<CustomerState>()
            + 7 * (std::mem::size_of::<u32>() + 1) / 3
            + std::mem::size_of::<(EventTime, u32)>();
        let id_heap = |c: &Customer| if c.id.is_heap_allocated() { c.id.capacity() } else { 0 };
        self.slots.iter().map(|c| id_heap(c) + c.features.approx_bytes() + per_slot).sum()
    }
}

/// The customers, in chunks of a fixed size: growing never moves a large
/// block (a doubling vector copies it and leaves up to half of its room
/// unused), the spare room is under one chunk, and a slot number stays valid
/// until a partition is dropped.
#[derive(Debug, Default)]
struct Slots {
    /// Every chunk but the last is full.
    chunks: Vec<Vec<Customer>>,
}

/// Customers per chunk (about 250 KB).
const CHUNK: usize = 1024;

impl Slots {
    fn len(&self) -> usize {
        self.chunks.len().saturating_sub(1) * CHUNK + self.chunks.last().map_or(0, Vec::len)
    }

    fn get(&self, slot: usize) -> Option<&Customer> {
        self.chunks.get(slot / CHUNK)?.get(slot % CHUNK)
    }

    fn get_mut(&mut self, slot: usize) -> Option<&mut Customer> {
        self.chunks.get_mut(slot / CHUNK)?.get_mut(slot % CHUNK)
    }

    /// Adds a customer; returns its slot.
    fn push(&mut self, customer: Customer) -> usize {
        let slot = self.len();
        match self.chunks.last_mut() {
            Some(chunk) if chunk.len() < CHUNK => chunk.push(customer),
            _ => {
                let mut chunk = Vec::with_capacity(CHUNK);
                chunk.push(customer);
                self.chunks.push(chunk);
            }
        }
        slot
    }

    fn iter(&self) -> impl Iterator<Item = &Customer> + '_ {
        self.chunks.iter().flatten()
    }

    /// Takes out the customers `take` picks; the others move up to fill
    /// their slots, chunk by chunk.
    fn take_where(&mut self, take: impl Fn(&Customer) -> bool) -> Vec<Customer> {
        let mut dropped = Vec::new();
        for c in std::mem::take(&mut self.chunks).into_iter().flatten() {
            if take(&c) {
                dropped.push(c);
            } else {
                self.push(c);
            }
        }
        dropped
    }
}

/// A slot number as the index and the timers keep it.
/// The cause id of an order event: `order_id:status`.
pub(crate) fn order_cause(row: &OrderRow<'_>) -> String {
    format!("{}:{}", row.order_id, row.status.as_str())
}

/// Records a customer's evaluations for the user-defined segments (nothing
/// when there are none).
struct Observer<'a> {
    rules: &'a SegmentRules,
    config: &'a FeaturesConfig,
    slot: usize,
    id: &'a CompactString,
    partition: i32,
    tag: OutputTag,
    rows: &'a mut Vec<CustomRow>,
}

impl Observer<'_> {
    /// The observer of evaluations of `state` (`cause`: the event's id).
    fn of<'s>(
        &'s mut self,
        state: &'s CustomerState,
        dict: &'s Dictionaries,
        cause: Option<String>,
    ) -> impl FnMut(EventTime, Trigger, &CustomerSegments) + 's {
        move |at, trigger, segments| {
            // Also without user-defined segments while the customer is in
            // one the definitions dropped: they leave it.
            if self.rules.definitions.custom.is_empty() && !segments.in_custom() {
                return;
            }
            // No scores: user-defined segments may not read them.
            let features = state.features(at, self.config, dict);
            let segments = crate::checkpoint::row_segments(segments, None, &features);
            self.rows.push(CustomRow {
                slot: self.slot,
                partition: self.partition,
                id: self.id.clone(),
                at,
                trigger,
                cause: cause.clone().filter(|_| trigger == Trigger::Event),
                tag: self.tag,
                features,
                segments,
            });
        }
    }
}

/// The rules in force in `partition`.
fn rules_in<'a>(
    configured: &'a SegmentRules,
    by_partition: &'a foldhash::HashMap<i32, Arc<SegmentRules>>,
    partition: i32,
) -> &'a SegmentRules {
    by_partition.get(&partition).map_or(configured, |r| r)
}

fn slot_key(slot: usize) -> u32 {
    u32::try_from(slot).unwrap_or(u32::MAX)
}

/// The hash of the id in slot `s`, for the index to move its entries when it grows.
fn rehash(hasher: &RandomState, slots: &Slots, s: u32) -> u64 {
    slots.get(s as usize).map_or(0, |c| hasher.hash_one(c.id.as_str()))
}

#[cfg(test)]
pub(crate) mod tests {
    use segstream_config::Config;
    use segstream_events::OrderStatus;

    use super::*;

    const DAY: i64 = 86_400_000;

    /// A placed order of 10.00 on `day` days after 2023-11-14 (partition 0).
    pub(crate) fn order(customer: &'static str, id: &'static str, day: i64) -> OrderRow<'static> {
        OrderRow {
            order_id: id,
            customer_id: customer,
            event_time: EventTime::from_millis(1_700_000_000_000 + day * DAY),
            status: OrderStatus::Placed,
            total: 10.0,
            discount_amount: 0.0,
            item_count: 1,
            primary_category: None,
            payment_method: None,
            partition: 0,
            offset: 0,
        }
    }

    #[test]
    fn timers_fire_in_due_order_up_to_the_watermark_and_reschedule() {
        let config = Config::default();
        let mut store =
            CustomerStore::new(SegmentRules::from_config(&config).expect("rules"), config.features)
                .expect("store");
        let a = order("a", "a1", 0);
        store.on_order(&a, a.event_time);
        let b = order("b", "b1", 10);
        store.on_order(&b, b.event_time);
        assert_eq!(store.pending_timers(), 2);
        let at = |day: i64| EventTime::from_millis(1_700_000_000_000 + day * DAY);
        // Day 35: a's "new" window ended (day 30), b's not yet (day 40).
        let fired = store.fire_timers(0, at(35), usize::MAX);
        assert_eq!(
            fired.iter().map(|(id, t)| (id.as_str(), t[0].to.unwrap_or("none"))).collect::<Vec<_>>(),
            [("a", "active")]
        );
        // Everything up to day 200, earliest first, each customer rescheduled after each step.
        let fired: Vec<(String, SegmentKind, &str)> = store
            .fire_timers(0, at(200), usize::MAX)
            .into_iter()
            .flat_map(|(id, ts)| {
                ts.into_iter().map(move |t| (id.to_string(), t.kind, t.to.unwrap_or("none")))
            })
            .collect();
        let of = |kind| {
            fired.iter().filter(|(_, k, _)| *k == kind).map(|(c, _, s)| (c.as_str(), *s)).collect::<Vec<_>>()
        };
        let expected =
            [("b", "active"), ("a", "at_risk"), ("b", "at_risk"), ("a", "churned"), ("b", "churned")];
        assert_eq!(of(SegmentKind::Lifecycle), expected);
        // RFM on the same timers: R3 after 60 days, R2 after 90, R1 after 180.
        let rfm = [
            ("a", "promising"),
            ("b", "promising"),
            ("a", "about_to_sleep"),
            ("b", "about_to_sleep"),
            ("a", "lost"),
            ("b", "lost"),
        ];
        assert_eq!(of(SegmentKind::Rfm), rfm);
        assert_eq!(store.pending_timers(), 2, "churned has no further stage; the compaction is due");
        assert_eq!(
            store.population().find(|(s, _)| *s == (SegmentKind::Lifecycle, "churned")),
            Some(((SegmentKind::Lifecycle, "churned"), 2))
        );
        assert!(store.fire_timers(1, at(400), usize::MAX).is_empty(), "other partitions are untouched");
        // A day past the longest window (365 days) after each one's order:
        // compacted, silently, and nothing more is due.
        let before = store.approx_bytes();
        assert!(store.fire_timers(0, at(376), usize::MAX).is_empty());
        assert_eq!(store.pending_timers(), 1, "b's compaction comes 10 days later");
        assert!(store.fire_timers(0, at(400), usize::MAX).is_empty());
        assert_eq!(store.pending_timers(), 0);
        assert!(store.approx_bytes() < before, "{} not below {before}", store.approx_bytes());
        assert_eq!(store.compacted(), 2);
        let f = store
            .features_as_of(at(400))
            .map(|(id, f, named)| (id.to_owned(), f.lifetime_orders, named.lifecycle, named.rfm));
        let churned = |id: &str| (id.to_owned(), 1, Some("churned".to_owned()), Some("lost".to_owned()));
        assert_eq!(f.collect::<Vec<_>>(), [churned("a"), churned("b")]);
    }

    #[test]
    fn dropping_a_partition_keeps_the_survivors_found_and_their_timers_firing() {
        let config = Config::default();
        let mut store =
            CustomerStore::new(SegmentRules::from_config(&config).expect("rules"), config.features)
                .expect("store");
        // Customers of partitions 0 and 1, interleaved so the survivors move.
        for (i, customer) in ["a", "b", "c", "d", "e"].into_iter().enumerate() {
            let mut row = order(customer, customer, i as i64);
            row.partition = (i % 2) as i32;
            store.on_order(&row, row.event_time);
        }
        assert_eq!(store.drop_partition(0), 3);
        assert_eq!(store.len(), 2);
        assert_eq!(store.pending_timers(), 2);
        let at = |day: i64| EventTime::from_millis(1_700_000_000_000 + day * DAY);
        assert!(store.membership(&CustomerId::new("a"), at(1)).is_none(), "a left with partition 0");
        assert!(store.membership(&CustomerId::new("d"), at(1)).is_some());
        let fired: Vec<String> =
            store.fire_timers(1, at(35), usize::MAX).into_iter().map(|(id, _)| id.to_string()).collect();
        assert_eq!(fired, ["b", "d"], "each survivor's timer fires for that survivor");
        // A customer seen again after the drop is the same one, not a second copy.
        let mut again = order("d", "d2", 36);
        again.partition = 1;
        store.on_order(&again, again.event_time);
        assert_eq!(store.len(), 2);
    }

    #[test]
    fn customers_across_many_chunks_stay_found_after_a_partition_is_dropped() {
        let config = Config::default();
        let mut store =
            CustomerStore::new(SegmentRules::from_config(&config).expect("rules"), config.features)
                .expect("store");
        let ids: Vec<&'static str> =
            (0..2 * CHUNK + 500).map(|i| &*Box::leak(format!("c{i}").into_boxed_str())).collect();
        for (i, id) in ids.iter().enumerate() {
            let mut row = order(id, id, 0);
            row.partition = (i % 3) as i32;
            store.on_order(&row, row.event_time);
        }
        let dropped = store.drop_partition(1);
        assert_eq!(dropped, ids.iter().enumerate().filter(|(i, _)| i % 3 == 1).count());
        assert_eq!(store.len(), ids.len() - dropped);
        assert_eq!(store.pending_timers(), store.len());
        for (i, id) in ids.iter().enumerate() {
            let found = store.membership(&CustomerId::new(*id), EventTime::from_millis(1_700_000_000_000));
            assert_eq!(found.is_some(), i % 3 != 1, "{id}");
        }
    }
}
