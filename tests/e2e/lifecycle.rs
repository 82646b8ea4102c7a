//! A scripted history for a handful of customers, through the real worker:
//! exact transitions per customer, identical ids on a second run, and no
//! loss or duplicate across a graceful restart.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use segstream_events::{
    ChangeType, ClickEvent, ClickEventType, CustomerId, CustomerSegments, EventTime, OrderEvent, OrderStatus,
    PayloadFormat, SegmentChange, encode_click, encode_order,
};

use crate::support::{Setup, WorkerProc, http_get, metric, produce};

const DAY: i64 = 86_400_000;
/// 2024-01-01T10:00:00Z.
const T0: i64 = 1_704_103_200_000;

fn at(day: i64) -> EventTime {
    EventTime::from_millis(T0 + day * DAY)
}

fn click(customer: &str, day: i64, n: u32) -> (String, Vec<u8>) {
    let e = ClickEvent {
        event_id: format!("click-{customer}-{day}-{n}"),
        customer_id: CustomerId::new(customer),
        session_id: None,
        event_type: ClickEventType::PageView,
        event_time: at(day),
        device: Some("mobile".into()),
        page: Some("/".into()),
        product_id: None,
        category: Some("shoes".into()),
        price: None,
        search_query: None,
    };
    // Half the clicks as JSON: both encodings are accepted on the same topic.
    let format = if n.is_multiple_of(2) { PayloadFormat::Avro } else { PayloadFormat::Json };
    (customer.to_owned(), encode_click(&e, format).unwrap())
}

fn order(customer: &str, id: &str, day: i64, status: OrderStatus) -> (String, Vec<u8>) {
    let o = OrderEvent {
        order_id: id.to_owned(),
        customer_id: CustomerId::new(customer),
        event_time: at(day).plus_millis(60_000),
        status,
        total: 80.0,
        currency: "EUR".into(),
        discount_amount: 0.0,
        item_count: 2,
        categories: vec!["shoes".into()],
        payment_method: Some("card".into()),
    };
    (customer.to_owned(), encode_order(&o, PayloadFormat::Avro).unwrap())
}

/// The script, split in two halves at day 200 so a restart can happen in between.
/// Keyed payloads for (clickstream, orders).
type Half = (Vec<(String, Vec<u8>)>, Vec<(String, Vec<u8>)>);

fn history() -> [Half; 2] {
    use OrderStatus::*;
    let first = (
        vec![
            click("alice", 0, 0),
            click("bob", 50, 0),
            click("bob", 100, 1),
            click("carol", 3, 0),
            click("carol", 10, 1),
        ],
        vec![
            order("alice", "a1", 1, Placed),
            order("alice", "a2", 20, Placed),
            order("alice", "a3", 45, Placed),
            order("bob", "b1", 2, Placed),
            order("dave", "d1", 5, Placed),
            order("dave", "d1", 6, Cancelled),
            // A duplicate delivery of a placed order counts once.
            order("alice", "a2", 20, Placed),
        ],
    );
    let second =
        (vec![click("alice", 300, 2), click("carol", 301, 2)], vec![order("alice", "a4", 301, Placed)]);
    [first, second]
}

fn send(setup: &Setup, half: &Half) {
    let p = setup.producer();
    produce(&p, &setup.topic("clickstream"), &half.0);
    produce(&p, &setup.topic("orders"), &half.1);
}

/// (previous, entered, trigger, cause day offset in ms from T0) per customer.
type Script = BTreeMap<String, Vec<(Option<String>, String, String, i64)>>;

fn expected() -> Script {
    let t = |from: Option<&str>, to: &str, trigger: &str, ms: i64| {
        (from.map(str::to_owned), to.to_owned(), trigger.to_owned(), ms)
    };
    let order_ms = |day: i64| day * DAY + 60_000;
    BTreeMap::from([
        (
            "alice".to_owned(),
            vec![
                t(None, "prospect", "event", 0),
                t(Some("prospect"), "new", "event", order_ms(1)),
                t(Some("new"), "active", "timer", order_ms(31) + 1),
                t(Some("active"), "at_risk", "timer", order_ms(135) + 1),
                t(Some("at_risk"), "churned", "timer", order_ms(225) + 1),
                t(Some("churned"), "reactivated", "event", order_ms(301)),
            ],
        ),
        (
            // Over 3 partitions bob's order of day 2 shares alice's lane
            // and comes after her order of day 45: a late event, judged as
            // of the watermark (day 45 less the hour of lateness), when he
            // is no longer new.
            "bob".to_owned(),
            vec![
                t(None, "active", "event", order_ms(45) - 3_600_000),
                t(Some("active"), "at_risk", "timer", order_ms(92) + 1),
                t(Some("at_risk"), "churned", "timer", order_ms(182) + 1),
            ],
        ),
        ("carol".to_owned(), vec![t(None, "prospect", "event", 3 * DAY)]),
        (
            "dave".to_owned(),
            vec![t(None, "new", "event", order_ms(5)), t(Some("new"), "prospect", "event", order_ms(6))],
        ),
    ])
}

