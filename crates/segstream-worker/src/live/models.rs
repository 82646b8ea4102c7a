//! Trained models (`segstream train`): the compacted models topic, read
//! whole at start and followed between batches. The highest version
//! published for the group that this worker can score with is the one the
//! group should be under; the pipeline puts it in force per partition as a
//! recorded decision, so a rebuild puts it in force at the same point.

use std::sync::Arc;

use segstream_config::Config;
use segstream_kafka::{Follower, Read};
use segstream_segments::{ModelRules, SegmentRules};
use segstream_telemetry::Metrics;

use crate::error::WorkerError;

/// A model the group should be under: its version and record.
#[derive(Clone, Debug)]
pub(crate) struct DesiredModel {
    pub(crate) version: i64,
    pub(crate) record: Arc<[u8]>,
}

/// See the module documentation.
#[derive(Debug)]
pub(crate) struct Models {
    follower: Follower,
    group: String,
    /// The configured rules: a model must go with them to be taken.
    configured: SegmentRules,
    features: segstream_config::FeaturesConfig,
    desired: Option<DesiredModel>,
    metrics: Metrics,
}

impl Models {
    /// Reads the whole models topic.
    pub(crate) fn load(
        config: &Config,
        configured: SegmentRules,
        metrics: Metrics,
    ) -> Result<Self, WorkerError> {
        let (follower, records) = Follower::load(config, &config.topics.models)?;
        let mut models = Self {
            follower,
            group: config.kafka.group_id.clone(),
            configured,
            features: config.features.clone(),
            desired: None,
            metrics,
        };
        for read in records {
            models.note(read);
        }
        let version = models.desired.as_ref().map(|m| m.version);
        tracing::info!(topic = %models.follower.topic(), ?version, "trained model in force for the group");
        Ok(models)
    }

    /// The model the group should be under, after what was published since
    /// the last look.
    pub(crate) fn desired(&mut self) -> Option<&DesiredModel> {
        for read in self.follower.poll_new() {
            self.note(read);
        }
        self.desired.as_ref()
    }

    /// Takes a model for this group if its version is higher than the one
    /// in force and this worker can use it; otherwise says why not, and the
    /// model in force stays.
    fn note(&mut self, read: Read) {
        if read.key.as_deref() != Some(self.group.as_bytes()) {
            return;
        }
        let topic = self.follower.topic().to_owned();
        let Some(record) = read.value else { return };
        let checked = ModelRules::from_record(&record, &self.features)
            .map_err(|e| e.to_string())
            .and_then(|model| self.configured.with_model(Arc::new(model)));
        let model = match checked {
            Ok(rules) => rules.model,
            Err(error) => {
                let in_force = self.desired.as_ref().map(|m| m.version);
                tracing::error!(%topic, offset = read.offset, %error, ?in_force, "a published model is refused; the model in force stays");
                self.metrics.model_swaps.with_label_values(&["refused"]).inc();
                return;
            }
        };
        let Some(model) = model else { return };
        let version = model.version();
        if let Some(in_force) = self.desired.as_ref().filter(|m| m.version >= version) {
            if in_force.version > version {
                tracing::warn!(%topic, offset = read.offset, version, in_force = in_force.version, "a published model is older than the one in force: ignored");
                self.metrics.model_swaps.with_label_values(&["stale"]).inc();
            }
            return;
        }
        tracing::info!(%topic, version, trained_at = model.model().trained_at, "new trained model");
        self.metrics.model_swaps.with_label_values(&["applied"]).inc();
        self.metrics.model_version.set(version);
        self.metrics.model_trained_timestamp.set(model.model().trained_at / 1000);
        self.desired = Some(DesiredModel { version, record: Arc::clone(model.record()) });
    }
}
