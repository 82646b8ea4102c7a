//! Per-customer features, kept incrementally from decoded events.
//!
//! The state of a customer is bounded by time, not by the number of events:
//! orders are kept for the longest order window, click activity as daily
//! buckets and sessions for the longest activity window, the cart as its
//! latest adds and removes; older data folds into a few lifetime scalars.
//! [`CustomerState::apply_click`] applies a click whole: de-duplication,
//! its session, the cart, and its day's counts (kinds, part of the day,
//! device), so every feature is exact after each event.
//! [`CustomerState::features`] reads the windows at any event time, so the
//! same state answers "as of the event" and "as of a later timer".

mod dictionary;
mod state;

pub use dictionary::{Dictionaries, Dictionary, NONE, OVERFLOW};
pub use state::{
    ActivityWindow, CART_LINES, CustomerState, DAYPARTS, DEVICES, Features, Money, OrderReturn, OrderWindow,
};

#[cfg(test)]
mod tests;
