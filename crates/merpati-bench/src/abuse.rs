//! `abuse`: a community relay with its default limits (and a small disk budget, so that a short
//! run can fill it) under K abusive clients, beside honest traffic.
//!
//! Every client is a libp2p node of its own and reaches the relay through a forwarder whose
//! connections come from a loopback address of its own (127.0.x.y), which the relay takes for the
//! client's network: the abusers are a botnet of K networks, the worst case for limits kept per
//! network.
//!
//! * Honest: H senders, each from its own address, deposit 1 KiB envelopes at a steady 50 a second
//!   into mailboxes whose owner (another address) long-polls them and deletes what it fetched.
//!   Measured alone first, then under the abuse: deposits per second, latency, refusals.
//! * Abusers, by role in turn: depositors (64 KiB envelopes into random mailboxes no one
//!   fetches, two at a time, as fast as the relay answers), long-poll hoarders (16 waiting
//!   fetches each), and junk senders (bytes that are no request, on the mailbox protocol).
//!
//! Reported: the honest figures alone and under abuse, the honest refusals (goal: 0), what the
//! abusers got stored and how they were refused, and the relay's memory and disk at the end
//! against its budget. Then, on their own, S strangers flood a person's node with first contacts
//! (see [`crate::first_contacts`]), reported under `user_node`.

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use libp2p::futures::StreamExt as _;
use libp2p::request_response::{self, ProtocolSupport, cbor};
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId, StreamProtocol};
use merpati_node::net::Handle;
use merpati_proto::envelope::{Envelope, HEADER_LEN, Header, Kind, MAX_ENVELOPE_LEN, VERSION};
use merpati_proto::keys::SymmetricKey;
use merpati_proto::mailbox::{FetchToken, MailboxId, MailboxKey};
use merpati_proto::wire::mailbox::{Request, Response};
use merpati_proto::wire::{MAILBOX_PROTOCOL, MAX_FETCH_LIMIT, Refusal};
use rand_chacha::ChaCha20Rng;
use rand_core::{Rng as _, SeedableRng};
use serde_json::{Value, json};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::relay::envelope;
use crate::util::{self, Relay, Unit, cpu_seconds, dir_bytes, mib, peak_rss_kib, report, round, summary};

/// The relay's disk budget in this scenario, MiB: small enough to fill in seconds.
const DISK_BUDGET_MIB: u64 = 128;
/// What one network and one peer may keep stored there, MiB.
const NETWORK_MAX_MIB: u64 = 8;
const PEER_MAX_MIB: u64 = 8;
/// Honest deposits per second per sender.
const HONEST_RATE: u32 = 50;
/// Honest owners' mailboxes.
const HONEST_MAILBOXES: usize = 32;
/// Waiting fetches each hoarder keeps up.
const HOARDS_PER_CLIENT: usize = 16;

/// Sizes of the run.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Params {
    pub(crate) abusers: usize,
    pub(crate) honest: usize,
    pub(crate) baseline: Duration,
    pub(crate) attack: Duration,
    pub(crate) strangers: usize,
}

pub(crate) fn run(exe: &Path, params: Params) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let metrics_port = util::free_port()?;
    let section = format!(
        "metrics = \"127.0.0.1:{metrics_port}\"\ndisk_budget_mib = {DISK_BUDGET_MIB}\n\
         network_max_mib = {NETWORK_MAX_MIB}\npeer_max_mib = {PEER_MAX_MIB}\n"
    );
    let relay = Relay::start_configured(exe, &dir.path().join("relay"), &section, 0)?;
    let (scenario, mut figures) = util::runtime()?.block_on(async_run(&relay, metrics_port, params))?;
    drop(relay);
    figures["user_node"] = crate::first_contacts::run(exe, dir.path(), params.strangers)?;
    report("abuse", scenario, figures);
    Ok(())
}

/// The relay, as one client reaches it.
#[derive(Clone)]
struct Target {
    peer: PeerId,
    addr: Multiaddr,
}

