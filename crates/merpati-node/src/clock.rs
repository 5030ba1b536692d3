//! The one clock every timestamp a daemon acts on comes from, for both roles.
//!
//! Time decides a lot in Merpati: which mailbox id a sender writes to today, which ids a node
//! fetches, when prekeys rotate, when the storage key is replaced, when a relay forgets an
//! envelope. All of it reads a [`Clock`], so tests can move it: an in-process test advances a
//! clock it shares with the code under test, and an end-to-end test starts real daemons "days
//! later" with `MERPATI_CLOCK_OFFSET` (see [`Clock::from_env`]). Timers still run on the
//! monotonic clock; only the wall-clock time that the protocol sees moves.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use merpati_proto::Timestamp;

/// The environment variable that shifts a daemon's clock, e.g. `3d`, `-12h`, `90m`, `45s`.
pub const OFFSET_VARIABLE: &str = "MERPATI_CLOCK_OFFSET";

/// The wall clock, shifted by an offset that every clone shares (0 unless a test moves it).
#[derive(Debug, Clone, Default)]
pub struct Clock {
    offset_ms: Arc<AtomicI64>,
}

impl Clock {
    /// The system's wall clock.
    pub fn system() -> Self {
        Self::default()
    }

    /// The system's wall clock shifted by `offset_ms` (negative: in the past).
    pub fn with_offset(offset_ms: i64) -> Self {
        Self { offset_ms: Arc::new(AtomicI64::new(offset_ms)) }
    }

    /// The system clock shifted by [`OFFSET_VARIABLE`] if it is set; an offset that does not parse
    /// is an error naming the variable, never silently ignored.
    pub fn from_env() -> Result<Self, String> {
        match std::env::var(OFFSET_VARIABLE) {
            Ok(text) => parse_offset(&text)
                .map(Self::with_offset)
                .map_err(|e| format!("{OFFSET_VARIABLE}={text:?}: {e}")),
            Err(std::env::VarError::NotPresent) => Ok(Self::system()),
            Err(std::env::VarError::NotUnicode(_)) => Err(format!("{OFFSET_VARIABLE} is not valid text")),
        }
    }

    /// The current time (0 if the shifted clock is before 1970).
    pub fn now(&self) -> Timestamp {
        let millis = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis());
        let millis = i64::try_from(millis).unwrap_or(i64::MAX);
        let shifted = millis.saturating_add(self.offset_ms.load(Ordering::Relaxed));
        Timestamp(u64::try_from(shifted).unwrap_or(0))
    }

    /// Moves this clock, and every clone of it, by `ms` (negative: back).
    pub fn advance(&self, ms: i64) {
        self.offset_ms.fetch_add(ms, Ordering::Relaxed);
    }

    /// How far this clock is from the system's, in milliseconds.
    pub fn offset_ms(&self) -> i64 {
        self.offset_ms.load(Ordering::Relaxed)
    }
}

/// Parses an offset such as `3d`, `-12h`, `+90m`, `45s` or `1500ms` into milliseconds.
pub fn parse_offset(text: &str) -> Result<i64, String> {
    let text = text.trim();
    let (negative, rest) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let split = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
    let (number, unit) = rest.split_at(split);
    let number: i64 = number.parse().map_err(|_| "expected a number and a unit, such as 3d or -12h")?;
    let unit_ms: i64 = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(format!("unknown unit {unit:?}: use ms, s, m, h or d")),
    };
    let ms = number.checked_mul(unit_ms).ok_or("the offset is too large")?;
    Ok(if negative { -ms } else { ms })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_parse_with_their_units_and_signs() {
        assert_eq!(parse_offset("3d"), Ok(3 * 86_400_000));
        assert_eq!(parse_offset("-12h"), Ok(-12 * 3_600_000));
        assert_eq!(parse_offset("+90m"), Ok(90 * 60_000));
        assert_eq!(parse_offset(" 45s "), Ok(45_000));
        assert_eq!(parse_offset("1500ms"), Ok(1500));
        assert!(parse_offset("3").unwrap_err().contains("unit"));
        assert!(parse_offset("d").is_err());
        assert!(parse_offset("3 weeks").is_err());
        assert!(parse_offset("99999999999999999d").is_err());
    }

    #[test]
    fn a_clock_moves_with_all_its_clones() {
        let clock = Clock::system();
        let shared = clock.clone();
        let before = shared.now();
        clock.advance(3 * Timestamp::DAY as i64);
        let after = shared.now();
        assert!(after.since(before) >= 3 * Timestamp::DAY, "{before:?} then {after:?}");
        assert_eq!(shared.offset_ms(), 3 * Timestamp::DAY as i64);
        assert!(Clock::with_offset(-(before.0 as i64) - 10_000).now() < Timestamp(10_000));
    }
}
