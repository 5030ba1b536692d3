//! A user node's file transfers (protocol §14): a file larger than fits in its description is
//! encrypted once into our spool when it is sent, uploaded to our relays, and downloaded by the
//! recipient from there into its own spool, where it stays, encrypted, until it is saved out.
//!
//! * [`spool`]: the blobs on disk, and every file operation on them.
//! * [`upload`]: one blob to one relay: create, status, the missing chunks.
//! * [`download`]: one blob from its sources, checked chunk by chunk and whole at the end.
//! * [`serve`]: the sender's node as a source of its own files, over direct connections.
//!
//! [`Transfers`] runs these as tasks for the daemon, which records what they finish in the store
//! (the transfer of each file message is kept with it). Every task resumes from what is on disk
//! and at the relays, so a restart of either side or of a relay loses nothing.

pub(crate) mod download;
pub(crate) mod send;
pub(crate) mod serve;
pub(crate) mod spool;
pub(crate) mod upload;

use std::collections::HashMap;
use std::time::Duration;

use libp2p::{Multiaddr, PeerId};
use merpati_proto::Timestamp;
use merpati_proto::blob::{BlobSecret, Content, Descriptor};
use merpati_proto::frame::MessageId;
use merpati_proto::wire::blob::BlobId;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use self::download::{Download, Downloaded};
use self::serve::SpoolServer;
use self::spool::Spool;
use self::upload::{Upload, Uploaded};
use crate::clock::Clock;
use crate::net;
use crate::store::{Transfer, TransferSide};

/// The first pause after a failed step; doubles up to [`BACKOFF_MAX`].
const BACKOFF_BASE: Duration = Duration::from_secs(2);
/// The longest pause between tries.
pub(crate) const BACKOFF_MAX: Duration = Duration::from_secs(300);
/// Progress reports waiting for the daemon.
const REPORTS_QUEUE: usize = 256;
/// Downloads run at once; more wait their turn, so a burst of files neither floods the link nor
/// opens connections to many sources at once.
pub(crate) const MAX_DOWNLOADS: usize = 4;

/// The pause before the `failures`-th try in a row.
pub(crate) fn backoff(failures: u32) -> Duration {
    BACKOFF_BASE.saturating_mul(1 << failures.saturating_sub(1).min(8)).min(BACKOFF_MAX)
}

/// What a running transfer tells the daemon as it goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Report {
    /// `relay` holds `held` of the blob's `count` chunks.
    Uploading { message: MessageId, relay: PeerId, held: u32, count: u32 },
    /// `held` of `count` chunks are in our spool.
    Downloading { message: MessageId, held: u32, count: u32 },
    /// An upload waits, paced by a relay, for the reason given.
    Waiting { message: MessageId, why: String },
}

/// How far a file's transfer has come, and what was last told of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Progress {
    /// Chunks done (for an upload, at the furthest relay).
    held: u32,
    /// Chunks in all.
    count: u32,
    /// `held` when progress was last told.
    told: u32,
    /// The file's size in bytes.
    size: u64,
    /// Whether the file is ours, going up.
    up: bool,
}

impl Progress {
    /// Bytes of the file done: the share of chunks done (the count includes padding chunks), all
    /// of it only at the end.
    fn done(&self) -> u64 {
        if self.held >= self.count {
            return self.size;
        }
        let share = u128::from(self.size) * u128::from(self.held) / u128::from(self.count.max(1));
        u64::try_from(share).unwrap_or(u64::MAX).min(self.size.saturating_sub(1))
    }
}

/// What to tell of a transfer's progress.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Moved {
    /// The file's message.
    pub(crate) message: MessageId,
    /// Whether the file is ours, going up to our relays.
    pub(crate) up: bool,
    /// Bytes of the file done.
    pub(crate) done: u64,
    /// The file's size.
    pub(crate) size: u64,
    /// Why it does not move now, if a relay paces it.
    pub(crate) waiting: Option<String>,
}

/// A transfer task that ended.
#[derive(Debug)]
pub(crate) enum Finished {
    /// An upload to `relay`.
    Upload { message: MessageId, relay: PeerId, outcome: Uploaded },
    /// The download.
    Download { message: MessageId, outcome: Downloaded },
}

/// A peer to fetch from, and its addresses.
pub(crate) type Peer = (PeerId, Vec<Multiaddr>);

