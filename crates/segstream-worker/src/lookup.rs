//! `/sql`: ad-hoc SQL over the live feature table, and the look-ups
//! `/customers/{id}` (a customer's features, segments and latest changes
//! with their reasons) and `/segments/{kind}/{name}` (a segment's
//! population and a sample of members), on a listener of its own behind a
//! bearer token (they serve customer data).
//!
//! The pipeline thread owns the state, so the handler asks it for the
//! feature table (as of the worker's latest event time, with each
//! customer's lifecycle stage); the pipeline answers between two batches
//! from one copy it rebuilds at most every `sql.refresh_ms`, and the query
//! runs with DataFusion on the async runtime, off the pipeline's thread.

use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::time::Duration;

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use axum::Router;
use axum::extract::{Path as UrlPath, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::compute::concat_batches;
use std::path::Path;

use segstream_config::{Config, FeaturesConfig, SqlConfig};
use segstream_events::EventTime;
use segstream_segments::SegmentRules;
use segstream_sql::SqlError;
use segstream_sql::query::{self, Limits, OutputFormat};
use serde::Deserialize;
use tokio::sync::oneshot;

use crate::error::WorkerError;
use crate::snapshot::Snapshot;
use crate::store::CustomerStore;

/// A request for the feature table, answered by the pipeline.
pub(crate) type SnapshotRequest = oneshot::Sender<Result<RecordBatch, String>>;

/// How long a query waits for the pipeline to finish its batch.
const PIPELINE_ANSWER: Duration = Duration::from_secs(30);

/// A pipeline thread's side of `/sql`: the requests for its part of the
/// feature table, and the worker's latest event time over every thread, so
/// that the parts of one answer are as of one time.
#[derive(Debug)]
pub(crate) struct Snapshots {
    /// Requests, answered between batches.
    pub(crate) requests: Receiver<SnapshotRequest>,
    /// Largest event time released by any pipeline thread of this worker.
    latest: Arc<AtomicI64>,
}

impl Snapshots {
    /// This thread's largest event time joins the worker's; the time the
    /// feature table is as of.
    pub(crate) fn as_of(&self, mine: Option<EventTime>) -> EventTime {
        if let Some(t) = mine {
            self.latest.fetch_max(t.millis(), Ordering::Relaxed);
        }
        EventTime::from_millis(self.latest.load(Ordering::Relaxed))
    }
}

/// The channels between the HTTP handler and each of `threads` pipeline
/// threads; a few queries may wait, more are refused as busy.
pub(crate) fn channels(threads: usize) -> (Vec<SyncSender<SnapshotRequest>>, Vec<Snapshots>) {
    let latest = Arc::new(AtomicI64::new(0));
    (0..threads)
        .map(|_| {
            let (tx, requests) = sync_channel(4);
            (tx, Snapshots { requests, latest: Arc::clone(&latest) })
        })
        .unzip()
}

/// The feature table of every customer in `store`, as of `as_of`.
pub(crate) fn snapshot(
    store: &CustomerStore,
    config: &FeaturesConfig,
    as_of: EventTime,
) -> Result<RecordBatch, String> {
    let mut customers: Vec<_> = store.features_as_of(as_of).collect();
    crate::checkpoint::feature_rows(&mut customers, config)
}

/// The feature table of a snapshot file (as of its latest event, with each
/// customer's lifecycle stage), and that time.
pub fn snapshot_features(config: &Config, path: &Path) -> Result<(RecordBatch, EventTime), WorkerError> {
    let saved = Snapshot::read(path)?;
    let as_of = saved.as_of;
    let store =
        CustomerStore::from_snapshot(SegmentRules::from_config(config)?, config.features.clone(), saved)?;
    let table = snapshot(&store, &config.features, as_of).map_err(WorkerError::Snapshot)?;
    Ok((table, as_of))
}

#[derive(Debug, Deserialize)]
struct SqlParams {
    #[serde(default)]
    q: Option<String>,
    #[serde(default)]
    format: Option<String>,
}

/// What `/sql` needs: the way to each pipeline thread's snapshots and the
/// limits (and, for a customer's latest changes, the configuration to read
/// them).
#[derive(Debug, Clone)]
struct SqlState {
    requests: Arc<[SyncSender<SnapshotRequest>]>,
    limits: Limits,
    config: Arc<Config>,
}

/// Latest change records a customer look-up shows, and how far back in the
/// customer's partition of the changes topic it reads for them.
const LAST_CHANGES: usize = 10;
const CHANGES_SCANNED: i64 = 1_000_000;

#[derive(Debug, Deserialize)]
struct SampleParams {
    #[serde(default)]
    sample: Option<usize>,
}

/// The bearer token every `/sql` request must carry.
#[derive(Clone)]
pub(crate) struct Token(Arc<[u8]>);

impl Token {
    /// The token in the environment variable `sql.token_env` names.
    pub(crate) fn from_env(config: &SqlConfig) -> Result<Self, WorkerError> {
        match std::env::var(&config.token_env) {
            Ok(t) if !t.trim().is_empty() => Ok(Self(t.trim().as_bytes().into())),
            _ => Err(WorkerError::Config(format!(
                "sql.listen is {:?} but the environment variable {} (sql.token_env) holds no token: \
                 export {}=<a long random secret> before starting, or set sql.listen = \"\" to keep /sql off",
                config.listen, config.token_env, config.token_env
            ))),
        }
    }

    fn matches(&self, header: Option<&[u8]>) -> bool {
        let Some(given) = header.and_then(|h| h.strip_prefix(b"Bearer ")) else { return false };
        // Constant time: the answer's timing tells nothing about the token.
        bool::from(subtle::ConstantTimeEq::ct_eq(given, &*self.0))
    }
}

async fn require_token(State(token): State<Token>, request: Request, next: Next) -> Response {
    if token.matches(request.headers().get(header::AUTHORIZATION).map(|v| v.as_bytes())) {
        next.run(request).await
    } else {
        (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "send the token of sql.token_env as Authorization: Bearer <token>\n",
        )
            .into_response()
    }
}

/// The `/sql` route: the query in `q` (GET) or in the body (POST), for
/// requests that carry `token`; `requests` reach every pipeline thread.
pub(crate) fn routes(requests: Vec<SyncSender<SnapshotRequest>>, config: &Config, token: Token) -> Router {
    let sql = &config.sql;
    let limits = Limits {
        timeout: Duration::from_millis(sql.timeout_ms),
        memory_bytes: sql.memory_limit_mb.saturating_mul(1 << 20),
        max_rows: sql.max_rows,
    };
    Router::new()
        .route("/sql", get(sql_get).post(sql_post))
        .route("/customers/{id}", get(customer))
        .route("/segments/{kind}/{name}", get(segment))
        .with_state(SqlState { requests: requests.into(), limits, config: Arc::new(config.clone()) })
        .layer(middleware::from_fn_with_state(token, require_token))
}

async fn sql_get(State(state): State<SqlState>, Query(p): Query<SqlParams>) -> Response {
    let Some(q) = p.q else {
        return (StatusCode::BAD_REQUEST, "give the query in q=... (or POST it as the body)\n")
            .into_response();
    };
    sql_page(state, &q, p.format.as_deref()).await
}

async fn sql_post(State(state): State<SqlState>, Query(p): Query<SqlParams>, body: String) -> Response {
    sql_page(state, &body, p.format.as_deref()).await
}

async fn sql_page(state: SqlState, sql: &str, format: Option<&str>) -> Response {
    let format = match format {
        None | Some("table") => OutputFormat::Table,
        Some("json") => OutputFormat::Json,
        Some(other) => {
            return (StatusCode::BAD_REQUEST, format!("format={other}: use table or json\n")).into_response();
        }
    };
    match answer(&state, sql, format).await {
        Ok(text) => (StatusCode::OK, text).into_response(),
        Err(response) => response,
    }
}

/// The feature table: every pipeline thread's part of it (each owns its
/// partitions' customers), in one batch.
async fn table(state: &SqlState) -> Result<RecordBatch, Response> {
    let mut answers = Vec::with_capacity(state.requests.len());
    for requests in state.requests.iter() {
        answers.push(ask(requests).map_err(|why| (StatusCode::SERVICE_UNAVAILABLE, why).into_response())?);
    }
    let mut parts = Vec::with_capacity(answers.len());
    for answer in answers {
        match tokio::time::timeout(PIPELINE_ANSWER, answer).await {
            Ok(Ok(Ok(batch))) => parts.push(batch),
            Ok(Ok(Err(e))) => {
                return Err((StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response());
            }
            _ => {
                return Err(
                    (StatusCode::SERVICE_UNAVAILABLE, "the pipeline did not answer\n").into_response()
                );
            }
        }
    }
    match parts.as_slice() {
        [one] => Ok(one.clone()),
        _ => {
            let schema = parts.first().map(RecordBatch::schema).ok_or_else(|| {
                (StatusCode::SERVICE_UNAVAILABLE, "the pipeline is not running\n").into_response()
            })?;
            concat_batches(&schema, &parts)
                .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response())
        }
    }
}

/// Asks one pipeline thread for its feature table; why not, if it cannot.
fn ask(
    requests: &SyncSender<SnapshotRequest>,
) -> Result<oneshot::Receiver<Result<RecordBatch, String>>, &'static str> {
    let (tx, rx) = oneshot::channel();
    match requests.try_send(tx) {
        Ok(()) => Ok(rx),
        Err(TrySendError::Full(_)) => Err("busy: other queries are waiting, retry\n"),
        Err(TrySendError::Disconnected(_)) => Err("the pipeline is not running\n"),
    }
}

