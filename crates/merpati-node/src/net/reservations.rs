//! The user node's relay reservations: which relays we listen through, and when to try again
//! after losing one.
//!
//! libp2p does not re-establish a relay-client listener after the connection to the relay drops
//! (rust-libp2p #6165), so the network task keeps this small state machine: a slot per relay
//! with its circuit listener, if any, and the time of the next attempt. Attempts back off from
//! one second, doubling up to a maximum, with jitter so that many nodes losing one relay at once
//! do not all come back in the same second.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use libp2p::core::transport::ListenerId;
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};

/// The first wait after a failed or lost reservation.
const RETRY_BASE: Duration = Duration::from_secs(1);

/// What the node knows of one of its relays.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RelayStatus {
    /// The relay's peer id.
    pub peer: PeerId,
    /// Its direct address, ending in `/p2p/<peer>`.
    pub addr: Multiaddr,
    /// Whether the relay accepted our reservation: contacts can reach us through it.
    pub reserved: bool,
}

#[derive(Debug)]
struct Slot {
    addr: Multiaddr,
    listener: Option<ListenerId>,
    reserved: bool,
    failures: u32,
    retry_at: Instant,
}

/// The relays a node listens through; see the module documentation.
#[derive(Debug)]
pub(crate) struct Reservations {
    slots: BTreeMap<PeerId, Slot>,
    retry_max: Duration,
}

impl Reservations {
    pub(crate) fn new(retry_max: Duration) -> Self {
        Self { slots: BTreeMap::new(), retry_max }
    }

    /// Makes `relays` (direct addresses ending in `/p2p/<relay>`) the set to keep; addresses
    /// without a peer id are skipped. Returns the listeners of relays no longer wanted, to close.
    pub(crate) fn set(&mut self, relays: Vec<Multiaddr>, now: Instant) -> Vec<ListenerId> {
        let wanted: BTreeMap<PeerId, Multiaddr> =
            relays.into_iter().filter_map(|addr| Some((peer_of(&addr)?, addr))).collect();
        let mut closed = Vec::new();
        self.slots.retain(|peer, slot| {
            let keep = wanted.get(peer) == Some(&slot.addr);
            if !keep {
                closed.extend(slot.listener);
            }
            keep
        });
        for (peer, addr) in wanted {
            self.slots.entry(peer).or_insert(Slot {
                addr,
                listener: None,
                reserved: false,
                failures: 0,
                retry_at: now,
            });
        }
        closed
    }

    /// The relays to listen through now: each slot without a listener whose wait is over, with
    /// the circuit address to listen on. The caller reports back with [`Self::listening`] or
    /// [`Self::failed`].
    pub(crate) fn due(&self, now: Instant) -> Vec<(PeerId, Multiaddr)> {
        self.slots
            .iter()
            .filter(|(_, slot)| slot.listener.is_none() && slot.retry_at <= now)
            .map(|(peer, slot)| (*peer, slot.addr.clone().with(Protocol::P2pCircuit)))
            .collect()
    }

    /// A listener was opened through `relay`.
    pub(crate) fn listening(&mut self, relay: PeerId, listener: ListenerId) {
        if let Some(slot) = self.slots.get_mut(&relay) {
            slot.listener = Some(listener);
        }
    }

    /// Listening through `relay` could not even start; try again later.
    pub(crate) fn failed(&mut self, relay: PeerId, now: Instant, jitter: f64) {
        let retry_max = self.retry_max;
        if let Some(slot) = self.slots.get_mut(&relay) {
            slot.listener = None;
            schedule(slot, now, retry_max, jitter);
        }
    }

    /// The relay accepted our reservation.
    pub(crate) fn reserved(&mut self, relay: PeerId) {
        if let Some(slot) = self.slots.get_mut(&relay) {
            slot.reserved = true;
            slot.failures = 0;
        }
    }

    /// A listener closed (the relay connection dropped, or the reservation was refused or
    /// expired); returns the relay it served, whose reservation is sought again later.
    pub(crate) fn listener_closed(
        &mut self,
        listener: ListenerId,
        now: Instant,
        jitter: f64,
    ) -> Option<PeerId> {
        let retry_max = self.retry_max;
        let (peer, slot) = self.slots.iter_mut().find(|(_, slot)| slot.listener == Some(listener))?;
        slot.listener = None;
        slot.reserved = false;
        schedule(slot, now, retry_max, jitter);
        Some(*peer)
    }

