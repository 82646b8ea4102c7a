//! Rebalances and restores: commit (and checkpoint) before giving
//! partitions up, keep the state nobody else committed since, restore the
//! rest from their latest checkpoint (or the start of their logs) with the
//! decisions committed after it; refuse to build a state whose records are
//! gone.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use segstream_config::MissingHistory;
use segstream_events::{Lane, Positions};
use segstream_kafka::{Assignment, KafkaIoError, check_copartitioned};

use super::Pipeline;
use super::ownership::{Owned, parse_metadata};
use crate::checkpoint::PartitionState;
use crate::error::WorkerError;

/// More self-fences than this within [`REJOIN_WINDOW`] stop the worker.
const MAX_REJOINS: usize = 3;
const REJOIN_WINDOW: Duration = Duration::from_secs(600);

/// Where a partition's state comes from.
#[derive(Debug)]
enum Restore {
    /// A checkpoint, then the logs from `fetch_from`, repeating the
    /// decision records from `repeat_from` on.
    Checkpoint { state: Box<PartitionState>, fetch_from: Positions, repeat_from: i64 },
    /// The logs from `start`, repeating the decision records from
    /// `repeat_from` on.
    Logs { start: Positions, repeat_from: i64 },
    /// Nothing: the records the state needs are gone (the reason).
    Stop(String),
}

/// Offsets of both lanes, for messages.
fn show(p: Positions) -> String {
    format!("clickstream {}, orders {}", p.clicks, p.orders)
}

impl Pipeline {
    /// Brings every owned partition back to its committed state after an
    /// aborted transaction: rebuilt from the start of its logs.
    pub(super) fn restore_all(&mut self) -> Result<(), WorkerError> {
        self.progress.aborted(std::time::Instant::now());
        let partitions: Vec<i32> = self.owned.keys().copied().collect();
        self.forget_uncommitted();
        for &partition in &partitions {
            self.processor.close(partition);
        }
        self.owned.clear();
        tracing::warn!(?partitions, "rebuilding the partitions from their committed state");
        self.start(partitions)
    }

    pub(super) fn forget_uncommitted(&mut self) {
        self.touched.clear();
        self.erasures.forget_written();
        self.causes_ts.clear();
        self.dirty_since = None;
        self.processor.take_decisions();
    }

    pub(super) fn rebalance(&mut self, rebalance: Assignment) -> Result<(), WorkerError> {
        match rebalance {
            Assignment::Revoked { partitions, lost } => {
                let mine = self.clickstream_partitions(&partitions);
                let clean = self.give_up(&mine, lost)?;
                self.inputs.remove(&mine)?;
                if !clean && !self.owned.is_empty() {
                    // The aborted transaction held work of the partitions that stay too.
                    self.restore_all()?;
                }
            }
            Assignment::Assigned(partitions) => {
                let mine = self.clickstream_partitions(&partitions);
                self.check_partition_counts()?;
                for partition in &mine {
                    self.stopped.remove(partition);
                }
                self.start(mine)?;
                self.assigned = true;
            }
        }
        self.metrics.assigned_partitions.set(i64::try_from(self.owned.len()).unwrap_or(i64::MAX));
        self.update_readiness();
        Ok(())
    }

    /// Lets partition pairs go: what was done with them is committed while
    /// the generation is ours (unless `lost`), and a state exactly at its
    /// committed offsets is parked for a quick return. True if nothing
    /// uncommitted was dropped.
    fn give_up(&mut self, mine: &[i32], lost: bool) -> Result<bool, WorkerError> {
        let clean = if lost {
            let dirty = self.dirty_since.is_some() || self.outbox.is_open();
            self.outbox.abort()?;
            !dirty
        } else {
            self.commit()?
        };
        if clean && !lost {
            // The next owner restores from here instead of further back:
            // written before the partitions are let go (the group waits, as
            // for the commit).
            self.checkpoint(mine);
            if let Some(c) = &mut self.checkpoints {
                c.finish();
            }
        }
        self.forget_uncommitted();
        for partition in mine {
            self.stopped.remove(partition);
            let Some(owned) = self.owned.remove(partition) else { continue };
            if let Some(c) = &mut self.checkpoints {
                c.released(*partition);
            }
            // Only a state exactly at its committed offsets can be kept.
            if clean && !self.processor.rebuilding(*partition) {
                self.processor.freeze(*partition);
                self.parked.insert(*partition, owned);
            } else {
                self.processor.close(*partition);
            }
        }
        tracing::info!(revoked = ?mine, lost, kept = clean, "partitions revoked");
        Ok(clean)
    }

