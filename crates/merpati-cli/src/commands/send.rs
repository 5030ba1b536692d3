//! `merpati send`: queues a text (or a file) with the daemon and prints its id; with `--wait`, follows the
//! message's status until it gets as far as asked, fails, or the time is up.
//!
//! `stored k/n` (some of the contact's relays hold the message because the contact's node was not
//! reachable) counts as far as `sent`: either way the message is out of this node.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Result;
use clap::ValueEnum;
use merpati_control::protocol::{
    Event, GroupSendParams, MessageStatus, MessageStatusParams, MessageView, SendParams, StatusUpdate,
    TransferDirection, TransferUpdate, method,
};
use merpati_control::{ClientError, Home, Notifications};
use merpati_proto::fragment::MAX_REASSEMBLED_LEN;
use serde_json::json;

use crate::cli::parse_name;
use crate::commands::{connect, files, read_stdin};
use crate::exit::{Code, Failure};
use crate::output::{Output, percent, sanitize, size_text, status_text};

/// Arguments of `merpati send`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The contact's name, or '#' and a group's name (or id) to send to a group
    #[arg(value_parser = parse_name)]
    to: String,
    /// TO is a group (as a leading '#' says)
    #[arg(long)]
    group: bool,
    /// The text, or - to read it from standard input (one trailing newline is dropped); with
    /// --file, a caption (optional)
    #[arg(required_unless_present = "file")]
    text: Option<String>,
    /// Send this file (up to 25 MiB), with the text as its caption
    #[arg(long, value_name = "PATH")]
    file: Option<PathBuf>,
    /// The file's media type, e.g. image/jpeg [default: from the file name's extension]
    #[arg(long = "type", value_name = "TYPE", requires = "file")]
    media_type: Option<String>,
    /// Wait until the message has been sent (or stored by the contact's relays), delivered or
    /// read
    #[arg(long, value_name = "STATUS")]
    wait: Option<Wait>,
    /// How long --wait waits, in seconds
    #[arg(long, value_name = "SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    timeout: u64,
}

/// The statuses `--wait` can wait for.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum Wait {
    /// The peer's node, or at least one of the peer's relays, stored it
    Sent,
    /// The peer's device received it
    Delivered,
    /// The peer read it
    Read,
}

impl From<Wait> for MessageStatus {
    fn from(wait: Wait) -> Self {
        match wait {
            Wait::Sent => MessageStatus::Sent,
            Wait::Delivered => MessageStatus::Delivered,
            Wait::Read => MessageStatus::Read,
        }
    }
}

/// Sends the text (or the file) and, with `--wait`, waits.
pub(crate) fn run(home: &Home, out: &mut Output, args: Args) -> Result<()> {
    let text = match args.text.as_deref() {
        Some("-") => read_stdin(MAX_REASSEMBLED_LEN, "message")?,
        Some(text) => text.to_owned(),
        None => String::new(),
    };
    if text.is_empty() && args.file.is_none() {
        return Err(Failure::new(Code::Other, "the message is empty: there is nothing to send").into());
    }
    if let Some(group) = group_of(&args) {
        return send_to_group(home, out, &args, group, text);
    }
    let file = args
        .file
        .as_deref()
        .map(|path| files::read_for_sending(path, args.media_type.as_deref()))
        .transpose()?;
    // Subscribe before sending, so no status change can slip by between the two.
    let events = match args.wait {
        Some(_) => Some(connect(home)?.subscribe()?),
        None => None,
    };
    let mut client = connect(home)?;
    // A file over 48 KiB goes by its path, and is uploaded to our relays after the send.
    let may_upload = file.as_ref().is_some_and(|file| file.path.is_some());
    let sent = match file {
        Some(file) => client.call::<method::SendFile>(file.params(&args.to, text))?,
        None => client.call::<method::Send>(SendParams { to: args.to.clone(), text })?,
    };
    if out.is_json() {
        out.object(&json!({ "id": sent.id }))?;
    } else {
        out.line(&sent.id)?;
    }
    let (Some(wait), Some(events)) = (args.wait, events) else {
        return Ok(());
    };
    let target = MessageStatus::from(wait);
    let deadline = Instant::now() + Duration::from_secs(args.timeout);
    // The status may have moved before the subscription saw anything worth reporting.
    let current = client.call::<method::MessageStatus>(MessageStatusParams { id: sent.id.clone() })?;
    let to = sanitize(&args.to);
    let reached = match wait_for(events, current, target, deadline, may_upload) {
        Ok(reached) => reached,
        Err(WaitError::TimedOut(last)) => {
            let status = status_text(last.status, last.stored);
            let message = format!(
                "gave up waiting after {} s: message {} to {to} is {status}, not yet {target} (merpatid keeps trying)",
                args.timeout, sent.id
            );
            return Err(Failure::new(Code::Timeout, message).into());
        }
        Err(WaitError::Failed(reason)) => {
            let reason = reason.map(|r| format!(": {}", sanitize(&r))).unwrap_or_default();
            return Err(Failure::new(
                Code::MessageFailed,
                format!("message {} to {to} failed{reason}", sent.id),
            )
            .into());
        }
        Err(WaitError::Client(e)) => return Err(e.into()),
    };
    if out.is_json() {
        out.object(&reached)
    } else {
        // Stdout stays the id alone, so `id=$(merpati send …)` works with and without --wait.
        eprintln_status(&reached);
        Ok(())
    }
}

