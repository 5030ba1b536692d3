//! Listening ports: stable across restarts, and never shared with another program.
//!
//! Contacts store the addresses from an invite. If a restarted daemon took a new random port,
//! every contact would lose it until it wrote to them first, so the daemon remembers its ports in
//! `<home>/ports` and asks for the same ones again, falling back to fresh ones if they are taken.
//! Only the default listen addresses do so: addresses given with `--listen` or in the config file
//! are used as written.
//!
//! libp2p opens its TCP listeners with `SO_REUSEPORT` (for hole punching), so a second daemon
//! could bind a port the first one listens on, start fine and take some of its connections.
//! [`check_free`] refuses that first.

use std::net::{IpAddr, TcpListener};

use std::path::Path;

use libp2p::Multiaddr;
use libp2p::multiaddr::Protocol;

/// Ports remembered from the last run.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Ports {
    /// The TCP port.
    pub tcp: Option<u16>,
    /// The UDP port used for QUIC.
    pub quic: Option<u16>,
}

impl Ports {
    /// Reads the ports file; a missing or unreadable file means none remembered.
    pub fn load(path: &Path) -> Ports {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let mut ports = Ports::default();
        for line in text.lines() {
            match line.split_once('=') {
                Some(("tcp", port)) => ports.tcp = port.trim().parse().ok(),
                Some(("quic", port)) => ports.quic = port.trim().parse().ok(),
                _ => {}
            }
        }
        ports
    }

    /// The ports the node listens on now.
    pub fn of(addrs: &[Multiaddr]) -> Ports {
        let mut ports = Ports::default();
        for addr in addrs {
            let parts: Vec<_> = addr.iter().collect();
            for pair in parts.windows(2) {
                match (&pair[0], &pair[1]) {
                    (Protocol::Tcp(port), _) if *port != 0 => ports.tcp = ports.tcp.or(Some(*port)),
                    (Protocol::Udp(port), Protocol::QuicV1) if *port != 0 => {
                        ports.quic = ports.quic.or(Some(*port))
                    }
                    _ => {}
                }
            }
            if let Some(Protocol::Tcp(port)) = parts.last()
                && *port != 0
            {
                ports.tcp = ports.tcp.or(Some(*port));
            }
        }
        ports
    }

    /// Writes the ports file (best effort: losing it only costs a new port next time).
    pub fn save(&self, path: &Path) {
        let mut text = String::new();
        if let Some(port) = self.tcp {
            text.push_str(&format!("tcp={port}\n"));
        }
        if let Some(port) = self.quic {
            text.push_str(&format!("quic={port}\n"));
        }
        if let Err(e) = std::fs::write(path, text) {
            tracing::warn!("cannot remember the listening ports in {}: {e}", path.display());
        }
    }

    /// `addr` with port 0 replaced by the remembered port of its transport.
    pub fn prefer(&self, addr: &Multiaddr) -> Multiaddr {
        let parts: Vec<_> = addr.iter().collect();
        let mut out = Multiaddr::empty();
        for (i, part) in parts.iter().enumerate() {
            let next = parts.get(i + 1);
            out.push(match part {
                Protocol::Tcp(0) => Protocol::Tcp(self.tcp.unwrap_or(0)),
                Protocol::Udp(0) if matches!(next, Some(Protocol::QuicV1)) => {
                    Protocol::Udp(self.quic.unwrap_or(0))
                }
                other => other.clone(),
            });
        }
        out
    }
}

/// The addresses to listen on: `explicit` ones as given, else `defaults` with port 0 replaced by
/// the remembered ports.
pub fn listen_plan(explicit: &[Multiaddr], defaults: &[Multiaddr], remembered: &Ports) -> Vec<Multiaddr> {
    if explicit.is_empty() {
        defaults.iter().map(|addr| remembered.prefer(addr)).collect()
    } else {
        explicit.to_vec()
    }
}

/// Why a listen address cannot be used.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot listen on {addr}: the port is in use by another program (another merpatid?); stop it, \
     or choose another port with --listen"
)]
pub struct PortInUse {
    /// The address.
    pub addr: Multiaddr,
}

