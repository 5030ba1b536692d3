//! `Session::maintain` over simulated months: a quiet session deletes the keys it promised to
//! delete, without traffic, and keeps working afterwards.
#![allow(clippy::unwrap_used)] // test code: a failed step is a failed test

mod common;

use common::{T0, established, snapshot, text};
use merpati_proto::Timestamp;
use merpati_proto::session::{MAX_KEY_AGE, SUB_EPOCH_MAX_AGE};

#[test]
fn a_quiet_session_steps_its_sending_key_a_day_after_it_sealed() {
    let (_, _, mut a, mut b, mut rng) = established(41);
    let sent = a.seal(&text("then silence"), T0, &mut rng).unwrap();
    let key_before = a.state().send.as_ref().unwrap().sub;
    // Within the day nothing is due.
    assert!(!a.maintain(T0.plus(SUB_EPOCH_MAX_AGE - 1)));
    let later = T0.plus(SUB_EPOCH_MAX_AGE);
    assert!(a.maintain(later), "a sub-epoch that sealed and is a day old steps");
    assert_eq!(a.state().send.as_ref().unwrap().sub, key_before + 1);
    // A fresh sub-epoch that sealed nothing protects nothing: months pass, it is not stepped
    // (only old receiving keys go).
    let send_before = serde_json::to_string(&a.state().send).unwrap();
    a.maintain(later.plus(90 * Timestamp::DAY));
    assert_eq!(serde_json::to_string(&a.state().send).unwrap(), send_before);
    let unchanged = snapshot(&a);
    assert!(!a.maintain(later.plus(91 * Timestamp::DAY)), "a second pass finds nothing to do");
    assert_eq!(snapshot(&a), unchanged);
    // The peer still reads what was sealed before and after the step.
    b.open(&sent.envelope, later).unwrap();
    let after = a.seal(&text("back"), later, &mut rng).unwrap();
    assert_eq!(b.open(&after.envelope, later).unwrap().body, text("back"));
}

#[test]
fn a_quiet_session_deletes_receiving_keys_past_their_age() {
    let (_, _, mut a, mut b, mut rng) = established(42);
    // Alice writes, Bob answers (a new epoch of his), Alice answers: Bob's first receiving epoch
    // is superseded by Alice's next one.
    for turn in 0..3 {
        let (from, to) = if turn % 2 == 0 { (&mut a, &mut b) } else { (&mut b, &mut a) };
        let sealed = from.seal(&text("turn"), T0, &mut rng).unwrap();
        to.open(&sealed.envelope, T0).unwrap();
    }
    let epochs = b.state().recv.len();
    assert!(epochs >= 2, "bob keeps keys of {epochs} epochs");
    let keys =
        |s: &merpati_proto::session::Session| s.state().recv.iter().map(|r| r.subkeys.len()).sum::<usize>();
    let subkeys = keys(&b);
    b.maintain(T0.plus(MAX_KEY_AGE - 1));
    assert_eq!((b.state().recv.len(), keys(&b)), (epochs, subkeys), "nothing expires before its age");
    assert!(b.maintain(T0.plus(MAX_KEY_AGE + SUB_EPOCH_MAX_AGE)), "superseded keys go");
    assert!(b.state().recv.len() < epochs);
    // The conversation goes on.
    let late = T0.plus(MAX_KEY_AGE + SUB_EPOCH_MAX_AGE);
    let sealed = a.seal(&text("still here"), late, &mut rng).unwrap();
    assert_eq!(b.open(&sealed.envelope, late).unwrap().body, text("still here"));
}
