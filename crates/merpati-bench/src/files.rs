//! `file-relay`: a file of `size` MiB from A to B through A's relay R, with both nodes online and
//! directly connected (the description goes directly; the file goes up to R and down from it,
//! at the same time). Times, per run, from A's `send.file` until B's node has fetched and
//! checked the whole file (B's `message` notification with `file.here`), the throughput that
//! makes, and the peak RSS of A, B and R after all runs. B's copy is then read back through
//! `message.file` and compared with the original, so the figure is for a correct transfer (and
//! B's peak RSS is given again after that read, as a save makes it).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use data_encoding::BASE64;
use merpati_control::client::Notifications;
use merpati_control::protocol::method::{MessageFile, RelayAdd, RelayList, SendFile};
use merpati_control::protocol::{
    Direction, Event, MessageFileParams, MessageId, NoParams, RelayAddParams, SendFileParams,
};
use serde_json::json;

use crate::offline::{create_identity, introduce, start_node};
use crate::util::{Daemon, Relay, Unit, free_port, mib, peak_rss_kib, report, round, summary};

/// Waits until B's node says it holds message `id`'s whole file.
fn wait_fetched(events: &mut Notifications, id: &MessageId) -> anyhow::Result<Instant> {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        match events.next_event_until(deadline).context("waiting for the file")? {
            Event::Message(view)
                if view.direction == Direction::In
                    && view.id == *id
                    && view.file.as_ref().is_some_and(|file| file.here) =>
            {
                return Ok(Instant::now());
            }
            _ => {}
        }
    }
}

/// Waits until `node` holds a reservation on its relay (only a node listening through a relay
/// may upload files there).
fn wait_reserved(node: &Daemon) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !node.client()?.call::<RelayList>(NoParams {})?.relays.iter().any(|r| r.reserved) {
        if Instant::now() > deadline {
            bail!("no reservation on the relay");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// Reads B's copy of message `id`'s file back, slice by slice.
fn read_back(node: &Daemon, id: &MessageId) -> anyhow::Result<Vec<u8>> {
    let mut client = node.client()?;
    let mut data = Vec::new();
    loop {
        let slice =
            client.call::<MessageFile>(MessageFileParams { id: id.clone(), offset: data.len() as u64 })?;
        let bytes = BASE64.decode(slice.data.as_bytes())?;
        if bytes.is_empty() || data.len() as u64 + bytes.len() as u64 >= slice.size {
            data.extend_from_slice(&bytes);
            return Ok(data);
        }
        data.extend_from_slice(&bytes);
    }
}

pub(crate) fn run(exe: &Path, size_mib: usize, runs: usize) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let relay = Relay::start(exe, &dir.path().join("relay"), "")?;
    let (a_home, b_home) = (dir.path().join("alice"), dir.path().join("bob"));
    create_identity(&a_home, "Alice")?;
    create_identity(&b_home, "Bob")?;
    let alice = start_node(exe, &a_home, free_port()?)?;
    let bob = start_node(exe, &b_home, free_port()?)?;
    for node in [&alice, &bob] {
        node.client()?.call::<RelayAdd>(RelayAddParams { addr: relay.addr.to_string(), offline: false })?;
    }
    introduce(&alice, &bob)?;
    wait_reserved(&alice)?;

    let len = size_mib * 1024 * 1024;
    let source = dir.path().join("photo.jpg");
    let bytes: Vec<u8> = (0..len as u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    std::fs::write(&source, &bytes)?;
    let mut b_events = bob.client()?.subscribe()?;
    let mut client = alice.client()?;
    let mut times = Vec::with_capacity(runs);
    let mut first = None;
    for _ in 0..runs {
        let t0 = Instant::now();
        let sent = client.call::<SendFile>(SendFileParams {
            to: "bob".into(),
            name: "photo.jpg".into(),
            media_type: "image/jpeg".into(),
            data: String::new(),
            path: Some(source.display().to_string()),
            caption: String::new(),
        })?;
        times.push(wait_fetched(&mut b_events, &sent.id)? - t0);
        first.get_or_insert(sent.id);
    }
    let id = first.context("no run")?;
    let transfer_peaks = [peak_rss_kib(alice.pid())?, peak_rss_kib(bob.pid())?, peak_rss_kib(relay.pid())?];
    if read_back(&bob, &id)? != bytes {
        bail!("B's copy of the file differs from the original");
    }
    let median = {
        let mut sorted = times.clone();
        sorted.sort();
        sorted[sorted.len() / 2]
    };
    report(
        "file-relay",
        json!({
            "file_mib": size_mib,
            "runs": runs,
            "what": "A's send.file (path) until B's node has fetched and checked the whole file, through A's relay; A and B online and connected",
        }),
        json!({
            "send_to_fetched_ms": summary(times, Unit::Millis),
            "mib_per_second_at_median": round(size_mib as f64 / median.as_secs_f64(), 1),
            "peak_rss_mib_after_the_transfers": {
                "alice": round(mib(transfer_peaks[0]), 1),
                "bob": round(mib(transfer_peaks[1]), 1),
                "relay": round(mib(transfer_peaks[2]), 1),
            },
            "bob_peak_rss_mib_after_reading_it_back": round(mib(peak_rss_kib(bob.pid())?), 1),
        }),
    );
    Ok(())
}
