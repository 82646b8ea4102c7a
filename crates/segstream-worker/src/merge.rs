//! Event-time merge of co-partitioned inputs, as a function of their content.
//!
//! Partition *i* of `clickstream` and partition *i* of `orders` hold the same
//! customers. Their records are released to the state in event-time order:
//! the heads of the two lanes are compared and the earlier goes first (clicks
//! on ties). A lane with nothing buffered holds the other back until it is
//! known to be at the end of its log (the consumer said so): a slow fetch
//! never counts as idle, so while a partition has a backlog the order is
//! decided by the records alone (the rule of Kafka Streams' task idling since
//! KIP-695).
//!
//! At the live tail, releasing a lane alone because the other is at its end
//! is a decision that depends on timing: the merge records it as a
//! [`Decision`] at the point it was taken ([`Positions`]). The pipeline
//! commits these with the outputs; whoever rebuilds the partition later hands
//! them back ([`Merger::open`]) and the merge repeats them at the same
//! points, so the rebuilt state is the state that produced the committed
//! outputs. The same holds for a quiet partition following the input's
//! watermark, which the merge returns as a [`Step::Follow`] in its place,
//! and for a mass firing of timers split into steps ([`Step::Fire`]): a
//! record whose time would fire more timers than a step may is held back
//! while the timers fire part by part, each part a decision of its own, so
//! commits (and checkpoints) can stand between the parts.
//!
//! Within a lane, release follows offset order, so "every record below the
//! first unreleased offset is processed" always holds: that offset is what
//! the pipeline commits.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use segstream_events::{Decision, DecisionAction, EventTime, Lane, Positions};

/// A buffered input record.
#[derive(Debug)]
pub(crate) struct Pending<T> {
    /// Source offset.
    pub(crate) offset: i64,
    /// Event time; `None` for records that only pass through (dead letters,
    /// events a warm start already holds): released as soon as they are a head.
    pub(crate) time: Option<EventTime>,
    /// The record.
    pub(crate) item: T,
}

/// What the merge releases, in order, per partition.
#[derive(Debug)]
pub(crate) enum Step<T> {
    /// A record of `lane`.
    Record(Lane, Pending<T>),
    /// A committed decision says the partition's stream time moved up to
    /// this time here.
    Follow(EventTime),
    /// A part of a mass firing happens here, before the next record: the
    /// partition's next `count` timers due up to `up_to` fire. Taken now
    /// (`scripted` false, recorded) or repeated from a committed decision.
    Fire {
        /// The due time up to which timers fire.
        up_to: EventTime,
        /// How many fire at most.
        count: i64,
        /// Repeated from the committed decisions (its outputs are committed).
        scripted: bool,
    },
    /// A committed decision says these segment definitions came into force
    /// here.
    Definitions {
        /// Their version.
        version: i32,
        /// The definitions file.
        text: std::sync::Arc<str>,
    },
    /// A committed decision says this trained model came into force here.
    Model {
        /// Its version.
        version: i64,
        /// The segment-models record.
        record: std::sync::Arc<[u8]>,
    },
}

/// Asked before a record of this time (of this lane, at this offset) is
/// released live: `Some((up_to, count))` if it would fire too many timers,
/// of which `count` due up to `up_to` then fire first. Not asked while the
/// partition repeats committed decisions.
pub(crate) type Gate<'a> = &'a dyn Fn(i32, EventTime, Lane, i64) -> Option<(EventTime, i64)>;

/// The committed decisions do not fit the input: the partition cannot be
/// rebuilt as it was.
#[derive(Debug, thiserror::Error)]
#[error(
    "partition {partition}: the decision log does not fit the input ({problem}); the topics or the decisions topic changed under the committed offsets"
)]
pub(crate) struct Divergence {
    /// The partition.
    pub(crate) partition: i32,
    /// What did not fit.
    pub(crate) problem: String,
}

#[derive(Debug)]
struct LaneBuffer<T> {
    queue: VecDeque<Pending<T>>,
    /// Offset after the last record released (the start offset before any).
    position: i64,
    /// Offset after the last record received, if any since opening.
    received: Option<i64>,
    /// Where the consumer was told to start reading.
    fetch_from: i64,
    /// Known to be at the end of its log since then, nothing received after.
    end_since: Option<Instant>,
}

impl<T> LaneBuffer<T> {
    fn new(position: i64, fetch_from: i64) -> Self {
        Self { queue: VecDeque::new(), position, received: None, fetch_from, end_since: None }
    }

    fn head_time(&self) -> Option<Option<EventTime>> {
        self.queue.front().map(|p| p.time)
    }

    /// Empty and at the end of its log for at least `idle`.
    fn exhausted(&self, now: Instant, idle: Duration) -> bool {
        self.queue.is_empty() && self.end_since.is_some_and(|since| now.duration_since(since) >= idle)
    }
}