    /// The earliest time a slot without a listener may be tried again, if any waits.
    pub(crate) fn next_retry(&self) -> Option<Instant> {
        self.slots.values().filter(|slot| slot.listener.is_none()).map(|slot| slot.retry_at).min()
    }

    /// Every relay's state.
    pub(crate) fn status(&self) -> Vec<RelayStatus> {
        self.slots
            .iter()
            .map(|(peer, slot)| RelayStatus { peer: *peer, addr: slot.addr.clone(), reserved: slot.reserved })
            .collect()
    }
}

/// Backs off: 1 s, 2 s, 4 s … up to `retry_max`, each scaled by `jitter` (0.5 to 1.5).
fn schedule(slot: &mut Slot, now: Instant, retry_max: Duration, jitter: f64) {
    let exponent = slot.failures.min(16);
    slot.failures = slot.failures.saturating_add(1);
    let wait = RETRY_BASE.saturating_mul(1 << exponent).min(retry_max);
    slot.retry_at = now + wait.mul_f64(jitter.clamp(0.5, 1.5));
}

/// The peer id an address ends with.
pub fn peer_of(addr: &Multiaddr) -> Option<PeerId> {
    match addr.iter().last()? {
        Protocol::P2p(peer) => Some(peer),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn relay_addr(port: u16) -> (PeerId, Multiaddr) {
        let peer = PeerId::random();
        let addr: Multiaddr = format!("/ip4/127.0.0.1/tcp/{port}/p2p/{peer}").parse().unwrap();
        (peer, addr)
    }

    #[test]
    fn lost_reservations_come_back_with_growing_waits() {
        let now = Instant::now();
        let mut reservations = Reservations::new(Duration::from_secs(300));
        let (peer, addr) = relay_addr(4001);
        assert!(reservations.set(vec![addr.clone()], now).is_empty());
        let due = reservations.due(now);
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].1, addr.clone().with(Protocol::P2pCircuit));
        let listener = ListenerId::next();
        reservations.listening(peer, listener);
        assert!(reservations.due(now).is_empty());
        reservations.reserved(peer);
        assert!(reservations.status()[0].reserved);

        // Lost: the first retry waits about a second, the next ones longer, never past the max.
        assert_eq!(reservations.listener_closed(listener, now, 1.0), Some(peer));
        assert!(!reservations.status()[0].reserved);
        assert!(reservations.due(now).is_empty());
        assert_eq!(reservations.next_retry(), Some(now + Duration::from_secs(1)));
        let mut waits = Vec::new();
        for _ in 0..12 {
            reservations.failed(peer, now, 1.0);
            waits.push(reservations.next_retry().unwrap() - now);
        }
        assert!(waits.windows(2).all(|w| w[0] <= w[1]), "{waits:?}");
        assert_eq!(*waits.last().unwrap(), Duration::from_secs(300));
        assert_eq!(reservations.due(now + Duration::from_secs(300)).len(), 1);

        // A reservation that works again resets the backoff.
        let listener = ListenerId::next();
        reservations.listening(peer, listener);
        reservations.reserved(peer);
        reservations.listener_closed(listener, now, 1.0);
        assert_eq!(reservations.next_retry(), Some(now + Duration::from_secs(1)));
    }

    #[test]
    fn changing_the_set_closes_only_removed_relays() {
        let now = Instant::now();
        let mut reservations = Reservations::new(Duration::from_secs(60));
        let (a, addr_a) = relay_addr(1);
        let (b, addr_b) = relay_addr(2);
        let no_peer: Multiaddr = "/ip4/127.0.0.1/tcp/3".parse().unwrap();
        reservations.set(vec![addr_a.clone(), addr_b.clone(), no_peer], now);
        assert_eq!(reservations.status().len(), 2);
        let (la, lb) = (ListenerId::next(), ListenerId::next());
        reservations.listening(a, la);
        reservations.listening(b, lb);
        assert_eq!(reservations.set(vec![addr_b], now), vec![la]);
        assert_eq!(reservations.status().iter().map(|r| r.peer).collect::<Vec<_>>(), vec![b]);
        assert_eq!(reservations.listener_closed(la, now, 1.0), None);
    }
}
