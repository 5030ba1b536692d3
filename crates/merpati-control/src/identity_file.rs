//! The identity file: the long-term secrets `merpati init` creates before any daemon runs.
//!
//! Binary layout, integers big-endian (written with `merpati_proto::codec`), exactly
//! [`ENCODED_LEN_MIN`]..=[`MAX_FILE_LEN`] bytes:
//!
//! ```text
//! magic "MERPATI-ID" (10) ‖ version (u8, 1) ‖ identity seed (32) ‖ device static secret (32) ‖
//! inbox secret (32) ‖ name (u8 length ‖ UTF-8, length 0 for none, at most 64 bytes) ‖
//! created at (u64 ms) ‖ checksum (16)
//! ```
//!
//! `checksum = H("MERPATI-ID/checksum" ‖ everything before it)[..16]`: a flipped bit in a secret
//! would otherwise load as a different identity without any error. The file is written once,
//! atomically, with mode 0600, and never overwritten. Buffers holding the encoding are zeroized.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use merpati_proto::Timestamp;
use merpati_proto::codec::{DecodeError, Reader, Writer};
use merpati_proto::identity::{IdentityKey, fingerprint};
use merpati_proto::invite::MAX_NAME_LEN;
use merpati_proto::kdf;
use merpati_proto::keys::{SymmetricKey, X25519Secret};
use merpati_proto::rand_core::CryptoRng;
use thiserror::Error;
use zeroize::Zeroizing;

use crate::home::HomeError;
use crate::protocol::check_name;

/// The first bytes of every identity file.
pub const MAGIC: &[u8; 10] = b"MERPATI-ID";
/// The format version this code writes and reads.
pub const VERSION: u8 = 1;
/// The shortest valid file (no name), in bytes.
pub const ENCODED_LEN_MIN: usize = MAGIC.len() + 1 + 3 * 32 + 1 + 8 + CHECKSUM_LEN;
/// The longest valid file, in bytes; `load` reads no more than one byte past this.
pub const MAX_FILE_LEN: usize = ENCODED_LEN_MIN + MAX_NAME_LEN;

/// Domain separation for the checksum.
const CHECKSUM_LABEL: &[u8] = b"MERPATI-ID/checksum";
const CHECKSUM_LEN: usize = 16;

/// Why identity file bytes do not decode. Never carries the bytes themselves.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum FormatError {
    /// The file does not start with [`MAGIC`].
    #[error("it is not a Merpati identity file")]
    NotAnIdentityFile,
    /// A version this code cannot read.
    #[error("format version {found} is not supported")]
    UnsupportedVersion {
        /// The version byte.
        found: u8,
    },
    /// Longer than any identity file.
    #[error("it is longer than any identity file")]
    TooLong,
    /// The checksum does not match: the file was damaged.
    #[error("its checksum does not match")]
    Checksum,
    /// The name is not valid UTF-8 or not a valid name.
    #[error("the name in it is invalid")]
    InvalidName,
    /// A field is missing or malformed.
    #[error("{0}")]
    Decode(#[from] DecodeError),
}

/// A node's long-term secrets and its own display name.
#[derive(Debug)]
pub struct IdentityFile {
    /// The format version ([`VERSION`]).
    pub version: u8,
    /// The ed25519 identity key.
    pub identity: IdentityKey,
    /// This device's static X25519 key, certified by the identity.
    pub device_static: X25519Secret,
    /// The secret the first-contact inbox mailbox printed in invites derives from.
    pub inbox_secret: SymmetricKey,
    /// The name suggested to contacts in invites, if any.
    pub name: Option<String>,
    /// When the identity was created.
    pub created_at: Timestamp,
}

impl IdentityFile {
    /// Fresh keys from `rng`. `name` must pass [`check_name`] and fit an invite (64 bytes of
    /// UTF-8); an empty name counts as none.
    pub fn create(
        rng: &mut (impl CryptoRng + ?Sized),
        name: Option<String>,
        now: Timestamp,
    ) -> Result<IdentityFile, HomeError> {
        let name = name.filter(|n| !n.is_empty());
        if let Some(name) = &name {
            check_name(name)?;
            if name.len() > MAX_NAME_LEN {
                return Err(HomeError::NameTooLong { bytes: name.len() });
            }
        }
        Ok(IdentityFile {
            version: VERSION,
            identity: IdentityKey::generate(rng),
            device_static: X25519Secret::generate(rng),
            inbox_secret: SymmetricKey::generate(rng),
            name,
            created_at: now,
        })
    }

