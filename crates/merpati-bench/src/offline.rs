//! `offline`: B can be reached only through its mailbox on relay R, while its node is online and
//! long-polling R. Latency from A's `send` until B's node has stored the message (B's `message`
//! notification), one message at a time, p50/p99.
//!
//! How B is made unreachable directly, with nothing but real daemons and their own behaviour:
//! 1. R runs with `max_reservations = 1`, and the bench takes that one reservation itself (a
//!    libp2p node in this process), so B gets no reservation and no circuit leads to it.
//! 2. A and B start on fixed ports, B adds R (`relay.add`), both add each other and exchange a
//!    message each way, so their sessions, relay hints and mailbox ids are set up.
//! 3. Both daemons are restarted on new ports. Each still holds the other's old address (node info
//!    is told when a session starts, and no new session starts), so a direct dial is refused; B
//!    cannot send receipts to A either (A has no relay), so no connection between them ever
//!    comes up to clear A's "unreachable" mark.
//! 4. A warm-up message: A's direct attempt fails and it deposits at R (status `stored`); for 60 s
//!    after a failed direct attempt A goes straight to the relay (the run takes a few seconds).
//!
//! The statuses A publishes are counted to show which path each message took: `stored` is a
//! deposit at B's relay, `sent` would be a direct delivery.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use merpati_control::client::Notifications;
use merpati_control::identity_file::IdentityFile;
use merpati_control::protocol::method::{ContactAdd, Invite, RelayAdd, RelayList, Send};
use merpati_control::protocol::{
    ContactAddParams, Direction, Event, MessageStatus, NoParams, RelayAddParams, SendParams,
};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::util::{self, Daemon, Relay, Unit, free_port, report, round, summary};

pub(crate) fn start_node(exe: &Path, home: &Path, port: u16) -> anyhow::Result<Daemon> {
    let listen = format!("/ip4/127.0.0.1/tcp/{port}");
    Daemon::start(exe, home, &["--listen", &listen, "--no-mdns"])
}

pub(crate) fn create_identity(home: &Path, name: &str) -> anyhow::Result<()> {
    std::fs::create_dir_all(home)?;
    IdentityFile::create(
        &mut merpati_node::daemon::os_rng()?,
        Some(name.to_owned()),
        merpati_node::clock::Clock::system().now(),
    )?
    .save_new(&merpati_control::home::Home::at(home.to_path_buf())?.identity_file())?;
    Ok(())
}

/// Waits for an incoming message whose text is `text` on `events`.
pub(crate) fn wait_message(events: &mut Notifications, text: &str) -> anyhow::Result<Instant> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match events.next_event_until(deadline).with_context(|| format!("waiting for {text:?}"))? {
            Event::Message(view) if view.direction == Direction::In && view.text == text => {
                return Ok(Instant::now());
            }
            _ => {}
        }
    }
}

/// Makes A ("alice") and B ("bob") contacts of each other and exchanges a message each way,
/// so both have their sessions, node addresses and relay hints; returns once the receipts of
/// those two had time to go through.
pub(crate) fn introduce(alice: &Daemon, bob: &Daemon) -> anyhow::Result<()> {
    let bob_invite = bob.client()?.call::<Invite>(NoParams {})?.invite;
    let alice_invite = alice.client()?.call::<Invite>(NoParams {})?.invite;
    alice.client()?.call::<ContactAdd>(ContactAddParams { invite: bob_invite, name: "bob".into() })?;
    bob.client()?.call::<ContactAdd>(ContactAddParams { invite: alice_invite, name: "alice".into() })?;
    let mut b_events = bob.client()?.subscribe()?;
    let mut a_events = alice.client()?.subscribe()?;
    alice.client()?.call::<Send>(SendParams { to: "bob".into(), text: "hello bob".into() })?;
    wait_message(&mut b_events, "hello bob")?;
    bob.client()?.call::<Send>(SendParams { to: "alice".into(), text: "hello alice".into() })?;
    wait_message(&mut a_events, "hello alice")?;
    drop((a_events, b_events));
    std::thread::sleep(Duration::from_millis(500));
    Ok(())
}

