use rdkafka::error::KafkaError;
use thiserror::Error;

/// Errors of Kafka I/O, with what was being done.
#[derive(Debug, Error)]
pub enum KafkaIoError {
    /// A user librdkafka option tries to change a setting we rely on.
    #[error(
        "kafka.librdkafka_options.{key} cannot be set: segstream sets it to {required:?} because {why}; remove it from the config"
    )]
    ProtectedOption {
        /// Option name.
        key: String,
        /// The value segstream uses.
        required: String,
        /// Why it is needed.
        why: &'static str,
    },
    /// The broker did not answer in time.
    #[error(
        "no answer from Kafka at {bootstrap} within {seconds} s: {source}; is the broker running (make broker) and kafka.bootstrap_servers right?"
    )]
    Unreachable {
        /// Bootstrap servers tried.
        bootstrap: String,
        /// Time waited.
        seconds: u64,
        /// Last error.
        source: KafkaError,
    },
    /// An input topic does not exist.
    #[error(
        "topic {topic} does not exist: create it (segstream topics create) or fix topics.* in the config"
    )]
    MissingTopic {
        /// Topic name.
        topic: String,
    },
    /// The input topics are not co-partitioned.
    #[error(
        "topics {a} ({a_partitions} partitions) and {b} ({b_partitions} partitions) must have the same partition count, so partition i of both holds the same customers; add partitions to the smaller one (kafka-topics --alter --partitions N) and restart"
    )]
    NotCopartitioned {
        /// First topic.
        a: String,
        /// Its partition count.
        a_partitions: usize,
        /// Second topic.
        b: String,
        /// Its partition count.
        b_partitions: usize,
    },
    /// An internal topic read whole at start did not reach its end.
    #[error(
        "the topic {topic} was not read to its end within {seconds} s: is the broker overloaded, or the topic's leader unavailable?"
    )]
    NotReadToEnd {
        /// The topic.
        topic: String,
        /// Time waited.
        seconds: u64,
    },
    /// A group description holds a member assignment that does not decode.
    #[error(
        "the description of consumer group {group} holds an assignment of member {member} that does not decode ({problem}): is another client using this group id?"
    )]
    GroupDescription {
        /// The group.
        group: String,
        /// The member whose assignment does not decode.
        member: String,
        /// What is wrong with it.
        problem: String,
    },
    /// A Kafka call failed.
    #[error("{context}: {source}")]
    Kafka {
        /// What was being done.
        context: String,
        /// The client's error.
        source: KafkaError,
    },
}

impl KafkaIoError {
    /// Wraps a client error with what was being done.
    pub fn kafka(context: impl Into<String>) -> impl FnOnce(KafkaError) -> Self {
        move |source| Self::Kafka { context: context.into(), source }
    }
}
