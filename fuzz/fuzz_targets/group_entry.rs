//! Fuzzes `group::Entry::from_bytes` and a log taking what it decodes: decoding never panics, an
//! entry it accepts encodes back to exactly its bytes, and a log refuses (or keeps waiting) any
//! entry a fixed group's owner did not sign, without changing its state.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use merpati_fuzz::T0;
use merpati_proto::group::{Entry, Log};
use merpati_proto::identity::IdentityKey;
use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::SeedableRng;

/// A fixed group's fresh log.
fn log() -> &'static Log {
    static LOG: OnceLock<Log> = OnceLock::new();
    LOG.get_or_init(|| {
        let owner = IdentityKey::generate(&mut ChaCha20Rng::seed_from_u64(5));
        let (_, genesis) = Entry::genesis(&owner, "fuzz", [1; 16], T0).expect("genesis");
        Log::new(genesis).expect("log")
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(entry) = Entry::from_bytes(data) else { return };
    assert_eq!(entry.to_bytes(), data);
    let mut log = log().clone();
    let before = log.state();
    // The fuzzer cannot sign as the owner: whatever it made is refused or waits.
    let _ = log.add(entry, T0);
    assert_eq!(log.state(), before);
    assert_eq!(log.len(), 1);
});
