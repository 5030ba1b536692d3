//! Direct delivery between two real daemons on 127.0.0.1: invites exchanged with the CLI,
//! conversations both ways, restarts (clean and `kill -9`) and a recipient that is away.
#![allow(clippy::unwrap_used)] // test code: a failed step is a failed test

use std::collections::HashSet;
use std::time::Duration;

use merpati_e2e::{Node, files_containing, wait_until};
use serde_json::Value;

const PATIENCE: Duration = Duration::from_secs(120);

/// Alice and Bob with running daemons, each holding the other as a contact.
fn pair() -> (Node, Node) {
    let mut alice = Node::init("Alice");
    let mut bob = Node::init("Bob");
    alice.start();
    bob.start();
    alice.add(&bob, "bob");
    bob.add(&alice, "alice");
    (alice, bob)
}

fn texts(messages: &[Value], direction: &str) -> Vec<String> {
    messages
        .iter()
        .filter(|m| m["direction"] == direction)
        .map(|m| m["text"].as_str().unwrap().to_owned())
        .collect()
}

fn all_out_reached(node: &Node, contact: &str, status: &str, count: usize) -> bool {
    let out: Vec<_> = node.messages(Some(contact)).into_iter().filter(|m| m["direction"] == "out").collect();
    out.len() == count
        && out.iter().all(|m| m["status"] == status || (status == "delivered" && m["status"] == "read"))
}

fn assert_exactly(node: &Node, contact: &str, expected: &[String]) {
    let messages = node.messages(Some(contact));
    let got = texts(&messages, "in");
    assert_eq!(got.len(), expected.len(), "wrong number of messages from {contact}");
    assert_eq!(got, expected, "messages from {contact} out of order or changed");
    let ids: HashSet<_> = messages.iter().map(|m| m["id"].as_str().unwrap().to_owned()).collect();
    assert_eq!(ids.len(), messages.len(), "a message id appears twice");
}

#[test]
fn two_hundred_messages_each_way_interleaved() {
    let (alice, bob) = pair();
    let mut to_bob = Vec::new();
    let mut to_alice = Vec::new();
    for i in 0..200 {
        let a = format!("from alice #{i}");
        alice.send("bob", &a);
        to_bob.push(a);
        let b = format!("from bob #{i}");
        bob.send("alice", &b);
        to_alice.push(b);
    }
    wait_until("alice's messages delivered", PATIENCE, || all_out_reached(&alice, "bob", "delivered", 200));
    wait_until("bob's messages delivered", PATIENCE, || all_out_reached(&bob, "alice", "delivered", 200));
    assert_exactly(&bob, "alice", &to_bob);
    assert_exactly(&alice, "bob", &to_alice);
}

#[test]
fn restarts_in_the_middle_of_a_burst_lose_and_duplicate_nothing() {
    let (mut alice, mut bob) = pair();
    let mut sent = Vec::new();
    for i in 0..150 {
        let text = format!("burst #{i}");
        alice.send("bob", &text);
        sent.push(text);
        match i {
            30 => {
                bob.stop();
                bob.start();
            }
            60 => {
                bob.kill();
                bob.start();
            }
            90 => {
                alice.stop();
                alice.start();
            }
            120 => {
                alice.kill();
                alice.start();
            }
            _ => {}
        }
    }
    wait_until("the burst delivered", PATIENCE, || all_out_reached(&alice, "bob", "delivered", 150));
    assert_exactly(&bob, "alice", &sent);
}

#[test]
fn a_recipient_away_for_a_while_gets_everything_when_back() {
    let (alice, mut bob) = pair();
    bob.stop();
    let sent: Vec<String> = (0..20).map(|i| format!("while you were away #{i}")).collect();
    for text in &sent {
        alice.send("bob", text);
    }
    std::thread::sleep(Duration::from_secs(3));
    assert!(all_out_reached(&alice, "bob", "queued", 20), "messages should wait in the outbox");
    let status = alice.ok(&["--json", "status"]);
    let status: Value = serde_json::from_str(status.lines().next().unwrap()).unwrap();
    // The 20 texts, and with them the control messages that tell Bob how to reach Alice's node,
    // what she calls herself and her keys (every session she starts carries them).
    assert_eq!(status["outbox"], 23);
    bob.start();
    wait_until("the queued messages delivered", PATIENCE, || all_out_reached(&alice, "bob", "delivered", 20));
    assert_exactly(&bob, "alice", &sent);
}

