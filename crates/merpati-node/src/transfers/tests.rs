//! The upload and download tasks against a real relay (`relay::run`, in process, on 127.0.0.1):
//! an upload that finds part of the blob at the relay puts only the rest, and a download that
//! finds part of the file in its spool fetches only the rest.

use std::time::Duration;

use libp2p::identity::Keypair;
use merpati_control::home::Home;
use merpati_proto::rand_core::SeedableRng;
use merpati_proto::wire::blob::Request;
use rand_chacha::ChaCha20Rng;
use tokio::time::timeout;

use super::*;
use crate::relay::run::{RelayOptions, run};
use merpati_proto::wire::Refusal;
use merpati_proto::wire::blob::Response;

const WAIT: Duration = Duration::from_secs(30);

async fn user() -> (net::Handle, net::Inbound, CancellationToken) {
    let config = net::Config::default()
        .with_listen_addrs(vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()])
        .with_mdns(false);
    let shutdown = CancellationToken::new();
    let (handle, inbound, _task) =
        net::spawn(config, Keypair::generate_ed25519(), shutdown.clone()).await.unwrap();
    (handle, inbound, shutdown)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_and_downloads_resume_from_what_is_already_there() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Clock::system();
    let mut options = RelayOptions::new(Home::at(dir.path().join("relay")).unwrap());
    options.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()];
    let relay_stop = CancellationToken::new();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let relay_task = tokio::spawn(run(options, relay_stop.clone(), move |ready| {
        let _ = ready_tx.send((ready.peer_id.clone(), ready.listen[0].clone()));
    }));
    let (relay_id, relay_addr) = timeout(WAIT, ready_rx).await.unwrap().unwrap();
    let (relay, relay_addr): (PeerId, Multiaddr) = (relay_id.parse().unwrap(), relay_addr.parse().unwrap());

    let (alice, mut alice_events, alice_stop) = user().await;
    alice.set_relays(vec![relay_addr.clone()]).await.unwrap();
    timeout(WAIT, async {
        while !matches!(alice_events.recv().await, Some(net::Event::RelayReserved(_))) {}
    })
    .await
    .unwrap();
    let (bob, _bob_events, bob_stop) = user().await;

    // A 1 MiB file: 17 pieces, padded to 20 chunks.
    let source = dir.path().join("scan.pdf");
    let data: Vec<u8> = (0..1024 * 1024u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8).collect();
    std::fs::write(&source, &data).unwrap();
    let alice_spool = Spool::new(dir.path().join("alice/blobs"));
    let blob_id = BlobId([3; 16]);
    let mut rng = ChaCha20Rng::seed_from_u64(9);
    let sent = alice_spool.encrypt(&mut rng, &blob_id.0, &source).unwrap();
    assert_eq!(sent.count, 20);
    let (write, read) = (BlobSecret::generate(&mut rng), BlobSecret::generate(&mut rng));

    // Half of it is at the relay already (an upload cut short by a restart).
    let relay_bytes = relay.to_bytes();
    let create = Request::Create {
        blob_id,
        chunks: sent.count,
        write_hash: write.write_token(&relay_bytes).hash(),
        read_hashes: vec![read.read_token(&relay_bytes).hash()],
    };
    alice.blob(relay, vec![relay_addr.clone()], create).await.unwrap();
    for index in 0..10 {
        let chunk = Spool::read_chunk(&alice_spool.outgoing(&blob_id.0), index).unwrap();
        let put = Request::Put { token: write.write_token(&relay_bytes), blob_id, index, chunk };
        alice.blob(relay, vec![relay_addr.clone()], put).await.unwrap();
    }
    let message = MessageId([1; 16]);
    let (reports, mut progress) = mpsc::channel(1024);
    let upload = Upload {
        message,
        blob_id,
        count: sent.count,
        write: write.clone(),
        read: read.clone(),
        relay,
        addrs: vec![relay_addr.clone()],
        path: alice_spool.outgoing(&blob_id.0),
    };
    let outcome =
        timeout(WAIT, upload.run(alice.clone(), reports.clone(), CancellationToken::new())).await.unwrap();
    assert!(matches!(outcome, Uploaded::Done), "{outcome:?}");
    let first = progress.recv().await.unwrap();
    assert_eq!(first, Report::Uploading { message, relay, held: 10, count: 20 }, "the relay's status, first");
    let mut last = first;
    while let Ok(report) = progress.try_recv() {
        last = report;
    }
    assert_eq!(last, Report::Uploading { message, relay, held: 20, count: 20 });

    // Bob holds no reservation at the relay: his upload waits, and says why.
    let (waiting_reports, mut waiting_progress) = mpsc::channel(16);
    let paced = Upload {
        message: MessageId([2; 16]),
        blob_id: BlobId([4; 16]),
        count: sent.count,
        write: BlobSecret::from_bytes([0x55; 32]),
        read: BlobSecret::from_bytes([0x56; 32]),
        relay,
        addrs: vec![relay_addr.clone()],
        path: alice_spool.outgoing(&blob_id.0),
    };
    let stop_paced = CancellationToken::new();
    let paced_task = tokio::spawn(paced.run(bob.clone(), waiting_reports, stop_paced.clone()));
    let report = timeout(WAIT, waiting_progress.recv()).await.unwrap().unwrap();
    let Report::Waiting { message: waiting_for, why } = report else { panic!("{report:?}") };
    assert_eq!(waiting_for, MessageId([2; 16]));
    assert!(why.contains("listen through it"), "{why}");
    stop_paced.cancel();
    assert!(matches!(timeout(WAIT, paced_task).await.unwrap().unwrap(), Uploaded::Cancelled));

    // Someone else's upload under an id the relay already keeps is refused for good, not retried.
    let (intruder_reports, _intruder_progress) = mpsc::channel(1024);
    let intruder = Upload {
        message,
        blob_id,
        count: sent.count,
        write: BlobSecret::from_bytes([0x77; 32]),
        read: BlobSecret::from_bytes([0x78; 32]),
        relay,
        addrs: vec![relay_addr.clone()],
        path: alice_spool.outgoing(&blob_id.0),
    };
    let outcome =
        timeout(WAIT, intruder.run(alice.clone(), intruder_reports, CancellationToken::new())).await.unwrap();
    assert!(matches!(outcome, Uploaded::Refused(Refusal::Unauthorized)), "{outcome:?}");

    // Bob had fetched the first 7 chunks before a restart.
    let bob_spool = Spool::new(dir.path().join("bob/blobs"));
    let incoming = bob_spool.incoming(&blob_id.0);
    let file = Spool::open_incoming(&incoming, sent.count).unwrap();
    for index in 0..7 {
        let chunk = Spool::read_chunk(&alice_spool.outgoing(&blob_id.0), index).unwrap();
        Spool::write_chunk(&file, &incoming, index, &chunk).unwrap();
    }
    let download = Download {
        message,
        blob_id,
        key: sent.key.clone(),
        read,
        count: sent.count,
        len: sent.len,
        hash: sent.hash,
        expires_at: clock.now().plus(BLOB_LIFETIME),
        sources: vec![(relay, vec![relay_addr.clone()])],
        path: incoming.clone(),
    };
    let outcome = timeout(WAIT, download.run(bob.clone(), clock.clone(), reports, CancellationToken::new()))
        .await
        .unwrap();
    assert!(matches!(outcome, Downloaded::Done), "{outcome:?}");
    let first = progress.recv().await.unwrap();
    assert_eq!(first, Report::Downloading { message, held: 7, count: 20 }, "what the spool held, first");
    let whole =
        Spool::read_plain(&incoming, &sent.key, &blob_id.0, sent.count, sent.len, 0, data.len()).unwrap();
    assert!(whole[..] == data[..], "the file arrives whole");

    for stop in [alice_stop, bob_stop, relay_stop] {
        stop.cancel();
    }
    timeout(WAIT, relay_task).await.unwrap().unwrap().unwrap();
}

