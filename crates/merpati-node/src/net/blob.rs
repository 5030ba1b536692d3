//! The blob protocol's two ends in the network task: a relay's [`BlobServer`] (the service behind
//! `/merpati/blob/1`, plugged in from outside like the mailbox service), and what a user node
//! remembers of its own blob requests until the relay answers.

use std::net::IpAddr;

use futures::future::BoxFuture;
use libp2p::PeerId;
use libp2p::request_response::ResponseChannel;
use merpati_proto::wire::blob;
use tokio::sync::oneshot;

use super::error::MailboxError;

/// The service a relay runs behind the blob protocol.
pub trait BlobServer: Send + Sync + 'static {
    /// Answers `request` from `peer`, connected from `ip`; `reserved` says whether the peer holds
    /// a relay reservation with us. The request has not been validated yet.
    fn serve(
        &self,
        peer: PeerId,
        ip: Option<IpAddr>,
        reserved: bool,
        request: blob::Request,
    ) -> BoxFuture<'static, blob::Response>;
}

/// A served blob request: where its answer goes, and the answer.
pub(crate) type Served = (ResponseChannel<blob::Response>, blob::Response);

/// A blob request of ours waiting for a relay's answer.
#[derive(Debug)]
pub(crate) struct Pending {
    pub(crate) relay: PeerId,
    /// The request as sent, without a put's chunk: enough to check the answer.
    shape: blob::Request,
    reply: oneshot::Sender<Result<blob::Response, MailboxError>>,
}

impl Pending {
    pub(crate) fn new(
        relay: PeerId,
        request: &blob::Request,
        reply: oneshot::Sender<Result<blob::Response, MailboxError>>,
    ) -> Self {
        let shape = match request {
            blob::Request::Put { token, blob_id, index, .. } => blob::Request::Put {
                token: token.clone(),
                blob_id: *blob_id,
                index: *index,
                chunk: Vec::new(),
            },
            other => other.clone(),
        };
        Self { relay, shape, reply }
    }

    /// Checks `response` against the request and hands it to the asker.
    pub(crate) fn finish(self, response: blob::Response) {
        let result = response
            .validate_for(&self.shape)
            .map(|()| response)
            .map_err(|error| MailboxError::BadResponse { relay: self.relay, error });
        let _ = self.reply.send(result);
    }

    /// Hands the asker an error.
    pub(crate) fn fail(self, error: MailboxError) {
        let _ = self.reply.send(Err(error));
    }
}
