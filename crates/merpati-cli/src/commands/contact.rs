//! `merpati contact add|list|show|rename|clear|remove|block|unblock|blocked`: contacts, through
//! the daemon.

use anyhow::Result;
use clap::Subcommand;
use merpati_control::Home;
use merpati_control::protocol::{
    BlockedView, ContactAddParams, ContactRenameParams, ContactShowParams, NoParams, RequestIdParams, method,
};
use merpati_proto::Timestamp;
use merpati_proto::invite::MAX_INVITE_TEXT;

use crate::cli::parse_name;
use crate::commands::{connect, read_stdin};
use crate::output::{Output, local_time, sanitize};

/// The `contact` subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Add someone from the invite they gave you
    Add {
        /// The invite (one line starting with MERPATI1:), or - to read it from standard input
        invite: String,
        /// The name you will call this contact by (1-64 characters)
        #[arg(long, value_name = "NAME", value_parser = parse_name)]
        name: String,
    },
    /// List your contacts
    List,
    /// Show one contact, with the safety number to compare
    Show {
        /// The contact's name
        name: String,
    },
    /// Give a contact another name; the conversation and queued messages follow
    Rename {
        /// The contact's current name
        name: String,
        /// The new name (1-64 characters)
        #[arg(value_parser = parse_name)]
        new_name: String,
    },
    /// Delete every message of a conversation from this device; their texts cannot be recovered
    ///
    /// The contact, the session and queued messages stay; the contact keeps their copy.
    Clear {
        /// The contact's name
        name: String,
    },
    /// Delete a contact with the conversation, queued messages and session keys
    ///
    /// What they send in the old conversation is refused (their node shows it failed); if they
    /// start over from your invite, that arrives as a contact request. To drop whatever they
    /// send, unanswered, use `contact block` instead.
    Remove {
        /// The contact's name
        name: String,
    },
    /// Delete a contact as `remove` does, and drop whatever they send from now on
    ///
    /// Their messages are dropped unread and get no receipts; they are not told.
    Block {
        /// The contact's name
        name: String,
    },
    /// Stop dropping what someone you blocked sends
    Unblock {
        /// Their id, as `merpati contact blocked` shows it
        id: String,
    },
    /// List everyone you blocked
    Blocked,
}

/// Runs a `contact` subcommand.
pub(crate) fn run(home: &Home, out: &mut Output, command: Command) -> Result<()> {
    match command {
        Command::Add { invite, name } => add(home, out, invite, name),
        Command::List => list(home, out),
        Command::Show { name } => show(home, out, name),
        Command::Rename { name, new_name } => {
            let renamed = connect(home)?
                .call::<method::ContactRename>(ContactRenameParams { name: name.clone(), new_name })?;
            if out.is_json() {
                return out.object(&renamed);
            }
            out.line(format_args!("Renamed {} to {}.", sanitize(&name), sanitize(&renamed.name)))
        }
        Command::Clear { name } => {
            let cleared = connect(home)?.call::<method::ContactClear>(ContactShowParams { name })?;
            if out.is_json() {
                return out.object(&cleared);
            }
            out.line(format_args!(
                "Deleted the conversation with {} from this device; they keep their copy.",
                sanitize(&cleared.name)
            ))
        }
        Command::Remove { name } => {
            let removed = connect(home)?.call::<method::ContactRemove>(ContactShowParams { name })?;
            if out.is_json() {
                return out.object(&removed);
            }
            out.line(format_args!(
                "Removed {} with the conversation, queued messages and session keys.",
                sanitize(&removed.name)
            ))
        }
        Command::Block { name } => {
            let blocked = connect(home)?.call::<method::ContactBlock>(ContactShowParams { name })?;
            if out.is_json() {
                return out.object(&blocked);
            }
            out.line(format_args!(
                "Blocked {} (id {}): removed, and whatever they send is dropped unread.",
                sanitize(&blocked.label),
                sanitize(&blocked.id)
            ))
        }
        Command::Unblock { id } => {
            let unblocked = connect(home)?.call::<method::ContactUnblock>(RequestIdParams { id })?;
            if out.is_json() {
                return out.object(&unblocked);
            }
            out.line(format_args!(
                "Unblocked {} (id {}): a conversation they start anew arrives as a contact request.",
                sanitize(&unblocked.label),
                sanitize(&unblocked.id)
            ))
        }
        Command::Blocked => blocked(home, out),
    }
}

