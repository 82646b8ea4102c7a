use segstream_config::LifecycleConfig;
use segstream_events::{
    ChangeType, ClickEventType, ClickRow, CustomerId, EventTime, OrderRow, OrderStatus, Trigger,
};
use segstream_features::{CustomerState, Dictionaries};

use crate::*;

const DAY: i64 = 86_400_000;

static FEATURES: std::sync::LazyLock<segstream_config::FeaturesConfig> =
    std::sync::LazyLock::new(|| segstream_config::Config::default().features);

/// These lifecycle rules with the built-in segment definitions.
fn all(lifecycle: LifecycleRules) -> SegmentRules {
    SegmentRules {
        lifecycle,
        definitions: SegmentDefinitions::parse(BUILTIN, "built-in", &FEATURES).expect("built-in"),
        model: None,
    }
}

/// The customer as the rules read it, with the default feature settings.
fn subject(state: &CustomerState) -> Subject<'_> {
    Subject { state, config: &FEATURES, dict: None, clicks: true }
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
        high_value_revenue: 500.0,
        high_value_window_days: 365,
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
        for t in self.segments.advance(&all(rules()), at, subject(&self.state)) {
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
        for tr in self.segments.on_event(&all(rules()), t, subject(&self.state)) {
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
        features: [("orders_90d".to_owned(), 3.0)].into(),
        model_version: Some("7".into()),
    }
}

#[test]
fn a_transition_becomes_exit_then_entry_with_deterministic_ids() {
    let customer = CustomerId::new("c-1");
    let t = sample_transition(Trigger::Event);
    let a = to_changes(&customer, t.clone(), Cause { event_id: Some("e-9") }, EventTime::from_millis(1));
    let b = to_changes(&customer, t.clone(), Cause { event_id: Some("e-9") }, EventTime::from_millis(2));
    assert_eq!(
        a.iter().map(|c| (c.change, c.segment.as_str())).collect::<Vec<_>>(),
        [(ChangeType::Exited, "active"), (ChangeType::Entered, "at_risk")]
    );
    assert_eq!(
        a.iter().map(|c| &c.event_id).collect::<Vec<_>>(),
        b.iter().map(|c| &c.event_id).collect::<Vec<_>>()
    );
    assert_ne!(a[0].event_id, a[1].event_id);
    // Both records of the pair carry the transition's cause, rule, reason and values.
    for record in &a {
        assert_eq!(record.cause_event_id.as_deref(), Some("e-9"));
        assert_eq!((&record.rule_id, &record.reason, &record.features), (&t.rule_id, &t.reason, &t.features));
        assert_eq!(record.model_version, t.model_version);
        assert_eq!(record.previous_segment.as_deref(), Some("active"));
    }
    let other = to_changes(&customer, t.clone(), Cause { event_id: Some("e-10") }, EventTime::from_millis(1));
    assert_ne!(a[1].event_id, other[1].event_id);
}

#[test]
fn a_timer_change_id_does_not_depend_on_the_event_that_revealed_it() {
    let customer = CustomerId::new("c-1");
    let t = sample_transition(Trigger::Timer);
    let a = to_changes(&customer, t.clone(), Cause { event_id: Some("e-1") }, EventTime::from_millis(1));
    let b = to_changes(&customer, t.clone(), Cause { event_id: Some("e-2") }, EventTime::from_millis(1));
    assert_eq!(a[1].event_id, b[1].event_id);
    assert_eq!(a[1].cause_event_id, None);
}

