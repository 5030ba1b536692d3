//! Attack tests for NDR1 sessions and group membership logs: one named test per attack from the
//! design brief.
//!
//! Each test drives real sessions end to end (identities, first contact, epochs) and asserts both
//! the refusal and, where an input is refused, that the session state did not change.
#![allow(clippy::unwrap_used)] // test code: a failed step is a failed test

mod common;

use common::{Party, T0, established, restart, snapshot, text};
use merpati_proto::Timestamp;
use merpati_proto::envelope::{Envelope, EnvelopeError};
use merpati_proto::group::{Action, Added, Entry, EntryError, GroupId, Log, LogError, Role};
use merpati_proto::identity::{Bundle, DeviceCert, IdentityKey, PROTOCOL_VERSION};
use merpati_proto::keys::{KeyError, X25519Public, X25519Secret};
use merpati_proto::session::{OpenError, Session};

#[test]
fn replay_is_rejected() {
    let (_, _, mut a, mut b, mut rng) = established(1);
    let m = a.seal(&text("once"), T0, &mut rng).unwrap();
    b.open(&m.envelope, T0).unwrap();
    let before = snapshot(&b);
    assert_eq!(b.open(&m.envelope, T0).unwrap_err(), OpenError::Replay);
    assert_eq!(snapshot(&b), before);
}

#[test]
fn replay_after_restart_is_rejected() {
    let (_, _, mut a, mut b, mut rng) = established(2);
    let m = a.seal(&text("once"), T0, &mut rng).unwrap();
    b.open(&m.envelope, T0).unwrap();
    let mut b = restart(&b, T0);
    assert_eq!(b.open(&m.envelope, T0).unwrap_err(), OpenError::Replay);
}

#[test]
fn first_contact_replayed_to_an_existing_session_is_rejected() {
    let mut rng = common::rng(3);
    let alice = Party::new(&mut rng, T0);
    let bob = Party::new(&mut rng, T0);
    let mut a = alice.initiate(&bob, T0, &mut rng);
    let first = a.seal(&text("hi"), T0, &mut rng).unwrap();
    let (b, _) = Session::accept(bob.responder(), &first.envelope, T0, &mut rng).unwrap();
    let mut b = restart(&b, T0);
    assert_eq!(b.open(&first.envelope, T0).unwrap_err(), OpenError::Replay);
}

#[test]
fn reorder_across_epochs_delivers_each_once() {
    let (_, _, mut a, mut b, mut rng) = established(4);
    // Epoch 2 (A), then B answers (epoch 3), then epoch 4 (A); deliver epoch 4 before epoch 2's rest.
    let e2: Vec<_> = (0..5).map(|i| a.seal(&text(&format!("e2-{i}")), T0, &mut rng).unwrap()).collect();
    b.open(&e2[0].envelope, T0).unwrap();
    let r = b.seal(&text("e3"), T0, &mut rng).unwrap();
    a.open(&r.envelope, T0).unwrap();
    let e4 = a.seal(&text("e4"), T0, &mut rng).unwrap();
    assert_eq!(b.open(&e4.envelope, T0).unwrap().epoch, 4);
    for m in e2[1..].iter().rev() {
        assert_eq!(b.open(&m.envelope, T0).unwrap().epoch, 2);
    }
    for m in &e2 {
        assert_eq!(b.open(&m.envelope, T0).unwrap_err(), OpenError::Replay);
    }
    assert!(b.missing().is_empty());
}

#[test]
fn withholding_is_detected_as_a_gap() {
    let (_, _, mut a, mut b, mut rng) = established(5);
    let sent: Vec<_> = (0..6).map(|i| a.seal(&text(&format!("{i}")), T0, &mut rng).unwrap()).collect();
    for (i, m) in sent.iter().enumerate() {
        if i != 2 && i != 3 {
            b.open(&m.envelope, T0).unwrap();
        }
    }
    assert_eq!(b.missing(), vec![sent[2].seq..=sent[3].seq]);
    b.open(&sent[3].envelope, T0).unwrap();
    assert_eq!(b.missing(), vec![sent[2].seq..=sent[2].seq]);
}

