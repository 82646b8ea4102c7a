//! The two input consumers of a worker. The group member subscribes to
//! `clickstream` only; the worker assigns partition *i* of `orders` to its
//! second consumer whenever the group gives it partition *i* of
//! `clickstream`, so the two lanes of a pair are always on one worker,
//! whatever the assignor. Both are polled by the pipeline thread; each
//! reports the end of a partition's log for its own topic (librdkafka's
//! end-of-partition event names the partition only).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerGroupMetadata};
use rdkafka::error::KafkaError;
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaErrorCode;
use segstream_config::Config;
use segstream_events::{EventTime, Lane, Positions};
use segstream_kafka::{
    Assignment, InputContext, KafkaIoError, assigned_consumer_config, consumer_config,
    fetch_watermarks_patiently,
};
use segstream_telemetry::Metrics;

use crate::error::WorkerError;

/// What one poll brought.
#[derive(Debug, Default)]
pub(crate) struct Polled {
    /// Records per lane and partition, in offset order.
    pub(crate) records: BTreeMap<(Lane, i32), Vec<OwnedMessage>>,
    /// Lanes whose consumer reached the end of the log (after their records above).
    pub(crate) ends: Vec<(Lane, i32)>,
    /// Rebalances to act on, after the records polled before them.
    pub(crate) rebalances: Vec<Assignment>,
    /// The group consumer was fenced (`FencedInstanceId`): by another
    /// worker with this instance id, or by its own earlier session after
    /// librdkafka rejoined on a session timeout of its own. The pipeline
    /// tells which and calls [`Inputs::rejoin`] or stops.
    pub(crate) fenced: bool,
    /// Records in `records`.
    pub(crate) count: usize,
}

/// The group's committed offsets of a partition pair, with the metadata
/// committed with them.
#[derive(Debug, Clone, Default)]
pub(crate) struct Committed {
    /// Per lane, if committed.
    pub(crate) clicks: Option<i64>,
    /// Per lane, if committed.
    pub(crate) orders: Option<i64>,
    /// The metadata string (the same on both lanes).
    pub(crate) metadata: Option<String>,
}

/// See the module documentation.
pub(crate) struct Inputs {
    lead: BaseConsumer<InputContext>,
    /// How the group member is made again after a self-fence.
    lead_config: ClientConfig,
    metrics: Metrics,
    orders: BaseConsumer<InputContext>,
    clickstream_topic: String,
    orders_topic: String,
    /// Partition pairs both consumers are assigned now.
    assigned: BTreeSet<i32>,
    /// Lanes paused by [`Inputs::set_paused`] and not resumed since.
    /// librdkafka keeps a pause across unassign and assign, so these are
    /// resumed when their partition is given up.
    paused: BTreeSet<(Lane, i32)>,
}

impl std::fmt::Debug for Inputs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inputs").field("clickstream", &self.clickstream_topic).finish_non_exhaustive()
    }
}

/// How long a seek may take (it is local to the consumer).
const SEEK_WAIT: Duration = Duration::from_secs(10);

/// How long a committed-offsets request may wait for open transactions of
/// a previous owner to be resolved.
const COMMITTED_WAIT: Duration = Duration::from_secs(60);

fn create(
    config: ClientConfig,
    metrics: &Metrics,
    what: &'static str,
) -> Result<BaseConsumer<InputContext>, WorkerError> {
    Ok(config.create_with_context(InputContext::new(metrics.clone())).map_err(KafkaIoError::kafka(what))?)
}

impl Inputs {
    /// Creates both consumers; the group member joins at [`Inputs::join`].
    pub(crate) fn new(config: &Config, metrics: &Metrics) -> Result<Self, WorkerError> {
        let lead_config = consumer_config(config)?;
        let lead = create(lead_config.clone(), metrics, "creating the clickstream consumer")?;
        let orders = create(assigned_consumer_config(config)?, metrics, "creating the orders consumer")?;
        Ok(Self {
            lead,
            lead_config,
            metrics: metrics.clone(),
            orders,
            clickstream_topic: config.topics.clickstream.clone(),
            orders_topic: config.topics.orders.clone(),
            assigned: BTreeSet::new(),
            paused: BTreeSet::new(),
        })
    }

    /// Subscribes the group member to the clickstream topic (it joins the
    /// group in the background from here on).
    pub(crate) fn join(&self) -> Result<(), WorkerError> {
        self.lead
            .subscribe(&[self.clickstream_topic.as_str()])
            .map_err(KafkaIoError::kafka("subscribing to the clickstream topic"))?;
        Ok(())
    }

