use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use segstream_config::{Config, FeaturesConfig};
use segstream_events::{ClickEventType, ClickRow, EventTime, OrderRow, OrderStatus};

use crate::{CustomerState, Dictionaries, Features, Money};

const DAY: i64 = 86_400_000;
const T0: i64 = 1_700_000_000_000;

fn order(id: &str, t: i64, status: OrderStatus, total: f64) -> OrderRow<'_> {
    OrderRow {
        order_id: id,
        customer_id: "c",
        event_time: EventTime::from_millis(t),
        status,
        total,
        discount_amount: 0.0,
        item_count: 1,
        primary_category: None,
        payment_method: None,
        partition: 0,
        offset: 0,
    }
}

fn click(t: i64, event_type: ClickEventType) -> ClickRow<'static> {
    ClickRow {
        customer_id: "c",
        // A distinct id per click (leaked: a test helper, a few bytes).
        event_id: Box::leak(format!("e-{t}-{event_type:?}").into_boxed_str()),
        event_type,
        event_time: EventTime::from_millis(t),
        device: None,
        category: None,
        price: None,
        partition: 0,
        offset: 0,
    }
}

fn cfg() -> FeaturesConfig {
    Config::default().features
}

/// Features with the default windows as flat fields, for short assertions.
#[derive(Debug)]
struct Flat {
    f: Features,
    orders_30d: u32,
    orders_90d: u32,
    orders_365d: u32,
    revenue_30d: f64,
    revenue_90d: f64,
    revenue_365d: f64,
    sessions_30d: u32,
    page_views_30d: u32,
    product_views_30d: u32,
    searches_30d: u32,
    add_to_cart_30d: u32,
}

impl std::ops::Deref for Flat {
    type Target = Features;
    fn deref(&self) -> &Features {
        &self.f
    }
}