/// `sql` over the live feature table, as text in `format`.
async fn answer(state: &SqlState, sql: &str, format: OutputFormat) -> Result<String, Response> {
    answer_on(table(state).await?, sql, format, state.limits).await
}

/// `sql` over `batch` (a copy of the feature table), as text in `format`.
async fn answer_on(
    batch: RecordBatch,
    sql: &str,
    format: OutputFormat,
    limits: Limits,
) -> Result<String, Response> {
    run_query(batch, sql, format, limits).await.map_err(|e| match e {
        e @ SqlError::TimedOut(_) => (StatusCode::REQUEST_TIMEOUT, format!("{e}\n")).into_response(),
        e => (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
    })
}

/// `sql` over `batch` (a copy of the feature table), as JSON rows.
async fn rows(batch: &RecordBatch, sql: &str, limits: Limits) -> Result<Vec<serde_json::Value>, Response> {
    let text = answer_on(batch.clone(), sql, OutputFormat::Json, limits).await?;
    serde_json::from_str(text.trim()).map_err(|e| {
        (StatusCode::INTERNAL_SERVER_ERROR, format!("reading the answer: {e}\n")).into_response()
    })
}

/// A string as an SQL literal.
fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

fn json(value: &serde_json::Value) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], format!("{value}\n")).into_response()
}

