//! The engine end to end without a network: two users' engines over real stores hand envelopes
//! to each other directly, as their nodes would over `/merpati/deliver/1`.
#![allow(clippy::unwrap_used)] // test code: a failed step is a failed test

mod support;

use merpati_node::engine::{AttemptResult, Engine, EngineError, Me};
use merpati_node::store::{
    self, Change, Direction, MemoryStore, OutboxEntry, OutboxHead, SledStore, Status, Store,
};
use merpati_proto::Timestamp;
use merpati_proto::frame::MessageId;
use merpati_proto::identity::IdentityKey;
use merpati_proto::keys::{SymmetricKey, X25519Secret};
use merpati_proto::mailbox::MailboxId;
use merpati_proto::session::SessionId;
use merpati_proto::wire::{Refusal, deliver};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

const T0: Timestamp = Timestamp(1_795_219_200_000);

fn me(seed: u64, name: &str) -> Me {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    Me {
        identity: IdentityKey::generate(&mut rng),
        device_static: X25519Secret::generate(&mut rng),
        inbox_secret: SymmetricKey::generate(&mut rng),
        name: Some(name.to_owned()),
        created_at: T0,
    }
}

fn engine<S: Store>(store: S, seed: u64, name: &str) -> Engine<S> {
    Engine::start(store, me(seed, name), || vec![seed as u8; 68], T0, ChaCha20Rng::seed_from_u64(seed + 100))
        .unwrap()
}

/// Hands every due envelope from `from` to `to`, reporting each answer back; returns how many.
fn pump<S: Store, T: Store>(
    from: &mut Engine<S>,
    from_peer: &[u8],
    to: &mut Engine<T>,
    now: Timestamp,
) -> usize {
    let attempts = from.due(now, None).unwrap();
    for attempt in &attempts {
        let received = to.receive(Some(from_peer), &attempt.envelope, now).unwrap();
        let result = match received.response.unwrap() {
            deliver::Response::Accepted => AttemptResult::Accepted,
            deliver::Response::Refused(r) => AttemptResult::Refused(r),
        };
        from.attempt_finished(&attempt.id, &result, now).unwrap();
    }
    attempts.len()
}

/// Pumps both ways until nothing is due either way.
fn settle<S: Store, T: Store>(alice: &mut Engine<S>, bob: &mut Engine<T>, now: Timestamp) {
    while pump(alice, b"alice-node", bob, now) + pump(bob, b"bob-node", alice, now) > 0 {}
}

/// The disk store in `dir`, created or reopened.
fn open_sled(dir: &std::path::Path) -> SledStore {
    support::open_sled_store(dir, 7).unwrap()
}

/// Alice and Bob, who added each other from their invites (as "bob" and "alice").
fn pair() -> (Engine<MemoryStore>, Engine<MemoryStore>) {
    let mut alice = engine(MemoryStore::new(), 1, "Alice");
    let mut bob = engine(MemoryStore::new(), 2, "Bob");
    let invite = bob.invite(b"bob-node".to_vec(), vec![], T0).unwrap();
    alice.add_contact(&invite, "bob", T0).unwrap();
    bob.add_contact(&alice.invite(b"alice-node".to_vec(), vec![], T0).unwrap(), "alice", T0).unwrap();
    (alice, bob)
}

#[test]
fn messages_flow_both_ways_with_receipts() {
    let (mut alice, mut bob) = pair();
    let sent = alice.send_text("bob", "hello bob", T0).unwrap();
    assert_eq!(sent.status, Status::Queued);
    assert_eq!(pump(&mut alice, b"alice-node", &mut bob, T0), 1);
    assert_eq!(alice.message(&sent.id).unwrap().status, Status::Sent);

    // Her first contact started their session, and she got a receipt.
    let alice_name = "alice".to_owned();
    let got = bob.store().messages(Some(&alice_name), 10).unwrap();
    assert_eq!((got.len(), got[0].text.as_str(), got[0].direction), (1, "hello bob", Direction::In));
    assert_eq!(pump(&mut bob, b"bob-node", &mut alice, T0), 1);
    assert_eq!(alice.message(&sent.id).unwrap().status, Status::Delivered);

    let reply = bob.send_text(&alice_name, "hi alice", T0).unwrap();
    settle(&mut alice, &mut bob, T0);
    assert_eq!(bob.message(&reply.id).unwrap().status, Status::Delivered);
    let texts: Vec<_> =
        alice.store().messages(Some("bob"), 10).unwrap().into_iter().map(|m| m.text).collect();
    assert_eq!(texts, ["hello bob", "hi alice"]);
}

#[test]
fn duplicates_are_stored_once_and_acknowledged_again() {
    let (mut alice, mut bob) = pair();
    alice.send_text("bob", "once", T0).unwrap();
    let attempt = alice.due(T0, None).unwrap().remove(0);
    for _ in 0..3 {
        let received = bob.receive(Some(&b"alice-node"[..]), &attempt.envelope, T0).unwrap();
        assert!(matches!(received.response, Some(deliver::Response::Accepted)));
    }
    let name = bob.store().contacts().unwrap()[0].name.clone();
    assert_eq!(bob.store().messages(Some(&name), 10).unwrap().len(), 1);
}

#[test]
fn junk_and_unknown_mailboxes_are_refused_without_storing() {
    let (_, mut bob) = pair();
    let r = bob.receive(Some(&b"x"[..]), b"not an envelope", T0).unwrap();
    assert!(matches!(r.response, Some(deliver::Response::Refused(Refusal::Malformed))));
    let mut other_alice = engine(MemoryStore::new(), 9, "Eve");
    let mut other_bob = engine(MemoryStore::new(), 10, "Carol");
    let invite = other_bob.invite(b"carol".to_vec(), vec![], T0).unwrap();
    other_alice.add_contact(&invite, "carol", T0).unwrap();
    other_alice.send_text("carol", "not for bob", T0).unwrap();
    pump(&mut other_alice, b"eve", &mut other_bob, T0);
    let second = other_alice.send_text("carol", "still not for bob", T0).unwrap();
    let envelope = other_alice.store().outbox_entry(&second.id).unwrap().unwrap().envelope;
    let r = bob.receive(Some(&b"eve"[..]), &envelope, T0).unwrap();
    assert!(matches!(r.response, Some(deliver::Response::Refused(Refusal::UnknownMailbox))));
    assert!(bob.store().messages(None, 10).unwrap().is_empty());
}

