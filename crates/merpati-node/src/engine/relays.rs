//! Relays: the user's own list, telling contacts where to reach us, learning where to reach them,
//! and the keys of our mailboxes, with which the daemon makes each relay its own fetch tokens.
//!
//! Flow. The user's relays are stored durably and printed in invites. Whenever the list changes,
//! every contact with a session gets a sealed `RelayHints` control message through the outbox,
//! and a new session (ours or a peer's first contact) starts with `NodeInfo` and `RelayHints`,
//! because a first contact fetched from a relay does not reveal the sender's node. The same
//! controls from contacts update their records. Relay addresses are binary multiaddrs that end in
//! `/p2p/<relay peer id>`, so the daemon can dial them without a lookup.

use std::collections::{HashMap, HashSet};

use libp2p::PeerId;
use libp2p::multiaddr::{Multiaddr, Protocol};
use merpati_proto::Timestamp;
use merpati_proto::frame::{self, Body, Control};
use merpati_proto::invite::{MAX_ADDR_LEN, MAX_ADDRS, MAX_RELAYS};
use merpati_proto::keys::SymmetricKey;
use merpati_proto::mailbox::{INBOX_DAY, MailboxKey};
use merpati_proto::session::SessionId;

use super::{Engine, EngineError, hex};
use crate::relay::DEFAULT_TTL_DAYS;
use crate::store::{Change, Contact, Store};

/// How many of a session's announcements a peer may still be writing under: the latest, the one
/// before (until the peer has the latest), and one more for good measure.
pub const ANNOUNCEMENTS_WATCHED: usize = 3;

/// How many days back a node looks for mail in its mailboxes: what a relay keeps by default (its
/// TTL), plus one day for senders whose clock runs behind.
pub const SWEEP_DAYS: u64 = DEFAULT_TTL_DAYS + 1;

/// The keys of our mailboxes, in two sets. Each relay's fetch task makes that relay's tokens
/// from them (a token is good at one relay only).
///
/// Mailbox ids rotate daily, and a sender writes under the id of the day on its own clock, so
/// mail may wait under any day since we last fetched. `live` are the mailboxes that may still
/// receive mail (the first-contact inbox, and per session yesterday, today and tomorrow, or the
/// last announced day once the announcement has run out): the node long-polls them. `old` are the
/// days before those, back to [`SWEEP_DAYS`] (or to the day before the session began): closed, since senders have moved on, but they may
/// hold what was written while we were away. Each relay's fetch task sweeps every old mailbox once
/// (at start, and each day for the day that just closed), so a node that was off for weeks
/// collects everything its relays still keep. `old` also holds the days announced ahead of
/// tomorrow, swept once each while still empty: a relay keeps envelopes of a mailbox no one has
/// ever fetched only a short while (its unfetched TTL), and these are where contacts write while
/// we are away.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MailboxKeys {
    /// Mailboxes to long-poll.
    pub live: Vec<MailboxKey>,
    /// Mailboxes to fetch once.
    pub old: Vec<MailboxKey>,
    /// The day they were computed for: days up to two before it are closed.
    pub today: u64,
}

/// Where a mailbox key comes from: a session's mailbox secret (or the inbox secret, `None`) and
/// a day. Deriving a key costs a scalar multiplication, and the daemon asks for every key after
/// each command, so the engine keeps the keys it last gave out under this name.
pub(super) type MailboxKeyName = (Option<SessionId>, u64);

/// Checks one relay address and returns the relay's peer id: a binary multiaddr of at most
/// [`MAX_ADDR_LEN`] bytes (so it fits in invites) that ends in `/p2p/<peer id>` and does not go
/// through another relay (`p2p-circuit`): a relay must be reachable directly.
pub fn check_relay(addr: &[u8]) -> Result<PeerId, String> {
    if addr.len() > MAX_ADDR_LEN {
        return Err(format!("it is {} bytes long, at most {MAX_ADDR_LEN} are allowed", addr.len()));
    }
    let parsed = Multiaddr::try_from(addr.to_vec()).map_err(|e| format!("not a multiaddr ({e})"))?;
    if parsed.iter().any(|p| matches!(p, Protocol::P2pCircuit)) {
        return Err(format!("{parsed} goes through another relay (p2p-circuit)"));
    }
    match parsed.iter().last() {
        Some(Protocol::P2p(peer)) if parsed.iter().count() > 1 => Ok(peer),
        _ => Err(format!("{parsed} must be an address ending in /p2p/<the relay's peer id>")),
    }
}

