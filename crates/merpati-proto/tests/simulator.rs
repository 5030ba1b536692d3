//! A deterministic two-party simulator for NDR1 sessions, run as property tests.
//!
//! Two parties exchange messages over an adversarial network that drops, duplicates, reorders and
//! delays envelopes, fans each one out to several relays, and restarts either party at any point
//! from its persisted state (also in the middle of opening a message, before the result was
//! persisted). The clock is fake and moves in steps of up to three hours. After the random
//! schedule the network is drained and these must hold:
//!
//! * every message that was sealed and persisted, and not dropped on every route, is delivered
//!   exactly once; nothing that was never sent is ever accepted (same id, same body);
//! * no (key, nonce) pair is ever used twice, counting seals whose state a crash threw away;
//! * both root chains agree on every epoch both sides know;
//! * state stays within its caps after every step.
#![allow(clippy::unwrap_used)] // test code: a failed step is a failed test

mod common;

use std::collections::{HashMap, HashSet};

use common::{Party, T0, text};
use merpati_proto::Timestamp;
use merpati_proto::envelope::{Envelope, Header};
use merpati_proto::frame::{Body, MessageId};
use merpati_proto::session::{
    MAX_RETAINED_EPOCHS, MAX_RETAINED_SUBKEYS, MAX_SEQ_AHEAD, OpenError, Session, SessionState,
};
use proptest::prelude::*;
use rand_chacha::ChaCha20Rng;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Side {
    A,
    B,
}

impl Side {
    fn other(self) -> Side {
        match self {
            Side::A => Side::B,
            Side::B => Side::A,
        }
    }
}

#[derive(Debug, Clone)]
enum Action {
    /// Seal a message and fan it out to `routes` relays (1-3).
    Send { from: Side, routes: usize, len: usize },
    /// Deliver an in-flight envelope (chosen by index) to its recipient.
    Deliver(usize),
    /// Lose an in-flight envelope.
    Drop(usize),
    /// Copy an in-flight envelope (a relay delivering twice).
    Duplicate(usize),
    /// Deliver, but crash before the result is persisted: the relay keeps the envelope.
    CrashWhileOpening(usize),
    /// Seal a message, then crash before persisting: the envelope never leaves.
    CrashWhileSealing(Side),
    /// Restart a party from its persisted state.
    Restart(Side),
    /// Move the clock forward.
    Wait(u64),
}

fn side() -> impl Strategy<Value = Side> {
    prop_oneof![Just(Side::A), Just(Side::B)]
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        6 => (side(), 1usize..=3, 0usize..3000).prop_map(|(from, routes, len)| Action::Send { from, routes, len }),
        8 => any::<usize>().prop_map(Action::Deliver),
        1 => any::<usize>().prop_map(Action::Drop),
        1 => any::<usize>().prop_map(Action::Duplicate),
        1 => any::<usize>().prop_map(Action::CrashWhileOpening),
        1 => side().prop_map(Action::Restart),
        1 => side().prop_map(Action::CrashWhileSealing),
        1 => (0u64..3 * Timestamp::HOUR).prop_map(Action::Wait),
    ]
}

struct InFlight {
    to: Side,
    bytes: Vec<u8>,
    message: MessageId,
}

struct Peer {
    party: Party,
    /// The live session (B has none until the first contact arrives).
    live: Option<Session>,
    /// The last persisted state, as a restart would read it from disk.
    persisted: Option<String>,
    /// Messages stored (after persisting), by id.
    delivered: Vec<MessageId>,
    /// Root key per epoch, as this side saw it when the epoch became its latest.
    roots: HashMap<u32, [u8; 32]>,
}

impl Peer {
    fn persist(&mut self) {
        let session = self.live.as_ref().expect("live session");
        self.persisted = Some(serde_json::to_string(session.state()).expect("serialize"));
        let state = session.state();
        let root = *state.root.as_bytes();
        if let Some(previous) = self.roots.insert(state.latest_epoch, root) {
            assert_eq!(previous, root, "root of epoch {} changed", state.latest_epoch);
        }
    }

    fn restore(&mut self, now: Timestamp) {
        self.live = self.persisted.as_ref().map(|json| {
            let state: SessionState = serde_json::from_str(json).expect("deserialize");
            Session::restore(state, now)
        });
        if self.live.is_some() {
            // The restored session stepped its sending sub-epoch; that must be on disk before use.
            self.persist();
        }
    }
}

struct World {
    rng: ChaCha20Rng,
    now: Timestamp,
    a: Peer,
    b: Peer,
    net: Vec<InFlight>,
    /// Every message sealed and persisted: sender, body.
    sent: HashMap<MessageId, (Side, Body)>,
    /// Copies of each message still able to arrive.
    copies: HashMap<MessageId, usize>,
    /// Every (key, nonce) ever used to seal, including seals a crash discarded.
    nonces: HashSet<([u8; 32], u8)>,
    /// Messages of which at least one copy was dropped.
    dropped: HashSet<MessageId>,
    /// Messages refused because a retention cap had deleted their keys.
    expired: HashSet<MessageId>,
}

