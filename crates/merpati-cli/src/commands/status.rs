//! `merpati status`: your name and fingerprint, the daemon's peer id, addresses, connected
//! contacts and outbox.

use anyhow::Result;
use merpati_control::Home;
use merpati_control::protocol::{NoParams, method};

use crate::commands::connect;
use crate::output::{Output, sanitize};

/// Prints the daemon's status.
pub(crate) fn run(home: &Home, out: &mut Output) -> Result<()> {
    let status = connect(home)?.call::<method::Status>(NoParams {})?;
    if out.is_json() {
        return out.object(&status);
    }
    if let Some(name) = &status.name {
        out.line(format_args!("name:         {}", sanitize(name)))?;
    }
    out.line(format_args!("fingerprint:  {}", sanitize(&status.fingerprint)))?;
    out.line(format_args!("peer id:      {}", sanitize(&status.peer_id)))?;
    if status.listen.is_empty() {
        out.line("listening on: nothing (not reachable directly)")?;
    }
    for (i, addr) in status.listen.iter().enumerate() {
        let label = if i == 0 { "listening on:" } else { "" };
        out.line(format_args!("{label:<14}{}", sanitize(addr)))?;
    }
    let connected = if status.connected.is_empty() {
        "no contacts".to_owned()
    } else {
        status.connected.iter().map(|name| sanitize(name).into_owned()).collect::<Vec<_>>().join(", ")
    };
    out.line(format_args!("connected:    {connected}"))?;
    let plural = if status.outbox == 1 { "" } else { "s" };
    out.line(format_args!("outbox:       {} message{plural} waiting to be sent", status.outbox))
}
