//! Event time: silent customers move on timers driven by other customers'
//! events; events later than the allowed lateness follow the configured policy.

use std::collections::BTreeMap;
use std::time::Duration;

use segstream_events::{ChangeType, ClickEventType, SegmentChange, Trigger};

use crate::support::{Setup, click_record, http_get, metric, order_record, produce};

const DAY: i64 = 86_400_000;
/// 2024-01-01T10:00:00Z.
const T0: i64 = 1_704_103_200_000;

fn click(customer: &str, day: i64) -> (String, Vec<u8>) {
    click_at(customer, T0 + day * DAY)
}

fn click_at(customer: &str, ms: i64) -> (String, Vec<u8>) {
    click_record(customer, ms, ClickEventType::PageView)
}

fn order(customer: &str, day: i64) -> (String, Vec<u8>) {
    order_record(customer, &format!("o-{customer}-{day}"), T0 + day * DAY)
}

#[test]
fn a_silent_customer_goes_at_risk_then_churned_on_other_customers_events() {
    // One partition, so every customer shares the stream time.
    let setup = Setup::new("timers", 1);
    let p = setup.producer();
    produce(&p, &setup.topic("orders"), &[order("sam", 0)]);
    let others: Vec<_> = [50, 100, 150, 200, 300].iter().map(|d| click(&format!("other-{d}"), *d)).collect();
    produce(&p, &setup.topic("clickstream"), &others);

    let mut worker = setup.spawn_worker();
    let addr = worker.wait_ready(Duration::from_secs(60));
    // sam: 4 transitions (7 records); the five others: one entry each.
    let records = setup.read(&setup.topic("changes"), 12, Duration::from_secs(60));
    let metrics = http_get(&addr, "/metrics").1;
    assert!(worker.terminate(Duration::from_secs(20)).0.success());

    let changes: Vec<SegmentChange> =
        records.iter().map(|r| SegmentChange::from_avro(r.payload.as_deref().unwrap()).unwrap()).collect();
    let sam: Vec<(String, Trigger, i64)> = changes
        .iter()
        .filter(|c| c.customer_id.as_str() == "sam" && c.change == ChangeType::Entered)
        .map(|c| (c.segment.clone(), c.trigger, (c.cause_event_time.millis() - T0)))
        .collect();
    assert_eq!(
        sam,
        vec![
            ("new".to_owned(), Trigger::Event, 0),
            ("active".to_owned(), Trigger::Timer, 30 * DAY + 1),
            ("at_risk".to_owned(), Trigger::Timer, 90 * DAY + 1),
            ("churned".to_owned(), Trigger::Timer, 180 * DAY + 1),
        ]
    );
    assert!(changes.iter().filter(|c| c.trigger == Trigger::Timer).all(|c| c.cause_event_id.is_none()));
    assert_eq!(changes.len(), 12, "{changes:#?}");
    assert_eq!(metric(&metrics, "segstream_timer_transitions_total"), 3.0);
}

#[test]
fn events_later_than_the_allowed_lateness_are_dead_lettered_when_configured() {
    let setup =
        Setup::new("late", 1).with("time.late_events=dead_letter").with("time.allowed_lateness_ms=86400000");
    let p = setup.producer();
    // In order, then one within the lateness (half a day back), then one 20 days back.
    let late = click("lou", 10);
    let within = click_at("kim", T0 + 30 * DAY - DAY / 2);
    produce(&p, &setup.topic("clickstream"), &[click("ann", 0), click("bo", 30), within, late.clone()]);

    let mut worker = setup.spawn_worker();
    let addr = worker.wait_ready(Duration::from_secs(60));
    let dead = setup.read(&setup.topic("dlq"), 1, Duration::from_secs(60));
    let changes = setup.read(&setup.topic("changes"), 3, Duration::from_secs(30));
    let metrics = http_get(&addr, "/metrics").1;
    assert!(worker.terminate(Duration::from_secs(20)).0.success());

    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].header("segstream.error.code"), Some("late_event"));
    assert_eq!(dead[0].payload.as_deref(), Some(late.1.as_slice()), "original bytes kept");
    assert_eq!(dead[0].header("segstream.source.offset"), Some("3"));
    let entered: BTreeMap<String, String> = changes
        .iter()
        .map(|r| SegmentChange::from_avro(r.payload.as_deref().unwrap()).unwrap())
        .map(|c| (c.customer_id.to_string(), c.segment))
        .collect();
    assert_eq!(entered.keys().map(String::as_str).collect::<Vec<_>>(), ["ann", "bo", "kim"]);
    let topic = setup.topic("clickstream");
    assert_eq!(metric(&metrics, &format!("segstream_late_events_total{{topic=\"{topic}\"}}")), 1.0);
}

