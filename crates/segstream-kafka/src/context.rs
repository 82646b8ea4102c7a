use std::sync::Mutex;
use std::time::Duration;

use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::statistics::Statistics;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaRespErr;
use segstream_telemetry::Metrics;

/// A rebalance, as the pipeline must act on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Assignment {
    /// Partitions now ours: `(topic, partition, committed offset)`. Reading
    /// starts at the beginning; outputs are suppressed below the committed
    /// offset, so the state is rebuilt exactly up to what was committed.
    Assigned(Vec<(String, i32, Option<i64>)>),
    /// Partitions taken away: their customers' state must be dropped.
    Revoked(Vec<(String, i32)>),
    /// The assignment could not be completed safely; the pipeline must stop.
    Failed(String),
}

/// Consumer context of the worker.
///
/// On assignment it reads the group's committed offsets and starts every
/// partition from the beginning instead, so the worker can replay history
/// into its (in-memory) state with outputs suppressed up to the committed
/// offset. It queues each rebalance for the pipeline, which drains the queue
/// after every poll. It also turns librdkafka statistics into lag gauges.
#[derive(Debug)]
pub struct RecoveringContext {
    metrics: Metrics,
    pending: Mutex<Vec<Assignment>>,
}

impl RecoveringContext {
    /// A context reporting to `metrics`.
    pub fn new(metrics: Metrics) -> Self {
        Self { metrics, pending: Mutex::new(Vec::new()) }
    }

    /// Rebalances seen since the last call, in order.
    pub fn take_assignments(&self) -> Vec<Assignment> {
        self.pending.lock().map(|mut p| std::mem::take(&mut *p)).unwrap_or_default()
    }

    fn push(&self, a: Assignment) {
        if let Ok(mut p) = self.pending.lock() {
            p.push(a);
        }
    }

    fn assign(
        &self,
        consumer: &BaseConsumer<Self>,
        tpl: &mut TopicPartitionList,
    ) -> Result<Assignment, String> {
        let committed = consumer
            .committed_offsets(tpl.clone(), Duration::from_secs(30))
            .map_err(|e| format!("reading committed offsets: {e}"))?;
        let mut assigned = Vec::new();
        for elem in committed.elements() {
            let offset = match elem.offset() {
                Offset::Offset(o) => Some(o),
                _ => None,
            };
            assigned.push((elem.topic().to_owned(), elem.partition(), offset));
            tpl.set_partition_offset(elem.topic(), elem.partition(), Offset::Beginning).map_err(|e| {
                format!("seeking {}[{}] to the beginning: {e}", elem.topic(), elem.partition())
            })?;
        }
        consumer.assign(tpl).map_err(|e| format!("assigning partitions: {e}"))?;
        Ok(Assignment::Assigned(assigned))
    }
}

impl ClientContext for RecoveringContext {
    fn stats(&self, statistics: Statistics) {
        for (topic, t) in &statistics.topics {
            for (partition, p) in &t.partitions {
                // -1 is librdkafka's internal "unassigned" partition; lag -1 means unknown.
                if *partition >= 0 && p.consumer_lag >= 0 {
                    self.metrics
                        .consumer_lag
                        .with_label_values(&[topic.as_str(), &partition.to_string()])
                        .set(p.consumer_lag);
                }
            }
        }
    }
}

impl ConsumerContext for RecoveringContext {
    fn rebalance(&self, consumer: &BaseConsumer<Self>, err: RDKafkaRespErr, tpl: &mut TopicPartitionList) {
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                self.metrics.rebalances.with_label_values(&["assign"]).inc();
                let outcome = self.assign(consumer, tpl).unwrap_or_else(Assignment::Failed);
                self.push(outcome);
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                self.metrics.rebalances.with_label_values(&["revoke"]).inc();
                let revoked = tpl.elements().iter().map(|e| (e.topic().to_owned(), e.partition())).collect();
                if let Err(e) = consumer.unassign() {
                    self.push(Assignment::Failed(format!("unassigning revoked partitions: {e}")));
                }
                self.push(Assignment::Revoked(revoked));
            }
            other => {
                tracing::error!(error = ?other, "rebalance error");
                if let Err(e) = consumer.unassign() {
                    tracing::error!(error = %e, "unassign after a rebalance error failed");
                }
                self.push(Assignment::Revoked(
                    tpl.elements().iter().map(|e| (e.topic().to_owned(), e.partition())).collect(),
                ));
            }
        }
    }
}
