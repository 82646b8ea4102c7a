//! The erasures topic (right to be forgotten): read whole before the
//! worker takes any partition, then followed between batches. Every worker
//! reads all of it; each writes the tombstones of the customers of the
//! partitions it owns.

use std::collections::{BTreeMap, BTreeSet};

use segstream_config::Config;
use segstream_events::{CustomerId, ErasureRequest, EventTime};

use crate::error::WorkerError;
use segstream_kafka::{Follower, Read};

/// An erased customer and the time of their erasure.
type Erasure = (CustomerId, EventTime);

/// Erasure requests seen, and which tombstones this run has written.
#[derive(Debug)]
pub(crate) struct Erasures {
    follower: Follower,
    /// Every erasure: customer and time (the latest request wins).
    known: BTreeMap<CustomerId, EventTime>,
    /// Customers whose tombstone went into a transaction of this run.
    written: BTreeSet<CustomerId>,
    /// The partitions for which every tombstone is written, while nothing
    /// new came: the next look costs nothing.
    settled: Option<Vec<i32>>,
}

impl Erasures {
    /// Reads the whole erasures topic; returns the reader and every erasure.
    pub(crate) fn load(config: &Config) -> Result<(Self, Vec<Erasure>), WorkerError> {
        let (follower, records) = Follower::load(config, &config.topics.erasures)?;
        let mut erasures = Self { follower, known: BTreeMap::new(), written: BTreeSet::new(), settled: None };
        let all = records.into_iter().filter_map(|r| erasures.note(r)).collect();
        tracing::info!(topic = %erasures.follower.topic(), erasures = erasures.known.len(), "erasures loaded");
        Ok((erasures, all))
    }

    /// Erasures requested since the last look (does not wait).
    pub(crate) fn poll_new(&mut self) -> Vec<Erasure> {
        self.follower.poll_new().into_iter().filter_map(|r| self.note(r)).collect()
    }

    /// The erasure a record holds (`None` for a record that is not one,
    /// which is logged and skipped).
    fn note(&mut self, read: Read) -> Option<Erasure> {
        let request = read.value.as_deref().and_then(ErasureRequest::from_json);
        let customer = read.key.map(|k| CustomerId::new(String::from_utf8_lossy(&k)));
        match (customer, request) {
            (Some(c), Some(r)) if !c.as_str().is_empty() => {
                self.settled = None;
                let at = self.known.entry(c.clone()).or_insert(r.requested_at);
                *at = (*at).max(r.requested_at);
                Some((c, *at))
            }
            _ => {
                tracing::warn!(topic = %self.follower.topic(), offset = read.offset, "a record of the erasures topic is not an erasure request: skipped");
                None
            }
        }
    }

    /// Erased customers of the partitions `eligible` (of `partitions`)
    /// whose tombstone this run has not written yet.
    pub(crate) fn unwritten(&mut self, partitions: i32, eligible: Vec<i32>) -> Vec<CustomerId> {
        if self.settled.as_ref() == Some(&eligible) {
            return Vec::new();
        }
        let due: Vec<CustomerId> = self
            .known
            .keys()
            .filter(|c| !self.written.contains(*c))
            .filter(|c| eligible.contains(&segstream_kafka::partition_for(c.as_str().as_bytes(), partitions)))
            .cloned()
            .collect();
        if due.is_empty() {
            self.settled = Some(eligible);
        }
        due
    }

    /// The tombstone of `customer` is in the open transaction.
    pub(crate) fn written(&mut self, customer: CustomerId) {
        self.written.insert(customer);
    }

    /// The open transaction was aborted: its tombstones are written again.
    pub(crate) fn forget_written(&mut self) {
        self.written.clear();
        self.settled = None;
    }
}
