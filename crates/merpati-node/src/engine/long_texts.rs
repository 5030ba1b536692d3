//! Long texts (over 15 KiB, up to 1 MiB): cut into fragments on the way out, kept piece by
//! piece on the way in until the last one arrives, then stored as one message.
//!
//! The fragment group's random id is the whole text's message id on both sides, so receipts,
//! statuses, deletion and search treat a long text like any other. The sender's outbox holds one
//! entry per piece, each noting the text it belongs to ([`crate::store::PartOf`]); the text moves on once none
//! of its pieces is left in the outbox, and fails (taking its other pieces out) if any fails.
//! The receiver keeps each piece in the store, sealed, in the same write that advances the
//! session, so nothing is lost to a crash and nothing is stored twice; incomplete groups are
//! capped per contact and given up [`FRAGMENT_PATIENCE`] after their newest piece arrived.

use merpati_proto::Timestamp;
use merpati_proto::fragment::{CONTENT_TEXT, Fragment, MAX_GROUPS_IN_PROGRESS};
use merpati_proto::frame::MessageId;

use super::{Engine, EngineError};
use crate::store::{Change, Store, StoredFragment, StoredMessage};

/// How long the pieces of an incomplete text are kept after the newest of them arrived: a sender
/// retries a piece for 30 days and a relay may then keep it 30 more, so the next piece can
/// legitimately come that much later.
pub const FRAGMENT_PATIENCE: u64 = 61 * Timestamp::DAY;

/// What one received piece led to.
pub(super) enum PieceOutcome {
    /// The text is whole: stored (in the batch's changes) under the group's id.
    Whole(StoredMessage),
    /// Kept, waiting for the rest.
    Kept,
    /// Not kept, and why (for the log): a piece that breaks the format, disagrees with its
    /// group, or would start one group too many.
    Ignored(&'static str),
}

impl<S: Store> Engine<S> {
    /// Takes in one piece of a long text from `contact` (its frame's `seq` and `sent_at`),
    /// adding to `changes` what it leads to.
    pub(super) fn receive_piece(
        &self,
        contact: &str,
        (seq, sent_at): (u64, Timestamp),
        fragment: &Fragment,
        changes: &mut Vec<Change>,
        now: Timestamp,
    ) -> Result<PieceOutcome, EngineError> {
        if fragment.content != CONTENT_TEXT {
            // Reserved for attachments; a later version reads them.
            return Ok(PieceOutcome::Ignored("content this version does not read"));
        }
        if fragment.validate().is_err() {
            return Ok(PieceOutcome::Ignored("a piece that breaks the fragment format"));
        }
        let group = fragment.group;
        if self.store.message(&MessageId(group))?.is_some() {
            return Ok(PieceOutcome::Ignored("a piece of a text already whole"));
        }
        // The pieces so far: stored, and earlier in this batch.
        let mut pieces = self.store.fragments(contact, &group)?;
        let stored = !pieces.is_empty();
        pieces.extend(changes.iter().filter_map(|change| match change {
            Change::PutFragment(piece) if piece.contact == contact && piece.group == group => {
                Some(piece.clone())
            }
            _ => None,
        }));
        if let Some(first) = pieces.first()
            && (first.count != fragment.count || first.total_len != fragment.total_len)
        {
            return Ok(PieceOutcome::Ignored("a piece that disagrees with its group"));
        }
        if pieces.iter().any(|piece| piece.index == fragment.index) {
            return Ok(PieceOutcome::Ignored("a piece already kept"));
        }
        if pieces.is_empty() && self.groups_waiting(contact, changes)? >= MAX_GROUPS_IN_PROGRESS {
            return Ok(PieceOutcome::Ignored("too many long texts from this contact are incomplete"));
        }
        let piece = StoredFragment {
            contact: contact.to_owned(),
            group,
            index: fragment.index,
            count: fragment.count,
            total_len: fragment.total_len,
            seq,
            sent_at,
            received_at: now,
            chunk: fragment.chunk.clone(),
        };
        if pieces.len() + 1 < usize::from(fragment.count) {
            changes.push(Change::PutFragment(piece));
            return Ok(PieceOutcome::Kept);
        }
        pieces.push(piece);
        pieces.sort_by_key(|piece| piece.index);
        // The pieces of this batch are not written at all; the stored ones go (and, as they held
        // text, the storage key is rotated soon after: see `Change::RemoveFragments`).
        changes.retain(
            |change| !matches!(change, Change::PutFragment(p) if p.contact == contact && p.group == group),
        );
        if stored {
            changes.push(Change::RemoveFragments { contact: contact.to_owned(), group });
        }
        let bytes: Vec<u8> = pieces.iter().flat_map(|piece| piece.chunk.iter().copied()).collect();
        let Ok(text) = String::from_utf8(bytes) else {
            return Ok(PieceOutcome::Ignored("a long text that is not UTF-8"));
        };
        let first = &pieces[0];
        let message = StoredMessage::received(MessageId(group), contact, first.sent_at, text, first.seq);
        changes.push(Change::PutMessage(message.clone()));
        Ok(PieceOutcome::Whole(message))
    }

    /// How many of `contact`'s long texts are incomplete, counting groups this batch starts.
    fn groups_waiting(&self, contact: &str, changes: &[Change]) -> Result<usize, EngineError> {
        let mut groups = self.store.fragment_groups(contact)?;
        for change in changes {
            if let Change::PutFragment(piece) = change
                && piece.contact == contact
                && !groups.contains(&piece.group)
            {
                groups.push(piece.group);
            }
        }
        Ok(groups.len())
    }

    /// Gives up the incomplete long texts whose newest piece arrived more than
    /// [`FRAGMENT_PATIENCE`] ago: their other pieces will not come. Returns how many.
    pub fn expire_fragments(&mut self, now: Timestamp) -> Result<usize, EngineError> {
        let before = Timestamp(now.0.saturating_sub(FRAGMENT_PATIENCE));
        let stale = self.store.stale_fragments(before)?;
        if stale.is_empty() {
            return Ok(0);
        }
        let changes: Vec<Change> = stale
            .iter()
            .map(|(contact, group)| Change::RemoveFragments { contact: contact.clone(), group: *group })
            .collect();
        self.store.apply(&changes)?;
        Ok(stale.len())
    }
}
