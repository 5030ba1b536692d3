//! The relay's file store: blobs of encrypted 64 KiB chunks that uploaders holding a reservation
//! here put, and that readers showing a token take, until every reader acked, the uploader
//! withdrew the blob, or it expired (protocol §14).
//!
//! Layout: two trees in the mailbox database, so a stored chunk is made durable by the same
//! group-committed flush as a deposit.
//!
//! ```text
//! tree "blobs":        blob_id(16)             → meta
//! tree "blob-chunks":  blob_id(16) index(4 BE) → chunk (CHUNK_LEN bytes)
//! meta:  version 1 ‖ chunks u32 ‖ created_at u64 ‖ expires_at u64 ‖ write_hash 32 ‖
//!        depositor 17 ‖ readers u8 ‖ readers × (token hash 32 ‖ acked u8)
//! ```
//!
//! Quotas are on room reserved, not on chunks stored: a `Create` takes the blob's whole size
//! (chunks × 64 KiB) from the uploader's peer, its network and the relay's budget at once, so a
//! blob created small cannot grow, and a blob created and never filled still costs its creator.
//! The counters are rebuilt from the meta tree on open.
//!
//! Crashes. A blob's meta is written before any chunk, and removed before its chunks; a put
//! checks the meta and inserts its chunk under the one lock a removal also takes. The only leftover
//! a crash can make is chunks without a meta, which the next open sweeps away.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use merpati_proto::Timestamp;
use merpati_proto::blob::{BlobToken, CHUNK_LEN, TokenHash};
use merpati_proto::wire::Refusal;
use merpati_proto::wire::blob::{BlobId, MAX_READERS, bitmap_len};

use super::depositor::{Depositor, Network, PeerKey};
use super::mailboxes::{MailboxError, Mailboxes};
use super::usage::DEPOSITOR_RETRY_MS;

/// How many days a relay keeps a blob by default: as long as an envelope, since the description
/// pointing to it may wait in a mailbox as long.
pub const DEFAULT_BLOB_TTL_DAYS: u64 = 30;
/// The default of [`BlobLimits::budget`], in MiB.
pub const DEFAULT_BLOB_BUDGET_MIB: u64 = 2048;
/// The default of [`BlobLimits::per_user`], in MiB: ten 25 MiB files waiting at once.
pub const DEFAULT_BLOB_USER_MIB: u64 = 256;
/// A network (IPv4 address, IPv6 /64) may hold this many users' worth of blobs: a household or
/// office behind one NAT.
pub const USERS_PER_NETWORK: u64 = 2;
/// The /64s of one IPv6 /48 may hold this many users' worth together.
pub const USERS_PER_IPV6_BLOCK: u64 = 4;
/// A blob not whole this long after its creation is dropped: room reserved and never filled
/// costs its creator nothing, so it is not held for the blob's whole TTL.
pub const UPLOAD_WINDOW_MS: u64 = 24 * 60 * 60 * 1000;

const META_TREE: &[u8] = b"blobs";
const CHUNK_TREE: &[u8] = b"blob-chunks";
const META_VERSION: u8 = 1;
const META_FIXED_LEN: usize = 1 + 4 + 8 + 8 + 32 + Depositor::ENCODED_LEN + 1;
const READER_LEN: usize = 33;
const MIB: u64 = 1024 * 1024;

/// What the relay's file store may hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlobLimits {
    /// Bytes of blobs (reserved, 64 KiB a chunk) in all. Default: 2 GiB.
    pub budget: u64,
    /// Bytes of blobs one uploader (peer) may hold at once; its network may hold
    /// [`USERS_PER_NETWORK`] times as much, an IPv6 /48 [`USERS_PER_IPV6_BLOCK`] times. A file
    /// larger than this is refused as too large.
    /// Default: 256 MiB.
    pub per_user: u64,
    /// How long a blob is kept after its creation, in milliseconds. Default: 30 days.
    pub ttl_ms: u64,
}

