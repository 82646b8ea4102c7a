use std::collections::BTreeMap;

use segstream_config::{FeaturesConfig, LifecycleConfig};
use segstream_events::{EventTime, Membership, SegmentKind, Trigger};
use segstream_features::{CustomerState, Dictionaries, Features};
use serde::{Deserialize, Serialize};
use thin_vec::ThinVec;

use crate::SegmentRules;
use crate::model::cluster_segment;
use crate::rfm::RfmScores;

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
    /// Active, with net revenue in the high-value window at or above
    /// `high_value_revenue`.
    HighValue,
    /// No order for more than `at_risk_days`.
    AtRisk,
    /// No order for more than `churn_days`.
    Churned,
    /// Ordered after a silence longer than the churn limit, for `reactivated_days`.
    Reactivated,
}

impl LifecycleStage {
    /// Every stage.
    pub const ALL: [LifecycleStage; 7] = [
        Self::Prospect,
        Self::New,
        Self::Active,
        Self::HighValue,
        Self::AtRisk,
        Self::Churned,
        Self::Reactivated,
    ];

    /// Segment name on the wire.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Prospect => "prospect",
            Self::New => "new",
            Self::Active => "active",
            Self::HighValue => "high_value",
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

/// One customer's state as the segment rules read it.
#[derive(Clone, Copy, Debug)]
pub struct Subject<'a> {
    /// What is kept about the customer.
    pub state: &'a CustomerState,
    /// The feature settings in force.
    pub config: &'a FeaturesConfig,
    /// The name dictionaries, when a rule reads a category
    /// ([`crate::BehaviourRules::reads_categories`]): the features then
    /// include the order-based names (top category, payment).
    pub dict: Option<&'a Dictionaries>,
    /// Whether a rule reads click counts, devices or parts of the day
    /// ([`crate::BehaviourRules::reads_clicks`]): the features then include them.
    pub clicks: bool,
}

impl Subject<'_> {
    fn features(&self, at: EventTime) -> Features {
        self.state.features_reading(at, self.config, self.dict, self.clicks)
    }
}

/// The inputs of the stage function, taken from [`Features`].
#[derive(Clone, Copy, Debug)]
struct StageInputs {
    first_order: Option<EventTime>,
    last_order: Option<EventTime>,
    orders: u32,
    /// Mean days between orders, lifetime.
    mean_gap: Option<f64>,
    reactivated: Option<Reactivation>,
    /// Net revenue in the high-value window.
    window_revenue: f64,
}

/// An order after a silence longer than the churn limit in force before it.
#[derive(Clone, Copy, Debug)]
struct Reactivation {
    at: EventTime,
    silence_days: f64,
    churn_days: f64,
}

/// A change of segment membership, before it becomes change records: the
/// customer leaves `from` (if any) and enters `to` (if any). A lifecycle
/// change has both (but `from` on first appearance); a behaviour segment is
/// entered (`to` only) or exited (`from` only).
#[derive(Clone, Debug, PartialEq)]
pub struct Transition {
    /// Family of the segments.
    pub kind: SegmentKind,
    /// Segment left.
    pub from: Option<&'static str>,
    /// Segment entered.
    pub to: Option<&'static str>,
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
    /// Version of the trained model whose values decided, if one did.
    pub model_version: Option<String>,
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

    /// Silence (days) after which this customer is at risk, and churned: the
    /// configured days, or multiples of their own rhythm when that is on and
    /// they have ordered often enough.
    fn silence_limits(&self, i: &StageInputs) -> (f64, f64) {
        self.silence_limits_of(i.orders, i.mean_gap)
    }

    /// [`Self::silence_limits`] of a customer with `orders` net orders and
    /// this mean gap between them.
    fn silence_limits_of(&self, orders: u32, mean_gap: Option<f64>) -> (f64, f64) {
        let c = &self.config;
        match mean_gap {
            Some(gap)
                if c.at_risk_interpurchase_multiple > 0.0 && orders >= c.personal_min_orders && gap > 0.0 =>
            {
                (c.at_risk_interpurchase_multiple * gap, c.churn_interpurchase_multiple * gap)
            }
            _ => (c.at_risk_days, c.churn_days),
        }
    }

    /// When the customer was last reactivated, if that can still show at
    /// `from` or later: the latest net order up to `now`, and at most
    /// `reactivated_days` before `from`, that came after a silence longer
    /// than the churn limit in force before it (they were churned by then).
    /// A function of the orders, whatever order they arrived in: a late
    /// order that splits the silence takes the reactivation back.
    fn reactivation(
        &self,
        s: Subject<'_>,
        f: &Features,
        from: EventTime,
        now: EventTime,
    ) -> Option<Reactivation> {
        let first = f.first_order?;
        let returns = s.state.returns(from.plus_days(-self.config.reactivated_days), now);
        returns.into_iter().find_map(|r| {
            let mean_gap =
                (r.orders_before >= 2).then(|| r.previous.days_since(first) / f64::from(r.orders_before - 1));
            let (_, churn_days) = self.silence_limits_of(r.orders_before, mean_gap);
            let silence_days = r.at.days_since(r.previous);
            (silence_days > churn_days).then_some(Reactivation { at: r.at, silence_days, churn_days })
        })
    }

