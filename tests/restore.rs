//! Moving to a new laptop with real processes on 127.0.0.1: Alice backs up, her laptop dies
//! (`kill -9`), Bob writes while she is gone, and she restores the backup into a new home. Her new
//! node starts new sessions, Bob's node shows that she restored from a backup, and what Bob sent
//! that the old laptop never confirmed arrives on the new one, once, beside the whole history. The
//! old laptop, started again, is told plainly that another copy took over.
//!
//! Every wait polls with a deadline; nothing sleeps to synchronise.
#![allow(clippy::unwrap_used)] // test code: a failed step is a failed test

use std::time::Duration;

use merpati_e2e::{Node, Relay, text, wait_until};
use serde_json::Value;

const PATIENCE: Duration = Duration::from_secs(120);
const PASSPHRASE: &str = "a long backup passphrase";

fn delivered(node: &Node, id: &str) -> bool {
    let status = node.message_status(id);
    status["status"] == "delivered" || status["status"] == "read"
}

fn texts(node: &Node, with: &str) -> Vec<String> {
    node.messages(Some(with)).iter().map(|m| m["text"].as_str().unwrap_or_default().to_owned()).collect()
}

#[test]
fn a_backup_restored_on_a_new_laptop_carries_on_the_conversation() {
    let mut relay = Relay::new(None);
    relay.start();
    let mut alice = Node::init("Alice");
    let mut bob = Node::init("Bob");
    alice.start();
    bob.start();
    for node in [&alice, &bob] {
        node.ok(&["relay", "add", &relay.addr()]);
    }
    alice.add(&bob, "bob");
    bob.add(&alice, "alice");
    let hello = alice.send("bob", "hello from the old laptop");
    let hi = bob.send("alice", "hi Alice");
    wait_until("the greetings to be delivered", PATIENCE, || {
        delivered(&alice, &hello) && delivered(&bob, &hi)
    });
    // A small file in the history, to find again after the move.
    let photo = alice.home().join("photo.txt");
    std::fs::write(&photo, b"a picture of the harbour").unwrap();
    let file_id = bob.ok(&["send", "alice", "--file", photo.to_str().unwrap()]).trim().to_owned();
    wait_until("the file to be delivered", PATIENCE, || delivered(&bob, &file_id));

    let backup = alice.home().join("alice.backup");
    let short = alice.cli_with_input(&["backup", backup.to_str().unwrap()], Some("short\n"));
    assert_eq!(short.status.code(), Some(19), "{}", text(&short.stderr));
    assert!(text(&short.stderr).contains("at least 8 characters"), "{}", text(&short.stderr));
    let written =
        alice.cli_with_input(&["backup", backup.to_str().unwrap()], Some(&format!("{PASSPHRASE}\n")));
    assert!(written.status.success(), "backup failed: {}", text(&written.stderr));
    assert!(
        text(&written.stdout).contains("1 contacts, 3 messages and 1 files"),
        "{}",
        text(&written.stdout)
    );
    let saved_backup = tempfile::tempdir().unwrap();
    let carried = saved_backup.path().join("alice.backup");
    std::fs::copy(&backup, &carried).unwrap();

    // The old laptop dies; Bob writes, and his node leaves it at Alice's relay.
    alice.kill();
    let missed = bob.send("alice", "while you were away");
    wait_until("Bob's message to be left at the relay", PATIENCE, || {
        bob.message_status(&missed)["status"] == "stored"
    });

    // The new laptop: a wrong passphrase changes nothing, the right one restores.
    let mut laptop = Node::uninitialised();
    let wrong = laptop.cli_with_input(&["restore", carried.to_str().unwrap()], Some("not the passphrase\n"));
    assert_eq!(wrong.status.code(), Some(19), "{}", text(&wrong.stderr));
    assert!(text(&wrong.stderr).contains("passphrase does not open"), "{}", text(&wrong.stderr));
    assert!(!laptop.home().join("identity").exists());
    let restored =
        laptop.cli_with_input(&["restore", carried.to_str().unwrap()], Some(&format!("{PASSPHRASE}\n")));
    assert!(restored.status.success(), "restore failed: {}", text(&restored.stderr));
    let said = text(&restored.stdout);
    assert!(said.contains("Restored Alice") && said.contains("a new session with bob"), "{said}");
    let again =
        laptop.cli_with_input(&["restore", carried.to_str().unwrap()], Some(&format!("{PASSPHRASE}\n")));
    assert_eq!(again.status.code(), Some(20), "{}", text(&again.stderr));

    let follower = bob.follow(&["alice"]);
    laptop.start();
    // A node of its own: the old laptop, were it still running, would be another peer.
    assert_ne!(laptop.ready.as_ref().unwrap().peer_id, alice.ready.as_ref().unwrap().peer_id);
    let mut follower = follower;
    follower.wait_for("restored from a backup");
    wait_until("Bob's missed message to reach the new laptop", PATIENCE, || {
        texts(&laptop, "bob").iter().any(|t| t == "while you were away")
    });
    wait_until("Bob's missed message to be confirmed", PATIENCE, || delivered(&bob, &missed));
    let history = texts(&laptop, "bob");
    assert_eq!(history.iter().filter(|t| *t == "while you were away").count(), 1, "{history:?}");
    for earlier in ["hello from the old laptop", "hi Alice"] {
        assert!(history.iter().any(|t| t == earlier), "{earlier:?} missing from {history:?}");
    }
    let shown = bob.ok(&["contact", "show", "alice"]);
    assert!(shown.contains("restored from a backup"), "{shown}");

    // The file of the history is here, and the conversation goes on both ways.
    let copy = laptop.home().join("saved.txt");
    laptop.ok(&["save", &file_id, copy.to_str().unwrap()]);
    assert_eq!(std::fs::read(&copy).unwrap(), b"a picture of the harbour");
    let onward = laptop.send("bob", "all here on the new laptop");
    let back = bob.send("alice", "welcome back");
    wait_until("both to arrive", PATIENCE, || delivered(&laptop, &onward) && delivered(&bob, &back));
    let at_bob: Vec<Value> = bob.messages(Some("alice"));
    assert_eq!(at_bob.iter().filter(|m| m["text"] == "hello from the old laptop").count(), 1);

    // The old laptop comes back to life: what it writes now is refused, and it says why.
    alice.start();
    let late = alice.cli(&["send", "bob", "--wait", "delivered", "--timeout", "60", "--", "still here?"]);
    assert_eq!(late.status.code(), Some(9), "{}\n{}", text(&late.stdout), text(&late.stderr));
    assert!(text(&late.stderr).contains("another copy of your identity"), "{}", text(&late.stderr));
    assert!(texts(&bob, "alice").iter().all(|t| t != "still here?"));
}
