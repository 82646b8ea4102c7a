//! The customers this worker owns: features and segments per customer, the
//! timers of their time-driven transitions, and the population per segment.
//! Owned by the pipeline thread alone.
//!
//! Timers are derived state: after every evaluation a customer's next due
//! time (first order + new days, last order + at-risk days, ...) is
//! (re)scheduled in its partition's timer set, so rebuilding the customers
//! (replay) rebuilds the timers too.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use segstream_config::FeaturesConfig;
use segstream_events::{
    ClickRow, CustomerId, CustomerSegments as MembershipRecord, EventTime, OrderRow, OrderStatus,
};
use segstream_features::CustomerState;
use segstream_segments::{CustomerSegments, LifecycleRules, LifecycleStage, Transition};

#[derive(Debug, Default)]
struct Customer {
    features: CustomerState,
    segments: CustomerSegments,
    /// Input partition the customer's events come from (same index on both topics).
    partition: i32,
    /// Due time of this customer's entry in the timer set.
    scheduled: Option<EventTime>,
}

/// All customers of this worker.
#[derive(Debug)]
pub(crate) struct CustomerStore {
    customers: HashMap<CustomerId, Customer>,
    population: BTreeMap<LifecycleStage, i64>,
    /// Per partition: (due time, customer), earliest first.
    timers: BTreeMap<i32, BTreeSet<(EventTime, CustomerId)>>,
    rules: LifecycleRules,
    features: FeaturesConfig,
}

impl CustomerStore {
    pub(crate) fn new(rules: LifecycleRules, features: FeaturesConfig) -> Self {
        Self {
            customers: HashMap::new(),
            population: BTreeMap::new(),
            timers: BTreeMap::new(),
            rules,
            features,
        }
    }

    /// Applies a click: time-driven transitions due before it, then the
    /// evaluation after it.
    pub(crate) fn on_click(&mut self, row: &ClickRow<'_>) -> (CustomerId, Vec<Transition>) {
        let features = self.features.clone();
        self.process(row.customer_id, row.partition, row.event_time, |state| {
            state.apply_click(row, &features);
            false
        })
    }

    /// Applies an order event; see [`CustomerStore::on_click`].
    pub(crate) fn on_order(&mut self, row: &OrderRow<'_>) -> (CustomerId, Vec<Transition>) {
        self.process(row.customer_id, row.partition, row.event_time, |state| {
            state.apply_order(row) && row.status == OrderStatus::Placed
        })
    }

    fn process(
        &mut self,
        customer_id: &str,
        partition: i32,
        t: EventTime,
        apply: impl FnOnce(&mut CustomerState) -> bool,
    ) -> (CustomerId, Vec<Transition>) {
        let id = match self.customers.get_key_value(customer_id) {
            Some((id, _)) => id.clone(),
            None => CustomerId::new(customer_id),
        };
        let c =
            self.customers.entry(id.clone()).or_insert_with(|| Customer { partition, ..Customer::default() });
        let Customer { features, segments, .. } = c;
        let mut transitions = segments.advance(&self.rules, t, |at| features.features(at));
        let ordered = apply(features);
        transitions.extend(segments.on_event(&self.rules, t, ordered, |at| features.features(at)));
        self.reschedule(&id);
        self.count(&transitions);
        (id, transitions)
    }

    /// Fires the timers of `partition` due at or before `watermark`, earliest
    /// first: each customer moves to the stage its silence has earned.
    pub(crate) fn fire_timers(
        &mut self,
        partition: i32,
        watermark: EventTime,
    ) -> Vec<(CustomerId, Vec<Transition>)> {
        let mut out = Vec::new();
        while let Some((due, id)) = self.next_due_timer(partition, watermark) {
            let Some(c) = self.customers.get_mut(&id) else { continue };
            c.scheduled = None;
            let Customer { features, segments, .. } = c;
            let transitions = segments.advance(&self.rules, due, |at| features.features(at));
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
    pub(crate) fn pending_timers(&self) -> usize {
        self.timers.values().map(BTreeSet::len).sum()
    }

    fn reschedule(&mut self, id: &CustomerId) {
        let Some(c) = self.customers.get_mut(id) else { return };
        let next = c
            .features
            .last_seen()
            .and_then(|seen| c.segments.next_due(&self.rules, &c.features.features(seen)));
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
                *self.population.entry(from).or_default() -= 1;
            }
            *self.population.entry(tr.to).or_default() += 1;
        }
    }

