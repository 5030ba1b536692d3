//! Hashing and key derivation for NDR1: BLAKE2s-256 over domain-separated, length-prefixed input.
//!
//! `hash(label, parts)` and `prf(key, label, parts)` both encode their input as
//! `len(label) ‖ label ‖ len(part₀) ‖ part₀ ‖ …` with 32-bit big-endian lengths, so no two
//! different inputs (or labels) can collide by shifting bytes between fields. `prf` is keyed
//! BLAKE2s (the MAC mode of RFC 7693), which is a PRF under the usual assumptions.

use blake2::digest::{FixedOutput, KeyInit, Update};
use blake2::{Blake2s256, Blake2sMac256, Digest};
use zeroize::Zeroizing;

/// Every domain-separation label NDR1 uses, one per purpose. Changing one is a wire change.
pub mod label {
    /// Session id from the first-contact handshake hash.
    pub const SESSION_ID: &[u8] = b"NDR1/session-id";
    /// Root key from the second raw-split key of a handshake.
    pub const ROOT: &[u8] = b"NDR1/root";
    /// Next sub-epoch key from the current one.
    pub const SUB: &[u8] = b"NDR1/sub";
    /// Seed of a day's mailbox key from the mailbox secret and the day number.
    pub const MAILBOX_KEY: &[u8] = b"NDR1/mailbox-key";
    /// Mailbox id from a mailbox key's public half.
    pub const MAILBOX: &[u8] = b"NDR1/mailbox";
    /// What a fetch token signs: the peer id of the one relay it is for.
    pub const FETCH: &[u8] = b"NDR1/fetch";
    /// A relay's own digest of a fetch token it has verified (never on the wire).
    pub const FETCH_DIGEST: &[u8] = b"NDR1/fetch-digest";
    /// Prologue of a first-contact (`Noise_X`) handshake.
    pub const FIRST_CONTACT: &[u8] = b"NDR1/first-contact";
    /// Prologue of an epoch-opening (`Noise_Npsk0`) handshake.
    pub const EPOCH: &[u8] = b"NDR1/epoch";
    /// Digest of an epoch open, kept to recognise the same open again without a DH.
    pub const OPEN_DIGEST: &[u8] = b"NDR1/open-digest";
    /// Signature over a device certificate.
    pub const DEVICE_CERT: &[u8] = b"NDR1/device-cert";
    /// Device id from a device's static X25519 key.
    pub const DEVICE_ID: &[u8] = b"NDR1/device-id";
    /// Signature over a signed prekey.
    pub const PREKEY: &[u8] = b"NDR1/prekey";
    /// Signature over a bundle (certificate, prekey, version list).
    pub const BUNDLE: &[u8] = b"NDR1/bundle";
    /// Hash of a signed version list, bound into the first-contact prologue.
    pub const VERSIONS: &[u8] = b"NDR1/versions";
    /// Signature over an invite.
    pub const INVITE: &[u8] = b"NDR1/invite";
    /// Checksum of an invite's text form (catches typos before signature checks).
    pub const INVITE_CHECKSUM: &[u8] = b"NDR1/invite-checksum";
    /// Safety number of a pair of identities.
    pub const SAFETY_NUMBER: &[u8] = b"NDR1/safety-number";
    /// Fingerprint of one identity.
    pub const FINGERPRINT: &[u8] = b"NDR1/fingerprint";
    /// Associated data of a blob's chunks (not a KDF input: the AEAD's label).
    pub const BLOB: &[u8] = b"NDR1/blob";
    /// Hash of a file, checked once its blob is opened.
    pub const BLOB_HASH: &[u8] = b"NDR1/blob-hash";
    /// A blob's read token at one relay.
    pub const BLOB_READ: &[u8] = b"NDR1/blob-read";
    /// A blob's write token at one relay.
    pub const BLOB_WRITE: &[u8] = b"NDR1/blob-write";
    /// The hash a relay keeps of a blob token.
    pub const BLOB_TOKEN: &[u8] = b"NDR1/blob-token";
    /// What a group membership entry's signature covers.
    pub const GROUP_ENTRY: &[u8] = b"NDR1/group-entry";
    /// A group membership entry's name, as other entries cite it.
    pub const GROUP_ENTRY_HASH: &[u8] = b"NDR1/group-entry-hash";
    /// A group's id, from its genesis entry.
    pub const GROUP_ID: &[u8] = b"NDR1/group-id";
    /// A group message's group-wide id, from its group, sender and sender sequence number.
    pub const GROUP_MESSAGE: &[u8] = b"NDR1/group-message";
    /// The digest of a log's heads that a group message names.
    pub const GROUP_HEADS: &[u8] = b"NDR1/group-heads";
}

fn feed(mut absorb: impl FnMut(&[u8]), label: &[u8], parts: &[&[u8]]) {
    for field in std::iter::once(label).chain(parts.iter().copied()) {
        let len = u32::try_from(field.len()).unwrap_or(u32::MAX);
        absorb(&len.to_be_bytes());
        absorb(field);
    }
}

/// `H(label ‖ parts…)`: BLAKE2s-256 of the length-prefixed label and parts.
pub fn hash(label: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Blake2s256::new();
    feed(|b| Digest::update(&mut h, b), label, parts);
    h.finalize().into()
}

/// `PRF(key, label ‖ parts…)`: keyed BLAKE2s-256 of the length-prefixed label and parts.
pub fn prf(key: &[u8; 32], label: &[u8], parts: &[&[u8]]) -> Zeroizing<[u8; 32]> {
    let mut mac = <Blake2sMac256 as KeyInit>::new(key.into());
    feed(|b| mac.update(b), label, parts);
    let mut out = Zeroizing::new([0u8; 32]);
    out.copy_from_slice(&mac.finalize_fixed());
    out
}

/// The first `N` bytes of `hash(label, parts)`.
pub fn hash_prefix<const N: usize>(label: &[u8], parts: &[&[u8]]) -> [u8; N] {
    let full = hash(label, parts);
    let mut out = [0u8; N];
    out.copy_from_slice(&full[..N]);
    out
}

/// The first 32 bytes of `bytes`, zero-padded if shorter (handshake hashes are always 32 bytes
/// for BLAKE2s; this only avoids a panic path).
pub(crate) fn array32_or_zero(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    let n = bytes.len().min(32);
    out[..n].copy_from_slice(&bytes[..n]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn length_prefixes_separate_fields() {
        assert_ne!(hash(b"L", &[b"ab", b"c"]), hash(b"L", &[b"a", b"bc"]));
        assert_ne!(hash(b"La", &[b"b"]), hash(b"L", &[b"ab"]));
    }

    #[test]
    fn prf_depends_on_key_and_label() {
        let a = prf(&[1; 32], label::ROOT, &[]);
        let b = prf(&[2; 32], label::ROOT, &[]);
        let c = prf(&[1; 32], label::SUB, &[]);
        assert_ne!(*a, *b);
        assert_ne!(*a, *c);
        assert_eq!(*a, *prf(&[1; 32], label::ROOT, &[]));
    }
}
