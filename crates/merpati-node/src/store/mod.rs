//! Durable storage for the node: its profile, contacts, sessions, messages and outbox, behind the
//! [`Store`] trait in domain terms.
//!
//! Two implementations share one layout and one set of rules (the private `engine` module), so
//! they cannot drift apart: [`SledStore`], the daemon's database, and [`MemoryStore`], for fast
//! tests. The conformance suite in `tests/store.rs` runs the same tests against both.
//!
//! Reads are plain calls. Every write is a batch of [`Change`]s given to [`Store::apply`], which
//! applies all of them or none, and returns only once they are on disk: the daemon acknowledges a
//! message to a peer or relay, or lets an envelope leave, only after `apply` has returned
//! (ARCHITECTURE.md: "No message leaves before its session state is stored").
//!
//! Session records and the profile hold key material. sled does not erase the bytes of replaced
//! or deleted values, so the sled store keeps those records sealed under a storage key from the
//! [`keyring`], and [`SledStore::rotate_storage_key`] re-seals them under a new key and destroys
//! the old one (crypto-shredding; the limits are spelled out in [`keyring`]). Message texts are
//! sealed apart under per-conversation content keys, themselves sealed under the storage key, so
//! a deleted message can be made unreadable the same way ([`texts`]).
//!
//! Every stored value starts with a format byte ([`FORMAT_VERSION`]); everything read back is
//! length-checked and decoded without panicking, and a value that does not decode is reported as
//! [`StoreError::Corrupt`].

mod codec;
mod engine;
pub mod keyring;
mod memory;
mod overlay;
mod sled_store;
mod texts;

use std::fmt;
use std::io;
use std::path::PathBuf;

use merpati_proto::Timestamp;
use merpati_proto::frame::MessageId;
use merpati_proto::identity::{Bundle, DeviceCert, IdentityKey, IdentityPublic, PrekeyRing, SignedPrekey};
use merpati_proto::keys::X25519Secret;
use merpati_proto::mailbox::MailboxId;
use merpati_proto::session::{SessionId, SessionState};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use thiserror::Error;
use zeroize::Zeroizing;

pub use keyring::{Keyring, KeyringError};
pub use memory::MemoryStore;
pub use sled_store::{SCHEMA_VERSION, SledStore};

/// The format byte every stored value starts with. Bumped when a stored type changes shape; a
/// reader refuses values of a format it does not know.
pub const FORMAT_VERSION: u8 = 1;
/// The largest value the store writes or reads back (1 MiB and 4 KiB): the longest text (1 MiB,
/// [`merpati_proto::fragment::MAX_REASSEMBLED_LEN`]) sealed, with room for its header. A session
/// state with every key retention cap reached is a few tens of KiB and an envelope at most
/// 64 KiB, so this only stops runaway values and bounds what a corrupt database can make us
/// allocate.
pub const MAX_VALUE_LEN: usize = (1 << 20) + 4096;
/// The longest contact name the store accepts, in bytes. The control API allows 64 characters,
/// which is at most 256 bytes of UTF-8.
pub const MAX_NAME_LEN: usize = 256;

/// Why a store operation failed.
///
/// An error from [`Store::apply`] means the batch is not known to be durable: when the
/// transaction was refused (a conflict, an invalid value) nothing was applied; when only the
/// flush to disk failed, the batch may be visible now and lost after a crash. Either way the
/// caller must not acknowledge or send what the batch recorded.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum StoreError {
    /// [`Change::AddContact`] named a contact that already exists; nothing in the batch was
    /// applied.
    #[error("contact {name:?} already exists")]
    Conflict {
        /// The contact name.
        name: String,
    },
    /// A contact name is empty or longer than [`MAX_NAME_LEN`] bytes.
    #[error("contact name must be 1 to {max} bytes, got {len}")]
    InvalidName {
        /// The name's length in bytes.
        len: usize,
        /// The longest name accepted.
        max: usize,
    },
    /// A value is larger than [`MAX_VALUE_LEN`] once encoded.
    #[error("{what} is too large to store ({len} bytes, at most {max})")]
    TooLarge {
        /// What was being stored.
        what: &'static str,
        /// Its encoded length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A value could not be encoded (a bug: every stored type encodes).
    #[error("could not encode {what}")]
    Encode {
        /// What was being stored.
        what: &'static str,
    },
    /// Stored bytes do not decode or did not authenticate: the database was damaged or edited.
    #[error("stored {what} is corrupt")]
    Corrupt {
        /// What was being read.
        what: &'static str,
    },
    /// A sealed record names a storage key that is not in the key file: the key was destroyed by
    /// a rotation (the record is an old copy), or the key file belongs to another database.
    #[error("stored {what} is sealed with storage key {key_id:08x}, which is not in the key file")]
    KeyUnavailable {
        /// What was being read.
        what: &'static str,
        /// The key id the record names.
        key_id: u32,
    },
    /// The directory holds a database that is not Merpati's.
    #[error("not a Merpati database: {reason}")]
    Foreign {
        /// What gave it away.
        reason: &'static str,
    },
    /// The database was written by a newer version of Merpati.
    #[error("database format {found} is newer than this merpatid supports ({supported}); upgrade")]
    TooNew {
        /// The format found on disk.
        found: u16,
        /// The newest format this build reads.
        supported: u16,
    },
    /// The storage key file could not be used.
    #[error(transparent)]
    Keyring(#[from] KeyringError),
    /// sled reported an error (I/O, or damage to its own files).
    #[error("database error: {0}")]
    Db(#[from] sled::Error),
    /// An earlier write could not be made durable, so nothing more is written until the
    /// daemon restarts from what is on disk.
    #[error("an earlier write could not be saved to disk ({reason}); restart the daemon")]
    Failed {
        /// The first failure.
        reason: String,
    },
    /// Creating or syncing the database's files failed.
    #[error("syncing {}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
}

/// The node's libp2p key pair in its protobuf encoding. Zeroized on drop and printed as
/// `NodeKey(..)`.
#[derive(Clone, PartialEq, Eq)]
pub struct NodeKey(Zeroizing<Vec<u8>>);

impl NodeKey {
    /// Wraps the encoded key pair.
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// The encoded key pair.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for NodeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NodeKey(..)")
    }
}

impl Serialize for NodeKey {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        serde_bytes::Bytes::new(&self.0).serialize(s)
    }
}

impl<'de> Deserialize<'de> for NodeKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Self::new(serde_bytes::ByteBuf::deserialize(d)?.into_vec()))
    }
}

