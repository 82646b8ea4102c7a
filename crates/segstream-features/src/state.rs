use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use segstream_config::FeaturesConfig;
use segstream_events::{ClickEventType, ClickRow, EventTime, OrderRow, OrderStatus};
use serde::{Deserialize, Serialize};
use thin_vec::ThinVec;

use crate::dictionary::{Dictionaries, NONE};

/// A repeated click event id counts once when it arrives within the
/// customer's last this-many clicks (producer retries land that close).
const RECENT_CLICK_IDS: usize = 8;
/// A cart keeps its latest this-many adds and removes.
pub const CART_LINES: usize = 64;
const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 86_400_000;

/// Device classes, in the order of the per-day counters.
pub const DEVICES: [&str; 5] = ["app", "desktop", "mobile", "other", "tablet"];
/// Parts of the day (UTC) by hour: [0, 6), [6, 12), [12, 18), [18, 24).
pub const DAYPARTS: [&str; 4] = ["night", "morning", "afternoon", "evening"];

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

    fn plus(self, other: i64) -> Self {
        Self(self.0.saturating_add(other))
    }
}

/// A time in milliseconds or an amount in cents, in six bytes: event times
/// are 2000–2100 and amounts at most a billion units (both checked where
/// events are decoded), far inside 48 bits (±1.4·10^14). Millions of
/// customers hold lists of these, so the two bytes saved on each matter.
#[derive(Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct I48([u8; 6]);

impl I48 {
    const MAX: i64 = (1 << 47) - 1;

    /// Clamped to ±2^47 (never reached by decoded events).
    fn new(v: i64) -> Self {
        let [a, b, c, d, e, f, _, _] = v.clamp(-Self::MAX - 1, Self::MAX).to_le_bytes();
        Self([a, b, c, d, e, f])
    }

    fn get(self) -> i64 {
        let [a, b, c, d, e, f] = self.0;
        // Shifting back down from the top of the word sign-extends.
        i64::from_le_bytes([0, 0, a, b, c, d, e, f]) >> 16
    }

    fn time(self) -> EventTime {
        EventTime::from_millis(self.get())
    }
}

impl From<EventTime> for I48 {
    fn from(t: EventTime) -> Self {
        Self::new(t.millis())
    }
}

impl fmt::Debug for I48 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.get())
    }
}

const VOIDED: u8 = 1;
/// Unset for a cancellation that arrived before its order: a tombstone
/// that voids the order when it comes, at the time of the cancellation.
const PLACED: u8 = 2;

/// One order kept for the windows (26 bytes).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct OrderEntry {
    /// xxh3 of the order id, 48 bits: de-duplicates repeats and matches
    /// cancellations among one customer's orders of a year (across 10
    /// million customers of 50 orders each, two orders of one customer
    /// share a hash with odds of 1 in 20,000).
    id: I48,
    /// Discount granted, in cents, little-endian `i32` (saturating: no real
    /// discount reaches 21 M); bytes keep the entry 2-aligned.
    discount: [u8; 4],
    at: I48,
    cents: I48,
    /// Primary (first listed) category, from the category dictionary.
    category: u16,
    /// Payment method, from the payment dictionary.
    payment: u8,
    flags: u8,
}

impl OrderEntry {
    fn counts(&self) -> bool {
        self.flags & VOIDED == 0
    }

    fn time(&self) -> EventTime {
        self.at.time()
    }

    fn amount(&self) -> Money {
        Money(self.cents.get())
    }

    fn discount_cents(&self) -> i32 {
        i32::from_le_bytes(self.discount)
    }
}

/// Net orders of one day folded out of the orders kept one by one, once a
/// customer has more than `max_orders_kept` (28 bytes): enough for the
/// windows, the lifetime figures and the discount features.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct OrderDay {
    /// Days since the epoch; 16 bits reach 2149 (event times end at 2100).
    day: u16,
    orders: u32,
    /// Orders that carried a discount.
    discounted: u32,
    cents: I48,
    discount_cents: I48,
    /// The day's latest order folded: the day counts in a window while it does.
    last: I48,
}

impl OrderDay {
    fn last(&self) -> EventTime {
        self.last.time()
    }
}

/// Click activity of one day (20 bytes). Counts saturate: the kinds at
/// 65,535 a day, the parts of the day and the devices at 255 a day (the batch
/// SQL caps the same).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct DayActivity {
    /// Days since the epoch; 16 bits reach 2149 (event times end at 2100).
    day: u16,
    /// page_view and product_view clicks.
    page_views: u16,
    product_views: u16,
    searches: u16,
    add_to_cart: u16,
    /// Clicks per part of the day ([`DAYPARTS`]).
    dayparts: [u8; 4],
    /// Clicks per device class ([`DEVICES`]).
    devices: [u8; 5],
}

/// Click counts of one customer and day, as the batch SQL computes them
/// (`segstream-sql`, `DAY_COUNTS`): one click's are added to its day's
/// bucket as it is applied.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct DayCounts {
    /// `page_view` and `product_view` clicks.
    pub page_views: u32,
    /// `product_view` clicks.
    pub product_views: u32,
    /// `search` clicks.
    pub searches: u32,
    /// `add_to_cart` clicks.
    pub add_to_cart: u32,
    /// Clicks per part of the day ([`DAYPARTS`]).
    pub dayparts: [u32; 4],
    /// Clicks per device class ([`DEVICES`]).
    pub devices: [u32; 5],
}