    /// The stage inputs of a customer evaluated at `now`, with a
    /// reactivation that can still show from `from` on.
    fn inputs_of(&self, s: Subject<'_>, f: &Features, from: EventTime, now: EventTime) -> StageInputs {
        inputs(f, self.reactivation(s, f, from, now), self.config.high_value_window_days)
    }

    fn stage(&self, i: StageInputs, t: EventTime) -> LifecycleStage {
        let c = &self.config;
        let (at_risk_days, churn_days) = self.silence_limits(&i);
        let (Some(first), Some(last)) = (i.first_order, i.last_order) else {
            return LifecycleStage::Prospect;
        };
        if i.orders == 0 {
            return LifecycleStage::Prospect;
        }
        let silence = t.days_since(last);
        if silence > churn_days {
            LifecycleStage::Churned
        } else if silence > at_risk_days {
            LifecycleStage::AtRisk
        } else if i.reactivated.is_some_and(|r| t.days_since(r.at) <= c.reactivated_days) {
            LifecycleStage::Reactivated
        } else if t.days_since(first) <= c.new_days {
            LifecycleStage::New
        } else if c.high_value_revenue > 0.0 && i.window_revenue >= c.high_value_revenue {
            LifecycleStage::HighValue
        } else {
            LifecycleStage::Active
        }
    }

    /// Stage of a customer at time `t`.
    pub fn stage_at(&self, s: Subject<'_>, t: EventTime) -> LifecycleStage {
        let f = s.features(t);
        self.stage(self.inputs_of(s, &f, t, t), t)
    }

    /// Times after which the stage may change with no new event: each
    /// threshold is crossed 1 ms after `reference + days`.
    fn due_times(&self, i: StageInputs) -> [Option<EventTime>; 4] {
        let c = &self.config;
        let (at_risk_days, churn_days) = self.silence_limits(&i);
        let after = |t: Option<EventTime>, days: f64| t.map(|t| t.plus_days(days).plus_millis(1));
        [
            after(i.first_order, c.new_days),
            after(i.last_order, at_risk_days),
            after(i.last_order, churn_days),
            after(i.reactivated.map(|r| r.at), c.reactivated_days),
        ]
    }

    fn explain(
        &self,
        from: Option<LifecycleStage>,
        to: LifecycleStage,
        f: &Features,
        i: &StageInputs,
        trigger: Trigger,
    ) -> (String, BTreeMap<String, f64>) {
        let c = &self.config;
        let mut values = f.to_map();
        let silence = f.days_since_last_order.unwrap_or_default();
        let (at_risk_days, churn_days) = self.silence_limits(i);
        let personal = |days: f64, multiple: f64| {
            if (days - multiple * f.interpurchase_mean_days.unwrap_or_default()).abs() < 1e-9
                && multiple > 0.0
            {
                format!(
                    "{days:.0}, {multiple} x their {:.0}-day rhythm",
                    f.interpurchase_mean_days.unwrap_or_default()
                )
            } else {
                format!("{days}")
            }
        };
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
            LifecycleStage::HighValue => (
                format!(
                    "{:.2} net revenue in {} days (high value from {:.2}), {} orders",
                    i.window_revenue, c.high_value_window_days, c.high_value_revenue, f.lifetime_orders
                ),
                Some(("high_value_revenue", c.high_value_revenue)),
            ),
            LifecycleStage::Active if from == Some(LifecycleStage::HighValue) => (
                format!(
                    "net revenue in {} days down to {:.2} (high value from {:.2})",
                    c.high_value_window_days, i.window_revenue, c.high_value_revenue
                ),
                Some(("high_value_revenue", c.high_value_revenue)),
            ),
            LifecycleStage::Active if trigger == Trigger::Timer => (
                format!("{} days since first order, {} orders", c.new_days, f.lifetime_orders),
                Some(("new_days", c.new_days)),
            ),
            LifecycleStage::Active => (
                match f.order_windows.last() {
                    Some(w) => format!("ordered: {} orders in {} days", w.orders, w.days),
                    None => format!("ordered: {} orders", f.lifetime_orders),
                },
                Some(("at_risk_days", c.at_risk_days)),
            ),
            LifecycleStage::AtRisk => (
                format!(
                    "no order for {silence:.0} days (at risk after {})",
                    personal(at_risk_days, c.at_risk_interpurchase_multiple)
                ),
                Some(("at_risk_days", at_risk_days)),
            ),
            LifecycleStage::Churned => (
                format!(
                    "no order for {silence:.0} days (churned after {})",
                    personal(churn_days, c.churn_interpurchase_multiple)
                ),
                Some(("churn_days", churn_days)),
            ),
            LifecycleStage::Reactivated => match i.reactivated {
                Some(r) => {
                    values.insert("silence_before_order_days".to_owned(), r.silence_days);
                    (
                        format!(
                            "ordered again after {:.0} days without an order (churned after {:.0}), {} orders",
                            r.silence_days, r.churn_days, f.lifetime_orders
                        ),
                        Some(("churn_days", r.churn_days)),
                    )
                }
                None => (format!("ordered again after being churned, {} orders", f.lifetime_orders), None),
            },
        };
        if let Some((name, days)) = threshold {
            values.insert(format!("threshold_{name}"), days);
        }
        (reason, values)
    }
}

