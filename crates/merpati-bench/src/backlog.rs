//! `backlog`: A queues N messages for B while B's node is off, then B comes back and A's node
//! drains the backlog. Reports the drain rate (B's stored messages per second, from B's return
//! to the last one), A's peak resident memory against its idle level, and the latency of A's
//! `send` calls with the outbox (nearly) empty and with N queued.
//!
//! Both nodes listen on fixed ports, so B comes back where A expects it. Once up, B writes to A:
//! that connection is how A learns B is back (a contact that connects is tried at once, whatever
//! the backoff its queue had reached while B was away), as it would be in real use.

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use merpati_control::protocol::method::{Send, Status as StatusCall};
use merpati_control::protocol::{Direction, Event, NoParams, SendParams};
use serde_json::json;

use crate::offline::{create_identity, introduce, start_node};
use crate::util::{Unit, free_port, mib, peak_rss_kib, report, round, rss_kib, summary};

pub(crate) fn run(exe: &Path, count: usize) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (a_home, b_home) = (dir.path().join("alice"), dir.path().join("bob"));
    create_identity(&a_home, "Alice")?;
    create_identity(&b_home, "Bob")?;
    let (a_port, b_port) = (free_port()?, free_port()?);
    let alice = start_node(exe, &a_home, a_port)?;
    let bob = start_node(exe, &b_home, b_port)?;
    // Sessions both ways, while both are up.
    introduce(&alice, &bob)?;
    drop(bob);

    let idle_kib = rss_kib(alice.pid())?;
    let mut client = alice.client()?;
    let mut latencies = Vec::with_capacity(count);
    let queuing = Instant::now();
    for i in 0..count {
        let text = format!("backlog {i} {}", "x".repeat(100));
        let t0 = Instant::now();
        client.call::<Send>(SendParams { to: "bob".into(), text })?;
        latencies.push(t0.elapsed());
    }
    let queuing = queuing.elapsed();
    let queued = client.call::<StatusCall>(NoParams {})?.outbox;
    let queued_kib = rss_kib(alice.pid())?;
    // The first and the last 200 sends (a tenth of them when fewer): into a nearly empty
    // outbox, and into one holding nearly N.
    let sample = (count / 10).clamp(1, 200);
    let empty = latencies[..sample].to_vec();
    let full = latencies[count - sample..].to_vec();

    let bob = start_node(exe, &b_home, b_port)?;
    let mut b_events = bob.client()?.subscribe()?;
    let back = Instant::now();
    bob.client()?.call::<Send>(SendParams { to: "alice".into(), text: "back".into() })?;
    let mut seen = HashSet::with_capacity(count);
    let mut first = None;
    // When half had arrived: a drain that slows down as it goes shows as a slower second half.
    let mut half = None;
    while seen.len() < count {
        let deadline = Instant::now() + Duration::from_secs(60);
        let event = b_events
            .next_event_until(deadline)
            .with_context(|| format!("waiting for the backlog: {} of {count} arrived", seen.len()))?;
        let Event::Message(view) = event else { continue };
        if view.direction != Direction::In {
            continue;
        }
        if let Some(i) =
            view.text.strip_prefix("backlog ").and_then(|t| t.split(' ').next()?.parse::<u64>().ok())
        {
            first.get_or_insert_with(Instant::now);
            seen.insert(i);
            if seen.len() == count / 2 {
                half = Some(back.elapsed());
            }
        }
    }
    let drained = back.elapsed();
    let half = half.unwrap_or(drained);
    let per_second = |n: usize, d: Duration| round(n as f64 / d.as_secs_f64().max(1e-9), 0);
    let first = first.map_or(drained, |t| t - back);
    let peak_kib = peak_rss_kib(alice.pid())?;
    let after_kib = rss_kib(alice.pid())?;
    report(
        "backlog",
        json!({
            "messages": count,
            "text_bytes": 110,
            "what": "A queues N texts for B while B's node is off (one send at a time), then B comes back and writes to A; A drains the backlog to B",
        }),
        json!({
            "drain_messages_per_second": per_second(count, drained),
            "drain_halves_per_second": [per_second(count / 2, half), per_second(count - count / 2, drained - half)],
            "drain_seconds": round(drained.as_secs_f64(), 2),
            "first_message_after_return_ms": round(first.as_secs_f64() * 1e3, 1),
            "queued_in_outbox": queued,
            "queuing_seconds": round(queuing.as_secs_f64(), 2),
            "send_ms": {
                "outbox_empty": summary(empty, Unit::Millis),
                "n_queued": summary(full, Unit::Millis),
            },
            "sender_rss_mib": {
                "idle": mib(idle_kib),
                "n_queued": mib(queued_kib),
                "peak": mib(peak_kib),
                "after_drain": mib(after_kib),
            },
        }),
    );
    Ok(())
}
