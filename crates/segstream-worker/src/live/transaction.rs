//! What goes into a transaction and when it commits: changes and dead
//! letters as they are produced, then at the commit the memberships of the
//! customers touched, the decisions taken and every owned lane's offset with
//! its metadata. (Under at-least-once the changes, dead letters and
//! memberships are sent outside the transaction, see `outbox`.)

use std::collections::BTreeMap;
use std::time::Instant;

use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use segstream_events::{DecisionRecord, EventTime, Lane, Positions};
use segstream_kafka::{DeadLetter, DeadLetterRecord, KafkaIoError, dead_letter_record};

use super::Pipeline;
use super::outbox::{Record, TxFailure};
use super::ownership::metadata;
use crate::error::WorkerError;
use crate::processor::Emitted;

impl Pipeline {
    /// Sends what processing produced into the open transaction. False if
    /// the transaction failed (it is aborted then).
    pub(super) fn publish(&mut self, out: Emitted) -> Result<bool, WorkerError> {
        let Emitted { changes, dead_letters, touched, causes_ts, .. } = out;
        for change in &changes {
            let mut payload = change.to_avro()?;
            self.output_ids.changes(&mut payload);
            let record = Record {
                topic: &self.config.topics.segment_changes,
                partition: None,
                key: Some(change.customer_id.as_str().as_bytes()),
                payload: Some(&payload),
                headers: None,
            };
            let sent = self.outbox.send_output(record);
            if !self.settle(sent)? {
                return Ok(false);
            }
        }
        for d in &dead_letters {
            let topic = self.inputs.lane_topic(d.lane);
            let letter = DeadLetter {
                topic,
                partition: d.partition,
                offset: d.offset,
                code: d.rejection.code,
                message: &d.rejection.message,
            };
            let DeadLetterRecord { key, payload, headers } = dead_letter_record(
                &letter,
                d.rejection.key.as_deref(),
                d.rejection.payload.as_deref(),
                self.config.worker.dead_letter_max_bytes,
            );
            let record = Record {
                topic: &self.config.topics.dead_letter,
                partition: None,
                key,
                payload,
                headers: Some(headers),
            };
            let sent = self.outbox.send_output(record);
            if !self.settle(sent)? {
                return Ok(false);
            }
        }
        self.summary.changes += changes.len() as u64;
        self.summary.dead_letters += dead_letters.len() as u64;
        for (id, at) in touched {
            let last = self.touched.entry(id).or_insert(at);
            *last = (*last).max(at);
        }
        self.causes_ts.extend(causes_ts);
        Ok(true)
    }

    /// Turns a transaction step's failure into what to do: `Ok(true)` went
    /// through, `Ok(false)` was aborted (non-fatal), `Err` stops the worker.
    pub(super) fn settle(&mut self, result: Result<(), TxFailure>) -> Result<bool, WorkerError> {
        let (kind, error) = match result {
            Ok(()) => return Ok(true),
            Err(TxFailure::Fatal(e)) => {
                self.metrics.transactions.with_label_values(&["fatal"]).inc();
                return Err(e);
            }
            Err(TxFailure::Abortable(e)) => ("aborted", e),
            Err(TxFailure::GroupFenced(e)) => ("fenced", e),
            // The abort below renews the producer.
            Err(TxFailure::Renew(e)) => ("renewed", e),
        };
        tracing::warn!(
            error = %error,
            result = kind,
            "transaction failed: aborted; the partitions go back to their committed state"
        );
        self.metrics.transactions.with_label_values(&[kind]).inc();
        self.outbox.abort()?;
        Ok(false)
    }

