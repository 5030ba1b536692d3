//! Message texts at rest: each sealed under its conversation's *content key*, kept apart from the
//! message records so a deleted message can be made unreadable in sled's files.
//!
//! Why two levels. sled never erases the bytes of a deleted value, so deleting a message's record
//! leaves its text in the database files. A text sealed under a key that is later destroyed is
//! gone for good (crypto-shredding, see [`super::keyring`]). Sealing texts directly under the
//! storage key would make each daily rotation rewrite the whole history; instead every
//! conversation has a random content key, and only the content keys (one per contact, in the
//! sealed tree `content-keys`) are re-sealed when the storage key rotates. Deleting a message
//! removes its text and re-keys its conversation: a new content key, every remaining text of
//! the conversation re-sealed under it, the old key removed; the daemon then rotates the storage
//! key, which destroys the only key that opened the old content key's stored copies. Clearing a
//! conversation removes its texts and its content key the same way.
//!
//! A sealed text, in the tree `texts` under the message id: `FORMAT_VERSION ‖ nonce (24) ‖
//! XChaCha20-Poly1305(content key, text)`, binding [`TEXT_AAD_LABEL`] and the message id as
//! associated data, so a text moved to another message does not open.

use chacha20poly1305::aead::Aead;
use chacha20poly1305::aead::Payload;
use chacha20poly1305::{KeyInit, XChaCha20Poly1305, XNonce};
use merpati_proto::frame::MessageId;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::keyring::KeyringError;
use super::{FORMAT_VERSION, MAX_VALUE_LEN, StoreError};

/// Domain separation for a sealed text's associated data.
const TEXT_AAD_LABEL: &[u8] = b"merpati/store/text/v1";
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;

/// A conversation's content key. Zeroized on drop; stored only sealed under the storage key.
#[derive(Clone)]
pub(crate) struct ContentKey(Zeroizing<[u8; 32]>);

impl Serialize for ContentKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        serde_bytes::Bytes::new(&self.0[..]).serialize(s)
    }
}

impl<'de> Deserialize<'de> for ContentKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let bytes = Zeroizing::new(serde_bytes::ByteBuf::deserialize(d)?.into_vec());
        let mut key = Zeroizing::new([0u8; 32]);
        if bytes.len() != key.len() {
            return Err(serde::de::Error::custom("a content key is 32 bytes"));
        }
        key.copy_from_slice(&bytes);
        Ok(Self(key))
    }
}

impl ContentKey {
    /// A fresh random key.
    pub(crate) fn generate() -> Result<Self, StoreError> {
        let mut key = Zeroizing::new([0u8; 32]);
        random(&mut key[..])?;
        Ok(Self(key))
    }

    /// Seals the text of message `id`; a text whose sealed form would pass [`MAX_VALUE_LEN`] is
    /// refused, as any value that large is.
    pub(crate) fn seal(&self, id: &MessageId, text: &str) -> Result<Vec<u8>, StoreError> {
        let len = 1 + NONCE_LEN + text.len() + TAG_LEN;
        if len > MAX_VALUE_LEN {
            return Err(StoreError::TooLarge { what: "message text", len, max: MAX_VALUE_LEN });
        }
        let mut nonce = [0u8; NONCE_LEN];
        random(&mut nonce)?;
        let cipher = XChaCha20Poly1305::new((&*self.0).into());
        let sealed = cipher
            .encrypt(XNonce::from_slice(&nonce), Payload { msg: text.as_bytes(), aad: &aad(id) })
            .map_err(|_| StoreError::Corrupt { what: "message text" })?;
        let mut out = Vec::with_capacity(1 + NONCE_LEN + sealed.len());
        out.push(FORMAT_VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// Opens the sealed text of message `id`.
    pub(crate) fn open(&self, id: &MessageId, bytes: &[u8]) -> Result<String, StoreError> {
        let corrupt = StoreError::Corrupt { what: "message text" };
        let Some((&FORMAT_VERSION, rest)) = bytes.split_first() else { return Err(corrupt) };
        if rest.len() < NONCE_LEN {
            return Err(corrupt);
        }
        let (nonce, sealed) = rest.split_at(NONCE_LEN);
        let cipher = XChaCha20Poly1305::new((&*self.0).into());
        let plain = cipher
            .decrypt(XNonce::from_slice(nonce), Payload { msg: sealed, aad: &aad(id) })
            .map_err(|_| StoreError::Corrupt { what: "message text" })?;
        String::from_utf8(plain).map_err(|_| corrupt)
    }
}

impl std::fmt::Debug for ContentKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ContentKey(..)")
    }
}

fn aad(id: &MessageId) -> Vec<u8> {
    let mut aad = Vec::with_capacity(TEXT_AAD_LABEL.len() + id.0.len());
    aad.extend_from_slice(TEXT_AAD_LABEL);
    aad.extend_from_slice(&id.0);
    aad
}

fn random(out: &mut [u8]) -> Result<(), StoreError> {
    getrandom::fill(out).map_err(|e| StoreError::Keyring(KeyringError::Random(e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_text_opens_only_with_its_key_and_for_its_message() {
        let key = ContentKey::generate().unwrap();
        let (id, other) = (MessageId([1; 16]), MessageId([2; 16]));
        let sealed = key.seal(&id, "bertemu jam tujuh").unwrap();
        assert_eq!(key.open(&id, &sealed).unwrap(), "bertemu jam tujuh");
        assert!(!sealed.windows(7).any(|w| w == b"bertemu"), "sealed, not in the clear");
        assert!(key.open(&other, &sealed).is_err(), "moved to another message");
        assert!(ContentKey::generate().unwrap().open(&id, &sealed).is_err(), "another key");
        for bad in [&sealed[..1], &sealed[..20], &[]] {
            assert!(key.open(&id, bad).is_err());
        }
    }
}
