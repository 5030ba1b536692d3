//! The `abuse` scenario's user-node part: strangers flooding a person's node with first contacts.
//!
//! B's invite is public (anyone may have a copy). S strangers, each a new identity (an engine in
//! this process), add B from it and send one text, whose first-contact envelope a libp2p client
//! hands to B's node directly, several at once. Beside them A, a contact of B's, sends B a
//! message now and then; the latency from A's `send` until B's node has stored it is measured
//! with the flood and without it. Reported too: what B's node answered, how many contacts and
//! contact requests B has afterwards (strangers wait as requests, at most 100, the oldest
//! dropped), and B's CPU, memory and database size.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use merpati_control::protocol::method::{ContactList, Invite, Requests, Send};
use merpati_control::protocol::{NoParams, SendParams};
use merpati_proto::wire::deliver;
use serde_json::{Value, json};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::offline::{create_identity, introduce, start_node, wait_message};
use crate::util::{
    self, Daemon, Unit, cpu_seconds, dir_bytes, free_port, mib, peak_rss_kib, round, rss_kib, summary,
};

/// First contacts handed over at once.
const IN_FLIGHT: usize = 8;
/// A's measured messages per phase.
const PROBES: usize = 20;

/// What the flood did.
pub(crate) fn run(exe: &Path, dir: &Path, strangers: usize) -> anyhow::Result<Value> {
    let (a_home, b_home) = (dir.join("alice"), dir.join("bob"));
    create_identity(&a_home, "Alice")?;
    create_identity(&b_home, "Bob")?;
    let alice = start_node(exe, &a_home, free_port()?)?;
    let bob = start_node(exe, &b_home, free_port()?)?;
    introduce(&alice, &bob)?;
    let alone = probe(&alice, &bob, "alone")?;

    // The strangers' envelopes are made before the flood, so making them is not measured.
    let invite = bob.client()?.call::<Invite>(NoParams {})?.invite;
    let now = merpati_node::clock::Clock::system().now();
    let mut envelopes = Vec::with_capacity(strangers);
    for i in 0..strangers {
        let mut stranger = util::contact_engine(&format!("stranger {i}"), now)?;
        stranger.add_contact(&invite, "b", now)?;
        stranger.send_text("b", "buy now", now)?;
        let attempt = stranger.due(now, None)?.into_iter().next().context("nothing to send")?;
        envelopes.push(attempt.envelope);
    }
    let bob_peer: libp2p::PeerId = bob.ready["peer_id"].as_str().context("B's peer id")?.parse()?;
    let bob_addrs: Vec<libp2p::Multiaddr> = bob.ready["listen"]
        .as_array()
        .context("B's addresses")?
        .iter()
        .filter_map(|a| a.as_str()?.parse().ok())
        .collect();

    let pid = bob.pid();
    let cpu0 = cpu_seconds(pid)?;
    let rss_before = rss_kib(pid)?;
    let runtime = util::runtime()?;
    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    let flood = runtime.spawn(flood(envelopes, bob_peer, bob_addrs, shutdown.clone()));
    let under = probe(&alice, &bob, "flooded")?;
    let (answers, took) = runtime.block_on(flood)??;
    let seconds = took.as_secs_f64();
    let cpu = cpu_seconds(pid)? - cpu0;
    let contacts = bob.client()?.call::<ContactList>(NoParams {})?.contacts.len();
    let requests = bob.client()?.call::<Requests>(NoParams {})?;
    Ok(json!({
        "strangers": strangers,
        "answers": answers,
        "first_contacts_per_second": round(strangers as f64 / seconds, 0),
        "a_to_b_latency_ms_alone": summary(alone, Unit::Millis),
        "a_to_b_latency_ms_flooded": summary(under, Unit::Millis),
        "b_contacts_after": contacts,
        "b_requests_after": requests.requests.len(),
        "b_requests_dropped": requests.dropped,
        "b_cpu_seconds": round(cpu, 2),
        "b_rss_before_mib": mib(rss_before),
        "b_peak_rss_mib": mib(peak_rss_kib(pid)?),
        "b_home_bytes": dir_bytes(&b_home),
    }))
}

/// A sends B [`PROBES`] messages, one at a time; the latency of each until B stored it.
fn probe(alice: &Daemon, bob: &Daemon, phase: &str) -> anyhow::Result<Vec<Duration>> {
    let mut events = bob.client()?.subscribe()?;
    let mut latencies = Vec::with_capacity(PROBES);
    for i in 0..PROBES {
        let text = format!("{phase} {i}");
        let sent = Instant::now();
        alice.client()?.call::<Send>(SendParams { to: "bob".into(), text: text.clone() })?;
        latencies.push(wait_message(&mut events, &text)?.duration_since(sent));
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(latencies)
}

/// Hands every envelope to B's node, [`IN_FLIGHT`] at a time; counts B's answers by kind, and
/// says how long it took from the first to the last answer.
async fn flood(
    envelopes: Vec<Vec<u8>>,
    peer: libp2p::PeerId,
    addrs: Vec<libp2p::Multiaddr>,
    shutdown: CancellationToken,
) -> anyhow::Result<(std::collections::BTreeMap<String, u64>, Duration)> {
    let client = util::client_net(&shutdown).await?;
    let started = Instant::now();
    let mut answers = std::collections::BTreeMap::new();
    let mut tasks = JoinSet::new();
    for envelope in envelopes {
        if tasks.len() >= IN_FLIGHT
            && let Some(done) = tasks.join_next().await
        {
            *answers.entry(done?).or_insert(0) += 1;
        }
        let (client, addrs) = (client.clone(), addrs.clone());
        tasks.spawn(async move {
            match client.deliver(peer, addrs, envelope).await {
                Ok(deliver::Response::Accepted) => "accepted".to_owned(),
                Ok(deliver::Response::Refused(refusal)) => format!("{refusal:?}"),
                Err(e) => e.to_string(),
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        *answers.entry(done?).or_insert(0) += 1;
    }
    Ok((answers, started.elapsed()))
}
