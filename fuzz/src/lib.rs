//! Fixtures shared by the fuzz targets: fixed keys, a deterministic RNG, an edit script that turns
//! fuzzer bytes into changes to a valid message, two deterministic parties for the session targets,
//! and a cursor that reads a fuzz input as a sequence of small decisions.
//!
//! Targets that read authenticated messages run in one of two modes chosen by the first input
//! byte. In raw mode the rest of the input goes to the reader as it is, which explores length and
//! key checks but almost never gets past authentication. In edit mode the target first writes a
//! valid message (payload taken from the input) with the fixed keys below, then applies the edit
//! script from the rest of the input, and checks the verdict exactly: the reader must accept the
//! message if and only if the edits left it unchanged, and then return the original payload.

use std::sync::OnceLock;

use merpati_proto::Timestamp;
use merpati_proto::envelope::Envelope;
use merpati_proto::identity::{Bundle, DeviceCert, IdentityKey, PROTOCOL_VERSION, PrekeyRing};
use merpati_proto::keys::{SymmetricKey, X25519Secret};
use merpati_proto::mailbox::{self, INBOX_DAY, MailboxId};
use merpati_proto::session::{Responder, Session, SessionState};
use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::SeedableRng;

/// The prologue every handshake target writes and reads with.
pub const PROLOGUE: &[u8] = b"NDR1/fuzz";

/// The most edits one input applies; more would only slow the target down.
pub const MAX_EDITS: usize = 16;

/// The recipient's signed prekey secret in first-contact targets.
pub fn prekey_secret() -> X25519Secret {
    X25519Secret::from_bytes([0x11; 32])
}

/// The sender's device static secret in first-contact targets.
pub fn device_secret() -> X25519Secret {
    X25519Secret::from_bytes([0x22; 32])
}

/// The recipient's ratchet secret in epoch-open targets.
pub fn ratchet_secret() -> X25519Secret {
    X25519Secret::from_bytes([0x33; 32])
}

/// The root key used as PSK in epoch-open targets, and the key of transport targets.
pub fn symmetric_key() -> SymmetricKey {
    SymmetricKey::from_bytes([0x44; 32])
}

/// A deterministic RNG, so every input replays exactly.
pub fn rng() -> ChaCha20Rng {
    ChaCha20Rng::seed_from_u64(0x4d45_5250_4154_4931)
}

/// How a target should use its input.
#[derive(Debug)]
pub enum Mode<'a> {
    /// Give these bytes to the reader unchanged.
    Raw(&'a [u8]),
    /// Write a valid message carrying `payload`, then apply `edits` (see [`apply_edits`]).
    Edit {
        /// The payload of the valid message.
        payload: &'a [u8],
        /// The edit script.
        edits: &'a [u8],
    },
}

impl<'a> Mode<'a> {
    /// Splits `data`: an even first byte selects raw mode; an odd one edit mode, where the next
    /// byte is the payload length, then the payload (cut short if the input ends), then edits.
    pub fn of(data: &'a [u8]) -> Self {
        match data.split_first() {
            Some((mode, rest)) if mode & 1 == 1 => {
                let (len, rest) = rest.split_first().map_or((0, rest), |(l, r)| (usize::from(*l), r));
                let (payload, edits) = rest.split_at(len.min(rest.len()));
                Mode::Edit { payload, edits }
            }
            Some((_, rest)) => Mode::Raw(rest),
            None => Mode::Raw(data),
        }
    }
}

/// Applies an edit script to `message`. Each edit is four bytes `op, pos_hi, pos_lo, value`, with
/// the position taken modulo the message length: op 0 XORs the byte with `value`, op 1 truncates,
/// op 2 inserts `value`, op 3 removes the byte. At most [`MAX_EDITS`] edits are applied.
pub fn apply_edits(message: &mut Vec<u8>, edits: &[u8]) {
    for edit in edits.chunks_exact(4).take(MAX_EDITS) {
        let pos = usize::from(u16::from_be_bytes([edit[1], edit[2]]));
        let value = edit[3];
        match edit[0] % 4 {
            0 if !message.is_empty() => {
                let at = pos % message.len();
                message[at] ^= value;
            }
            1 => message.truncate(pos % (message.len() + 1)),
            2 => message.insert(pos % (message.len() + 1), value),
            3 if !message.is_empty() => {
                message.remove(pos % message.len());
            }
            _ => {}
        }
    }
}

/// Checks a reader's verdict in edit mode: `result` must be `Ok` exactly when `unchanged`, and
/// an accepted result must pass `check`.
pub fn assert_verdict<T, E: std::fmt::Debug>(unchanged: bool, result: Result<T, E>, check: impl FnOnce(T)) {
    match (unchanged, result) {
        (true, Ok(value)) => check(value),
        (true, Err(e)) => panic!("an unmodified valid message was rejected: {e:?}"),
        (false, Ok(_)) => panic!("a modified message was accepted"),
        (false, Err(_)) => {}
    }
}