/// A download's transfer as the engine keeps it, from a source that never answers.
fn download_of(n: u8, clock: &Clock) -> Transfer {
    let len = 100_000;
    let file = Descriptor {
        len,
        hash: [n; 32],
        media_type: "image/png".into(),
        name: format!("{n}.png"),
        caption: String::new(),
        thumbnail: Vec::new(),
        content: Content::Blob {
            blob_id: [n; 16],
            key: merpati_proto::blob::BlobKey::from_bytes([n; 32]),
            read_secret: zeroize::Zeroizing::new([n; 32]),
            count: merpati_proto::blob::chunk_count(len).unwrap(),
            expires_at: clock.now().plus(BLOB_LIFETIME),
            from_sender: false,
            sources: vec![merpati_proto::blob::Source {
                peer_id: PeerId::random().to_bytes(),
                addrs: Vec::new(),
            }],
        },
    };
    Transfer { descriptor: file.encode().unwrap(), side: TransferSide::Download { failed: None } }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downloads_wait_their_turn_and_deleted_ones_stop() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Clock::system();
    let (net, _events, stop) = user().await;
    let spool = Spool::new(dir.path().join("blobs"));
    let server = SpoolServer::new(&PeerId::random(), spool.clone(), clock.clone());
    let (mut transfers, _reports) = Transfers::new(spool, server, net, clock.clone());
    let kept: Vec<(MessageId, Transfer)> =
        (1..=6).map(|n| (MessageId([n; 16]), download_of(n, &clock))).collect();
    for (id, transfer) in &kept {
        transfers.start(*id, transfer, false, None);
        transfers.start(*id, transfer, false, None);
    }
    assert_eq!(
        (transfers.downloads, transfers.waiting.len()),
        (MAX_DOWNLOADS, 2),
        "started once each, four at a time"
    );
    // A file already here, or expired at its sources, needs no download.
    transfers.start(MessageId([7; 16]), &download_of(7, &clock), true, None);
    let expired = download_of(8, &Clock::with_offset(-(BLOB_LIFETIME as i64) - 1));
    transfers.start(MessageId([8; 16]), &expired, false, None);
    assert_eq!(transfers.running.len(), MAX_DOWNLOADS);

    // The first two messages are deleted: their downloads stop, and the waiting ones take over.
    transfers.sweep(&kept[2..]);
    for _ in 0..2 {
        let finished = timeout(WAIT, transfers.next_finished()).await.unwrap().unwrap();
        assert!(
            matches!(finished, Finished::Download { outcome: Downloaded::Cancelled, .. }),
            "{finished:?}"
        );
    }
    assert_eq!((transfers.downloads, transfers.waiting.len()), (MAX_DOWNLOADS, 0));
    transfers.shutdown().await;
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_serves_its_own_files_to_their_readers_only() {
    use crate::net::BlobServer as _;
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::new(dir.path().join("blobs"));
    let source = dir.path().join("notes.txt");
    std::fs::write(&source, vec![5u8; 200_000]).unwrap();
    let blob_id = BlobId([6; 16]);
    let sent = spool.encrypt(&mut ChaCha20Rng::seed_from_u64(4), &blob_id.0, &source).unwrap();
    let me = PeerId::random();
    let clock = Clock::system();
    let server = SpoolServer::new(&me, spool.clone(), clock.clone());
    let read = BlobSecret::from_bytes([8; 32]);
    let get = |token| Request::Get { token, blob_id, first: 1, count: 16 };
    let ask = |request| server.serve(PeerId::random(), None, false, request);

    assert_eq!(
        ask(get(read.read_token(&me.to_bytes()))).await,
        Response::Refused(Refusal::UnknownBlob),
        "not offered yet"
    );
    server.offer(blob_id, sent.count, &read, clock.now().plus(BLOB_LIFETIME));
    let Response::Chunks { chunks } = ask(get(read.read_token(&me.to_bytes()))).await else {
        panic!("no chunks")
    };
    assert_eq!(chunks.len(), sent.count as usize - 1, "from the first asked for to the last");
    assert_eq!(chunks[0].as_ref(), Spool::read_chunk(&spool.outgoing(&blob_id.0), 1).unwrap());
    let elsewhere = read.read_token(&PeerId::random().to_bytes());
    assert_eq!(
        ask(get(elsewhere)).await,
        Response::Refused(Refusal::Unauthorized),
        "a token for another node"
    );
    let put =
        Request::Put { token: read.read_token(&me.to_bytes()), blob_id, index: 0, chunk: vec![0; 65_536] };
    assert_eq!(ask(put).await, Response::Refused(Refusal::Unauthorized), "it keeps no one else's files");
    let ack = Request::Ack { token: read.read_token(&me.to_bytes()), blob_id };
    assert_eq!(ask(ack).await, Response::Acked);
    // Past the description's expiry, nothing is served.
    clock.advance(BLOB_LIFETIME as i64);
    assert_eq!(
        ask(get(read.read_token(&me.to_bytes()))).await,
        Response::Refused(Refusal::UnknownBlob),
        "expired"
    );
    clock.advance(-(BLOB_LIFETIME as i64));
    server.retain(&std::collections::HashSet::new());
    assert_eq!(
        ask(get(read.read_token(&me.to_bytes()))).await,
        Response::Refused(Refusal::UnknownBlob),
        "withdrawn"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_whose_sources_never_answer_gives_up_when_the_clock_passes_its_expiry() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Clock::system();
    let (net, _events, stop) = user().await;
    let len = 200_000;
    let download = Download {
        message: MessageId([9; 16]),
        blob_id: BlobId([9; 16]),
        key: merpati_proto::blob::BlobKey::from_bytes([9; 32]),
        read: BlobSecret::from_bytes([9; 32]),
        count: merpati_proto::blob::chunk_count(len).unwrap(),
        len,
        hash: [9; 32],
        expires_at: clock.now().plus(2 * Timestamp::DAY),
        // A peer with no address: every ask fails at once.
        sources: vec![(PeerId::random(), Vec::new())],
        path: dir.path().join("in").join("file"),
    };
    let (reports, _progress) = mpsc::channel(64);
    let task = tokio::spawn(download.run(net, clock.clone(), reports, CancellationToken::new()));
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(!task.is_finished(), "it keeps trying while its sources may still come");
    clock.advance(2 * Timestamp::DAY as i64);
    let outcome = timeout(WAIT, task).await.unwrap().unwrap();
    assert!(matches!(&outcome, Downloaded::Failed(why) if why.contains("expired")), "{outcome:?}");
    stop.cancel();
}
