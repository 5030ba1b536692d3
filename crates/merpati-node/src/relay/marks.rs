//! Fetch marks: when each mailbox was last fetched, kept on disk so a restart forgets nothing.
//!
//! A relay cannot tell a mailbox whose owner is away from one an abuser filled with envelopes no
//! one will fetch. Marks tell them apart by what owners do: a node fetches its mailboxes while
//! online, the days ahead of the ones it announced included, so the mailboxes its contacts write
//! to while it is away were fetched (empty) before it left. Envelopes in a mailbox with no mark
//! are kept only the short "unfetched" TTL; a mailbox fetched in the last [`LIVE_WINDOW_MS`] is
//! "live" and may use the part of the disk budget kept in reserve.
//!
//! Fetching is free, so marks are a first filter, not a defence on their own: the quotas per
//! network are (see [`super::usage`]). Marks are capped in number; past the cap no new mailbox is
//! marked (and a warning is logged) until old marks expire, [`MARK_LIFETIME_TTLS`] TTLs after
//! their last fetch.
//!
//! Layout: sled tree `fetched`, mailbox id (16) → last fetch time (8 BE, Unix milliseconds).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use merpati_proto::Timestamp;
use merpati_proto::mailbox::MailboxId;

use super::mailboxes::MailboxError;

/// How recently a mailbox must have been fetched to count as live.
pub(super) const LIVE_WINDOW_MS: u64 = 2 * Timestamp::DAY;
/// A mark is rewritten only when it is older than this, so a long-polling owner does not write
/// on every fetch.
const REFRESH_MS: u64 = 6 * 60 * 60 * 1000;
/// A mark lasts this many TTLs after its last fetch: any envelope deposited while it was alive
/// has then expired anyway.
pub(super) const MARK_LIFETIME_TTLS: u64 = 2;
/// The tree holding the marks.
const TREE: &[u8] = b"fetched";

/// The fetch marks. Shared by clones of the mailbox store.
pub(super) struct FetchMarks {
    tree: sled::Tree,
    count: AtomicU64,
    cap: u64,
    /// Whether the "cap reached" warning was logged since marks were last under the cap.
    warned: AtomicBool,
    /// The day of the last purge: the whole tree is read, so once a day is enough.
    purged_day: AtomicU64,
}

impl FetchMarks {
    /// Opens the marks in `db`, holding at most `cap`.
    pub(super) fn open(db: &sled::Db, cap: u64) -> Result<Self, MailboxError> {
        let tree = db.open_tree(TREE)?;
        let count = tree.len() as u64;
        Ok(Self {
            tree,
            count: AtomicU64::new(count),
            cap,
            warned: AtomicBool::new(false),
            purged_day: AtomicU64::new(u64::MAX),
        })
    }

    /// When `mailbox` was last fetched, if it has a mark.
    pub(super) fn last_fetch(&self, mailbox: &MailboxId) -> Result<Option<u64>, MailboxError> {
        match self.tree.get(mailbox.0)? {
            None => Ok(None),
            Some(value) => <[u8; 8]>::try_from(value.as_ref())
                .map(|b| Some(u64::from_be_bytes(b)))
                .map_err(|_| MailboxError::Corrupt { what: "fetch mark" }),
        }
    }

    /// Whether `mailbox` was fetched within [`LIVE_WINDOW_MS`] of `now`.
    pub(super) fn is_live(&self, mailbox: &MailboxId, now: Timestamp) -> Result<bool, MailboxError> {
        Ok(self.last_fetch(mailbox)?.is_some_and(|at| at.saturating_add(LIVE_WINDOW_MS) > now.millis()))
    }

    /// Notes that `mailboxes` were fetched at `now`. Returns whether anything was written (made
    /// durable by the store's next flush).
    pub(super) fn mark<'a>(
        &self,
        mailboxes: impl IntoIterator<Item = &'a MailboxId>,
        now: Timestamp,
    ) -> Result<bool, MailboxError> {
        let mut wrote = false;
        for mailbox in mailboxes {
            let last = self.last_fetch(mailbox)?;
            if last.is_some_and(|at| at.saturating_add(REFRESH_MS) > now.millis()) {
                continue;
            }
            if last.is_none() && self.count.load(Ordering::Relaxed) >= self.cap {
                if !self.warned.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        cap = self.cap,
                        "relay: fetch marks are at their cap; new mailboxes keep the unfetched TTL until old marks expire"
                    );
                }
                continue;
            }
            let previous = self.tree.insert(mailbox.0, &now.millis().to_be_bytes())?;
            if previous.is_none() {
                self.count.fetch_add(1, Ordering::Relaxed);
            }
            wrote = true;
        }
        Ok(wrote)
    }

    /// Drops the marks last fetched `lifetime_ms` or longer before `now`, at most once a day;
    /// returns how many.
    pub(super) fn purge(&self, now: Timestamp, lifetime_ms: u64) -> Result<u64, MailboxError> {
        if self.purged_day.swap(now.day(), Ordering::Relaxed) == now.day() {
            return Ok(0);
        }
        let mut purged = 0;
        for entry in &self.tree {
            let (key, value) = entry?;
            let at = <[u8; 8]>::try_from(value.as_ref())
                .map(u64::from_be_bytes)
                .map_err(|_| MailboxError::Corrupt { what: "fetch mark" })?;
            if at.saturating_add(lifetime_ms) <= now.millis() {
                // Only if untouched since read: a fetch may have refreshed it meanwhile.
                if self.tree.compare_and_swap(&key, Some(value), None::<&[u8]>)?.is_ok() {
                    self.count.fetch_sub(1, Ordering::Relaxed);
                    purged += 1;
                }
            }
        }
        if purged > 0 {
            self.warned.store(false, Ordering::Relaxed);
        }
        Ok(purged)
    }

    /// How many marks are kept.
    pub(super) fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
}
