use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use thiserror::Error;
use tokio_util::sync::CancellationToken;

use crate::Metrics;

/// Liveness and readiness, set by the pipeline.
#[derive(Debug, Default)]
pub struct Health {
    alive: AtomicBool,
    ready: AtomicBool,
    /// Why the worker is not ready, beyond "starting" (e.g. a stopped partition).
    reason: Mutex<String>,
    /// Why the worker is alive but not healthy (it does not progress).
    problems: Mutex<String>,
}

impl Health {
    /// Starts alive and not ready.
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            alive: AtomicBool::new(true),
            ready: AtomicBool::new(false),
            reason: Mutex::default(),
            problems: Mutex::default(),
        })
    }

    /// Ready: partitions assigned and state rebuilt, outputs flowing.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    /// Why `/readyz` says not ready (empty: no reason beyond starting up).
    pub fn set_reason(&self, reason: &str) {
        set_text(&self.reason, reason);
    }

    /// The reason set by [`Health::set_reason`].
    pub fn reason(&self) -> String {
        text(&self.reason)
    }

    /// Why `/healthz` fails although the pipeline runs (empty: healthy).
    pub fn set_problems(&self, problems: &str) {
        set_text(&self.problems, problems);
    }

    /// The problems set by [`Health::set_problems`].
    pub fn problems(&self) -> String {
        text(&self.problems)
    }

    /// Not alive: the pipeline stopped on an error.
    pub fn set_dead(&self) {
        self.alive.store(false, Ordering::Relaxed);
        self.ready.store(false, Ordering::Relaxed);
    }

    /// Whether the pipeline reports ready.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    /// Whether the pipeline is alive.
    pub fn is_alive(&self) -> bool {
        self.alive.load(Ordering::Relaxed)
    }
}

/// Replaces the text (set every cycle: no allocation when it is the same).
fn set_text(slot: &Mutex<String>, new: &str) {
    let mut t = slot.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if t.as_str() != new {
        new.clone_into(&mut t);
    }
}

fn text(slot: &Mutex<String>) -> String {
    slot.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
}

/// The HTTP server could not start.
#[derive(Debug, Error)]
pub enum HttpError {
    /// The listen address is taken or not allowed.
    #[error(
        "cannot listen on {addr} ({field}): {source}; choose a free address with --set {field}=127.0.0.1:PORT"
    )]
    Bind {
        /// The setting that gave the address.
        field: &'static str,
        /// Address tried.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The server failed while running.
    #[error("HTTP server failed: {0}")]
    Serve(std::io::Error),
}

#[derive(Clone)]
struct AppState {
    metrics: Arc<[Metrics]>,
    health: Arc<[Arc<Health>]>,
}

impl AppState {
    /// What each pipeline says, named by its index when there are several.
    fn said(&self, what: impl Fn(&Health) -> String) -> String {
        let several = self.health.len() > 1;
        let said: Vec<String> = self
            .health
            .iter()
            .enumerate()
            .map(|(i, h)| (i, what(h)))
            .filter(|(_, text)| !text.is_empty())
            .map(|(i, text)| if several { format!("pipeline {i}: {text}") } else { text })
            .collect();
        said.join("; ")
    }
}

async fn metrics_page(State(s): State<AppState>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], Metrics::render_all(&s.metrics))
}

async fn healthz(State(s): State<AppState>) -> impl IntoResponse {
    if !s.health.iter().all(|h| h.is_alive()) {
        return (StatusCode::SERVICE_UNAVAILABLE, "pipeline stopped\n".to_owned());
    }
    let problems = s.said(Health::problems);
    if problems.is_empty() {
        (StatusCode::OK, "ok\n".to_owned())
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, format!("unhealthy: {problems}\n"))
    }
}

async fn readyz(State(s): State<AppState>) -> impl IntoResponse {
    if s.health.iter().all(|h| h.is_ready()) {
        return (StatusCode::OK, "ready\n".to_owned());
    }
    let reason = s.said(Health::reason);
    if reason.is_empty() {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n".to_owned())
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {reason}\n"))
    }
}

/// `/metrics`, `/healthz` and `/readyz`: what Prometheus and the
/// orchestrator read, and nothing about customers. A worker with several
/// pipeline threads passes each one's metrics and health: `/metrics` shows
/// them all, `/healthz` and `/readyz` answer 200 only when every one is
/// healthy or ready, and name the ones that are not.
pub fn operations_routes(metrics: Vec<Metrics>, health: Vec<Arc<Health>>) -> Router {
    Router::new()
        .route("/metrics", get(metrics_page))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(AppState { metrics: metrics.into(), health: health.into() })
}

/// Binds `addr` (the setting `field` gave it) and serves `app` until
/// `shutdown` is cancelled. Returns the bound address (useful with port 0)
/// and the server task.
pub async fn serve(
    addr: SocketAddr,
    field: &'static str,
    app: Router,
    shutdown: CancellationToken,
) -> Result<(SocketAddr, tokio::task::JoinHandle<Result<(), HttpError>>), HttpError> {
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|source| HttpError::Bind {
        field,
        addr,
        source,
    })?;
    let bound = listener.local_addr().map_err(HttpError::Serve)?;
    let task = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await
            .map_err(HttpError::Serve)
    });
    Ok((bound, task))
}
