//! Per-customer features, kept incrementally from decoded events.
//!
//! The state of a customer is bounded: orders are kept for the longest window
//! (365 days) and click activity as daily buckets for 30 days; older data
//! folds into a few lifetime scalars. [`CustomerState::features`] reads the
//! windows at any event time, so the same state answers "as of the event" and
//! "as of a later timer".

mod state;

pub use state::{CustomerState, Features, Money};

#[cfg(test)]
mod tests;
