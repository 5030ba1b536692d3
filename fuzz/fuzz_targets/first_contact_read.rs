//! Fuzzes `noise::first_contact_read` with a fixed prekey secret: arbitrary bytes (raw mode), or a
//! valid first-contact message under an edit script, which must be accepted if and only if the
//! edits left it unchanged (see the crate docs for the modes).
#![no_main]

use libfuzzer_sys::fuzz_target;
use merpati_fuzz::{Mode, PROLOGUE, apply_edits, assert_verdict, device_secret, prekey_secret, rng};
use merpati_proto::noise;

fuzz_target!(|data: &[u8]| {
    let prekey = prekey_secret();
    match Mode::of(data) {
        Mode::Raw(message) => {
            let _ = noise::first_contact_read(&prekey, PROLOGUE, message);
        }
        Mode::Edit { payload, edits } => {
            let device = device_secret();
            let (valid, sent) =
                noise::first_contact_write(&device, &prekey.public(), PROLOGUE, payload, &mut rng())
                    .expect("writing a first-contact message");
            let mut message = valid.clone();
            apply_edits(&mut message, edits);
            let result = noise::first_contact_read(&prekey, PROLOGUE, &message);
            assert_verdict(message == valid, result, |(got, sender, split)| {
                assert_eq!(&got[..], payload);
                assert_eq!(sender, device.public());
                assert_eq!(split.handshake_hash, sent.handshake_hash);
                assert_eq!(split.k1, sent.k1);
                assert_eq!(split.k2, sent.k2);
            });
        }
    }
});
