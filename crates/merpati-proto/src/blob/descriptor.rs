//! A file's description: what a sender puts in a conversation so the recipient can fetch, open
//! and check a file (protocol §14). A small file rides inside it; a larger one is a blob at up to
//! two relays (and, while the sender's node is reachable, at that node).
//!
//! ```text
//! version      u8   1
//! len          u64  the file's length, at most 25 MiB
//! hash         32   H("NDR1/blob-hash", file)
//! media_type   u8-prefixed, 1..=64 bytes of printable ASCII, `type/subtype`
//! name         u8-prefixed, 1..=255 bytes of UTF-8: no control characters, no `/` or `\`,
//!              not `.` or `..`
//! caption      u16-prefixed, at most 4 096 bytes of UTF-8
//! thumbnail    u16-prefixed, at most 8 192 bytes (an image; not interpreted here)
//! kind         u8   1 inline, 2 blob
//! inline:      u16-prefixed file, exactly `len` bytes, at most 48 KiB
//! blob:        blob_id 16 ‖ key 32 ‖ read_secret 32 ‖ count u32 (= chunk_count(len)) ‖
//!              expires_at u64 ‖ from_sender u8 (0/1) ‖
//!              sources u8 (0..=2), each: peer_id u8-prefixed (1..=64) ‖
//!                                       addrs u8 (0..=2), each u16-prefixed (1..=256)
//! ```
//!
//! Decoding checks every rule above before anything is fetched: a description whose count does
//! not follow from its length, whose name could climb out of a directory, or that points to more
//! sources than allowed is refused whole.

use std::fmt;

use zeroize::Zeroizing;

use super::{BlobError, BlobKey, MAX_FILE_LEN, chunk_count};
use crate::codec::{DecodeError, Reader, Writer};
use crate::frame::{MAX_ADDR_LEN, MAX_PEER_ID_LEN};
use crate::time::Timestamp;

/// The format version this code writes and reads.
pub const DESCRIPTOR_VERSION: u8 = 1;
/// The largest file carried inside its description rather than as a blob.
pub const MAX_INLINE_LEN: usize = 48 * 1024;
/// The longest media type, in bytes.
pub const MAX_MEDIA_TYPE_LEN: usize = 64;
/// The longest file name, in bytes of UTF-8.
pub const MAX_FILE_NAME_LEN: usize = 255;
/// The longest caption, in bytes of UTF-8.
pub const MAX_CAPTION_LEN: usize = 4096;
/// The largest thumbnail, in bytes.
pub const MAX_THUMBNAIL_LEN: usize = 8192;
/// The most places a blob is offered from, besides the sender's node.
pub const MAX_SOURCES: usize = 2;
/// The most addresses given for one source.
pub const MAX_SOURCE_ADDRS: usize = 2;

const KIND_INLINE: u8 = 1;
const KIND_BLOB: u8 = 2;

/// A relay holding a blob: its peer id and up to two addresses (binary multiaddrs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Source {
    /// The relay's libp2p peer id, as bytes.
    pub peer_id: Vec<u8>,
    /// Where to reach it.
    pub addrs: Vec<Vec<u8>>,
}

/// Where the file's bytes are.
#[derive(Clone, PartialEq, Eq)]
pub enum Content {
    /// In the description itself (at most [`MAX_INLINE_LEN`]).
    Inline(Zeroizing<Vec<u8>>),
    /// A blob to fetch.
    Blob {
        /// The blob's id.
        blob_id: [u8; 16],
        /// Its key.
        key: BlobKey,
        /// The recipient's read capability; relays see only tokens derived from it.
        read_secret: Zeroizing<[u8; 32]>,
        /// Its chunk count.
        count: u32,
        /// When the sender's copies run out.
        expires_at: Timestamp,
        /// Whether the sender's node serves it too, while reachable directly.
        from_sender: bool,
        /// The relays holding it.
        sources: Vec<Source>,
    },
}

impl fmt::Debug for Content {
    // Keys and file bytes never print.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Content::Inline(data) => write!(f, "Inline({} bytes)", data.len()),
            Content::Blob { count, sources, from_sender, .. } => f
                .debug_struct("Blob")
                .field("count", count)
                .field("sources", &sources.len())
                .field("from_sender", from_sender)
                .finish_non_exhaustive(),
        }
    }
}