impl Default for BlobLimits {
    fn default() -> Self {
        Self {
            budget: DEFAULT_BLOB_BUDGET_MIB * MIB,
            per_user: DEFAULT_BLOB_USER_MIB * MIB,
            ttl_ms: DEFAULT_BLOB_TTL_DAYS * Timestamp::DAY,
        }
    }
}

/// Blobs and bytes reserved now.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlobStats {
    /// Blobs kept.
    pub blobs: u64,
    /// Bytes reserved by them.
    pub bytes: u64,
}

/// The relay's file store. Cloning shares it.
#[derive(Clone, Debug)]
pub struct Blobs {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    mailboxes: Mailboxes,
    meta: sled::Tree,
    chunks: sled::Tree,
    limits: BlobLimits,
    /// Counters; also held across "check the meta, insert a chunk" and "remove a meta".
    state: Mutex<Usage>,
}

#[derive(Debug, Default)]
struct Usage {
    per_peer: HashMap<PeerKey, u64>,
    per_network: HashMap<Network, u64>,
    stats: BlobStats,
}

impl Usage {
    fn add(&mut self, meta: &Meta) {
        let bytes = meta.bytes();
        *self.per_peer.entry(meta.depositor.peer).or_default() += bytes;
        if let Some(network) = meta.depositor.network {
            *self.per_network.entry(network).or_default() += bytes;
            if let Some(block) = network.block() {
                *self.per_network.entry(block).or_default() += bytes;
            }
        }
        self.stats.blobs += 1;
        self.stats.bytes += bytes;
    }

    fn remove(&mut self, meta: &Meta) {
        let bytes = meta.bytes();
        release(&mut self.per_peer, meta.depositor.peer, bytes);
        if let Some(network) = meta.depositor.network {
            release(&mut self.per_network, network, bytes);
            if let Some(block) = network.block() {
                release(&mut self.per_network, block, bytes);
            }
        }
        self.stats.blobs = self.stats.blobs.saturating_sub(1);
        self.stats.bytes = self.stats.bytes.saturating_sub(bytes);
    }
}

fn release<K: std::hash::Hash + Eq>(map: &mut HashMap<K, u64>, key: K, bytes: u64) {
    if let Some(held) = map.get_mut(&key) {
        *held = held.saturating_sub(bytes);
        if *held == 0 {
            map.remove(&key);
        }
    }
}

/// One blob's record.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Meta {
    chunks: u32,
    created_at: u64,
    expires_at: u64,
    write_hash: TokenHash,
    depositor: Depositor,
    readers: Vec<(TokenHash, bool)>,
}

impl Meta {
    fn bytes(&self) -> u64 {
        u64::from(self.chunks) * CHUNK_LEN as u64
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(META_FIXED_LEN + self.readers.len() * READER_LEN);
        out.push(META_VERSION);
        out.extend_from_slice(&self.chunks.to_be_bytes());
        out.extend_from_slice(&self.created_at.to_be_bytes());
        out.extend_from_slice(&self.expires_at.to_be_bytes());
        out.extend_from_slice(&self.write_hash.0);
        out.extend_from_slice(&self.depositor.encode());
        out.push(u8::try_from(self.readers.len()).unwrap_or(u8::MAX));
        for (hash, acked) in &self.readers {
            out.extend_from_slice(&hash.0);
            out.push(u8::from(*acked));
        }
        out
    }