#[derive(Debug)]
struct Pair<T> {
    clicks: LaneBuffer<T>,
    orders: LaneBuffer<T>,
    /// Committed decisions still to repeat, in order.
    script: VecDeque<Decision>,
    /// A committed release-alone being repeated: the lane and where it ends.
    repeating: Option<(Lane, i64)>,
    /// Decisions taken since they were last taken out (to commit).
    taken: Vec<Decision>,
    /// Kept but not owned (revoked, maybe handed back): nothing moves.
    frozen: bool,
}

impl<T> Pair<T> {
    fn lane(&mut self, lane: Lane) -> &mut LaneBuffer<T> {
        match lane {
            Lane::Clicks => &mut self.clicks,
            Lane::Orders => &mut self.orders,
        }
    }

    fn lane_ref(&self, lane: Lane) -> &LaneBuffer<T> {
        match lane {
            Lane::Clicks => &self.clicks,
            Lane::Orders => &self.orders,
        }
    }

    fn positions(&self) -> Positions {
        Positions { clicks: self.clicks.position, orders: self.orders.position }
    }

    /// Still repeating committed decisions.
    fn scripted(&self) -> bool {
        !self.script.is_empty() || self.repeating.is_some()
    }

    fn pop(&mut self, lane: Lane) -> Option<Pending<T>> {
        let buffer = self.lane(lane);
        let p = buffer.queue.pop_front()?;
        buffer.position = p.offset + 1;
        Some(p)
    }

    /// Records that `lane` goes alone from here to its position after the
    /// next release, extending the previous decision if it is the same run.
    fn note_alone(&mut self, lane: Lane, at: Positions, until: i64) {
        if let Some(Decision { action: DecisionAction::Alone { lane: l, until: u }, .. }) =
            self.taken.last_mut()
            && *l == lane
            && *u == at.of(lane)
        {
            *u = until;
            return;
        }
        self.taken.push(Decision { at, action: DecisionAction::Alone { lane, until } });
    }

    /// A record of `lane` goes next, live: unless the gate holds it back
    /// for a part of a mass firing (recorded here), after which this
    /// partition releases nothing more in this call (the gate is asked
    /// again once that part has fired). False if held back.
    fn pass_gate(
        &mut self,
        partition: i32,
        lane: Lane,
        gate: Gate<'_>,
        out: &mut Vec<(i32, Step<T>)>,
    ) -> bool {
        if self.scripted() {
            return true;
        }
        let Some(head) = self.lane_ref(lane).queue.front() else { return true };
        let (Some(time), offset) = (head.time, head.offset) else { return true };
        let Some((up_to, count)) = gate(partition, time, lane, offset) else { return true };
        let at = self.positions();
        self.taken.push(Decision { at, action: DecisionAction::Fire { up_to, count } });
        out.push((partition, Step::Fire { up_to, count, scripted: false }));
        false
    }

    /// Releases what can go now into `out`, until `out` holds `limit` steps.
    fn release(
        &mut self,
        partition: i32,
        now: Instant,
        idle: Duration,
        gate: Gate<'_>,
        out: &mut Vec<(i32, Step<T>)>,
        limit: usize,
    ) -> Result<(), Divergence> {
        let diverged = |problem: String| Divergence { partition, problem };
        loop {
            if out.len() >= limit {
                return Ok(());
            }
            if let Some((lane, until)) = self.repeating {
                let buffer = self.lane(lane);
                if buffer.position >= until {
                    self.repeating = None;
                    continue;
                }
                match buffer.queue.front() {
                    None => return Ok(()),
                    Some(head) if head.offset >= until => {
                        return Err(diverged(format!(
                            "{} was released alone up to offset {until}, the next record is at {}",
                            lane.as_str(),
                            head.offset
                        )));
                    }
                    Some(_) => {}
                }
                if let Some(p) = self.pop(lane) {
                    out.push((partition, Step::Record(lane, p)));
                }
                continue;
            }
            if let Some(next) = self.script.front().cloned() {
                let at = self.positions();
                if at == next.at {
                    self.script.pop_front();
                    match next.action {
                        DecisionAction::Alone { lane, until } => self.repeating = Some((lane, until)),
                        DecisionAction::Follow { stream_time } => {
                            out.push((partition, Step::Follow(stream_time)));
                        }
                        DecisionAction::Fire { up_to, count } => {
                            out.push((partition, Step::Fire { up_to, count, scripted: true }));
                        }
                        DecisionAction::Definitions { version, text } => {
                            out.push((partition, Step::Definitions { version, text }));
                        }
                        DecisionAction::Model { version, record } => {
                            out.push((partition, Step::Model { version, record }));
                        }
                    }
                    continue;
                }
                if at.passed(next.at) {
                    return Err(diverged(format!(
                        "the merge is at {at:?}, past a decision taken at {next:?}"
                    )));
                }
            }
            let (c, o) = (self.clicks.head_time(), self.orders.head_time());
            let pick = match (c, o) {
                (Some(None), _) => Lane::Clicks,
                (_, Some(None)) => Lane::Orders,
                (Some(Some(c)), Some(Some(o))) => {
                    if o < c {
                        Lane::Orders
                    } else {
                        Lane::Clicks
                    }
                }
                (Some(_), None) | (None, Some(_)) => {
                    let lane = if c.is_some() { Lane::Clicks } else { Lane::Orders };
                    if self.scripted() || !self.lane_ref(lane.other()).exhausted(now, idle) {
                        return Ok(());
                    }
                    if !self.pass_gate(partition, lane, gate, out) {
                        return Ok(());
                    }
                    let at = self.positions();
                    if let Some(p) = self.pop(lane) {
                        self.note_alone(lane, at, p.offset + 1);
                        out.push((partition, Step::Record(lane, p)));
                    }
                    continue;
                }
                (None, None) => return Ok(()),
            };
            if !self.pass_gate(partition, pick, gate, out) {
                return Ok(());
            }
            if let Some(p) = self.pop(pick) {
                out.push((partition, Step::Record(pick, p)));
            }
        }
    }
}

