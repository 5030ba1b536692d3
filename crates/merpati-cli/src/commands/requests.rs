//! `merpati requests [accept|reject|block]`: first contacts from people not in your contacts.

use anyhow::Result;
use clap::{Args as ClapArgs, Subcommand};
use merpati_control::Home;
use merpati_control::protocol::{NoParams, RequestAcceptParams, RequestIdParams, RequestView, method};

use crate::cli::parse_name;
use crate::commands::connect;
use crate::output::{Output, local_time, sanitize};

/// `merpati requests`: without a subcommand, lists the requests.
#[derive(Debug, ClapArgs)]
pub(crate) struct Args {
    #[command(subcommand)]
    command: Option<Command>,
}

/// The `requests` subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Make the sender a contact under a name you choose; what they wrote is shown then
    Accept {
        /// The request's id, as `merpati requests` shows it
        id: String,
        /// The name you will call them by (1-64 characters); their suggested name is only
        /// their word
        #[arg(long, value_name = "NAME", value_parser = parse_name)]
        name: String,
    },
    /// Delete the request and what it holds; later messages in that conversation are dropped
    Reject {
        /// The request's id
        id: String,
    },
    /// Delete the request and drop whatever the sender sends from now on
    Block {
        /// The request's id
        id: String,
    },
}

/// Runs `requests`.
pub(crate) fn run(home: &Home, out: &mut Output, args: Args) -> Result<()> {
    match args.command {
        None => list(home, out),
        Some(Command::Accept { id, name }) => {
            let accepted = connect(home)?.call::<method::RequestsAccept>(RequestAcceptParams { id, name })?;
            if out.is_json() {
                return out.object(&accepted);
            }
            let name = sanitize(&accepted.name);
            out.line(format_args!("Added {name}; {} message(s) from the request opened.", accepted.opened))?;
            out.line(format_args!("fingerprint:   {}", sanitize(&accepted.fingerprint)))?;
            out.line(format_args!("safety number: {}", sanitize(&accepted.safety_number)))?;
            out.line(format_args!(
                "Compare the safety number with {name} in person or on a call before you trust who \
                 they say they are."
            ))
        }
        Some(Command::Reject { id }) => {
            connect(home)?.call::<method::RequestsReject>(RequestIdParams { id: id.clone() })?;
            if out.is_json() {
                return out.object(&serde_json::json!({ "id": id, "rejected": true }));
            }
            out.line(format_args!("Rejected request {}.", sanitize(&id)))
        }
        Some(Command::Block { id }) => {
            let blocked = connect(home)?.call::<method::RequestsBlock>(RequestIdParams { id })?;
            if out.is_json() {
                return out.object(&blocked);
            }
            out.line(format_args!(
                "Blocked {} (id {}): whatever they send is dropped unread.",
                sanitize(&blocked.label),
                sanitize(&blocked.id)
            ))
        }
    }
}

fn list(home: &Home, out: &mut Output) -> Result<()> {
    let listed = connect(home)?.call::<method::Requests>(NoParams {})?;
    if out.is_json() {
        for request in &listed.requests {
            out.object(request)?;
        }
        return Ok(());
    }
    if listed.requests.is_empty() {
        out.line("No contact requests.")?;
    }
    for request in &listed.requests {
        show(out, request)?;
    }
    if listed.dropped > 0 {
        out.line(format_args!(
            "{} older request(s) were dropped because too many were waiting.",
            listed.dropped
        ))?;
    }
    if !listed.requests.is_empty() {
        out.line("Accept with: merpati requests accept ID --name NAME (or reject ID, block ID)")?;
    }
    Ok(())
}

fn show(out: &mut Output, request: &RequestView) -> Result<()> {
    let says = match &request.suggested_name {
        Some(name) => format!("says they are \"{}\" (unverified)", sanitize(name)),
        None => "gave no name".to_owned(),
    };
    out.line(format_args!("{}  {says}, since {}", sanitize(&request.id), local_time(request.first_at)))?;
    out.line(format_args!("    fingerprint: {}", sanitize(&request.fingerprint)))?;
    if let Some(preview) = &request.preview {
        out.line(format_args!("    first words: {}", sanitize(preview)))?;
    }
    let dropped =
        if request.dropped > 0 { format!(", {} more not kept", request.dropped) } else { String::new() };
    out.line(format_args!("    holds {} envelope(s){dropped}", request.envelopes))
}
