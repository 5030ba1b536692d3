//! The network task: owns the swarm and every piece of networking state, and reacts, in order of
//! priority, to shutdown, to commands from [`Handle`](super::Handle)s, to the engine's replies, and
//! to swarm events.
//!
//! Outgoing deliveries wait in a bounded queue per peer; while the peer is connected up to
//! `max_deliveries_in_flight_per_peer` of them are sent at once, and a missing connection is dialled
//! once for the whole queue (not once per delivery, as request-response would).
//! Received deliveries go to the engine through the bounded [`Inbound`](super::Inbound) queue;
//! their libp2p response channels stay here, keyed by request id, until the engine's [`Reply`]
//! comes back through a oneshot.
//!
//! Mailbox requests to relays go out as they come (the daemon bounds how many it makes); on a
//! relay, received mailbox requests are served by the [`MailboxServer`] as futures polled here,
//! at most `max_mailbox_requests` at once. A user node keeps its relay reservations in
//! [`Reservations`] and listens through them again after losing one.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use libp2p::core::transport::ListenerId;
use libp2p::multiaddr::Protocol;
use libp2p::request_response::{self, InboundRequestId, OutboundFailure, OutboundRequestId, ResponseChannel};
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{ConnectionId, DialError, SwarmEvent};
use libp2p::{Multiaddr, PeerId, Swarm, dcutr, identify, mdns, relay};
use merpati_proto::wire::{Refusal, blob, deliver, mailbox};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, trace, warn};

use super::Extras;
use super::behaviour::{Behaviour, BehaviourEvent, KAD_PROTOCOL};
use super::blob::{self as blob_net, BlobServer};
use super::config::Config;
use super::error::{DeliverError, MailboxError, NetError};
use super::handle::Command;
use super::inbound::{BatchReply, Event, Reply};
use super::mailbox::{self as mailbox_net, MailboxServer, Pending, Served};
use super::reservations::Reservations;

/// How long [`spawn`](super::spawn) waits for each listener's first address before going on
/// without it.
const LISTEN_READY_TIMEOUT: Duration = Duration::from_secs(5);
/// What a peer is told to wait when we refuse it for load, in milliseconds.
const RETRY_AFTER_MS: u32 = 1_000;
/// The most non-delivery events (connections, discoveries) kept while the engine's queue is full.
/// Beyond it they are dropped: they are hints, and the engine's own timers cover a lost one.
const MAX_EVENT_BACKLOG: usize = 256;

/// The answer for a delivery we cannot take now.
const RATE_LIMITED: deliver::Response =
    deliver::Response::Refused(Refusal::RateLimited { retry_after_ms: RETRY_AFTER_MS });

type DeliverReply = oneshot::Sender<Result<deliver::Response, DeliverError>>;
type BatchAnswer = oneshot::Sender<Result<deliver::BatchResponse, DeliverError>>;

/// The caps the task keeps, copied from [`Config`].
#[derive(Debug)]
struct Limits {
    in_flight_per_peer: usize,
    queued_per_peer: usize,
    outgoing: usize,
    pending_inbound: usize,
    pending_inbound_per_peer: usize,
}

/// A delivery waiting to be sent: one envelope (`/merpati/deliver/1`) or a batch (`/2`).
#[derive(Debug)]
enum Queued {
    One(deliver::Request, DeliverReply),
    Batch(deliver::Batch, BatchAnswer),
}

impl Queued {
    /// Whether the caller stopped waiting (its deadline passed).
    fn is_closed(&self) -> bool {
        match self {
            Self::One(_, reply) => reply.is_closed(),
            Self::Batch(_, reply) => reply.is_closed(),
        }
    }

    fn fail(self, error: DeliverError) {
        match self {
            Self::One(_, reply) => answer(reply, Err(error)),
            Self::Batch(_, reply) => answer(reply, Err(error)),
        }
    }
}

/// An exchange on one of the two deliver behaviours, whose request ids are counted separately.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Exchange<Id> {
    One(Id),
    Batch(Id),
}

/// Who waits for an outgoing delivery's answer.
#[derive(Debug)]
enum Waiting {
    One(DeliverReply),
    /// A batch of `len` envelopes: its answer must hold as many.
    Batch(BatchAnswer, usize),
}

impl Waiting {
    fn fail(self, error: DeliverError) {
        match self {
            Self::One(reply) => answer(reply, Err(error)),
            Self::Batch(reply, _) => answer(reply, Err(error)),
        }
    }
}

/// An answer from a peer's node, of either protocol.
#[derive(Debug)]
enum Answered {
    One(deliver::Response),
    Batch(deliver::BatchResponse),
}

/// Where the answer to a received delivery goes.
#[derive(Debug)]
enum Channel {
    One(ResponseChannel<deliver::Response>),
    Batch(ResponseChannel<deliver::BatchResponse>, usize),
}

/// Outgoing deliveries to one peer.
#[derive(Debug, Default)]
struct Outgoing {
    queue: VecDeque<Queued>,
    in_flight: usize,
    /// A dial is under way; its outcome (a connection, or an error) pumps or fails the queue.
    dialing: bool,
}

/// A delivery sent and not yet answered.
#[derive(Debug)]
struct InFlight {
    peer: PeerId,
    waiting: Waiting,
}

/// The engine's answers to a received delivery of `weight` envelopes; `None` if it dropped the
/// [`Reply`].
#[derive(Debug)]
struct EngineReply {
    exchange: Exchange<InboundRequestId>,
    peer: PeerId,
    weight: usize,
    responses: Option<Vec<deliver::Response>>,
}

