//! The node's engine: contacts, sessions, the outbox and incoming messages, over a [`Store`].
//!
//! The engine is synchronous and does no I/O of its own besides the store: the daemon feeds it
//! commands (from the control API), envelopes (from the network) and the time, and carries out
//! what it returns (deliveries to attempt, notifications to publish). Every step that changes
//! anything ends in exactly one [`Store::apply`], which is durable when it returns; only then does
//! the daemon acknowledge anything to a peer or a client.

#[cfg(test)]
mod group_tests;
mod groups;
mod incoming;
mod long_texts;
mod maintenance;
mod names;
mod outgoing;
mod relays;
#[cfg(test)]
mod request_tests;
mod requests;
mod restore;
#[cfg(test)]
mod tests;

use std::collections::HashMap;

use merpati_proto::Timestamp;
use merpati_proto::frame::{Body, MessageId};
use merpati_proto::identity::{Bundle, DeviceCert, IdentityKey, PROTOCOL_VERSION, PrekeyRing};
use merpati_proto::keys::{SymmetricKey, X25519Secret};
use merpati_proto::mailbox::{self, INBOX_DAY, MailboxId, MailboxKey};
use merpati_proto::session::{Session, SessionId};
use rand_chacha::ChaCha20Rng;
use thiserror::Error;

use crate::store::{
    Change, Contact, NodeKey, OutboxEntry, Profile, RequestId, SessionRecord, Store, StoreError,
    StoredMessage,
};

pub use groups::{
    Gap, GroupMember, GroupView, MAX_GROUPS, MAX_GROUPS_PER_OWNER, MAX_MEMBER_CONTACTS, group_conversation,
    group_of_conversation, is_member_contact, member_contact_name,
};
pub use incoming::Received;
pub use long_texts::FRAGMENT_PATIENCE;
pub use maintenance::Maintenance;
pub use outgoing::{Attempt, AttemptResult};
pub use relays::{ANNOUNCEMENTS_WATCHED, MailboxKeys, SWEEP_DAYS, check_relay};
pub use requests::{
    Accepted, MAX_DISMISSED, MAX_REQUEST_BYTES, MAX_REQUEST_ENVELOPES, MAX_REQUESTS, PREVIEW_CHARS,
    REQUEST_LIFETIME,
};
pub use restore::Resumed;

/// How long an outgoing message is retried before it is marked failed (ms): the relay TTL.
pub const DEFAULT_MESSAGE_LIFETIME: u64 = 30 * Timestamp::DAY;
/// How long after a message was left at relays its delivery receipt may come before it is
/// reported expired (ms): the relay TTL, plus half a day for clocks that disagree.
pub const RECEIPT_DEADLINE: u64 = DEFAULT_MESSAGE_LIFETIME + 12 * Timestamp::HOUR;
/// The first retry delay after a failed delivery attempt (ms); doubles per attempt.
pub const RETRY_BASE: u64 = 2 * Timestamp::SECOND;
/// The longest retry delay (ms).
pub const RETRY_MAX: u64 = 10 * 60 * Timestamp::SECOND;
/// The longest contact name, in bytes.
pub const MAX_NAME_LEN: usize = 64;

