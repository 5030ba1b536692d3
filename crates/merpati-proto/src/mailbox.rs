//! Mailbox ids and fetch tokens: where a relay keeps envelopes, and the proof needed to take them.
//!
//! A recipient picks a random mailbox secret per conversation and derives one mailbox per day:
//! `fetch_token(day) = PRF(secret, "NDR1/fetch" ‖ day)` and
//! `mailbox_id(day) = H("NDR1/mailbox" ‖ fetch_token(day))[..16]`. Senders and relays see only ids;
//! a relay hands out or deletes a mailbox's envelopes only to whoever presents a token hashing to
//! its id, which only the recipient can compute. Ids rotate daily so a relay cannot link a
//! conversation's traffic across days; the recipient announces upcoming ids inside the encrypted
//! conversation ([`Announcement`]).

use std::fmt;

use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use crate::codec::{DecodeError, Reader, Writer};
use crate::kdf::{self, label};
use crate::keys::SymmetricKey;
use crate::time::Timestamp;

/// How many days of mailbox ids a recipient announces ahead.
pub const DEFAULT_ANNOUNCE_DAYS: u16 = 14;
/// The most ids one announcement may carry.
pub const MAX_ANNOUNCED_IDS: usize = 32;
/// The day index used for a first-contact inbox, which does not rotate (it is printed in invites).
pub const INBOX_DAY: u64 = 0;

/// A relay-visible mailbox id: 16 bytes, unlinkable to the conversation without the secret.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct MailboxId(#[serde(with = "serde_bytes")] pub [u8; 16]);

impl MailboxId {
    /// The mailbox a fetch token opens.
    pub fn of(token: &FetchToken) -> Self {
        Self(kdf::hash_prefix(label::MAILBOX, &[&token.0]))
    }

    /// The id's bytes.
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }
}

impl fmt::Debug for MailboxId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MailboxId(")?;
        for b in &self.0[..6] {
            write!(f, "{b:02x}")?;
        }
        write!(f, "..)")
    }
}

/// The proof of ownership a recipient shows a relay to fetch or delete a mailbox's envelopes.
#[derive(Clone, Serialize, Deserialize)]
pub struct FetchToken(#[serde(with = "serde_bytes")] pub [u8; 32]);

impl FetchToken {
    /// Whether this token opens `mailbox` (constant time).
    pub fn opens(&self, mailbox: &MailboxId) -> bool {
        MailboxId::of(self).0.ct_eq(&mailbox.0).into()
    }
}

impl PartialEq for FetchToken {
    fn eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl Eq for FetchToken {}

impl fmt::Debug for FetchToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FetchToken(..)")
    }
}

/// The fetch token for `day` of the mailbox secret `secret`.
pub fn fetch_token(secret: &SymmetricKey, day: u64) -> FetchToken {
    FetchToken(*kdf::prf(secret.as_bytes(), label::FETCH, &[&day.to_be_bytes()]))
}

/// The mailbox id for `day` of the mailbox secret `secret`.
pub fn mailbox_id(secret: &SymmetricKey, day: u64) -> MailboxId {
    MailboxId::of(&fetch_token(secret, day))
}

/// A recipient's list of mailbox ids for consecutive days, starting at `first_day`, sent to the
/// peer inside encrypted epoch payloads so the peer always knows where to write.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Announcement {
    /// Day number (see [`Timestamp::day`]) of `ids[0]`.
    pub first_day: u64,
    /// One id per day; at most [`MAX_ANNOUNCED_IDS`], at least one.
    pub ids: Vec<MailboxId>,
}

impl Announcement {
    /// Announces `days` ids from `secret`, starting today.
    pub fn new(secret: &SymmetricKey, now: Timestamp, days: u16) -> Self {
        let first_day = now.day();
        let days = usize::from(days).clamp(1, MAX_ANNOUNCED_IDS) as u64;
        Self { first_day, ids: (first_day..first_day + days).map(|d| mailbox_id(secret, d)).collect() }
    }

    /// The id a sender should use at `now`: today's, or the nearest announced one when today is
    /// outside the window (the recipient also watches those).
    pub fn current(&self, now: Timestamp) -> Option<MailboxId> {
        let offset = now.day().saturating_sub(self.first_day);
        let index = usize::try_from(offset).unwrap_or(usize::MAX).min(self.ids.len().checked_sub(1)?);
        self.ids.get(index).copied()
    }

    /// Appends the announcement's encoding.
    pub fn encode(&self, w: &mut Writer) {
        w.u64(self.first_day);
        w.u8(u8::try_from(self.ids.len()).unwrap_or(u8::MAX));
        for id in &self.ids {
            w.raw(&id.0);
        }
    }

    /// Reads an announcement, refusing an empty list or one longer than [`MAX_ANNOUNCED_IDS`].
    pub fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let first_day = r.u64("announcement day")?;
        let count = r.count_u8(MAX_ANNOUNCED_IDS, "announced ids")?;
        if count == 0 {
            return Err(DecodeError::Invalid { what: "announced ids" });
        }
        let ids = (0..count).map(|_| r.array("mailbox id").map(MailboxId)).collect::<Result<_, _>>()?;
        Ok(Self { first_day, ids })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_opens_only_its_mailbox() {
        let secret = SymmetricKey::from_bytes([1; 32]);
        let today = fetch_token(&secret, 20_000);
        assert!(today.opens(&mailbox_id(&secret, 20_000)));
        assert!(!today.opens(&mailbox_id(&secret, 20_001)));
        assert!(!fetch_token(&SymmetricKey::from_bytes([2; 32]), 20_000).opens(&mailbox_id(&secret, 20_000)));
    }

    #[test]
    fn announcement_picks_today_and_round_trips() {
        let secret = SymmetricKey::from_bytes([3; 32]);
        let now = Timestamp(20_000 * Timestamp::DAY + 5);
        let a = Announcement::new(&secret, now, DEFAULT_ANNOUNCE_DAYS);
        assert_eq!(a.ids.len(), 14);
        assert_eq!(a.current(now), Some(mailbox_id(&secret, 20_000)));
        assert_eq!(a.current(now.plus(3 * Timestamp::DAY)), Some(mailbox_id(&secret, 20_003)));
        assert_eq!(a.current(now.plus(100 * Timestamp::DAY)), a.ids.last().copied());
        let mut w = Writer::new();
        a.encode(&mut w);
        let bytes = w.into_bytes();
        let mut r = Reader::new(&bytes);
        assert_eq!(Announcement::decode(&mut r), Ok(a));
        assert_eq!(r.finish(), Ok(()));
    }
}
