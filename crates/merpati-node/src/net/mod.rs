//! The user node's networking over libp2p: TCP and QUIC transports, connection limits, identify,
//! ping, mDNS, a client-mode Kademlia on our own protocol name, and direct delivery
//! (`/merpati/deliver/1`, request-response with CBOR).
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
//! The relay role, relay client and DCUtR come later and slot into `behaviour.rs`.

mod actor;
mod behaviour;
mod config;
mod error;
mod handle;
mod inbound;

use std::collections::HashMap;

use libp2p::identity::Keypair;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use self::config::Config;
pub use self::error::{DeliverError, NetError};
pub use self::handle::{Handle, Stopped};
pub use self::inbound::{Event, Inbound, Reply};

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
    let local_peer_id = keypair.public().to_peer_id();
    let mut swarm = behaviour::build_swarm(&config, keypair)?;
    let mut listeners = HashMap::new();
    for addr in &config.listen_addrs {
        let id = swarm
            .listen_on(addr.clone())
            .map_err(|source| NetError::Listen { addr: addr.clone(), source })?;
        listeners.insert(id, addr.clone());
    }

    let (command_tx, command_rx) = mpsc::channel(config.command_queue);
    let (event_tx, event_rx) = mpsc::channel(config.inbound_queue);
    let mut actor = actor::Actor::new(swarm, &config, command_rx, event_tx);
    actor.await_listeners(listeners, &shutdown).await?;
    let task = tokio::spawn(actor.run(shutdown));

    Ok((Handle::new(command_tx, local_peer_id, config.deliver_timeout), Inbound::new(event_rx), task))
}
