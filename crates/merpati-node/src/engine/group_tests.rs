//! Group tests: the engines of several users, each the contact of every other under the others'
//! names, hand envelopes to each other directly until nothing is due. Membership changes, fan-out,
//! per-member delivery, and what a removed member or a forger can do.

use std::sync::Arc;

use merpati_proto::Timestamp;
use merpati_proto::frame::{Body, Control, MemberCard};
use merpati_proto::group::{Action, Entry, GroupEntries, GroupId, Role};
use merpati_proto::wire::deliver;

use super::tests::{T0, engine, peer};
use super::{Attempt, AttemptResult, Engine, EngineError, group_conversation};
use crate::store::{Change, MemoryStore, Status, Store};

const NAMES: [&str; 4] = ["alice", "bob", "carol", "dewi"];

/// `n` users who added each other from their invites.
fn network(n: usize) -> Vec<Engine<Arc<MemoryStore>>> {
    let all: Vec<(usize, usize)> =
        (0..n).flat_map(|i| (0..n).map(move |j| (i, j))).filter(|(i, j)| i != j).collect();
    network_of(n, &all)
}

/// `n` users where each `(i, j)` of `contacts` means user i added user j from j's invite.
fn network_of(n: usize, contacts: &[(usize, usize)]) -> Vec<Engine<Arc<MemoryStore>>> {
    let mut engines: Vec<Engine<Arc<MemoryStore>>> =
        (0..n).map(|i| engine(Arc::new(MemoryStore::new()), i as u64 + 1, NAMES[i])).collect();
    let invites: Vec<String> = engines
        .iter()
        .enumerate()
        .map(|(i, e)| e.invite(peer(i as u8 + 1).to_bytes(), vec![], T0).unwrap())
        .collect();
    for &(i, j) in contacts {
        engines[i].add_contact(&invites[j], NAMES[j], T0).unwrap();
    }
    engines
}

/// Hands everything due from `from` to `to` (and nothing else), answering each attempt, until
/// nothing more for `to` is due.
fn hand(engines: &mut [Engine<Arc<MemoryStore>>], from: usize, to: usize, now: Timestamp) {
    loop {
        let due: Vec<_> = engines[from]
            .due(now, None)
            .unwrap()
            .into_iter()
            .filter(|a| recipient(engines, from, &a.contact) == to)
            .collect();
        if due.is_empty() {
            return;
        }
        for attempt in due {
            deliver_one(engines, from, to, &attempt, now);
        }
    }
}

/// Hands one attempt of `from`'s to `to`'s node, and tells `from` the answer.
fn deliver_one(
    engines: &mut [Engine<Arc<MemoryStore>>],
    from: usize,
    to: usize,
    attempt: &Attempt,
    now: Timestamp,
) {
    let via = peer(from as u8 + 1).to_bytes();
    let received = engines[to].receive(Some(&via), &attempt.envelope, now).unwrap();
    let result = match received.response.unwrap() {
        deliver::Response::Accepted => AttemptResult::Accepted,
        deliver::Response::Refused(r) => AttemptResult::Refused(r),
    };
    engines[from].attempt_finished(&attempt.id, &result, now).unwrap();
}

/// The engine an attempt to `contact` (by name, or a member contact's identity) is for.
fn recipient(engines: &[Engine<Arc<MemoryStore>>], from: usize, contact: &str) -> usize {
    if let Some(i) = NAMES.iter().position(|n| *n == contact) {
        return i;
    }
    let record = engines[from].store().contact(contact).unwrap().unwrap();
    engines.iter().position(|e| e.me().identity.public() == record.identity).unwrap()
}

