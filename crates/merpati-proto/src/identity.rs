//! Identities and what they sign: device certificates, signed prekeys, bundles, safety numbers.
//!
//! A user has one ed25519 identity key ([`IdentityKey`]). It signs, for each of the user's devices:
//!
//! 1. a [`DeviceCert`], binding the device's static X25519 key (its [`DeviceId`] is a hash of
//!    that key) to the identity;
//! 2. a [`SignedPrekey`] every [`PREKEY_ROTATION`], the X25519 key a peer's first contact is
//!    encrypted to, bound to the identity and the device id. The device keeps the private halves in
//!    a [`PrekeyRing`] until [`PREKEY_GRACE`] after rotation, then deletes them;
//! 3. a [`Bundle`]: certificate, current prekey and the list of protocol versions the device
//!    speaks, which is everything a peer needs to open a session. The signed version list is hashed
//!    ([`Bundle::versions_hash`]) into the first-contact prologue, so an attacker who strips a
//!    version from the list breaks the bundle signature and one who swaps the list breaks the
//!    handshake.
//!
//! Every signature is over `kdf::hash(label, fields)` with a label of its own from
//! [`kdf::label`], so a signature made for one purpose never verifies for another. Signatures are
//! checked with `verify_strict` and identity keys of small order are refused, so no key can sign
//! "everything".
//!
//! Two users compare a [`SafetyNumber`] (the same on both sides) to rule out a man in the middle;
//! [`fingerprint`] is the short form of one identity for listings.

use std::fmt;

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use rand_core::CryptoRng;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use thiserror::Error;
use zeroize::Zeroizing;

use crate::codec::{DecodeError, Reader, Writer};
use crate::kdf::{self, label};
use crate::keys::{KeyError, X25519Public, X25519Secret, array32};
use crate::time::Timestamp;

/// The NDR1 protocol version this implementation speaks. Every bundle must list it.
pub const PROTOCOL_VERSION: u16 = 1;
/// The versions this implementation puts in its own bundles, ascending.
pub const SUPPORTED_VERSIONS: &[u16] = &[PROTOCOL_VERSION];
/// The most protocol versions a bundle may list.
pub const MAX_VERSIONS: usize = 8;
/// How long a signed prekey is the current one before a new one replaces it, in milliseconds
/// (7 days).
pub const PREKEY_ROTATION: u64 = 7 * Timestamp::DAY;
/// How long a prekey stays usable after it was replaced, in milliseconds (30 days): the relay
/// TTL, so a first contact that waited on a relay for as long as relays keep anything still opens.
pub const PREKEY_GRACE: u64 = 30 * Timestamp::DAY;
/// A signed prekey's whole validity, from creation to `expires_at`, in milliseconds (37 days).
pub const PREKEY_LIFETIME: u64 = PREKEY_ROTATION + PREKEY_GRACE;
/// The most replaced prekeys a [`PrekeyRing`] keeps (count). With weekly rotation at most five
/// are still valid; the cap only bounds the state if the clock misbehaves.
pub const MAX_PREVIOUS_PREKEYS: usize = 10;
/// How long a last-resort prekey is the one invites carry before a new one replaces it, in
/// milliseconds (30 days).
pub const LAST_RESORT_ROTATION: u64 = 30 * Timestamp::DAY;
/// A last-resort prekey's whole validity, from creation to `expires_at`, in milliseconds (400
/// days): an invite made on any day carries one with at least [`INVITE_LIFETIME`] left.
pub const LAST_RESORT_LIFETIME: u64 = 400 * Timestamp::DAY;
/// How long an invite stays usable at the least, in milliseconds (365 days): the last-resort
/// prekey it carries is at most [`LAST_RESORT_ROTATION`] old when it is made, plus however long
/// the owner's rotation check waits (five days of slack; a node checks hourly).
pub const INVITE_LIFETIME: u64 = 365 * Timestamp::DAY;
const _: () = assert!(LAST_RESORT_LIFETIME - LAST_RESORT_ROTATION >= INVITE_LIFETIME + 5 * Timestamp::DAY);
/// The id bit that marks a last-resort prekey; rotating prekeys never have it.
pub const LAST_RESORT_ID_BIT: u32 = 1 << 31;
/// The most last-resort prekeys a [`PrekeyRing`] keeps (count). With monthly rotation at most 15
/// are usable at once (400 days of validity and 30 days of grace).
pub const MAX_LAST_RESORT_PREKEYS: usize = 16;
/// Decimal digits in a [`SafetyNumber`].
pub const SAFETY_NUMBER_DIGITS: usize = 60;

/// Digit groups in a safety number, and digits per group.
const SAFETY_GROUPS: usize = 12;
const SAFETY_GROUP_DIGITS: usize = SAFETY_NUMBER_DIGITS / SAFETY_GROUPS;
/// Hash bytes reduced to one group of five digits: 40 bits mod 100 000 has a bias below 10⁻⁷.
const SAFETY_GROUP_BYTES: usize = 5;
/// Hash bytes shown in a fingerprint (8 groups of 4 hex digits).
const FINGERPRINT_BYTES: usize = 16;

/// Why an identity, certificate, prekey or bundle was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum IdentityError {
    /// A signature does not verify under the identity key it claims.
    #[error("the signature on the {what} is invalid")]
    BadSignature {
        /// What was signed: "device certificate", "signed prekey", "bundle", "invite".
        what: &'static str,
    },
    /// 32 bytes that are not the canonical encoding of an ed25519 public key.
    #[error("the identity key is not a valid ed25519 public key")]
    InvalidKey,
    /// An ed25519 public key of small order, which could "sign" almost any message.
    #[error("the identity key is weak (of small order) and cannot be trusted")]
    WeakKey,
    /// Something signed is past its expiry time.
    #[error("the {what} has expired")]
    Expired {
        /// What expired.
        what: &'static str,
        /// When it expired.
        expires_at: Timestamp,
    },
    /// A version list that is empty, too long, or not strictly ascending.
    #[error("the protocol version list is invalid: {reason}")]
    InvalidVersions {
        /// What is wrong with the list.
        reason: &'static str,
    },
    /// A well-formed version list that lacks the version this implementation speaks.
    #[error(
        "the peer does not speak protocol version {}, the only one this version of Merpati speaks",
        PROTOCOL_VERSION
    )]
    UnsupportedVersions,
    /// A certificate issued by one identity was offered for a bundle signed by another.
    #[error("the device certificate belongs to a different identity")]
    WrongIdentity,
    /// Persisted prekey state that contradicts itself.
    #[error("the stored prekeys are inconsistent: {reason}")]
    InvalidPrekeyRing {
        /// What is inconsistent.
        reason: &'static str,
    },
    /// Bytes that do not decode.
    #[error("malformed identity data: {0}")]
    Decode(#[from] DecodeError),
    /// An X25519 key (device static or prekey) that was refused.
    #[error("invalid key: {0}")]
    Key(#[from] KeyError),
}

/// A human name for what a signature label covers, for error messages.
fn signed_object(sig_label: &[u8]) -> &'static str {
    match sig_label {
        l if l == label::DEVICE_CERT => "device certificate",
        l if l == label::PREKEY => "signed prekey",
        l if l == label::BUNDLE => "bundle",
        l if l == label::INVITE => "invite",
        _ => "signed data",
    }
}

/// A user's ed25519 identity key. Zeroized on drop; never printed.
pub struct IdentityKey(SigningKey);

impl IdentityKey {
    /// A fresh random identity.
    pub fn generate(rng: &mut (impl CryptoRng + ?Sized)) -> Self {
        Self(SigningKey::generate(rng))
    }

    /// Restores an identity from its 32-byte secret seed.
    pub fn from_bytes(seed: &[u8; 32]) -> Self {
        Self(SigningKey::from_bytes(seed))
    }

