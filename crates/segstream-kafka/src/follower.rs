//! A reader of a small internal topic that every worker reads whole (the
//! erasures, the rolled-out segment definitions, the models): read to its
//! end before the worker takes any partition, then followed between
//! batches. Blocking: call it from a blocking context.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::admin::{fetch_watermarks_patiently, partition_count, wait_for_broker};
use crate::client::assigned_consumer_config;
use crate::error::KafkaIoError;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use segstream_config::Config;

/// How long the start waits for the whole topic.
const LOAD_WAIT: Duration = Duration::from_secs(60);

/// One record: its offset, key and value.
#[derive(Debug)]
pub struct Read {
    /// Offset in its partition.
    pub offset: i64,
    /// Key, if any.
    pub key: Option<Vec<u8>>,
    /// Value; `None` for a tombstone.
    pub value: Option<Vec<u8>>,
}

/// See the module documentation.
pub struct Follower {
    consumer: BaseConsumer,
    topic: String,
}

impl std::fmt::Debug for Follower {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Follower").field("topic", &self.topic).finish_non_exhaustive()
    }
}

impl Follower {
    /// Reads `topic` whole, every partition from its start; returns the
    /// reader and every record, in offset order per partition.
    pub fn load(config: &Config, topic: &str) -> Result<(Self, Vec<Read>), KafkaIoError> {
        let consumer: BaseConsumer = assigned_consumer_config(config)?
            .create()
            .map_err(KafkaIoError::kafka(format!("creating the reader of {topic}")))?;
        // A new client on a loaded broker may not answer metadata at once.
        wait_for_broker(consumer.client(), &config.kafka.bootstrap_servers, LOAD_WAIT)?;
        let partitions = i32::try_from(partition_count(consumer.client(), topic)?).unwrap_or(i32::MAX);
        let mut tpl = TopicPartitionList::new();
        let mut ends = BTreeMap::new();
        for p in 0..partitions {
            let (_, high) = fetch_watermarks_patiently(consumer.client(), topic, p, Duration::from_secs(10))
                .map_err(KafkaIoError::kafka(format!("reading the end offsets of {topic}")))?;
            ends.insert(p, high);
            tpl.add_partition_offset(topic, p, Offset::Beginning)
                .map_err(KafkaIoError::kafka(format!("building the assignment of the reader of {topic}")))?;
        }
        consumer.assign(&tpl).map_err(KafkaIoError::kafka(format!("assigning the reader of {topic}")))?;
        let follower = Self { consumer, topic: topic.to_owned() };
        let mut at: BTreeMap<i32, i64> = ends.keys().map(|p| (*p, 0)).collect();
        let deadline = Instant::now() + LOAD_WAIT;
        let mut all = Vec::new();
        while ends.iter().any(|(p, end)| at.get(p).is_some_and(|o| o < end)) {
            if Instant::now() > deadline {
                return Err(KafkaIoError::NotReadToEnd {
                    topic: topic.to_owned(),
                    seconds: LOAD_WAIT.as_secs(),
                });
            }
            if let Some((partition, read)) = follower.next(Duration::from_millis(200)) {
                at.insert(partition, read.offset + 1);
                all.push(read);
            }
        }
        Ok((follower, all))
    }

    /// Records that came since the last look (does not wait).
    pub fn poll_new(&self) -> Vec<Read> {
        std::iter::from_fn(|| self.next(Duration::ZERO)).map(|(_, read)| read).collect()
    }

    /// The topic's name.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    fn next(&self, wait: Duration) -> Option<(i32, Read)> {
        match self.consumer.poll(wait) {
            Some(Ok(m)) => Some((
                m.partition(),
                Read {
                    offset: m.offset(),
                    key: m.key().map(<[u8]>::to_vec),
                    value: m.payload().map(<[u8]>::to_vec),
                },
            )),
            Some(Err(KafkaError::PartitionEOF(_))) | None => None,
            Some(Err(e)) => {
                tracing::warn!(topic = %self.topic, error = %e, "reader of an internal topic (librdkafka retries by itself)");
                None
            }
        }
    }
}
