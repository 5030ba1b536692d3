//! How stored values and keys are laid out: a format byte and postcard for values, big-endian
//! integers in keys so that byte order is numeric order, and bounded, panic-free decoding.
//!
//! Plain value: `FORMAT_VERSION ‖ postcard(value)`.
//! Sealed value: `FORMAT_VERSION ‖ seal(aad, postcard(value))`, where the associated data names
//! the format, the tree and the key the value is stored under, so sealed bytes moved to another
//! record do not open.

use serde::Serialize;
use serde::de::DeserializeOwned;
use zeroize::Zeroizing;

use super::{FORMAT_VERSION, MAX_NAME_LEN, MAX_VALUE_LEN, StoreError};

/// Domain separation for the associated data of sealed records.
const AAD_LABEL: &[u8] = b"merpati/store/sealed-record/v1";

/// Encodes a plain value.
pub(crate) fn encode<T: Serialize + ?Sized>(what: &'static str, value: &T) -> Result<Vec<u8>, StoreError> {
    let len = encoded_len(what, value)?;
    let mut out = vec![0u8; 1 + len];
    out[0] = FORMAT_VERSION;
    write_exact(what, value, &mut out[1..])?;
    Ok(out)
}

/// Encodes a value that holds secrets into a buffer that is zeroized when dropped. It is sized
/// exactly up front: a growing vector would leave copies of the secrets in freed memory.
pub(crate) fn encode_secret<T: Serialize + ?Sized>(
    what: &'static str,
    value: &T,
) -> Result<Zeroizing<Vec<u8>>, StoreError> {
    let len = encoded_len(what, value)?;
    let mut out = Zeroizing::new(vec![0u8; len]);
    write_exact(what, value, &mut out)?;
    Ok(out)
}

fn encoded_len<T: Serialize + ?Sized>(what: &'static str, value: &T) -> Result<usize, StoreError> {
    let len = postcard::serialize_with_flavor::<T, _, usize>(value, postcard::ser_flavors::Size::default())
        .map_err(|_| StoreError::Encode { what })?;
    // Leave room for the format byte and a sealing header, so nothing is written that a reader
    // would refuse as too large.
    let max = MAX_VALUE_LEN - 64;
    if len > max {
        return Err(StoreError::TooLarge { what, len, max });
    }
    Ok(len)
}

fn write_exact<T: Serialize + ?Sized>(
    what: &'static str,
    value: &T,
    buf: &mut [u8],
) -> Result<(), StoreError> {
    let len = buf.len();
    let written = postcard::to_slice(value, buf).map_err(|_| StoreError::Encode { what })?;
    if written.len() != len {
        return Err(StoreError::Encode { what });
    }
    Ok(())
}

/// Checks the length and format byte of a stored value and returns what follows the format byte.
pub(crate) fn body<'a>(what: &'static str, bytes: &'a [u8]) -> Result<&'a [u8], StoreError> {
    if bytes.len() > MAX_VALUE_LEN {
        return Err(StoreError::Corrupt { what });
    }
    match bytes.split_first() {
        Some((&FORMAT_VERSION, rest)) => Ok(rest),
        _ => Err(StoreError::Corrupt { what }),
    }
}

/// Decodes a plain value: the format byte, then exactly one postcard value.
pub(crate) fn decode<T: DeserializeOwned>(what: &'static str, bytes: &[u8]) -> Result<T, StoreError> {
    decode_postcard(what, body(what, bytes)?)
}

/// Decodes exactly one postcard value, nothing after it.
///
/// Bounded: the input is at most [`MAX_VALUE_LEN`] bytes, every length in it is checked against
/// the bytes that remain, and serde caps what it allocates ahead for a claimed sequence length,
/// so corrupt bytes cost at most a few times their own size.
pub(crate) fn decode_postcard<T: DeserializeOwned>(
    what: &'static str,
    bytes: &[u8],
) -> Result<T, StoreError> {
    if bytes.len() > MAX_VALUE_LEN {
        return Err(StoreError::Corrupt { what });
    }
    match postcard::take_from_bytes::<T>(bytes) {
        Ok((value, [])) => Ok(value),
        _ => Err(StoreError::Corrupt { what }),
    }
}

/// The associated data of a sealed record stored under `key` in tree `tree`.
pub(crate) fn aad(tree: &str, key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(AAD_LABEL.len() + 3 + tree.len() + key.len());
    out.extend_from_slice(AAD_LABEL);
    out.push(FORMAT_VERSION);
    // Length-prefixed, so no (tree, key) pair can be confused with another.
    out.extend_from_slice(&u16::try_from(tree.len()).unwrap_or(u16::MAX).to_be_bytes());
    out.extend_from_slice(tree.as_bytes());
    out.extend_from_slice(key);
    out
}

/// Checks a contact name used as (part of) a key.
pub(crate) fn check_name(name: &str) -> Result<(), StoreError> {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(StoreError::InvalidName { len: name.len(), max: MAX_NAME_LEN });
    }
    Ok(())
}