/// A file's description.
#[derive(Clone, PartialEq, Eq)]
pub struct Descriptor {
    /// The file's length in bytes.
    pub len: u64,
    /// `H("NDR1/blob-hash", file)`.
    pub hash: [u8; 32],
    /// Its media type, as the sender saw it (`image/jpeg`); not to be trusted for opening it.
    pub media_type: String,
    /// Its name, safe to use as one file name in a directory.
    pub name: String,
    /// What the sender wrote with it.
    pub caption: String,
    /// A small preview image, if any.
    pub thumbnail: Vec<u8>,
    /// Where its bytes are.
    pub content: Content,
}

impl fmt::Debug for Descriptor {
    // The name and caption are what someone wrote: their lengths only, as for texts.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Descriptor")
            .field("len", &self.len)
            .field("media_type", &self.media_type)
            .field("name_len", &self.name.len())
            .field("caption_len", &self.caption.len())
            .field("thumbnail_len", &self.thumbnail.len())
            .field("content", &self.content)
            .finish()
    }
}

impl Descriptor {
    /// The encoding, after [`Descriptor::validate`].
    pub fn encode(&self) -> Result<Vec<u8>, BlobError> {
        self.validate()?;
        let mut w = Writer::new();
        self.write(&mut w);
        Ok(w.into_bytes())
    }

    /// The length of the encoding.
    pub fn encoded_len(&self) -> usize {
        let mut w = Writer::new();
        self.write(&mut w);
        w.len()
    }

    /// Writes the encoding (of a description that passed [`Descriptor::validate`]).
    pub(crate) fn write(&self, w: &mut Writer) {
        w.u8(DESCRIPTOR_VERSION).u64(self.len).raw(&self.hash);
        w.bytes_u8(self.media_type.as_bytes()).bytes_u8(self.name.as_bytes());
        w.bytes_u16(self.caption.as_bytes()).bytes_u16(&self.thumbnail);
        match &self.content {
            Content::Inline(data) => {
                w.u8(KIND_INLINE).bytes_u16(data);
            }
            Content::Blob { blob_id, key, read_secret, count, expires_at, from_sender, sources } => {
                w.u8(KIND_BLOB).raw(blob_id).raw(key.as_bytes()).raw(&read_secret[..]);
                w.u32(*count).u64(expires_at.0).u8(u8::from(*from_sender));
                w.u8(u8::try_from(sources.len()).unwrap_or(u8::MAX));
                for source in sources {
                    w.bytes_u8(&source.peer_id).u8(u8::try_from(source.addrs.len()).unwrap_or(u8::MAX));
                    for addr in &source.addrs {
                        w.bytes_u16(addr);
                    }
                }
            }
        }
    }

    /// Decodes and checks a description: every field within its bounds, the name safe, the count
    /// following from the length.
    pub fn decode(bytes: &[u8]) -> Result<Descriptor, DescriptorError> {
        let mut r = Reader::new(bytes);
        if r.u8("version")? != DESCRIPTOR_VERSION {
            return Err(DecodeError::Invalid { what: "version" }.into());
        }
        let len = r.u64("length")?;
        let hash = r.array::<32>("hash")?;
        let media_type = utf8(r.bytes_u8(MAX_MEDIA_TYPE_LEN, "media type")?, "media type")?;
        let name = utf8(r.bytes_u8(MAX_FILE_NAME_LEN, "name")?, "name")?;
        let caption = utf8(r.bytes_u16(MAX_CAPTION_LEN, "caption")?, "caption")?;
        let thumbnail = r.bytes_u16(MAX_THUMBNAIL_LEN, "thumbnail")?.to_vec();
        let content = match r.u8("kind")? {
            KIND_INLINE => {
                Content::Inline(Zeroizing::new(r.bytes_u16(MAX_INLINE_LEN, "inline file")?.to_vec()))
            }
            KIND_BLOB => {
                let blob_id = r.array::<16>("blob id")?;
                let key = BlobKey::from_bytes(r.array::<32>("key")?);
                let read_secret = Zeroizing::new(r.array::<32>("read secret")?);
                let count = r.u32("chunk count")?;
                let expires_at = Timestamp(r.u64("expiry")?);
                let from_sender = match r.u8("sender flag")? {
                    0 => false,
                    1 => true,
                    _ => return Err(DecodeError::Invalid { what: "sender flag" }.into()),
                };
                let mut sources = Vec::new();
                for _ in 0..r.count_u8(MAX_SOURCES, "sources")? {
                    let peer_id = r.bytes_u8(MAX_PEER_ID_LEN, "source peer id")?.to_vec();
                    let mut addrs = Vec::new();
                    for _ in 0..r.count_u8(MAX_SOURCE_ADDRS, "source addresses")? {
                        addrs.push(r.bytes_u16(MAX_ADDR_LEN, "source address")?.to_vec());
                    }
                    sources.push(Source { peer_id, addrs });
                }
                Content::Blob { blob_id, key, read_secret, count, expires_at, from_sender, sources }
            }
            _ => return Err(DecodeError::Invalid { what: "kind" }.into()),
        };
        r.finish()?;
        let descriptor = Descriptor { len, hash, media_type, name, caption, thumbnail, content };
        descriptor.validate()?;
        Ok(descriptor)
    }

