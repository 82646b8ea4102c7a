use std::collections::BTreeMap;

use segstream_config::LifecycleConfig;
use segstream_events::{EventTime, Membership, SegmentKind, Trigger};
use segstream_features::Features;
use serde::{Deserialize, Serialize};

/// Lifecycle stage: exactly one per known customer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LifecycleStage {
    /// Seen, never bought (or every order was cancelled).
    Prospect,
    /// First order within `new_days`.
    New,
    /// Buying, neither new nor silent.
    Active,
    /// No order for more than `at_risk_days`.
    AtRisk,
    /// No order for more than `churn_days`.
    Churned,
    /// Ordered again after being churned, for `reactivated_days`.
    Reactivated,
}

impl LifecycleStage {
    /// Segment name on the wire.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Prospect => "prospect",
            Self::New => "new",
            Self::Active => "active",
            Self::AtRisk => "at_risk",
            Self::Churned => "churned",
            Self::Reactivated => "reactivated",
        }
    }
}

impl std::fmt::Display for LifecycleStage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The lifecycle thresholds in force.
#[derive(Clone, Debug, PartialEq)]
pub struct LifecycleRules {
    config: LifecycleConfig,
}

/// The inputs of the stage function, taken from [`Features`].
#[derive(Clone, Copy, Debug)]
struct StageInputs {
    first_order: Option<EventTime>,
    last_order: Option<EventTime>,
    orders: u32,
    reactivated_at: Option<EventTime>,
}

/// A change of lifecycle stage, before it becomes change records.
#[derive(Clone, Debug, PartialEq)]
pub struct Transition {
    /// Stage before (`None` for a customer's first appearance).
    pub from: Option<LifecycleStage>,
    /// Stage after.
    pub to: LifecycleStage,
    /// When it became true: the event's time, or the due time of a timer.
    pub at: EventTime,
    /// Event or timer.
    pub trigger: Trigger,
    /// Rule that decided, e.g. `lifecycle.at_risk`.
    pub rule_id: String,
    /// Version of the rules.
    pub rule_version: i32,
    /// Why, in words.
    pub reason: String,
    /// Feature values and thresholds that decided.
    pub features: BTreeMap<String, f64>,
}

impl LifecycleRules {
    /// Rules from the `[lifecycle]` config section.
    pub fn new(config: LifecycleConfig) -> Self {
        Self { config }
    }

    /// Version carried on change records.
    pub fn version(&self) -> i32 {
        self.config.rule_version
    }

    fn stage(&self, i: StageInputs, t: EventTime) -> LifecycleStage {
        let c = &self.config;
        let (Some(first), Some(last)) = (i.first_order, i.last_order) else {
            return LifecycleStage::Prospect;
        };
        if i.orders == 0 {
            return LifecycleStage::Prospect;
        }
        let silence = t.days_since(last);
        if silence > c.churn_days {
            LifecycleStage::Churned
        } else if silence > c.at_risk_days {
            LifecycleStage::AtRisk
        } else if i.reactivated_at.is_some_and(|r| t.days_since(r) <= c.reactivated_days) {
            LifecycleStage::Reactivated
        } else if t.days_since(first) <= c.new_days {
            LifecycleStage::New
        } else {
            LifecycleStage::Active
        }
    }

    /// Stage of a customer with these features at time `t` (no reactivation).
    pub fn stage_at(&self, f: &Features, t: EventTime) -> LifecycleStage {
        self.stage(inputs(f, None), t)
    }

    /// Times after which the stage may change with no new event: each
    /// threshold is crossed 1 ms after `reference + days`.
    fn due_times(&self, i: StageInputs) -> [Option<EventTime>; 4] {
        let c = &self.config;
        let after = |t: Option<EventTime>, days: f64| t.map(|t| t.plus_days(days).plus_millis(1));
        [
            after(i.first_order, c.new_days),
            after(i.last_order, c.at_risk_days),
            after(i.last_order, c.churn_days),
            after(i.reactivated_at, c.reactivated_days),
        ]
    }

    fn explain(
        &self,
        from: Option<LifecycleStage>,
        to: LifecycleStage,
        f: &Features,
        trigger: Trigger,
    ) -> (String, BTreeMap<String, f64>) {
        let c = &self.config;
        let mut values = f.to_map();
        let silence = f.days_since_last_order.unwrap_or_default();
        let (reason, threshold) = match to {
            LifecycleStage::Prospect
                if f.lifetime_orders == 0 && from.is_some_and(|s| s != LifecycleStage::Prospect) =>
            {
                ("every order cancelled or refunded".to_owned(), None)
            }
            LifecycleStage::Prospect => ("seen, no order yet".to_owned(), None),
            LifecycleStage::Active
                if trigger == Trigger::Timer && from == Some(LifecycleStage::Reactivated) =>
            {
                (
                    format!("{} days since reactivation, {} orders", c.reactivated_days, f.lifetime_orders),
                    Some(("reactivated_days", c.reactivated_days)),
                )
            }
            LifecycleStage::New => {
                (format!("first order, new for {} days", c.new_days), Some(("new_days", c.new_days)))
            }
            LifecycleStage::Active if trigger == Trigger::Timer => (
                format!("{} days since first order, {} orders", c.new_days, f.lifetime_orders),
                Some(("new_days", c.new_days)),
            ),
            LifecycleStage::Active => (
                format!("ordered: {} orders in 365 days", f.orders_365d),
                Some(("at_risk_days", c.at_risk_days)),
            ),
            LifecycleStage::AtRisk => (
                format!("no order for {silence:.0} days (at risk after {})", c.at_risk_days),
                Some(("at_risk_days", c.at_risk_days)),
            ),
            LifecycleStage::Churned => (
                format!("no order for {silence:.0} days (churned after {})", c.churn_days),
                Some(("churn_days", c.churn_days)),
            ),
            LifecycleStage::Reactivated => (
                format!("ordered again after being churned, {} orders", f.lifetime_orders),
                Some(("churn_days", c.churn_days)),
            ),
        };
        if let Some((name, days)) = threshold {
            values.insert(format!("threshold_{name}"), days);
        }
        (reason, values)
    }
}

