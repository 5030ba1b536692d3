//! Community relays with real processes on 127.0.0.1: a `merpatid --relay` keeps a recipient's
//! envelopes while the recipient's node is off, survives crashes and restarts, covers for a relay
//! that is down, never holds plaintext, keeps mailboxes to their owners, rate-limits floods, and
//! makes its limits visible to the sender.
//!
//! Every wait polls with a deadline; nothing sleeps to synchronise.
#![allow(clippy::unwrap_used)] // test code: a failed step is a failed test

use std::collections::HashSet;
use std::time::Duration;

use merpati_e2e::{Node, Relay, files_containing, files_under, wait_until};
use serde_json::Value;

const PATIENCE: Duration = Duration::from_secs(120);

/// A relay config: metrics on a free port of 127.0.0.1 (so the tests can read the relay's counts),
/// plus `extra` lines of the `[relay]` section.
fn relay_config(extra: &str) -> String {
    format!("[relay]\nmetrics = \"127.0.0.1:{}\"\n{extra}\n", merpati_e2e::free_port())
}

/// A started relay with `extra` `[relay]` settings.
fn relay(extra: &str) -> Relay {
    let mut relay = Relay::new(Some(&relay_config(extra)));
    relay.start();
    relay
}

/// The text Alice and Bob exchange first when `users` is asked to `greet`.
const GREETING: &str = "hello, before going offline";

/// Alice and Bob with running daemons, each holding the other as a contact; Bob lists `relays`
/// (added before he hands out his invite, which carries them).
///
/// With `greet`, they exchange a [`GREETING`] each way while both are up, so their session is
/// established: Alice's later messages then go to the session's mailbox, without the session's
/// opening control envelope ahead of them. Without, Alice's first message to Bob is a first
/// contact, deposited in the inbox his invite names.
fn users(relays: &[&Relay], greet: bool) -> (Node, Node) {
    let mut alice = Node::init("Alice");
    let mut bob = Node::init("Bob");
    alice.start();
    bob.start();
    for relay in relays {
        // A relay that is down can only be added without the check.
        if relay.is_running() {
            bob.ok(&["relay", "add", &relay.addr()]);
        } else {
            bob.ok(&["relay", "add", "--offline", &relay.addr()]);
        }
    }
    let listed = bob.ok(&["--json", "relay", "list"]);
    assert_eq!(listed.lines().count(), relays.len(), "Bob should list every relay he added: {listed}");
    alice.add(&bob, "bob");
    bob.add(&alice, "alice");
    if greet {
        let to_bob = alice.send("bob", GREETING);
        let to_alice = bob.send("alice", GREETING);
        for (name, node, id) in [("Alice", &alice, &to_bob), ("Bob", &bob, &to_alice)] {
            wait_until(&format!("{name}'s greeting to be delivered"), PATIENCE, || {
                is_delivered(&node.message_status(id))
            });
        }
    }
    // Whatever the greeting left in the outboxes (receipts, the session's opening controls) goes
    // out while both are up, so later only the test's own messages wait for Bob at his relays.
    for (name, node) in [("Alice", &alice), ("Bob", &bob)] {
        wait_until(&format!("{name}'s outbox to empty after the contacts were added"), PATIENCE, || {
            outbox(node) == 0
        });
    }
    (alice, bob)
}

/// How many entries wait in `node`'s outbox.
fn outbox(node: &Node) -> u64 {
    let status: Value = serde_json::from_str(node.ok(&["--json", "status"]).trim()).unwrap();
    status["outbox"].as_u64().unwrap()
}

/// Alice's messages to Bob, oldest first, without the greeting.
fn outgoing(alice: &Node) -> Vec<Value> {
    alice
        .messages(Some("bob"))
        .into_iter()
        .filter(|m| m["direction"] == "out" && m["text"] != GREETING)
        .collect()
}

/// Whether `message` is `stored accepted/total`.
fn is_stored(message: &Value, accepted: u64, total: u64) -> bool {
    message["status"] == "stored"
        && message["stored"]["accepted"] == accepted
        && message["stored"]["total"] == total
}

/// Whether `message` reached Bob's device (`delivered`, or beyond: `read`).
fn is_delivered(message: &Value) -> bool {
    message["status"] == "delivered" || message["status"] == "read"
}