#[test]
fn reasons_say_which_rule_moved_the_customer() {
    let rules = all(rules());
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
    let personal = all(LifecycleRules::new(LifecycleConfig {
        at_risk_interpurchase_multiple: 3.0,
        churn_interpurchase_multiple: 6.0,
        ..segstream_config::Config::default().lifecycle
    }));
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
    let churned = fired.iter().filter(|t| stages(t).is_some()).nth(2).map(|t| t.reason.as_str());
    assert!(churned.is_some_and(|r| r.contains("6 x their 10-day rhythm")), "{churned:?}");
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
    segments.advance(&all(rules()), t0, subject(&state));
    state.apply_click(&add, &config);
    segments.on_event(&all(rules()), t0, subject(&state));
    // Far past both the abandonment (24 h) and the window (30 days): both
    // timers fire, in order, though the walk only learns of them on the way.
    let fired = segments.advance(&all(rules()), EventTime::from_millis(T0 + 100 * DAY), subject(&state));
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

fn builtin() -> SegmentDefinitions {
    SegmentDefinitions::parse(BUILTIN, "built-in", &FEATURES).expect("built-in definitions")
}

/// A buyer driven through orders on these days (50.00 each, or cancelled
/// when the id starts with "x") and then left alone until `until`: their
/// RFM moves as (from, to, ms from T0, trigger).
fn rfm_moves(
    rules: &SegmentRules,
    orders: &[(&str, i64, OrderStatus)],
    until: i64,
) -> Vec<(Option<&'static str>, Option<&'static str>, i64, Trigger)> {
    let mut state = CustomerState::default();
    let mut segments = CustomerSegments::default();
    let mut out = Vec::new();
    for (id, day, status) in orders {
        let t = EventTime::from_millis(T0 + day * DAY);
        let mut moved = segments.advance(rules, t, subject(&state));
        let mut row = order_row(id, *day, *status);
        row.total = 50.0;
        apply(&mut state, &row);
        moved.extend(segments.on_event(rules, t, subject(&state)));
        out.extend(moved);
    }
    out.extend(segments.advance(rules, EventTime::from_millis(T0 + until * DAY), subject(&state)));
    out.into_iter()
        .filter(|t| t.kind == segstream_events::SegmentKind::Rfm)
        .map(|t| (t.from, t.to, t.at.millis() - T0, t.trigger))
        .collect()
}

#[test]
fn rfm_moves_with_orders_and_on_timers_as_recency_grows_and_orders_leave_the_window() {
    use OrderStatus::Placed;
    let rules = all(rules());
    let moves = rfm_moves(&rules, &[("a", 0, Placed), ("b", 10, Placed), ("c", 20, Placed)], 500);
    assert_eq!(
        moves,
        [
            // R5 F1 M2 (50.00 is the M2 bound).
            (None, Some("potential_loyalist"), 0, Trigger::Event),
            // R5 F3 M3: three orders, 150.00.
            (Some("potential_loyalist"), Some("loyal"), 20 * DAY, Trigger::Event),
            // 180 days and 1 ms after the last order: R1 F3 M3.
            (Some("loyal"), Some("at_risk"), 200 * DAY + 1, Trigger::Timer),
            // The order of day 0 left the 365-day window on day 365 (R1 F2 M2,
            // still at risk), the one of day 10 on day 375: R1 F1 M2.
            (Some("at_risk"), Some("lost"), 375 * DAY, Trigger::Timer),
        ]
    );
}

#[test]
fn a_buyer_whose_every_order_is_cancelled_leaves_rfm() {
    use OrderStatus::{Cancelled, Placed};
    let moves = rfm_moves(&all(rules()), &[("a", 0, Placed), ("a", 1, Cancelled)], 2);
    assert_eq!(
        moves,
        [
            (None, Some("potential_loyalist"), 0, Trigger::Event),
            (Some("potential_loyalist"), None, DAY, Trigger::Event)
        ]
    );
}

#[test]
fn every_cell_of_the_builtin_table_names_one_segment_and_every_row_is_reached() {
    let d = builtin().rfm.expect("the built-in definitions have RFM");
    let names: Vec<&str> = d.segments().collect();
    assert_eq!(
        names,
        [
            "champions",
            "loyal",
            "new_customers",
            "promising",
            "potential_loyalist",
            "need_attention",
            "about_to_sleep",
            "cant_lose",
            "at_risk",
            "lost",
            "others"
        ]
    );
    let cell = |r, f, m| d.segment(RfmScores { r, f, m });
    assert_eq!(
        [
            cell(5, 5, 5),
            cell(5, 1, 1),
            cell(3, 1, 1),
            cell(1, 5, 5),
            cell(2, 4, 4),
            cell(1, 1, 1),
            cell(5, 2, 4)
        ],
        ["champions", "new_customers", "promising", "cant_lose", "loyal", "lost", "others"]
    );
}

#[test]
fn a_model_s_boundaries_replace_the_file_s_and_its_version_is_on_the_change() {
    let mut rules = all(rules());
    let quintiles = RfmBoundaries::from_model(
        "model-7",
        [2.0, 5.0, 10.0, 20.0],
        [2.0, 3.0, 4.0, 6.0],
        [10.0, 20.0, 40.0, 80.0],
    )
    .expect("valid quintiles");
    rules.definitions.rfm = rules.definitions.rfm.map(|r| r.with_boundaries(quintiles));
    let mut state = CustomerState::default();
    let mut segments = CustomerSegments::default();
    let t = EventTime::from_millis(T0);
    let mut row = order_row("a", 0, OrderStatus::Placed);
    row.total = 50.0;
    apply(&mut state, &row);
    let moved = segments.on_event(&rules, t, subject(&state));
    let rfm = moved.iter().find(|t| t.kind == segstream_events::SegmentKind::Rfm).expect("an RFM change");
    // R5 F1 M4 (50.00 is past the model's 40.00): potential_loyalist holds M1-3 only.
    assert_eq!(segments.rfm(), Some(RfmScores { r: 5, f: 1, m: 4 }));
    assert_eq!(rfm.to, Some("others"));
    assert_eq!(rfm.model_version.as_deref(), Some("model-7"));
    assert_eq!(rfm.features.get("threshold_m_min_revenue_4"), Some(&40.0));
    let bad =
        RfmBoundaries::from_model("m", [5.0, 2.0, 10.0, 20.0], [1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 3.0, 4.0]);
    assert!(bad.is_err_and(|e| e.contains("recency_max_days") && e.contains("rise")));
}

#[test]
fn a_definitions_file_that_cannot_be_used_is_refused_naming_the_segment_and_the_problem() {
    let with = |from: &str, to: &str| {
        assert!(BUILTIN.contains(from), "{from}");
        SegmentDefinitions::parse(&BUILTIN.replacen(from, to, 1), "test.toml", &FEATURES)
            .expect_err("refused")
            .to_string()
    };
    let catch_all = "[[rfm.table]]\nname = \"others\"\nr = [1, 5]\nf = [1, 5]\nm = [1, 5]";
    let cases = [
        (with(catch_all, ""), ["rfm.table", "R1 F1 M3 and 35 more cells", "add a last row"]),
        (
            with("window_days = 365", "window_days = 100"),
            ["`rfm`", "window_days = 100", "order_windows_days"],
        ),
        (
            with("name = \"cant_lose\"\nr = [1, 1]", "name = \"cant_lose\"\nr = [0, 1]"),
            ["`cant_lose`", "r = [0, 1]", "1..5"],
        ),
        (
            with("recency_max_days = [30, 60, 90, 180]", "recency_max_days = [30, 90, 60, 180]"),
            ["`rfm`", "recency_max_days", "rise"],
        ),
        (
            with("name = \"lost\"", "name = \"Lost Customers\""),
            ["`Lost Customers`", "lower-case", "metric label"],
        ),
        (with("version = 1", "version = 1\ncolour = 3"), ["test.toml", "colour", ""]),
    ];
    for (message, parts) in cases {
        for part in parts {
            assert!(message.contains(part), "{message:?} should name {part:?}");
        }
    }
    // promising moved below potential_loyalist, which holds all its cells.
    let promising = "[[rfm.table]]\nname = \"promising\"\nr = [3, 4]\nf = [1, 1]\nm = [1, 1]\n";
    let moved = BUILTIN.replacen(promising, "", 1).replacen(
        "[[rfm.table]]\nname = \"need_attention\"",
        &format!("{promising}\n[[rfm.table]]\nname = \"need_attention\""),
        1,
    );
    let message = SegmentDefinitions::parse(&moved, "test.toml", &FEATURES).expect_err("refused").to_string();
    assert!(message.contains("`promising`") && message.contains("never reached"), "{message}");
    // Without an [rfm] section: no RFM segments, nothing else changes.
    let none = SegmentDefinitions::parse("version = 2\n", "test.toml", &FEATURES).expect("valid");
    assert_eq!((none.version, none.rfm.is_none()), (2, true));
    let moves = rfm_moves(
        &SegmentRules { lifecycle: rules(), definitions: none, model: None },
        &[("a", 0, OrderStatus::Placed)],
        400,
    );
    assert!(moves.is_empty());
}

#[test]
fn an_active_customer_is_high_value_while_their_revenue_in_the_window_reaches_the_threshold() {
    let rules = all(rules());
    let mut state = CustomerState::default();
    let mut segments = CustomerSegments::default();
    let mut moves = Vec::new();
    // 400.00 then 200.00: 600.00 in 365 days (high value from 500.00); then
    // 10.00 every 60 days, keeping them active.
    let orders = [
        (0, 400.0),
        (40, 200.0),
        (100, 10.0),
        (160, 10.0),
        (220, 10.0),
        (280, 10.0),
        (340, 10.0),
        (400, 10.0),
    ];
    for (day, total) in orders {
        let t = EventTime::from_millis(T0 + day * DAY);
        let id = format!("o{day}");
        let mut row = order_row(&id, day, OrderStatus::Placed);
        row.total = total;
        moves.extend(segments.advance(&rules, t, subject(&state)));
        apply(&mut state, &row);
        moves.extend(segments.on_event(&rules, t, subject(&state)));
    }
    let lifecycle: Vec<_> =
        moves.iter().filter_map(|t| Some((stages(t)?, t.at.millis() - T0, t.trigger))).collect();
    assert_eq!(
        lifecycle,
        [
            ((None, New), 0, Trigger::Event),
            ((Some(New), Active), 30 * DAY + 1, Trigger::Timer),
            ((Some(Active), HighValue), 40 * DAY, Trigger::Event),
            // The 400.00 of day 0 left the 365-day window on day 365: 250.00.
            ((Some(HighValue), Active), 365 * DAY, Trigger::Timer),
        ]
    );
    let back = moves.iter().rfind(|t| stages(t).is_some()).map(|t| t.reason.as_str());
    assert_eq!(back, Some("net revenue in 365 days down to 250.00 (high value from 500.00)"));
}

/// A behaviour move: left, entered, ms after T0, trigger, reason.
type Move = (Option<&'static str>, Option<&'static str>, i64, Trigger, String);

/// A customer with their own dictionaries, driven as the worker does.
struct Shopper {
    state: CustomerState,
    dict: Dictionaries,
    segments: CustomerSegments,
    rules: SegmentRules,
    moves: Vec<Move>,
}

impl Shopper {
    fn new() -> Self {
        let (state, dict, segments) = Default::default();
        Self { state, dict, segments, rules: all(rules()), moves: Vec::new() }
    }

    fn keep(&mut self, moved: Vec<Transition>) {
        let behaviour = moved.into_iter().filter(|t| t.kind == segstream_events::SegmentKind::Behaviour);
        self.moves.extend(behaviour.map(|t| (t.from, t.to, t.at.millis() - T0, t.trigger, t.reason)));
    }

    fn at(&mut self, ms: i64, apply: impl FnOnce(&mut CustomerState, &mut Dictionaries)) {
        let t = EventTime::from_millis(T0 + ms);
        let subject = Subject { state: &self.state, config: &FEATURES, dict: Some(&self.dict), clicks: true };
        let moved = self.segments.advance(&self.rules, t, subject);
        self.keep(moved);
        apply(&mut self.state, &mut self.dict);
        let subject = Subject { state: &self.state, config: &FEATURES, dict: Some(&self.dict), clicks: true };
        let moved = self.segments.on_event(&self.rules, t, subject);
        self.keep(moved);
    }

    fn order(&mut self, id: &str, day: i64, total: f64, discount: f64) {
        self.at(day * DAY, |state, dict| {
            let mut row = order_row(id, day, OrderStatus::Placed);
            (row.total, row.discount_amount, row.primary_category) = (total, discount, Some("Shoes & Boots"));
            state.apply_order(&row, &FEATURES, dict);
        });
    }

    fn visit(&mut self, ms: i64) {
        self.at(ms, |state, _| {
            let id = format!("v{ms}");
            let row = ClickRow {
                customer_id: "c",
                event_id: &id,
                event_type: ClickEventType::PageView,
                event_time: EventTime::from_millis(T0 + ms),
                device: None,
                category: None,
                price: None,
                partition: 0,
                offset: 0,
            };
            state.apply_click(&row, &FEATURES);
        });
    }

    fn wait(&mut self, day: i64) {
        let subject = Subject { state: &self.state, config: &FEATURES, dict: Some(&self.dict), clicks: true };
        let moved = self.segments.advance(&self.rules, EventTime::from_millis(T0 + day * DAY), subject);
        self.keep(moved);
    }

    fn moves(&self) -> Vec<(Option<&'static str>, Option<&'static str>, i64, Trigger)> {
        self.moves.iter().map(|(f, t, ms, tr, _)| (*f, *t, *ms, *tr)).collect()
    }
}

#[test]
fn behaviour_segments_follow_orders_sessions_and_time() {
    let mut c = Shopper::new();
    c.order("a", 0, 200.0, 20.0);
    c.wait(46);
    c.order("b", 50, 200.0, 20.0);
    c.order("c", 60, 200.0, 20.0);
    // Five sessions (an hour apart) on day 100.
    for k in 0..5 {
        c.visit(100 * DAY + k * 3_600_000);
    }
    c.wait(120);
    let hour = 3_600_000;
    assert_eq!(
        c.moves(),
        [
            // One order 45 days and 1 ms ago, none since.
            (None, Some("one_time_buyer"), 45 * DAY + 1, Trigger::Timer),
            // 200.00 an order over two orders (rules in file order).
            (None, Some("big_spender"), 50 * DAY, Trigger::Event),
            (Some("one_time_buyer"), None, 50 * DAY, Trigger::Event),
            // Three orders, all discounted, all in one category.
            (None, Some("discount_hunter"), 60 * DAY, Trigger::Event),
            (None, Some("category_fan_shoes_boots"), 60 * DAY, Trigger::Event),
            (None, Some("frequent_visitor"), 100 * DAY + 4 * hour, Trigger::Event),
            // The sessions of day 100 leave the 7-day window at the start of
            // day 107, but the built-in minimum dwell keeps them in for 7 days.
            (Some("frequent_visitor"), None, 107 * DAY + 4 * hour, Trigger::Timer),
        ]
    );
    let fan = c.moves.iter().find(|m| m.1 == Some("category_fan_shoes_boots")).map(|m| m.4.as_str());
    assert_eq!(fan, Some("100% of 3 orders in 365 days in Shoes & Boots (from 60% of 3)"));
    let members: Vec<String> = c.segments.memberships().into_iter().map(|m| m.segment).collect();
    assert!(members.contains(&"category_fan_shoes_boots".to_owned()), "{members:?}");
}

#[test]
fn a_cart_whose_older_line_leaves_the_window_is_re_evaluated_by_a_timer_then() {
    let mut state = CustomerState::default();
    let mut segments = CustomerSegments::default();
    let rules = all(rules());
    let mut moves = Vec::new();
    let cart = |id: &'static str, day: i64, kind: ClickEventType, price: f64| ClickRow {
        customer_id: "c",
        event_id: id,
        event_type: kind,
        event_time: EventTime::from_millis(T0 + day * DAY),
        device: None,
        category: None,
        price: Some(price),
        partition: 0,
        offset: 0,
    };
    // 25.00 added on day 0 (abandoned a day later) and removed on day 2,
    // 10.00 added on day 3: a cart of 10.00, abandoned a day later.
    for row in [
        cart("a", 0, ClickEventType::AddToCart, 25.0),
        cart("r", 2, ClickEventType::RemoveFromCart, 25.0),
        cart("b", 3, ClickEventType::AddToCart, 10.0),
    ] {
        moves.extend(segments.advance(&rules, row.event_time, subject(&state)));
        state.apply_click(&row, &FEATURES);
        moves.extend(segments.on_event(&rules, row.event_time, subject(&state)));
    }
    moves.extend(segments.advance(&rules, EventTime::from_millis(T0 + 60 * DAY), subject(&state)));
    let cart_moves: Vec<(Option<&str>, Option<&str>, i64)> = moves
        .iter()
        .filter(|t| t.kind == segstream_events::SegmentKind::Behaviour)
        .map(|t| (t.from, t.to, t.at.millis() - T0))
        .collect();
    // Each line leaves the 30-day window at the start of the 30th day after
    // its own: the add of day 0 (the remove stays, the cart is worth
    // nothing), the remove (10.00 again, abandoned), the add of day 3.
    let day_start = |day: i64| day * DAY - T0.rem_euclid(DAY);
    assert_eq!(
        cart_moves,
        [
            (None, Some(CART_ABANDONER), DAY),
            (Some(CART_ABANDONER), None, 2 * DAY),
            (None, Some(CART_ABANDONER), 4 * DAY),
            (Some(CART_ABANDONER), None, day_start(30)),
            (None, Some(CART_ABANDONER), day_start(32)),
            (Some(CART_ABANDONER), None, day_start(33)),
        ]
    );
}

