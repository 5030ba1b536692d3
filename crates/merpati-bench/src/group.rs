//! `group`: a text to a group of G [50] (the sender and G − 1 members), real daemons on 127.0.0.1.
//! For each of M [20] texts, one at a time: how long from the sender's `group.send` until each
//! member's node has stored it (its `message` notification), and until the last one has; and the
//! sender's CPU time per text (sealing G − 1 copies, delivering them, taking G − 1 receipts).
//!
//! Two runs: every member online and directly reachable; then half of them reachable only through
//! their mailboxes on relay R, as in `offline` (R keeps one reservation, which the bench holds, so
//! no circuit leads to them; they and the sender are restarted on new ports after the group is
//! set up, so the addresses each holds of the other are dead, and they long-poll R). The copies
//! deposited at R are counted from its metrics. The members are the sender's contacts and it
//! theirs; they are not each other's.

use std::path::Path;
use std::sync::mpsc::{Receiver, sync_channel};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use merpati_control::protocol::method::{ContactAdd, GroupCreate, GroupSend, GroupShow, Invite, RelayAdd};
use merpati_control::protocol::{
    ContactAddParams, Direction, Event, GroupCreateParams, GroupParams, GroupSendParams, NoParams,
    RelayAddParams,
};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::offline::{create_identity, start_node};
use crate::util::{self, Daemon, Relay, Unit, cpu_seconds, free_port, report, round, summary};

/// The group's name.
const GROUP: &str = "bench";

pub(crate) fn run(exe: &Path, members: usize, messages: usize) -> anyhow::Result<()> {
    let online = run_case(exe, members, messages, false)?;
    let via_relay = run_case(exe, members, messages, true)?;
    report(
        "group",
        json!({
            "members": members,
            "messages": messages,
            "text_bytes": 110,
            "what": "one text at a time to a group of G (the sender included): until each member's node stored it, until all had; the sender's CPU per text",
        }),
        json!({ "all_online": online, "half_via_relay": via_relay }),
    );
    Ok(())
}

