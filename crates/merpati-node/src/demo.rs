//! `merpatid demo`: a throwaway two-person network on 127.0.0.1 that shows Merpati working.
//!
//! It creates two identities in temporary homes, starts a daemon for each (this same binary),
//! exchanges invites, sends messages both ways while following their status to `delivered`, then
//! kills one daemon, writes to it while it is down, restarts it and shows that nothing was lost.
//! Everything goes through the real control API, libp2p over TCP with Noise, and sled on disk.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::bail;
use merpati_control::protocol::method::{ContactAdd, Invite, Messages, Send, Status};
use merpati_control::protocol::{
    ContactAddParams, Event, MessageStatus, MessagesParams, NoParams, SendParams,
};

use crate::local::LocalNode as Person;

/// How long the demo waits for any one step.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);

fn say(line: impl AsRef<str>) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{}", line.as_ref());
    let _ = out.flush();
}

/// Sends `text` from `from` to contact `to` and prints each status it reaches until delivered.
fn send_and_follow(from: &Person, to: &str, text: &str) -> anyhow::Result<()> {
    let mut events = from.client()?.subscribe()?;
    let started = Instant::now();
    let id = from.client()?.call::<Send>(SendParams { to: to.to_owned(), text: text.to_owned() })?.id;
    say(format!("   {} → {to}: \"{text}\"", from.name));
    let mut line = String::from("      queued");
    let deadline = started + STEP_TIMEOUT;
    loop {
        match events.next_event_until(deadline)? {
            Event::Status(update) if update.id == id => {
                line.push_str(&format!(
                    " → {} ({} ms)",
                    update.status.as_str(),
                    started.elapsed().as_millis()
                ));
                if update.status == MessageStatus::Failed {
                    bail!("the message failed: {}", update.reason.unwrap_or_default());
                }
                if update.status.has_reached(MessageStatus::Delivered) {
                    say(line);
                    return Ok(());
                }
            }
            _ => {}
        }
    }
}

fn wait_delivered(person: &Person, contact: &str, count: usize) -> anyhow::Result<()> {
    let deadline = Instant::now() + STEP_TIMEOUT;
    loop {
        let messages = person
            .client()?
            .call::<Messages>(MessagesParams { with: Some(contact.to_owned()), limit: None })?;
        let out: Vec<_> = messages.messages.iter().filter(|m| m.status.is_some()).collect();
        if out.len() >= count
            && out.iter().all(|m| m.status.is_some_and(|s| s.has_reached(MessageStatus::Delivered)))
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("messages to {contact} were not delivered in time");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Runs the demo; temporary homes are removed at the end unless `keep` names a directory to use.
pub fn run(keep: Option<PathBuf>) -> anyhow::Result<()> {
    let temp = tempfile::tempdir()?;
    let dir = keep.unwrap_or_else(|| temp.path().to_owned());
    say("Merpati demo: two people, each with their own node, on this machine (127.0.0.1)");
    say(format!("homes in {}", dir.display()));

    say("1. Alice and Bob create identities and start their nodes");
    let exe = std::env::current_exe()?;
    let mut alice = Person::create("Alice", &dir, &exe)?;
    let mut bob = Person::create("Bob", &dir, &exe)?;
    for person in [&mut alice, &mut bob] {
        let addr = person.start()?;
        say(format!("   {:<5} listening on {addr}", person.name));
    }

    say("2. They exchange invites once (each adds the other)");
    let bob_invite = bob.client()?.call::<Invite>(NoParams {})?.invite;
    let alice_invite = alice.client()?.call::<Invite>(NoParams {})?.invite;
    say(format!(
        "   Bob's invite: {}…  ({} characters)",
        &bob_invite[..32.min(bob_invite.len())],
        bob_invite.len()
    ));
    let added =
        alice.client()?.call::<ContactAdd>(ContactAddParams { invite: bob_invite, name: "bob".into() })?;
    bob.client()?.call::<ContactAdd>(ContactAddParams { invite: alice_invite, name: "alice".into() })?;
    say(format!("   safety number (both see the same): {}", added.safety_number));

    say("3. Messages both ways, end-to-end encrypted (NDR1 over libp2p)");
    send_and_follow(&alice, "bob", "Hi Bob! Is the order for Friday still on?")?;
    send_and_follow(&bob, "alice", "Yes: two boxes, as before.")?;
    send_and_follow(&alice, "bob", "Great, see you Friday.")?;

    say("4. Bob's node crashes (kill -9); Alice writes while it is down");
    bob.kill();
    let texts = ["Are you there?", "I'll bring the invoice.", "Call me when you're back."];
    for text in texts {
        alice.client()?.call::<Send>(SendParams { to: "bob".into(), text: text.into() })?;
        say(format!("   Alice → bob: \"{text}\" (queued in Alice's outbox)"));
    }
    let status = alice.client()?.call::<Status>(NoParams {})?;
    say(format!("   Alice's outbox: {} waiting", status.outbox));
    bob.start()?;
    say("   Bob's node is back");
    wait_delivered(&alice, "bob", 5)?;
    say("   all of Alice's messages delivered; nothing lost, nothing twice");

    say("5. Bob's conversation with Alice, from his node's database");
    let messages =
        bob.client()?.call::<Messages>(MessagesParams { with: Some("alice".into()), limit: None })?;
    for m in &messages.messages {
        let who = if m.status.is_some() { "Bob  " } else { "Alice" };
        say(format!("   {who}  {}", m.text));
    }
    let received = messages.messages.iter().filter(|m| m.status.is_none()).count();
    if received != 5 {
        bail!("Bob should have 5 messages from Alice, has {received}");
    }
    alice.kill();
    bob.kill();
    say("Done.");
    Ok(())
}
