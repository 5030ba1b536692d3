//! Contact requests and what the user does with contacts: accept, reject or block a stranger;
//! rename, remove or block a contact; unblock.
//!
//! A first contact from someone not in the contacts does not make a contact, a session or any
//! outgoing envelope: its envelopes are held as they came (ciphertext) in a request, and the
//! sender gets the transport's `Accepted` and nothing end to end. Requests are capped, in number
//! and in size; past the cap the oldest request goes, and the count of dropped requests is kept.
//! Accepting one creates the contact under the user's name and opens the held envelopes as if
//! they had just arrived; rejecting deletes them; blocking deletes them too and drops the
//! sender's envelopes from then on, unread and unanswered.
//!
//! A request that is rejected, dropped from a full queue or expired is *dismissed*: the digest of
//! its first-contact open is noted, and later envelopes of that conversation are dropped rather
//! than starting a new request. Such a request would lack the sender's first words (where their
//! node is, which relays they use, their name), which their node sends only once, so accepting it
//! would make a contact nobody could answer.

use std::collections::HashMap;

use merpati_proto::Timestamp;
use merpati_proto::envelope::Envelope;
use merpati_proto::frame::{Body, Control};
use merpati_proto::identity::{IdentityPublic, PREKEY_GRACE, PREKEY_LIFETIME};
use merpati_proto::session::{Incoming, Responder, Session, SessionId, open_digest};
use merpati_proto::wire::deliver;
use serde_bytes::ByteBuf;

use super::{Engine, EngineError, Received, check_name};
use crate::store::{Blocked, Change, Contact, ContactRequest, RequestId, Store};

/// The most contact requests held; a new one past this drops the oldest.
pub const MAX_REQUESTS: usize = 100;
/// The most envelopes one request holds; later ones are counted and dropped.
pub const MAX_REQUEST_ENVELOPES: usize = 16;
/// The most envelope bytes one request holds (256 KiB): with [`MAX_REQUESTS`], requests take at
/// most 25 MiB of disk.
pub const MAX_REQUEST_BYTES: usize = 256 * 1024;
/// How long a request is kept at most (ms): as long as the sender's node keeps trying. A request
/// whose sender wrote to a prekey that is deleted sooner (a first contact that waited long at a
/// relay) is deleted with it, since nothing in it could be opened after.
pub const REQUEST_LIFETIME: u64 = 30 * Timestamp::DAY;
/// The most dismissals one maintenance pass forgets.
const PURGE_DISMISSED_BATCH: usize = 1024;
/// The most dismissals kept (about 80 bytes each on disk): every identity a stranger makes can
/// leave one, so past this the ones that run out first go (their conversations could start a
/// request again, one without the sender's first words).
pub const MAX_DISMISSED: usize = 100_000;
/// How much of a request's first text is kept to show, in characters.
pub const PREVIEW_CHARS: usize = 200;

/// What accepting a request did.
#[derive(Debug)]
pub struct Accepted {
    /// The new contact.
    pub contact: Contact,
    /// How many messages (texts) the request's envelopes held and are now stored.
    pub opened: usize,
}

