//! The store conformance suite: every test in `conformance` is written once over `S: Store` and
//! runs against both `MemoryStore` and `SledStore` (on a temporary directory). The tests in
//! `sled_only` check what only the disk store has: durability across reopening, refusal of
//! corrupt and foreign databases, storage key rotation, and that no session key can be found in
//! the database files.
#![allow(clippy::unwrap_used)] // tests stop on any error

mod support;

use std::fs;
use std::path::{Path, PathBuf};

use merpati_node::store::keyring::KEY_FILE;
use merpati_node::store::{
    Blocked, Change, Contact, ContactRequest, Direction, FORMAT_VERSION, FileInfo, Keyring, MAX_NAME_LEN,
    MAX_VALUE_LEN, MemoryStore, NodeKey, OutboxEntry, OutboxHead, PartOf, Profile, RequestId, SCHEMA_VERSION,
    SessionRecord, SledStore, Status, Store, StoreError, StoredFragment, StoredMessage,
};
use merpati_proto::Timestamp;
use merpati_proto::frame::MessageId;
use merpati_proto::identity::{Bundle, DeviceCert, IdentityKey, PROTOCOL_VERSION, PrekeyRing};
use merpati_proto::keys::{SymmetricKey, X25519Secret};
use merpati_proto::mailbox::{Announcement, MailboxId};
use merpati_proto::session::state::{RecvEpoch, SendEpoch, SeqTracker, SubKey};
use merpati_proto::session::{Role, SessionId, SessionState};
use rand_chacha::ChaCha20Rng;
use rand_core::{Rng, SeedableRng};
use zeroize::Zeroizing;

const NOW: Timestamp = Timestamp(1_700_000_000_000);

/// Deterministic test data.
struct Fixture {
    rng: ChaCha20Rng,
}

impl Fixture {
    fn new(seed: u64) -> Self {
        Self { rng: ChaCha20Rng::seed_from_u64(seed) }
    }

    fn bytes<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        self.rng.fill_bytes(&mut out);
        out
    }

    fn device(&mut self) -> (IdentityKey, X25519Secret, DeviceCert) {
        let identity = IdentityKey::generate(&mut self.rng);
        let device_static = X25519Secret::generate(&mut self.rng);
        let cert = DeviceCert::issue(&identity, &device_static.public(), NOW);
        (identity, device_static, cert)
    }

    fn profile(&mut self) -> Profile {
        let (identity, device_static, cert) = self.device();
        let prekeys = PrekeyRing::new(&identity, &cert.device_id(), NOW, &mut self.rng);
        let node_key = NodeKey::new(self.bytes::<68>().to_vec());
        Profile { identity, device_static, cert, node_key, prekeys, created_at: NOW }
    }

    fn contact(&mut self, name: &str) -> Contact {
        let (identity, _, cert) = self.device();
        let prekeys = PrekeyRing::new(&identity, &cert.device_id(), NOW, &mut self.rng);
        let bundle = Bundle::new(&identity, cert, prekeys.current().clone(), vec![PROTOCOL_VERSION]).unwrap();
        Contact {
            name: name.to_owned(),
            identity: identity.public(),
            bundle: Some(bundle),
            inbox: Some(MailboxId(self.bytes())),
            peer_id: self.bytes::<38>().to_vec(),
            addrs: vec![b"/ip4/127.0.0.1/udp/4001/quic-v1".to_vec()],
            relays: vec![],
            session: None,
            added_at: NOW,
            last_resort: prekeys.last_resort().cloned(),
            last_heard: None,
            restored_at: None,
        }
    }

    fn session(&mut self, contact: &str) -> SessionRecord {
        let (_, _, peer) = self.device();
        let id = SessionId(self.bytes());
        let mailbox_secret = SymmetricKey::from_bytes(self.bytes());
        let peer_secret = SymmetricKey::from_bytes(self.bytes());
        let ratchet = X25519Secret::from_bytes(self.bytes());
        let peer_ratchet = X25519Secret::from_bytes(self.bytes()).public();
        let state = SessionState {
            id,
            role: Role::Initiator,
            peer,
            root: SymmetricKey::from_bytes(self.bytes()),
            latest_epoch: 1,
            send: Some(SendEpoch {
                epoch: 0,
                open: self.bytes::<96>().to_vec(),
                sub: 2,
                key: SymmetricKey::from_bytes(self.bytes()),
                next_index: 5,
                sub_started_at: NOW,
            }),
            recv: vec![RecvEpoch {
                epoch: 1,
                open_digest: self.bytes(),
                next_sub: 1,
                next_key: SymmetricKey::from_bytes(self.bytes()),
                subkeys: vec![SubKey {
                    sub: 0,
                    key: SymmetricKey::from_bytes(self.bytes()),
                    seen: 0b1011,
                    derived_at: NOW,
                }],
                opened_at: NOW,
                superseded_at: None,
            }],
            my_ratchet: Some(ratchet),
            peer_ratchet: Some(peer_ratchet),
            my_mailboxes: Announcement::new(&mailbox_secret, NOW, 14),
            my_mailbox_secret: mailbox_secret,
            peer_mailboxes: Announcement::new(&peer_secret, NOW, 14),
            peer_acked_epoch: None,
            next_seq: 7,
            peer_seq: SeqTracker::default(),
            created_at: NOW,
        };
        SessionRecord { id, contact: contact.to_owned(), state }
    }

    fn message(&mut self, contact: &str, text: &str) -> StoredMessage {
        StoredMessage {
            id: MessageId(self.bytes()),
            contact: contact.to_owned(),
            direction: Direction::Out,
            time: NOW,
            text: text.to_owned(),
            seq: None,
            status: Status::Queued,
            reason: None,
            order: 0,
        }
    }

    fn outbox(&mut self, contact: &str, next_attempt_at: u64) -> OutboxEntry {
        OutboxEntry {
            id: MessageId(self.bytes()),
            contact: contact.to_owned(),
            envelope: vec![0x5a; 512],
            mailbox: MailboxId(self.bytes()),
            created_at: NOW,
            seq: 0,
            attempts: 0,
            next_attempt_at: Timestamp(next_attempt_at),
            expires_at: NOW.plus(30 * Timestamp::DAY),
        }
    }
}

/// Every secret a session record holds, as raw bytes.
fn session_secrets(record: &SessionRecord) -> Vec<[u8; 32]> {
    let s = &record.state;
    let mut out = vec![*s.root.as_bytes(), *s.my_mailbox_secret.as_bytes()];
    out.extend(s.send.iter().map(|e| *e.key.as_bytes()));
    for epoch in &s.recv {
        out.push(*epoch.next_key.as_bytes());
        out.extend(epoch.subkeys.iter().map(|k| *k.key.as_bytes()));
    }
    out.extend(s.my_ratchet.iter().map(|k| *k.as_bytes()));
    out
}

fn encoded<T: serde::Serialize>(value: &T) -> Vec<u8> {
    postcard::to_allocvec(value).unwrap()
}

fn assert_same_session(a: &SessionRecord, b: &SessionRecord) {
    assert_eq!(a.id, b.id);
    assert_eq!(a.contact, b.contact);
    assert_eq!(encoded(&a.state), encoded(&b.state));
}

fn is_corrupt<T: std::fmt::Debug>(result: Result<T, StoreError>) -> bool {
    matches!(result, Err(StoreError::Corrupt { .. }))
}

/// The suite both stores must pass.
mod conformance {
    use super::*;

    pub(crate) fn empty_store_reads_nothing<S: Store + ?Sized>(store: &S) {
        assert!(store.profile().unwrap().is_none());
        assert!(store.contacts().unwrap().is_empty());
        assert!(store.contact("nobody").unwrap().is_none());
        assert!(store.session(&SessionId([1; 16])).unwrap().is_none());
        assert!(store.session_by_mailbox(&MailboxId([1; 16])).unwrap().is_none());
        assert!(store.session_by_open_digest(&[1; 32]).unwrap().is_none());
        assert!(store.message(&MessageId([1; 16])).unwrap().is_none());
        assert!(store.messages(None, 10).unwrap().is_empty());
        assert!(store.outbox().unwrap().is_empty());
        assert_eq!(store.outbox_len().unwrap(), 0);
        assert!(store.outbox_entry(&MessageId([1; 16])).unwrap().is_none());
        assert!(store.outbox_head("nobody").unwrap().is_none());
        assert!(store.outbox_due(Timestamp(u64::MAX)).unwrap().is_empty());
        assert!(store.relays().unwrap().is_empty());
        assert!(store.session_ids().unwrap().is_empty());
        store.apply(&[]).unwrap();
    }

    pub(crate) fn profile_round_trips<S: Store + ?Sized>(store: &S) {
        let mut f = Fixture::new(1);
        let profile = f.profile();
        let expected = encoded(&profile);
        store.apply(&[Change::PutProfile(profile)]).unwrap();
        assert_eq!(encoded(&store.profile().unwrap().unwrap()), expected);
        let replacement = f.profile();
        let expected = encoded(&replacement);
        store.apply(&[Change::PutProfile(replacement)]).unwrap();
        assert_eq!(encoded(&store.profile().unwrap().unwrap()), expected);
    }

    pub(crate) fn contacts_add_conflict_and_list<S: Store + ?Sized>(store: &S) {
        let mut f = Fixture::new(2);
        let (bob, alice) = (f.contact("bob"), f.contact("alice"));
        store.apply(&[Change::AddContact(bob.clone())]).unwrap();
        store.apply(&[Change::AddContact(alice.clone())]).unwrap();
        let err = store.apply(&[Change::AddContact(f.contact("bob"))]).unwrap_err();
        assert!(matches!(&err, StoreError::Conflict { name } if name == "bob"), "{err}");
        assert_eq!(store.contact("bob").unwrap().unwrap(), bob, "a refused add changed the contact");
        assert_eq!(store.contacts().unwrap(), vec![alice.clone(), bob.clone()]);

        // PutContact replaces.
        let mut updated = bob.clone();
        updated.session = Some(SessionId([9; 16]));
        updated.addrs.push(b"/ip6/::1/udp/4001/quic-v1".to_vec());
        store.apply(&[Change::PutContact(updated.clone())]).unwrap();
        assert_eq!(store.contact("bob").unwrap().unwrap(), updated);
        assert_eq!(store.contacts().unwrap().len(), 2);

        // Names that cannot be keys are refused.
        let err = store.apply(&[Change::AddContact(f.contact(""))]).unwrap_err();
        assert!(matches!(err, StoreError::InvalidName { len: 0, .. }), "{err}");
        let long = "n".repeat(MAX_NAME_LEN + 1);
        assert!(matches!(
            store.apply(&[Change::PutContact(f.contact(&long))]),
            Err(StoreError::InvalidName { .. })
        ));
        let widest = "é".repeat(MAX_NAME_LEN / 2);
        store.apply(&[Change::AddContact(f.contact(&widest))]).unwrap();
        assert!(store.contact(&widest).unwrap().is_some());
        assert!(store.contact(&long).unwrap().is_none());
    }

