//! Behaviour segments from the definitions file: discount hunter, category
//! fan (one segment per top category), big spender, frequent visitor,
//! one-time buyer, mobile-first, night owl and high-intent browser. Each
//! reads features that are exact per event (orders, sessions, the first
//! order, the day's click counts), so a replay gives the same changes; a
//! section left out turns its segment off.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};

use segstream_events::EventTime;
use segstream_features::{CustomerState, Features};
use serde::Deserialize;

use crate::names::intern;

/// `[behaviour.discount_hunter]`: most orders carried a discount.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DiscountHunter {
    /// Net orders in the longest order window, at least.
    pub min_orders: u32,
    /// Share of them with a discount, at least (0–1).
    pub min_discount_share: f64,
    /// Days a customer stays in the segment at least once entered (against
    /// flapping at a threshold); 0, the default: none.
    #[serde(default)]
    pub min_dwell_days: f64,
}

/// `[behaviour.category_fan]`: most orders in one category.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CategoryFan {
    /// Net orders in the longest order window, at least.
    pub min_orders: u32,
    /// Share of them in the top category, at least (0–1).
    pub min_top_category_share: f64,
    /// Days a customer stays in the segment at least once entered (against
    /// flapping at a threshold); 0, the default: none.
    #[serde(default)]
    pub min_dwell_days: f64,
}

/// `[behaviour.big_spender]`: a high average order value.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BigSpender {
    /// Lifetime net orders, at least.
    pub min_orders: u32,
    /// Lifetime average order value, at least.
    pub min_avg_order_value: f64,
    /// Days a customer stays in the segment at least once entered (against
    /// flapping at a threshold); 0, the default: none.
    #[serde(default)]
    pub min_dwell_days: f64,
}

/// `[behaviour.frequent_visitor]`: many sessions lately.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FrequentVisitor {
    /// The activity window counted: one of `features.activity_windows_days`.
    pub window_days: u32,
    /// Sessions started in it, at least.
    pub min_sessions: u32,
    /// Days a customer stays in the segment at least once entered (against
    /// flapping at a threshold); 0, the default: none.
    #[serde(default)]
    pub min_dwell_days: f64,
}

/// `[behaviour.one_time_buyer]`: one order, and no second one yet.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OneTimeBuyer {
    /// Days since that first (and only) net order, more than.
    pub min_days_since_first_order: f64,
    /// Days a customer stays in the segment at least once entered (against
    /// flapping at a threshold); 0, the default: none.
    #[serde(default)]
    pub min_dwell_days: f64,
}

/// `[behaviour.mobile_first]`: browses on a phone.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MobileFirst {
    /// Page views in the longest activity window, at least.
    pub min_page_views: u32,
    /// Days a customer stays in the segment at least once entered (against
    /// flapping at a threshold); 0, the default: none.
    #[serde(default)]
    pub min_dwell_days: f64,
}

/// `[behaviour.night_owl]`: browses at night (UTC).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NightOwl {
    /// Page views in the longest activity window, at least.
    pub min_page_views: u32,
    /// Share of its clicks between 00:00 and 06:00 UTC, at least (0–1).
    pub min_night_share: f64,
    /// Days a customer stays in the segment at least once entered (against
    /// flapping at a threshold); 0, the default: none.
    #[serde(default)]
    pub min_dwell_days: f64,
}

/// `[behaviour.high_intent_browser]`: looks and fills the cart lately, no order.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HighIntentBrowser {
    /// The activity window counted: one of `features.activity_windows_days`.
    pub window_days: u32,
    /// Product views in it, at least.
    pub min_product_views: u32,
    /// Adds to the cart in it, at least.
    pub min_add_to_cart: u32,
    /// Days a customer stays in the segment at least once entered (against
    /// flapping at a threshold); 0, the default: none.
    #[serde(default)]
    pub min_dwell_days: f64,
}

/// The `[behaviour]` section: one optional subsection per segment.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BehaviourRules {
    /// Discount hunters.
    pub discount_hunter: Option<DiscountHunter>,
    /// Category fans.
    pub category_fan: Option<CategoryFan>,
    /// Big spenders.
    pub big_spender: Option<BigSpender>,
    /// Frequent visitors.
    pub frequent_visitor: Option<FrequentVisitor>,
    /// One-time buyers.
    pub one_time_buyer: Option<OneTimeBuyer>,
    /// Mobile-first browsers.
    pub mobile_first: Option<MobileFirst>,
    /// Night owls.
    pub night_owl: Option<NightOwl>,
    /// High-intent browsers.
    pub high_intent_browser: Option<HighIntentBrowser>,
}

