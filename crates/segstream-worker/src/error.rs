use rdkafka::error::KafkaError;
use segstream_kafka::KafkaIoError;
use thiserror::Error;

/// Why the worker stopped.
#[derive(Debug, Error)]
pub enum WorkerError {
    /// The segment definitions cannot be used.
    #[error(transparent)]
    Definitions(#[from] segstream_segments::DefinitionError),
    /// A trained model a decision or a checkpoint recorded cannot be used.
    #[error("{origin}: {problem}")]
    Model {
        /// The decision or checkpoint.
        origin: String,
        /// Why.
        problem: String,
    },
    /// Kafka setup or metadata.
    #[error(transparent)]
    Kafka(#[from] KafkaIoError),
    /// A transactional step failed; outputs of the batch were not committed.
    /// A restart replays from the last committed offsets.
    #[error(
        "Kafka transaction failed while {context}: {source}; outputs of this batch were not committed, restart to resume from the last commit"
    )]
    Transaction {
        /// The step.
        context: &'static str,
        /// The client's error.
        source: KafkaError,
    },
    /// The consumer has no group metadata to attach offsets to a transaction.
    #[error("the consumer has no group metadata (not in a group yet); cannot commit offsets transactionally")]
    NoGroupMetadata,
    /// Another worker joined the group with the same instance id, or took
    /// over this one's transactional id.
    #[error(
        "another worker runs with worker.instance_id={instance_id:?} and fenced this one (seen by its {seen_by}): give every worker its own instance id (a StatefulSet ordinal, a host name)"
    )]
    DuplicateInstance {
        /// The instance id in use twice.
        instance_id: String,
        /// Which client was fenced: the group consumer or the transactional producer.
        seen_by: &'static str,
    },
    /// The group consumer hit an error it cannot go on from.
    #[error("the input consumer cannot go on: {0}")]
    Consumer(String),
    /// A partition's committed decisions could not be read back.
    #[error("partition {partition}: the committed decisions cannot be read: {problem}")]
    DecisionLog {
        /// Input partition.
        partition: i32,
        /// What went wrong.
        problem: String,
    },
    /// A partition rebuilt from its logs did not retrace its committed run.
    #[error("{0}")]
    Divergence(String),
    /// An invariant of the pipeline does not hold (a bug).
    #[error("internal invariant broken (a bug): {0}")]
    Invariant(String),
    /// Building an Arrow batch failed (a bug: our builders follow our schema).
    #[error("building an Arrow batch failed: {0}")]
    Arrow(#[from] datafusion::arrow::error::ArrowError),
    /// Encoding an output record failed (a bug: our records follow our schemas).
    #[error(transparent)]
    Encode(#[from] segstream_events::EncodeError),
    /// The HTTP endpoint could not start.
    #[error(transparent)]
    Http(#[from] segstream_telemetry::HttpError),
    /// The per-batch DataFusion plan failed.
    #[error(transparent)]
    Sql(#[from] segstream_sql::SqlError),
    /// The checkpoint store cannot be opened or read.
    #[error(transparent)]
    Checkpoint(#[from] segstream_checkpoint::CheckpointError),
    /// A state snapshot could not be written, read or used.
    #[error("state snapshot {0}")]
    Snapshot(String),
    /// Writing replay output failed.
    #[error("writing the output failed: {0}")]
    Output(String),
    /// The configuration cannot run as given (checked at start, beyond what
    /// the config's own validation sees, such as the environment).
    #[error("{0}")]
    Config(String),
    /// The schema registry refused a request (credentials, a schema).
    #[error(transparent)]
    Registry(#[from] segstream_registry::RegistryError),
    /// The pipeline thread could not be started or panicked.
    #[error("pipeline thread: {0}")]
    Thread(String),
}
