//! The sender's node as a source of its own files: it answers `/merpati/blob/1` gets for the blobs
//! in its outgoing spool, to readers showing the token made for this node, over a direct
//! connection (a description says so with `from_sender`). Nothing else is served: a node keeps no
//! one else's files.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

use futures::future::BoxFuture;
use libp2p::PeerId;
use merpati_proto::Timestamp;
use merpati_proto::blob::{BlobSecret, TokenHash};
use merpati_proto::wire::Refusal;
use merpati_proto::wire::blob::{BlobId, Request, Response};

use super::spool::Spool;
use crate::clock::Clock;
use crate::net::BlobServer;

/// One blob this node serves.
#[derive(Clone, Copy, Debug)]
struct Served {
    read_hash: TokenHash,
    count: u32,
    /// When its description stops promising it.
    expires_at: Timestamp,
}

/// The blobs this node serves, shared between the daemon (which adds and drops them) and the
/// network (which asks). Cloning shares it.
#[derive(Clone, Debug)]
pub(crate) struct SpoolServer {
    own_id: Vec<u8>,
    spool: Spool,
    clock: Clock,
    served: Arc<Mutex<HashMap<BlobId, Served>>>,
}

impl SpoolServer {
    /// The server of the node whose peer id is `own`, over `spool`, by `clock`.
    pub(crate) fn new(own: &PeerId, spool: Spool, clock: Clock) -> Self {
        Self { own_id: own.to_bytes(), spool, clock, served: Arc::default() }
    }

    /// Serves blob `blob_id` of `count` chunks to whoever holds `read`, until `expires_at`.
    pub(crate) fn offer(&self, blob_id: BlobId, count: u32, read: &BlobSecret, expires_at: Timestamp) {
        let read_hash = read.read_token(&self.own_id).hash();
        self.lock().insert(blob_id, Served { read_hash, count, expires_at });
    }

    /// Serves only the blobs in `kept`.
    pub(crate) fn retain(&self, kept: &std::collections::HashSet<[u8; 16]>) {
        self.lock().retain(|id, _| kept.contains(&id.0));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<BlobId, Served>> {
        self.served.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn answer(&self, request: Request) -> Result<(BlobId, u32, u32, u32), Response> {
        if let Err(e) = request.validate() {
            return Err(Response::Refused(e.refusal()));
        }
        let Request::Get { token, blob_id, first, count } = request else {
            // Acks are welcome and change nothing: the spool goes with the message.
            return if matches!(request, Request::Ack { .. }) {
                Err(Response::Acked)
            } else {
                Err(Response::Refused(Refusal::Unauthorized))
            };
        };
        let served = self
            .lock()
            .get(&blob_id)
            .copied()
            .filter(|served| self.clock.now() < served.expires_at)
            .ok_or(Response::Refused(Refusal::UnknownBlob))?;
        if token.hash() != served.read_hash {
            return Err(Response::Refused(Refusal::Unauthorized));
        }
        Ok((blob_id, first, count, served.count))
    }
}

impl BlobServer for SpoolServer {
    fn serve(
        &self,
        _peer: PeerId,
        _ip: Option<IpAddr>,
        _reserved: bool,
        request: Request,
    ) -> BoxFuture<'static, Response> {
        let (blob_id, first, count, chunks) = match self.answer(request) {
            Ok(get) => get,
            Err(response) => return Box::pin(async move { response }),
        };
        let path = self.spool.outgoing(&blob_id.0);
        Box::pin(async move {
            let end = first.saturating_add(count).min(chunks);
            let read = tokio::task::spawn_blocking(move || {
                (first..end).map(|index| Spool::read_chunk(&path, index)).collect::<Result<Vec<_>, _>>()
            })
            .await;
            match read {
                Ok(Ok(chunks)) => {
                    Response::Chunks { chunks: chunks.into_iter().map(serde_bytes::ByteBuf::from).collect() }
                }
                Ok(Err(e)) => {
                    tracing::warn!("a spooled file cannot be read to serve it: {e}");
                    Response::Refused(Refusal::Internal)
                }
                Err(_) => Response::Refused(Refusal::Internal),
            }
        })
    }
}
