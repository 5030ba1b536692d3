//! Fuzzes decoding and verifying the signed identity objects: `DeviceCert`, `SignedPrekey` and
//! `Bundle` (see the crate docs for the modes). The first byte after the mode picks the object.
//!
//! Raw mode: the rest is decoded; nothing panics, what decodes re-encodes to exactly the input
//! (also through its serde form), and verifying it (a prekey against a fixed identity and device)
//! never panics.
//!
//! Edit mode: the object of a fixed identity, under the edit script, verified at a time taken from
//! the payload: it must decode and verify exactly when the edits left it unchanged and (for a
//! prekey or bundle) the prekey has not expired, and decode to the original.
#![no_main]

use libfuzzer_sys::fuzz_target;
use merpati_fuzz::{Mode, T0, apply_edits, assert_verdict, parties};
use merpati_proto::Timestamp;
use merpati_proto::identity::{Bundle, DeviceCert, IdentityError, PREKEY_LIFETIME, SignedPrekey};

/// The three objects, in the order the selector byte picks them.
#[derive(Debug, PartialEq)]
enum Object {
    Cert(DeviceCert),
    Prekey(SignedPrekey),
    Bundle(Box<Bundle>),
}

impl Object {
    fn decode(kind: u8, bytes: &[u8]) -> Result<Self, IdentityError> {
        Ok(match kind % 3 {
            0 => Self::Cert(DeviceCert::from_bytes(bytes)?),
            1 => Self::Prekey(SignedPrekey::from_bytes(bytes)?),
            _ => Self::Bundle(Box::new(Bundle::from_bytes(bytes)?)),
        })
    }

    /// Alice's own object of the kind.
    fn valid(kind: u8) -> Self {
        let bundle = &parties().0.bundle;
        match kind % 3 {
            0 => Self::Cert(bundle.cert.clone()),
            1 => Self::Prekey(bundle.prekey.clone()),
            _ => Self::Bundle(Box::new(bundle.clone())),
        }
    }

    fn to_bytes(&self) -> Vec<u8> {
        match self {
            Self::Cert(cert) => cert.to_bytes(),
            Self::Prekey(prekey) => prekey.to_bytes(),
            Self::Bundle(bundle) => bundle.to_bytes(),
        }
    }

    fn encoded_len(&self) -> usize {
        match self {
            Self::Cert(_) => DeviceCert::ENCODED_LEN,
            Self::Prekey(_) => SignedPrekey::ENCODED_LEN,
            Self::Bundle(bundle) => bundle.encoded_len(),
        }
    }

    /// The serde form (the binary encoding as a byte string) round-trips.
    fn check_serde(&self) {
        let same = match self {
            Self::Cert(cert) => Self::Cert(round_trip(cert)),
            Self::Prekey(prekey) => Self::Prekey(round_trip(prekey)),
            Self::Bundle(bundle) => Self::Bundle(Box::new(round_trip(&**bundle))),
        };
        assert_eq!(&same, self);
    }

    /// Verifies the object; a prekey is checked as one of Alice's device's.
    fn verify(&self, now: Timestamp) -> Result<(), IdentityError> {
        match self {
            Self::Cert(cert) => cert.verify(),
            Self::Prekey(prekey) => {
                let cert = &parties().0.cert;
                prekey.verify(&cert.identity, &cert.device_id(), now)
            }
            Self::Bundle(bundle) => bundle.verify(now),
        }
    }
}

fn round_trip<T: serde::Serialize + serde::de::DeserializeOwned>(value: &T) -> T {
    let json = serde_json::to_string(value).expect("serializing");
    serde_json::from_str(&json).expect("deserializing what was serialized")
}

fuzz_target!(|data: &[u8]| {
    match Mode::of(data) {
        Mode::Raw(input) => {
            let Some((&kind, bytes)) = input.split_first() else { return };
            let Ok(object) = Object::decode(kind, bytes) else { return };
            assert_eq!(object.to_bytes(), bytes);
            assert_eq!(object.encoded_len(), bytes.len());
            object.check_serde();
            let _ = object.verify(T0);
        }
        Mode::Edit { payload, edits } => {
            let kind = payload.first().copied().unwrap_or(0);
            // Steps of 1/128 of the prekey's lifetime: step 128 is its last valid millisecond.
            let step = u64::from(payload.get(1).copied().unwrap_or(0));
            let now = T0.plus(step * (PREKEY_LIFETIME / 128));
            let valid = Object::valid(kind);
            let original = valid.to_bytes();
            let mut bytes = original.clone();
            apply_edits(&mut bytes, edits);
            let expired = !matches!(valid, Object::Cert(_)) && now > T0.plus(PREKEY_LIFETIME);
            let result = Object::decode(kind, &bytes).and_then(|object| object.verify(now).map(|()| object));
            if bytes == original && expired {
                assert!(matches!(result, Err(IdentityError::Expired { .. })), "{result:?}");
                return;
            }
            assert_verdict(bytes == original && !expired, result, |object| assert_eq!(object, valid));
        }
    }
});