    /// The 32-byte secret seed, for persistence.
    pub fn to_bytes(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.0.to_bytes())
    }

    /// The public half.
    pub fn public(&self) -> IdentityPublic {
        // A key derived from a clamped scalar has prime order, so it is never weak.
        IdentityPublic(self.0.verifying_key().to_bytes())
    }

    /// Signs `kdf::hash(label, parts)`. Only this crate signs, so every signature has a label.
    pub(crate) fn sign(&self, sig_label: &[u8], parts: &[&[u8]]) -> [u8; 64] {
        let digest = kdf::hash(sig_label, parts);
        Signer::sign(&self.0, &digest).to_bytes()
    }
}

impl fmt::Debug for IdentityKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("IdentityKey(..)")
    }
}

impl Serialize for IdentityKey {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        serde_bytes::Bytes::new(&self.to_bytes()[..]).serialize(s)
    }
}

impl<'de> Deserialize<'de> for IdentityKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let bytes = Zeroizing::new(serde_bytes::ByteBuf::deserialize(d)?.into_vec());
        let seed = Zeroizing::new(array32(&bytes).map_err(serde::de::Error::custom)?);
        Ok(Self::from_bytes(&seed))
    }
}

/// An ed25519 identity public key in canonical encoding, not of small order.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IdentityPublic([u8; 32]);

impl IdentityPublic {
    /// Checks and wraps a public key: refuses bytes that are not a point, non-canonical
    /// encodings (two byte strings must never name the same identity) and weak keys.
    pub fn from_bytes(bytes: [u8; 32]) -> Result<Self, IdentityError> {
        let key = VerifyingKey::from_bytes(&bytes).map_err(|_| IdentityError::InvalidKey)?;
        if key.to_edwards().compress().to_bytes() != bytes {
            return Err(IdentityError::InvalidKey);
        }
        if key.is_weak() {
            return Err(IdentityError::WeakKey);
        }
        Ok(Self(bytes))
    }

    /// Checks and wraps a public key given as a slice.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, IdentityError> {
        Self::from_bytes(array32(bytes)?)
    }

    /// The key bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Checks `signature` over `kdf::hash(label, parts)` with `verify_strict`.
    pub fn verify(
        &self,
        sig_label: &[u8],
        parts: &[&[u8]],
        signature: &[u8; 64],
    ) -> Result<(), IdentityError> {
        let what = signed_object(sig_label);
        // `from_bytes` already accepted these bytes, so this only fails if that invariant broke.
        let key = VerifyingKey::from_bytes(&self.0).map_err(|_| IdentityError::InvalidKey)?;
        let digest = kdf::hash(sig_label, parts);
        key.verify_strict(&digest, &Signature::from_bytes(signature))
            .map_err(|_| IdentityError::BadSignature { what })
    }
}

impl fmt::Debug for IdentityPublic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IdentityPublic({:02x}{:02x}{:02x}{:02x}..)", self.0[0], self.0[1], self.0[2], self.0[3])
    }
}

impl Serialize for IdentityPublic {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        serde_bytes::Bytes::new(&self.0).serialize(s)
    }
}

impl<'de> Deserialize<'de> for IdentityPublic {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let bytes = serde_bytes::ByteBuf::deserialize(d)?;
        Self::from_slice(&bytes).map_err(serde::de::Error::custom)
    }
}

/// A device's id: `H("NDR1/device-id" ‖ device static public key)[..16]`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct DeviceId(#[serde(with = "serde_bytes")] pub [u8; 16]);

impl DeviceId {
    /// The id of the device whose static key is `device_static`.
    pub fn of(device_static: &X25519Public) -> Self {
        Self(kdf::hash_prefix(label::DEVICE_ID, &[device_static.as_bytes()]))
    }

    /// The id's bytes.
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }
}

impl fmt::Debug for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DeviceId(")?;
        for b in &self.0[..6] {
            write!(f, "{b:02x}")?;
        }
        write!(f, "..)")
    }
}

/// Serde through the binary encoding, for signed wire types that are also persisted.
macro_rules! binary_serde {
    ($ty:ident) => {
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                serde_bytes::ByteBuf::from(self.to_bytes()).serialize(s)
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let bytes = serde_bytes::ByteBuf::deserialize(d)?;
                Self::from_bytes(&bytes).map_err(serde::de::Error::custom)
            }
        }
    };
}

/// An identity's statement that a device static key belongs to it.
///
/// Layout (136 bytes): identity key (32) ‖ device static key (32) ‖ created at (u64 ms) ‖
/// signature (64) over `H("NDR1/device-cert" ‖ identity ‖ device static ‖ created at)`.
/// A decoded certificate is unverified until [`DeviceCert::verify`] succeeds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceCert {
    /// The identity that issued the certificate.
    pub identity: IdentityPublic,
    /// The device's static X25519 key.
    pub device_static: X25519Public,
    /// When it was issued.
    pub created_at: Timestamp,
    /// The identity's signature.
    pub signature: [u8; 64],
}

impl DeviceCert {
    /// The length of every encoded certificate.
    pub const ENCODED_LEN: usize = 32 + 32 + 8 + 64;

    /// Certifies `device_static` as a device of `identity`.
    pub fn issue(identity: &IdentityKey, device_static: &X25519Public, now: Timestamp) -> Self {
        let mut cert = Self {
            identity: identity.public(),
            device_static: *device_static,
            created_at: now,
            signature: [0; 64],
        };
        cert.signature = cert.with_signed_parts(|parts| identity.sign(label::DEVICE_CERT, parts));
        cert
    }

    /// Calls `f` with the fields the signature covers, so signing and verifying cannot disagree.
    fn with_signed_parts<R>(&self, f: impl FnOnce(&[&[u8]]) -> R) -> R {
        let created = self.created_at.0.to_be_bytes();
        f(&[self.identity.as_bytes(), self.device_static.as_bytes(), &created])
    }

    /// Checks the identity's signature.
    pub fn verify(&self) -> Result<(), IdentityError> {
        self.with_signed_parts(|parts| self.identity.verify(label::DEVICE_CERT, parts, &self.signature))
    }

    /// The certified device's id.
    pub fn device_id(&self) -> DeviceId {
        DeviceId::of(&self.device_static)
    }

    /// Appends the certificate's encoding.
    pub fn encode(&self, w: &mut Writer) {
        w.raw(self.identity.as_bytes())
            .raw(self.device_static.as_bytes())
            .u64(self.created_at.0)
            .raw(&self.signature);
    }

    /// Reads a certificate, checking its keys but not its signature.
    pub fn decode(r: &mut Reader<'_>) -> Result<Self, IdentityError> {
        let identity = IdentityPublic::from_bytes(r.array("identity key")?)?;
        let device_static = X25519Public::from_bytes(r.array("device static key")?)?;
        let created_at = Timestamp(r.u64("certificate time")?);
        let signature = r.array("certificate signature")?;
        Ok(Self { identity, device_static, created_at, signature })
    }

    /// The encoding as a vector.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(Self::ENCODED_LEN);
        self.encode(&mut w);
        w.into_bytes()
    }

    /// Decodes exactly one certificate from `bytes`.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, IdentityError> {
        let mut r = Reader::new(bytes);
        let cert = Self::decode(&mut r)?;
        r.finish()?;
        Ok(cert)
    }
}

binary_serde!(DeviceCert);

/// A prekey: the X25519 key a peer's first contact is encrypted to, signed by the identity.
///
/// Layout (116 bytes): id (u32) ‖ public key (32) ‖ created at (u64 ms) ‖ expires at (u64 ms) ‖
/// signature (64) over `H("NDR1/prekey" ‖ identity ‖ device id ‖ id ‖ public ‖ created ‖ expires)`.
/// The identity and device id are not encoded: the prekey travels with its device certificate,
/// and binding them stops one identity's prekey being passed off as another's (unknown key share).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedPrekey {
    /// The prekey's number on its device, one more at every rotation.
    pub id: u32,
    /// The X25519 public key.
    pub public: X25519Public,
    /// When it was made.
    pub created_at: Timestamp,
    /// After this time no peer may use it and its owner deletes the private key.
    pub expires_at: Timestamp,
    /// The identity's signature.
    pub signature: [u8; 64],
}

