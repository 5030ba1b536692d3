//! Groups on this node (protocol §15): creating one, changing its membership, sending to it one
//! copy per member in each member's own session, and taking in the entries and messages members
//! send. The membership log's rules are `merpati_proto::group`'s; this module keeps the logs,
//! decides who gets what, and files group messages under the group's conversation.

use std::collections::HashMap;

use merpati_proto::Timestamp;
use merpati_proto::frame::{
    Body, ContactKeys, Control, MAX_CARDS, MAX_HINTS, MAX_TEXT_LEN, MemberCard, MessageId, ReceiptKind,
};
use merpati_proto::group::{
    Action, Added, Entry, GroupEntries, GroupId, GroupMessage, Log, MAX_ENTRIES_PER_FRAME, MAX_MEMBERS, Role,
    State, heads_digest,
};
use merpati_proto::identity::IdentityPublic;
use rand_core::Rng;
use serde_bytes::ByteBuf;

use super::outgoing::SendGroup;
use super::{Engine, EngineError, hex};
use crate::store::{
    Change, Contact, Direction, GroupCopy, GroupMessageInfo, GroupRecord, Status, Store, StoreError,
    StoredMessage,
};

/// The most groups a node keeps: a contact can make us join any number, so their records are
/// bounded.
pub const MAX_GROUPS: usize = 256;

/// What keys the id a group message is stored under (see `stored_id`); local to this node.
const STORED_ID_LABEL: &[u8] = b"merpati/stored-group-message-id";

/// The most group members who are not contacts a node keeps (every member of every group
/// could be one; a contact who adds us to groups cannot make the node keep more).
pub const MAX_MEMBER_CONTACTS: usize = 1000;

/// The most groups a node keeps that one identity owns.
pub const MAX_GROUPS_PER_OWNER: usize = 32;

/// A gap in a member's counts wider than this is a restore's jump, not lost texts: no one sends a
/// billion texts to a group.
const RESTORE_JUMP: u64 = 1_000_000_000;

/// The shortest group id prefix a command accepts.
const MIN_ID_PREFIX: usize = 4;

/// A member's messages that never arrived: their identity, and ranges `[from, to]` of counts.
pub type Gap = (IdentityPublic, Vec<[u64; 2]>);

/// A member a card introduced, with the welcome to send them if it is ours to write first.
pub(super) type Introduction = (Contact, Option<Vec<Body>>);

/// A group as the user sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupView {
    /// The group's id.
    pub id: GroupId,
    /// Its name.
    pub name: String,
    /// Its members, the owner first.
    pub members: Vec<GroupMember>,
    /// Our role, if we are a member.
    pub role: Option<Role>,
}

/// A member of a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMember {
    /// Their identity key.
    pub identity: IdentityPublic,
    /// The name the entry that added them gave (the owner: the group's creator, unnamed).
    pub name: Option<String>,
    /// Our contact with that identity, if any.
    pub contact: Option<String>,
    /// Their role.
    pub role: Role,
    /// Whether they own the group.
    pub owner: bool,
    /// Whether it is us.
    pub me: bool,
}

/// The conversation a group's messages are filed under. It starts with a control character, which
/// no contact name can hold, so it never meets a contact's conversation.
pub fn group_conversation(id: &GroupId) -> String {
    format!("\u{1}group {}", hex(&id.0))
}

/// The contact name a group member who is not the user's contact is kept under, so that their
/// node can be written to (protocol §15.4). Like a group's conversation, it starts with a control
/// character no name the user gives can hold, and it is never listed as a contact.
pub fn member_contact_name(identity: &IdentityPublic) -> String {
    // 24 bytes of the key (a name is at most 64 bytes): no one can grind another identity into
    // a member's name.
    format!("\u{1}member {}", hex(&identity.as_bytes()[..24]))
}

/// Whether `name` is a group member's, kept for a group (see [`member_contact_name`]).
pub fn is_member_contact(name: &str) -> bool {
    name.starts_with("\u{1}member ")
}

/// The group whose conversation `name` is, if it is one.
pub fn group_of_conversation(name: &str) -> Option<GroupId> {
    let hex_id = name.strip_prefix("\u{1}group ")?;
    let bytes = (0..16)
        .map(|i| hex_id.get(2 * i..2 * i + 2).and_then(|b| u8::from_str_radix(b, 16).ok()))
        .collect::<Option<Vec<u8>>>()?;
    (hex_id.len() == 32).then(|| GroupId(bytes.try_into().unwrap_or([0; 16])))
}

