//! `send.file` and `message.file`: a file sent inside its description (at most 48 KiB, given as
//! data or as a path) or as a blob (a path, up to 25 MiB: encrypted into the spool, its upload to
//! our relays kept with the message); and a file read back in slices, from the store or the spool.

use std::path::Path;

use data_encoding::BASE64;
use merpati_control::protocol::{MAX_FILE_SLICE, MessageFileParams, MessageFileResult, SendFileParams};
use merpati_proto::Timestamp;
use merpati_proto::blob::{BlobSecret, Content, Descriptor, MAX_INLINE_LEN, MAX_SOURCES, Source};
use merpati_proto::frame::MessageId;
use merpati_proto::kdf;
use rand_core::Rng;
use zeroize::Zeroizing;

use super::BLOB_LIFETIME;
use super::spool::Spool;
use crate::engine::{Engine, EngineError};
use crate::net;
use crate::store::{SledStore, Store, StoredMessage, Transfer, TransferSide};

/// Queues the file of a `send.file` request.
pub(crate) async fn send_file(
    engine: &mut Engine<SledStore>,
    net: &net::Handle,
    spool: &Spool,
    params: &SendFileParams,
    now: Timestamp,
) -> Result<StoredMessage, EngineError> {
    let to = tokio::task::block_in_place(|| engine.resolve_contact(&params.to))?;
    let data = match (&params.path, params.data.is_empty()) {
        (None, _) => decode(&params.data)?,
        (Some(path), true) => {
            let path = Path::new(path);
            if !path.is_absolute() {
                return Err(invalid("the file's path must be absolute"));
            }
            match tokio::task::block_in_place(|| read_small(path))? {
                Some(data) => data,
                None => return send_blob(engine, net, spool, &to, params, path, now).await,
            }
        }
        (Some(_), false) => return Err(invalid("give the file's data or its path, not both")),
    };
    if data.len() > MAX_INLINE_LEN {
        return Err(invalid(format!(
            "the file is {} bytes: give a file over {MAX_INLINE_LEN} bytes (48 KiB) by its path",
            data.len()
        )));
    }
    let file = Descriptor {
        len: data.len() as u64,
        hash: kdf::hash(kdf::label::BLOB_HASH, &[&data]),
        media_type: params.media_type.clone(),
        name: params.name.clone(),
        caption: params.caption.clone(),
        thumbnail: Vec::new(),
        content: Content::Inline(data),
    };
    tokio::task::block_in_place(|| engine.send_file(&to, &file, None, now))
}

/// Encrypts the file at `path` into the spool and queues its description, with the upload to our
/// relays (up to two, those holding our reservation first) kept with the message.
async fn send_blob(
    engine: &mut Engine<SledStore>,
    net: &net::Handle,
    spool: &Spool,
    to: &str,
    params: &SendFileParams,
    path: &Path,
    now: Timestamp,
) -> Result<StoredMessage, EngineError> {
    // Our relays keep it for the recipient while we are away; this node serves it too, directly.
    let mut relays = net.relays().await;
    relays.sort_by_key(|relay| !relay.reserved);
    let sources: Vec<Source> = relays
        .iter()
        .take(MAX_SOURCES)
        .map(|relay| Source { peer_id: relay.peer.to_bytes(), addrs: vec![relay.addr.to_vec()] })
        .collect();
    let mut rng =
        crate::daemon::os_rng().map_err(|e| EngineError::NotSaved(format!("no randomness: {e}")))?;
    let mut blob_id = [0u8; 16];
    rng.fill_bytes(&mut blob_id);
    let write = BlobSecret::generate(&mut rng);
    let read = BlobSecret::generate(&mut rng);
    let encrypted = tokio::task::block_in_place(|| spool.encrypt(&mut rng, &blob_id, path))
        .map_err(|e| invalid(e.to_string()))?;
    let file = Descriptor {
        len: encrypted.len,
        hash: encrypted.hash,
        media_type: params.media_type.clone(),
        name: params.name.clone(),
        caption: params.caption.clone(),
        thumbnail: Vec::new(),
        content: Content::Blob {
            blob_id,
            key: encrypted.key,
            read_secret: Zeroizing::new(*read.as_bytes()),
            count: encrypted.count,
            expires_at: now.plus(BLOB_LIFETIME),
            from_sender: true,
            sources,
        },
    };
    let queued = file.encode().map_err(|e| invalid(e.to_string())).and_then(|descriptor| {
        let side = TransferSide::Upload {
            write_secret: *write.as_bytes(),
            done_at: Vec::new(),
            refused: Vec::new(),
        };
        let upload = Transfer { descriptor, side };
        tokio::task::block_in_place(|| engine.send_file(to, &file, Some(upload), now))
    });
    if queued.is_err() {
        Spool::remove(&spool.outgoing(&blob_id));
    }
    queued
}

