//! [`Config`]: what a user node listens on and the bounds it keeps, with the defaults stated on
//! each setter.

use std::time::Duration;

use libp2p::Multiaddr;
use libp2p::multiaddr::Protocol;

/// Listen on every IPv4 interface, TCP and QUIC, on ports the OS picks. Keeping the two listeners
/// separate (rather than one shared port) is what libp2p needs later for port reuse when hole
/// punching.
fn default_listen_addrs() -> Vec<Multiaddr> {
    let any = std::net::Ipv4Addr::UNSPECIFIED;
    vec![
        Multiaddr::empty().with(Protocol::Ip4(any)).with(Protocol::Tcp(0)),
        Multiaddr::empty().with(Protocol::Ip4(any)).with(Protocol::Udp(0)).with(Protocol::QuicV1),
    ]
}

/// Configuration of the user node's networking. Every field has a default; the `with_*` setters
/// say what it is and in which unit.
#[derive(Clone, Debug)]
pub struct Config {
    pub(crate) listen_addrs: Vec<Multiaddr>,
    pub(crate) mdns: bool,
    pub(crate) idle_connection_timeout: Duration,
    pub(crate) dial_timeout: Duration,
    pub(crate) request_timeout: Duration,
    pub(crate) deliver_timeout: Duration,
    pub(crate) max_deliveries_in_flight_per_peer: usize,
    pub(crate) max_queued_deliveries_per_peer: usize,
    pub(crate) max_outgoing_deliveries: usize,
    pub(crate) max_pending_inbound: usize,
    pub(crate) max_pending_inbound_per_peer: usize,
    pub(crate) inbound_queue: usize,
    pub(crate) command_queue: usize,
    pub(crate) max_connections: u32,
    pub(crate) max_connections_per_peer: u32,
    pub(crate) max_pending_connections: u32,
    pub(crate) mailbox_timeout: Duration,
    pub(crate) max_mailbox_requests: usize,
    pub(crate) relay_retry_max: Duration,
    pub(crate) autonat_probe_interval: Duration,
    pub(crate) ping_interval: Duration,
    pub(crate) relay_server: Option<RelayServer>,
}

/// The relay role's network settings: what a community relay offers and how much of it.
#[derive(Clone, Debug)]
pub struct RelayServer {
    /// The relay's public addresses (without `/p2p`), announced as confirmed external addresses:
    /// without one, libp2p's relay server offers no reservations at all. Empty: every listen
    /// address counts as public (right on loopback and in tests, wrong behind NAT).
    pub public_addrs: Vec<Multiaddr>,
    /// Relay v2 reservations held at once (default 1024).
    pub max_reservations: usize,
    /// Relayed connections at once (default 256).
    pub max_circuits: usize,
}

impl Default for RelayServer {
    fn default() -> Self {
        Self { public_addrs: Vec::new(), max_reservations: 1024, max_circuits: 256 }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen_addrs: default_listen_addrs(),
            mdns: true,
            idle_connection_timeout: Duration::from_secs(60),
            dial_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(20),
            deliver_timeout: Duration::from_secs(45),
            max_deliveries_in_flight_per_peer: 32,
            max_queued_deliveries_per_peer: 256,
            max_outgoing_deliveries: 1024,
            max_pending_inbound: 256,
            max_pending_inbound_per_peer: 64,
            inbound_queue: 128,
            command_queue: 64,
            max_connections: 256,
            max_connections_per_peer: 8,
            max_pending_connections: 64,
            // Above the longest long-poll fetch a node asks for, so a long poll ends with an
            // answer rather than a timeout.
            mailbox_timeout: Duration::from_millis(
                u64::from(merpati_proto::wire::MAX_FETCH_WAIT_MS) + 15_000,
            ),
            max_mailbox_requests: 8192,
            relay_retry_max: Duration::from_secs(300),
            autonat_probe_interval: Duration::from_secs(600),
            // libp2p's default is 15 s: most of an idle node's traffic. Long polls and
            // reservations already notice a dead relay; a NAT keeps a TCP mapping far longer.
            ping_interval: Duration::from_secs(90),
            relay_server: None,
        }
    }
}

