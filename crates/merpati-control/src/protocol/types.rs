//! The params and results of every control method, the notification payloads, and the small
//! value types they share (message ids, statuses, directions, names).
//!
//! Params reject unknown members (`deny_unknown_fields`), so a misspelt option is an error
//! rather than silently ignored; results accept unknown members, so an older client keeps
//! working against a newer daemon that adds fields.

use std::fmt;
use std::str::FromStr;

use merpati_proto::Timestamp;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// The longest contact name, in characters.
pub const MAX_NAME_CHARS: usize = 64;
/// How many messages `messages` returns when no `limit` is given.
pub const DEFAULT_MESSAGES_LIMIT: u32 = 100;
/// The largest `limit` `messages` honours.
pub const MAX_MESSAGES_LIMIT: u32 = 1000;
/// The most relays a node keeps: as many as an invite can list, since the point of a relay is
/// that contacts learn it from the invite.
pub const MAX_RELAYS: usize = merpati_proto::invite::MAX_RELAYS;

/// Why a name was refused ([`check_name`]).
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum NameError {
    /// The empty string.
    #[error("a name cannot be empty")]
    Empty,
    /// More than [`MAX_NAME_CHARS`] characters.
    #[error("a name is at most {MAX_NAME_CHARS} characters long, this one has {chars}")]
    TooLong {
        /// Characters in the name.
        chars: usize,
    },
    /// A control character (newline, tab, escape, …), which could garble a terminal.
    #[error("a name cannot contain control characters such as newlines or tabs")]
    ControlCharacter,
}

/// Checks a contact (or own) name: 1–64 characters, no control characters. The daemon answers
/// [`super::AppError::InvalidName`] for a name this refuses.
pub fn check_name(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.chars().any(char::is_control) {
        return Err(NameError::ControlCharacter);
    }
    match name.chars().count() {
        chars if chars > MAX_NAME_CHARS => Err(NameError::TooLong { chars }),
        _ => Ok(()),
    }
}

/// A message id: 32 lowercase hexadecimal digits (16 bytes).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct MessageId(String);

/// A string that is not 32 lowercase hexadecimal digits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
#[error("a message id is 32 lowercase hexadecimal digits")]
pub struct InvalidMessageId;

impl MessageId {
    /// Hexadecimal digits in an id.
    pub const LEN: usize = 32;

    /// The id of the 16 bytes `bytes`.
    pub fn from_bytes(bytes: [u8; 16]) -> MessageId {
        MessageId(bytes.iter().map(|b| format!("{b:02x}")).collect())
    }

    /// The 16 bytes of the id.
    pub fn to_bytes(&self) -> [u8; 16] {
        let mut out = [0u8; 16];
        for (byte, pair) in out.iter_mut().zip(self.0.as_bytes().chunks_exact(2)) {
            *byte = (hex_value(pair[0]) << 4) | hex_value(pair[1]);
        }
        out
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn hex_value(digit: u8) -> u8 {
    match digit {
        b'0'..=b'9' => digit - b'0',
        b'a'..=b'f' => digit - b'a' + 10,
        // Unreachable for a checked id; zero keeps this total without a panic.
        _ => 0,
    }
}

impl FromStr for MessageId {
    type Err = InvalidMessageId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let valid = s.len() == MessageId::LEN && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if valid { Ok(MessageId(s.to_owned())) } else { Err(InvalidMessageId) }
    }
}

impl TryFrom<String> for MessageId {
    type Error = InvalidMessageId;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<MessageId> for String {
    fn from(id: MessageId) -> String {
        id.0
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MessageId({})", self.0)
    }
}

/// Where an outgoing message is: `queued` → `sent` or `stored` → `delivered` → `read`, or
/// `failed`.
///
/// `sent` and `stored` are the same step reached two ways: the message has left this node and is
/// held elsewhere, but the peer's device has not confirmed it end to end yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MessageStatus {
    /// Durably queued in the daemon's outbox.
    Queued,
    /// The peer's node acknowledged storing it.
    Sent,
    /// The peer's node was not reachable, and some of the peer's relays acknowledged storing it
    /// instead; how many of how many is a [`StoredCount`] next to the status.
    Stored,
    /// The peer's device sent an end-to-end receipt.
    Delivered,
    /// The peer read it.
    Read,
    /// The daemon gave up; the update carries a reason.
    Failed,
}

impl MessageStatus {
    /// Every status, in order of progress (`sent` and `stored` rank equal), `failed` last.
    pub const ALL: [MessageStatus; 6] = [
        MessageStatus::Queued,
        MessageStatus::Sent,
        MessageStatus::Stored,
        MessageStatus::Delivered,
        MessageStatus::Read,
        MessageStatus::Failed,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            MessageStatus::Queued => "queued",
            MessageStatus::Sent => "sent",
            MessageStatus::Stored => "stored",
            MessageStatus::Delivered => "delivered",
            MessageStatus::Read => "read",
            MessageStatus::Failed => "failed",
        }
    }

