//! `segstream`: the command line of the streaming segmentation worker.

mod forget;
mod generate;
mod lookup;
mod replay;
mod segments;
mod sql;
mod train;
mod watch;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use segstream_config::Config;
use tokio_util::sync::CancellationToken;

/// mimalloc, not glibc's malloc: with millions of customers' small
/// allocations in the heap, glibc spent about 40 % of the engine's time
/// consolidating and searching its free lists (benches/README.md,
/// "In-process pipeline").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Streaming customer segmentation: Kafka clicks and orders in, segment changes out.
#[derive(Debug, Parser)]
#[command(name = "segstream", version, about)]
struct Cli {
    /// TOML config file (only the keys you change; see crates/segstream-config/default.toml).
    #[arg(long, global = true, env = "SEGSTREAM_CONFIG")]
    config: Option<PathBuf>,
    /// Override one key: --set section.key=value (repeatable; wins over file and environment).
    #[arg(long = "set", global = true, value_name = "SECTION.KEY=VALUE")]
    set: Vec<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a worker: consume clickstream and orders, publish segment changes.
    Worker,
    /// Generate synthetic traffic with customer personas, to Kafka or to files.
    Generate(generate::GenerateArgs),
    /// Print segment changes as they are committed, one line per transition.
    Watch(watch::WatchArgs),
    /// Push history files through the worker's engine as fast as it goes;
    /// prints the segment changes a live run over the same events gives.
    Replay(replay::ReplayArgs),
    /// Build the state from history files and write it as a snapshot file.
    Backfill(replay::BackfillArgs),
    /// Run SQL over customer features: from history files (the batch
    /// definition), or from a running worker's live state.
    Sql(sql::SqlArgs),
    /// Erase customers (right to be forgotten): their state, memberships
    /// and past events, in every worker, for good.
    Forget(forget::ForgetArgs),
    /// A customer on a running worker: features, segments, latest changes
    /// with their reasons.
    Customer(lookup::CustomerArgs),
    /// A segment on a running worker: its population and a sample of members.
    Segment(lookup::SegmentArgs),
    /// Segment definitions: what a new file would change, and its rollout
    /// to the running workers.
    Segments {
        #[command(subcommand)]
        action: segments::SegmentsAction,
    },
    /// Fit the models (clusters, churn and value, RFM quintiles) on the
    /// population's features and publish them to the running workers.
    Train(train::TrainArgs),
    /// Manage the topics segstream uses.
    Topics {
        #[command(subcommand)]
        action: TopicsAction,
    },
}

#[derive(Debug, Subcommand)]
enum TopicsAction {
    /// Create every topic (inputs, outputs, dead letters) that does not exist yet.
    Create,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::load(cli.config.as_deref(), &cli.set) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("segstream: {e}");
            return ExitCode::from(2);
        }
    };
    segstream_telemetry::init_logging(&config.log);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("segstream: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli.command, config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("segstream: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(command: Command, config: Config) -> anyhow::Result<()> {
    match command {
        Command::Worker => {
            let shutdown = CancellationToken::new();
            tokio::spawn(stop_on_signal(shutdown.clone()));
            let summary = segstream_worker::run(config, shutdown).await?;
            tracing::info!(?summary, "worker stopped cleanly");
            Ok(())
        }
        Command::Generate(args) => generate::run(args, config).await,
        Command::Replay(args) => replay::run(args, config).await,
        Command::Backfill(args) => replay::backfill(args, config).await,
        Command::Sql(args) => sql::run(args, config).await,
        Command::Forget(args) => forget::run(args, config).await,
        Command::Segments { action } => segments::run(action, config).await,
        Command::Customer(args) => lookup::customer(args, config).await,
        Command::Segment(args) => lookup::segment(args, config).await,
        Command::Train(args) => {
            let shutdown = CancellationToken::new();
            tokio::spawn(stop_on_signal(shutdown.clone()));
            train::run(args, config, shutdown).await
        }
        Command::Watch(args) => {
            let shutdown = CancellationToken::new();
            tokio::spawn(stop_on_signal(shutdown.clone()));
            watch::run(args, config, shutdown).await
        }
        Command::Topics { action: TopicsAction::Create } => {
            let bootstrap = config.kafka.bootstrap_servers.clone();
            let statuses = segstream_kafka::create_topics(&config)
                .await
                .with_context(|| format!("creating topics on {bootstrap}"))?;
            for s in statuses {
                match s {
                    segstream_kafka::TopicStatus::Created(t) => println!("created {t}"),
                    segstream_kafka::TopicStatus::Existed(t) => println!("exists  {t}"),
                }
            }
            Ok(())
        }
    }
}

/// First SIGTERM or Ctrl-C: graceful stop (finish the batch, commit). A
/// second one: exit at once.
async fn stop_on_signal(shutdown: CancellationToken) {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGTERM");
            return;
        }
    };
    for n in 0.. {
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        if n > 0 {
            eprintln!("segstream: second signal, exiting now");
            std::process::exit(130);
        }
        tracing::info!("stop requested: finishing the current batch");
        shutdown.cancel();
    }
}