impl SignedPrekey {
    /// The length of every encoded prekey.
    pub const ENCODED_LEN: usize = 4 + 32 + 8 + 8 + 64;

    /// Signs `public` as prekey `id` of `device` for `identity`.
    pub fn issue(
        identity: &IdentityKey,
        device: &DeviceId,
        id: u32,
        public: &X25519Public,
        created_at: Timestamp,
        expires_at: Timestamp,
    ) -> Self {
        let mut prekey = Self { id, public: *public, created_at, expires_at, signature: [0; 64] };
        prekey.signature =
            prekey.with_signed_parts(&identity.public(), device, |parts| identity.sign(label::PREKEY, parts));
        prekey
    }

    /// Calls `f` with the fields the signature covers, so signing and verifying cannot disagree.
    fn with_signed_parts<R>(
        &self,
        identity: &IdentityPublic,
        device: &DeviceId,
        f: impl FnOnce(&[&[u8]]) -> R,
    ) -> R {
        let (id, created, expires) =
            (self.id.to_be_bytes(), self.created_at.0.to_be_bytes(), self.expires_at.0.to_be_bytes());
        f(&[identity.as_bytes(), device.as_bytes(), &id, self.public.as_bytes(), &created, &expires])
    }

    /// Checks the signature of `identity` for `device`, then that the prekey has not expired.
    pub fn verify(
        &self,
        identity: &IdentityPublic,
        device: &DeviceId,
        now: Timestamp,
    ) -> Result<(), IdentityError> {
        self.with_signed_parts(identity, device, |parts| {
            identity.verify(label::PREKEY, parts, &self.signature)
        })?;
        if now > self.expires_at {
            return Err(IdentityError::Expired { what: "signed prekey", expires_at: self.expires_at });
        }
        Ok(())
    }

    /// Appends the prekey's encoding.
    pub fn encode(&self, w: &mut Writer) {
        w.u32(self.id)
            .raw(self.public.as_bytes())
            .u64(self.created_at.0)
            .u64(self.expires_at.0)
            .raw(&self.signature);
    }

    /// Reads a prekey, checking its key but not its signature.
    pub fn decode(r: &mut Reader<'_>) -> Result<Self, IdentityError> {
        let id = r.u32("prekey id")?;
        let public = X25519Public::from_bytes(r.array("prekey")?)?;
        let created_at = Timestamp(r.u64("prekey creation time")?);
        let expires_at = Timestamp(r.u64("prekey expiry time")?);
        let signature = r.array("prekey signature")?;
        Ok(Self { id, public, created_at, expires_at, signature })
    }

    /// The encoding as a vector.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(Self::ENCODED_LEN);
        self.encode(&mut w);
        w.into_bytes()
    }

    /// Decodes exactly one prekey from `bytes`.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, IdentityError> {
        let mut r = Reader::new(bytes);
        let prekey = Self::decode(&mut r)?;
        r.finish()?;
        Ok(prekey)
    }
}

binary_serde!(SignedPrekey);

/// One prekey and its private key.
#[derive(Debug, Serialize, Deserialize)]
struct PrekeyEntry {
    prekey: SignedPrekey,
    secret: X25519Secret,
}

impl PrekeyEntry {
    /// A new prekey `id`, valid from `now` for [`PREKEY_LIFETIME`], or for
    /// [`LAST_RESORT_LIFETIME`] if `id` has the [`LAST_RESORT_ID_BIT`].
    fn generate(
        identity: &IdentityKey,
        device: &DeviceId,
        id: u32,
        now: Timestamp,
        rng: &mut (impl CryptoRng + ?Sized),
    ) -> Self {
        let secret = X25519Secret::generate(rng);
        let lifetime = if is_last_resort(id) { LAST_RESORT_LIFETIME } else { PREKEY_LIFETIME };
        let prekey = SignedPrekey::issue(identity, device, id, &secret.public(), now, now.plus(lifetime));
        Self { prekey, secret }
    }

    /// Senders stop using a prekey at `expires_at`, but a first contact written just before then
    /// may wait on a relay for up to the relay TTL, so the secret stays usable that much longer.
    fn usable(&self, now: Timestamp) -> bool {
        now <= self.prekey.expires_at.plus(PREKEY_GRACE)
    }
}

/// Whether prekey `id` is a last-resort one.
pub fn is_last_resort(id: u32) -> bool {
    id & LAST_RESORT_ID_BIT != 0
}

/// A device's prekeys with their private keys: the current one, published in bundles, and
/// replaced ones kept until they expire so first contacts still in flight can be opened; and the
/// last-resort prekeys invites carry besides the bundle, for first contacts made after the
/// bundle's prekey expired (an invite is good for over a year, a rotating prekey for 37 days).
///
/// Dropping a prekey (at [`PrekeyRing::purge`] or when the ring is dropped) zeroizes its private
/// key; once it is gone, first contacts encrypted to it stay sealed (forward secrecy).
#[derive(Debug, Deserialize)]
#[serde(try_from = "PrekeyRingState<PrekeyEntry>")]
pub struct PrekeyRing {
    current: PrekeyEntry,
    /// Replaced prekeys, oldest first; at most [`MAX_PREVIOUS_PREKEYS`].
    previous: Vec<PrekeyEntry>,
    /// Last-resort prekeys, oldest first, the newest being the one invites carry; at most
    /// [`MAX_LAST_RESORT_PREKEYS`]. Empty only in a new ring, or one stored before they existed,
    /// until the next [`PrekeyRing::rotate_if_due`].
    last_resort: Vec<PrekeyEntry>,
}

/// The persisted form of a ring, checked before it becomes a [`PrekeyRing`]. Last-resort
/// prekeys are persisted in `previous`, told apart by [`LAST_RESORT_ID_BIT`]: rings stored
/// before they existed load unchanged.
#[derive(Serialize, Deserialize)]
struct PrekeyRingState<E> {
    current: E,
    previous: Vec<E>,
}

impl Serialize for PrekeyRing {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let state = PrekeyRingState {
            current: &self.current,
            previous: self.previous.iter().chain(&self.last_resort).collect(),
        };
        state.serialize(serializer)
    }
}

impl TryFrom<PrekeyRingState<PrekeyEntry>> for PrekeyRing {
    type Error = IdentityError;

    fn try_from(state: PrekeyRingState<PrekeyEntry>) -> Result<Self, IdentityError> {
        let invalid = |reason| Err(IdentityError::InvalidPrekeyRing { reason });
        if is_last_resort(state.current.prekey.id) {
            return invalid("the current prekey is a last-resort one");
        }
        let last_resort_count = state.previous.iter().filter(|e| is_last_resort(e.prekey.id)).count();
        if last_resort_count > MAX_LAST_RESORT_PREKEYS {
            return invalid("too many last-resort prekeys");
        }
        if state.previous.len() - last_resort_count > MAX_PREVIOUS_PREKEYS {
            return invalid("too many previous prekeys");
        }
        let entries = || std::iter::once(&state.current).chain(&state.previous);
        // A mismatched pair would publish a prekey whose first contacts can never be opened.
        if entries().any(|e| e.secret.public() != e.prekey.public) {
            return invalid("a private key does not match its public key");
        }
        for (i, e) in entries().enumerate() {
            if entries().skip(i + 1).any(|other| other.prekey.id == e.prekey.id) {
                return invalid("two prekeys share an id");
            }
        }
        let (mut last_resort, mut previous): (Vec<_>, Vec<_>) =
            state.previous.into_iter().partition(|e| is_last_resort(e.prekey.id));
        previous.reserve_exact((MAX_PREVIOUS_PREKEYS + 1).saturating_sub(previous.len()));
        last_resort.reserve_exact((MAX_LAST_RESORT_PREKEYS + 1).saturating_sub(last_resort.len()));
        Ok(Self { current: state.current, previous, last_resort })
    }
}

