//! Property, golden and cap tests for the envelope, frame, fragment and wire codecs, through the
//! public API only.

use merpati_proto::Timestamp;
use merpati_proto::envelope::{
    self, BUCKETS, Envelope, EnvelopeError, HEADER_LEN, Header, Kind, MAX_ENVELOPE_LEN, MAX_OPEN_LEN,
};
use merpati_proto::fragment::{
    self, CONTENT_TEXT, Fragment, FragmentError, GROUP_TTL, MAX_BUFFERED_BYTES, MAX_FRAGMENT_CHUNK,
    MAX_GROUPS_IN_PROGRESS, MAX_REASSEMBLED_LEN, Reassembler,
};
use merpati_proto::frame::{
    self, Body, Control, Frame, FrameError, MAX_ADDR_LEN, MAX_HINTS, MAX_PEER_ID_LEN, MAX_RECEIPT_IDS,
    MessageId, ReceiptKind,
};
use merpati_proto::mailbox::{Announcement, FetchToken, MAX_ANNOUNCED_IDS, MailboxId};
use merpati_proto::noise::{MAX_TRANSPORT_PLAINTEXT, TAG_LEN};
use merpati_proto::rand_core::{Rng, SeedableRng};
use merpati_proto::wire::{self, Refusal, deliver, mailbox};
use proptest::collection::vec;
use proptest::prelude::*;
use rand_chacha::ChaCha20Rng;

// ---------------------------------------------------------------------------------------------
// Strategies

fn arb_mailbox() -> impl Strategy<Value = MailboxId> {
    any::<[u8; 16]>().prop_map(MailboxId)
}

fn arb_kind() -> impl Strategy<Value = Kind> {
    prop_oneof![Just(Kind::FirstContact), Just(Kind::Session)]
}

fn arb_header() -> impl Strategy<Value = Header> {
    (arb_kind(), arb_mailbox(), any::<u32>(), any::<u32>(), 0u8..64).prop_map(
        |(kind, mailbox, epoch, sub_epoch, index)| {
            let epoch = if kind == Kind::FirstContact { 0 } else { epoch };
            Header { version: envelope::VERSION, kind, mailbox, epoch, sub_epoch, index }
        },
    )
}

fn arb_len(small: usize, large: usize) -> impl Strategy<Value = usize> {
    prop_oneof![4 => 0..=small, 1 => Just(large), 1 => 0..=large]
}

fn arb_envelope() -> impl Strategy<Value = Envelope> {
    (arb_header(), arb_len(300, MAX_OPEN_LEN), arb_len(600, 60_000), any::<u8>()).prop_map(
        |(header, open_len, ct_len, fill)| {
            let open_len = if header.kind == Kind::FirstContact { open_len.max(1) } else { open_len };
            let ct_len = (ct_len + TAG_LEN).min(MAX_ENVELOPE_LEN - HEADER_LEN - 2 - open_len);
            Envelope {
                header,
                open: (open_len > 0).then(|| vec![fill; open_len]),
                ciphertext: (0..ct_len).map(|i| fill.wrapping_add(i as u8)).collect(),
            }
        },
    )
}

/// Envelopes that may break the rules, to compare `validate` with the decoder.
fn arb_loose_envelope() -> impl Strategy<Value = Envelope> {
    let header = (
        prop_oneof![4 => Just(1u8), 1 => any::<u8>()],
        arb_kind(),
        arb_mailbox(),
        prop_oneof![Just(0u32), any::<u32>()],
        prop_oneof![Just(0u32), any::<u32>()],
        prop_oneof![0u8..64, any::<u8>()],
    )
        .prop_map(|(version, kind, mailbox, epoch, sub_epoch, index)| Header {
            version,
            kind,
            mailbox,
            epoch,
            sub_epoch,
            index,
        });
    let open = prop_oneof![
        Just(None),
        (1usize..=40).prop_map(|n| Some(vec![7; n])),
        Just(Some(vec![7; MAX_OPEN_LEN])),
        Just(Some(vec![7; MAX_OPEN_LEN + 1])),
    ];
    let ct = prop_oneof![0usize..=40, Just(MAX_ENVELOPE_LEN - HEADER_LEN - 2), Just(MAX_ENVELOPE_LEN)];
    (header, open, ct).prop_map(|(header, open, ct)| Envelope { header, open, ciphertext: vec![3; ct] })
}

fn arb_message_id() -> impl Strategy<Value = MessageId> {
    any::<[u8; 16]>().prop_map(MessageId)
}

fn arb_addrs() -> impl Strategy<Value = Vec<Vec<u8>>> {
    vec(vec(any::<u8>(), 1..=MAX_ADDR_LEN), 0..=MAX_HINTS)
}