/// Key of a message in one conversation: `u16 name length ‖ name ‖ u64 order`, so a prefix scan
/// over `conversation_prefix(name)` visits exactly that contact's messages, in order.
pub(crate) fn conversation_key(name: &str, order: u64) -> Vec<u8> {
    let mut key = conversation_prefix(name);
    key.extend_from_slice(&order.to_be_bytes());
    key
}

/// The prefix of a contact's conversation keys.
pub(crate) fn conversation_prefix(name: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(2 + name.len() + 8);
    // Names are at most MAX_NAME_LEN bytes (checked before anything is stored); a longer one
    // here can only come from a lookup, and a saturated prefix matches nothing stored.
    key.extend_from_slice(&u16::try_from(name.len()).unwrap_or(u16::MAX).to_be_bytes());
    key.extend_from_slice(name.as_bytes());
    key
}

/// Key of an outbox entry in due order: `u64 next attempt ‖ message id`.
pub(crate) fn due_key(next_attempt_at: u64, id: &[u8; 16]) -> [u8; 24] {
    let mut key = [0u8; 24];
    key[..8].copy_from_slice(&next_attempt_at.to_be_bytes());
    key[8..].copy_from_slice(id);
    key
}

/// The message id at the end of a due-order key.
pub(crate) fn id_of_due_key(key: &[u8]) -> Result<[u8; 16], StoreError> {
    key.get(8..)
        .and_then(|id| <[u8; 16]>::try_from(id).ok())
        .ok_or(StoreError::Corrupt { what: "outbox index" })
}

/// The next-attempt time at the start of a due-order key.
pub(crate) fn time_of_due_key(key: &[u8]) -> Result<u64, StoreError> {
    key.get(..8)
        .and_then(|time| <[u8; 8]>::try_from(time).ok())
        .map(u64::from_be_bytes)
        .ok_or(StoreError::Corrupt { what: "outbox index" })
}

/// Key of an outbox entry in its contact's delivery order: `conversation_prefix(name) ‖ u64
/// created at ‖ u64 seq ‖ message id`, so the first key under a contact's prefix is the entry to
/// deliver next (oldest first; the id only separates equal times).
pub(crate) fn order_key(name: &str, created_at: u64, seq: u64, id: &[u8; 16]) -> Vec<u8> {
    let mut key = conversation_prefix(name);
    key.extend_from_slice(&created_at.to_be_bytes());
    key.extend_from_slice(&seq.to_be_bytes());
    key.extend_from_slice(id);
    key
}

/// The message id at the end of a delivery-order key.
pub(crate) fn id_of_order_key(key: &[u8]) -> Result<[u8; 16], StoreError> {
    key.len()
        .checked_sub(16)
        .and_then(|start| <[u8; 16]>::try_from(&key[start..]).ok())
        .ok_or(StoreError::Corrupt { what: "outbox index" })
}

