//! The store's rules, written once over a small key-value interface that both implementations
//! provide: which trees exist, what is stored under which key, what each [`Change`] does, and how
//! reads find things. [`super::SledStore`] runs it inside a sled transaction and
//! [`super::MemoryStore`] over `BTreeMap`s, so the two cannot disagree on semantics.
//!
//! Trees and their keys (all values start with the format byte, see `codec`):
//!
//! | tree | key | value |
//! |---|---|---|
//! | `meta` | `next-order`, `outbox-len` | counters (u64) |
//! | `meta` | `relays` | the user's own relays (list of binary multiaddrs); absent = none |
//! | `profile` | `profile` | sealed [`Profile`] |
//! | `contacts` | name | [`Contact`] |
//! | `sessions` | session id | sealed [`SessionRecord`] |
//! | `mailboxes` | mailbox id | session id |
//! | `open-digests` | digest | session id |
//! | `messages` | message id | [`StoredMessage`], its text empty (schema 3; the text is in `texts`) |
//! | `texts` | message id | the text, sealed under the conversation's content key (see `texts`) |
//! | `content-keys` | contact name | sealed content key of the conversation |
//! | `unread` | name length ‖ name ‖ order | message id (incoming messages not yet read; schema 4) |
//! | `timeline` | order (u64 BE) | message id |
//! | `conversations` | name length ‖ name ‖ order | message id |
//! | `outbox` | message id | [`OutboxEntry`] |
//! | `outbox-due` | next attempt (u64 BE) ‖ message id | nothing |
//! | `outbox-order` | name length ‖ name ‖ created at ‖ seq ‖ message id | next attempt (u64) |
//! | `outbox-heads` | next attempt (u64 BE) ‖ message id | contact name |
//! | `awaiting-receipt` | deadline (u64 BE) ‖ message id | nothing |
//! | `announced` | session id ‖ last day (u64 BE) | nothing |
//! | `requests` | request id | sealed [`ContactRequest`](super::ContactRequest) (schema 5) |
//! | `request-drops` | request id | envelopes the request did not keep (u32) |
//! | `dismissed` | first-contact open digest | until (u64) |
//! | `dismissed-by-time` | until (u64 BE) ‖ digest | nothing |
//! | `blocked` | identity key | [`Blocked`](super::Blocked) |
//! | `fragments` | name length ‖ name ‖ group (16) ‖ index (u16 BE) | sealed [`StoredFragment`](super::StoredFragment): a piece of an incomplete long text |
//! | `outbox-parts` | outbox entry id | [`PartOf`](super::PartOf): the long text the entry carries a piece of |
//! | `files` | message id ‖ 0 / ‖ 1 / ‖ 2 | sealed [`FileInfo`](super::FileInfo) / the file's bytes / its [`Transfer`](super::Transfer) |
//! | `groups` | group id | sealed [`GroupRecord`](super::GroupRecord): the membership log |
//! | `group-messages` | group-wide message id | [`GroupMessageInfo`](super::GroupMessageInfo) |
//! | `group-copies` | a copy's frame id | the group-wide message id it is a copy of |
//! | `meta` | `requests-dropped`, `dismissed-len` | counters (u64) |
//! | `meta` | `shred-pending` | a deletion awaits the storage key's rotation (bool) |
//! | `meta` | `swept/` ‖ relay peer id | the last day our closed mailboxes were swept there (u64) |
//!
//! The outbox's indexes (schema 2) keep delivery from ever reading the whole outbox:
//! `outbox-order` sorts each contact's entries in delivery order, so its first entry under the
//! contact's prefix is the one to deliver next (the contact's *head*), and `outbox-heads` holds
//! exactly the heads, by next attempt, so the due deliveries are a scan that stops at the first
//! head not yet due. Every change to an outbox entry updates both in the same batch, recomputing
//! the heads of the contacts it touches (a few point reads and two prefix lookups). An index entry
//! that points at no outbox entry (only damage can leave one) is skipped by every read and dropped
//! by the next write that meets it, so it can neither hide a queue nor stop one.

use serde::Serialize;
use serde::de::DeserializeOwned;
use unicode_normalization::UnicodeNormalization;
use zeroize::Zeroizing;

use merpati_proto::frame::MessageId;
use merpati_proto::mailbox::MailboxId;
use merpati_proto::session::SessionId;

use merpati_proto::Timestamp;

use super::codec::{
    self, aad, check_name, conversation_key, conversation_prefix, due_key, id_of_due_key, id_of_order_key,
    order_key, time_of_due_key,
};
use super::texts::ContentKey;
use super::{
    Blocked, Change, Contact, ContactRequest, ContactV1, ContactV2, FileInfo, OutboxEntry, OutboxHead,
    PartOf, Profile, RequestId, SessionRecord, StoreError, StoredFragment, StoredMessage, Transfer,
};
use merpati_proto::identity::IdentityPublic;

/// The trees (sled's name for independent keyspaces) of the layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Tree {
    Meta,
    Profile,
    Contacts,
    Sessions,
    Mailboxes,
    OpenDigests,
    Messages,
    Timeline,
    Conversations,
    Outbox,
    OutboxDue,
    OutboxOrder,
    OutboxHeads,
    AwaitingReceipt,
    Announced,
    Requests,
    Blocked,
    RequestDrops,
    Dismissed,
    DismissedByTime,
    Texts,
    ContentKeys,
    Unread,
    Fragments,
    OutboxParts,
    Files,
    Groups,
    GroupMessages,
    GroupCopies,
}

impl Tree {
    /// Every tree, in index order.
    pub(crate) const ALL: [Tree; 29] = [
        Tree::Meta,
        Tree::Profile,
        Tree::Contacts,
        Tree::Sessions,
        Tree::Mailboxes,
        Tree::OpenDigests,
        Tree::Messages,
        Tree::Timeline,
        Tree::Conversations,
        Tree::Outbox,
        Tree::OutboxDue,
        Tree::OutboxOrder,
        Tree::OutboxHeads,
        Tree::AwaitingReceipt,
        Tree::Announced,
        Tree::Requests,
        Tree::Blocked,
        Tree::RequestDrops,
        Tree::Dismissed,
        Tree::DismissedByTime,
        Tree::Texts,
        Tree::ContentKeys,
        Tree::Unread,
        Tree::Fragments,
        Tree::OutboxParts,
        Tree::Files,
        Tree::Groups,
        Tree::GroupMessages,
        Tree::GroupCopies,
    ];

    /// The tree's position in [`Tree::ALL`].
    pub(crate) fn index(self) -> usize {
        self as usize
    }

    /// The tree's name on disk. Never change one: it is also bound into sealed records.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Tree::Meta => "meta",
            Tree::Profile => "profile",
            Tree::Contacts => "contacts",
            Tree::Sessions => "sessions",
            Tree::Mailboxes => "mailboxes",
            Tree::OpenDigests => "open-digests",
            Tree::Messages => "messages",
            Tree::Timeline => "timeline",
            Tree::Conversations => "conversations",
            Tree::Outbox => "outbox",
            Tree::OutboxDue => "outbox-due",
            Tree::OutboxOrder => "outbox-order",
            Tree::OutboxHeads => "outbox-heads",
            Tree::AwaitingReceipt => "awaiting-receipt",
            Tree::Announced => "announced",
            Tree::Requests => "requests",
            Tree::Blocked => "blocked",
            Tree::RequestDrops => "request-drops",
            Tree::Dismissed => "dismissed",
            Tree::DismissedByTime => "dismissed-by-time",
            Tree::Texts => "texts",
            Tree::ContentKeys => "content-keys",
            Tree::Unread => "unread",
            Tree::Fragments => "fragments",
            Tree::OutboxParts => "outbox-parts",
            Tree::Files => "files",
            Tree::Groups => "groups",
            Tree::GroupMessages => "group-messages",
            Tree::GroupCopies => "group-copies",
        }
    }
}

const PROFILE_KEY: &[u8] = b"profile";
const NEXT_ORDER_KEY: &[u8] = b"next-order";
const OUTBOX_LEN_KEY: &[u8] = b"outbox-len";
/// In `meta` rather than a tree of its own: one small value, and a database written before relays
/// existed simply lacks the key, which reads as an empty list.
const RELAYS_KEY: &[u8] = b"relays";
const REQUESTS_DROPPED_KEY: &[u8] = b"requests-dropped";
const DISMISSED_LEN_KEY: &[u8] = b"dismissed-len";
/// Set by a change that deleted sealed records; cleared by the storage key rotation that
/// makes their old copies unreadable (see [`shred_pending`]).
pub(crate) const SHRED_PENDING_KEY: &[u8] = b"shred-pending";

