//! Months of use in seconds: two users and two relays, each on its own skewed clock, through away
//! periods, relay outages, restarts and crashes, driven as the daemon drives the engine; every
//! message arrives once, and keys and prekeys keep their lifetimes.
#![allow(clippy::unwrap_used)] // test code: a failed step is a failed test

mod support;

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::path::Path;

use libp2p::identity::Keypair;
use libp2p::multiaddr::{Multiaddr, Protocol};
use merpati_node::engine::{Attempt, AttemptResult, Engine, Me};
use merpati_node::relay::{DEFAULT_TTL_DAYS, Depositor, MailboxLimits, Mailboxes};
use merpati_node::relay_client::Sweeps;
use merpati_node::store::{Change, Direction, MemoryStore, SledStore, Status, Store, StoredMessage};
use merpati_proto::Timestamp;
use merpati_proto::frame::MessageId;
use merpati_proto::identity::{INVITE_LIFETIME, IdentityKey, PREKEY_GRACE, PREKEY_ROTATION};
use merpati_proto::keys::{SymmetricKey, X25519Secret};
use merpati_proto::mailbox::{MailboxId, MailboxKey};
use merpati_proto::session::{MAX_KEY_AGE, MAX_RETAINED_EPOCHS, MAX_RETAINED_SUBKEYS, SUB_EPOCH_MAX_AGE};
use merpati_proto::wire::{self, Refusal, deliver};
use rand::RngExt;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

const T0: Timestamp = Timestamp(1_795_219_200_000);
const HOUR: u64 = Timestamp::HOUR;
const DAY: u64 = Timestamp::DAY;
/// One simulated step. The daemon fetches continuously and maintains hourly; an hourly step
/// keeps both at their real cadence (a relay is fetched at most an hour after a deposit).
const TICK: u64 = HOUR;
/// Every clock is off by a fixed amount within this, either way.
const MAX_SKEW: u64 = 12 * HOUR;
/// The longest a relay is down at a time: short enough that a user back from the longest
/// absence (29 days) still finds everything within the relay TTL (30 days).
const MAX_RELAY_OUTAGE: u64 = 12 * HOUR;
/// How long everyone stays online at the end, with nothing new written, so that what is in
/// flight (messages, receipts) settles before the final checks.
const SETTLE: u64 = 3 * DAY;
/// Chances per step (or per attempt, for a crash).
const WRITE_CHANCE: f64 = 0.12;
const READ_CHANCE: f64 = 0.05;
const RESTART_CHANCE: f64 = 0.01;
const CRASH_CHANCE: f64 = 0.02;
/// A bound on delivery rounds in one step; reaching it means a delivery loop that never ends.
const MAX_ROUNDS: usize = 10_000;

const WORDS: [&str; 16] = [
    "kopi", "hujan", "pasar", "besok", "kereta", "pantai", "buku", "malam", "pagi", "sawah", "gunung",
    "angin", "laut", "kabar", "rumah", "jalan",
];

/// A clock off from simulated time by a fixed skew.
#[derive(Debug, Clone, Copy)]
struct Clock {
    skew: i64,
}

impl Clock {
    /// This clock's reading at `sim` ms of simulated time.
    fn at(self, sim: u64) -> Timestamp {
        Timestamp(T0.millis().checked_add_signed(i64::try_from(sim).unwrap() + self.skew).unwrap())
    }
}

/// Four distinct skews in ±[`MAX_SKEW`], whole seconds: Alice, Bob, relay 1, relay 2.
/// The peer id the simulation gives relay `n`, under which sweep progress is kept.
fn relay_id(n: usize) -> Vec<u8> {
    format!("relay-{n}").into_bytes()
}

fn draw_skews(rng: &mut ChaCha20Rng) -> [Clock; 4] {
    let max = i64::try_from(MAX_SKEW / Timestamp::SECOND).unwrap();
    let mut skews: Vec<i64> = Vec::new();
    while skews.len() < 4 {
        let skew = rng.random_range(-max..=max) * i64::try_from(Timestamp::SECOND).unwrap();
        if !skews.contains(&skew) {
            skews.push(skew);
        }
    }
    [0, 1, 2, 3].map(|i| Clock { skew: skews[i] })
}

fn is_within(periods: &[Range<u64>], sim: u64) -> bool {
    periods.iter().any(|p| p.contains(&sim))
}