impl Target {
    /// The relay reached from `source` (through a forwarder of its own).
    async fn from(relay: &Relay, source: Ipv4Addr) -> anyhow::Result<Target> {
        let port = util::source_forwarder(relay.port, source).await?;
        Ok(Target {
            peer: relay.peer,
            addr: format!("/ip4/127.0.0.1/tcp/{port}/p2p/{}", relay.peer).parse()?,
        })
    }
}

/// A client of the relay, its connections coming from `source`.
async fn client(
    shutdown: &CancellationToken,
    relay: &Relay,
    source: Ipv4Addr,
) -> anyhow::Result<(Handle, Target)> {
    Ok((util::client_net(shutdown).await?, Target::from(relay, source).await?))
}

/// The relay part: the scenario's parameters and figures.
async fn async_run(relay: &Relay, metrics_port: u16, params: Params) -> anyhow::Result<(Value, Value)> {
    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    let mut rng = ChaCha20Rng::seed_from_u64(11);
    let tokens: Arc<Vec<FetchToken>> = Arc::new(
        (0..HONEST_MAILBOXES)
            .map(|_| {
                MailboxKey::derive(&SymmetricKey::generate(&mut rng), 20_000).token(&relay.peer.to_bytes())
            })
            .collect(),
    );

    // The honest owner keeps fetching (which marks the mailboxes live) and deleting.
    let (owner, owner_target) = client(&shutdown, relay, Ipv4Addr::new(127, 0, 0, 9)).await?;
    let owner_task = tokio::spawn(own(owner, owner_target, tokens.clone(), shutdown.child_token()));
    let mut senders = Vec::new();
    for i in 0..params.honest {
        let ip = Ipv4Addr::new(127, 0, 0, 10 + u8::try_from(i).context("too many honest senders")?);
        senders.push(client(&shutdown, relay, ip).await?);
    }
    // The owner's first fetch lands before any deposit: its mailboxes are live from the start.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let pid = relay.pid();
    let alone = honest(&senders, &tokens, params.baseline).await?;

    let cpu0 = cpu_seconds(pid)?;
    let abuse = Abuse::default();
    let stop_abuse = shutdown.child_token();
    let mut abusers = JoinSet::new();
    for i in 0..params.abusers {
        let ip = Ipv4Addr::new(127, 0, 1 + u8::try_from(i / 250)?, 1 + u8::try_from(i % 250)?);
        let stop = stop_abuse.clone();
        let abuse = abuse.clone();
        match i % 3 {
            0 => {
                let (client, target) = client(&shutdown, relay, ip).await?;
                abusers.spawn(deposit_junk(client, target, abuse, stop, i as u64));
            }
            1 => {
                let (client, target) = client(&shutdown, relay, ip).await?;
                abusers.spawn(hoard(client, target, abuse, stop, i as u64));
            }
            _ => {
                let target = Target::from(relay, ip).await?;
                abusers.spawn(send_garbage(ip, target, abuse, stop));
            }
        }
    }
    // Let the abuse fill what it can before measuring.
    tokio::time::sleep(params.attack / 4).await;
    let under = honest(&senders, &tokens, params.attack).await?;
    let metrics = scrape(metrics_port)?;
    stop_abuse.cancel();
    while abusers.join_next().await.is_some() {}
    let cpu = cpu_seconds(pid)? - cpu0;
    shutdown.cancel();
    let _ = owner_task.await;

    let budget = DISK_BUDGET_MIB * 1024 * 1024;
    let honest_refused = alone.refused.values().sum::<u64>() + under.refused.values().sum::<u64>();
    let scenario = json!({
        "abusers": params.abusers,
        "honest_senders": params.honest,
        "honest_rate_per_sender": HONEST_RATE,
        "baseline_seconds": params.baseline.as_secs_f64(),
        "attack_seconds": params.attack.as_secs_f64(),
        "disk_budget_mib": DISK_BUDGET_MIB,
        "network_max_mib": NETWORK_MAX_MIB,
        "peer_max_mib": PEER_MAX_MIB,
        "what": "abusers by turn: 64 KiB deposits into random mailboxes, 16 waiting fetches each, undecodable requests; each client its own 127.0.x.y",
        "strangers": params.strangers,
    });
    let figures = json!({
        "honest_alone": alone.figures(),
        "honest_under_abuse": under.figures(),
        "honest_refused": honest_refused,
        "abuse": {
            "deposits_stored": abuse.stored.load(Ordering::Relaxed),
            "deposits_refused": abuse.refused.load(Ordering::Relaxed),
            "fetches_answered": abuse.fetched.load(Ordering::Relaxed),
            "garbage_sent": abuse.garbage.load(Ordering::Relaxed),
            "relay_refusals": refusals(&metrics),
            "long_polls_declined": metric(&metrics, "merpati_mailbox_long_polls_declined_total"),
            "undecodable_requests": metric(&metrics, "merpati_mailbox_undecodable_requests_total"),
        },
        "relay": {
            "stored_bytes": metric(&metrics, "merpati_mailbox_stored_bytes"),
            "disk_budget_bytes": budget,
            "disk_bytes": dir_bytes(&relay.mailboxes_dir()),
            "peak_rss_mib": mib(peak_rss_kib(pid)?),
            "rss_mib": metric(&metrics, "merpati_process_resident_memory_bytes").map(|b| round(b / 1048576.0, 1)),
            "open_fds": metric(&metrics, "merpati_process_open_fds"),
            "cpu_seconds_under_abuse": round(cpu, 2),
        },
    });
    Ok((scenario, figures))
}

