//! Blobs: a file of up to 25 MiB encrypted once, under a random key of its own, as chunks of one
//! fixed size that relays store and serve without learning more than the file's size class.
//!
//! ```text
//! plaintext  file_len u64 BE ‖ file ‖ zero padding, cut into pieces of PIECE_LEN (65 520) bytes;
//!            the piece count is ceil((8 + file_len) / 65 520) rounded up to at most three
//!            significant bits (1…8, 10, 12, 14, 16, 20, 24, 28, 32, 40, …, 448)
//! chunk i    ChaCha20-Poly1305(key, nonce = i u32 BE ‖ last u8 ‖ 0⁷,
//!                              aad = "NDR1/blob" ‖ blob_id ‖ count u32 BE, piece i)
//!            = CHUNK_LEN (65 536) bytes; `last` is 1 for chunk count − 1, else 0
//! file hash  H("NDR1/blob-hash", file), as `kdf::hash` with the file as its one part
//! ```
//!
//! The key encrypts one file only (it is never derived from a session, since every recipient of
//! the file gets it), so nonces never repeat. A chunk put at another position, taken from another
//! blob, or offered as part of a blob of another chunk count does not open; the last chunk is
//! marked, so dropping chunks from the end cannot pass for a shorter blob. The length prefix must
//! be the length the file's description announced, the padding must be zero, and the hash is
//! checked over the whole file before anything of it may be shown.
//!
//! Flow: the sender feeds the file to an [`Encryptor`] (which draws the key) piece by piece ([`Encryptor::push`],
//! then [`Encryptor::next_tail`] until it returns `None`), holding one piece at a time. A
//! receiver checks each chunk on arrival with [`open_chunk`] (from any source, in any order) and,
//! once it holds them all, feeds them in order to a [`Decryptor`], which writes out the file's
//! bytes and checks the hash at [`Decryptor::finish`].

use blake2::{Blake2s256, Digest};
use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce, Tag};
use rand_core::CryptoRng;
use subtle::ConstantTimeEq;
use thiserror::Error;
use zeroize::Zeroizing;

use crate::kdf::label;

/// The largest file a blob holds: 25 MiB.
pub const MAX_FILE_LEN: u64 = 25 * 1024 * 1024;
/// Bytes of one encrypted chunk: the largest envelope bucket, so relays store one size.
pub const CHUNK_LEN: usize = 64 * 1024;
/// Bytes of plaintext in one chunk.
pub const PIECE_LEN: usize = CHUNK_LEN - TAG_LEN;
/// The most chunks a blob has: a 25 MiB file's count, rounded.
pub const MAX_CHUNKS: u32 = 448;

const TAG_LEN: usize = 16;
/// The file length at the start of the plaintext.
const LEN_PREFIX: usize = 8;

/// Why a file could not be encrypted, or a blob could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum BlobError {
    /// The file is longer than [`MAX_FILE_LEN`].
    #[error("the file is {len} bytes, more than the limit of {max} (25 MiB)")]
    TooLarge {
        /// The file's length.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// A description whose chunk count does not follow from its length.
    #[error("a blob of {count} chunks cannot hold a file of {len} bytes")]
    CountMismatch {
        /// The length announced.
        len: u64,
        /// The count announced.
        count: u32,
    },
    /// More or fewer file bytes than announced.
    #[error("the file has {got} bytes where {expected} were announced")]
    LengthMismatch {
        /// Bytes announced.
        expected: u64,
        /// Bytes given or found.
        got: u64,
    },
    /// A chunk that does not open here: damaged, at another position or from another blob.
    #[error("chunk {index} of the file does not open: it is damaged, misplaced or from another file")]
    BadChunk {
        /// Its position.
        index: u32,
    },
    /// Non-zero bytes after the file's end.
    #[error("the file's padding is not zero")]
    BadPadding,
    /// The blob ended before its last chunk.
    #[error("the file ended after {got} of its {count} chunks")]
    Incomplete {
        /// Chunks opened.
        got: u32,
        /// Chunks announced.
        count: u32,
    },
    /// The file opened but is not the one described.
    #[error("the file's hash does not match its description")]
    HashMismatch,
    /// A file's description that breaks one of its rules.
    #[error("the file's description is invalid: {what}")]
    InvalidDescription {
        /// The rule.
        what: &'static str,
    },
}

