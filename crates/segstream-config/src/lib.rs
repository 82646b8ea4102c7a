//! segstream's configuration: one tree of typed sections with documented
//! defaults (`default.toml`, embedded), layered as
//! defaults < config file < `SEGSTREAM__SECTION__KEY` environment variables
//! < `--set section.key=value` flags. Unknown keys and bad values stop the
//! process with a message that names the key and the fix.

use std::collections::BTreeMap;
use std::path::Path;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// The embedded defaults, also the reference documentation of every key.
pub const DEFAULT_TOML: &str = include_str!("../default.toml");

/// Environment variable prefix; `__` separates nesting levels.
pub const ENV_PREFIX: &str = "SEGSTREAM__";

/// Most pipeline threads a worker runs (`worker.threads`).
pub const MAX_THREADS: usize = 64;

/// A configuration that cannot be used.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The file named by `--config` does not exist.
    #[error(
        "config file {path} not found: pass an existing TOML file to --config, or omit it to use the defaults"
    )]
    MissingFile {
        /// The path given.
        path: String,
    },
    /// A `--set` flag is not `section.key=value`.
    #[error("--set {given:?}: expected section.key=value, e.g. --set kafka.group_id=segstream-eu")]
    BadOverride {
        /// The flag's text.
        given: String,
    },
    /// Parsing or layering failed (unknown key, wrong type...).
    #[error("invalid configuration: {0}")]
    Figment(#[from] Box<figment::Error>),
    /// A value parsed but is not allowed.
    #[error("invalid configuration: `{key}` = {value}: {fix}")]
    Invalid {
        /// Dotted key.
        key: &'static str,
        /// The value found.
        value: String,
        /// What to do about it.
        fix: String,
    },
}

/// The whole configuration.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Kafka connection.
    pub kafka: KafkaConfig,
    /// Topic names.
    pub topics: TopicsConfig,
    /// Pipeline tuning.
    pub worker: WorkerConfig,
    /// Feature definitions.
    pub features: FeaturesConfig,
    /// Lifecycle stage thresholds.
    pub lifecycle: LifecycleConfig,
    /// The segment definitions file.
    pub segments: SegmentsConfig,
    /// What `segstream train` fits and how.
    pub trainer: TrainerConfig,
    /// Event time: lateness and late events.
    pub time: TimeConfig,
    /// Where the state's checkpoints go.
    pub checkpoint: CheckpointConfig,
    /// What restore does when history is missing.
    pub recovery: RecoveryConfig,
    /// How strictly input payloads are read.
    pub input: InputConfig,
    /// The schema registry, if any.
    pub schema_registry: SchemaRegistryConfig,
    /// When a running worker counts as stuck.
    pub health: HealthConfig,
    /// HTTP endpoints.
    pub http: HttpConfig,
    /// Ad-hoc queries.
    pub sql: SqlConfig,
    /// Logging.
    pub log: LogConfig,
}

/// `[kafka]`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// Bootstrap brokers.
    pub bootstrap_servers: String,
    /// Consumer group.
    pub group_id: String,
    /// Extra librdkafka settings.
    pub librdkafka_options: BTreeMap<String, String>,
}

/// `[topics]`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TopicsConfig {
    /// Click input.
    pub clickstream: String,
    /// Order input.
    pub orders: String,
    /// Change output.
    pub segment_changes: String,
    /// Membership output (compacted).
    pub customer_segments: String,
    /// Dead letters.
    pub dead_letter: String,
    /// Retention of the dead-letter topic (`topics create`), ms; -1: for ever.
    pub dead_letter_retention_ms: i64,
    /// Erasure requests (compacted).
    pub erasures: String,
    /// Segment definitions rolled out to running workers (compacted).
    pub definitions: String,
    /// Models published by `segstream train` (compacted).
    pub models: String,
    /// Internal: the timing-dependent decisions of the merge, per input partition.
    pub decisions: String,
    /// Partitions for `topics create`.
    pub partitions: i32,
    /// Replication factor for `topics create`.
    pub replication_factor: i32,
}

