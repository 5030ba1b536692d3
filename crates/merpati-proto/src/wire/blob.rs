//! `/merpati/blob/1`: a relay keeps the encrypted chunks of files (protocol §14).
//!
//! The uploader creates a blob (its id, chunk count, the hash of its write token and of each
//! recipient's read token at this relay), puts its chunks one per request, and may ask which are
//! stored; a recipient gets them, up to [`MAX_GET_CHUNKS`] per request, and acks once it holds the
//! whole file. The relay drops the blob once every reader acked, on the uploader's `Delete`, or
//! when it expires. Only peers holding a relay reservation there may create blobs.
//!
//! Requests are idempotent: a repeated `Create` with the same write hash, a chunk put twice, a
//! second ack are answered as the first, so a client that lost an answer simply asks again. Once
//! the last reader has acked the blob is gone, and anything more about it gets `UnknownBlob`.

use serde::{Deserialize, Serialize};

use super::{Refusal, WireError, check_count};
use crate::blob::{BlobToken, CHUNK_LEN, MAX_CHUNKS, TokenHash};

/// The protocol name.
pub const BLOB_PROTOCOL: &str = "/merpati/blob/1";
/// The most readers (recipients) one blob may have at one relay.
pub const MAX_READERS: usize = 128;
/// The most chunks one `Get` asks for: 1 MiB, as a mailbox fetch page.
pub const MAX_GET_CHUNKS: u32 = 16;

/// A blob's id: 16 random bytes chosen by the uploader.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct BlobId(#[serde(with = "serde_bytes")] pub [u8; 16]);

/// A request to a relay's blob service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub enum Request {
    /// Reserve room for a blob of `chunks` chunks.
    Create {
        /// The blob.
        blob_id: BlobId,
        /// Its chunk count, 1 to `MAX_CHUNKS`.
        chunks: u32,
        /// The hash of the uploader's write token at this relay.
        write_hash: TokenHash,
        /// The hashes of the readers' tokens at this relay, 1 to [`MAX_READERS`].
        read_hashes: Vec<TokenHash>,
    },
    /// Store one chunk.
    Put {
        /// The uploader's write token at this relay.
        token: BlobToken,
        /// The blob.
        blob_id: BlobId,
        /// The chunk's position, below the blob's count.
        index: u32,
        /// The chunk, exactly `CHUNK_LEN` bytes.
        #[serde(with = "serde_bytes")]
        chunk: Vec<u8>,
    },
    /// Which chunks are stored (the uploader resuming).
    Status {
        /// The uploader's write token.
        token: BlobToken,
        /// The blob.
        blob_id: BlobId,
    },
    /// Chunks from `first` on.
    Get {
        /// A reader's token at this relay.
        token: BlobToken,
        /// The blob.
        blob_id: BlobId,
        /// The first chunk wanted.
        first: u32,
        /// How many, 1 to [`MAX_GET_CHUNKS`].
        count: u32,
    },
    /// The reader holds the whole file: it will not ask again.
    Ack {
        /// The reader's token.
        token: BlobToken,
        /// The blob.
        blob_id: BlobId,
    },
    /// The uploader withdraws the blob.
    Delete {
        /// The uploader's write token.
        token: BlobToken,
        /// The blob.
        blob_id: BlobId,
    },
}

impl Request {
    /// Checks every bound; a relay answers a failure with [`WireError::refusal`].
    pub fn validate(&self) -> Result<(), WireError> {
        match self {
            Self::Create { chunks, read_hashes, .. } => {
                check_count(
                    "blob chunks",
                    usize::try_from(*chunks).unwrap_or(usize::MAX),
                    MAX_CHUNKS as usize,
                )?;
                check_count("blob readers", read_hashes.len(), MAX_READERS)
            }
            Self::Put { index, chunk, .. } => {
                if *index >= MAX_CHUNKS {
                    return Err(WireError::Invalid { what: "chunk index beyond the largest blob" });
                }
                check_chunk(chunk)
            }
            Self::Get { first, count, .. } => {
                if *first >= MAX_CHUNKS {
                    return Err(WireError::Invalid { what: "chunk index beyond the largest blob" });
                }
                check_count(
                    "chunks asked for",
                    usize::try_from(*count).unwrap_or(usize::MAX),
                    MAX_GET_CHUNKS as usize,
                )
            }
            Self::Status { .. } | Self::Ack { .. } | Self::Delete { .. } => Ok(()),
        }
    }

