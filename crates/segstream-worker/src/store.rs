//! The customers this worker owns: features and segments per customer, the
//! timers of their time-driven transitions, and the population per segment.
//! Owned by the pipeline thread alone.
//!
//! Timers are derived state: after every evaluation a customer's next due
//! time (first order + new days, last order + at-risk days, ...) is
//! (re)scheduled in its partition's timer set, so rebuilding the customers
//! (replay) rebuilds the timers too.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use segstream_config::FeaturesConfig;
use segstream_events::{
    ClickRow, CustomerId, CustomerSegments as MembershipRecord, EventTime, OrderRow, OrderStatus, SegmentKind,
};
use segstream_features::{CustomerState, Dictionaries};
use segstream_segments::{CustomerSegments, LifecycleRules, Transition};
use segstream_sql::activity::{ActivityPlan, ClickTally};

use crate::error::WorkerError;
use crate::snapshot::{SavedCustomer, Snapshot};

#[derive(Debug)]
struct Customer {
    id: CustomerId,
    features: CustomerState,
    segments: CustomerSegments,
    /// Input partition the customer's events come from (same index on both topics).
    partition: i32,
    /// Due time of this customer's entry in the timer set.
    scheduled: Option<EventTime>,
}

/// All customers of this worker: their features, segments and timers, and
/// the population per segment. Public for the state benchmark; the pipeline
/// is its only other user.
#[derive(Debug)]
pub struct CustomerStore {
    /// Where each customer is in `slots`. Customers live in a dense vector,
    /// not in the map itself: a hash table pays its spare capacity per
    /// bucket, which is a few bytes here and most of a customer there.
    index: HashMap<CustomerId, u32>,
    slots: Vec<Customer>,
    /// Customers per (kind, segment).
    population: BTreeMap<(SegmentKind, &'static str), i64>,
    /// Per partition: (due time, customer), earliest first.
    timers: BTreeMap<i32, BTreeSet<(EventTime, CustomerId)>>,
    rules: LifecycleRules,
    features: FeaturesConfig,
    /// Category and payment names shared by all customers.
    dict: Dictionaries,
    /// Clicks of the current micro-batch, for the per-batch plan.
    tally: ClickTally,
    /// Counts a micro-batch's clicks per customer and day (DataFusion).
    activity: ActivityPlan,
}

impl CustomerStore {
    /// An empty store with these rules and feature windows (plans the
    /// per-batch click aggregation).
    pub fn new(rules: LifecycleRules, features: FeaturesConfig) -> Result<Self, WorkerError> {
        Ok(Self {
            index: HashMap::new(),
            slots: Vec::new(),
            population: BTreeMap::new(),
            timers: BTreeMap::new(),
            rules,
            features,
            dict: Dictionaries::default(),
            tally: ClickTally::default(),
            activity: ActivityPlan::new()?,
        })
    }

    /// Applies a click: time-driven transitions due before it, then the
    /// evaluation after it.
    pub fn on_click(&mut self, row: &ClickRow<'_>) -> (CustomerId, Vec<Transition>) {
        let counted = std::cell::Cell::new(false);
        let out = self.process(row.customer_id, row.partition, row.event_time, |state, config, _| {
            counted.set(state.apply_click(row, config));
            false
        });
        if counted.get() {
            self.tally.push(row);
        }
        out
    }

    /// Ends a micro-batch: the batch's clicks, counted per customer and day
    /// by the DataFusion plan, go into the customers' day buckets.
    pub fn flush_activity(&mut self) -> Result<(), WorkerError> {
        for (customer, day, counts) in self.activity.run(&mut self.tally)? {
            if let Some(c) = self.index.get(customer.as_str()).and_then(|s| self.slots.get_mut(*s as usize)) {
                c.features.merge_day(day, &counts, &self.features);
            }
        }
        Ok(())
    }

    /// Applies an order event; see [`CustomerStore::on_click`].
    pub fn on_order(&mut self, row: &OrderRow<'_>) -> (CustomerId, Vec<Transition>) {
        self.process(row.customer_id, row.partition, row.event_time, |state, config, dict| {
            state.apply_order(row, config, dict) && row.status == OrderStatus::Placed
        })
    }

