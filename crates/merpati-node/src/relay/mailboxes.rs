//! The relay's mailbox store: envelopes kept in sled on disk until their owner fetches and
//! deletes them, or they expire.
//!
//! Layout. Everything lives in sled's default tree, under one-byte key prefixes:
//!
//! ```text
//! "!merpati-relay"                 → schema version (u16 BE), the marker of a relay database
//! 'n'                              → the next envelope id (u64 BE)
//! 'e' mailbox(16) id(8 BE)         → deposited_at(8 BE) envelope   (the envelopes, by mailbox)
//! 'i' id(8 BE)                     → mailbox(16) deposited_at(8 BE) len(4 BE) depositor(17)
//!                                    (the id index; layout 1 wrote no depositor)
//! tree "fetched": mailbox(16)       → last fetch (8 BE)   (see [`super::marks`])
//! ```
//!
//! Quotas are checked in [`super::usage`]; the counters are rebuilt from the id index on open.
//!
//! Expiry. An envelope is kept `ttl_ms` from its deposit, or only `unfetched_ttl_ms` when its
//! mailbox has no fetch mark (no one has fetched it within the marks' lifetime): envelopes
//! deposited where no one ever looks do not hold the disk for the full TTL.
//!
//! Fetching is a range scan per mailbox under `'e'`, merged by id. The id index answers "whose is
//! this id" for deletes and is also the expiry index: deposit times are clamped to never go
//! backwards, so id order is time order, and a purge reads the index from its start and stops at
//! the first envelope that is still alive. On open, the same index rebuilds the per-mailbox
//! counters (count, bytes) and the totals, so quotas hold across restarts.
//!
//! Ordering. Ids are handed out and inserted under one lock, so an envelope with a larger id never
//! becomes visible before one with a smaller id; a fetch only looks at ids up to the last one whose
//! insert finished. A fetch that pages with `after` therefore never skips an envelope.
//!
//! Crashes. Each deposit is two plain sled inserts, index entry first, then the envelope; a
//! delete removes the envelope first, then the index entry. sled's batches would make the pair
//! atomic, but each one writes and syncs the log at once, in the caller, under a global lock,
//! which made durable deposits several times slower than the flush they wait for anyway. The
//! order makes the only possible leftover of a crash an index entry without its envelope: it is
//! never returned by a fetch, its owner can still delete it, the purge drops it when it expires,
//! and until then it only counts against its mailbox's quota. sled's log is recovered as a
//! prefix, and inserts happen under one lock, so deposits in flight leave at most one such entry.
//!
//! Durability. A deposit is answered only once a flush that started after its insert has ended:
//! sled's flush, then the syncs of [`crate::sled_disk`] (sled's flush alone survives neither
//! power loss nor a drive's volatile cache). Flushes run on one dedicated thread and are shared: every deposit
//! waiting when a flush starts is answered when it ends (group commit), so concurrent deposits
//! cost one fsync together. A failed flush answers its waiters `Refusal::Internal`.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, HashMap};
use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use merpati_proto::Timestamp;
use merpati_proto::envelope::{Envelope, MAX_ENVELOPE_LEN};
use merpati_proto::mailbox::MailboxId;
use merpati_proto::wire::mailbox::StoredEnvelope;
use merpati_proto::wire::{MAX_FETCH_PAGE_BYTES, Refusal};
use thiserror::Error;
use tokio::sync::{Semaphore, oneshot};

use super::depositor::{Depositor, Network};
use super::marks::{FetchMarks, MARK_LIFETIME_TTLS, MarkCaps};
use super::usage::Usage;
use crate::sled_disk::{self, MarkerError, SyncError, Syncer, sync_path};

/// The database layout version this build writes and reads. Layout 1 (no depositors in the id
/// index, no fetch marks) is upgraded on open: its mailboxes are marked as fetched.
pub const SCHEMA_VERSION: u16 = 2;
/// The most deposits that may be inserted and waiting for their flush at once; more are refused
/// with `RateLimited` rather than queued, so the waiter list stays bounded.
pub const MAX_PENDING_DEPOSITS: usize = 4096;
/// sled's page cache. The default (1 GiB) is for databases that are read far more than written;
/// a relay reads each envelope about once, so a small cache costs little and keeps RSS low.
const CACHE_CAPACITY: u64 = 8 * 1024 * 1024;
/// The longest a flush waits for the deposits it expects to share it (see `flush_loop`).
const GATHER: Duration = Duration::from_micros(300);
/// How many index entries a purge removes per lock hold, so deposits are not stalled by a long one.
const PURGE_CHUNK: usize = 512;
/// The marker key, in sled's default tree.
const MARKER_KEY: &[u8] = b"!merpati-relay";
/// The key of the next id.
const NEXT_ID_KEY: &[u8] = b"n";
const ENVELOPE_PREFIX: u8 = b'e';
const INDEX_PREFIX: u8 = b'i';
/// Index value of layout 1: mailbox(16) deposited_at(8) len(4).
const INDEX_VALUE_V1_LEN: usize = 28;
/// Index value: layout 1's, then the depositor.
const INDEX_VALUE_LEN: usize = INDEX_VALUE_V1_LEN + Depositor::ENCODED_LEN;
/// Envelope value header: deposited_at(8).
const STAMP_LEN: usize = 8;

/// How many days a relay keeps an envelope by default. Senders give up on a message after as
/// long, and nodes look this far back in their mailboxes.
pub const DEFAULT_TTL_DAYS: u64 = 30;
/// How many days a relay keeps an envelope by default when no one has fetched its mailbox.
pub const DEFAULT_UNFETCHED_TTL_DAYS: u64 = 7;

/// The relay's limits on what it stores.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MailboxLimits {
    /// The largest envelope accepted, in bytes. Default: `MAX_ENVELOPE_LEN` (64 KiB).
    pub max_envelope_len: usize,
    /// The most envelopes one mailbox holds. Default: 10 000.
    pub max_envelopes_per_mailbox: u32,
    /// The most envelope bytes one mailbox holds. Default: 64 MiB.
    pub max_bytes_per_mailbox: u64,
    /// How long an envelope is kept, in milliseconds from its deposit. Default:
    /// [`DEFAULT_TTL_DAYS`] (30 days).
    pub ttl_ms: u64,
    /// The most envelope bytes stored in all mailboxes together (sled's own overhead comes on
    /// top). Default: 1 GiB.
    pub disk_budget: u64,
    /// The most mailboxes holding envelopes at once. Default: 100 000.
    pub max_mailboxes: u64,
    /// The most envelope bytes stored from one network (an IPv4 address or an IPv6 /64) and not
    /// yet deleted by their recipients. Default: 64 MiB.
    pub max_bytes_per_network: u64,
    /// The most envelope bytes stored from one peer and not yet deleted. Default: 32 MiB.
    pub max_bytes_per_peer: u64,
    /// The most envelope bytes stored from one IPv6 /48 (all its /64s together) and not yet
    /// deleted. Default: 256 MiB.
    pub max_bytes_per_ipv6_block: u64,
    /// How long an envelope is kept when its mailbox has no fetch mark. Default:
    /// [`DEFAULT_UNFETCHED_TTL_DAYS`] (7 days); at most `ttl_ms`.
    pub unfetched_ttl_ms: u64,
    /// The share of `disk_budget` and `max_mailboxes`, in percent, only mailboxes fetched lately
    /// may use. Default: 20.
    pub live_reserve_percent: u8,
    /// The most fetch marks kept (each a 16-byte key and a 17-byte value in sled). Default:
    /// 1 000 000.
    pub max_fetch_marks: u64,
    /// The most fetch marks the fetches of one network may have created. Default: 50 000 (a node
    /// with a thousand contacts fetches up to about 46 000 mailboxes at its first start: 31 days back
    /// and two weeks ahead per conversation).
    pub max_fetch_marks_per_network: u64,
    /// The most fetch marks the fetches of one IPv6 /48 may have created. Default: 200 000.
    pub max_fetch_marks_per_ipv6_block: u64,
}

impl MailboxLimits {
    /// The part of the disk budget any mailbox may use.
    pub fn open_disk_budget(&self) -> u64 {
        let reserve = self.disk_budget.saturating_mul(u64::from(self.live_reserve_percent.min(100))) / 100;
        self.disk_budget - reserve
    }

    /// The part of the mailbox count any mailbox may use.
    pub fn open_max_mailboxes(&self) -> u64 {
        let reserve = self.max_mailboxes.saturating_mul(u64::from(self.live_reserve_percent.min(100))) / 100;
        self.max_mailboxes - reserve
    }
}

