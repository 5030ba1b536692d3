//! Who a request comes from, as far as the relay's limits are concerned: the network a peer
//! connects from and the peer.
//!
//! Peer ids are free, so every limit that matters is also kept per network. An IPv4 address is
//! one network; an IPv6 address counts by its /64, which one subscriber or one server usually
//! holds whole (an attacker with one /64 has 2^64 addresses). An IPv4 address written as IPv6
//! (`::ffff:a.b.c.d`) counts as the IPv4 address.
//!
//! Home lines and tunnel brokers hand out whole /56s and /48s, so IPv6 networks are also counted
//! by their /48 ([`Network::block`]), with a larger limit: someone holding a /48 has 65 536 /64s
//! but one block. IPv4 addresses are scarce enough on their own and have no block.

use std::fmt;
use std::net::IpAddr;

use libp2p::PeerId;

/// The part of an IP address that limits count by: an IPv4 address or an IPv6 /64; or, as a
/// [`Network::block`], an IPv6 /48.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Network {
    /// 4, 6, or [`BLOCK`] for an IPv6 /48.
    family: u8,
    /// The IPv4 address in the first 4 bytes (the rest zero), or the IPv6 /64 prefix.
    prefix: [u8; 8],
}

/// The family tag of an IPv6 /48 block (never stored: blocks are derived from networks).
const BLOCK: u8 = 48;

impl Network {
    /// The bytes of [`Network::encode`].
    pub const ENCODED_LEN: usize = 9;

    /// The IPv6 /48 this network is part of; `None` for IPv4.
    pub fn block(&self) -> Option<Network> {
        (self.family == 6).then(|| {
            let mut prefix = [0u8; 8];
            prefix[..6].copy_from_slice(&self.prefix[..6]);
            Network { family: BLOCK, prefix }
        })
    }

    /// The network `ip` counts under.
    pub fn of(ip: IpAddr) -> Self {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
            v4 => v4,
        };
        let mut prefix = [0u8; 8];
        match ip {
            IpAddr::V4(v4) => {
                prefix[..4].copy_from_slice(&v4.octets());
                Self { family: 4, prefix }
            }
            IpAddr::V6(v6) => {
                prefix.copy_from_slice(&v6.octets()[..8]);
                Self { family: 6, prefix }
            }
        }
    }

    /// A fixed-size encoding, for the relay's database.
    pub fn encode(&self) -> [u8; Self::ENCODED_LEN] {
        let mut out = [0u8; Self::ENCODED_LEN];
        out[0] = self.family;
        out[1..].copy_from_slice(&self.prefix);
        out
    }

    /// Reads [`Network::encode`]'s output; `None` for anything else.
    pub fn decode(bytes: &[u8; Self::ENCODED_LEN]) -> Option<Self> {
        let family = bytes[0];
        if family != 4 && family != 6 {
            return None;
        }
        let mut prefix = [0u8; 8];
        prefix.copy_from_slice(&bytes[1..]);
        Some(Self { family, prefix })
    }
}

impl fmt::Debug for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = &self.prefix;
        let group = |i: usize| u16::from_be_bytes([p[i], p[i + 1]]);
        match self.family {
            4 => write!(f, "{}.{}.{}.{}", p[0], p[1], p[2], p[3]),
            BLOCK => write!(f, "{:x}:{:x}:{:x}::/48", group(0), group(2), group(4)),
            _ => write!(f, "{:x}:{:x}:{:x}:{:x}::/64", group(0), group(2), group(4), group(6)),
        }
    }
}

/// A short, stable stand-in for a peer id in the relay's database: the first 8 bytes of a hash of
/// it. Two peers sharing one is as unlikely as guessing a 64-bit value.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct PeerKey(pub [u8; 8]);

impl PeerKey {
    /// The key of `peer`.
    pub fn of(peer: &PeerId) -> Self {
        Self(merpati_proto::kdf::hash_prefix(b"merpati-relay/peer-key", &[&peer.to_bytes()]))
    }
}

/// Who deposited an envelope: the network it came from (unknown when the connection's address
/// names no IP) and the peer.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Depositor {
    /// The depositor's network, when known.
    pub network: Option<Network>,
    /// The depositor's peer.
    pub peer: PeerKey,
}

impl Depositor {
    /// The bytes of [`Depositor::encode`].
    pub const ENCODED_LEN: usize = Network::ENCODED_LEN + 8;

    /// The depositor `peer`, connected from `ip`.
    pub fn new(peer: &PeerId, ip: Option<IpAddr>) -> Self {
        Self { network: ip.map(Network::of), peer: PeerKey::of(peer) }
    }

    /// A fixed-size encoding: the network (all zero when unknown), then the peer key.
    pub fn encode(&self) -> [u8; Self::ENCODED_LEN] {
        let mut out = [0u8; Self::ENCODED_LEN];
        if let Some(network) = &self.network {
            out[..Network::ENCODED_LEN].copy_from_slice(&network.encode());
        }
        out[Network::ENCODED_LEN..].copy_from_slice(&self.peer.0);
        out
    }

    /// Reads [`Depositor::encode`]'s output; `None` when the network part is neither empty nor
    /// a network.
    pub fn decode(bytes: &[u8; Self::ENCODED_LEN]) -> Option<Self> {
        let mut network = [0u8; Network::ENCODED_LEN];
        network.copy_from_slice(&bytes[..Network::ENCODED_LEN]);
        let network =
            if network == [0u8; Network::ENCODED_LEN] { None } else { Some(Network::decode(&network)?) };
        let mut peer = [0u8; 8];
        peer.copy_from_slice(&bytes[Network::ENCODED_LEN..]);
        Some(Self { network, peer: PeerKey(peer) })
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;

    #[test]
    fn ipv6_counts_by_its_64_and_mapped_ipv4_as_ipv4() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff:1:2:3".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(Network::of(a), Network::of(b));
        assert_ne!(Network::of(a), Network::of(c));
        let v4 = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7));
        let mapped = IpAddr::V6(Ipv4Addr::new(192, 0, 2, 7).to_ipv6_mapped());
        assert_eq!(Network::of(v4), Network::of(mapped));
        assert_ne!(Network::of(v4), Network::of(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 8))));
        assert_eq!(format!("{:?}", Network::of(a)), "2001:db8:1:2::/64");
        assert_eq!(format!("{:?}", Network::of(v4)), "192.0.2.7");
        assert_ne!(
            Network::of(IpAddr::V6(Ipv6Addr::UNSPECIFIED)),
            Network::of(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
        );
        // /64s of one /48 share a block; another /48 and IPv4 do not.
        let block = Network::of(a).block().unwrap();
        assert_eq!(Network::of(c).block(), Some(block));
        assert_ne!(Network::of("2001:db8:2::1".parse().unwrap()).block(), Some(block));
        assert_ne!(block, Network::of(a));
        assert_eq!(format!("{block:?}"), "2001:db8:1::/48");
        assert_eq!(Network::of(v4).block(), None);
    }

    #[test]
    fn depositors_round_trip_and_junk_is_refused() {
        let peer = PeerId::random();
        for ip in [None, Some("198.51.100.4".parse().unwrap()), Some("2001:db8::9".parse().unwrap())] {
            let depositor = Depositor::new(&peer, ip);
            assert_eq!(Depositor::decode(&depositor.encode()), Some(depositor));
        }
        let mut junk = Depositor::new(&peer, None).encode();
        junk[0] = 5;
        assert_eq!(Depositor::decode(&junk), None);
        assert_ne!(PeerKey::of(&peer), PeerKey::of(&PeerId::random()));
    }
}