#[test]
fn bad_requests_get_clear_errors() {
    let (mut alice, _) = pair();
    assert!(matches!(alice.send_text("nobody", "x", T0), Err(EngineError::UnknownContact(_))));
    let big = "x".repeat(merpati_proto::fragment::MAX_REASSEMBLED_LEN + 1);
    assert!(matches!(alice.send_text("bob", &big, T0), Err(EngineError::TooLarge { .. })));
    assert!(matches!(alice.add_contact("MERPATI1:AAAA", "x", T0), Err(EngineError::InvalidInvite(_))));
    let bob_again = engine(MemoryStore::new(), 2, "Bob").invite(b"bob-node".to_vec(), vec![], T0).unwrap();
    assert!(matches!(alice.add_contact(&bob_again, "bob2", T0), Err(EngineError::InvalidInvite(_))));
    let carol = engine(MemoryStore::new(), 3, "Carol").invite(b"c".to_vec(), vec![], T0).unwrap();
    assert!(matches!(alice.add_contact(&carol, "bob", T0), Err(EngineError::ContactExists(_))));
    assert!(matches!(alice.add_contact(&carol, "", T0), Err(EngineError::InvalidName(_))));
    let own = alice.invite(b"a".to_vec(), vec![], T0).unwrap();
    assert!(matches!(alice.add_contact(&own, "me", T0), Err(EngineError::InvalidInvite(_))));
}

#[test]
fn failed_attempts_back_off_and_expire() {
    let (mut alice, _) = pair();
    let sent = alice.send_text("bob", "are you there?", T0).unwrap();
    let unreachable = AttemptResult::Unreachable("offline".into());
    alice.attempt_finished(&sent.id, &unreachable, T0).unwrap();
    assert!(alice.due(T0, None).unwrap().is_empty(), "retried without waiting");
    assert_eq!(alice.due(T0.plus(5 * Timestamp::SECOND), None).unwrap().len(), 1);
    // The contact coming online makes its messages due at once.
    assert_eq!(alice.due(T0, Some("bob")).unwrap().len(), 1);
    let late = T0.plus(31 * Timestamp::DAY);
    let status = alice.attempt_finished(&sent.id, &unreachable, late).unwrap();
    assert_eq!(status.map(|s| s.0), Some(Status::Failed));
    assert_eq!(alice.message(&sent.id).unwrap().status, Status::Failed);
    // Only her name and keys, sealed after the text, are still queued.
    assert_eq!(alice.store().outbox_len().unwrap(), 2);
}

#[test]
fn contact_deliveries_go_out_in_order() {
    let (mut alice, mut bob) = pair();
    for i in 0..20 {
        alice.send_text("bob", &format!("m{i}"), T0).unwrap();
    }
    // One due entry per contact at a time, oldest first, so nothing arrives out of order.
    let mut order = Vec::new();
    while let Some(attempt) = alice.due(T0, None).unwrap().into_iter().next() {
        let received = bob.receive(Some(&b"alice-node"[..]), &attempt.envelope, T0).unwrap();
        order.extend(received.message.map(|m| m.text));
        alice.attempt_finished(&attempt.id, &AttemptResult::Accepted, T0).unwrap();
    }
    let expected: Vec<_> = (0..20).map(|i| format!("m{i}")).collect();
    assert_eq!(order, expected);
}

#[test]
fn restart_on_sled_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut bob = engine(MemoryStore::new(), 2, "Bob");
    let invite = bob.invite(b"bob-node".to_vec(), vec![], T0).unwrap();
    let sent = {
        let mut alice = engine(open_sled(dir.path()), 1, "Alice");
        alice.add_contact(&invite, "bob", T0).unwrap();
        bob.add_contact(&alice.invite(b"alice-node".to_vec(), vec![], T0).unwrap(), "alice", T0).unwrap();
        alice.send_text("bob", "survives a restart", T0).unwrap()
    };
    let mut alice = engine(open_sled(dir.path()), 1, "Alice");
    assert_eq!(pump(&mut alice, b"alice-node", &mut bob, T0), 1);
    let name = bob.store().contacts().unwrap()[0].name.clone();
    assert_eq!(bob.store().messages(Some(&name), 1).unwrap()[0].text, "survives a restart");
    assert_eq!(alice.message(&sent.id).unwrap().status, Status::Sent);
    // And the session continues after the restart in both directions.
    alice.send_text("bob", "again", T0).unwrap();
    settle(&mut alice, &mut bob, T0);
    assert_eq!(bob.store().messages(Some(&name), 10).unwrap().len(), 2);
    // Another identity's engine refuses this database.
    drop(alice);
    assert!(matches!(
        Engine::start(open_sled(dir.path()), me(5, "Mallory"), Vec::new, T0, ChaCha20Rng::seed_from_u64(1)),
        Err(EngineError::ForeignDatabase)
    ));
}

#[test]
fn a_receipt_that_overtakes_the_delivery_answer_is_not_undone() {
    let (mut alice, mut bob) = pair();
    let sent = alice.send_text("bob", "fast", T0).unwrap();
    let attempt = alice.due(T0, None).unwrap().remove(0);
    bob.receive(Some(&b"alice-node"[..]), &attempt.envelope, T0).unwrap();
    // Bob's receipt arrives before Alice's node has processed Bob's answer to the delivery.
    pump(&mut bob, b"bob-node", &mut alice, T0);
    assert_eq!(alice.message(&sent.id).unwrap().status, Status::Delivered);
    assert_eq!(alice.attempt_finished(&attempt.id, &AttemptResult::Accepted, T0).unwrap(), None);
    assert_eq!(alice.message(&sent.id).unwrap().status, Status::Delivered);
}

#[test]
fn a_withheld_message_shows_as_a_gap() {
    let (mut alice, mut bob) = pair();
    for text in ["one", "two", "three"] {
        alice.send_text("bob", text, T0).unwrap();
    }
    let attempts: Vec<_> = alice.store().outbox().unwrap();
    let mut sorted = attempts.clone();
    sorted.sort_by_key(|e| e.seq);
    // A relay holds back the second message.
    for entry in [&sorted[0], &sorted[2]] {
        bob.receive(Some(&b"alice-node"[..]), &entry.envelope, T0).unwrap();
    }
    let name = bob.store().contacts().unwrap()[0].name.clone();
    assert_eq!(bob.missing(&name, T0).unwrap(), vec![[1, 1]]);
    bob.receive(Some(&b"alice-node"[..]), &sorted[1].envelope, T0).unwrap();
    assert!(bob.missing(&name, T0).unwrap().is_empty());
}

