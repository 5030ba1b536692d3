//! NDR1 sessions: asynchronous, forward-secret, self-healing end-to-end encryption between two
//! devices, built from two one-way Noise handshakes and persisted as plain data.
//!
//! Message flow (A invites nobody; A holds B's invite):
//!
//! ```text
//! A: Session::initiate(B's bundle)      epoch 0 = Noise_X(DS_A → SPK_B), payload: A's cert,
//!                                        ratchet key R_A0, A's mailbox ids
//! A: seal(m₀), seal(m₁) …               each envelope carries the first-contact bytes until acked
//! B: Session::accept(envelope)          learns A's identity, session id, root key RK₀, epoch-0 key
//! B: seal(r₀)                           opens epoch 1 = Noise_Npsk0(→ R_A0, psk RK₀), payload:
//!                                        ratchet key R_B1, B's mailbox ids; acks epoch 0
//! A: open(r₀)                           deletes R_A0's secret, learns RK₁
//! A: seal(m₂)                           opens epoch 2 = Noise_Npsk0(→ R_B1, psk RK₁) …
//! ```
//!
//! Epochs alternate: the initiator owns even epochs, the responder odd ones, and a party opens a new
//! epoch only once it has authenticated the peer's latest, so the root chain is linear. Inside an
//! epoch the sending key steps forward every 64 messages or 24 hours (sub-epochs), and message `i`
//! of a sub-epoch uses Noise nonce `i`. Every refused input leaves the session unchanged. The caller
//! persists [`Session::state`] after each successful `seal` or `open`, in the same transaction as
//! the envelope or message it produced, before sending or acknowledging anything.

mod first_contact;
mod payload;
mod receive;
mod send;
pub mod state;

use std::fmt;
use std::ops::RangeInclusive;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::codec::{DecodeError, Writer};
use crate::envelope::EnvelopeError;
use crate::frame::{Body, FrameError, MessageId};
use crate::identity::{DeviceCert, IdentityError};
use crate::kdf::{self, label};
use crate::keys::SymmetricKey;
use crate::mailbox::{Announcement, MailboxId};
use crate::noise::NoiseError;
use crate::time::Timestamp;

pub use first_contact::Responder;
pub use payload::{MAX_EPOCH_PAYLOAD, MAX_FIRST_CONTACT_PAYLOAD};
pub use state::SessionState;

/// Messages per sub-epoch: message index `i` uses Noise nonce `i`, so a key seals at most 64.
pub const MESSAGES_PER_SUB_EPOCH: u8 = 64;
/// A sending sub-epoch lasts at most this long (ms), so a stolen device exposes at most a day of
/// not-yet-delivered traffic of a quiet conversation.
pub const SUB_EPOCH_MAX_AGE: u64 = Timestamp::DAY;
/// The most sub-epoch keys one incoming message may make us derive (bounds work per message).
pub const MAX_DERIVATIONS: u32 = 1024;
/// The most sub-epoch keys a session retains for late messages.
pub const MAX_RETAINED_SUBKEYS: usize = 256;
/// The most peer epochs a session retains keys for. Each turn of a lively conversation is an
/// epoch, and a message delayed on a slow relay must still open after the conversation moved on
/// a few dozen turns; beyond that (or [`MAX_KEY_AGE`]) its keys are gone.
pub const MAX_RETAINED_EPOCHS: usize = 32;
/// Retained receiving keys older than this (ms) are deleted: the relay TTL, after which nothing
/// late can still arrive.
pub const MAX_KEY_AGE: u64 = 30 * Timestamp::DAY;
/// The most out-of-order sequence numbers tracked above a gap.
pub const MAX_SEQ_AHEAD: usize = 1024;

/// A session id: `H("NDR1/session-id" ‖ first-contact handshake hash)[..16]`. Local only: it never
/// appears in an envelope.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SessionId(#[serde(with = "serde_bytes")] pub [u8; 16]);

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionId({self})")
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

/// Which side of a session we are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    /// We sent the first contact; we own the even epochs.
    Initiator,
    /// We accepted the first contact; we own the odd epochs.
    Responder,
}

