//! `segstream sql`: SQL over customer features, from history files or from a
//! running worker.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, ValueEnum};
use datafusion::prelude::SessionContext;
use segstream_config::Config;
use segstream_events::EventTime;
use segstream_sql::query::{self, OutputFormat};
use segstream_sql::{definition, history, table};

/// Output format of `segstream sql`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum Format {
    /// An aligned text table.
    Table,
    /// A JSON array of objects.
    Json,
}

impl From<Format> for OutputFormat {
    fn from(f: Format) -> Self {
        match f {
            Format::Table => OutputFormat::Table,
            Format::Json => OutputFormat::Json,
        }
    }
}

/// Arguments of `segstream sql`.
#[derive(Debug, Args)]
pub(crate) struct SqlArgs {
    /// The query, e.g. "SELECT customer_id, revenue_365d FROM features ORDER BY 2 DESC LIMIT 10".
    query: String,
    /// History files (a file or a directory; JSON lines, CSV or Parquet): the
    /// query sees `clicks`, `orders` and `features` computed from them by the
    /// batch definition. Without it, the query runs on a worker's live state.
    #[arg(long)]
    input: Option<PathBuf>,
    /// A state snapshot file (`segstream backfill --snapshot`): the query
    /// sees `features` as of the snapshot's latest event, with `lifecycle`.
    #[arg(long, conflicts_with = "input")]
    snapshot: Option<PathBuf>,
    /// With --input: features as of this time, RFC 3339 (2024-05-01T00:00:00Z)
    /// or milliseconds since the epoch. Default: the latest event in the input.
    #[arg(long)]
    as_of: Option<String>,
    /// Without --input: the worker's SQL address (default: sql.listen); the
    /// token is read from the variable sql.token_env names.
    #[arg(long)]
    worker: Option<String>,
    /// How to print the result.
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
}

fn parse_time(text: &str) -> anyhow::Result<EventTime> {
    if let Ok(ms) = text.parse::<i64>() {
        return Ok(EventTime::from_millis(ms));
    }
    let t = chrono::DateTime::parse_from_rfc3339(text).with_context(|| {
        format!("--as-of {text:?}: use RFC 3339 (2024-05-01T00:00:00Z) or epoch milliseconds")
    })?;
    Ok(EventTime::from_millis(t.timestamp_millis()))
}

pub(crate) async fn run(args: SqlArgs, config: Config) -> anyhow::Result<()> {
    let ctx = SessionContext::new();
    if let Some(path) = &args.snapshot {
        let (path, c) = (path.clone(), config.clone());
        let (features, _) =
            tokio::task::spawn_blocking(move || segstream_worker::snapshot_features(&c, &path)).await??;
        query::register(&ctx, "features", features.schema(), vec![features])?;
    } else if let Some(input) = &args.input {
        register_history(&ctx, input, args.as_of.as_deref(), &config).await?;
    } else {
        let format = format!("{:?}", args.format).to_lowercase();
        let request =
            WorkerRequest { path: "/sql".into(), query: vec![("format", format)], body: Some(args.query) };
        print!("{}", call_worker(&config, args.worker.as_deref(), request).await?);
        return Ok(());
    }
    println!("{}", query::answer(&ctx, &args.query, OutputFormat::from(args.format)).await?);
    Ok(())
}

/// Registers history files as `clicks` and `orders`, and their batch
/// features as of `as_of` (default: the latest event) as `features`.
async fn register_history(
    ctx: &SessionContext,
    input: &std::path::Path,
    as_of: Option<&str>,
    config: &Config,
) -> anyhow::Result<()> {
    let files = history::discover(input)?;
    let events = history::decode_history(&files, segstream_worker::input_rules(config)).await?;
    for (path, line, error) in events.rejected.iter().take(10) {
        eprintln!("skipped {}:{line}: {error}", path.display());
    }
    let latest = events
        .clicks
        .iter()
        .flat_map(|b| (0..b.len()).map(|i| b.row(i).event_time))
        .chain(events.orders.iter().flat_map(|b| (0..b.len()).map(|i| b.row(i).event_time)))
        .max();
    let as_of = match as_of {
        Some(text) => parse_time(text)?,
        None => latest.context("the input holds no events")?,
    };
    query::register_events(ctx, &events.clicks, &events.orders)?;
    let features = definition::batch_features(ctx, as_of, &config.features).await?;
    query::register(ctx, "features", table::schema(&config.features, false), features)?;
    Ok(())
}

/// A request to a worker's SQL listener: a GET, or a POST of `body`.
pub(crate) struct WorkerRequest {
    pub(crate) path: String,
    pub(crate) query: Vec<(&'static str, String)>,
    pub(crate) body: Option<String>,
}

/// Sends `request` to the worker's SQL listener (`worker`, default
/// sql.listen) with the token of sql.token_env; returns the answer's text.
pub(crate) async fn call_worker(
    config: &Config,
    worker: Option<&str>,
    request: WorkerRequest,
) -> anyhow::Result<String> {
    let addr = worker.map_or_else(|| config.sql.listen.clone(), str::to_owned);
    anyhow::ensure!(
        !addr.is_empty(),
        "give a worker's SQL address with --worker host:port (or sql.listen), or read files with --input or --snapshot"
    );
    let token = std::env::var(&config.sql.token_env).with_context(|| {
        format!("a worker's SQL listener needs its token: export {} (sql.token_env)", config.sql.token_env)
    })?;
    let url = format!("http://{addr}{}", request.path);
    let bearer = format!("Bearer {}", token.trim());
    let response = tokio::task::spawn_blocking(move || {
        let WorkerRequest { query, body, .. } = request;
        match body {
            Some(body) => {
                let mut call = ureq::post(&url).header("Authorization", &bearer);
                for (key, value) in &query {
                    call = call.query(*key, value);
                }
                call.config().http_status_as_error(false).build().send(body.as_bytes())
            }
            None => {
                let mut call = ureq::get(&url).header("Authorization", &bearer);
                for (key, value) in &query {
                    call = call.query(*key, value);
                }
                call.config().http_status_as_error(false).build().call()
            }
        }
    })
    .await?
    .with_context(|| format!("cannot reach the worker at {addr} (is it running? --worker host:port)"))?;
    let status = response.status();
    let body = response.into_body().read_to_string().context("reading the worker's answer")?;
    anyhow::ensure!(status.is_success(), "the worker answered {status}: {}", body.trim());
    Ok(body)
}