/// Name of the discount-hunter segment.
pub const DISCOUNT_HUNTER: &str = "discount_hunter";
/// Prefix of the category-fan segments: `category_fan_shoes_boots` for
/// "Shoes & Boots" (lower-case words joined by `_`).
pub const CATEGORY_FAN: &str = "category_fan_";
/// Name of the big-spender segment.
pub const BIG_SPENDER: &str = "big_spender";
/// Name of the frequent-visitor segment.
pub const FREQUENT_VISITOR: &str = "frequent_visitor";
/// Name of the one-time-buyer segment.
pub const ONE_TIME_BUYER: &str = "one_time_buyer";
/// Name of the mobile-first segment.
pub const MOBILE_FIRST: &str = "mobile_first";
/// Name of the night-owl segment.
pub const NIGHT_OWL: &str = "night_owl";
/// Name of the high-intent-browser segment.
pub const HIGH_INTENT_BROWSER: &str = "high_intent_browser";

/// The rules in [`Measure::rule`] order.
const RULES: [&str; 8] = [
    DISCOUNT_HUNTER,
    "category_fan",
    BIG_SPENDER,
    FREQUENT_VISITOR,
    ONE_TIME_BUYER,
    MOBILE_FIRST,
    NIGHT_OWL,
    HIGH_INTENT_BROWSER,
];

/// One rule's reading of a customer: the segment it puts them in, if any,
/// and why (the same words whether they are in or out).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Measure {
    /// Which rule, its index in [`RULES`].
    pub(crate) rule: u8,
    /// The segment the customer is in by this rule, if any.
    pub(crate) holds: Option<&'static str>,
    /// The values against the thresholds, in words.
    pub(crate) reason: String,
    /// The values and thresholds that decided.
    pub(crate) values: BTreeMap<String, f64>,
}

fn values(pairs: &[(String, f64)]) -> BTreeMap<String, f64> {
    pairs.iter().map(|(k, v)| (k.clone(), (*v * 1000.0).round() / 1000.0)).collect()
}

/// The category-fan segment of `category`, `None` when its name has no
/// letter or digit; made once per category (it is read on every
/// evaluation of a fan).
fn category_fan(category: &str) -> Option<&'static str> {
    static FANS: Mutex<BTreeMap<String, Option<&'static str>>> = Mutex::new(BTreeMap::new());
    let mut fans = FANS.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(known) = fans.get(category) {
        return *known;
    }
    let slug = category_slug(category);
    let name = (!slug.is_empty()).then(|| intern(&format!("{CATEGORY_FAN}{slug}")));
    fans.insert(category.to_owned(), name);
    name
}

/// A category as part of a segment name: lower-case letters, digits and `_`.
fn category_slug(category: &str) -> String {
    let words = category.split(|c: char| !c.is_ascii_alphanumeric()).filter(|w| !w.is_empty());
    words.map(str::to_ascii_lowercase).collect::<Vec<_>>().join("_")
}

impl BehaviourRules {
    /// Checks the thresholds against the feature settings; an error names
    /// the segment and the problem.
    pub(crate) fn check(&self, activity_windows_days: &[u32]) -> Result<(), (String, String)> {
        let share = |name: &str, key: &str, v: f64| {
            if (0.0..=1.0).contains(&v) {
                Ok(())
            } else {
                Err((name.to_owned(), format!("{key} = {v}: a share is 0 to 1")))
            }
        };
        for (rule, name) in RULES.iter().enumerate() {
            let dwell = self.min_dwell_days(rule as u8);
            if !(dwell.is_finite() && dwell >= 0.0) {
                return Err((
                    (*name).to_owned(),
                    format!("min_dwell_days = {dwell}: use 0 (none) or more days"),
                ));
            }
        }
        if let Some(r) = &self.discount_hunter {
            share(DISCOUNT_HUNTER, "min_discount_share", r.min_discount_share)?;
        }
        if let Some(r) = &self.category_fan {
            share("category_fan", "min_top_category_share", r.min_top_category_share)?;
        }
        if let Some(r) = &self.big_spender
            && !(r.min_avg_order_value.is_finite() && r.min_avg_order_value >= 0.0)
        {
            return Err((
                BIG_SPENDER.into(),
                format!("min_avg_order_value = {}: use 0 or more", r.min_avg_order_value),
            ));
        }
        let windows = [
            (FREQUENT_VISITOR, self.frequent_visitor.as_ref().map(|r| r.window_days)),
            (HIGH_INTENT_BROWSER, self.high_intent_browser.as_ref().map(|r| r.window_days)),
        ];
        for (name, days) in windows {
            if let Some(days) = days.filter(|d| !activity_windows_days.contains(d)) {
                return Err((
                    name.into(),
                    format!(
                        "window_days = {days} is not one of features.activity_windows_days {activity_windows_days:?}: use one of them or add it there"
                    ),
                ));
            }
        }
        if let Some(r) = &self.night_owl {
            share(NIGHT_OWL, "min_night_share", r.min_night_share)?;
        }
        if let Some(r) = &self.one_time_buyer
            && !(r.min_days_since_first_order.is_finite() && r.min_days_since_first_order >= 0.0)
        {
            return Err((
                ONE_TIME_BUYER.into(),
                format!("min_days_since_first_order = {}: use 0 or more days", r.min_days_since_first_order),
            ));
        }
        Ok(())
    }

