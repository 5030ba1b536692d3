//! Typed key material: X25519 key pairs with weak-key checks, and 32-byte symmetric keys.
//!
//! Every key is a `[u8; 32]` behind a type; slices are converted at the edge with a length check.
//! Secret types zeroize on drop and print `Debug` as `Name(..)`. An X25519 public key is refused
//! when it is all zeros or of small order, and a Diffie-Hellman result of all zeros is refused
//! (which also catches small-order points on the twist), so a peer can never force a known shared
//! secret.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

use curve25519_dalek::montgomery::MontgomeryPoint;
use rand_core::CryptoRng;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use subtle::ConstantTimeEq;
use thiserror::Error;
use zeroize::Zeroizing;

/// Why a key was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum KeyError {
    /// A key had the wrong number of bytes.
    #[error("key is {got} bytes, expected {expected}")]
    WrongLength {
        /// Bytes expected.
        expected: usize,
        /// Bytes given.
        got: usize,
    },
    /// An X25519 public key of all zeros.
    #[error("public key is all zeros")]
    AllZero,
    /// An X25519 public key of small order (its DH output would be predictable).
    #[error("public key has small order")]
    SmallOrder,
    /// A Diffie-Hellman computation produced all zeros.
    #[error("key agreement produced an all-zero secret")]
    ZeroSharedSecret,
}

/// X25519 operations (key agreements and public-key derivations) this process performed so far.
static X25519_OPERATIONS: AtomicU64 = AtomicU64::new(0);

/// How many X25519 scalar multiplications this process has done: a cheap, always-on counter that
/// lets tests and benchmarks check the work an input costs (junk must cost at most a couple).
pub fn x25519_operations() -> u64 {
    X25519_OPERATIONS.load(Ordering::Relaxed)
}

/// Converts a slice to a 32-byte array, or says how long it was.
pub fn array32(bytes: &[u8]) -> Result<[u8; 32], KeyError> {
    bytes.try_into().map_err(|_| KeyError::WrongLength { expected: 32, got: bytes.len() })
}

/// A 32-byte symmetric secret: a root, epoch, sub-epoch or storage key.
#[derive(Clone, PartialEq, Eq)]
pub struct SymmetricKey(Zeroizing<[u8; 32]>);

impl SymmetricKey {
    /// Wraps raw key bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// The raw key bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// A fresh random key.
    pub fn generate(rng: &mut (impl CryptoRng + ?Sized)) -> Self {
        let mut key = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(&mut *key);
        Self(key)
    }
}

impl From<Zeroizing<[u8; 32]>> for SymmetricKey {
    fn from(key: Zeroizing<[u8; 32]>) -> Self {
        Self(key)
    }
}

impl fmt::Debug for SymmetricKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SymmetricKey(..)")
    }
}

/// Whether `u` (as X25519 reads it: bit 255 ignored, reduced mod p) is the u-coordinate of a
/// point of small order: the eight-torsion points of the curve (u = 0, 1 and the two of order 8)
/// and u = p − 1 on the twist. Any of them makes the DH result predictable. Comparing against this
/// short list costs nothing next to decompressing the point, which is what a per-epoch check
/// must not do.
fn is_small_order(u: &[u8; 32]) -> bool {
    static SMALL: std::sync::OnceLock<Vec<[u8; 32]>> = std::sync::OnceLock::new();
    let small = SMALL.get_or_init(|| {
        let mut list: Vec<[u8; 32]> = curve25519_dalek::constants::EIGHT_TORSION
            .iter()
            .map(|point| point.to_montgomery().to_bytes())
            .collect();
        let mut p_minus_one = [0xff; 32];
        p_minus_one[0] = 0xec;
        p_minus_one[31] = 0x7f;
        list.push(p_minus_one);
        list.sort_unstable();
        list.dedup();
        list
    });
    let canonical = canonical_u(u);
    small.iter().any(|s| bool::from(s.ct_eq(&canonical)))
}

/// `u` with bit 255 cleared and reduced below p = 2²⁵⁵ − 19 (X25519 accepts both forms).
fn canonical_u(u: &[u8; 32]) -> [u8; 32] {
    let mut out = *u;
    out[31] &= 0x7f;
    // Values from p to 2²⁵⁵ − 1 are p + k for k < 19: all bytes but the lowest at their maximum.
    if out[1..31].iter().all(|&b| b == 0xff) && out[31] == 0x7f && out[0] >= 0xed {
        let k = out[0] - 0xed;
        out = [0; 32];
        out[0] = k;
    }
    out
}

/// An X25519 public key that passed the weak-key checks.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct X25519Public([u8; 32]);

impl X25519Public {
    /// Checks and wraps a public key: refuses all zeros and points of small order.
    pub fn from_bytes(bytes: [u8; 32]) -> Result<Self, KeyError> {
        if bool::from(bytes.ct_eq(&[0u8; 32])) {
            return Err(KeyError::AllZero);
        }
        if is_small_order(&bytes) {
            return Err(KeyError::SmallOrder);
        }
        Ok(Self(bytes))
    }

    /// Checks and wraps a public key given as a slice.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, KeyError> {
        Self::from_bytes(array32(bytes)?)
    }

    /// The key bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for X25519Public {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "X25519Public({:02x}{:02x}{:02x}{:02x}..)", self.0[0], self.0[1], self.0[2], self.0[3])
    }
}

impl Serialize for X25519Public {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        serde_bytes::Bytes::new(&self.0).serialize(s)
    }
}

