//! Outgoing messages: sealing into the outbox, and what each delivery attempt's result changes.
//!
//! `send_text` returns once the message and its envelope are durably queued. The daemon then asks
//! for [`Engine::due`] attempts, tries them, and reports each result with
//! [`Engine::attempt_finished`]; failures back off exponentially with jitter until the message's
//! lifetime (30 days) runs out.

use merpati_proto::Timestamp;
use merpati_proto::frame::{Body, MAX_TEXT_LEN, MessageId, ReceiptKind};
use merpati_proto::session::{Sealed, Session};
use merpati_proto::wire::Refusal;
use rand_core::Rng;

use super::{DEFAULT_MESSAGE_LIFETIME, Engine, EngineError, RETRY_BASE, RETRY_MAX};
use crate::store::{Change, Direction, OutboxEntry, Status, Store, StoredMessage};

/// One delivery to try: an outbox entry with where its recipient's node can be reached.
#[derive(Debug, Clone)]
pub struct Attempt {
    /// The outbox entry's id (the message id inside the envelope).
    pub id: MessageId,
    /// The contact's name.
    pub contact: String,
    /// The contact's libp2p peer id (bytes).
    pub peer_id: Vec<u8>,
    /// The contact's known addresses (binary multiaddrs).
    pub addrs: Vec<Vec<u8>>,
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
    /// The peer could not be reached (offline, no route, timeout).
    Unreachable(String),
}

impl<S: Store> Engine<S> {
    /// Encrypts `text` for contact `to` and queues it durably. Returns the stored message.
    pub fn send_text(&mut self, to: &str, text: &str, now: Timestamp) -> Result<StoredMessage, EngineError> {
        if text.len() > MAX_TEXT_LEN {
            return Err(EngineError::TooLarge { len: text.len(), max: MAX_TEXT_LEN });
        }
        let mut contact =
            self.store.contact(to)?.ok_or_else(|| EngineError::UnknownContact(to.to_owned()))?;
        let mut changes = Vec::new();
        let session_id = match contact.session {
            Some(id) => id,
            None => {
                // Contacts without a bundle were created by their own first contact, so they
                // always have a session; this only guards against a damaged record.
                let (Some(bundle), Some(inbox)) = (contact.bundle.as_ref(), contact.inbox) else {
                    return Err(EngineError::UnknownContact(to.to_owned()));
                };
                let session = Session::initiate(
                    &self.profile.cert,
                    &self.profile.device_static,
                    bundle,
                    inbox,
                    now,
                    &mut self.rng,
                )?;
                let id = session.id();
                self.cache_session(session, &contact.name);
                contact.session = Some(id);
                changes.push(Change::PutContact(contact.clone()));
                id
            }
        };
        let mut rng = self.rng.clone();
        let Some(session) = self.session(&session_id, now)? else {
            return Err(EngineError::UnknownContact(to.to_owned()));
        };
        let sealed = session.seal(&Body::Text(text.to_owned()), now, &mut rng);
        self.rng = rng;
        let sealed = match sealed {
            Ok(sealed) => sealed,
            Err(e) => {
                self.forget_session(&session_id);
                return Err(e.into());
            }
        };
        let message = StoredMessage {
            id: sealed.message_id,
            contact: contact.name.clone(),
            direction: Direction::Out,
            time: now,
            text: text.to_owned(),
            seq: Some(sealed.seq),
            status: Status::Queued,
            reason: None,
            order: 0,
        };
        let session =
            self.sessions.get(&session_id).ok_or_else(|| EngineError::UnknownContact(to.to_owned()))?;
        changes.extend(self.persist_session(session, &contact.name));
        changes.push(Change::PutMessage(message.clone()));
        changes.push(Change::PutOutbox(queue_entry(sealed, &contact.name, now)));
        if let Err(e) = self.store.apply(&changes) {
            self.forget_session(&session_id);
            return Err(e.into());
        }
        Ok(message)
    }

