//! `many-contacts`: a node with C [1 000] contacts and M [100] messages from each (100 000
//! stored). The bench writes that history into A's database in process, through the engine and
//! the real disk store (each contact is an engine of its own that sends M texts, which A
//! receives in batches as the daemon would), then starts A's daemon on it. Reports the start
//! time (spawn until the ready line), `messages --limit 1000` across all conversations and with
//! one contact (p50/p99 over 20 calls each), `status` (5 calls), and A's RSS a few idle seconds after its start and
//! again after those calls.
//!
//! A's outbox (the receipts for those messages, to nodes that do not exist) is emptied before
//! the daemon starts, so the figures are about history, not delivery attempts.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use merpati_control::home::Home;
use merpati_control::identity_file::IdentityFile;
use merpati_control::protocol::method::{ContactList, Messages, Status as StatusCall};
use merpati_control::protocol::{MessagesParams, NoParams};
use merpati_node::clock::Clock;
use merpati_node::daemon::os_rng;
use merpati_node::engine::{Engine, Me};
use merpati_node::store::{Change, Keyring, SledStore, Store};
use serde_json::json;

use crate::offline::{create_identity, start_node};
use crate::util::{Unit, contact_engine, free_port, mib, node_key, report, round, rss_kib, summary};

pub(crate) struct Params {
    pub(crate) contacts: usize,
    pub(crate) per_contact: usize,
    pub(crate) idle: Duration,
}

pub(crate) fn run(exe: &Path, params: &Params) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let home = dir.path().join("alice");
    create_identity(&home, "Alice")?;
    let seeding = Instant::now();
    let stored = seed(&home, params)?;
    let seeding = seeding.elapsed();

    // Started three times: the first start also runs the maintenance pass over every session.
    let port = free_port()?;
    let mut starts = Vec::new();
    let mut alice = None;
    for _ in 0..3 {
        drop(alice.take());
        let t0 = Instant::now();
        alice = Some(start_node(exe, &home, port)?);
        starts.push(t0.elapsed());
    }
    let alice = alice.context("no daemon")?;
    std::thread::sleep(params.idle);
    let started_kib = rss_kib(alice.pid())?;
    let mut client = alice.client()?;
    let some_contact = client
        .call::<ContactList>(NoParams {})?
        .contacts
        .first()
        .map(|c| c.name.clone())
        .context("no contacts")?;
    let mut timed = |with: Option<String>| -> anyhow::Result<(Vec<Duration>, usize)> {
        let mut samples = Vec::new();
        let mut got = 0;
        for _ in 0..20 {
            let t0 = Instant::now();
            let answer = client.call::<Messages>(MessagesParams {
                group: None,
                with: with.clone(),
                limit: Some(1000),
                before: None,
            })?;
            samples.push(t0.elapsed());
            got = answer.messages.len();
        }
        Ok((samples, got))
    };
    let (all, all_len) = timed(None)?;
    let (one, one_len) = timed(Some(some_contact))?;
    let mut status = Vec::new();
    for _ in 0..5 {
        let t0 = Instant::now();
        client.call::<StatusCall>(NoParams {})?;
        status.push(t0.elapsed());
    }
    std::thread::sleep(params.idle);
    let idle_kib = rss_kib(alice.pid())?;
    report(
        "many-contacts",
        json!({
            "contacts": params.contacts,
            "messages_per_contact": params.per_contact,
            "what": "A's database holds C contacts with M incoming messages each (written in process through the engine and the disk store); A's daemon is started on it three times",
        }),
        json!({
            "stored_messages": stored,
            "seeding_seconds": round(seeding.as_secs_f64(), 1),
            "start_ms": starts.iter().map(|d| round(d.as_secs_f64() * 1e3, 0)).collect::<Vec<_>>(),
            "messages_limit_1000_ms": {
                "all_conversations": summary(all, Unit::Millis),
                "one_contact": summary(one, Unit::Millis),
                "returned": [all_len, one_len],
            },
            "status_ms": summary(status, Unit::Millis),
            "rss_mib": { "started_idle": mib(started_kib), "after_reading_idle": mib(idle_kib) },
            "idle_seconds": params.idle.as_secs(),
        }),
    );
    Ok(())
}

/// Writes the contacts and their messages into the database at `home`; returns how many
/// messages it holds.
fn seed(home: &Path, params: &Params) -> anyhow::Result<usize> {
    let home = Home::at(home.to_path_buf())?;
    let identity = IdentityFile::load(&home.identity_file())?;
    let now = Clock::system().now();
    let me = Me::from(identity);
    let db = home.database_dir();
    std::fs::create_dir_all(&db)?;
    let keyring = Keyring::open_or_create(SledStore::key_file(&db), &mut os_rng()?)?;
    let store = SledStore::open(&db, keyring)?;
    let mut alice = Engine::start(store, me, node_key, now, os_rng()?)?;
    let invite = alice.invite(libp2p::PeerId::random().to_bytes(), Vec::new(), now)?;
    for i in 0..params.contacts {
        let mut contact = contact_engine(&format!("Contact {i}"), now)?;
        contact.add_contact(&invite, "alice", now)?;
        // A holds their invite too: their first contacts open at once instead of waiting as
        // contact requests.
        let theirs = contact.invite(libp2p::PeerId::random().to_bytes(), Vec::new(), now)?;
        alice.add_contact(&theirs, &format!("contact {i}"), now)?;
        let texts: Vec<String> = (0..params.per_contact)
            .map(|n| format!("message {n} from contact {i} {}", "x".repeat(80)))
            .collect();
        let sends: Vec<(&str, &str)> = texts.iter().map(|t| ("alice", t.as_str())).collect();
        for result in contact.send_texts(&sends, now) {
            result?;
        }
        let peer = libp2p::PeerId::random().to_bytes();
        // Controls first, then the texts, in batches as the network brings them.
        let envelopes: Vec<Vec<u8>> = contact.store().outbox()?.into_iter().map(|e| e.envelope).collect();
        for batch in envelopes.chunks(merpati_proto::wire::MAX_BATCH_ENVELOPES) {
            alice.receive_batch(Some(&peer), batch, now)?;
        }
    }
    let receipts: Vec<Change> =
        alice.store().outbox()?.into_iter().map(|entry| Change::RemoveOutbox(entry.id)).collect();
    for chunk in receipts.chunks(1000) {
        alice.store().apply(chunk)?;
    }
    Ok(alice.store().messages(None, usize::MAX)?.len())
}