    /// Checks the rules the encoding alone cannot: the length and count, the media type and
    /// name, the inline file's length, non-empty source fields.
    pub fn validate(&self) -> Result<(), BlobError> {
        if self.len > MAX_FILE_LEN {
            return Err(BlobError::TooLarge { len: self.len, max: MAX_FILE_LEN });
        }
        let invalid = |what: &'static str| BlobError::InvalidDescription { what };
        if !is_media_type(&self.media_type) {
            return Err(invalid("a media type is type/subtype in printable ASCII, at most 64 bytes"));
        }
        if !is_safe_name(&self.name) {
            return Err(invalid(
                "a file name is 1 to 255 bytes, without control characters, / or \\, and not . or ..",
            ));
        }
        if self.caption.len() > MAX_CAPTION_LEN || self.thumbnail.len() > MAX_THUMBNAIL_LEN {
            return Err(invalid("the caption or the thumbnail is too large"));
        }
        match &self.content {
            Content::Inline(data) => {
                if data.len() > MAX_INLINE_LEN || data.len() as u64 != self.len {
                    return Err(invalid("an inline file has exactly its length, at most 48 KiB"));
                }
            }
            Content::Blob { count, sources, .. } => {
                if self.len <= MAX_INLINE_LEN as u64 {
                    return Err(invalid("a file of at most 48 KiB rides inline, not as a blob"));
                }
                if chunk_count(self.len)? != *count {
                    return Err(BlobError::CountMismatch { len: self.len, count: *count });
                }
                let bad_source = |s: &Source| {
                    s.peer_id.is_empty()
                        || s.peer_id.len() > MAX_PEER_ID_LEN
                        || s.addrs.len() > MAX_SOURCE_ADDRS
                        || s.addrs.iter().any(|a| a.is_empty() || a.len() > MAX_ADDR_LEN)
                };
                if sources.len() > MAX_SOURCES || sources.iter().any(bad_source) {
                    return Err(invalid("at most two sources, each a peer id and up to two addresses"));
                }
            }
        }
        Ok(())
    }
}