/// `[worker]`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WorkerConfig {
    /// Stable worker identity; empty = host name.
    pub instance_id: String,
    /// Max events per micro-batch.
    pub batch_max_events: usize,
    /// Max wait per micro-batch, ms.
    pub batch_max_wait_ms: u64,
    /// How long a lane at the end of its log holds its co-partition back, ms.
    pub partition_idle_ms: u64,
    /// A Kafka transaction commits the outputs and input offsets this often,
    /// ms; unset: the guarantee's default (see [`WorkerConfig::commit_interval_ms`]).
    #[serde(default)]
    pub commit_interval_ms: Option<u64>,
    /// Whether the outputs go into the transactions (each change once) or
    /// are sent as they are made (sooner, again after a crash).
    pub processing_guarantee: ProcessingGuarantee,
    /// Kafka transaction timeout, ms.
    pub transaction_timeout_ms: u64,
    /// Consumer-group session timeout, ms (static membership).
    pub session_timeout_ms: u64,
    /// A state snapshot (`segstream backfill`) to start from; empty = none.
    pub warm_start: String,
    /// A dead letter's size at most, bytes (a larger undecodable record is
    /// cut, with its original size in a header).
    pub dead_letter_max_bytes: usize,
    /// Timers fired in one step at most (about: ties go together); a larger
    /// mass firing is split over several steps and transactions.
    pub max_timers_per_step: usize,
    /// Pipeline threads in this worker (Kafka Streams' `num.stream.threads`):
    /// each is its own group member and transactional producer over the
    /// partitions the group gives it.
    pub threads: usize,
}

/// `[features]`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FeaturesConfig {
    /// Windows of the order features (orders, revenue), days, increasing.
    /// Orders are kept for the longest; discount, category and payment
    /// features look at the longest.
    pub order_windows_days: Vec<u32>,
    /// Windows of the click features (sessions, views, searches, add-to-cart),
    /// days, increasing; the longest is kept as daily buckets (at most 90).
    /// Device, time-of-day and cart features look at the longest.
    pub activity_windows_days: Vec<u32>,
    /// Inactivity gap that splits sessions, minutes.
    pub session_gap_minutes: u32,
    /// A cart (items added since the last order) is abandoned when this many
    /// hours pass after its last add with no order.
    pub cart_abandon_hours: u32,
    /// Orders of the longest order window kept one by one per customer; older
    /// ones of a customer with more are kept as per-day totals (bounded time
    /// per event and memory per customer; `docs/segments-and-features.md`
    /// says what is approximate then).
    pub max_orders_kept: u32,
}

impl FeaturesConfig {
    /// The longest order window, days.
    pub fn order_retention_days(&self) -> i64 {
        i64::from(self.order_windows_days.iter().copied().max().unwrap_or(365))
    }

    /// The longest click window, days.
    pub fn activity_retention_days(&self) -> i64 {
        i64::from(self.activity_windows_days.iter().copied().max().unwrap_or(30))
    }
}

/// `[lifecycle]`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LifecycleConfig {
    /// Version carried on change records.
    pub rule_version: i32,
    /// Days a first-time buyer stays "new".
    pub new_days: f64,
    /// Days without an order before "at_risk".
    pub at_risk_days: f64,
    /// Days without an order before "churned".
    pub churn_days: f64,
    /// Days a returning churned customer stays "reactivated".
    pub reactivated_days: f64,
    /// When above 0: a customer with at least `personal_min_orders` orders
    /// is at risk after this multiple of their own mean inter-purchase time
    /// instead of `at_risk_days`.
    pub at_risk_interpurchase_multiple: f64,
    /// Same for churned (must then be above the at-risk multiple).
    pub churn_interpurchase_multiple: f64,
    /// Orders a customer needs before their own rhythm is trusted.
    pub personal_min_orders: u32,
    /// Net revenue in `high_value_window_days` from which an active
    /// customer is "high_value"; 0: no such stage.
    pub high_value_revenue: f64,
    /// The window of `high_value_revenue`: one of
    /// `features.order_windows_days`, or 0 for the longest of them.
    pub high_value_window_days: u32,
}

