//! Fuzzes `blob::Descriptor::decode` on arbitrary bytes, and on an honest description with
//! edits applied: it must never panic, whatever it accepts must pass `validate`, and the
//! encoding is canonical, so encoding what was accepted gives back exactly the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use merpati_fuzz::apply_edits;
use merpati_proto::Timestamp;
use merpati_proto::blob::{BlobKey, Content, Descriptor, Source, chunk_count};
use zeroize::Zeroizing;

fn honest() -> Vec<u8> {
    let len = 3 * 1024 * 1024;
    Descriptor {
        len,
        hash: [1; 32],
        media_type: "image/png".into(),
        name: "plan.png".into(),
        caption: "the map".into(),
        thumbnail: vec![2; 40],
        content: Content::Blob {
            blob_id: [3; 16],
            key: BlobKey::from_bytes([4; 32]),
            read_secret: Zeroizing::new([5; 32]),
            count: chunk_count(len).expect("within the limit"),
            expires_at: Timestamp(1_800_000_000_000),
            from_sender: true,
            sources: vec![Source { peer_id: vec![6; 38], addrs: vec![vec![7; 12]] }],
        },
    }
    .encode()
    .expect("valid")
}

fuzz_target!(|data: &[u8]| {
    let input = match data.split_first() {
        // Edit mode: bend an honest description.
        Some((0, edits)) => {
            let mut bytes = honest();
            apply_edits(&mut bytes, edits);
            bytes
        }
        _ => data.to_vec(),
    };
    if let Ok(descriptor) = Descriptor::decode(&input) {
        assert!(descriptor.validate().is_ok(), "accepted a description that breaks a rule");
        assert_eq!(descriptor.encode().expect("valid"), input, "the encoding is not canonical");
    }
});
