//! Engine tests around relays: two users' engines over memory stores hand envelopes to each other,
//! either directly (the sending node is known) or as if fetched from a relay (it is not), and
//! delivery results are reported as the daemon would after depositing at relays.

use std::collections::HashSet;
use std::sync::Arc;

use libp2p::PeerId;
use libp2p::multiaddr::Multiaddr;
use merpati_proto::Timestamp;
use merpati_proto::envelope::Envelope;
use merpati_proto::frame::Control;
use merpati_proto::identity::{IdentityKey, PREKEY_GRACE, PREKEY_ROTATION};
use merpati_proto::keys::{SymmetricKey, X25519Secret};
use merpati_proto::session::{MAX_KEY_AGE, SUB_EPOCH_MAX_AGE};
use merpati_proto::wire::{Refusal, deliver};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

use super::relays::apply_control;
use super::{AttemptResult, Engine, EngineError, Me, RECEIPT_DEADLINE, SWEEP_DAYS};
use crate::store::{Contact, MemoryStore, Status, Store};

pub(super) const T0: Timestamp = Timestamp(1_795_219_200_000);

pub(super) fn me(seed: u64, name: &str) -> Me {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    Me {
        identity: IdentityKey::generate(&mut rng),
        device_static: X25519Secret::generate(&mut rng),
        inbox_secret: SymmetricKey::generate(&mut rng),
        name: Some(name.to_owned()),
        created_at: T0,
    }
}

pub(super) fn engine<S: Store>(store: S, seed: u64, name: &str) -> Engine<S> {
    Engine::start(store, me(seed, name), || vec![seed as u8; 68], T0, ChaCha20Rng::seed_from_u64(seed + 100))
        .unwrap()
}

/// A libp2p peer id, deterministic in `n`.
pub(super) fn peer(n: u8) -> PeerId {
    libp2p::identity::Keypair::ed25519_from_bytes([n; 32]).unwrap().public().to_peer_id()
}

pub(super) fn addr(text: &str) -> Vec<u8> {
    text.parse::<Multiaddr>().unwrap().to_vec()
}

/// The address of relay `n`, on host `host`.
fn relay_at(n: u8, host: u8) -> Vec<u8> {
    addr(&format!("/ip4/10.0.0.{host}/tcp/4001/p2p/{}", peer(n)))
}

pub(super) fn relay(n: u8) -> Vec<u8> {
    relay_at(n, n)
}

/// Hands every due envelope from `from` to `to`, one at a time in delivery order, as node `via`
/// or (`None`) through a relay; reports each answer back. Returns how many were handed over.
pub(super) fn pump<S: Store, T: Store>(
    from: &mut Engine<S>,
    via: Option<&[u8]>,
    to: &mut Engine<T>,
    now: Timestamp,
) -> usize {
    let mut handed = 0;
    while let Some(attempt) = from.due(now, None).unwrap().into_iter().next() {
        let received = to.receive(via, &attempt.envelope, now).unwrap();
        let result = match received.response.unwrap() {
            deliver::Response::Accepted => AttemptResult::Accepted,
            deliver::Response::Refused(r) => AttemptResult::Refused(r),
        };
        from.attempt_finished(&attempt.id, &result, now).unwrap();
        handed += 1;
    }
    handed
}

/// Alice and Bob, where Alice added Bob from his invite; Bob does not know Alice yet.
pub(super) fn one_way() -> (Engine<MemoryStore>, Engine<MemoryStore>) {
    let mut alice = engine(MemoryStore::new(), 1, "Alice");
    let bob = engine(MemoryStore::new(), 2, "Bob");
    let invite = bob.invite(peer(2).to_bytes(), vec![], T0).unwrap();
    alice.add_contact(&invite, "bob", T0).unwrap();
    (alice, bob)
}

/// Alice and Bob, who added each other from their invites (as "bob" and "alice").
pub(super) fn pair() -> (Engine<MemoryStore>, Engine<MemoryStore>) {
    let (alice, mut bob) = one_way();
    let invite = alice.invite(peer(1).to_bytes(), vec![], T0).unwrap();
    bob.add_contact(&invite, "alice", T0).unwrap();
    (alice, bob)
}

/// Accepts `engine`'s only contact request under `name`.
pub(super) fn accept<S: Store>(engine: &mut Engine<S>, name: &str, now: Timestamp) {
    let requests = engine.requests().unwrap();
    assert_eq!(requests.len(), 1, "{requests:?}");
    engine.accept_request(&requests[0].id, name, now).unwrap();
}

/// The name of `engine`'s only contact.
pub(super) fn only_contact<S: Store>(engine: &Engine<S>) -> Contact {
    let mut contacts = engine.store().contacts().unwrap();
    assert_eq!(contacts.len(), 1);
    contacts.remove(0)
}