/// Alternating present and absent stretches over `[0, end)`, drawn in whole steps: present for
/// `present` (a range of steps), then absent for `absent`, and so on; nothing absent at time 0.
fn draw_absences(
    rng: &mut ChaCha20Rng,
    end: u64,
    present: Range<u64>,
    absent: Range<u64>,
) -> Vec<Range<u64>> {
    let mut periods = Vec::new();
    let mut at = 0;
    loop {
        at += rng.random_range(present.clone()) * TICK;
        let length = rng.random_range(absent.clone()) * TICK;
        if at >= end {
            return periods;
        }
        if length > 0 {
            periods.push(at..(at + length).min(end));
        }
        at += length;
    }
}

fn peer_of(seed: u8) -> libp2p::PeerId {
    Keypair::ed25519_from_bytes([seed; 32]).unwrap().public().to_peer_id()
}

fn address_of(seed: u8) -> Vec<u8> {
    let base: Multiaddr = format!("/ip4/10.0.0.{seed}/tcp/4001").parse().unwrap();
    base.with(Protocol::P2p(peer_of(seed))).to_vec()
}

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

/// Opens the user's database as a daemon does at start: the key file, then sled (waiting for the
/// lock an in-process restart can still find held for a moment; a restarted daemon is a new process).
fn open_store(dir: &Path, seed: u64) -> SledStore {
    support::open_sled_store(dir, seed).unwrap()
}

/// A community relay: its mailbox database, its clock and when it is down.
struct Relay {
    address: Vec<u8>,
    mailboxes: Mailboxes,
    clock: Clock,
    outages: Vec<Range<u64>>,
    _dir: tempfile::TempDir,
}

impl Relay {
    fn open(seed: u8, clock: Clock, outages: Vec<Range<u64>>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mailboxes = Mailboxes::open(dir.path(), MailboxLimits::default()).unwrap();
        Self { address: address_of(seed), mailboxes, clock, outages, _dir: dir }
    }

    fn is_up(&self, sim: u64) -> bool {
        !is_within(&self.outages, sim)
    }
}

/// A message as its sender wrote it.
#[derive(Debug, Clone)]
struct Written {
    id: MessageId,
    text: String,
    /// Simulated time of writing.
    at: u64,
}

/// A user: a database on disk, and an engine while the daemon runs.
struct User {
    name: &'static str,
    seed: u64,
    node: Vec<u8>,
    node_address: Vec<u8>,
    clock: Clock,
    absences: Vec<Range<u64>>,
    dir: tempfile::TempDir,
    engine: Option<Engine<SledStore>>,
    /// Per relay, which old mailboxes the running daemon has swept there.
    sweeps: [Sweeps; 2],
    written: Vec<Written>,
    starts: u32,
}

impl User {
    fn new(name: &'static str, seed: u8, clock: Clock, absences: Vec<Range<u64>>) -> Self {
        Self {
            name,
            seed: u64::from(seed),
            node: peer_of(seed).to_bytes(),
            node_address: address_of(seed),
            clock,
            absences,
            dir: tempfile::tempdir().unwrap(),
            engine: None,
            sweeps: Default::default(),
            written: Vec::new(),
            starts: 0,
        }
    }

    fn engine(&mut self) -> &mut Engine<SledStore> {
        self.engine.as_mut().unwrap()
    }

    fn is_online(&self) -> bool {
        self.engine.is_some()
    }

    /// Starts the daemon: reopens the database, tells the engine its node, runs the maintenance
    /// pass, and begins its sweeps from the progress the database kept, as the daemon does.
    fn start(&mut self, sim: u64, rng_seed: u64) {
        assert!(self.engine.is_none(), "{} started twice", self.name);
        let now = self.clock.at(sim);
        let store = open_store(self.dir.path(), self.seed);
        let node_key = vec![u8::try_from(self.seed).unwrap(); 68];
        let rng = ChaCha20Rng::seed_from_u64(rng_seed);
        let mut engine = Engine::start(store, me(self.seed, self.name), || node_key, now, rng).unwrap();
        engine.set_node_info(self.node.clone(), vec![self.node_address.clone()]);
        engine.maintain(now).unwrap();
        self.sweeps =
            [0, 1].map(|relay| Sweeps::resuming(engine.store().swept_through(&relay_id(relay)).unwrap()));
        self.engine = Some(engine);
        self.starts += 1;
    }

