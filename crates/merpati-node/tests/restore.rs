//! A backup written from a real database and restored into a new home: the restored node starts
//! new sessions, its contact's node accepts them as the same person, and what either side sent
//! that the other never confirmed arrives, once; a copied home running twice is told plainly.
//! Engines hand envelopes to each other directly.
#![allow(clippy::unwrap_used)] // test code: a failed step is a failed test

mod support;

use std::path::Path;

use merpati_control::home::Home;
use merpati_control::identity_file::IdentityFile;
use merpati_node::backup::{self, BackupError};
use merpati_node::engine::{AttemptResult, Engine, Me, Received};
use merpati_node::store::{Direction, MemoryStore, SledStore, Status, Store};
use merpati_proto::Timestamp;
use merpati_proto::wire::deliver;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

const T0: Timestamp = Timestamp(1_795_219_200_000);
const PASSPHRASE: &str = "correct horse battery";

fn node_key() -> Vec<u8> {
    libp2p::identity::Keypair::generate_ed25519().to_protobuf_encoding().unwrap()
}

/// A home with a new identity file, as `merpati init` makes it.
fn new_home(dir: &Path, seed: u64, name: &str) -> Home {
    let home = Home::at(dir).unwrap();
    home.create_dir().unwrap();
    let file = IdentityFile::create(&mut ChaCha20Rng::seed_from_u64(seed), Some(name.into()), T0).unwrap();
    file.save_new(&home.identity_file()).unwrap();
    home
}

fn me_of(home: &Home) -> Me {
    Me::from(IdentityFile::load(&home.identity_file()).unwrap())
}

/// Bob, on a store in memory.
fn bob() -> Engine<MemoryStore> {
    let me =
        Me::from(IdentityFile::create(&mut ChaCha20Rng::seed_from_u64(2), Some("Bob".into()), T0).unwrap());
    Engine::start(MemoryStore::new(), me, node_key, T0, ChaCha20Rng::seed_from_u64(2)).unwrap()
}

/// The node of `home`, on its database.
fn node(home: &Home, seed: u64, now: Timestamp) -> Engine<SledStore> {
    std::fs::create_dir_all(home.database_dir()).unwrap();
    let store = support::open_sled_store(&home.database_dir(), seed).unwrap();
    Engine::start(store, me_of(home), node_key, now, ChaCha20Rng::seed_from_u64(seed)).unwrap()
}

/// Hands every envelope due from `from` to `to`, in order, until none is due, and reports the
/// answers; returns what `to` made of them.
fn pump<S: Store, T: Store>(from: &mut Engine<S>, to: &mut Engine<T>, now: Timestamp) -> Vec<Received> {
    let mut all = Vec::new();
    loop {
        let due = from.due(now, None).unwrap();
        if due.is_empty() {
            return all;
        }
        for attempt in due {
            let received = to.receive(None, &attempt.envelope, now).unwrap();
            let result = match received.response.unwrap() {
                deliver::Response::Accepted => AttemptResult::Accepted,
                deliver::Response::Refused(why) => AttemptResult::Refused(why),
            };
            from.attempt_finished(&attempt.id, &result, now).unwrap();
            all.push(received);
        }
    }
}

/// Everything due from `from` is taken by a relay that the other side never fetches from.
fn lose_in_transit<S: Store>(from: &mut Engine<S>, now: Timestamp) {
    for attempt in from.due(now, None).unwrap() {
        let deposited = AttemptResult::Deposited { accepted: 1, total: 1, refusals: Vec::new() };
        from.attempt_finished(&attempt.id, &deposited, now).unwrap();
    }
}

fn texts<S: Store>(engine: &Engine<S>, contact: &str) -> Vec<(Direction, String)> {
    let messages = engine.store().messages(Some(contact), 100).unwrap();
    messages.into_iter().map(|m| (m.direction, m.text)).collect()
}