/// Delivers everything due, from every engine to the one it is for, until nothing is due;
/// `cut` engines take nothing (their node is off). Returns how many envelopes were handed over.
fn settle(engines: &mut [Engine<Arc<MemoryStore>>], cut: &[usize], now: Timestamp) -> usize {
    let mut handed = 0;
    loop {
        let mut moved = false;
        for from in 0..engines.len() {
            for attempt in engines[from].due(now, None).unwrap() {
                let to = recipient(engines, from, &attempt.contact);
                if cut.contains(&to) {
                    continue;
                }
                deliver_one(engines, from, to, &attempt, now);
                handed += 1;
                moved = true;
            }
        }
        if !moved {
            return handed;
        }
    }
}

/// The texts of `group`'s conversation at `engine`, oldest first.
fn texts(engine: &Engine<Arc<MemoryStore>>, group: GroupId) -> Vec<String> {
    let mut messages = engine.store().messages(Some(&group_conversation(&group)), 100).unwrap();
    messages.sort_by_key(|m| m.order);
    messages.into_iter().map(|m| m.text).collect()
}

#[test]
fn a_group_text_reaches_every_member_once_and_is_delivered_to_each() {
    let mut e = network(3);
    let view = e[0].create_group("Pasar Minggu", &["bob", "carol"], T0).unwrap();
    assert_eq!(view.members.len(), 3);
    assert_eq!(view.role, Some(Role::Admin));
    settle(&mut e, &[], T0);
    for member in &mut e[1..] {
        let seen = member.group("Pasar Minggu").unwrap();
        assert_eq!((seen.id, seen.role, seen.members.len()), (view.id, Some(Role::Member), 3));
        assert_eq!(seen.members[0].contact.as_deref(), Some("alice"), "the owner is listed first");
    }

    let sent = e[0].send_group_text("Pasar Minggu", "selamat pagi", T0).unwrap();
    assert_eq!(sent.status, Status::Queued);
    settle(&mut e, &[], T0);
    for member in &e[1..] {
        assert_eq!(texts(member, view.id), ["selamat pagi"]);
        let stored = member.store().messages(Some(&group_conversation(&view.id)), 10).unwrap();
        let info = member.store().group_message(&stored[0].id).unwrap().unwrap();
        assert_eq!((info.sender, info.sender_seq), (*e[0].me().identity.public().as_bytes(), 1));
        assert_ne!(stored[0].id, sent.id, "each node stores it under an id of its own");
    }
    // Both copies confirmed: the message stands where its copies do.
    let info = e[0].store().group_message(&sent.id).unwrap().unwrap();
    assert_eq!(info.copies.iter().map(|c| c.status).collect::<Vec<_>>(), [Status::Delivered; 2]);
    assert_eq!(e[0].message(&sent.id).unwrap().status, Status::Delivered);

    // A member answers; everyone else sees it.
    e[2].send_group_text(&view.name, "pagi juga", T0.plus(1)).unwrap();
    settle(&mut e, &[], T0.plus(1));
    assert_eq!(texts(&e[0], view.id), ["selamat pagi", "pagi juga"]);
    assert_eq!(texts(&e[1], view.id), ["selamat pagi", "pagi juga"]);
}

#[test]
fn a_one_to_one_text_cannot_take_the_id_a_group_message_will_have() {
    let mut e = network(3);
    let view = e[0].create_group("Pasar", &["bob", "carol"], T0).unwrap();
    settle(&mut e, &[], T0);
    // Carol's node sends Bob a text under the group-wide id Alice's next group text will have.
    let alice = e[0].me().identity.public();
    let claimed = merpati_proto::group::message_id(view.id, &alice, 1);
    let session = e[2].store().contact("bob").unwrap().unwrap().session;
    let session = match session {
        Some(id) => id,
        None => {
            e[2].send_text("bob", "hai", T0).unwrap();
            settle(&mut e, &[], T0);
            e[2].store().contact("bob").unwrap().unwrap().session.unwrap()
        }
    };
    let mut rng = e[2].rng.clone();
    let sealed = e[2]
        .session(&session, T0)
        .unwrap()
        .unwrap()
        .seal_as(&Body::Text("mine".into()), claimed, T0, &mut rng)
        .unwrap();
    let received = e[1].receive(Some(&peer(3).to_bytes()), &sealed.envelope, T0).unwrap();
    assert!(received.message.is_some());
    e[0].send_group_text("Pasar", "the real one", T0.plus(1)).unwrap();
    settle(&mut e, &[], T0.plus(1));
    assert_eq!(texts(&e[1], view.id), ["the real one"], "the group text is stored all the same");
}

