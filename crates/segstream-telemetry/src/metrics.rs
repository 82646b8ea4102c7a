use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Every metric segstream exports. Names follow Prometheus conventions
/// (`_total` counters, `_seconds`, `_bytes`); labels are bounded sets (topic,
/// error code, segment names), never customer ids.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    /// `segstream_events_in_total{topic}`: payloads consumed.
    pub events_in: IntCounterVec,
    /// `segstream_decode_errors_total{topic,code}`: payloads that did not decode.
    pub decode_errors: IntCounterVec,
    /// `segstream_dead_letters_total{topic,code}`: payloads written to the
    /// dead-letter topic, by source topic and the code of their
    /// `segstream.error.code` header.
    pub dead_letters: IntCounterVec,
    /// `segstream_segment_changes_total{kind,change}`: change records published.
    pub segment_changes: IntCounterVec,
    /// `segstream_transitions_total{kind,from,to,trigger}`: segment transitions.
    pub transitions: IntCounterVec,
    /// `segstream_segment_population{kind,segment}`: customers per segment.
    pub population: IntGaugeVec,
    /// `segstream_customers_in_state`: customers held by this worker.
    pub customers: IntGauge,
    /// `segstream_state_bytes`: approximate memory of the customer state.
    pub state_bytes: IntGauge,
    /// `segstream_customers_compacted`: customers held compacted (silent
    /// past every window: lifetime figures and stage only).
    pub customers_compacted: IntGauge,
    /// `segstream_batch_duration_seconds`: processing time per micro-batch.
    pub batch_seconds: Histogram,
    /// `segstream_transactions_total{result}`: Kafka transactions by result
    /// (committed, aborted, fenced, renewed: the producer could not go on
    /// and a new one took over, fatal).
    pub transactions: IntCounterVec,
    /// `segstream_commit_duration_seconds`: time to commit one transaction
    /// (memberships, decisions, offsets, commit).
    pub commit_seconds: Histogram,
    /// `segstream_commit_phase_seconds{phase}`: the parts of a commit after
    /// the records are sent: waiting for their delivery (`deliveries`),
    /// adding the input offsets (`offsets`), ending the transaction (`end`).
    pub commit_phase_seconds: HistogramVec,
    /// `segstream_decisions_total`: timing-dependent merge decisions recorded.
    pub decisions: IntCounter,
    /// `segstream_partitions_rebuilding`: partition pairs still rebuilding
    /// their state up to the committed offsets.
    pub partitions_rebuilding: IntGauge,
    /// `segstream_paused_lanes`: input lanes not fetched now because the
    /// merge holds a backlog of them (waiting for the other lane).
    pub paused_lanes: IntGauge,
    /// `segstream_input_offset_jumps_total{topic,kind}`: input records out
    /// of offset order, by kind (skipped, log_gap, repeat).
    pub input_offset_jumps: IntCounterVec,
    /// `segstream_checkpoints_total{result}`: partition checkpoints written
    /// (`written`) or failed (`failed`).
    pub checkpoints: IntCounterVec,
    /// `segstream_checkpoint_duration_seconds`: encoding and writing one
    /// partition's checkpoint and feature file (off the pipeline thread).
    pub checkpoint_seconds: Histogram,
    /// `segstream_checkpoint_copy_seconds`: the copy of a partition's state
    /// the pipeline thread makes for a checkpoint (its only stall).
    pub checkpoint_copy_seconds: Histogram,
    /// `segstream_checkpoint_bytes`: size of the last checkpoint written
    /// (state and feature file).
    pub checkpoint_bytes: IntGauge,
    /// `segstream_checkpoint_age_seconds`: age of the oldest latest
    /// checkpoint among the owned partitions.
    pub checkpoint_age: IntGauge,
    /// `segstream_restore_duration_seconds`: reading and loading a
    /// partition's checkpoint on assignment.
    pub restore_seconds: Histogram,
    /// `segstream_missing_history_total`: input records a partition's state
    /// needed that were gone (accepted with recovery.on_missing_history).
    pub missing_history: IntCounter,
    /// `segstream_partitions_stopped`: assigned partitions not processed
    /// because the records their state needs are gone.
    pub partitions_stopped: IntGauge,
    /// `segstream_group_unowned_partitions`: input partitions no member of
    /// the group held when this worker last looked (a stable group only).
    pub group_unowned_partitions: IntGauge,
    /// `segstream_event_time_max_seconds`: largest event time processed.
    pub event_time_max: IntGauge,
    /// `segstream_watermark_lag_seconds`: wall clock minus the largest event time.
    pub watermark_lag: IntGauge,
    /// `segstream_event_to_change_latency_seconds`: produce time of the
    /// causing input to the commit of the change.
    pub change_latency: HistogramVec,
    /// `segstream_replayed_events_total`: events re-read at start-up to rebuild state (outputs suppressed).
    pub replayed: IntCounter,
    /// `segstream_snapshot_covered_records_total`: input records before the
    /// warm-start cut (published at or before the snapshot's time), not read.
    pub snapshot_covered: IntCounter,
    /// `segstream_consumer_lag_messages{topic,partition}`: from librdkafka statistics.
    pub consumer_lag: IntGaugeVec,
    /// `segstream_late_events_total{topic}`: events later than the allowed lateness.
    pub late_events: IntCounterVec,
    /// `segstream_future_events_total{topic}`: events dead-lettered for an event time far after their Kafka timestamp.
    pub future_events: IntCounterVec,
    /// `segstream_timer_transitions_total`: transitions fired by timers (watermark passed their due time).
    pub timers_fired: IntCounter,
    /// `segstream_custom_segment_errors_total{segment}`: rows on which a
    /// user-defined segment's expression failed (counted as not holding).
    pub custom_segment_errors: IntCounterVec,
    /// `segstream_timers_pending`: customers with a timer scheduled (a
    /// time-driven transition, or the compaction of a silent customer).
    pub timers_pending: IntGauge,
    /// `segstream_assigned_partitions`: input partitions owned now.
    pub assigned_partitions: IntGauge,
    /// `segstream_rebalances_total{kind}`: assignments, revocations and rejoins.
    pub rebalances: IntCounterVec,
    /// `segstream_erasures_total{result}`: erasure requests seen.
    pub erasures: IntCounterVec,
    /// `segstream_erased_events_total`: events of erased customers not applied.
    pub erased_events: IntCounter,
    /// `segstream_definitions_rollouts_total{result}`: rolled-out segment
    /// definitions seen (applied, refused, stale).
    pub definitions_rollouts: IntCounterVec,
    /// `segstream_definitions_version`: version of the segment definitions
    /// the group should be under.
    pub definitions_version: IntGauge,
    /// `segstream_trainer_runs_total{result}`: training runs (published,
    /// dry_run, failed).
    pub trainer_runs: IntCounterVec,
    /// `segstream_model_version`: version of the latest model the trainer
    /// published, or (a worker) the model the group is under; 0 before one.
    pub model_version: IntGauge,
    /// `segstream_model_swaps_total{result}`: published models a worker saw
    /// (applied, refused, stale).
    pub model_swaps: IntCounterVec,
    /// `segstream_model_trained_timestamp_seconds`: when that model was
    /// fitted (its age is `time()` minus this).
    pub model_trained_timestamp: IntGauge,
    /// `segstream_model_training_seconds`: how long its fit took.
    pub model_training_seconds: Gauge,
    /// `segstream_model_cluster_share{cluster}`: share of the clustered
    /// buyers in each cluster of the latest model published.
    pub model_cluster_share: GaugeVec,
    /// `segstream_model_cluster_centre_moved{cluster}`: how far each matched
    /// cluster's centre moved since the previous model (standard deviations).
    pub model_cluster_centre_moved: GaugeVec,
    /// `segstream_model_cluster_share_shift{cluster}`: each matched
    /// cluster's share minus its share in the previous model.
    pub model_cluster_share_shift: GaugeVec,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

