//! The clear envelope: everything a relay or a forwarding peer sees of a message.
//!
//! ```text
//! offset  size  field
//! 0       1     version     = 1 (VERSION)
//! 1       1     kind        1 = first contact, 2 = session
//! 2       16    mailbox     recipient mailbox id
//! 18      4     epoch       u32 BE (first contact: 0)
//! 22      4     sub_epoch   u32 BE
//! 26      1     index       u8, < 64: the Noise nonce inside the sub-epoch
//! 27      2     open_len    u16 BE, 0 = no epoch open, at most MAX_OPEN_LEN (first contact: > 0)
//! 29      n     open        epoch-open (or first-contact) handshake bytes, opaque here
//! 29+n    rest  ciphertext  transport ciphertext with its 16-byte tag
//! ```
//!
//! The first [`HEADER_LEN`] bytes are the [`Header`]. snow 0.10 has no associated data on transport
//! messages, so the header is authenticated in two ways: epoch, sub-epoch and index select the key
//! and nonce, and the session copies the exact header bytes into the plaintext (the frame's header
//! echo) and compares them after decrypting.
//!
//! Every envelope is padded to one of [`BUCKETS`] so a relay learns the length of a message only to
//! a bucket: the sender picks the bucket with [`bucket_for`] and pads the inner plaintext to
//! [`plaintext_len_for`] bytes, which makes the whole encoding exactly the bucket's size.
//!
//! Receiving order: [`Envelope::decode`] refuses oversized input, then an unknown version, before
//! it reads anything else, so junk costs nothing but a length comparison.

use thiserror::Error;

use crate::codec::{DecodeError, Reader, Writer};
use crate::mailbox::MailboxId;
use crate::noise::{MAX_NOISE_MESSAGE, MAX_TRANSPORT_PLAINTEXT, TAG_LEN};

/// The envelope format version this crate writes and reads.
pub const VERSION: u8 = 1;
/// The length of the clear header (everything before `open_len`).
pub const HEADER_LEN: usize = 27;
/// Message indexes inside a sub-epoch are below this; the session moves to the next sub-epoch
/// after 64 messages, which keeps its replay bitmap at one `u64` per sub-epoch.
pub const MAX_INDEX_EXCLUSIVE: u8 = 64;
/// The longest epoch-open (or first-contact handshake) an envelope may carry.
pub const MAX_OPEN_LEN: usize = 4096;
/// The longest encoded envelope: the largest bucket.
pub const MAX_ENVELOPE_LEN: usize = 65_536;
/// The envelope lengths a sender pads to, smallest first.
pub const BUCKETS: [usize; 6] = [512, 1024, 2048, 4096, 16_384, 65_536];

/// Bytes of an envelope that are not the epoch open or the ciphertext.
const FIXED_LEN: usize = HEADER_LEN + 2;

/// What kind of message an envelope carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A first-contact message: the open is a `Noise_X` handshake to the recipient's prekey.
    FirstContact = 1,
    /// A message of an established session.
    Session = 2,
}

impl Kind {
    /// The kind's byte on the wire.
    pub fn to_byte(self) -> u8 {
        self as u8
    }

    /// The kind a byte stands for, if any.
    pub fn from_byte(byte: u8) -> Option<Self> {
        match byte {
            1 => Some(Self::FirstContact),
            2 => Some(Self::Session),
            _ => None,
        }
    }
}

/// Why an envelope could not be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EnvelopeError {
    /// The envelope is longer than [`MAX_ENVELOPE_LEN`]; refused before reading it.
    #[error("envelope is {len} bytes, more than the limit of {max}")]
    TooLarge {
        /// The length found.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The version byte is not [`VERSION`]; nothing after it was read.
    #[error("unsupported envelope version {found}")]
    UnsupportedVersion {
        /// The version byte found.
        found: u8,
    },
    /// The kind byte is not a known [`Kind`].
    #[error("unknown envelope kind {found}")]
    UnknownKind {
        /// The kind byte found.
        found: u8,
    },
    /// The bytes do not follow the layout (truncated, trailing bytes, a field over its limit).
    #[error("malformed envelope: {0}")]
    Malformed(#[from] DecodeError),
    /// A field holds a value the format forbids (for example an index of 64, or a first contact
    /// with a non-zero epoch).
    #[error("invalid envelope: {what}")]
    Invalid {
        /// The rule that was broken.
        what: &'static str,
    },
}

/// The clear header: the first [`HEADER_LEN`] bytes of an envelope.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Header {
    /// The format version; [`VERSION`] for anything this crate accepts.
    pub version: u8,
    /// First contact or session.
    pub kind: Kind,
    /// The recipient mailbox the envelope is addressed to.
    pub mailbox: MailboxId,
    /// The sender's epoch (0 for a first contact).
    pub epoch: u32,
    /// The sub-epoch inside the epoch.
    pub sub_epoch: u32,
    /// The message index inside the sub-epoch, below [`MAX_INDEX_EXCLUSIVE`].
    pub index: u8,
}