    /// Stops the daemon; whatever was not reported to the engine is lost with it.
    fn stop(&mut self) {
        self.engine = None;
    }

    /// The name this user's store gives the other user, once known.
    fn contact(&self) -> Option<String> {
        let engine = self.engine.as_ref()?;
        engine.store().contacts().unwrap().into_iter().next().map(|c| c.name)
    }
}

/// Everything the simulation drives, and the seed that reproduces it.
struct World {
    seed: u64,
    rng: ChaCha20Rng,
    users: [User; 2],
    relays: [Relay; 2],
    sim: u64,
    crashes: u32,
    deposits: u32,
    direct: u32,
}

/// What a scenario looks like: how long it runs and when each party is away.
struct Plan {
    days: u64,
    absences: [Vec<Range<u64>>; 2],
    outages: [Vec<Range<u64>>; 2],
}

impl World {
    fn new(seed: u64, plan: Plan, clocks: [Clock; 4]) -> Self {
        let Plan { absences: [alice_away, bob_away], outages: [r1_down, r2_down], .. } = plan;
        let rng = ChaCha20Rng::seed_from_u64(seed ^ 0x5eed);
        let mut world = Self {
            seed,
            rng,
            users: [User::new("Alice", 1, clocks[0], alice_away), User::new("Bob", 2, clocks[1], bob_away)],
            relays: [Relay::open(11, clocks[2], r1_down), Relay::open(12, clocks[3], r2_down)],
            sim: 0,
            crashes: 0,
            deposits: 0,
            direct: 0,
        };
        world.introduce();
        world
    }

    fn context(&self) -> String {
        format!("seed {:#x}, day {:.2}", self.seed, self.sim as f64 / DAY as f64)
    }

    /// Both start, both use both relays, and they add each other from their invites.
    fn introduce(&mut self) {
        for i in 0..2 {
            self.start(i);
            let now = self.users[i].clock.at(0);
            for relay in 0..2 {
                let address = self.relays[relay].address.clone();
                self.users[i].engine().add_relay(&address, now).unwrap();
            }
        }
        let bob = &self.users[1];
        let (node, addresses, now) = (bob.node.clone(), vec![bob.node_address.clone()], bob.clock.at(0));
        let invite = self.users[1].engine().invite(node, addresses, now).unwrap();
        let now = self.users[0].clock.at(0);
        self.users[0].engine().add_contact(&invite, "bob", now).unwrap();
        let alice = &self.users[0];
        let (node, addresses) = (alice.node.clone(), vec![alice.node_address.clone()]);
        let invite = self.users[0].engine().invite(node, addresses, now).unwrap();
        let now = self.users[1].clock.at(0);
        self.users[1].engine().add_contact(&invite, "alice", now).unwrap();
    }

    fn start(&mut self, i: usize) {
        let rng_seed = self.rng.random();
        self.users[i].start(self.sim, rng_seed);
        self.check_prekeys(i);
    }

    fn restart(&mut self, i: usize) {
        self.users[i].stop();
        self.start(i);
    }

    /// Runs `days` of steps, then [`SETTLE`] with everyone online and nothing new written.
    fn run(&mut self, days: u64) {
        let end = days * DAY;
        while self.sim < end {
            self.step(true);
            self.sim += TICK;
        }
        for user in &mut self.users {
            user.absences.retain(|p| p.start < end);
        }
        for relay in &mut self.relays {
            relay.outages.retain(|p| p.start < end);
        }
        while self.sim < end + SETTLE {
            self.step(false);
            self.sim += TICK;
        }
    }

    /// One step: relays purge, users come and go, and each online user does a daemon's hour.
    fn step(&mut self, writing: bool) {
        for relay in &self.relays {
            relay.mailboxes.purge_expired(relay.clock.at(self.sim)).unwrap();
        }
        for i in 0..2 {
            let away = is_within(&self.users[i].absences, self.sim);
            match (away, self.users[i].is_online()) {
                (true, true) => self.users[i].stop(),
                (false, false) => self.start(i),
                (false, true) if self.rng.random_bool(RESTART_CHANCE) => self.restart(i),
                (false, true) => {
                    let now = self.users[i].clock.at(self.sim);
                    self.users[i].engine().maintain(now).unwrap();
                    self.check_prekeys(i);
                }
                (true, false) => {}
            }
        }
        // Who acts first within the hour varies.
        let order = if self.rng.random_bool(0.5) { [0, 1] } else { [1, 0] };
        for i in order {
            if !self.users[i].is_online() {
                continue;
            }
            self.check_sessions(i);
            self.fetch(i);
            if writing && self.rng.random_bool(WRITE_CHANCE) {
                self.write(i);
            }
            if self.rng.random_bool(READ_CHANCE) {
                self.read(i);
            }
            self.deliver_due(i);
        }
        if self.sim.is_multiple_of(DAY) {
            self.check_no_duplicates();
        }
    }