impl Default for MailboxLimits {
    fn default() -> Self {
        Self {
            max_envelope_len: MAX_ENVELOPE_LEN,
            max_envelopes_per_mailbox: 10_000,
            max_bytes_per_mailbox: 64 * 1024 * 1024,
            ttl_ms: DEFAULT_TTL_DAYS * Timestamp::DAY,
            disk_budget: 1024 * 1024 * 1024,
            max_mailboxes: 100_000,
            max_bytes_per_network: 64 * 1024 * 1024,
            max_bytes_per_peer: 32 * 1024 * 1024,
            max_bytes_per_ipv6_block: 256 * 1024 * 1024,
            unfetched_ttl_ms: DEFAULT_UNFETCHED_TTL_DAYS * Timestamp::DAY,
            live_reserve_percent: 20,
            max_fetch_marks: 1_000_000,
            max_fetch_marks_per_network: 50_000,
            max_fetch_marks_per_ipv6_block: 200_000,
        }
    }
}

/// What the relay stores, in numbers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MailboxStats {
    /// Mailboxes holding at least one envelope.
    pub mailboxes: u64,
    /// Envelopes stored.
    pub envelopes: u64,
    /// Envelope bytes stored (without sled's overhead).
    pub bytes: u64,
    /// Fetch marks kept.
    pub fetch_marks: u64,
}

/// Why the mailbox store could not be opened or maintained.
#[derive(Debug, Error)]
pub enum MailboxError {
    /// A file or directory could not be created, read or synced.
    #[error("mailbox store I/O error at {path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// sled failed (unreadable or damaged database files, I/O error).
    #[error("mailbox database error: {0}")]
    Db(#[from] sled::Error),
    /// The database holds something that is not a relay's mailboxes.
    #[error("the database is not a Merpati relay database: {reason}")]
    Foreign {
        /// What gave it away.
        reason: &'static str,
    },
    /// The database was written by a newer version.
    #[error("the relay database has layout version {found}; this build reads {supported}")]
    TooNew {
        /// The version found.
        found: u16,
        /// The version this build reads.
        supported: u16,
    },
    /// A record in the database does not have the expected shape.
    #[error("damaged mailbox record: {what}")]
    Corrupt {
        /// Which record.
        what: &'static str,
    },
}

impl From<MarkerError> for MailboxError {
    fn from(error: MarkerError) -> Self {
        match error {
            MarkerError::Foreign(reason) => Self::Foreign { reason },
            MarkerError::TooNew(found) => Self::TooNew { found, supported: SCHEMA_VERSION },
            MarkerError::Db(e) => Self::Db(e),
        }
    }
}

impl From<SyncError> for MailboxError {
    fn from(error: SyncError) -> Self {
        match error {
            SyncError::Db(e) => Self::Db(e),
            SyncError::Io { path, source } => Self::Io { path, source },
        }
    }
}

/// The relay's mailboxes: a cloneable handle to one sled database and its flusher thread.
#[derive(Clone)]
pub struct Mailboxes {
    inner: Arc<Inner>,
}

impl fmt::Debug for Mailboxes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mailboxes")
            .field("dir", &self.inner.dir)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

struct Inner {
    dir: PathBuf,
    db: sled::Db,
    limits: MailboxLimits,
    /// Counters and the id allocator; held across "check quotas, allocate, insert" so those are
    /// one step for every other deposit, delete and purge.
    state: Mutex<State>,
    /// The largest id whose insert has finished (0: none). Fetches look no further.
    visible: AtomicU64,
    flusher: Flusher,
    /// Bounds the deposits waiting for a flush.
    pending: Semaphore,
    marks: FetchMarks,
    /// Ids below this one were judged for the unfetched TTL by an earlier purge.
    unfetched_checked: AtomicU64,
}

#[derive(Default)]
struct State {
    next_id: u64,
    /// The value of the stored next-id key.
    persisted_next_id: u64,
    /// The latest deposit time stored; later deposits are stamped no earlier.
    last_stamp: u64,
    usage: Usage,
}

impl Mailboxes {
    /// Opens (or creates) the mailbox database in `dir` and starts its flusher thread.
    ///
    /// Refuses a database that is not a relay's ([`MailboxError::Foreign`]) or is of a newer
    /// layout ([`MailboxError::TooNew`]); damaged files give [`MailboxError::Db`] or
    /// [`MailboxError::Corrupt`].
    pub fn open(dir: &Path, limits: MailboxLimits) -> Result<Self, MailboxError> {
        create_private_dir(dir)?;
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(CACHE_CAPACITY)
            // Envelopes are deposited once and deleted soon: favour reclaiming space over write
            // speed, since the relay's disk is the resource its operator budgets.
            .mode(sled::Mode::LowSpace)
            .open()?;
        let found = sled_disk::check_marker(&db, MARKER_KEY, SCHEMA_VERSION, "no relay schema marker")?;
        let state = rebuild_state(&db)?;
        let caps = MarkCaps {
            total: limits.max_fetch_marks,
            per_network: limits.max_fetch_marks_per_network,
            per_ipv6_block: limits.max_fetch_marks_per_ipv6_block,
        };
        let marks = FetchMarks::open(&db, caps)?;
        if found < SCHEMA_VERSION {
            // Layout 1 kept no marks: what it holds was deposited under the full TTL, so its
            // mailboxes count as fetched when the last envelope came.
            marks.mark(state.usage.mailboxes(), None, Timestamp(state.last_stamp))?;
            db.insert(MARKER_KEY, &SCHEMA_VERSION.to_be_bytes())?;
        }
        let mut syncer = Syncer::open(db.clone(), dir)?;
        // The marker of a new database and the directory entries sled created become durable
        // before anything is stored in it.
        syncer.sync()?;
        sync_path(dir)?;
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            sync_path(parent)?;
        }
        let visible = AtomicU64::new(state.next_id.saturating_sub(1));
        let flusher = Flusher::start(syncer)?;
        Ok(Self {
            inner: Arc::new(Inner {
                dir: dir.to_path_buf(),
                db,
                limits,
                state: Mutex::new(state),
                visible,
                flusher,
                pending: Semaphore::new(MAX_PENDING_DEPOSITS),
                marks,
                unfetched_checked: AtomicU64::new(0),
            }),
        })
    }

    /// The limits this store enforces.
    pub fn limits(&self) -> &MailboxLimits {
        &self.inner.limits
    }

    /// Stores `envelope` from `depositor` in `mailbox` and returns its id, once it is durable.
    ///
    /// Refuses, changing nothing: an envelope over `max_envelope_len` (`TooLarge`), one that does
    /// not parse or whose header names another mailbox (`Malformed`), a mailbox at its count or
    /// byte quota (`MailboxFull`), a depositor at its network's or peer's quota (`RateLimited`,
    /// see [`super::usage`]), a relay at its disk budget or mailbox count (`RelayFull`; a reserve
    /// is kept for mailboxes fetched lately), and too many deposits waiting for a flush
    /// (`RateLimited`). A storage failure, including a failed flush, gives `Internal`: the
    /// envelope may then be stored but was never claimed durable.
    pub async fn deposit(
        &self,
        mailbox: MailboxId,
        envelope: Vec<u8>,
        depositor: Depositor,
        now: Timestamp,
    ) -> Result<u64, Refusal> {
        let max = self.inner.limits.max_envelope_len;
        if envelope.len() > max {
            return Err(Refusal::TooLarge { max: u32::try_from(max).unwrap_or(u32::MAX) });
        }
        match Envelope::decode(&envelope) {
            Ok(parsed) if parsed.header.mailbox == mailbox => {}
            _ => return Err(Refusal::Malformed),
        }
        let Ok(_slot) = self.inner.pending.try_acquire() else {
            return Err(Refusal::RateLimited { retry_after_ms: 100 });
        };
        let live = self.inner.marks.is_live(&mailbox, now).map_err(internal("reading fetch marks"))?;
        let id = self.insert(mailbox, &envelope, &depositor, live, now)?;
        // Registered after the insert returned, so the flush that answers covers it.
        let durable = self.inner.flusher.wait();
        match durable.await {
            Ok(true) => Ok(id),
            _ => Err(Refusal::Internal),
        }
    }

