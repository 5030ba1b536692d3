//! Merpati's control API, shared by the `merpatid` daemon and every client of it.
//!
//! * [`protocol`]: the JSON-RPC 2.0 envelopes, error codes and the typed params and result of
//!   every method and notification in `docs/control-api.md`, plus the functions a server needs to
//!   parse a request line and answer it.
//! * [`home`]: where a node keeps its files (socket, identity, database, lock, config).
//! * [`identity_file`]: the long-term secrets `merpati init` writes before any daemon runs.
//! * [`client`]: a small blocking client over the Unix socket.
//!
//! The crate is synchronous and light (no tokio, libp2p or sled) so that the CLI builds fast.
#![deny(missing_docs)]

pub mod client;
pub mod home;
pub mod identity_file;
pub mod protocol;

pub use client::{Client, ClientError, Notifications};
pub use home::{Home, HomeError};
pub use identity_file::IdentityFile;
