//! `merpati relay add|list|remove`: the relays this node uses, through the daemon.

use anyhow::Result;
use clap::Subcommand;
use merpati_control::Home;
use merpati_control::protocol::{NoParams, RelayAddParams, RelayRemoveParams, RelayView, method};

use crate::commands::connect;
use crate::output::{Output, sanitize};

/// What to do when the list is empty, shown by `relay list` and after removing the last relay.
const HOW_TO_ADD: &str = "No relays; add one with: merpati relay add /ip4/…/tcp/4001/p2p/12D3…";

/// The `relay` subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Use a relay (at most 4)
    ///
    /// The address is the relay's multiaddr ending in /p2p/<PEER_ID>, as its operator publishes
    /// it, for example /ip4/203.0.113.7/tcp/4001/p2p/12D3KooW…; not a /p2p-circuit address. The
    /// daemon first connects to it and checks that a relay answers there (it keeps mailboxes and
    /// relays connections), since the address goes into every invite you hand out; the message
    /// says which check failed (exit code 13).
    Add {
        /// The relay's multiaddr, ending in /p2p/<PEER_ID>
        #[arg(value_name = "MULTIADDR")]
        addr: String,
        /// Add it without checking it now: for a relay that is down or cannot be reached from here
        #[arg(long)]
        offline: bool,
    },
    /// List the relays, with whether each is connected and holds a reservation for you
    ///
    /// "connected": this node is connected to the relay now. "reserved": the relay holds a
    /// reservation for this node, so contacts can reach you through it.
    List,
    /// Stop using a relay
    Remove {
        /// The relay's multiaddr as listed, or its peer id
        #[arg(value_name = "MULTIADDR|PEER_ID")]
        relay: String,
    },
}

/// Runs a `relay` subcommand.
pub(crate) fn run(home: &Home, out: &mut Output, command: Command) -> Result<()> {
    match command {
        Command::Add { addr, offline } => {
            // Paste-friendly like invites: surrounding whitespace is not part of the address; the
            // daemon, which has a multiaddr parser, judges everything else.
            let addr = addr.trim().to_owned();
            let result =
                connect(home)?.call::<method::RelayAdd>(RelayAddParams { addr: addr.clone(), offline })?;
            if !out.is_json() {
                out.line(format_args!("Added relay {}.", sanitize(&addr)))?;
            }
            print_list(out, &result.relays)
        }
        Command::List => {
            let result = connect(home)?.call::<method::RelayList>(NoParams {})?;
            print_list(out, &result.relays)
        }
        Command::Remove { relay } => {
            let relay = relay.trim().to_owned();
            let result =
                connect(home)?.call::<method::RelayRemove>(RelayRemoveParams { relay: relay.clone() })?;
            if !out.is_json() {
                out.line(format_args!("Removed relay {}.", sanitize(&relay)))?;
            }
            print_list(out, &result.relays)
        }
    }
}

/// The relays, one per line: JSON objects with `--json` (nothing for an empty list), else
/// `format_list`.
fn print_list(out: &mut Output, relays: &[RelayView]) -> Result<()> {
    if out.is_json() {
        for relay in relays {
            out.object(relay)?;
        }
        return Ok(());
    }
    for line in format_list(relays) {
        out.line(line)?;
    }
    Ok(())
}

/// Human lines for `relays`: the address, then a `connected` and a `reserved` column (`-` when
/// not), aligned; or how to add one when there are none.
fn format_list(relays: &[RelayView]) -> Vec<String> {
    if relays.is_empty() {
        return vec![HOW_TO_ADD.to_owned()];
    }
    let addrs: Vec<_> = relays.iter().map(|relay| sanitize(&relay.addr)).collect();
    let width = addrs.iter().map(|addr| addr.chars().count()).max().unwrap_or(0);
    relays
        .iter()
        .zip(&addrs)
        .map(|(relay, addr)| {
            let connected = if relay.connected { "connected" } else { "-" };
            let reserved = if relay.reserved { "reserved" } else { "-" };
            format!("{addr:<width$}  {connected:<9}  {reserved}")
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn relay(addr: &str, connected: bool, reserved: bool) -> RelayView {
        RelayView { addr: addr.into(), peer_id: "12D3KooWx".into(), connected, reserved }
    }

    #[test]
    fn list_lines_are_aligned_with_markers() {
        let lines = format_list(&[
            relay("/ip4/203.0.113.7/tcp/4001/p2p/12D3KooWa", true, true),
            relay("/dns4/r.example/tcp/4001/p2p/12D3KooWb", true, false),
            relay("/ip6/::1/udp/4001/quic-v1/p2p/12D3KooWc", false, false),
        ]);
        assert_eq!(
            lines,
            [
                "/ip4/203.0.113.7/tcp/4001/p2p/12D3KooWa  connected  reserved",
                "/dns4/r.example/tcp/4001/p2p/12D3KooWb   connected  -",
                "/ip6/::1/udp/4001/quic-v1/p2p/12D3KooWc  -          -",
            ]
        );
    }

    #[test]
    fn an_empty_list_says_how_to_add_a_relay() {
        assert_eq!(format_list(&[]), [HOW_TO_ADD]);
        assert!(HOW_TO_ADD.contains("merpati relay add /ip4/"));
    }

    #[test]
    fn addresses_are_escaped() {
        let lines = format_list(&[relay("/ip4/1.2.3.4\u{1b}[2J", false, false)]);
        assert_eq!(lines, ["/ip4/1.2.3.4\\u{1b}[2J  -          -"]);
    }
}
