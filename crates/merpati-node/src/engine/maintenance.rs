//! The maintenance pass: what has to happen as time passes, whether or not anyone writes.
//!
//! The daemon runs it at start and then on a timer ([`crate::daemon::MAINTENANCE_EVERY`]). It
//! rotates the signed prekey and deletes the private keys of expired ones (so invites stay
//! fresh and first contacts keep working on a node that runs for months), gives every session its
//! [`Session::maintain`] step (stale sending keys stepped, old receiving keys deleted), and
//! reports as expired the messages left at relays that their recipient never collected while
//! the relays kept them, deletes contact requests left unanswered for 30 days and the pieces of
//! long texts that stayed incomplete for 61 days. Each step ends in one [`Store::apply`]; a failed step changes nothing in memory
//! either, and the next pass tries again.
//!
//! A session in memory (used since start) is maintained there and persisted if it changed; any
//! other is maintained as stored ([`Session::maintain_stored`]) and not kept in memory, so a
//! node with many contacts holds only the sessions it used.

use merpati_proto::Timestamp;
use merpati_proto::frame::MessageId;
use merpati_proto::session::Session;

use super::{DEFAULT_MESSAGE_LIFETIME, Engine, EngineError, bundle};
use crate::store::{Change, SessionRecord, Status, Store};

/// What one maintenance pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Maintenance {
    /// Whether a new signed prekey replaced the current one.
    pub prekey_rotated: bool,
    /// How many expired prekeys' private keys were deleted.
    pub prekeys_purged: usize,
    /// How many sessions were written back (changed by their step).
    pub sessions_written: usize,
    /// Messages now failed as expired, with the reason they show.
    pub expired: Vec<(MessageId, String)>,
    /// Contact requests deleted for their age ([`super::REQUEST_LIFETIME`]).
    pub requests_expired: usize,
    /// Long texts given up incomplete ([`super::FRAGMENT_PATIENCE`]).
    pub long_texts_expired: usize,
}

/// The most deadlines one apply of [`Engine::expire_uncollected`] settles.
const EXPIRE_BATCH: usize = 256;

impl<S: Store> Engine<S> {
    /// Runs the maintenance pass at `now`: [`Engine::maintain_prekeys`], then
    /// [`Engine::maintain_sessions`]; see the module documentation.
    pub fn maintain(&mut self, now: Timestamp) -> Result<Maintenance, EngineError> {
        let mut done = self.maintain_prekeys(now)?;
        done.sessions_written = self.maintain_sessions(now)?;
        done.expired = self.expire_uncollected(now)?;
        done.requests_expired = self.expire_requests(now)?;
        done.long_texts_expired = self.expire_fragments(now)?;
        Ok(done)
    }

    /// The pass's first step: rotates and purges prekeys; on a change, stores the profile and
    /// republishes the bundle.
    pub fn maintain_prekeys(&mut self, now: Timestamp) -> Result<Maintenance, EngineError> {
        // Secret keys are not `Clone`: change a copy read from the store, and adopt it only once
        // it is stored.
        let Some(mut profile) = self.store.profile()? else { return Err(EngineError::ForeignDatabase) };
        let device = profile.cert.device_id();
        let last_resort = profile.prekeys.last_resort().map(|p| p.id);
        let prekey_rotated = profile.prekeys.rotate_if_due(&profile.identity, &device, now, &mut self.rng);
        let last_resort_rotated = profile.prekeys.last_resort().map(|p| p.id) != last_resort;
        let prekeys_purged = profile.prekeys.purge(now);
        if prekey_rotated || prekeys_purged > 0 {
            let bundle = bundle(&profile)?;
            self.store.apply(&[Change::PutProfile(profile)])?;
            self.profile = self.store.profile()?.ok_or(EngineError::ForeignDatabase)?;
            self.bundle = bundle;
            tracing::info!(prekey_rotated, prekeys_purged, "prekeys maintained");
        }
        if last_resort_rotated {
            let told = self.tell_keys(now)?;
            tracing::info!(told, "new last-resort prekey told to contacts");
        }
        Ok(Maintenance { prekey_rotated, prekeys_purged, ..Maintenance::default() })
    }

    /// The pass's third step: every message left at relays whose receipt deadline has passed
    /// ([`crate::engine::RECEIPT_DEADLINE`]) and that is still only `stored` fails, with a reason
    /// saying so; the deadline is dropped whatever the message's status (a delivered one needs
    /// nothing). Returns the expired messages and their reason, for the daemon to publish.
    pub fn expire_uncollected(&mut self, now: Timestamp) -> Result<Vec<(MessageId, String)>, EngineError> {
        let mut expired = Vec::new();
        loop {
            let due = self.store.awaiting(now, EXPIRE_BATCH)?;
            if due.is_empty() {
                return Ok(expired);
            }
            let mut changes = Vec::with_capacity(2 * due.len());
            let mut batch = Vec::new();
            for (until, id) in due {
                changes.push(Change::StopAwaiting { id, until });
                let Some(message) = self.store.message(&id)? else { continue };
                if let Status::Stored { total, .. } = message.status {
                    let reason = format!(
                        "expired: {} did not collect it from {} within {} days",
                        message.contact,
                        if total == 1 {
                            "their relay".to_owned()
                        } else {
                            format!("any of their {total} relays")
                        },
                        DEFAULT_MESSAGE_LIFETIME / Timestamp::DAY
                    );
                    changes.push(Change::SetStatus {
                        id,
                        status: Status::Failed,
                        reason: Some(reason.clone()),
                    });
                    batch.push((id, reason));
                }
            }
            self.store.apply(&changes)?;
            expired.extend(batch);
        }
    }

    /// The pass's second step: gives every session its maintenance step and stores, in one apply,
    /// every session that changed. Returns how many were written.
    pub fn maintain_sessions(&mut self, now: Timestamp) -> Result<usize, EngineError> {
        let mut changes = Vec::new();
        let mut written = Vec::new();
        let mut stored_written = 0;
        for id in self.store.session_ids()? {
            // Older announcements than those a peer may still use need no watching.
            changes.extend(
                self.store
                    .announced(&id)?
                    .into_iter()
                    .skip(super::relays::ANNOUNCEMENTS_WATCHED)
                    .map(|last_day| Change::ForgetAnnouncement { session: id, last_day }),
            );
            if let Some(session) = self.sessions.get_mut(&id) {
                if Session::maintain(session, now) {
                    let contact = self.session_contacts.get(&id).cloned().unwrap_or_default();
                    changes.extend(self.persist_session(&self.sessions[&id], &contact));
                    written.push(id);
                }
                continue;
            }
            let Some(record) = self.store.session(&id)? else { continue };
            let (state, changed) = Session::maintain_stored(record.state, now);
            if changed {
                // Its mailboxes are as they were: the record alone changed.
                changes.push(Change::PutSession(SessionRecord { state, ..record }));
                stored_written += 1;
            }
        }
        if let Err(e) = self.store.apply(&changes) {
            // What is in memory is not on disk: reload the durable state on next use.
            for id in &written {
                self.forget_session(id);
            }
            return Err(e.into());
        }
        Ok(written.len() + stored_written)
    }
}