    /// The group consumer was fenced under this worker's instance id. A
    /// twin's producer fenced this one's transactional id before its
    /// consumer joined (a worker initialises transactions before it
    /// subscribes), so a producer that can still open a transaction means
    /// the consumer was fenced by its own earlier session (librdkafka
    /// rejoins after a session timeout of its own, for example while the
    /// coordinator restarts): the partitions count as lost, and a new
    /// consumer joins. A twin stops this worker.
    pub(super) fn member_fenced(&mut self) -> Result<(), WorkerError> {
        let group = self.inputs.group_metadata();
        let all: Vec<i32> = self.owned.keys().copied().collect();
        self.give_up(&all, true)?;
        if let Some(group) = group {
            let mut probe = TopicPartitionList::new();
            probe
                .add_partition_offset(self.inputs.lane_topic(Lane::Clicks), 0, Offset::Offset(0))
                .map_err(KafkaIoError::kafka("building the fence probe"))?;
            self.outbox.probe_fence(&probe, &group)?;
        }
        let now = Instant::now();
        self.rejoins.retain(|t| now.duration_since(*t) < REJOIN_WINDOW);
        self.rejoins.push(now);
        if self.rejoins.len() > MAX_REJOINS {
            // Not a twin by the producer, yet fenced again and again: stop
            // rather than take the group's partitions back and forth.
            return Err(WorkerError::DuplicateInstance {
                instance_id: self.config.instance_id(),
                seen_by: "group consumer",
            });
        }
        tracing::warn!(
            parked = ?self.parked.keys().collect::<Vec<_>>(),
            "the group consumer was fenced by its own earlier session (the producer was not: no twin); joining again"
        );
        self.metrics.rebalances.with_label_values(&["rejoin"]).inc();
        self.assigned = false;
        self.inputs.rejoin()?;
        self.metrics.assigned_partitions.set(0);
        self.update_readiness();
        Ok(())
    }

    fn clickstream_partitions(&self, partitions: &[(String, i32)]) -> Vec<i32> {
        partitions
            .iter()
            .filter(|(topic, _)| self.inputs.lane_of(topic) == Some(Lane::Clicks))
            .map(|(_, p)| *p)
            .collect()
    }

