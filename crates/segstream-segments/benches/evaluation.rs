//! Per-event costs of the state, one customer at a time, for the profile of
//! the engine (`make bench`): applying a click to a customer's windows,
//! reading their features as the built-in segment definitions read them,
//! evaluating every segment after an event (with the next due time), and
//! the walk before an event that finds nothing due, against what the
//! worker does instead when the customer's timer is later.
//!
//! The customer: a loyal buyer (15 orders over the year, some discounted,
//! three categories) who visited on 10 of the last 30 days, 8 clicks a
//! day, one in seven an add to the cart.

#![allow(missing_docs, clippy::unwrap_used)]

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use segstream_config::Config;
use segstream_events::{ClickEventType, ClickRow, EventTime, OrderRow, OrderStatus};
use segstream_features::{CustomerState, Dictionaries};
use segstream_segments::{CustomerSegments, SegmentRules};

const DAY: i64 = 86_400_000;
const NOW: i64 = 1_735_689_600_000;
const CATEGORIES: [&str; 3] = ["shoes", "bags", "books"];

struct Customer {
    state: CustomerState,
    dict: Dictionaries,
    segments: CustomerSegments,
    rules: SegmentRules,
    config: Config,
    /// The time of the latest event.
    last: EventTime,
}

fn click(id: &str, at: i64, i: usize) -> ClickRow<'_> {
    let event_type = if i.is_multiple_of(7) { ClickEventType::AddToCart } else { ClickEventType::PageView };
    ClickRow {
        customer_id: "loyal",
        event_id: id,
        event_type,
        event_time: EventTime::from_millis(at),
        device: Some("mobile"),
        category: Some(CATEGORIES[i % 3]),
        price: (event_type == ClickEventType::AddToCart).then_some(25.0),
        partition: 0,
        offset: 0,
    }
}

/// The customer, driven as the worker drives one: each event after the
/// time-driven moves before it.
fn loyal() -> Customer {
    let config = Config::default();
    let rules = SegmentRules::from_config(&config).unwrap();
    let (mut state, mut dict, mut segments) =
        (CustomerState::default(), Dictionaries::default(), CustomerSegments::default());
    let mut events: Vec<(i64, Option<usize>)> =
        (0..15).map(|k| (NOW - (350 - k * 23) * DAY, Some(k as usize))).collect();
    for day in (0..30_i64).filter(|d| d % 3 == 0) {
        for c in 0..8 {
            events.push((NOW - (30 - day) * DAY + c * 600_000, None));
        }
    }
    events.sort_unstable();
    let last = EventTime::from_millis(events.last().map_or(NOW, |e| e.0));
    for (i, (at, order)) in events.into_iter().enumerate() {
        let t = EventTime::from_millis(at);
        segments.advance(&rules, t, rules.subject(&state, &config.features, &dict));
        let id = format!("e{i}");
        match order {
            Some(k) => {
                let row = OrderRow {
                    order_id: &id,
                    customer_id: "loyal",
                    event_time: t,
                    status: OrderStatus::Placed,
                    total: 40.0 + k as f64 * 3.0,
                    discount_amount: if k % 4 == 0 { 5.0 } else { 0.0 },
                    item_count: 2,
                    primary_category: Some(CATEGORIES[k % 3]),
                    payment_method: Some("card"),
                    partition: 0,
                    offset: 0,
                };
                state.apply_order(&row, &config.features, &mut dict);
            }
            None => {
                state.apply_click(&click(&id, at, i), &config.features);
            }
        }
        segments.on_event(&rules, t, rules.subject(&state, &config.features, &dict));
    }
    Customer { state, dict, segments, rules, config, last }
}

fn per_event(c: &mut Criterion) {
    let customer = loyal();
    let Customer { state, dict, segments, rules, config, last } = &customer;
    let features = &config.features;
    let now = EventTime::from_millis(NOW);
    let mut group = c.benchmark_group("state per event");
    group.bench_function("apply a click to the windows", |b| {
        b.iter_batched_ref(
            || state.clone(),
            |s| s.apply_click(&click("next", NOW, 7), features),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("features as the built-in definitions read them", |b| {
        let subject = rules.subject(state, features, dict);
        b.iter(|| state.features_reading(now, features, subject.dict, subject.clicks))
    });
    // At the latest event's time nothing moves (most events); at `now`, days
    // later, the cart has been abandoned: a change, with its reason.
    for (name, at) in [
        ("every segment evaluated after an event, nothing moves, with the next due time", *last),
        ("the same when a segment moves (cart abandoned: the change's reason and values)", now),
    ] {
        group.bench_function(name, |b| {
            b.iter_batched_ref(
                || segments.clone(),
                |seg| {
                    seg.on_event_then_due(rules, at, rules.subject(state, features, dict), &mut |_, _, _| {})
                },
                BatchSize::SmallInput,
            )
        });
    }
    // Just before the customer's next due time: nothing is due.
    let subject = rules.subject(state, features, dict);
    let quiet = segments.next_due(rules, subject).map_or(now, |due| due.plus_millis(-1));
    assert!(segments.clone().advance(rules, quiet, subject).is_empty());
    group.bench_function("the walk before an event, nothing due", |b| {
        b.iter_batched_ref(
            || segments.clone(),
            |seg| seg.advance(rules, quiet, rules.subject(state, features, dict)),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("what the worker does instead when the timer is later (pass_to)", |b| {
        b.iter_batched_ref(|| segments.clone(), |seg| seg.pass_to(quiet), BatchSize::SmallInput)
    });
    group.finish();
}

criterion_group!(benches, per_event);
criterion_main!(benches);
