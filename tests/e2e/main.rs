//! End-to-end tests: the real `segstream` binary against a real Apache Kafka
//! broker started by the harness (one per run of this test binary).

#![allow(missing_docs, clippy::unwrap_used)]

#[path = "../support/mod.rs"]
mod support;

mod checkpoints;
mod erasure;
mod exactly_once;
mod lifecycle;
mod operations;
mod recovery;
mod registry;
mod replay;
mod segments;
mod time;
mod trainer;
