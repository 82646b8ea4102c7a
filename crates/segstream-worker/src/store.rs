//! The customers this worker owns: features and segments per customer, and
//! the population per segment. Owned by the pipeline thread alone.

use std::collections::{BTreeMap, HashMap};

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
}

/// All customers of this worker.
#[derive(Debug)]
pub(crate) struct CustomerStore {
    customers: HashMap<CustomerId, Customer>,
    population: BTreeMap<LifecycleStage, i64>,
    rules: LifecycleRules,
    features: FeaturesConfig,
}

impl CustomerStore {
    pub(crate) fn new(rules: LifecycleRules, features: FeaturesConfig) -> Self {
        Self { customers: HashMap::new(), population: BTreeMap::new(), rules, features }
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
        for tr in &transitions {
            if let Some(from) = tr.from {
                *self.population.entry(from).or_default() -= 1;
            }
            *self.population.entry(tr.to).or_default() += 1;
        }
        (id, transitions)
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
