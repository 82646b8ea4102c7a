use std::collections::BTreeSet;

use segstream_events::EventTime;

use crate::*;

fn opts(seed: u64) -> GeneratorOptions {
    GeneratorOptions { seed, customers: 300, start: EventTime::from_millis(1_704_067_200_000), days: 200 }
}

#[test]
fn the_same_seed_gives_the_same_events() {
    let a: Vec<_> = Generator::new(opts(7)).flat_map(|d| d.events).collect();
    let b: Vec<_> = Generator::new(opts(7)).flat_map(|d| d.events).collect();
    assert_eq!(a, b);
    let c: Vec<_> = Generator::new(opts(8)).flat_map(|d| d.events).collect();
    assert_ne!(a, c);
}

#[test]
fn days_come_out_in_event_time_order_inside_their_day() {
    let start = opts(1).start.millis();
    let mut last = i64::MIN;
    for day in Generator::new(opts(1)) {
        let times: Vec<i64> = day.events.iter().map(|e| e.time().millis()).collect();
        // Globally in event-time order, across days too.
        assert!(times.first().is_none_or(|t| *t >= last), "day {}", day.day);
        assert!(times.windows(2).all(|w| w[0] <= w[1]), "day {}", day.day);
        last = times.last().copied().unwrap_or(last);
        if day.day < opts(1).days {
            // Refunds scheduled for this day land in it.
            assert!(times.iter().all(|t| (t - start) / 86_400_000 == i64::from(day.day)), "day {}", day.day);
        }
    }
}

#[test]
fn every_persona_is_present_and_behaves_like_itself() {
    let mut g = Generator::new(opts(3));
    let personas: std::collections::BTreeMap<_, _> = g.personas().map(|(c, p)| (c.clone(), p)).collect();
    let events: Vec<_> = g.by_ref().flat_map(|d| d.events).collect();
    assert_eq!(g.totals().personas.len(), Persona::ALL.len());
    let buyers: BTreeSet<_> = events
        .iter()
        .filter_map(|e| match e {
            Event::Order(o) => Some(o.customer_id.clone()),
            Event::Click(_) => None,
        })
        .collect();
    for (customer, persona) in &personas {
        if *persona == Persona::Browser {
            assert!(!buyers.contains(customer), "browser {customer} ordered");
        }
    }
    let loyal_buyers = personas.iter().filter(|(c, p)| **p == Persona::Loyal && buyers.contains(*c)).count();
    assert!(loyal_buyers > 0);
    let t = g.totals();
    let emitted_orders = events.iter().filter(|e| matches!(e, Event::Order(_))).count() as u64;
    assert_eq!(emitted_orders, t.orders + t.voided_orders, "every counted order is emitted");
    assert_eq!(events.len() as u64 - emitted_orders, t.clicks, "every counted click is emitted");
    assert!(
        t.orders > 0 && t.discounted_orders > 0 && t.abandoned_carts > 0 && t.clicks > t.orders * 5,
        "{t:?}"
    );
}
