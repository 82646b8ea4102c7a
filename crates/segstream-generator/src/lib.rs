//! Deterministic synthetic e-commerce traffic.
//!
//! Customers get a persona (loyal, bargain hunter, one-time buyer, browser,
//! churning, reactivating) and a profile drawn from it: preferred device,
//! categories, payment method, hours of activity, visit rate, order rhythm,
//! basket value and appetite for discounts. Each simulated day, each active
//! customer may visit in sessions (page views, searches, product views,
//! carts: some abandoned, some checked out into orders); orders are sometimes
//! cancelled or refunded later. Activity follows a daily curve, a weekly one
//! (weekends busier) and a yearly one (November-December peak).
//!
//! Everything is a function of the seed: the same seed gives the same events,
//! ids included. Events of a day come out sorted by event time.

mod generator;
mod persona;

pub use generator::{Event, GeneratedDay, Generator, GeneratorOptions, Totals};
pub use persona::Persona;

#[cfg(test)]
mod tests;
