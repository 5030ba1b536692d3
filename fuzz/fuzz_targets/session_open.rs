//! Fuzzes `Session::open` on an established session pair, built once from fixed seeds (see the
//! crate docs for the modes).
//!
//! Each case is a receiver's persisted state and an envelope its peer sealed next: a second first
//! contact, an envelope opening a new epoch (also one that overtook the epoch's first message), a
//! later message of a known epoch, one from a later sub-epoch after the sender restarted, one that
//! arrives after a later message of its sub-epoch, and one after a day-long pause. Every iteration
//! restores the receiver from that state.
//!
//! Raw mode: the first byte picks the receiver, the rest goes to `open`. Nothing may panic, a
//! refusal must leave the session's state exactly as it was, and anything accepted must be an
//! envelope the peer sealed.
//!
//! Edit mode: the payload picks the case, whether to strip the epoch open first, and a delay. The
//! envelope under the edit script must be accepted exactly when the edits left it unchanged, and,
//! if the open was stripped, the receiver already knows the epoch (the open is not covered by the
//! AEAD; it is only needed to start an epoch) and it is not a first contact (which must carry it). Accepted: it must be the message that was sealed,
//! the same bytes again must be refused as a replay, and every refusal must leave the session's
//! state unchanged.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use merpati_fuzz::{Mode, T0, apply_edits, parties, restart, rng, snapshot, strip_open};
use merpati_proto::Timestamp;
use merpati_proto::envelope::{Envelope, Kind};
use merpati_proto::frame::{Body, MessageId, ReceiptKind};
use merpati_proto::session::{
    MAX_RETAINED_EPOCHS, MAX_RETAINED_SUBKEYS, MAX_SEQ_AHEAD, OpenError, Sealed, Session, SessionState,
};

/// One envelope and the state of the session about to open it.
struct Case {
    receiver: SessionState,
    sealed: Sealed,
    body: Body,
    /// The epoch of the envelope is known to the receiver already.
    epoch_known: bool,
    now: Timestamp,
}

/// Seals `body` and returns it with the envelope.
fn seal(
    session: &mut Session,
    body: Body,
    now: Timestamp,
    rng: &mut rand_chacha::ChaCha20Rng,
) -> (Sealed, Body) {
    let sealed = session.seal(&body, now, rng).expect("sealing");
    (sealed, body)
}

fn text(s: &str) -> Body {
    Body::Text(s.to_owned())
}

/// Plays a short conversation and keeps a case before each interesting delivery.
fn cases() -> &'static [Case] {
    static CASES: OnceLock<Vec<Case>> = OnceLock::new();
    CASES.get_or_init(|| {
        let (alice, bob) = parties();
        let mut rng = rng();
        let mut cases = Vec::new();
        let mut case = |receiver: &Session, (sealed, body): &(Sealed, Body), epoch_known, now| {
            cases.push(Case {
                receiver: receiver.state().clone(),
                sealed: sealed.clone(),
                body: body.clone(),
                epoch_known,
                now,
            });
        };
        let open = |session: &mut Session, (sealed, _): &(Sealed, Body), now| {
            session.open(&sealed.envelope, now).expect("opening");
        };
        let mut now = T0;
        let mut a = alice.initiate(bob, now, &mut rng);
        let m0 = seal(&mut a, text("m0"), now, &mut rng);
        let m1 = seal(&mut a, text("m1"), now, &mut rng);
        let (mut b, _) = Session::accept(bob.responder(), &m0.0.envelope, now, &mut rng).expect("accepting");
        case(&b, &m1, true, now);
        open(&mut b, &m1, now);

        now = now.plus(Timestamp::SECOND);
        let r0 = seal(&mut b, text("r0"), now, &mut rng);
        let r1 = seal(
            &mut b,
            Body::Receipt { kind: ReceiptKind::Read, ids: vec![m0.0.message_id, m1.0.message_id] },
            now,
            &mut rng,
        );
        case(&a, &r0, false, now);
        case(&a, &r1, false, now);
        open(&mut a, &r0, now);
        case(&a, &r1, true, now);
        open(&mut a, &r1, now);

        now = now.plus(Timestamp::SECOND);
        let m2 = seal(&mut a, text(&"m2".repeat(300)), now, &mut rng);
        case(&b, &m2, false, now);
        open(&mut b, &m2, now);

        now = now.plus(Timestamp::HOUR);
        a = restart(&a, now);
        let m3 = seal(&mut a, text("m3"), now, &mut rng);
        let m4 = seal(&mut a, text("m4"), now, &mut rng);
        case(&b, &m4, true, now);
        open(&mut b, &m4, now);
        case(&b, &m3, true, now);
        open(&mut b, &m3, now);

        now = now.plus(2 * Timestamp::DAY);
        let m5 = seal(&mut a, text("m5"), now, &mut rng);
        case(&b, &m5, true, now);
        cases
    })
}

