//! Engine tests of contact requests and of what the user does with contacts: a stranger's first
//! contact is held, costs nothing until accepted, and opens on acceptance; rejecting, blocking,
//! renaming and removing leave nothing behind; requests expire as the clock moves.

use merpati_proto::Timestamp;
use merpati_proto::identity::{PREKEY_GRACE, PREKEY_ROTATION};
use merpati_proto::wire::{Refusal, deliver};

use super::tests::{T0, engine, one_way as pair, peer, pump};
use super::{AttemptResult, Engine, EngineError, MAX_REQUEST_ENVELOPES, MAX_REQUESTS, REQUEST_LIFETIME};
use crate::store::{MemoryStore, RequestId, Status, Store};

/// Bob's only request.
fn only_request(bob: &Engine<MemoryStore>) -> crate::store::ContactRequest {
    let mut requests = bob.requests().unwrap();
    assert_eq!(requests.len(), 1, "{requests:?}");
    requests.remove(0)
}

#[test]
fn a_strangers_first_contact_waits_as_a_request_and_opens_once_accepted() {
    let (mut alice, mut bob) = pair();
    let sent = alice.send_text("bob", "hello Bob, it is Sari from the market", T0).unwrap();
    let handed = pump(&mut alice, Some(&peer(1).to_bytes()), &mut bob, T0);
    assert_eq!(handed, 3, "the text, then her display name and her keys");

    // Held: no contact, no session, no message, nothing queued back.
    assert!(bob.store().contacts().unwrap().is_empty());
    assert!(bob.store().session_ids().unwrap().is_empty());
    assert!(bob.store().messages(None, 10).unwrap().is_empty());
    assert_eq!(bob.store().outbox_len().unwrap(), 0);
    let request = only_request(&bob);
    assert_eq!(request.suggested_name.as_deref(), Some("Alice"));
    assert_eq!(request.preview.as_deref(), Some("hello Bob, it is Sari from the market"));
    assert_eq!((request.envelopes.len(), request.dropped), (3, 0));
    // Alice's node got its answer (so it stops retrying), but no receipt.
    assert_eq!(alice.message(&sent.id).unwrap().status, Status::Sent);
    assert_eq!(alice.store().outbox_len().unwrap(), 0);

    // Accepted under Bob's own name for her, a day later: what she wrote opens now.
    let later = T0.plus(Timestamp::DAY);
    let accepted = bob.accept_request(&request.id, "sari", later).unwrap();
    assert_eq!((accepted.contact.name.as_str(), accepted.opened), ("sari", 1), "one text opened");
    assert!(bob.requests().unwrap().is_empty());
    let shown = bob.store().messages(Some("sari"), 10).unwrap();
    assert_eq!(shown.len(), 1);
    assert_eq!(bob.take_opened(), shown, "handed to the daemon to announce");
    assert!(bob.take_opened().is_empty());
    assert_eq!(shown[0].text, "hello Bob, it is Sari from the market");
    // Her keys came along: Bob could start a session with her himself, as with her invite.
    let sari = bob.store().contact("sari").unwrap().unwrap();
    assert_eq!(sari.bundle.as_ref(), Some(alice.bundle()));
    assert_eq!(sari.inbox, Some(alice.me().inbox()));
    assert!(sari.last_resort.is_some());
    pump(&mut bob, None, &mut alice, later);
    assert_eq!(alice.message(&sent.id).unwrap().status, Status::Delivered);
    // And the conversation goes on both ways.
    bob.send_text("sari", "welcome", later).unwrap();
    pump(&mut bob, None, &mut alice, later);
    let at_alice = alice.store().messages(Some("bob"), 10).unwrap();
    assert!(at_alice.iter().any(|m| m.text == "welcome"));

    // Unknown ids and taken names are refused and change nothing.
    let unknown = RequestId([9; 8]);
    assert!(matches!(bob.accept_request(&unknown, "x", later), Err(EngineError::UnknownRequest(_))));
    assert!(matches!(bob.reject_request(&unknown, later), Err(EngineError::UnknownRequest(_))));
}

