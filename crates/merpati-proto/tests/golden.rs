//! Golden vectors for NDR1: fixed keys and randomness in, exact bytes out.
//!
//! The transcript covers first contact, epochs 1 to 3, a sub-epoch rollover after 64 messages and
//! envelopes padded to several buckets. It is compared with the checked-in
//! `tests/golden/ndr1.txt`, so any change to the wire format or key schedule shows up as a diff
//! that has to be made on purpose: run with `MERPATI_BLESS=1` to rewrite the file.
#![allow(clippy::unwrap_used)] // test code: a failed step is a failed test

mod common;

use std::fmt::Write;

use common::{Party, T0, text};
use merpati_proto::envelope::Envelope;
use merpati_proto::frame::Body;
use merpati_proto::session::{Sealed, Session};

fn line(out: &mut String, name: &str, bytes: &[u8]) {
    writeln!(out, "{name} {}", hex::encode(bytes)).unwrap();
}

fn envelope_line(out: &mut String, name: &str, sealed: &Sealed) {
    let header = Envelope::decode(&sealed.envelope).unwrap().header;
    writeln!(
        out,
        "{name}.header epoch={} sub={} index={} len={}",
        header.epoch,
        header.sub_epoch,
        header.index,
        sealed.envelope.len()
    )
    .unwrap();
    line(out, name, &sealed.envelope);
}

fn transcript() -> String {
    let mut rng = common::rng(0x4e44_5231);
    let alice = Party::new(&mut rng, T0);
    let bob = Party::new(&mut rng, T0);
    let mut out = String::new();
    line(&mut out, "alice.identity", alice.cert.identity.as_bytes());
    line(&mut out, "bob.identity", bob.cert.identity.as_bytes());
    line(&mut out, "bob.prekey", bob.prekeys.current().public.as_bytes());

    let mut a = alice.initiate(&bob, T0, &mut rng);
    let first = a.seal(&text("first contact"), T0, &mut rng).unwrap();
    envelope_line(&mut out, "epoch0.first_contact", &first);
    let (mut b, got) = Session::accept(bob.responder(), &first.envelope, T0, &mut rng).unwrap();
    assert_eq!(got.body, text("first contact"));
    line(&mut out, "session_id", &a.id().0);
    line(&mut out, "root.after_epoch0", a.state().root.as_bytes());

    let e1 = b.seal(&text("epoch one"), T0, &mut rng).unwrap();
    envelope_line(&mut out, "epoch1", &e1);
    a.open(&e1.envelope, T0).unwrap();
    line(&mut out, "root.after_epoch1", a.state().root.as_bytes());

    let e2 = a.seal(&text("epoch two"), T0, &mut rng).unwrap();
    envelope_line(&mut out, "epoch2", &e2);
    b.open(&e2.envelope, T0).unwrap();
    line(&mut out, "root.after_epoch2", b.state().root.as_bytes());

    let e3 = b.seal(&text("epoch three"), T0, &mut rng).unwrap();
    envelope_line(&mut out, "epoch3", &e3);
    a.open(&e3.envelope, T0).unwrap();
    line(&mut out, "root.after_epoch3", a.state().root.as_bytes());
    assert_eq!(a.state().root, b.state().root);

    // B sends 65 messages in epoch 3: the 65th is the first of sub-epoch 1.
    let mut last = None;
    for i in 1..65 {
        let m = b.seal(&text(&format!("message {i}")), T0, &mut rng).unwrap();
        a.open(&m.envelope, T0).unwrap();
        last = Some(m);
    }
    envelope_line(&mut out, "epoch3.rollover", last.as_ref().unwrap());

    for (name, len) in [("pad.512", 1), ("pad.1k", 600), ("pad.2k", 1500), ("pad.16k", 12_000)] {
        let m = b.seal(&Body::Text("x".repeat(len)), T0, &mut rng).unwrap();
        a.open(&m.envelope, T0).unwrap();
        envelope_line(&mut out, name, &m);
    }
    out
}

#[test]
fn ndr1_golden_vectors() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/ndr1.txt");
    let fresh = transcript();
    assert_eq!(fresh, transcript(), "the transcript must be deterministic");
    if std::env::var_os("MERPATI_BLESS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &fresh).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; run with MERPATI_BLESS=1 to create it", path.display()));
    for (n, (want, got)) in expected.lines().zip(fresh.lines()).enumerate() {
        assert_eq!(want, got, "golden vector line {} differs (MERPATI_BLESS=1 rewrites the file)", n + 1);
    }
    assert_eq!(expected.lines().count(), fresh.lines().count());
}
