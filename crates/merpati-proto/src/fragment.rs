//! Fragments: message bodies above the 16 KiB text limit (up to 1 MiB), cut into chunks that each
//! ride in their own frame, and put back together by a bounded [`Reassembler`].
//!
//! Flow: the sender picks a random 16-byte group id, calls [`split`], and sends every fragment as
//! a `Body::Fragment` of its own frame (each one encrypted, padded and delivered like any message,
//! in any order, possibly twice). The receiver hands each decrypted fragment to
//! [`Reassembler::push`], which returns the whole data once the last missing one arrives.
//!
//! A fragment body is laid out as:
//!
//! ```text
//! group      16   random id shared by the fragments of one piece of data
//! content    u8   what the data is: 1 = UTF-8 text (CONTENT_TEXT); others reserved (attachments)
//! index      u16  BE, 0-based position, < count
//! count      u16  BE, number of fragments, = ceil(total_len / MAX_FRAGMENT_CHUNK)
//! total_len  u32  BE, length of the whole data, 1..=MAX_REASSEMBLED_LEN
//! chunk      rest of the body
//! ```
//!
//! Chunking is fixed: every chunk but the last is exactly [`MAX_FRAGMENT_CHUNK`] bytes and the last
//! holds the remainder. That makes each fragment checkable on its own (its length follows from
//! `index`, `count` and `total_len`), so a fragment that could never add up is refused on arrival,
//! not discovered when the group stalls.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;

use thiserror::Error;
use zeroize::Zeroizing;

use crate::codec::{DecodeError, Reader, Writer};
use crate::time::Timestamp;

/// The largest piece of data that can be fragmented and reassembled.
pub const MAX_REASSEMBLED_LEN: usize = 1024 * 1024;
/// The chunk size. 48 KiB plus frame overhead and the largest epoch open still fits the 64 KiB
/// envelope bucket.
pub const MAX_FRAGMENT_CHUNK: usize = 48 * 1024;
/// Groups a [`Reassembler`] keeps in progress at once; more are refused with
/// [`FragmentError::Busy`].
pub const MAX_GROUPS_IN_PROGRESS: usize = 16;
/// Bytes a [`Reassembler`] reserves across its groups in progress (each group reserves its whole
/// `total_len` when its first fragment arrives), so at most four 1 MiB messages at a time.
pub const MAX_BUFFERED_BYTES: usize = 4 * 1024 * 1024;
/// How long a group may stay incomplete, in milliseconds, counted from its first fragment.
pub const GROUP_TTL: u64 = Timestamp::HOUR;
/// How many completed group ids a [`Reassembler`] remembers (each for [`GROUP_TTL`]), so a late
/// duplicate of a delivered fragment does not start a new group.
pub const MAX_COMPLETED_REMEMBERED: usize = 64;
/// The `content` value for UTF-8 text.
pub const CONTENT_TEXT: u8 = 1;
/// The most fragments one group can have: `ceil(MAX_REASSEMBLED_LEN / MAX_FRAGMENT_CHUNK)`.
pub const MAX_FRAGMENT_COUNT: usize = MAX_REASSEMBLED_LEN.div_ceil(MAX_FRAGMENT_CHUNK);

/// Bytes of a fragment body before its chunk.
const FIXED_LEN: usize = 16 + 1 + 2 + 2 + 4;

