//! Fuzzes `TransportCipher::open` with a fixed key. Raw mode: an 8-byte nonce, then arbitrary
//! ciphertext. Edit mode: a sealed message under an edit script, opened with the sealing nonce
//! plus a delta from the input; it must open if and only if message and nonce are unchanged. One
//! cipher serves every input, so a key left behind by an earlier call would also show up here.
#![no_main]

use std::cell::RefCell;

use libfuzzer_sys::fuzz_target;
use merpati_fuzz::{Mode, apply_edits, assert_verdict, symmetric_key};
use merpati_proto::noise::TransportCipher;

thread_local! {
    static CIPHER: RefCell<TransportCipher> =
        RefCell::new(TransportCipher::new().expect("building a transport cipher"));
}

/// Takes a big-endian `u64` from the front of `input` (zero-padded if short).
fn nonce(input: &[u8]) -> (u64, &[u8]) {
    let (head, rest) = input.split_at(input.len().min(8));
    let mut bytes = [0u8; 8];
    bytes[..head.len()].copy_from_slice(head);
    (u64::from_be_bytes(bytes), rest)
}

fuzz_target!(|data: &[u8]| {
    let key = symmetric_key();
    CIPHER.with_borrow_mut(|cipher| match Mode::of(data) {
        Mode::Raw(input) => {
            let (nonce, ciphertext) = nonce(input);
            let _ = cipher.open(&key, nonce, ciphertext);
        }
        Mode::Edit { payload, edits } => {
            let (seal_nonce, edits) = nonce(edits);
            let (&delta, edits) = edits.split_first().unwrap_or((&0, edits));
            let open_nonce = seal_nonce.wrapping_add(u64::from(delta));
            let Ok(valid) = cipher.seal(&key, seal_nonce, payload) else {
                // Noise reserves the last nonce, 2^64 - 1; every other one must seal.
                assert_eq!(seal_nonce, u64::MAX, "sealing failed with nonce {seal_nonce}");
                return;
            };
            let mut message = valid.clone();
            apply_edits(&mut message, edits);
            let result = cipher.open(&key, open_nonce, &message);
            assert_verdict(message == valid && delta == 0, result, |got| assert_eq!(&got[..], payload));
        }
    });
});