#[test]
fn a_restored_node_carries_on_and_nothing_sent_either_way_is_lost() {
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let old_home = new_home(dirs[0].path(), 1, "Alice");
    let mut alice = node(&old_home, 1, T0);
    let mut bob = bob();
    let invite = bob.invite(b"bob-node".to_vec(), vec![], T0).unwrap();
    alice.add_contact(&invite, "bob", T0).unwrap();
    bob.add_contact(&alice.invite(b"alice-node".to_vec(), vec![], T0).unwrap(), "alice", T0).unwrap();
    alice.send_text("bob", "hello", T0).unwrap();
    for _ in 0..3 {
        pump(&mut alice, &mut bob, T0);
        pump(&mut bob, &mut alice, T0);
    }
    bob.send_text("alice", "hi", T0).unwrap();
    pump(&mut bob, &mut alice, T0);
    pump(&mut alice, &mut bob, T0);
    // Each side leaves a message at a relay the other never fetches before the laptop is lost.
    let t1 = T0.plus(Timestamp::HOUR);
    let from_alice = alice.send_text("bob", "sent before the backup, never confirmed", t1).unwrap();
    lose_in_transit(&mut alice, t1);
    let from_bob = bob.send_text("alice", "while you were away", t1).unwrap();
    lose_in_transit(&mut bob, t1);
    assert!(matches!(bob.message(&from_bob.id).unwrap().status, Status::Stored { .. }));

    let file = dirs[2].path().join("alice.backup");
    let written = backup::write(alice.store(), &old_home, PASSPHRASE, &file, t1).unwrap();
    assert_eq!((written.contacts, written.messages), (1, 3));
    drop(alice);

    // A new laptop, a day later.
    let t2 = t1.plus(Timestamp::DAY);
    let new_home = Home::at(dirs[1].path()).unwrap();
    let mut rng = ChaCha20Rng::seed_from_u64(3);
    let restored = backup::restore(&new_home, &file, PASSPHRASE, t2, &mut rng).unwrap();
    assert_eq!(restored.name.as_deref(), Some("Alice"));
    assert_eq!(restored.resumed.told, vec![("bob".to_owned(), 1)]);
    assert!(!new_home.dir().join("restore.partial").exists());
    let mut alice = node(&new_home, 3, t2);
    assert_eq!(texts(&alice, "bob").len(), 3, "the history came back");

    // Bob's node takes the new session as Alice's, and says so.
    let received = pump(&mut alice, &mut bob, t2);
    assert_eq!(received.iter().filter_map(|r| r.restored.as_deref()).collect::<Vec<_>>(), ["alice"]);
    let record = bob.store().contact("alice").unwrap().unwrap();
    assert_eq!(record.restored_at, Some(t2));
    // Bob's message the old laptop never got arrives on the new one; Alice's arrives at Bob's.
    for _ in 0..3 {
        pump(&mut bob, &mut alice, t2);
        pump(&mut alice, &mut bob, t2);
    }
    let at_alice = texts(&alice, "bob");
    assert_eq!(at_alice.iter().filter(|(_, t)| t == "while you were away").count(), 1, "{at_alice:?}");
    let at_bob = texts(&bob, "alice");
    assert_eq!(at_bob.iter().filter(|(_, t)| t == "sent before the backup, never confirmed").count(), 1);
    assert_eq!(bob.message(&from_bob.id).unwrap().status, Status::Delivered);
    assert_eq!(alice.message(&from_alice.id).unwrap().status, Status::Delivered);

    // And the conversation goes on both ways in the new session.
    alice.send_text("bob", "all here", t2).unwrap();
    bob.send_text("alice", "welcome back", t2).unwrap();
    for _ in 0..3 {
        pump(&mut alice, &mut bob, t2);
        pump(&mut bob, &mut alice, t2);
    }
    assert!(texts(&bob, "alice").iter().any(|(_, t)| t == "all here"));
    assert!(texts(&alice, "bob").iter().any(|(_, t)| t == "welcome back"));

    // The old laptop was not dead after all: what it wrote before the restore is still read,
    // what it writes after is refused, and it is told why.
    let mut old_laptop = node(&old_home, 1, t2);
    let late = old_laptop
        .send_text("bob", "from the old laptop, after the move", t2.plus(60 * Timestamp::SECOND))
        .unwrap();
    pump(&mut old_laptop, &mut bob, t2.plus(60 * Timestamp::SECOND));
    let refused = old_laptop.message(&late.id).unwrap();
    assert_eq!(refused.status, Status::Failed);
    assert!(refused.reason.unwrap_or_default().contains("another copy of your identity"));
    assert!(texts(&bob, "alice").iter().all(|(_, t)| t != "from the old laptop, after the move"));
    drop(old_laptop);

    // Another copy restored from the same backup, its notice dated before the first restore:
    // Bob's node reads it but keeps writing to the newer copy.
    let spare = tempfile::tempdir().unwrap();
    let spare_home = Home::at(spare.path()).unwrap();
    let earlier = t1.plus(Timestamp::HOUR);
    backup::restore(&spare_home, &file, PASSPHRASE, earlier, &mut rng).unwrap();
    let mut copy = node(&spare_home, 4, t2);
    let received = pump(&mut copy, &mut bob, t2);
    assert!(received.iter().all(|r| r.restored.is_none()));
    assert_eq!(bob.store().contact("alice").unwrap().unwrap().restored_at, Some(t2));
    bob.send_text("alice", "to the newest copy", t2).unwrap();
    pump(&mut bob, &mut alice, t2);
    assert!(texts(&alice, "bob").iter().any(|(_, t)| t == "to the newest copy"));
}

