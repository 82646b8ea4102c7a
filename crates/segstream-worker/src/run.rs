use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::mpsc::Receiver;

use segstream_config::Config;
use segstream_telemetry::{Health, Metrics, operations_routes, serve};
use tokio_util::sync::CancellationToken;

use crate::error::WorkerError;
use crate::live::{Pipeline, Summary};
use crate::lookup::{self, SnapshotRequest};

/// Runs a worker until `shutdown` is cancelled (or the pipeline fails).
///
/// Order of shutdown: the pipeline finishes and commits its batch, leaves
/// the group and closes the producer; the HTTP endpoint stops last, so
/// `/metrics` stays scrapeable until the end.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<Summary, WorkerError> {
    // The segment definitions are read and checked before anything listens
    // or connects: a file that cannot be used stops the start, named.
    segstream_segments::SegmentRules::from_config(&config)?;
    let metrics = Metrics::new();
    let health = Health::new();
    let http_stop = CancellationToken::new();
    let (sql_requests, snapshots) = lookup::channel();
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
    let operations = operations_routes(metrics.clone(), Arc::clone(&health));
    let (bound, http) = serve(
        listen_address(&config.http.listen, "http.listen")?,
        "http.listen",
        operations,
        http_stop.clone(),
    )
    .await?;
    tracing::info!(%bound, "serving http://{bound}/metrics, /healthz and /readyz");

    let (tx, rx) = tokio::sync::oneshot::channel();
    let pipeline_health = Arc::clone(&health);
    let token = shutdown.clone();
    let runtime = tokio::runtime::Handle::current();
    std::thread::Builder::new()
        .name("pipeline".into())
        .spawn(move || {
            let result = start_pipeline(config, metrics, pipeline_health, snapshots, runtime, &token);
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
    for task in std::iter::once(http).chain(sql_server) {
        match task.await {
            Ok(Err(e)) => tracing::warn!(error = %e, "HTTP server ended with an error"),
            Err(e) => tracing::warn!(error = %e, "HTTP server task failed"),
            Ok(Ok(())) => {}
        }
    }
    result
}

/// An address the config's validation accepted.
fn listen_address(text: &str, field: &str) -> Result<SocketAddr, WorkerError> {
    text.parse().map_err(|_| WorkerError::Config(format!("{field} {text:?} is not ip:port")))
}

fn start_pipeline(
    config: Config,
    metrics: Metrics,
    health: Arc<Health>,
    snapshots: Receiver<SnapshotRequest>,
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
