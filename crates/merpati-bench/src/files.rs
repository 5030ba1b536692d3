//! `file-direct` and `file-relay`: a file of N MiB from A to B, as people send photos.
//!
//! * `file-direct`: A and B online and connected, no relay anywhere: B's node fetches the file
//!   from A's node. Timed from A's `send.file` until B's node has fetched and checked it all.
//! * `file-relay`: B is away when A sends; A's node uploads the file to relay R (timed from
//!   `send.file` until R holds every chunk, from R's metrics); then A goes away and B comes back:
//!   timed from B's start until its node has fetched and checked the file from R, so R is the
//!   only source (this includes B's start and the fetch of the description from its mailbox).
//!
//! Both report MiB/s at the median and peak RSS of each process; B's copy is read back through
//! `message.file` and compared with the original, so the figures are for correct transfers (and
//! B's peak RSS is given again after that read, as a save makes it).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use data_encoding::BASE64;
use merpati_control::protocol::method::{MessageFile, Messages, RelayAdd, RelayList, SendFile};
use merpati_control::protocol::{
    MessageFileParams, MessageId, MessagesParams, NoParams, RelayAddParams, SendFileParams,
};
use merpati_proto::blob::chunk_count;
use serde_json::{Value, json};

use crate::abuse::{metric, scrape};
use crate::offline::{create_identity, introduce, start_node};
use crate::util::{Daemon, Relay, Unit, free_port, mib, peak_rss_kib, report, round, summary};

/// Which way the file goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Via {
    /// From A's node to B's, no relay anywhere.
    Direct,
    /// Up to A's relay while B is away, down from it once A is away.
    Relay,
}

const PATIENCE: Duration = Duration::from_secs(300);