    /// Whether a message in this status has got at least as far as `target`: `delivered` has
    /// reached `sent`, `sent` and `stored` have reached each other (both mean "out of this node,
    /// not yet confirmed end to end"), `read` has reached everything but `failed`, and `failed`
    /// reaches only `failed`.
    pub fn has_reached(self, target: MessageStatus) -> bool {
        match (self, target) {
            (MessageStatus::Failed, target) => target == MessageStatus::Failed,
            (_, MessageStatus::Failed) => false,
            (status, target) => status.rank() >= target.rank(),
        }
    }

    /// Whether the status can never change again.
    pub fn is_final(self) -> bool {
        matches!(self, MessageStatus::Read | MessageStatus::Failed)
    }

    fn rank(self) -> u8 {
        match self {
            MessageStatus::Queued => 0,
            MessageStatus::Sent | MessageStatus::Stored => 1,
            MessageStatus::Delivered => 2,
            MessageStatus::Read => 3,
            MessageStatus::Failed => 4,
        }
    }
}

impl fmt::Display for MessageStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// A string that names no [`MessageStatus`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
#[error("a message status is one of queued, sent, stored, delivered, read, failed")]
pub struct InvalidStatus;

impl FromStr for MessageStatus {
    type Err = InvalidStatus;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        MessageStatus::ALL.into_iter().find(|status| status.as_str() == s).ok_or(InvalidStatus)
    }
}

/// How many of the contact's relays hold a `stored` message: `accepted` of `total`, shown as
/// `1/2`. The daemon reports `stored` only once at least one relay accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct StoredCount {
    /// Relays that acknowledged storing the message.
    pub accepted: u32,
    /// Relays the contact's invite lists.
    pub total: u32,
}

impl fmt::Display for StoredCount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.accepted, self.total)
    }
}

/// Whether a message was received or sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Direction {
    /// `"in"`: from the contact.
    #[serde(rename = "in")]
    In,
    /// `"out"`: to the contact.
    #[serde(rename = "out")]
    Out,
}

impl Direction {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::In => "in",
            Direction::Out => "out",
        }
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// A stored message, as `messages` lists it and the `message` notification carries it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageView {
    /// The message id.
    pub id: MessageId,
    /// Received or sent.
    pub direction: Direction,
    /// The contact's name.
    pub contact: String,
    /// When it was sent (outgoing) or received (incoming), in Unix milliseconds.
    pub time: Timestamp,
    /// The text.
    pub text: String,
    /// The status of an outgoing message; absent for incoming ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<MessageStatus>,
    /// How many of the contact's relays hold it; present only with [`MessageStatus::Stored`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stored: Option<StoredCount>,
    /// Outgoing only: why the message is not moving on (a relay's refusal while it waits, or why
    /// it failed), if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The sender's sequence number in the conversation, where known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// The file the message carries, if any (its `text` is then the caption).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<FileView>,
    /// For a message to a group: which group, who sent it, and how far our copies got.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<MessageGroup>,
}

/// What a group message adds to a [`MessageView`] (whose `contact` is then the group's name).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageGroup {
    /// The group's id, 32 hex digits.
    pub id: String,
    /// The group's name.
    pub name: String,
    /// Incoming only: the sender (our contact's name, else the name the group gave them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// Outgoing only: how many members' devices have it (`delivered` or `read`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivered: Option<u32>,
    /// Outgoing only: how many members it was sent to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub members: Option<u32>,
    /// Outgoing only: how many members read it (of those with read receipts on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read: Option<u32>,
}