/// `[segments]`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SegmentsConfig {
    /// Path of the segment definitions TOML file; empty: the built-in one.
    pub definitions: String,
}

/// `[trainer]`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TrainerConfig {
    /// "kmeans" or "gmm".
    pub algorithm: String,
    /// Feature table columns the clusters are fitted on.
    pub cluster_features: Vec<String>,
    /// Fewest clusters tried.
    pub k_min: usize,
    /// Most clusters tried.
    pub k_max: usize,
    /// Customers k is chosen on.
    pub k_sample: usize,
    /// Customers the silhouette is computed on.
    pub silhouette_sample: usize,
    /// Largest centre distance (standard deviations) that keeps a cluster's id.
    pub match_distance: f64,
    /// Fewest buyers a model is fitted on.
    pub min_buyers: usize,
    /// Horizon of expected purchases, days.
    pub expected_horizon_days: f64,
    /// Horizon of the lifetime value, days.
    pub clv_horizon_days: f64,
    /// Window of the RFM quintiles, days; 0: the longest order window.
    pub rfm_window_days: u32,
}

impl TrainerConfig {
    /// The RFM quintiles' window in days, 0 resolved against `features`.
    pub fn rfm_window(&self, features: &FeaturesConfig) -> u32 {
        if self.rfm_window_days == 0 {
            features.order_windows_days.iter().copied().max().unwrap_or(365)
        } else {
            self.rfm_window_days
        }
    }
}

/// `[time]`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TimeConfig {
    /// How far behind the latest event time of its partition an event may be
    /// and still count as on time; also how long timers wait past their due time.
    pub allowed_lateness_ms: u64,
    /// What happens to an event later than that.
    pub late_events: LatePolicy,
    /// A partition that has received nothing for this long (wall time, ms)
    /// follows the worker's watermark, so its timers still fire; 0 = never.
    pub idle_partition_ms: u64,
    /// Events dated before this day (UTC, YYYY-MM-DD) are refused.
    pub earliest_event_date: String,
    /// An event time more than this after the record's Kafka timestamp is
    /// dead-lettered (code `future_event`): it would move the partition's
    /// stream time, and every timer, into the future.
    pub max_future_ms: u64,
}

/// Policy for events later than the allowed lateness.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum LatePolicy {
    /// Apply it as a correction, judged as of the customer's latest evaluation.
    Apply,
    /// Send it to the dead-letter topic (code `late_event`) unapplied.
    DeadLetter,
}

/// `[checkpoint]`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CheckpointConfig {
    /// A local directory or an object store URL.
    pub url: String,
    /// How often each owned partition is checkpointed, ms; 0 = never.
    pub interval_ms: u64,
    /// Checkpoints kept per partition.
    pub keep: usize,
    /// Object store settings (`aws_endpoint`, ...).
    #[serde(default)]
    pub options: BTreeMap<String, String>,
}

/// `[recovery]`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RecoveryConfig {
    /// What happens when records the state needs are gone.
    pub on_missing_history: MissingHistory,
}

impl WorkerConfig {
    /// How often a transaction commits, ms: `commit_interval_ms` if set,
    /// else 100 under exactly-once (a change is readable at the commit) and
    /// 1000 under at-least-once (the changes are out before it; a commit
    /// stops the pipeline for its deliveries, and a crash re-sends what
    /// came after the last one), as Kafka Streams' defaults differ by
    /// guarantee (100 ms and 30 s).
    pub fn commit_interval_ms(&self) -> u64 {
        self.commit_interval_ms.unwrap_or(match self.processing_guarantee {
            ProcessingGuarantee::ExactlyOnce => 100,
            ProcessingGuarantee::AtLeastOnce => 1000,
        })
    }
}

/// What a crash may do to the outputs (Kafka Streams' `processing.guarantee`).
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ProcessingGuarantee {
    /// Changes, memberships and dead letters are part of the transaction
    /// that commits the input offsets: a `read_committed` reader sees each
    /// change once, after the commit.
    ExactlyOnce,
    /// Changes, memberships and dead letters are sent as soon as they are
    /// made and are readable once the broker has them; the decisions and
    /// the input offsets still commit in a transaction, after every output
    /// before them is delivered. A crash re-sends the outputs made after
    /// the last commit (same change ids, so readers can drop repeats).
    AtLeastOnce,
}

