//! Storage keys: the keys that seal session records and the profile at rest, kept in a small file
//! beside the database so that destroying a key makes every copy of what it sealed unreadable
//! (crypto-shredding).
//!
//! Why: forward secrecy means a key deleted today cannot be recovered from the device tomorrow.
//! sled never overwrites the bytes of a replaced or deleted value in place (it appends to its log
//! and reuses space later, if ever), so a deleted session key stays in the database files. Sealing
//! every record that holds key material under a storage key, and periodically re-sealing them
//! under a fresh key and destroying the old one ([`crate::store::SledStore::rotate_storage_key`]),
//! turns all those stale copies into ciphertext under a key that no longer exists.
//!
//! Sealing is XChaCha20-Poly1305 with a random 24-byte nonce (random nonces are safe at this size,
//! so no counter has to survive crashes). Sealed bytes: key id (u32 BE) ‖ nonce (24) ‖
//! ciphertext ‖ tag (16). The caller binds where the record is stored as associated data.
//!
//! The key file (`storage-keys`, mode 0600) holds up to [`MAX_KEYS`] keys, oldest first; the last
//! is the current one, which seals. Layout: `b"merpati-keys"` ‖ version (u8) ‖ count (u8) ‖
//! count × (id u32 BE ‖ created at u64 BE ms ‖ key 32) ‖ checksum (32, BLAKE2s of what precedes,
//! so a damaged file is reported as such rather than as records that fail to open). It is
//! replaced atomically: the new content goes to a temporary file that is synced and renamed over
//! the old one, the directory is synced, and then the old file's bytes are overwritten with zeros
//! through a handle opened before the rename. Zeroing after the rename (rather than before) means
//! a crash never leaves the device without a key file that opens its records; the cost is that a
//! crash in that short window leaves the old bytes unzeroed.
//!
//! Limits, honestly: overwriting a file's bytes does not guarantee that the old bytes are gone
//! from the medium. SSDs and flash remap writes (wear levelling) and keep old blocks until their
//! firmware erases them; copy-on-write and log-structured filesystems (btrfs, ZFS, APFS, F2FS)
//! write the zeros elsewhere; ext4 with `data=journal` keeps copies in its journal; snapshots and
//! backups keep whatever they captured. The database files themselves are never overwritten.
//! What crypto-shredding does guarantee is narrower and still useful: once a rotation completes,
//! nothing the store writes from then on can decrypt an old record, so an attacker needs the old
//! key file's bytes from below the filesystem, not just a copy of the database. Full-disk
//! encryption is the complement that covers the rest.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{PoisonError, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use chacha20poly1305::aead::AeadInPlace;
use chacha20poly1305::{Key, KeyInit, Tag, XChaCha20Poly1305, XNonce};
use merpati_proto::Timestamp;
use merpati_proto::kdf;
use merpati_proto::keys::SymmetricKey;
use rand_core::CryptoRng;
use thiserror::Error;
use zeroize::Zeroizing;

/// The key file's name inside the store directory.
pub const KEY_FILE: &str = "storage-keys";
/// The most keys the file holds: the current one plus old ones a rotation has not yet destroyed.
pub const MAX_KEYS: usize = 8;
/// Bytes a sealed record adds to its plaintext: key id, nonce and tag.
pub const SEAL_OVERHEAD: usize = HEADER_LEN + TAG_LEN;

const MAGIC: &[u8; 12] = b"merpati-keys";
const FILE_VERSION: u8 = 1;
const FILE_HEADER_LEN: usize = MAGIC.len() + 2;
const ENTRY_LEN: usize = 4 + 8 + 32;
const CHECKSUM_LEN: usize = 32;
const MAX_FILE_LEN: usize = FILE_HEADER_LEN + MAX_KEYS * ENTRY_LEN + CHECKSUM_LEN;
/// Domain separation for the key file checksum.
const CHECKSUM_LABEL: &[u8] = b"merpati/storage-keys/checksum/v1";
const NONCE_LEN: usize = 24;
const HEADER_LEN: usize = 4 + NONCE_LEN;
const TAG_LEN: usize = 16;

