//! Restoring a backup into a home that holds no identity: the database and spool are built in
//! `<home>/restore.partial`, the restored node's new sessions are queued in it, and only then is
//! everything moved into place, the identity file last.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::BufReader;
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::Path;

use age::secrecy::SecretString;
use merpati_control::home::Home;
use merpati_control::identity_file::IdentityFile;
use merpati_proto::Timestamp;
use merpati_proto::identity::fingerprint;

use super::export::is_spool_name;
use super::record::{ReadError, Record, RecordReader};
use super::{BackupError, MAX_SCRYPT_WORK_FACTOR, io_error};
use crate::engine::{Engine, Me, Resumed};
use crate::lock::HomeLock;
use crate::store::{Change, Contact, Keyring, NodeKey, Profile, SledStore, Store};

/// Changes written together while restoring: few durable writes, bounded memory.
const BATCH: usize = 256;

/// The directory a restore builds in, inside the home.
const PARTIAL: &str = "restore.partial";

/// What a restore brought back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restored {
    /// The identity's fingerprint.
    pub fingerprint: String,
    /// The name the identity goes by, if any.
    pub name: Option<String>,
    /// When the backup was made.
    pub made_at: Timestamp,
    /// Its contacts.
    pub contacts: usize,
    /// Its messages.
    pub messages: usize,
    /// The files its messages carry.
    pub files: usize,
    /// The new sessions queued with contacts, and the contacts none could be started with.
    pub resumed: Resumed,
}

/// Restores the backup at `source`, opened with `passphrase`, into `home`, which must hold no
/// identity and no database. Queues, at `now`, a new session with every contact the backup's
/// node talked to, which the daemon delivers once started.
pub fn restore(
    home: &Home,
    source: &Path,
    passphrase: &str,
    now: Timestamp,
    rng: &mut rand_chacha::ChaCha20Rng,
) -> Result<Restored, BackupError> {
    home.create_dir().map_err(|e| BackupError::Io {
        action: "create",
        path: home.dir().to_owned(),
        source: std::io::Error::other(e.to_string()),
    })?;
    let _lock = HomeLock::acquire(&home.lock_file()).map_err(|e| match e {
        crate::lock::LockError::AlreadyRunning { .. } => {
            BackupError::HomeNotEmpty { home: home.dir().to_owned(), what: "a running merpatid" }
        }
        other => BackupError::Io {
            action: "lock",
            path: home.lock_file(),
            source: std::io::Error::other(other.to_string()),
        },
    })?;
    if home.identity_file().symlink_metadata().is_ok() {
        return Err(BackupError::HomeNotEmpty { home: home.dir().to_owned(), what: "an identity" });
    }
    let not_empty = |dir: &Path| fs::read_dir(dir).is_ok_and(|mut entries| entries.next().is_some());
    if not_empty(&home.database_dir()) {
        return Err(BackupError::HomeNotEmpty { home: home.dir().to_owned(), what: "a database" });
    }
    if not_empty(&home.dir().join("blobs")) {
        return Err(BackupError::HomeNotEmpty {
            home: home.dir().to_owned(),
            what: "files of another node (blobs/)",
        });
    }
    let partial = home.dir().join(PARTIAL);
    remove_partial(&partial)?;
    let result = build(&partial, source, passphrase, now, rng).and_then(|(identity, restored)| {
        move_into_place(home, &partial, &identity)?;
        Ok(restored)
    });
    if result.is_err() {
        // What was built holds secrets and is of no use.
        let _ = fs::remove_dir_all(&partial);
    }
    result
}