    /// Replaces a group member that was fenced by its own earlier session
    /// with a new one, which joins under the same instance id; nothing
    /// stays assigned on either consumer until the group assigns again.
    pub(crate) fn rejoin(&mut self) -> Result<(), WorkerError> {
        let lead = create(self.lead_config.clone(), &self.metrics, "creating the clickstream consumer")?;
        let fenced = std::mem::replace(&mut self.lead, lead);
        fenced.context().closing();
        drop(fenced);
        self.orders.unassign().map_err(KafkaIoError::kafka("unassigning the orders consumer"))?;
        // The new group member has no pause; the orders consumer keeps its own.
        self.paused.retain(|(lane, _)| *lane == Lane::Orders);
        let orders: Vec<i32> = self.paused.iter().map(|(_, p)| *p).collect();
        self.resume_stopped(&orders)?;
        self.assigned.clear();
        self.join()
    }

    /// Leaves the group and joins it again as a new member under the same
    /// instance id. Unlike a static member's return after a restart (which
    /// the group answers with its old share, without a rebalance), a leave
    /// makes the group rebalance. What the member holds is revoked first,
    /// as in any rebalance; librdkafka joins once that is done.
    pub(crate) fn leave_and_rejoin(&self) -> Result<(), WorkerError> {
        self.lead.unsubscribe();
        self.join()
    }

    /// The group member's client (metadata requests).
    pub(crate) fn client(&self) -> &rdkafka::client::Client<InputContext> {
        self.lead.client()
    }

    fn topic(&self, lane: Lane) -> &str {
        match lane {
            Lane::Clicks => &self.clickstream_topic,
            Lane::Orders => &self.orders_topic,
        }
    }

    /// Polls both consumers, one record of each in turn (so a lane with a
    /// large backlog does not starve the other, which the merge would then
    /// wait for): up to `max` records, waiting at most `wait` for the first.
    /// Returns early on a rebalance.
    pub(crate) fn poll(&self, max: usize, wait: Duration) -> Result<Polled, WorkerError> {
        let deadline = Instant::now() + wait;
        let mut polled = Polled::default();
        loop {
            let mut progressed = false;
            for lane in Lane::BOTH {
                progressed |= polled.count < max && self.poll_one(lane, Duration::ZERO, &mut polled)?;
                if !polled.rebalances.is_empty() || polled.fenced {
                    return Ok(polled);
                }
            }
            if polled.count >= max {
                return Ok(polled);
            }
            if !progressed {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() || polled.count > 0 || !polled.ends.is_empty() {
                    return Ok(polled);
                }
                // Nothing ready: wait on the group member (rebalances come through it).
                self.poll_one(Lane::Clicks, left.min(Duration::from_millis(10)), &mut polled)?;
                if !polled.rebalances.is_empty() || polled.fenced {
                    return Ok(polled);
                }
            }
        }
    }

    /// Stops (`pause`) or restarts fetching one lane of a partition pair.
    /// Does nothing if the lane already is in that state: librdkafka drops
    /// the records it has fetched ahead at every pause or resume, and only
    /// a pause sets its fetch position back to the application's, so only
    /// a lane paused here is ever resumed.
    pub(crate) fn set_paused(&mut self, lane: Lane, partition: i32, pause: bool) -> Result<(), WorkerError> {
        if self.paused.contains(&(lane, partition)) == pause {
            return Ok(());
        }
        let consumer = match lane {
            Lane::Clicks => &self.lead,
            Lane::Orders => &self.orders,
        };
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(self.topic(lane), partition);
        let result = if pause { consumer.pause(&tpl) } else { consumer.resume(&tpl) };
        result
            .map_err(KafkaIoError::kafka(format!("pausing or resuming {}[{partition}]", self.topic(lane))))?;
        if pause {
            self.paused.insert((lane, partition));
        } else {
            self.paused.remove(&(lane, partition));
        }
        Ok(())
    }

    /// Reads a lane again from `offset` (records after it that were
    /// polled already come again).
    pub(crate) fn refetch(&self, lane: Lane, partition: i32, offset: i64) -> Result<(), WorkerError> {
        let consumer = match lane {
            Lane::Clicks => &self.lead,
            Lane::Orders => &self.orders,
        };
        let what = || format!("reading {}[{partition}] again from offset {offset}", self.topic(lane));
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(self.topic(lane), partition, Offset::Offset(offset))
            .map_err(KafkaIoError::kafka(what()))?;
        let done = consumer.seek_partitions(tpl, SEEK_WAIT).map_err(KafkaIoError::kafka(what()))?;
        for e in done.elements() {
            e.error().map_err(KafkaIoError::kafka(what()))?;
        }
        Ok(())
    }