    /// The identity's fingerprint (`merpati_proto::identity::fingerprint`).
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.identity.public())
    }

    /// The file's bytes, in a buffer zeroized on drop.
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        let name = self.name.as_deref().unwrap_or("");
        let len = ENCODED_LEN_MIN + name.len();
        // Exactly the right capacity, so the writer never reallocates and leaves a copy behind.
        let mut w = Writer::with_capacity(len);
        w.raw(MAGIC)
            .u8(self.version)
            .raw(&self.identity.to_bytes()[..])
            .raw(self.device_static.as_bytes())
            .raw(self.inbox_secret.as_bytes())
            .bytes_u8(name.as_bytes())
            .u64(self.created_at.0);
        let mut bytes = Zeroizing::new(w.into_bytes());
        let checksum = checksum(&bytes);
        bytes.extend_from_slice(&checksum);
        bytes
    }

    /// Decodes a file's bytes. Never panics, whatever the input.
    pub fn from_bytes(bytes: &[u8]) -> Result<IdentityFile, FormatError> {
        if bytes.len() > MAX_FILE_LEN {
            return Err(FormatError::TooLong);
        }
        let mut r = Reader::new(bytes);
        if r.take(MAGIC.len(), "magic").ok() != Some(&MAGIC[..]) {
            return Err(FormatError::NotAnIdentityFile);
        }
        let version = r.u8("version")?;
        if version != VERSION {
            return Err(FormatError::UnsupportedVersion { found: version });
        }
        // Check the checksum before looking at any field, so damage is reported as such.
        let Some(body_len) = bytes.len().checked_sub(CHECKSUM_LEN) else {
            return Err(DecodeError::Truncated { what: "checksum" }.into());
        };
        if body_len < MAGIC.len() + 1 {
            return Err(DecodeError::Truncated { what: "checksum" }.into());
        }
        let (body, stored) = bytes.split_at(body_len);
        if checksum(body)[..] != stored[..] {
            return Err(FormatError::Checksum);
        }
        let mut r = Reader::new(&body[MAGIC.len() + 1..]);
        let identity = IdentityKey::from_bytes(&Zeroizing::new(r.array::<32>("identity key")?));
        let device_static = X25519Secret::from_bytes(*Zeroizing::new(r.array::<32>("device static key")?));
        let inbox_secret = SymmetricKey::from_bytes(*Zeroizing::new(r.array::<32>("inbox secret")?));
        let name = r.bytes_u8(MAX_NAME_LEN, "name")?;
        let name = match name {
            [] => None,
            name => {
                let name = std::str::from_utf8(name).map_err(|_| FormatError::InvalidName)?;
                check_name(name).map_err(|_| FormatError::InvalidName)?;
                Some(name.to_owned())
            }
        };
        let created_at = Timestamp(r.u64("creation time")?);
        r.finish()?;
        Ok(IdentityFile { version, identity, device_static, inbox_secret, name, created_at })
    }

    /// Writes the file at `path`, atomically and only if nothing is there yet: the bytes go to a
    /// temporary file (mode 0600) in the same directory, are synced, then hard-linked into place,
    /// which fails rather than replaces if `path` exists — even if another process created it a
    /// moment ago. The directory must exist.
    pub fn save_new(&self, path: &Path) -> Result<(), HomeError> {
        if path.symlink_metadata().is_ok() {
            return Err(HomeError::AlreadyInitialised { path: path.to_owned() });
        }
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        let file_name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let temp = dir.join(format!(".{file_name}.{}.tmp", std::process::id()));
        let result = self.write_temp(&temp).and_then(|()| link_into_place(&temp, path));
        // Whatever happened, the temporary name must not linger (it holds secrets).
        let _ = fs::remove_file(&temp);
        result?;
        // Make the new directory entry durable too.
        File::open(dir).and_then(|d| d.sync_all()).map_err(|source| HomeError::Io {
            action: "sync the directory",
            path: dir.to_owned(),
            source,
        })
    }

    fn write_temp(&self, temp: &Path) -> Result<(), HomeError> {
        let io_error = |action| move |source| HomeError::Io { action, path: temp.to_owned(), source };
        let open = || OpenOptions::new().write(true).create_new(true).mode(0o600).open(temp);
        let mut file = match open() {
            // A leftover from a crashed run with the same process id: it is ours to replace.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                fs::remove_file(temp).map_err(io_error("remove the stale temporary file"))?;
                open()
            }
            other => other,
        }
        .map_err(io_error("create the temporary file"))?;
        file.write_all(&self.to_bytes()).map_err(io_error("write"))?;
        file.sync_all().map_err(io_error("sync"))
    }

    /// Reads and decodes the file at `path`: [`HomeError::NotInitialised`] when there is none,
    /// [`HomeError::Corrupt`] or [`HomeError::UnsupportedVersion`] when it does not decode.
    pub fn load(path: &Path) -> Result<IdentityFile, HomeError> {
        let io_error = |source| HomeError::Io { action: "read", path: path.to_owned(), source };
        let mut file = match File::open(path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(HomeError::NotInitialised { path: path.to_owned() });
            }
            other => other.map_err(io_error)?,
        };
        // Secrets others can read are no longer secret, and a file someone else owns may not be
        // the user's identity at all.
        let metadata = file.metadata().map_err(io_error)?;
        crate::home::check_owned(path, &metadata, 0o077, "chmod 600")?;
        // A fixed buffer one byte longer than any valid file, read into in place: it is never
        // reallocated (which would leave copies of the secrets behind) and bounds the read.
        let mut buf = Zeroizing::new(vec![0u8; MAX_FILE_LEN + 1]);
        let mut filled = 0;
        while filled < buf.len() {
            match file.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io_error(e)),
            }
        }
        IdentityFile::from_bytes(&buf[..filled]).map_err(|reason| match reason {
            FormatError::UnsupportedVersion { found } => {
                HomeError::UnsupportedVersion { path: path.to_owned(), found }
            }
            reason => HomeError::Corrupt { path: path.to_owned(), reason },
        })
    }
}