    fn decode(bytes: &[u8]) -> Option<Self> {
        let (fixed, rest) = bytes.split_at_checked(META_FIXED_LEN)?;
        if fixed[0] != META_VERSION {
            return None;
        }
        let chunks = u32::from_be_bytes(fixed[1..5].try_into().ok()?);
        let created_at = u64::from_be_bytes(fixed[5..13].try_into().ok()?);
        let expires_at = u64::from_be_bytes(fixed[13..21].try_into().ok()?);
        let write_hash = TokenHash(fixed[21..53].try_into().ok()?);
        let depositor = Depositor::decode(fixed[53..53 + Depositor::ENCODED_LEN].try_into().ok()?)?;
        let count = usize::from(fixed[META_FIXED_LEN - 1]);
        if count == 0 || count > MAX_READERS || rest.len() != count * READER_LEN {
            return None;
        }
        let readers = rest
            .chunks_exact(READER_LEN)
            .map(|r| Some((TokenHash(r[..32].try_into().ok()?), r[32] != 0)))
            .collect::<Option<Vec<_>>>()?;
        Some(Self { chunks, created_at, expires_at, write_hash, depositor, readers })
    }

    fn reader(&self, token: &BlobToken) -> Option<usize> {
        let hash = token.hash();
        self.readers.iter().position(|(h, _)| *h == hash)
    }
}

/// A blob the uploader asks for.
#[derive(Clone, Debug)]
pub struct NewBlob {
    /// Its id.
    pub blob_id: BlobId,
    /// Its chunk count (already within bounds).
    pub chunks: u32,
    /// The uploader's write-token hash.
    pub write_hash: TokenHash,
    /// The readers' token hashes.
    pub read_hashes: Vec<TokenHash>,
}

fn chunk_key(blob_id: &BlobId, index: u32) -> [u8; 20] {
    let mut key = [0u8; 20];
    key[..16].copy_from_slice(&blob_id.0);
    key[16..].copy_from_slice(&index.to_be_bytes());
    key
}

fn internal(error: sled::Error) -> Refusal {
    tracing::error!(%error, "relay: the blob store failed");
    Refusal::Internal
}

impl Blobs {
    /// Opens the file store inside `mailboxes`' database, rebuilding its counters and sweeping
    /// chunks a crash left without their blob.
    pub fn open(mailboxes: &Mailboxes, limits: BlobLimits) -> Result<Self, MailboxError> {
        let db = mailboxes.db();
        let meta = db.open_tree(META_TREE)?;
        let chunks = db.open_tree(CHUNK_TREE)?;
        let mut usage = Usage::default();
        for item in meta.iter() {
            let (key, value) = item?;
            let meta = Meta::decode(&value).ok_or(MailboxError::Corrupt { what: "a blob's record" })?;
            if key.len() != 16 {
                return Err(MailboxError::Corrupt { what: "a blob's id" });
            }
            usage.add(&meta);
        }
        let mut orphan: Option<[u8; 16]> = None;
        for item in chunks.iter().keys() {
            let key = item?;
            let Some(id) = key.get(..16).and_then(|id| <[u8; 16]>::try_from(id).ok()) else {
                chunks.remove(&key)?;
                continue;
            };
            if orphan == Some(id) || !meta.contains_key(id)? {
                orphan = Some(id);
                chunks.remove(&key)?;
            }
        }
        Ok(Self {
            inner: Arc::new(Inner {
                mailboxes: mailboxes.clone(),
                meta,
                chunks,
                limits,
                state: Mutex::new(usage),
            }),
        })
    }

    /// The limits this store enforces.
    pub fn limits(&self) -> &BlobLimits {
        &self.inner.limits
    }

    /// Blobs and bytes kept now.
    pub fn stats(&self) -> BlobStats {
        self.lock().stats
    }