/// Why the keyring failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum KeyringError {
    /// Reading or writing the key file failed.
    #[error("storage key file {}: {source}", path.display())]
    Io {
        /// The key file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// The key file is damaged or is not a key file.
    #[error("storage key file {} is unusable: {reason}", path.display())]
    Corrupt {
        /// The key file.
        path: PathBuf,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The key file can be read by other users.
    #[error("storage key file {} is accessible to other users (mode {mode:o}); chmod 600 it", path.display())]
    Permissions {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The file already holds [`MAX_KEYS`] keys: earlier rotations did not finish destroying
    /// old keys.
    #[error("storage key file is full ({MAX_KEYS} keys); finish the pending rotation first")]
    Full,
    /// The random number generator kept repeating itself while choosing a key id.
    #[error("random number generator returned repeated values")]
    WeakRandom,
    /// The operating system's random number generator failed.
    #[error("operating system random number generator failed: {0}")]
    Random(getrandom::Error),
    /// A sealed record names a key that is not in the file.
    #[error("no storage key with id {id:08x}")]
    UnknownKey {
        /// The key id the record names.
        id: u32,
    },
    /// Sealed bytes are malformed, were altered, or were moved from another record.
    #[error("sealed record is malformed or did not authenticate")]
    Unauthentic,
    /// Encryption refused its input (only for inputs of hundreds of gigabytes).
    #[error("could not seal record")]
    SealFailed,
}

/// A storage key's public facts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyInfo {
    /// Its id, written in front of everything it seals.
    pub id: u32,
    /// When it was created.
    pub created_at: Timestamp,
}

struct StorageKey {
    info: KeyInfo,
    key: SymmetricKey,
}

/// The storage keys of one database, loaded from their file.
pub struct Keyring {
    path: PathBuf,
    /// Oldest first; the last one seals. Never empty. Allocated for [`MAX_KEYS`] up front so that
    /// adding a key never moves the others and leaves copies of them in freed memory.
    keys: RwLock<Vec<StorageKey>>,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring").field("path", &self.path).field("keys", &self.keys()).finish()
    }
}

impl Keyring {
    /// Loads the key file at `path`, or creates it with one fresh key if there is none.
    ///
    /// Refuses a file other users can access, and a damaged one. A key file must stay with its
    /// database: a new one cannot open records sealed under the old one.
    pub fn open_or_create(
        path: impl Into<PathBuf>,
        rng: &mut (impl CryptoRng + ?Sized),
    ) -> Result<Self, KeyringError> {
        let path = path.into();
        let keys = match read_file(&path)? {
            Some(keys) => keys,
            None => {
                let mut keys = Vec::with_capacity(MAX_KEYS);
                keys.push(StorageKey {
                    info: KeyInfo { id: fresh_id(&[], rng)?, created_at: now() },
                    key: SymmetricKey::generate(rng),
                });
                write_file(&path, &keys)?;
                keys
            }
        };
        Ok(Self { path, keys: RwLock::new(keys) })
    }

    /// The key file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The key that seals.
    pub fn current(&self) -> KeyInfo {
        // Never empty: every constructor and every update leaves at least one key.
        self.read().last().map_or(KeyInfo { id: 0, created_at: Timestamp(0) }, |k| k.info)
    }

    /// Every key in the file, oldest first (more than one only while a rotation is under way).
    pub fn keys(&self) -> Vec<KeyInfo> {
        self.read().iter().map(|k| k.info).collect()
    }

    /// The id of the key that sealed `sealed`, if it is long enough to name one.
    pub fn key_id_of(sealed: &[u8]) -> Option<u32> {
        sealed.first_chunk::<4>().map(|id| u32::from_be_bytes(*id))
    }