const EXPECTED_RECORDS: usize = 20; // 12 transitions: 12 entered + 8 exited

fn changes(setup: &Setup, want: usize) -> Vec<SegmentChange> {
    setup
        .read(&setup.topic("changes"), want, Duration::from_secs(60))
        .iter()
        .map(|r| SegmentChange::from_avro(r.payload.as_deref().unwrap()).unwrap())
        .collect()
}

fn script_of(changes: &[SegmentChange]) -> Script {
    let mut out = Script::new();
    for c in changes.iter().filter(|c| c.change == ChangeType::Entered) {
        out.entry(c.customer_id.to_string()).or_default().push((
            c.previous_segment.clone(),
            c.segment.clone(),
            c.trigger.as_str().to_owned(),
            c.cause_event_time.millis() - T0,
        ));
    }
    out
}

fn ids(changes: &[SegmentChange]) -> BTreeSet<String> {
    changes.iter().map(|c| c.event_id.clone()).collect()
}

fn run_to_completion(setup: &Setup, want: usize) -> (Vec<SegmentChange>, String) {
    let mut worker = setup.spawn_worker();
    let addr = worker.wait_ready(Duration::from_secs(60));
    let got = changes(setup, want);
    let metrics = http_get(&addr, "/metrics").1;
    let (status, _) = worker.terminate(Duration::from_secs(20));
    assert!(status.success(), "worker exit {status:?}:\n{}", worker.log_text());
    (got, metrics)
}

#[test]
fn scripted_history_gives_exact_transitions_and_the_same_ids_twice_and_across_a_restart() {
    let setup = Setup::new("lifecycle", 3);
    let [first, second] = history();

    // Run A: first half, graceful stop, second half, restart.
    send(&setup, &first);
    let mut worker = setup.spawn_worker();
    worker.wait_ready(Duration::from_secs(60));
    let early = changes(&setup, 12);
    let (status, took) = worker.terminate(Duration::from_secs(20));
    assert!(status.success(), "SIGTERM exit {status:?}:\n{}", worker.log_text());
    assert!(took < Duration::from_secs(10), "stop took {took:?}");
    assert_eq!(early.len(), 12, "first half: {:#?}", script_of(&early));
    send(&setup, &second);
    let (run_a, metrics) = run_to_completion(&setup, EXPECTED_RECORDS);
    assert_eq!(script_of(&run_a), expected());
    assert_eq!(run_a.len(), EXPECTED_RECORDS, "no duplicate after the restart");
    assert_eq!(ids(&run_a).len(), EXPECTED_RECORDS, "ids are unique");
    assert_eq!(
        metric(&metrics, "segstream_replayed_events_total"),
        0.0,
        "the restart restored the checkpoint written at shutdown instead of re-reading history:\n{metrics}"
    );
    assert_eq!(
        metric(&metrics, "segstream_segment_population{kind=\"lifecycle\",segment=\"reactivated\"}"),
        1.0
    );

    // Run B: same input, a fresh group and fresh outputs, all at once.
    let other = setup.second_run("b");
    let (run_b, _) = run_to_completion(&other, EXPECTED_RECORDS);
    assert_eq!(script_of(&run_b), expected());
    assert_eq!(ids(&run_b), ids(&run_a), "same input, same event ids");

    // Every change says why, with the values that decided.
    let churned = run_a.iter().find(|c| c.segment == "churned" && c.change == ChangeType::Entered).unwrap();
    assert!(churned.reason.contains("no order for 180 days"), "{}", churned.reason);
    assert_eq!(churned.features.get("threshold_churn_days"), Some(&180.0));
    assert_eq!(churned.cause_event_id, None);
    let reactivated = run_a.iter().find(|c| c.segment == "reactivated").unwrap();
    assert_eq!(reactivated.cause_event_id.as_deref(), Some("a4:placed"));
    assert_eq!(reactivated.features.get("lifetime_orders"), Some(&4.0));

    // The compacted membership topic holds each customer's current stage last.
    let members = setup.read(&setup.topic("members"), 12, Duration::from_secs(30));
    let mut latest: BTreeMap<String, CustomerSegments> = BTreeMap::new();
    for r in &members {
        let m = CustomerSegments::from_avro(r.payload.as_deref().unwrap()).unwrap();
        assert_eq!(r.key.as_deref(), Some(m.customer_id.as_str()));
        latest.insert(m.customer_id.to_string(), m);
    }
    let stage = |c: &str| latest[c].segments.iter().map(|m| m.segment.clone()).collect::<Vec<_>>();
    assert_eq!(stage("alice"), ["reactivated"]);
    assert_eq!(stage("bob"), ["churned"]);
    assert_eq!(stage("carol"), ["prospect"]);
    assert_eq!(stage("dave"), ["prospect"]);
}

