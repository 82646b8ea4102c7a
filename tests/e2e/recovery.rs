//! Recovery at the live tail: a worker that rebuilds a partition after a
//! SIGKILL repeats the timing-dependent decisions the dead one committed,
//! so its state is the committed one; a second worker with the same
//! instance id fences the first, which stops and says why; a broker that
//! restarts mid-stream is ridden out.

use std::time::Duration;

use segstream_events::{ClickEventType, SegmentChange};

use crate::support::{
    Broker, KeepLogsOnPanic, Setup, click_record, http_get, metric, order_record, produce, sql_get,
};

const DAY: i64 = 86_400_000;
/// 2024-01-01T10:00:00Z.
const T0: i64 = 1_704_103_200_000;

fn order(customer: &str, id: &str, day: i64) -> (String, Vec<u8>) {
    order_record(customer, id, T0 + day * DAY)
}

/// A customer id that Kafka's partitioner puts on `partition` of 2.
fn customer_on(partition: i32, prefix: &str) -> String {
    (0..)
        .map(|i| format!("{prefix}-{i}"))
        .find(|c| segstream_kafka::partition_for(c.as_bytes(), 2) == partition)
        .unwrap()
}

fn lifecycle_of(addr: &str, customer: &str) -> String {
    let q = format!("SELECT%20lifecycle%20FROM%20features%20WHERE%20customer_id%20%3D%20%27{customer}%27");
    let (status, body) = sql_get(addr, &format!("/sql?format=json&q={q}"));
    assert_eq!(status, 200, "{body}");
    let rows: serde_json::Value = serde_json::from_str(body.trim()).unwrap();
    rows[0]["lifecycle"].as_str().unwrap_or_default().to_owned()
}

/// Partition 0 holds one buyer, partition 1 only browsing. Partition 0 goes
/// quiet and follows the input's watermark (day 200): its buyer churns on
/// timers. Then the buyer orders again with an event time before that
/// (day 150): a late event, judged as of the watermark (day 200 less the
/// hour of lateness), they are active again (150 days of silence before it
/// is no reactivation). Rebuilt from the events alone, the order of day 150
/// would come before the timers and be judged as of day 150 (other records,
/// other ids): only the committed follow decision gives back the committed
/// state, and nothing committed is emitted again.
#[test]
fn a_partition_rebuilt_after_sigkill_repeats_the_committed_follow_and_matches_the_committed_state() {
    let setup = Setup::new("follow", 2).with("time.idle_partition_ms=500");
    let (buyer, browser) = (customer_on(0, "buyer"), customer_on(1, "browser"));
    let p = setup.producer();
    produce(&p, &setup.topic("orders"), &[order(&buyer, "o1", 0)]);
    let clicks: Vec<_> = [0, 100, 200]
        .iter()
        .map(|d| click_record(&browser, T0 + d * DAY, ClickEventType::PageView))
        .collect();
    produce(&p, &setup.topic("clickstream"), &clicks);

    let mut first = setup.spawn_worker();
    first.wait_ready(Duration::from_secs(60));
    let churned = |c: &SegmentChange| c.customer_id.as_str() == buyer && c.segment == "churned";
    let changes = |want| -> Vec<SegmentChange> {
        setup
            .read(&setup.topic("changes"), want, Duration::from_secs(60))
            .iter()
            .map(|r| SegmentChange::from_avro(r.payload.as_deref().unwrap()).unwrap())
            .collect()
    };
    // The buyer: new, then active, at risk and churned on timers; the browser: prospect.
    let before = changes(8);
    assert!(before.iter().any(churned), "partition 0 followed the watermark: {before:#?}");
    produce(&p, &setup.topic("orders"), &[order(&buyer, "o2", 150)]);
    let committed = changes(before.len() + 2);
    let last = committed.iter().rfind(|c| c.customer_id.as_str() == buyer).unwrap();
    assert_eq!((last.segment.as_str(), last.change.as_str()), ("active", "entered"), "{committed:#?}");
    assert_eq!(last.previous_segment.as_deref(), Some("churned"));
    assert_eq!(last.cause_event_time.millis(), T0 + 200 * DAY - 3_600_000, "judged as of the watermark");
    assert_eq!(lifecycle_of(&first.sql_addr(), &buyer), "active");

    first.kill();
    let mut second = setup.spawn_worker();
    let addr = second.wait_ready(Duration::from_secs(90));
    let sql = second.sql_addr();
    assert_eq!(lifecycle_of(&sql, &buyer), "active", "the rebuilt state is the committed one");
    let metrics = http_get(&addr, "/metrics").1;
    assert!(metric(&metrics, "segstream_replayed_events_total") >= 5.0, "{metrics}");
    // Long enough for the quiet partitions to be looked at again.
    std::thread::sleep(Duration::from_secs(2));
    let after = changes(committed.len());
    assert_eq!(
        after.len(),
        committed.len(),
        "nothing committed is emitted again: {:#?}",
        &after[committed.len()..]
    );
    assert!(second.terminate(Duration::from_secs(20)).0.success());
}

