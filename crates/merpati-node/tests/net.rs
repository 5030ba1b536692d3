//! Integration tests of `merpati_node::net`: real nodes on 127.0.0.1 over TCP and QUIC (Noise,
//! yamux), driven through `Handle` and answered by a stand-in for the engine.
//!
//! Every wait is an event with a deadline; nothing sleeps to synchronise.

use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::future::join_all;
use libp2p::identity::Keypair;
use libp2p::multiaddr::Protocol;
use libp2p::request_response::{self, ProtocolSupport, cbor};
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId, StreamProtocol, SwarmBuilder, noise, tcp, yamux};
use merpati_node::net::{self, Config, DeliverError, Event, Handle, Inbound, NetError};
use merpati_proto::envelope::MAX_ENVELOPE_LEN;
use merpati_proto::wire::{self, Refusal, WireError, deliver};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

/// The longest any single step may take before the test fails.
const WAIT: Duration = Duration::from_secs(10);
const TCP: &str = "/ip4/127.0.0.1/tcp/0";
const QUIC: &str = "/ip4/127.0.0.1/udp/0/quic-v1";

fn addr(text: &str) -> Multiaddr {
    text.parse().expect("multiaddr")
}

/// A test node: loopback only, no mDNS (it skips loopback anyway), short timeouts.
fn config(listen: &[&str]) -> Config {
    Config::default()
        .with_listen_addrs(listen.iter().map(|a| addr(a)).collect())
        .with_mdns(false)
        .with_dial_timeout(Duration::from_secs(5))
        .with_request_timeout(Duration::from_secs(5))
        .with_deliver_timeout(WAIT)
}

struct Node {
    handle: Handle,
    inbound: Option<Inbound>,
    task: JoinHandle<()>,
    shutdown: CancellationToken,
}

impl Node {
    async fn start(listen: &[&str]) -> Self {
        Self::with_config(config(listen)).await
    }

    async fn with_config(config: Config) -> Self {
        let shutdown = CancellationToken::new();
        let (handle, inbound, task) =
            timeout(WAIT, net::spawn(config, Keypair::generate_ed25519(), shutdown.clone()))
                .await
                .expect("spawn in time")
                .expect("spawn");
        Self { handle, inbound: Some(inbound), task, shutdown }
    }

    fn id(&self) -> PeerId {
        self.handle.local_peer_id()
    }

    fn take_inbound(&mut self) -> Inbound {
        self.inbound.take().expect("inbound taken once")
    }

    async fn addrs(&self) -> Vec<Multiaddr> {
        self.handle.listen_addrs().await
    }

    async fn stop(self) {
        self.shutdown.cancel();
        timeout(WAIT, self.task)
            .await
            .expect("network task ends in time")
            .expect("network task did not panic");
    }
}

/// What the engine stand-in saw, in order.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    Connected(PeerId),
    Delivery(PeerId, Vec<u8>),
    Batch(PeerId, Vec<Vec<u8>>),
}

/// An engine stand-in: answers each delivery with `answer(envelope)` (dropping the reply on
/// `None`) and reports what it saw.
fn engine(
    mut inbound: Inbound,
    answer: fn(&[u8]) -> Option<deliver::Response>,
) -> (mpsc::Receiver<Seen>, JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(1024);
    let task = tokio::spawn(async move {
        while let Some(event) = inbound.recv().await {
            let seen = match event {
                Event::Delivery { peer, request, reply } => {
                    match answer(&request.envelope) {
                        Some(response) => reply.send(response),
                        None => drop(reply),
                    }
                    Seen::Delivery(peer, request.envelope)
                }
                Event::Deliveries { peer, batch, reply } => {
                    let answers: Option<Vec<_>> = batch.envelopes.iter().map(|e| answer(e)).collect();
                    match answers {
                        Some(answers) => reply.send(answers),
                        None => drop(reply),
                    }
                    Seen::Batch(peer, batch.envelopes.into_iter().map(|e| e.into_vec()).collect())
                }
                Event::PeerConnected(peer) => Seen::Connected(peer),
                Event::Discovered { .. } | Event::RelayReserved(_) => continue,
            };
            if tx.send(seen).await.is_err() {
                break;
            }
        }
    });
    (rx, task)
}

