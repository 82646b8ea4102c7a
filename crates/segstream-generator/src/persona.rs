use rand::Rng;
use serde::Serialize;

/// The kind of customer, which drives the simulated behaviour. This is the
/// ground truth a demo or test can compare segments against.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Persona {
    /// Visits often, orders every few weeks, rarely needs a discount.
    Loyal,
    /// Searches a lot, orders mostly with a discount.
    BargainHunter,
    /// Orders once soon after sign-up, keeps browsing less and less.
    OneTimeBuyer,
    /// Browses and fills carts, never orders.
    Browser,
    /// Orders regularly, then stops ordering and visits rarely.
    Churning,
    /// Orders, goes silent for longer than the churn horizon, comes back.
    Reactivating,
}

impl Persona {
    /// All personas, in summary order.
    pub const ALL: [Persona; 6] = [
        Self::Loyal,
        Self::BargainHunter,
        Self::OneTimeBuyer,
        Self::Browser,
        Self::Churning,
        Self::Reactivating,
    ];

    /// Name used in summaries.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Loyal => "loyal",
            Self::BargainHunter => "bargain_hunter",
            Self::OneTimeBuyer => "one_time_buyer",
            Self::Browser => "browser",
            Self::Churning => "churning",
            Self::Reactivating => "reactivating",
        }
    }

    /// Share of the population (sums to 1).
    const fn share(self) -> f64 {
        match self {
            Self::Loyal => 0.22,
            Self::BargainHunter => 0.15,
            Self::OneTimeBuyer => 0.18,
            Self::Browser => 0.20,
            Self::Churning => 0.15,
            Self::Reactivating => 0.10,
        }
    }

    pub(crate) fn draw(rng: &mut impl Rng) -> Self {
        let mut x: f64 = rng.random();
        for p in Self::ALL {
            if x < p.share() {
                return p;
            }
            x -= p.share();
        }
        Self::Reactivating
    }
}

/// Behaviour parameters of one customer.
#[derive(Clone, Debug)]
pub(crate) struct Profile {
    pub(crate) persona: Persona,
    pub(crate) signup_day: u32,
    pub(crate) device: &'static str,
    pub(crate) categories: [&'static str; 2],
    pub(crate) payment: &'static str,
    /// Hour of day the customer is most active (0-23).
    pub(crate) peak_hour: u32,
    /// Expected sessions per day while active.
    pub(crate) visit_rate: f64,
    /// Mean days between orders (0 = never orders).
    pub(crate) order_every_days: f64,
    /// Mean basket value.
    pub(crate) basket: f64,
    /// Probability an order carries a discount.
    pub(crate) discount_share: f64,
    /// Days in which the customer does not order (churn / dormancy), as [from, to).
    pub(crate) no_orders: Option<(u32, u32)>,
    /// Days in which the customer does not visit at all.
    pub(crate) no_visits: Option<(u32, u32)>,
}

const DEVICES: [&str; 4] = ["mobile", "desktop", "tablet", "app"];
const CATEGORIES: [&str; 8] =
    ["shoes", "apparel", "electronics", "home", "beauty", "sports", "books", "toys"];
const PAYMENTS: [&str; 4] = ["card", "paypal", "klarna", "apple_pay"];

impl Profile {
    pub(crate) fn draw(rng: &mut impl Rng, days: u32) -> Self {
        let persona = Persona::draw(rng);
        // Customers arrive during the first half of the period, so most have a history.
        let signup_day = rng.random_range(0..(days / 2).max(1));
        let pick = |rng: &mut dyn rand::RngCore, items: &[&'static str]| {
            items[rng.next_u32() as usize % items.len()]
        };
        let device = if rng.random_bool(0.55) { "mobile" } else { pick(rng, &DEVICES) };
        let categories = [pick(rng, &CATEGORIES), pick(rng, &CATEGORIES)];
        let payment = pick(rng, &PAYMENTS);
        let peak_hour = [0, 2, 9, 12, 13, 19, 20, 21, 22, 23][rng.random_range(0..10)];
        let jitter = |rng: &mut dyn rand::RngCore, base: f64| {
            base * (0.7 + 0.6 * (rng.next_u32() as f64 / u32::MAX as f64))
        };
        let mut p = Profile {
            persona,
            signup_day,
            device,
            categories,
            payment,
            peak_hour,
            visit_rate: 0.3,
            order_every_days: 0.0,
            basket: 60.0,
            discount_share: 0.2,
            no_orders: None,
            no_visits: None,
        };
        match persona {
            Persona::Loyal => {
                p.visit_rate = jitter(rng, 0.45);
                p.order_every_days = jitter(rng, 24.0);
                p.basket = jitter(rng, 85.0);
                p.discount_share = 0.1;
            }
            Persona::BargainHunter => {
                p.visit_rate = jitter(rng, 0.5);
                p.order_every_days = jitter(rng, 40.0);
                p.basket = jitter(rng, 40.0);
                p.discount_share = 0.85;
            }
            Persona::OneTimeBuyer => {
                p.visit_rate = jitter(rng, 0.2);
                // A single order, placed in the first days (see Generator).
                p.order_every_days = 1.0e9;
                p.basket = jitter(rng, 55.0);
            }
            Persona::Browser => {
                p.visit_rate = jitter(rng, 0.3);
            }
            Persona::Churning => {
                p.visit_rate = jitter(rng, 0.4);
                p.order_every_days = jitter(rng, 28.0);
                p.basket = jitter(rng, 70.0);
                let stop = signup_day + rng.random_range(60..160);
                p.no_orders = Some((stop, u32::MAX));
            }
            Persona::Reactivating => {
                p.visit_rate = jitter(rng, 0.35);
                p.order_every_days = jitter(rng, 26.0);
                p.basket = jitter(rng, 65.0);
                let from = signup_day + rng.random_range(40..90);
                let to = from + rng.random_range(200..280);
                p.no_orders = Some((from, to));
                // Mostly gone: a rare visit during the dormancy.
                p.no_visits = Some((from + 10, to - 15));
            }
        }
        p
    }

    pub(crate) fn may_order(&self, day: u32) -> bool {
        self.order_every_days > 0.0 && !self.no_orders.is_some_and(|(a, b)| day >= a && day < b)
    }

    pub(crate) fn visits_on(&self, day: u32) -> bool {
        day >= self.signup_day && !self.no_visits.is_some_and(|(a, b)| day >= a && day < b)
    }
}