    /// Marks `contact`'s incoming messages read; when read receipts are on, tells the contact in
    /// one receipt per 64 messages. Returns how many were newly marked.
    pub fn mark_read(&mut self, contact: &str, now: Timestamp) -> Result<usize, EngineError> {
        let found =
            self.store.contact(contact)?.ok_or_else(|| EngineError::UnknownContact(contact.to_owned()))?;
        let unread: Vec<MessageId> = self
            .store
            .messages(Some(contact), usize::MAX)?
            .into_iter()
            .filter(|m| m.direction == Direction::In && m.status != Status::Read)
            .map(|m| m.id)
            .collect();
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
        let mut oldest: std::collections::BTreeMap<String, OutboxEntry> = std::collections::BTreeMap::new();
        for entry in self.store.outbox()? {
            match oldest.get(&entry.contact) {
                Some(first) if (first.created_at, first.seq) <= (entry.created_at, entry.seq) => {}
                _ => {
                    oldest.insert(entry.contact.clone(), entry);
                }
            }
        }
        let contacts = self.store.contacts()?;
        let mut attempts = Vec::new();
        for (name, entry) in oldest {
            let wanted = match contact {
                Some(online) => name == online,
                None => entry.next_attempt_at <= now,
            };
            let Some(c) = contacts.iter().find(|c| c.name == name).filter(|_| wanted) else { continue };
            attempts.push(Attempt {
                id: entry.id,
                contact: name,
                peer_id: c.peer_id.clone(),
                addrs: c.addrs.clone(),
                envelope: entry.envelope,
            });
        }
        Ok(attempts)
    }

    /// Records how a delivery attempt ended. Returns the message's new status, if it changed.
    pub fn attempt_finished(
        &mut self,
        id: &MessageId,
        result: &AttemptResult,
        now: Timestamp,
    ) -> Result<Option<(Status, Option<String>)>, EngineError> {
        let Some(mut entry) = self.store.outbox()?.into_iter().find(|e| e.id == *id) else {
            return Ok(None); // already settled by another attempt
        };
        let current = self.store.message(id)?.map(|m| m.status);
        let is_message = current.is_some();
        let (changes, status) = match result {
            AttemptResult::Accepted => (
                vec![
                    Change::RemoveOutbox(*id),
                    Change::SetStatus { id: *id, status: Status::Sent, reason: None },
                ],
                Some((Status::Sent, None)),
            ),
            AttemptResult::Refused(refusal) if permanent(refusal) => {
                let reason = format!("refused by the recipient's node: {refusal}");
                (
                    vec![
                        Change::RemoveOutbox(*id),
                        Change::SetStatus { id: *id, status: Status::Failed, reason: Some(reason.clone()) },
                    ],
                    Some((Status::Failed, Some(reason))),
                )
            }
            _ if now >= entry.expires_at => {
                let reason = "could not be delivered before it expired".to_owned();
                (
                    vec![
                        Change::RemoveOutbox(*id),
                        Change::SetStatus { id: *id, status: Status::Failed, reason: Some(reason.clone()) },
                    ],
                    Some((Status::Failed, Some(reason))),
                )
            }
            _ => {
                entry.attempts = entry.attempts.saturating_add(1);
                entry.next_attempt_at = now.plus(self.backoff(entry.attempts));
                (vec![Change::PutOutbox(entry)], None)
            }
        };
        // Receipts travel through the outbox too but have no stored message to update.
        let changes: Vec<Change> =
            changes.into_iter().filter(|c| is_message || !matches!(c, Change::SetStatus { .. })).collect();
        if matches!(result, AttemptResult::Accepted) {
            self.store.apply_relaxed(&changes)?;
        } else {
            self.store.apply(&changes)?;
        }
        // A receipt can overtake the delivery's own answer: report only a real step forward.
        Ok(status.filter(|(new, _)| current.is_some_and(|old| old.advances_to(*new))))
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

/// Refusals that retrying cannot fix.
fn permanent(refusal: &Refusal) -> bool {
    matches!(
        refusal,
        Refusal::TooLarge { .. } | Refusal::Malformed | Refusal::Unauthorized | Refusal::UnknownMailbox
    )
}