impl Role {
    /// Whether epoch `epoch` is opened by this side.
    pub fn owns(self, epoch: u32) -> bool {
        epoch.is_multiple_of(2) == (self == Role::Initiator)
    }
}

/// An envelope ready to send, with what the caller needs to track it.
#[derive(Debug, Clone)]
pub struct Sealed {
    /// The encoded envelope, padded to a size bucket.
    pub envelope: Vec<u8>,
    /// The mailbox it is addressed to (where relays store it).
    pub mailbox: MailboxId,
    /// The message id inside (for receipts).
    pub message_id: MessageId,
    /// Its sequence number in this session.
    pub seq: u64,
}

/// A message that decrypted and authenticated.
#[derive(Debug, Clone)]
pub struct Incoming {
    /// The sender's message id.
    pub message_id: MessageId,
    /// The sender's sequence number (see [`Session::missing`] for gaps).
    pub seq: u64,
    /// When the sender says it sent it.
    pub sent_at: Timestamp,
    /// The epoch it came in.
    pub epoch: u32,
    /// The body.
    pub body: Body,
}

/// Why a message could not be sealed. Nothing changed in the session.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SealError {
    /// The body does not fit the largest envelope; split it into fragments.
    #[error("message body too large ({len} bytes, at most {max})")]
    TooLarge {
        /// The encoded body length.
        len: usize,
        /// The most that fits.
        max: usize,
    },
    /// The session cannot open a new epoch (its state is inconsistent or the counters ran out):
    /// start a new session with a first contact.
    #[error("session cannot continue; start a new one")]
    Broken,
    /// A Noise operation failed.
    #[error("encryption failed: {0}")]
    Noise(#[from] NoiseError),
    /// The frame could not be encoded.
    #[error(transparent)]
    Frame(#[from] FrameError),
}

/// Why an envelope was refused. In every case the session is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum OpenError {
    /// The envelope itself is malformed, too large, or of an unsupported version.
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
    /// A first-contact envelope outside epoch 0, or a session envelope for epoch 0.
    #[error("envelope kind does not match its epoch")]
    WrongKind,
    /// An epoch we cannot accept now: one of ours, or more than one ahead.
    #[error("unexpected epoch {epoch}")]
    UnexpectedEpoch {
        /// The epoch in the envelope.
        epoch: u32,
    },
    /// A new epoch arrived without its opening handshake.
    #[error("new epoch without its open")]
    MissingOpen,
    /// A known epoch arrived with a different opening handshake than the one accepted.
    #[error("epoch open differs from the accepted one")]
    OpenMismatch,
    /// The message did not authenticate: junk, tampering, or a different session.
    #[error("message did not authenticate")]
    Rejected,
    /// The message was accepted before.
    #[error("duplicate message")]
    Replay,
    /// The message's key was deleted (too old, or its sub-epoch is complete).
    #[error("message key no longer available")]
    KeyUnavailable,
    /// Reaching the message's key would take more derivations than allowed.
    #[error("message is {needed} sub-epochs ahead, more than {max}")]
    TooManyDerivations {
        /// Derivations needed.
        needed: u64,
        /// The limit.
        max: u32,
    },
    /// The header echoed inside the ciphertext differs from the clear one.
    #[error("header was altered in transit")]
    HeaderMismatch,
    /// The decrypted frame is malformed.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// A handshake payload is malformed.
    #[error("handshake payload malformed: {0}")]
    Payload(DecodeError),
    /// A first contact names a prekey we do not have (unknown, or expired and deleted).
    #[error("first contact uses unknown prekey {id}")]
    UnknownPrekey {
        /// The prekey id.
        id: u32,
    },
    /// The sender's device certificate does not verify.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// The device certificate names a different key than the one that did the handshake.
    #[error("device certificate does not match the handshake key")]
    CertMismatch,
}

/// One NDR1 session, around its persisted state.
#[derive(Debug)]
pub struct Session {
    state: SessionState,
    /// The last epoch open that authenticated, kept in memory only: a burst of messages carries the
    /// same open, and comparing bytes is cheaper than hashing them again for the digest check.
    last_open: Option<(u32, Vec<u8>)>,
}

impl Session {
    fn from_state(state: SessionState) -> Self {
        Self { state, last_open: None }
    }

