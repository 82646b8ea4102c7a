//! The latest records of one key on a keyed topic, read backwards from the
//! end of the key's partition in growing windows (a look-up's "last
//! changes"): no index, no state kept for it, bounded work.

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use segstream_config::Config;

use crate::{
    KafkaIoError, assigned_consumer_config, fetch_watermarks_patiently, partition_count, partition_for,
};

/// How long one look-up may read.
const READ_FOR: Duration = Duration::from_secs(10);

/// The values of the latest `want` records of `key` on `topic` (committed
/// ones), newest first, reading at most `scan` records back from the end.
pub fn recent_for_key(
    config: &Config,
    topic: &str,
    key: &[u8],
    want: usize,
    scan: i64,
) -> Result<Vec<Vec<u8>>, KafkaIoError> {
    let consumer: BaseConsumer = assigned_consumer_config(config)?
        .create()
        .map_err(KafkaIoError::kafka("creating a look-up reader"))?;
    let partitions = i32::try_from(partition_count(consumer.client(), topic)?).unwrap_or(i32::MAX);
    let partition = partition_for(key, partitions);
    let (low, high) =
        fetch_watermarks_patiently(consumer.client(), topic, partition, Duration::from_secs(10))
            .map_err(KafkaIoError::kafka(format!("reading the end offsets of {topic}")))?;
    let floor = low.max(high.saturating_sub(scan));
    let deadline = Instant::now() + READ_FOR;
    let (mut end, mut window, mut found) = (high, 1_000_i64, Vec::new());
    while end > floor && found.len() < want && Instant::now() < deadline {
        let start = floor.max(end - window);
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, partition, Offset::Offset(start))
            .map_err(KafkaIoError::kafka("building the look-up's assignment"))?;
        consumer.assign(&tpl).map_err(KafkaIoError::kafka("assigning the look-up reader"))?;
        // This window's records of the key, oldest first.
        let mut here = Vec::new();
        while Instant::now() < deadline {
            match consumer.poll(Duration::from_millis(200)) {
                Some(Ok(m)) if m.offset() >= end => break,
                Some(Ok(m)) => {
                    if m.key() == Some(key)
                        && let Some(value) = m.payload()
                    {
                        here.push(value.to_vec());
                    }
                    if m.offset() + 1 >= end {
                        break;
                    }
                }
                Some(Err(KafkaError::PartitionEOF(_))) => break,
                Some(Err(e)) => {
                    return Err(KafkaIoError::Kafka { context: format!("reading {topic}"), source: e });
                }
                None => {}
            }
        }
        found.extend(here.into_iter().rev());
        end = start;
        window = window.saturating_mul(4);
    }
    found.truncate(want);
    Ok(found)
}
