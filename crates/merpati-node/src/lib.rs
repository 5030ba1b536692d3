//! The Merpati node: libp2p networking, storage and the control API around `merpati-proto`.
#![deny(missing_docs)]

pub mod net;
