//! Downloading one blob into our spool: from each source in turn, pages of chunks from the first
//! one still missing, each checked as it arrives and written at its place; once every chunk is
//! here, the whole file is checked against its description and each source is told (`Ack`).
//! What is already in the spool is found again after a restart, so nothing is fetched twice.

use std::path::PathBuf;
use std::time::Duration;

use libp2p::{Multiaddr, PeerId};
use merpati_proto::Timestamp;
use merpati_proto::blob::{self, BlobKey, BlobSecret};
use merpati_proto::frame::MessageId;
use merpati_proto::wire::Refusal;
use merpati_proto::wire::blob::{BlobId, MAX_GET_CHUNKS, Request, Response};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::spool::Spool;
use super::{BACKOFF_MAX, Report};
use crate::clock::Clock;
use crate::net;

/// The first pause after a round that brought nothing; doubles up to the transfers' longest. Short:
/// the usual reason is an upload still under way, which a quarter second later has moved on.
const IDLE_BASE: Duration = Duration::from_millis(250);

/// The pause after the `rounds`-th round in a row that brought nothing.
fn idle_pause(rounds: u32) -> Duration {
    IDLE_BASE.saturating_mul(1 << rounds.saturating_sub(1).min(12)).min(BACKOFF_MAX)
}

/// One blob to download.
pub(crate) struct Download {
    pub(crate) message: MessageId,
    pub(crate) blob_id: BlobId,
    pub(crate) key: BlobKey,
    pub(crate) read: BlobSecret,
    pub(crate) count: u32,
    pub(crate) len: u64,
    pub(crate) hash: [u8; 32],
    pub(crate) expires_at: Timestamp,
    pub(crate) sources: Vec<(PeerId, Vec<Multiaddr>)>,
    pub(crate) path: PathBuf,
}

/// How a download ended.
#[derive(Debug)]
pub(crate) enum Downloaded {
    /// The file is in the spool, whole and checked.
    Done,
    /// It can no longer be had: why.
    Failed(String),
    /// Stopped from outside.
    Cancelled,
}

impl Download {
    /// Runs until the file is here and checked, its sources have expired, or `cancel` fires.
    pub(crate) async fn run(
        self,
        net: net::Handle,
        clock: Clock,
        reports: mpsc::Sender<Report>,
        cancel: CancellationToken,
    ) -> Downloaded {
        let mut present = match self.scan().await {
            Ok(present) => present,
            Err(why) => return Downloaded::Failed(why),
        };
        let mut idle_rounds = 0u32;
        loop {
            self.report(&reports, &present).await;
            if present.iter().all(|here| *here) {
                return self.finish(&net).await;
            }
            if clock.now() >= self.expires_at {
                return Downloaded::Failed(
                    "the file expired at its sources before it could be fetched".into(),
                );
            }
            let before = present.iter().filter(|here| **here).count();
            for (peer, addrs) in &self.sources {
                tokio::select! {
                    () = cancel.cancelled() => return Downloaded::Cancelled,
                    result = self.fetch_from(&net, *peer, addrs, &mut present, &reports) => {
                        if let Err(why) = result {
                            tracing::debug!(source = %peer, "file download: {why}");
                        }
                    }
                }
                if present.iter().all(|here| *here) {
                    break;
                }
            }
            let after = present.iter().filter(|here| **here).count();
            // A round that brought nothing waits longer each time: the sender may still be
            // uploading, or offline with its relays down.
            idle_rounds = if after > before { 0 } else { idle_rounds + 1 };
            if idle_rounds > 0 {
                tokio::select! {
                    () = cancel.cancelled() => return Downloaded::Cancelled,
                    () = tokio::time::sleep(idle_pause(idle_rounds)) => {}
                }
            }
        }
    }