/// Turns the encoding of a secret record into sealed bytes and back. The sled store seals with
/// its keyring; the memory store keeps records as they are.
pub(crate) trait Sealer: Sync {
    /// Seals `plaintext`, binding `aad`.
    fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, StoreError>;
    /// Opens sealed bytes; `what` names the record in errors.
    fn open(&self, what: &'static str, aad: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, StoreError>;
}

/// Point reads and writes inside one transaction; reads see the transaction's own writes.
pub(crate) trait Tx {
    /// The transaction's error: a store error, or whatever the backend needs to retry or abort.
    type Error: From<StoreError>;
    fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, Self::Error>;
    fn insert(&self, tree: Tree, key: &[u8], value: Vec<u8>) -> Result<(), Self::Error>;
    fn remove(&self, tree: Tree, key: &[u8]) -> Result<(), Self::Error>;
    /// The entry with the smallest key starting with `prefix`.
    fn first(&self, tree: Tree, prefix: &[u8]) -> Result<Option<Entry>, Self::Error>;
    /// Every entry whose key starts with `prefix`, in key order.
    fn entries(&self, tree: Tree, prefix: &[u8]) -> Result<Vec<Entry>, Self::Error>;
}

/// A stored `(key, value)` pair.
pub(crate) type Entry = (Vec<u8>, Vec<u8>);

/// A visitor of `(key, value)` entries: returns whether to go on.
pub(crate) type Visit<'a> = dyn FnMut(&[u8], &[u8]) -> Result<bool, StoreError> + 'a;

/// Reads outside transactions.
pub(crate) trait View {
    fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    /// Visits the entries whose key starts with `prefix`, in key order or (`rev`) reversed,
    /// until `visit` returns `false`.
    fn scan(&self, tree: Tree, prefix: &[u8], rev: bool, visit: &mut Visit<'_>) -> Result<(), StoreError>;
    /// Visits the entries whose key starts with `prefix` and sorts below `below`, from the
    /// largest down, until `visit` returns `false`.
    fn scan_below(
        &self,
        tree: Tree,
        prefix: &[u8],
        below: &[u8],
        visit: &mut Visit<'_>,
    ) -> Result<(), StoreError>;
}

/// Applies a batch inside a transaction. An error aborts the whole batch.
pub(crate) fn apply<T: Tx>(tx: &T, sealer: &dyn Sealer, changes: &[Change]) -> Result<(), T::Error> {
    for change in changes {
        match change {
            Change::PutProfile(profile) => {
                let value = seal(sealer, Tree::Profile, PROFILE_KEY, "profile", profile)?;
                tx.insert(Tree::Profile, PROFILE_KEY, value)?;
            }
            Change::PutContact(contact) => put_contact(tx, contact)?,
            Change::AddContact(contact) => {
                if tx.get(Tree::Contacts, contact.name.as_bytes())?.is_some() {
                    return Err(StoreError::Conflict { name: contact.name.clone() }.into());
                }
                put_contact(tx, contact)?;
            }
            Change::PutSession(record) => {
                check_name(&record.contact)?;
                let key = &record.id.0;
                let value = seal(sealer, Tree::Sessions, key, "session record", record)?;
                tx.insert(Tree::Sessions, key, value)?;
            }
            Change::RemoveSession(id) => tx.remove(Tree::Sessions, &id.0)?,
            Change::IndexMailbox { mailbox, session } => {
                tx.insert(Tree::Mailboxes, &mailbox.0, codec::encode("mailbox index", session)?)?;
            }
            Change::UnindexMailbox(mailbox) => tx.remove(Tree::Mailboxes, &mailbox.0)?,
            Change::IndexOpenDigest { digest, session } => {
                tx.insert(Tree::OpenDigests, digest, codec::encode("open digest index", session)?)?;
            }
            Change::UnindexOpenDigest(digest) => tx.remove(Tree::OpenDigests, digest)?,
            Change::PutMessage(message) => put_message(tx, sealer, message)?,
            Change::SetStatus { id, status, reason } => set_status(tx, id, *status, reason)?,
            Change::PutOutbox(entry) => put_outbox(tx, entry)?,
            Change::RemoveOutbox(id) => remove_outbox(tx, id)?,
            Change::AwaitReceipt { id, until } => {
                tx.insert(
                    Tree::AwaitingReceipt,
                    &due_key(until.0, &id.0),
                    codec::encode("receipt deadline", &())?,
                )?;
            }
            Change::StopAwaiting { id, until } => {
                tx.remove(Tree::AwaitingReceipt, &due_key(until.0, &id.0))?
            }
            Change::NoteAnnouncement { session, last_day } => {
                tx.insert(
                    Tree::Announced,
                    &announced_key(session, *last_day),
                    codec::encode("announcement", &())?,
                )?;
            }
            Change::ForgetAnnouncement { session, last_day } => {
                tx.remove(Tree::Announced, &announced_key(session, *last_day))?;
            }
            Change::SetRelays(relays) => {
                let relays: Vec<&serde_bytes::Bytes> =
                    relays.iter().map(|r| serde_bytes::Bytes::new(r)).collect();
                tx.insert(Tree::Meta, RELAYS_KEY, codec::encode("relay list", &relays)?)?;
            }
            Change::SetReason { id, reason } => {
                let Some(bytes) = tx.get(Tree::Messages, &id.0)? else { continue };
                let mut message: StoredMessage = codec::decode("message", &bytes)?;
                if message.status != super::Status::Queued || message.reason == *reason {
                    continue;
                }
                message.reason.clone_from(reason);
                tx.insert(Tree::Messages, &id.0, codec::encode("message", &message)?)?;
            }
            Change::PutRequest(request) => {
                let key = &request.id.0;
                tx.insert(
                    Tree::Requests,
                    key,
                    seal(sealer, Tree::Requests, key, "contact request", request)?,
                )?
            }
            Change::RemoveRequest(id) => {
                tx.remove(Tree::Requests, &id.0)?;
                tx.remove(Tree::RequestDrops, &id.0)?;
                // Its preview is the first words of a message.
                note_shred_pending(tx)?;
            }
            Change::CountRefusedEnvelope(id) => {
                let count: u32 = match tx.get(Tree::RequestDrops, &id.0)? {
                    Some(bytes) => codec::decode("request drops", &bytes)?,
                    None => 0,
                };
                tx.insert(
                    Tree::RequestDrops,
                    &id.0,
                    codec::encode("request drops", &count.saturating_add(1))?,
                )?;
            }
            Change::Dismiss { digest, until } => {
                match tx.get(Tree::Dismissed, digest)? {
                    Some(bytes) => {
                        let old: u64 = codec::decode("dismissal", &bytes)?;
                        tx.remove(Tree::DismissedByTime, &dismissal_key(old, digest))?;
                    }
                    None => add_to_counter(tx, DISMISSED_LEN_KEY, 1)?,
                }
                tx.insert(Tree::Dismissed, digest, codec::encode("dismissal", &until.0)?)?;
                tx.insert(
                    Tree::DismissedByTime,
                    &dismissal_key(until.0, digest),
                    codec::encode("dismissal", &())?,
                )?;
            }
            Change::PurgeDismissed { now, limit } => {
                let mut left = *limit;
                forget_dismissals_while(tx, |until, _| {
                    let go = left > 0 && until <= now.0;
                    left = left.saturating_sub(1);
                    go
                })?;
            }
            Change::TrimDismissed { keep } => forget_dismissals_while(tx, |_, len| len > *keep as u64)?,
            Change::NoteRequestsDropped(n) => {
                add_to_counter(tx, REQUESTS_DROPPED_KEY, i64::try_from(*n).unwrap_or(i64::MAX))?
            }
            Change::Block(blocked) => tx.insert(
                Tree::Blocked,
                blocked.identity.as_bytes(),
                codec::encode("blocked identity", blocked)?,
            )?,
            Change::Unblock(identity) => tx.remove(Tree::Blocked, identity.as_bytes())?,
            Change::RemoveContact(name) => {
                remove_contact(tx, name)?;
                note_shred_pending(tx)?;
            }
            Change::RenameContact { from, to } => rename_contact(tx, sealer, from, to)?,
            Change::DeleteMessage(id) => {
                delete_message(tx, sealer, id)?;
                note_shred_pending(tx)?;
            }
            Change::NoteSwept { relay, through } => {
                tx.insert(Tree::Meta, &swept_key(relay), codec::encode("sweep progress", through)?)?
            }
            Change::ClearConversation(name) => {
                for (key, value) in tx.entries(Tree::Conversations, &conversation_prefix(name))? {
                    remove_message(tx, &key, &codec::decode("message index", &value)?)?;
                }
                tx.remove(Tree::ContentKeys, name.as_bytes())?;
                // Pieces of a long text not yet whole are part of the conversation too.
                remove_fragments(tx, &conversation_prefix(name))?;
                note_shred_pending(tx)?;
            }
            Change::PutFragment(fragment) => {
                check_name(&fragment.contact)?;
                let key = fragment_key(&fragment.contact, &fragment.group, fragment.index);
                tx.insert(Tree::Fragments, &key, seal(sealer, Tree::Fragments, &key, "fragment", fragment)?)?;
            }
            Change::RemoveFragments { contact, group } => {
                remove_fragments(tx, &fragment_group_prefix(contact, group))?;
                note_shred_pending(tx)?;
            }
            Change::PutFile { id, info, data } => {
                let key = file_key(id, FILE_INFO);
                tx.insert(Tree::Files, &key, seal(sealer, Tree::Files, &key, "file", info)?)?;
                if let Some(data) = data {
                    let key = file_key(id, FILE_DATA);
                    let bytes = serde_bytes::Bytes::new(data);
                    tx.insert(Tree::Files, &key, seal(sealer, Tree::Files, &key, "file", &bytes)?)?;
                }
            }
            Change::PutTransfer { id, transfer } => {
                let key = file_key(id, FILE_TRANSFER);
                tx.insert(Tree::Files, &key, seal(sealer, Tree::Files, &key, "file", transfer)?)?;
            }
            Change::NotePartOf { id, part_of } => {
                tx.insert(Tree::OutboxParts, &id.0, codec::encode("outbox part", part_of)?)?
            }
            Change::PutGroup(group) => {
                tx.insert(Tree::Groups, &group.id, seal(sealer, Tree::Groups, &group.id, "group", group)?)?
            }
            Change::PutGroupMessage(info) => {
                if tx.get(Tree::GroupMessages, &info.id.0)?.is_none() {
                    tx.insert(Tree::GroupMessages, &info.id.0, codec::encode("group message", info)?)?;
                    // Only copies of our own messages, queued when written, are confirmed by
                    // receipts: theirs are indexed (a copy that failed before it was sealed has
                    // no frame), never over an id already indexed.
                    for copy in info.copies.iter().filter(|c| c.status == super::Status::Queued) {
                        if tx.get(Tree::GroupCopies, &copy.copy.0)?.is_none() {
                            tx.insert(
                                Tree::GroupCopies,
                                &copy.copy.0,
                                codec::encode("group copy", &info.id)?,
                            )?;
                        }
                    }
                }
            }
            Change::SetCopyStatus { copy, status, reason } => set_copy_status(tx, copy, *status, reason)?,
        }
    }
    Ok(())
}

/// See [`Change::SetStatus`].
fn set_status<T: Tx>(
    tx: &T,
    id: &MessageId,
    status: super::Status,
    reason: &Option<String>,
) -> Result<(), T::Error> {
    let Some(bytes) = tx.get(Tree::Messages, &id.0)? else { return Ok(()) };
    let mut message: StoredMessage = codec::decode("message", &bytes)?;
    // Whatever the record says, a message marked read leaves the unread index.
    if status == super::Status::Read {
        tx.remove(Tree::Unread, &conversation_key(&message.contact, message.order))?;
    }
    if !message.status.advances_to(status) {
        return Ok(());
    }
    message.status = status;
    message.reason.clone_from(reason);
    tx.insert(Tree::Messages, &id.0, codec::encode("message", &message)?)
}

/// See [`Change::SetCopyStatus`]. The group message itself then stands where its least advanced
/// copy stands (failed copies aside; failed when all failed).
fn set_copy_status<T: Tx>(
    tx: &T,
    copy: &MessageId,
    status: super::Status,
    reason: &Option<String>,
) -> Result<(), T::Error> {
    let Some(bytes) = tx.get(Tree::GroupCopies, &copy.0)? else { return Ok(()) };
    let id: MessageId = codec::decode("group copy", &bytes)?;
    let Some(bytes) = tx.get(Tree::GroupMessages, &id.0)? else { return Ok(()) };
    let mut info: super::GroupMessageInfo = codec::decode("group message", &bytes)?;
    let Some(found) = info.copies.iter_mut().find(|c| c.copy == *copy) else { return Ok(()) };
    if !found.status.advances_to(status) {
        return Ok(());
    }
    found.status = status;
    found.reason = reason.clone();
    tx.insert(Tree::GroupMessages, &id.0, codec::encode("group message", &info)?)?;
    let (whole, why) = group_status(&info);
    set_status(tx, &id, whole, &why)
}

/// Where a group message of ours stands as a whole: at its least advanced copy that has not
/// failed; failed, with the first reason, when every copy failed.
pub(crate) fn group_status(info: &super::GroupMessageInfo) -> (super::Status, Option<String>) {
    use super::Status;
    let live = info.copies.iter().filter(|c| c.status != Status::Failed);
    match live.min_by_key(|c| c.status.rank()) {
        Some(least) => (least.status, None),
        None => (Status::Failed, info.copies.first().and_then(|c| c.reason.clone())),
    }
}

/// Deletes a group message's record and its copies' index, if it is one.
fn delete_group_message<T: Tx>(tx: &T, id: &MessageId) -> Result<(), T::Error> {
    let Some(bytes) = tx.get(Tree::GroupMessages, &id.0)? else { return Ok(()) };
    let info: super::GroupMessageInfo = codec::decode("group message", &bytes)?;
    for copy in &info.copies {
        tx.remove(Tree::GroupCopies, &copy.copy.0)?;
    }
    tx.remove(Tree::GroupMessages, &id.0)
}

pub(crate) fn group(
    view: &dyn View,
    sealer: &dyn Sealer,
    id: &[u8; 16],
) -> Result<Option<super::GroupRecord>, StoreError> {
    view.get(Tree::Groups, id)?.map(|bytes| open(sealer, Tree::Groups, id, "group", &bytes)).transpose()
}

pub(crate) fn groups(view: &dyn View, sealer: &dyn Sealer) -> Result<Vec<super::GroupRecord>, StoreError> {
    let mut out = Vec::new();
    view.scan(Tree::Groups, &[], false, &mut |key, value| {
        out.push(open(sealer, Tree::Groups, key, "group", value)?);
        Ok(true)
    })?;
    Ok(out)
}

pub(crate) fn group_message(
    view: &dyn View,
    id: &MessageId,
) -> Result<Option<super::GroupMessageInfo>, StoreError> {
    get_plain(view, Tree::GroupMessages, &id.0, "group message")
}

pub(crate) fn group_copy(view: &dyn View, copy: &MessageId) -> Result<Option<MessageId>, StoreError> {
    get_plain(view, Tree::GroupCopies, &copy.0, "group copy")
}

/// Deletes `name`'s record, conversation and outbox entries with all their index entries.
fn remove_contact<T: Tx>(tx: &T, name: &str) -> Result<(), T::Error> {
    let prefix = conversation_prefix(name);
    tx.remove(Tree::Contacts, name.as_bytes())?;
    for (key, value) in tx.entries(Tree::Conversations, &prefix)? {
        remove_message(tx, &key, &codec::decode("message index", &value)?)?;
    }
    tx.remove(Tree::ContentKeys, name.as_bytes())?;
    for (key, value) in tx.entries(Tree::OutboxOrder, &prefix)? {
        let id = id_of_order_key(&key)?;
        let next: u64 = codec::decode("outbox index", &value)?;
        tx.remove(Tree::OutboxOrder, &key)?;
        tx.remove(Tree::OutboxHeads, &due_key(next, &id))?;
        if let Some(bytes) = tx.get(Tree::Outbox, &id)? {
            let entry: OutboxEntry = codec::decode("outbox entry", &bytes)?;
            tx.remove(Tree::OutboxDue, &due_key(entry.next_attempt_at.0, &id))?;
            tx.remove(Tree::Outbox, &id)?;
            tx.remove(Tree::OutboxParts, &id)?;
            add_to_counter(tx, OUTBOX_LEN_KEY, -1)?;
        }
    }
    remove_fragments(tx, &prefix)
}

/// The key of one piece of a long text: `contact ‖ group ‖ index`, so a contact's pieces and a
/// group's are each one prefix.
fn fragment_key(contact: &str, group: &[u8; 16], index: u16) -> Vec<u8> {
    let mut key = fragment_group_prefix(contact, group);
    key.extend_from_slice(&index.to_be_bytes());
    key
}

fn fragment_group_prefix(contact: &str, group: &[u8; 16]) -> Vec<u8> {
    let mut key = conversation_prefix(contact);
    key.extend_from_slice(group);
    key
}

/// Deletes the pieces whose keys start with `prefix`.
fn remove_fragments<T: Tx>(tx: &T, prefix: &[u8]) -> Result<(), T::Error> {
    for (key, _) in tx.entries(Tree::Fragments, prefix)? {
        tx.remove(Tree::Fragments, &key)?;
    }
    Ok(())
}

pub(crate) fn fragments(
    view: &dyn View,
    sealer: &dyn Sealer,
    contact: &str,
    group: &[u8; 16],
) -> Result<Vec<StoredFragment>, StoreError> {
    let mut out = Vec::new();
    view.scan(Tree::Fragments, &fragment_group_prefix(contact, group), false, &mut |key, value| {
        out.push(open(sealer, Tree::Fragments, key, "fragment", value)?);
        Ok(true)
    })?;
    Ok(out)
}

pub(crate) fn fragment_groups(view: &dyn View, contact: &str) -> Result<Vec<[u8; 16]>, StoreError> {
    let prefix = conversation_prefix(contact);
    let mut out: Vec<[u8; 16]> = Vec::new();
    view.scan(Tree::Fragments, &prefix, false, &mut |key, _| {
        let group: [u8; 16] = key
            .get(prefix.len()..prefix.len() + 16)
            .and_then(|g| g.try_into().ok())
            .ok_or(StoreError::Corrupt { what: "fragment key" })?;
        if out.last() != Some(&group) {
            out.push(group);
        }
        Ok(true)
    })?;
    Ok(out)
}

pub(crate) fn stale_fragments(
    view: &dyn View,
    sealer: &dyn Sealer,
    before: Timestamp,
) -> Result<Vec<(String, [u8; 16])>, StoreError> {
    // Each group's newest arrival: a group still receiving pieces is not stale.
    let mut newest: Vec<((String, [u8; 16]), Timestamp)> = Vec::new();
    view.scan(Tree::Fragments, &[], false, &mut |key, value| {
        let fragment: StoredFragment = open(sealer, Tree::Fragments, key, "fragment", value)?;
        let group = (fragment.contact, fragment.group);
        match newest.iter_mut().find(|(g, _)| *g == group) {
            Some((_, at)) => *at = (*at).max(fragment.received_at),
            None => newest.push((group, fragment.received_at)),
        }
        Ok(true)
    })?;
    Ok(newest.into_iter().filter(|(_, at)| *at < before).map(|(group, _)| group).collect())
}

pub(crate) fn part_of(view: &dyn View, id: &MessageId) -> Result<Option<PartOf>, StoreError> {
    get_plain(view, Tree::OutboxParts, &id.0, "outbox part")
}

/// Records that sealed records were deleted and the storage key is to be replaced, so a crash or
/// a failed rotation before that is made good at the next start or maintenance pass.
fn note_shred_pending<T: Tx>(tx: &T) -> Result<(), T::Error> {
    tx.insert(Tree::Meta, SHRED_PENDING_KEY, codec::encode("shred flag", &true)?)
}

/// `swept/` ‖ relay peer id: where a relay's sweep progress is kept in `meta`.
fn swept_key(relay: &[u8]) -> Vec<u8> {
    let mut key = b"swept/".to_vec();
    key.extend_from_slice(relay);
    key
}

/// See [`Change::NoteSwept`](super::Change::NoteSwept).
pub(crate) fn swept_through(view: &dyn View, relay: &[u8]) -> Result<Option<u64>, StoreError> {
    get_plain(view, Tree::Meta, &swept_key(relay), "sweep progress")
}

/// Whether sealed records were deleted since the storage key was last replaced.
pub(crate) fn shred_pending(view: &dyn View) -> Result<bool, StoreError> {
    Ok(get_plain::<bool>(view, Tree::Meta, SHRED_PENDING_KEY, "shred flag")?.unwrap_or(false))
}

/// Removes one message of a conversation, found under `key` in its index: the record, the
/// text and both index entries.
fn remove_message<T: Tx>(tx: &T, key: &[u8], id: &MessageId) -> Result<(), T::Error> {
    tx.remove(Tree::Conversations, key)?;
    tx.remove(Tree::Unread, key)?;
    tx.remove(Tree::Timeline, &order_of_conversation_key(key)?)?;
    tx.remove(Tree::Messages, &id.0)?;
    tx.remove(Tree::Texts, &id.0)?;
    tx.remove(Tree::Files, &file_key(id, FILE_INFO))?;
    tx.remove(Tree::Files, &file_key(id, FILE_DATA))?;
    tx.remove(Tree::Files, &file_key(id, FILE_TRANSFER))
}

/// The keys of a message's file: what it is, its bytes, and its transfer.
const FILE_INFO: u8 = 0;
const FILE_DATA: u8 = 1;
const FILE_TRANSFER: u8 = 2;

fn file_key(id: &MessageId, part: u8) -> [u8; 17] {
    let mut key = [part; 17];
    key[..16].copy_from_slice(&id.0);
    key
}

pub(crate) fn file_info(
    view: &dyn View,
    sealer: &dyn Sealer,
    id: &MessageId,
) -> Result<Option<FileInfo>, StoreError> {
    let key = file_key(id, FILE_INFO);
    view.get(Tree::Files, &key)?.map(|bytes| open(sealer, Tree::Files, &key, "file", &bytes)).transpose()
}

pub(crate) fn transfer(
    view: &dyn View,
    sealer: &dyn Sealer,
    id: &MessageId,
) -> Result<Option<Transfer>, StoreError> {
    let key = file_key(id, FILE_TRANSFER);
    view.get(Tree::Files, &key)?.map(|bytes| open(sealer, Tree::Files, &key, "file", &bytes)).transpose()
}

pub(crate) fn transfers(
    view: &dyn View,
    sealer: &dyn Sealer,
) -> Result<Vec<(MessageId, Transfer)>, StoreError> {
    let mut out = Vec::new();
    view.scan(Tree::Files, &[], false, &mut |key, value| {
        if key.len() == 17 && key[16] == FILE_TRANSFER {
            let id = MessageId(key[..16].try_into().map_err(|_| StoreError::Corrupt { what: "file key" })?);
            out.push((id, open(sealer, Tree::Files, key, "file", value)?));
        }
        Ok(true)
    })?;
    Ok(out)
}

pub(crate) fn file_data(
    view: &dyn View,
    sealer: &dyn Sealer,
    id: &MessageId,
) -> Result<Option<Zeroizing<Vec<u8>>>, StoreError> {
    let key = file_key(id, FILE_DATA);
    let Some(bytes) = view.get(Tree::Files, &key)? else { return Ok(None) };
    let data: serde_bytes::ByteBuf = open(sealer, Tree::Files, &key, "file", &bytes)?;
    Ok(Some(Zeroizing::new(data.into_vec())))
}

/// Deletes message `id` and re-keys its conversation: every remaining text is sealed again under
/// a new content key, which replaces the old one (see `texts`).
fn delete_message<T: Tx>(tx: &T, sealer: &dyn Sealer, id: &MessageId) -> Result<(), T::Error> {
    delete_group_message(tx, id)?;
    let Some(bytes) = tx.get(Tree::Messages, &id.0)? else { return Ok(()) };
    let message: StoredMessage = codec::decode("message", &bytes)?;
    remove_message(tx, &conversation_key(&message.contact, message.order), id)?;
    let name = &message.contact;
    let remaining = tx.entries(Tree::Conversations, &conversation_prefix(name))?;
    if remaining.is_empty() {
        tx.remove(Tree::ContentKeys, name.as_bytes())?;
        return Ok(());
    }
    let old = content_key(tx, sealer, name)?;
    let new = ContentKey::generate()?;
    for (_, value) in remaining {
        let id: MessageId = codec::decode("message index", &value)?;
        let Some(sealed) = tx.get(Tree::Texts, &id.0)? else { continue };
        let old = old.as_ref().ok_or(StoreError::Corrupt { what: "content key" })?;
        tx.insert(Tree::Texts, &id.0, new.seal(&id, &old.open(&id, &sealed)?)?)?;
    }
    put_content_key(tx, sealer, name, &new)
}

/// The content key of `name`'s conversation, if it has one.
fn content_key<T: Tx>(tx: &T, sealer: &dyn Sealer, name: &str) -> Result<Option<ContentKey>, T::Error> {
    let Some(bytes) = tx.get(Tree::ContentKeys, name.as_bytes())? else { return Ok(None) };
    Ok(Some(open(sealer, Tree::ContentKeys, name.as_bytes(), "content key", &bytes)?))
}

fn put_content_key<T: Tx>(tx: &T, sealer: &dyn Sealer, name: &str, key: &ContentKey) -> Result<(), T::Error> {
    let value = seal(sealer, Tree::ContentKeys, name.as_bytes(), "content key", key)?;
    tx.insert(Tree::ContentKeys, name.as_bytes(), value)
}

/// Seals `message`'s text under its conversation's content key (made on the conversation's
/// first message) into `texts`.
fn put_text<T: Tx>(tx: &T, sealer: &dyn Sealer, message: &StoredMessage) -> Result<(), T::Error> {
    let key = match content_key(tx, sealer, &message.contact)? {
        Some(key) => key,
        None => {
            let key = ContentKey::generate()?;
            put_content_key(tx, sealer, &message.contact, &key)?;
            key
        }
    };
    tx.insert(Tree::Texts, &message.id.0, key.seal(&message.id, &message.text)?)
}

/// Files `from`'s record, conversation and outbox entries under `to`.
fn rename_contact<T: Tx>(tx: &T, sealer: &dyn Sealer, from: &str, to: &str) -> Result<(), T::Error> {
    check_name(to)?;
    if tx.get(Tree::Contacts, to.as_bytes())?.is_some() {
        return Err(StoreError::Conflict { name: to.to_owned() }.into());
    }
    let Some(bytes) = tx.get(Tree::Contacts, from.as_bytes())? else { return Ok(()) };
    let contact = Contact { name: to.to_owned(), ..decode_contact(&bytes)? };
    tx.remove(Tree::Contacts, from.as_bytes())?;
    put_contact(tx, &contact)?;
    // The key is sealed bound to the name it is stored under: sealed again under the new one.
    if let Some(key) = content_key(tx, sealer, from)? {
        tx.remove(Tree::ContentKeys, from.as_bytes())?;
        put_content_key(tx, sealer, to, &key)?;
    }
    for (key, value) in tx.entries(Tree::Conversations, &conversation_prefix(from))? {
        let id: MessageId = codec::decode("message index", &value)?;
        let order = u64::from_be_bytes(order_of_conversation_key(&key)?);
        tx.remove(Tree::Conversations, &key)?;
        tx.insert(Tree::Conversations, &conversation_key(to, order), value)?;
        if let Some(bytes) = tx.get(Tree::Messages, &id.0)? {
            let message = StoredMessage { contact: to.to_owned(), ..codec::decode("message", &bytes)? };
            tx.insert(Tree::Messages, &id.0, codec::encode("message", &message)?)?;
        }
    }
    // Pieces of a long text not yet whole are sealed bound to their key: opened and sealed again.
    for (key, value) in tx.entries(Tree::Fragments, &conversation_prefix(from))? {
        let fragment: StoredFragment = open(sealer, Tree::Fragments, &key, "fragment", &value)?;
        let moved = StoredFragment { contact: to.to_owned(), ..fragment };
        let new_key = fragment_key(to, &moved.group, moved.index);
        tx.remove(Tree::Fragments, &key)?;
        tx.insert(Tree::Fragments, &new_key, seal(sealer, Tree::Fragments, &new_key, "fragment", &moved)?)?;
    }
    for (key, value) in tx.entries(Tree::Unread, &conversation_prefix(from))? {
        let order = u64::from_be_bytes(order_of_conversation_key(&key)?);
        tx.remove(Tree::Unread, &key)?;
        tx.insert(Tree::Unread, &conversation_key(to, order), value)?;
    }
    for (key, value) in tx.entries(Tree::OutboxOrder, &conversation_prefix(from))? {
        let id = id_of_order_key(&key)?;
        let next: u64 = codec::decode("outbox index", &value)?;
        tx.remove(Tree::OutboxOrder, &key)?;
        let Some(bytes) = tx.get(Tree::Outbox, &id)? else { continue };
        let entry = OutboxEntry { contact: to.to_owned(), ..codec::decode("outbox entry", &bytes)? };
        tx.insert(Tree::Outbox, &id, codec::encode("outbox entry", &entry)?)?;
        index_order(tx, &entry)?;
        let head = due_key(next, &id);
        if tx.get(Tree::OutboxHeads, &head)?.is_some() {
            tx.insert(Tree::OutboxHeads, &head, codec::encode("outbox index", to)?)?;
        }
    }
    Ok(())
}

/// Forgets dismissals, the first to run out first, while `go(until, how many are kept)` says so.
/// Reads one index entry per dismissal forgotten (and one more), not the whole index.
fn forget_dismissals_while<T: Tx>(tx: &T, mut go: impl FnMut(u64, u64) -> bool) -> Result<(), T::Error> {
    while let Some((key, _)) = tx.first(Tree::DismissedByTime, &[])? {
        let until = key.get(..8).and_then(|b| <[u8; 8]>::try_from(b).ok()).map(u64::from_be_bytes);
        let until = until.ok_or(StoreError::Corrupt { what: "dismissal index" })?;
        if !go(until, counter(tx, DISMISSED_LEN_KEY)?) {
            break;
        }
        tx.remove(Tree::DismissedByTime, &key)?;
        if let Some(digest) = key.get(8..)
            && tx.get(Tree::Dismissed, digest)?.is_some()
        {
            tx.remove(Tree::Dismissed, digest)?;
            add_to_counter(tx, DISMISSED_LEN_KEY, -1)?;
        }
    }
    Ok(())
}

/// `until (u64 BE) ‖ digest`: dismissals sort by when they may be forgotten.
fn dismissal_key(until: u64, digest: &[u8; 32]) -> [u8; 40] {
    let mut key = [0u8; 40];
    key[..8].copy_from_slice(&until.to_be_bytes());
    key[8..].copy_from_slice(digest);
    key
}

/// The order (u64 BE) at the end of a conversation key.
fn order_of_conversation_key(key: &[u8]) -> Result<[u8; 8], StoreError> {
    key.len()
        .checked_sub(8)
        .and_then(|start| <[u8; 8]>::try_from(&key[start..]).ok())
        .ok_or(StoreError::Corrupt { what: "conversation index" })
}

fn put_contact<T: Tx>(tx: &T, contact: &Contact) -> Result<(), T::Error> {
    check_name(&contact.name)?;
    tx.insert(Tree::Contacts, contact.name.as_bytes(), codec::encode("contact", contact)?)
}

fn put_message<T: Tx>(tx: &T, sealer: &dyn Sealer, message: &StoredMessage) -> Result<(), T::Error> {
    // Exactly once: a duplicate of a message already stored (the same envelope through two
    // relays, or redelivered after a crash before our acknowledgement) changes nothing.
    if tx.get(Tree::Messages, &message.id.0)?.is_some() {
        return Ok(());
    }
    check_name(&message.contact)?;
    let order = counter(tx, NEXT_ORDER_KEY)?;
    add_to_counter(tx, NEXT_ORDER_KEY, 1)?;
    // The record keeps no text: that is sealed apart.
    let stored = StoredMessage { order, text: String::new(), ..message.clone() };
    let id = codec::encode("message index", &message.id)?;
    put_text(tx, sealer, message)?;
    tx.insert(Tree::Messages, &message.id.0, codec::encode("message", &stored)?)?;
    if is_unread(&stored) {
        tx.insert(Tree::Unread, &conversation_key(&message.contact, order), id.clone())?;
    }
    tx.insert(Tree::Timeline, &order.to_be_bytes(), id.clone())?;
    tx.insert(Tree::Conversations, &conversation_key(&message.contact, order), id)?;
    Ok(())
}

/// Whether `message` belongs in the `unread` index: incoming and not yet read.
fn is_unread(message: &StoredMessage) -> bool {
    message.direction == super::Direction::In && message.status != super::Status::Read
}

fn put_outbox<T: Tx>(tx: &T, entry: &OutboxEntry) -> Result<(), T::Error> {
    check_name(&entry.contact)?;
    let value = codec::encode("outbox entry", entry)?;
    let old: Option<OutboxEntry> =
        tx.get(Tree::Outbox, &entry.id.0)?.map(|bytes| codec::decode("outbox entry", &bytes)).transpose()?;
    // The entry may become its contact's head, or stop being it (a replacement with another
    // contact, which only a bug would write, is handled all the same).
    let mut contacts = vec![entry.contact.as_str()];
    if let Some(old) = &old
        && old.contact != entry.contact
    {
        contacts.push(&old.contact);
    }
    for contact in &contacts {
        unmark_head(tx, contact)?;
    }
    match &old {
        Some(old) => unindex_entry(tx, old)?,
        None => add_to_counter(tx, OUTBOX_LEN_KEY, 1)?,
    }
    tx.insert(Tree::Outbox, &entry.id.0, value)?;
    tx.insert(
        Tree::OutboxDue,
        &due_key(entry.next_attempt_at.0, &entry.id.0),
        codec::encode("outbox index", &())?,
    )?;
    index_order(tx, entry)?;
    for contact in &contacts {
        mark_head(tx, contact)?;
    }
    Ok(())
}

fn remove_outbox<T: Tx>(tx: &T, id: &MessageId) -> Result<(), T::Error> {
    let Some(old) = tx.get(Tree::Outbox, &id.0)? else { return Ok(()) };
    let old: OutboxEntry = codec::decode("outbox entry", &old)?;
    unmark_head(tx, &old.contact)?;
    tx.remove(Tree::Outbox, &id.0)?;
    tx.remove(Tree::OutboxParts, &id.0)?;
    unindex_entry(tx, &old)?;
    add_to_counter(tx, OUTBOX_LEN_KEY, -1)?;
    mark_head(tx, &old.contact)
}

/// Files `entry` in its contact's delivery order.
fn index_order<T: Tx>(tx: &T, entry: &OutboxEntry) -> Result<(), T::Error> {
    let key = order_key(&entry.contact, entry.created_at.0, entry.seq, &entry.id.0);
    tx.insert(Tree::OutboxOrder, &key, codec::encode("outbox index", &entry.next_attempt_at.0)?)
}

/// Removes the index entries of `old`, as it was stored.
fn unindex_entry<T: Tx>(tx: &T, old: &OutboxEntry) -> Result<(), T::Error> {
    tx.remove(Tree::OutboxDue, &due_key(old.next_attempt_at.0, &old.id.0))?;
    tx.remove(Tree::OutboxOrder, &order_key(&old.contact, old.created_at.0, old.seq, &old.id.0))
}

/// `contact`'s head as the batch sees it: its first entry in delivery order, with that entry's
/// next attempt. Order entries that point at no outbox entry are dropped on the way.
fn head<T: Tx>(tx: &T, contact: &str) -> Result<Option<([u8; 16], u64)>, T::Error> {
    let prefix = conversation_prefix(contact);
    while let Some((key, value)) = tx.first(Tree::OutboxOrder, &prefix)? {
        let id = id_of_order_key(&key)?;
        if tx.get(Tree::Outbox, &id)?.is_none() {
            tx.remove(Tree::OutboxOrder, &key)?;
            if let Ok(next) = codec::decode::<u64>("outbox index", &value) {
                tx.remove(Tree::OutboxHeads, &due_key(next, &id))?;
            }
            continue;
        }
        return Ok(Some((id, codec::decode("outbox index", &value)?)));
    }
    Ok(None)
}

/// Takes `contact`'s current head out of the heads index (before a change that may replace it).
fn unmark_head<T: Tx>(tx: &T, contact: &str) -> Result<(), T::Error> {
    match head(tx, contact)? {
        Some((id, next)) => tx.remove(Tree::OutboxHeads, &due_key(next, &id)),
        None => Ok(()),
    }
}

/// Files `contact`'s current head in the heads index (after a change).
fn mark_head<T: Tx>(tx: &T, contact: &str) -> Result<(), T::Error> {
    match head(tx, contact)? {
        Some((id, next)) => {
            tx.insert(Tree::OutboxHeads, &due_key(next, &id), codec::encode("outbox index", contact)?)
        }
        None => Ok(()),
    }
}

/// Schema 3: seals the texts of messages stored before texts were kept apart into `texts`
/// (making each conversation's content key) and empties the records' text. A record that does
/// not decode is left as it is, for reads to report.
pub(crate) fn seal_texts<T: Tx>(tx: &T, sealer: &dyn Sealer, view: &dyn View) -> Result<(), T::Error> {
    let mut legacy: Vec<StoredMessage> = Vec::new();
    view.scan(Tree::Messages, &[], false, &mut |key, value| {
        if let Ok(message) = codec::decode::<StoredMessage>("message", value)
            && message.id.0 == key
            && check_name(&message.contact).is_ok()
            && view.get(Tree::Texts, key)?.is_none()
        {
            legacy.push(message);
        }
        Ok(true)
    })?;
    for message in legacy {
        put_text(tx, sealer, &message)?;
        let record = StoredMessage { text: String::new(), ..message };
        tx.insert(Tree::Messages, &record.id.0, codec::encode("message", &record)?)?;
    }
    Ok(())
}

/// Schema 5: seals the contact requests stored in the clear before (a request holds the first
/// words of its first message). A record that does not decode is left for reads to report.
pub(crate) fn seal_requests<T: Tx>(tx: &T, sealer: &dyn Sealer, view: &dyn View) -> Result<(), T::Error> {
    let mut plain: Vec<ContactRequest> = Vec::new();
    view.scan(Tree::Requests, &[], false, &mut |key, value| {
        if let Ok(request) = codec::decode::<ContactRequest>("contact request", value)
            && request.id.0 == key
        {
            plain.push(request);
        }
        Ok(true)
    })?;
    for request in plain {
        let key = &request.id.0;
        tx.insert(Tree::Requests, key, seal(sealer, Tree::Requests, key, "contact request", &request)?)?;
    }
    note_shred_pending(tx)
}

/// Schema 4: files every incoming message not yet read in `unread`.
pub(crate) fn index_unread<T: Tx>(tx: &T, view: &dyn View) -> Result<(), T::Error> {
    let mut unread = Vec::new();
    view.scan(Tree::Messages, &[], false, &mut |key, value| {
        if let Ok(message) = codec::decode::<StoredMessage>("message", value)
            && message.id.0 == key
            && check_name(&message.contact).is_ok()
            && is_unread(&message)
        {
            unread.push((conversation_key(&message.contact, message.order), message.id));
        }
        Ok(true)
    })?;
    for (key, id) in unread {
        tx.insert(Tree::Unread, &key, codec::encode("message index", &id)?)?;
    }
    Ok(())
}

/// The incoming messages of `contact` not yet read, oldest first. Reads only those.
/// How many incoming messages of `contact` are not yet read: the index entries, counted
/// without decoding them.
pub(crate) fn unread_count(view: &dyn View, contact: &str) -> Result<usize, StoreError> {
    let mut count = 0;
    view.scan(Tree::Unread, &conversation_prefix(contact), false, &mut |_, _| {
        count += 1;
        Ok(true)
    })?;
    Ok(count)
}

pub(crate) fn unread(view: &dyn View, contact: &str) -> Result<Vec<MessageId>, StoreError> {
    let mut ids = Vec::new();
    view.scan(Tree::Unread, &conversation_prefix(contact), false, &mut |_, value| {
        ids.push(codec::decode("message index", value)?);
        Ok(true)
    })?;
    Ok(ids)
}

/// Builds the outbox's order and heads indexes from the outbox itself, for a database written
/// before they existed (schema 1). An entry that does not decode is left out: no read could
/// deliver it before either, and it stays stored as it was.
pub(crate) fn index_outbox<T: Tx>(tx: &T, view: &dyn View) -> Result<(), T::Error> {
    let mut entries: Vec<OutboxEntry> = Vec::new();
    view.scan(Tree::Outbox, &[], false, &mut |key, value| {
        if let Ok(entry) = codec::decode::<OutboxEntry>("outbox entry", value)
            && entry.id.0 == key
            && check_name(&entry.contact).is_ok()
        {
            // The envelope is not needed to index the entry.
            entries.push(OutboxEntry { envelope: Vec::new(), ..entry });
        }
        Ok(true)
    })?;
    let mut contacts = std::collections::BTreeSet::new();
    for entry in &entries {
        index_order(tx, entry)?;
        contacts.insert(entry.contact.as_str());
    }
    for contact in contacts {
        mark_head(tx, contact)?;
    }
    Ok(())
}

fn counter<T: Tx>(tx: &T, key: &[u8]) -> Result<u64, T::Error> {
    match tx.get(Tree::Meta, key)? {
        Some(bytes) => Ok(codec::decode("counter", &bytes)?),
        None => Ok(0),
    }
}

fn add_to_counter<T: Tx>(tx: &T, key: &[u8], delta: i64) -> Result<(), T::Error> {
    let value = counter(tx, key)?.checked_add_signed(delta).ok_or(StoreError::Corrupt { what: "counter" })?;
    tx.insert(Tree::Meta, key, codec::encode("counter", &value)?)
}

/// Encodes and seals a secret record for `tree`/`key`.
fn seal<T: Serialize>(
    sealer: &dyn Sealer,
    tree: Tree,
    key: &[u8],
    what: &'static str,
    value: &T,
) -> Result<Vec<u8>, StoreError> {
    let plaintext = codec::encode_secret(what, value)?;
    let sealed = sealer.seal(&aad(tree.name(), key), &plaintext)?;
    let mut out = Vec::with_capacity(1 + sealed.len());
    out.push(super::FORMAT_VERSION);
    out.extend_from_slice(&sealed);
    Ok(out)
}

/// Opens and decodes a secret record stored under `tree`/`key`.
fn open<T: DeserializeOwned>(
    sealer: &dyn Sealer,
    tree: Tree,
    key: &[u8],
    what: &'static str,
    bytes: &[u8],
) -> Result<T, StoreError> {
    let plaintext = sealer.open(what, &aad(tree.name(), key), codec::body(what, bytes)?)?;
    codec::decode_postcard(what, &plaintext)
}

/// Re-seals one sealed record as it is stored under `tree`/`key` (opened with whichever key it
/// names, sealed with the sealer's current key). The plaintext never leaves zeroizing memory.
pub(crate) fn reseal(
    sealer: &dyn Sealer,
    tree: Tree,
    key: &[u8],
    bytes: &[u8],
) -> Result<Vec<u8>, StoreError> {
    let what = match tree {
        Tree::Profile => "profile",
        Tree::ContentKeys => "content key",
        Tree::Requests => "contact request",
        Tree::Fragments => "fragment",
        Tree::Files => "file",
        Tree::Groups => "group",
        _ => "session record",
    };
    let aad = aad(tree.name(), key);
    let plaintext = sealer.open(what, &aad, codec::body(what, bytes)?)?;
    let sealed = sealer.seal(&aad, &plaintext)?;
    let mut out = Vec::with_capacity(1 + sealed.len());
    out.push(super::FORMAT_VERSION);
    out.extend_from_slice(&sealed);
    Ok(out)
}

/// The trees whose values are sealed under the storage key.
pub(crate) const SEALED_TREES: [Tree; 7] = [
    Tree::Profile,
    Tree::Sessions,
    Tree::ContentKeys,
    Tree::Requests,
    Tree::Fragments,
    Tree::Files,
    Tree::Groups,
];

pub(crate) fn profile(view: &dyn View, sealer: &dyn Sealer) -> Result<Option<Profile>, StoreError> {
    view.get(Tree::Profile, PROFILE_KEY)?
        .map(|bytes| open(sealer, Tree::Profile, PROFILE_KEY, "profile", &bytes))
        .transpose()
}

pub(crate) fn contacts(view: &dyn View) -> Result<Vec<Contact>, StoreError> {
    let mut out = Vec::new();
    view.scan(Tree::Contacts, &[], false, &mut |_, value| {
        out.push(decode_contact(value)?);
        Ok(true)
    })?;
    Ok(out)
}

pub(crate) fn contact(view: &dyn View, name: &str) -> Result<Option<Contact>, StoreError> {
    view.get(Tree::Contacts, name.as_bytes())?.map(|bytes| decode_contact(&bytes)).transpose()
}

/// A contact record in the current layout or, failing that, an older one ([`ContactV2`],
/// [`ContactV1`]). They cannot be mistaken for each other: each layout has more fields than the
/// one before, and a decode must use every byte.
pub(crate) fn decode_contact(bytes: &[u8]) -> Result<Contact, StoreError> {
    codec::decode("contact", bytes).or_else(|e| {
        codec::decode::<ContactV2>("contact", bytes)
            .map(Contact::from)
            .or_else(|_| codec::decode::<ContactV1>("contact", bytes).map(Contact::from))
            .map_err(|_| e)
    })
}

pub(crate) fn session(
    view: &dyn View,
    sealer: &dyn Sealer,
    id: &SessionId,
) -> Result<Option<SessionRecord>, StoreError> {
    let what = "session record";
    let Some(bytes) = view.get(Tree::Sessions, &id.0)? else { return Ok(None) };
    let record: SessionRecord = open(sealer, Tree::Sessions, &id.0, what, &bytes)?;
    // The key is bound as associated data already; this catches a record whose content names
    // another session (a bug or a hand-edited database).
    if record.id != *id {
        return Err(StoreError::Corrupt { what });
    }
    Ok(Some(record))
}

pub(crate) fn session_by_mailbox(
    view: &dyn View,
    mailbox: &MailboxId,
) -> Result<Option<SessionId>, StoreError> {
    get_plain(view, Tree::Mailboxes, &mailbox.0, "mailbox index")
}

pub(crate) fn session_by_open_digest(
    view: &dyn View,
    digest: &[u8; 32],
) -> Result<Option<SessionId>, StoreError> {
    get_plain(view, Tree::OpenDigests, digest, "open digest index")
}

/// Reads message records with their texts, opening each conversation's content key once.
pub(crate) struct MessageReader<'a> {
    view: &'a dyn View,
    sealer: &'a dyn Sealer,
    keys: std::collections::HashMap<String, Option<ContentKey>>,
}

impl<'a> MessageReader<'a> {
    pub(crate) fn new(view: &'a dyn View, sealer: &'a dyn Sealer) -> Self {
        Self { view, sealer, keys: std::collections::HashMap::new() }
    }

