//! `segstream segments`: what new segment definitions would change
//! (`diff`), and their rollout to a running group (`rollout`).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use segstream_config::Config;
use segstream_events::DefinitionsRollout;
use segstream_segments::SegmentRules;
use segstream_worker::{DiffSource, diff_definitions};

#[derive(Debug, Subcommand)]
pub(crate) enum SegmentsAction {
    /// Check a definitions file and show what rolling it out would change:
    /// per segment, how many customers enter and leave, with a sample,
    /// against the group's latest checkpoints (or a snapshot). Nothing changes.
    Diff(DiffArgs),
    /// Roll a definitions file out to the running group: every worker puts
    /// it in force before its next batch and evaluates every customer once
    /// under it (changes with trigger definition_change). Checked first;
    /// its `version` must be above the one in force.
    Rollout(RolloutArgs),
}

#[derive(Debug, Args)]
pub(crate) struct DiffArgs {
    /// The new definitions file.
    file: PathBuf,
    /// Compare against this snapshot (`segstream backfill`) instead of the
    /// group's checkpoints.
    #[arg(long)]
    snapshot: Option<PathBuf>,
    /// Customers named per segment and direction.
    #[arg(long, default_value_t = 5)]
    sample: usize,
}

#[derive(Debug, Args)]
pub(crate) struct RolloutArgs {
    /// The new definitions file.
    file: PathBuf,
}

/// The file's text and the name errors give it.
fn read(file: &PathBuf) -> anyhow::Result<(String, String)> {
    let origin = file.display().to_string();
    let text = std::fs::read_to_string(file).with_context(|| format!("reading the definitions {origin}"))?;
    Ok((text, origin))
}

pub(crate) async fn run(action: SegmentsAction, config: Config) -> anyhow::Result<()> {
    match action {
        SegmentsAction::Diff(args) => diff(args, config).await,
        SegmentsAction::Rollout(args) => rollout(args, config).await,
    }
}

async fn diff(args: DiffArgs, config: Config) -> anyhow::Result<()> {
    let (text, origin) = read(&args.file)?;
    let source = args.snapshot.as_deref().map_or(DiffSource::Checkpoints, DiffSource::Snapshot);
    let diff = diff_definitions(&config, &text, &origin, source, args.sample).await?;
    let versions: Vec<String> = diff.from_versions.iter().map(i32::to_string).collect();
    println!(
        "definitions version {} → {}: {} customers evaluated as of {}",
        if versions.is_empty() { "-".to_owned() } else { versions.join(", ") },
        diff.to_version,
        diff.customers,
        diff.as_of.map_or("-".to_owned(), |t| t.to_string()),
    );
    if diff.segments.is_empty() {
        println!("no customer would enter or leave a segment");
    }
    for ((kind, segment), moves) in &diff.segments {
        let names = |ids: &[segstream_events::CustomerId]| {
            ids.iter().map(|c| c.as_str().to_owned()).collect::<Vec<_>>().join(", ")
        };
        println!("{kind:<10} {segment:<28} +{:<7} -{:<7}", moves.entered, moves.exited);
        if !moves.entering.is_empty() {
            println!("{:<40} entering: {}", "", names(&moves.entering));
        }
        if !moves.leaving.is_empty() {
            println!("{:<40} leaving: {}", "", names(&moves.leaving));
        }
    }
    Ok(())
}

async fn rollout(args: RolloutArgs, config: Config) -> anyhow::Result<()> {
    let (text, origin) = read(&args.file)?;
    let rules = SegmentRules::from_config(&config)?.with_definitions(&text, &origin, &config.features)?;
    let rollout = DefinitionsRollout { version: rules.definitions.version, definitions: text };
    let (topic, group) = (config.topics.definitions.clone(), config.kafka.group_id.clone());
    let producer: ThreadedProducer<DefaultProducerContext> =
        segstream_kafka::producer_config(&config, None)?.create().context("creating the producer")?;
    // Blocking send and flush: off the async runtime.
    tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        let value = rollout.to_json();
        producer
            .send(BaseRecord::to(&topic).key(group.as_str()).payload(value.as_slice()))
            .map_err(|(e, _)| e)
            .with_context(|| format!("sending the definitions to {topic}"))?;
        producer.flush(Duration::from_secs(30)).with_context(|| format!("writing the definitions to {topic}"))?;
        eprintln!(
            "definitions version {} rolled out to group {group} on {topic}: each worker puts them in force before its next batch (changes carry trigger definition_change; a version not above the one in force is ignored)",
            rollout.version
        );
        Ok(())
    })
    .await?
}