    fn write(&mut self, i: usize) {
        let Some(contact) = self.users[i].contact() else { return };
        let n = self.users[i].written.len();
        let words: Vec<&str> = (0..3).map(|_| WORDS[self.rng.random_range(0..WORDS.len())]).collect();
        let text = format!("{} #{n}: {}", self.users[i].name, words.join(" "));
        let now = self.users[i].clock.at(self.sim);
        let stored = self.users[i].engine().send_text(&contact, &text, now).unwrap();
        self.users[i].written.push(Written { id: stored.id, text, at: self.sim });
    }

    fn read(&mut self, i: usize) {
        let Some(contact) = self.users[i].contact() else { return };
        let now = self.users[i].clock.at(self.sim);
        self.users[i].engine().mark_read(&contact, now).unwrap();
    }

    /// Tries every due delivery as the daemon does, until none is due; sometimes the node
    /// crashes after an attempt and before recording its result.
    fn deliver_due(&mut self, i: usize) {
        for _ in 0..MAX_ROUNDS {
            let now = self.users[i].clock.at(self.sim);
            let attempts = self.users[i].engine().due(now, None).unwrap();
            if attempts.is_empty() {
                return;
            }
            for attempt in attempts {
                let result = self.attempt(i, &attempt);
                if self.rng.random_bool(CRASH_CHANCE) {
                    // The result is never recorded: the restarted node sends the envelope again.
                    self.crashes += 1;
                    self.restart(i);
                    break;
                }
                self.users[i].engine().attempt_finished(&attempt.id, &result, now).unwrap();
            }
        }
        panic!("{}: deliveries never settle", self.context());
    }

    /// One attempt as `relay_client::deliver` makes it: directly to the contact's node if it is
    /// known and answers, else a deposit at each of the contact's relays.
    fn attempt(&mut self, i: usize, attempt: &Attempt) -> AttemptResult {
        let j = 1 - i;
        let peer_online = self.users[j].is_online();
        if !attempt.peer_id.is_empty() && attempt.peer_id == self.users[j].node && peer_online {
            let now = self.users[j].clock.at(self.sim);
            let from = self.users[i].node.clone();
            let received =
                self.users[j].engine().receive(Some(from.as_slice()), &attempt.envelope, now).unwrap();
            match received.response {
                Some(deliver::Response::Accepted) => {
                    self.direct += 1;
                    return AttemptResult::Accepted;
                }
                Some(deliver::Response::Refused(refusal)) => return AttemptResult::Refused(refusal),
                // No answer: the request times out, as with a node that is down.
                None => {}
            }
        }
        if attempt.relays.is_empty() {
            return AttemptResult::Unreachable("the contact's node is unknown".into());
        }
        self.deposit_everywhere(attempt)
    }

    /// As `relay_client::deposit_everywhere`: every relay of the contact at once; a relay that is
    /// down (or unknown) gives no answer.
    fn deposit_everywhere(&mut self, attempt: &Attempt) -> AttemptResult {
        let mut accepted = 0u8;
        let mut refusals: Vec<Refusal> = Vec::new();
        for address in &attempt.relays {
            let Some(relay) = self.relays.iter().find(|r| &r.address == address) else { continue };
            if !relay.is_up(self.sim) {
                continue;
            }
            let now = relay.clock.at(self.sim);
            // Both users write from one address, under the relays' quotas per network.
            let depositor = Depositor::new(&peer_of(0), Some([198, 51, 100, 1].into()));
            let deposit = relay.mailboxes.deposit(attempt.mailbox, attempt.envelope.clone(), depositor, now);
            match futures::executor::block_on(deposit) {
                Ok(_) => accepted += 1,
                Err(refusal) => refusals.push(refusal),
            }
        }
        self.deposits += u32::from(accepted);
        if accepted == 0 && refusals.is_empty() {
            return AttemptResult::Unreachable(
                "neither the contact's node nor any of its relays answered".into(),
            );
        }
        AttemptResult::Deposited { accepted, total: u8::try_from(attempt.relays.len()).unwrap(), refusals }
    }

