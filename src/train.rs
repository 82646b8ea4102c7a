//! `segstream train`: fits the models on the population's features (every
//! partition's latest checkpoint feature table, or a `backfill` snapshot)
//! and publishes them on the compacted models topic, once or on a schedule.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use rdkafka::producer::{FutureProducer, FutureRecord};
use segstream_checkpoint::CheckpointStore;
use segstream_config::Config;
use segstream_kafka::Follower;
use segstream_telemetry::Metrics;
use segstream_trainer::{Population, SegmentModel, train};
use tokio_util::sync::CancellationToken;

/// Arguments of `segstream train`.
#[derive(Debug, Args)]
pub(crate) struct TrainArgs {
    /// Fit on a `backfill` snapshot instead of the checkpoints' feature
    /// tables (checkpoint.url).
    #[arg(long, value_name = "FILE")]
    snapshot: Option<PathBuf>,
    /// Train again every DURATION (e.g. 6h, 30m) until SIGTERM, serving
    /// /metrics on http.listen; a failed run is logged and counted and the
    /// previous model stays.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    every: Option<Duration>,
    /// Fit and print the model; publish nothing.
    #[arg(long)]
    dry_run: bool,
}

pub(crate) async fn run(args: TrainArgs, config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let metrics = Metrics::new();
    let Some(every) = args.every else {
        return run_once(&args, &config, &metrics).await;
    };
    let addr = config.http.listen.parse().with_context(|| format!("http.listen {:?}", config.http.listen))?;
    let health = segstream_telemetry::Health::new();
    health.set_ready(true);
    let routes = segstream_telemetry::operations_routes(vec![metrics.clone()], vec![health]);
    let (bound, server) = segstream_telemetry::serve(addr, "http.listen", routes, shutdown.clone()).await?;
    tracing::info!(
        "serving http://{bound}/metrics, /healthz and /readyz; training every {}",
        humantime::format_duration(every)
    );
    loop {
        if let Err(e) = run_once(&args, &config, &metrics).await {
            tracing::error!(error = format!("{e:#}"), "training run failed; the previous model stays");
        }
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = shutdown.cancelled() => break,
        }
    }
    server.await??;
    Ok(())
}

/// One run: nothing is published unless every model fitted.
async fn run_once(args: &TrainArgs, config: &Config, metrics: &Metrics) -> anyhow::Result<()> {
    let result = fit_and_publish(args, config, metrics).await;
    let label = match (&result, args.dry_run) {
        (Err(_), _) => "failed",
        (Ok(()), true) => "dry_run",
        (Ok(()), false) => "published",
    };
    metrics.trainer_runs.with_label_values(&[label]).inc();
    result
}

async fn fit_and_publish(args: &TrainArgs, config: &Config, metrics: &Metrics) -> anyhow::Result<()> {
    let (batches, source) = match &args.snapshot {
        Some(path) => {
            let (c, p) = (config.clone(), path.clone());
            let (table, _) = tokio::task::spawn_blocking(move || segstream_worker::snapshot_features(&c, &p))
                .await?
                .with_context(|| format!("reading the snapshot {}", path.display()))?;
            (vec![table], format!("snapshot {}", path.display()))
        }
        None => {
            let c = &config.checkpoint;
            let store = CheckpointStore::open(&c.url, &c.options, &config.kafka.group_id)?;
            let tables = store.feature_tables().await?;
            anyhow::ensure!(
                !tables.is_empty(),
                "no feature table under {}: run workers of group {} with checkpoint.url set there (each checkpoint writes its partition's table), or give --snapshot",
                store.location(),
                config.kafka.group_id
            );
            let source = format!("checkpoints {} ({} partitions)", store.location(), tables.len());
            (tables.into_iter().flat_map(|(_, b)| b).collect(), source)
        }
    };
    // The previous model gives the cluster ids to keep and the version to
    // raise. A dry run goes on without it when the broker cannot be read.
    let c = config.clone();
    let previous = match tokio::task::spawn_blocking(move || latest_model(&c)).await? {
        Ok(previous) => previous,
        Err(e) if args.dry_run => {
            tracing::warn!(error = format!("{e:#}"), "no previous model read: a dry run goes on without it");
            None
        }
        Err(e) => return Err(e),
    };
    let c = config.clone();
    let model = tokio::task::spawn_blocking(move || -> anyhow::Result<SegmentModel> {
        let window = c.trainer.rfm_window(&c.features);
        let population = Population::from_batches(&batches, &c.trainer, window)?;
        tracing::info!(customers = population.customers, buyers = population.buyers(), %source, "fitting");
        let now = chrono::Utc::now().timestamp_millis();
        Ok(train(&population, &c.trainer, window, previous.as_ref(), &c.kafka.group_id, &source, now)?)
    })
    .await??;
    print!("{}", describe(&model));
    if args.dry_run {
        return Ok(());
    }
    let bytes = model.to_avro()?;
    let (topic, group) = (&config.topics.models, &config.kafka.group_id);
    let producer: FutureProducer =
        segstream_kafka::producer_config(config, None)?.create().context("creating the producer")?;
    // The delivery report says whether the broker took it (a refusal, e.g.
    // authorisation or size, is not published).
    let delivered = producer
        .send(FutureRecord::to(topic).key(group.as_str()).payload(bytes.as_slice()), Duration::from_secs(30))
        .await
        .map_err(|(e, _)| e)
        .with_context(|| format!("publishing the model on {topic}"))?;
    metrics.model_version.set(model.version);
    metrics.model_trained_timestamp.set(model.trained_at / 1000);
    metrics.model_training_seconds.set(model.training_ms as f64 / 1000.0);
    record_drift(metrics, &model);
    println!(
        "published model {} for group {} on {} (offset {})",
        model.version, model.group_id, config.topics.models, delivered.offset
    );
    Ok(())
}