/// The state's API with the default config and a shared dictionary.
trait Test {
    fn order(&mut self, row: &OrderRow<'_>) -> bool;
    fn click(&mut self, row: &ClickRow<'_>) -> bool;
    fn features_at(&self, now: EventTime) -> Flat;
}

thread_local! {
    static DICT: std::cell::RefCell<Dictionaries> = std::cell::RefCell::new(Dictionaries::default());
}

impl Test for CustomerState {
    fn order(&mut self, row: &OrderRow<'_>) -> bool {
        DICT.with(|d| self.apply_order(row, &cfg(), &mut d.borrow_mut()))
    }

    fn click(&mut self, row: &ClickRow<'_>) -> bool {
        self.apply_click(row, &cfg())
    }

    fn features_at(&self, now: EventTime) -> Flat {
        let f = DICT.with(|d| self.features(now, &cfg(), &d.borrow()));
        let w = |days| f.order_windows.iter().find(|w| w.days == days).cloned().unwrap_or_default();
        let a = f.activity_windows.iter().find(|w| w.days == 30).cloned().unwrap_or_default();
        Flat {
            orders_30d: w(30).orders,
            orders_90d: w(90).orders,
            orders_365d: w(365).orders,
            revenue_30d: w(30).revenue,
            revenue_90d: w(90).revenue,
            revenue_365d: w(365).revenue,
            sessions_30d: a.sessions,
            page_views_30d: a.page_views,
            product_views_30d: a.product_views,
            searches_30d: a.searches,
            add_to_cart_30d: a.add_to_cart,
            f,
        }
    }
}

#[test]
fn windows_count_net_orders_and_revenue() {
    let mut s = CustomerState::default();
    assert!(s.order(&order("a", T0, OrderStatus::Placed, 10.0)));
    assert!(s.order(&order("b", T0 + 40 * DAY, OrderStatus::Placed, 20.0)));
    assert!(s.order(&order("c", T0 + 100 * DAY, OrderStatus::Placed, 30.5)));
    assert!(s.order(&order("c", T0 + 101 * DAY, OrderStatus::Refunded, 30.5)));
    let f = s.features_at(EventTime::from_millis(T0 + 120 * DAY));
    assert_eq!((f.orders_30d, f.orders_90d, f.orders_365d, f.lifetime_orders), (0, 1, 2, 2));
    assert_eq!((f.revenue_90d, f.revenue_365d), (20.0, 30.0));
    assert_eq!(f.avg_order_value, Some(15.0));
    assert_eq!(f.days_since_last_order, Some(80.0));
    assert_eq!(f.tenure_days, Some(120.0));
}

#[test]
fn repeated_placed_event_counts_once() {
    let mut s = CustomerState::default();
    assert!(s.order(&order("a", T0, OrderStatus::Placed, 10.0)));
    assert!(!s.order(&order("a", T0, OrderStatus::Placed, 10.0)));
    assert_eq!(s.features_at(EventTime::from_millis(T0)).lifetime_orders, 1);
}

#[test]
fn orders_older_than_a_year_leave_the_windows_but_stay_in_lifetime() {
    let mut s = CustomerState::default();
    s.order(&order("a", T0, OrderStatus::Placed, 10.0));
    s.order(&order("b", T0 + 400 * DAY, OrderStatus::Placed, 5.0));
    let f = s.features_at(EventTime::from_millis(T0 + 400 * DAY));
    assert_eq!((f.orders_365d, f.lifetime_orders, f.revenue_365d), (1, 2, 5.0));
    assert_eq!(f.first_order, Some(EventTime::from_millis(T0)));
}

#[test]
fn a_duplicate_of_an_order_folded_out_of_the_year_is_not_counted_again() {
    let mut s = CustomerState::default();
    s.order(&order("old", T0, OrderStatus::Placed, 10.0));
    s.order(&order("new", T0 + 458 * DAY, OrderStatus::Placed, 10.0));
    assert!(!s.order(&order("old", T0, OrderStatus::Placed, 10.0)));
    assert_eq!(s.features_at(EventTime::from_millis(T0 + 458 * DAY)).lifetime_orders, 2);
}

#[test]
fn sessions_split_on_a_thirty_minute_gap_and_views_are_counted() {
    let mut s = CustomerState::default();
    let minute = 60_000;
    s.click(&click(T0, ClickEventType::PageView));
    s.click(&click(T0 + 10 * minute, ClickEventType::ProductView));
    s.click(&click(T0 + 20 * minute, ClickEventType::AddToCart));
    s.click(&click(T0 + 51 * minute, ClickEventType::PageView));
    let f = s.features_at(EventTime::from_millis(T0 + 60 * minute));
    assert_eq!((f.sessions_30d, f.page_views_30d), (2, 3));
    assert_eq!(f.last_seen, Some(EventTime::from_millis(T0 + 51 * minute)));
    let later = s.features_at(EventTime::from_millis(T0 + 31 * DAY));
    assert_eq!((later.sessions_30d, later.page_views_30d), (0, 0));
}

#[test]
fn state_stays_bounded_for_a_heavy_clicker() {
    // A click every hour: every click is a session of its own, the worst
    // case for the session list. Memory depends on the window, not on the
    // number of clicks.
    let mut s = CustomerState::default();
    let mut sizes = Vec::new();
    for i in 0..6_000 {
        s.click(&click(T0 + i * 3_600_000, ClickEventType::PageView));
        if i == 2_000 || i == 5_999 {
            sizes.push(s.approx_bytes());
        }
    }
    assert!(sizes[1] <= sizes[0] * 11 / 10, "grows with clicks: {sizes:?}");
    assert!(sizes[1] < 32 * 1024, "{sizes:?}");
}

proptest! {
    /// Streaming (events applied one by one, in any arrival order within the
    /// year window, with duplicates and cancellations) equals a batch
    /// recomputation over the distinct orders, at any later evaluation time.
    #[test]
    fn streamed_order_features_equal_batch_recomputation(
        orders in proptest::collection::btree_map(0u8..40, (0i64..360, 0u32..50_000), 1..30),
        dup_mask in proptest::collection::vec(any::<bool>(), 40),
        cancel_mask in proptest::collection::vec(any::<bool>(), 40),
        shuffle_seed in any::<u64>(),
        eval_offset_days in 0i64..400,
    ) {
        let ids: BTreeMap<u8, String> = orders.keys().map(|k| (*k, format!("o{k}"))).collect();
        let mut placed: Vec<(u8, i64, f64)> = orders
            .iter()
            .map(|(k, (day, cents))| (*k, T0 + day * DAY + i64::from(*k) * 1000, f64::from(*cents) / 100.0))
            .collect();
        let dups: Vec<_> = placed.iter().filter(|(k, _, _)| dup_mask[usize::from(*k)]).cloned().collect();
        placed.extend(dups);
        // Deterministic shuffle from the seed (arrival order is arbitrary).
        let mut x = shuffle_seed | 1;
        for i in (1..placed.len()).rev() {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17;
            placed.swap(i, (x % (i as u64 + 1)) as usize);
        }
        let cancelled: BTreeSet<u8> = orders.keys().copied().filter(|k| cancel_mask[usize::from(*k)]).collect();
        let mut state = CustomerState::default();
        for (k, t, total) in &placed {
            state.order(&order(&ids[k], *t, OrderStatus::Placed, *total));
        }
        for k in &cancelled {
            let (day, _) = orders[k];
            state.order(&order(&ids[k], T0 + (day + 1) * DAY, OrderStatus::Cancelled, 0.0));
        }
        let last_event = placed.iter().map(|p| p.1).chain(cancelled.iter().map(|k| T0 + (orders[k].0 + 1) * DAY)).max().unwrap_or(T0);
        let now = EventTime::from_millis(last_event + eval_offset_days * DAY);
        let f = state.features_at(now);

        // Batch recomputation, independent of the state code.
        let live: Vec<(i64, i64)> = orders
            .iter()
            .filter(|(k, _)| !cancelled.contains(k))
            .map(|(k, (day, cents))| (T0 + day * DAY + i64::from(*k) * 1000, i64::from(*cents)))
            .collect();
        let window = |days: i64| {
            let from = now.millis() - days * DAY;
            let w: Vec<_> = live.iter().filter(|(t, _)| *t > from && *t <= now.millis()).collect();
            (w.len() as u32, Money::from_units(w.iter().map(|(_, c)| *c).sum::<i64>() as f64 / 100.0).units())
        };
        prop_assert_eq!((f.orders_30d, f.revenue_30d), window(30));
        prop_assert_eq!((f.orders_90d, f.revenue_90d), window(90));
        prop_assert_eq!((f.orders_365d, f.revenue_365d), window(365));
        prop_assert_eq!(f.lifetime_orders, live.len() as u32);
        prop_assert_eq!(f.last_order.map(|t| t.millis()), live.iter().map(|(t, _)| *t).max());
        // The first order is the earliest net one: a cancelled first order does not start the tenure.
        prop_assert_eq!(f.first_order.map(|t| t.millis()), live.iter().map(|(t, _)| *t).min());
    }
}

#[test]
fn interpurchase_times_and_discount_sensitivity() {
    let mut s = CustomerState::default();
    let mut with_discount = order("a", T0, OrderStatus::Placed, 40.0);
    with_discount.discount_amount = 10.0;
    s.order(&with_discount);
    s.order(&order("b", T0 + 30 * DAY, OrderStatus::Placed, 50.0));
    let mut c = order("c", T0 + 90 * DAY, OrderStatus::Placed, 20.0);
    c.discount_amount = 5.0;
    s.order(&c);
    let f = s.features_at(EventTime::from_millis(T0 + 100 * DAY));
    assert_eq!(f.interpurchase_mean_days, Some(45.0));
    assert_eq!(f.interpurchase_last_gap_days, Some(60.0));
    assert_eq!(f.avg_discount, Some(7.5));
    assert!(f.discount_share.is_some_and(|x| (x - 2.0 / 3.0).abs() < 1e-12));
    let single = CustomerState::default().features_at(EventTime::from_millis(T0));
    assert_eq!((single.interpurchase_mean_days, single.discount_share), (None, None));
}

#[test]
fn click_kinds_are_counted_per_window() {
    let mut s = CustomerState::default();
    for (i, kind) in [
        ClickEventType::Search,
        ClickEventType::ProductView,
        ClickEventType::AddToCart,
        ClickEventType::Search,
        ClickEventType::PageView,
    ]
    .into_iter()
    .enumerate()
    {
        s.click(&click(T0 + i as i64 * 60_000, kind));
    }
    let f = s.features_at(EventTime::from_millis(T0 + DAY));
    assert_eq!((f.searches_30d, f.product_views_30d, f.add_to_cart_30d, f.page_views_30d), (2, 1, 1, 2));
    assert_eq!(f.sessions_30d, 1);
}

#[test]
fn a_repeated_click_event_id_counts_once() {
    let mut s = CustomerState::default();
    let mut a = click(T0, ClickEventType::Search);
    a.event_id = "dup";
    assert!(s.click(&a));
    assert!(!s.click(&a), "producer retry of the same event");
    let mut b = click(T0 + 1000, ClickEventType::Search);
    b.event_id = "other";
    assert!(s.click(&b));
    assert_eq!(s.features_at(EventTime::from_millis(T0 + 2000)).searches_30d, 2);
}

#[test]
fn a_cancellation_that_arrives_before_its_order_still_voids_it() {
    let mut s = CustomerState::default();
    assert!(s.order(&order("a", T0 + DAY, OrderStatus::Cancelled, 0.0)));
    assert!(s.order(&order("a", T0, OrderStatus::Placed, 10.0)));
    assert!(!s.order(&order("a", T0, OrderStatus::Placed, 10.0)), "a repeat changes nothing");
    let f = s.features_at(EventTime::from_millis(T0 + 2 * DAY));
    assert_eq!((f.lifetime_orders, f.orders_30d, f.last_order), (0, 0, None));
    assert_eq!(f.first_order, None, "no net order, no first order (as in the batch SQL)");
}

#[test]
fn a_late_click_that_bridges_two_sessions_merges_them() {
    let minute = 60_000;
    let mut s = CustomerState::default();
    s.click(&click(T0, ClickEventType::PageView));
    s.click(&click(T0 + 50 * minute, ClickEventType::PageView));
    assert_eq!(s.features_at(EventTime::from_millis(T0 + 60 * minute)).sessions_30d, 2);
    s.click(&click(T0 + 25 * minute, ClickEventType::PageView));
    assert_eq!(s.features_at(EventTime::from_millis(T0 + 60 * minute)).sessions_30d, 1);
}

fn click_on(
    t: i64,
    event_type: ClickEventType,
    device: Option<&'static str>,
    price: Option<f64>,
) -> ClickRow<'static> {
    ClickRow { device, price, ..click(t, event_type) }
}

#[test]
fn device_time_of_day_and_weekend_mix_over_the_activity_window() {
    let mut s = CustomerState::default();
    // 2023-11-14 (T0) is a Tuesday; T0 is 22:13 UTC.
    let hour = 3_600_000;
    s.click(&click_on(T0, ClickEventType::PageView, Some("Mobile"), None));
    s.click(&click_on(T0 + 10 * hour, ClickEventType::PageView, Some("mobile"), None));
    s.click(&click_on(T0 + 4 * DAY, ClickEventType::Search, Some("desktop"), None));
    s.click(&click_on(T0 + 4 * DAY + hour, ClickEventType::Search, Some("smart fridge"), None));
    let f = s.features_at(EventTime::from_millis(T0 + 5 * DAY));
    assert_eq!(f.preferred_device, Some("mobile"), "case does not matter");
    // 22:13 evening, 08:13 morning, Saturday 22:13 and 23:13 evening.
    assert_eq!(f.daypart_shares, Some([0.0, 0.25, 0.0, 0.75]));
    assert_eq!(f.weekend_share, Some(0.5));
    let quiet = CustomerState::default().features_at(EventTime::from_millis(T0));
    assert_eq!((quiet.preferred_device, quiet.weekend_share), (None, None));
}

#[test]
fn top_category_and_preferred_payment_of_net_orders() {
    let mut s = CustomerState::default();
    let with = |id: &'static str, day: i64, category: &'static str, payment: &'static str| OrderRow {
        primary_category: Some(category),
        payment_method: Some(payment),
        ..order(id, T0 + day * DAY, OrderStatus::Placed, 10.0)
    };
    s.order(&with("a", 0, "shoes", "card"));
    s.order(&with("b", 1, "bags", "paypal"));
    s.order(&with("c", 2, "shoes", "paypal"));
    s.order(&with("d", 3, "toys", "card"));
    s.order(&with("e", 4, "toys", "klarna"));
    s.order(&order("e", T0 + 5 * DAY, OrderStatus::Cancelled, 0.0));
    let f = s.features_at(EventTime::from_millis(T0 + 6 * DAY));
    assert_eq!(f.top_category.as_deref(), Some("shoes"));
    assert_eq!((f.top_category_share, f.categories_bought), (Some(0.5), 3));
    assert_eq!(f.preferred_payment.as_deref(), Some("card"), "a tie goes to the first name");
}