impl<S: Store> Engine<S> {
    /// Creates a group named `name` owned by us, with `members` (contact names) in it, and
    /// sends each of them the group's log.
    pub fn create_group(
        &mut self,
        name: &str,
        members: &[&str],
        now: Timestamp,
    ) -> Result<GroupView, EngineError> {
        if self.store.groups()?.len() >= MAX_GROUPS {
            return Err(EngineError::TooManyGroups(MAX_GROUPS));
        }
        let mut contacts: Vec<Contact> = Vec::with_capacity(members.len());
        for member in members {
            let contact = self.contact_named(member)?;
            if !contacts.iter().any(|c| c.identity == contact.identity) {
                contacts.push(contact);
            }
        }
        if contacts.len() + 1 > MAX_MEMBERS {
            return Err(EngineError::GroupFull(MAX_MEMBERS));
        }
        let mut nonce = [0u8; 16];
        self.rng.fill_bytes(&mut nonce);
        let (_, genesis) = Entry::genesis(&self.me.identity, name, nonce, now).map_err(|_| {
            EngineError::InvalidName("a group name is 1 to 64 bytes, without control characters")
        })?;
        let mut log = Log::new(genesis).map_err(|e| EngineError::GroupRefused(e.to_string()))?;
        for contact in &contacts {
            let add = Action::Add { member: contact.identity, name: contact.name.clone() };
            self.append(&mut log, add, now)?;
        }
        let record = GroupRecord::new(log.group_id().0, now);
        self.publish(record, log, None, now)
    }

    /// Adds contact `contact` to `group`: they get the whole log, the others the new entry.
    pub fn group_add(
        &mut self,
        group: &str,
        contact: &str,
        now: Timestamp,
    ) -> Result<GroupView, EngineError> {
        let contact = self.contact_named(contact)?;
        self.change_group(group, now, |_, before| {
            if before.role(&contact.identity).is_some() {
                return Err(EngineError::AlreadyInGroup {
                    contact: contact.name.clone(),
                    group: before.name.clone(),
                });
            }
            if before.len() >= MAX_MEMBERS {
                return Err(EngineError::GroupFull(MAX_MEMBERS));
            }
            Ok(Action::Add { member: contact.identity, name: contact.name.clone() })
        })
    }

    /// Removes `member` (a contact name, or a member's name in the group) from `group`.
    pub fn group_remove(
        &mut self,
        group: &str,
        member: &str,
        now: Timestamp,
    ) -> Result<GroupView, EngineError> {
        self.change_group(group, now, |engine, before| {
            Ok(Action::Remove { member: engine.member_identity(before, member)? })
        })
    }

    /// Makes `member` an admin of `group` (the owner only).
    pub fn group_promote(
        &mut self,
        group: &str,
        member: &str,
        now: Timestamp,
    ) -> Result<GroupView, EngineError> {
        self.change_group(group, now, |engine, before| {
            Ok(Action::SetRole { member: engine.member_identity(before, member)?, role: Role::Admin })
        })
    }

    /// Renames `group`.
    pub fn group_rename(
        &mut self,
        group: &str,
        name: &str,
        now: Timestamp,
    ) -> Result<GroupView, EngineError> {
        self.change_group(group, now, |_, _| Ok(Action::Rename { name: name.to_owned() }))
    }

    /// Leaves `group`: the others are told, and nothing is sent to it from here any more.
    pub fn group_leave(&mut self, group: &str, now: Timestamp) -> Result<GroupView, EngineError> {
        self.change_group(group, now, |_, _| Ok(Action::Leave))
    }

    /// Appends to `group` the entry `action` makes of the group's current state, and tells the
    /// members.
    fn change_group(
        &mut self,
        group: &str,
        now: Timestamp,
        action: impl FnOnce(&Self, &State) -> Result<Action, EngineError>,
    ) -> Result<GroupView, EngineError> {
        let (record, mut log) = self.find_group(group)?;
        let before = log.state();
        let action = action(self, &before)?;
        self.append(&mut log, action, now)?;
        self.publish(record, log, Some(&before), now)
    }

