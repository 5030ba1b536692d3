//! The mailbox protocol's two ends in the network task: a relay's [`MailboxServer`] (the service
//! behind `/merpati/mailbox/2`, plugged in from outside so the network knows nothing of storage),
//! and what a user node remembers of its own requests until the relay answers.

use std::net::IpAddr;

use futures::future::BoxFuture;
use libp2p::PeerId;
use libp2p::multiaddr::Protocol;
use libp2p::request_response::ResponseChannel;
use merpati_proto::wire::mailbox;
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

/// A request of ours waiting for a relay's answer.
#[derive(Debug)]
pub(crate) struct Pending {
    pub(crate) relay: PeerId,
    /// The request as sent, without a deposit's envelope bytes: enough to check the answer.
    pub(crate) shape: mailbox::Request,
    pub(crate) reply: oneshot::Sender<Result<mailbox::Response, MailboxError>>,
}

impl Pending {
    pub(crate) fn new(
        relay: PeerId,
        request: &mailbox::Request,
        reply: oneshot::Sender<Result<mailbox::Response, MailboxError>>,
    ) -> Self {
        let shape = match request {
            mailbox::Request::Deposit { mailbox, .. } => {
                mailbox::Request::Deposit { mailbox: *mailbox, envelope: Vec::new() }
            }
            other => other.clone(),
        };
        Self { relay, shape, reply }
    }

    /// Checks `response` against the request and hands it to the asker.
    pub(crate) fn finish(self, response: mailbox::Response) {
        let result = response
            .validate_for(&self.shape)
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
