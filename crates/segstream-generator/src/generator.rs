use std::collections::BTreeMap;

use chrono::{Datelike, TimeZone, Utc};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use segstream_events::{ClickEvent, ClickEventType, CustomerId, EventTime, OrderEvent, OrderStatus};
use serde::Serialize;

use crate::persona::{Persona, Profile};

const DAY_MS: i64 = 86_400_000;

/// What to generate.
#[derive(Clone, Debug)]
pub struct GeneratorOptions {
    /// Seed: same seed, same events.
    pub seed: u64,
    /// Number of customers.
    pub customers: u32,
    /// Event time of day 0 (taken down to midnight UTC).
    pub start: EventTime,
    /// Number of days to simulate.
    pub days: u32,
}

/// One generated input event.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// For `clickstream`.
    Click(ClickEvent),
    /// For `orders`.
    Order(OrderEvent),
}

impl Event {
    /// Event time.
    pub fn time(&self) -> EventTime {
        match self {
            Self::Click(c) => c.event_time,
            Self::Order(o) => o.event_time,
        }
    }

    /// Customer.
    pub fn customer(&self) -> &CustomerId {
        match self {
            Self::Click(c) => &c.customer_id,
            Self::Order(o) => &o.customer_id,
        }
    }

    fn sort_key(&self) -> (EventTime, u8, &str) {
        match self {
            Self::Click(c) => (c.event_time, 0, c.event_id.as_str()),
            Self::Order(o) => (o.event_time, 1, o.order_id.as_str()),
        }
    }
}

/// The events of one simulated day, sorted by event time.
#[derive(Clone, Debug)]
pub struct GeneratedDay {
    /// Day index from the start.
    pub day: u32,
    /// Events of the day.
    pub events: Vec<Event>,
}

/// Ground truth of what was generated.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct Totals {
    /// Customers per persona.
    pub personas: BTreeMap<Persona, u32>,
    /// Click events.
    pub clicks: u64,
    /// Orders placed.
    pub orders: u64,
    /// Orders placed with a discount.
    pub discounted_orders: u64,
    /// Cancellations and refunds.
    pub voided_orders: u64,
    /// Sessions that put items in the cart and did not order.
    pub abandoned_carts: u64,
}

#[derive(Debug)]
struct Sim {
    id: CustomerId,
    profile: Profile,
    next_order_day: f64,
    orders: u32,
}

/// Day-by-day generator; iterate it to get [`GeneratedDay`]s.
#[derive(Debug)]
pub struct Generator {
    opts: GeneratorOptions,
    sims: Vec<Sim>,
    /// Cancellations and refunds scheduled for later days.
    later: BTreeMap<u32, Vec<Event>>,
    totals: Totals,
    next_day: u32,
    start_ms: i64,
}