/// `GET /customers/{id}`: the customer's row of the feature table (every
/// feature as of the worker's latest event time, and their segments) and
/// their latest change records, newest first, each with its trigger, rule,
/// reason and the values that decided it (read back from the changes
/// topic).
async fn customer(State(state): State<SqlState>, UrlPath(id): UrlPath<String>) -> Response {
    let query = format!("SELECT * FROM features WHERE customer_id = {}", literal(&id));
    let found = match table(&state).await {
        Ok(batch) => rows(&batch, &query, state.limits).await,
        Err(response) => Err(response),
    };
    let found = match found {
        Ok(found) => found,
        Err(response) => return response,
    };
    let Some(features) = found.into_iter().next() else {
        return (
            StatusCode::NOT_FOUND,
            format!("customer {id} is not held by this worker (another worker of the group may own their partition)\n"),
        )
            .into_response();
    };
    let config = Arc::clone(&state.config);
    let key = id.clone();
    let recent = tokio::task::spawn_blocking(move || {
        segstream_kafka::recent_for_key(
            &config,
            &config.topics.segment_changes,
            key.as_bytes(),
            LAST_CHANGES,
            CHANGES_SCANNED,
        )
    })
    .await;
    let changes: Vec<serde_json::Value> = match recent {
        Ok(Ok(values)) => values
            .iter()
            .filter_map(|v| segstream_events::SegmentChange::from_output_avro(v).ok())
            .filter_map(|c| serde_json::to_value(c).ok())
            .collect(),
        Ok(Err(e)) => {
            return (StatusCode::SERVICE_UNAVAILABLE, format!("reading the customer's changes: {e}\n"))
                .into_response();
        }
        Err(e) => return (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    };
    json(&serde_json::json!({ "customer_id": id, "features": features, "last_changes": changes }))
}

/// `GET /segments/{kind}/{name}?sample=N`: how many of this worker's
/// customers are in the segment now, and the first N of them by id.
async fn segment(
    State(state): State<SqlState>,
    UrlPath((kind, name)): UrlPath<(String, String)>,
    Query(p): Query<SampleParams>,
) -> Response {
    let member = match kind.as_str() {
        "lifecycle" | "rfm" => format!("{kind} = {}", literal(&name)),
        "behaviour" | "custom" => format!("array_has({kind}, {})", literal(&name)),
        _ => {
            return (
                StatusCode::BAD_REQUEST,
                format!("kind {kind}: use lifecycle, rfm, behaviour or custom\n"),
            )
                .into_response();
        }
    };
    let sample = p.sample.unwrap_or(10).min(state.limits.max_rows);
    // Both questions on one copy of the table: the sample is of the population counted.
    let batch = match table(&state).await {
        Ok(batch) => batch,
        Err(response) => return response,
    };
    let count =
        rows(&batch, &format!("SELECT count(*) AS population FROM features WHERE {member}"), state.limits)
            .await;
    let members = rows(
        &batch,
        &format!("SELECT customer_id FROM features WHERE {member} ORDER BY customer_id LIMIT {sample}"),
        state.limits,
    )
    .await;
    match (count, members) {
        (Ok(count), Ok(members)) => {
            let population = count.first().and_then(|r| r["population"].as_u64()).unwrap_or(0);
            let sample: Vec<&serde_json::Value> = members.iter().map(|r| &r["customer_id"]).collect();
            json(
                &serde_json::json!({ "kind": kind, "segment": name, "population": population, "sample": sample }),
            )
        }
        (Err(response), _) | (_, Err(response)) => response,
    }
}

async fn run_query(
    features: RecordBatch,
    sql: &str,
    format: OutputFormat,
    limits: Limits,
) -> Result<String, SqlError> {
    let ctx = query::limited_session(limits.memory_bytes)?;
    query::register(&ctx, "features", features.schema(), vec![features])?;
    let mut text = query::answer_limited(&ctx, sql, format, limits).await?;
    text.push('\n');
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::Token;

    #[test]
    fn only_the_exact_bearer_token_passes() {
        let token = Token(b"s3cret-token".as_slice().into());
        assert!(token.matches(Some(b"Bearer s3cret-token")));
        for wrong in [
            &b"Bearer s3cret-toke"[..],
            b"Bearer s3cret-token2",
            b"s3cret-token",
            b"Basic s3cret-token",
            b"Bearer ",
        ] {
            assert!(!token.matches(Some(wrong)), "{}", String::from_utf8_lossy(wrong));
        }
        assert!(!token.matches(None));
    }
}