impl PrekeyRing {
    /// A ring with a first prekey (id 1) made at `now`, and no last-resort prekey until the first
    /// [`PrekeyRing::rotate_if_due`] (which makes one at once), so that making a ring draws the
    /// same randomness as before last-resort prekeys existed.
    pub fn new(
        identity: &IdentityKey,
        device: &DeviceId,
        now: Timestamp,
        rng: &mut (impl CryptoRng + ?Sized),
    ) -> Self {
        // Room for the cap up front, so rotating never reallocates and leaves copies of private
        // keys behind in freed memory.
        let previous = Vec::with_capacity(MAX_PREVIOUS_PREKEYS + 1);
        let last_resort = Vec::with_capacity(MAX_LAST_RESORT_PREKEYS + 1);
        Self { current: PrekeyEntry::generate(identity, device, 1, now, rng), previous, last_resort }
    }

    /// The prekey to publish.
    pub fn current(&self) -> &SignedPrekey {
        &self.current.prekey
    }

    /// The last-resort prekey invites carry now: the newest one.
    pub fn last_resort(&self) -> Option<&SignedPrekey> {
        self.last_resort.last().map(|e| &e.prekey)
    }

    /// Replaces the current prekey with a new one (id + 1) if it is at least [`PREKEY_ROTATION`]
    /// old, and the last-resort prekey if it is at least [`LAST_RESORT_ROTATION`] old (or there
    /// is none), keeping the old ones until they expire. Returns whether either rotated, in which
    /// case the caller persists the ring and republishes its bundle and invites.
    pub fn rotate_if_due(
        &mut self,
        identity: &IdentityKey,
        device: &DeviceId,
        now: Timestamp,
        rng: &mut (impl CryptoRng + ?Sized),
    ) -> bool {
        let mut rotated = false;
        if now.since(self.current.prekey.created_at) >= PREKEY_ROTATION {
            // Ids only have to differ among the prekeys alive at once; the low 31 bits last 40
            // million years of weekly rotation.
            let id = self.current.prekey.id.wrapping_add(1) & !LAST_RESORT_ID_BIT;
            let fresh = PrekeyEntry::generate(identity, device, id, now, rng);
            self.previous.push(std::mem::replace(&mut self.current, fresh));
            if self.previous.len() > MAX_PREVIOUS_PREKEYS {
                self.previous.remove(0);
            }
            rotated = true;
        }
        let newest = self.last_resort.last().map(|e| &e.prekey);
        if newest.is_none_or(|p| now.since(p.created_at) >= LAST_RESORT_ROTATION) {
            let id = LAST_RESORT_ID_BIT | newest.map_or(1, |p| p.id.wrapping_add(1));
            self.last_resort.push(PrekeyEntry::generate(identity, device, id, now, rng));
            if self.last_resort.len() > MAX_LAST_RESORT_PREKEYS {
                self.last_resort.remove(0);
            }
            rotated = true;
        }
        rotated
    }

    /// Deletes the private keys of replaced prekeys that have expired; returns how many. The
    /// current prekey is never deleted here: [`PrekeyRing::rotate_if_due`] replaces it long before
    /// it expires.
    pub fn purge(&mut self, now: Timestamp) -> usize {
        let before = self.previous.len() + self.last_resort.len();
        self.previous.retain(|e| e.usable(now));
        self.last_resort.retain(|e| e.usable(now));
        before - self.previous.len() - self.last_resort.len()
    }

    /// The private key of prekey `id`, if it is known and still usable at `now` (until
    /// [`PREKEY_GRACE`] after the prekey's expiry).
    pub fn secret_for(&self, id: u32, now: Timestamp) -> Option<&X25519Secret> {
        std::iter::once(&self.current)
            .chain(self.previous.iter().rev())
            .chain(self.last_resort.iter().rev())
            .find(|e| e.prekey.id == id)
            .filter(|e| e.usable(now))
            .map(|e| &e.secret)
    }

    /// Every prekey the ring holds a private key for: the current one, then replaced ones from
    /// the newest, then last-resort ones from the newest.
    pub fn prekeys(&self) -> impl Iterator<Item = &SignedPrekey> {
        std::iter::once(&self.current)
            .chain(self.previous.iter().rev())
            .chain(self.last_resort.iter().rev())
            .map(|e| &e.prekey)
    }
}

/// Appends a version list: count (u8) ‖ versions (u16 each).
fn encode_versions(versions: &[u16], w: &mut Writer) {
    w.u8(u8::try_from(versions.len()).unwrap_or(u8::MAX));
    for v in versions {
        w.u16(*v);
    }
}

fn encoded_versions(versions: &[u16]) -> Vec<u8> {
    let mut w = Writer::with_capacity(1 + 2 * versions.len());
    encode_versions(versions, &mut w);
    w.into_bytes()
}

/// Checks a version list: non-empty, at most [`MAX_VERSIONS`], strictly ascending, and
/// containing [`PROTOCOL_VERSION`].
pub fn check_versions(versions: &[u16]) -> Result<(), IdentityError> {
    if versions.is_empty() {
        return Err(IdentityError::InvalidVersions { reason: "it is empty" });
    }
    if versions.len() > MAX_VERSIONS {
        return Err(IdentityError::InvalidVersions { reason: "it has too many entries" });
    }
    // Strict order makes the encoding of a set canonical, so its hash is too.
    if versions.windows(2).any(|pair| pair[0] >= pair[1]) {
        return Err(IdentityError::InvalidVersions { reason: "it is not strictly ascending" });
    }
    if !versions.contains(&PROTOCOL_VERSION) {
        return Err(IdentityError::UnsupportedVersions);
    }
    Ok(())
}

/// Everything a peer needs to start a session with one device: its certificate, its current
/// prekey and the protocol versions it speaks, signed together by the identity.
///
/// Layout: certificate (136) ‖ prekey (116) ‖ version count (u8) ‖ versions (u16 each) ‖
/// signature (64) over `H("NDR1/bundle" ‖ certificate ‖ prekey ‖ count ‖ versions)`, 319 bytes
/// with one version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bundle {
    /// The device's certificate.
    pub cert: DeviceCert,
    /// The device's current prekey.
    pub prekey: SignedPrekey,
    /// The protocol versions the device speaks, strictly ascending.
    pub versions: Vec<u16>,
    /// The identity's signature.
    pub signature: [u8; 64],
}

impl Bundle {
    /// The longest encoded bundle.
    pub const MAX_ENCODED_LEN: usize =
        DeviceCert::ENCODED_LEN + SignedPrekey::ENCODED_LEN + 1 + 2 * MAX_VERSIONS + 64;

    /// Signs a bundle. Refuses a certificate of another identity and an invalid version list.
    pub fn new(
        identity: &IdentityKey,
        cert: DeviceCert,
        prekey: SignedPrekey,
        versions: Vec<u16>,
    ) -> Result<Self, IdentityError> {
        if cert.identity != identity.public() {
            return Err(IdentityError::WrongIdentity);
        }
        check_versions(&versions)?;
        let mut bundle = Self { cert, prekey, versions, signature: [0; 64] };
        let [cert, prekey, versions] = bundle.signed_fields();
        bundle.signature = identity.sign(label::BUNDLE, &[&cert, &prekey, &versions]);
        Ok(bundle)
    }

    fn signed_fields(&self) -> [Vec<u8>; 3] {
        [self.cert.to_bytes(), self.prekey.to_bytes(), encoded_versions(&self.versions)]
    }

    /// Checks the version list, the certificate, the prekey (signed by the same identity for this
    /// device, not expired at `now`) and the bundle signature.
    pub fn verify(&self, now: Timestamp) -> Result<(), IdentityError> {
        check_versions(&self.versions)?;
        self.cert.verify()?;
        self.prekey.verify(&self.cert.identity, &self.cert.device_id(), now)?;
        let [cert, prekey, versions] = self.signed_fields();
        self.cert.identity.verify(label::BUNDLE, &[&cert, &prekey, &versions], &self.signature)
    }