    /// Whether a lane is paused by [`Inputs::set_paused`].
    pub(crate) fn is_paused(&self, lane: Lane, partition: i32) -> bool {
        self.paused.contains(&(lane, partition))
    }

    /// How many lanes are paused.
    pub(crate) fn paused_lanes(&self) -> usize {
        self.paused.len()
    }

    /// Lifts the pauses of these partition pairs once they are unassigned
    /// (their fetchers stopped), so that a later assignment fetches them.
    fn resume_stopped(&mut self, partitions: &[i32]) -> Result<(), WorkerError> {
        for lane in Lane::BOTH {
            for &p in partitions {
                if self.paused.contains(&(lane, p)) {
                    self.set_paused(lane, p, false)?;
                }
            }
        }
        Ok(())
    }

    /// One poll of a lane's consumer; false if it had nothing.
    fn poll_one(&self, lane: Lane, timeout: Duration, polled: &mut Polled) -> Result<bool, WorkerError> {
        let consumer = match lane {
            Lane::Clicks => &self.lead,
            Lane::Orders => &self.orders,
        };
        let got = match consumer.poll(timeout) {
            Some(Ok(m)) => {
                polled.records.entry((lane, m.partition())).or_default().push(m.detach());
                polled.count += 1;
                true
            }
            Some(Err(KafkaError::PartitionEOF(partition))) => {
                polled.ends.push((lane, partition));
                true
            }
            Some(Err(KafkaError::MessageConsumptionFatal(_))) => {
                if lane == Lane::Clicks
                    && matches!(
                        consumer.client().fatal_error(),
                        Some((RDKafkaErrorCode::FencedInstanceId, _))
                    )
                {
                    polled.fenced = true;
                    return Ok(true);
                }
                return Err(self.fatal(consumer));
            }
            Some(Err(e)) => {
                tracing::warn!(topic = self.topic(lane), error = %e, "consumer error (librdkafka retries by itself)");
                true
            }
            None => false,
        };
        polled.rebalances.extend(consumer.context().take_assignments());
        Ok(got)
    }

    /// The error a consumer cannot go on from, and why.
    fn fatal(&self, consumer: &BaseConsumer<InputContext>) -> WorkerError {
        match consumer.client().fatal_error() {
            Some((code, reason)) => WorkerError::Consumer(format!("{code}: {reason}")),
            None => WorkerError::Consumer("fatal error without a reason".into()),
        }
    }

    /// The group's committed offsets and metadata of these partition pairs.
    /// Waits until transactions of previous owners that hold offsets are
    /// resolved (`read_committed` asks the broker for stable offsets; a
    /// partition whose offsets are still part of an open transaction is
    /// asked again).
    pub(crate) fn committed(&self, partitions: &[i32]) -> Result<BTreeMap<i32, Committed>, WorkerError> {
        let mut tpl = TopicPartitionList::new();
        for &p in partitions {
            for lane in Lane::BOTH {
                tpl.add_partition(self.topic(lane), p);
            }
        }
        let started = Instant::now();
        let committed = loop {
            let committed = self
                .lead
                .committed_offsets(tpl.clone(), COMMITTED_WAIT)
                .map_err(KafkaIoError::kafka("reading the group's committed offsets"))?;
            let unsettled: Vec<String> = committed
                .elements()
                .iter()
                .filter_map(|e| e.error().err().map(|err| format!("{}[{}]: {err}", e.topic(), e.partition())))
                .collect();
            if unsettled.is_empty() {
                break committed;
            }
            if started.elapsed() > COMMITTED_WAIT {
                return Err(WorkerError::Consumer(format!(
                    "the committed offsets did not settle within {} s: {}",
                    COMMITTED_WAIT.as_secs(),
                    unsettled.join(", ")
                )));
            }
            tracing::info!(partitions = ?unsettled, "committed offsets not stable yet (a previous owner's transaction is open); asking again");
            std::thread::sleep(Duration::from_millis(200));
        };
        let mut out: BTreeMap<i32, Committed> =
            partitions.iter().map(|p| (*p, Committed::default())).collect();
        for e in committed.elements() {
            let Some(c) = out.get_mut(&e.partition()) else { continue };
            let Offset::Offset(offset) = e.offset() else { continue };
            if e.topic() == self.clickstream_topic {
                c.clicks = Some(offset);
            } else {
                c.orders = Some(offset);
            }
            if !e.metadata().is_empty() {
                c.metadata = Some(e.metadata().to_owned());
            }
        }
        Ok(out)
    }

