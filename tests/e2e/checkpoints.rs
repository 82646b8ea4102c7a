//! Durable state: a worker restores a partition from its checkpoint and
//! reads only the tail; when retention has deleted the records a state
//! needs and no checkpoint covers them, the partition stops and says why
//! (or goes on, counted, when told to accept that).

use std::time::{Duration, Instant};

use segstream_events::{ClickEventType, SegmentChange};

use crate::support::{
    KeepLogsOnPanic, S3Server, Setup, WorkerProc, click_record, http_get, metric, order_record, produce,
    sql_get,
};

const DAY: i64 = 86_400_000;
/// 2024-01-01T10:00:00Z.
const T0: i64 = 1_704_103_200_000;

/// A column of one customer's row of the live feature table.
fn feature_of(addr: &str, customer: &str, column: &str) -> serde_json::Value {
    let q = format!("SELECT%20{column}%20FROM%20features%20WHERE%20customer_id%20%3D%20%27{customer}%27");
    let (status, body) = sql_get(addr, &format!("/sql?format=json&q={q}"));
    assert_eq!(status, 200, "{body}");
    let rows: serde_json::Value = serde_json::from_str(body.trim()).unwrap();
    rows[0][column].clone()
}

fn lifecycle_of(addr: &str, customer: &str) -> String {
    feature_of(addr, customer, "lifecycle").as_str().unwrap_or_default().to_owned()
}