/// Where a partition's merge starts.
#[derive(Debug, Clone)]
pub(crate) struct Opening {
    /// Positions of the merge (the start offsets, when rebuilding from them).
    pub(crate) positions: Positions,
    /// Where the consumer reads each lane from.
    pub(crate) fetch_from: Positions,
    /// Committed decisions to repeat, in order.
    pub(crate) script: Vec<Decision>,
}

/// The merge buffer of one worker, over all its partitions.
#[derive(Debug)]
pub(crate) struct Merger<T> {
    pairs: BTreeMap<i32, Pair<T>>,
    /// How long a lane at the end of its log holds the other back.
    idle: Duration,
    /// The partition the next release starts with (turns, so a partition
    /// with a large backlog does not keep the others waiting).
    next_first: i32,
}

impl<T> Merger<T> {
    pub(crate) fn new(idle: Duration) -> Self {
        Self { pairs: BTreeMap::new(), idle, next_first: 0 }
    }

    /// Starts (or restarts) a partition; anything buffered for it is dropped.
    pub(crate) fn open(&mut self, partition: i32, opening: Opening) {
        let Opening { positions, fetch_from, script } = opening;
        self.pairs.insert(
            partition,
            Pair {
                clicks: LaneBuffer::new(positions.clicks, fetch_from.clicks),
                orders: LaneBuffer::new(positions.orders, fetch_from.orders),
                script: script.into(),
                repeating: None,
                taken: Vec::new(),
                frozen: false,
            },
        );
    }

    /// Keeps a partition as it is: nothing is released from it, it is never
    /// quiet, until [`Merger::reopen`].
    pub(crate) fn freeze(&mut self, partition: i32) {
        if let Some(pair) = self.pairs.get_mut(&partition) {
            pair.frozen = true;
        }
    }

    /// Keeps a partition's positions but drops what is buffered: the
    /// consumer reads again from `fetch_from` (the committed offsets).
    pub(crate) fn reopen(&mut self, partition: i32, fetch_from: Positions) {
        if let Some(pair) = self.pairs.get_mut(&partition) {
            for lane in Lane::BOTH {
                let buffer = pair.lane(lane);
                *buffer = LaneBuffer::new(buffer.position, fetch_from.of(lane));
            }
            pair.frozen = false;
        }
    }

    /// Forgets a partition.
    pub(crate) fn close(&mut self, partition: i32) {
        self.pairs.remove(&partition);
    }

    /// Buffers a record, in offset order per lane; the lane is no longer at
    /// its end.
    pub(crate) fn push(&mut self, lane: Lane, partition: i32, record: Pending<T>) {
        if let Some(pair) = self.pairs.get_mut(&partition) {
            let buffer = pair.lane(lane);
            buffer.received = Some(record.offset + 1);
            buffer.end_since = None;
            buffer.queue.push_back(record);
        }
    }

    /// The consumer reached the end of the lane's log: everything in it has
    /// been pushed.
    pub(crate) fn mark_end(&mut self, lane: Lane, partition: i32, now: Instant) {
        if let Some(pair) = self.pairs.get_mut(&partition) {
            pair.lane(lane).end_since.get_or_insert(now);
        }
    }

