//! The command line: global options and one subcommand, each subcommand's arguments living next
//! to its code in `commands/`.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use merpati_control::protocol::check_name;
use merpati_proto::invite::MAX_NAME_LEN;

use crate::chat;
use crate::commands::{
    backup, contact, delete, export, files, group, init, invite, messages, relay, requests, search, send,
    shell,
};

/// Merpati: end-to-end encrypted direct messages, peer to peer.
///
/// Most commands talk to the merpatid daemon of the home directory; `init` creates the identity
/// before the daemon first starts.
#[derive(Debug, Parser)]
#[command(name = "merpati", version, about, long_about)]
pub(crate) struct Cli {
    /// The node's home directory [default: $MERPATI_HOME, else ~/.local/share/merpati]
    // The environment variable is read by `Home::resolve`, not clap, so that daemon and CLI agree
    // on it and an empty MERPATI_HOME counts as unset instead of as an empty path.
    #[arg(long, global = true, value_name = "DIR")]
    pub(crate) home: Option<PathBuf>,

    /// Machine-readable output: one JSON object per line
    #[arg(long, global = true)]
    pub(crate) json: bool,

    #[command(subcommand)]
    pub(crate) command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Create this node's identity (no daemon needed)
    Init(init::Args),
    /// Print an invite for someone to add you as a contact
    Invite(invite::Args),
    /// Add, list, show, rename, remove and block contacts
    #[command(subcommand)]
    Contact(contact::Command),
    /// Send a text (or a small file) to a contact
    Send(send::Args),
    /// List messages, page back through them, and optionally follow new ones
    Messages(messages::Args),
    /// Chat full screen: conversations, requests and the open conversation, live
    ///
    /// Conversations on the left with unread counts, then contact requests; the open
    /// conversation with each sent message's status (○ queued, ✓ sent or stored k/n, ✓✓
    /// delivered, ✓✓ read in colour); an input line at the bottom. What is on screen is marked
    /// read. Keys: Enter sends, Alt+Enter or Ctrl+J starts a new line, Tab and Shift+Tab move
    /// between conversations, PgUp/PgDn (and ↑/↓ outside a multi-line text) scroll back through
    /// the whole history, Ctrl+C quits. Typed commands: /accept NAME, /reject and /block on a
    /// selected request, /file PATH, /help, /quit; start a text with // to send one that begins
    /// with /. Groups follow the contacts as #NAME: in one, each message shows its sender, yours
    /// how many members have it (delivered k/n), and Enter sends to the group (files not yet).
    Chat(chat::Args),
    /// Find messages holding a text, whatever its case
    Search(search::Args),
    /// Write out the file a message carries
    ///
    /// To its own name in the current directory, or to PATH; a file already there is kept unless
    /// --force is given.
    Save(files::SaveArgs),
    /// Write a conversation (or all) as plain text, JSON lines or an HTML page, to keep
    Export(export::Args),
    /// Delete one message from this device; its text cannot be recovered from the files
    ///
    /// Local only: the contact keeps their copy, and a message still on its way is still
    /// delivered. `merpati contact clear NAME` deletes a whole conversation.
    Delete(delete::Args),
    /// Show the daemon's peer id, addresses, connected contacts and outbox
    Status,
    /// Write everything needed to carry on elsewhere into one file, encrypted to a passphrase
    ///
    /// Your identity, contacts, relays, settings and whole history with its files; never the
    /// keys of your conversations' sessions. The passphrase is asked at the terminal (twice), or
    /// read from MERPATI_PASSPHRASE or standard input; at least 8 characters. The file is an age
    /// file (`age -d` opens it too). Restore it on a new device with `merpati restore`.
    Backup(backup::BackupArgs),
    /// Make this home from a backup, on a new device (no daemon running, no identity yet)
    ///
    /// Once the daemon starts, it starts a new session with each contact, who sees that you
    /// restored from a backup; messages either side sent that the other never confirmed are sent
    /// again. Stop Merpati on the old device for good first.
    Restore(backup::RestoreArgs),
    /// Add, list and remove the relays that keep your messages while you are offline
    ///
    /// A relay is a node, usually run by someone you trust, that keeps messages for you while
    /// you are offline and lets contacts reach you when you are behind NAT. It only ever sees
    /// ciphertext: it cannot read your messages. You can use up to 4; the invites you give out
    /// list them, so add relays before you hand out invites.
    #[command(subcommand)]
    Relay(relay::Command),
    /// Create groups and change who is in them
    ///
    /// A group (up to 100 members) is end-to-end encrypted like a conversation: each message
    /// goes to each member in your own conversation with them. Members need not know each
    /// other: whoever adds someone passes on how to reach them. Send to one with `merpati send
    /// '#NAME' TEXT`; read it with `merpati messages --group NAME`. Admins add, remove and
    /// rename; the owner (who created it) also makes admins.
    #[command(subcommand)]
    Group(group::Command),
    /// List, accept, reject or block contact requests
    ///
    /// Someone with your invite who is not in your contacts reaches you as a request: nothing is
    /// answered and no receipt goes back until you accept. The name they give is their word
    /// only. At most 100 requests wait; past that the oldest is dropped.
    Requests(requests::Args),
    /// Print a completion script for your shell
    ///
    /// For example, for bash: `merpati completions bash > ~/.local/share/bash-completion/completions/merpati`;
    /// for zsh, write it as `_merpati` into a directory of your `$fpath`; for fish, into
    /// `~/.config/fish/completions/merpati.fish`.
    Completions(shell::CompletionsArgs),
    /// Print the man page, or write one per command into a directory
    ///
    /// For example: `merpati man --dir ~/.local/share/man/man1`, then `man merpati-send`.
    Man(shell::ManArgs),
}

/// A contact name argument: 1–64 characters, no control characters (what merpatid accepts), so
/// a bad name is a usage error before anything is sent.
pub(crate) fn parse_name(name: &str) -> Result<String, String> {
    check_name(name).map_err(|e| e.to_string())?;
    Ok(name.to_owned())
}

/// The node's own name: a contact name that also fits an invite (at most 64 bytes of UTF-8).
pub(crate) fn parse_own_name(name: &str) -> Result<String, String> {
    let name = parse_name(name)?;
    if name.len() > MAX_NAME_LEN {
        return Err(format!("a name is at most {MAX_NAME_LEN} bytes of UTF-8, this one has {}", name.len()));
    }
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn names() {
        assert_eq!(parse_name("bob"), Ok("bob".to_owned()));
        assert!(parse_name("").is_err());
        assert!(parse_name("a\nb").is_err());
        assert!(parse_name(&"é".repeat(33)).is_ok());
        assert!(parse_own_name(&"é".repeat(33)).is_err());
        assert!(parse_own_name(&"é".repeat(32)).is_ok());
    }
}
