//! The persisted state of one NDR1 session: plain data (keys, counters, bitmaps), no snow objects.
//!
//! The node stores a [`SessionState`] after every operation that changed it, in the same storage
//! transaction as what that operation produced (an outgoing envelope, an incoming message), and
//! before anything leaves the device. Restoring it gives back exactly the same session, except that
//! the sending side moves on to a fresh sub-epoch (see [`super::Session::restore`]).

use std::collections::BTreeSet;
use std::ops::RangeInclusive;

use serde::{Deserialize, Serialize};

use crate::identity::DeviceCert;
use crate::keys::{SymmetricKey, X25519Public, X25519Secret};
use crate::mailbox::Announcement;
use crate::time::Timestamp;

use super::{MAX_SEQ_AHEAD, Role, SessionId};

/// Everything a session needs to continue after a restart.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionState {
    /// The session id (from the first-contact handshake hash).
    pub id: SessionId,
    /// Which side started the session; the initiator owns even epochs, the responder odd ones.
    pub role: Role,
    /// The peer's device certificate (its identity key and device static key).
    pub peer: DeviceCert,
    /// The root key after the latest epoch: the PSK of the next epoch open.
    pub root: SymmetricKey,
    /// The highest epoch known, opened by either side.
    pub latest_epoch: u32,
    /// Our current sending epoch, if we have opened one.
    pub send: Option<SendEpoch>,
    /// The peer's epochs whose keys are still retained, oldest first.
    pub recv: Vec<RecvEpoch>,
    /// The private half of the ratchet key we announced in our latest epoch; deleted as soon as the
    /// peer's epoch that targets it has been processed.
    pub my_ratchet: Option<X25519Secret>,
    /// The ratchet key the peer announced in its latest epoch: the target of our next epoch.
    pub peer_ratchet: Option<X25519Public>,
    /// Our mailbox secret for this conversation (where the peer writes to us).
    pub my_mailbox_secret: SymmetricKey,
    /// Our mailbox ids as last announced to the peer.
    pub my_mailboxes: Announcement,
    /// The peer's mailbox ids, as it last announced them (for a new session: its invite inbox).
    pub peer_mailboxes: Announcement,
    /// The highest of our epochs the peer has acknowledged.
    pub peer_acked_epoch: Option<u32>,
    /// Sequence number of our next message.
    pub next_seq: u64,
    /// Which of the peer's sequence numbers arrived (gap detection).
    pub peer_seq: SeqTracker,
    /// When the session was created.
    pub created_at: Timestamp,
}

/// Our sending side of one epoch.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SendEpoch {
    /// The epoch number.
    pub epoch: u32,
    /// The epoch-open bytes, attached to every message until the peer acknowledges the epoch.
    #[serde(with = "serde_bytes")]
    pub open: Vec<u8>,
    /// The current sub-epoch.
    pub sub: u32,
    /// The current sub-epoch's key; the previous one is deleted when this one is derived.
    pub key: SymmetricKey,
    /// The next message index (Noise nonce) in the current sub-epoch, `0..64`.
    pub next_index: u8,
    /// When the current sub-epoch started.
    pub sub_started_at: Timestamp,
}

/// Our receiving side of one of the peer's epochs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RecvEpoch {
    /// The epoch number.
    pub epoch: u32,
    /// Digest of the epoch open that created it: a later copy of the same open is recognised
    /// without another Diffie-Hellman, and a different one is refused.
    pub open_digest: [u8; 32],
    /// The first sub-epoch whose key has not been derived yet.
    pub next_sub: u32,
    /// That sub-epoch's key: the head of the chain.
    pub next_key: SymmetricKey,
    /// Derived sub-epoch keys that may still receive messages.
    pub subkeys: Vec<SubKey>,
    /// When the epoch was first seen.
    pub opened_at: Timestamp,
    /// When a newer peer epoch replaced this one. Its keys expire [`super::MAX_KEY_AGE`] after
    /// that: every message of this epoch was sealed before then, so none can still be on a relay.
    #[serde(default)]
    pub superseded_at: Option<Timestamp>,
}