impl DayCounts {
    /// One click's counts: its kind, part of the day (UTC hour) and device
    /// class (free text, case ignored; unknown ones are `other`).
    fn of_click(row: &ClickRow<'_>) -> Self {
        let kind = row.event_type;
        let hour = row.event_time.millis().rem_euclid(86_400_000) / 3_600_000;
        let mut dayparts = [0; 4];
        if let Some(n) = usize::try_from(hour / 6).ok().and_then(|i| dayparts.get_mut(i)) {
            *n = 1;
        }
        let mut devices = [0; 5];
        if let Some(d) = row.device {
            let class = DEVICES.iter().position(|x| d.eq_ignore_ascii_case(x)).unwrap_or(3);
            if let Some(n) = devices.get_mut(class) {
                *n = 1;
            }
        }
        Self {
            page_views: u32::from(matches!(kind, ClickEventType::PageView | ClickEventType::ProductView)),
            product_views: u32::from(kind == ClickEventType::ProductView),
            searches: u32::from(kind == ClickEventType::Search),
            add_to_cart: u32::from(kind == ClickEventType::AddToCart),
            dayparts,
            devices,
        }
    }
}

/// One session: clicks chained by gaps of at most the session gap (12 bytes).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
struct Session {
    start: I48,
    end: I48,
}

impl Session {
    fn start(&self) -> EventTime {
        self.start.time()
    }

    fn end(&self) -> EventTime {
        self.end.time()
    }
}

/// An add (positive) or remove (negative) of the current cart (12 bytes).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
struct CartLine {
    at: I48,
    /// Price added (positive) or removed (negative).
    cents: i32,
    add: bool,
}

/// Everything segstream keeps about one customer.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CustomerState {
    /// Orders of the longest order window (by the latest event seen), sorted
    /// by time: the latest `max_orders_kept`.
    orders: Vec<OrderEntry>,
    /// Older net orders of the window than those, one entry per day, sorted
    /// by day: empty unless the customer has more than `max_orders_kept`.
    /// (One pointer when empty: few customers ever fill it.)
    order_days: ThinVec<OrderDay>,
    /// Latest order among those folded out of `orders`.
    folded_last_order: Option<EventTime>,
    /// Orders and revenue folded out of `orders`, for lifetime figures.
    folded_orders: u32,
    folded_revenue: Money,
    /// Earliest net order among those folded out of `orders` (the first
    /// order is the earliest net order: a cancelled one does not count).
    folded_first_order: Option<EventTime>,
    /// Latest order placed (even if voided later): it closes the cart.
    last_placed: Option<EventTime>,
    /// Daily click activity, sorted by day, longest activity window.
    activity: Vec<DayActivity>,
    /// Sessions of the longest activity window (and a day more, so a late
    /// click can still join one that straddles the window's edge), sorted and
    /// disjoint: the count does not depend on the order clicks arrive in.
    sessions: Vec<Session>,
    /// Adds and removes after the last order placed, sorted by time.
    cart: Vec<CartLine>,
    /// xxh3 of the last RECENT_CLICK_IDS click event ids, for de-duplication.
    /// (32-bit: a distinct click taken for a repeat has odds of 2 in a billion.)
    recent_clicks: [u32; RECENT_CLICK_IDS],
    recent_next: u8,
    last_seen: Option<EventTime>,
    /// Day (since the epoch) the state was last compacted on, 0 = never (see
    /// [`CustomerState::compact`]): orders folded then are as far back as by
    /// an event that day. (Two bytes, in what was padding.)
    compacted_day: u16,
}

/// A net order and the net order before it ([`CustomerState::returns`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OrderReturn {
    /// When the order was placed.
    pub at: EventTime,
    /// The net order before it.
    pub previous: EventTime,
    /// Net orders up to and including `previous`.
    pub orders_before: u32,
}

/// Orders and revenue of one window.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct OrderWindow {
    /// Window length, days.
    pub days: u32,
    /// Net orders (placed minus cancelled/refunded) in the window.
    pub orders: u32,
    /// Net revenue in the window.
    pub revenue: f64,
}

/// Click activity of one window.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ActivityWindow {
    /// Window length, days (calendar days, UTC).
    pub days: u32,
    /// Sessions that started in the window.
    pub sessions: u32,
    /// Page and product views.
    pub page_views: u32,
    /// Product views.
    pub product_views: u32,
    /// Searches.
    pub searches: u32,
    /// Add-to-cart clicks.
    pub add_to_cart: u32,
}