    /// Message `id` with its text.
    pub(crate) fn message(&mut self, id: &MessageId) -> Result<Option<StoredMessage>, StoreError> {
        let Some(mut message) = get_plain::<StoredMessage>(self.view, Tree::Messages, &id.0, "message")?
        else {
            return Ok(None);
        };
        // A record written before texts were sealed apart keeps its text (schema 3 moves them).
        if let Some(sealed) = self.view.get(Tree::Texts, &id.0)? {
            let key = match self.keys.get(&message.contact) {
                Some(key) => key.clone(),
                None => {
                    let name = message.contact.as_bytes();
                    let key = self
                        .view
                        .get(Tree::ContentKeys, name)?
                        .map(|bytes| open(self.sealer, Tree::ContentKeys, name, "content key", &bytes))
                        .transpose()?;
                    self.keys.insert(message.contact.clone(), key.clone());
                    key
                }
            };
            let key = key.ok_or(StoreError::Corrupt { what: "content key" })?;
            message.text = key.open(id, &sealed)?;
        }
        Ok(Some(message))
    }

    /// Messages by their index entries: an id the index names but the store lacks is damage.
    fn all(&mut self, ids: &[MessageId]) -> Result<Vec<StoredMessage>, StoreError> {
        ids.iter().map(|id| self.message(id)?.ok_or(StoreError::Corrupt { what: "message index" })).collect()
    }
}

pub(crate) fn message(
    view: &dyn View,
    sealer: &dyn Sealer,
    id: &MessageId,
) -> Result<Option<StoredMessage>, StoreError> {
    MessageReader::new(view, sealer).message(id)
}

pub(crate) fn messages(
    view: &dyn View,
    sealer: &dyn Sealer,
    contact: Option<&str>,
    limit: usize,
) -> Result<Vec<StoredMessage>, StoreError> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    let (tree, prefix) = match contact {
        Some(name) => (Tree::Conversations, conversation_prefix(name)),
        None => (Tree::Timeline, Vec::new()),
    };
    // Newest first from the index, then reversed: the caller wants the last `limit`, oldest first.
    let mut ids: Vec<MessageId> = Vec::new();
    view.scan(tree, &prefix, true, &mut |_, value| {
        ids.push(codec::decode("message index", value)?);
        Ok(ids.len() < limit)
    })?;
    ids.reverse();
    MessageReader::new(view, sealer).all(&ids)
}

