//! The blob protocol's two ends in the network task: the [`BlobServer`] behind `/merpati/blob/1`
//! (a relay's file store, or a user node's own files), plugged in from outside like the mailbox
//! service, and how a blob request of ours is checked against its answer.

use std::net::IpAddr;

use futures::future::BoxFuture;
use libp2p::PeerId;
use libp2p::request_response::ResponseChannel;
use merpati_proto::wire::WireError;
use merpati_proto::wire::blob;

use super::mailbox::RelayRequest;

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

impl RelayRequest for blob::Request {
    type Response = blob::Response;

    fn shape(&self) -> Self {
        match self {
            blob::Request::Put { token, blob_id, index, .. } => blob::Request::Put {
                token: token.clone(),
                blob_id: *blob_id,
                index: *index,
                chunk: Vec::new(),
            },
            other => other.clone(),
        }
    }

    fn check(response: &blob::Response, shape: &Self) -> Result<(), WireError> {
        response.validate_for(shape)
    }
}
