//! The membership log: who may do what, entries that wait for their parents, refusals that
//! change nothing, and convergence whatever order the entries arrive in.

use proptest::prelude::*;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

use super::*;
use crate::identity::{IdentityKey, IdentityPublic};
use crate::time::Timestamp;

const T0: Timestamp = Timestamp(1_795_219_200_000);

/// The owner, two admins-to-be and three members-to-be.
struct People {
    owner: IdentityKey,
    ann: IdentityKey,
    ben: IdentityKey,
    cid: IdentityKey,
    dee: IdentityKey,
    eve: IdentityKey,
}

fn people() -> People {
    let mut rng = ChaCha20Rng::seed_from_u64(12);
    let mut key = || IdentityKey::generate(&mut rng);
    People { owner: key(), ann: key(), ben: key(), cid: key(), dee: key(), eve: key() }
}

fn id(key: &IdentityKey) -> IdentityPublic {
    key.public()
}

/// A new group of `p.owner`, and its log.
fn group(p: &People) -> Log {
    let (_, genesis) = Entry::genesis(&p.owner, "Pasar Minggu", [9; 16], T0).unwrap();
    Log::new(genesis).unwrap()
}

/// An entry by `author` following the log's current heads.
fn next(log: &Log, author: &IdentityKey, action: Action) -> Entry {
    let parents = log.heads();
    let n = parents.iter().map(|h| entry_n(log, h)).max().unwrap() + 1;
    Entry::sign(author, log.group_id(), n, parents, T0, action).unwrap()
}

fn entry_n(log: &Log, hash: &EntryHash) -> u32 {
    log.entries().iter().find(|e| e.hash() == *hash).unwrap().n
}

/// Appends an entry by `author`, which must be taken.
fn act(log: &mut Log, author: &IdentityKey, action: Action) -> Entry {
    let entry = next(log, author, action);
    assert!(matches!(log.add(entry.clone(), T0), Ok(Added::New(_))), "{entry:?} refused");
    entry
}

fn add(who: &IdentityKey, name: &str) -> Action {
    Action::Add { member: id(who), name: name.into() }
}

fn members(log: &Log) -> Vec<(IdentityPublic, Role)> {
    log.state().members.into_iter().map(|(k, m)| (k, m.role)).collect()
}

/// A group where the owner made Ann an admin and added Cid.
fn with_admin(p: &People) -> Log {
    let mut log = group(p);
    act(&mut log, &p.owner, add(&p.ann, "Ann"));
    act(&mut log, &p.owner, Action::SetRole { member: id(&p.ann), role: Role::Admin });
    act(&mut log, &p.ann, add(&p.cid, "Cid"));
    log
}

#[test]
fn an_entry_round_trips_and_its_group_id_comes_from_the_genesis() {
    let p = people();
    let (group_id, genesis) = Entry::genesis(&p.owner, "Pasar Minggu", [9; 16], T0).unwrap();
    assert_eq!(Entry::from_bytes(&genesis.to_bytes()).unwrap(), genesis);
    assert_eq!(genesis.group_id_of_genesis(), group_id);
    let log = Log::new(genesis.clone()).unwrap();
    assert_eq!(log.group_id(), group_id);
    let entry = next(&log, &p.owner, add(&p.ann, "Ann"));
    assert_eq!(Entry::from_bytes(&entry.to_bytes()).unwrap(), entry);
    // Another nonce, another group.
    let (other, _) = Entry::genesis(&p.owner, "Pasar Minggu", [8; 16], T0).unwrap();
    assert_ne!(other, group_id);
    let state = log.state();
    assert_eq!((state.name.as_str(), state.owner, state.len()), ("Pasar Minggu", id(&p.owner), 1));
}

#[test]
fn admins_add_and_remove_members_and_members_leave() {
    let p = people();
    let mut log = with_admin(&p);
    assert_eq!(log.state().role(&id(&p.ann)), Some(Role::Admin));
    assert_eq!(log.state().members[&id(&p.cid)].name, "Cid");
    act(&mut log, &p.ann, add(&p.dee, "Dee"));
    act(&mut log, &p.dee, Action::Leave);
    act(&mut log, &p.ann, Action::Remove { member: id(&p.cid) });
    act(&mut log, &p.ann, Action::Rename { name: "Pasar Senin".into() });
    let state = log.state();
    assert_eq!(state.name, "Pasar Senin");
    assert_eq!(members(&log), [(id(&p.ann), Role::Admin)]);
    // Added again after being removed: a plain member.
    act(&mut log, &p.ann, add(&p.cid, "Cid again"));
    assert_eq!(log.state().members[&id(&p.cid)], Member { name: "Cid again".into(), role: Role::Member });
}