    fn lock(&self) -> MutexGuard<'_, Usage> {
        self.inner.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Reserves room for `blob`, uploaded by `depositor` at `now`; returns when the relay drops
    /// it. Creating a blob again with the same write hash answers as the first time.
    pub async fn create(&self, blob: NewBlob, depositor: Depositor, now: Timestamp) -> Result<u64, Refusal> {
        // An expired blob not purged yet gives its id and its room back first.
        if self.meta(&blob.blob_id, now)?.is_none() {
            self.remove(&blob.blob_id).map_err(internal)?;
        }
        let expires_at = {
            let mut usage = self.lock();
            if let Some(existing) = self.meta(&blob.blob_id, now)? {
                return if existing.write_hash == blob.write_hash {
                    Ok(existing.expires_at)
                } else {
                    Err(Refusal::Unauthorized)
                };
            }
            let limits = &self.inner.limits;
            let meta = Meta {
                chunks: blob.chunks,
                created_at: now.0,
                expires_at: now.0.saturating_add(limits.ttl_ms),
                write_hash: blob.write_hash,
                depositor,
                readers: blob.read_hashes.into_iter().map(|h| (h, false)).collect(),
            };
            let bytes = meta.bytes();
            if bytes > limits.per_user {
                return Err(Refusal::TooLarge { max: u32::try_from(limits.per_user).unwrap_or(u32::MAX) });
            }
            let peer = usage.per_peer.get(&depositor.peer).copied().unwrap_or(0);
            let held = |network: Option<Network>| {
                network.and_then(|n| usage.per_network.get(&n).copied()).unwrap_or(0)
            };
            let network = held(depositor.network);
            let block = held(depositor.network.and_then(|n| n.block()));
            if peer + bytes > limits.per_user
                || network + bytes > limits.per_user.saturating_mul(USERS_PER_NETWORK)
                || block + bytes > limits.per_user.saturating_mul(USERS_PER_IPV6_BLOCK)
            {
                return Err(Refusal::RateLimited { retry_after_ms: DEPOSITOR_RETRY_MS });
            }
            if usage.stats.bytes + bytes > limits.budget {
                return Err(Refusal::RelayFull);
            }
            self.inner.meta.insert(blob.blob_id.0, meta.encode()).map_err(internal)?;
            usage.add(&meta);
            meta.expires_at
        };
        self.inner.mailboxes.flush().await?;
        Ok(expires_at)
    }

    /// Stores chunk `index` of the blob, if `token` is its write token; answered once durable.
    pub async fn put(
        &self,
        token: &BlobToken,
        blob_id: &BlobId,
        index: u32,
        chunk: &[u8],
        now: Timestamp,
    ) -> Result<(), Refusal> {
        {
            let _usage = self.lock();
            let meta = self.writable(token, blob_id, now)?;
            if index >= meta.chunks {
                return Err(Refusal::Malformed);
            }
            self.inner.chunks.insert(chunk_key(blob_id, index), chunk).map_err(internal)?;
        }
        self.inner.mailboxes.flush().await
    }

    /// Which chunks of the blob are stored, as a bitmap; for its uploader only.
    pub fn status(&self, token: &BlobToken, blob_id: &BlobId, now: Timestamp) -> Result<Vec<u8>, Refusal> {
        let meta = self.writable(token, blob_id, now)?;
        let mut bitmap = vec![0u8; bitmap_len(meta.chunks)];
        for key in self.inner.chunks.scan_prefix(blob_id.0).keys() {
            let key = key.map_err(internal)?;
            let Some(index) = key.get(16..).and_then(|i| <[u8; 4]>::try_from(i).ok()).map(u32::from_be_bytes)
            else {
                continue;
            };
            if index < meta.chunks {
                bitmap[(index / 8) as usize] |= 1 << (index % 8);
            }
        }
        Ok(bitmap)
    }

    /// The stored chunks from `first` on (at most `count`), up to the first one not stored; for
    /// the blob's readers only.
    pub fn get(
        &self,
        token: &BlobToken,
        blob_id: &BlobId,
        first: u32,
        count: u32,
        now: Timestamp,
    ) -> Result<Vec<Vec<u8>>, Refusal> {
        let meta = self.meta(blob_id, now)?.ok_or(Refusal::UnknownBlob)?;
        meta.reader(token).ok_or(Refusal::Unauthorized)?;
        let end = first.saturating_add(count).min(meta.chunks);
        let mut chunks = Vec::new();
        for index in first..end {
            match self.inner.chunks.get(chunk_key(blob_id, index)).map_err(internal)? {
                Some(chunk) if chunk.len() == CHUNK_LEN => chunks.push(chunk.to_vec()),
                _ => break,
            }
        }
        Ok(chunks)
    }