#[test]
fn truncation_is_detected_when_a_later_message_arrives() {
    let (_, _, mut a, mut b, mut rng) = established(6);
    let sent: Vec<_> = (0..4).map(|i| a.seal(&text(&format!("{i}")), T0, &mut rng).unwrap()).collect();
    b.open(&sent[0].envelope, T0).unwrap();
    // The relay cuts off the tail: nothing is visible yet…
    assert!(b.missing().is_empty());
    // …until any later message (here a receipt-like follow-up) arrives.
    let later = a.seal(&text("later"), T0, &mut rng).unwrap();
    b.open(&later.envelope, T0).unwrap();
    assert_eq!(b.missing(), vec![sent[1].seq..=sent[3].seq]);
}

/// Flips every bit of `envelope` in turn and feeds it to `open`, checking refusal and no change.
fn every_bit_flip_rejected(session: &mut Session, envelope: &[u8]) {
    let before = snapshot(session);
    for bit in 0..envelope.len() * 8 {
        let mut mangled = envelope.to_vec();
        mangled[bit / 8] ^= 1 << (bit % 8);
        assert!(session.open(&mangled, T0).is_err(), "bit {bit} flipped was accepted");
        assert_eq!(snapshot(session), before, "bit {bit} flipped changed the session");
    }
}

#[test]
fn every_bit_flipped_is_rejected_without_state_change() {
    let (_, _, mut a, mut b, mut rng) = established(7);
    // A message opening epoch 2 (carries the epoch open) and a steady-state one after the ack.
    let opening = a.seal(&text("opens epoch 2"), T0, &mut rng).unwrap();
    every_bit_flip_rejected(&mut b, &opening.envelope);
    b.open(&opening.envelope, T0).unwrap();
    let r = b.seal(&text("ack"), T0, &mut rng).unwrap();
    a.open(&r.envelope, T0).unwrap();
    let plain = b.seal(&text("steady"), T0, &mut rng).unwrap();
    every_bit_flip_rejected(&mut a, &plain.envelope);
    a.open(&plain.envelope, T0).unwrap();
}

#[test]
fn every_bit_flipped_first_contact_creates_no_session() {
    let mut rng = common::rng(8);
    let alice = Party::new(&mut rng, T0);
    let bob = Party::new(&mut rng, T0);
    let mut a = alice.initiate(&bob, T0, &mut rng);
    let first = a.seal(&text("hi"), T0, &mut rng).unwrap();
    for bit in 0..first.envelope.len() * 8 {
        let mut mangled = first.envelope.clone();
        mangled[bit / 8] ^= 1 << (bit % 8);
        assert!(
            Session::accept(bob.responder(), &mangled, T0, &mut rng).is_err(),
            "bit {bit} flipped was accepted"
        );
    }
    assert!(Session::accept(bob.responder(), &first.envelope, T0, &mut rng).is_ok());
}

#[test]
fn transplanted_header_is_rejected() {
    let (_, _, mut a, mut b, mut rng) = established(9);
    let m1 = a.seal(&text("one"), T0, &mut rng).unwrap();
    let m2 = a.seal(&text("two"), T0, &mut rng).unwrap();
    let e1 = Envelope::decode(&m1.envelope).unwrap();
    let mut e2 = Envelope::decode(&m2.envelope).unwrap();
    // m1's header on m2's ciphertext: selects m1's nonce, so the AEAD fails.
    e2.header = e1.header;
    assert_eq!(b.open(&e2.encode(), T0).unwrap_err(), OpenError::Rejected);
    // A different mailbox id (not a key selector) is caught by the echo inside the ciphertext.
    let mut e3 = Envelope::decode(&m2.envelope).unwrap();
    e3.header.mailbox.0[0] ^= 1;
    let before = snapshot(&b);
    assert_eq!(b.open(&e3.encode(), T0).unwrap_err(), OpenError::HeaderMismatch);
    assert_eq!(snapshot(&b), before);
    b.open(&m2.envelope, T0).unwrap();
}