/// Whether the key for `header` is missing because a retention cap deleted it: its epoch is older
/// than every retained one while the epoch cap is full, or its sub-epoch key is gone while the
/// sub-key cap is full.
fn evicted_by_cap(state: &SessionState, header: &Header) -> bool {
    match state.recv.iter().find(|r| r.epoch == header.epoch) {
        None => state.recv.len() == MAX_RETAINED_EPOCHS && state.recv.iter().all(|r| r.epoch > header.epoch),
        Some(_) => state.recv.iter().map(|r| r.subkeys.len()).sum::<usize>() == MAX_RETAINED_SUBKEYS,
    }
}

impl World {
    fn new(seed: u64) -> Self {
        let mut rng = common::rng(seed);
        let alice = Party::new(&mut rng, T0);
        let bob = Party::new(&mut rng, T0);
        let live = alice.initiate(&bob, T0, &mut rng);
        let mut a = Peer {
            party: alice,
            live: Some(live),
            persisted: None,
            delivered: vec![],
            roots: HashMap::new(),
        };
        a.persist();
        let b = Peer { party: bob, live: None, persisted: None, delivered: vec![], roots: HashMap::new() };
        Self {
            rng,
            now: T0,
            a,
            b,
            net: vec![],
            sent: HashMap::new(),
            copies: HashMap::new(),
            nonces: HashSet::new(),
            dropped: HashSet::new(),
            expired: HashSet::new(),
        }
    }

    fn peer(&mut self, side: Side) -> &mut Peer {
        match side {
            Side::A => &mut self.a,
            Side::B => &mut self.b,
        }
    }

    fn run(&mut self, action: &Action) {
        match *action {
            Action::Send { from, routes, len } => self.send(from, routes, len),
            Action::Deliver(i) => self.deliver(i, false),
            Action::CrashWhileOpening(i) => self.deliver(i, true),
            Action::Drop(i) => {
                if !self.net.is_empty() {
                    let gone = self.net.remove(i % self.net.len());
                    *self.copies.get_mut(&gone.message).expect("tracked") -= 1;
                    self.dropped.insert(gone.message);
                }
            }
            Action::Duplicate(i) => {
                if !self.net.is_empty() {
                    let item = &self.net[i % self.net.len()];
                    let copy = InFlight { to: item.to, bytes: item.bytes.clone(), message: item.message };
                    *self.copies.get_mut(&copy.message).expect("tracked") += 1;
                    self.net.push(copy);
                }
            }
            Action::CrashWhileSealing(side) => self.crash_while_sealing(side),
            Action::Restart(side) => {
                let now = self.now;
                self.peer(side).restore(now);
            }
            Action::Wait(ms) => self.now = self.now.plus(ms),
        }
        self.check_caps();
    }

    fn send(&mut self, from: Side, routes: usize, len: usize) {
        let now = self.now;
        let body = text(&"m".repeat(len));
        let mut rng = self.rng.clone();
        let peer = self.peer(from);
        let Some(session) = peer.live.as_mut() else { return };
        let sealed = session.seal(&body, now, &mut rng).expect("seal");
        let send = session.state().send.as_ref().expect("sending epoch");
        let used = (*send.key.as_bytes(), send.next_index - 1);
        peer.persist();
        self.rng = rng;
        assert!(self.nonces.insert(used), "(key, nonce) used twice");
        self.sent.insert(sealed.message_id, (from, body));
        self.copies.insert(sealed.message_id, routes);
        for _ in 0..routes {
            self.net.push(InFlight {
                to: from.other(),
                bytes: sealed.envelope.clone(),
                message: sealed.message_id,
            });
        }
    }

    fn crash_while_sealing(&mut self, side: Side) {
        let now = self.now;
        let mut rng = self.rng.clone();
        let peer = self.peer(side);
        let Some(session) = peer.live.as_mut() else { return };
        session.seal(&text("never sent"), now, &mut rng).expect("seal");
        let send = session.state().send.as_ref().expect("sending epoch");
        let used = (*send.key.as_bytes(), send.next_index - 1);
        peer.restore(now);
        self.rng = rng;
        assert!(self.nonces.insert(used), "(key, nonce) used twice");
    }

