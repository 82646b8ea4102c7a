use std::collections::BTreeMap;

use datafusion::arrow::array::{Array, Float64Array, RecordBatch};
use datafusion::arrow::compute::concat_batches;
use datafusion::prelude::SessionContext;
use proptest::prelude::*;
use segstream_config::{Config, FeaturesConfig};
use segstream_events::{
    ClickBatch, ClickEvent, ClickEventType, CustomerId, EventTime, OrderBatch, OrderEvent, OrderStatus,
    PayloadFormat, RawRecord, decode_clicks, decode_orders, encode_click, encode_order, schema::Schemas,
};
use segstream_features::{CustomerState, Dictionaries};

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

const DEVICES: [Option<&str>; 6] =
    [None, Some("mobile"), Some("Desktop"), Some("tablet"), Some("app"), Some("tv")];
const CATEGORIES: [&str; 4] = ["bags", "books", "shoes", "toys"];
const PAYMENTS: [Option<&str>; 4] = [None, Some("card"), Some("paypal"), Some("klarna")];

fn click_event(customer: u8, n: usize, minute: i64, kind: u8, detail: u8) -> Event {
    Event::Click(ClickEvent {
        event_id: format!("e{n}"),
        customer_id: CustomerId::new(format!("c{customer}")),
        session_id: None,
        event_type: ClickEventType::ALL[usize::from(kind) % ClickEventType::ALL.len()],
        event_time: EventTime::from_millis(T0 + (SPAN_DAYS - 45) * DAY + minute * MINUTE),
        device: DEVICES[usize::from(detail) % DEVICES.len()].map(str::to_owned),
        page: None,
        product_id: None,
        category: None,
        price: (!detail.is_multiple_of(5)).then(|| f64::from(detail) * 1.25),
        search_query: None,
    })
}

/// An order event; `detail` picks its categories and payment method.
struct OrderSpec {
    customer: u8,
    n: usize,
    t: i64,
    cents: u32,
    discount_cents: u32,
    detail: u8,
}

fn order_event(o: &OrderSpec, status: OrderStatus) -> Event {
    let first = usize::from(o.detail) % (CATEGORIES.len() + 1);
    let placed = status == OrderStatus::Placed;
    Event::Order(OrderEvent {
        order_id: format!("o{}", o.n),
        customer_id: CustomerId::new(format!("c{}", o.customer)),
        event_time: EventTime::from_millis(o.t),
        status,
        total: f64::from(o.cents) / 100.0,
        currency: "EUR".into(),
        discount_amount: if placed { f64::from(o.discount_cents) / 100.0 } else { 0.0 },
        item_count: 1,
        categories: CATEGORIES
            .iter()
            .skip(first.saturating_sub(1))
            .take(usize::from(first > 0) * 2)
            .map(|c| (*c).to_owned())
            .collect(),
        payment_method: PAYMENTS[usize::from(o.detail / 8) % PAYMENTS.len()].map(str::to_owned),
    })
}