/// Why data could not be split, or a fragment could not be decoded or accepted.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FragmentError {
    /// There is nothing to split.
    #[error("cannot fragment empty data")]
    Empty,
    /// The data is longer than [`MAX_REASSEMBLED_LEN`].
    #[error("data is {len} bytes, more than the limit of {max}")]
    TooLarge {
        /// The data's length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The fragment breaks a rule of the format on its own (index out of range, a chunk whose
    /// length does not follow from the fragment's position, ...).
    #[error("invalid fragment: {what}")]
    Invalid {
        /// The rule that was broken.
        what: &'static str,
    },
    /// The fragment disagrees with earlier fragments of its group; the group is kept as it was.
    #[error("fragment disagrees with its group: {what}")]
    Inconsistent {
        /// What differs.
        what: &'static str,
    },
    /// Accepting the fragment's new group would exceed [`MAX_GROUPS_IN_PROGRESS`] or
    /// [`MAX_BUFFERED_BYTES`]; nothing was evicted.
    #[error("reassembler full: {groups_in_progress} groups, {buffered_bytes} bytes reserved")]
    Busy {
        /// Groups in progress when the fragment was refused.
        groups_in_progress: usize,
        /// Bytes reserved when the fragment was refused.
        buffered_bytes: usize,
    },
    /// The fragment's bytes do not follow the layout.
    #[error("malformed fragment: {0}")]
    Malformed(#[from] DecodeError),
}

/// One piece of a fragmented message.
#[derive(Clone, PartialEq, Eq)]
pub struct Fragment {
    /// The random id shared by every fragment of the data.
    pub group: [u8; 16],
    /// What the data is ([`CONTENT_TEXT`]; other values are reserved and passed through).
    pub content: u8,
    /// Position of this fragment, below `count`.
    pub index: u16,
    /// Number of fragments in the group.
    pub count: u16,
    /// Length of the whole data.
    pub total_len: u32,
    /// This fragment's part of the data.
    pub chunk: Vec<u8>,
}

impl fmt::Debug for Fragment {
    // The chunk is message plaintext: show its length only, so logs never carry it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fragment")
            .field(
                "group",
                &format_args!("{:02x}{:02x}{:02x}..", self.group[0], self.group[1], self.group[2]),
            )
            .field("content", &self.content)
            .field("index", &self.index)
            .field("count", &self.count)
            .field("total_len", &self.total_len)
            .field("chunk_len", &self.chunk.len())
            .finish()
    }
}

impl Fragment {
    /// The length of [`Fragment::encode`]'s output.
    pub fn encoded_len(&self) -> usize {
        FIXED_LEN + self.chunk.len()
    }

    /// Appends the fragment's body encoding. Call [`Fragment::validate`] first for a fragment
    /// that was not made by [`split`].
    pub fn encode(&self, w: &mut Writer) {
        w.raw(&self.group)
            .u8(self.content)
            .u16(self.index)
            .u16(self.count)
            .u32(self.total_len)
            .raw(&self.chunk);
    }

    /// Reads a fragment body. The chunk is everything left in `r`, so `r` must span exactly the
    /// body; the chunk's length is checked before it is copied.
    pub fn decode(r: &mut Reader<'_>) -> Result<Self, FragmentError> {
        let group = r.array("fragment group")?;
        let content = r.u8("fragment content")?;
        let index = r.u16("fragment index")?;
        let count = r.u16("fragment count")?;
        let total_len = r.u32("fragment total length")?;
        let chunk = r.rest();
        if chunk.len() > MAX_FRAGMENT_CHUNK {
            return Err(DecodeError::TooLong {
                what: "fragment chunk",
                len: chunk.len(),
                max: MAX_FRAGMENT_CHUNK,
            }
            .into());
        }
        let fragment = Self { group, content, index, count, total_len, chunk: chunk.to_vec() };
        fragment.validate()?;
        Ok(fragment)
    }

    /// Checks the fragment's own rules: `1 <= total_len <= MAX_REASSEMBLED_LEN`,
    /// `count = ceil(total_len / MAX_FRAGMENT_CHUNK)`, `index < count`, and the chunk holds exactly
    /// the bytes of its position.
    pub fn validate(&self) -> Result<(), FragmentError> {
        let total = usize::try_from(self.total_len).unwrap_or(usize::MAX);
        if total == 0 {
            return Err(FragmentError::Invalid { what: "total length must not be zero" });
        }
        if total > MAX_REASSEMBLED_LEN {
            return Err(FragmentError::Invalid { what: "total length over the reassembly limit" });
        }
        if usize::from(self.count) != total.div_ceil(MAX_FRAGMENT_CHUNK) {
            return Err(FragmentError::Invalid { what: "count does not match the total length" });
        }
        if self.index >= self.count {
            return Err(FragmentError::Invalid { what: "index must be below count" });
        }
        if self.chunk.len() != chunk_len(total, self.index) {
            return Err(FragmentError::Invalid { what: "chunk length does not match its position" });
        }
        Ok(())
    }
}

