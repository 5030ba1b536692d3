//! After a restore from a backup: new sessions with every contact, and what was never confirmed
//! sent again in them, on both sides.
//!
//! A backup holds no session keys, so a restored node cannot read or write any conversation's
//! old session. [`Engine::resume_after_restore`] starts a new session with every contact it
//! talked to and tells them, in it, that it was restored ([`Control::Restored`]); it then seals
//! again, with their ids, its own messages the contacts never confirmed. A contact's node that
//! reads the notice ([`Engine::accept_restore`], from `incoming`) writes to the new session from
//! then on and does the same with its own unconfirmed messages, so nothing either side sent is
//! lost by the move. The receiving store keeps one message per id, so a copy the other side
//! already had is not shown twice.

use merpati_proto::Timestamp;
use merpati_proto::blob::{Content, Descriptor};
use merpati_proto::fragment::{CONTENT_TEXT, split};
use merpati_proto::frame::{Body, ContactKeys, Control, MAX_TEXT_LEN};
use merpati_proto::identity::is_last_resort;
use merpati_proto::session::SessionId;

use super::outgoing::{SendGroup, queue_entry};
use super::{Engine, EngineError};
use crate::store::{Change, Contact, Direction, PartOf, Status, Store, StoredMessage, TransferSide};

/// What [`Engine::resume_after_restore`] did, contact by contact.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Resumed {
    /// Contacts told of the restore in a new session, with how many of our messages to them
    /// were queued again.
    pub told: Vec<(String, usize)>,
    /// Contacts no new session could be started with, and why (no keys of theirs are known, or
    /// their prekeys expired): they need to send a new invite.
    pub unreachable: Vec<(String, String)>,
}

impl<S: Store> Engine<S> {
    /// Our keys for a first contact, as a control message: what a contact needs to start a new
    /// session with us, as our invite would give it.
    pub(super) fn keys_body(&self) -> Body {
        Body::Control(Control::Keys(Box::new(ContactKeys {
            bundle: self.bundle.clone(),
            inbox: self.me.inbox(),
            last_resort: self.profile.prekeys.last_resort().cloned(),
        })))
    }

    /// Tells every contact with a session our keys again, in one write per contact: the
    /// maintenance pass does so when our last-resort prekey rotates (every 30 days), so the keys
    /// a contact holds for us stay usable (a last-resort prekey lives 400 days). Sessions not in
    /// memory before are dropped from it again afterwards. Returns how many contacts were told.
    pub fn tell_keys(&mut self, now: Timestamp) -> Result<usize, EngineError> {
        let body = self.keys_body();
        let mut told = 0;
        for contact in self.store.contacts()? {
            let Some(id) = contact.session else { continue };
            let cached = self.sessions.contains_key(&id);
            let mut group = SendGroup::default();
            match self.seal_into_outbox(&id, &contact.name, &body, now) {
                Ok(entry) => {
                    group.changes.push(Change::PutOutbox(entry));
                    group.touch(id, &contact.name);
                    self.write_group(group)?;
                    told += 1;
                }
                // A broken session carries nothing; the contact gets our keys with the next one.
                Err(e) => tracing::debug!("keys not sent to {}: {e}", contact.name),
            }
            if !cached {
                self.forget_session(&id);
            }
        }
        Ok(told)
    }

    /// Starts a new session with every contact that has none and that we talked to (the
    /// restore dropped every session), tells them of the restore at `restored_at`, and queues
    /// again our messages they never confirmed. Contacts already in a new session are skipped,
    /// so running it again after an interruption only finishes the job.
    pub fn resume_after_restore(
        &mut self,
        restored_at: Timestamp,
        now: Timestamp,
    ) -> Result<Resumed, EngineError> {
        let mut resumed = Resumed::default();
        self.skip_group_counts(restored_at)?;
        for contact in self.store.contacts()? {
            if contact.session.is_some() || !self.talked_to(&contact)? {
                continue;
            }
            let mut group = SendGroup::default();
            match self.restart_conversation(&contact, restored_at, now, &mut group) {
                Ok(again) => {
                    self.write_group(group)?;
                    resumed.told.push((contact.name.clone(), again));
                }
                Err(e) => {
                    self.abandon_group(&group);
                    if matches!(e, EngineError::Store(_)) {
                        return Err(e);
                    }
                    resumed.unreachable.push((contact.name.clone(), e.to_string()));
                }
            }
        }
        Ok(resumed)
    }