/// A blob's key: 32 random bytes, for one file only.
pub struct BlobKey(Zeroizing<[u8; 32]>);

impl Clone for BlobKey {
    fn clone(&self) -> Self {
        BlobKey(Zeroizing::new(*self.0))
    }
}

impl PartialEq for BlobKey {
    fn eq(&self, other: &Self) -> bool {
        bool::from(self.0[..].ct_eq(&other.0[..]))
    }
}

impl Eq for BlobKey {}

impl BlobKey {
    /// A fresh random key.
    fn generate(rng: &mut (impl CryptoRng + ?Sized)) -> BlobKey {
        let mut key = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(&mut key[..]);
        BlobKey(key)
    }

    /// The key with these bytes (from a file's description).
    pub fn from_bytes(bytes: [u8; 32]) -> BlobKey {
        BlobKey(Zeroizing::new(bytes))
    }

    /// The key's bytes, for a file's description.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    fn cipher(&self) -> ChaCha20Poly1305 {
        ChaCha20Poly1305::new(Key::from_slice(&self.0[..]))
    }
}

impl std::fmt::Debug for BlobKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BlobKey(..)")
    }
}

/// How many chunks a blob of a `file_len`-byte file has.
pub fn chunk_count(file_len: u64) -> Result<u32, BlobError> {
    if file_len > MAX_FILE_LEN {
        return Err(BlobError::TooLarge { len: file_len, max: MAX_FILE_LEN });
    }
    let pieces = (LEN_PREFIX as u64 + file_len).div_ceil(PIECE_LEN as u64);
    // At most 448 by the length check: the conversion cannot fail.
    u32::try_from(three_significant_bits(pieces))
        .map_err(|_| BlobError::TooLarge { len: file_len, max: MAX_FILE_LEN })
}

/// `n` rounded up to a number with at most three significant bits: at most 25 % more, and only
/// four sizes per doubling for a relay to tell apart.
fn three_significant_bits(n: u64) -> u64 {
    if n <= 8 {
        return n;
    }
    let unit = 1u64 << (64 - n.leading_zeros() - 3);
    n.div_ceil(unit) * unit
}

/// The associated data every chunk of a blob is sealed with.
fn associated_data(blob_id: &[u8; 16], count: u32) -> Vec<u8> {
    let mut aad = Vec::with_capacity(label::BLOB.len() + 16 + 4);
    aad.extend_from_slice(label::BLOB);
    aad.extend_from_slice(blob_id);
    aad.extend_from_slice(&count.to_be_bytes());
    aad
}

fn nonce(index: u32, count: u32) -> Nonce {
    let mut nonce = [0u8; 12];
    nonce[..4].copy_from_slice(&index.to_be_bytes());
    nonce[4] = u8::from(index + 1 == count);
    Nonce::from(nonce)
}

/// `H("NDR1/blob-hash", file)` computed as the file streams by: the same bytes `kdf::hash`
/// absorbs (the label and the file, each after its 32-bit length).
#[derive(Clone)]
struct FileHasher(Blake2s256);

impl FileHasher {
    fn new(file_len: u64) -> FileHasher {
        let mut hash = Blake2s256::new();
        let label_len = u32::try_from(label::BLOB_HASH.len()).unwrap_or(u32::MAX);
        hash.update(label_len.to_be_bytes());
        hash.update(label::BLOB_HASH);
        // At most 25 MiB (checked by the callers' chunk count).
        hash.update(u32::try_from(file_len).unwrap_or(u32::MAX).to_be_bytes());
        FileHasher(hash)
    }

    fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }

    fn finish(self) -> [u8; 32] {
        self.0.finalize().into()
    }
}

