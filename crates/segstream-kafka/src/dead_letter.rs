use rdkafka::message::{Header, OwnedHeaders};
use segstream_events::DecodeError;

/// A payload that did not decode, with where it came from.
#[derive(Debug)]
pub struct DeadLetter<'a> {
    /// Source topic.
    pub topic: &'a str,
    /// Source partition.
    pub partition: i32,
    /// Source offset.
    pub offset: i64,
    /// Why it was rejected.
    pub error: &'a DecodeError,
}

/// Headers of a dead-letter record: `segstream.error.code` (stable code),
/// `segstream.error.message`, `segstream.source.topic`,
/// `segstream.source.partition`, `segstream.source.offset`. The record's key
/// and value are the original bytes, unchanged.
pub fn dead_letter_headers(d: &DeadLetter<'_>) -> OwnedHeaders {
    let message = d.error.to_string();
    let partition = d.partition.to_string();
    let offset = d.offset.to_string();
    OwnedHeaders::new_with_capacity(5)
        .insert(Header { key: "segstream.error.code", value: Some(d.error.code()) })
        .insert(Header { key: "segstream.error.message", value: Some(&message) })
        .insert(Header { key: "segstream.source.topic", value: Some(d.topic) })
        .insert(Header { key: "segstream.source.partition", value: Some(&partition) })
        .insert(Header { key: "segstream.source.offset", value: Some(&offset) })
}
