//! Identities and invites through the public API only, as the node uses them: make an identity,
//! a device and its prekeys, hand out an invite, read it on the other side, and the attacks an
//! invite must resist on the way (typos, alterations, re-signed prekeys, downgrades, expiry).

use data_encoding::BASE32_NOPAD;
use merpati_proto::Timestamp;
use merpati_proto::identity::{
    Bundle, DeviceCert, IdentityError, IdentityKey, LAST_RESORT_ID_BIT, LAST_RESORT_LIFETIME, PREKEY_GRACE,
    PREKEY_LIFETIME, PREKEY_ROTATION, PrekeyRing, SafetyNumber, SignedPrekey, fingerprint,
};
use merpati_proto::invite::{Invite, InviteError, PREFIX};
use merpati_proto::kdf::{self, label};
use merpati_proto::keys::X25519Secret;
use merpati_proto::mailbox::MailboxId;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

const T0: Timestamp = Timestamp(1_750_000_000_000);

struct Device {
    identity: IdentityKey,
    cert: DeviceCert,
    ring: PrekeyRing,
}

fn device(seed: u64) -> Device {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let identity = IdentityKey::generate(&mut rng);
    let cert = DeviceCert::issue(&identity, &X25519Secret::generate(&mut rng).public(), T0);
    let mut ring = PrekeyRing::new(&identity, &cert.device_id(), T0, &mut rng);
    // The first check makes the last-resort prekey invites carry.
    ring.rotate_if_due(&identity, &cert.device_id(), T0, &mut rng);
    Device { identity, cert, ring }
}

fn bundle(d: &Device, versions: Vec<u16>) -> Bundle {
    Bundle::new(&d.identity, d.cert.clone(), d.ring.current().clone(), versions).expect("bundle")
}

/// One relay of 40 bytes, an IPv4 and an IPv6 address, a 38-byte ed25519 peer id and a name.
fn invite(d: &Device, bundle: Bundle, now: Timestamp) -> Invite {
    Invite::new(
        &d.identity,
        bundle,
        d.ring.last_resort().expect("last-resort prekey").clone(),
        MailboxId([7; 16]),
        vec![(0..40).collect()],
        (100..138).collect(),
        vec![vec![4; 11], vec![0x29; 23]],
        Some("Alice".into()),
        now,
    )
    .expect("invite")
}

/// The text of `payload` with a valid checksum: what an attacker who altered an invite sends.
fn rechecksum(payload: &[u8]) -> String {
    let mut bytes = payload.to_vec();
    bytes.extend_from_slice(&kdf::hash_prefix::<4>(label::INVITE_CHECKSUM, &[payload]));
    format!("{PREFIX}{}", BASE32_NOPAD.encode(&bytes))
}

#[test]
fn invite_gets_bob_to_alice_and_both_see_the_same_safety_number() {
    let mut alice = device(1);
    let bob = device(2);
    let text = invite(&alice, bundle(&alice, vec![1]), T0).to_text();

    let received = Invite::parse(&text, T0.plus(Timestamp::DAY)).expect("parse");
    assert_eq!(received.identity(), &alice.identity.public());
    assert_eq!(received.name.as_deref(), Some("Alice"));
    assert_eq!(received.bundle.device_id(), alice.cert.device_id());
    let prekey = &received.bundle.prekey;
    let secret = alice.ring.secret_for(prekey.id, T0.plus(Timestamp::DAY)).expect("alice holds the prekey");
    assert_eq!(secret.public(), prekey.public);

    let on_bob = SafetyNumber::new(&bob.identity.public(), received.identity());
    let on_alice = SafetyNumber::new(&alice.identity.public(), &bob.identity.public());
    assert_eq!(on_bob.to_string(), on_alice.to_string());
    assert_ne!(fingerprint(received.identity()), fingerprint(&bob.identity.public()));

    // A week later Alice rotates; the invite she handed out keeps working until its prekey
    // expires, and the new prekey makes a new invite.
    let mut rng = ChaCha20Rng::seed_from_u64(3);
    let device_id = alice.cert.device_id();
    let week = T0.plus(PREKEY_ROTATION);
    assert!(alice.ring.rotate_if_due(&alice.identity, &device_id, week, &mut rng));
    let fresh = invite(&alice, bundle(&alice, vec![1]), week);
    assert_eq!(fresh.bundle.prekey.id, prekey.id + 1);
    assert_eq!(Invite::parse(&fresh.to_text(), week).as_ref(), Ok(&fresh));
    let last_day = prekey.expires_at;
    assert!(Invite::parse(&text, last_day).is_ok());
    assert!(alice.ring.secret_for(prekey.id, last_day).is_some());
    // After that a first contact uses the invite's last-resort prekey, which Alice keeps as long.
    let late = Invite::parse(&text, last_day.plus(1)).expect("the last-resort prekey carries on");
    let last_resort = late.bundle_at(last_day.plus(1)).expect("bundle").prekey;
    assert_ne!(last_resort.id, prekey.id);
    assert!(alice.ring.secret_for(last_resort.id, last_day.plus(1)).is_some());
    // The secret outlives the invite by the relay grace period, for first contacts still queued.
    let gone = last_day.plus(PREKEY_GRACE);
    assert!(alice.ring.secret_for(prekey.id, gone).is_some());
    assert_eq!(alice.ring.purge(gone), 0);
    assert_eq!(alice.ring.purge(gone.plus(1)), 1);
    assert!(alice.ring.secret_for(prekey.id, T0).is_none());
}