#[test]
fn what_an_author_may_not_do_is_refused_and_changes_nothing() {
    let p = people();
    let mut log = with_admin(&p);
    let before = (log.state(), log.len(), log.heads());
    let refused = [
        (&p.cid, add(&p.dee, "Dee")),                      // a member adds
        (&p.eve, add(&p.dee, "Dee")),                      // a stranger adds
        (&p.ann, Action::Remove { member: id(&p.owner) }), // the owner removed
        (&p.ann, Action::SetRole { member: id(&p.cid), role: Role::Admin }), // an admin promotes
        (&p.owner, add(&p.cid, "Cid")),                    // already a member
        (&p.ann, Action::Remove { member: id(&p.eve) }),   // not a member
        (&p.owner, Action::Leave),                         // the owner leaves
        (&p.cid, Action::Rename { name: "mine".into() }),  // a member renames
    ];
    for (author, action) in refused {
        let entry = next(&log, author, action.clone());
        assert!(matches!(log.add(entry, T0), Err(LogError::NotAllowed(_))), "{action:?}");
    }
    assert_eq!((log.state(), log.len(), log.heads()), before);
    // An admin removing another admin: the owner only.
    act(&mut log, &p.owner, add(&p.ben, "Ben"));
    act(&mut log, &p.owner, Action::SetRole { member: id(&p.ben), role: Role::Admin });
    let entry = next(&log, &p.ann, Action::Remove { member: id(&p.ben) });
    assert!(matches!(log.add(entry, T0), Err(LogError::NotAllowed("only the owner removes an admin"))));
    assert_eq!(log.state().role(&id(&p.ben)), Some(Role::Admin));
}

#[test]
fn forged_foreign_misnumbered_and_second_genesis_entries_are_refused() {
    let p = people();
    let mut log = with_admin(&p);
    let state = log.state();
    let len = log.len();
    // A signature over other content.
    let mut forged = next(&log, &p.ann, add(&p.dee, "Dee"));
    forged.action = add(&p.eve, "Eve");
    assert!(matches!(log.add(forged, T0), Err(LogError::Entry(EntryError::BadSignature))));
    // Another group's entry.
    let (other_id, _) = Entry::genesis(&p.owner, "Other", [1; 16], T0).unwrap();
    let parents = log.heads();
    let foreign = Entry::sign(&p.ann, other_id, 4, parents.clone(), T0, add(&p.dee, "Dee")).unwrap();
    assert!(matches!(log.add(foreign, T0), Err(LogError::OtherGroup)));
    // A wrong number.
    let wrong = Entry::sign(&p.ann, log.group_id(), 9, parents, T0, add(&p.dee, "Dee")).unwrap();
    assert!(matches!(log.add(wrong, T0), Err(LogError::WrongNumber)));
    // A second genesis, even the owner's.
    let (_, again) = Entry::genesis(&p.owner, "Again", [2; 16], T0).unwrap();
    assert!(matches!(log.add(again, T0), Err(LogError::SecondGenesis)));
    assert_eq!((log.state(), log.len(), log.waiting()), (state, len, 0));
}

#[test]
fn an_entry_waits_for_its_parents_and_a_replay_changes_nothing() {
    let p = people();
    let mut full = with_admin(&p);
    let add_dee = act(&mut full, &p.ann, add(&p.dee, "Dee"));
    let dee_leaves = act(&mut full, &p.dee, Action::Leave);
    // A member who has only the genesis and the first two entries gets the last two backwards.
    let mut log = group(&p);
    for entry in &full.entries()[1..4] {
        log.add(entry.clone(), T0).unwrap();
    }
    assert_eq!(log.add(dee_leaves.clone(), T0), Ok(Added::Waiting));
    assert_eq!(log.add(dee_leaves.clone(), T0), Ok(Added::Known));
    assert_eq!(log.add(add_dee.clone(), T0), Ok(Added::New(vec![add_dee.hash(), dee_leaves.hash()])));
    assert_eq!(log.state(), full.state());
    // The old `Add` again, after Dee left: nothing changes.
    assert_eq!(log.add(add_dee, T0), Ok(Added::Known));
    assert!(!log.state().members.contains_key(&id(&p.dee)));
    // An entry whose parents never come is dropped after a week.
    let orphan =
        Entry::sign(&p.ann, log.group_id(), 40, vec![EntryHash([7; 32])], T0, add(&p.eve, "Eve")).unwrap();
    assert_eq!(log.add(orphan, T0), Ok(Added::Waiting));
    assert_eq!(log.waiting(), 1);
    let later = T0.plus(PENDING_LIFETIME);
    let _ = log.add(dee_leaves, later);
    assert_eq!(log.waiting(), 0);
}