/// Refuses a TCP listen address whose port another socket already listens on, by binding it
/// once without `SO_REUSEPORT` (and letting go at once). Port 0 and non-TCP addresses pass.
pub fn check_free(addrs: &[Multiaddr]) -> Result<(), PortInUse> {
    for addr in addrs {
        let mut ip: Option<IpAddr> = None;
        let mut port = None;
        for part in addr.iter() {
            match part {
                Protocol::Ip4(v4) => ip = Some(v4.into()),
                Protocol::Ip6(v6) => ip = Some(v6.into()),
                Protocol::Tcp(p) => port = Some(p),
                _ => {}
            }
        }
        if let (Some(ip), Some(port)) = (ip, port)
            && port != 0
            && let Err(e) = TcpListener::bind((ip, port))
            && e.kind() == std::io::ErrorKind::AddrInUse
        {
            return Err(PortInUse { addr: addr.clone() });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_and_prefers_ports() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ports");
        assert_eq!(Ports::load(&path), Ports::default());
        let live: Vec<Multiaddr> = vec![
            "/ip4/127.0.0.1/tcp/4001/p2p/12D3KooWPMo3r4GLxT3FebT7qS6pJUypD4nUvSrdAhQi9P4NiSA8"
                .parse()
                .unwrap(),
            "/ip4/127.0.0.1/udp/4002/quic-v1".parse().unwrap(),
        ];
        let ports = Ports::of(&live);
        assert_eq!(ports, Ports { tcp: Some(4001), quic: Some(4002) });
        ports.save(&path);
        let loaded = Ports::load(&path);
        assert_eq!(loaded, ports);
        let wanted: Multiaddr = "/ip4/0.0.0.0/tcp/0".parse().unwrap();
        assert_eq!(loaded.prefer(&wanted), "/ip4/0.0.0.0/tcp/4001".parse::<Multiaddr>().unwrap());
        let quic: Multiaddr = "/ip4/0.0.0.0/udp/0/quic-v1".parse().unwrap();
        assert_eq!(loaded.prefer(&quic), "/ip4/0.0.0.0/udp/4002/quic-v1".parse::<Multiaddr>().unwrap());
        let fixed: Multiaddr = "/ip4/0.0.0.0/tcp/9000".parse().unwrap();
        assert_eq!(loaded.prefer(&fixed), fixed);
    }

    #[test]
    fn explicit_addresses_win_over_remembered_ports() {
        let remembered = Ports { tcp: Some(4001), quic: Some(4002) };
        let defaults: Vec<Multiaddr> = vec!["/ip4/0.0.0.0/tcp/0".parse().unwrap()];
        let explicit: Vec<Multiaddr> = vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()];
        assert_eq!(listen_plan(&explicit, &defaults, &remembered), explicit);
        assert_eq!(
            listen_plan(&[], &defaults, &remembered),
            vec!["/ip4/0.0.0.0/tcp/4001".parse::<Multiaddr>().unwrap()]
        );
    }

    #[test]
    fn a_port_someone_listens_on_is_refused_even_with_reuse_port() {
        // Bound as libp2p binds: SO_REUSEADDR and SO_REUSEPORT.
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        socket.set_reuse_address(true).unwrap();
        socket.set_reuse_port(true).unwrap();
        socket.bind(&std::net::SocketAddr::from(([127, 0, 0, 1], 0)).into()).unwrap();
        socket.listen(8).unwrap();
        let port = socket.local_addr().unwrap().as_socket().unwrap().port();
        let taken: Multiaddr = format!("/ip4/127.0.0.1/tcp/{port}").parse().unwrap();
        let error = check_free(std::slice::from_ref(&taken)).unwrap_err();
        assert!(error.to_string().contains(&taken.to_string()), "{error}");
        drop(socket);
        assert!(check_free(&[taken]).is_ok());
        assert!(check_free(&["/ip4/127.0.0.1/tcp/0".parse().unwrap()]).is_ok());
        assert!(check_free(&["/ip4/127.0.0.1/udp/0/quic-v1".parse().unwrap()]).is_ok());
    }
}