/// One honest phase's figures.
struct Phase {
    stored: u64,
    seconds: f64,
    latencies: Vec<Duration>,
    refused: BTreeMap<String, u64>,
}

impl Phase {
    fn figures(&self) -> Value {
        json!({
            "deposits_per_second": round(self.stored as f64 / self.seconds, 0),
            "latency_ms": summary(self.latencies.clone(), Unit::Millis),
            "refused": self.refused,
        })
    }
}

/// Every honest sender deposits at [`HONEST_RATE`] for `length`, round the owner's mailboxes.
async fn honest(
    senders: &[(Handle, Target)],
    tokens: &Arc<Vec<FetchToken>>,
    length: Duration,
) -> anyhow::Result<Phase> {
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for (s, (sender, target)) in senders.iter().enumerate() {
        let sender = sender.clone();
        let target = target.clone();
        let tokens = tokens.clone();
        tasks.spawn(async move {
            let mut rng = ChaCha20Rng::seed_from_u64(1_000 + s as u64);
            let mut ticks = tokio::time::interval(Duration::from_secs(1) / HONEST_RATE);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut latencies = Vec::new();
            let mut refused: BTreeMap<String, u64> = BTreeMap::new();
            let mut n = 0u32;
            while started.elapsed() < length {
                ticks.tick().await;
                let mailbox = MailboxId::of(&tokens[(n as usize + s) % tokens.len()]);
                let request = Request::Deposit { mailbox, envelope: envelope(mailbox, n, &mut rng) };
                let t0 = Instant::now();
                match sender.mailbox(target.peer, vec![target.addr.clone()], request).await {
                    Ok(Response::Stored { .. }) => latencies.push(t0.elapsed()),
                    Ok(Response::Refused(refusal)) => {
                        *refused.entry(format!("{refusal:?}")).or_default() += 1
                    }
                    Ok(other) => *refused.entry(format!("{other:?}")).or_default() += 1,
                    Err(e) => *refused.entry(e.to_string()).or_default() += 1,
                }
                n += 1;
            }
            (latencies, refused)
        });
    }
    let mut phase = Phase { stored: 0, seconds: 0.0, latencies: Vec::new(), refused: BTreeMap::new() };
    while let Some(done) = tasks.join_next().await {
        let (latencies, refused) = done?;
        phase.stored += latencies.len() as u64;
        phase.latencies.extend(latencies);
        for (kind, count) in refused {
            *phase.refused.entry(kind).or_default() += count;
        }
    }
    phase.seconds = started.elapsed().as_secs_f64();
    Ok(phase)
}