/// Encrypts one file into its chunks, holding one piece at a time, under a key of its own.
pub struct Encryptor {
    key: BlobKey,
    cipher: ChaCha20Poly1305,
    aad: Vec<u8>,
    count: u32,
    next: u32,
    piece: Zeroizing<Vec<u8>>,
    left: u64,
    file_len: u64,
    hasher: FileHasher,
}

impl std::fmt::Debug for Encryptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encryptor")
            .field("count", &self.count)
            .field("next", &self.next)
            .finish_non_exhaustive()
    }
}

impl Encryptor {
    /// Starts the blob `blob_id` of a `file_len`-byte file under a fresh key, drawn here so that
    /// no key ever encrypts a second file (its nonces would repeat).
    pub fn new(
        rng: &mut (impl CryptoRng + ?Sized),
        blob_id: &[u8; 16],
        file_len: u64,
    ) -> Result<Encryptor, BlobError> {
        let count = chunk_count(file_len)?;
        let key = BlobKey::generate(rng);
        let mut piece = Zeroizing::new(Vec::with_capacity(CHUNK_LEN));
        piece.extend_from_slice(&file_len.to_be_bytes());
        Ok(Encryptor {
            cipher: key.cipher(),
            key,
            aad: associated_data(blob_id, count),
            count,
            next: 0,
            piece,
            left: file_len,
            file_len,
            hasher: FileHasher::new(file_len),
        })
    }

    /// How many chunks the blob has.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// The blob's key, for the file's description.
    pub fn key(&self) -> &BlobKey {
        &self.key
    }

    /// Takes the file's next bytes; returns the chunks they completed, in order.
    pub fn push(&mut self, mut data: &[u8]) -> Result<Vec<Vec<u8>>, BlobError> {
        let len = data.len() as u64;
        if len > self.left {
            let got = self.file_len - self.left + len;
            return Err(BlobError::LengthMismatch { expected: self.file_len, got });
        }
        self.left -= len;
        self.hasher.update(data);
        let mut chunks = Vec::new();
        while !data.is_empty() {
            let take = (PIECE_LEN - self.piece.len()).min(data.len());
            self.piece.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.piece.len() == PIECE_LEN {
                chunks.push(self.seal_piece()?);
            }
        }
        Ok(chunks)
    }

    /// Once the whole file was pushed, the blob's remaining chunks, one per call (the last piece
    /// of the file, padded, then the padding chunks); `None` once all are out.
    pub fn next_tail(&mut self) -> Result<Option<Vec<u8>>, BlobError> {
        if self.left > 0 {
            return Err(BlobError::LengthMismatch {
                expected: self.file_len,
                got: self.file_len - self.left,
            });
        }
        if self.next == self.count {
            return Ok(None);
        }
        self.piece.resize(PIECE_LEN, 0);
        self.seal_piece().map(Some)
    }

    /// The file's hash, for its description; complete once the whole file was pushed.
    pub fn file_hash(&self) -> [u8; 32] {
        self.hasher.clone().finish()
    }

    fn seal_piece(&mut self) -> Result<Vec<u8>, BlobError> {
        let index = self.next;
        let mut chunk = Vec::with_capacity(CHUNK_LEN);
        chunk.extend_from_slice(&self.piece);
        self.piece.clear();
        let tag = self
            .cipher
            .encrypt_in_place_detached(&nonce(index, self.count), &self.aad, &mut chunk)
            .map_err(|_| BlobError::BadChunk { index })?;
        chunk.extend_from_slice(&tag);
        self.next += 1;
        Ok(chunk)
    }
}

/// Opens chunk `index` of the blob `blob_id` of `count` chunks under `key`: the piece it holds.
/// Refuses, before any decryption, a chunk of the wrong size or a position outside the blob.
pub fn open_chunk(
    key: &BlobKey,
    blob_id: &[u8; 16],
    count: u32,
    index: u32,
    chunk: &[u8],
) -> Result<Zeroizing<Vec<u8>>, BlobError> {
    open_with(&key.cipher(), &associated_data(blob_id, count), count, index, chunk)
}