impl<S: Store> Engine<S> {
    /// Holds a first contact from `identity`, not a contact, opened as `incoming`: in their
    /// request, or nowhere if they are blocked. Answered `Accepted` either way, so their node
    /// stops retrying and a relay's copy is deleted; nothing goes back end to end.
    pub(super) fn hold_request(
        &mut self,
        identity: IdentityPublic,
        incoming: Incoming,
        bytes: &[u8],
        now: Timestamp,
        changes: &mut Vec<Change>,
    ) -> Result<Received, EngineError> {
        let accepted = Received::answer(deliver::Response::Accepted);
        if self.store.is_blocked(&identity)? {
            tracing::debug!("dropped an envelope from a blocked sender");
            return Ok(accepted);
        }
        let id = RequestId::of(&identity);
        let mut request = match self.store.request(&id)? {
            Some(request) if request.identity == identity => request,
            // 64 bits of fingerprint can only collide by trying keys; the request held first
            // stays.
            Some(_) => return Ok(accepted),
            None => {
                self.make_room_for_request(now, changes)?;
                ContactRequest {
                    id,
                    identity,
                    suggested_name: None,
                    preview: None,
                    first_at: now,
                    last_at: now,
                    expires_at: now.plus(REQUEST_LIFETIME).min(self.prekey_deadline(bytes, now)),
                    envelopes: Vec::new(),
                    dropped: 0,
                }
            }
        };
        if request.envelopes.iter().any(|held| held.as_slice() == bytes) {
            return Ok(accepted);
        }
        let held: usize = request.envelopes.iter().map(|e| e.len()).sum();
        if request.envelopes.len() >= MAX_REQUEST_ENVELOPES || held + bytes.len() > MAX_REQUEST_BYTES {
            // Counted apart: a full request is not rewritten for every envelope it refuses.
            changes.push(Change::CountRefusedEnvelope(id));
            return Ok(accepted);
        }
        request.envelopes.push(ByteBuf::from(bytes.to_vec()));
        match incoming.body {
            Body::Text(text) if request.preview.is_none() => {
                request.preview = Some(text.chars().take(PREVIEW_CHARS).collect());
            }
            Body::File(file) if request.preview.is_none() => {
                let preview = format!("[file {}] {}", file.name, file.caption);
                request.preview = Some(preview.chars().take(PREVIEW_CHARS).collect());
            }
            Body::Control(Control::DisplayName(name)) => request.suggested_name = Some(name),
            _ => {}
        }
        request.last_at = now;
        self.request_index()?.insert(id, request.first_at);
        changes.push(Change::PutRequest(request));
        Ok(Received { request: Some(id), ..accepted })
    }

    /// Until when the prekey the first contact `bytes` was written to is kept (its expiry and
    /// the grace after it); the longest a signed prekey lives when the ring no longer has it.
    fn prekey_deadline(&self, bytes: &[u8], now: Timestamp) -> Timestamp {
        let prekey_id = Envelope::decode(bytes)
            .ok()
            .and_then(|e| e.open)
            .and_then(|open| open.get(..4).and_then(|b| <[u8; 4]>::try_from(b).ok()))
            .map(u32::from_be_bytes);
        self.profile
            .prekeys
            .prekeys()
            .find(|p| Some(p.id) == prekey_id)
            .map_or(now.plus(PREKEY_LIFETIME + PREKEY_GRACE), |p| p.expires_at.plus(PREKEY_GRACE))
    }

    /// The changes that dismiss `request`'s conversation: the digests of its envelopes' opens,
    /// kept as long as those envelopes could be opened.
    fn dismissal(&self, request: &ContactRequest, now: Timestamp) -> Vec<Change> {
        let mut digests: Vec<[u8; 32]> = Vec::new();
        let mut changes = Vec::new();
        for bytes in &request.envelopes {
            let Some(open) = Envelope::decode(bytes).ok().and_then(|e| e.open) else { continue };
            let digest = open_digest(&open);
            if !digests.contains(&digest) {
                digests.push(digest);
                changes.push(Change::Dismiss { digest, until: self.prekey_deadline(bytes, now) });
            }
        }
        if !changes.is_empty() {
            changes.push(Change::TrimDismissed { keep: self.max_dismissed });
        }
        changes
    }

    /// Drops the oldest requests (dismissing their conversations) until one more fits under
    /// [`MAX_REQUESTS`].
    fn make_room_for_request(
        &mut self,
        now: Timestamp,
        changes: &mut Vec<Change>,
    ) -> Result<(), EngineError> {
        let mut dropped = 0u64;
        loop {
            let index = self.request_index()?;
            if index.len() < MAX_REQUESTS {
                break;
            }
            let Some((&oldest, _)) = index.iter().min_by_key(|(id, first_at)| (**first_at, **id)) else {
                break;
            };
            index.remove(&oldest);
            if let Some(request) = self.store.request(&oldest)? {
                changes.extend(self.dismissal(&request, now));
            }
            changes.push(Change::RemoveRequest(oldest));
            dropped += 1;
        }
        if dropped > 0 {
            tracing::warn!(dropped, "contact request queue full: dropped the oldest");
            changes.push(Change::NoteRequestsDropped(dropped));
        }
        Ok(())
    }

