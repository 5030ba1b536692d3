//! `merpatid`, the Merpati node daemon: parses arguments, sets up logging, runs the daemon as a
//! user node or, with `--relay`, as a community relay.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use libp2p::Multiaddr;
use merpati_control::home::Home;
use merpati_control::protocol::{RestoreResult, Unreachable};
use merpati_node::backup::{self, BackupError};
use merpati_node::clock::Clock;
use merpati_node::config::{FileConfig, Role};
use merpati_node::daemon::{self, Options};
use merpati_node::relay::run::{self as relay, RelayOptions};
use tokio_util::sync::CancellationToken;

/// The Merpati node: keeps your identity, contacts and messages, and delivers end-to-end
/// encrypted messages to your contacts' nodes (directly, or through their relays).
///
/// With --relay it runs a community relay instead: it keeps encrypted envelopes for people who
/// are offline and lets nodes behind NAT be reached (see docs/relay-operators.md).
/// The environment variables `merpatid` reads, shown at the end of `--help`.
const ENVIRONMENT: &str = "Environment:
  MERPATI_HOME          the home directory when --home is not given
  MERPATI_PASSPHRASE    restore: the backup's passphrase (else the first line of standard input)
  RUST_LOG              log filter, e.g. merpati_node=debug (default: warnings and errors for a
                        user node, -v and -vv for more; merpati_node=info for a relay)
  MERPATI_CLOCK_OFFSET  for tests only: shift the daemon's clock, e.g. 3d, -12h, 90m (mailbox
                        days, prekey rotation and expiry all follow it)";

#[derive(Debug, Parser)]
#[command(name = "merpatid", version, after_help = ENVIRONMENT)]
struct Args {
    /// Home directory (identity, database, control socket). Default: $MERPATI_HOME, else the
    /// platform data directory (~/.local/share/merpati on Linux).
    #[arg(long)]
    home: Option<PathBuf>,
    /// Address to listen on (repeatable), e.g. /ip4/0.0.0.0/tcp/4001, used as given (a port in use
    /// by another program is refused). Default: TCP and QUIC on all interfaces, on the ports of
    /// the last run (chosen by the system the first time).
    #[arg(long = "listen", value_name = "MULTIADDR")]
    listen: Vec<Multiaddr>,
    /// Config file (TOML: `role = "user"|"relay"`, `listen = [...]`, `mdns`, `read_receipts`,
    /// and for relays a `[relay]` section; see docs/relay-operators.md). Default:
    /// <home>/merpatid.toml if it exists. Flags given here override it.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Do not look for peers on the local network (mDNS).
    #[arg(long)]
    no_mdns: bool,
    /// Run as a community relay (the same as `role = "relay"` in the config file): keep
    /// mailboxes for others and relay connections to nodes behind NAT. Needs no identity.
    #[arg(long)]
    relay: bool,
    /// Log more: -v for what the node does (the default of a relay), -vv for debugging. Without
    /// it a user node logs only warnings and errors. RUST_LOG, when set, overrides both.
    #[arg(short, long, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    command: Option<Subcommand>,
}

#[derive(Debug, clap::Subcommand)]
enum Subcommand {
    /// Run a throwaway two-person network on 127.0.0.1 and show messages going both ways,
    /// surviving a crash. Starts its own daemons in temporary homes; your own home is untouched.
    Demo {
        /// Keep the demo's homes in this directory instead of a temporary one.
        #[arg(long, value_name = "DIR")]
        keep: Option<PathBuf>,
    },
    /// Restore a backup (made with `merpati backup`) into a home that holds no identity yet, and
    /// queue a new session with every contact, sent once the daemon starts. Reads the passphrase
    /// from MERPATI_PASSPHRASE, else from the first line of standard input. Prints one JSON
    /// line; `merpati restore` is the friendly way to run it.
    Restore {
        /// The backup file.
        file: PathBuf,
    },
}

/// Exit code of `merpatid restore` for a passphrase that does not open the backup, a file that is
/// not a usable backup, or a passphrase too short (the CLI's table, `docs/cli.md`).
const EXIT_BAD_BACKUP: u8 = 19;
/// Exit code of `merpatid restore` for a home that holds an identity or a database already.
const EXIT_HOME_NOT_EMPTY: u8 = 20;

