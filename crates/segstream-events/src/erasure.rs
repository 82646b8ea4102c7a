//! Erasure requests (right to be forgotten) on the compacted erasures topic:
//! key = the customer id, value = when the erasure was asked for. The
//! customer's events up to that time are never applied again (live, after a
//! restart, in a rebuild); their state, memberships and checkpointed copies
//! go.

use serde::{Deserialize, Serialize};

use crate::ids::EventTime;

/// One erasure: the customer's events with an event time up to
/// `requested_at` are forgotten.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErasureRequest {
    /// When the erasure was asked for (wall clock of `segstream forget`),
    /// milliseconds since the epoch.
    pub requested_at: EventTime,
}

impl ErasureRequest {
    /// The record value (JSON).
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Reads a record value; `None` when it is not an erasure request.
    pub fn from_json(value: &[u8]) -> Option<Self> {
        serde_json::from_slice(value).ok()
    }
}