#[test]
fn a_request_holds_each_envelope_once_and_only_so_many() {
    let (mut alice, mut bob) = pair();
    alice.send_text("bob", "first", T0).unwrap();
    let attempt = alice.due(T0, None).unwrap().remove(0);
    for _ in 0..3 {
        let received = bob.receive(None, &attempt.envelope, T0).unwrap();
        assert!(matches!(received.response, Some(deliver::Response::Accepted)));
    }
    assert_eq!(only_request(&bob).envelopes.len(), 1, "copies from several relays are held once");
    alice.attempt_finished(&attempt.id, &AttemptResult::Accepted, T0).unwrap();
    for i in 0..30 {
        alice.send_text("bob", &format!("more {i}"), T0).unwrap();
    }
    pump(&mut alice, None, &mut bob, T0);
    let request = only_request(&bob);
    assert_eq!(request.envelopes.len(), MAX_REQUEST_ENVELOPES);
    // The first text, her display name, her keys and 30 texts.
    assert_eq!(request.dropped as usize, 1 + 1 + 1 + 30 - MAX_REQUEST_ENVELOPES);
    assert_eq!(request.preview.as_deref(), Some("first"));
}

#[test]
fn a_full_queue_drops_the_oldest_request_and_counts_it() {
    let mut bob = engine(MemoryStore::new(), 2, "Bob");
    let invite = bob.invite(peer(2).to_bytes(), vec![], T0).unwrap();
    let mut first = None;
    for n in 0..=MAX_REQUESTS as u64 {
        let mut stranger = engine(MemoryStore::new(), 1000 + n, "Stranger");
        stranger.add_contact(&invite, "bob", T0).unwrap();
        stranger.send_text("bob", "hi", T0).unwrap();
        let at = T0.plus(n * Timestamp::SECOND);
        pump(&mut stranger, None, &mut bob, at);
        if n == 0 {
            first = Some(only_request(&bob).id);
        }
    }
    let requests = bob.requests().unwrap();
    assert_eq!(requests.len(), MAX_REQUESTS);
    assert_eq!(bob.store().requests_dropped().unwrap(), 1);
    assert_eq!(bob.store().dismissed_len().unwrap(), 1, "the dropped request's conversation");
    assert!(requests.iter().all(|r| Some(r.id) != first), "the oldest went");
    assert_eq!(requests[0].first_at, T0.plus(Timestamp::SECOND));
    assert_eq!(bob.store().outbox_len().unwrap(), 0, "no stranger costs a retry");
}

#[test]
fn a_flood_of_strangers_keeps_the_dismissed_conversations_bounded() {
    let mut bob = engine(MemoryStore::new(), 2, "Bob");
    bob.set_max_dismissed(3);
    let invite = bob.invite(peer(2).to_bytes(), vec![], T0).unwrap();
    // Every stranger past the queue's cap drops the oldest request and dismisses its
    // conversation; only the last three dismissals stay.
    for n in 0..MAX_REQUESTS as u64 + 10 {
        let mut stranger = engine(MemoryStore::new(), 3000 + n, "Stranger");
        stranger.add_contact(&invite, "bob", T0).unwrap();
        stranger.send_text("bob", "buy now", T0).unwrap();
        pump(&mut stranger, None, &mut bob, T0.plus(n * Timestamp::SECOND));
        assert!(bob.store().dismissed_len().unwrap() <= 3);
    }
    assert_eq!(bob.store().requests_dropped().unwrap(), 10);
    assert_eq!(bob.store().dismissed_len().unwrap(), 3);
    assert_eq!(bob.requests().unwrap().len(), MAX_REQUESTS);
}