#[test]
fn a_cart_is_abandoned_after_the_configured_hours_and_closed_by_an_order() {
    let hour = 3_600_000;
    let mut s = CustomerState::default();
    s.click(&click_on(T0, ClickEventType::AddToCart, None, Some(20.0)));
    s.click(&click_on(T0 + hour, ClickEventType::AddToCart, None, Some(15.5)));
    s.click(&click_on(T0 + 2 * hour, ClickEventType::RemoveFromCart, None, Some(20.0)));
    let at = |h: i64| s.features_at(EventTime::from_millis(T0 + h * hour));
    let early = at(24);
    assert_eq!((early.cart_value, early.cart_abandoned), (15.5, false));
    assert_eq!(
        early.cart_abandon_at,
        Some(EventTime::from_millis(T0 + 25 * hour)),
        "24 h after the last add"
    );
    let late = at(25);
    assert_eq!((late.cart_abandoned, late.abandoned_cart_value), (true, 15.5));
    // An order closes the cart; an add from before the order (arriving late) does not reopen it.
    s.order(&order("o", T0 + 26 * hour, OrderStatus::Placed, 15.5));
    s.click(&click_on(T0 + 3 * hour, ClickEventType::AddToCart, None, Some(9.0)));
    let after = s.features_at(EventTime::from_millis(T0 + 60 * hour));
    assert_eq!((after.cart_value, after.cart_abandoned, after.last_cart_add), (0.0, false, None));
}

