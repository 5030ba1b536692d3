//! `direct`: A sends N messages to B, both online, over a warm connection. Latency is from the
//! `send` call on A's control API until B's node has stored the message (B's `message`
//! notification, which B's node publishes after the store commit), p50/p99, and messages per
//! second; once with one message in flight, once with W (default 64) kept outstanding.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use merpati_control::protocol::method::{ContactAdd, Invite, Send};
use merpati_control::protocol::{ContactAddParams, Direction, Event, NoParams, SendParams};
use merpati_node::local::LocalNode;
use serde_json::{Value, json};

use crate::util::{Unit, report, round, summary};

/// Messages sent first, not measured: the session and the connection get set up.
const WARMUP: usize = 10;

/// Two nodes that have each other as contacts.
pub(crate) fn pair(exe: &Path, dir: &Path) -> anyhow::Result<(LocalNode, LocalNode)> {
    let mut alice = LocalNode::create("Alice", dir, exe)?;
    let mut bob = LocalNode::create("Bob", dir, exe)?;
    alice.start()?;
    bob.start()?;
    let bob_invite = bob.client()?.call::<Invite>(NoParams {})?.invite;
    let alice_invite = alice.client()?.call::<Invite>(NoParams {})?.invite;
    alice.client()?.call::<ContactAdd>(ContactAddParams { invite: bob_invite, name: "bob".into() })?;
    bob.client()?.call::<ContactAdd>(ContactAddParams { invite: alice_invite, name: "alice".into() })?;
    Ok((alice, bob))
}

#[derive(Default)]
struct Window {
    started: HashMap<u64, Instant>,
    in_flight: usize,
    next: u64,
    failed: Option<String>,
}

/// Sends `count` messages (after the warm-up) from `alice` to `bob` keeping `window` outstanding;
/// returns the figures.
fn measure(alice: &LocalNode, bob: &LocalNode, count: usize, window: usize) -> anyhow::Result<Value> {
    let total = (count + WARMUP) as u64;
    let state = Arc::new((Mutex::new(Window::default()), Condvar::new()));
    let mut events = bob.client()?.subscribe()?;
    // One control connection can only have one `send` call open: with a window, several
    // connections share it so the window stays full.
    let senders = if window == 1 { 1 } else { 4 };
    let started = Instant::now();
    let mut threads = Vec::new();
    for _ in 0..senders {
        let mut client = alice.client()?;
        let state = state.clone();
        threads.push(std::thread::spawn(move || {
            let (lock, cv) = &*state;
            loop {
                let seq = {
                    let Ok(mut w) = lock.lock() else { return };
                    // The warm-up goes one at a time.
                    while w.failed.is_none()
                        && (w.in_flight >= window || (w.next < WARMUP as u64 && w.in_flight > 0))
                    {
                        let Ok(g) = cv.wait(w) else { return };
                        w = g;
                    }
                    if w.next >= total || w.failed.is_some() {
                        return;
                    }
                    let seq = w.next;
                    w.next += 1;
                    w.in_flight += 1;
                    w.started.insert(seq, Instant::now());
                    seq
                };
                let text = format!("bench {seq} {}", "x".repeat(100));
                if let Err(e) = client.call::<Send>(SendParams { to: "bob".into(), text }) {
                    if let Ok(mut w) = lock.lock() {
                        w.failed = Some(e.to_string());
                    }
                    cv.notify_all();
                    return;
                }
            }
        }));
    }

    let (lock, cv) = &*state;
    let mut latencies = Vec::with_capacity(count);
    let mut measured_from = None;
    let mut done = 0u64;
    while done < total {
        let deadline = Instant::now() + Duration::from_secs(60);
        let event = events.next_event_until(deadline).context("waiting for B to store a message")?;
        let Event::Message(view) = event else { continue };
        if view.direction != Direction::In {
            continue;
        }
        let Some(seq) =
            view.text.strip_prefix("bench ").and_then(|t| t.split(' ').next()?.parse::<u64>().ok())
        else {
            continue;
        };
        let now = Instant::now();
        let mut w = lock.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
        if let Some(failed) = &w.failed {
            bail!("send failed: {failed}");
        }
        if let Some(t0) = w.started.remove(&seq) {
            if seq >= WARMUP as u64 {
                measured_from.get_or_insert(t0);
                latencies.push(now - t0);
            }
            w.in_flight -= 1;
            done += 1;
        }
        drop(w);
        cv.notify_all();
    }
    for thread in threads {
        let _ = thread.join();
    }
    let elapsed = measured_from.map_or(started.elapsed(), |t| t.elapsed());
    Ok(json!({
        "in_flight": window,
        "messages": count,
        "latency_ms": summary(latencies, Unit::Millis),
        "messages_per_second": round(count as f64 / elapsed.as_secs_f64(), 0),
        "seconds": round(elapsed.as_secs_f64(), 2),
    }))
}

pub(crate) fn run(exe: &Path, count: usize, windows: &[usize]) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (alice, bob) = pair(exe, dir.path())?;
    let mut figures = serde_json::Map::new();
    for &window in windows {
        figures.insert(format!("w{window}"), measure(&alice, &bob, count, window)?);
    }
    report(
        "direct",
        json!({
            "messages": count,
            "in_flight": windows,
            "text_bytes": 110,
            "what": "latency from A's send call until B's node stored the message (B's message notification)",
        }),
        figures.into(),
    );
    Ok(())
}