#[test]
fn a_removed_admins_backdated_entry_is_void() {
    let p = people();
    let mut log = with_admin(&p);
    let fork = log.heads();
    // The owner removes Ann; Ann, citing the log before her removal, adds Eve.
    act(&mut log, &p.owner, Action::Remove { member: id(&p.ann) });
    let n = fork.iter().map(|h| entry_n(&log, h)).max().unwrap() + 1;
    let backdated = Entry::sign(&p.ann, log.group_id(), n, fork, T0, add(&p.eve, "Eve")).unwrap();
    // Valid in its own past (Ann was an admin there), so it is kept, but void: Eve is no member.
    assert!(matches!(log.add(backdated, T0), Ok(Added::New(_))));
    assert!(!log.state().members.contains_key(&id(&p.eve)));
    assert_eq!(log.state().role(&id(&p.ann)), None);
    // And anything citing her removal is refused outright.
    let late = next(&log, &p.ann, add(&p.dee, "Dee"));
    assert!(matches!(log.add(late, T0), Err(LogError::NotAllowed(_))));
}

/// The entries made at once from one log: Ann adds Dee and renames the group; Ben, not having
/// seen it, adds Dee too, removes her and renames the group; the owner meanwhile adds Eve.
fn concurrent_entries(p: &People) -> (Log, Vec<Entry>) {
    let mut base = with_admin(p);
    act(&mut base, &p.owner, add(&p.ben, "Ben"));
    act(&mut base, &p.owner, Action::SetRole { member: id(&p.ben), role: Role::Admin });
    let mut ann = base.clone();
    let mut ben = base.clone();
    let mut owner = base.clone();
    let mut made = vec![
        act(&mut ann, &p.ann, add(&p.dee, "Dee")),
        act(&mut ann, &p.ann, Action::Rename { name: "Ann's".into() }),
        act(&mut ben, &p.ben, add(&p.dee, "Dee (Ben)")),
        act(&mut ben, &p.ben, Action::Remove { member: id(&p.dee) }),
        act(&mut owner, &p.owner, add(&p.eve, "Eve")),
    ];
    made.push(act(&mut ben, &p.ben, Action::Rename { name: "Ben's".into() }));
    (base, made)
}

#[test]
fn two_admins_adding_and_removing_one_member_converge_on_removed() {
    let p = people();
    let (base, made) = concurrent_entries(&p);
    let mut log = base.clone();
    for entry in &made {
        log.add(entry.clone(), T0).unwrap();
    }
    let state = log.state();
    assert!(!state.members.contains_key(&id(&p.dee)), "removal beats a concurrent add");
    assert!(state.members.contains_key(&id(&p.eve)));
    // Two concurrent renames: the one with the lower hash wins, everywhere.
    let renames: Vec<&Entry> = made.iter().filter(|e| matches!(e.action, Action::Rename { .. })).collect();
    let winner = renames.iter().min_by_key(|e| e.hash()).unwrap();
    let Action::Rename { name } = &winner.action else { unreachable!() };
    assert_eq!(&state.name, name);
}

proptest! {
    /// Members holding the same entries agree, whatever order the entries came in (parents
    /// later than children included).
    #[test]
    fn every_delivery_order_gives_the_same_state(order in Just((0..6usize).collect::<Vec<_>>()).prop_shuffle()) {
        let p = people();
        let (base, made) = concurrent_entries(&p);
        let mut reference = base.clone();
        for entry in &made {
            reference.add(entry.clone(), T0).unwrap();
        }
        let mut log = base;
        for i in order {
            log.add(made[i].clone(), T0).unwrap();
        }
        prop_assert_eq!(log.waiting(), 0);
        prop_assert_eq!(log.state(), reference.state());
    }

    /// Any bytes decode to an entry or an error, never a panic.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = Entry::from_bytes(&bytes);
    }
}

