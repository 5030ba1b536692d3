//! Fuzzes two NDR1 sessions talking over a hostile network: the input is a program of operations
//! on Alice (who starts, with a first contact to Bob) and Bob.
//!
//! Operations: Alice or Bob seals a text; the k-th envelope in flight is delivered, dropped,
//! duplicated, stripped of its epoch open, or delivered with one byte changed; Alice or Bob
//! restarts from the serialized state (optionally with its sequence number moved, as a buggy or
//! hostile peer could); the clock moves forward or back. State is persisted after every operation,
//! so a restart loses nothing.
//!
//! After every operation:
//! * nothing panicked, and a seal never failed;
//! * every accepted message was sealed by the other side, with the same body, epoch and sequence
//!   number, and none is accepted twice;
//! * every refusal left the session's serialized state exactly as it was, and a changed byte is
//!   always refused;
//! * an unmodified envelope is refused only for a reason the protocol allows: a replay of a
//!   delivered message, a key removed by a retention cap or by age (the envelope is older than
//!   the relay TTL, or the clock went back, after which key ages no longer follow from seal
//!   times), too many sub-epochs ahead, or an expired prekey;
//! * no (key, nonce) pair seals twice, both sides agree on the root key of every epoch, and the
//!   state stays within `MAX_RETAINED_SUBKEYS`, `MAX_RETAINED_EPOCHS` and `MAX_SEQ_AHEAD`.
//!
//! The proptest simulator in `crates/merpati-proto/tests/simulator.rs` checks the same properties
//! on random schedules; this target lets coverage steer the schedule.
#![no_main]

use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use merpati_fuzz::{Input, T0, parties, restart, rng, snapshot, strip_open};
use merpati_proto::Timestamp;
use merpati_proto::envelope::Envelope;
use merpati_proto::frame::{Body, MessageId};
use merpati_proto::identity::{PREKEY_GRACE, PREKEY_LIFETIME};
use merpati_proto::rand_core::SeedableRng;
use merpati_proto::session::{
    MAX_KEY_AGE, MAX_RETAINED_EPOCHS, MAX_RETAINED_SUBKEYS, MAX_SEQ_AHEAD, OpenError, SUB_EPOCH_MAX_AGE,
    Session, SessionState,
};
use rand_chacha::ChaCha20Rng;

/// The most operations one input runs.
const MAX_OPS: usize = 512;
/// The most envelopes in flight; sealing more drops the oldest.
const MAX_IN_FLIGHT: usize = 64;
/// Clock steps, in milliseconds: below, at and above the sub-epoch age and the key age.
const STEPS: [u64; 8] = [
    Timestamp::SECOND,
    Timestamp::HOUR,
    SUB_EPOCH_MAX_AGE - 1,
    SUB_EPOCH_MAX_AGE,
    3 * Timestamp::DAY,
    MAX_KEY_AGE - Timestamp::HOUR,
    MAX_KEY_AGE,
    MAX_KEY_AGE + 1,
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Alice,
    Bob,
}

impl Side {
    fn other(self) -> Side {
        match self {
            Side::Alice => Side::Bob,
            Side::Bob => Side::Alice,
        }
    }
}

/// One copy of an envelope on its way.
#[derive(Clone)]
struct InFlight {
    to: Side,
    bytes: Vec<u8>,
    message: MessageId,
    /// Exactly as sealed (not stripped of its open).
    unmodified: bool,
}

/// What was sealed, as the receiver must see it.
struct Sent {
    from: Side,
    body: Body,
    seq: u64,
    epoch: u32,
    at: Timestamp,
}

#[derive(Default)]
struct Peer {
    /// Bob has none until a first contact arrives.
    session: Option<Session>,
    delivered: HashSet<MessageId>,
    /// The root key each epoch had when it was this side's latest.
    roots: HashMap<u32, [u8; 32]>,
    /// Whether the receiving keys ever reached a retention cap (so a late message may be lost).
    capped: bool,
}

struct World {
    now: Timestamp,
    rng: ChaCha20Rng,
    alice: Peer,
    bob: Peer,
    net: Vec<InFlight>,
    sent: HashMap<MessageId, Sent>,
    nonces: HashSet<([u8; 32], u8)>,
    counter: u32,
    /// Whether the clock ever went back: key ages then no longer follow from seal times.
    clock_went_back: bool,
}

