//! `backlog-relay`: the backlog of `backlog`, through a relay. B's node and B's relay R are both
//! off while A queues N messages for B; then R comes back, and A's node, finding B unreachable,
//! deposits the backlog at R; then B comes back and collects it from R. Reports how fast A's
//! outbox drained into R (from the first deposit R took until the outbox was empty; before that
//! A waits out the backoff its failed attempts reached) and how fast B stored what R held (from
//! B's start until the last one), with A's and R's peak memory.
//!
//! Every process is a real daemon on 127.0.0.1 and comes back on its port; B's port refuses
//! connections while B is off, so A's direct attempts fail at once and, for a minute after
//! each, A goes straight to R.

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use merpati_control::protocol::method::{RelayAdd, Send, Status as StatusCall};
use merpati_control::protocol::{Direction, Event, NoParams, RelayAddParams, SendParams};
use serde_json::json;

use crate::offline::{create_identity, introduce, start_node};
use crate::util::{Relay, free_port, mib, peak_rss_kib, report, round, rss_kib};

pub(crate) fn run(exe: &Path, count: usize) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    // The whole backlog goes into one mailbox: room for it (the default is 10 000).
    let room = format!("mailbox_max_envelopes = {}\n", count + 100);
    let relay_home = dir.path().join("relay");
    let relay = Relay::start_on(exe, &relay_home, &room, free_port()?)?;
    let (a_home, b_home) = (dir.path().join("alice"), dir.path().join("bob"));
    create_identity(&a_home, "Alice")?;
    create_identity(&b_home, "Bob")?;
    let (a_port, b_port) = (free_port()?, free_port()?);
    let alice = start_node(exe, &a_home, a_port)?;
    let bob = start_node(exe, &b_home, b_port)?;
    bob.client()?.call::<RelayAdd>(RelayAddParams { addr: relay.addr.to_string(), offline: false })?;
    // Sessions both ways, while both are up.
    introduce(&alice, &bob)?;
    drop(bob);
    let relay_port = relay.port;
    drop(relay);

    let mut client = alice.client()?;
    let queuing = Instant::now();
    for i in 0..count {
        let text = format!("backlog {i} {}", "x".repeat(100));
        client.call::<Send>(SendParams { to: "bob".into(), text })?;
    }
    let queuing = queuing.elapsed();
    let queued = client.call::<StatusCall>(NoParams {})?.outbox;

    let relay = Relay::start_on(exe, &relay_home, &room, relay_port)?;
    let relay_back = Instant::now();
    let deadline = relay_back + Duration::from_secs(600);
    let outbox = |client: &mut merpati_control::client::Client| -> anyhow::Result<u64> {
        if Instant::now() > deadline {
            bail!("A's outbox was not drained into the relay within 10 minutes");
        }
        std::thread::sleep(Duration::from_millis(5));
        Ok(client.call::<StatusCall>(NoParams {})?.outbox)
    };
    while outbox(&mut client)? >= queued {}
    let first_deposit = relay_back.elapsed();
    while outbox(&mut client)? > 0 {}
    let deposited = relay_back.elapsed() - first_deposit;
    let alice_peak = peak_rss_kib(alice.pid())?;
    let alice_after = rss_kib(alice.pid())?;

    let back = Instant::now();
    let bob = start_node(exe, &b_home, b_port)?;
    let mut b_events = bob.client()?.subscribe()?;
    let mut seen = HashSet::with_capacity(count);
    while seen.len() < count {
        let deadline = Instant::now() + Duration::from_secs(60);
        let event = b_events.next_event_until(deadline).with_context(|| {
            format!("waiting for the backlog at the relay: {} of {count} arrived", seen.len())
        })?;
        let Event::Message(view) = event else { continue };
        if view.direction != Direction::In {
            continue;
        }
        if let Some(i) =
            view.text.strip_prefix("backlog ").and_then(|t| t.split(' ').next()?.parse::<u64>().ok())
        {
            seen.insert(i);
        }
    }
    let collected = back.elapsed();
    let per_second = |d: Duration| round(count as f64 / d.as_secs_f64().max(1e-9), 0);
    report(
        "backlog-relay",
        json!({
            "messages": count,
            "text_bytes": 110,
            "what": "B's node and relay R off while A queues N texts for B (one send at a time); R comes back and A deposits the backlog there; then B comes back and collects it from R",
        }),
        json!({
            "queuing_seconds": round(queuing.as_secs_f64(), 2),
            "queued_in_outbox": queued,
            "first_deposit_after_relay_return_seconds": round(first_deposit.as_secs_f64(), 2),
            "deposit_drain_seconds": round(deposited.as_secs_f64(), 2),
            "deposit_drain_messages_per_second": per_second(deposited),
            "collect_seconds": round(collected.as_secs_f64(), 2),
            "collect_messages_per_second": per_second(collected),
            "sender_rss_mib": { "peak": mib(alice_peak), "after_drain": mib(alice_after) },
            "relay_peak_rss_mib": mib(peak_rss_kib(relay.pid())?),
        }),
    );
    Ok(())
}
