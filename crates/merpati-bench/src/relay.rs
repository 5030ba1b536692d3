//! `relay-deposit` and `relay-fetch`: one community relay (`merpatid --relay` on 127.0.0.1, with
//! its request rates raised so the bench is not throttled), driven by libp2p clients in this
//! process through the real mailbox protocol (`merpati_node::net`, `/merpati/mailbox/2`).
//!
//! * `relay-deposit`: S concurrent senders (one libp2p node each, W requests outstanding each)
//!   deposit N envelopes of 1 KiB (valid envelopes addressed to the deposit's mailbox, random
//!   ciphertext) spread over M mailboxes, each waiting for `Stored` (durable). Deposits per
//!   second, latency p50/p99, the relay's CPU seconds, peak RSS (`VmHWM`), and disk bytes per
//!   envelope (the files under the relay's `mailboxes` directory after the run, divided by N).
//! * `relay-fetch`: then the M owners (M concurrent tasks over the S client nodes, each with its
//!   mailbox's fetch token) fetch everything (a full page at a time) and delete what they fetched.
//!   Envelopes per second, latency of fetch+delete rounds, CPU, disk after.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use merpati_node::net::Handle;
use merpati_proto::envelope::{Envelope, Header, Kind, VERSION};
use merpati_proto::keys::SymmetricKey;
use merpati_proto::mailbox::{FetchToken, MailboxId, MailboxKey};
use merpati_proto::wire::MAX_FETCH_LIMIT;
use merpati_proto::wire::mailbox::{Request, Response};
use rand_chacha::ChaCha20Rng;
use rand_core::{Rng as _, SeedableRng};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::util::{
    self, Relay, Unit, cpu_seconds, dir_bytes, mib, peak_rss_kib, report, round, rss_kib, summary,
};

/// The size of every deposited envelope: the 1 KiB bucket.
pub(crate) const ENVELOPE_LEN: usize = 1024;

/// Sizes of the run.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Params {
    pub(crate) senders: usize,
    /// Deposits each sender keeps in flight.
    pub(crate) window: usize,
    pub(crate) envelopes: usize,
    pub(crate) mailboxes: usize,
}

/// A valid 1 KiB session envelope for `mailbox`, with random ciphertext.
pub(crate) fn envelope(mailbox: MailboxId, n: u32, rng: &mut ChaCha20Rng) -> Vec<u8> {
    let header = Header {
        version: VERSION,
        kind: Kind::Session,
        mailbox,
        epoch: 1,
        sub_epoch: n / 64,
        index: (n % 64) as u8,
    };
    // Header, the two-byte open length (no open), then ciphertext up to the bucket.
    let mut ciphertext = vec![0u8; ENVELOPE_LEN - merpati_proto::envelope::HEADER_LEN - 2];
    rng.fill_bytes(&mut ciphertext);
    let envelope = Envelope { header, open: None, ciphertext };
    debug_assert_eq!(envelope.encoded_len(), ENVELOPE_LEN);
    envelope.encode()
}

struct Owner {
    token: FetchToken,
    mailbox: MailboxId,
}

pub(crate) fn run(exe: &Path, params: Params, deposit: bool, fetch: bool) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let relay = Relay::start(exe, &dir.path().join("relay"), "")?;
    util::runtime()?.block_on(async_run(&relay, params, deposit, fetch))
}