    /// Checks quotas and inserts, as one step under the state lock.
    fn insert(
        &self,
        mailbox: MailboxId,
        envelope: &[u8],
        depositor: &Depositor,
        live: bool,
        now: Timestamp,
    ) -> Result<u64, Refusal> {
        let len = envelope.len() as u64;
        let mut state = self.lock();
        state.usage.admit(&self.inner.limits, &mailbox, depositor, len, live)?;
        let id = state.next_id;
        let stamp = now.millis().max(state.last_stamp);
        let mut value = Vec::with_capacity(STAMP_LEN + envelope.len());
        value.extend_from_slice(&stamp.to_be_bytes());
        value.extend_from_slice(envelope);
        let mut index = [0u8; INDEX_VALUE_LEN];
        index[..16].copy_from_slice(&mailbox.0);
        index[16..24].copy_from_slice(&stamp.to_be_bytes());
        index[24..INDEX_VALUE_V1_LEN]
            .copy_from_slice(&u32::try_from(envelope.len()).unwrap_or(u32::MAX).to_be_bytes());
        index[INDEX_VALUE_V1_LEN..].copy_from_slice(&depositor.encode());
        // Index first: see "Crashes" in the module documentation.
        state.next_id = id + 1;
        if let Err(e) = self.inner.db.insert(index_key(id), &index[..]) {
            tracing::error!(error = %e, "relay: storing a deposit failed");
            // The id is not handed out again; nothing else changed.
            return Err(Refusal::Internal);
        }
        // From here the index entry counts, as it will after a restart, even if the envelope
        // itself is not written (harmless, see "Crashes"): the quotas never under-count.
        state.last_stamp = stamp;
        state.usage.add(mailbox, Some(depositor), len);
        if let Err(e) = self.inner.db.insert(envelope_key(&mailbox, id), value) {
            tracing::error!(error = %e, "relay: storing a deposit failed");
            return Err(Refusal::Internal);
        }
        // Still under the lock: ids become visible in order.
        self.inner.visible.store(id, Ordering::Release);
        Ok(id)
    }

    /// Envelopes of `owned` (mailboxes whose fetch tokens were checked) with ids above `after`, in
    /// increasing id order
    /// across those mailboxes: at most `limit` of them and at most `MAX_FETCH_PAGE_BYTES` bytes.
    /// The flag says whether more are waiting. Expired envelopes are skipped. Marks the
    /// mailboxes as fetched by `fetcher`'s network (see [`super::marks`]), whatever they hold.
    pub fn fetch(
        &self,
        owned: &[MailboxId],
        after: Option<u64>,
        limit: u32,
        fetcher: Option<Network>,
        now: Timestamp,
    ) -> Result<(Vec<StoredEnvelope>, bool), Refusal> {
        let mailboxes: BTreeSet<MailboxId> = owned.iter().copied().collect();
        if self.inner.marks.mark(&mailboxes, fetcher, now).map_err(internal("writing fetch marks"))? {
            self.inner.flusher.request();
        }
        let visible = self.inner.visible.load(Ordering::Acquire);
        let first = match after {
            None => 0,
            Some(after) => match after.checked_add(1) {
                Some(first) => first,
                None => return Ok((Vec::new(), false)),
            },
        };
        if first > visible || limit == 0 {
            return Ok((Vec::new(), false));
        }
        let mut cursors = Vec::with_capacity(mailboxes.len());
        let mut heap = BinaryHeap::with_capacity(mailboxes.len());
        for mailbox in mailboxes {
            let mut range =
                self.inner.db.range(envelope_key(&mailbox, first)..=envelope_key(&mailbox, visible));
            if let Some(item) = next_item(&mut range)? {
                heap.push(Reverse((item.id, cursors.len())));
                cursors.push(Cursor { mailbox, range, current: Some(item) });
            }
        }
        let ttl = self.inner.limits.ttl_ms;
        let mut items = Vec::new();
        let mut bytes = 0usize;
        let mut more = false;
        while let Some(Reverse((_, at))) = heap.pop() {
            let cursor = &mut cursors[at];
            let Some(item) = cursor.current.take() else { continue };
            if item.stamp.saturating_add(ttl) > now.millis() {
                let envelope = &item.value[STAMP_LEN..];
                if items.len() >= limit as usize || bytes + envelope.len() > MAX_FETCH_PAGE_BYTES {
                    more = true;
                    break;
                }
                bytes += envelope.len();
                items.push(StoredEnvelope {
                    mailbox: cursor.mailbox,
                    id: item.id,
                    envelope: envelope.to_vec(),
                });
            }
            if let Some(next) = next_item(&mut cursor.range)? {
                heap.push(Reverse((next.id, at)));
                cursor.current = Some(next);
            }
        }
        Ok((items, more))
    }

    /// Deletes the envelopes named by `ids` from `mailbox` (whose fetch token was checked) and
    /// returns how many were there. Ids already gone and ids of other mailboxes are passed over
    /// alike, so the answer tells no one whether an id exists elsewhere (or when its owner fetched it). Durable
    /// at the next flush (which the call asks for, without waiting for it).
    pub fn delete(&self, mailbox: &MailboxId, ids: &[u64]) -> Result<u32, Refusal> {
        let mailbox = *mailbox;
        let ids: BTreeSet<u64> = ids.iter().copied().collect();
        let mut state = self.lock();
        let mut found = Vec::with_capacity(ids.len());
        for id in ids {
            let Some(value) = self.inner.db.get(index_key(id)).map_err(internal("reading the id index"))?
            else {
                continue;
            };
            let entry = IndexEntry::parse(&value).map_err(internal("reading the id index"))?;
            if entry.mailbox == mailbox {
                found.push((id, entry));
            }
        }
        if found.is_empty() {
            return Ok(0);
        }
        self.persist_next_id(&mut state).map_err(internal("deleting envelopes"))?;
        for (id, entry) in &found {
            // Envelope first: see "Crashes" in the module documentation.
            self.inner
                .db
                .remove(envelope_key(&mailbox, *id))
                .and_then(|_| self.inner.db.remove(index_key(*id)))
                .map_err(internal("deleting envelopes"))?;
            state.usage.release(mailbox, entry.depositor.as_ref(), u64::from(entry.len));
        }
        drop(state);
        self.inner.flusher.request();
        Ok(u32::try_from(found.len()).unwrap_or(u32::MAX))
    }

    /// Drops every envelope deposited `ttl_ms` or longer before `now`, and every one deposited
    /// `unfetched_ttl_ms` or longer before `now` into a mailbox without a fetch mark; then the
    /// marks past their lifetime. Returns how many envelopes went.
    ///
    /// Two reads of the id index, both in id (so deposit time) order: from its oldest entry to
    /// the first one younger than the TTL; and from where the last purge left off to the first
    /// one younger than the unfetched TTL. Each envelope is so judged for the unfetched TTL once,
    /// when it reaches that age (one marked then keeps the full TTL), and a purge costs what
    /// expired since the last one, not what is kept.
    pub fn purge_expired(&self, now: Timestamp) -> Result<u64, MailboxError> {
        let limits = &self.inner.limits;
        let ttl = limits.ttl_ms;
        let unfetched_ttl = limits.unfetched_ttl_ms.min(ttl);
        let (mut purged, _) = self.purge_from(0, now, ttl, |_| Ok(true))?;
        let start = self.inner.unfetched_checked.load(Ordering::Relaxed);
        let mut marked: HashMap<MailboxId, bool> = HashMap::new();
        let (unfetched, checked) = self.purge_from(start, now, unfetched_ttl, |entry| {
            if let Some(fetched) = marked.get(&entry.mailbox) {
                return Ok(!*fetched);
            }
            let fetched = self.inner.marks.last_fetch(&entry.mailbox)?.is_some();
            marked.insert(entry.mailbox, fetched);
            Ok(!fetched)
        })?;
        self.inner.unfetched_checked.store(checked, Ordering::Relaxed);
        purged += unfetched;
        let marks_purged = self.inner.marks.purge(now, MARK_LIFETIME_TTLS.saturating_mul(ttl))?;
        if purged > 0 || marks_purged > 0 {
            self.inner.flusher.request();
        }
        Ok(purged)
    }