#[test]
fn transplanted_epoch_open_is_rejected() {
    let (_, _, mut a, mut b, mut rng) = established(10);
    let e2 = a.seal(&text("epoch 2"), T0, &mut rng).unwrap();
    b.open(&e2.envelope, T0).unwrap();
    let r = b.seal(&text("epoch 3"), T0, &mut rng).unwrap();
    a.open(&r.envelope, T0).unwrap();
    let e4 = a.seal(&text("epoch 4"), T0, &mut rng).unwrap();
    let open2 = Envelope::decode(&e2.envelope).unwrap().open;
    let mut forged = Envelope::decode(&e4.envelope).unwrap();
    forged.open = open2;
    // Epoch 2's open on an epoch-4 message: the prologue binds the epoch number.
    assert_eq!(b.open(&forged.encode(), T0).unwrap_err(), OpenError::Rejected);
    // And an open from another session entirely.
    let (_, _, mut other_a, mut other_b, mut rng2) = established(11);
    other_b.seal(&text("x"), T0, &mut rng2).map(|m| other_a.open(&m.envelope, T0)).unwrap().unwrap();
    let foreign = other_a.seal(&text("other session"), T0, &mut rng2).unwrap();
    let mut forged = Envelope::decode(&e4.envelope).unwrap();
    forged.open = Envelope::decode(&foreign.envelope).unwrap().open;
    assert_eq!(b.open(&forged.encode(), T0).unwrap_err(), OpenError::Rejected);
    b.open(&e4.envelope, T0).unwrap();
}

#[test]
fn two_different_opens_for_one_epoch_are_refused() {
    let (_, _, a, mut b, mut rng) = established(12);
    let mut fork1 = restart(&a, T0);
    let mut fork2 = restart(&a, T0);
    let m1 = fork1.seal(&text("fork 1"), T0, &mut rng).unwrap();
    let m2 = fork2.seal(&text("fork 2"), T0, &mut rng).unwrap();
    b.open(&m1.envelope, T0).unwrap();
    assert_eq!(b.open(&m2.envelope, T0).unwrap_err(), OpenError::OpenMismatch);
}

#[test]
fn unknown_key_share_via_resigned_prekey_fails() {
    let mut rng = common::rng(13);
    let alice = Party::new(&mut rng, T0);
    let bob = Party::new(&mut rng, T0);
    // Eve re-signs Bob's prekey public key under her own identity and device certificate.
    let eve = IdentityKey::generate(&mut rng);
    let eve_static = X25519Secret::generate(&mut rng);
    let eve_cert = DeviceCert::issue(&eve, &eve_static.public(), T0);
    let stolen = bob.prekeys.current();
    let resigned = merpati_proto::identity::SignedPrekey::issue(
        &eve,
        &eve_cert.device_id(),
        stolen.id,
        &stolen.public,
        T0,
        stolen.expires_at,
    );
    let eve_bundle = Bundle::new(&eve, eve_cert, resigned, vec![PROTOCOL_VERSION]).unwrap();
    eve_bundle.verify(T0).expect("Eve's bundle verifies on its own");
    // Alice believes she writes to Eve; Eve forwards the envelope to Bob.
    let mut a =
        Session::initiate(&alice.cert, &alice.device_static, &eve_bundle, bob.inbox(), T0, &mut rng).unwrap();
    let m = a.seal(&text("for Eve"), T0, &mut rng).unwrap();
    assert_eq!(Session::accept(bob.responder(), &m.envelope, T0, &mut rng).unwrap_err(), OpenError::Rejected);
}

#[test]
fn weak_and_wrong_length_keys_are_refused() {
    assert_eq!(X25519Public::from_bytes([0; 32]), Err(KeyError::AllZero));
    let mut order4 = [0u8; 32];
    order4[0] = 1;
    assert_eq!(X25519Public::from_bytes(order4), Err(KeyError::SmallOrder));
    assert_eq!(X25519Public::from_slice(&[5; 31]), Err(KeyError::WrongLength { expected: 32, got: 31 }));
    assert_eq!(X25519Public::from_slice(&[5; 64]), Err(KeyError::WrongLength { expected: 32, got: 64 }));

    // A first contact whose handshake ephemeral is all zeros or of small order is refused.
    let mut rng = common::rng(14);
    let alice = Party::new(&mut rng, T0);
    let bob = Party::new(&mut rng, T0);
    let mut a = alice.initiate(&bob, T0, &mut rng);
    let first = a.seal(&text("hi"), T0, &mut rng).unwrap();
    for weak in [[0u8; 32], order4] {
        let mut e = Envelope::decode(&first.envelope).unwrap();
        let open = e.open.as_mut().unwrap();
        open[4..36].copy_from_slice(&weak); // the ephemeral follows the 4-byte prekey id
        assert_eq!(
            Session::accept(bob.responder(), &e.encode(), T0, &mut rng).unwrap_err(),
            OpenError::Rejected
        );
    }
}

