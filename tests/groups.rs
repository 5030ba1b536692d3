//! A group of ten with real daemons on 127.0.0.1 and a relay: created with eight, two joining
//! (one added by an admin the owner promoted), a member killed with SIGKILL and restarted, one
//! offline so that what the group sends waits at its relay, and one removed. Every member sees
//! every message it should, exactly once; membership converges; the removed member's node gets
//! nothing sent after its removal, and what it sends is not taken.
//!
//! Only the two admins (m0, the owner, and m1) have everyone as a contact; the other members meet
//! through the group: their nodes are introduced by the admins' cards, with no invite exchanged.
//! Every wait polls with a deadline; nothing sleeps to synchronise.
#![allow(clippy::unwrap_used)] // test code: a failed step is a failed test

use std::time::Duration;

use merpati_e2e::{Node, Relay, text, wait_until};
use serde_json::Value;

const PATIENCE: Duration = Duration::from_secs(120);
const GROUP: &str = "Pasar Minggu";

fn name(i: usize) -> String {
    format!("m{i}")
}

/// The group's texts at `node`, oldest first.
fn texts(node: &Node) -> Vec<String> {
    let out = node.cli(&["--json", "messages", "--group", GROUP, "--limit", "1000"]);
    if !out.status.success() {
        return Vec::new(); // not (yet) in the group
    }
    text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["text"].as_str().unwrap().to_owned())
        .collect()
}

/// The group as `node` shows it (`group show --json`), if it knows it.
fn shown(node: &Node) -> Option<Value> {
    let out = node.cli(&["--json", "group", "show", GROUP]);
    out.status.success().then(|| serde_json::from_str(text(&out.stdout).trim()).unwrap())
}

/// The fingerprints of the members `node` shows, sorted.
fn members(node: &Node) -> Vec<String> {
    let Some(group) = shown(node) else { return Vec::new() };
    let mut all: Vec<String> = group["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["fingerprint"].as_str().unwrap().to_owned())
        .collect();
    all.sort();
    all
}

fn has_all(node: &Node, wanted: &[&str]) -> bool {
    let got = texts(node);
    wanted.iter().all(|w| got.iter().any(|t| t == w))
}

#[test]
fn a_group_of_ten_survives_joins_a_removal_a_crash_and_a_member_away() {
    let mut relay = Relay::new(None);
    relay.start();
    let mut nodes: Vec<Node> = (0..10).map(|i| Node::init(&name(i))).collect();
    for node in &mut nodes {
        node.start();
    }
    // Relays first: the invites handed out next name them.
    for node in &nodes {
        node.ok(&["relay", "add", &relay.addr()]);
    }
    let invites: Vec<String> = nodes.iter().map(Node::invite).collect();
    for (i, node) in nodes.iter().enumerate() {
        for (j, invite) in invites.iter().enumerate() {
            // The admins and everyone know each other; the others know only the admins.
            if i != j && (i <= 1 || j <= 1) {
                node.ok(&["contact", "add", invite, "--name", &name(j)]);
            }
        }
    }

    // The owner creates the group with seven others; then m8 and m9 join.
    let mut create = vec!["group", "create", GROUP];
    let founders: Vec<String> = (1..8).map(name).collect();
    for founder in &founders {
        create.extend(["--member", founder.as_str()]);
    }
    nodes[0].ok(&create);
    wait_until("the founders to have the group", PATIENCE, || {
        nodes[1..8].iter().all(|n| members(n).len() == 8)
    });
    nodes[0].ok(&["group", "add", GROUP, "m8"]);
    nodes[0].ok(&["group", "promote", GROUP, "m1"]);
    wait_until("m1 to be an admin", PATIENCE, || shown(&nodes[1]).is_some_and(|g| g["role"] == "admin"));
    // Refused: a member may not remove (m3 is named by the name the group gave it).
    let refused = nodes[2].cli(&["group", "remove", GROUP, "m3"]);
    assert_eq!(refused.status.code(), Some(22), "{}", text(&refused.stderr));
    nodes[1].ok(&["group", "add", GROUP, "m9"]);
    wait_until("all ten to agree on ten members", PATIENCE, || {
        let first = members(&nodes[0]);
        first.len() == 10 && nodes.iter().all(|n| members(n) == first)
    });

    nodes[0].ok(&["send", &format!("#{GROUP}"), "one: selamat pagi"]);
    nodes[5].ok(&["send", "--group", GROUP, "two: pagi juga"]);
    wait_until("the first two texts everywhere", PATIENCE, || {
        nodes.iter().all(|n| has_all(n, &["one: selamat pagi", "two: pagi juga"]))
    });

    // m3 crashes; m9 goes away, so what is sent to it waits at its relay.
    nodes[3].kill();
    nodes[9].stop();
    nodes[2].ok(&["send", &format!("#{GROUP}"), "three: while you were away"]);
    nodes[0].ok(&["group", "remove", GROUP, "m4"]);
    wait_until("m4 to learn it was removed", PATIENCE, || {
        shown(&nodes[4]).is_some_and(|g| g["role"].is_null())
    });
    nodes[0].ok(&["send", &format!("#{GROUP}"), "four: after m4 left"]);
    // Refused at once by its own node, which knows it is out.
    let out = nodes[4].cli(&["send", &format!("#{GROUP}"), "five: am I still here?"]);
    assert_eq!(out.status.code(), Some(22), "{}", text(&out.stderr));

    nodes[3].start();
    nodes[9].start();
    let everyone =
        ["one: selamat pagi", "two: pagi juga", "three: while you were away", "four: after m4 left"];
    wait_until("every remaining member to have every text", PATIENCE, || {
        nodes.iter().enumerate().filter(|(i, _)| *i != 4).all(|(_, n)| has_all(n, &everyone))
    });
    for (i, node) in nodes.iter().enumerate() {
        let got = texts(node);
        if i == 4 {
            assert!(
                !got.iter().any(|t| t.starts_with("four")),
                "m4 got a text sent after its removal: {got:?}"
            );
            // "three" crossed the removal: m4 keeps it only if it came first. What m4 has is
            // each text once all the same.
            let unique: std::collections::HashSet<&String> = got.iter().collect();
            assert_eq!(unique.len(), got.len(), "{got:?}");
        } else {
            assert_eq!(got.len(), 4, "m{i} must have each text exactly once: {got:?}");
        }
    }
    let remaining = members(&nodes[0]);
    assert_eq!(remaining.len(), 9);
    for (i, node) in nodes.iter().enumerate().filter(|(i, _)| *i != 4) {
        assert_eq!(members(node), remaining, "m{i} disagrees on the members");
    }
    // The owner's first text reached all nine others; m5's reached m2, whom m5 never added.
    let mine = nodes[0].ok(&["messages", "--group", GROUP]);
    assert!(mine.lines().next().unwrap().contains("[delivered 9/9"), "{mine}");
    let at_m2 = nodes[2].ok(&["messages", "--group", GROUP]);
    assert!(
        at_m2.contains(&format!("#{GROUP}: m5")),
        "the sender is shown by the group's name for them: {at_m2}"
    );
    // Members met in the group are not contacts, and no one was held as a stranger.
    let contacts = nodes[2].ok(&["contact", "list"]);
    assert!(!contacts.contains("m5"), "{contacts}");
    for node in &nodes {
        assert!(node.ok(&["--json", "requests"]).trim().is_empty(), "a member was held as a contact request");
    }
}