    /// The start and end offsets of a partition pair's logs (the first
    /// offset still there and the offset after the last one).
    pub(crate) fn watermarks(&self, partition: i32) -> Result<(Positions, Positions), WorkerError> {
        let read = |topic: &str| -> Result<(i64, i64), WorkerError> {
            fetch_watermarks_patiently(self.lead.client(), topic, partition, Duration::from_secs(30)).map_err(
                |e| KafkaIoError::kafka(format!("reading the offsets of {topic}[{partition}]"))(e).into(),
            )
        };
        let (clicks, orders) = (read(&self.clickstream_topic)?, read(&self.orders_topic)?);
        Ok((
            Positions { clicks: clicks.0, orders: orders.0 },
            Positions { clicks: clicks.1, orders: orders.1 },
        ))
    }

    /// The first offsets of a partition pair whose records were published
    /// (Kafka timestamp) after `time`; the end of a log where none was.
    pub(crate) fn offsets_after(&self, partition: i32, time: EventTime) -> Result<Positions, WorkerError> {
        let mut tpl = TopicPartitionList::new();
        for lane in Lane::BOTH {
            tpl.add_partition_offset(self.topic(lane), partition, Offset::Offset(time.millis() + 1))
                .map_err(KafkaIoError::kafka("building an offsets-for-times request"))?;
        }
        let found = self.lead.offsets_for_times(tpl, Duration::from_secs(30)).map_err(
            KafkaIoError::kafka(format!("finding the offsets after {time} of partition {partition}")),
        )?;
        let (_, high) = self.watermarks(partition)?;
        let at = |lane: Lane| match found.find_partition(self.topic(lane), partition).map(|e| e.offset()) {
            Some(Offset::Offset(o)) => o,
            _ => high.of(lane),
        };
        Ok(Positions { clicks: at(Lane::Clicks), orders: at(Lane::Orders) })
    }

    /// Starts reading these partition pairs from these offsets; the other
    /// assigned pairs go on (pairs already assigned start again there).
    pub(crate) fn add(&mut self, from: &BTreeMap<i32, Positions>) -> Result<(), WorkerError> {
        let again: Vec<i32> = from.keys().copied().filter(|p| self.assigned.contains(p)).collect();
        self.remove(&again)?;
        for (lane, consumer) in [(Lane::Clicks, &self.lead), (Lane::Orders, &self.orders)] {
            let mut tpl = TopicPartitionList::new();
            for (&p, at) in from {
                tpl.add_partition_offset(self.topic(lane), p, Offset::Offset(at.of(lane)))
                    .map_err(KafkaIoError::kafka("building the assignment"))?;
            }
            consumer
                .incremental_assign(&tpl)
                .map_err(KafkaIoError::kafka(format!("assigning {}", self.topic(lane))))?;
        }
        self.assigned.extend(from.keys());
        Ok(())
    }

    /// Stops reading these partition pairs (those assigned); the others go on.
    pub(crate) fn remove(&mut self, partitions: &[i32]) -> Result<(), WorkerError> {
        let gone: Vec<i32> = partitions.iter().copied().filter(|p| self.assigned.contains(p)).collect();
        if gone.is_empty() {
            return Ok(());
        }
        for (lane, consumer) in [(Lane::Clicks, &self.lead), (Lane::Orders, &self.orders)] {
            let mut tpl = TopicPartitionList::new();
            for &p in &gone {
                tpl.add_partition(self.topic(lane), p);
            }
            consumer
                .incremental_unassign(&tpl)
                .map_err(KafkaIoError::kafka(format!("unassigning {}", self.topic(lane))))?;
        }
        self.resume_stopped(&gone)?;
        for p in gone {
            self.assigned.remove(&p);
        }
        Ok(())
    }

    /// The group metadata a transaction's offsets are committed under.
    pub(crate) fn group_metadata(&self) -> Option<ConsumerGroupMetadata> {
        self.lead.group_metadata()
    }

    /// The topic of a lane, for offsets.
    pub(crate) fn lane_topic(&self, lane: Lane) -> &str {
        self.topic(lane)
    }

    /// The lane of a topic.
    pub(crate) fn lane_of(&self, topic: &str) -> Option<Lane> {
        if topic == self.clickstream_topic {
            Some(Lane::Clicks)
        } else if topic == self.orders_topic {
            Some(Lane::Orders)
        } else {
            None
        }
    }
}

impl Drop for Inputs {
    /// The consumers close after this (a static member stays in the group
    /// until its session times out, so a quick restart gets its partitions
    /// back); closing waits for the revocation to be acted on, which nobody
    /// will do any more: their contexts do it themselves from now on.
    fn drop(&mut self) {
        for consumer in [&self.lead, &self.orders] {
            consumer.context().closing();
        }
    }
}