/// Name of the behaviour segment of customers with an abandoned cart.
pub const CART_ABANDONER: &str = "cart_abandoner";

/// When the cart features change with no new event: the cart becomes
/// abandoned, or leaves the activity window.
fn cart_due_times(f: &Features) -> [Option<EventTime>; 2] {
    [f.cart_abandon_at, f.cart_expire_at]
}

fn inputs(f: &Features, reactivated: Option<Reactivation>, high_value_window_days: u32) -> StageInputs {
    StageInputs {
        first_order: f.first_order,
        last_order: f.last_order,
        orders: f.lifetime_orders,
        mean_gap: f.interpurchase_mean_days,
        reactivated,
        window_revenue: window_revenue(f, high_value_window_days),
    }
}

/// Net revenue in the order window of `days`.
fn window_revenue(f: &Features, days: u32) -> f64 {
    f.order_windows.iter().find(|w| w.days == days).map_or(0.0, |w| w.revenue)
}

/// A behaviour segment a customer is in: by which rule, its name (a
/// category fan's names the category), since when.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct BehaviourMembership {
    rule: u8,
    name: Box<str>,
    since: EventTime,
}

/// A buyer's RFM scores, the segment their cell was named when they
/// entered it (a new table renames cells), and since when.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct RfmMembership {
    scores: RfmScores,
    /// Inline: RFM segment names fit in 24 bytes, so no allocation per buyer.
    segment: compact_str::CompactString,
    since: EventTime,
}

/// A buyer's cluster under the model in force and their micro-segment
/// (lifecycle stage × cluster), each since when.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct ClusterMembership {
    id: u32,
    since: EventTime,
    /// The stage of the micro-segment `<stage>:cluster_<id>`.
    stage: LifecycleStage,
    micro_since: EventTime,
}

impl ClusterMembership {
    fn micro(&self) -> String {
        micro_segment(self.stage, self.id)
    }
}

fn micro_segment(stage: LifecycleStage, cluster: u32) -> String {
    format!("{}:{}", stage.as_str(), cluster_segment(cluster))
}

/// A user-defined segment a customer is in, since when.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct CustomMembership {
    name: Box<str>,
    since: EventTime,
}

/// Where a customer was evaluated: what the user-defined segments are
/// evaluated on, once per batch (see [`CustomerSegments::apply_custom`]).
pub type Observe<'o> = &'o mut dyn FnMut(EventTime, Trigger, &CustomerSegments);

/// The segments of one customer and the bookkeeping to move them.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CustomerSegments {
    lifecycle: Option<(LifecycleStage, EventTime)>,
    /// In the cart-abandoner segment since.
    cart_abandoner: Option<EventTime>,
    /// A buyer's RFM scores and segment (scores move within a segment
    /// without a change).
    rfm: Option<RfmMembership>,
    /// Behaviour segments of the definitions file the customer is in.
    behaviour: ThinVec<BehaviourMembership>,
    /// User-defined segments the customer is in.
    custom: ThinVec<CustomMembership>,
    /// Cluster and micro-segment, while a model is in force (boxed: only
    /// buyers have one).
    cluster: Option<Box<ClusterMembership>>,
    /// Latest time this customer was evaluated at; evaluation never goes back.
    evaluated_at: Option<EventTime>,
}

impl CustomerSegments {
    /// Current lifecycle stage, if the customer was ever evaluated.
    pub fn lifecycle(&self) -> Option<LifecycleStage> {
        self.lifecycle.map(|(s, _)| s)
    }

    /// Current RFM scores, if a buyer.
    pub fn rfm(&self) -> Option<RfmScores> {
        self.rfm.as_ref().map(|m| m.scores)
    }