#[test]
fn the_queue_stays_capped_across_restarts_and_a_dropped_conversation_stays_out() {
    let store = std::sync::Arc::new(MemoryStore::new());
    let mut bob = engine(store.clone(), 2, "Bob");
    let invite = bob.invite(peer(2).to_bytes(), vec![], T0).unwrap();
    let mut strangers = Vec::new();
    let mut write = |bob: &mut Engine<std::sync::Arc<MemoryStore>>, n: u64, text: &str| {
        if strangers.len() <= n as usize {
            let mut stranger = engine(MemoryStore::new(), 2000 + n, "Stranger");
            stranger.add_contact(&invite, "bob", T0).unwrap();
            strangers.push(stranger);
        }
        let stranger = &mut strangers[n as usize];
        stranger.send_text("bob", text, T0).unwrap();
        pump(stranger, None, bob, T0.plus(n * Timestamp::SECOND));
    };
    for n in 0..MAX_REQUESTS as u64 - 1 {
        write(&mut bob, n, "hi");
    }
    // A restart, then something touches the requests before the queue fills: the cap still
    // counts every request on disk.
    drop(bob);
    let mut bob = engine(store.clone(), 2, "Bob");
    let some = bob.requests().unwrap()[5].id;
    bob.reject_request(&some, T0).unwrap();
    for n in MAX_REQUESTS as u64 - 1..MAX_REQUESTS as u64 + 3 {
        write(&mut bob, n, "hi");
    }
    assert_eq!(bob.requests().unwrap().len(), MAX_REQUESTS);
    assert_eq!(bob.store().requests_dropped().unwrap(), 2);
    // The oldest, dropped, writes again in the same conversation: not a request.
    write(&mut bob, 0, "me again");
    assert_eq!(bob.requests().unwrap().len(), MAX_REQUESTS);
    assert!(bob.requests().unwrap().iter().all(|r| r.preview.as_deref() != Some("me again")));
}

/// Alice starts over with Bob's invite: a new conversation, with its first words again.
fn start_over(alice: &mut Engine<MemoryStore>, bob: &Engine<MemoryStore>) {
    alice.remove_contact("bob").unwrap();
    alice.add_contact(&bob.invite(peer(2).to_bytes(), vec![], T0).unwrap(), "bob", T0).unwrap();
}

#[test]
fn rejecting_forgets_and_blocking_drops_everything_after() {
    let (mut alice, mut bob) = pair();
    alice.send_text("bob", "one", T0).unwrap();
    pump(&mut alice, None, &mut bob, T0);
    let id = only_request(&bob).id;
    bob.reject_request(&id, T0).unwrap();
    assert!(bob.requests().unwrap().is_empty());
    assert!(bob.store().contacts().unwrap().is_empty());

    // More in the rejected conversation is dropped, not a request without her first words.
    alice.send_text("bob", "two", T0).unwrap();
    let attempt = alice.due(T0, None).unwrap().remove(0);
    let received = bob.receive(None, &attempt.envelope, T0).unwrap();
    assert!(matches!(received.response, Some(deliver::Response::Accepted)));
    assert!(received.request.is_none() && bob.requests().unwrap().is_empty());

    // Started anew from his invite, she is a request again, with her name.
    start_over(&mut alice, &bob);
    alice.send_text("bob", "three", T0).unwrap();
    pump(&mut alice, None, &mut bob, T0);
    assert_eq!(only_request(&bob).id, id);
    assert_eq!(only_request(&bob).suggested_name.as_deref(), Some("Alice"));
    let blocked = bob.block_request(&id, T0).unwrap();
    assert_eq!(blocked.label, "Alice");
    assert!(bob.requests().unwrap().is_empty());

    // Blocked: accepted by the transport, held nowhere, answered with nothing, in this
    // conversation and in a new one.
    for fresh in [false, true] {
        if fresh {
            start_over(&mut alice, &bob);
        }
        alice.send_text("bob", "four", T0).unwrap();
        let attempt = alice.due(T0, None).unwrap().remove(0);
        let received = bob.receive(None, &attempt.envelope, T0).unwrap();
        assert!(matches!(received.response, Some(deliver::Response::Accepted)));
        assert!(received.request.is_none() && received.message.is_none());
        alice.attempt_finished(&attempt.id, &AttemptResult::Accepted, T0).unwrap();
    }
    assert!(bob.requests().unwrap().is_empty());
    assert_eq!(bob.store().outbox_len().unwrap(), 0);

    // Her invite is refused while she is blocked; unblocked, a new conversation is a request.
    let invite = alice.invite(peer(1).to_bytes(), vec![], T0).unwrap();
    let err = bob.add_contact(&invite, "alice", T0).unwrap_err();
    assert!(matches!(err, EngineError::BlockedIdentity(_)), "{err}");
    assert!(err.to_string().contains(&format!("merpati contact unblock {id}")), "{err}");
    assert!(matches!(bob.unblock(&RequestId([1; 8])), Err(EngineError::NotBlocked(_))));
    bob.unblock(&id).unwrap();
    assert!(bob.store().blocked().unwrap().is_empty());
    start_over(&mut alice, &bob);
    alice.send_text("bob", "five", T0).unwrap();
    pump(&mut alice, None, &mut bob, T0);
    assert_eq!(only_request(&bob).preview.as_deref(), Some("five"));
}