    /// The identity the bundle belongs to.
    pub fn identity(&self) -> &IdentityPublic {
        &self.cert.identity
    }

    /// The id of the device the bundle is for.
    pub fn device_id(&self) -> DeviceId {
        self.cert.device_id()
    }

    /// `H("NDR1/versions" ‖ encoded version list)`, bound into the first-contact prologue so a
    /// version list changed in transit makes the handshake fail.
    pub fn versions_hash(&self) -> [u8; 32] {
        kdf::hash(label::VERSIONS, &[&encoded_versions(&self.versions)])
    }

    /// The length of this bundle's encoding.
    pub fn encoded_len(&self) -> usize {
        DeviceCert::ENCODED_LEN + SignedPrekey::ENCODED_LEN + 1 + 2 * self.versions.len() + 64
    }

    /// Appends the bundle's encoding.
    pub fn encode(&self, w: &mut Writer) {
        self.cert.encode(w);
        self.prekey.encode(w);
        encode_versions(&self.versions, w);
        w.raw(&self.signature);
    }

    /// Reads a bundle, checking its keys and the version count but no signature.
    pub fn decode(r: &mut Reader<'_>) -> Result<Self, IdentityError> {
        let cert = DeviceCert::decode(r)?;
        let prekey = SignedPrekey::decode(r)?;
        let count = r.count_u8(MAX_VERSIONS, "versions")?;
        let versions = (0..count).map(|_| r.u16("version")).collect::<Result<_, _>>()?;
        let signature = r.array("bundle signature")?;
        Ok(Self { cert, prekey, versions, signature })
    }

    /// The encoding as a vector.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(self.encoded_len());
        self.encode(&mut w);
        w.into_bytes()
    }

    /// Decodes exactly one bundle from `bytes`.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, IdentityError> {
        let mut r = Reader::new(bytes);
        let bundle = Self::decode(&mut r)?;
        r.finish()?;
        Ok(bundle)
    }
}

binary_serde!(Bundle);

/// The number two contacts compare (read aloud or side by side) to rule out a man in the middle.
/// It depends only on the pair of identities, not on who computes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SafetyNumber([u32; SAFETY_GROUPS]);

impl SafetyNumber {
    /// The safety number of `a` and `b`, in either order.
    pub fn new(a: &IdentityPublic, b: &IdentityPublic) -> Self {
        let (low, high) = if a <= b { (a, b) } else { (b, a) };
        let mut stream = [0u8; 64];
        for (counter, block) in (0u8..).zip(stream.chunks_exact_mut(32)) {
            block.copy_from_slice(&kdf::hash(
                label::SAFETY_NUMBER,
                &[&[counter], low.as_bytes(), high.as_bytes()],
            ));
        }
        let mut groups = [0u32; SAFETY_GROUPS];
        for (group, bytes) in groups.iter_mut().zip(stream.chunks_exact(SAFETY_GROUP_BYTES)) {
            let value = bytes.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
            // The remainder is below 100 000, so it always fits.
            *group = u32::try_from(value % 100_000).unwrap_or(0);
        }
        Self(groups)
    }

    /// The twelve five-digit groups.
    pub fn groups(&self) -> &[u32; SAFETY_GROUPS] {
        &self.0
    }
}

impl fmt::Display for SafetyNumber {
    /// Twelve groups of five digits separated by spaces, e.g. `01234 56789 …`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, group) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{group:0width$}", width = SAFETY_GROUP_DIGITS)?;
        }
        Ok(())
    }
}