/// Alice's state right after starting the session, made once: each iteration restores it.
fn initial_state() -> &'static SessionState {
    static STATE: OnceLock<SessionState> = OnceLock::new();
    STATE.get_or_init(|| {
        let (alice, bob) = parties();
        alice.initiate(bob, T0, &mut rng()).state().clone()
    })
}

impl World {
    fn new() -> Self {
        let alice = Peer { session: Some(Session::restore(initial_state().clone(), T0)), ..Peer::default() };
        Self {
            now: T0,
            rng: ChaCha20Rng::seed_from_u64(7),
            alice,
            bob: Peer::default(),
            net: Vec::new(),
            sent: HashMap::new(),
            nonces: HashSet::new(),
            counter: 0,
            clock_went_back: false,
        }
    }

    fn peer(&mut self, side: Side) -> &mut Peer {
        match side {
            Side::Alice => &mut self.alice,
            Side::Bob => &mut self.bob,
        }
    }

    fn seal(&mut self, from: Side, len: usize) {
        let now = self.now;
        self.counter += 1;
        let body = Body::Text(format!("{from:?} {} {}", self.counter, "x".repeat(len)));
        let mut rng = self.rng.clone();
        let Some(session) = self.peer(from).session.as_mut() else { return };
        let sealed = session.seal(&body, now, &mut rng).expect("sealing");
        let send = session.state().send.as_ref().expect("a sending epoch after sealing");
        let used = (*send.key.as_bytes(), send.next_index - 1);
        let epoch = send.epoch;
        self.rng = rng;
        assert!(self.nonces.insert(used), "a (key, nonce) pair sealed twice");
        self.sent.insert(sealed.message_id, Sent { from, body, seq: sealed.seq, epoch, at: now });
        if self.net.len() == MAX_IN_FLIGHT {
            self.net.remove(0);
        }
        self.net.push(InFlight {
            to: from.other(),
            bytes: sealed.envelope,
            message: sealed.message_id,
            unmodified: true,
        });
    }

    /// Gives `item` to its recipient.
    fn deliver(&mut self, item: &InFlight, tampered: bool) {
        let now = self.now;
        let mut rng = self.rng.clone();
        let (_, bob) = parties();
        let peer = self.peer(item.to);
        // Serialized only if the envelope is refused: most deliveries succeed.
        let before = peer.session.as_ref().map(|s| s.state().clone());
        let result = match peer.session.as_mut() {
            Some(session) => session.open(&item.bytes, now).map(|incoming| (None, incoming)),
            None => Session::accept(bob.responder(), &item.bytes, now, &mut rng)
                .map(|(session, incoming)| (Some(session), incoming)),
        };
        match result {
            Ok((created, incoming)) => {
                assert!(!tampered, "an envelope with a changed byte was accepted");
                if let Some(session) = created {
                    peer.session = Some(session);
                }
                assert!(peer.delivered.insert(incoming.message_id), "a message was accepted twice");
                // A hostile peer's sequence numbers must not upset gap tracking either.
                let _ = peer.session.as_ref().map(Session::missing);
                self.rng = rng;
                let sent = self.sent.get(&incoming.message_id).expect("accepted a message nobody sealed");
                assert_eq!(sent.from, item.to.other(), "a message was accepted by its own sender");
                assert_eq!(incoming.body, sent.body, "the accepted body differs from the sealed one");
                assert_eq!((incoming.seq, incoming.epoch), (sent.seq, sent.epoch));
                assert_eq!(incoming.message_id, item.message);
            }
            Err(error) => {
                let before = before.map(|state| serde_json::to_string(&state).expect("serializing"));
                let after = peer.session.as_ref().map(snapshot);
                assert!(before == after, "a refusal ({error:?}) changed the session");
                if item.unmodified && !tampered {
                    let sealed_at = self.sent[&item.message].at;
                    self.check_refusal(item, &error, sealed_at);
                }
            }
        }
    }