/// The length of chunk `index` of `total` bytes cut into [`MAX_FRAGMENT_CHUNK`] pieces.
fn chunk_len(total: usize, index: u16) -> usize {
    let start = usize::from(index).saturating_mul(MAX_FRAGMENT_CHUNK);
    total.saturating_sub(start).min(MAX_FRAGMENT_CHUNK)
}

/// Cuts `data` into fragments of [`MAX_FRAGMENT_CHUNK`] bytes (the last one shorter), all carrying
/// `group` and `content`. Refuses empty data and data over [`MAX_REASSEMBLED_LEN`].
pub fn split(content: u8, data: &[u8], group: [u8; 16]) -> Result<Vec<Fragment>, FragmentError> {
    if data.is_empty() {
        return Err(FragmentError::Empty);
    }
    if data.len() > MAX_REASSEMBLED_LEN {
        return Err(FragmentError::TooLarge { len: data.len(), max: MAX_REASSEMBLED_LEN });
    }
    // Both fit: the length is at most 1 MiB and there are at most MAX_FRAGMENT_COUNT chunks.
    let total_len = u32::try_from(data.len())
        .map_err(|_| FragmentError::TooLarge { len: data.len(), max: MAX_REASSEMBLED_LEN })?;
    let count = u16::try_from(data.len().div_ceil(MAX_FRAGMENT_CHUNK))
        .map_err(|_| FragmentError::TooLarge { len: data.len(), max: MAX_REASSEMBLED_LEN })?;
    Ok(data
        .chunks(MAX_FRAGMENT_CHUNK)
        .zip(0u16..)
        .map(|(chunk, index)| Fragment { group, content, index, count, total_len, chunk: chunk.to_vec() })
        .collect())
}

/// A group of fragments in progress.
struct Group {
    content: u8,
    count: u16,
    total_len: u32,
    started: Timestamp,
    /// One slot per fragment; wiped on drop because the chunks are message plaintext.
    chunks: Vec<Option<Zeroizing<Vec<u8>>>>,
    missing: usize,
}

impl Group {
    fn reserved(&self) -> usize {
        usize::try_from(self.total_len).unwrap_or(usize::MAX)
    }
}

/// Puts fragments back together, within fixed caps.
///
/// Caps, so a peer cannot make it grow without bound:
/// * at most [`MAX_GROUPS_IN_PROGRESS`] incomplete groups;
/// * at most [`MAX_BUFFERED_BYTES`] reserved across them: a group reserves its whole declared
///   `total_len` when its first fragment arrives, so a group that was admitted can always finish;
/// * a group is dropped once it is older than [`GROUP_TTL`] (checked on every push, or by
///   [`Reassembler::expire`]);
/// * the ids of the last [`MAX_COMPLETED_REMEMBERED`] completed groups are kept for [`GROUP_TTL`]
///   so that late duplicates are ignored instead of starting a group that can never finish.
///
/// A message that fits in one fragment is returned at once and never buffered, so it gets through
/// even while the caps are reached.
///
/// When a new group does not fit, the fragment is refused with [`FragmentError::Busy`]; nothing in
/// progress is evicted, so an attacker cannot push out a legitimate message.
#[derive(Default)]
pub struct Reassembler {
    groups: BTreeMap<[u8; 16], Group>,
    reserved: usize,
    completed: VecDeque<([u8; 16], Timestamp)>,
}

impl fmt::Debug for Reassembler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reassembler")
            .field("groups_in_progress", &self.groups.len())
            .field("buffered_bytes", &self.reserved)
            .field("completed_remembered", &self.completed.len())
            .finish()
    }
}