/// 2026-11-21T00:00:00Z: the clock the identity and session targets start from.
pub const T0: Timestamp = Timestamp(1_795_219_200_000);

/// One user's device, as a node keeps it: identity, device key, prekeys, bundle and inbox, all
/// made at [`T0`] from a seed.
#[derive(Debug)]
pub struct Party {
    /// The identity key.
    pub identity: IdentityKey,
    /// The device static key.
    pub device_static: X25519Secret,
    /// The device certificate.
    pub cert: DeviceCert,
    /// The prekey ring (one prekey, made at [`T0`]).
    pub prekeys: PrekeyRing,
    /// The published bundle.
    pub bundle: Bundle,
    /// The secret of the first-contact inbox.
    pub inbox_secret: SymmetricKey,
}

impl Party {
    /// A party made from `seed`.
    pub fn new(seed: u64) -> Self {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let identity = IdentityKey::generate(&mut rng);
        let device_static = X25519Secret::generate(&mut rng);
        let cert = DeviceCert::issue(&identity, &device_static.public(), T0);
        let mut prekeys = PrekeyRing::new(&identity, &cert.device_id(), T0, &mut rng);
        // The first check makes the last-resort prekey invites carry.
        prekeys.rotate_if_due(&identity, &cert.device_id(), T0, &mut rng);
        let bundle = Bundle::new(&identity, cert.clone(), prekeys.current().clone(), vec![PROTOCOL_VERSION])
            .expect("signing a bundle");
        let inbox_secret = SymmetricKey::generate(&mut rng);
        Self { identity, device_static, cert, prekeys, bundle, inbox_secret }
    }

    /// The first-contact inbox printed in the party's invite.
    pub fn inbox(&self) -> MailboxId {
        mailbox::mailbox_id(&self.inbox_secret, INBOX_DAY)
    }

    /// What [`Session::accept`] needs.
    pub fn responder(&self) -> Responder<'_> {
        Responder { bundle: &self.bundle, prekeys: &self.prekeys }
    }

    /// Starts a session to `peer` at `now`.
    pub fn initiate(&self, peer: &Party, now: Timestamp, rng: &mut ChaCha20Rng) -> Session {
        Session::initiate(&self.cert, &self.device_static, &peer.bundle, peer.inbox(), now, rng)
            .expect("starting a session")
    }
}

/// Alice (the initiator) and Bob, made once per process: key generation and signing would
/// otherwise dominate every iteration.
pub fn parties() -> &'static (Party, Party) {
    static PARTIES: OnceLock<(Party, Party)> = OnceLock::new();
    PARTIES.get_or_init(|| (Party::new(1), Party::new(2)))
}

/// A session's persisted state as a comparable string.
pub fn snapshot(session: &Session) -> String {
    serde_json::to_string(session.state()).expect("serializing session state")
}

/// A restart: the state goes through its persisted form and the session is restored from it.
pub fn restart(session: &Session, now: Timestamp) -> Session {
    let state: SessionState = serde_json::from_str(&snapshot(session)).expect("deserializing session state");
    Session::restore(state, now)
}

/// The same envelope without its epoch open, or `None` if it does not decode or has none. The
/// open is not covered by the transport AEAD: for an epoch the receiver already knows, a copy
/// stripped of it must still open, and for a new epoch it must be refused.
pub fn strip_open(envelope: &[u8]) -> Option<Vec<u8>> {
    let mut decoded = Envelope::decode(envelope).ok()?;
    decoded.open.take()?;
    Some(decoded.encode())
}

/// Reads a fuzz input front to back as small decisions; once it is used up, every read returns
/// zero, so any input is a complete program.
#[derive(Debug, Clone)]
pub struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    /// A cursor over `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Self { data }
    }

    /// Whether every byte was read.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The next byte, or 0.
    pub fn u8(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }

    /// The next two bytes, big-endian, or what is left of them.
    pub fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8(), self.u8()])
    }

    /// The next four bytes, big-endian, or what is left of them.
    pub fn u32(&mut self) -> u32 {
        u32::from_be_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }

    /// The next eight bytes, big-endian, or what is left of them.
    pub fn u64(&mut self) -> u64 {
        (u64::from(self.u32()) << 32) | u64::from(self.u32())
    }

    /// Up to `len` bytes (fewer if the input ends).
    pub fn bytes(&mut self, len: usize) -> &'a [u8] {
        let (head, rest) = self.data.split_at(len.min(self.data.len()));
        self.data = rest;
        head
    }

    /// Everything left.
    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.data)
    }
}
