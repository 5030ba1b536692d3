//! Errors of starting the network ([`NetError`]) and of one delivery ([`DeliverError`]).

use std::io;

use libp2p::{Multiaddr, PeerId};
use merpati_proto::wire::WireError;
use thiserror::Error;

/// Why the network could not start.
#[derive(Debug, Error)]
pub enum NetError {
    /// A part of the libp2p stack (transport, DNS, a behaviour) could not be built.
    #[error("could not set up the {stage}")]
    Build {
        /// The part that failed.
        stage: &'static str,
        /// What went wrong.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A listen address is not one we can listen on (wrong protocol, address in use, …).
    #[error("cannot listen on {addr}")]
    Listen {
        /// The address.
        addr: Multiaddr,
        /// What went wrong.
        #[source]
        source: libp2p::TransportError<io::Error>,
    },
    /// A listener closed with an error while the node was starting.
    #[error("the listener on {addr} failed")]
    ListenerFailed {
        /// The address it was asked to listen on.
        addr: Multiaddr,
        /// What went wrong.
        #[source]
        source: io::Error,
    },
}

/// Why a delivery got no answer from the peer. A refusal by the peer is not an error: it comes
/// back as [`deliver::Response::Refused`](merpati_proto::wire::deliver::Response::Refused).
#[derive(Debug, Error)]
pub enum DeliverError {
    /// The envelope breaks the wire limits (empty, or larger than an envelope may be); it was
    /// not sent.
    #[error("the envelope cannot be sent")]
    Invalid(#[from] WireError),
    /// No connection to the peer could be made on any of its known addresses.
    #[error("peer {peer} is unreachable: {reason}")]
    Unreachable {
        /// The peer.
        peer: PeerId,
        /// Why the dial failed, as libp2p reports it (one line per address tried).
        reason: String,
    },
    /// The peer did not answer in time. It may have received and stored the envelope.
    #[error("peer {peer} did not answer in time")]
    Timeout {
        /// The peer.
        peer: PeerId,
    },
    /// The connection closed before the peer answered. It may have received and stored the
    /// envelope.
    #[error("the connection to peer {peer} closed before it answered")]
    ConnectionClosed {
        /// The peer.
        peer: PeerId,
    },
    /// The peer does not speak the deliver protocol.
    #[error("peer {peer} does not accept direct deliveries")]
    Unsupported {
        /// The peer.
        peer: PeerId,
    },
    /// The stream to the peer failed (reset, or an answer that could not be decoded, as when the
    /// peer drops a request it finds too large).
    #[error("the stream to peer {peer} failed")]
    Stream {
        /// The peer.
        peer: PeerId,
        /// What went wrong.
        #[source]
        source: io::Error,
    },
    /// Too many deliveries are already waiting to be sent (to this peer or in all); try later.
    #[error("too many deliveries are waiting to be sent to peer {peer}")]
    QueueFull {
        /// The peer.
        peer: PeerId,
    },
    /// The network task has stopped (shutdown).
    #[error("the network is shut down")]
    Shutdown,
}

impl DeliverError {
    /// Whether the peer may have received (and stored) the envelope despite the error, so that a
    /// retry may hand it the same envelope twice.
    pub fn maybe_delivered(&self) -> bool {
        matches!(self, Self::Timeout { .. } | Self::ConnectionClosed { .. } | Self::Stream { .. })
    }
}

/// Why a mailbox request to a relay got no usable answer. A refusal by the relay is not an
/// error: it comes back as [`Response::Refused`](merpati_proto::wire::mailbox::Response::Refused).
#[derive(Debug, Error)]
pub enum MailboxError {
    /// The request breaks the wire limits; it was not sent.
    #[error("the mailbox request cannot be sent")]
    Invalid(#[source] WireError),
    /// No connection to the relay could be made.
    #[error("relay {relay} is unreachable: {reason}")]
    Unreachable {
        /// The relay.
        relay: PeerId,
        /// Why, as libp2p reports it.
        reason: String,
    },
    /// The relay did not answer in time. A deposit may still have been stored.
    #[error("relay {relay} did not answer in time")]
    Timeout {
        /// The relay.
        relay: PeerId,
    },
    /// The connection or stream failed before the relay answered. A deposit may still have been
    /// stored.
    #[error("the connection to relay {relay} failed before it answered")]
    ConnectionLost {
        /// The relay.
        relay: PeerId,
    },
    /// The peer does not run a mailbox service: it is not a relay.
    #[error("peer {relay} is not a relay (it keeps no mailboxes)")]
    NotARelay {
        /// The peer.
        relay: PeerId,
    },
    /// The relay's answer breaks the protocol (more items than asked, another mailbox's
    /// envelopes, …); it was dropped.
    #[error("relay {relay} answered against the protocol: {error}")]
    BadResponse {
        /// The relay.
        relay: PeerId,
        /// The rule it broke.
        error: WireError,
    },
    /// The network task has stopped (shutdown).
    #[error("the network is shut down")]
    Shutdown,
}
