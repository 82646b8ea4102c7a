//! State memory and update speed at scale: drives the worker's own
//! `CustomerStore` (features, segments, timers, dictionaries, exactly as the
//! pipeline holds them) with a realistic mix of customers and reports heap
//! bytes per customer and events applied per second on one core. Run with
//! `make bench`. Then one customer with a million orders in a year: time
//! per event and memory with the orders kept one by one bounded
//! (`features.max_orders_kept`) and, for comparison, a hundred times larger.
//!
//! Mix (per 100 customers): 20 browsers (30 days of clicks, no order),
//! 25 loyal (15 orders in the year, frequent visits), 15 bargain hunters
//! (8 orders, frequent searches), 20 one-time buyers (1 order, rare visits),
//! 20 lapsed (3 orders long ago, no recent visit). One click in seven is a
//! search, one in seven an add-to-cart with a price.

#![allow(missing_docs, clippy::unwrap_used)]

use std::alloc::System;
use std::time::Instant;

use segstream_config::Config;
use segstream_events::{ClickEventType, ClickRow, EventTime, OrderRow, OrderStatus};
use segstream_segments::SegmentRules;
use segstream_worker::CustomerStore;
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const DAY: i64 = 86_400_000;
const CATEGORIES: [&str; 6] = ["shoes", "bags", "books", "toys", "garden", "beauty"];
const NOW: i64 = 1_735_689_600_000; // 2025-01-01

/// (orders in the last year, active click days in the last 30, clicks per active day)
fn profile(i: u64) -> (i64, i64, i64) {
    match i % 100 {
        0..20 => (0, 8, 6),
        20..45 => (15, 10, 8),
        45..60 => (8, 12, 10),
        60..80 => (1, 2, 4),
        _ => (3, 0, 0),
    }
}

fn main() {
    // `cargo test --all-targets` also runs this (unoptimised): there it is a
    // quick smoke test with a small population.
    let default = if cfg!(debug_assertions) { 2_000 } else { 1_000_000 };
    let customers: u64 =
        std::env::var("BENCH_CUSTOMERS").ok().and_then(|v| v.parse().ok()).unwrap_or(default);
    let config = Config::default();
    // The store's fixed part (the planned DataFusion query and its runtime)
    // is one per worker: measured from here on is what the customers cost.
    let (store, events, elapsed, live) =
        population(SegmentRules::from_config(&config).unwrap(), &config, customers);
    let per_customer = live as f64 / customers as f64;
    println!("customers                 {customers}");
    println!(
        "events applied            {events} in {elapsed:.2} s = {:.0} events/s (one core: features, segments, timers)",
        events as f64 / elapsed
    );
    println!("state heap bytes          {live} ({:.1} MiB)", live as f64 / 1_048_576.0);
    println!("bytes per customer        {per_customer:.0} (target <= 1024)");
    println!("timers pending            {}", store.pending_timers());
    assert!(store.len() as u64 == customers);
    checkpoint(&store, &config, customers);
    drop(store);
    let orders: i64 = if cfg!(debug_assertions) { 20_000 } else { 1_000_000 };
    heavy_customer(&config, config.features.max_orders_kept, orders);
    // For comparison, the cost when 100 times more orders are kept one by
    // one (as before the bound, the cost grows with the orders kept), over
    // a twentieth of the history.
    heavy_customer(&config, 100_000, orders / 20);
    with_and_without_a_model(&config, customers / 5);
}