#[test]
fn every_single_character_substitution_is_rejected() {
    let alice = device(4);
    let text = invite(&alice, bundle(&alice, vec![1]), T0).to_text();
    let alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut tried = 0;
    for (i, original) in text.char_indices() {
        for c in alphabet.chars().chain([':', '0', '1']).filter(|c| *c != original) {
            let mut altered = text.clone();
            altered.replace_range(i..=i, c.encode_utf8(&mut [0; 4]));
            let result = Invite::parse(&altered, T0);
            if i >= PREFIX.len() && alphabet.contains(c) {
                assert_eq!(result, Err(InviteError::ChecksumMismatch), "{c} at {i}");
            } else {
                assert!(result.is_err(), "{c} at {i}");
            }
            tried += 1;
        }
    }
    assert!(tried > 30 * (text.len() - PREFIX.len()));
}

#[test]
fn every_rechecksummed_bit_flip_is_rejected() {
    let alice = device(5);
    let invite = invite(&alice, bundle(&alice, vec![1]), T0);
    let payload = invite.to_bytes();
    let mut bad_signature = 0;
    for bit in 0..payload.len() * 8 {
        let mut altered = payload.clone();
        altered[bit / 8] ^= 1 << (bit % 8);
        match Invite::parse(&rechecksum(&altered), T0) {
            Err(InviteError::BadSignature) => bad_signature += 1,
            // A flip in a length, a key or the name's UTF-8 can stop the decoding first.
            Err(InviteError::Malformed(_) | InviteError::Identity(_)) => {}
            other => panic!("bit {bit}: {other:?}"),
        }
    }
    // Every bit of the signature, the time, the name and the addresses decodes fine.
    assert!(bad_signature > 64 * 8 + 8 * 8 + 5 * 8, "{bad_signature}");
    // The unaltered payload with its checksum is, of course, accepted.
    assert_eq!(Invite::parse(&rechecksum(&payload), T0), Ok(invite));
}

#[test]
fn a_prekey_resigned_by_another_identity_is_refused() {
    let alice = device(6);
    let mallory = device(7);
    let honest = invite(&alice, bundle(&alice, vec![1]), T0);

    // Mallory signs her own prekey for Alice's device and swaps it in.
    let mut rng = ChaCha20Rng::seed_from_u64(8);
    let mallory_secret = X25519Secret::generate(&mut rng);
    let swapped = SignedPrekey::issue(
        &mallory.identity,
        &alice.cert.device_id(),
        1,
        &mallory_secret.public(),
        T0,
        T0.plus(PREKEY_LIFETIME),
    );
    let mut tampered = honest.bundle.clone();
    tampered.prekey = swapped.clone();
    assert_eq!(tampered.verify(T0), Err(IdentityError::BadSignature { what: "signed prekey" }));

    // In an invite, the invite signature already catches it.
    let mut altered = honest.clone();
    altered.bundle.prekey = swapped;
    assert_eq!(Invite::parse(&rechecksum(&altered.to_bytes()), T0), Err(InviteError::BadSignature));
    // And Mallory cannot sign Alice's certificate into a bundle of her own.
    assert_eq!(
        Bundle::new(&mallory.identity, alice.cert.clone(), mallory.ring.current().clone(), vec![1]),
        Err(IdentityError::WrongIdentity)
    );
}