#[test]
fn the_relay_list_is_checked_and_survives_a_restart() {
    let store = Arc::new(MemoryStore::new());
    let mut alice = engine(store.clone(), 1, "Alice");
    assert!(alice.relays().is_empty());
    assert!(alice.add_relay(&relay(1), T0).unwrap());
    assert!(!alice.add_relay(&relay(1), T0).unwrap(), "the same address again changes nothing");

    let circuit = addr(&format!("/ip4/10.0.0.9/tcp/1/p2p/{}/p2p-circuit/p2p/{}", peer(8), peer(9)));
    for bad in [
        b"not a multiaddr".to_vec(),
        addr("/ip4/10.0.0.9/tcp/4001"),
        circuit,
        addr(&format!("/p2p/{}", peer(9))),
    ] {
        let err = alice.add_relay(&bad, T0).unwrap_err();
        assert!(matches!(err, EngineError::InvalidRelay(_)), "{err}");
        assert!(err.to_string().starts_with("invalid relay address: "), "{err}");
    }
    for n in 2..=4 {
        assert!(alice.add_relay(&relay(n), T0).unwrap());
    }
    let err = alice.add_relay(&relay(5), T0).unwrap_err();
    assert!(matches!(err, EngineError::TooManyRelays { max: 4 }), "{err}");
    assert_eq!(err.to_string(), "you can have at most 4 relays; remove one first");
    // A relay that moved keeps its place in the list under its new address.
    assert!(alice.add_relay(&relay_at(1, 99), T0).unwrap());
    assert_eq!(alice.relays(), [relay_at(1, 99), relay(2), relay(3), relay(4)]);

    let err = alice.remove_relay(&peer(9).to_bytes(), T0).unwrap_err();
    assert!(matches!(err, EngineError::UnknownRelay(_)), "{err}");
    assert!(err.to_string().contains(&peer(9).to_string()), "{err}");
    alice.remove_relay(&peer(2).to_bytes(), T0).unwrap();
    let expected = vec![relay_at(1, 99), relay(3), relay(4)];
    assert_eq!(alice.relays(), expected);

    drop(alice);
    let alice = engine(store, 1, "Alice");
    assert_eq!(alice.relays(), expected);
    let invite = alice.invite(peer(1).to_bytes(), vec![], T0).unwrap();
    let invite = merpati_proto::invite::Invite::parse(&invite, T0).unwrap();
    assert_eq!(invite.relays, expected);
}

#[test]
fn relay_hints_reach_every_contact_with_a_session() {
    let (mut alice, mut bob) = pair();
    let carol = engine(MemoryStore::new(), 3, "Carol");
    alice.add_contact(&carol.invite(peer(3).to_bytes(), vec![], T0).unwrap(), "carol", T0).unwrap();
    alice.send_text("bob", "hello", T0).unwrap();
    pump(&mut alice, Some(&peer(1).to_bytes()), &mut bob, T0);
    pump(&mut bob, Some(&peer(2).to_bytes()), &mut alice, T0);
    assert_eq!(alice.store().outbox_len().unwrap(), 0);

    alice.add_relay(&relay(1), T0).unwrap();
    // Bob has a session; Carol has none yet and learns the relays from the next session.
    let outbox = alice.store().outbox().unwrap();
    assert_eq!(outbox.iter().map(|e| e.contact.as_str()).collect::<Vec<_>>(), ["bob"]);
    let shown = |e: &Engine<MemoryStore>| e.store().messages(None, 100).unwrap().len();
    let (alice_shown, bob_shown) = (shown(&alice), shown(&bob));
    assert_eq!(pump(&mut alice, Some(&peer(1).to_bytes()), &mut bob, T0), 1);
    assert_eq!(only_contact(&bob).relays, [relay(1)]);
    assert_eq!((shown(&alice), shown(&bob)), (alice_shown, bob_shown), "a control message is not shown");

    alice.add_relay(&relay(2), T0).unwrap();
    alice.remove_relay(&peer(1).to_bytes(), T0).unwrap();
    assert_eq!(pump(&mut alice, Some(&peer(1).to_bytes()), &mut bob, T0), 2);
    assert_eq!(only_contact(&bob).relays, [relay(2)]);
    alice.remove_relay(&peer(2).to_bytes(), T0).unwrap();
    pump(&mut alice, Some(&peer(1).to_bytes()), &mut bob, T0);
    assert!(only_contact(&bob).relays.is_empty());
}

