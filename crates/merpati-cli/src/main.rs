//! `merpati`, the Merpati command-line client: parses the command line, runs one command against
//! the home directory (and, for most commands, the `merpatid` daemon's control API), and turns
//! any error into one sentence on stderr and an exit code from `docs/cli.md`.

mod chat;
mod cli;
mod commands;
mod exit;
mod output;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // clap prints usage errors itself and exits with 2, and with 0 for --help and --version.
    let cli = cli::Cli::parse();
    match commands::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => exit::report(&error),
    }
}