/// Waits until Alice has exactly `count` messages to Bob and every one satisfies `check`.
fn wait_all_out(alice: &Node, what: &str, count: usize, check: impl Fn(&Value) -> bool) {
    let deadline = std::time::Instant::now() + PATIENCE;
    let last = loop {
        let last = outgoing(alice);
        if last.len() == count && last.iter().all(&check) {
            return;
        }
        if std::time::Instant::now() >= deadline {
            break last;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let statuses: Vec<String> = last.iter().map(summary).collect();
    panic!(
        "timed out waiting for all {count} of Alice's messages to be {what}; \
         she has {} with statuses {statuses:?}\n--- alice's log tail ---\n{}",
        last.len(),
        tail(&alice.log(), 40)
    );
}

fn summary(message: &Value) -> String {
    let mut text = message["status"].as_str().unwrap_or("?").to_owned();
    if message["status"] == "stored" {
        text += &format!(" {}/{}", message["stored"]["accepted"], message["stored"]["total"]);
    }
    if let Some(reason) = message["reason"].as_str() {
        text += &format!(" ({reason})");
    }
    text
}

fn tail(log: &str, lines: usize) -> String {
    let all: Vec<&str> = log.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The texts Bob received from Alice, in the order he shows them.
fn received(bob: &Node) -> Vec<String> {
    bob.messages(Some("alice"))
        .into_iter()
        .filter(|m| m["direction"] == "in" && m["text"] != GREETING)
        .map(|m| m["text"].as_str().unwrap().to_owned())
        .collect()
}

/// Waits until Bob has received `expected.len()` messages, then checks they are exactly `expected`
/// (in order when `ordered`, as a set otherwise) with no message id twice.
fn assert_bob_received_exactly(bob: &Node, expected: &[String], ordered: bool) {
    let mut got = Vec::new();
    let deadline = std::time::Instant::now() + PATIENCE;
    while got.len() < expected.len() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        got = received(bob);
    }
    assert_eq!(
        got.len(),
        expected.len(),
        "Bob should have received exactly {} messages from Alice, got {}\n--- bob's log tail ---\n{}",
        expected.len(),
        got.len(),
        tail(&bob.log(), 40)
    );
    if ordered {
        assert!(got == expected, "Bob should have Alice's messages in the order she sent them");
    } else {
        let got_set: HashSet<&String> = got.iter().collect();
        let expected_set: HashSet<&String> = expected.iter().collect();
        assert_eq!(got_set, expected_set, "Bob should have exactly the messages Alice sent");
    }
    let messages = bob.messages(Some("alice"));
    let ids: HashSet<&str> = messages.iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), messages.len(), "no message id should appear twice in Bob's conversation");
}

/// Sends `count` texts made from `prefix`; returns them.
fn send_all(alice: &Node, prefix: &str, count: usize) -> Vec<String> {
    (0..count)
        .map(|i| {
            let text = format!("{prefix} #{i}");
            alice.send("bob", &text);
            text
        })
        .collect()
}

/// The relay's count of stored envelopes, from its metrics.
fn stored_envelopes(relay: &Relay) -> f64 {
    relay.metric("merpati_mailbox_stored_envelopes").expect("the relay reports its stored envelopes")
}

#[test]
fn offline_delivery_of_500_messages() {
    let relay = relay("");
    let (alice, mut bob) = users(&[&relay], false);
    bob.stop();
    let sent = send_all(&alice, "kept by the relay", 500);
    wait_all_out(&alice, "stored 1/1", 500, |m| is_stored(m, 1, 1));
    assert!(
        stored_envelopes(&relay) >= 500.0,
        "the relay should hold at least the 500 envelopes it acknowledged"
    );
    bob.start();
    assert_bob_received_exactly(&bob, &sent, true);
    wait_all_out(&alice, "delivered", 500, is_delivered);
    // Bob deletes what he stored: nothing of his is left behind.
    wait_until("the relay's mailboxes to be emptied by Bob", PATIENCE, || stored_envelopes(&relay) == 0.0);
    assert_bob_received_exactly(&bob, &sent, true);
}

#[test]
fn relay_crash_after_stored_loses_nothing() {
    let mut relay = relay("");
    let (alice, mut bob) = users(&[&relay], true);
    bob.stop();
    let sent = send_all(&alice, "survives a relay crash", 30);
    wait_all_out(&alice, "stored 1/1", 30, |m| is_stored(m, 1, 1));
    let before = stored_envelopes(&relay);
    assert!(before >= 30.0, "the relay should hold the 30 envelopes it acknowledged, reports {before}");
    relay.kill();
    relay.start();
    // At least as many: Alice's node may have deposited more (a control message) after the count
    // was read; that every one of the 30 is kept is checked by Bob receiving them all.
    let after = stored_envelopes(&relay);
    assert!(
        after >= before,
        "every envelope acknowledged before the kill -9 should still be stored after the restart: {before} before, {after} after"
    );
    bob.start();
    assert_bob_received_exactly(&bob, &sent, true);
    wait_all_out(&alice, "delivered", 30, is_delivered);
}

