//! Backups: everything a person needs to carry on elsewhere, in one file encrypted to a
//! passphrase, and a fresh home made from it.
//!
//! A backup is an age file (scrypt passphrase; the `age` tool opens it too) whose plaintext is a
//! sequence of records ([`record`]): the identity file, the profile (device key, prekeys, node
//! key), the config file, relays, contacts, blocked identities, the whole history with the files
//! messages carry and their spooled (encrypted) bytes. It holds no session keys: a restored node
//! starts a new session with each contact (`engine::restore`). Contact requests not yet
//! accepted, and pieces of long texts not yet whole, are not kept either.
//!
//! [`write`] runs in the daemon, which owns the database; [`restore`] runs without a daemon, on
//! a home that holds no identity, and builds everything beside it before moving it in, the
//! identity file last: a restore that fails leaves the home as it was.

mod export;
mod import;
mod record;

use std::io;
use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::engine::EngineError;
use crate::store::StoreError;

pub use export::{Written, write};
pub use import::{Restored, restore};

/// The scrypt work factor (`log₂ N`) a backup's passphrase is stretched with: age's own default,
/// about a quarter of a second and 256 MiB for a moment (age's calibration would pick a second,
/// and a gibibyte, on a fast machine: too much for a small laptop).
pub(crate) const SCRYPT_WORK_FACTOR: u8 = 18;

/// The largest work factor a restore accepts: a file asking for more (up to an hour and tens of
/// GiB) is not one of ours.
pub(crate) const MAX_SCRYPT_WORK_FACTOR: u8 = 20;

/// The shortest passphrase a backup is written with: scrypt slows guessing, it cannot save a
/// passphrase of a few letters.
pub const MIN_PASSPHRASE_LEN: usize = 8;

/// Why a backup could not be written or restored. Messages say what to do, and never hold a
/// secret.
#[derive(Debug, Error)]
pub enum BackupError {
    /// The passphrase is too short to protect a backup.
    #[error("the passphrase is too short: use at least {MIN_PASSPHRASE_LEN} characters")]
    WeakPassphrase,
    /// The passphrase does not open the backup.
    #[error("the passphrase does not open {}", path.display())]
    WrongPassphrase {
        /// The backup.
        path: PathBuf,
    },
    /// The file is not a backup, or it is damaged.
    #[error("{} is not a usable Merpati backup: {reason}", path.display())]
    NotABackup {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The home already holds an identity or a database.
    #[error(
        "{} already holds {what}: restore into a new, empty home (merpati --home NEW_DIR restore FILE), or move it away first",
        home.display()
    )]
    HomeNotEmpty {
        /// The home.
        home: PathBuf,
        /// What is there.
        what: &'static str,
    },
    /// A file operation failed.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The database failed.
    #[error("{0}")]
    Store(#[from] StoreError),
    /// Starting the restored node's sessions failed.
    #[error("{0}")]
    Engine(#[from] EngineError),
}

/// An [`io::Error`] as a [`BackupError::Io`] about `path`.
fn io_error<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> BackupError + 'a {
    move |source| BackupError::Io { action, path: path.to_owned(), source }
}
