//! Integration tests of the relay role's networking: real nodes on 127.0.0.1 over TCP (Noise,
//! yamux). A relay with a stand-in mailbox service; user nodes that keep a reservation on it,
//! reach each other through its circuit, and send it mailbox requests.
//!
//! Every wait is an event with a deadline; nothing sleeps to synchronise.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use libp2p::identity::Keypair;
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};
use merpati_node::net::{
    self, Config, Event, Extras, Handle, Inbound, MailboxError, MailboxServer, RelayServer,
};
use merpati_proto::mailbox::{FetchToken, MailboxId};
use merpati_proto::wire::{Refusal, deliver, mailbox};
use tokio::task::JoinHandle;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(15);

fn config() -> Config {
    Config::default()
        .with_listen_addrs(vec!["/ip4/127.0.0.1/tcp/0".parse().expect("multiaddr")])
        .with_mdns(false)
        .with_dial_timeout(Duration::from_secs(5))
        .with_request_timeout(Duration::from_secs(5))
        .with_deliver_timeout(WAIT)
}

struct Node {
    handle: Handle,
    inbound: Inbound,
    task: JoinHandle<()>,
    shutdown: CancellationToken,
}

impl Node {
    async fn start(config: Config, extras: Extras) -> Self {
        Self::start_as(Keypair::generate_ed25519(), config, extras).await
    }

    async fn start_as(keypair: Keypair, config: Config, extras: Extras) -> Self {
        let shutdown = CancellationToken::new();
        let (handle, inbound, task) =
            timeout(WAIT, net::spawn_with(config, keypair, extras, shutdown.clone()))
                .await
                .expect("spawn in time")
                .expect("spawn");
        Self { handle, inbound, task, shutdown }
    }

    fn id(&self) -> PeerId {
        self.handle.local_peer_id()
    }

    async fn addr(&self) -> Multiaddr {
        self.handle.listen_addrs().await.into_iter().next().expect("a listen address")
    }

    /// Waits for the first event `pick` accepts, answering deliveries `Accepted` meanwhile.
    async fn wait_for<T>(&mut self, mut pick: impl FnMut(&Event) -> Option<T>) -> T {
        timeout(WAIT, async {
            loop {
                let event = self.inbound.recv().await.expect("network running");
                let found = pick(&event);
                if let Event::Delivery { reply, .. } = event {
                    reply.send(deliver::Response::Accepted);
                }
                if let Some(found) = found {
                    return found;
                }
            }
        })
        .await
        .expect("event in time")
    }

    async fn stop(self) {
        self.shutdown.cancel();
        timeout(WAIT, self.task).await.expect("stops in time").expect("no panic");
    }
}

/// A mailbox service that remembers what it was asked and stores deposits in memory.
#[derive(Default)]
struct Recorder {
    seen: Mutex<Vec<(PeerId, Option<IpAddr>)>>,
    stored: Mutex<Vec<(MailboxId, Vec<u8>)>>,
}

impl MailboxServer for Recorder {
    fn serve(
        &self,
        peer: PeerId,
        ip: Option<IpAddr>,
        request: mailbox::Request,
    ) -> BoxFuture<'static, mailbox::Response> {
        self.seen.lock().expect("lock").push((peer, ip));
        let response = match request {
            mailbox::Request::Deposit { mailbox, envelope } => {
                let mut stored = self.stored.lock().expect("lock");
                stored.push((mailbox, envelope));
                mailbox::Response::Stored { id: stored.len() as u64 }
            }
            mailbox::Request::Fetch { .. } => mailbox::Response::Envelopes {
                // Against the protocol: an envelope of a mailbox nobody asked for.
                items: vec![mailbox::StoredEnvelope {
                    mailbox: MailboxId([7; 16]),
                    id: 1,
                    envelope: vec![1],
                }],
                more: false,
            },
            mailbox::Request::Delete { .. } => mailbox::Response::Refused(Refusal::Unauthorized),
        };
        Box::pin(async move { response })
    }
}