    /// Takes on partition pairs: kept state where nobody committed since
    /// this worker did, rebuilt from the start otherwise; then reads them.
    pub(super) fn start(&mut self, partitions: Vec<i32>) -> Result<(), WorkerError> {
        let committed = self.inputs.committed(&partitions)?;
        let mut from = BTreeMap::new();
        let (mut kept, mut rebuilt) = (Vec::new(), Vec::new());
        for partition in partitions {
            let c = committed.get(&partition).cloned().unwrap_or_default();
            let meta = c.metadata.as_deref().and_then(parse_metadata);
            let token = meta.as_ref().map(|(t, _)| t.clone());
            let parked = self.parked.remove(&partition);
            if let Some(parked) = parked
                && let Some(at) = parked.committed
                && parked.token.is_some()
                && parked.token == token
            {
                self.processor.reopen(partition, at);
                from.insert(partition, at);
                self.owned.insert(partition, parked);
                kept.push(partition);
                continue;
            }
            let (low, high) = self.inputs.watermarks(partition)?;
            let mut committed_at = match (c.clicks, c.orders) {
                (None, None) => None,
                (clicks, orders) => Some(Positions {
                    clicks: clicks.unwrap_or(low.clicks),
                    orders: orders.unwrap_or(low.orders),
                }),
            };
            if committed_at.is_some() && meta.is_none() {
                tracing::warn!(
                    partition,
                    "offsets were committed without segstream's metadata: rebuilding without recorded decisions"
                );
            }
            let count = meta.map_or(0, |(_, n)| n);
            let restore = self.plan_restore(partition, &mut committed_at, count, low, high)?;
            let (from_seq, at, decisions_at) = match &restore {
                Restore::Stop(why) => {
                    tracing::error!(partition, problem = %why, "partition stopped: its state cannot be built");
                    self.stopped.insert(partition, why.clone());
                    continue;
                }
                Restore::Checkpoint { state, fetch_from, repeat_from } => {
                    // The records after the checkpoint's lie past the end the decisions topic had then.
                    let decisions_at = (*repeat_from == state.decisions).then_some(state.decisions_offset);
                    (*repeat_from, *fetch_from, decisions_at)
                }
                Restore::Logs { start, repeat_from } => (*repeat_from, *start, None),
            };
            let script = self.decision_log.read(partition, from_seq, count, decisions_at)?;
            match restore {
                Restore::Checkpoint { state, fetch_from, .. } => {
                    tracing::info!(
                        partition,
                        checkpoint = %show(state.committed),
                        customers = state.customers.len(),
                        committed = ?committed_at,
                        decisions = script.len(),
                        "restoring from a checkpoint, then the logs up to the committed offsets"
                    );
                    self.processor.restore(*state, fetch_from, committed_at, script)?;
                }
                Restore::Logs { start, .. } => {
                    tracing::info!(
                        partition,
                        ?committed_at,
                        decision_records = count,
                        decisions = script.len(),
                        "rebuilding from the start of the logs"
                    );
                    self.processor.open(partition, start, committed_at, script);
                }
                Restore::Stop(_) => continue,
            }
            from.insert(partition, at);
            self.owned.insert(partition, Owned { token, decisions: count, committed: committed_at });
            rebuilt.push(partition);
        }
        if let Some(c) = &mut self.checkpoints {
            let now = Instant::now();
            for &partition in self.owned.keys() {
                c.owned(partition, now);
            }
        }
        // Kept after a revocation, but someone else's now.
        for (partition, _) in std::mem::take(&mut self.parked) {
            self.processor.close(partition);
        }
        self.inputs.add(&from)?;
        tracing::info!(?kept, ?rebuilt, stopped = ?self.stopped.keys().collect::<Vec<_>>(), "partitions assigned");
        Ok(())
    }

    /// The inputs and the decisions topic still have the partition count
    /// the worker started with: customers are spread by it, so a change
    /// would put a customer's events on another partition than their state.
    fn check_partition_counts(&self) -> Result<(), WorkerError> {
        let topics = &self.config.topics;
        let now = check_copartitioned(
            self.inputs.client(),
            &topics.clickstream,
            &topics.orders,
            &topics.decisions,
        )?;
        if now != self.partitions {
            return Err(WorkerError::Consumer(format!(
                "{} had {} partitions when this worker started and has {now} now: customers are spread by the partition count, so adding partitions moves customers away from their state; re-partition by replaying into new topics (segstream replay, backfill) instead",
                topics.clickstream, self.partitions
            )));
        }
        Ok(())
    }

    /// The warm-start snapshot's part of a partition as a checkpoint cut at
    /// the first records published after the snapshot's time, if a
    /// snapshot is configured and the group's committed offsets (if any)
    /// are at or after that cut. At a group's first start the cut is
    /// written as the partition's first checkpoint, so later restores
    /// start from it like from any other.
    fn warm_cut(
        &mut self,
        partition: i32,
        committed: Option<Positions>,
        low: Positions,
    ) -> Result<Option<PartitionState>, WorkerError> {
        let Some(warm) = &self.warm else { return Ok(None) };
        let cut = self.inputs.offsets_after(partition, warm.as_of)?;
        if let Some(c) = committed
            && (c.clicks < cut.clicks || c.orders < cut.orders)
        {
            tracing::warn!(
                partition,
                committed = %show(c),
                cut = %show(cut),
                "the group committed offsets before the warm start's cut: this group did not start from the snapshot, which is not used"
            );
            return Ok(None);
        }
        let state = warm.state(&self.config.kafka.group_id, partition, cut);
        if committed.is_none() {
            let covered = (cut.clicks - low.clicks).max(0) + (cut.orders - low.orders).max(0);
            self.metrics.snapshot_covered.inc_by(u64::try_from(covered).unwrap_or(0));
            tracing::info!(
                partition,
                as_of = %warm.as_of,
                cut = %show(cut),
                covered,
                customers = state.customers.len(),
                "warm start: the snapshot's customers at the first records published after its time"
            );
            if let Some(c) = &mut self.checkpoints {
                c.put(state.clone());
            }
        }
        Ok(Some(state))
    }