fn register<T: prometheus::core::Collector + Clone + 'static>(registry: &Registry, metric: T) -> T {
    // Names are static and unique in this file: a registration error is a programming error.
    registry.register(Box::new(metric.clone())).unwrap_or_else(|e| panic!("metric registration: {e}"));
    metric
}

fn counter_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    register(r, IntCounterVec::new(Opts::new(name, help), labels).unwrap_or_else(|e| panic!("{name}: {e}")))
}

fn gauge(r: &Registry, name: &str, help: &str) -> IntGauge {
    register(r, IntGauge::new(name, help).unwrap_or_else(|e| panic!("{name}: {e}")))
}

fn float_gauge_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> GaugeVec {
    register(r, GaugeVec::new(Opts::new(name, help), labels).unwrap_or_else(|e| panic!("{name}: {e}")))
}

fn gauge_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    register(r, IntGaugeVec::new(Opts::new(name, help), labels).unwrap_or_else(|e| panic!("{name}: {e}")))
}

fn seconds(r: &Registry, name: &str, help: &str) -> Histogram {
    let buckets = vec![0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];
    register(
        r,
        Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))
            .unwrap_or_else(|e| panic!("{name}: {e}")),
    )
}

impl Metrics {
    /// A fresh registry with every metric registered.
    pub fn new() -> Self {
        Self::on(Registry::new())
    }