    /// The minimum dwell of a rule (by index, as in [`Measure::rule`]).
    pub(crate) fn min_dwell_days(&self, rule: u8) -> f64 {
        self.dwell_if_on(rule).unwrap_or(0.0)
    }

    /// The rule's minimum dwell, `None` when it is off.
    fn dwell_if_on(&self, rule: u8) -> Option<f64> {
        match rule {
            0 => self.discount_hunter.as_ref().map(|r| r.min_dwell_days),
            1 => self.category_fan.as_ref().map(|r| r.min_dwell_days),
            2 => self.big_spender.as_ref().map(|r| r.min_dwell_days),
            3 => self.frequent_visitor.as_ref().map(|r| r.min_dwell_days),
            4 => self.one_time_buyer.as_ref().map(|r| r.min_dwell_days),
            5 => self.mobile_first.as_ref().map(|r| r.min_dwell_days),
            6 => self.night_owl.as_ref().map(|r| r.min_dwell_days),
            7 => self.high_intent_browser.as_ref().map(|r| r.min_dwell_days),
            _ => None,
        }
    }

    /// True when a rule reads the top category (the descriptive features).
    pub fn reads_categories(&self) -> bool {
        self.category_fan.is_some()
    }

    /// True when a rule reads click counts, devices or parts of the day.
    pub fn reads_clicks(&self) -> bool {
        self.mobile_first.is_some() || self.night_owl.is_some() || self.high_intent_browser.is_some()
    }

    /// Every enabled rule's reading of a customer with these features, in
    /// rule order, with no reasons or values (those cost allocations and
    /// are needed only on a change: [`BehaviourRules::explain`]).
    pub(crate) fn measures<'a>(&'a self, f: &'a Features) -> impl Iterator<Item = Measure> + 'a {
        (0..RULES.len()).filter_map(move |rule| self.measure(rule, f, false))
    }

    /// True when the rule (by index, as in [`Measure::rule`]) is in the
    /// definitions.
    pub(crate) fn is_on(&self, rule: u8) -> bool {
        self.dwell_if_on(rule).is_some()
    }

    /// One rule's reading (by index, as in [`Measure::rule`]) with its
    /// reason and values, for a change's record; `None` when it is off.
    pub(crate) fn explain(&self, rule: u8, f: &Features) -> Option<Measure> {
        self.measure(usize::from(rule), f, true)
    }

