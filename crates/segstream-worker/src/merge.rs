//! Event-time merge of co-partitioned inputs.
//!
//! Partition *i* of `clickstream` and partition *i* of `orders` hold the same
//! customers. Their records are released to the state in event-time order:
//! the head of each lane is compared and the earlier one goes first; a lane
//! with nothing buffered holds the other back until it has been quiet for
//! `idle` (then it counts as idle). Because each partition is read in offset
//! order, this makes processing order a function of the input, not of fetch
//! timing: a replay of the same topics gives the same transitions and ids.
//! Within a lane, release follows offset order, so "everything below the
//! first unreleased offset is processed" always holds: that offset is what we
//! commit.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use segstream_events::EventTime;

/// Which input a record comes from. At equal event time clicks go first: the
/// click that led to an order precedes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Source {
    /// `clickstream`.
    Clicks,
    /// `orders`.
    Orders,
}

/// A buffered input record.
#[derive(Debug)]
pub(crate) struct Pending<T> {
    /// Source offset.
    pub(crate) offset: i64,
    /// Event time; `None` for records that did not decode (released at once).
    pub(crate) time: Option<EventTime>,
    /// The record.
    pub(crate) item: T,
}

#[derive(Debug)]
struct Lane<T> {
    queue: VecDeque<Pending<T>>,
    last_arrival: Instant,
    /// Offset after the last record received, if any.
    next_offset: Option<i64>,
    /// Committed offset at assignment: records below it are being replayed.
    floor: i64,
    /// Still replaying up to `floor` (until the consumer's position passes it).
    replaying: bool,
}

impl<T> Lane<T> {
    fn new(now: Instant) -> Self {
        Self { queue: VecDeque::new(), last_arrival: now, next_offset: None, floor: 0, replaying: false }
    }

    fn head_time(&self) -> Option<Option<EventTime>> {
        self.queue.front().map(|p| p.time)
    }

    /// A replaying lane is never idle: the records it still has to deliver
    /// were merged with the other lane in the committed run.
    fn idle(&self, now: Instant, idle: Duration) -> bool {
        !self.replaying && self.queue.is_empty() && now.duration_since(self.last_arrival) >= idle
    }

    /// The head is at or above the floor: new work, not replay.
    fn head_is_new(&self) -> bool {
        self.queue.front().is_some_and(|p| p.offset >= self.floor)
    }
}

#[derive(Debug)]
struct Pair<T> {
    clicks: Lane<T>,
    orders: Lane<T>,
}

impl<T> Pair<T> {
    fn lane(&mut self, source: Source) -> &mut Lane<T> {
        match source {
            Source::Clicks => &mut self.clicks,
            Source::Orders => &mut self.orders,
        }
    }
}

/// The merge buffer of one worker, over all its partitions.
#[derive(Debug)]
pub(crate) struct Merger<T> {
    pairs: BTreeMap<i32, Pair<T>>,
    idle: Duration,
}

impl<T> Merger<T> {
    pub(crate) fn new(idle: Duration) -> Self {
        Self { pairs: BTreeMap::new(), idle }
    }

    fn pair(&mut self, partition: i32, now: Instant) -> &mut Pair<T> {
        self.pairs.entry(partition).or_insert_with(|| Pair { clicks: Lane::new(now), orders: Lane::new(now) })
    }

    /// Starts tracking a partition (at assignment), so an empty lane is
    /// waited for from now on.
    pub(crate) fn open(&mut self, partition: i32, now: Instant) {
        self.pair(partition, now);
    }

    /// Sets a lane's committed offset at assignment; the lane replays until
    /// [`Merger::finish_replay`].
    pub(crate) fn set_floor(&mut self, source: Source, partition: i32, floor: i64) {
        let lane = self.pair(partition, Instant::now()).lane(source);
        lane.floor = floor;
        lane.replaying = floor > 0;
    }

    /// The lane has been read up to its floor.
    pub(crate) fn finish_replay(&mut self, source: Source, partition: i32) {
        if let Some(pair) = self.pairs.get_mut(&partition) {
            pair.lane(source).replaying = false;
        }
    }