#[test]
fn the_demo_runs_and_exits_zero() {
    let out = std::process::Command::new(&merpati_e2e::bins().merpatid).arg("demo").output().unwrap();
    let stdout = merpati_e2e::text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", merpati_e2e::text(&out.stderr));
    assert!(stdout.contains("nothing lost") && stdout.trim_end().ends_with("Done."), "{stdout}");
    // Each status step of the offline delivery through the relay is shown.
    assert!(stdout.contains("queued → stored 1/1"), "{stdout}");
    assert!(stdout.contains("stored 1/1 → delivered"), "{stdout}");
}

#[test]
fn following_a_conversation_shows_your_own_sends_and_reads_what_arrives() {
    let (alice, bob) = pair();
    // The name in another case than it is stored: the follow still finds the conversation.
    let mut follow = alice.follow(&["BOB"]);
    // Her own send, from another client, shows at once.
    alice.send("bob", "on my way");
    follow.wait_for("on my way");
    // His message is printed, and so read: he sees it as read.
    let id = bob.send("alice", "see you there");
    follow.wait_for("see you there");
    wait_until("his message read", PATIENCE, || {
        bob.messages(Some("alice")).iter().any(|m| m["id"] == id.as_str() && m["status"] == "read")
    });
}

#[test]
fn deleted_messages_and_cleared_conversations_are_gone_from_this_device_only() {
    let (alice, bob) = pair();
    // Distinctive, so a scan of the homes' files finds nothing else.
    let canary = format!("CANARY-{:x}-address", std::process::id() ^ 0x7e11_a5e5);
    let secret = alice.send("bob", &format!("the key is under the pot, {canary}"));
    let kept = alice.send("bob", "see you at seven");
    wait_until("both delivered", PATIENCE, || all_out_reached(&alice, "bob", "delivered", 2));
    // Unread until shown.
    let unread =
        |node: &Node| node.rpc("contact.list", serde_json::json!({}))["contacts"][0]["unread"].clone();
    assert_eq!(unread(&bob), 2);
    bob.ok(&["messages", "alice"]);
    assert_eq!(unread(&bob), 0);
    for node in [&alice, &bob] {
        let found = files_containing(node.home(), canary.as_bytes());
        assert!(found.is_empty(), "a message text is readable on disk: {found:?}");
    }

    let said = bob.ok(&["delete", &secret]);
    assert!(said.contains("Deleted message") && said.contains("alice keeps their copy"), "{said}");
    let left = bob.messages(Some("alice"));
    assert_eq!(texts(&left, "in"), ["see you at seven"]);
    assert!(bob.ok(&["search", "CANARY"]).contains("No messages hold"));
    let again = bob.cli(&["delete", &secret]);
    assert_eq!(
        again.status.code(),
        Some(17),
        "a message already deleted: {}",
        merpati_e2e::text(&again.stderr)
    );
    // Local only: Alice keeps both.
    assert_eq!(texts(&alice.messages(Some("bob")), "out").len(), 2);
    // The daemon replaced its storage key at once, so old copies of the text are shredded.
    wait_until("the storage key replaced", PATIENCE, || {
        bob.log().contains("storage key replaced after a deletion")
    });

    let said = bob.ok(&["contact", "clear", "ALICE"]);
    assert!(said.contains("Deleted the conversation with alice"), "{said}");
    assert!(bob.messages(Some("alice")).is_empty());
    assert!(!bob.messages(None).iter().any(|m| m["id"] == kept.as_str()));
    // The contact and the session stay: the conversation goes on.
    alice.send("bob", "still there?");
    wait_until("the next message", PATIENCE, || {
        texts(&bob.messages(Some("alice")), "in") == ["still there?"]
    });
    let out = bob.cli(&["contact", "clear", "nobody"]);
    assert_eq!(out.status.code(), Some(5), "{}", merpati_e2e::text(&out.stderr));
}