    fn deliver(&mut self, i: usize, crash: bool) {
        if self.net.is_empty() {
            return;
        }
        let item = self.net.remove(i % self.net.len());
        let now = self.now;
        let mut rng = self.rng.clone();
        let peer = self.peer(item.to);
        let before = peer.live.as_ref().map(|s| serde_json::to_string(s.state()).expect("serialize"));
        let result = match peer.live.as_mut() {
            Some(session) => session.open(&item.bytes, now).map(|incoming| (None, incoming)),
            None => Session::accept(peer.party.responder(), &item.bytes, now, &mut rng)
                .map(|(session, incoming)| (Some(session), incoming)),
        };
        match result {
            Ok((created, incoming)) => {
                self.rng = rng;
                let (sender, body) =
                    self.sent.get(&incoming.message_id).expect("accepted a message nobody sent");
                assert_eq!(*sender, item.to.other(), "message accepted by its own sender");
                assert_eq!(body, &incoming.body, "accepted body differs from the sent one");
                let peer = self.peer(item.to);
                if let Some(session) = created {
                    peer.live = Some(session);
                }
                if crash {
                    peer.restore(now);
                    self.net.push(item);
                    return;
                }
                peer.persist();
                assert!(!peer.delivered.contains(&incoming.message_id), "message delivered twice");
                peer.delivered.push(incoming.message_id);
                *self.copies.get_mut(&item.message).expect("tracked") -= 1;
            }
            Err(error) => {
                let after = peer.live.as_ref().map(|s| serde_json::to_string(s.state()).expect("serialize"));
                assert_eq!(before, after, "refusal ({error}) changed the session");
                let header = Envelope::decode(&item.bytes).expect("sent envelopes decode").header;
                let state = peer.live.as_ref().map(Session::state);
                if error == OpenError::KeyUnavailable && state.is_some_and(|s| evicted_by_cap(s, &header)) {
                    // Lost to a retention cap: allowed, but counted (the long run expects none).
                    self.expired.insert(item.message);
                } else {
                    assert!(
                        matches!(error, OpenError::Replay) && peer.delivered.contains(&item.message),
                        "copy of {:?} (epoch {}, sub-epoch {}) refused with {error:?}",
                        item.message,
                        header.epoch,
                        header.sub_epoch
                    );
                }
                *self.copies.get_mut(&item.message).expect("tracked") -= 1;
            }
        }
    }

    fn check_caps(&self) {
        for peer in [&self.a, &self.b] {
            let Some(session) = &peer.live else { continue };
            let state = session.state();
            assert!(state.recv.len() <= MAX_RETAINED_EPOCHS);
            assert!(state.recv.iter().map(|r| r.subkeys.len()).sum::<usize>() <= MAX_RETAINED_SUBKEYS);
            assert!(state.peer_seq.ahead.len() <= MAX_SEQ_AHEAD);
            if let Some(send) = &state.send {
                assert!(send.next_index <= 64);
            }
        }
    }

    fn drain(&mut self) {
        while !self.net.is_empty() {
            self.deliver(0, false);
        }
    }

    fn check_outcome(&self) {
        let mut delivered = 0;
        for (id, (from, _)) in &self.sent {
            let receiver = match from {
                Side::A => &self.b,
                Side::B => &self.a,
            };
            let got = receiver.delivered.iter().filter(|d| *d == id).count();
            assert!(got <= 1, "message {id:?} delivered {got} times");
            assert_eq!(self.copies[id], 0, "message {id:?} still has copies after draining");
            delivered += got;
            // Every copy that reached its recipient was either stored or refused as a replay of a
            // stored one (checked in `deliver`), so an undelivered message had every copy dropped.
            if got == 0 {
                assert!(
                    self.dropped.contains(id) || self.expired.contains(id),
                    "message {id:?} was neither delivered nor dropped"
                );
            }
        }
        assert_eq!(delivered, self.a.delivered.len() + self.b.delivered.len());
        for (epoch, root) in &self.a.roots {
            if let Some(other) = self.b.roots.get(epoch) {
                assert_eq!(root, other, "root chains disagree at epoch {epoch}");
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn adversarial_network_delivers_exactly_once(seed in any::<u64>(), actions in prop::collection::vec(action(), 1..160)) {
        let mut world = World::new(seed);
        for action in &actions {
            world.run(action);
        }
        world.drain();
        world.check_outcome();
    }
}

/// A long, fixed conversation through the simulator with every kind of fault, so a regression
/// shows up even where proptest's random schedules are short.
#[test]
fn long_conversation_with_faults() {
    let mut world = World::new(42);
    let mut rng = common::rng(43);
    use rand_core::Rng;
    for step in 0..3000u32 {
        let pick = rng.next_u32() % 100;
        let i = rng.next_u32() as usize;
        let from = if rng.next_u32().is_multiple_of(2) { Side::A } else { Side::B };
        let action = match pick {
            0..=24 => Action::Send { from, routes: 1 + (i % 3), len: i % 2000 },
            25..=79 => Action::Deliver(i),
            80..=83 => Action::Drop(i),
            84..=88 => Action::Duplicate(i),
            89..=91 => Action::CrashWhileOpening(i),
            92 => Action::CrashWhileSealing(from),
            93..=95 => Action::Restart(from),
            _ => Action::Wait(u64::from(step % 7) * Timestamp::HOUR / 2),
        };
        world.run(&action);
    }
    world.drain();
    world.check_outcome();
    let epochs = world.a.live.as_ref().map(|s| s.state().latest_epoch).unwrap_or(0);
    assert!(epochs > 20, "the conversation should have ratcheted many times, got {epochs}");
    assert!(world.b.delivered.len() > 250 && world.a.delivered.len() > 250);
    assert!(world.expired.is_empty(), "{} messages lost to retention caps", world.expired.len());
}