/// The group `args` sends to, if it is one: `--group`, or a name starting with '#'.
fn group_of(args: &Args) -> Option<String> {
    match args.to.strip_prefix('#') {
        Some(group) if !group.is_empty() => Some(group.to_owned()),
        _ if args.group => Some(args.to.clone()),
        _ => None,
    }
}

/// Sends a text to a group: one copy to each member, queued at once.
fn send_to_group(home: &Home, out: &mut Output, args: &Args, group: String, text: String) -> Result<()> {
    if args.file.is_some() {
        return Err(
            Failure::new(Code::InvalidFile, "files cannot be sent to a group yet; send a text").into()
        );
    }
    if args.wait.is_some() {
        let message = "--wait follows a message to one contact; `merpati messages --group` shows how many members have a group's";
        return Err(Failure::new(Code::Other, message).into());
    }
    let sent = connect(home)?.call::<method::GroupSend>(GroupSendParams { group, text })?;
    if out.is_json() { out.object(&json!({ "id": sent.id })) } else { out.line(&sent.id) }
}

/// Why the wait ended without reaching the target.
enum WaitError {
    /// The deadline passed; the last status known.
    TimedOut(StatusUpdate),
    /// The message failed, with the daemon's reason.
    Failed(Option<String>),
    /// The connection failed.
    Client(ClientError),
}

/// Follows `events` until the message of `current` reaches `target` or fails, or `deadline`.
///
/// A file's upload to our relays, once under way, is followed too (shown on stderr), so that the
/// command does not return while the file is only half at the relays.
fn wait_for(
    mut events: Notifications,
    mut current: StatusUpdate,
    target: MessageStatus,
    deadline: Instant,
    may_upload: bool,
) -> Result<StatusUpdate, WaitError> {
    let mut progress = Progress::default();
    loop {
        if current.status == MessageStatus::Failed {
            progress.finish();
            return Err(WaitError::Failed(current.reason));
        }
        let reached = has_reached(&current, target);
        if reached && !progress.drawn && !may_upload {
            return Ok(current);
        }
        // Reached, for a file that may be uploading: news already on its way (an upload that
        // starts is announced before any status change) is read first.
        let until = if reached && !progress.drawn { Instant::now() + SETTLE } else { deadline };
        let update = match events.next_event_until(until.min(deadline)) {
            Ok(Event::Status(update)) => update,
            Ok(Event::Message(MessageView { id, status: Some(status), stored, .. })) => {
                StatusUpdate { id, status, reason: None, stored }
            }
            Ok(Event::Transfer(update)) => {
                if update.id == current.id && update.direction == TransferDirection::Up {
                    progress.show(&update);
                }
                continue;
            }
            Ok(Event::Message(_) | Event::Request(_) | Event::Restored(_)) => continue,
            Err(ClientError::Timeout) => {
                progress.finish();
                // The status came (and, at the deadline, the rest of an upload goes on in the
                // daemon).
                if has_reached(&current, target) {
                    return Ok(current);
                }
                return Err(WaitError::TimedOut(current));
            }
            Err(e) => {
                progress.finish();
                return Err(WaitError::Client(e));
            }
        };
        if update.id == current.id && is_newer(&update, &current) {
            current = update;
        }
    }
}

/// Whether `update` has got as far as `target`. `stored` with no relay holding the message would
/// not be out of this node at all, so it counts only with at least one relay's acceptance.
fn has_reached(update: &StatusUpdate, target: MessageStatus) -> bool {
    let held_by_no_relay =
        update.status == MessageStatus::Stored && update.stored.is_some_and(|count| count.accepted == 0);
    update.status.has_reached(target) && !held_by_no_relay
}