fn accept(_: &[u8]) -> Option<deliver::Response> {
    Some(deliver::Response::Accepted)
}

async fn next_seen(seen: &mut mpsc::Receiver<Seen>) -> Seen {
    timeout(WAIT, seen.recv()).await.expect("engine event in time").expect("engine running")
}

/// The next delivery the engine saw, skipping connection events.
async fn next_delivery(seen: &mut mpsc::Receiver<Seen>) -> (PeerId, Vec<u8>) {
    loop {
        if let Seen::Delivery(peer, envelope) = next_seen(seen).await {
            return (peer, envelope);
        }
    }
}

async fn deliver(from: &Node, to: &Node, envelope: &[u8]) -> Result<deliver::Response, DeliverError> {
    from.handle.deliver(to.id(), to.addrs().await, envelope.to_vec()).await
}

#[tokio::test]
async fn delivers_over_tcp() {
    let a = Node::start(&[TCP]).await;
    let mut b = Node::start(&[TCP]).await;
    let (mut seen, _engine) = engine(b.take_inbound(), accept);

    let b_addrs = b.addrs().await;
    assert!(!b_addrs.is_empty());
    for a in &b_addrs {
        assert_eq!(a.iter().last(), Some(Protocol::P2p(b.id())), "{a} ends in /p2p/<peer id>");
    }

    assert_eq!(deliver(&a, &b, b"hello").await.expect("delivered"), deliver::Response::Accepted);
    assert_eq!(next_seen(&mut seen).await, Seen::Connected(a.id()));
    assert_eq!(next_seen(&mut seen).await, Seen::Delivery(a.id(), b"hello".to_vec()));
    assert_eq!(a.handle.connected_peers().await, vec![b.id()]);
    assert_eq!(b.handle.connected_peers().await, vec![a.id()]);

    // Over the open connection, and the other way round on it too.
    assert_eq!(deliver(&a, &b, b"again").await.expect("delivered"), deliver::Response::Accepted);
    assert_eq!(next_seen(&mut seen).await, Seen::Delivery(a.id(), b"again".to_vec()));

    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn delivers_over_quic() {
    let a = Node::start(&[QUIC]).await;
    let mut b = Node::start(&[QUIC]).await;
    let (mut seen, _engine) = engine(b.take_inbound(), accept);

    let b_addrs = b.addrs().await;
    assert!(!b_addrs.is_empty());
    assert!(b_addrs.iter().all(|a| a.iter().any(|p| p == Protocol::QuicV1)), "{b_addrs:?}");

    assert_eq!(deliver(&a, &b, b"over quic").await.expect("delivered"), deliver::Response::Accepted);
    assert_eq!(next_delivery(&mut seen).await, (a.id(), b"over quic".to_vec()));

    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn delivers_to_addresses_added_before() {
    let a = Node::start(&[TCP]).await;
    let mut b = Node::start(&[TCP, QUIC]).await;
    let (mut seen, _engine) = engine(b.take_inbound(), accept);

    a.handle.add_addresses(b.id(), b.addrs().await).await.expect("running");
    let response = a.handle.deliver(b.id(), Vec::new(), b"known".to_vec()).await.expect("delivered");
    assert_eq!(response, deliver::Response::Accepted);
    assert_eq!(next_delivery(&mut seen).await, (a.id(), b"known".to_vec()));

    a.stop().await;
    b.stop().await;
}

/// Refuses envelopes that start with 0, accepts the others.
fn refuse_zeros(envelope: &[u8]) -> Option<deliver::Response> {
    Some(if envelope.first() == Some(&0) {
        deliver::Response::Refused(Refusal::MailboxFull)
    } else {
        deliver::Response::Accepted
    })
}

#[tokio::test]
async fn a_batch_arrives_whole_in_order_and_each_envelope_gets_its_own_answer() {
    let a = Node::start(&[TCP]).await;
    let mut b = Node::start(&[TCP]).await;
    let (mut seen, _engine) = engine(b.take_inbound(), refuse_zeros);

    let envelopes: Vec<Vec<u8>> = (0..wire::MAX_BATCH_ENVELOPES as u8).map(|i| vec![i % 3, i]).collect();
    let answers = a.handle.deliver_batch(b.id(), b.addrs().await, envelopes.clone()).await.expect("answered");
    let expected: Vec<_> = envelopes.iter().map(|e| refuse_zeros(e).unwrap()).collect();
    assert_eq!(answers, expected);
    let batch = loop {
        match timeout(WAIT, seen.recv()).await.expect("in time").expect("seen") {
            Seen::Batch(peer, batch) => break (peer, batch),
            Seen::Connected(_) => continue,
            other => panic!("expected a batch, saw {other:?}"),
        }
    };
    assert_eq!(batch, (a.id(), envelopes));

    // Over the limits, nothing is sent.
    let too_many = vec![vec![1]; wire::MAX_BATCH_ENVELOPES + 1];
    let error = a.handle.deliver_batch(b.id(), Vec::new(), too_many).await.expect_err("too many");
    assert!(matches!(error, DeliverError::Invalid(_)), "{error:?}");

    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn refusal_reaches_the_sender() {
    let a = Node::start(&[TCP]).await;
    let mut b = Node::start(&[TCP]).await;
    let (mut seen, _engine) =
        engine(b.take_inbound(), |_| Some(deliver::Response::Refused(Refusal::MailboxFull)));

    let response = deliver(&a, &b, b"no room").await.expect("answered");
    assert_eq!(response, deliver::Response::Refused(Refusal::MailboxFull));
    assert_eq!(next_delivery(&mut seen).await, (a.id(), b"no room".to_vec()));

    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn dropped_reply_is_an_internal_refusal() {
    let a = Node::start(&[TCP]).await;
    let mut b = Node::start(&[TCP]).await;
    let (mut seen, _engine) = engine(b.take_inbound(), |_| None);

    let started = Instant::now();
    let response = deliver(&a, &b, b"lost").await.expect("answered");
    assert_eq!(response, deliver::Response::Refused(Refusal::Internal));
    // An answer, not the request timeout running out.
    assert!(started.elapsed() < Duration::from_secs(4), "took {:?}", started.elapsed());
    assert_eq!(next_delivery(&mut seen).await, (a.id(), b"lost".to_vec()));

    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn nothing_listening_is_unreachable() {
    let a = Node::start(&[TCP]).await;
    // A port that was just free: nothing listens on it.
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let nowhere = addr(&format!("/ip4/127.0.0.1/tcp/{port}"));
    let stranger = Keypair::generate_ed25519().public().to_peer_id();

    let started = Instant::now();
    let error =
        a.handle.deliver(stranger, vec![nowhere], b"anyone?".to_vec()).await.expect_err("unreachable");
    assert!(matches!(error, DeliverError::Unreachable { peer, .. } if peer == stranger), "{error:?}");
    assert!(started.elapsed() < WAIT);
    assert!(!error.to_string().is_empty());

    // No address at all fails the same way, at once.
    let error = a.handle.deliver(stranger, Vec::new(), b"anyone?".to_vec()).await.expect_err("no address");
    assert!(matches!(error, DeliverError::Unreachable { .. }), "{error:?}");

    a.stop().await;
}

#[tokio::test]
async fn nothing_listening_over_quic_is_unreachable_after_the_dial_timeout() {
    // No refusal comes back over UDP: the dial runs into its timeout, kept short here.
    let dial_timeout = Duration::from_secs(1);
    let a = Node::with_config(config(&[QUIC]).with_dial_timeout(dial_timeout)).await;
    let port = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let nowhere = addr(&format!("/ip4/127.0.0.1/udp/{port}/quic-v1"));
    let stranger = Keypair::generate_ed25519().public().to_peer_id();

    let started = Instant::now();
    let error =
        a.handle.deliver(stranger, vec![nowhere], b"anyone?".to_vec()).await.expect_err("unreachable");
    assert!(matches!(error, DeliverError::Unreachable { peer, .. } if peer == stranger), "{error:?}");
    assert!(started.elapsed() >= dial_timeout && started.elapsed() < WAIT, "took {:?}", started.elapsed());

    a.stop().await;
}

#[tokio::test]
async fn engine_gone_is_an_internal_refusal() {
    let a = Node::start(&[TCP]).await;
    let mut b = Node::start(&[TCP]).await;
    drop(b.take_inbound());

    let response = deliver(&a, &b, b"anyone?").await.expect("answered");
    assert_eq!(response, deliver::Response::Refused(Refusal::Internal));

    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn starts_and_stops_with_mdns() {
    // Discovery itself depends on the host's interfaces and multicast; this checks the
    // behaviour is built and runs.
    let a = Node::with_config(config(&[TCP]).with_mdns(true)).await;
    assert!(!a.addrs().await.is_empty());
    a.stop().await;
}

/// A bare libp2p client for the deliver protocol that, unlike `Handle`, sends whatever it is
/// given, as a misbehaving peer would.
struct RawClient {
    swarm: libp2p::Swarm<cbor::Behaviour<deliver::Request, deliver::Response>>,
}

impl RawClient {
    fn new() -> Self {
        let codec = cbor::codec::Codec::default().set_request_size_maximum(1 << 20);
        let swarm = SwarmBuilder::with_new_identity()
            .with_tokio()
            .with_tcp(tcp::Config::default(), noise::Config::new, yamux::Config::default)
            .expect("tcp")
            .with_behaviour(|_| {
                cbor::Behaviour::with_codec(
                    codec,
                    [(StreamProtocol::new(wire::DELIVER_PROTOCOL), ProtocolSupport::Outbound)],
                    request_response::Config::default(),
                )
            })
            .expect("behaviour")
            .build();
        Self { swarm }
    }

    /// Sends `envelope` to `peer` and returns its answer, or the failure as text.
    async fn send(
        &mut self,
        peer: PeerId,
        addrs: Vec<Multiaddr>,
        envelope: Vec<u8>,
    ) -> Result<deliver::Response, String> {
        let id = self.swarm.behaviour_mut().send_request_with_addresses(
            &peer,
            deliver::Request { envelope },
            addrs,
        );
        loop {
            let event = timeout(WAIT, self.swarm.select_next_some()).await.expect("raw client event in time");
            match event {
                SwarmEvent::Behaviour(request_response::Event::Message {
                    message: request_response::Message::Response { request_id, response },
                    ..
                }) if request_id == id => return Ok(response),
                SwarmEvent::Behaviour(request_response::Event::OutboundFailure {
                    request_id, error, ..
                }) if request_id == id => {
                    return Err(error.to_string());
                }
                _ => {}
            }
        }
    }
}

#[tokio::test]
async fn oversized_requests_fail_cleanly() {
    let a = Node::start(&[TCP]).await;
    let mut b = Node::start(&[TCP]).await;
    let (mut seen, _engine) = engine(b.take_inbound(), accept);

    // Our own handle refuses to send what the wire limits forbid.
    let error = deliver(&a, &b, &vec![7; wire::MAX_REQUEST_LEN + 1]).await.expect_err("too large");
    assert!(matches!(error, DeliverError::Invalid(WireError::TooLarge { .. })), "{error:?}");
    let error = deliver(&a, &b, &[]).await.expect_err("empty");
    assert!(matches!(error, DeliverError::Invalid(_)), "{error:?}");

    // A peer that sends anyway: above the codec's limit the request is cut off and dropped…
    let mut raw = RawClient::new();
    let b_addrs = b.addrs().await;
    let failure = raw.send(b.id(), b_addrs.clone(), vec![7; 2 * wire::MAX_REQUEST_LEN]).await;
    assert!(failure.is_err(), "{failure:?}");
    // …and between the envelope limit and the request limit it is refused with the limit.
    let refused = raw.send(b.id(), b_addrs.clone(), vec![7; MAX_ENVELOPE_LEN + 1]).await.expect("answered");
    let max = u32::try_from(MAX_ENVELOPE_LEN).expect("fits");
    assert_eq!(refused, deliver::Response::Refused(Refusal::TooLarge { max }));
    // The same connection still serves a good request.
    let fine = raw.send(b.id(), b_addrs, vec![7; MAX_ENVELOPE_LEN]).await.expect("answered");
    assert_eq!(fine, deliver::Response::Accepted);

    // The node goes on serving others; the engine saw only the good envelope.
    assert_eq!(deliver(&a, &b, b"next").await.expect("delivered"), deliver::Response::Accepted);
    let (_, first) = next_delivery(&mut seen).await;
    assert_eq!(first.len(), MAX_ENVELOPE_LEN);
    assert_eq!(next_delivery(&mut seen).await, (a.id(), b"next".to_vec()));

    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_in_order() {
    let a = Node::start(&[TCP]).await;
    let mut b = Node::start(&[TCP]).await;
    let (mut seen, _engine) = engine(b.take_inbound(), accept);
    let b_addrs = b.addrs().await;

    for i in 0u32..200 {
        let response =
            a.handle.deliver(b.id(), b_addrs.clone(), i.to_be_bytes().to_vec()).await.expect("delivered");
        assert_eq!(response, deliver::Response::Accepted, "delivery {i}");
    }
    for i in 0u32..200 {
        assert_eq!(next_delivery(&mut seen).await, (a.id(), i.to_be_bytes().to_vec()), "delivery {i}");
    }

    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_in_flight() {
    // A small in-flight cap, so that most of the 64 wait in the per-peer queue.
    let a = Node::with_config(config(&[TCP]).with_max_deliveries_in_flight_per_peer(8)).await;
    let mut b = Node::start(&[TCP]).await;
    let (mut seen, _engine) = engine(b.take_inbound(), accept);
    let b_addrs = b.addrs().await;

    let sends = (0u32..64).map(|i| {
        let handle = a.handle.clone();
        let addrs = b_addrs.clone();
        let peer = b.id();
        async move { handle.deliver(peer, addrs, i.to_be_bytes().to_vec()).await }
    });
    let results = timeout(WAIT, join_all(sends)).await.expect("all answered in time");
    for (i, result) in results.into_iter().enumerate() {
        assert_eq!(result.expect("delivered"), deliver::Response::Accepted, "delivery {i}");
    }
    let mut received = Vec::new();
    for _ in 0..64 {
        let (peer, envelope) = next_delivery(&mut seen).await;
        assert_eq!(peer, a.id());
        received.push(u32::from_be_bytes(envelope.try_into().expect("4 bytes")));
    }
    received.sort_unstable();
    assert_eq!(received, (0..64).collect::<Vec<_>>());
    // One dial for all of them.
    assert_eq!(a.handle.connected_peers().await, vec![b.id()]);

    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn full_engine_queue_refuses_as_rate_limited() {
    let a = Node::start(&[TCP]).await;
    let mut b =
        Node::with_config(config(&[TCP]).with_inbound_queue(1).with_max_pending_inbound_per_peer(1)).await;
    let mut inbound = b.take_inbound();
    let b_addrs = b.addrs().await;

    // The connection event fills B's one-slot queue before A's request arrives.
    let response = a.handle.deliver(b.id(), b_addrs.clone(), b"1".to_vec()).await.expect("answered");
    assert!(matches!(response, deliver::Response::Refused(Refusal::RateLimited { .. })), "{response:?}");
    let event = timeout(WAIT, inbound.recv()).await.expect("in time").expect("event");
    assert!(matches!(event, Event::PeerConnected(peer) if peer == a.id()), "{event:?}");

    // With room again, the next one reaches the engine, which holds it for now.
    let handle = a.handle.clone();
    let (peer, addrs) = (b.id(), b_addrs.clone());
    let second = tokio::spawn(async move { handle.deliver(peer, addrs, b"2".to_vec()).await });
    let Some(Event::Delivery { request, reply, .. }) = timeout(WAIT, inbound.recv()).await.expect("in time")
    else {
        panic!("expected a delivery");
    };
    assert_eq!(request.envelope, b"2");

    // One unanswered delivery is all A may have pending with B.
    let response = a.handle.deliver(b.id(), b_addrs, b"3".to_vec()).await.expect("answered");
    assert!(matches!(response, deliver::Response::Refused(Refusal::RateLimited { .. })), "{response:?}");

    reply.send(deliver::Response::Accepted);
    let response = timeout(WAIT, second).await.expect("in time").expect("task").expect("answered");
    assert_eq!(response, deliver::Response::Accepted);

    a.stop().await;
    b.stop().await;
}

/// A batch weighs what its envelopes would alone against the cap on a peer's unanswered
/// deliveries: batching does not let one peer (a stranger, as peer ids are free) hold more of the
/// engine than single deliveries would.
#[tokio::test]
async fn a_batch_counts_each_envelope_against_the_per_peer_cap() {
    let rate_limited =
        |r: &deliver::Response| matches!(r, deliver::Response::Refused(Refusal::RateLimited { .. }));
    let a = Node::start(&[TCP]).await;
    let mut b = Node::with_config(config(&[TCP]).with_max_pending_inbound_per_peer(8)).await;
    let mut inbound = b.take_inbound();
    let b_addrs = b.addrs().await;

    // Nine at once are more than B holds for one peer: all refused, before its engine sees them.
    let answers = a.handle.deliver_batch(b.id(), b_addrs.clone(), vec![vec![1]; 9]).await.expect("answered");
    assert_eq!(answers.len(), 9);
    assert!(answers.iter().all(rate_limited), "{answers:?}");

    // Eight go to the engine, which holds them unanswered: no room is left for a ninth.
    let handle = a.handle.clone();
    let (peer, addrs) = (b.id(), b_addrs.clone());
    let held = tokio::spawn(async move { handle.deliver_batch(peer, addrs, vec![vec![2]; 8]).await });
    let reply = loop {
        match timeout(WAIT, inbound.recv()).await.expect("in time").expect("event") {
            Event::Deliveries { batch, reply, .. } => {
                assert_eq!(batch.envelopes.len(), 8);
                break reply;
            }
            Event::Delivery { .. } => panic!("the refused batch reached the engine"),
            _ => continue,
        }
    };
    let response = a.handle.deliver(b.id(), b_addrs.clone(), b"9".to_vec()).await.expect("answered");
    assert!(rate_limited(&response), "{response:?}");

    // Answered, they make room again.
    reply.send(vec![deliver::Response::Accepted; 8]);
    let answers = timeout(WAIT, held).await.expect("in time").expect("task").expect("answered");
    assert_eq!(answers, vec![deliver::Response::Accepted; 8]);
    let handle = a.handle.clone();
    let (peer, addrs) = (b.id(), b_addrs);
    let single = tokio::spawn(async move { handle.deliver(peer, addrs, b"10".to_vec()).await });
    loop {
        match timeout(WAIT, inbound.recv()).await.expect("in time").expect("event") {
            Event::Delivery { request, reply, .. } => {
                assert_eq!(request.envelope, b"10");
                reply.send(deliver::Response::Accepted);
                break;
            }
            _ => continue,
        }
    }
    let response = timeout(WAIT, single).await.expect("in time").expect("task").expect("answered");
    assert_eq!(response, deliver::Response::Accepted);

    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn full_outgoing_queue_fails_fast() {
    let one_at_a_time =
        config(&[TCP]).with_max_deliveries_in_flight_per_peer(1).with_max_queued_deliveries_per_peer(1);
    let a = Node::with_config(one_at_a_time).await;
    let mut b = Node::start(&[TCP]).await;
    let mut inbound = b.take_inbound();
    let b_addrs = b.addrs().await;

    // #1 is in flight, held unanswered by B's engine.
    let handle = a.handle.clone();
    let (peer, addrs) = (b.id(), b_addrs.clone());
    let first = tokio::spawn(async move { handle.deliver(peer, addrs, b"1".to_vec()).await });
    let reply_1 = loop {
        match timeout(WAIT, inbound.recv()).await.expect("in time").expect("event") {
            Event::Delivery { reply, .. } => break reply,
            _ => continue,
        }
    };

    // #2 takes the one queue slot (its command goes out on the first poll), so #3 finds it full.
    let handle = a.handle.clone();
    let second = handle.deliver(b.id(), b_addrs.clone(), b"2".to_vec());
    tokio::pin!(second);
    assert!(futures::poll!(&mut second).is_pending());
    let error = a.handle.deliver(b.id(), b_addrs, b"3".to_vec()).await.expect_err("queue full");
    assert!(matches!(error, DeliverError::QueueFull { peer } if peer == b.id()), "{error:?}");

    // Answering #1 lets #2 go.
    reply_1.send(deliver::Response::Accepted);
    let response = timeout(WAIT, first).await.expect("in time").expect("task").expect("answered");
    assert_eq!(response, deliver::Response::Accepted);
    let engine = async {
        let Some(Event::Delivery { request, reply, .. }) =
            timeout(WAIT, inbound.recv()).await.expect("in time")
        else {
            panic!("expected a delivery");
        };
        assert_eq!(request.envelope, b"2");
        reply.send(deliver::Response::Accepted);
    };
    let (response, ()) = tokio::join!(second, engine);
    assert_eq!(response.expect("answered"), deliver::Response::Accepted);

    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn shutdown_ends_the_task_promptly() {
    let a = Node::start(&[TCP, QUIC]).await;
    let mut b = Node::start(&[TCP]).await;
    let (_seen, _engine) = engine(b.take_inbound(), accept);
    // With a live connection to close.
    assert_eq!(deliver(&a, &b, b"before").await.expect("delivered"), deliver::Response::Accepted);

    let handle = a.handle.clone();
    let started = Instant::now();
    a.shutdown.cancel();
    timeout(Duration::from_secs(2), a.task).await.expect("ends promptly").expect("did not panic");
    assert!(started.elapsed() < Duration::from_secs(2));

    // Afterwards every call fails cleanly.
    let error = handle.deliver(b.id(), Vec::new(), b"after".to_vec()).await.expect_err("stopped");
    assert!(matches!(error, DeliverError::Shutdown), "{error:?}");
    assert!(handle.listen_addrs().await.is_empty());
    assert!(handle.add_addresses(b.id(), Vec::new()).await.is_err());

    b.stop().await;
}

#[tokio::test]
async fn bad_listen_address_is_an_error() {
    // UDP without QUIC: no transport takes it.
    let shutdown = CancellationToken::new();
    let result = net::spawn(config(&["/ip4/127.0.0.1/udp/0"]), Keypair::generate_ed25519(), shutdown).await;
    assert!(matches!(result, Err(NetError::Listen { .. })), "{result:?}");
}