#[test]
fn removing_a_version_breaks_the_signatures() {
    let alice = device(9);
    let honest = bundle(&alice, vec![1, 2]);
    assert_eq!(honest.verify(T0), Ok(()));
    let mut downgraded = honest.clone();
    downgraded.versions = vec![1];
    assert_eq!(downgraded.verify(T0), Err(IdentityError::BadSignature { what: "bundle" }));
    assert_ne!(downgraded.versions_hash(), honest.versions_hash());

    let mut altered = invite(&alice, honest, T0);
    altered.bundle = downgraded;
    assert_eq!(Invite::parse(&rechecksum(&altered.to_bytes()), T0), Err(InviteError::BadSignature));
}

#[test]
fn a_weak_identity_key_is_refused() {
    let alice = device(10);
    let mut payload = invite(&alice, bundle(&alice, vec![1]), T0).to_bytes();
    // The invite starts with the bundle, which starts with the certificate's identity key.
    let mut neutral = [0u8; 32];
    neutral[0] = 1;
    payload[..32].copy_from_slice(&neutral);
    assert_eq!(Invite::parse(&rechecksum(&payload), T0), Err(InviteError::Identity(IdentityError::WeakKey)));
}

#[test]
fn typical_invite_length() {
    let alice = device(11);
    let text = invite(&alice, bundle(&alice, vec![1]), T0).to_text();
    eprintln!("typical invite: {} characters", text.len());
    // 647 bytes, of which 320 are the five ed25519 signatures (certificate, prekey, bundle,
    // last-resort prekey, invite).
    assert_eq!(text.len(), 1051);
}

/// A fixed invite from fixed keys. Any change of the invite or bundle wire format, of a label or
/// of a signed field list changes this text, so such a change is a visible decision. The text of
/// the same invite without its last-resort prekey (the layout before they existed) was produced by
/// an independent Python implementation (hashlib.blake2s and the `cryptography` package's ed25519
/// and X25519), and still parses.
#[test]
fn golden_invite() {
    let identity = IdentityKey::from_bytes(&[1; 32]);
    let device_static = X25519Secret::from_bytes([2; 32]).public();
    let prekey_public = X25519Secret::from_bytes([3; 32]).public();
    let cert = DeviceCert::issue(&identity, &device_static, T0);
    let prekey =
        SignedPrekey::issue(&identity, &cert.device_id(), 1, &prekey_public, T0, T0.plus(PREKEY_LIFETIME));
    let bundle = Bundle::new(&identity, cert, prekey, vec![1]).expect("bundle");
    let d = Device {
        ring: PrekeyRing::new(&identity, &bundle.device_id(), T0, &mut ChaCha20Rng::seed_from_u64(0)),
        cert: bundle.cert.clone(),
        identity,
    };
    let last_resort_public = X25519Secret::from_bytes([4; 32]).public();
    let last_resort = SignedPrekey::issue(
        &d.identity,
        &d.cert.device_id(),
        LAST_RESORT_ID_BIT | 1,
        &last_resort_public,
        T0,
        T0.plus(LAST_RESORT_LIFETIME),
    );
    let invite = Invite::new(
        &d.identity,
        bundle,
        last_resort,
        MailboxId([7; 16]),
        vec![(0..40).collect()],
        (100..138).collect(),
        vec![vec![4; 11], vec![0x29; 23]],
        Some("Alice".into()),
        T0,
    )
    .expect("invite");
    assert_eq!(invite.to_text(), GOLDEN_INVITE);
    assert_eq!(Invite::parse(GOLDEN_INVITE, T0), Ok(invite.clone()));

    // The same invite as made before last-resort prekeys existed still parses, and differs only
    // in that field (and so in its signature).
    let before = Invite::parse(GOLDEN_INVITE_WITHOUT_LAST_RESORT, T0).expect("an invite of the first layout");
    assert_eq!(before.last_resort, None);
    assert_eq!(
        Invite { last_resort: invite.last_resort.clone(), signature: invite.signature, ..before },
        invite
    );
}