    /// The membership record of a customer, as of `updated_at`.
    pub(crate) fn membership(&self, id: &CustomerId, updated_at: EventTime) -> Option<MembershipRecord> {
        self.customers.get(id).map(|c| MembershipRecord {
            customer_id: id.clone(),
            segments: c.segments.memberships(),
            updated_at,
            rule_version: self.rules.version(),
        })
    }

    /// Drops every customer of a revoked partition; returns how many.
    pub(crate) fn drop_partition(&mut self, partition: i32) -> usize {
        self.timers.remove(&partition);
        let before = self.customers.len();
        let population = &mut self.population;
        self.customers.retain(|_, c| {
            let keep = c.partition != partition;
            if !keep && let Some(stage) = c.segments.lifecycle() {
                *population.entry(stage).or_default() -= 1;
            }
            keep
        });
        before - self.customers.len()
    }

    /// Customers per lifecycle stage.
    pub(crate) fn population(&self) -> impl Iterator<Item = (LifecycleStage, i64)> + '_ {
        self.population.iter().map(|(s, n)| (*s, *n))
    }

    /// Every customer with their state and lifecycle stage.
    pub(crate) fn customers(
        &self,
    ) -> impl Iterator<Item = (&CustomerId, &CustomerState, Option<LifecycleStage>)> + '_ {
        self.customers.iter().map(|(id, c)| (id, &c.features, c.segments.lifecycle()))
    }

    /// Customers held.
    pub(crate) fn len(&self) -> usize {
        self.customers.len()
    }

    /// Approximate bytes of the whole state (walks every customer: call rarely).
    pub(crate) fn approx_bytes(&self) -> usize {
        self.customers
            .iter()
            .map(|(id, c)| {
                id.as_str().len() + c.features.approx_bytes() + std::mem::size_of::<(CustomerId, Customer)>()
            })
            .sum()
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
            payment_method: None,
            partition: 0,
            offset: 0,
        }
    }

    #[test]
    fn timers_fire_in_due_order_up_to_the_watermark_and_reschedule() {
        let config = Config::default();
        let mut store = CustomerStore::new(LifecycleRules::new(config.lifecycle), config.features);
        store.on_order(&order("a", "a1", 0));
        store.on_order(&order("b", "b1", 10));
        assert_eq!(store.pending_timers(), 2);
        let at = |day: i64| EventTime::from_millis(1_700_000_000_000 + day * DAY);
        // Day 35: a's "new" window ended (day 30), b's not yet (day 40).
        let fired = store.fire_timers(0, at(35));
        assert_eq!(
            fired.iter().map(|(id, t)| (id.as_str(), t[0].to.as_str())).collect::<Vec<_>>(),
            [("a", "active")]
        );
        // Everything up to day 200, earliest first, each customer rescheduled after each step.
        let fired: Vec<(String, &str)> = store
            .fire_timers(0, at(200))
            .into_iter()
            .flat_map(|(id, ts)| ts.into_iter().map(move |t| (id.to_string(), t.to.as_str())))
            .collect();
        let expected =
            [("b", "active"), ("a", "at_risk"), ("b", "at_risk"), ("a", "churned"), ("b", "churned")];
        assert_eq!(fired.iter().map(|(c, s)| (c.as_str(), *s)).collect::<Vec<_>>(), expected);
        assert_eq!(store.pending_timers(), 0, "churned has no further due time");
        assert_eq!(
            store.population().find(|(s, _)| *s == LifecycleStage::Churned),
            Some((LifecycleStage::Churned, 2))
        );
        assert!(store.fire_timers(1, at(400)).is_empty(), "other partitions are untouched");
    }
}
