//! Contact requests between real daemons: a stranger's first contact waits, unanswered, until
//! the user accepts, rejects or blocks it with the CLI; contacts are renamed, removed and
//! blocked; requests survive a restart.
#![allow(clippy::unwrap_used)] // test code: a failed step is a failed test

use std::time::Duration;

use merpati_e2e::{Node, text, wait_until};
use serde_json::Value;

const PATIENCE: Duration = Duration::from_secs(120);

/// `node`'s requests, as `requests --json` lists them.
fn requests(node: &Node) -> Vec<Value> {
    node.ok(&["--json", "requests"]).lines().map(|line| serde_json::from_str(line).unwrap()).collect()
}

fn contacts(node: &Node) -> Vec<String> {
    node.ok(&["--json", "contact", "list"])
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).unwrap()["name"].as_str().unwrap().to_owned())
        .collect()
}

/// Whether `node`'s message `id` to `with` was delivered (or read, which comes after).
fn reached(node: &Node, with: &str, id: &str) -> bool {
    node.messages(Some(with))
        .iter()
        .any(|m| m["id"] == id && (m["status"] == "delivered" || m["status"] == "read"))
}

fn texts(node: &Node, with: &str) -> Vec<String> {
    node.messages(Some(with)).iter().map(|m| m["text"].as_str().unwrap().to_owned()).collect()
}

#[test]
fn a_strangers_message_waits_as_a_request_until_accepted() {
    let mut alice = Node::init("Alice");
    let mut bob = Node::init("Bob");
    alice.start();
    bob.start();
    alice.add(&bob, "bob");
    let sent = alice.send("bob", "hello Bob, it is Alice from the market");
    let id = Node::request_id_of(&alice);
    wait_until("alice's request", PATIENCE, || requests(&bob).iter().any(|r| r["id"] == id.as_str()));
    let request = requests(&bob).remove(0);
    assert_eq!(request["suggested_name"], "Alice", "{request}");
    assert_eq!(request["preview"], "hello Bob, it is Alice from the market", "{request}");
    let listed = bob.ok(&["requests"]);
    assert!(listed.contains("(unverified)") && listed.contains(&id), "{listed}");
    assert!(contacts(&bob).is_empty(), "a stranger is not a contact");
    // Her node got its answer, and no receipt: nothing goes back until Bob decides.
    std::thread::sleep(Duration::from_secs(2));
    let mine = alice.messages(Some("bob"));
    assert_eq!(mine[0]["status"], "sent", "{mine:?}");

    // The requests survive a restart.
    bob.stop();
    bob.start();
    assert_eq!(requests(&bob).len(), 1);

    let out = bob.ok(&["requests", "accept", &id, "--name", "alice"]);
    assert!(out.contains("safety number"), "{out}");
    assert_eq!(texts(&bob, "alice"), ["hello Bob, it is Alice from the market"]);
    // Reading the conversation (`texts` above) sends a read receipt: either status will do.
    wait_until("her message delivered", PATIENCE, || reached(&alice, "bob", &sent));
    assert!(requests(&bob).is_empty());

    // The conversation goes on both ways, and follows a rename.
    bob.ok(&["contact", "rename", "alice", "Alice Wijaya"]);
    assert_eq!(contacts(&bob), ["Alice Wijaya"]);
    let reply = bob.send("Alice Wijaya", "welcome");
    wait_until("bob's reply delivered", PATIENCE, || reached(&bob, "Alice Wijaya", &reply));
    assert_eq!(texts(&alice, "bob").last().unwrap(), "welcome");
    assert_eq!(texts(&bob, "Alice Wijaya").len(), 2);

    // Removed: no contact, no conversation.
    bob.ok(&["contact", "remove", "Alice Wijaya"]);
    assert!(contacts(&bob).is_empty());
    assert!(bob.messages(None).is_empty());
    let out = bob.cli(&["messages", "Alice Wijaya"]);
    assert_eq!(out.status.code(), Some(5), "{}", text(&out.stderr));
}

#[test]
fn blocked_senders_are_dropped_unread_and_unknown_ids_say_so() {
    let mut bob = Node::init("Bob");
    let mut carol = Node::init("Carol");
    bob.start();
    carol.start();
    carol.add(&bob, "bob");
    carol.send("bob", "buy my course");
    let id = Node::request_id_of(&carol);
    wait_until("carol's request", PATIENCE, || !requests(&bob).is_empty());
    let out = bob.ok(&["requests", "block", &id]);
    assert!(out.contains("Blocked Carol"), "{out}");
    let blocked = bob.ok(&["--json", "contact", "blocked"]);
    assert!(blocked.contains(&id), "{blocked}");

    // Whatever she sends now is taken by Bob's node and dropped: no request, no message.
    let later = carol.send("bob", "are you there?");
    wait_until("her next message taken", PATIENCE, || {
        carol.messages(Some("bob")).iter().any(|m| m["id"] == later.as_str() && m["status"] == "sent")
    });
    assert!(requests(&bob).is_empty());
    assert!(bob.messages(None).is_empty());
    std::thread::sleep(Duration::from_secs(2));
    assert!(carol.messages(Some("bob")).iter().all(|m| m["status"] == "sent"), "no receipt ever");

    // Her invite is refused while she is blocked.
    let invite = carol.invite();
    let out = bob.cli(&["contact", "add", &invite, "--name", "carol"]);
    assert_eq!(out.status.code(), Some(6), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("merpati contact unblock"), "{}", text(&out.stderr));

    // Unknown ids get their own exit codes; nothing changes.
    for (args, code) in [
        (vec!["requests", "accept", "0000000000000000", "--name", "x"], 14),
        (vec!["requests", "reject", "not-an-id"], 14),
        (vec!["contact", "unblock", "0000000000000000"], 16),
        (vec!["contact", "unblock", "not-an-id"], 16),
        (vec!["contact", "rename", "nobody", "x"], 5),
        (vec!["contact", "remove", "nobody"], 5),
    ] {
        let out = bob.cli(&args);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {}", text(&out.stderr));
    }
    assert!(bob.ok(&["--json", "contact", "blocked"]).contains(&id));

    // Unblocked: the old conversation stays dropped; one started anew from Bob's invite is a
    // request again.
    bob.ok(&["contact", "unblock", &id]);
    carol.ok(&["contact", "remove", "bob"]);
    carol.ok(&["contact", "add", &bob.invite(), "--name", "bob"]);
    carol.send("bob", "sorry, wrong person");
    wait_until("carol's request again", PATIENCE, || !requests(&bob).is_empty());
    bob.ok(&["requests", "reject", &id]);
    assert!(requests(&bob).is_empty() && contacts(&bob).is_empty());
}

#[test]
fn a_follower_is_told_of_a_request_and_sees_its_messages_once_accepted() {
    let mut alice = Node::init("Alice");
    let mut bob = Node::init("Bob");
    alice.start();
    bob.start();
    let mut follow = bob.follow(&[]);
    alice.add(&bob, "bob");
    alice.send("bob", "hello from the market");
    let id = Node::request_id_of(&alice);
    follow.wait_for(&format!("Contact request {id} from someone who says they are \"Alice\" (unverified)"));
    bob.ok(&["requests", "accept", &id, "--name", "alice"]);
    follow.wait_for("hello from the market");
}
