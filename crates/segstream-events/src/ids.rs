use std::fmt;
use std::num::NonZeroU64;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Stable identifier of a customer, as sent by the shop (also the Kafka key).
///
/// Cheap to clone: the per-customer state, segment changes and memberships
/// all refer to the same id.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CustomerId(Arc<str>);

impl CustomerId {
    /// Wraps an id; callers validate non-emptiness where input enters.
    pub fn new(id: impl AsRef<str>) -> Self {
        Self(Arc::from(id.as_ref()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::borrow::Borrow<str> for CustomerId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for CustomerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CustomerId({})", &self.0)
    }
}

impl fmt::Display for CustomerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Event time: milliseconds since the Unix epoch, UTC.
///
/// All segment logic runs on event time, never on arrival time, so that a
/// replay of last year's data gives the segments it gave live.
///
/// Kept in offset binary (milliseconds + 2^63, as unsigned): the order is the
/// order of the milliseconds, and `i64::MIN` ms (292 million years BC,
/// clamped to the next millisecond) is free to mean `None`, so an
/// `Option<EventTime>` is 8 bytes, not 16. A customer's state holds nine.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventTime(NonZeroU64);

const SIGN: u64 = 1 << 63;

impl Serialize for EventTime {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_i64(self.millis())
    }
}

impl<'de> Deserialize<'de> for EventTime {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        i64::deserialize(d).map(Self::from_millis)
    }
}

/// Milliseconds in one day.
const DAY_MS: i64 = 86_400_000;

impl EventTime {
    /// From milliseconds since the epoch.
    #[inline]
    pub const fn from_millis(ms: i64) -> Self {
        match NonZeroU64::new((ms as u64) ^ SIGN) {
            Some(v) => Self(v),
            // i64::MIN itself: the millisecond after it.
            None => Self(NonZeroU64::MIN),
        }
    }

    /// Milliseconds since the epoch.
    #[inline]
    pub const fn millis(self) -> i64 {
        (self.0.get() ^ SIGN) as i64
    }

    /// Days since the epoch (floor), the unit of our daily feature buckets.
    #[inline]
    pub const fn day(self) -> i64 {
        self.millis().div_euclid(DAY_MS)
    }

    /// This time plus a number of (possibly fractional) days.
    #[inline]
    pub fn plus_days(self, days: f64) -> Self {
        // Durations in config are at most a few years, far inside f64's exact range.
        Self::from_millis(self.millis().saturating_add((days * DAY_MS as f64) as i64))
    }

    /// This time plus milliseconds.
    #[inline]
    pub const fn plus_millis(self, ms: i64) -> Self {
        Self::from_millis(self.millis().saturating_add(ms))
    }

    /// Days elapsed from `earlier` to `self`, as a fraction.
    #[inline]
    pub fn days_since(self, earlier: EventTime) -> f64 {
        (self.millis() - earlier.millis()) as f64 / DAY_MS as f64
    }

    /// The wall clock now, for emit times only.
    pub fn now() -> Self {
        Self::from_millis(chrono::Utc::now().timestamp_millis())
    }
}

impl fmt::Debug for EventTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EventTime({self})")
    }
}

impl fmt::Display for EventTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match chrono::DateTime::from_timestamp_millis(self.millis()) {
            Some(t) => write!(f, "{}", t.format("%Y-%m-%dT%H:%M:%S%.3fZ")),
            None => write!(f, "{}ms", self.millis()),
        }
    }
}