/// Weeks, not minutes: Bob's node is off for 2, then 3, 7 and 29 days while Alice writes; each
/// time every daemon comes back with its clock that many days later. Alice wrote under the
/// mailbox of the day she wrote, which has left Bob's window of live mailboxes by the time he is
/// back: his node must still collect all of it from the relay, and Alice must see it delivered.
#[test]
fn a_recipient_away_for_days_and_weeks_gets_everything() {
    let mut relay = relay("");
    let (mut alice, mut bob) = users(&[&relay], true);
    let mut days = 0;
    let mut sent_so_far = 0;
    let mut all_sent = Vec::new();
    for away in [2, 3, 7, 29] {
        bob.stop();
        let sent = send_all(&alice, &format!("written while Bob is away for {away} days"), 3);
        sent_so_far += sent.len();
        all_sent.extend(sent);
        wait_until(&format!("Alice's messages to be stored at the relay ({away} days)"), PATIENCE, || {
            outgoing(&alice).iter().rev().take(3).all(|m| is_stored(m, 1, 1))
        });
        alice.stop();
        relay.stop();
        days += away;
        relay.set_clock_days(days);
        alice.set_clock_days(days);
        bob.set_clock_days(days);
        relay.start();
        alice.start();
        bob.start();
        assert_bob_received_exactly(&bob, &all_sent, true);
        wait_all_out(&alice, &format!("delivered after {away} days away"), sent_so_far, is_delivered);
    }
    wait_until("the relay's mailboxes to be emptied by Bob", PATIENCE, || stored_envelopes(&relay) == 0.0);
}