    /// Which chunks are already in the spool (all false for a new download).
    async fn scan(&self) -> Result<Vec<bool>, String> {
        let (path, key, id, count) = (self.path.clone(), self.key.clone(), self.blob_id.0, self.count);
        tokio::task::spawn_blocking(move || {
            Spool::open_incoming(&path, count)?;
            Spool::present(&path, &key, &id, count)
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())
    }

    /// Fetches from one source whatever it has, page by page, from the first chunk missing.
    async fn fetch_from(
        &self,
        net: &net::Handle,
        peer: PeerId,
        addrs: &[Multiaddr],
        present: &mut [bool],
        reports: &mpsc::Sender<Report>,
    ) -> Result<(), String> {
        let token = self.read.read_token(&peer.to_bytes());
        while let Some(first) = present.iter().position(|here| !*here) {
            let first = first as u32;
            let count = MAX_GET_CHUNKS.min(self.count - first);
            let get = Request::Get { token: token.clone(), blob_id: self.blob_id, first, count };
            let chunks = match net.blob(peer, addrs.to_vec(), get).await {
                Ok(Response::Chunks { chunks }) => chunks,
                // The next round comes after the idle pause; other sources are asked meanwhile.
                Ok(Response::Refused(Refusal::RateLimited { retry_after_ms })) => {
                    return Err(format!("busy; it asks to wait {retry_after_ms} ms"));
                }
                Ok(Response::Refused(refusal)) => return Err(refusal.to_string()),
                Ok(other) => return Err(format!("an answer of the wrong kind: {other:?}")),
                Err(e) => return Err(e.to_string()),
            };
            if chunks.is_empty() {
                return Err(format!("chunk {first} is not there yet"));
            }
            let got = self.store_page(first, chunks).await?;
            for index in got {
                present[index as usize] = true;
            }
            self.report(reports, present).await;
        }
        Ok(())
    }

    /// Checks a page's chunks and writes those that open; returns their indices. A chunk that
    /// does not open ends the page: the source sent something that is not this file.
    async fn store_page(&self, first: u32, chunks: Vec<serde_bytes::ByteBuf>) -> Result<Vec<u32>, String> {
        let (path, key, id, count) = (self.path.clone(), self.key.clone(), self.blob_id.0, self.count);
        tokio::task::spawn_blocking(move || {
            let file = Spool::open_incoming(&path, count).map_err(|e| e.to_string())?;
            let mut stored = Vec::new();
            for (index, chunk) in (first..).zip(chunks) {
                if blob::open_chunk(&key, &id, count, index, &chunk).is_err() {
                    return Err(format!("chunk {index} does not open: not this file"));
                }
                Spool::write_chunk(&file, &path, index, &chunk).map_err(|e| e.to_string())?;
                stored.push(index);
            }
            file.sync_data().map_err(|e| format!("cannot sync {}: {e}", path.display()))?;
            Ok(stored)
        })
        .await
        .map_err(|e| e.to_string())?
    }

    /// Checks the whole file, then tells each source it may drop its copy.
    async fn finish(&self, net: &net::Handle) -> Downloaded {
        let (path, key, id, len, count, hash) =
            (self.path.clone(), self.key.clone(), self.blob_id.0, self.len, self.count, self.hash);
        let checked =
            tokio::task::spawn_blocking(move || Spool::verify(&path, &key, &id, len, count, hash)).await;
        match checked {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                // Every chunk opened, yet the whole is not the file described: its sender made
                // a blob that does not match its own description. Nothing to fetch again.
                Spool::remove(&self.path);
                return Downloaded::Failed(format!("the file is not the one described: {e}"));
            }
            Err(e) => return Downloaded::Failed(e.to_string()),
        }
        for (peer, addrs) in &self.sources {
            let ack = Request::Ack { token: self.read.read_token(&peer.to_bytes()), blob_id: self.blob_id };
            // An ack lost is harmless: the relay drops the blob at its expiry anyway.
            if let Err(e) = net.blob(*peer, addrs.clone(), ack).await {
                tracing::debug!(source = %peer, "file download: the ack was not delivered: {e}");
            }
        }
        Downloaded::Done
    }

    async fn report(&self, reports: &mpsc::Sender<Report>, present: &[bool]) {
        let held = present.iter().filter(|here| **here).count() as u32;
        let _ = reports.send(Report::Downloading { message: self.message, held, count: self.count }).await;
    }
}
