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

/// The longest error message a dead letter carries (bytes, cut at a
/// character boundary).
pub const MAX_MESSAGE_BYTES: usize = 1024;
/// The longest key a dead letter carries.
pub const MAX_KEY_BYTES: usize = 4096;

/// A dead-letter record as it is produced: key and value as received, cut
/// where they would not fit, and the headers.
#[derive(Debug)]
pub struct DeadLetterRecord<'a> {
    /// The original key (its first [`MAX_KEY_BYTES`] if longer).
    pub key: Option<&'a [u8]>,
    /// The original value (its first bytes if longer than the budget).
    pub payload: Option<&'a [u8]>,
    /// See [`dead_letter_record`].
    pub headers: OwnedHeaders,
}

/// The dead letter of `key` and `payload`, at most about `max_bytes` in
/// all, so that no input can make a dead letter larger than the producer
/// accepts (a record rejected for its size would fail its transaction
/// again after every restart). Headers: `segstream.error.code` (stable
/// code), `segstream.error.message` (at most [`MAX_MESSAGE_BYTES`]),
/// `segstream.source.topic`, `segstream.source.partition`,
/// `segstream.source.offset`, and when the value or key was cut,
/// `segstream.original.size` / `segstream.key.original.size` (their sizes
/// in bytes as received).
pub fn dead_letter_record<'a>(
    d: &DeadLetter<'_>,
    key: Option<&'a [u8]>,
    payload: Option<&'a [u8]>,
    max_bytes: usize,
) -> DeadLetterRecord<'a> {
    let partition = d.partition.to_string();
    let offset = d.offset.to_string();
    let message = cut_str(d.message, MAX_MESSAGE_BYTES);
    let mut headers = OwnedHeaders::new_with_capacity(7)
        .insert(Header { key: "segstream.error.code", value: Some(d.code) })
        .insert(Header { key: "segstream.error.message", value: Some(message) })
        .insert(Header { key: "segstream.source.topic", value: Some(d.topic) })
        .insert(Header { key: "segstream.source.partition", value: Some(&partition) })
        .insert(Header { key: "segstream.source.offset", value: Some(&offset) });
    let key = key.map(|k| cut(k, MAX_KEY_BYTES, "segstream.key.original.size", &mut headers));
    // What the rest takes, generously: header names and values, the key.
    let used = 512 + message.len() + d.topic.len() + key.map_or(0, <[u8]>::len);
    let room = max_bytes.saturating_sub(used);
    let payload = payload.map(|p| cut(p, room, "segstream.original.size", &mut headers));
    DeadLetterRecord { key, payload, headers }
}

/// The first `max` bytes of `bytes`; when that cuts them, header `size_header`
/// says how many there were.
fn cut<'a>(bytes: &'a [u8], max: usize, size_header: &str, headers: &mut OwnedHeaders) -> &'a [u8] {
    if bytes.len() > max {
        let size = bytes.len().to_string();
        *headers = std::mem::take(headers).insert(Header { key: size_header, value: Some(&size) });
    }
    &bytes[..bytes.len().min(max)]
}

/// The longest prefix of `s` of at most `max` bytes that ends on a
/// character boundary.
fn cut_str(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let end = (0..=max).rev().find(|&i| s.is_char_boundary(i)).unwrap_or(0);
    &s[..end]
}

#[cfg(test)]
mod tests {
    use rdkafka::message::Headers;

    use super::*;

    fn header<'h>(h: &'h OwnedHeaders, key: &str) -> Option<&'h str> {
        h.iter().find(|x| x.key == key).and_then(|x| std::str::from_utf8(x.value?).ok())
    }

    fn letter<'a>(message: &'a str) -> DeadLetter<'a> {
        DeadLetter { topic: "clicks", partition: 3, offset: 42, code: "not_avro", message }
    }

    #[test]
    fn a_dead_letter_that_fits_keeps_the_original_bytes_and_says_where_they_came_from() {
        let r = dead_letter_record(&letter("bad"), Some(b"k"), Some(b"payload"), 1_000_000);
        assert_eq!((r.key, r.payload), (Some(&b"k"[..]), Some(&b"payload"[..])));
        assert_eq!(header(&r.headers, "segstream.source.offset"), Some("42"));
        assert_eq!(header(&r.headers, "segstream.original.size"), None);
    }

    #[test]
    fn a_record_near_the_size_limit_is_cut_to_fit_and_says_how_large_it_was() {
        let payload = vec![7_u8; 999_900];
        let key = vec![b'k'; 10_000];
        let message = "é".repeat(2_000);
        let r = dead_letter_record(&letter(&message), Some(&key), Some(&payload), 524_288);
        let total = r.key.map_or(0, <[u8]>::len) + r.payload.map_or(0, <[u8]>::len) + MAX_MESSAGE_BYTES + 512;
        assert!(total <= 524_288 + 512, "{total}");
        assert_eq!(r.payload.map(<[u8]>::len).map(|n| n > 500_000), Some(true));
        assert_eq!(header(&r.headers, "segstream.original.size"), Some("999900"));
        assert_eq!(header(&r.headers, "segstream.key.original.size"), Some("10000"));
        let kept = header(&r.headers, "segstream.error.message").expect("message");
        assert!(kept.len() <= MAX_MESSAGE_BYTES && kept.chars().all(|c| c == 'é'), "cut at a boundary");
    }
}
