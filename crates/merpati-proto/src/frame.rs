//! The inner frame: the plaintext sealed inside an envelope's transport ciphertext.
//!
//! ```text
//! header_echo  27   exact copy of the envelope's clear header bytes
//! message_id   16   random, chosen by the sender; the receiver stores messages by it (idempotent)
//! seq          u64  per-session sender sequence number, for gap detection
//! sent_at      u64  sender's clock, Unix milliseconds
//! ack_epoch    u32  highest peer epoch the sender has authenticated; u32::MAX = none yet
//! body_type    u8   1 text, 2 receipt, 3 control, 4 fragment, 5 file, 6 group
//! body_len     u32  at most MAX_BODY_LEN
//! body         body_len bytes, laid out per type (below)
//! padding      rest, all zero bytes
//! ```
//!
//! Bodies:
//!
//! ```text
//! text      UTF-8, the whole body, at most MAX_TEXT_LEN bytes
//! receipt   kind u8 (1 delivered, 2 read), count u8 (1..=MAX_RECEIPT_IDS), count × 16-byte ids
//! control   type u8, then
//!             1 mailbox rotation: first_day u64, count u8 (1..=32), count × 16-byte mailbox ids
//!             2 relay hints:      count u8 (<= MAX_HINTS), each: len u16 (1..=MAX_ADDR_LEN), bytes
//!             3 node info:        peer_id len u8 (1..=MAX_PEER_ID_LEN), bytes,
//!                                 count u8 (<= MAX_HINTS), each: len u16 (1..=MAX_ADDR_LEN), bytes
//!             4 display name:     len u8 (1..=MAX_DISPLAY_NAME_LEN), UTF-8 without control characters
//!             5 restored:         at u64
//!             6 keys:             see `ContactKeys`
//!             7 group entries:    group id (16), count u8 (1..=160), each: len u16, a log entry
//!             8 group cards:      group id (16), count u8 (1..=MAX_CARDS), each: keys (as 6),
//!                                 peer id as in node info (may be empty), addresses, relays
//! fragment  see `crate::fragment`
//! file      a file's description, see `crate::blob::Descriptor`
//! group     group id (16), sender_seq u64, log_n u32, heads digest (16), inner body type u8
//!           (1 text, 4 fragment or 5 file), inner body (the rest)
//! ```
//!
//! Flow: the sender builds a [`Frame`] whose echo is the header it is about to send, asks
//! [`crate::envelope::padded_plaintext_len`] for the padded length that lands the envelope on a
//! bucket, and seals [`Frame::encode_padded`]'s output. The receiver decrypts, calls
//! [`Frame::decode`], and compares `header_echo` with the clear header before trusting anything.
//! Padding must be zero so the plaintext has exactly one valid form: a frame cannot carry hidden
//! bytes, and a tampered decryption stays detectable even if a bug ever let one through.

use std::fmt;

use rand_core::CryptoRng;
use serde::{Deserialize, Serialize};
use thiserror::Error;
use zeroize::Zeroizing;

use crate::blob::{Descriptor, DescriptorError};
use crate::codec::{DecodeError, Reader, Writer};
use crate::envelope::HEADER_LEN;
use crate::fragment::{Fragment, FragmentError};
use crate::group::{Entry, GroupEntries, GroupId, GroupMessage, MAX_ENTRIES_PER_FRAME, MAX_ENTRY_LEN};
use crate::identity::{Bundle, MAX_VERSIONS, SignedPrekey};
use crate::mailbox::{Announcement, MAX_ANNOUNCED_IDS, MailboxId};
use crate::noise::MAX_TRANSPORT_PLAINTEXT;
use crate::time::Timestamp;

/// Bytes of a frame before its body: echo, id, seq, time, ack, body type and length.
pub const FIXED_LEN: usize = HEADER_LEN + 16 + 8 + 8 + 4 + 1 + 4;
/// The longest body: whatever fits in one transport plaintext after the fixed fields.
pub const MAX_BODY_LEN: usize = MAX_TRANSPORT_PLAINTEXT - FIXED_LEN;
/// The longest text body, in bytes of UTF-8: 15 KiB, so that a text message, even one carrying a
/// first-contact open, always fits the 16 KiB padding bucket instead of spilling into 64 KiB.
/// Longer texts travel as fragments.
pub const MAX_TEXT_LEN: usize = 15 * 1024;
/// The most message ids one receipt may acknowledge.
pub const MAX_RECEIPT_IDS: usize = 64;
/// The longest display name a sender may suggest, in bytes of UTF-8.
pub const MAX_DISPLAY_NAME_LEN: usize = 64;
/// The most addresses in a relay-hint or node-info control message.
pub const MAX_HINTS: usize = 8;
/// The longest address (a binary multiaddr) in a control message.
pub const MAX_ADDR_LEN: usize = 256;
/// The longest peer id (a binary libp2p PeerId) in a node-info control message.
pub const MAX_PEER_ID_LEN: usize = 64;

/// The `ack_epoch` value that means "no peer epoch authenticated yet".
const NO_ACK: u32 = u32::MAX;

mod body_type {
    pub(super) const TEXT: u8 = 1;
    pub(super) const RECEIPT: u8 = 2;
    pub(super) const CONTROL: u8 = 3;
    pub(super) const FRAGMENT: u8 = 4;
    pub(super) const FILE: u8 = 5;
    pub(super) const GROUP: u8 = 6;
}

mod control_type {
    pub(super) const MAILBOX_ROTATION: u8 = 1;
    pub(super) const RELAY_HINTS: u8 = 2;
    pub(super) const NODE_INFO: u8 = 3;
    pub(super) const DISPLAY_NAME: u8 = 4;
    pub(super) const RESTORED: u8 = 5;
    pub(super) const KEYS: u8 = 6;
    pub(super) const GROUP_ENTRIES: u8 = 7;
    pub(super) const GROUP_CARDS: u8 = 8;
}

