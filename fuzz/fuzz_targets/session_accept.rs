//! Fuzzes `Session::accept`, the responder's side of a first contact, with Bob's fixed keys (see
//! the crate docs for the modes).
//!
//! Raw mode: the rest goes to `accept` at a fixed time; it must never panic, and anything it
//! accepts must be one of the first contacts Alice really sent.
//!
//! Edit mode: one of several first-contact envelopes from Alice (the first message, a second one,
//! one from a later sub-epoch after a restart, a fragment), under the edit script, at a time taken
//! from the payload. It must be accepted exactly when the edits left it unchanged and Bob's prekey
//! secret is still usable; the session must then be Alice's, carry the message she sealed, and
//! refuse the same envelope again as a replay without changing.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use merpati_fuzz::{Mode, T0, apply_edits, assert_verdict, parties, restart, rng, snapshot};
use merpati_proto::Timestamp;
use merpati_proto::fragment::{self, CONTENT_TEXT};
use merpati_proto::frame::{Body, Control};
use merpati_proto::identity::{PREKEY_GRACE, PREKEY_LIFETIME};
use merpati_proto::session::{OpenError, Role, Sealed, Session, SessionId};

/// The last millisecond Bob's prekey secret opens a first contact.
const PREKEY_USABLE_UNTIL: u64 = PREKEY_LIFETIME + PREKEY_GRACE;

struct FirstContact {
    sealed: Sealed,
    body: Body,
    session: SessionId,
}

/// First contacts from Alice to Bob, sealed once.
fn first_contacts() -> &'static [FirstContact] {
    static FIRST_CONTACTS: OnceLock<Vec<FirstContact>> = OnceLock::new();
    FIRST_CONTACTS.get_or_init(|| {
        let (alice, bob) = parties();
        let mut rng = rng();
        let mut session = alice.initiate(bob, T0, &mut rng);
        let fragment = fragment::split(CONTENT_TEXT, b"a fragmented hello", [9; 16]).expect("splitting");
        let bodies = [
            Body::Text("hello bob".into()),
            Body::Control(Control::NodeInfo { peer_id: vec![7; 38], addrs: vec![vec![4; 11]] }),
            Body::Text(String::new()),
            Body::Fragment(fragment.into_iter().next().expect("one fragment")),
        ];
        let mut out = Vec::new();
        for (i, body) in bodies.into_iter().enumerate() {
            let now = T0.plus(i as u64 * Timestamp::HOUR);
            if i == 2 {
                // A restart moves Alice to the next sub-epoch of epoch 0.
                session = restart(&session, now);
            }
            let sealed = session.seal(&body, now, &mut rng).expect("sealing a first contact");
            out.push(FirstContact { sealed, body, session: session.id() });
        }
        out
    })
}

fuzz_target!(|data: &[u8]| {
    let (alice, bob) = parties();
    match Mode::of(data) {
        Mode::Raw(bytes) => {
            if let Ok((session, incoming)) = Session::accept(bob.responder(), bytes, T0, &mut rng()) {
                let sent = first_contacts()
                    .iter()
                    .find(|fc| fc.sealed.envelope == bytes)
                    .expect("accepted a first contact Alice never sent");
                assert_eq!(incoming.message_id, sent.sealed.message_id);
                assert_eq!(session.id(), sent.session);
            }
        }
        Mode::Edit { payload, edits } => {
            let all = first_contacts();
            let sent = &all[usize::from(payload.first().copied().unwrap_or(0)) % all.len()];
            // Steps of 1/128 of the prekey secret's life: step 128 is its last usable millisecond.
            let step = u64::from(payload.get(1).copied().unwrap_or(0));
            let now = T0.plus(step * (PREKEY_USABLE_UNTIL / 128));
            let mut envelope = sent.sealed.envelope.clone();
            apply_edits(&mut envelope, edits);
            let unchanged = envelope == sent.sealed.envelope;
            let result = Session::accept(bob.responder(), &envelope, now, &mut rng());
            if unchanged && now > T0.plus(PREKEY_USABLE_UNTIL) {
                assert!(matches!(result, Err(OpenError::UnknownPrekey { .. })), "{result:?}");
                return;
            }
            assert_verdict(unchanged, result, |(mut session, incoming)| {
                assert_eq!(incoming.message_id, sent.sealed.message_id);
                assert_eq!(incoming.seq, sent.sealed.seq);
                assert_eq!(incoming.epoch, 0);
                assert_eq!(incoming.body, sent.body);
                assert_eq!(session.id(), sent.session);
                assert_eq!(session.peer(), &alice.cert);
                assert_eq!(session.state().role, Role::Responder);
                assert_eq!(session.state().latest_epoch, 0);
                let before = snapshot(&session);
                assert_eq!(session.open(&envelope, now).map(|_| ()), Err(OpenError::Replay));
                assert_eq!(snapshot(&session), before, "a refused replay changed the session");
            });
        }
    }
});