const GOLDEN_INVITE: &str = concat!(
    "MERPATI1:RKEOHXLUBHYZL7KS3MWTZOS5OLFGOCN7DWKBEG7TOSEADNAPN5OM5DJ22HGLMM7MPNYMC6AUUXDW5TICS",
    "2CQKDJUI5C3UBMHBZMH2WIAAAAZO5BA3QALQV4NG4PPRCCX7VYJRXQ4VIVARCU7LFI67F4Z7JO3D36EXJHYPJGAY3B",
    "YFGATDJBZQ2SCCKYYEDS3O7JLMJIDO73YVADDICDBMVLGB4AAAAABLX7N2O3L2R7W7IUO4FOZNHK3WDVFG52NJCF5V",
    "6O7DRXACJFT54RAAAABS52CBXAAAAAADGBSVQUABHL3HNYJ6LHHL5UFASUMZHZBNISFHIT4IMUK3GZK4BQC3ONGKYS",
    "GWMBIQKV5KAGBNB3JBLUMBFOUQAAVFQEDV6RLT2KWLI6PZIUDSUGQCAAB3AM5FQ6XR4ZLG5VOEEX2A7G2B6DHY6IPG",
    "FNULWZFZVSQ2AUVIC7F4IADFYTMYH6IVB4Q2DYSA52URDM4YBLFRXELYYZDLSCWJXC6CBYHA4DQOBYHA4DQOBYHA4D",
    "QOBYHAEUAAAICAMCAKBQHBAEQUCYMBUHA6EARCIJRIFIWC4MBSGQ3DQOR4HZAEERCGJBFEYTSMZDFMZTWQ2LKNNWG2",
    "3TPOBYXE43UOV3HO6DZPJ5XY7L6P6AIDAUDQSCYNB4IREBAWBAEAQCAIBAEAQCAIBAXFEUSSKJJFEUSSKJJFEUSSKJ",
    "JFEUSSKJJFEUSSBKBNRUWGZIAAAAZO5BA3QAIAAAAAGWADMRAT2DDKT5YKMRXWXPA6T5LCPD7ZP2DHJQ4AGJWSYL75",
    "TYQWAAAAGLXIIG4AAAAAAM7QAIJYADMJNWSKGVWQH6E6HI7ZDMMLWMTBJXKLBPY4EE67CMG3ZICCGIZLS7ELVSKQI2",
    "R4JDNME63XEPWOLQXCSANDPKRUMBEGMPSCV562EKAX3HYC54RFPERDQ6KRUD7DMJ3VCUQNJ5HXOGIW66MMCKNPDPML",
    "MIR2C6Q2DGARGWUSVWFIOFTDLUZTVZ67SSWOJFNUEAQSEN5NBMHRUFA3ATQHI",
);

const GOLDEN_INVITE_WITHOUT_LAST_RESORT: &str = concat!(
    "MERPATI1:RKEOHXLUBHYZL7KS3MWTZOS5OLFGOCN7DWKBEG7TOSEADNAPN5OM5DJ22HGLMM7MPNYMC6AUUXDW5TICS2C",
    "QKDJUI5C3UBMHBZMH2WIAAAAZO5BA3QALQV4NG4PPRCCX7VYJRXQ4VIVARCU7LFI67F4Z7JO3D36EXJHYPJGAY3BYFGA",
    "TDJBZQ2SCCKYYEDS3O7JLMJIDO73YVADDICDBMVLGB4AAAAABLX7N2O3L2R7W7IUO4FOZNHK3WDVFG52NJCF5V6O7DRX",
    "ACJFT54RAAAABS52CBXAAAAAADGBSVQUABHL3HNYJ6LHHL5UFASUMZHZBNISFHIT4IMUK3GZK4BQC3ONGKYSGWMBIQKV",
    "5KAGBNB3JBLUMBFOUQAAVFQEDV6RLT2KWLI6PZIUDSUGQCAAB3AM5FQ6XR4ZLG5VOEEX2A7G2B6DHY6IPGFNULWZFZVS",
    "Q2AUVIC7F4IADFYTMYH6IVB4Q2DYSA52URDM4YBLFRXELYYZDLSCWJXC6CBYHA4DQOBYHA4DQOBYHA4DQOBYHAEUAAAI",
    "CAMCAKBQHBAEQUCYMBUHA6EARCIJRIFIWC4MBSGQ3DQOR4HZAEERCGJBFEYTSMZDFMZTWQ2LKNNWG23TPOBYXE43UOV3",
    "HO6DZPJ5XY7L6P6AIDAUDQSCYNB4IREBAWBAEAQCAIBAEAQCAIBAXFEUSSKJJFEUSSKJJFEUSSKJJFEUSSKJJFEUSSBK",
    "BNRUWGZIAAAAZO5BA3QAHAQ4MRPATY26KRVM4REI5DZZPUWXIC5F32JSHXQTKG737NCEQVVL22UVV6ELBJU66OZCOR62",
    "LF7PD3YKO3YRI4TIHMVOLF2FMBBUXA4MYFYSO",
);