#[test]
fn a_member_offline_gets_its_copy_later_and_the_others_do_not_wait() {
    let mut e = network(3);
    let view = e[0].create_group("Warung", &["bob", "carol"], T0).unwrap();
    settle(&mut e, &[], T0);
    let sent = e[0].send_group_text("Warung", "buka jam 7", T0).unwrap();
    settle(&mut e, &[2], T0);
    let info = e[0].store().group_message(&sent.id).unwrap().unwrap();
    let by_contact = |name: &str| info.copies.iter().find(|c| c.contact == name).unwrap().status;
    assert_eq!((by_contact("bob"), by_contact("carol")), (Status::Delivered, Status::Queued));
    assert_eq!(e[0].message(&sent.id).unwrap().status, Status::Queued, "one copy is still on its way");
    assert!(texts(&e[2], view.id).is_empty());

    let later = T0.plus(Timestamp::HOUR);
    settle(&mut e, &[], later);
    assert_eq!(texts(&e[2], view.id), ["buka jam 7"]);
    assert_eq!(e[0].message(&sent.id).unwrap().status, Status::Delivered);
}

#[test]
fn a_removed_member_gets_nothing_new_and_what_it_sends_is_dropped() {
    let mut e = network(3);
    let view = e[0].create_group("Redaksi", &["bob", "carol"], T0).unwrap();
    settle(&mut e, &[], T0);
    e[0].group_remove("Redaksi", "carol", T0.plus(1)).unwrap();
    // Bob learns of the removal; Carol's node is off and does not, so she still writes.
    settle(&mut e, &[2], T0.plus(1));
    e[2].send_group_text("Redaksi", "masih di sini?", T0.plus(2)).unwrap();
    e[0].send_group_text("Redaksi", "rapat jam 9", T0.plus(3)).unwrap();
    settle(&mut e, &[], T0.plus(4));

    assert_eq!(texts(&e[0], view.id), ["rapat jam 9"], "a removed member's message is not the group's");
    assert_eq!(texts(&e[1], view.id), ["rapat jam 9"]);
    assert_eq!(texts(&e[2], view.id), ["masih di sini?"], "nothing sent after the removal reaches her");
    let carol = e[2].group("Redaksi").unwrap();
    assert_eq!((carol.role, carol.members.len()), (None, 2), "she learnt she was removed");
    assert!(matches!(e[2].send_group_text("Redaksi", "halo", T0.plus(5)), Err(EngineError::NotInGroup(_))));
}

