//! `segstream replay` (history files through the worker's engine, changes
//! out as JSON lines) and `segstream backfill` (the same, state out as a
//! snapshot file).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use segstream_config::Config;
use segstream_sql::history::{self, EventKind};
use segstream_worker::ReplaySummary;

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
    /// Also write every customer's memberships at the end (what the
    /// compacted customer-segments topic ends up holding), one JSON object
    /// per line.
    #[arg(long)]
    memberships: Option<PathBuf>,
}

/// Payloads of one kind in file order, and where each came from.
#[derive(Default)]
struct Lane {
    payloads: Vec<Vec<u8>>,
    origin: Vec<(usize, usize)>,
}

/// Arguments of `segstream backfill`.
#[derive(Debug, Args)]
pub(crate) struct BackfillArgs {
    /// A history file or a directory of them, as for `segstream replay`.
    #[arg(long)]
    input: PathBuf,
    /// Partitions the state is spread over (default: topics.partitions).
    #[arg(long)]
    partitions: Option<i32>,
    /// The snapshot file to write (query it with `segstream sql --snapshot`).
    #[arg(long)]
    snapshot: PathBuf,
}

/// The history of `input`: files, and payloads per kind in file order.
struct History {
    files: Vec<history::HistoryFile>,
    clicks: Lane,
    orders: Lane,
}

impl History {
    async fn read(input: &Path) -> anyhow::Result<Self> {
        let files = history::discover(input)?;
        let (mut clicks, mut orders) = (Lane::default(), Lane::default());
        for (f, file) in files.iter().enumerate() {
            let lane = if file.kind == EventKind::Click { &mut clicks } else { &mut orders };
            for p in history::read_payloads(file).await? {
                lane.payloads.push(p.bytes);
                lane.origin.push((f, p.line));
            }
        }
        Ok(Self { files, clicks, orders })
    }

    fn total(&self) -> u64 {
        (self.clicks.payloads.len() + self.orders.payloads.len()) as u64
    }

    fn progress_bar(&self, verb: &str) -> ProgressBar {
        ProgressBar::new(self.total()).with_style(
            ProgressStyle::with_template(&format!("{verb} [{{bar:30}}] {{pos}}/{{len}} events {{elapsed}}"))
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        )
    }

    /// Prints how many events were rejected, by reason, and the first of
    /// them with file and line; an error when no event decoded at all.
    fn report_rejected(&self, summary: &ReplaySummary) -> anyhow::Result<()> {
        let mut by_code: BTreeMap<&str, usize> = BTreeMap::new();
        for (_, _, error) in &summary.rejected {
            *by_code.entry(error.code()).or_default() += 1;
        }
        let reasons: Vec<String> = by_code.iter().map(|(code, n)| format!("{code}: {n}")).collect();
        eprintln!(
            "{} events rejected (a live worker dead-letters them){}{}",
            summary.rejected.len(),
            if reasons.is_empty() { "" } else { ": " },
            reasons.join(", ")
        );
        for (kind, index, error) in summary.rejected.iter().take(10) {
            let lane = if *kind == "clicks" { &self.clicks } else { &self.orders };
            if let Some((f, line)) = lane.origin.get(*index) {
                eprintln!("  {}:{line}: {error}", self.files[*f].path.display());
            }
        }
        anyhow::ensure!(
            summary.clicks + summary.orders > 0 || self.total() == 0,
            "none of the {} events decoded (reasons above): nothing was written",
            self.total()
        );
        anyhow::ensure!(self.total() > 0, "the input holds no events: nothing was written");
        Ok(())
    }
}

fn partitions(arg: Option<i32>, config: &Config) -> anyhow::Result<i32> {
    let partitions = arg.unwrap_or(config.topics.partitions);
    anyhow::ensure!(partitions >= 1, "--partitions {partitions}: use 1 or more");
    Ok(partitions)
}

pub(crate) async fn backfill(args: BackfillArgs, config: Config) -> anyhow::Result<()> {
    let partitions = partitions(args.partitions, &config)?;
    let history = Arc::new(History::read(&args.input).await?);
    let bar = history.progress_bar("backfilling");
    let began = Instant::now();
    let (progress, h, snapshot) = (bar.clone(), Arc::clone(&history), args.snapshot.clone());
    let (summary, bytes) = tokio::task::spawn_blocking(move || {
        segstream_worker::backfill(
            &config,
            partitions,
            &h.clicks.payloads,
            &h.orders.payloads,
            |n| progress.set_position(n),
            &snapshot,
        )
    })
    .await??;
    bar.finish_and_clear();
    history.report_rejected(&summary)?;
    eprintln!(
        "backfilled {} customers from {} clicks and {} orders in {:.1} s, as of {}: {} ({:.1} MiB)",
        summary.customers,
        summary.clicks,
        summary.orders,
        began.elapsed().as_secs_f64(),
        summary.latest.map(|t| t.to_string()).unwrap_or_else(|| "no event".into()),
        args.snapshot.display(),
        bytes as f64 / 1_048_576.0,
    );
    Ok(())
}

pub(crate) async fn run(args: ReplayArgs, config: Config) -> anyhow::Result<()> {
    let partitions = partitions(args.partitions, &config)?;
    let history = Arc::new(History::read(&args.input).await?);
    let total = history.total();
    let bar = history.progress_bar("replaying");
    let mut out: Box<dyn Write + Send> = if args.output == Path::new("-") {
        Box::new(std::io::BufWriter::new(std::io::stdout()))
    } else {
        let file = std::fs::File::create(&args.output)
            .with_context(|| format!("creating --output {}", args.output.display()))?;
        Box::new(std::io::BufWriter::new(file))
    };
    let mut memberships_out = match &args.memberships {
        Some(path) => Some(std::io::BufWriter::new(
            std::fs::File::create(path)
                .with_context(|| format!("creating --memberships {}", path.display()))?,
        )),
        None => None,
    };
    let began = Instant::now();
    let progress = bar.clone();
    let h = Arc::clone(&history);
    let summary = tokio::task::spawn_blocking(move || -> anyhow::Result<ReplaySummary> {
        let (summary, memberships) = segstream_worker::replay(
            &config,
            partitions,
            &h.clicks.payloads,
            &h.orders.payloads,
            |n| progress.set_position(n),
            |change| {
                serde_json::to_writer(&mut out, &change)?;
                out.write_all(b"\n")
            },
        )?;
        out.flush().context("writing --output")?;
        if let Some(file) = memberships_out.as_mut() {
            for m in memberships {
                serde_json::to_writer(&mut *file, &m)?;
                file.write_all(b"\n")?;
            }
            file.flush().context("writing --memberships")?;
        }
        Ok(summary)
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
    history.report_rejected(&summary)
}
