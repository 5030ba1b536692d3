//! The daemon's config file (`<home>/merpatid.toml`, or `--config FILE`): a few settings in TOML.
//!
//! ```toml
//! listen = ["/ip4/0.0.0.0/tcp/4001", "/ip4/0.0.0.0/udp/4001/quic-v1"]
//! mdns = true
//! read_receipts = true
//! ```
//!
//! Command-line flags override the file; absent settings keep their defaults (listen on all
//! interfaces with ports chosen by the system and kept across restarts; mDNS on).

use std::path::{Path, PathBuf};

use libp2p::Multiaddr;
use serde::Deserialize;
use thiserror::Error;

/// The largest config file read, in bytes: it holds a handful of settings.
pub const MAX_CONFIG_LEN: u64 = 64 * 1024;

/// Why the config file could not be used.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read the config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// The file is larger than any real config.
    #[error("the config file {path} is larger than {MAX_CONFIG_LEN} bytes")]
    TooLarge {
        /// The file.
        path: PathBuf,
    },
    /// The file is not valid TOML or has unknown or mistyped settings.
    #[error("the config file {path} is invalid: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The parser's explanation (line, column, what was expected).
        message: String,
    },
}

/// The settings a config file may hold.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FileConfig {
    /// Addresses to listen on.
    pub listen: Option<Vec<Multiaddr>>,
    /// Whether to find peers on the local network with mDNS.
    pub mdns: Option<bool>,
    /// Whether contacts are told when their messages were read.
    pub read_receipts: Option<bool>,
}

/// The file as written, before addresses are checked.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    listen: Option<Vec<String>>,
    mdns: Option<bool>,
    read_receipts: Option<bool>,
}

impl FileConfig {
    /// Reads `path`.
    pub fn load(path: &Path) -> Result<FileConfig, ConfigError> {
        let read = |source| ConfigError::Read { path: path.to_owned(), source };
        let len = std::fs::metadata(path).map_err(read)?.len();
        if len > MAX_CONFIG_LEN {
            return Err(ConfigError::TooLarge { path: path.to_owned() });
        }
        let text = std::fs::read_to_string(path).map_err(read)?;
        let invalid = |message: String| ConfigError::Invalid { path: path.to_owned(), message };
        let raw: RawConfig = toml::from_str(&text).map_err(|e| invalid(e.to_string()))?;
        let listen = raw
            .listen
            .map(|addrs| {
                addrs
                    .iter()
                    .map(|a| {
                        a.parse::<Multiaddr>()
                            .map_err(|e| invalid(format!("listen: \"{a}\" is not an address ({e})")))
                    })
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()?;
        Ok(FileConfig { listen, mdns: raw.mdns, read_receipts: raw.read_receipts })
    }

    /// Reads `path` if it exists.
    pub fn load_if_present(path: &Path) -> Result<FileConfig, ConfigError> {
        match std::fs::metadata(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(FileConfig::default()),
            _ => Self::load(path),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_settings_and_refuses_mistakes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("merpatid.toml");
        assert_eq!(FileConfig::load_if_present(&path).unwrap(), FileConfig::default());
        std::fs::write(&path, "listen = [\"/ip4/0.0.0.0/tcp/4001\"]\nmdns = false\n").unwrap();
        let config = FileConfig::load(&path).unwrap();
        assert_eq!(config.mdns, Some(false));
        assert_eq!(config.listen.unwrap()[0].to_string(), "/ip4/0.0.0.0/tcp/4001");
        std::fs::write(&path, "lisen = []\n").unwrap();
        let error = FileConfig::load(&path).unwrap_err().to_string();
        assert!(error.contains("lisen"), "{error}");
        std::fs::write(&path, "listen = [\"not an address\"]\n").unwrap();
        assert!(matches!(FileConfig::load(&path), Err(ConfigError::Invalid { .. })));
    }
}