impl Header {
    /// The header's bytes: exactly what the session echoes inside the ciphertext.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[0] = self.version;
        out[1] = self.kind.to_byte();
        out[2..18].copy_from_slice(&self.mailbox.0);
        out[18..22].copy_from_slice(&self.epoch.to_be_bytes());
        out[22..26].copy_from_slice(&self.sub_epoch.to_be_bytes());
        out[26] = self.index;
        out
    }

    /// Decodes exactly [`HEADER_LEN`] bytes, with the same checks as [`Envelope::decode`].
    pub fn decode(input: &[u8]) -> Result<Self, EnvelopeError> {
        let mut r = Reader::new(input);
        let header = Self::read(&mut r)?;
        r.finish()?;
        Ok(header)
    }

    /// Checks the header's own rules: version, index range, first-contact epochs.
    pub fn validate(&self) -> Result<(), EnvelopeError> {
        if self.version != VERSION {
            return Err(EnvelopeError::UnsupportedVersion { found: self.version });
        }
        if self.index >= MAX_INDEX_EXCLUSIVE {
            return Err(EnvelopeError::Invalid { what: "index must be below 64" });
        }
        // Epoch 0 is the first contact's epoch; its sub-epochs move on like any other epoch's.
        if self.kind == Kind::FirstContact && self.epoch != 0 {
            return Err(EnvelopeError::Invalid { what: "first contact must be in epoch 0" });
        }
        Ok(())
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, EnvelopeError> {
        // The version decides how to read everything else, so nothing else is looked at first.
        let version = r.u8("version")?;
        if version != VERSION {
            return Err(EnvelopeError::UnsupportedVersion { found: version });
        }
        let kind_byte = r.u8("kind")?;
        let kind = Kind::from_byte(kind_byte).ok_or(EnvelopeError::UnknownKind { found: kind_byte })?;
        let header = Self {
            version,
            kind,
            mailbox: MailboxId(r.array("mailbox")?),
            epoch: r.u32("epoch")?,
            sub_epoch: r.u32("sub-epoch")?,
            index: r.u8("index")?,
        };
        header.validate()?;
        Ok(header)
    }
}

/// A whole envelope: header, optional epoch open, transport ciphertext.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope {
    /// The clear header.
    pub header: Header,
    /// The epoch-open handshake riding on this message (always present, and non-empty, for a
    /// first contact). `Some` is never empty: an empty open is written as "no open".
    pub open: Option<Vec<u8>>,
    /// The transport ciphertext including its tag.
    pub ciphertext: Vec<u8>,
}

impl Envelope {
    /// The envelope's bytes. The encoding is written as is; [`Envelope::validate`] tells whether
    /// [`Envelope::decode`] will accept it.
    pub fn encode(&self) -> Vec<u8> {
        let open = self.open.as_deref().unwrap_or_default();
        let mut w = Writer::with_capacity(self.encoded_len());
        w.raw(&self.header.encode()).bytes_u16(open).raw(&self.ciphertext);
        w.into_bytes()
    }

    /// The length of [`Envelope::encode`]'s output, without encoding.
    pub fn encoded_len(&self) -> usize {
        FIXED_LEN + self.open.as_ref().map_or(0, Vec::len) + self.ciphertext.len()
    }