/// Policy for a partition whose needed records are gone.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum MissingHistory {
    /// The partition stops with an error; no state is built.
    Fail,
    /// Go on with what is there, counted and logged.
    Accept,
}

/// `[http]`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Listen address.
    pub listen: String,
}

/// `[input]`: how strictly input payloads are read.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct InputConfig {
    /// What a JSON field the schema does not have does.
    pub json_unknown_fields: JsonUnknownFields,
}

/// What a JSON field the schema does not have does.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum JsonUnknownFields {
    /// Ignored.
    Ignore,
    /// The record is dead-lettered.
    DeadLetter,
}

/// `[schema_registry]`: where writer schemas are looked up by id.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SchemaRegistryConfig {
    /// Base URL; empty: the fixed ids.
    pub url: String,
    /// Basic-auth user; empty: no auth.
    pub username: String,
    /// Environment variable holding the password.
    pub password_env: String,
    /// One request's time limit, ms.
    pub timeout_ms: u64,
}

/// `[health]`: when `/healthz` reports a worker that runs but is stuck.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HealthConfig {
    /// How long something may stand still, ms.
    pub stall_ms: u64,
    /// A producer queue at least this long is full.
    pub producer_queue_max: usize,
}

/// `[sql]`: ad-hoc queries of the live feature table (`/sql`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SqlConfig {
    /// Address of `/sql`; empty: off.
    pub listen: String,
    /// Environment variable holding the bearer token `/sql` requires.
    pub token_env: String,
    /// A query older than this reads a rebuilt feature table, ms.
    pub refresh_ms: u64,
    /// A query is cancelled after this long, ms.
    pub timeout_ms: u64,
    /// Memory of a query's operators at most, MiB.
    pub memory_limit_mb: usize,
    /// Rows an answer may hold at most.
    pub max_rows: usize,
}

/// `[log]`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// Output format.
    pub format: LogFormat,
    /// tracing filter directive.
    pub level: String,
}

/// Log output format.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Readable lines.
    Human,
    /// One JSON object per line.
    Json,
}

impl Default for Config {
    fn default() -> Self {
        // The embedded defaults are part of the build and covered by a unit test.
        Self::load(None, &[]).unwrap_or_else(|e| panic!("embedded default.toml is invalid: {e}"))
    }
}

impl TimeConfig {
    /// `earliest_event_date` as milliseconds since the epoch (midnight
    /// UTC); `None` when it is not a YYYY-MM-DD date (validation refuses it).
    pub fn earliest_event_millis(&self) -> Option<i64> {
        let day = chrono::NaiveDate::parse_from_str(self.earliest_event_date.trim(), "%Y-%m-%d").ok()?;
        Some(day.and_hms_opt(0, 0, 0)?.and_utc().timestamp_millis())
    }
}

