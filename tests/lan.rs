//! A LAN with no address given: two daemons in their own network namespaces, joined by a veth
//! pair (a two-host Ethernet segment), find each other with mDNS.
//!
//! Alice's only address for Bob is one nobody can reach: his invite is taken while his daemon
//! listens on nothing but the loopback of his namespace. Bob then comes back listening on every
//! interface, and only mDNS can tell Alice where he is. A control run with mDNS off on the same
//! kind of LAN must not deliver, so the first test's delivery is mDNS's doing.
//!
//! Network namespaces need root and iproute2's `ip`; where the machine cannot make them the tests
//! say so on one line and pass (unless `MERPATI_REQUIRE_NETNS` is set). No packet leaves the two
//! namespaces.
#![allow(clippy::unwrap_used, clippy::print_stdout)] // test code: a failed step is a failed test

use std::time::{Duration, Instant};

use merpati_e2e::{DaemonConfig, Netns, Node, text, veth, wait_until};
use serde_json::Value;

/// Alice's and Bob's addresses on the veth. Each pair of namespaces is an isolated segment, so
/// parallel runs can reuse them; the namespace names are what must be unique.
const ALICE_IP: &str = "10.213.0.1";
const BOB_IP: &str = "10.213.0.2";

/// Set (as `.ci/run` does as root), a machine that cannot make the LAN fails the tests instead of
/// skipping them.
const REQUIRE_NETNS: &str = "MERPATI_REQUIRE_NETNS";

/// How long `merpati send --wait delivered` may take over mDNS.
const DELIVERY_TIMEOUT: &str = "60";
/// How long the control run waits for a delivery that must not happen.
const CONTROL_TIMEOUT: &str = "10";

/// Two hosts on one segment: namespace `a` (Alice) and `b` (Bob). Dropping it deletes both.
struct Lan {
    a: Netns,
    b: Netns,
}

impl Lan {
    fn create() -> Result<Lan, String> {
        let lan = Lan { a: Netns::create("a")?, b: Netns::create("b")? };
        veth(&lan.a, &format!("{ALICE_IP}/24"), &lan.b, &format!("{BOB_IP}/24"), "eth0")?;
        Ok(lan)
    }
}

/// The LAN, or `None` after saying on one line why this machine cannot have one.
fn lan_or_skip(test: &str) -> Option<Lan> {
    match Lan::create() {
        Ok(lan) => Some(lan),
        Err(why) if std::env::var_os(REQUIRE_NETNS).is_some() => {
            panic!("{REQUIRE_NETNS} is set, but this machine cannot create network namespaces: {why}")
        }
        Err(why) => {
            println!("SKIPPED lan::{test}: cannot create network namespaces on this machine ({why})");
            None
        }
    }
}

/// A daemon in `netns` listening on every interface, mDNS on or off.
fn on_the_lan(netns: &Netns, mdns: bool) -> DaemonConfig {
    DaemonConfig {
        listen: vec!["/ip4/0.0.0.0/tcp/0".into()],
        mdns,
        netns: Some(netns.name().into()),
        ..DaemonConfig::default()
    }
}

/// Alice and Bob running on `lan`, Alice holding Bob as a contact whose only address is on Bob's
/// loopback, and one message to Bob queued on Alice's side while Bob was away.
fn alice_knows_no_usable_address(lan: &Lan, mdns: bool) -> (Node, Node) {
    let mut alice = Node::init("Alice");
    let mut bob = Node::init("Bob");

    // Bob's invite names his namespace's 127.0.0.1 only: unreachable from Alice's namespace.
    bob.configure(DaemonConfig {
        listen: vec!["/ip4/127.0.0.1/tcp/0".into()],
        mdns: false,
        netns: Some(lan.b.name().into()),
        ..DaemonConfig::default()
    });
    bob.start();
    let invite = bob.invite();
    bob.stop();

    alice.configure(on_the_lan(&lan.a, mdns));
    alice.start();
    wait_on_the_lan(&alice, ALICE_IP);
    alice.ok(&["contact", "add", &invite, "--name", "bob"]);
    let alice_invite = alice.invite();
    let contact: Value = serde_json::from_str(&alice.ok(&["--json", "contact", "show", "bob"])).unwrap();
    let addrs = contact["addrs"].as_array().unwrap();
    assert!(!addrs.is_empty(), "the invite should name an address: {contact}");
    assert!(
        addrs.iter().all(|a| a.as_str().unwrap().starts_with("/ip4/127.0.0.1/")),
        "alice should know only bob's loopback address: {contact}"
    );

    // Written while Bob is away: its first attempt fails and it waits in the outbox.
    alice.send("bob", "written while you were away");

    bob.configure(on_the_lan(&lan.b, mdns));
    bob.start();
    wait_on_the_lan(&bob, BOB_IP);
    // Bob adds Alice too (her first contact, should it come first, waits as a request and opens
    // then).
    bob.ok(&["contact", "add", &alice_invite, "--name", "alice"]);
    (alice, bob)
}