/// The `limit` messages with `contact` (or with everyone) just before the message in
/// conversation order `before`, oldest first: the page before it.
pub(crate) fn messages_before(
    view: &dyn View,
    sealer: &dyn Sealer,
    contact: Option<&str>,
    before: u64,
    limit: usize,
) -> Result<Vec<StoredMessage>, StoreError> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    let (tree, prefix, below) = match contact {
        Some(name) => (Tree::Conversations, conversation_prefix(name), conversation_key(name, before)),
        None => (Tree::Timeline, Vec::new(), before.to_be_bytes().to_vec()),
    };
    let mut ids: Vec<MessageId> = Vec::new();
    view.scan_below(tree, &prefix, &below, &mut |_, value| {
        ids.push(codec::decode("message index", value)?);
        Ok(ids.len() < limit)
    })?;
    ids.reverse();
    MessageReader::new(view, sealer).all(&ids)
}

/// The newest `limit` messages with `contact` (or with everyone) whose text holds `needle`,
/// whatever the case and however accents were typed (both compared lowercased and composed,
/// NFC), oldest first. Reads the conversation from its newest message back until it has found
/// `limit`.
/// The most bytes of text one search gathers (the control API's answer holds about as much).
const SEARCH_TEXT_BUDGET: usize = 8 * 1024 * 1024;

