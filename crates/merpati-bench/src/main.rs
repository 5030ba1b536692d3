//! `merpati-bench`: measures what users feel, with real `merpatid` processes on 127.0.0.1, and
//! prints one JSON object per scenario.
//!
//! Scenarios so far: `direct` (latency from `send` to the peer's node having stored the message,
//! p50/p99, and messages per second) and `idle` (a node's resident memory and CPU time while
//! idle). `--quick` runs small sizes, only to check that every scenario works.
#![allow(clippy::print_stdout)] // the figures are the program's output

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Parser;
use merpati_control::protocol::method::{ContactAdd, Invite, Send};
use merpati_control::protocol::{ContactAddParams, Event, MessageStatus, NoParams, SendParams};
use merpati_node::local::LocalNode;
use serde_json::json;

/// Benchmarks of a real Merpati network on this machine.
#[derive(Debug, Parser)]
#[command(name = "merpati-bench")]
struct Args {
    /// Run only this scenario (`direct` or `idle`); all of them when absent.
    #[arg(long)]
    scenario: Option<String>,
    /// Small sizes, to check that the scenarios run (figures are not meaningful).
    #[arg(long)]
    quick: bool,
    /// Messages sent in `direct`.
    #[arg(long, default_value_t = 1000)]
    messages: usize,
    /// Seconds the node stays idle in `idle`.
    #[arg(long, default_value_t = 30)]
    idle_seconds: u64,
    /// The merpatid binary; default: next to this one.
    #[arg(long)]
    merpatid: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let exe = match &args.merpatid {
        Some(path) => path.clone(),
        None => std::env::current_exe()?.with_file_name("merpatid"),
    };
    if !exe.exists() {
        bail!("{} not found: build it first (cargo build --release -p merpati-node)", exe.display());
    }
    let run = |name: &str| args.scenario.as_deref().is_none_or(|s| s == name);
    if run("direct") {
        direct(&exe, if args.quick { 50 } else { args.messages })?;
    }
    if run("idle") {
        idle(&exe, if args.quick { 3 } else { args.idle_seconds })?;
    }
    Ok(())
}

/// Two nodes that have each other as contacts.
fn pair(exe: &Path, dir: &Path) -> anyhow::Result<(LocalNode, LocalNode)> {
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

/// Latency from `send` until the peer's node acknowledged storing the message (status `sent`),
/// one message at a time, over a warm connection.
fn direct(exe: &Path, count: usize) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (alice, _bob) = pair(exe, dir.path())?;
    let mut client = alice.client()?;
    let mut events = alice.client()?.subscribe()?;
    let mut latencies = Vec::with_capacity(count);
    let started = Instant::now();
    // A few messages first so the session and the connection exist.
    for i in 0..(count + 10) {
        let t0 = Instant::now();
        let id = client
            .call::<Send>(SendParams { to: "bob".into(), text: format!("message {i} {}", "x".repeat(100)) })?
            .id;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match events.next_event_until(deadline).context("waiting for the peer's acknowledgement")? {
                Event::Status(update)
                    if update.id == id && update.status.has_reached(MessageStatus::Sent) =>
                {
                    break;
                }
                Event::Status(update) if update.id == id && update.status == MessageStatus::Failed => {
                    bail!("message failed: {:?}", update.reason)
                }
                _ => {}
            }
        }
        if i >= 10 {
            latencies.push(t0.elapsed());
        }
    }
    let elapsed = started.elapsed();
    latencies.sort();
    let ms = |d: Duration| (d.as_secs_f64() * 1e6).round() / 1e3;
    let pick = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    println!(
        "{}",
        json!({
            "scenario": "direct",
            "cores": std::thread::available_parallelism().map_or(0, |n| n.get()),
            "messages": count,
            "in_flight": 1,
            "latency_ms": { "p50": ms(pick(0.50)), "p99": ms(pick(0.99)), "max": ms(*latencies.last().unwrap_or(&Duration::ZERO)) },
            "messages_per_second": ((count + 10) as f64 / elapsed.as_secs_f64()).round(),
            "what": "from the send call until the peer's node acknowledged storing it (status sent)",
        })
    );
    Ok(())
}

/// Resident memory and CPU time of a node with one contact, idle.
fn idle(exe: &Path, seconds: u64) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (alice, _bob) = pair(exe, dir.path())?;
    alice.client()?.call::<Send>(SendParams { to: "bob".into(), text: "hello".into() })?;
    let pid = alice.pid().context("the node is not running")?;
    let cpu_before = cpu_seconds(pid)?;
    std::thread::sleep(Duration::from_secs(seconds));
    let cpu = cpu_seconds(pid)? - cpu_before;
    println!(
        "{}",
        json!({
            "scenario": "idle",
            "cores": std::thread::available_parallelism().map_or(0, |n| n.get()),
            "seconds": seconds,
            "rss_mib": (rss_kib(pid)? as f64 / 1024.0 * 10.0).round() / 10.0,
            "cpu_seconds": (cpu * 1000.0).round() / 1000.0,
            "cpu_seconds_per_hour": (cpu * 3600.0 / seconds as f64 * 100.0).round() / 100.0,
        })
    );
    Ok(())
}

fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .context("no VmRSS in /proc")
}

fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).context("bad /proc stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11).and_then(|u| u.parse::<f64>().ok()).unwrap_or(0.0)
        + fields.get(12).and_then(|s| s.parse::<f64>().ok()).unwrap_or(0.0);
    // USER_HZ is 100 on Linux.
    Ok(ticks / 100.0)
}