#[test]
fn a_member_cannot_change_membership_and_a_forged_entry_changes_nothing() {
    let mut e = network(4);
    let view = e[0].create_group("Keluarga", &["bob", "carol"], T0).unwrap();
    settle(&mut e, &[], T0);
    assert!(matches!(e[1].group_add("Keluarga", "dewi", T0), Err(EngineError::GroupRefused(_))));
    assert!(matches!(e[1].group_remove("Keluarga", "carol", T0), Err(EngineError::GroupRefused(_))));

    // Bob's node signs an Add anyway and sends it to Carol inside their session.
    e[1].send_text("carol", "hai", T0).unwrap();
    settle(&mut e, &[], T0);
    let before = e[2].group("Keluarga").unwrap();
    let log = e[1].group_logs[&view.id].clone();
    let (parents, n) = log.next_parents();
    let dewi = e[3].me().identity.public();
    let forged = Entry::sign(
        &e[1].me.identity,
        view.id,
        n,
        parents,
        T0,
        Action::Add { member: dewi, name: "dewi".into() },
    )
    .unwrap();
    let body = Body::Control(Control::GroupEntries(GroupEntries { group: view.id, entries: vec![forged] }));
    let session = e[1].store().contact("carol").unwrap().unwrap().session.unwrap();
    let entry = e[1].seal_into_outbox(&session, "carol", &body, T0).unwrap();
    let mut changes = e[1].persist_session(&e[1].sessions[&session], "carol");
    changes.push(Change::PutOutbox(entry));
    e[1].store().apply(&changes).unwrap();
    settle(&mut e, &[], T0);
    assert_eq!(e[2].group("Keluarga").unwrap(), before, "the forged entry changed nothing");
    assert!(e[3].group("Keluarga").is_err(), "Dewi was not let in");
}

#[test]
fn an_admin_the_owner_promotes_can_add_and_the_group_survives_a_restart() {
    let mut e = network(4);
    let view = e[0].create_group("Arisan", &["bob"], T0).unwrap();
    settle(&mut e, &[], T0);
    e[0].group_promote("Arisan", "bob", T0.plus(1)).unwrap();
    settle(&mut e, &[], T0.plus(1));
    e[1].group_add("Arisan", "carol", T0.plus(2)).unwrap();
    e[0].group_rename("Arisan", "Arisan RT 5", T0.plus(3)).unwrap();
    settle(&mut e, &[], T0.plus(3));
    for member in &mut e[..3] {
        let seen = member.group(&crate::engine::hex(&view.id.0[..4])).unwrap();
        assert_eq!((seen.name.as_str(), seen.members.len()), ("Arisan RT 5", 3));
    }

    // Carol's node restarts: the group is read back from the store.
    let store = e[2].store().clone();
    e[2] = engine(store, 3, "carol");
    e[2].send_group_text("Arisan RT 5", "giliran siapa?", T0.plus(4)).unwrap();
    settle(&mut e, &[], T0.plus(4));
    assert_eq!(texts(&e[0], view.id), ["giliran siapa?"]);
    assert_eq!(texts(&e[1], view.id), ["giliran siapa?"]);
    assert!(texts(&e[3], view.id).is_empty());
    assert!(matches!(e[0].group("Tidak ada"), Err(EngineError::UnknownGroup(_))));
}

#[test]
fn a_group_is_kept_only_from_someone_it_names() {
    let mut e = network(4);
    let view = e[0].create_group("Rahasia", &["carol"], T0).unwrap();
    let found = GroupEntries { group: view.id, entries: e[0].group_logs[&view.id].entries().to_vec() };
    // Dewi, who is not in it, passes its log on to Bob: dropped.
    let dewi = e[1].store().contact("dewi").unwrap().unwrap();
    let mut changes = Vec::new();
    assert!(e[1].receive_group_entries(&dewi, found.clone(), &mut changes, T0).unwrap().is_empty());
    assert!(changes.is_empty());
    assert!(matches!(e[1].group("Rahasia"), Err(EngineError::UnknownGroup(_))));
    // From its owner neither: it does not name Bob. Carol, whom it names, keeps it.
    let alice = e[1].store().contact("alice").unwrap().unwrap();
    assert!(e[1].receive_group_entries(&alice, found.clone(), &mut changes, T0).unwrap().is_empty());
    assert!(changes.is_empty(), "a group Bob is not in is not kept");
    let alice_at_carol = e[2].store().contact("alice").unwrap().unwrap();
    e[2].receive_group_entries(&alice_at_carol, found, &mut changes, T0).unwrap();
    e[2].store().apply(&changes).unwrap();
    assert_eq!(e[2].group("Rahasia").unwrap().role, Some(Role::Member));
}

