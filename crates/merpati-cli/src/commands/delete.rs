//! `merpati delete ID`: delete one message from this device; its text cannot be recovered from
//! the database files.

use anyhow::Result;
use merpati_control::Home;
use merpati_control::protocol::{MessageId, MessageStatusParams, method};

use crate::commands::connect;
use crate::output::{Output, sanitize};

/// The `delete` arguments.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The message's id, as `merpati messages` shows it (the first column)
    id: MessageId,
}

/// Deletes the message and says from which conversation.
pub(crate) fn run(home: &Home, out: &mut Output, args: Args) -> Result<()> {
    let deleted = connect(home)?.call::<method::MessagesDelete>(MessageStatusParams { id: args.id })?;
    if out.is_json() {
        return out.object(&deleted);
    }
    out.line(format_args!(
        "Deleted message {} of your conversation with {} from this device; {} keeps their copy.",
        deleted.id,
        sanitize(&deleted.contact),
        sanitize(&deleted.contact)
    ))
}