#[test]
fn state_moved_to_a_process_whose_dictionaries_differ_keeps_its_names() {
    // Saved where "shoes" was id 1 and "card" id 1; restored where other
    // names came first.
    let mut saved_dict = Dictionaries::default();
    let mut s = CustomerState::default();
    let mut row = order("a", T0, OrderStatus::Placed, 10.0);
    row.primary_category = Some("shoes");
    row.payment_method = Some("card");
    s.apply_order(&row, &cfg(), &mut saved_dict);
    let mut here = Dictionaries::default();
    here.categories.intern("books");
    here.payments.intern("paypal");
    let categories = here.categories.adopt(saved_dict.categories.names());
    let payments = here.payments.adopt(saved_dict.payments.names());
    let (cats, pays) = (here.categories.clone(), here.payments.clone());
    s.remap_names(
        |id| cats.translate(&categories, id),
        |id| u8::try_from(pays.translate(&payments, u16::from(id))).unwrap_or(u8::MAX),
    );
    let f = s.features(EventTime::from_millis(T0), &cfg(), &here);
    assert_eq!(f.top_category.as_deref(), Some("shoes"));
    assert_eq!(f.preferred_payment.as_deref(), Some("card"));
}

fn cfg_keeping(max_orders_kept: u32) -> FeaturesConfig {
    FeaturesConfig { max_orders_kept, ..cfg() }
}

