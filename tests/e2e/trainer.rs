//! `segstream train` against the broker: models fitted on the running
//! workers' checkpoint feature tables, published on the models topic, ids
//! kept across retrains, and failed runs that publish nothing.

use std::time::{Duration, Instant};

use segstream_trainer::SegmentModel;

use crate::support::{Setup, batch_ids, http_get, metric};

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
    worker.terminate(Duration::from_secs(30));
}
