//! Incoming envelopes: find the session, open, store exactly once, answer the sender.
//!
//! A first contact to our inbox creates a session (and, for someone not yet in our contacts, a
//! contact named after their fingerprint); later envelopes find their session by mailbox id. An
//! envelope opened before (a duplicate from another route, or a retry after our answer was lost)
//! is answered `Accepted` again, so the sender stops retrying (or, for an envelope fetched from a
//! relay, so the daemon deletes it there). Text is stored and answered with an end-to-end delivery
//! receipt; receipts move our outgoing messages' status forward; control messages update the
//! contact's node and relays.
//!
//! Envelopes come from the sender's node directly or are fetched from a relay. Only the first
//! kind names the sender's node: a contact created from a fetched first contact has no peer id
//! until its `NodeInfo` control message arrives.

use merpati_proto::Timestamp;
use merpati_proto::envelope::{Envelope, Kind};
use merpati_proto::frame::{Body, MessageId, ReceiptKind};
use merpati_proto::identity::fingerprint;
use merpati_proto::session::{Incoming, OpenError, Responder, Session, SessionId, open_digest};
use merpati_proto::wire::{Refusal, deliver};

use super::{Engine, EngineError};
use crate::store::{Change, Contact, Direction, Status, Store, StoredMessage};

/// What receiving one envelope did.
#[derive(Debug, Default)]
pub struct Received {
    /// The answer for the sending node.
    pub response: Option<deliver::Response>,
    /// A newly stored incoming message.
    pub message: Option<StoredMessage>,
    /// Outgoing messages whose status moved.
    pub statuses: Vec<(MessageId, Status)>,
    /// A contact created by a first contact from someone we did not know.
    pub new_contact: Option<Contact>,
}

impl Received {
    fn answer(response: deliver::Response) -> Self {
        Self { response: Some(response), ..Self::default() }
    }
}

impl<S: Store> Engine<S> {
    /// Handles an envelope that node `from_peer` (libp2p peer id bytes) handed us, or, with
    /// `None`, one fetched from a relay (the relay is not the sender's node).
    ///
    /// The answer is `Accepted` once the envelope is stored, and again for every later copy of
    /// it (so the sender stops retrying and a fetched copy can be deleted at its relay); a
    /// refusal means it cannot be stored.
    pub fn receive(
        &mut self,
        from_peer: Option<&[u8]>,
        bytes: &[u8],
        now: Timestamp,
    ) -> Result<Received, EngineError> {
        let Ok(envelope) = Envelope::decode(bytes) else {
            return Ok(Received::answer(deliver::Response::Refused(Refusal::Malformed)));
        };
        let header = &envelope.header;
        let known = match (header.kind, envelope.open.as_deref()) {
            (Kind::FirstContact, Some(open)) => self.store.session_by_open_digest(&open_digest(open))?,
            _ => self.store.session_by_mailbox(&header.mailbox)?,
        };
        match known {
            Some(id) => self.receive_in_session(id, bytes, now),
            None if header.kind == Kind::FirstContact && header.mailbox == self.me.inbox() => {
                // Whoever handed it over is not taken for the sender's node: anyone holding a
                // copy (a relay of ours) could hand it over first and then swallow our answers.
                // Only the invite and the sender's end-to-end `NodeInfo` say where that is.
                if let Some(peer) = from_peer {
                    tracing::debug!(via = %super::hex(peer), "first contact handed over directly");
                }
                self.accept_first_contact(bytes, now)
            }
            None => Ok(Received::answer(deliver::Response::Refused(Refusal::UnknownMailbox))),
        }
    }

    fn accept_first_contact(&mut self, bytes: &[u8], now: Timestamp) -> Result<Received, EngineError> {
        let responder = Responder { bundle: &self.bundle, prekeys: &self.profile.prekeys };
        let (session, incoming) = match Session::accept(responder, bytes, now, &mut self.rng) {
            Ok(accepted) => accepted,
            Err(_) => return Ok(Received::answer(deliver::Response::Refused(Refusal::Malformed))),
        };
        let identity = session.peer().identity;
        let mut changes = Vec::new();
        let mut new_contact = None;
        // Whether this session becomes the one we send on: then it is our first word to them.
        let mut ours = true;
        let contact = match self.store.contacts()?.into_iter().find(|c| c.identity == identity) {
            Some(mut contact) => {
                // Both sides may start a session at once; the one this contact started becomes
                // ours for sending only if we have none, and either way we receive on both.
                if contact.session.is_none() {
                    contact.session = Some(session.id());
                    changes.push(Change::PutContact(contact.clone()));
                } else {
                    ours = false;
                }
                contact
            }
            None => {
                let contact = Contact {
                    name: format!(
                        "unknown-{}",
                        fingerprint(&identity).replace(' ', "").get(..8).unwrap_or("")
                    ),
                    identity,
                    bundle: None,
                    inbox: None,
                    // Known once their `NodeInfo` arrives: it comes first in every session.
                    peer_id: Vec::new(),
                    addrs: Vec::new(),
                    relays: Vec::new(),
                    session: Some(session.id()),
                    added_at: now,
                    last_resort: None,
                    last_heard: None,
                };
                changes.push(Change::AddContact(contact.clone()));
                new_contact = Some(contact.clone());
                contact
            }
        };
        if let Some(open) = Envelope::decode(bytes).ok().and_then(|e| e.open) {
            changes.push(Change::IndexOpenDigest { digest: open_digest(&open), session: session.id() });
        }
        let id = session.id();
        self.cache_session(session, &contact.name);
        if ours {
            // Our first reply direction: tell them where our node and relays are, before the
            // receipt, so they can answer even if their copy of our invite is out of date.
            changes.extend(self.seal_session_start(&id, &contact.name, now)?);
        }
        let mut received = self.store_incoming(id, &contact.name, incoming, changes, now)?;
        // Read back: a control message in this first contact may have completed the record.
        received.new_contact = match new_contact {
            Some(created) => Some(self.store.contact(&created.name)?.unwrap_or(created)),
            None => None,
        };
        Ok(received)
    }