fn discounted(id: &str, t: i64, total: f64, discount: f64) -> OrderRow<'_> {
    OrderRow { discount_amount: discount, ..order(id, t, OrderStatus::Placed, total) }
}

proptest! {
    /// With more orders than `max_orders_kept`, the latest are kept one by
    /// one and the rest as day totals, whatever the arrival order: streaming
    /// equals the documented rule computed over the sorted history (a day
    /// counts in a window while its latest folded order does; lifetime and
    /// discount figures stay exact sums).
    #[test]
    fn bounded_order_features_equal_the_documented_batch_rule(
        orders in proptest::collection::btree_map(0u16..300, (0i64..360, 1u32..50_000, any::<bool>()), 1..60),
        max_kept in 2u32..10,
        shuffle_seed in any::<u64>(),
        eval_offset_days in 0i64..400,
    ) {
        let config = cfg_keeping(max_kept);
        // (time, cents, discount cents); times distinct.
        let mut history: Vec<(String, i64, i64, i64)> = orders
            .iter()
            .map(|(k, (day, cents, disc))| {
                let discount = if *disc { i64::from(*cents) / 10 } else { 0 };
                (format!("o{k}"), T0 + day * DAY + i64::from(*k) * 1000, i64::from(*cents), discount)
            })
            .collect();
        let mut x = shuffle_seed | 1;
        for i in (1..history.len()).rev() {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17;
            history.swap(i, (x % (i as u64 + 1)) as usize);
        }
        let mut state = CustomerState::default();
        let mut dict = Dictionaries::default();
        for (id, t, cents, discount) in &history {
            let row = discounted(id, *t, *cents as f64 / 100.0, *discount as f64 / 100.0);
            prop_assert!(state.apply_order(&row, &config, &mut dict));
        }
        let last_event = history.iter().map(|o| o.1).max().unwrap_or(T0);
        let now = last_event + eval_offset_days * DAY;
        let f = state.segment_features(EventTime::from_millis(now), &config);

        // The rule, over the history sorted by time: the latest `max_kept`
        // one by one, the others per day at the day's latest time.
        history.sort_by_key(|o| o.1);
        let split = history.len().saturating_sub(max_kept as usize);
        let mut points: Vec<(i64, i64, i64, u32)> = history[split..].iter().map(|o| (o.1, o.2, o.3, 1)).collect();
        let mut days: BTreeMap<i64, (i64, i64, i64, u32)> = BTreeMap::new();
        for (_, t, cents, discount) in &history[..split] {
            let d = days.entry(t.div_euclid(DAY)).or_default();
            *d = (d.0.max(*t), d.1 + cents, d.2 + discount, d.3 + 1);
        }
        // A day's discounted orders, for the discount share.
        let mut discounted_per_day: BTreeMap<i64, u32> = BTreeMap::new();
        for (_, t, _, discount) in &history[..split] {
            *discounted_per_day.entry(t.div_euclid(DAY)).or_default() += u32::from(*discount > 0);
        }
        points.extend(days.values().copied());
        let window = |days: i64| {
            let from = now - days * DAY;
            let w: Vec<_> = points.iter().filter(|p| p.0 > from).collect();
            (w.iter().map(|p| p.3).sum::<u32>(), w.iter().map(|p| p.1).sum::<i64>() as f64 / 100.0)
        };
        for w in &f.order_windows {
            prop_assert_eq!((w.orders, w.revenue), window(i64::from(w.days)), "{} days", w.days);
        }
        prop_assert_eq!(f.lifetime_orders, history.len() as u32);
        let total: i64 = history.iter().map(|o| o.2).sum();
        prop_assert_eq!(f.avg_order_value, Some(total as f64 / 100.0 / history.len() as f64));
        prop_assert_eq!(f.last_order.map(|t| t.millis()), Some(last_event));
        prop_assert_eq!(f.first_order.map(|t| t.millis()), history.iter().map(|o| o.1).min());
        let year_from = now - 365 * DAY;
        let kept_discounted = history[split..].iter().filter(|o| o.1 > year_from && o.3 > 0).count() as u32;
        let day_discounted: u32 = days
            .iter()
            .filter(|(_, d)| d.0 > year_from)
            .map(|(day, _)| discounted_per_day[day])
            .sum();
        let year_orders = window(365).0;
        let share = (year_orders > 0).then(|| f64::from(kept_discounted + day_discounted) / f64::from(year_orders));
        prop_assert_eq!(f.discount_share, share);
    }
}

