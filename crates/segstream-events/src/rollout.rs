//! Segment definitions rolled out to running workers, on the compacted
//! definitions topic: key = the consumer group, value = the definitions
//! file whole and its version. Every worker of the group reads it; the
//! highest version published is in force.

use serde::{Deserialize, Serialize};

/// One rollout: a segment definitions file (TOML) and its version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DefinitionsRollout {
    /// The `version` of the file.
    pub version: i32,
    /// The file, whole.
    pub definitions: String,
}

impl DefinitionsRollout {
    /// The record value (JSON).
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Reads a record value; `None` when it is not a rollout.
    pub fn from_json(value: &[u8]) -> Option<Self> {
        serde_json::from_slice(value).ok()
    }
}