    /// The metrics of pipeline thread `index` of a worker running several
    /// (`worker.threads`): every series carries `pipeline="<index>"`, and
    /// [`Metrics::render_all`] shows them side by side.
    pub fn for_pipeline(index: usize) -> Self {
        let labels = std::collections::HashMap::from([("pipeline".to_owned(), index.to_string())]);
        // A fixed, valid label name and value: the registry cannot refuse them.
        Self::on(Registry::new_custom(None, Some(labels)).unwrap_or_else(|e| panic!("pipeline label: {e}")))
    }

    fn on(r: Registry) -> Self {
        // Every 10 ms up to 200 ms, so a p99 target of tens of milliseconds
        // can be read off it; coarser above.
        let fine = (1..=20).map(|i| f64::from(i) / 100.0);
        let latency_buckets: Vec<f64> = [0.001, 0.0025, 0.005]
            .into_iter()
            .chain(fine)
            .chain([0.25, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0])
            .collect();
        Self {
            events_in: counter_vec(
                &r,
                "segstream_events_in_total",
                "Payloads consumed, per topic.",
                &["topic"],
            ),
            decode_errors: counter_vec(
                &r,
                "segstream_decode_errors_total",
                "Payloads that did not decode or validate, per topic and error code.",
                &["topic", "code"],
            ),
            dead_letters: counter_vec(
                &r,
                "segstream_dead_letters_total",
                "Payloads written to the dead-letter topic, by source topic and code (the segstream.error.code header).",
                &["topic", "code"],
            ),
            segment_changes: counter_vec(
                &r,
                "segstream_segment_changes_total",
                "Segment change records published.",
                &["kind", "change"],
            ),
            transitions: counter_vec(
                &r,
                "segstream_transitions_total",
                "Segment transitions, per kind, from, to and trigger.",
                &["kind", "from", "to", "trigger"],
            ),
            population: gauge_vec(
                &r,
                "segstream_segment_population",
                "Customers in each segment on this worker.",
                &["kind", "segment"],
            ),
            customers: gauge(&r, "segstream_customers_in_state", "Customers held in this worker's state."),
            state_bytes: gauge(&r, "segstream_state_bytes", "Approximate bytes of customer state."),
            customers_compacted: gauge(
                &r,
                "segstream_customers_compacted",
                "Customers held compacted: silent past every window, only lifetime figures and stage kept.",
            ),
            batch_seconds: register(
                &r,
                Histogram::with_opts(HistogramOpts::new(
                    "segstream_batch_duration_seconds",
                    "Time to process one micro-batch (transactions commit separately).",
                ))
                .unwrap_or_else(|e| panic!("batch histogram: {e}")),
            ),
            transactions: counter_vec(
                &r,
                "segstream_transactions_total",
                "Kafka transactions, by result (committed, aborted, fenced, renewed: the producer could not go on, typically its transaction aborted by the broker past worker.transaction_timeout_ms, and a new one took over; fatal).",
                &["result"],
            ),
            commit_seconds: register(
                &r,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "segstream_commit_duration_seconds",
                        "Time to commit one transaction: memberships, decisions, input offsets, commit.",
                    )
                    .buckets(vec![0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0]),
                )
                .unwrap_or_else(|e| panic!("commit histogram: {e}")),
            ),
            commit_phase_seconds: register(
                &r,
                HistogramVec::new(
                    HistogramOpts::new(
                        "segstream_commit_phase_seconds",
                        "Parts of a commit: waiting for deliveries, adding the input offsets, ending the transaction.",
                    )
                    .buckets(vec![0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0]),
                    &["phase"],
                )
                .unwrap_or_else(|e| panic!("commit phase histogram: {e}")),
            ),
            decisions: register(
                &r,
                IntCounter::new(
                    "segstream_decisions_total",
                    "Timing-dependent merge decisions recorded on the decisions topic (a lane released alone at the live tail, a quiet partition following the input's watermark).",
                )
                .unwrap_or_else(|e| panic!("decisions: {e}")),
            ),
            partitions_rebuilding: gauge(
                &r,
                "segstream_partitions_rebuilding",
                "Partition pairs still rebuilding their state up to the committed offsets.",
            ),
            paused_lanes: gauge(
                &r,
                "segstream_paused_lanes",
                "Input lanes not fetched now: the merge holds a backlog of them while it waits for the other lane.",
            ),
            input_offset_jumps: counter_vec(
                &r,
                "segstream_input_offset_jumps_total",
                "Input offsets out of order, by topic and kind: skipped (records the consumer had skipped, read again), log_gap (offsets without a record in the log: transactional markers, aborted or compacted records), repeat (records delivered again, dropped).",
                &["topic", "kind"],
            ),
            checkpoints: counter_vec(
                &r,
                "segstream_checkpoints_total",
                "Partition checkpoints by result: written, failed (the previous one stays).",
                &["result"],
            ),
            checkpoint_seconds: seconds(
                &r,
                "segstream_checkpoint_duration_seconds",
                "Encoding and writing one partition's checkpoint and feature file, off the pipeline thread.",
            ),
            checkpoint_copy_seconds: seconds(
                &r,
                "segstream_checkpoint_copy_seconds",
                "The copy of a partition's state the pipeline thread makes for a checkpoint.",
            ),
            checkpoint_bytes: gauge(
                &r,
                "segstream_checkpoint_bytes",
                "Bytes of the last partition checkpoint written (state and feature file).",
            ),
            checkpoint_age: gauge(
                &r,
                "segstream_checkpoint_age_seconds",
                "Age of the oldest latest checkpoint among the owned partitions (since assignment if none yet).",
            ),
            restore_seconds: seconds(
                &r,
                "segstream_restore_duration_seconds",
                "Reading and loading a partition's checkpoint on assignment.",
            ),
            missing_history: register(
                &r,
                IntCounter::new(
                    "segstream_missing_history_total",
                    "Input records a partition's state needed that were gone, accepted (recovery.on_missing_history = accept).",
                )
                .unwrap_or_else(|e| panic!("missing history: {e}")),
            ),
            partitions_stopped: gauge(
                &r,
                "segstream_partitions_stopped",
                "Assigned partitions not processed: the records their state needs are gone (see the log and /readyz).",
            ),
            group_unowned_partitions: gauge(
                &r,
                "segstream_group_unowned_partitions",
                "Input partitions no member of the stable group held when this worker last looked: nobody processes them (a worker that holds the fewest repairs it by leaving and joining again, counted as segstream_rebalances_total{kind=\"repair\"}).",
            ),
            event_time_max: gauge(
                &r,
                "segstream_event_time_max_seconds",
                "Largest event time processed, seconds since the epoch.",
            ),
            watermark_lag: gauge(
                &r,
                "segstream_watermark_lag_seconds",
                "Wall clock minus the largest event time processed.",
            ),
            change_latency: register(
                &r,
                HistogramVec::new(
                    HistogramOpts::new(
                        "segstream_event_to_change_latency_seconds",
                        "From the Kafka timestamp of the causing input to the commit of the change.",
                    )
                    .buckets(latency_buckets),
                    &["kind"],
                )
                .unwrap_or_else(|e| panic!("latency histogram: {e}")),
            ),
            snapshot_covered: register(
                &r,
                IntCounter::new(
                    "segstream_snapshot_covered_records_total",
                    "Input records before the warm-start cut (published at or before the snapshot's time), taken as already in it and not read.",
                )
                .unwrap_or_else(|e| panic!("snapshot covered: {e}")),
            ),
            replayed: register(
                &r,
                IntCounter::new(
                    "segstream_replayed_events_total",
                    "Events re-read to rebuild state after an assignment, outputs suppressed.",
                )
                .unwrap_or_else(|e| panic!("replayed: {e}")),
            ),
            consumer_lag: gauge_vec(
                &r,
                "segstream_consumer_lag_messages",
                "Messages behind the end of each input partition (librdkafka statistics).",
                &["topic", "partition"],
            ),
            late_events: counter_vec(
                &r,
                "segstream_late_events_total",
                "Events later than time.allowed_lateness_ms behind their partition, per topic.",
                &["topic"],
            ),
            future_events: counter_vec(
                &r,
                "segstream_future_events_total",
                "Events whose event time is more than time.max_future_ms after their Kafka timestamp (dead-lettered).",
                &["topic"],
            ),
            timers_fired: register(
                &r,
                IntCounter::new(
                    "segstream_timer_transitions_total",
                    "Transitions fired by timers: the partition's watermark passed their due time.",
                )
                .unwrap_or_else(|e| panic!("timers: {e}")),
            ),
            custom_segment_errors: register(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "segstream_custom_segment_errors_total",
                        "Rows on which a user-defined segment's expression failed (an arithmetic error); the segment counts as not holding there.",
                    ),
                    &["segment"],
                )
                .unwrap_or_else(|e| panic!("custom segment errors: {e}")),
            ),
            timers_pending: gauge(
                &r,
                "segstream_timers_pending",
                "Customers with a timer scheduled (a time-driven transition, or the compaction of a customer silent past every window).",
            ),
            assigned_partitions: gauge(&r, "segstream_assigned_partitions", "Input partitions assigned now."),
            rebalances: counter_vec(
                &r,
                "segstream_rebalances_total",
                "Consumer-group rebalances seen, by kind (assign, revoke, error, rejoin: the group consumer was fenced by its own earlier session and joined again; repair: this worker left and joined again so that the group hands out partitions nobody held).",
                &["kind"],
            ),
            erasures: counter_vec(
                &r,
                "segstream_erasures_total",
                "Erasure requests (segstream forget) seen, by result (dropped_state: this worker held the customer; recorded: it did not, their events up to the erasure are ignored).",
                &["result"],
            ),
            erased_events: register(
                &r,
                IntCounter::new(
                    "segstream_erased_events_total",
                    "Events of erased customers, dated up to their erasure, that moved time only.",
                )
                .unwrap_or_else(|e| panic!("erased events: {e}")),
            ),
            definitions_rollouts: register(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "segstream_definitions_rollouts_total",
                        "Rolled-out segment definitions seen, by result (applied; refused: they do not parse or name an unknown feature, the version in force stays; stale: not above the version in force).",
                    ),
                    &["result"],
                )
                .unwrap_or_else(|e| panic!("definitions rollouts: {e}")),
            ),
            definitions_version: gauge(
                &r,
                "segstream_definitions_version",
                "Version of the segment definitions the group should be under (the highest rolled out, or the configured file's).",
            ),
            trainer_runs: counter_vec(
                &r,
                "segstream_trainer_runs_total",
                "Training runs of segstream train, by result (published; dry_run; failed: nothing was published and the previous model stays, the log says why).",
                &["result"],
            ),
            model_version: gauge(
                &r,
                "segstream_model_version",
                "Version of the latest model: the trainer published it, or the worker's group is under it; 0 before any.",
            ),
            model_swaps: counter_vec(
                &r,
                "segstream_model_swaps_total",
                "Published models a worker saw, by result (applied: the group goes under it; refused: it cannot be scored with here, the model in force stays, the log says why; stale: older than the one in force).",
                &["result"],
            ),
            model_trained_timestamp: gauge(
                &r,
                "segstream_model_trained_timestamp_seconds",
                "Unix time that model was fitted at; its age is time() minus this.",
            ),
            model_training_seconds: register(
                &r,
                Gauge::new("segstream_model_training_seconds", "How long the fit of that model took.")
                    .unwrap_or_else(|e| panic!("model training seconds: {e}")),
            ),
            model_cluster_share: float_gauge_vec(
                &r,
                "segstream_model_cluster_share",
                "Share of the clustered buyers in each cluster (by stable id) of the latest model published.",
                &["cluster"],
            ),
            model_cluster_centre_moved: float_gauge_vec(
                &r,
                "segstream_model_cluster_centre_moved",
                "Drift: how far each cluster's centre moved since the previous model, in standard deviations (absent for a new cluster).",
                &["cluster"],
            ),
            model_cluster_share_shift: float_gauge_vec(
                &r,
                "segstream_model_cluster_share_shift",
                "Drift: each cluster's share of the buyers minus its share in the previous model (absent for a new cluster).",
                &["cluster"],
            ),
            registry: r,
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        Self::render_all(std::slice::from_ref(self))
    }

    /// One exposition of several registries (a worker's pipeline threads):
    /// each metric family once, with the series of every registry in it.
    pub fn render_all(all: &[Self]) -> String {
        let mut families: std::collections::BTreeMap<String, prometheus::proto::MetricFamily> =
            std::collections::BTreeMap::new();
        for family in all.iter().flat_map(|m| m.registry.gather()) {
            match families.entry(family.name().to_owned()) {
                std::collections::btree_map::Entry::Vacant(slot) => {
                    slot.insert(family);
                }
                std::collections::btree_map::Entry::Occupied(mut slot) => {
                    let mut family = family;
                    slot.get_mut().mut_metric().extend(family.take_metric());
                }
            }
        }
        let families: Vec<_> = families.into_values().collect();
        let mut buf = Vec::new();
        // Encoding into a Vec cannot fail for well-formed metric families.
        if let Err(e) = TextEncoder::new().encode(&families, &mut buf) {
            tracing::error!(error = %e, "encoding metrics failed");
        }
        String::from_utf8_lossy(&buf).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::Metrics;

    /// Several pipeline threads make one exposition: each family once,
    /// every thread's series in it, told apart by their `pipeline` label.
    #[test]
    fn the_pipelines_of_a_worker_are_one_exposition_with_a_label_each() {
        let (a, b) = (Metrics::for_pipeline(0), Metrics::for_pipeline(1));
        a.customers.set(3);
        b.customers.set(4);
        a.events_in.with_label_values(&["clickstream"]).inc_by(5);
        let text = Metrics::render_all(&[a, b]);
        assert_eq!(text.matches("# TYPE segstream_customers_in_state gauge").count(), 1, "{text}");
        assert!(text.contains("segstream_customers_in_state{pipeline=\"0\"} 3"), "{text}");
        assert!(text.contains("segstream_customers_in_state{pipeline=\"1\"} 4"), "{text}");
        assert!(text.contains("segstream_events_in_total{topic=\"clickstream\",pipeline=\"0\"} 5"), "{text}");
        let one = Metrics::new();
        one.customers.set(2);
        assert!(one.render().contains("\nsegstream_customers_in_state 2\n"), "no label with one pipeline");
    }

    /// An SRE reads the README to know what to alert on: every metric
    /// registered here is listed there.
    #[test]
    fn the_readme_lists_every_metric() {
        let source = include_str!("metrics.rs");
        let readme = include_str!("../../../README.md");
        let mut names: Vec<&str> = source
            .split('"')
            .filter(|s| s.starts_with("segstream_") && s.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
            .collect();
        names.dedup();
        assert!(names.len() > 30, "{names:?}");
        let missing: Vec<&&str> = names.iter().filter(|n| !readme.contains(&format!("`{n}"))).collect();
        assert!(missing.is_empty(), "add these to README.md's Metrics section: {missing:?}");
    }
}
