//! Opening: find the key an envelope needs, decrypt and check it, and only then change the session.
//!
//! Order of checks, cheapest first: envelope size and version (in the codec), kind and epoch
//! ownership, a known epoch's open digest, the derivation cap, the replay bitmap, and only then
//! cryptography — at most one X25519 operation (a new epoch's open) before the AEAD check. The
//! result of those checks is a [`KeyPlan`]; [`Session::apply`] commits it after the frame decrypted
//! and its header echo matched, so every refusal leaves the session as it was.

use crate::envelope::{Envelope, Header, Kind};
use crate::frame::Frame;
use crate::kdf::{self, label};
use crate::keys::SymmetricKey;
use crate::noise;
use crate::time::Timestamp;

use super::payload::EpochPayload;
use super::state::{RecvEpoch, SubKey};
use super::{
    Incoming, MAX_DERIVATIONS, MAX_KEY_AGE, MAX_RETAINED_EPOCHS, MAX_RETAINED_SUBKEYS, OpenError,
    SUB_EPOCH_MAX_AGE, Session, epoch_prologue, next_root, open_digest,
};

/// Where the key for one envelope comes from, and what accepting it would change.
struct KeyPlan {
    /// Index into `recv` of a known epoch, or a new epoch to add.
    slot: Slot,
    sub: u32,
    key: SymmetricKey,
    /// Replay bitmap of the sub-epoch so far.
    seen: u64,
    /// Keys derived to reach `sub` (oldest first, ending with `sub` itself) and the new chain head.
    derived: Option<Derived>,
}

enum Slot {
    Known(usize),
    New(Box<NewEpoch>),
}

struct NewEpoch {
    recv: RecvEpoch,
    root: SymmetricKey,
    payload: EpochPayload,
}

struct Derived {
    keys: Vec<(u32, SymmetricKey)>,
    next_sub: u32,
    next_key: SymmetricKey,
}

impl Session {
    /// Decrypts and authenticates an envelope from the peer.
    ///
    /// On success the session has advanced (new epoch, replay bit set, obsolete keys deleted):
    /// persist [`Session::state`] together with the message before acknowledging it to the relay or
    /// peer. On error nothing changed.
    pub fn open(&mut self, envelope: &[u8], now: Timestamp) -> Result<Incoming, OpenError> {
        let envelope = Envelope::decode(envelope)?;
        self.open_envelope(&envelope, now)
    }

    /// Opens `envelope` as [`Session::open`] would, without changing anything: its frame, and
    /// whether its place was already taken (a [`OpenError::Replay`] for `open`). For a replay,
    /// the frame's message id tells a true copy (a second relay's, a retry) from different content
    /// another copy of the sender (a copied home) sealed under the same key and nonce. `None` if
    /// it does not open.
    pub fn peek(&self, envelope: &[u8], now: Timestamp) -> Option<(Frame, bool)> {
        let envelope = Envelope::decode(envelope).ok()?;
        let (plan, _) = self.prepare(&envelope, now).ok()?;
        let seen = plan.seen & (1u64 << envelope.header.index) != 0;
        Some((decrypt(&plan, &envelope).ok()?, seen))
    }

    pub(super) fn open_envelope(
        &mut self,
        envelope: &Envelope,
        now: Timestamp,
    ) -> Result<Incoming, OpenError> {
        let header = &envelope.header;
        let (plan, seen_open) = self.prepare(envelope, now)?;
        // Before any decryption: a replay costs no AEAD.
        if plan.seen & (1u64 << header.index) != 0 {
            return Err(OpenError::Replay);
        }
        let frame = decrypt(&plan, envelope)?;
        self.apply(plan, header, &frame, now);
        if let Some(open) = &envelope.open
            && !seen_open
        {
            self.last_open = Some((header.epoch, open.clone()));
        }
        Ok(Incoming {
            message_id: frame.message_id,
            seq: frame.seq,
            sent_at: frame.sent_at,
            epoch: header.epoch,
            body: frame.body,
        })
    }

