//! One module per subcommand, and what they share: finding the home and reaching the daemon.

pub(crate) mod backup;
pub(crate) mod contact;
pub(crate) mod delete;
pub(crate) mod export;
pub(crate) mod files;
pub(crate) mod group;
pub(crate) mod init;
pub(crate) mod invite;
pub(crate) mod messages;
pub(crate) mod relay;
pub(crate) mod requests;
pub(crate) mod search;
pub(crate) mod send;
pub(crate) mod shell;
pub(crate) mod status;

use std::io::Read;

use anyhow::{Context, Result};
use merpati_control::{Client, ClientError, Home, HomeError};

use crate::cli::{Cli, Command};
use crate::exit::{Code, Failure};
use crate::output::Output;

/// Runs the command `cli` names.
pub(crate) fn run(cli: Cli) -> Result<()> {
    let mut out = Output::new(cli.json);
    // These two need no home, no identity and no daemon.
    match cli.command {
        Command::Completions(args) => return shell::completions(args),
        Command::Man(args) => return shell::man(&mut out, args),
        _ => {}
    }
    let home = Home::resolve(cli.home)?;
    match cli.command {
        Command::Init(args) => init::run(&home, &mut out, args),
        Command::Invite(args) => invite::run(&home, &mut out, args),
        Command::Contact(command) => contact::run(&home, &mut out, command),
        Command::Send(args) => send::run(&home, &mut out, args),
        Command::Messages(args) => messages::run(&home, &mut out, args),
        Command::Chat(args) => crate::chat::run(&home, args),
        Command::Search(args) => search::run(&home, &mut out, args),
        Command::Export(args) => export::run(&home, &mut out, args),
        Command::Delete(args) => delete::run(&home, &mut out, args),
        Command::Save(args) => files::save(&home, &mut out, args),
        Command::Status => status::run(&home, &mut out),
        Command::Backup(args) => backup::backup(&home, &mut out, args),
        Command::Restore(args) => backup::restore(&home, &mut out, args),
        Command::Relay(command) => relay::run(&home, &mut out, command),
        Command::Group(command) => group::run(&home, &mut out, command),
        Command::Requests(args) => requests::run(&home, &mut out, args),
        Command::Completions(_) | Command::Man(_) => Ok(()),
    }
}

/// Connects to the home's daemon. When none is running and the home has no identity either,
/// the first thing to do is `merpati init`, so that is the error (exit 4) rather than "start
/// the daemon" (exit 3).
pub(crate) fn connect(home: &Home) -> Result<Client> {
    match Client::connect(home) {
        Ok(client) => Ok(client),
        Err(ClientError::DaemonNotRunning { .. }) if !home.is_initialised() => {
            Err(HomeError::NotInitialised { path: home.identity_file() }.into())
        }
        Err(e) => Err(e.into()),
    }
}

/// Reads standard input as UTF-8 text of at most `max` bytes, without one trailing newline (as
/// `echo` and heredocs add; it does not count). Longer input is [`Code::MessageTooLarge`].
pub(crate) fn read_stdin(max: usize, what: &str) -> Result<String> {
    let mut bytes = Vec::new();
    // Room for the text, a trailing `\r\n`, and one byte more to tell a longer input.
    let limit = u64::try_from(max).unwrap_or(u64::MAX).saturating_add(3);
    std::io::stdin().lock().take(limit).read_to_end(&mut bytes).context("cannot read standard input")?;
    if bytes.ends_with(b"\n") {
        bytes.pop();
        if bytes.ends_with(b"\r") {
            bytes.pop();
        }
    }
    if bytes.len() > max {
        return Err(Failure::new(
            Code::MessageTooLarge,
            format!("the {what} on standard input is longer than {max} bytes, more than merpati accepts"),
        )
        .into());
    }
    String::from_utf8(bytes).map_err(|_| {
        Failure::new(Code::Other, format!("the {what} on standard input is not UTF-8 text")).into()
    })
}