    fn process(
        &mut self,
        customer_id: &str,
        partition: i32,
        t: EventTime,
        apply: impl FnOnce(&mut CustomerState, &FeaturesConfig, &mut Dictionaries) -> bool,
    ) -> (CustomerId, Vec<Transition>) {
        let slot = match self.index.get(customer_id) {
            Some(slot) => *slot as usize,
            None => {
                let id = CustomerId::new(customer_id);
                let slot = self.slots.len();
                self.index.insert(id.clone(), u32::try_from(slot).unwrap_or(u32::MAX));
                self.slots.push(Customer {
                    id,
                    features: CustomerState::default(),
                    segments: CustomerSegments::default(),
                    partition,
                    scheduled: None,
                });
                slot
            }
        };
        let Some(c) = self.slots.get_mut(slot) else { unreachable!("slot {slot} was just found or pushed") };
        let id = c.id.clone();
        let Customer { features: state, segments, .. } = c;
        let (config, dict) = (&self.features, &mut self.dict);
        let mut transitions = segments.advance(&self.rules, t, |at| state.segment_features(at, config));
        let ordered = apply(state, config, dict);
        transitions
            .extend(segments.on_event(&self.rules, t, ordered, |at| state.segment_features(at, config)));
        self.reschedule(&id);
        self.count(&transitions);
        (id, transitions)
    }

    /// Fires the timers of `partition` due at or before `watermark`, earliest
    /// first: each customer moves to the stage its silence has earned.
    pub fn fire_timers(
        &mut self,
        partition: i32,
        watermark: EventTime,
    ) -> Vec<(CustomerId, Vec<Transition>)> {
        let mut out = Vec::new();
        while let Some((due, id)) = self.next_due_timer(partition, watermark) {
            let Some(slot) = self.index.get(id.as_str()).map(|s| *s as usize) else { continue };
            let Some(c) = self.slots.get_mut(slot) else { continue };
            c.scheduled = None;
            let Customer { features: state, segments, .. } = c;
            let config = &self.features;
            let transitions = segments.advance(&self.rules, due, |at| state.segment_features(at, config));
            self.reschedule(&id);
            self.count(&transitions);
            if !transitions.is_empty() {
                out.push((id, transitions));
            }
        }
        out
    }

    /// Takes the earliest timer of `partition` if it is due by `watermark`.
    fn next_due_timer(&mut self, partition: i32, watermark: EventTime) -> Option<(EventTime, CustomerId)> {
        let set = self.timers.get_mut(&partition)?;
        if set.first().is_some_and(|(due, _)| *due <= watermark) { set.pop_first() } else { None }
    }

    /// Timers waiting, all partitions.
    pub fn pending_timers(&self) -> usize {
        self.timers.values().map(BTreeSet::len).sum()
    }