/// Waits until `node`'s daemon listens on its LAN address `ip`. The startup line may list only the
/// first of a wildcard listener's addresses (127.0.0.1), so this asks `merpati status`.
fn wait_on_the_lan(node: &Node, ip: &str) {
    let prefix = format!("/ip4/{ip}/");
    wait_until(&format!("the daemon listening on {prefix}"), Duration::from_secs(10), || {
        let status: Value = serde_json::from_str(node.ok(&["--json", "status"]).trim()).unwrap();
        status["listen"].as_array().unwrap().iter().any(|a| a.as_str().unwrap().starts_with(&prefix))
    });
}

fn texts_in(node: &Node, contact: Option<&str>) -> Vec<String> {
    node.messages(contact)
        .iter()
        .filter(|m| m["direction"] == "in")
        .map(|m| m["text"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn two_daemons_on_a_lan_find_each_other_by_mdns() {
    let Some(lan) = lan_or_skip("two_daemons_on_a_lan_find_each_other_by_mdns") else { return };
    let (alice, bob) = alice_knows_no_usable_address(&lan, true);
    let bob_peer = bob.ready.as_ref().unwrap().peer_id.clone();

    let started = Instant::now();
    let out = alice.cli(&[
        "send",
        "bob",
        "--wait",
        "delivered",
        "--timeout",
        DELIVERY_TIMEOUT,
        "--",
        "found you on the LAN",
    ]);
    assert!(
        out.status.success(),
        "delivery over mDNS failed ({:?}): {}\nalice's log:\n{}\nbob's log:\n{}",
        out.status.code(),
        text(&out.stderr),
        alice.log(),
        bob.log()
    );
    println!("delivered over mDNS in {:.1} s", started.elapsed().as_secs_f64());

    // Both arrive, in the order written: the queued one was retried once Bob was found.
    assert_eq!(texts_in(&bob, None), ["written while you were away", "found you on the LAN"]);
    wait_until("the queued message delivered", Duration::from_secs(30), || {
        alice.messages(Some("bob")).iter().all(|m| m["status"] == "delivered" || m["status"] == "read")
    });

    // It was mDNS: Alice's daemon found Bob's node on the segment, at its LAN address.
    let log = alice.log();
    assert!(
        log.lines().any(|l| l.contains("found on the local network")
            && l.contains(&bob_peer)
            && l.contains(&format!("/ip4/{BOB_IP}/"))),
        "alice's daemon never found bob by mDNS:\n{log}"
    );
}

#[test]
fn without_mdns_the_same_lan_does_not_deliver() {
    let Some(lan) = lan_or_skip("without_mdns_the_same_lan_does_not_deliver") else { return };
    let (alice, bob) = alice_knows_no_usable_address(&lan, false);

    let out = alice.cli(&[
        "send",
        "bob",
        "--wait",
        "delivered",
        "--timeout",
        CONTROL_TIMEOUT,
        "--",
        "nobody told me where you are",
    ]);
    assert!(
        !out.status.success(),
        "with mDNS off, alice had no way to reach bob, yet the message went:\n{}",
        text(&out.stdout)
    );
    assert!(texts_in(&bob, None).is_empty(), "bob received something without mDNS");
    assert!(
        alice.messages(Some("bob")).iter().all(|m| m["status"] == "queued"),
        "messages to bob should still wait in alice's outbox"
    );
}