/// Why a frame could not be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FrameError {
    /// The frame does not fit: longer than the requested plaintext length when encoding, or than a
    /// transport plaintext either way.
    #[error("frame is {len} bytes, more than the room of {max}")]
    TooLarge {
        /// The frame's length (unpadded when encoding).
        len: usize,
        /// The room available.
        max: usize,
    },
    /// The body type is not one this version knows.
    #[error("unknown body type {found}")]
    UnknownBody {
        /// The body type byte found.
        found: u8,
    },
    /// The control type is not one this version knows.
    #[error("unknown control type {found}")]
    UnknownControl {
        /// The control type byte found.
        found: u8,
    },
    /// A text body is not valid UTF-8.
    #[error("text is not valid UTF-8")]
    InvalidUtf8,
    /// A padding byte is not zero.
    #[error("non-zero padding byte at offset {offset}")]
    NonZeroPadding {
        /// The offset of the first non-zero padding byte in the frame.
        offset: usize,
    },
    /// A field holds a value the format forbids.
    #[error("invalid frame: {what}")]
    Invalid {
        /// The rule that was broken.
        what: &'static str,
    },
    /// A fragment body breaks a fragment rule.
    #[error(transparent)]
    Fragment(#[from] FragmentError),
    /// A file body is not a valid description of a file.
    #[error(transparent)]
    File(#[from] DescriptorError),
    /// The bytes do not follow the layout (truncated, trailing bytes, a field over its limit).
    #[error("malformed frame: {0}")]
    Malformed(#[from] DecodeError),
}

/// A message id: 16 random bytes chosen by the sender, unique per message.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct MessageId(#[serde(with = "serde_bytes")] pub [u8; 16]);

impl MessageId {
    /// A fresh random id.
    pub fn random(rng: &mut (impl CryptoRng + ?Sized)) -> Self {
        let mut id = [0u8; 16];
        rng.fill_bytes(&mut id);
        Self(id)
    }

    /// The id's bytes.
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }
}

impl fmt::Debug for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MessageId(")?;
        for b in &self.0[..6] {
            write!(f, "{b:02x}")?;
        }
        write!(f, "..)")
    }
}

/// What a receipt acknowledges.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReceiptKind {
    /// The messages reached the peer's device and were stored.
    Delivered = 1,
    /// The peer's user has seen the messages.
    Read = 2,
}

impl ReceiptKind {
    fn from_byte(byte: u8) -> Option<Self> {
        match byte {
            1 => Some(Self::Delivered),
            2 => Some(Self::Read),
            _ => None,
        }
    }
}

/// Conversation housekeeping carried inside the encrypted channel, never visible to relays.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Control {
    /// The sender's upcoming mailbox ids: where the peer should write next.
    MailboxRotation(Announcement),
    /// Relays (binary multiaddrs) where the sender can be reached or keeps mailboxes; may be empty.
    RelayHints(Vec<Vec<u8>>),
    /// The sender's node: its libp2p peer id and the addresses it listens on.
    NodeInfo {
        /// The binary libp2p PeerId.
        peer_id: Vec<u8>,
        /// Binary multiaddrs; may be empty.
        addrs: Vec<Vec<u8>>,
    },
    /// The name the sender calls themselves, as a suggestion for the receiver's name for them:
    /// unverified, shown as such, and never used without the receiver's word.
    DisplayName(String),
    /// The sender's node was restored from a backup at `at` (the sender's clock) and this session
    /// is the one to write to from now on: the receiver sends on it, and sends again what the
    /// sender's previous copy never confirmed. Only a restore newer than the last one counts.
    Restored {
        /// When the restore happened.
        at: Timestamp,
    },
    /// What the peer needs to start a new session with the sender later (after a restore from a
    /// backup, which keeps no session): the sender's current bundle, last-resort prekey and
    /// first-contact inbox, as an invite carries them. Boxed: it is the largest control.
    Keys(Box<ContactKeys>),
    /// Entries of a group's membership log (a new member's welcome, or a change to pass on).
    GroupEntries(GroupEntries),
    /// How to reach members of a group: what a member who is not the receiver's contact needs
    /// to start a session with them (protocol §15.4).
    GroupCards {
        /// The group.
        group: GroupId,
        /// 1 to [`MAX_CARDS`] cards.
        cards: Vec<MemberCard>,
    },
}

/// The most cards one frame carries.
pub const MAX_CARDS: usize = 12;

/// A member's card: their keys for a first contact (the bundle signed by their identity, so
/// nobody who passes the card on can swap them) and where their node and relays are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberCard {
    /// The member's keys; the bundle names their identity.
    pub keys: ContactKeys,
    /// Their node's libp2p peer id, if known (may be empty).
    pub peer_id: Vec<u8>,
    /// Their node's addresses (binary multiaddrs), at most [`MAX_HINTS`].
    pub addrs: Vec<Vec<u8>>,
    /// Their relays (binary multiaddrs), at most [`MAX_HINTS`].
    pub relays: Vec<Vec<u8>>,
}

impl MemberCard {
    fn encoded_len(&self) -> usize {
        self.keys.encoded_len() + 1 + self.peer_id.len() + addrs_len(&self.addrs) + addrs_len(&self.relays)
    }

    fn encode(&self, w: &mut Writer) {
        self.keys.encode(w);
        w.bytes_u8(&self.peer_id);
        write_addrs(w, &self.addrs);
        write_addrs(w, &self.relays);
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, FrameError> {
        let keys = ContactKeys::decode(r)?;
        let peer_id = r.bytes_u8(MAX_PEER_ID_LEN, "peer id")?.to_vec();
        Ok(Self { keys, peer_id, addrs: read_addrs(r)?, relays: read_addrs(r)? })
    }

    fn validate(&self) -> Result<(), FrameError> {
        check_keys(&self.keys)?;
        limit("peer id", self.peer_id.len(), MAX_PEER_ID_LEN)?;
        check_addrs(&self.addrs)?;
        check_addrs(&self.relays)
    }
}

/// The sender's keys for a first contact (see [`Control::Keys`]). Decoding checks the public
/// keys; the receiver verifies the signatures against the identity it knows the sender by.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContactKeys {
    /// The sender's current bundle.
    pub bundle: Bundle,
    /// The first-contact inbox (the mailbox the sender's invites name).
    pub inbox: MailboxId,
    /// The sender's newest last-resort prekey, if it has one.
    pub last_resort: Option<SignedPrekey>,
}

