use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::mpsc::Receiver;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{DefaultProducerContext, Producer, ThreadedProducer};
use segstream_config::Config;
use segstream_kafka::{
    KafkaIoError, RecoveringContext, check_copartitioned, consumer_config, producer_config, transactional_id,
    wait_for_broker,
};
use segstream_telemetry::{Health, Metrics, serve};
use tokio_util::sync::CancellationToken;

use crate::error::WorkerError;
use crate::lookup::{self, SnapshotRequest};
use crate::pipeline::{Pipeline, Summary};
use crate::snapshot::WarmStart;

/// How long start-up waits for the broker before giving up.
const BROKER_WAIT: Duration = Duration::from_secs(30);

/// Runs a worker until `shutdown` is cancelled (or the pipeline fails).
///
/// Order of shutdown: the pipeline finishes and commits its batch, leaves
/// the group and closes the producer; the HTTP endpoint stops last, so
/// `/metrics` stays scrapeable until the end.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<Summary, WorkerError> {
    let metrics = Metrics::new();
    let health = Health::new();
    // Validated by Config::validate.
    let addr: SocketAddr =
        config.http.listen.parse().map_err(|_| {
            WorkerError::Thread(format!("http.listen {:?} is not ip:port", config.http.listen))
        })?;
    let http_stop = CancellationToken::new();
    let (sql_requests, snapshots) = lookup::channel();
    let (bound, http) =
        serve(addr, metrics.clone(), Arc::clone(&health), lookup::routes(sql_requests), http_stop.clone())
            .await?;
    tracing::info!(%bound, "serving http://{bound}/metrics, /healthz, /readyz and /sql");

    let (tx, rx) = tokio::sync::oneshot::channel();
    let pipeline_health = Arc::clone(&health);
    let token = shutdown.clone();
    std::thread::Builder::new()
        .name("pipeline".into())
        .spawn(move || {
            let result = start_pipeline(config, metrics, pipeline_health, snapshots, &token);
            // The receiver only goes away if the runtime is shutting down: nothing left to tell.
            if tx.send(result).is_err() {
                tracing::debug!("pipeline result had no receiver");
            }
        })
        .map_err(|e| WorkerError::Thread(e.to_string()))?;
    let result = rx.await.unwrap_or_else(|_| Err(WorkerError::Thread("pipeline thread panicked".into())));
    if let Err(e) = &result {
        health.set_dead();
        tracing::error!(error = %e, "pipeline stopped");
    }
    http_stop.cancel();
    match http.await {
        Ok(Err(e)) => tracing::warn!(error = %e, "HTTP server ended with an error"),
        Err(e) => tracing::warn!(error = %e, "HTTP server task failed"),
        Ok(Ok(())) => {}
    }
    result
}

fn start_pipeline(
    config: Config,
    metrics: Metrics,
    health: Arc<Health>,
    snapshots: Receiver<SnapshotRequest>,
    shutdown: &CancellationToken,
) -> Result<Summary, WorkerError> {
    let consumer: BaseConsumer<RecoveringContext> = consumer_config(&config)?
        .create_with_context(RecoveringContext::new(metrics.clone()))
        .map_err(KafkaIoError::kafka("creating the consumer"))?;
    wait_for_broker(consumer.client(), &config.kafka.bootstrap_servers, BROKER_WAIT)?;
    let topics = &config.topics;
    let partitions = check_copartitioned(consumer.client(), &topics.clickstream, &topics.orders)?;
    let tx_id = transactional_id(&config);
    let producer: ThreadedProducer<DefaultProducerContext> = producer_config(&config, Some(&tx_id))?
        .create()
        .map_err(KafkaIoError::kafka("creating the producer"))?;
    // Fences any previous incarnation with the same transactional id and
    // aborts its open transaction, so read_committed readers are not blocked.
    producer
        .init_transactions(Duration::from_secs(60))
        .map_err(|source| WorkerError::Transaction { context: "initialising transactions", source })?;
    consumer
        .subscribe(&[topics.clickstream.as_str(), topics.orders.as_str()])
        .map_err(KafkaIoError::kafka("subscribing to the input topics"))?;
    tracing::info!(
        group = %config.kafka.group_id,
        transactional_id = %tx_id,
        partitions,
        clickstream = %topics.clickstream,
        orders = %topics.orders,
        "worker started"
    );
    let warm = match config.worker.warm_start.as_str() {
        "" => None,
        path => {
            let partitions = i32::try_from(partitions).unwrap_or(i32::MAX);
            Some(WarmStart::load(std::path::Path::new(path), &config.features, partitions)?)
        }
    };
    Pipeline::new(config, metrics, health, consumer, producer, snapshots, warm)?.run(shutdown)
}