    fn receive_in_session(
        &mut self,
        id: SessionId,
        bytes: &[u8],
        now: Timestamp,
    ) -> Result<Received, EngineError> {
        let Some(session) = self.session(&id, now)? else {
            return Ok(Received::answer(deliver::Response::Refused(Refusal::UnknownMailbox)));
        };
        let opened = session.open(bytes, now);
        // Set by `session` whenever it has the session in memory.
        let contact = self.session_contacts.get(&id).cloned().unwrap_or_default();
        match opened {
            Ok(incoming) => self.store_incoming(id, &contact, incoming, Vec::new(), now),
            // Already stored: say so again, or the sender would keep retrying.
            Err(OpenError::Replay) => Ok(Received::answer(deliver::Response::Accepted)),
            // The key of a sub-epoch is deleted once all its 64 messages arrived, so a further
            // copy of any of them (say, from a second relay) lands here; otherwise the key
            // outlived its retention and no copy can ever be read. Either way a retry cannot
            // help, and a fetched copy is to be deleted at the relay.
            Err(OpenError::KeyUnavailable) => Ok(Received::answer(deliver::Response::Accepted)),
            Err(_) => Ok(Received::answer(deliver::Response::Refused(Refusal::Malformed))),
        }
    }

    /// Stores what an opened envelope carried, in one transaction with the session's new state,
    /// and queues a delivery receipt for text.
    fn store_incoming(
        &mut self,
        id: SessionId,
        contact: &str,
        incoming: Incoming,
        mut changes: Vec<Change>,
        now: Timestamp,
    ) -> Result<Received, EngineError> {
        let mut received = Received::answer(deliver::Response::Accepted);
        match incoming.body {
            Body::Text(text) => {
                let message = StoredMessage {
                    id: incoming.message_id,
                    contact: contact.to_owned(),
                    direction: Direction::In,
                    time: incoming.sent_at,
                    text,
                    seq: Some(incoming.seq),
                    status: Status::Delivered,
                    reason: None,
                    order: 0,
                };
                changes.push(Change::PutMessage(message.clone()));
                received.message = Some(message);
                let receipt = Body::Receipt { kind: ReceiptKind::Delivered, ids: vec![incoming.message_id] };
                let mut rng = self.rng.clone();
                let sealed = match self.sessions.get_mut(&id) {
                    Some(session) => session.seal(&receipt, now, &mut rng).ok(),
                    None => None,
                };
                self.rng = rng;
                // A receipt that cannot be sealed is only a missing status update for the
                // sender; the message itself is still stored.
                if let Some(sealed) = sealed {
                    changes.push(Change::PutOutbox(super::outgoing::queue_entry(sealed, contact, now)));
                }
            }
            Body::Receipt { kind, ids } => {
                let status = match kind {
                    ReceiptKind::Delivered => Status::Delivered,
                    ReceiptKind::Read => Status::Read,
                };
                for message_id in ids {
                    // Only the recipient of our message may confirm it.
                    if let Some(ours) = self.store.message(&message_id)?
                        && ours.contact == contact
                        && ours.direction == Direction::Out
                        && ours.status.advances_to(status)
                    {
                        changes.push(Change::SetStatus { id: message_id, status, reason: None });
                        received.statuses.push((message_id, status));
                    }
                }
            }
            Body::Control(control) => match pending_contact(&mut changes, contact) {
                Some(record) => {
                    super::relays::apply_control(record, control);
                }
                None => {
                    if let Some(mut record) = self.store.contact(contact)?
                        && super::relays::apply_control(&mut record, control)
                    {
                        changes.push(Change::PutContact(record));
                    }
                }
            },
            // Fragments are understood by later versions of the node; the session state still
            // advances so nothing is replayed.
            Body::Fragment(_) => {}
        }
        self.note_heard(contact, &mut changes, now)?;
        let session = self.sessions.get(&id).ok_or(EngineError::UnknownContact(contact.to_owned()))?;
        changes.extend(self.persist_session(session, contact));
        if let Err(e) = self.store.apply(&changes) {
            self.forget_session(&id);
            return Err(e.into());
        }
        Ok(received)
    }

    /// Records in `changes` that `contact` was heard from at `now`: in the record the batch
    /// already writes, or in a write of its own when the last note is a minute old or more.
    fn note_heard(
        &self,
        contact: &str,
        changes: &mut Vec<Change>,
        now: Timestamp,
    ) -> Result<(), EngineError> {
        if let Some(record) = pending_contact(changes, contact) {
            record.last_heard = Some(now);
        } else if let Some(mut record) = self.store.contact(contact)?
            && record.last_heard.is_none_or(|at| now.since(at) >= LAST_HEARD_PRECISION)
        {
            record.last_heard = Some(now);
            changes.push(Change::PutContact(record));
        }
        Ok(())
    }
}

/// How stale `Contact::last_heard` may get before an incoming envelope rewrites it (ms): not
/// every message needs a write of the contact record.
const LAST_HEARD_PRECISION: u64 = 60 * Timestamp::SECOND;

/// The record of `contact` as the batch `changes` leaves it, if the batch writes it (a first
/// contact adds or updates it).
fn pending_contact<'a>(changes: &'a mut [Change], contact: &str) -> Option<&'a mut Contact> {
    changes.iter_mut().rev().find_map(|c| match c {
        Change::AddContact(c) | Change::PutContact(c) if c.name == contact => Some(c),
        _ => None,
    })
}