    pub(crate) fn two_racing_adds_of_one_name_one_wins<S: Store + ?Sized>(store: &S) {
        let mut f = Fixture::new(3);
        let contacts: Vec<Contact> = (0..4).map(|_| f.contact("dora")).collect();
        let results: Vec<_> = std::thread::scope(|scope| {
            let handles: Vec<_> = contacts
                .iter()
                .map(|c| scope.spawn(move || store.apply(&[Change::AddContact(c.clone())])))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1);
        assert!(results.iter().all(|r| r.is_ok() || matches!(r, Err(StoreError::Conflict { .. }))));
        let stored = store.contact("dora").unwrap().unwrap();
        let winner = results.iter().position(Result::is_ok).unwrap();
        assert_eq!(stored, contacts[winner]);
    }

    pub(crate) fn sessions_round_trip_and_are_removed<S: Store + ?Sized>(store: &S) {
        let mut f = Fixture::new(4);
        let (a, b) = (f.session("bob"), f.session("carol"));
        store.apply(&[Change::PutSession(a.clone()), Change::PutSession(b.clone())]).unwrap();
        assert_same_session(&store.session(&a.id).unwrap().unwrap(), &a);
        assert_same_session(&store.session(&b.id).unwrap().unwrap(), &b);

        // A new state replaces the old one.
        let mut next = a.clone();
        next.state.next_seq = 8;
        next.state.root = SymmetricKey::from_bytes([0x42; 32]);
        next.state.my_ratchet = None;
        store.apply(&[Change::PutSession(next.clone())]).unwrap();
        assert_same_session(&store.session(&a.id).unwrap().unwrap(), &next);

        let mut ids = vec![a.id, b.id];
        ids.sort();
        assert_eq!(store.session_ids().unwrap(), ids);

        store.apply(&[Change::RemoveSession(a.id)]).unwrap();
        assert!(store.session(&a.id).unwrap().is_none());
        assert_same_session(&store.session(&b.id).unwrap().unwrap(), &b);
        assert_eq!(store.session_ids().unwrap(), [b.id]);
        store.apply(&[Change::RemoveSession(a.id)]).unwrap();
    }

    pub(crate) fn relays_are_replaced_as_a_whole<S: Store + ?Sized>(store: &S) {
        let relays = vec![b"first relay".to_vec(), vec![0xa5; 128]];
        store.apply(&[Change::SetRelays(relays.clone())]).unwrap();
        assert_eq!(store.relays().unwrap(), relays);
        store.apply(&[Change::SetRelays(vec![relays[1].clone()])]).unwrap();
        assert_eq!(store.relays().unwrap(), [relays[1].clone()]);
        store.apply(&[Change::SetRelays(Vec::new())]).unwrap();
        assert!(store.relays().unwrap().is_empty());
    }

    pub(crate) fn stored_statuses_and_reasons<S: Store + ?Sized>(store: &S) {
        let mut f = Fixture::new(31);
        let m = f.message("bob", "to a relay");
        store.apply(&[Change::PutMessage(m.clone())]).unwrap();
        let get = || {
            let m = store.message(&m.id).unwrap().unwrap();
            (m.status, m.reason)
        };
        let reason = |text: &str| Change::SetReason { id: m.id, reason: Some(text.to_owned()) };
        let set =
            |status: Status| store.apply(&[Change::SetStatus { id: m.id, status, reason: None }]).unwrap();

        // While queued, the reason says why it has not left yet.
        store.apply(&[reason("the recipient's mailbox is full")]).unwrap();
        assert_eq!(get(), (Status::Queued, Some("the recipient's mailbox is full".to_owned())));
        set(Status::Stored { accepted: 1, total: 3 });
        assert_eq!(get(), (Status::Stored { accepted: 1, total: 3 }, None), "a stored message has no reason");
        store.apply(&[reason("stale")]).unwrap();
        assert_eq!(get().1, None, "a reason set after the message left");
        set(Status::Stored { accepted: 2, total: 3 });
        set(Status::Stored { accepted: 1, total: 3 });
        set(Status::Stored { accepted: 3, total: 4 });
        assert_eq!(get().0, Status::Stored { accepted: 2, total: 3 });
        set(Status::Sent);
        set(Status::Stored { accepted: 3, total: 3 });
        assert_eq!(get().0, Status::Sent, "sent went back to stored");
        set(Status::Delivered);
        assert_eq!(get().0, Status::Delivered);
        // An unknown message's reason is ignored without spoiling its batch.
        let other = f.message("bob", "other");
        store
            .apply(&[
                Change::SetReason { id: MessageId([0xee; 16]), reason: Some("x".into()) },
                Change::PutMessage(other.clone()),
            ])
            .unwrap();
        assert!(store.message(&other.id).unwrap().is_some());
    }

    pub(crate) fn receipt_deadlines_are_listed_soonest_first_and_removed<S: Store + ?Sized>(store: &S) {
        let at = |n: u64| Timestamp(1_000 * n);
        let (a, b, c) = (MessageId([0xa; 16]), MessageId([0xb; 16]), MessageId([0xc; 16]));
        assert!(store.awaiting(Timestamp(u64::MAX), 10).unwrap().is_empty());
        store
            .apply(&[
                Change::AwaitReceipt { id: b, until: at(20) },
                Change::AwaitReceipt { id: a, until: at(30) },
                Change::AwaitReceipt { id: c, until: at(10) },
            ])
            .unwrap();
        assert_eq!(store.awaiting(at(9), 10).unwrap(), vec![]);
        assert_eq!(store.awaiting(at(20), 10).unwrap(), vec![(at(10), c), (at(20), b)]);
        assert_eq!(store.awaiting(at(99), 2).unwrap(), vec![(at(10), c), (at(20), b)], "at most the limit");
        // Removing needs the deadline it was noted with; another one removes nothing.
        store.apply(&[Change::StopAwaiting { id: c, until: at(11) }]).unwrap();
        assert_eq!(store.awaiting(at(10), 10).unwrap(), vec![(at(10), c)]);
        store
            .apply(&[
                Change::StopAwaiting { id: c, until: at(10) },
                Change::StopAwaiting { id: b, until: at(20) },
            ])
            .unwrap();
        assert_eq!(store.awaiting(at(99), 10).unwrap(), vec![(at(30), a)]);
    }

    pub(crate) fn announcement_notes_are_per_session_newest_first<S: Store + ?Sized>(store: &S) {
        let (one, two) = (SessionId([1; 16]), SessionId([2; 16]));
        assert!(store.announced(&one).unwrap().is_empty());
        let note = |session, last_day| Change::NoteAnnouncement { session, last_day };
        store.apply(&[note(one, 20_013), note(two, 20_100), note(one, 20_040), note(one, 20_013)]).unwrap();
        assert_eq!(store.announced(&one).unwrap(), vec![20_040, 20_013], "newest first, each once");
        assert_eq!(store.announced(&two).unwrap(), vec![20_100]);
        store.apply(&[Change::ForgetAnnouncement { session: one, last_day: 20_013 }]).unwrap();
        assert_eq!(store.announced(&one).unwrap(), vec![20_040]);
    }

    pub(crate) fn indexes_find_sessions<S: Store + ?Sized>(store: &S) {
        let (one, two) = (SessionId([1; 16]), SessionId([2; 16]));
        let (m1, m2) = (MailboxId([0xa1; 16]), MailboxId([0xa2; 16]));
        let (d1, d2) = ([0xd1; 32], [0xd2; 32]);
        store
            .apply(&[
                Change::IndexMailbox { mailbox: m1, session: one },
                Change::IndexMailbox { mailbox: m2, session: two },
                Change::IndexOpenDigest { digest: d1, session: one },
                Change::IndexOpenDigest { digest: d2, session: two },
            ])
            .unwrap();
        assert_eq!(store.session_by_mailbox(&m1).unwrap(), Some(one));
        assert_eq!(store.session_by_mailbox(&m2).unwrap(), Some(two));
        assert_eq!(store.session_by_open_digest(&d1).unwrap(), Some(one));
        assert_eq!(store.session_by_open_digest(&d2).unwrap(), Some(two));
        assert_eq!(store.session_by_mailbox(&MailboxId([0xa3; 16])).unwrap(), None);

        // Re-filing moves an entry; unindexing forgets it.
        store
            .apply(&[
                Change::IndexMailbox { mailbox: m1, session: two },
                Change::UnindexMailbox(m2),
                Change::UnindexOpenDigest(d1),
            ])
            .unwrap();
        assert_eq!(store.session_by_mailbox(&m1).unwrap(), Some(two));
        assert_eq!(store.session_by_mailbox(&m2).unwrap(), None);
        assert_eq!(store.session_by_open_digest(&d1).unwrap(), None);
        assert_eq!(store.session_by_open_digest(&d2).unwrap(), Some(two));
    }

    pub(crate) fn messages_are_stored_once_and_in_order<S: Store + ?Sized>(store: &S) {
        let mut f = Fixture::new(5);
        let mut expected = Vec::new();
        for i in 0..6 {
            let contact = if i % 3 == 2 { "carol" } else { "bob" };
            let mut m = f.message(contact, &format!("text {i}"));
            m.order = 1000 - i; // ignored: the store assigns the order
            store.apply(&[Change::PutMessage(m.clone())]).unwrap();
            expected.push(m);
        }
        let all = store.messages(None, 100).unwrap();
        assert_eq!(all.len(), 6);
        assert!(all.windows(2).all(|w| w[0].order < w[1].order));
        for (stored, put) in all.iter().zip(&expected) {
            assert_eq!(stored.id, put.id);
            assert_eq!(stored.text, put.text);
            assert_eq!(store.message(&put.id).unwrap().unwrap(), *stored);
        }

        // A duplicate id changes nothing, whatever it carries.
        let first = all[0].clone();
        let mut duplicate = f.message("carol", "a different text");
        duplicate.id = first.id;
        duplicate.status = Status::Read;
        store.apply(&[Change::PutMessage(duplicate.clone()), Change::PutMessage(duplicate)]).unwrap();
        assert_eq!(store.message(&first.id).unwrap().unwrap(), first);
        assert_eq!(store.messages(None, 100).unwrap(), all);

        // Per conversation: the newest `limit`, oldest first.
        let bob: Vec<_> = all.iter().filter(|m| m.contact == "bob").cloned().collect();
        assert_eq!(store.messages(Some("bob"), 100).unwrap(), bob);
        assert_eq!(store.messages(Some("bob"), 2).unwrap(), bob[bob.len() - 2..].to_vec());
        assert_eq!(store.messages(None, 3).unwrap(), all[3..].to_vec());
        assert_eq!(store.messages(Some("carol"), 100).unwrap().len(), 2);
        assert!(store.messages(Some("bo"), 100).unwrap().is_empty());
        assert!(store.messages(Some("bobby"), 100).unwrap().is_empty());
        assert!(store.messages(Some("bob"), 0).unwrap().is_empty());

        // Orders keep increasing after more messages.
        let later = f.message("bob", "later");
        store.apply(&[Change::PutMessage(later.clone())]).unwrap();
        assert!(store.message(&later.id).unwrap().unwrap().order > all[5].order);
    }

    pub(crate) fn status_only_moves_forward<S: Store + ?Sized>(store: &S) {
        let mut f = Fixture::new(6);
        let (a, b) = (f.message("bob", "a"), f.message("bob", "b"));
        store.apply(&[Change::PutMessage(a.clone()), Change::PutMessage(b.clone())]).unwrap();
        let status = |id: &MessageId| {
            let m = store.message(id).unwrap().unwrap();
            (m.status, m.reason)
        };
        let set = |id: MessageId, status: Status, reason: Option<&str>| {
            store.apply(&[Change::SetStatus { id, status, reason: reason.map(str::to_owned) }]).unwrap();
        };

        set(a.id, Status::Sent, None);
        assert_eq!(status(&a.id), (Status::Sent, None));
        set(a.id, Status::Queued, None);
        assert_eq!(status(&a.id), (Status::Sent, None), "moved back to queued");
        set(a.id, Status::Read, None);
        set(a.id, Status::Delivered, None);
        assert_eq!(status(&a.id), (Status::Read, None), "moved back to delivered");
        set(a.id, Status::Failed, Some("too late"));
        assert_eq!(status(&a.id), (Status::Read, None), "a read message failed");

        set(b.id, Status::Failed, Some("expired"));
        assert_eq!(status(&b.id), (Status::Failed, Some("expired".to_owned())));
        set(b.id, Status::Sent, None);
        set(b.id, Status::Queued, Some("again"));
        set(b.id, Status::Failed, Some("again"));
        assert_eq!(status(&b.id), (Status::Failed, Some("expired".to_owned())), "failed is terminal");
        // Except for the peer's own word: a late receipt proves delivery.
        set(b.id, Status::Delivered, None);
        assert_eq!(status(&b.id), (Status::Delivered, None), "a receipt overrides an expiry");

        // A receipt for a message we do not have is ignored, and does not spoil its batch.
        let c = f.message("bob", "c");
        store
            .apply(&[
                Change::SetStatus { id: MessageId([0xee; 16]), status: Status::Read, reason: None },
                Change::PutMessage(c.clone()),
            ])
            .unwrap();
        assert!(store.message(&MessageId([0xee; 16])).unwrap().is_none());
        assert!(store.message(&c.id).unwrap().is_some());
    }

    pub(crate) fn outbox_is_ordered_by_next_attempt<S: Store + ?Sized>(store: &S) {
        let mut f = Fixture::new(7);
        let (late, early, middle) = (f.outbox("bob", 300), f.outbox("carol", 100), f.outbox("bob", 200));
        store
            .apply(&[
                Change::PutOutbox(late.clone()),
                Change::PutOutbox(early.clone()),
                Change::PutOutbox(middle.clone()),
            ])
            .unwrap();
        assert_eq!(store.outbox().unwrap(), vec![early.clone(), middle.clone(), late.clone()]);
        assert_eq!(store.outbox_len().unwrap(), 3);

        // A retry moves the entry to its new place; it is still one entry.
        let mut retried = early.clone();
        retried.attempts = 1;
        retried.next_attempt_at = Timestamp(400);
        store.apply(&[Change::PutOutbox(retried.clone())]).unwrap();
        assert_eq!(store.outbox().unwrap(), vec![middle.clone(), late.clone(), retried.clone()]);
        assert_eq!(store.outbox_len().unwrap(), 3);

        store.apply(&[Change::RemoveOutbox(late.id), Change::RemoveOutbox(MessageId([0; 16]))]).unwrap();
        assert_eq!(store.outbox().unwrap(), vec![middle.clone(), retried]);
        assert_eq!(store.outbox_len().unwrap(), 2);
        store.apply(&[Change::RemoveOutbox(late.id)]).unwrap();
        assert_eq!(store.outbox_len().unwrap(), 2);

        // Equal times are ordered by id, and both are kept.
        let mut twin = f.outbox("bob", 200);
        twin.id = MessageId([0; 16]);
        store.apply(&[Change::PutOutbox(twin.clone())]).unwrap();
        assert_eq!(store.outbox().unwrap()[..2], [twin, middle]);
        assert_eq!(store.outbox_len().unwrap(), 3);
    }

    pub(crate) fn head(entry: &OutboxEntry) -> OutboxHead {
        OutboxHead { id: entry.id, contact: entry.contact.clone(), next_attempt_at: entry.next_attempt_at }
    }

    pub(crate) fn outbox_heads_are_each_contacts_oldest_entry<S: Store + ?Sized>(store: &S) {
        let mut f = Fixture::new(10);
        let entry = |f: &mut Fixture, contact: &str, created_at: u64, seq: u64, next: u64| OutboxEntry {
            created_at: Timestamp(created_at),
            seq,
            ..f.outbox(contact, next)
        };
        // Bob's oldest entry is tried late; his later ones are due earlier but wait behind it.
        let b1 = entry(&mut f, "bob", 10, 7, 100);
        let b2 = entry(&mut f, "bob", 10, 8, 50);
        let b3 = entry(&mut f, "bob", 11, 0, 10);
        let c1 = entry(&mut f, "carol", 20, 0, 300);
        store
            .apply(&[
                Change::PutOutbox(b3.clone()),
                Change::PutOutbox(c1.clone()),
                Change::PutOutbox(b2.clone()),
                Change::PutOutbox(b1.clone()),
            ])
            .unwrap();
        assert_eq!(store.outbox_head("bob").unwrap(), Some(head(&b1)));
        assert_eq!(store.outbox_head("carol").unwrap(), Some(head(&c1)));
        assert_eq!(store.outbox_head("bo").unwrap(), None);
        assert_eq!(store.outbox_head("bobby").unwrap(), None);
        assert_eq!(store.outbox_entry(&b2.id).unwrap(), Some(b2.clone()));
        assert_eq!(store.outbox_entry(&MessageId([0xee; 16])).unwrap(), None);
        assert!(store.outbox_due(Timestamp(99)).unwrap().is_empty());
        assert_eq!(store.outbox_due(Timestamp(100)).unwrap(), vec![head(&b1)]);
        assert_eq!(store.outbox_due(Timestamp(1000)).unwrap(), vec![head(&b1), head(&c1)]);

        // A retry moves the head to its new time.
        let retried = OutboxEntry { attempts: 1, next_attempt_at: Timestamp(500), ..b1.clone() };
        store.apply(&[Change::PutOutbox(retried.clone())]).unwrap();
        assert_eq!(store.outbox_due(Timestamp(400)).unwrap(), vec![head(&c1)]);
        assert_eq!(store.outbox_due(Timestamp(500)).unwrap(), vec![head(&c1), head(&retried)]);

        // Delivered: the next one in order becomes the head, due at its own time.
        store.apply(&[Change::RemoveOutbox(b1.id)]).unwrap();
        assert_eq!(store.outbox_head("bob").unwrap(), Some(head(&b2)));
        assert_eq!(store.outbox_due(Timestamp(60)).unwrap(), vec![head(&b2)]);

        // Within one batch: the head leaves and an older entry arrives.
        let b0 = entry(&mut f, "bob", 5, 0, 70);
        store.apply(&[Change::RemoveOutbox(b2.id), Change::PutOutbox(b0.clone())]).unwrap();
        assert_eq!(store.outbox_head("bob").unwrap(), Some(head(&b0)));
        assert_eq!(store.outbox_due(Timestamp(1000)).unwrap(), vec![head(&b0), head(&c1)]);

        // An entry put under another contact leaves the first contact's queue.
        let moved = OutboxEntry { contact: "carol".into(), ..b0.clone() };
        store.apply(&[Change::PutOutbox(moved.clone())]).unwrap();
        assert_eq!(store.outbox_head("bob").unwrap(), Some(head(&b3)));
        assert_eq!(store.outbox_head("carol").unwrap(), Some(head(&moved)));
        assert_eq!(store.outbox_due(Timestamp(1000)).unwrap(), vec![head(&b3), head(&moved)]);

        // Empty queues have no head.
        store
            .apply(&[
                Change::RemoveOutbox(b3.id),
                Change::RemoveOutbox(moved.id),
                Change::RemoveOutbox(c1.id),
            ])
            .unwrap();
        assert_eq!(store.outbox_head("bob").unwrap(), None);
        assert_eq!(store.outbox_head("carol").unwrap(), None);
        assert!(store.outbox_due(Timestamp(u64::MAX)).unwrap().is_empty());
        assert_eq!(store.outbox_len().unwrap(), 0);
    }

    pub(crate) fn a_contacts_queue_is_listed_in_delivery_order<S: Store + ?Sized>(store: &S) {
        let mut f = Fixture::new(11);
        let entry = |f: &mut Fixture, contact: &str, created_at: u64, seq: u64, next: u64| OutboxEntry {
            created_at: Timestamp(created_at),
            seq,
            ..f.outbox(contact, next)
        };
        // Delivery order is (created, seq), whatever each entry's next attempt says.
        let b = [
            entry(&mut f, "bob", 10, 7, 900),
            entry(&mut f, "bob", 10, 8, 50),
            entry(&mut f, "bob", 11, 0, 10),
            entry(&mut f, "bob", 12, 0, 10),
        ];
        let c = entry(&mut f, "carol", 5, 0, 1);
        let bobby = entry(&mut f, "bobby", 1, 0, 1);
        let mut changes: Vec<Change> = b.iter().rev().cloned().map(Change::PutOutbox).collect();
        changes.extend([Change::PutOutbox(c.clone()), Change::PutOutbox(bobby.clone())]);
        store.apply(&changes).unwrap();

        let all: Vec<OutboxHead> = b.iter().map(head).collect();
        assert_eq!(store.outbox_queue("bob", 100).unwrap(), all);
        assert_eq!(store.outbox_queue("bob", 2).unwrap(), all[..2]);
        assert!(store.outbox_queue("bob", 0).unwrap().is_empty());
        assert_eq!(store.outbox_queue("carol", 64).unwrap(), vec![head(&c)]);
        assert!(store.outbox_queue("bo", 64).unwrap().is_empty());
        assert!(store.outbox_queue("nobody", 64).unwrap().is_empty());

        // A retry changes an entry's time, not its place; delivered entries leave the queue.
        let retried = OutboxEntry { attempts: 1, next_attempt_at: Timestamp(5000), ..b[0].clone() };
        store.apply(&[Change::PutOutbox(retried.clone()), Change::RemoveOutbox(b[2].id)]).unwrap();
        assert_eq!(store.outbox_queue("bob", 64).unwrap(), vec![head(&retried), head(&b[1]), head(&b[3])]);
    }

    pub(crate) fn a_failing_batch_applies_nothing<S: Store + ?Sized>(store: &S) {
        let mut f = Fixture::new(8);
        let (bob, first) = (f.contact("bob"), f.message("bob", "first"));
        store.apply(&[Change::AddContact(bob.clone()), Change::PutMessage(first.clone())]).unwrap();
        let order = store.message(&first.id).unwrap().unwrap().order;

        let (session, message, entry) = (f.session("bob"), f.message("bob", "lost"), f.outbox("bob", 1));
        let mut renamed = bob.clone();
        renamed.peer_id = vec![1, 2, 3];
        let err = store
            .apply(&[
                Change::PutSession(session.clone()),
                Change::IndexMailbox { mailbox: MailboxId([3; 16]), session: session.id },
                Change::PutMessage(message.clone()),
                Change::SetStatus { id: first.id, status: Status::Sent, reason: None },
                Change::PutOutbox(entry.clone()),
                Change::RemoveOutbox(entry.id),
                Change::PutContact(renamed),
                Change::AddContact(f.contact("bob")),
                Change::PutProfile(f.profile()),
            ])
            .unwrap_err();
        assert!(matches!(err, StoreError::Conflict { .. }), "{err}");
        assert!(store.session(&session.id).unwrap().is_none());
        assert!(store.session_by_mailbox(&MailboxId([3; 16])).unwrap().is_none());
        assert!(store.message(&message.id).unwrap().is_none());
        assert_eq!(store.message(&first.id).unwrap().unwrap().status, Status::Queued);
        assert!(store.outbox().unwrap().is_empty());
        assert_eq!(store.outbox_len().unwrap(), 0);
        assert!(store.outbox_head("bob").unwrap().is_none());
        assert!(store.outbox_due(Timestamp(u64::MAX)).unwrap().is_empty());
        assert_eq!(store.contact("bob").unwrap().unwrap(), bob);
        assert!(store.profile().unwrap().is_none());
        assert_eq!(store.messages(None, 10).unwrap().len(), 1);

        // Nor did it use up an order number.
        store.apply(&[Change::PutMessage(message.clone())]).unwrap();
        assert_eq!(store.message(&message.id).unwrap().unwrap().order, order + 1);

        // A value too large to store fails its batch the same way.
        let huge = f.message("bob", &"x".repeat(MAX_VALUE_LEN));
        let small = f.message("bob", "small");
        let err = store.apply(&[Change::PutMessage(small.clone()), Change::PutMessage(huge)]).unwrap_err();
        assert!(matches!(err, StoreError::TooLarge { .. }), "{err}");
        assert!(store.message(&small.id).unwrap().is_none());
    }

    pub(crate) fn changes_in_a_batch_see_each_other<S: Store + ?Sized>(store: &S) {
        let mut f = Fixture::new(9);
        let m = f.message("bob", "hi");
        let entry = f.outbox("bob", 5);
        store
            .apply(&[
                Change::PutMessage(m.clone()),
                Change::SetStatus { id: m.id, status: Status::Sent, reason: None },
                Change::PutOutbox(entry.clone()),
                Change::RemoveOutbox(entry.id),
                Change::PutOutbox(entry.clone()),
            ])
            .unwrap();
        assert_eq!(store.message(&m.id).unwrap().unwrap().status, Status::Sent);
        assert_eq!(store.outbox().unwrap(), vec![entry]);
        assert_eq!(store.outbox_len().unwrap(), 1);

        let err = store.apply(&[Change::AddContact(f.contact("eve")), Change::AddContact(f.contact("eve"))]);
        assert!(matches!(err, Err(StoreError::Conflict { .. })));
        assert!(store.contact("eve").unwrap().is_none());
    }

    /// Paging back and searching read the conversation (or all of them) from a point back.
    pub(crate) fn history_pages_back_and_is_searched<S: Store + ?Sized>(store: &S) {
        let mut f = Fixture::new(32);
        let mut changes = vec![Change::AddContact(f.contact("ann")), Change::AddContact(f.contact("bo"))];
        for i in 0..6 {
            changes.push(Change::PutMessage(f.message("ann", &format!("ann {i}"))));
            changes.push(Change::PutMessage(f.message("bo", &format!("Bo {i} ÄPFEL"))));
        }
        store.apply(&changes).unwrap();
        let texts = |messages: Vec<StoredMessage>| messages.into_iter().map(|m| m.text).collect::<Vec<_>>();
        let ann = store.messages(Some("ann"), 2).unwrap();
        assert_eq!(texts(ann.clone()), ["ann 4", "ann 5"]);
        let before = store.messages_before(Some("ann"), ann[0].order, 3).unwrap();
        assert_eq!(texts(before.clone()), ["ann 1", "ann 2", "ann 3"]);
        assert_eq!(texts(store.messages_before(Some("ann"), before[0].order, 3).unwrap()), ["ann 0"]);
        assert!(store.messages_before(Some("ann"), 0, 3).unwrap().is_empty());
        assert!(store.messages_before(Some("ann"), u64::MAX, 0).unwrap().is_empty());
        // All conversations, by the order they were stored in (each "ann i" before "Bo i").
        let all = store.messages_before(None, ann[0].order, 3).unwrap();
        assert_eq!(texts(all), ["Bo 2 ÄPFEL", "ann 3", "Bo 3 ÄPFEL"].map(String::from));
        assert!(store.messages_before(Some("nobody"), u64::MAX, 3).unwrap().is_empty());

        assert_eq!(texts(store.search(None, "äpfel", 2).unwrap()), ["Bo 4 ÄPFEL", "Bo 5 ÄPFEL"]);
        // The same, with the umlaut typed as `a` and a combining diaeresis.
        assert_eq!(texts(store.search(None, "a\u{308}pfel", 2).unwrap()), ["Bo 4 ÄPFEL", "Bo 5 ÄPFEL"]);
        assert_eq!(texts(store.search(Some("ann"), "ANN 3", 10).unwrap()), ["ann 3"]);
        assert!(store.search(Some("ann"), "äpfel", 10).unwrap().is_empty());
        assert_eq!(store.search(None, "", 100).unwrap().len(), 12, "the empty text is in every message");
    }

    pub(crate) fn messages_are_deleted_and_conversations_cleared<S: Store + ?Sized>(store: &S) {
        let mut f = Fixture::new(33);
        let bob: Vec<StoredMessage> = (0..3).map(|i| f.message("bob", &format!("bob {i}"))).collect();
        let ann = f.message("ann", "ann 0");
        let mut changes = vec![Change::AddContact(f.contact("ann")), Change::AddContact(f.contact("bob"))];
        changes.extend(bob.iter().chain([&ann]).cloned().map(Change::PutMessage));
        store.apply(&changes).unwrap();
        let texts = |messages: Vec<StoredMessage>| messages.into_iter().map(|m| m.text).collect::<Vec<_>>();

        // One deleted: gone from every read; the rest of the conversation, re-keyed, still reads.
        store.apply(&[Change::DeleteMessage(bob[1].id)]).unwrap();
        assert_eq!(store.message(&bob[1].id).unwrap(), None);
        assert_eq!(texts(store.messages(Some("bob"), 10).unwrap()), ["bob 0", "bob 2"]);
        assert_eq!(texts(store.messages(None, 10).unwrap()), ["bob 0", "bob 2", "ann 0"]);
        assert!(store.search(None, "bob 1", 10).unwrap().is_empty());
        assert_eq!(store.message(&bob[2].id).unwrap().map(|m| m.text).as_deref(), Some("bob 2"));
        // Deleting what is not there changes nothing.
        store
            .apply(&[Change::DeleteMessage(bob[1].id), Change::DeleteMessage(MessageId([0xEE; 16]))])
            .unwrap();
        assert_eq!(store.messages(None, 10).unwrap().len(), 3);

        // The texts follow a rename; a new message joins the conversation under its key.
        store.apply(&[Change::RenameContact { from: "bob".into(), to: "robert".into() }]).unwrap();
        store.apply(&[Change::PutMessage(f.message("robert", "robert 3"))]).unwrap();
        assert_eq!(texts(store.messages(Some("robert"), 10).unwrap()), ["bob 0", "bob 2", "robert 3"]);

        // Cleared: no message of Robert's is left; Robert and Ann's conversation stay.
        store.apply(&[Change::ClearConversation("robert".into())]).unwrap();
        assert!(store.messages(Some("robert"), 10).unwrap().is_empty());
        assert_eq!(texts(store.messages(None, 10).unwrap()), ["ann 0"]);
        assert!(store.contact("robert").unwrap().is_some());
        // A conversation cleared starts again with a key of its own.
        store.apply(&[Change::PutMessage(f.message("robert", "again"))]).unwrap();
        assert_eq!(texts(store.messages(Some("robert"), 10).unwrap()), ["again"]);
        // The last message of a conversation deleted.
        store.apply(&[Change::DeleteMessage(ann.id)]).unwrap();
        assert!(store.messages(Some("ann"), 10).unwrap().is_empty());
    }

    pub(crate) fn unread_messages_are_indexed<S: Store + ?Sized>(store: &S) {
        let mut f = Fixture::new(36);
        let incoming = |f: &mut Fixture, text: &str| StoredMessage {
            direction: Direction::In,
            status: Status::Delivered,
            ..f.message("bob", text)
        };
        let ins: Vec<StoredMessage> = (0..4).map(|i| incoming(&mut f, &format!("in {i}"))).collect();
        let mut changes =
            vec![Change::AddContact(f.contact("bob")), Change::PutMessage(f.message("bob", "out"))];
        changes.extend(ins.iter().cloned().map(Change::PutMessage));
        changes.push(Change::PutMessage(StoredMessage { status: Status::Read, ..incoming(&mut f, "read") }));
        store.apply(&changes).unwrap();
        let ids = |v: &[&StoredMessage]| v.iter().map(|m| m.id).collect::<Vec<_>>();
        assert_eq!(store.unread("bob").unwrap(), ids(&[&ins[0], &ins[1], &ins[2], &ins[3]]));
        store.apply(&[Change::SetStatus { id: ins[1].id, status: Status::Read, reason: None }]).unwrap();
        store.apply(&[Change::DeleteMessage(ins[2].id)]).unwrap();
        assert_eq!(store.unread("bob").unwrap(), ids(&[&ins[0], &ins[3]]));
        assert_eq!(store.unread_count("bob").unwrap(), 2);
        // Sweep progress, per relay.
        assert_eq!(store.swept_through(b"relay a").unwrap(), None);
        store.apply(&[Change::NoteSwept { relay: b"relay a".to_vec(), through: 20_000 }]).unwrap();
        assert_eq!(store.swept_through(b"relay a").unwrap(), Some(20_000));
        assert_eq!(store.swept_through(b"relay b").unwrap(), None);
        store.apply(&[Change::RenameContact { from: "bob".into(), to: "rob".into() }]).unwrap();
        assert!(store.unread("bob").unwrap().is_empty());
        assert_eq!(store.unread("rob").unwrap(), ids(&[&ins[0], &ins[3]]));
        store.apply(&[Change::ClearConversation("rob".into())]).unwrap();
        assert!(store.unread("rob").unwrap().is_empty());
    }

    pub(crate) fn pieces_of_long_texts_are_kept_per_contact_and_group<S: Store + ?Sized>(store: &S) {
        let mut f = Fixture::new(37);
        let piece = |contact: &str, group: [u8; 16], index: u16, at: u64| StoredFragment {
            contact: contact.into(),
            group,
            index,
            count: 3,
            total_len: 3 * 49_152,
            seq: u64::from(index),
            sent_at: Timestamp(at),
            received_at: Timestamp(at),
            chunk: vec![index as u8; 49_152],
        };
        let (g1, g2) = (f.bytes::<16>(), f.bytes::<16>());
        store.apply(&[Change::AddContact(f.contact("bob")), Change::AddContact(f.contact("bobby"))]).unwrap();
        store
            .apply(&[
                Change::PutFragment(piece("bob", g1, 2, 10)),
                Change::PutFragment(piece("bob", g1, 0, 20)),
                Change::PutFragment(piece("bob", g2, 1, 30)),
                // A name that starts with another's is another contact.
                Change::PutFragment(piece("bobby", g1, 0, 40)),
            ])
            .unwrap();
        let indexes = |contact: &str, group| -> Vec<u16> {
            store.fragments(contact, &group).unwrap().iter().map(|p| p.index).collect()
        };
        assert_eq!(indexes("bob", g1), [0, 2], "by index");
        assert_eq!(store.fragments("bob", &g1).unwrap()[1].chunk, vec![2u8; 49_152]);
        let mut groups = store.fragment_groups("bob").unwrap();
        groups.sort();
        let mut expected = vec![g1, g2];
        expected.sort();
        assert_eq!(groups, expected);
        assert_eq!(store.fragment_groups("bobby").unwrap(), [g1]);
        assert_eq!(store.stale_fragments(Timestamp(25)).unwrap(), [("bob".to_owned(), g1)]);

        store.apply(&[Change::RemoveFragments { contact: "bob".into(), group: g2 }]).unwrap();
        assert_eq!(store.fragment_groups("bob").unwrap(), [g1]);
        // They follow a rename, and go with a cleared conversation or a removed contact.
        store.apply(&[Change::RenameContact { from: "bob".into(), to: "rob".into() }]).unwrap();
        assert!(store.fragment_groups("bob").unwrap().is_empty());
        assert_eq!(indexes("rob", g1), [0, 2]);
        assert_eq!(store.fragments("rob", &g1).unwrap()[0].contact, "rob");
        store.apply(&[Change::ClearConversation("rob".into())]).unwrap();
        assert!(store.fragment_groups("rob").unwrap().is_empty());
        store.apply(&[Change::RemoveContact("bobby".into())]).unwrap();
        assert!(store.fragment_groups("bobby").unwrap().is_empty());
        assert!(store.stale_fragments(Timestamp(u64::MAX)).unwrap().is_empty());

        // An outbox entry's note of the text it carries a piece of goes with the entry.
        let entry = f.outbox("rob", 5);
        let part_of = PartOf { message: MessageId(g1) };
        store
            .apply(&[Change::PutOutbox(entry.clone()), Change::NotePartOf { id: entry.id, part_of }])
            .unwrap();
        assert_eq!(store.part_of(&entry.id).unwrap(), Some(part_of));
        store.apply(&[Change::RemoveOutbox(entry.id)]).unwrap();
        assert_eq!(store.part_of(&entry.id).unwrap(), None);
    }

    pub(crate) fn files_are_kept_with_their_message_and_go_with_it<S: Store + ?Sized>(store: &S) {
        let mut f = Fixture::new(38);
        let (with_file, away, plain) =
            (f.message("bob", "caption"), f.message("bob", ""), f.message("bob", "text"));
        let info = |name: &str, here| FileInfo {
            name: name.into(),
            media_type: "image/png".into(),
            len: 3,
            hash: [7; 32],
            here,
        };
        store
            .apply(&[
                Change::AddContact(f.contact("bob")),
                Change::PutMessage(with_file.clone()),
                Change::PutMessage(away.clone()),
                Change::PutMessage(plain.clone()),
                Change::PutFile {
                    id: with_file.id,
                    info: info("a.png", true),
                    data: Some(Zeroizing::new(vec![1, 2, 3])),
                },
                Change::PutFile { id: away.id, info: info("b.png", false), data: None },
            ])
            .unwrap();
        assert_eq!(store.file_info(&with_file.id).unwrap(), Some(info("a.png", true)));
        assert_eq!(store.file_data(&with_file.id).unwrap().map(|d| d.to_vec()), Some(vec![1, 2, 3]));
        assert_eq!(store.file_info(&away.id).unwrap(), Some(info("b.png", false)));
        assert!(store.file_data(&away.id).unwrap().is_none());
        assert!(store.file_info(&plain.id).unwrap().is_none());
        store.apply(&[Change::DeleteMessage(with_file.id)]).unwrap();
        assert!(
            store.file_info(&with_file.id).unwrap().is_none()
                && store.file_data(&with_file.id).unwrap().is_none()
        );
        store.apply(&[Change::ClearConversation("bob".into())]).unwrap();
        assert!(store.file_info(&away.id).unwrap().is_none());
    }

    pub(crate) fn requests_and_blocks_round_trip<S: Store + ?Sized>(store: &S) {
        let mut f = Fixture::new(30);
        let identity = f.contact("x").identity;
        let request = ContactRequest {
            id: RequestId::of(&identity),
            identity,
            suggested_name: Some("Sari".into()),
            preview: Some("hi".into()),
            first_at: NOW,
            last_at: NOW,
            expires_at: NOW.plus(Timestamp::DAY),
            envelopes: vec![serde_bytes::ByteBuf::from(vec![7u8; 300])],
            dropped: 0,
        };
        assert!(store.requests().unwrap().is_empty());
        assert_eq!(store.requests_dropped().unwrap(), 0);
        store.apply(&[Change::PutRequest(request.clone()), Change::NoteRequestsDropped(3)]).unwrap();
        assert_eq!(store.request(&request.id).unwrap(), Some(request.clone()));
        assert_eq!(store.requests().unwrap(), std::slice::from_ref(&request));
        store.apply(&[Change::NoteRequestsDropped(1)]).unwrap();
        assert_eq!(store.requests_dropped().unwrap(), 4);
        // Envelopes a full request refused are counted apart, and read back with it.
        store
            .apply(&[Change::CountRefusedEnvelope(request.id), Change::CountRefusedEnvelope(request.id)])
            .unwrap();
        assert_eq!(store.request(&request.id).unwrap().unwrap().dropped, 2);
        assert_eq!(store.requests().unwrap()[0].dropped, 2);
        store.apply(&[Change::RemoveRequest(request.id)]).unwrap();
        assert!(store.request(&request.id).unwrap().is_none());
        store.apply(&[Change::PutRequest(request.clone())]).unwrap();
        assert_eq!(store.request(&request.id).unwrap().unwrap().dropped, 0, "the count went with it");
        store.apply(&[Change::RemoveRequest(request.id)]).unwrap();

        // Dismissals hold until their time, then a purge forgets them, oldest first.
        let (early, late) = ([1u8; 32], [2u8; 32]);
        store
            .apply(&[
                Change::Dismiss { digest: late, until: NOW.plus(2 * Timestamp::DAY) },
                Change::Dismiss { digest: early, until: NOW.plus(Timestamp::DAY) },
            ])
            .unwrap();
        assert!(store.is_dismissed(&early).unwrap() && store.is_dismissed(&late).unwrap());
        assert!(!store.is_dismissed(&[3; 32]).unwrap());
        store.apply(&[Change::PurgeDismissed { now: NOW.plus(Timestamp::DAY), limit: 10 }]).unwrap();
        assert!(!store.is_dismissed(&early).unwrap() && store.is_dismissed(&late).unwrap());
        // A later dismissal of the same digest moves its time.
        store.apply(&[Change::Dismiss { digest: late, until: NOW.plus(5 * Timestamp::DAY) }]).unwrap();
        store.apply(&[Change::PurgeDismissed { now: NOW.plus(3 * Timestamp::DAY), limit: 10 }]).unwrap();
        assert!(store.is_dismissed(&late).unwrap());
        store.apply(&[Change::PurgeDismissed { now: NOW.plus(5 * Timestamp::DAY), limit: 10 }]).unwrap();
        assert!(!store.is_dismissed(&late).unwrap());
        assert_eq!(store.dismissed_len().unwrap(), 0);

        // Bounded: a trim keeps the ones that run out last, and the count follows every change.
        let changes: Vec<Change> = (0..5u8)
            .map(|n| Change::Dismiss { digest: [n; 32], until: NOW.plus(u64::from(n) * Timestamp::DAY) })
            .collect();
        store.apply(&changes).unwrap();
        store.apply(&[Change::Dismiss { digest: [4; 32], until: NOW.plus(9 * Timestamp::DAY) }]).unwrap();
        assert_eq!(store.dismissed_len().unwrap(), 5, "a repeated digest is counted once");
        store.apply(&[Change::TrimDismissed { keep: 2 }]).unwrap();
        assert_eq!(store.dismissed_len().unwrap(), 2);
        let kept: Vec<u8> = (0..5u8).filter(|n| store.is_dismissed(&[*n; 32]).unwrap()).collect();
        assert_eq!(kept, [3, 4]);
        store.apply(&[Change::PurgeDismissed { now: NOW.plus(100 * Timestamp::DAY), limit: 1 }]).unwrap();
        assert_eq!(store.dismissed_len().unwrap(), 1, "a purge forgets at most its limit");

        let blocked = Blocked { identity, label: "Sari".into(), at: NOW, sessions: vec![SessionId([4; 16])] };
        assert!(!store.is_blocked(&identity).unwrap());
        store.apply(&[Change::Block(blocked.clone())]).unwrap();
        assert!(store.is_blocked(&identity).unwrap());
        assert_eq!(store.blocked().unwrap(), [blocked]);
        store.apply(&[Change::Unblock(identity)]).unwrap();
        assert!(!store.is_blocked(&identity).unwrap() && store.blocked().unwrap().is_empty());
    }

    /// Renaming moves the conversation and the queue (with its head) to the new name, and
    /// removing deletes them with every index entry: the other contact is untouched either way.
    pub(crate) fn contacts_are_renamed_and_removed_with_what_they_own<S: Store + ?Sized>(store: &S) {
        let mut f = Fixture::new(31);
        let (ann, bob) = (f.contact("ann"), f.contact("bob"));
        let mut changes = vec![Change::AddContact(ann), Change::AddContact(bob)];
        for name in ["ann", "bob"] {
            for i in 0..3 {
                changes.push(Change::PutMessage(f.message(name, &format!("{name} {i}"))));
                changes.push(Change::PutOutbox(f.outbox(name, 100 + i)));
            }
        }
        store.apply(&changes).unwrap();
        let ann_queue: Vec<MessageId> = store.outbox_queue("ann", 10).unwrap().iter().map(|h| h.id).collect();
        let before = store.outbox_len().unwrap();

        // A taken name is refused and changes nothing.
        let taken = store.apply(&[Change::RenameContact { from: "ann".into(), to: "bob".into() }]);
        assert!(matches!(taken, Err(StoreError::Conflict { .. })), "{taken:?}");
        assert_eq!(store.messages(Some("ann"), 10).unwrap().len(), 3);

        store.apply(&[Change::RenameContact { from: "ann".into(), to: "Ann Lee".into() }]).unwrap();
        assert!(store.contact("ann").unwrap().is_none());
        assert_eq!(store.contact("Ann Lee").unwrap().unwrap().name, "Ann Lee");
        let moved = store.messages(Some("Ann Lee"), 10).unwrap();
        assert_eq!(moved.iter().map(|m| m.text.as_str()).collect::<Vec<_>>(), ["ann 0", "ann 1", "ann 2"]);
        assert!(moved.iter().all(|m| m.contact == "Ann Lee"));
        assert!(store.messages(Some("ann"), 10).unwrap().is_empty());
        let queue: Vec<MessageId> = store.outbox_queue("Ann Lee", 10).unwrap().iter().map(|h| h.id).collect();
        assert_eq!(queue, ann_queue);
        assert!(store.outbox_queue("ann", 10).unwrap().is_empty());
        let due = store.outbox_due(Timestamp(u64::MAX)).unwrap();
        assert_eq!(due.iter().filter(|h| h.contact == "Ann Lee").count(), 1, "{due:?}");
        assert!(due.iter().all(|h| h.contact != "ann"));
        assert!(store.outbox().unwrap().iter().all(|e| e.contact != "ann"));
        assert_eq!(store.outbox_len().unwrap(), before);

        store.apply(&[Change::RemoveContact("Ann Lee".into())]).unwrap();
        assert!(store.contact("Ann Lee").unwrap().is_none());
        assert!(store.messages(Some("Ann Lee"), 10).unwrap().is_empty());
        let all: Vec<String> = store.messages(None, 10).unwrap().into_iter().map(|m| m.contact).collect();
        assert_eq!(all, ["bob", "bob", "bob"]);
        assert!(store.outbox_queue("Ann Lee", 10).unwrap().is_empty());
        assert_eq!(store.outbox_len().unwrap(), before - 3);
        assert_eq!(store.outbox().unwrap().len(), 3);
        let due = store.outbox_due(Timestamp(u64::MAX)).unwrap();
        assert_eq!(due.iter().map(|h| h.contact.as_str()).collect::<Vec<_>>(), ["bob"]);
        assert_eq!(store.contacts().unwrap().len(), 1);
    }
}

fn open_sled(dir: &Path) -> SledStore {
    open_store(dir, 1).unwrap()
}

/// Opens the sled store in `dir` with the key file made from `seed`.
fn open_store(dir: &Path, seed: u64) -> Result<SledStore, StoreError> {
    support::open_sled_store(dir, seed)
}

macro_rules! conformance {
    ($($test:ident),* $(,)?) => {
        mod memory {
            use super::*;
            // Through `dyn Store`, as the daemon holds it.
            $(#[test] fn $test() { conformance::$test(&MemoryStore::new() as &dyn Store); })*
        }
        mod sled_store {
            use super::*;
            $(#[test] fn $test() {
                let dir = tempfile::tempdir().unwrap();
                conformance::$test(&open_sled(dir.path()));
            })*
        }
    };
}

conformance!(
    empty_store_reads_nothing,
    profile_round_trips,
    contacts_add_conflict_and_list,
    two_racing_adds_of_one_name_one_wins,
    sessions_round_trip_and_are_removed,
    indexes_find_sessions,
    messages_are_stored_once_and_in_order,
    status_only_moves_forward,
    outbox_is_ordered_by_next_attempt,
    outbox_heads_are_each_contacts_oldest_entry,
    a_contacts_queue_is_listed_in_delivery_order,
    a_failing_batch_applies_nothing,
    changes_in_a_batch_see_each_other,
    relays_are_replaced_as_a_whole,
    stored_statuses_and_reasons,
    receipt_deadlines_are_listed_soonest_first_and_removed,
    announcement_notes_are_per_session_newest_first,
    requests_and_blocks_round_trip,
    contacts_are_renamed_and_removed_with_what_they_own,
    history_pages_back_and_is_searched,
    messages_are_deleted_and_conversations_cleared,
    unread_messages_are_indexed,
    pieces_of_long_texts_are_kept_per_contact_and_group,
    files_are_kept_with_their_message_and_go_with_it,
);

/// Tests of what only the disk store has.
mod sled_only {
    use super::*;