#[test]
fn a_second_worker_with_the_same_instance_id_fences_the_first_which_stops_and_says_why() {
    let setup = Setup::new("twin", 1);
    let p = setup.producer();
    produce(&p, &setup.topic("clickstream"), &[click_record("c-1", T0, ClickEventType::PageView)]);
    let mut first = setup.spawn_worker();
    first.wait_ready(Duration::from_secs(60));
    let mut second = setup.spawn_worker();
    let status = first.wait_exit(Duration::from_secs(30));
    assert!(!status.success());
    let log = first.log_text();
    assert!(log.contains("another worker runs with worker.instance_id="), "{log}");
    // Told by the producer: a fenced group consumer alone could be a self-fence.
    assert!(log.contains("seen by its transactional producer"), "{log}");
    let addr = second.wait_ready(Duration::from_secs(60));
    produce(&p, &setup.topic("clickstream"), &[click_record("c-2", T0 + DAY, ClickEventType::PageView)]);
    let changes = setup.read(&setup.topic("changes"), 2, Duration::from_secs(30));
    assert_eq!(changes.len(), 2, "the second worker carries on");
    assert_eq!(metric(&http_get(&addr, "/metrics").1, "segstream_customers_in_state"), 2.0);
    assert!(second.terminate(Duration::from_secs(20)).0.success());
}

/// The broker stops mid-stream and comes back on the same log directory
/// after longer than the session: the worker rides it out by itself,
/// nothing is lost and nothing is committed twice. A backlog of clicks
/// keeps transactions open while the broker goes away, and the member's
/// session ends on the client's side (librdkafka then rejoins under the
/// same instance id, which can fence its own consumer).
#[test]
fn a_broker_restarted_mid_stream_loses_nothing_and_the_worker_carries_on_by_itself() {
    let _keep = KeepLogsOnPanic;
    let broker = Broker::own("restart");
    // Down for longer than the transaction timeout too: the coordinator
    // aborts the open transaction when it comes back.
    let setup = Setup::on(&broker, "restart", 2).with("worker.transaction_timeout_ms=4000");
    let customers: Vec<String> = (0..100).map(|i| format!("rs-{i}")).collect();
    let p = setup.producer();
    let orders =
        |day: i64| -> Vec<_> { customers.iter().map(|c| order(c, &format!("{c}-{day}"), day)).collect() };
    produce(&p, &setup.topic("orders"), &orders(0));
    // Browsing through day 120 moves stream time (and fires the timers) while
    // the worker works through it.
    let clicks: Vec<_> = (0..120 * 24 * 12)
        .map(|i| click_record(&customers[i as usize % 100], T0 + DAY + i * 300_000, ClickEventType::PageView))
        .collect();
    produce(&p, &setup.topic("clickstream"), &clicks);
    drop(p);
    let mut worker = setup.spawn_worker();
    worker.wait_ready(Duration::from_secs(60));
    setup.read(&setup.topic("changes"), 1, Duration::from_secs(60));

    // Down for longer than the session (6 s), as after a slow restart.
    broker.restart(Duration::from_secs(10));
    // A fresh producer: the old one's connections died with the broker.
    produce(&setup.producer(), &setup.topic("orders"), &orders(200));
    let changes: Vec<SegmentChange> = setup
        // New (1 record each), then new → active → at risk → churned on
        // timers and reactivated by the order (an exit and an entry each).
        .read(&setup.topic("changes"), 100 + 8 * 100, Duration::from_secs(120))
        .iter()
        .map(|r| SegmentChange::from_avro(r.payload.as_deref().unwrap()).unwrap())
        .collect();
    let ids: std::collections::BTreeSet<_> = changes.iter().map(|c| c.event_id.clone()).collect();
    assert_eq!(ids.len(), changes.len(), "no change committed twice");
    assert_eq!(changes.len(), 900, "nothing lost:\n{}", worker.log_text());
    let reactivated =
        changes.iter().filter(|c| c.segment == "reactivated" && c.change.as_str() == "entered").count();
    assert_eq!(reactivated, 100, "every customer churned and came back");
    assert!(worker.exited().is_none(), "the worker is still running:\n{}", worker.log_text());
    assert!(worker.terminate(Duration::from_secs(30)).0.success());
}
