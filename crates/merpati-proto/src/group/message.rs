//! What travels for a group inside pairwise frames (protocol §15.3): a group message's header
//! around its inner body, entries of the membership log, and the ids that make each message
//! one message at every member.

use super::entry::{Entry, EntryHash, GroupId};
use crate::frame::{Body, MessageId};
use crate::identity::IdentityPublic;
use crate::kdf::{self, label};

/// The most entries one frame carries (160 of the longest fill 56 KiB of a 64 KiB frame), so a
/// group's whole log usually arrives in one: a node takes a group it does not know only from a
/// frame that names both its sender and itself. A longer log goes in several frames.
pub const MAX_ENTRIES_PER_FRAME: usize = 160;
/// The longest encoded entry: four parents and a 64-byte name.
pub const MAX_ENTRY_LEN: usize = 16 + 4 + 1 + 4 * 32 + 32 + 8 + 1 + 32 + 1 + 64 + 64;

/// A message to a group, one copy of which goes to each member in its own session.
#[derive(Clone, PartialEq, Eq)]
pub struct GroupMessage {
    /// The group.
    pub group: GroupId,
    /// The sender's count of its messages to the group, from 1.
    pub sender_seq: u64,
    /// The largest entry number of the sender's log when it sent.
    pub log_n: u32,
    /// [`heads_digest`] of the sender's log when it sent.
    pub heads: [u8; 16],
    /// What is said: a text, a file's description or a piece of a long text.
    pub inner: Body,
}

impl std::fmt::Debug for GroupMessage {
    // The inner body's own Debug keeps text out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupMessage")
            .field("group", &self.group)
            .field("sender_seq", &self.sender_seq)
            .field("log_n", &self.log_n)
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl GroupMessage {
    /// The message's group-wide id: the same at every member, whichever copy it came in.
    pub fn id(&self, sender: &IdentityPublic) -> MessageId {
        message_id(self.group, sender, self.sender_seq)
    }
}

/// Entries of one group's log, to add to the receiver's copy (in any order: each waits for its
/// parents). The genesis names no group in its own bytes; the others name this one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupEntries {
    /// The group.
    pub group: GroupId,
    /// 1 to [`MAX_ENTRIES_PER_FRAME`] entries, each checked for layout but not signature.
    pub entries: Vec<Entry>,
}

impl GroupEntries {
    /// Whether every entry is of `group` (a genesis by the id it makes).
    pub fn all_of_the_group(&self) -> bool {
        self.entries
            .iter()
            .all(|e| if e.n == 0 { e.group_id_of_genesis() == self.group } else { e.group_id == self.group })
    }
}

/// `H("NDR1/group-message", group, sender, sender_seq)[..16]`.
pub fn message_id(group: GroupId, sender: &IdentityPublic, sender_seq: u64) -> MessageId {
    MessageId(kdf::hash_prefix(
        label::GROUP_MESSAGE,
        &[&group.0, sender.as_bytes(), &sender_seq.to_be_bytes()],
    ))
}

/// `H("NDR1/group-heads", sorted head hashes)[..16]`: two logs with the same heads have the
/// same entries.
pub fn heads_digest(heads: &[EntryHash]) -> [u8; 16] {
    let mut sorted: Vec<&[u8]> = heads.iter().map(|h| &h.0[..]).collect();
    sorted.sort();
    let joined = sorted.concat();
    kdf::hash_prefix(label::GROUP_HEADS, &[&joined])
}