    /// One rule's reading; the reason and values only with `explain`.
    fn measure(&self, rule: usize, f: &Features, explain: bool) -> Option<Measure> {
        let (window_days, window_orders) = f.order_windows.last().map_or((0, 0), |w| (w.days, w.orders));
        let orders_key = || format!("orders_{window_days}d");
        // The device and parts of the day are over the longest activity window.
        let longest = f.activity_windows.iter().max_by_key(|w| w.days);
        let (long_days, long_views) = longest.map_or((0, 0), |w| (w.days, w.page_views));
        let explained = |reason: &dyn Fn() -> String, pairs: &dyn Fn() -> Vec<(String, f64)>| {
            if explain { (reason(), values(&pairs())) } else { (String::new(), BTreeMap::new()) }
        };
        let (holds, (reason, values)) = match rule {
            0 => {
                let r = self.discount_hunter.as_ref()?;
                let share = f.discount_share.unwrap_or(0.0);
                let holds = window_orders >= r.min_orders && share >= r.min_discount_share;
                (
                    holds.then_some(DISCOUNT_HUNTER),
                    explained(
                        &|| {
                            format!(
                                "{:.0}% of {window_orders} orders in {window_days} days carried a discount (from {:.0}% of {})",
                                share * 100.0,
                                r.min_discount_share * 100.0,
                                r.min_orders
                            )
                        },
                        &|| {
                            vec![
                                ("discount_share".into(), share),
                                (orders_key(), f64::from(window_orders)),
                                ("threshold_min_discount_share".into(), r.min_discount_share),
                                ("threshold_min_orders".into(), f64::from(r.min_orders)),
                            ]
                        },
                    ),
                )
            }
            1 => {
                let r = self.category_fan.as_ref()?;
                let share = f.top_category_share.unwrap_or(0.0);
                let category = f.top_category.as_deref().unwrap_or("no category");
                // The segment's name only for a customer the thresholds let in.
                let holds = (f.top_category.is_some()
                    && window_orders >= r.min_orders
                    && share >= r.min_top_category_share)
                    .then(|| category_fan(category))
                    .flatten();
                (
                    holds,
                    explained(
                        &|| {
                            format!(
                                "{:.0}% of {window_orders} orders in {window_days} days in {category} (from {:.0}% of {})",
                                share * 100.0,
                                r.min_top_category_share * 100.0,
                                r.min_orders
                            )
                        },
                        &|| {
                            vec![
                                ("top_category_share".into(), share),
                                (orders_key(), f64::from(window_orders)),
                                ("threshold_min_top_category_share".into(), r.min_top_category_share),
                                ("threshold_min_orders".into(), f64::from(r.min_orders)),
                            ]
                        },
                    ),
                )
            }
            2 => {
                let r = self.big_spender.as_ref()?;
                let aov = f.avg_order_value.unwrap_or(0.0);
                let holds = f.lifetime_orders >= r.min_orders && aov >= r.min_avg_order_value;
                (
                    holds.then_some(BIG_SPENDER),
                    explained(
                        &|| {
                            format!(
                                "{aov:.2} per order over {} orders (from {:.2} over {})",
                                f.lifetime_orders, r.min_avg_order_value, r.min_orders
                            )
                        },
                        &|| {
                            vec![
                                ("avg_order_value".into(), aov),
                                ("lifetime_orders".into(), f64::from(f.lifetime_orders)),
                                ("threshold_min_avg_order_value".into(), r.min_avg_order_value),
                                ("threshold_min_orders".into(), f64::from(r.min_orders)),
                            ]
                        },
                    ),
                )
            }
            3 => {
                let r = self.frequent_visitor.as_ref()?;
                let sessions =
                    f.activity_windows.iter().find(|w| w.days == r.window_days).map_or(0, |w| w.sessions);
                (
                    (sessions >= r.min_sessions).then_some(FREQUENT_VISITOR),
                    explained(
                        &|| {
                            format!("{sessions} sessions in {} days (from {})", r.window_days, r.min_sessions)
                        },
                        &|| {
                            vec![
                                (format!("sessions_{}d", r.window_days), f64::from(sessions)),
                                ("threshold_min_sessions".into(), f64::from(r.min_sessions)),
                            ]
                        },
                    ),
                )
            }
            4 => {
                let r = self.one_time_buyer.as_ref()?;
                let days = f.tenure_days.unwrap_or(0.0);
                let holds = f.lifetime_orders == 1 && days > r.min_days_since_first_order;
                (
                    holds.then_some(ONE_TIME_BUYER),
                    explained(
                        &|| {
                            format!(
                                "{} orders, the first {days:.0} days ago (one order and more than {} days)",
                                f.lifetime_orders, r.min_days_since_first_order
                            )
                        },
                        &|| {
                            vec![
                                ("lifetime_orders".into(), f64::from(f.lifetime_orders)),
                                ("days_since_first_order".into(), days),
                                ("threshold_min_days_since_first_order".into(), r.min_days_since_first_order),
                            ]
                        },
                    ),
                )
            }
            5 => {
                let r = self.mobile_first.as_ref()?;
                let device = f.preferred_device.unwrap_or("none");
                let holds = long_views >= r.min_page_views && matches!(device, "mobile" | "app");
                (
                    holds.then_some(MOBILE_FIRST),
                    explained(
                        &|| {
                            format!(
                                "most clicks of {long_days} days on {device}, {long_views} page views (mobile or app, from {})",
                                r.min_page_views
                            )
                        },
                        &|| {
                            vec![
                                (format!("page_views_{long_days}d"), f64::from(long_views)),
                                ("threshold_min_page_views".into(), f64::from(r.min_page_views)),
                            ]
                        },
                    ),
                )
            }
            6 => {
                let r = self.night_owl.as_ref()?;
                let night = f.daypart_shares.map_or(0.0, |s| s[0]);
                let holds = long_views >= r.min_page_views && night >= r.min_night_share;
                (
                    holds.then_some(NIGHT_OWL),
                    explained(
                        &|| {
                            format!(
                                "{:.0}% of clicks of {long_days} days at night (UTC), {long_views} page views (from {:.0}% and {})",
                                night * 100.0,
                                r.min_night_share * 100.0,
                                r.min_page_views
                            )
                        },
                        &|| {
                            vec![
                                ("night_share".into(), night),
                                (format!("page_views_{long_days}d"), f64::from(long_views)),
                                ("threshold_min_night_share".into(), r.min_night_share),
                                ("threshold_min_page_views".into(), f64::from(r.min_page_views)),
                            ]
                        },
                    ),
                )
            }
            7 => {
                let r = self.high_intent_browser.as_ref()?;
                let w =
                    f.activity_windows.iter().find(|w| w.days == r.window_days).cloned().unwrap_or_default();
                let ordered = f.days_since_last_order.is_some_and(|d| d <= f64::from(r.window_days));
                let holds =
                    w.product_views >= r.min_product_views && w.add_to_cart >= r.min_add_to_cart && !ordered;
                (
                    holds.then_some(HIGH_INTENT_BROWSER),
                    explained(
                        &|| {
                            format!(
                                "{} product views and {} adds to the cart in {} days, {} (from {} and {}, no order)",
                                w.product_views,
                                w.add_to_cart,
                                r.window_days,
                                if ordered { "with an order" } else { "no order" },
                                r.min_product_views,
                                r.min_add_to_cart
                            )
                        },
                        &|| {
                            vec![
                                (format!("product_views_{}d", r.window_days), f64::from(w.product_views)),
                                (format!("add_to_cart_{}d", r.window_days), f64::from(w.add_to_cart)),
                                ("days_since_last_order".into(), f.days_since_last_order.unwrap_or(-1.0)),
                                ("threshold_min_product_views".into(), f64::from(r.min_product_views)),
                                ("threshold_min_add_to_cart".into(), f64::from(r.min_add_to_cart)),
                            ]
                        },
                    ),
                )
            }
            _ => return None,
        };
        Some(Measure { rule: u8::try_from(rule).ok()?, holds, reason, values })
    }

