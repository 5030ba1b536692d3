//! The blob service: answers `/merpati/blob/1` requests from [`Blobs`], with rate limits and
//! metrics. Like the mailbox service it knows nothing of the network: it is handed a peer, its IP
//! address, whether the peer holds a reservation here, a request and the time.
//!
//! Order of checks: rate limit, then the request's own bounds, then who may do what (only a peer
//! holding a reservation creates; only the write token puts, reads the status or deletes; only a
//! read token gets or acks), then the operation.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use libp2p::PeerId;
use merpati_proto::Timestamp;
use merpati_proto::wire::Refusal;
use merpati_proto::wire::blob::{Request, Response};
use tokio_util::sync::CancellationToken;

use super::blobs::{Blobs, NewBlob};
use super::depositor::Depositor;
use super::metrics::BlobMetrics;
use super::rate::{RateLimiter, RateLimits};
use crate::clock::Clock;

/// The relay's blob service. Cloning shares it.
#[derive(Clone, Debug)]
pub struct BlobService {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    blobs: Blobs,
    rate: RateLimiter,
    metrics: BlobMetrics,
}

impl BlobService {
    /// The service over `blobs`, with the given rate limits, reporting to `metrics`.
    pub fn new(blobs: Blobs, rate: RateLimits, metrics: BlobMetrics) -> Self {
        metrics.set_stored(&blobs.stats());
        Self { inner: Arc::new(Inner { blobs, rate: RateLimiter::new(rate), metrics }) }
    }

    /// The file store.
    pub fn blobs(&self) -> &Blobs {
        &self.inner.blobs
    }

    /// Answers one request of `peer`, connected from `ip`, received at `now`; `reserved` says
    /// whether the peer holds a relay reservation here. Writes are answered once durable.
    pub async fn handle(
        &self,
        peer: PeerId,
        ip: Option<IpAddr>,
        reserved: bool,
        request: Request,
        now: Timestamp,
    ) -> Response {
        let response = self.answer(peer, ip, reserved, request, now).await;
        if let Response::Refused(refusal) = &response {
            self.inner.metrics.refused(refusal);
        }
        response
    }

    async fn answer(
        &self,
        peer: PeerId,
        ip: Option<IpAddr>,
        reserved: bool,
        request: Request,
        now: Timestamp,
    ) -> Response {
        if let Err(retry_after_ms) = self.inner.rate.check(&peer, ip, Instant::now()) {
            return Response::Refused(Refusal::RateLimited { retry_after_ms });
        }
        if let Err(e) = request.validate() {
            return Response::Refused(e.refusal());
        }
        let Inner { blobs, metrics, .. } = &*self.inner;
        let result = match request {
            Request::Create { blob_id, chunks, write_hash, read_hashes } => {
                if !reserved {
                    return Response::Refused(Refusal::NotReserved);
                }
                let blob = NewBlob { blob_id, chunks, write_hash, read_hashes };
                let created = blobs.create(blob, Depositor::new(&peer, ip), now).await;
                created.map(|expires_at| {
                    metrics.created();
                    metrics.set_stored(&blobs.stats());
                    Response::Created { expires_at }
                })
            }
            Request::Put { token, blob_id, index, chunk } => {
                blobs.put(&token, &blob_id, index, &chunk, now).await.map(|()| {
                    metrics.chunk_stored();
                    Response::Stored
                })
            }
            Request::Status { token, blob_id } => {
                blobs.status(&token, &blob_id, now).map(|stored| Response::Present { stored })
            }
            Request::Get { token, blob_id, first, count } => {
                blobs.get(&token, &blob_id, first, count, now).map(|chunks| {
                    metrics.served(chunks.len());
                    Response::Chunks { chunks: chunks.into_iter().map(serde_bytes::ByteBuf::from).collect() }
                })
            }
            Request::Ack { token, blob_id } => blobs.ack(&token, &blob_id, now).await.map(|()| {
                metrics.acked();
                metrics.set_stored(&blobs.stats());
                Response::Acked
            }),
            Request::Delete { token, blob_id } => blobs.delete(&token, &blob_id, now).await.map(|()| {
                metrics.deleted();
                metrics.set_stored(&blobs.stats());
                Response::Deleted
            }),
        };
        result.unwrap_or_else(Response::Refused)
    }

    /// Drops expired blobs every `every`, until `shutdown`.
    pub async fn run_maintenance(&self, every: Duration, clock: Clock, shutdown: CancellationToken) {
        let blobs = self.inner.blobs.clone();
        let inner = &self.inner;
        super::purge::every(
            every,
            clock,
            shutdown,
            "files",
            move |now| blobs.purge_expired(now),
            |count| {
                inner.metrics.expired(count.unwrap_or(0));
                inner.metrics.set_stored(&inner.blobs.stats());
            },
        )
        .await;
    }
}