    /// sled's directory inside a store directory.
    fn sled_dir(dir: &Path) -> PathBuf {
        dir.join("sled")
    }

    /// Runs `edit` on the raw sled database of a closed store.
    fn edit_raw(dir: &Path, edit: impl FnOnce(&sled::Db)) {
        let db = support::when_unlocked(|| sled::open(sled_dir(dir)), support::still_locked).unwrap();
        edit(&db);
        db.flush().unwrap();
    }

    /// Everything a full store holds, to check after reopening or rotating.
    struct Contents {
        profile: Vec<u8>,
        contacts: Vec<Contact>,
        sessions: Vec<SessionRecord>,
        messages: Vec<StoredMessage>,
        outbox: Vec<OutboxEntry>,
        relays: Vec<Vec<u8>>,
    }

    fn fill(store: &SledStore, f: &mut Fixture) -> Contents {
        let profile = f.profile();
        let profile_bytes = encoded(&profile);
        let contacts = vec![f.contact("alice"), f.contact("bob")];
        let sessions = vec![f.session("alice"), f.session("bob")];
        let mut changes = vec![Change::PutProfile(profile)];
        changes.extend(contacts.iter().cloned().map(Change::AddContact));
        changes.extend(sessions.iter().cloned().map(Change::PutSession));
        changes.push(Change::IndexMailbox { mailbox: MailboxId([7; 16]), session: sessions[0].id });
        changes.push(Change::IndexOpenDigest { digest: [8; 32], session: sessions[1].id });
        let relays = vec![b"relay one".to_vec(), b"relay two".to_vec()];
        changes.push(Change::SetRelays(relays.clone()));
        store.apply(&changes).unwrap();
        for i in 0..5 {
            let contact = if i % 2 == 0 { "alice" } else { "bob" };
            let m = f.message(contact, &format!("message number {i}"));
            let entry = OutboxEntry { seq: 10 - i, ..f.outbox(contact, 100 - i) };
            store.apply(&[Change::PutMessage(m), Change::PutOutbox(entry)]).unwrap();
        }
        Contents {
            profile: profile_bytes,
            contacts,
            sessions,
            messages: store.messages(None, 100).unwrap(),
            outbox: store.outbox().unwrap(),
            relays,
        }
    }