impl ContactKeys {
    fn encoded_len(&self) -> usize {
        self.bundle.encoded_len()
            + 16
            + 1
            + self.last_resort.as_ref().map_or(0, |_| SignedPrekey::ENCODED_LEN)
    }

    fn encode(&self, w: &mut Writer) {
        self.bundle.encode(w);
        w.raw(&self.inbox.0);
        match &self.last_resort {
            Some(prekey) => {
                w.u8(1);
                prekey.encode(w);
            }
            None => {
                w.u8(0);
            }
        }
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, FrameError> {
        let keys = |_| FrameError::Invalid { what: "keys" };
        let bundle = Bundle::decode(r).map_err(keys)?;
        let inbox = MailboxId(r.array("inbox")?);
        let last_resort = match r.u8("last-resort flag")? {
            0 => None,
            1 => Some(SignedPrekey::decode(r).map_err(keys)?),
            _ => return Err(FrameError::Invalid { what: "last-resort flag" }),
        };
        Ok(Self { bundle, inbox, last_resort })
    }
}

/// A frame's content.
#[derive(Clone, PartialEq, Eq)]
pub enum Body {
    /// A text message.
    Text(String),
    /// Delivery or read receipts for earlier messages.
    Receipt {
        /// Delivered or read.
        kind: ReceiptKind,
        /// The acknowledged messages, 1 to [`MAX_RECEIPT_IDS`].
        ids: Vec<MessageId>,
    },
    /// Conversation housekeeping.
    Control(Control),
    /// One piece of a larger message.
    Fragment(Fragment),
    /// A file (inline) or where to fetch it, with its name, type and caption.
    File(Descriptor),
    /// A message to a group: a text, file or fragment with the group's header.
    Group(Box<GroupMessage>),
}

impl fmt::Debug for Body {
    // Text is message plaintext: show its length only, so logs never carry it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Text(text) => write!(f, "Text({} bytes)", text.len()),
            Self::Receipt { kind, ids } => {
                f.debug_struct("Receipt").field("kind", kind).field("ids", ids).finish()
            }
            Self::Control(control) => f.debug_tuple("Control").field(control).finish(),
            Self::Fragment(fragment) => f.debug_tuple("Fragment").field(fragment).finish(),
            Self::File(descriptor) => f.debug_tuple("File").field(descriptor).finish(),
            Self::Group(message) => f.debug_tuple("Group").field(message).finish(),
        }
    }
}

impl Body {
    fn type_byte(&self) -> u8 {
        match self {
            Self::Text(_) => body_type::TEXT,
            Self::Receipt { .. } => body_type::RECEIPT,
            Self::Control(_) => body_type::CONTROL,
            Self::Fragment(_) => body_type::FRAGMENT,
            Self::File(_) => body_type::FILE,
            Self::Group(_) => body_type::GROUP,
        }
    }

    /// The length of the body's encoding (without its type and length prefix).
    pub fn encoded_len(&self) -> usize {
        match self {
            Self::Text(text) => text.len(),
            Self::Receipt { ids, .. } => 2 + 16 * ids.len(),
            Self::Control(Control::MailboxRotation(a)) => 1 + 8 + 1 + 16 * a.ids.len(),
            Self::Control(Control::RelayHints(hints)) => 1 + addrs_len(hints),
            Self::Control(Control::NodeInfo { peer_id, addrs }) => 1 + 1 + peer_id.len() + addrs_len(addrs),
            Self::Control(Control::DisplayName(name)) => 1 + 1 + name.len(),
            Self::Control(Control::Restored { .. }) => 1 + 8,
            Self::Control(Control::Keys(keys)) => 1 + keys.encoded_len(),
            Self::Control(Control::GroupEntries(g)) => {
                1 + 16 + 1 + g.entries.iter().map(|e| 2 + e.to_bytes().len()).sum::<usize>()
            }
            Self::Control(Control::GroupCards { cards, .. }) => {
                1 + 16 + 1 + cards.iter().map(MemberCard::encoded_len).sum::<usize>()
            }
            Self::Fragment(fragment) => fragment.encoded_len(),
            Self::File(descriptor) => descriptor.encoded_len(),
            Self::Group(message) => GROUP_HEADER_LEN + 1 + message.inner.encoded_len(),
        }
    }

