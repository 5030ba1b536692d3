//! The node's home directory: one place for everything a node keeps, shared by daemon and CLI.
//!
//! ```text
//! <home>/control.sock     control API socket (the daemon creates it, mode 0600)
//! <home>/identity         long-term secrets (`merpati init`, mode 0600)
//! <home>/db/              the daemon's database
//! <home>/merpatid.lock    held by the running daemon
//! <home>/merpatid.toml    optional daemon configuration
//! ```
//!
//! The home is `--home DIR` when given, else `$MERPATI_HOME`, else the platform data directory
//! (`~/.local/share/merpati` on Linux). It is created with mode 0700 so other users cannot list it.

use std::fs::{self, DirBuilder};
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use thiserror::Error;

use merpati_proto::invite::MAX_NAME_LEN;

use crate::identity_file::FormatError;
use crate::protocol::NameError;

/// The environment variable naming the home directory.
pub const HOME_ENV: &str = "MERPATI_HOME";
/// The home's name inside the platform data directory.
pub const DATA_DIR_NAME: &str = "merpati";

/// What went wrong with the home directory or the identity file in it. Each message says what to
/// do about it.
#[derive(Debug, Error)]
pub enum HomeError {
    /// No `--home`, no `$MERPATI_HOME`, and the platform has no data directory (no `$HOME`).
    #[error("cannot tell where Merpati keeps its files: pass --home DIR or set {HOME_ENV}")]
    NoDataDir,
    /// A home path that cannot be used (empty).
    #[error("{path:?} cannot be a home directory: pass a directory path to --home")]
    InvalidPath {
        /// The path given.
        path: PathBuf,
    },
    /// A file system operation failed.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// What was being done, e.g. "create the directory".
        action: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// There is no identity file yet.
    #[error("there is no Merpati identity in {} (create one with: merpati init --home {})", parent(path).display(), parent(path).display())]
    NotInitialised {
        /// The identity file's path.
        path: PathBuf,
    },
    /// An identity file exists already and was left alone.
    #[error(
        "an identity already exists at {} and was left alone; to start over with a new identity, move that file away first",
        path.display()
    )]
    AlreadyInitialised {
        /// The identity file's path.
        path: PathBuf,
    },
    /// The identity file does not decode. The reason never contains file contents.
    #[error("the identity file {} is damaged ({reason}); restore it from a backup", path.display())]
    Corrupt {
        /// The identity file's path.
        path: PathBuf,
        /// What is wrong with it.
        #[source]
        reason: FormatError,
    },
    /// The identity file was written by a newer version.
    #[error(
        "the identity file {} has format version {found}, newer than this version of Merpati understands; update Merpati",
        path.display()
    )]
    UnsupportedVersion {
        /// The identity file's path.
        path: PathBuf,
        /// The version found.
        found: u8,
    },
    /// A file or directory of the home that others could read or change, or that belongs to
    /// another user: trusting it would hand them the identity.
    #[error("refusing {}: {problem}", path.display())]
    Unsafe {
        /// The file or directory.
        path: PathBuf,
        /// What is wrong and how to fix it.
        problem: String,
    },
    /// The name given for a new identity was refused.
    #[error("invalid name: {0}")]
    InvalidName(#[from] NameError),
    /// The name given for a new identity does not fit an invite.
    #[error("invalid name: it is {bytes} bytes of UTF-8, and an invite holds at most {MAX_NAME_LEN}")]
    NameTooLong {
        /// Its length in bytes.
        bytes: usize,
    },
}

/// Refuses `path` if it belongs to another user than this process's, or if any of the mode bits
/// `forbidden` is set; `fix` is the chmod that repairs it.
pub fn check_owned(path: &Path, metadata: &fs::Metadata, forbidden: u32, fix: &str) -> Result<(), HomeError> {
    use std::os::unix::fs::MetadataExt;
    let me = rustix::process::geteuid().as_raw();
    if metadata.uid() != me {
        return Err(HomeError::Unsafe {
            path: path.to_owned(),
            problem: format!(
                "it belongs to another user (uid {}, you are {me}): use a home directory of your own",
                metadata.uid()
            ),
        });
    }
    let mode = metadata.mode() & 0o777;
    if mode & forbidden != 0 {
        return Err(HomeError::Unsafe {
            path: path.to_owned(),
            problem: format!("others may read or change it (mode {mode:03o}): run {fix} {}", path.display()),
        });
    }
    Ok(())
}

/// The directory a path lives in, for messages that name the home.
fn parent(path: &Path) -> &Path {
    path.parent().unwrap_or(path)
}

/// A node's home directory and the paths inside it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Home {
    dir: PathBuf,
}

impl Home {
    /// `explicit` (from `--home`) if given, else `$MERPATI_HOME` if set and not empty, else the
    /// platform data directory plus `merpati`. The result is made absolute (without touching the
    /// file system) so messages and the socket path do not depend on the working directory.
    pub fn resolve(explicit: Option<PathBuf>) -> Result<Home, HomeError> {
        let dir = match explicit {
            Some(dir) => dir,
            None => match std::env::var_os(HOME_ENV).filter(|v| !v.is_empty()) {
                Some(dir) => PathBuf::from(dir),
                None => dirs::data_dir().ok_or(HomeError::NoDataDir)?.join(DATA_DIR_NAME),
            },
        };
        Home::at(dir)
    }