#[test]
fn adding_the_sender_from_their_invite_opens_their_request() {
    let (mut alice, mut bob) = pair();
    let sent = alice.send_text("bob", "did you get my invite?", T0).unwrap();
    pump(&mut alice, None, &mut bob, T0);
    let invite = alice.invite(peer(1).to_bytes(), vec![], T0).unwrap();
    bob.add_contact(&invite, "alice", T0).unwrap();
    assert!(bob.requests().unwrap().is_empty());
    let shown = bob.store().messages(Some("alice"), 10).unwrap();
    assert_eq!(shown.iter().map(|m| m.text.as_str()).collect::<Vec<_>>(), ["did you get my invite?"]);
    pump(&mut bob, None, &mut alice, T0);
    assert_eq!(alice.message(&sent.id).unwrap().status, Status::Delivered);
}

#[test]
fn requests_expire_and_one_whose_prekey_is_gone_says_so() {
    let (mut alice, mut bob) = pair();
    alice.send_text("bob", "are you there?", T0).unwrap();
    pump(&mut alice, None, &mut bob, T0);
    let id = only_request(&bob).id;
    // Kept for its whole lifetime...
    assert_eq!(bob.expire_requests(T0.plus(REQUEST_LIFETIME)).unwrap(), 0);
    assert_eq!(only_request(&bob).id, id);
    // ...and not a day more: the daemon's maintenance pass deletes it.
    assert_eq!(bob.maintain(T0.plus(REQUEST_LIFETIME + Timestamp::DAY)).unwrap().requests_expired, 1);
    assert!(bob.requests().unwrap().is_empty());

    // What she sends later in that conversation is dropped with it.
    alice.send_text("bob", "still there?", T0).unwrap();
    pump(&mut alice, None, &mut bob, T0);
    assert!(bob.requests().unwrap().is_empty());

    // A request accepted after its prekey was deleted (a node that was off when the expiry
    // pass was due) is refused with a reason, and deleted.
    let (mut alice, mut bob) = pair();
    alice.send_text("bob", "again?", T0).unwrap();
    pump(&mut alice, None, &mut bob, T0);
    let id = only_request(&bob).id;
    let mut months = T0;
    while months < T0.plus(2 * (PREKEY_ROTATION + PREKEY_GRACE)) {
        months = months.plus(Timestamp::DAY);
        bob.maintain_prekeys(months).unwrap();
    }
    let err = bob.accept_request(&id, "alice", months).unwrap_err();
    assert!(matches!(err, EngineError::RequestExpired(_)), "{err}");
    assert!(err.to_string().contains("ask them to write again"), "{err}");
    assert!(bob.requests().unwrap().is_empty());
    assert!(bob.store().contacts().unwrap().is_empty(), "nothing half-made");
}

