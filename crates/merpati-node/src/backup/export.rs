//! Writing a backup: the daemon's store and home, record by record, into an age file beside the
//! destination that replaces it only once whole and on disk.

use std::fs::{self, File};
use std::io::{self, BufWriter, Read};
use std::path::{Path, PathBuf};

use age::secrecy::SecretString;
use merpati_control::home::Home;
use merpati_control::identity_file::IdentityFile;
use merpati_proto::Timestamp;

use super::record::{MAX_CONFIG_LEN, Record, RecordWriter, SPOOL_PIECE, SecretBytes, SpoolSide};
use super::{BackupError, MIN_PASSPHRASE_LEN, SCRYPT_WORK_FACTOR, io_error};
use crate::store::{Contact, Store};

/// What a backup holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Written {
    /// Where it is.
    pub path: PathBuf,
    /// Its contacts.
    pub contacts: usize,
    /// Its messages.
    pub messages: usize,
    /// The files its messages carry.
    pub files: usize,
    /// Its size in bytes.
    pub bytes: u64,
}

/// Writes a backup of `store` and `home` to `dest`, encrypted to `passphrase`.
///
/// The file is written beside `dest` (mode 0600) and renamed over it once it is whole and on
/// disk, so an interrupted backup never leaves half a file under the name, nor destroys an
/// older backup there.
pub fn write<S: Store>(
    store: &S,
    home: &Home,
    passphrase: &str,
    dest: &Path,
    now: Timestamp,
) -> Result<Written, BackupError> {
    if passphrase.chars().count() < MIN_PASSPHRASE_LEN {
        return Err(BackupError::WeakPassphrase);
    }
    let dir = match dest.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let mut temp = tempfile::Builder::new()
        .prefix(".merpati-backup-")
        .tempfile_in(dir)
        .map_err(io_error("create a file in", dir))?;
    let mut recipient = age::scrypt::Recipient::new(SecretString::from(passphrase.to_owned()));
    recipient.set_work_factor(SCRYPT_WORK_FACTOR);
    let encryptor =
        age::Encryptor::with_recipients(std::iter::once(&recipient as &dyn age::Recipient)).map_err(|e| {
            BackupError::Io { action: "encrypt", path: dest.to_owned(), source: io::Error::other(e) }
        })?;
    let failed = io_error("write", dest);
    let mut written = Written { path: dest.to_owned(), ..Written::default() };
    {
        let sink =
            encryptor.wrap_output(BufWriter::new(temp.as_file_mut())).map_err(io_error("write", dest))?;
        let mut records = RecordWriter::new(sink).map_err(io_error("write", dest))?;
        each_record(store, home, &mut written, &mut |record| {
            records.write(&record).map_err(io_error("write", dest))
        })?;
        let (sink, _) = records.finish(now).map_err(io_error("write", dest))?;
        let buffered = sink.finish().map_err(io_error("write", dest))?;
        buffered.into_inner().map_err(|e| failed(e.into_error()))?;
    }
    temp.as_file().sync_all().map_err(io_error("sync", dest))?;
    written.bytes = temp.as_file().metadata().map_err(io_error("read", dest))?.len();
    temp.persist(dest).map_err(|e| BackupError::Io {
        action: "write",
        path: dest.to_owned(),
        source: e.error,
    })?;
    File::open(dir).and_then(|d| d.sync_all()).map_err(io_error("sync the directory", dir))?;
    Ok(written)
}

/// Hands every record of the backup to `put`, in order, counting what they hold in `written`.
fn each_record<S: Store>(
    store: &S,
    home: &Home,
    written: &mut Written,
    put: &mut dyn FnMut(Record) -> Result<(), BackupError>,
) -> Result<(), BackupError> {
    let identity = IdentityFile::load(&home.identity_file()).map_err(|e| BackupError::Io {
        action: "read",
        path: home.identity_file(),
        source: io::Error::other(e.to_string()),
    })?;
    put(Record::Identity(SecretBytes(identity.to_bytes())))?;
    drop(identity);
    if let Some(profile) = store.profile()? {
        put(Record::Profile(profile))?;
    }
    if let Some(config) = read_config(&home.config_file())? {
        put(Record::Config(config))?;
    }
    put(Record::Relays(store.relays()?))?;
    for contact in store.contacts()? {
        written.contacts += 1;
        // Sessions stay behind: the restored node starts new ones.
        put(Record::Contact(Contact { session: None, ..contact }))?;
    }
    for blocked in store.blocked()? {
        put(Record::Blocked(blocked))?;
    }
    for group in store.groups()? {
        put(Record::Group(group))?;
    }
    for message in store.messages(None, usize::MAX)? {
        let id = message.id;
        written.messages += 1;
        put(Record::Message(message))?;
        if let Some(info) = store.file_info(&id)? {
            written.files += 1;
            let data = store.file_data(&id)?.map(SecretBytes);
            put(Record::File { id, info, data })?;
        }
        if let Some(transfer) = store.transfer(&id)? {
            put(Record::Transfer { id, transfer })?;
        }
        if let Some(info) = store.group_message(&id)? {
            put(Record::GroupMessage(info))?;
        }
    }
    let spool = home.dir().join("blobs");
    for side in [SpoolSide::Out, SpoolSide::In] {
        let dir = spool.join(side.dir_name());
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io_error("read", &dir)(e)),
        };
        for entry in entries {
            let entry = entry.map_err(io_error("read", &dir))?;
            let Some(name) = entry.file_name().to_str().filter(|n| is_spool_name(n)).map(str::to_owned)
            else {
                continue;
            };
            put_spooled(&entry.path(), side, name, put)?;
        }
    }
    Ok(())
}

/// Hands a spooled file to `put` in pieces.
fn put_spooled(
    path: &Path,
    side: SpoolSide,
    name: String,
    put: &mut dyn FnMut(Record) -> Result<(), BackupError>,
) -> Result<(), BackupError> {
    let mut file = File::open(path).map_err(io_error("read", path))?;
    let mut offset = 0u64;
    loop {
        let mut bytes = Vec::with_capacity(SPOOL_PIECE);
        let read =
            (&mut file).take(SPOOL_PIECE as u64).read_to_end(&mut bytes).map_err(io_error("read", path))?;
        if read == 0 {
            return Ok(());
        }
        put(Record::Spool { side, name: name.clone(), offset, bytes })?;
        offset += read as u64;
    }
}

/// The config file's text, if there is one.
fn read_config(path: &Path) -> Result<Option<String>, BackupError> {
    let text = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_error("read", path)(e)),
    };
    if text.len() > MAX_CONFIG_LEN {
        return Err(BackupError::Io {
            action: "read",
            path: path.to_owned(),
            source: io::Error::other(format!("a config file is at most {MAX_CONFIG_LEN} bytes")),
        });
    }
    String::from_utf8(text).map(Some).map_err(|_| BackupError::Io {
        action: "read",
        path: path.to_owned(),
        source: io::Error::other("the config file is not UTF-8"),
    })
}

/// Whether `name` is a spooled file's name: 32 lowercase hex digits (a blob or message id).
pub(super) fn is_spool_name(name: &str) -> bool {
    name.len() == 32 && name.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}
