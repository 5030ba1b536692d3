//! Outgoing messages: sealing into the outbox, and what each delivery attempt's result changes.
//!
//! `send_text` (or `send_texts`, for sends that share one write) returns once the messages and
//! their envelopes are durably queued. The daemon then asks for [`Engine::due_batches`]: per
//! contact, its oldest envelopes, tried together directly and, when the contact's node cannot take
//! them, deposited at every one of the contact's relays; it reports the results with
//! [`Engine::attempts_finished`]. An envelope the node or at least one relay took leaves the
//! outbox; failures back off exponentially with jitter (at least as long as a rate-limiting
//! refusal asks) until the message's lifetime (30 days) runs out.

use merpati_proto::Timestamp;
use merpati_proto::blob::{Content, Descriptor};
use merpati_proto::fragment::{CONTENT_TEXT, MAX_FRAGMENT_COUNT, MAX_REASSEMBLED_LEN, split};
use merpati_proto::frame::{Body, MAX_TEXT_LEN, MessageId, ReceiptKind};
use merpati_proto::mailbox::MailboxId;
use merpati_proto::session::{Sealed, Session, SessionId};
use merpati_proto::wire::{self, Refusal};
use rand_core::Rng;

use super::{DEFAULT_MESSAGE_LIFETIME, Engine, EngineError, RECEIPT_DEADLINE, RETRY_BASE, RETRY_MAX};
use crate::store::{Change, Contact, Direction, FileInfo, OutboxEntry, PartOf, Status, Store, StoredMessage};

/// One delivery to try: an outbox entry with where its recipient's node can be reached.
#[derive(Debug, Clone)]
pub struct Attempt {
    /// The outbox entry's id (the message id inside the envelope).
    pub id: MessageId,
    /// The contact's name.
    pub contact: String,
    /// The contact's libp2p peer id (bytes); empty while unknown (a contact who reached us
    /// through a relay and whose `NodeInfo` has not arrived): then only the relays can take it.
    pub peer_id: Vec<u8>,
    /// The contact's known addresses (binary multiaddrs).
    pub addrs: Vec<Vec<u8>>,
    /// The contact's relays (binary multiaddrs ending in `/p2p/<relay peer id>`), where the
    /// envelope is deposited when the contact's node cannot take it.
    pub relays: Vec<Vec<u8>>,
    /// The mailbox the envelope is addressed to (its header's), under which relays store it.
    pub mailbox: MailboxId,
    /// The envelope.
    pub envelope: Vec<u8>,
}

/// How a delivery attempt ended.
#[derive(Debug, Clone)]
pub enum AttemptResult {
    /// The peer's node stored the envelope.
    Accepted,
    /// The peer's node refused it.
    Refused(Refusal),
    /// The peer could not be reached (offline, no route, timeout) and has no relays.
    Unreachable(String),
    /// The peer's node could not take it, and the envelope was offered to each of the contact's
    /// `total` relays: `accepted` stored it; `refusals` are the answers of those that refused
    /// (relays that could not be reached give none).
    Deposited {
        /// How many relays stored the envelope.
        accepted: u8,
        /// How many relays it was offered to.
        total: u8,
        /// The refusals received.
        refusals: Vec<Refusal>,
    },
}

