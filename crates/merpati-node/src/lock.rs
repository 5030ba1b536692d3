//! One daemon per home directory: an exclusive advisory lock on `<home>/merpatid.lock`.
//!
//! The kernel releases the lock when the process ends, however it ends, so a daemon killed with
//! `kill -9` never leaves a stale lock behind.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use rustix::fs::{FlockOperation, flock};
use thiserror::Error;

/// Why the lock could not be taken.
#[derive(Debug, Error)]
pub enum LockError {
    /// Another daemon holds it.
    #[error("another merpatid is already running with this home directory ({path}); stop it first")]
    AlreadyRunning {
        /// The lock file.
        path: PathBuf,
    },
    /// The lock file could not be opened.
    #[error("cannot open {path}: {source}")]
    Io {
        /// The lock file.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
}

/// The held lock; released when dropped (or when the process ends).
#[derive(Debug)]
pub struct HomeLock {
    _file: File,
}

impl HomeLock {
    /// Takes the lock, or says which daemon has it.
    pub fn acquire(path: &Path) -> Result<HomeLock, LockError> {
        let io = |source| LockError::Io { path: path.to_owned(), source };
        let mut file = OpenOptions::new().create(true).truncate(false).write(true).open(path).map_err(io)?;
        flock(&file, FlockOperation::NonBlockingLockExclusive)
            .map_err(|_| LockError::AlreadyRunning { path: path.to_owned() })?;
        // The pid is for people looking at the file; the lock is what counts.
        file.set_len(0).map_err(io)?;
        writeln!(file, "{}", std::process::id()).map_err(io)?;
        Ok(HomeLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_is_refused_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("merpatid.lock");
        let first = HomeLock::acquire(&path).unwrap();
        assert!(matches!(HomeLock::acquire(&path), Err(LockError::AlreadyRunning { .. })));
        drop(first);
        assert!(HomeLock::acquire(&path).is_ok());
    }
}