/// One run: `members` in the group with the sender, half of them behind R if `relay_half`.
fn run_case(exe: &Path, members: usize, messages: usize, relay_half: bool) -> anyhow::Result<Value> {
    let others = members.saturating_sub(1).max(1);
    let dir = tempfile::tempdir()?;
    let metrics_port = free_port()?;
    let extra = format!("max_reservations = 1\nmetrics = \"127.0.0.1:{metrics_port}\"\n");
    let relay = Relay::start(exe, &dir.path().join("relay"), &extra)?;
    let runtime = util::runtime()?;
    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    // The bench holds R's only reservation: no circuit leads to the members behind it.
    let placeholder = runtime.block_on(util::hold_reservation(&relay, &shutdown))?;

    let sender_home = dir.path().join("sender");
    create_identity(&sender_home, "Sender")?;
    let mut sender = start_node(exe, &sender_home, free_port()?)?;
    let behind = |i: usize| relay_half && i % 2 == 1;
    let homes: Vec<_> = (0..others).map(|i| dir.path().join(format!("m{i:03}"))).collect();
    let mut nodes: Vec<Daemon> = Vec::with_capacity(others);
    for (i, home) in homes.iter().enumerate() {
        create_identity(home, &format!("m{i:03}"))?;
        let node = start_node(exe, home, free_port()?)?;
        if behind(i) {
            node.client()?
                .call::<RelayAdd>(RelayAddParams { addr: relay.addr.to_string(), offline: false })?;
        }
        nodes.push(node);
    }
    let sender_invite = sender.client()?.call::<Invite>(NoParams {})?.invite;
    let mut names = Vec::with_capacity(others);
    for (i, node) in nodes.iter().enumerate() {
        let name = format!("m{i:03}");
        let invite = node.client()?.call::<Invite>(NoParams {})?.invite;
        sender.client()?.call::<ContactAdd>(ContactAddParams { invite, name: name.clone() })?;
        node.client()?
            .call::<ContactAdd>(ContactAddParams { invite: sender_invite.clone(), name: "sender".into() })?;
        names.push(name);
    }
    sender.client()?.call::<GroupCreate>(GroupCreateParams { name: GROUP.into(), members: names })?;
    let deadline = Instant::now() + Duration::from_secs(120);
    for node in &nodes {
        while node.client()?.call::<GroupShow>(GroupParams { group: GROUP.into() }).is_err() {
            if Instant::now() > deadline {
                bail!("a member never got the group");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    // Behind R: stopped, and started on new ports, so the address the sender holds is dead.
    let mut restarted = Vec::with_capacity(others);
    for (i, node) in nodes.into_iter().enumerate() {
        if behind(i) {
            drop(node);
            restarted.push(start_node(exe, &homes[i], free_port()?)?);
        } else {
            restarted.push(node);
        }
    }
    let nodes = restarted;
    // The sender too, so no member reaches it at the address it holds: a member behind R that
    // dialled the sender with a receipt would open the way for the sender's next copies.
    if relay_half {
        drop(sender);
        sender = start_node(exe, &sender_home, free_port()?)?;
    }
    let arrivals = listen(&nodes)?;
    let mut client = sender.client()?;
    // A warm-up text: the sender finds the members behind R unreachable and goes to R.
    client.call::<GroupSend>(GroupSendParams { group: GROUP.into(), text: "warm-up".into() })?;
    wait_all(&arrivals, "warm-up", others, Instant::now())?;

    let counter = |name: &str| -> anyhow::Result<f64> {
        let metrics = crate::abuse::scrape(metrics_port)?;
        Ok(crate::abuse::metric(&metrics, name).unwrap_or(0.0))
    };
    let deposits = || counter("merpati_mailbox_deposits_total");
    let declined = || counter("merpati_mailbox_long_polls_declined_total");
    let (deposits_before, declined_before) = (deposits()?, declined()?);
    let cpu_before = cpu_seconds(sender.pid())?;
    let mut each = Vec::with_capacity(messages * others);
    let mut all = Vec::with_capacity(messages);
    for i in 0..messages {
        let text = format!("group {i:04} {}", "x".repeat(100));
        let t0 = Instant::now();
        client.call::<GroupSend>(GroupSendParams { group: GROUP.into(), text: text.clone() })?;
        let latencies = wait_all(&arrivals, &text, others, t0)?;
        all.push(latencies.iter().copied().max().unwrap_or_default());
        each.extend(latencies);
    }
    // The last receipts come in.
    std::thread::sleep(Duration::from_millis(500));
    let cpu = cpu_seconds(sender.pid())? - cpu_before;
    // Every copy for a member behind R is a deposit there (their receipts go to the sender's node).
    let deposited = deposits()? - deposits_before;
    // On loopback every member reaches R from one network, whose long-poll slots are capped: a
    // member declined one polls again later instead of waiting for the deposit.
    let long_polls_declined = declined()? - declined_before;
    drop(placeholder);
    Ok(json!({
        "members_behind_relay": (0..others).filter(|i| behind(*i)).count(),
        "copies_deposited_at_relay": deposited,
        "long_polls_declined_at_relay": long_polls_declined,
        "each_member_ms": summary(each, Unit::Millis),
        "all_members_ms": summary(all, Unit::Millis),
        "sender_cpu_ms_per_text": round(cpu * 1e3 / messages.max(1) as f64, 2),
    }))
}

/// Each member's incoming texts, with when they arrived.
fn listen(nodes: &[Daemon]) -> anyhow::Result<Receiver<(String, Instant)>> {
    let (tx, rx) = sync_channel(1 << 16);
    for node in nodes {
        let mut events = node.client()?.subscribe()?;
        let tx = tx.clone();
        std::thread::spawn(move || {
            while let Ok(event) = events.next_event() {
                if let Event::Message(view) = event
                    && view.direction == Direction::In
                    && tx.send((view.text, Instant::now())).is_err()
                {
                    return;
                }
            }
        });
    }
    Ok(rx)
}

/// Waits until `count` members stored `text`; returns how long after `t0` each did.
fn wait_all(
    arrivals: &Receiver<(String, Instant)>,
    text: &str,
    count: usize,
    t0: Instant,
) -> anyhow::Result<Vec<Duration>> {
    let mut latencies = Vec::with_capacity(count);
    while latencies.len() < count {
        let (got, at) = arrivals.recv_timeout(Duration::from_secs(60)).with_context(|| {
            format!("waiting for {text:?}: {} of {count} members have it", latencies.len())
        })?;
        if got == text {
            latencies.push(at.saturating_duration_since(t0));
        }
    }
    Ok(latencies)
}