#[test]
fn a_customer_with_a_hundred_thousand_orders_keeps_bounded_state_and_exact_totals() {
    let config = cfg_keeping(1_000);
    let mut dict = Dictionaries::default();
    let mut s = CustomerState::default();
    let n = 100_000i64;
    let mut sizes = Vec::new();
    // One order every ~4 minutes over 300 days, 1.00 to 9.99 each.
    let step = 300 * DAY / n;
    let mut revenue_cents = 0;
    for i in 0..n {
        let cents = 100 + i % 900;
        revenue_cents += cents;
        let id = format!("o{i}");
        assert!(s.apply_order(
            &order(&id, T0 + i * step, OrderStatus::Placed, cents as f64 / 100.0),
            &config,
            &mut dict
        ));
        if i == n / 10 || i == n - 1 {
            sizes.push(s.approx_bytes());
        }
    }
    // Memory: 1,000 orders one by one and a total per day, not per order.
    assert!(sizes[1] < 48 * 1024, "{sizes:?}");
    assert!(sizes[1] <= sizes[0] + 300 * 28 * 2, "grows with orders: {sizes:?}");
    let last = T0 + (n - 1) * step;
    let f = s.features(EventTime::from_millis(last), &config, &dict);
    assert_eq!(f.lifetime_orders, n as u32);
    assert_eq!(
        f.order_windows.last().map(|w| (w.orders, w.revenue)),
        Some((n as u32, revenue_cents as f64 / 100.0))
    );
    assert_eq!(f.last_order, Some(EventTime::from_millis(last)));
    // The 7-day window: exact except the day it starts on, which counts whole.
    let from = last - 7 * DAY;
    let exact = (0..n).filter(|i| T0 + i * step > from).count() as u32;
    let edge_day = (0..n).filter(|i| (T0 + i * step).div_euclid(DAY) == from.div_euclid(DAY)).count() as u32;
    let seven = f.orders_in(7).unwrap_or_default();
    assert!((exact..=exact + edge_day).contains(&seven), "{seven} not in {exact}..={}", exact + edge_day);
    // A repeat of a recent order still counts once.
    let id = format!("o{}", n - 1);
    assert!(!s.apply_order(&order(&id, last, OrderStatus::Placed, 1.0), &config, &mut dict));
}