    /// An unmodified envelope may be refused only for these reasons.
    fn check_refusal(&mut self, item: &InFlight, error: &OpenError, sealed_at: Timestamp) {
        let now = self.now;
        let clock_went_back = self.clock_went_back;
        let peer = self.peer(item.to);
        let delivered = peer.delivered.contains(&item.message);
        let header = Envelope::decode(&item.bytes).expect("sealed envelopes decode").header;
        let allowed = match error {
            OpenError::Replay => delivered,
            OpenError::KeyUnavailable => {
                delivered
                    || peer.capped
                    || clock_went_back
                    || now.since(sealed_at) >= MAX_KEY_AGE - SUB_EPOCH_MAX_AGE
            }
            OpenError::TooManyDerivations { .. } => true,
            OpenError::UnknownPrekey { .. } => now > T0.plus(PREKEY_LIFETIME + PREKEY_GRACE),
            _ => false,
        };
        assert!(
            allowed,
            "an unmodified envelope (epoch {}, sub-epoch {}, index {}) sealed {} ms ago was refused: {error:?}",
            header.epoch,
            header.sub_epoch,
            header.index,
            now.since(sealed_at),
        );
    }

    fn check(&mut self) {
        for side in [Side::Alice, Side::Bob] {
            let peer = self.peer(side);
            let Some(session) = &peer.session else { continue };
            let state = session.state();
            assert!(state.recv.len() <= MAX_RETAINED_EPOCHS);
            let subkeys = state.recv.iter().map(|r| r.subkeys.len()).sum::<usize>();
            assert!(subkeys <= MAX_RETAINED_SUBKEYS);
            assert!(state.peer_seq.ahead.len() <= MAX_SEQ_AHEAD);
            assert!(state.send.as_ref().is_none_or(|s| s.next_index <= 64));
            peer.capped |= subkeys == MAX_RETAINED_SUBKEYS || state.recv.len() == MAX_RETAINED_EPOCHS;
            let root = *state.root.as_bytes();
            let previous = peer.roots.insert(state.latest_epoch, root);
            assert!(previous.is_none_or(|p| p == root), "the root of epoch {} changed", state.latest_epoch);
        }
        for (epoch, root) in &self.alice.roots {
            if let Some(other) = self.bob.roots.get(epoch) {
                assert_eq!(root, other, "the root chains disagree at epoch {epoch}");
            }
        }
    }

    fn run(&mut self, input: &mut Input<'_>) {
        let op = input.u8();
        match op % 16 {
            0..=2 => self.seal(Side::Alice, usize::from(input.u8()) * 4),
            3..=5 => self.seal(Side::Bob, usize::from(input.u8()) * 4),
            6..=9 if !self.net.is_empty() => {
                let item = self.net.remove(usize::from(input.u8()) % self.net.len());
                self.deliver(&item, false);
            }
            10 if !self.net.is_empty() => {
                self.net.remove(usize::from(input.u8()) % self.net.len());
            }
            11 if !self.net.is_empty() && self.net.len() < MAX_IN_FLIGHT => {
                let item = self.net[usize::from(input.u8()) % self.net.len()].clone();
                self.net.push(item);
            }
            12 if !self.net.is_empty() => {
                let k = usize::from(input.u8()) % self.net.len();
                if let Some(stripped) = strip_open(&self.net[k].bytes) {
                    self.net[k].bytes = stripped;
                    self.net[k].unmodified = false;
                }
            }
            13 if !self.net.is_empty() => {
                let mut item = self.net[usize::from(input.u8()) % self.net.len()].clone();
                let at = usize::from(input.u16()) % item.bytes.len();
                item.bytes[at] ^= input.u8() | 1;
                self.deliver(&item, true);
            }
            14 => {
                let flags = input.u8();
                let side = if flags & 1 == 0 { Side::Alice } else { Side::Bob };
                // Never so close to u64::MAX that this side's own counter would overflow.
                let jump = (flags & 2 != 0).then(|| input.u64().min(u64::MAX - 2 * MAX_OPS as u64));
                let now = self.now;
                let peer = self.peer(side);
                if let Some(session) = &peer.session {
                    let mut restarted = restart(session, now);
                    if let Some(seq) = jump {
                        let mut state = restarted.state().clone();
                        state.next_seq = seq;
                        restarted = Session::restore(state, now);
                    }
                    peer.session = Some(restarted);
                }
            }
            15 => {
                let step = STEPS[usize::from(input.u8() % 8)];
                // Clocks also jump back (a corrected wall clock), by less.
                if op & 0x80 == 0 {
                    self.now = self.now.plus(step);
                } else {
                    self.now = Timestamp(self.now.0.saturating_sub(step / 8));
                    self.clock_went_back = true;
                }
            }
            _ => {}
        }
        self.check();
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let mut world = World::new();
    for _ in 0..MAX_OPS {
        if input.is_empty() {
            break;
        }
        world.run(&mut input);
    }
});