    /// Every group this node keeps, by name.
    pub fn groups(&mut self) -> Result<Vec<GroupView>, EngineError> {
        let contacts = self.contacts_by_identity()?;
        let mut views = Vec::new();
        for record in self.store.groups()? {
            let log = self.log_of(&record)?;
            views.push(self.view(&record, &log, &contacts));
        }
        views.sort_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id)));
        Ok(views)
    }

    /// One group, by name or id prefix.
    pub fn group(&mut self, group: &str) -> Result<GroupView, EngineError> {
        let (record, log) = self.find_group(group)?;
        let contacts = self.contacts_by_identity()?;
        Ok(self.view(&record, &log, &contacts))
    }

    /// For each member who sent to `group`, the ranges of their counts that did not arrive here,
    /// between the first and the last that did (a member added later, or we, start counting
    /// wherever they were); members with none missing are left out.
    pub fn group_missing(&mut self, group: &str) -> Result<Vec<Gap>, EngineError> {
        let (record, _) = self.find_group(group)?;
        let me = *self.me.identity.public().as_bytes();
        let mut counts: std::collections::BTreeMap<[u8; 32], Vec<u64>> = Default::default();
        for message in self.store.messages(Some(&group_conversation(&GroupId(record.id))), usize::MAX)? {
            if let Some(info) = self.store.group_message(&message.id)?
                && info.sender != me
            {
                counts.entry(info.sender).or_default().push(info.sender_seq);
            }
        }
        let mut missing = Vec::new();
        for (sender, mut seqs) in counts {
            seqs.sort_unstable();
            seqs.dedup();
            // A jump of more than RESTORE_JUMP is a restore's (`skip_group_counts`), not lost texts.
            let ranges: Vec<[u64; 2]> = seqs
                .windows(2)
                .filter(|w| w[1] > w[0] + 1 && w[1] - w[0] <= RESTORE_JUMP)
                .map(|w| [w[0] + 1, w[1] - 1])
                .collect();
            if !ranges.is_empty()
                && let Ok(identity) = IdentityPublic::from_bytes(sender)
            {
                missing.push((identity, ranges));
            }
        }
        Ok(missing)
    }

    /// Sends `text` to every other member of `group`, one copy each in its own session; returns
    /// the message as stored in the group's conversation. A member with no contact here (added
    /// by another admin, not yet introduced) gets no copy, which is recorded as failed.
    pub fn send_group_text(
        &mut self,
        group: &str,
        text: &str,
        now: Timestamp,
    ) -> Result<StoredMessage, EngineError> {
        if text.len() > MAX_TEXT_LEN {
            return Err(EngineError::TooLarge { len: text.len(), max: MAX_TEXT_LEN });
        }
        let (mut record, log) = self.find_group(group)?;
        let state = log.state();
        let me = self.me.identity.public();
        if state.role(&me).is_none() {
            return Err(EngineError::NotInGroup(state.name));
        }
        let group_id = log.group_id();
        let sender_seq = record.next_seq;
        let body = Body::Group(Box::new(GroupMessage {
            group: group_id,
            sender_seq,
            log_n: log.last_n(),
            heads: heads_digest(&log.heads()),
            inner: Body::Text(text.to_owned()),
        }));
        let contacts = self.contacts_by_identity()?;
        let mut batch = SendGroup::default();
        let mut copies = Vec::new();
        for identity in members(&state).filter(|m| *m != me) {
            let copy = match contacts.get(&identity) {
                // One member who cannot be written to (no usable keys) holds up no one else.
                Some(contact) => match self.seal_to(contact, std::slice::from_ref(&body), now, &mut batch) {
                    Ok(ids) => GroupCopy {
                        member: *identity.as_bytes(),
                        contact: contact.name.clone(),
                        copy: ids[0],
                        status: Status::Queued,
                        reason: None,
                    },
                    Err(e) => GroupCopy {
                        member: *identity.as_bytes(),
                        contact: contact.name.clone(),
                        copy: MessageId([0; 16]),
                        status: Status::Failed,
                        reason: Some(e.to_string()),
                    },
                },
                None => GroupCopy {
                    member: *identity.as_bytes(),
                    contact: String::new(),
                    copy: MessageId([0; 16]),
                    status: Status::Failed,
                    reason: Some("no way to reach this member yet: their card has not arrived".to_owned()),
                },
            };
            copies.push(copy);
        }
        let id = self.stored_id(merpati_proto::group::message_id(group_id, &me, sender_seq));
        let sent = copies.iter().any(|c| c.status != Status::Failed);
        let message = StoredMessage {
            id,
            contact: group_conversation(&group_id),
            direction: Direction::Out,
            time: now,
            text: text.to_owned(),
            seq: Some(sender_seq),
            // Alone in the group, or with nobody reachable, there is nothing to wait for.
            status: if copies.is_empty() {
                Status::Sent
            } else if sent {
                Status::Queued
            } else {
                Status::Failed
            },
            reason: (!copies.is_empty() && !sent)
                .then(|| "no member of the group can be reached yet".to_owned()),
            order: 0,
        };
        let info = GroupMessageInfo { id, group: group_id.0, sender: *me.as_bytes(), sender_seq, copies };
        record.next_seq += 1;
        batch.changes.push(Change::PutMessage(message.clone()));
        batch.changes.push(Change::PutGroupMessage(info));
        batch.changes.push(Change::PutGroup(record));
        self.write_group(batch)?;
        // Followers see it as soon as it is queued.
        self.opened.push(message.clone());
        Ok(message)
    }

    /// Takes in the cards of a group's members: each member who is neither us nor a contact is
    /// kept as a member contact ([`member_contact_name`]), if the card's keys are signed by the
    /// identity our log names as a member. Returns those introduced, each with the welcome to
    /// send them (the log and our own card) when it is ours to start the session: of two
    /// members introduced to each other, the one with the lower identity key writes first and
    /// the other answers in that session, so a pair holds one session, not two crossed ones
    /// (a member's node watches a few mailboxes per session at its relays).
    pub(super) fn receive_group_cards(
        &mut self,
        contact: &Contact,
        group: GroupId,
        cards: Vec<MemberCard>,
        changes: &mut Vec<Change>,
        now: Timestamp,
    ) -> Result<Vec<Introduction>, EngineError> {
        let Some(record) = self.group_record(changes, &group)? else {
            tracing::debug!("cards of a group this node does not know, from {}", contact.name);
            return Ok(Vec::new());
        };
        let log = self.log_of(&record)?;
        let state = log.state();
        let me = self.me.identity.public();
        if state.role(&me).is_none() {
            return Ok(Vec::new());
        }
        // Cards come from an admin (who vouches for whom it adds) or from the member itself;
        // the keys are the member's own either way, but where to reach them is the sender's word.
        let admin = state.role(&contact.identity) == Some(Role::Admin);
        let mut known = self.contacts_by_identity()?;
        for change in changes.iter() {
            if let Change::PutContact(c) | Change::AddContact(c) = change {
                known.insert(c.identity, c.clone());
            }
        }
        let mut kept =
            known.keys().filter(|id| known.get(id).is_some_and(|c| is_member_contact(&c.name))).count();
        let mut introduced = Vec::new();
        for card in cards {
            let identity = *card.keys.bundle.identity();
            if identity == me
                || state.role(&identity).is_none()
                || !(admin || identity == contact.identity)
                || known.contains_key(&identity)
                || self.store.is_blocked(&identity)?
            {
                continue;
            }
            if kept >= self.max_member_contacts {
                tracing::warn!(
                    "a group card was dropped: this node keeps {MAX_MEMBER_CONTACTS} group members"
                );
                break;
            }
            kept += 1;
            let Some(member) = member_from_card(identity, card, now) else {
                tracing::warn!("a card from {} does not verify for the member it names", contact.name);
                continue;
            };
            changes.push(Change::PutContact(member.clone()));
            known.insert(identity, member.clone());
            let first = me.as_bytes() < identity.as_bytes();
            introduced.push((member, first.then(|| self.welcome(&log))));
        }
        Ok(introduced)
    }

    /// What a member who is new to us gets: the whole log, and our card.
    fn welcome(&self, log: &Log) -> Vec<Body> {
        let mut bodies = entry_bodies(log.group_id(), log.entries());
        bodies.extend(card_bodies(log.group_id(), std::iter::once(self.own_card())));
        bodies
    }

    /// Our own card: our keys, node and relays.
    fn own_card(&self) -> MemberCard {
        let (peer_id, addrs) = self.node_info.clone().unwrap_or_default();
        MemberCard {
            keys: ContactKeys {
                bundle: self.bundle.clone(),
                inbox: self.me.inbox(),
                last_resort: self.profile.prekeys.last_resort().cloned(),
            },
            peer_id,
            addrs: addrs.into_iter().take(MAX_HINTS).collect(),
            relays: self.relays.iter().take(MAX_HINTS).cloned().collect(),
        }
    }

    /// Marks `group`'s incoming messages read; returns how many were newly marked. With read
    /// receipts on, each sender is told, in its own session, naming the copies it sent us.
    pub fn mark_group_read(&mut self, group: &str, now: Timestamp) -> Result<usize, EngineError> {
        let (record, _) = self.find_group(group)?;
        let unread = self.store.unread(&group_conversation(&GroupId(record.id)))?;
        if unread.is_empty() {
            return Ok(0);
        }
        let mut batch = SendGroup::default();
        batch.changes = unread
            .iter()
            .map(|id| Change::SetStatus { id: *id, status: Status::Read, reason: None })
            .collect();
        if self.read_receipts {
            // By the sender's identity: the contact may have been renamed since (or adopted).
            let mut copies: Vec<([u8; 32], Vec<MessageId>)> = Vec::new();
            for id in &unread {
                let Some(info) = self.store.group_message(id)? else { continue };
                for copy in info.copies {
                    match copies.iter_mut().find(|(member, _)| *member == copy.member) {
                        Some((_, ids)) => ids.push(copy.copy),
                        None => copies.push((copy.member, vec![copy.copy])),
                    }
                }
            }
            let contacts = self.contacts_by_identity()?;
            for (member, ids) in copies {
                // A sender removed as a contact since is not told.
                let Some(contact) = IdentityPublic::from_bytes(member).ok().and_then(|id| contacts.get(&id))
                else {
                    continue;
                };
                let receipts: Vec<Body> = ids
                    .chunks(merpati_proto::frame::MAX_RECEIPT_IDS)
                    .map(|chunk| Body::Receipt { kind: ReceiptKind::Read, ids: chunk.to_vec() })
                    .collect();
                if let Err(e) = self.seal_to(contact, &receipts, now, &mut batch) {
                    tracing::warn!("read receipts could not be sealed for {}: {e}", contact.name);
                }
            }
        }
        self.write_group(batch)?;
        Ok(unread.len())
    }

    /// Takes in entries of a group's log sent by `contact`. A group we do not know is kept only
    /// if the entries hold its genesis and name the sender (nobody makes us keep a group they
    /// are not in), and while we keep fewer than [`MAX_GROUPS`]. Bad entries are dropped, each
    /// alone: they change nothing.
    ///
    /// Returns the welcomes to pass on: each member the entries made one (added by someone
    /// else) gets the whole log as we hold it, with whatever we wrote concurrently, so members
    /// converge even when an admin's change crossed another's `Add`.
    pub(super) fn receive_group_entries(
        &mut self,
        contact: &Contact,
        found: GroupEntries,
        changes: &mut Vec<Change>,
        now: Timestamp,
    ) -> Result<Vec<(Contact, Vec<Body>)>, EngineError> {
        let known = self.group_record(changes, &found.group)?;
        let new_group = known.is_none();
        let (record, mut log) = match known {
            Some(record) => {
                let log = self.log_of(&record)?;
                (record, log)
            }
            None => {
                if self.store.groups()?.len() >= MAX_GROUPS {
                    tracing::warn!(
                        "a group from {} was dropped: this node keeps {MAX_GROUPS} groups",
                        contact.name
                    );
                    return Ok(Vec::new());
                }
                let Some(genesis) = found.entries.iter().find(|e| e.n == 0) else {
                    tracing::debug!("entries of an unknown group from {} without its genesis", contact.name);
                    return Ok(Vec::new());
                };
                let Ok(log) = Log::new(genesis.clone()) else {
                    tracing::warn!("a group genesis from {} does not verify", contact.name);
                    return Ok(Vec::new());
                };
                let record = GroupRecord::new(found.group.0, now);
                (record, log)
            }
        };
        let before = log.len();
        let members_before = log.state();
        for entry in found.entries {
            match log.add(entry, now) {
                Ok(_) => {}
                Err(e) => tracing::warn!("a group entry from {} was refused: {e}", contact.name),
            }
        }
        // Entries authenticate themselves, so any member may pass on a known group's; a group
        // we do not know is kept only if it names its sender and us (someone added us), and
        // while its owner has fewer than `MAX_GROUPS_PER_OWNER` here.
        let state = log.state();
        let me = self.me.identity.public();
        if new_group {
            let named = |id: &IdentityPublic| state.owner == *id || state.members.contains_key(id);
            if !named(&contact.identity) || !named(&me) {
                tracing::warn!(
                    "entries of a group from {} that does not name both of us were dropped",
                    contact.name
                );
                return Ok(Vec::new());
            }
            if self.groups_owned_by(&state.owner)? >= MAX_GROUPS_PER_OWNER {
                tracing::warn!(
                    "a group from {} was dropped: its owner has {MAX_GROUPS_PER_OWNER} here",
                    contact.name
                );
                return Ok(Vec::new());
            }
        }
        if log.len() == before && !new_group {
            // Nothing new (a copy again, or entries still waiting for their parents).
            self.group_logs.insert(log.group_id(), log);
            return Ok(Vec::new());
        }
        let mut welcomes = Vec::new();
        if !new_group && state.role(&me).is_some() {
            let contacts = self.contacts_by_identity()?;
            for identity in members(&state) {
                if identity != me
                    && identity != contact.identity
                    && members_before.role(&identity).is_none()
                    && let Some(member) = contacts.get(&identity)
                {
                    welcomes.push((member.clone(), self.welcome(&log)));
                }
            }
        }
        changes.push(Change::PutGroup(updated(record, &log)));
        self.group_logs.insert(log.group_id(), log);
        Ok(welcomes)
    }

    /// Files a group message `contact` sent, if the group is ours and the sender a member of it
    /// as our log stands; returns it, or `None` when it is dropped.
    pub(super) fn receive_group_message(
        &mut self,
        contact: &Contact,
        (copy, sent_at): (MessageId, Timestamp),
        message: GroupMessage,
        changes: &mut Vec<Change>,
    ) -> Result<Option<StoredMessage>, EngineError> {
        let Some(record) = self.group_record(changes, &message.group)? else {
            tracing::warn!("a message from {} to a group this node does not know was dropped", contact.name);
            return Ok(None);
        };
        let state = self.log_of(&record)?.state();
        if state.role(&contact.identity).is_none() {
            // Removed, or never in: what it sends is not the group's.
            tracing::warn!("a group message from {}, who is not a member, was dropped", contact.name);
            return Ok(None);
        }
        if state.role(&self.me.identity.public()).is_none() {
            tracing::debug!("a message to a group we left was dropped");
            return Ok(None);
        }
        let id = self.stored_id(message.id(&contact.identity));
        let Body::Text(text) = message.inner else {
            // Files and long texts to groups are not sent by this version.
            tracing::warn!("a group message of a kind this version does not show was dropped");
            return Ok(None);
        };
        let stored = StoredMessage::received(
            id,
            &group_conversation(&message.group),
            sent_at,
            text,
            message.sender_seq,
        );
        changes.push(Change::PutMessage(stored.clone()));
        changes.push(Change::PutGroupMessage(GroupMessageInfo {
            id,
            group: message.group.0,
            sender: *contact.identity.as_bytes(),
            sender_seq: message.sender_seq,
            // The copy that came, so a read receipt can name it to its sender.
            copies: vec![GroupCopy {
                member: *contact.identity.as_bytes(),
                contact: contact.name.clone(),
                copy,
                status: Status::Delivered,
                reason: None,
            }],
        }));
        Ok(Some(stored))
    }

    /// The changes a member's receipt for copy `copy` of one of our group messages makes: only
    /// the member the copy went to may confirm it.
    pub(super) fn confirm_copy(
        &self,
        contact: &Contact,
        copy: &MessageId,
        status: Status,
    ) -> Result<Option<Change>, EngineError> {
        let Some(id) = self.store.group_copy(copy)? else { return Ok(None) };
        let Some(info) = self.store.group_message(&id)? else { return Ok(None) };
        // Ours only: a sender cannot mark read, here, what it sent us.
        let mine = info.sender == *self.me.identity.public().as_bytes()
            && info.copies.iter().any(|c| c.copy == *copy && c.member == *contact.identity.as_bytes());
        Ok(mine.then_some(Change::SetCopyStatus { copy: *copy, status, reason: None }))
    }

    /// Seals the welcomes [`Engine::receive_group_entries`] returned, starting sessions where
    /// there are none, into a batch whose sessions the caller persists with its own write. A
    /// member who cannot be written to is skipped.
    pub(super) fn pass_on(
        &mut self,
        welcomes: Vec<(Contact, Vec<Body>)>,
        now: Timestamp,
    ) -> Result<SendGroup, EngineError> {
        let mut batch = SendGroup::default();
        for (member, bodies) in welcomes {
            // Skipped alone: a member we cannot write to must not stop what else arrived.
            if let Err(e) = self.seal_to(&member, &bodies, now, &mut batch) {
                tracing::warn!("a group welcome could not be sealed for {}: {e}", member.name);
            }
        }
        Ok(batch)
    }

    /// The id this node stores a group message under: its group-wide id keyed with a secret of
    /// ours. Copies of one message still meet under one id, but nobody can send a one-to-one
    /// text under the id a group message will have, to keep it from being stored.
    fn stored_id(&self, group_wide: MessageId) -> MessageId {
        let key = merpati_proto::kdf::prf(self.me.inbox_secret.as_bytes(), STORED_ID_LABEL, &[&group_wide.0]);
        let mut id = [0u8; 16];
        id.copy_from_slice(&key[..16]);
        MessageId(id)
    }

    /// Signs an entry of ours after every head of `log` and adds it; refused if our role in
    /// the log does not allow it.
    fn append(&mut self, log: &mut Log, action: Action, now: Timestamp) -> Result<Entry, EngineError> {
        let (parents, n) = log.next_parents();
        let entry = Entry::sign(&self.me.identity, log.group_id(), n, parents, now, action)
            .map_err(|e| EngineError::GroupRefused(e.to_string()))?;
        match log.add(entry.clone(), now) {
            Ok(Added::New(_)) => Ok(entry),
            Ok(_) => Err(EngineError::GroupRefused("the change is already in the group".to_owned())),
            Err(e) => Err(EngineError::GroupRefused(e.to_string())),
        }
    }

    /// Writes `log` (one entry longer than when `before` was its state) to the store and tells
    /// the members: whoever was not a member before gets the whole log, the others (and whoever
    /// stopped being one, so they learn it) the entries they lack.
    fn publish(
        &mut self,
        record: GroupRecord,
        log: Log,
        before: Option<&State>,
        now: Timestamp,
    ) -> Result<GroupView, EngineError> {
        let after = log.state();
        let me = self.me.identity.public();
        let known = record.entries.len();
        let new_entries: Vec<Entry> = log.entries()[known.min(log.len())..].to_vec();
        let contacts = self.contacts_by_identity()?;
        let mut batch = SendGroup::default();
        let mut told: Vec<IdentityPublic> = Vec::new();
        let was_member = |identity: &IdentityPublic| before.is_some_and(|b| b.role(identity).is_some());
        for identity in before.into_iter().flat_map(members).chain(members(&after)) {
            if identity == me || told.contains(&identity) {
                continue;
            }
            told.push(identity);
            let Some(contact) = contacts.get(&identity) else { continue };
            let bodies = if was_member(&identity) {
                // The change, and how to reach whoever it brought in.
                let mut bodies = entry_bodies(log.group_id(), &new_entries);
                let cards = members(&after).filter(|m| !was_member(m) && *m != identity);
                bodies.extend(card_bodies(
                    log.group_id(),
                    cards.filter_map(|m| contacts.get(&m)).filter_map(card_of),
                ));
                bodies
            } else {
                // The whole log, and how to reach every other member.
                let mut bodies = entry_bodies(log.group_id(), log.entries());
                let cards = members(&after).filter(|m| *m != identity && *m != me);
                let mut cards: Vec<MemberCard> =
                    cards.filter_map(|m| contacts.get(&m)).filter_map(card_of).collect();
                cards.push(self.own_card());
                bodies.extend(card_bodies(log.group_id(), cards));
                bodies
            };
            // A member we cannot write to misses this change (others pass it on); the change
            // itself stands.
            if let Err(e) = self.seal_to(contact, &bodies, now, &mut batch) {
                tracing::warn!("a group change could not be sealed for {}: {e}", contact.name);
            }
        }
        let record = updated(record, &log);
        batch.changes.push(Change::PutGroup(record.clone()));
        self.write_group(batch)?;
        let view = self.view(&record, &log, &contacts);
        self.group_logs.insert(log.group_id(), log);
        Ok(view)
    }

    /// Seals `bodies` for `contact` into `batch`, starting a session if there is none; returns
    /// the frames' ids.
    fn seal_to(
        &mut self,
        contact: &Contact,
        bodies: &[Body],
        now: Timestamp,
        batch: &mut SendGroup,
    ) -> Result<Vec<MessageId>, EngineError> {
        // A session this batch started is on the batch's copy of the contact.
        let contact = batch.started(&contact.name).unwrap_or_else(|| contact.clone());
        let (session, started) = match contact.session {
            Some(id) => (id, false),
            None => (self.start_session(&contact, now, batch)?, true),
        };
        batch.touch(session, &contact.name);
        let mut ids = Vec::with_capacity(bodies.len());
        for body in bodies {
            let entry = self.seal_into_outbox(&session, &contact.name, body, now)?;
            ids.push(entry.id);
            batch.changes.push(Change::PutOutbox(entry));
        }
        if started {
            batch.changes.extend(self.seal_introduction(&session, &contact.name, now)?);
        }
        Ok(ids)
    }

    /// The group `reference` names: an exact name, or a prefix of its id in hex.
    fn find_group(&mut self, reference: &str) -> Result<(GroupRecord, Log), EngineError> {
        let wanted = reference.to_ascii_lowercase();
        let records = self.store.groups()?;
        // By the name each record keeps as its log last gave it: no log is read to look.
        let by_name: Vec<&GroupRecord> = records.iter().filter(|r| r.name == reference).collect();
        let found = if by_name.is_empty() {
            let by_id = |r: &&GroupRecord| wanted.len() >= MIN_ID_PREFIX && hex(&r.id).starts_with(&wanted);
            records.iter().filter(by_id).collect()
        } else {
            by_name
        };
        match found.as_slice() {
            [one] => {
                let record = (*one).clone();
                let log = self.log_of(&record)?;
                Ok((record, log))
            }
            [] => Err(EngineError::UnknownGroup(reference.to_owned())),
            _ => Err(EngineError::AmbiguousGroup {
                name: reference.to_owned(),
                ids: found.iter().map(|r| hex(&r.id)).collect(),
            }),
        }
    }

    /// The group `id` as `changes` (not yet written) or the store hold it.
    fn group_record(&self, changes: &[Change], id: &GroupId) -> Result<Option<GroupRecord>, EngineError> {
        let written = changes.iter().rev().find_map(|c| match c {
            Change::PutGroup(record) if record.id == id.0 => Some(record.clone()),
            _ => None,
        });
        match written {
            Some(record) => Ok(Some(record)),
            None => Ok(self.store.group(&id.0)?),
        }
    }

    /// After a restore from a backup: our count of texts to each group jumps to the restore's
    /// time in milliseconds, past any count the replaced copy used after the backup was made
    /// (counts go up by one per text), so no new text shares an id with one sent before and is
    /// taken for it. Members see one jump, which `group_missing` does not report as lost texts.
    pub(super) fn skip_group_counts(&mut self, restored_at: Timestamp) -> Result<(), EngineError> {
        let changes: Vec<Change> = self
            .store
            .groups()?
            .into_iter()
            .map(|record| {
                Change::PutGroup(GroupRecord { next_seq: record.next_seq.max(restored_at.0), ..record })
            })
            .collect();
        if !changes.is_empty() {
            self.store.apply(&changes)?;
        }
        Ok(())
    }

    /// How many of the groups kept here `owner` owns.
    fn groups_owned_by(&mut self, owner: &IdentityPublic) -> Result<usize, EngineError> {
        let mut count = 0;
        for record in self.store.groups()? {
            if self.log_of(&record)?.owner() == *owner {
                count += 1;
            }
        }
        Ok(count)
    }

    /// The log a record holds, from memory once read.
    fn log_of(&mut self, record: &GroupRecord) -> Result<Log, EngineError> {
        let id = GroupId(record.id);
        if let Some(log) = self.group_logs.get(&id) {
            return Ok(log.clone());
        }
        let corrupt = || EngineError::Store(StoreError::Corrupt { what: "group" });
        let mut entries = record.entries.iter().map(|bytes| Entry::from_bytes(bytes));
        let genesis = entries.next().ok_or_else(corrupt)?.map_err(|_| corrupt())?;
        let mut log = Log::new(genesis).map_err(|_| corrupt())?;
        // Stored parents first, as taken: each is taken at once, under the same rules.
        for entry in entries {
            log.add(entry.map_err(|_| corrupt())?, record.joined_at).map_err(|_| corrupt())?;
        }
        self.group_logs.insert(id, log.clone());
        Ok(log)
    }

    /// A contact by name, as the user typed it (see `names`).
    fn contact_named(&self, name: &str) -> Result<Contact, EngineError> {
        let name = self.resolve_contact(name)?;
        self.store.contact(&name)?.ok_or(EngineError::UnknownContact(name))
    }

    /// A member of `state` named by a contact name or by the name the group gave them.
    fn member_identity(&self, state: &State, member: &str) -> Result<IdentityPublic, EngineError> {
        if let Some(contact) = self.store.contact(member)?
            && state.role(&contact.identity).is_some()
        {
            return Ok(contact.identity);
        }
        let named: Vec<IdentityPublic> =
            state.members.iter().filter(|(_, m)| m.name == member).map(|(id, _)| *id).collect();
        match named.as_slice() {
            [one] => Ok(*one),
            [] => Err(EngineError::NotInGroupMember { member: member.to_owned(), group: state.name.clone() }),
            _ => Err(EngineError::GroupRefused(format!(
                "\"{member}\" names several members: use your contact names"
            ))),
        }
    }

    fn contacts_by_identity(&self) -> Result<HashMap<IdentityPublic, Contact>, EngineError> {
        Ok(self.store.contacts()?.into_iter().map(|c| (c.identity, c)).collect())
    }

    fn view(
        &self,
        record: &GroupRecord,
        log: &Log,
        contacts: &HashMap<IdentityPublic, Contact>,
    ) -> GroupView {
        let state = log.state();
        let me = self.me.identity.public();
        let member = |identity: IdentityPublic, name: Option<String>, role: Role| GroupMember {
            contact: contacts.get(&identity).map(|c| c.name.clone()).filter(|n| !is_member_contact(n)),
            owner: identity == state.owner,
            me: identity == me,
            identity,
            name,
            role,
        };
        let mut members = vec![member(state.owner, None, Role::Admin)];
        members.extend(state.members.iter().map(|(id, m)| member(*id, Some(m.name.clone()), m.role)));
        GroupView { id: GroupId(record.id), role: state.role(&me), name: state.name, members }
    }
}

