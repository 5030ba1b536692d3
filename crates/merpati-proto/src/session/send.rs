//! Sealing: opening our epochs when it is our turn, stepping sub-epochs, building padded envelopes.
//!
//! Every fallible step runs before the session is touched, so a refused seal changes nothing.

use rand_core::CryptoRng;

use crate::envelope::{self, Envelope, Header, Kind};
use crate::frame::{self, Body, Frame, MessageId};
use crate::kdf::{self, label};
use crate::keys::{SymmetricKey, X25519Secret};
use crate::mailbox::{Announcement, DEFAULT_ANNOUNCE_DAYS};
use crate::noise::{self, EPOCH_OPEN_OVERHEAD, FIRST_CONTACT_OVERHEAD, TAG_LEN};
use crate::time::Timestamp;

use super::payload::{EpochPayload, MAX_EPOCH_PAYLOAD, MAX_FIRST_CONTACT_PAYLOAD};
use super::state::SendEpoch;
use super::{
    MESSAGES_PER_SUB_EPOCH, SUB_EPOCH_MAX_AGE, SealError, Sealed, Session, epoch_prologue, next_root,
};

/// The longest epoch-open bytes we ever attach (a first contact: prekey id, handshake, payload).
const MAX_OPEN_ATTACHED: usize = 4 + FIRST_CONTACT_OVERHEAD + MAX_FIRST_CONTACT_PAYLOAD;

/// A new epoch of ours, computed but not yet applied.
struct OpenedEpoch {
    send: SendEpoch,
    root: SymmetricKey,
    ratchet: X25519Secret,
    mailboxes: Announcement,
}

impl Session {
    /// Encrypts `body` into an envelope for the peer.
    ///
    /// Opens a new epoch first when the peer has moved since our last one (a DH ratchet step).
    /// Persist [`Session::state`] before the envelope leaves the device.
    pub fn seal(
        &mut self,
        body: &Body,
        now: Timestamp,
        rng: &mut (impl CryptoRng + ?Sized),
    ) -> Result<Sealed, SealError> {
        self.seal_with(body, None, now, rng)
    }

    /// [`Session::seal`] under a given message id: a message sent before, in another session,
    /// sent again with the id it had (its receiver keeps one message per id, and its receipt
    /// names the id the sender knows).
    pub fn seal_as(
        &mut self,
        body: &Body,
        message_id: MessageId,
        now: Timestamp,
        rng: &mut (impl CryptoRng + ?Sized),
    ) -> Result<Sealed, SealError> {
        self.seal_with(body, Some(message_id), now, rng)
    }

