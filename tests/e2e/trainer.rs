//! `segstream train` against the broker: models fitted on the running
//! workers' checkpoint feature tables, published on the models topic, ids
//! kept across retrains, and failed runs that publish nothing.

use std::time::{Duration, Instant};

use std::collections::{BTreeMap, BTreeSet};

use segstream_events::{SegmentChange, Trigger};
use segstream_trainer::SegmentModel;

use crate::support::{Setup, batch_ids, http_get, metric, sql_post};

fn changes(setup: &Setup) -> Vec<SegmentChange> {
    setup
        .read_to_end(&setup.topic("changes"), Duration::from_secs(120))
        .iter()
        .map(|r| SegmentChange::from_avro(r.payload.as_deref().unwrap()).unwrap())
        .collect()
}

/// The changes a model put out (trigger `model_update`, its version).
fn model_changes(all: &[SegmentChange], version: i64) -> Vec<&SegmentChange> {
    let version = version.to_string();
    all.iter()
        .filter(|c| c.trigger == Trigger::ModelUpdate && c.model_version.as_deref() == Some(version.as_str()))
        .collect()
}

/// Polls the worker's metrics until `name_and_labels` reads `want`.
fn wait_metric(addr: &str, name_and_labels: &str, want: f64, log: impl Fn() -> String) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, body) = http_get(addr, "/metrics");
        if metric(&body, name_and_labels) == want {
            return;
        }
        assert!(Instant::now() < deadline, "{name_and_labels} never {want}\n{body}\n{}", log());
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn models(setup: &Setup, want: usize) -> Vec<(Option<String>, SegmentModel)> {
    setup
        .read(&setup.topic("models"), want, Duration::from_secs(10))
        .iter()
        .map(|r| (r.key.clone(), SegmentModel::from_avro(r.payload.as_deref().unwrap()).unwrap()))
        .collect()
}