/// The device's own long-lived secrets. Stored sealed, as a whole.
#[derive(Debug, Serialize, Deserialize)]
pub struct Profile {
    /// The user's identity key: signs the device certificate, prekeys and bundles.
    pub identity: IdentityKey,
    /// The device's static X25519 key (the initiator key of first contacts).
    pub device_static: X25519Secret,
    /// The identity's certificate for `device_static`, as published in bundles.
    pub cert: DeviceCert,
    /// The libp2p key pair (the node's transport identity).
    pub node_key: NodeKey,
    /// The signed prekeys and their private keys.
    pub prekeys: PrekeyRing,
    /// When the profile was created.
    pub created_at: Timestamp,
}

/// Someone we can write to, under the name the user gave them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contact {
    /// The user's name for the contact: unique, 1 to [`MAX_NAME_LEN`] bytes.
    pub name: String,
    /// Their identity key.
    pub identity: IdentityPublic,
    /// The bundle from their invite (device certificate and prekey); none for someone who
    /// reached us first with our invite (we talk to them over the session they started).
    pub bundle: Option<Bundle>,
    /// The first-contact mailbox from their invite, likewise.
    pub inbox: Option<MailboxId>,
    /// Their libp2p peer id (opaque bytes here).
    #[serde(with = "serde_bytes")]
    pub peer_id: Vec<u8>,
    /// Their last known listen addresses (multiaddrs, opaque bytes here).
    pub addrs: Vec<Vec<u8>>,
    /// Relays they collect from (multiaddrs, opaque bytes here).
    pub relays: Vec<Vec<u8>>,
    /// The session in use with them, if one started.
    pub session: Option<SessionId>,
    /// When the contact was added.
    pub added_at: Timestamp,
    /// The last-resort prekey from their invite, for a first contact written after the bundle's
    /// prekey expired; none for contacts from older invites or who reached us first.
    pub last_resort: Option<SignedPrekey>,
    /// When an envelope of theirs last opened here, if ever.
    pub last_heard: Option<Timestamp>,
    /// When their node was last restored from a backup (their clock, from the session they
    /// started after it), if ever: shown with the contact, and a notice of an older restore is
    /// ignored.
    pub restored_at: Option<Timestamp>,
}

/// A contact as stored before `last_resort` and `last_heard` existed: records are postcard,
/// which has no optional trailing fields, so such a record is read as this and converted.
#[derive(Deserialize)]
pub(crate) struct ContactV1 {
    name: String,
    identity: IdentityPublic,
    bundle: Option<Bundle>,
    inbox: Option<MailboxId>,
    #[serde(with = "serde_bytes")]
    peer_id: Vec<u8>,
    addrs: Vec<Vec<u8>>,
    relays: Vec<Vec<u8>>,
    session: Option<SessionId>,
    added_at: Timestamp,
}

impl From<ContactV1> for Contact {
    fn from(old: ContactV1) -> Self {
        let ContactV1 { name, identity, bundle, inbox, peer_id, addrs, relays, session, added_at } = old;
        Contact {
            name,
            identity,
            bundle,
            inbox,
            peer_id,
            addrs,
            relays,
            session,
            added_at,
            last_resort: None,
            last_heard: None,
            restored_at: None,
        }
    }
}

/// A contact as stored before `restored_at` existed (see [`ContactV1`]).
#[derive(Deserialize)]
pub(crate) struct ContactV2 {
    name: String,
    identity: IdentityPublic,
    bundle: Option<Bundle>,
    inbox: Option<MailboxId>,
    #[serde(with = "serde_bytes")]
    peer_id: Vec<u8>,
    addrs: Vec<Vec<u8>>,
    relays: Vec<Vec<u8>>,
    session: Option<SessionId>,
    added_at: Timestamp,
    last_resort: Option<SignedPrekey>,
    last_heard: Option<Timestamp>,
}

impl From<ContactV2> for Contact {
    fn from(old: ContactV2) -> Self {
        let ContactV2 {
            name,
            identity,
            bundle,
            inbox,
            peer_id,
            addrs,
            relays,
            session,
            added_at,
            last_resort,
            last_heard,
        } = old;
        Contact {
            name,
            identity,
            bundle,
            inbox,
            peer_id,
            addrs,
            relays,
            session,
            added_at,
            last_resort,
            last_heard,
            restored_at: None,
        }
    }
}

/// A first contact from someone not in the contacts, held until the user accepts, rejects or
/// blocks it. Nothing is answered end to end and nothing is queued for the sender meanwhile: the
/// envelopes are kept as they came (ciphertext) and opened again on acceptance.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContactRequest {
    /// The request's id (the record's key): 64 bits of the sender's fingerprint, so every
    /// envelope of one sender joins one request.
    pub id: RequestId,
    /// The sender's identity key, authenticated by the first-contact handshake.
    pub identity: IdentityPublic,
    /// The name the sender suggests for themselves, if any: their word only.
    pub suggested_name: Option<String>,
    /// The start of their first text, if any, so the user can judge who wrote.
    pub preview: Option<String>,
    /// When the first envelope arrived.
    pub first_at: Timestamp,
    /// When the last envelope arrived.
    pub last_at: Timestamp,
    /// When the request is deleted: 30 days after it came, or sooner if the prekey its sender
    /// wrote to is deleted sooner (after that nothing in it could be opened).
    pub expires_at: Timestamp,
    /// The envelopes, in arrival order, each once.
    pub envelopes: Vec<serde_bytes::ByteBuf>,
    /// Envelopes not kept because the request already held as many as it may. Counted apart
    /// from the record ([`Change::CountRefusedEnvelope`]), so a full request is not rewritten
    /// for every envelope refused; filled in by the reads.
    #[serde(skip)]
    pub dropped: u32,
}

impl fmt::Debug for ContactRequest {
    // The preview is message text: logs get its length only.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ContactRequest")
            .field("id", &self.id)
            .field("suggested_name", &self.suggested_name)
            .field("preview_len", &self.preview.as_ref().map(String::len))
            .field("first_at", &self.first_at)
            .field("last_at", &self.last_at)
            .field("expires_at", &self.expires_at)
            .field("envelopes", &self.envelopes.len())
            .field("dropped", &self.dropped)
            .finish()
    }
}

/// A contact request's id: 64 bits of the sender's fingerprint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RequestId(pub [u8; 8]);

impl RequestId {
    /// The id of requests from `identity`: the first 16 hex digits of its fingerprint.
    pub fn of(identity: &IdentityPublic) -> Self {
        let fingerprint = merpati_proto::identity::fingerprint(identity).replace(' ', "");
        // A fingerprint is 32 hex digits.
        fingerprint.get(..16).and_then(|hex| hex.parse().ok()).unwrap_or(Self([0; 8]))
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl std::str::FromStr for RequestId {
    type Err = ();

    fn from_str(text: &str) -> Result<Self, ()> {
        let text = text.trim();
        if text.len() != 16 || !text.is_ascii() {
            return Err(());
        }
        let mut id = [0u8; 8];
        for (i, byte) in id.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).map_err(|_| ())?;
        }
        Ok(Self(id))
    }
}

