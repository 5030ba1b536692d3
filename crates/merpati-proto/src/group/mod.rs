//! Groups (protocol §15): the membership log every member holds, as signed, hash-linked entries
//! whose state is a pure function of the set of entries, and what a group's frames carry. Sans-IO,
//! like the rest of this crate.

mod entry;
mod log;
mod message;
#[cfg(test)]
mod tests;

pub use entry::{Action, Entry, EntryError, EntryHash, GroupId, MAX_GROUP_NAME_LEN, MAX_PARENTS, Role};
pub use log::{
    Added, Log, LogError, MAX_LOG_ENTRIES, MAX_MEMBERS, MAX_PENDING, MAX_PENDING_UNNAMED, Member,
    PENDING_LIFETIME, State,
};
pub use message::{
    GroupEntries, GroupMessage, MAX_ENTRIES_PER_FRAME, MAX_ENTRY_LEN, heads_digest, message_id,
};
