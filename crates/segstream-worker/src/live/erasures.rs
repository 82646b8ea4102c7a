//! The erasures topic (right to be forgotten): read whole before the
//! worker takes any partition, then followed between batches. Every worker
//! reads all of it; each writes the tombstones of the customers of the
//! partitions it owns.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use segstream_config::Config;
use segstream_events::{CustomerId, ErasureRequest, EventTime};
use segstream_kafka::{
    KafkaIoError, assigned_consumer_config, fetch_watermarks_patiently, partition_count, wait_for_broker,
};

use crate::error::WorkerError;

/// An erased customer and the time of their erasure.
type Erasure = (CustomerId, EventTime);

/// A record read: its partition and offset, and the erasure it holds
/// (`None` for a record that is not one).
type Read = (i32, i64, Option<Erasure>);

/// How long the start waits for the whole topic.
const LOAD_WAIT: Duration = Duration::from_secs(60);

/// Erasure requests seen, and which tombstones this run has written.
pub(crate) struct Erasures {
    consumer: BaseConsumer,
    topic: String,
    /// Every erasure: customer and time (the latest request wins).
    known: BTreeMap<CustomerId, EventTime>,
    /// Customers whose tombstone went into a transaction of this run.
    written: BTreeSet<CustomerId>,
    /// The partitions for which every tombstone is written, while nothing
    /// new came: the next look costs nothing.
    settled: Option<Vec<i32>>,
}

impl std::fmt::Debug for Erasures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Erasures")
            .field("topic", &self.topic)
            .field("known", &self.known.len())
            .finish_non_exhaustive()
    }
}

impl Erasures {
    /// Reads the whole erasures topic; returns the reader and every erasure.
    pub(crate) fn load(config: &Config) -> Result<(Self, Vec<Erasure>), WorkerError> {
        let topic = config.topics.erasures.clone();
        let consumer: BaseConsumer = assigned_consumer_config(config)?
            .create()
            .map_err(KafkaIoError::kafka("creating the erasures reader"))?;
        // A new client on a loaded broker may not answer metadata at once.
        wait_for_broker(consumer.client(), &config.kafka.bootstrap_servers, LOAD_WAIT)?;
        let partitions = i32::try_from(partition_count(consumer.client(), &topic)?).unwrap_or(i32::MAX);
        let mut tpl = TopicPartitionList::new();
        let mut ends = BTreeMap::new();
        for p in 0..partitions {
            let (_, high) = fetch_watermarks_patiently(consumer.client(), &topic, p, Duration::from_secs(10))
                .map_err(KafkaIoError::kafka(format!("reading the end offsets of {topic}")))?;
            ends.insert(p, high);
            tpl.add_partition_offset(&topic, p, Offset::Beginning)
                .map_err(KafkaIoError::kafka("building the erasures reader's assignment"))?;
        }
        consumer.assign(&tpl).map_err(KafkaIoError::kafka("assigning the erasures reader"))?;
        let mut erasures =
            Self { consumer, topic, known: BTreeMap::new(), written: BTreeSet::new(), settled: None };
        let mut at: BTreeMap<i32, i64> = ends.keys().map(|p| (*p, 0)).collect();
        let deadline = Instant::now() + LOAD_WAIT;
        let mut all = Vec::new();
        while ends.iter().any(|(p, end)| at.get(p).is_some_and(|o| o < end)) {
            if Instant::now() > deadline {
                return Err(WorkerError::Consumer(format!(
                    "the erasures topic {} was not read to its end within {} s",
                    erasures.topic,
                    LOAD_WAIT.as_secs()
                )));
            }
            if let Some((partition, offset, erasure)) = erasures.next(Duration::from_millis(200)) {
                at.insert(partition, offset + 1);
                all.extend(erasure);
            }
        }
        tracing::info!(topic = %erasures.topic, erasures = erasures.known.len(), "erasures loaded");
        Ok((erasures, all))
    }

    /// Erasures requested since the last look (does not wait).
    pub(crate) fn poll_new(&mut self) -> Vec<Erasure> {
        let mut new = Vec::new();
        while let Some((_, _, erasure)) = self.next(Duration::ZERO) {
            new.extend(erasure);
        }
        new
    }

    /// The next record: its partition, offset and erasure (`None` for a
    /// record that is not one, which is logged and skipped).
    fn next(&mut self, wait: Duration) -> Option<Read> {
        match self.consumer.poll(wait) {
            Some(Ok(m)) => {
                let request = m.payload().and_then(ErasureRequest::from_json);
                let customer = m.key().map(|k| CustomerId::new(String::from_utf8_lossy(k)));
                let erasure = match (customer, request) {
                    (Some(c), Some(r)) if !c.as_str().is_empty() => {
                        self.settled = None;
                        let at = self.known.entry(c.clone()).or_insert(r.requested_at);
                        *at = (*at).max(r.requested_at);
                        Some((c, *at))
                    }
                    _ => {
                        tracing::warn!(topic = %self.topic, offset = m.offset(), "a record of the erasures topic is not an erasure request: skipped");
                        None
                    }
                };
                Some((m.partition(), m.offset(), erasure))
            }
            Some(Err(KafkaError::PartitionEOF(_))) | None => None,
            Some(Err(e)) => {
                tracing::warn!(topic = %self.topic, error = %e, "erasures reader (librdkafka retries by itself)");
                None
            }
        }
    }

    /// Erased customers of the partitions `eligible` (of `partitions`)
    /// whose tombstone this run has not written yet.
    pub(crate) fn unwritten(&mut self, partitions: i32, eligible: Vec<i32>) -> Vec<CustomerId> {
        if self.settled.as_ref() == Some(&eligible) {
            return Vec::new();
        }
        let due: Vec<CustomerId> = self
            .known
            .keys()
            .filter(|c| !self.written.contains(*c))
            .filter(|c| eligible.contains(&segstream_kafka::partition_for(c.as_str().as_bytes(), partitions)))
            .cloned()
            .collect();
        if due.is_empty() {
            self.settled = Some(eligible);
        }
        due
    }

    /// The tombstone of `customer` is in the open transaction.
    pub(crate) fn written(&mut self, customer: CustomerId) {
        self.written.insert(customer);
    }

    /// The open transaction was aborted: its tombstones are written again.
    pub(crate) fn forget_written(&mut self) {
        self.written.clear();
        self.settled = None;
    }
}