/// The network task's state. See the module documentation.
pub(crate) struct Actor {
    swarm: Swarm<Behaviour>,
    commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<Event>,
    /// Events that found the engine's queue full, sent as room frees up.
    backlog: VecDeque<Event>,
    limits: Limits,
    outgoing: HashMap<PeerId, Outgoing>,
    /// Deliveries waiting in all of `outgoing`'s queues.
    queued: usize,
    in_flight: HashMap<Exchange<OutboundRequestId>, InFlight>,
    /// Response channels of received deliveries the engine has not answered yet.
    channels: HashMap<Exchange<InboundRequestId>, Channel>,
    /// One future per delivery or batch handed to the engine, resolving with its reply.
    replies: FuturesUnordered<BoxFuture<'static, EngineReply>>,
    /// How many envelopes the engine holds unanswered, which `limits.pending_inbound` caps.
    pending_envelopes: usize,
    /// Per peer, how many of those are theirs.
    pending_inbound: HashMap<PeerId, usize>,
    /// Our mailbox requests waiting for a relay's answer.
    mailbox_requests: HashMap<OutboundRequestId, Pending<mailbox::Request>>,
    /// Relay role: the service behind the mailbox protocol, and the requests it is serving.
    mailbox_server: Option<Arc<dyn MailboxServer>>,
    serving: FuturesUnordered<BoxFuture<'static, Served>>,
    /// At most this many mailbox requests, and as many blob requests, are served at once.
    max_serving: usize,
    /// Our blob requests waiting for a relay's answer.
    blob_requests: HashMap<OutboundRequestId, Pending<blob::Request>>,
    /// Relay role: the service behind the blob protocol, and the requests it is serving.
    blob_server: Option<Arc<dyn BlobServer>>,
    blob_serving: FuturesUnordered<BoxFuture<'static, blob_net::Served>>,
    /// The IP address of each connected peer (its latest connection), for per-address limits.
    peer_ips: HashMap<PeerId, IpAddr>,
    /// How many connections with each peer are direct (not through a relay's circuit).
    direct_connections: HashMap<PeerId, u32>,
    /// User node: the relays we listen through.
    reservations: Reservations,
    /// Relay role with no public address configured: listen addresses count as public.
    listen_addrs_are_public: bool,
    /// Relay role: libp2p's metrics and the gauge of reservations held.
    metrics: Option<libp2p::metrics::Metrics>,
    reservations_gauge: Option<prometheus_client::metrics::gauge::Gauge>,
    /// Relay role: the reservations each peer holds with us (one per connection that made one),
    /// counted here rather than summed from libp2p's events alone, which may report a closed
    /// reservation that was never reported accepted.
    reservation_holders: HashMap<PeerId, u32>,
    /// Probes waiting for the identify answer on the connection they dialled.
    probes: HashMap<ConnectionId, oneshot::Sender<Result<Vec<String>, String>>>,
}

impl Actor {
    pub(crate) fn new(
        swarm: Swarm<Behaviour>,
        config: &Config,
        commands: mpsc::Receiver<Command>,
        events: mpsc::Sender<Event>,
        extras: Extras,
    ) -> Self {
        let listen_addrs_are_public =
            config.relay_server.as_ref().is_some_and(|relay| relay.public_addrs.is_empty());
        Self {
            swarm,
            commands,
            events,
            backlog: VecDeque::new(),
            limits: Limits {
                in_flight_per_peer: config.max_deliveries_in_flight_per_peer,
                queued_per_peer: config.max_queued_deliveries_per_peer,
                outgoing: config.max_outgoing_deliveries,
                pending_inbound: config.max_pending_inbound,
                pending_inbound_per_peer: config.max_pending_inbound_per_peer,
            },
            outgoing: HashMap::new(),
            queued: 0,
            in_flight: HashMap::new(),
            channels: HashMap::new(),
            replies: FuturesUnordered::new(),
            pending_envelopes: 0,
            pending_inbound: HashMap::new(),
            mailbox_requests: HashMap::new(),
            mailbox_server: extras.mailbox_server,
            serving: FuturesUnordered::new(),
            max_serving: config.max_mailbox_requests,
            blob_requests: HashMap::new(),
            blob_server: extras.blob_server,
            blob_serving: FuturesUnordered::new(),
            peer_ips: HashMap::new(),
            direct_connections: HashMap::new(),
            reservations: Reservations::new(config.relay_retry_max),
            listen_addrs_are_public,
            metrics: extras.metrics,
            reservations_gauge: extras.reservations_gauge,
            reservation_holders: HashMap::new(),
            probes: HashMap::new(),
        }
    }

    /// Drives the swarm until every listener in `waiting` has its first address (so that
    /// [`Handle::listen_addrs`](super::Handle::listen_addrs) is complete once `spawn` returns), or
    /// [`LISTEN_READY_TIMEOUT`] passes. A listener that fails meanwhile is an error.
    pub(crate) async fn await_listeners(
        &mut self,
        mut waiting: HashMap<ListenerId, Multiaddr>,
        shutdown: &CancellationToken,
    ) -> Result<(), NetError> {
        let deadline = tokio::time::sleep(LISTEN_READY_TIMEOUT);
        tokio::pin!(deadline);
        while !waiting.is_empty() {
            let event = tokio::select! {
                biased;
                () = shutdown.cancelled() => return Ok(()),
                () = &mut deadline => {
                    warn!(listeners = ?waiting.values().collect::<Vec<_>>(), "listeners have no address yet; going on");
                    return Ok(());
                }
                event = self.swarm.select_next_some() => event,
            };
            match event {
                SwarmEvent::ListenerClosed { listener_id, reason: Err(source), .. } => {
                    if let Some(addr) = waiting.remove(&listener_id) {
                        return Err(NetError::ListenerFailed { addr, source });
                    }
                    warn!(error = %source, "a listener failed");
                }
                SwarmEvent::ListenerClosed { listener_id, .. } => {
                    waiting.remove(&listener_id);
                }
                SwarmEvent::NewListenAddr { listener_id, address } => {
                    waiting.remove(&listener_id);
                    info!(%address, "listening");
                    self.maybe_publish_listen_addr(address);
                }
                other => self.handle_swarm_event(other),
            }
        }
        Ok(())
    }

