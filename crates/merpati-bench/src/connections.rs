//! `connections`: a relay holding C idle user connections. C libp2p nodes in this process (the
//! user node's own network stack, `merpati_node::net`, with no listener) each connect to the relay
//! (TCP, Noise, yamux, identify) and make one empty mailbox fetch, then stay idle. Relay RSS per
//! connection ((RSS after − RSS before) / C) and the time to accept them all.
//!
//! They hold plain connections, not relay reservations: libp2p's relay server allows 60
//! reservations per source IP per minute, and every client here is 127.0.0.1. At most 32 dials
//! are under way at once (the relay accepts 64 connections being set up at a time). The relay
//! closes a connection with no open stream after 60 s, so the figures are taken as soon as the
//! last one is up.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::bail;
use merpati_proto::keys::SymmetricKey;
use merpati_proto::mailbox::MailboxKey;
use merpati_proto::wire::mailbox::{Request, Response};
use serde_json::json;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::util::{self, Relay, Unit, cpu_seconds, mib, raise_nofile, report, round, rss_kib, summary};

const DIALS_AT_ONCE: usize = 32;

pub(crate) fn run(exe: &Path, count: usize) -> anyhow::Result<()> {
    let nofile = raise_nofile();
    let dir = tempfile::tempdir()?;
    let relay = Relay::start(exe, &dir.path().join("relay"), "")?;
    let runtime = util::runtime()?;
    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    runtime.block_on(async {
        let mut clients = Vec::with_capacity(count);
        for _ in 0..count {
            clients.push(util::client_net(&shutdown).await?);
        }
        // One connection first, so the relay's one-off start-up allocations are not counted.
        let warm = util::client_net(&shutdown).await?;
        let token = MailboxKey::derive(&SymmetricKey::from_bytes([1; 32]), 0).token(&relay.peer.to_bytes());
        let fetch = move || Request::Fetch { tokens: vec![token.clone()], after: None, limit: 1, wait_ms: 0 };
        warm.mailbox(relay.peer, vec![relay.addr.clone()], fetch()).await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let pid = relay.pid();
        let rss_before = rss_kib(pid)?;
        let cpu0 = cpu_seconds(pid)?;

        let permits = std::sync::Arc::new(Semaphore::new(DIALS_AT_ONCE));
        let started = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for client in &clients {
            let client = client.clone();
            let permits = permits.clone();
            let (peer, addr, fetch) = (relay.peer, relay.addr.clone(), fetch.clone());
            tasks.spawn(async move {
                let _permit = permits.acquire_owned().await?;
                let t0 = Instant::now();
                let answer = client.mailbox(peer, vec![addr], fetch()).await?;
                if !matches!(answer, Response::Envelopes { .. }) {
                    bail!("the relay answered {answer:?}");
                }
                Ok::<_, anyhow::Error>(t0.elapsed())
            });
        }
        let mut setups = Vec::with_capacity(count);
        let mut failures = 0usize;
        let mut first_error = None;
        while let Some(done) = tasks.join_next().await {
            match done? {
                Ok(t) => setups.push(t),
                Err(e) => {
                    failures += 1;
                    first_error.get_or_insert(e.to_string());
                }
            }
        }
        let elapsed = started.elapsed();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let rss_after = rss_kib(pid)?;
        let cpu = cpu_seconds(pid)? - cpu0;
        let mut connected = 0;
        for client in &clients {
            if client.connected_peers().await.contains(&relay.peer) {
                connected += 1;
            }
        }
        let bench_rss = rss_kib(std::process::id())?;
        report(
            "connections",
            json!({
                "connections": count,
                "dials_at_once": DIALS_AT_ONCE,
                "open_files_limit": nofile,
                "what": "C client nodes in the bench process each connect to the relay and make one empty fetch, then idle",
            }),
            json!({
                "accept_all_seconds": round(elapsed.as_secs_f64(), 2),
                "connections_per_second": round(setups.len() as f64 / elapsed.as_secs_f64(), 0),
                "connect_and_fetch_ms": summary(setups, Unit::Millis),
                "failures": failures,
                "first_error": first_error,
                "still_connected": connected,
                "relay_rss_before_mib": mib(rss_before),
                "relay_rss_after_mib": mib(rss_after),
                "relay_kib_per_connection": round(rss_after.saturating_sub(rss_before) as f64 / count as f64, 1),
                "relay_cpu_seconds": round(cpu, 2),
                "bench_process_rss_mib": mib(bench_rss),
            }),
        );
        drop(warm);
        Ok(())
    })
}
