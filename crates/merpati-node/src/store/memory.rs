//! An in-memory [`Store`] for tests: the same layout and rules as the sled store (the private
//! `engine` module) over `BTreeMap`s, so tests of the daemon behave as they would on disk, minus
//! durability and sealing.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use merpati_proto::Timestamp;
use merpati_proto::frame::MessageId;
use merpati_proto::mailbox::MailboxId;
use merpati_proto::session::SessionId;
use zeroize::Zeroizing;

use super::codec::prefix_end;
use super::engine::{self, Sealer, Tree, View, Visit};
use super::overlay::Overlay;
use super::{
    Blocked, Change, Contact, ContactRequest, FileInfo, OutboxEntry, OutboxHead, PartOf, Profile, RequestId,
    SessionRecord, Store, StoreError, StoredFragment, StoredMessage,
};
use merpati_proto::identity::IdentityPublic;

type Trees = Vec<BTreeMap<Vec<u8>, Vec<u8>>>;

/// A [`Store`] that keeps everything in memory and forgets it when dropped.
pub struct MemoryStore {
    /// One map per [`Tree`], in [`Tree::ALL`] order. One lock for everything: batches are applied
    /// one at a time, and a reader sees a batch entirely or not at all.
    trees: Mutex<Trees>,
    /// Values read so far (see [`MemoryStore::reads`]).
    reads: AtomicU64,
    /// Batches applied so far (see [`MemoryStore::batches`]).
    batches: AtomicU64,
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryStore").finish_non_exhaustive()
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self {
            trees: Mutex::new(vec![BTreeMap::new(); Tree::ALL.len()]),
            reads: AtomicU64::new(0),
            batches: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Trees> {
        // A batch reaches the maps only after it fully succeeded (see `apply`), so a panic while
        // the lock was held cannot have left them half-updated.
        self.trees.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Records stay as encoded: there is no disk for copies to linger on.
struct Clear;

impl Sealer for Clear {
    fn seal(&self, _aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, StoreError> {
        Ok(plaintext.to_vec())
    }

    fn open(
        &self,
        _what: &'static str,
        _aad: &[u8],
        sealed: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, StoreError> {
        Ok(Zeroizing::new(sealed.to_vec()))
    }
}

/// The committed maps as a view, counting what it reads.
struct MemoryView<'a> {
    trees: &'a Trees,
    reads: &'a AtomicU64,
}

impl View for MemoryView<'_> {
    fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.reads.fetch_add(1, Ordering::Relaxed);
        Ok(self.trees[tree.index()].get(key).cloned())
    }

    fn scan(&self, tree: Tree, prefix: &[u8], rev: bool, visit: &mut Visit<'_>) -> Result<(), StoreError> {
        let end = match prefix_end(prefix) {
            Some(end) => Bound::Excluded(end),
            None => Bound::Unbounded,
        };
        let range = self.trees[tree.index()].range::<Vec<u8>, _>((Bound::Included(prefix.to_vec()), end));
        let iter: Box<dyn Iterator<Item = (&Vec<u8>, &Vec<u8>)>> =
            if rev { Box::new(range.rev()) } else { Box::new(range) };
        for (key, value) in iter {
            self.reads.fetch_add(1, Ordering::Relaxed);
            if !visit(key, value)? {
                break;
            }
        }
        Ok(())
    }

    fn scan_below(
        &self,
        tree: Tree,
        prefix: &[u8],
        below: &[u8],
        visit: &mut Visit<'_>,
    ) -> Result<(), StoreError> {
        if below <= prefix {
            return Ok(());
        }
        let range = self.trees[tree.index()]
            .range::<Vec<u8>, _>((Bound::Included(prefix.to_vec()), Bound::Excluded(below.to_vec())));
        for (key, value) in range.rev().take_while(|(key, _)| key.starts_with(prefix)) {
            self.reads.fetch_add(1, Ordering::Relaxed);
            if !visit(key, value)? {
                break;
            }
        }
        Ok(())
    }
}

impl MemoryStore {
    fn view<'a>(&'a self, trees: &'a Trees) -> MemoryView<'a> {
        MemoryView { trees, reads: &self.reads }
    }

    /// How many stored values were read so far, by reads and by batches: each point read and
    /// each entry a scan visited counts one. Tests use it to show what an operation costs.
    pub fn reads(&self) -> u64 {
        self.reads.load(Ordering::Relaxed)
    }

    /// How many batches were applied so far (each a durable write on a disk store), counting
    /// those refused. Tests use it to show how many writes an operation costs.
    pub fn batches(&self) -> u64 {
        self.batches.load(Ordering::Relaxed)
    }
}

impl Store for MemoryStore {
    fn profile(&self) -> Result<Option<Profile>, StoreError> {
        engine::profile(&self.view(&self.lock()), &Clear)
    }

    fn contacts(&self) -> Result<Vec<Contact>, StoreError> {
        engine::contacts(&self.view(&self.lock()))
    }

    fn contact(&self, name: &str) -> Result<Option<Contact>, StoreError> {
        engine::contact(&self.view(&self.lock()), name)
    }

    fn session(&self, id: &SessionId) -> Result<Option<SessionRecord>, StoreError> {
        engine::session(&self.view(&self.lock()), &Clear, id)
    }

    fn session_by_mailbox(&self, mailbox: &MailboxId) -> Result<Option<SessionId>, StoreError> {
        engine::session_by_mailbox(&self.view(&self.lock()), mailbox)
    }

    fn session_by_open_digest(&self, digest: &[u8; 32]) -> Result<Option<SessionId>, StoreError> {
        engine::session_by_open_digest(&self.view(&self.lock()), digest)
    }

    fn message(&self, id: &MessageId) -> Result<Option<StoredMessage>, StoreError> {
        engine::message(&self.view(&self.lock()), &Clear, id)
    }

    fn messages(&self, contact: Option<&str>, limit: usize) -> Result<Vec<StoredMessage>, StoreError> {
        engine::messages(&self.view(&self.lock()), &Clear, contact, limit)
    }

    fn messages_before(
        &self,
        contact: Option<&str>,
        before: u64,
        limit: usize,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        engine::messages_before(&self.view(&self.lock()), &Clear, contact, before, limit)
    }

    fn unread(&self, contact: &str) -> Result<Vec<MessageId>, StoreError> {
        engine::unread(&self.view(&self.lock()), contact)
    }

    fn unread_count(&self, contact: &str) -> Result<usize, StoreError> {
        engine::unread_count(&self.view(&self.lock()), contact)
    }

    fn swept_through(&self, relay: &[u8]) -> Result<Option<u64>, StoreError> {
        engine::swept_through(&self.view(&self.lock()), relay)
    }

    fn fragments(&self, contact: &str, group: &[u8; 16]) -> Result<Vec<StoredFragment>, StoreError> {
        engine::fragments(&self.view(&self.lock()), &Clear, contact, group)
    }

    fn fragment_groups(&self, contact: &str) -> Result<Vec<[u8; 16]>, StoreError> {
        engine::fragment_groups(&self.view(&self.lock()), contact)
    }

    fn stale_fragments(&self, before: Timestamp) -> Result<Vec<(String, [u8; 16])>, StoreError> {
        engine::stale_fragments(&self.view(&self.lock()), &Clear, before)
    }

    fn part_of(&self, id: &MessageId) -> Result<Option<PartOf>, StoreError> {
        engine::part_of(&self.view(&self.lock()), id)
    }

    fn file_info(&self, id: &MessageId) -> Result<Option<FileInfo>, StoreError> {
        engine::file_info(&self.view(&self.lock()), &Clear, id)
    }

    fn file_data(&self, id: &MessageId) -> Result<Option<Zeroizing<Vec<u8>>>, StoreError> {
        engine::file_data(&self.view(&self.lock()), &Clear, id)
    }

    fn transfer(&self, id: &MessageId) -> Result<Option<super::Transfer>, StoreError> {
        engine::transfer(&self.view(&self.lock()), &Clear, id)
    }

    fn transfers(&self) -> Result<Vec<(MessageId, super::Transfer)>, StoreError> {
        engine::transfers(&self.view(&self.lock()), &Clear)
    }

    fn search(
        &self,
        contact: Option<&str>,
        needle: &str,
        limit: usize,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        engine::search(&self.view(&self.lock()), &Clear, contact, needle, limit)
    }

    fn outbox(&self) -> Result<Vec<OutboxEntry>, StoreError> {
        engine::outbox(&self.view(&self.lock()))
    }

    fn outbox_entry(&self, id: &MessageId) -> Result<Option<OutboxEntry>, StoreError> {
        engine::outbox_entry(&self.view(&self.lock()), id)
    }

    fn outbox_head(&self, contact: &str) -> Result<Option<OutboxHead>, StoreError> {
        engine::outbox_head(&self.view(&self.lock()), contact)
    }

    fn outbox_queue(&self, contact: &str, limit: usize) -> Result<Vec<OutboxHead>, StoreError> {
        engine::outbox_queue(&self.view(&self.lock()), contact, limit)
    }

    fn outbox_due(&self, now: Timestamp) -> Result<Vec<OutboxHead>, StoreError> {
        engine::outbox_due(&self.view(&self.lock()), now)
    }

    fn outbox_len(&self) -> Result<usize, StoreError> {
        engine::outbox_len(&self.view(&self.lock()))
    }

    fn awaiting(&self, until: Timestamp, limit: usize) -> Result<Vec<(Timestamp, MessageId)>, StoreError> {
        engine::awaiting(&self.view(&self.lock()), until, limit)
    }

    fn announced(&self, session: &SessionId) -> Result<Vec<u64>, StoreError> {
        engine::announced(&self.view(&self.lock()), session)
    }

    fn relays(&self) -> Result<Vec<Vec<u8>>, StoreError> {
        engine::relays(&self.view(&self.lock()))
    }

    fn session_ids(&self) -> Result<Vec<SessionId>, StoreError> {
        engine::session_ids(&self.view(&self.lock()))
    }

    fn requests(&self) -> Result<Vec<ContactRequest>, StoreError> {
        engine::requests(&self.view(&self.lock()), &Clear)
    }

    fn request(&self, id: &RequestId) -> Result<Option<ContactRequest>, StoreError> {
        engine::request(&self.view(&self.lock()), &Clear, id)
    }

    fn requests_dropped(&self) -> Result<u64, StoreError> {
        engine::requests_dropped(&self.view(&self.lock()))
    }

    fn group(&self, id: &[u8; 16]) -> Result<Option<super::GroupRecord>, StoreError> {
        engine::group(&self.view(&self.lock()), &Clear, id)
    }

    fn groups(&self) -> Result<Vec<super::GroupRecord>, StoreError> {
        engine::groups(&self.view(&self.lock()), &Clear)
    }

    fn group_message(&self, id: &MessageId) -> Result<Option<super::GroupMessageInfo>, StoreError> {
        engine::group_message(&self.view(&self.lock()), id)
    }

    fn group_copy(&self, copy: &MessageId) -> Result<Option<MessageId>, StoreError> {
        engine::group_copy(&self.view(&self.lock()), copy)
    }

    fn blocked(&self) -> Result<Vec<Blocked>, StoreError> {
        engine::blocked(&self.view(&self.lock()))
    }

    fn is_blocked(&self, identity: &IdentityPublic) -> Result<bool, StoreError> {
        engine::is_blocked(&self.view(&self.lock()), identity)
    }

    fn dismissed_len(&self) -> Result<usize, StoreError> {
        engine::dismissed_len(&self.view(&self.lock()))
    }

    fn is_dismissed(&self, digest: &[u8; 32]) -> Result<bool, StoreError> {
        engine::is_dismissed(&self.view(&self.lock()), digest)
    }

    fn apply(&self, changes: &[Change]) -> Result<(), StoreError> {
        self.batches.fetch_add(1, Ordering::Relaxed);
        let mut trees = self.lock();
        let writes = {
            let view = self.view(&trees);
            let overlay = Overlay::new(&view);
            engine::apply(&overlay, &Clear, changes)?;
            overlay.into_writes()
        };
        for ((tree, key), value) in writes {
            let map = &mut trees[tree.index()];
            match value {
                Some(value) => map.insert(key, value),
                None => map.remove(&key),
            };
        }
        Ok(())
    }
}