    /// Drops the envelopes from id `from` on that are `age` or older at `now` and that `doomed`
    /// picks, stopping at the first younger one; returns how many went and the id to start from
    /// next time. Works in chunks, so deposits are not held up by a long purge.
    fn purge_from(
        &self,
        from: u64,
        now: Timestamp,
        age: u64,
        mut doomed: impl FnMut(&IndexEntry) -> Result<bool, MailboxError>,
    ) -> Result<(u64, u64), MailboxError> {
        let mut purged = 0u64;
        let mut next = from;
        loop {
            let mut state = self.lock();
            let mut picked = Vec::new();
            let mut done = true;
            for (scanned, entry) in self.inner.db.range(index_key(next)..=index_key(u64::MAX)).enumerate() {
                let (key, value) = entry?;
                let id = parse_index_key(&key)?;
                let entry = IndexEntry::parse(&value)?;
                if now.millis().saturating_sub(entry.stamp) < age {
                    break;
                }
                if scanned == PURGE_CHUNK {
                    done = false;
                    break;
                }
                next = id.saturating_add(1);
                if doomed(&entry)? {
                    picked.push((id, entry));
                }
            }
            if !picked.is_empty() {
                self.persist_next_id(&mut state)?;
            }
            for (id, entry) in picked {
                self.inner.db.remove(envelope_key(&entry.mailbox, id))?;
                self.inner.db.remove(index_key(id))?;
                state.usage.release(entry.mailbox, entry.depositor.as_ref(), u64::from(entry.len));
                purged += 1;
            }
            drop(state);
            if done {
                return Ok((purged, next));
            }
        }
    }

    /// Mailboxes, envelopes and envelope bytes stored now.
    pub fn stats(&self) -> MailboxStats {
        MailboxStats { fetch_marks: self.inner.marks.count(), ..self.lock().usage.stats() }
    }

    /// How many flushes (sled flush plus fsync) have completed since open; with group commit,
    /// fewer than the deposits made.
    pub fn flushes(&self) -> u64 {
        self.inner.flusher.flushes()
    }

    /// The database, for the relay's other stores (blobs), which share its flushes.
    pub(super) fn db(&self) -> &sled::Db {
        &self.inner.db
    }

    /// Asks for a flush soon, without waiting for it (after a removal).
    pub(super) fn request_flush(&self) {
        self.inner.flusher.request();
    }

    /// Makes everything stored so far durable, waiting for it.
    pub async fn flush(&self) -> Result<(), Refusal> {
        match self.inner.flusher.wait().await {
            Ok(true) => Ok(()),
            _ => Err(Refusal::Internal),
        }
    }

    /// Stores the next id before envelopes are removed: once the envelope with the largest id is
    /// gone, the index no longer tells a restart where ids stand.
    fn persist_next_id(&self, state: &mut State) -> Result<(), sled::Error> {
        if state.persisted_next_id != state.next_id {
            self.inner.db.insert(NEXT_ID_KEY, &state.next_id.to_be_bytes())?;
            state.persisted_next_id = state.next_id;
        }
        Ok(())
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// One mailbox's range scan in a fetch, with its next item.
struct Cursor {
    mailbox: MailboxId,
    range: sled::Iter,
    current: Option<Item>,
}

struct Item {
    id: u64,
    stamp: u64,
    value: sled::IVec,
}

fn next_item(range: &mut sled::Iter) -> Result<Option<Item>, Refusal> {
    let Some(entry) = range.next() else { return Ok(None) };
    let (key, value) = entry.map_err(internal("reading envelopes"))?;
    let id = key
        .get(17..25)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(u64::from_be_bytes)
        .ok_or_else(|| internal("reading envelopes")(MailboxError::Corrupt { what: "envelope key" }))?;
    let stamp =
        value.get(..STAMP_LEN).and_then(|b| <[u8; 8]>::try_from(b).ok()).map(u64::from_be_bytes).ok_or_else(
            || internal("reading envelopes")(MailboxError::Corrupt { what: "envelope record" }),
        )?;
    Ok(Some(Item { id, stamp, value }))
}

/// A parsed id index value.
struct IndexEntry {
    mailbox: MailboxId,
    stamp: u64,
    len: u32,
    /// Unknown for envelopes stored by layout 1.
    depositor: Option<Depositor>,
}

impl IndexEntry {
    fn parse(value: &[u8]) -> Result<Self, MailboxError> {
        let corrupt = MailboxError::Corrupt { what: "id index entry" };
        if value.len() != INDEX_VALUE_LEN && value.len() != INDEX_VALUE_V1_LEN {
            return Err(corrupt);
        }
        let mut mailbox = [0u8; 16];
        mailbox.copy_from_slice(&value[..16]);
        let mut stamp = [0u8; 8];
        stamp.copy_from_slice(&value[16..24]);
        let mut len = [0u8; 4];
        len.copy_from_slice(&value[24..INDEX_VALUE_V1_LEN]);
        let depositor = match value.get(INDEX_VALUE_V1_LEN..) {
            Some(rest) if !rest.is_empty() => {
                let bytes: &[u8; Depositor::ENCODED_LEN] = rest.try_into().map_err(|_| corrupt)?;
                Some(Depositor::decode(bytes).ok_or(MailboxError::Corrupt { what: "id index entry" })?)
            }
            _ => None,
        };
        Ok(Self {
            mailbox: MailboxId(mailbox),
            stamp: u64::from_be_bytes(stamp),
            len: u32::from_be_bytes(len),
            depositor,
        })
    }
}

fn envelope_key(mailbox: &MailboxId, id: u64) -> [u8; 25] {
    let mut key = [0u8; 25];
    key[0] = ENVELOPE_PREFIX;
    key[1..17].copy_from_slice(&mailbox.0);
    key[17..].copy_from_slice(&id.to_be_bytes());
    key
}

fn index_key(id: u64) -> [u8; 9] {
    let mut key = [0u8; 9];
    key[0] = INDEX_PREFIX;
    key[1..].copy_from_slice(&id.to_be_bytes());
    key
}

fn parse_index_key(key: &[u8]) -> Result<u64, MailboxError> {
    key.get(1..)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(u64::from_be_bytes)
        .ok_or(MailboxError::Corrupt { what: "id index key" })
}

/// Logs a storage error (no envelope content, no tokens) and turns it into `Internal`.
fn internal<E: fmt::Display>(what: &'static str) -> impl Fn(E) -> Refusal {
    move |e| {
        tracing::error!(error = %e, "relay: {what} failed");
        Refusal::Internal
    }
}

/// Rebuilds the counters and the id allocator from the id index.
fn rebuild_state(db: &sled::Db) -> Result<State, MailboxError> {
    let mut state = State { next_id: 1, ..State::default() };
    if let Some(value) = db.get(NEXT_ID_KEY)? {
        let next = <[u8; 8]>::try_from(value.as_ref())
            .map(u64::from_be_bytes)
            .map_err(|_| MailboxError::Corrupt { what: "next id" })?;
        state.next_id = next.max(1);
        state.persisted_next_id = next;
    }
    for entry in db.scan_prefix([INDEX_PREFIX]) {
        let (key, value) = entry?;
        let id = parse_index_key(&key)?;
        let entry = IndexEntry::parse(&value)?;
        state.next_id = state.next_id.max(id.saturating_add(1));
        state.last_stamp = state.last_stamp.max(entry.stamp);
        state.usage.add(entry.mailbox, entry.depositor.as_ref(), u64::from(entry.len));
    }
    Ok(state)
}

/// Creates a directory (and its parents) only the owner can enter, unless it exists.
fn create_private_dir(path: &Path) -> Result<(), MailboxError> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    match builder.create(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(source) => Err(MailboxError::Io { path: path.to_path_buf(), source }),
    }
}

/// The flusher thread and the queue of deposits waiting for it.
struct Flusher {
    shared: Arc<FlushShared>,
    thread: Option<JoinHandle<()>>,
}

struct FlushShared {
    queue: Mutex<FlushQueue>,
    wake: Condvar,
    flushes: AtomicU64,
}

#[derive(Default)]
struct FlushQueue {
    /// Waiting for the next flush to start and end. Bounded by `MAX_PENDING_DEPOSITS` deposits
    /// plus the callers of `flush`.
    waiters: Vec<oneshot::Sender<bool>>,
    /// Something changed that no waiter asked to be made durable (a delete, a purge).
    dirty: bool,
    stop: bool,
}

impl Flusher {
    fn start(mut syncer: Syncer) -> Result<Self, MailboxError> {
        let shared = Arc::new(FlushShared {
            queue: Mutex::new(FlushQueue::default()),
            wake: Condvar::new(),
            flushes: AtomicU64::new(0),
        });
        let thread_shared = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("relay-flusher".into())
            .spawn(move || flush_loop(&thread_shared, &mut syncer))
            .map_err(|source| MailboxError::Io { path: PathBuf::from("relay-flusher thread"), source })?;
        Ok(Self { shared, thread: Some(thread) })
    }