impl Reassembler {
    /// An empty reassembler.
    pub fn new() -> Self {
        Self::default()
    }

    /// Incomplete groups held.
    pub fn groups_in_progress(&self) -> usize {
        self.groups.len()
    }

    /// Bytes reserved by the groups in progress (their declared total lengths).
    pub fn buffered_bytes(&self) -> usize {
        self.reserved
    }

    /// Drops groups, and remembered completions, older than [`GROUP_TTL`] at `now`. Returns how
    /// many incomplete groups were dropped.
    pub fn expire(&mut self, now: Timestamp) -> usize {
        let before = self.groups.len();
        let mut released = 0usize;
        self.groups.retain(|_, group| {
            let keep = now.since(group.started) <= GROUP_TTL;
            if !keep {
                released = released.saturating_add(group.reserved());
            }
            keep
        });
        self.reserved = self.reserved.saturating_sub(released);
        self.completed.retain(|(_, at)| now.since(*at) <= GROUP_TTL);
        before - self.groups.len()
    }

    /// Takes one fragment. Returns `(content, data)` when it completes its group, `None` while
    /// fragments are missing or when it is a duplicate (ignored, whether its group is in progress
    /// or recently completed).
    ///
    /// Groups past [`GROUP_TTL`] are expired first. Errors then leave every group as it was: an
    /// invalid fragment, one that disagrees with its group (content, count, total length, or
    /// different bytes at an index already held), or a new group that does not fit
    /// ([`FragmentError::Busy`]).
    pub fn push(
        &mut self,
        fragment: Fragment,
        now: Timestamp,
    ) -> Result<Option<(u8, Vec<u8>)>, FragmentError> {
        fragment.validate()?;
        self.expire(now);
        if self.completed.iter().any(|(group, _)| *group == fragment.group) {
            return Ok(None);
        }
        let slot = usize::from(fragment.index);
        match self.groups.get_mut(&fragment.group) {
            Some(group) => {
                if group.content != fragment.content {
                    return Err(FragmentError::Inconsistent { what: "content" });
                }
                if group.count != fragment.count || group.total_len != fragment.total_len {
                    return Err(FragmentError::Inconsistent { what: "count or total length" });
                }
                match group.chunks.get_mut(slot) {
                    Some(Some(held)) if **held == fragment.chunk => return Ok(None),
                    Some(Some(_)) => return Err(FragmentError::Inconsistent { what: "chunk bytes" }),
                    Some(entry) => {
                        *entry = Some(Zeroizing::new(fragment.chunk));
                        group.missing = group.missing.saturating_sub(1);
                    }
                    // validate() guarantees index < count = chunks.len().
                    None => return Err(FragmentError::Invalid { what: "index must be below count" }),
                }
            }
            // A whole message in one fragment needs no buffer, so it never counts against the caps.
            None if fragment.count == 1 => {
                self.remember(fragment.group, now);
                return Ok(Some((fragment.content, fragment.chunk)));
            }
            None => {
                let size = usize::try_from(fragment.total_len).unwrap_or(usize::MAX);
                let fits = self.groups.len() < MAX_GROUPS_IN_PROGRESS
                    && self.reserved.saturating_add(size) <= MAX_BUFFERED_BYTES;
                if !fits {
                    return Err(FragmentError::Busy {
                        groups_in_progress: self.groups.len(),
                        buffered_bytes: self.reserved,
                    });
                }
                let mut chunks: Vec<Option<Zeroizing<Vec<u8>>>> = (0..fragment.count).map(|_| None).collect();
                let missing = chunks.len().saturating_sub(1);
                if let Some(entry) = chunks.get_mut(slot) {
                    *entry = Some(Zeroizing::new(fragment.chunk));
                }
                self.reserved = self.reserved.saturating_add(size);
                self.groups.insert(
                    fragment.group,
                    Group {
                        content: fragment.content,
                        count: fragment.count,
                        total_len: fragment.total_len,
                        started: now,
                        chunks,
                        missing,
                    },
                );
            }
        }
        if self.groups.get(&fragment.group).is_some_and(|g| g.missing == 0) {
            return Ok(self.complete(fragment.group, now));
        }
        Ok(None)
    }

