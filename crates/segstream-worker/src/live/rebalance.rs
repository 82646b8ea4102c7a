//! Rebalances and restores: commit before giving partitions up, keep the
//! state nobody else committed since, rebuild the rest from the start of
//! their logs with their committed decisions.

use std::collections::BTreeMap;

use segstream_events::{Lane, Positions};
use segstream_kafka::Assignment;

use super::Pipeline;
use super::ownership::{Owned, parse_metadata};
use crate::error::WorkerError;

impl Pipeline {
    /// Brings every owned partition back to its committed state after an
    /// aborted transaction: rebuilt from the start of its logs.
    pub(super) fn restore_all(&mut self) -> Result<(), WorkerError> {
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
        self.causes_ts.clear();
        self.dirty_since = None;
        self.processor.take_decisions();
    }

    pub(super) fn rebalance(&mut self, rebalance: Assignment) -> Result<(), WorkerError> {
        match rebalance {
            Assignment::Revoked { partitions, lost } => {
                // What was done with them is committed while the generation is ours.
                let clean = if lost {
                    let dirty = self.dirty_since.is_some() || self.outbox.is_open();
                    self.outbox.abort()?;
                    !dirty
                } else {
                    self.commit()?
                };
                self.forget_uncommitted();
                for (partition, owned) in std::mem::take(&mut self.owned) {
                    // Only a state exactly at its committed offsets can be kept.
                    if clean && !self.processor.rebuilding(partition) {
                        self.processor.freeze(partition);
                        self.parked.insert(partition, owned);
                    } else {
                        self.processor.close(partition);
                    }
                }
                self.inputs.unassign()?;
                self.paused.clear();
                self.assigned = false;
                tracing::info!(revoked = partitions.len(), lost, kept = clean, "partitions revoked");
            }
            Assignment::Assigned(partitions) => {
                let mine: Vec<i32> = partitions
                    .iter()
                    .filter(|(topic, _)| self.inputs.lane_of(topic) == Some(Lane::Clicks))
                    .map(|(_, p)| *p)
                    .collect();
                self.start(mine)?;
                self.assigned = true;
            }
        }
        self.metrics.assigned_partitions.set(i64::try_from(self.owned.len()).unwrap_or(i64::MAX));
        self.update_readiness();
        Ok(())
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
            let start = self.inputs.log_start(partition)?;
            let committed_at = match (c.clicks, c.orders) {
                (None, None) => None,
                (clicks, orders) => Some(Positions {
                    clicks: clicks.unwrap_or(start.clicks),
                    orders: orders.unwrap_or(start.orders),
                }),
            };
            if committed_at.is_some() && meta.is_none() {
                tracing::warn!(
                    partition,
                    "offsets were committed without segstream's metadata: rebuilding without recorded decisions"
                );
            }
            let count = meta.map_or(0, |(_, n)| n);
            let script = self.decision_log.read(partition, count)?;
            tracing::info!(
                partition,
                ?committed_at,
                decision_records = count,
                decisions = script.len(),
                "rebuilding from the start of the logs"
            );
            self.processor.open(partition, start, committed_at, script);
            from.insert(partition, start);
            self.owned.insert(partition, Owned { token, decisions: count, committed: committed_at });
            rebuilt.push(partition);
        }
        // Kept after a revocation, but someone else's now.
        for (partition, _) in std::mem::take(&mut self.parked) {
            self.processor.close(partition);
        }
        self.inputs.assign(&from)?;
        self.paused.clear();
        tracing::info!(?kept, ?rebuilt, "partitions assigned");
        Ok(())
    }
}