/// A member's role in a group.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GroupRole {
    /// Sends and receives.
    Member,
    /// Also adds and removes members and renames the group.
    Admin,
}

/// One member of a group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupMemberView {
    /// How to call them: our contact's name, else the name the group gave them; the owner
    /// without a contact here is "owner".
    pub name: String,
    /// Our contact with their identity, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contact: Option<String>,
    /// Their identity's fingerprint.
    pub fingerprint: String,
    /// Their role.
    pub role: GroupRole,
    /// Whether they own the group (created it; always an admin).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub owner: bool,
    /// Whether it is us.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub me: bool,
}

/// A group: the result of `group.show` and of the changes, and an item of `group.list`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupView {
    /// The group's id, 32 hex digits.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Our role; absent when we are not (or no longer) a member.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<GroupRole>,
    /// Its members, the owner first.
    pub members: Vec<GroupMemberView>,
    /// Unread incoming messages of the group.
    #[serde(default)]
    pub unread: u32,
    /// `group.show` only: per sender, the ranges of their counts that never arrived here
    /// (between the first and the last that did); absent when none is missing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub missing: Vec<GroupGap>,
}

/// Messages of one member that never arrived (see [`GroupView::missing`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupGap {
    /// The member, named as in `members`.
    pub member: String,
    /// Ranges `[from, to]` of their message counts, inclusive.
    pub ranges: Vec<[u64; 2]>,
}

/// The result of `group.list`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupListResult {
    /// Every group this node keeps, by name.
    pub groups: Vec<GroupView>,
}

/// The params of `group.create`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupCreateParams {
    /// The group's name.
    pub name: String,
    /// Contacts to add at once.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<String>,
}

/// The params of `group.show` and `group.leave`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupParams {
    /// The group: its name, or at least 4 hex digits of its id.
    pub group: String,
}

/// The params of `group.add`, `group.remove` and `group.promote`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupMemberParams {
    /// The group, as for `group.show`.
    pub group: String,
    /// A contact's name; for `group.remove` and `group.promote` also the name the group gave a
    /// member.
    pub member: String,
}

/// The params of `group.rename`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupRenameParams {
    /// The group, as for `group.show`.
    pub group: String,
    /// Its new name.
    pub name: String,
}

/// The params of `group.send`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupSendParams {
    /// The group, as for `group.show`.
    pub group: String,
    /// The text, at most 15 KiB.
    pub text: String,
}

/// A file a message carries, as listed with the message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileView {
    /// Its name (safe as one file name in a directory).
    pub name: String,
    /// Its media type, as the sender gave it.
    pub media_type: String,
    /// Its length in bytes.
    pub size: u64,
    /// Whether its bytes are on this device (`message.file` gets them).
    pub here: bool,
    /// Why it will not come, for a received file whose download was given up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed: Option<String>,
}

/// The params of `send.file`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendFileParams {
    /// The contact's name.
    pub to: String,
    /// The file's name: 1 to 255 bytes, no control characters, `/` or `\\`, not `.` or `..`.
    pub name: String,
    /// Its media type, `type/subtype` (`application/octet-stream` when unknown).
    pub media_type: String,
    /// Its bytes, in base64 (RFC 4648, with padding), for a file of at most 48 KiB; or empty,
    /// with `path` naming the file instead.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub data: String,
    /// The file's absolute path on this machine, for the daemon to read (any size up to
    /// 25 MiB); instead of `data`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// A text to go with it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub caption: String,
}

/// The params of `message.file`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MessageFileParams {
    /// The message.
    pub id: MessageId,
    /// The first byte of the file wanted (default 0).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub offset: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// The result of `message.file`: a message's file, with its bytes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageFileResult {
    /// Its name.
    pub name: String,
    /// Its media type.
    pub media_type: String,
    /// Its length in bytes.
    pub size: u64,
    /// Its bytes from the request's `offset` on, at most 1 MiB of them, in base64 (RFC 4648,
    /// with padding): ask again from `offset` + their length until `size`.
    pub data: String,
}

/// The most file bytes one `message.file` answer carries.
pub const MAX_FILE_SLICE: usize = 1024 * 1024;