/// The running transfers; see the module documentation.
pub(crate) struct Transfers {
    spool: Spool,
    /// What this node serves of its own files.
    server: SpoolServer,
    net: net::Handle,
    clock: Clock,
    reports: mpsc::Sender<Report>,
    tasks: JoinSet<Finished>,
    /// Per message with tasks running: the token that stops them, and how many there are.
    running: HashMap<MessageId, (CancellationToken, usize)>,
    /// Downloads running now.
    downloads: usize,
    /// Downloads waiting for one of those to end, oldest first.
    waiting: std::collections::VecDeque<(MessageId, Transfer, Option<Peer>)>,
    progress: HashMap<MessageId, Progress>,
}

impl Transfers {
    /// The transfers of a node whose spool is `spool`; also returns where progress is reported.
    pub(crate) fn new(
        spool: Spool,
        server: SpoolServer,
        net: net::Handle,
        clock: Clock,
    ) -> (Self, mpsc::Receiver<Report>) {
        let (reports, reports_rx) = mpsc::channel(REPORTS_QUEUE);
        let transfers = Self {
            spool,
            server,
            net,
            clock,
            reports,
            tasks: JoinSet::new(),
            running: HashMap::new(),
            downloads: 0,
            waiting: std::collections::VecDeque::new(),
            progress: HashMap::new(),
        };
        (transfers, reports_rx)
    }

    /// The spool.
    pub(crate) fn spool(&self) -> &Spool {
        &self.spool
    }

    /// Starts what the transfer of message `id` still needs (serving our own file and uploading
    /// it to the relays not done yet; or the download if `here` is false, from `sender`'s node
    /// first when the description says it serves the file), unless it is running already or has
    /// expired. Returns the news of an upload that starts now (nothing of it done yet), for
    /// whoever follows the send.
    pub(crate) fn start(
        &mut self,
        id: MessageId,
        transfer: &Transfer,
        here: bool,
        sender: Option<Peer>,
    ) -> Option<Moved> {
        if self.running.contains_key(&id) || self.waiting.iter().any(|(waiting, ..)| *waiting == id) {
            return None;
        }
        let Ok(descriptor) = Descriptor::decode(&transfer.descriptor) else {
            tracing::warn!("a stored file description does not decode; its transfer is not resumed");
            return None;
        };
        let Content::Blob { blob_id, key, read_secret, count, expires_at, sources, from_sender } =
            &descriptor.content
        else {
            return None;
        };
        if self.clock.now() >= *expires_at {
            return None;
        }
        let blob_id = BlobId(*blob_id);
        let read = BlobSecret::from_bytes(**read_secret);
        let up = matches!(transfer.side, TransferSide::Upload { .. });
        self.progress.entry(id).or_insert(Progress {
            held: 0,
            count: *count,
            told: 0,
            size: descriptor.len,
            up,
        });
        let token = CancellationToken::new();
        let mut started = 0;
        match &transfer.side {
            TransferSide::Upload { write_secret, done_at, refused } => {
                self.server.offer(blob_id, *count, &read, *expires_at);
                for (relay, addrs) in parse_sources(sources) {
                    let relay_id = relay.to_bytes();
                    let mut finished = done_at.iter().chain(refused.iter().map(|(relay, _)| relay));
                    if finished.any(|done| done.as_ref() == relay_id.as_slice()) {
                        continue;
                    }
                    let upload = Upload {
                        message: id,
                        blob_id,
                        count: *count,
                        write: BlobSecret::from_bytes(*write_secret),
                        read: read.clone(),
                        relay,
                        addrs,
                        path: self.spool.outgoing(&blob_id.0),
                    };
                    let (net, reports, cancel) = (self.net.clone(), self.reports.clone(), token.clone());
                    self.tasks.spawn(async move {
                        let outcome = upload.run(net, reports, cancel).await;
                        Finished::Upload { message: id, relay, outcome }
                    });
                    started += 1;
                }
            }
            TransferSide::Download { failed: None } if !here => {
                if self.downloads >= MAX_DOWNLOADS {
                    self.waiting.push_back((id, transfer.clone(), sender));
                    return None;
                }
                self.downloads += 1;
                let download = Download {
                    message: id,
                    blob_id,
                    key: key.clone(),
                    read,
                    count: *count,
                    len: descriptor.len,
                    hash: descriptor.hash,
                    expires_at: *expires_at,
                    sources: sender
                        .filter(|_| *from_sender)
                        .into_iter()
                        .chain(parse_sources(sources))
                        .collect(),
                    path: self.spool.incoming(&id.0),
                };
                let (net, clock, reports, cancel) =
                    (self.net.clone(), self.clock.clone(), self.reports.clone(), token.clone());
                self.tasks.spawn(async move {
                    let outcome = download.run(net, clock, reports, cancel).await;
                    Finished::Download { message: id, outcome }
                });
                started = 1;
            }
            TransferSide::Download { .. } => {}
        }
        if started == 0 {
            return None;
        }
        self.running.insert(id, (token, started));
        up.then_some(Moved { message: id, up, done: 0, size: descriptor.len, waiting: None })
    }

