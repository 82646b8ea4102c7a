use segstream_config::LifecycleConfig;
use segstream_events::{
    ChangeType, ClickEventType, ClickRow, CustomerId, EventTime, OrderRow, OrderStatus, Trigger,
};
use segstream_features::{CustomerState, Dictionaries};

use crate::*;

const DAY: i64 = 86_400_000;

static FEATURES: std::sync::LazyLock<segstream_config::FeaturesConfig> =
    std::sync::LazyLock::new(|| segstream_config::Config::default().features);

/// The customer as the rules read it, with the default feature settings.
fn subject(state: &CustomerState) -> Subject<'_> {
    Subject { state, config: &FEATURES }
}

fn apply(state: &mut CustomerState, row: &OrderRow<'_>) -> bool {
    state.apply_order(row, &segstream_config::Config::default().features, &mut Dictionaries::default())
}

/// A lifecycle transition as (from, to); other kinds give `None`.
fn stages(t: &Transition) -> Option<(Option<LifecycleStage>, LifecycleStage)> {
    let stage = |name: &str| LifecycleStage::ALL.into_iter().find(|s| s.as_str() == name);
    (t.kind == segstream_events::SegmentKind::Lifecycle)
        .then(|| (t.from.and_then(stage), t.to.and_then(stage)))
        .and_then(|(from, to)| Some((from, to?)))
}
const T0: i64 = 1_700_000_000_000;

fn rules() -> LifecycleRules {
    LifecycleRules::new(LifecycleConfig {
        rule_version: 1,
        new_days: 30.0,
        at_risk_days: 90.0,
        churn_days: 180.0,
        reactivated_days: 30.0,
        at_risk_interpurchase_multiple: 0.0,
        churn_interpurchase_multiple: 0.0,
        personal_min_orders: 3,
    })
}

/// An order event of customer "c" on `day`.
fn order_row(id: &str, day: i64, status: OrderStatus) -> OrderRow<'_> {
    OrderRow {
        order_id: id,
        customer_id: "c",
        event_time: EventTime::from_millis(T0 + day * DAY),
        status,
        total: 10.0,
        discount_amount: 0.0,
        item_count: 1,
        primary_category: None,
        payment_method: None,
        partition: 0,
        offset: 0,
    }
}

/// A customer as the worker drives it: advance timers, apply, evaluate.
#[derive(Default)]
struct Sim {
    state: CustomerState,
    segments: CustomerSegments,
    log: Vec<(Option<LifecycleStage>, LifecycleStage, i64, Trigger)>,
}

impl Sim {
    fn advance(&mut self, day: i64) {
        let at = EventTime::from_millis(T0 + day * DAY);
        for t in self.segments.advance(&rules(), at, subject(&self.state)) {
            if let Some((from, to)) = stages(&t) {
                self.log.push((from, to, t.at.millis(), t.trigger));
            }
        }
    }

    fn order(&mut self, id: &str, day: i64) {
        let t = EventTime::from_millis(T0 + day * DAY);
        self.advance(day);
        apply(&mut self.state, &order_row(id, day, OrderStatus::Placed));
        self.evaluate(t);
    }

    fn click(&mut self, day: i64) {
        let t = EventTime::from_millis(T0 + day * DAY);
        self.advance(day);
        let event_id = format!("e-{day}");
        let row = ClickRow {
            customer_id: "c",
            event_id: &event_id,
            event_type: ClickEventType::PageView,
            event_time: t,
            device: None,
            category: None,
            price: None,
            partition: 0,
            offset: 0,
        };
        self.state.apply_click(&row, &segstream_config::Config::default().features);
        self.evaluate(t);
    }

    fn evaluate(&mut self, t: EventTime) {
        for tr in self.segments.on_event(&rules(), t, subject(&self.state)) {
            if let Some((from, to)) = stages(&tr) {
                self.log.push((from, to, tr.at.millis(), tr.trigger));
            }
        }
    }
}

use LifecycleStage::*;

#[test]
fn a_full_life_moves_through_every_stage_at_the_right_times() {
    let mut c = Sim::default();
    c.click(0);
    c.order("o1", 2);
    c.order("o2", 40);
    c.click(300);
    c.order("o3", 400);
    c.advance(500);
    let ms = |day: i64| T0 + day * DAY;
    assert_eq!(
        c.log,
        vec![
            (None, Prospect, ms(0), Trigger::Event),
            (Some(Prospect), New, ms(2), Trigger::Event),
            (Some(New), Active, ms(32) + 1, Trigger::Timer),
            (Some(Active), AtRisk, ms(130) + 1, Trigger::Timer),
            (Some(AtRisk), Churned, ms(220) + 1, Trigger::Timer),
            (Some(Churned), Reactivated, ms(400), Trigger::Event),
            (Some(Reactivated), Active, ms(430) + 1, Trigger::Timer),
            (Some(Active), AtRisk, ms(490) + 1, Trigger::Timer),
        ]
    );
}