    /// Releases the records (and committed follows) that can go now, in
    /// merge order, partition by partition, at most `budget` of them: a
    /// large backlog is worked off over several calls (and transactions).
    /// The order within a partition does not depend on the budget. `gate`
    /// is asked before each live record with an event time.
    pub(crate) fn release(
        &mut self,
        now: Instant,
        budget: usize,
        gate: Gate<'_>,
    ) -> Result<Vec<(i32, Step<T>)>, Divergence> {
        let mut out = Vec::new();
        let first = self.next_first;
        let (later, earlier): (Vec<_>, Vec<_>) =
            self.pairs.iter_mut().filter(|(_, pair)| !pair.frozen).partition(|(p, _)| **p >= first);
        for (&partition, pair) in later.into_iter().chain(earlier) {
            if out.len() >= budget {
                self.next_first = partition;
                return Ok(out);
            }
            pair.release(partition, now, self.idle, gate, &mut out, budget)?;
        }
        self.next_first = 0;
        Ok(out)
    }

    /// Records buffered in one lane.
    pub(crate) fn backlog(&self, lane: Lane, partition: i32) -> usize {
        self.pairs.get(&partition).map_or(0, |pair| pair.lane_ref(lane).queue.len())
    }

    /// Records a decision taken here outside the merge (a quiet partition
    /// following the input's watermark, or a part of that firing).
    pub(crate) fn note(&mut self, partition: i32, action: DecisionAction) {
        if let Some(pair) = self.pairs.get_mut(&partition) {
            let at = pair.positions();
            pair.taken.push(Decision { at, action });
        }
    }

    /// The decisions taken since the last call, per partition (to commit).
    pub(crate) fn take_decisions(&mut self) -> Vec<(i32, Vec<Decision>)> {
        self.pairs
            .iter_mut()
            .filter(|(_, pair)| !pair.taken.is_empty())
            .map(|(p, pair)| (*p, std::mem::take(&mut pair.taken)))
            .collect()
    }

    /// The offset of the record a lane is to receive next: the one after
    /// the last one received, or where reading started.
    pub(crate) fn expected(&self, lane: Lane, partition: i32) -> Option<i64> {
        let buffer = self.pairs.get(&partition)?.lane_ref(lane);
        Some(buffer.received.unwrap_or(buffer.fetch_from))
    }

    /// The offset to commit for a lane: its first unreleased record, or the
    /// offset after the last one received, or where reading started.
    pub(crate) fn commit_offset(&self, lane: Lane, partition: i32) -> Option<i64> {
        let buffer = self.pairs.get(&partition)?.lane_ref(lane);
        Some(buffer.queue.front().map(|p| p.offset).or(buffer.received).unwrap_or(buffer.fetch_from))
    }

    /// True once the lane has released everything below `offset` (or is at
    /// the end of its log, so nothing below it is left to come).
    pub(crate) fn reached(&self, lane: Lane, partition: i32, offset: i64) -> bool {
        self.pairs.get(&partition).is_some_and(|pair| {
            let buffer = pair.lane_ref(lane);
            buffer.position >= offset
                || buffer.queue.front().is_some_and(|p| p.offset >= offset)
                || (buffer.queue.is_empty() && buffer.end_since.is_some())
        })
    }

    /// True while the partition still repeats committed decisions.
    pub(crate) fn scripted(&self, partition: i32) -> bool {
        self.pairs.get(&partition).is_some_and(Pair::scripted)
    }

    /// Where the merge of a partition stands.
    pub(crate) fn positions(&self, partition: i32) -> Option<Positions> {
        self.pairs.get(&partition).map(Pair::positions)
    }

    /// Partitions whose two lanes have been at the end of their logs, with
    /// nothing buffered, for at least `quiet`, and repeat nothing.
    pub(crate) fn quiet_partitions(&self, now: Instant, quiet: Duration) -> Vec<i32> {
        self.pairs
            .iter()
            .filter(|(_, pair)| {
                !pair.frozen
                    && !pair.scripted()
                    && pair.clicks.exhausted(now, quiet)
                    && pair.orders.exhausted(now, quiet)
            })
            .map(|(partition, _)| *partition)
            .collect()
    }