    /// The blob the request is about.
    pub fn blob_id(&self) -> BlobId {
        match self {
            Self::Create { blob_id, .. }
            | Self::Put { blob_id, .. }
            | Self::Status { blob_id, .. }
            | Self::Get { blob_id, .. }
            | Self::Ack { blob_id, .. }
            | Self::Delete { blob_id, .. } => *blob_id,
        }
    }
}

/// A relay's answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub enum Response {
    /// The blob exists (now or already, with the same write hash).
    Created {
        /// When the relay drops it, in milliseconds since the Unix epoch.
        expires_at: u64,
    },
    /// The chunk is durably stored.
    Stored,
    /// Which chunks are stored: bit `i % 8` of byte `i / 8` for chunk `i`.
    Present {
        /// The bitmap, `ceil(chunks / 8)` bytes.
        #[serde(with = "serde_bytes")]
        stored: Vec<u8>,
    },
    /// The stored chunks from the request's `first` on, up to the first one not stored yet (none
    /// if `first` itself is missing: try again later).
    Chunks {
        /// The chunks, in order, each `CHUNK_LEN` bytes.
        chunks: Vec<serde_bytes::ByteBuf>,
    },
    /// The reader's ack is noted.
    Acked,
    /// The blob is gone.
    Deleted,
    /// The request was refused.
    Refused(Refusal),
}

impl Response {
    /// Checks the bounds a response must keep whatever it answers.
    pub fn validate(&self) -> Result<(), WireError> {
        match self {
            Self::Chunks { chunks } => {
                if chunks.len() > MAX_GET_CHUNKS as usize {
                    return Err(WireError::Count {
                        what: "chunks returned",
                        count: chunks.len(),
                        max: MAX_GET_CHUNKS as usize,
                    });
                }
                chunks.iter().try_for_each(|chunk| check_chunk(chunk))
            }
            Self::Present { stored } => {
                let max = bitmap_len(MAX_CHUNKS);
                if stored.len() > max {
                    return Err(WireError::TooLarge { what: "chunk bitmap", len: stored.len(), max });
                }
                Ok(())
            }
            Self::Created { .. } | Self::Stored | Self::Acked | Self::Deleted | Self::Refused(_) => Ok(()),
        }
    }

    /// Checks the response against the request it answers: the right kind, and no more chunks
    /// than asked for.
    pub fn validate_for(&self, request: &Request) -> Result<(), WireError> {
        self.validate()?;
        match (request, self) {
            (_, Self::Refused(_))
            | (Request::Create { .. }, Self::Created { .. })
            | (Request::Put { .. }, Self::Stored)
            | (Request::Status { .. }, Self::Present { .. })
            | (Request::Ack { .. }, Self::Acked)
            | (Request::Delete { .. }, Self::Deleted) => Ok(()),
            (Request::Get { first, count, .. }, Self::Chunks { chunks }) => {
                let room = MAX_CHUNKS.saturating_sub(*first).min(*count);
                if chunks.len() > usize::try_from(room).unwrap_or(usize::MAX) {
                    return Err(WireError::Mismatch { what: "more chunks than asked for" });
                }
                Ok(())
            }
            _ => Err(WireError::Mismatch { what: "response of the wrong kind" }),
        }
    }
}

/// The bytes of a bitmap of `chunks` chunks.
pub fn bitmap_len(chunks: u32) -> usize {
    usize::try_from(chunks.div_ceil(8)).unwrap_or(usize::MAX)
}

/// Whether chunk `index` is marked in `bitmap`.
pub fn is_marked(bitmap: &[u8], index: u32) -> bool {
    let byte = usize::try_from(index / 8).unwrap_or(usize::MAX);
    bitmap.get(byte).is_some_and(|b| b & (1 << (index % 8)) != 0)
}