    /// Seals `plaintext` under the current key, binding `aad`.
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, KeyringError> {
        let keys = self.read();
        let current = keys.last().ok_or(KeyringError::UnknownKey { id: 0 })?;
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).map_err(KeyringError::Random)?;
        // Encrypted in place, in a buffer sized once: no copy of the plaintext is left behind,
        // even if encryption fails.
        let mut out = Zeroizing::new(Vec::with_capacity(SEAL_OVERHEAD + plaintext.len()));
        out.extend_from_slice(&current.info.id.to_be_bytes());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plaintext);
        let cipher = XChaCha20Poly1305::new(Key::from_slice(current.key.as_bytes()));
        let tag = cipher
            .encrypt_in_place_detached(XNonce::from_slice(&nonce), aad, &mut out[HEADER_LEN..])
            .map_err(|_| KeyringError::SealFailed)?;
        out.extend_from_slice(&tag);
        Ok(std::mem::take(&mut *out))
    }

    /// Opens sealed bytes with the key they name, checking `aad`. The plaintext is zeroized
    /// when dropped.
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, KeyringError> {
        let id = Self::key_id_of(sealed).ok_or(KeyringError::Unauthentic)?;
        if sealed.len() < SEAL_OVERHEAD {
            return Err(KeyringError::Unauthentic);
        }
        let (header, rest) = sealed.split_at(HEADER_LEN);
        let (ciphertext, tag) = rest.split_at(rest.len() - TAG_LEN);
        let keys = self.read();
        let key = keys.iter().find(|k| k.info.id == id).ok_or(KeyringError::UnknownKey { id })?;
        let mut plaintext = Zeroizing::new(ciphertext.to_vec());
        XChaCha20Poly1305::new(Key::from_slice(key.key.as_bytes()))
            .decrypt_in_place_detached(
                XNonce::from_slice(&header[4..]),
                aad,
                &mut plaintext,
                Tag::from_slice(tag),
            )
            .map_err(|_| KeyringError::Unauthentic)?;
        Ok(plaintext)
    }

    /// Adds a fresh key, which becomes the current one, and writes the file. The old keys stay
    /// until [`Keyring::destroy_old_keys`]: records sealed under them must be re-sealed first.
    pub(crate) fn add_key(&self, rng: &mut (impl CryptoRng + ?Sized)) -> Result<KeyInfo, KeyringError> {
        let mut keys = self.keys.write().unwrap_or_else(PoisonError::into_inner);
        if keys.len() >= MAX_KEYS {
            return Err(KeyringError::Full);
        }
        let info = KeyInfo { id: fresh_id(&keys, rng)?, created_at: now() };
        // The file first: a key that seals anything must already be on disk.
        keys.push(StorageKey { info, key: SymmetricKey::generate(rng) });
        if let Err(e) = write_file(&self.path, &keys) {
            keys.pop();
            return Err(e);
        }
        Ok(info)
    }

    /// Destroys every key but the current one: rewrites the file without them (zeroing the old
    /// file) and forgets them. Returns how many were destroyed.
    pub(crate) fn destroy_old_keys(&self) -> Result<usize, KeyringError> {
        let mut keys = self.keys.write().unwrap_or_else(PoisonError::into_inner);
        let old = keys.len().saturating_sub(1);
        if old == 0 {
            return Ok(0);
        }
        write_file(&self.path, &keys[old..])?;
        // Dropping a `SymmetricKey` zeroizes it.
        keys.drain(..old);
        Ok(old)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Vec<StorageKey>> {
        // The keys are only changed after the file write succeeded, so a panic elsewhere cannot
        // leave them half-updated: a poisoned lock is still consistent.
        self.keys.read().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A key id not used by `keys`. Random, so that a key file from another database (or a freshly
/// created one after the real one was lost) names different ids and is reported as missing keys,
/// not as damaged records.
fn fresh_id(keys: &[StorageKey], rng: &mut (impl CryptoRng + ?Sized)) -> Result<u32, KeyringError> {
    for _ in 0..8 {
        let id = rng.next_u32();
        if !keys.iter().any(|k| k.info.id == id) {
            return Ok(id);
        }
    }
    Err(KeyringError::WeakRandom)
}

fn now() -> Timestamp {
    let millis = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis());
    Timestamp(u64::try_from(millis).unwrap_or(u64::MAX))
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> KeyringError + '_ {
    move |source| KeyringError::Io { path: path.to_path_buf(), source }
}

fn corrupt(path: &Path, reason: &'static str) -> KeyringError {
    KeyringError::Corrupt { path: path.to_path_buf(), reason }
}

/// Reads and checks the key file; `None` if there is none.
fn read_file(path: &Path) -> Result<Option<Vec<StorageKey>>, KeyringError> {
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_error(path)(e)),
    };
    check_private(&file, path)?;
    // One byte more than the largest valid file, so an oversized one is detected without reading
    // all of it; sized once so that no copy of the keys is left in freed memory.
    let mut buf = Zeroizing::new(vec![0u8; MAX_FILE_LEN + 1]);
    let mut len = 0;
    while len < buf.len() {
        match file.read(&mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_error(path)(e)),
        }
    }
    parse(path, &buf[..len]).map(Some)
}