fn blocked(home: &Home, out: &mut Output) -> Result<()> {
    let listed = connect(home)?.call::<method::ContactBlocked>(NoParams {})?;
    if out.is_json() {
        for entry in &listed.blocked {
            out.object(entry)?;
        }
        return Ok(());
    }
    if listed.blocked.is_empty() {
        return out.line("Nobody is blocked.");
    }
    for BlockedView { id, label, since, .. } in &listed.blocked {
        out.line(format_args!("{}  {}  since {}", sanitize(id), sanitize(label), local_time(*since)))?;
    }
    Ok(())
}

fn add(home: &Home, out: &mut Output, invite: String, name: String) -> Result<()> {
    // Paste-friendly: surrounding whitespace (a trailing newline, an indented copy) is not part
    // of the invite; the daemon judges everything else.
    let invite = if invite == "-" { read_stdin(MAX_INVITE_TEXT, "invite")? } else { invite };
    let invite = invite.trim().to_owned();
    let added = connect(home)?.call::<method::ContactAdd>(ContactAddParams { invite, name })?;
    if out.is_json() {
        return out.object(&added);
    }
    let name = sanitize(&added.name);
    out.line(format_args!("Added {name}."))?;
    out.line(format_args!("fingerprint:   {}", sanitize(&added.fingerprint)))?;
    out.line(format_args!("safety number: {}", sanitize(&added.safety_number)))?;
    out.line(format_args!(
        "Compare the safety number with {name} in person or on a call: if both of you see the same \
         digits, nobody is in the middle."
    ))
}

fn list(home: &Home, out: &mut Output) -> Result<()> {
    let listed = connect(home)?.call::<method::ContactList>(NoParams {})?;
    if out.is_json() {
        for contact in &listed.contacts {
            out.object(contact)?;
        }
        return Ok(());
    }
    if listed.contacts.is_empty() {
        return out.line("No contacts yet; add one with: merpati contact add <INVITE> --name NAME");
    }
    let width = listed.contacts.iter().map(|c| sanitize(&c.name).chars().count()).max().unwrap_or(0);
    for contact in &listed.contacts {
        let state = if contact.connected { "connected" } else { "-" };
        let name = sanitize(&contact.name);
        let heard = match contact.last_heard {
            Some(at) => format!("last heard {}", local_time(Timestamp(at))),
            None => "never heard from".to_owned(),
        };
        let unread = match contact.unread {
            0 => String::new(),
            n => format!("  {n} unread"),
        };
        let restored = match contact.restored_at {
            Some(at) => format!("  restored from a backup {}", local_time(Timestamp(at))),
            None => String::new(),
        };
        out.line(format_args!(
            "{name:<width$}  {}  {state:<9}  {heard}{unread}{restored}",
            sanitize(&contact.fingerprint)
        ))?;
    }
    Ok(())
}

fn show(home: &Home, out: &mut Output, name: String) -> Result<()> {
    let contact = connect(home)?.call::<method::ContactShow>(ContactShowParams { name })?;
    if out.is_json() {
        return out.object(&contact);
    }
    let name = sanitize(&contact.name);
    out.line(format_args!("name:          {name}"))?;
    out.line(format_args!("fingerprint:   {}", sanitize(&contact.fingerprint)))?;
    out.line(format_args!("safety number: {}", sanitize(&contact.safety_number)))?;
    out.line(format_args!("peer id:       {}", sanitize(&contact.peer_id)))?;
    if contact.addrs.is_empty() {
        out.line("addresses:     none known")?;
    }
    for (i, addr) in contact.addrs.iter().enumerate() {
        let label = if i == 0 { "addresses:" } else { "" };
        out.line(format_args!("{label:<15}{}", sanitize(addr)))?;
    }
    match contact.last_heard {
        Some(at) => out.line(format_args!("last heard:    {}", local_time(Timestamp(at))))?,
        None => out.line("last heard:    never")?,
    }
    if let Some(at) = contact.restored_at {
        out.line(format_args!(
            "restored:      {name} restored from a backup {}; the conversation continues in their new session",
            local_time(Timestamp(at))
        ))?;
    }
    if !contact.missing.is_empty() {
        let count: u64 = contact.missing.iter().map(|[a, b]| b.saturating_sub(*a).saturating_add(1)).sum();
        let ranges: Vec<String> = contact
            .missing
            .iter()
            .map(|[a, b]| if a == b { format!("#{a}") } else { format!("#{a}-#{b}") })
            .collect();
        out.line(format_args!(
            "missing:       {count} message(s) from {name} have not arrived ({}): held back, lost, or still on their way",
            ranges.join(", ")
        ))?;
    }
    out.line(format_args!(
        "Compare the safety number with {name} in person or on a call: if both of you see the same \
         digits, nobody is in the middle."
    ))
}