    /// The event loop. Ends when `shutdown` is cancelled or every [`Handle`](super::Handle) is
    /// gone; deliveries still waiting then fail with [`DeliverError::Shutdown`].
    pub(crate) async fn run(mut self, shutdown: CancellationToken) {
        info!(peer = %self.swarm.local_peer_id(), "network running");
        loop {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                command = self.commands.recv() => match command {
                    Some(command) => self.handle_command(command),
                    None => {
                        debug!("every handle is gone");
                        break;
                    }
                },
                Some(reply) = self.replies.next(), if !self.replies.is_empty() => self.handle_engine_reply(reply),
                Some((channel, response)) = self.serving.next(), if !self.serving.is_empty() => {
                    self.respond_mailbox(channel, response);
                }
                Some((channel, response)) = self.blob_serving.next(), if !self.blob_serving.is_empty() => {
                    self.respond_blob(channel, response);
                }
                () = sleep_until(self.reservations.next_retry()) => self.reserve_due(),
                // Owned, so that the permit borrows nothing of `self` while the branches run.
                permit = self.events.clone().reserve_owned(), if !self.backlog.is_empty() => match permit {
                    Ok(permit) => {
                        if let Some(event) = self.backlog.pop_front() {
                            permit.send(event);
                        }
                    }
                    // The engine is gone: nobody will read these.
                    Err(_) => self.backlog.clear(),
                },
                event = self.swarm.select_next_some() => self.handle_swarm_event(event),
            }
        }
        self.fail_everything();
        info!("network stopped");
    }

    fn fail_everything(&mut self) {
        for (_, out) in self.outgoing.drain() {
            for queued in out.queue {
                queued.fail(DeliverError::Shutdown);
            }
        }
        for (_, in_flight) in self.in_flight.drain() {
            in_flight.waiting.fail(DeliverError::Shutdown);
        }
        for (_, pending) in self.mailbox_requests.drain() {
            pending.fail(MailboxError::Shutdown);
        }
        for (_, pending) in self.blob_requests.drain() {
            pending.fail(MailboxError::Shutdown);
        }
        self.queued = 0;
    }

    fn handle_command(&mut self, command: Command) {
        match command {
            Command::Deliver { peer, addrs, request, reply } => {
                self.enqueue(peer, addrs, Queued::One(request, reply));
            }
            Command::DeliverBatch { peer, addrs, batch, reply } => {
                self.enqueue(peer, addrs, Queued::Batch(batch, reply));
            }
            Command::Mailbox { relay, addrs, request, reply } => {
                if relay == *self.swarm.local_peer_id() {
                    let reason = "it is this node".to_owned();
                    answer(reply, Err(MailboxError::Unreachable { relay, reason }));
                    return;
                }
                // Direct addresses only: a circuit address for a relay would route mailbox
                // traffic through another relay.
                let direct =
                    addrs.into_iter().filter(|a| !a.iter().any(|p| p == Protocol::P2pCircuit)).collect();
                self.add_addresses(relay, direct);
                let pending = Pending::new(relay, &request, reply);
                let id = self.swarm.behaviour_mut().mailbox.send_request(&relay, request);
                self.mailbox_requests.insert(id, pending);
            }
            Command::Blob { relay, addrs, request, reply } => {
                if relay == *self.swarm.local_peer_id() {
                    let reason = "it is this node".to_owned();
                    answer(reply, Err(MailboxError::Unreachable { relay, reason }));
                    return;
                }
                // A relay's circuit carries some 128 KiB, not a file: with only such connections
                // to the peer, the request would go over one and end it.
                if self.swarm.is_connected(&relay) && !self.direct_connections.contains_key(&relay) {
                    let reason = "connected only through a relay, which cannot carry a file".to_owned();
                    answer(reply, Err(MailboxError::Unreachable { relay, reason }));
                    return;
                }
                let direct = addrs.into_iter().filter(|a| !is_relayed(a)).collect();
                self.add_addresses(relay, direct);
                let pending = Pending::new(relay, &request, reply);
                let id = self.swarm.behaviour_mut().blob.send_request(&relay, request);
                self.blob_requests.insert(id, pending);
            }
            Command::SetRelays { relays, reply } => {
                for listener in self.reservations.set(relays, Instant::now()) {
                    self.swarm.remove_listener(listener);
                }
                self.reserve_due();
                answer(reply, ());
            }
            Command::Relays { reply } => answer(reply, self.reservations.status()),
            Command::AddAddresses { peer, addrs, reply } => {
                self.add_addresses(peer, addrs);
                answer(reply, ());
            }
            Command::ListenAddrs { reply } => {
                let local = *self.swarm.local_peer_id();
                let addrs = self
                    .swarm
                    .listeners()
                    .map(|addr| addr.clone().with_p2p(local).unwrap_or_else(|addr| addr))
                    .collect();
                answer(reply, addrs);
            }
            Command::ConnectedPeers { reply } => {
                answer(reply, self.swarm.connected_peers().copied().collect())
            }
            Command::Probe { peer, addrs, reply } => self.probe(peer, addrs, reply),
        }
    }

    /// Answers the protocols `peer` speaks at `addrs`: a new connection there (whatever others we
    /// hold, so the answer is about these addresses), and its identify answer or its dial error.
    fn probe(
        &mut self,
        peer: PeerId,
        addrs: Vec<Multiaddr>,
        reply: oneshot::Sender<Result<Vec<String>, String>>,
    ) {
        if peer == *self.swarm.local_peer_id() {
            answer(reply, Err("it is this node".to_owned()));
            return;
        }
        // Probes whose caller gave up leave nothing behind.
        self.probes.retain(|_, reply| !reply.is_closed());
        let dial = DialOpts::peer_id(peer).addresses(addrs).condition(PeerCondition::Always).build();
        let connection = dial.connection_id();
        match self.swarm.dial(dial) {
            Ok(()) => {
                self.probes.insert(connection, reply);
            }
            Err(error) => answer(reply, Err(error.to_string())),
        }
    }

    fn finish_probe(&mut self, connection: ConnectionId, result: Result<Vec<String>, String>) {
        if let Some(reply) = self.probes.remove(&connection) {
            answer(reply, result);
        }
    }

    fn add_addresses(&mut self, peer: PeerId, addrs: Vec<Multiaddr>) {
        for addr in addrs {
            if self.is_own_listen_addr(&addr) {
                trace!(%peer, %addr, "not dialling a peer at an address we listen on ourselves");
                continue;
            }
            // Reaches every behaviour's address book (request-response's is the one our dials
            // use); an address ending in another peer's id is dropped there.
            self.swarm.add_peer_address(peer, addr);
        }
    }

    /// Whether `addr`, with or without a final `/p2p/<peer id>`, is one of our own listen
    /// addresses. Dialling it reaches this node, not the peer: a contact on another host that
    /// listens on our port names our `127.0.0.1:<port>`, and maybe our private address behind
    /// another router. Worse, a dial tries all of a peer's addresses at once and takes the first
    /// connection, so reaching ourselves ends the whole dial with a wrong peer id, relayed
    /// addresses included. libp2p drops a dial's own listen addresses itself, but compares them
    /// with the `/p2p/<peer id>` that the behaviours' address books add, so never matches them.
    fn is_own_listen_addr(&self, addr: &Multiaddr) -> bool {
        let mut bare = addr.clone();
        if matches!(bare.iter().last(), Some(Protocol::P2p(_))) {
            bare.pop();
        }
        self.swarm.listeners().any(|own| *own == bare)
    }

    fn enqueue(&mut self, peer: PeerId, addrs: Vec<Multiaddr>, queued: Queued) {
        if peer == *self.swarm.local_peer_id() {
            queued.fail(DeliverError::Unreachable { peer, reason: "it is this node".to_owned() });
            return;
        }
        self.add_addresses(peer, addrs);
        let out = self.outgoing.entry(peer).or_default();
        let outgoing = self.queued + self.in_flight.len();
        if out.queue.len() >= self.limits.queued_per_peer || outgoing >= self.limits.outgoing {
            debug!(%peer, queued = out.queue.len(), "delivery queue full");
            queued.fail(DeliverError::QueueFull { peer });
            self.forget_if_idle(peer);
            return;
        }
        out.queue.push_back(queued);
        self.queued += 1;
        self.pump(peer);
    }

    /// Moves `peer`'s queue along: sends what the in-flight cap allows if connected, dials if
    /// not (once), or fails the queue if a dial cannot even start.
    fn pump(&mut self, peer: PeerId) {
        let Some(out) = self.outgoing.get_mut(&peer) else { return };
        // Callers whose deadline passed no longer wait for an answer: do not send for them.
        let before = out.queue.len();
        out.queue.retain(|queued| !queued.is_closed());
        self.queued -= before - out.queue.len();

        if out.queue.is_empty() {
            // Nothing waits; in-flight answers or a dial outcome call again.
        } else if self.swarm.is_connected(&peer) {
            while out.in_flight < self.limits.in_flight_per_peer {
                let Some(queued) = out.queue.pop_front() else { break };
                self.queued -= 1;
                let behaviour = self.swarm.behaviour_mut();
                let (exchange, waiting) = match queued {
                    Queued::One(request, reply) => {
                        (Exchange::One(behaviour.deliver.send_request(&peer, request)), Waiting::One(reply))
                    }
                    Queued::Batch(batch, reply) => {
                        let len = batch.envelopes.len();
                        let id = behaviour.deliver_batch.send_request(&peer, batch);
                        (Exchange::Batch(id), Waiting::Batch(reply, len))
                    }
                };
                out.in_flight += 1;
                self.in_flight.insert(exchange, InFlight { peer, waiting });
            }
        } else if !out.dialing {
            // The condition keeps one dial per peer, even when another behaviour dials too: then
            // that dial's outcome serves us just as well.
            let dial = DialOpts::peer_id(peer).condition(PeerCondition::DisconnectedAndNotDialing).build();
            match self.swarm.dial(dial) {
                Ok(()) | Err(DialError::DialPeerConditionFalse(_)) => {
                    debug!(%peer, "dialling");
                    out.dialing = true;
                }
                Err(error) => {
                    debug!(%peer, %error, "cannot dial");
                    self.fail_queue(peer, &error.to_string());
                }
            }
        }
        self.forget_if_idle(peer);
    }

    fn fail_queue(&mut self, peer: PeerId, reason: &str) {
        let Some(out) = self.outgoing.get_mut(&peer) else { return };
        self.queued -= out.queue.len();
        for queued in out.queue.drain(..) {
            queued.fail(DeliverError::Unreachable { peer, reason: reason.to_owned() });
        }
    }

    fn forget_if_idle(&mut self, peer: PeerId) {
        if self
            .outgoing
            .get(&peer)
            .is_some_and(|out| out.queue.is_empty() && out.in_flight == 0 && !out.dialing)
        {
            self.outgoing.remove(&peer);
        }
    }

    fn finish_outbound(
        &mut self,
        exchange: Exchange<OutboundRequestId>,
        result: Result<Answered, DeliverError>,
    ) {
        let Some(InFlight { peer, waiting }) = self.in_flight.remove(&exchange) else { return };
        match (waiting, result) {
            (Waiting::One(reply), Ok(Answered::One(response))) => answer(reply, Ok(response)),
            (Waiting::Batch(reply, len), Ok(Answered::Batch(response))) => {
                // A node that answers another number of envelopes than it was sent broke the
                // protocol: none of its answers can be trusted.
                if response.results.len() == len {
                    answer(reply, Ok(response));
                } else {
                    debug!(%peer, sent = len, answered = response.results.len(), "dropping a mismatched answer");
                    let source = std::io::Error::other("the answer does not match the batch");
                    answer(reply, Err(DeliverError::Stream { peer, source }));
                }
            }
            (waiting, Err(error)) => waiting.fail(error),
            // Request ids are kept per behaviour, so an answer always finds its own kind.
            (waiting, Ok(_)) => waiting.fail(DeliverError::Shutdown),
        }
        if let Some(out) = self.outgoing.get_mut(&peer) {
            out.in_flight = out.in_flight.saturating_sub(1);
        }
        self.pump(peer);
    }

    fn handle_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        if let Some(metrics) = &self.metrics {
            record_metrics(metrics, &event);
        }
        match event {
            SwarmEvent::Behaviour(BehaviourEvent::Deliver(event)) => self.handle_deliver_event(event),
            SwarmEvent::Behaviour(BehaviourEvent::DeliverBatch(event)) => self.handle_batch_event(event),
            SwarmEvent::Behaviour(BehaviourEvent::Mailbox(event)) => self.handle_mailbox_event(event),
            SwarmEvent::Behaviour(BehaviourEvent::Blob(event)) => self.handle_blob_event(event),
            SwarmEvent::Behaviour(BehaviourEvent::RelayClient(event)) => {
                self.handle_relay_client_event(event)
            }
            SwarmEvent::Behaviour(BehaviourEvent::RelayServer(event)) => {
                self.handle_relay_server_event(event)
            }
            SwarmEvent::Behaviour(BehaviourEvent::Dcutr(event)) => handle_dcutr_event(event),
            SwarmEvent::Behaviour(BehaviourEvent::AutonatClient(event)) => {
                debug!(server = %event.server, addr = %event.tested_addr, ok = event.result.is_ok(), "address probed");
            }
            SwarmEvent::Behaviour(BehaviourEvent::AutonatServer(event)) => {
                trace!(client = %event.client, ok = event.result.is_ok(), "probed a client's address");
            }
            SwarmEvent::Behaviour(BehaviourEvent::Identify(event)) => self.handle_identify_event(event),
            SwarmEvent::Behaviour(BehaviourEvent::Mdns(event)) => self.handle_mdns_event(event),
            SwarmEvent::Behaviour(BehaviourEvent::Kad(event)) => trace!(?event, "kad"),
            SwarmEvent::Behaviour(BehaviourEvent::Ping(_)) => {}
            SwarmEvent::Behaviour(BehaviourEvent::Limits(never)) => match never {},
            SwarmEvent::ConnectionEstablished { peer_id, num_established, endpoint, .. } => {
                debug!(peer = %peer_id, addr = %endpoint.get_remote_address(), "connection established");
                // An inbound circuit's remote address is only `/p2p/<peer>`: ask the endpoint.
                if !endpoint.is_relayed() {
                    *self.direct_connections.entry(peer_id).or_default() += 1;
                }
                if let Some(ip) = mailbox_net::ip_of(endpoint.get_remote_address()) {
                    self.peer_ips.insert(peer_id, ip);
                }
                if num_established.get() == 1 {
                    self.push_event(Event::PeerConnected(peer_id));
                }
                if let Some(out) = self.outgoing.get_mut(&peer_id) {
                    out.dialing = false;
                }
                self.pump(peer_id);
            }
            SwarmEvent::ConnectionClosed { peer_id, num_established, cause, endpoint, .. } => {
                debug!(peer = %peer_id, remaining = num_established, cause = ?cause, "connection closed");
                if !endpoint.is_relayed()
                    && let Some(count) = self.direct_connections.get_mut(&peer_id)
                {
                    *count = count.saturating_sub(1);
                    if *count == 0 {
                        self.direct_connections.remove(&peer_id);
                    }
                }
                if num_established == 0 {
                    self.peer_ips.remove(&peer_id);
                    // A reservation lives on a connection: with none left, none is held.
                    if self.reservation_holders.remove(&peer_id).is_some() {
                        self.update_reservations_gauge();
                    }
                }
            }
            SwarmEvent::OutgoingConnectionError { peer_id: Some(peer), error, connection_id } => {
                debug!(%peer, %error, "dial failed");
                self.finish_probe(connection_id, Err(error.to_string()));
                if let Some(out) = self.outgoing.get_mut(&peer) {
                    out.dialing = false;
                    // Another connection (say, the peer dialling us meanwhile) still serves.
                    if !self.swarm.is_connected(&peer) {
                        self.fail_queue(peer, &error.to_string());
                    }
                    self.pump(peer);
                }
            }
            SwarmEvent::IncomingConnectionError { send_back_addr, error, .. } => {
                debug!(from = %send_back_addr, %error, "incoming connection failed");
            }
            SwarmEvent::NewListenAddr { address, .. } => {
                info!(%address, "listening");
                self.maybe_publish_listen_addr(address);
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => info!(%address, "no longer listening"),
            SwarmEvent::ListenerClosed { listener_id, addresses, reason } => {
                match reason {
                    Ok(()) => info!(?addresses, "listener closed"),
                    Err(error) => warn!(?addresses, %error, "listener failed"),
                }
                if let Some(relay) = self.reservations.listener_closed(listener_id, Instant::now(), jitter())
                {
                    info!(%relay, "lost the relay reservation; will try again");
                }
            }
            SwarmEvent::ListenerError { error, .. } => warn!(%error, "listener error"),
            other => trace!(event = ?other, "swarm event"),
        }
    }

    fn handle_deliver_event(&mut self, event: request_response::Event<deliver::Request, deliver::Response>) {
        match event {
            request_response::Event::Message { peer, message, .. } => match message {
                request_response::Message::Request { request_id, request, channel } => {
                    if let Err(error) = request.validate() {
                        debug!(%peer, %error, "refusing an invalid delivery");
                        self.respond(
                            Channel::One(channel),
                            vec![deliver::Response::Refused(error.refusal())],
                        );
                        return;
                    }
                    let envelopes = vec![serde_bytes::ByteBuf::from(request.envelope)];
                    self.handle_inbound(peer, Exchange::One(request_id), envelopes, Channel::One(channel));
                }
                request_response::Message::Response { request_id, response } => {
                    self.finish_outbound(Exchange::One(request_id), Ok(Answered::One(response)));
                }
            },
            request_response::Event::OutboundFailure { peer, request_id, error, .. } => {
                debug!(%peer, %request_id, %error, "delivery failed");
                self.finish_outbound(Exchange::One(request_id), Err(deliver_error(peer, error)));
            }
            request_response::Event::InboundFailure { peer, request_id, error, .. } => {
                debug!(%peer, %request_id, %error, "received delivery failed");
                // The engine may still answer; that answer then finds no channel and is dropped.
                self.channels.remove(&Exchange::One(request_id));
            }
            request_response::Event::ResponseSent { peer, request_id, .. } => {
                trace!(%peer, %request_id, "answer sent");
            }
        }
    }

    fn handle_batch_event(&mut self, event: request_response::Event<deliver::Batch, deliver::BatchResponse>) {
        match event {
            request_response::Event::Message { peer, message, .. } => match message {
                request_response::Message::Request { request_id, request, channel } => {
                    let len = request.envelopes.len();
                    if let Err(error) = request.validate() {
                        debug!(%peer, %error, "refusing an invalid batch");
                        let refused = deliver::Response::Refused(error.refusal());
                        self.respond(Channel::Batch(channel, len), vec![refused; len]);
                        return;
                    }
                    let channel = Channel::Batch(channel, len);
                    self.handle_inbound(peer, Exchange::Batch(request_id), request.envelopes, channel);
                }
                request_response::Message::Response { request_id, response } => {
                    self.finish_outbound(Exchange::Batch(request_id), Ok(Answered::Batch(response)));
                }
            },
            request_response::Event::OutboundFailure { peer, request_id, error, .. } => {
                debug!(%peer, %request_id, %error, "batch failed");
                self.finish_outbound(Exchange::Batch(request_id), Err(deliver_error(peer, error)));
            }
            request_response::Event::InboundFailure { peer, request_id, error, .. } => {
                debug!(%peer, %request_id, %error, "received batch failed");
                self.channels.remove(&Exchange::Batch(request_id));
            }
            request_response::Event::ResponseSent { peer, request_id, .. } => {
                trace!(%peer, %request_id, "answer sent");
            }
        }
    }

    /// Hands validated envelopes (one delivery, or a batch) to the engine, or refuses them all
    /// when the engine already holds too many: in all, or from this peer. Caps count envelopes,
    /// so a batch weighs what its envelopes would alone.
    fn handle_inbound(
        &mut self,
        peer: PeerId,
        exchange: Exchange<InboundRequestId>,
        envelopes: Vec<serde_bytes::ByteBuf>,
        channel: Channel,
    ) {
        let weight = envelopes.len();
        let from_peer = self.pending_inbound.get(&peer).copied().unwrap_or(0);
        if self.pending_envelopes + weight > self.limits.pending_inbound
            || from_peer + weight > self.limits.pending_inbound_per_peer
        {
            debug!(%peer, from_peer, total = self.pending_envelopes, "too many unanswered deliveries; refusing");
            self.respond(channel, vec![RATE_LIMITED; weight]);
            return;
        }
        let (event, rx) = match exchange {
            Exchange::One(_) => {
                let (tx, rx) = oneshot::channel();
                let envelope =
                    envelopes.into_iter().next().map(serde_bytes::ByteBuf::into_vec).unwrap_or_default();
                let event =
                    Event::Delivery { peer, request: deliver::Request { envelope }, reply: Reply::new(tx) };
                (event, futures::future::Either::Left(async move { rx.await.ok().map(|r| vec![r]) }))
            }
            Exchange::Batch(_) => {
                let (tx, rx) = oneshot::channel();
                let event = Event::Deliveries {
                    peer,
                    batch: deliver::Batch { envelopes },
                    reply: BatchReply::new(tx),
                };
                (event, futures::future::Either::Right(async move { rx.await.ok() }))
            }
        };
        match self.events.try_send(event) {
            Ok(()) => {
                trace!(%peer, ?exchange, weight, "delivery handed to the engine");
                self.channels.insert(exchange, channel);
                *self.pending_inbound.entry(peer).or_default() += weight;
                self.pending_envelopes += weight;
                self.replies.push(Box::pin(async move {
                    EngineReply { exchange, peer, weight, responses: rx.await }
                }));
            }
            Err(TrySendError::Full(_)) => {
                debug!(%peer, "engine queue full; refusing a delivery");
                self.respond(channel, vec![RATE_LIMITED; weight]);
            }
            Err(TrySendError::Closed(_)) => {
                debug!(%peer, "engine gone; refusing a delivery");
                self.respond(channel, vec![deliver::Response::Refused(Refusal::Internal); weight]);
            }
        }
    }

    fn handle_engine_reply(&mut self, EngineReply { exchange, peer, weight, responses }: EngineReply) {
        if let Some(count) = self.pending_inbound.get_mut(&peer) {
            *count = count.saturating_sub(weight);
            if *count == 0 {
                self.pending_inbound.remove(&peer);
            }
        }
        self.pending_envelopes = self.pending_envelopes.saturating_sub(weight);
        let responses = responses.unwrap_or_else(|| {
            debug!(%peer, ?exchange, "the engine dropped a delivery without answering");
            vec![deliver::Response::Refused(Refusal::Internal); weight]
        });
        match self.channels.remove(&exchange) {
            Some(channel) => self.respond(channel, responses),
            None => debug!(%peer, ?exchange, "the peer no longer waits for this answer"),
        }
    }

    /// Answers a received delivery or batch; answers missing from `responses` (an engine bug)
    /// become `Refused(Internal)`, so the peer always gets one per envelope.
    fn respond(&mut self, channel: Channel, mut responses: Vec<deliver::Response>) {
        let behaviour = self.swarm.behaviour_mut();
        let sent = match channel {
            Channel::One(channel) => {
                let response =
                    responses.into_iter().next().unwrap_or(deliver::Response::Refused(Refusal::Internal));
                behaviour.deliver.send_response(channel, response).is_ok()
            }
            Channel::Batch(channel, len) => {
                responses.resize(len, deliver::Response::Refused(Refusal::Internal));
                behaviour
                    .deliver_batch
                    .send_response(channel, deliver::BatchResponse { results: responses })
                    .is_ok()
            }
        };
        if !sent {
            // The request timed out or its connection closed; libp2p reports that separately.
            debug!("answer not sent: the peer no longer waits for it");
        }
    }

    fn handle_mailbox_event(&mut self, event: request_response::Event<mailbox::Request, mailbox::Response>) {
        match event {
            request_response::Event::Message { peer, message, .. } => match message {
                request_response::Message::Request { request, channel, .. } => {
                    self.serve_mailbox(peer, request, channel);
                }
                request_response::Message::Response { request_id, response } => {
                    if let Some(pending) = self.mailbox_requests.remove(&request_id) {
                        pending.finish(response);
                    }
                }
            },
            request_response::Event::OutboundFailure { peer, request_id, error, .. } => {
                debug!(relay = %peer, %request_id, %error, "mailbox request failed");
                let Some(pending) = self.mailbox_requests.remove(&request_id) else { return };
                pending.fail(relay_failure(peer, &error));
            }
            request_response::Event::InboundFailure { peer, request_id, error, .. } => {
                debug!(%peer, %request_id, %error, "a mailbox request to us failed");
            }
            request_response::Event::ResponseSent { .. } => {}
        }
    }

    /// Relay role: hands a mailbox request to the service, or refuses it when too many are
    /// being served already (long polls included).
    fn serve_mailbox(
        &mut self,
        peer: PeerId,
        request: mailbox::Request,
        channel: ResponseChannel<mailbox::Response>,
    ) {
        let Some(server) = &self.mailbox_server else {
            // Only a relay advertises the protocol; answer a confused peer anyway.
            self.respond_mailbox(channel, mailbox::Response::Refused(Refusal::Unauthorized));
            return;
        };
        if self.serving.len() >= self.max_serving {
            debug!(%peer, serving = self.serving.len(), "too many mailbox requests; refusing");
            let busy = Refusal::RateLimited { retry_after_ms: RETRY_AFTER_MS };
            self.respond_mailbox(channel, mailbox::Response::Refused(busy));
            return;
        }
        let answer = server.serve(peer, self.peer_ips.get(&peer).copied(), request);
        self.serving.push(Box::pin(async move { (channel, answer.await) }));
    }

    fn handle_blob_event(&mut self, event: request_response::Event<blob::Request, blob::Response>) {
        match event {
            request_response::Event::Message { peer, message, .. } => match message {
                request_response::Message::Request { request, channel, .. } => {
                    self.serve_blob(peer, request, channel);
                }
                request_response::Message::Response { request_id, response } => {
                    if let Some(pending) = self.blob_requests.remove(&request_id) {
                        pending.finish(response);
                    }
                }
            },
            request_response::Event::OutboundFailure { peer, request_id, error, .. } => {
                debug!(relay = %peer, %request_id, %error, "blob request failed");
                let Some(pending) = self.blob_requests.remove(&request_id) else { return };
                pending.fail(relay_failure(peer, &error));
            }
            request_response::Event::InboundFailure { peer, request_id, error, .. } => {
                debug!(%peer, %request_id, %error, "a blob request to us failed");
            }
            request_response::Event::ResponseSent { .. } => {}
        }
    }

    /// Relay role: hands a blob request to the service, saying whether the peer holds a
    /// reservation with us, or refuses it when too many are being served already.
    fn serve_blob(&mut self, peer: PeerId, request: blob::Request, channel: ResponseChannel<blob::Response>) {
        let Some(server) = &self.blob_server else {
            self.respond_blob(channel, blob::Response::Refused(Refusal::Unauthorized));
            return;
        };
        // Files never go over a relay's circuit (some 128 KiB), either way.
        if !self.direct_connections.contains_key(&peer) {
            self.respond_blob(channel, blob::Response::Refused(Refusal::Unauthorized));
            return;
        }
        // An answer holds up to 1 MiB until it is sent: few at once.
        if self.blob_serving.len() >= MAX_BLOB_SERVING {
            debug!(%peer, serving = self.blob_serving.len(), "too many blob requests; refusing");
            let busy = Refusal::RateLimited { retry_after_ms: RETRY_AFTER_MS };
            self.respond_blob(channel, blob::Response::Refused(busy));
            return;
        }
        let reserved = self.reservation_holders.contains_key(&peer);
        let answer = server.serve(peer, self.peer_ips.get(&peer).copied(), reserved, request);
        self.blob_serving.push(Box::pin(async move { (channel, answer.await) }));
    }

    fn respond_blob(&mut self, channel: ResponseChannel<blob::Response>, response: blob::Response) {
        if self.swarm.behaviour_mut().blob.send_response(channel, response).is_err() {
            debug!("blob answer not sent: the peer no longer waits for it");
        }
    }

    fn respond_mailbox(&mut self, channel: ResponseChannel<mailbox::Response>, response: mailbox::Response) {
        if self.swarm.behaviour_mut().mailbox.send_response(channel, response).is_err() {
            debug!("mailbox answer not sent: the peer no longer waits for it");
        }
    }

    /// Listens through every relay whose turn has come.
    fn reserve_due(&mut self) {
        let now = Instant::now();
        for (relay, circuit) in self.reservations.due(now) {
            match self.swarm.listen_on(circuit.clone()) {
                Ok(listener) => {
                    debug!(%relay, "asking the relay for a reservation");
                    self.reservations.listening(relay, listener);
                }
                Err(error) => {
                    debug!(%relay, %error, "cannot listen through the relay");
                    self.reservations.failed(relay, now, jitter());
                }
            }
        }
    }

    fn handle_relay_client_event(&mut self, event: relay::client::Event) {
        match event {
            relay::client::Event::ReservationReqAccepted { relay_peer_id, renewal, .. } => {
                if !renewal {
                    info!(relay = %relay_peer_id, "relay reservation accepted");
                }
                self.reservations.reserved(relay_peer_id);
                self.push_event(Event::RelayReserved(relay_peer_id));
            }
            relay::client::Event::OutboundCircuitEstablished { relay_peer_id, .. } => {
                debug!(relay = %relay_peer_id, "connected to a peer through a relay");
            }
            relay::client::Event::InboundCircuitEstablished { src_peer_id, .. } => {
                debug!(peer = %src_peer_id, "a peer connected to us through a relay");
            }
        }
    }

    fn handle_relay_server_event(&mut self, event: relay::Event) {
        match &event {
            // A renewal on the same connection replaces its reservation.
            relay::Event::ReservationReqAccepted { src_peer_id, renewed: false } => {
                *self.reservation_holders.entry(*src_peer_id).or_default() += 1;
            }
            relay::Event::ReservationClosed { src_peer_id }
            | relay::Event::ReservationTimedOut { src_peer_id } => {
                if let Some(count) = self.reservation_holders.get_mut(src_peer_id) {
                    *count = count.saturating_sub(1);
                    if *count == 0 {
                        self.reservation_holders.remove(src_peer_id);
                    }
                }
            }
            _ => {}
        }
        self.update_reservations_gauge();
        debug!(?event, "relay");
    }

    fn update_reservations_gauge(&self) {
        if let Some(gauge) = &self.reservations_gauge {
            gauge.set(i64::try_from(self.reservation_holders.len()).unwrap_or(i64::MAX));
        }
    }

    /// Relay role without configured public addresses: a listen address is taken as public, as
    /// on loopback in tests (without an external address the relay server offers nothing).
    fn maybe_publish_listen_addr(&mut self, address: Multiaddr) {
        if self.listen_addrs_are_public && !address.iter().any(|p| p == Protocol::P2pCircuit) {
            self.swarm.add_external_address(address);
        }
    }

    fn handle_identify_event(&mut self, event: identify::Event) {
        match event {
            identify::Event::Received { peer_id, info, connection_id } => {
                debug!(peer = %peer_id, agent = %info.agent_version, version = %info.protocol_version, "identified");
                self.finish_probe(
                    connection_id,
                    Ok(info.protocols.iter().map(ToString::to_string).collect()),
                );
                // kad learns addresses only from us; a peer that serves our DHT is worth knowing.
                if info.protocols.contains(&KAD_PROTOCOL) {
                    let kad = &mut self.swarm.behaviour_mut().kad;
                    for addr in info.listen_addrs {
                        kad.add_address(&peer_id, addr);
                    }
                }
            }
            identify::Event::Error { peer_id, error, .. } => {
                debug!(peer = %peer_id, %error, "identify failed")
            }
            identify::Event::Sent { .. } | identify::Event::Pushed { .. } => {}
        }
    }

    fn handle_mdns_event(&mut self, event: mdns::Event) {
        match event {
            mdns::Event::Discovered(found) => {
                // mDNS already told the swarm's address books; the engine hears once per peer.
                let local = *self.swarm.local_peer_id();
                let mut by_peer: BTreeMap<PeerId, Vec<Multiaddr>> = BTreeMap::new();
                for (peer, addr) in found.into_iter().filter(|(peer, _)| *peer != local) {
                    by_peer.entry(peer).or_default().push(addr);
                }
                for (peer, addrs) in by_peer {
                    debug!(%peer, ?addrs, "found on the local network");
                    self.push_event(Event::Discovered { peer, addrs });
                }
            }
            mdns::Event::Expired(gone) => debug!(records = gone.len(), "mDNS records expired"),
        }
    }

    /// Hands a non-delivery event to the engine, keeping it in the bounded backlog if the
    /// engine's queue is full.
    fn push_event(&mut self, event: Event) {
        let event = if self.backlog.is_empty() {
            match self.events.try_send(event) {
                Ok(()) | Err(TrySendError::Closed(_)) => return,
                Err(TrySendError::Full(event)) => event,
            }
        } else {
            event
        };
        if self.backlog.len() >= MAX_EVENT_BACKLOG {
            warn!(?event, "the engine is behind; dropping a network event");
            return;
        }
        self.backlog.push_back(event);
    }
}