/// A random history: orders (some cancelled or refunded, some sent twice),
/// clicks (some sent twice), arriving out of order by up to three days.
fn history() -> impl Strategy<Value = Vec<Event>> {
    let orders = proptest::collection::vec(
        (
            (0u8..4, 0i64..SPAN_DAYS * 24, 1u32..40_000, prop_oneof![Just(0u32), 1u32..2_000]),
            (0u8..6, 0i64..20 * 24, any::<u8>()),
        ),
        0..25,
    );
    let clicks =
        proptest::collection::vec((0u8..4, 0i64..45 * 1440, 0u8..6, any::<bool>(), any::<u8>()), 0..60);
    let jitter = proptest::collection::vec(0i64..3 * DAY, 200);
    (orders, clicks, jitter).prop_map(|(orders, clicks, jitter)| {
        let mut events = Vec::new();
        for (n, ((customer, hour, cents, discount_cents), (fate, cancel_after_hours, detail))) in
            orders.into_iter().enumerate()
        {
            let t = T0 + hour * 3_600_000 + i64::from(customer);
            let spec = OrderSpec { customer, n, t, cents, discount_cents, detail };
            events.push(order_event(&spec, OrderStatus::Placed));
            let later = OrderSpec { t: t + cancel_after_hours * 3_600_000, ..spec };
            match fate {
                0 => events.push(order_event(&later, OrderStatus::Cancelled)),
                1 => events.push(order_event(&later, OrderStatus::Refunded)),
                2 => events.push(order_event(&spec, OrderStatus::Placed)),
                _ => {}
            }
        }
        for (n, (customer, minute, kind, twice, detail)) in clicks.into_iter().enumerate() {
            events.push(click_event(customer, n, minute, kind, detail));
            if twice {
                events.push(click_event(customer, n, minute, kind, detail));
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
    let c = decode_clicks(raw(&clicks), Schemas::builtin(), Default::default()).expect("arrow");
    let o = decode_orders(raw(&orders), Schemas::builtin(), Default::default()).expect("arrow");
    assert!(c.rejected.is_empty() && o.rejected.is_empty());
    (c.batch, o.batch, order_of_arrival)
}

/// The streaming path: events applied one by one in arrival order.
fn streaming_table(events: &[Event], config: &FeaturesConfig) -> (EventTime, RecordBatch) {
    let (clicks, orders, arrival) = decode(events);
    let mut states: BTreeMap<String, CustomerState> = BTreeMap::new();
    let mut dict = Dictionaries::default();
    for (is_click, row) in arrival {
        if is_click {
            let r = clicks.row(row);
            states.entry(r.customer_id.to_owned()).or_default().apply_click(&r, config);
        } else {
            let r = orders.row(row);
            states.entry(r.customer_id.to_owned()).or_default().apply_order(&r, config, &mut dict);
        }
    }
    let as_of = EventTime::from_millis(events.iter().map(Event::time).max().unwrap_or(T0));
    let features: Vec<_> =
        states.iter().map(|(id, s)| (id.clone(), s.features(as_of, config, &dict))).collect();
    let rows: Vec<_> =
        features.iter().map(|(id, f)| table::Row { customer_id: id, features: f, segments: None }).collect();
    (as_of, table::build(&rows, config, false).expect("feature table"))
}

fn batch_table(events: &[Event], as_of: EventTime, config: &FeaturesConfig) -> RecordBatch {
    let (clicks, orders, _) = decode(events);
    let runtime = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
    runtime.block_on(async {
        let ctx = SessionContext::new();
        query::register_events(&ctx, &[clicks], &[orders]).expect("register");
        let batches = definition::batch_features(&ctx, as_of, config).await.expect("feature query");
        concat_batches(&table::schema(config, false), &batches).expect("concat")
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

    /// The streaming path (events applied one by one in arrival order, out of
    /// order by up to three days, with repeats, cancellations before their
    /// orders, orders folded out of the year; click counts per event) gives
    /// the same feature table as the batch SQL over the same events (whose
    /// day counts are `DAY_COUNTS`).
    #[test]
    fn streaming_features_equal_the_batch_sql(
        events in history(),
        other_windows in any::<bool>(),
    ) {
        let mut config = Config::default().features;
        if other_windows {
            config.order_windows_days = vec![14, 60, 180];
            config.activity_windows_days = vec![3, 10];
            config.session_gap_minutes = 45;
            config.cart_abandon_hours = 2;
        }
        let (as_of, streaming) = streaming_table(&events, &config);
        let batch = batch_table(&events, as_of, &config);
        assert_same_table(&streaming, &batch)?;
    }
}

#[test]
fn a_scripted_history_gives_the_documented_values_in_sql() {
    let spec = |n: usize, day: i64, cents: u32, discount_cents: u32| OrderSpec {
        customer: 1,
        n,
        t: T0 + day * DAY,
        cents,
        discount_cents,
        detail: 0,
    };
    let events = vec![
        order_event(&spec(1, 0, 1_000, 0), OrderStatus::Placed),
        order_event(&spec(2, 40, 2_000, 500), OrderStatus::Placed),
        order_event(&spec(2, 41, 0, 0), OrderStatus::Refunded),
        order_event(&spec(3, 50, 3_000, 0), OrderStatus::Placed),
    ];
    let config = Config::default().features;
    let as_of = EventTime::from_millis(T0 + 60 * DAY);
    let batch = batch_table(&events, as_of, &config);
    let ctx = SessionContext::new();
    query::register(&ctx, "features", table::schema(&config, false), vec![batch]).expect("register");
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

#[test]
fn csv_and_parquet_history_decode_like_json_lines() {
    let dir = tempfile::tempdir().expect("dir");
    // CSV: a numeric-looking customer id stays a string; empty cells are nulls.
    std::fs::write(
        dir.path().join("orders-2024.csv"),
        "order_id,customer_id,event_time,status,total,discount_amount,payment_method\n\
         o1,123,1700000000000,placed,19.5,0,card\n\
         o1,123,1700000100000,refunded,19.5,0,\n",
    )
    .expect("csv");
    // Parquet with a microsecond timestamp: read as milliseconds.
    let runtime = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
    let parquet = dir.path().join("clicks.parquet");
    runtime.block_on(async {
        let ctx = SessionContext::new();
        let copy = format!(
            "COPY (SELECT 'e1' AS event_id, 'c9' AS customer_id, 'search' AS event_type, \
             arrow_cast(1700000000123000, 'Timestamp(Microsecond, None)') AS event_time, 'mobile' AS device) \
             TO '{}' STORED AS PARQUET",
            parquet.display()
        );
        ctx.sql(&copy).await.expect("plan").collect().await.expect("write parquet");
    });
    let files = crate::history::discover(dir.path()).expect("discover");
    assert_eq!(files.len(), 2);
    let history = runtime
        .block_on(crate::history::decode_history(&files, segstream_events::InputRules::default()))
        .expect("decode");
    assert!(history.rejected.is_empty(), "{:?}", history.rejected);
    let orders = &history.orders[0];
    assert_eq!(orders.len(), 2);
    let (placed, refunded) = (orders.row(0), orders.row(1));
    assert_eq!((placed.customer_id, placed.total, placed.payment_method), ("123", 19.5, Some("card")));
    assert_eq!((refunded.status, refunded.payment_method), (OrderStatus::Refunded, None));
    let click = history.clicks[0].row(0);
    assert_eq!(
        (click.customer_id, click.event_type, click.device),
        ("c9", ClickEventType::Search, Some("mobile"))
    );
    assert_eq!(click.event_time, EventTime::from_millis(1_700_000_000_123));
}

#[test]
fn a_history_file_whose_kind_cannot_be_told_is_refused_with_the_fix() {
    let err = crate::history::classify(std::path::Path::new("/data/events.csv")).expect_err("refused");
    assert!(err.to_string().contains("put `click` or `order` in the file name"), "{err}");
    let err = crate::history::classify(std::path::Path::new("/data/orders.xlsx")).expect_err("refused");
    assert!(err.to_string().contains(".jsonl"), "{err}");
}