    /// Checks every rule the decoder checks; the error is the one decoding would report.
    pub fn validate(&self) -> Result<(), FrameError> {
        match self {
            Self::Text(text) => limit("text", text.len(), MAX_TEXT_LEN)?,
            Self::Receipt { ids, .. } => {
                if ids.is_empty() {
                    return Err(FrameError::Invalid { what: "receipt without ids" });
                }
                limit("receipt ids", ids.len(), MAX_RECEIPT_IDS)?;
            }
            Self::Control(Control::MailboxRotation(a)) => {
                // The same checks, and errors, as `Announcement::decode`.
                if a.ids.is_empty() {
                    return Err(DecodeError::Invalid { what: "announced ids" }.into());
                }
                limit("announced ids", a.ids.len(), MAX_ANNOUNCED_IDS)?;
            }
            Self::Control(Control::RelayHints(hints)) => check_addrs(hints)?,
            Self::Control(Control::NodeInfo { peer_id, addrs }) => {
                if peer_id.is_empty() {
                    return Err(FrameError::Invalid { what: "empty peer id" });
                }
                limit("peer id", peer_id.len(), MAX_PEER_ID_LEN)?;
                check_addrs(addrs)?;
            }
            Self::Control(Control::DisplayName(name)) => check_display_name(name.as_bytes())?,
            Self::Control(Control::Restored { .. }) => {}
            Self::Control(Control::Keys(keys)) => check_keys(keys)?,
            Self::Control(Control::GroupCards { cards, .. }) => {
                if cards.is_empty() {
                    return Err(FrameError::Invalid { what: "group cards" });
                }
                limit("group cards", cards.len(), MAX_CARDS)?;
                for card in cards {
                    card.validate()?;
                }
            }
            Self::Control(Control::GroupEntries(g)) => {
                if g.entries.is_empty() {
                    return Err(FrameError::Invalid { what: "group entries" });
                }
                limit("group entries", g.entries.len(), MAX_ENTRIES_PER_FRAME)?;
                if !g.all_of_the_group() {
                    return Err(FrameError::Invalid { what: "group entry of another group" });
                }
            }
            Self::Fragment(fragment) => fragment.validate()?,
            Self::File(descriptor) => descriptor.validate().map_err(DescriptorError::from)?,
            Self::Group(message) => {
                if !is_group_inner(message.inner.type_byte()) {
                    return Err(FrameError::Invalid { what: "group message body" });
                }
                message.inner.validate()?;
            }
        }
        limit("body", self.encoded_len(), MAX_BODY_LEN)
    }

    fn encode(&self, w: &mut Writer) {
        match self {
            Self::Text(text) => {
                w.raw(text.as_bytes());
            }
            Self::Receipt { kind, ids } => {
                w.u8(*kind as u8).u8(count_byte(ids.len()));
                for id in ids {
                    w.raw(&id.0);
                }
            }
            Self::Control(Control::MailboxRotation(a)) => {
                w.u8(control_type::MAILBOX_ROTATION);
                a.encode(w);
            }
            Self::Control(Control::RelayHints(hints)) => {
                w.u8(control_type::RELAY_HINTS);
                write_addrs(w, hints);
            }
            Self::Control(Control::NodeInfo { peer_id, addrs }) => {
                w.u8(control_type::NODE_INFO).bytes_u8(peer_id);
                write_addrs(w, addrs);
            }
            Self::Control(Control::DisplayName(name)) => {
                w.u8(control_type::DISPLAY_NAME).bytes_u8(name.as_bytes());
            }
            Self::Control(Control::Restored { at }) => {
                w.u8(control_type::RESTORED).u64(at.0);
            }
            Self::Control(Control::Keys(keys)) => {
                w.u8(control_type::KEYS);
                keys.encode(w);
            }
            Self::Control(Control::GroupEntries(g)) => {
                w.u8(control_type::GROUP_ENTRIES).raw(&g.group.0).u8(count_byte(g.entries.len()));
                for entry in &g.entries {
                    w.bytes_u16(&entry.to_bytes());
                }
            }
            Self::Control(Control::GroupCards { group, cards }) => {
                w.u8(control_type::GROUP_CARDS).raw(&group.0).u8(count_byte(cards.len()));
                for card in cards {
                    card.encode(w);
                }
            }
            Self::Fragment(fragment) => fragment.encode(w),
            Self::File(descriptor) => descriptor.write(w),
            Self::Group(message) => {
                w.raw(&message.group.0).u64(message.sender_seq).u32(message.log_n).raw(&message.heads);
                w.u8(message.inner.type_byte());
                message.inner.encode(w);
            }
        }
    }

    /// Reads a body of type `type_byte` spanning all of `r`.
    fn decode(type_byte: u8, r: &mut Reader<'_>) -> Result<Self, FrameError> {
        let body = match type_byte {
            body_type::TEXT => {
                let bytes = r.rest();
                limit("text", bytes.len(), MAX_TEXT_LEN)?;
                let text = std::str::from_utf8(bytes).map_err(|_| FrameError::InvalidUtf8)?;
                Self::Text(text.to_owned())
            }
            body_type::RECEIPT => {
                let kind_byte = r.u8("receipt kind")?;
                let kind =
                    ReceiptKind::from_byte(kind_byte).ok_or(FrameError::Invalid { what: "receipt kind" })?;
                let count = usize::from(r.u8("receipt ids")?);
                if count == 0 {
                    return Err(FrameError::Invalid { what: "receipt without ids" });
                }
                limit("receipt ids", count, MAX_RECEIPT_IDS)?;
                let ids =
                    (0..count).map(|_| r.array("receipt id").map(MessageId)).collect::<Result<_, _>>()?;
                Self::Receipt { kind, ids }
            }
            body_type::CONTROL => Self::Control(match r.u8("control type")? {
                control_type::MAILBOX_ROTATION => Control::MailboxRotation(Announcement::decode(r)?),
                control_type::RELAY_HINTS => Control::RelayHints(read_addrs(r)?),
                control_type::NODE_INFO => {
                    let peer_id = r.bytes_u8(MAX_PEER_ID_LEN, "peer id")?;
                    if peer_id.is_empty() {
                        return Err(FrameError::Invalid { what: "empty peer id" });
                    }
                    Control::NodeInfo { peer_id: peer_id.to_vec(), addrs: read_addrs(r)? }
                }
                control_type::DISPLAY_NAME => {
                    let bytes = r.bytes_u8(MAX_DISPLAY_NAME_LEN, "display name")?;
                    check_display_name(bytes)?;
                    // Checked as UTF-8 just above.
                    Control::DisplayName(String::from_utf8_lossy(bytes).into_owned())
                }
                control_type::RESTORED => Control::Restored { at: Timestamp(r.u64("restore time")?) },
                control_type::KEYS => Control::Keys(Box::new(ContactKeys::decode(r)?)),
                control_type::GROUP_ENTRIES => Control::GroupEntries(read_group_entries(r)?),
                control_type::GROUP_CARDS => {
                    let group = GroupId(r.array("group id")?);
                    let count = r.count_u8(MAX_CARDS, "group cards")?;
                    if count == 0 {
                        return Err(FrameError::Invalid { what: "group cards" });
                    }
                    let cards = (0..count).map(|_| MemberCard::decode(r)).collect::<Result<Vec<_>, _>>()?;
                    Control::GroupCards { group, cards }
                }
                found => return Err(FrameError::UnknownControl { found }),
            }),
            body_type::FRAGMENT => Self::Fragment(Fragment::decode(r)?),
            body_type::FILE => Self::File(Descriptor::decode(r.rest())?),
            body_type::GROUP => {
                let group = GroupId(r.array("group id")?);
                let sender_seq = r.u64("group sequence number")?;
                let log_n = r.u32("group log number")?;
                let heads = r.array("group heads")?;
                let inner_type = r.u8("group body type")?;
                // Nested once only: a group message holds a text, file or fragment, never another.
                if !is_group_inner(inner_type) {
                    return Err(FrameError::Invalid { what: "group message body" });
                }
                let inner = Self::decode(inner_type, r)?;
                Self::Group(Box::new(GroupMessage { group, sender_seq, log_n, heads, inner }))
            }
            found => return Err(FrameError::UnknownBody { found }),
        };
        Ok(body)
    }
}

