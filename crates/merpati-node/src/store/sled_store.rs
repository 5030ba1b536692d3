//! The daemon's store: sled, with session records and the profile sealed by the [`Keyring`], and
//! group commit so that concurrent writers share the cost of making their batches durable.
//!
//! Directory layout: `<dir>/storage-keys` (the key file, see [`super::keyring`]) and
//! `<dir>/sled/` (sled's own files). The default tree holds the schema marker
//! `b"merpati-db" → version (u16 BE)`; the other trees are listed in the private `engine` module.
//!
//! Group commit. Every [`Store::apply`] commits its batch in one sled transaction (sled runs
//! transactions one at a time) and then needs a flush — an fsync — before it may return. Flushes
//! are the expensive part and one flush makes durable every transaction committed before it
//! started, so they are shared: after committing, a caller takes a ticket (the number of
//! transactions committed so far, its own included). If no flush is running, it becomes the
//! leader: it notes the latest ticket issued, flushes, and marks everything up to that ticket
//! durable. Otherwise it waits; when the running flush ends, it returns if its ticket is covered,
//! or else becomes (or waits for) the leader of the next flush, which starts after its commit and
//! therefore covers it. Under load this gives one fsync per group of concurrent batches instead of
//! one per batch; a lone caller flushes for itself, with no added delay.
//!
//! What a flush is. sled's own `flush` is not enough on Linux (see [`crate::sled_disk`]), so a
//! flush here is sled's flush followed by syncs of its log and blob files (`SledStore::sync`).
//! That is what lets a returned `apply` survive power loss, and what makes sharing flushes worth
//! it: a real fsync costs milliseconds.

use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError, RwLock};

use merpati_proto::Timestamp;
use merpati_proto::frame::MessageId;
use merpati_proto::mailbox::MailboxId;
use merpati_proto::session::SessionId;
use rand_core::CryptoRng;
use sled::transaction::{ConflictableTransactionError, TransactionError, Transactional, TransactionalTree};
use zeroize::Zeroizing;

use super::engine::{self, SEALED_TREES, Sealer, Tree, View, Visit};
use super::keyring::{KEY_FILE, KeyInfo, Keyring, KeyringError};
use super::overlay::{Overlay, Writes};
use super::{
    Blocked, Change, Contact, ContactRequest, FileInfo, OutboxEntry, OutboxHead, PartOf, Profile, RequestId,
    SessionRecord, Store, StoreError, StoredFragment, StoredMessage,
};
use crate::sled_disk::{self, MarkerError, SyncError, Syncer, sync_path};
use merpati_proto::identity::IdentityPublic;

/// The database layout version this build writes and reads. Version 2 added the outbox's order
/// and heads indexes, version 3 sealed message texts apart under per-conversation keys, version 4
/// added the index of unread messages, version 5 sealed contact requests; an older database is
/// migrated when opened (see
/// [`SledStore::open`]).
pub const SCHEMA_VERSION: u16 = 5;
/// sled's directory inside the store directory.
const SLED_DIR: &str = "sled";
/// The marker key in sled's default tree.
const MARKER_KEY: &[u8] = b"merpati-db";
/// sled's page cache size. The default (1 GiB) is sized for servers, not a desktop daemon; a
/// node mostly writes and reads back what is recent, and a small cache keeps a backlog of tens of
/// thousands of messages from growing the daemon's memory (docs/benchmarks.md: 64 MiB let the
/// sender's RSS grow 3.7× over idle with 20 000 queued, 4 MiB 1.9×, with the same drain rate).
const CACHE_CAPACITY: u64 = 4 * 1024 * 1024;

/// The sled-backed [`Store`].
pub struct SledStore {
    dir: PathBuf,
    /// Makes sled's flushes durable; one flush at a time.
    syncer: Mutex<Syncer>,
    /// One per [`Tree`], in [`Tree::ALL`] order.
    trees: Vec<sled::Tree>,
    /// Held while a batch is computed and committed. A batch reads the committed state (the
    /// outbox's indexes need prefix lookups, which sled transactions do not offer) and then
    /// writes in one transaction; no other batch may commit in between.
    writer: Mutex<()>,
    keyring: Keyring,
    /// Held shared by everything that seals or opens records, and exclusively by a key rotation:
    /// a record sealed under a key the rotation is about to destroy would be lost, and a read
    /// racing the rotation could find its key gone.
    rotation: RwLock<()>,
    commits: GroupCommit,
    /// Set by the first flush that failed. sled keeps a committed batch visible whether or not
    /// its flush worked, so after a failure reads may show what is not on disk: from then on
    /// every apply is refused, and the daemon stops rather than act on such data.
    failure: std::sync::OnceLock<String>,
    /// Makes every flush fail, to test what follows a failed one.
    #[cfg(test)]
    fail_flushes: std::sync::atomic::AtomicBool,
}