    /// The first time after `at` a behaviour segment may change with no new
    /// event: an order leaving the longest window, a session leaving the
    /// visitor's window (only for a `visitor`: sessions leaving can only take
    /// one out), or a lone order growing old enough.
    pub(crate) fn due_after(
        &self,
        f: &Features,
        state: &CustomerState,
        at: EventTime,
        visitor: bool,
    ) -> Option<EventTime> {
        let order_window = f.order_windows.last().map(|w| w.days);
        let orders = (self.discount_hunter.is_some() || self.category_fan.is_some())
            .then(|| order_window.and_then(|days| state.next_window_exit(at, days)))
            .flatten();
        let sessions = self
            .frequent_visitor
            .as_ref()
            .filter(|_| visitor)
            .and_then(|r| state.next_session_exit(at, r.window_days));
        let lone = self
            .one_time_buyer
            .as_ref()
            .filter(|_| f.lifetime_orders == 1)
            .and_then(|r| f.first_order.map(|t| t.plus_days(r.min_days_since_first_order).plus_millis(1)))
            .filter(|t| *t > at);
        // Click days leaving the windows the click rules read; the silence
        // after an order reaching the high-intent window.
        let longest = f.activity_windows.iter().map(|w| w.days).max();
        let device = (self.mobile_first.is_some() || self.night_owl.is_some())
            .then(|| longest.and_then(|days| state.next_activity_exit(at, days)))
            .flatten();
        let intent = self.high_intent_browser.as_ref().and_then(|r| {
            let clicks = state.next_activity_exit(at, r.window_days);
            let silence = f
                .last_order
                .map(|t| t.plus_days(f64::from(r.window_days)).plus_millis(1))
                .filter(|t| *t > at);
            [clicks, silence].into_iter().flatten().min()
        });
        [orders, sessions, lone, device, intent].into_iter().flatten().min()
    }
}