pub(crate) fn search(
    view: &dyn View,
    sealer: &dyn Sealer,
    contact: Option<&str>,
    needle: &str,
    limit: usize,
) -> Result<Vec<StoredMessage>, StoreError> {
    let fold = |text: &str| -> String { text.to_lowercase().nfc().collect() };
    let needle = fold(needle);
    let (tree, prefix) = match contact {
        Some(name) => (Tree::Conversations, conversation_prefix(name)),
        None => (Tree::Timeline, Vec::new()),
    };
    let mut found = Vec::new();
    if limit == 0 {
        return Ok(found);
    }
    let mut reader = MessageReader::new(view, sealer);
    let mut text_bytes = 0usize;
    view.scan(tree, &prefix, true, &mut |_, value| {
        let id: MessageId = codec::decode("message index", value)?;
        let message = reader.message(&id)?.ok_or(StoreError::Corrupt { what: "message index" })?;
        if fold(&message.text).contains(&needle) {
            text_bytes += message.text.len();
            found.push(message);
        }
        // Long texts: what one answer can carry is read, not a thousand of them.
        Ok(found.len() < limit && text_bytes < SEARCH_TEXT_BUDGET)
    })?;
    found.reverse();
    Ok(found)
}

pub(crate) fn outbox(view: &dyn View) -> Result<Vec<OutboxEntry>, StoreError> {
    let mut ids = Vec::new();
    view.scan(Tree::OutboxDue, &[], false, &mut |key, _| {
        ids.push(MessageId(codec::id_of_due_key(key)?));
        Ok(true)
    })?;
    ids.iter()
        .map(|id| {
            let entry: OutboxEntry = get_plain(view, Tree::Outbox, &id.0, "outbox entry")?
                .ok_or(StoreError::Corrupt { what: "outbox index" })?;
            if entry.id != *id {
                return Err(StoreError::Corrupt { what: "outbox entry" });
            }
            Ok(entry)
        })
        .collect()
}

