//! Measures the relay's mailbox store on this machine: durable deposits from 8 concurrent tasks
//! into 100 mailboxes (20 000 envelopes of 1 KiB, each deposit waiting for its flush), then fetch
//! and delete of everything, mailbox by mailbox. Prints one JSON object.
//!
//! `cargo run --release -p merpati-node --example relay_mailboxes [-- <dir>]` (default: a temporary
//! directory, removed afterwards).
#![allow(clippy::print_stdout, reason = "the example's output is its report")]

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use merpati_node::relay::{Depositor, MailboxLimits, Mailboxes};
use merpati_proto::Timestamp;
use merpati_proto::envelope::{Envelope, Header, Kind, VERSION};
use merpati_proto::mailbox::MailboxId;
use merpati_proto::wire::MAX_FETCH_LIMIT;

const TASKS: usize = 8;
const MAILBOXES: usize = 100;
const ENVELOPES: usize = 20_000;
const ENVELOPE_LEN: usize = 1024;
/// Bytes of an encoded envelope that are not ciphertext (header and the open length).
const FIXED_LEN: usize = merpati_proto::envelope::HEADER_LEN + 2;

/// The `n`th mailbox. The store behind the relay's token check works on ids.
fn mailbox(n: usize) -> MailboxId {
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&(n as u64).to_be_bytes());
    bytes[8] = 0x5E;
    MailboxId(bytes)
}

/// A session envelope of exactly `ENVELOPE_LEN` bytes whose ciphertext looks random (xorshift), so
/// nothing in the store can profit from it being compressible.
fn envelope(mailbox: MailboxId, seq: u64) -> Vec<u8> {
    let mut state = seq.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let ciphertext = (0..ENVELOPE_LEN - FIXED_LEN)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    let header = Header {
        version: VERSION,
        kind: Kind::Session,
        mailbox,
        epoch: 1,
        sub_epoch: (seq / 64) as u32,
        index: (seq % 64) as u8,
    };
    Envelope { header, open: None, ciphertext }.encode()
}

fn dir_bytes(dir: &Path) -> anyhow::Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let entry = entry?;
        let meta = entry.metadata()?;
        total += if meta.is_dir() { dir_bytes(&entry.path())? } else { meta.len() };
    }
    Ok(total)
}

fn vm_hwm_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let at = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[at].as_secs_f64() * 1000.0
}

fn main() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let temp = tempfile::tempdir()?;
    let dir = std::env::args().nth(1).map_or_else(|| temp.path().join("relay"), Into::into);
    runtime.block_on(run(&dir))
}

async fn run(dir: &Path) -> anyhow::Result<()> {
    let mailboxes = Mailboxes::open(dir, MailboxLimits::default())?;
    let now = Timestamp(1_700_000_000_000);
    let ids: Vec<MailboxId> = (0..MAILBOXES).map(mailbox).collect();

    // Envelopes are made as they are deposited (about a microsecond each): building all 20 MiB
    // first would count them in the peak RSS.
    let per_task = ENVELOPES / TASKS;
    let flushes_before = mailboxes.flushes();
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..TASKS {
        let mailboxes = mailboxes.clone();
        let ids = ids.clone();
        // Each task a depositor of its own network, as eight senders would be.
        let depositor = Depositor::new(&libp2p::PeerId::random(), Some([192, 0, 2, task as u8].into()));
        tasks.spawn(async move {
            let mut latencies = Vec::with_capacity(per_task);
            for i in 0..per_task {
                let seq = (task * per_task + i) as u64;
                let mailbox = ids[(seq as usize) % MAILBOXES];
                let bytes = envelope(mailbox, seq);
                let t = Instant::now();
                mailboxes
                    .deposit(mailbox, bytes, depositor, now)
                    .await
                    .map_err(|r| anyhow::anyhow!("deposit refused: {r}"))?;
                latencies.push(t.elapsed());
            }
            anyhow::Ok(latencies)
        });
    }
    let mut latencies = Vec::with_capacity(ENVELOPES);
    while let Some(done) = tasks.join_next().await {
        latencies.extend(done??);
    }
    let deposit_secs = started.elapsed().as_secs_f64();
    let flushes = mailboxes.flushes() - flushes_before;
    latencies.sort_unstable();
    let stats = mailboxes.stats();
    let disk_full = dir_bytes(dir)?;

    let started = Instant::now();
    let mut fetched = 0usize;
    let mut fetch_secs = 0.0;
    for owned in &ids {
        let mut after = None;
        loop {
            let t = Instant::now();
            let (items, more) = mailboxes
                .fetch(std::slice::from_ref(owned), after, MAX_FETCH_LIMIT, None, now)
                .map_err(|r| anyhow::anyhow!("fetch refused: {r}"))?;
            fetch_secs += t.elapsed().as_secs_f64();
            fetched += items.len();
            let Some(last) = items.last() else { break };
            after = Some(last.id);
            let ids: Vec<u64> = items.iter().map(|e| e.id).collect();
            mailboxes.delete(owned, &ids).map_err(|r| anyhow::anyhow!("delete refused: {r}"))?;
            if !more {
                break;
            }
        }
    }
    mailboxes.flush().await.map_err(|r| anyhow::anyhow!("flush failed: {r}"))?;
    let drain_secs = started.elapsed().as_secs_f64();
    if fetched != ENVELOPES {
        bail!("fetched {fetched} envelopes, deposited {ENVELOPES}");
    }
    let disk_drained = dir_bytes(dir)?;
    let envelope_bytes = (ENVELOPES * ENVELOPE_LEN) as f64;

    let report = serde_json::json!({
        "envelopes": ENVELOPES,
        "envelope_len": ENVELOPE_LEN,
        "tasks": TASKS,
        "mailboxes": MAILBOXES,
        "deposits_per_s": (ENVELOPES as f64 / deposit_secs).round(),
        "deposit_latency_ms": { "p50": percentile(&latencies, 0.50), "p99": percentile(&latencies, 0.99) },
        "flushes": flushes,
        "deposits_per_flush": ENVELOPES as f64 / flushes.max(1) as f64,
        "fetched_per_s": (fetched as f64 / fetch_secs).round(),
        "fetched_and_deleted_per_s": (fetched as f64 / drain_secs).round(),
        "stored_envelope_bytes": stats.bytes,
        "disk_bytes_full": disk_full,
        "disk_bytes_per_envelope": disk_full as f64 / ENVELOPES as f64,
        "disk_over_envelope_bytes": disk_full as f64 / envelope_bytes,
        "disk_bytes_after_delete": disk_drained,
        "peak_rss_kib": vm_hwm_kib(),
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}