#[test]
fn a_minimum_dwell_keeps_a_member_in_until_it_ends_then_a_timer_lets_them_out() {
    let visitor = "[behaviour.frequent_visitor]\nwindow_days = 7\nmin_sessions = 5\nmin_dwell_days = 7\n";
    assert!(BUILTIN.contains(visitor));
    let text = BUILTIN.replacen("min_dwell_days = 7\n", "min_dwell_days = 14\n", 1);
    let definitions = SegmentDefinitions::parse(&text, "test.toml", &FEATURES).expect("valid");
    let mut c = Shopper::new();
    c.rules = SegmentRules { lifecycle: rules(), definitions, model: None };
    for k in 0..5 {
        c.visit(100 * DAY + k * 3_600_000);
    }
    c.wait(130);
    let visits: Vec<_> = c
        .moves()
        .into_iter()
        .filter(|m| m.0 == Some(FREQUENT_VISITOR) || m.1 == Some(FREQUENT_VISITOR))
        .collect();
    let entered = 100 * DAY + 4 * 3_600_000;
    // Without a dwell it would leave at the start of day 107; with 14 days,
    // 14 days after entering.
    assert_eq!(
        visits,
        [
            (None, Some(FREQUENT_VISITOR), entered, Trigger::Event),
            (Some(FREQUENT_VISITOR), None, entered + 14 * DAY, Trigger::Timer),
        ]
    );
    let bad = BUILTIN.replacen("min_dwell_days = 7", "min_dwell_days = -1", 1);
    let message = SegmentDefinitions::parse(&bad, "test.toml", &FEATURES).expect_err("refused").to_string();
    assert!(message.contains("`frequent_visitor`") && message.contains("min_dwell_days"), "{message}");
}