/// [`card_of`], for tests that pass cards on by hand.
#[cfg(test)]
pub(super) fn tests_card_of(contact: &Contact) -> Option<MemberCard> {
    card_of(contact)
}

/// A contact's card, as we hold their keys, node and relays; none without keys.
fn card_of(contact: &Contact) -> Option<MemberCard> {
    Some(MemberCard {
        keys: ContactKeys {
            bundle: contact.bundle.clone()?,
            inbox: contact.inbox?,
            last_resort: contact.last_resort.clone(),
        },
        peer_id: contact.peer_id.clone(),
        addrs: contact.addrs.iter().take(MAX_HINTS).cloned().collect(),
        relays: contact.relays.iter().take(MAX_HINTS).cloned().collect(),
    })
}

/// The member contact a card makes, if its keys verify for `identity`; its node and relays are
/// checked as a contact's own announcements are.
fn member_from_card(identity: IdentityPublic, card: MemberCard, now: Timestamp) -> Option<Contact> {
    let mut member = super::requests::stranger_contact(&member_contact_name(&identity), identity, now);
    if !super::restore::learn_keys(&mut member, card.keys) {
        return None;
    }
    // Keys a first contact can no longer be written to (an old card passed on) are no card.
    let bundle = member.bundle.as_ref()?;
    merpati_proto::invite::bundle_at(bundle, member.last_resort.as_ref(), now).ok()?;
    if !card.peer_id.is_empty() {
        super::relays::apply_control(
            &mut member,
            Control::NodeInfo { peer_id: card.peer_id, addrs: card.addrs },
        );
    }
    super::relays::apply_control(&mut member, Control::RelayHints(card.relays));
    Some(member)
}