/// The rule `ContactKeys::decode` adds to what the bundle's own decoding checks.
fn check_keys(keys: &ContactKeys) -> Result<(), FrameError> {
    if keys.bundle.versions.is_empty() || keys.bundle.versions.len() > MAX_VERSIONS {
        return Err(FrameError::Invalid { what: "keys" });
    }
    Ok(())
}

/// The bytes of a group message before its inner body's type.
const GROUP_HEADER_LEN: usize = 16 + 8 + 4 + 16;

/// Whether a group message may carry a body of this type.
fn is_group_inner(type_byte: u8) -> bool {
    matches!(type_byte, body_type::TEXT | body_type::FRAGMENT | body_type::FILE)
}

fn read_group_entries(r: &mut Reader<'_>) -> Result<GroupEntries, FrameError> {
    let group = GroupId(r.array("group id")?);
    let count = r.count_u8(MAX_ENTRIES_PER_FRAME, "group entries")?;
    if count == 0 {
        return Err(FrameError::Invalid { what: "group entries" });
    }
    let mut entries = Vec::with_capacity(count);
    for _ in 0..count {
        let bytes = r.bytes_u16(MAX_ENTRY_LEN, "group entry")?;
        entries.push(Entry::from_bytes(bytes).map_err(|_| FrameError::Invalid { what: "group entry" })?);
    }
    let found = GroupEntries { group, entries };
    if !found.all_of_the_group() {
        return Err(FrameError::Invalid { what: "group entry of another group" });
    }
    Ok(found)
}

/// A display name: 1 to [`MAX_DISPLAY_NAME_LEN`] bytes of UTF-8, not only spaces, without control
/// characters (which could rewrite the terminal that shows it).
fn check_display_name(bytes: &[u8]) -> Result<(), FrameError> {
    limit("display name", bytes.len(), MAX_DISPLAY_NAME_LEN)?;
    let name = std::str::from_utf8(bytes).map_err(|_| FrameError::InvalidUtf8)?;
    if name.trim().is_empty() || name.chars().any(char::is_control) {
        return Err(FrameError::Invalid { what: "display name" });
    }
    Ok(())
}

fn limit(what: &'static str, len: usize, max: usize) -> Result<(), FrameError> {
    if len > max { Err(DecodeError::TooLong { what, len, max }.into()) } else { Ok(()) }
}

fn count_byte(len: usize) -> u8 {
    // Lengths are validated before encoding; saturating makes a bug fail to decode, not wrap.
    u8::try_from(len).unwrap_or(u8::MAX)
}

fn addrs_len(addrs: &[Vec<u8>]) -> usize {
    1 + addrs.iter().map(|a| 2 + a.len()).sum::<usize>()
}

fn check_addrs(addrs: &[Vec<u8>]) -> Result<(), FrameError> {
    limit("addresses", addrs.len(), MAX_HINTS)?;
    for addr in addrs {
        if addr.is_empty() {
            return Err(FrameError::Invalid { what: "empty address" });
        }
        limit("address", addr.len(), MAX_ADDR_LEN)?;
    }
    Ok(())
}

fn write_addrs(w: &mut Writer, addrs: &[Vec<u8>]) {
    w.u8(count_byte(addrs.len()));
    for addr in addrs {
        w.bytes_u16(addr);
    }
}

fn read_addrs(r: &mut Reader<'_>) -> Result<Vec<Vec<u8>>, FrameError> {
    let count = r.count_u8(MAX_HINTS, "addresses")?;
    let mut addrs = Vec::with_capacity(count);
    for _ in 0..count {
        let addr = r.bytes_u16(MAX_ADDR_LEN, "address")?;
        if addr.is_empty() {
            return Err(FrameError::Invalid { what: "empty address" });
        }
        addrs.push(addr.to_vec());
    }
    Ok(addrs)
}

/// A decrypted frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// The clear header bytes the sender put on the envelope; must equal the received header.
    pub header_echo: [u8; HEADER_LEN],
    /// The message's id.
    pub message_id: MessageId,
    /// The sender's per-session sequence number.
    pub seq: u64,
    /// When the sender sent it, by the sender's clock.
    pub sent_at: Timestamp,
    /// The highest epoch of ours the sender has authenticated, if any. `Some(u32::MAX)` cannot be
    /// encoded: that value means "none" on the wire.
    pub ack_epoch: Option<u32>,
    /// The content.
    pub body: Body,
}

impl Frame {
    /// The frame's length without padding.
    pub fn unpadded_len(&self) -> usize {
        FIXED_LEN + self.body.encoded_len()
    }