/// The smallest key greater than every key starting with `prefix`, or `None` when there is none
/// (the prefix is empty or all `0xff`).
pub(crate) fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use merpati_proto::Timestamp;
    use merpati_proto::frame::MessageId;
    use merpati_proto::mailbox::MailboxId;
    use proptest::prelude::*;

    use super::*;
    use crate::store::{Direction, OutboxEntry, Status, StoredMessage};

    fn message() -> StoredMessage {
        StoredMessage {
            id: MessageId([7; 16]),
            contact: "carol".into(),
            direction: Direction::Out,
            time: Timestamp(1_700_000_000_000),
            text: "hello there".into(),
            seq: Some(3),
            status: Status::Sent,
            reason: None,
            order: 9,
        }
    }

    fn entry() -> OutboxEntry {
        OutboxEntry {
            id: MessageId([8; 16]),
            contact: "carol".into(),
            envelope: vec![0xee; 600],
            mailbox: MailboxId([9; 16]),
            created_at: Timestamp(5),
            seq: 3,
            attempts: 2,
            next_attempt_at: Timestamp(10),
            expires_at: Timestamp(20),
        }
    }

    #[test]
    fn round_trip_and_format_byte() {
        let bytes = encode("message", &message()).expect("encode");
        assert_eq!(bytes[0], FORMAT_VERSION);
        assert_eq!(decode::<StoredMessage>("message", &bytes).expect("decode"), message());
        let secret = encode_secret("message", &message()).expect("encode");
        assert_eq!(&secret[..], &bytes[1..]);
    }

    #[test]
    fn statuses_keep_their_stored_encoding() {
        // Stored by variant index: what older versions wrote must still decode to the same status,
        // and the later variant is appended after them.
        let old = [Status::Queued, Status::Sent, Status::Delivered, Status::Read, Status::Failed];
        for (index, status) in old.into_iter().enumerate() {
            let bytes = encode("status", &status).expect("encode");
            assert_eq!(bytes[1..], [index as u8]);
            assert_eq!(decode::<Status>("status", &bytes).expect("decode"), status);
        }
        let stored = Status::Stored { accepted: 2, total: 3 };
        let bytes = encode("status", &stored).expect("encode");
        assert_eq!(bytes[1..], [5, 2, 3]);
        assert_eq!(decode::<Status>("status", &bytes).expect("decode"), stored);
        let message = StoredMessage { status: stored, ..message() };
        let bytes = encode("message", &message).expect("encode");
        assert_eq!(decode::<StoredMessage>("message", &bytes).expect("decode"), message);
    }

    #[test]
    fn wrong_format_trailing_bytes_and_oversize_are_corrupt() {
        let mut bytes = encode("message", &message()).expect("encode");
        bytes[0] = FORMAT_VERSION + 1;
        assert!(matches!(decode::<StoredMessage>("message", &bytes), Err(StoreError::Corrupt { .. })));
        let mut bytes = encode("message", &message()).expect("encode");
        bytes.push(0);
        assert!(matches!(decode::<StoredMessage>("message", &bytes), Err(StoreError::Corrupt { .. })));
        assert!(matches!(decode::<StoredMessage>("message", &[]), Err(StoreError::Corrupt { .. })));
        let huge = vec![FORMAT_VERSION; MAX_VALUE_LEN + 1];
        assert!(matches!(decode::<Vec<u8>>("blob", &huge), Err(StoreError::Corrupt { .. })));
    }

    #[test]
    fn oversize_values_are_refused_on_write() {
        let big = vec![0u8; MAX_VALUE_LEN];
        assert!(matches!(encode("blob", &big), Err(StoreError::TooLarge { what: "blob", .. })));
    }

    #[test]
    fn names_are_bounded() {
        assert!(check_name("a").is_ok());
        assert!(check_name(&"é".repeat(MAX_NAME_LEN / 2)).is_ok());
        assert!(matches!(check_name(""), Err(StoreError::InvalidName { len: 0, .. })));
        assert!(check_name(&"x".repeat(MAX_NAME_LEN + 1)).is_err());
    }

    #[test]
    fn conversation_keys_group_by_name_and_sort_by_order() {
        let ann = conversation_prefix("ann");
        assert!(conversation_key("ann", 1).starts_with(&ann));
        assert!(!conversation_key("anne", 1).starts_with(&ann));
        assert!(conversation_key("ann", 255) < conversation_key("ann", 256));
    }

    #[test]
    fn order_keys_group_by_name_and_sort_oldest_first() {
        let ann = conversation_prefix("ann");
        let key = order_key("ann", 5, 1, &[9; 16]);
        assert!(key.starts_with(&ann));
        assert!(!order_key("anne", 5, 1, &[9; 16]).starts_with(&ann));
        assert_eq!(id_of_order_key(&key).expect("id"), [9; 16]);
        assert!(order_key("ann", 5, 1, &[9; 16]) < order_key("ann", 5, 2, &[0; 16]));
        assert!(order_key("ann", 5, 300, &[9; 16]) < order_key("ann", 6, 0, &[0; 16]));
        assert!(id_of_order_key(&[1; 15]).is_err());
        let due = due_key(258, &[3; 16]);
        assert_eq!((time_of_due_key(&due).expect("time"), id_of_due_key(&due).expect("id")), (258, [3; 16]));
        assert!(time_of_due_key(&[1; 7]).is_err());
    }

    #[test]
    fn prefix_end_bounds_the_prefix() {
        assert_eq!(prefix_end(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_end(&[1, 0xff]), Some(vec![2]));
        assert_eq!(prefix_end(&[0xff, 0xff]), None);
        assert_eq!(prefix_end(&[]), None);
    }

    #[test]
    fn aad_separates_tree_and_key() {
        assert_ne!(aad("ab", b"c"), aad("a", b"bc"));
        assert_ne!(aad("sessions", &[1; 16]), aad("sessions", &[2; 16]));
    }

    proptest! {
        #[test]
        fn decoding_junk_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let _ = decode::<StoredMessage>("message", &bytes);
            let _ = decode::<OutboxEntry>("outbox entry", &bytes);
            let _ = decode::<crate::store::Contact>("contact", &bytes);
            let _ = decode_postcard::<merpati_proto::session::SessionState>("session", &bytes);
            let _ = decode_postcard::<crate::store::Profile>("profile", &bytes);
        }

        #[test]
        fn decoding_mutated_values_never_panics(
            flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
            cut in any::<prop::sample::Index>(),
        ) {
            for mut bytes in [encode("message", &message()).expect("m"), encode("outbox", &entry()).expect("e")] {
                for (at, value) in &flips {
                    let i = at.index(bytes.len());
                    bytes[i] ^= value | 1;
                }
                let _ = decode::<StoredMessage>("message", &bytes);
                let _ = decode::<OutboxEntry>("outbox entry", &bytes);
                bytes.truncate(cut.index(bytes.len()));
                let _ = decode::<StoredMessage>("message", &bytes);
                let _ = decode::<OutboxEntry>("outbox entry", &bytes);
            }
        }
    }
}