/// `cards` as group-cards controls, at most [`MAX_CARDS`] each.
fn card_bodies(group: GroupId, cards: impl IntoIterator<Item = MemberCard>) -> Vec<Body> {
    let cards: Vec<MemberCard> = cards.into_iter().collect();
    cards
        .chunks(MAX_CARDS)
        .map(|chunk| Body::Control(Control::GroupCards { group, cards: chunk.to_vec() }))
        .collect()
}

/// Every member of `state`, the owner first.
fn members(state: &State) -> impl Iterator<Item = IdentityPublic> + '_ {
    std::iter::once(state.owner).chain(state.members.keys().copied())
}

/// `record` holding `log`: its entries, and the names its state gives, for showing messages
/// without folding the log.
fn updated(record: GroupRecord, log: &Log) -> GroupRecord {
    let state = log.state();
    GroupRecord {
        entries: log.entries().iter().map(|e| ByteBuf::from(e.to_bytes())).collect(),
        name: state.name,
        names: state.members.iter().map(|(id, m)| (*id.as_bytes(), m.name.clone())).collect(),
        owner: *state.owner.as_bytes(),
        ..record
    }
}

/// `entries` as group-entries controls, at most [`MAX_ENTRIES_PER_FRAME`] each.
fn entry_bodies(group: GroupId, entries: &[Entry]) -> Vec<Body> {
    entries
        .chunks(MAX_ENTRIES_PER_FRAME)
        .map(|chunk| Body::Control(Control::GroupEntries(GroupEntries { group, entries: chunk.to_vec() })))
        .collect()
}