#[test]
fn a_backup_opens_only_with_its_passphrase_and_a_refused_restore_changes_nothing() {
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let home = new_home(dirs[0].path(), 1, "Alice");
    let alice = node(&home, 1, T0);
    let file = dirs[2].path().join("alice.backup");
    assert!(matches!(
        backup::write(alice.store(), &home, "short", &file, T0),
        Err(BackupError::WeakPassphrase)
    ));
    assert!(!file.exists());
    backup::write(alice.store(), &home, PASSPHRASE, &file, T0).unwrap();
    // No secret in the clear.
    let bytes = std::fs::read(&file).unwrap();
    assert!(bytes.starts_with(b"age-encryption.org/v1"));
    assert!(!bytes.windows(5).any(|w| w == b"Alice"));

    let target = Home::at(dirs[1].path()).unwrap();
    let mut rng = ChaCha20Rng::seed_from_u64(9);
    let wrong = backup::restore(&target, &file, "not the passphrase", T0, &mut rng);
    assert!(matches!(wrong, Err(BackupError::WrongPassphrase { .. })), "{wrong:?}");
    let cut = dirs[2].path().join("cut.backup");
    std::fs::write(&cut, &bytes[..bytes.len() - 100]).unwrap();
    let damaged = backup::restore(&target, &cut, PASSPHRASE, T0, &mut rng);
    assert!(matches!(damaged, Err(BackupError::NotABackup { .. })), "{damaged:?}");
    let other = dirs[2].path().join("other");
    std::fs::write(&other, b"just some file").unwrap();
    assert!(matches!(
        backup::restore(&target, &other, PASSPHRASE, T0, &mut rng),
        Err(BackupError::NotABackup { .. })
    ));
    // Nothing of the refused restores is left.
    assert!(!target.identity_file().exists());
    assert!(!target.database_dir().exists());
    assert!(!target.dir().join("restore.partial").exists());

    // A home with an identity is never overwritten, nor one holding another node's files.
    let taken = backup::restore(&home, &file, PASSPHRASE, T0, &mut rng);
    assert!(matches!(taken, Err(BackupError::HomeNotEmpty { .. })), "{taken:?}");
    std::fs::create_dir_all(target.dir().join("blobs").join("in")).unwrap();
    let files_left = backup::restore(&target, &file, PASSPHRASE, T0, &mut rng);
    assert!(matches!(files_left, Err(BackupError::HomeNotEmpty { what, .. }) if what.contains("blobs")));
    assert!(!target.database_dir().exists() && !target.identity_file().exists());
}