/// The usable entries of a relay list a contact sent: valid, one per relay peer id, at most
/// [`MAX_RELAYS`]. Entries this version does not understand are dropped rather than failing the
/// list, so a newer peer's hints still teach us what we can use.
fn usable_relays(list: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let mut peers = HashSet::new();
    list.iter()
        .filter(|addr| check_relay(addr).is_ok_and(|peer| peers.insert(peer)))
        .take(MAX_RELAYS)
        .cloned()
        .collect()
}

impl<S: Store> Engine<S> {
    /// The user's relays (binary multiaddrs ending in `/p2p/<peer id>`).
    pub fn relays(&self) -> Vec<Vec<u8>> {
        self.relays.clone()
    }

    /// Adds a relay (a binary multiaddr ending in `/p2p/<peer id>`), or replaces the address of
    /// the relay with the same peer id. Returns whether the list changed; when it did, every
    /// contact with a session is told the new list.
    pub fn add_relay(&mut self, addr: &[u8], now: Timestamp) -> Result<bool, EngineError> {
        let peer = check_relay(addr).map_err(EngineError::InvalidRelay)?;
        let mut relays = self.relays.clone();
        match relays.iter().position(|r| check_relay(r).ok() == Some(peer)) {
            Some(i) if relays[i] == addr => return Ok(false),
            Some(i) => relays[i] = addr.to_vec(),
            None if relays.len() >= MAX_RELAYS => return Err(EngineError::TooManyRelays { max: MAX_RELAYS }),
            None => relays.push(addr.to_vec()),
        }
        self.replace_relays(relays, now)?;
        Ok(true)
    }

    /// Removes the relay whose peer id is `peer_id` (binary libp2p peer id) and tells every
    /// contact with a session the new list.
    pub fn remove_relay(&mut self, peer_id: &[u8], now: Timestamp) -> Result<(), EngineError> {
        let mut relays = self.relays.clone();
        relays.retain(|r| check_relay(r).ok().is_none_or(|peer| peer.to_bytes() != peer_id));
        if relays.len() == self.relays.len() {
            let shown = PeerId::from_bytes(peer_id).map_or_else(|_| hex(peer_id), |p| p.to_string());
            return Err(EngineError::UnknownRelay(shown));
        }
        self.replace_relays(relays, now)
    }

    /// Records this node's libp2p peer id and listen addresses (binary), which a new session
    /// tells the peer. Kept in memory only: the daemon calls it at start with the addresses it
    /// listens on then.
    pub fn set_node_info(&mut self, peer_id: Vec<u8>, addrs: Vec<Vec<u8>>) {
        // Only what a `NodeInfo` frame can carry, or sealing it would fail.
        let addrs = addrs
            .into_iter()
            .filter(|a| (1..=frame::MAX_ADDR_LEN).contains(&a.len()))
            .take(frame::MAX_HINTS)
            .collect();
        self.node_info = Some((peer_id, addrs));
    }