fn link_into_place(temp: &Path, path: &Path) -> Result<(), HomeError> {
    match fs::hard_link(temp, path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            Err(HomeError::AlreadyInitialised { path: path.to_owned() })
        }
        Err(source) => Err(HomeError::Io { action: "create", path: PathBuf::from(path), source }),
    }
}

fn checksum(body: &[u8]) -> [u8; CHECKSUM_LEN] {
    let mut out = [0u8; CHECKSUM_LEN];
    out.copy_from_slice(&kdf::hash(CHECKSUM_LABEL, &[body])[..CHECKSUM_LEN]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use merpati_proto::rand_core::SeedableRng;
    use proptest::prelude::*;
    use rand_chacha::ChaCha20Rng;
    use std::os::unix::fs::PermissionsExt;

    const T0: Timestamp = Timestamp(1_750_000_000_000);

    fn sample(name: Option<&str>) -> IdentityFile {
        sample_seeded(7, name)
    }

    fn sample_seeded(seed: u64, name: Option<&str>) -> IdentityFile {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        IdentityFile::create(&mut rng, name.map(str::to_owned), T0).unwrap()
    }

    fn same(a: &IdentityFile, b: &IdentityFile) {
        assert_eq!(a.version, b.version);
        assert_eq!(*a.identity.to_bytes(), *b.identity.to_bytes());
        assert_eq!(a.device_static.as_bytes(), b.device_static.as_bytes());
        assert_eq!(a.inbox_secret, b.inbox_secret);
        assert_eq!(a.name, b.name);
        assert_eq!(a.created_at, b.created_at);
    }

    #[test]
    fn bytes_round_trip_with_and_without_name() {
        for name in [None, Some("Alice"), Some("ünïcødé ✓")] {
            let file = sample(name);
            let bytes = file.to_bytes();
            assert_eq!(bytes.len(), ENCODED_LEN_MIN + name.map_or(0, str::len));
            same(&file, &IdentityFile::from_bytes(&bytes).unwrap());
        }
    }

    #[test]
    fn names_are_checked() {
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let bad = ["a\nb".to_owned(), "x".repeat(65), "é".repeat(40)];
        for name in bad {
            assert!(matches!(
                IdentityFile::create(&mut rng, Some(name), T0),
                Err(HomeError::InvalidName(_) | HomeError::NameTooLong { .. })
            ));
        }
        let empty = IdentityFile::create(&mut rng, Some(String::new()), T0).unwrap();
        assert_eq!(empty.name, None);
    }

    #[test]
    fn an_identity_file_others_can_read_or_that_is_not_ours_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("identity");
        sample(Some("Alice")).save_new(&path).unwrap();
        assert!(IdentityFile::load(&path).is_ok());
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let error = IdentityFile::load(&path).unwrap_err();
        assert!(matches!(error, HomeError::Unsafe { .. }), "{error}");
        let text = error.to_string();
        assert!(text.contains("mode 644") && text.contains("chmod 600"), "{text}");
        assert!(!text.contains("Alice"), "no contents in the message: {text}");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        // Another user's file (only root can make one to try).
        if rustix::process::geteuid().is_root() {
            std::os::unix::fs::chown(&path, Some(4242), None).unwrap();
            let text = IdentityFile::load(&path).unwrap_err().to_string();
            assert!(text.contains("belongs to another user (uid 4242"), "{text}");
        }
    }

    #[test]
    fn save_load_and_refuse_overwrite() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("identity");
        let file = sample(Some("Alice"));
        file.save_new(&path).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        same(&file, &IdentityFile::load(&path).unwrap());

        let before = fs::read(&path).unwrap();
        let other = sample_seeded(8, None);
        assert!(matches!(other.save_new(&path), Err(HomeError::AlreadyInitialised { .. })));
        assert_eq!(fs::read(&path).unwrap(), before, "the existing identity is untouched");
        // No temporary file is left behind, neither after success nor after refusal.
        let names: Vec<_> = fs::read_dir(tmp.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("identity")]);
    }

    #[test]
    fn missing_corrupt_and_future_files() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("identity");
        assert!(matches!(IdentityFile::load(&path), Err(HomeError::NotInitialised { .. })));

        fs::write(&path, b"hello, I am not an identity").unwrap();
        // Private, as `save_new` makes it: only the contents are wrong.
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        let err = IdentityFile::load(&path).unwrap_err();
        assert!(matches!(err, HomeError::Corrupt { reason: FormatError::NotAnIdentityFile, .. }), "{err}");

        let mut bytes = sample(None).to_bytes().to_vec();
        bytes[20] ^= 1;
        fs::write(&path, &bytes).unwrap();
        let err = IdentityFile::load(&path).unwrap_err();
        assert!(matches!(err, HomeError::Corrupt { reason: FormatError::Checksum, .. }));
        assert!(err.to_string().contains("damaged"), "{err}");

        let mut bytes = sample(None).to_bytes().to_vec();
        bytes[MAGIC.len()] = 2;
        fs::write(&path, &bytes).unwrap();
        assert!(matches!(IdentityFile::load(&path), Err(HomeError::UnsupportedVersion { found: 2, .. })));

        fs::write(&path, vec![0u8; 10_000]).unwrap();
        assert!(matches!(IdentityFile::load(&path), Err(HomeError::Corrupt { .. })));
    }

    #[test]
    fn errors_never_show_secret_bytes() {
        let file = sample(None);
        let shown = format!("{file:?}");
        assert!(!shown.contains(&format!("{:?}", file.inbox_secret.as_bytes())));
        assert!(shown.contains("SymmetricKey(..)"), "{shown}");
        let bytes = file.to_bytes();
        let truncated = IdentityFile::from_bytes(&bytes[..bytes.len() - 1]).unwrap_err();
        assert_eq!(truncated, FormatError::Checksum);
    }

    proptest! {
        #[test]
        fn junk_never_panics(junk in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = IdentityFile::from_bytes(&junk);
        }

        #[test]
        fn mutated_files_never_panic_and_are_refused(index in 0usize..ENCODED_LEN_MIN, bit in 0u8..8) {
            let mut bytes = sample(None).to_bytes().to_vec();
            bytes[index] ^= 1 << bit;
            prop_assert!(IdentityFile::from_bytes(&bytes).is_err());
        }

        #[test]
        fn truncated_files_are_refused(len in 0usize..ENCODED_LEN_MIN) {
            let bytes = sample(None).to_bytes();
            prop_assert!(IdentityFile::from_bytes(&bytes[..len]).is_err());
        }
    }
}
