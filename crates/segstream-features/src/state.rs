use std::collections::{BTreeMap, VecDeque};

use segstream_config::FeaturesConfig;
use segstream_events::{ClickEventType, ClickRow, EventTime, OrderRow, OrderStatus};
use serde::{Deserialize, Serialize};

/// Longest order window; orders older than this fold into lifetime scalars.
const ORDER_WINDOW_DAYS: i64 = 365;
/// Click activity window.
const CLICK_WINDOW_DAYS: i64 = 30;
/// A repeated click event id counts once when it arrives within the
/// customer's last this-many clicks (producer retries land that close).
const RECENT_CLICK_IDS: usize = 8;

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
    /// Discount granted, in cents (saturating: no real discount reaches 21 M).
    discount_cents: i32,
    /// Cancelled or refunded: no longer counts.
    voided: bool,
    /// False for a cancellation that arrived before its order: a tombstone
    /// that voids the order when it comes, at `time` of the cancellation.
    placed: bool,
}

/// One session: clicks chained by gaps of at most the session gap.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
struct Session {
    start: EventTime,
    end: EventTime,
}

/// Click activity of one day.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct DayActivity {
    /// Days since the epoch; i32 reaches year 5.8 million.
    day: i32,
    /// page_view and product_view clicks.
    page_views: u16,
    product_views: u16,
    searches: u16,
    add_to_cart: u16,
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
    /// Sessions of the last 30 days (and a day more, so a late click can still
    /// join one that straddles the window's edge), sorted and disjoint: the
    /// count does not depend on the order clicks arrive in.
    sessions: Vec<Session>,
    /// xxh3 of the last RECENT_CLICK_IDS click event ids, for de-duplication.
    recent_clicks: [u64; RECENT_CLICK_IDS],
    recent_next: u8,
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
    /// Product views in the last 30 days.
    pub product_views_30d: u32,
    /// Searches in the last 30 days.
    pub searches_30d: u32,
    /// Add-to-cart clicks in the last 30 days.
    pub add_to_cart_30d: u32,
    /// Mean days between orders: (last − first order) / (orders − 1), lifetime.
    pub interpurchase_mean_days: Option<f64>,
    /// Days between the last two net orders of the last 365 days.
    pub interpurchase_last_gap_days: Option<f64>,
    /// Share of the last 365 days' net orders that carried a discount.
    pub discount_share_365d: Option<f64>,
    /// Average discount of the discounted net orders of the last 365 days.
    pub avg_discount_365d: Option<f64>,
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
            ("product_views_30d".to_owned(), f64::from(self.product_views_30d)),
            ("searches_30d".to_owned(), f64::from(self.searches_30d)),
            ("add_to_cart_30d".to_owned(), f64::from(self.add_to_cart_30d)),
        ]);
        let optional = [
            ("avg_order_value", self.avg_order_value),
            ("interpurchase_mean_days", self.interpurchase_mean_days),
            ("interpurchase_last_gap_days", self.interpurchase_last_gap_days),
            ("discount_share_365d", self.discount_share_365d),
            ("avg_discount_365d", self.avg_discount_365d),
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
        let entry = |voided: bool, placed: bool| OrderEntry {
            id,
            time: row.event_time,
            amount: if placed { Money::from_units(row.total) } else { Money::default() },
            discount_cents: if placed {
                i32::try_from(Money::from_units(row.discount_amount).0).unwrap_or(i32::MAX)
            } else {
                0
            },
            voided,
            placed,
        };
        let changed = match (row.status, existing) {
            (OrderStatus::Placed, Some(e)) if e.placed => false,
            (OrderStatus::Placed, Some(tombstone)) => {
                // The cancellation came first: the order is now known, and
                // stays void.
                let id = tombstone.id;
                self.orders.retain(|o| o.id != id);
                self.insert_order(entry(true, true));
                true
            }
            (OrderStatus::Placed, None) => {
                self.insert_order(entry(false, true));
                true
            }
            (OrderStatus::Cancelled | OrderStatus::Refunded, Some(entry)) => {
                !std::mem::replace(&mut entry.voided, true)
            }
            (OrderStatus::Cancelled | OrderStatus::Refunded, None) => {
                self.insert_order(entry(true, false));
                true
            }
        };
        self.expire(row.event_time);
        changed
    }

    fn insert_order(&mut self, o: OrderEntry) {
        if o.placed {
            self.first_order = Some(self.first_order.map_or(o.time, |f| f.min(o.time)));
        }
        let at = self.orders.partition_point(|e| e.time <= o.time);
        self.orders.insert(at, o);
    }

    /// Applies one click. Returns false for a repeated event id (within the
    /// customer's last 8 clicks), which changes nothing.
    pub fn apply_click(&mut self, row: &ClickRow<'_>, config: &FeaturesConfig) -> bool {
        let id = xxhash_rust::xxh3::xxh3_64(row.event_id.as_bytes());
        if self.recent_clicks.contains(&id) {
            return false;
        }
        let slot = usize::from(self.recent_next) % RECENT_CLICK_IDS;
        self.recent_clicks[slot] = id;
        self.recent_next = ((slot + 1) % RECENT_CLICK_IDS) as u8;
        self.touch(row.event_time);
        self.add_to_session(row.event_time, i64::from(config.session_gap_minutes) * 60_000);
        let kind = row.event_type;
        let day = i32::try_from(row.event_time.day()).unwrap_or(i32::MAX);
        let at = self.activity.partition_point(|a| a.day < day);
        if self.activity.get(at).is_none_or(|a| a.day != day) {
            let empty = DayActivity { day, page_views: 0, product_views: 0, searches: 0, add_to_cart: 0 };
            self.activity.insert(at, empty);
        }
        if let Some(b) = self.activity.get_mut(at) {
            let bump = |n: &mut u16, yes: bool| *n = n.saturating_add(u16::from(yes));
            bump(&mut b.page_views, matches!(kind, ClickEventType::PageView | ClickEventType::ProductView));
            bump(&mut b.product_views, kind == ClickEventType::ProductView);
            bump(&mut b.searches, kind == ClickEventType::Search);
            bump(&mut b.add_to_cart, kind == ClickEventType::AddToCart);
        }
        self.expire(row.event_time);
        true
    }

    /// Puts a click into the session it extends, merging the two sessions it
    /// bridges, or opens a new one.
    fn add_to_session(&mut self, t: EventTime, gap_ms: i64) {
        let at = self.sessions.partition_point(|s| s.start <= t);
        let joins_left =
            at > 0 && self.sessions.get(at - 1).is_some_and(|s| t.millis() - s.end.millis() <= gap_ms);
        let joins_right = self.sessions.get(at).is_some_and(|s| s.start.millis() - t.millis() <= gap_ms);
        match (joins_left, joins_right) {
            (true, true) => {
                let right = self.sessions.remove(at);
                if let Some(left) = self.sessions.get_mut(at - 1) {
                    left.end = left.end.max(right.end);
                }
            }
            (true, false) => {
                if let Some(left) = self.sessions.get_mut(at - 1) {
                    left.end = left.end.max(t);
                }
            }
            (false, true) => {
                if let Some(right) = self.sessions.get_mut(at) {
                    right.start = t;
                }
            }
            (false, false) => self.sessions.insert(at, Session { start: t, end: t }),
        }
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
                self.folded_revenue = Money(self.folded_revenue.0.saturating_add(o.amount.0));
                self.folded_last_order = Some(self.folded_last_order.map_or(o.time, |l| l.max(o.time)));
            }
        }
        let click_horizon = now.day() - CLICK_WINDOW_DAYS;
        while self.activity.front().is_some_and(|a| i64::from(a.day) < click_horizon) {
            self.activity.pop_front();
        }
        // A day of margin: a session gap is at most a day (config check).
        let ended = self.sessions.partition_point(|s| s.end.day() < click_horizon - 1);
        self.sessions.drain(..ended);
    }

    /// Feature values as of `now`.
    pub fn features(&self, now: EventTime) -> Features {
        let live = || self.orders.iter().filter(|o| !o.voided && o.time <= now);
        let window = |days: f64| {
            let from = now.plus_days(-days);
            live()
                .filter(|o| o.time > from)
                .fold((0u32, Money(0)), |(n, m), o| (n + 1, Money(m.0.saturating_add(o.amount.0))))
        };
        let (orders_30d, revenue_30d) = window(30.0);
        let (orders_90d, revenue_90d) = window(90.0);
        let (orders_365d, revenue_365d) = window(365.0);
        let (live_count, live_revenue) =
            live().fold((0u32, 0i64), |(n, m), o| (n + 1, m.saturating_add(o.amount.0)));
        let lifetime_orders = live_count + self.folded_orders;
        let lifetime_revenue = Money(live_revenue.saturating_add(self.folded_revenue.0));
        let last_order = live().map(|o| o.time).max().or(self.folded_last_order);
        let click_from = now.day() - CLICK_WINDOW_DAYS;
        let recent = || {
            self.activity
                .iter()
                .filter(move |a| i64::from(a.day) > click_from && i64::from(a.day) <= now.day())
        };
        let sum = |field: fn(&DayActivity) -> u16| recent().map(|a| u32::from(field(a))).sum::<u32>();
        let year_from = now.plus_days(-365.0);
        // One pass, no allocation: this runs several times per event.
        let (mut year_orders, mut discounted, mut discount_sum) = (0u32, 0u32, 0i64);
        let mut last_two: (Option<EventTime>, Option<EventTime>) = (None, None);
        for o in live().filter(|o| o.time > year_from) {
            year_orders += 1;
            if o.discount_cents > 0 {
                discounted += 1;
                discount_sum += i64::from(o.discount_cents);
            }
            // Orders are sorted by time.
            last_two = (last_two.1, Some(o.time));
        }
        let first_order = self.first_order;
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
            sessions_30d: self
                .sessions
                .iter()
                .filter(|s| s.start.day() > click_from && s.start.day() <= now.day())
                .count() as u32,
            page_views_30d: sum(|a| a.page_views),
            product_views_30d: sum(|a| a.product_views),
            searches_30d: sum(|a| a.searches),
            add_to_cart_30d: sum(|a| a.add_to_cart),
            interpurchase_mean_days: match (first_order, last_order) {
                (Some(f), Some(l)) if lifetime_orders >= 2 => {
                    Some(l.days_since(f) / f64::from(lifetime_orders - 1))
                }
                _ => None,
            },
            interpurchase_last_gap_days: match last_two {
                (Some(a), Some(b)) => Some(b.days_since(a)),
                _ => None,
            },
            discount_share_365d: (year_orders > 0).then(|| f64::from(discounted) / f64::from(year_orders)),
            avg_discount_365d: (discounted > 0).then(|| Money(discount_sum).units() / f64::from(discounted)),
            last_seen: self.last_seen,
        }
    }

    /// Approximate heap and inline bytes of this state (for the state-size metric).
    pub fn approx_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.orders.capacity() * std::mem::size_of::<OrderEntry>()
            + self.activity.capacity() * std::mem::size_of::<DayActivity>()
            + self.sessions.capacity() * std::mem::size_of::<Session>()
    }
}
