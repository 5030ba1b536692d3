//! The relay's file store over the network: a real relay (`relay::run`, its sled database on
//! disk) on 127.0.0.1, and user nodes speaking `/merpati/blob/1` to it over TCP with Noise. Only a
//! node holding a reservation uploads; a reader's token opens the chunks; what is stored survives
//! a restart of the relay; an acked blob is gone, and the rest expire when the relay's clock has
//! moved past their TTL.

use std::time::Duration;

use libp2p::identity::Keypair;
use libp2p::{Multiaddr, PeerId};
use merpati_control::home::Home;
use merpati_node::clock::Clock;
use merpati_node::net::{self, Config, Event, Handle, Inbound};
use merpati_node::relay::run::{RelayOptions, run};
use merpati_proto::Timestamp;
use merpati_proto::blob::{BlobSecret, Encryptor, open_chunk};
use merpati_proto::wire::Refusal;
use merpati_proto::wire::blob::{BlobId, Request, Response};
use tokio::task::JoinHandle;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(20);

struct Relay {
    id: PeerId,
    addr: Multiaddr,
    shutdown: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Relay {
    async fn start(home: &std::path::Path, clock: &Clock) -> Self {
        let mut options = RelayOptions::new(Home::at(home).expect("home"));
        options.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().expect("multiaddr")];
        options.clock = clock.clone();
        let shutdown = CancellationToken::new();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(run(options, shutdown.clone(), move |ready| {
            let _ = ready_tx.send((ready.peer_id.clone(), ready.listen[0].clone()));
        }));
        let (id, addr) = timeout(WAIT, ready_rx).await.expect("ready in time").expect("relay started");
        Self { id: id.parse().expect("peer id"), addr: addr.parse().expect("address"), shutdown, task }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        timeout(WAIT, self.task).await.expect("stops in time").expect("no panic").expect("clean stop");
    }
}

struct User {
    handle: Handle,
    inbound: Inbound,
    shutdown: CancellationToken,
}

impl User {
    async fn start() -> Self {
        let config = Config::default()
            .with_listen_addrs(vec!["/ip4/127.0.0.1/tcp/0".parse().expect("multiaddr")])
            .with_mdns(false)
            .with_dial_timeout(Duration::from_secs(5));
        let shutdown = CancellationToken::new();
        let (handle, inbound, _task) =
            net::spawn(config, Keypair::generate_ed25519(), shutdown.clone()).await.expect("spawn");
        Self { handle, inbound, shutdown }
    }

    async fn reserve(&mut self, relay: &Relay) {
        self.handle.set_relays(vec![relay.addr.clone()]).await.expect("running");
        timeout(WAIT, async {
            loop {
                match self.inbound.recv().await.expect("network running") {
                    Event::RelayReserved(peer) if peer == relay.id => return,
                    _ => {}
                }
            }
        })
        .await
        .expect("reserved in time");
    }

    async fn ask(&self, relay: &Relay, request: Request) -> Response {
        self.handle.blob(relay.id, vec![relay.addr.clone()], request).await.expect("an answer")
    }
}

/// A file encrypted into its chunks, with the secrets to write and read it.
struct File {
    id: BlobId,
    count: u32,
    chunks: Vec<Vec<u8>>,
    encryptor_key: merpati_proto::blob::BlobKey,
    write: BlobSecret,
    read: BlobSecret,
}

impl File {
    fn new(n: u8, len: usize) -> Self {
        let id = BlobId([n; 16]);
        let mut rng = rand::rng();
        let mut encryptor = Encryptor::new(&mut rng, &id.0, len as u64).expect("encryptor");
        let mut chunks = encryptor.push(&vec![n; len]).expect("push");
        while let Some(chunk) = encryptor.next_tail().expect("tail") {
            chunks.push(chunk);
        }
        Self {
            id,
            count: encryptor.count(),
            chunks,
            encryptor_key: encryptor.key().clone(),
            write: BlobSecret::generate(&mut rng),
            read: BlobSecret::generate(&mut rng),
        }
    }

    fn create(&self, relay: &Relay) -> Request {
        let relay = relay.id.to_bytes();
        Request::Create {
            blob_id: self.id,
            chunks: self.count,
            write_hash: self.write.write_token(&relay).hash(),
            read_hashes: vec![self.read.read_token(&relay).hash()],
        }
    }

