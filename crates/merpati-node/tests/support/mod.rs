//! What the node's integration tests share: opening a sled store that was just closed.

// Each test binary compiles this module on its own and uses only part of it.
#![allow(dead_code)]

use std::path::Path;
use std::time::Duration;

use merpati_node::store::{Keyring, SledStore, StoreError};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

/// Opens (or creates) the sled store in `dir` with the key file made from `seed`, once sled's lock
/// is free (see [`when_unlocked`]).
pub(crate) fn open_sled_store(dir: &Path, seed: u64) -> Result<SledStore, StoreError> {
    when_unlocked(
        || SledStore::open(dir, keyring(dir, seed)),
        |e| matches!(e, StoreError::Db(e) if still_locked(e)),
    )
}

/// The key file in `dir`, created from `seed` if there is none yet.
pub(crate) fn keyring(dir: &Path, seed: u64) -> Keyring {
    Keyring::open_or_create(SledStore::key_file(dir), &mut ChaCha20Rng::seed_from_u64(seed)).unwrap()
}

/// Runs `open` until sled's lock is free: sled lets go of its file lock when the last reference to a
/// closed database drops, which can be a moment after the store is dropped, on one of sled's own
/// threads.
pub(crate) fn when_unlocked<T, E>(
    open: impl Fn() -> Result<T, E>,
    locked: impl Fn(&E) -> bool,
) -> Result<T, E> {
    for _ in 0..500 {
        match open() {
            Err(e) if locked(&e) => std::thread::sleep(Duration::from_millis(10)),
            other => return other,
        }
    }
    open()
}

/// Whether `error` is sled finding its database still locked by an instance just closed.
pub(crate) fn still_locked(error: &sled::Error) -> bool {
    matches!(error, sled::Error::Io(e) if e.to_string().contains("could not acquire lock"))
}
