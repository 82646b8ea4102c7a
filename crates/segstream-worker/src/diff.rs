//! `segstream segments diff`: what new segment definitions would change,
//! before anything changes. Computed on the group's latest checkpoints (the
//! running workers' committed state, at most `checkpoint.interval_ms`
//! behind) or on a snapshot file, with the worker's own code path: each
//! partition's customers under the definitions they are under, then every
//! customer evaluated once under the new ones, as a rollout would.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use segstream_checkpoint::CheckpointStore;
use segstream_config::Config;
use segstream_events::{CustomerId, EventTime, SegmentKind, Trigger};
use segstream_segments::{SegmentRules, Transition};

use crate::checkpoint::PartitionState;
use crate::error::WorkerError;
use crate::snapshot::Snapshot;
use crate::store::CustomerStore;

/// Where the state a diff reads comes from.
#[derive(Debug, Clone, Copy)]
pub enum DiffSource<'a> {
    /// The latest checkpoint of every partition of the configured group
    /// (`topics.partitions` of them).
    Checkpoints,
    /// A snapshot file written by `segstream backfill`.
    Snapshot(&'a Path),
}

/// Entries and exits of one segment.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct SegmentMoves {
    /// Customers who would enter it.
    pub entered: u64,
    /// Customers who would leave it.
    pub exited: u64,
    /// Some of those entering (the first, in partition and first-seen order).
    pub entering: Vec<CustomerId>,
    /// Some of those leaving.
    pub leaving: Vec<CustomerId>,
}

/// What a rollout of new definitions would do to a state.
#[derive(Debug, Clone, PartialEq)]
pub struct DefinitionsDiff {
    /// Versions the state is under now (per partition they may differ).
    pub from_versions: Vec<i32>,
    /// The new definitions' version.
    pub to_version: i32,
    /// Customers evaluated.
    pub customers: usize,
    /// Latest time the state was evaluated at (its watermark).
    pub as_of: Option<EventTime>,
    /// Per kind and segment, those that change.
    pub segments: BTreeMap<(SegmentKind, String), SegmentMoves>,
}

/// The diff of the definitions `text` (`origin` names it in errors)
/// against the state `source` holds, with up to `sample` customers named
/// per segment and direction. Reading checkpoints is async; the
/// evaluation runs off the runtime.
pub async fn diff_definitions(
    config: &Config,
    text: &str,
    origin: &str,
    source: DiffSource<'_>,
    sample: usize,
) -> Result<DefinitionsDiff, WorkerError> {
    let mut states = Vec::new();
    if let DiffSource::Checkpoints = source {
        let group = &config.kafka.group_id;
        let checkpoints = CheckpointStore::open(&config.checkpoint.url, &config.checkpoint.options, group)?;
        for partition in 0..config.topics.partitions {
            let Some(latest) = checkpoints.list(partition).await?.pop() else { continue };
            states.push(
                PartitionState::decode(&checkpoints.get(&latest).await?).map_err(WorkerError::Snapshot)?,
            );
        }
    }
    let snapshot = match source {
        DiffSource::Snapshot(path) => Some(path.to_owned()),
        DiffSource::Checkpoints => None,
    };
    let (config, text, origin) = (config.clone(), text.to_owned(), origin.to_owned());
    // Building the state and evaluating it is CPU work (and plans DataFusion): off the runtime.
    tokio::task::spawn_blocking(move || {
        let configured = SegmentRules::from_config(&config)?;
        let new = Arc::new(configured.with_definitions(&text, &origin, &config.features)?);
        let (store, at) = match snapshot {
            Some(path) => {
                let snapshot = Snapshot::read(&path)?;
                let as_of = snapshot.as_of;
                let store = CustomerStore::from_snapshot(configured, config.features.clone(), snapshot)?;
                let at = store.partitions().into_iter().map(|p| (p, as_of)).collect();
                (store, at)
            }
            None => restore(&config, configured, states)?,
        };
        tally(store, &at, &new, sample)
    })
    .await
    .map_err(|e| WorkerError::Snapshot(format!("the diff's evaluation stopped: {e}")))?
}

/// One store holding every checkpoint's partition, each under the
/// definitions it was under, and each partition's watermark.
fn restore(
    config: &Config,
    configured: SegmentRules,
    states: Vec<PartitionState>,
) -> Result<(CustomerStore, Vec<(i32, EventTime)>), WorkerError> {
    let lateness = i64::try_from(config.time.allowed_lateness_ms).unwrap_or(i64::MAX);
    let mut store = CustomerStore::new(configured, config.features.clone())?;
    let mut at = Vec::new();
    for state in states {
        let partition = state.partition;
        if state.features != config.features {
            return Err(WorkerError::Snapshot(format!(
                "the checkpoint of partition {partition} was kept with other [features] than this configuration's: use the configuration the workers run with"
            )));
        }
        store.restore_rules(partition, state.definitions.as_deref(), state.model.as_deref())?;
        store.restore_partition(state.customers, &state.categories, &state.payments);
        at.push((
            partition,
            state.stream_time.map_or(EventTime::from_millis(0), |t| t.plus_millis(-lateness)),
        ));
    }
    Ok((store, at))
}

/// Every partition of `store` evaluated once under `new`, the changes
/// counted per segment.
fn tally(
    mut store: CustomerStore,
    at: &[(i32, EventTime)],
    new: &Arc<SegmentRules>,
    sample: usize,
) -> Result<DefinitionsDiff, WorkerError> {
    let mut from_versions: Vec<i32> = at.iter().map(|(p, _)| store.definitions(*p).version).collect();
    from_versions.sort_unstable();
    from_versions.dedup();
    let mut segments: BTreeMap<(SegmentKind, String), SegmentMoves> = BTreeMap::new();
    let mut note = |id: &CustomerId, t: &Transition| {
        for (name, entered) in [(t.to, true), (t.from, false)] {
            let Some(name) = name else { continue };
            let moves = segments.entry((t.kind, name.to_owned())).or_default();
            let (count, names) = if entered {
                (&mut moves.entered, &mut moves.entering)
            } else {
                (&mut moves.exited, &mut moves.leaving)
            };
            *count += 1;
            if names.len() < sample {
                names.push(id.clone());
            }
        }
    };
    for (partition, time) in at {
        for (id, transitions) in store.redefine(*partition, Arc::clone(new), *time, Trigger::DefinitionChange)
        {
            transitions.iter().for_each(|t| note(&id, t));
        }
        let (custom, _) = store.evaluate_custom()?;
        for fired in custom {
            fired.transitions.iter().for_each(|t| note(&fired.id, t));
        }
    }
    Ok(DefinitionsDiff {
        from_versions,
        to_version: new.definitions.version,
        customers: store.len(),
        as_of: at.iter().map(|(_, t)| *t).max(),
        segments,
    })
}