    /// When each request arrived, read from the store on first use (after a start, or after a
    /// write the index anticipated failed) and kept in step with every write after.
    fn request_index(&mut self) -> Result<&mut HashMap<RequestId, Timestamp>, EngineError> {
        if self.request_index.is_none() {
            let index = self.store.requests()?.into_iter().map(|r| (r.id, r.first_at)).collect();
            self.request_index = Some(index);
        }
        Ok(self.request_index.get_or_insert_with(HashMap::new))
    }

    /// Forgets the request index: a write it anticipated failed. The next use reads the store.
    pub(super) fn forget_request_index(&mut self) {
        self.request_index = None;
    }

    /// Every contact request, oldest first.
    pub fn requests(&self) -> Result<Vec<ContactRequest>, EngineError> {
        let mut requests = self.store.requests()?;
        requests.sort_by_key(|r| (r.first_at, r.id));
        Ok(requests)
    }

    /// Accepts request `id` under `name`: the sender becomes a contact and the held envelopes
    /// are opened now, as if they had just arrived (so the sender gets its receipts and learns
    /// where our node is). A request whose envelopes can no longer be opened (the prekey they
    /// were written to is gone) is deleted and reported as expired.
    pub fn accept_request(
        &mut self,
        id: &RequestId,
        name: &str,
        now: Timestamp,
    ) -> Result<Accepted, EngineError> {
        check_name(name)?;
        let request = self.store.request(id)?.ok_or_else(|| EngineError::UnknownRequest(id.to_string()))?;
        let existing = self.store.contacts()?.into_iter().find(|c| c.identity == request.identity);
        if existing.is_none() {
            self.check_name_free(name, None)?;
        }
        if !self.can_open(&request, now) {
            let mut changes = self.dismissal(&request, now);
            changes.push(Change::RemoveRequest(*id));
            self.store.apply(&changes)?;
            self.request_index()?.remove(id);
            return Err(EngineError::RequestExpired(id.to_string()));
        }
        let contact = match existing {
            // Added from their invite since (or a crash came between the steps below).
            Some(contact) => contact,
            None => {
                let contact = stranger_contact(name, request.identity, now);
                self.store.apply(&[Change::AddContact(contact.clone())])?;
                contact
            }
        };
        let opened = self.open_request(&request, now)?;
        let contact = self.store.contact(&contact.name)?.unwrap_or(contact);
        Ok(Accepted { contact, opened })
    }

    /// Opens a request's envelopes now that their sender is a contact, then deletes it; returns
    /// how many texts were stored.
    pub(super) fn open_request(
        &mut self,
        request: &ContactRequest,
        now: Timestamp,
    ) -> Result<usize, EngineError> {
        let results = self.receive_batch(None, &request.envelopes, now)?;
        self.store.apply(&[Change::RemoveRequest(request.id)])?;
        self.request_index()?.remove(&request.id);
        let opened: Vec<_> = results.into_iter().filter_map(|r| r.message).collect();
        let count = opened.len();
        self.opened.extend(opened);
        Ok(count)
    }

    /// The contacts renamed since the last call (old and new name), for the daemon to carry its
    /// deliveries in flight over.
    pub fn take_renamed(&mut self) -> Vec<(String, String)> {
        std::mem::take(&mut self.renamed)
    }

    /// The messages stored outside the daemon's own flows since the last call (opened from
    /// accepted requests, files queued), for the daemon to announce as if they had just arrived
    /// or been sent.
    pub fn take_opened(&mut self) -> Vec<crate::store::StoredMessage> {
        std::mem::take(&mut self.opened)
    }

