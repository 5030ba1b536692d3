//! Merpati's protocol core: identities, invites, NDR1 end-to-end sessions and wire codecs.
//!
//! This crate is sans-IO and deterministic: it never reads a clock, never touches the network or
//! the disk, and draws randomness only from the RNG its caller passes in. Inputs are bytes and
//! values; outputs are values (envelopes to send, messages to store, state to persist). The node
//! daemon (`merpati-node`) does the I/O around it.
//!
//! The wire formats and cryptography are specified normatively in `docs/protocol.md`.
#![deny(missing_docs)]

pub mod blob;
pub mod codec;
pub mod envelope;
pub mod fragment;
pub mod frame;
pub mod group;
pub mod identity;
pub mod invite;
pub mod kdf;
pub mod keys;
pub mod mailbox;
pub mod noise;
pub mod session;
pub mod time;
pub mod wire;

pub use rand_core;
pub use time::Timestamp;