#[test]
fn version_downgrade_is_refused() {
    let (_, bob, mut a, mut b, mut rng) = established(15);
    let m = a.seal(&text("v1"), T0, &mut rng).unwrap();
    for version in [0u8, 2, 255] {
        let mut bytes = m.envelope.clone();
        bytes[0] = version;
        assert!(matches!(
            b.open(&bytes, T0),
            Err(OpenError::Envelope(EnvelopeError::UnsupportedVersion { .. }))
        ));
    }
    // Changing the version list of a signed bundle breaks its signature.
    let mut downgraded = bob.bundle.clone();
    downgraded.versions.push(7);
    assert!(downgraded.verify(T0).is_err());
    b.open(&m.envelope, T0).unwrap();
}

#[test]
fn first_contact_to_a_different_version_list_fails() {
    // The prologue binds the hash of the recipient's signed version list: a sender that used a
    // different list (a downgrade by a man in the middle) cannot complete the handshake.
    let mut rng = common::rng(16);
    let alice = Party::new(&mut rng, T0);
    let bob = Party::new(&mut rng, T0);
    let mut altered = bob.bundle.clone();
    altered.versions = vec![PROTOCOL_VERSION, 2];
    let mut a =
        Session::initiate(&alice.cert, &alice.device_static, &altered, bob.inbox(), T0, &mut rng).unwrap();
    let m = a.seal(&text("hi"), T0, &mut rng).unwrap();
    assert_eq!(Session::accept(bob.responder(), &m.envelope, T0, &mut rng).unwrap_err(), OpenError::Rejected);
}

#[test]
fn reflected_envelope_is_refused() {
    let (_, _, mut a, _, mut rng) = established(17);
    let m = a.seal(&text("to bob"), T0, &mut rng).unwrap();
    assert!(matches!(a.open(&m.envelope, T0), Err(OpenError::UnexpectedEpoch { .. })));
}

#[test]
fn forward_secrecy_recorded_traffic_stays_sealed() {
    let (_, _, mut a, mut b, mut rng) = established(18);
    // A full sub-epoch of 64 messages plus one: the first sub-epoch's key is deleted once all 64
    // arrived, and the epoch moves on after B answers.
    let recorded: Vec<_> =
        (0..65).map(|i| a.seal(&text(&format!("secret {i}")), T0, &mut rng).unwrap()).collect();
    for m in &recorded {
        b.open(&m.envelope, T0).unwrap();
    }
    let r = b.seal(&text("reply"), T0, &mut rng).unwrap();
    a.open(&r.envelope, T0).unwrap();
    let next = a.seal(&text("epoch 4"), T0, &mut rng).unwrap();
    b.open(&next.envelope, T0).unwrap();
    // The device is stolen now: its whole persisted state is copied.
    let mut stolen = restart(&b, T0);
    for m in &recorded[..64] {
        let err = stolen.open(&m.envelope, T0).unwrap_err();
        assert!(matches!(err, OpenError::KeyUnavailable | OpenError::Replay), "{err:?}");
    }
    // No key left anywhere in the stolen state (retained sub-epoch keys and chain heads) opens
    // the recorded ciphertexts of the completed sub-epoch.
    let state = stolen.state();
    let keys: Vec<_> = state
        .recv
        .iter()
        .flat_map(|r| r.subkeys.iter().map(|k| k.key.clone()).chain([r.next_key.clone(), state.root.clone()]))
        .collect();
    let mut cipher = merpati_proto::noise::TransportCipher::new().unwrap();
    for m in &recorded[..64] {
        let e = Envelope::decode(&m.envelope).unwrap();
        for key in &keys {
            assert!(cipher.open(key, u64::from(e.header.index), &e.ciphertext).is_err());
        }
    }
}