/// Why the engine refused a request. Each maps to a control-API error a person can read.
#[derive(Debug, Error)]
pub enum EngineError {
    /// No contact has that name.
    #[error("no contact named \"{0}\"")]
    UnknownContact(String),
    /// No contact has that name, whatever its case; `suggestion` is a near one.
    #[error("no contact named \"{name}\"{}", suggestion.as_ref().map(|s| format!("; did you mean \"{s}\"?")).unwrap_or_default())]
    UnknownContactLike {
        /// The name asked for.
        name: String,
        /// The contact name nearest to it, if one is close.
        suggestion: Option<String>,
    },
    /// Several contacts' names differ from the one asked for only in case.
    #[error("\"{name}\" could be any of {}: type the name exactly", matches.iter().map(|m| format!("\"{m}\"")).collect::<Vec<_>>().join(", "))]
    AmbiguousContact {
        /// The name asked for.
        name: String,
        /// The contacts it could mean.
        matches: Vec<String>,
    },
    /// The invite could not be used.
    #[error("invalid invite: {0}")]
    InvalidInvite(String),
    /// There is no session with the contact (this node was restored from a backup) and no keys
    /// of theirs to start one with: no invite of theirs, and their node has not sent its keys.
    #[error(
        "no keys of {0} to start a new session with: you never added their invite, and their node has not sent its keys yet (it sends them every 30 days); ask {0} for a new invite"
    )]
    NoKeys(String),
    /// The message does not fit in one message.
    #[error("message too large: {len} bytes, at most {max}")]
    TooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A file that cannot be sent: too large for this version, or a name or type that breaks the
    /// rules of a file's description.
    #[error("{0}")]
    InvalidFile(String),
    /// A long text to a contact who has never answered: they may hold our first messages as a
    /// contact request, which keeps only a few envelopes, so it would arrive cut short.
    #[error(
        "message too large for now: {contact} has not answered yet, and until they do a text is at most {max} bytes ({len} given)"
    )]
    TooLargeBeforeAnswer {
        /// The contact.
        contact: String,
        /// Its length.
        len: usize,
        /// The limit until the contact answers.
        max: usize,
    },
    /// A contact with that name exists already.
    #[error("a contact named \"{0}\" already exists")]
    ContactExists(String),
    /// No message has that id.
    #[error("no message with id {0}")]
    UnknownMessage(String),
    /// The name is empty, too long or has control characters.
    #[error("invalid name: {0}")]
    InvalidName(&'static str),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The write that held this change and others failed; the others' results carry the error.
    #[error("could not save to the database: {0}")]
    NotSaved(String),
    /// The database was made for another identity than the identity file's.
    #[error("the database belongs to another identity than this home's identity file")]
    ForeignDatabase,
    /// The session could not seal (a broken session: it needs a new first contact).
    #[error("could not encrypt the message: {0}")]
    Seal(#[from] merpati_proto::session::SealError),
    /// A relay address that cannot be used; the text says what is wrong with it.
    #[error("invalid relay address: {0}")]
    InvalidRelay(String),
    /// The relay list is full.
    #[error("you can have at most {max} relays; remove one first")]
    TooManyRelays {
        /// The limit.
        max: usize,
    },
    /// None of the user's relays has that peer id.
    #[error("no relay with peer id {0} in your relay list")]
    UnknownRelay(String),
    /// No contact request has that id.
    #[error("no contact request with id {0}; `merpati requests` lists them")]
    UnknownRequest(String),
    /// The request's envelopes can no longer be opened; it was deleted.
    #[error(
        "contact request {0} is too old to open (the key it was written to has expired); it was deleted: \
         ask them to write again"
    )]
    RequestExpired(String),
    /// Nobody blocked has that id.
    #[error("nobody with id {0} is blocked; `merpati contact blocked` lists them")]
    NotBlocked(String),
    /// No group has that name or id.
    #[error("no group named \"{0}\"; `merpati group list` lists yours")]
    UnknownGroup(String),
    /// Several groups have that name.
    #[error("\"{name}\" could be any of the groups {}: give its id instead", ids.join(", "))]
    AmbiguousGroup {
        /// The name given.
        name: String,
        /// The ids (hex) of the groups it matches.
        ids: Vec<String>,
    },
    /// The membership change is not allowed (a role missing, the log full, a bad name).
    #[error("the group does not allow it: {0}")]
    GroupRefused(String),
    /// We are not (or no longer) a member of the group.
    #[error("you are not a member of \"{0}\"")]
    NotInGroup(String),
    /// The contact is a member already.
    #[error("{contact} is already a member of \"{group}\"")]
    AlreadyInGroup {
        /// The contact.
        contact: String,
        /// The group.
        group: String,
    },
    /// Nobody of that name is a member.
    #[error("\"{member}\" is not a member of \"{group}\"; `merpati group show` lists the members")]
    NotInGroupMember {
        /// The name given.
        member: String,
        /// The group.
        group: String,
    },
    /// The group has as many members as a group can.
    #[error("a group has at most {0} members")]
    GroupFull(usize),
    /// This node keeps as many groups as it can.
    #[error("this node keeps at most {0} groups")]
    TooManyGroups(usize),
    /// The invite is from someone the user blocked.
    #[error("you blocked this person (id {0}); unblock them first with `merpati contact unblock {0}`")]
    BlockedIdentity(String),
}

