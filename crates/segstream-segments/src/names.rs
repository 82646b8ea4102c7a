//! Segment names from definitions files, as `&'static str` like the
//! built-in ones: transitions, population gauges and metric labels copy a
//! pointer, not a string.

use std::collections::BTreeSet;
use std::sync::{Mutex, PoisonError};

static NAMES: Mutex<BTreeSet<&'static str>> = Mutex::new(BTreeSet::new());

/// The one `&'static str` of `name`. Each distinct name is allocated once
/// for the life of the process: definitions name few segments, and a new
/// version mostly repeats the old names.
pub(crate) fn intern(name: &str) -> &'static str {
    let mut names = NAMES.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(known) = names.get(name) {
        return known;
    }
    let leaked: &'static str = Box::leak(name.to_owned().into_boxed_str());
    names.insert(leaked);
    leaked
}