impl Config {
    /// Loads defaults, then `file`, then the `SEGSTREAM__*` environment, then
    /// `--set` overrides; validates the result.
    pub fn load(file: Option<&Path>, overrides: &[String]) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Toml::string(DEFAULT_TOML));
        if let Some(path) = file {
            if !path.is_file() {
                return Err(ConfigError::MissingFile { path: path.display().to_string() });
            }
            figment = figment.merge(Toml::file_exact(path));
        }
        figment = figment.merge(Env::prefixed(ENV_PREFIX).split("__"));
        for given in overrides {
            let (key, raw) = given
                .split_once('=')
                .filter(|(k, _)| k.contains('.'))
                .ok_or_else(|| ConfigError::BadOverride { given: given.clone() })?;
            figment = figment.merge(Serialized::default(key.trim(), parse_value(raw)));
        }
        let mut config: Config = figment.extract().map_err(Box::new)?;
        // librdkafka's keys have dots and never underscores; environment
        // variables cannot hold dots, so `_` stands for `.` there (and anywhere).
        config.kafka.librdkafka_options = std::mem::take(&mut config.kafka.librdkafka_options)
            .into_iter()
            .map(|(key, value)| (key.replace('_', "."), value))
            .collect();
        config.validate()?;
        Ok(config)
    }

    /// Checks the rules a type cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let fail = |key: &'static str, value: String, fix: &str| {
            Err(ConfigError::Invalid { key, value, fix: fix.to_owned() })
        };
        if self.kafka.bootstrap_servers.trim().is_empty() {
            return fail("kafka.bootstrap_servers", "\"\"".into(), "set host:port of at least one broker");
        }
        if self.kafka.group_id.trim().is_empty() {
            return fail("kafka.group_id", "\"\"".into(), "set a consumer group name");
        }
        if self.worker.batch_max_events == 0 {
            return fail("worker.batch_max_events", "0".into(), "use a positive number, e.g. 5000");
        }
        if !(4_096..=1_000_000).contains(&self.worker.dead_letter_max_bytes) {
            return fail(
                "worker.dead_letter_max_bytes",
                self.worker.dead_letter_max_bytes.to_string(),
                "use 4096 to 1000000 (the producer's message.max.bytes), e.g. 524288",
            );
        }
        if self.worker.max_timers_per_step == 0 {
            return fail("worker.max_timers_per_step", "0".into(), "use a positive number, e.g. 10000");
        }
        if !(1..=MAX_THREADS).contains(&self.worker.threads) {
            return fail(
                "worker.threads",
                self.worker.threads.to_string(),
                &format!("use 1 to {MAX_THREADS}, e.g. the number of cores"),
            );
        }
        let commit_interval_ms = self.worker.commit_interval_ms();
        if commit_interval_ms == 0 || commit_interval_ms > 60_000 {
            return fail(
                "worker.commit_interval_ms",
                commit_interval_ms.to_string(),
                "use 1 to 60000 ms, e.g. 100",
            );
        }
        if self.worker.transaction_timeout_ms < 1_000
            || self.worker.transaction_timeout_ms <= commit_interval_ms
        {
            return fail(
                "worker.transaction_timeout_ms",
                self.worker.transaction_timeout_ms.to_string(),
                &format!(
                    "use at least 1000 ms and more than worker.commit_interval_ms ({commit_interval_ms}), e.g. 10000"
                ),
            );
        }
        if !(1_000..=1_800_000).contains(&self.worker.session_timeout_ms) {
            return fail(
                "worker.session_timeout_ms",
                self.worker.session_timeout_ms.to_string(),
                "use 1000 to 1800000 ms (the broker's group.min/max.session.timeout.ms bound it further), e.g. 10000",
            );
        }
        if self.topics.partitions < 1 {
            return fail("topics.partitions", self.topics.partitions.to_string(), "use 1 or more");
        }
        if self.topics.replication_factor < 1 {
            return fail(
                "topics.replication_factor",
                self.topics.replication_factor.to_string(),
                "use 1 or more",
            );
        }
        let t = &self.trainer;
        if !matches!(t.algorithm.as_str(), "kmeans" | "gmm") {
            return fail("trainer.algorithm", t.algorithm.clone(), "use \"kmeans\" or \"gmm\"");
        }
        if t.k_min < 2 || t.k_max < t.k_min || t.k_max > 50 {
            return fail(
                "trainer.k_min",
                format!("{} (k_max {})", t.k_min, t.k_max),
                "use 2 <= k_min <= k_max <= 50, e.g. 3 and 8",
            );
        }
        if t.cluster_features.is_empty() {
            return fail(
                "trainer.cluster_features",
                "[]".into(),
                "name at least one numeric feature column, e.g. [\"orders_365d\", \"revenue_365d\"]",
            );
        }
        if t.silhouette_sample < 2 * t.k_max || t.k_sample < t.silhouette_sample {
            return fail(
                "trainer.silhouette_sample",
                format!("{} (k_sample {})", t.silhouette_sample, t.k_sample),
                "use at least twice k_max and at most k_sample, e.g. 2000 and 20000",
            );
        }
        for (key, v) in [
            ("trainer.match_distance", t.match_distance),
            ("trainer.expected_horizon_days", t.expected_horizon_days),
            ("trainer.clv_horizon_days", t.clv_horizon_days),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return fail(key, v.to_string(), "use a positive number");
            }
        }
        if t.rfm_window_days != 0 && !self.features.order_windows_days.contains(&t.rfm_window_days) {
            return fail(
                "trainer.rfm_window_days",
                t.rfm_window_days.to_string(),
                &format!(
                    "use one of features.order_windows_days {:?}, or 0 for the longest",
                    self.features.order_windows_days
                ),
            );
        }
        let l = &self.lifecycle;
        for (key, v) in [
            ("lifecycle.new_days", l.new_days),
            ("lifecycle.at_risk_days", l.at_risk_days),
            ("lifecycle.churn_days", l.churn_days),
            ("lifecycle.reactivated_days", l.reactivated_days),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return fail(key, v.to_string(), "use a positive number of days");
            }
        }
        let (ar, ch) = (l.at_risk_interpurchase_multiple, l.churn_interpurchase_multiple);
        if !(ar.is_finite() && ch.is_finite() && ar >= 0.0 && ch >= 0.0)
            || (ar > 0.0) != (ch > 0.0)
            || (ar > 0.0 && ar >= ch)
        {
            return fail(
                "lifecycle.at_risk_interpurchase_multiple",
                format!("{ar} (churn multiple {ch})"),
                "set both multiples to 0 (off) or both above 0 with the at-risk one below the churn one, e.g. 3 and 6",
            );
        }
        if l.personal_min_orders < 3 {
            return fail(
                "lifecycle.personal_min_orders",
                l.personal_min_orders.to_string(),
                "use 3 or more: a mean inter-purchase time needs at least two gaps",
            );
        }
        if !(l.high_value_revenue.is_finite() && l.high_value_revenue >= 0.0) {
            return fail(
                "lifecycle.high_value_revenue",
                l.high_value_revenue.to_string(),
                "use 0 (no high_value stage) or a positive revenue",
            );
        }
        if l.high_value_window_days != 0
            && !self.features.order_windows_days.contains(&l.high_value_window_days)
        {
            return fail(
                "lifecycle.high_value_window_days",
                l.high_value_window_days.to_string(),
                &format!(
                    "use 0 (the longest order window) or one of features.order_windows_days {:?}",
                    self.features.order_windows_days
                ),
            );
        }
        if l.at_risk_days >= l.churn_days {
            return fail(
                "lifecycle.at_risk_days",
                l.at_risk_days.to_string(),
                &format!("must be below lifecycle.churn_days ({})", l.churn_days),
            );
        }
        for (key, windows, max) in [
            ("features.order_windows_days", &self.features.order_windows_days, 730),
            ("features.activity_windows_days", &self.features.activity_windows_days, 90),
        ] {
            let increasing = windows.windows(2).all(|w| w[0] < w[1]);
            if windows.is_empty()
                || windows.len() > 8
                || !increasing
                || windows[0] == 0
                || windows[windows.len() - 1] > max
            {
                return fail(
                    key,
                    format!("{windows:?}"),
                    &format!("use 1 to 8 increasing whole numbers of days from 1 to {max}, e.g. [7, 30]"),
                );
            }
        }
        let cart_max = self.features.activity_retention_days() * 24;
        if !(1..=cart_max).contains(&i64::from(self.features.cart_abandon_hours)) {
            return fail(
                "features.cart_abandon_hours",
                self.features.cart_abandon_hours.to_string(),
                &format!("use 1 to {cart_max} hours (the longest activity window), e.g. 24"),
            );
        }
        if !(2..=100_000).contains(&self.features.max_orders_kept) {
            return fail(
                "features.max_orders_kept",
                self.features.max_orders_kept.to_string(),
                "use a number of orders from 2 to 100000, e.g. 250",
            );
        }
        if !(1..=1440).contains(&self.features.session_gap_minutes) {
            return fail(
                "features.session_gap_minutes",
                self.features.session_gap_minutes.to_string(),
                "use a number of minutes from 1 to 1440 (a day), e.g. 30",
            );
        }
        if self.checkpoint.interval_ms > 0 && self.checkpoint.url.trim().is_empty() {
            return fail(
                "checkpoint.url",
                "\"\"".into(),
                "set a directory or an object store URL (s3://bucket/prefix), or checkpoint.interval_ms = 0",
            );
        }
        if self.checkpoint.keep == 0 {
            return fail("checkpoint.keep", "0".into(), "keep at least 1 checkpoint per partition, e.g. 3");
        }
        if self.http.listen.parse::<std::net::SocketAddr>().is_err() {
            return fail(
                "http.listen",
                format!("{:?}", self.http.listen),
                "use ip:port, e.g. 127.0.0.1:9898",
            );
        }
        if !self.sql.listen.is_empty() && self.sql.listen.parse::<std::net::SocketAddr>().is_err() {
            return fail(
                "sql.listen",
                format!("{:?}", self.sql.listen),
                "use ip:port, e.g. 127.0.0.1:9899, or \"\" to keep /sql off",
            );
        }
        if self.sql.token_env.is_empty() {
            return fail(
                "sql.token_env",
                "\"\"".into(),
                "name an environment variable, e.g. SEGSTREAM_SQL_TOKEN",
            );
        }
        if self.time.earliest_event_millis().is_none_or(|ms| ms < 0) {
            return fail(
                "time.earliest_event_date",
                format!("{:?}", self.time.earliest_event_date),
                "use a day as YYYY-MM-DD from 1970-01-01 on (state counts days since 1970), e.g. 1975-01-01",
            );
        }
        let url = &self.schema_registry.url;
        if !(url.is_empty() || url.starts_with("http://") || url.starts_with("https://")) {
            return fail(
                "schema_registry.url",
                format!("{:?}", self.schema_registry.url),
                "use http://host:port or https://host, or \"\" for the fixed schema ids",
            );
        }
        if self.topics.dead_letter_retention_ms == 0 || self.topics.dead_letter_retention_ms < -1 {
            return fail(
                "topics.dead_letter_retention_ms",
                self.topics.dead_letter_retention_ms.to_string(),
                "use a positive number of ms (604800000 is 7 days), or -1 to keep dead letters for ever",
            );
        }
        if self.health.stall_ms == 0 {
            return fail("health.stall_ms", "0".into(), "use a positive number of ms, e.g. 120000");
        }
        if self.sql.timeout_ms == 0 {
            return fail("sql.timeout_ms", "0".into(), "use a positive number of ms, e.g. 10000");
        }
        if self.sql.memory_limit_mb == 0 {
            return fail("sql.memory_limit_mb", "0".into(), "use a positive number of MiB, e.g. 256");
        }
        if self.sql.max_rows == 0 {
            return fail("sql.max_rows", "0".into(), "use a positive number, e.g. 10000");
        }
        Ok(())
    }

    /// The configuration of pipeline thread `index` of `worker.threads`:
    /// with more than one, each is its own static group member and
    /// transactional producer, so its instance id is the worker's with
    /// `-<index>` after it.
    pub fn pipeline(&self, index: usize) -> Self {
        let mut c = self.clone();
        if self.worker.threads > 1 {
            c.worker.instance_id = format!("{}-{index}", self.instance_id());
        }
        c
    }

    /// The worker's instance id, falling back to the host name.
    pub fn instance_id(&self) -> String {
        if !self.worker.instance_id.is_empty() {
            return self.worker.instance_id.clone();
        }
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "worker".to_owned())
    }
}

/// A `--set` value: TOML syntax when it parses (numbers, booleans, tables),
/// else the raw text as a string. TOML dates and times stay text: every
/// date we take is a string (`1990-01-01`).
fn parse_value(raw: &str) -> figment::value::Value {
    let raw = raw.trim();
    toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|t| t.get("v").cloned())
        .filter(|v| !v.is_datetime())
        .and_then(|v| figment::value::Value::serialize(v).ok())
        .unwrap_or_else(|| figment::value::Value::from(raw.to_owned()))
}

#[cfg(test)]
mod tests;
