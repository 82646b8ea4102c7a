//! The input's watermark: the largest event time at the end of the input
//! topics, over every partition (not only this worker's), so that quiet
//! partitions follow the same time whichever worker owns them and however
//! many workers there are. Per lane and partition, the last of the final
//! records that the worker would admit as an event counts (it decodes, is
//! keyed by its customer, is not from the future): `segstream replay` takes
//! the same from the end of its files.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use segstream_config::Config;
use segstream_events::{EventTime, Lane};
use segstream_kafka::{KafkaIoError, assigned_consumer_config};

use crate::admission::{Admission, Incoming, Placement};
use crate::error::WorkerError;

/// Records read back from the end of each partition.
const TAIL: i64 = 32;
/// How long one look at the ends may take.
const READ_WAIT: Duration = Duration::from_secs(10);

/// See the module documentation.
pub(crate) struct Probe {
    consumer: BaseConsumer,
    topics: [String; 2],
    partitions: i32,
    /// What admission would let in: the watermark counts only that.
    admission: Admission,
    /// The last answer and when it was read.
    last: Option<(Instant, Option<EventTime>)>,
    /// How long an answer is reused.
    reuse: Duration,
}

impl std::fmt::Debug for Probe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Probe").field("last", &self.last).finish_non_exhaustive()
    }
}

impl Probe {
    pub(crate) fn new(config: &Config, partitions: i32) -> Result<Self, WorkerError> {
        let consumer = assigned_consumer_config(config)?
            .create()
            .map_err(KafkaIoError::kafka("creating the watermark probe"))?;
        Ok(Self {
            consumer,
            topics: [config.topics.clickstream.clone(), config.topics.orders.clone()],
            partitions,
            admission: Admission::new(config)?,
            last: None,
            reuse: Duration::from_millis(config.time.idle_partition_ms),
        })
    }

    /// The input's watermark, read at most once per `time.idle_partition_ms`.
    pub(crate) fn target(&mut self, now: Instant) -> Result<Option<EventTime>, WorkerError> {
        if let Some((at, target)) = self.last
            && now.duration_since(at) < self.reuse
        {
            return Ok(target);
        }
        let mut target = None;
        for (lane, topic) in Lane::BOTH.into_iter().zip(self.topics.clone()) {
            for (_, tail) in self.read_tails(&topic)? {
                target = target.max(self.last_event_time(lane, &tail)?);
            }
        }
        self.last = Some((now, target));
        Ok(target)
    }

    /// The last few records of every partition of `topic`.
    fn read_tails(&self, topic: &str) -> Result<BTreeMap<i32, Vec<OwnedMessage>>, WorkerError> {
        let mut tpl = TopicPartitionList::new();
        let mut waiting = BTreeSet::new();
        for p in 0..self.partitions {
            let (low, high) = self
                .consumer
                .fetch_watermarks(topic, p, READ_WAIT)
                .map_err(KafkaIoError::kafka(format!("reading the end offsets of {topic}[{p}]")))?;
            if high > low {
                tpl.add_partition_offset(topic, p, Offset::Offset((high - TAIL).max(low)))
                    .map_err(KafkaIoError::kafka("building the probe's assignment"))?;
                waiting.insert(p);
            }
        }
        let mut tails: BTreeMap<i32, Vec<OwnedMessage>> = BTreeMap::new();
        if waiting.is_empty() {
            return Ok(tails);
        }
        self.consumer.assign(&tpl).map_err(KafkaIoError::kafka("assigning the probe"))?;
        let deadline = Instant::now() + READ_WAIT;
        while !waiting.is_empty() && Instant::now() < deadline {
            match self.consumer.poll(Duration::from_millis(100)) {
                Some(Ok(m)) => tails.entry(m.partition()).or_default().push(m.detach()),
                Some(Err(KafkaError::PartitionEOF(p))) => {
                    waiting.remove(&p);
                }
                Some(Err(e)) => tracing::warn!(topic, error = %e, "watermark probe (retrying)"),
                None => {}
            }
        }
        self.consumer.unassign().map_err(KafkaIoError::kafka("unassigning the probe"))?;
        if !waiting.is_empty() {
            tracing::warn!(topic, partitions = ?waiting, "watermark probe: no end of log within 10 s");
        }
        Ok(tails)
    }

    /// The event time of the last record in `tail` that would be admitted.
    fn last_event_time(
        &mut self,
        lane: Lane,
        tail: &[OwnedMessage],
    ) -> Result<Option<EventTime>, WorkerError> {
        for m in tail.iter().rev() {
            let record = Incoming {
                key: m.key(),
                payload: m.payload(),
                offset: m.offset(),
                timestamp: m.timestamp().to_millis(),
            };
            let placement = Placement { partition: m.partition(), partitions: self.partitions };
            if let Some(time) = self.admission.admissible(lane, &record, placement)? {
                return Ok(Some(time));
            }
        }
        Ok(None)
    }
}