    /// Resolves `true` once a flush that started after this call has made everything durable,
    /// `false` if that flush failed.
    fn wait(&self) -> oneshot::Receiver<bool> {
        let (tx, rx) = oneshot::channel();
        let mut queue = self.shared.lock();
        if queue.stop {
            drop(tx);
        } else {
            queue.waiters.push(tx);
            self.shared.wake.notify_one();
        }
        rx
    }

    /// Asks for a flush soon, without waiting for it.
    fn request(&self) {
        let mut queue = self.shared.lock();
        queue.dirty = true;
        self.shared.wake.notify_one();
    }

    fn flushes(&self) -> u64 {
        self.shared.flushes.load(Ordering::Relaxed)
    }
}

impl FlushShared {
    fn lock(&self) -> MutexGuard<'_, FlushQueue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for Flusher {
    fn drop(&mut self) {
        self.shared.lock().stop = true;
        self.shared.wake.notify_one();
        if let Some(thread) = self.thread.take() {
            // The thread finishes the flush it may be running and one for the waiters left.
            let _ = thread.join();
        }
    }
}

fn flush_loop(shared: &FlushShared, syncer: &mut Syncer) {
    // How many deposits the next flush can expect: those answered by the last one (their
    // senders tend to come straight back) plus those that arrived while it ran.
    let mut expected = 1usize;
    loop {
        let waiters = {
            let mut queue = shared.lock();
            while queue.waiters.is_empty() && !queue.dirty && !queue.stop {
                queue = shared.wake.wait(queue).unwrap_or_else(PoisonError::into_inner);
            }
            if queue.waiters.is_empty() && !queue.dirty {
                // Stopping with nothing to make durable.
                return;
            }
            // Gather: a flush costs the same for one deposit as for many, so under concurrent
            // load it pays to wait a moment for the expected company. A lone depositor expects
            // none and is flushed at once; a wrong guess costs at most `GATHER`.
            if !queue.waiters.is_empty() && queue.waiters.len() < expected && !queue.stop {
                let deadline = Instant::now() + GATHER;
                while queue.waiters.len() < expected && !queue.stop {
                    let Some(left) = deadline.checked_duration_since(Instant::now()).filter(|d| !d.is_zero())
                    else {
                        break;
                    };
                    queue = shared.wake.wait_timeout(queue, left).unwrap_or_else(PoisonError::into_inner).0;
                }
            }
            queue.dirty = false;
            std::mem::take(&mut queue.waiters)
        };
        let ok = match syncer.sync() {
            Ok(()) => true,
            Err(e) => {
                tracing::error!(error = %e, "relay: flushing the mailbox database failed");
                false
            }
        };
        shared.flushes.fetch_add(1, Ordering::Relaxed);
        let arrived = shared.lock().waiters.len();
        expected = (waiters.len() + arrived).clamp(1, MAX_PENDING_DEPOSITS);
        for waiter in waiters {
            // A waiter that gave up (its request was dropped) is no error.
            let _ = waiter.send(ok);
        }
        // When stopping, the next round flushes for any waiter that came meanwhile, then returns.
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use merpati_proto::envelope::{Header, Kind, VERSION};

    use super::*;

    /// A valid envelope of exactly `len` bytes (at least 45) addressed to `mailbox`.
    pub(crate) fn envelope(mailbox: MailboxId, len: usize, fill: u8) -> Vec<u8> {
        let header =
            Header { version: VERSION, kind: Kind::Session, mailbox, epoch: 1, sub_epoch: 0, index: 0 };
        let bytes = Envelope { header, open: None, ciphertext: vec![fill; len - HEADER_FIXED] }.encode();
        assert_eq!(bytes.len(), len);
        bytes
    }
    const HEADER_FIXED: usize = merpati_proto::envelope::HEADER_LEN + 2;

    pub(crate) fn mailbox(n: u8) -> MailboxId {
        MailboxId([n; 16])
    }

    /// A depositor with a peer id of its own, from one documentation address.
    pub(crate) fn someone() -> Depositor {
        Depositor::new(&libp2p::PeerId::random(), Some([192, 0, 2, 1].into()))
    }

    /// Opens the store at `dir`, waiting while a copy just dropped still holds its lock (sled's
    /// background flusher lets go of it shortly after the drop).
    pub(crate) fn open(dir: &Path, limits: MailboxLimits) -> Mailboxes {
        for _ in 0..200 {
            match Mailboxes::open(dir, limits) {
                Err(MailboxError::Db(e)) if e.to_string().contains("could not acquire lock") => {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                result => return result.unwrap(),
            }
        }
        Mailboxes::open(dir, limits).unwrap()
    }

    fn ids(page: &(Vec<StoredEnvelope>, bool)) -> Vec<u64> {
        page.0.iter().map(|e| e.id).collect()
    }

    const T0: Timestamp = Timestamp(1_700_000_000_000);

    #[tokio::test]
    async fn deposit_fetch_delete_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let boxes = open(dir.path(), MailboxLimits::default());
        let mut deposited = Vec::new();
        for (i, n) in [1u8, 2, 1, 1, 2].into_iter().enumerate() {
            let bytes = envelope(mailbox(n), 512, i as u8);
            let id = boxes.deposit(mailbox(n), bytes.clone(), someone(), T0).await.unwrap();
            deposited.push((n, id, bytes));
        }
        let all: Vec<u64> = deposited.iter().map(|d| d.1).collect();
        assert!(all.windows(2).all(|w| w[0] < w[1]), "ids increase: {all:?}");
        assert_eq!(
            boxes.stats(),
            MailboxStats { mailboxes: 2, envelopes: 5, bytes: 5 * 512, fetch_marks: 0 }
        );

        let one = boxes.fetch(&[mailbox(1)], None, 64, None, T0).unwrap();
        assert_eq!(ids(&one), vec![all[0], all[2], all[3]]);
        assert!(!one.1);
        assert_eq!(one.0[1].envelope, deposited[2].2);
        assert_eq!(one.0[1].mailbox, mailbox(1));
        // Both mailboxes at once: merged in id order, and a mailbox named twice counts once.
        let both = boxes.fetch(&[mailbox(2), mailbox(1), mailbox(2)], None, 64, None, T0).unwrap();
        assert_eq!(ids(&both), all);
        let after = boxes.fetch(&[mailbox(1), mailbox(2)], Some(all[2]), 64, None, T0).unwrap();
        assert_eq!(ids(&after), all[3..].to_vec());

        assert_eq!(boxes.delete(&mailbox(1), &[all[0], all[2], all[2], 999]).unwrap(), 2);
        assert_eq!(boxes.delete(&mailbox(1), &[all[0]]).unwrap(), 0, "a repeated delete is harmless");
        assert_eq!(ids(&boxes.fetch(&[mailbox(1)], None, 64, None, T0).unwrap()), vec![all[3]]);
        assert_eq!(
            boxes.stats(),
            MailboxStats { mailboxes: 2, envelopes: 3, bytes: 3 * 512, fetch_marks: 2 }
        );
        assert_eq!(boxes.delete(&mailbox(2), &[all[1], all[4]]).unwrap(), 2);
        assert_eq!(boxes.stats().mailboxes, 1);
    }

    #[tokio::test]
    async fn deposits_survive_a_restart_and_ids_keep_increasing() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = envelope(mailbox(1), 1024, 9);
        let (first, second) = {
            let boxes = open(dir.path(), MailboxLimits::default());
            let first = boxes.deposit(mailbox(1), bytes.clone(), someone(), T0).await.unwrap();
            let second =
                boxes.deposit(mailbox(2), envelope(mailbox(2), 512, 1), someone(), T0).await.unwrap();
            // Deleted: the next id must still be above it after the restart.
            boxes.delete(&mailbox(2), &[second]).unwrap();
            (first, second)
        };
        let boxes = open(dir.path(), MailboxLimits::default());
        let page = boxes.fetch(&[mailbox(1), mailbox(2)], None, 64, None, T0).unwrap();
        assert_eq!(page.0.len(), 1);
        assert_eq!((page.0[0].id, &page.0[0].envelope), (first, &bytes));
        // The fetch marked both mailboxes, once each.
        assert_eq!(boxes.stats(), MailboxStats { mailboxes: 1, envelopes: 1, bytes: 1024, fetch_marks: 2 });
        let third = boxes.deposit(mailbox(1), envelope(mailbox(1), 512, 2), someone(), T0).await.unwrap();
        assert!(third > second, "{third} > {second}");
    }

    #[tokio::test]
    async fn quotas_refuse_and_change_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let limits = MailboxLimits {
            max_envelopes_per_mailbox: 3,
            max_bytes_per_mailbox: 2048,
            disk_budget: 4096,
            max_mailboxes: 3,
            ..MailboxLimits::default()
        };
        let boxes = open(dir.path(), limits);
        for _ in 0..3 {
            boxes.deposit(mailbox(1), envelope(mailbox(1), 512, 0), someone(), T0).await.unwrap();
        }
        let check = |boxes: &Mailboxes| {
            (
                boxes.stats(),
                ids(&boxes
                    .fetch(&[mailbox(1), mailbox(2), mailbox(3), mailbox(4)], None, 64, None, T0)
                    .unwrap()),
            )
        };
        let before = check(&boxes);
        // Count quota.
        assert_eq!(
            boxes.deposit(mailbox(1), envelope(mailbox(1), 100, 0), someone(), T0).await,
            Err(Refusal::MailboxFull)
        );
        // Byte quota.
        boxes.deposit(mailbox(2), envelope(mailbox(2), 1024, 0), someone(), T0).await.unwrap();
        let before_bytes = check(&boxes);
        assert_eq!(
            boxes.deposit(mailbox(2), envelope(mailbox(2), 1025, 0), someone(), T0).await,
            Err(Refusal::MailboxFull)
        );
        assert_eq!(check(&boxes), before_bytes);
        assert_ne!(before, before_bytes);
        // Disk budget: 1536 + 1024 stored, 1537 more would pass 4096.
        assert_eq!(
            boxes.deposit(mailbox(3), envelope(mailbox(3), 1537, 0), someone(), T0).await,
            Err(Refusal::RelayFull)
        );
        assert_eq!(check(&boxes), before_bytes);
        // Mailbox count: a third mailbox fits, a fourth does not.
        boxes.deposit(mailbox(3), envelope(mailbox(3), 100, 0), someone(), T0).await.unwrap();
        let full = check(&boxes);
        assert_eq!(
            boxes.deposit(mailbox(4), envelope(mailbox(4), 100, 0), someone(), T0).await,
            Err(Refusal::RelayFull)
        );
        assert_eq!(check(&boxes), full);
        // The quotas hold across a restart.
        drop(boxes);
        let boxes = open(dir.path(), limits);
        assert_eq!(check(&boxes), full);
        assert_eq!(
            boxes.deposit(mailbox(1), envelope(mailbox(1), 100, 0), someone(), T0).await,
            Err(Refusal::MailboxFull)
        );
        assert_eq!(
            boxes.deposit(mailbox(4), envelope(mailbox(4), 100, 0), someone(), T0).await,
            Err(Refusal::RelayFull)
        );
    }

