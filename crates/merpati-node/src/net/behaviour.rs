//! The libp2p stack of both roles: transports (TCP with Noise and yamux, QUIC, DNS, relay
//! circuits) and the composed [`Behaviour`].
//!
//! One behaviour type serves both roles; the parts only one role runs are `Toggle`d off in the
//! other: a user node runs the relay client, DCUtR and an AutoNAT v2 client, and asks relays'
//! mailbox services; a community relay runs a relay v2 server, an AutoNAT v2 server, Kademlia in
//! server mode and serves the mailbox and blob protocols.

use libp2p::identity::Keypair;
use libp2p::request_response::{self, ProtocolSupport, cbor};

use super::counting_codec::{Counting, UndecodableHook};
use libp2p::swarm::{NetworkBehaviour, behaviour::toggle::Toggle};
use libp2p::{
    StreamProtocol, Swarm, SwarmBuilder, autonat, connection_limits, dcutr, identify, kad, mdns, noise, ping,
    relay, tcp, yamux,
};
use merpati_proto::wire::{self, blob, deliver, mailbox};

use super::config::Config;
use super::error::NetError;

/// The identify protocol version we announce; peers on another network show up with another
/// one.
pub(crate) const IDENTIFY_PROTOCOL_VERSION: &str = "/merpati/id/1.0.0";
/// Our own Kademlia protocol name, so our DHT never mixes with the IPFS one.
pub(crate) const KAD_PROTOCOL: StreamProtocol = StreamProtocol::new("/merpati/kad/1.0.0");
/// The deliver protocol as libp2p names it.
pub(crate) const DELIVER_PROTOCOL: StreamProtocol = StreamProtocol::new(wire::DELIVER_PROTOCOL);
/// The batched deliver protocol as libp2p names it.
pub(crate) const DELIVER_BATCH_PROTOCOL: StreamProtocol = StreamProtocol::new(wire::DELIVER_BATCH_PROTOCOL);

/// The mailbox protocol as libp2p names it.
pub(crate) const MAILBOX_PROTOCOL: StreamProtocol = StreamProtocol::new(wire::MAILBOX_PROTOCOL);

/// The blob protocol as libp2p names it.
pub(crate) const BLOB_PROTOCOL: StreamProtocol = StreamProtocol::new(blob::BLOB_PROTOCOL);

/// The deliver protocol's request-response behaviour: CBOR over one stream per request.
pub(crate) type Deliver = cbor::Behaviour<deliver::Request, deliver::Response>;
/// The batched deliver protocol's request-response behaviour.
pub(crate) type DeliverBatch = cbor::Behaviour<deliver::Batch, deliver::BatchResponse>;
/// The mailbox protocol's request-response behaviour; a relay counts the requests it cannot read.
pub(crate) type Mailbox =
    request_response::Behaviour<Counting<cbor::codec::Codec<mailbox::Request, mailbox::Response>>>;

/// The blob protocol's request-response behaviour.
pub(crate) type Blob = cbor::Behaviour<blob::Request, blob::Response>;

/// Every behaviour of a user node. Connection limits come first so that a denied connection is
/// refused before any other behaviour sets up a handler for it.
#[derive(NetworkBehaviour)]
pub(crate) struct Behaviour {
    pub(crate) limits: connection_limits::Behaviour,
    pub(crate) identify: identify::Behaviour,
    pub(crate) ping: ping::Behaviour,
    pub(crate) mdns: Toggle<mdns::tokio::Behaviour>,
    pub(crate) kad: kad::Behaviour<kad::store::MemoryStore>,
    pub(crate) deliver: Deliver,
    pub(crate) deliver_batch: DeliverBatch,
    pub(crate) mailbox: Mailbox,
    pub(crate) blob: Blob,
    pub(crate) relay_client: relay::client::Behaviour,
    pub(crate) dcutr: Toggle<dcutr::Behaviour>,
    pub(crate) autonat_client: Toggle<autonat::v2::client::Behaviour>,
    pub(crate) relay_server: Toggle<relay::Behaviour>,
    pub(crate) autonat_server: Toggle<autonat::v2::server::Behaviour>,
}