#[test]
fn one_owner_can_make_a_node_keep_only_so_many_groups() {
    let mut e = network(2);
    for i in 0..super::MAX_GROUPS_PER_OWNER + 2 {
        e[0].create_group(&format!("g{i}"), &["bob"], T0).unwrap();
    }
    settle(&mut e, &[], T0);
    assert_eq!(e[1].groups().unwrap().len(), super::MAX_GROUPS_PER_OWNER);
}

/// The user's own contacts at `engine` (members kept for groups aside), by name.
fn own_contacts(engine: &Engine<Arc<MemoryStore>>) -> Vec<String> {
    let mut names: Vec<String> = engine
        .store()
        .contacts()
        .unwrap()
        .into_iter()
        .map(|c| c.name)
        .filter(|n| !super::is_member_contact(n))
        .collect();
    names.sort();
    names
}

#[test]
fn members_who_are_not_contacts_are_introduced_and_reach_each_other() {
    // Alice knows Bob and Carol; Bob and Carol do not know each other.
    let mut e = network_of(3, &[(0, 1), (1, 0), (0, 2), (2, 0)]);
    let view = e[0].create_group("Tetangga", &["bob", "carol"], T0).unwrap();
    settle(&mut e, &[], T0);
    let at_bob = e[1].group("Tetangga").unwrap();
    let carol = at_bob.members.iter().find(|m| m.name.as_deref() == Some("carol")).unwrap();
    assert_eq!(carol.contact, None, "shown as a member, not a contact");
    assert_eq!(own_contacts(&e[1]), ["alice"]);

    e[1].send_group_text("Tetangga", "ada yang punya tangga?", T0.plus(1)).unwrap();
    settle(&mut e, &[], T0.plus(1));
    e[2].send_group_text("Tetangga", "ada, ambil saja", T0.plus(2)).unwrap();
    settle(&mut e, &[], T0.plus(2));
    for member in &e {
        assert_eq!(texts(member, view.id), ["ada yang punya tangga?", "ada, ambil saja"]);
    }
    assert!(e.iter().all(|m| m.requests().unwrap().is_empty()), "no member was held as a stranger");
    // One session between the two, not two crossed ones.
    let carol_at_bob = super::member_contact_name(&e[2].me().identity.public());
    let bob_at_carol = super::member_contact_name(&e[1].me().identity.public());
    assert_eq!(e[1].sessions_of(&carol_at_bob).unwrap().len(), 1);
    assert_eq!(e[2].sessions_of(&bob_at_carol).unwrap().len(), 1);
    // Bob's text was delivered to both others.
    let sent = e[1].store().messages(Some(&group_conversation(&view.id)), 10).unwrap();
    let bobs = sent.iter().find(|m| m.text.starts_with("ada yang")).unwrap();
    assert_eq!(bobs.status, Status::Delivered);
}

#[test]
fn a_member_added_later_is_introduced_to_everyone_and_a_first_contact_before_the_card_waits() {
    let mut e = network_of(4, &[(0, 1), (1, 0), (0, 2), (2, 0), (0, 3), (3, 0)]);
    let view = e[0].create_group("RT 5", &["bob", "carol"], T0).unwrap();
    settle(&mut e, &[], T0);
    e[0].group_add("RT 5", "dewi", T0.plus(1)).unwrap();
    // Dewi hears first from Alice, and writes to Bob before Alice's card of her reaches Bob.
    hand(&mut e, 0, 3, T0.plus(1));
    hand(&mut e, 3, 1, T0.plus(1));
    assert_eq!(e[1].requests().unwrap().len(), 1, "Dewi is a stranger to Bob until her card arrives");
    settle(&mut e, &[], T0.plus(1));
    assert!(e[1].requests().unwrap().is_empty(), "her card opened what she wrote");
    e[3].send_group_text("RT 5", "salam kenal", T0.plus(2)).unwrap();
    settle(&mut e, &[], T0.plus(2));
    for member in &mut e {
        assert_eq!(texts(member, view.id), ["salam kenal"]);
        assert_eq!(member.group("RT 5").unwrap().members.len(), 4);
    }
}