#[test]
fn a_contact_who_wrote_first_can_be_told_of_a_restore() {
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let old_home = new_home(dirs[0].path(), 1, "Alice");
    let mut alice = node(&old_home, 1, T0);
    let mut bob = bob();
    // Only Bob has an invite: Alice never had his, and accepts his request.
    bob.add_contact(&alice.invite(b"alice-node".to_vec(), vec![], T0).unwrap(), "alice", T0).unwrap();
    bob.send_text("alice", "it is Bob, from the market", T0).unwrap();
    pump(&mut bob, &mut alice, T0);
    let request = alice.requests().unwrap().remove(0);
    alice.accept_request(&request.id, "bob", T0).unwrap();
    for _ in 0..3 {
        pump(&mut alice, &mut bob, T0);
        pump(&mut bob, &mut alice, T0);
    }
    let known = alice.store().contact("bob").unwrap().unwrap();
    assert_eq!(known.bundle.as_ref(), Some(bob.bundle()), "his keys came with his first words");

    let t1 = T0.plus(Timestamp::DAY);
    let from_bob = bob.send_text("alice", "are you there?", t1).unwrap();
    lose_in_transit(&mut bob, t1);
    let file = dirs[2].path().join("alice.backup");
    backup::write(alice.store(), &old_home, PASSPHRASE, &file, t1).unwrap();
    drop(alice);
    let new_home = Home::at(dirs[1].path()).unwrap();
    let restored =
        backup::restore(&new_home, &file, PASSPHRASE, t1, &mut ChaCha20Rng::seed_from_u64(3)).unwrap();
    assert_eq!(restored.resumed.told, vec![("bob".to_owned(), 0)]);
    assert!(restored.resumed.unreachable.is_empty());
    let mut alice = node(&new_home, 3, t1);
    for _ in 0..3 {
        pump(&mut alice, &mut bob, t1);
        pump(&mut bob, &mut alice, t1);
    }
    assert_eq!(bob.store().contact("alice").unwrap().unwrap().restored_at, Some(t1));
    assert!(texts(&alice, "bob").iter().any(|(_, t)| t == "are you there?"));
    assert_eq!(bob.message(&from_bob.id).unwrap().status, Status::Delivered);
}

#[test]
fn a_contact_without_keys_is_named_by_the_restore_and_the_rest_goes_on() {
    use merpati_node::store::{Change, Contact, StoredMessage};
    use merpati_proto::frame::MessageId;
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let home = new_home(dirs[0].path(), 1, "Alice");
    let alice = node(&home, 1, T0);
    // Someone who reached Alice first with a version that sent no keys.
    let identity =
        IdentityFile::create(&mut ChaCha20Rng::seed_from_u64(8), None, T0).unwrap().identity.public();
    let contact = Contact {
        name: "dewi".into(),
        identity,
        bundle: None,
        inbox: None,
        peer_id: Vec::new(),
        addrs: Vec::new(),
        relays: Vec::new(),
        session: None,
        added_at: T0,
        last_resort: None,
        last_heard: Some(T0),
        restored_at: None,
    };
    let message = StoredMessage::received(MessageId([3; 16]), "dewi", T0, "halo".into(), 0);
    alice.store().apply(&[Change::AddContact(contact), Change::PutMessage(message)]).unwrap();
    let file = dirs[2].path().join("alice.backup");
    backup::write(alice.store(), &home, PASSPHRASE, &file, T0).unwrap();
    let target = Home::at(dirs[1].path()).unwrap();
    let restored =
        backup::restore(&target, &file, PASSPHRASE, T0, &mut ChaCha20Rng::seed_from_u64(3)).unwrap();
    assert!(restored.resumed.told.is_empty());
    let [(name, why)] = &restored.resumed.unreachable[..] else { panic!("{:?}", restored.resumed) };
    assert_eq!(name, "dewi");
    assert!(why.contains("no keys of dewi"), "{why}");
    // The history is there all the same.
    let restored_node = node(&target, 3, T0);
    assert_eq!(texts(&restored_node, "dewi"), [(Direction::In, "halo".to_owned())]);
}

