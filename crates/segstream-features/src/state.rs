use std::collections::{BTreeMap, VecDeque};

use segstream_config::FeaturesConfig;
use segstream_events::{ClickEventType, ClickRow, EventTime, OrderRow, OrderStatus};
use serde::{Deserialize, Serialize};

/// Longest order window; orders older than this fold into lifetime scalars.
const ORDER_WINDOW_DAYS: i64 = 365;
/// Click activity window.
const CLICK_WINDOW_DAYS: i64 = 30;

/// An amount of money in cents: sums stay exact and independent of order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Money(i64);

impl Money {
    /// From a decimal amount in currency units, rounded to the cent.
    pub fn from_units(amount: f64) -> Self {
        Self((amount * 100.0).round() as i64)
    }

    /// In currency units.
    pub fn units(self) -> f64 {
        self.0 as f64 / 100.0
    }
}

/// One order kept for the windows.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct OrderEntry {
    /// xxh3 of the order id: de-duplicates repeats and matches cancellations.
    id: u64,
    time: EventTime,
    amount: Money,
    /// Cancelled or refunded: no longer counts.
    voided: bool,
}

/// Click activity of one day.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct DayActivity {
    day: i64,
    sessions: u32,
    page_views: u32,
}

/// Everything segstream keeps about one customer.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CustomerState {
    /// Orders of the last 365 days (by event time of the latest event seen), sorted by time.
    orders: Vec<OrderEntry>,
    /// Latest order among those folded out of `orders`.
    folded_last_order: Option<EventTime>,
    /// Orders and revenue folded out of `orders`, for lifetime figures.
    folded_orders: u32,
    folded_revenue: Money,
    first_order: Option<EventTime>,
    /// Daily click activity, sorted by day, last 30 days.
    activity: VecDeque<DayActivity>,
    last_click: Option<EventTime>,
    last_seen: Option<EventTime>,
}

/// Feature values of a customer at one point in event time.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Features {
    /// The time these values are for.
    pub as_of: Option<EventTime>,
    /// Net orders (placed minus cancelled/refunded) in the last 30 days.
    pub orders_30d: u32,
    /// Net orders in the last 90 days.
    pub orders_90d: u32,
    /// Net orders in the last 365 days.
    pub orders_365d: u32,
    /// Net revenue in the last 30 days.
    pub revenue_30d: f64,
    /// Net revenue in the last 90 days.
    pub revenue_90d: f64,
    /// Net revenue in the last 365 days.
    pub revenue_365d: f64,
    /// Net orders ever.
    pub lifetime_orders: u32,
    /// Average order value over all net orders ever.
    pub avg_order_value: Option<f64>,
    /// Time of the latest net order.
    pub last_order: Option<EventTime>,
    /// Days from the latest net order to `as_of`.
    pub days_since_last_order: Option<f64>,
    /// Time of the first order ever placed.
    pub first_order: Option<EventTime>,
    /// Days from the first order to `as_of`.
    pub tenure_days: Option<f64>,
    /// Sessions (clicks separated by the session gap) in the last 30 days.
    pub sessions_30d: u32,
    /// Page and product views in the last 30 days.
    pub page_views_30d: u32,
    /// Latest event of any kind.
    pub last_seen: Option<EventTime>,
}