/// Why a description was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DescriptorError {
    /// It does not decode.
    #[error("the file's description is malformed: {0}")]
    Malformed(#[from] DecodeError),
    /// It decodes but breaks a rule.
    #[error(transparent)]
    Invalid(#[from] BlobError),
}

fn utf8(bytes: &[u8], what: &'static str) -> Result<String, DecodeError> {
    String::from_utf8(bytes.to_vec()).map_err(|_| DecodeError::Invalid { what })
}

/// `type/subtype`, each part non-empty printable ASCII without spaces.
fn is_media_type(text: &str) -> bool {
    let printable = |part: &str| !part.is_empty() && part.bytes().all(|b| b.is_ascii_graphic() && b != b'/');
    text.len() <= MAX_MEDIA_TYPE_LEN
        && text.split_once('/').is_some_and(|(t, s)| printable(t) && printable(s))
}

/// One file name that stays in the directory it is saved to, shows as it reads, and fits.
pub fn is_safe_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_FILE_NAME_LEN
        && name != "."
        && name != ".."
        && !name.chars().any(|c| {
            c.is_control()
                || c == '/'
                || c == '\\'
                // Invisible direction marks and overrides, and line separators: a name shows as
                // it reads.
                || matches!(c, '\u{200e}' | '\u{200f}' | '\u{061c}' | '\u{2028}' | '\u{2029}')
                || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blob() -> Descriptor {
        Descriptor {
            len: 5 * 1024 * 1024,
            hash: [1; 32],
            media_type: "image/jpeg".into(),
            name: "pasar pagi.jpg".into(),
            caption: "the stall, this morning ✓".into(),
            thumbnail: vec![9; 300],
            content: Content::Blob {
                blob_id: [2; 16],
                key: BlobKey::from_bytes([3; 32]),
                read_secret: Zeroizing::new([4; 32]),
                count: 96,
                expires_at: Timestamp(1_800_000_000_000),
                from_sender: true,
                sources: vec![
                    Source { peer_id: vec![5; 38], addrs: vec![vec![6; 20], vec![7; 30]] },
                    Source { peer_id: vec![8; 38], addrs: vec![] },
                ],
            },
        }
    }

    fn inline() -> Descriptor {
        Descriptor {
            len: 3,
            media_type: "audio/ogg".into(),
            name: "note.ogg".into(),
            caption: String::new(),
            thumbnail: Vec::new(),
            content: Content::Inline(Zeroizing::new(vec![1, 2, 3])),
            ..blob()
        }
    }

    #[test]
    fn descriptions_round_trip() {
        for descriptor in [blob(), inline()] {
            let bytes = descriptor.encode().unwrap();
            assert_eq!(Descriptor::decode(&bytes).unwrap(), descriptor);
        }
        // The largest one still fits one frame of the 64 KiB bucket.
        let big = Descriptor {
            len: MAX_INLINE_LEN as u64,
            caption: "c".repeat(MAX_CAPTION_LEN),
            thumbnail: vec![0; MAX_THUMBNAIL_LEN],
            name: "n".repeat(MAX_FILE_NAME_LEN),
            content: Content::Inline(Zeroizing::new(vec![0; MAX_INLINE_LEN])),
            ..inline()
        };
        assert!(big.encode().unwrap().len() <= crate::frame::MAX_BODY_LEN);
    }

    #[test]
    fn names_that_could_leave_their_directory_or_fool_a_reader_are_refused() {
        for name in [
            "",
            ".",
            "..",
            "../etc/passwd",
            "a/b",
            "a\\b",
            "x\u{0}y",
            "bell\u{7}",
            "abc\u{202e}gpj.exe",
            "invoice\u{200f}fdp.exe",
            &"n".repeat(256),
        ] {
            let descriptor = Descriptor { name: name.into(), ..blob() };
            assert!(descriptor.encode().is_err(), "{name:?} was accepted");
        }
        for name in ["photo.jpg", "..hidden", "a..b", "ünïcödé 写真.png", "..."] {
            assert!(is_safe_name(name), "{name:?} was refused");
        }
    }

    #[test]
    fn every_other_rule_is_checked_before_anything_is_fetched() {
        let refused = |d: Descriptor| d.encode().is_err();
        assert!(refused(Descriptor { media_type: "jpeg".into(), ..blob() }));
        assert!(refused(Descriptor { media_type: "image/ jpeg".into(), ..blob() }));
        assert!(refused(Descriptor { media_type: format!("image/{}", "x".repeat(60)), ..blob() }));
        assert!(refused(Descriptor { len: MAX_FILE_LEN + 1, ..blob() }));
        assert!(
            refused(Descriptor { len: 10 * 1024 * 1024, ..blob() }),
            "a count that does not follow from the length"
        );
        assert!(refused(Descriptor { len: 1000, ..blob() }), "a small file rides inline");
        assert!(refused(Descriptor { len: 4, ..inline() }), "an inline file of another length");
        let mut many = blob();
        if let Content::Blob { sources, .. } = &mut many.content {
            sources.push(Source { peer_id: vec![1], addrs: vec![] });
        }
        assert!(refused(many));
        let mut empty = blob();
        if let Content::Blob { sources, .. } = &mut empty.content {
            sources[0].peer_id.clear();
        }
        assert!(refused(empty));
    }

    #[test]
    fn malformed_bytes_are_refused_never_panicked_on() {
        let bytes = blob().encode().unwrap();
        for end in 0..bytes.len() {
            assert!(Descriptor::decode(&bytes[..end]).is_err(), "cut at {end}");
        }
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert!(Descriptor::decode(&trailing).is_err());
        let mut version = bytes.clone();
        version[0] = 2;
        assert!(Descriptor::decode(&version).is_err());
        // The count field, bent after an honest encoding: refused by the decoder's own check.
        let d = blob();
        let kind_at = 1
            + 8
            + 32
            + 1
            + d.media_type.len()
            + 1
            + d.name.len()
            + 2
            + d.caption.len()
            + 2
            + d.thumbnail.len();
        assert_eq!(bytes[kind_at], KIND_BLOB);
        let mut count = bytes.clone();
        count[kind_at + 1 + 16 + 32 + 32 + 3] ^= 1;
        assert!(matches!(
            Descriptor::decode(&count),
            Err(DescriptorError::Invalid(BlobError::CountMismatch { .. }))
        ));
    }

    #[test]
    fn keys_and_words_never_print() {
        let shown = format!("{:?}", blob());
        assert!(!shown.contains("3, 3, 3"), "{shown}");
        assert!(!shown.contains("pasar") && !shown.contains("stall"), "{shown}");
        assert!(shown.contains("count: 96"), "{shown}");
    }
}