/// Feature values of a customer at one point in event time. The docs
/// (`docs/segments-and-features.md`) define each in words and the batch SQL
/// (`segstream-sql`) in SQL.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Features {
    /// The time these values are for.
    pub as_of: Option<EventTime>,
    /// Orders and revenue per configured order window.
    pub order_windows: Vec<OrderWindow>,
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
    /// Click activity per configured activity window.
    pub activity_windows: Vec<ActivityWindow>,
    /// Mean days between orders: (last − first order) / (orders − 1), lifetime.
    pub interpurchase_mean_days: Option<f64>,
    /// Days between the last two net orders of the longest order window.
    pub interpurchase_last_gap_days: Option<f64>,
    /// Share of the longest order window's net orders that carried a discount.
    pub discount_share: Option<f64>,
    /// Average discount of the discounted net orders of the longest order window.
    pub avg_discount: Option<f64>,
    /// Most frequent primary category of the longest order window's net orders.
    pub top_category: Option<Arc<str>>,
    /// Share of those orders (with a category) in the top category.
    pub top_category_share: Option<f64>,
    /// Distinct primary categories among those orders.
    pub categories_bought: u32,
    /// Most used payment method of the longest order window's net orders.
    pub preferred_payment: Option<Arc<str>>,
    /// Device class with the most clicks in the longest activity window.
    pub preferred_device: Option<&'static str>,
    /// Share of the longest activity window's clicks per part of the day (UTC), [`DAYPARTS`] order.
    pub daypart_shares: Option<[f64; 4]>,
    /// Share of the longest activity window's clicks on Saturday or Sunday (UTC).
    pub weekend_share: Option<f64>,
    /// Value of the current cart: prices added minus removed since the last order (not below 0).
    pub cart_value: f64,
    /// Latest add to the current cart.
    pub last_cart_add: Option<EventTime>,
    /// The current cart has value and its last add is `cart_abandon_hours` old.
    pub cart_abandoned: bool,
    /// Value of the cart if abandoned, else 0.
    pub abandoned_cart_value: f64,
    /// When the current cart counts as abandoned if nothing happens (a timer).
    pub cart_abandon_at: Option<EventTime>,
    /// When the current cart's oldest line leaves the activity window if
    /// nothing happens (a timer: the cart's value may change then).
    pub cart_expire_at: Option<EventTime>,
    /// Latest event of any kind.
    pub last_seen: Option<EventTime>,
}

impl Features {
    /// Orders in the window of `days`, if configured.
    pub fn orders_in(&self, days: u32) -> Option<u32> {
        self.order_windows.iter().find(|w| w.days == days).map(|w| w.orders)
    }

    /// Named numeric values, for change records ("the values that decided"):
    /// those kept per event, so a replay gives the same values.
    pub fn to_map(&self) -> BTreeMap<String, f64> {
        let mut m = BTreeMap::new();
        for w in &self.order_windows {
            m.insert(format!("orders_{}d", w.days), f64::from(w.orders));
            m.insert(format!("revenue_{}d", w.days), w.revenue);
        }
        // Click counts and mixes are merged per micro-batch, so mid-batch
        // they depend on where the batch ends: change records leave them out
        // (sessions and the cart are kept per event).
        for w in &self.activity_windows {
            m.insert(format!("sessions_{}d", w.days), f64::from(w.sessions));
        }
        m.insert("lifetime_orders".to_owned(), f64::from(self.lifetime_orders));
        m.insert("cart_value".to_owned(), round2(self.cart_value));
        let optional = [
            ("avg_order_value", self.avg_order_value),
            ("interpurchase_mean_days", self.interpurchase_mean_days),
            ("interpurchase_last_gap_days", self.interpurchase_last_gap_days),
            ("discount_share", self.discount_share),
            ("avg_discount", self.avg_discount),
            ("days_since_last_order", self.days_since_last_order),
            ("tenure_days", self.tenure_days),
        ];
        m.extend(optional.into_iter().filter_map(|(k, v)| Some((k.to_owned(), round2(v?)))));
        m
    }
}

/// Grows a per-customer list by a quarter (at least 2) instead of doubling:
/// millions of short lists, so slack is most of their cost.
fn grow_gently<T>(v: &mut Vec<T>) {
    if v.len() == v.capacity() {
        v.reserve_exact((v.len() / 4).max(2));
    }
}

/// A day since the epoch in the 16 bits the per-day lists keep (clamped:
/// decoded event times lie far inside 1970–2149).
fn day16(day: i64) -> u16 {
    u16::try_from(day.clamp(0, i64::from(u16::MAX))).unwrap_or(u16::MAX)
}