    #[tokio::test]
    async fn oversized_and_malformed_deposits_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let limits = MailboxLimits { max_envelope_len: 1024, ..MailboxLimits::default() };
        let boxes = open(dir.path(), limits);
        assert_eq!(
            boxes.deposit(mailbox(1), envelope(mailbox(1), 1025, 0), someone(), T0).await,
            Err(Refusal::TooLarge { max: 1024 })
        );
        // The header names another mailbox.
        assert_eq!(
            boxes.deposit(mailbox(1), envelope(mailbox(2), 512, 0), someone(), T0).await,
            Err(Refusal::Malformed)
        );
        // Not an envelope at all, and an envelope cut short.
        assert_eq!(boxes.deposit(mailbox(1), vec![0xAB; 512], someone(), T0).await, Err(Refusal::Malformed));
        let mut cut = envelope(mailbox(1), 512, 0);
        cut.truncate(30);
        assert_eq!(boxes.deposit(mailbox(1), cut, someone(), T0).await, Err(Refusal::Malformed));
        assert_eq!(boxes.stats(), MailboxStats::default());
    }

    #[tokio::test]
    async fn another_mailbox_sees_nothing_and_deletes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let boxes = open(dir.path(), MailboxLimits::default());
        let id = boxes.deposit(mailbox(1), envelope(mailbox(1), 512, 0), someone(), T0).await.unwrap();
        let mine = boxes.deposit(mailbox(2), envelope(mailbox(2), 512, 0), someone(), T0).await.unwrap();
        assert_eq!(ids(&boxes.fetch(&[mailbox(2)], None, 64, None, T0).unwrap()), vec![mine]);
        assert_eq!(ids(&boxes.fetch(&[mailbox(3)], None, 64, None, T0).unwrap()), Vec::<u64>::new());
        // An id of another mailbox is passed over exactly like one that is gone: no answer tells
        // whether it exists (or when its owner fetched it).
        let gone = id + 1_000;
        assert_eq!(boxes.delete(&mailbox(2), &[id]), Ok(0));
        assert_eq!(boxes.delete(&mailbox(2), &[gone]), Ok(0));
        assert_eq!(ids(&boxes.fetch(&[mailbox(1), mailbox(2)], None, 64, None, T0).unwrap()), vec![id, mine]);
        assert_eq!(boxes.stats().envelopes, 2);
        // Next to the mailbox's own ids it deletes only those.
        assert_eq!(boxes.delete(&mailbox(2), &[mine, id]), Ok(1));
        assert_eq!(ids(&boxes.fetch(&[mailbox(1), mailbox(2)], None, 64, None, T0).unwrap()), vec![id]);
    }

    #[tokio::test]
    async fn expired_envelopes_are_hidden_and_purged() {
        let dir = tempfile::tempdir().unwrap();
        let limits = MailboxLimits { ttl_ms: 1_000, ..MailboxLimits::default() };
        let boxes = open(dir.path(), limits);
        let old = boxes.deposit(mailbox(1), envelope(mailbox(1), 512, 0), someone(), T0).await.unwrap();
        let newer =
            boxes.deposit(mailbox(1), envelope(mailbox(1), 512, 1), someone(), T0.plus(600)).await.unwrap();
        // A clock that steps back does not make an envelope older than the one before it.
        let stepped =
            boxes.deposit(mailbox(2), envelope(mailbox(2), 512, 2), someone(), T0.plus(100)).await.unwrap();
        let at = T0.plus(1_200);
        assert_eq!(
            ids(&boxes.fetch(&[mailbox(1), mailbox(2)], None, 64, None, at).unwrap()),
            vec![newer, stepped]
        );
        assert_eq!(boxes.purge_expired(at).unwrap(), 1);
        assert_eq!(boxes.stats(), MailboxStats { mailboxes: 2, envelopes: 2, bytes: 1024, fetch_marks: 2 });
        assert_eq!(boxes.delete(&mailbox(1), &[old]).unwrap(), 0, "already gone");
        assert_eq!(boxes.purge_expired(at).unwrap(), 0);
        assert_eq!(boxes.purge_expired(T0.plus(1_600)).unwrap(), 2);
        assert_eq!(boxes.stats(), MailboxStats { fetch_marks: 2, ..MailboxStats::default() });
    }

    #[tokio::test]
    async fn a_purge_of_many_works_in_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let limits = MailboxLimits { ttl_ms: 1_000, ..MailboxLimits::default() };
        let boxes = open(dir.path(), limits);
        for i in 0..(PURGE_CHUNK + 10) {
            let n = (i % 3) as u8;
            boxes.insert(mailbox(n), &envelope(mailbox(n), 100, 0), &someone(), true, T0).unwrap();
        }
        boxes.insert(mailbox(0), &envelope(mailbox(0), 100, 0), &someone(), true, T0.plus(5_000)).unwrap();
        assert_eq!(boxes.purge_expired(T0.plus(2_000)).unwrap(), (PURGE_CHUNK + 10) as u64);
        assert_eq!(boxes.stats(), MailboxStats { mailboxes: 1, envelopes: 1, bytes: 100, fetch_marks: 0 });
    }

    #[tokio::test]
    async fn pages_stop_at_the_limit_and_the_byte_cap() {
        let dir = tempfile::tempdir().unwrap();
        let boxes = open(dir.path(), MailboxLimits::default());
        let mut all = Vec::new();
        for i in 0..5u8 {
            let n = 1 + i % 2;
            all.push(boxes.deposit(mailbox(n), envelope(mailbox(n), 512, i), someone(), T0).await.unwrap());
        }
        let owned = [mailbox(1), mailbox(2)];
        let page = boxes.fetch(&owned, None, 2, None, T0).unwrap();
        assert_eq!((ids(&page), page.1), (all[..2].to_vec(), true));
        let page = boxes.fetch(&owned, Some(all[1]), 2, None, T0).unwrap();
        assert_eq!((ids(&page), page.1), (all[2..4].to_vec(), true));
        let page = boxes.fetch(&owned, Some(all[3]), 2, None, T0).unwrap();
        assert_eq!((ids(&page), page.1), (all[4..].to_vec(), false));
        assert_eq!(boxes.fetch(&owned, Some(u64::MAX), 2, None, T0).unwrap().0.len(), 0);

        // 20 envelopes of 64 KiB: 16 fill a page of 1 MiB exactly.
        for _ in 0..20 {
            boxes
                .deposit(mailbox(3), envelope(mailbox(3), MAX_ENVELOPE_LEN, 3), someone(), T0)
                .await
                .unwrap();
        }
        let page = boxes.fetch(&[mailbox(3)], None, 64, None, T0).unwrap();
        assert_eq!(page.0.len(), MAX_FETCH_PAGE_BYTES / MAX_ENVELOPE_LEN);
        assert!(page.1);
        let last = page.0.last().map(|e| e.id);
        let rest = boxes.fetch(&[mailbox(3)], last, 64, None, T0).unwrap();
        assert_eq!((rest.0.len(), rest.1), (4, false));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_deposits_share_flushes() {
        let dir = tempfile::tempdir().unwrap();
        let boxes = open(dir.path(), MailboxLimits::default());
        let start = boxes.flushes();
        let tasks: Vec<_> = (0..64u8)
            .map(|i| {
                let boxes = boxes.clone();
                tokio::spawn(async move {
                    let n = i % 8;
                    boxes.deposit(mailbox(n), envelope(mailbox(n), 1024, i), someone(), T0).await
                })
            })
            .collect();
        let mut ids = Vec::new();
        for task in tasks {
            ids.push(task.await.unwrap().unwrap());
        }
        let flushes = boxes.flushes() - start;
        assert!(flushes < 64, "64 deposits took {flushes} flushes");
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), 64);
    }

    #[tokio::test]
    async fn an_index_entry_left_without_its_envelope_is_harmless() {
        let dir = tempfile::tempdir().unwrap();
        let limits = MailboxLimits { ttl_ms: 1_000, ..MailboxLimits::default() };
        let (kept, lost) = {
            let boxes = open(dir.path(), limits);
            let kept = boxes.deposit(mailbox(1), envelope(mailbox(1), 512, 0), someone(), T0).await.unwrap();
            let lost = boxes.deposit(mailbox(1), envelope(mailbox(1), 512, 1), someone(), T0).await.unwrap();
            // What a crash between the two inserts (or the two removes) leaves behind.
            boxes.inner.db.remove(envelope_key(&mailbox(1), lost)).unwrap();
            boxes.flush().await.unwrap();
            (kept, lost)
        };
        let boxes = open(dir.path(), limits);
        assert_eq!(ids(&boxes.fetch(&[mailbox(1)], None, 64, None, T0).unwrap()), vec![kept]);
        // Counted until deleted or expired, and the owner can delete it.
        assert_eq!(boxes.stats().envelopes, 2);
        assert_eq!(boxes.delete(&mailbox(2), &[lost]), Ok(0));
        assert_eq!(boxes.delete(&mailbox(1), &[lost]).unwrap(), 1);
        assert_eq!(boxes.stats().envelopes, 1);
        assert_eq!(boxes.purge_expired(T0.plus(5_000)).unwrap(), 1);
        assert_eq!(boxes.stats(), MailboxStats::default());
    }

    /// Limits small enough to fill in a test: 1 MiB in all, 256 KiB per network, 128 KiB per peer.
    fn small_limits() -> MailboxLimits {
        MailboxLimits {
            disk_budget: 1024 * 1024,
            max_bytes_per_network: 256 * 1024,
            max_bytes_per_peer: 128 * 1024,
            max_mailboxes: 1_000,
            ..MailboxLimits::default()
        }
    }

    /// Deposits 4 KiB envelopes into fresh mailboxes, from a fresh peer id each time and from
    /// `network(i)`, until 200 deposits in a row are refused; returns the bytes stored.
    async fn flood(boxes: &Mailboxes, network: impl Fn(u32) -> std::net::IpAddr, at: Timestamp) -> u64 {
        let before = boxes.stats().bytes;
        let mut refused_in_a_row = 0;
        let mut i = 0u32;
        while refused_in_a_row < 200 {
            let mut target = MailboxId([0xAB; 16]);
            target.0[..4].copy_from_slice(&i.to_be_bytes());
            let depositor = Depositor::new(&libp2p::PeerId::random(), Some(network(i)));
            match boxes.deposit(target, envelope(target, 4096, 0), depositor, at).await {
                Ok(_) => refused_in_a_row = 0,
                Err(Refusal::RateLimited { .. } | Refusal::RelayFull) => refused_in_a_row += 1,
                Err(other) => panic!("unexpected refusal {other:?}"),
            }
            i += 1;
        }
        boxes.stats().bytes - before
    }

    #[tokio::test]
    async fn one_abusive_network_cannot_make_an_honest_deposit_fail() {
        let dir = tempfile::tempdir().unwrap();
        let boxes = open(dir.path(), small_limits());
        // The owner of mailbox 1 fetched it this morning.
        boxes.fetch(&[mailbox(1)], None, 64, None, T0).unwrap();
        // One /64, a new peer id and a new mailbox for every deposit, as fast as it can.
        let stored =
            flood(&boxes, |i| std::net::IpAddr::from([0x2001, 0xdb8, 6, 4, (i % 7) as u16, 1, 2, 3]), T0)
                .await;
        assert!(stored <= 256 * 1024, "the /64 stored {stored} bytes, over its quota");
        assert!(stored >= 200 * 1024, "the /64 stored only {stored} bytes");
        // One IPv4 address the same.
        let stored = flood(&boxes, |_| [203, 0, 113, 66].into(), T0).await;
        assert!(stored <= 256 * 1024, "the address stored {stored} bytes");
        // Someone else still gets through, to a live mailbox and to a new one.
        let honest = Depositor::new(&libp2p::PeerId::random(), Some([198, 51, 100, 10].into()));
        boxes.deposit(mailbox(1), envelope(mailbox(1), 4096, 1), honest, T0).await.unwrap();
        boxes.deposit(mailbox(2), envelope(mailbox(2), 4096, 1), honest, T0).await.unwrap();
        // Once the owner deletes what was left for them, the quota is free again.
        let page = boxes.fetch(&[mailbox(1), mailbox(2)], None, 64, None, T0).unwrap();
        assert_eq!(page.0.len(), 2);
        let honest_network = honest.network.unwrap();
        assert_eq!(boxes.lock().usage.of_network(&honest_network), 2 * 4096);
        assert_eq!(boxes.delete(&mailbox(1), &[page.0[0].id]), Ok(1));
        assert_eq!(boxes.delete(&mailbox(2), &[page.0[1].id]), Ok(1));
        assert_eq!(boxes.lock().usage.of_network(&honest_network), 0);
    }

    #[tokio::test]
    async fn the_reserve_keeps_room_for_mailboxes_their_owners_fetch() {
        let dir = tempfile::tempdir().unwrap();
        let boxes = open(dir.path(), small_limits());
        boxes.fetch(&[mailbox(1)], None, 64, None, T0).unwrap();
        // Many networks together fill what is open to anyone (80 %)...
        for net in 0..8u8 {
            flood(&boxes, |_| [203, 0, 113, net].into(), T0).await;
        }
        let open_budget = small_limits().open_disk_budget();
        assert!(boxes.stats().bytes > open_budget - 4096, "{} of {open_budget}", boxes.stats().bytes);
        assert!(boxes.stats().bytes <= open_budget);
        // ...but not the reserve: a mailbox fetched lately still takes deposits, a new one not.
        let honest = Depositor::new(&libp2p::PeerId::random(), Some([198, 51, 100, 10].into()));
        assert_eq!(
            boxes.deposit(mailbox(2), envelope(mailbox(2), 4096, 1), honest, T0).await,
            Err(Refusal::RelayFull)
        );
        boxes.deposit(mailbox(1), envelope(mailbox(1), 4096, 1), honest, T0).await.unwrap();
        // Two days without a fetch and mailbox 1 is no longer live.
        let later = T0.plus(2 * Timestamp::DAY);
        assert_eq!(
            boxes.deposit(mailbox(1), envelope(mailbox(1), 4096, 1), honest, later).await,
            Err(Refusal::RelayFull)
        );
    }

    #[tokio::test]
    async fn envelopes_nobody_fetches_go_after_the_short_ttl_and_marks_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let day = |n: u64| T0.plus(n * Timestamp::DAY);
        let (junk, ahead, read) = {
            let boxes = open(dir.path(), MailboxLimits::default());
            // Mailbox 2's owner looked (and found nothing) before anyone wrote: as a node does
            // for the days ahead of its announcement before going away.
            boxes.fetch(&[mailbox(2)], None, 64, None, T0).unwrap();
            let junk =
                boxes.deposit(mailbox(1), envelope(mailbox(1), 512, 0), someone(), day(1)).await.unwrap();
            let ahead =
                boxes.deposit(mailbox(2), envelope(mailbox(2), 512, 0), someone(), day(1)).await.unwrap();
            let read =
                boxes.deposit(mailbox(3), envelope(mailbox(3), 512, 0), someone(), day(1)).await.unwrap();
            boxes.fetch(&[mailbox(3)], None, 64, None, day(2)).unwrap();
            (junk, ahead, read)
        };
        let boxes = open(dir.path(), MailboxLimits::default());
        assert_eq!(boxes.stats().fetch_marks, 2);
        assert_eq!(boxes.purge_expired(day(7)).unwrap(), 0, "a day short of the unfetched TTL");
        assert_eq!(boxes.purge_expired(day(8)).unwrap(), 1);
        let all = [mailbox(1), mailbox(2), mailbox(3)];
        let page = boxes.fetch(&all, None, 64, None, day(8)).unwrap();
        assert_eq!(ids(&page), vec![ahead, read]);
        assert!(!ids(&page).contains(&junk));
        // The others keep the full TTL.
        assert_eq!(boxes.purge_expired(day(30)).unwrap(), 0);
        assert_eq!(boxes.purge_expired(day(31)).unwrap(), 2);
        // Marks outlive their last fetch (day 8) by two TTLs, then go.
        assert_eq!(boxes.stats().fetch_marks, 3);
        boxes.purge_expired(day(67)).unwrap();
        assert_eq!(boxes.stats().fetch_marks, 3);
        boxes.purge_expired(day(68)).unwrap();
        assert_eq!(boxes.stats().fetch_marks, 0);
    }

    #[tokio::test]
    async fn fetch_marks_stop_at_their_cap() {
        let dir = tempfile::tempdir().unwrap();
        let boxes = open(dir.path(), MailboxLimits { max_fetch_marks: 2, ..MailboxLimits::default() });
        boxes.fetch(&[mailbox(1), mailbox(2), mailbox(3)], None, 64, None, T0).unwrap();
        assert_eq!(boxes.stats().fetch_marks, 2);
        // A marked mailbox is still refreshed at the cap.
        let later = T0.plus(Timestamp::DAY);
        boxes.fetch(&[mailbox(1), mailbox(2), mailbox(3)], None, 64, None, later).unwrap();
        assert_eq!(boxes.stats().fetch_marks, 2);
        let marked = [1, 2, 3].map(|n| boxes.inner.marks.last_fetch(&mailbox(n)).unwrap());
        assert_eq!(marked.iter().filter(|m| **m == Some(later.millis())).count(), 2, "{marked:?}");
    }

    #[tokio::test]
    async fn one_network_cannot_use_up_the_fetch_marks() {
        let dir = tempfile::tempdir().unwrap();
        let limits = MailboxLimits {
            max_fetch_marks: 100,
            max_fetch_marks_per_network: 10,
            ..MailboxLimits::default()
        };
        let boxes = open(dir.path(), limits);
        let abuser = Network::of([203, 0, 113, 9].into());
        let junk: Vec<MailboxId> = (0..50u8).map(|n| MailboxId([n ^ 0xAA; 16])).collect();
        boxes.fetch(&junk, None, 64, Some(abuser), T0).unwrap();
        assert_eq!(boxes.inner.marks.of_network(&abuser), 10);
        // Another network's owner still gets marks, and the mailbox it looked at keeps the full TTL.
        let owner = Network::of("2001:db8:5::7".parse().unwrap());
        boxes.fetch(&[mailbox(1)], None, 64, Some(owner), T0).unwrap();
        assert_eq!(boxes.stats().fetch_marks, 11);
        boxes.deposit(mailbox(1), envelope(mailbox(1), 512, 0), someone(), T0).await.unwrap();
        assert_eq!(boxes.purge_expired(T0.plus(8 * Timestamp::DAY)).unwrap(), 0);
        // The counts per network survive a restart, and expiring marks give the room back.
        drop(boxes);
        let boxes = open(dir.path(), limits);
        assert_eq!(boxes.inner.marks.of_network(&abuser), 10);
        boxes.purge_expired(T0.plus(61 * Timestamp::DAY)).unwrap();
        assert_eq!(boxes.inner.marks.of_network(&abuser), 0);
        assert_eq!(boxes.stats().fetch_marks, 0);
    }

    #[tokio::test]
    async fn the_64s_of_one_48_share_a_cap_on_fetch_marks() {
        let dir = tempfile::tempdir().unwrap();
        let limits = MailboxLimits {
            max_fetch_marks: 100,
            max_fetch_marks_per_network: 10,
            max_fetch_marks_per_ipv6_block: 25,
            ..MailboxLimits::default()
        };
        let boxes = open(dir.path(), limits);
        for i in 0..5u8 {
            let network =
                Network::of(std::net::IpAddr::from([0x2001, 0xdb8, 0x44, u16::from(i), 0, 0, 0, 1]));
            let junk: Vec<MailboxId> = (0..50u8)
                .map(|n| {
                    let mut id = MailboxId([0x55; 16]);
                    id.0[..2].copy_from_slice(&[n, i]);
                    id
                })
                .collect();
            boxes.fetch(&junk, None, 64, Some(network), T0).unwrap();
        }
        assert_eq!(boxes.stats().fetch_marks, 25, "five /64s of one /48 made 10 + 10 + 5 + 0 + 0");
        let elsewhere = Network::of("2001:db8:45::1".parse().unwrap());
        boxes.fetch(&[mailbox(1)], None, 64, Some(elsewhere), T0).unwrap();
        assert_eq!(boxes.stats().fetch_marks, 26);
    }

    #[tokio::test]
    async fn a_layout_1_database_is_upgraded_with_its_mailboxes_marked() {
        let dir = tempfile::tempdir().unwrap();
        let id = {
            let boxes = open(dir.path(), MailboxLimits::default());
            let id = boxes.deposit(mailbox(1), envelope(mailbox(1), 512, 0), someone(), T0).await.unwrap();
            // Rewrite it as layout 1 did: a 28-byte index entry, no marks, marker 1.
            let db = &boxes.inner.db;
            let entry = db.get(index_key(id)).unwrap().unwrap();
            db.insert(index_key(id), &entry[..INDEX_VALUE_V1_LEN]).unwrap();
            db.drop_tree(b"fetched").unwrap();
            db.insert(MARKER_KEY, &1u16.to_be_bytes()).unwrap();
            boxes.flush().await.unwrap();
            id
        };
        let boxes = open(dir.path(), MailboxLimits::default());
        assert_eq!(boxes.stats(), MailboxStats { mailboxes: 1, envelopes: 1, bytes: 512, fetch_marks: 1 });
        assert_eq!(boxes.inner.db.get(MARKER_KEY).unwrap().unwrap().as_ref(), &SCHEMA_VERSION.to_be_bytes());
        // Kept past the unfetched TTL, and deleted like any other.
        assert_eq!(boxes.purge_expired(T0.plus(8 * Timestamp::DAY)).unwrap(), 0);
        assert_eq!(boxes.delete(&mailbox(1), &[id]), Ok(1));
        assert_eq!(boxes.stats().envelopes, 0);
    }

    #[test]
    fn a_damaged_or_foreign_database_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = sled::open(dir.path()).unwrap();
            db.insert(b"something", b"else").unwrap();
            db.flush().unwrap();
        }
        assert!(matches!(
            Mailboxes::open(dir.path(), MailboxLimits::default()),
            Err(MailboxError::Foreign { .. })
        ));

        let dir = tempfile::tempdir().unwrap();
        {
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let boxes = open(dir.path(), MailboxLimits::default());
            rt.block_on(boxes.deposit(mailbox(1), envelope(mailbox(1), 512, 0), someone(), T0)).unwrap();
        }
        std::fs::write(dir.path().join("conf"), b"\xff\xfe garbage").unwrap();
        std::fs::write(dir.path().join("db"), vec![0x5A; 4096]).unwrap();
        assert!(Mailboxes::open(dir.path(), MailboxLimits::default()).is_err());
    }
}
