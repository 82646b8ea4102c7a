//! Small ids for the few distinct strings many customers share (categories,
//! payment methods), so each order keeps 2 bytes instead of a string.
//!
//! Ids depend on arrival order and never leave the process: features map them
//! back to names, and ties between names are broken by name, so results do
//! not depend on which worker saw a name first.

use std::collections::HashMap;
use std::sync::Arc;

/// The id of "no value".
pub const NONE: u16 = 0;
/// Name given to every string past a dictionary's capacity.
pub const OVERFLOW: &str = "(other)";

/// One dictionary of names.
#[derive(Debug, Clone)]
pub struct Dictionary {
    names: Vec<Arc<str>>,
    ids: HashMap<Arc<str>, u16>,
    /// Largest id; the last one stands for every name past capacity.
    max_id: u16,
    overflow: Arc<str>,
}

impl Dictionary {
    /// A dictionary with ids 1..=max_id (`max_id` is the overflow id).
    pub fn new(max_id: u16) -> Self {
        Self { names: Vec::new(), ids: HashMap::new(), max_id: max_id.max(1), overflow: Arc::from(OVERFLOW) }
    }

    /// A dictionary holding `names` at ids 1, 2, ... (as [`Dictionary::names`] gave them).
    pub fn with_names(max_id: u16, names: Vec<Arc<str>>) -> Self {
        let mut d = Self::new(max_id);
        for name in names {
            d.intern(&name);
        }
        d
    }

    /// The names, in id order from id 1.
    pub fn names(&self) -> &[Arc<str>] {
        &self.names
    }

    /// The id of `name`, assigned on first sight.
    pub fn intern(&mut self, name: &str) -> u16 {
        if let Some(id) = self.ids.get(name) {
            return *id;
        }
        let next = self.names.len() + 1;
        match u16::try_from(next) {
            Ok(id) if id < self.max_id => {
                let name: Arc<str> = Arc::from(name);
                self.names.push(Arc::clone(&name));
                self.ids.insert(name, id);
                id
            }
            _ => self.max_id,
        }
    }

    /// The name of an id; `None` for [`NONE`] or an unknown id.
    pub fn name(&self, id: u16) -> Option<Arc<str>> {
        match id {
            NONE => None,
            id if id == self.max_id => Some(Arc::clone(&self.overflow)),
            id => self.names.get(usize::from(id) - 1).cloned(),
        }
    }
}

impl Dictionary {
    /// How the ids of a saved dictionary (`names`, in id order) map to this
    /// one's: interns every saved name and returns `map` with
    /// `map[old] = new` ([`NONE`] maps to itself; ids past the saved names,
    /// the overflow id, to this one's overflow id).
    pub fn adopt(&mut self, names: &[Arc<str>]) -> Vec<u16> {
        let mut map = Vec::with_capacity(names.len() + 1);
        map.push(NONE);
        for name in names {
            map.push(self.intern(name));
        }
        map
    }

    /// A saved id translated by a map from [`Dictionary::adopt`].
    pub fn translate(&self, map: &[u16], old: u16) -> u16 {
        map.get(usize::from(old)).copied().unwrap_or(self.max_id)
    }
}

/// The dictionaries one worker shares across its customers.
#[derive(Debug, Clone)]
pub struct Dictionaries {
    /// Product categories (primary category of each order).
    pub categories: Dictionary,
    /// Payment methods (ids fit a byte).
    pub payments: Dictionary,
}

impl Default for Dictionaries {
    fn default() -> Self {
        Self::with_names(Vec::new(), Vec::new())
    }
}

impl Dictionaries {
    /// Dictionaries holding these names, in id order (as saved from
    /// [`Dictionary::names`]).
    pub fn with_names(categories: Vec<Arc<str>>, payments: Vec<Arc<str>>) -> Self {
        Self {
            categories: Dictionary::with_names(u16::MAX, categories),
            payments: Dictionary::with_names(u16::from(u8::MAX), payments),
        }
    }
}