/// Builds the restored database and spool in `partial` and queues the new sessions; returns the
/// identity file, not yet written.
fn build(
    partial: &Path,
    source: &Path,
    passphrase: &str,
    now: Timestamp,
    rng: &mut rand_chacha::ChaCha20Rng,
) -> Result<(IdentityFile, Restored), BackupError> {
    private_dir(partial)?;
    let mut reader = open(source, passphrase)?;
    let db = partial.join("db");
    private_dir(&db)?;
    let keyring = Keyring::open_or_create(SledStore::key_file(&db), rng).map_err(|e| BackupError::Io {
        action: "create",
        path: db.clone(),
        source: std::io::Error::other(e.to_string()),
    })?;
    let store = SledStore::open(&db, keyring)?;
    let damaged =
        |reason: &str| BackupError::NotABackup { path: source.to_owned(), reason: reason.to_owned() };
    let mut importer = Importer { store: &store, partial, changes: Vec::new(), counts: Counts::default() };
    let mut identity = None;
    let mut made_at = None;
    loop {
        let record = match reader.next() {
            Ok(Some(record)) => record,
            Ok(None) => break,
            Err(ReadError::Invalid(reason)) => return Err(damaged(reason)),
            Err(ReadError::Io(e)) => return Err(damaged(&format!("it is damaged ({e})"))),
        };
        match record {
            Record::Identity(bytes) => {
                let file =
                    IdentityFile::from_bytes(&bytes.0).map_err(|e| damaged(&format!("its identity: {e}")))?;
                identity = Some(file);
            }
            Record::End { made_at: at, .. } => made_at = Some(at),
            other => importer.take(other, source)?,
        }
    }
    importer.flush()?;
    let counts = importer.counts;
    let (Some(identity), Some(made_at)) = (identity, made_at) else {
        return Err(damaged("it holds no identity"));
    };
    let Some(profile) = store.profile()? else { return Err(damaged("it holds no device profile")) };
    if profile.identity.public() != identity.identity.public() {
        return Err(damaged("its identity and its device profile do not match"));
    }
    // A node key of its own: should the old device still run, the two are different peers, and
    // contacts, told the new one in each new session, deliver to this one.
    let node_key = libp2p::identity::Keypair::generate_ed25519()
        .to_protobuf_encoding()
        .map_err(|_| damaged("no node key could be made"))?;
    store.apply(&[Change::PutProfile(Profile { node_key: NodeKey::new(node_key), ..profile })])?;
    let Some(profile) = store.profile()? else { return Err(damaged("it holds no device profile")) };
    if let Some(config) = counts.config.as_ref() {
        write_new(&partial.join("merpatid.toml"), config.as_bytes())?;
    }
    let peer_id = libp2p::identity::Keypair::from_protobuf_encoding(profile.node_key.as_bytes())
        .map_err(|_| damaged("the new node key does not decode"))?
        .public()
        .to_peer_id()
        .to_bytes();
    drop(profile);
    let me = Me::from(IdentityFile::from_bytes(&identity.to_bytes()).map_err(|e| damaged(&e.to_string()))?);
    let mut engine = Engine::start(store, me, Vec::new, now, rng.clone())?;
    engine.set_node_info(peer_id, Vec::new());
    let resumed = engine.resume_after_restore(now, now)?;
    drop(engine);
    sync_tree(&partial.join("blobs"))?;
    let restored = Restored {
        fingerprint: fingerprint(&identity.identity.public()),
        name: identity.name.clone(),
        made_at,
        contacts: counts.contacts,
        messages: counts.messages,
        files: counts.files,
        resumed,
    };
    Ok((identity, restored))
}

/// Opens the age file at `source` with `passphrase` and checks that it starts as a backup.
fn open(source: &Path, passphrase: &str) -> Result<RecordReader<impl std::io::Read + use<>>, BackupError> {
    let not_a_backup =
        |reason: &str| BackupError::NotABackup { path: source.to_owned(), reason: reason.to_owned() };
    let file = File::open(source).map_err(io_error("open", source))?;
    let decryptor = age::Decryptor::new_buffered(BufReader::new(file)).map_err(|e| match e {
        age::DecryptError::Io(e) => BackupError::Io { action: "read", path: source.to_owned(), source: e },
        _ => not_a_backup("it is not an age-encrypted file"),
    })?;
    if !decryptor.is_scrypt() {
        return Err(not_a_backup("it is encrypted to a key, not to a passphrase"));
    }
    let mut identity = age::scrypt::Identity::new(SecretString::from(passphrase.to_owned()));
    identity.set_max_work_factor(MAX_SCRYPT_WORK_FACTOR);
    let stream =
        decryptor.decrypt(std::iter::once(&identity as &dyn age::Identity)).map_err(|e| match e {
            age::DecryptError::ExcessiveWork { .. } => {
                not_a_backup("opening it would take far more work than a backup of this machine's needs")
            }
            age::DecryptError::Io(e) => {
                BackupError::Io { action: "read", path: source.to_owned(), source: e }
            }
            age::DecryptError::DecryptionFailed
            | age::DecryptError::KeyDecryptionFailed
            | age::DecryptError::NoMatchingKeys => BackupError::WrongPassphrase { path: source.to_owned() },
            _ => not_a_backup("its header is damaged"),
        })?;
    RecordReader::new(stream).map_err(|e| not_a_backup(&e.to_string()))
}

/// What the records restored so far hold.
#[derive(Default)]
struct Counts {
    contacts: usize,
    messages: usize,
    files: usize,
    config: Option<String>,
}

/// Turns records into store changes (written in batches) and spool files.
struct Importer<'a> {
    store: &'a SledStore,
    partial: &'a Path,
    changes: Vec<Change>,
    counts: Counts,
}