async fn start_relay(server: Arc<Recorder>) -> Node {
    let extras = Extras { mailbox_server: Some(server), ..Extras::default() };
    Node::start(config().with_relay_server(RelayServer::default()), extras).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_behind_a_relay_is_reached_through_its_circuit() {
    let relay = start_relay(Arc::default()).await;
    let relay_addr = relay.addr().await;
    let mut alice = Node::start(config(), Extras::default()).await;
    let bob = Node::start(config(), Extras::default()).await;

    alice.handle.set_relays(vec![relay_addr.clone()]).await.expect("running");
    alice.wait_for(|e| matches!(e, Event::RelayReserved(p) if *p == relay.id()).then_some(())).await;
    let status = alice.handle.relays().await;
    assert_eq!(status.len(), 1);
    assert!(status[0].reserved);

    // Bob knows only the circuit address: relay, then Alice.
    let circuit = relay_addr.with(Protocol::P2pCircuit).with(Protocol::P2p(alice.id()));
    let sender = tokio::spawn({
        let handle = bob.handle.clone();
        let alice = alice.id();
        async move { handle.deliver(alice, vec![circuit], b"through the relay".to_vec()).await }
    });
    let envelope = alice
        .wait_for(|e| match e {
            Event::Delivery { request, .. } => Some(request.envelope.clone()),
            _ => None,
        })
        .await;
    assert_eq!(envelope, b"through the relay");
    let answer = timeout(WAIT, sender).await.expect("answer in time").expect("no panic");
    assert_eq!(answer.expect("delivered"), deliver::Response::Accepted);

    // Dropping the relay from the set releases the reservation.
    alice.handle.set_relays(Vec::new()).await.expect("running");
    assert!(alice.handle.relays().await.is_empty());
    for node in [alice, bob, relay] {
        node.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mailbox_requests_reach_the_service_and_bad_answers_are_dropped() {
    let server = Arc::new(Recorder::default());
    let relay = start_relay(server.clone()).await;
    let relay_addr = relay.addr().await;
    let user = Node::start(config(), Extras::default()).await;

    let deposit = mailbox::Request::Deposit { mailbox: MailboxId([1; 16]), envelope: vec![9; 100] };
    let answer = user.handle.mailbox(relay.id(), vec![relay_addr.clone()], deposit).await;
    assert_eq!(answer.expect("stored"), mailbox::Response::Stored { id: 1 });
    assert_eq!(server.stored.lock().expect("lock")[0], (MailboxId([1; 16]), vec![9; 100]));
    let seen = server.seen.lock().expect("lock")[0];
    assert_eq!(seen, (user.id(), Some("127.0.0.1".parse().expect("ip"))));

    // The stand-in answers a fetch with another mailbox's envelope: the client refuses it.
    let fetch =
        mailbox::Request::Fetch { tokens: vec![FetchToken([2; 32])], after: None, limit: 8, wait_ms: 0 };
    let answer = user.handle.mailbox(relay.id(), vec![relay_addr.clone()], fetch).await;
    assert!(matches!(answer, Err(MailboxError::BadResponse { .. })), "{answer:?}");
    let delete = mailbox::Request::Delete { token: FetchToken([2; 32]), ids: vec![1] };
    let answer = user.handle.mailbox(relay.id(), vec![relay_addr], delete).await;
    assert_eq!(answer.expect("answered"), mailbox::Response::Refused(Refusal::Unauthorized));

    // A user node keeps no mailboxes: asking one is a clear error, not a hang.
    let other = Node::start(config(), Extras::default()).await;
    let other_addr = other.addr().await;
    let deposit = mailbox::Request::Deposit { mailbox: MailboxId([1; 16]), envelope: vec![1] };
    let answer = user.handle.mailbox(other.id(), vec![other_addr], deposit).await;
    assert!(matches!(answer, Err(MailboxError::NotARelay { .. })), "{answer:?}");
    // Nor does a relay take deliveries: it does not even speak the protocol.
    let answer = user.handle.deliver(relay.id(), vec![relay.addr().await], vec![1; 512]).await;
    assert!(matches!(answer, Err(net::DeliverError::Unsupported { .. })), "{answer:?}");
    // Nor batches: the error a sender takes to fall back to single deliveries.
    let answer = user.handle.deliver_batch(relay.id(), vec![relay.addr().await], vec![vec![1; 512]; 2]).await;
    assert!(matches!(answer, Err(net::DeliverError::Unsupported { .. })), "{answer:?}");
    for node in [user, other, relay] {
        node.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_reservation_comes_back_when_the_relay_returns() {
    let keypair = Keypair::generate_ed25519();
    let relay_config = || config().with_relay_server(RelayServer::default());
    let relay = Node::start_as(keypair.clone(), relay_config(), Extras::default()).await;
    let relay_addr = relay.addr().await;
    let mut alice =
        Node::start(config().with_relay_retry_max(Duration::from_secs(2)), Extras::default()).await;
    alice.handle.set_relays(vec![relay_addr.clone()]).await.expect("running");
    alice.wait_for(|e| matches!(e, Event::RelayReserved(_)).then_some(())).await;

    // The relay goes away and comes back on the same port with the same identity; libp2p does
    // not listen through it again by itself, the reservation loop does.
    relay.stop().await;
    let direct: Multiaddr = relay_addr.iter().filter(|p| !matches!(p, Protocol::P2p(_))).collect();
    let relay =
        Node::start_as(keypair, relay_config().with_listen_addrs(vec![direct]), Extras::default()).await;
    alice.wait_for(|e| matches!(e, Event::RelayReserved(p) if *p == relay.id()).then_some(())).await;
    assert!(alice.handle.relays().await[0].reserved);
    alice.stop().await;
    relay.stop().await;
}
