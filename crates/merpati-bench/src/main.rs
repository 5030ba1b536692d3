//! `merpati-bench`: measures what users feel, with real `merpatid` processes on 127.0.0.1 (temp
//! homes) driven through the real protocols, and prints one JSON object per scenario:
//! `{"scenario", "params", "figures", "cores"}`.
//!
//! Scenarios (one module each): `crypto` (NDR1 in process), `direct` (daemon to daemon, both
//! online), `relay-deposit` and `relay-fetch` (a relay's mailboxes under load), `offline` (a
//! contact reachable only through its mailbox), `backlog` and `backlog-relay` (a contact coming
//! back to thousands of queued messages, directly or at its relay), `backlog-contacts` (a
//! backlog for many contacts), `many-contacts` (a node
//! with a long history), `idle` (a user node's idle cost) and
//! `connections` (a relay holding many idle connections), `abuse` (a relay under abusive clients
//! beside honest ones), `group` (a text to a group of 50, all online or half behind a relay). `--quick` runs small sizes, only to
//! check that every scenario works; its figures mean little.

mod abuse;
mod backlog;
mod backlog_contacts;
mod backlog_relay;
mod connections;
mod crypto;
mod direct;
mod files;
mod first_contacts;
mod group;
mod idle;
mod many_contacts;
mod offline;
mod relay;
mod util;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;
use clap::Parser;

/// Every scenario, in the order they run.
const SCENARIOS: [&str; 15] = [
    "crypto",
    "direct",
    "relay-deposit",
    "relay-fetch",
    "offline",
    "file-direct",
    "file-relay",
    "backlog",
    "backlog-relay",
    "backlog-contacts",
    "many-contacts",
    "idle",
    "connections",
    "abuse",
    "group",
];