    /// Continues a session from persisted state after a restart.
    ///
    /// The sending side moves on to a fresh sub-epoch, so even if the last state written to disk
    /// predates an envelope that did leave, no (key, nonce) pair is ever used twice. The caller
    /// persists the returned session's state before sealing with it.
    pub fn restore(mut state: SessionState, now: Timestamp) -> Self {
        if let Some(send) = &mut state.send {
            send::next_sub_epoch(send, now);
        }
        Self::from_state(state)
    }

    /// Keeps the promises of forward secrecy for a session that sees no traffic: steps a sending
    /// sub-epoch that sealed something and is [`SUB_EPOCH_MAX_AGE`] old (its key is deleted, as
    /// the next seal would), and deletes receiving keys past their age ([`MAX_KEY_AGE`]). A
    /// sub-epoch that sealed nothing is left alone: its key protects no message, and stepping it
    /// would only make the peer derive more keys. Returns whether anything changed, in which case
    /// the caller persists the state.
    pub fn maintain(&mut self, now: Timestamp) -> bool {
        let mut changed = false;
        if let Some(send) = &mut self.state.send
            && send.next_index > 0
            && now.since(send.sub_started_at) >= SUB_EPOCH_MAX_AGE
        {
            send::next_sub_epoch(send, now);
            changed = true;
        }
        let keys = |state: &SessionState| {
            (state.recv.len(), state.recv.iter().map(|r| r.subkeys.len()).sum::<usize>())
        };
        let before = keys(&self.state);
        self.prune(now);
        changed || keys(&self.state) != before
    }

    /// [`Session::maintain`] for a session that is not in use: its stored state, stepped and
    /// pruned, and whether it changed. Nothing is sealed with the result (it is only stored), so
    /// unlike [`Session::restore`] it does not move to a fresh sub-epoch, and a session left
    /// alone for months does not make its peer derive one more key per pass.
    pub fn maintain_stored(state: SessionState, now: Timestamp) -> (SessionState, bool) {
        let mut session = Self::from_state(state);
        let changed = session.maintain(now);
        (session.state, changed)
    }

    /// The state to persist.
    pub fn state(&self) -> &SessionState {
        &self.state
    }

    /// The session id.
    pub fn id(&self) -> SessionId {
        self.state.id
    }

    /// The peer's device certificate (its identity and device key).
    pub fn peer(&self) -> &DeviceCert {
        &self.state.peer
    }

    /// Ranges of the peer's sequence numbers that are missing: withheld, lost, or still in flight.
    pub fn missing(&self) -> Vec<RangeInclusive<u64>> {
        self.state.peer_seq.missing()
    }

    /// Our mailbox ids for this conversation, as last announced.
    pub fn my_mailboxes(&self) -> &Announcement {
        &self.state.my_mailboxes
    }

    /// Whether `mailbox` is one of the ids we announced for this conversation.
    pub fn owns_mailbox(&self, mailbox: &MailboxId) -> bool {
        self.state.my_mailboxes.ids.contains(mailbox)
    }

    /// The highest peer epoch we have authenticated, which we acknowledge in every frame.
    fn acked_peer_epoch(&self) -> Option<u32> {
        let latest = self.state.latest_epoch;
        if self.state.role.owns(latest) { latest.checked_sub(1) } else { Some(latest) }
    }
}

/// The digest by which a repeated epoch open (or first contact) is recognised.
pub fn open_digest(open: &[u8]) -> [u8; 32] {
    kdf::hash(label::OPEN_DIGEST, &[open])
}

fn session_id(handshake_hash: &[u8; 32]) -> SessionId {
    SessionId(kdf::hash_prefix(label::SESSION_ID, &[handshake_hash]))
}

fn next_root(k2: &SymmetricKey) -> SymmetricKey {
    kdf::prf(k2.as_bytes(), label::ROOT, &[]).into()
}

fn epoch_prologue(session: &SessionId, epoch: u32) -> Vec<u8> {
    let mut w = Writer::with_capacity(40);
    w.bytes_u8(label::EPOCH).raw(&session.0).u32(epoch);
    w.into_bytes()
}