/// Copies the directory `from` to `to`, as someone copying a home folder would.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// Alice (on a sled home in `dirs[0]`) and Bob, who exchanged a few words; with `bob_spoke_last`
/// Bob's receipt is the last word, so Alice's next message opens a new epoch. Then the home is
/// copied to `dirs[1]`, and both copies run.
fn copied_home(
    dirs: &[tempfile::TempDir; 2],
    bob_spoke_last: bool,
) -> (Engine<SledStore>, Engine<SledStore>, Engine<MemoryStore>) {
    let home = new_home(dirs[0].path(), 1, "Alice");
    let mut alice = node(&home, 1, T0);
    let mut bob = bob();
    alice.add_contact(&bob.invite(b"bob-node".to_vec(), vec![], T0).unwrap(), "bob", T0).unwrap();
    bob.add_contact(&alice.invite(b"alice-node".to_vec(), vec![], T0).unwrap(), "alice", T0).unwrap();
    alice.send_text("bob", "hello", T0).unwrap();
    pump(&mut alice, &mut bob, T0);
    if !bob_spoke_last {
        bob.send_text("alice", "hi", T0).unwrap();
    }
    pump(&mut bob, &mut alice, T0);
    pump(&mut alice, &mut bob, T0);
    drop(alice);
    let copy = Home::at(dirs[1].path()).unwrap();
    copy_dir(home.dir(), copy.dir());
    (node(&home, 1, T0), node(&copy, 5, T0), bob)
}

#[test]
fn a_second_running_copy_of_a_home_is_told_plainly() {
    // Whether the copies open the same new epoch differently, or seal at one place in an epoch
    // of theirs, the second copy's message is refused and its sender told why.
    for bob_spoke_last in [true, false] {
        let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
        let (mut first, mut second, mut bob) = copied_home(&dirs, bob_spoke_last);
        let one = first.send_text("bob", "from the first copy", T0).unwrap();
        pump(&mut first, &mut bob, T0);
        assert_eq!(first.message(&one.id).unwrap().status, Status::Sent);
        let two = second.send_text("bob", "from the second copy", T0).unwrap();
        pump(&mut second, &mut bob, T0);
        let refused = second.message(&two.id).unwrap();
        assert_eq!(refused.status, Status::Failed, "bob spoke last: {bob_spoke_last}");
        let reason = refused.reason.unwrap_or_default();
        assert!(reason.contains("another copy of your identity writes in this conversation"), "{reason}");
        assert!(texts(&bob, "alice").iter().all(|(_, t)| t != "from the second copy"));
    }
}

#[test]
fn a_group_comes_back_with_its_history_and_carries_on_counting() {
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let old_home = new_home(dirs[0].path(), 1, "Alice");
    let mut alice = node(&old_home, 1, T0);
    let mut bob = bob();
    alice.add_contact(&bob.invite(b"bob-node".to_vec(), vec![], T0).unwrap(), "bob", T0).unwrap();
    bob.add_contact(&alice.invite(b"alice-node".to_vec(), vec![], T0).unwrap(), "alice", T0).unwrap();
    let view = alice.create_group("Arisan", &["bob"], T0).unwrap();
    let first = alice.send_group_text("Arisan", "giliran Bu Sari", T0).unwrap();
    for _ in 0..3 {
        pump(&mut alice, &mut bob, T0);
        pump(&mut bob, &mut alice, T0);
    }
    let conversation = merpati_node::engine::group_conversation(&view.id);
    assert_eq!(texts(&bob, &conversation).len(), 1);

    let file = dirs[2].path().join("alice.backup");
    backup::write(alice.store(), &old_home, PASSPHRASE, &file, T0).unwrap();
    drop(alice);
    let t1 = T0.plus(Timestamp::DAY);
    let new_home = Home::at(dirs[1].path()).unwrap();
    backup::restore(&new_home, &file, PASSPHRASE, t1, &mut ChaCha20Rng::seed_from_u64(3)).unwrap();
    let mut alice = node(&new_home, 3, t1);

    let back = alice.group("Arisan").unwrap();
    assert_eq!((back.id, back.members.len()), (view.id, 2));
    assert_eq!(texts(&alice, &conversation), [(Direction::Out, "giliran Bu Sari".to_owned())]);
    let info = alice.store().group_message(&first.id).unwrap().unwrap();
    assert_eq!(info.sender_seq, 1);
    // The count goes on from where it was: a new text is not taken for the old one.
    let next = alice.send_group_text("Arisan", "minggu depan di rumah Budi", t1).unwrap();
    assert_ne!(next.id, first.id);
    for _ in 0..3 {
        pump(&mut alice, &mut bob, t1);
        pump(&mut bob, &mut alice, t1);
    }
    let at_bob: Vec<String> = texts(&bob, &conversation).into_iter().map(|(_, t)| t).collect();
    assert_eq!(at_bob, ["giliran Bu Sari", "minggu depan di rumah Budi"]);
}