/// A population applied to a fresh store under `rules`: the store, events
/// applied, seconds, and the heap bytes the customers hold.
fn population(rules: SegmentRules, config: &Config, customers: u64) -> (CustomerStore, u64, f64, i64) {
    let mut store = CustomerStore::new(rules, config.features.clone()).unwrap();
    let region = Region::new(GLOBAL);
    let started = Instant::now();
    let mut events: u64 = 0;
    let mut order_ids: Vec<String> = Vec::new();
    let mut click_id = String::new();
    for i in 0..customers {
        let id = format!("cust-{i:08}");
        let (orders, active_days, clicks_per_day) = profile(i);
        let lapsed = i % 100 >= 80;
        let span = if lapsed { 700 } else { 360 };
        order_ids.clear();
        order_ids.extend((0..orders).map(|k| format!("o-{i}-{k}")));
        // Interleave orders and clicks in time order, as the merge delivers them.
        let mut timeline: Vec<(i64, Option<usize>)> = (0..orders)
            .map(|k| {
                (
                    NOW - span * DAY + (k * span / orders.max(1)) * DAY + (i as i64 % 997) * 1000,
                    Some(k as usize),
                )
            })
            .collect();
        for d in 0..active_days {
            for c in 0..clicks_per_day {
                timeline.push((NOW - (29 - d * 3 % 30) * DAY + c * 120_000, None));
            }
        }
        timeline.sort_unstable();
        for (t, order) in timeline {
            let at = EventTime::from_millis(t);
            match order {
                Some(k) => {
                    store.on_order(
                        &OrderRow {
                            order_id: &order_ids[k],
                            customer_id: &id,
                            event_time: at,
                            status: OrderStatus::Placed,
                            total: 42.5,
                            discount_amount: if k % 3 == 0 { 5.0 } else { 0.0 },
                            item_count: 2,
                            primary_category: Some(CATEGORIES[(i as usize + k) % CATEGORIES.len()]),
                            payment_method: Some("card"),
                            partition: 0,
                            offset: 0,
                        },
                        at,
                    );
                }
                None => {
                    click_id.clear();
                    click_id.push_str(&t.to_string());
                    let kind = match t % 7 {
                        0 | 3 => ClickEventType::Search,
                        5 => ClickEventType::AddToCart,
                        _ => ClickEventType::PageView,
                    };
                    store.on_click(
                        &ClickRow {
                            customer_id: &id,
                            event_id: &click_id,
                            event_type: kind,
                            event_time: at,
                            device: Some("mobile"),
                            category: Some("shoes"),
                            price: (kind == ClickEventType::AddToCart).then_some(19.99),
                            partition: 0,
                            offset: 0,
                        },
                        at,
                    );
                }
            }
            events += 1;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    drop(order_ids);
    let stats = region.change();
    // stats_alloc already folds reallocation growth and shrinkage into these two.
    let live = stats.bytes_allocated as i64 - stats.bytes_deallocated as i64;
    (store, events, elapsed, live)
}

/// The per-event cost of scoring in the worker: the same population applied
/// with no model and with a model in force (every evaluation then finds the
/// buyer's nearest cluster and their micro-segment), in turn, twice each.
fn with_and_without_a_model(config: &Config, customers: u64) {
    let plain = SegmentRules::from_config(config).unwrap();
    let model = segstream_segments::ModelRules::from_record(&model_record(config), &config.features).unwrap();
    let modelled = plain.with_model(std::sync::Arc::new(model)).unwrap();
    let mut runs: Vec<(bool, f64, f64, i64)> = Vec::new();
    for with_model in [false, true, false, true] {
        let rules = if with_model { modelled.clone() } else { plain.clone() };
        let (store, events, elapsed, live) = population(rules, config, customers);
        let clustered = store.population_of(segstream_events::SegmentKind::Cluster);
        drop(store);
        if with_model {
            assert!(clustered > 0, "the model clustered nobody");
        }
        runs.push((with_model, elapsed * 1e6 / events as f64, events as f64 / elapsed, live));
    }
    for (with_model, us, rate, live) in &runs {
        println!(
            "{} {customers} customers: {us:.3} µs per event ({:.0} events/s), {:.0} heap bytes per customer",
            if *with_model { "with a model   " } else { "without a model" },
            rate,
            *live as f64 / customers as f64
        );
    }
    let mean = |m: bool| {
        let v: Vec<f64> = runs.iter().filter(|r| r.0 == m).map(|r| r.1).collect();
        v.iter().sum::<f64>() / v.len() as f64
    };
    println!(
        "scoring per event in the worker: {:+.3} µs ({:.2}× the time without a model)",
        mean(true) - mean(false),
        mean(true) / mean(false)
    );
}

/// A model over the default cluster features: five clusters at plausible
/// centres, the CDNOW purchase model and a spend model.
fn model_record(config: &Config) -> Vec<u8> {
    use segstream_trainer::{BgNbd, Cluster, Clustering, GammaGamma, ScaledFeature, SegmentModel};
    let features: Vec<ScaledFeature> = config
        .trainer
        .cluster_features
        .iter()
        .map(|name| ScaledFeature { name: name.clone(), log: true, mean: 1.0, std: 1.0 })
        .collect();
    let clusters = (0..5)
        .map(|k| Cluster {
            id: k,
            name: format!("group {k}"),
            centre: features.iter().enumerate().map(|(j, _)| f64::from(k) - 2.0 + 0.1 * j as f64).collect(),
            centre_raw: vec![0.0; features.len()],
            population: 1,
            share: 0.2,
            drift: None,
            gaussian: None,
        })
        .collect();
    SegmentModel {
        version: 1,
        group_id: "bench".into(),
        trained_at: 0,
        data_as_of: NOW,
        source: "bench".into(),
        customers: 1,
        buyers: 1,
        repeat_buyers: 1,
        training_ms: 0,
        purchase: Some(BgNbd { r: 0.243, alpha: 4.414, a: 0.793, b: 2.426 }),
        spend: Some(GammaGamma { p: 6.25, q: 3.74, gamma: 15.44 }),
        expected_horizon_days: 90.0,
        clv_horizon_days: 365.0,
        rfm: None,
        clusters: Some(Clustering {
            algorithm: segstream_trainer::Algorithm::Kmeans,
            features,
            clusters,
            silhouette: 0.5,
            tried: Vec::new(),
            next_id: 5,
            vanished: Vec::new(),
        }),
    }
    .to_avro()
    .unwrap()
}

/// One customer ordering every ~30 s for a year (a reseller, a bot):
/// time per order event at several points of their history, and the heap
/// their state holds at the end.
fn heavy_customer(config: &Config, max_orders_kept: u32, orders: i64) {
    let mut features = config.features.clone();
    features.max_orders_kept = max_orders_kept;
    let mut store = CustomerStore::new(SegmentRules::from_config(config).unwrap(), features).unwrap();
    // Measured from after the first order: the store's first chunk of
    // customer slots is not this customer's history.
    let mut region = None;
    // One order every 31 s: a million in 360 days.
    let step = 360 * DAY / 1_000_000;
    let mut id = String::new();
    let mut marks = Vec::new();
    let mut started = Instant::now();
    for k in 0..orders {
        id.clear();
        id.push_str(&k.to_string());
        let at = EventTime::from_millis(NOW - 360 * DAY + k * step);
        store.on_order(
            &OrderRow {
                order_id: &id,
                customer_id: "heavy",
                event_time: at,
                status: OrderStatus::Placed,
                total: 20.0,
                discount_amount: if k % 4 == 0 { 2.0 } else { 0.0 },
                item_count: 1,
                primary_category: Some(CATEGORIES[k as usize % CATEGORIES.len()]),
                payment_method: Some("card"),
                partition: 0,
                offset: 0,
            },
            at,
        );
        if k == 0 {
            region = Some(Region::new(GLOBAL));
        }
        // Mean time per event over each tenth of the history.
        if (k + 1) % (orders / 10) == 0 {
            marks.push((k + 1, started.elapsed().as_secs_f64() * 1e6 / (orders / 10) as f64));
            started = Instant::now();
        }
    }
    let stats = region.map(|r| r.change()).unwrap();
    let live = stats.bytes_allocated as i64 - stats.bytes_deallocated as i64;
    let figures: Vec<String> = marks.iter().map(|(n, us)| format!("{us:.1} µs at {n}")).collect();
    println!(
        "heavy customer, {orders} orders in {} days, max_orders_kept = {max_orders_kept}: per order event {}; heap grown by the history {live} bytes",
        360 * orders / 1_000_000,
        figures.join(", ")
    );
}

/// A checkpoint of the whole population (one partition): the copy and
/// encoding the worker does, the file written and read back, and the
/// restore into an empty store, each timed; bytes per customer.
fn checkpoint(store: &CustomerStore, config: &Config, customers: u64) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("partition-0.ckpt");
    let started = Instant::now();
    let bytes = store.checkpoint_partition(0).unwrap();
    let encoded = started.elapsed().as_secs_f64();
    std::fs::write(&path, &bytes).unwrap();
    let written = started.elapsed().as_secs_f64();
    let size = bytes.len();
    drop(bytes);
    let started = Instant::now();
    let read = std::fs::read(&path).unwrap();
    let mut restored =
        CustomerStore::new(SegmentRules::from_config(config).unwrap(), config.features.clone()).unwrap();
    let n = restored.restore_checkpoint(&read).unwrap();
    let restore = started.elapsed().as_secs_f64();
    assert_eq!(n as u64, customers);
    assert_eq!(restored.pending_timers(), store.pending_timers(), "timers rescheduled on restore");
    println!(
        "checkpoint                {size} bytes = {:.0} bytes per customer; copy + encode {encoded:.2} s, with the write {written:.2} s",
        size as f64 / customers as f64
    );
    println!(
        "restore                   {restore:.2} s (read, decode, index, timers) for {n} customers (target <= 5 s)"
    );
}