/// The params of a method that takes none: `{}` (absent and `null` are accepted too).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoParams {}

/// The result of `status`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusResult {
    /// The node's libp2p peer id.
    pub peer_id: String,
    /// The multiaddrs it listens on.
    pub listen: Vec<String>,
    /// Names of the contacts connected right now.
    pub connected: Vec<String>,
    /// Outgoing messages not yet `sent`.
    pub outbox: u64,
    /// The node's own identity fingerprint.
    pub fingerprint: String,
    /// The name the user gave themselves at `init` (the one invites carry), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// The result of `invite`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InviteResult {
    /// A fresh invite, `MERPATI1:…`, one line.
    pub invite: String,
}

/// The params of `contact.add`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContactAddParams {
    /// The invite text the contact gave.
    pub invite: String,
    /// The local name to give the contact.
    pub name: String,
}

/// The result of `contact.add`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContactAddResult {
    /// The contact's name.
    pub name: String,
    /// The contact's identity fingerprint.
    pub fingerprint: String,
    /// The safety number to compare with the contact out of band.
    pub safety_number: String,
}

/// One contact in `contact.list`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContactSummary {
    /// The contact's name.
    pub name: String,
    /// The contact's identity fingerprint.
    pub fingerprint: String,
    /// Whether the contact's node is connected right now.
    pub connected: bool,
    /// When something from the contact last arrived (ms since the Unix epoch, to the minute);
    /// absent if nothing ever did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_heard: Option<u64>,
    /// How many of the contact's messages have arrived and not been read.
    #[serde(default)]
    pub unread: u64,
    /// When the contact's node was last restored from a backup (ms since the Unix epoch, their
    /// clock); absent if it never was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restored_at: Option<u64>,
}

/// The result of `contact.list`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContactListResult {
    /// Every contact.
    pub contacts: Vec<ContactSummary>,
}

/// The params of `contact.show`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContactShowParams {
    /// The contact's name.
    pub name: String,
}

/// The result of `contact.show`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContactShowResult {
    /// The contact's name.
    pub name: String,
    /// The contact's identity fingerprint.
    pub fingerprint: String,
    /// The safety number to compare with the contact out of band.
    pub safety_number: String,
    /// The contact's libp2p peer id.
    pub peer_id: String,
    /// The contact's known multiaddrs.
    pub addrs: Vec<String>,
    /// Gaps in what the contact sent us: inclusive ranges of their sequence numbers that never
    /// arrived (withheld, lost, or still on their way). Empty when nothing is missing.
    #[serde(default)]
    pub missing: Vec<[u64; 2]>,
    /// When something from the contact last arrived (ms since the Unix epoch, to the minute);
    /// absent if nothing ever did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_heard: Option<u64>,
    /// When the contact's node was last restored from a backup (ms since the Unix epoch, their
    /// clock); absent if it never was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restored_at: Option<u64>,
}

/// The params of `backup`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupParams {
    /// Where to write the backup: an absolute path on the daemon's machine.
    pub path: String,
    /// The passphrase it is encrypted to (at least 8 characters).
    pub passphrase: String,
}

impl fmt::Debug for BackupParams {
    // The passphrase is a secret: never in a log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BackupParams").field("path", &self.path).finish_non_exhaustive()
    }
}

/// The result of `backup`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupResult {
    /// Where the backup is.
    pub path: String,
    /// How many contacts it holds.
    pub contacts: u64,
    /// How many messages it holds.
    pub messages: u64,
    /// How many files its messages carry.
    pub files: u64,
    /// Its size in bytes.
    pub bytes: u64,
}

/// What `merpatid restore` prints (one JSON line) once a backup is restored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreResult {
    /// The identity's fingerprint.
    pub fingerprint: String,
    /// The name the identity goes by, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// When the backup was made (ms since the Unix epoch).
    pub made_at: u64,
    /// How many contacts came back.
    pub contacts: u64,
    /// How many messages came back.
    pub messages: u64,
    /// How many files their messages carry.
    pub files: u64,
    /// The contacts told of the restore in a new session, once the daemon runs.
    pub told: Vec<String>,
    /// The contacts no new session could be started with, and why.
    pub unreachable: Vec<Unreachable>,
}