/// The session restored from the case's state.
fn receiver(case: &Case, now: Timestamp) -> Session {
    Session::restore(case.receiver.clone(), now)
}

fn check_caps(session: &Session) {
    let state = session.state();
    assert!(state.recv.len() <= MAX_RETAINED_EPOCHS);
    assert!(state.recv.iter().map(|r| r.subkeys.len()).sum::<usize>() <= MAX_RETAINED_SUBKEYS);
    assert!(state.peer_seq.ahead.len() <= MAX_SEQ_AHEAD);
}

/// Whether `bytes` is an envelope some case's sender sealed, with or without its open.
fn sealed_by_peer(bytes: &[u8], id: MessageId) -> bool {
    cases().iter().any(|case| {
        case.sealed.message_id == id
            && (case.sealed.envelope == bytes || strip_open(&case.sealed.envelope).as_deref() == Some(bytes))
    })
}

fn valid_kind(envelope: &[u8]) -> Kind {
    Envelope::decode(envelope).expect("sealed envelopes decode").header.kind
}

fuzz_target!(|data: &[u8]| {
    let all = cases();
    match Mode::of(data) {
        Mode::Raw(input) => {
            let Some((&pick, bytes)) = input.split_first() else { return };
            let case = &all[usize::from(pick) % all.len()];
            let mut session = receiver(case, case.now);
            let before = snapshot(&session);
            match session.open(bytes, case.now) {
                Ok(incoming) => {
                    assert!(sealed_by_peer(bytes, incoming.message_id), "accepted an envelope nobody sealed");
                    check_caps(&session);
                }
                Err(_) => assert_eq!(snapshot(&session), before, "a refusal changed the session"),
            }
        }
        Mode::Edit { payload, edits } => {
            let pick = payload.first().copied().unwrap_or(0);
            let strip = payload.get(1).is_some_and(|flags| flags & 1 == 1);
            let delay = u64::from(payload.get(2).copied().unwrap_or(0)) * 60 * Timestamp::SECOND;
            let case = &all[usize::from(pick) % all.len()];
            let now = case.now.plus(delay);
            let valid = if strip {
                strip_open(&case.sealed.envelope).expect("every sealed envelope carries its open")
            } else {
                case.sealed.envelope.clone()
            };
            let mut envelope = valid.clone();
            apply_edits(&mut envelope, edits);
            // A first contact without its handshake does not even decode.
            let first_contact = valid_kind(&case.sealed.envelope) == Kind::FirstContact;
            let expect_ok = envelope == valid && (!strip || (case.epoch_known && !first_contact));

            let mut session = receiver(case, now);
            let before = snapshot(&session);
            match session.open(&envelope, now) {
                Ok(incoming) => {
                    assert!(expect_ok, "a modified envelope was accepted (stripped: {strip})");
                    assert_eq!(incoming.message_id, case.sealed.message_id);
                    assert_eq!(incoming.seq, case.sealed.seq);
                    assert_eq!(incoming.body, case.body);
                    check_caps(&session);
                    let accepted = snapshot(&session);
                    for copy in [&envelope, &case.sealed.envelope] {
                        assert_eq!(session.open(copy, now).map(|_| ()), Err(OpenError::Replay));
                    }
                    assert_eq!(snapshot(&session), accepted, "a refused replay changed the session");
                }
                Err(e) => {
                    assert!(!expect_ok, "an unmodified envelope was refused: {e:?}");
                    assert_eq!(snapshot(&session), before, "a refusal ({e:?}) changed the session");
                }
            }
        }
    }
});
