//! Per-customer features, kept incrementally from decoded events.
//!
//! The state of a customer is bounded by time, not by the number of events:
//! orders are kept for the longest order window, click activity as daily
//! buckets and sessions for the longest activity window, the cart as its
//! latest adds and removes; older data folds into a few lifetime scalars.
//! Clicks arrive in two parts: [`CustomerState::apply_click`] per event
//! (sessions, cart, de-duplication) and [`CustomerState::merge_day`] per
//! micro-batch (the day's counts, computed by the DataFusion plan in
//! `segstream-sql`).
//! [`CustomerState::features`] reads the windows at any event time, so the
//! same state answers "as of the event" and "as of a later timer".

mod dictionary;
mod state;

pub use dictionary::{Dictionaries, Dictionary, NONE, OVERFLOW};
pub use state::{
    ActivityWindow, CART_LINES, CustomerState, DAYPARTS, DEVICES, DayCounts, Features, Money, OrderReturn,
    OrderWindow,
};

#[cfg(test)]
mod tests;