    /// Whether the first of `request`'s envelopes still opens (they all share its handshake).
    fn can_open(&mut self, request: &ContactRequest, now: Timestamp) -> bool {
        let Some(first) = request.envelopes.first() else { return false };
        let responder = Responder { bundle: &self.bundle, prekeys: &self.profile.prekeys };
        Session::accept(responder, first, now, &mut self.rng).is_ok()
    }

    /// Deletes request `id` and what it held, and dismisses its conversation: what its sender
    /// sends in it later is dropped (writing from our invite anew makes a new request).
    pub fn reject_request(&mut self, id: &RequestId, now: Timestamp) -> Result<(), EngineError> {
        let request = self.store.request(id)?.ok_or_else(|| EngineError::UnknownRequest(id.to_string()))?;
        let mut changes = self.dismissal(&request, now);
        changes.push(Change::RemoveRequest(*id));
        self.store.apply(&changes)?;
        self.request_index()?.remove(id);
        Ok(())
    }

    /// Deletes request `id`, dismisses its conversation and blocks its sender. Returns the entry
    /// made.
    pub fn block_request(&mut self, id: &RequestId, now: Timestamp) -> Result<Blocked, EngineError> {
        let request = self.store.request(id)?.ok_or_else(|| EngineError::UnknownRequest(id.to_string()))?;
        let label = request.suggested_name.clone().unwrap_or_else(|| format!("request {id}"));
        let blocked = Blocked { identity: request.identity, label, at: now, sessions: Vec::new() };
        // Dismissed too, so that after an unblock only a conversation started anew is heard.
        let mut changes = self.dismissal(&request, now);
        changes.extend([Change::RemoveRequest(*id), Change::Block(blocked.clone())]);
        self.store.apply(&changes)?;
        self.request_index()?.remove(id);
        Ok(blocked)
    }

    /// Renames contact `from` to `to`: its conversation, queued messages and sessions follow.
    pub fn rename_contact(&mut self, from: &str, to: &str) -> Result<Contact, EngineError> {
        check_name(to)?;
        let contact =
            self.store.contact(from)?.ok_or_else(|| EngineError::UnknownContact(from.to_owned()))?;
        if from == to {
            return Ok(contact);
        }
        // A change of case only is a rename like any other.
        self.check_name_free(to, Some(from))?;
        let mut changes = vec![Change::RenameContact { from: from.to_owned(), to: to.to_owned() }];
        let sessions = self.sessions_of(from)?;
        for record in &sessions {
            changes.push(Change::PutSession(crate::store::SessionRecord {
                contact: to.to_owned(),
                ..record.clone()
            }));
        }
        match self.store.apply(&changes) {
            Err(crate::store::StoreError::Conflict { .. }) => {
                return Err(EngineError::ContactExists(to.to_owned()));
            }
            other => other?,
        }
        for record in &sessions {
            self.session_contacts.insert(record.id, to.to_owned());
        }
        self.renamed.push((from.to_owned(), to.to_owned()));
        Ok(Contact { name: to.to_owned(), ..contact })
    }

    /// Removes contact `name`: the record, the conversation, queued messages, and every session
    /// with them (their keys go with the records; the daemon then replaces the storage key so
    /// no copy the database left behind can be opened). Returns the removed record.
    pub fn remove_contact(&mut self, name: &str) -> Result<Contact, EngineError> {
        let contact =
            self.store.contact(name)?.ok_or_else(|| EngineError::UnknownContact(name.to_owned()))?;
        let (changes, sessions) = self.removal(name, true)?;
        self.store.apply(&changes)?;
        self.drop_sessions(&sessions);
        Ok(contact)
    }