    /// Checks every rule the decoder checks, so a sender can refuse to send what no one will read.
    pub fn validate(&self) -> Result<(), EnvelopeError> {
        let len = self.encoded_len();
        if len > MAX_ENVELOPE_LEN {
            return Err(EnvelopeError::TooLarge { len, max: MAX_ENVELOPE_LEN });
        }
        self.header.validate()?;
        if self.open.as_ref().is_some_and(Vec::is_empty) {
            return Err(EnvelopeError::Invalid { what: "an epoch open must not be empty" });
        }
        let open_len = self.open.as_ref().map_or(0, Vec::len);
        check_open(self.header.kind, open_len)?;
        check_ciphertext(self.ciphertext.len())
    }

    /// Decodes an envelope: size first, then version, then the rest. Costs no cryptography.
    pub fn decode(input: &[u8]) -> Result<Self, EnvelopeError> {
        if input.len() > MAX_ENVELOPE_LEN {
            return Err(EnvelopeError::TooLarge { len: input.len(), max: MAX_ENVELOPE_LEN });
        }
        let mut r = Reader::new(input);
        let header = Header::read(&mut r)?;
        let open_len = usize::from(r.u16("epoch open length")?);
        check_open(header.kind, open_len)?;
        let open = r.take(open_len, "epoch open")?;
        let ciphertext = r.rest();
        check_ciphertext(ciphertext.len())?;
        r.finish()?;
        Ok(Self { header, open: (!open.is_empty()).then(|| open.to_vec()), ciphertext: ciphertext.to_vec() })
    }
}

fn check_open(kind: Kind, open_len: usize) -> Result<(), EnvelopeError> {
    if open_len > MAX_OPEN_LEN {
        return Err(DecodeError::TooLong { what: "epoch open", len: open_len, max: MAX_OPEN_LEN }.into());
    }
    if kind == Kind::FirstContact && open_len == 0 {
        return Err(EnvelopeError::Invalid { what: "first contact must carry its handshake" });
    }
    Ok(())
}

fn check_ciphertext(len: usize) -> Result<(), EnvelopeError> {
    if len < TAG_LEN {
        return Err(DecodeError::Truncated { what: "ciphertext" }.into());
    }
    if len > MAX_NOISE_MESSAGE {
        return Err(DecodeError::TooLong { what: "ciphertext", len, max: MAX_NOISE_MESSAGE }.into());
    }
    Ok(())
}

/// The smallest bucket an envelope of `len` bytes fits in, or `None` above the largest.
pub fn bucket_for(len: usize) -> Option<usize> {
    BUCKETS.iter().copied().find(|&bucket| bucket >= len)
}

/// The transport plaintext length that makes an envelope with an `open_len`-byte open exactly
/// `bucket` bytes long: `bucket - HEADER_LEN - 2 - open_len - TAG_LEN`.
///
/// `None` if `bucket` is not one of [`BUCKETS`], the open is over [`MAX_OPEN_LEN`], the overhead
/// does not fit in the bucket, or the plaintext would exceed Noise's transport limit.
pub fn plaintext_len_for(bucket: usize, open_len: usize) -> Option<usize> {
    if !BUCKETS.contains(&bucket) || open_len > MAX_OPEN_LEN {
        return None;
    }
    let len = bucket.checked_sub(FIXED_LEN + open_len + TAG_LEN)?;
    (len <= MAX_TRANSPORT_PLAINTEXT).then_some(len)
}

