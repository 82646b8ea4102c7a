//! Segments through the broker: RFM on generated history against a batch
//! computation written here (not the worker's code), every behaviour
//! segment, and the lifecycle's transitions, time-driven ones included.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::time::Duration;

use segstream_events::SegmentChange;

use crate::support::{Setup, batch_ids, http_get, metric, sql_get};

const DAY: f64 = 86_400_000.0;
const LATENESS_MS: i64 = 3_600_000;

/// The built-in RFM boundaries and table (crates/segstream-segments/segments.toml), restated.
const RECENCY_MAX_DAYS: [f64; 4] = [30.0, 60.0, 90.0, 180.0];
const FREQUENCY_MIN: [f64; 4] = [2.0, 3.0, 5.0, 8.0];
const MONETARY_MIN: [f64; 4] = [50.0, 120.0, 250.0, 600.0];
/// A row: name, and the inclusive R, F and M ranges.
type Row = (&'static str, [u8; 2], [u8; 2], [u8; 2]);
const TABLE: [Row; 11] = [
    ("champions", [4, 5], [4, 5], [4, 5]),
    ("loyal", [2, 5], [3, 5], [3, 5]),
    ("new_customers", [4, 5], [1, 1], [1, 1]),
    ("promising", [3, 4], [1, 1], [1, 1]),
    ("potential_loyalist", [3, 5], [1, 3], [1, 3]),
    ("need_attention", [2, 3], [2, 3], [2, 3]),
    ("about_to_sleep", [2, 3], [1, 2], [1, 2]),
    ("cant_lose", [1, 1], [4, 5], [4, 5]),
    ("at_risk", [1, 2], [2, 5], [2, 5]),
    ("lost", [1, 2], [1, 2], [1, 2]),
    ("others", [1, 5], [1, 5], [1, 5]),
];

/// Every customer's RFM segment as of the end of the history, computed from
/// the generated files: net orders (placed, never cancelled or refunded),
/// recency, orders and revenue in 365 days, scores, first row of the table.
fn batch_rfm(dir: &std::path::Path) -> BTreeMap<String, Option<&'static str>> {
    let lines = |name: &str| -> Vec<serde_json::Value> {
        let text = std::fs::read_to_string(dir.join(name)).unwrap();
        text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    };
    let (clicks, orders) = (lines("clickstream.jsonl"), lines("orders.jsonl"));
    let time = |v: &serde_json::Value| v["event_time"].as_i64().unwrap();
    let customer = |v: &serde_json::Value| v["customer_id"].as_str().unwrap().to_owned();
    let end = clicks.iter().chain(&orders).map(time).max().unwrap();
    let mut last_seen: BTreeMap<String, i64> = BTreeMap::new();
    for v in clicks.iter().chain(&orders) {
        let seen = last_seen.entry(customer(v)).or_insert(i64::MIN);
        *seen = (*seen).max(time(v));
    }
    let voided: HashSet<&str> =
        orders.iter().filter(|o| o["status"] != "placed").map(|o| o["order_id"].as_str().unwrap()).collect();
    let mut placed: BTreeMap<String, BTreeMap<&str, (i64, i64)>> = BTreeMap::new();
    for o in orders.iter().filter(|o| o["status"] == "placed") {
        let id = o["order_id"].as_str().unwrap();
        if !voided.contains(id) {
            let cents = (o["total"].as_f64().unwrap() * 100.0).round() as i64;
            placed.entry(customer(o)).or_default().entry(id).or_insert((time(o), cents));
        }
    }
    let rising = |bounds: &[f64; 4], v: f64| 1 + bounds.iter().filter(|b| v >= **b).count() as u8;
    last_seen
        .into_iter()
        .map(|(id, seen)| {
            // Evaluated as of the end's watermark, or their own later event.
            let as_of = seen.max(end - LATENESS_MS);
            let net = placed.get(&id).map(|p| p.values().copied().collect::<Vec<_>>()).unwrap_or_default();
            let segment = net.iter().map(|(t, _)| *t).max().map(|last| {
                let recency = (as_of - last) as f64 / DAY;
                let r = 5 - RECENCY_MAX_DAYS.iter().filter(|max| recency > **max).count() as u8;
                let window: Vec<_> =
                    net.iter().filter(|(t, _)| (*t as f64) > as_of as f64 - 365.0 * DAY).collect();
                let revenue = window.iter().map(|(_, c)| *c).sum::<i64>() as f64 / 100.0;
                let (f, m) = (rising(&FREQUENCY_MIN, window.len() as f64), rising(&MONETARY_MIN, revenue));
                let holds = |v: u8, [lo, hi]: [u8; 2]| (lo..=hi).contains(&v);
                TABLE
                    .iter()
                    .find(|(_, rr, fr, mr)| holds(r, *rr) && holds(f, *fr) && holds(m, *mr))
                    .unwrap()
                    .0
            });
            (id, segment)
        })
        .collect()
}