fn parse(path: &Path, bytes: &[u8]) -> Result<Vec<StorageKey>, KeyringError> {
    if bytes.len() > MAX_FILE_LEN {
        return Err(corrupt(path, "file too large"));
    }
    if bytes.len() < FILE_HEADER_LEN + CHECKSUM_LEN || !bytes.starts_with(MAGIC) {
        return Err(corrupt(path, "not a Merpati storage key file"));
    }
    match bytes[MAGIC.len()] {
        FILE_VERSION => {}
        v if v > FILE_VERSION => return Err(corrupt(path, "written by a newer merpatid")),
        _ => return Err(corrupt(path, "unknown format version")),
    }
    let count = usize::from(bytes[MAGIC.len() + 1]);
    if count == 0 || count > MAX_KEYS {
        return Err(corrupt(path, "bad key count"));
    }
    if bytes.len() != FILE_HEADER_LEN + count * ENTRY_LEN + CHECKSUM_LEN {
        return Err(corrupt(path, "truncated or overlong"));
    }
    let (content, checksum) = bytes.split_at(bytes.len() - CHECKSUM_LEN);
    if kdf::hash(CHECKSUM_LABEL, &[content]) != *checksum {
        return Err(corrupt(path, "checksum mismatch"));
    }
    let mut keys: Vec<StorageKey> = Vec::with_capacity(MAX_KEYS);
    for entry in content[FILE_HEADER_LEN..].chunks_exact(ENTRY_LEN) {
        let (id, rest) = entry.split_at(4);
        let (created_at, key) = rest.split_at(8);
        let id = u32::from_be_bytes(id.try_into().map_err(|_| corrupt(path, "bad entry"))?);
        let created_at = u64::from_be_bytes(created_at.try_into().map_err(|_| corrupt(path, "bad entry"))?);
        let key = Zeroizing::new(<[u8; 32]>::try_from(key).map_err(|_| corrupt(path, "bad entry"))?);
        if keys.iter().any(|k| k.info.id == id) {
            return Err(corrupt(path, "two keys share an id"));
        }
        keys.push(StorageKey {
            info: KeyInfo { id, created_at: Timestamp(created_at) },
            key: SymmetricKey::from(key),
        });
    }
    Ok(keys)
}

fn serialize(keys: &[StorageKey]) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::with_capacity(MAX_FILE_LEN));
    out.extend_from_slice(MAGIC);
    out.push(FILE_VERSION);
    // At most MAX_KEYS, enforced by `add_key`.
    out.push(u8::try_from(keys.len()).unwrap_or(u8::MAX));
    for k in keys {
        out.extend_from_slice(&k.info.id.to_be_bytes());
        out.extend_from_slice(&k.info.created_at.0.to_be_bytes());
        out.extend_from_slice(k.key.as_bytes());
    }
    let checksum = kdf::hash(CHECKSUM_LABEL, &[&out]);
    out.extend_from_slice(&checksum);
    out
}

