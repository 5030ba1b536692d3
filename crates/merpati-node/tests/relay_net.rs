//! Integration tests of the relay role's networking: real nodes on 127.0.0.1 over TCP (Noise,
//! yamux). A relay with a stand-in mailbox service; user nodes that keep a reservation on it,
//! reach each other through its circuit, and send it mailbox requests.
//!
//! Every wait is an event with a deadline; nothing sleeps to synchronise.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use futures::future::BoxFuture;
use libp2p::identity::Keypair;
use libp2p::multiaddr::Protocol;
use libp2p::request_response::{self, ProtocolSupport, cbor};
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId, StreamProtocol};
use merpati_node::net::{
    self, Config, Event, Extras, Handle, Inbound, MailboxError, MailboxServer, RelayServer,
};
use merpati_proto::mailbox::{FetchToken, MailboxId};
use merpati_proto::wire::{self, Refusal, deliver, mailbox};
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
    undecodable: std::sync::atomic::AtomicU32,
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

    fn undecodable(&self) {
        self.undecodable.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
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
    let fetch = mailbox::Request::Fetch {
        tokens: vec![FetchToken { key: [2; 32], proof: [2; 64] }],
        after: None,
        limit: 8,
        wait_ms: 0,
    };
    let answer = user.handle.mailbox(relay.id(), vec![relay_addr.clone()], fetch).await;
    assert!(matches!(answer, Err(MailboxError::BadResponse { .. })), "{answer:?}");
    let delete =
        mailbox::Request::Delete { token: FetchToken { key: [2; 32], proof: [2; 64] }, ids: vec![1] };
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

/// A client of another make: it speaks the mailbox protocol's name but sends CBOR byte strings,
/// which are no mailbox request.
fn junk_client() -> libp2p::Swarm<cbor::Behaviour<serde_bytes::ByteBuf, serde_bytes::ByteBuf>> {
    libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(Default::default(), libp2p::noise::Config::new, libp2p::yamux::Config::default)
        .expect("tcp")
        .with_behaviour(|_| {
            let protocol = StreamProtocol::new(wire::MAILBOX_PROTOCOL);
            cbor::Behaviour::new([(protocol, ProtocolSupport::Outbound)], request_response::Config::default())
        })
        .expect("behaviour")
        .build()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_mailbox_requests_are_reported_to_the_service() {
    let server = Arc::new(Recorder::default());
    let relay = start_relay(server.clone()).await;
    let relay_addr = relay.addr().await;
    let mut client = junk_client();
    client.add_peer_address(relay.id(), relay_addr);
    client.behaviour_mut().send_request(&relay.id(), serde_bytes::ByteBuf::from(vec![0xde, 0xad]));
    // The relay gives no answer: the request fails on the client's side.
    timeout(WAIT, async {
        loop {
            if let SwarmEvent::Behaviour(request_response::Event::OutboundFailure { .. }) =
                client.select_next_some().await
            {
                return;
            }
        }
    })
    .await
    .expect("the junk request ends");
    timeout(WAIT, async {
        while server.undecodable.load(std::sync::atomic::Ordering::Relaxed) == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("reported");
    assert_eq!(server.undecodable.load(std::sync::atomic::Ordering::Relaxed), 1);
    assert!(server.seen.lock().expect("lock").is_empty(), "nothing reached the service as a request");
    relay.stop().await;
}

/// A Kademlia client of another make, speaking the relay's DHT protocol.
fn kad_client() -> libp2p::Swarm<libp2p::kad::Behaviour<libp2p::kad::store::MemoryStore>> {
    libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(Default::default(), libp2p::noise::Config::new, libp2p::yamux::Config::default)
        .expect("tcp")
        .with_behaviour(|key| {
            let id = key.public().to_peer_id();
            let config = libp2p::kad::Config::new(StreamProtocol::new("/merpati/kad/1.0.0"));
            let mut kad =
                libp2p::kad::Behaviour::with_config(id, libp2p::kad::store::MemoryStore::new(id), config);
            kad.set_mode(Some(libp2p::kad::Mode::Client));
            kad
        })
        .expect("behaviour")
        .build()
}

/// Drives `swarm` until `pick` accepts one of its events.
async fn next_matching<B: libp2p::swarm::NetworkBehaviour, T>(
    swarm: &mut libp2p::Swarm<B>,
    mut pick: impl FnMut(SwarmEvent<B::ToSwarm>) -> Option<T>,
) -> T {
    timeout(WAIT, async {
        loop {
            if let Some(found) = pick(swarm.select_next_some().await) {
                return found;
            }
        }
    })
    .await
    .expect("event in time")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_keeps_no_dht_records_or_providers_for_strangers() {
    use libp2p::kad::{self, GetProvidersOk, GetRecordOk, QueryResult, Quorum, Record, RecordKey};
    let relay = start_relay(Arc::new(Recorder::default())).await;
    let relay_addr = relay.addr().await;
    let key = RecordKey::new(&b"free storage".to_vec());

    let mut writer = kad_client();
    writer.behaviour_mut().add_address(&relay.id(), relay_addr.clone());
    let record = Record::new(key.clone(), b"a stranger's value".to_vec());
    writer.behaviour_mut().put_record(record, Quorum::One).expect("put starts");
    writer.behaviour_mut().start_providing(key.clone()).expect("provide starts");
    let mut finished = 0;
    next_matching(&mut writer, |event| {
        if let SwarmEvent::Behaviour(kad::Event::OutboundQueryProgressed {
            result: QueryResult::PutRecord(_) | QueryResult::StartProviding(_),
            step,
            ..
        }) = event
            && step.last
        {
            finished += 1;
        }
        (finished == 2).then_some(())
    })
    .await;

    let mut reader = kad_client();
    reader.behaviour_mut().add_address(&relay.id(), relay_addr);
    reader.behaviour_mut().get_record(key.clone());
    let found = next_matching(&mut reader, |event| match event {
        SwarmEvent::Behaviour(kad::Event::OutboundQueryProgressed {
            result: QueryResult::GetRecord(r),
            ..
        }) => Some(matches!(r, Ok(GetRecordOk::FoundRecord(_)))),
        _ => None,
    })
    .await;
    assert!(!found, "the relay served a record a stranger put");
    reader.behaviour_mut().get_providers(key);
    let providers = next_matching(&mut reader, |event| match event {
        SwarmEvent::Behaviour(kad::Event::OutboundQueryProgressed {
            result: QueryResult::GetProviders(r),
            step,
            ..
        }) if step.last => Some(match r {
            Ok(GetProvidersOk::FoundProviders { providers, .. }) => providers.len(),
            _ => 0,
        }),
        _ => None,
    })
    .await;
    assert_eq!(providers, 0, "the relay served a stranger's provider record");
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identify_carries_a_signed_peer_record_of_the_relay() {
    let relay = start_relay(Arc::new(Recorder::default())).await;
    let relay_addr = relay.addr().await;
    let mut client = libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(Default::default(), libp2p::noise::Config::new, libp2p::yamux::Config::default)
        .expect("tcp")
        .with_behaviour(|key| {
            libp2p::identify::Behaviour::new(libp2p::identify::Config::new(
                "other/1.0.0".into(),
                key.public(),
            ))
        })
        .expect("behaviour")
        .build();
    client.dial(relay_addr).expect("dial");
    let info = next_matching(&mut client, |event| match event {
        SwarmEvent::Behaviour(libp2p::identify::Event::Received { info, .. }) => Some(info),
        _ => None,
    })
    .await;
    let envelope = info.signed_peer_record.expect("a signed peer record");
    let record = libp2p::core::PeerRecord::from_signed_envelope(envelope).expect("a valid signature");
    assert_eq!(record.peer_id(), relay.id());
    assert!(!record.addresses().is_empty());
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reservations_gauge_counts_holders_and_ignores_other_peers() {
    let gauge = prometheus_client::metrics::gauge::Gauge::<i64>::default();
    let extras = Extras {
        mailbox_server: Some(Arc::new(Recorder::default())),
        reservations_gauge: Some(gauge.clone()),
        ..Extras::default()
    };
    let relay = Node::start(config().with_relay_server(RelayServer::default()), extras).await;
    let relay_addr = relay.addr().await;
    let settles_at = |value: i64| {
        let gauge = gauge.clone();
        async move {
            timeout(WAIT, async {
                while gauge.get() != value {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            })
            .await
            .unwrap_or_else(|_| panic!("the gauge stayed at {}, not {value}", gauge.get()));
        }
    };
    let mut alice = Node::start(config(), Extras::default()).await;
    alice.handle.set_relays(vec![relay_addr.clone()]).await.expect("running");
    alice.wait_for(|e| matches!(e, Event::RelayReserved(_)).then_some(())).await;
    settles_at(1).await;
    // Peers without a reservation come and go: the count stays.
    for _ in 0..3 {
        let mut visitor = kad_client();
        visitor.dial(relay_addr.clone()).expect("dial");
        next_matching(&mut visitor, |e| matches!(e, SwarmEvent::ConnectionEstablished { .. }).then_some(()))
            .await;
        drop(visitor);
    }
    let user = Node::start(config(), Extras::default()).await;
    let deposit = mailbox::Request::Deposit { mailbox: MailboxId([3; 16]), envelope: vec![1; 64] };
    user.handle.mailbox(relay.id(), vec![relay_addr.clone()], deposit).await.expect("answered");
    user.stop().await;
    // A change that must not happen has no event to wait for: give the relay a moment.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(gauge.get(), 1, "a peer without a reservation changed the count");
    alice.stop().await;
    settles_at(0).await;
    relay.stop().await;
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
