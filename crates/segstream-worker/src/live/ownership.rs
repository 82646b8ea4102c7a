//! What a worker knows about each partition pair it owns, what it commits
//! with the offsets (the offset metadata), and reading a partition's
//! committed decisions back.
//!
//! Every transaction commits, for every owned lane, the offset and the
//! metadata `segstream/1;token=T;decisions=N`: `T` names the transaction
//! (unique per worker incarnation and commit), `N` is how many decision
//! records of the partition are committed on the decisions topic. A worker
//! given a partition compares the committed token with the last one it
//! committed itself: equal means nobody else committed since, so the state
//! it kept is exactly the committed state; otherwise it rebuilds from the
//! start of the logs, repeating the `N` committed decision records.

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use segstream_config::Config;
use segstream_events::{Decision, DecisionRecord, Positions};
use segstream_kafka::{KafkaIoError, assigned_consumer_config, fetch_watermarks_patiently};

use crate::error::WorkerError;

/// A partition pair this worker owns (or keeps for a moment after a
/// revocation), as of its last commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Owned {
    /// Token of the last transaction that committed its offsets.
    pub(crate) token: Option<String>,
    /// Decision records committed for it.
    pub(crate) decisions: i64,
    /// Offsets committed (the state covers everything below them).
    pub(crate) committed: Option<Positions>,
}

const PREFIX: &str = "segstream/1";

/// The metadata committed with a partition's offsets.
pub(crate) fn metadata(token: &str, decisions: i64) -> String {
    format!("{PREFIX};token={token};decisions={decisions}")
}

/// Reads [`metadata`]; `None` for anything else (offsets committed by an
/// older version or another tool).
pub(crate) fn parse_metadata(text: &str) -> Option<(String, i64)> {
    let mut parts = text.split(';');
    if parts.next() != Some(PREFIX) {
        return None;
    }
    let (mut token, mut decisions) = (None, None);
    for part in parts {
        match part.split_once('=') {
            Some(("token", t)) => token = Some(t.to_owned()),
            Some(("decisions", n)) => decisions = n.parse().ok(),
            _ => {}
        }
    }
    Some((token?, decisions?))
}

/// Names transactions: unique per worker incarnation and commit.
#[derive(Debug)]
pub(crate) struct Tokens {
    incarnation: String,
    next: u64,
}

impl Tokens {
    pub(crate) fn new(instance_id: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        Self { incarnation: format!("{instance_id}:{:x}:{nanos:x}", std::process::id()), next: 0 }
    }

    /// The next token.
    pub(crate) fn next(&mut self) -> String {
        self.next += 1;
        format!("{}:{}", self.incarnation, self.next)
    }
}

/// How long reading a partition's decisions may wait for records that the
/// committed offsets say exist (their transaction markers may still be on
/// the way).
const DECISIONS_WAIT: Duration = Duration::from_secs(60);

/// Reads committed decision records back (a consumer assigned to the
/// decisions topic, `read_committed`).
pub(crate) struct DecisionLog {
    consumer: BaseConsumer,
    topic: String,
    group: String,
}

impl std::fmt::Debug for DecisionLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecisionLog").field("topic", &self.topic).finish_non_exhaustive()
    }
}

impl DecisionLog {
    pub(crate) fn new(config: &Config) -> Result<Self, WorkerError> {
        let consumer = assigned_consumer_config(config)?
            .create()
            .map_err(KafkaIoError::kafka("creating the decisions reader"))?;
        Ok(Self { consumer, topic: config.topics.decisions.clone(), group: config.kafka.group_id.clone() })
    }

    /// The end of the decisions topic's partition: every decision record
    /// committed so far lies before it (a checkpoint keeps it).
    pub(crate) fn end_offset(&self, partition: i32) -> Result<i64, WorkerError> {
        let (_, high) = fetch_watermarks_patiently(
            self.consumer.client(),
            &self.topic,
            partition,
            Duration::from_secs(10),
        )
        .map_err(KafkaIoError::kafka(format!("reading the end of {}[{partition}]", self.topic)))?;
        Ok(high)
    }

    /// The decisions of records `from..count` of `partition` (this
    /// group's), in order (the records before `from` are in a checkpoint).
    /// `at`: where on the decisions topic record `from` is known to lie at
    /// or after (a checkpoint's `decisions_offset`); `None`: the start, with
    /// records counted from 0.
    pub(crate) fn read(
        &self,
        partition: i32,
        from: i64,
        count: i64,
        at: Option<i64>,
    ) -> Result<Vec<Decision>, WorkerError> {
        if count <= from {
            return Ok(Vec::new());
        }
        let (start, mut seen) = match at {
            Some(offset) => (Offset::Offset(offset), from),
            None => (Offset::Beginning, 0_i64),
        };
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&self.topic, partition, start)
            .map_err(KafkaIoError::kafka("assigning the decisions topic"))?;
        self.consumer.assign(&tpl).map_err(KafkaIoError::kafka("assigning the decisions topic"))?;
        let started = Instant::now();
        let mut decisions = Vec::new();
        let missing = |seen: i64| WorkerError::DecisionLog {
            partition,
            problem: format!(
                "the committed offsets count {count} decision records, {seen} are readable on {} after {} s",
                self.topic,
                DECISIONS_WAIT.as_secs()
            ),
        };
        while seen < count {
            if started.elapsed() > DECISIONS_WAIT {
                return Err(missing(seen));
            }
            match self.consumer.poll(Duration::from_millis(200)) {
                Some(Ok(m)) => {
                    let Some(payload) = m.payload() else { continue };
                    let record =
                        DecisionRecord::from_avro(payload).map_err(|e| WorkerError::DecisionLog {
                            partition,
                            problem: format!("record at offset {} does not decode: {e}", m.offset()),
                        })?;
                    if record.group_id != self.group || record.partition != partition {
                        continue;
                    }
                    // `at` is a lower bound: records the checkpoint already
                    // covers may still follow it.
                    if record.seq < seen && at.is_some() {
                        continue;
                    }
                    if record.seq != seen {
                        return Err(WorkerError::DecisionLog {
                            partition,
                            problem: format!("record {} found where {seen} was expected", record.seq),
                        });
                    }
                    seen += 1;
                    if record.seq >= from {
                        decisions.extend(record.decisions);
                    }
                }
                Some(Err(KafkaError::PartitionEOF(_))) | None => {}
                Some(Err(e)) => {
                    // Transient (the broker is away): librdkafka reconnects by itself.
                    tracing::warn!(error = %e, "reading the decisions topic (retrying)");
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
        }
        self.consumer.unassign().map_err(KafkaIoError::kafka("unassigning the decisions topic"))?;
        Ok(decisions)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_metadata_reads_back_and_other_metadata_is_not_ours() {
        let text = metadata("w-1:2a:17:3", 12);
        assert_eq!(parse_metadata(&text), Some(("w-1:2a:17:3".to_owned(), 12)));
        assert_eq!(parse_metadata(""), None);
        assert_eq!(parse_metadata("segstream/1;token=x"), None, "both fields are needed");
        assert_eq!(parse_metadata("some other tool"), None);
    }

    #[test]
    fn tokens_differ_per_commit_and_per_incarnation() {
        let (mut a, mut b) = (Tokens::new("w"), Tokens::new("w"));
        let (a1, a2, b1) = (a.next(), a.next(), b.next());
        assert_ne!(a1, a2);
        assert_ne!(a1, b1);
    }
}