#[test]
fn an_at_risk_customer_who_orders_is_active_not_reactivated() {
    let mut c = Sim::default();
    c.order("o1", 0);
    c.order("o2", 100);
    let last = c.log.last().cloned();
    assert_eq!(last.map(|l| (l.0, l.1)), Some((Some(AtRisk), Active)));
}

#[test]
fn a_late_event_is_judged_as_of_the_latest_evaluation() {
    let mut c = Sim::default();
    c.order("o1", 0);
    c.advance(100);
    c.click(50);
    // No flip back to active/new: evaluation time never goes back.
    assert_eq!(c.log.last().map(|l| l.1), Some(AtRisk));
    assert_eq!(c.segments.lifecycle(), Some(AtRisk));
}

fn sample_transition(trigger: Trigger) -> Transition {
    Transition {
        kind: segstream_events::SegmentKind::Lifecycle,
        from: Some("active"),
        to: Some("at_risk"),
        at: EventTime::from_millis(T0),
        trigger,
        rule_id: "lifecycle.at_risk".into(),
        rule_version: 1,
        reason: "r".into(),
        features: Default::default(),
    }
}

#[test]
fn a_transition_becomes_exit_then_entry_with_deterministic_ids() {
    let customer = CustomerId::new("c-1");
    let t = sample_transition(Trigger::Event);
    let a = to_changes(&customer, &t, Cause { event_id: Some("e-9") }, EventTime::from_millis(1));
    let b = to_changes(&customer, &t, Cause { event_id: Some("e-9") }, EventTime::from_millis(2));
    assert_eq!(
        a.iter().map(|c| (c.change, c.segment.as_str())).collect::<Vec<_>>(),
        [(ChangeType::Exited, "active"), (ChangeType::Entered, "at_risk")]
    );
    assert_eq!(
        a.iter().map(|c| &c.event_id).collect::<Vec<_>>(),
        b.iter().map(|c| &c.event_id).collect::<Vec<_>>()
    );
    assert_ne!(a[0].event_id, a[1].event_id);
    let other = to_changes(&customer, &t, Cause { event_id: Some("e-10") }, EventTime::from_millis(1));
    assert_ne!(a[1].event_id, other[1].event_id);
}

#[test]
fn a_timer_change_id_does_not_depend_on_the_event_that_revealed_it() {
    let customer = CustomerId::new("c-1");
    let t = sample_transition(Trigger::Timer);
    let a = to_changes(&customer, &t, Cause { event_id: Some("e-1") }, EventTime::from_millis(1));
    let b = to_changes(&customer, &t, Cause { event_id: Some("e-2") }, EventTime::from_millis(1));
    assert_eq!(a[1].event_id, b[1].event_id);
    assert_eq!(a[1].cause_event_id, None);
}

#[test]
fn reasons_say_which_rule_moved_the_customer() {
    let rules = rules();
    let mut state = CustomerState::default();
    let mut segments = CustomerSegments::default();
    let mut reasons = Vec::new();
    let order = order_row;
    // As the worker does: timers due before the event, apply it, evaluate.
    let mut at = |day: i64, rows: &[OrderRow<'_>]| {
        let t = EventTime::from_millis(T0 + day * DAY);
        let mut out = segments.advance(&rules, t, subject(&state));
        for r in rows {
            apply(&mut state, r);
        }
        out.extend(segments.on_event(&rules, t, subject(&state)));
        reasons.extend(out.into_iter().filter_map(|t| Some((stages(&t)?.1, t.reason))));
    };
    at(0, &[order("o1", 0, OrderStatus::Placed)]);
    at(200, &[order("o2", 200, OrderStatus::Placed)]);
    at(240, &[]);
    at(241, &[order("o2", 241, OrderStatus::Refunded), order("o1", 241, OrderStatus::Refunded)]);
    let by_stage = |s: LifecycleStage| {
        reasons.iter().filter(|(t, _)| *t == s).map(|(_, r)| r.as_str()).collect::<Vec<_>>()
    };
    assert_eq!(
        by_stage(Active),
        ["30 days since first order, 1 orders", "30 days since reactivation, 2 orders"]
    );
    assert_eq!(by_stage(Churned), ["no order for 180 days (churned after 180)"]);
    assert_eq!(by_stage(Prospect), ["every order cancelled or refunded"]);
}

