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

    /// The UTC calendar date, `YYYY-MM-DD`, for messages people read (an invite's expiry).
    pub fn date(self) -> String {
        let (year, month, day) = civil_from_days(self.day());
        format!("{year:04}-{month:02}-{day:02}")
    }
}

impl std::fmt::Display for Timestamp {
    /// `YYYY-MM-DD HH:MM UTC`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let minutes = (self.0 % Self::DAY) / (60 * Self::SECOND);
        write!(f, "{} {:02}:{:02} UTC", self.date(), minutes / 60, minutes % 60)
    }
}

/// The proleptic Gregorian date of `days` since 1970-01-01 (Howard Hinnant's `civil_from_days`,
/// for days on or after the epoch).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 { shifted_month + 3 } else { shifted_month - 9 };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_gregorian_utc() {
        assert_eq!(Timestamp(0).date(), "1970-01-01");
        assert_eq!(Timestamp(951_782_400_000).date(), "2000-02-29");
        assert_eq!(Timestamp(951_868_800_000).date(), "2000-03-01");
        assert_eq!(Timestamp(1_795_219_200_000).date(), "2026-11-21");
        assert_eq!(Timestamp(4_107_456_000_000).date(), "2100-02-28");
        assert_eq!(Timestamp(4_107_542_400_000).date(), "2100-03-01");
        assert_eq!(
            Timestamp(1_795_219_200_000 + 13 * Timestamp::HOUR + 5 * 60_000).to_string(),
            "2026-11-21 13:05 UTC"
        );
    }
}