    /// The fetch loop of each relay: old mailboxes not yet swept there first, then the live ones.
    /// A first contact adds mailboxes, which the daemon fetches at once.
    fn fetch(&mut self, i: usize) {
        for _ in 0..3 {
            let now = self.users[i].clock.at(self.sim);
            let keys = self.users[i].engine().mailbox_keys(now);
            for relay in 0..2 {
                if !self.relays[relay].is_up(self.sim) {
                    // Swept when it answers again: the sweeps stay pending.
                    continue;
                }
                let unswept = self.users[i].sweeps[relay].pending(&keys);
                if !unswept.is_empty() {
                    self.fetch_all(i, relay, &unswept);
                    if let Some(through) = self.users[i].sweeps[relay].done(&keys) {
                        let change = Change::NoteSwept { relay: relay_id(relay), through };
                        self.users[i].engine().store().apply(&[change]).unwrap();
                    }
                }
                self.fetch_all(i, relay, &keys.live);
            }
            if self.users[i].engine().mailbox_keys(now) == keys {
                return;
            }
        }
    }

    /// Fetches the mailboxes of `keys` at a relay page by page until nothing is left, hands every
    /// envelope to the engine, and deletes at the relay what the engine processed. (The relay's
    /// store is used directly: the tokens' check in front of it has its own tests.)
    fn fetch_all(&mut self, i: usize, relay: usize, keys: &[MailboxKey]) {
        let user_now = self.users[i].clock.at(self.sim);
        let relay_now = self.relays[relay].clock.at(self.sim);
        let owned: Vec<MailboxId> = keys.iter().map(MailboxKey::id).collect();
        for chunk in owned.chunks(wire::MAX_FETCH_TOKENS) {
            let mut after = None;
            loop {
                let mailboxes = &self.relays[relay].mailboxes;
                let (items, more) =
                    mailboxes.fetch(chunk, after, wire::MAX_FETCH_LIMIT, None, relay_now).unwrap();
                let mut processed: BTreeMap<MailboxId, Vec<u64>> = BTreeMap::new();
                for item in &items {
                    let received = self.users[i].engine().receive(None, &item.envelope, user_now).unwrap();
                    // Only what the node failed to store stays at the relay.
                    if !matches!(received.response, Some(deliver::Response::Refused(Refusal::Internal))) {
                        processed.entry(item.mailbox).or_default().push(item.id);
                    }
                }
                for (mailbox, ids) in processed {
                    for ids in ids.chunks(wire::MAX_DELETE_IDS) {
                        self.relays[relay].mailboxes.delete(&mailbox, ids).unwrap();
                    }
                }
                after = items.iter().map(|item| item.id).max().or(after);
                if !more {
                    break;
                }
            }
        }
    }

    /// Right after a maintenance pass: the current prekey is fresh, no prekey is kept past its
    /// grace, and the invite's last-resort prekey lasts its promised year.
    fn check_prekeys(&mut self, i: usize) {
        let context = self.context();
        let user = &mut self.users[i];
        let now = user.clock.at(self.sim);
        let name = user.name;
        let prekeys = &user.engine().profile().prekeys;
        let current = prekeys.current();
        assert!(
            now.since(current.created_at) <= PREKEY_ROTATION + TICK,
            "{context}: {name}'s current prekey is {} ms old",
            now.since(current.created_at)
        );
        for prekey in prekeys.prekeys() {
            assert!(
                now <= prekey.expires_at.plus(PREKEY_GRACE),
                "{context}: {name} keeps prekey {:#x} past its grace",
                prekey.id
            );
        }
        let last_resort = prekeys.last_resort().expect("a last-resort prekey");
        assert!(
            last_resort.expires_at.since(now) >= INVITE_LIFETIME,
            "{context}: {name}'s last-resort prekey has only {} days left",
            last_resort.expires_at.since(now) / DAY
        );
    }

