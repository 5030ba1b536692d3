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
//! network are (see [`super::usage`]). Marks are capped in all, and per network (and per IPv6
//! /48) of the fetch that created them, so that one network cannot use up the marks and leave
//! honest owners' new mailboxes unmarked. Past a cap no new mailbox is marked (and a warning is logged) until
//! old marks expire, [`MARK_LIFETIME_TTLS`] TTLs after their last fetch. A refresh keeps the mark
//! counted against the network that created it.
//!
//! Layout: sled tree `fetched`, mailbox id (16) → last fetch time (8 BE, Unix milliseconds), then
//! the creating network ([`Network::encode`], all zero when unknown).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use merpati_proto::Timestamp;
use merpati_proto::mailbox::MailboxId;

use super::depositor::Network;
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
/// A mark's value: the time, then the network.
const VALUE_LEN: usize = 8 + Network::ENCODED_LEN;

/// How many marks are kept, in all and per network.
#[derive(Clone, Copy, Debug)]
pub(super) struct MarkCaps {
    pub(super) total: u64,
    pub(super) per_network: u64,
    pub(super) per_ipv6_block: u64,
}

/// The fetch marks. Shared by clones of the mailbox store.
pub(super) struct FetchMarks {
    tree: sled::Tree,
    caps: MarkCaps,
    count: AtomicU64,
    /// Marks per creating network and per its IPv6 /48 (marks of unknown networks are counted
    /// only in all).
    per_network: Mutex<HashMap<Network, u64>>,
    /// Whether the "cap reached" warning was logged since marks were last purged.
    warned: AtomicBool,
    /// The day of the last purge: the whole tree is read, so once a day is enough.
    purged_day: AtomicU64,
}

/// A parsed mark.
struct Mark {
    at: u64,
    network: Option<Network>,
}

impl Mark {
    fn parse(value: &[u8]) -> Result<Self, MailboxError> {
        let corrupt = || MailboxError::Corrupt { what: "fetch mark" };
        let at = value
            .get(..8)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map(u64::from_be_bytes)
            .ok_or_else(corrupt)?;
        let network = match value.get(8..) {
            Some(rest) if rest.len() == Network::ENCODED_LEN => {
                let bytes: &[u8; Network::ENCODED_LEN] = rest.try_into().map_err(|_| corrupt())?;
                if bytes.iter().all(|b| *b == 0) {
                    None
                } else {
                    Some(Network::decode(bytes).ok_or_else(corrupt)?)
                }
            }
            Some([]) => None,
            _ => return Err(corrupt()),
        };
        Ok(Self { at, network })
    }

    fn encode(&self) -> [u8; VALUE_LEN] {
        let mut out = [0u8; VALUE_LEN];
        out[..8].copy_from_slice(&self.at.to_be_bytes());
        if let Some(network) = &self.network {
            out[8..].copy_from_slice(&network.encode());
        }
        out
    }
}

/// The keys a mark of `network` counts under: the network and its IPv6 /48.
fn keys_of(network: Option<Network>) -> impl Iterator<Item = Network> {
    network.into_iter().chain(network.and_then(|n| n.block()))
}

impl FetchMarks {
    /// Opens the marks in `db` and counts them, in all and per network.
    pub(super) fn open(db: &sled::Db, caps: MarkCaps) -> Result<Self, MailboxError> {
        let tree = db.open_tree(TREE)?;
        let mut count = 0u64;
        let mut per_network: HashMap<Network, u64> = HashMap::new();
        for entry in &tree {
            let (_, value) = entry?;
            count += 1;
            for key in keys_of(Mark::parse(&value)?.network) {
                *per_network.entry(key).or_default() += 1;
            }
        }
        Ok(Self {
            tree,
            caps,
            count: AtomicU64::new(count),
            per_network: Mutex::new(per_network),
            warned: AtomicBool::new(false),
            purged_day: AtomicU64::new(u64::MAX),
        })
    }

    /// When `mailbox` was last fetched, if it has a mark.
    pub(super) fn last_fetch(&self, mailbox: &MailboxId) -> Result<Option<u64>, MailboxError> {
        match self.tree.get(mailbox.0)? {
            None => Ok(None),
            Some(value) => Ok(Some(Mark::parse(&value)?.at)),
        }
    }

    /// Whether `mailbox` was fetched within [`LIVE_WINDOW_MS`] of `now`.
    pub(super) fn is_live(&self, mailbox: &MailboxId, now: Timestamp) -> Result<bool, MailboxError> {
        Ok(self.last_fetch(mailbox)?.is_some_and(|at| at.saturating_add(LIVE_WINDOW_MS) > now.millis()))
    }

    /// Notes that `mailboxes` were fetched at `now` by a peer of `network`. Returns whether
    /// anything was written (made durable by the store's next flush).
    pub(super) fn mark<'a>(
        &self,
        mailboxes: impl IntoIterator<Item = &'a MailboxId>,
        network: Option<Network>,
        now: Timestamp,
    ) -> Result<bool, MailboxError> {
        let mut wrote = false;
        for mailbox in mailboxes {
            let old = self.tree.get(mailbox.0)?.map(|value| Mark::parse(&value)).transpose()?;
            let existed = old.is_some();
            let mark = match old {
                Some(old) if old.at.saturating_add(REFRESH_MS) > now.millis() => continue,
                // A refresh stays counted against the network that created the mark.
                Some(old) => Mark { at: now.millis(), network: old.network },
                None => {
                    if !self.make_room(network) {
                        continue;
                    }
                    Mark { at: now.millis(), network }
                }
            };
            let previous = self.tree.insert(mailbox.0, &mark.encode())?;
            if previous.is_some() && !existed {
                // Another fetch created it meanwhile: give back the room taken for it.
                self.release(network);
            }
            wrote = true;
        }
        Ok(wrote)
    }

    /// Counts a new mark of `network`, if the caps allow one.
    fn make_room(&self, network: Option<Network>) -> bool {
        let mut per_network = self.lock();
        let held = |key: Option<Network>| key.and_then(|k| per_network.get(&k).copied()).unwrap_or(0);
        let block = network.and_then(|n| n.block());
        if self.count.load(Ordering::Relaxed) >= self.caps.total
            || (network.is_some() && held(network) >= self.caps.per_network)
            || (block.is_some() && held(block) >= self.caps.per_ipv6_block)
        {
            if !self.warned.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    total = self.caps.total,
                    per_network = self.caps.per_network,
                    "relay: fetch marks are at a cap; new mailboxes keep the unfetched TTL until old marks expire"
                );
            }
            return false;
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        for key in keys_of(network) {
            *per_network.entry(key).or_default() += 1;
        }
        true
    }

    /// Stops counting a mark of `network`.
    fn release(&self, network: Option<Network>) {
        self.count.fetch_sub(1, Ordering::Relaxed);
        let mut per_network = self.lock();
        for key in keys_of(network) {
            if let Some(count) = per_network.get_mut(&key) {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    per_network.remove(&key);
                }
            }
        }
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
            let mark = Mark::parse(&value)?;
            if mark.at.saturating_add(lifetime_ms) <= now.millis() {
                // Only if untouched since read: a fetch may have refreshed it meanwhile.
                if self.tree.compare_and_swap(&key, Some(value), None::<&[u8]>)?.is_ok() {
                    self.release(mark.network);
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

    /// How many marks `network` created that are kept.
    #[cfg(test)]
    pub(super) fn of_network(&self, network: &Network) -> u64 {
        self.lock().get(network).copied().unwrap_or(0)
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Network, u64>> {
        self.per_network.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