#[test]
fn a_quiet_partition_follows_the_input_watermark_so_its_timers_fire() {
    let setup = Setup::new("idle", 2).with("time.idle_partition_ms=1500");
    // sam alone on one partition; everyone else on the other.
    let sam_partition = segstream_kafka::partition_for(b"sam", 2);
    let others: Vec<String> = (0..200)
        .map(|i| format!("other-{i}"))
        .filter(|c| segstream_kafka::partition_for(c.as_bytes(), 2) != sam_partition)
        .take(5)
        .collect();
    let p = setup.producer();
    produce(&p, &setup.topic("orders"), &[order("sam", 0)]);
    let clicks: Vec<_> = others.iter().zip([50, 100, 150, 200, 300]).map(|(c, d)| click(c, d)).collect();
    produce(&p, &setup.topic("clickstream"), &clicks);

    let mut worker = setup.spawn_worker();
    worker.wait_ready(Duration::from_secs(60));
    let records = setup.read(&setup.topic("changes"), 12, Duration::from_secs(60));
    assert!(worker.terminate(Duration::from_secs(20)).0.success());
    let sam: Vec<(String, Trigger)> = records
        .iter()
        .map(|r| SegmentChange::from_avro(r.payload.as_deref().unwrap()).unwrap())
        .filter(|c| c.customer_id.as_str() == "sam" && c.change == ChangeType::Entered)
        .map(|c| (c.segment, c.trigger))
        .collect();
    assert_eq!(
        sam,
        [
            ("new", Trigger::Event),
            ("active", Trigger::Timer),
            ("at_risk", Trigger::Timer),
            ("churned", Trigger::Timer)
        ]
        .map(|(s, t)| (s.to_owned(), t))
    );
}

/// A year of silence catching up at once: one click per partition moves its
/// stream time 400 days on, and every customer's timers fall due. They fire
/// in parts of `worker.max_timers_per_step`, each part a decision, over
/// several transactions instead of one that could run into the transaction
/// timeout. A SIGKILL in the middle of the firing and a restart (from a
/// checkpoint taken between parts, then the parts committed after it) still
/// commit every change exactly once, in each customer's order.
#[test]
fn a_mass_firing_of_timers_is_split_over_transactions_and_survives_a_sigkill_in_the_middle() {
    let setup =
        Setup::new("massfire", 2).with("worker.max_timers_per_step=10").with("checkpoint.interval_ms=300");
    let customers: Vec<String> = (0..3000).map(|i| format!("mf-{i}")).collect();
    let p = setup.producer();
    let orders: Vec<_> = customers.iter().map(|c| order(c, 0)).collect();
    produce(&p, &setup.topic("orders"), &orders);
    let mut worker = setup.spawn_worker();
    let addr = worker.wait_ready(Duration::from_secs(60));
    assert_eq!(setup.read(&setup.topic("changes"), 3000, Duration::from_secs(60)).len(), 3000, "all new");

    let jump: Vec<_> = (0..2)
        .map(|partition| {
            let c = (0..)
                .map(|i| format!("jump-{i}"))
                .find(|c| segstream_kafka::partition_for(c.as_bytes(), 2) == partition);
            click(&c.unwrap(), 400)
        })
        .collect();
    const COMMITTED: &str = "segstream_transactions_total{result=\"committed\"}";
    let before_jump = metric(&http_get(&addr, "/metrics").1, COMMITTED);
    produce(&p, &setup.topic("clickstream"), &jump);
    // Killed once two transactions with parts of the firing committed, with more to come.
    let started = std::time::Instant::now();
    let (parts, committed) = loop {
        let m = http_get(&addr, "/metrics").1;
        let (parts, committed) = (metric(&m, "segstream_decisions_total"), metric(&m, COMMITTED));
        if committed >= before_jump + 2.0 {
            break (parts, committed - before_jump);
        }
        assert!(started.elapsed() < Duration::from_secs(60), "no part of the firing was committed:\n{m}");
        std::thread::sleep(Duration::from_millis(5));
    };
    worker.kill();

    let mut again = setup.spawn_worker();
    let addr = again.wait_ready(Duration::from_secs(60));
    // Each customer: new → active → at risk → churned (an exit and an entry each).
    let records = setup.read(&setup.topic("changes"), 3000 * 7 + 2, Duration::from_secs(180));
    let metrics = http_get(&addr, "/metrics").1;
    let log = again.log_text();
    assert!(again.terminate(Duration::from_secs(30)).0.success());
    let changes: Vec<SegmentChange> =
        records.iter().map(|r| SegmentChange::from_avro(r.payload.as_deref().unwrap()).unwrap()).collect();
    let ids: std::collections::BTreeSet<&str> = changes.iter().map(|c| c.event_id.as_str()).collect();
    assert_eq!(ids.len(), changes.len(), "no change committed twice");
    assert_eq!(changes.len(), 3000 * 7 + 2, "every change of the firing (and the two jumpers' entries)");
    let mut entered: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for c in changes.iter().filter(|c| c.change == ChangeType::Entered) {
        entered.entry(c.customer_id.as_str()).or_default().push(c.segment.as_str());
    }
    for c in &customers {
        assert_eq!(entered[c.as_str()], ["new", "active", "at_risk", "churned"], "{c}");
    }
    // 12,000 timers (three transitions and, at day 367, the compaction of
    // each customer) in parts of 10: the restarted worker did only what was
    // not committed.
    let parts_after = metric(&metrics, "segstream_decisions_total");
    assert!(
        parts >= 2.0 && parts_after < 1200.0,
        "parts: {parts} before the SIGKILL, {parts_after} after\n{log}"
    );
    assert!(parts + parts_after >= 1200.0, "parts: {parts} before the SIGKILL, {parts_after} after\n{log}");
    eprintln!(
        "mass firing: {parts} parts sent before the SIGKILL ({committed} transactions committed since the jump), {parts_after} after the restart"
    );
}