/// The first millisecond of a day since the epoch.
fn start_of_day(day: i64) -> EventTime {
    EventTime::from_millis(day.saturating_mul(DAY_MS))
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// Adds one to `key`'s count in `counts`.
fn count_in<K: PartialEq>(counts: &mut Vec<(K, u32)>, key: K) {
    match counts.iter_mut().find(|(k, _)| *k == key) {
        Some((_, n)) => *n += 1,
        None => counts.push((key, 1)),
    }
}

/// The key with the largest count; ties go to the smallest key.
fn most_frequent<K: Ord + Clone>(counts: impl IntoIterator<Item = (K, u32)>) -> Option<(K, u32)> {
    counts.into_iter().filter(|(_, n)| *n > 0).fold(None, |best: Option<(K, u32)>, (k, n)| match best {
        Some((bk, bn)) if bn > n || (bn == n && bk <= k) => Some((bk, bn)),
        _ => Some((k, n)),
    })
}

impl CustomerState {
    /// Applies one order event. Returns false when it changed nothing: a
    /// repeated `placed`, or an order older than the longest order window
    /// relative to the customer's latest event.
    pub fn apply_order(
        &mut self,
        row: &OrderRow<'_>,
        config: &FeaturesConfig,
        dict: &mut Dictionaries,
    ) -> bool {
        let retention = config.order_retention_days();
        // An order older than the longest window, relative to what we have
        // already seen of this customer (or compacted them at), may be one we
        // folded away: applying it could count it twice, so it is refused (the
        // caller counts it as late).
        if self.horizon_day().is_some_and(|h| row.event_time.day() < h - retention) {
            return false;
        }
        self.touch(row.event_time);
        let id = I48::new(xxhash_rust::xxh3::xxh3_64(row.order_id.as_bytes()) as i64 >> 16);
        let placed = row.status == OrderStatus::Placed;
        let entry = |flags: u8, dict: &mut Dictionaries| OrderEntry {
            id,
            at: row.event_time.into(),
            cents: I48::new(if placed { Money::from_units(row.total).0 } else { 0 }),
            discount: if placed {
                i32::try_from(Money::from_units(row.discount_amount).0).unwrap_or(i32::MAX)
            } else {
                0
            }
            .to_le_bytes(),
            category: row.primary_category.map_or(NONE, |c| dict.categories.intern(c)),
            payment: row.payment_method.map_or(0, |p| dict.payments.intern(p) as u8),
            flags,
        };
        let existing = self.orders.iter_mut().find(|o| o.id == id);
        let changed = match (placed, existing) {
            (true, Some(e)) if e.flags & PLACED != 0 => false,
            (true, Some(_)) => {
                // The cancellation came first: the order is now known, and
                // stays void.
                self.orders.retain(|o| o.id != id);
                let e = entry(PLACED | VOIDED, dict);
                self.insert_order(e, config.max_orders_kept);
                true
            }
            (true, None) => {
                let e = entry(PLACED, dict);
                self.insert_order(e, config.max_orders_kept);
                true
            }
            (false, Some(e)) => {
                let was = e.flags;
                e.flags |= VOIDED;
                was != e.flags
            }
            (false, None) => {
                let e = entry(VOIDED, dict);
                self.insert_order(e, config.max_orders_kept);
                true
            }
        };
        if placed {
            self.last_placed = Some(self.last_placed.map_or(row.event_time, |l| l.max(row.event_time)));
            // Placing an order closes the cart: adds before it are done.
            self.cart.retain(|l| l.at.time() > row.event_time);
        }
        self.expire(row.event_time, config);
        changed
    }

    fn insert_order(&mut self, o: OrderEntry, max_kept: u32) {
        let t = o.time();
        let at = self.orders.partition_point(|e| e.time() <= t);
        if self.orders.len() < max_kept as usize {
            grow_gently(&mut self.orders);
            self.orders.insert(at, o);
        } else if at == 0 {
            // Older than every order kept one by one: straight to its day.
            self.fold_into_day(&o);
        } else {
            let oldest = self.orders.remove(0);
            self.fold_into_day(&oldest);
            self.orders.insert(at - 1, o);
        }
    }

    /// Adds a net order to its day's totals (a voided one counts nothing).
    fn fold_into_day(&mut self, o: &OrderEntry) {
        if !o.counts() {
            return;
        }
        self.folded_first_order = Some(self.folded_first_order.map_or(o.time(), |f| f.min(o.time())));
        let day = day16(o.time().day());
        let at = self.order_days.partition_point(|d| d.day < day);
        if self.order_days.get(at).is_none_or(|d| d.day != day) {
            let zero = I48::new(0);
            let empty =
                OrderDay { day, orders: 0, discounted: 0, cents: zero, discount_cents: zero, last: o.at };
            self.order_days.insert(at, empty);
        }
        if let Some(d) = self.order_days.get_mut(at) {
            d.orders = d.orders.saturating_add(1);
            d.cents = I48::new(d.cents.get().saturating_add(o.amount().0));
            if o.discount_cents() > 0 {
                d.discounted = d.discounted.saturating_add(1);
                d.discount_cents =
                    I48::new(d.discount_cents.get().saturating_add(i64::from(o.discount_cents())));
            }
            d.last = d.last().max(o.time()).into();
        }
    }

    /// Applies one click. Returns false for a repeated event id (within the
    /// customer's last 8 clicks), which changes nothing.
    pub fn apply_click(&mut self, row: &ClickRow<'_>, config: &FeaturesConfig) -> bool {
        let id = xxhash_rust::xxh3::xxh3_64(row.event_id.as_bytes()) as u32;
        if self.recent_clicks.contains(&id) {
            return false;
        }
        let slot = usize::from(self.recent_next) % RECENT_CLICK_IDS;
        self.recent_clicks[slot] = id;
        self.recent_next = ((slot + 1) % RECENT_CLICK_IDS) as u8;
        let t = row.event_time;
        self.touch(t);
        self.add_to_session(t, i64::from(config.session_gap_minutes) * 60_000);
        self.merge_day(t.day(), &DayCounts::of_click(row), config);
        let sign = match row.event_type {
            ClickEventType::AddToCart => 1,
            ClickEventType::RemoveFromCart => -1,
            _ => 0,
        };
        // A cart line after the last order placed; an older one belongs to a
        // cart that order closed.
        if sign != 0 && self.last_placed.is_none_or(|p| t > p) {
            let cents = i32::try_from(Money::from_units(row.price.unwrap_or(0.0)).0).unwrap_or(i32::MAX);
            let at = self.cart.partition_point(|l| l.at.time() <= t);
            grow_gently(&mut self.cart);
            self.cart.insert(at, CartLine { at: t.into(), cents: sign * cents, add: sign > 0 });
            if self.cart.len() > CART_LINES {
                self.cart.remove(0);
            }
        }
        self.expire(t, config);
        true
    }

    /// Adds a click's counts to its day's bucket; a day older than the
    /// activity window is dropped.
    fn merge_day(&mut self, day: i64, counts: &DayCounts, config: &FeaturesConfig) {
        // A late click of a compacted customer must not bring a day out of
        // every window back.
        let horizon = self.horizon_day().map_or(i64::MIN, |h| h - config.activity_retention_days());
        if day < horizon {
            return;
        }
        let day = day16(day);
        let at = self.activity.partition_point(|a| a.day < day);
        if self.activity.get(at).is_none_or(|a| a.day != day) {
            let empty = DayActivity {
                day,
                page_views: 0,
                product_views: 0,
                searches: 0,
                add_to_cart: 0,
                dayparts: [0; 4],
                devices: [0; 5],
            };
            grow_gently(&mut self.activity);
            self.activity.insert(at, empty);
        }
        if let Some(b) = self.activity.get_mut(at) {
            let add = |n: &mut u16, k: u32| *n = n.saturating_add(u16::try_from(k).unwrap_or(u16::MAX));
            let add8 = |n: &mut u8, k: u32| *n = n.saturating_add(u8::try_from(k).unwrap_or(u8::MAX));
            add(&mut b.page_views, counts.page_views);
            add(&mut b.product_views, counts.product_views);
            add(&mut b.searches, counts.searches);
            add(&mut b.add_to_cart, counts.add_to_cart);
            for (n, k) in b.dayparts.iter_mut().zip(counts.dayparts) {
                add8(n, k);
            }
            for (n, k) in b.devices.iter_mut().zip(counts.devices) {
                add8(n, k);
            }
        }
    }

    /// Puts a click into the session it extends, merging the two sessions it
    /// bridges, or opens a new one.
    fn add_to_session(&mut self, t: EventTime, gap_ms: i64) {
        let at = self.sessions.partition_point(|s| s.start() <= t);
        let joins_left =
            at > 0 && self.sessions.get(at - 1).is_some_and(|s| t.millis() - s.end().millis() <= gap_ms);
        let joins_right = self.sessions.get(at).is_some_and(|s| s.start().millis() - t.millis() <= gap_ms);
        match (joins_left, joins_right) {
            (true, true) => {
                let right = self.sessions.remove(at);
                if let Some(left) = self.sessions.get_mut(at - 1) {
                    left.end = left.end().max(right.end()).into();
                }
            }
            (true, false) => {
                if let Some(left) = self.sessions.get_mut(at - 1) {
                    left.end = left.end().max(t).into();
                }
            }
            (false, true) => {
                if let Some(right) = self.sessions.get_mut(at) {
                    right.start = t.into();
                }
            }
            (false, false) => {
                grow_gently(&mut self.sessions);
                self.sessions.insert(at, Session { start: t.into(), end: t.into() });
            }
        }
    }

    /// Rewrites the dictionary ids this state refers to (state restored
    /// into a process whose dictionaries gave the same names other ids):
    /// `categories(old)` and `payments(old)` are the new ids.
    pub fn remap_names(&mut self, categories: impl Fn(u16) -> u16, payments: impl Fn(u8) -> u8) {
        for o in &mut self.orders {
            o.category = categories(o.category);
            o.payment = payments(o.payment);
        }
    }

    /// Latest event time of any kind applied to this customer.
    pub fn last_seen(&self) -> Option<EventTime> {
        self.last_seen
    }

    /// The day the windows are cut at: the latest event's, or the
    /// compaction's if later (what came before it may have been folded).
    fn horizon_day(&self) -> Option<i64> {
        self.last_seen.map(|seen| seen.day().max(i64::from(self.compacted_day)))
    }

    fn touch(&mut self, t: EventTime) {
        self.last_seen = Some(self.last_seen.map_or(t, |s| s.max(t)));
    }

    /// Folds orders and drops activity that fell out of every window as of `now`.
    fn expire(&mut self, now: EventTime, config: &FeaturesConfig) {
        let order_horizon = now.day() - config.order_retention_days();
        let folded = self.orders.partition_point(|o| o.time().day() < order_horizon);
        let orders =
            self.orders.drain(..folded).filter(OrderEntry::counts).map(|o| (1, o.amount(), o.time()));
        let old_days = self.order_days.partition_point(|d| i64::from(d.day) < order_horizon);
        let days = self.order_days.drain(..old_days).map(|d| (d.orders, Money(d.cents.get()), d.last()));
        for (n, amount, t) in days.chain(orders).collect::<Vec<_>>() {
            self.folded_orders = self.folded_orders.saturating_add(n);
            self.folded_revenue = self.folded_revenue.plus(amount.0);
            self.folded_last_order = Some(self.folded_last_order.map_or(t, |l| l.max(t)));
            self.folded_first_order = Some(self.folded_first_order.map_or(t, |f| f.min(t)));
        }
        let click_horizon = now.day() - config.activity_retention_days();
        let old = self.activity.partition_point(|a| i64::from(a.day) < click_horizon);
        self.activity.drain(..old);
        // A day of margin: a session gap is at most a day (config check).
        let ended = self.sessions.partition_point(|s| s.end().day() < click_horizon - 1);
        self.sessions.drain(..ended);
        let old = self.cart.partition_point(|l| l.at.time().day() <= click_horizon);
        self.cart.drain(..old);
    }

    /// When this customer, if no event of theirs comes, holds nothing that
    /// any window shows again: a day past the longest window after their
    /// latest event (the sessions' day of margin included). `None` when
    /// there is nothing to compact.
    pub fn compact_due(&self, config: &FeaturesConfig) -> Option<EventTime> {
        let longest = config.order_retention_days().max(config.activity_retention_days());
        self.last_seen.filter(|_| !self.is_empty()).map(|seen| start_of_day(seen.day() + longest + 2))
    }

    /// True when compacted and nothing came into a window since.
    pub fn is_compacted(&self) -> bool {
        self.compacted_day > 0 && self.is_empty()
    }

    /// Nothing in any list: no order, day, session or cart line.
    fn is_empty(&self) -> bool {
        self.orders.is_empty()
            && self.order_days.is_empty()
            && self.activity.is_empty()
            && self.sessions.is_empty()
            && self.cart.is_empty()
    }

    /// Keeps of a silent customer only what later evaluations read: orders
    /// fold into the lifetime totals, clicks, sessions and the cart go, and
    /// the lists give their memory back. Call at or after
    /// [`CustomerState::compact_due`]: features as of `now` or later are
    /// the same as without compacting. Orders more than the longest window
    /// older than `now` are then refused, as after an event at `now`.
    pub fn compact(&mut self, now: EventTime, config: &FeaturesConfig) {
        self.expire(now, config);
        self.orders.shrink_to_fit();
        self.order_days.shrink_to_fit();
        self.activity.shrink_to_fit();
        self.sessions.shrink_to_fit();
        self.cart.shrink_to_fit();
        // Day 0 means never; a compaction on 1970-01-01 counts as day 1.
        self.compacted_day = self.compacted_day.max(day16(now.day()).max(1));
    }

    /// When the earliest net order counted in the window of `days` as of
    /// `now` leaves it (its time + `days`: a window holds the orders after
    /// `now − days`), if any. A day folded into totals leaves with its
    /// latest order, as it counts.
    pub fn next_window_exit(&self, now: EventTime, days: u32) -> Option<EventTime> {
        let from = now.plus_days(-f64::from(days));
        let day = self.order_days.iter().map(OrderDay::last).find(|t| *t > from && *t <= now);
        let start = self.orders.partition_point(|o| o.time() <= from);
        let kept =
            self.orders[start..].iter().find(|o| o.counts()).map(OrderEntry::time).filter(|t| *t <= now);
        let first = [day, kept].into_iter().flatten().min()?;
        Some(first.plus_days(f64::from(days)))
    }

    /// When the earliest session counted in the activity window of `days` as
    /// of `now` leaves it (the start of the day `days` after the day it
    /// started: windows count sessions by the day they started), if any.
    pub fn next_session_exit(&self, now: EventTime, days: u32) -> Option<EventTime> {
        let from = now.day() - i64::from(days);
        let first = self.sessions.iter().map(Session::start).find(|s| s.day() > from && *s <= now)?;
        Some(start_of_day(first.day() + i64::from(days)))
    }

    /// When the earliest day of clicks counted in the activity window of
    /// `days` as of `now` leaves it (the start of the day `days` after it),
    /// if any.
    pub fn next_activity_exit(&self, now: EventTime, days: u32) -> Option<EventTime> {
        let (today, from) = (now.day(), now.day() - i64::from(days));
        let first = self.activity.iter().map(|a| i64::from(a.day)).find(|d| *d > from && *d <= today)?;
        Some(start_of_day(first + i64::from(days)))
    }

    /// The net orders placed in `[since, now]` that followed an earlier net
    /// order, latest first, each with the one before it: what a rule on the
    /// silence before an order reads ("ordered again after 200 days").
    /// Exact while the customer has at most `max_orders_kept` orders in the
    /// longest window; past that, an order before the kept ones is known by
    /// its day's latest order.
    pub fn returns(&self, since: EventTime, now: EventTime) -> Vec<OrderReturn> {
        let net = || self.orders.iter().filter(|o| o.counts()).map(OrderEntry::time).filter(|t| *t <= now);
        let before_kept = self.order_days.last().map(OrderDay::last).max(self.folded_last_order);
        let older = self.order_days.iter().map(|d| d.orders).sum::<u32>() + self.folded_orders;
        let mut position = u32::try_from(net().count()).unwrap_or(u32::MAX);
        let mut out = Vec::new();
        let mut later = net().rev().peekable();
        while let Some(at) = later.next().filter(|t| *t >= since) {
            position -= 1;
            if let Some(previous) = later.peek().copied().or(before_kept) {
                out.push(OrderReturn { at, previous, orders_before: older + position });
            }
        }
        out
    }

    /// Feature values as of `now`.
    pub fn features(&self, now: EventTime, config: &FeaturesConfig, dict: &Dictionaries) -> Features {
        self.features_reading(now, config, Some(dict), true)
    }

    /// The features segments and change records read, as of `now`: the
    /// descriptive ones (click counts, categories, payment, device, time of
    /// day) are left at their defaults. Cheaper: it runs several times per
    /// event.
    pub fn segment_features(&self, now: EventTime, config: &FeaturesConfig) -> Features {
        self.features_reading(now, config, None, false)
    }

    /// [`CustomerState::segment_features`] with the order-based names too
    /// (top category and its share, categories bought, preferred payment):
    /// for rules that read a category. Click counts stay at their defaults.
    pub fn segment_features_named(
        &self,
        now: EventTime,
        config: &FeaturesConfig,
        dict: &Dictionaries,
    ) -> Features {
        self.features_reading(now, config, Some(dict), false)
    }

    /// Features as of `now` with what a reader needs: with `names`, the
    /// order-based names; with `clicks`, the click counts, devices and parts
    /// of the day (the rest is always there).
    pub fn features_reading(
        &self,
        now: EventTime,
        config: &FeaturesConfig,
        names: Option<&Dictionaries>,
        clicks: bool,
    ) -> Features {
        // One pass over the orders kept, sorted by time: the windows, the
        // lifetime figures, and the longest window's discounts, gaps,
        // categories and payments.
        // (days, from, orders, revenue) per window; turned into the
        // `OrderWindow`s in place at the end (one allocation, on a hot path).
        let mut windows: Vec<(u32, EventTime, u32, Money)> = config
            .order_windows_days
            .iter()
            .map(|&days| (days, now.plus_days(-f64::from(days)), 0, Money(0)))
            .collect();
        let year_from = now.plus_days(-(config.order_retention_days() as f64));
        let (mut live_count, mut live_revenue, mut last_live) = (0u32, Money(0), None);
        let (mut year_orders, mut discounted, mut discount_sum) = (0u32, 0u32, 0i64);
        let mut last_two: (Option<EventTime>, Option<EventTime>) = (None, None);
        // Few distinct ones per customer: a list searched in place is
        // cheaper than a map on every reading.
        let mut categories: Vec<(u16, u32)> = Vec::new();
        let mut payments: Vec<(u8, u32)> = Vec::new();
        // Days folded out of the orders kept one by one (older than all of
        // them): each counts as placed at its latest order.
        for d in self.order_days.iter().filter(|d| d.last() <= now) {
            let (t, cents) = (d.last(), d.cents.get());
            (live_count, live_revenue, last_live) =
                (live_count + d.orders, live_revenue.plus(cents), last_live.max(Some(t)));
            for (_, _, n, revenue) in windows.iter_mut().filter(|(_, from, _, _)| t > *from) {
                (*n, *revenue) = (*n + d.orders, revenue.plus(cents));
            }
            if t > year_from {
                year_orders += d.orders;
                discounted += d.discounted;
                discount_sum += d.discount_cents.get();
            }
        }
        for o in self.orders.iter().filter(|o| o.counts()) {
            let t = o.time();
            if t > now {
                break;
            }
            let cents = o.amount().0;
            (live_count, live_revenue, last_live) =
                (live_count + 1, live_revenue.plus(cents), last_live.max(Some(t)));
            for (_, _, n, revenue) in windows.iter_mut().filter(|(_, from, _, _)| t > *from) {
                (*n, *revenue) = (*n + 1, revenue.plus(cents));
            }
            if t <= year_from {
                continue;
            }
            year_orders += 1;
            if o.discount_cents() > 0 {
                discounted += 1;
                discount_sum += i64::from(o.discount_cents());
            }
            last_two = (last_two.1, Some(t));
            if names.is_some() && o.category != NONE {
                count_in(&mut categories, o.category);
            }
            if names.is_some() && o.payment != 0 {
                count_in(&mut payments, o.payment);
            }
        }
        let order_windows = windows
            .into_iter()
            .map(|(days, _, orders, revenue)| OrderWindow { days, orders, revenue: revenue.units() })
            .collect();
        let lifetime_orders = live_count + self.folded_orders;
        let lifetime_revenue = live_revenue.plus(self.folded_revenue.0);
        let last_order = last_live.or(self.folded_last_order);
        let with_category: u32 = categories.iter().map(|(_, n)| n).sum();
        let (top, preferred_payment) = match names {
            Some(dict) => (
                most_frequent(categories.iter().filter_map(|(id, n)| Some((dict.categories.name(*id)?, *n)))),
                most_frequent(
                    payments.iter().filter_map(|(id, n)| Some((dict.payments.name(u16::from(*id))?, *n))),
                )
                .map(|(name, _)| name),
            ),
            None => (None, None),
        };

        // Click activity windows.
        let today = now.day();
        // The days are kept in order, one entry each: a window is a slice.
        let recent = |days: i64| {
            let from = today - days;
            let first = self.activity.partition_point(|a| i64::from(a.day) <= from);
            let after = self.activity.partition_point(|a| i64::from(a.day) <= today);
            self.activity.get(first..after).unwrap_or_default().iter()
        };
        let activity_windows = config
            .activity_windows_days
            .iter()
            .map(|&days| {
                let from = today - i64::from(days);
                // Sessions that started on the window's days (kept in order
                // of their start): compared in milliseconds, not converted
                // to days one by one.
                let (first, after) = (start_of_day(from + 1), start_of_day(today + 1));
                let started_before = |t: EventTime| self.sessions.partition_point(|s| s.start() < t);
                let mut w = ActivityWindow {
                    days,
                    sessions: started_before(after).saturating_sub(started_before(first)) as u32,
                    ..ActivityWindow::default()
                };
                // One pass over the window's days for the four counts.
                for a in recent(i64::from(days)).filter(|_| clicks) {
                    w.page_views += u32::from(a.page_views);
                    w.product_views += u32::from(a.product_views);
                    w.searches += u32::from(a.searches);
                    w.add_to_cart += u32::from(a.add_to_cart);
                }
                w
            })
            .collect();
        let (mut dayparts, mut devices, mut weekend) = ([0u32; 4], [0u32; 5], 0u32);
        for a in recent(config.activity_retention_days()).filter(|_| clicks) {
            for (sum, n) in dayparts.iter_mut().zip(a.dayparts) {
                *sum += u32::from(n);
            }
            for (sum, n) in devices.iter_mut().zip(a.devices) {
                *sum += u32::from(n);
            }
            // 1970-01-01 was a Thursday: day + 3 counts from a Monday.
            if (i64::from(a.day) + 3).rem_euclid(7) >= 5 {
                weekend += a.dayparts.iter().map(|n| u32::from(*n)).sum::<u32>();
            }
        }
        let clicks: u32 = dayparts.iter().sum();
        let share = |n: u32| f64::from(n) / f64::from(clicks);

        // The current cart, as of now.
        let cart_from = today - config.activity_retention_days();
        let cart_first = start_of_day(cart_from + 1);
        let lines = || self.cart.iter().filter(|l| (cart_first..=now).contains(&l.at.time()));
        let cart_value = Money(lines().map(|l| i64::from(l.cents)).sum::<i64>().max(0)).units();
        let last_cart_add = lines().filter(|l| l.add).map(|l| l.at.time()).max();
        let abandon_ms = i64::from(config.cart_abandon_hours) * HOUR_MS;
        let cart_abandon_at = last_cart_add.filter(|_| cart_value > 0.0).map(|t| t.plus_millis(abandon_ms));
        let cart_abandoned = cart_abandon_at.is_some_and(|at| at <= now);
        // The cart's value changes whenever one of its lines leaves the
        // window, not only the last: the earliest line's exit is the next.
        let cart_expire_at = lines()
            .map(|l| l.at.time().day())
            .min()
            .map(|day| start_of_day(day + config.activity_retention_days()));

        let first_kept = self.orders.iter().find(|o| o.counts()).map(OrderEntry::time);
        let first_order = [self.folded_first_order, first_kept].into_iter().flatten().min();
        Features {
            as_of: Some(now),
            order_windows,
            lifetime_orders,
            avg_order_value: (lifetime_orders > 0)
                .then(|| lifetime_revenue.units() / f64::from(lifetime_orders)),
            last_order,
            days_since_last_order: last_order.map(|l| now.days_since(l)),
            first_order,
            tenure_days: first_order.map(|f| now.days_since(f)),
            activity_windows,
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
            discount_share: (year_orders > 0).then(|| f64::from(discounted) / f64::from(year_orders)),
            avg_discount: (discounted > 0).then(|| Money(discount_sum).units() / f64::from(discounted)),
            top_category_share: top.as_ref().map(|(_, n)| f64::from(*n) / f64::from(with_category)),
            top_category: top.map(|(name, _)| name),
            categories_bought: categories.len() as u32,
            preferred_payment,
            preferred_device: most_frequent(DEVICES.iter().copied().zip(devices)).map(|(d, _)| d),
            daypart_shares: (clicks > 0).then(|| dayparts.map(share)),
            weekend_share: (clicks > 0).then(|| share(weekend)),
            cart_value,
            last_cart_add,
            cart_abandoned,
            abandoned_cart_value: if cart_abandoned { cart_value } else { 0.0 },
            cart_abandon_at,
            cart_expire_at,
            last_seen: self.last_seen,
        }
    }

    /// Approximate heap and inline bytes of this state (for the state-size metric).
    pub fn approx_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.orders.capacity() * std::mem::size_of::<OrderEntry>()
            + self.order_days.capacity() * std::mem::size_of::<OrderDay>()
            + self.activity.capacity() * std::mem::size_of::<DayActivity>()
            + self.sessions.capacity() * std::mem::size_of::<Session>()
            + self.cart.capacity() * std::mem::size_of::<CartLine>()
    }
}

#[cfg(test)]
mod layout {
    use super::*;

    #[test]
    fn i48_keeps_every_time_and_amount_events_can_carry() {
        let cases = [0, 1, -1, 946_684_800_000, 4_102_444_800_000, 100_000_000_000, -100_000_000_000];
        for v in cases {
            assert_eq!(I48::new(v).get(), v, "{v}");
        }
        assert_eq!(I48::new(i64::MAX).get(), I48::MAX, "clamped, not wrapped");
        assert_eq!(I48::new(i64::MIN).get(), -I48::MAX - 1, "clamped, not wrapped");
        let t = EventTime::from_millis(1_735_689_600_123);
        assert_eq!(I48::from(t).time(), t);
    }

    #[test]
    fn per_customer_list_entries_keep_their_documented_sizes() {
        // The state-memory benchmark's figure rests on these.
        assert_eq!(std::mem::size_of::<OrderEntry>(), 26);
        assert_eq!(std::mem::size_of::<OrderDay>(), 28);
        assert_eq!(std::mem::size_of::<DayActivity>(), 20);
        assert_eq!(std::mem::size_of::<Session>(), 12);
        assert_eq!(std::mem::size_of::<CartLine>(), 12);
    }
}
