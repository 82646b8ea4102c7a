use std::collections::BTreeMap;

use datafusion::arrow::array::{Array, Float64Array, RecordBatch};
use datafusion::arrow::compute::concat_batches;
use datafusion::prelude::SessionContext;
use proptest::prelude::*;
use segstream_config::FeaturesConfig;
use segstream_events::{
    ClickBatch, ClickEvent, ClickEventType, CustomerId, EventTime, OrderBatch, OrderEvent, OrderStatus,
    PayloadFormat, RawRecord, decode_clicks, decode_orders, encode_click, encode_order, schema::Schemas,
};
use segstream_features::CustomerState;

use crate::{definition, query, table};

const MINUTE: i64 = 60_000;
const DAY: i64 = 86_400_000;
const T0: i64 = 1_700_000_000_000;
/// Orders span 500 days (so some fold out of the year); clicks the last 45.
const SPAN_DAYS: i64 = 500;

#[derive(Debug, Clone)]
enum Event {
    Click(ClickEvent),
    Order(OrderEvent),
}

impl Event {
    fn time(&self) -> i64 {
        match self {
            Event::Click(c) => c.event_time.millis(),
            Event::Order(o) => o.event_time.millis(),
        }
    }
}

fn click_event(customer: u8, n: usize, minute: i64, kind: u8) -> Event {
    Event::Click(ClickEvent {
        event_id: format!("e{n}"),
        customer_id: CustomerId::new(format!("c{customer}")),
        session_id: None,
        event_type: ClickEventType::ALL[usize::from(kind) % ClickEventType::ALL.len()],
        event_time: EventTime::from_millis(T0 + (SPAN_DAYS - 45) * DAY + minute * MINUTE),
        device: None,
        page: None,
        product_id: None,
        category: None,
        price: None,
        search_query: None,
    })
}

fn order_event(
    customer: u8,
    n: usize,
    t: i64,
    status: OrderStatus,
    cents: u32,
    discount_cents: u32,
) -> Event {
    Event::Order(OrderEvent {
        order_id: format!("o{n}"),
        customer_id: CustomerId::new(format!("c{customer}")),
        event_time: EventTime::from_millis(t),
        status,
        total: f64::from(cents) / 100.0,
        currency: "EUR".into(),
        discount_amount: f64::from(discount_cents) / 100.0,
        item_count: 1,
        categories: Vec::new(),
        payment_method: None,
    })
}

/// A random history: orders (some cancelled or refunded, some sent twice),
/// clicks (some sent twice), arriving out of order by up to three days.
fn history() -> impl Strategy<Value = Vec<Event>> {
    let orders = proptest::collection::vec(
        (
            0u8..4,
            0i64..SPAN_DAYS * 24,
            1u32..40_000,
            prop_oneof![Just(0u32), 1u32..2_000],
            0u8..6,
            0i64..20 * 24,
        ),
        0..25,
    );
    let clicks = proptest::collection::vec((0u8..4, 0i64..45 * 1440, 0u8..6, any::<bool>()), 0..60);
    let jitter = proptest::collection::vec(0i64..3 * DAY, 200);
    (orders, clicks, jitter).prop_map(|(orders, clicks, jitter)| {
        let mut events = Vec::new();
        for (n, (customer, hour, cents, discount, fate, cancel_after_hours)) in orders.into_iter().enumerate()
        {
            let t = T0 + hour * 3_600_000 + i64::from(customer);
            events.push(order_event(customer, n, t, OrderStatus::Placed, cents, discount));
            let later = t + cancel_after_hours * 3_600_000;
            match fate {
                0 => events.push(order_event(customer, n, later, OrderStatus::Cancelled, cents, 0)),
                1 => events.push(order_event(customer, n, later, OrderStatus::Refunded, cents, 0)),
                2 => events.push(order_event(customer, n, t, OrderStatus::Placed, cents, discount)),
                _ => {}
            }
        }
        for (n, (customer, minute, kind, twice)) in clicks.into_iter().enumerate() {
            events.push(click_event(customer, n, minute, kind));
            if twice {
                events.push(click_event(customer, n, minute, kind));
            }
        }
        // Arrival order: event time plus a random delay of up to three days.
        let mut keyed: Vec<(i64, usize, Event)> = events
            .into_iter()
            .enumerate()
            .map(|(i, e)| (e.time() + jitter[i % jitter.len()], i, e))
            .collect();
        keyed.sort_by_key(|(k, i, _)| (*k, *i));
        keyed.into_iter().map(|(_, _, e)| e).collect()
    })
}

fn raw(payloads: &[Vec<u8>]) -> Vec<RawRecord<'_>> {
    payloads
        .iter()
        .enumerate()
        .map(|(i, p)| RawRecord { payload: Some(p), partition: 0, offset: i as i64 })
        .collect()
}

