//! The in-process pipeline at a million customers, no broker: generated
//! traffic (segstream-generator, 1,000,000 customers × 7 days) encoded as
//! the topics carry it (Avro in the Confluent framing), then decoded into
//! Arrow, merged in event time per partition and applied to features and
//! segments by the worker's own engine (`segstream_worker::replay`, the
//! engine the live worker, replay and rebuilds share).
//!
//! Run three ways, in turn: one engine over the six partitions (one core);
//! two engines, each over three of the partitions, on two threads (the
//! partitions are independent, so this is what engines per thread give on
//! both cores); and the one engine again. The two engines must produce
//! exactly the changes the one does (checked). The input's watermark at the
//! end is not followed (`time.idle_partition_ms = 0`), as it depends on
//! which partitions an engine sees.
//!
//! `BENCH_INPROC_CUSTOMERS` (1,000,000; debug: 2,000), `BENCH_INPROC_DAYS`
//! (7), `BENCH_INPROC_DEFINITIONS` (a segment definitions file; default:
//! the built-in ones).

#![allow(missing_docs, clippy::unwrap_used)]

use std::time::Instant;

use segstream_config::Config;
use segstream_events::{PayloadFormat, encode_click, encode_order};
use segstream_generator::{Event, Generator, GeneratorOptions};

// The allocator the `segstream` binary runs with.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const PARTITIONS: i32 = 6;

fn env(name: &str, default: u32) -> u32 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Payloads of one engine's partitions: (clicks, orders).
type Input = (Vec<Vec<u8>>, Vec<Vec<u8>>);

fn main() {
    let customers = env("BENCH_INPROC_CUSTOMERS", if cfg!(debug_assertions) { 2_000 } else { 1_000_000 });
    let days = env("BENCH_INPROC_DAYS", 7);
    let mut sets = vec!["time.idle_partition_ms=0".to_owned()];
    if let Ok(file) = std::env::var("BENCH_INPROC_DEFINITIONS") {
        sets.push(format!("segments.definitions={file}"));
    }
    let config = Config::load(None, &sets).unwrap();
    let definitions = std::env::var("BENCH_INPROC_DEFINITIONS").unwrap_or_else(|_| "built-in".into());

    let began = Instant::now();
    // Per engine of the two: the payloads of its partitions.
    let mut halves: [Input; 2] = Default::default();
    let mut generator = Generator::new(GeneratorOptions {
        seed: 7,
        customers,
        start: segstream_events::EventTime::from_millis(1_733_011_200_000),
        days,
    });
    for day in generator.by_ref() {
        for event in &day.events {
            let partition = segstream_kafka::partition_for(event.customer().as_str().as_bytes(), PARTITIONS);
            let (clicks, orders) = &mut halves[usize::from(partition % 2 == 1)];
            match event {
                Event::Click(c) => clicks.push(encode_click(c, PayloadFormat::Avro).unwrap()),
                Event::Order(o) => orders.push(encode_order(o, PayloadFormat::Avro).unwrap()),
            }
        }
    }
    let events: usize = halves.iter().map(|(c, o)| c.len() + o.len()).sum();
    let bytes: usize = halves.iter().flat_map(|(c, o)| c.iter().chain(o)).map(Vec::len).sum();
    println!(
        "in-process input   {customers} customers × {days} days: {events} events, {:.0} MB of Avro payloads, generated and encoded in {:.1} s; definitions: {definitions}",
        bytes as f64 / 1e6,
        began.elapsed().as_secs_f64()
    );
    // One engine sees every partition: both halves, each lane in its topic order.
    let whole: Input = (
        halves.iter().flat_map(|(c, _)| c.iter().cloned()).collect(),
        halves.iter().flat_map(|(_, o)| o.iter().cloned()).collect(),
    );

    let one = |label: &str| {
        let started = Instant::now();
        let (summary, _) =
            segstream_worker::replay(&config, PARTITIONS, &whole.0, &whole.1, |_| {}, |_| Ok(())).unwrap();
        let seconds = started.elapsed().as_secs_f64();
        println!(
            "in-process {label}: one engine, six partitions, one core: {:.2} s = {:.0} events/s, {} changes, {} customers",
            seconds,
            events as f64 / seconds,
            summary.changes,
            summary.customers
        );
        (events as f64 / seconds, summary.changes)
    };
    let (first, changes) = one("run 1");
    let started = Instant::now();
    let results: Vec<u64> = std::thread::scope(|scope| {
        let engines: Vec<_> = halves
            .iter()
            .map(|(clicks, orders)| {
                let config = &config;
                scope.spawn(move || {
                    segstream_worker::replay(config, PARTITIONS, clicks, orders, |_| {}, |_| Ok(()))
                        .unwrap()
                        .0
                        .changes
                })
            })
            .collect();
        engines.into_iter().map(|e| e.join().unwrap()).collect()
    });
    let seconds = started.elapsed().as_secs_f64();
    let two = events as f64 / seconds;
    println!(
        "in-process run 2: two engines, three partitions each, two threads: {seconds:.2} s = {two:.0} events/s, {} changes (target ≥ 1,000,000 events/s at 1M customers)",
        results.iter().sum::<u64>()
    );
    assert_eq!(results.iter().sum::<u64>(), changes, "two engines must make the changes one makes");
    let (third, _) = one("run 3");
    println!(
        "in-process two engines / one engine: {:.2}× (against the mean of runs 1 and 3)",
        two / ((first + third) / 2.0)
    );
}