    fn remember(&mut self, id: [u8; 16], now: Timestamp) {
        if self.completed.len() >= MAX_COMPLETED_REMEMBERED {
            self.completed.pop_front();
        }
        self.completed.push_back((id, now));
    }

    fn complete(&mut self, id: [u8; 16], now: Timestamp) -> Option<(u8, Vec<u8>)> {
        let group = self.groups.remove(&id)?;
        self.reserved = self.reserved.saturating_sub(group.reserved());
        self.remember(id, now);
        let mut data = Vec::with_capacity(group.reserved());
        for chunk in group.chunks.iter().flatten() {
            data.extend_from_slice(chunk);
        }
        Some((group.content, data))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8).collect()
    }

    #[test]
    fn split_cuts_fixed_chunks() {
        assert_eq!(split(CONTENT_TEXT, &[], [0; 16]), Err(FragmentError::Empty));
        assert_eq!(
            split(CONTENT_TEXT, &data(MAX_REASSEMBLED_LEN + 1), [0; 16]),
            Err(FragmentError::TooLarge { len: MAX_REASSEMBLED_LEN + 1, max: MAX_REASSEMBLED_LEN })
        );
        let one = split(CONTENT_TEXT, &data(10), [1; 16]).expect("split");
        assert_eq!(one.len(), 1);
        assert_eq!((one[0].index, one[0].count, one[0].total_len), (0, 1, 10));
        let exact = split(CONTENT_TEXT, &data(2 * MAX_FRAGMENT_CHUNK), [1; 16]).expect("split");
        assert_eq!(exact.len(), 2);
        assert!(exact.iter().all(|f| f.chunk.len() == MAX_FRAGMENT_CHUNK));
        let full = split(CONTENT_TEXT, &data(MAX_REASSEMBLED_LEN), [1; 16]).expect("split");
        assert_eq!(full.len(), MAX_FRAGMENT_COUNT);
        assert_eq!(full.last().map(|f| f.chunk.len()), Some(MAX_REASSEMBLED_LEN % MAX_FRAGMENT_CHUNK));
        for f in &full {
            assert_eq!(f.validate(), Ok(()));
        }
    }

    #[test]
    fn validate_refuses_chunks_that_cannot_add_up() {
        let mut f = split(CONTENT_TEXT, &data(MAX_FRAGMENT_CHUNK + 5), [2; 16]).expect("split").remove(1);
        assert_eq!(f.validate(), Ok(()));
        f.chunk.push(0);
        assert!(matches!(f.validate(), Err(FragmentError::Invalid { .. })));
        f.chunk.truncate(4);
        assert!(matches!(f.validate(), Err(FragmentError::Invalid { .. })));
        let good = split(CONTENT_TEXT, &data(5), [2; 16]).expect("split").remove(0);
        let bad = [
            Fragment { count: 2, ..good.clone() },
            Fragment { index: 1, ..good.clone() },
            Fragment { count: 0, ..good.clone() },
            Fragment { total_len: 0, chunk: Vec::new(), ..good.clone() },
            Fragment { total_len: MAX_REASSEMBLED_LEN as u32 + 1, ..good.clone() },
        ];
        for f in bad {
            assert!(matches!(f.validate(), Err(FragmentError::Invalid { .. })), "{f:?}");
        }
    }

    #[test]
    fn body_codec_round_trips_and_checks_before_copying() {
        let f = split(7, &data(MAX_FRAGMENT_CHUNK + 1), [3; 16]).expect("split").remove(0);
        let mut w = Writer::new();
        f.encode(&mut w);
        let bytes = w.into_bytes();
        assert_eq!(bytes.len(), f.encoded_len());
        assert_eq!(Fragment::decode(&mut Reader::new(&bytes)), Ok(f));
        let mut long = bytes.clone();
        long.push(0);
        assert!(matches!(
            Fragment::decode(&mut Reader::new(&long)),
            Err(FragmentError::Malformed(DecodeError::TooLong { .. }))
        ));
        assert!(matches!(Fragment::decode(&mut Reader::new(&bytes[..20])), Err(FragmentError::Malformed(_))));
    }

    #[test]
    fn debug_hides_the_chunk() {
        let f = split(CONTENT_TEXT, b"secret words", [4; 16]).expect("split").remove(0);
        let shown = format!("{f:?}");
        assert!(shown.contains("chunk_len: 12"), "{shown}");
        assert!(!shown.contains("115, 101"), "{shown}");
    }

    #[test]
    fn inconsistent_fragment_changes_nothing() {
        let mut r = Reassembler::new();
        let frags = split(CONTENT_TEXT, &data(3 * MAX_FRAGMENT_CHUNK), [5; 16]).expect("split");
        assert_eq!(r.push(frags[0].clone(), Timestamp(0)), Ok(None));
        let other_content = Fragment { content: 2, ..frags[1].clone() };
        assert_eq!(r.push(other_content, Timestamp(0)), Err(FragmentError::Inconsistent { what: "content" }));
        let mut other_bytes = frags[0].clone();
        other_bytes.chunk[0] ^= 1;
        assert_eq!(
            r.push(other_bytes, Timestamp(0)),
            Err(FragmentError::Inconsistent { what: "chunk bytes" })
        );
        let shorter = split(CONTENT_TEXT, &data(2 * MAX_FRAGMENT_CHUNK), [5; 16]).expect("split");
        assert!(matches!(r.push(shorter[1].clone(), Timestamp(0)), Err(FragmentError::Inconsistent { .. })));
        assert_eq!(r.groups_in_progress(), 1);
        assert_eq!(r.buffered_bytes(), 3 * MAX_FRAGMENT_CHUNK);
        assert_eq!(r.push(frags[1].clone(), Timestamp(0)), Ok(None));
        assert_eq!(
            r.push(frags[2].clone(), Timestamp(0)),
            Ok(Some((CONTENT_TEXT, data(3 * MAX_FRAGMENT_CHUNK))))
        );
        assert_eq!(r.groups_in_progress(), 0);
        assert_eq!(r.buffered_bytes(), 0);
    }

    #[test]
    fn late_duplicate_of_a_completed_group_is_ignored() {
        let mut r = Reassembler::new();
        let frags = split(CONTENT_TEXT, &data(MAX_FRAGMENT_CHUNK + 1), [6; 16]).expect("split");
        assert_eq!(r.push(frags[0].clone(), Timestamp(0)), Ok(None));
        assert!(r.push(frags[1].clone(), Timestamp(0)).expect("push").is_some());
        assert_eq!(r.push(frags[0].clone(), Timestamp(10)), Ok(None));
        assert_eq!(r.groups_in_progress(), 0);
        // Single-fragment groups too.
        let single = split(CONTENT_TEXT, b"hi", [7; 16]).expect("split").remove(0);
        assert_eq!(r.push(single.clone(), Timestamp(0)), Ok(Some((CONTENT_TEXT, b"hi".to_vec()))));
        assert_eq!(r.push(single, Timestamp(0)), Ok(None));
    }

    #[test]
    fn expiry_uses_the_ttl_from_the_first_fragment() {
        let mut r = Reassembler::new();
        let frags = split(CONTENT_TEXT, &data(MAX_FRAGMENT_CHUNK + 1), [8; 16]).expect("split");
        let start = Timestamp(1_000_000);
        assert_eq!(r.push(frags[0].clone(), start), Ok(None));
        assert_eq!(r.expire(start.plus(GROUP_TTL)), 0);
        assert_eq!(r.groups_in_progress(), 1);
        assert_eq!(r.expire(start.plus(GROUP_TTL + 1)), 1);
        assert_eq!(r.groups_in_progress(), 0);
        assert_eq!(r.buffered_bytes(), 0);
    }
}