/// Decodes events (in arrival order) the way the worker decodes a poll.
fn decode(events: &[Event]) -> (ClickBatch, OrderBatch, Vec<(bool, usize)>) {
    let mut clicks = Vec::new();
    let mut orders = Vec::new();
    let mut order_of_arrival = Vec::new();
    for e in events {
        match e {
            Event::Click(c) => {
                order_of_arrival.push((true, clicks.len()));
                clicks.push(encode_click(c, PayloadFormat::Json).expect("test click encodes"));
            }
            Event::Order(o) => {
                order_of_arrival.push((false, orders.len()));
                orders.push(encode_order(o, PayloadFormat::Json).expect("test order encodes"));
            }
        }
    }
    let c = decode_clicks(raw(&clicks), Schemas::builtin()).expect("arrow");
    let o = decode_orders(raw(&orders), Schemas::builtin()).expect("arrow");
    assert!(c.rejected.is_empty() && o.rejected.is_empty());
    (c.batch, o.batch, order_of_arrival)
}

fn streaming_table(events: &[Event], config: &FeaturesConfig) -> (EventTime, RecordBatch) {
    let (clicks, orders, arrival) = decode(events);
    let mut states: BTreeMap<String, CustomerState> = BTreeMap::new();
    for (is_click, row) in arrival {
        if is_click {
            let r = clicks.row(row);
            states.entry(r.customer_id.to_owned()).or_default().apply_click(&r, config);
        } else {
            let r = orders.row(row);
            states.entry(r.customer_id.to_owned()).or_default().apply_order(&r);
        }
    }
    let as_of = EventTime::from_millis(events.iter().map(Event::time).max().unwrap_or(T0));
    let features: Vec<_> = states.iter().map(|(id, s)| (id.clone(), s.features(as_of))).collect();
    let rows: Vec<_> =
        features.iter().map(|(id, f)| table::Row { customer_id: id, features: f, lifecycle: None }).collect();
    (as_of, table::build(&rows, false).expect("feature table"))
}

fn batch_table(events: &[Event], as_of: EventTime, config: &FeaturesConfig) -> RecordBatch {
    let (clicks, orders, _) = decode(events);
    let runtime = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
    runtime.block_on(async {
        let ctx = SessionContext::new();
        query::register_events(&ctx, &[clicks], &[orders]).expect("register");
        let batches = definition::batch_features(&ctx, as_of, config).await.expect("feature query");
        concat_batches(&table::schema(false), &batches).expect("concat")
    })
}

/// Same columns, same values; floats equal up to rounding in the last bits.
fn assert_same_table(streaming: &RecordBatch, batch: &RecordBatch) -> Result<(), TestCaseError> {
    prop_assert_eq!(streaming.num_rows(), batch.num_rows());
    for (i, field) in streaming.schema().fields().iter().enumerate() {
        let (a, b) = (streaming.column(i), batch.column(i));
        match (a.as_any().downcast_ref::<Float64Array>(), b.as_any().downcast_ref::<Float64Array>()) {
            (Some(x), Some(y)) => {
                for r in 0..x.len() {
                    let (p, q) = (x.is_valid(r).then(|| x.value(r)), y.is_valid(r).then(|| y.value(r)));
                    let close = match (p, q) {
                        (Some(p), Some(q)) => (p - q).abs() <= 1e-9 * p.abs().max(1.0),
                        (p, q) => p == q,
                    };
                    prop_assert!(close, "{} row {}: streaming {:?}, batch {:?}", field.name(), r, p, q);
                }
            }
            _ => prop_assert_eq!(a.to_data(), b.to_data(), "column {}", field.name()),
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// The streaming state (events applied one by one in arrival order, out of
    /// order by up to three days, with repeats, cancellations before their
    /// orders, orders folded out of the year) gives the same feature table as
    /// the batch SQL over the same events.
    #[test]
    fn streaming_features_equal_the_batch_sql(events in history()) {
        let config = FeaturesConfig { session_gap_minutes: 30 };
        let (as_of, streaming) = streaming_table(&events, &config);
        let batch = batch_table(&events, as_of, &config);
        assert_same_table(&streaming, &batch)?;
    }
}

#[test]
fn a_scripted_history_gives_the_documented_values_in_sql() {
    let events = vec![
        order_event(1, 1, T0, OrderStatus::Placed, 1_000, 0),
        order_event(1, 2, T0 + 40 * DAY, OrderStatus::Placed, 2_000, 500),
        order_event(1, 2, T0 + 41 * DAY, OrderStatus::Refunded, 0, 0),
        order_event(1, 3, T0 + 50 * DAY, OrderStatus::Placed, 3_000, 0),
    ];
    let config = FeaturesConfig { session_gap_minutes: 30 };
    let as_of = EventTime::from_millis(T0 + 60 * DAY);
    let batch = batch_table(&events, as_of, &config);
    let ctx = SessionContext::new();
    query::register(&ctx, "features", table::schema(false), vec![batch]).expect("register");
    let runtime = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
    let out = runtime
        .block_on(query::run(
            &ctx,
            "SELECT customer_id, lifetime_orders, orders_30d, revenue_365d, interpurchase_mean_days FROM features",
        ))
        .expect("query");
    let text = query::render(&out, query::OutputFormat::Json).expect("render");
    assert_eq!(
        text,
        r#"[{"customer_id":"c1","lifetime_orders":2,"orders_30d":1,"revenue_365d":40.0,"interpurchase_mean_days":50.0}]"#
    );
}