    /// Current memberships, for the `customer-segments` topic.
    pub fn memberships(&self) -> Vec<Membership> {
        let lifecycle = self.lifecycle.iter().map(|(stage, since)| Membership {
            kind: SegmentKind::Lifecycle,
            segment: stage.as_str().to_owned(),
            since: *since,
        });
        let cart = self.cart_abandoner.iter().map(|since| Membership {
            kind: SegmentKind::Behaviour,
            segment: CART_ABANDONER.to_owned(),
            since: *since,
        });
        let rfm = self.rfm.iter().map(|m| Membership {
            kind: SegmentKind::Rfm,
            segment: m.segment.to_string(),
            since: m.since,
        });
        let behaviour = self.behaviour.iter().map(|m| Membership {
            kind: SegmentKind::Behaviour,
            segment: m.name.to_string(),
            since: m.since,
        });
        let custom = self.custom.iter().map(|m| Membership {
            kind: SegmentKind::Custom,
            segment: m.name.to_string(),
            since: m.since,
        });
        let cluster = self.cluster.iter().flat_map(|m| {
            [
                Membership { kind: SegmentKind::Cluster, segment: cluster_segment(m.id), since: m.since },
                Membership { kind: SegmentKind::Cluster, segment: m.micro(), since: m.micro_since },
            ]
        });
        lifecycle.chain(rfm).chain(cart).chain(behaviour).chain(custom).chain(cluster).collect()
    }

    /// The buyer's cluster id under the model in force.
    pub fn cluster(&self) -> Option<u32> {
        self.cluster.as_ref().map(|m| m.id)
    }

    /// The segments the customer is in now, by kind.
    pub fn current(&self) -> impl Iterator<Item = (SegmentKind, &'static str)> + '_ {
        let lifecycle = self.lifecycle().map(|s| (SegmentKind::Lifecycle, s.as_str()));
        let rfm = self.rfm.as_ref().map(|m| (SegmentKind::Rfm, crate::names::intern(&m.segment)));
        let cart = self.cart_abandoner.map(|_| (SegmentKind::Behaviour, CART_ABANDONER));
        let behaviour =
            self.behaviour.iter().map(|m| (SegmentKind::Behaviour, crate::names::intern(&m.name)));
        let custom = self.custom.iter().map(|m| (SegmentKind::Custom, crate::names::intern(&m.name)));
        let cluster = self.cluster.iter().flat_map(|m| {
            [
                (SegmentKind::Cluster, crate::names::intern(&cluster_segment(m.id))),
                (SegmentKind::Cluster, crate::names::intern(&m.micro())),
            ]
        });
        lifecycle.into_iter().chain(rfm).chain(cart).chain(behaviour).chain(custom).chain(cluster)
    }

    /// Whether the customer is in some user-defined segment.
    pub fn in_custom(&self) -> bool {
        !self.custom.is_empty()
    }

    /// Enters and leaves the user-defined segments as one evaluation of them
    /// found (`holds(i)`: whether segment `i` of the rules holds, `values(i)`
    /// what it read) at `at`; a membership of a segment the rules no longer
    /// define ends.
    pub fn apply_custom(
        &mut self,
        rules: &SegmentRules,
        at: EventTime,
        trigger: Trigger,
        holds: impl Fn(usize) -> bool,
        values: impl Fn(usize) -> BTreeMap<String, f64>,
    ) -> Vec<Transition> {
        let custom = &rules.definitions.custom;
        let transition = |name: &'static str, entered: bool, reason: String, features| Transition {
            kind: SegmentKind::Custom,
            from: (!entered).then_some(name),
            to: entered.then_some(name),
            at,
            trigger,
            rule_id: format!("custom.{name}"),
            rule_version: rules.definitions.version,
            reason,
            features,
            model_version: None,
        };
        let mut out = Vec::new();
        let mut i = 0;
        while let Some(m) = self.custom.get(i) {
            if custom.find(&m.name).is_some() {
                i += 1;
                continue;
            }
            let name = crate::names::intern(&self.custom.remove(i).name);
            out.push(transition(
                name,
                false,
                format!("segment `{name}` is no longer defined"),
                BTreeMap::new(),
            ));
        }
        for (i, segment) in custom.segments().iter().enumerate() {
            let member = self.custom.iter().position(|m| &*m.name == segment.name);
            match (member, holds(i)) {
                (None, true) => {
                    self.custom.push(CustomMembership { name: segment.name.into(), since: at });
                    out.push(transition(segment.name, true, format!("`{}` holds", segment.sql), values(i)));
                }
                (Some(m), false) => {
                    self.custom.remove(m);
                    let reason = format!("`{}` no longer holds", segment.sql);
                    out.push(transition(segment.name, false, reason, values(i)));
                }
                _ => {}
            }
        }
        out
    }