#[test]
fn node_info_names_the_sender_of_a_first_contact_fetched_from_a_relay() {
    let (mut alice, mut bob) = one_way();
    let alice_addr = addr("/ip4/192.0.2.1/tcp/4001");
    alice.set_node_info(peer(1).to_bytes(), vec![alice_addr.clone()]);
    alice.add_relay(&relay(11), T0).unwrap();
    bob.set_node_info(peer(2).to_bytes(), vec![addr("/ip4/192.0.2.2/udp/4001/quic-v1")]);
    bob.add_relay(&relay(12), T0).unwrap();

    let sent = alice.send_text("bob", "hi, through a relay", T0).unwrap();
    // Node info and relay hints go first, then the text, then her name and her keys.
    assert_eq!(alice.store().outbox_len().unwrap(), 5);
    assert_eq!(pump(&mut alice, None, &mut bob, T0), 5);
    accept(&mut bob, "alice", T0);
    let alice_at_bob = only_contact(&bob);
    assert_eq!(alice_at_bob.peer_id, peer(1).to_bytes());
    assert_eq!(alice_at_bob.addrs, [alice_addr]);
    assert_eq!(alice_at_bob.relays, [relay(11)]);
    let shown = bob.store().messages(None, 10).unwrap();
    assert_eq!(shown.iter().map(|m| m.text.as_str()).collect::<Vec<_>>(), ["hi, through a relay"]);

    // Bob's first words in this session tell Alice where he is now, ahead of his receipt.
    let attempt = bob.due(T0, None).unwrap().remove(0);
    assert_eq!(attempt.peer_id, peer(1).to_bytes());
    assert_eq!(attempt.relays, [relay(11)]);
    assert_eq!(pump(&mut bob, Some(&peer(2).to_bytes()), &mut alice, T0), 3);
    let bob_at_alice = alice.store().contact("bob").unwrap().unwrap();
    assert_eq!(bob_at_alice.peer_id, peer(2).to_bytes());
    assert_eq!(bob_at_alice.relays, [relay(12)]);
    assert_eq!(alice.message(&sent.id).unwrap().status, Status::Delivered);

    // Without node info, a fetched first contact leaves the sender's node unknown, not the relay's.
    let (mut alice, mut bob) = one_way();
    alice.send_text("bob", "who am I?", T0).unwrap();
    pump(&mut alice, None, &mut bob, T0);
    accept(&mut bob, "alice", T0);
    assert!(only_contact(&bob).peer_id.is_empty());
    assert!(bob.due(T0, None).unwrap().iter().all(|a| a.peer_id.is_empty()));
}

#[test]
fn whoever_hands_over_a_first_contact_does_not_become_the_senders_node() {
    // A relay of Bob's (or anyone holding a copy) hands Alice's first contact over before
    // Alice's own node does: Bob must not take it for Alice's node, or it could swallow his
    // answers.
    let (mut alice, mut bob) = one_way();
    alice.set_node_info(peer(1).to_bytes(), vec![addr("/ip4/192.0.2.1/tcp/4001")]);
    alice.send_text("bob", "hello", T0).unwrap();
    let intruder = peer(66).to_bytes();
    pump(&mut alice, Some(&intruder), &mut bob, T0);
    accept(&mut bob, "alice", T0);
    assert_eq!(only_contact(&bob).peer_id, peer(1).to_bytes(), "the node Alice's own NodeInfo names");
    assert!(bob.due(T0, None).unwrap().iter().all(|a| a.peer_id == peer(1).to_bytes()));

    // Nor does it replace the node of a contact Bob added from an invite.
    let (mut alice, mut bob) = pair();
    alice.send_text("bob", "hello again", T0).unwrap();
    pump(&mut alice, Some(&intruder), &mut bob, T0);
    assert_eq!(bob.store().contact("alice").unwrap().unwrap().peer_id, peer(1).to_bytes());
}

#[test]
fn control_messages_with_bad_content_change_nothing() {
    let (alice, _) = pair();
    let mut contact = alice.store().contact("bob").unwrap().unwrap();
    contact.relays = vec![relay(1)];
    let before = contact.clone();
    let circuit = addr(&format!("/ip4/10.0.0.9/tcp/1/p2p/{}/p2p-circuit/p2p/{}", peer(8), peer(9)));
    assert!(!apply_control(&mut contact, Control::RelayHints(vec![b"junk".to_vec(), circuit])));
    assert!(!apply_control(
        &mut contact,
        Control::NodeInfo { peer_id: b"not a peer".to_vec(), addrs: vec![] }
    ));
    assert_eq!(contact, before);
    // Usable entries are kept, one per relay and at most four.
    let many = vec![b"junk".to_vec(), relay(2), relay_at(2, 50), relay(3), relay(4), relay(5), relay(6)];
    assert!(apply_control(&mut contact, Control::RelayHints(many)));
    assert_eq!(contact.relays, [relay(2), relay(3), relay(4), relay(5)]);
    // The same node with no addresses to tell keeps the ones known.
    contact.addrs = vec![addr("/ip4/192.0.2.7/tcp/1")];
    let node = contact.peer_id.clone();
    assert!(!apply_control(&mut contact, Control::NodeInfo { peer_id: node, addrs: vec![] }));
    assert_eq!(contact.addrs, [addr("/ip4/192.0.2.7/tcp/1")]);
}

