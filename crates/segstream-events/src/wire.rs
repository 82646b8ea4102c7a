//! Confluent wire format: magic byte `0`, 4-byte big-endian schema id, then
//! the Avro binary body. Any Confluent-compatible client reads and writes it.

use crate::error::DecodeError;

/// The magic byte that starts every Confluent-framed message.
pub const MAGIC: u8 = 0;

/// Length of the header (magic + schema id).
pub const HEADER_LEN: usize = 5;

/// Frames an Avro body with a schema id.
pub fn frame(schema_id: u32, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + body.len());
    out.push(MAGIC);
    out.extend_from_slice(&schema_id.to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// Splits a framed message into its schema id and Avro body.
///
/// The caller has already checked that the first byte is [`MAGIC`].
pub fn split(payload: &[u8]) -> Result<(u32, &[u8]), DecodeError> {
    match payload {
        [MAGIC, a, b, c, d, body @ ..] => Ok((u32::from_be_bytes([*a, *b, *c, *d]), body)),
        _ => Err(DecodeError::TruncatedHeader(payload.len())),
    }
}

/// The schema id of a Confluent-framed payload, if it is one (`None` for
/// JSON, empty or truncated payloads).
pub fn schema_id(payload: &[u8]) -> Option<u32> {
    split(payload).ok().filter(|_| payload.first() == Some(&MAGIC)).map(|(id, _)| id)
}

/// Replaces the schema id of a framed payload (outputs carry the ids a
/// registry gave); payloads too short to be framed are left alone.
pub fn set_schema_id(payload: &mut [u8], schema_id: u32) {
    if let Some(id) = payload.get_mut(1..HEADER_LEN) {
        id.copy_from_slice(&schema_id.to_be_bytes());
    }
}
