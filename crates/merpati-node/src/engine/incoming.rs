//! Incoming envelopes: find the session, open, store exactly once, answer the sender.
//!
//! A first contact to our inbox from a contact creates a session; from someone not in our
//! contacts it is held in a contact request until the user decides ([`super::requests`]), and
//! from someone blocked it is dropped. Later envelopes find their session by mailbox id. An
//! envelope opened before (a duplicate from another route, or a retry after our answer was lost)
//! is answered `Accepted` again, so the sender stops retrying (or, for an envelope fetched from a
//! relay, so the daemon deletes it there). Text is stored and answered with an end-to-end delivery
//! receipt; receipts move our outgoing messages' status forward; control messages update the
//! contact's node and relays.
//!
//! Envelopes come from the sender's node directly or are fetched from a relay. Neither is taken
//! to name the sender's node: a contact learns it from the `NodeInfo` control message, or had it
//! from their invite.

use merpati_proto::Timestamp;
use merpati_proto::blob::{Content, Descriptor};
use merpati_proto::envelope::{Envelope, Kind};
use merpati_proto::frame::{Body, Control, MessageId, ReceiptKind};
use merpati_proto::kdf;
use merpati_proto::session::{Incoming, OpenError, Responder, Session, SessionId, open_digest};
use merpati_proto::wire::{Refusal, deliver};

use super::long_texts::PieceOutcome;
use super::{Engine, EngineError};
use crate::store::{Change, Contact, Direction, RequestId, Status, Store, StoredMessage};

/// What receiving one envelope did.
#[derive(Debug, Default)]
pub struct Received {
    /// The answer for the sending node.
    pub response: Option<deliver::Response>,
    /// A newly stored incoming message.
    pub message: Option<StoredMessage>,
    /// Outgoing messages whose status moved.
    pub statuses: Vec<(MessageId, Status)>,
    /// Whether a first contact started a session (whose mailboxes are then to be fetched).
    pub new_session: bool,
    /// The contact request a first contact from a stranger was held in.
    pub request: Option<RequestId>,
    /// The contact whose node told us it was restored from a backup (see `restore`).
    pub restored: Option<String>,
}

impl Received {
    pub(super) fn answer(response: deliver::Response) -> Self {
        Self { response: Some(response), ..Self::default() }
    }
}

/// What envelopes received together changed, not yet written: one durable write for all.
#[derive(Default)]
struct Pending {
    changes: Vec<Change>,
    /// Sessions whose state moved, with their contact, in first-touched order: each is persisted
    /// once, in its final state.
    sessions: Vec<(SessionId, String)>,
    /// Texts to confirm with a delivery receipt, per session, in arrival order.
    receipts: Vec<(SessionId, String, Vec<MessageId>)>,
    /// Group members introduced by a card: a first contact of theirs held as a contact request
    /// (it came before the card) is opened once the batch is written.
    introduced: Vec<merpati_proto::identity::IdentityPublic>,
}

impl Pending {
    fn touch(&mut self, session: SessionId, contact: &str) {
        if !self.sessions.iter().any(|(id, _)| *id == session) {
            self.sessions.push((session, contact.to_owned()));
        }
    }

    fn confirm(&mut self, session: SessionId, contact: &str, message: MessageId) {
        match self.receipts.iter_mut().find(|(id, _, _)| *id == session) {
            Some((_, _, ids)) => ids.push(message),
            None => self.receipts.push((session, contact.to_owned(), vec![message])),
        }
    }

    fn is_empty(&self) -> bool {
        self.changes.is_empty() && self.sessions.is_empty() && self.receipts.is_empty()
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
        let mut received = self.receive_batch(from_peer, &[bytes], now)?;
        Ok(received.pop().unwrap_or_default())
    }