impl fmt::Debug for SledStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SledStore")
            .field("dir", &self.dir)
            .field("keyring", &self.keyring)
            .finish_non_exhaustive()
    }
}

impl SledStore {
    /// Why the store stopped taking writes, if a flush ever failed (see the `failure` field):
    /// the daemon stops when it sees one.
    pub fn failure(&self) -> Option<&str> {
        self.failure.get().map(String::as_str)
    }

    /// The key file's path for a store in `dir`, to pass to [`Keyring::open_or_create`].
    pub fn key_file(dir: impl AsRef<Path>) -> PathBuf {
        dir.as_ref().join(KEY_FILE)
    }

    /// Opens (or creates) the database in `dir` with the keys that seal its records.
    ///
    /// Refuses a database that is not Merpati's ([`StoreError::Foreign`]) or is of a newer format
    /// ([`StoreError::TooNew`]), and a keyring that cannot open the stored profile
    /// ([`StoreError::KeyUnavailable`]: the key file is not this database's). If the keyring
    /// holds more than one key, a rotation was interrupted, and it is completed here.
    pub fn open(dir: impl AsRef<Path>, keyring: Keyring) -> Result<Self, StoreError> {
        let dir = dir.as_ref().to_path_buf();
        let sled_dir = dir.join(SLED_DIR);
        // Only the user may enter the database directory.
        create_private_dir(&sled_dir)?;
        let db = sled::Config::new().path(&sled_dir).cache_capacity(CACHE_CAPACITY).open()?;
        // Before opening any tree: opening one creates it, in whatever database this is.
        let found = sled_disk::check_marker(&db, MARKER_KEY, SCHEMA_VERSION, "no Merpati schema marker")?;
        let syncer = Mutex::new(Syncer::open(db.clone(), &sled_dir)?);
        let trees = Tree::ALL.iter().map(|t| db.open_tree(t.name())).collect::<Result<Vec<_>, _>>()?;
        let store = Self {
            dir,
            syncer,
            trees,
            writer: Mutex::new(()),
            keyring,
            rotation: RwLock::new(()),
            commits: GroupCommit::default(),
            failure: std::sync::OnceLock::new(),
            #[cfg(test)]
            fail_flushes: std::sync::atomic::AtomicBool::new(false),
        };
        // Schema 1 had no outbox indexes; schemas 1 and 2 kept message texts in the records;
        // schemas before 4 had no index of unread messages, before 5 kept contact requests in the
        // clear. Only with the right key file: texts sealed under a key file that is not this
        // database's would be lost with it.
        if found < 5 {
            store.profile()?;
            store.migrate(&db, found)?;
        }
        // The marker of a new database, and the directory entries sled created, become durable.
        store.sync()?;
        for path in [&sled_dir, &store.dir] {
            sync_path(path)?;
        }
        if store.keyring.keys().len() > 1 {
            let _exclusive = store.rotation.write().unwrap_or_else(PoisonError::into_inner);
            match store.reseal_and_destroy_old_keys() {
                Ok(()) => {}
                // A damaged record must not keep the daemon from starting: every key is still
                // there, and the next `rotate_storage_key` reports the record.
                Err(StoreError::Corrupt { .. } | StoreError::KeyUnavailable { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        // Fail now, with a clear error, rather than on the first message.
        store.profile()?;
        Ok(store)
    }

    /// The keyring.
    pub fn keyring(&self) -> &Keyring {
        &self.keyring
    }

    /// Whether sealed records were deleted (a message, a conversation, a contact) since the
    /// storage key was last replaced: the daemon then replaces it, at once or, after a crash or
    /// a failed try, at its next start or maintenance pass.
    pub fn shred_pending(&self) -> Result<bool, StoreError> {
        engine::shred_pending(&SledView(&self.trees))
    }

    /// Rotates the storage key: adds a fresh key, re-seals every session record and the profile
    /// under it in one transaction, flushes, then destroys the old key. From then on, copies of
    /// old records that sled left in its files cannot be opened. Writers wait while it runs; it
    /// reads and rewrites every sealed record, so run it at quiet times (e.g. daily).
    ///
    /// A crash at any point loses nothing: until the old key is destroyed it is still in the key
    /// file, and [`SledStore::open`] completes an interrupted rotation.
    pub fn rotate_storage_key(&self, rng: &mut (impl CryptoRng + ?Sized)) -> Result<KeyInfo, StoreError> {
        let _exclusive = self.rotation.write().unwrap_or_else(PoisonError::into_inner);
        let key = self.keyring.add_key(rng)?;
        self.reseal_and_destroy_old_keys()?;
        Ok(key)
    }

    /// Re-seals every sealed record under the current key, flushes, then destroys the other keys.
    /// The caller holds the rotation lock exclusively.
    fn reseal_and_destroy_old_keys(&self) -> Result<(), StoreError> {
        let mut updates: Vec<(Tree, sled::IVec, Vec<u8>)> = Vec::new();
        for tree in SEALED_TREES {
            for item in self.tree(tree).iter() {
                let (key, value) = item?;
                let sealed = engine::reseal(&self.keyring, tree, &key, &value)?;
                updates.push((tree, key, sealed));
            }
        }
        // The sealed trees, then `meta`, whose shred flag the rotation clears.
        let mut trees: Vec<sled::Tree> = SEALED_TREES.iter().map(|tree| self.tree(*tree).clone()).collect();
        trees.push(self.tree(Tree::Meta).clone());
        trees[..]
            .transaction(|t: &Vec<TransactionalTree>| {
                for (tree, key, value) in &updates {
                    let index = SEALED_TREES.iter().position(|sealed| sealed == tree).unwrap_or(0);
                    t[index].insert(key, value.as_slice())?;
                }
                t[t.len() - 1].remove(engine::SHRED_PENDING_KEY)?;
                Ok::<_, ConflictableTransactionError<StoreError>>(())
            })
            .map_err(from_transaction)?;
        // Nothing on disk may still need the old key when it is destroyed.
        self.sync()?;
        self.keyring.destroy_old_keys()?;
        Ok(())
    }

    /// Migrates a database of schema 1 to 4 to schema 5: builds the outbox's order and heads
    /// indexes from the outbox (from schema 1), seals every message's text apart under its
    /// conversation's content key (from schemas 1 and 2), files the unread messages in their
    /// index (before 4), seals the contact requests, and sets the marker to 5, all in one
    /// transaction, so a crash leaves either
    /// the old database untouched (and the next start migrates it) or the new one complete. The
    /// outbox itself is not rewritten. The caller makes it durable.
    ///
    /// The texts' old copies stay in sled's files until sled reuses their space: only messages
    /// stored from schema 3 on have their texts shredded when deleted.
    fn migrate(&self, db: &sled::Db, found: u16) -> Result<(), StoreError> {
        let _writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let view = SledView(&self.trees);
        let overlay = Overlay::new(&view);
        if found < 2 {
            engine::index_outbox(&overlay, &view)?;
        }
        if found < 3 {
            engine::seal_texts(&overlay, &self.keyring, &view)?;
        }
        if found < 4 {
            engine::index_unread(&overlay, &view)?;
        }
        engine::seal_requests(&overlay, &self.keyring, &view)?;
        let writes = overlay.into_writes();
        let mut trees = self.trees.clone();
        // The default tree, which holds the marker, joins the transaction last.
        trees.push((**db).clone());
        trees[..]
            .transaction(|t: &Vec<TransactionalTree>| {
                write_all(t, &writes)?;
                t[t.len() - 1].insert(MARKER_KEY, &SCHEMA_VERSION.to_be_bytes())?;
                Ok::<_, ConflictableTransactionError<StoreError>>(())
            })
            .map_err(from_transaction)
    }

    /// Makes everything committed so far durable: sled's flush, then syncs of its files (see
    /// the module documentation for why sled's flush alone is not enough).
    fn sync(&self) -> Result<(), StoreError> {
        #[cfg(test)]
        if self.fail_flushes.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(StoreError::Io {
                path: self.dir.clone(),
                source: io::Error::other("injected failure"),
            });
        }
        Ok(self.syncer.lock().unwrap_or_else(PoisonError::into_inner).sync()?)
    }

    /// Computes `changes` against the committed state and writes the result as one sled
    /// transaction over the trees it touches (not yet durable). Commits are serialised by the
    /// writer lock, so a transaction never needs a tree it does not write: and sled's cost per
    /// transaction grows with the trees in it.
    fn commit(&self, changes: &[Change]) -> Result<(), StoreError> {
        let _writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let _shared = self.shared();
        let view = SledView(&self.trees);
        let overlay = Overlay::new(&view);
        engine::apply(&overlay, &self.keyring, changes)?;
        let writes = overlay.into_writes();
        // The writes are ordered by tree first: each touched tree once.
        let mut touched: Vec<Tree> = writes.keys().map(|(tree, _)| *tree).collect();
        touched.dedup();
        if touched.is_empty() {
            return Ok(());
        }
        let trees: Vec<sled::Tree> = touched.iter().map(|tree| self.tree(*tree).clone()).collect();
        trees[..]
            .transaction(|t: &Vec<TransactionalTree>| {
                for ((tree, key), value) in &writes {
                    let at = touched.binary_search(tree).unwrap_or(0);
                    match value {
                        Some(value) => t[at].insert(key.as_slice(), value.as_slice())?,
                        None => t[at].remove(key.as_slice())?,
                    };
                }
                Ok(())
            })
            .map_err(from_transaction)
    }

    fn tree(&self, tree: Tree) -> &sled::Tree {
        &self.trees[tree.index()]
    }

    fn shared(&self) -> std::sync::RwLockReadGuard<'_, ()> {
        self.rotation.read().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Creates a directory (and its parents) that only the owner can enter, unless it exists.
fn create_private_dir(path: &Path) -> Result<(), StoreError> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    match builder.create(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(source) => Err(StoreError::Io { path: path.to_path_buf(), source }),
    }
}

impl From<MarkerError> for StoreError {
    fn from(error: MarkerError) -> Self {
        match error {
            MarkerError::Foreign(reason) => Self::Foreign { reason },
            MarkerError::TooNew(found) => Self::TooNew { found, supported: SCHEMA_VERSION },
            MarkerError::Db(e) => Self::Db(e),
        }
    }
}

impl From<SyncError> for StoreError {
    fn from(error: SyncError) -> Self {
        match error {
            SyncError::Db(e) => Self::Db(e),
            SyncError::Io { path, source } => Self::Io { path, source },
        }
    }
}

fn from_transaction(e: TransactionError<StoreError>) -> StoreError {
    match e {
        TransactionError::Abort(e) => e,
        TransactionError::Storage(e) => StoreError::Db(e),
    }
}

impl Sealer for Keyring {
    fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, StoreError> {
        Ok(Keyring::seal(self, aad, plaintext)?)
    }

    fn open(&self, what: &'static str, aad: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, StoreError> {
        Keyring::open(self, aad, sealed).map_err(|e| match e {
            KeyringError::UnknownKey { id } => StoreError::KeyUnavailable { what, key_id: id },
            KeyringError::Unauthentic => StoreError::Corrupt { what },
            other => StoreError::Keyring(other),
        })
    }
}

impl From<StoreError> for ConflictableTransactionError<StoreError> {
    fn from(e: StoreError) -> Self {
        ConflictableTransactionError::Abort(e)
    }
}

/// Writes a batch's computed writes into sled's transactional trees (in [`Tree::ALL`] order).
fn write_all(
    trees: &[TransactionalTree],
    writes: &Writes,
) -> Result<(), ConflictableTransactionError<StoreError>> {
    for ((tree, key), value) in writes {
        let tree = &trees[tree.index()];
        match value {
            Some(value) => tree.insert(key.as_slice(), value.as_slice())?,
            None => tree.remove(key.as_slice())?,
        };
    }
    Ok(())
}

/// The engine's read interface over sled's trees.
struct SledView<'a>(&'a [sled::Tree]);

impl View for SledView<'_> {
    fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.0[tree.index()].get(key)?.map(|v| v.to_vec()))
    }

    fn scan(&self, tree: Tree, prefix: &[u8], rev: bool, visit: &mut Visit<'_>) -> Result<(), StoreError> {
        let iter = self.0[tree.index()].scan_prefix(prefix);
        let iter: Box<dyn Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>>> =
            if rev { Box::new(iter.rev()) } else { Box::new(iter) };
        for item in iter {
            let (key, value) = item?;
            if !visit(&key, &value)? {
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
        for item in self.0[tree.index()].range(prefix..below).rev() {
            let (key, value) = item?;
            if !key.starts_with(prefix) {
                break;
            }
            if !visit(&key, &value)? {
                break;
            }
        }
        Ok(())
    }
}

impl Store for SledStore {
    fn profile(&self) -> Result<Option<Profile>, StoreError> {
        let _shared = self.shared();
        engine::profile(&SledView(&self.trees), &self.keyring)
    }

    fn contacts(&self) -> Result<Vec<Contact>, StoreError> {
        engine::contacts(&SledView(&self.trees))
    }

    fn contact(&self, name: &str) -> Result<Option<Contact>, StoreError> {
        engine::contact(&SledView(&self.trees), name)
    }

    fn session(&self, id: &SessionId) -> Result<Option<SessionRecord>, StoreError> {
        let _shared = self.shared();
        engine::session(&SledView(&self.trees), &self.keyring, id)
    }

    fn session_by_mailbox(&self, mailbox: &MailboxId) -> Result<Option<SessionId>, StoreError> {
        engine::session_by_mailbox(&SledView(&self.trees), mailbox)
    }

    fn session_by_open_digest(&self, digest: &[u8; 32]) -> Result<Option<SessionId>, StoreError> {
        engine::session_by_open_digest(&SledView(&self.trees), digest)
    }

    fn message(&self, id: &MessageId) -> Result<Option<StoredMessage>, StoreError> {
        let _shared = self.shared();
        engine::message(&SledView(&self.trees), &self.keyring, id)
    }

    fn messages(&self, contact: Option<&str>, limit: usize) -> Result<Vec<StoredMessage>, StoreError> {
        let _shared = self.shared();
        engine::messages(&SledView(&self.trees), &self.keyring, contact, limit)
    }

    fn messages_before(
        &self,
        contact: Option<&str>,
        before: u64,
        limit: usize,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        let _shared = self.shared();
        engine::messages_before(&SledView(&self.trees), &self.keyring, contact, before, limit)
    }

    fn unread(&self, contact: &str) -> Result<Vec<MessageId>, StoreError> {
        let _shared = self.shared();
        engine::unread(&SledView(&self.trees), contact)
    }

    fn unread_count(&self, contact: &str) -> Result<usize, StoreError> {
        let _shared = self.shared();
        engine::unread_count(&SledView(&self.trees), contact)
    }

    fn swept_through(&self, relay: &[u8]) -> Result<Option<u64>, StoreError> {
        engine::swept_through(&SledView(&self.trees), relay)
    }

    fn fragments(&self, contact: &str, group: &[u8; 16]) -> Result<Vec<StoredFragment>, StoreError> {
        let _shared = self.shared();
        engine::fragments(&SledView(&self.trees), &self.keyring, contact, group)
    }

    fn fragment_groups(&self, contact: &str) -> Result<Vec<[u8; 16]>, StoreError> {
        engine::fragment_groups(&SledView(&self.trees), contact)
    }

    fn stale_fragments(&self, before: Timestamp) -> Result<Vec<(String, [u8; 16])>, StoreError> {
        let _shared = self.shared();
        engine::stale_fragments(&SledView(&self.trees), &self.keyring, before)
    }

    fn part_of(&self, id: &MessageId) -> Result<Option<PartOf>, StoreError> {
        engine::part_of(&SledView(&self.trees), id)
    }

    fn file_info(&self, id: &MessageId) -> Result<Option<FileInfo>, StoreError> {
        let _shared = self.shared();
        engine::file_info(&SledView(&self.trees), &self.keyring, id)
    }

    fn file_data(&self, id: &MessageId) -> Result<Option<Zeroizing<Vec<u8>>>, StoreError> {
        let _shared = self.shared();
        engine::file_data(&SledView(&self.trees), &self.keyring, id)
    }

    fn transfer(&self, id: &MessageId) -> Result<Option<super::Transfer>, StoreError> {
        let _shared = self.shared();
        engine::transfer(&SledView(&self.trees), &self.keyring, id)
    }

    fn transfers(&self) -> Result<Vec<(MessageId, super::Transfer)>, StoreError> {
        let _shared = self.shared();
        engine::transfers(&SledView(&self.trees), &self.keyring)
    }

    fn search(
        &self,
        contact: Option<&str>,
        needle: &str,
        limit: usize,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        let _shared = self.shared();
        engine::search(&SledView(&self.trees), &self.keyring, contact, needle, limit)
    }

    fn outbox(&self) -> Result<Vec<OutboxEntry>, StoreError> {
        engine::outbox(&SledView(&self.trees))
    }

    fn outbox_entry(&self, id: &MessageId) -> Result<Option<OutboxEntry>, StoreError> {
        engine::outbox_entry(&SledView(&self.trees), id)
    }

    fn outbox_head(&self, contact: &str) -> Result<Option<OutboxHead>, StoreError> {
        engine::outbox_head(&SledView(&self.trees), contact)
    }

    fn outbox_queue(&self, contact: &str, limit: usize) -> Result<Vec<OutboxHead>, StoreError> {
        engine::outbox_queue(&SledView(&self.trees), contact, limit)
    }

    fn outbox_due(&self, now: Timestamp) -> Result<Vec<OutboxHead>, StoreError> {
        engine::outbox_due(&SledView(&self.trees), now)
    }

    fn outbox_len(&self) -> Result<usize, StoreError> {
        engine::outbox_len(&SledView(&self.trees))
    }

    fn awaiting(&self, until: Timestamp, limit: usize) -> Result<Vec<(Timestamp, MessageId)>, StoreError> {
        engine::awaiting(&SledView(&self.trees), until, limit)
    }

    fn announced(&self, session: &SessionId) -> Result<Vec<u64>, StoreError> {
        engine::announced(&SledView(&self.trees), session)
    }

    fn relays(&self) -> Result<Vec<Vec<u8>>, StoreError> {
        engine::relays(&SledView(&self.trees))
    }

    fn session_ids(&self) -> Result<Vec<SessionId>, StoreError> {
        engine::session_ids(&SledView(&self.trees))
    }

    fn requests(&self) -> Result<Vec<ContactRequest>, StoreError> {
        engine::requests(&SledView(&self.trees), &self.keyring)
    }

    fn request(&self, id: &RequestId) -> Result<Option<ContactRequest>, StoreError> {
        engine::request(&SledView(&self.trees), &self.keyring, id)
    }

    fn requests_dropped(&self) -> Result<u64, StoreError> {
        engine::requests_dropped(&SledView(&self.trees))
    }

    fn group(&self, id: &[u8; 16]) -> Result<Option<super::GroupRecord>, StoreError> {
        let _shared = self.shared();
        engine::group(&SledView(&self.trees), &self.keyring, id)
    }

    fn groups(&self) -> Result<Vec<super::GroupRecord>, StoreError> {
        let _shared = self.shared();
        engine::groups(&SledView(&self.trees), &self.keyring)
    }

    fn group_message(&self, id: &MessageId) -> Result<Option<super::GroupMessageInfo>, StoreError> {
        engine::group_message(&SledView(&self.trees), id)
    }

    fn group_copy(&self, copy: &MessageId) -> Result<Option<MessageId>, StoreError> {
        engine::group_copy(&SledView(&self.trees), copy)
    }

    fn blocked(&self) -> Result<Vec<Blocked>, StoreError> {
        engine::blocked(&SledView(&self.trees))
    }

    fn is_blocked(&self, identity: &IdentityPublic) -> Result<bool, StoreError> {
        engine::is_blocked(&SledView(&self.trees), identity)
    }

    fn dismissed_len(&self) -> Result<usize, StoreError> {
        engine::dismissed_len(&SledView(&self.trees))
    }

    fn is_dismissed(&self, digest: &[u8; 32]) -> Result<bool, StoreError> {
        engine::is_dismissed(&SledView(&self.trees), digest)
    }

    fn apply(&self, changes: &[Change]) -> Result<(), StoreError> {
        if changes.is_empty() {
            return Ok(());
        }
        if let Some(reason) = self.failure.get() {
            return Err(StoreError::Failed { reason: reason.clone() });
        }
        self.commit(changes)?;
        // Never inside the transaction: flushing there deadlocks sled.
        self.commits.make_durable(|| self.sync()).inspect_err(|e| {
            let _ = self.failure.set(e.to_string());
        })
    }

    fn apply_relaxed(&self, changes: &[Change]) -> Result<(), StoreError> {
        if changes.is_empty() {
            return Ok(());
        }
        self.commit(changes)
    }
}

/// Shares flushes between concurrent committers (see the module documentation).
#[derive(Debug, Default)]
struct GroupCommit {
    state: Mutex<CommitState>,
    flushed: Condvar,
}

#[derive(Debug, Default)]
struct CommitState {
    /// Tickets issued: transactions committed and waiting for, or past, a flush.
    committed: u64,
    /// Every ticket up to this one is durable.
    durable: u64,
    /// Whether a leader is flushing now.
    flushing: bool,
    /// Flushes done (for tests and measurements).
    flushes: u64,
}

impl GroupCommit {
    /// Called after a transaction committed; returns once a flush that started after that commit
    /// has succeeded, running it if no one else is.
    fn make_durable(&self, flush: impl Fn() -> Result<(), StoreError>) -> Result<(), StoreError> {
        let mut state = self.lock();
        state.committed += 1;
        let ticket = state.committed;
        loop {
            if state.durable >= ticket {
                return Ok(());
            }
            if !state.flushing {
                state.flushing = true;
                let target = state.committed;
                drop(state);
                // Resets `flushing` and wakes the waiters even if `flush` panics, so that one
                // failed flush cannot block every later writer.
                let mut leader = Leader { commits: self, target, succeeded: false };
                let result = flush();
                leader.succeeded = result.is_ok();
                drop(leader);
                // On success `target >= ticket`: this caller is durable. On failure it reports
                // the error; waiters retry with a flush of their own.
                return result;
            }
            state = self.flushed.wait(state).unwrap_or_else(PoisonError::into_inner);
        }
    }

    fn lock(&self) -> MutexGuard<'_, CommitState> {
        // Counters only ever move forward under the lock: a poisoned state is still consistent.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The flushing leader's duty to report back, whatever happens.
struct Leader<'a> {
    commits: &'a GroupCommit,
    target: u64,
    succeeded: bool,
}

impl Drop for Leader<'_> {
    fn drop(&mut self) {
        let mut state = self.commits.lock();
        state.flushing = false;
        if self.succeeded {
            state.durable = state.durable.max(self.target);
            state.flushes += 1;
        }
        self.commits.flushed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Instant;

    use merpati_proto::Timestamp;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    use super::*;
    use crate::store::{Direction, Status};

    /// Opens the store in `dir`, waiting for sled's file lock: sled lets go of it when the last
    /// reference to a closed database drops, which can be a moment later, on its own thread.
    fn open(dir: &Path, seed: u64) -> SledStore {
        let keyring = || {
            Keyring::open_or_create(SledStore::key_file(dir), &mut ChaCha20Rng::seed_from_u64(seed))
                .expect("keyring")
        };
        for _ in 0..200 {
            match SledStore::open(dir, keyring()) {
                Err(StoreError::Db(sled::Error::Io(e)))
                    if e.to_string().contains("could not acquire lock") =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                other => return other.expect("open"),
            }
        }
        SledStore::open(dir, keyring()).expect("open")
    }

    #[test]
    fn after_a_failed_flush_nothing_more_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), 1);
        store.apply(&[Change::PutMessage(message(1, 1))]).unwrap();
        assert_eq!(store.failure(), None);
        store.fail_flushes.store(true, Ordering::Relaxed);
        assert!(matches!(store.apply(&[Change::PutMessage(message(1, 2))]), Err(StoreError::Io { .. })));
        assert!(store.failure().is_some_and(|reason| reason.contains("injected failure")));
        // Even once the disk would work again: what the failed flush left visible may not be on
        // disk, so the store takes nothing more until it is opened again.
        store.fail_flushes.store(false, Ordering::Relaxed);
        let refused = store.apply(&[Change::PutMessage(message(1, 3))]);
        assert!(
            matches!(&refused, Err(StoreError::Failed { reason }) if reason.contains("injected failure"))
        );
        assert!(refused.unwrap_err().to_string().contains("restart the daemon"));
        assert!(store.message(&message(1, 3).id).unwrap().is_none(), "the refused batch was not applied");
    }

    fn message(thread: u64, i: u64) -> StoredMessage {
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&thread.to_be_bytes());
        id[8..].copy_from_slice(&i.to_be_bytes());
        StoredMessage {
            id: MessageId(id),
            contact: format!("contact-{thread}"),
            direction: Direction::In,
            time: Timestamp(i),
            text: format!("message {i} from {thread}"),
            seq: Some(i),
            status: Status::Delivered,
            reason: None,
            order: 0,
        }
    }

    #[test]
    fn group_commit_covers_every_ticket_and_survives_failures() {
        let commits = Arc::new(GroupCommit::default());
        // A simulated database: `written` counts commits, `persisted` how many of them the last
        // successful flush covered, `calls` the flushes attempted.
        let (written, persisted, calls) =
            (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (commits, written, persisted, calls) =
                    (commits.clone(), written.clone(), persisted.clone(), calls.clone());
                std::thread::spawn(move || {
                    let mut failures = 0;
                    for _ in 0..200 {
                        let mine = written.fetch_add(1, Ordering::SeqCst) + 1;
                        let result = commits.make_durable(|| {
                            let covers = written.load(Ordering::SeqCst);
                            let n = calls.fetch_add(1, Ordering::SeqCst);
                            std::thread::sleep(std::time::Duration::from_micros(200));
                            // Every seventh flush fails.
                            if n % 7 == 3 {
                                return Err(StoreError::Corrupt { what: "test flush" });
                            }
                            persisted.fetch_max(covers, Ordering::SeqCst);
                            Ok(())
                        });
                        match result {
                            Ok(()) => {
                                assert!(persisted.load(Ordering::SeqCst) >= mine, "returned before durable")
                            }
                            Err(_) => failures += 1,
                        }
                    }
                    failures
                })
            })
            .collect();
        let failures: u64 = threads.into_iter().map(|t| t.join().expect("thread")).sum();
        let state = commits.lock();
        assert_eq!(state.committed, 1600);
        assert!(!state.flushing);
        // Only a leader whose own flush failed reports a failure; waiters try again.
        assert_eq!(calls.load(Ordering::SeqCst), state.flushes + failures);
        assert!(failures > 0);
        assert!(state.flushes < 1600 - failures, "no flush was shared ({} flushes)", state.flushes);
    }

    /// 8 threads × 200 batches of one incoming message each, on a real directory: every batch is
    /// stored, and flushes are shared. Prints the rate (run with `--nocapture`).
    #[test]
    fn concurrent_applies_share_flushes() {
        let dir = tempfile::tempdir().expect("dir");
        let store = Arc::new(open(dir.path(), 1));
        let started = Instant::now();
        let threads: Vec<_> = (0..8u64)
            .map(|t| {
                let store = store.clone();
                std::thread::spawn(move || {
                    for i in 0..200 {
                        store.apply(&[Change::PutMessage(message(t, i))]).expect("apply");
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("thread");
        }
        let elapsed = started.elapsed();
        let flushes = store.commits.lock().flushes;
        eprintln!(
            "8 threads x 200 applies: {:.0} applies/s ({:?}), {flushes} flushes for 1600 applies",
            1600.0 / elapsed.as_secs_f64(),
            elapsed,
        );
        assert_eq!(store.messages(None, 5000).expect("messages").len(), 1600);
        for t in 0..8 {
            let mine = store.messages(Some(&format!("contact-{t}")), 5000).expect("messages");
            assert_eq!(mine.len(), 200);
            assert!(mine.windows(2).all(|w| w[0].order < w[1].order && w[0].time < w[1].time));
        }
        assert!(flushes <= 1600);

        let started = Instant::now();
        for i in 0..200 {
            store.apply(&[Change::PutMessage(message(99, i))]).expect("apply");
        }
        let elapsed = started.elapsed();
        eprintln!("1 thread x 200 applies: {:.0} applies/s ({:?})", 200.0 / elapsed.as_secs_f64(), elapsed);
    }

    #[test]
    fn an_interrupted_rotation_is_completed_on_open() {
        use merpati_proto::identity::{DeviceCert, IdentityKey, PrekeyRing};
        use merpati_proto::keys::X25519Secret;

        let dir = tempfile::tempdir().expect("dir");
        let store = open(dir.path(), 2);
        let mut rng = ChaCha20Rng::seed_from_u64(5);
        let identity = IdentityKey::generate(&mut rng);
        let device_static = X25519Secret::generate(&mut rng);
        let cert = DeviceCert::issue(&identity, &device_static.public(), Timestamp(1));
        let prekeys = PrekeyRing::new(&identity, &cert.device_id(), Timestamp(1), &mut rng);
        let node_key = crate::store::NodeKey::new(vec![1, 2, 3]);
        let profile = Profile { identity, device_static, cert, node_key, prekeys, created_at: Timestamp(1) };
        store.apply(&[Change::PutProfile(profile), Change::PutMessage(message(1, 1))]).expect("apply");
        let old = store.keyring().current();
        // A crash right after the new key reached the file: records are still under the old key.
        let new = store.keyring().add_key(&mut ChaCha20Rng::seed_from_u64(3)).expect("add");
        assert_eq!(store.keyring().keys(), vec![old, new]);
        drop(store);

        let store = open(dir.path(), 4);
        assert_eq!(store.keyring().keys(), vec![new]);
        let sealed = store.tree(Tree::Profile).get(b"profile").expect("get").expect("profile");
        assert_eq!(Keyring::key_id_of(&sealed[1..]), Some(new.id));
        assert_eq!(store.profile().expect("profile").expect("some").node_key.as_bytes(), &[1, 2, 3]);
        assert_eq!(store.messages(None, 10).expect("messages").len(), 1);
    }
}
