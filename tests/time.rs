//! Weeks, not minutes, with real daemons whose clocks are moved (`MERPATI_CLOCK_OFFSET`): an invite
//! used eleven months after it was made, one used after its life, and a node that starts after
//! 90 days without use. (A recipient away for days and weeks is in `relay.rs`.)
#![allow(clippy::unwrap_used)] // test code: a failed step is a failed test

use std::time::Duration;

use merpati_e2e::{Node, text, wait_until};
use merpati_node::clock::Clock;
use merpati_node::store::{Keyring, SledStore, Store};
use merpati_proto::Timestamp;
use merpati_proto::identity::{PREKEY_GRACE, PREKEY_ROTATION, is_last_resort};
use merpati_proto::session::{MAX_KEY_AGE, MAX_RETAINED_EPOCHS, MAX_RETAINED_SUBKEYS, SUB_EPOCH_MAX_AGE};
use serde_json::Value;

const PATIENCE: Duration = Duration::from_secs(120);
const DAY_MS: i64 = Timestamp::DAY as i64;

fn delivered(node: &Node, id: &str) -> bool {
    let status = node.message_status(id);
    status["status"] == "delivered" || status["status"] == "read"
}

/// The texts `node` received.
fn received(node: &Node) -> Vec<String> {
    node.messages(None)
        .into_iter()
        .filter(|m| m["direction"] == "in")
        .map(|m| m["text"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn an_invite_eleven_months_old_still_makes_a_contact_and_an_older_one_says_when_it_expired() {
    let mut alice = Node::init("Alice");
    let mut bob = Node::init("Bob");
    bob.start();
    let invite = bob.invite();
    bob.stop();

    // Eleven months later both nodes run again: Alice finds the invite and writes.
    for node in [&mut alice, &mut bob] {
        node.set_clock_days(335);
        node.start();
    }
    alice.ok(&["contact", "add", &invite, "--name", "bob"]);
    let id = alice.send("bob", "found your invite from last year");
    // Bob does not hold Alice's invite: she reaches him as a request, which he accepts.
    bob.accept_request(&alice, "alice");
    wait_until("the first message from an eleven-month-old invite to be delivered", PATIENCE, || {
        delivered(&alice, &id)
    });
    assert_eq!(received(&bob), ["found your invite from last year"]);

    // Past its life (its last-resort prekey lives 400 days), the invite is refused with its date.
    let mut carol = Node::init("Carol");
    carol.set_clock_days(431);
    carol.start();
    let out = carol.cli(&["contact", "add", &invite, "--name", "bob"]);
    assert_eq!(out.status.code(), Some(6), "an expired invite is an invalid invite: {}", text(&out.stderr));
    let error = text(&out.stderr);
    assert!(error.contains("expired on 20"), "the error names the date: {error}");
    assert!(error.contains("ask for a new one"), "and says what to do: {error}");
    assert!(carol.messages(None).is_empty());
}

#[test]
fn a_node_started_after_ninety_days_unused_is_ready_and_holds_no_stale_key() {
    let mut alice = Node::init("Alice");
    let mut bob = Node::init("Bob");
    alice.start();
    bob.start();
    alice.add(&bob, "bob");
    bob.add(&alice, "alice");
    // A conversation, so both hold session keys.
    for (from, to) in [(&alice, "bob"), (&bob, "alice"), (&alice, "bob")] {
        let id = from.send(to, "before the quiet months");
        wait_until("a message before the quiet months", PATIENCE, || delivered(from, &id));
    }
    alice.stop();
    bob.stop();

    // Ninety days later Bob's node starts again: a fresh invite, and a stranger's first contact.
    bob.set_clock_days(90);
    bob.start();
    let mut carol = Node::init("Carol");
    carol.set_clock_days(90);
    carol.start();
    carol.add(&bob, "bob");
    let id = carol.send("bob", "hello after ninety days");
    bob.accept_request(&carol, "carol");
    wait_until("Carol's first contact to be delivered", PATIENCE, || delivered(&carol, &id));
    assert!(received(&bob).contains(&"hello after ninety days".to_owned()));
    let status: Value = serde_json::from_str(bob.ok(&["--json", "status"]).trim()).unwrap();
    assert!(status.is_object(), "bob's node answers: {status}");
    bob.stop();

    // What Bob's database holds, read as the daemon would (it is stopped, so the lock is free).
    let now = Clock::with_offset(90 * DAY_MS).now();
    let db = bob.home().join("db");
    let keyring =
        Keyring::open_or_create(SledStore::key_file(&db), &mut merpati_node::daemon::os_rng().unwrap())
            .unwrap();
    let store = SledStore::open(&db, keyring).unwrap();
    let profile = store.profile().unwrap().unwrap();
    let current = profile.prekeys.current();
    assert!(now.since(current.created_at) < PREKEY_ROTATION, "the prekey was rotated at start");
    for prekey in profile.prekeys.prekeys() {
        assert!(now <= prekey.expires_at.plus(PREKEY_GRACE), "prekey {:x} kept past its grace", prekey.id);
    }
    let last_resort = profile.prekeys.last_resort().unwrap();
    assert!(is_last_resort(last_resort.id) && now.since(last_resort.created_at) < PREKEY_ROTATION);
    let sessions = store.session_ids().unwrap();
    assert_eq!(sessions.len(), 2, "Alice's session and Carol's");
    for id in sessions {
        let state = store.session(&id).unwrap().unwrap().state;
        assert!(state.recv.len() <= MAX_RETAINED_EPOCHS);
        assert!(state.recv.iter().map(|r| r.subkeys.len()).sum::<usize>() <= MAX_RETAINED_SUBKEYS);
        for epoch in &state.recv {
            for key in &epoch.subkeys {
                assert!(
                    now.since(key.derived_at) < MAX_KEY_AGE + SUB_EPOCH_MAX_AGE,
                    "a receiving key {} days old is left in session {id:?}",
                    now.since(key.derived_at) / Timestamp::DAY
                );
            }
            assert!(epoch.superseded_at.is_none_or(|at| now.since(at) < MAX_KEY_AGE));
        }
        // A sending key that sealed anything is at most a day old.
        if let Some(send) = &state.send
            && send.next_index > 0
        {
            assert!(now.since(send.sub_started_at) < SUB_EPOCH_MAX_AGE, "a stale sending key in {id:?}");
        }
    }
}