    /// Whether there is anything between us and `contact`: a contact added but never written
    /// to is left alone, as it was before the restore.
    fn talked_to(&self, contact: &Contact) -> Result<bool, EngineError> {
        Ok(contact.last_heard.is_some() || !self.store.messages(Some(&contact.name), 1)?.is_empty())
    }

    /// Seals into `group` a new session with `contact`, the restore notice and our unconfirmed
    /// messages; returns how many messages were sealed again.
    fn restart_conversation(
        &mut self,
        contact: &Contact,
        restored_at: Timestamp,
        now: Timestamp,
        group: &mut SendGroup,
    ) -> Result<usize, EngineError> {
        let id = self.start_session(contact, now, group)?;
        let notice = Body::Control(Control::Restored { at: restored_at });
        let entry = self.seal_into_outbox(&id, &contact.name, &notice, now)?;
        group.changes.push(Change::PutOutbox(entry));
        let unconfirmed = self.unconfirmed(&contact.name)?;
        for message in &unconfirmed {
            let changes = self.seal_again(&id, message, now)?;
            group.changes.extend(changes);
        }
        // As after any session we start: so they can start one with us again one day.
        let introduction = self.seal_introduction(&id, &contact.name, now)?;
        group.changes.extend(introduction);
        Ok(unconfirmed.len())
    }

    /// A contact's node, restored from a backup at `at`, wrote in session `id`: unless an equal
    /// or later restore was accepted before, that session becomes the one we write to, what was
    /// queued in the old one is dropped (no copy of theirs can read it any more), and our
    /// messages they never confirmed are sealed again in the new one. Adds the changes to
    /// `changes` (the contact's record among them); returns whether the restore was accepted.
    pub(super) fn accept_restore(
        &mut self,
        id: SessionId,
        mut contact: Contact,
        at: Timestamp,
        now: Timestamp,
        changes: &mut Vec<Change>,
    ) -> Result<bool, EngineError> {
        // Their clock, but never ahead of ours: a restore dated in the future would make every
        // later one look older.
        let at = at.min(now);
        if contact.restored_at.is_some_and(|last| at <= last) {
            tracing::debug!("ignoring a restore notice from {} no newer than the last one", contact.name);
            return Ok(false);
        }
        // What waits in older sessions: written to mailboxes of the new session it stays.
        let new_mailboxes = match self.session(&id, now)? {
            Some(session) => session.state().peer_mailboxes.ids.clone(),
            None => Vec::new(),
        };
        for head in self.store.outbox_queue(&contact.name, usize::MAX)? {
            let in_new =
                self.store.outbox_entry(&head.id)?.is_some_and(|e| new_mailboxes.contains(&e.mailbox));
            if !in_new {
                changes.push(Change::RemoveOutbox(head.id));
            }
        }
        for message in self.unconfirmed(&contact.name)? {
            let again = self.seal_again(&id, &message, now)?;
            changes.extend(again);
        }
        contact.session = Some(id);
        contact.restored_at = Some(at);
        changes.push(Change::PutContact(contact));
        Ok(true)
    }

    /// Our messages to `contact` that they never confirmed (queued, or left at their node or
    /// relays without a receipt since), oldest first.
    fn unconfirmed(&self, contact: &str) -> Result<Vec<StoredMessage>, EngineError> {
        let mut messages = self.store.messages(Some(contact), usize::MAX)?;
        messages.retain(|m| {
            m.direction == Direction::Out
                && matches!(m.status, Status::Queued | Status::Sent | Status::Stored { .. })
        });
        Ok(messages)
    }

