use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, ConsumerContext};
use rdkafka::statistics::Statistics;
use rdkafka::topic_partition_list::TopicPartitionList;
use rdkafka::types::RDKafkaRespErr;
use segstream_telemetry::Metrics;

/// A rebalance the pipeline must act on (incremental: the cooperative
/// protocol). librdkafka waits for the pipeline to call
/// `incremental_assign` / `incremental_unassign` itself, so the pipeline can
/// first commit what it did with the partitions it gives up (their
/// generation is still valid then), and decide per partition how to start
/// the ones it gets. Partitions in neither list stay where they are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Assignment {
    /// Partitions added to this member: `(topic, partition)`. The pipeline
    /// must call `incremental_assign` with them (and their start offsets).
    Assigned(Vec<(String, i32)>),
    /// Partitions taken away. `lost`: the member was already out of the
    /// group (session expired), so nothing can be committed for them. The
    /// pipeline must call `incremental_unassign` with them.
    Revoked {
        /// The partitions.
        partitions: Vec<(String, i32)>,
        /// Taken away without this member's consent.
        lost: bool,
    },
}

/// Consumer context of the worker's input consumers: queues rebalances for
/// the pipeline (without acting on them) and turns librdkafka statistics
/// into lag gauges.
#[derive(Debug)]
pub struct InputContext {
    metrics: Metrics,
    pending: Mutex<Vec<Assignment>>,
    /// The consumer is being closed: nobody will act on a rebalance any more.
    closing: AtomicBool,
}

impl InputContext {
    /// A context reporting to `metrics`.
    pub fn new(metrics: Metrics) -> Self {
        Self { metrics, pending: Mutex::new(Vec::new()), closing: AtomicBool::new(false) }
    }

    /// From now on the context answers rebalances itself (the consumer is
    /// about to close and waits for its revocation to be acted on).
    pub fn closing(&self) {
        self.closing.store(true, Ordering::SeqCst);
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
}

fn elements(tpl: &TopicPartitionList) -> Vec<(String, i32)> {
    tpl.elements().iter().map(|e| (e.topic().to_owned(), e.partition())).collect()
}

impl ClientContext for InputContext {
    /// librdkafka's own lines (its warnings, and with `debug` set in
    /// `kafka.librdkafka_options` its traces) in the worker's log, under
    /// the target `librdkafka`.
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => tracing::error!(target: "librdkafka", fac, "{log_message}"),
            RDKafkaLogLevel::Warning => tracing::warn!(target: "librdkafka", fac, "{log_message}"),
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::info!(target: "librdkafka", fac, "{log_message}");
            }
            RDKafkaLogLevel::Debug => tracing::debug!(target: "librdkafka", fac, "{log_message}"),
        }
    }

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

impl ConsumerContext for InputContext {
    fn rebalance(&self, consumer: &BaseConsumer<Self>, err: RDKafkaRespErr, tpl: &mut TopicPartitionList) {
        use rdkafka::consumer::Consumer;
        if self.closing.load(Ordering::SeqCst) {
            if err == RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS {
                return;
            }
            let result = match consumer.rebalance_protocol() {
                rdkafka::consumer::RebalanceProtocol::Cooperative => consumer.incremental_unassign(tpl),
                _ => consumer.unassign(),
            };
            if let Err(e) = result {
                tracing::warn!(error = %e, "unassigning while closing");
            }
            return;
        }
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                self.metrics.rebalances.with_label_values(&["assign"]).inc();
                self.push(Assignment::Assigned(elements(tpl)));
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                self.metrics.rebalances.with_label_values(&["revoke"]).inc();
                let lost = consumer.assignment_lost();
                self.push(Assignment::Revoked { partitions: elements(tpl), lost });
            }
            other => {
                self.metrics.rebalances.with_label_values(&["error"]).inc();
                tracing::error!(error = ?other, "rebalance error: giving up the assignment");
                self.push(Assignment::Revoked { partitions: elements(tpl), lost: true });
            }
        }
    }
}