fn expected_chunk_len(total: usize, index: usize) -> usize {
    total.saturating_sub(index * MAX_FRAGMENT_CHUNK).min(MAX_FRAGMENT_CHUNK)
}

fn arb_fragment() -> impl Strategy<Value = Fragment> {
    (
        any::<[u8; 16]>(),
        any::<u8>(),
        arb_len(3 * MAX_FRAGMENT_CHUNK, MAX_REASSEMBLED_LEN),
        any::<u16>(),
        any::<u8>(),
    )
        .prop_map(|(group, content, total, pick, fill)| {
            let total = total.max(1);
            let count = total.div_ceil(MAX_FRAGMENT_CHUNK);
            let index = usize::from(pick) % count;
            Fragment {
                group,
                content,
                index: index as u16,
                count: count as u16,
                total_len: total as u32,
                chunk: vec![fill; expected_chunk_len(total, index)],
            }
        })
}

fn arb_body() -> impl Strategy<Value = Body> {
    prop_oneof![
        "\\PC{0,300}".prop_map(Body::Text),
        (1usize..=frame::MAX_TEXT_LEN / 4).prop_map(|n| Body::Text("\u{1F54A}".repeat(n))),
        (
            prop_oneof![Just(ReceiptKind::Delivered), Just(ReceiptKind::Read)],
            vec(arb_message_id(), 1..=MAX_RECEIPT_IDS)
        )
            .prop_map(|(kind, ids)| Body::Receipt { kind, ids }),
        (any::<u64>(), vec(arb_mailbox(), 1..=MAX_ANNOUNCED_IDS)).prop_map(|(first_day, ids)| Body::Control(
            Control::MailboxRotation(Announcement { first_day, ids })
        )),
        arb_addrs().prop_map(|hints| Body::Control(Control::RelayHints(hints))),
        (vec(any::<u8>(), 1..=MAX_PEER_ID_LEN), arb_addrs())
            .prop_map(|(peer_id, addrs)| Body::Control(Control::NodeInfo { peer_id, addrs })),
        arb_fragment().prop_map(Body::Fragment),
    ]
}

fn arb_frame() -> impl Strategy<Value = Frame> {
    (
        any::<[u8; HEADER_LEN]>(),
        arb_message_id(),
        any::<u64>(),
        any::<u64>(),
        prop_oneof![Just(None), (0..u32::MAX).prop_map(Some)],
        arb_body(),
    )
        .prop_map(|(header_echo, message_id, seq, sent_at, ack_epoch, body)| Frame {
            header_echo,
            message_id,
            seq,
            sent_at: Timestamp(sent_at),
            ack_epoch,
            body,
        })
}

/// Where and how to damage an encoding.
#[derive(Debug, Clone)]
enum Mutation {
    Flip { at: prop::sample::Index, mask: u8 },
    Set { at: prop::sample::Index, value: u8 },
    Truncate { at: prop::sample::Index },
    Append { bytes: Vec<u8> },
}

fn arb_mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<prop::sample::Index>(), 1u8..).prop_map(|(at, mask)| Mutation::Flip { at, mask }),
        (any::<prop::sample::Index>(), any::<u8>()).prop_map(|(at, value)| Mutation::Set { at, value }),
        any::<prop::sample::Index>().prop_map(|at| Mutation::Truncate { at }),
        vec(any::<u8>(), 1..8).prop_map(|bytes| Mutation::Append { bytes }),
    ]
}