impl Behaviour {
    fn new(
        config: &Config,
        key: &Keypair,
        relay_client: relay::client::Behaviour,
        undecodable: Option<UndecodableHook>,
    ) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        let peer_id = key.public().to_peer_id();
        let is_relay = config.is_relay();

        let limits = connection_limits::Behaviour::new(
            connection_limits::ConnectionLimits::default()
                .with_max_established(Some(config.max_connections))
                .with_max_established_per_peer(Some(config.max_connections_per_peer))
                .with_max_pending_incoming(Some(config.max_pending_connections))
                .with_max_pending_outgoing(Some(config.max_pending_connections)),
        );

        // Signed peer records: other libp2p implementations can verify the addresses we state.
        let identify = identify::Behaviour::new(
            identify::Config::new_with_signed_peer_record(IDENTIFY_PROTOCOL_VERSION.to_owned(), key)
                .with_agent_version(format!("merpatid/{}", env!("CARGO_PKG_VERSION"))),
        );

        let mdns = if config.mdns {
            Some(mdns::tokio::Behaviour::new(mdns::Config::default(), peer_id)?)
        } else {
            None
        };

        let mut kad_config = kad::Config::new(KAD_PROTOCOL);
        // Nothing is looked up in the DHT yet; periodic bootstraps would only cost an idle
        // laptop traffic.
        kad_config.set_periodic_bootstrap_interval(None);
        // The DHT is for finding peers only: records and provider records others ask a relay to
        // keep are handed to us as events (which we ignore), never stored, so a relay is no free
        // key-value store for strangers.
        kad_config.set_record_filtering(kad::StoreInserts::FilterBoth);
        let mut kad = kad::Behaviour::with_config(peer_id, kad::store::MemoryStore::new(peer_id), kad_config);
        // Pinned both ways: left automatic, a user node would switch to server mode once an
        // external address is confirmed and advertise a service it cannot give behind NAT, and
        // a relay would wait for confirmation it may never get.
        kad.set_mode(Some(if is_relay { kad::Mode::Server } else { kad::Mode::Client }));

        let codec = cbor::codec::Codec::default()
            .set_request_size_maximum(len_u64(wire::MAX_REQUEST_LEN))
            .set_response_size_maximum(len_u64(wire::MAX_RESPONSE_LEN));
        // Per connection, inbound and outbound together: our own requests in flight plus what a
        // peer may have pending with us. libp2p drops inbound streams above it silently, so it
        // sits above both of our own caps and refusals stay explicit.
        let max_streams = config
            .max_deliveries_in_flight_per_peer
            .saturating_add(config.max_pending_inbound_per_peer)
            .saturating_add(STREAM_HEADROOM);
        // A relay keeps mailboxes, not conversations: it neither takes deliveries nor says it
        // would (identify lists only the protocols a node accepts).
        let deliver_support = if is_relay { ProtocolSupport::Outbound } else { ProtocolSupport::Full };
        let deliver = Deliver::with_codec(
            codec,
            [(DELIVER_PROTOCOL, deliver_support.clone())],
            request_response::Config::default()
                .with_request_timeout(config.request_timeout)
                .with_max_concurrent_streams(max_streams),
        );
        let batch_codec = cbor::codec::Codec::default()
            .set_request_size_maximum(len_u64(wire::MAX_BATCH_REQUEST_LEN))
            .set_response_size_maximum(len_u64(wire::MAX_REQUEST_LEN));
        let deliver_batch = DeliverBatch::with_codec(
            batch_codec,
            [(DELIVER_BATCH_PROTOCOL, deliver_support)],
            request_response::Config::default()
                .with_request_timeout(config.request_timeout)
                .with_max_concurrent_streams(max_streams),
        );

        // Relays serve mailboxes; user nodes only ask. Long polls need a longer timeout than
        // deliveries, and a relay serves many owners at once.
        let mailbox_codec = cbor::codec::Codec::default()
            .set_request_size_maximum(len_u64(wire::MAX_REQUEST_LEN))
            .set_response_size_maximum(len_u64(wire::MAX_RESPONSE_LEN));
        let mailbox_support = mailbox_support_for(is_relay);
        let mailbox = Mailbox::with_codec(
            Counting::new(mailbox_codec, undecodable),
            [(MAILBOX_PROTOCOL, mailbox_support)],
            request_response::Config::default()
                .with_request_timeout(config.mailbox_timeout)
                .with_max_concurrent_streams(config.max_mailbox_requests.saturating_add(STREAM_HEADROOM)),
        );