#[test]
fn reading_a_conversation_sends_read_receipts_when_on() {
    let (mut alice, mut bob) = pair();
    let first = alice.send_text("bob", "read me", T0).unwrap();
    pump(&mut alice, b"alice-node", &mut bob, T0);
    pump(&mut bob, b"bob-node", &mut alice, T0);
    assert_eq!(alice.message(&first.id).unwrap().status, Status::Delivered);
    let name = bob.store().contacts().unwrap()[0].name.clone();
    assert_eq!(bob.mark_read(&name, T0).unwrap(), 1);
    assert_eq!(bob.mark_read(&name, T0).unwrap(), 0, "already read");
    pump(&mut bob, b"bob-node", &mut alice, T0);
    assert_eq!(alice.message(&first.id).unwrap().status, Status::Read);

    // With read receipts off, reading is private.
    bob.set_read_receipts(false);
    let second = alice.send_text("bob", "and me", T0).unwrap();
    settle(&mut alice, &mut bob, T0);
    assert_eq!(bob.mark_read(&name, T0).unwrap(), 1);
    assert_eq!(pump(&mut bob, b"bob-node", &mut alice, T0), 0);
    assert_eq!(alice.message(&second.id).unwrap().status, Status::Delivered);
}

/// Store reads of one delivery from Alice's outbox: `due`, then `attempt_finished` with `result`
/// (a failed attempt is followed by the `due` that finds it again after its backoff).
fn reads_of_one_delivery(alice: &mut Engine<MemoryStore>, result: &AttemptResult, now: Timestamp) -> u64 {
    let before = alice.store().reads();
    let attempt = alice.due(now, None).unwrap().remove(0);
    alice.attempt_finished(&attempt.id, result, now).unwrap();
    alice.store().reads() - before
}

/// A backlog costs the same store reads per delivery (and per send) whatever its size: `due`,
/// `attempt_finished` and `send_text` read indexes and the entry at hand, never the whole outbox.
/// Counted by the memory store (each point read and each entry a scan visits), not timed.
#[test]
fn store_reads_per_delivery_do_not_grow_with_the_outbox() {
    const BACKLOG: usize = 10_000;
    let (mut alice, _bob) = pair();
    let first = alice.send_text("bob", "first", T0).unwrap();
    let template = alice.store().outbox_entry(&first.id).unwrap().unwrap();
    // It and the controls that opened the session leave first.
    while let Some(attempt) = alice.due(T0, None).unwrap().into_iter().next() {
        alice.attempt_finished(&attempt.id, &AttemptResult::Accepted, T0).unwrap();
    }
    // The backlog goes straight into the store: the engine delivers envelopes without opening
    // them, and sealing 10 000 texts would only slow the test down.
    let entries: Vec<OutboxEntry> = (0..BACKLOG)
        .map(|i| {
            let mut id = [0xb0; 16];
            id[..8].copy_from_slice(&(i as u64).to_be_bytes());
            OutboxEntry { id: MessageId(id), seq: template.seq + 1 + i as u64, ..template.clone() }
        })
        .collect();
    for chunk in entries.chunks(1000) {
        alice.store().apply(&chunk.iter().cloned().map(Change::PutOutbox).collect::<Vec<_>>()).unwrap();
    }
    let later = T0.plus(Timestamp::HOUR);
    let unreachable = AttemptResult::Unreachable("offline".into());
    let costs = |alice: &mut Engine<MemoryStore>| {
        let send = {
            let before = alice.store().reads();
            // A moment later: it queues behind the backlog.
            alice.send_text("bob", "one more", T0.plus(1)).unwrap();
            alice.store().reads() - before
        };
        let failed = reads_of_one_delivery(alice, &unreachable, T0);
        let delivered = reads_of_one_delivery(alice, &AttemptResult::Accepted, later);
        (send, failed, delivered)
    };
    assert_eq!(alice.store().outbox_len().unwrap(), BACKLOG);
    let full = costs(&mut alice);

    // Drain nearly all of it, counting every read.
    let before = alice.store().reads();
    let drained = BACKLOG - 3;
    for _ in 0..drained {
        let attempt = alice.due(T0, None).unwrap().remove(0);
        alice.attempt_finished(&attempt.id, &AttemptResult::Accepted, T0).unwrap();
    }
    let per_delivery = (alice.store().reads() - before) as f64 / drained as f64;
    assert_eq!(alice.store().outbox_len().unwrap(), 3);
    let small = costs(&mut alice);
    eprintln!(
        "store reads with {BACKLOG} queued: {full:?}, with 3: {small:?} (send, failed attempt, delivery); \
         {per_delivery:.1} per delivery over the drain"
    );
    assert_eq!(full, small, "reads per send/attempt grew with the outbox (send, failed, delivered)");
    assert!(per_delivery <= small.2 as f64, "the drain read {per_delivery:.1} per delivery");
}

/// A memory store that can go wrong on demand: its heads index can name, ahead of everything, an
/// entry that does not exist (what a damaged database could hold), and it can refuse writes.
#[derive(Default)]
struct Rigged {
    store: MemoryStore,
    ghost_head: bool,
    refuse_writes: std::sync::atomic::AtomicBool,
}