#[test]
fn the_trainer_publishes_models_from_the_workers_checkpoints_keeps_cluster_ids_and_never_publishes_a_failed_run()
 {
    let dir = tempfile::tempdir().unwrap();
    let setup = Setup::new("train", 3).with("checkpoint.interval_ms=500").with("trainer.k_min=2");
    let history = dir.path().join("history");
    let generate = ["generate", "--customers", "300", "--days", "365", "--seed", "7"];
    let files =
        [&generate[..], &["--to", "files", "--format", "json", "--out", history.to_str().unwrap()]].concat();
    assert!(setup.cli(&files).status.success());
    assert!(setup.cli(&generate).status.success());
    let customers = batch_ids(&setup, &history, "SELECT customer_id FROM features").len();
    let buyers =
        batch_ids(&setup, &history, "SELECT customer_id FROM features WHERE lifetime_orders >= 1").len();
    assert!(buyers > 100 && buyers < customers, "{buyers} of {customers}");

    // From a backfill snapshot of the same history: the same population.
    let snapshot = dir.path().join("state.snap");
    let out = setup.cli(&[
        "backfill",
        "--input",
        history.to_str().unwrap(),
        "--snapshot",
        snapshot.to_str().unwrap(),
        "--partitions",
        "3",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = setup.cli(&["train", "--dry-run", "--snapshot", snapshot.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains(&format!("{customers} customers, {buyers} buyers")), "{stdout}");
    assert!(stdout.contains("snapshot "), "{stdout}");
    let replayed = dir.path().join("changes.out");
    let out =
        setup.cli(&["replay", "--input", history.to_str().unwrap(), "--output", replayed.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let history_changes = std::fs::read_to_string(&replayed).unwrap().lines().count();

    let mut worker = setup.spawn_worker();
    worker.wait_ready(Duration::from_secs(60));
    // Every event applied (its changes are out), then a checkpoint of each
    // partition after that: the feature tables hold the whole population.
    let deadline = Instant::now() + Duration::from_secs(120);
    while setup.read(&setup.topic("changes"), history_changes, Duration::from_secs(2)).len() < history_changes
    {
        assert!(Instant::now() < deadline, "the worker did not catch up\n{}", worker.log_text());
    }
    std::thread::sleep(Duration::from_secs(2));
    let out = setup.cli(&["train", "--dry-run"]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains(&format!("{customers} customers, {buyers} buyers")), "{stdout}");
    assert!(models(&setup, 0).is_empty(), "a dry run publishes nothing");

    let out = setup.cli(&["train"]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success() && stdout.contains("published model 1"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{stdout}");
    let first = models(&setup, 1);
    assert_eq!(first.len(), 1);
    let (key, m1) = &first[0];
    assert_eq!(key.as_deref(), Some(setup.config().kafka.group_id.as_str()));
    assert_eq!((m1.version, m1.customers as usize, m1.buyers as usize), (1, customers, buyers));
    assert!(m1.source.starts_with("checkpoints ") && m1.source.ends_with("(3 partitions)"), "{}", m1.source);
    let p = m1.purchase.expect("purchase model");
    assert!(p.r > 0.0 && p.alpha > 0.0 && p.a > 0.0 && p.b > 0.0, "{p:?}");
    assert!(m1.spend.is_some_and(|s| s.q > 1.0));
    let rfm = m1.rfm.as_ref().expect("quintiles");
    for bounds in [&rfm.recency_max_days, &rfm.frequency_min, &rfm.monetary_min] {
        assert!(bounds.len() == 4 && bounds.windows(2).all(|w| w[0] < w[1]), "{rfm:?}");
    }
    let c1 = m1.clusters.as_ref().expect("clusters");
    assert!(c1.clusters.len() >= 2 && c1.clusters.iter().all(|c| c.drift.is_none() && !c.name.is_empty()));
    assert_eq!(c1.clusters.iter().map(|c| c.population).sum::<i64>() as usize, buyers);
    for c in &c1.clusters {
        assert!(stdout.contains(&format!("cluster {} \"{}\"", c.id, c.name)), "{stdout}");
    }

    // The running worker takes model 1 without a restart: every buyer
    // enters one cluster segment and one micro-segment (stage × cluster),
    // trigger model_update, model version 1; the feature table scores them.
    let addr = worker.http_addr(Duration::from_secs(10));
    wait_metric(&addr, "segstream_model_version", 1.0, || worker.log_text());
    let deadline = Instant::now() + Duration::from_secs(60);
    let all = loop {
        let all = changes(&setup);
        if model_changes(&all, 1).iter().filter(|c| c.kind.as_str() == "cluster").count() >= 2 * buyers {
            break all;
        }
        assert!(Instant::now() < deadline, "model 1 did not reach every buyer\n{}", worker.log_text());
    };
    let by_model = model_changes(&all, 1);
    let entered = |micro: bool| -> BTreeMap<String, String> {
        by_model
            .iter()
            .filter(|c| c.kind.as_str() == "cluster" && c.change.as_str() == "entered")
            .filter(|c| c.segment.contains(':') == micro)
            .map(|c| (c.customer_id.to_string(), c.segment.clone()))
            .collect()
    };
    let (clusters, micros) = (entered(false), entered(true));
    let buyer_ids =
        batch_ids(&setup, &history, "SELECT customer_id FROM features WHERE lifetime_orders >= 1");
    assert_eq!(clusters.keys().cloned().collect::<BTreeSet<_>>(), buyer_ids);
    let ids: BTreeSet<String> = c1.clusters.iter().map(|c| format!("cluster_{}", c.id)).collect();
    assert!(clusters.values().all(|c| ids.contains(c)), "{clusters:?}");
    let stages: BTreeMap<String, String> = all
        .iter()
        .filter(|c| c.kind.as_str() == "lifecycle" && c.change.as_str() == "entered")
        .map(|c| (c.customer_id.to_string(), c.segment.clone()))
        .collect();
    for (id, cluster) in &clusters {
        assert_eq!(micros.get(id), Some(&format!("{}:{cluster}", stages[id])), "{id}");
    }
    let explained = by_model.iter().find(|c| c.segment.starts_with("cluster_")).unwrap();
    assert!(
        explained.reason.contains("model 1") && explained.features.contains_key("p_alive"),
        "{explained:?}"
    );
    let sql = worker.sql_addr();
    let (status, body) = sql_post(
        &sql,
        "/sql?format=json",
        "SELECT customer_id, cluster_segment, p_alive, expected_orders, clv, lifetime_orders FROM features",
    );
    assert_eq!(status, 200, "{body}");
    let rows: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
    assert_eq!(rows.len(), customers);
    for row in &rows {
        let id = row["customer_id"].as_str().unwrap();
        let buyer = row["lifetime_orders"].as_u64().unwrap() >= 1;
        assert_eq!(row["cluster_segment"].as_str(), clusters.get(id).map(String::as_str), "{row}");
        let p_alive = row["p_alive"].as_f64();
        assert_eq!(p_alive.is_some(), buyer, "{row}");
        assert!(p_alive.is_none_or(|p| p > 0.0 && p <= 1.0), "{row}");
        assert!(row["expected_orders"].as_f64().is_none_or(|e| e >= 0.0), "{row}");
    }

    // Retrained on the same population: version 2, the same clusters under the same ids.
    let out = setup.cli(&["train"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let both = models(&setup, 2);
    let m2 = &both.last().expect("second model").1;
    assert_eq!(m2.version, 2);
    let c2 = m2.clusters.as_ref().expect("clusters");
    let shape = |c: &segstream_trainer::Clustering| {
        c.clusters.iter().map(|k| (k.id, k.name.clone(), k.population)).collect::<Vec<_>>()
    };
    assert_eq!(shape(c1), shape(c2), "{c2:#?}");
    assert!(c2.clusters.iter().all(|c| c.drift.is_some_and(|d| d.centre_moved < 1e-6)), "{c2:?}");
    // The worker swaps to it; with the ids kept, nobody changes cluster.
    wait_metric(&addr, "segstream_model_version", 2.0, || worker.log_text());
    wait_metric(&addr, "segstream_model_swaps_total{result=\"applied\"}", 2.0, || worker.log_text());
    std::thread::sleep(Duration::from_secs(2));
    let settled = changes(&setup);
    assert_eq!(model_changes(&settled, 2).len(), 0, "{:?}", model_changes(&settled, 2));

    // Killed and restarted: the state comes back under model 2 and no
    // change goes out again.
    worker.kill();
    let mut worker = setup.spawn_worker();
    worker.wait_ready(Duration::from_secs(90));
    let addr = worker.http_addr(Duration::from_secs(10));
    wait_metric(&addr, "segstream_model_version", 2.0, || worker.log_text());
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(changes(&setup).len(), settled.len(), "a restart emits nothing again\n{}", worker.log_text());
    let (status, body) =
        sql_post(&worker.sql_addr(), "/sql?format=json", "SELECT count(cluster_segment) AS n FROM features");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(&format!("\"n\":{buyers}")), "{body}");

    // A run that cannot fit publishes nothing and says why.
    let out = setup.with("trainer.min_buyers=1000000").cli(&["train"]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success() && stderr.contains("trainer.min_buyers"), "{stderr}");

    // On a schedule: each failed run is counted and the process goes on;
    // SIGTERM stops it cleanly.
    let mut trainer = setup.with("trainer.min_buyers=1000000").spawn(&["train", "--every", "300ms"]);
    let addr = trainer.http_addr(Duration::from_secs(30));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, body) = http_get(&addr, "/metrics");
        if status == 200 && metric(&body, "segstream_trainer_runs_total{result=\"failed\"}") >= 2.0 {
            assert_eq!(metric(&body, "segstream_trainer_runs_total{result=\"published\"}"), 0.0);
            break;
        }
        assert!(Instant::now() < deadline, "{body}\n{}", trainer.log_text());
        std::thread::sleep(Duration::from_millis(200));
    }
    let (status, _) = trainer.terminate(Duration::from_secs(20));
    assert!(status.success(), "{}", trainer.log_text());
    assert!(trainer.log_text().contains("trainer.min_buyers"), "the log says why");
    assert_eq!(models(&setup, 2).len(), 2, "failed runs published nothing");

    // A schedule that publishes: each cluster's share and drift on /metrics
    // (the same population: nothing moved).
    let mut trainer = setup.spawn(&["train", "--every", "1h"]);
    let trainer_addr = trainer.http_addr(Duration::from_secs(30));
    wait_metric(&trainer_addr, "segstream_trainer_runs_total{result=\"published\"}", 1.0, || {
        trainer.log_text()
    });
    let (_, body) = http_get(&trainer_addr, "/metrics");
    assert_eq!(metric(&body, "segstream_model_version"), 3.0, "{body}");
    for c in &c1.clusters {
        let series = |name: &str| format!("segstream_model_cluster_{name}{{cluster=\"{}\"}}", c.id);
        assert!(body.contains(&format!("{} ", series("centre_moved"))), "{body}");
        assert!(metric(&body, &series("centre_moved")) < 1e-6, "{body}");
        assert!(metric(&body, &series("share_shift")).abs() < 1e-9, "{body}");
        assert!((metric(&body, &series("share")) - c.share).abs() < 1e-9, "{body}");
    }
    assert!(trainer.terminate(Duration::from_secs(20)).0.success(), "{}", trainer.log_text());
    worker.terminate(Duration::from_secs(30));
}