#[test]
fn a_card_for_someone_not_in_the_group_makes_no_contact_and_a_member_met_in_a_group_can_be_added() {
    let mut e = network_of(4, &[(0, 1), (1, 0), (0, 2), (2, 0), (0, 3), (3, 0)]);
    let view = e[0].create_group("Kantor", &["bob", "carol"], T0).unwrap();
    settle(&mut e, &[], T0);
    // Alice passes Bob the card of Dewi, who is not in the group: Bob keeps nothing of it.
    let dewi = e[0].store().contact("dewi").unwrap().unwrap();
    let card = super::groups::tests_card_of(&dewi).unwrap();
    let alice = e[1].store().contact("alice").unwrap().unwrap();
    let mut changes = Vec::new();
    let introduced = e[1].receive_group_cards(&alice, view.id, vec![card], &mut changes, T0).unwrap();
    assert!(introduced.is_empty() && changes.is_empty());

    // Bob adds Carol, met in the group, as a contact: the session they have goes on.
    e[1].send_group_text("Kantor", "rapat?", T0.plus(1)).unwrap();
    settle(&mut e, &[], T0.plus(1));
    let invite = e[2].invite(peer(3).to_bytes(), vec![], T0).unwrap();
    let carol = e[1].add_contact(&invite, "carol", T0.plus(2)).unwrap();
    assert!(carol.session.is_some());
    assert_eq!(own_contacts(&e[1]), ["alice", "carol"]);
    let seen = e[1].group("Kantor").unwrap();
    assert!(seen.members.iter().any(|m| m.contact.as_deref() == Some("carol")));
    e[1].send_text("carol", "langsung ke kamu", T0.plus(3)).unwrap();
    settle(&mut e, &[], T0.plus(3));
    let member = super::member_contact_name(&e[1].me().identity.public());
    assert_eq!(
        e[2].store().messages(Some(&member), 10).unwrap().iter().map(|m| m.text.as_str()).collect::<Vec<_>>(),
        ["langsung ke kamu"],
        "Carol, who has not added Bob, gets it under the member he is to her"
    );
}

#[test]
fn read_receipts_count_per_member_and_a_lost_copy_shows_as_a_gap() {
    let mut e = network(3);
    let view = e[0].create_group("Keluarga", &["bob", "carol"], T0).unwrap();
    settle(&mut e, &[], T0);
    let first = e[0].send_group_text("Keluarga", "satu", T0).unwrap();
    settle(&mut e, &[], T0);
    assert_eq!(e[1].mark_group_read("Keluarga", T0).unwrap(), 1);
    settle(&mut e, &[], T0);
    let info = e[0].store().group_message(&first.id).unwrap().unwrap();
    let by_contact = |name: &str| info.copies.iter().find(|c| c.contact == name).unwrap().status;
    assert_eq!((by_contact("bob"), by_contact("carol")), (Status::Read, Status::Delivered));
    assert_eq!(
        e[0].message(&first.id).unwrap().status,
        Status::Delivered,
        "as far as its least advanced copy"
    );

    // The second text's copy to Bob is left at a relay Bob never fetches from.
    e[0].send_group_text("Keluarga", "dua", T0.plus(1)).unwrap();
    for attempt in e[0].due(T0.plus(1), Some("bob")).unwrap() {
        let deposited = AttemptResult::Deposited { accepted: 1, total: 1, refusals: Vec::new() };
        e[0].attempt_finished(&attempt.id, &deposited, T0.plus(1)).unwrap();
    }
    e[0].send_group_text("Keluarga", "tiga", T0.plus(2)).unwrap();
    settle(&mut e, &[], T0.plus(2));
    assert_eq!(texts(&e[1], view.id), ["satu", "tiga"]);
    let alice = e[0].me().identity.public();
    assert_eq!(e[1].group_missing("Keluarga").unwrap(), [(alice, vec![[2, 2]])]);
    assert!(e[2].group_missing("Keluarga").unwrap().is_empty());
}