/// A short human form of one identity, `H("NDR1/fingerprint" ‖ key)[..16]` as eight groups of
/// four hex digits (`3f2a 9c01 …`), for listings such as `contact show`. Compare safety numbers,
/// not fingerprints, to authenticate a contact: 64 bits are enough to tell contacts apart, not to
/// resist a targeted search.
pub fn fingerprint(identity: &IdentityPublic) -> String {
    let bytes: [u8; FINGERPRINT_BYTES] = kdf::hash_prefix(label::FINGERPRINT, &[identity.as_bytes()]);
    let groups: Vec<String> = bytes.chunks_exact(2).map(|g| format!("{:02x}{:02x}", g[0], g[1])).collect();
    groups.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    const T0: Timestamp = Timestamp(1_750_000_000_000);

    struct Device {
        identity: IdentityKey,
        static_secret: X25519Secret,
        cert: DeviceCert,
        ring: PrekeyRing,
    }

    fn device(seed: u64) -> Device {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let identity = IdentityKey::generate(&mut rng);
        let static_secret = X25519Secret::generate(&mut rng);
        let cert = DeviceCert::issue(&identity, &static_secret.public(), T0);
        let ring = PrekeyRing::new(&identity, &cert.device_id(), T0, &mut rng);
        Device { identity, static_secret, cert, ring }
    }

    fn bundle_of(d: &Device, versions: Vec<u16>) -> Bundle {
        Bundle::new(&d.identity, d.cert.clone(), d.ring.current().clone(), versions).expect("bundle")
    }

    /// Signs a bundle without the checks of `Bundle::new`, as a malicious peer could.
    fn forge_bundle(
        identity: &IdentityKey,
        cert: DeviceCert,
        prekey: SignedPrekey,
        versions: Vec<u16>,
    ) -> Bundle {
        let mut bundle = Bundle { cert, prekey, versions, signature: [0; 64] };
        let [c, p, v] = bundle.signed_fields();
        bundle.signature = identity.sign(label::BUNDLE, &[&c, &p, &v]);
        bundle
    }

    /// The encoding of the ed25519 points of small order (RFC 8032 / "Taming the many EdDSAs").
    fn small_order_points() -> Vec<[u8; 32]> {
        let mut neutral = [0u8; 32];
        neutral[0] = 1;
        let mut minus_one = [0xff; 32];
        minus_one[0] = 0xec;
        minus_one[31] = 0x7f;
        let order8 =
            hex::decode("c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a").expect("hex");
        vec![neutral, minus_one, [0; 32], array32(&order8).expect("32")]
    }

    #[test]
    fn signatures_are_domain_separated() {
        let d = device(1);
        let public = d.identity.public();
        let sig = d.identity.sign(label::DEVICE_CERT, &[b"a", b"b"]);
        assert_eq!(public.verify(label::DEVICE_CERT, &[b"a", b"b"], &sig), Ok(()));
        assert_eq!(
            public.verify(label::PREKEY, &[b"a", b"b"], &sig),
            Err(IdentityError::BadSignature { what: "signed prekey" })
        );
        assert!(public.verify(label::DEVICE_CERT, &[b"ab"], &sig).is_err());
        assert!(device(2).identity.public().verify(label::DEVICE_CERT, &[b"a", b"b"], &sig).is_err());
    }

    #[test]
    fn malleated_signatures_are_refused() {
        let d = device(20);
        let sig = d.identity.sign(label::BUNDLE, &[b"x"]);
        // s + ℓ is the same signature to a lax verifier; strict verification wants s < ℓ.
        let order =
            hex::decode("edd3f55c1a631258d69cf7a2def9de1400000000000000000000000000000010").expect("hex");
        let mut malleated = sig;
        let mut carry = 0u16;
        for (byte, l) in malleated[32..].iter_mut().zip(&order) {
            let sum = u16::from(*byte) + u16::from(*l) + carry;
            *byte = sum.to_le_bytes()[0];
            carry = sum >> 8;
        }
        let public = d.identity.public();
        assert_eq!(public.verify(label::BUNDLE, &[b"x"], &sig), Ok(()));
        assert!(public.verify(label::BUNDLE, &[b"x"], &malleated).is_err());
    }

    #[test]
    fn weak_and_invalid_identity_keys_are_refused() {
        for point in small_order_points() {
            assert!(VerifyingKey::from_bytes(&point).is_ok(), "the test point decodes");
            assert_eq!(IdentityPublic::from_bytes(point), Err(IdentityError::WeakKey));
        }
        // About half of all y coordinates are not on the curve.
        let off_curve = (2u8..)
            .map(|y| {
                let mut bytes = [0u8; 32];
                bytes[0] = y;
                bytes
            })
            .find(|bytes| VerifyingKey::from_bytes(bytes).is_err())
            .expect("an off-curve y");
        assert_eq!(IdentityPublic::from_bytes(off_curve), Err(IdentityError::InvalidKey));
        assert_eq!(
            IdentityPublic::from_slice(&[1; 31]),
            Err(IdentityError::Key(KeyError::WrongLength { expected: 32, got: 31 }))
        );
    }

    #[test]
    fn non_canonical_identity_encodings_are_refused() {
        // y + p for small y is a second encoding of the point with coordinate y, which dalek
        // accepts (ZIP-215); at least one of them is a point of large order.
        let mut refused = 0;
        for y in 2u8..19 {
            let mut bytes = [0xffu8; 32];
            bytes[0] = 0xed + y;
            bytes[31] = 0x7f;
            if VerifyingKey::from_bytes(&bytes).is_ok_and(|k| !k.is_weak()) {
                assert_eq!(IdentityPublic::from_bytes(bytes), Err(IdentityError::InvalidKey));
                refused += 1;
            }
        }
        assert!(refused > 0);
    }

    #[test]
    fn identity_key_serde_and_debug() {
        let d = device(3);
        let json = serde_json::to_string(&d.identity).expect("ser");
        let back: IdentityKey = serde_json::from_str(&json).expect("de");
        assert_eq!(back.public(), d.identity.public());
        assert_eq!(*IdentityKey::from_bytes(&d.identity.to_bytes()).to_bytes(), *d.identity.to_bytes());
        assert_eq!(format!("{:?}", d.identity), "IdentityKey(..)");

        let public = d.identity.public();
        let json = serde_json::to_string(&public).expect("ser");
        assert_eq!(serde_json::from_str::<IdentityPublic>(&json).expect("de"), public);
        let weak = serde_json::to_string(&serde_bytes::Bytes::new(&small_order_points()[0])).expect("ser");
        assert!(serde_json::from_str::<IdentityPublic>(&weak).is_err());
        let shown = format!("{public:?}");
        assert!(shown.starts_with("IdentityPublic(") && shown.len() < 30, "{shown}");
    }

    #[test]
    fn secrets_never_print() {
        let d = device(4);
        let shown = format!("{:?} {:?}", d.identity, d.ring);
        assert!(shown.starts_with("IdentityKey(..) "), "{shown}");
        assert!(shown.contains("X25519Secret(..)"), "{shown}");
        let identity_seed = d.identity.to_bytes();
        let prekey_secret = d.ring.secret_for(1, T0).expect("secret");
        for secret in [&identity_seed[..], &prekey_secret.as_bytes()[..]] {
            // Neither as hex nor as the decimal byte list a derived Debug would print.
            assert!(!shown.contains(&hex::encode(&secret[..4])), "{shown}");
            assert!(!shown.contains(&format!("{}, {}, {}, {}", secret[0], secret[1], secret[2], secret[3])));
        }
    }

    #[test]
    fn device_cert_verifies_and_round_trips() {
        let d = device(5);
        assert_eq!(d.cert.verify(), Ok(()));
        assert_eq!(d.cert.device_id(), DeviceId::of(&d.static_secret.public()));
        let bytes = d.cert.to_bytes();
        assert_eq!(bytes.len(), DeviceCert::ENCODED_LEN);
        assert_eq!(DeviceCert::from_bytes(&bytes), Ok(d.cert.clone()));

        let mut moved = d.cert.clone();
        moved.device_static = device(6).static_secret.public();
        assert_eq!(moved.verify(), Err(IdentityError::BadSignature { what: "device certificate" }));
        let mut backdated = d.cert.clone();
        backdated.created_at = Timestamp(0);
        assert!(backdated.verify().is_err());
        let mut other = d.cert.clone();
        other.identity = device(6).identity.public();
        assert!(other.verify().is_err());

        let json = serde_json::to_string(&d.cert).expect("ser");
        assert_eq!(serde_json::from_str::<DeviceCert>(&json).expect("de"), d.cert);
    }

    #[test]
    fn prekey_is_bound_to_identity_device_and_time() {
        let d = device(7);
        let other = device(8);
        let prekey = d.ring.current();
        let (identity, device_id) = (d.identity.public(), d.cert.device_id());
        assert_eq!(prekey.id, 1);
        assert_eq!(prekey.expires_at, T0.plus(PREKEY_LIFETIME));
        assert_eq!(prekey.verify(&identity, &device_id, T0), Ok(()));
        assert_eq!(prekey.verify(&identity, &device_id, prekey.expires_at), Ok(()));
        assert_eq!(
            prekey.verify(&identity, &device_id, prekey.expires_at.plus(1)),
            Err(IdentityError::Expired { what: "signed prekey", expires_at: prekey.expires_at })
        );
        assert_eq!(
            prekey.verify(&identity, &other.cert.device_id(), T0),
            Err(IdentityError::BadSignature { what: "signed prekey" })
        );
        assert!(prekey.verify(&other.identity.public(), &device_id, T0).is_err());
        let mut extended = prekey.clone();
        extended.expires_at = Timestamp(u64::MAX);
        assert!(extended.verify(&identity, &device_id, T0).is_err());

        let bytes = prekey.to_bytes();
        assert_eq!(bytes.len(), SignedPrekey::ENCODED_LEN);
        assert_eq!(SignedPrekey::from_bytes(&bytes).as_ref(), Ok(prekey));
    }

    #[test]
    fn prekey_ring_rotates_keeps_and_purges() {
        let mut d = device(9);
        let mut rng = ChaCha20Rng::seed_from_u64(99);
        let device_id = d.cert.device_id();
        let first = d.ring.current().clone();
        let first_secret = d.ring.secret_for(1, T0).expect("first").as_bytes().to_owned();
        assert_eq!(X25519Secret::from_bytes(first_secret).public(), first.public);
        assert!(d.ring.rotate_if_due(&d.identity, &device_id, T0, &mut rng), "makes the last-resort prekey");

        assert!(!d.ring.rotate_if_due(&d.identity, &device_id, T0.plus(PREKEY_ROTATION - 1), &mut rng));
        assert!(!d.ring.rotate_if_due(&d.identity, &device_id, Timestamp(0), &mut rng), "clock went back");
        let t1 = T0.plus(PREKEY_ROTATION);
        assert!(d.ring.rotate_if_due(&d.identity, &device_id, t1, &mut rng));
        assert!(!d.ring.rotate_if_due(&d.identity, &device_id, t1, &mut rng));
        let second = d.ring.current().clone();
        assert_eq!(second.id, 2);
        assert_ne!(second.public, first.public);
        assert_eq!(second.verify(&d.identity.public(), &device_id, t1), Ok(()));
        assert_eq!(d.ring.prekeys().count(), 3, "two rotating prekeys and a last-resort one");

        // The replaced prekey still opens first contacts until the relay grace period after its
        // expiry (a first contact written just before expiry may wait on a relay), then is deleted.
        let gone = first.expires_at.plus(PREKEY_GRACE);
        assert!(d.ring.secret_for(1, gone).is_some());
        assert_eq!(d.ring.purge(gone), 0);
        assert!(d.ring.secret_for(1, gone.plus(1)).is_none());
        assert!(d.ring.secret_for(3, t1).is_none());
        assert_eq!(d.ring.purge(gone.plus(1)), 1);
        assert!(d.ring.secret_for(1, T0).is_none(), "deleted, whatever the time");
        assert!(d.ring.secret_for(2, gone.plus(1)).is_some());
        assert_eq!(d.ring.prekeys().count(), 2);
    }

    #[test]
    fn last_resort_prekeys_rotate_monthly_and_keep_invites_alive_for_a_year() {
        let mut d = device(11);
        let mut rng = ChaCha20Rng::seed_from_u64(101);
        let device_id = d.cert.device_id();
        assert_eq!(d.ring.last_resort(), None, "a new ring has none yet");
        assert!(d.ring.rotate_if_due(&d.identity, &device_id, T0, &mut rng), "the first check makes one");
        let first = d.ring.last_resort().expect("last-resort prekey").clone();
        assert!(is_last_resort(first.id));
        assert_eq!(first.expires_at, T0.plus(LAST_RESORT_LIFETIME));
        assert_eq!(first.verify(&d.identity.public(), &device_id, T0.plus(LAST_RESORT_LIFETIME)), Ok(()));
        // Two years of hourly checks: whatever the day, the invite made then lasts a year, and the
        // secret of every last-resort prekey an invite of the last 400 days carried is at hand.
        let mut now = T0;
        let mut handed_out = vec![first];
        for _ in 0..(2 * 365 * 24) {
            now = now.plus(Timestamp::HOUR);
            d.ring.rotate_if_due(&d.identity, &device_id, now, &mut rng);
            d.ring.purge(now);
            let current = d.ring.last_resort().expect("last-resort prekey").clone();
            assert!(current.expires_at >= now.plus(INVITE_LIFETIME), "an invite made now lasts a year");
            if handed_out.last() != Some(&current) {
                handed_out.push(current);
            }
            assert!(d.ring.prekeys().filter(|p| is_last_resort(p.id)).count() <= MAX_LAST_RESORT_PREKEYS);
        }
        assert_eq!(handed_out.len(), 1 + (2 * 365) / 30, "one a month");
        for prekey in &handed_out {
            let usable = now <= prekey.expires_at.plus(PREKEY_GRACE);
            assert_eq!(
                d.ring.secret_for(prekey.id, now).is_some(),
                usable,
                "last-resort prekey {:x}",
                prekey.id
            );
        }
        // Rotating and last-resort ids never meet.
        assert!(d.ring.prekeys().filter(|p| !is_last_resort(p.id)).all(|p| p.id < LAST_RESORT_ID_BIT));
    }

    #[test]
    fn prekey_ring_stays_bounded_over_years() {
        let mut d = device(10);
        let mut rng = ChaCha20Rng::seed_from_u64(100);
        let device_id = d.cert.device_id();
        let mut now = T0;
        for _ in 0..120 {
            now = now.plus(PREKEY_ROTATION);
            assert!(d.ring.rotate_if_due(&d.identity, &device_id, now, &mut rng));
            // Without purging, the caps apply; with it, only unexpired keys remain.
            let rotating = d.ring.prekeys().filter(|p| !is_last_resort(p.id)).count();
            assert!(rotating <= MAX_PREVIOUS_PREKEYS + 1);
            assert!(d.ring.prekeys().count() - rotating <= MAX_LAST_RESORT_PREKEYS);
        }
        d.ring.purge(now);
        // A prekey is usable for 37 days plus the 30-day grace: the current one and nine weeks back.
        let rotating = d.ring.prekeys().filter(|p| !is_last_resort(p.id)).count();
        assert_eq!(rotating, 10, "current plus nine weeks of still-usable prekeys");
        assert_eq!(d.ring.current().id, 121);
        for id in 112..=121 {
            assert!(d.ring.secret_for(id, now).is_some(), "prekey {id}");
        }
    }

    #[test]
    fn prekey_ring_persists_and_checks_what_it_loads() {
        let mut d = device(11);
        let mut rng = ChaCha20Rng::seed_from_u64(101);
        let device_id = d.cert.device_id();
        d.ring.rotate_if_due(&d.identity, &device_id, T0.plus(PREKEY_ROTATION), &mut rng);
        let json = serde_json::to_string(&d.ring).expect("ser");
        let back: PrekeyRing = serde_json::from_str(&json).expect("de");
        assert_eq!(back.current(), d.ring.current());
        for id in [1, 2] {
            assert_eq!(
                back.secret_for(id, T0.plus(PREKEY_ROTATION)).map(X25519Secret::as_bytes),
                d.ring.secret_for(id, T0.plus(PREKEY_ROTATION)).map(X25519Secret::as_bytes)
            );
        }
        let last_resort = d.ring.last_resort().expect("last-resort prekey");
        assert_eq!(back.last_resort(), Some(last_resort));
        assert!(back.secret_for(last_resort.id, T0).is_some());

        // A ring stored before last-resort prekeys existed loads without one; the next rotation
        // check makes one.
        let mut value: serde_json::Value = serde_json::from_str(&json).expect("value");
        let previous = value["previous"].as_array().expect("list").clone();
        // A prekey is persisted as its bytes, the id (u32 BE) first.
        let rotating: Vec<_> =
            previous.into_iter().filter(|e| e["prekey"][0].as_u64() < Some(0x80)).collect();
        value["previous"] = serde_json::Value::Array(rotating);
        let mut old: PrekeyRing = serde_json::from_value(value).expect("an old ring");
        assert_eq!(old.last_resort(), None);
        assert!(old.rotate_if_due(&d.identity, &device_id, T0.plus(PREKEY_ROTATION), &mut rng));
        assert!(old.last_resort().is_some());

        let mut value: serde_json::Value = serde_json::from_str(&json).expect("value");
        value["current"]["secret"] = serde_json::json!(vec![7u8; 32]);
        let err = serde_json::from_value::<PrekeyRing>(value).expect_err("mismatched secret");
        assert!(err.to_string().contains("does not match"), "{err}");

        let mut value: serde_json::Value = serde_json::from_str(&json).expect("value");
        value["previous"][0]["prekey"] = value["current"]["prekey"].clone();
        value["previous"][0]["secret"] = value["current"]["secret"].clone();
        let err = serde_json::from_value::<PrekeyRing>(value).expect_err("duplicate id");
        assert!(err.to_string().contains("share an id"), "{err}");
    }

    #[test]
    fn bundle_verifies_and_round_trips() {
        let d = device(12);
        let bundle = bundle_of(&d, vec![1, 2, 3]);
        assert_eq!(bundle.verify(T0), Ok(()));
        assert_eq!(bundle.identity(), &d.identity.public());
        assert_eq!(bundle.device_id(), d.cert.device_id());
        let bytes = bundle.to_bytes();
        assert_eq!(bytes.len(), bundle.encoded_len());
        assert_eq!(bundle_of(&d, SUPPORTED_VERSIONS.to_vec()).encoded_len(), 319);
        assert_eq!(Bundle::from_bytes(&bytes), Ok(bundle.clone()));
        let json = serde_json::to_string(&bundle).expect("ser");
        assert_eq!(serde_json::from_str::<Bundle>(&json).expect("de"), bundle);
    }

    #[test]
    fn bundle_refuses_a_prekey_resigned_by_another_identity() {
        let alice = device(13);
        let mallory = device(14);
        let mut bundle = bundle_of(&alice, vec![1]);
        // Mallory signs her own prekey for Alice's device id, as if Alice had.
        let (mallory_prekey_public, alice_device) = (mallory.ring.current().public, alice.cert.device_id());
        bundle.prekey = SignedPrekey::issue(
            &mallory.identity,
            &alice_device,
            1,
            &mallory_prekey_public,
            T0,
            T0.plus(PREKEY_LIFETIME),
        );
        assert_eq!(bundle.verify(T0), Err(IdentityError::BadSignature { what: "signed prekey" }));

        // Re-signing the whole bundle with Mallory's key does not help either.
        let forged = forge_bundle(&mallory.identity, alice.cert.clone(), bundle.prekey.clone(), vec![1]);
        assert_eq!(forged.verify(T0), Err(IdentityError::BadSignature { what: "signed prekey" }));
        // And a prekey Alice signed for another device does not fit this one.
        let other_device = DeviceId::of(&mallory.static_secret.public());
        let misplaced = SignedPrekey::issue(
            &alice.identity,
            &other_device,
            1,
            &mallory_prekey_public,
            T0,
            T0.plus(PREKEY_LIFETIME),
        );
        let forged = forge_bundle(&alice.identity, alice.cert.clone(), misplaced, vec![1]);
        assert_eq!(forged.verify(T0), Err(IdentityError::BadSignature { what: "signed prekey" }));
        // A certificate from Mallory cannot go into Alice's bundle.
        assert_eq!(
            Bundle::new(&alice.identity, mallory.cert.clone(), alice.ring.current().clone(), vec![1]),
            Err(IdentityError::WrongIdentity)
        );
    }

    #[test]
    fn bundle_version_downgrade_breaks_the_signature() {
        let d = device(15);
        let bundle = bundle_of(&d, vec![1, 2, 3]);
        for remove in [1, 2] {
            let mut downgraded = bundle.clone();
            downgraded.versions.remove(remove);
            assert_eq!(downgraded.verify(T0), Err(IdentityError::BadSignature { what: "bundle" }));
            assert_ne!(downgraded.versions_hash(), bundle.versions_hash());
        }
        let mut without_ours = bundle.clone();
        without_ours.versions.remove(0);
        assert_eq!(without_ours.verify(T0), Err(IdentityError::UnsupportedVersions));
    }

    #[test]
    fn bundle_refuses_bad_version_lists_and_expiry() {
        let d = device(16);
        let make =
            |versions: Vec<u16>| Bundle::new(&d.identity, d.cert.clone(), d.ring.current().clone(), versions);
        assert!(matches!(make(vec![]), Err(IdentityError::InvalidVersions { .. })));
        assert!(matches!(make(vec![1, 1]), Err(IdentityError::InvalidVersions { .. })));
        assert!(matches!(make(vec![2, 1]), Err(IdentityError::InvalidVersions { .. })));
        assert!(matches!(make((1..=9).collect()), Err(IdentityError::InvalidVersions { .. })));
        assert_eq!(make(vec![2, 3]), Err(IdentityError::UnsupportedVersions));
        assert!(make((1..=8).collect()).is_ok());

        // A signed but unsorted list is still refused by the verifier.
        let forged = forge_bundle(&d.identity, d.cert.clone(), d.ring.current().clone(), vec![2, 1]);
        assert!(matches!(forged.verify(T0), Err(IdentityError::InvalidVersions { .. })));

        let bundle = bundle_of(&d, vec![1]);
        let late = bundle.prekey.expires_at.plus(1);
        assert!(matches!(bundle.verify(late), Err(IdentityError::Expired { what: "signed prekey", .. })));
    }

    #[test]
    fn safety_numbers_are_symmetric_and_distinct() {
        let (a, b, c) =
            (device(17).identity.public(), device(18).identity.public(), device(19).identity.public());
        let ab = SafetyNumber::new(&a, &b);
        assert_eq!(ab, SafetyNumber::new(&b, &a));
        assert_ne!(ab, SafetyNumber::new(&a, &c));
        assert_ne!(ab, SafetyNumber::new(&c, &b));
        let text = ab.to_string();
        assert_eq!(text.len(), SAFETY_NUMBER_DIGITS + 11);
        let groups: Vec<&str> = text.split(' ').collect();
        assert_eq!(groups.len(), 12);
        assert!(groups.iter().all(|g| g.len() == 5 && g.bytes().all(|b| b.is_ascii_digit())));
        assert_eq!(ab.to_string(), SafetyNumber::new(&b, &a).to_string());

        let fp = fingerprint(&a);
        assert_eq!(fp.len(), 8 * 4 + 7);
        assert!(fp.split(' ').all(|g| g.len() == 4 && g.bytes().all(|b| b.is_ascii_hexdigit())));
        assert_ne!(fp, fingerprint(&b));
    }

    #[test]
    fn safety_number_golden() {
        // Fixed keys: a change here changes what users compare, so it must be deliberate.
        let a = IdentityKey::from_bytes(&[1; 32]).public();
        let b = IdentityKey::from_bytes(&[2; 32]).public();
        let n = SafetyNumber::new(&a, &b).to_string();
        assert_eq!(n, SafetyNumber::new(&b, &a).to_string());
        assert_eq!(n, GOLDEN_SAFETY_NUMBER, "safety number derivation changed");
        assert_eq!(fingerprint(&a), GOLDEN_FINGERPRINT, "fingerprint derivation changed");
    }

    // Cross-checked against an independent implementation (Python hashlib.blake2s and the
    // `cryptography` package's ed25519), not just copied from this code's output.
    const GOLDEN_SAFETY_NUMBER: &str =
        "04155 68348 66696 08146 15372 56446 01319 20737 02723 33263 95798 93474";
    const GOLDEN_FINGERPRINT: &str = "db9a 0188 f2a9 58e3 986a 88ba 1eb2 abb1";

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn cert_and_prekey_round_trip(seed: u64, created: u64, id: u32, life: u64) {
            let mut rng = ChaCha20Rng::seed_from_u64(seed);
            let identity = IdentityKey::generate(&mut rng);
            let device_static = X25519Secret::generate(&mut rng).public();
            let cert = DeviceCert::issue(&identity, &device_static, Timestamp(created));
            let bytes = cert.to_bytes();
            prop_assert_eq!(bytes.len(), DeviceCert::ENCODED_LEN);
            prop_assert_eq!(DeviceCert::from_bytes(&bytes), Ok(cert.clone()));
            prop_assert_eq!(cert.verify(), Ok(()));

            let expires = Timestamp(created.saturating_add(life));
            let prekey_public = X25519Secret::generate(&mut rng).public();
            let prekey = SignedPrekey::issue(&identity, &cert.device_id(), id, &prekey_public, Timestamp(created), expires);
            let bytes = prekey.to_bytes();
            prop_assert_eq!(bytes.len(), SignedPrekey::ENCODED_LEN);
            prop_assert_eq!(SignedPrekey::from_bytes(&bytes), Ok(prekey.clone()));
            prop_assert_eq!(prekey.verify(&identity.public(), &cert.device_id(), expires), Ok(()));
        }

        #[test]
        fn bundle_round_trips(
            seed: u64,
            extra in proptest::collection::btree_set(2u16.., 0..MAX_VERSIONS),
        ) {
            let d = device(seed);
            let versions: Vec<u16> = std::iter::once(1).chain(extra).collect();
            let bundle = bundle_of(&d, versions);
            let bytes = bundle.to_bytes();
            prop_assert_eq!(bytes.len(), bundle.encoded_len());
            prop_assert!(bytes.len() <= Bundle::MAX_ENCODED_LEN);
            prop_assert_eq!(Bundle::from_bytes(&bytes), Ok(bundle.clone()));
            prop_assert_eq!(bundle.verify(T0), Ok(()));
        }

        #[test]
        fn mutated_bundles_never_panic_and_never_verify(
            seed in 0u64..4,
            edits in proptest::collection::vec((any::<proptest::sample::Index>(), any::<u8>()), 1..4),
            cut in any::<proptest::sample::Index>(),
            truncate: bool,
        ) {
            let d = device(seed);
            let bundle = bundle_of(&d, vec![1, 7]);
            let original = bundle.to_bytes();
            let mut bytes = original.clone();
            for (at, value) in &edits {
                let i = at.index(bytes.len());
                bytes[i] ^= value | 1;
            }
            if truncate {
                bytes.truncate(cut.index(bytes.len()));
            }
            let _ = DeviceCert::from_bytes(&bytes);
            let _ = SignedPrekey::from_bytes(&bytes);
            if let Ok(decoded) = Bundle::from_bytes(&bytes) {
                prop_assert!(decoded.verify(T0).is_err(), "a changed bundle verified");
            }
        }
    }
}