    /// Enters and leaves the definitions' behaviour segments as the features
    /// say, rule by rule (a category fan whose top category changes leaves
    /// one segment and enters another).
    fn evaluate_behaviour(
        &mut self,
        rules: &SegmentRules,
        at: EventTime,
        trigger: Trigger,
        f: &Features,
    ) -> Vec<Transition> {
        let mut out = Vec::new();
        let behaviour = &rules.definitions.behaviour;
        // A rule the definitions no longer have: its members leave.
        while let Some(i) = self.behaviour.iter().position(|b| !behaviour.is_on(b.rule)) {
            let name = crate::names::intern(&self.behaviour.remove(i).name);
            out.push(Transition {
                kind: SegmentKind::Behaviour,
                from: Some(name),
                to: None,
                at,
                trigger,
                rule_id: format!("behaviour.{name}"),
                rule_version: rules.definitions.version,
                reason: format!("segment `{name}` is no longer defined"),
                features: BTreeMap::new(),
                model_version: None,
            });
        }
        for m in behaviour.measures(f) {
            let held = self.behaviour.iter().position(|b| b.rule == m.rule);
            let member = held.and_then(|i| self.behaviour.get(i));
            if member.map(|b| &*b.name) == m.holds {
                continue;
            }
            // A member stays for the rule's minimum dwell, whatever the rule says.
            let dwell = behaviour.min_dwell_days(m.rule);
            if member.is_some_and(|b| at < b.since.plus_days(dwell)) {
                continue;
            }
            // The rule's reading in words and values, for the records.
            let explained = behaviour.explain(m.rule, f);
            let (reason, values) = explained.map(|e| (e.reason, e.values)).unwrap_or_default();
            let transition = |from: Option<&'static str>, to: Option<&'static str>| Transition {
                kind: SegmentKind::Behaviour,
                from,
                to,
                at,
                trigger,
                rule_id: format!("behaviour.{}", to.or(from).unwrap_or_default()),
                rule_version: rules.definitions.version,
                reason: reason.clone(),
                features: values.clone(),
                model_version: None,
            };
            if let Some(i) = held {
                let left = self.behaviour.remove(i);
                out.push(transition(Some(crate::names::intern(&left.name)), None));
            }
            if let Some(name) = m.holds {
                self.behaviour.push(BehaviourMembership { rule: m.rule, name: name.into(), since: at });
                out.push(transition(None, Some(name)));
            }
        }
        out
    }

    /// Moves the customer's RFM scores to what the features say; a change of
    /// the segment their cell names is a transition.
    fn evaluate_rfm(
        &mut self,
        rules: &SegmentRules,
        at: EventTime,
        trigger: Trigger,
        f: &Features,
    ) -> Option<Transition> {
        let rfm = rules.definitions.rfm.as_ref();
        let scores = rfm.and_then(|r| r.scores(f));
        let held = self.rfm.as_ref().map(|m| &*m.segment);
        let to = rfm.zip(scores).map(|(r, s)| r.segment(s));
        // A buyer stays in their segment for its minimum dwell (leaving RFM
        // altogether, with no net order left, is not held back).
        let dwelling =
            self.rfm.as_ref().zip(rfm).is_some_and(|(m, r)| at < m.since.plus_days(r.min_dwell_days()));
        if held == to || (to.is_some() && dwelling) {
            if let (Some(m), Some(s)) = (&mut self.rfm, scores) {
                m.scores = s;
            }
            return None;
        }
        let from = held.map(crate::names::intern);
        self.rfm =
            scores.zip(to).map(|(scores, name)| RfmMembership { scores, segment: name.into(), since: at });
        let (reason, features, rule_version, model_version) = match rfm {
            Some(r) => {
                let (reason, features) = r.explain(scores, f);
                (reason, features, r.version(), r.model_version().map(str::to_owned))
            }
            None => (
                "RFM segments are no longer defined".to_owned(),
                BTreeMap::new(),
                rules.definitions.version,
                None,
            ),
        };
        Some(Transition {
            kind: SegmentKind::Rfm,
            from,
            to,
            at,
            trigger,
            rule_id: format!("rfm.{}", to.or(from).unwrap_or_default()),
            rule_version,
            reason,
            features,
            model_version,
        })
    }

