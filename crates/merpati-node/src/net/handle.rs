//! [`Handle`]: the cloneable front of the network task. Each call is one [`Command`] on a bounded
//! queue, carrying a oneshot for its answer.

use std::time::Duration;

use libp2p::{Multiaddr, PeerId};
use merpati_proto::wire::{blob, deliver, mailbox};
use thiserror::Error;
use tokio::sync::{mpsc, oneshot};

use super::error::{DeliverError, MailboxError};
use super::reservations::RelayStatus;

/// What a [`Handle`] asks of the network task.
#[derive(Debug)]
pub(crate) enum Command {
    /// Send `request` to `peer` (dialling it on `addrs` or known addresses if need be).
    Deliver {
        peer: PeerId,
        addrs: Vec<Multiaddr>,
        request: deliver::Request,
        reply: oneshot::Sender<Result<deliver::Response, DeliverError>>,
    },
    /// Send `batch` to `peer` over `/merpati/deliver/2`, queued with its other deliveries.
    DeliverBatch {
        peer: PeerId,
        addrs: Vec<Multiaddr>,
        batch: deliver::Batch,
        reply: oneshot::Sender<Result<deliver::BatchResponse, DeliverError>>,
    },
    /// Send a mailbox request to a relay over a direct connection (dialling `addrs` if need be).
    Mailbox {
        relay: PeerId,
        addrs: Vec<Multiaddr>,
        request: mailbox::Request,
        reply: oneshot::Sender<Result<mailbox::Response, MailboxError>>,
    },
    /// Send a blob request to a relay over a direct connection (dialling `addrs` if need be).
    Blob {
        relay: PeerId,
        addrs: Vec<Multiaddr>,
        request: blob::Request,
        reply: oneshot::Sender<Result<blob::Response, MailboxError>>,
    },
    /// Keep reservations on exactly these relays (direct addresses ending in `/p2p/<relay>`).
    SetRelays { relays: Vec<Multiaddr>, reply: oneshot::Sender<()> },
    /// The state of each relay we keep a reservation on.
    Relays { reply: oneshot::Sender<Vec<RelayStatus>> },
    /// Remember addresses of a peer for later dials.
    AddAddresses { peer: PeerId, addrs: Vec<Multiaddr>, reply: oneshot::Sender<()> },
    /// Our listen addresses.
    ListenAddrs { reply: oneshot::Sender<Vec<Multiaddr>> },
    /// The peers we have a connection with.
    ConnectedPeers { reply: oneshot::Sender<Vec<PeerId>> },
    /// Connect to `peer` at `addrs` and answer the protocols it says it speaks (identify).
    Probe { peer: PeerId, addrs: Vec<Multiaddr>, reply: oneshot::Sender<Result<Vec<String>, String>> },
}

/// Why [`Handle::probe`] learned nothing.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum ProbeError {
    /// The address does not end in `/p2p/<peer id>`.
    #[error("the address does not end in /p2p/<peer id>")]
    NoPeerId,
    /// The peer could not be reached (the dial's error).
    #[error("cannot connect: {0}")]
    Unreachable(String),
    /// Connected, or not, but no identify answer came in time.
    #[error("no answer within {} s", .0.as_secs())]
    Timeout(Duration),
    /// The network task has stopped.
    #[error("the network task has stopped")]
    Stopped,
}

/// The network task has stopped (its shutdown token was cancelled).
#[derive(Clone, Copy, Debug, Error, PartialEq, Eq)]
#[error("the network task has stopped")]
pub struct Stopped;

/// A cloneable handle on the running network task.
#[derive(Clone, Debug)]
pub struct Handle {
    commands: mpsc::Sender<Command>,
    local_peer_id: PeerId,
    deliver_timeout: Duration,
    mailbox_timeout: Duration,
}

impl Handle {
    pub(crate) fn new(
        commands: mpsc::Sender<Command>,
        local_peer_id: PeerId,
        deliver_timeout: Duration,
        mailbox_timeout: Duration,
    ) -> Self {
        Self { commands, local_peer_id, deliver_timeout, mailbox_timeout }
    }