#[test]
fn a_deposit_at_relays_shows_as_stored_until_the_receipt() {
    let mut alice = engine(MemoryStore::new(), 1, "Alice");
    let mut bob = engine(MemoryStore::new(), 2, "Bob");
    bob.add_relay(&relay(1), T0).unwrap();
    bob.add_relay(&relay(2), T0).unwrap();
    alice.add_contact(&bob.invite(peer(2).to_bytes(), vec![], T0).unwrap(), "bob", T0).unwrap();

    let sent = alice.send_text("bob", "for the mailbox", T0).unwrap();
    let attempt = alice.due(T0, None).unwrap().remove(0);
    assert_eq!(attempt.relays, [relay(1), relay(2)]);
    assert_eq!(attempt.mailbox, Envelope::decode(&attempt.envelope).unwrap().header.mailbox);
    assert_eq!(attempt.mailbox, bob.me().inbox());

    let deposited = AttemptResult::Deposited { accepted: 1, total: 2, refusals: vec![Refusal::RelayFull] };
    let stored = Status::Stored { accepted: 1, total: 2 };
    assert_eq!(alice.attempt_finished(&attempt.id, &deposited, T0).unwrap(), Some((stored, None)));
    assert_eq!(alice.message(&sent.id).unwrap().status, stored);
    // A relay holds it now; her name and keys, sealed after it, wait.
    assert_eq!(alice.store().outbox_len().unwrap(), 2);

    // Bob fetches it later, accepts Alice, and his receipt moves it on.
    assert!(bob.receive(None, &attempt.envelope, T0).unwrap().request.is_some());
    accept(&mut bob, "alice", T0);
    pump(&mut bob, Some(&peer(2).to_bytes()), &mut alice, T0);
    assert_eq!(alice.message(&sent.id).unwrap().status, Status::Delivered);
}

#[test]
fn refused_deposits_retry_with_a_reason_and_too_large_fails() {
    let (mut alice, _) = pair();
    let sent = alice.send_text("bob", "knock knock", T0).unwrap();
    let full = AttemptResult::Deposited {
        accepted: 0,
        total: 2,
        refusals: vec![Refusal::MailboxFull, Refusal::RateLimited { retry_after_ms: 3_600_000 }],
    };
    let (status, reason) = alice.attempt_finished(&sent.id, &full, T0).unwrap().unwrap();
    assert_eq!(status, Status::Queued);
    let reason = reason.unwrap();
    assert!(reason.contains("the recipient's mailbox is full"), "{reason}");
    let message = alice.message(&sent.id).unwrap();
    assert_eq!((message.status, message.reason.as_deref()), (Status::Queued, Some(reason.as_str())));
    // The rate limit outlasts the longest backoff.
    assert!(alice.due(T0.plus(30 * 60 * Timestamp::SECOND), None).unwrap().is_empty());
    let later = T0.plus(3_600_000 + Timestamp::SECOND);
    assert_eq!(alice.due(later, None).unwrap().len(), 1);
    // The same refusals again: nothing new to tell.
    assert_eq!(alice.attempt_finished(&sent.id, &full, later).unwrap(), None);
    // Nothing reachable at all says so.
    let (_, reason) = alice
        .attempt_finished(
            &sent.id,
            &AttemptResult::Deposited { accepted: 0, total: 2, refusals: vec![] },
            later,
        )
        .unwrap()
        .unwrap();
    assert!(reason.unwrap().contains("could be reached"));
    // Taken at last: stored, and the reason is gone.
    let one = AttemptResult::Deposited { accepted: 1, total: 2, refusals: vec![Refusal::MailboxFull] };
    alice.attempt_finished(&sent.id, &one, later).unwrap();
    let message = alice.message(&sent.id).unwrap();
    assert_eq!((message.status, message.reason), (Status::Stored { accepted: 1, total: 2 }, None));

    // Too large for one relay while the other was unreachable: maybe the other takes it later.
    let big = alice.send_text("bob", "big", T0).unwrap();
    let too_large = Refusal::TooLarge { max: 4096 };
    let partly = AttemptResult::Deposited { accepted: 0, total: 2, refusals: vec![too_large] };
    assert_eq!(alice.attempt_finished(&big.id, &partly, T0).unwrap().unwrap().0, Status::Queued);
    // Too large for every relay: retrying cannot help.
    let all = AttemptResult::Deposited { accepted: 0, total: 2, refusals: vec![too_large, too_large] };
    let (status, reason) = alice.attempt_finished(&big.id, &all, T0).unwrap().unwrap();
    assert_eq!(status, Status::Failed);
    assert!(reason.unwrap().contains("too large"));
    assert_eq!(alice.message(&big.id).unwrap().status, Status::Failed);
    // Only her name and keys, sealed after the first text, are left to deliver.
    assert_eq!(alice.store().outbox_len().unwrap(), 2);
}

#[test]
fn a_duplicate_is_shown_once_and_answered_as_stored() {
    let (mut alice, mut bob) = pair();
    alice.send_text("bob", "once", T0).unwrap();
    let attempt = alice.due(T0, None).unwrap().remove(0);
    // From two relays, then directly from Alice's node.
    let first = bob.receive(None, &attempt.envelope, T0).unwrap();
    assert!(first.message.is_some() && first.new_session);
    for via in [None, Some(&b"alice-node"[..])] {
        let again = bob.receive(via, &attempt.envelope, T0).unwrap();
        assert!(matches!(again.response, Some(deliver::Response::Accepted)));
        assert!(again.message.is_none() && !again.new_session);
    }
    alice.attempt_finished(&attempt.id, &AttemptResult::Accepted, T0).unwrap();
    pump(&mut bob, None, &mut alice, T0);

    // In the session proper: a whole sub-epoch (whose key goes once all 64 arrived), each
    // envelope handed over twice.
    for i in 0..64 {
        alice.send_text("bob", &format!("m{i}"), T0).unwrap();
    }
    let envelopes: Vec<Vec<u8>> = alice.store().outbox().unwrap().into_iter().map(|e| e.envelope).collect();
    let mut shown = 0;
    for round in 0..2 {
        for envelope in &envelopes {
            let received = bob.receive(None, envelope, T0).unwrap();
            assert!(matches!(received.response, Some(deliver::Response::Accepted)), "round {round}");
            shown += usize::from(received.message.is_some());
        }
    }
    assert_eq!(shown, 64);
    let name = only_contact(&bob).name;
    assert_eq!(bob.store().messages(Some(&name), 1000).unwrap().len(), 65);
}

