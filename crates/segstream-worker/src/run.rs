use std::net::SocketAddr;
use std::sync::Arc;

use segstream_config::Config;
use segstream_telemetry::{Health, Metrics, operations_routes, serve};
use tokio_util::sync::CancellationToken;

use crate::error::WorkerError;
use crate::live::{Pipeline, Summary};
use crate::lookup::{self, Snapshots};

/// Runs a worker until `shutdown` is cancelled (or a pipeline fails).
///
/// A worker runs `worker.threads` pipelines, each on its own thread and
/// each a whole one (group member, producer, state): the group spreads the
/// partitions over them as over workers. One that fails stops the others.
///
/// Order of shutdown: each pipeline finishes and commits its batch, leaves
/// the group and closes the producer; the HTTP endpoint stops last, so
/// `/metrics` stays scrapeable until the end.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<Summary, WorkerError> {
    // The segment definitions are read and checked before anything listens
    // or connects: a file that cannot be used stops the start, named.
    segstream_segments::SegmentRules::from_config(&config)?;
    let threads = config.worker.threads;
    let metrics: Vec<Metrics> =
        if threads == 1 { vec![Metrics::new()] } else { (0..threads).map(Metrics::for_pipeline).collect() };
    let health: Vec<Arc<Health>> = (0..threads).map(|_| Health::new()).collect();
    let http_stop = CancellationToken::new();
    let (sql_requests, snapshots) = lookup::channels(threads);
    // The SQL listener first: a missing token stops the start before anything listens.
    let sql_server = if config.sql.listen.is_empty() {
        None
    } else {
        let token = lookup::Token::from_env(&config.sql)?;
        let routes = lookup::routes(sql_requests, &config, token);
        let (bound, task) =
            serve(listen_address(&config.sql.listen, "sql.listen")?, "sql.listen", routes, http_stop.clone())
                .await?;
        tracing::info!(%bound, "serving SQL on http://{bound}/sql (bearer token required)");
        Some(task)
    };
    let operations = operations_routes(metrics.clone(), health.clone());
    let (bound, http) = serve(
        listen_address(&config.http.listen, "http.listen")?,
        "http.listen",
        operations,
        http_stop.clone(),
    )
    .await?;
    tracing::info!(%bound, "serving http://{bound}/metrics, /healthz and /readyz");

    let stop = shutdown.child_token();
    let runtime = tokio::runtime::Handle::current();
    let mut pipelines = tokio::task::JoinSet::new();
    for (index, ((metrics, health), snapshots)) in
        metrics.into_iter().zip(health.clone()).zip(snapshots).enumerate()
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let config = config.pipeline(index);
        let token = stop.clone();
        let runtime = runtime.clone();
        let name = if threads == 1 { "pipeline".to_owned() } else { format!("pipeline-{index}") };
        std::thread::Builder::new()
            .name(name)
            .spawn(move || {
                // Several pipelines: each log line says whose it is.
                let _span = (threads > 1).then(|| tracing::info_span!("pipeline", n = index).entered());
                let result = start_pipeline(config, metrics, health, snapshots, runtime, &token);
                // The receiver only goes away if the runtime is shutting down: nothing left to tell.
                if tx.send(result).is_err() {
                    tracing::debug!("pipeline result had no receiver");
                }
            })
            .map_err(|e| WorkerError::Thread(e.to_string()))?;
        pipelines.spawn(async move {
            (index, rx.await.unwrap_or_else(|_| Err(WorkerError::Thread("pipeline thread panicked".into()))))
        });
    }
    let mut summary = Summary::default();
    let mut failure = None;
    while let Some(joined) = pipelines.join_next().await {
        let (index, result) =
            joined.unwrap_or_else(|e| (0, Err(WorkerError::Thread(format!("waiting for a pipeline: {e}")))));
        match result {
            Ok(done) => summary.add(&done),
            Err(e) => {
                health[index].set_dead();
                tracing::error!(error = %e, pipeline = index, "pipeline stopped");
                // The others commit what they did and leave the group.
                stop.cancel();
                failure.get_or_insert(e);
            }
        }
    }
    http_stop.cancel();
    for task in std::iter::once(http).chain(sql_server) {
        match task.await {
            Ok(Err(e)) => tracing::warn!(error = %e, "HTTP server ended with an error"),
            Err(e) => tracing::warn!(error = %e, "HTTP server task failed"),
            Ok(Ok(())) => {}
        }
    }
    failure.map_or(Ok(summary), Err)
}

/// An address the config's validation accepted.
fn listen_address(text: &str, field: &str) -> Result<SocketAddr, WorkerError> {
    text.parse().map_err(|_| WorkerError::Config(format!("{field} {text:?} is not ip:port")))
}

fn start_pipeline(
    config: Config,
    metrics: Metrics,
    health: Arc<Health>,
    snapshots: Snapshots,
    runtime: tokio::runtime::Handle,
    shutdown: &CancellationToken,
) -> Result<Summary, WorkerError> {
    match Pipeline::connect(config, metrics, health, snapshots, runtime, shutdown) {
        Ok(pipeline) => pipeline.run(shutdown),
        // Stopped while it waited for the schema registry: nothing to commit yet.
        Err(WorkerError::Registry(segstream_registry::RegistryError::Stopped { .. })) => {
            Ok(Summary::default())
        }
        Err(e) => Err(e),
    }
}
