//! Junk costs bounded work and changes nothing.
//!
//! This is its own test binary because it reads the process-wide X25519 operation counter, which
//! other tests running in parallel threads would move.
#![allow(clippy::unwrap_used)] // test code: a failed step is a failed test

mod common;

use common::{T0, established, snapshot, text};
use merpati_proto::envelope::{Envelope, Header, Kind, VERSION};
use merpati_proto::keys::x25519_operations;
use merpati_proto::session::{OpenError, Session};
use rand_core::Rng;

fn junk_envelope(rng: &mut impl Rng, kind: Kind, epoch: u32, sub_epoch: u32, open_len: usize) -> Vec<u8> {
    let mut mailbox = [0u8; 16];
    rng.fill_bytes(&mut mailbox);
    let mut open = vec![0u8; open_len];
    rng.fill_bytes(&mut open);
    let mut ciphertext = vec![0u8; 400];
    rng.fill_bytes(&mut ciphertext);
    let header = Header {
        version: VERSION,
        kind,
        mailbox: merpati_proto::mailbox::MailboxId(mailbox),
        epoch,
        sub_epoch,
        index: (rng.next_u32() % 64) as u8,
    };
    Envelope { header, open: (open_len > 0).then_some(open), ciphertext }.encode()
}

#[test]
fn junk_flood_costs_bounded_work_and_changes_nothing() {
    let (_, bob, mut a, mut b, mut rng) = established(30);
    // A opens epoch 2 and B answers in epoch 3 (not delivered yet): B knows epoch 2 and would
    // accept epoch 4 next. A's second epoch-2 message is held back to check B still works.
    let opener = a.seal(&text("opens epoch 2"), T0, &mut rng).unwrap();
    b.open(&opener.envelope, T0).unwrap();
    b.seal(&text("epoch 3"), T0, &mut rng).unwrap();
    let real = a.seal(&text("real"), T0, &mut rng).unwrap();
    let before = snapshot(&b);
    const N: u64 = 500;

    // Random bytes: refused by the codec, no cryptography at all.
    let ops = x25519_operations();
    for _ in 0..N {
        let mut bytes = vec![0u8; (rng.next_u32() % 2000) as usize];
        rng.fill_bytes(&mut bytes);
        assert!(b.open(&bytes, T0).is_err());
    }
    assert_eq!(x25519_operations() - ops, 0, "random bytes cost a DH");

    // Well-formed envelopes in a known epoch: only the AEAD check, no DH.
    let ops = x25519_operations();
    for _ in 0..N {
        let junk = junk_envelope(&mut rng, Kind::Session, 2, 0, 0);
        // Refused by the AEAD, or earlier by the replay bitmap where the index was already used.
        assert!(matches!(b.open(&junk, T0), Err(OpenError::Rejected | OpenError::Replay)));
    }
    assert_eq!(x25519_operations() - ops, 0, "junk in a known epoch cost a DH");

    // Junk claiming to open the next epoch: one DH each, then refused.
    let ops = x25519_operations();
    for _ in 0..N {
        let junk = junk_envelope(&mut rng, Kind::Session, 4, 0, 80);
        assert_eq!(b.open(&junk, T0).unwrap_err(), OpenError::Rejected);
    }
    assert!(x25519_operations() - ops <= N, "junk epoch opens cost more than one DH each");

    // Junk far ahead in a sub-epoch chain: refused before deriving anything.
    for _ in 0..N {
        let junk = junk_envelope(&mut rng, Kind::Session, 2, 5000, 0);
        assert!(matches!(b.open(&junk, T0), Err(OpenError::TooManyDerivations { .. })));
    }
    assert_eq!(snapshot(&b), before, "junk changed the session");

    // Junk first contacts at the inbox: at most two DH each (Noise_X's es and ss), and no session.
    let ops = x25519_operations();
    let prekey_id = bob.prekeys.current().id.to_be_bytes();
    for _ in 0..N {
        let mut junk = Envelope::decode(&junk_envelope(&mut rng, Kind::FirstContact, 0, 0, 300)).unwrap();
        junk.open.as_mut().unwrap()[..4].copy_from_slice(&prekey_id);
        assert!(Session::accept(bob.responder(), &junk.encode(), T0, &mut rng).is_err());
    }
    assert!(x25519_operations() - ops <= 2 * N, "junk first contacts cost more than two DH each");

    // The real message still opens.
    assert_eq!(b.open(&real.envelope, T0).unwrap().epoch, 2);
}