/// The group's latest published model (highest version), if any.
/// Records that do not read are skipped with a warning.
fn latest_model(config: &Config) -> anyhow::Result<Option<SegmentModel>> {
    let topic = &config.topics.models;
    let (_, records) = Follower::load(config, topic).with_context(|| format!("reading {topic}"))?;
    let group = config.kafka.group_id.as_bytes();
    let mut latest: Option<SegmentModel> = None;
    for read in records.into_iter().filter(|r| r.key.as_deref() == Some(group)) {
        match read.value.as_deref().map(SegmentModel::from_avro) {
            Some(Ok(m)) if latest.as_ref().is_none_or(|l| m.version > l.version) => latest = Some(m),
            Some(Err(e)) => tracing::warn!(%topic, offset = read.offset, error = %e, "not a model: skipped"),
            _ => {}
        }
    }
    Ok(latest)
}

/// What a marketer and an SRE read of a model.
fn describe(m: &SegmentModel) -> String {
    let mut out: Vec<String> = Vec::new();
    out.push(format!(
        "model {} for group {}: {} customers, {} buyers ({} repeat), fitted in {:.1} s on {}",
        m.version,
        m.group_id,
        m.customers,
        m.buyers,
        m.repeat_buyers,
        m.training_ms as f64 / 1000.0,
        m.source
    ));
    if let Some(p) = m.purchase {
        out.push(format!(
            "  purchases (BG/NBD, days): r {:.3}, alpha {:.2}, a {:.3}, b {:.3}",
            p.r, p.alpha, p.a, p.b
        ));
    }
    if let Some(s) = m.spend {
        out.push(format!(
            "  spend (Gamma-Gamma): p {:.2}, q {:.2}, gamma {:.2}; mean order {:.2}",
            s.p,
            s.q,
            s.gamma,
            s.p * s.gamma / (s.q - 1.0)
        ));
        // The search ends on its bound when the likelihood keeps rising (see
        // segstream-trainer's optimiser): worth saying, the figures are limits.
        if [s.p, s.q, s.gamma].iter().any(|v| v.ln().abs() > 14.0) {
            out.push(
                "    (a parameter is at the search bound: these buyers' order values show no spread the model can use, so a customer's expected order value is close to their own average or to the mean)"
                    .to_owned(),
            );
        }
    }
    if let Some(r) = &m.rfm {
        out.push(format!(
            "  RFM quintiles ({} days): recency <= {:?} days, orders >= {:?}, revenue >= {:?}",
            r.window_days, r.recency_max_days, r.frequency_min, r.monetary_min
        ));
    }
    if let Some(c) = &m.clusters {
        let tried: Vec<String> = c.tried.iter().map(|t| format!("k {}: {:.3}", t.k, t.silhouette)).collect();
        out.push(format!(
            "  clusters: k = {} by the highest silhouette ({})",
            c.clusters.len(),
            tried.join(", ")
        ));
        for k in &c.clusters {
            let drift = match k.drift {
                Some(d) => format!(
                    "centre moved {:.2} sd, share was {:.1}%",
                    d.centre_moved,
                    d.previous_share * 100.0
                ),
                None => "new".to_owned(),
            };
            out.push(format!("    cluster {} \"{}\": {:.1}% ({drift})", k.id, k.name, k.share * 100.0));
        }
        if !c.vanished.is_empty() {
            out.push(format!("    vanished: {:?}", c.vanished));
        }
    }
    out.iter().map(|l| format!("{l}\n")).collect()
}

/// The published model's clusters and their drift as gauges (a vanished
/// cluster's series go).
fn record_drift(metrics: &Metrics, model: &SegmentModel) {
    let gauges = [
        &metrics.model_cluster_share,
        &metrics.model_cluster_centre_moved,
        &metrics.model_cluster_share_shift,
    ];
    for g in gauges {
        g.reset();
    }
    for c in model.clusters.iter().flat_map(|c| &c.clusters) {
        let id = c.id.to_string();
        metrics.model_cluster_share.with_label_values(&[id.as_str()]).set(c.share);
        if let Some(d) = c.drift {
            metrics.model_cluster_centre_moved.with_label_values(&[id.as_str()]).set(d.centre_moved);
            metrics
                .model_cluster_share_shift
                .with_label_values(&[id.as_str()])
                .set(c.share - d.previous_share);
        }
    }
}