#[test]
fn a_first_contact_that_waited_long_at_a_relay_expires_with_its_prekey() {
    let (mut alice, mut bob) = pair();
    // Written on day 36 to the prekey of Bob's day-0 invite (it expires on day 37), it reaches
    // Bob on day 50: the prekey is kept until day 67, so the request is deleted then, not on
    // day 80.
    let written = T0.plus(36 * Timestamp::DAY);
    alice.send_text("bob", "from the relay", written).unwrap();
    let attempt = alice.due(written, None).unwrap().remove(0);
    let prekey = bob.bundle().prekey.clone();
    let day50 = T0.plus(50 * Timestamp::DAY);
    bob.receive(None, &attempt.envelope, day50).unwrap();
    let request = only_request(&bob);
    assert_eq!(request.expires_at, prekey.expires_at.plus(PREKEY_GRACE));
    assert!(request.expires_at < day50.plus(REQUEST_LIFETIME));
    assert_eq!(bob.maintain(request.expires_at.plus(Timestamp::HOUR)).unwrap().requests_expired, 1);
    assert!(bob.requests().unwrap().is_empty());
}

#[test]
fn a_renamed_contact_keeps_its_conversation_queue_and_session() {
    let (mut alice, mut bob) = pair();
    let invite = alice.invite(peer(1).to_bytes(), vec![], T0).unwrap();
    bob.add_contact(&invite, "alice", T0).unwrap();
    alice.send_text("bob", "hi", T0).unwrap();
    pump(&mut alice, None, &mut bob, T0);
    pump(&mut bob, None, &mut alice, T0);
    bob.send_text("alice", "queued while she is away", T0).unwrap();
    let queued = bob.store().outbox_len().unwrap();
    assert!(queued > 0);

    let renamed = bob.rename_contact("alice", "Alice Wijaya").unwrap();
    assert_eq!(renamed.name, "Alice Wijaya");
    assert!(bob.store().contact("alice").unwrap().is_none());
    assert_eq!(bob.store().messages(Some("Alice Wijaya"), 10).unwrap().len(), 2);
    assert!(bob.store().messages(Some("alice"), 10).unwrap().is_empty());
    assert_eq!(bob.store().outbox_len().unwrap(), queued);
    assert!(bob.store().outbox().unwrap().iter().all(|e| e.contact == "Alice Wijaya"));
    assert!(bob.due(T0, Some("Alice Wijaya")).unwrap().len() == 1, "the queue is due under the new name");
    // Her next message lands in the renamed conversation.
    pump(&mut bob, None, &mut alice, T0);
    alice.send_text("bob", "after the rename", T0).unwrap();
    pump(&mut alice, None, &mut bob, T0);
    let texts: Vec<String> =
        bob.store().messages(Some("Alice Wijaya"), 10).unwrap().into_iter().map(|m| m.text).collect();
    assert!(texts.contains(&"after the rename".to_owned()), "{texts:?}");

    // Refusals change nothing.
    let carol = engine(MemoryStore::new(), 7, "Carol").invite(peer(7).to_bytes(), vec![], T0).unwrap();
    bob.add_contact(&carol, "carol", T0).unwrap();
    assert!(matches!(bob.rename_contact("Alice Wijaya", "carol"), Err(EngineError::ContactExists(_))));
    assert!(matches!(bob.rename_contact("nobody", "x"), Err(EngineError::UnknownContact(_))));
    assert!(matches!(bob.rename_contact("carol", "a\nb"), Err(EngineError::InvalidName(_))));
    assert!(bob.store().contact("Alice Wijaya").unwrap().is_some());
}

