//! `merpati messages`: the latest messages, one line each, and with `--follow` new ones as they
//! are stored.

use std::collections::HashSet;

use anyhow::Result;
use merpati_control::protocol::{
    ContactShowParams, Direction, Event, GroupParams, MAX_MESSAGES_LIMIT, MessageId, MessageStatus,
    MessageView, MessagesParams, MessagesReadParams, method,
};
use merpati_control::{ClientError, Home};

use crate::cli::parse_name;
use crate::commands::connect;
use crate::output::{Output, local_time, sanitize, shown_text, status_text};
use merpati_proto::Timestamp;

/// Arguments of `merpati messages`.
///
/// With `--follow`, new messages are printed as they are stored, the user's own as soon as they
/// are queued; following one conversation marks what arrives in it read, as showing it does.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Only the conversation with this contact
    #[arg(value_parser = parse_name, conflicts_with = "group")]
    name: Option<String>,
    /// Only this group's messages (its name, or at least 4 hex digits of its id)
    #[arg(long, short, value_name = "GROUP")]
    group: Option<String>,
    /// Keep running and print new messages as they are stored
    #[arg(long, short)]
    follow: bool,
    /// How many of the latest messages to print first [default: 100]
    #[arg(long, short = 'n', value_name = "N", value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_MESSAGES_LIMIT)))]
    limit: Option<u32>,
    /// Page back: the messages before the one with this id (the first id of the page shown)
    #[arg(long, value_name = "ID", conflicts_with = "follow")]
    before: Option<MessageId>,
}

/// Prints the latest messages (or the page before `--before`), then follows if asked.
pub(crate) fn run(home: &Home, out: &mut Output, mut args: Args) -> Result<()> {
    // The conversation by its stored name, whatever case was typed: new messages carry it.
    if let Some(name) = &args.name {
        let contact = connect(home)?.call::<method::ContactShow>(ContactShowParams { name: name.clone() })?;
        args.name = Some(contact.name);
    }
    // The group by its id: new messages name it.
    let group_id = match args.group.take() {
        Some(group) => {
            let shown = connect(home)?.call::<method::GroupShow>(GroupParams { group })?;
            args.group = Some(shown.id.clone());
            Some(shown.id)
        }
        None => None,
    };
    // Subscribe before reading the history, so nothing stored in between is missed; anything
    // that shows up in both is printed once.
    let events = if args.follow { Some(connect(home)?.subscribe()?) } else { None };
    let history = connect(home)?.call::<method::Messages>(MessagesParams {
        group: args.group.clone(),
        with: args.name.clone(),
        limit: args.limit,
        before: args.before.clone(),
    })?;
    let mut printed: HashSet<MessageId> = HashSet::new();
    if history.cut
        && !out.is_json()
        && let Some(first) = history.messages.first()
    {
        // On stderr: stdout stays the messages.
        eprintln!(
            "only the {} newest fit one answer (long texts): merpati messages{} --before {} for older ones",
            history.messages.len(),
            args.name.as_ref().map(|n| format!(" {}", sanitize(n))).unwrap_or_default(),
            first.id
        );
    }
    for message in history.messages {
        print(out, &message)?;
        if events.is_some() {
            printed.insert(message.id);
        }
    }
    // Showing a conversation is reading it: mark it read (the daemon tells the contact if read
    // receipts are on).
    if let Some(name) = &args.name {
        connect(home)?.call::<method::MessagesRead>(MessagesReadParams { with: name.clone() })?;
    }
    if let Some(group) = &group_id {
        connect(home)?.call::<method::GroupRead>(GroupParams { group: group.clone() })?;
    }
    let Some(events) = events else {
        return Ok(());
    };
    // On stderr, so standard output stays the messages: a person sees it is waiting, and a
    // script knows the subscription is in place.
    eprintln!("following new messages (Ctrl-C to stop)");
    let mut requests_told = std::collections::HashSet::new();
    for event in events {
        match event? {
            Event::Message(message) => {
                let in_group = |id: &String| message.group.as_ref().is_some_and(|g| g.id == *id);
                let wanted = match (&args.name, &group_id) {
                    (_, Some(id)) => in_group(id),
                    (Some(name), None) => *name == message.contact && message.group.is_none(),
                    (None, None) => true,
                };
                // `remove`, not `contains`: a message is announced once, so the set only shrinks.
                if wanted && !printed.remove(&message.id) {
                    print(out, &message)?;
                    // Following one conversation is reading it, as showing it is. A contact
                    // renamed or removed meanwhile is no reason to stop following.
                    if let Some(name) = &args.name
                        && message.direction == Direction::In
                    {
                        let _ = connect(home)?
                            .call::<method::MessagesRead>(MessagesReadParams { with: name.clone() });
                    }
                    if let Some(group) = &group_id
                        && message.direction == Direction::In
                    {
                        let _ =
                            connect(home)?.call::<method::GroupRead>(GroupParams { group: group.clone() });
                    }
                }
            }
            // Told once per request, to a person following everything; scripts read
            // `merpati requests --json`.
            Event::Request(request)
                if args.name.is_none() && !out.is_json() && requests_told.insert(request.id.clone()) =>
            {
                let from = match &request.suggested_name {
                    Some(name) => format!("someone who says they are \"{}\" (unverified)", sanitize(name)),
                    None => "someone not in your contacts".to_owned(),
                };
                out.line(format_args!(
                    "Contact request {} from {from}: see merpati requests",
                    sanitize(&request.id)
                ))?;
            }
            // A person following the conversation sees why it moved to a new session.
            Event::Restored(notice)
                if args.name.as_ref().is_none_or(|name| *name == notice.contact) && !out.is_json() =>
            {
                out.line(format_args!(
                    "{} restored from a backup ({}); what they had not confirmed is sent again",
                    sanitize(&notice.contact),
                    local_time(Timestamp(notice.at))
                ))?;
            }
            _ => {}
        }
    }
    Err(ClientError::Closed.into())
}