    /// The home at `dir`, made absolute; no environment lookup.
    pub fn at(dir: impl Into<PathBuf>) -> Result<Home, HomeError> {
        let dir = dir.into();
        if dir.as_os_str().is_empty() {
            return Err(HomeError::InvalidPath { path: dir });
        }
        let dir = std::path::absolute(&dir).map_err(|source| HomeError::Io {
            action: "resolve the path",
            path: dir.clone(),
            source,
        })?;
        Ok(Home { dir })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Creates the directory (and missing parents) with mode 0700 if it does not exist yet. An
    /// existing directory keeps its mode.
    pub fn create_dir(&self) -> Result<(), HomeError> {
        DirBuilder::new().recursive(true).mode(0o700).create(&self.dir).map_err(|source| HomeError::Io {
            action: "create the directory",
            path: self.dir.clone(),
            source,
        })?;
        let metadata = fs::metadata(&self.dir).map_err(|source| HomeError::Io {
            action: "inspect the directory",
            path: self.dir.clone(),
            source,
        })?;
        check_owned(&self.dir, &metadata, 0o022, "chmod go-w")
    }

    /// `<home>/control.sock`: the control API socket.
    pub fn control_socket(&self) -> PathBuf {
        self.dir.join("control.sock")
    }

    /// `<home>/identity`: the identity file.
    pub fn identity_file(&self) -> PathBuf {
        self.dir.join("identity")
    }

    /// `<home>/db`: the daemon's database directory.
    pub fn database_dir(&self) -> PathBuf {
        self.dir.join("db")
    }

    /// `<home>/merpatid.lock`: held by the running daemon, so two never share a home.
    pub fn lock_file(&self) -> PathBuf {
        self.dir.join("merpatid.lock")
    }

    /// `<home>/merpatid.toml`: the daemon's optional configuration file.
    pub fn config_file(&self) -> PathBuf {
        self.dir.join("merpatid.toml")
    }

    /// Whether an identity file exists (without reading it).
    pub fn is_initialised(&self) -> bool {
        self.identity_file().symlink_metadata().is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_home_others_can_write_to_or_that_is_not_ours_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let home = Home::at(tmp.path().join("home")).unwrap();
        home.create_dir().unwrap();
        fs::set_permissions(home.dir(), fs::Permissions::from_mode(0o777)).unwrap();
        let text = home.create_dir().unwrap_err().to_string();
        assert!(text.contains("mode 777") && text.contains("chmod go-w"), "{text}");
        // Readable by others is the user's choice; writable is not.
        fs::set_permissions(home.dir(), fs::Permissions::from_mode(0o755)).unwrap();
        home.create_dir().unwrap();
        if rustix::process::geteuid().is_root() {
            std::os::unix::fs::chown(home.dir(), Some(4242), None).unwrap();
            let text = home.create_dir().unwrap_err().to_string();
            assert!(text.contains("belongs to another user"), "{text}");
        }
    }

    #[test]
    fn paths_are_inside_the_home() {
        let home = Home::at("/srv/merpati").unwrap();
        assert_eq!(home.dir(), Path::new("/srv/merpati"));
        assert_eq!(home.control_socket(), Path::new("/srv/merpati/control.sock"));
        assert_eq!(home.identity_file(), Path::new("/srv/merpati/identity"));
        assert_eq!(home.database_dir(), Path::new("/srv/merpati/db"));
        assert_eq!(home.lock_file(), Path::new("/srv/merpati/merpatid.lock"));
        assert_eq!(home.config_file(), Path::new("/srv/merpati/merpatid.toml"));
    }

    #[test]
    fn explicit_home_wins_and_is_made_absolute() {
        let home = Home::resolve(Some(PathBuf::from("/tmp/x"))).unwrap();
        assert_eq!(home.dir(), Path::new("/tmp/x"));
        let relative = Home::at("some/where").unwrap();
        assert!(relative.dir().is_absolute());
        assert!(relative.dir().ends_with("some/where"));
        assert!(matches!(Home::at(""), Err(HomeError::InvalidPath { .. })));
    }

    #[test]
    fn created_directory_is_private() {
        let tmp = tempfile::tempdir().unwrap();
        let home = Home::at(tmp.path().join("a/b")).unwrap();
        home.create_dir().unwrap();
        home.create_dir().unwrap();
        let mode = std::fs::metadata(home.dir()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        assert!(!home.is_initialised());
    }

    #[test]
    fn messages_say_what_to_do() {
        let e = HomeError::NotInitialised { path: PathBuf::from("/h/identity") };
        assert_eq!(
            e.to_string(),
            "there is no Merpati identity in /h (create one with: merpati init --home /h)"
        );
    }
}