impl Importer<'_> {
    fn take(&mut self, record: Record, source: &Path) -> Result<(), BackupError> {
        let damaged =
            |reason: &str| BackupError::NotABackup { path: source.to_owned(), reason: reason.to_owned() };
        match record {
            Record::Profile(profile) => self.changes.push(Change::PutProfile(profile)),
            Record::Config(text) => self.counts.config = Some(text),
            Record::Relays(relays) => self.changes.push(Change::SetRelays(relays)),
            Record::Contact(contact) => {
                self.counts.contacts += 1;
                self.changes.push(Change::AddContact(Contact { session: None, ..contact }));
            }
            Record::Blocked(blocked) => self.changes.push(Change::Block(blocked)),
            Record::Message(message) => {
                self.counts.messages += 1;
                self.changes.push(Change::PutMessage(message));
            }
            Record::File { id, info, data } => {
                self.counts.files += 1;
                self.changes.push(Change::PutFile { id, info, data: data.map(|d| d.0) });
            }
            Record::Transfer { id, transfer } => self.changes.push(Change::PutTransfer { id, transfer }),
            Record::Group(group) => self.changes.push(Change::PutGroup(group)),
            Record::GroupMessage(info) => self.changes.push(Change::PutGroupMessage(info)),
            Record::Spool { side, name, offset, bytes } => {
                if !is_spool_name(&name) {
                    return Err(damaged("a spooled file has a name no spooled file has"));
                }
                let dir = self.partial.join("blobs").join(side.dir_name());
                private_dir(&self.partial.join("blobs"))?;
                private_dir(&dir)?;
                let path = dir.join(name);
                let file = OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .mode(0o600)
                    .open(&path)
                    .map_err(io_error("create", &path))?;
                file.write_all_at(&bytes, offset).map_err(io_error("write", &path))?;
            }
            Record::Identity(_) | Record::End { .. } => {}
        }
        if self.changes.len() >= BATCH {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), BackupError> {
        if !self.changes.is_empty() {
            self.store.apply(&std::mem::take(&mut self.changes))?;
        }
        Ok(())
    }
}

/// Moves what `partial` holds into `home`, the identity file last (its presence is what makes a
/// home a node's), and removes `partial`.
fn move_into_place(home: &Home, partial: &Path, identity: &IdentityFile) -> Result<(), BackupError> {
    let db = home.database_dir();
    if db.exists() {
        // Empty (checked at the start): made by a daemon that stopped for want of an identity.
        fs::remove_dir(&db).map_err(io_error("replace", &db))?;
    }
    rename(&partial.join("db"), &db)?;
    let blobs = partial.join("blobs");
    if blobs.exists() {
        let target = home.dir().join("blobs");
        // Empty (checked at the start), as a daemon that stopped for want of an identity left it.
        if target.exists() {
            fs::remove_dir(&target).map_err(io_error("replace", &target))?;
        }
        rename(&blobs, &target)?;
    }
    let config = partial.join("merpatid.toml");
    // A config file the new home already has is the user's choice for this machine.
    if config.exists() && !home.config_file().exists() {
        rename(&config, &home.config_file())?;
    }
    identity.save_new(&home.identity_file()).map_err(|e| BackupError::Io {
        action: "write",
        path: home.identity_file(),
        source: std::io::Error::other(e.to_string()),
    })?;
    // The restore is complete: what is left to tidy cannot undo it.
    if let Err(e) = fs::remove_dir_all(partial) {
        tracing::warn!("cannot remove {}: {e}", partial.display());
    }
    if let Err(e) = File::open(home.dir()).and_then(|d| d.sync_all()) {
        tracing::warn!("cannot sync {}: {e}", home.dir().display());
    }
    Ok(())
}

fn rename(from: &Path, to: &Path) -> Result<(), BackupError> {
    fs::rename(from, to).map_err(io_error("move into place", to))
}

/// Removes what an interrupted restore left.
fn remove_partial(partial: &Path) -> Result<(), BackupError> {
    match fs::remove_dir_all(partial) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io_error("remove", partial)(e)),
        _ => Ok(()),
    }
}

/// Creates `dir` (mode 0700) if it is not there.
fn private_dir(dir: &Path) -> Result<(), BackupError> {
    DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(io_error("create", dir))
}

/// Writes a new file of the user's only (mode 0600).
fn write_new(path: &Path, bytes: &[u8]) -> Result<(), BackupError> {
    use std::io::Write;
    let mut file = OpenOptions::new()
        .create_new(true)
        .write(true)
        .mode(0o600)
        .open(path)
        .map_err(io_error("create", path))?;
    file.write_all(bytes).and_then(|()| file.sync_all()).map_err(io_error("write", path))
}

/// Makes every file under `dir` (the restored spool) durable.
fn sync_tree(dir: &Path) -> Result<(), BackupError> {
    let Ok(entries) = fs::read_dir(dir) else { return Ok(()) };
    for entry in entries {
        let path = entry.map_err(io_error("read", dir))?.path();
        if path.is_dir() {
            sync_tree(&path)?;
        }
        File::open(&path).and_then(|f| f.sync_all()).map_err(io_error("sync", &path))?;
    }
    Ok(())
}