#[test]
fn a_frequent_buyer_goes_at_risk_and_churned_on_their_own_rhythm_when_configured() {
    let personal = LifecycleRules::new(LifecycleConfig {
        at_risk_interpurchase_multiple: 3.0,
        churn_interpurchase_multiple: 6.0,
        ..segstream_config::Config::default().lifecycle
    });
    let mut state = CustomerState::default();
    let mut segments = CustomerSegments::default();
    // Every 10 days, three orders: a 10-day rhythm.
    for (id, day) in [("a", 0), ("b", 10), ("c", 20)] {
        let t = EventTime::from_millis(T0 + day * DAY);
        segments.advance(&personal, t, subject(&state));
        apply(&mut state, &order_row(id, day, OrderStatus::Placed));
        segments.on_event(&personal, t, subject(&state));
    }
    let fired = segments.advance(&personal, EventTime::from_millis(T0 + 200 * DAY), subject(&state));
    let moves: Vec<(Option<LifecycleStage>, LifecycleStage, i64)> =
        fired.iter().filter_map(|t| Some((stages(t)?.0, stages(t)?.1, t.at.millis() - T0))).collect();
    assert_eq!(
        moves,
        [
            (Some(New), Active, 30 * DAY + 1),
            (Some(Active), AtRisk, 50 * DAY + 1),
            (Some(AtRisk), Churned, 80 * DAY + 1)
        ],
        "at risk 30 days (3 x 10) and churned 60 days (6 x 10) after the last order"
    );
    assert!(fired[2].reason.contains("6 x their 10-day rhythm"), "{}", fired[2].reason);
}

#[test]
fn an_abandoned_cart_is_left_by_a_timer_when_it_leaves_the_activity_window() {
    let config = segstream_config::Config::default().features;
    let mut state = CustomerState::default();
    let mut segments = CustomerSegments::default();
    let t0 = EventTime::from_millis(T0);
    let add = ClickRow {
        customer_id: "c",
        event_id: "add",
        event_type: ClickEventType::AddToCart,
        event_time: t0,
        device: None,
        category: None,
        price: Some(25.0),
        partition: 0,
        offset: 0,
    };
    segments.advance(&rules(), t0, subject(&state));
    state.apply_click(&add, &config);
    segments.on_event(&rules(), t0, subject(&state));
    // Far past both the abandonment (24 h) and the window (30 days): both
    // timers fire, in order, though the walk only learns of them on the way.
    let fired = segments.advance(&rules(), EventTime::from_millis(T0 + 100 * DAY), subject(&state));
    let cart: Vec<(Option<&str>, Option<&str>)> = fired
        .iter()
        .filter(|t| t.kind == segstream_events::SegmentKind::Behaviour)
        .map(|t| (t.from, t.to))
        .collect();
    assert_eq!(cart, [(None, Some(CART_ABANDONER)), (Some(CART_ABANDONER), None)]);
    assert!(!segments.is_cart_abandoner());
}

/// The stage at `day` of a customer whose orders (id, day) arrived in this order.
fn stage_after(orders: &[(&str, i64)], day: i64) -> LifecycleStage {
    let mut state = CustomerState::default();
    for (id, d) in orders {
        apply(&mut state, &order_row(id, *d, OrderStatus::Placed));
    }
    rules().stage_at(subject(&state), EventTime::from_millis(T0 + day * DAY))
}

#[test]
fn a_reactivation_is_read_from_the_orders_whatever_order_they_arrived_in() {
    // 260 days without an order (churned after 180), then an order on day 300.
    let history = [("a", 0), ("b", 40), ("c", 300), ("d", 310)];
    for arrival in [[0, 1, 2, 3], [3, 2, 1, 0], [2, 0, 3, 1]] {
        let orders: Vec<_> = arrival.iter().map(|&i| history[i]).collect();
        assert_eq!(stage_after(&orders, 320), Reactivated, "{orders:?}");
        assert_eq!(stage_after(&orders, 331), Active, "30 days after the order of day 300");
    }
    // An order that arrives late and splits the silence takes it back.
    let mut split = history.to_vec();
    split.push(("late", 200));
    assert_eq!(stage_after(&split, 320), Active);
    // A first order is never a reactivation.
    assert_eq!(stage_after(&[("only", 300)], 320), New);
}

#[test]
fn a_customer_whose_first_order_was_cancelled_is_new_at_their_first_kept_order() {
    let mut c = Sim::default();
    c.order("o1", 0);
    c.advance(1);
    let cancel = order_row("o1", 1, OrderStatus::Cancelled);
    apply(&mut c.state, &cancel);
    c.evaluate(cancel.event_time);
    c.order("o2", 50);
    let ms = |day: i64| T0 + day * DAY;
    assert_eq!(
        c.log,
        vec![
            (None, New, ms(0), Trigger::Event),
            (Some(New), Prospect, ms(1), Trigger::Event),
            (Some(Prospect), New, ms(50), Trigger::Event),
        ],
        "the welcome series keyed on `new` reaches them"
    );
    let f = c.state.segment_features(EventTime::from_millis(ms(60)), &FEATURES);
    assert_eq!(f.first_order, Some(EventTime::from_millis(ms(50))));
    assert_eq!(f.tenure_days, Some(10.0));
}