    /// Notes a report; returns what to tell of it: at most once per hundredth of the file, and
    /// when it is done.
    pub(crate) fn on_report(&mut self, report: Report) -> Option<Moved> {
        let (message, held) = match report {
            Report::Uploading { message, held, .. } | Report::Downloading { message, held, .. } => {
                (message, held)
            }
            Report::Waiting { message, why } => {
                let progress = self.progress.get(&message)?;
                let (up, done, size) = (progress.up, progress.done(), progress.size);
                return Some(Moved { message, up, done, size, waiting: Some(why) });
            }
        };
        let progress = self.progress.get_mut(&message)?;
        // An upload reports per relay: the furthest one counts.
        progress.held = progress.held.max(held);
        let step = progress.held.saturating_sub(progress.told);
        let done = progress.held >= progress.count;
        if step == 0 || (!done && u64::from(step) * 100 < u64::from(progress.count)) {
            return None;
        }
        progress.told = progress.held;
        Some(Moved { message, up: progress.up, done: progress.done(), size: progress.size, waiting: None })
    }

    /// Waits for the next task to end (never, with none running).
    pub(crate) async fn next_finished(&mut self) -> Option<Finished> {
        loop {
            let finished = self.tasks.join_next().await?;
            let Ok(finished) = finished else { continue };
            let message = match &finished {
                Finished::Upload { message, .. } => *message,
                Finished::Download { message, .. } => {
                    self.downloads = self.downloads.saturating_sub(1);
                    if let Some((next, transfer, sender)) = self.waiting.pop_front() {
                        // Its file is not here: it waited for a download slot.
                        let _ = self.start(next, &transfer, false, sender);
                    }
                    *message
                }
            };
            if let Some((_, left)) = self.running.get_mut(&message) {
                *left -= 1;
                if *left == 0 {
                    self.running.remove(&message);
                }
            }
            return Some(finished);
        }
    }

    /// Whether any task is running.
    pub(crate) fn is_idle(&self) -> bool {
        self.tasks.is_empty()
    }

    /// Stops the transfers of messages not in `kept` (deleted since they started) and removes
    /// from the spool every blob no kept transfer refers to.
    pub(crate) fn sweep(&mut self, kept: &[(MessageId, Transfer)]) {
        let ids: std::collections::HashSet<MessageId> = kept.iter().map(|(id, _)| *id).collect();
        self.running.retain(|id, (token, _)| {
            let keep = ids.contains(id);
            if !keep {
                token.cancel();
            }
            keep
        });
        self.progress.retain(|id, _| ids.contains(id));
        self.waiting.retain(|(id, ..)| ids.contains(id));
        // Our files are spooled by blob id, theirs by message id (a sender picks the blob id).
        let blobs: std::collections::HashSet<[u8; 16]> = kept
            .iter()
            .filter_map(|(id, transfer)| {
                match (&transfer.side, Descriptor::decode(&transfer.descriptor).ok()?.content) {
                    (TransferSide::Upload { .. }, Content::Blob { blob_id, .. }) => Some(blob_id),
                    (TransferSide::Download { .. }, Content::Blob { .. }) => Some(id.0),
                    (_, Content::Inline(_)) => None,
                }
            })
            .collect();
        self.server.retain(&blobs);
        for (blob_id, path) in self.spool.list() {
            if !blobs.contains(&blob_id) {
                Spool::remove(&path);
            }
        }
    }

    /// Stops every task (the daemon is stopping).
    pub(crate) async fn shutdown(&mut self) {
        for (token, _) in self.running.values() {
            token.cancel();
        }
        self.tasks.shutdown().await;
    }
}

/// The sources of a description that parse: a peer id and its addresses.
fn parse_sources(sources: &[merpati_proto::blob::Source]) -> Vec<Peer> {
    sources
        .iter()
        .filter_map(|source| {
            let peer = PeerId::from_bytes(&source.peer_id).ok()?;
            let addrs = source.addrs.iter().filter_map(|a| Multiaddr::try_from(a.clone()).ok()).collect();
            Some((peer, addrs))
        })
        .collect()
}

/// How long a blob is kept at relays, and so how long a description promises it: the relays'
/// default TTL.
pub(crate) const BLOB_LIFETIME: u64 = 30 * Timestamp::DAY;

#[cfg(test)]
mod tests;