/// The honest owner: long-polls its mailboxes and deletes what it fetched, until `stop`.
async fn own(client: Handle, target: Target, tokens: Arc<Vec<FetchToken>>, stop: CancellationToken) {
    let mut after = None;
    while !stop.is_cancelled() {
        let fetch =
            Request::Fetch { tokens: tokens.to_vec(), after, limit: MAX_FETCH_LIMIT, wait_ms: 20_000 };
        let answer = tokio::select! {
            () = stop.cancelled() => return,
            answer = client.mailbox(target.peer, vec![target.addr.clone()], fetch) => answer,
        };
        let Ok(Response::Envelopes { items, .. }) = answer else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        after = items.iter().map(|item| item.id).max().or(after);
        let mut by_mailbox: BTreeMap<MailboxId, Vec<u64>> = BTreeMap::new();
        for item in items {
            by_mailbox.entry(item.mailbox).or_default().push(item.id);
        }
        for (mailbox, ids) in by_mailbox {
            let Some(token) = tokens.iter().find(|t| MailboxId::of(t) == mailbox) else { continue };
            let delete = Request::Delete { token: token.clone(), ids };
            let _ = client.mailbox(target.peer, vec![target.addr.clone()], delete).await;
        }
    }
}

/// What the abusers got.
#[derive(Clone, Default)]
struct Abuse {
    stored: Arc<AtomicU64>,
    refused: Arc<AtomicU64>,
    fetched: Arc<AtomicU64>,
    garbage: Arc<AtomicU64>,
}

/// How long a refused abuser waits before its next try: what it was told, at most 50 ms (an
/// abuser does not wait politely; the cap only keeps this process from spinning on the cores it
/// shares with the relay).
fn pause_after(refusal: &Refusal) -> Duration {
    match refusal {
        Refusal::RateLimited { retry_after_ms } => Duration::from_millis(u64::from(*retry_after_ms).min(50)),
        _ => Duration::from_millis(5),
    }
}

