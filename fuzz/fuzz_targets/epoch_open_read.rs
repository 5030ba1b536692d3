//! Fuzzes `noise::epoch_open_read` with a fixed ratchet secret and PSK: arbitrary bytes (raw mode),
//! or a valid epoch open under an edit script, which must be accepted if and only if the edits left
//! it unchanged (see the crate docs for the modes).
#![no_main]

use libfuzzer_sys::fuzz_target;
use merpati_fuzz::{Mode, PROLOGUE, apply_edits, assert_verdict, ratchet_secret, rng, symmetric_key};
use merpati_proto::noise;

fuzz_target!(|data: &[u8]| {
    let ratchet = ratchet_secret();
    let psk = symmetric_key();
    match Mode::of(data) {
        Mode::Raw(message) => {
            let _ = noise::epoch_open_read(&psk, &ratchet, PROLOGUE, message);
        }
        Mode::Edit { payload, edits } => {
            let (valid, sent) =
                noise::epoch_open_write(&psk, &ratchet.public(), PROLOGUE, payload, &mut rng())
                    .expect("writing an epoch open");
            let mut message = valid.clone();
            apply_edits(&mut message, edits);
            let result = noise::epoch_open_read(&psk, &ratchet, PROLOGUE, &message);
            assert_verdict(message == valid, result, |(got, split)| {
                assert_eq!(&got[..], payload);
                assert_eq!(split.handshake_hash, sent.handshake_hash);
                assert_eq!(split.k1, sent.k1);
                assert_eq!(split.k2, sent.k2);
            });
        }
    }
});