/// Up to [`MAX_FILE_SLICE`] bytes of message `params.id`'s file from `params.offset` on: from the
/// store for a small file, from the spool for a blob.
pub(crate) fn file_slice(
    engine: &Engine<SledStore>,
    spool: &Spool,
    params: &MessageFileParams,
) -> Result<MessageFileResult, EngineError> {
    let id = MessageId(params.id.to_bytes());
    let message = engine.message(&id)?;
    let missing = || EngineError::UnknownMessage(format!("{} (no file of it is on this device)", params.id));
    let store = engine.store();
    let info = store.file_info(&id)?.ok_or_else(missing)?;
    if !info.here {
        return Err(EngineError::UnknownMessage(format!(
            "{} (its file is not on this device yet: it is still being fetched)",
            params.id
        )));
    }
    let offset = params.offset.min(info.len);
    let data = match store.file_data(&id)? {
        Some(data) => {
            let start = usize::try_from(offset).unwrap_or(usize::MAX).min(data.len());
            let end = start.saturating_add(MAX_FILE_SLICE).min(data.len());
            Zeroizing::new(data[start..end].to_vec())
        }
        None => {
            let transfer = store.transfer(&id)?.ok_or_else(missing)?;
            let descriptor =
                Descriptor::decode(&transfer.descriptor).map_err(|e| EngineError::NotSaved(e.to_string()))?;
            let Content::Blob { blob_id, key, count, .. } = &descriptor.content else {
                return Err(missing());
            };
            let path = match message.direction {
                crate::store::Direction::Out => spool.outgoing(blob_id),
                crate::store::Direction::In => spool.incoming(&id.0),
            };
            Spool::read_plain(&path, key, blob_id, *count, info.len, offset, MAX_FILE_SLICE)
                .map_err(|e| EngineError::NotSaved(format!("the file cannot be read from the spool: {e}")))?
        }
    };
    Ok(MessageFileResult {
        name: info.name,
        media_type: info.media_type,
        size: info.len,
        data: BASE64.encode(&data),
    })
}

/// The file at `path` if it is a regular file of at most 48 KiB; `None` if it is a larger one.
/// A device, a pipe or a directory is refused, before anything is read from it.
fn read_small(path: &Path) -> Result<Option<Zeroizing<Vec<u8>>>, EngineError> {
    use std::io::Read as _;
    let cannot = |e: std::io::Error| invalid(format!("cannot read {}: {e}", path.display()));
    // Opening a pipe would wait for a writer: only regular files are opened.
    if !std::fs::metadata(path).map_err(cannot)?.is_file() {
        return Err(invalid(format!("{} is not a regular file", path.display())));
    }
    let file = std::fs::File::open(path).map_err(cannot)?;
    if !file.metadata().map_err(cannot)?.is_file() {
        return Err(invalid(format!("{} is not a regular file", path.display())));
    }
    let mut data = Zeroizing::new(Vec::new());
    file.take(MAX_INLINE_LEN as u64 + 1).read_to_end(&mut data).map_err(cannot)?;
    Ok((data.len() <= MAX_INLINE_LEN).then_some(data))
}

fn decode(data: &str) -> Result<Zeroizing<Vec<u8>>, EngineError> {
    BASE64
        .decode(data.as_bytes())
        .map(Zeroizing::new)
        .map_err(|_| invalid("the file's data is not base64 (RFC 4648, with padding)"))
}

fn invalid(why: impl Into<String>) -> EngineError {
    EngineError::InvalidFile(why.into())
}