/// A contact a restored node cannot write to yet.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unreachable {
    /// The contact.
    pub contact: String,
    /// Why.
    pub why: String,
}

/// The payload of the `restored` notification: a contact's node was restored from a backup and
/// the conversation moved to the new session it started.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoredNotice {
    /// The contact.
    pub contact: String,
    /// When their node was restored (ms since the Unix epoch, their clock).
    pub at: u64,
}

/// The params of `messages.read`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MessagesReadParams {
    /// The contact whose messages were read.
    pub with: String,
}

/// The result of `messages.read`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessagesReadResult {
    /// How many messages were newly marked read.
    pub count: u32,
}

/// The params of `send`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendParams {
    /// The contact's name.
    pub to: String,
    /// The text.
    pub text: String,
}

/// The result of `send`, returned once the message is durably queued.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendResult {
    /// The new message's id.
    pub id: MessageId,
}

/// The params of `message.status`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MessageStatusParams {
    /// The outgoing message's id.
    pub id: MessageId,
}

/// An outgoing message's status: the result of `message.status` and the payload of the
/// `status` notification.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusUpdate {
    /// The message id.
    pub id: MessageId,
    /// Its status.
    pub status: MessageStatus,
    /// Why it failed; present only with `failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// How many of the contact's relays hold it; present only with [`MessageStatus::Stored`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stored: Option<StoredCount>,
}

/// How far a file's transfer has come: the payload of the `transfer` notification.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferUpdate {
    /// The file's message.
    pub id: MessageId,
    /// `up` (ours, to our relays: the furthest relay counts) or `down` (theirs, to this device).
    pub direction: TransferDirection,
    /// Bytes of the file done.
    pub done: u64,
    /// The file's size in bytes.
    pub size: u64,
    /// Why it does not move now, when a relay paces it (its share of the relay is taken until
    /// recipients fetch their files, or this node holds no reservation there yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting: Option<String>,
}

/// Which way a transfer goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TransferDirection {
    /// Our file, to our relays.
    Up,
    /// Their file, to this device.
    Down,
}

/// The params of `messages`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MessagesParams {
    /// Only the conversation with this contact; all conversations when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub with: Option<String>,
    /// Only this group's messages (its name or id prefix); not with `with`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// At most this many of the latest messages ([`DEFAULT_MESSAGES_LIMIT`] when absent, at
    /// most [`MAX_MESSAGES_LIMIT`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    /// Only messages older than this one: the page before it (paging back through history).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<MessageId>,
}

/// The params of `messages.search`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchParams {
    /// The text to look for, whatever its case; 1 to 1 024 bytes.
    pub text: String,
    /// Only the conversation with this contact; all conversations when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub with: Option<String>,
    /// At most this many of the newest matches (as for `messages`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

/// The longest text `messages.search` looks for, in bytes.
pub const MAX_SEARCH_LEN: usize = 1024;

impl SearchParams {
    /// The limit to apply: the default when absent, capped at [`MAX_MESSAGES_LIMIT`].
    pub fn effective_limit(&self) -> u32 {
        self.limit.unwrap_or(DEFAULT_MESSAGES_LIMIT).min(MAX_MESSAGES_LIMIT)
    }
}

impl MessagesParams {
    /// The limit to apply: the default when absent, capped at [`MAX_MESSAGES_LIMIT`].
    pub fn effective_limit(&self) -> u32 {
        self.limit.unwrap_or(DEFAULT_MESSAGES_LIMIT).min(MAX_MESSAGES_LIMIT)
    }
}

/// The result of `messages`: the latest messages, oldest first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessagesResult {
    /// The messages.
    pub messages: Vec<MessageView>,
    /// Whether the answer stopped short of its `limit` to fit one line ([`super::MAX_MESSAGES_BYTES`]
    /// of long texts): there may be older messages even though fewer than `limit` came; page on
    /// with `before`. Absent when false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cut: bool,
}

/// The result of `subscribe`: `{}`. Notifications follow on the same connection.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscribeResult {}

