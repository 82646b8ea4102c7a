//! History files: `segstream replay` gives the segment changes a live worker
//! gives over the same events; `segstream sql` answers from files (the batch
//! definition) and from a running worker (live state).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use segstream_events::SegmentChange;

use crate::support::{Setup, http_get, metric, produce_at, sql_get};

/// What must match between a live run and a replay (emit time differs).
type Key = (String, String, String, String, i64, Option<String>, String);

fn key(c: &SegmentChange) -> Key {
    (
        c.event_id.clone(),
        c.customer_id.to_string(),
        c.segment.clone(),
        c.change.as_str().to_owned(),
        c.cause_event_time.millis(),
        c.cause_event_id.clone(),
        c.trigger.as_str().to_owned(),
    )
}

#[test]
fn a_replay_of_generated_history_gives_the_changes_of_a_live_run() {
    // A long lane timeout: the lanes are merged on their data alone, as in a
    // replay; a short partition timeout: the live run ends, as the replay
    // does, with every partition following the worker's watermark. Two
    // orders kept one by one and windows of at most 30 days: folded order
    // days and compacted silent customers are part of both runs.
    let setup = Setup::new("replay", 3)
        .with("time.idle_partition_ms=1000")
        .with("features.max_orders_kept=2")
        .with("features.order_windows_days=[7, 30]");
    let dir = tempfile::tempdir().unwrap();
    let generate = ["generate", "--customers", "40", "--days", "240", "--seed", "11"];
    let out = setup.cli(&[&generate[..], &["--to", "files", "--out", dir.path().to_str().unwrap()]].concat());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = setup.cli(&generate);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let changes_file = dir.path().join("changes.jsonl");
    let out = setup.cli(&[
        "replay",
        "--input",
        dir.path().to_str().unwrap(),
        "--output",
        changes_file.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("over 3 partitions"), "{stderr}");
    let replayed: Vec<SegmentChange> = std::fs::read_to_string(&changes_file)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(replayed.len() > 100, "a real history: {} changes", replayed.len());
    assert!(replayed.iter().any(|c| c.trigger.as_str() == "timer"), "timers fire in the replay too");

    let mut worker = setup.spawn_worker();
    worker.wait_ready(Duration::from_secs(60));
    let sql = worker.sql_addr();
    let records = setup.read(&setup.topic("changes"), replayed.len(), Duration::from_secs(120));
    let live: Vec<SegmentChange> =
        records.iter().map(|r| SegmentChange::from_avro(r.payload.as_deref().unwrap()).unwrap()).collect();

    // The live worker answers SQL over its state.
    let (status, body) = sql_get(&sql, "/sql?format=json&q=SELECT%20count(*)%20AS%20n%20FROM%20features");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body.trim(), r#"[{"n":40}]"#);
    let (status, body) = sql_get(&sql, "/sql?q=SELECT%20nope%20FROM%20features");
    assert_eq!(status, 400, "a bad query is the caller's error: {body}");
    assert!(body.contains("nope"), "names the column: {body}");
    // Customers silent for 32 days are compacted (the gauge is updated
    // every 10 s).
    let addr = worker.wait_ready(Duration::from_secs(5));
    let deadline = Instant::now() + Duration::from_secs(30);
    let (compacted, metrics) = loop {
        let metrics = http_get(&addr, "/metrics").1;
        let n = metric(&metrics, "segstream_customers_compacted");
        if n > 0.0 || Instant::now() > deadline {
            break (n, metrics);
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(compacted > 0.0, "no customer compacted:\n{metrics}");
    assert!(worker.terminate(Duration::from_secs(20)).0.success());

    let live: BTreeSet<Key> = live.iter().map(key).collect();
    let replayed: BTreeSet<Key> = replayed.iter().map(key).collect();
    let only_live: Vec<_> = live.difference(&replayed).take(5).collect();
    let only_replay: Vec<_> = replayed.difference(&live).take(5).collect();
    assert!(
        only_live.is_empty() && only_replay.is_empty(),
        "live only: {only_live:#?}\nreplay only: {only_replay:#?}"
    );
    assert_eq!(live.len(), replayed.len());
}

#[test]
fn sql_over_history_files_runs_the_batch_definition() {
    let setup = Setup::new("sqlfiles", 1);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_str().unwrap();
    let out = setup.cli(&["generate", "--customers", "25", "--days", "90", "--to", "files", "--out", path]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = setup.cli(&[
        "sql",
        "--input",
        path,
        "--format",
        "json",
        "SELECT count(*) AS customers, sum(lifetime_orders) AS orders FROM features",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rows: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(rows[0]["customers"], 25, "{stdout}");
    let placed = std::fs::read_to_string(dir.path().join("orders.jsonl"))
        .unwrap()
        .lines()
        .filter(|l| l.contains(r#""status":"placed""#))
        .count() as u64;
    let orders = rows[0]["orders"].as_u64().unwrap();
    assert!(orders > 0 && orders <= placed, "net orders {orders} of {placed} placed");

    let out = setup.cli(&["sql", "--input", path, "SELECT no_such_column FROM features"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no_such_column"));
}

/// History lines of a generated file as records keyed by customer, with
/// the Kafka timestamp set to the event time (as if published live).
fn history(file: &std::path::Path) -> Vec<(String, Vec<u8>, i64)> {
    std::fs::read_to_string(file)
        .unwrap()
        .lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let key = v["customer_id"].as_str().unwrap().to_owned();
            (key, line.as_bytes().to_vec(), v["event_time"].as_i64().unwrap())
        })
        .collect()
}

fn revenue_of(addr: &str, customer: &str) -> f64 {
    let q = format!("SELECT%20revenue_365d%20FROM%20features%20WHERE%20customer_id%20%3D%20%27{customer}%27");
    let (status, body) = sql_get(addr, &format!("/sql?format=json&q={q}"));
    assert_eq!(status, 200, "{body}");
    let rows: serde_json::Value = serde_json::from_str(body.trim()).unwrap();
    rows[0]["revenue_365d"].as_f64().unwrap()
}

/// A worker started from a `backfill` snapshot starts each partition from
/// it as from a checkpoint cut at the first records published after the
/// snapshot's time: the history already in the topics (published before)
/// is not applied twice, and a refund of an old order published after the
/// snapshot is applied although its event time is older than the snapshot.
#[test]
fn a_worker_started_from_a_backfilled_snapshot_is_cut_by_offsets_and_applies_what_was_published_after() {
    let setup = Setup::new("warm", 2);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_str().unwrap();
    let out = setup.cli(&[
        "generate",
        "--customers",
        "30",
        "--days",
        "200",
        "--seed",
        "5",
        "--to",
        "files",
        "--out",
        path,
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let snapshot = dir.path().join("state.snap");
    let snapshot = snapshot.to_str().unwrap();
    let out = setup.cli(&["backfill", "--input", path, "--snapshot", snapshot]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let query = "SELECT customer_id, lifecycle, revenue_365d FROM features ORDER BY customer_id";
    let out = setup.cli(&["sql", "--snapshot", snapshot, "--format", "json", query]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let backfilled: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(backfilled.as_array().unwrap().len(), 30);
    let silent = backfilled
        .as_array()
        .unwrap()
        .iter()
        .find(|r| matches!(r["lifecycle"].as_str(), Some("at_risk" | "churned")))
        .expect("a silent customer in 200 days of history")
        .clone();
    let customer = silent["customer_id"].as_str().unwrap().to_owned();

    // The same history in the topics, published as it happened.
    let clicks = history(&dir.path().join("clickstream.jsonl"));
    let orders = history(&dir.path().join("orders.jsonl"));
    let p = setup.producer();
    produce_at(&p, &setup.topic("clickstream"), &clicks);
    produce_at(&p, &setup.topic("orders"), &orders);

    let warm = setup.with(&format!("worker.warm_start={snapshot}"));
    let mut worker = warm.spawn_worker();
    let addr = worker.wait_ready(Duration::from_secs(60));
    let sql = worker.sql_addr();
    let (status, body) = sql_get(
        &sql,
        "/sql?format=json&q=SELECT%20customer_id%2C%20lifecycle%2C%20revenue_365d%20FROM%20features%20ORDER%20BY%20customer_id",
    );
    assert_eq!(status, 200, "{body}");
    let live: serde_json::Value = serde_json::from_str(body.trim()).unwrap();
    assert_eq!(live, backfilled, "every customer as backfilled, the history in the topics not applied again");
    let metrics = http_get(&addr, "/metrics").1;
    assert_eq!(
        crate::support::metric(&metrics, "segstream_snapshot_covered_records_total"),
        (clicks.len() + orders.len()) as f64
    );

    // Published now: a refund of the silent customer's last order (its event
    // time long before the snapshot's), then a new order.
    let (_, last, _) = orders
        .iter()
        .filter(|(c, line, _)| c == &customer && String::from_utf8_lossy(line).contains("\"placed\""))
        .max_by_key(|(_, _, t)| *t)
        .unwrap();
    let mut refund: serde_json::Value = serde_json::from_slice(last).unwrap();
    let refunded = refund["total"].as_f64().unwrap();
    refund["status"] = "refunded".into();
    refund["event_time"] = (refund["event_time"].as_i64().unwrap() + 86_400_000).into();
    let new_order = segstream_events::OrderEvent {
        order_id: "o-after-backfill".into(),
        customer_id: segstream_events::CustomerId::new(&customer),
        event_time: segstream_events::EventTime::from_millis(1_733_011_200_000), // 2024-12-01
        status: segstream_events::OrderStatus::Placed,
        total: 30.0,
        currency: "EUR".into(),
        discount_amount: 0.0,
        item_count: 1,
        categories: vec![],
        payment_method: None,
    };
    let payload = segstream_events::encode_order(&new_order, segstream_events::PayloadFormat::Avro).unwrap();
    crate::support::produce(
        &p,
        &warm.topic("orders"),
        &[(customer.clone(), serde_json::to_vec(&refund).unwrap()), (customer.clone(), payload)],
    );
    let records = warm.read(&warm.topic("changes"), 2, Duration::from_secs(60));
    let before = silent["revenue_365d"].as_f64().unwrap();
    let after = revenue_of(&sql, &customer);
    assert!(
        (after - (before - refunded + 30.0)).abs() < 1e-6,
        "the refund published after the snapshot counts: {before} - {refunded} + 30 != {after}"
    );
    assert!(worker.terminate(Duration::from_secs(20)).0.success());
    let changes: Vec<SegmentChange> =
        records.iter().map(|r| SegmentChange::from_avro(r.payload.as_deref().unwrap()).unwrap()).collect();
    let mine: Vec<&SegmentChange> = changes
        .iter()
        .filter(|c| c.customer_id.as_str() == customer && c.kind.as_str() == "lifecycle")
        .collect();
    assert_eq!(
        mine[0].segment,
        silent["lifecycle"].as_str().unwrap(),
        "leaves the backfilled stage: {mine:#?}"
    );
    assert_eq!(mine[0].change.as_str(), "exited");
}

/// History from the 1990s backfills with the default earliest date; with a
/// later one nothing decodes, and `backfill` says why by reason, writes no
/// snapshot and exits non-zero.
#[test]
fn backfill_takes_1990s_history_and_fails_loudly_when_nothing_decodes() {
    let setup = Setup::new("oldhistory", 1);
    let dir = tempfile::tempdir().unwrap();
    let orders: String = (0..20)
        .map(|i| {
            // 1997-01-01 plus i days: CDNOW's years.
            let t = 852_076_800_000_i64 + i * 86_400_000;
            format!(
                "{{\"order_id\":\"o{i}\",\"customer_id\":\"c{}\",\"event_time\":{t},\"status\":\"placed\",\"total\":12.5}}\n",
                i % 5
            )
        })
        .collect();
    std::fs::write(dir.path().join("orders.jsonl"), orders).unwrap();
    let input = dir.path().to_str().unwrap();
    let snapshot = dir.path().join("state.snap");
    let snap = snapshot.to_str().unwrap();

    let out = setup.cli(&["backfill", "--input", input, "--snapshot", snap]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("backfilled 5 customers") && err.contains("0 events rejected"), "{err}");

    std::fs::remove_file(&snapshot).unwrap();
    let strict = setup.with("time.earliest_event_date=2000-01-01");
    let out = strict.cli(&["backfill", "--input", input, "--snapshot", snap]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("20 events rejected") && err.contains("event_time_out_of_range: 20"), "{err}");
    assert!(err.contains("time.earliest_event_date") && err.contains("nothing was written"), "{err}");
    assert!(!snapshot.exists(), "no empty snapshot");
    let out =
        strict.cli(&["replay", "--input", input, "--output", dir.path().join("c.jsonl").to_str().unwrap()]);
    assert!(!out.status.success(), "replay too: {}", String::from_utf8_lossy(&out.stderr));
}

/// Each history file rewritten sorted by (customer_id, event_time), as
/// warehouse exports usually are.
fn sorted_by_customer(from: &std::path::Path, to: &std::path::Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let mut lines: Vec<(String, i64, &str)> = text
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                (v["customer_id"].as_str().unwrap().to_owned(), v["event_time"].as_i64().unwrap(), l)
            })
            .collect();
        lines.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
        let out: String = lines.iter().map(|(_, _, l)| format!("{l}\n")).collect();
        std::fs::write(to.join(path.file_name().unwrap()), out).unwrap();
    }
}

#[test]
fn history_sorted_by_customer_replays_to_the_changes_and_stages_of_history_sorted_by_time() {
    let setup = Setup::new("bycustomer", 1);
    let (by_time, by_customer) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let out = setup.cli(&[
        "generate",
        "--customers",
        "300",
        "--days",
        "365",
        "--seed",
        "5",
        "--to",
        "files",
        "--format",
        "json",
        "--out",
        by_time.path().to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    sorted_by_customer(by_time.path(), by_customer.path());
    let replay = |input: &std::path::Path| {
        let work = tempfile::tempdir().unwrap();
        let (changes, members) = (work.path().join("changes.jsonl"), work.path().join("members.jsonl"));
        let out = setup.cli(&[
            "replay",
            "--input",
            input.to_str().unwrap(),
            "--output",
            changes.to_str().unwrap(),
            "--memberships",
            members.to_str().unwrap(),
        ]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let changes: BTreeSet<Key> = std::fs::read_to_string(&changes)
            .unwrap()
            .lines()
            .map(|l| key(&serde_json::from_str(l).unwrap()))
            .collect();
        let members: BTreeSet<String> =
            std::fs::read_to_string(&members).unwrap().lines().map(str::to_owned).collect();
        (changes, members)
    };
    let (time_changes, time_members) = replay(by_time.path());
    let (customer_changes, customer_members) = replay(by_customer.path());
    assert_eq!(time_members.len(), 300);
    let differ: Vec<_> = time_members.symmetric_difference(&customer_members).take(4).collect();
    assert!(differ.is_empty(), "every customer ends in the same segments: {differ:#?}");
    let differ: Vec<_> = time_changes.symmetric_difference(&customer_changes).take(4).collect();
    assert!(differ.is_empty(), "the same changes, ids included: {differ:#?}");
}
