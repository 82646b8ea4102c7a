use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{Client, ClientContext, DefaultClientContext};
use rdkafka::types::RDKafkaErrorCode;
use segstream_config::Config;

use crate::client::producer_config;
use crate::error::KafkaIoError;

/// Outcome of creating one topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopicStatus {
    /// Created now.
    Created(String),
    /// Was already there (left unchanged).
    Existed(String),
}

/// Blocks until the cluster answers a metadata request, or `timeout` passes.
/// Call it from a blocking context.
pub fn wait_for_broker<C: ClientContext>(
    client: &Client<C>,
    bootstrap: &str,
    timeout: Duration,
) -> Result<(), KafkaIoError> {
    let start = Instant::now();
    loop {
        match client.fetch_metadata(None, Duration::from_secs(2)) {
            Ok(_) => return Ok(()),
            Err(source) if start.elapsed() >= timeout => {
                return Err(KafkaIoError::Unreachable {
                    bootstrap: bootstrap.to_owned(),
                    seconds: timeout.as_secs(),
                    source,
                });
            }
            Err(e) => {
                tracing::debug!(error = %e, "broker not answering yet");
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
}

/// Creates every topic segstream reads or writes, with `topics.partitions`
/// partitions: inputs and outputs plain, `customer-segments` compacted.
/// Existing topics are left as they are.
pub async fn create_topics(config: &Config) -> Result<Vec<TopicStatus>, KafkaIoError> {
    let admin: AdminClient<DefaultClientContext> =
        producer_config(config, None)?.create().map_err(KafkaIoError::kafka("creating the admin client"))?;
    let t = &config.topics;
    let replication = || TopicReplication::Fixed(t.replication_factor);
    let plain = [&t.clickstream, &t.orders, &t.segment_changes, &t.dead_letter];
    let mut topics: Vec<NewTopic<'_>> =
        plain.iter().map(|name| NewTopic::new(name.as_str(), t.partitions, replication())).collect();
    topics.push(
        NewTopic::new(t.customer_segments.as_str(), t.partitions, replication())
            .set("cleanup.policy", "compact")
            .set("min.cleanable.dirty.ratio", "0.1"),
    );
    // A rebuild reads a partition's decisions from the start: kept for good.
    topics.push(NewTopic::new(t.decisions.as_str(), t.partitions, replication()).set("retention.ms", "-1"));
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results =
        admin.create_topics(topics.iter(), &options).await.map_err(KafkaIoError::kafka("creating topics"))?;
    results
        .into_iter()
        .map(|r| match r {
            Ok(name) => Ok(TopicStatus::Created(name)),
            Err((name, RDKafkaErrorCode::TopicAlreadyExists)) => Ok(TopicStatus::Existed(name)),
            Err((name, code)) => Err(KafkaIoError::Kafka {
                context: format!("creating topic {name}"),
                source: rdkafka::error::KafkaError::AdminOp(code),
            }),
        })
        .collect()
}

/// The partition count of a topic. Call it from a blocking context.
pub fn partition_count<C: ClientContext>(client: &Client<C>, topic: &str) -> Result<usize, KafkaIoError> {
    let md = client
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .map_err(KafkaIoError::kafka(format!("reading metadata of {topic}")))?;
    match md.topics().first() {
        Some(t) if t.error().is_none() && !t.partitions().is_empty() => Ok(t.partitions().len()),
        _ => Err(KafkaIoError::MissingTopic { topic: topic.to_owned() }),
    }
}

/// Checks that the two input topics and the decisions topic exist and have
/// the same partition count; returns it. Call it from a blocking context.
pub fn check_copartitioned<C: ClientContext>(
    client: &Client<C>,
    a: &str,
    b: &str,
    decisions: &str,
) -> Result<usize, KafkaIoError> {
    let na = partition_count(client, a)?;
    for other in [b, decisions] {
        let nb = partition_count(client, other)?;
        if na != nb {
            return Err(KafkaIoError::NotCopartitioned {
                a: a.to_owned(),
                a_partitions: na,
                b: other.to_owned(),
                b_partitions: nb,
            });
        }
    }
    Ok(na)
}