    /// Forgets a partition (revoked): its buffered records are dropped; the
    /// next owner re-reads them from the committed offset.
    pub(crate) fn close(&mut self, partition: i32) {
        self.pairs.remove(&partition);
    }

    /// Buffers a record, in offset order per lane.
    pub(crate) fn push(&mut self, source: Source, partition: i32, record: Pending<T>, now: Instant) {
        let lane = self.pair(partition, now).lane(source);
        lane.last_arrival = now;
        lane.next_offset = Some(record.offset + 1);
        lane.queue.push_back(record);
    }

    /// Releases every record that can go now, in merge order, partition by
    /// partition.
    pub(crate) fn release(&mut self, now: Instant) -> Vec<(Source, i32, Pending<T>)> {
        let mut out = Vec::new();
        for (&partition, pair) in &mut self.pairs {
            loop {
                let pick = match (pair.clicks.head_time(), pair.orders.head_time()) {
                    // Undecodable records carry no time: release them as they come up.
                    (Some(None), _) => Source::Clicks,
                    (_, Some(None)) => Source::Orders,
                    (Some(Some(c)), Some(Some(o))) => {
                        if o < c {
                            Source::Orders
                        } else {
                            Source::Clicks
                        }
                    }
                    (Some(_), None) if pair.orders.idle(now, self.idle) => Source::Clicks,
                    (None, Some(_)) if pair.clicks.idle(now, self.idle) => Source::Orders,
                    _ => break,
                };
                // After a restart the committed prefix of both lanes replays
                // first, so new records merge against the same history.
                let other = match pick {
                    Source::Clicks => &pair.orders,
                    Source::Orders => &pair.clicks,
                };
                if other.replaying && pair.lane(pick).head_is_new() {
                    break;
                }
                if let Some(p) = pair.lane(pick).queue.pop_front() {
                    out.push((pick, partition, p));
                }
            }
        }
        out
    }

    /// The offset to commit for a lane: its first unreleased record, or the
    /// offset after the last one received; `None` if nothing was received.
    pub(crate) fn commit_offset(&self, source: Source, partition: i32) -> Option<i64> {
        let pair = self.pairs.get(&partition)?;
        let lane = match source {
            Source::Clicks => &pair.clicks,
            Source::Orders => &pair.orders,
        };
        lane.queue.front().map(|p| p.offset).or(lane.next_offset)
    }

