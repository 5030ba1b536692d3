//! An in-memory [`Store`] for tests: the same layout and rules as the sled store (the private
//! `engine` module) over `BTreeMap`s, so tests of the daemon behave as they would on disk, minus
//! durability and sealing.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt;
use std::ops::Bound;
use std::sync::{Mutex, MutexGuard, PoisonError};

use merpati_proto::frame::MessageId;
use merpati_proto::mailbox::MailboxId;
use merpati_proto::session::SessionId;
use zeroize::Zeroizing;

use super::codec::prefix_end;
use super::engine::{self, Sealer, Tree, Tx, View, Visit};
use super::{Change, Contact, OutboxEntry, Profile, SessionRecord, Store, StoreError, StoredMessage};

type Trees = Vec<BTreeMap<Vec<u8>, Vec<u8>>>;
/// Pending writes of a transaction: `None` deletes.
type Writes = BTreeMap<(Tree, Vec<u8>), Option<Vec<u8>>>;

/// A [`Store`] that keeps everything in memory and forgets it when dropped.
pub struct MemoryStore {
    /// One map per [`Tree`], in [`Tree::ALL`] order. One lock for everything: batches are applied
    /// one at a time, and a reader sees a batch entirely or not at all.
    trees: Mutex<Trees>,
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
        Self { trees: Mutex::new(vec![BTreeMap::new(); Tree::ALL.len()]) }
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

/// A transaction: writes collect in an overlay and reach the maps only if the whole batch
/// succeeds.
struct Overlay<'a> {
    base: &'a Trees,
    writes: RefCell<Writes>,
}

impl Tx for Overlay<'_> {
    type Error = StoreError;

    fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        if let Some(write) = self.writes.borrow().get(&(tree, key.to_vec())) {
            return Ok(write.clone());
        }
        Ok(self.base[tree.index()].get(key).cloned())
    }

    fn insert(&self, tree: Tree, key: &[u8], value: Vec<u8>) -> Result<(), StoreError> {
        self.writes.borrow_mut().insert((tree, key.to_vec()), Some(value));
        Ok(())
    }

    fn remove(&self, tree: Tree, key: &[u8]) -> Result<(), StoreError> {
        self.writes.borrow_mut().insert((tree, key.to_vec()), None);
        Ok(())
    }
}

struct MemoryView<'a>(&'a Trees);

impl View for MemoryView<'_> {
    fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.0[tree.index()].get(key).cloned())
    }

    fn scan(&self, tree: Tree, prefix: &[u8], rev: bool, visit: &mut Visit<'_>) -> Result<(), StoreError> {
        let end = match prefix_end(prefix) {
            Some(end) => Bound::Excluded(end),
            None => Bound::Unbounded,
        };
        let range = self.0[tree.index()].range::<Vec<u8>, _>((Bound::Included(prefix.to_vec()), end));
        let iter: Box<dyn Iterator<Item = (&Vec<u8>, &Vec<u8>)>> =
            if rev { Box::new(range.rev()) } else { Box::new(range) };
        for (key, value) in iter {
            if !visit(key, value)? {
                break;
            }
        }
        Ok(())
    }
}

impl Store for MemoryStore {
    fn profile(&self) -> Result<Option<Profile>, StoreError> {
        engine::profile(&MemoryView(&self.lock()), &Clear)
    }

    fn contacts(&self) -> Result<Vec<Contact>, StoreError> {
        engine::contacts(&MemoryView(&self.lock()))
    }

    fn contact(&self, name: &str) -> Result<Option<Contact>, StoreError> {
        engine::contact(&MemoryView(&self.lock()), name)
    }

    fn session(&self, id: &SessionId) -> Result<Option<SessionRecord>, StoreError> {
        engine::session(&MemoryView(&self.lock()), &Clear, id)
    }

    fn session_by_mailbox(&self, mailbox: &MailboxId) -> Result<Option<SessionId>, StoreError> {
        engine::session_by_mailbox(&MemoryView(&self.lock()), mailbox)
    }

    fn session_by_open_digest(&self, digest: &[u8; 32]) -> Result<Option<SessionId>, StoreError> {
        engine::session_by_open_digest(&MemoryView(&self.lock()), digest)
    }

    fn message(&self, id: &MessageId) -> Result<Option<StoredMessage>, StoreError> {
        engine::message(&MemoryView(&self.lock()), id)
    }

    fn messages(&self, contact: Option<&str>, limit: usize) -> Result<Vec<StoredMessage>, StoreError> {
        engine::messages(&MemoryView(&self.lock()), contact, limit)
    }

    fn outbox(&self) -> Result<Vec<OutboxEntry>, StoreError> {
        engine::outbox(&MemoryView(&self.lock()))
    }

    fn outbox_len(&self) -> Result<usize, StoreError> {
        engine::outbox_len(&MemoryView(&self.lock()))
    }

    fn relays(&self) -> Result<Vec<Vec<u8>>, StoreError> {
        engine::relays(&MemoryView(&self.lock()))
    }

    fn session_ids(&self) -> Result<Vec<SessionId>, StoreError> {
        engine::session_ids(&MemoryView(&self.lock()))
    }

    fn apply(&self, changes: &[Change]) -> Result<(), StoreError> {
        let mut trees = self.lock();
        let overlay = Overlay { base: &trees, writes: RefCell::new(BTreeMap::new()) };
        engine::apply(&overlay, &Clear, changes)?;
        let writes = overlay.writes.into_inner();
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