pub(crate) fn run(exe: &Path, count: usize) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let relay = Relay::start(exe, &dir.path().join("relay"), "max_reservations = 1\n")?;
    let runtime = util::runtime()?;
    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    // The bench holds R's only reservation.
    let placeholder = runtime.block_on(util::hold_reservation(&relay, &shutdown))?;

    let (a_home, b_home) = (dir.path().join("alice"), dir.path().join("bob"));
    create_identity(&a_home, "Alice")?;
    create_identity(&b_home, "Bob")?;
    let mut alice = start_node(exe, &a_home, free_port()?)?;
    let mut bob = start_node(exe, &b_home, free_port()?)?;
    bob.client()?.call::<RelayAdd>(RelayAddParams { addr: relay.addr.to_string(), offline: false })?;
    introduce(&alice, &bob)?;

    // New ports: neither node can be dialled at the address the other knows.
    drop(alice);
    drop(bob);
    alice = start_node(exe, &a_home, free_port()?)?;
    bob = start_node(exe, &b_home, free_port()?)?;
    let mut b_events = bob.client()?.subscribe()?;

    // A's statuses, recorded in the background: which path did each message take?
    let statuses: Arc<Mutex<HashMap<String, Vec<MessageStatus>>>> = Arc::default();
    {
        let statuses = statuses.clone();
        let mut a_events = alice.client()?.subscribe()?;
        std::thread::spawn(move || {
            while let Ok(event) = a_events.next_event() {
                if let Event::Status(update) = event
                    && let Ok(mut map) = statuses.lock()
                {
                    map.entry(update.id.to_string()).or_default().push(update.status);
                }
            }
        });
    }

    let mut client = alice.client()?;
    let t0 = Instant::now();
    client.call::<Send>(SendParams { to: "bob".into(), text: "warm-up".into() })?;
    let warmup = wait_message(&mut b_events, "warm-up")? - t0;

    let mut ids = Vec::with_capacity(count);
    let mut latencies = Vec::with_capacity(count);
    let started = Instant::now();
    for i in 0..count {
        let text = format!("offline {i} {}", "x".repeat(100));
        let t0 = Instant::now();
        ids.push(client.call::<Send>(SendParams { to: "bob".into(), text: text.clone() })?.id.to_string());
        latencies.push(wait_message(&mut b_events, &text)? - t0);
    }
    let elapsed = started.elapsed();
    std::thread::sleep(Duration::from_millis(300));
    let (mut stored, mut sent, mut delivered, mut other) = (0, 0, 0, 0);
    if let Ok(map) = statuses.lock() {
        for id in &ids {
            let seen = map.get(id).cloned().unwrap_or_default();
            if seen.contains(&MessageStatus::Stored) {
                stored += 1;
            } else if seen.contains(&MessageStatus::Sent) {
                sent += 1;
            } else {
                other += 1;
            }
            if seen.contains(&MessageStatus::Delivered) {
                delivered += 1;
            }
        }
    }
    let bob_relays = bob.client()?.call::<RelayList>(NoParams {})?.relays;
    drop(placeholder);
    report(
        "offline",
        json!({
            "messages": count,
            "text_bytes": 112,
            "what": "A's send until B's node stored it, B reachable only through its mailbox on R (no direct address, no circuit) while long-polling R; one at a time",
        }),
        json!({
            "latency_ms": summary(latencies, Unit::Millis),
            "warmup_ms": round(warmup.as_secs_f64() * 1e3, 1),
            "messages_per_second": round(count as f64 / elapsed.as_secs_f64(), 0),
            "path": {
                "stored_at_relay": stored,
                "sent_directly": sent,
                "no_status_seen": other,
                "delivered_receipts": delivered,
            },
            "bob_relay": bob_relays.first().map(|r| json!({ "connected": r.connected, "reserved": r.reserved })),
        }),
    );
    if sent > 0 {
        eprintln!("offline: {sent} of {count} messages went directly, not through the relay");
    }
    Ok(())
}
