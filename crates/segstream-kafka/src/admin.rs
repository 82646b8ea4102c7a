use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{Client, ClientContext, DefaultClientContext};
use rdkafka::error::{KafkaError, KafkaResult};
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

/// The first offset still in a partition's log and the offset after its
/// last record, asked again (within `timeout` in all) while the cluster
/// gives the answers of a broker that is starting or moving leadership:
/// right after a restart a broker can say for seconds that a partition it
/// holds is unknown. Any other error, or one past `timeout`, is returned.
/// Call it from a blocking context.
pub fn fetch_watermarks_patiently<C: ClientContext>(
    client: &Client<C>,
    topic: &str,
    partition: i32,
    timeout: Duration,
) -> KafkaResult<(i64, i64)> {
    patiently(timeout, |left| client.fetch_watermarks(topic, partition, left))
}

/// Asks `ask` (given the time left) again while it fails with an error
/// that [`settles_by_itself`], until `timeout` has passed in all.
fn patiently<T>(timeout: Duration, mut ask: impl FnMut(Duration) -> KafkaResult<T>) -> KafkaResult<T> {
    let start = Instant::now();
    loop {
        let left = timeout.saturating_sub(start.elapsed()).max(Duration::from_secs(1));
        match ask(left) {
            Err(e) if start.elapsed() < timeout && settles_by_itself(&e) => {
                tracing::debug!(error = %e, "the cluster is not answering yet; asking again");
                std::thread::sleep(Duration::from_millis(200));
            }
            answer => return answer,
        }
    }
}

/// Errors of a cluster that is (re)starting or electing leaders.
fn settles_by_itself(e: &KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::UnknownPartition
                | RDKafkaErrorCode::UnknownTopicOrPartition
                | RDKafkaErrorCode::LeaderNotAvailable
                | RDKafkaErrorCode::NotLeaderForPartition
                | RDKafkaErrorCode::BrokerTransportFailure
                | RDKafkaErrorCode::AllBrokersDown
                | RDKafkaErrorCode::OperationTimedOut
        )
    )
}

/// Creates every topic segstream reads or writes, with `topics.partitions`
/// partitions: inputs refusing producer timestamps past `time.max_future_ms`
/// ahead of the broker's clock, outputs plain, `customer-segments` compacted,
/// the dead letters kept `topics.dead_letter_retention_ms`.
/// Existing topics are left as they are.
pub async fn create_topics(config: &Config) -> Result<Vec<TopicStatus>, KafkaIoError> {
    let admin: AdminClient<DefaultClientContext> =
        producer_config(config, None)?.create().map_err(KafkaIoError::kafka("creating the admin client"))?;
    let t = &config.topics;
    let replication = || TopicReplication::Fixed(t.replication_factor);
    // The broker refuses a producer timestamp further ahead of its clock
    // than an event time may be ahead of it (time.max_future_ms): an event
    // dated 2099 cannot pass the worker's future check by carrying a 2099
    // timestamp, and the refusal is the broker's, made once at append.
    let future = config.time.max_future_ms.to_string();
    let mut topics: Vec<NewTopic<'_>> = [&t.clickstream, &t.orders]
        .iter()
        .map(|name| {
            NewTopic::new(name.as_str(), t.partitions, replication())
                .set("message.timestamp.after.max.ms", &future)
        })
        .collect();
    topics.push(NewTopic::new(t.segment_changes.as_str(), t.partitions, replication()));
    // Dead letters hold personal data: kept only as long as configured.
    let dead_letter_retention = t.dead_letter_retention_ms.to_string();
    topics.push(
        NewTopic::new(t.dead_letter.as_str(), t.partitions, replication())
            .set("retention.ms", &dead_letter_retention),
    );
    topics.push(
        NewTopic::new(t.customer_segments.as_str(), t.partitions, replication())
            .set("cleanup.policy", "compact")
            .set("min.cleanable.dirty.ratio", "0.1"),
    );
    // Erasures must outlive every record of the customers they name: compacted, kept for good.
    topics.push(
        NewTopic::new(t.erasures.as_str(), 1, replication())
            .set("cleanup.policy", "compact")
            .set("retention.ms", "-1"),
    );
    // Rolled-out segment definitions: the latest per group, kept for good.
    topics.push(
        NewTopic::new(t.definitions.as_str(), 1, replication())
            .set("cleanup.policy", "compact")
            .set("retention.ms", "-1"),
    );
    // Published models: the latest per group, kept for good.
    topics.push(
        NewTopic::new(t.models.as_str(), 1, replication())
            .set("cleanup.policy", "compact")
            .set("retention.ms", "-1"),
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

/// The partition count of a topic, asked again for up to 30 s while the
/// cluster gives the answers of a broker that is starting or a connection
/// that broke (a worker stopped for a while finds its connections closed).
/// Call it from a blocking context.
pub fn partition_count<C: ClientContext>(client: &Client<C>, topic: &str) -> Result<usize, KafkaIoError> {
    let md = patiently(Duration::from_secs(30), |left| {
        client.fetch_metadata(Some(topic), left.min(Duration::from_secs(10)))
    })
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