#[test]
fn the_owner_demoting_an_admin_voids_what_the_admin_did_at_the_same_time() {
    let p = people();
    let mut base = with_admin(&p);
    let mut ann = base.clone();
    let ann_adds = act(&mut ann, &p.ann, add(&p.eve, "Eve"));
    act(&mut base, &p.owner, Action::SetRole { member: id(&p.ann), role: Role::Member });
    base.add(ann_adds, T0).unwrap();
    let state = base.state();
    assert_eq!(state.role(&id(&p.ann)), Some(Role::Member));
    assert!(!state.members.contains_key(&id(&p.eve)));
}

#[test]
fn leaving_while_being_demoted_still_leaves() {
    let p = people();
    let mut base = with_admin(&p);
    let mut ann = base.clone();
    let leaves = act(&mut ann, &p.ann, Action::Leave);
    act(&mut base, &p.owner, Action::SetRole { member: id(&p.ann), role: Role::Member });
    base.add(leaves, T0).unwrap();
    assert_eq!(base.state().role(&id(&p.ann)), None, "her own leave is no admin's act to void");
}

#[test]
fn strangers_get_only_a_few_waiting_places() {
    let p = people();
    let mut log = with_admin(&p);
    let len = log.len();
    // Eve, never in the group, signs entries citing parents nobody has: a few wait, then no more.
    for n in 0..MAX_PENDING_UNNAMED as u32 + 4 {
        let junk =
            Entry::sign(&p.eve, log.group_id(), 10 + n, vec![EntryHash([n as u8; 32])], T0, Action::Leave)
                .unwrap();
        let added = log.add(junk, T0);
        if (n as usize) < MAX_PENDING_UNNAMED {
            assert_eq!(added, Ok(Added::Waiting));
        } else {
            assert_eq!(added, Err(LogError::Full));
        }
    }
    assert_eq!((log.len(), log.waiting()), (len, MAX_PENDING_UNNAMED));
    // Ann, whom the log names, still finds room.
    let early =
        Entry::sign(&p.ann, log.group_id(), 9, vec![EntryHash([1; 32])], T0, add(&p.dee, "Dee")).unwrap();
    assert_eq!(log.add(early, T0), Ok(Added::Waiting));
}

#[test]
fn a_new_entry_cites_at_most_four_heads_the_latest_first() {
    let p = people();
    let mut log = group(&p);
    // Five concurrent adds by the owner, all after the genesis: five heads.
    let base = log.clone();
    for who in [&p.ann, &p.ben, &p.cid, &p.dee, &p.eve] {
        let entry = next(&base, &p.owner, add(who, "x"));
        assert!(matches!(log.add(entry, T0), Ok(Added::New(_))));
    }
    assert_eq!(log.heads().len(), 5);
    let (parents, n) = log.next_parents();
    assert_eq!((parents.len(), n), (MAX_PARENTS, log.last_n() + 1));
    let mut sorted = parents.clone();
    sorted.sort();
    assert_eq!(parents, sorted);
    // The entry after them is taken, and leaves two heads: itself and the one it did not cite.
    let entry =
        Entry::sign(&p.owner, log.group_id(), n, parents, T0, Action::Rename { name: "Pasar".into() })
            .unwrap();
    assert!(matches!(log.add(entry, T0), Ok(Added::New(_))));
    assert_eq!(log.heads().len(), 2);
    let (parents, _) = log.next_parents();
    assert_eq!(parents.len(), 2);
}

#[test]
fn a_group_message_id_is_the_same_at_every_member_and_differs_per_sender_and_count() {
    let p = people();
    let log = group(&p);
    let a = message_id(log.group_id(), &id(&p.ann), 1);
    assert_eq!(a, message_id(log.group_id(), &id(&p.ann), 1));
    assert_ne!(a, message_id(log.group_id(), &id(&p.ann), 2));
    assert_ne!(a, message_id(log.group_id(), &id(&p.ben), 1));
    assert_ne!(a, message_id(GroupId([0; 16]), &id(&p.ann), 1));
    // The heads digest does not depend on the order heads are listed in.
    let (h1, h2) = (EntryHash([1; 32]), EntryHash([2; 32]));
    assert_eq!(heads_digest(&[h1, h2]), heads_digest(&[h2, h1]));
    assert_ne!(heads_digest(&[h1]), heads_digest(&[h2]));
}