    /// Checks every rule the decoder checks.
    pub fn validate(&self) -> Result<(), FrameError> {
        if self.ack_epoch == Some(NO_ACK) {
            return Err(FrameError::Invalid { what: "ack epoch u32::MAX means none" });
        }
        self.body.validate()
    }

    /// Encodes the frame followed by zero padding up to exactly `plaintext_len` bytes
    /// (see [`crate::envelope::padded_plaintext_len`]).
    pub fn encode_padded(&self, plaintext_len: usize) -> Result<Zeroizing<Vec<u8>>, FrameError> {
        self.validate()?;
        if plaintext_len > MAX_TRANSPORT_PLAINTEXT {
            return Err(FrameError::TooLarge { len: plaintext_len, max: MAX_TRANSPORT_PLAINTEXT });
        }
        let len = self.unpadded_len();
        if len > plaintext_len {
            return Err(FrameError::TooLarge { len, max: plaintext_len });
        }
        let body_len = u32::try_from(self.body.encoded_len())
            .map_err(|_| FrameError::TooLarge { len, max: plaintext_len })?;
        // Allocated once at its final size: a growing Vec would leave unwiped copies of the text
        // behind in freed memory.
        let mut w = Writer::with_capacity(plaintext_len);
        w.raw(&self.header_echo)
            .raw(&self.message_id.0)
            .u64(self.seq)
            .u64(self.sent_at.millis())
            .u32(self.ack_epoch.unwrap_or(NO_ACK))
            .u8(self.body.type_byte())
            .u32(body_len);
        self.body.encode(&mut w);
        let mut out = Zeroizing::new(w.into_bytes());
        out.resize(plaintext_len, 0);
        Ok(out)
    }