/// Someone whose envelopes are dropped unread and unanswered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Blocked {
    /// Their identity key (the record's key).
    pub identity: IdentityPublic,
    /// What the user knew them as: the contact's name, or the request's suggested name.
    pub label: String,
    /// When they were blocked.
    pub at: Timestamp,
    /// The sessions they had with us, deleted when they were blocked: their mailbox ids stay
    /// filed under these ids, so what they send in them is recognised and dropped unanswered
    /// rather than refused (which would tell them something changed).
    pub sessions: Vec<SessionId>,
}

/// One NDR1 session's persisted state and whose it is. Stored sealed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionRecord {
    /// The session id (the record's key).
    pub id: SessionId,
    /// The contact the session is with.
    pub contact: String,
    /// The state to restore the session from.
    pub state: SessionState,
}

/// Which way a message went.
///
/// Stored by variant index: variants may be appended, never reordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Direction {
    /// Received from the contact.
    In,
    /// Written by the user.
    Out,
}

/// Where a message is on its way. Statuses only move forward (see [`Status::advances_to`]).
///
/// Stored by variant index: variants may be appended, never reordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Status {
    /// Durably queued, not yet accepted by the peer's node or a relay; `reason` may say why.
    Queued,
    /// The peer's node acknowledged storing it.
    Sent,
    /// The peer's device confirmed receipt end to end.
    Delivered,
    /// The peer read it.
    Read,
    /// Given up on; the message's `reason` says why.
    Failed,
    /// The peer's node could not be reached, and `accepted` of the peer's `total` relays stored
    /// the envelope for it to fetch. Ranks with [`Status::Sent`]; more relays accepting later is
    /// a move forward.
    Stored {
        /// How many relays accepted the envelope (at least 1).
        accepted: u8,
        /// How many relays it was offered to.
        total: u8,
    },
}

impl Status {
    /// Whether a message in this status may move to `next`.
    ///
    /// Queued < Sent = Stored < Delivered < Read, and only forward: receipts and
    /// acknowledgements arrive late, duplicated and out of order, and a late "sent" must not undo
    /// a "read". Stored moves to Sent (the peer's node itself took it after all) and to Stored
    /// with more relays accepting out of the same total; Sent never becomes Stored, which would
    /// read as a step back. Failed is reachable only before the message was delivered: a
    /// message the peer confirmed did not fail. It is terminal except for the peer's own word:
    /// a delivery or read receipt (authenticated end to end) proves delivery, so it overrides a
    /// failure, such as an expiry reported while the receipt was still on its way. Moving to the
    /// same status is not a move.
    pub fn advances_to(self, next: Status) -> bool {
        match (self, next) {
            (Status::Failed, Status::Delivered | Status::Read) => true,
            (Status::Failed, _) => false,
            (_, Status::Failed) => matches!(self, Status::Queued | Status::Sent | Status::Stored { .. }),
            (Status::Stored { accepted, total }, Status::Stored { accepted: more, total: of }) => {
                of == total && more > accepted
            }
            (Status::Stored { .. }, Status::Sent) => true,
            _ => next.rank() > self.rank(),
        }
    }

    /// The position on the forward path (Failed is handled before it is consulted).
    pub(crate) fn rank(self) -> u8 {
        match self {
            Status::Queued => 0,
            Status::Sent | Status::Stored { .. } => 1,
            Status::Delivered => 2,
            Status::Read => 3,
            Status::Failed => 4,
        }
    }
}

/// One piece of a long incoming text (a fragment), kept until the last piece of its group
/// arrives and the text is stored whole. Sealed under the storage key: it holds message text.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredFragment {
    /// The contact it came from (the key's prefix, with `group` and `index`).
    pub contact: String,
    /// The group: the text's message id once whole.
    pub group: [u8; 16],
    /// Its position, 0-based.
    pub index: u16,
    /// How many pieces the group has.
    pub count: u16,
    /// The whole text's length in bytes.
    pub total_len: u32,
    /// The frame's sequence number in its session.
    pub seq: u64,
    /// The sender's clock when it sealed this piece.
    pub sent_at: Timestamp,
    /// When this piece arrived: a group whose first piece is too old is given up.
    pub received_at: Timestamp,
    /// The bytes.
    #[serde(with = "serde_bytes")]
    pub chunk: Vec<u8>,
}

impl fmt::Debug for StoredFragment {
    // The chunk is message plaintext: its length only.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredFragment")
            .field("contact", &self.contact)
            .field("group", &MessageId(self.group))
            .field("index", &self.index)
            .field("count", &self.count)
            .field("total_len", &self.total_len)
            .field("chunk_len", &self.chunk.len())
            .finish_non_exhaustive()
    }
}

/// The file a message carries: what is shown with the message. Sealed under the storage key, as
/// a name and a type are someone's words.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileInfo {
    /// Its name, safe as one file name in a directory.
    pub name: String,
    /// Its media type, as the sender gave it.
    pub media_type: String,
    /// Its length in bytes.
    pub len: u64,
    /// `H("NDR1/blob-hash", file)`, checked on arrival.
    pub hash: [u8; 32],
    /// Whether its bytes are here ([`Store::file_data`]); not for a file this version cannot
    /// fetch (a blob at relays).
    pub here: bool,
}

impl fmt::Debug for FileInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileInfo")
            .field("name_len", &self.name.len())
            .field("media_type", &self.media_type)
            .field("len", &self.len)
            .field("here", &self.here)
            .finish_non_exhaustive()
    }
}

/// A file that travels as a blob (protocol §14): what this node needs to upload or download it,
/// kept with its message (sealed: the description holds the file's key and a read secret).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transfer {
    /// The file's description as sent or received (`blob::Descriptor`'s encoding).
    #[serde(with = "serde_bytes")]
    pub descriptor: Vec<u8>,
    /// Our side of it.
    pub side: TransferSide,
}

/// Whether a [`Transfer`] is ours to upload or to download, and how far it has come.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TransferSide {
    /// We sent the file: its chunks are in our spool and go to the relays of the description.
    Upload {
        /// The blob's write secret.
        #[serde(with = "serde_bytes")]
        write_secret: [u8; 32],
        /// The relays (peer ids, binary) that hold every chunk.
        done_at: Vec<serde_bytes::ByteBuf>,
        /// Relays (peer ids, binary) that refused it for good, with why, as a sentence (too large
        /// for them, …): it then goes only directly, or through the other relay.
        refused: Vec<(serde_bytes::ByteBuf, String)>,
    },
    /// We received the description: the chunks come from its sources into our spool.
    Download {
        /// Why it was given up, if it was (its sources expired).
        failed: Option<String>,
    },
}

