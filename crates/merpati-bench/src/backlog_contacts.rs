//! `backlog-contacts`: a backlog spread over many contacts. A has C [1 000] contacts, all offline
//! with one relay R, and queues M [20] texts for each (one `send` at a time, round-robin) while
//! its node deposits them at R as they come. Reports how long the sends took, when R had taken
//! every text (the rate over the whole run, and how long after the last send), and A's RSS idle
//! and at its peak.
//!
//! R stays up: with R down, each contact's queue would wait out its own backoff once R is back,
//! and the figure would measure the backoff, not the node.
//!
//! The contacts are engines in this process with in-memory stores: each only makes the invite
//! A adds (naming R as its relay, and a node that never comes up). A's daemon and R are real.

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use merpati_control::protocol::method::{ContactAdd, Send};
use merpati_control::protocol::{ContactAddParams, Event, MessageStatus, SendParams};
use merpati_node::clock::Clock;
use serde_json::json;

use crate::offline::{create_identity, start_node};
use crate::util::{Relay, contact_engine, free_port, mib, peak_rss_kib, report, round, rss_kib};

pub(crate) fn run(exe: &Path, contacts: usize, per_contact: usize) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let relay_home = dir.path().join("relay");
    let relay = Relay::start(exe, &relay_home, "")?;
    let a_home = dir.path().join("alice");
    create_identity(&a_home, "Alice")?;
    let alice = start_node(exe, &a_home, free_port()?)?;
    let mut client = alice.client()?;
    let now = Clock::system().now();
    let relay_addr = relay.addr.to_vec();
    let names: Vec<String> = (0..contacts).map(|i| format!("c{i:04}")).collect();
    for name in &names {
        let mut contact = contact_engine(name, now)?;
        contact.add_relay(&relay_addr, now)?;
        let invite = contact.invite(libp2p::PeerId::random().to_bytes(), Vec::new(), now)?;
        client.call::<ContactAdd>(ContactAddParams { invite, name: name.clone() })?;
    }

    // Which texts R took, from A's status notifications, read as they come (polling `status`
    // would cost A a scan of every contact each time).
    let mut events = alice.client()?.subscribe()?;
    // Room for every `stored` notification twice over: the reader never waits for the bench.
    let (stored_tx, stored_rx) = std::sync::mpsc::sync_channel(2 * contacts * per_contact + 1024);
    std::thread::spawn(move || {
        while let Ok(event) = events.next_event() {
            if let Event::Status(update) = event
                && update.status == MessageStatus::Stored
                && stored_tx.send(update.id.to_string()).is_err()
            {
                return;
            }
        }
    });
    let idle_kib = rss_kib(alice.pid())?;
    let started = Instant::now();
    let mut sent = HashSet::with_capacity(contacts * per_contact);
    for round in 0..per_contact {
        for name in &names {
            let text = format!("backlog {round} {}", "x".repeat(100));
            sent.insert(client.call::<Send>(SendParams { to: name.clone(), text })?.id.to_string());
        }
    }
    let queuing = started.elapsed();
    let mut stored = HashSet::with_capacity(sent.len());
    while stored.len() < sent.len() {
        let id = stored_rx.recv_timeout(Duration::from_secs(60)).with_context(|| {
            format!("waiting for deposits: {} of {} stored at R", stored.len(), sent.len())
        })?;
        if sent.contains(&id) {
            stored.insert(id);
        }
    }
    let drained = started.elapsed();
    let envelopes = sent.len();
    report(
        "backlog-contacts",
        json!({
            "contacts": contacts,
            "messages_per_contact": per_contact,
            "text_bytes": 110,
            "what": "A's C contacts are offline with relay R; A queues M texts for each, round-robin, and deposits them at R as they come",
        }),
        json!({
            "queuing_seconds": round(queuing.as_secs_f64(), 2),
            "all_stored_after_last_send_seconds": round((drained - queuing).as_secs_f64(), 2),
            "texts_deposited_per_second": round(envelopes as f64 / drained.as_secs_f64().max(1e-9), 0),
            "sender_rss_mib": {
                "idle": mib(idle_kib),
                "peak": mib(peak_rss_kib(alice.pid())?),
            },
            "relay_peak_rss_mib": mib(peak_rss_kib(relay.pid())?),
        }),
    );
    Ok(())
}