/// Waits until `node` has message `id`'s whole file.
fn wait_fetched(node: &Daemon, id: &MessageId) -> anyhow::Result<Instant> {
    let deadline = Instant::now() + PATIENCE;
    let mut client = node.client()?;
    loop {
        let page = client.call::<Messages>(MessagesParams {
            group: None,
            with: Some("alice".into()),
            limit: Some(20),
            before: None,
        })?;
        if page.messages.iter().any(|m| m.id == *id && m.file.as_ref().is_some_and(|f| f.here)) {
            return Ok(Instant::now());
        }
        if Instant::now() > deadline {
            bail!("the file did not arrive");
        }
        std::thread::sleep(Duration::from_millis(10));
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

/// Reads `node`'s copy of message `id`'s file back, slice by slice.
fn read_back(node: &Daemon, id: &MessageId) -> anyhow::Result<Vec<u8>> {
    let mut client = node.client()?;
    let mut data = Vec::new();
    loop {
        let slice =
            client.call::<MessageFile>(MessageFileParams { id: id.clone(), offset: data.len() as u64 })?;
        let bytes = BASE64.decode(slice.data.as_bytes())?;
        data.extend_from_slice(&bytes);
        if bytes.is_empty() || data.len() as u64 >= slice.size {
            return Ok(data);
        }
    }
}

fn send_file(alice: &Daemon, source: &Path) -> anyhow::Result<MessageId> {
    Ok(alice
        .client()?
        .call::<SendFile>(SendFileParams {
            to: "bob".into(),
            name: "photo.jpg".into(),
            media_type: "image/jpeg".into(),
            data: String::new(),
            path: Some(source.display().to_string()),
            caption: String::new(),
        })?
        .id)
}

pub(crate) fn run(exe: &Path, via: Via, size_mib: usize, runs: usize) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let metrics_port = free_port()?;
    let relay = match via {
        Via::Relay => Some(Relay::start(
            exe,
            &dir.path().join("relay"),
            &format!("metrics = \"127.0.0.1:{metrics_port}\"\n"),
        )?),
        Via::Direct => None,
    };
    let (a_home, b_home) = (dir.path().join("alice"), dir.path().join("bob"));
    create_identity(&a_home, "Alice")?;
    create_identity(&b_home, "Bob")?;
    let mut alice = start_node(exe, &a_home, free_port()?)?;
    let mut bob = start_node(exe, &b_home, free_port()?)?;
    if let Some(relay) = &relay {
        for node in [&alice, &bob] {
            node.client()?
                .call::<RelayAdd>(RelayAddParams { addr: relay.addr.to_string(), offline: false })?;
        }
    }
    introduce(&alice, &bob)?;

    let len = size_mib * 1024 * 1024;
    let chunks = f64::from(chunk_count(len as u64)?);
    let source = dir.path().join("photo.jpg");
    let bytes: Vec<u8> = (0..len as u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    std::fs::write(&source, &bytes)?;
    let (mut uploads, mut downloads) = (Vec::new(), Vec::new());
    let mut alice_peak = 0;
    let mut last = None;
    for _ in 0..runs {
        let id = match &relay {
            None => {
                let t0 = Instant::now();
                let id = send_file(&alice, &source)?;
                downloads.push(wait_fetched(&bob, &id)? - t0);
                id
            }
            Some(relay) => {
                drop(bob);
                wait_reserved(&alice)?;
                let stored = |_: ()| -> anyhow::Result<f64> {
                    Ok(metric(&scrape(metrics_port)?, "merpati_blob_chunks_stored_total").unwrap_or(0.0))
                };
                let before = stored(())?;
                let t0 = Instant::now();
                let id = send_file(&alice, &source)?;
                while stored(())? < before + chunks {
                    if t0.elapsed() > PATIENCE {
                        bail!("the upload did not finish");
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                uploads.push(t0.elapsed());
                alice_peak = alice_peak.max(peak_rss_kib(alice.pid())?);
                drop(alice);
                let t1 = Instant::now();
                bob = start_node(exe, &b_home, free_port()?)?;
                downloads.push(wait_fetched(&bob, &id)? - t1);
                alice = start_node(exe, &a_home, free_port()?)?;
                let _ = relay;
                id
            }
        };
        last = Some(id);
    }
    let id = last.context("no run")?;
    let bob_peak = peak_rss_kib(bob.pid())?;
    let relay_peak = relay.as_ref().map(|r| peak_rss_kib(r.pid())).transpose()?;
    if via == Via::Direct {
        alice_peak = peak_rss_kib(alice.pid())?;
    }
    if read_back(&bob, &id)? != bytes {
        bail!("B's copy of the file differs from the original");
    }
    let rate = |times: &[Duration]| -> Value {
        let mut sorted = times.to_vec();
        sorted.sort();
        sorted
            .get(sorted.len() / 2)
            .map_or(Value::Null, |median| json!(round(size_mib as f64 / median.as_secs_f64(), 1)))
    };
    let (scenario, what, figures) = match via {
        Via::Direct => (
            "file-direct",
            "A's send.file (path) until B's node has fetched and checked the whole file from A's node; no relay",
            json!({
                "send_to_fetched_ms": summary(downloads.clone(), Unit::Millis),
                "mib_per_second_at_median": rate(&downloads),
            }),
        ),
        Via::Relay => (
            "file-relay",
            "B away: A's send.file until A's relay holds every chunk; then A away: B's start until B's node has fetched and checked the file from the relay",
            json!({
                "upload_ms": summary(uploads.clone(), Unit::Millis),
                "upload_mib_per_second_at_median": rate(&uploads),
                "b_start_to_fetched_ms": summary(downloads.clone(), Unit::Millis),
                "download_mib_per_second_at_median": rate(&downloads),
            }),
        ),
    };
    let mut figures = figures;
    figures["peak_rss_mib"] = json!({
        "alice": round(mib(alice_peak), 1),
        "bob": round(mib(bob_peak), 1),
        "relay": relay_peak.map(|kib| round(mib(kib), 1)),
        "bob_after_reading_it_back": round(mib(peak_rss_kib(bob.pid())?), 1),
    });
    report(scenario, json!({ "file_mib": size_mib, "runs": runs, "what": what }), figures);
    Ok(())
}