/// One relay this node uses, as `relay.list` (and `relay.add`, `relay.remove`) report it.
///
/// A relay keeps messages for this node while it is offline and lets contacts reach it from
/// behind NAT; it only ever sees ciphertext.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayView {
    /// The relay's multiaddr, ending in `/p2p/<peer id>`.
    pub addr: String,
    /// The relay's libp2p peer id.
    pub peer_id: String,
    /// Whether this node is connected to the relay right now.
    pub connected: bool,
    /// Whether this node holds a reservation on the relay, so contacts can reach it through it.
    pub reserved: bool,
}

/// The params of `relay.add`. Adding a relay whose peer id is already listed is not an error:
/// the list is answered as it is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelayAddParams {
    /// The relay's multiaddr, ending in `/p2p/<peer id>`; not a `p2p-circuit` address.
    pub addr: String,
    /// Add it without checking it now (the daemon otherwise connects and checks that it keeps
    /// mailboxes and relays connections). Absent: false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub offline: bool,
}

/// The params of `relay.remove`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelayRemoveParams {
    /// The relay to drop: its multiaddr as listed, or its peer id.
    pub relay: String,
}

/// The result of `relay.add`, `relay.list` and `relay.remove`: every relay, after the change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayListResult {
    /// The relays, at most [`MAX_RELAYS`].
    pub relays: Vec<RelayView>,
}

/// A contact request: a first contact from someone not in the contacts, held until the user
/// accepts, rejects or blocks it. Nothing was answered end to end meanwhile.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestView {
    /// The request's id: the first 16 hex digits of the sender's fingerprint.
    pub id: String,
    /// The sender's identity fingerprint (compare the safety number once accepted).
    pub fingerprint: String,
    /// The name the sender gives themselves: **unverified**, anyone can claim any name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suggested_name: Option<String>,
    /// The start of their first text (at most 200 characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview: Option<String>,
    /// How many envelopes (texts and control messages) the request holds.
    pub envelopes: u32,
    /// How many more arrived and were not kept (a request holds at most 16, 256 KiB).
    pub dropped: u32,
    /// When the first envelope arrived (ms since the epoch).
    pub first_at: Timestamp,
    /// When the last envelope arrived (ms since the epoch).
    pub last_at: Timestamp,
}

/// The result of `requests`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestListResult {
    /// Every request, oldest first.
    pub requests: Vec<RequestView>,
    /// How many requests were ever dropped because the queue was full (the oldest goes).
    pub dropped: u64,
}

/// The params of `requests.accept`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestAcceptParams {
    /// The request's id.
    pub id: String,
    /// The name to give the new contact (the suggested name is not used unless given here).
    pub name: String,
}

/// The result of `requests.accept`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestAcceptResult {
    /// The new contact's name.
    pub name: String,
    /// Their identity fingerprint.
    pub fingerprint: String,
    /// The safety number to compare with them out of band.
    pub safety_number: String,
    /// How many of the request's envelopes opened and were stored.
    pub opened: u32,
}

/// The params of `requests.reject`, `requests.block` and `contact.unblock`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestIdParams {
    /// The request's (or blocked sender's) id: 16 hex digits.
    pub id: String,
}

/// The params of `contact.rename`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContactRenameParams {
    /// The contact's current name.
    pub name: String,
    /// The new name.
    pub new_name: String,
}

/// The result of `messages.delete`: which message went, from which conversation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageDeleteResult {
    /// The message id.
    pub id: MessageId,
    /// The contact's name.
    pub contact: String,
}

/// The result of `contact.rename`, `contact.remove`, `contact.clear`: the contact, as it was
/// named after.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContactNameResult {
    /// The contact's name (the new one after a rename).
    pub name: String,
    /// The contact's identity fingerprint.
    pub fingerprint: String,
}

/// Someone blocked: their envelopes are dropped unread and unanswered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockedView {
    /// Their id (the first 16 hex digits of the fingerprint), for `contact.unblock`.
    pub id: String,
    /// Their identity fingerprint.
    pub fingerprint: String,
    /// The contact's name, or the request's suggested name, when they were blocked.
    pub label: String,
    /// When they were blocked (ms since the epoch).
    pub since: Timestamp,
}

/// The result of `contact.blocked`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockedListResult {
    /// Everyone blocked.
    pub blocked: Vec<BlockedView>,
}

/// The result of `requests.reject`: `{}`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejectResult {}