#[test]
fn old_epoch_keys_expire_after_the_retention_age() {
    let (_, _, mut a, mut b, mut rng) = established(19);
    let held = a.seal(&text("held by a relay"), T0, &mut rng).unwrap();
    let later = T0.plus(merpati_proto::session::MAX_KEY_AGE + Timestamp::DAY);
    // The conversation moves on for a month; the held message is then delivered.
    let first = a.seal(&text("first"), T0, &mut rng).unwrap();
    b.open(&first.envelope, T0).unwrap();
    let r = b.seal(&text("r"), later, &mut rng).unwrap();
    a.open(&r.envelope, later).unwrap();
    let n = a.seal(&text("n"), later, &mut rng).unwrap();
    b.open(&n.envelope, later).unwrap();
    assert_eq!(b.open(&held.envelope, later).unwrap_err(), OpenError::KeyUnavailable);
}

#[test]
fn post_compromise_security_heals_after_one_round_trip() {
    let (_, _, mut a, mut b, mut rng) = established(20);
    // The attacker copies A's whole state.
    let mut stolen = restart(&a, T0);
    // While the compromise lasts, the copy reads B's messages of the current epoch.
    let during = b.seal(&text("during"), T0, &mut rng).unwrap();
    assert!(stolen.open(&during.envelope, T0).is_ok());
    a.open(&during.envelope, T0).unwrap();
    // One round trip with fresh randomness the attacker does not see: A opens epoch 2, B opens 3.
    let a2 = a.seal(&text("a2"), T0, &mut rng).unwrap();
    b.open(&a2.envelope, T0).unwrap();
    let b3 = b.seal(&text("after healing"), T0, &mut rng).unwrap();
    a.open(&b3.envelope, T0).unwrap();
    // B's epoch 3 targets A's new ratchet key, which the stolen copy never had.
    assert!(stolen.open(&b3.envelope, T0).is_err());
    // Nor can the attacker, from the stolen state, write anything B accepts in the new epochs.
    let mut attacker = restart(&stolen, T0);
    let forged = attacker.seal(&text("forged"), T0, &mut common::rng(999)).unwrap();
    assert!(b.open(&forged.envelope, T0).is_err());
}

#[test]
fn crash_between_decrypt_and_persist_loses_nothing() {
    let (_, _, mut a, b, mut rng) = established(21);
    let on_disk = snapshot(&b);
    let m = a.seal(&text("important"), T0, &mut rng).unwrap();
    let mut live = restart(&b, T0);
    live.open(&m.envelope, T0).unwrap();
    // Crash before the state and message were written: the relay still holds the envelope.
    drop(live);
    let mut recovered = Session::restore(serde_json::from_str(&on_disk).unwrap(), T0);
    let got = recovered.open(&m.envelope, T0).unwrap();
    assert_eq!(got.message_id, m.message_id);
    assert_eq!(recovered.open(&m.envelope, T0).unwrap_err(), OpenError::Replay);
}

#[test]
fn restart_never_reuses_a_key_and_nonce() {
    let (_, _, mut a, mut b, mut rng) = established(22);
    // Open epoch 2 first: an epoch open itself is always persisted before it leaves.
    let opener = a.seal(&text("opens epoch 2"), T0, &mut rng).unwrap();
    b.open(&opener.envelope, T0).unwrap();
    let persisted = a.state().clone();
    let before = a.seal(&text("before"), T0, &mut rng).unwrap();
    let sub_before = Envelope::decode(&before.envelope).unwrap().header.sub_epoch;
    // Restart from state persisted *before* the last seal: the last envelope already left.
    let mut restarted = Session::restore(persisted, T0);
    let after = restarted.seal(&text("after"), T0, &mut rng).unwrap();
    let h = Envelope::decode(&after.envelope).unwrap().header;
    assert!(h.sub_epoch > sub_before, "restart must move to a fresh sub-epoch");
    b.open(&before.envelope, T0).unwrap();
    b.open(&after.envelope, T0).unwrap();
}