impl Rigged {
    fn refuse_writes(&self, refuse: bool) {
        self.refuse_writes.store(refuse, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Store for Rigged {
    fn profile(&self) -> Result<Option<store::Profile>, store::StoreError> {
        self.store.profile()
    }
    fn contacts(&self) -> Result<Vec<store::Contact>, store::StoreError> {
        self.store.contacts()
    }
    fn contact(&self, name: &str) -> Result<Option<store::Contact>, store::StoreError> {
        self.store.contact(name)
    }
    fn session(&self, id: &SessionId) -> Result<Option<store::SessionRecord>, store::StoreError> {
        self.store.session(id)
    }
    fn session_by_mailbox(&self, mailbox: &MailboxId) -> Result<Option<SessionId>, store::StoreError> {
        self.store.session_by_mailbox(mailbox)
    }
    fn session_by_open_digest(&self, digest: &[u8; 32]) -> Result<Option<SessionId>, store::StoreError> {
        self.store.session_by_open_digest(digest)
    }
    fn message(&self, id: &MessageId) -> Result<Option<store::StoredMessage>, store::StoreError> {
        self.store.message(id)
    }
    fn messages(
        &self,
        contact: Option<&str>,
        limit: usize,
    ) -> Result<Vec<store::StoredMessage>, store::StoreError> {
        self.store.messages(contact, limit)
    }
    fn messages_before(
        &self,
        contact: Option<&str>,
        before: u64,
        limit: usize,
    ) -> Result<Vec<store::StoredMessage>, store::StoreError> {
        self.store.messages_before(contact, before, limit)
    }
    fn search(
        &self,
        contact: Option<&str>,
        needle: &str,
        limit: usize,
    ) -> Result<Vec<store::StoredMessage>, store::StoreError> {
        self.store.search(contact, needle, limit)
    }
    fn unread(&self, contact: &str) -> Result<Vec<MessageId>, store::StoreError> {
        self.store.unread(contact)
    }
    fn unread_count(&self, contact: &str) -> Result<usize, store::StoreError> {
        self.store.unread_count(contact)
    }
    fn swept_through(&self, relay: &[u8]) -> Result<Option<u64>, store::StoreError> {
        self.store.swept_through(relay)
    }
    fn fragments(
        &self,
        contact: &str,
        group: &[u8; 16],
    ) -> Result<Vec<store::StoredFragment>, store::StoreError> {
        self.store.fragments(contact, group)
    }
    fn fragment_groups(&self, contact: &str) -> Result<Vec<[u8; 16]>, store::StoreError> {
        self.store.fragment_groups(contact)
    }
    fn stale_fragments(&self, before: Timestamp) -> Result<Vec<(String, [u8; 16])>, store::StoreError> {
        self.store.stale_fragments(before)
    }
    fn part_of(&self, id: &MessageId) -> Result<Option<store::PartOf>, store::StoreError> {
        self.store.part_of(id)
    }
    fn file_info(&self, id: &MessageId) -> Result<Option<store::FileInfo>, store::StoreError> {
        self.store.file_info(id)
    }
    fn file_data(&self, id: &MessageId) -> Result<Option<zeroize::Zeroizing<Vec<u8>>>, store::StoreError> {
        self.store.file_data(id)
    }
    fn transfer(&self, id: &MessageId) -> Result<Option<store::Transfer>, store::StoreError> {
        self.store.transfer(id)
    }
    fn transfers(&self) -> Result<Vec<(MessageId, store::Transfer)>, store::StoreError> {
        self.store.transfers()
    }
    fn outbox(&self) -> Result<Vec<OutboxEntry>, store::StoreError> {
        self.store.outbox()
    }
    fn outbox_entry(&self, id: &MessageId) -> Result<Option<OutboxEntry>, store::StoreError> {
        self.store.outbox_entry(id)
    }
    fn outbox_head(&self, contact: &str) -> Result<Option<OutboxHead>, store::StoreError> {
        self.store.outbox_head(contact)
    }
    fn outbox_queue(&self, contact: &str, limit: usize) -> Result<Vec<OutboxHead>, store::StoreError> {
        self.store.outbox_queue(contact, limit)
    }
    fn outbox_due(&self, now: Timestamp) -> Result<Vec<OutboxHead>, store::StoreError> {
        let ghost =
            OutboxHead { id: MessageId([0x99; 16]), contact: "bob".into(), next_attempt_at: Timestamp(0) };
        let mut heads: Vec<OutboxHead> = self.ghost_head.then_some(ghost).into_iter().collect();
        heads.extend(self.store.outbox_due(now)?);
        Ok(heads)
    }
    fn outbox_len(&self) -> Result<usize, store::StoreError> {
        self.store.outbox_len()
    }
    fn awaiting(
        &self,
        until: Timestamp,
        limit: usize,
    ) -> Result<Vec<(Timestamp, MessageId)>, store::StoreError> {
        self.store.awaiting(until, limit)
    }
    fn announced(&self, session: &SessionId) -> Result<Vec<u64>, store::StoreError> {
        self.store.announced(session)
    }
    fn relays(&self) -> Result<Vec<Vec<u8>>, store::StoreError> {
        self.store.relays()
    }
    fn session_ids(&self) -> Result<Vec<SessionId>, store::StoreError> {
        self.store.session_ids()
    }
    fn requests(&self) -> Result<Vec<store::ContactRequest>, store::StoreError> {
        self.store.requests()
    }
    fn request(&self, id: &store::RequestId) -> Result<Option<store::ContactRequest>, store::StoreError> {
        self.store.request(id)
    }
    fn requests_dropped(&self) -> Result<u64, store::StoreError> {
        self.store.requests_dropped()
    }
    fn group(&self, id: &[u8; 16]) -> Result<Option<store::GroupRecord>, store::StoreError> {
        self.store.group(id)
    }
    fn groups(&self) -> Result<Vec<store::GroupRecord>, store::StoreError> {
        self.store.groups()
    }
    fn group_message(&self, id: &MessageId) -> Result<Option<store::GroupMessageInfo>, store::StoreError> {
        self.store.group_message(id)
    }
    fn group_copy(&self, copy: &MessageId) -> Result<Option<MessageId>, store::StoreError> {
        self.store.group_copy(copy)
    }
    fn blocked(&self) -> Result<Vec<store::Blocked>, store::StoreError> {
        self.store.blocked()
    }
    fn is_blocked(
        &self,
        identity: &merpati_proto::identity::IdentityPublic,
    ) -> Result<bool, store::StoreError> {
        self.store.is_blocked(identity)
    }
    fn is_dismissed(&self, digest: &[u8; 32]) -> Result<bool, store::StoreError> {
        self.store.is_dismissed(digest)
    }
    fn dismissed_len(&self) -> Result<usize, store::StoreError> {
        self.store.dismissed_len()
    }
    fn apply(&self, changes: &[Change]) -> Result<(), store::StoreError> {
        if self.refuse_writes.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(store::StoreError::Failed { reason: "the disk is full".into() });
        }
        self.store.apply(changes)
    }
}

#[test]
fn an_index_entry_pointing_at_nothing_neither_stops_nor_doubles_a_queue() {
    let mut alice = engine(Rigged { ghost_head: true, ..Rigged::default() }, 1, "Alice");
    let mut bob = engine(MemoryStore::new(), 2, "Bob");
    let invite = bob.invite(b"bob-node".to_vec(), vec![], T0).unwrap();
    alice.add_contact(&invite, "bob", T0).unwrap();
    bob.add_contact(&alice.invite(b"alice-node".to_vec(), vec![], T0).unwrap(), "alice", T0).unwrap();
    assert!(alice.due(T0, None).unwrap().is_empty(), "an attempt for nothing");
    for text in ["one", "two"] {
        alice.send_text("bob", text, T0).unwrap();
    }
    // The controls that open the session go first; then the texts, in order, one at a time.
    let mut got = Vec::new();
    loop {
        let attempts = alice.due(T0, None).unwrap();
        assert!(attempts.len() <= 1, "more than one delivery for one contact");
        let Some(attempt) = attempts.into_iter().next() else { break };
        let received = bob.receive(Some(&b"alice-node"[..]), &attempt.envelope, T0).unwrap();
        got.extend(received.message.map(|m| m.text));
        alice.attempt_finished(&attempt.id, &AttemptResult::Accepted, T0).unwrap();
    }
    assert_eq!(got, ["one", "two"]);
    assert_eq!(alice.store().outbox_len().unwrap(), 0);
}

/// Hands `batch` to `to` in one `receive_batch` and reports its answers back in one
/// `attempts_finished`; returns the texts stored and the writes each side made.
fn deliver_batch(
    from: &mut Engine<MemoryStore>,
    to: &mut Engine<MemoryStore>,
    batch: &[merpati_node::engine::Attempt],
    now: Timestamp,
) -> (Vec<String>, u64, u64) {
    let envelopes: Vec<&[u8]> = batch.iter().map(|a| a.envelope.as_slice()).collect();
    let to_before = to.store().batches();
    let received = to.receive_batch(Some(&b"sender-node"[..]), &envelopes, now).unwrap();
    let to_writes = to.store().batches() - to_before;
    assert_eq!(received.len(), batch.len(), "one answer per envelope");
    let results: Vec<_> = batch
        .iter()
        .zip(&received)
        .map(|(attempt, r)| match r.response.as_ref().unwrap() {
            deliver::Response::Accepted => (attempt.id, AttemptResult::Accepted),
            deliver::Response::Refused(refusal) => (attempt.id, AttemptResult::Refused(*refusal)),
        })
        .collect();
    let from_before = from.store().batches();
    from.attempts_finished(&results, now).unwrap();
    let from_writes = from.store().batches() - from_before;
    let texts = received.into_iter().filter_map(|r| r.message.map(|m| m.text)).collect();
    (texts, to_writes, from_writes)
}

/// A queue goes out in batches of up to 64, in order; the receiver stores each batch with one
/// write and confirms it with one receipt per 64 texts; the sender records each batch's answers
/// with one write.
#[test]
fn a_queue_goes_out_in_batches_each_stored_with_one_write() {
    let (mut alice, mut bob) = pair();
    // The first contact opens the session; what follows finds it by mailbox.
    alice.send_text("bob", "hello", T0).unwrap();
    while pump(&mut alice, b"alice-node", &mut bob, T0) > 0 {}
    let alice_name = bob.store().contacts().unwrap()[0].name.clone();
    while pump(&mut bob, b"bob-node", &mut alice, T0) > 0 {}
    assert_eq!(bob.store().outbox_len().unwrap(), 0);

    let sent: Vec<_> = (0..100).map(|i| alice.send_text("bob", &format!("m{i}"), T0).unwrap()).collect();
    let mut got = Vec::new();
    let mut sizes = Vec::new();
    let mut first_batch = None;
    loop {
        let batches = alice.due_batches(T0, None, usize::MAX, |_| false).unwrap();
        assert!(batches.len() <= 1, "one batch per contact");
        let Some(batch) = batches.into_iter().next() else { break };
        sizes.push(batch.len());
        let (texts, bob_writes, alice_writes) = deliver_batch(&mut alice, &mut bob, &batch, T0);
        assert_eq!((bob_writes, alice_writes), (1, 1), "writes for a batch of {}", batch.len());
        got.extend(texts);
        first_batch.get_or_insert(batch);
    }
    assert_eq!(sizes, [64, 36]);
    let expected: Vec<_> = (0..100).map(|i| format!("m{i}")).collect();
    assert_eq!(got, expected);
    let stored: Vec<_> =
        bob.store().messages(Some(&alice_name), 200).unwrap().into_iter().map(|m| m.text).collect();
    assert_eq!(stored[1..], expected[..]);

    // One receipt per batch (each held at most 64 ids), and they confirm every text.
    let receipts = bob.due_batches(T0, None, usize::MAX, |_| false).unwrap();
    assert_eq!(receipts.iter().map(Vec::len).collect::<Vec<_>>(), [2]);
    deliver_batch(&mut bob, &mut alice, &receipts[0], T0);
    for message in &sent {
        assert_eq!(alice.message(&message.id).unwrap().status, Status::Delivered);
    }

    // A batch delivered again (its answer was lost) is answered `Accepted` and stores nothing
    // twice.
    let first_batch = first_batch.unwrap();
    let envelopes: Vec<&[u8]> = first_batch.iter().map(|a| a.envelope.as_slice()).collect();
    let again = bob.receive_batch(Some(&b"alice-node"[..]), &envelopes, T0).unwrap();
    assert!(
        again.iter().all(|r| matches!(r.response, Some(deliver::Response::Accepted)) && r.message.is_none())
    );
    assert_eq!(bob.store().messages(Some(&alice_name), 200).unwrap().len(), 101);
}

/// A batch holds at most 256 KiB of envelopes, follows the head's backoff, and leaves out a
/// contact whose delivery is in flight.
#[test]
fn batches_keep_to_their_byte_cap_the_heads_backoff_and_busy_contacts() {
    let (mut alice, mut bob) = pair();
    alice.send_text("bob", "hello", T0).unwrap();
    while pump(&mut alice, b"alice-node", &mut bob, T0) > 0 {}
    let long = "x".repeat(merpati_proto::frame::MAX_TEXT_LEN);
    for _ in 0..40 {
        alice.send_text("bob", &long, T0).unwrap();
    }
    let batch = alice.due_batches(T0, None, usize::MAX, |_| false).unwrap().remove(0);
    let bytes: usize = batch.iter().map(|a| a.envelope.len()).sum();
    assert!(bytes <= merpati_proto::wire::MAX_BATCH_BYTES, "{bytes} bytes in one batch");
    assert!(batch.len() < 40 && batch.len() > 8, "a batch of {} long texts", batch.len());
    let next_would_fit = bytes + batch[0].envelope.len() <= merpati_proto::wire::MAX_BATCH_BYTES;
    assert!(!next_would_fit, "the batch stopped early at {bytes} bytes");

    assert!(alice.due_batches(T0, None, usize::MAX, |c| c == "bob").unwrap().is_empty());
    assert!(alice.due_batches(T0, None, 0, |_| false).unwrap().is_empty());

    // The head failed: the whole queue waits for its backoff, unless the contact came online.
    let unreachable = AttemptResult::Unreachable("offline".into());
    alice.attempt_finished(&batch[0].id, &unreachable, T0).unwrap();
    assert!(alice.due_batches(T0, None, usize::MAX, |_| false).unwrap().is_empty());
    let online = alice.due_batches(T0, Some("bob"), usize::MAX, |_| false).unwrap();
    assert_eq!(online[0][0].id, batch[0].id, "the head leads when the contact comes online");
    let later = alice.due_batches(T0.plus(Timestamp::HOUR), None, usize::MAX, |_| false).unwrap();
    assert_eq!(
        later[0].iter().map(|a| a.id).collect::<Vec<_>>(),
        batch.iter().map(|a| a.id).collect::<Vec<_>>()
    );
}

/// Hands `from`'s due envelopes to `to` one at a time until none is left, each of which must be
/// accepted; returns the texts `to` stored, in order.
fn texts_delivered<S: Store, T: Store>(
    from: &mut Engine<S>,
    to: &mut Engine<T>,
    now: Timestamp,
) -> Vec<String> {
    let mut got = Vec::new();
    while let Some(attempt) = from.due(now, None).unwrap().into_iter().next() {
        let received = to.receive(Some(&b"sender-node"[..]), &attempt.envelope, now).unwrap();
        assert!(matches!(received.response, Some(deliver::Response::Accepted)));
        got.extend(received.message.map(|m| m.text));
        from.attempt_finished(&attempt.id, &AttemptResult::Accepted, now).unwrap();
    }
    got
}

/// Sends that arrive together are queued with one write, in order; a refused one (unknown
/// contact, text too long) does not hold up the rest; a contact's first session is started once
/// for the whole group.
#[test]
fn sends_queued_together_share_one_write() {
    let mut alice = engine(MemoryStore::new(), 1, "Alice");
    let mut bob = engine(MemoryStore::new(), 2, "Bob");
    let invite = bob.invite(b"bob-node".to_vec(), vec![], T0).unwrap();
    alice.add_contact(&invite, "bob", T0).unwrap();
    bob.add_contact(&alice.invite(b"alice-node".to_vec(), vec![], T0).unwrap(), "alice", T0).unwrap();
    let long = "x".repeat(merpati_proto::fragment::MAX_REASSEMBLED_LEN + 1);
    let before = alice.store().batches();
    let results = alice.send_texts(&[("bob", "one"), ("carol", "lost"), ("bob", &long), ("bob", "two")], T0);
    assert_eq!(alice.store().batches() - before, 1);
    assert!(matches!(results[1], Err(EngineError::UnknownContact(_))));
    assert!(matches!(results[2], Err(EngineError::TooLarge { .. })));
    let queued: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).map(|m| m.text.as_str()).collect();
    assert_eq!(queued, ["one", "two"]);

    // Bob gets the session's controls and both texts, in order, from one first contact.
    let got = texts_delivered(&mut alice, &mut bob, T0);
    assert_eq!(got, ["one", "two"]);
    assert_eq!(bob.store().contacts().unwrap().len(), 1);
}

/// A group whose write fails queues none of its texts, and the sessions go on from what is
/// stored: the texts sent after it arrive and open.
#[test]
fn a_group_of_sends_whose_write_fails_queues_nothing() {
    let mut alice = engine(Rigged::default(), 1, "Alice");
    let mut bob = engine(MemoryStore::new(), 2, "Bob");
    let invite = bob.invite(b"bob-node".to_vec(), vec![], T0).unwrap();
    alice.add_contact(&invite, "bob", T0).unwrap();
    bob.add_contact(&alice.invite(b"alice-node".to_vec(), vec![], T0).unwrap(), "alice", T0).unwrap();
    alice.send_text("bob", "before", T0).unwrap();
    alice.store().refuse_writes(true);
    let results = alice.send_texts(&[("bob", "lost 1"), ("bob", "lost 2"), ("nobody", "x")], T0);
    assert!(matches!(results[0], Err(EngineError::Store(_))));
    assert!(matches!(results[1], Err(EngineError::NotSaved(_))));
    assert!(matches!(results[2], Err(EngineError::UnknownContact(_))));
    alice.store().refuse_writes(false);
    alice.send_text("bob", "after", T0).unwrap();

    let got = texts_delivered(&mut alice, &mut bob, T0);
    assert_eq!(got, ["before", "after"]);
    let sent: Vec<_> = alice.store().messages(Some("bob"), 10).unwrap().into_iter().map(|m| m.text).collect();
    assert_eq!(sent, ["before", "after"]);
}

/// A text of `len` bytes of UTF-8 (at most; cut at a character), with characters of one to
/// three bytes, so pieces end inside characters.
fn long_text(len: usize) -> String {
    let mut text = String::with_capacity(len + 16);
    while text.len() < len {
        text.push_str("päckchen ✓ nummer ");
        text.push_str(&text.len().to_string());
        text.push(' ');
    }
    let mut end = len;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text
}

/// The outbox entries that carry the last piece of their long text: the highest sequence number
/// among the text's pieces.
fn last_pieces<S: Store>(node: &Engine<S>) -> std::collections::HashSet<MessageId> {
    let mut last: std::collections::HashMap<MessageId, (u64, MessageId)> = std::collections::HashMap::new();
    for entry in node.store().outbox().unwrap() {
        if let Some(part) = node.store().part_of(&entry.id).unwrap() {
            let best = last.entry(part.message).or_insert((entry.seq, entry.id));
            if entry.seq >= best.0 {
                *best = (entry.seq, entry.id);
            }
        }
    }
    last.into_values().map(|(_, id)| id).collect()
}

#[test]
fn a_long_text_travels_in_pieces_and_arrives_whole_once() {
    let (mut alice, mut bob) = pair();
    // Bob answered once: his node does not hold Alice's words as a request.
    alice.send_text("bob", "hello first", T0).unwrap();
    settle(&mut alice, &mut bob, T0);
    let text = long_text(merpati_proto::fragment::MAX_REASSEMBLED_LEN);
    let sent = alice.send_text("bob", &text, T0).unwrap();
    let pieces = text.len().div_ceil(merpati_proto::fragment::MAX_FRAGMENT_CHUNK);
    let parts: Vec<_> = alice
        .store()
        .outbox()
        .unwrap()
        .iter()
        .filter_map(|e| alice.store().part_of(&e.id).unwrap())
        .collect();
    assert_eq!(parts.len(), pieces, "one outbox entry per piece");
    assert!(parts.iter().all(|p| p.message == sent.id));

    // Piece by piece: nothing shows until the last arrives, and the text stays queued meanwhile.
    let mut first_piece = None;
    let mut delivered_pieces = 0;
    loop {
        let attempts = alice.due(T0, None).unwrap();
        let Some(attempt) = attempts.into_iter().next() else { break };
        let received = bob.receive(Some(&b"alice-node"[..]), &attempt.envelope, T0).unwrap();
        let updates = alice.attempts_finished(&[(attempt.id, AttemptResult::Accepted)], T0).unwrap();
        if received.message.is_none() {
            delivered_pieces += 1;
            first_piece.get_or_insert(attempt.envelope.clone());
            assert_eq!(alice.message(&sent.id).unwrap().status, Status::Queued);
            assert!(
                updates.iter().all(|(_, update)| update.is_none()),
                "no status moves before the last piece"
            );
        } else if let Some(message) = received.message {
            // The whole text, under the id the sender knows, and its status published for it.
            assert_eq!(message.id, sent.id);
            assert_eq!(updates, [(sent.id, Some((Status::Sent, None)))]);
        }
    }
    assert!(delivered_pieces >= pieces - 1, "{delivered_pieces} envelopes before the text was whole");
    let got = bob.store().messages(Some("alice"), 10).unwrap();
    assert_eq!(got.len(), 2, "the greeting and the text, not pieces");
    assert_eq!((got[1].id, got[1].text.len()), (sent.id, text.len()));
    assert!(got[1].text == text, "the text arrives exactly as sent");
    assert!(bob.store().fragment_groups("alice").unwrap().is_empty(), "no pieces left once whole");

    // A piece again (from a second relay, say) is acknowledged and changes nothing.
    let again = bob.receive(Some(&b"alice-node"[..]), &first_piece.unwrap(), T0).unwrap();
    assert!(matches!(again.response, Some(deliver::Response::Accepted)));
    assert_eq!(bob.store().messages(Some("alice"), 10).unwrap().len(), 2);
    assert!(bob.store().fragment_groups("alice").unwrap().is_empty());

    // Bob's delivery receipt names the text.
    settle(&mut alice, &mut bob, T0);
    assert_eq!(alice.message(&sent.id).unwrap().status, Status::Delivered);
}

#[test]
fn a_text_over_a_mib_is_refused_with_the_limit_and_nothing_queued() {
    let (mut alice, _bob) = pair();
    let text = "x".repeat(merpati_proto::fragment::MAX_REASSEMBLED_LEN + 1);
    match alice.send_text("bob", &text, T0) {
        Err(EngineError::TooLarge { len, max }) => assert_eq!((len, max), (text.len(), 1024 * 1024)),
        other => panic!("expected TooLarge, got {other:?}"),
    }
    assert!(alice.store().outbox().unwrap().is_empty());
    assert!(alice.store().messages(Some("bob"), 10).unwrap().is_empty());
}

/// Bob's store on disk: pieces kept there survive his restart and are sealed, and a text left
/// incomplete is given up two months after its newest piece.
#[test]
fn pieces_survive_a_restart_sealed_and_incomplete_texts_expire() {
    let dir = tempfile::tempdir().unwrap();
    let mut alice = engine(MemoryStore::new(), 1, "Alice");
    let invite = alice.invite(b"alice-node".to_vec(), vec![], T0).unwrap();
    let mut bob = engine(open_sled(dir.path()), 2, "Bob");
    bob.add_contact(&invite, "alice", T0).unwrap();
    alice.add_contact(&bob.invite(b"bob-node".to_vec(), vec![], T0).unwrap(), "bob", T0).unwrap();
    alice.send_text("bob", "hello first", T0).unwrap();
    settle(&mut alice, &mut bob, T0);

    let canary = "canary-in-the-pieces ";
    let whole = canary.repeat(200 * 1024 / canary.len());
    let sent = alice.send_text("bob", &whole, T0).unwrap();
    let unfinished = alice.send_text("bob", &canary.repeat(100 * 1024 / canary.len()), T0).unwrap();
    // Everything but the last piece of each text, then Bob restarts.
    let last = last_pieces(&alice);
    let mut held_back = Vec::new();
    for entry in alice.store().outbox().unwrap() {
        let part = alice.store().part_of(&entry.id).unwrap().unwrap();
        if last.contains(&entry.id) {
            held_back.push((part.message, entry.envelope));
        } else {
            let received = bob.receive(Some(&b"alice-node"[..]), &entry.envelope, T0).unwrap();
            assert!(received.message.is_none());
        }
    }
    assert_eq!(bob.store().fragment_groups("alice").unwrap().len(), 2);
    drop(bob);
    bob = engine(open_sled(dir.path()), 2, "Bob");
    let (text_id, last_piece) = held_back.iter().find(|(id, _)| *id == sent.id).unwrap();
    let received = bob.receive(Some(&b"alice-node"[..]), last_piece, T0).unwrap();
    assert_eq!(received.message.map(|m| (m.id, m.text == whole)), Some((*text_id, true)));
    assert_eq!(bob.store().fragment_groups("alice").unwrap().len(), 1, "the other text still waits");

    // The waiting pieces hold message text: nowhere in the clear on disk.
    let mut files = vec![dir.path().to_path_buf()];
    while let Some(path) = files.pop() {
        if path.is_dir() {
            files.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
        } else {
            let bytes = std::fs::read(&path).unwrap();
            assert!(
                !bytes.windows(canary.len()).any(|w| w == canary.as_bytes()),
                "{} holds text",
                path.display()
            );
        }
    }

    // A month on, the incomplete text is given up; its last piece then opens nothing.
    let day = Timestamp::DAY;
    assert_eq!(bob.maintain(T0.plus(60 * day)).unwrap().long_texts_expired, 0);
    assert_eq!(bob.maintain(T0.plus(62 * day)).unwrap().long_texts_expired, 1);
    assert!(bob.store().fragment_groups("alice").unwrap().is_empty());
    let (_, late) = held_back.iter().find(|(id, _)| *id == unfinished.id).unwrap();
    let received = bob.receive(Some(&b"alice-node"[..]), late, T0.plus(62 * day)).unwrap();
    assert!(received.message.is_none());
    assert!(bob.store().message(&unfinished.id).unwrap().is_none());
}

#[test]
fn incomplete_long_texts_per_contact_are_capped() {
    let (mut alice, mut bob) = pair();
    alice.send_text("bob", "hello first", T0).unwrap();
    settle(&mut alice, &mut bob, T0);
    let cap = merpati_proto::fragment::MAX_GROUPS_IN_PROGRESS;
    for i in 0..=cap {
        alice.send_text("bob", &long_text(50 * 1024 + i), T0).unwrap();
    }
    // The first piece of every text, none of the last.
    let last = last_pieces(&alice);
    for entry in alice.store().outbox().unwrap() {
        if alice.store().part_of(&entry.id).unwrap().is_some() && !last.contains(&entry.id) {
            bob.receive(Some(&b"alice-node"[..]), &entry.envelope, T0).unwrap();
        }
    }
    assert_eq!(bob.store().fragment_groups("alice").unwrap().len(), cap, "one text past the cap is not kept");
    settle(&mut alice, &mut bob, T0);
    let whole = bob.store().messages(Some("alice"), 100).unwrap();
    assert_eq!(whole.len(), 1 + cap, "the texts within the cap arrive whole");
    assert_eq!(bob.store().fragment_groups("alice").unwrap().len(), 1, "the one past it never completes");
}

#[test]
fn a_piece_that_fails_fails_its_text() {
    let (mut alice, mut bob) = pair();
    alice.send_text("bob", "hello first", T0).unwrap();
    settle(&mut alice, &mut bob, T0);
    let sent = alice.send_text("bob", &long_text(100 * 1024), T0).unwrap();
    let first = alice.due(T0, None).unwrap().remove(0);
    let late = T0.plus(31 * Timestamp::DAY);
    let updates =
        alice.attempts_finished(&[(first.id, AttemptResult::Unreachable("offline".into()))], late).unwrap();
    let failed = alice.message(&sent.id).unwrap();
    assert_eq!(failed.status, Status::Failed);
    assert_eq!(failed.reason.as_deref(), Some("could not be delivered before it expired"));
    assert_eq!(updates, [(sent.id, Some((Status::Failed, failed.reason.clone())))]);
    assert!(alice.store().outbox().unwrap().is_empty(), "its other pieces are not sent");
}

/// The results of one batch come back per envelope, in any order: a text moves on only once none
/// of its pieces is left, and a failure earlier in the batch is not undone by a later success.
#[test]
fn a_text_moves_on_only_when_every_piece_has_gone() {
    let (mut alice, mut bob) = pair();
    alice.send_text("bob", "hello first", T0).unwrap();
    settle(&mut alice, &mut bob, T0);
    let sent = alice.send_text("bob", &long_text(100 * 1024), T0).unwrap();
    let batch = alice.due_batches(T0, None, 1, |_| false).unwrap().remove(0);
    assert_eq!(batch.len(), 3, "the three pieces go together");
    let (first, middle, last) = (batch[0].id, batch[1].id, batch[2].id);
    let wait = AttemptResult::Refused(Refusal::RateLimited { retry_after_ms: 1000 });
    let results = [(last, AttemptResult::Accepted), (first, AttemptResult::Accepted), (middle, wait)];
    let updates = alice.attempts_finished(&results, T0).unwrap();
    assert_eq!(alice.message(&sent.id).unwrap().status, Status::Queued, "a piece is still queued");
    assert!(
        updates
            .iter()
            .all(|(id, update)| *id != sent.id || update.as_ref().is_none_or(|(s, _)| *s == Status::Queued))
    );
    let updates = alice.attempts_finished(&[(middle, AttemptResult::Accepted)], T0).unwrap();
    assert_eq!(alice.message(&sent.id).unwrap().status, Status::Sent);
    assert_eq!(updates, [(sent.id, Some((Status::Sent, None)))]);

    // A failure and then a success in one batch: the text stays failed, and says so once.
    let second = alice.send_text("bob", &long_text(100 * 1024), T0).unwrap();
    let batch = alice.due_batches(T0, None, 1, |_| false).unwrap().remove(0);
    let results =
        [(batch[0].id, AttemptResult::Refused(Refusal::Malformed)), (batch[2].id, AttemptResult::Accepted)];
    let updates = alice.attempts_finished(&results, T0).unwrap();
    assert_eq!(alice.message(&second.id).unwrap().status, Status::Failed);
    let published: Vec<_> = updates.iter().filter(|(id, u)| *id == second.id && u.is_some()).collect();
    assert_eq!(published.len(), 1, "{updates:?}");
}

fn small_file(name: &str, data: Vec<u8>) -> merpati_proto::blob::Descriptor {
    use merpati_proto::kdf;
    merpati_proto::blob::Descriptor {
        len: data.len() as u64,
        hash: kdf::hash(kdf::label::BLOB_HASH, &[&data]),
        media_type: "audio/ogg".into(),
        name: name.into(),
        caption: "listen".into(),
        thumbnail: Vec::new(),
        content: merpati_proto::blob::Content::Inline(zeroize::Zeroizing::new(data)),
    }
}

#[test]
fn a_small_file_arrives_with_its_message_and_is_kept_on_both_sides() {
    let (mut alice, mut bob) = pair();
    let data: Vec<u8> = (0..40_000u32).map(|i| (i % 253) as u8).collect();
    let sent = alice.send_file("bob", &small_file("note.ogg", data.clone()), None, T0).unwrap();
    assert_eq!(sent.text, "listen");
    settle(&mut alice, &mut bob, T0);
    assert_eq!(alice.message(&sent.id).unwrap().status, Status::Delivered);
    let got = bob.store().messages(Some("alice"), 10).unwrap();
    assert_eq!((got.len(), got[0].id, got[0].text.as_str()), (1, sent.id, "listen"));
    let info = bob.store().file_info(&sent.id).unwrap().unwrap();
    assert_eq!((info.name.as_str(), info.len, info.here), ("note.ogg", 40_000, true));
    assert_eq!(bob.store().file_data(&sent.id).unwrap().unwrap().to_vec(), data);
    assert_eq!(alice.store().file_data(&sent.id).unwrap().unwrap().to_vec(), data);

    // Too large for a description, or a name that is a path: refused, nothing queued.
    let big = small_file("big.bin", vec![0; merpati_proto::blob::MAX_INLINE_LEN + 1]);
    assert!(matches!(alice.send_file("bob", &big, None, T0), Err(EngineError::InvalidFile(_))));
    let climbing = small_file("../../.bashrc", vec![1]);
    assert!(matches!(alice.send_file("bob", &climbing, None, T0), Err(EngineError::InvalidFile(_))));
    assert!(alice.store().outbox().unwrap().is_empty());
}

#[test]
fn a_blob_file_keeps_its_upload_with_the_sender_and_its_download_with_the_receiver() {
    use merpati_proto::blob::{BlobKey, Content, Descriptor, Source, chunk_count};
    use store::{Transfer, TransferSide};
    let (mut alice, mut bob) = pair();
    let len = 5 * 1024 * 1024;
    let file = Descriptor {
        len,
        hash: [9; 32],
        media_type: "image/jpeg".into(),
        name: "harbour.jpg".into(),
        caption: "the view".into(),
        thumbnail: Vec::new(),
        content: Content::Blob {
            blob_id: [4; 16],
            key: BlobKey::from_bytes([5; 32]),
            read_secret: zeroize::Zeroizing::new([6; 32]),
            count: chunk_count(len).unwrap(),
            expires_at: T0.plus(30 * Timestamp::DAY),
            from_sender: false,
            sources: vec![Source { peer_id: vec![1; 38], addrs: vec![vec![2; 20]] }],
        },
    };
    let upload = Transfer {
        descriptor: file.encode().unwrap(),
        side: TransferSide::Upload { write_secret: [7; 32], done_at: Vec::new(), refused: Vec::new() },
    };
    let sent = alice.send_file("bob", &file, Some(upload.clone()), T0).unwrap();
    assert_eq!(alice.store().transfer(&sent.id).unwrap(), Some(upload));
    assert!(alice.store().file_info(&sent.id).unwrap().unwrap().here, "the sender's copy is in its spool");
    settle(&mut alice, &mut bob, T0);

    let info = bob.store().file_info(&sent.id).unwrap().unwrap();
    assert_eq!((info.name.as_str(), info.len, info.here), ("harbour.jpg", len, false));
    let download = bob.store().transfer(&sent.id).unwrap().expect("a download to start");
    assert_eq!(download.side, TransferSide::Download { failed: None });
    assert_eq!(
        Descriptor::decode(&download.descriptor).unwrap(),
        file,
        "the description as sent, key included"
    );
    assert_eq!(bob.store().transfers().unwrap().len(), 1);

    // Deleting the message takes its transfer along, on both sides.
    alice.delete_message(&sent.id).unwrap();
    assert_eq!(alice.store().transfer(&sent.id).unwrap(), None);
    bob.delete_message(&sent.id).unwrap();
    assert!(bob.store().transfers().unwrap().is_empty());
}