    fn check(store: &SledStore, c: &Contents) {
        assert_eq!(encoded(&store.profile().unwrap().unwrap()), c.profile);
        assert_eq!(store.contacts().unwrap(), c.contacts);
        for s in &c.sessions {
            assert_same_session(&store.session(&s.id).unwrap().unwrap(), s);
        }
        assert_eq!(store.session_by_mailbox(&MailboxId([7; 16])).unwrap(), Some(c.sessions[0].id));
        assert_eq!(store.session_by_open_digest(&[8; 32]).unwrap(), Some(c.sessions[1].id));
        assert_eq!(store.messages(None, 100).unwrap(), c.messages);
        assert_eq!(store.outbox().unwrap(), c.outbox);
        assert_eq!(store.outbox_len().unwrap(), c.outbox.len());
        for entry in &c.outbox {
            assert_eq!(store.outbox_entry(&entry.id).unwrap().as_ref(), Some(entry));
        }
        let oldest = |contact: &str| {
            c.outbox
                .iter()
                .filter(|e| e.contact == contact)
                .min_by_key(|e| (e.created_at, e.seq, e.id.0))
                .map(conformance::head)
        };
        let mut due: Vec<OutboxHead> = ["alice", "bob"].into_iter().filter_map(oldest).collect();
        due.sort_by_key(|h| (h.next_attempt_at, h.id.0));
        assert_eq!(store.outbox_head("alice").unwrap(), oldest("alice"));
        assert_eq!(store.outbox_head("bob").unwrap(), oldest("bob"));
        assert_eq!(store.outbox_due(Timestamp(u64::MAX)).unwrap(), due);
        assert_eq!(store.relays().unwrap(), c.relays);
    }