    /// Handles envelopes received together (a batch from one node, or a page fetched from a
    /// relay), in order, with one durable write for all of them: the results, one per envelope,
    /// hold once this returns. Texts of one session are confirmed together, in receipts of up
    /// to 64 ids. An envelope that needs what the batch has not yet written (a first contact, a
    /// mailbox id the batch just announced) first writes what came before it. An error means
    /// none of the batch may be acknowledged; what was written is answered `Accepted` again
    /// when it comes back.
    pub fn receive_batch<B: AsRef<[u8]>>(
        &mut self,
        from_peer: Option<&[u8]>,
        envelopes: &[B],
        now: Timestamp,
    ) -> Result<Vec<Received>, EngineError> {
        let mut pending = Pending::default();
        let mut results = Vec::with_capacity(envelopes.len());
        for bytes in envelopes {
            match self.receive_one(from_peer, bytes.as_ref(), now, &mut pending) {
                Ok(received) => results.push(received),
                Err(e) => {
                    self.abandon(&pending);
                    return Err(e);
                }
            }
        }
        let introduced = std::mem::take(&mut pending.introduced);
        self.commit(std::mem::take(&mut pending), now)?;
        for identity in introduced {
            if let Some(request) = self.store.request(&RequestId::of(&identity))?
                && request.identity == identity
                && let Err(e) = self.open_request(&request, now)
            {
                tracing::warn!("a group member's waiting first contact could not be opened: {e}");
            }
        }
        Ok(results)
    }

    fn receive_one(
        &mut self,
        from_peer: Option<&[u8]>,
        bytes: &[u8],
        now: Timestamp,
        pending: &mut Pending,
    ) -> Result<Received, EngineError> {
        let Ok(envelope) = Envelope::decode(bytes) else {
            return Ok(Received::answer(deliver::Response::Refused(Refusal::Malformed)));
        };
        let header = &envelope.header;
        let lookup = |engine: &Self| match (header.kind, envelope.open.as_deref()) {
            (Kind::FirstContact, Some(open)) => engine.store.session_by_open_digest(&open_digest(open)),
            _ => engine.store.session_by_mailbox(&header.mailbox),
        };
        let mut known = lookup(self)?;
        if known.is_none() && !pending.is_empty() {
            // Perhaps filed by what the batch has not written yet.
            self.commit_keeping_introduced(pending, now)?;
            known = lookup(self)?;
        }
        match known {
            Some(id) => self.receive_in_session(id, bytes, now, pending),
            None if header.kind == Kind::FirstContact && header.mailbox == self.inbox => {
                // Whoever handed it over is not taken for the sender's node: anyone holding a
                // copy (a relay of ours) could hand it over first and then swallow our answers.
                // Only the invite and the sender's end-to-end `NodeInfo` say where that is.
                if let Some(peer) = from_peer {
                    tracing::debug!(via = %super::hex(peer), "first contact handed over directly");
                }
                // Written at once: the next envelope may be another copy, or from the same
                // person, and must find this one's session and contact.
                let received = self.accept_first_contact(bytes, now, pending)?;
                self.commit_keeping_introduced(pending, now)?;
                Ok(received)
            }
            None => Ok(Received::answer(deliver::Response::Refused(Refusal::UnknownMailbox))),
        }
    }

    /// Writes what `pending` holds so far, keeping its list of introduced members for the end of
    /// the batch.
    fn commit_keeping_introduced(
        &mut self,
        pending: &mut Pending,
        now: Timestamp,
    ) -> Result<(), EngineError> {
        let introduced = std::mem::take(&mut pending.introduced);
        self.commit(std::mem::take(pending), now)?;
        pending.introduced = introduced;
        Ok(())
    }

    /// Writes `pending` durably: first the delivery receipts it owes (sealed now, so a batch of
    /// texts is confirmed in few envelopes), then every touched session's final state.
    fn commit(&mut self, mut pending: Pending, now: Timestamp) -> Result<(), EngineError> {
        for (id, contact, ids) in std::mem::take(&mut pending.receipts) {
            for chunk in ids.chunks(merpati_proto::frame::MAX_RECEIPT_IDS) {
                let receipt = Body::Receipt { kind: ReceiptKind::Delivered, ids: chunk.to_vec() };
                let mut rng = self.rng.clone();
                let sealed = match self.sessions.get_mut(&id) {
                    Some(session) => session.seal(&receipt, now, &mut rng).ok(),
                    None => None,
                };
                self.rng = rng;
                // A receipt that cannot be sealed is only a missing status update for the
                // sender; the messages themselves are still stored.
                if let Some(sealed) = sealed {
                    pending
                        .changes
                        .push(Change::PutOutbox(super::outgoing::queue_entry(sealed, &contact, now)));
                }
            }
        }
        for (id, contact) in &pending.sessions {
            if let Some(session) = self.sessions.get(id) {
                pending.changes.extend(self.persist_session(session, contact));
            }
        }
        if pending.changes.is_empty() {
            return Ok(());
        }
        if let Err(e) = self.store.apply(&pending.changes) {
            self.abandon(&pending);
            return Err(e.into());
        }
        Ok(())
    }