    /// Due times read where a walk stands (`features` as of `at`): the
    /// cart's, the RFM scores', and the high-value window's.
    fn walk_due_times(
        &self,
        rules: &SegmentRules,
        s: Subject<'_>,
        features: &Features,
        at: EventTime,
    ) -> [Option<EventTime>; 6] {
        let [abandon, expire] = cart_due_times(features);
        let rfm = rules.definitions.rfm.as_ref().and_then(|r| r.due_after(features, s.state, at));
        // Revenue leaves the window with no event: a high-value customer may
        // go back to active then.
        let high_value = (self.lifecycle() == Some(LifecycleStage::HighValue))
            .then(|| s.state.next_window_exit(at, rules.lifecycle.config.high_value_window_days))
            .flatten();
        let visitor = self.behaviour.iter().any(|b| &*b.name == crate::FREQUENT_VISITOR);
        let behaviour = rules.definitions.behaviour.due_after(features, s.state, at, visitor);
        // The end of a minimum dwell: the member may leave then.
        let dwell = self
            .behaviour
            .iter()
            .map(|b| b.since.plus_days(rules.definitions.behaviour.min_dwell_days(b.rule)))
            .filter(|end| *end > at)
            .min();
        let behaviour = behaviour.into_iter().chain(dwell).min();
        // The end of the RFM segment's minimum dwell.
        let rfm_dwell = self
            .rfm
            .as_ref()
            .zip(rules.definitions.rfm.as_ref())
            .map(|(m, r)| m.since.plus_days(r.min_dwell_days()));
        let rfm = [rfm, rfm_dwell.filter(|end| *end > at)].into_iter().flatten().min();
        let custom = rules.definitions.custom.due_after(features, s.state, at);
        [abandon, expire, rfm, high_value, behaviour, custom]
    }

    /// Whether the customer is in the cart-abandoner segment.
    pub fn is_cart_abandoner(&self) -> bool {
        self.cart_abandoner.is_some()
    }

    /// Enters or leaves the cart-abandoner segment as the features say.
    fn evaluate_cart(
        &mut self,
        rules: &SegmentRules,
        at: EventTime,
        trigger: Trigger,
        f: &Features,
    ) -> Option<Transition> {
        if f.cart_abandoned == self.cart_abandoner.is_some() {
            return None;
        }
        let mut values = BTreeMap::from([("cart_value".to_owned(), (f.cart_value * 100.0).round() / 100.0)]);
        let (from, to, reason) = if f.cart_abandoned {
            self.cart_abandoner = Some(at);
            let since = f.last_cart_add.map(|t| t.to_string()).unwrap_or_default();
            (
                None,
                Some(CART_ABANDONER),
                format!("cart worth {:.2} left since {since} with no order", f.cart_value),
            )
        } else {
            self.cart_abandoner = None;
            let why =
                if f.last_order.is_some_and(|o| o >= f.last_cart_add.unwrap_or(o)) || f.cart_value == 0.0 {
                    "ordered, emptied the cart, or the cart left the activity window"
                } else {
                    "added to the cart again"
                };
            (Some(CART_ABANDONER), None, why.to_owned())
        };
        values.insert("lifetime_orders".to_owned(), f64::from(f.lifetime_orders));
        Some(Transition {
            kind: SegmentKind::Behaviour,
            from,
            to,
            at,
            trigger,
            rule_id: format!("behaviour.{CART_ABANDONER}"),
            rule_version: rules.lifecycle.version(),
            reason,
            features: values,
            model_version: None,
        })
    }

    /// The next time a segment may change with no new event (for a timer).
    pub fn next_due(&self, rules: &SegmentRules, s: Subject<'_>) -> Option<EventTime> {
        self.next_due_reading(rules, s, None)
    }

    /// [`CustomerSegments::next_due`], with the features as of the latest
    /// evaluation if the caller has them (used when that is where the
    /// customer is read: nothing was seen after it).
    fn next_due_reading(
        &self,
        rules: &SegmentRules,
        s: Subject<'_>,
        evaluated: Option<&Features>,
    ) -> Option<EventTime> {
        let at = self.evaluated_at?;
        self.lifecycle?;
        let seen = s.state.last_seen()?.max(at);
        let read;
        let features = match evaluated {
            Some(f) if seen == at => f,
            _ => {
                read = s.features(seen);
                &read
            }
        };
        let lifecycle = &rules.lifecycle;
        lifecycle
            .due_times(lifecycle.inputs_of(s, features, at, seen))
            .into_iter()
            .chain(self.walk_due_times(rules, s, features, seen))
            .flatten()
            .filter(|d| *d > at)
            .min()
    }

    /// Moves the latest evaluation on to `to` with no transition: what
    /// [`CustomerSegments::advance`] does when nothing is due by `to`, for
    /// a caller that knows it (the customer's [`CustomerSegments::next_due`],
    /// read after their latest evaluation, is after `to` or none), without
    /// reading the features twice to find it out.
    pub fn pass_to(&mut self, to: EventTime) {
        if self.lifecycle.is_some()
            && let Some(at) = self.evaluated_at
        {
            self.evaluated_at = Some(at.max(to));
        }
    }

    /// Time-driven transitions due in `(evaluated_at, to]`, with no new event.
    pub fn advance(&mut self, rules: &SegmentRules, to: EventTime, s: Subject<'_>) -> Vec<Transition> {
        self.advance_observed(rules, to, s, &mut |_, _, _| {})
    }