fn check_chunk(chunk: &[u8]) -> Result<(), WireError> {
    if chunk.len() > CHUNK_LEN {
        return Err(WireError::TooLarge { what: "chunk", len: chunk.len(), max: CHUNK_LEN });
    }
    if chunk.len() != CHUNK_LEN {
        return Err(WireError::Invalid { what: "chunk shorter than a chunk's length" });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token() -> BlobToken {
        BlobToken([1; 32])
    }

    const ID: BlobId = BlobId([2; 16]);

    fn create(chunks: u32, readers: usize) -> Request {
        Request::Create {
            blob_id: ID,
            chunks,
            write_hash: token().hash(),
            read_hashes: vec![token().hash(); readers],
        }
    }

    #[test]
    fn request_bounds() {
        assert_eq!(create(MAX_CHUNKS, MAX_READERS).validate(), Ok(()));
        assert!(create(0, 1).validate().is_err());
        assert!(create(MAX_CHUNKS + 1, 1).validate().is_err());
        assert!(create(1, 0).validate().is_err());
        assert!(create(1, MAX_READERS + 1).validate().is_err());
        let put = |index, len| Request::Put { token: token(), blob_id: ID, index, chunk: vec![0; len] };
        assert_eq!(put(MAX_CHUNKS - 1, CHUNK_LEN).validate(), Ok(()));
        assert!(put(MAX_CHUNKS, CHUNK_LEN).validate().is_err());
        assert!(put(0, CHUNK_LEN - 1).validate().is_err());
        let big = put(0, CHUNK_LEN + 1).validate().expect_err("too large");
        assert_eq!(big.refusal(), Refusal::TooLarge { max: CHUNK_LEN as u32 });
        let get = |first, count| Request::Get { token: token(), blob_id: ID, first, count };
        assert_eq!(get(0, MAX_GET_CHUNKS).validate(), Ok(()));
        assert!(get(0, 0).validate().is_err());
        assert!(get(0, MAX_GET_CHUNKS + 1).validate().is_err());
        assert!(get(MAX_CHUNKS, 1).validate().is_err());
    }

    #[test]
    fn responses_must_answer_their_request() {
        let get = Request::Get { token: token(), blob_id: ID, first: MAX_CHUNKS - 2, count: 16 };
        let chunks = |n| Response::Chunks { chunks: vec![serde_bytes::ByteBuf::from(vec![0; CHUNK_LEN]); n] };
        assert_eq!(chunks(2).validate_for(&get), Ok(()));
        assert!(chunks(3).validate_for(&get).is_err(), "past the largest blob");
        assert_eq!(chunks(0).validate_for(&get), Ok(()));
        let short = Response::Chunks { chunks: vec![serde_bytes::ByteBuf::from(vec![0; 10])] };
        assert!(short.validate_for(&get).is_err());
        assert!(Response::Stored.validate_for(&get).is_err(), "wrong kind");
        assert_eq!(Response::Refused(Refusal::UnknownBlob).validate_for(&get), Ok(()));
        let status = Request::Status { token: token(), blob_id: ID };
        assert_eq!(Response::Present { stored: vec![0xff; 56] }.validate_for(&status), Ok(()));
        assert!(Response::Present { stored: vec![0xff; 57] }.validate_for(&status).is_err());
    }

    #[test]
    fn bitmaps() {
        assert_eq!(bitmap_len(1), 1);
        assert_eq!(bitmap_len(8), 1);
        assert_eq!(bitmap_len(9), 2);
        assert_eq!(bitmap_len(MAX_CHUNKS), 56);
        let map = [0b0000_0101, 0b1000_0000];
        assert!(is_marked(&map, 0) && !is_marked(&map, 1) && is_marked(&map, 2) && is_marked(&map, 15));
        assert!(!is_marked(&map, 16), "beyond the bitmap");
    }

    #[test]
    fn requests_round_trip_through_cbor_shapes() {
        // serde_json stands in for CBOR: the same derive, so a field rename shows here.
        let request = Request::Put { token: token(), blob_id: ID, index: 3, chunk: vec![9; CHUNK_LEN] };
        let json = serde_json::to_vec(&request).expect("encode");
        assert_eq!(serde_json::from_slice::<Request>(&json).expect("decode"), request);
    }
}