#[test]
fn mailbox_keys_own_the_mailboxes_envelopes_are_addressed_to() {
    let (mut alice, mut bob) = pair();
    let opens = |keys: &[merpati_proto::mailbox::MailboxKey], mailbox| keys.iter().any(|k| k.id() == mailbox);
    let live = |engine: &mut Engine<MemoryStore>, now| engine.mailbox_keys(now).live;

    alice.send_text("bob", "to the inbox", T0).unwrap();
    let first = alice.due(T0, None).unwrap().remove(0);
    assert!(opens(&live(&mut bob, T0), first.mailbox), "first contact inbox");
    pump(&mut alice, None, &mut bob, T0);

    // Bob answers to a mailbox Alice announced in her first contact.
    bob.send_text(&only_contact(&bob).name, "to your mailbox", T0).unwrap();
    let reply = bob.due(T0, None).unwrap().remove(0);
    assert!(opens(&live(&mut alice, T0), reply.mailbox));
    assert!(alice.store().session_by_mailbox(&reply.mailbox).unwrap().is_some());
    pump(&mut bob, None, &mut alice, T0);

    // Alice's next epoch writes to a mailbox Bob announced in his.
    alice.send_text("bob", "session", T0).unwrap();
    let next = alice.due(T0, None).unwrap().remove(0);
    assert_ne!(next.mailbox, first.mailbox);
    assert!(opens(&live(&mut bob, T0), next.mailbox));
    assert!(bob.store().session_by_mailbox(&next.mailbox).unwrap().is_some());
    pump(&mut alice, None, &mut bob, T0);

    // After weeks of silence the sender uses the last announced mailbox, which Bob still fetches.
    let later = T0.plus(20 * Timestamp::DAY);
    alice.send_text("bob", "long time", later).unwrap();
    let late = alice.due(later, None).unwrap().remove(0);
    assert_ne!(late.mailbox, next.mailbox);
    let keys = bob.mailbox_keys(later);
    assert!(opens(&keys.live, late.mailbox), "the last announced mailbox");
    assert!(bob.receive(None, &late.envelope, later).unwrap().message.is_some());

    // Each mailbox once, in one of the two sets; and the keys kept for the next call are the
    // same keys.
    let all: Vec<merpati_proto::mailbox::MailboxId> =
        keys.live.iter().chain(&keys.old).map(|k| k.id()).collect();
    let mut distinct = all.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(distinct.len(), all.len());
    assert_eq!(bob.mailbox_keys(later), keys);
    assert_eq!(bob.mailbox_keys.len(), all.len(), "only the keys in use are kept");
}

#[test]
fn a_new_conversation_has_no_past_to_sweep() {
    let (mut alice, mut bob) = pair();
    alice.send_text("bob", "hello", T0).unwrap();
    pump(&mut alice, None, &mut bob, T0);
    // Bob's one session began today: the days it announced ahead, and nothing before it.
    let ahead = usize::from(merpati_proto::mailbox::DEFAULT_ANNOUNCE_DAYS) - 2;
    assert_eq!(bob.mailbox_keys(T0).old.len(), ahead);
    // A week on: the days since the day before it began (T0 − 1 to T0 + 5), and the five
    // announced days after tomorrow (T0 + 9 to T0 + 13).
    assert_eq!(bob.mailbox_keys(T0.plus(7 * Timestamp::DAY)).old.len(), 7 + 5);
    // Forty days on: its past within the relay's TTL, today − 31 to today − 2, but for the last
    // announced day (T0 + 13), which is live (the peer writes there after a long silence).
    let swept = usize::try_from(SWEEP_DAYS - 1).unwrap();
    assert_eq!(bob.mailbox_keys(T0.plus(40 * Timestamp::DAY)).old.len(), swept - 1);
}