    /// Forgets the in-memory state of every session `pending` moved, and the request index:
    /// they are ahead of the disk.
    fn abandon(&mut self, pending: &Pending) {
        for (id, _) in &pending.sessions {
            self.forget_session(id);
        }
        self.forget_request_index();
        self.group_logs.clear();
    }

    /// Seals `welcomes` into `pending`, whose write persists the sessions they move.
    fn pass_on_in(
        &mut self,
        welcomes: Vec<(Contact, Vec<Body>)>,
        pending: &mut Pending,
        now: Timestamp,
    ) -> Result<(), EngineError> {
        let (sealed, sessions) = self.pass_on(welcomes, now)?.into_parts();
        pending.changes.extend(sealed);
        for (session, member) in sessions {
            pending.touch(session, &member);
        }
        Ok(())
    }

    fn accept_first_contact(
        &mut self,
        bytes: &[u8],
        now: Timestamp,
        pending: &mut Pending,
    ) -> Result<Received, EngineError> {
        // A conversation whose request was rejected, dropped or expired: dropped before any
        // Diffie-Hellman (see `super::requests`).
        if let Some(open) = Envelope::decode(bytes).ok().and_then(|e| e.open)
            && self.store.is_dismissed(&open_digest(&open))?
        {
            return Ok(Received::answer(deliver::Response::Accepted));
        }
        let responder = Responder { bundle: &self.bundle, prekeys: &self.profile.prekeys };
        let (session, incoming) = match Session::accept(responder, bytes, now, &mut self.rng) {
            Ok(accepted) => accepted,
            Err(_) => return Ok(Received::answer(deliver::Response::Refused(Refusal::Malformed))),
        };
        let identity = session.peer().identity;
        let Some(mut contact) = self.store.contacts()?.into_iter().find(|c| c.identity == identity) else {
            // Someone not in our contacts: nothing of theirs becomes a session until the user
            // accepts them (the session just made is dropped, keys and all).
            return self.hold_request(identity, incoming, bytes, now, &mut pending.changes);
        };
        let changes = &mut pending.changes;
        // Whether this session becomes the one we send on: then it is our first word to them.
        // Both sides may start a session at once; the one this contact started becomes ours for
        // sending only if we have none, and either way we receive on both.
        let ours = contact.session.is_none();
        if ours {
            contact.session = Some(session.id());
            changes.push(Change::PutContact(contact.clone()));
        }
        if let Some(open) = Envelope::decode(bytes).ok().and_then(|e| e.open) {
            changes.push(Change::IndexOpenDigest { digest: open_digest(&open), session: session.id() });
        }
        let id = session.id();
        self.cache_session(session, &contact.name);
        pending.touch(id, &contact.name);
        if ours {
            // Our first reply direction: tell them where our node and relays are, before the
            // receipt, so they can answer even if their copy of our invite is out of date.
            let start = self.seal_session_start(&id, &contact.name, now)?;
            pending.changes.extend(start);
        }
        let received = self.store_incoming(id, &contact.name, incoming, pending, now)?;
        Ok(Received { new_session: true, ..received })
    }

