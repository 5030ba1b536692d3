//! Fuzzes `X25519Public::from_slice`: never panics, refuses every length but 32, agrees with
//! `from_bytes`, and a key it accepts can be used in a Diffie-Hellman without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use merpati_proto::keys::{KeyError, X25519Public, X25519Secret};

fuzz_target!(|data: &[u8]| {
    let result = X25519Public::from_slice(data);
    let Ok(bytes) = <[u8; 32]>::try_from(data) else {
        assert_eq!(result, Err(KeyError::WrongLength { expected: 32, got: data.len() }));
        return;
    };
    assert_eq!(result, X25519Public::from_bytes(bytes));
    if let Ok(public) = result {
        assert_eq!(public.as_bytes(), &bytes);
        // Twist points pass the public-key check; the all-zero output check refuses those that
        // would give a predictable secret, so either outcome is fine, but never a zero secret.
        if let Ok(shared) = X25519Secret::from_bytes([0x55; 32]).diffie_hellman(public.as_bytes()) {
            assert_ne!(*shared, [0u8; 32]);
        }
    }
});