#[test]
fn a_removed_contact_leaves_nothing_and_a_blocked_one_is_not_heard() {
    let (mut alice, mut bob) = pair();
    let invite = alice.invite(peer(1).to_bytes(), vec![], T0).unwrap();
    bob.add_contact(&invite, "alice", T0).unwrap();
    alice.send_text("bob", "hi", T0).unwrap();
    pump(&mut alice, None, &mut bob, T0);
    bob.send_text("alice", "never delivered", T0).unwrap();

    let removed = bob.remove_contact("alice").unwrap();
    assert_eq!(removed.name, "alice");
    assert!(bob.store().contacts().unwrap().is_empty());
    assert!(bob.store().session_ids().unwrap().is_empty(), "session keys deleted");
    assert!(bob.store().messages(None, 10).unwrap().is_empty());
    assert_eq!(bob.store().outbox_len().unwrap(), 0);
    assert!(bob.store().outbox_due(T0.plus(Timestamp::DAY)).unwrap().is_empty());
    assert!(matches!(bob.remove_contact("alice"), Err(EngineError::UnknownContact(_))));

    // Her session is gone at Bob's: what she sends in it is refused, not stored.
    alice.send_text("bob", "still there?", T0).unwrap();
    let attempt = alice.due(T0, None).unwrap().into_iter().next().unwrap();
    let received = bob.receive(None, &attempt.envelope, T0).unwrap();
    assert!(received.message.is_none());
    assert!(matches!(received.response, Some(deliver::Response::Refused(Refusal::UnknownMailbox))));

    // Blocking a contact removes them, drops what they send in their old session unanswered,
    // and drops their new first contacts too.
    let (mut carol, mut bob2) = pair();
    let invite = carol.invite(peer(1).to_bytes(), vec![], T0).unwrap();
    bob2.add_contact(&invite, "carol", T0).unwrap();
    carol.send_text("bob", "hi", T0).unwrap();
    pump(&mut carol, None, &mut bob2, T0);
    pump(&mut bob2, None, &mut carol, T0);
    let blocked = bob2.block_contact("carol", T0).unwrap();
    assert_eq!((blocked.label.as_str(), blocked.sessions.len()), ("carol", 1));
    assert!(bob2.store().session_ids().unwrap().is_empty(), "session keys deleted");
    carol.send_text("bob", "let me in", T0).unwrap();
    let attempt = carol.due(T0, None).unwrap().remove(0);
    let received = bob2.receive(None, &attempt.envelope, T0).unwrap();
    assert!(matches!(received.response, Some(deliver::Response::Accepted)), "not refused: unanswered");
    assert!(received.message.is_none());
    pump(&mut carol, None, &mut bob2, T0);
    // A new conversation from his invite is dropped too.
    carol.remove_contact("bob").unwrap();
    carol.add_contact(&bob2.invite(peer(2).to_bytes(), vec![], T0).unwrap(), "bob", T0).unwrap();
    carol.send_text("bob", "it is me, Carol", T0).unwrap();
    let first = carol.due(T0, None).unwrap().remove(0);
    let received = bob2.receive(None, &first.envelope, T0).unwrap();
    assert!(matches!(received.response, Some(deliver::Response::Accepted)));
    assert!(received.request.is_none() && received.message.is_none());
    assert!(bob2.requests().unwrap().is_empty());
    assert!(bob2.store().contacts().unwrap().is_empty());
    assert_eq!(bob2.store().outbox_len().unwrap(), 0);
    assert_eq!(bob2.store().blocked().unwrap().len(), 1);
}

/// A first message to someone who has not answered is short: a request keeps only a few
/// envelopes, so a long text would arrive cut short. It is refused, with nothing queued.
#[test]
fn a_long_text_waits_for_the_contacts_first_answer() {
    let (mut alice, mut bob) = pair();
    let long = "ä ".repeat(100 * 1024 / 3);
    match alice.send_text("bob", &long, T0) {
        Err(EngineError::TooLargeBeforeAnswer { len, max, .. }) => {
            assert_eq!((len, max), (long.len(), 15 * 1024))
        }
        other => panic!("expected TooLargeBeforeAnswer, got {other:?}"),
    }
    assert_eq!(alice.store().outbox_len().unwrap(), 0);
    // Once Bob accepted her and his receipt came back, the long text goes.
    alice.send_text("bob", "hello, it is Alice", T0).unwrap();
    pump(&mut alice, Some(&peer(1).to_bytes()), &mut bob, T0);
    let request = only_request(&bob);
    bob.accept_request(&request.id, "alice", T0).unwrap();
    pump(&mut bob, None, &mut alice, T0);
    let sent = alice.send_text("bob", &long, T0).unwrap();
    while pump(&mut alice, Some(&peer(1).to_bytes()), &mut bob, T0) > 0 {}
    let shown = bob.store().messages(Some("alice"), 10).unwrap();
    assert_eq!((shown.last().unwrap().id, shown.last().unwrap().text == long), (sent.id, true));
}