impl Config {
    /// The addresses to listen on. Default: `/ip4/0.0.0.0/tcp/0` and
    /// `/ip4/0.0.0.0/udp/0/quic-v1` (every IPv4 interface, ports picked by the OS). An empty list
    /// makes a node that only dials out.
    pub fn with_listen_addrs(mut self, addrs: Vec<Multiaddr>) -> Self {
        self.listen_addrs = addrs;
        self
    }

    /// Whether to find and announce peers on the local network with mDNS. Default: `true`. mDNS
    /// skips loopback interfaces, so it finds nothing between nodes on 127.0.0.1.
    pub fn with_mdns(mut self, mdns: bool) -> Self {
        self.mdns = mdns;
        self
    }

    /// How long a connection with no open stream stays up. Default: 60 s. libp2p's own default of
    /// 10 s would close a contact's connection between two messages of a conversation.
    pub fn with_idle_connection_timeout(mut self, timeout: Duration) -> Self {
        self.idle_connection_timeout = timeout;
        self
    }

    /// How long one connection attempt (transport, Noise and yamux set-up) may take. Default: 10 s.
    pub fn with_dial_timeout(mut self, timeout: Duration) -> Self {
        self.dial_timeout = timeout;
        self
    }

    /// How long one request may take once its stream is open: sending it and reading the answer,
    /// and, on the receiving side, the time the engine has to answer before the request is
    /// dropped. Default: 20 s.
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// The longest [`Handle::deliver`](super::Handle::deliver) waits in all (queueing, dialling
    /// and the request) before it gives up with a timeout. Default: 45 s, a little more than a
    /// dial and a request in turn.
    pub fn with_deliver_timeout(mut self, timeout: Duration) -> Self {
        self.deliver_timeout = timeout;
        self
    }

    /// The most deliveries sent to one peer and not yet answered; more wait in a queue. Default:
    /// 32; at least 1. This keeps us well under yamux's limit of 256 unacknowledged streams per
    /// connection and under the receiver's per-connection stream cap.
    pub fn with_max_deliveries_in_flight_per_peer(mut self, max: usize) -> Self {
        self.max_deliveries_in_flight_per_peer = max.max(1);
        self
    }

    /// The most deliveries waiting (not yet sent) for one peer; beyond it
    /// [`Handle::deliver`](super::Handle::deliver) fails at once with a full queue. Default: 256.
    pub fn with_max_queued_deliveries_per_peer(mut self, max: usize) -> Self {
        self.max_queued_deliveries_per_peer = max;
        self
    }

    /// The most deliveries not yet answered, waiting or in flight, for all peers together; beyond
    /// it [`Handle::deliver`](super::Handle::deliver) fails at once with a full queue. Default:
    /// 1024 (at most 64 MiB of envelopes).
    pub fn with_max_outgoing_deliveries(mut self, max: usize) -> Self {
        self.max_outgoing_deliveries = max;
        self
    }

    /// The most received deliveries the engine holds unanswered, from all peers together; more
    /// are refused as rate limited. Default: 256.
    pub fn with_max_pending_inbound(mut self, max: usize) -> Self {
        self.max_pending_inbound = max;
        self
    }

    /// The most received deliveries the engine holds unanswered from one peer; more from that
    /// peer are refused as rate limited. Default: 64.
    pub fn with_max_pending_inbound_per_peer(mut self, max: usize) -> Self {
        self.max_pending_inbound_per_peer = max;
        self
    }

    /// Capacity of the [`Inbound`](super::Inbound) event queue, in events. When it is full, new
    /// deliveries are refused as rate limited rather than buffered. Default: 128; at least 1.
    pub fn with_inbound_queue(mut self, capacity: usize) -> Self {
        self.inbound_queue = capacity.max(1);
        self
    }

