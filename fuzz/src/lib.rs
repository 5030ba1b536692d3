//! Fixtures shared by the fuzz targets: fixed keys, a deterministic RNG, and an edit script that
//! turns fuzzer bytes into changes to a valid message.
//!
//! Targets that read authenticated messages run in one of two modes chosen by the first input
//! byte. In raw mode the rest of the input goes to the reader as it is, which explores length and
//! key checks but almost never gets past authentication. In edit mode the target first writes a
//! valid message (payload taken from the input) with the fixed keys below, then applies the edit
//! script from the rest of the input, and checks the verdict exactly: the reader must accept the
//! message if and only if the edits left it unchanged, and then return the original payload.

use merpati_proto::keys::{SymmetricKey, X25519Secret};
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