/// What one send carries.
#[derive(Clone, Copy)]
enum Outgoing<'a> {
    /// A text, of any length up to 1 MiB.
    Text(&'a str),
    /// A file's description (its caption is the message's text).
    File(&'a Descriptor),
}

/// The change that keeps the file message `id` carries, as a sender or a receiver holds it.
pub(super) fn file_change(id: MessageId, file: &Descriptor) -> Change {
    let data = match &file.content {
        Content::Inline(data) => Some(zeroize::Zeroizing::new(data.to_vec())),
        Content::Blob { .. } => None,
    };
    let info = FileInfo {
        name: file.name.clone(),
        media_type: file.media_type.clone(),
        len: file.len,
        hash: file.hash,
        here: data.is_some(),
    };
    Change::PutFile { id, info, data }
}

/// What the sends of one group sealed, not yet written: one durable write for all.
#[derive(Default)]
pub(super) struct SendGroup {
    pub(super) changes: Vec<Change>,
    /// Sessions that sealed, with their contact, in first-touched order: each is persisted once,
    /// in its final state.
    sessions: Vec<(SessionId, String)>,
    /// Contacts whose first session the group started, as they will be stored.
    contacts: Vec<Contact>,
}

impl SendGroup {
    /// The contact as this group stores it, if the group started its session.
    pub(super) fn started(&self, name: &str) -> Option<Contact> {
        self.contacts.iter().find(|c| c.name == name).cloned()
    }

    /// Its changes and the sessions it touched (with their contacts), for a caller that
    /// persists the sessions itself.
    pub(super) fn into_parts(self) -> (Vec<Change>, Vec<(SessionId, String)>) {
        (self.changes, self.sessions)
    }

    pub(super) fn touch(&mut self, session: SessionId, contact: &str) {
        if !self.sessions.iter().any(|(id, _)| *id == session) {
            self.sessions.push((session, contact.to_owned()));
        }
    }
}

impl<S: Store> Engine<S> {
    /// Encrypts `text` for contact `to` and queues it durably. Returns the stored message.
    pub fn send_text(&mut self, to: &str, text: &str, now: Timestamp) -> Result<StoredMessage, EngineError> {
        self.send_texts(&[(to, text)], now)
            .pop()
            .unwrap_or_else(|| Err(EngineError::UnknownContact(to.to_owned())))
    }

    /// Encrypts and queues several texts, in order, with one durable write for all (group
    /// commit: sends that arrive together wait for one flush, not one each). Returns one result
    /// per send, as [`Engine::send_text`] would: a send that is refused (an unknown contact, a
    /// text too long) does not hold up the others, and if the write fails, none is queued.
    pub fn send_texts(
        &mut self,
        sends: &[(&str, &str)],
        now: Timestamp,
    ) -> Vec<Result<StoredMessage, EngineError>> {
        let mut group = SendGroup::default();
        let results: Vec<Result<StoredMessage, EngineError>> = sends
            .iter()
            .map(|(to, text)| self.seal_message(to, Outgoing::Text(text), now, &mut group))
            .collect();
        self.queue_group(group, results)
    }

    /// Queues a file for contact `to` (its description, with the file inside when it is small);
    /// returns the stored message, whose text is the caption. A file that travels as a blob
    /// comes with its `upload`, kept with the message in the same write.
    pub fn send_file(
        &mut self,
        to: &str,
        file: &Descriptor,
        upload: Option<crate::store::Transfer>,
        now: Timestamp,
    ) -> Result<StoredMessage, EngineError> {
        file.validate().map_err(|e| EngineError::InvalidFile(e.to_string()))?;
        let mut group = SendGroup::default();
        let result = self.seal_message(to, Outgoing::File(file), now, &mut group);
        if let (Ok(message), Some(transfer)) = (&result, upload) {
            // The sender's copy is in its spool, to upload and to save from.
            for change in &mut group.changes {
                if let Change::PutFile { id, info, .. } = change
                    && *id == message.id
                {
                    info.here = true;
                }
            }
            group.changes.push(Change::PutTransfer { id: message.id, transfer });
        }
        let queued = self
            .queue_group(group, vec![result])
            .pop()
            .unwrap_or_else(|| Err(EngineError::UnknownContact(to.to_owned())))?;
        // Followers see it as soon as it is queued, as a text.
        self.opened.push(queued.clone());
        Ok(queued)
    }

    /// Writes what a group of sends sealed, with its sessions, in one durable write; if it
    /// fails, no send of the group is queued.
    pub(super) fn queue_group(
        &mut self,
        group: SendGroup,
        mut results: Vec<Result<StoredMessage, EngineError>>,
    ) -> Vec<Result<StoredMessage, EngineError>> {
        if let Err(e) = self.write_group(group) {
            // The first send queued gets the error itself; the rest were not saved either.
            let reason = e.to_string();
            let mut error = Some(e);
            for result in results.iter_mut().filter(|r| r.is_ok()) {
                *result = Err(error.take().unwrap_or_else(|| EngineError::NotSaved(reason.clone())));
            }
        }
        results
    }

    /// Writes `group`'s changes with the final state of every session it touched, in one
    /// durable write; if that fails, those sessions are forgotten in memory (they are ahead of
    /// the disk).
    pub(super) fn write_group(&mut self, mut group: SendGroup) -> Result<(), EngineError> {
        for (id, contact) in &group.sessions {
            if let Some(session) = self.sessions.get(id) {
                group.changes.extend(self.persist_session(session, contact));
            }
        }
        if group.changes.is_empty() {
            return Ok(());
        }
        if let Err(e) = self.store.apply(&group.changes) {
            self.abandon_group(&group);
            return Err(e.into());
        }
        Ok(())
    }

    /// Forgets in memory every session `group` touched, which is not written.
    pub(super) fn abandon_group(&mut self, group: &SendGroup) {
        for (id, _) in &group.sessions {
            self.forget_session(id);
        }
    }

    /// Starts a session with `contact` (from their invite's bundle) for `group`: the session
    /// start (where our node and relays are) is sealed first, and the contact's record names the
    /// session, both in the group's changes.
    pub(super) fn start_session(
        &mut self,
        contact: &Contact,
        now: Timestamp,
        group: &mut SendGroup,
    ) -> Result<SessionId, EngineError> {
        // A contact without keys reached us first and never sent them: after a restore from a
        // backup, which keeps no session, there is nothing to start one with.
        let (Some(bundle), Some(inbox)) = (contact.bundle.as_ref(), contact.inbox) else {
            return Err(EngineError::NoKeys(contact.name.clone()));
        };
        // The invite's rotating prekey, or its last-resort one once that expired.
        let bundle = merpati_proto::invite::bundle_at(bundle, contact.last_resort.as_ref(), now)
            .map_err(|e| EngineError::InvalidInvite(format!("{}'s invite: {e}", contact.name)))?;
        let session = Session::initiate(
            &self.profile.cert,
            &self.profile.device_static,
            &bundle,
            inbox,
            now,
            &mut self.rng,
        )?;
        let id = session.id();
        self.cache_session(session, &contact.name);
        // Ahead of the text: if the contact fetches our first contact from a relay, these
        // are how it learns which node to answer (a relay does not say who deposited).
        let controls = self.seal_session_start(&id, &contact.name, now)?;
        let started = Contact { session: Some(id), ..contact.clone() };
        group.changes.push(Change::PutContact(started.clone()));
        group.changes.extend(controls);
        group.contacts.retain(|c| c.name != contact.name);
        group.contacts.push(started);
        group.touch(id, &contact.name);
        Ok(id)
    }

    /// Seals one text or file of a group into `group`'s changes, starting a session with the
    /// contact if there is none yet. Its session is persisted with the group.
    fn seal_message(
        &mut self,
        to: &str,
        outgoing: Outgoing<'_>,
        now: Timestamp,
        group: &mut SendGroup,
    ) -> Result<StoredMessage, EngineError> {
        let text = match outgoing {
            Outgoing::Text(text) => text,
            Outgoing::File(file) => &file.caption,
        };
        if text.len() > MAX_REASSEMBLED_LEN {
            return Err(EngineError::TooLarge { len: text.len(), max: MAX_REASSEMBLED_LEN });
        }
        // A contact whose session this group started is not in the store yet.
        let contact = match group.contacts.iter().find(|c| c.name == to) {
            Some(contact) => contact.clone(),
            None => self.store.contact(to)?.ok_or_else(|| EngineError::UnknownContact(to.to_owned()))?,
        };
        // A contact who never answered may hold what we send as a contact request, which keeps
        // 16 envelopes and 256 KiB: a long text's pieces would not all be kept.
        if text.len() > MAX_TEXT_LEN && contact.last_heard.is_none() {
            return Err(EngineError::TooLargeBeforeAnswer {
                contact: contact.name.clone(),
                len: text.len(),
                max: MAX_TEXT_LEN,
            });
        }
        let mut started_here = false;
        let session_id = match contact.session {
            Some(id) => id,
            None => {
                started_here = true;
                self.start_session(&contact, now, group)?
            }
        };
        let mut rng = self.rng.clone();
        // A long text goes as fragments, one frame each; their group id is the text's id.
        let (long_id, bodies) = if let Outgoing::File(file) = outgoing {
            (None, vec![Body::File(file.clone())])
        } else if text.len() > MAX_TEXT_LEN {
            let mut group_id = [0u8; 16];
            rng.fill_bytes(&mut group_id);
            let pieces = split(CONTENT_TEXT, text.as_bytes(), group_id)
                .map_err(|_| EngineError::TooLarge { len: text.len(), max: MAX_REASSEMBLED_LEN })?;
            (Some(MessageId(group_id)), pieces.into_iter().map(Body::Fragment).collect())
        } else {
            (None, vec![Body::Text(text.to_owned())])
        };
        let Some(session) = self.session(&session_id, now)? else {
            return Err(EngineError::UnknownContact(to.to_owned()));
        };
        let mut sealed_all = Vec::with_capacity(bodies.len());
        let mut refused = None;
        for body in &bodies {
            match session.seal(body, now, &mut rng) {
                Ok(sealed) => sealed_all.push(sealed),
                Err(e) => {
                    refused = Some(e);
                    break;
                }
            }
        }
        self.rng = rng;
        let touched = group.sessions.iter().any(|(id, _)| *id == session_id);
        if let Some(e) = refused {
            // A refused seal leaves the session as it was (earlier texts of the group stand);
            // one the group has not touched is reloaded from the store on its next use.
            if !touched {
                self.forget_session(&session_id);
                return Err(e.into());
            }
            // Pieces of this text sealed before the refusal moved a session the group persists:
            // they are queued all the same, so its sequence numbers stay unbroken (the receiver
            // gives the incomplete text up after a while).
            for sealed in sealed_all {
                group.changes.push(Change::PutOutbox(queue_entry(sealed, &contact.name, now)));
            }
            return Err(e.into());
        }
        group.touch(session_id, &contact.name);
        let Some(first) = sealed_all.first() else {
            return Err(EngineError::TooLarge { len: 0, max: MAX_REASSEMBLED_LEN });
        };
        let message = StoredMessage {
            id: long_id.unwrap_or(first.message_id),
            contact: contact.name.clone(),
            direction: Direction::Out,
            time: now,
            text: text.to_owned(),
            seq: Some(first.seq),
            status: Status::Queued,
            reason: None,
            order: 0,
        };
        group.changes.push(Change::PutMessage(message.clone()));
        if let Outgoing::File(file) = outgoing {
            group.changes.push(file_change(message.id, file));
        }
        for sealed in sealed_all {
            if long_id.is_some() {
                let part_of = PartOf { message: message.id };
                group.changes.push(Change::NotePartOf { id: sealed.message_id, part_of });
            }
            group.changes.push(Change::PutOutbox(queue_entry(sealed, &contact.name, now)));
        }
        if started_here {
            // Part of the group's session step: a failure forgets the session like the text's.
            match self.seal_introduction(&session_id, &contact.name, now) {
                Ok(introduction) => group.changes.extend(introduction),
                Err(e) => {
                    self.forget_session(&session_id);
                    return Err(e);
                }
            }
        }
        Ok(message)
    }

    /// Marks `contact`'s incoming messages read; when read receipts are on, tells the contact in
    /// one receipt per 64 messages. Returns how many were newly marked.
    pub fn mark_read(&mut self, contact: &str, now: Timestamp) -> Result<usize, EngineError> {
        let found =
            self.store.contact(contact)?.ok_or_else(|| EngineError::UnknownContact(contact.to_owned()))?;
        // The unread index: what a call costs is what is unread, not the conversation.
        let unread: Vec<MessageId> = self.store.unread(contact)?;
        if unread.is_empty() {
            return Ok(0);
        }
        let mut changes: Vec<Change> = unread
            .iter()
            .map(|id| Change::SetStatus { id: *id, status: Status::Read, reason: None })
            .collect();
        if let (true, Some(session_id)) = (self.read_receipts, found.session) {
            let mut rng = self.rng.clone();
            let Some(session) = self.session(&session_id, now)? else {
                return Err(EngineError::UnknownContact(contact.to_owned()));
            };
            for ids in unread.chunks(merpati_proto::frame::MAX_RECEIPT_IDS) {
                let receipt = Body::Receipt { kind: ReceiptKind::Read, ids: ids.to_vec() };
                match session.seal(&receipt, now, &mut rng) {
                    Ok(sealed) => changes.push(Change::PutOutbox(queue_entry(sealed, contact, now))),
                    Err(e) => {
                        self.forget_session(&session_id);
                        return Err(e.into());
                    }
                }
            }
            self.rng = rng;
            let session = self
                .sessions
                .get(&session_id)
                .ok_or_else(|| EngineError::UnknownContact(contact.to_owned()))?;
            changes.extend(self.persist_session(session, contact));
        }
        if let Err(e) = self.store.apply(&changes) {
            if let Some(id) = found.session {
                self.forget_session(&id);
            }
            return Err(e.into());
        }
        Ok(unread.len())
    }

    /// The deliveries to try at `now`: for each contact, its oldest queued envelope if that is due
    /// (or whatever its backoff says, for `contact`, which just came online). One per contact at a
    /// time keeps a contact's messages arriving in the order they were written.
    pub fn due(&self, now: Timestamp, contact: Option<&str>) -> Result<Vec<Attempt>, EngineError> {
        self.due_except(now, contact, usize::MAX, |_| false)
    }

    /// Like [`Engine::due`], but at most `limit` attempts and none for a contact `busy` names (one
    /// whose delivery is in flight): the store reads the index entries of the contacts that are
    /// due, and the entries and envelopes of the attempts returned, never the rest of the outbox.
    pub fn due_except(
        &self,
        now: Timestamp,
        contact: Option<&str>,
        limit: usize,
        busy: impl Fn(&str) -> bool,
    ) -> Result<Vec<Attempt>, EngineError> {
        let batches = self.due_in_batches(now, contact, limit, 1, busy)?;
        Ok(batches.into_iter().flatten().collect())
    }

    /// The deliveries to try at `now` as batches, one per contact, each for one exchange with
    /// the contact's node: for every contact whose head is due (or for `contact`, which just came
    /// online, whatever its backoff says), its first entries in delivery order, at most
    /// [`wire::MAX_BATCH_ENVELOPES`] and [`wire::MAX_BATCH_BYTES`] of envelopes (always at least
    /// the head). The entries behind a head go with it whatever their own backoff: the head's
    /// decides for the queue. At most `limit` batches, none for a contact `busy` names. The store
    /// reads the index entries of the due contacts and the entries of the batches returned.
    pub fn due_batches(
        &self,
        now: Timestamp,
        contact: Option<&str>,
        limit: usize,
        busy: impl Fn(&str) -> bool,
    ) -> Result<Vec<Vec<Attempt>>, EngineError> {
        self.due_in_batches(now, contact, limit, wire::MAX_BATCH_ENVELOPES, busy)
    }

    fn due_in_batches(
        &self,
        now: Timestamp,
        contact: Option<&str>,
        limit: usize,
        per_contact: usize,
        busy: impl Fn(&str) -> bool,
    ) -> Result<Vec<Vec<Attempt>>, EngineError> {
        let heads = match contact {
            Some(name) => self.store.outbox_head(name)?.into_iter().collect(),
            None => self.store.outbox_due(now)?,
        };
        let mut batches: Vec<Vec<Attempt>> = Vec::new();
        for head in heads {
            if batches.len() >= limit {
                break;
            }
            // A damaged heads index could name a contact twice; one batch per contact holds.
            if busy(&head.contact)
                || batches.iter().any(|b| b.first().is_some_and(|a| a.contact == head.contact))
            {
                continue;
            }
            // The contact's queue as the order index has it: a heads entry left pointing at
            // nothing does not stop the entries behind it.
            let queue = self.store.outbox_queue(&head.contact, per_contact)?;
            if queue.first().is_none_or(|first| contact.is_none() && first.next_attempt_at > now) {
                continue;
            }
            let Some(c) = self.store.contact(&head.contact)? else { continue };
            let mut batch = Vec::new();
            let mut bytes = 0usize;
            for queued in queue {
                let Some(entry) = self.store.outbox_entry(&queued.id)? else { continue };
                bytes = bytes.saturating_add(entry.envelope.len());
                if !batch.is_empty() && bytes > wire::MAX_BATCH_BYTES {
                    break;
                }
                batch.push(Attempt {
                    id: entry.id,
                    contact: entry.contact,
                    peer_id: c.peer_id.clone(),
                    addrs: c.addrs.clone(),
                    relays: c.relays.clone(),
                    mailbox: entry.mailbox,
                    envelope: entry.envelope,
                });
            }
            if !batch.is_empty() {
                batches.push(batch);
            }
        }
        Ok(batches)
    }

    /// Records how a delivery attempt ended. Returns the message's status and reason to publish,
    /// if they changed: a new status, or, for a message still queued, why it has not left yet.
    pub fn attempt_finished(
        &mut self,
        id: &MessageId,
        result: &AttemptResult,
        now: Timestamp,
    ) -> Result<Option<(Status, Option<String>)>, EngineError> {
        let mut updates = self.attempts_finished(&[(*id, result.clone())], now)?;
        Ok(updates.pop().and_then(|(_, update)| update))
    }

    /// Records how the attempts of one batch ended, with one write for all (durable unless every
    /// envelope was taken: see [`Store::apply_relaxed`]). Returns, per attempt, what
    /// [`Engine::attempt_finished`] would.
    #[allow(clippy::type_complexity)]
    pub fn attempts_finished(
        &mut self,
        results: &[(MessageId, AttemptResult)],
        now: Timestamp,
    ) -> Result<Vec<(MessageId, Option<(Status, Option<String>)>)>, EngineError> {
        let mut changes = Vec::new();
        let mut updates = Vec::with_capacity(results.len());
        let mut all_taken = true;
        for (id, result) in results {
            let (more, update, taken) = self.attempt_changes(id, result, &changes, now)?;
            changes.extend(more);
            match update {
                Some((shown, status, reason)) => updates.push((shown, Some((status, reason)))),
                None => updates.push((*id, None)),
            }
            all_taken &= taken;
        }
        if changes.is_empty() {
            return Ok(updates);
        }
        // Once the node or a relay holds an envelope, losing this step in a crash only sends it
        // again, and the recipient stores it once.
        if all_taken {
            self.store.apply_relaxed(&changes)?;
        } else {
            self.store.apply(&changes)?;
        }
        Ok(updates)
    }

    /// What one attempt's result changes: the store changes, the status to publish (with the id
    /// of the message it is for: a long text's, for one of its pieces), and whether the envelope
    /// was taken (by the node or a relay).
    #[allow(clippy::type_complexity)]
    fn attempt_changes(
        &mut self,
        id: &MessageId,
        result: &AttemptResult,
        earlier: &[Change],
        now: Timestamp,
    ) -> Result<(Vec<Change>, Option<(MessageId, Status, Option<String>)>, bool), EngineError> {
        let taken = matches!(result, AttemptResult::Accepted)
            || matches!(result, AttemptResult::Deposited { accepted, .. } if *accepted >= 1);
        let Some(mut entry) = self.store.outbox_entry(id)? else {
            return Ok((Vec::new(), None, taken)); // already settled by another attempt
        };
        let stored = self.store.message(id)?;
        let current = stored.as_ref().map(|m| (m.status, m.reason.clone()));
        let failed = |reason: String| Outcome::Done(Status::Failed, Some(reason));
        let outcome = match result {
            AttemptResult::Accepted => Outcome::Done(Status::Sent, None),
            AttemptResult::Deposited { accepted, total, .. } if *accepted >= 1 => {
                Outcome::Done(Status::Stored { accepted: *accepted, total: (*total).max(*accepted) }, None)
            }
            AttemptResult::Refused(refusal) if permanent(refusal) => {
                failed(format!("refused by the recipient's node: {refusal}"))
            }
            // Every relay said the envelope is too large: no retry can change that.
            AttemptResult::Deposited { total, refusals, .. }
                if !refusals.is_empty()
                    && refusals.len() == usize::from(*total)
                    && refusals.iter().all(|r| matches!(r, Refusal::TooLarge { .. })) =>
            {
                failed(format!("refused by the recipient's relays: {}", refusals[0]))
            }
            _ if now >= entry.expires_at => failed("could not be delivered before it expired".to_owned()),
            AttemptResult::Refused(refusal) => Outcome::Retry {
                wait: retry_after(std::slice::from_ref(refusal)),
                reason: Some(format!("the recipient's node refused it for now: {refusal}")),
            },
            // Keeps whatever reason an earlier attempt gave.
            AttemptResult::Unreachable(_) => Outcome::Retry { wait: 0, reason: None },
            AttemptResult::Deposited { refusals, .. } => {
                Outcome::Retry { wait: retry_after(refusals), reason: Some(relay_reason(refusals)) }
            }
        };
        // A piece of a long text: the text's status follows its pieces (below).
        let part = match &stored {
            Some(_) => None,
            None => self.store.part_of(id)?,
        };
        let deposited = matches!(result, AttemptResult::Deposited { accepted, .. } if *accepted >= 1);
        let part_changes = match part {
            Some(part) => self.piece_changes(part, &entry.contact, id, &outcome, deposited, earlier, now)?,
            None => (Vec::new(), None),
        };
        // A member's copy of a group message: the copy moves, and with it the message.
        let copy_change = match (&stored, part, &outcome) {
            (None, None, Outcome::Done(status, reason)) if self.store.group_copy(id)?.is_some() => {
                Some(Change::SetCopyStatus { copy: *id, status: *status, reason: reason.clone() })
            }
            _ => None,
        };
        let (changes, update) = match outcome {
            Outcome::Done(status, reason) => (
                vec![
                    Change::RemoveOutbox(*id),
                    Change::SetStatus { id: *id, status, reason: reason.clone() },
                    // Left at relays: it must be collected while they keep it, or its sender is
                    // told (`Engine::expire_uncollected`).
                    Change::AwaitReceipt { id: *id, until: now.plus(RECEIPT_DEADLINE) },
                ],
                // A receipt can overtake the delivery's own answer: report only a real step
                // forward.
                current.as_ref().filter(|(old, _)| old.advances_to(status)).map(|_| (status, reason)),
            ),
            Outcome::Retry { wait, reason } => {
                entry.attempts = entry.attempts.saturating_add(1);
                entry.next_attempt_at = now.plus(self.backoff(entry.attempts).max(wait));
                let mut changes = vec![Change::PutOutbox(entry)];
                let update = match (&current, reason) {
                    (Some((Status::Queued, old)), Some(reason)) if old.as_ref() != Some(&reason) => {
                        changes.push(Change::SetReason { id: *id, reason: Some(reason.clone()) });
                        Some((Status::Queued, Some(reason)))
                    }
                    _ => None,
                };
                (changes, update)
            }
        };
        // Receipts and controls travel through the outbox too but have no stored message.
        let changes: Vec<Change> = changes
            .into_iter()
            .filter(|c| match c {
                Change::SetStatus { .. } | Change::SetReason { .. } => stored.is_some(),
                Change::AwaitReceipt { .. } => {
                    stored.is_some()
                        && matches!(result, AttemptResult::Deposited { accepted, .. } if *accepted >= 1)
                }
                _ => true,
            })
            .collect();
        let mut changes = changes;
        changes.extend(copy_change);
        if let Some(part) = part {
            let (more, update) = part_changes;
            let mut changes = changes;
            changes.extend(more);
            return Ok((changes, update.map(|(status, reason)| (part.message, status, reason)), taken));
        }
        Ok((changes, update.map(|(status, reason)| (*id, status, reason)), taken))
    }

    /// What the delivery of one piece of a long text changes for the text, given the changes
    /// `earlier` attempts of the same batch made: the text moves on once none of its pieces is
    /// left in the outbox (a batch's results may come in any order); any piece failing fails the
    /// text and takes its other pieces out of the outbox; a piece waiting gives the text its
    /// reason.
    #[allow(clippy::type_complexity, clippy::too_many_arguments)]
    fn piece_changes(
        &self,
        part: PartOf,
        contact: &str,
        piece: &MessageId,
        outcome: &Outcome,
        deposited: bool,
        earlier: &[Change],
        now: Timestamp,
    ) -> Result<(Vec<Change>, Option<(Status, Option<String>)>), EngineError> {
        let Some(text) = self.store.message(&part.message)? else { return Ok((Vec::new(), None)) };
        let id = part.message;
        // The text's status as this batch leaves it so far.
        let current = earlier
            .iter()
            .rev()
            .find_map(|c| match c {
                Change::SetStatus { id: changed, status, .. }
                    if *changed == id && text.status.advances_to(*status) =>
                {
                    Some(*status)
                }
                _ => None,
            })
            .unwrap_or(text.status);
        let settled =
            |other: &MessageId| earlier.iter().any(|c| matches!(c, Change::RemoveOutbox(r) if r == other));
        // The text's other pieces still queued (they sit together near the head of the queue).
        let mut others = Vec::new();
        for queued in self.store.outbox_queue(contact, 2 * MAX_FRAGMENT_COUNT)? {
            if queued.id != *piece
                && !settled(&queued.id)
                && self.store.part_of(&queued.id)?.is_some_and(|p| p.message == id)
            {
                others.push(queued.id);
            }
        }
        Ok(match outcome {
            Outcome::Done(Status::Failed, reason) => {
                let mut changes: Vec<Change> = others.into_iter().map(Change::RemoveOutbox).collect();
                changes.push(Change::SetStatus { id, status: Status::Failed, reason: reason.clone() });
                let update = current.advances_to(Status::Failed).then(|| (Status::Failed, reason.clone()));
                (changes, update)
            }
            Outcome::Done(status, reason) if others.is_empty() => {
                let mut changes = vec![Change::SetStatus { id, status: *status, reason: reason.clone() }];
                if deposited {
                    changes.push(Change::AwaitReceipt { id, until: now.plus(RECEIPT_DEADLINE) });
                }
                let update = current.advances_to(*status).then(|| (*status, reason.clone()));
                (changes, update)
            }
            Outcome::Retry { reason: Some(reason), .. }
                if current == Status::Queued && text.reason.as_ref() != Some(reason) =>
            {
                (
                    vec![Change::SetReason { id, reason: Some(reason.clone()) }],
                    Some((Status::Queued, Some(reason.clone()))),
                )
            }
            _ => (Vec::new(), None),
        })
    }

    /// Exponential backoff with ±25 % jitter, so many queued messages do not retry in lockstep.
    fn backoff(&mut self, attempts: u32) -> u64 {
        let exp = RETRY_BASE.saturating_mul(1u64 << attempts.min(20)).min(RETRY_MAX);
        let jitter = self.rng.next_u64() % (exp / 2 + 1);
        exp - exp / 4 + jitter
    }
}

/// A freshly sealed envelope as an outbox entry, due at once and kept for the message lifetime.
pub(super) fn queue_entry(sealed: Sealed, contact: &str, now: Timestamp) -> OutboxEntry {
    OutboxEntry {
        id: sealed.message_id,
        contact: contact.to_owned(),
        envelope: sealed.envelope,
        mailbox: sealed.mailbox,
        created_at: now,
        seq: sealed.seq,
        attempts: 0,
        next_attempt_at: now,
        expires_at: now.plus(DEFAULT_MESSAGE_LIFETIME),
    }
}

/// What a delivery result leads to.
enum Outcome {
    /// The entry leaves the outbox; the message moves to this status with this reason.
    Done(Status, Option<String>),
    /// The entry stays, tried again after the backoff but not before `wait` ms; the message's
    /// reason becomes `reason`, if given.
    Retry { wait: u64, reason: Option<String> },
}

/// The longest wait (ms) any of `refusals` asks for.
fn retry_after(refusals: &[Refusal]) -> u64 {
    refusals
        .iter()
        .filter_map(|r| match r {
            Refusal::RateLimited { retry_after_ms } => Some(u64::from(*retry_after_ms)),
            _ => None,
        })
        .max()
        .unwrap_or(0)
}

/// Why no relay took an envelope, for the user: each distinct refusal once.
fn relay_reason(refusals: &[Refusal]) -> String {
    let mut texts: Vec<String> = Vec::new();
    for refusal in refusals {
        let text = refusal.to_string();
        if !texts.contains(&text) {
            texts.push(text);
        }
    }
    if texts.is_empty() {
        "neither the recipient's node nor its relays could be reached".to_owned()
    } else {
        format!("the recipient's relays refused it for now: {}", texts.join("; "))
    }
}

/// Refusals that retrying cannot fix.
fn permanent(refusal: &Refusal) -> bool {
    matches!(
        refusal,
        Refusal::TooLarge { .. }
            | Refusal::Malformed
            | Refusal::Unauthorized
            | Refusal::UnknownMailbox
            | Refusal::SessionConflict
    )
}