#[test]
fn history_pages_back_and_is_searched_whatever_the_case() {
    let (alice, bob) = pair();
    let texts: Vec<String> = (0..7).map(|i| format!("note {i}")).collect();
    for text in &texts {
        alice.send("bob", text);
    }
    alice.send("bob", "meet at the CAFÉ");
    wait_until("all delivered", PATIENCE, || all_out_reached(&alice, "bob", "delivered", 8));
    let page = |args: &[&str]| -> Vec<Value> {
        bob.ok(args).lines().map(|line| serde_json::from_str(line).unwrap()).collect()
    };
    // The newest three, then the three before them, then the rest: oldest first on each page.
    let newest = page(&["--json", "messages", "Alice", "--limit", "3"]);
    assert_eq!(texts_of(&newest), ["note 5", "note 6", "meet at the CAFÉ"]);
    let first = newest[0]["id"].as_str().unwrap();
    let before = page(&["--json", "messages", "alice", "--limit", "3", "--before", first]);
    assert_eq!(texts_of(&before), ["note 2", "note 3", "note 4"]);
    let first = before[0]["id"].as_str().unwrap();
    let rest = page(&["--json", "messages", "--limit", "3", "--before", first]);
    assert_eq!(texts_of(&rest), ["note 0", "note 1"]);

    let found = page(&["--json", "search", "café"]);
    assert_eq!(texts_of(&found), ["meet at the CAFÉ"]);
    let found = page(&["--json", "search", "NOTE", "alice", "--limit", "2"]);
    assert_eq!(texts_of(&found), ["note 5", "note 6"], "the newest matches");
    assert!(bob.ok(&["search", "tea"]).contains("No messages hold \"tea\"."));
    let out = bob.cli(&["messages", "--before", "00000000000000000000000000000000"]);
    assert_eq!(out.status.code(), Some(17), "an unknown message id: {}", merpati_e2e::text(&out.stderr));

    // Exported whole, oldest first, in each form.
    let exported = bob.ok(&["export", "ALICE"]);
    let first = exported.find("note 0").unwrap();
    assert!(
        first < exported.find("note 6").unwrap() && exported.contains("    meet at the CAFÉ"),
        "{exported}"
    );
    let lines = bob.ok(&["export", "alice", "--format", "json"]);
    let all: Vec<Value> = lines.lines().map(|line| serde_json::from_str(line).unwrap()).collect();
    assert_eq!(all.len(), 8);
    assert_eq!(all[0]["text"], "note 0");
    let file = bob.home().join("alice.html");
    let said = bob.ok(&["export", "alice", "--format", "html", "--output", file.to_str().unwrap()]);
    assert!(said.contains("Wrote 8 message(s)"), "{said}");
    let page = std::fs::read_to_string(&file).unwrap();
    assert!(page.starts_with("<!DOCTYPE html>") && page.contains("meet at the CAFÉ"), "{page}");
}

fn texts_of(messages: &[Value]) -> Vec<&str> {
    messages.iter().map(|m| m["text"].as_str().unwrap()).collect()
}

#[test]
fn reading_a_conversation_shows_as_read_to_the_sender() {
    let (alice, bob) = pair();
    alice.send("bob", "did you see this?");
    wait_until("delivered", PATIENCE, || all_out_reached(&alice, "bob", "delivered", 1));
    bob.ok(&["messages", "alice"]);
    wait_until("read", PATIENCE, || all_out_reached(&alice, "bob", "read", 1));
}

/// The longest text there is (1 MiB), directly between two running daemons: one message on both
/// sides, with one id, delivered.
#[test]
fn a_text_of_a_mib_arrives_whole_directly() {
    let (alice, bob) = pair();
    // Until Bob has answered once, a text is short (he might hold Alice's words as a request).
    let long_first = alice.cli_with_input(&["send", "bob", "-"], Some(&"x".repeat(20 * 1024)));
    assert_eq!(long_first.status.code(), Some(7), "{}", merpati_e2e::text(&long_first.stderr));
    assert!(merpati_e2e::text(&long_first.stderr).contains("has not answered yet"));
    let hello = alice.send("bob", "hello");
    wait_until("bob's receipt", PATIENCE, || alice.message_status(&hello)["status"] == "delivered");
    let mut long = String::new();
    let mut i = 0;
    while long.len() < 1024 * 1024 - 64 {
        long.push_str(&format!("{i} päckchen ✓ "));
        i += 1;
    }
    let out =
        alice.cli_with_input(&["send", "bob", "-", "--wait", "delivered", "--timeout", "120"], Some(&long));
    assert!(out.status.success(), "{}\n{}", merpati_e2e::text(&out.stderr), alice.log());
    let id = merpati_e2e::text(&out.stdout).lines().next().unwrap().to_owned();
    let got = bob.messages(Some("alice"));
    assert_eq!(got.len(), 2, "the greeting and one message, not pieces");
    assert_eq!(got[1]["id"], id.as_str());
    assert!(got[1]["text"] == long.as_str(), "the text arrives exactly as sent");
}

