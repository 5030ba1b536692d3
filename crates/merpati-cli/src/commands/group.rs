//! `merpati group create|add|remove|promote|rename|leave|show|list`: groups, through the daemon.

use anyhow::Result;
use clap::Subcommand;
use merpati_control::Home;
use merpati_control::protocol::{
    GroupCreateParams, GroupMemberParams, GroupParams, GroupRenameParams, GroupRole, GroupView, NoParams,
    method,
};

use crate::cli::parse_name;
use crate::commands::connect;
use crate::output::{Output, sanitize};

/// The `group` subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Create a group, owned by you, with contacts in it
    ///
    /// Each member's device gets the group and its members at once (or when it next comes
    /// online). The members see the name you give each of them here (your contact's name).
    Create {
        /// The group's name, 1–64 bytes
        #[arg(value_parser = parse_name)]
        name: String,
        /// A contact to add (repeat for more; up to 99)
        #[arg(long = "member", short = 'm', value_name = "CONTACT", value_parser = parse_name)]
        members: Vec<String>,
    },
    /// Add a contact to a group (admins)
    Add {
        /// The group: its name, or at least 4 hex digits of its id
        group: String,
        /// The contact
        #[arg(value_parser = parse_name)]
        contact: String,
    },
    /// Remove a member from a group (admins; only the owner removes an admin)
    ///
    /// Nothing sent to the group after the removal reaches them, and what they send is not
    /// taken by the others.
    Remove {
        /// The group
        group: String,
        /// The member: your contact's name, or the name the group gave them
        member: String,
    },
    /// Make a member an admin, who can add, remove and rename (the owner only)
    Promote {
        /// The group
        group: String,
        /// The member
        member: String,
    },
    /// Rename a group (admins)
    Rename {
        /// The group
        group: String,
        /// Its new name
        #[arg(value_parser = parse_name)]
        name: String,
    },
    /// Leave a group: the members are told, and nothing more is sent to it from here
    Leave {
        /// The group
        group: String,
    },
    /// Show a group: its id, your role and its members
    Show {
        /// The group
        group: String,
    },
    /// List your groups
    List,
}

/// Runs a `group` subcommand.
pub(crate) fn run(home: &Home, out: &mut Output, command: Command) -> Result<()> {
    let mut client = connect(home)?;
    let (view, done) = match command {
        Command::Create { name, members } => {
            let view = client.call::<method::GroupCreate>(GroupCreateParams { name, members })?;
            let done = format!("Created #{} with {} members.", sanitize(&view.name), view.members.len());
            (view, done)
        }
        Command::Add { group, contact } => {
            let view =
                client.call::<method::GroupAdd>(GroupMemberParams { group, member: contact.clone() })?;
            let done = format!("Added {} to #{}.", sanitize(&contact), sanitize(&view.name));
            (view, done)
        }
        Command::Remove { group, member } => {
            let view =
                client.call::<method::GroupRemove>(GroupMemberParams { group, member: member.clone() })?;
            let done = format!("Removed {} from #{}.", sanitize(&member), sanitize(&view.name));
            (view, done)
        }
        Command::Promote { group, member } => {
            let view =
                client.call::<method::GroupPromote>(GroupMemberParams { group, member: member.clone() })?;
            let done = format!("{} is now an admin of #{}.", sanitize(&member), sanitize(&view.name));
            (view, done)
        }
        Command::Rename { group, name } => {
            let view = client.call::<method::GroupRename>(GroupRenameParams { group, name })?;
            let done = format!("Renamed the group #{}.", sanitize(&view.name));
            (view, done)
        }
        Command::Leave { group } => {
            let view = client.call::<method::GroupLeave>(GroupParams { group })?;
            let done = format!("You left #{}; its members were told.", sanitize(&view.name));
            (view, done)
        }
        Command::Show { group } => (client.call::<method::GroupShow>(GroupParams { group })?, String::new()),
        Command::List => {
            let list = client.call::<method::GroupList>(NoParams {})?;
            if list.groups.is_empty() && !out.is_json() {
                return out.line("No groups; create one with: merpati group create NAME --member CONTACT");
            }
            for group in &list.groups {
                if out.is_json() {
                    out.object(group)?;
                } else {
                    out.line(summary(group))?;
                }
            }
            return Ok(());
        }
    };
    if out.is_json() {
        return out.object(&view);
    }
    if !done.is_empty() {
        out.line(done)?;
    }
    for line in details(&view) {
        out.line(line)?;
    }
    Ok(())
}

/// One line per group: `#name  id  n members  role  (k unread)`.
fn summary(group: &GroupView) -> String {
    let unread = if group.unread > 0 { format!("  ({} unread)", group.unread) } else { String::new() };
    format!(
        "#{}  {}  {} members  {}{unread}",
        sanitize(&group.name),
        &group.id[..8],
        group.members.len(),
        role_text(group.role)
    )
}

/// A group's id and members, one per line.
fn details(group: &GroupView) -> Vec<String> {
    let mut lines =
        vec![format!("#{}  id {}  you: {}", sanitize(&group.name), group.id, role_text(group.role))];
    for member in &group.members {
        let mut notes = Vec::new();
        if member.owner {
            notes.push("owner".to_owned());
        } else if member.role == GroupRole::Admin {
            notes.push("admin".to_owned());
        }
        if member.contact.is_none() && !member.me {
            notes.push("not a contact".to_owned());
        }
        let notes = if notes.is_empty() { String::new() } else { format!(" ({})", notes.join(", ")) };
        lines.push(format!("  {}{notes}  {}", sanitize(&member.name), member.fingerprint));
    }
    for gap in &group.missing {
        let ranges: Vec<String> = gap
            .ranges
            .iter()
            .map(|[from, to]| if from == to { format!("{from}") } else { format!("{from}–{to}") })
            .collect();
        lines.push(format!("  never arrived from {}: messages {}", sanitize(&gap.member), ranges.join(", ")));
    }
    lines
}

fn role_text(role: Option<GroupRole>) -> &'static str {
    match role {
        Some(GroupRole::Admin) => "admin",
        Some(GroupRole::Member) => "member",
        None => "not a member",
    }
}