#[test]
fn mail_left_while_away_is_in_the_old_mailboxes_for_a_relay_ttl() {
    let (mut alice, mut bob) = pair();
    alice.send_text("bob", "hello", T0).unwrap();
    pump(&mut alice, None, &mut bob, T0);
    bob.send_text(&only_contact(&bob).name, "hi", T0).unwrap();
    pump(&mut bob, None, &mut alice, T0);
    // Alice's receipt, then nothing is left to send.
    pump(&mut alice, None, &mut bob, T0);
    assert!(alice.due(T0, None).unwrap().is_empty());
    // Bob goes away; Alice writes on each of the next days, under each day's mailbox.
    let mut left = Vec::new();
    for day in 1..=5u64 {
        let at = T0.plus(day * Timestamp::DAY);
        alice.send_text("bob", &format!("day {day}"), at).unwrap();
        left.push((day, alice.due(at, None).unwrap().remove(0)));
        let id = left.last().unwrap().1.id;
        alice
            .attempt_finished(&id, &AttemptResult::Deposited { accepted: 1, total: 1, refusals: vec![] }, at)
            .unwrap();
    }
    let mailboxes: HashSet<_> = left.iter().map(|(_, attempt)| attempt.mailbox).collect();
    assert_eq!(mailboxes.len(), 5, "one mailbox per day");
    let opens = |keys: &[merpati_proto::mailbox::MailboxKey], mailbox| keys.iter().any(|k| k.id() == mailbox);
    // Before Bob left, he already fetched each of them (tomorrow's is live, the announced days
    // after it are swept ahead): a relay saw every one fetched before anyone wrote to it, so it
    // keeps their envelopes the full TTL.
    let before = bob.mailbox_keys(T0);
    for (day, attempt) in &left {
        let seen = opens(&before.live, attempt.mailbox) || opens(&before.old, attempt.mailbox);
        assert!(seen, "day {day}'s mailbox was not fetched before Bob left");
    }
    // Bob is back on day 5 + `away`: every day's mailbox is live or old until the relay TTL.
    for away in [0, 2, 3, 7, 25] {
        let back = T0.plus((5 + away) * Timestamp::DAY);
        let tokens = bob.mailbox_keys(back);
        for (day, attempt) in &left {
            let live = opens(&tokens.live, attempt.mailbox);
            let old = opens(&tokens.old, attempt.mailbox);
            assert!(live ^ old, "day {day}'s mailbox, back after {away} days: live {live}, old {old}");
            assert_eq!(live, 5 + away - day <= 1, "day {day}, away {away}: yesterday's and today's are live");
        }
    }
    // Past the relay TTL the oldest day is no longer looked at (the relay no longer has it).
    let tokens = bob.mailbox_keys(T0.plus((1 + SWEEP_DAYS + 1) * Timestamp::DAY));
    assert!(!opens(&tokens.old, left[0].1.mailbox));
    // And everything fetched opens.
    let back = T0.plus(12 * Timestamp::DAY);
    for (day, attempt) in &left {
        let received = bob.receive(None, &attempt.envelope, back).unwrap();
        assert_eq!(received.message.unwrap().text, format!("day {day}"));
    }
}

#[test]
fn a_node_left_running_for_months_keeps_fresh_prekeys_and_deletes_old_keys() {
    let (mut alice, mut bob) = pair();
    alice.send_text("bob", "hello", T0).unwrap();
    pump(&mut alice, None, &mut bob, T0);
    pump(&mut bob, None, &mut alice, T0);
    let first_prekey = bob.profile().prekeys.current().id;
    let mut now = T0;
    let mut rotations = 0;
    let mut current = first_prekey;
    // 90 days of hourly maintenance passes, and nothing else.
    for _ in 0..(90 * 24) {
        now = now.plus(Timestamp::HOUR);
        bob.maintain(now).unwrap();
        if bob.profile().prekeys.current().id != current {
            current = bob.profile().prekeys.current().id;
            rotations += 1;
        }
        // The published prekey is never older than a rotation period and a pass.
        let current = bob.profile().prekeys.current();
        assert!(now.since(current.created_at) <= PREKEY_ROTATION + Timestamp::HOUR);
        assert_eq!(bob.bundle().prekey.id, current.id, "the bundle follows the ring");
        // No replaced prekey is kept past its grace.
        for prekey in bob.profile().prekeys.prekeys() {
            assert!(now <= prekey.expires_at.plus(PREKEY_GRACE), "prekey {} kept too long", prekey.id);
        }
    }
    assert_eq!(rotations, 90 / 7, "one rotation a week");
    assert_ne!(bob.profile().prekeys.current().id, first_prekey);
    // Nothing in the session is older than the retention.
    let id = bob.store().contact("alice").unwrap().unwrap().session.unwrap();
    let state = bob.store().session(&id).unwrap().unwrap().state;
    for epoch in &state.recv {
        assert!(epoch.subkeys.iter().all(|k| now.since(k.derived_at) < MAX_KEY_AGE + SUB_EPOCH_MAX_AGE));
        assert!(epoch.superseded_at.is_none_or(|at| now.since(at) < MAX_KEY_AGE));
    }
    // A stranger's first contact with today's invite works, and the old session still does.
    let mut carol = engine(MemoryStore::new(), 3, "carol");
    let invite = bob.invite(peer(2).to_bytes(), vec![], now).unwrap();
    carol.add_contact(&invite, "bob", now).unwrap();
    carol.send_text("bob", "hi from carol", now).unwrap();
    let first = carol.due(now, None).unwrap().remove(0);
    assert!(bob.receive(None, &first.envelope, now).unwrap().request.is_some());
    accept(&mut bob, "carol", now);
    assert_eq!(bob.store().messages(Some("carol"), 10).unwrap()[0].text, "hi from carol");
    alice.send_text("bob", "still there?", now).unwrap();
    let late = alice.due(now, None).unwrap().remove(0);
    assert_eq!(bob.receive(None, &late.envelope, now).unwrap().message.unwrap().text, "still there?");
}