/// Replaces the key file atomically, then zeroes the old file's bytes.
fn write_file(path: &Path, keys: &[StorageKey]) -> Result<(), KeyringError> {
    let content = serialize(keys);
    let tmp = temp_path(path);
    // A leftover from a crash mid-write may hold keys: shred it before reusing the name.
    if tmp.exists() {
        shred(&tmp).map_err(io_error(&tmp))?;
    }
    let old = match OpenOptions::new().write(true).open(path) {
        Ok(file) => Some(file),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(io_error(path)(e)),
    };
    let mut file = create_private(&tmp).map_err(io_error(&tmp))?;
    file.write_all(&content).and_then(|()| file.sync_all()).map_err(io_error(&tmp))?;
    drop(file);
    fs::rename(&tmp, path).map_err(io_error(path))?;
    sync_dir(path).map_err(io_error(path))?;
    // `old` still refers to the replaced file; its bytes are overwritten in place.
    if let Some(old) = old {
        overwrite_with_zeros(&old).map_err(io_error(path))?;
    }
    Ok(())
}

fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".tmp");
    path.with_file_name(name)
}

fn overwrite_with_zeros(mut file: &File) -> io::Result<()> {
    let mut left = file.metadata()?.len();
    let zeros = [0u8; 4096];
    while left > 0 {
        let n = usize::try_from(left).unwrap_or(usize::MAX).min(zeros.len());
        file.write_all(&zeros[..n])?;
        left -= n as u64;
    }
    file.sync_all()
}

fn shred(path: &Path) -> io::Result<()> {
    overwrite_with_zeros(&OpenOptions::new().write(true).open(path)?)?;
    fs::remove_file(path)
}

fn sync_dir(path: &Path) -> io::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    File::open(dir)?.sync_all()
}

#[cfg(unix)]
fn create_private(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)
}

#[cfg(not(unix))]
fn create_private(path: &Path) -> io::Result<File> {
    OpenOptions::new().write(true).create_new(true).open(path)
}

