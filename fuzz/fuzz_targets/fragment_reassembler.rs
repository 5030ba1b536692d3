//! Fuzzes `fragment::Reassembler` against a model of its documented behaviour.
//!
//! The input first describes up to 20 pieces of data (group id, content byte, length, fill), each
//! cut with `fragment::split` when first used, then a program of up to 256 operations: push a
//! fragment as it was split, push one with a field changed, push a fragment decoded from raw
//! bytes, move the clock forward or back, or call `expire`. Group ids may collide on purpose, so
//! groups interleave, disagree and complete with duplicates in between.
//!
//! After every operation the result must equal the model's (the same completed data, or the same
//! kind of refusal), the reassembler must hold exactly the model's groups and reserved bytes, and
//! neither may exceed `MAX_GROUPS_IN_PROGRESS` or `MAX_BUFFERED_BYTES`. `Fragment::validate` is
//! checked against the layout rules, and data completed from fragments that all came unchanged
//! from one split must be exactly the data that was split.
#![no_main]

use std::collections::{BTreeMap, VecDeque};

use libfuzzer_sys::fuzz_target;
use merpati_fuzz::{Input, T0};
use merpati_proto::Timestamp;
use merpati_proto::codec::{Reader, Writer};
use merpati_proto::fragment::{
    self, Fragment, FragmentError, GROUP_TTL, MAX_BUFFERED_BYTES, MAX_COMPLETED_REMEMBERED,
    MAX_FRAGMENT_CHUNK, MAX_GROUPS_IN_PROGRESS, MAX_REASSEMBLED_LEN, Reassembler,
};

/// The most pieces of data one input describes.
const MAX_ITEMS: usize = 20;
/// The most operations one input runs.
const MAX_OPS: usize = 256;
/// Clock steps an operation may take, in milliseconds: around the group TTL, and arbitrary ones.
const STEPS: [u64; 8] =
    [1, Timestamp::SECOND, 60 * Timestamp::SECOND, GROUP_TTL / 2, GROUP_TTL - 1, GROUP_TTL, GROUP_TTL + 1, 0];

/// One piece of data and its fragments, cut on first use.
struct Item {
    group: [u8; 16],
    content: u8,
    len: usize,
    fill: u8,
    split: Option<(Vec<u8>, Vec<Fragment>)>,
}

impl Item {
    /// The data and its fragments, or `None` for a length `split` refuses.
    fn split(&mut self) -> Option<&(Vec<u8>, Vec<Fragment>)> {
        if self.split.is_none() {
            // Bytes that differ from chunk to chunk, so a misplaced chunk shows.
            let data: Vec<u8> = (0..self.len)
                .map(|i| ((i as u32).wrapping_mul(0x9e37_79b1) >> 24) as u8 ^ self.fill)
                .collect();
            match fragment::split(self.content, &data, self.group) {
                Ok(fragments) => {
                    assert_eq!(fragments.len(), self.len.div_ceil(MAX_FRAGMENT_CHUNK));
                    self.split = Some((data, fragments));
                }
                Err(FragmentError::Empty) => assert_eq!(self.len, 0),
                Err(FragmentError::TooLarge { len, max }) => {
                    assert_eq!((len, max), (self.len, MAX_REASSEMBLED_LEN));
                }
                Err(e) => panic!("unexpected split error {e:?}"),
            }
        }
        self.split.as_ref()
    }
}

/// The layout rules of a fragment, restated from the module documentation.
fn follows_the_rules(f: &Fragment) -> bool {
    let total = f.total_len as usize;
    let expected_chunk =
        total.saturating_sub(usize::from(f.index) * MAX_FRAGMENT_CHUNK).min(MAX_FRAGMENT_CHUNK);
    (1..=MAX_REASSEMBLED_LEN).contains(&total)
        && usize::from(f.count) == total.div_ceil(MAX_FRAGMENT_CHUNK)
        && f.index < f.count
        && f.chunk.len() == expected_chunk
}

/// What a push is expected to give.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Done(Option<(u8, Vec<u8>)>),
    Invalid,
    Inconsistent,
    Busy { groups_in_progress: usize, buffered_bytes: usize },
}