/// Benchmarks of a real Merpati network on this machine.
#[derive(Debug, Parser)]
#[command(name = "merpati-bench")]
struct Args {
    /// Run only this scenario (repeatable): crypto, direct, relay-deposit, relay-fetch, offline,
    /// file-direct, file-relay, backlog, backlog-relay, backlog-contacts, many-contacts, idle, connections, abuse,
    /// group. All of them when absent.
    #[arg(long)]
    scenario: Vec<String>,
    /// Small sizes, to check that every scenario runs (the figures are not meaningful).
    #[arg(long)]
    quick: bool,
    /// `direct`: messages sent per window size.
    #[arg(long, default_value_t = 5000)]
    messages: usize,
    /// `direct`: messages kept in flight (repeatable).
    #[arg(long = "in-flight", default_values_t = [1, 64])]
    in_flight: Vec<usize>,
    /// `relay-*`: concurrent senders.
    #[arg(long, default_value_t = 8)]
    senders: usize,
    /// `relay-deposit`: deposits each sender keeps in flight (each still waits for `Stored`).
    #[arg(long, default_value_t = 1)]
    deposit_window: usize,
    /// `relay-*`: envelopes deposited.
    #[arg(long, default_value_t = 20_000)]
    envelopes: usize,
    /// `relay-*`: mailboxes they are spread over.
    #[arg(long, default_value_t = 100)]
    mailboxes: usize,
    /// `offline`: messages sent through the relay.
    #[arg(long, default_value_t = 1000)]
    offline_messages: usize,
    /// `file-direct`, `file-relay`: the file's size in MiB.
    #[arg(long, default_value_t = 10)]
    file_mib: usize,
    /// `file-direct`, `file-relay`: files sent, one after the other.
    #[arg(long, default_value_t = 5)]
    file_runs: usize,
    /// `backlog`, `backlog-relay`: messages queued while the contact is away.
    #[arg(long, default_value_t = 20_000)]
    backlog_messages: usize,
    /// `backlog-contacts`, `many-contacts`: the node's contacts.
    #[arg(long, default_value_t = 1000)]
    contacts: usize,
    /// `backlog-contacts`: messages queued for each contact.
    #[arg(long, default_value_t = 20)]
    backlog_per_contact: usize,
    /// `many-contacts`: messages stored from each contact.
    #[arg(long, default_value_t = 100)]
    messages_per_contact: usize,
    /// `idle`: seconds the node stays idle.
    #[arg(long, default_value_t = 120)]
    idle_seconds: u64,
    /// `connections`: idle connections the relay holds.
    #[arg(long, default_value_t = 2000)]
    connections: usize,
    /// `abuse`: abusive clients, each from a loopback address of its own.
    #[arg(long, default_value_t = 50)]
    abusers: usize,
    /// `abuse`: honest senders beside them.
    #[arg(long, default_value_t = 8)]
    honest: usize,
    /// `abuse`: seconds the honest traffic is measured alone, then under the abuse.
    #[arg(long, default_value_t = 20)]
    abuse_seconds: u64,
    /// `abuse`: strangers flooding a person's node with first contacts.
    #[arg(long, default_value_t = 500)]
    strangers: usize,
    /// `group`: the group's members, the sender included.
    #[arg(long, default_value_t = 50)]
    group_members: usize,
    /// `group`: texts sent to the group, one at a time.
    #[arg(long, default_value_t = 20)]
    group_messages: usize,
    /// The merpatid binary; default: next to this one.
    #[arg(long)]
    merpatid: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    for name in &args.scenario {
        if !SCENARIOS.contains(&name.as_str()) {
            bail!("unknown scenario {name:?}; the scenarios are {}", SCENARIOS.join(", "));
        }
    }
    let exe = match &args.merpatid {
        Some(path) => path.clone(),
        None => std::env::current_exe()?.with_file_name("merpatid"),
    };
    if !exe.exists() {
        bail!("{} not found: build it first (cargo build --release -p merpati-node)", exe.display());
    }
    let run = |name: &str| args.scenario.is_empty() || args.scenario.iter().any(|s| s == name);
    let quick = args.quick;
    if run("crypto") {
        crypto::run(quick)?;
    }
    if run("direct") {
        direct::run(&exe, if quick { 50 } else { args.messages }, &args.in_flight)?;
    }
    if run("relay-deposit") || run("relay-fetch") {
        let params = if quick {
            relay::Params { senders: 4, window: args.deposit_window, envelopes: 2000, mailboxes: 20 }
        } else {
            relay::Params {
                senders: args.senders,
                window: args.deposit_window.max(1),
                envelopes: args.envelopes,
                mailboxes: args.mailboxes,
            }
        };
        relay::run(&exe, params, run("relay-deposit"), run("relay-fetch"))?;
    }
    if run("offline") {
        offline::run(&exe, if quick { 20 } else { args.offline_messages })?;
    }
    let (file_mib, file_runs) =
        if quick { (1, 1) } else { (args.file_mib.clamp(1, 25), args.file_runs.max(1)) };
    if run("file-direct") {
        files::run(&exe, files::Via::Direct, file_mib, file_runs)?;
    }
    if run("file-relay") {
        files::run(&exe, files::Via::Relay, file_mib, file_runs)?;
    }
    if run("backlog") {
        backlog::run(&exe, if quick { 200 } else { args.backlog_messages.max(1) })?;
    }
    if run("backlog-relay") {
        backlog_relay::run(&exe, if quick { 200 } else { args.backlog_messages.max(1) })?;
    }
    if run("backlog-contacts") {
        let (contacts, per_contact) =
            if quick { (20, 5) } else { (args.contacts.max(1), args.backlog_per_contact.max(1)) };
        backlog_contacts::run(&exe, contacts, per_contact)?;
    }
    if run("many-contacts") {
        let params = if quick {
            many_contacts::Params { contacts: 20, per_contact: 10, idle: Duration::from_secs(1) }
        } else {
            many_contacts::Params {
                contacts: args.contacts.max(1),
                per_contact: args.messages_per_contact.max(1),
                idle: Duration::from_secs(10),
            }
        };
        many_contacts::run(&exe, &params)?;
    }
    if run("idle") {
        idle::run(&exe, if quick { 5 } else { args.idle_seconds }, quick)?;
    }
    if run("connections") {
        connections::run(&exe, if quick { 100 } else { args.connections })?;
    }
    if run("abuse") {
        let params = if quick {
            abuse::Params {
                abusers: 6,
                honest: 2,
                baseline: Duration::from_secs(2),
                attack: Duration::from_secs(4),
                strangers: 20,
            }
        } else {
            let seconds = Duration::from_secs(args.abuse_seconds.max(1));
            abuse::Params {
                abusers: args.abusers.max(1),
                honest: args.honest.clamp(1, 200),
                baseline: seconds,
                attack: seconds,
                strangers: args.strangers.max(1),
            }
        };
        abuse::run(&exe, params)?;
    }
    if run("group") {
        let (members, messages) =
            if quick { (6, 3) } else { (args.group_members.clamp(2, 100), args.group_messages.max(1)) };
        group::run(&exe, members, messages)?;
    }
    Ok(())
}