    /// The checks of an envelope before its key is known (kind, whose epoch), and the plan for
    /// its key; with whether its open is the one last seen.
    fn prepare(&self, envelope: &Envelope, now: Timestamp) -> Result<(KeyPlan, bool), OpenError> {
        let header = &envelope.header;
        let epoch = header.epoch;
        let expected_kind = if epoch == 0 { Kind::FirstContact } else { Kind::Session };
        if header.kind != expected_kind {
            return Err(OpenError::WrongKind);
        }
        if self.state.role.owns(epoch) {
            return Err(OpenError::UnexpectedEpoch { epoch });
        }
        let seen_open = match (&self.last_open, envelope.open.as_deref()) {
            (Some((e, bytes)), Some(open)) => *e == epoch && bytes.as_slice() == open,
            _ => false,
        };
        Ok((self.plan(envelope, seen_open, now)?, seen_open))
    }

    fn plan(&self, envelope: &Envelope, seen_open: bool, now: Timestamp) -> Result<KeyPlan, OpenError> {
        let epoch = envelope.header.epoch;
        let sub = envelope.header.sub_epoch;
        if let Some(index) = self.state.recv.iter().position(|r| r.epoch == epoch) {
            let recv = &self.state.recv[index];
            if !seen_open
                && envelope.open.as_deref().is_some_and(|open| open_digest(open) != recv.open_digest)
            {
                return Err(OpenError::OpenMismatch);
            }
            return plan_key(Slot::Known(index), recv, sub);
        }
        if Some(epoch) != self.state.latest_epoch.checked_add(1) {
            return Err(if epoch <= self.state.latest_epoch {
                OpenError::KeyUnavailable
            } else {
                OpenError::UnexpectedEpoch { epoch }
            });
        }
        let open = envelope.open.as_deref().ok_or(OpenError::MissingOpen)?;
        // Only the epoch targeting our announced ratchet key can be next; without that key (not
        // announced yet, or already used) no new epoch is possible.
        let ratchet = self.state.my_ratchet.as_ref().ok_or(OpenError::UnexpectedEpoch { epoch })?;
        let prologue = epoch_prologue(&self.state.id, epoch);
        let (payload, split) = noise::epoch_open_read(&self.state.root, ratchet, &prologue, open)
            .map_err(|_| OpenError::Rejected)?;
        let payload = EpochPayload::decode(&payload).map_err(OpenError::Payload)?;
        let recv = RecvEpoch::new(epoch, open, split.k1, now);
        let root = next_root(&split.k2);
        let mut plan = plan_key(Slot::Known(usize::MAX), &recv, sub)?;
        plan.slot = Slot::New(Box::new(NewEpoch { recv, root, payload }));
        Ok(plan)
    }

    /// Commits an accepted message. Infallible by construction.
    fn apply(&mut self, plan: KeyPlan, header: &Header, frame: &Frame, now: Timestamp) {
        let state = &mut self.state;
        let index = match plan.slot {
            Slot::Known(index) => index,
            Slot::New(new) => {
                let NewEpoch { recv, root, payload } = *new;
                for older in state.recv.iter_mut().filter(|r| r.superseded_at.is_none()) {
                    older.superseded_at = Some(now);
                }
                state.latest_epoch = recv.epoch;
                state.root = root;
                state.my_ratchet = None; // its one use is done: forward secrecy for this epoch
                state.peer_ratchet = Some(payload.ratchet);
                state.peer_mailboxes = payload.mailboxes;
                state.recv.push(recv);
                state.recv.len() - 1
            }
        };
        let recv = &mut state.recv[index];
        if let Some(derived) = plan.derived {
            let keep_from = derived.keys.len().saturating_sub(MAX_RETAINED_SUBKEYS);
            recv.subkeys.extend(derived.keys.into_iter().skip(keep_from).map(|(sub, key)| SubKey {
                sub,
                key,
                seen: 0,
                derived_at: now,
            }));
            recv.next_sub = derived.next_sub;
            recv.next_key = derived.next_key;
        }
        if let Some(subkey) = recv.subkeys.iter_mut().find(|k| k.sub == plan.sub) {
            subkey.seen |= 1u64 << header.index;
        }
        // A sub-epoch whose 64 messages all arrived needs its key no more.
        recv.subkeys.retain(|k| k.seen != u64::MAX);

        // An ack only counts for an epoch of ours that exists.
        if let Some(acked) = frame.ack_epoch
            && state.role.owns(acked)
            && acked <= state.latest_epoch
        {
            state.peer_acked_epoch = state.peer_acked_epoch.max(Some(acked));
        }
        state.peer_seq.record(frame.seq);
        self.prune(now);
    }