    /// Seals `body` under `message_id`, or a random one drawn after the epoch's keys (so the
    /// test vectors' random stream stays as it was).
    fn seal_with(
        &mut self,
        body: &Body,
        message_id: Option<MessageId>,
        now: Timestamp,
        rng: &mut (impl CryptoRng + ?Sized),
    ) -> Result<Sealed, SealError> {
        let frame_len = frame::FIXED_LEN + body.encoded_len();
        let max_frame = envelope::MAX_ENVELOPE_LEN - envelope::HEADER_LEN - 2 - MAX_OPEN_ATTACHED - TAG_LEN;
        if frame_len > max_frame {
            return Err(SealError::TooLarge { len: frame_len, max: max_frame });
        }

        let opened = if self.our_turn() { Some(self.open_epoch(now, rng)?) } else { None };
        let mut send = match (&opened, &self.state.send) {
            (Some(o), _) => o.send.clone(),
            (None, Some(s)) => s.clone(),
            (None, None) => return Err(SealError::Broken),
        };
        if send.next_index >= MESSAGES_PER_SUB_EPOCH || now.since(send.sub_started_at) >= SUB_EPOCH_MAX_AGE {
            next_sub_epoch(&mut send, now);
        }
        let sub = send.sub;

        let peer_acked = self.state.peer_acked_epoch.is_some_and(|a| a >= send.epoch);
        let open = (!peer_acked).then(|| send.open.clone());
        let kind = if send.epoch == 0 { Kind::FirstContact } else { Kind::Session };
        let mailbox = self.state.peer_mailboxes.current(now).ok_or(SealError::Broken)?;
        let header = Header {
            version: envelope::VERSION,
            kind,
            mailbox,
            epoch: send.epoch,
            sub_epoch: sub,
            index: send.next_index,
        };
        let message_id = message_id.unwrap_or_else(|| {
            let mut id = [0u8; 16];
            rng.fill_bytes(&mut id);
            MessageId(id)
        });
        let frame = Frame {
            header_echo: header.encode(),
            message_id,
            seq: self.state.next_seq,
            sent_at: now,
            ack_epoch: self.acked_peer_epoch(),
            body: body.clone(),
        };
        let open_len = open.as_ref().map_or(0, Vec::len);
        let needed = envelope::HEADER_LEN + 2 + open_len + frame.unpadded_len() + TAG_LEN;
        let bucket = envelope::bucket_for(needed)
            .ok_or(SealError::TooLarge { len: needed, max: envelope::MAX_ENVELOPE_LEN })?;
        let plaintext_len = envelope::plaintext_len_for(bucket, open_len)
            .ok_or(SealError::TooLarge { len: needed, max: envelope::MAX_ENVELOPE_LEN })?;
        let plaintext = frame.encode_padded(plaintext_len)?;
        let ciphertext = noise::seal(&send.key, u64::from(send.next_index), &plaintext)?;
        let bytes = Envelope { header, open, ciphertext }.encode();

        // Commit: nothing below can fail.
        if let Some(o) = opened {
            self.state.root = o.root;
            self.state.latest_epoch = o.send.epoch;
            self.state.my_ratchet = Some(o.ratchet);
            self.state.peer_ratchet = None;
            self.state.my_mailboxes = o.mailboxes;
        }
        send.next_index += 1;
        self.state.send = Some(send);
        let seq = self.state.next_seq;
        self.state.next_seq = self.state.next_seq.saturating_add(1);
        Ok(Sealed { envelope: bytes, mailbox, message_id: frame.message_id, seq })
    }

    /// Whether our next message must open a new epoch: the latest epoch is the peer's.
    fn our_turn(&self) -> bool {
        !self.state.role.owns(self.state.latest_epoch)
    }

    /// Computes our next epoch: a `Noise_Npsk0` open to the peer's latest ratchet key with the root
    /// key as PSK, announcing a fresh ratchet key and our mailbox ids.
    fn open_epoch(
        &self,
        now: Timestamp,
        rng: &mut (impl CryptoRng + ?Sized),
    ) -> Result<OpenedEpoch, SealError> {
        let epoch = self.state.latest_epoch.checked_add(1).ok_or(SealError::Broken)?;
        let target = self.state.peer_ratchet.ok_or(SealError::Broken)?;
        let ratchet = X25519Secret::generate(rng);
        // The ids only change with the day: reuse today's announcement instead of re-deriving it.
        let mailboxes = if self.state.my_mailboxes.first_day == now.day() {
            self.state.my_mailboxes.clone()
        } else {
            Announcement::new(&self.state.my_mailbox_secret, now, DEFAULT_ANNOUNCE_DAYS)
        };
        let payload = EpochPayload { ratchet: ratchet.public(), mailboxes: mailboxes.clone() }.encode();
        debug_assert!(
            payload.len() <= MAX_EPOCH_PAYLOAD && payload.len() + EPOCH_OPEN_OVERHEAD < MAX_OPEN_ATTACHED
        );
        let prologue = epoch_prologue(&self.state.id, epoch);
        let (open, split) = noise::epoch_open_write(&self.state.root, &target, &prologue, &payload, rng)?;
        Ok(OpenedEpoch {
            send: SendEpoch { epoch, open, sub: 0, key: split.k1, next_index: 0, sub_started_at: now },
            root: next_root(&split.k2),
            ratchet,
            mailboxes,
        })
    }
}

/// Steps the sending chain: `K(j+1) = PRF(K(j), "NDR1/sub")`, deleting `K(j)`.
pub(super) fn next_sub_epoch(send: &mut SendEpoch, now: Timestamp) {
    send.key = kdf::prf(send.key.as_bytes(), label::SUB, &[]).into();
    // 2^32 sub-epochs would take centuries at any real message rate; saturating keeps this total.
    send.sub = send.sub.saturating_add(1);
    send.next_index = 0;
    send.sub_started_at = now;
}