fn mix(seed: u64, a: u64, b: u64) -> u64 {
    // SplitMix64 finaliser over the three inputs: independent streams per (customer, day).
    let mut z = seed ^ a.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ b.wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Generator {
    /// Draws the population.
    pub fn new(opts: GeneratorOptions) -> Self {
        let start_ms = opts.start.day() * DAY_MS;
        let mut totals = Totals::default();
        let sims = (0..opts.customers)
            .map(|i| {
                let mut rng = ChaCha8Rng::seed_from_u64(mix(opts.seed, u64::from(i), u64::MAX));
                let profile = Profile::draw(&mut rng, opts.days);
                *totals.personas.entry(profile.persona).or_default() += 1;
                let first_order = f64::from(profile.signup_day) + rng.random_range(0.0..12.0);
                Sim {
                    id: CustomerId::new(format!("cust-{i:06}")),
                    profile,
                    next_order_day: first_order,
                    orders: 0,
                }
            })
            .collect();
        Self { opts, sims, later: BTreeMap::new(), totals, next_day: 0, start_ms }
    }

    /// Ground truth so far (personas are complete from the start).
    pub fn totals(&self) -> &Totals {
        &self.totals
    }

    /// Persona of every customer, for tests and demos.
    pub fn personas(&self) -> impl Iterator<Item = (&CustomerId, Persona)> {
        self.sims.iter().map(|s| (&s.id, s.profile.persona))
    }

    fn day_events(&mut self, day: u32) -> Vec<Event> {
        let day_start = self.start_ms + i64::from(day) * DAY_MS;
        let (weekday, month) = Utc
            .timestamp_millis_opt(day_start)
            .single()
            .map(|d| (d.weekday().num_days_from_monday(), d.month()))
            .unwrap_or((0, 1));
        let weekly = if weekday >= 5 { 1.3 } else { 1.0 };
        let yearly = match month {
            11 | 12 => 1.4,
            1 | 2 => 0.85,
            _ => 1.0,
        };
        let mut events = self.later.remove(&day).unwrap_or_default();
        let seed = self.opts.seed;
        for (index, sim) in self.sims.iter_mut().enumerate() {
            let p = &sim.profile;
            if !p.visits_on(day) {
                continue;
            }
            let mut rng = ChaCha8Rng::seed_from_u64(mix(seed, index as u64, u64::from(day)));
            let wants_order = p.may_order(day) && f64::from(day) >= sim.next_order_day;
            let mut rate = p.visit_rate * weekly * yearly;
            let days_in = f64::from(day - p.signup_day);
            match p.persona {
                Persona::OneTimeBuyer if sim.orders > 0 => rate *= 0.985f64.powf(days_in),
                Persona::Churning if !p.may_order(day) => rate *= 0.2,
                _ => {}
            }
            let mut sessions = (0..3).filter(|_| rng.random_bool((rate / 3.0).min(1.0))).count();
            if wants_order {
                sessions = sessions.max(1);
            }
            for s in 0..sessions {
                let order_now = wants_order && s + 1 == sessions;
                let session = SessionCtx { seed, index, day, s, day_start };
                let out = session.run(sim, &mut rng, order_now);
                self.totals.clicks += out.clicks;
                self.totals.abandoned_carts += u64::from(out.abandoned);
                if let Some(order) = &out.order {
                    self.totals.orders += 1;
                    self.totals.discounted_orders += u64::from(order.discount_amount > 0.0);
                    // A few orders are cancelled the next day or refunded a week or two later.
                    let voided = if rng.random_bool(0.03) {
                        Some((day + 1, OrderStatus::Cancelled))
                    } else if rng.random_bool(0.02) {
                        Some((day + rng.random_range(7..15), OrderStatus::Refunded))
                    } else {
                        None
                    };
                    if let Some((when, status)) = voided {
                        let mut v = order.clone();
                        v.status = status;
                        v.event_time = EventTime::from_millis(
                            self.start_ms + i64::from(when) * DAY_MS + rng.random_range(0..DAY_MS),
                        );
                        self.totals.voided_orders += 1;
                        self.later.entry(when).or_default().push(Event::Order(v));
                    }
                    sim.orders += 1;
                    sim.next_order_day = if p.persona == Persona::OneTimeBuyer {
                        f64::INFINITY
                    } else {
                        f64::from(day) + p.order_every_days * rng.random_range(0.5..1.5)
                    };
                }
                events.extend(out.events);
            }
        }
        // Late-evening sessions can run past midnight: those events belong to
        // the next day, so days stay in global event-time order.
        let next_day_start = day_start + DAY_MS;
        let (today, spill): (Vec<Event>, Vec<Event>) =
            events.into_iter().partition(|e| e.time().millis() < next_day_start);
        if !spill.is_empty() {
            self.later.entry(day + 1).or_default().extend(spill);
        }
        let mut events = today;
        events.sort_by(|a, b| a.sort_key().cmp(&b.sort_key()));
        events
    }
}

impl Iterator for Generator {
    type Item = GeneratedDay;

    fn next(&mut self) -> Option<GeneratedDay> {
        if self.next_day >= self.opts.days {
            // Refunds and late-night sessions scheduled past the last day come
            // out once, last, so every counted event is emitted.
            if self.later.is_empty() {
                return None;
            }
            let mut events: Vec<Event> = std::mem::take(&mut self.later).into_values().flatten().collect();
            events.sort_by(|a, b| a.sort_key().cmp(&b.sort_key()));
            let day = self.next_day;
            self.next_day += 1;
            return Some(GeneratedDay { day, events });
        }
        let day = self.next_day;
        self.next_day += 1;
        Some(GeneratedDay { day, events: self.day_events(day) })
    }
}

struct SessionCtx {
    seed: u64,
    index: usize,
    day: u32,
    s: usize,
    day_start: i64,
}

#[derive(Default)]
struct SessionOut {
    events: Vec<Event>,
    order: Option<OrderEvent>,
    clicks: u64,
    abandoned: bool,
}

impl SessionCtx {
    fn run(&self, sim: &Sim, rng: &mut ChaCha8Rng, order_now: bool) -> SessionOut {
        let p = &sim.profile;
        // Daily curve: mostly around the customer's peak hour, otherwise daytime.
        let hour = if rng.random_bool(0.6) {
            (p.peak_hour as i64 + rng.random_range(-2..=2)).clamp(0, 23)
        } else {
            rng.random_range(7..24)
        };
        let mut t = self.day_start + hour * 3_600_000 + rng.random_range(0..3_600_000);
        let session_id = format!("s-{:x}-{}-{}-{}", self.seed, self.index, self.day, self.s);
        let mut out = SessionOut::default();
        let mut n = 0;
        let mut click = |rng: &mut ChaCha8Rng, t: &mut i64, kind: ClickEventType, out: &mut SessionOut| {
            let category = if rng.random_bool(0.75) { p.categories[n % 2] } else { "other" };
            let product = format!("p-{category}-{}", rng.random_range(1..400));
            let price = (rng.random_range(5.0..(p.basket * 1.2).max(10.0)) * 100.0).round() / 100.0;
            let with_product = matches!(
                kind,
                ClickEventType::ProductView | ClickEventType::AddToCart | ClickEventType::RemoveFromCart
            );
            out.events.push(Event::Click(ClickEvent {
                event_id: format!("e-{:x}-{}-{}-{}-{n}", self.seed, self.index, self.day, self.s),
                customer_id: sim.id.clone(),
                session_id: Some(session_id.clone()),
                event_type: kind,
                event_time: EventTime::from_millis(*t),
                device: Some(p.device.to_owned()),
                page: Some(match kind {
                    ClickEventType::Search => "/search".to_owned(),
                    ClickEventType::CheckoutStart => "/checkout".to_owned(),
                    ClickEventType::PageView => format!("/c/{category}"),
                    _ => format!("/p/{product}"),
                }),
                product_id: with_product.then(|| product.clone()),
                category: Some(category.to_owned()),
                price: with_product.then_some(price),
                search_query: (kind == ClickEventType::Search).then(|| format!("{category} sale")),
            }));
            out.clicks += 1;
            n += 1;
            *t += rng.random_range(15_000..180_000);
        };
        click(rng, &mut t, ClickEventType::PageView, &mut out);
        let search_share = if p.persona == Persona::BargainHunter { 0.4 } else { 0.12 };
        for _ in 0..rng.random_range(1..7) {
            let kind = if rng.random_bool(search_share) {
                ClickEventType::Search
            } else if rng.random_bool(0.6) {
                ClickEventType::ProductView
            } else {
                ClickEventType::PageView
            };
            click(rng, &mut t, kind, &mut out);
        }
        if order_now {
            for _ in 0..rng.random_range(1..4) {
                click(rng, &mut t, ClickEventType::AddToCart, &mut out);
            }
            click(rng, &mut t, ClickEventType::CheckoutStart, &mut out);
            let gross = (p.basket * rng.random_range(0.6..1.6) * 100.0).round() / 100.0;
            let discount = if rng.random_bool(p.discount_share) {
                (gross * rng.random_range(0.1..0.3) * 100.0).round() / 100.0
            } else {
                0.0
            };
            let order = OrderEvent {
                order_id: format!("o-{:x}-{}-{}", self.seed, self.index, sim.orders),
                customer_id: sim.id.clone(),
                event_time: EventTime::from_millis(t),
                status: OrderStatus::Placed,
                total: ((gross - discount) * 100.0).round() / 100.0,
                currency: "EUR".to_owned(),
                discount_amount: discount,
                item_count: rng.random_range(1..5),
                categories: vec![p.categories[0].to_owned()],
                payment_method: Some(p.payment.to_owned()),
            };
            out.events.push(Event::Order(order.clone()));
            out.order = Some(order);
        } else {
            let cart_share = if p.persona == Persona::Browser { 0.25 } else { 0.08 };
            if rng.random_bool(cart_share) {
                click(rng, &mut t, ClickEventType::AddToCart, &mut out);
                if rng.random_bool(0.3) {
                    click(rng, &mut t, ClickEventType::RemoveFromCart, &mut out);
                }
                out.abandoned = true;
            }
        }
        out
    }
}