#[test]
fn an_invite_eleven_months_old_still_starts_a_conversation() {
    let mut bob = engine(MemoryStore::new(), 2, "Bob");
    let invite = bob.invite(peer(2).to_bytes(), vec![], T0).unwrap();
    // Alice adds Bob at once but writes only months later; Carol finds the invite months later.
    let mut alice = engine(MemoryStore::new(), 1, "Alice");
    alice.add_contact(&invite, "bob", T0).unwrap();
    let mut now = T0;
    for _ in 0..335 {
        now = now.plus(Timestamp::DAY);
        bob.maintain(now).unwrap();
    }
    let mut carol = engine(MemoryStore::new(), 3, "Carol");
    carol.add_contact(&invite, "bob", now).unwrap();
    for (who, writer) in [("alice", &mut alice), ("carol", &mut carol)] {
        writer.send_text("bob", &format!("{who} found your old invite"), now).unwrap();
        let first = writer.due(now, None).unwrap().remove(0);
        let received = bob.receive(None, &first.envelope, now).unwrap();
        // Strangers to Bob: held as requests, opened once he accepts.
        assert!(received.request.is_some() && received.message.is_none());
        accept(&mut bob, who, now);
        let shown = bob.store().messages(Some(who), 10).unwrap();
        assert_eq!(shown[0].text, format!("{who} found your old invite"));
    }
    // Past its life the invite is refused with the date it expired.
    let dead = T0.plus(merpati_proto::identity::LAST_RESORT_LIFETIME + 1);
    let mut dave = engine(MemoryStore::new(), 4, "Dave");
    let error = dave.add_contact(&invite, "bob", dead).unwrap_err().to_string();
    let expired_on = T0.plus(merpati_proto::identity::LAST_RESORT_LIFETIME).date();
    assert!(error.contains(&format!("expired on {expired_on}")), "{error}");
    // A contact added in time whose first message comes too late is told the same.
    let mut erin = engine(MemoryStore::new(), 5, "Erin");
    erin.add_contact(&invite, "bob", T0).unwrap();
    let error = erin.send_text("bob", "too late", dead).unwrap_err().to_string();
    assert!(error.contains(&format!("expired on {expired_on}")), "{error}");
}

#[test]
fn contacts_remember_when_they_were_last_heard_from() {
    let (mut alice, mut bob) = pair();
    assert_eq!(alice.store().contact("bob").unwrap().unwrap().last_heard, None);
    alice.send_text("bob", "hello", T0).unwrap();
    pump(&mut alice, None, &mut bob, T0);
    let name = only_contact(&bob).name;
    assert_eq!(bob.store().contact(&name).unwrap().unwrap().last_heard, Some(T0));
    // Bob's receipt reaches Alice an hour later.
    let later = T0.plus(Timestamp::HOUR);
    pump(&mut bob, None, &mut alice, later);
    assert_eq!(alice.store().contact("bob").unwrap().unwrap().last_heard, Some(later));
}

#[test]
fn a_message_left_at_relays_and_never_collected_expires_and_a_late_receipt_still_counts() {
    let (mut alice, mut bob) = pair();
    alice.send_text("bob", "hello", T0).unwrap();
    pump(&mut alice, None, &mut bob, T0);
    bob.send_text(&only_contact(&bob).name, "hi", T0).unwrap();
    pump(&mut bob, None, &mut alice, T0);
    pump(&mut alice, None, &mut bob, T0);
    // Bob goes away; two messages are left at his relay.
    let stored = AttemptResult::Deposited { accepted: 1, total: 1, refusals: vec![] };
    let mut left = Vec::new();
    for text in ["never collected", "collected late"] {
        let id = alice.send_text("bob", text, T0).unwrap().id;
        let attempt = alice.due(T0, None).unwrap().remove(0);
        alice.attempt_finished(&id, &stored, T0).unwrap();
        left.push(attempt);
    }
    assert_eq!(alice.message(&left[0].id).unwrap().status, Status::Stored { accepted: 1, total: 1 });
    // Within the relay TTL nothing happens.
    assert!(alice.maintain(T0.plus(30 * Timestamp::DAY)).unwrap().expired.is_empty());
    // Past it (and the half day for clocks), both are reported expired, with a reason.
    let late = T0.plus(RECEIPT_DEADLINE);
    let done = alice.maintain(late).unwrap();
    let mut expired: Vec<_> = done.expired.iter().map(|(id, _)| *id).collect();
    let mut expected = vec![left[0].id, left[1].id];
    expired.sort_unstable_by_key(|id| id.0);
    expected.sort_unstable_by_key(|id| id.0);
    assert_eq!(expired, expected);
    let message = alice.message(&left[0].id).unwrap();
    assert_eq!(message.status, Status::Failed);
    let reason = message.reason.unwrap();
    assert!(
        reason.starts_with("expired: bob did not collect it from their relay within 30 days"),
        "{reason}"
    );
    assert!(alice.maintain(late.plus(Timestamp::DAY)).unwrap().expired.is_empty(), "reported once");
    // The second was collected after all, and its receipt arrives late: it counts.
    bob.receive(None, &left[1].envelope, late).unwrap();
    pump(&mut bob, None, &mut alice, late);
    let message = alice.message(&left[1].id).unwrap();
    assert_eq!((message.status, message.reason), (Status::Delivered, None));
}