    /// Records buffered and not yet released.
    pub(crate) fn buffered(&self) -> usize {
        self.pairs.values().map(|p| p.clicks.queue.len() + p.orders.queue.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(offset: i64, t: Option<i64>) -> Pending<()> {
        Pending { offset, time: t.map(EventTime::from_millis), item: () }
    }

    const NO_GATE: Gate<'static> = &|_, _, _, _| None;

    fn at(clicks: i64, orders: i64) -> Positions {
        Positions { clicks, orders }
    }

    fn fresh(m: &mut Merger<()>, partition: i32, script: Vec<Decision>) {
        m.open(partition, Opening { positions: at(0, 0), fetch_from: at(0, 0), script });
    }

    fn order_of(released: &[(i32, Step<()>)]) -> Vec<(Lane, i64)> {
        released
            .iter()
            .filter_map(|(_, s)| match s {
                Step::Record(lane, p) => Some((*lane, p.offset)),
                Step::Follow(_) | Step::Fire { .. } | Step::Definitions { .. } | Step::Model { .. } => None,
            })
            .collect()
    }

    fn push_all(m: &mut Merger<()>, lane: Lane, records: &[(i64, i64)]) {
        for &(o, t) in records {
            m.push(lane, 0, rec(o, Some(t)));
        }
    }

    #[test]
    fn heads_are_released_in_event_time_order_with_clicks_first_on_ties() {
        let now = Instant::now();
        let mut m = Merger::new(Duration::ZERO);
        fresh(&mut m, 0, vec![]);
        push_all(&mut m, Lane::Clicks, &[(0, 10), (1, 20), (2, 30)]);
        push_all(&mut m, Lane::Orders, &[(0, 5), (1, 20), (2, 40)]);
        let out = m.release(now, usize::MAX, NO_GATE).expect("release");
        // The last order (t=40) waits: clicks may still bring something earlier.
        assert_eq!(
            order_of(&out),
            vec![
                (Lane::Orders, 0),
                (Lane::Clicks, 0),
                (Lane::Clicks, 1),
                (Lane::Orders, 1),
                (Lane::Clicks, 2),
            ]
        );
        assert_eq!(m.commit_offset(Lane::Orders, 0), Some(2));
        assert_eq!(m.commit_offset(Lane::Clicks, 0), Some(3));
        assert!(m.take_decisions().is_empty(), "nothing depended on timing");
    }

    #[test]
    fn an_empty_lane_that_is_not_at_its_end_holds_the_other_back_however_long() {
        let now = Instant::now();
        let mut m = Merger::new(Duration::ZERO);
        fresh(&mut m, 0, vec![]);
        push_all(&mut m, Lane::Orders, &[(0, 5)]);
        assert!(m.release(now + Duration::from_secs(3600), usize::MAX, NO_GATE).expect("release").is_empty());
        m.mark_end(Lane::Clicks, 0, now);
        assert_eq!(order_of(&m.release(now, usize::MAX, NO_GATE).expect("release")), vec![(Lane::Orders, 0)]);
        assert_eq!(
            m.take_decisions(),
            vec![(
                0,
                vec![Decision {
                    at: at(0, 0),
                    action: DecisionAction::Alone { lane: Lane::Orders, until: 1 }
                }]
            )]
        );
    }

    #[test]
    fn a_lane_at_its_end_holds_the_other_back_for_the_idle_time_only() {
        let now = Instant::now();
        let mut m = Merger::new(Duration::from_millis(100));
        fresh(&mut m, 0, vec![]);
        m.mark_end(Lane::Clicks, 0, now);
        push_all(&mut m, Lane::Orders, &[(0, 5)]);
        assert!(m.release(now + Duration::from_millis(50), usize::MAX, NO_GATE).expect("release").is_empty());
        assert_eq!(
            m.release(now + Duration::from_millis(100), usize::MAX, NO_GATE).expect("release").len(),
            1
        );
    }

    #[test]
    fn a_record_received_after_the_end_makes_the_lane_wait_again() {
        let now = Instant::now();
        let mut m = Merger::new(Duration::ZERO);
        fresh(&mut m, 0, vec![]);
        m.mark_end(Lane::Clicks, 0, now);
        m.push(Lane::Clicks, 0, rec(0, Some(50)));
        push_all(&mut m, Lane::Orders, &[(0, 5), (1, 60)]);
        // Order 0 goes by time; order 1 waits behind click 0, then click 0
        // goes; now clicks are empty but no longer known at their end.
        assert_eq!(
            order_of(&m.release(now, usize::MAX, NO_GATE).expect("release")),
            vec![(Lane::Orders, 0), (Lane::Clicks, 0)]
        );
        assert_eq!(m.buffered(), 1);
    }

    #[test]
    fn consecutive_releases_alone_are_one_decision() {
        let now = Instant::now();
        let mut m = Merger::new(Duration::ZERO);
        fresh(&mut m, 0, vec![]);
        m.mark_end(Lane::Orders, 0, now);
        push_all(&mut m, Lane::Clicks, &[(0, 1), (1, 2)]);
        m.release(now, usize::MAX, NO_GATE).expect("release");
        push_all(&mut m, Lane::Clicks, &[(2, 3)]);
        m.release(now, usize::MAX, NO_GATE).expect("release");
        let decisions = m.take_decisions();
        assert_eq!(
            decisions,
            vec![(
                0,
                vec![Decision {
                    at: at(0, 0),
                    action: DecisionAction::Alone { lane: Lane::Clicks, until: 3 }
                }]
            )]
        );
    }

    /// Live: orders arrive while clicks are at their end; a click older than
    /// them arrives afterwards. A rebuild that has every record at once and
    /// the decisions repeats the live order, not the event-time order.
    #[test]
    fn a_rebuild_with_the_committed_decisions_repeats_the_live_order() {
        let now = Instant::now();
        let mut live = Merger::new(Duration::ZERO);
        fresh(&mut live, 0, vec![]);
        push_all(&mut live, Lane::Clicks, &[(0, 10)]);
        push_all(&mut live, Lane::Orders, &[(0, 20), (1, 30)]);
        let mut live_order = order_of(&live.release(now, usize::MAX, NO_GATE).expect("release"));
        live.mark_end(Lane::Clicks, 0, now);
        live_order.extend(order_of(&live.release(now, usize::MAX, NO_GATE).expect("release")));
        push_all(&mut live, Lane::Clicks, &[(1, 15), (2, 40)]);
        live.note(0, DecisionAction::Follow { stream_time: EventTime::from_millis(99) });
        live_order.extend(order_of(&live.release(now, usize::MAX, NO_GATE).expect("release")));
        live.mark_end(Lane::Orders, 0, now);
        live_order.extend(order_of(&live.release(now, usize::MAX, NO_GATE).expect("release")));
        let script: Vec<Decision> = live.take_decisions().into_iter().flat_map(|(_, d)| d).collect();
        assert_eq!(script.len(), 3, "{script:?}");

        let mut rebuilt = Merger::new(Duration::ZERO);
        fresh(&mut rebuilt, 0, script);
        push_all(&mut rebuilt, Lane::Clicks, &[(0, 10), (1, 15), (2, 40)]);
        push_all(&mut rebuilt, Lane::Orders, &[(0, 20), (1, 30)]);
        rebuilt.mark_end(Lane::Clicks, 0, now);
        rebuilt.mark_end(Lane::Orders, 0, now);
        let out = rebuilt.release(now, usize::MAX, NO_GATE).expect("release");
        assert_eq!(order_of(&out), live_order);
        assert_eq!(
            live_order,
            vec![
                (Lane::Clicks, 0),
                (Lane::Orders, 0),
                (Lane::Orders, 1),
                (Lane::Clicks, 1),
                (Lane::Clicks, 2)
            ]
        );
        let follow = out.iter().position(|(_, s)| matches!(s, Step::Follow(t) if t.millis() == 99));
        assert_eq!(follow, Some(3), "the follow comes back where it was taken: {out:?}");
        assert!(rebuilt.take_decisions().is_empty(), "a rebuild takes no decision of its own");
    }

    /// Live, the gate holds the record at time 50 back twice (two parts of
    /// a mass firing) and lets it go the third time; the parts are decisions
    /// at the record's position. A rebuild repeats them there without
    /// asking the gate.
    #[test]
    fn a_record_held_back_for_a_mass_firing_waits_for_its_parts_and_a_rebuild_repeats_them() {
        let now = Instant::now();
        let mut live = Merger::new(Duration::ZERO);
        fresh(&mut live, 0, vec![]);
        push_all(&mut live, Lane::Clicks, &[(0, 10), (1, 50), (2, 70)]);
        push_all(&mut live, Lane::Orders, &[(0, 60)]);
        let parts = std::cell::Cell::new(0);
        let gate = |_: i32, t: EventTime, _: Lane, _: i64| {
            (t.millis() == 50 && parts.get() < 2).then(|| {
                parts.set(parts.get() + 1);
                (EventTime::from_millis(parts.get() * 10), 5)
            })
        };
        let mut steps = Vec::new();
        for _ in 0..4 {
            steps.extend(live.release(now, usize::MAX, &gate).expect("release"));
        }
        let shape: Vec<String> = steps
            .iter()
            .map(|(_, s)| match s {
                Step::Record(lane, p) => format!("{}{}", lane.as_str(), p.offset),
                Step::Fire { up_to, scripted, .. } => {
                    format!("fire{}{}", up_to.millis(), if *scripted { "s" } else { "" })
                }
                Step::Follow(t) => format!("follow{}", t.millis()),
                Step::Definitions { version, .. } => format!("definitions{version}"),
                Step::Model { version, .. } => format!("model{version}"),
            })
            .collect();
        assert_eq!(shape, ["clicks0", "fire10", "fire20", "clicks1", "orders0"]);
        let script: Vec<Decision> = live.take_decisions().into_iter().flat_map(|(_, d)| d).collect();
        assert_eq!(
            script,
            [10, 20].map(|t| Decision {
                at: at(1, 0),
                action: DecisionAction::Fire { up_to: EventTime::from_millis(t), count: 5 }
            })
        );

        let mut rebuilt = Merger::new(Duration::ZERO);
        fresh(&mut rebuilt, 0, script);
        push_all(&mut rebuilt, Lane::Clicks, &[(0, 10), (1, 50), (2, 70)]);
        push_all(&mut rebuilt, Lane::Orders, &[(0, 60)]);
        let out = rebuilt.release(now, usize::MAX, NO_GATE).expect("release");
        let fires: Vec<(usize, i64, bool)> = out
            .iter()
            .enumerate()
            .filter_map(|(i, (_, s))| match s {
                Step::Fire { up_to, scripted, .. } => Some((i, up_to.millis(), *scripted)),
                _ => None,
            })
            .collect();
        assert_eq!(fires, [(1, 10, true), (2, 20, true)], "{out:?}");
        assert_eq!(order_of(&out), [(Lane::Clicks, 0), (Lane::Clicks, 1), (Lane::Orders, 0)]);
    }

    #[test]
    fn the_gate_is_not_asked_while_a_rebuild_repeats_its_script_and_is_asked_right_after() {
        let now = Instant::now();
        let script = [10, 20].map(|t| Decision {
            at: at(1, 0),
            action: DecisionAction::Fire { up_to: EventTime::from_millis(t), count: 5 },
        });
        let mut rebuilt = Merger::new(Duration::ZERO);
        fresh(&mut rebuilt, 0, script.to_vec());
        push_all(&mut rebuilt, Lane::Clicks, &[(0, 10), (1, 50), (2, 70)]);
        push_all(&mut rebuilt, Lane::Orders, &[(0, 60)]);
        let asked = std::cell::RefCell::new(Vec::new());
        let gate = |_: i32, _: EventTime, lane: Lane, offset: i64| {
            asked.borrow_mut().push((lane, offset));
            None
        };
        let out = rebuilt.release(now, usize::MAX, &gate).expect("release");
        // (clicks 2 waits for the orders lane, which is not at its end.)
        assert_eq!(order_of(&out), [(Lane::Clicks, 0), (Lane::Clicks, 1), (Lane::Orders, 0)]);
        // Not for the record before the script's parts; for every one after,
        // in the same release.
        assert_eq!(*asked.borrow(), [(Lane::Clicks, 1), (Lane::Orders, 0)]);
    }

    #[test]
    fn a_definitions_decision_is_repeated_where_it_was_taken_even_before_any_record() {
        let now = Instant::now();
        let definitions =
            |version| DecisionAction::Definitions { version, text: format!("version = {version}").into() };
        let script = vec![
            Decision { at: at(0, 0), action: definitions(1) },
            Decision { at: at(1, 1), action: definitions(2) },
        ];
        let mut m = Merger::new(Duration::ZERO);
        fresh(&mut m, 0, script);
        let first = m.release(now, usize::MAX, NO_GATE).expect("release");
        assert!(matches!(first.as_slice(), [(0, Step::Definitions { version: 1, .. })]), "{first:?}");
        push_all(&mut m, Lane::Clicks, &[(0, 10), (1, 50)]);
        push_all(&mut m, Lane::Orders, &[(0, 20), (1, 60)]);
        let out = m.release(now, usize::MAX, NO_GATE).expect("release");
        let at = out.iter().position(|(_, s)| matches!(s, Step::Definitions { version: 2, .. }));
        assert_eq!(at, Some(2), "after clicks 0 and orders 0: {out:?}");
        assert_eq!(order_of(&out), [(Lane::Clicks, 0), (Lane::Orders, 0), (Lane::Clicks, 1)]);
    }

    #[test]
    fn a_rebuild_waits_for_the_records_a_decision_names() {
        let now = Instant::now();
        let script =
            vec![Decision { at: at(0, 0), action: DecisionAction::Alone { lane: Lane::Orders, until: 2 } }];
        let mut m = Merger::new(Duration::ZERO);
        fresh(&mut m, 0, script);
        push_all(&mut m, Lane::Clicks, &[(0, 1)]);
        push_all(&mut m, Lane::Orders, &[(0, 50)]);
        assert_eq!(order_of(&m.release(now, usize::MAX, NO_GATE).expect("release")), vec![(Lane::Orders, 0)]);
        assert!(m.scripted(0));
        push_all(&mut m, Lane::Orders, &[(1, 60)]);
        assert_eq!(order_of(&m.release(now, usize::MAX, NO_GATE).expect("release")), vec![(Lane::Orders, 1)]);
        assert!(!m.scripted(0), "done repeating: click 0 now waits for orders as usual");
    }

    #[test]
    fn a_decision_the_merge_cannot_reach_is_a_divergence() {
        let now = Instant::now();
        let script =
            vec![Decision { at: at(0, 1), action: DecisionAction::Alone { lane: Lane::Clicks, until: 2 } }];
        let mut m = Merger::new(Duration::ZERO);
        fresh(&mut m, 0, script);
        push_all(&mut m, Lane::Clicks, &[(0, 1), (1, 2)]);
        push_all(&mut m, Lane::Orders, &[(0, 50)]);
        let e = m
            .release(now, usize::MAX, NO_GATE)
            .expect_err("clicks 0 goes first by time: the decision's point is passed");
        assert_eq!(e.partition, 0);
    }

    #[test]
    fn pass_through_records_do_not_wait_for_the_other_lane() {
        let now = Instant::now();
        let mut m = Merger::new(Duration::from_secs(60));
        fresh(&mut m, 3, vec![]);
        m.push(Lane::Orders, 3, rec(7, None));
        m.push(Lane::Orders, 3, rec(8, Some(50)));
        let out = m.release(now, usize::MAX, NO_GATE).expect("release");
        assert_eq!(out.len(), 1);
        assert_eq!(m.commit_offset(Lane::Orders, 3), Some(8));
    }

    #[test]
    fn a_partition_is_quiet_once_both_lanes_sit_at_their_end_for_the_timeout() {
        let t0 = Instant::now();
        let mut m = Merger::new(Duration::ZERO);
        fresh(&mut m, 0, vec![]);
        fresh(&mut m, 1, vec![]);
        for p in [0, 1] {
            m.mark_end(Lane::Clicks, p, t0);
            m.mark_end(Lane::Orders, p, t0);
        }
        m.push(Lane::Clicks, 1, rec(0, Some(5)));
        assert!(m.quiet_partitions(t0 + Duration::from_secs(1), Duration::from_secs(2)).is_empty());
        assert_eq!(m.quiet_partitions(t0 + Duration::from_secs(2), Duration::from_secs(2)), [0]);
    }

    #[test]
    fn a_budget_splits_a_release_without_changing_its_order_and_takes_partitions_in_turn() {
        let now = Instant::now();
        let (mut whole, mut split) = (Merger::new(Duration::ZERO), Merger::new(Duration::ZERO));
        for m in [&mut whole, &mut split] {
            for p in [0, 1] {
                fresh(m, p, vec![]);
                m.mark_end(Lane::Orders, p, now);
                for o in 0..5 {
                    m.push(Lane::Clicks, p, rec(o, Some(o)));
                }
            }
        }
        let steps = |v: &[(i32, Step<()>)]| -> Vec<(i32, i64)> {
            v.iter()
                .filter_map(|(p, s)| match s {
                    Step::Record(_, r) => Some((*p, r.offset)),
                    Step::Follow(_) | Step::Fire { .. } | Step::Definitions { .. } | Step::Model { .. } => {
                        None
                    }
                })
                .collect()
        };
        let all = steps(&whole.release(now, usize::MAX, NO_GATE).expect("release"));
        let mut calls = Vec::new();
        loop {
            let out = steps(&split.release(now, 3, NO_GATE).expect("release"));
            if out.is_empty() {
                break;
            }
            calls.push(out);
        }
        let partitions: Vec<Vec<i32>> = calls.iter().map(|c| c.iter().map(|(p, _)| *p).collect()).collect();
        assert_eq!(
            partitions,
            [vec![0, 0, 0], vec![1, 1, 1], vec![0, 0, 1], vec![1]],
            "partitions take turns"
        );
        let mut joined: Vec<(i32, i64)> = calls.concat();
        let mut all_sorted = all.clone();
        joined.sort_by_key(|(p, _)| *p);
        all_sorted.sort_by_key(|(p, _)| *p);
        assert_eq!(joined, all_sorted, "each partition's order is the same");
    }

    #[test]
    fn a_frozen_partition_releases_nothing_and_is_never_quiet_until_reopened() {
        let now = Instant::now();
        let mut m = Merger::new(Duration::ZERO);
        fresh(&mut m, 0, vec![]);
        m.mark_end(Lane::Orders, 0, now);
        m.mark_end(Lane::Clicks, 0, now);
        m.freeze(0);
        assert!(m.quiet_partitions(now, Duration::ZERO).is_empty());
        push_all(&mut m, Lane::Clicks, &[(0, 1)]);
        m.mark_end(Lane::Clicks, 0, now);
        assert!(
            m.release(now, usize::MAX, NO_GATE).expect("release").is_empty(),
            "what was buffered stays put"
        );
        m.reopen(0, at(0, 0));
        assert_eq!(
            m.quiet_partitions(now, Duration::ZERO),
            Vec::<i32>::new(),
            "the ends are not known again yet"
        );
        m.mark_end(Lane::Orders, 0, now);
        m.mark_end(Lane::Clicks, 0, now);
        assert_eq!(m.quiet_partitions(now, Duration::ZERO), [0]);
    }

    #[test]
    fn reopening_keeps_the_positions_and_reads_again_from_the_committed_offsets() {
        let now = Instant::now();
        let mut m = Merger::new(Duration::ZERO);
        fresh(&mut m, 0, vec![]);
        m.mark_end(Lane::Orders, 0, now);
        push_all(&mut m, Lane::Clicks, &[(0, 1), (1, 2)]);
        m.release(now, usize::MAX, NO_GATE).expect("release");
        m.reopen(0, at(2, 0));
        assert_eq!(m.positions(0), Some(at(2, 0)));
        assert_eq!(m.commit_offset(Lane::Clicks, 0), Some(2));
        assert!(
            m.release(now, usize::MAX, NO_GATE).expect("release").is_empty(),
            "the end of orders is not known any more"
        );
    }
}
