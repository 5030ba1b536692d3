//! Mailbox ids and fetch tokens: where a relay keeps envelopes, and the proof needed to take them.
//!
//! A recipient picks a random mailbox secret per conversation and derives one mailbox per day,
//! owned by an Ed25519 *mailbox key*: `seed(day) = PRF(secret, "NDR1/mailbox-key" ‖ day)`, and
//! `mailbox_id(day) = H("NDR1/mailbox" ‖ public key)[..16]`. Senders see only ids, and write the
//! same id at every relay of the recipient. To fetch or delete, the owner shows a relay a
//! [`FetchToken`]: the public key (which hashes to the id) and its signature over
//! `H("NDR1/fetch" ‖ relay peer id)`. A token is therefore good at one relay only: a relay that
//! sees its owner's tokens cannot use them at the recipient's other relays, and only the
//! recipient can make new ones. Ids rotate daily so a relay cannot link a conversation's traffic
//! across days; the recipient announces upcoming ids inside the encrypted conversation
//! ([`Announcement`]).

use std::fmt;

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

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
/// The longest relay peer id a token is checked against. A libp2p peer id is a multihash of at
/// most some 40 bytes (the key inlined, or its SHA-256); this leaves room to spare.
pub const MAX_RELAY_ID_LEN: usize = 128;

/// A relay-visible mailbox id: 16 bytes, unlinkable to the conversation without the secret.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct MailboxId(#[serde(with = "serde_bytes")] pub [u8; 16]);

impl MailboxId {
    /// The mailbox a fetch token names (whether its proof holds is [`FetchToken::verify`]).
    pub fn of(token: &FetchToken) -> Self {
        Self::of_key(&token.key)
    }

    /// The mailbox owned by the mailbox key whose public half is `key`.
    pub fn of_key(key: &[u8; 32]) -> Self {
        Self(kdf::hash_prefix(label::MAILBOX, &[key]))
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

/// The owner's key of one day's mailbox. Only the owner can derive it (from the mailbox secret);
/// it makes the fetch tokens of that mailbox, one per relay. Kept small (the seed and the id: a
/// node holds one per conversation and day it fetches, thousands with many contacts), so the
/// signing key is expanded again for each token; the seed is zeroized on drop.
#[derive(Clone)]
pub struct MailboxKey {
    seed: Zeroizing<[u8; 32]>,
    id: MailboxId,
    day: u64,
}

impl MailboxKey {
    /// The key of `day`'s mailbox of the mailbox secret `secret`.
    pub fn derive(secret: &SymmetricKey, day: u64) -> Self {
        let seed = kdf::prf(secret.as_bytes(), label::MAILBOX_KEY, &[&day.to_be_bytes()]);
        let public = SigningKey::from_bytes(&seed).verifying_key().to_bytes();
        Self { seed, id: MailboxId::of_key(&public), day }
    }

    /// The mailbox this key owns.
    pub fn id(&self) -> MailboxId {
        self.id
    }

    /// The day of the mailbox (see [`Timestamp::day`]).
    pub fn day(&self) -> u64 {
        self.day
    }

    /// The token that fetches and deletes this mailbox at the relay whose libp2p peer id (binary)
    /// is `relay`, and nowhere else. Deterministic: the same relay always gets the same token.
    pub fn token(&self, relay: &[u8]) -> FetchToken {
        let signing = SigningKey::from_bytes(&self.seed);
        let digest = kdf::hash(label::FETCH, &[relay]);
        FetchToken { key: signing.verifying_key().to_bytes(), proof: signing.sign(&digest).to_bytes() }
    }
}

impl PartialEq for MailboxKey {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
    }
}

impl Eq for MailboxKey {}

impl fmt::Debug for MailboxKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MailboxKey({:?})", self.id)
    }
}

/// What a recipient shows one relay to fetch or delete a mailbox's envelopes: the mailbox key's
/// public half, which hashes to the mailbox id, and its signature over the relay's peer id.
/// Not secret from that relay, and of no use at any other.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FetchToken {
    /// The mailbox key's public half (Ed25519).
    #[serde(with = "serde_bytes")]
    pub key: [u8; 32],
    /// The key's signature over `H("NDR1/fetch" ‖ relay peer id)`.
    #[serde(with = "serde_bytes")]
    pub proof: [u8; 64],
}

