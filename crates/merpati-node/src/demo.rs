//! `merpatid demo`: a throwaway network on 127.0.0.1 that shows Merpati working: a community
//! relay and two people.
//!
//! It starts a relay (this same binary with `--relay`), creates two identities in temporary
//! homes, starts a daemon for each, lets Bob use the relay, exchanges invites, sends messages
//! both ways while following their status to `delivered`, then kills Bob's daemon and writes to
//! him while he is offline: the messages wait at his relay (`stored 1/1`), and when he comes back
//! his node fetches them and Alice sees them `delivered`. Everything goes through the real
//! control API, libp2p over TCP with Noise, and sled on disk.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::bail;
use merpati_control::client::Notifications;
use merpati_control::protocol::method::{ContactAdd, Invite, Messages, RelayAdd, RelayList, Send};
use merpati_control::protocol::{
    ContactAddParams, Event, MessageId, MessageStatus, MessagesParams, NoParams, RelayAddParams, SendParams,
    StatusUpdate,
};

use crate::local::{LocalNode as Person, LocalRelay};

/// How long the demo waits for any one step.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);

fn say(line: impl AsRef<str>) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{}", line.as_ref());
    let _ = out.flush();
}

/// How a status update reads in the demo: `stored 1/1` for a message held by relays.
fn status_text(update: &StatusUpdate) -> String {
    match &update.stored {
        Some(count) => format!("{} {count}", update.status.as_str()),
        None => update.status.as_str().to_owned(),
    }
}

/// Follows the status of message `id` from `from` and prints each step, until it has reached
/// `until`.
fn follow(
    events: &mut Notifications,
    id: &MessageId,
    from: &str,
    until: MessageStatus,
    started: Instant,
) -> anyhow::Result<()> {
    let mut line = format!("      {from}");
    let deadline = started + STEP_TIMEOUT;
    loop {
        if let Event::Status(update) = events.next_event_until(deadline)? {
            if update.id != *id {
                continue;
            }
            line.push_str(&format!(" → {} ({} ms)", status_text(&update), started.elapsed().as_millis()));
            if update.status == MessageStatus::Failed {
                bail!("the message failed: {}", update.reason.unwrap_or_default());
            }
            if update.status.has_reached(until) {
                say(line);
                return Ok(());
            }
        }
    }
}

/// Sends `text` from `from` to contact `to` and prints each status it reaches until `until`.
fn send_and_follow(from: &Person, to: &str, text: &str, until: MessageStatus) -> anyhow::Result<MessageId> {
    let mut events = from.client()?.subscribe()?;
    let started = Instant::now();
    let id = from.client()?.call::<Send>(SendParams { to: to.to_owned(), text: text.to_owned() })?.id;
    say(format!("   {} → {to}: \"{text}\"", from.name));
    follow(&mut events, &id, "queued", until, started)?;
    Ok(id)
}

/// Waits until Bob's relay holds his reservation, so the relay can also pass contacts through.
fn wait_reserved(person: &Person) -> anyhow::Result<()> {
    let deadline = Instant::now() + STEP_TIMEOUT;
    while !person.client()?.call::<RelayList>(NoParams {})?.relays.iter().all(|r| r.reserved) {
        if Instant::now() > deadline {
            bail!("{}'s relay did not accept a reservation in time", person.name);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// Runs the demo; temporary homes are removed at the end unless `keep` names a directory to use.
pub fn run(keep: Option<PathBuf>) -> anyhow::Result<()> {
    let temp = tempfile::tempdir()?;
    let dir = keep.unwrap_or_else(|| temp.path().to_owned());
    say("Merpati demo: a community relay and two people, each with their own node, on this machine");
    say(format!("homes in {}", dir.display()));
    let exe = std::env::current_exe()?;

    say("1. A community relay starts (it keeps encrypted envelopes for people who are offline)");
    let mut relay = LocalRelay::new(&dir.join("relay"), &exe);
    let relay_info = relay.start(0, None)?;
    say(format!("   relay at {}", relay_info.addr));

    say("2. Alice and Bob create identities and start their nodes; Bob uses the relay");
    let mut alice = Person::create("Alice", &dir, &exe)?;
    let mut bob = Person::create("Bob", &dir, &exe)?;
    for person in [&mut alice, &mut bob] {
        let addr = person.start()?;
        say(format!("   {:<5} listening on {addr}", person.name));
    }
    bob.client()?.call::<RelayAdd>(RelayAddParams { addr: relay_info.addr.clone(), offline: false })?;
    wait_reserved(&bob)?;
    say("   Bob: relay added and reserved (his invite now names it)");

    say("3. They exchange invites once (each adds the other)");
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

    say("4. Messages both ways, end-to-end encrypted (NDR1 over libp2p), straight from node to node");
    send_and_follow(&alice, "bob", "Hi Bob! Is the order for Friday still on?", MessageStatus::Delivered)?;
    send_and_follow(&bob, "alice", "Yes: two boxes, as before.", MessageStatus::Delivered)?;
    send_and_follow(&alice, "bob", "Great, see you Friday.", MessageStatus::Delivered)?;

    say("5. Bob goes offline (his node is killed); Alice writes anyway");
    bob.kill();
    let texts = ["Are you there?", "I'll bring the invoice.", "Call me when you're back."];
    let mut ids = Vec::new();
    for text in texts {
        let id = send_and_follow(&alice, "bob", text, MessageStatus::Stored)?;
        ids.push((id, text));
    }
    say("   Bob's relay holds them, encrypted; it cannot read them or tell who wrote them");

    say("6. Bob comes back: his node fetches them from the relay; Alice sees them delivered");
    let mut events = alice.client()?.subscribe()?;
    let back = Instant::now();
    bob.start()?;
    for (id, text) in &ids {
        say(format!("   \"{text}\""));
        follow(&mut events, id, "stored 1/1", MessageStatus::Delivered, back)?;
    }
    say("   nothing lost, nothing twice");

    say("7. Bob's conversation with Alice, from his node's database");
    let messages = bob.client()?.call::<Messages>(MessagesParams {
        group: None,
        with: Some("alice".into()),
        limit: None,
        before: None,
    })?;
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
    relay.kill();
    say("Done.");
    Ok(())
}