/// The padded plaintext length for a frame of `unpadded_len` bytes sent with an `open_len`-byte
/// open: the target of the smallest bucket that holds it, or `None` if no bucket does.
pub fn padded_plaintext_len(open_len: usize, unpadded_len: usize) -> Option<usize> {
    let needed = FIXED_LEN.checked_add(open_len)?.checked_add(unpadded_len)?.checked_add(TAG_LEN)?;
    plaintext_len_for(bucket_for(needed)?, open_len)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(kind: Kind) -> Header {
        Header { version: VERSION, kind, mailbox: MailboxId([7; 16]), epoch: 0, sub_epoch: 0, index: 3 }
    }

    fn session(open: Option<Vec<u8>>, ciphertext_len: usize) -> Envelope {
        let header = Header { epoch: 5, sub_epoch: 2, ..header(Kind::Session) };
        Envelope { header, open, ciphertext: vec![0xAB; ciphertext_len] }
    }

    #[test]
    fn layout_matches_the_spec() {
        let env = Envelope {
            header: Header {
                version: 1,
                kind: Kind::Session,
                mailbox: MailboxId([0x11; 16]),
                epoch: 0x0102_0304,
                sub_epoch: 0x0506_0708,
                index: 9,
            },
            open: Some(vec![0xEE; 3]),
            ciphertext: vec![0xCC; 16],
        };
        let bytes = env.encode();
        assert_eq!(bytes.len(), env.encoded_len());
        assert_eq!(&bytes[..2], &[1, 2]);
        assert_eq!(&bytes[2..18], &[0x11; 16]);
        assert_eq!(&bytes[18..27], &[1, 2, 3, 4, 5, 6, 7, 8, 9]);
        assert_eq!(&bytes[27..29], &[0, 3]);
        assert_eq!(&bytes[29..32], &[0xEE; 3]);
        assert_eq!(&bytes[32..], &[0xCC; 16]);
        assert_eq!(&bytes[..HEADER_LEN], &env.header.encode());
        assert_eq!(Envelope::decode(&bytes), Ok(env.clone()));
        assert_eq!(Header::decode(&bytes[..HEADER_LEN]), Ok(env.header));
        assert!(Header::decode(&bytes[..HEADER_LEN + 1]).is_err());
    }

    #[test]
    fn version_is_checked_first() {
        let mut bytes = session(None, 16).encode();
        bytes[0] = 2;
        bytes[1] = 99; // also an unknown kind: the version must win
        assert_eq!(Envelope::decode(&bytes), Err(EnvelopeError::UnsupportedVersion { found: 2 }));
        assert_eq!(Envelope::decode(&[0]), Err(EnvelopeError::UnsupportedVersion { found: 0 }));
        assert_eq!(Envelope::decode(&[2]), Err(EnvelopeError::UnsupportedVersion { found: 2 }));
    }

    #[test]
    fn size_is_checked_before_version() {
        let mut bytes = vec![0u8; MAX_ENVELOPE_LEN + 1];
        bytes[0] = 2;
        assert_eq!(
            Envelope::decode(&bytes),
            Err(EnvelopeError::TooLarge { len: MAX_ENVELOPE_LEN + 1, max: MAX_ENVELOPE_LEN })
        );
    }

    #[test]
    fn unknown_kind_is_refused() {
        let mut bytes = session(None, 16).encode();
        bytes[1] = 3;
        assert_eq!(Envelope::decode(&bytes), Err(EnvelopeError::UnknownKind { found: 3 }));
        bytes[1] = 0;
        assert_eq!(Envelope::decode(&bytes), Err(EnvelopeError::UnknownKind { found: 0 }));
    }

    #[test]
    fn index_64_is_refused() {
        let mut env = session(None, 16);
        env.header.index = 63;
        assert!(Envelope::decode(&env.encode()).is_ok());
        env.header.index = 64;
        let err = Envelope::decode(&env.encode()).unwrap_err();
        assert!(matches!(err, EnvelopeError::Invalid { .. }), "{err:?}");
        assert_eq!(env.validate(), Err(err));
    }

    #[test]
    fn first_contact_rules() {
        let good =
            Envelope { header: header(Kind::FirstContact), open: Some(vec![1; 96]), ciphertext: vec![2; 16] };
        assert_eq!(good.validate(), Ok(()));
        assert_eq!(Envelope::decode(&good.encode()), Ok(good.clone()));

        let mut epoch = good.clone();
        epoch.header.epoch = 1;
        assert!(matches!(Envelope::decode(&epoch.encode()), Err(EnvelopeError::Invalid { .. })));
        // Epoch 0's sending chain steps through sub-epochs like any other.
        let mut sub = good.clone();
        sub.header.sub_epoch = 1;
        assert_eq!(Envelope::decode(&sub.encode()), Ok(sub));
        let no_open = Envelope { open: None, ..good.clone() };
        assert!(matches!(Envelope::decode(&no_open.encode()), Err(EnvelopeError::Invalid { .. })));
        assert!(matches!(no_open.validate(), Err(EnvelopeError::Invalid { .. })));
        // Empty `Some` would encode as "no open" and not round-trip.
        let empty_open = Envelope { open: Some(Vec::new()), ..session(None, 16) };
        assert!(matches!(empty_open.validate(), Err(EnvelopeError::Invalid { .. })));
    }

    #[test]
    fn open_and_ciphertext_bounds() {
        let env = session(Some(vec![1; MAX_OPEN_LEN]), 16);
        assert_eq!(Envelope::decode(&env.encode()), Ok(env));
        let env = session(Some(vec![1; MAX_OPEN_LEN + 1]), 16);
        assert!(matches!(
            Envelope::decode(&env.encode()),
            Err(EnvelopeError::Malformed(DecodeError::TooLong { len: 4097, .. }))
        ));
        assert!(env.validate().is_err());
        let short = session(None, TAG_LEN - 1);
        assert!(matches!(Envelope::decode(&short.encode()), Err(EnvelopeError::Malformed(_))));
        assert!(short.validate().is_err());
        let largest = session(None, MAX_ENVELOPE_LEN - FIXED_LEN);
        assert_eq!(largest.validate(), Ok(()));
        assert_eq!(Envelope::decode(&largest.encode()), Ok(largest));
        let over = session(None, MAX_ENVELOPE_LEN - FIXED_LEN + 1);
        assert!(matches!(over.validate(), Err(EnvelopeError::TooLarge { .. })));
    }

    #[test]
    fn truncated_open_is_malformed() {
        let bytes = session(Some(vec![1; 100]), 16).encode();
        assert!(matches!(Envelope::decode(&bytes[..29 + 50]), Err(EnvelopeError::Malformed(_))));
        // 100 open bytes present but only 10 of ciphertext: below the tag length.
        assert!(matches!(Envelope::decode(&bytes[..29 + 110]), Err(EnvelopeError::Malformed(_))));
    }

    #[test]
    fn bucket_boundaries() {
        assert_eq!(bucket_for(0), Some(512));
        assert_eq!(bucket_for(512), Some(512));
        assert_eq!(bucket_for(513), Some(1024));
        assert_eq!(bucket_for(1024), Some(1024));
        assert_eq!(bucket_for(1025), Some(2048));
        assert_eq!(bucket_for(4096), Some(4096));
        assert_eq!(bucket_for(4097), Some(16_384));
        assert_eq!(bucket_for(16_385), Some(65_536));
        assert_eq!(bucket_for(65_536), Some(65_536));
        assert_eq!(bucket_for(65_537), None);
    }

    #[test]
    fn plaintext_len_fills_the_bucket_exactly() {
        for bucket in BUCKETS {
            for open_len in [0usize, 1, 48, 300, MAX_OPEN_LEN] {
                let Some(len) = plaintext_len_for(bucket, open_len) else {
                    assert!(FIXED_LEN + open_len + TAG_LEN > bucket, "{bucket} {open_len}");
                    continue;
                };
                let env = session((open_len > 0).then(|| vec![1; open_len]), len + TAG_LEN);
                assert_eq!(env.encoded_len(), bucket);
                assert_eq!(env.encode().len(), bucket);
                assert_eq!(env.validate(), Ok(()));
            }
        }
        assert_eq!(plaintext_len_for(512, 0), Some(512 - 27 - 2 - 16));
        assert_eq!(plaintext_len_for(65_536, 0), Some(65_536 - 45));
        assert_eq!(plaintext_len_for(512, 467), Some(0));
        assert_eq!(plaintext_len_for(512, 468), None);
        assert_eq!(plaintext_len_for(1000, 0), None);
        assert_eq!(plaintext_len_for(65_536, MAX_OPEN_LEN + 1), None);
    }

    #[test]
    fn padded_plaintext_len_picks_the_smallest_bucket() {
        assert_eq!(padded_plaintext_len(0, 0), Some(467));
        assert_eq!(padded_plaintext_len(0, 467), Some(467));
        assert_eq!(padded_plaintext_len(0, 468), Some(1024 - 45));
        assert_eq!(padded_plaintext_len(100, 367), Some(367));
        assert_eq!(padded_plaintext_len(100, 368), Some(1024 - 145));
        assert_eq!(padded_plaintext_len(0, 65_536 - 45), Some(65_536 - 45));
        assert_eq!(padded_plaintext_len(0, 65_536 - 44), None);
        assert_eq!(padded_plaintext_len(usize::MAX, 1), None);
    }
}