    /// Chooses where a partition's state comes from: the latest checkpoint
    /// the committed offsets cover, else the start of the logs; and checks
    /// that the records it needs are there (`low`, `high`: the logs' start
    /// and end). With `recovery.on_missing_history = "accept"`, what is
    /// missing is counted and passed over, and no decision is repeated
    /// (`committed` is dropped when it points past the end of the logs).
    fn plan_restore(
        &mut self,
        partition: i32,
        committed: &mut Option<Positions>,
        count: i64,
        low: Positions,
        high: Positions,
    ) -> Result<Restore, WorkerError> {
        let accept = self.config.recovery.on_missing_history == MissingHistory::Accept;
        let topics = format!("{}/{}[{partition}]", self.config.topics.clickstream, self.config.topics.orders);
        if let Some(c) = *committed
            && (c.clicks > high.clicks || c.orders > high.orders)
        {
            let problem = format!(
                "the committed offsets of {topics} ({}) are beyond the end of the logs ({}): the topics were re-created or truncated",
                show(c),
                show(high)
            );
            if !accept {
                return Ok(Restore::Stop(format!(
                    "{problem}; to start it again from what the logs hold (its changes are emitted again), set recovery.on_missing_history = \"accept\""
                )));
            }
            tracing::warn!(partition, problem = %problem, "accepted: starting from the start of the logs, outputs not suppressed");
            self.metrics.missing_history.inc();
            *committed = None;
            return Ok(Restore::Logs { start: low, repeat_from: count });
        }
        let state = match (*committed, &self.checkpoints) {
            (Some(c), Some(checkpoints)) => checkpoints.restore_point(partition, c, count)?,
            _ => None,
        };
        let state = match state {
            Some(state) => Some(state),
            None => self.warm_cut(partition, *committed, low)?,
        };
        let needed = state.as_ref().map_or(Positions { clicks: 0, orders: 0 }, |s| s.committed);
        let gone = (low.clicks - needed.clicks).max(0) + (low.orders - needed.orders).max(0);
        if gone > 0 && committed.is_some() {
            let covered = match &state {
                Some(s) => format!("the latest checkpoint covers up to {}", show(s.committed)),
                None => "no checkpoint covers them".to_owned(),
            };
            let problem = format!(
                "{gone} records of {topics} the state needs are gone (the logs start at {}; {covered})",
                show(low)
            );
            if !accept {
                return Ok(Restore::Stop(format!(
                    "{problem}: make the checkpoints at checkpoint.url reachable, or set recovery.on_missing_history = \"accept\" to go on without them"
                )));
            }
            tracing::warn!(partition, problem = %problem, "accepted: going on from the first records still there");
            self.metrics.missing_history.inc_by(u64::try_from(gone).unwrap_or(0));
            // Decisions taken over the missing records cannot be repeated.
            let start =
                Positions { clicks: needed.clicks.max(low.clicks), orders: needed.orders.max(low.orders) };
            return Ok(match state {
                Some(state) => {
                    Restore::Checkpoint { state: Box::new(state), fetch_from: start, repeat_from: count }
                }
                None => Restore::Logs { start, repeat_from: count },
            });
        }
        if gone > 0 {
            tracing::warn!(
                partition,
                start = %show(low),
                "first start of this group: the logs no longer hold their earliest records (a warm start brings older history in)"
            );
        }
        Ok(match state {
            Some(state) => {
                let (fetch_from, repeat_from) = (state.committed, state.decisions);
                Restore::Checkpoint { state: Box::new(state), fetch_from, repeat_from }
            }
            None => Restore::Logs { start: low, repeat_from: 0 },
        })
    }
}