#[test]
fn a_silent_customer_is_compacted_without_changing_any_later_feature() {
    let config = cfg();
    let mut dict = Dictionaries::default();
    let mut s = CustomerState::default();
    s.apply_order(&discounted("a", T0, 40.0, 4.0), &config, &mut dict);
    s.apply_order(&order("b", T0 + 20 * DAY, OrderStatus::Placed, 60.0), &config, &mut dict);
    for (i, kind) in
        [ClickEventType::PageView, ClickEventType::AddToCart, ClickEventType::Search].into_iter().enumerate()
    {
        let mut row = click(T0 + 21 * DAY + i as i64 * 60_000, kind);
        row.price = Some(12.0);
        s.apply_click(&row, &config);
    }
    let due = s.compact_due(&config).expect("holds orders and clicks");
    assert!(due.millis() > T0 + (21 + 365) * DAY, "not before every window is past: {due:?}");
    let mut compacted = s.clone();
    compacted.compact(due, &config);
    for later in [0, 1, 30, 400, 2_000] {
        let at = due.plus_millis(later * DAY);
        assert_eq!(
            compacted.features(at, &config, &dict),
            s.features(at, &config, &dict),
            "{later} days after"
        );
    }
    assert_eq!(compacted.approx_bytes(), std::mem::size_of::<CustomerState>(), "nothing left on the heap");
    assert_eq!(compacted.compact_due(&config), None);
    assert!(compacted.is_compacted() && !s.is_compacted());
    let f = compacted.features(due, &config, &dict);
    assert_eq!((f.lifetime_orders, f.avg_order_value), (2, Some(50.0)));
    // An order older than the longest window before the compaction may be one
    // folded away: refused, as after an event at that time.
    assert!(!compacted.apply_order(
        &order("b", T0 + 20 * DAY, OrderStatus::Placed, 60.0),
        &config,
        &mut dict
    ));
    // A new order comes back into the windows and arms the next compaction.
    assert!(compacted.apply_order(
        &order("c", due.millis() + DAY, OrderStatus::Placed, 10.0),
        &config,
        &mut dict
    ));
    assert_eq!(compacted.features(due.plus_millis(DAY), &config, &dict).lifetime_orders, 3);
    assert!(compacted.compact_due(&config).is_some());
    assert!(!compacted.is_compacted());
}