        // Relays keep files; user nodes ask, and serve their own files to their readers. A get
        // answers a page as large as a fetch's.
        let blob = Blob::with_codec(
            cbor::codec::Codec::default()
                .set_request_size_maximum(len_u64(wire::MAX_REQUEST_LEN))
                .set_response_size_maximum(len_u64(wire::MAX_RESPONSE_LEN)),
            [(BLOB_PROTOCOL, if is_relay { ProtocolSupport::Inbound } else { ProtocolSupport::Full })],
            request_response::Config::default()
                .with_request_timeout(config.request_timeout)
                .with_max_concurrent_streams(config.max_mailbox_requests.saturating_add(STREAM_HEADROOM)),
        );

        let relay_server = config.relay_server.as_ref().map(|server| {
            let relay_config = relay::Config {
                max_reservations: server.max_reservations,
                max_circuits: server.max_circuits,
                ..relay::Config::default()
            };
            relay::Behaviour::new(peer_id, relay_config)
        });
        let (dcutr, autonat_client, autonat_server) = if is_relay {
            (None, None, Some(autonat::v2::server::Behaviour::default()))
        } else {
            let autonat =
                autonat::v2::client::Config::default().with_probe_interval(config.autonat_probe_interval);
            (
                Some(dcutr::Behaviour::new(peer_id)),
                Some(autonat::v2::client::Behaviour::new(rand_for_autonat(), autonat)),
                None,
            )
        };

        Ok(Self {
            limits,
            identify,
            ping: ping::Behaviour::new(ping::Config::new().with_interval(config.ping_interval)),
            mdns: Toggle::from(mdns),
            kad,
            deliver,
            deliver_batch,
            mailbox,
            blob,
            relay_client,
            dcutr: Toggle::from(dcutr),
            autonat_client: Toggle::from(autonat_client),
            relay_server: Toggle::from(relay_server),
            autonat_server: Toggle::from(autonat_server),
        })
    }
}

/// A relay serves mailboxes; a user node only asks.
fn mailbox_support_for(is_relay: bool) -> ProtocolSupport {
    if is_relay { ProtocolSupport::Inbound } else { ProtocolSupport::Outbound }
}

/// Streams allowed beyond our own caps, for requests we refuse at once (rate limited, invalid).
const STREAM_HEADROOM: usize = 16;

fn len_u64(len: usize) -> u64 {
    u64::try_from(len).unwrap_or(u64::MAX)
}

/// Builds the swarm: TCP (Noise, yamux) and QUIC, DNS resolution, our behaviours, and the
/// connection timeouts from `config`. `undecodable` is told of each mailbox request that cannot
/// be read.
pub(crate) fn build_swarm(
    config: &Config,
    keypair: Keypair,
    undecodable: Option<UndecodableHook>,
) -> Result<Swarm<Behaviour>, NetError> {
    let swarm = SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_tcp(tcp::Config::default().nodelay(true), noise::Config::new, yamux::Config::default)
        .map_err(|e| NetError::Build { stage: "TCP transport", source: Box::new(e) })?
        .with_quic()
        .with_dns()
        .map_err(|e| NetError::Build { stage: "DNS resolver", source: Box::new(e) })?
        .with_relay_client(noise::Config::new, yamux::Config::default)
        .map_err(|e| NetError::Build { stage: "relay client", source: Box::new(e) })?
        .with_behaviour(|key, relay_client| Behaviour::new(config, key, relay_client, undecodable))
        .map_err(|e| NetError::Build { stage: "behaviours", source: Box::new(e) })?
        .with_swarm_config(|c| c.with_idle_connection_timeout(config.idle_connection_timeout))
        .with_connection_timeout(config.dial_timeout)
        .build();
    Ok(swarm)
}

/// The randomness AutoNAT's client picks nonces and servers with (its own type, seeded by the
/// operating system).
fn rand_for_autonat() -> rand::rngs::StdRng {
    rand::make_rng()
}