    /// [`CustomerSegments::advance`], telling `observe` each due time it
    /// evaluated the customer at.
    pub fn advance_observed(
        &mut self,
        rules: &SegmentRules,
        to: EventTime,
        s: Subject<'_>,
        observe: Observe<'_>,
    ) -> Vec<Transition> {
        self.advance_reading(rules, to, s, observe).0
    }

    /// [`CustomerSegments::advance_observed`], then
    /// [`CustomerSegments::next_due`], reading the features as of `to` once:
    /// a timer firing moves the customer to its due time and schedules the
    /// next one from there, with nothing seen in between.
    pub fn advance_then_due(
        &mut self,
        rules: &SegmentRules,
        to: EventTime,
        s: Subject<'_>,
        observe: Observe<'_>,
    ) -> (Vec<Transition>, Option<EventTime>) {
        let (out, features) = self.advance_reading(rules, to, s, observe);
        (out, self.next_due_reading(rules, s, features.as_ref()))
    }

    /// [`CustomerSegments::advance_observed`], and the features as of `to`
    /// when the latest evaluation is then at `to` (where
    /// [`CustomerSegments::next_due`] reads the customer).
    fn advance_reading(
        &mut self,
        rules: &SegmentRules,
        to: EventTime,
        s: Subject<'_>,
        observe: Observe<'_>,
    ) -> (Vec<Transition>, Option<Features>) {
        let mut out = Vec::new();
        let Some(mut at) = self.evaluated_at else { return (out, None) };
        if self.lifecycle.is_none() {
            return (out, None);
        }
        let lifecycle = &rules.lifecycle;
        let at_to = s.features(to);
        let i = lifecycle.inputs_of(s, &at_to, at, to);
        // The cart's and the RFM scores' due times are read where the walk
        // stands, not at `to`: by then a cart may have left the window and
        // its time with it, and orders their window.
        let mut walk = self.walk_due_times(rules, s, &s.features(at), at);
        loop {
            let lifecycle_due = lifecycle.due_times(i).into_iter();
            let next = lifecycle_due.chain(walk).flatten().filter(|d| *d > at && *d <= to).min();
            let Some(due) = next else { break };
            at = due;
            let read;
            let features = if due == to {
                &at_to
            } else {
                read = s.features(due);
                &read
            };
            // Revenue is read where the walk stands: orders leave its window
            // on the way.
            let revenue = window_revenue(features, lifecycle.config.high_value_window_days);
            let i = StageInputs { window_revenue: revenue, ..i };
            self.evaluate(rules, due, Trigger::Timer, features, &i, &mut out);
            observe(due, Trigger::Timer, self);
            walk = self.walk_due_times(rules, s, features, due);
        }
        let at = at.max(to);
        self.evaluated_at = Some(at);
        (out, (at == to).then_some(at_to))
    }

    /// Evaluates after an event judged at `t` has been applied to the
    /// customer's state.
    pub fn on_event(&mut self, rules: &SegmentRules, t: EventTime, s: Subject<'_>) -> Vec<Transition> {
        self.on_event_observed(rules, t, s, &mut |_, _, _| {})
    }

    /// [`CustomerSegments::on_event`], telling `observe` the time it
    /// evaluated the customer at.
    pub fn on_event_observed(
        &mut self,
        rules: &SegmentRules,
        t: EventTime,
        s: Subject<'_>,
        observe: Observe<'_>,
    ) -> Vec<Transition> {
        self.evaluate_at(rules, t, s, Trigger::Event, observe).0
    }

    /// [`CustomerSegments::on_event_observed`], then
    /// [`CustomerSegments::next_due`], reading the features once: after an
    /// event both read the customer as of the evaluation.
    pub fn on_event_then_due(
        &mut self,
        rules: &SegmentRules,
        t: EventTime,
        s: Subject<'_>,
        observe: Observe<'_>,
    ) -> (Vec<Transition>, Option<EventTime>) {
        let (out, features) = self.evaluate_at(rules, t, s, Trigger::Event, observe);
        (out, self.next_due_reading(rules, s, Some(&features)))
    }

    /// Evaluates every kind under new rules (`rules`: new definitions,
    /// trigger `definition_change`, or a new model, trigger `model_update`),
    /// as of `t` or the latest evaluation if later: the changes they make,
    /// members of segments they no longer define leaving. Due timers up to
    /// `t` must have fired.
    pub fn reevaluate(
        &mut self,
        rules: &SegmentRules,
        t: EventTime,
        s: Subject<'_>,
        trigger: Trigger,
        observe: Observe<'_>,
    ) -> Vec<Transition> {
        if self.lifecycle.is_none() {
            return Vec::new();
        }
        self.evaluate_at(rules, t, s, trigger, observe).0
    }

