//! `merpati completions SHELL` and `merpati man --dir DIR`: shell completions and man pages,
//! generated from the command line's own definition so they cannot drift from it.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::CommandFactory;
use clap_complete::Shell;

use crate::cli::Cli;
use crate::output::Output;

/// Arguments of `merpati completions`.
#[derive(Debug, clap::Args)]
pub(crate) struct CompletionsArgs {
    /// The shell to complete for
    #[arg(value_enum)]
    shell: Shell,
}

/// Arguments of `merpati man`.
#[derive(Debug, clap::Args)]
pub(crate) struct ManArgs {
    /// Write one page per command (merpati.1, merpati-contact-add.1, …) into this directory,
    /// creating it; without it, merpati.1 goes to standard output
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
}

/// Prints the completion script for `args.shell`.
pub(crate) fn completions(args: CompletionsArgs) -> Result<()> {
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut Cli::command(), "merpati", &mut script);
    std::io::stdout().write_all(&script).context("writing the completion script")
}

/// Writes the man pages.
pub(crate) fn man(out: &mut Output, args: ManArgs) -> Result<()> {
    match args.dir {
        Some(dir) => {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            clap_mangen::generate_to(Cli::command(), &dir)
                .with_context(|| format!("writing man pages into {}", dir.display()))?;
            if out.is_json() {
                return out.object(&serde_json::json!({ "dir": dir }));
            }
            out.line(format_args!("Man pages written to {}.", dir.display()))
        }
        None => {
            let mut page = Vec::new();
            clap_mangen::Man::new(Cli::command()).render(&mut page).context("rendering the man page")?;
            std::io::stdout().write_all(&page).context("writing the man page")
        }
    }
}