fn mutate(bytes: &mut Vec<u8>, mutations: &[Mutation]) {
    for m in mutations {
        if bytes.is_empty() {
            return;
        }
        match m {
            Mutation::Flip { at, mask } => {
                let i = at.index(bytes.len());
                bytes[i] ^= mask;
            }
            Mutation::Set { at, value } => {
                let i = at.index(bytes.len());
                bytes[i] = *value;
            }
            Mutation::Truncate { at } => bytes.truncate(at.index(bytes.len())),
            Mutation::Append { bytes: extra } => bytes.extend_from_slice(extra),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Envelope properties

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn envelope_round_trips(env in arb_envelope()) {
        prop_assert_eq!(env.validate(), Ok(()));
        let bytes = env.encode();
        prop_assert_eq!(bytes.len(), env.encoded_len());
        prop_assert_eq!(&bytes[..HEADER_LEN], &env.header.encode()[..]);
        prop_assert_eq!(Header::decode(&bytes[..HEADER_LEN]), Ok(env.header));
        prop_assert_eq!(Envelope::decode(&bytes), Ok(env));
    }

    #[test]
    fn envelope_validate_agrees_with_decode(env in arb_loose_envelope()) {
        let decoded = Envelope::decode(&env.encode());
        match env.validate() {
            Ok(()) => prop_assert_eq!(decoded, Ok(env)),
            // `Some(empty)` encodes as "no open", which the decoder cannot tell apart.
            Err(_) if env.open.as_ref().is_some_and(Vec::is_empty) => {}
            Err(e) => prop_assert_eq!(decoded, Err(e)),
        }
    }

    #[test]
    fn envelope_decoding_damaged_bytes_never_panics(
        env in arb_envelope(),
        mutations in vec(arb_mutation(), 1..4),
    ) {
        let mut bytes = env.encode();
        mutate(&mut bytes, &mutations);
        // Whatever decodes has exactly one encoding: the input.
        if let Ok(decoded) = Envelope::decode(&bytes) {
            prop_assert_eq!(decoded.encode(), bytes);
            prop_assert_eq!(decoded.validate(), Ok(()));
        }
    }

    #[test]
    fn envelope_decoding_random_bytes_never_panics(
        version in prop_oneof![Just(1u8), any::<u8>()],
        kind in 0u8..4,
        rest in vec(any::<u8>(), 0..700),
    ) {
        let mut bytes = vec![version, kind];
        bytes.extend(rest);
        let _ = Header::decode(&bytes);
        if let Ok(decoded) = Envelope::decode(&bytes) {
            prop_assert_eq!(decoded.encode(), bytes);
        }
    }

    #[test]
    fn padding_lands_on_a_bucket(open_len in arb_len(300, MAX_OPEN_LEN), unpadded in arb_len(2000, 70_000)) {
        match envelope::padded_plaintext_len(open_len, unpadded) {
            Some(plaintext) => {
                prop_assert!(plaintext >= unpadded);
                prop_assert!(plaintext <= MAX_TRANSPORT_PLAINTEXT);
                let total = HEADER_LEN + 2 + open_len + plaintext + TAG_LEN;
                prop_assert!(BUCKETS.contains(&total));
                prop_assert_eq!(envelope::bucket_for(HEADER_LEN + 2 + open_len + unpadded + TAG_LEN), Some(total));
            }
            None => prop_assert!(HEADER_LEN + 2 + open_len + unpadded + TAG_LEN > MAX_ENVELOPE_LEN),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Frame properties

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn frame_round_trips(f in arb_frame(), extra in arb_len(300, 70_000)) {
        prop_assert_eq!(f.validate(), Ok(()));
        let unpadded = f.encode_padded(f.unpadded_len()).expect("fits its own length");
        prop_assert_eq!(unpadded.len(), f.unpadded_len());
        prop_assert_eq!(Frame::decode(&unpadded), Ok(f.clone()));
        let target = f.unpadded_len() + extra;
        match f.encode_padded(target) {
            Ok(padded) => {
                prop_assert_eq!(padded.len(), target);
                prop_assert_eq!(&padded[..f.unpadded_len()], &unpadded[..]);
                prop_assert!(padded[f.unpadded_len()..].iter().all(|&b| b == 0));
                prop_assert_eq!(Frame::decode(&padded), Ok(f));
            }
            Err(e) => {
                prop_assert!(target > MAX_TRANSPORT_PLAINTEXT);
                prop_assert_eq!(e, FrameError::TooLarge { len: target, max: MAX_TRANSPORT_PLAINTEXT });
            }
        }
    }

    #[test]
    fn frame_decoding_damaged_bytes_never_panics(
        f in arb_frame(),
        padding in 0usize..64,
        mutations in vec(arb_mutation(), 1..4),
    ) {
        let mut bytes = f.encode_padded(f.unpadded_len() + padding).expect("encode").to_vec();
        mutate(&mut bytes, &mutations);
        // Whatever decodes has exactly one encoding at that length: the input.
        if let Ok(decoded) = Frame::decode(&bytes) {
            prop_assert_eq!(&decoded.encode_padded(bytes.len()).expect("re-encode")[..], &bytes[..]);
        }
    }

    #[test]
    fn frame_decoding_random_bytes_never_panics(
        fixed in vec(any::<u8>(), frame::FIXED_LEN - 5..=frame::FIXED_LEN - 5),
        body_type in 0u8..7,
        body in vec(any::<u8>(), 0..400),
        declared in prop_oneof![Just(None), any::<u32>().prop_map(Some)],
        padding in vec(prop_oneof![5 => Just(0u8), 1 => any::<u8>()], 0..40),
    ) {
        let mut bytes = fixed;
        bytes.push(body_type);
        bytes.extend(declared.unwrap_or(body.len() as u32).to_be_bytes());
        bytes.extend(&body);
        bytes.extend(&padding);
        if let Ok(decoded) = Frame::decode(&bytes) {
            prop_assert_eq!(&decoded.encode_padded(bytes.len()).expect("re-encode")[..], &bytes[..]);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Fragment properties

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn fragment_body_round_trips(f in arb_fragment()) {
        prop_assert_eq!(f.validate(), Ok(()));
        let body = Body::Fragment(f.clone());
        let frame = Frame {
            header_echo: [0; HEADER_LEN],
            message_id: MessageId([0; 16]),
            seq: 0,
            sent_at: Timestamp(0),
            ack_epoch: None,
            body,
        };
        prop_assert_eq!(frame.unpadded_len(), frame::FIXED_LEN + f.encoded_len());
        let bytes = frame.encode_padded(frame.unpadded_len()).expect("encode");
        prop_assert_eq!(Frame::decode(&bytes), Ok(frame));
    }

    #[test]
    fn split_then_reassemble_in_any_order_with_duplicates(
        len in prop_oneof![1usize..=200, (MAX_FRAGMENT_CHUNK - 2)..=(MAX_FRAGMENT_CHUNK + 2), 1usize..=5 * MAX_FRAGMENT_CHUNK],
        content in any::<u8>(),
        group in any::<[u8; 16]>(),
        dups in vec(any::<prop::sample::Index>(), 0..8),
        seed in any::<u64>(),
    ) {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let data: Vec<u8> = (0..len).map(|_| rng.next_u32() as u8).collect();
        let fragments = fragment::split(content, &data, group).expect("split");
        prop_assert_eq!(fragments.len(), len.div_ceil(MAX_FRAGMENT_CHUNK));
        let mut order: Vec<usize> = (0..fragments.len()).collect();
        order.extend(dups.iter().map(|d| d.index(fragments.len())));
        shuffle(&mut order, &mut rng);

        let mut r = Reassembler::new();
        let mut seen = std::collections::BTreeSet::new();
        let mut delivered = 0;
        for (step, &i) in order.iter().enumerate() {
            let fresh = seen.insert(i);
            let out = r.push(fragments[i].clone(), Timestamp(step as u64)).expect("push");
            if fresh && seen.len() == fragments.len() {
                prop_assert_eq!(out, Some((content, data.clone())));
                delivered += 1;
            } else {
                prop_assert_eq!(out, None);
            }
            prop_assert!(r.buffered_bytes() <= MAX_BUFFERED_BYTES);
        }
        prop_assert_eq!(delivered, 1);
        prop_assert_eq!(r.groups_in_progress(), 0);
        prop_assert_eq!(r.buffered_bytes(), 0);
    }
}

fn shuffle(items: &mut [usize], rng: &mut ChaCha20Rng) {
    for i in (1..items.len()).rev() {
        let j = (rng.next_u64() % (i as u64 + 1)) as usize;
        items.swap(i, j);
    }
}

// ---------------------------------------------------------------------------------------------
// Explicit envelope and frame cases

fn session_envelope() -> Envelope {
    Envelope {
        header: Header {
            version: 1,
            kind: Kind::Session,
            mailbox: MailboxId([0xA5; 16]),
            epoch: 7,
            sub_epoch: 2,
            index: 63,
        },
        open: Some(vec![0xE0, 0xE1, 0xE2]),
        ciphertext: (0u8..16).collect(),
    }
}

#[test]
fn envelope_golden_bytes() {
    let expected = concat!(
        "01",
        "02",
        "a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5",
        "00000007",
        "00000002",
        "3f",
        "0003",
        "e0e1e2",
        "000102030405060708090a0b0c0d0e0f",
    );
    let env = session_envelope();
    assert_eq!(hex::encode(env.encode()), expected);
    assert_eq!(Envelope::decode(&hex::decode(expected).expect("hex")), Ok(env));
}

#[test]
fn envelope_version_2_is_unsupported() {
    let mut bytes = session_envelope().encode();
    bytes[0] = 2;
    assert_eq!(Envelope::decode(&bytes), Err(EnvelopeError::UnsupportedVersion { found: 2 }));
    assert_eq!(Header::decode(&bytes[..HEADER_LEN]), Err(EnvelopeError::UnsupportedVersion { found: 2 }));
}

#[test]
fn envelope_index_64_is_refused() {
    let mut bytes = session_envelope().encode();
    bytes[26] = 64;
    assert!(matches!(Envelope::decode(&bytes), Err(EnvelopeError::Invalid { .. })));
}

#[test]
fn first_contact_needs_epoch_zero_and_an_open() {
    let good = Envelope {
        header: Header { kind: Kind::FirstContact, epoch: 0, sub_epoch: 0, ..session_envelope().header },
        ..session_envelope()
    };
    assert_eq!(Envelope::decode(&good.encode()), Ok(good.clone()));
    let mut epoch_1 = good.encode();
    epoch_1[21] = 1;
    assert!(matches!(Envelope::decode(&epoch_1), Err(EnvelopeError::Invalid { .. })));
    let no_open = Envelope { open: None, ..good };
    assert!(matches!(Envelope::decode(&no_open.encode()), Err(EnvelopeError::Invalid { .. })));
}

#[test]
fn every_bucket_can_be_filled_exactly() {
    for (open_len, unpadded) in [(0, 100), (48, 300), (300, 900), (0, 3000), (4096, 10_000), (0, 40_000)] {
        let plaintext = envelope::padded_plaintext_len(open_len, unpadded).expect("fits");
        let env = Envelope {
            open: (open_len > 0).then(|| vec![1; open_len]),
            ciphertext: vec![2; plaintext + TAG_LEN],
            ..session_envelope()
        };
        assert!(BUCKETS.contains(&env.encode().len()), "{open_len} {unpadded}");
    }
}

fn text_frame(text: &str) -> Frame {
    Frame {
        header_echo: session_envelope().header.encode(),
        message_id: MessageId([0x11; 16]),
        seq: 5,
        sent_at: Timestamp(1_000),
        ack_epoch: None,
        body: Body::Text(text.to_owned()),
    }
}

#[test]
fn frame_golden_bytes() {
    let expected = concat!(
        "0102a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a500000007000000023f",
        "11111111111111111111111111111111",
        "0000000000000005",
        "00000000000003e8",
        "ffffffff",
        "01",
        "00000002",
        "6869",
        "000000",
    );
    let f = text_frame("hi");
    let bytes = f.encode_padded(f.unpadded_len() + 3).expect("encode");
    assert_eq!(hex::encode(&bytes[..]), expected);
    assert_eq!(Frame::decode(&bytes), Ok(f));
}

#[test]
fn frame_padding_byte_must_be_zero() {
    let f = text_frame("hello");
    for at in [f.unpadded_len(), f.unpadded_len() + 10, 99] {
        let mut bytes = f.encode_padded(100).expect("encode");
        bytes[at] = 0x01;
        assert_eq!(Frame::decode(&bytes), Err(FrameError::NonZeroPadding { offset: at }));
    }
}

#[test]
fn frame_text_over_16_kib_is_refused() {
    let f = text_frame(&"é".repeat(frame::MAX_TEXT_LEN / 2));
    assert!(f.encode_padded(f.unpadded_len()).is_ok());
    let f = text_frame(&format!("{}a", "é".repeat(frame::MAX_TEXT_LEN / 2)));
    assert!(matches!(
        f.encode_padded(MAX_TRANSPORT_PLAINTEXT),
        Err(FrameError::Malformed(merpati_proto::codec::DecodeError::TooLong { what: "text", .. }))
    ));
}

#[test]
fn frame_invalid_utf8_is_refused() {
    let f = text_frame("ab");
    let mut bytes = f.encode_padded(f.unpadded_len()).expect("encode");
    bytes[frame::FIXED_LEN] = 0xC3; // a lead byte followed by an ASCII byte
    assert_eq!(Frame::decode(&bytes), Err(FrameError::InvalidUtf8));
}

#[test]
fn message_ids_are_random_and_print_short() {
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let a = MessageId::random(&mut rng);
    let b = MessageId::random(&mut rng);
    assert_ne!(a, b);
    assert_eq!(format!("{:?}", MessageId([0xAB; 16])), "MessageId(abababababab..)");
}

// ---------------------------------------------------------------------------------------------
// Reassembler caps

fn two_part_group(id: u8) -> Vec<Fragment> {
    fragment::split(CONTENT_TEXT, &vec![id; MAX_FRAGMENT_CHUNK + 1], [id; 16]).expect("split")
}

#[test]
fn seventeenth_group_is_busy() {
    let mut r = Reassembler::new();
    let groups: Vec<_> = (0..=MAX_GROUPS_IN_PROGRESS as u8).map(two_part_group).collect();
    for g in &groups[..MAX_GROUPS_IN_PROGRESS] {
        assert_eq!(r.push(g[0].clone(), Timestamp(0)), Ok(None));
    }
    let reserved = MAX_GROUPS_IN_PROGRESS * (MAX_FRAGMENT_CHUNK + 1);
    assert_eq!(r.buffered_bytes(), reserved);
    assert_eq!(
        r.push(groups[16][0].clone(), Timestamp(0)),
        Err(FragmentError::Busy { groups_in_progress: 16, buffered_bytes: reserved })
    );
    // Nothing was evicted: every admitted group still completes.
    assert_eq!(r.groups_in_progress(), MAX_GROUPS_IN_PROGRESS);
    // A message in one fragment needs no buffer and still gets through.
    let single = fragment::split(CONTENT_TEXT, b"short", [0xFF; 16]).expect("split").remove(0);
    assert_eq!(r.push(single, Timestamp(0)), Ok(Some((CONTENT_TEXT, b"short".to_vec()))));
    assert!(r.push(groups[0][1].clone(), Timestamp(0)).expect("push").is_some());
    // Room again for the refused group.
    assert_eq!(r.push(groups[16][0].clone(), Timestamp(0)), Ok(None));
    assert!(r.push(groups[16][1].clone(), Timestamp(0)).expect("push").is_some());
}

#[test]
fn buffered_bytes_are_capped() {
    let mut r = Reassembler::new();
    let big: Vec<_> = (0..5u8)
        .map(|id| fragment::split(CONTENT_TEXT, &vec![id; MAX_REASSEMBLED_LEN], [id; 16]).expect("split"))
        .collect();
    for g in &big[..4] {
        assert_eq!(r.push(g[0].clone(), Timestamp(0)), Ok(None));
    }
    assert_eq!(r.buffered_bytes(), MAX_BUFFERED_BYTES);
    assert!(matches!(r.push(big[4][0].clone(), Timestamp(0)), Err(FragmentError::Busy { .. })));
    assert!(matches!(r.push(two_part_group(9)[0].clone(), Timestamp(0)), Err(FragmentError::Busy { .. })));
    assert_eq!(r.groups_in_progress(), 4);
    // The admitted groups finish.
    let mut done = None;
    for f in &big[0][1..] {
        done = r.push(f.clone(), Timestamp(0)).expect("push");
    }
    assert_eq!(done, Some((CONTENT_TEXT, vec![0; MAX_REASSEMBLED_LEN])));
    assert_eq!(r.buffered_bytes(), 3 * MAX_REASSEMBLED_LEN);
    assert_eq!(r.push(big[4][0].clone(), Timestamp(0)), Ok(None));
}

#[test]
fn expired_group_is_dropped_on_push() {
    let mut r = Reassembler::new();
    let old = two_part_group(1);
    let new = two_part_group(2);
    let t0 = Timestamp(5 * GROUP_TTL);
    assert_eq!(r.push(old[0].clone(), t0), Ok(None));
    assert_eq!(r.push(new[0].clone(), t0.plus(GROUP_TTL + 1)), Ok(None));
    assert_eq!(r.groups_in_progress(), 1);
    assert_eq!(r.buffered_bytes(), MAX_FRAGMENT_CHUNK + 1);
    // The old group's last fragment no longer completes anything: it starts over.
    assert_eq!(r.push(old[1].clone(), t0.plus(GROUP_TTL + 2)), Ok(None));
    assert_eq!(r.groups_in_progress(), 2);
}

// ---------------------------------------------------------------------------------------------
// Wire: golden JSON renderings and bounds

fn json<T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug>(
    value: &T,
) -> String {
    let text = serde_json::to_string(value).expect("serialize");
    assert_eq!(&serde_json::from_str::<T>(&text).expect("deserialize"), value);
    text
}

#[test]
fn wire_golden_json() {
    let mb = MailboxId([1; 16]);
    let ids16 = "[1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1]";
    let tok = FetchToken { key: [2; 32], proof: [3; 64] };
    let tok32 = format!(r#"{{"key":{:?},"proof":{:?}}}"#, [2u8; 32], [3u8; 64]).replace(' ', "");

    assert_eq!(wire::DELIVER_PROTOCOL, "/merpati/deliver/1");
    assert_eq!(wire::MAILBOX_PROTOCOL, "/merpati/mailbox/2");

    assert_eq!(json(&deliver::Request { envelope: vec![1, 2, 3] }), r#"{"envelope":[1,2,3]}"#);
    assert_eq!(json(&deliver::Response::Accepted), r#""Accepted""#);
    assert_eq!(json(&deliver::Response::Refused(Refusal::MailboxFull)), r#"{"Refused":"MailboxFull"}"#);

    assert_eq!(
        json(&mailbox::Request::Deposit { mailbox: mb, envelope: vec![9] }),
        format!(r#"{{"Deposit":{{"mailbox":{ids16},"envelope":[9]}}}}"#)
    );
    assert_eq!(
        json(&mailbox::Request::Fetch { tokens: vec![tok.clone()], after: Some(7), limit: 64, wait_ms: 0 }),
        format!(r#"{{"Fetch":{{"tokens":[{tok32}],"after":7,"limit":64,"wait_ms":0}}}}"#)
    );
    assert_eq!(
        json(&mailbox::Request::Fetch { tokens: vec![tok.clone()], after: None, limit: 1, wait_ms: 30_000 }),
        format!(r#"{{"Fetch":{{"tokens":[{tok32}],"after":null,"limit":1,"wait_ms":30000}}}}"#)
    );
    assert_eq!(
        json(&mailbox::Request::Delete { token: tok, ids: vec![1, 2] }),
        format!(r#"{{"Delete":{{"token":{tok32},"ids":[1,2]}}}}"#)
    );

    let stored = mailbox::StoredEnvelope { mailbox: mb, id: 3, envelope: vec![4, 5] };
    assert_eq!(json(&stored), format!(r#"{{"mailbox":{ids16},"id":3,"envelope":[4,5]}}"#));
    assert_eq!(json(&mailbox::Response::Stored { id: 8 }), r#"{"Stored":{"id":8}}"#);
    assert_eq!(
        json(&mailbox::Response::Envelopes { items: vec![stored], more: true }),
        format!(r#"{{"Envelopes":{{"items":[{{"mailbox":{ids16},"id":3,"envelope":[4,5]}}],"more":true}}}}"#)
    );
    assert_eq!(json(&mailbox::Response::Deleted { count: 2 }), r#"{"Deleted":{"count":2}}"#);
    assert_eq!(
        json(&mailbox::Response::Refused(Refusal::RateLimited { retry_after_ms: 500 })),
        r#"{"Refused":{"RateLimited":{"retry_after_ms":500}}}"#
    );

    let refusals = [
        (Refusal::MailboxFull, r#""MailboxFull""#),
        (Refusal::TooLarge { max: 65_536 }, r#"{"TooLarge":{"max":65536}}"#),
        (Refusal::RateLimited { retry_after_ms: 1 }, r#"{"RateLimited":{"retry_after_ms":1}}"#),
        (Refusal::Unauthorized, r#""Unauthorized""#),
        (Refusal::RelayFull, r#""RelayFull""#),
        (Refusal::Malformed, r#""Malformed""#),
        (Refusal::UnknownMailbox, r#""UnknownMailbox""#),
        (Refusal::Internal, r#""Internal""#),
    ];
    for (refusal, expected) in refusals {
        assert_eq!(json(&refusal), expected);
        assert!(!refusal.to_string().is_empty());
    }
}

#[test]
fn a_batch_keeps_its_count_and_size_bounds_and_its_answer_matches_it() {
    use serde_bytes::ByteBuf;
    let batch =
        |count: usize, len: usize| deliver::Batch { envelopes: vec![ByteBuf::from(vec![7; len]); count] };
    assert_eq!(wire::DELIVER_BATCH_PROTOCOL, "/merpati/deliver/2");
    assert!(batch(1, 1).validate().is_ok());
    assert!(batch(wire::MAX_BATCH_ENVELOPES, 4096).validate().is_ok());
    let full = wire::MAX_BATCH_BYTES / 4;
    assert!(batch(4, full).validate().is_ok());
    assert!(matches!(batch(0, 1).validate(), Err(wire::WireError::Count { .. })));
    assert!(matches!(batch(wire::MAX_BATCH_ENVELOPES + 1, 1).validate(), Err(wire::WireError::Count { .. })));
    assert!(matches!(batch(5, full).validate(), Err(wire::WireError::TooLarge { what: "batch", .. })));
    assert!(matches!(batch(2, 0).validate(), Err(wire::WireError::Invalid { .. })));
    assert_eq!(
        batch(1, wire::MAX_BATCH_BYTES).validate().map_err(|e| e.refusal()),
        Err(Refusal::TooLarge { max: merpati_proto::envelope::MAX_ENVELOPE_LEN as u32 })
    );
    // The largest batch fits the request limit once encoded.
    let largest = batch(4, full);
    assert!(cbor4ii::serde::to_vec(Vec::new(), &largest).unwrap().len() <= wire::MAX_BATCH_REQUEST_LEN);
    let largest = batch(wire::MAX_BATCH_ENVELOPES, wire::MAX_BATCH_BYTES / wire::MAX_BATCH_ENVELOPES);
    assert!(cbor4ii::serde::to_vec(Vec::new(), &largest).unwrap().len() <= wire::MAX_BATCH_REQUEST_LEN);

    let three = batch(3, 10);
    let answer = deliver::BatchResponse::all(&three, deliver::Response::Accepted);
    assert!(answer.validate_for(&three).is_ok());
    let short = deliver::BatchResponse { results: vec![deliver::Response::Accepted; 2] };
    assert!(matches!(short.validate_for(&three), Err(wire::WireError::Mismatch { .. })));
    assert!(serde_json::from_str::<deliver::Batch>(r#"{"envelopes":[[1]],"extra":1}"#).is_err());
}

#[test]
fn wire_unknown_fields_are_refused() {
    assert!(serde_json::from_str::<deliver::Request>(r#"{"envelope":[1],"extra":1}"#).is_err());
    assert!(serde_json::from_str::<mailbox::Response>(r#"{"Stored":{"id":1,"extra":2}}"#).is_err());
    assert!(serde_json::from_str::<mailbox::Request>(r#"{"Delete":{"ids":[1]}}"#).is_err());
}

fn arb_refusal() -> impl Strategy<Value = Refusal> {
    prop_oneof![
        Just(Refusal::MailboxFull),
        any::<u32>().prop_map(|max| Refusal::TooLarge { max }),
        any::<u32>().prop_map(|retry_after_ms| Refusal::RateLimited { retry_after_ms }),
        Just(Refusal::Unauthorized),
        Just(Refusal::RelayFull),
        Just(Refusal::Malformed),
        Just(Refusal::UnknownMailbox),
        Just(Refusal::Internal),
    ]
}

fn arb_token() -> impl Strategy<Value = FetchToken> {
    (any::<[u8; 32]>(), any::<[u8; 32]>(), any::<[u8; 32]>()).prop_map(|(key, a, b)| FetchToken {
        key,
        proof: std::array::from_fn(|i| if i < 32 { a[i] } else { b[i - 32] }),
    })
}

fn arb_mailbox_request() -> impl Strategy<Value = mailbox::Request> {
    prop_oneof![
        (arb_mailbox(), vec(any::<u8>(), 0..100))
            .prop_map(|(mailbox, envelope)| mailbox::Request::Deposit { mailbox, envelope }),
        (vec(arb_token(), 0..70), any::<Option<u64>>(), 0u32..70, 0u32..40_000).prop_map(
            |(tokens, after, limit, wait_ms)| mailbox::Request::Fetch { tokens, after, limit, wait_ms }
        ),
        (arb_token(), vec(any::<u64>(), 0..300))
            .prop_map(|(token, ids)| mailbox::Request::Delete { token, ids }),
    ]
}

fn arb_mailbox_response() -> impl Strategy<Value = mailbox::Response> {
    let item = (arb_mailbox(), any::<u64>(), vec(any::<u8>(), 1..50))
        .prop_map(|(mailbox, id, envelope)| mailbox::StoredEnvelope { mailbox, id, envelope });
    prop_oneof![
        any::<u64>().prop_map(|id| mailbox::Response::Stored { id }),
        (vec(item, 0..70), any::<bool>())
            .prop_map(|(items, more)| mailbox::Response::Envelopes { items, more }),
        any::<u32>().prop_map(|count| mailbox::Response::Deleted { count }),
        arb_refusal().prop_map(mailbox::Response::Refused),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn wire_round_trips_and_validation_matches_the_limits(
        request in arb_mailbox_request(),
        response in arb_mailbox_response(),
        envelope_len in prop_oneof![0usize..10, Just(MAX_ENVELOPE_LEN), Just(MAX_ENVELOPE_LEN + 1)],
    ) {
        json(&request);
        json(&response);
        let within = match &request {
            mailbox::Request::Deposit { envelope, .. } => !envelope.is_empty(),
            mailbox::Request::Fetch { tokens, limit, wait_ms, .. } => {
                (1..=wire::MAX_FETCH_TOKENS).contains(&tokens.len())
                    && (1..=wire::MAX_FETCH_LIMIT).contains(limit)
                    && *wait_ms <= wire::MAX_FETCH_WAIT_MS
            }
            mailbox::Request::Delete { ids, .. } => (1..=wire::MAX_DELETE_IDS).contains(&ids.len()),
        };
        prop_assert_eq!(request.validate().is_ok(), within);
        let within = match &response {
            mailbox::Response::Envelopes { items, .. } => items.len() <= wire::MAX_FETCH_LIMIT as usize,
            mailbox::Response::Deleted { count } => *count as usize <= wire::MAX_DELETE_IDS,
            _ => true,
        };
        prop_assert_eq!(response.validate().is_ok(), within);
        let deliver = deliver::Request { envelope: vec![0; envelope_len] };
        prop_assert_eq!(deliver.validate().is_ok(), (1..=MAX_ENVELOPE_LEN).contains(&envelope_len));
    }
}