impl RecvEpoch {
    /// A peer epoch just opened by `open`, whose first sub-epoch key is `key`.
    pub(crate) fn new(epoch: u32, open: &[u8], key: SymmetricKey, now: Timestamp) -> Self {
        RecvEpoch {
            epoch,
            open_digest: super::open_digest(open),
            next_sub: 0,
            next_key: key,
            subkeys: Vec::new(),
            opened_at: now,
            superseded_at: None,
        }
    }
}

/// A retained sub-epoch key with its replay bitmap.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SubKey {
    /// The sub-epoch number.
    pub sub: u32,
    /// Its key.
    pub key: SymmetricKey,
    /// Bit `i` is set once message index `i` was accepted.
    pub seen: u64,
    /// When the key was derived (it expires after the retention age).
    pub derived_at: Timestamp,
}

/// The peer's sequence numbers received so far, kept compactly: everything below `next`, plus a
/// bounded set of numbers above it. Anything between is missing: withheld, dropped or still on its
/// way.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeqTracker {
    /// Every sequence number below this one has arrived.
    pub next: u64,
    /// Sequence numbers above `next` that have arrived.
    pub ahead: BTreeSet<u64>,
}

impl SeqTracker {
    /// Records `seq`. When more than [`MAX_SEQ_AHEAD`] numbers wait above a gap, the oldest gap is
    /// given up on (reported missing for good) so the tracker stays bounded.
    pub fn record(&mut self, seq: u64) {
        if seq < self.next {
            return;
        }
        // The sender picks sequence numbers, so arithmetic saturates rather than trusting them
        // to stay below u64::MAX.
        self.ahead.insert(seq);
        self.advance();
        while self.ahead.len() > MAX_SEQ_AHEAD {
            if let Some(first) = self.ahead.pop_first() {
                self.next = first.saturating_add(1);
                self.advance();
            }
        }
    }

    /// Moves `next` over the numbers that arrived in a row. u64::MAX itself stays in `ahead`:
    /// `next` cannot go past it.
    fn advance(&mut self) {
        while self.next < u64::MAX && self.ahead.remove(&self.next) {
            self.next += 1;
        }
    }

    /// Whether `seq` has arrived.
    pub fn has(&self, seq: u64) -> bool {
        seq < self.next || self.ahead.contains(&seq)
    }

    /// The ranges of sequence numbers known to be missing (below the highest one received).
    pub fn missing(&self) -> Vec<RangeInclusive<u64>> {
        let mut out = Vec::new();
        let mut from = self.next;
        for &seq in &self.ahead {
            if seq > from {
                out.push(from..=seq - 1);
            }
            from = seq.saturating_add(1);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seq_tracker_reports_gaps() {
        let mut t = SeqTracker::default();
        for s in [0, 1, 3, 4, 7] {
            t.record(s);
        }
        assert_eq!(t.next, 2);
        assert_eq!(t.missing(), vec![2..=2, 5..=6]);
        t.record(2);
        assert_eq!(t.next, 5);
        assert_eq!(t.missing(), vec![5..=6]);
        assert!(t.has(4) && !t.has(5));
    }

    #[test]
    fn seq_tracker_survives_the_largest_sequence_numbers() {
        let mut t = SeqTracker::default();
        t.record(0);
        t.record(u64::MAX);
        assert_eq!(t.missing(), vec![1..=u64::MAX - 1]);
        let mut t = SeqTracker::default();
        for s in u64::MAX - 1100..=u64::MAX {
            t.record(s);
        }
        assert!(t.ahead.len() <= MAX_SEQ_AHEAD);
        assert!(t.has(u64::MAX));
    }

    #[test]
    fn seq_tracker_stays_bounded() {
        let mut t = SeqTracker::default();
        for s in 1..=(MAX_SEQ_AHEAD as u64 + 10) {
            t.record(s);
        }
        assert!(t.ahead.len() <= MAX_SEQ_AHEAD);
        assert_eq!(t.next, MAX_SEQ_AHEAD as u64 + 11);
    }
}
