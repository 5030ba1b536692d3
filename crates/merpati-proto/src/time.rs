//! Wall-clock time as the protocol sees it: milliseconds since the Unix epoch, always passed in.

use serde::{Deserialize, Serialize};

/// A point in time, in milliseconds since 1970-01-01T00:00:00Z.
///
/// The protocol crate never reads a clock: callers pass the current time into every operation that
/// depends on it, which keeps sessions deterministic under test.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Timestamp(pub u64);

impl Timestamp {
    /// One second.
    pub const SECOND: u64 = 1_000;
    /// One hour.
    pub const HOUR: u64 = 3_600 * Self::SECOND;
    /// One day.
    pub const DAY: u64 = 24 * Self::HOUR;

    /// Milliseconds since the Unix epoch.
    pub fn millis(self) -> u64 {
        self.0
    }

    /// This time plus `millis`, saturating.
    pub fn plus(self, millis: u64) -> Self {
        Self(self.0.saturating_add(millis))
    }

    /// Milliseconds from `earlier` to `self`, or 0 if `earlier` is later.
    pub fn since(self, earlier: Self) -> u64 {
        self.0.saturating_sub(earlier.0)
    }

    /// The whole day number (days since the Unix epoch), used to rotate mailbox ids.
    pub fn day(self) -> u64 {
        self.0 / Self::DAY
    }
}