/// `[[custom]]` entries: (name, sql).
type Entries<'a> = &'a [(&'a str, &'a str)];

fn custom(entries: Entries<'_>) -> Result<SegmentDefinitions, String> {
    let mut text = String::from("version = 4\n");
    for (name, sql) in entries {
        text.push_str(&format!("[[custom]]\nname = \"{name}\"\nsql = \"{sql}\"\n"));
    }
    SegmentDefinitions::parse(&text, "test.toml", &FEATURES).map_err(|e| e.to_string())
}

#[test]
fn user_defined_segments_that_cannot_be_compiled_are_refused_naming_the_segment_and_the_problem() {
    let cases: [(Entries<'_>, &[&str]); 7] = [
        (&[("vip", "revenue_356d > 500")], &["`vip`", "revenue_356d", "does not have"]),
        (&[("vip", "revenue_365d >")], &["`vip`", "does not parse"]),
        (&[("vip", "revenue_365d + 1")], &["`vip`", "not a condition", "revenue_365d > 500"]),
        (&[("lapsed", "days_since_last_order * 2 > 60")], &["`lapsed`", "only be compared with a number"]),
        (&[("now", "as_of > '2024-01-01'")], &["`now`", "evaluation time"]),
        (&[("Big Spenders", "revenue_365d > 500")], &["`Big Spenders`", "lower-case"]),
        (&[("vip", "revenue_365d > 500"), ("vip", "lifetime_orders > 3")], &["`vip`", "defined twice"]),
    ];
    for (entries, parts) in cases {
        let message = custom(entries).expect_err("refused");
        for part in parts {
            assert!(message.contains(part), "{message:?} should name {part:?}");
        }
    }
    let fine = custom(&[
        ("vip", "revenue_365d > 500 AND lifecycle = 'active'"),
        ("lapsed", "days_since_last_order BETWEEN 45 AND 90 OR tenure_days > 400"),
        ("fans", "array_has(behaviour, 'discount_hunter') AND top_category = 'books'"),
        ("owl", "night_share > 0.5 AND page_views_30d >= 10 AND preferred_device = 'mobile'"),
    ])
    .expect("valid");
    let names: Vec<&str> = fine.custom.segments().iter().map(|s| s.name).collect();
    assert_eq!(names, ["vip", "lapsed", "fans", "owl"]);
}

#[test]
fn a_user_defined_segment_is_due_when_a_compared_number_of_days_is_crossed_or_an_order_leaves_a_window() {
    let definitions =
        custom(&[("lapsed", "days_since_last_order > 45"), ("steady", "orders_90d >= 1")]).expect("valid");
    let mut state = CustomerState::default();
    apply(&mut state, &order_row("o1", 0, OrderStatus::Placed));
    let at = EventTime::from_millis(T0 + DAY);
    let f = state.segment_features(at, &FEATURES);
    // 45 days and a millisecond after the order (`> 45`), before the order
    // leaves the 90-day window.
    let due = definitions.custom.due_after(&f, &state, at);
    assert_eq!(due, Some(EventTime::from_millis(T0 + 45 * DAY)), "`= 45` is a change point too");
    let after = definitions.custom.due_after(&f, &state, EventTime::from_millis(T0 + 45 * DAY));
    assert_eq!(after, Some(EventTime::from_millis(T0 + 45 * DAY + 1)));
    let later = definitions.custom.due_after(&f, &state, EventTime::from_millis(T0 + 45 * DAY + 1));
    assert_eq!(later, Some(EventTime::from_millis(T0 + 90 * DAY)), "then the order leaves orders_90d");
}

#[test]
fn an_rfm_minimum_dwell_holds_a_buyer_in_their_segment_then_a_timer_moves_them() {
    use OrderStatus::Placed;
    let mut rules = all(rules());
    let text = BUILTIN.replacen("window_days = 365\n", "window_days = 365\nmin_dwell_days = 30\n", 1);
    rules.definitions = SegmentDefinitions::parse(&text, "test.toml", &FEATURES).expect("valid");
    let moves = rfm_moves(&rules, &[("a", 0, Placed), ("b", 10, Placed), ("c", 20, Placed)], 500);
    assert_eq!(
        moves[..2],
        [
            (None, Some("potential_loyalist"), 0, Trigger::Event),
            // Loyal from day 20 by the orders, held in potential_loyalist
            // until its 30 days are over: a timer then.
            (Some("potential_loyalist"), Some("loyal"), 30 * DAY, Trigger::Timer),
        ]
    );
    let bad = BUILTIN.replacen("window_days = 365\n", "window_days = 365\nmin_dwell_days = -1\n", 1);
    let message = SegmentDefinitions::parse(&bad, "test.toml", &FEATURES).expect_err("refused").to_string();
    assert!(message.contains("`rfm`") && message.contains("min_dwell_days = -1"), "{message}");
}

/// A model record: two clusters on `lifetime_orders` (centres 1 and 10
/// orders, unscaled), the CDNOW purchase model and RFM quintiles over 365
/// days.
fn model_record(version: i64, ids: [u32; 2]) -> Vec<u8> {
    use segstream_trainer::{BgNbd, Cluster, Clustering, RfmQuintiles, ScaledFeature, SegmentModel};
    let cluster = |id: u32, centre: f64, name: &str| Cluster {
        id,
        name: name.to_owned(),
        centre: vec![centre],
        centre_raw: vec![centre],
        population: 10,
        share: 0.5,
        drift: None,
        gaussian: None,
    };
    let feature = ScaledFeature { name: "lifetime_orders".into(), log: false, mean: 0.0, std: 1.0 };
    SegmentModel {
        version,
        group_id: "g".into(),
        trained_at: 0,
        data_as_of: 0,
        source: "test".into(),
        customers: 20,
        buyers: 20,
        repeat_buyers: 10,
        training_ms: 1,
        purchase: Some(BgNbd { r: 0.243, alpha: 4.414, a: 0.793, b: 2.426 }),
        spend: None,
        expected_horizon_days: 90.0,
        clv_horizon_days: 365.0,
        rfm: Some(RfmQuintiles {
            window_days: 365,
            recency_max_days: vec![2.0, 5.0, 10.0, 20.0],
            frequency_min: vec![2.0, 3.0, 4.0, 6.0],
            monetary_min: vec![10.0, 20.0, 40.0, 80.0],
        }),
        clusters: Some(Clustering {
            algorithm: segstream_trainer::Algorithm::Kmeans,
            features: vec![feature],
            clusters: vec![cluster(ids[0], 1.0, "occasional"), cluster(ids[1], 10.0, "frequent")],
            silhouette: 0.9,
            tried: Vec::new(),
            next_id: ids[0].max(ids[1]) + 1,
            vanished: Vec::new(),
        }),
    }
    .to_avro()
    .expect("encode")
}

fn with_model(record: &[u8]) -> SegmentRules {
    let model = ModelRules::from_record(record, &FEATURES).expect("usable model");
    all(rules()).with_model(std::sync::Arc::new(model)).expect("rules take the model")
}

/// A cluster-kind change: from, to, trigger, model version.
type ClusterMove = (Option<&'static str>, Option<&'static str>, Trigger, Option<String>);

fn cluster_moves(moved: &[Transition]) -> Vec<ClusterMove> {
    moved
        .iter()
        .filter(|t| t.kind == segstream_events::SegmentKind::Cluster)
        .map(|t| (t.from, t.to, t.trigger, t.model_version.clone()))
        .collect()
}

#[test]
fn under_a_model_a_buyer_is_in_one_cluster_and_one_micro_segment_that_follow_orders_stage_and_new_models() {
    let m3 = with_model(&model_record(3, [4, 7]));
    let v = Some("3".to_owned());
    let mut state = CustomerState::default();
    let mut segments = CustomerSegments::default();
    apply(&mut state, &order_row("o0", 0, OrderStatus::Placed));
    let moved = segments.on_event(&m3, EventTime::from_millis(T0), subject(&state));
    assert_eq!(
        cluster_moves(&moved),
        [
            (None, Some("cluster_4"), Trigger::Event, v.clone()),
            (None, Some("new:cluster_4"), Trigger::Event, v.clone()),
        ]
    );
    let why = moved.iter().find(|t| t.to == Some("cluster_4")).expect("entered");
    assert!(
        why.reason.contains("cluster 4 (occasional)") && why.reason.contains("model 3"),
        "{}",
        why.reason
    );
    assert_eq!(why.features.get("lifetime_orders"), Some(&1.0));
    assert!(why.features.get("p_alive").is_some_and(|p| *p > 0.0 && *p <= 1.0), "{:?}", why.features);
    assert_eq!(why.rule_version, 3);

    // The stage moves (a timer): the micro-segment follows, the cluster stays.
    let moved = segments.advance(&m3, EventTime::from_millis(T0 + 40 * DAY), subject(&state));
    assert!(cluster_moves(&moved).contains(&(
        Some("new:cluster_4"),
        Some("active:cluster_4"),
        Trigger::Timer,
        v.clone()
    )));
    assert_eq!(segments.cluster(), Some(4));

    // Nine more orders: nearer the other centre.
    for day in 41..50 {
        let t = EventTime::from_millis(T0 + day * DAY);
        segments.advance(&m3, t, subject(&state));
        apply(&mut state, &order_row(&format!("o{day}"), day, OrderStatus::Placed));
        let moved = segments.on_event(&m3, t, subject(&state));
        if day == 45 {
            // 6 orders: nearer 10 than 1.
            assert!(cluster_moves(&moved).contains(&(
                Some("cluster_4"),
                Some("cluster_7"),
                Trigger::Event,
                v.clone()
            )));
        }
    }
    assert_eq!(segments.cluster(), Some(7));

    // A new model that kept the ids moves nobody; one that renumbered them
    // moves the buyer, trigger model_update, with its version.
    let t = EventTime::from_millis(T0 + 50 * DAY);
    let m4 = with_model(&model_record(4, [4, 7]));
    assert!(
        cluster_moves(&segments.reevaluate(&m4, t, subject(&state), Trigger::ModelUpdate, &mut |_, _, _| {}))
            .is_empty()
    );
    let m5 = with_model(&model_record(5, [8, 9]));
    let moved = segments.reevaluate(&m5, t, subject(&state), Trigger::ModelUpdate, &mut |_, _, _| {});
    let v5 = Some("5".to_owned());
    assert_eq!(
        cluster_moves(&moved),
        [
            (Some("cluster_7"), Some("cluster_9"), Trigger::ModelUpdate, v5.clone()),
            (Some("active:cluster_7"), Some("active:cluster_9"), Trigger::ModelUpdate, v5),
        ]
    );
    // The model's RFM quintiles are the RFM boundaries, its version on the records.
    let rfm = m5.definitions.rfm.as_ref().expect("rfm");
    assert_eq!(rfm.boundaries().recency_max_days, [2.0, 5.0, 10.0, 20.0]);
    assert_eq!(rfm.model_version(), Some("5"));
}

#[test]
fn a_model_clustering_on_a_column_the_feature_table_lacks_is_refused_naming_it() {
    let record = model_record(2, [0, 1]);
    let mut model = segstream_trainer::SegmentModel::from_avro(&record).expect("decode");
    if let Some(c) = model.clusters.as_mut() {
        c.features[0].name = "orders_999d".into();
    }
    let err = ModelRules::from_record(&model.to_avro().expect("encode"), &FEATURES).expect_err("refused");
    assert!(err.to_string().contains("`orders_999d`") && err.to_string().contains("model 2"), "{err}");
    assert!(ModelRules::from_record(b"not a model", &FEATURES).is_err());
}

/// One event of a generated history: milliseconds after the previous one,
/// how late it is (judged at the latest time, as the worker judges a late
/// event), and what it is.
#[derive(Clone, Debug)]
struct Step {
    gap_ms: i64,
    late_ms: i64,
    what: StepKind,
}

#[derive(Clone, Debug)]
enum StepKind {
    /// An order: total, discount, category; or the cancellation or
    /// refund of an earlier one.
    Order { total: u16, discount: bool, category: u8, status: u8, of: u8 },
    /// A click of this type (an add to the cart with a price).
    Click { kind: u8, price: u16 },
}

fn steps() -> impl proptest::strategy::Strategy<Value = Vec<Step>> {
    use proptest::prelude::*;
    // Minutes to most of a year apart: timers of every kind fall between events.
    let gap = prop_oneof![0..3_600_000_i64, 0..(3 * DAY), 0..(200 * DAY)];
    let late = prop_oneof![Just(0_i64), 0..(2 * DAY)];
    let what = prop_oneof![
        (1..900_u16, any::<bool>(), 0..4_u8, 0..6_u8, any::<u8>()).prop_map(
            |(total, discount, category, status, of)| StepKind::Order {
                total,
                discount,
                category,
                status,
                of
            }
        ),
        (0..6_u8, 1..300_u16).prop_map(|(kind, price)| StepKind::Click { kind, price }),
    ];
    proptest::collection::vec(
        (gap, late, what).prop_map(|(gap_ms, late_ms, what)| Step { gap_ms, late_ms, what }),
        1..60,
    )
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(200))]
    /// What lets the worker skip the walk before an event: whenever a
    /// customer's next due time is after `t` (or there is none), advancing
    /// to `t` moves nothing and leaves the segments as `pass_to(t)` does;
    /// and `on_event_then_due` gives the due time `next_due` reads.
    /// Histories of orders (some cancelled or refunded later), clicks and
    /// carts, late events, timers fired as a lagging watermark passes them,
    /// compaction, with and without personal silence limits.
    #[test]
    fn nothing_is_due_before_the_next_due_time(history in steps(), personal in proptest::prelude::any::<bool>()) {
        let (at_risk_interpurchase_multiple, churn_interpurchase_multiple) =
            if personal { (2.0, 4.0) } else { (0.0, 0.0) };
        let rules = all(LifecycleRules::new(LifecycleConfig {
            rule_version: 1,
            new_days: 30.0,
            at_risk_days: 90.0,
            churn_days: 180.0,
            reactivated_days: 30.0,
            at_risk_interpurchase_multiple,
            churn_interpurchase_multiple,
            personal_min_orders: 3,
            high_value_revenue: 500.0,
            high_value_window_days: 365,
        }));
        let (mut state, mut dict, mut segments) =
            (CustomerState::default(), Dictionaries::default(), CustomerSegments::default());
        fn view<'a>(rules: &SegmentRules, state: &'a CustomerState, dict: &'a Dictionaries) -> Subject<'a> {
            rules.subject(state, &FEATURES, dict)
        }
        let categories = ["Shoes", "Bags", "Books", "Toys"];
        let mut ids: Vec<String> = Vec::new();
        let mut now = T0;
        for (n, step) in history.iter().enumerate() {
            now += step.gap_ms;
            let t = EventTime::from_millis(now);
            // Timers (and compaction) as the worker fires them, up to a
            // watermark a day behind.
            let watermark = t.plus_millis(-DAY);
            loop {
                let due = segments.next_due(&rules, view(&rules, &state, &dict));
                let timer = [due, state.compact_due(&FEATURES)].into_iter().flatten().min();
                let Some(due) = timer.filter(|d| *d <= watermark) else { break };
                segments.advance(&rules, due, view(&rules, &state, &dict));
                if state.compact_due(&FEATURES).is_some_and(|at| at <= due) {
                    state.compact(due, &FEATURES);
                }
            }
            if segments.next_due(&rules, view(&rules, &state, &dict)).is_none_or(|due| due > t) {
                let mut walked = segments.clone();
                let moved = walked.advance(&rules, t, view(&rules, &state, &dict));
                proptest::prop_assert!(moved.is_empty(), "step {n}: due before the next due time: {moved:?}");
                segments.pass_to(t);
                proptest::prop_assert_eq!(&segments, &walked);
            } else {
                segments.advance(&rules, t, view(&rules, &state, &dict));
            }
            let at = t.plus_millis(-step.late_ms);
            match &step.what {
                StepKind::Order { total, discount, category, status, of } => {
                    let (status, id) = match (status, ids.is_empty()) {
                        (4, false) => (OrderStatus::Cancelled, ids[usize::from(*of) % ids.len()].clone()),
                        (5, false) => (OrderStatus::Refunded, ids[usize::from(*of) % ids.len()].clone()),
                        _ => {
                            ids.push(format!("o{n}"));
                            (OrderStatus::Placed, format!("o{n}"))
                        }
                    };
                    let row = OrderRow {
                        event_time: at,
                        total: f64::from(*total),
                        discount_amount: if *discount { f64::from(*total) / 10.0 } else { 0.0 },
                        primary_category: Some(categories[usize::from(*category) % categories.len()]),
                        ..order_row(&id, 0, status)
                    };
                    state.apply_order(&row, &FEATURES, &mut dict);
                }
                StepKind::Click { kind, price } => {
                    let event_id = format!("e{n}");
                    let event_type = ClickEventType::ALL[usize::from(*kind) % ClickEventType::ALL.len()];
                    let row = ClickRow {
                        customer_id: "c",
                        event_id: &event_id,
                        event_type,
                        event_time: at,
                        device: None,
                        category: Some(categories[usize::from(*kind) % categories.len()]),
                        price: (event_type == ClickEventType::AddToCart).then_some(f64::from(*price)),
                        partition: 0,
                        offset: 0,
                    };
                    state.apply_click(&row, &FEATURES);
                }
            }
            let (_, due) = segments.on_event_then_due(&rules, t, view(&rules, &state, &dict), &mut |_, _, _| {});
            proptest::prop_assert_eq!(due, segments.next_due(&rules, view(&rules, &state, &dict)), "step {}", n);
        }
    }
}