    /// The stored sessions keep no more receiving keys than their caps, and none past its age.
    fn check_sessions(&mut self, i: usize) {
        let context = self.context();
        let user = &mut self.users[i];
        let now = user.clock.at(self.sim);
        let name = user.name;
        let store = user.engine().store();
        for id in store.session_ids().unwrap() {
            let state = store.session(&id).unwrap().unwrap().state;
            assert!(
                state.recv.len() <= MAX_RETAINED_EPOCHS,
                "{context}: {name} keeps {} epochs",
                state.recv.len()
            );
            let subkeys: usize = state.recv.iter().map(|epoch| epoch.subkeys.len()).sum();
            assert!(subkeys <= MAX_RETAINED_SUBKEYS, "{context}: {name} keeps {subkeys} sub-epoch keys");
            for epoch in &state.recv {
                if let Some(at) = epoch.superseded_at {
                    assert!(
                        now.since(at) < MAX_KEY_AGE,
                        "{context}: {name} keeps epoch {} superseded {} ms ago",
                        epoch.epoch,
                        now.since(at)
                    );
                }
                for key in &epoch.subkeys {
                    assert!(
                        now.since(key.derived_at) < MAX_KEY_AGE + SUB_EPOCH_MAX_AGE,
                        "{context}: {name} keeps a sub-epoch key derived {} ms ago",
                        now.since(key.derived_at)
                    );
                }
            }
        }
    }

    /// What `to` has stored from the other user, per text.
    fn received(&self, to: usize) -> Vec<StoredMessage> {
        let store = open_or_running(&self.users[to]);
        store
            .messages(None, 1_000_000)
            .unwrap()
            .into_iter()
            .filter(|m| m.direction == Direction::In)
            .collect()
    }

    fn check_no_duplicates(&self) {
        for to in 0..2 {
            if !self.users[to].is_online() {
                continue;
            }
            let mut seen = HashMap::new();
            for message in self.received(to) {
                let count = seen.entry(message.text.clone()).or_insert(0u32);
                *count += 1;
                assert_eq!(
                    *count,
                    1,
                    "{}: {} shows {:?} twice",
                    self.context(),
                    self.users[to].name,
                    message.text
                );
            }
        }
    }

    /// Checks what `from` wrote against what `to` stored: every message `arrives` says must
    /// arrive is stored once under its id and shows as delivered to its sender; the others are
    /// not stored; nothing else is.
    fn check_arrivals(&self, from: usize, arrives: impl Fn(&Written) -> bool) -> (usize, usize) {
        let context = self.context();
        let (sender, recipient) = (self.users[from].name, self.users[1 - from].name);
        let received = self.received(1 - from);
        let mut by_text: HashMap<&str, Vec<&StoredMessage>> = HashMap::new();
        for message in &received {
            by_text.entry(message.text.as_str()).or_default().push(message);
        }
        let sender_store = open_or_running(&self.users[from]);
        let (mut arrived, mut lost) = (0, 0);
        for written in &self.users[from].written {
            let copies = by_text.remove(written.text.as_str()).unwrap_or_default();
            let status = sender_store.message(&written.id).unwrap().unwrap().status;
            if arrives(written) {
                assert_eq!(
                    copies.len(),
                    1,
                    "{context}: {recipient} shows {:?} from {sender} {} times ({sender} wrote it on day {:.2} \
                     and sees it as {status:?})",
                    written.text,
                    copies.len(),
                    written.at as f64 / DAY as f64
                );
                assert_eq!(
                    copies[0].id, written.id,
                    "{context}: {:?} arrived under another id",
                    written.text
                );
                assert!(
                    matches!(status, Status::Delivered | Status::Read),
                    "{context}: {sender} sees {:?} as {status:?}",
                    written.text
                );
                arrived += 1;
            } else {
                assert!(
                    copies.is_empty(),
                    "{context}: {recipient} shows {:?}, which should have expired",
                    written.text
                );
                // The sender is told, by its maintenance pass, instead of seeing `stored` forever.
                let reason = sender_store.message(&written.id).unwrap().unwrap().reason.unwrap_or_default();
                assert!(
                    status == Status::Failed && reason.starts_with("expired: "),
                    "{context}: {sender} sees {:?} as {status:?} ({reason})",
                    written.text
                );
                lost += 1;
            }
        }
        assert!(
            by_text.is_empty(),
            "{context}: {recipient} shows texts {sender} never wrote: {:?}",
            by_text.keys()
        );
        (arrived, lost)
    }