async fn async_run(
    relay: &Relay,
    params: Params,
    print_deposit: bool,
    print_fetch: bool,
) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    let mut rng = ChaCha20Rng::seed_from_u64(7);
    let owners: Arc<Vec<Owner>> = Arc::new(
        (0..params.mailboxes)
            .map(|_| {
                let key = MailboxKey::derive(&SymmetricKey::generate(&mut rng), 20_000);
                Owner { mailbox: key.id(), token: key.token(&relay.peer.to_bytes()) }
            })
            .collect(),
    );
    let mut clients = Vec::new();
    for _ in 0..params.senders {
        clients.push(util::client_net(&shutdown).await?);
    }
    // Connect every client (an empty fetch) so connection set-up is not measured.
    for client in &clients {
        let answer = client
            .mailbox(
                relay.peer,
                vec![relay.addr.clone()],
                Request::Fetch { tokens: vec![owners[0].token.clone()], after: None, limit: 1, wait_ms: 0 },
            )
            .await?;
        if !matches!(answer, Response::Envelopes { .. }) {
            bail!("the relay answered a fetch with {answer:?}");
        }
    }
    let pid = relay.pid();
    let rss_before = rss_kib(pid)?;

    // Deposits.
    let cpu0 = cpu_seconds(pid)?;
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    // S senders with W lanes each; a lane deposits one envelope at a time and waits for `Stored`.
    let lanes = params.senders * params.window;
    for lane in 0..lanes {
        let s = lane;
        let client = clients[lane % clients.len()].clone();
        let owners = owners.clone();
        let relay_peer = relay.peer;
        let relay_addr = relay.addr.clone();
        let mut rng = ChaCha20Rng::seed_from_u64(100 + s as u64);
        tasks.spawn(async move {
            let mut latencies = Vec::new();
            for n in (s..params.envelopes).step_by(lanes) {
                let owner = &owners[n % owners.len()];
                let envelope = envelope(owner.mailbox, (n / owners.len()) as u32, &mut rng);
                let t0 = Instant::now();
                let answer = client
                    .mailbox(
                        relay_peer,
                        vec![relay_addr.clone()],
                        Request::Deposit { mailbox: owner.mailbox, envelope },
                    )
                    .await?;
                latencies.push(t0.elapsed());
                if !matches!(answer, Response::Stored { .. }) {
                    bail!("deposit {n} answered {answer:?}");
                }
            }
            Ok::<_, anyhow::Error>(latencies)
        });
    }
    let mut latencies = Vec::with_capacity(params.envelopes);
    while let Some(done) = tasks.join_next().await {
        latencies.extend(done??);
    }
    let elapsed = started.elapsed();
    let cpu = cpu_seconds(pid)? - cpu0;
    let disk = dir_bytes(&relay.mailboxes_dir());
    let peak = peak_rss_kib(pid)?;
    if print_deposit {
        report(
            "relay-deposit",
            json!({
                "senders": params.senders,
                "window_per_sender": params.window,
                "envelopes": params.envelopes,
                "mailboxes": params.mailboxes,
                "envelope_bytes": ENVELOPE_LEN,
                "what": "each sender keeps `window_per_sender` deposits outstanding, each waiting for Stored (durable on disk)",
            }),
            json!({
                "deposits_per_second": round(params.envelopes as f64 / elapsed.as_secs_f64(), 0),
                "latency_ms": summary(latencies, Unit::Millis),
                "seconds": round(elapsed.as_secs_f64(), 2),
                "relay_cpu_seconds": round(cpu, 2),
                "relay_rss_before_mib": mib(rss_before),
                "relay_rss_after_mib": mib(rss_kib(pid)?),
                "relay_peak_rss_mib": mib(peak),
                "relay_disk_bytes": disk,
                "relay_disk_bytes_per_envelope": round(disk as f64 / params.envelopes as f64, 0),
                "relay_disk_per_envelope_byte": round(disk as f64 / (params.envelopes * ENVELOPE_LEN) as f64, 2),
            }),
        );
    }
    if !print_fetch {
        return Ok(());
    }

    // Fetch and delete: one task per owner, spread over the client nodes.
    let cpu0 = cpu_seconds(pid)?;
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for m in 0..owners.len() {
        let client: Handle = clients[m % clients.len()].clone();
        let owners = owners.clone();
        let relay_peer = relay.peer;
        let relay_addr = relay.addr.clone();
        tasks.spawn(async move {
            let owner = &owners[m];
            let mut fetched = 0usize;
            let mut rounds = Vec::new();
            loop {
                let t0 = Instant::now();
                let fetch = Request::Fetch {
                    tokens: vec![owner.token.clone()],
                    after: None,
                    limit: MAX_FETCH_LIMIT,
                    wait_ms: 0,
                };
                let answer = client.mailbox(relay_peer, vec![relay_addr.clone()], fetch).await?;
                let Response::Envelopes { items, more } = answer else { bail!("fetch answered {answer:?}") };
                if items.is_empty() {
                    break;
                }
                fetched += items.len();
                let ids = items.iter().map(|item| item.id).collect();
                let delete = Request::Delete { token: owner.token.clone(), ids };
                let answer = client.mailbox(relay_peer, vec![relay_addr.clone()], delete).await?;
                if !matches!(answer, Response::Deleted { .. }) {
                    bail!("delete answered {answer:?}");
                }
                rounds.push(t0.elapsed());
                if !more {
                    break;
                }
            }
            Ok::<_, anyhow::Error>((fetched, rounds))
        });
    }
    let mut fetched = 0;
    let mut rounds = Vec::new();
    while let Some(done) = tasks.join_next().await {
        let (n, r) = done??;
        fetched += n;
        rounds.extend(r);
    }
    let elapsed = started.elapsed();
    let cpu = cpu_seconds(pid)? - cpu0;
    if fetched != params.envelopes {
        bail!("fetched {fetched} envelopes of {}", params.envelopes);
    }
    // Give the relay a moment to flush deletions before looking at the disk.
    tokio::time::sleep(Duration::from_millis(200)).await;
    report(
        "relay-fetch",
        json!({
            "owners": owners.len(),
            "client_nodes": clients.len(),
            "envelopes": params.envelopes,
            "fetch_limit": MAX_FETCH_LIMIT,
            "what": "each owner fetches a page of up to 64 with its token, deletes those ids, until empty",
        }),
        json!({
            "envelopes_per_second": round(fetched as f64 / elapsed.as_secs_f64(), 0),
            "fetch_delete_round_ms": summary(rounds, Unit::Millis),
            "seconds": round(elapsed.as_secs_f64(), 2),
            "relay_cpu_seconds": round(cpu, 2),
            "relay_rss_after_mib": mib(rss_kib(pid)?),
            "relay_peak_rss_mib": mib(peak_rss_kib(pid)?),
            "relay_disk_bytes_after": dir_bytes(&relay.mailboxes_dir()),
        }),
    );
    Ok(())
}
