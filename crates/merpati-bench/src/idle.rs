//! `idle`: one user node with a relay reservation and 10 contacts, idle for T seconds: its
//! resident memory, CPU time, and network bytes, extrapolated per hour.
//!
//! Bytes are counted by a TCP proxy in this process that sits between the node and its relay: the
//! node is given the relay's address with the proxy's port (same peer id; Noise runs end to end
//! through it), so every byte of its relay connection (reservation renewals, pings, the mailbox
//! long poll, identify, Kademlia) passes through the proxy and is counted at the TCP payload
//! level (no IP/TCP headers). The 10 contacts are real identities whose daemons were stopped after
//! their invites were made, so they are offline; the node's other established TCP connections
//! are listed from `ss` at the end to show nothing bypassed the proxy.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::bail;
use merpati_control::protocol::method::{ContactAdd, Invite, RelayAdd, RelayList};
use merpati_control::protocol::{ContactAddParams, NoParams, RelayAddParams};
use merpati_node::local::LocalNode;
use serde_json::json;

use crate::util::{Relay, cpu_seconds, mib, peak_rss_kib, report, round, rss_kib};

const CONTACTS: [&str; 10] = ["C0", "C1", "C2", "C3", "C4", "C5", "C6", "C7", "C8", "C9"];

/// Bytes through the proxy: node to relay, relay to node.
#[derive(Default)]
struct Counters {
    up: AtomicU64,
    down: AtomicU64,
}

fn pump(mut from: TcpStream, mut to: TcpStream, counter: Arc<Counters>, up: bool) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
                let c = if up { &counter.up } else { &counter.down };
                c.fetch_add(n as u64, Ordering::Relaxed);
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

/// A counting TCP proxy on 127.0.0.1 to `target_port`; returns its port.
fn proxy(target_port: u16, counters: Arc<Counters>) -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let Ok(upstream) = TcpStream::connect(("127.0.0.1", target_port)) else { continue };
            let _ = stream.set_nodelay(true);
            let _ = upstream.set_nodelay(true);
            let (Ok(s2), Ok(u2)) = (stream.try_clone(), upstream.try_clone()) else { continue };
            let c1 = counters.clone();
            let c2 = counters.clone();
            std::thread::spawn(move || pump(stream, upstream, c1, true));
            std::thread::spawn(move || pump(u2, s2, c2, false));
        }
    });
    Ok(port)
}

/// The node's established TCP connections, from `ss`: (local, peer) addresses.
fn tcp_connections(pid: u32) -> Vec<(String, String)> {
    let Ok(out) = std::process::Command::new("ss").args(["-tnpH", "state", "established"]).output() else {
        return Vec::new();
    };
    let needle = format!("pid={pid},");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(&needle))
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            Some((f.get(2)?.to_string(), f.get(3)?.to_string()))
        })
        .collect()
}

pub(crate) fn run(exe: &Path, seconds: u64, quick: bool) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let relay = Relay::start(exe, &dir.path().join("relay"), "")?;
    let counters = Arc::new(Counters::default());
    let proxy_port = proxy(relay.port, counters.clone())?;
    let via_proxy = format!("/ip4/127.0.0.1/tcp/{proxy_port}/p2p/{}", relay.peer);

    let mut invites = Vec::new();
    for name in CONTACTS {
        let mut contact = LocalNode::create(name, dir.path(), exe)?;
        contact.start()?;
        invites.push(contact.client()?.call::<Invite>(NoParams {})?.invite);
        // Dropped: the contact's daemon stops; it stays a contact, offline.
    }
    let mut node = LocalNode::create("Idle", dir.path(), exe)?;
    node.start()?;
    let mut client = node.client()?;
    client.call::<RelayAdd>(RelayAddParams { addr: via_proxy, offline: false })?;
    for (invite, name) in invites.into_iter().zip(CONTACTS) {
        client.call::<ContactAdd>(ContactAddParams { invite, name: name.to_lowercase() })?;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while !client.call::<RelayList>(NoParams {})?.relays.first().is_some_and(|r| r.reserved) {
        if Instant::now() > deadline {
            bail!("the node got no reservation on its relay");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(client);
    // Let start-up traffic (identify, the first fetch, AutoNAT) settle before measuring.
    std::thread::sleep(Duration::from_secs(if quick { 1 } else { 5 }));

    let pid = node.pid().ok_or_else(|| anyhow::anyhow!("the node is not running"))?;
    let cpu0 = cpu_seconds(pid)?;
    let (up0, down0) = (counters.up.load(Ordering::Relaxed), counters.down.load(Ordering::Relaxed));
    std::thread::sleep(Duration::from_secs(seconds));
    let cpu = cpu_seconds(pid)? - cpu0;
    let up = counters.up.load(Ordering::Relaxed) - up0;
    let down = counters.down.load(Ordering::Relaxed) - down0;
    let per_hour = 3600.0 / seconds as f64;
    let connections = tcp_connections(pid);
    let others: Vec<String> = connections
        .iter()
        .filter(|(_, peer)| !peer.ends_with(&format!(":{proxy_port}")))
        .map(|(local, peer)| format!("{local} -> {peer}"))
        .collect();
    report(
        "idle",
        json!({
            "seconds": seconds,
            "contacts": CONTACTS.len(),
            "contacts_online": 0,
            "relays": 1,
            "what": "bytes: TCP payload through a counting proxy between the node and its relay",
        }),
        json!({
            "rss_mib": mib(rss_kib(pid)?),
            "peak_rss_mib": mib(peak_rss_kib(pid)?),
            "cpu_seconds": round(cpu, 3),
            "cpu_seconds_per_hour": round(cpu * per_hour, 2),
            "bytes_sent": up,
            "bytes_received": down,
            "kib_per_hour": round((up + down) as f64 * per_hour / 1024.0, 1),
            "sent_kib_per_hour": round(up as f64 * per_hour / 1024.0, 1),
            "received_kib_per_hour": round(down as f64 * per_hour / 1024.0, 1),
            "tcp_connections": connections.len(),
            "tcp_connections_not_through_proxy": others,
        }),
    );
    Ok(())
}
