//! Networking over libp2p for both roles: TCP and QUIC transports, connection limits, identify,
//! ping, mDNS, Kademlia on our own protocol name, direct delivery (`/merpati/deliver/1`) and the
//! relays' mailboxes (`/merpati/mailbox/2`) and files (`/merpati/blob/1`), all request-response
//! with CBOR. A user node also
//! keeps relay reservations (relay client, DCUtR hole punching, an AutoNAT v2 client); a
//! community relay runs the relay v2 server, an AutoNAT v2 server, the mailbox service and the
//! blob service.
//!
//! [`spawn`] starts a network task that owns the swarm and returns:
//! * a [`Handle`] to deliver envelopes to peers and ask about the node;
//! * an [`Inbound`] queue of [`Event`]s for the engine: received deliveries (answered through
//!   their [`Reply`] once stored), new peer connections, peers found by mDNS;
//! * the task's `JoinHandle`, which ends after the shutdown token is cancelled.
//!
//! ```text
//!  Handle ──Command + oneshot──▶ ┌──────────────┐ ──deliver request──▶ peer
//!                                │ network task │ ◀──────answer──────
//!  engine ◀──Event (Inbound)──── │   (swarm)    │ ◀──deliver request── peer
//!     └──Reply (oneshot)───────▶ └──────────────┘ ──answer──────────▶
//! ```
//!
//! Every queue is bounded: commands, the engine's events, deliveries per peer and in all,
//! unanswered received deliveries; when one is full, callers wait (commands), get
//! [`DeliverError::QueueFull`] (outgoing), or peers are answered `RateLimited` (incoming).

mod actor;
mod behaviour;
mod blob;
mod config;
mod counting_codec;
mod error;
mod handle;
mod inbound;
mod mailbox;
mod reservations;

use std::collections::HashMap;

use libp2p::identity::Keypair;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use self::blob::BlobServer;
pub use self::config::{Config, RelayServer};
pub use self::error::{DeliverError, MailboxError, NetError};
pub use self::handle::{Handle, ProbeError, Stopped};
pub use self::inbound::{BatchReply, Event, Inbound, Reply};
pub use self::mailbox::MailboxServer;
pub use self::reservations::{RelayStatus, peer_of};

/// What a node may plug into its network beyond the [`Config`]: the relay role's mailbox service
/// and metrics.
#[derive(Default)]
pub struct Extras {
    /// The service behind `/merpati/mailbox/2` (relay role).
    pub mailbox_server: Option<std::sync::Arc<dyn MailboxServer>>,
    /// The service behind `/merpati/blob/1` (relay role).
    pub blob_server: Option<std::sync::Arc<dyn BlobServer>>,
    /// libp2p's metrics, fed with every swarm event.
    pub metrics: Option<libp2p::metrics::Metrics>,
    /// Set to the number of relay reservations held (relay role).
    pub reservations_gauge: Option<prometheus_client::metrics::gauge::Gauge>,
}

impl std::fmt::Debug for Extras {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Extras")
            .field("mailbox_server", &self.mailbox_server.is_some())
            .field("blob_server", &self.blob_server.is_some())
            .field("metrics", &self.metrics.is_some())
            .finish()
    }
}

/// Starts the network of a user node with identity `keypair`: builds the transports and
/// behaviours, listens on `config`'s addresses and waits (a few seconds at most) until each
/// listener has an address, then runs the network task on the current tokio runtime until
/// `shutdown` is cancelled or every [`Handle`] is dropped.
///
/// # Errors
/// [`NetError`] if the libp2p stack cannot be built or a listen address cannot be listened on
/// (unsupported protocol, address in use); nothing keeps running then.
pub async fn spawn(
    config: Config,
    keypair: Keypair,
    shutdown: CancellationToken,
) -> Result<(Handle, Inbound, JoinHandle<()>), NetError> {
    spawn_with(config, keypair, Extras::default(), shutdown).await
}

/// [`spawn`] with [`Extras`]: how a community relay starts its network.
pub async fn spawn_with(
    config: Config,
    keypair: Keypair,
    extras: Extras,
    shutdown: CancellationToken,
) -> Result<(Handle, Inbound, JoinHandle<()>), NetError> {
    let local_peer_id = keypair.public().to_peer_id();
    let undecodable = extras.mailbox_server.clone().map(|server| {
        let hook: counting_codec::UndecodableHook = std::sync::Arc::new(move || server.undecodable());
        hook
    });
    let mut swarm = behaviour::build_swarm(&config, keypair, undecodable)?;
    if let Some(relay) = &config.relay_server {
        for addr in &relay.public_addrs {
            swarm.add_external_address(addr.clone());
        }
    }
    let mut listeners = HashMap::new();
    for addr in &config.listen_addrs {
        let id = swarm
            .listen_on(addr.clone())
            .map_err(|source| NetError::Listen { addr: addr.clone(), source })?;
        listeners.insert(id, addr.clone());
    }

    let (command_tx, command_rx) = mpsc::channel(config.command_queue);
    let (event_tx, event_rx) = mpsc::channel(config.inbound_queue);
    let mut actor = actor::Actor::new(swarm, &config, command_rx, event_tx, extras);
    actor.await_listeners(listeners, &shutdown).await?;
    let task = tokio::spawn(actor.run(shutdown));

    let handle = Handle::new(command_tx, local_peer_id, config.deliver_timeout, config.mailbox_timeout);
    Ok((handle, Inbound::new(event_rx), task))
}