    #[test]
    fn everything_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = Fixture::new(20);
        let contents = {
            let store = open_sled(dir.path());
            fill(&store, &mut f)
        };
        let store = open_sled(dir.path());
        check(&store, &contents);
        // The order counter continued from where it was.
        let m = f.message("alice", "after reopening");
        store.apply(&[Change::PutMessage(m.clone())]).unwrap();
        assert_eq!(store.message(&m.id).unwrap().unwrap().order, contents.messages.last().unwrap().order + 1);
    }

    /// Reads and writes of a damaged store: each may fail, but only with `Corrupt` (or, for a
    /// sealed record whose key id was hit, `KeyUnavailable`); with `strict`, each must fail.
    fn check_damaged(store: &SledStore, contents: &Contents, strict: bool, name: &str) {
        fn judge<T: std::fmt::Debug>(result: Result<T, StoreError>, strict: bool, what: &str) {
            match result {
                Err(StoreError::Corrupt { .. } | StoreError::KeyUnavailable { .. }) => {}
                Ok(value) if !strict => drop(value),
                other => panic!("{what}: {other:?}"),
            }
        }
        let id = contents.messages[0].id;
        judge(store.contacts(), strict, &format!("{name}: contacts"));
        judge(store.contact("alice"), strict, &format!("{name}: contact"));
        // Sealed: any damage is caught.
        judge(store.session(&contents.sessions[0].id), true, &format!("{name}: session"));
        judge(store.session_by_mailbox(&MailboxId([7; 16])), strict, &format!("{name}: mailbox index"));
        judge(store.session_by_open_digest(&[8; 32]), strict, &format!("{name}: digest index"));
        judge(store.message(&id), strict, &format!("{name}: message"));
        judge(store.messages(None, 10), strict, &format!("{name}: timeline"));
        judge(store.messages(Some("bob"), 10), strict, &format!("{name}: conversation"));
        judge(store.outbox(), strict, &format!("{name}: outbox"));
        judge(store.outbox_len(), strict, &format!("{name}: outbox length"));
        judge(store.outbox_entry(&contents.outbox[0].id), strict, &format!("{name}: outbox entry"));
        judge(store.outbox_head("bob"), strict, &format!("{name}: outbox head"));
        judge(store.outbox_due(Timestamp(u64::MAX)), strict, &format!("{name}: due heads"));
        // Writes that read what they change report the damage, and then change nothing.
        judge(
            store.apply(&[Change::SetStatus { id, status: Status::Read, reason: None }]),
            strict,
            &format!("{name}: status"),
        );
        judge(
            store.apply(&[Change::RemoveOutbox(contents.outbox[0].id)]),
            strict,
            &format!("{name}: outbox removal"),
        );
    }