#[test]
fn worker_serves_metrics_health_and_readiness() {
    let setup = Setup::new("http", 2);
    send(&setup, &history()[0]);
    let mut worker: WorkerProc = setup.spawn_worker();
    let addr = worker.wait_ready(Duration::from_secs(60));
    let got = changes(&setup, 14);
    let (status, body) = http_get(&addr, "/healthz");
    assert_eq!((status, body.trim()), (200, "ok"));
    let metrics = http_get(&addr, "/metrics").1;
    assert_eq!(
        metric(&metrics, &format!("segstream_events_in_total{{topic=\"{}\"}}", setup.topic("orders"))),
        7.0
    );
    assert_eq!(metric(&metrics, "segstream_customers_in_state"), 4.0);
    let entered = metric(&metrics, "segstream_segment_changes_total{change=\"entered\",kind=\"lifecycle\"}");
    assert_eq!(entered, 9.0, "{:#?}", script_of(&got));
    assert_eq!(got.len(), 14);
    assert!(metric(&metrics, "segstream_transactions_total{result=\"committed\"}") >= 1.0);
    assert!(metrics.contains("segstream_event_to_change_latency_seconds_bucket"), "{metrics}");
    assert!(worker.terminate(Duration::from_secs(20)).0.success());
}

/// Under exactly-once (the default) commits keep a cadence of one per
/// `worker.commit_interval_ms` counted from the last one's start (Kafka
/// Streams' `commit.interval.ms`): a
/// worker with nothing to commit does not commit, and the first change
/// after a quiet spell longer than the interval is readable at once, not an
/// interval after its record came.
#[test]
fn the_first_change_after_a_quiet_spell_commits_at_once_not_a_commit_interval_later() {
    const INTERVAL: Duration = Duration::from_secs(15);
    let setup = Setup::new("cadence", 1)
        .with(&format!("worker.commit_interval_ms={}", INTERVAL.as_millis()))
        .with("worker.transaction_timeout_ms=60000");
    let mut worker: WorkerProc = setup.spawn_worker();
    let addr = worker.wait_ready(Duration::from_secs(60));
    let p = setup.producer();
    produce(&p, &setup.topic("clickstream"), &[click("first", 0, 0)]);
    assert_eq!(setup.read(&setup.topic("changes"), 1, Duration::from_secs(60)).len(), 1);
    let committed =
        || metric(&http_get(&addr, "/metrics").1, "segstream_transactions_total{result=\"committed\"}");
    let before = committed();
    std::thread::sleep(INTERVAL + Duration::from_secs(1));
    assert_eq!(committed(), before, "an idle worker has nothing to commit");

    let sent = Instant::now();
    produce(&p, &setup.topic("clickstream"), &[click("second", 0, 0)]);
    let got = setup.read(&setup.topic("changes"), 2, Duration::from_secs(60));
    let waited = sent.elapsed();
    assert_eq!(got.len(), 2);
    assert!(
        waited < INTERVAL / 2,
        "the change after a quiet spell took {waited:?} to be readable (the interval is {INTERVAL:?})"
    );
    assert!(worker.terminate(Duration::from_secs(20)).0.success());
}