pub(crate) fn outbox_entry(view: &dyn View, id: &MessageId) -> Result<Option<OutboxEntry>, StoreError> {
    let entry: Option<OutboxEntry> = get_plain(view, Tree::Outbox, &id.0, "outbox entry")?;
    if entry.as_ref().is_some_and(|e| e.id != *id) {
        return Err(StoreError::Corrupt { what: "outbox entry" });
    }
    Ok(entry)
}

pub(crate) fn outbox_head(view: &dyn View, contact: &str) -> Result<Option<OutboxHead>, StoreError> {
    Ok(outbox_queue(view, contact, 1)?.pop())
}

pub(crate) fn outbox_queue(
    view: &dyn View,
    contact: &str,
    limit: usize,
) -> Result<Vec<OutboxHead>, StoreError> {
    let mut queue = Vec::new();
    if limit == 0 {
        return Ok(queue);
    }
    view.scan(Tree::OutboxOrder, &conversation_prefix(contact), false, &mut |key, value| {
        let id = id_of_order_key(key)?;
        // An entry that points at nothing is passed over: the queue goes on behind it.
        if view.get(Tree::Outbox, &id)?.is_none() {
            return Ok(true);
        }
        let next: u64 = codec::decode("outbox index", value)?;
        queue.push(OutboxHead {
            id: MessageId(id),
            contact: contact.to_owned(),
            next_attempt_at: Timestamp(next),
        });
        Ok(queue.len() < limit)
    })?;
    Ok(queue)
}