/// This device's long-term keys, as read from the identity file `merpati init` wrote.
#[derive(Debug)]
pub struct Me {
    /// The identity key.
    pub identity: IdentityKey,
    /// The device's static X25519 key.
    pub device_static: X25519Secret,
    /// The first-contact inbox secret.
    pub inbox_secret: SymmetricKey,
    /// The display name the user chose, if any.
    pub name: Option<String>,
    /// When the identity was created (the device certificate's time).
    pub created_at: Timestamp,
}

impl From<merpati_control::identity_file::IdentityFile> for Me {
    fn from(file: merpati_control::identity_file::IdentityFile) -> Self {
        Self {
            identity: file.identity,
            device_static: file.device_static,
            inbox_secret: file.inbox_secret,
            name: file.name,
            created_at: file.created_at,
        }
    }
}

impl Me {
    /// The first-contact inbox id printed in invites.
    pub fn inbox(&self) -> MailboxId {
        mailbox::mailbox_id(&self.inbox_secret, INBOX_DAY)
    }
}

/// The engine; see the module documentation.
pub struct Engine<S: Store> {
    store: S,
    me: Me,
    profile: Profile,
    bundle: Bundle,
    /// Sessions in memory, loaded from the store on first use.
    sessions: HashMap<SessionId, Session>,
    /// Whose each known session is, so an incoming envelope does not decrypt the stored session
    /// record again just to learn its contact.
    session_contacts: HashMap<SessionId, String>,
    rng: ChaCha20Rng,
    /// Whether contacts are told when their messages were read.
    read_receipts: bool,
    /// The user's own relays (binary multiaddrs ending in `/p2p/<peer id>`), as stored.
    relays: Vec<Vec<u8>>,
    /// This node's libp2p peer id and listen addresses, as the daemon last told
    /// ([`Engine::set_node_info`]); told to contacts when a session starts.
    node_info: Option<(Vec<u8>, Vec<Vec<u8>>)>,
    /// When each contact request arrived, read from the store on first need: which to drop
    /// when the queue is full, without reading every request's envelopes.
    request_index: Option<HashMap<RequestId, Timestamp>>,
    /// Messages opened from accepted requests, not yet taken ([`Engine::take_opened`]).
    opened: Vec<StoredMessage>,
    /// Contacts renamed (old and new name), not yet taken ([`Engine::take_renamed`]).
    renamed: Vec<(String, String)>,
    /// The most dismissed conversations kept ([`MAX_DISMISSED`]; smaller in tests).
    max_dismissed: usize,
    /// The most group members who are not contacts kept ([`MAX_MEMBER_CONTACTS`]; smaller in
    /// tests).
    max_member_contacts: usize,
    /// The mailbox keys last given out ([`Engine::mailbox_keys`]), kept so they are not derived
    /// again after every command.
    mailbox_keys: HashMap<relays::MailboxKeyName, MailboxKey>,
    /// Our first-contact inbox (derived once: deriving a mailbox key costs a scalar
    /// multiplication, and every first contact is checked against it).
    inbox: MailboxId,
    /// Groups' logs as last written (or about to be), so a group message does not verify the
    /// whole log again; cleared when a write fails.
    group_logs: HashMap<merpati_proto::group::GroupId, merpati_proto::group::Log>,
}

impl<S: Store> std::fmt::Debug for Engine<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").field("sessions", &self.sessions.len()).finish_non_exhaustive()
    }
}

impl<S: Store> Engine<S> {
    /// Starts the engine: loads the profile (creating it from `me` on first start, with a node key
    /// from `new_node_key`), rotates the prekey if due and purges expired ones. A database that
    /// belongs to another identity is refused.
    pub fn start(
        store: S,
        me: Me,
        new_node_key: impl FnOnce() -> Vec<u8>,
        now: Timestamp,
        mut rng: ChaCha20Rng,
    ) -> Result<Self, EngineError> {
        let mut profile = match store.profile()? {
            Some(profile) if profile.identity.public() != me.identity.public() => {
                return Err(EngineError::ForeignDatabase);
            }
            Some(profile) => profile,
            None => {
                let cert = DeviceCert::issue(&me.identity, &me.device_static.public(), me.created_at);
                let prekeys = PrekeyRing::new(&me.identity, &cert.device_id(), now, &mut rng);
                Profile {
                    identity: IdentityKey::from_bytes(&me.identity.to_bytes()),
                    device_static: me.device_static.clone(),
                    cert,
                    node_key: NodeKey::new(new_node_key()),
                    prekeys,
                    created_at: now,
                }
            }
        };
        let device_id = profile.cert.device_id();
        profile.prekeys.rotate_if_due(&profile.identity, &device_id, now, &mut rng);
        profile.prekeys.purge(now);
        store.apply(&[Change::PutProfile(profile)])?;
        // Secret keys are not `Clone`: read back what was just stored.
        let profile = store.profile()?.ok_or(EngineError::ForeignDatabase)?;
        let bundle = bundle(&profile)?;
        let relays = store.relays()?;
        Ok(Self {
            store,
            profile,
            bundle,
            sessions: HashMap::new(),
            session_contacts: HashMap::new(),
            rng,
            read_receipts: true,
            relays,
            node_info: None,
            request_index: None,
            opened: Vec::new(),
            renamed: Vec::new(),
            max_dismissed: MAX_DISMISSED,
            max_member_contacts: MAX_MEMBER_CONTACTS,
            mailbox_keys: HashMap::new(),
            inbox: me.inbox(),
            group_logs: HashMap::new(),
            me,
        })
    }