    /// Deletes receiving keys past their age, and the oldest beyond the retention caps.
    pub(super) fn prune(&mut self, now: Timestamp) {
        let recv = &mut self.state.recv;
        for epoch in recv.iter_mut() {
            // A sub-epoch key is derived at the latest when the sub-epoch's first message arrives,
            // and the sender moves on within a day of starting it: its last message was sealed
            // no later than a day after the derivation.
            epoch.subkeys.retain(|k| now.since(k.derived_at) < MAX_KEY_AGE + SUB_EPOCH_MAX_AGE);
        }
        // An epoch's messages were all sealed before a newer epoch replaced it, so its keys can go
        // a relay TTL after that; the current epoch is kept whatever its age.
        recv.retain(|r| r.superseded_at.is_none_or(|at| now.since(at) < MAX_KEY_AGE));
        while recv.len() > MAX_RETAINED_EPOCHS {
            recv.remove(0);
        }
        let mut total: usize = recv.iter().map(|r| r.subkeys.len()).sum();
        for epoch in recv.iter_mut() {
            while total > MAX_RETAINED_SUBKEYS && !epoch.subkeys.is_empty() {
                epoch.subkeys.remove(0);
                total -= 1;
            }
        }
    }
}

/// Finds or derives the key of sub-epoch `sub` of `recv` without changing anything.
fn plan_key(slot: Slot, recv: &RecvEpoch, sub: u32) -> Result<KeyPlan, OpenError> {
    if sub < recv.next_sub {
        let subkey = recv.subkeys.iter().find(|k| k.sub == sub).ok_or(OpenError::KeyUnavailable)?;
        return Ok(KeyPlan { slot, sub, key: subkey.key.clone(), seen: subkey.seen, derived: None });
    }
    let needed = u64::from(sub - recv.next_sub) + 1;
    if needed > u64::from(MAX_DERIVATIONS) {
        return Err(OpenError::TooManyDerivations { needed, max: MAX_DERIVATIONS });
    }
    let retain_from = sub.saturating_sub(MAX_RETAINED_SUBKEYS as u32 - 1).max(recv.next_sub);
    let mut keys = Vec::with_capacity((sub - retain_from) as usize + 1);
    let mut current = recv.next_key.clone();
    for j in recv.next_sub..=sub {
        let next: SymmetricKey = kdf::prf(current.as_bytes(), label::SUB, &[]).into();
        if j >= retain_from {
            keys.push((j, current));
        }
        current = next;
    }
    let key = keys.last().map(|(_, k)| k.clone()).ok_or(OpenError::KeyUnavailable)?;
    let next_sub = sub.checked_add(1).ok_or(OpenError::KeyUnavailable)?;
    Ok(KeyPlan { slot, sub, key, seen: 0, derived: Some(Derived { keys, next_sub, next_key: current }) })
}

/// Decrypts an envelope under its planned key and checks that the frame echoes its header.
fn decrypt(plan: &KeyPlan, envelope: &Envelope) -> Result<Frame, OpenError> {
    let plaintext = noise::open(&plan.key, u64::from(envelope.header.index), &envelope.ciphertext)
        .map_err(|_| OpenError::Rejected)?;
    let frame = Frame::decode(&plaintext)?;
    if frame.header_echo != envelope.header.encode() {
        return Err(OpenError::HeaderMismatch);
    }
    Ok(frame)
}