#[test]
fn rfm_segments_of_a_live_run_equal_a_batch_computation_and_every_segment_and_stage_is_reached() {
    // High value from 300.00 in 90 days: customers reach it and fall back
    // as orders leave the window, within the generated year.
    let setup = Setup::new("rfm", 3)
        .with("time.idle_partition_ms=1000")
        .with("segments.definitions=")
        .with("lifecycle.high_value_revenue=300")
        .with("lifecycle.high_value_window_days=90");
    let dir = tempfile::tempdir().unwrap();
    let generate = ["generate", "--customers", "300", "--days", "365", "--seed", "7"];
    let files =
        [&generate[..], &["--to", "files", "--format", "json", "--out", dir.path().to_str().unwrap()]]
            .concat();
    let out = setup.cli(&files);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = setup.cli(&generate);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // How many changes the history gives (a replay gives a live run's, a
    // test of its own), so the read below knows when the live run is done.
    let replayed = dir.path().join("changes.out");
    let out = setup.cli(&[
        "replay",
        "--input",
        dir.path().to_str().unwrap(),
        "--output",
        replayed.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let want = std::fs::read_to_string(&replayed).unwrap().lines().count();

    let mut worker = setup.spawn_worker();
    let addr = worker.wait_ready(Duration::from_secs(60));
    let changes: Vec<SegmentChange> = setup
        .read(&setup.topic("changes"), want, Duration::from_secs(180))
        .iter()
        .map(|r| SegmentChange::from_avro(r.payload.as_deref().unwrap()).unwrap())
        .collect();
    assert_eq!(changes.len(), want, "{}", worker.log_text());
    let metrics = http_get(&addr, "/metrics").1;
    // Who is in a segment now, from the live feature table.
    let query = |q: &str| -> Vec<serde_json::Value> {
        let (status, body) =
            sql_get(&worker.sql_addr(), &format!("/sql?format=json&q={}", q.replace(' ', "%20")));
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(body.trim()).unwrap()
    };
    let by_rfm = query("SELECT rfm, count(*) AS n FROM features GROUP BY rfm");
    let hunters = query("SELECT customer_id FROM features WHERE array_has(behaviour, 'discount_hunter')");
    assert!(worker.terminate(Duration::from_secs(20)).0.success());

    // The live RFM segment of each customer: their last RFM record.
    let mut live: BTreeMap<String, Option<String>> = BTreeMap::new();
    for c in changes.iter().filter(|c| c.kind.as_str() == "rfm") {
        let entered = c.change.as_str() == "entered";
        live.insert(c.customer_id.to_string(), entered.then(|| c.segment.clone()));
    }
    let expected = batch_rfm(dir.path());
    assert_eq!(expected.len(), 300);
    let differ: Vec<_> = expected
        .iter()
        .filter(|(id, seg)| live.get(*id).cloned().flatten().as_deref() != **seg)
        .map(|(id, seg)| (id, seg, live.get(id)))
        .take(5)
        .collect();
    assert!(differ.is_empty(), "live differs from the batch computation: {differ:#?}");
    let buyers = expected.values().filter(|s| s.is_some()).count();
    let population: f64 = TABLE
        .iter()
        .map(|(name, ..)| {
            metric(&metrics, &format!("segstream_segment_population{{kind=\"rfm\",segment=\"{name}\"}}"))
        })
        .sum();
    assert_eq!(population, buyers as f64, "every buyer in exactly one RFM segment:\n{metrics}");
    for row in &by_rfm {
        let expected_n = match row["rfm"].as_str() {
            Some(name) => expected.values().filter(|s| **s == Some(name)).count(),
            None => expected.values().filter(|s| s.is_none()).count(),
        };
        assert_eq!(row["n"].as_u64(), Some(expected_n as u64), "{by_rfm:?}");
    }
    let live_hunters = changes.iter().fold(BTreeMap::new(), |mut m, c| {
        if c.segment == "discount_hunter" {
            m.insert(c.customer_id.to_string(), c.change.as_str() == "entered");
        }
        m
    });
    let in_table: BTreeSet<&str> = hunters.iter().filter_map(|r| r["customer_id"].as_str()).collect();
    let by_records: BTreeSet<&str> =
        live_hunters.iter().filter(|(_, in_)| **in_).map(|(id, _)| id.as_str()).collect();
    assert!(!in_table.is_empty());
    assert_eq!(in_table, by_records, "the table's behaviour column agrees with the records");

    // Every RFM segment is entered at some point of the year, each record
    // explained; every lifecycle transition the rules have is seen.
    let entered: BTreeSet<&str> = changes
        .iter()
        .filter(|c| c.kind.as_str() == "rfm" && c.change.as_str() == "entered")
        .map(|c| c.segment.as_str())
        .collect();
    assert_eq!(entered, TABLE.iter().map(|(name, ..)| *name).collect());
    // Every behaviour segment too (a category fan per top category).
    let behaviour: BTreeSet<&str> = changes
        .iter()
        .filter(|c| c.kind.as_str() == "behaviour" && c.change.as_str() == "entered")
        .map(|c| if c.segment.starts_with("category_fan_") { "category_fan_*" } else { c.segment.as_str() })
        .collect();
    let all = [
        "big_spender",
        "cart_abandoner",
        "category_fan_*",
        "discount_hunter",
        "frequent_visitor",
        "high_intent_browser",
        "mobile_first",
        "night_owl",
        "one_time_buyer",
    ];
    assert_eq!(behaviour, all.into_iter().collect());
    let timers: BTreeSet<&str> = changes
        .iter()
        .filter(|c| c.kind.as_str() == "behaviour" && c.trigger.as_str() == "timer")
        .map(|c| c.segment.as_str())
        .collect();
    for timed in [
        "cart_abandoner",
        "frequent_visitor",
        "high_intent_browser",
        "mobile_first",
        "night_owl",
        "one_time_buyer",
    ] {
        assert!(timers.contains(timed), "{timed} moves on timers too: {timers:?}");
    }
    let rfm = changes.iter().find(|c| c.kind.as_str() == "rfm" && c.trigger.as_str() == "timer").unwrap();
    assert!(rfm.reason.starts_with('R') && rfm.features.contains_key("threshold_r_max_days_5"), "{rfm:#?}");
    let stages: BTreeSet<(Option<&str>, &str, &str)> = changes
        .iter()
        .filter(|c| c.kind.as_str() == "lifecycle" && c.change.as_str() == "entered")
        .map(|c| (c.previous_segment.as_deref(), c.segment.as_str(), c.trigger.as_str()))
        .collect();
    for transition in [
        (None, "prospect", "event"),
        (Some("prospect"), "new", "event"),
        (Some("new"), "active", "timer"),
        (Some("active"), "at_risk", "timer"),
        (Some("at_risk"), "churned", "timer"),
        (Some("at_risk"), "active", "event"),
        (Some("churned"), "reactivated", "event"),
        (Some("reactivated"), "active", "timer"),
        (Some("new"), "prospect", "event"),
        (Some("active"), "high_value", "event"),
        (Some("new"), "high_value", "timer"),
        (Some("high_value"), "active", "timer"),
    ] {
        assert!(stages.contains(&transition), "{transition:?} not seen in {stages:#?}");
    }
}

/// Every change record on the topic after `settle` more.
fn all_changes(setup: &Setup, settle: Duration) -> Vec<SegmentChange> {
    std::thread::sleep(settle);
    setup
        .read_to_end(&setup.topic("changes"), Duration::from_secs(120))
        .iter()
        .map(|r| SegmentChange::from_avro(r.payload.as_deref().unwrap()).unwrap())
        .collect()
}

/// Reads the change records until `done` says they are complete.
fn changes_until(
    setup: &Setup,
    done: impl Fn(&[SegmentChange]) -> bool,
    log: impl Fn() -> String,
) -> Vec<SegmentChange> {
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let changes = all_changes(setup, Duration::from_secs(2));
        if done(&changes) {
            return changes;
        }
        assert!(std::time::Instant::now() < deadline, "{} changes, not done\n{}", changes.len(), log());
    }
}

#[test]
fn a_user_defined_segment_added_changed_and_removed_while_the_worker_runs_is_rolled_out_once() {
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_owned()
    };
    let custom = |version: i32, sql: &str| {
        format!("version = {version}\n\n[[custom]]\nname = \"loyal\"\nsql = \"{sql}\"\n")
    };
    let v1 = file("v1.toml", "version = 1\n");
    let setup = Setup::new("rollout", 3)
        .with("time.idle_partition_ms=1000")
        .with("checkpoint.interval_ms=500")
        .with(&format!("segments.definitions={v1}"));
    let history = dir.path().join("history");
    let generate = ["generate", "--customers", "200", "--days", "365", "--seed", "11"];
    let files =
        [&generate[..], &["--to", "files", "--format", "json", "--out", history.to_str().unwrap()]].concat();
    assert!(setup.cli(&files).status.success());
    assert!(setup.cli(&generate).status.success());
    let replayed = dir.path().join("changes.out");
    let out =
        setup.cli(&["replay", "--input", history.to_str().unwrap(), "--output", replayed.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let history_changes = std::fs::read_to_string(&replayed).unwrap().lines().count();
    let five = batch_ids(&setup, &history, "SELECT customer_id FROM features WHERE lifetime_orders >= 5");
    let eight = batch_ids(&setup, &history, "SELECT customer_id FROM features WHERE lifetime_orders >= 8");
    assert!(!eight.is_empty() && eight.len() < five.len(), "{} {}", eight.len(), five.len());

    let mut worker = setup.spawn_worker();
    worker.wait_ready(Duration::from_secs(60));
    let logs = || String::new();
    changes_until(&setup, |c| c.len() >= history_changes, logs);
    let custom_of = |changes: &[SegmentChange], version: i32| -> Vec<SegmentChange> {
        changes.iter().filter(|c| c.kind.as_str() == "custom" && c.rule_version == version).cloned().collect()
    };
    let ids = |changes: &[SegmentChange], change: &str| -> BTreeSet<String> {
        changes.iter().filter(|c| c.change.as_str() == change).map(|c| c.customer_id.to_string()).collect()
    };

    // The diff first, on the running workers' checkpoints: who would enter.
    let v2 = file("v2.toml", &custom(2, "lifetime_orders >= 5"));
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let out = setup.cli(&["segments", "diff", &v2, "--sample", "3"]);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let line = stdout.lines().find(|l| l.starts_with("custom")).unwrap_or_default().to_owned();
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields == ["custom", "loyal", &format!("+{}", five.len()), "-0"] {
            assert!(stdout.contains("definitions version 1 → 2"), "{stdout}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the diff never matched the batch SQL:\n{stdout}");
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(
        all_changes(&setup, Duration::from_secs(1)).iter().all(|c| c.kind.as_str() != "custom"),
        "a diff changes nothing"
    );

    // Added: every customer with five net orders enters, once, by the rollout.
    let out = setup.cli(&["segments", "rollout", &v2]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let changes = changes_until(&setup, |c| custom_of(c, 2).len() >= five.len(), || worker.log_text());
    let added = custom_of(&changes, 2);
    assert_eq!(ids(&added, "entered"), five, "the batch SQL's customers, no others");
    assert_eq!(added.len(), five.len(), "each once");
    for c in &added {
        assert_eq!(
            (c.trigger.as_str(), c.rule_id.as_str(), c.segment.as_str()),
            ("definition_change", "custom.loyal", "loyal")
        );
        assert!(
            c.reason.contains("lifetime_orders >= 5") && c.features.get("lifetime_orders") >= Some(&5.0),
            "{c:?}"
        );
    }
    let in_table = |addr: &str, q: &str| -> u64 {
        let (status, body) = sql_get(addr, &format!("/sql?format=json&q={}", q.replace(' ', "%20")));
        assert_eq!(status, 200, "{body}");
        let rows: Vec<serde_json::Value> = serde_json::from_str(body.trim()).unwrap();
        rows[0]["n"].as_u64().unwrap()
    };
    assert_eq!(
        in_table(&worker.sql_addr(), "SELECT count(*) AS n FROM features WHERE array_has(custom, 'loyal')"),
        five.len() as u64
    );

    // Look-ups: a member's features, segments and latest changes with their
    // reasons; the segment's population and a sample; over HTTP and the CLI.
    let member = five.iter().next().unwrap().clone();
    let out = setup.cli(&["customer", &member, "--worker", &worker.sql_addr()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let looked: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(looked["features"]["lifetime_orders"].as_u64() >= Some(5), "{looked:#}");
    assert_eq!(looked["features"]["custom"], serde_json::json!(["loyal"]), "{looked:#}");
    let last = &looked["last_changes"][0];
    assert_eq!(
        (last["segment"].as_str(), last["trigger"].as_str()),
        (Some("loyal"), Some("definition_change"))
    );
    assert!(last["reason"].as_str().unwrap().contains("holds"), "{last:#}");
    let (status, body) = sql_get(&worker.sql_addr(), "/customers/nobody-here");
    assert_eq!(status, 404, "{body}");
    let out = setup.cli(&["segment", "custom", "loyal", "--sample", "3", "--worker", &worker.sql_addr()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let looked: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(looked["population"].as_u64(), Some(five.len() as u64));
    let sample: Vec<&str> = looked["sample"].as_array().unwrap().iter().filter_map(|v| v.as_str()).collect();
    assert_eq!(sample, five.iter().take(3).map(String::as_str).collect::<Vec<_>>());

    // A crash now: the partitions are rebuilt from the logs with the
    // recorded decisions, so the rollout is repeated where it was taken and
    // not emitted again.
    let before = changes.len();
    worker.kill();
    let mut worker = setup.spawn_worker();
    let addr = worker.wait_ready(Duration::from_secs(60));
    assert_eq!(all_changes(&setup, Duration::from_secs(5)).len(), before, "{}", worker.log_text());
    assert_eq!(
        in_table(&worker.sql_addr(), "SELECT count(*) AS n FROM features WHERE array_has(custom, 'loyal')"),
        five.len() as u64
    );

    // Changed: those with five to seven orders leave.
    let v3 = file("v3.toml", &custom(3, "lifetime_orders >= 8"));
    assert!(setup.cli(&["segments", "rollout", &v3]).status.success());
    let leaving: BTreeSet<String> = five.difference(&eight).cloned().collect();
    let changes = changes_until(&setup, |c| custom_of(c, 3).len() >= leaving.len(), || worker.log_text());
    let changed = custom_of(&changes, 3);
    assert_eq!((ids(&changed, "exited"), ids(&changed, "entered").len()), (leaving, 0));
    assert!(changed.iter().all(|c| c.trigger.as_str() == "definition_change"));

    // Refused: a file naming an unknown column never leaves the CLI; a
    // broken record on the topic is refused by the worker; a version not
    // above the one in force is ignored. Version 3 stays.
    let bad = file("bad.toml", &custom(9, "lifetime_ordres >= 8"));
    let out = setup.cli(&["segments", "rollout", &bad]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("`loyal`") && stderr.contains("lifetime_ordres"),
        "{stderr}"
    );
    let raw = serde_json::json!({"version": 9, "definitions": custom(9, "no_such_column > 1")});
    let group = setup.config().kafka.group_id;
    crate::support::produce(
        &setup.producer(),
        &setup.topic("definitions"),
        &[(group, serde_json::to_vec(&raw).unwrap())],
    );
    let stale = file("stale.toml", &custom(3, "lifetime_orders >= 1"));
    assert!(setup.cli(&["segments", "rollout", &stale]).status.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let metrics = loop {
        let body = http_get(&addr, "/metrics").1;
        let seen = |result: &str| {
            metric(&body, &format!("segstream_definitions_rollouts_total{{result=\"{result}\"}}"))
        };
        if seen("refused") >= 1.0 && seen("stale") >= 1.0 {
            break body;
        }
        assert!(std::time::Instant::now() < deadline, "{body}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(metric(&metrics, "segstream_definitions_version"), 3.0);
    assert!(custom_of(&all_changes(&setup, Duration::from_secs(2)), 9).is_empty());

    // Removed: the rest leave, the segment no longer defined.
    let v4 = file("v4.toml", "version = 4\n");
    assert!(setup.cli(&["segments", "rollout", &v4]).status.success());
    let changes = changes_until(&setup, |c| custom_of(c, 4).len() >= eight.len(), || worker.log_text());
    let removed = custom_of(&changes, 4);
    assert_eq!(ids(&removed, "exited"), eight);
    assert!(removed.iter().all(|c| c.reason.contains("no longer defined")), "{removed:?}");
    let before = changes.len();

    // Nor does a clean restart (restored from the checkpoints written at
    // the stop, which keep the definitions).
    assert!(worker.terminate(Duration::from_secs(20)).0.success());
    let mut worker = setup.spawn_worker();
    worker.wait_ready(Duration::from_secs(60));
    assert_eq!(all_changes(&setup, Duration::from_secs(5)).len(), before, "{}", worker.log_text());
    assert_eq!(
        in_table(&worker.sql_addr(), "SELECT count(*) AS n FROM features WHERE array_has(custom, 'loyal')"),
        0
    );
    assert!(worker.terminate(Duration::from_secs(20)).0.success());
}