/// A small file (a photo of 40 KiB) directly: it arrives with its name, type, size and caption,
/// `save` writes out exactly its bytes and keeps a file that is there already, and a file too
/// large is refused before anything is queued.
#[test]
fn a_small_file_arrives_and_is_saved_byte_for_byte() {
    let (alice, bob) = pair();
    let dir = tempfile::tempdir().unwrap();
    let photo = dir.path().join("pasar pagi.jpg");
    let bytes: Vec<u8> = (0..40 * 1024u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    std::fs::write(&photo, &bytes).unwrap();
    let out = alice.cli(&[
        "send",
        "bob",
        "the stall, this morning",
        "--file",
        photo.to_str().unwrap(),
        "--wait",
        "delivered",
    ]);
    assert!(out.status.success(), "{}\n{}", merpati_e2e::text(&out.stderr), alice.log());
    let id = merpati_e2e::text(&out.stdout).lines().next().unwrap().to_owned();

    let got = bob.messages(Some("alice"));
    assert_eq!(got.len(), 1);
    assert_eq!(got[0]["id"], id.as_str());
    assert_eq!(got[0]["text"], "the stall, this morning");
    assert_eq!(
        got[0]["file"],
        serde_json::json!({"name": "pasar pagi.jpg", "media_type": "image/jpeg", "size": 40 * 1024, "here": true})
    );
    let listed = bob.ok(&["messages", "alice"]);
    assert!(listed.contains("[file pasar pagi.jpg, 40.0 KiB] the stall, this morning"), "{listed}");

    let saved = dir.path().join("saved.jpg");
    bob.ok(&["save", &id, saved.to_str().unwrap()]);
    assert_eq!(std::fs::read(&saved).unwrap(), bytes, "the file arrives exactly as sent");
    // A file already there is kept unless --force.
    std::fs::write(&saved, b"mine").unwrap();
    let again = bob.cli(&["save", &id, saved.to_str().unwrap()]);
    assert_eq!(again.status.code(), Some(1));
    assert!(merpati_e2e::text(&again.stderr).contains("exists"), "{}", merpati_e2e::text(&again.stderr));
    assert_eq!(std::fs::read(&saved).unwrap(), b"mine");
    bob.ok(&["save", &id, saved.to_str().unwrap(), "--force"]);
    assert_eq!(std::fs::read(&saved).unwrap(), bytes);
    // The sender keeps it too.
    let kept = dir.path().join("kept.jpg");
    alice.ok(&["save", &id, kept.to_str().unwrap()]);
    assert_eq!(std::fs::read(&kept).unwrap(), bytes);

    // Too large: exit 18 with the limit, nothing queued.
    let big = dir.path().join("video.mp4");
    std::fs::File::create(&big).unwrap().set_len(25 * 1024 * 1024 + 1).unwrap();
    let refused = alice.cli(&["send", "bob", "--file", big.to_str().unwrap()]);
    assert_eq!(refused.status.code(), Some(18), "{}", merpati_e2e::text(&refused.stderr));
    assert!(merpati_e2e::text(&refused.stderr).contains("25 MiB"));
    assert_eq!(alice.messages(Some("bob")).len(), 1);
    // A message without a file has nothing to save.
    let text = alice.send("bob", "just words");
    let nothing = alice.cli(&["save", &text, dir.path().join("x").to_str().unwrap()]);
    assert_eq!(nothing.status.code(), Some(17), "{}", merpati_e2e::text(&nothing.stderr));
}

/// Without any relay, a file over 48 KiB goes straight from the sender's node, which serves it
/// from its spool to the one reader it made a token for; it arrives checked and whole.
#[test]
fn a_large_file_goes_directly_when_there_is_no_relay() {
    let (alice, bob) = pair();
    let dir = tempfile::tempdir().unwrap();
    let video = dir.path().join("market day.mp4");
    let bytes: Vec<u8> = (0..2_500_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 7) as u8).collect();
    std::fs::write(&video, &bytes).unwrap();
    let id = alice.ok(&["send", "bob", "--file", video.to_str().unwrap()]).trim().to_owned();
    wait_until("the file fetched by Bob from Alice's node", Duration::from_secs(60), || {
        bob.messages(Some("alice")).iter().any(|m| m["id"] == id.as_str() && m["file"]["here"] == true)
    });
    let saved = dir.path().join("saved.mp4");
    bob.ok(&["save", &id, saved.to_str().unwrap()]);
    assert!(std::fs::read(&saved).unwrap() == bytes, "the file arrives exactly as sent");
    let listed = bob.ok(&["messages", "alice"]);
    assert!(listed.contains("[file market day.mp4, 2.4 MiB]"), "{listed}");
}
