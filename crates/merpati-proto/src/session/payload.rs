//! The encrypted payloads of the two handshakes: what a first contact and an epoch open announce.
//!
//! First contact: `device cert ‖ first ratchet key (32) ‖ mailbox announcement`.
//! Epoch open: `next ratchet key (32) ‖ mailbox announcement`.
//! Both travel inside Noise handshake payloads, so relays never see ratchet keys or mailbox ids
//! other than the one an envelope is addressed to.

use crate::codec::{DecodeError, Reader, Writer};
use crate::identity::DeviceCert;
use crate::keys::X25519Public;
use crate::mailbox::Announcement;

/// The most bytes a first-contact payload may have.
pub const MAX_FIRST_CONTACT_PAYLOAD: usize = 2048;
/// The most bytes an epoch-open payload may have.
pub const MAX_EPOCH_PAYLOAD: usize = 1024;

/// What the initiator announces in its first contact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FirstContactPayload {
    pub(crate) cert: DeviceCert,
    pub(crate) ratchet: X25519Public,
    pub(crate) mailboxes: Announcement,
}

/// What the opener of an epoch announces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EpochPayload {
    pub(crate) ratchet: X25519Public,
    pub(crate) mailboxes: Announcement,
}

impl FirstContactPayload {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(512);
        self.cert.encode(&mut w);
        w.raw(self.ratchet.as_bytes());
        self.mailboxes.encode(&mut w);
        w.into_bytes()
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        if bytes.len() > MAX_FIRST_CONTACT_PAYLOAD {
            return Err(DecodeError::TooLong {
                what: "first-contact payload",
                len: bytes.len(),
                max: MAX_FIRST_CONTACT_PAYLOAD,
            });
        }
        let mut r = Reader::new(bytes);
        let cert = DeviceCert::decode(&mut r).map_err(|_| DecodeError::Invalid { what: "device cert" })?;
        let ratchet = read_ratchet(&mut r)?;
        let mailboxes = Announcement::decode(&mut r)?;
        r.finish()?;
        Ok(Self { cert, ratchet, mailboxes })
    }
}

impl EpochPayload {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(300);
        w.raw(self.ratchet.as_bytes());
        self.mailboxes.encode(&mut w);
        w.into_bytes()
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        if bytes.len() > MAX_EPOCH_PAYLOAD {
            return Err(DecodeError::TooLong {
                what: "epoch payload",
                len: bytes.len(),
                max: MAX_EPOCH_PAYLOAD,
            });
        }
        let mut r = Reader::new(bytes);
        let ratchet = read_ratchet(&mut r)?;
        let mailboxes = Announcement::decode(&mut r)?;
        r.finish()?;
        Ok(Self { ratchet, mailboxes })
    }
}

fn read_ratchet(r: &mut Reader<'_>) -> Result<X25519Public, DecodeError> {
    X25519Public::from_bytes(r.array("ratchet key")?)
        .map_err(|_| DecodeError::Invalid { what: "ratchet key" })
}