/// Past what relays keep: Bob is away for 31 days. The relay has deleted what it kept (its TTL is
/// 30 days), so Bob never sees it, and Alice's messages end as failed with the reason instead of
/// showing `stored 1/1` forever.
#[test]
fn a_recipient_away_longer_than_relays_keep_anything_makes_the_sender_see_expired() {
    let mut relay = relay("");
    let (mut alice, mut bob) = users(&[&relay], true);
    bob.stop();
    send_all(&alice, "left for a month", 2);
    wait_all_out(&alice, "stored 1/1", 2, |m| is_stored(m, 1, 1));
    alice.stop();
    relay.stop();
    relay.set_clock_days(31);
    alice.set_clock_days(31);
    bob.set_clock_days(31);
    relay.start();
    wait_until("the relay to purge what it kept for 30 days", PATIENCE, || stored_envelopes(&relay) == 0.0);
    alice.start();
    wait_all_out(&alice, "expired", 2, |m| {
        m["status"] == "failed" && m["reason"].as_str().is_some_and(|r| r.starts_with("expired: "))
    });
    bob.start();
    // Bob's node sweeps the month at start; there is nothing left to find.
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    while std::time::Instant::now() < deadline {
        assert!(received(&bob).is_empty(), "nothing the relay deleted can reach Bob");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn redundancy_one_relay_down_the_whole_time() {
    let up = relay("");
    let mut down = relay("");
    down.stop();
    let (alice, mut bob) = users(&[&up, &down], false);
    bob.stop();
    let sent = send_all(&alice, "one of two relays", 20);
    wait_all_out(&alice, "stored 1/2", 20, |m| is_stored(m, 1, 2));
    let held = stored_envelopes(&up);
    assert!(
        held >= 20.0,
        "the relay that is up should hold the 20 envelopes it acknowledged, reports {held}"
    );
    bob.start();
    assert_bob_received_exactly(&bob, &sent, true);
    wait_all_out(&alice, "delivered", 20, is_delivered);
    assert!(!down.is_running(), "the second relay should have stayed down throughout");
}

#[test]
fn security_the_relay_never_holds_plaintext() {
    let relay = relay("");
    let (alice, mut bob) = users(&[&relay], true);
    bob.stop();
    // Distinctive, and unlike anything a relay writes of its own.
    let canary = format!("CANARY-{:x}-PLAINTEXT", std::process::id() ^ 0x5eed_cafe);
    let sent = send_all(&alice, &format!("secret {canary} meet at the old mill"), 10);
    wait_all_out(&alice, "stored 1/1", 10, |m| is_stored(m, 1, 1));
    let bytes = relay.metric("merpati_mailbox_stored_bytes").unwrap();
    assert!(
        bytes >= 10.0 * 512.0,
        "the relay should hold the ten envelopes (at least 5120 bytes), has {bytes}"
    );
    let files = files_under(relay.home());
    assert!(!files.is_empty(), "the relay's home should hold its mailbox store");
    let check = |when: &str| {
        for needle in [canary.as_bytes(), sent[3].as_bytes(), b"meet at the old mill".as_slice()] {
            let found = files_containing(relay.home(), needle);
            assert!(
                found.is_empty(),
                "{when}, no file of the relay should contain message plaintext {:?}, found in {found:?}",
                String::from_utf8_lossy(needle)
            );
        }
    };
    check("while the envelopes wait for Bob");
    bob.start();
    assert_bob_received_exactly(&bob, &sent, true);
    check("after Bob fetched them");
}

mod client {
    //! A bare mailbox client: a libp2p node of the test's own, speaking `/merpati/mailbox/2` to a
    //! relay directly, with no Merpati identity behind it.

    use std::time::Duration;

    use libp2p::identity::Keypair;
    use libp2p::{Multiaddr, PeerId};
    use merpati_node::net::{self, Config, Handle, MailboxError};
    use merpati_proto::envelope::{Envelope, Header, Kind, VERSION};
    use merpati_proto::keys::SymmetricKey;
    use merpati_proto::mailbox::{FetchToken, MailboxId, MailboxKey};
    use merpati_proto::wire::mailbox::{Request, Response};
    use tokio_util::sync::CancellationToken;

    pub(crate) struct Client {
        pub(crate) handle: Handle,
        pub(crate) relay: PeerId,
        pub(crate) relay_addr: Multiaddr,
        shutdown: CancellationToken,
        task: tokio::task::JoinHandle<()>,
        // Kept so the network's event queue stays open.
        _inbound: net::Inbound,
    }

    impl Client {
        pub(crate) async fn start(relay_addr: &str) -> Client {
            let relay_addr: Multiaddr = relay_addr.parse().unwrap();
            let relay = net::peer_of(&relay_addr).expect("the relay address ends in /p2p/<peer id>");
            let config = Config::default()
                .with_listen_addrs(vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()])
                .with_mdns(false)
                .with_dial_timeout(Duration::from_secs(5))
                .with_request_timeout(Duration::from_secs(10))
                .with_mailbox_timeout(Duration::from_secs(15));
            let shutdown = CancellationToken::new();
            let (handle, inbound, task) =
                net::spawn(config, Keypair::generate_ed25519(), shutdown.clone()).await.unwrap();
            Client { handle, relay, relay_addr, shutdown, task, _inbound: inbound }
        }

        pub(crate) async fn ask(&self, request: Request) -> Result<Response, MailboxError> {
            self.handle.mailbox(self.relay, vec![self.relay_addr.clone()], request).await
        }

        pub(crate) async fn stop(self) {
            self.shutdown.cancel();
            tokio::time::timeout(Duration::from_secs(15), self.task)
                .await
                .expect("the client's network stops in time")
                .expect("the client's network task does not panic");
        }
    }

    /// A well-formed session envelope of 512 bytes (the smallest bucket) addressed to `mailbox`;
    /// `fill` makes each one distinct.
    pub(crate) fn envelope(mailbox: MailboxId, fill: u8) -> Vec<u8> {
        let header =
            Header { version: VERSION, kind: Kind::Session, mailbox, epoch: 1, sub_epoch: 0, index: 0 };
        let envelope = Envelope { header, open: None, ciphertext: vec![fill; 512 - 29] };
        envelope.validate().unwrap();
        let bytes = envelope.encode();
        assert_eq!(bytes.len(), 512);
        bytes
    }

    /// The token of mailbox `byte` (of a secret of this test run's own) for the relay `relay`.
    pub(crate) fn token_for(relay: &PeerId, byte: u8) -> FetchToken {
        let mut secret = [byte; 32];
        secret[..4].copy_from_slice(&std::process::id().to_be_bytes());
        MailboxKey::derive(&SymmetricKey::from_bytes(secret), 0).token(&relay.to_bytes())
    }

    impl Client {
        /// The token of mailbox `byte` for the relay this client talks to.
        pub(crate) fn token(&self, byte: u8) -> FetchToken {
            token_for(&self.relay, byte)
        }
    }

    pub(crate) fn deposit(token: &FetchToken, fill: u8) -> Request {
        let mailbox = MailboxId::of(token);
        Request::Deposit { mailbox, envelope: envelope(mailbox, fill) }
    }

    pub(crate) fn fetch(token: &FetchToken) -> Request {
        Request::Fetch { tokens: vec![token.clone()], after: None, limit: 64, wait_ms: 0 }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

#[test]
fn security_fetch_and_delete_need_the_token() {
    use merpati_proto::wire::mailbox::{Request, Response};

    let relay = relay("");
    runtime().block_on(async {
        let owner = client::Client::start(&relay.addr()).await;
        let mine = owner.token(1);
        let other = owner.token(2);
        let deposited = client::envelope(merpati_proto::mailbox::MailboxId::of(&mine), 0x42);
        let id = match owner.ask(client::deposit(&mine, 0x42)).await {
            Ok(Response::Stored { id }) => id,
            answer => panic!("a valid deposit should be stored, got {answer:?}"),
        };

        // The relay keeps the envelope as it came, which is also what makes the plaintext search of
        // `security_the_relay_never_holds_plaintext` meaningful: stored bytes are found by it.
        assert!(
            !files_containing(relay.home(), &deposited).is_empty(),
            "a deposit answered Stored should be on disk under the relay's home, byte for byte"
        );

        // Another client, and the owner too, with a token that does not open the mailbox.
        let stranger = client::Client::start(&relay.addr()).await;
        for (who, client) in [("a stranger", &stranger), ("the owner", &owner)] {
            match client.ask(client::fetch(&other)).await {
                Ok(Response::Envelopes { items, .. }) => assert!(
                    items.iter().all(|item| item.id != id && item.envelope != deposited),
                    "{who} fetching with the wrong token should see nothing of the deposit, got {items:?}"
                ),
                answer => {
                    panic!("{who} fetching with the wrong token should get an empty page, got {answer:?}")
                }
            }
            // Answered as for an id that is gone: nothing tells whether it exists elsewhere.
            let delete = Request::Delete { token: other.clone(), ids: vec![id] };
            assert_eq!(
                client.ask(delete).await.unwrap(),
                Response::Deleted { count: 0 },
                "{who} deleting with the wrong token should delete nothing and learn nothing"
            );
        }

        // The owner's token for another of its relays, which that relay saw, opens nothing here:
        // refused, and nothing is taken.
        let for_elsewhere = client::token_for(&libp2p::PeerId::random(), 1);
        assert_eq!(for_elsewhere.mailbox(), mine.mailbox(), "senders write the same id at every relay");
        let fetch = client::fetch(&for_elsewhere);
        let delete = Request::Delete { token: for_elsewhere, ids: vec![id] };
        for request in [fetch, delete] {
            assert_eq!(
                stranger.ask(request).await.unwrap(),
                Response::Refused(merpati_proto::wire::Refusal::Unauthorized),
                "a token made for another relay should be refused here"
            );
        }

        // The envelope is still there for whoever holds the right token, byte for byte.
        match stranger.ask(client::fetch(&mine)).await {
            Ok(Response::Envelopes { items, more }) => {
                assert_eq!(items.len(), 1, "the right token should fetch exactly the one deposit");
                assert_eq!(items[0].id, id, "the fetched envelope should be the deposited one");
                assert_eq!(items[0].envelope, deposited, "the fetched envelope should be unchanged");
                assert!(!more, "nothing else should be waiting in the mailbox");
            }
            answer => panic!("fetching with the right token should return the deposit, got {answer:?}"),
        }
        let delete = Request::Delete { token: mine.clone(), ids: vec![id] };
        assert_eq!(
            owner.ask(delete).await.unwrap(),
            Response::Deleted { count: 1 },
            "deleting with the right token should delete the deposit"
        );
        owner.stop().await;
        stranger.stop().await;
    });
}

#[test]
fn security_a_flooding_peer_is_limited_while_others_are_served() {
    use merpati_proto::wire::Refusal;
    use merpati_proto::wire::mailbox::Response;

    // Per peer 5/s (burst 10); per IP high, since every peer here comes from 127.0.0.1.
    let relay = relay(
        "peer_rate = { per_second = 5, burst = 10 }\n\
         ip_rate = { per_second = 100000, burst = 100000 }",
    );
    runtime().block_on(async {
        let flooder = client::Client::start(&relay.addr()).await;
        let token = flooder.token(3);
        let requests: Vec<_> = (0..100u8)
            .map(|i| {
                let (handle, relay, addr) =
                    (flooder.handle.clone(), flooder.relay, flooder.relay_addr.clone());
                let request = client::deposit(&token, i);
                tokio::spawn(async move { handle.mailbox(relay, vec![addr], request).await })
            })
            .collect();
        let (mut stored, mut limited) = (0, 0);
        for request in requests {
            match request.await.unwrap() {
                Ok(Response::Stored { .. }) => stored += 1,
                Ok(Response::Refused(Refusal::RateLimited { retry_after_ms })) => {
                    assert!(retry_after_ms >= 1, "a rate-limit refusal should say how long to wait");
                    limited += 1;
                }
                answer => panic!("a flood deposit should be stored or rate-limited, got {answer:?}"),
            }
        }
        assert!(limited > 0, "a peer sending 100 deposits at once should be rate-limited ({stored} stored)");
        assert!(stored > 0, "the first deposits of the burst should be stored ({limited} refused)");
        assert!(
            stored <= 30,
            "a peer limited to 5/s with a burst of 10 should not get {stored} of 100 stored"
        );

        // Another peer, from the same IP, is served at once.
        let other = client::Client::start(&relay.addr()).await;
        let answer = other.ask(client::deposit(&other.token(4), 0)).await;
        assert!(
            matches!(answer, Ok(Response::Stored { .. })),
            "another peer should be able to deposit right after the flood, got {answer:?}"
        );
        flooder.stop().await;
        other.stop().await;
    });
}

#[test]
fn limits_are_shown_to_the_sender() {
    let relay = relay("mailbox_max_envelopes = 5\nmax_envelope_bytes = 1024");
    let (alice, mut bob) = users(&[&relay], true);
    bob.stop();
    let sent = send_all(&alice, "into a small mailbox", 8);

    // Five fit; the rest stay queued, in order, and the first of them says why it waits.
    let deadline = std::time::Instant::now() + PATIENCE;
    let (messages, head) = loop {
        let messages = outgoing(&alice);
        let stored = messages.iter().take_while(|m| is_stored(m, 1, 1)).count();
        let head = messages.get(5).map(|m| alice.message_status(m["id"].as_str().unwrap()));
        if stored == 5
            && head.as_ref().is_some_and(|h| h["reason"].as_str().is_some_and(|r| r.contains("full")))
        {
            break (messages, head.unwrap());
        }
        assert!(
            std::time::Instant::now() < deadline,
            "Alice's first 5 messages should be stored 1/1 and the 6th queued with a reason saying the mailbox \
             is full; she has {:?}, the 6th's status is {head:?}",
            messages.iter().map(summary).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(messages.len(), 8, "none of Alice's 8 messages should disappear");
    for message in &messages[5..] {
        assert_eq!(
            message["status"], "queued",
            "a message the relay had no room for should stay queued: {message}"
        );
    }
    assert_eq!(head["status"], "queued", "the 6th message should be queued: {head}");
    // `send --wait` tells a sender whose message cannot leave yet.
    let out = alice.cli(&["send", "bob", "--wait", "sent", "--timeout", "2", "--", "one more"]);
    let stderr = merpati_e2e::text(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(8),
        "waiting for a message to a full mailbox should time out (exit 8): {stderr}"
    );
    assert!(stderr.contains("queued"), "the timeout should say the message is still queued: {stderr}");
    let mut sent = sent;
    sent.push("one more".to_owned());
    assert_eq!(outgoing(&alice).len(), 9, "the message sent with --wait should be kept too");

    bob.start();
    assert_bob_received_exactly(&bob, &sent, true);
    wait_all_out(&alice, "delivered", 9, is_delivered);

    // Too large for this relay: the message fails, and Alice sees why.
    bob.stop();
    let big = "x".repeat(3000);
    let out = alice.cli(&["send", "bob", "--wait", "delivered", "--timeout", "60", "--", &big]);
    let stderr = merpati_e2e::text(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(9),
        "sending a text over the relay's size limit should fail (exit 9): {stderr}"
    );
    assert!(
        stderr.contains("too large") && stderr.contains("1024"),
        "send --wait should say the message is over the relay's limit of 1024 bytes: {stderr}"
    );
    let failed: Vec<Value> = outgoing(&alice).into_iter().filter(|m| m["text"] == big.as_str()).collect();
    assert_eq!(failed.len(), 1, "the oversized message should stay visible to Alice");
    assert_eq!(
        failed[0]["status"], "failed",
        "the oversized message should end failed: {}",
        failed[0]["status"]
    );
    let status = alice.message_status(failed[0]["id"].as_str().unwrap());
    let reason = status["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("too large") && reason.contains("1024"),
        "the failure reason should mention the size limit of 1024 bytes, got {reason:?}"
    );
}

#[test]
fn relay_add_checks_that_a_relay_answers_and_says_which_check_failed() {
    let mut bob = Node::init("Bob");
    bob.start();
    let mut relay = relay("");
    let address = relay.addr();
    // A person's node is no relay.
    let mut carol = Node::init("Carol");
    let carol_addr = carol.start().listen[0].clone();
    let out = bob.cli(&["relay", "add", &carol_addr]);
    assert_eq!(out.status.code(), Some(13), "{}", merpati_e2e::text(&out.stderr));
    assert!(
        merpati_e2e::text(&out.stderr).contains("keeps no mailboxes"),
        "{}",
        merpati_e2e::text(&out.stderr)
    );
    // A made-up peer id at the relay's port: Noise proves who answers.
    let other_id = carol.ready.as_ref().unwrap().peer_id.clone();
    let (transport, _) = address.rsplit_once("/p2p/").unwrap();
    let wrong_peer = format!("{transport}/p2p/{other_id}");
    let out = bob.cli(&["relay", "add", &wrong_peer]);
    assert_eq!(out.status.code(), Some(13), "{}", merpati_e2e::text(&out.stderr));
    assert!(merpati_e2e::text(&out.stderr).contains("cannot reach"), "{}", merpati_e2e::text(&out.stderr));
    // A relay that is down: refused, unless added --offline.
    relay.stop();
    let out = bob.cli(&["relay", "add", &address]);
    assert_eq!(out.status.code(), Some(13), "{}", merpati_e2e::text(&out.stderr));
    assert!(merpati_e2e::text(&out.stderr).contains("--offline"), "{}", merpati_e2e::text(&out.stderr));
    assert!(bob.ok(&["--json", "relay", "list"]).trim().is_empty(), "nothing failed was added");
    bob.ok(&["relay", "add", "--offline", &address]);
    assert_eq!(bob.ok(&["--json", "relay", "list"]).lines().count(), 1);
    // Up again, the check passes.
    bob.ok(&["relay", "remove", &address]);
    relay.start();
    bob.ok(&["relay", "add", &address]);
    assert_eq!(bob.ok(&["--json", "relay", "list"]).lines().count(), 1);
}

/// A long text (300 KiB, seven pieces) for a recipient who is away: the pieces wait at the relay,
/// Bob's node collects them when it comes back and shows one message, and Alice sees it
/// delivered under the id she was given.
#[test]
fn a_long_text_waits_at_the_relay_in_pieces_and_arrives_whole() {
    let relay = relay("");
    let (alice, mut bob) = users(&[&relay], true);
    bob.stop();
    let mut long = String::new();
    for i in 0.. {
        let line = format!("line {i}: ünïcödé päckchen ✓\n");
        if long.len() + line.len() > 300 * 1024 {
            break;
        }
        long.push_str(&line);
    }
    let out = alice.cli_with_input(&["send", "bob", "-"], Some(&long));
    assert!(out.status.success(), "{}", merpati_e2e::text(&out.stderr));
    let id = merpati_e2e::text(&out.stdout).trim().to_owned();
    wait_until("the long text stored at the relay", PATIENCE, || is_stored(&alice.message_status(&id), 1, 1));
    assert!(
        stored_envelopes(&relay) >= 7.0,
        "seven pieces at the relay, reports {}",
        stored_envelopes(&relay)
    );
    bob.start();
    wait_until("the long text at Bob", PATIENCE, || !received(&bob).is_empty());
    let got = bob.messages(Some("alice"));
    let incoming: Vec<_> = got.iter().filter(|m| m["direction"] == "in" && m["text"] != GREETING).collect();
    assert_eq!(incoming.len(), 1, "one message, not pieces");
    assert_eq!(incoming[0]["id"], id.as_str(), "the same id on both sides");
    assert!(incoming[0]["text"] == long.trim_end_matches('\n'), "the text arrives exactly as sent");
    wait_until("the long text delivered", PATIENCE, || is_delivered(&alice.message_status(&id)));
}

/// A small file for a recipient who is away waits at the relay like a text, and arrives whole.
#[test]
fn a_small_file_waits_at_the_relay_and_arrives_whole() {
    let relay = relay("");
    let (alice, mut bob) = users(&[&relay], true);
    bob.stop();
    let dir = tempfile::tempdir().unwrap();
    let note = dir.path().join("voice note.ogg");
    let bytes: Vec<u8> = (0..30_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&note, &bytes).unwrap();
    let id = alice.ok(&["send", "bob", "--file", note.to_str().unwrap()]).trim().to_owned();
    wait_until("the file stored at the relay", PATIENCE, || is_stored(&alice.message_status(&id), 1, 1));
    bob.start();
    wait_until("the file at Bob", PATIENCE, || {
        bob.messages(Some("alice")).iter().any(|m| m["id"] == id.as_str())
    });
    let saved = dir.path().join("saved.ogg");
    bob.ok(&["save", &id, saved.to_str().unwrap()]);
    assert_eq!(std::fs::read(&saved).unwrap(), bytes);
    wait_until("the file delivered", PATIENCE, || is_delivered(&alice.message_status(&id)));
}

/// A photo too large for its description travels as a blob: Alice's node encrypts it into her
/// spool and uploads it to her relay while Bob is away; the relay keeps it across a crash; Bob's
/// node fetches it from there when he comes back (Alice is away by then), checks it and keeps it
/// encrypted, and the relay lets it go once he has it. No plaintext of it is on any disk but where Bob saves it.
#[test]
fn a_large_file_waits_at_the_senders_relay_and_arrives_whole() {
    let mut relay = relay("");
    let (mut alice, mut bob) = users(&[&relay], true);
    // The file goes to the sender's relays: Alice uses the same one.
    alice.ok(&["relay", "add", &relay.addr()]);
    bob.stop();
    let dir = tempfile::tempdir().unwrap();
    let photo = dir.path().join("harbour.jpg");
    // Not compressible, and no run repeats: any 64 bytes of it found on a disk are a leak.
    let bytes: Vec<u8> =
        (0..3 * 1024 * 1024u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    std::fs::write(&photo, &bytes).unwrap();
    // `--wait` follows the upload too, and says when it is done.
    let out = alice.cli(&["send", "bob", "the harbour", "--file", photo.to_str().unwrap(), "--wait", "sent"]);
    let stderr = merpati_e2e::text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let id = merpati_e2e::text(&out.stdout).lines().next().unwrap().to_owned();
    assert!(stderr.contains(&format!("message {id} uploaded 3.0 MiB of 3.0 MiB")), "{stderr}");
    // 3 MiB is 49 pieces of 65 520 bytes, padded to 56 chunks: all at the relay by now.
    assert!(relay.metric("merpati_blob_chunks_stored_total").unwrap_or(0.0) >= 56.0);
    wait_until("its description stored at the relay", PATIENCE, || {
        is_stored(&alice.message_status(&id), 1, 1)
    });
    relay.kill();
    relay.start();

    // Alice is away too when Bob comes back: the relay is the only source.
    alice.stop();
    bob.start();
    wait_until("the file fetched by Bob", PATIENCE, || {
        bob.messages(Some("alice")).iter().any(|m| m["id"] == id.as_str() && m["file"]["here"] == true)
    });
    alice.start();
    let message = bob.messages(Some("alice")).into_iter().find(|m| m["id"] == id.as_str()).unwrap();
    assert_eq!(message["text"], "the harbour");
    assert_eq!(message["file"]["name"], "harbour.jpg");
    assert_eq!(message["file"]["size"], bytes.len());
    let saved = dir.path().join("saved.jpg");
    bob.ok(&["save", &id, saved.to_str().unwrap()]);
    assert!(std::fs::read(&saved).unwrap() == bytes, "the file arrives exactly as sent");
    let mine = dir.path().join("mine.jpg");
    alice.ok(&["save", &id, mine.to_str().unwrap()]);
    assert!(std::fs::read(&mine).unwrap() == bytes, "the sender can save her copy too");

    wait_until("the relay lets the file go once Bob has it", PATIENCE, || {
        relay.metric("merpati_blob_blobs") == Some(0.0)
    });
    wait_until("the file delivered", PATIENCE, || is_delivered(&alice.message_status(&id)));
    for (who, home) in [("the relay", relay.home()), ("Alice", alice.home()), ("Bob", bob.home())] {
        for offset in [0, 1_000_000, bytes.len() - 64] {
            let found = files_containing(home, &bytes[offset..offset + 64]);
            assert!(found.is_empty(), "{who}'s disk holds the file's plaintext at {offset}: {found:?}");
        }
    }
}

/// A file sent while the sender's relay is down is uploaded once it is back, even though the
/// sender's node restarted meanwhile: the upload is kept with the message. Bob, who got the
/// description directly, has the file whole in the end.
#[test]
fn a_large_file_upload_resumes_after_the_sender_restarts() {
    let mut relay = relay("");
    let (mut alice, bob) = users(&[&relay], true);
    alice.ok(&["relay", "add", &relay.addr()]);
    relay.stop();
    let dir = tempfile::tempdir().unwrap();
    let scan = dir.path().join("contract.pdf");
    let bytes: Vec<u8> = (0..400_000u32).map(|i| (i.wrapping_mul(2_246_822_519) >> 9) as u8).collect();
    std::fs::write(&scan, &bytes).unwrap();
    let id = alice.ok(&["send", "bob", "--file", scan.to_str().unwrap()]).trim().to_owned();
    wait_until("the description at Bob", PATIENCE, || {
        bob.messages(Some("alice")).iter().any(|m| m["id"] == id.as_str() && m["file"]["here"] == false)
    });
    alice.stop();
    alice.start();
    relay.start();
    // 400 000 bytes are 7 chunks: all of them reach the relay, from the upload Alice's node
    // resumed (Bob may meanwhile fetch the file from Alice's node itself).
    wait_until("the upload resumed and done", PATIENCE, || {
        relay.metric("merpati_blob_chunks_stored_total").is_some_and(|chunks| chunks >= 7.0)
    });
    wait_until("the file fetched by Bob", PATIENCE, || {
        bob.messages(Some("alice")).iter().any(|m| m["id"] == id.as_str() && m["file"]["here"] == true)
    });
    let saved = dir.path().join("saved.pdf");
    bob.ok(&["save", &id, saved.to_str().unwrap()]);
    assert!(std::fs::read(&saved).unwrap() == bytes, "the file arrives exactly as sent");
}