/// Deposits the largest envelopes into random mailboxes, two at a time, until `stop`.
async fn deposit_junk(client: Handle, target: Target, abuse: Abuse, stop: CancellationToken, seed: u64) {
    let mut lanes = JoinSet::new();
    for lane in 0..2 {
        let (client, target, abuse, stop) = (client.clone(), target.clone(), abuse.clone(), stop.clone());
        lanes.spawn(async move {
            let mut rng = ChaCha20Rng::seed_from_u64(seed * 10 + lane);
            while !stop.is_cancelled() {
                let mut mailbox = MailboxId([0; 16]);
                rng.fill_bytes(&mut mailbox.0);
                let request = Request::Deposit { mailbox, envelope: largest_envelope(mailbox, &mut rng) };
                let answer = tokio::select! {
                    () = stop.cancelled() => return,
                    answer = client.mailbox(target.peer, vec![target.addr.clone()], request) => answer,
                };
                match answer {
                    Ok(Response::Stored { .. }) => {
                        abuse.stored.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(Response::Refused(refusal)) => {
                        abuse.refused.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(pause_after(&refusal)).await;
                    }
                    _ => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        });
    }
    while lanes.join_next().await.is_some() {}
}

/// A valid envelope of the protocol's largest size, random ciphertext, for `mailbox`.
fn largest_envelope(mailbox: MailboxId, rng: &mut ChaCha20Rng) -> Vec<u8> {
    let header = Header { version: VERSION, kind: Kind::Session, mailbox, epoch: 1, sub_epoch: 0, index: 0 };
    let mut ciphertext = vec![0u8; MAX_ENVELOPE_LEN - HEADER_LEN - 2];
    rng.fill_bytes(&mut ciphertext);
    Envelope { header, open: None, ciphertext }.encode()
}

/// Keeps [`HOARDS_PER_CLIENT`] long-poll fetches of random mailboxes going, until `stop`.
async fn hoard(client: Handle, target: Target, abuse: Abuse, stop: CancellationToken, seed: u64) {
    let mut polls = JoinSet::new();
    for lane in 0..HOARDS_PER_CLIENT as u64 {
        let (client, target, abuse, stop) = (client.clone(), target.clone(), abuse.clone(), stop.clone());
        polls.spawn(async move {
            let mut rng = ChaCha20Rng::seed_from_u64(seed * 100 + lane);
            while !stop.is_cancelled() {
                // A key of its own for each poll, as an abuser would: a valid token, which the
                // relay must verify before it holds the poll.
                let mut secret = [0u8; 32];
                rng.fill_bytes(&mut secret);
                let key = MailboxKey::derive(&SymmetricKey::from_bytes(secret), 20_000);
                let fetch = Request::Fetch {
                    tokens: vec![key.token(&target.peer.to_bytes())],
                    after: None,
                    limit: 1,
                    wait_ms: 120_000,
                };
                let answer = tokio::select! {
                    () = stop.cancelled() => return,
                    answer = client.mailbox(target.peer, vec![target.addr.clone()], fetch) => answer,
                };
                match answer {
                    Ok(Response::Envelopes { .. }) => {
                        abuse.fetched.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(Response::Refused(refusal)) => tokio::time::sleep(pause_after(&refusal)).await,
                    _ => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        });
    }
    while polls.join_next().await.is_some() {}
}

/// Sends byte strings that are no mailbox request, four at a time, from `ip`, until `stop`.
async fn send_garbage(ip: Ipv4Addr, target: Target, abuse: Abuse, stop: CancellationToken) {
    let Ok(mut swarm) = garbage_client() else { return };
    swarm.add_peer_address(target.peer, target.addr.clone());
    let mut rng = ChaCha20Rng::seed_from_u64(u64::from(u32::from(ip)));
    let junk = |rng: &mut ChaCha20Rng| {
        let mut bytes = vec![0u8; 64];
        rng.fill_bytes(&mut bytes);
        serde_bytes::ByteBuf::from(bytes)
    };
    for _ in 0..4 {
        swarm.behaviour_mut().send_request(&target.peer, junk(&mut rng));
    }
    loop {
        let event = tokio::select! {
            () = stop.cancelled() => return,
            event = swarm.select_next_some() => event,
        };
        if let SwarmEvent::Behaviour(
            request_response::Event::OutboundFailure { .. } | request_response::Event::Message { .. },
        ) = event
        {
            abuse.garbage.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(5)).await;
            swarm.behaviour_mut().send_request(&target.peer, junk(&mut rng));
        }
    }
}

/// A libp2p client speaking the mailbox protocol's name with CBOR byte strings.
fn garbage_client()
-> anyhow::Result<libp2p::Swarm<cbor::Behaviour<serde_bytes::ByteBuf, serde_bytes::ByteBuf>>> {
    let swarm = libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(Default::default(), libp2p::noise::Config::new, libp2p::yamux::Config::default)?
        .with_behaviour(|_| {
            let protocol = StreamProtocol::new(MAILBOX_PROTOCOL);
            cbor::Behaviour::new([(protocol, ProtocolSupport::Outbound)], request_response::Config::default())
        })?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build();
    Ok(swarm)
}

/// The relay's metrics, in the classic text format: sample name (with labels) → value.
pub(crate) fn scrape(port: u16) -> anyhow::Result<BTreeMap<String, f64>> {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: bench\r\n\r\n")?;
    let mut text = String::new();
    stream.read_to_string(&mut text)?;
    Ok(text
        .lines()
        .filter(|line| line.starts_with("merpati_"))
        .filter_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            Some((name.to_owned(), value.parse().ok()?))
        })
        .collect())
}

pub(crate) fn metric(metrics: &BTreeMap<String, f64>, name: &str) -> Option<f64> {
    metrics.get(name).copied()
}

/// The relay's refusal counters that are not zero.
fn refusals(metrics: &BTreeMap<String, f64>) -> BTreeMap<String, f64> {
    metrics
        .iter()
        .filter_map(|(name, value)| {
            let kind = name.strip_prefix("merpati_mailbox_refusals_total{kind=\"")?.strip_suffix("\"}")?;
            (*value > 0.0).then(|| (kind.to_owned(), *value))
        })
        .collect()
}