pub(crate) fn outbox_due(view: &dyn View, now: Timestamp) -> Result<Vec<OutboxHead>, StoreError> {
    let mut heads = Vec::new();
    view.scan(Tree::OutboxHeads, &[], false, &mut |key, value| {
        let next = time_of_due_key(key)?;
        if next > now.0 {
            return Ok(false);
        }
        heads.push(OutboxHead {
            id: MessageId(id_of_due_key(key)?),
            contact: codec::decode("outbox index", value)?,
            next_attempt_at: Timestamp(next),
        });
        Ok(true)
    })?;
    Ok(heads)
}

pub(crate) fn awaiting(
    view: &dyn View,
    until: Timestamp,
    limit: usize,
) -> Result<Vec<(Timestamp, MessageId)>, StoreError> {
    let mut due = Vec::new();
    view.scan(Tree::AwaitingReceipt, &[], false, &mut |key, _| {
        let deadline = time_of_due_key(key)?;
        if deadline > until.0 || due.len() >= limit {
            return Ok(false);
        }
        due.push((Timestamp(deadline), MessageId(id_of_due_key(key)?)));
        Ok(true)
    })?;
    Ok(due)
}

/// `session id ‖ last day (u64 BE)`: a session's notes sort by day under its prefix.
fn announced_key(session: &SessionId, last_day: u64) -> [u8; 24] {
    let mut key = [0u8; 24];
    key[..16].copy_from_slice(&session.0);
    key[16..].copy_from_slice(&last_day.to_be_bytes());
    key
}