impl FetchToken {
    /// The mailbox the token names.
    pub fn mailbox(&self) -> MailboxId {
        MailboxId::of(self)
    }

    /// Whether the token was made by its mailbox's key for the relay whose peer id (binary) is
    /// `relay`. A key of small order, a key or signature in a non-canonical encoding, or a relay
    /// id longer than [`MAX_RELAY_ID_LEN`] fails.
    pub fn verify(&self, relay: &[u8]) -> bool {
        if relay.len() > MAX_RELAY_ID_LEN {
            return false;
        }
        let Ok(key) = VerifyingKey::from_bytes(&self.key) else { return false };
        // Decompression accepts a y coordinate past the field's modulus (and a sign bit on
        // x = 0); the point's canonical encoding then differs from the bytes given. Such a key
        // could only sign if someone knew its discrete log, but one point must have one id.
        if key.is_weak() || key.to_edwards().compress().to_bytes() != self.key {
            return false;
        }
        let digest = kdf::hash(label::FETCH, &[relay]);
        key.verify_strict(&digest, &Signature::from_bytes(&self.proof)).is_ok()
    }

    /// A digest of the whole token, for a relay's cache of tokens it has verified. All 32 bytes:
    /// a cache hit stands in for a signature check, so a collision must cost 2^128, not 2^64.
    pub fn digest(&self) -> [u8; 32] {
        kdf::hash(label::FETCH_DIGEST, &[&self.key, &self.proof])
    }
}

impl fmt::Debug for FetchToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FetchToken({:?})", self.mailbox())
    }
}

/// The mailbox id for `day` of the mailbox secret `secret`.
pub fn mailbox_id(secret: &SymmetricKey, day: u64) -> MailboxId {
    MailboxKey::derive(secret, day).id()
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

    const RELAY: &[u8] = b"relay one";
    const OTHER_RELAY: &[u8] = b"relay two";

    /// Whether `token` opens `mailbox` at `relay`, as a relay judges it.
    fn opens(token: &FetchToken, mailbox: &MailboxId, relay: &[u8]) -> bool {
        token.mailbox() == *mailbox && token.verify(relay)
    }

    #[test]
    fn a_token_opens_only_its_mailbox_at_its_relay() {
        let secret = SymmetricKey::from_bytes([1; 32]);
        let today = MailboxKey::derive(&secret, 20_000).token(RELAY);
        assert!(opens(&today, &mailbox_id(&secret, 20_000), RELAY));
        assert!(!opens(&today, &mailbox_id(&secret, 20_001), RELAY), "another day's mailbox");
        assert!(!opens(&today, &mailbox_id(&secret, 20_000), OTHER_RELAY), "another relay");
        let stranger = MailboxKey::derive(&SymmetricKey::from_bytes([2; 32]), 20_000).token(RELAY);
        assert!(!opens(&stranger, &mailbox_id(&secret, 20_000), RELAY));
    }

    #[test]
    fn a_token_with_a_borrowed_key_or_a_bent_proof_fails() {
        let secret = SymmetricKey::from_bytes([1; 32]);
        let key = MailboxKey::derive(&secret, 20_000);
        let mine = key.token(RELAY);
        // Someone who saw the owner's key (every relay does) cannot sign with it.
        let forged = FetchToken {
            key: mine.key,
            ..MailboxKey::derive(&SymmetricKey::from_bytes([2; 32]), 20_000).token(RELAY)
        };
        assert!(!forged.verify(RELAY));
        for at in [0, 31, 32, 63] {
            let mut bent = mine.clone();
            bent.proof[at] ^= 1;
            assert!(!bent.verify(RELAY), "proof byte {at} flipped");
        }
        let identity = FetchToken { key: [0; 32], proof: [0; 64] };
        assert!(!identity.verify(RELAY), "a key of small order");
        assert!(!mine.verify(&[0; MAX_RELAY_ID_LEN + 1]), "an overlong relay id");
        assert_eq!(key.token(RELAY), mine, "tokens are deterministic");
        assert_ne!(mine.digest(), key.token(OTHER_RELAY).digest());
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
