use thiserror::Error;

/// Why a payload could not become an event. Every variant has a stable
/// [`code`](DecodeError::code), used as the dead-letter header and the
/// `code` label of the dead-letter and decode-error metrics.
#[derive(Debug, Error)]
pub enum DecodeError {
    /// The Kafka message had no value.
    #[error("message has no payload")]
    EmptyPayload,
    /// Neither Confluent Avro (first byte 0) nor a JSON object (first byte `{`).
    #[error(
        "unknown payload format: first byte 0x{0:02x} (expected 0x00 for Confluent Avro or '{{' for JSON)"
    )]
    UnknownFormat(u8),
    /// Magic byte present but fewer than 5 header bytes.
    #[error("truncated Confluent header: {0} bytes, need at least 5")]
    TruncatedHeader(usize),
    /// The schema id is not one this worker knows for this topic.
    #[error("unknown schema id {id} for {topic_kind} (known: {known:?})")]
    UnknownSchemaId {
        /// Id found in the header.
        id: u32,
        /// Which kind of event was expected.
        topic_kind: &'static str,
        /// Ids that would have been accepted.
        known: Vec<u32>,
    },
    /// The Avro body did not decode with the writer schema.
    #[error("invalid Avro body: {0}")]
    Avro(String),
    /// The JSON body did not parse into the event: where (the field's
    /// path, empty for the document itself) and why.
    #[error("invalid JSON at `{path}`: {problem}")]
    Json {
        /// The field's path (`price`, `categories[2]`; `.` for the document).
        path: String,
        /// What is wrong there.
        problem: String,
    },
    /// The event time is outside the range inputs may carry.
    #[error(
        "event_time {time} ({millis} ms) is outside {earliest} .. 2100-01-01: event_time is milliseconds since the epoch (seconds or microseconds land outside); for older history lower time.earliest_event_date"
    )]
    EventTimeOutOfRange {
        /// The event time as read, ms.
        millis: i64,
        /// It as a date, when it is one.
        time: String,
        /// The earliest time accepted (`time.earliest_event_date`).
        earliest: String,
    },
    /// The event decoded but a field breaks a rule of the schema docs.
    #[error("invalid field `{field}`: {problem}")]
    Invalid {
        /// Field name as in the schema.
        field: &'static str,
        /// What is wrong with it.
        problem: String,
    },
}

impl DecodeError {
    /// Stable machine-readable code, bounded set (safe as a metric label).
    pub const fn code(&self) -> &'static str {
        match self {
            Self::EmptyPayload => "empty_payload",
            Self::UnknownFormat(_) => "unknown_format",
            Self::TruncatedHeader(_) => "truncated_header",
            Self::UnknownSchemaId { .. } => "unknown_schema_id",
            Self::Avro(_) => "invalid_avro",
            Self::Json { .. } => "invalid_json",
            Self::EventTimeOutOfRange { .. } => "event_time_out_of_range",
            Self::Invalid { .. } => "invalid_field",
        }
    }
}

/// Why a record could not be encoded for the wire.
#[derive(Debug, Error)]
pub enum EncodeError {
    /// apache-avro refused the value (a bug: our values follow our schemas).
    #[error("Avro encoding of {record} failed: {message}")]
    Avro {
        /// Record type being encoded.
        record: &'static str,
        /// The library's message.
        message: String,
    },
    /// serde_json refused the value.
    #[error("JSON encoding of {record} failed: {message}")]
    Json {
        /// Record type being encoded.
        record: &'static str,
        /// The library's message.
        message: String,
    },
}