    /// Hands `envelope` to `peer` and waits for its answer: `Accepted` once the peer has stored
    /// it, or `Refused` with the peer's reason.
    ///
    /// `addrs` (with or without a `/p2p/<peer>` suffix) are remembered for the peer and used, with
    /// any addresses learned before, if there is no connection yet. Deliveries to one peer are
    /// sent over its existing connection, at most
    /// [`Config::with_max_deliveries_in_flight_per_peer`](super::Config::with_max_deliveries_in_flight_per_peer)
    /// at a time, in the order they were handed over (with several in flight, the peer may
    /// finish them in another order). The whole call is bounded by
    /// [`Config::with_deliver_timeout`](super::Config::with_deliver_timeout).
    pub async fn deliver(
        &self,
        peer: PeerId,
        addrs: Vec<Multiaddr>,
        envelope: Vec<u8>,
    ) -> Result<deliver::Response, DeliverError> {
        let request = deliver::Request { envelope };
        // The receiver would refuse it anyway; checking here saves the bytes and the round trip.
        request.validate()?;
        let (reply, answer) = oneshot::channel();
        let exchange = async {
            self.commands
                .send(Command::Deliver { peer, addrs, request, reply })
                .await
                .map_err(|_| DeliverError::Shutdown)?;
            answer.await.map_err(|_| DeliverError::Shutdown)?
        };
        // If the deadline passes first, the dropped answer channel tells the network task to skip
        // the delivery if it has not been sent yet.
        tokio::time::timeout(self.deliver_timeout, exchange)
            .await
            .unwrap_or(Err(DeliverError::Timeout { peer }))
    }

    /// Hands `envelopes` (1 to [`merpati_proto::wire::MAX_BATCH_ENVELOPES`], in the order they are to be
    /// processed) to `peer` in one exchange and waits for its answers, one per envelope, checked
    /// against the batch. Queued, dialled and bounded in time like [`Handle::deliver`]. A peer
    /// that does not speak the batched protocol fails it with [`DeliverError::Unsupported`].
    pub async fn deliver_batch(
        &self,
        peer: PeerId,
        addrs: Vec<Multiaddr>,
        envelopes: Vec<Vec<u8>>,
    ) -> Result<Vec<deliver::Response>, DeliverError> {
        let batch =
            deliver::Batch { envelopes: envelopes.into_iter().map(serde_bytes::ByteBuf::from).collect() };
        batch.validate()?;
        let (reply, answer) = oneshot::channel();
        let exchange = async {
            self.commands
                .send(Command::DeliverBatch { peer, addrs, batch, reply })
                .await
                .map_err(|_| DeliverError::Shutdown)?;
            answer.await.map_err(|_| DeliverError::Shutdown)?
        };
        let response = tokio::time::timeout(self.deliver_timeout, exchange)
            .await
            .unwrap_or(Err(DeliverError::Timeout { peer }))?;
        Ok(response.results)
    }

    /// Sends `request` to the mailbox service of `relay` and waits for its answer, which has
    /// been checked against the request (see
    /// [`Response::validate_for`](merpati_proto::wire::mailbox::Response::validate_for)).
    /// `addrs` are the relay's direct addresses; mailbox traffic never goes through a circuit.
    /// Bounded by [`Config::with_mailbox_timeout`](super::Config::with_mailbox_timeout).
    pub async fn mailbox(
        &self,
        relay: PeerId,
        addrs: Vec<Multiaddr>,
        request: mailbox::Request,
    ) -> Result<mailbox::Response, MailboxError> {
        request.validate().map_err(MailboxError::Invalid)?;
        self.ask_relay(relay, |reply| Command::Mailbox { relay, addrs, request, reply }).await
    }