impl fmt::Debug for TransferSide {
    // The write secret is never printed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Upload { done_at, refused, .. } => {
                write!(f, "Upload(done at {}, refused by {})", done_at.len(), refused.len())
            }
            Self::Download { failed } => write!(f, "Download(failed: {failed:?})"),
        }
    }
}

impl Drop for Transfer {
    fn drop(&mut self) {
        use zeroize::Zeroize as _;
        self.descriptor.zeroize();
        if let TransferSide::Upload { write_secret, .. } = &mut self.side {
            write_secret.zeroize();
        }
    }
}

impl fmt::Debug for Transfer {
    // The description holds the file's key: never printed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Transfer").field("side", &self.side).finish_non_exhaustive()
    }
}

/// What an outbox entry that carries one piece of a long text belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartOf {
    /// The whole text's message id (the fragment group).
    pub message: MessageId,
}

/// A group this device is a member of, or was (protocol §15): its membership log, as the
/// entries it took, in the order it took them (parents first), and its own sending count.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupRecord {
    /// The group's id (the record's key).
    pub id: [u8; 16],
    /// The encoded log entries, genesis first.
    pub entries: Vec<serde_bytes::ByteBuf>,
    /// The `sender_seq` of our next message to the group.
    pub next_seq: u64,
    /// When this device learnt of the group.
    pub joined_at: Timestamp,
    /// The group's name, as the log last gave it.
    pub name: String,
    /// The members' names, by identity key, as the log last gave them (the owner has none).
    pub names: Vec<([u8; 32], String)>,
    /// The owner's identity key.
    pub owner: [u8; 32],
}

impl GroupRecord {
    /// A group first heard of at `now`, before any entry is taken.
    pub fn new(id: [u8; 16], now: Timestamp) -> Self {
        GroupRecord {
            id,
            entries: Vec::new(),
            next_seq: 1,
            joined_at: now,
            name: String::new(),
            names: Vec::new(),
            owner: [0; 32],
        }
    }
}

impl fmt::Debug for GroupRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GroupRecord")
            .field("id", &&self.id[..4])
            .field("entries", &self.entries.len())
            .field("next_seq", &self.next_seq)
            .finish_non_exhaustive()
    }
}

/// What a group message is beyond its [`StoredMessage`] (which is filed under the group's
/// conversation): who sent it with which count and, for ours, the copy each member was sent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupMessageInfo {
    /// The group-wide message id (the record's key, and the stored message's id).
    pub id: MessageId,
    /// The group.
    pub group: [u8; 16],
    /// The sender's identity key.
    pub sender: [u8; 32],
    /// The sender's count of its messages to the group.
    pub sender_seq: u64,
    /// Ours only: one copy per member written to, each with its own delivery state.
    pub copies: Vec<GroupCopy>,
}

/// One member's copy of a group message of ours.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupCopy {
    /// The member's identity key.
    pub member: [u8; 32],
    /// The contact whose session carries it.
    pub contact: String,
    /// The copy's frame id: what the outbox and the member's receipts name.
    pub copy: MessageId,
    /// Where the copy is on its way.
    pub status: Status,
    /// Why it failed, when it did.
    pub reason: Option<String>,
}

/// A message of a conversation, incoming or outgoing.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredMessage {
    /// The sender's message id; the store keeps at most one message per id.
    pub id: MessageId,
    /// The contact the conversation is with.
    pub contact: String,
    /// Which way it went.
    pub direction: Direction,
    /// When it was sent (the sender's clock for incoming messages).
    pub time: Timestamp,
    /// The text.
    pub text: String,
    /// The sender's session sequence number, once known (gap detection).
    pub seq: Option<u64>,
    /// Where it is on its way.
    pub status: Status,
    /// Why it failed, when it did.
    pub reason: Option<String>,
    /// Its place in the conversations, assigned by the store when the message is first stored
    /// (the value given to [`Change::PutMessage`] is ignored). Increases across all contacts.
    pub order: u64,
}

impl StoredMessage {
    /// A message just received from `contact`: delivered (to us), its order given when stored.
    pub fn received(id: MessageId, contact: &str, time: Timestamp, text: String, seq: u64) -> StoredMessage {
        StoredMessage {
            id,
            contact: contact.to_owned(),
            direction: Direction::In,
            time,
            text,
            seq: Some(seq),
            status: Status::Delivered,
            reason: None,
            order: 0,
        }
    }
}

impl fmt::Debug for StoredMessage {
    // The text is the user's conversation: logs get its length only.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredMessage")
            .field("id", &self.id)
            .field("contact", &self.contact)
            .field("direction", &self.direction)
            .field("time", &self.time)
            .field("text_len", &self.text.len())
            .field("seq", &self.seq)
            .field("status", &self.status)
            .field("reason", &self.reason)
            .field("order", &self.order)
            .finish()
    }
}

/// A sealed envelope waiting to be delivered, retried until it is acknowledged or expires.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxEntry {
    /// The message id inside (the entry's key).
    pub id: MessageId,
    /// The contact it is for.
    pub contact: String,
    /// The encoded envelope.
    #[serde(with = "serde_bytes")]
    pub envelope: Vec<u8>,
    /// The mailbox it is addressed to.
    pub mailbox: MailboxId,
    /// When it was queued.
    pub created_at: Timestamp,
    /// Its sequence number in its session: with `created_at`, the order in which a contact's
    /// envelopes are delivered.
    pub seq: u64,
    /// Delivery attempts so far.
    pub attempts: u32,
    /// When to try next; [`Store::outbox`] is ordered by it.
    pub next_attempt_at: Timestamp,
    /// When to give up.
    pub expires_at: Timestamp,
}

impl fmt::Debug for OutboxEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OutboxEntry")
            .field("id", &self.id)
            .field("contact", &self.contact)
            .field("envelope_len", &self.envelope.len())
            .field("mailbox", &self.mailbox)
            .field("created_at", &self.created_at)
            .field("attempts", &self.attempts)
            .field("next_attempt_at", &self.next_attempt_at)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// A contact's head: its outbox entry to deliver next (the oldest, by `created_at` then `seq`),
/// as the outbox's indexes know it, without the entry itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxHead {
    /// The entry's id.
    pub id: MessageId,
    /// The contact.
    pub contact: String,
    /// When the entry is to be tried next.
    pub next_attempt_at: Timestamp,
}