impl<'de> Deserialize<'de> for X25519Public {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let bytes = serde_bytes::ByteBuf::deserialize(d)?;
        Self::from_slice(&bytes).map_err(serde::de::Error::custom)
    }
}

/// An X25519 private key with its public key. The private half is zeroized on drop and never
/// printed; the public half is computed once, when the key is made or loaded.
#[derive(Clone)]
pub struct X25519Secret {
    secret: Zeroizing<[u8; 32]>,
    public: X25519Public,
}

impl X25519Secret {
    /// A fresh random private key.
    pub fn generate(rng: &mut (impl CryptoRng + ?Sized)) -> Self {
        let mut key = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(&mut *key);
        Self::from_bytes(*key)
    }

    /// Wraps raw private key bytes (clamping happens at use, as X25519 specifies) and derives the
    /// public key.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        X25519_OPERATIONS.fetch_add(1, Ordering::Relaxed);
        // A clamped scalar times the base point is never of small order, so no check is needed.
        let public = X25519Public(MontgomeryPoint::mul_base_clamped(bytes).to_bytes());
        Self { secret: Zeroizing::new(bytes), public }
    }

    /// The raw private key bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.secret
    }

    /// The matching public key.
    pub fn public(&self) -> X25519Public {
        self.public
    }

    /// X25519 with `peer`; refuses an all-zero result.
    pub fn diffie_hellman(&self, peer: &[u8; 32]) -> Result<Zeroizing<[u8; 32]>, KeyError> {
        X25519_OPERATIONS.fetch_add(1, Ordering::Relaxed);
        let shared = Zeroizing::new(MontgomeryPoint(*peer).mul_clamped(*self.secret).to_bytes());
        if bool::from(shared.ct_eq(&[0u8; 32])) {
            return Err(KeyError::ZeroSharedSecret);
        }
        Ok(shared)
    }
}

impl fmt::Debug for X25519Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("X25519Secret(..)")
    }
}

/// Serde for secret 32-byte values inside persisted state (`#[serde(with = "keys::secret32")]`).
macro_rules! secret_serde {
    ($ty:ident) => {
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                serde_bytes::Bytes::new(&self.0[..]).serialize(s)
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let bytes = Zeroizing::new(serde_bytes::ByteBuf::deserialize(d)?.into_vec());
                Ok(Self::from_bytes(array32(&bytes).map_err(serde::de::Error::custom)?))
            }
        }
    };
}
secret_serde!(SymmetricKey);

impl Serialize for X25519Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        serde_bytes::Bytes::new(&self.secret[..]).serialize(s)
    }
}

impl<'de> Deserialize<'de> for X25519Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let bytes = Zeroizing::new(serde_bytes::ByteBuf::deserialize(d)?.into_vec());
        Ok(Self::from_bytes(array32(&bytes).map_err(serde::de::Error::custom)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    #[test]
    fn dh_agrees() {
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let a = X25519Secret::generate(&mut rng);
        let b = X25519Secret::generate(&mut rng);
        let ab = a.diffie_hellman(b.public().as_bytes()).expect("dh");
        let ba = b.diffie_hellman(a.public().as_bytes()).expect("dh");
        assert_eq!(*ab, *ba);
    }

    #[test]
    fn weak_public_keys_are_refused() {
        assert_eq!(X25519Public::from_bytes([0; 32]), Err(KeyError::AllZero));
        let mut one = [0u8; 32];
        one[0] = 1; // u = 1: the point of order 4
        assert_eq!(X25519Public::from_bytes(one), Err(KeyError::SmallOrder));
        assert_eq!(X25519Public::from_slice(&[9; 64]), Err(KeyError::WrongLength { expected: 32, got: 64 }));
        // Every small-order point, in canonical and non-canonical encodings, is refused, and
        // each of them really does give an all-zero DH result.
        let secret = X25519Secret::from_bytes([7; 32]);
        for point in curve25519_dalek::constants::EIGHT_TORSION {
            let u = point.to_montgomery().to_bytes();
            let mut high = u;
            high[31] |= 0x80;
            for bytes in [u, high] {
                assert!(X25519Public::from_bytes(bytes).is_err(), "{bytes:02x?}");
                assert_eq!(secret.diffie_hellman(&bytes), Err(KeyError::ZeroSharedSecret));
            }
        }
        let mut p_plus_one = [0xff; 32];
        p_plus_one[0] = 0xee;
        p_plus_one[31] = 0x7f;
        assert_eq!(X25519Public::from_bytes(p_plus_one), Err(KeyError::SmallOrder), "p + 1 is u = 1");
        let mut p_minus_one = [0xff; 32];
        p_minus_one[0] = 0xec;
        p_minus_one[31] = 0x7f;
        assert_eq!(X25519Public::from_bytes(p_minus_one), Err(KeyError::SmallOrder));
        assert_eq!(secret.diffie_hellman(&p_minus_one), Err(KeyError::ZeroSharedSecret));
        // An ordinary key passes.
        assert!(X25519Public::from_bytes(*secret.public().as_bytes()).is_ok());
        let secret = X25519Secret::from_bytes([7; 32]);
        assert_eq!(secret.diffie_hellman(&[0; 32]), Err(KeyError::ZeroSharedSecret));
        assert_eq!(secret.diffie_hellman(&one), Err(KeyError::ZeroSharedSecret));
    }

    #[test]
    fn secrets_do_not_print() {
        let s = X25519Secret::from_bytes([0xAB; 32]);
        assert_eq!(format!("{s:?}"), "X25519Secret(..)");
        assert_eq!(format!("{:?}", SymmetricKey::from_bytes([0xAB; 32])), "SymmetricKey(..)");
    }
}