/// Whether `update` is later news than `current`. Notifications queued before `message.status`
/// answered may be older than its answer: a status only ever moves forward (or to failed), and
/// relays only ever add acceptances, so older news is ignored.
fn is_newer(update: &StatusUpdate, current: &StatusUpdate) -> bool {
    if update.status == MessageStatus::Failed {
        return true;
    }
    let both_stored = update.status == MessageStatus::Stored && current.status == MessageStatus::Stored;
    let fewer_relays = match (update.stored, current.stored) {
        (Some(update), Some(current)) => both_stored && update.accepted < current.accepted,
        _ => false,
    };
    update.status.has_reached(current.status) && !fewer_relays
}

/// The upload's progress on stderr: one line redrawn on a terminal, and a line at the end
/// anywhere (scripts read the status lines, not this).
#[derive(Debug, Default)]
struct Progress {
    /// Whether an upload is under way (its line, on a terminal, drawn).
    drawn: bool,
    /// Why it last said it waits.
    waiting: Option<String>,
}

/// How long news after the status is read for an upload that started with the send.
const SETTLE: Duration = Duration::from_millis(200);

impl Progress {
    fn show(&mut self, update: &TransferUpdate) {
        use std::io::{IsTerminal, Write};
        if let Some(why) = &update.waiting {
            // Paced by a relay: said once per reason, on a line of its own.
            if self.waiting.as_ref() != Some(why) {
                self.finish();
                let _ = writeln!(std::io::stderr().lock(), "message {} upload waits: {why}", update.id);
                self.waiting = Some(why.clone());
                self.drawn = update.done < update.size;
            }
            return;
        }
        let mut err = std::io::stderr().lock();
        let done = update.done >= update.size;
        let line = format!(
            "message {} {} {} of {}",
            update.id,
            if done {
                "uploaded".to_owned()
            } else {
                format!("uploading {}", percent(update.done, update.size))
            },
            size_text(update.done),
            size_text(update.size),
        );
        self.drawn = !done;
        if err.is_terminal() {
            let _ = write!(err, "\r\x1b[2K{line}");
            if done {
                let _ = writeln!(err);
            }
        } else if done {
            let _ = writeln!(err, "{line}");
        }
    }

    /// Ends a line left drawn on a terminal, before anything else is written.
    fn finish(&mut self) {
        use std::io::{IsTerminal, Write};
        let mut err = std::io::stderr().lock();
        if std::mem::take(&mut self.drawn) && err.is_terminal() {
            let _ = writeln!(err);
        }
    }
}

/// A progress note on stderr, which keeps stdout for the id.
fn eprintln_status(update: &StatusUpdate) {
    use std::io::Write;
    let status = status_text(update.status, update.stored);
    let _ = writeln!(std::io::stderr().lock(), "message {} {status}", update.id);
}

#[cfg(test)]
mod tests {
    use merpati_control::protocol::{MessageId, StoredCount};

    use super::*;

    fn update(status: MessageStatus, stored: Option<(u32, u32)>) -> StatusUpdate {
        StatusUpdate {
            id: MessageId::from_bytes([7; 16]),
            status,
            reason: None,
            stored: stored.map(|(accepted, total)| StoredCount { accepted, total }),
        }
    }

    #[test]
    fn stored_by_a_relay_satisfies_a_wait_for_sent() {
        use MessageStatus::*;
        assert!(has_reached(&update(Stored, Some((1, 2))), Sent));
        assert!(has_reached(&update(Stored, None), Sent));
        assert!(!has_reached(&update(Stored, Some((0, 2))), Sent));
        assert!(!has_reached(&update(Stored, Some((2, 2))), Delivered));
        assert!(has_reached(&update(Sent, None), Sent));
        assert!(!has_reached(&update(Queued, None), Sent));
    }

    #[test]
    fn older_news_is_ignored() {
        use MessageStatus::*;
        assert!(is_newer(&update(Stored, Some((2, 3))), &update(Stored, Some((1, 3)))));
        assert!(!is_newer(&update(Stored, Some((1, 3))), &update(Stored, Some((2, 3)))));
        assert!(is_newer(&update(Stored, Some((1, 3))), &update(Queued, None)));
        assert!(is_newer(&update(Delivered, None), &update(Stored, Some((1, 3)))));
        assert!(!is_newer(&update(Queued, None), &update(Stored, Some((1, 3)))));
        assert!(is_newer(&update(Failed, None), &update(Read, None)));
    }
}