    /// Notes that the reader of `token` holds the file; the blob goes once every reader does.
    pub async fn ack(&self, token: &BlobToken, blob_id: &BlobId, now: Timestamp) -> Result<(), Refusal> {
        let all_acked = {
            let _usage = self.lock();
            let mut meta = self.meta(blob_id, now)?.ok_or(Refusal::UnknownBlob)?;
            let reader = meta.reader(token).ok_or(Refusal::Unauthorized)?;
            if meta.readers[reader].1 {
                return Ok(());
            }
            meta.readers[reader].1 = true;
            let all = meta.readers.iter().all(|(_, acked)| *acked);
            if !all {
                self.inner.meta.insert(blob_id.0, meta.encode()).map_err(internal)?;
            }
            all
        };
        if all_acked {
            self.remove(blob_id).map_err(internal)?;
        }
        self.inner.mailboxes.flush().await
    }

    /// Withdraws the blob, if `token` is its write token.
    pub async fn delete(&self, token: &BlobToken, blob_id: &BlobId, now: Timestamp) -> Result<(), Refusal> {
        self.writable(token, blob_id, now)?;
        self.remove(blob_id).map_err(internal)?;
        self.inner.mailboxes.flush().await
    }

    /// Drops every blob expired at `now`; returns how many.
    /// Blobs still not whole [`UPLOAD_WINDOW_MS`] after their creation go too.
    pub fn purge_expired(&self, now: Timestamp) -> Result<u64, MailboxError> {
        let mut expired = Vec::new();
        for item in self.inner.meta.iter() {
            let (key, value) = item?;
            let Ok(id) = <[u8; 16]>::try_from(&key[..]) else { continue };
            let Some(meta) = Meta::decode(&value) else { continue };
            let unfilled = || {
                now.0 >= meta.created_at.saturating_add(UPLOAD_WINDOW_MS)
                    && (self.inner.chunks.scan_prefix(id).count() as u64) < u64::from(meta.chunks)
            };
            if meta.expires_at <= now.0 || unfilled() {
                expired.push(BlobId(id));
            }
        }
        for blob_id in &expired {
            self.remove(blob_id)?;
        }
        Ok(expired.len() as u64)
    }

    /// The blob's record, if it is kept and not expired at `now`.
    fn meta(&self, blob_id: &BlobId, now: Timestamp) -> Result<Option<Meta>, Refusal> {
        let Some(value) = self.inner.meta.get(blob_id.0).map_err(internal)? else { return Ok(None) };
        let meta = Meta::decode(&value).ok_or_else(|| {
            tracing::error!("relay: a blob's record is damaged");
            Refusal::Internal
        })?;
        Ok((meta.expires_at > now.0).then_some(meta))
    }

    fn writable(&self, token: &BlobToken, blob_id: &BlobId, now: Timestamp) -> Result<Meta, Refusal> {
        let meta = self.meta(blob_id, now)?.ok_or(Refusal::UnknownBlob)?;
        if token.hash() != meta.write_hash {
            return Err(Refusal::Unauthorized);
        }
        Ok(meta)
    }

    /// Removes the blob's record, then its chunks.
    fn remove(&self, blob_id: &BlobId) -> Result<(), sled::Error> {
        {
            let mut usage = self.lock();
            let Some(value) = self.inner.meta.remove(blob_id.0)? else { return Ok(()) };
            if let Some(meta) = Meta::decode(&value) {
                usage.remove(&meta);
            }
        }
        for key in self.inner.chunks.scan_prefix(blob_id.0).keys() {
            self.inner.chunks.remove(key?)?;
        }
        self.inner.mailboxes.request_flush();
        Ok(())
    }
}

#[cfg(test)]
mod tests;
