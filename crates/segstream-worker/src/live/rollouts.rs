//! Segment definitions rolled out to the group (`segstream segments
//! rollout`): the definitions topic, read whole at start and followed
//! between batches. The highest version published for the group, or the
//! configured file's when it is higher, is the one the group should be
//! under; the pipeline puts it in force per partition as a recorded
//! decision, so a rebuild puts it in force at the same point.

use std::sync::Arc;

use segstream_config::Config;
use segstream_events::DefinitionsRollout;
use segstream_segments::SegmentRules;
use segstream_telemetry::Metrics;

use crate::error::WorkerError;
use segstream_kafka::{Follower, Read};

/// See the module documentation.
#[derive(Debug)]
pub(crate) struct Rollouts {
    follower: Follower,
    group: String,
    /// The configured rules, which others are built from.
    configured: SegmentRules,
    features: segstream_config::FeaturesConfig,
    /// The rules the group should be under.
    desired: Arc<SegmentRules>,
    metrics: Metrics,
}

impl Rollouts {
    /// Reads the whole definitions topic.
    pub(crate) fn load(
        config: &Config,
        configured: SegmentRules,
        metrics: Metrics,
    ) -> Result<Self, WorkerError> {
        let (follower, records) = Follower::load(config, &config.topics.definitions)?;
        let mut rollouts = Self {
            follower,
            group: config.kafka.group_id.clone(),
            desired: Arc::new(configured.clone()),
            configured,
            features: config.features.clone(),
            metrics,
        };
        for read in records {
            rollouts.note(read);
        }
        let version = rollouts.desired.definitions.version;
        rollouts.metrics.definitions_version.set(i64::from(version));
        tracing::info!(topic = %rollouts.follower.topic(), version, "segment definitions in force for the group");
        Ok(rollouts)
    }

    /// The rules the group should be under, after what was published since
    /// the last look.
    pub(crate) fn desired(&mut self) -> &Arc<SegmentRules> {
        for read in self.follower.poll_new() {
            self.note(read);
        }
        &self.desired
    }

    /// Takes a rollout for this group if its version is higher than the one
    /// in force and it can be used; otherwise says why not, and the
    /// version in force stays.
    fn note(&mut self, read: Read) {
        if read.key.as_deref() != Some(self.group.as_bytes()) {
            return;
        }
        let topic = self.follower.topic().to_owned();
        let Some(rollout) = read.value.as_deref().and_then(DefinitionsRollout::from_json) else {
            tracing::error!(%topic, offset = read.offset, "a record of the definitions topic is not a rollout: skipped");
            self.metrics.definitions_rollouts.with_label_values(&["refused"]).inc();
            return;
        };
        let in_force = &self.desired.definitions;
        if rollout.version <= in_force.version {
            if rollout.version == in_force.version && *rollout.definitions == *in_force.text {
                return;
            }
            tracing::warn!(
                %topic,
                offset = read.offset,
                version = rollout.version,
                in_force = in_force.version,
                "a rolled-out definitions version is not above the one in force: ignored (raise `version`)"
            );
            self.metrics.definitions_rollouts.with_label_values(&["stale"]).inc();
            return;
        }
        let origin = format!("version {} rolled out on {topic}", rollout.version);
        match self.configured.with_definitions(&rollout.definitions, &origin, &self.features) {
            Ok(rules) => {
                tracing::info!(%topic, version = rollout.version, "new segment definitions rolled out");
                self.metrics.definitions_rollouts.with_label_values(&["applied"]).inc();
                self.metrics.definitions_version.set(i64::from(rollout.version));
                self.desired = Arc::new(rules);
            }
            Err(e) => {
                tracing::error!(%topic, error = %e, in_force = in_force.version, "rolled-out definitions refused; the version in force stays");
                self.metrics.definitions_rollouts.with_label_values(&["refused"]).inc();
            }
        }
    }
}