/// One message: `id  in|out  contact  local time  text  [status: reason]`, text escaped for the
/// terminal. A group's message shows `#group` (and its sender) for the contact, and how many
/// members have it.
pub(crate) fn print(out: &mut Output, message: &MessageView) -> Result<()> {
    if out.is_json() {
        return out.object(message);
    }
    let group_count = message.group.as_ref().and_then(|g| Some((g.delivered?, g.members?)));
    let status = match (message.direction, message.status) {
        (Direction::Out, Some(status)) if status != MessageStatus::Failed && group_count.is_some() => {
            let (delivered, members) = group_count.unwrap_or_default();
            match message.group.as_ref().and_then(|g| g.read).filter(|read| *read > 0) {
                Some(read) => format!("  [delivered {delivered}/{members}, read {read}]"),
                None => format!("  [delivered {delivered}/{members}]"),
            }
        }
        (Direction::Out, Some(status)) => match &message.reason {
            // Why it waits or failed, e.g. "the recipient's mailbox is full".
            Some(reason) => format!("  [{}: {}]", status_text(status, message.stored), sanitize(reason)),
            None => format!("  [{}]", status_text(status, message.stored)),
        },
        _ => String::new(),
    };
    out.line(format_args!(
        "{}  {:<3}  {}  {}  {}{status}",
        message.id,
        message.direction,
        who(message),
        local_time(message.time),
        sanitize(&shown_text(message)),
    ))
}

/// Who a message is with: the contact, or `#group` with the sender of an incoming group message.
fn who(message: &MessageView) -> String {
    match &message.group {
        Some(group) => match &group.from {
            Some(from) => format!("#{}: {}", sanitize(&group.name), sanitize(from)),
            None => format!("#{}", sanitize(&group.name)),
        },
        None => sanitize(&message.contact).into_owned(),
    }
}