    /// The keys of every mailbox that may hold something for us (see [`MailboxKeys`]).
    /// A session that cannot be read is skipped (and logged): the others are still worth
    /// fetching.
    pub fn mailbox_keys(&mut self, now: Timestamp) -> MailboxKeys {
        let mut known = std::mem::take(&mut self.mailbox_keys);
        let mut kept = HashMap::with_capacity(known.len());
        let mut key = |name: MailboxKeyName, secret: &SymmetricKey| {
            // A day may be asked for twice (today is also the announcement's day).
            if let Some(key) = kept.get(&name) {
                return MailboxKey::clone(key);
            }
            let key = known.remove(&name).unwrap_or_else(|| MailboxKey::derive(secret, name.1));
            kept.insert(name, key.clone());
            key
        };
        let mut live = vec![key((None, INBOX_DAY), &self.me.inbox_secret)];
        let mut old = Vec::new();
        let ids = self.store.session_ids().unwrap_or_else(|e| {
            tracing::warn!("cannot list sessions for fetching: {e}");
            Vec::new()
        });
        let today = now.day();
        for id in ids {
            // The last days of its announcements, the latest first: a peer may still write under
            // one it knew before our latest reached it, whose window may have ended long ago.
            let earlier = self.store.announced(&id).unwrap_or_else(|e| {
                tracing::warn!("cannot read a session's announcements: {e}");
                Vec::new()
            });
            // Read from memory, or as stored without keeping it: a node with many contacts
            // holds only the sessions it uses.
            let stored;
            let state = match self.sessions.get(&id) {
                Some(session) => session.state(),
                None => match self.store.session(&id) {
                    Ok(Some(record)) => {
                        stored = record.state;
                        &stored
                    }
                    Ok(None) => continue,
                    Err(e) => {
                        tracing::warn!("cannot load a session for fetching: {e}");
                        continue;
                    }
                },
            };
            let secret = &state.my_mailbox_secret;
            // A sender writes under the id of its own day while that day is in the announcement
            // it knows, and under that announcement's last id after it; the announcement it knows
            // may be one we have since replaced (it learns the new one only with our next
            // epoch). Every id is some day's, so every day in the window is looked at, whatever
            // announcement it was in; and today's id in our latest announcement, which after a
            // long silence is its last one, however old.
            let announced = &state.my_mailboxes;
            let last = announced.first_day + (announced.ids.len() as u64).saturating_sub(1);
            let live_days: Vec<u64> = (today.saturating_sub(1)..=today + 1)
                .chain(std::iter::once(today.clamp(announced.first_day, last)))
                .chain(earlier.into_iter().take(ANNOUNCEMENTS_WATCHED).filter(|day| *day <= today))
                .collect();
            live.extend(live_days.iter().map(|day| key((Some(id), *day), secret)));
            // Nothing was written before the session began, on the writer's clock (up to a day
            // behind ours): a new conversation has no past to sweep.
            let first_written =
                today.saturating_sub(SWEEP_DAYS).max(state.created_at.day().saturating_sub(1));
            old.extend(
                (first_written..=today.saturating_sub(2))
                    .chain(today + 2..=last)
                    .filter(|day| !live_days.contains(day))
                    .map(|day| key((Some(id), day), secret)),
            );
        }
        self.mailbox_keys = kept;
        let mut seen = HashSet::new();
        live.retain(|k| seen.insert(k.id()));
        old.retain(|k| seen.insert(k.id()));
        MailboxKeys { live, old, today }
    }

    /// Stores `relays` as the user's list and queues a `RelayHints` message to every contact
    /// with a session, all in one apply.
    fn replace_relays(&mut self, relays: Vec<Vec<u8>>, now: Timestamp) -> Result<(), EngineError> {
        let mut changes = vec![Change::SetRelays(relays.clone())];
        let body = Body::Control(Control::RelayHints(relays.clone()));
        let mut touched = Vec::new();
        for contact in self.store.contacts()? {
            let Some(id) = contact.session else { continue };
            match self.seal_into_outbox(&id, &contact.name, &body, now) {
                Ok(entry) => {
                    changes.push(Change::PutOutbox(entry));
                    if let Some(session) = self.sessions.get(&id) {
                        changes.extend(self.persist_session(session, &contact.name));
                    }
                    touched.push(id);
                }
                // A broken session cannot carry anything; its contact learns the relays with
                // the next session. The list itself still changes.
                Err(e) => tracing::debug!("relay hints not sent to {}: {e}", contact.name),
            }
        }
        if let Err(e) = self.store.apply(&changes) {
            for id in &touched {
                self.forget_session(id);
            }
            return Err(e.into());
        }
        self.relays = relays;
        Ok(())
    }

