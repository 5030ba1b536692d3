//! sled on disk, for both of the node's databases (a user's store and a relay's mailboxes): the
//! schema marker that tells our databases from anything else, and the syncs that make a sled
//! flush survive a power cut.
//!
//! sled's flush ends with `sync_file_range`, which survives neither power loss nor a drive's
//! volatile cache, and it never syncs the separate files it writes for large pages (`blobs/`).
//! [`Syncer::sync`] therefore follows sled's flush with `fdatasync` of the log file and `fsync`
//! of every blob file not synced before (sled writes each blob once) and of the blob directory.

use std::collections::HashSet;
use std::ffi::OsString;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

use thiserror::Error;

/// sled's log file, inside the database directory.
const LOG_FILE: &str = "db";
/// sled's directory of pages too large for the log, inside the database directory.
const BLOB_DIR: &str = "blobs";

/// Why a database's schema marker is not ours.
#[derive(Debug, Error)]
pub(crate) enum MarkerError {
    /// Not one of our databases of this kind (the reason says why).
    #[error("not our database: {0}")]
    Foreign(&'static str),
    /// Written by a newer version, with this schema version.
    #[error("written by a newer version (schema {0})")]
    TooNew(u16),
    /// sled failed to read or write the marker.
    #[error(transparent)]
    Db(sled::Error),
}

/// Checks the marker under `key` is a schema from 1 to `version`, writing `version` into a new,
/// empty database; `missing` is the reason given when a non-empty database has no marker at all.
/// Returns the schema found (`version` for a new database): an older one is the caller's to
/// migrate.
pub(crate) fn check_marker(
    db: &sled::Db,
    key: &[u8],
    version: u16,
    missing: &'static str,
) -> Result<u16, MarkerError> {
    match db.get(key).map_err(MarkerError::Db)? {
        Some(value) => {
            let found = <[u8; 2]>::try_from(value.as_ref())
                .map(u16::from_be_bytes)
                .map_err(|_| MarkerError::Foreign("malformed schema marker"))?;
            match found {
                0 => Err(MarkerError::Foreign("malformed schema marker")),
                _ if found <= version => Ok(found),
                found => Err(MarkerError::TooNew(found)),
            }
        }
        None => {
            // sled always has its default tree; anything else means someone else's data.
            if !db.is_empty() || db.tree_names().len() > 1 {
                return Err(MarkerError::Foreign(missing));
            }
            db.insert(key, &version.to_be_bytes()).map_err(MarkerError::Db)?;
            Ok(version)
        }
    }
}

/// Why a sync failed.
#[derive(Debug, Error)]
pub(crate) enum SyncError {
    /// sled's own flush failed.
    #[error(transparent)]
    Db(sled::Error),
    /// Syncing one of sled's files failed.
    #[error("cannot sync {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What went wrong.
        source: io::Error,
    },
}

/// Makes a sled database's state durable; see the module documentation.
#[derive(Debug)]
pub(crate) struct Syncer {
    db: sled::Db,
    dir: PathBuf,
    /// sled's log file, kept open to sync it (a sync applies to the file, whichever handle).
    log: File,
    /// Blob files already synced.
    synced_blobs: HashSet<OsString>,
}

impl Syncer {
    /// A syncer for `db`, which sled keeps in `dir`.
    pub(crate) fn open(db: sled::Db, dir: &Path) -> Result<Self, SyncError> {
        let path = dir.join(LOG_FILE);
        let log = File::open(&path).map_err(|source| SyncError::Io { path, source })?;
        Ok(Self { db, dir: dir.to_owned(), log, synced_blobs: HashSet::new() })
    }

    /// sled's flush, then the syncs that make it durable.
    pub(crate) fn sync(&mut self) -> Result<(), SyncError> {
        self.db.flush().map_err(SyncError::Db)?;
        // fdatasync: it writes the metadata needed to read the data back (the size), which is
        // all durability needs, and skips timestamps.
        self.log.sync_data().map_err(|source| SyncError::Io { path: self.dir.join(LOG_FILE), source })?;
        let blobs = self.dir.join(BLOB_DIR);
        let entries = match fs::read_dir(&blobs) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(source) => return Err(SyncError::Io { path: blobs, source }),
        };
        let mut present = HashSet::new();
        let mut new_blobs = false;
        for entry in entries {
            let entry = entry.map_err(|source| SyncError::Io { path: blobs.clone(), source })?;
            let name = entry.file_name();
            if !self.synced_blobs.contains(&name) {
                let path = entry.path();
                match File::open(&path).and_then(|f| f.sync_all()) {
                    Ok(()) => new_blobs = true,
                    // Collected by sled since the listing: nothing left to make durable.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(source) => return Err(SyncError::Io { path, source }),
                }
            }
            present.insert(name);
        }
        self.synced_blobs = present;
        if new_blobs { sync_path(&blobs) } else { Ok(()) }
    }
}

/// Fsyncs a file or directory by path.
pub(crate) fn sync_path(path: &Path) -> Result<(), SyncError> {
    File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|source| SyncError::Io { path: path.to_owned(), source })
}