    /// Sends `request` to the blob service of `relay` and waits for its answer, checked against
    /// the request (see
    /// [`Response::validate_for`](merpati_proto::wire::blob::Response::validate_for)). Like
    /// [`Handle::mailbox`], over a direct connection only, and bounded by the mailbox timeout.
    pub async fn blob(
        &self,
        relay: PeerId,
        addrs: Vec<Multiaddr>,
        request: blob::Request,
    ) -> Result<blob::Response, MailboxError> {
        request.validate().map_err(MailboxError::Invalid)?;
        self.ask_relay(relay, |reply| Command::Blob { relay, addrs, request, reply }).await
    }

    /// Sends a relay request as `command` and waits for its answer, within the mailbox timeout.
    async fn ask_relay<T>(
        &self,
        relay: PeerId,
        command: impl FnOnce(oneshot::Sender<Result<T, MailboxError>>) -> Command,
    ) -> Result<T, MailboxError> {
        let (reply, answer) = oneshot::channel();
        let exchange = async {
            self.commands.send(command(reply)).await.map_err(|_| MailboxError::Shutdown)?;
            answer.await.map_err(|_| MailboxError::Shutdown)?
        };
        // libp2p's own request timeout normally answers first; this bounds the queueing too.
        tokio::time::timeout(self.mailbox_timeout, exchange)
            .await
            .unwrap_or(Err(MailboxError::Timeout { relay }))
    }

    /// Keeps a reservation (and a listener on its circuit address) on each of `relays`, and on
    /// no other: new ones are reserved at once, removed ones released. A lost reservation is
    /// sought again with backoff and jitter.
    pub async fn set_relays(&self, relays: Vec<Multiaddr>) -> Result<(), Stopped> {
        self.ask(|reply| Command::SetRelays { relays, reply }).await
    }

    /// The relays we keep reservations on, and whether each is connected and reserved. Empty
    /// once the network task has stopped.
    pub async fn relays(&self) -> Vec<RelayStatus> {
        self.ask(|reply| Command::Relays { reply }).await.unwrap_or_default()
    }

    /// Remembers addresses of `peer` for later dials (deliveries without addresses use them).
    pub async fn add_addresses(&self, peer: PeerId, addrs: Vec<Multiaddr>) -> Result<(), Stopped> {
        self.ask(|reply| Command::AddAddresses { peer, addrs, reply }).await
    }

    /// The addresses we listen on, each ending in `/p2p/<our peer id>`, ready to give to a peer.
    /// Empty once the network task has stopped.
    pub async fn listen_addrs(&self) -> Vec<Multiaddr> {
        self.ask(|reply| Command::ListenAddrs { reply }).await.unwrap_or_default()
    }

    /// The peers we have at least one connection with. Empty once the network task has stopped.
    pub async fn connected_peers(&self) -> Vec<PeerId> {
        self.ask(|reply| Command::ConnectedPeers { reply }).await.unwrap_or_default()
    }

    /// Connects to the peer `addr` names (its `/p2p/<peer id>`) at that address, over a new
    /// connection, and answers the protocols it says it speaks, within `within`: how to tell,
    /// before using an address, that a relay really is one there.
    pub async fn probe(&self, addr: &Multiaddr, within: Duration) -> Result<Vec<String>, ProbeError> {
        let peer = super::peer_of(addr).ok_or(ProbeError::NoPeerId)?;
        let (reply, answer) = oneshot::channel();
        let exchange = async {
            self.commands
                .send(Command::Probe { peer, addrs: vec![addr.clone()], reply })
                .await
                .map_err(|_| ProbeError::Stopped)?;
            answer.await.map_err(|_| ProbeError::Stopped)?.map_err(ProbeError::Unreachable)
        };
        tokio::time::timeout(within, exchange).await.unwrap_or(Err(ProbeError::Timeout(within)))
    }

    /// Our libp2p peer id (not the user's identity: see the threat model).
    pub fn local_peer_id(&self) -> PeerId {
        self.local_peer_id
    }

    async fn ask<T>(&self, command: impl FnOnce(oneshot::Sender<T>) -> Command) -> Result<T, Stopped> {
        let (reply, answer) = oneshot::channel();
        self.commands.send(command(reply)).await.map_err(|_| Stopped)?;
        answer.await.map_err(|_| Stopped)
    }
}