    /// Commits memberships, decisions and input offsets with what was sent
    /// since the last commit. False if the transaction was aborted (the
    /// state is then ahead of the committed one: the caller restores or
    /// drops it).
    pub(super) fn commit(&mut self) -> Result<bool, WorkerError> {
        if self.dirty_since.is_none() && !self.outbox.is_open() {
            return Ok(true);
        }
        let Some(group) = self.inputs.group_metadata() else { return Err(WorkerError::NoGroupMetadata) };
        let started = Instant::now();
        self.last_commit = Some(started);
        let touched = std::mem::take(&mut self.touched);
        for (id, at) in &touched {
            let Some(membership) = self.processor.store().membership(id, *at) else { continue };
            let mut payload = membership.to_avro()?;
            self.output_ids.memberships(&mut payload);
            let record = Record {
                topic: &self.config.topics.customer_segments,
                partition: None,
                key: Some(id.as_str().as_bytes()),
                payload: Some(&payload),
                headers: None,
            };
            let sent = self.outbox.send_output(record);
            if !self.settle(sent)? {
                return Ok(false);
            }
        }
        let mut counts: BTreeMap<i32, i64> = self.owned.iter().map(|(p, o)| (*p, o.decisions)).collect();
        for (partition, decisions) in self.processor.take_decisions() {
            // Only owned partitions move (the others are frozen or gone).
            let Some(n) = counts.get_mut(&partition) else {
                return Err(WorkerError::Invariant(format!(
                    "decisions taken for partition {partition}, which this worker does not own"
                )));
            };
            self.metrics.decisions.inc_by(decisions.len() as u64);
            let record = DecisionRecord {
                group_id: self.config.kafka.group_id.clone(),
                partition,
                seq: *n,
                decisions,
            };
            let payload = record.to_avro()?;
            let out = Record {
                topic: &self.config.topics.decisions,
                partition: Some(partition),
                key: Some(self.config.kafka.group_id.as_bytes()),
                payload: Some(&payload),
                headers: None,
            };
            let sent = self.outbox.send(out);
            if !self.settle(sent)? {
                return Ok(false);
            }
            *n += 1;
        }
        let token = self.tokens.next();
        let mut offsets = TopicPartitionList::new();
        let mut positions: BTreeMap<i32, Positions> = BTreeMap::new();
        for (&partition, &n) in &counts {
            let meta = metadata(&token, n);
            let (Some(clicks), Some(orders)) = (
                self.processor.commit_offset(Lane::Clicks, partition),
                self.processor.commit_offset(Lane::Orders, partition),
            ) else {
                continue;
            };
            for (lane, offset) in [(Lane::Clicks, clicks), (Lane::Orders, orders)] {
                offsets
                    .add_partition_offset(self.inputs.lane_topic(lane), partition, Offset::Offset(offset))
                    .map_err(KafkaIoError::kafka("building the offsets to commit"))?;
                if let Some(mut e) = offsets.find_partition(self.inputs.lane_topic(lane), partition) {
                    e.set_metadata(meta.as_str());
                }
            }
            positions.insert(partition, Positions { clicks, orders });
        }
        if offsets.count() == 0 && !self.owned.is_empty() {
            return Err(WorkerError::Invariant(
                "a transaction without the offsets of the partitions it owns".into(),
            ));
        }
        let result = self.outbox.commit(&offsets, &group);
        let phases = result.as_ref().ok().copied();
        if !self.settle(result.map(|_| ()))? {
            return Ok(false);
        }
        for (phase, took) in phases.into_iter().flatten() {
            self.metrics.commit_phase_seconds.with_label_values(&[phase]).observe(took.as_secs_f64());
        }
        let advanced =
            self.owned.iter().any(|(p, o)| positions.get(p).is_some_and(|n| Some(*n) != o.committed));
        for (partition, owned) in &mut self.owned {
            owned.token = Some(token.clone());
            owned.decisions = counts.get(partition).copied().unwrap_or(owned.decisions);
            owned.committed = positions.get(partition).copied().or(owned.committed);
        }
        self.metrics.transactions.with_label_values(&["committed"]).inc();
        self.metrics.commit_seconds.observe(started.elapsed().as_secs_f64());
        let now_ms = EventTime::now().millis();
        for (kind, ts) in self.causes_ts.drain(..) {
            let seconds = (now_ms - ts).max(0) as f64 / 1000.0;
            self.metrics.change_latency.with_label_values(&[kind.as_str()]).observe(seconds);
        }
        self.summary.transactions += 1;
        self.dirty_since = None;
        self.progress.committed(Instant::now(), advanced);
        Ok(true)
    }
}