/// One change in a batch given to [`Store::apply`].
#[derive(Debug)]
pub enum Change {
    /// Stores the profile, replacing any.
    PutProfile(Profile),
    /// Stores a contact under its name, replacing any with that name.
    PutContact(Contact),
    /// Stores a new contact; fails the whole batch with [`StoreError::Conflict`] if the name is
    /// taken (checked inside the transaction, so two racing adds cannot both succeed).
    AddContact(Contact),
    /// Stores a session record under its id, replacing any.
    PutSession(SessionRecord),
    /// Deletes a session record (a replaced or broken session). Its index entries are left to
    /// [`Change::UnindexMailbox`] and [`Change::UnindexOpenDigest`]; lookups through a stale
    /// entry find no session. Once the storage key is rotated, copies of the record that sled
    /// left behind can no longer be read.
    RemoveSession(SessionId),
    /// Files a mailbox id under a session: where incoming envelopes for it are found.
    IndexMailbox {
        /// The mailbox id.
        mailbox: MailboxId,
        /// The session it belongs to.
        session: SessionId,
    },
    /// Forgets a mailbox id (it rotated out of use).
    UnindexMailbox(MailboxId),
    /// Notes the last day of a mailbox announcement a session made ([`Store::announced`]): a
    /// peer that knows no newer one writes under that day's id however long ago it was.
    NoteAnnouncement {
        /// The session.
        session: SessionId,
        /// The announcement's last day.
        last_day: u64,
    },
    /// Forgets a note of [`Change::NoteAnnouncement`].
    ForgetAnnouncement {
        /// The session.
        session: SessionId,
        /// The day noted.
        last_day: u64,
    },
    /// Files the digest of an epoch open under a session, so a repeated first contact or epoch
    /// open is recognised without any Diffie-Hellman.
    IndexOpenDigest {
        /// The digest.
        digest: [u8; 32],
        /// The session it belongs to.
        session: SessionId,
    },
    /// Forgets an open digest.
    UnindexOpenDigest([u8; 32]),
    /// Stores a message, once: if a message with this id is stored already, nothing changes
    /// (duplicates of an incoming message are stored exactly once). A new message gets the next
    /// conversation order.
    PutMessage(StoredMessage),
    /// Moves a message to `status` with `reason`, if that is a move forward
    /// ([`Status::advances_to`]); otherwise, or for an unknown message id (a receipt for a
    /// message this device does not have), nothing changes.
    SetStatus {
        /// The message.
        id: MessageId,
        /// Its new status.
        status: Status,
        /// Why, for a failure.
        reason: Option<String>,
    },
    /// Stores an outbox entry under its message id, replacing any (e.g. after an attempt, with a
    /// later `next_attempt_at`), and files it in the outbox's indexes.
    PutOutbox(OutboxEntry),
    /// Deletes an outbox entry, if there is one.
    RemoveOutbox(MessageId),
    /// Notes that a message left for the contact's relays should be confirmed by `until`
    /// ([`Store::awaiting`]).
    AwaitReceipt {
        /// The message.
        id: MessageId,
        /// By when.
        until: Timestamp,
    },
    /// Removes the note [`Change::AwaitReceipt`] made.
    StopAwaiting {
        /// The message.
        id: MessageId,
        /// The deadline it was noted with.
        until: Timestamp,
    },
    /// Replaces the user's own relays (binary multiaddrs, checked by the engine), the list
    /// [`Store::relays`] returns.
    SetRelays(Vec<Vec<u8>>),
    /// Sets why a message that is still [`Status::Queued`] has not left yet (the last failed
    /// attempt's cause), so the user sees it; `None` clears it. A message past Queued, or an
    /// unknown id, is left alone: the reason would be stale.
    SetReason {
        /// The message.
        id: MessageId,
        /// The reason.
        reason: Option<String>,
    },
    /// Stores a contact request under its id, replacing any.
    PutRequest(ContactRequest),
    /// Deletes a contact request, if there is one, with its count of dropped envelopes.
    RemoveRequest(RequestId),
    /// Counts one envelope a full request did not keep.
    CountRefusedEnvelope(RequestId),
    /// Notes the digest of a first-contact open whose request was rejected, dropped or expired,
    /// until `until`: later envelopes of that conversation are dropped instead of starting a
    /// request that lacks the sender's first words (where their node is, their name).
    Dismiss {
        /// The open's digest.
        digest: [u8; 32],
        /// Until when (the longest the open's prekey can be kept).
        until: Timestamp,
    },
    /// Forgets the dismissals that run out first until at most `keep` are left: a stranger
    /// can make one per identity, so their number is bounded.
    TrimDismissed {
        /// How many to keep at most.
        keep: usize,
    },
    /// Forgets dismissals noted until `now` or earlier, at most `limit` of them.
    PurgeDismissed {
        /// The time.
        now: Timestamp,
        /// The most to forget in this batch.
        limit: usize,
    },
    /// Adds `n` to the count of contact requests dropped because the queue was full
    /// ([`Store::requests_dropped`]).
    NoteRequestsDropped(u64),
    /// Blocks an identity, replacing any entry for it.
    Block(Blocked),
    /// Unblocks an identity, if it is blocked.
    Unblock(IdentityPublic),
    /// Deletes a contact with its conversation and its outbox entries. Its sessions are left to
    /// [`Change::RemoveSession`] (they are sealed; the engine knows which they are).
    RemoveContact(String),
    /// Files a contact, its conversation and its outbox entries under another name; fails the
    /// whole batch with [`StoreError::Conflict`] if `to` is taken. Session records name their
    /// contact too: the engine rewrites them in the same batch.
    RenameContact {
        /// The current name.
        from: String,
        /// The new name.
        to: String,
    },
    /// Deletes a message (either direction) and its text, and re-keys its conversation so the
    /// text can be made unreadable in the database files (see `texts`). Its outbox entry, if it
    /// is still on its way, is left alone: deleting is local. Nothing if there is no such message.
    DeleteMessage(MessageId),
    /// Deletes every message of a conversation and their texts, and its content key; the contact,
    /// its sessions and its outbox stay.
    ClearConversation(String),
    /// Records that at the relay with peer id `relay` (binary) every closed mailbox of ours of a
    /// day up to `through` has been fetched to the end, so a restart need not sweep them again.
    NoteSwept {
        /// The relay's peer id.
        relay: Vec<u8>,
        /// The last day swept.
        through: u64,
    },
    /// Keeps one piece of a long incoming text, replacing any with its contact, group and index.
    PutFragment(StoredFragment),
    /// Deletes every piece of `group` from `contact` (the text is whole, or given up). They held
    /// message text: like any deletion of sealed text, it marks the storage key for rotation.
    RemoveFragments {
        /// The contact.
        contact: String,
        /// The group.
        group: [u8; 16],
    },
    /// Keeps the file message `id` carries: what it is and, if here, its bytes. Both go with the
    /// message when it is deleted.
    PutFile {
        /// The message.
        id: MessageId,
        /// What the file is.
        info: FileInfo,
        /// Its bytes, when they came with the message.
        data: Option<Zeroizing<Vec<u8>>>,
    },
    /// Keeps (or updates) the transfer of the file message `id` carries; it goes with the
    /// message.
    PutTransfer {
        /// The message.
        id: MessageId,
        /// The transfer.
        transfer: Transfer,
    },
    /// Notes that the outbox entry `id` carries a piece of a long text; the note goes with the
    /// entry when it leaves the outbox.
    NotePartOf {
        /// The outbox entry (the fragment frame's message id).
        id: MessageId,
        /// The text it belongs to.
        part_of: PartOf,
    },
    /// Stores a group, replacing any record with its id.
    PutGroup(GroupRecord),
    /// Stores what a group message is, once (like [`Change::PutMessage`]), and files its copies'
    /// ids under it.
    PutGroupMessage(GroupMessageInfo),
    /// Moves one copy of a group message of ours to `status`, if that is a move forward; an id
    /// that is no copy changes nothing.
    SetCopyStatus {
        /// The copy's frame id.
        copy: MessageId,
        /// Its new status.
        status: Status,
        /// Why, for a failure.
        reason: Option<String>,
    },
}

