//! The node's spool of blobs on disk (protocol §14): `<home>/blobs/out/<blob id>` holds a file we
//! send, encrypted once at send time, and `<home>/blobs/in/<message id>` a file we receive, each chunk
//! written at its place as it arrives. Both hold ciphertext only (the keys are in the sealed
//! store), as `count` chunks of `CHUNK_LEN` bytes back to back, so chunk `i` is at `i × CHUNK_LEN`.
//!
//! Everything here is blocking file I/O: callers run it on a blocking thread. Memory stays at a
//! chunk or a slice whatever the file's size.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use merpati_proto::blob::{
    self, BlobError, BlobKey, CHUNK_LEN, Decryptor, Encryptor, MAX_FILE_LEN, PIECE_LEN,
};
use merpati_proto::rand_core::CryptoRng;
use thiserror::Error;
use zeroize::Zeroizing;

/// Bytes of the length prefix at the start of a blob's plaintext.
const LEN_PREFIX: u64 = 8;
/// The most file bytes one [`Spool::read_plain`] returns.
pub(crate) const MAX_SLICE: usize = 1024 * 1024;

/// Why a spool operation failed.
#[derive(Debug, Error)]
pub(crate) enum SpoolError {
    /// A file could not be read or written.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// The file to send is larger than a blob holds.
    #[error("the file is {len} bytes: files of at most 25 MiB ({MAX_FILE_LEN} bytes) can be sent")]
    TooLarge {
        /// Its length.
        len: u64,
    },
    /// What was given to send is not a regular file (a device, a pipe, a directory).
    #[error("it is not a regular file")]
    NotAFile,
    /// The file to send changed size while it was read.
    #[error("the file changed while it was read: send it again once it is written")]
    Changed,
    /// A blob that does not open or is not the file described.
    #[error(transparent)]
    Blob(#[from] BlobError),
}

fn io_error(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> SpoolError + use<> {
    let path = path.to_path_buf();
    move |source| SpoolError::Io { what, path, source }
}

/// A file we send, as its description needs it.
pub(crate) struct Encrypted {
    /// The file's length.
    pub(crate) len: u64,
    /// Its hash.
    pub(crate) hash: [u8; 32],
    /// The blob's chunk count.
    pub(crate) count: u32,
    /// The blob's key.
    pub(crate) key: BlobKey,
}

/// The two spool directories of a home.
#[derive(Clone, Debug)]
pub(crate) struct Spool {
    dir: PathBuf,
}

impl Spool {
    /// The spool under `blobs_dir` (`<home>/blobs`).
    pub(crate) fn new(blobs_dir: PathBuf) -> Self {
        Self { dir: blobs_dir }
    }

    /// Where the blob we send with id `blob_id` is.
    pub(crate) fn outgoing(&self, blob_id: &[u8; 16]) -> PathBuf {
        self.dir.join("out").join(hex(blob_id))
    }

    /// Where the blob of the file message `message` we receive is: by the message, not the blob
    /// id its sender chose, so two descriptions naming one id cannot write into each other.
    pub(crate) fn incoming(&self, message: &[u8; 16]) -> PathBuf {
        self.dir.join("in").join(hex(message))
    }

    /// Encrypts the file at `source` into the outgoing spool as blob `blob_id`, under a key the
    /// encryptor draws, and makes it durable. Reads and holds one piece at a time.
    pub(crate) fn encrypt(
        &self,
        rng: &mut (impl CryptoRng + ?Sized),
        blob_id: &[u8; 16],
        source: &Path,
    ) -> Result<Encrypted, SpoolError> {
        if !fs::metadata(source).map_err(io_error("cannot read", source))?.is_file() {
            return Err(SpoolError::NotAFile);
        }
        let mut input = File::open(source).map_err(io_error("cannot open", source))?;
        let len = input.metadata().map_err(io_error("cannot read", source))?.len();
        if len > MAX_FILE_LEN {
            return Err(SpoolError::TooLarge { len });
        }
        let target = self.outgoing(blob_id);
        let dir = target.parent().unwrap_or(&self.dir).to_path_buf();
        create_private_dir(&dir)?;
        let partial = target.with_extension("part");
        let mut output = private_file(&partial, true)?;
        let mut encryptor = Encryptor::new(rng, blob_id, len)?;
        let mut buffer = Zeroizing::new(vec![0u8; PIECE_LEN]);
        let mut read = 0u64;
        loop {
            let n = input.read(&mut buffer[..]).map_err(io_error("cannot read", source))?;
            if n == 0 {
                break;
            }
            read += n as u64;
            if read > len {
                return Err(SpoolError::Changed);
            }
            for chunk in encryptor.push(&buffer[..n])? {
                output.write_all(&chunk).map_err(io_error("cannot write", &partial))?;
            }
        }
        if read != len {
            return Err(SpoolError::Changed);
        }
        while let Some(chunk) = encryptor.next_tail()? {
            output.write_all(&chunk).map_err(io_error("cannot write", &partial))?;
        }
        output.sync_all().map_err(io_error("cannot sync", &partial))?;
        fs::rename(&partial, &target).map_err(io_error("cannot rename", &partial))?;
        sync_dir(&dir)?;
        Ok(Encrypted {
            len,
            hash: encryptor.file_hash(),
            count: encryptor.count(),
            key: encryptor.key().clone(),
        })
    }

    /// Chunk `index` of the blob stored at `path`.
    pub(crate) fn read_chunk(path: &Path, index: u32) -> Result<Vec<u8>, SpoolError> {
        let file = File::open(path).map_err(io_error("cannot open", path))?;
        let mut chunk = vec![0u8; CHUNK_LEN];
        file.read_exact_at(&mut chunk, offset_of(index)).map_err(io_error("cannot read", path))?;
        Ok(chunk)
    }

    /// Opens (creating it, sized for `count` chunks) the incoming blob at `path` for writing.
    pub(crate) fn open_incoming(path: &Path, count: u32) -> Result<File, SpoolError> {
        if let Some(dir) = path.parent() {
            create_private_dir(dir)?;
        }
        let file = private_file(path, false)?;
        let size = offset_of(count);
        if file.metadata().map_err(io_error("cannot read", path))?.len() != size {
            file.set_len(size).map_err(io_error("cannot size", path))?;
        }
        Ok(file)
    }

    /// Writes `chunk` at its place in an incoming blob.
    pub(crate) fn write_chunk(file: &File, path: &Path, index: u32, chunk: &[u8]) -> Result<(), SpoolError> {
        file.write_all_at(chunk, offset_of(index)).map_err(io_error("cannot write", path))
    }

    /// Which chunks of the incoming blob at `path` are there and open under `key`: after a
    /// restart, what is already fetched (a chunk never written reads as zeros, which do not open).
    pub(crate) fn present(
        path: &Path,
        key: &BlobKey,
        blob_id: &[u8; 16],
        count: u32,
    ) -> Result<Vec<bool>, SpoolError> {
        let mut present = vec![false; count as usize];
        let Ok(file) = File::open(path) else { return Ok(present) };
        let mut chunk = vec![0u8; CHUNK_LEN];
        for (index, here) in (0..count).zip(present.iter_mut()) {
            if file.read_exact_at(&mut chunk, offset_of(index)).is_ok() {
                *here = blob::open_chunk(key, blob_id, count, index, &chunk).is_ok();
            }
        }
        Ok(present)
    }

    /// Checks the whole blob at `path` against its description: every chunk in order, the
    /// length, the padding and the file's hash.
    pub(crate) fn verify(
        path: &Path,
        key: &BlobKey,
        blob_id: &[u8; 16],
        len: u64,
        count: u32,
        hash: [u8; 32],
    ) -> Result<(), SpoolError> {
        let file = File::open(path).map_err(io_error("cannot open", path))?;
        let mut decryptor = Decryptor::new(key, blob_id, len, count, hash)?;
        let mut chunk = vec![0u8; CHUNK_LEN];
        for index in 0..count {
            file.read_exact_at(&mut chunk, offset_of(index)).map_err(io_error("cannot read", path))?;
            decryptor.push(&chunk)?;
        }
        decryptor.finish()?;
        Ok(())
    }

    /// Up to `max` (at most [`MAX_SLICE`]) bytes of the file in the blob at `path`, from byte
    /// `offset` of the file on; each chunk read is checked as it is opened.
    pub(crate) fn read_plain(
        path: &Path,
        key: &BlobKey,
        blob_id: &[u8; 16],
        count: u32,
        len: u64,
        offset: u64,
        max: usize,
    ) -> Result<Zeroizing<Vec<u8>>, SpoolError> {
        let file = File::open(path).map_err(io_error("cannot open", path))?;
        let end = len.min(offset.saturating_add(max.min(MAX_SLICE) as u64));
        let mut out = Zeroizing::new(Vec::with_capacity(end.saturating_sub(offset) as usize));
        let mut chunk = vec![0u8; CHUNK_LEN];
        let mut at = offset;
        while at < end {
            // File byte `at` is plaintext byte `at + 8`, in piece `(at + 8) / PIECE_LEN`.
            let plain = at + LEN_PREFIX;
            let index = u32::try_from(plain / PIECE_LEN as u64)
                .map_err(|_| BlobError::BadChunk { index: u32::MAX })?;
            file.read_exact_at(&mut chunk, offset_of(index)).map_err(io_error("cannot read", path))?;
            let piece = blob::open_chunk(key, blob_id, count, index, &chunk)?;
            let start = (plain % PIECE_LEN as u64) as usize;
            let take = (piece.len() - start).min((end - at) as usize);
            out.extend_from_slice(&piece[start..start + take]);
            at += take as u64;
        }
        Ok(out)
    }

    /// Removes the blob at `path`, if it is there.
    pub(crate) fn remove(path: &Path) {
        match fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!("cannot remove the spooled file {}: {e}", path.display()),
        }
    }

    /// The blob ids in the spool (outgoing and incoming), with their paths: for sweeping those no
    /// message refers to any more.
    pub(crate) fn list(&self) -> Vec<([u8; 16], PathBuf)> {
        let mut out = Vec::new();
        for side in ["out", "in"] {
            let Ok(entries) = fs::read_dir(self.dir.join(side)) else { continue };
            for entry in entries.flatten() {
                let path = entry.path();
                let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default();
                if let Some(id) = unhex(stem) {
                    out.push((id, path));
                }
            }
        }
        out
    }
}

fn offset_of(index: u32) -> u64 {
    u64::from(index) * CHUNK_LEN as u64
}

fn hex(id: &[u8; 16]) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<[u8; 16]> {
    if text.len() != 32 {
        return None;
    }
    let mut id = [0u8; 16];
    for (i, byte) in id.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(id)
}

fn create_private_dir(dir: &Path) -> Result<(), SpoolError> {
    use std::os::unix::fs::DirBuilderExt;
    match fs::DirBuilder::new().recursive(true).mode(0o700).create(dir) {
        Ok(()) => Ok(()),
        Err(source) => Err(SpoolError::Io { what: "cannot create", path: dir.to_path_buf(), source }),
    }
}

fn private_file(path: &Path, truncate: bool) -> Result<File, SpoolError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(truncate)
        .mode(0o600)
        .open(path)
        .map_err(io_error("cannot open", path))
}

fn sync_dir(dir: &Path) -> Result<(), SpoolError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io_error("cannot sync", dir))
}

#[cfg(test)]
mod tests;