/// Waits until the live feature table holds `n` customers.
fn wait_customers(addr: &str, n: usize, worker: &WorkerProc) {
    let count = "SELECT%20count(*)%20AS%20n%20FROM%20features";
    let deadline = Instant::now() + Duration::from_secs(30);
    while sql_get(addr, &format!("/sql?format=json&q={count}")).1.trim() != format!("[{{\"n\":{n}}}]") {
        assert!(Instant::now() < deadline, "{n} customers arrive:\n{}", worker.log_text());
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Polls `/metrics` until `name` reaches `at_least`.
fn wait_metric(addr: &str, name: &str, at_least: f64, timeout: Duration) -> f64 {
    let deadline = Instant::now() + timeout;
    loop {
        let value = metric(&http_get(addr, "/metrics").1, name);
        if value >= at_least {
            return value;
        }
        assert!(Instant::now() < deadline, "{name} stayed at {value}, below {at_least}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn after_retention_deleted_the_early_records_a_checkpoint_restores_the_right_state_and_without_one_the_partition_stops()
 {
    let _keep = KeepLogsOnPanic;
    let setup = Setup::new("retention", 1).with("checkpoint.interval_ms=200");
    let p = setup.producer();
    let (orders, clicks) = (setup.topic("orders"), setup.topic("clickstream"));
    produce(&p, &orders, &[order_record("ann", "a1", T0), order_record("bob", "b1", T0 + DAY)]);
    produce(&p, &clicks, &[click_record("ann", T0 + 2 * DAY, ClickEventType::PageView)]);
    let mut first = setup.spawn_worker();
    first.wait_ready(Duration::from_secs(60));
    let sql = first.sql_addr();
    let deadline = Instant::now() + Duration::from_secs(30);
    while feature_of(&sql, "ann", "page_views_30d") != 1 {
        assert!(Instant::now() < deadline, "ann's click is processed:\n{}", first.log_text());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(lifecycle_of(&sql, "ann"), "new");
    // At shutdown: the last commit, then a checkpoint of every partition.
    assert!(first.terminate(Duration::from_secs(30)).0.success());

    // Retention deletes everything read so far; ann orders again on day 50.
    setup.delete_records(&orders, 0);
    setup.delete_records(&clicks, 0);
    produce(&p, &orders, &[order_record("ann", "a2", T0 + 50 * DAY)]);
    let mut second = setup.spawn_worker();
    let addr = second.wait_ready(Duration::from_secs(60));
    let sql = second.sql_addr();
    let deadline = Instant::now() + Duration::from_secs(30);
    while lifecycle_of(&sql, "ann") != "active" {
        assert!(Instant::now() < deadline, "ann's second order makes her active:\n{}", second.log_text());
        std::thread::sleep(Duration::from_millis(200));
    }
    let metrics = http_get(&addr, "/metrics").1;
    assert_eq!(metric(&metrics, "segstream_customers_in_state"), 2.0, "bob came back from the checkpoint");
    assert_eq!(
        metric(&metrics, "segstream_replayed_events_total"),
        0.0,
        "nothing before the checkpoint is read"
    );
    assert!(second.log_text().contains("restoring from a checkpoint"), "{}", second.log_text());
    let changes: Vec<SegmentChange> = setup
        .read(&setup.topic("changes"), 4, Duration::from_secs(30))
        .iter()
        .map(|r| SegmentChange::from_avro(r.payload.as_deref().unwrap()).unwrap())
        .collect();
    let entered_new = changes
        .iter()
        .filter(|c| c.customer_id.as_str() == "ann" && c.segment == "new" && c.change.as_str() == "entered");
    assert_eq!(entered_new.count(), 1, "ann is not taken for a first-time buyer again: {changes:#?}");
    assert!(second.terminate(Duration::from_secs(30)).0.success());

    // The same group without its checkpoints: the partition stops, nothing is built.
    let empty = tempfile::tempdir().unwrap();
    let elsewhere = setup.with(&format!("checkpoint.url={}", empty.path().display()));
    let third = elsewhere.spawn_worker();
    let addr = third.http_addr(Duration::from_secs(60));
    wait_metric(&addr, "segstream_partitions_stopped", 1.0, Duration::from_secs(60));
    let (status, body) = http_get(&addr, "/readyz");
    assert_eq!(status, 503);
    assert!(
        body.contains("partition 0 stopped")
            && body.contains("are gone")
            && body.contains("on_missing_history"),
        "{body}"
    );
    assert_eq!(metric(&http_get(&addr, "/metrics").1, "segstream_customers_in_state"), 0.0);
    assert!(third.log_text().contains("partition stopped"), "{}", third.log_text());
    drop(third);

    // Told to accept it: it goes on from what the logs hold, counted.
    let accepting = elsewhere.with("recovery.on_missing_history=accept").spawn_worker();
    let addr = accepting.wait_ready(Duration::from_secs(60));
    let metrics = http_get(&addr, "/metrics").1;
    assert_eq!(metric(&metrics, "segstream_missing_history_total"), 3.0, "two orders and a click gone");
    assert_eq!(metric(&metrics, "segstream_customers_in_state"), 1.0);
}

/// The Parquet feature files that checkpoints write for every partition,
/// read with DataFusion, are the live feature table at the same offsets.
#[test]
fn the_parquet_feature_files_of_all_partitions_equal_the_live_feature_table() {
    parquet_files_equal_the_live_table(1);
}

/// The same with two pipeline threads: `/sql` puts both threads' customers
/// in one table.
#[test]
fn the_live_feature_table_of_two_pipeline_threads_holds_both_threads_customers() {
    parquet_files_equal_the_live_table(2);
}

fn parquet_files_equal_the_live_table(threads: usize) {
    let _keep = KeepLogsOnPanic;
    let setup = Setup::new(&format!("parquet{threads}"), 3)
        .with("time.idle_partition_ms=300")
        .with("segments.definitions=")
        .with(&format!("worker.threads={threads}"));
    let p = setup.producer();
    let customers: Vec<String> = (0..30).map(|i| format!("pq-{i}")).collect();
    let orders: Vec<_> = customers
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 3 != 0)
        .map(|(i, c)| order_record(c, &format!("{c}-o"), T0 + i as i64 * DAY))
        .collect();
    let clicks: Vec<_> = customers
        .iter()
        .enumerate()
        .map(|(i, c)| click_record(c, T0 + (i as i64 % 7) * DAY + 3_600_000, ClickEventType::ProductView))
        .collect();
    produce(&p, &setup.topic("orders"), &orders);
    produce(&p, &setup.topic("clickstream"), &clicks);
    let mut worker = setup.spawn_worker();
    worker.wait_ready(Duration::from_secs(60));
    let sql = worker.sql_addr();
    wait_customers(&sql, 30, &worker);
    // Quiet partitions follow the input's watermark: all stand at one time.
    std::thread::sleep(Duration::from_secs(2));
    let query = "SELECT * FROM features ORDER BY customer_id";
    let (status, live) = sql_get(&sql, &format!("/sql?format=json&q={}", query.replace(' ', "%20")));
    assert_eq!(status, 200, "{live}");
    // Shutdown checkpoints every partition at the committed offsets.
    assert!(worker.terminate(Duration::from_secs(30)).0.success());

    let folder = format!("{}/g-{}/features/", setup.config().checkpoint.url, setup.name);
    let files = std::fs::read_dir(&folder).unwrap().count();
    assert_eq!(files, 3, "one feature file per partition in {folder}");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let from_files = runtime.block_on(async {
        let ctx = datafusion::prelude::SessionContext::new();
        ctx.register_parquet("features", &folder, datafusion::prelude::ParquetReadOptions::default())
            .await
            .unwrap();
        segstream_sql::query::answer(&ctx, query, segstream_sql::query::OutputFormat::Json).await.unwrap()
    });
    assert_eq!(from_files.trim(), live.trim(), "the Parquet files hold the live feature table");
}

/// Checkpoints go to an S3-compatible store (moto on 127.0.0.1) and a
/// restarted worker restores from there.
#[test]
fn checkpoints_written_to_and_restored_from_an_s3_compatible_store() {
    let _keep = KeepLogsOnPanic;
    let s3 = S3Server::start("segstream-test");
    let setup = Setup::new("s3", 2)
        .with("checkpoint.url=s3://segstream-test/state")
        .with(&format!("checkpoint.options.aws_endpoint={}", s3.endpoint))
        .with("checkpoint.options.aws_allow_http=\"true\"")
        .with("checkpoint.options.aws_access_key_id=test")
        .with("checkpoint.options.aws_secret_access_key=test")
        .with("checkpoint.options.aws_region=us-east-1");
    let p = setup.producer();
    let orders: Vec<_> = (0..20).map(|i| order_record(&format!("s3-{i}"), "o1", T0 + i * DAY)).collect();
    produce(&p, &setup.topic("orders"), &orders);
    let mut first = setup.spawn_worker();
    first.wait_ready(Duration::from_secs(60));
    let sql = first.sql_addr();
    wait_customers(&sql, 20, &first);
    assert!(first.terminate(Duration::from_secs(30)).0.success());
    let keys = s3.keys("segstream-test", "state/");
    let group = format!("g-{}", setup.name);
    for partition in 0..2 {
        let state = format!("state/{group}/state/partition-0000{partition}/");
        let features = format!("state/{group}/features/partition-0000{partition}.parquet");
        assert!(
            keys.iter().any(|k| k.starts_with(&state)),
            "a checkpoint of partition {partition}: {keys:?}"
        );
        assert!(keys.contains(&features), "the feature file of partition {partition}: {keys:?}");
    }

    produce(&p, &setup.topic("orders"), &[order_record("s3-0", "o2", T0 + 40 * DAY)]);
    let second = setup.spawn_worker();
    let addr = second.wait_ready(Duration::from_secs(60));
    let sql = second.sql_addr();
    let deadline = Instant::now() + Duration::from_secs(30);
    while lifecycle_of(&sql, "s3-0") != "active" {
        assert!(Instant::now() < deadline, "s3-0's second order:\n{}", second.log_text());
        std::thread::sleep(Duration::from_millis(100));
    }
    let metrics = http_get(&addr, "/metrics").1;
    assert_eq!(metric(&metrics, "segstream_customers_in_state"), 20.0);
    assert_eq!(metric(&metrics, "segstream_replayed_events_total"), 0.0, "restored, not re-read");
    assert_eq!(second.log_text().matches("restoring from a checkpoint").count(), 2, "{}", second.log_text());
}

/// A third worker joins two that own every partition: only the partitions
/// it takes move (cooperative rebalancing), the others go on untouched; the
/// ones that move are restored from the checkpoints written at their
/// revocation, so no worker re-reads anything, and every change is still
/// committed once.
#[test]
fn a_worker_joining_a_running_group_makes_no_one_replay_what_it_keeps_or_receives() {
    let _keep = KeepLogsOnPanic;
    let setup = Setup::new("join", 6);
    let p = setup.producer();
    let customers: Vec<String> = (0..300).map(|i| format!("jn-{i}")).collect();
    let send = |from_day: i64| {
        let orders: Vec<_> = customers
            .iter()
            .map(|c| order_record(c, &format!("{c}-{from_day}"), T0 + from_day * DAY))
            .collect();
        let clicks: Vec<_> = customers
            .iter()
            .flat_map(|c| {
                (1..4).map(move |d| click_record(c, T0 + (from_day + d) * DAY, ClickEventType::PageView))
            })
            .collect();
        produce(&p, &setup.topic("orders"), &orders);
        produce(&p, &setup.topic("clickstream"), &clicks);
    };
    send(0);
    let workers: Vec<_> = (0..3).map(|i| setup.with(&format!("worker.instance_id=join-w{i}"))).collect();
    let first: Vec<_> = workers[..2].iter().map(Setup::spawn_worker).collect();
    let addrs: Vec<String> = first.iter().map(|w| w.wait_ready(Duration::from_secs(60))).collect();
    let consumed = |addrs: &[String]| -> f64 {
        addrs
            .iter()
            .map(|a| {
                let m = http_get(a, "/metrics").1;
                ["clickstream", "orders"]
                    .iter()
                    .map(|t| {
                        metric(&m, &format!("segstream_events_in_total{{topic=\"{}\"}}", setup.topic(t)))
                    })
                    .sum::<f64>()
            })
            .sum()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while consumed(&addrs) < 1200.0 {
        assert!(Instant::now() < deadline, "the two workers read everything");
        std::thread::sleep(Duration::from_millis(100));
    }

    // The two may have settled through more than one rebalance: what they
    // restored so far is the baseline.
    for a in &addrs {
        wait_metric(a, "segstream_assigned_partitions", 1.0, Duration::from_secs(60));
    }
    let restores = |w: &WorkerProc| w.log_text().matches("restoring from a checkpoint").count();
    let before: Vec<usize> = first.iter().map(restores).collect();

    let third = workers[2].spawn_worker();
    let third_addr = third.http_addr(Duration::from_secs(60));
    wait_metric(&third_addr, "segstream_assigned_partitions", 1.0, Duration::from_secs(60));
    third.wait_ready(Duration::from_secs(60));
    let mut kept = 0.0;
    for ((w, a), before) in first.iter().zip(&addrs).zip(before) {
        w.wait_ready(Duration::from_secs(60));
        let m = http_get(a, "/metrics").1;
        kept += metric(&m, "segstream_assigned_partitions");
        assert_eq!(metric(&m, "segstream_replayed_events_total"), 0.0, "{}", w.log_text());
        // Cooperative rebalancing: they only gave partitions up.
        assert_eq!(restores(w), before, "{}", w.log_text());
    }
    let m = http_get(&third_addr, "/metrics").1;
    let moved = metric(&m, "segstream_assigned_partitions");
    assert_eq!(kept + moved, 6.0);
    assert_eq!(metric(&m, "segstream_replayed_events_total"), 0.0, "{}", third.log_text());
    let restored = third.log_text().matches("restoring from a checkpoint").count();
    assert_eq!(
        restored as f64,
        moved,
        "every partition it got came from a checkpoint:\n{}",
        third.log_text()
    );

    // Everyone goes on; each change is committed once.
    send(200);
    let all = [addrs.clone(), vec![third_addr]].concat();
    let deadline = Instant::now() + Duration::from_secs(60);
    while consumed(&all) < 2400.0 {
        assert!(Instant::now() < deadline, "the three workers read the second half");
        std::thread::sleep(Duration::from_millis(100));
    }
    let changes: Vec<SegmentChange> = setup
        // New (one record each), then three timer transitions and the
        // reactivation (an exit and an entry each).
        .read(&setup.topic("changes"), 300 + 8 * 300, Duration::from_secs(60))
        .iter()
        .map(|r| SegmentChange::from_avro(r.payload.as_deref().unwrap()).unwrap())
        .collect();
    let ids: std::collections::BTreeSet<_> = changes.iter().map(|c| c.event_id.clone()).collect();
    assert_eq!(ids.len(), changes.len(), "no change committed twice");
    assert_eq!(changes.len(), 2700, "nothing lost");
    let reactivated =
        changes.iter().filter(|c| c.segment == "reactivated" && c.change.as_str() == "entered").count();
    assert_eq!(reactivated, 300, "every customer churned and came back on day 200");
}