/// The owner's group with `admin` made an admin and `member` added by them.
fn group_with(owner: &IdentityKey, admin: &IdentityKey, member: &IdentityKey) -> Log {
    let (group_id, genesis) = Entry::genesis(owner, "warga", [3; 16], T0).unwrap();
    let mut log = Log::new(genesis).unwrap();
    for (author, action) in [
        (owner, Action::Add { member: admin.public(), name: "admin".into() }),
        (owner, Action::SetRole { member: admin.public(), role: Role::Admin }),
        (admin, Action::Add { member: member.public(), name: "member".into() }),
    ] {
        let entry = next_entry(&log, group_id, author, action);
        assert!(matches!(log.add(entry, T0), Ok(Added::New(_))));
    }
    log
}

/// An entry by `author` citing the log's heads.
fn next_entry(log: &Log, group_id: GroupId, author: &IdentityKey, action: Action) -> Entry {
    let heads = log.heads();
    let n = log.entries().iter().filter(|e| heads.contains(&e.hash())).map(|e| e.n).max().unwrap() + 1;
    Entry::sign(author, group_id, n, heads, T0, action).unwrap()
}

fn keys(seed: u8) -> IdentityKey {
    IdentityKey::from_bytes(&[seed; 32])
}

#[test]
fn a_forged_group_change_is_refused_with_no_state_change() {
    let (owner, admin, member, stranger) = (keys(1), keys(2), keys(3), keys(4));
    let mut log = group_with(&owner, &admin, &member);
    let before = (log.state(), log.len());
    let mut forged = next_entry(&log, log.group_id(), &admin, Action::Remove { member: member.public() });
    forged.author = owner.public();
    assert!(matches!(log.add(forged, T0), Err(LogError::Entry(EntryError::BadSignature))));
    let mut swapped =
        next_entry(&log, log.group_id(), &admin, Action::Add { member: stranger.public(), name: "x".into() });
    swapped.action = Action::Remove { member: member.public() };
    assert!(log.add(swapped, T0).is_err());
    assert_eq!((log.state(), log.len()), before);
}

#[test]
fn a_non_admins_group_change_is_refused_with_no_state_change() {
    let (owner, admin, member, stranger) = (keys(1), keys(2), keys(3), keys(4));
    let mut log = group_with(&owner, &admin, &member);
    let before = (log.state(), log.len());
    for author in [&member, &stranger] {
        let add = next_entry(
            &log,
            log.group_id(),
            author,
            Action::Add { member: stranger.public(), name: "x".into() },
        );
        assert!(matches!(log.add(add, T0), Err(LogError::NotAllowed(_))));
    }
    let promote = next_entry(
        &log,
        log.group_id(),
        &admin,
        Action::SetRole { member: member.public(), role: Role::Admin },
    );
    assert!(matches!(log.add(promote, T0), Err(LogError::NotAllowed(_))));
    assert_eq!((log.state(), log.len()), before);
}

#[test]
fn a_replayed_group_change_changes_nothing() {
    let (owner, admin, member, _) = (keys(1), keys(2), keys(3), keys(4));
    let mut log = group_with(&owner, &admin, &member);
    let added = log.entries()[3].clone();
    let removal = next_entry(&log, log.group_id(), &admin, Action::Remove { member: member.public() });
    log.add(removal, T0).unwrap();
    let before = (log.state(), log.len());
    assert_eq!(log.add(added, T0), Ok(Added::Known));
    assert_eq!((log.state(), log.len()), before);
    assert!(!log.state().members.contains_key(&member.public()));
}

#[test]
fn a_removed_admin_cannot_backdate_a_group_change() {
    let (owner, admin, member, stranger) = (keys(1), keys(2), keys(3), keys(4));
    let mut log = group_with(&owner, &admin, &member);
    let before_removal = log.clone();
    let removal = next_entry(&log, log.group_id(), &owner, Action::Remove { member: admin.public() });
    log.add(removal, T0).unwrap();
    // Citing the log as it was before the removal: kept, but void.
    let backdated = next_entry(
        &before_removal,
        log.group_id(),
        &admin,
        Action::Add { member: stranger.public(), name: "x".into() },
    );
    log.add(backdated, T0).unwrap();
    assert!(!log.state().members.contains_key(&stranger.public()));
    assert_eq!(log.state().role(&admin.public()), None);
}