    /// Capacity of the queue of commands from [`Handle`](super::Handle)s to the network task, in
    /// commands; callers wait when it is full. Default: 64; at least 1.
    pub fn with_command_queue(mut self, capacity: usize) -> Self {
        self.command_queue = capacity.max(1);
        self
    }

    /// The most established connections, all peers together. Default: 256.
    pub fn with_max_connections(mut self, max: u32) -> Self {
        self.max_connections = max;
        self
    }

    /// The most established connections to one peer. Default: 8.
    pub fn with_max_connections_per_peer(mut self, max: u32) -> Self {
        self.max_connections_per_peer = max;
        self
    }

    /// The most connections being set up at once, in each direction. Default: 64.
    pub fn with_max_pending_connections(mut self, max: u32) -> Self {
        self.max_pending_connections = max;
        self
    }

    /// How long a mailbox request to a relay may take, long polls included. Default: 45 s.
    pub fn with_mailbox_timeout(mut self, timeout: Duration) -> Self {
        self.mailbox_timeout = timeout;
        self
    }

    /// Relay role: the most mailbox requests being served at once, long polls included; beyond
    /// it requests are answered `RateLimited`. Default: 8192.
    pub fn with_max_mailbox_requests(mut self, max: usize) -> Self {
        self.max_mailbox_requests = max.max(1);
        self
    }

    /// User node: the longest wait between attempts to regain a lost relay reservation (the wait
    /// doubles from one second up to this, with jitter). Default: 300 s.
    pub fn with_relay_retry_max(mut self, max: Duration) -> Self {
        self.relay_retry_max = max.max(Duration::from_secs(1));
        self
    }

    /// User node: how often AutoNAT asks servers to confirm an address candidate. Default:
    /// 600 s, so an idle laptop sends almost nothing.
    pub fn with_autonat_probe_interval(mut self, interval: Duration) -> Self {
        self.autonat_probe_interval = interval;
        self
    }

    /// How often each connection is pinged (liveness and round-trip time). Default: 90 s.
    pub fn with_ping_interval(mut self, interval: Duration) -> Self {
        self.ping_interval = interval;
        self
    }

    /// Runs the node as a community relay: Kademlia in server mode, a relay v2 server, an
    /// AutoNAT v2 server and the mailbox service. Default: a user node.
    pub fn with_relay_server(mut self, relay: RelayServer) -> Self {
        self.relay_server = Some(relay);
        self
    }

    /// Whether the node runs as a community relay.
    pub fn is_relay(&self) -> bool {
        self.relay_server.is_some()
    }

    /// The addresses the node will listen on.
    pub fn listen_addrs(&self) -> &[Multiaddr] {
        &self.listen_addrs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_documented_ones() {
        let config = Config::default();
        let listen: Vec<String> = config.listen_addrs().iter().map(ToString::to_string).collect();
        assert_eq!(listen, ["/ip4/0.0.0.0/tcp/0", "/ip4/0.0.0.0/udp/0/quic-v1"]);
        assert!(config.mdns);
        assert_eq!(config.idle_connection_timeout, Duration::from_secs(60));
        assert_eq!(config.request_timeout, Duration::from_secs(20));
        assert!(config.deliver_timeout > config.dial_timeout + config.request_timeout);
        assert_eq!((config.max_connections, config.max_connections_per_peer), (256, 8));
    }

    #[test]
    fn queues_never_get_a_zero_capacity() {
        // tokio's bounded channels panic on a capacity of 0.
        let config = Config::default().with_inbound_queue(0).with_command_queue(0);
        assert_eq!((config.inbound_queue, config.command_queue), (1, 1));
        assert_eq!(
            Config::default().with_max_deliveries_in_flight_per_peer(0).max_deliveries_in_flight_per_peer,
            1
        );
    }
}
