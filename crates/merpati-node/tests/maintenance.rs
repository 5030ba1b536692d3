//! The maintenance pass interrupted: a node killed between any two of its steps (prekeys,
//! sessions, storage key), restarted from its database, loses no message and seals no two
//! envelopes with the same key and nonce.
#![allow(clippy::unwrap_used)] // test code: a failed step is a failed test

mod support;

use std::collections::HashMap;
use std::path::Path;

use merpati_node::daemon::rotate_storage_key_if_due;
use merpati_node::engine::{AttemptResult, Engine, Me};
use merpati_node::store::{Direction, MemoryStore, SledStore, Store};
use merpati_proto::Timestamp;
use merpati_proto::envelope::Envelope;
use merpati_proto::identity::IdentityKey;
use merpati_proto::keys::{SymmetricKey, X25519Secret};
use merpati_proto::wire::deliver;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

const T0: Timestamp = Timestamp(1_795_219_200_000);
/// The steps of the pass, in the daemon's order; each ends in its own durable write.
const STEPS: usize = 3;

fn me(seed: u64, name: &str) -> Me {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    Me {
        identity: IdentityKey::generate(&mut rng),
        device_static: X25519Secret::generate(&mut rng),
        inbox_secret: SymmetricKey::generate(&mut rng),
        name: Some(name.to_owned()),
        created_at: T0,
    }
}

fn start<S: Store>(store: S, seed: u64, name: &str, now: Timestamp) -> Engine<S> {
    Engine::start(
        store,
        me(seed, name),
        || vec![seed as u8; 68],
        now,
        ChaCha20Rng::seed_from_u64(seed + now.0),
    )
    .unwrap()
}

fn open(dir: &Path) -> SledStore {
    support::open_sled_store(dir, 7).unwrap()
}

/// Runs the first `steps` steps of the maintenance pass.
fn maintenance_steps(engine: &mut Engine<SledStore>, now: Timestamp, steps: usize) {
    if steps >= 1 {
        engine.maintain_prekeys(now).unwrap();
    }
    if steps >= 2 {
        engine.maintain_sessions(now).unwrap();
    }
    if steps >= 3 {
        rotate_storage_key_if_due(engine.store(), now).unwrap();
    }
}

/// Where each envelope Alice sealed used a key and nonce: (epoch, sub-epoch, index) → message id.
type Nonces = HashMap<(u32, u32, u8), [u8; 16]>;

/// Hands Alice's due envelopes to Bob, recording each one's key and nonce; panics on a second
/// message under the same ones.
fn deliver_all(
    alice: &mut Engine<SledStore>,
    bob: &mut Engine<MemoryStore>,
    now: Timestamp,
    nonces: &mut Nonces,
) {
    while let Some(attempt) = alice.due(now, None).unwrap().into_iter().next() {
        let header = Envelope::decode(&attempt.envelope).unwrap().header;
        let used = nonces.entry((header.epoch, header.sub_epoch, header.index)).or_insert(attempt.id.0);
        assert_eq!(*used, attempt.id.0, "two messages sealed with one key and nonce: {header:?}");
        let received = bob.receive(Some(&b"alice-node"[..]), &attempt.envelope, now).unwrap();
        assert!(matches!(received.response, Some(deliver::Response::Accepted)));
        alice.attempt_finished(&attempt.id, &AttemptResult::Accepted, now).unwrap();
    }
}

#[test]
fn a_crash_between_any_two_steps_of_the_maintenance_pass_loses_nothing_and_reuses_no_nonce() {
    for crash_after in 0..=STEPS {
        let dir = tempfile::tempdir().unwrap();
        let mut bob = start(MemoryStore::new(), 2, "Bob", T0);
        let invite = bob.invite(b"bob-node".to_vec(), vec![], T0).unwrap();
        let mut nonces = Nonces::new();
        let mut sent = Vec::new();
        let day2 = T0.plus(2 * Timestamp::DAY);
        {
            let mut alice = start(open(dir.path()), 1, "Alice", T0);
            alice.add_contact(&invite, "bob", T0).unwrap();
            bob.add_contact(&alice.invite(b"alice-node".to_vec(), vec![], T0).unwrap(), "alice", T0).unwrap();
            for i in 0..3 {
                sent.push(alice.send_text("bob", &format!("day 0 #{i}"), T0).unwrap().text);
            }
            deliver_all(&mut alice, &mut bob, T0, &mut nonces);
            // Two more wait in the outbox (Bob is away), sealed under the current sub-epoch.
            for i in 0..2 {
                sent.push(
                    alice.send_text("bob", &format!("queued #{i}"), T0.plus(Timestamp::HOUR)).unwrap().text,
                );
            }
            // Two days later the pass runs, and the node is killed after `crash_after` steps.
            maintenance_steps(&mut alice, day2, crash_after);
        }
        // The restarted node runs the whole pass first, as the daemon does, then carries on.
        let mut alice = start(open(dir.path()), 1, "Alice", day2);
        maintenance_steps(&mut alice, day2, STEPS);
        for i in 0..3 {
            sent.push(alice.send_text("bob", &format!("day 2 #{i}"), day2).unwrap().text);
        }
        deliver_all(&mut alice, &mut bob, day2, &mut nonces);

        let name = bob.store().contacts().unwrap()[0].name.clone();
        let got: Vec<String> = bob
            .store()
            .messages(Some(&name), 100)
            .unwrap()
            .into_iter()
            .filter(|m| m.direction == Direction::In)
            .map(|m| m.text)
            .collect();
        assert_eq!(got, sent, "crash after {crash_after} steps: every message once, in order");
    }
}