    /// Decodes a padded frame, refusing non-zero padding and anything over a transport plaintext.
    pub fn decode(input: &[u8]) -> Result<Self, FrameError> {
        if input.len() > MAX_TRANSPORT_PLAINTEXT {
            return Err(FrameError::TooLarge { len: input.len(), max: MAX_TRANSPORT_PLAINTEXT });
        }
        let mut r = Reader::new(input);
        let header_echo = r.array("header echo")?;
        let message_id = MessageId(r.array("message id")?);
        let seq = r.u64("seq")?;
        let sent_at = Timestamp(r.u64("sent at")?);
        let ack_epoch = Some(r.u32("ack epoch")?).filter(|&epoch| epoch != NO_ACK);
        let type_byte = r.u8("body type")?;
        let body_bytes = r.bytes_u32(MAX_BODY_LEN, "body")?;
        let mut body_reader = Reader::new(body_bytes);
        let body = Body::decode(type_byte, &mut body_reader)?;
        body_reader.finish()?;
        let padding_start = input.len() - r.remaining();
        if let Some(pos) = r.rest().iter().position(|&b| b != 0) {
            return Err(FrameError::NonZeroPadding { offset: padding_start + pos });
        }
        r.finish()?;
        Ok(Self { header_echo, message_id, seq, sent_at, ack_epoch, body })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fragment;
    use crate::mailbox::MailboxId;

    fn frame(body: Body) -> Frame {
        Frame {
            header_echo: [9; HEADER_LEN],
            message_id: MessageId([1; 16]),
            seq: 42,
            sent_at: Timestamp(1_700_000_000_000),
            ack_epoch: Some(3),
            body,
        }
    }

    /// A device's keys, as `Control::Keys` carries them.
    fn keys() -> ContactKeys {
        use crate::identity::{DeviceCert, IdentityKey, PrekeyRing};
        use crate::keys::X25519Secret;
        use rand_core::SeedableRng;
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(6);
        let now = Timestamp(1_700_000_000_000);
        let identity = IdentityKey::generate(&mut rng);
        let cert = DeviceCert::issue(&identity, &X25519Secret::generate(&mut rng).public(), now);
        let mut ring = PrekeyRing::new(&identity, &cert.device_id(), now, &mut rng);
        ring.rotate_if_due(&identity, &cert.device_id(), now, &mut rng);
        let bundle = Bundle::new(&identity, cert, ring.current().clone(), vec![1]).expect("bundle");
        ContactKeys { bundle, inbox: MailboxId([7; 16]), last_resort: ring.last_resort().cloned() }
    }

    /// A group's genesis and its first `Add`, as `Control::GroupEntries` carries them.
    fn group_entries() -> GroupEntries {
        use crate::group::{Action, Entry};
        use crate::identity::IdentityKey;
        use rand_core::SeedableRng;
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(7);
        let now = Timestamp(1_700_000_000_000);
        let (owner, member) = (IdentityKey::generate(&mut rng), IdentityKey::generate(&mut rng));
        let (group, genesis) = Entry::genesis(&owner, "Pasar", [3; 16], now).expect("genesis");
        let add = Action::Add { member: member.public(), name: "Sari".into() };
        let entry = Entry::sign(&owner, group, 1, vec![genesis.hash()], now, add).expect("add");
        GroupEntries { group, entries: vec![genesis, entry] }
    }

    fn card() -> MemberCard {
        MemberCard {
            keys: keys(),
            peer_id: vec![5; 38],
            addrs: vec![vec![6; 10]],
            relays: vec![vec![7; 50]; 2],
        }
    }

    fn cards(cards: Vec<MemberCard>) -> Body {
        Body::Control(Control::GroupCards { group: GroupId([4; 16]), cards })
    }

    fn group_message(inner: Body) -> Body {
        Body::Group(Box::new(GroupMessage {
            group: GroupId([8; 16]),
            sender_seq: 9,
            log_n: 10,
            heads: [11; 16],
            inner,
        }))
    }

    fn round_trip(f: &Frame, padded: usize) {
        let bytes = f.encode_padded(padded).expect("encode");
        assert_eq!(bytes.len(), padded);
        assert_eq!(Frame::decode(&bytes).as_ref(), Ok(f));
    }

    #[test]
    fn layout_matches_the_spec() {
        let f = frame(Body::Text("hi".into()));
        let bytes = f.encode_padded(FIXED_LEN + 2 + 3).expect("encode");
        let mut expected = vec![9u8; 27];
        expected.extend([1; 16]);
        expected.extend(42u64.to_be_bytes());
        expected.extend(1_700_000_000_000u64.to_be_bytes());
        expected.extend(3u32.to_be_bytes());
        expected.push(1);
        expected.extend(2u32.to_be_bytes());
        expected.extend(b"hi");
        expected.extend([0; 3]);
        assert_eq!(&bytes[..], &expected[..]);
        assert_eq!(f.unpadded_len(), FIXED_LEN + 2);
    }

    #[test]
    fn keys_with_a_bad_flag_or_a_weak_key_are_refused() {
        let f = frame(Body::Control(Control::Keys(Box::new(ContactKeys { last_resort: None, ..keys() }))));
        let bytes = f.encode_padded(f.unpadded_len()).expect("encode");
        let mut flag = bytes.clone();
        flag[f.unpadded_len() - 1] = 2;
        assert_eq!(Frame::decode(&flag), Err(FrameError::Invalid { what: "last-resort flag" }));
        let mut weak = bytes.clone();
        let prekey = FIXED_LEN + 1 + 136 + 4;
        weak[prekey..prekey + 32].fill(0);
        assert_eq!(Frame::decode(&weak), Err(FrameError::Invalid { what: "keys" }));
    }

    #[test]
    fn every_body_round_trips() {
        let bodies = [
            Body::Text(String::new()),
            Body::Text("ünïcødé ✓".into()),
            Body::Receipt { kind: ReceiptKind::Read, ids: vec![MessageId([4; 16]); MAX_RECEIPT_IDS] },
            Body::Control(Control::MailboxRotation(Announcement {
                first_day: 7,
                ids: vec![MailboxId([5; 16])],
            })),
            Body::Control(Control::RelayHints(Vec::new())),
            Body::Control(Control::RelayHints(vec![vec![6; MAX_ADDR_LEN]; MAX_HINTS])),
            Body::Control(Control::NodeInfo { peer_id: vec![7; MAX_PEER_ID_LEN], addrs: vec![vec![8; 3]] }),
            Body::Control(Control::DisplayName("Sari".into())),
            Body::Control(Control::DisplayName("é".repeat(MAX_DISPLAY_NAME_LEN / 2))),
            Body::Control(Control::Restored { at: Timestamp(1_700_000_000_000) }),
            Body::Control(Control::Keys(Box::new(keys()))),
            Body::Control(Control::Keys(Box::new(ContactKeys { last_resort: None, ..keys() }))),
            Body::Control(Control::GroupEntries(group_entries())),
            cards(vec![card()]),
            cards(vec![
                MemberCard { peer_id: Vec::new(), addrs: Vec::new(), relays: Vec::new(), ..card() };
                MAX_CARDS
            ]),
            group_message(Body::Text("ke pasar".into())),
            group_message(Body::Text("a".repeat(MAX_TEXT_LEN))),
            group_message(Body::Fragment(
                fragment::split(1, &[3; 70_000], [2; 16]).expect("split").remove(1),
            )),
            Body::Fragment(fragment::split(1, &[3; 70_000], [2; 16]).expect("split").remove(0)),
            Body::File(crate::blob::Descriptor {
                len: crate::blob::MAX_INLINE_LEN as u64,
                hash: [1; 32],
                media_type: "audio/ogg".into(),
                name: "voice note.ogg".into(),
                caption: "c".repeat(crate::blob::MAX_CAPTION_LEN),
                thumbnail: vec![2; crate::blob::MAX_THUMBNAIL_LEN],
                content: crate::blob::Content::Inline(zeroize::Zeroizing::new(
                    vec![3; crate::blob::MAX_INLINE_LEN],
                )),
            }),
        ];
        for body in bodies {
            let f = frame(body);
            round_trip(&f, f.unpadded_len());
            round_trip(&f, MAX_TRANSPORT_PLAINTEXT);
        }
        let none = Frame { ack_epoch: None, ..frame(Body::Text("x".into())) };
        round_trip(&none, 512);
    }

    #[test]
    fn padding_must_be_zero() {
        let f = frame(Body::Text("hello".into()));
        let mut bytes = f.encode_padded(200).expect("encode");
        assert!(Frame::decode(&bytes).is_ok());
        bytes[199] = 1;
        assert_eq!(Frame::decode(&bytes), Err(FrameError::NonZeroPadding { offset: 199 }));
        bytes[199] = 0;
        bytes[f.unpadded_len()] = 0x80;
        assert_eq!(Frame::decode(&bytes), Err(FrameError::NonZeroPadding { offset: f.unpadded_len() }));
    }

    #[test]
    fn text_limits() {
        let max = frame(Body::Text("a".repeat(MAX_TEXT_LEN)));
        round_trip(&max, max.unpadded_len());
        let over = frame(Body::Text("a".repeat(MAX_TEXT_LEN + 1)));
        let expected = FrameError::Malformed(DecodeError::TooLong {
            what: "text",
            len: MAX_TEXT_LEN + 1,
            max: MAX_TEXT_LEN,
        });
        assert_eq!(over.encode_padded(MAX_TRANSPORT_PLAINTEXT), Err(expected.clone()));
        // Hand-made bytes that carry an over-long text are refused the same way.
        let mut bytes = max.encode_padded(max.unpadded_len()).expect("encode").to_vec();
        bytes.push(b'a');
        bytes[FIXED_LEN - 4..FIXED_LEN].copy_from_slice(&(MAX_TEXT_LEN as u32 + 1).to_be_bytes());
        assert_eq!(Frame::decode(&bytes), Err(expected));
    }

    #[test]
    fn invalid_utf8_is_refused() {
        let f = frame(Body::Text("abcd".into()));
        let mut bytes = f.encode_padded(f.unpadded_len()).expect("encode");
        bytes[FIXED_LEN + 1] = 0xFF;
        assert_eq!(Frame::decode(&bytes), Err(FrameError::InvalidUtf8));
    }

    #[test]
    fn unknown_types_are_refused() {
        let f = frame(Body::Control(Control::RelayHints(Vec::new())));
        let bytes = f.encode_padded(f.unpadded_len()).expect("encode");
        for (found, expected) in [
            (7u8, FrameError::UnknownBody { found: 7 }),
            (0, FrameError::UnknownBody { found: 0 }),
            (255, FrameError::UnknownBody { found: 255 }),
        ] {
            let mut b = bytes.clone();
            b[FIXED_LEN - 5] = found;
            assert_eq!(Frame::decode(&b), Err(expected));
        }
        let mut b = bytes.clone();
        b[FIXED_LEN] = 9;
        assert_eq!(Frame::decode(&b), Err(FrameError::UnknownControl { found: 9 }));
    }

    #[test]
    fn encode_refuses_what_decode_would() {
        let f = frame(Body::Text("hello".into()));
        assert_eq!(
            f.encode_padded(f.unpadded_len() - 1),
            Err(FrameError::TooLarge { len: f.unpadded_len(), max: f.unpadded_len() - 1 })
        );
        assert!(matches!(f.encode_padded(MAX_TRANSPORT_PLAINTEXT + 1), Err(FrameError::TooLarge { .. })));
        let bad = [
            Frame { ack_epoch: Some(u32::MAX), ..f.clone() },
            frame(Body::Receipt { kind: ReceiptKind::Delivered, ids: Vec::new() }),
            frame(Body::Receipt { kind: ReceiptKind::Delivered, ids: vec![MessageId([0; 16]); 65] }),
            frame(Body::Control(Control::RelayHints(vec![vec![1]; MAX_HINTS + 1]))),
            frame(Body::Control(Control::RelayHints(vec![vec![1; MAX_ADDR_LEN + 1]]))),
            frame(Body::Control(Control::RelayHints(vec![Vec::new()]))),
            frame(Body::Control(Control::NodeInfo { peer_id: Vec::new(), addrs: Vec::new() })),
            frame(Body::Control(Control::NodeInfo { peer_id: vec![1; 65], addrs: Vec::new() })),
            frame(Body::Control(Control::DisplayName(String::new()))),
            frame(Body::Control(Control::DisplayName("  ".into()))),
            frame(Body::Control(Control::DisplayName("x".repeat(MAX_DISPLAY_NAME_LEN + 1)))),
            frame(Body::Control(Control::DisplayName("evil\u{1b}[2J".into()))),
            frame(Body::Control(Control::MailboxRotation(Announcement { first_day: 0, ids: Vec::new() }))),
            frame(Body::Control(Control::MailboxRotation(Announcement {
                first_day: 0,
                ids: vec![MailboxId([0; 16]); MAX_ANNOUNCED_IDS + 1],
            }))),
            frame(Body::Fragment(Fragment {
                group: [0; 16],
                content: 1,
                index: 1,
                count: 1,
                total_len: 1,
                chunk: vec![0],
            })),
            frame(group_message(Body::Receipt { kind: ReceiptKind::Read, ids: vec![MessageId([1; 16])] })),
            frame(group_message(Body::Control(Control::Restored { at: Timestamp(1) }))),
            frame(group_message(group_message(Body::Text("nested".into())))),
            frame(group_message(Body::Text("a".repeat(MAX_TEXT_LEN + 1)))),
            frame(Body::Control(Control::GroupEntries(GroupEntries {
                entries: Vec::new(),
                ..group_entries()
            }))),
            frame(cards(Vec::new())),
            frame(cards(vec![card(); MAX_CARDS + 1])),
            frame(cards(vec![MemberCard { addrs: vec![vec![1; MAX_ADDR_LEN + 1]], ..card() }])),
            frame(cards(vec![MemberCard { relays: vec![Vec::new()], ..card() }])),
            frame(Body::Control(Control::GroupEntries(GroupEntries {
                group: GroupId([1; 16]),
                ..group_entries()
            }))),
            frame(Body::Control(Control::GroupEntries(GroupEntries {
                entries: vec![group_entries().entries[1].clone(); MAX_ENTRIES_PER_FRAME + 1],
                ..group_entries()
            }))),
        ];
        for f in bad {
            let err = f.encode_padded(MAX_TRANSPORT_PLAINTEXT).expect_err("must refuse");
            assert_eq!(f.validate(), Err(err.clone()));
            // Build the bytes by hand (skipping validation) and check the decoder agrees.
            let mut w = Writer::new();
            w.raw(&f.header_echo)
                .raw(&f.message_id.0)
                .u64(f.seq)
                .u64(f.sent_at.0)
                .u32(f.ack_epoch.unwrap_or(NO_ACK))
                .u8(f.body.type_byte())
                .u32(f.body.encoded_len() as u32);
            f.body.encode(&mut w);
            let decoded = Frame::decode(&w.into_bytes());
            if f.ack_epoch == Some(u32::MAX) {
                // On the wire that is simply "no ack": it decodes, as a different frame.
                assert_eq!(decoded.map(|d| d.ack_epoch), Ok(None));
            } else {
                assert_eq!(decoded, Err(err), "{f:?}");
            }
        }
    }

    #[test]
    fn debug_hides_text() {
        let shown = format!("{:?}", frame(Body::Text("very secret".into())));
        assert!(!shown.contains("secret"), "{shown}");
        assert!(shown.contains("Text(11 bytes)"), "{shown}");
        let shown = format!("{:?}", frame(group_message(Body::Text("very secret".into()))));
        assert!(!shown.contains("secret") && shown.contains("Text(11 bytes)"), "{shown}");
    }
}
