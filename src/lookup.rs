//! `segstream customer ID` and `segstream segment KIND NAME`: look-ups on a
//! running worker's SQL listener (customer data: its token is required).

use clap::Args;
use segstream_config::Config;

use crate::sql::{WorkerRequest, call_worker};

#[derive(Debug, Args)]
pub(crate) struct CustomerArgs {
    /// The customer id.
    id: String,
    /// The worker's SQL address (default: sql.listen); the token is read
    /// from the variable sql.token_env names.
    #[arg(long)]
    worker: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct SegmentArgs {
    /// lifecycle, rfm, behaviour or custom.
    kind: String,
    /// The segment, e.g. at_risk.
    name: String,
    /// Members named.
    #[arg(long, default_value_t = 10)]
    sample: usize,
    /// The worker's SQL address (default: sql.listen).
    #[arg(long)]
    worker: Option<String>,
}

/// A path segment with everything but unreserved characters percent-encoded.
fn segment_of(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => char::from(b).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Prints a customer's features, segments and latest changes with their reasons.
pub(crate) async fn customer(args: CustomerArgs, config: Config) -> anyhow::Result<()> {
    let path = format!("/customers/{}", segment_of(&args.id));
    let request = WorkerRequest { path, query: Vec::new(), body: None };
    print_json(&call_worker(&config, args.worker.as_deref(), request).await?)
}

/// Prints a segment's population and a sample of its members.
pub(crate) async fn segment(args: SegmentArgs, config: Config) -> anyhow::Result<()> {
    let path = format!("/segments/{}/{}", segment_of(&args.kind), segment_of(&args.name));
    let request = WorkerRequest { path, query: vec![("sample", args.sample.to_string())], body: None };
    print_json(&call_worker(&config, args.worker.as_deref(), request).await?)
}

fn print_json(text: &str) -> anyhow::Result<()> {
    let value: serde_json::Value = serde_json::from_str(text.trim())?;
    println!("{}", serde_json::to_string_pretty(&value)?);
    Ok(())
}