/// Sends an answer to whoever asked. An error means the asker stopped waiting (its deadline
/// passed, or it was dropped); there is nothing to undo.
/// What an outgoing delivery's failure means for its caller.
fn deliver_error(peer: PeerId, error: OutboundFailure) -> DeliverError {
    match error {
        OutboundFailure::DialFailure => DeliverError::Unreachable { peer, reason: "dial failed".to_owned() },
        OutboundFailure::Timeout => DeliverError::Timeout { peer },
        OutboundFailure::ConnectionClosed => DeliverError::ConnectionClosed { peer },
        OutboundFailure::UnsupportedProtocols => DeliverError::Unsupported { peer },
        OutboundFailure::Io(source) => DeliverError::Stream { peer, source },
    }
}

fn answer<T>(reply: oneshot::Sender<T>, value: T) {
    if reply.send(value).is_err() {
        trace!("the asker no longer waits");
    }
}

fn handle_dcutr_event(event: dcutr::Event) {
    match event.result {
        Ok(_) => {
            info!(peer = %event.remote_peer_id, "hole punched: direct connection upgraded from a relayed one")
        }
        Err(error) => debug!(peer = %event.remote_peer_id, %error, "hole punching failed; staying relayed"),
    }
}

/// Feeds libp2p's metrics with a swarm event and, for behaviours it knows, the inner event.
fn record_metrics(metrics: &libp2p::metrics::Metrics, event: &SwarmEvent<BehaviourEvent>) {
    use libp2p::metrics::Recorder;
    metrics.record(event);
    match event {
        SwarmEvent::Behaviour(BehaviourEvent::Identify(event)) => metrics.record(event),
        SwarmEvent::Behaviour(BehaviourEvent::Kad(event)) => metrics.record(event),
        SwarmEvent::Behaviour(BehaviourEvent::Ping(event)) => metrics.record(event),
        SwarmEvent::Behaviour(BehaviourEvent::RelayServer(event)) => metrics.record(event),
        SwarmEvent::Behaviour(BehaviourEvent::Dcutr(event)) => metrics.record(event),
        _ => {}
    }
}

/// A factor between 0.5 and 1.5 that spreads retries.
fn jitter() -> f64 {
    0.5 + rand::random::<f64>()
}

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
        None => std::future::pending().await,
    }
}

/// Blob requests served at once: each answer may hold 1 MiB until the peer takes it.
const MAX_BLOB_SERVING: usize = 64;

/// Whether `addr` goes through a relay's circuit.
fn is_relayed(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| p == Protocol::P2pCircuit)
}

/// What a failed request to a relay (mailbox or blob) means to its asker.
fn relay_failure(relay: PeerId, error: &OutboundFailure) -> MailboxError {
    match error {
        OutboundFailure::DialFailure => MailboxError::Unreachable { relay, reason: "dial failed".to_owned() },
        OutboundFailure::Timeout => MailboxError::Timeout { relay },
        OutboundFailure::UnsupportedProtocols => MailboxError::NotARelay { relay },
        OutboundFailure::ConnectionClosed | OutboundFailure::Io(_) => MailboxError::ConnectionLost { relay },
    }
}