    /// Sets how many group members who are not contacts are kept (tests: to reach the cap).
    #[cfg(test)]
    pub(crate) fn set_max_member_contacts(&mut self, max: usize) {
        self.max_member_contacts = max;
    }

    /// Sets how many dismissed conversations are kept (tests: to fill the cap quickly).
    #[cfg(test)]
    pub(crate) fn set_max_dismissed(&mut self, max: usize) {
        self.max_dismissed = max;
    }

    /// Turns read receipts on (the default) or off.
    pub fn set_read_receipts(&mut self, on: bool) {
        self.read_receipts = on;
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// This device's keys.
    pub fn me(&self) -> &Me {
        &self.me
    }

    /// The profile (identity, device keys, libp2p node key, prekeys).
    pub fn profile(&self) -> &Profile {
        &self.profile
    }

    /// The bundle published in invites.
    pub fn bundle(&self) -> &Bundle {
        &self.bundle
    }

    /// This user's invite as text, naming the node `peer_id` reachable at `addrs` (binary libp2p
    /// peer id and multiaddrs) and the user's relays.
    pub fn invite(
        &self,
        peer_id: Vec<u8>,
        addrs: Vec<Vec<u8>>,
        now: Timestamp,
    ) -> Result<String, EngineError> {
        let addrs = addrs.into_iter().take(merpati_proto::invite::MAX_ADDRS).collect();
        // Every ring has one once the engine started (`PrekeyRing::rotate_if_due`).
        let last_resort = self
            .profile
            .prekeys
            .last_resort()
            .ok_or_else(|| EngineError::InvalidInvite("no last-resort prekey yet".into()))?
            .clone();
        let invite = merpati_proto::invite::Invite::new(
            &self.profile.identity,
            self.bundle.clone(),
            last_resort,
            self.inbox,
            self.relays.clone(),
            peer_id,
            addrs,
            self.me.name.clone(),
            now,
        )
        .map_err(|e| EngineError::InvalidInvite(e.to_string()))?;
        Ok(invite.to_text())
    }

    /// Adds a contact from an invite's text.
    pub fn add_contact(&mut self, invite: &str, name: &str, now: Timestamp) -> Result<Contact, EngineError> {
        check_name(name)?;
        let invite = merpati_proto::invite::Invite::parse(invite, now)
            .map_err(|e| EngineError::InvalidInvite(e.to_string()))?;
        if *invite.identity() == self.profile.identity.public() {
            return Err(EngineError::InvalidInvite("this is your own invite".into()));
        }
        match self.store.contacts()?.into_iter().find(|c| c.identity == *invite.identity()) {
            // Someone met in a group becomes a contact: their conversation keeps its session.
            Some(member) if is_member_contact(&member.name) => {
                return self.adopt_member(member, invite, name);
            }
            Some(_) => {
                return Err(EngineError::InvalidInvite("you already have this person as a contact".into()));
            }
            None => {}
        }
        if self.store.is_blocked(invite.identity())? {
            return Err(EngineError::BlockedIdentity(RequestId::of(invite.identity()).to_string()));
        }
        self.check_name_free(name, None)?;
        let contact = Contact {
            name: name.to_owned(),
            identity: *invite.identity(),
            bundle: Some(invite.bundle),
            inbox: Some(invite.inbox),
            peer_id: invite.peer_id,
            addrs: invite.addrs,
            relays: invite.relays,
            session: None,
            added_at: now,
            last_resort: invite.last_resort,
            last_heard: None,
            restored_at: None,
        };
        match self.store.apply(&[Change::AddContact(contact.clone())]) {
            Err(StoreError::Conflict { .. }) => return Err(EngineError::ContactExists(name.to_owned())),
            other => other?,
        }
        // They may have written first: what they wrote is opened now. The contact is added
        // either way; a request that cannot be opened now stays listed for `requests accept`.
        if let Some(request) = self.store.request(&RequestId::of(&contact.identity))?
            && request.identity == contact.identity
            && let Err(e) = self.open_request(&request, now)
        {
            tracing::warn!("added {name}, but could not open their waiting contact request: {e}");
        }
        Ok(self.store.contact(name)?.unwrap_or(contact))
    }

    /// Makes `member`, kept for a group, the user's contact `name`, with what their invite says;
    /// their sessions (and whatever is on its way in them) carry on under the new name.
    fn adopt_member(
        &mut self,
        member: Contact,
        invite: merpati_proto::invite::Invite,
        name: &str,
    ) -> Result<Contact, EngineError> {
        self.check_name_free(name, None)?;
        let contact = Contact {
            name: name.to_owned(),
            bundle: Some(invite.bundle),
            inbox: Some(invite.inbox),
            peer_id: invite.peer_id,
            addrs: invite.addrs,
            relays: invite.relays,
            last_resort: invite.last_resort.or(member.last_resort.clone()),
            ..member.clone()
        };
        let mut changes = vec![Change::RenameContact { from: member.name.clone(), to: name.to_owned() }];
        let sessions = self.sessions_of(&member.name)?;
        for record in &sessions {
            changes.push(Change::PutSession(SessionRecord { contact: name.to_owned(), ..record.clone() }));
        }
        changes.push(Change::PutContact(contact.clone()));
        match self.store.apply(&changes) {
            Err(StoreError::Conflict { .. }) => return Err(EngineError::ContactExists(name.to_owned())),
            other => other?,
        }
        for record in &sessions {
            self.session_contacts.insert(record.id, name.to_owned());
        }
        self.renamed.push((member.name, name.to_owned()));
        Ok(contact)
    }

    /// Records addresses at which the node `peer_id` was found (on the local network); returns
    /// the name of the contact it belongs to, whose queued messages can now be tried at once.
    pub fn learn_addresses(
        &mut self,
        peer_id: &[u8],
        addrs: Vec<Vec<u8>>,
    ) -> Result<Option<String>, EngineError> {
        let Some(mut contact) = self.store.contacts()?.into_iter().find(|c| c.peer_id == peer_id) else {
            return Ok(None);
        };
        // Newest first: a freshly discovered address is the likeliest to work.
        let mut merged = addrs;
        merged.extend(contact.addrs.iter().cloned());
        let mut seen = std::collections::HashSet::new();
        merged.retain(|a| seen.insert(a.clone()));
        merged.truncate(merpati_proto::invite::MAX_ADDRS);
        if merged != contact.addrs {
            contact.addrs = merged;
            self.store.apply(&[Change::PutContact(contact.clone())])?;
        }
        Ok(Some(contact.name))
    }

    /// Ranges of `contact`'s sequence numbers that have not arrived in its current session.
    pub fn missing(&mut self, contact: &str, now: Timestamp) -> Result<Vec<[u64; 2]>, EngineError> {
        let found =
            self.store.contact(contact)?.ok_or_else(|| EngineError::UnknownContact(contact.to_owned()))?;
        let Some(id) = found.session else { return Ok(Vec::new()) };
        Ok(match self.session(&id, now)? {
            Some(session) => session.missing().into_iter().map(|r| [*r.start(), *r.end()]).collect(),
            None => Vec::new(),
        })
    }

    /// The stored message with `id`.
    pub fn message(&self, id: &MessageId) -> Result<StoredMessage, EngineError> {
        self.store.message(id)?.ok_or_else(|| EngineError::UnknownMessage(hex(&id.0)))
    }

    /// Deletes message `id` (either direction) from this device: its record and text, with the
    /// conversation re-keyed so that, once the daemon has replaced the storage key, no copy the
    /// database left behind can be read. Local only: a message still on its way is delivered,
    /// and the contact keeps their copy. Returns the message as it was.
    pub fn delete_message(&mut self, id: &MessageId) -> Result<StoredMessage, EngineError> {
        let message = self.message(id)?;
        self.store.apply(&[Change::DeleteMessage(*id)])?;
        Ok(message)
    }

    /// Deletes every message of the conversation with contact `name` from this device, as
    /// [`Engine::delete_message`] does one; the contact and its session stay.
    pub fn clear_conversation(&mut self, name: &str) -> Result<Contact, EngineError> {
        let contact =
            self.store.contact(name)?.ok_or_else(|| EngineError::UnknownContact(name.to_owned()))?;
        self.store.apply(&[Change::ClearConversation(contact.name.clone())])?;
        Ok(contact)
    }

    /// The session `id`, loaded from the store on first use since start.
    fn session(&mut self, id: &SessionId, now: Timestamp) -> Result<Option<&mut Session>, EngineError> {
        if !self.sessions.contains_key(id) {
            let Some(record) = self.store.session(id)? else { return Ok(None) };
            // A session loaded for the first time since start continues on a fresh sub-epoch
            // (restart safety); the apply of the step that uses it persists that.
            self.cache_session(Session::restore(record.state, now), &record.contact);
        }
        Ok(self.sessions.get_mut(id))
    }

    /// Keeps `session`, which belongs to `contact`, in memory.
    fn cache_session(&mut self, session: Session, contact: &str) {
        self.session_contacts.insert(session.id(), contact.to_owned());
        self.sessions.insert(session.id(), session);
    }

    /// Forgets the in-memory copy of a session whose step could not be stored: the next use
    /// reloads the last durable state, so nothing half-done survives.
    fn forget_session(&mut self, id: &SessionId) {
        self.sessions.remove(id);
    }

    /// Seals `body` (a receipt or control message, shown to no one) in session `id` with
    /// `contact`, as an outbox entry. The session's new state is persisted by the caller's apply,
    /// which must also forget the session if it fails.
    fn seal_into_outbox(
        &mut self,
        id: &SessionId,
        contact: &str,
        body: &Body,
        now: Timestamp,
    ) -> Result<OutboxEntry, EngineError> {
        let mut rng = self.rng.clone();
        let session =
            self.session(id, now)?.ok_or_else(|| EngineError::UnknownContact(contact.to_owned()))?;
        let sealed = session.seal(body, now, &mut rng);
        self.rng = rng;
        Ok(outgoing::queue_entry(sealed?, contact, now))
    }

    /// The changes that persist `session` for `contact`, with its mailbox index entries.
    fn persist_session(&self, session: &Session, contact: &str) -> Vec<Change> {
        let mut changes = vec![Change::PutSession(SessionRecord {
            id: session.id(),
            contact: contact.to_owned(),
            state: session.state().clone(),
        })];
        let announced = session.my_mailboxes();
        changes.extend(
            announced
                .ids
                .iter()
                .map(|mailbox| Change::IndexMailbox { mailbox: *mailbox, session: session.id() }),
        );
        // A peer that never receives a newer one keeps writing under this one's last id.
        let last_day = announced.first_day + (announced.ids.len() as u64).saturating_sub(1);
        changes.push(Change::NoteAnnouncement { session: session.id(), last_day });
        changes
    }
}

fn bundle(profile: &Profile) -> Result<Bundle, EngineError> {
    Bundle::new(
        &profile.identity,
        profile.cert.clone(),
        profile.prekeys.current().clone(),
        vec![PROTOCOL_VERSION],
    )
    .map_err(|e| EngineError::InvalidInvite(e.to_string()))
}

/// Checks a contact name: 1 to 64 bytes, no control characters, not only spaces.
pub fn check_name(name: &str) -> Result<(), EngineError> {
    if name.trim().is_empty() {
        return Err(EngineError::InvalidName("a name cannot be empty"));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(EngineError::InvalidName("a name can be at most 64 bytes"));
    }
    if name.chars().any(char::is_control) {
        return Err(EngineError::InvalidName("a name cannot contain control characters"));
    }
    Ok(())
}

/// A contact record with nothing known but its name and identity, for tests elsewhere in the crate.
#[cfg(test)]
pub(crate) fn tests_member_contact(name: &str, identity: merpati_proto::identity::IdentityPublic) -> Contact {
    requests::stranger_contact(name, identity, Timestamp(1))
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
