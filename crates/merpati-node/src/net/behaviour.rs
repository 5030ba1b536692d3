//! The libp2p stack of a user node: transports (TCP with Noise and yamux, QUIC, DNS) and the
//! composed [`Behaviour`].
//!
//! The relay client and DCUtR join later: `with_relay_client` slots in after `with_dns` in
//! [`build_swarm`], and its behaviour becomes one more field of [`Behaviour`], taken from the
//! constructor's second argument.

use libp2p::identity::Keypair;
use libp2p::request_response::{self, ProtocolSupport, cbor};
use libp2p::swarm::{NetworkBehaviour, behaviour::toggle::Toggle};
use libp2p::{
    StreamProtocol, Swarm, SwarmBuilder, connection_limits, identify, kad, mdns, noise, ping, tcp, yamux,
};
use merpati_proto::wire::{self, deliver};

use super::config::Config;
use super::error::NetError;

/// The identify protocol version we announce; peers on another network show up with another
/// one.
pub(crate) const IDENTIFY_PROTOCOL_VERSION: &str = "/merpati/id/1.0.0";
/// Our own Kademlia protocol name, so our DHT never mixes with the IPFS one.
pub(crate) const KAD_PROTOCOL: StreamProtocol = StreamProtocol::new("/merpati/kad/1.0.0");
/// The deliver protocol as libp2p names it.
pub(crate) const DELIVER_PROTOCOL: StreamProtocol = StreamProtocol::new(wire::DELIVER_PROTOCOL);

/// The deliver protocol's request-response behaviour: CBOR over one stream per request.
pub(crate) type Deliver = cbor::Behaviour<deliver::Request, deliver::Response>;

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
}

impl Behaviour {
    fn new(config: &Config, key: &Keypair) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        let peer_id = key.public().to_peer_id();

        let limits = connection_limits::Behaviour::new(
            connection_limits::ConnectionLimits::default()
                .with_max_established(Some(config.max_connections))
                .with_max_established_per_peer(Some(config.max_connections_per_peer))
                .with_max_pending_incoming(Some(config.max_pending_connections))
                .with_max_pending_outgoing(Some(config.max_pending_connections)),
        );

        let identify = identify::Behaviour::new(
            identify::Config::new(IDENTIFY_PROTOCOL_VERSION.to_owned(), key.public())
                .with_agent_version(format!("merpatid/{}", env!("CARGO_PKG_VERSION"))),
        );

        let mdns = if config.mdns {
            Some(mdns::tokio::Behaviour::new(mdns::Config::default(), peer_id)?)
        } else {
            None
        };

        let mut kad_config = kad::Config::new(KAD_PROTOCOL);
        // A user node asks the DHT but never serves it; nothing to bootstrap towards yet either
        // (relays, the DHT servers, come with their own issue).
        kad_config.set_periodic_bootstrap_interval(None);
        let mut kad = kad::Behaviour::with_config(peer_id, kad::store::MemoryStore::new(peer_id), kad_config);
        // Pinned: left automatic, kad would switch to server mode as soon as an external
        // address is confirmed, and a node behind NAT would advertise a service it cannot give.
        kad.set_mode(Some(kad::Mode::Client));

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
        let deliver = Deliver::with_codec(
            codec,
            [(DELIVER_PROTOCOL, ProtocolSupport::Full)],
            request_response::Config::default()
                .with_request_timeout(config.request_timeout)
                .with_max_concurrent_streams(max_streams),
        );

        Ok(Self {
            limits,
            identify,
            ping: ping::Behaviour::default(),
            mdns: Toggle::from(mdns),
            kad,
            deliver,
        })
    }
}

/// Streams allowed beyond our own caps, for requests we refuse at once (rate limited, invalid).
const STREAM_HEADROOM: usize = 16;

fn len_u64(len: usize) -> u64 {
    u64::try_from(len).unwrap_or(u64::MAX)
}

/// Builds the swarm: TCP (Noise, yamux) and QUIC, DNS resolution, our behaviours, and the
/// connection timeouts from `config`.
pub(crate) fn build_swarm(config: &Config, keypair: Keypair) -> Result<Swarm<Behaviour>, NetError> {
    let swarm = SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_tcp(tcp::Config::default().nodelay(true), noise::Config::new, yamux::Config::default)
        .map_err(|e| NetError::Build { stage: "TCP transport", source: Box::new(e) })?
        .with_quic()
        .with_dns()
        .map_err(|e| NetError::Build { stage: "DNS resolver", source: Box::new(e) })?
        .with_behaviour(|key| Behaviour::new(config, key))
        .map_err(|e| NetError::Build { stage: "behaviours", source: Box::new(e) })?
        .with_swarm_config(|c| c.with_idle_connection_timeout(config.idle_connection_timeout))
        .with_connection_timeout(config.dial_timeout)
        .build();
    Ok(swarm)
}