fn inputs(f: &Features, reactivated_at: Option<EventTime>) -> StageInputs {
    StageInputs {
        first_order: f.first_order,
        last_order: f.last_order,
        orders: f.lifetime_orders,
        reactivated_at,
    }
}

/// The segments of one customer and the bookkeeping to move them.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CustomerSegments {
    lifecycle: Option<(LifecycleStage, EventTime)>,
    reactivated_at: Option<EventTime>,
    /// Latest time this customer was evaluated at; evaluation never goes back.
    evaluated_at: Option<EventTime>,
}

impl CustomerSegments {
    /// Current lifecycle stage, if the customer was ever evaluated.
    pub fn lifecycle(&self) -> Option<LifecycleStage> {
        self.lifecycle.map(|(s, _)| s)
    }

    /// Current memberships, for the `customer-segments` topic.
    pub fn memberships(&self) -> Vec<Membership> {
        self.lifecycle
            .iter()
            .map(|(stage, since)| Membership {
                kind: SegmentKind::Lifecycle,
                segment: stage.as_str().to_owned(),
                since: *since,
            })
            .collect()
    }

    /// The next time the stage may change with no new event (for a timer),
    /// given the customer's current features.
    pub fn next_due(&self, rules: &LifecycleRules, features: &Features) -> Option<EventTime> {
        let at = self.evaluated_at?;
        self.lifecycle?;
        rules.due_times(inputs(features, self.reactivated_at)).into_iter().flatten().filter(|d| *d > at).min()
    }

    /// Time-driven transitions due in `(evaluated_at, to]`, with no new event:
    /// `features_at(t)` gives the customer's features at time `t`.
    pub fn advance(
        &mut self,
        rules: &LifecycleRules,
        to: EventTime,
        features_at: impl Fn(EventTime) -> Features,
    ) -> Vec<Transition> {
        let mut out = Vec::new();
        let Some(mut at) = self.evaluated_at else { return out };
        if self.lifecycle.is_none() {
            return out;
        }
        let i = inputs(&features_at(to), self.reactivated_at);
        loop {
            let next = rules.due_times(i).into_iter().flatten().filter(|d| *d > at && *d <= to).min();
            let Some(due) = next else { break };
            let stage = rules.stage(i, due);
            at = due;
            if let Some(t) = self.move_to(rules, stage, due, Trigger::Timer, &features_at(due)) {
                out.push(t);
            }
        }
        self.evaluated_at = Some(at.max(to));
        out
    }

    /// Evaluates after an event at `t` has been applied to the features;
    /// `features_at(t)` gives the features at time `t`. `ordered` says
    /// whether the event was an order that counted.
    pub fn on_event(
        &mut self,
        rules: &LifecycleRules,
        t: EventTime,
        ordered: bool,
        features_at: impl Fn(EventTime) -> Features,
    ) -> Option<Transition> {
        // Never evaluate back in time: a late event is judged as of now.
        let at = self.evaluated_at.map_or(t, |e| e.max(t));
        self.evaluated_at = Some(at);
        let features = features_at(at);
        let mut stage = rules.stage(inputs(&features, self.reactivated_at), at);
        if ordered && self.lifecycle() == Some(LifecycleStage::Churned) && stage != LifecycleStage::Churned {
            self.reactivated_at = Some(at);
            stage = rules.stage(inputs(&features, self.reactivated_at), at);
        }
        self.move_to(rules, stage, at, Trigger::Event, &features)
    }

    fn move_to(
        &mut self,
        rules: &LifecycleRules,
        to: LifecycleStage,
        at: EventTime,
        trigger: Trigger,
        features: &Features,
    ) -> Option<Transition> {
        let from = self.lifecycle();
        if from == Some(to) {
            return None;
        }
        self.lifecycle = Some((to, at));
        let (reason, values) = rules.explain(from, to, features, trigger);
        Some(Transition {
            from,
            to,
            at,
            trigger,
            rule_id: format!("lifecycle.{to}"),
            rule_version: rules.version(),
            reason,
            features: values,
        })
    }
}