impl From<Result<Option<(u8, Vec<u8>)>, FragmentError>> for Outcome {
    fn from(result: Result<Option<(u8, Vec<u8>)>, FragmentError>) -> Self {
        match result {
            Ok(done) => Outcome::Done(done),
            Err(FragmentError::Invalid { .. }) => Outcome::Invalid,
            Err(FragmentError::Inconsistent { .. }) => Outcome::Inconsistent,
            Err(FragmentError::Busy { groups_in_progress, buffered_bytes }) => {
                Outcome::Busy { groups_in_progress, buffered_bytes }
            }
            Err(e) => panic!("push returned {e:?}"),
        }
    }
}

struct ModelGroup {
    content: u8,
    count: u16,
    total_len: u32,
    started: Timestamp,
    chunks: Vec<Option<Vec<u8>>>,
    /// Items (bit `i`) whose split fragments every stored fragment equals.
    genuine_of: u32,
}

/// The reassembler as its documentation describes it.
#[derive(Default)]
struct Model {
    groups: BTreeMap<[u8; 16], ModelGroup>,
    completed: VecDeque<([u8; 16], Timestamp)>,
}

impl Model {
    fn reserved(&self) -> usize {
        self.groups.values().map(|g| g.total_len as usize).sum()
    }

    fn expire(&mut self, now: Timestamp) -> usize {
        let before = self.groups.len();
        self.groups.retain(|_, g| now.since(g.started) <= GROUP_TTL);
        self.completed.retain(|(_, at)| now.since(*at) <= GROUP_TTL);
        before - self.groups.len()
    }

    fn remember(&mut self, group: [u8; 16], now: Timestamp) {
        if self.completed.len() == MAX_COMPLETED_REMEMBERED {
            self.completed.pop_front();
        }
        self.completed.push_back((group, now));
    }

    /// The expected outcome, and the items the completed data must equal.
    fn push(&mut self, f: &Fragment, genuine_of: u32, now: Timestamp) -> (Outcome, u32) {
        if !follows_the_rules(f) {
            return (Outcome::Invalid, 0);
        }
        self.expire(now);
        if self.completed.iter().any(|(group, _)| *group == f.group) {
            return (Outcome::Done(None), 0);
        }
        let slot = usize::from(f.index);
        let Some(group) = self.groups.get_mut(&f.group) else {
            if f.count == 1 {
                self.remember(f.group, now);
                return (Outcome::Done(Some((f.content, f.chunk.clone()))), genuine_of);
            }
            let (groups_in_progress, buffered_bytes) = (self.groups.len(), self.reserved());
            if groups_in_progress >= MAX_GROUPS_IN_PROGRESS
                || buffered_bytes + f.total_len as usize > MAX_BUFFERED_BYTES
            {
                return (Outcome::Busy { groups_in_progress, buffered_bytes }, 0);
            }
            let mut chunks = vec![None; usize::from(f.count)];
            chunks[slot] = Some(f.chunk.clone());
            let group = ModelGroup {
                content: f.content,
                count: f.count,
                total_len: f.total_len,
                started: now,
                chunks,
                genuine_of,
            };
            self.groups.insert(f.group, group);
            return (Outcome::Done(None), 0);
        };
        if group.content != f.content || group.count != f.count || group.total_len != f.total_len {
            return (Outcome::Inconsistent, 0);
        }
        match &group.chunks[slot] {
            Some(held) if *held == f.chunk => return (Outcome::Done(None), 0),
            Some(_) => return (Outcome::Inconsistent, 0),
            None => {
                group.chunks[slot] = Some(f.chunk.clone());
                group.genuine_of &= genuine_of;
            }
        }
        if group.chunks.iter().any(Option::is_none) {
            return (Outcome::Done(None), 0);
        }
        let group = self.groups.remove(&f.group).expect("the group is held");
        self.remember(f.group, now);
        let data = group.chunks.into_iter().flatten().flatten().collect();
        (Outcome::Done(Some((group.content, data))), group.genuine_of)
    }
}