    fn receive_in_session(
        &mut self,
        id: SessionId,
        bytes: &[u8],
        now: Timestamp,
        pending: &mut Pending,
    ) -> Result<Received, EngineError> {
        if self.session(&id, now)?.is_none() {
            // A blocked contact's session: dropped unread, answered as any stored envelope.
            if self.blocked_session(&id)? {
                return Ok(Received::answer(deliver::Response::Accepted));
            }
            return Ok(Received::answer(deliver::Response::Refused(Refusal::UnknownMailbox)));
        }
        // Set by `session` whenever it has the session in memory.
        let contact = self.session_contacts.get(&id).cloned().unwrap_or_default();
        if self.written_by_a_superseded_copy(&id, &contact, bytes, pending, now)? {
            tracing::warn!("{contact}'s node was restored elsewhere, yet the old copy still writes: refused");
            return Ok(Received::answer(deliver::Response::Refused(Refusal::SessionConflict)));
        }
        let Some(session) = self.sessions.get_mut(&id) else {
            return Ok(Received::answer(deliver::Response::Refused(Refusal::UnknownMailbox)));
        };
        let opened = session.open(bytes, now);
        let replayed = match opened {
            Err(OpenError::Replay) => session.peek(bytes, now).map(|(frame, _)| frame),
            _ => None,
        };
        match opened {
            Ok(incoming) => {
                pending.touch(id, &contact);
                self.store_incoming(id, &contact, incoming, pending, now)
            }
            // Already stored: say so again, or the sender would keep retrying. Unless it is not
            // what was stored: a message we do not have, sealed at the place of one we do.
            Err(OpenError::Replay) => {
                // The first copy may still be in this batch's unwritten changes.
                let pending_ids = |id: &MessageId| {
                    pending.changes.iter().any(|c| matches!(c, Change::PutMessage(m) if m.id == *id))
                };
                let conflict = match &replayed {
                    Some(frame) if matches!(frame.body, Body::Text(_) | Body::File(_)) => {
                        !pending_ids(&frame.message_id) && self.store.message(&frame.message_id)?.is_none()
                    }
                    _ => false,
                };
                if conflict {
                    tracing::warn!(
                        "{contact}'s node sealed two messages at one place: two copies of them are running"
                    );
                    return Ok(Received::answer(deliver::Response::Refused(Refusal::SessionConflict)));
                }
                Ok(Received::answer(deliver::Response::Accepted))
            }
            // The key of a sub-epoch is deleted once all its 64 messages arrived, so a further
            // copy of any of them (say, from a second relay) lands here; otherwise the key
            // outlived its retention and no copy can ever be read. Either way a retry cannot
            // help, and a fetched copy is to be deleted at the relay.
            Err(OpenError::KeyUnavailable) => Ok(Received::answer(deliver::Response::Accepted)),
            // An epoch opened twice, differently: two copies of the sender seal in this session.
            Err(OpenError::OpenMismatch) => {
                tracing::warn!(
                    "{contact}'s node wrote an epoch twice, differently: two copies of them are running"
                );
                Ok(Received::answer(deliver::Response::Refused(Refusal::SessionConflict)))
            }
            Err(_) => Ok(Received::answer(deliver::Response::Refused(Refusal::Malformed))),
        }
    }

    /// Whether `bytes`, in session `id` of `contact`, come from a copy of the contact that a
    /// restore from a backup replaced: the conversation moved to the restored node's session, and
    /// this was written after the restore, so the old copy still runs. What the old device sent
    /// before the restore is still taken (nothing is lost by the move). Only for a session the
    /// conversation left, and on a copy of it, so the session itself does not move.
    fn written_by_a_superseded_copy(
        &self,
        id: &SessionId,
        contact: &str,
        bytes: &[u8],
        pending: &mut Pending,
        now: Timestamp,
    ) -> Result<bool, EngineError> {
        let record = match pending_contact(&mut pending.changes, contact) {
            Some(record) => Some(record.clone()),
            None => self.store.contact(contact)?,
        };
        let Some(restored_at) = record.filter(|c| c.session != Some(*id)).and_then(|c| c.restored_at) else {
            return Ok(false);
        };
        let peeked = self.sessions.get(id).and_then(|session| session.peek(bytes, now));
        Ok(peeked.is_some_and(|(frame, seen)| !seen && frame.sent_at > restored_at))
    }