    fn reschedule(&mut self, id: &CustomerId) {
        let (features, rules) = (&self.features, &self.rules);
        let Some(c) = self.index.get(id.as_str()).and_then(|slot| self.slots.get_mut(*slot as usize)) else {
            return;
        };
        let next = c
            .features
            .last_seen()
            .and_then(|seen| c.segments.next_due(rules, &c.features.segment_features(seen, features)));
        if next == c.scheduled {
            return;
        }
        let set = self.timers.entry(c.partition).or_default();
        if let Some(old) = c.scheduled.take() {
            set.remove(&(old, id.clone()));
        }
        if let Some(due) = next {
            set.insert((due, id.clone()));
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
        let c = self.slots.get(*self.index.get(id.as_str())? as usize)?;
        Some(MembershipRecord {
            customer_id: id.clone(),
            segments: c.segments.memberships(),
            updated_at,
            rule_version: self.rules.version(),
        })
    }

    /// Drops every customer of a revoked partition; returns how many.
    pub(crate) fn drop_partition(&mut self, partition: i32) -> usize {
        self.timers.remove(&partition);
        let (dropped, kept): (Vec<Customer>, Vec<Customer>) =
            std::mem::take(&mut self.slots).into_iter().partition(|c| c.partition == partition);
        self.slots = kept;
        for c in &dropped {
            self.count_memberships(&c.segments, -1);
        }
        // Rebalances are rare: re-index the survivors.
        self.index = self.slots.iter().zip(0u32..).map(|(c, slot)| (c.id.clone(), slot)).collect();
        dropped.len()
    }

    /// Customers per (kind, segment).
    pub(crate) fn population(&self) -> impl Iterator<Item = ((SegmentKind, &'static str), i64)> + '_ {
        self.population.iter().map(|(s, n)| (*s, *n))
    }

    /// Every customer with their features as of `as_of` and lifecycle stage.
    pub(crate) fn features_as_of(
        &self,
        as_of: EventTime,
    ) -> impl Iterator<Item = (&CustomerId, segstream_features::Features, Option<&'static str>)> + '_ {
        self.slots.iter().map(move |c| {
            let stage = c.segments.lifecycle().map(|s| s.as_str());
            (&c.id, c.features.features(as_of, &self.features, &self.dict), stage)
        })
    }

    /// Everything this store holds, as a snapshot as of `as_of`.
    pub(crate) fn to_snapshot(&self, as_of: EventTime, partitions: i32) -> Snapshot {
        let mut snapshot = Snapshot::new(as_of, partitions, self.features.clone());
        snapshot.categories = self.dict.categories.names().to_vec();
        snapshot.payments = self.dict.payments.names().to_vec();
        snapshot.customers = self
            .slots
            .iter()
            .map(|c| SavedCustomer {
                id: c.id.clone(),
                partition: c.partition,
                features: c.features.clone(),
                segments: c.segments.clone(),
            })
            .collect();
        snapshot
    }

    /// A store holding a snapshot's customers, timers rescheduled. The
    /// snapshot must have been kept with the same feature windows.
    pub(crate) fn from_snapshot(
        rules: LifecycleRules,
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

    /// Takes the names a snapshot's customers refer to; call before any event.
    pub(crate) fn seed_dictionaries(&mut self, categories: Vec<Arc<str>>, payments: Vec<Arc<str>>) {
        self.dict = Dictionaries::with_names(categories, payments);
    }

    /// Adds a customer saved in a snapshot (replacing none: call on a
    /// partition that holds nothing yet), its timer scheduled.
    pub(crate) fn insert_saved(&mut self, saved: SavedCustomer) {
        if self.index.contains_key(saved.id.as_str()) {
            return;
        }
        let slot = u32::try_from(self.slots.len()).unwrap_or(u32::MAX);
        self.index.insert(saved.id.clone(), slot);
        let id = saved.id.clone();
        self.count_memberships(&saved.segments, 1);
        self.slots.push(Customer {
            id: saved.id,
            features: saved.features,
            segments: saved.segments,
            partition: saved.partition,
            scheduled: None,
        });
        self.reschedule(&id);
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

    /// Approximate bytes of the whole state (walks every customer: call rarely).
    pub(crate) fn approx_bytes(&self) -> usize {
        // `approx_bytes` counts the inline state already.
        let per_slot = std::mem::size_of::<Customer>() - std::mem::size_of::<CustomerState>()
            + std::mem::size_of::<(CustomerId, u32)>();
        self.slots.iter().map(|c| c.id.as_str().len() + c.features.approx_bytes() + per_slot).sum()
    }
}

#[cfg(test)]
mod tests {
    use segstream_config::Config;
    use segstream_events::OrderStatus;

    use super::*;

    const DAY: i64 = 86_400_000;

    fn order(customer: &str, id: &'static str, day: i64) -> OrderRow<'static> {
        OrderRow {
            order_id: id,
            customer_id: if customer == "a" { "a" } else { "b" },
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
            CustomerStore::new(LifecycleRules::new(config.lifecycle), config.features).expect("store");
        store.on_order(&order("a", "a1", 0));
        store.on_order(&order("b", "b1", 10));
        assert_eq!(store.pending_timers(), 2);
        let at = |day: i64| EventTime::from_millis(1_700_000_000_000 + day * DAY);
        // Day 35: a's "new" window ended (day 30), b's not yet (day 40).
        let fired = store.fire_timers(0, at(35));
        assert_eq!(
            fired.iter().map(|(id, t)| (id.as_str(), t[0].to.unwrap_or("none"))).collect::<Vec<_>>(),
            [("a", "active")]
        );
        // Everything up to day 200, earliest first, each customer rescheduled after each step.
        let fired: Vec<(String, &str)> = store
            .fire_timers(0, at(200))
            .into_iter()
            .flat_map(|(id, ts)| ts.into_iter().map(move |t| (id.to_string(), t.to.unwrap_or("none"))))
            .collect();
        let expected =
            [("b", "active"), ("a", "at_risk"), ("b", "at_risk"), ("a", "churned"), ("b", "churned")];
        assert_eq!(fired.iter().map(|(c, s)| (c.as_str(), *s)).collect::<Vec<_>>(), expected);
        assert_eq!(store.pending_timers(), 0, "churned has no further due time");
        assert_eq!(
            store.population().find(|(s, _)| *s == (SegmentKind::Lifecycle, "churned")),
            Some(((SegmentKind::Lifecycle, "churned"), 2))
        );
        assert!(store.fire_timers(1, at(400)).is_empty(), "other partitions are untouched");
    }
}
