//! Decoding cost per event: a micro-batch of Confluent-framed Avro clicks
//! and orders decoded into the Arrow batches the worker reads, against
//! apache_avro's generic decoding of the same bodies into `Value`s (what
//! the worker did before the field-by-field reader: that alone, without
//! the Arrow batch, validation or field look-ups).

#![allow(missing_docs, clippy::unwrap_used)]

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use segstream_events::schema::Schemas;
use segstream_events::{
    ClickEvent, ClickEventType, CustomerId, EventTime, OrderEvent, OrderStatus, PayloadFormat, RawRecord,
    decode_clicks, decode_orders, encode_click, encode_order,
};

const BATCH: usize = 5_000;

fn clicks() -> Vec<Vec<u8>> {
    (0..BATCH)
        .map(|i| {
            let kind = ClickEventType::ALL[i % ClickEventType::ALL.len()];
            let click = ClickEvent {
                event_id: format!("c-{i:08}-4f1c-9a2e-{:012x}", i * 7919),
                customer_id: CustomerId::new(format!("cust-{:06}", i % 2_000)),
                session_id: Some(format!("s-{:06}-{}", i % 2_000, i / 40)),
                event_type: kind,
                event_time: EventTime::from_millis(1_704_067_200_000 + i as i64 * 1_000),
                device: Some(["mobile", "desktop", "tablet"][i % 3].to_owned()),
                page: Some(format!("/category/{}/item/{}", i % 12, i % 500)),
                product_id: (kind != ClickEventType::Search).then(|| format!("p-{:05}", i % 500)),
                category: Some(["shoes", "books", "garden", "toys"][i % 4].to_owned()),
                price: (kind == ClickEventType::AddToCart).then_some(19.99 + (i % 50) as f64),
                search_query: (kind == ClickEventType::Search).then(|| "running shoes".to_owned()),
            };
            encode_click(&click, PayloadFormat::Avro).unwrap()
        })
        .collect()
}

fn orders() -> Vec<Vec<u8>> {
    (0..BATCH)
        .map(|i| {
            let order = OrderEvent {
                order_id: format!("o-{i:08}"),
                customer_id: CustomerId::new(format!("cust-{:06}", i % 2_000)),
                event_time: EventTime::from_millis(1_704_067_200_000 + i as i64 * 60_000),
                status: OrderStatus::ALL[usize::from(i % 20 == 0)],
                total: 54.5 + (i % 300) as f64,
                currency: "EUR".to_owned(),
                discount_amount: if i % 3 == 0 { 5.0 } else { 0.0 },
                item_count: 1 + (i % 4) as i32,
                categories: vec!["shoes".to_owned(), "books".to_owned()][..1 + i % 2].to_vec(),
                payment_method: Some("card".to_owned()),
            };
            encode_order(&order, PayloadFormat::Avro).unwrap()
        })
        .collect()
}

fn records(payloads: &[Vec<u8>]) -> Vec<RawRecord<'_>> {
    payloads
        .iter()
        .enumerate()
        .map(|(i, p)| RawRecord { payload: Some(p), partition: 0, offset: i as i64 })
        .collect()
}

fn generic(schema: &apache_avro::Schema, payloads: &[Vec<u8>]) -> usize {
    payloads
        .iter()
        .map(|p| {
            let mut body = &p[5..];
            // As the worker did per record: a reader built, then a value read.
            let reader = apache_avro::reader::datum::GenericDatumReader::builder(schema).build().unwrap();
            match reader.read_value(&mut body).unwrap() {
                apache_avro::types::Value::Record(fields) => fields.len(),
                _ => 0,
            }
        })
        .sum()
}

fn decode(c: &mut Criterion) {
    let schemas = Schemas::builtin();
    let (clicks, orders) = (clicks(), orders());
    let mut group = c.benchmark_group("decode per event");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("clicks into Arrow (field reader)", |b| {
        b.iter_batched(
            || records(&clicks),
            |r| decode_clicks(r, schemas, Default::default()).unwrap(),
            BatchSize::SmallInput,
        );
    });
    group.bench_function("orders into Arrow (field reader)", |b| {
        b.iter_batched(
            || records(&orders),
            |r| decode_orders(r, schemas, Default::default()).unwrap(),
            BatchSize::SmallInput,
        );
    });
    group.bench_function("clicks as apache_avro generic values (before)", |b| {
        b.iter(|| generic(&schemas.click, &clicks));
    });
    group.bench_function("orders as apache_avro generic values (before)", |b| {
        b.iter(|| generic(&schemas.order, &orders));
    });
    group.finish();
}

criterion_group!(benches, decode);
criterion_main!(benches);