    /// Adds to `pending` what an opened envelope carried, and notes a text for a delivery
    /// receipt.
    fn store_incoming(
        &mut self,
        id: SessionId,
        contact: &str,
        incoming: Incoming,
        pending: &mut Pending,
        now: Timestamp,
    ) -> Result<Received, EngineError> {
        let mut received = Received::answer(deliver::Response::Accepted);
        let changes = &mut pending.changes;
        match incoming.body {
            Body::Text(text) => {
                let message = StoredMessage::received(
                    incoming.message_id,
                    contact,
                    incoming.sent_at,
                    text,
                    incoming.seq,
                );
                changes.push(Change::PutMessage(message.clone()));
                received.message = Some(message);
                pending.confirm(id, contact, incoming.message_id);
            }
            Body::Receipt { kind, ids } => {
                let status = match kind {
                    ReceiptKind::Delivered => Status::Delivered,
                    ReceiptKind::Read => Status::Read,
                };
                for message_id in ids {
                    // Only the recipient of our message may confirm it.
                    match self.store.message(&message_id)? {
                        Some(ours)
                            if ours.contact == contact
                                && ours.direction == Direction::Out
                                && ours.status.advances_to(status) =>
                        {
                            changes.push(Change::SetStatus { id: message_id, status, reason: None });
                            received.statuses.push((message_id, status));
                        }
                        Some(_) => {}
                        // A member's copy of a group message of ours.
                        None => {
                            if let Some(record) = self.store.contact(contact)?
                                && let Some(change) = self.confirm_copy(&record, &message_id, status)?
                            {
                                changes.push(change);
                            }
                        }
                    }
                }
            }
            Body::Control(Control::Restored { at }) => {
                let record = match pending_contact(changes, contact) {
                    Some(record) => Some(record.clone()),
                    None => self.store.contact(contact)?,
                };
                if let Some(record) = record
                    && self.accept_restore(id, record, at, now, changes)?
                {
                    received.restored = Some(contact.to_owned());
                }
            }
            Body::Control(Control::GroupEntries(entries)) => {
                if let Some(record) = self.store.contact(contact)? {
                    let welcomes = self.receive_group_entries(&record, entries, changes, now)?;
                    self.pass_on_in(welcomes, pending, now)?;
                }
            }
            Body::Control(Control::GroupCards { group, cards }) => {
                if let Some(record) = self.store.contact(contact)? {
                    let introduced = self.receive_group_cards(&record, group, cards, changes, now)?;
                    pending.introduced.extend(introduced.iter().map(|(member, _)| member.identity));
                    let welcomes = introduced.into_iter().filter_map(|(m, w)| Some((m, w?))).collect();
                    self.pass_on_in(welcomes, pending, now)?;
                }
            }
            Body::Group(message) => {
                if let Some(record) = self.store.contact(contact)?
                    && let Some(stored) = self.receive_group_message(
                        &record,
                        (incoming.message_id, incoming.sent_at),
                        *message,
                        changes,
                    )?
                {
                    received.message = Some(stored);
                }
                // Confirmed even when dropped: the copy arrived, and its sender stops sending it.
                pending.confirm(id, contact, incoming.message_id);
            }
            Body::Control(control) => match pending_contact(changes, contact) {
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
            Body::File(file) => {
                if !file_is_whole(&file) {
                    // Its sender's node sealed bytes that are not the file it described: nothing
                    // to show, and nothing a retry would change.
                    tracing::warn!("a file whose bytes do not match its description was dropped");
                } else {
                    let caption = file.caption.clone();
                    let message = StoredMessage::received(
                        incoming.message_id,
                        contact,
                        incoming.sent_at,
                        caption,
                        incoming.seq,
                    );
                    changes.push(Change::PutMessage(message.clone()));
                    changes.push(super::outgoing::file_change(incoming.message_id, &file));
                    if let Some(transfer) = download_of(&file, now) {
                        changes.push(Change::PutTransfer { id: incoming.message_id, transfer });
                    }
                    received.message = Some(message);
                    pending.confirm(id, contact, incoming.message_id);
                }
            }
            Body::Fragment(fragment) => {
                let frame = (incoming.seq, incoming.sent_at);
                match self.receive_piece(contact, frame, &fragment, changes, now)? {
                    PieceOutcome::Whole(message) => {
                        pending.confirm(id, contact, message.id);
                        received.message = Some(message);
                    }
                    PieceOutcome::Kept => {}
                    // The session still advances, so the piece is not offered again.
                    PieceOutcome::Ignored(why) => tracing::warn!("a piece of a long text was dropped: {why}"),
                }
            }
        }
        self.note_heard(contact, &mut pending.changes, now)?;
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

/// Whether a file's bytes, when they came with its description, are the file it describes. A
/// file to fetch elsewhere is checked when it is fetched.
/// The download a received file needs, when it travels as a blob (the daemon starts it). Its
/// sources are tried for at most [`MAX_BLOB_WAIT`] from now, whatever the description promises.
fn download_of(file: &Descriptor, now: Timestamp) -> Option<crate::store::Transfer> {
    let Content::Blob { .. } = &file.content else { return None };
    let mut file = file.clone();
    if let Content::Blob { expires_at, .. } = &mut file.content {
        *expires_at = (*expires_at).min(now.plus(MAX_BLOB_WAIT));
    }
    let descriptor = file.encode().ok()?;
    Some(crate::store::Transfer { descriptor, side: crate::store::TransferSide::Download { failed: None } })
}

/// The longest a received file is sought: a relay keeps a blob 30 days by default.
const MAX_BLOB_WAIT: u64 = 31 * Timestamp::DAY;

fn file_is_whole(file: &Descriptor) -> bool {
    match &file.content {
        Content::Inline(data) => kdf::hash(kdf::label::BLOB_HASH, &[data]) == file.hash,
        Content::Blob { .. } => true,
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