    /// Seals `message` again in session `id` under its own id: a text (in pieces when long, the
    /// pieces' group id being the message id, as when it was first sent) or a file whose
    /// description this node still has. Returns the outbox changes; a file whose description is
    /// gone (its bytes were never here) is skipped, not sent as its caption.
    fn seal_again(
        &mut self,
        id: &SessionId,
        message: &StoredMessage,
        now: Timestamp,
    ) -> Result<Vec<Change>, EngineError> {
        let contact = message.contact.as_str();
        let bodies = if self.store.file_info(&message.id)?.is_some() {
            match self.file_description(message)? {
                Some(file) => vec![(Some(message.id), Body::File(file))],
                None => {
                    tracing::warn!("a file to {contact} cannot be sent again: its description is gone");
                    return Ok(Vec::new());
                }
            }
        } else if message.text.len() > MAX_TEXT_LEN {
            let pieces = split(CONTENT_TEXT, message.text.as_bytes(), message.id.0)
                .map_err(|_| EngineError::TooLarge { len: message.text.len(), max: MAX_TEXT_LEN })?;
            pieces.into_iter().map(|piece| (None, Body::Fragment(piece))).collect()
        } else {
            vec![(Some(message.id), Body::Text(message.text.clone()))]
        };
        let mut changes = Vec::with_capacity(bodies.len() * 2);
        for (as_id, body) in bodies {
            let mut rng = self.rng.clone();
            let session =
                self.session(id, now)?.ok_or_else(|| EngineError::UnknownContact(contact.to_owned()))?;
            let sealed = match as_id {
                Some(as_id) => session.seal_as(&body, as_id, now, &mut rng),
                None => session.seal(&body, now, &mut rng),
            };
            self.rng = rng;
            let sealed = sealed?;
            if as_id.is_none() {
                changes.push(Change::NotePartOf {
                    id: sealed.message_id,
                    part_of: PartOf { message: message.id },
                });
            }
            changes.push(Change::PutOutbox(queue_entry(sealed, contact, now)));
        }
        Ok(changes)
    }

    /// The description of the file `message` carries, if it carries one this node can send
    /// again: one it sent inside its description, or one it uploads.
    fn file_description(&self, message: &StoredMessage) -> Result<Option<Descriptor>, EngineError> {
        let Some(info) = self.store.file_info(&message.id)? else { return Ok(None) };
        if let Some(transfer) = self.store.transfer(&message.id)? {
            return Ok(match transfer.side {
                TransferSide::Upload { .. } => Descriptor::decode(&transfer.descriptor).ok(),
                TransferSide::Download { .. } => None,
            });
        }
        let Some(data) = self.store.file_data(&message.id)? else { return Ok(None) };
        Ok(Some(Descriptor {
            len: info.len,
            hash: info.hash,
            media_type: info.media_type,
            name: info.name,
            caption: message.text.clone(),
            thumbnail: Vec::new(),
            content: Content::Inline(data),
        }))
    }
}

/// Takes a contact's keys (from [`Control::Keys`]) into their record if they are theirs, signed,
/// and not older than the ones it holds; returns whether the record changed. Expiry is not
/// checked here: a first contact checks it when it is written, as for an invite's keys.
pub(super) fn learn_keys(contact: &mut Contact, keys: ContactKeys) -> bool {
    let ContactKeys { bundle, inbox, last_resort } = keys;
    let ignore = |why: &str| {
        tracing::debug!("ignoring keys from {}: {why}", contact.name);
        false
    };
    if *bundle.identity() != contact.identity {
        return ignore("another identity's");
    }
    if bundle.verify(bundle.prekey.created_at).is_err() {
        return ignore("the bundle does not verify");
    }
    if let Some(prekey) = &last_resort
        && (!is_last_resort(prekey.id)
            || prekey.verify(bundle.identity(), &bundle.device_id(), prekey.created_at).is_err())
    {
        return ignore("the last-resort prekey does not verify");
    }
    // Relays may reorder envelopes across sessions: older keys never replace newer ones.
    if let Some(held) = &contact.bundle
        && held.device_id() == bundle.device_id()
        && held.prekey.created_at > bundle.prekey.created_at
    {
        return ignore("older than the keys held");
    }
    let changed = contact.bundle.as_ref() != Some(&bundle)
        || contact.inbox != Some(inbox)
        || (last_resort.is_some() && contact.last_resort != last_resort);
    contact.bundle = Some(bundle);
    contact.inbox = Some(inbox);
    if last_resort.is_some() {
        contact.last_resort = last_resort;
    }
    changed
}