    #[test]
    fn a_schema_1_database_gets_its_outbox_indexes() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = Fixture::new(27);
        let contents = fill(&open_sled(dir.path()), &mut f);
        // Schema 1 had the outbox and its due index, nothing more.
        edit_raw(dir.path(), |db| {
            assert!(db.drop_tree("outbox-order").unwrap());
            assert!(db.drop_tree("outbox-heads").unwrap());
            db.insert("merpati-db", &1u16.to_be_bytes()).unwrap();
        });
        let store = open_sled(dir.path());
        check(&store, &contents);
        edit_raw_after(store, dir.path(), |db| {
            assert_eq!(db.get("merpati-db").unwrap().unwrap().as_ref(), &SCHEMA_VERSION.to_be_bytes()[..]);
        });
        // Opened again: migrated once, nothing changes.
        check(&open_sled(dir.path()), &contents);
    }

    #[test]
    fn index_entries_pointing_at_nothing_are_passed_over_and_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = Fixture::new(28);
        let entries: Vec<OutboxEntry> =
            (0..3).map(|seq| OutboxEntry { seq, ..f.outbox("bob", 100) }).collect();
        open_sled(dir.path())
            .apply(&entries.iter().cloned().map(Change::PutOutbox).collect::<Vec<_>>())
            .unwrap();
        // Damage only can do this: Bob's head vanishes from the outbox with its index entries
        // left behind, and Carol gets a head that points at nothing.
        let ghost = MessageId([0x99; 16]);
        edit_raw(dir.path(), |db| {
            db.open_tree("outbox").unwrap().remove(entries[0].id.0).unwrap();
            let mut key = 5u64.to_be_bytes().to_vec();
            key.extend_from_slice(&ghost.0);
            let mut carol = vec![1, 5];
            carol.extend_from_slice(b"carol");
            db.open_tree("outbox-heads").unwrap().insert(key, carol).unwrap();
        });
        let store = open_sled(dir.path());
        // Readers pass over them: Bob's queue goes on behind the lost entry.
        assert_eq!(store.outbox_head("bob").unwrap(), Some(conformance::head(&entries[1])));
        assert_eq!(store.outbox_head("carol").unwrap(), None);
        assert!(store.outbox_entry(&ghost).unwrap().is_none());
        // The next write to Bob's queue drops what pointed at the lost entry.
        store.apply(&[Change::PutOutbox(entries[2].clone())]).unwrap();
        let due = store.outbox_due(Timestamp(1000)).unwrap();
        assert_eq!(due.iter().map(|h| h.id).collect::<Vec<_>>(), [ghost, entries[1].id]);
        store.apply(&[Change::RemoveOutbox(entries[1].id)]).unwrap();
        assert_eq!(store.outbox_head("bob").unwrap(), Some(conformance::head(&entries[2])));
        assert_eq!(store.outbox_len().unwrap(), 2, "the count still includes the lost entry");
    }

    #[cfg(unix)]
    #[test]
    fn the_database_directory_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        drop(open_sled(dir.path()));
        let mode = |path: &Path| fs::metadata(path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&sled_dir(dir.path())), 0o700);
        assert_eq!(mode(&dir.path().join(KEY_FILE)), 0o600);
    }

    #[test]
    fn corrupt_values_are_reported_not_panicked_on() {
        let mut f = Fixture::new(21);
        type Damage = fn(&mut Vec<u8>);
        // (name, damage, whether every value it hits must be refused). Cutting, emptying,
        // extending or changing the format byte always breaks a value; a flipped byte inside a
        // plain value may still decode (postcard has no checksum; sled checksums its own log).
        let damages: [(&str, Damage, bool); 6] = [
            ("truncate", |v| v.truncate(v.len() / 2), true),
            ("empty", Vec::clear, true),
            ("newer format", |v| v[0] = v[0].wrapping_add(1), true),
            ("append junk", |v| v.extend_from_slice(&[0xff; 9]), true),
            ("flip last byte", |v| *v.last_mut().unwrap() ^= 0x55, false),
            (
                "flip middle byte",
                |v| {
                    let i = v.len() / 2;
                    v[i] ^= 0x80;
                },
                false,
            ),
        ];
        for (name, damage, strict) in damages {
            let dir = tempfile::tempdir().unwrap();
            let contents = fill(&open_sled(dir.path()), &mut f);
            // Damage every value except the profile's (checked below, as `open` reads it).
            edit_raw(dir.path(), |db| {
                for tree in db.tree_names() {
                    if tree.as_ref() == b"profile" || tree.as_ref() == b"__sled__default" {
                        continue;
                    }
                    let tree = db.open_tree(tree).unwrap();
                    for item in tree.iter() {
                        let (key, value) = item.unwrap();
                        let mut value = value.to_vec();
                        damage(&mut value);
                        tree.insert(key, value).unwrap();
                    }
                }
            });
            check_damaged(&open_sled(dir.path()), &contents, strict, name);

            edit_raw(dir.path(), |db| {
                let tree = db.open_tree("profile").unwrap();
                let (key, value) = tree.iter().next().unwrap().unwrap();
                let mut value = value.to_vec();
                damage(&mut value);
                tree.insert(key, value).unwrap();
            });
            let err = open_store(dir.path(), 1).unwrap_err();
            assert!(matches!(err, StoreError::Corrupt { what: "profile" }), "{name}: {err}");
        }
    }

    #[test]
    fn foreign_and_newer_databases_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        // Someone else's sled database.
        let db = sled::open(sled_dir(dir.path())).unwrap();
        db.open_tree("users").unwrap().insert("x", "y").unwrap();
        db.flush().unwrap();
        drop(db);
        let err = open_store(dir.path(), 1).unwrap_err();
        assert!(matches!(err, StoreError::Foreign { .. }), "{err}");
        assert!(err.to_string().contains("not a Merpati database"), "{err}");

        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(sled_dir(dir.path())).unwrap();
        db.insert("some key", "some value").unwrap();
        db.flush().unwrap();
        drop(db);
        assert!(matches!(open_store(dir.path(), 1), Err(StoreError::Foreign { .. })));

        let dir = tempfile::tempdir().unwrap();
        drop(open_sled(dir.path()));
        edit_raw(dir.path(), |db| {
            db.insert("merpati-db", &(SCHEMA_VERSION + 1).to_be_bytes()).unwrap();
        });
        let err = open_store(dir.path(), 1).unwrap_err();
        assert!(
            matches!(err, StoreError::TooNew { found, supported } if found == SCHEMA_VERSION + 1 && supported == SCHEMA_VERSION),
            "{err}"
        );
        edit_raw(dir.path(), |db| {
            db.insert("merpati-db", &[1u8][..]).unwrap();
        });
        assert!(matches!(open_store(dir.path(), 1), Err(StoreError::Foreign { .. })));
    }

    #[test]
    fn a_key_file_of_another_database_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = Fixture::new(22);
        fill(&open_sled(dir.path()), &mut f);
        fs::remove_file(dir.path().join(KEY_FILE)).unwrap();
        let err = open_store(dir.path(), 2).unwrap_err();
        assert!(matches!(err, StoreError::KeyUnavailable { what: "profile", .. }), "{err}");
    }

    /// The 32-byte keys in a key file (its layout is documented in `store::keyring`).
    fn keys_in_file(path: &Path) -> Vec<[u8; 32]> {
        let bytes = fs::read(path).unwrap();
        let count = usize::from(bytes[13]);
        (0..count).map(|i| bytes[14 + i * 44 + 12..14 + i * 44 + 44].try_into().unwrap()).collect()
    }

    fn contains(haystack: &[u8], needle: &[u8]) -> bool {
        haystack.windows(needle.len()).any(|w| w == needle)
    }

    #[test]
    fn rotation_destroys_the_old_key_and_keeps_every_record() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = Fixture::new(23);
        let store = open_sled(dir.path());
        let contents = fill(&store, &mut f);
        let key_file = dir.path().join(KEY_FILE);
        let old = store.keyring().current();
        let old_key = keys_in_file(&key_file);
        assert_eq!(old_key.len(), 1);
        // A second name for the key file's inode shows what happens to its old bytes.
        fs::hard_link(&key_file, dir.path().join("old-key-inode")).unwrap();

        let new = store.rotate_storage_key(&mut f.rng).unwrap();
        assert_ne!(new.id, old.id);
        assert_eq!(store.keyring().keys(), vec![new]);
        let file = fs::read(&key_file).unwrap();
        assert!(!contains(&file, &old_key[0]), "the old key is still in the key file");
        assert!(fs::read(dir.path().join("old-key-inode")).unwrap().iter().all(|&b| b == 0));
        check(&store, &contents);
        drop(store);

        let store = open_sled(dir.path());
        check(&store, &contents);
        edit_raw_after(store, dir.path(), |db| {
            for tree in ["profile", "sessions"] {
                for item in db.open_tree(tree).unwrap().iter() {
                    let (_, value) = item.unwrap();
                    assert_eq!(Keyring::key_id_of(&value[1..]), Some(new.id), "{tree} not re-sealed");
                }
            }
        });
    }

    /// Closes `store`, then runs `edit` on its raw database.
    fn edit_raw_after(store: SledStore, dir: &Path, edit: impl FnOnce(&sled::Db)) {
        drop(store);
        edit_raw(dir, edit);
    }

    #[test]
    fn an_old_copy_of_a_record_cannot_be_opened_after_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = Fixture::new(24);
        let store = open_sled(dir.path());
        let contents = fill(&store, &mut f);
        let old = store.keyring().current();
        let id = contents.sessions[0].id;
        let mut copy = Vec::new();
        edit_raw_after(store, dir.path(), |db| {
            copy = db.open_tree("sessions").unwrap().get(id.0).unwrap().unwrap().to_vec()
        });

        let store = open_sled(dir.path());
        store.rotate_storage_key(&mut f.rng).unwrap();
        // What an attacker recovers from sled's files: the record as it was before the rotation.
        edit_raw_after(store, dir.path(), |db| {
            db.open_tree("sessions").unwrap().insert(id.0, copy.as_slice()).unwrap();
        });
        let store = open_sled(dir.path());
        let err = store.session(&id).unwrap_err();
        assert!(
            matches!(err, StoreError::KeyUnavailable { what: "session record", key_id } if key_id == old.id),
            "{err}"
        );
        assert_same_session(
            &store.session(&contents.sessions[1].id).unwrap().unwrap(),
            &contents.sessions[1],
        );
    }

    #[test]
    fn sealed_records_do_not_open_under_another_key() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = Fixture::new(25);
        let contents = fill(&open_sled(dir.path()), &mut f);
        let (a, b) = (contents.sessions[0].id, contents.sessions[1].id);
        // Swap the two session records' bytes: each is authentic, but not for its new key.
        edit_raw(dir.path(), |db| {
            let sessions = db.open_tree("sessions").unwrap();
            let (va, vb) = (sessions.get(a.0).unwrap().unwrap(), sessions.get(b.0).unwrap().unwrap());
            sessions.insert(a.0, vb).unwrap();
            sessions.insert(b.0, va).unwrap();
        });
        let store = open_sled(dir.path());
        assert!(is_corrupt(store.session(&a)));
        assert!(is_corrupt(store.session(&b)));

        // A session record moved into the profile's place does not open either.
        edit_raw_after(store, dir.path(), |db| {
            let record = db.open_tree("sessions").unwrap().get(a.0).unwrap().unwrap();
            db.open_tree("profile").unwrap().insert("profile", record).unwrap();
        });
        let err = open_store(dir.path(), 1).unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { what: "profile" }), "{err}");
    }

    /// Every file under `dir`, read whole.
    fn files_under(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
        let mut out = Vec::new();
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                out.extend(files_under(&path));
            } else {
                let bytes = fs::read(&path).unwrap();
                out.push((path, bytes));
            }
        }
        out
    }

    /// What an attacker recovers from sled's files after a deletion: the message's record, its
    /// sealed text and its conversation's content key as they were. The text does not open with
    /// the conversation's key of now (the deletion re-keyed it), nor with the old key's copy (it
    /// was sealed under a storage key the rotation destroyed).
    #[test]
    fn a_deleted_message_cannot_be_read_back_from_old_copies() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = Fixture::new(34);
        let store = open_sled(dir.path());
        fill(&store, &mut f);
        let secret = f.message("bob", "the address is jalan melati 4");
        let kept = f.message("bob", "see you");
        store.apply(&[Change::PutMessage(secret.clone()), Change::PutMessage(kept.clone())]).unwrap();
        let copy =
            |db: &sled::Db, tree: &str, key: &[u8]| db.open_tree(tree).unwrap().get(key).unwrap().unwrap();
        let (mut record, mut text, mut old_key) = (None, None, None);
        edit_raw_after(store, dir.path(), |db| {
            record = Some(copy(db, "messages", &secret.id.0));
            text = Some(copy(db, "texts", &secret.id.0));
            old_key = Some(copy(db, "content-keys", b"bob"));
        });
        let store = open_sled(dir.path());
        store.apply(&[Change::DeleteMessage(secret.id)]).unwrap();
        assert!(store.shred_pending().unwrap());
        store.rotate_storage_key(&mut f.rng).unwrap();
        assert_eq!(store.message(&kept.id).unwrap().unwrap().text, "see you");
        // The record and text put back, under the conversation's key of now.
        let restore = |db: &sled::Db, tree: &str, key: &[u8], value: &sled::IVec| {
            db.open_tree(tree).unwrap().insert(key, value.clone()).unwrap();
        };
        let (record, text, old_key) = (record.unwrap(), text.unwrap(), old_key.unwrap());
        edit_raw_after(store, dir.path(), |db| {
            assert_ne!(copy(db, "content-keys", b"bob"), old_key, "the conversation was re-keyed");
            restore(db, "messages", &secret.id.0, &record);
            restore(db, "texts", &secret.id.0, &text);
        });
        let store = open_sled(dir.path());
        let err = store.message(&secret.id).unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { what: "message text" }), "{err}");
        assert_eq!(store.message(&kept.id).unwrap().unwrap().text, "see you");
        // And the old key put back too.
        edit_raw_after(store, dir.path(), |db| restore(db, "content-keys", b"bob", &old_key));
        let err = open_sled(dir.path()).message(&secret.id).unwrap_err();
        assert!(matches!(err, StoreError::KeyUnavailable { what: "content key", .. }), "{err}");
    }

    /// A schema 2 database opened with a key file that is not its own is refused before it is
    /// migrated: its texts are not sealed under a key that would then be lost.
    #[test]
    fn a_database_is_not_migrated_under_another_key_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = Fixture::new(38);
        let contents = fill(&open_sled(dir.path()), &mut f);
        edit_raw(dir.path(), |db| {
            db.insert("merpati-db", &2u16.to_be_bytes()).unwrap();
        });
        let theirs = dir.path().join(KEY_FILE);
        let mine = dir.path().join("storage-keys.saved");
        fs::rename(&theirs, &mine).unwrap();
        let err = open_store(dir.path(), 99).unwrap_err();
        assert!(matches!(err, StoreError::KeyUnavailable { .. }), "{err}");
        fs::rename(&mine, &theirs).unwrap();
        edit_raw(dir.path(), |db| {
            assert_eq!(
                db.get("merpati-db").unwrap().unwrap().as_ref(),
                &2u16.to_be_bytes()[..],
                "not migrated"
            );
        });
        check(&open_sled(dir.path()), &contents);
    }

    #[test]
    fn a_schema_2_database_gets_its_texts_sealed() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = Fixture::new(35);
        let store = open_sled(dir.path());
        let incoming =
            StoredMessage { direction: Direction::In, status: Status::Delivered, ..f.message("bob", "hi") };
        let contents = fill(&store, &mut f);
        store.apply(&[Change::PutMessage(incoming.clone())]).unwrap();
        let contents = Contents { messages: store.messages(None, 100).unwrap(), ..contents };
        drop(store);
        // Schema 2 kept each text in its message record, and had no `texts` or `content-keys`.
        edit_raw(dir.path(), |db| {
            let records = db.open_tree("messages").unwrap();
            for message in &contents.messages {
                let mut plain = vec![FORMAT_VERSION];
                plain.extend(encoded(message));
                records.insert(message.id.0, plain).unwrap();
            }
            assert!(db.drop_tree("texts").unwrap());
            assert!(db.drop_tree("content-keys").unwrap());
            assert!(db.drop_tree("unread").unwrap());
            db.insert("merpati-db", &2u16.to_be_bytes()).unwrap();
        });
        let store = open_sled(dir.path());
        check(&store, &contents);
        assert_eq!(store.unread("bob").unwrap(), [incoming.id]);
        edit_raw_after(store, dir.path(), |db| {
            assert_eq!(db.get("merpati-db").unwrap().unwrap().as_ref(), &SCHEMA_VERSION.to_be_bytes()[..]);
            let records = db.open_tree("messages").unwrap();
            for message in &contents.messages {
                let record = records.get(message.id.0).unwrap().unwrap();
                assert!(!contains(&record, message.text.as_bytes()), "the record still holds its text");
            }
        });
        // Opened again: migrated once, nothing changes.
        check(&open_sled(dir.path()), &contents);
    }

    #[test]
    fn a_schema_3_database_gets_its_unread_index() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = Fixture::new(37);
        let store = open_sled(dir.path());
        let unread =
            StoredMessage { direction: Direction::In, status: Status::Delivered, ..f.message("bob", "hi") };
        let read =
            StoredMessage { direction: Direction::In, status: Status::Read, ..f.message("bob", "old") };
        store
            .apply(&[
                Change::AddContact(f.contact("bob")),
                Change::PutMessage(read),
                Change::PutMessage(unread.clone()),
            ])
            .unwrap();
        edit_raw_after(store, dir.path(), |db| {
            assert!(db.drop_tree("unread").unwrap());
            db.insert("merpati-db", &3u16.to_be_bytes()).unwrap();
        });
        assert_eq!(open_sled(dir.path()).unread("bob").unwrap(), [unread.id]);
    }

    #[test]
    fn database_files_hold_no_session_key() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = Fixture::new(26);
        let store = open_sled(dir.path());
        let contents = fill(&store, &mut f);
        let mut secrets: Vec<[u8; 32]> = contents.sessions.iter().flat_map(session_secrets).collect();
        let profile = store.profile().unwrap().unwrap();
        secrets.push(*profile.identity.to_bytes());
        secrets.push(*profile.device_static.as_bytes());
        let prekey = profile.prekeys.current().id;
        secrets.push(*profile.prekeys.secret_for(prekey, NOW).unwrap().as_bytes());
        let node_key = profile.node_key.as_bytes().to_vec();

        // Replaced and deleted states leave their old bytes in sled's log: they must be sealed too.
        let mut replaced = contents.sessions[0].clone();
        replaced.state.root = SymmetricKey::from_bytes(f.bytes());
        secrets.push(*replaced.state.root.as_bytes());
        let removed = f.session("carol");
        secrets.extend(session_secrets(&removed));
        store.apply(&[Change::PutSession(replaced), Change::PutSession(removed.clone())]).unwrap();
        store.apply(&[Change::RemoveSession(removed.id)]).unwrap();
        let marker = "plaintext-marker-7f3a";
        store.apply(&[Change::PutMessage(f.message("bob", marker))]).unwrap();
        // A contact request holds the first words of a stranger's first message.
        let preview = "request-preview-marker-91c";
        let identity = f.contact("x").identity;
        let request = ContactRequest {
            id: RequestId::of(&identity),
            identity,
            suggested_name: None,
            preview: Some(preview.into()),
            first_at: NOW,
            last_at: NOW,
            expires_at: NOW.plus(Timestamp::DAY),
            envelopes: vec![serde_bytes::ByteBuf::from(vec![7u8; 300])],
            dropped: 0,
        };
        store.apply(&[Change::PutRequest(request.clone())]).unwrap();
        assert_eq!(store.request(&request.id).unwrap(), Some(request));
        drop(store);

        let files = files_under(&sled_dir(dir.path()));
        // The scan does see stored data (the relay list is kept in the clear)...
        assert!(
            files.iter().any(|(_, bytes)| contains(bytes, b"relay one")),
            "scan found no plaintext at all"
        );
        for (path, bytes) in &files {
            // ...but no message text, nor a request's preview.
            assert!(!contains(bytes, marker.as_bytes()), "a message text is readable in {}", path.display());
            assert!(
                !contains(bytes, preview.as_bytes()),
                "a request preview is readable in {}",
                path.display()
            );
            for secret in &secrets {
                assert!(!contains(bytes, secret), "a secret key is readable in {}", path.display());
            }
            assert!(!contains(bytes, &node_key), "the node key is readable in {}", path.display());
        }
    }
}
