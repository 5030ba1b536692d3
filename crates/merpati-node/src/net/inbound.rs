//! What the network hands the daemon's engine: [`Inbound`], a bounded queue of [`Event`]s, and
//! [`Reply`] and [`BatchReply`], the engine's answer to one received delivery or batch.
//!
//! Flow of a received delivery: the peer's request arrives → the network task checks it against
//! the wire limits and its queues (refusing it there if need be) → [`Event::Delivery`] → the
//! engine processes and stores the envelope → [`Reply::send`] → the network task answers the
//! peer. Until the reply comes, the network task keeps the libp2p response channel, keyed by the
//! request's id, so it never waits on the engine.

use libp2p::{Multiaddr, PeerId};
use merpati_proto::wire::deliver;
use tokio::sync::{mpsc, oneshot};

/// Something the engine should know about.
#[derive(Debug)]
pub enum Event {
    /// A peer handed us an envelope. The request has passed
    /// [`deliver::Request::validate`]. Answer through `reply`: `Accepted` only once the envelope
    /// is durably stored.
    Delivery {
        /// The sending peer.
        peer: PeerId,
        /// The request.
        request: deliver::Request,
        /// Where the answer goes.
        reply: Reply,
    },
    /// A peer handed us envelopes to process in order (`/merpati/deliver/2`). The batch has
    /// passed [`deliver::Batch::validate`]. Answer through `reply`, one answer per envelope, each
    /// `Accepted` only once that envelope is durably stored.
    Deliveries {
        /// The sending peer.
        peer: PeerId,
        /// The envelopes.
        batch: deliver::Batch,
        /// Where the answers go.
        reply: BatchReply,
    },
    /// The first connection to a peer is up: a good moment to send it what waits in the outbox.
    PeerConnected(PeerId),
    /// One of our relays accepted our reservation: contacts can reach us through it, and it is
    /// connected, so a good moment to fetch what it keeps for us.
    RelayReserved(PeerId),
    /// mDNS found a peer on the local network. The addresses are already known to the network
    /// task; the event says the peer is near.
    Discovered {
        /// The peer.
        peer: PeerId,
        /// Its addresses, each ending in `/p2p/<peer>`.
        addrs: Vec<Multiaddr>,
    },
}

/// The engine's answer to one [`Event::Delivery`]. Dropping it without sending answers the peer
/// `Refused(Internal)`, so a failing engine never leaves a peer waiting for the timeout.
#[derive(Debug)]
pub struct Reply {
    tx: oneshot::Sender<deliver::Response>,
}

impl Reply {
    pub(crate) fn new(tx: oneshot::Sender<deliver::Response>) -> Self {
        Self { tx }
    }

    /// Answers the peer. If the network task has stopped meanwhile, or the peer's request timed
    /// out, the answer goes nowhere: the peer sees a timeout or a closed connection and may send
    /// the envelope again.
    pub fn send(self, response: deliver::Response) {
        // An error only means nobody waits for the answer any more (see above); the engine has
        // nothing to do about it.
        if self.tx.send(response).is_err() {
            tracing::debug!("reply to a delivery dropped: the network task no longer waits for it");
        }
    }
}

/// The engine's answers to one [`Event::Deliveries`], one per envelope. Dropping it without
/// sending answers every envelope `Refused(Internal)`.
#[derive(Debug)]
pub struct BatchReply {
    tx: oneshot::Sender<Vec<deliver::Response>>,
}

impl BatchReply {
    pub(crate) fn new(tx: oneshot::Sender<Vec<deliver::Response>>) -> Self {
        Self { tx }
    }

    /// Answers the peer, as [`Reply::send`] does; `responses` must hold one answer per envelope
    /// of the batch, or the peer drops them all.
    pub fn send(self, responses: Vec<deliver::Response>) {
        if self.tx.send(responses).is_err() {
            tracing::debug!("reply to a batch dropped: the network task no longer waits for it");
        }
    }
}

/// The receiving end of the network's events, for the engine. Bounded: when the engine falls
/// behind, new deliveries are refused as rate limited (the peers retry later) rather than
/// queued without limit.
#[derive(Debug)]
pub struct Inbound {
    rx: mpsc::Receiver<Event>,
}

impl Inbound {
    pub(crate) fn new(rx: mpsc::Receiver<Event>) -> Self {
        Self { rx }
    }

    /// The next event; `None` once the network task has stopped and every event was read.
    pub async fn recv(&mut self) -> Option<Event> {
        self.rx.recv().await
    }
}
