//! `segstream replay`: history files through the worker's engine, changes out
//! as JSON lines.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use segstream_config::Config;
use segstream_sql::history::{self, EventKind};

/// Arguments of `segstream replay`.
#[derive(Debug, Args)]
pub(crate) struct ReplayArgs {
    /// A history file or a directory of them: JSON lines, CSV or Parquet, with
    /// `click` or `order` in each file name (what `segstream generate --to files` writes).
    #[arg(long)]
    input: PathBuf,
    /// Partitions of the input topics the history stands for (default:
    /// topics.partitions). Timers run per partition, so it must match the live
    /// topics for the changes to match.
    #[arg(long)]
    partitions: Option<i32>,
    /// Where to write the segment changes, one JSON object per line; `-` for stdout.
    #[arg(long, default_value = "-")]
    output: PathBuf,
}

/// Payloads of one kind in file order, and where each came from.
#[derive(Default)]
struct Lane {
    payloads: Vec<Vec<u8>>,
    origin: Vec<(usize, usize)>,
}

pub(crate) async fn run(args: ReplayArgs, config: Config) -> anyhow::Result<()> {
    let partitions = args.partitions.unwrap_or(config.topics.partitions);
    anyhow::ensure!(partitions >= 1, "--partitions {partitions}: use 1 or more");
    let files = history::discover(&args.input)?;
    let (mut clicks, mut orders) = (Lane::default(), Lane::default());
    for (f, file) in files.iter().enumerate() {
        let lane = if file.kind == EventKind::Click { &mut clicks } else { &mut orders };
        for p in history::read_payloads(file).await? {
            lane.payloads.push(p.bytes);
            lane.origin.push((f, p.line));
        }
    }
    let total = (clicks.payloads.len() + orders.payloads.len()) as u64;
    let bar = ProgressBar::new(total).with_style(
        ProgressStyle::with_template("replaying [{bar:30}] {pos}/{len} events {elapsed}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut out: Box<dyn Write + Send> = if args.output == Path::new("-") {
        Box::new(std::io::BufWriter::new(std::io::stdout()))
    } else {
        let file = std::fs::File::create(&args.output)
            .with_context(|| format!("creating --output {}", args.output.display()))?;
        Box::new(std::io::BufWriter::new(file))
    };
    let began = Instant::now();
    let progress = bar.clone();
    let (summary, clicks, orders) = tokio::task::spawn_blocking(move || {
        let summary = segstream_worker::replay(
            &config,
            partitions,
            &clicks.payloads,
            &orders.payloads,
            |n| progress.set_position(n),
            |change| {
                serde_json::to_writer(&mut out, &change)?;
                out.write_all(b"\n")
            },
        )
        .and_then(|s| {
            out.flush().map_err(|e| segstream_worker::WorkerError::Output(e.to_string()))?;
            Ok(s)
        });
        (summary, clicks, orders)
    })
    .await?;
    let summary = summary?;
    bar.finish_and_clear();
    let seconds = began.elapsed().as_secs_f64();
    eprintln!(
        "replayed {} clicks and {} orders over {partitions} partitions in {seconds:.1} s ({:.0} events/s): {} segment changes, {} customers, {} late ({} set aside)",
        summary.clicks,
        summary.orders,
        total as f64 / seconds.max(1e-9),
        summary.changes,
        summary.customers,
        summary.late,
        summary.late_set_aside,
    );
    if !summary.rejected.is_empty() {
        eprintln!("{} events did not decode (a live worker dead-letters them):", summary.rejected.len());
        for (kind, index, error) in summary.rejected.iter().take(10) {
            let lane = if *kind == "clicks" { &clicks } else { &orders };
            if let Some((f, line)) = lane.origin.get(*index) {
                eprintln!("  {}:{line}: {error}", files[*f].path.display());
            }
        }
    }
    Ok(())
}
