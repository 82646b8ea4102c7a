//! `segstream watch`: the segment changes, one readable line per transition.

use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use segstream_config::Config;
use segstream_events::{ChangeType, SegmentChange, SegmentKind};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Args)]
pub(crate) struct WatchArgs {
    /// Start at the end of the topic instead of its beginning.
    #[arg(long)]
    from_end: bool,
    /// Print every record (entered and exited) as JSON instead of one line per transition.
    #[arg(long)]
    json: bool,
    /// Stop after this many records.
    #[arg(long)]
    max: Option<u64>,
    /// Stop after this many seconds without a record.
    #[arg(long)]
    idle_exit_secs: Option<u64>,
    /// Only segments of this kind: lifecycle, rfm, behaviour, cluster or
    /// custom (repeatable; default: all).
    #[arg(long, value_parser = parse_kind)]
    kind: Vec<SegmentKind>,
}

fn parse_kind(text: &str) -> Result<SegmentKind, String> {
    SegmentKind::parse(text).ok_or_else(|| {
        let known: Vec<&str> = SegmentKind::ALL.iter().map(|k| k.as_str()).collect();
        format!("unknown kind {text:?}: use one of {}", known.join(", "))
    })
}

pub(crate) async fn run(args: WatchArgs, config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    tokio::task::spawn_blocking(move || watch(&args, &config, &shutdown)).await.context("watch thread")?
}

fn watch(args: &WatchArgs, config: &Config, shutdown: &CancellationToken) -> anyhow::Result<()> {
    let topic = &config.topics.segment_changes;
    let group = format!("segstream-watch-{}", std::process::id());
    let consumer: BaseConsumer =
        segstream_kafka::reader_config(config, &group)?.create().context("creating the consumer")?;
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .with_context(|| format!("reading metadata of {topic}"))?;
    let partitions = md.topics().first().map(|t| t.partitions().len()).unwrap_or(0);
    anyhow::ensure!(partitions > 0, "topic {topic} does not exist: run `segstream topics create`");
    let mut tpl = TopicPartitionList::new();
    let start = if args.from_end { Offset::End } else { Offset::Beginning };
    for p in 0..partitions {
        tpl.add_partition_offset(topic, i32::try_from(p)?, start)?;
    }
    consumer.assign(&tpl)?;
    let mut seen = 0u64;
    let mut last = Instant::now();
    while !shutdown.is_cancelled() {
        if args.max.is_some_and(|m| seen >= m)
            || args.idle_exit_secs.is_some_and(|s| last.elapsed() >= Duration::from_secs(s))
        {
            break;
        }
        let Some(msg) = consumer.poll(Duration::from_millis(200)) else { continue };
        let msg = msg.context("reading segment changes")?;
        last = Instant::now();
        seen += 1;
        let change = match msg.payload().map(SegmentChange::from_avro) {
            Some(Ok(c)) => c,
            Some(Err(e)) => {
                eprintln!("skipping undecodable record at offset {}: {e}", msg.offset());
                continue;
            }
            None => continue,
        };
        if !args.kind.is_empty() && !args.kind.contains(&change.kind) {
            continue;
        }
        if args.json {
            println!("{}", serde_json::to_string(&change)?);
        } else if change.change == ChangeType::Entered {
            println!("{}", one_line(&change));
        } else if change.kind != SegmentKind::Lifecycle {
            // A lifecycle exit comes with the entry that follows it; other
            // segments are left on their own.
            println!("{}", one_line(&change));
        }
    }
    Ok(())
}

/// `2024-03-05 14:02  cust-000042  new → active  (timer) 30 days since first order`
fn one_line(c: &SegmentChange) -> String {
    let when = chrono::DateTime::from_timestamp_millis(c.cause_event_time.millis())
        .map(|t| t.format("%Y-%m-%d %H:%M").to_string())
        .unwrap_or_default();
    let (from, to) = match c.change {
        ChangeType::Entered => (c.previous_segment.as_deref().unwrap_or("·"), c.segment.as_str()),
        ChangeType::Exited => (c.segment.as_str(), "·"),
    };
    format!(
        "{when}  {:<12} {:>14} → {:<14} {:<6} {}",
        c.customer_id.as_str(),
        from,
        to,
        format!("({})", c.trigger),
        c.reason
    )
}