/// The node's storage, in domain terms. Synchronous: the daemon calls it from a blocking-friendly
/// context (a blocking task or a dedicated thread), never directly on an async executor thread,
/// because [`Store::apply`] waits for the disk.
pub trait Store: Send + Sync {
    /// The profile, once created.
    fn profile(&self) -> Result<Option<Profile>, StoreError>;
    /// Every contact, ordered by name (bytewise).
    fn contacts(&self) -> Result<Vec<Contact>, StoreError>;
    /// The contact called `name`.
    fn contact(&self, name: &str) -> Result<Option<Contact>, StoreError>;
    /// A session record.
    fn session(&self, id: &SessionId) -> Result<Option<SessionRecord>, StoreError>;
    /// The session a mailbox id is filed under.
    fn session_by_mailbox(&self, mailbox: &MailboxId) -> Result<Option<SessionId>, StoreError>;
    /// The session an epoch-open digest is filed under.
    fn session_by_open_digest(&self, digest: &[u8; 32]) -> Result<Option<SessionId>, StoreError>;
    /// A message by id.
    fn message(&self, id: &MessageId) -> Result<Option<StoredMessage>, StoreError>;
    /// The newest `limit` messages with `contact` (or with everyone), oldest first, in
    /// conversation order.
    fn messages(&self, contact: Option<&str>, limit: usize) -> Result<Vec<StoredMessage>, StoreError>;
    /// The `limit` messages with `contact` (or with everyone) just before the one at conversation
    /// order `before`, oldest first: the page before it. Reads O(limit + log n).
    fn messages_before(
        &self,
        contact: Option<&str>,
        before: u64,
        limit: usize,
    ) -> Result<Vec<StoredMessage>, StoreError>;
    /// The incoming messages of `contact` not yet read, oldest first. Reads only those (an
    /// index kept with the messages).
    fn unread(&self, contact: &str) -> Result<Vec<MessageId>, StoreError>;
    /// How many incoming messages of `contact` are not yet read.
    fn unread_count(&self, contact: &str) -> Result<usize, StoreError>;
    /// The last day up to which our closed mailboxes were swept at the relay with peer id
    /// `relay` (binary), if they ever were ([`Change::NoteSwept`]).
    fn swept_through(&self, relay: &[u8]) -> Result<Option<u64>, StoreError>;
    /// The pieces of `group` from `contact` kept so far, by index.
    fn fragments(&self, contact: &str, group: &[u8; 16]) -> Result<Vec<StoredFragment>, StoreError>;
    /// The groups of pieces from `contact` still waiting for more (keys only: cheap).
    fn fragment_groups(&self, contact: &str) -> Result<Vec<[u8; 16]>, StoreError>;
    /// Every group, with its contact, whose newest piece arrived before `before`.
    fn stale_fragments(&self, before: Timestamp) -> Result<Vec<(String, [u8; 16])>, StoreError>;
    /// The long text the outbox entry `id` carries a piece of, if it does.
    fn part_of(&self, id: &MessageId) -> Result<Option<PartOf>, StoreError>;
    /// The file message `id` carries, if it does.
    fn file_info(&self, id: &MessageId) -> Result<Option<FileInfo>, StoreError>;
    /// The bytes of the file message `id` carries, if they are here.
    fn file_data(&self, id: &MessageId) -> Result<Option<Zeroizing<Vec<u8>>>, StoreError>;
    /// The transfer of the file message `id` carries, if it travels as a blob.
    fn transfer(&self, id: &MessageId) -> Result<Option<Transfer>, StoreError>;
    /// Every transfer, by message.
    fn transfers(&self) -> Result<Vec<(MessageId, Transfer)>, StoreError>;
    /// The newest `limit` messages with `contact` (or with everyone) whose text contains
    /// `needle` whatever the case, oldest first; fewer once they hold 8 MiB of text. Reads back
    /// from the newest message until it found them: a whole conversation when fewer match.
    fn search(
        &self,
        contact: Option<&str>,
        needle: &str,
        limit: usize,
    ) -> Result<Vec<StoredMessage>, StoreError>;
    /// Every outbox entry, the one to try first first (by `next_attempt_at`, then id). Reads the
    /// whole outbox: for inspection and tests; delivery uses the three queries below.
    fn outbox(&self) -> Result<Vec<OutboxEntry>, StoreError>;
    /// The outbox entry with this id. Reads that one entry.
    fn outbox_entry(&self, id: &MessageId) -> Result<Option<OutboxEntry>, StoreError>;
    /// `contact`'s head: its entry to deliver next, whatever its next attempt. Reads O(log n).
    fn outbox_head(&self, contact: &str) -> Result<Option<OutboxHead>, StoreError>;
    /// `contact`'s first `limit` entries in delivery order, the head first, whatever their next
    /// attempts. Reads O(limit + log n).
    fn outbox_queue(&self, contact: &str, limit: usize) -> Result<Vec<OutboxHead>, StoreError>;
    /// The head of every contact whose head is due at `now` (next attempt at or before it),
    /// soonest first. Reads one index entry per such contact, whatever else the outbox holds: a
    /// contact's later entries wait behind its head and are not visited.
    fn outbox_due(&self, now: Timestamp) -> Result<Vec<OutboxHead>, StoreError>;
    /// How many entries the outbox holds.
    fn outbox_len(&self) -> Result<usize, StoreError>;
    /// The last days of `session`'s noted announcements ([`Change::NoteAnnouncement`]), newest
    /// first. Reads only those notes.
    fn announced(&self, session: &SessionId) -> Result<Vec<u64>, StoreError>;
    /// Messages noted with [`Change::AwaitReceipt`] whose deadline is at or before `until`,
    /// soonest first, at most `limit`. Reads only those notes.
    fn awaiting(&self, until: Timestamp, limit: usize) -> Result<Vec<(Timestamp, MessageId)>, StoreError>;
    /// The user's own relays, as last set with [`Change::SetRelays`]; empty if never set
    /// (including in databases written before relays existed).
    fn relays(&self) -> Result<Vec<Vec<u8>>, StoreError>;
    /// The ids of every stored session record, in byte order. Reads no record, so it opens no
    /// sealed value.
    fn session_ids(&self) -> Result<Vec<SessionId>, StoreError>;
    /// Every contact request, by id.
    fn requests(&self) -> Result<Vec<ContactRequest>, StoreError>;
    /// The contact request `id`.
    fn request(&self, id: &RequestId) -> Result<Option<ContactRequest>, StoreError>;
    /// How many contact requests were dropped, ever, because the queue was full.
    fn requests_dropped(&self) -> Result<u64, StoreError>;
    /// Every blocked identity, by identity key.
    fn blocked(&self) -> Result<Vec<Blocked>, StoreError>;
    /// Whether `identity` is blocked.
    fn is_blocked(&self, identity: &IdentityPublic) -> Result<bool, StoreError>;
    /// Whether a first-contact open with this digest was dismissed ([`Change::Dismiss`]).
    fn is_dismissed(&self, digest: &[u8; 32]) -> Result<bool, StoreError>;
    /// How many dismissals are kept.
    fn dismissed_len(&self) -> Result<usize, StoreError>;
    /// The group with this id.
    fn group(&self, id: &[u8; 16]) -> Result<Option<GroupRecord>, StoreError>;
    /// Every group, by id.
    fn groups(&self) -> Result<Vec<GroupRecord>, StoreError>;
    /// What the group message `id` (group-wide) is, if it is one.
    fn group_message(&self, id: &MessageId) -> Result<Option<GroupMessageInfo>, StoreError>;
    /// The group message a copy of ours (by its frame id) belongs to.
    fn group_copy(&self, copy: &MessageId) -> Result<Option<MessageId>, StoreError>;
    /// Applies `changes` in order, all or none, in one transaction, and returns once they are
    /// durable. Concurrent callers are serialised; a reader sees a batch entirely or not at all.
    fn apply(&self, changes: &[Change]) -> Result<(), StoreError>;
    /// Like [`Store::apply`] (atomic, visible at once) but without waiting for the disk: for
    /// bookkeeping whose loss in a crash is harmless because it is redone, such as removing an
    /// outbox entry the peer already acknowledged (a crash only re-sends it, and the peer answers
    /// `Accepted` again without storing a duplicate). The next durable `apply` flushes it too.
    fn apply_relaxed(&self, changes: &[Change]) -> Result<(), StoreError> {
        self.apply(changes)
    }
}

