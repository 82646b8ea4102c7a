use rdkafka::message::{Header, OwnedHeaders};

/// A payload that did not become an event, with why and where it came from.
#[derive(Debug)]
pub struct DeadLetter<'a> {
    /// Source topic.
    pub topic: &'a str,
    /// Source partition.
    pub partition: i32,
    /// Source offset.
    pub offset: i64,
    /// Stable code of the reason (`DecodeError::code`, or `late_event`).
    pub code: &'a str,
    /// Human-readable reason.
    pub message: &'a str,
}

/// Headers of a dead-letter record: `segstream.error.code` (stable code),
/// `segstream.error.message`, `segstream.source.topic`,
/// `segstream.source.partition`, `segstream.source.offset`. The record's key
/// and value are the original bytes, unchanged.
pub fn dead_letter_headers(d: &DeadLetter<'_>) -> OwnedHeaders {
    let partition = d.partition.to_string();
    let offset = d.offset.to_string();
    OwnedHeaders::new_with_capacity(5)
        .insert(Header { key: "segstream.error.code", value: Some(d.code) })
        .insert(Header { key: "segstream.error.message", value: Some(d.message) })
        .insert(Header { key: "segstream.source.topic", value: Some(d.topic) })
        .insert(Header { key: "segstream.source.partition", value: Some(&partition) })
        .insert(Header { key: "segstream.source.offset", value: Some(&offset) })
}
