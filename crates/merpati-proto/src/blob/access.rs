//! Who may read or write a blob at a relay (protocol §14): a secret per role, shown to each relay
//! only as a token derived for that relay.
//!
//! ```text
//! read token   PRF(read_secret,  "NDR1/blob-read",  relay peer id)
//! write token  PRF(write_secret, "NDR1/blob-write", relay peer id)
//! token hash   H("NDR1/blob-token", token)
//! ```
//!
//! The uploader keeps the write secret; each recipient gets a read secret in its file's
//! description. A relay is told only the hashes of the tokens meant for it when the blob is
//! created, and checks a token against them: it can neither make tokens nor replay one at the
//! blob's other relay, since tokens differ per relay.

use std::fmt;

use rand_core::CryptoRng;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::kdf::{self, label};

/// A read or write secret of one blob: 32 random bytes.
#[derive(Clone)]
pub struct BlobSecret(Zeroizing<[u8; 32]>);

impl BlobSecret {
    /// A fresh random secret.
    pub fn generate(rng: &mut (impl CryptoRng + ?Sized)) -> Self {
        let mut secret = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(&mut secret[..]);
        Self(secret)
    }

    /// The secret with these bytes (from a description or the sender's spool).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// The secret's bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The read token of this (read) secret at the relay whose peer id (binary) is `relay`.
    pub fn read_token(&self, relay: &[u8]) -> BlobToken {
        BlobToken(*kdf::prf(&self.0, label::BLOB_READ, &[relay]))
    }

    /// The write token of this (write) secret at the relay whose peer id (binary) is `relay`.
    pub fn write_token(&self, relay: &[u8]) -> BlobToken {
        BlobToken(*kdf::prf(&self.0, label::BLOB_WRITE, &[relay]))
    }
}

impl fmt::Debug for BlobSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BlobSecret(..)")
    }
}

/// What a relay is shown to read or write a blob: good at that relay only.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobToken(#[serde(with = "serde_bytes")] pub [u8; 32]);

impl BlobToken {
    /// The hash a relay keeps for this token.
    pub fn hash(&self) -> TokenHash {
        TokenHash(kdf::hash(label::BLOB_TOKEN, &[&self.0]))
    }
}

impl fmt::Debug for BlobToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BlobToken(..)")
    }
}

/// The hash of a [`BlobToken`], as a relay stores it.
#[derive(Clone, Copy, Debug, Eq, Serialize, Deserialize)]
pub struct TokenHash(#[serde(with = "serde_bytes")] pub [u8; 32]);

impl PartialEq for TokenHash {
    // The hashes stand for capabilities: compared in constant time all the same.
    fn eq(&self, other: &Self) -> bool {
        bool::from(self.0.ct_eq(&other.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_differ_by_role_relay_and_secret() {
        let secret = BlobSecret::from_bytes([7; 32]);
        let other = BlobSecret::from_bytes([8; 32]);
        let read = secret.read_token(b"relay-a");
        assert_eq!(read, secret.read_token(b"relay-a"), "deterministic");
        assert_ne!(read, secret.write_token(b"relay-a"));
        assert_ne!(read, secret.read_token(b"relay-b"));
        assert_ne!(read, other.read_token(b"relay-a"));
        assert_eq!(read.hash(), secret.read_token(b"relay-a").hash());
        assert_ne!(read.hash(), secret.read_token(b"relay-b").hash());
        assert_ne!(read.hash().0, read.0, "a relay keeps the hash, not the token");
    }

    #[test]
    fn debug_shows_no_secret() {
        let secret = BlobSecret::from_bytes([0xab; 32]);
        assert_eq!(format!("{secret:?}"), "BlobSecret(..)");
        assert_eq!(format!("{:?}", secret.read_token(b"r")), "BlobToken(..)");
    }
}