    fn summary(&self) -> String {
        format!(
            "seed {:#x}: {} and {} messages written, {} direct deliveries, {} deposits, {} and {} starts, {} crashes",
            self.seed,
            self.users[0].written.len(),
            self.users[1].written.len(),
            self.direct,
            self.deposits,
            self.users[0].starts,
            self.users[1].starts,
            self.crashes
        )
    }
}

/// The running engine's store; every user is online once a run has settled.
fn open_or_running(user: &User) -> &SledStore {
    user.engine.as_ref().expect("the user is online").store()
}

/// The seed: `MERPATI_MONTHS_SEED` (decimal or 0x-hex) to reproduce a failure, else a fixed one.
fn seed(default: u64) -> u64 {
    match std::env::var("MERPATI_MONTHS_SEED") {
        Ok(text) => match text.strip_prefix("0x") {
            Some(hex) => u64::from_str_radix(hex, 16).unwrap(),
            None => text.parse().unwrap(),
        },
        Err(_) => default,
    }
}

/// 120 days: absences of up to 29 days (within the relay TTL), relays down for up to 12 hours.
fn four_months(seed: u64) -> (Plan, [Clock; 4]) {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let clocks = draw_skews(&mut rng);
    let days = 120;
    let end = days * DAY;
    let steps_per_day = DAY / TICK;
    let absences = [0, 1]
        .map(|_| draw_absences(&mut rng, end, steps_per_day..8 * steps_per_day, 0..29 * steps_per_day + 1));
    let outages = [0, 1].map(|_| {
        draw_absences(&mut rng, end, steps_per_day..10 * steps_per_day, 1..MAX_RELAY_OUTAGE / TICK + 1)
    });
    (Plan { days, absences, outages }, clocks)
}

#[test]
fn four_months_deliver_everything_once_and_keep_key_lifetimes() {
    four_months_with(seed(0x6d6f6e746873));
}

/// Seed 0xe lost a message until nodes watched the last day of their earlier announcements: a
/// sender that never got the newer one wrote, for weeks, under an id more than 31 days old.
#[test]
fn four_months_where_a_sender_keeps_an_announcement_older_than_the_window() {
    four_months_with(0xe);
}

fn four_months_with(seed: u64) {
    eprintln!("seed {seed:#x} (set MERPATI_MONTHS_SEED to reproduce)");
    let (plan, clocks) = four_months(seed);
    let days = plan.days;
    let mut world = World::new(seed, plan, clocks);
    world.run(days);
    let (alice_sent, _) = world.check_arrivals(0, |_| true);
    let (bob_sent, _) = world.check_arrivals(1, |_| true);
    eprintln!("{}", world.summary());
    assert!(alice_sent > 50 && bob_sent > 50, "{}: too little traffic to mean anything", world.summary());
    assert!(world.users.iter().all(|u| u.starts > 5), "{}: too few restarts", world.summary());
}

/// About seven weeks in which Bob is away for 33 to 40 days while Alice keeps writing; relays
/// stay up, so what Alice wrote in his first days away waits at them past their TTL.
fn a_long_absence(seed: u64) -> (Plan, [Clock; 4], Range<u64>) {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let clocks = draw_skews(&mut rng);
    let leaves = 3 * DAY;
    let away = rng.random_range(33 * DAY / TICK..=40 * DAY / TICK) * TICK;
    let absence = leaves..leaves + away;
    let days = (absence.end + 5 * DAY).div_ceil(DAY);
    let plan =
        Plan { days, absences: [Vec::new(), vec![absence.clone()]], outages: [Vec::new(), Vec::new()] };
    (plan, clocks, absence)
}

#[test]
fn what_waits_past_the_relay_ttl_is_not_shown_and_nothing_else_is_lost() {
    let seed = seed(0x6162_7365_6e74);
    eprintln!("seed {seed:#x} (set MERPATI_MONTHS_SEED to reproduce)");
    let (plan, clocks, absence) = a_long_absence(seed);
    let days = plan.days;
    let mut world = World::new(seed, plan, clocks);
    world.run(days);
    let ttl = DEFAULT_TTL_DAYS * DAY;
    // Written while Bob was away, deposited at once, and purged by the relays when it had waited
    // a TTL, before Bob came back for it.
    let outlived_the_relays = |w: &Written| absence.contains(&w.at) && w.at + ttl <= absence.end;
    let (arrived, lost) = world.check_arrivals(0, |w| !outlived_the_relays(w));
    world.check_arrivals(1, |_| true);
    eprintln!(
        "{}; Bob away {:?} days, {arrived} arrived, {lost} expired at the relays",
        world.summary(),
        (absence.start / DAY, absence.end as f64 / DAY as f64)
    );
    assert!(lost > 0 && arrived > lost, "{}: the absence tested nothing", world.summary());
}