    /// Partitions whose two lanes have received nothing for `quiet` and hold
    /// nothing (neither replaying): their stream time is stuck.
    pub(crate) fn quiet_partitions(&self, now: Instant, quiet: Duration) -> impl Iterator<Item = i32> + '_ {
        self.pairs
            .iter()
            .filter(move |(_, pair)| pair.clicks.idle(now, quiet) && pair.orders.idle(now, quiet))
            .map(|(partition, _)| *partition)
    }

    /// Partitions tracked now.
    pub(crate) fn partitions(&self) -> impl Iterator<Item = i32> + '_ {
        self.pairs.keys().copied()
    }

    /// Records buffered and not yet released.
    pub(crate) fn buffered(&self) -> usize {
        self.pairs.values().map(|p| p.clicks.queue.len() + p.orders.queue.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(offset: i64, t: Option<i64>) -> Pending<&'static str> {
        Pending { offset, time: t.map(EventTime::from_millis), item: "" }
    }

    fn order_of(released: &[(Source, i32, Pending<&'static str>)]) -> Vec<(Source, i64)> {
        released.iter().map(|(s, _, p)| (*s, p.offset)).collect()
    }

    #[test]
    fn heads_are_released_in_event_time_order_with_clicks_first_on_ties() {
        let now = Instant::now();
        let mut m = Merger::new(Duration::from_millis(500));
        for (o, t) in [(0, 10), (1, 20), (2, 30)] {
            m.push(Source::Clicks, 0, rec(o, Some(t)), now);
        }
        for (o, t) in [(0, 5), (1, 20), (2, 40)] {
            m.push(Source::Orders, 0, rec(o, Some(t)), now);
        }
        let out = m.release(now);
        // The last order (t=40) waits: clicks may still bring something earlier.
        assert_eq!(
            order_of(&out),
            vec![
                (Source::Orders, 0),
                (Source::Clicks, 0),
                (Source::Clicks, 1),
                (Source::Orders, 1),
                (Source::Clicks, 2),
            ]
        );
        assert_eq!(m.commit_offset(Source::Orders, 0), Some(2));
        assert_eq!(m.commit_offset(Source::Clicks, 0), Some(3));
        // Once clicks have been quiet for the idle timeout, the order goes.
        let later = now + Duration::from_millis(600);
        assert_eq!(order_of(&m.release(later)), vec![(Source::Orders, 2)]);
        assert_eq!(m.commit_offset(Source::Orders, 0), Some(3));
    }

    #[test]
    fn undecodable_records_do_not_wait_for_the_other_lane() {
        let now = Instant::now();
        let mut m = Merger::new(Duration::from_secs(60));
        m.push(Source::Orders, 3, rec(7, None), now);
        m.push(Source::Orders, 3, rec(8, Some(50)), now);
        assert_eq!(order_of(&m.release(now)), vec![(Source::Orders, 7)]);
        assert_eq!(m.commit_offset(Source::Orders, 3), Some(8));
        assert_eq!(m.buffered(), 1);
    }

    #[test]
    fn a_fresh_partition_waits_for_its_quiet_lane_from_assignment_time() {
        let now = Instant::now();
        let mut m = Merger::new(Duration::from_millis(100));
        m.open(1, now);
        m.push(Source::Clicks, 1, rec(0, Some(1)), now);
        assert!(m.release(now + Duration::from_millis(50)).is_empty());
        assert_eq!(m.release(now + Duration::from_millis(150)).len(), 1);
    }

    #[test]
    fn new_records_wait_until_the_other_lane_has_replayed_its_committed_prefix() {
        let now = Instant::now();
        let mut m = Merger::new(Duration::from_millis(10));
        m.set_floor(Source::Clicks, 0, 1);
        m.set_floor(Source::Orders, 0, 1);
        m.push(Source::Clicks, 0, rec(0, Some(1)), now);
        m.push(Source::Clicks, 0, rec(1, Some(2)), now);
        // Orders have not delivered their committed prefix: even long idle, nothing new goes.
        let later = now + Duration::from_secs(5);
        assert!(m.release(later).is_empty());
        m.push(Source::Orders, 0, rec(0, Some(3)), later);
        m.finish_replay(Source::Orders, 0);
        m.finish_replay(Source::Clicks, 0);
        let out = m.release(later + Duration::from_millis(20));
        assert_eq!(order_of(&out), vec![(Source::Clicks, 0), (Source::Clicks, 1), (Source::Orders, 0)]);
    }

    #[test]
    fn a_partition_is_quiet_once_both_lanes_are_empty_for_the_timeout() {
        let mut m = Merger::new(Duration::from_millis(10));
        let t0 = Instant::now();
        m.open(0, t0);
        m.open(1, t0);
        m.push(Source::Clicks, 1, rec(0, Some(5)), t0 + Duration::from_secs(5));
        let quiet: Vec<i32> =
            m.quiet_partitions(t0 + Duration::from_secs(6), Duration::from_secs(2)).collect();
        assert_eq!(quiet, [0], "partition 1 holds a record");
        m.release(t0 + Duration::from_secs(6));
        let quiet: Vec<i32> =
            m.quiet_partitions(t0 + Duration::from_secs(6), Duration::from_secs(2)).collect();
        assert_eq!(quiet, [0], "partition 1 received one a second ago");
    }

    #[test]
    fn closing_a_partition_forgets_its_records() {
        let now = Instant::now();
        let mut m = Merger::new(Duration::from_millis(100));
        m.push(Source::Clicks, 1, rec(0, Some(1)), now);
        m.close(1);
        assert_eq!(m.commit_offset(Source::Clicks, 1), None);
        assert_eq!(m.partitions().count(), 0);
    }
}
