//! `merpati backup FILE` and `merpati restore FILE`: everything needed to carry on elsewhere in
//! one file encrypted to a passphrase, and a new home made from it.
//!
//! The daemon writes the backup (it owns the database). A restore needs no daemon: it runs
//! `merpatid restore` from beside this program, which builds the home and queues a new session
//! with every contact for the daemon to send once started.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::{Context, Result};
use merpati_control::Home;
use merpati_control::protocol::{BackupParams, RestoreResult, method};
use merpati_proto::Timestamp;
use zeroize::Zeroizing;

use crate::commands::{connect, read_stdin};
use crate::exit::{Code, Failure};
use crate::output::{Output, local_time, sanitize, size_text};

/// The environment variable a script gives the passphrase in.
const PASSPHRASE_ENV: &str = "MERPATI_PASSPHRASE";
/// The longest passphrase read from standard input.
const MAX_PASSPHRASE_LEN: usize = 1024;
/// `merpatid restore`'s exit code for a passphrase that does not open the backup or a file that
/// is not a whole backup.
const DAEMON_BAD_BACKUP: i32 = 19;
/// `merpatid restore`'s exit code for a home that holds an identity or a database already.
const DAEMON_HOME_NOT_EMPTY: i32 = 20;

/// The `backup` arguments.
#[derive(Debug, clap::Args)]
pub(crate) struct BackupArgs {
    /// Where to write the backup; a file already there is replaced once the new one is whole
    file: PathBuf,
}

/// The `restore` arguments.
#[derive(Debug, clap::Args)]
pub(crate) struct RestoreArgs {
    /// The backup, as `merpati backup` wrote it
    file: PathBuf,
}

/// Asks the daemon for a backup at `args.file`.
pub(crate) fn backup(home: &Home, out: &mut Output, args: BackupArgs) -> Result<()> {
    let path = std::path::absolute(&args.file)
        .with_context(|| format!("cannot tell where {} is", args.file.display()))?;
    let mut client = connect(home)?;
    let passphrase = passphrase(true)?;
    let params = BackupParams { path: path.display().to_string(), passphrase: passphrase.to_string() };
    let written = client.call::<method::Backup>(params)?;
    if out.is_json() {
        return out.object(&written);
    }
    out.line(format_args!(
        "Wrote a backup of {} contacts, {} messages and {} files to {} ({}).",
        written.contacts,
        written.messages,
        written.files,
        sanitize(&written.path),
        size_text(written.bytes)
    ))?;
    out.line(
        "It holds your identity: anyone with the file and the passphrase can read your history and write as you. \
         Keep them apart. Restore it on a new device with: merpati restore FILE",
    )
}

/// Restores `args.file` into the home by running `merpatid restore`.
pub(crate) fn restore(home: &Home, out: &mut Output, args: RestoreArgs) -> Result<()> {
    if home.is_initialised() {
        return Err(Failure::new(
            Code::HomeNotEmpty,
            format!(
                "{} already holds a Merpati identity: restore into a new, empty home (merpati --home NEW_DIR restore FILE)",
                home.dir().display()
            ),
        )
        .into());
    }
    let passphrase = passphrase(false)?;
    let daemon = daemon_program();
    let mut child = Command::new(&daemon)
        .arg("--home")
        .arg(home.dir())
        .arg("restore")
        .arg(&args.file)
        .env_remove(PASSPHRASE_ENV)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {} to restore the backup", daemon.display()))?;
    if let Some(mut stdin) = child.stdin.take() {
        // An early exit of merpatid (say, a missing file) closes the pipe: its own error says why.
        let _ = stdin.write_all(format!("{}\n", passphrase.as_str()).as_bytes());
    }
    let output = child.wait_with_output().context("cannot wait for merpatid restore")?;
    if !output.status.success() {
        let said = String::from_utf8_lossy(&output.stderr);
        let said = said.trim().trim_start_matches("merpatid: ");
        let code = match output.status.code() {
            Some(DAEMON_BAD_BACKUP) => Code::Backup,
            Some(DAEMON_HOME_NOT_EMPTY) => Code::HomeNotEmpty,
            _ => Code::Other,
        };
        return Err(Failure::new(code, said.to_owned()).into());
    }
    let restored: RestoreResult = serde_json::from_slice(&output.stdout)
        .context("merpatid restore finished but did not say what it restored")?;
    if out.is_json() {
        return out.object(&restored);
    }
    let who = restored.name.as_deref().map(|n| format!("{} ", sanitize(n))).unwrap_or_default();
    out.line(format_args!(
        "Restored {who}(fingerprint {}) from the backup of {}: {} contacts, {} messages, {} files.",
        restored.fingerprint,
        local_time(Timestamp(restored.made_at)),
        restored.contacts,
        restored.messages,
        restored.files
    ))?;
    if !restored.told.is_empty() {
        let names: Vec<_> = restored.told.iter().map(|n| sanitize(n).into_owned()).collect();
        out.line(format_args!(
            "Start the daemon (merpatid --home {}): it starts a new session with {}, who see that you restored \
             from a backup; each side sends again what the other never confirmed.",
            home.dir().display(),
            names.join(", ")
        ))?;
    }
    for unreachable in &restored.unreachable {
        out.line(format_args!(
            "{} cannot be told yet ({}): ask them for a new invite, or for a message, which reaches you here.",
            sanitize(&unreachable.contact),
            sanitize(&unreachable.why)
        ))?;
    }
    out.line(
        "Stop Merpati on the old device for good: what it writes from now on, your contacts' nodes refuse.",
    )
}

/// The passphrase: from `MERPATI_PASSPHRASE`, else asked at the terminal without echo (twice
/// when `confirm`), else the first line of standard input.
fn passphrase(confirm: bool) -> Result<Zeroizing<String>> {
    if let Ok(passphrase) = std::env::var(PASSPHRASE_ENV) {
        return Ok(Zeroizing::new(passphrase));
    }
    if !std::io::stdin().is_terminal() {
        let line = Zeroizing::new(read_stdin(MAX_PASSPHRASE_LEN, "passphrase")?);
        return Ok(Zeroizing::new(line.lines().next().unwrap_or_default().to_owned()));
    }
    let first = Zeroizing::new(
        rpassword::prompt_password("Backup passphrase: ").context("cannot read the passphrase")?,
    );
    if confirm {
        let again = Zeroizing::new(
            rpassword::prompt_password("The same passphrase again: ")
                .context("cannot read the passphrase")?,
        );
        if *again != *first {
            return Err(Failure::new(Code::Backup, "the two passphrases differ; nothing was written").into());
        }
    }
    Ok(first)
}

/// `merpatid` beside this program (where `cargo install` and the release archive put both), else
/// the one on the `PATH`.
fn daemon_program() -> PathBuf {
    let beside = std::env::current_exe().ok().map(|exe| exe.with_file_name("merpatid"));
    beside.filter(|path| path.is_file()).unwrap_or_else(|| PathBuf::from("merpatid"))
}