#[cfg(unix)]
fn check_private(file: &File, path: &Path) -> Result<(), KeyringError> {
    use std::os::unix::fs::PermissionsExt;
    let mode = file.metadata().map_err(io_error(path))?.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(KeyringError::Permissions { path: path.to_path_buf(), mode });
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_private(_file: &File, _path: &Path) -> Result<(), KeyringError> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    use super::*;

    fn keyring(dir: &Path, seed: u64) -> Keyring {
        Keyring::open_or_create(dir.join(KEY_FILE), &mut ChaCha20Rng::seed_from_u64(seed)).expect("keyring")
    }

    #[test]
    fn seal_open_round_trip_and_bindings() {
        let dir = tempfile::tempdir().expect("dir");
        let ring = keyring(dir.path(), 1);
        let sealed = ring.seal(b"aad", b"secret state").expect("seal");
        assert_eq!(sealed.len(), 12 + SEAL_OVERHEAD);
        assert_eq!(Keyring::key_id_of(&sealed), Some(ring.current().id));
        assert_eq!(&ring.open(b"aad", &sealed).expect("open")[..], b"secret state");
        // Fresh nonce every time.
        assert_ne!(ring.seal(b"aad", b"secret state").expect("seal"), sealed);
        assert!(matches!(ring.open(b"other", &sealed), Err(KeyringError::Unauthentic)));
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 1;
            assert!(ring.open(b"aad", &bad).is_err(), "flip at {i} accepted");
        }
        for len in 0..sealed.len() {
            assert!(ring.open(b"aad", &sealed[..len]).is_err(), "truncation to {len} accepted");
        }
    }

    #[test]
    fn file_round_trips_and_is_private() {
        let dir = tempfile::tempdir().expect("dir");
        let ring = keyring(dir.path(), 2);
        let sealed = ring.seal(b"a", b"b").expect("seal");
        // A different seed: the key must come from the file, not from the rng.
        let again = keyring(dir.path(), 3);
        assert_eq!(again.keys(), ring.keys());
        assert_eq!(&again.open(b"a", &sealed).expect("open")[..], b"b");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(ring.path()).expect("meta").permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
            fs::set_permissions(ring.path(), fs::Permissions::from_mode(0o644)).expect("chmod");
            let err =
                Keyring::open_or_create(ring.path(), &mut ChaCha20Rng::seed_from_u64(4)).expect_err("open");
            assert!(matches!(err, KeyringError::Permissions { mode: 0o644, .. }), "{err}");
        }
    }

    #[test]
    fn damaged_files_are_refused_without_panicking() {
        let dir = tempfile::tempdir().expect("dir");
        let ring = keyring(dir.path(), 5);
        ring.add_key(&mut ChaCha20Rng::seed_from_u64(6)).expect("add");
        let good = fs::read(ring.path()).expect("read");
        let write = |bytes: &[u8]| {
            let _ = fs::remove_file(ring.path());
            let mut f = create_private(ring.path()).expect("create");
            f.write_all(bytes).expect("write");
        };
        for len in 0..good.len() {
            write(&good[..len]);
            let err = Keyring::open_or_create(ring.path(), &mut ChaCha20Rng::seed_from_u64(7))
                .expect_err("truncated");
            assert!(matches!(err, KeyringError::Corrupt { .. }), "{err}");
        }
        for i in 0..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0x10;
            write(&bad);
            let err = Keyring::open_or_create(ring.path(), &mut ChaCha20Rng::seed_from_u64(7))
                .expect_err("flipped");
            assert!(matches!(err, KeyringError::Corrupt { .. }), "{err}");
        }
        let mut long = good.clone();
        long.resize(MAX_FILE_LEN * 3, 0);
        write(&long);
        assert!(Keyring::open_or_create(ring.path(), &mut ChaCha20Rng::seed_from_u64(7)).is_err());
    }

    #[test]
    fn destroying_old_keys_rewrites_and_zeroes_the_old_file() {
        let dir = tempfile::tempdir().expect("dir");
        let ring = keyring(dir.path(), 8);
        let old = ring.current();
        let old_sealed = ring.seal(b"a", b"old").expect("seal");
        // A second name for the current file's inode shows what happens to its bytes.
        let link = dir.path().join("old-inode");
        fs::hard_link(ring.path(), &link).expect("link");
        let new = ring.add_key(&mut ChaCha20Rng::seed_from_u64(9)).expect("add");
        assert_ne!(new.id, old.id);
        assert_eq!(ring.keys(), vec![old, new]);
        assert!(fs::read(&link).expect("link").iter().all(|&b| b == 0), "the replaced file was not zeroed");
        // Both keys open during a rotation; the new one seals.
        assert!(ring.open(b"a", &old_sealed).is_ok());
        assert_eq!(Keyring::key_id_of(&ring.seal(b"a", b"new").expect("seal")), Some(new.id));

        assert_eq!(ring.destroy_old_keys().expect("destroy"), 1);
        assert_eq!(ring.keys(), vec![new]);
        assert!(matches!(ring.open(b"a", &old_sealed), Err(KeyringError::UnknownKey { id }) if id == old.id));
        let reopened = keyring(dir.path(), 10);
        assert_eq!(reopened.keys(), vec![new]);
        assert!(!dir.path().join("storage-keys.tmp").exists());
        assert_eq!(ring.destroy_old_keys().expect("nothing to destroy"), 0);
    }

    #[test]
    fn the_file_holds_a_bounded_number_of_keys() {
        let dir = tempfile::tempdir().expect("dir");
        let ring = keyring(dir.path(), 11);
        let mut rng = ChaCha20Rng::seed_from_u64(12);
        for _ in 1..MAX_KEYS {
            ring.add_key(&mut rng).expect("add");
        }
        assert!(matches!(ring.add_key(&mut rng), Err(KeyringError::Full)));
        assert_eq!(keyring(dir.path(), 13).keys().len(), MAX_KEYS);
    }

    #[test]
    fn debug_shows_no_key_bytes() {
        let dir = tempfile::tempdir().expect("dir");
        let ring = keyring(dir.path(), 14);
        let debug = format!("{ring:?}");
        let file = fs::read(ring.path()).expect("read");
        let key = &file[FILE_HEADER_LEN + 12..FILE_HEADER_LEN + 44];
        let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
        assert!(!debug.contains(&hex[..16]) && !debug.contains(&format!("{:?}", &key[..4])), "{debug}");
    }
}
