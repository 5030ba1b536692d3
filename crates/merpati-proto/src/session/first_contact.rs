//! Starting a session: the initiator's first contact and the responder's acceptance of it.
//!
//! The first contact is a one-way `Noise_X` handshake from the initiator's device static key to
//! the responder's signed prekey. Its prologue binds the responder's identity key, device id,
//! prekey id and the hash of its signed version list, so a prekey re-signed by someone else
//! (unknown key share) or a stripped version list (downgrade) makes the handshake fail. The
//! encrypted payload tells the responder who is writing (a device certificate, checked against the
//! handshake's static key), where to write back, and which ratchet key its first epoch targets.

use rand_core::CryptoRng;

use crate::codec::Writer;
use crate::envelope::{Envelope, Kind};
use crate::identity::{Bundle, DeviceCert, DeviceId, IdentityPublic, PrekeyRing};
use crate::kdf::label;
use crate::keys::{SymmetricKey, X25519Secret};
use crate::mailbox::{Announcement, DEFAULT_ANNOUNCE_DAYS, MailboxId};
use crate::noise::{self, FIRST_CONTACT_OVERHEAD};
use crate::time::Timestamp;

use super::payload::FirstContactPayload;
use super::state::{RecvEpoch, SendEpoch, SeqTracker, SessionState};
use super::{Incoming, OpenError, Role, SealError, Session, next_root, session_id};

/// What the responder needs to accept first contacts: its own current bundle (identity, device id,
/// version list) and its prekey secrets.
#[derive(Debug, Clone, Copy)]
pub struct Responder<'a> {
    /// Our published bundle.
    pub bundle: &'a Bundle,
    /// Our prekey secrets, current and recent.
    pub prekeys: &'a PrekeyRing,
}

fn prologue(
    identity: &IdentityPublic,
    device: &DeviceId,
    prekey_id: u32,
    versions_hash: &[u8; 32],
) -> Vec<u8> {
    let mut w = Writer::with_capacity(100);
    w.bytes_u8(label::FIRST_CONTACT)
        .raw(identity.as_bytes())
        .raw(&device.0)
        .u32(prekey_id)
        .raw(versions_hash);
    w.into_bytes()
}

impl Session {
    /// Starts a session with the owner of `peer` (a bundle from a verified invite), whose
    /// first-contact inbox is `peer_inbox`. The first-contact handshake rides on every message
    /// sealed until the peer answers.
    pub fn initiate(
        my_cert: &DeviceCert,
        my_static: &X25519Secret,
        peer: &Bundle,
        peer_inbox: MailboxId,
        now: Timestamp,
        rng: &mut (impl CryptoRng + ?Sized),
    ) -> Result<Session, SealError> {
        let ratchet = X25519Secret::generate(rng);
        let my_mailbox_secret = SymmetricKey::generate(rng);
        let my_mailboxes = Announcement::new(&my_mailbox_secret, now, DEFAULT_ANNOUNCE_DAYS);
        let payload = FirstContactPayload {
            cert: my_cert.clone(),
            ratchet: ratchet.public(),
            mailboxes: my_mailboxes.clone(),
        }
        .encode();
        let prekey_id = peer.prekey.id;
        let prologue =
            prologue(&peer.cert.identity, &peer.cert.device_id(), prekey_id, &peer.versions_hash());
        let (message, split) =
            noise::first_contact_write(my_static, &peer.prekey.public, &prologue, &payload, rng)?;
        let mut open = Vec::with_capacity(4 + message.len());
        open.extend_from_slice(&prekey_id.to_be_bytes());
        open.extend_from_slice(&message);

        Ok(Session::from_state(SessionState {
            id: session_id(&split.handshake_hash),
            role: Role::Initiator,
            peer: peer.cert.clone(),
            root: next_root(&split.k2),
            latest_epoch: 0,
            send: Some(SendEpoch {
                epoch: 0,
                open,
                sub: 0,
                key: split.k1,
                next_index: 0,
                sub_started_at: now,
            }),
            recv: Vec::new(),
            my_ratchet: Some(ratchet),
            peer_ratchet: None,
            my_mailbox_secret,
            my_mailboxes,
            peer_mailboxes: Announcement { first_day: now.day(), ids: vec![peer_inbox] },
            peer_acked_epoch: None,
            next_seq: 0,
            peer_seq: SeqTracker::default(),
            created_at: now,
        }))
    }

    /// Accepts a first-contact envelope addressed to our inbox: creates the session and opens the
    /// message it carries. Nothing is created if any check fails.
    ///
    /// Later envelopes carrying the same first contact belong to the session this returns: look it
    /// up by [`open_digest`] of the envelope's open before calling this again (which would cost two
    /// X25519 operations and produce a second session with the same id).
    pub fn accept(
        me: Responder<'_>,
        envelope: &[u8],
        now: Timestamp,
        rng: &mut (impl CryptoRng + ?Sized),
    ) -> Result<(Session, Incoming), OpenError> {
        let envelope = Envelope::decode(envelope)?;
        if envelope.header.kind != Kind::FirstContact || envelope.header.epoch != 0 {
            return Err(OpenError::WrongKind);
        }
        let open = envelope.open.as_deref().ok_or(OpenError::MissingOpen)?;
        if open.len() < 4 + FIRST_CONTACT_OVERHEAD {
            return Err(OpenError::Rejected);
        }
        let (id_bytes, message) = open.split_at(4);
        let prekey_id = u32::from_be_bytes([id_bytes[0], id_bytes[1], id_bytes[2], id_bytes[3]]);
        let prekey =
            me.prekeys.secret_for(prekey_id, now).ok_or(OpenError::UnknownPrekey { id: prekey_id })?;
        let cert = &me.bundle.cert;
        let prologue = prologue(&cert.identity, &cert.device_id(), prekey_id, &me.bundle.versions_hash());
        let (payload, sender_static, split) =
            noise::first_contact_read(prekey, &prologue, message).map_err(|_| OpenError::Rejected)?;
        let payload = FirstContactPayload::decode(&payload).map_err(OpenError::Payload)?;
        payload.cert.verify()?;
        if payload.cert.device_static != sender_static {
            return Err(OpenError::CertMismatch);
        }

        let my_mailbox_secret = SymmetricKey::generate(rng);
        let my_mailboxes = Announcement::new(&my_mailbox_secret, now, DEFAULT_ANNOUNCE_DAYS);
        let mut session = Session::from_state(SessionState {
            id: session_id(&split.handshake_hash),
            role: Role::Responder,
            peer: payload.cert,
            root: next_root(&split.k2),
            latest_epoch: 0,
            send: None,
            recv: vec![RecvEpoch::new(0, open, split.k1, now)],
            my_ratchet: None,
            peer_ratchet: Some(payload.ratchet),
            my_mailbox_secret,
            my_mailboxes,
            peer_mailboxes: payload.mailboxes,
            peer_acked_epoch: None,
            next_seq: 0,
            peer_seq: SeqTracker::default(),
            created_at: now,
        });
        let incoming = session.open_envelope(&envelope, now)?;
        Ok((session, incoming))
    }
}