/// Hands every envelope of `from` to `to` directly, in order, until none is due, and reports the
/// answers back.
fn hand_over<S: Store, T: Store>(from: &mut Engine<S>, from_node: &[u8], to: &mut Engine<T>, now: Timestamp) {
    loop {
        let due = from.due(now, None).unwrap();
        if due.is_empty() {
            return;
        }
        for attempt in due {
            let received = to.receive(Some(from_node), &attempt.envelope, now).unwrap();
            assert!(matches!(received.response, Some(deliver::Response::Accepted)));
            from.attempt_finished(&attempt.id, &AttemptResult::Accepted, now).unwrap();
        }
    }
}

/// What the long runs found with other seeds (mail addressed under the owner's previous
/// announcement was not fetched once the owner opened a new epoch), step by step. They reach it two ways: a direct
/// message arrives before the first fetch after an absence (seed 0x6 of the long absence), or a
/// relay is down when the owner comes back and is swept only after the owner's receipts, for what
/// the other relay held, opened a new epoch (seeds 0x2 and 0x5 of the four months).
#[test]
fn mail_under_a_replaced_announcement_is_still_fetched() {
    let day = |n: u64| T0.plus(n * DAY);
    let start = |seed: u64, name: &str| {
        let rng = ChaCha20Rng::seed_from_u64(seed + 100);
        Engine::start(MemoryStore::new(), me(seed, name), || vec![1; 68], T0, rng).unwrap()
    };
    let (mut alice, mut bob) = (start(1, "Alice"), start(2, "Bob"));
    let invite = bob.invite(peer_of(2).to_bytes(), vec![], T0).unwrap();
    alice.add_contact(&invite, "bob", T0).unwrap();
    bob.add_contact(&alice.invite(peer_of(1).to_bytes(), vec![], T0).unwrap(), "alice", T0).unwrap();
    // Day 0: a message and Bob's receipt, which announces Bob's mailboxes of days 0 to 13.
    alice.send_text("bob", "hello", day(0)).unwrap();
    hand_over(&mut alice, b"alice-node", &mut bob, day(0));
    hand_over(&mut bob, b"bob-node", &mut alice, day(0));
    // Day 16, Bob away: Alice writes under the last id she knows (day 13's), and a relay keeps it.
    let relay_dir = tempfile::tempdir().unwrap();
    let relay = Mailboxes::open(relay_dir.path(), MailboxLimits::default()).unwrap();
    let away = alice.send_text("bob", "while you were away", day(16)).unwrap();
    let attempt = alice.due(day(16), None).unwrap().remove(0);
    assert_eq!(attempt.id, away.id, "nothing else was left to deliver");
    let alice_node = Depositor::new(&peer_of(1), None);
    futures::executor::block_on(relay.deposit(
        attempt.mailbox,
        attempt.envelope.clone(),
        alice_node,
        day(16),
    ))
    .unwrap();
    let deposited = AttemptResult::Deposited { accepted: 1, total: 1, refusals: Vec::new() };
    alice.attempt_finished(&attempt.id, &deposited, day(16)).unwrap();
    // Day 20, Bob is back: a direct message arrives before his first fetch, and his receipt
    // opens a new epoch announcing days 20 to 33.
    alice.send_text("bob", "are you back?", day(20)).unwrap();
    hand_over(&mut alice, b"alice-node", &mut bob, day(20));
    let keys = bob.mailbox_keys(day(20));
    let every: Vec<MailboxId> = keys.live.iter().chain(&keys.old).map(MailboxKey::id).collect();
    assert!(
        every.contains(&attempt.mailbox),
        "Bob no longer fetches the mailbox Alice wrote to while he was away"
    );
    let (items, _) = relay.fetch(&every, None, wire::MAX_FETCH_LIMIT, None, day(20)).unwrap();
    for item in &items {
        bob.receive(None, &item.envelope, day(20)).unwrap();
    }
    let texts: Vec<String> = bob.store().messages(None, 100).unwrap().into_iter().map(|m| m.text).collect();
    assert!(texts.iter().any(|t| t == "while you were away"), "Bob shows only {texts:?}");
}