fn open_with(
    cipher: &ChaCha20Poly1305,
    aad: &[u8],
    count: u32,
    index: u32,
    chunk: &[u8],
) -> Result<Zeroizing<Vec<u8>>, BlobError> {
    if chunk.len() != CHUNK_LEN || index >= count || count > MAX_CHUNKS {
        return Err(BlobError::BadChunk { index });
    }
    let (body, tag) = chunk.split_at(PIECE_LEN);
    let mut piece = Zeroizing::new(body.to_vec());
    cipher
        .decrypt_in_place_detached(&nonce(index, count), aad, &mut piece, Tag::from_slice(tag))
        .map_err(|_| BlobError::BadChunk { index })?;
    Ok(piece)
}

/// Opens a blob's chunks in order and hands out the file's bytes, checking what the file's
/// description announced: length, chunk count and hash.
pub struct Decryptor {
    cipher: ChaCha20Poly1305,
    aad: Vec<u8>,
    count: u32,
    next: u32,
    file_len: u64,
    written: u64,
    hasher: FileHasher,
    expected: [u8; 32],
}

impl std::fmt::Debug for Decryptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decryptor")
            .field("count", &self.count)
            .field("next", &self.next)
            .finish_non_exhaustive()
    }
}

impl Decryptor {
    /// Starts opening the blob `blob_id` described as `count` chunks holding a `file_len`-byte
    /// file whose hash is `file_hash`. A count that does not follow from the length is refused
    /// here, before anything is fetched.
    pub fn new(
        key: &BlobKey,
        blob_id: &[u8; 16],
        file_len: u64,
        count: u32,
        file_hash: [u8; 32],
    ) -> Result<Decryptor, BlobError> {
        if chunk_count(file_len)? != count {
            return Err(BlobError::CountMismatch { len: file_len, count });
        }
        Ok(Decryptor {
            cipher: key.cipher(),
            aad: associated_data(blob_id, count),
            count,
            next: 0,
            file_len,
            written: 0,
            hasher: FileHasher::new(file_len),
            expected: file_hash,
        })
    }

    /// Opens the next chunk and returns the file bytes it holds (none, for padding). Nothing
    /// returned may be shown before [`Decryptor::finish`] succeeds.
    pub fn push(&mut self, chunk: &[u8]) -> Result<Zeroizing<Vec<u8>>, BlobError> {
        let piece = open_with(&self.cipher, &self.aad, self.count, self.next, chunk)?;
        let mut body = &piece[..];
        if self.next == 0 {
            let (prefix, rest) = body.split_at(LEN_PREFIX);
            let mut len = [0u8; LEN_PREFIX];
            len.copy_from_slice(prefix);
            let announced = u64::from_be_bytes(len);
            if announced != self.file_len {
                return Err(BlobError::LengthMismatch { expected: self.file_len, got: announced });
            }
            body = rest;
        }
        let left = self.file_len - self.written;
        let take = usize::try_from(left).map_or(body.len(), |left| left.min(body.len()));
        let (data, padding) = body.split_at(take);
        if padding.iter().any(|&b| b != 0) {
            return Err(BlobError::BadPadding);
        }
        self.hasher.update(data);
        self.written += take as u64;
        self.next += 1;
        Ok(Zeroizing::new(data.to_vec()))
    }

    /// Checks that every chunk was opened and the file is the one described.
    pub fn finish(self) -> Result<(), BlobError> {
        if self.next != self.count {
            return Err(BlobError::Incomplete { got: self.next, count: self.count });
        }
        if bool::from(self.hasher.finish().ct_eq(&self.expected)) {
            Ok(())
        } else {
            Err(BlobError::HashMismatch)
        }
    }
}

mod access;
mod descriptor;

pub use access::{BlobSecret, BlobToken, TokenHash};
pub use descriptor::{
    Content, DESCRIPTOR_VERSION, Descriptor, DescriptorError, MAX_CAPTION_LEN, MAX_FILE_NAME_LEN,
    MAX_INLINE_LEN, MAX_MEDIA_TYPE_LEN, MAX_SOURCE_ADDRS, MAX_SOURCES, MAX_THUMBNAIL_LEN, Source,
    is_safe_name,
};

#[cfg(test)]
mod tests;
