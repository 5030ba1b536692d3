//! Before `relay add` takes an address: is a Merpati relay there?
//!
//! An address goes into every invite handed out afterwards, so a made-up peer id, a dead port or
//! an ordinary user node there would send contacts' mail nowhere. The daemon connects to the
//! address (which proves the peer id, through Noise) and asks what the peer speaks (identify): a
//! relay keeps mailboxes (`/merpati/mailbox/2`) and relays connections (the circuit relay's hop
//! protocol). `relay add --offline` skips the check, for a relay that cannot be reached now.

use std::time::Duration;

use libp2p::Multiaddr;
use merpati_proto::wire::MAILBOX_PROTOCOL;

use crate::engine::check_relay;
use crate::net::{Handle, ProbeError};

/// How long the check waits for the relay.
pub const CHECK_WITHIN: Duration = Duration::from_secs(10);

/// What to add when the check failed but the address is right.
const OFFLINE_HINT: &str = "add it anyway with --offline if it is only down for now";

/// Checks that a relay answers at `addr`. A text that is not a well-formed relay address passes:
/// adding it fails with the engine's own message.
pub async fn check(net: &Handle, addr: &str) -> Result<(), String> {
    let Ok(parsed) = addr.trim().parse::<Multiaddr>() else { return Ok(()) };
    if check_relay(&parsed.to_vec()).is_err() {
        return Ok(());
    }
    let protocols = match net.probe(&parsed, CHECK_WITHIN).await {
        Ok(protocols) => protocols,
        Err(ProbeError::Timeout(within)) => {
            return Err(format!(
                "no relay answered at {parsed} within {} s; check the address and that the relay runs, or {OFFLINE_HINT}",
                within.as_secs()
            ));
        }
        Err(e @ (ProbeError::Unreachable(_) | ProbeError::NoPeerId)) => {
            return Err(format!(
                "cannot reach a relay at {parsed} ({e}); check the address and that the relay runs, or {OFFLINE_HINT}"
            ));
        }
        Err(ProbeError::Stopped) => return Err("the daemon is stopping".to_owned()),
    };
    verdict(&parsed, &protocols)
}

/// Whether `protocols` are a relay's.
fn verdict(addr: &Multiaddr, protocols: &[String]) -> Result<(), String> {
    let speaks = |name: &str| protocols.iter().any(|p| p == name);
    if !speaks(MAILBOX_PROTOCOL) {
        return Err(format!(
            "the peer at {addr} keeps no mailboxes (it does not speak {MAILBOX_PROTOCOL}): it is not a Merpati \
             relay, perhaps a person's node; ask the relay's operator for its address"
        ));
    }
    let hop = libp2p::relay::HOP_PROTOCOL_NAME.to_string();
    if !speaks(&hop) {
        return Err(format!(
            "the relay at {addr} keeps mailboxes but relays no connections now (it does not speak {hop}: its \
             operator has not set public_addresses); {OFFLINE_HINT}"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_relay_speaks_both_protocols_and_the_message_says_which_is_missing() {
        let addr: Multiaddr = "/ip4/203.0.113.7/tcp/4001".parse().unwrap();
        let hop = libp2p::relay::HOP_PROTOCOL_NAME.to_string();
        let relay = vec![MAILBOX_PROTOCOL.to_owned(), hop.clone(), "/ipfs/id/1.0.0".to_owned()];
        assert_eq!(verdict(&addr, &relay), Ok(()));
        let node = vec!["/merpati/deliver/1".to_owned(), hop];
        assert!(verdict(&addr, &node).unwrap_err().contains("keeps no mailboxes"));
        let no_hop = vec![MAILBOX_PROTOCOL.to_owned()];
        assert!(verdict(&addr, &no_hop).unwrap_err().contains("relays no connections"));
    }
}
