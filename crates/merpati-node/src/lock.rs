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
    /// The lock file is a symbolic link: following it would let whoever made it have the daemon
    /// write to another file.
    #[error("{path} is a symbolic link, not the daemon's lock file: remove it")]
    Symlink {
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
        use std::os::unix::fs::OpenOptionsExt;
        let io = |source| LockError::Io { path: path.to_owned(), source };
        let opened = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
            .open(path);
        let mut file = match opened {
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) => {
                return Err(LockError::Symlink { path: path.to_owned() });
            }
            other => other.map_err(io)?,
        };
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

    #[test]
    fn a_symlink_in_place_of_the_lock_file_is_refused_and_its_target_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("precious");
        std::fs::write(&target, "keep me").unwrap();
        let path = dir.path().join("merpatid.lock");
        std::os::unix::fs::symlink(&target, &path).unwrap();
        let error = HomeLock::acquire(&path).unwrap_err();
        assert!(matches!(error, LockError::Symlink { .. }), "{error}");
        assert!(error.to_string().contains("symbolic link"), "{error}");
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep me");
    }
}