/// Changes one field of `f` as directed by `kind` and `value`.
fn mutate(f: &mut Fragment, kind: u8, value: u16) {
    let [hi, lo] = value.to_be_bytes();
    match kind % 8 {
        0 => f.content ^= lo,
        1 => f.index = f.index.wrapping_add(value),
        2 => f.count = f.count.wrapping_add(value),
        3 => f.total_len ^= u32::from(value) << (hi % 17),
        4 if !f.chunk.is_empty() => {
            let at = usize::from(value) % f.chunk.len();
            f.chunk[at] ^= lo | 1;
        }
        5 => f.chunk.truncate(f.chunk.len().saturating_sub(usize::from(lo))),
        6 => f.chunk.extend(std::iter::repeat_n(hi, usize::from(lo))),
        _ => f.group[usize::from(hi) % 16] ^= lo,
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let count = 1 + usize::from(input.u8()) % MAX_ITEMS;
    let mut items: Vec<Item> = (0..count)
        .map(|_| {
            let tag = input.u8() % 24;
            let content = input.u8();
            let size = input.u8();
            // Mostly a few chunks; a set high bit allows the full range, past the limit by a bit.
            let chunks = usize::from(size & 0x7f) % if size & 0x80 == 0 { 4 } else { 23 };
            let len = chunks * MAX_FRAGMENT_CHUNK + usize::from(input.u16()) % (MAX_FRAGMENT_CHUNK + 1);
            Item { group: [tag; 16], content, len, fill: input.u8(), split: None }
        })
        .collect();

    let mut reassembler = Reassembler::new();
    let mut model = Model::default();
    let mut now = T0;
    for _ in 0..MAX_OPS {
        if input.is_empty() {
            break;
        }
        let op = input.u8();
        let fragment = match op % 8 {
            0..=4 => {
                let which = usize::from(input.u8()) % items.len();
                let index = usize::from(input.u8());
                let Some((_, fragments)) = items[which].split() else { continue };
                let mut fragment = fragments[index % fragments.len()].clone();
                if op % 8 == 4 {
                    let kind = input.u8();
                    mutate(&mut fragment, kind, input.u16());
                }
                fragment
            }
            5 => {
                let len = usize::from(input.u8());
                let bytes = input.bytes(len);
                let mut reader = Reader::new(bytes);
                match Fragment::decode(&mut reader) {
                    Ok(fragment) => {
                        assert_eq!(reader.remaining(), 0, "a fragment body spans the rest of its frame");
                        let mut w = Writer::new();
                        fragment.encode(&mut w);
                        assert_eq!(w.into_bytes(), bytes);
                        assert_eq!(fragment.encoded_len(), bytes.len());
                        fragment
                    }
                    Err(_) => continue,
                }
            }
            6 => {
                let step = STEPS[usize::from(input.u8() % 8)];
                let step = if step == 0 { u64::from(input.u32()) } else { step };
                now = if op & 0x80 == 0 { now.plus(step) } else { Timestamp(now.0.saturating_sub(step)) };
                continue;
            }
            _ => {
                assert_eq!(reassembler.expire(now), model.expire(now), "expire dropped a different count");
                assert_eq!(reassembler.groups_in_progress(), model.groups.len());
                assert_eq!(reassembler.buffered_bytes(), model.reserved());
                continue;
            }
        };
        assert_eq!(
            fragment.validate().is_ok(),
            follows_the_rules(&fragment),
            "validate disagrees: {fragment:?}"
        );
        // Items whose own split holds exactly this fragment.
        let genuine_of = items
            .iter()
            .enumerate()
            .filter(|(_, item)| {
                item.split.as_ref().is_some_and(|(_, fragments)| {
                    fragments.get(usize::from(fragment.index)).is_some_and(|f| *f == fragment)
                })
            })
            .fold(0u32, |bits, (i, _)| bits | 1 << i);
        let (expected, complete_of) = model.push(&fragment, genuine_of, now);
        let got = Outcome::from(reassembler.push(fragment, now));
        assert_eq!(got, expected);
        if let Outcome::Done(Some((content, done))) = &got {
            for (i, item) in items.iter().enumerate().filter(|(i, _)| complete_of & 1 << i != 0) {
                let (data, _) = item.split.as_ref().expect("a genuine item was split");
                assert_eq!((*content, done), (item.content, data), "item {i} reassembled wrong");
            }
        }
        assert_eq!(reassembler.groups_in_progress(), model.groups.len());
        assert_eq!(reassembler.buffered_bytes(), model.reserved());
        assert!(reassembler.groups_in_progress() <= MAX_GROUPS_IN_PROGRESS);
        assert!(reassembler.buffered_bytes() <= MAX_BUFFERED_BYTES);
    }
});