/// A shared store is a store: the daemon and tests can hold it in several places.
impl<S: Store + ?Sized> Store for std::sync::Arc<S> {
    fn profile(&self) -> Result<Option<Profile>, StoreError> {
        (**self).profile()
    }
    fn contacts(&self) -> Result<Vec<Contact>, StoreError> {
        (**self).contacts()
    }
    fn contact(&self, name: &str) -> Result<Option<Contact>, StoreError> {
        (**self).contact(name)
    }
    fn session(&self, id: &SessionId) -> Result<Option<SessionRecord>, StoreError> {
        (**self).session(id)
    }
    fn session_by_mailbox(&self, mailbox: &MailboxId) -> Result<Option<SessionId>, StoreError> {
        (**self).session_by_mailbox(mailbox)
    }
    fn session_by_open_digest(&self, digest: &[u8; 32]) -> Result<Option<SessionId>, StoreError> {
        (**self).session_by_open_digest(digest)
    }
    fn message(&self, id: &MessageId) -> Result<Option<StoredMessage>, StoreError> {
        (**self).message(id)
    }
    fn messages(&self, contact: Option<&str>, limit: usize) -> Result<Vec<StoredMessage>, StoreError> {
        (**self).messages(contact, limit)
    }
    fn messages_before(
        &self,
        contact: Option<&str>,
        before: u64,
        limit: usize,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        (**self).messages_before(contact, before, limit)
    }
    fn unread(&self, contact: &str) -> Result<Vec<MessageId>, StoreError> {
        (**self).unread(contact)
    }
    fn unread_count(&self, contact: &str) -> Result<usize, StoreError> {
        (**self).unread_count(contact)
    }
    fn swept_through(&self, relay: &[u8]) -> Result<Option<u64>, StoreError> {
        (**self).swept_through(relay)
    }
    fn fragments(&self, contact: &str, group: &[u8; 16]) -> Result<Vec<StoredFragment>, StoreError> {
        (**self).fragments(contact, group)
    }
    fn fragment_groups(&self, contact: &str) -> Result<Vec<[u8; 16]>, StoreError> {
        (**self).fragment_groups(contact)
    }
    fn stale_fragments(&self, before: Timestamp) -> Result<Vec<(String, [u8; 16])>, StoreError> {
        (**self).stale_fragments(before)
    }
    fn part_of(&self, id: &MessageId) -> Result<Option<PartOf>, StoreError> {
        (**self).part_of(id)
    }
    fn file_info(&self, id: &MessageId) -> Result<Option<FileInfo>, StoreError> {
        (**self).file_info(id)
    }
    fn file_data(&self, id: &MessageId) -> Result<Option<Zeroizing<Vec<u8>>>, StoreError> {
        (**self).file_data(id)
    }
    fn transfer(&self, id: &MessageId) -> Result<Option<Transfer>, StoreError> {
        (**self).transfer(id)
    }
    fn transfers(&self) -> Result<Vec<(MessageId, Transfer)>, StoreError> {
        (**self).transfers()
    }
    fn search(
        &self,
        contact: Option<&str>,
        needle: &str,
        limit: usize,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        (**self).search(contact, needle, limit)
    }
    fn outbox(&self) -> Result<Vec<OutboxEntry>, StoreError> {
        (**self).outbox()
    }
    fn outbox_entry(&self, id: &MessageId) -> Result<Option<OutboxEntry>, StoreError> {
        (**self).outbox_entry(id)
    }
    fn outbox_head(&self, contact: &str) -> Result<Option<OutboxHead>, StoreError> {
        (**self).outbox_head(contact)
    }
    fn outbox_queue(&self, contact: &str, limit: usize) -> Result<Vec<OutboxHead>, StoreError> {
        (**self).outbox_queue(contact, limit)
    }
    fn outbox_due(&self, now: Timestamp) -> Result<Vec<OutboxHead>, StoreError> {
        (**self).outbox_due(now)
    }
    fn outbox_len(&self) -> Result<usize, StoreError> {
        (**self).outbox_len()
    }
    fn awaiting(&self, until: Timestamp, limit: usize) -> Result<Vec<(Timestamp, MessageId)>, StoreError> {
        (**self).awaiting(until, limit)
    }
    fn announced(&self, session: &SessionId) -> Result<Vec<u64>, StoreError> {
        (**self).announced(session)
    }
    fn relays(&self) -> Result<Vec<Vec<u8>>, StoreError> {
        (**self).relays()
    }
    fn session_ids(&self) -> Result<Vec<SessionId>, StoreError> {
        (**self).session_ids()
    }
    fn requests(&self) -> Result<Vec<ContactRequest>, StoreError> {
        (**self).requests()
    }
    fn request(&self, id: &RequestId) -> Result<Option<ContactRequest>, StoreError> {
        (**self).request(id)
    }
    fn requests_dropped(&self) -> Result<u64, StoreError> {
        (**self).requests_dropped()
    }
    fn blocked(&self) -> Result<Vec<Blocked>, StoreError> {
        (**self).blocked()
    }
    fn is_blocked(&self, identity: &IdentityPublic) -> Result<bool, StoreError> {
        (**self).is_blocked(identity)
    }
    fn is_dismissed(&self, digest: &[u8; 32]) -> Result<bool, StoreError> {
        (**self).is_dismissed(digest)
    }
    fn dismissed_len(&self) -> Result<usize, StoreError> {
        (**self).dismissed_len()
    }
    fn group(&self, id: &[u8; 16]) -> Result<Option<GroupRecord>, StoreError> {
        (**self).group(id)
    }
    fn groups(&self) -> Result<Vec<GroupRecord>, StoreError> {
        (**self).groups()
    }
    fn group_message(&self, id: &MessageId) -> Result<Option<GroupMessageInfo>, StoreError> {
        (**self).group_message(id)
    }
    fn group_copy(&self, copy: &MessageId) -> Result<Option<MessageId>, StoreError> {
        (**self).group_copy(copy)
    }
    fn apply(&self, changes: &[Change]) -> Result<(), StoreError> {
        (**self).apply(changes)
    }
    fn apply_relaxed(&self, changes: &[Change]) -> Result<(), StoreError> {
        (**self).apply_relaxed(changes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first contact layout, as a database of that time holds it.
    #[derive(Serialize)]
    struct FirstLayout {
        name: String,
        identity: IdentityPublic,
        bundle: Option<Bundle>,
        inbox: Option<MailboxId>,
        #[serde(with = "serde_bytes")]
        peer_id: Vec<u8>,
        addrs: Vec<Vec<u8>>,
        relays: Vec<Vec<u8>>,
        session: Option<SessionId>,
        added_at: Timestamp,
    }

    #[test]
    fn contacts_of_the_first_layout_still_load() {
        use rand_core::SeedableRng;
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(1);
        let identity = IdentityKey::generate(&mut rng).public();
        let old = FirstLayout {
            name: "bob".into(),
            identity,
            bundle: None,
            inbox: Some(MailboxId([3; 16])),
            peer_id: vec![1, 2, 3],
            addrs: vec![vec![4]],
            relays: vec![vec![5]],
            session: Some(SessionId([6; 16])),
            added_at: Timestamp(7),
        };
        let bytes = codec::encode("contact", &old).unwrap();
        let contact = engine::decode_contact(&bytes).unwrap();
        assert_eq!((contact.name.as_str(), contact.identity, contact.inbox), ("bob", identity, old.inbox));
        assert_eq!((contact.peer_id, contact.addrs, contact.relays), (old.peer_id, old.addrs, old.relays));
        assert_eq!((contact.session, contact.added_at), (old.session, old.added_at));
        assert_eq!((contact.last_resort, contact.last_heard, contact.restored_at), (None, None, None));
        // The second layout is the current one without `restored_at` (its `None` is the last byte).
        let second = Contact { last_heard: Some(Timestamp(8)), ..engine::decode_contact(&bytes).unwrap() };
        let bytes = codec::encode("contact", &second).unwrap();
        assert_eq!(bytes.last(), Some(&0));
        assert_eq!(engine::decode_contact(&bytes[..bytes.len() - 1]).unwrap(), second);
        // The current layout reads back as itself, and junk as none of them.
        let current = Contact { restored_at: Some(Timestamp(9)), ..second };
        let bytes = codec::encode("contact", &current).unwrap();
        assert_eq!(engine::decode_contact(&bytes).unwrap(), current);
        assert!(matches!(engine::decode_contact(&bytes[..bytes.len() - 1]), Err(StoreError::Corrupt { .. })));
    }

    #[test]
    fn status_moves_only_forward() {
        use Status::*;
        let one = Stored { accepted: 1, total: 3 };
        let two = Stored { accepted: 2, total: 3 };
        let other = Stored { accepted: 2, total: 2 };
        let all = [Queued, Sent, Delivered, Read, Failed, one, two, other];
        let allowed = [
            (Queued, Sent),
            (Queued, Delivered),
            (Queued, Read),
            (Queued, Failed),
            (Sent, Delivered),
            (Sent, Read),
            (Sent, Failed),
            (Delivered, Read),
            (Queued, one),
            (Queued, two),
            (Queued, other),
            (one, two),
            (one, Sent),
            (two, Sent),
            (other, Sent),
            (one, Delivered),
            (two, Delivered),
            (other, Delivered),
            (one, Read),
            (two, Read),
            (other, Read),
            (one, Failed),
            (two, Failed),
            (other, Failed),
            (Failed, Delivered),
            (Failed, Read),
        ];
        for from in all {
            for to in all {
                assert_eq!(from.advances_to(to), allowed.contains(&(from, to)), "{from:?} -> {to:?}");
            }
        }
    }

    #[test]
    fn secrets_and_text_stay_out_of_debug() {
        let key = NodeKey::new(b"very secret key bytes".to_vec());
        assert_eq!(format!("{key:?}"), "NodeKey(..)");
        let message = StoredMessage {
            id: MessageId([1; 16]),
            contact: "bob".into(),
            direction: Direction::In,
            time: Timestamp(1),
            text: "meet at the old mill".into(),
            seq: Some(0),
            status: Status::Delivered,
            reason: None,
            order: 0,
        };
        let debug = format!("{message:?}");
        assert!(!debug.contains("old mill"), "{debug}");
        assert!(debug.contains("text_len: 20"), "{debug}");
    }
}
