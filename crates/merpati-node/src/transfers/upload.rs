//! Uploading one blob from our spool to one of our relays: create it there, ask which chunks the
//! relay holds, put the rest a few at a time, and start over from the relay's answer after any
//! failure. Every step is idempotent at the relay, so a restart of either side resumes where the
//! relay's status says.

use std::path::PathBuf;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use libp2p::{Multiaddr, PeerId};
use merpati_proto::blob::BlobSecret;
use merpati_proto::wire::Refusal;
use merpati_proto::wire::blob::{BlobId, Request, Response, is_marked};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::spool::Spool;
use super::{Report, backoff};
use crate::net;

/// Chunks put at once: enough to hide a round trip, few enough to leave the link to others.
const PUTS_IN_FLIGHT: usize = 4;
/// How long to wait for a reservation the relay says we lack before asking again.
const NOT_RESERVED_PAUSE: Duration = Duration::from_secs(10);

/// One blob to upload to one relay.
pub(crate) struct Upload {
    pub(crate) message: merpati_proto::frame::MessageId,
    pub(crate) blob_id: BlobId,
    pub(crate) count: u32,
    pub(crate) write: BlobSecret,
    pub(crate) read: BlobSecret,
    pub(crate) relay: PeerId,
    pub(crate) addrs: Vec<Multiaddr>,
    pub(crate) path: PathBuf,
}

/// How an upload ended.
#[derive(Debug)]
pub(crate) enum Uploaded {
    /// The relay holds every chunk.
    Done,
    /// The relay refused it for good (too large for it, not ours to write).
    Refused(Refusal),
    /// Stopped from outside (the message was deleted, the daemon stops).
    Cancelled,
}

impl Upload {
    /// Runs until the relay holds every chunk, refuses for good, or `cancel` fires; reports
    /// progress as chunks are stored.
    pub(crate) async fn run(
        self,
        net: net::Handle,
        reports: mpsc::Sender<Report>,
        cancel: CancellationToken,
    ) -> Uploaded {
        let mut failures = 0u32;
        loop {
            let outcome = tokio::select! {
                () = cancel.cancelled() => return Uploaded::Cancelled,
                outcome = self.attempt(&net, &reports) => outcome,
            };
            let pause = match outcome {
                Ok(()) => return Uploaded::Done,
                Err(Step::Refused(refusal)) => return Uploaded::Refused(refusal),
                Err(Step::Wait(pause, refusal)) => {
                    // Paced by the relay: the sender is told why the file is not moving.
                    let why = format!("relay {} says {refusal}", self.relay);
                    let _ = reports.send(Report::Waiting { message: self.message, why }).await;
                    pause
                }
                Err(Step::Failed(why)) => {
                    failures += 1;
                    tracing::debug!(relay = %self.relay, "file upload: {why}; trying again");
                    backoff(failures)
                }
            };
            tokio::select! {
                () = cancel.cancelled() => return Uploaded::Cancelled,
                () = tokio::time::sleep(pause) => {}
            }
        }
    }

    async fn attempt(&self, net: &net::Handle, reports: &mpsc::Sender<Report>) -> Result<(), Step> {
        let relay_id = self.relay.to_bytes();
        let write = self.write.write_token(&relay_id);
        let create = Request::Create {
            blob_id: self.blob_id,
            chunks: self.count,
            write_hash: write.hash(),
            read_hashes: vec![self.read.read_token(&relay_id).hash()],
        };
        match self.ask(net, create).await? {
            Response::Created { .. } => {}
            other => return Err(unexpected(other)),
        }
        // From here on the relay forgetting the blob means its readers have it (they acked,
        // perhaps after fetching it from this node directly): nothing more to upload.
        match self.rest(net, reports, &write).await {
            Err(Step::Refused(Refusal::UnknownBlob)) => Ok(()),
            other => other,
        }
    }

    async fn rest(
        &self,
        net: &net::Handle,
        reports: &mpsc::Sender<Report>,
        write: &merpati_proto::blob::BlobToken,
    ) -> Result<(), Step> {
        let status = Request::Status { token: write.clone(), blob_id: self.blob_id };
        let stored = match self.ask(net, status).await? {
            Response::Present { stored } => stored,
            other => return Err(unexpected(other)),
        };
        let missing: Vec<u32> = (0..self.count).filter(|i| !is_marked(&stored, *i)).collect();
        let mut held = self.count - missing.len() as u32;
        self.report(reports, held).await;
        let mut queue = missing.into_iter();
        let mut in_flight = FuturesUnordered::new();
        loop {
            while in_flight.len() < PUTS_IN_FLIGHT {
                let Some(index) = queue.next() else { break };
                let path = self.path.clone();
                let chunk = tokio::task::spawn_blocking(move || Spool::read_chunk(&path, index))
                    .await
                    .map_err(|e| Step::Failed(e.to_string()))?
                    .map_err(|e| Step::Failed(e.to_string()))?;
                let put = Request::Put { token: write.clone(), blob_id: self.blob_id, index, chunk };
                in_flight.push(self.ask(net, put));
            }
            let Some(answer) = in_flight.next().await else { break };
            match answer? {
                Response::Stored => {
                    held += 1;
                    self.report(reports, held).await;
                }
                other => return Err(unexpected(other)),
            }
        }
        Ok(())
    }

    async fn ask(&self, net: &net::Handle, request: Request) -> Result<Response, Step> {
        match net.blob(self.relay, self.addrs.clone(), request).await {
            Ok(Response::Refused(refusal)) => Err(Step::from(refusal)),
            Ok(response) => Ok(response),
            Err(e) => Err(Step::Failed(e.to_string())),
        }
    }

    async fn report(&self, reports: &mpsc::Sender<Report>, held: u32) {
        let progress =
            Report::Uploading { message: self.message, relay: self.relay, held, count: self.count };
        let _ = reports.send(progress).await;
    }
}

/// Why an attempt stopped.
enum Step {
    /// For good.
    Refused(Refusal),
    /// For as long as the relay said, and why.
    Wait(Duration, Refusal),
    /// For a while (backoff).
    Failed(String),
}

impl From<Refusal> for Step {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::RateLimited { retry_after_ms } => {
                Step::Wait(Duration::from_millis(u64::from(retry_after_ms)), refusal)
            }
            Refusal::NotReserved => Step::Wait(NOT_RESERVED_PAUSE, refusal),
            Refusal::Internal | Refusal::RelayFull => Step::Failed(refusal.to_string()),
            other => Step::Refused(other),
        }
    }
}

fn unexpected(response: Response) -> Step {
    Step::Failed(format!("an answer of the wrong kind: {response:?}"))
}