    /// Removes contact `name` as [`Engine::remove_contact`] does and blocks them.
    pub fn block_contact(&mut self, name: &str, now: Timestamp) -> Result<Blocked, EngineError> {
        let contact =
            self.store.contact(name)?.ok_or_else(|| EngineError::UnknownContact(name.to_owned()))?;
        // Their mailbox ids stay filed, so what they send in the old sessions is dropped quietly.
        let (mut changes, sessions) = self.removal(name, false)?;
        let blocked =
            Blocked { identity: contact.identity, label: contact.name, at: now, sessions: sessions.clone() };
        changes.push(Change::Block(blocked.clone()));
        self.store.apply(&changes)?;
        self.drop_sessions(&sessions);
        Ok(blocked)
    }

    /// Unblocks the sender whose id (the first 16 hex digits of their fingerprint) is `id`.
    pub fn unblock(&mut self, id: &RequestId) -> Result<Blocked, EngineError> {
        let blocked = self
            .store
            .blocked()?
            .into_iter()
            .find(|b| RequestId::of(&b.identity) == *id)
            .ok_or_else(|| EngineError::NotBlocked(id.to_string()))?;
        self.store.apply(&[Change::Unblock(blocked.identity)])?;
        Ok(blocked)
    }

    /// The changes that remove contact `name` with its sessions (and, with `unindex`, the
    /// mailbox ids filed under them), and those sessions.
    fn removal(&self, name: &str, unindex: bool) -> Result<(Vec<Change>, Vec<SessionId>), EngineError> {
        let mut changes = vec![Change::RemoveContact(name.to_owned())];
        let mut ids = Vec::new();
        for record in self.sessions_of(name)? {
            if unindex {
                for mailbox in &record.state.my_mailboxes.ids {
                    changes.push(Change::UnindexMailbox(*mailbox));
                }
            }
            for last_day in self.store.announced(&record.id)? {
                changes.push(Change::ForgetAnnouncement { session: record.id, last_day });
            }
            changes.push(Change::RemoveSession(record.id));
            ids.push(record.id);
        }
        Ok((changes, ids))
    }

    fn drop_sessions(&mut self, ids: &[SessionId]) {
        for id in ids {
            self.sessions.remove(id);
            self.session_contacts.remove(id);
        }
    }

    /// Every stored session with contact `name`. Opens every session record: for the user's
    /// rare edits of a contact, not for anything per message.
    pub(super) fn sessions_of(&self, name: &str) -> Result<Vec<crate::store::SessionRecord>, EngineError> {
        let mut records = Vec::new();
        for id in self.store.session_ids()? {
            if let Some(record) = self.store.session(&id)?
                && record.contact == name
            {
                records.push(record);
            }
        }
        Ok(records)
    }

    /// Whether `session` was deleted when its contact was blocked.
    pub(super) fn blocked_session(&self, session: &SessionId) -> Result<bool, EngineError> {
        Ok(self.store.blocked()?.iter().any(|b| b.sessions.contains(session)))
    }

    /// Deletes requests past their `expires_at` (dismissing their conversations) and forgets
    /// dismissals whose envelopes can no longer be opened anyway; returns how many requests.
    pub fn expire_requests(&mut self, now: Timestamp) -> Result<usize, EngineError> {
        let expired: Vec<ContactRequest> =
            self.store.requests()?.into_iter().filter(|r| r.expires_at < now).collect();
        let mut changes = vec![Change::PurgeDismissed { now, limit: PURGE_DISMISSED_BATCH }];
        for request in &expired {
            changes.extend(self.dismissal(request, now));
            changes.push(Change::RemoveRequest(request.id));
        }
        self.store.apply(&changes)?;
        for request in &expired {
            self.request_index()?.remove(&request.id);
        }
        Ok(expired.len())
    }
}

/// The record of a contact made from a request: nothing is known of their node or relays until
/// their `NodeInfo` and relay hints open.
pub(super) fn stranger_contact(name: &str, identity: IdentityPublic, now: Timestamp) -> Contact {
    Contact {
        name: name.to_owned(),
        identity,
        bundle: None,
        inbox: None,
        peer_id: Vec::new(),
        addrs: Vec::new(),
        relays: Vec::new(),
        session: None,
        added_at: now,
        last_resort: None,
        last_heard: None,
        restored_at: None,
    }
}
