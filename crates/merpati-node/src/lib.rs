//! The Merpati node: libp2p networking, storage and the control API around `merpati-proto`.
#![deny(missing_docs)]

pub mod backup;
pub mod clock;
pub mod config;
pub mod control;
pub mod daemon;
pub mod demo;
pub mod engine;
mod group_rpc;
pub mod local;
pub mod lock;
pub mod net;
pub mod ports;
pub mod relay;
pub mod relay_check;
pub mod relay_client;
mod rpc;
mod sled_disk;
pub mod store;
mod transfers;