    fn evaluate_at(
        &mut self,
        rules: &SegmentRules,
        t: EventTime,
        s: Subject<'_>,
        trigger: Trigger,
        observe: Observe<'_>,
    ) -> (Vec<Transition>, Features) {
        // Never evaluate back in time: a late event is judged as of now.
        let at = self.evaluated_at.map_or(t, |e| e.max(t));
        self.evaluated_at = Some(at);
        let features = s.features(at);
        let i = rules.lifecycle.inputs_of(s, &features, at, at);
        let mut out = Vec::new();
        self.evaluate(rules, at, trigger, &features, &i, &mut out);
        observe(at, trigger, self);
        (out, features)
    }

    /// Every kind evaluated at `at`, in one order for events and timers:
    /// lifecycle, RFM, cart, behaviour, cluster.
    fn evaluate(
        &mut self,
        rules: &SegmentRules,
        at: EventTime,
        trigger: Trigger,
        features: &Features,
        i: &StageInputs,
        out: &mut Vec<Transition>,
    ) {
        let stage = rules.lifecycle.stage(*i, at);
        out.extend(self.move_to(rules, stage, at, trigger, features, i));
        out.extend(self.evaluate_rfm(rules, at, trigger, features));
        out.extend(self.evaluate_cart(rules, at, trigger, features));
        out.extend(self.evaluate_behaviour(rules, at, trigger, features));
        self.evaluate_cluster(rules, at, trigger, features, out);
    }

    /// Moves the buyer's cluster and micro-segment to what the model in
    /// force says (none without a model or a net order).
    fn evaluate_cluster(
        &mut self,
        rules: &SegmentRules,
        at: EventTime,
        trigger: Trigger,
        features: &Features,
        out: &mut Vec<Transition>,
    ) {
        let model = rules.model.as_deref();
        let to = model.and_then(|m| m.cluster(features));
        // Evaluated after the stage, which every evaluation sets.
        let Some(stage) = self.lifecycle() else { return };
        let held = self.cluster.as_deref();
        let cluster_moved = held.map(|m| m.id) != to.map(|c| c.id);
        let micro_moved = cluster_moved || held.is_some_and(|m| m.stage != stage);
        if !micro_moved {
            return;
        }
        let (version, model_version) = match model {
            Some(m) => (i32::try_from(m.version()).unwrap_or(i32::MAX), Some(m.version().to_string())),
            None => (rules.definitions.version, None),
        };
        let (reason, values) = match (model, to) {
            (Some(m), Some(c)) => {
                let scores = m.score(features);
                (
                    format!("nearest centre of model {}: cluster {} ({})", m.version(), c.id, c.name),
                    m.explain(features, &scores),
                )
            }
            (Some(m), None) => {
                (format!("no net order to cluster on under model {}", m.version()), BTreeMap::new())
            }
            (None, _) => ("no model in force".to_owned(), BTreeMap::new()),
        };
        let transition = |from: Option<&'static str>, to: Option<&'static str>, rule: &str| Transition {
            kind: SegmentKind::Cluster,
            from,
            to,
            at,
            trigger,
            rule_id: format!("{rule}.{}", to.or(from).unwrap_or_default()),
            rule_version: version,
            reason: reason.clone(),
            features: values.clone(),
            model_version: model_version.clone(),
        };
        let name = |id: u32| crate::names::intern(&cluster_segment(id));
        if cluster_moved {
            out.push(transition(held.map(|m| name(m.id)), to.map(|c| name(c.id)), "cluster"));
        }
        let from = held.map(|m| crate::names::intern(&m.micro()));
        let micro = to.map(|c| crate::names::intern(&micro_segment(stage, c.id)));
        out.push(transition(from, micro, "micro"));
        self.cluster = to.map(|c| {
            let since = held.filter(|_| !cluster_moved).map_or(at, |m| m.since);
            Box::new(ClusterMembership { id: c.id, since, stage, micro_since: at })
        });
    }

    fn move_to(
        &mut self,
        rules: &SegmentRules,
        to: LifecycleStage,
        at: EventTime,
        trigger: Trigger,
        features: &Features,
        i: &StageInputs,
    ) -> Option<Transition> {
        let from = self.lifecycle();
        if from == Some(to) {
            return None;
        }
        self.lifecycle = Some((to, at));
        let rules = &rules.lifecycle;
        let (reason, values) = rules.explain(from, to, features, i, trigger);
        Some(Transition {
            kind: SegmentKind::Lifecycle,
            from: from.map(LifecycleStage::as_str),
            to: Some(to.as_str()),
            at,
            trigger,
            rule_id: format!("lifecycle.{to}"),
            rule_version: rules.version(),
            reason,
            features: values,
            model_version: None,
        })
    }
}