pub(crate) fn announced(view: &dyn View, session: &SessionId) -> Result<Vec<u64>, StoreError> {
    let mut days = Vec::new();
    view.scan(Tree::Announced, &session.0, true, &mut |key, _| {
        let day = key.get(16..24).and_then(|b| <[u8; 8]>::try_from(b).ok()).map(u64::from_be_bytes);
        days.push(day.ok_or(StoreError::Corrupt { what: "announcement note" })?);
        Ok(true)
    })?;
    Ok(days)
}

pub(crate) fn relays(view: &dyn View) -> Result<Vec<Vec<u8>>, StoreError> {
    let relays: Option<Vec<serde_bytes::ByteBuf>> = get_plain(view, Tree::Meta, RELAYS_KEY, "relay list")?;
    Ok(relays.unwrap_or_default().into_iter().map(serde_bytes::ByteBuf::into_vec).collect())
}

pub(crate) fn session_ids(view: &dyn View) -> Result<Vec<SessionId>, StoreError> {
    let mut ids = Vec::new();
    view.scan(Tree::Sessions, &[], false, &mut |key, _| {
        ids.push(SessionId(
            <[u8; 16]>::try_from(key).map_err(|_| StoreError::Corrupt { what: "session id" })?,
        ));
        Ok(true)
    })?;
    Ok(ids)
}

pub(crate) fn outbox_len(view: &dyn View) -> Result<usize, StoreError> {
    let len: u64 = get_plain(view, Tree::Meta, OUTBOX_LEN_KEY, "counter")?.unwrap_or(0);
    usize::try_from(len).map_err(|_| StoreError::Corrupt { what: "counter" })
}

pub(crate) fn requests(view: &dyn View, sealer: &dyn Sealer) -> Result<Vec<ContactRequest>, StoreError> {
    let mut out: Vec<ContactRequest> = Vec::new();
    view.scan(Tree::Requests, &[], false, &mut |key, value| {
        out.push(open(sealer, Tree::Requests, key, "contact request", value)?);
        Ok(true)
    })?;
    for request in &mut out {
        request.dropped = request_drops(view, &request.id)?;
    }
    Ok(out)
}

pub(crate) fn request(
    view: &dyn View,
    sealer: &dyn Sealer,
    id: &RequestId,
) -> Result<Option<ContactRequest>, StoreError> {
    let Some(bytes) = view.get(Tree::Requests, &id.0)? else { return Ok(None) };
    let mut request: ContactRequest = open(sealer, Tree::Requests, &id.0, "contact request", &bytes)?;
    request.dropped = request_drops(view, id)?;
    Ok(Some(request))
}

fn request_drops(view: &dyn View, id: &RequestId) -> Result<u32, StoreError> {
    Ok(get_plain(view, Tree::RequestDrops, &id.0, "request drops")?.unwrap_or(0))
}

pub(crate) fn is_dismissed(view: &dyn View, digest: &[u8; 32]) -> Result<bool, StoreError> {
    Ok(view.get(Tree::Dismissed, digest)?.is_some())
}

pub(crate) fn dismissed_len(view: &dyn View) -> Result<usize, StoreError> {
    let len: u64 = get_plain(view, Tree::Meta, DISMISSED_LEN_KEY, "counter")?.unwrap_or(0);
    usize::try_from(len).map_err(|_| StoreError::Corrupt { what: "counter" })
}

pub(crate) fn requests_dropped(view: &dyn View) -> Result<u64, StoreError> {
    Ok(get_plain(view, Tree::Meta, REQUESTS_DROPPED_KEY, "counter")?.unwrap_or(0))
}

pub(crate) fn blocked(view: &dyn View) -> Result<Vec<Blocked>, StoreError> {
    let mut out = Vec::new();
    view.scan(Tree::Blocked, &[], false, &mut |_, value| {
        out.push(codec::decode("blocked identity", value)?);
        Ok(true)
    })?;
    Ok(out)
}

pub(crate) fn is_blocked(view: &dyn View, identity: &IdentityPublic) -> Result<bool, StoreError> {
    Ok(view.get(Tree::Blocked, identity.as_bytes())?.is_some())
}

fn get_plain<T: DeserializeOwned>(
    view: &dyn View,
    tree: Tree,
    key: &[u8],
    what: &'static str,
) -> Result<Option<T>, StoreError> {
    view.get(tree, key)?.map(|bytes| codec::decode(what, &bytes)).transpose()
}