/// `merpatid restore FILE`.
fn restore(home: &Home, file: &std::path::Path) -> ExitCode {
    let passphrase = match std::env::var("MERPATI_PASSPHRASE") {
        Ok(passphrase) => zeroize::Zeroizing::new(passphrase),
        Err(_) => {
            let mut line = zeroize::Zeroizing::new(String::new());
            if let Err(e) = std::io::stdin().read_line(&mut line) {
                return fail(&format!("cannot read the passphrase: {e}"));
            }
            let trimmed = line.trim_end_matches(['\n', '\r']).len();
            line.truncate(trimmed);
            line
        }
    };
    let clock = match Clock::from_env() {
        Ok(clock) => clock,
        Err(e) => return fail(&e),
    };
    let mut rng = match merpati_node::daemon::os_rng() {
        Ok(rng) => rng,
        Err(e) => return fail(&e),
    };
    match backup::restore(home, file, &passphrase, clock.now(), &mut rng) {
        Ok(restored) => {
            let result = RestoreResult {
                fingerprint: restored.fingerprint,
                name: restored.name,
                made_at: restored.made_at.millis(),
                contacts: restored.contacts as u64,
                messages: restored.messages as u64,
                files: restored.files as u64,
                told: restored.resumed.told.into_iter().map(|(name, _)| name).collect(),
                unreachable: restored
                    .resumed
                    .unreachable
                    .into_iter()
                    .map(|(contact, why)| Unreachable { contact, why })
                    .collect(),
            };
            print_ready(&result);
            ExitCode::SUCCESS
        }
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "merpatid: {e}");
            ExitCode::from(match e {
                BackupError::WeakPassphrase
                | BackupError::WrongPassphrase { .. }
                | BackupError::NotABackup { .. } => EXIT_BAD_BACKUP,
                BackupError::HomeNotEmpty { .. } => EXIT_HOME_NOT_EMPTY,
                _ => 1,
            })
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(Subcommand::Demo { keep }) = args.command {
        return match merpati_node::demo::run(keep) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(&format!("demo failed: {e:#}")),
        };
    }
    let home = match Home::resolve(args.home) {
        Ok(home) => home,
        Err(e) => return fail(&e),
    };
    if let Some(Subcommand::Restore { file }) = &args.command {
        return restore(&home, file);
    }
    let file = match &args.config {
        Some(path) => FileConfig::load(path),
        None => FileConfig::load_if_present(&home.config_file()),
    };
    let file = match file {
        Ok(file) => file,
        Err(e) => return fail(&e),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => return fail(&e),
    };
    // For tests that start a daemon "days later"; see docs/cli.md.
    let clock = match Clock::from_env() {
        Ok(clock) => clock,
        Err(e) => return fail(&e),
    };
    let is_relay = args.relay || file.role == Some(Role::Relay);
    // A relay is a service whose log is read; a user's node is quiet unless asked.
    let level = match (args.verbose, is_relay) {
        (0, false) => "warn",
        (0, true) | (1, _) => "info",
        _ => "debug",
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        // Colours only for a person at a terminal, not in a journal or a log file.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(log_filter(std::env::var("RUST_LOG").ok().as_deref(), level))
        .init();
    if !is_relay && file.relay.is_some() {
        return fail(&"the config file has a [relay] section: add role = \"relay\" or run merpatid --relay");
    }
    let result = runtime.block_on(async {
        let shutdown = CancellationToken::new();
        tokio::spawn(stop_on_signal(shutdown.clone()));
        if is_relay {
            let mut options = RelayOptions::new(home).with_file(&file);
            options.clock = clock;
            if !args.listen.is_empty() {
                options.listen = args.listen;
            }
            relay::run(options, shutdown, print_ready).await
        } else {
            let listen = if args.listen.is_empty() { file.listen.unwrap_or_default() } else { args.listen };
            let mdns = !args.no_mdns && file.mdns.unwrap_or(true);
            let read_receipts = file.read_receipts.unwrap_or(true);
            let options = Options { home, listen, mdns, read_receipts, clock };
            daemon::run(options, shutdown, print_ready).await
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&format!("{e:#}")),
    }
}

/// Prints the startup line: one JSON object on stdout, flushed, for scripts and tests to wait on.
/// Shown when RUST_LOG names no level for it: libp2p's Kademlia warns "Failed to trigger
/// bootstrap" whenever its routing table is empty, which a relay's often is, and which is harmless.
const QUIET_KAD: &str = "libp2p_kad::behaviour=error";

/// The log filter: RUST_LOG when set (with [`QUIET_KAD`] unless it mentions `libp2p_kad`), else
/// our own crate at `level` and nothing of libp2p's.
fn log_filter(rust_log: Option<&str>, level: &str) -> tracing_subscriber::EnvFilter {
    match rust_log.filter(|spec| !spec.trim().is_empty()) {
        Some(spec) => {
            let filter = tracing_subscriber::EnvFilter::new(spec);
            match QUIET_KAD.parse() {
                Ok(quiet) if !spec.contains("libp2p_kad") => filter.add_directive(quiet),
                _ => filter,
            }
        }
        None => tracing_subscriber::EnvFilter::new(format!("merpati_node={level}")),
    }
}

fn print_ready(ready: &impl serde::Serialize) {
    let line = serde_json::to_string(ready).unwrap_or_default();
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{line}");
    let _ = stdout.flush();
}

async fn stop_on_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
    else {
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    tracing::info!("shutting down");
    shutdown.cancel();
}

fn fail(error: &dyn std::fmt::Display) -> ExitCode {
    let _ = writeln!(std::io::stderr(), "merpatid: {error}");
    ExitCode::FAILURE
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use super::*;

    /// A log writer into memory.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// What one kad bootstrap warning and one line of ours leave in the log under `rust_log`.
    fn logged(rust_log: Option<&str>, level: &str) -> String {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .with_env_filter(log_filter(rust_log, level))
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(target: "libp2p_kad::behaviour", "Failed to trigger bootstrap: No known peers.");
            tracing::warn!(target: "libp2p_swarm", "a libp2p warning");
            tracing::info!(target: "merpati_node::relay", "relay ready");
        });
        let bytes = captured.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    #[test]
    fn the_kad_bootstrap_warning_stays_out_of_an_operators_log() {
        // The systemd unit's RUST_LOG=info: our lines and libp2p's, but not that one.
        let log = logged(Some("info"), "info");
        assert!(log.contains("relay ready") && log.contains("a libp2p warning"), "{log}");
        assert!(!log.contains("bootstrap"), "{log}");
        // Asked for by name, it is shown.
        assert!(logged(Some("info,libp2p_kad=warn"), "info").contains("bootstrap"));
        // No RUST_LOG: our crate only.
        let log = logged(None, "info");
        assert!(log.contains("relay ready") && !log.contains("libp2p"), "{log}");
        // A user node at the default level: quiet.
        assert!(logged(None, "warn").is_empty());
    }
}