    /// The control messages that open a session: where our node is, and which relays hold our
    /// mailboxes. Only what is known: a peer learns nothing from an empty hint list it did not
    /// already assume.
    fn session_start_bodies(&self) -> Vec<Body> {
        let mut bodies = Vec::new();
        if let Some((peer_id, addrs)) = &self.node_info
            && !peer_id.is_empty()
            && peer_id.len() <= frame::MAX_PEER_ID_LEN
        {
            bodies.push(Body::Control(Control::NodeInfo { peer_id: peer_id.clone(), addrs: addrs.clone() }));
        }
        if !self.relays.is_empty() {
            bodies.push(Body::Control(Control::RelayHints(self.relays.clone())));
        }
        bodies
    }

    /// Seals what introduces us to `contact`, whose session we just started: `contact` may not
    /// have us in their contacts. The name the user calls themselves (if they chose one), which
    /// their contact request then suggests; and our keys for a first contact, as our invite has
    /// them, so they can start a new session with us one day (after a restore from a backup)
    /// even if they never had our invite. Sent after the first text, so the text leaves first.
    pub(super) fn seal_introduction(
        &mut self,
        session: &SessionId,
        contact: &str,
        now: Timestamp,
    ) -> Result<Vec<Change>, EngineError> {
        let mut bodies = Vec::new();
        if let Some(name) = &self.me.name {
            let body = Body::Control(Control::DisplayName(name.clone()));
            if body.validate().is_ok() {
                bodies.push(body);
            }
        }
        bodies.push(self.keys_body());
        let mut changes = Vec::with_capacity(bodies.len());
        for body in &bodies {
            changes.push(Change::PutOutbox(self.seal_into_outbox(session, contact, body, now)?));
        }
        Ok(changes)
    }

    /// Seals the session-opening control messages into outbox entries for `contact`, in the
    /// order they must arrive. On failure the in-memory session is dropped, so the next use
    /// reloads its last durable state.
    pub(super) fn seal_session_start(
        &mut self,
        session: &SessionId,
        contact: &str,
        now: Timestamp,
    ) -> Result<Vec<Change>, EngineError> {
        let mut changes = Vec::new();
        for body in self.session_start_bodies() {
            match self.seal_into_outbox(session, contact, &body, now) {
                Ok(entry) => changes.push(Change::PutOutbox(entry)),
                Err(e) => {
                    self.forget_session(session);
                    return Err(e);
                }
            }
        }
        Ok(changes)
    }
}

/// Applies a control message from `contact` to its record; returns whether anything changed.
/// Content that does not check out is ignored (and logged): the frame was authentic, so the
/// session still advances and the message is not refused.
pub(super) fn apply_control(contact: &mut Contact, control: Control) -> bool {
    match control {
        // Handled by `groups`, before this is called.
        Control::GroupEntries(_) | Control::GroupCards { .. } => false,
        Control::RelayHints(list) => {
            let usable = usable_relays(&list);
            if usable.is_empty() && !list.is_empty() {
                tracing::debug!("ignoring relay hints from {}: none is usable", contact.name);
                return false;
            }
            if usable == contact.relays {
                return false;
            }
            contact.relays = usable;
            true
        }
        Control::NodeInfo { peer_id, addrs } => {
            if PeerId::from_bytes(&peer_id).is_err() {
                tracing::debug!("ignoring node info from {}: not a peer id", contact.name);
                return false;
            }
            let addrs: Vec<Vec<u8>> = addrs
                .into_iter()
                .filter(|a| a.len() <= MAX_ADDR_LEN && Multiaddr::try_from(a.clone()).is_ok())
                .take(MAX_ADDRS)
                .collect();
            let moved = peer_id != contact.peer_id;
            // Addresses of another node are worthless; the same node with no addresses to tell
            // (not listening yet) leaves the ones we know.
            let addrs = if moved || !addrs.is_empty() { addrs } else { contact.addrs.clone() };
            if !moved && addrs == contact.addrs {
                return false;
            }
            contact.peer_id = peer_id;
            contact.addrs = addrs;
            true
        }
        // Announcements travel inside epoch opens; a separate one changes nothing here.
        Control::MailboxRotation(_) => false,
        // A contact's name is the user's choice; what they call themselves matters only in a
        // request, before there is a name.
        Control::DisplayName(_) => false,
        // Moves the conversation to another session: the engine's own step (`restore`).
        Control::Restored { .. } => false,
        Control::Keys(keys) => super::restore::learn_keys(contact, *keys),
    }
}