    fn put(&self, relay: &Relay, index: u32) -> Request {
        Request::Put {
            token: self.write.write_token(&relay.id.to_bytes()),
            blob_id: self.id,
            index,
            chunk: self.chunks[index as usize].clone(),
        }
    }

    fn get(&self, relay: &Relay) -> Request {
        Request::Get {
            token: self.read.read_token(&relay.id.to_bytes()),
            blob_id: self.id,
            first: 0,
            count: 16,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_keeps_files_for_its_users_and_hands_them_to_their_readers() {
    let home = tempfile::tempdir().expect("tempdir");
    let clock = Clock::system();
    let relay = Relay::start(home.path(), &clock).await;
    let mut alice = User::start().await;
    let bob = User::start().await;
    alice.reserve(&relay).await;

    let photo = File::new(1, 150_000);
    assert_eq!(photo.count, 3);
    // Bob listens through no relay here: he may read, not upload.
    assert_eq!(bob.ask(&relay, photo.create(&relay)).await, Response::Refused(Refusal::NotReserved));

    let Response::Created { expires_at } = alice.ask(&relay, photo.create(&relay)).await else {
        panic!("not created")
    };
    let month = 30 * Timestamp::DAY;
    assert!(expires_at.abs_diff(clock.now().0 + month) < 60_000, "kept for the TTL");
    for index in [0, 2] {
        assert_eq!(alice.ask(&relay, photo.put(&relay, index)).await, Response::Stored);
    }
    let status = Request::Status { token: photo.write.write_token(&relay.id.to_bytes()), blob_id: photo.id };
    assert_eq!(alice.ask(&relay, status.clone()).await, Response::Present { stored: vec![0b101] });
    assert_eq!(
        bob.ask(&relay, photo.get(&relay)).await,
        Response::Chunks { chunks: vec![photo.chunks[0].clone().into()] },
        "up to the first chunk not yet there"
    );
    assert_eq!(alice.ask(&relay, photo.put(&relay, 1)).await, Response::Stored);

    // A token made for another relay opens nothing here.
    let elsewhere = Request::Get {
        token: photo.read.read_token(b"another relay"),
        blob_id: photo.id,
        first: 0,
        count: 1,
    };
    assert_eq!(bob.ask(&relay, elsewhere).await, Response::Refused(Refusal::Unauthorized));

    // What was answered `Stored` is on disk: it survives a restart of the relay.
    let document = File::new(2, 10);
    assert!(matches!(alice.ask(&relay, document.create(&relay)).await, Response::Created { .. }));
    assert_eq!(alice.ask(&relay, document.put(&relay, 0)).await, Response::Stored);
    relay.stop().await;
    let relay = Relay::start(home.path(), &clock).await;
    alice.reserve(&relay).await;

    let Response::Chunks { chunks } = bob.ask(&relay, photo.get(&relay)).await else { panic!("no chunks") };
    assert_eq!(chunks.len(), 3);
    for (index, chunk) in chunks.iter().enumerate() {
        let piece = open_chunk(&photo.encryptor_key, &photo.id.0, photo.count, index as u32, chunk);
        assert!(piece.is_ok(), "chunk {index} opens");
    }
    let ack = Request::Ack { token: photo.read.read_token(&relay.id.to_bytes()), blob_id: photo.id };
    assert_eq!(bob.ask(&relay, ack).await, Response::Acked);
    assert_eq!(
        bob.ask(&relay, photo.get(&relay)).await,
        Response::Refused(Refusal::UnknownBlob),
        "every reader has it"
    );
    assert_eq!(alice.ask(&relay, status).await, Response::Refused(Refusal::UnknownBlob));

    // A month later the document nobody fetched is gone too.
    assert!(
        matches!(bob.ask(&relay, document.get(&relay)).await, Response::Chunks { chunks } if chunks.len() == 1)
    );
    clock.advance(i64::try_from(month).expect("fits"));
    assert_eq!(bob.ask(&relay, document.get(&relay)).await, Response::Refused(Refusal::UnknownBlob));

    alice.shutdown.cancel();
    bob.shutdown.cancel();
    relay.stop().await;
}
