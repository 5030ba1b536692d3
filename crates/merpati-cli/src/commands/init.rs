//! `merpati init`: creates the home directory and the identity file, without a daemon.

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow};
use merpati_control::{Home, HomeError, IdentityFile};
use merpati_proto::Timestamp;
use merpati_proto::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;
use serde_json::json;
use zeroize::Zeroizing;

use crate::cli::parse_own_name;
use crate::output::{Output, sanitize};

/// Arguments of `merpati init`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The name your invites suggest to contacts (1-64 characters)
    #[arg(long, value_name = "NAME", value_parser = parse_own_name)]
    name: Option<String>,
}

/// Creates the identity, refusing to replace one.
pub(crate) fn run(home: &Home, out: &mut Output, args: Args) -> Result<()> {
    let path = home.identity_file();
    // Checked first so that a second `init` changes nothing at all, not even directory modes.
    if home.is_initialised() {
        return Err(HomeError::AlreadyInitialised { path }.into());
    }
    home.create_dir()?;
    let mut rng = os_rng()?;
    let identity = IdentityFile::create(&mut rng, args.name, now()?)?;
    identity.save_new(&path)?;
    let fingerprint = identity.fingerprint();
    if out.is_json() {
        return out.object(&json!({
            "home": home.dir(),
            "identity_file": path,
            "fingerprint": fingerprint,
            "name": identity.name,
        }));
    }
    out.line(format_args!("Created a new identity in {}", sanitize(&home.dir().display().to_string())))?;
    out.line(format_args!("fingerprint: {fingerprint}"))?;
    out.line(format_args!(
        "Next, start the daemon: merpatid --home {}",
        sanitize(&home.dir().display().to_string())
    ))
}

/// A CSPRNG seeded from the operating system. Seeding a ChaCha20 stream from 32 OS bytes lets a
/// failing OS source be an error here instead of a panic deep inside key generation.
fn os_rng() -> Result<ChaCha20Rng> {
    let mut seed = Zeroizing::new([0u8; 32]);
    getrandom::fill(&mut seed[..])
        .map_err(|e| anyhow!("cannot get random bytes from the operating system: {e}"))?;
    Ok(ChaCha20Rng::from_seed(*seed))
}

fn now() -> Result<Timestamp> {
    let since_epoch =
        SystemTime::now().duration_since(UNIX_EPOCH).context("the system clock is before 1970")?;
    Ok(Timestamp(u64::try_from(since_epoch.as_millis()).unwrap_or(u64::MAX)))
}
