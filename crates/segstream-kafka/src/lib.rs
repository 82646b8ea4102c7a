//! Kafka I/O for segstream: client configuration with the settings our
//! delivery guarantee depends on enforced, topic administration (creation,
//! the co-partitioning check), the consumer context that hands
//! rebalances to the pipeline, who in the group holds which partition,
//! dead-letter records, and the reader of small internal topics read whole.
//!
//! Everything here is plain Apache Kafka protocol: no broker-specific calls.

mod admin;
mod client;
mod context;
mod dead_letter;
mod error;
mod follower;
mod group;
mod recent;

pub use admin::{
    TopicStatus, check_copartitioned, create_topics, fetch_watermarks_patiently, partition_count,
    wait_for_broker,
};
pub use client::{
    assigned_consumer_config, consumer_config, partition_for, producer_config, reader_config,
    transactional_id,
};
pub use context::{Assignment, InputContext};
pub use dead_letter::{DeadLetter, DeadLetterRecord, MAX_KEY_BYTES, MAX_MESSAGE_BYTES, dead_letter_record};
pub use error::KafkaIoError;
pub use follower::{Follower, Read};
pub use group::{GroupShares, describe_shares};
pub use recent::recent_for_key;