impl Features {
    /// Named numeric values, for change records ("the values that decided").
    pub fn to_map(&self) -> BTreeMap<String, f64> {
        let mut m = BTreeMap::from([
            ("orders_30d".to_owned(), f64::from(self.orders_30d)),
            ("orders_90d".to_owned(), f64::from(self.orders_90d)),
            ("orders_365d".to_owned(), f64::from(self.orders_365d)),
            ("revenue_30d".to_owned(), self.revenue_30d),
            ("revenue_90d".to_owned(), self.revenue_90d),
            ("revenue_365d".to_owned(), self.revenue_365d),
            ("lifetime_orders".to_owned(), f64::from(self.lifetime_orders)),
            ("sessions_30d".to_owned(), f64::from(self.sessions_30d)),
            ("page_views_30d".to_owned(), f64::from(self.page_views_30d)),
        ]);
        let optional = [
            ("avg_order_value", self.avg_order_value),
            ("days_since_last_order", self.days_since_last_order),
            ("tenure_days", self.tenure_days),
        ];
        m.extend(optional.into_iter().filter_map(|(k, v)| Some((k.to_owned(), round2(v?)))));
        m
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

impl CustomerState {
    /// Applies one order event. Returns false when it changed nothing: a
    /// repeated `placed`, a cancellation of an unknown order, or an order more
    /// than 365 days older than the customer's latest event.
    pub fn apply_order(&mut self, row: &OrderRow<'_>) -> bool {
        // An order older than the longest window, relative to what we have
        // already seen of this customer, may be one we folded away: applying it
        // could count it twice, so it is refused (the caller counts it as late).
        if self.last_seen.is_some_and(|seen| row.event_time.day() < seen.day() - ORDER_WINDOW_DAYS) {
            return false;
        }
        self.touch(row.event_time);
        let id = xxhash_rust::xxh3::xxh3_64(row.order_id.as_bytes());
        let existing = self.orders.iter_mut().find(|o| o.id == id);
        let changed = match (row.status, existing) {
            (OrderStatus::Placed, Some(_)) => false,
            (OrderStatus::Placed, None) => {
                let at = self.orders.partition_point(|o| o.time <= row.event_time);
                self.orders.insert(
                    at,
                    OrderEntry {
                        id,
                        time: row.event_time,
                        amount: Money::from_units(row.total),
                        voided: false,
                    },
                );
                self.first_order = Some(self.first_order.map_or(row.event_time, |f| f.min(row.event_time)));
                true
            }
            (OrderStatus::Cancelled | OrderStatus::Refunded, Some(entry)) => {
                !std::mem::replace(&mut entry.voided, true)
            }
            (OrderStatus::Cancelled | OrderStatus::Refunded, None) => false,
        };
        self.expire(row.event_time);
        changed
    }

    /// Applies one click.
    pub fn apply_click(&mut self, row: &ClickRow<'_>, config: &FeaturesConfig) {
        self.touch(row.event_time);
        let gap_ms = i64::from(config.session_gap_minutes) * 60_000;
        let new_session = self.last_click.is_none_or(|last| row.event_time.millis() - last.millis() > gap_ms);
        self.last_click = Some(self.last_click.map_or(row.event_time, |l| l.max(row.event_time)));
        let is_view = matches!(row.event_type, ClickEventType::PageView | ClickEventType::ProductView);
        let day = row.event_time.day();
        let at = self.activity.partition_point(|a| a.day < day);
        if self.activity.get(at).is_none_or(|a| a.day != day) {
            self.activity.insert(at, DayActivity { day, sessions: 0, page_views: 0 });
        }
        if let Some(bucket) = self.activity.get_mut(at) {
            bucket.sessions += u32::from(new_session);
            bucket.page_views += u32::from(is_view);
        }
        self.expire(row.event_time);
    }

    /// Latest event time of any kind applied to this customer.
    pub fn last_seen(&self) -> Option<EventTime> {
        self.last_seen
    }

    fn touch(&mut self, t: EventTime) {
        self.last_seen = Some(self.last_seen.map_or(t, |s| s.max(t)));
    }

    /// Folds orders and activity that fell out of every window as of `now`.
    fn expire(&mut self, now: EventTime) {
        let order_horizon = now.day() - ORDER_WINDOW_DAYS;
        while self.orders.first().is_some_and(|o| o.time.day() < order_horizon) {
            let o = self.orders.remove(0);
            if !o.voided {
                self.folded_orders += 1;
                self.folded_revenue = Money(self.folded_revenue.0 + o.amount.0);
                self.folded_last_order = Some(self.folded_last_order.map_or(o.time, |l| l.max(o.time)));
            }
        }
        let click_horizon = now.day() - CLICK_WINDOW_DAYS;
        while self.activity.front().is_some_and(|a| a.day < click_horizon) {
            self.activity.pop_front();
        }
    }

    /// Feature values as of `now`.
    pub fn features(&self, now: EventTime) -> Features {
        let live = || self.orders.iter().filter(|o| !o.voided && o.time <= now);
        let window = |days: f64| {
            let from = now.plus_days(-days);
            live()
                .filter(|o| o.time > from)
                .fold((0u32, Money(0)), |(n, m), o| (n + 1, Money(m.0 + o.amount.0)))
        };
        let (orders_30d, revenue_30d) = window(30.0);
        let (orders_90d, revenue_90d) = window(90.0);
        let (orders_365d, revenue_365d) = window(365.0);
        let (live_count, live_revenue) = live().fold((0u32, 0i64), |(n, m), o| (n + 1, m + o.amount.0));
        let lifetime_orders = live_count + self.folded_orders;
        let lifetime_revenue = Money(live_revenue + self.folded_revenue.0);
        let last_order = live().map(|o| o.time).max().or(self.folded_last_order);
        let click_from = now.day() - CLICK_WINDOW_DAYS;
        let recent = self.activity.iter().filter(|a| a.day > click_from && a.day <= now.day());
        let (sessions_30d, page_views_30d) =
            recent.fold((0, 0), |(s, v), a| (s + a.sessions, v + a.page_views));
        Features {
            as_of: Some(now),
            orders_30d,
            orders_90d,
            orders_365d,
            revenue_30d: revenue_30d.units(),
            revenue_90d: revenue_90d.units(),
            revenue_365d: revenue_365d.units(),
            lifetime_orders,
            avg_order_value: (lifetime_orders > 0)
                .then(|| lifetime_revenue.units() / f64::from(lifetime_orders)),
            last_order,
            days_since_last_order: last_order.map(|l| now.days_since(l)),
            first_order: self.first_order,
            tenure_days: self.first_order.map(|f| now.days_since(f)),
            sessions_30d,
            page_views_30d,
            last_seen: self.last_seen,
        }
    }

    /// Approximate heap and inline bytes of this state (for the state-size metric).
    pub fn approx_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.orders.capacity() * std::mem::size_of::<OrderEntry>()
            + self.activity.capacity() * std::mem::size_of::<DayActivity>()
    }
}