#[test]
fn a_sender_cannot_mark_read_what_it_sent_us() {
    let mut e = network(2);
    e[0].create_group("Dua", &["bob"], T0).unwrap();
    settle(&mut e, &[], T0);
    e[0].send_group_text("Dua", "halo", T0).unwrap();
    settle(&mut e, &[], T0);
    // Alice's node names the copy it sent in a read receipt of its own.
    let copy = {
        let conversation = e[1].store().messages(None, 10).unwrap();
        let id = conversation.iter().find(|m| m.text == "halo").unwrap().id;
        e[1].store().group_message(&id).unwrap().unwrap().copies[0].copy
    };
    let alice = e[1].store().contact("alice").unwrap().unwrap();
    assert!(e[1].confirm_copy(&alice, &copy, Status::Read).unwrap().is_none());
}

/// Bob as a member of Alice's group with Carol and Dewi, who are not his contacts, before any
/// card of theirs reached him: the group's entries handed to him directly.
fn bob_before_the_cards() -> (Vec<Engine<Arc<MemoryStore>>>, GroupId, Vec<MemberCard>) {
    let mut e = network_of(4, &[(0, 1), (1, 0), (0, 2), (2, 0), (0, 3), (3, 0)]);
    let view = e[0].create_group("Kampung", &["bob", "carol", "dewi"], T0).unwrap();
    let found = GroupEntries { group: view.id, entries: e[0].group_logs[&view.id].entries().to_vec() };
    let alice = e[1].store().contact("alice").unwrap().unwrap();
    let mut changes = Vec::new();
    e[1].receive_group_entries(&alice, found, &mut changes, T0).unwrap();
    e[1].store().apply(&changes).unwrap();
    let cards = ["carol", "dewi"]
        .iter()
        .map(|name| super::groups::tests_card_of(&e[0].store().contact(name).unwrap().unwrap()).unwrap())
        .collect();
    (e, view.id, cards)
}

#[test]
fn a_node_keeps_only_so_many_members_who_are_not_contacts() {
    let (mut e, group, cards) = bob_before_the_cards();
    e[1].set_max_member_contacts(1);
    let alice = e[1].store().contact("alice").unwrap().unwrap();
    let mut changes = Vec::new();
    let introduced = e[1].receive_group_cards(&alice, group, cards, &mut changes, T0).unwrap();
    assert_eq!(introduced.len(), 1, "the second card is past the cap");
    e[1].store().apply(&changes).unwrap();
    let kept =
        e[1].store().contacts().unwrap().into_iter().filter(|c| super::is_member_contact(&c.name)).count();
    assert_eq!(kept, 1);
}

#[test]
fn a_card_whose_keys_expired_on_the_way_makes_no_member_contact() {
    let (mut e, group, cards) = bob_before_the_cards();
    // Carol's card without its last-resort prekey, arriving after the bundle's prekey expired.
    let mut stale = cards[0].clone();
    stale.keys.last_resort = None;
    let expired = T0.plus(
        merpati_proto::identity::PREKEY_ROTATION + merpati_proto::identity::PREKEY_GRACE + Timestamp::DAY,
    );
    let alice = e[1].store().contact("alice").unwrap().unwrap();
    let mut changes = Vec::new();
    assert!(
        e[1].receive_group_cards(&alice, group, vec![stale.clone()], &mut changes, expired)
            .unwrap()
            .is_empty()
    );
    assert!(changes.is_empty());
    // The same card on time is taken.
    assert_eq!(e[1].receive_group_cards(&alice, group, vec![stale], &mut changes, T0).unwrap().len(), 1);
}
