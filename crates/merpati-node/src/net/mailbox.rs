//! The mailbox protocol's two ends in the network task: a relay's [`MailboxServer`] (the service
//! behind `/merpati/mailbox/2`, plugged in from outside so the network knows nothing of storage),
//! and what a user node remembers of its own requests until the relay answers.

use std::net::IpAddr;

use futures::future::BoxFuture;
use libp2p::PeerId;
use libp2p::multiaddr::Protocol;
use libp2p::request_response::ResponseChannel;
use merpati_proto::wire::{WireError, mailbox};
use tokio::sync::oneshot;

use super::error::MailboxError;

/// The service a relay runs behind the mailbox protocol.
pub trait MailboxServer: Send + Sync + 'static {
    /// Answers `request` from `peer`, connected from `ip` (for per-address rate limits). The
    /// request has not been validated yet. The future may wait (a long-poll fetch, a deposit
    /// waiting for the disk); the network task keeps serving others meanwhile.
    fn serve(
        &self,
        peer: PeerId,
        ip: Option<IpAddr>,
        request: mailbox::Request,
    ) -> BoxFuture<'static, mailbox::Response>;

    /// Notes a request that could not be decoded and so got no answer (libp2p does not say from
    /// whom): the service counts it.
    fn undecodable(&self);
}

/// A served request: where its answer goes, and the answer.
pub(crate) type Served = (ResponseChannel<mailbox::Response>, mailbox::Response);

/// A request to a relay whose answer is checked against it (mailbox and blob requests).
pub(crate) trait RelayRequest: Sized {
    /// The answer.
    type Response;
    /// The request without its payload (a deposit's envelope, a chunk): enough to check the
    /// answer, and small to keep while it is awaited.
    fn shape(&self) -> Self;
    /// Whether `response` answers `shape`.
    fn check(response: &Self::Response, shape: &Self) -> Result<(), WireError>;
}

impl RelayRequest for mailbox::Request {
    type Response = mailbox::Response;

    fn shape(&self) -> Self {
        match self {
            mailbox::Request::Deposit { mailbox, .. } => {
                mailbox::Request::Deposit { mailbox: *mailbox, envelope: Vec::new() }
            }
            other => other.clone(),
        }
    }

    fn check(response: &mailbox::Response, shape: &Self) -> Result<(), WireError> {
        response.validate_for(shape)
    }
}

/// A request of ours waiting for a relay's answer.
#[derive(Debug)]
pub(crate) struct Pending<Q: RelayRequest> {
    pub(crate) relay: PeerId,
    shape: Q,
    reply: oneshot::Sender<Result<Q::Response, MailboxError>>,
}

impl<Q: RelayRequest> Pending<Q> {
    pub(crate) fn new(
        relay: PeerId,
        request: &Q,
        reply: oneshot::Sender<Result<Q::Response, MailboxError>>,
    ) -> Self {
        Self { relay, shape: request.shape(), reply }
    }

    /// Checks `response` against the request and hands it to the asker.
    pub(crate) fn finish(self, response: Q::Response) {
        let result = Q::check(&response, &self.shape)
            .map(|()| response)
            .map_err(|error| MailboxError::BadResponse { relay: self.relay, error });
        // The asker may have stopped waiting (its deadline passed): nothing to undo.
        let _ = self.reply.send(result);
    }

    /// Hands the asker an error.
    pub(crate) fn fail(self, error: MailboxError) {
        let _ = self.reply.send(Err(error));
    }
}

/// The IP address a connection's remote address starts with.
pub(crate) fn ip_of(addr: &libp2p::Multiaddr) -> Option<IpAddr> {
    addr.iter().find_map(|protocol| match protocol {
        Protocol::Ip4(ip) => Some(IpAddr::V4(ip)),
        Protocol::Ip6(ip) => Some(IpAddr::V6(ip)),
        _ => None,
    })
}