#[test]
fn a_message_collected_in_time_never_expires() {
    let (mut alice, mut bob) = pair();
    let id = alice.send_text("bob", "hello", T0).unwrap().id;
    let attempt = alice.due(T0, None).unwrap().remove(0);
    alice
        .attempt_finished(&id, &AttemptResult::Deposited { accepted: 1, total: 2, refusals: vec![] }, T0)
        .unwrap();
    let day5 = T0.plus(5 * Timestamp::DAY);
    bob.receive(None, &attempt.envelope, day5).unwrap();
    pump(&mut bob, None, &mut alice, day5);
    assert_eq!(alice.message(&id).unwrap().status, Status::Delivered);
    assert!(alice.maintain(T0.plus(RECEIPT_DEADLINE)).unwrap().expired.is_empty());
    assert!(
        alice.store().awaiting(T0.plus(RECEIPT_DEADLINE), 10).unwrap().is_empty(),
        "the deadline is gone"
    );
    // Nor does a message the contact's node took directly.
    let direct = alice.send_text("bob", "direct", day5).unwrap().id;
    alice.attempt_finished(&direct, &AttemptResult::Accepted, day5).unwrap();
    assert!(alice.store().awaiting(Timestamp(u64::MAX), 10).unwrap().is_empty());
}

/// A node that restarts and then only runs its maintenance passes keeps none of its sessions in
/// memory, still deletes their old keys, and moves no session to a new sub-epoch beyond what
/// the age of its keys asks: a contact who writes after weeks is read as before.
#[test]
fn maintenance_of_sessions_not_in_use_keeps_them_on_disk_only() {
    let mut alice = engine(MemoryStore::new(), 1, "Alice");
    let bob_store = Arc::new(MemoryStore::new());
    let mut bob = engine(bob_store.clone(), 2, "Bob");
    let invite = bob.invite(peer(2).to_bytes(), vec![], T0).unwrap();
    alice.add_contact(&invite, "bob", T0).unwrap();
    alice.send_text("bob", "hello", T0).unwrap();
    pump(&mut alice, None, &mut bob, T0);
    accept(&mut bob, "alice", T0);
    bob.send_text("alice", "hi", T0).unwrap();
    pump(&mut bob, None, &mut alice, T0);
    // Bob restarts.
    drop(bob);
    let mut bob = engine(bob_store.clone(), 2, "Bob");
    let id = only_contact(&bob).session.unwrap();
    let sub_epoch = |bob: &Engine<Arc<MemoryStore>>| {
        bob.store().session(&id).unwrap().unwrap().state.send.map(|s| (s.epoch, s.sub))
    };
    let before = sub_epoch(&bob);
    let mut now = T0;
    let mut written = 0;
    for _ in 0..(40 * 24) {
        now = now.plus(Timestamp::HOUR);
        written += bob.maintain(now).unwrap().sessions_written;
        bob.mailbox_keys(now);
        assert!(bob.sessions.is_empty(), "a session not in use was kept in memory");
    }
    // Bob's one sealed sub-epoch was stepped once it was a day old; on day 30 his new last-resort
    // prekey went to Alice, sealed in a fresh sub-epoch, itself stepped a day later; nothing more.
    let after = sub_epoch(&bob);
    assert_eq!(after.map(|(e, _)| e), before.map(|(e, _)| e));
    assert_eq!(after.map(|(_, s)| s), before.map(|(_, s)| s + 3));
    assert_eq!(bob.store().outbox_len().unwrap(), 1, "the keys wait for Alice");
    assert!(written >= 1, "old keys were never deleted");
    let state = bob.store().session(&id).unwrap().unwrap().state;
    for epoch in &state.recv {
        assert!(epoch.subkeys.iter().all(|k| now.since(k.derived_at) < MAX_KEY_AGE + SUB_EPOCH_MAX_AGE));
    }
    alice.send_text("bob", "still there?", now).unwrap();
    let mut texts = Vec::new();
    while let Some(attempt) = alice.due(now, Some("bob")).unwrap().into_iter().next() {
        let received = bob.receive(None, &attempt.envelope, now).unwrap();
        assert!(matches!(received.response, Some(deliver::Response::Accepted)));
        texts.extend(received.message.map(|m| m.text));
        alice.attempt_finished(&attempt.id, &AttemptResult::Accepted, now).unwrap();
    }
    assert_eq!(texts, ["still there?"]);
}
