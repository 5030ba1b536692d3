//! The daemon's config file (`<home>/merpatid.toml`, or `--config FILE`): a few settings in TOML.
//!
//! A user node usually needs none of them:
//!
//! ```toml
//! listen = ["/ip4/0.0.0.0/tcp/4001", "/ip4/0.0.0.0/udp/4001/quic-v1"]
//! mdns = true
//! read_receipts = true
//! ```
//!
//! A community relay (`role = "relay"`, or `merpatid --relay`) says where it can be reached and
//! may change its limits in a `[relay]` section; every setting in it is optional:
//!
//! ```toml
//! role = "relay"
//! listen = ["/ip4/0.0.0.0/tcp/4001", "/ip4/0.0.0.0/udp/4001/quic-v1"]
//!
//! [relay]
//! public_addresses = ["/ip4/203.0.113.7/tcp/4001", "/ip4/203.0.113.7/udp/4001/quic-v1"]
//! storage = "/var/lib/merpati-relay/mailboxes"   # default <home>/mailboxes
//! metrics = "127.0.0.1:9464"                     # no metrics endpoint when absent
//! ttl_days = 30
//! max_envelope_bytes = 65536
//! mailbox_max_envelopes = 10000
//! mailbox_max_mib = 64
//! disk_budget_mib = 1024
//! max_mailboxes = 100000
//! network_max_mib = 64
//! peer_max_mib = 32
//! ipv6_block_max_mib = 256
//! unfetched_ttl_days = 7
//! live_reserve_percent = 20
//! max_fetch_marks = 1000000
//! network_max_fetch_marks = 50000
//! ipv6_block_max_fetch_marks = 200000
//! peer_rate = { per_second = 100, burst = 500 }
//! ip_rate = { per_second = 400, burst = 2000 }
//! ipv6_block_rate = { per_second = 1600, burst = 8000 }
//! max_reservations = 1024
//! max_circuits = 256
//! blob_budget_mib = 2048
//! blob_user_mib = 256
//! blob_ttl_days = 30
//! ```
//!
//! Command-line flags override the file; absent settings keep their defaults (listen on all
//! interfaces with ports chosen by the system and kept across restarts; mDNS on; the relay
//! defaults are the `RelaySection::DEFAULT_*` constants, the values shown above). Every value is
//! checked on load, and a refusal names the setting and says what is allowed.

use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};

use libp2p::Multiaddr;
use libp2p::multiaddr::Protocol;
use merpati_proto::envelope::MAX_ENVELOPE_LEN;
use serde::Deserialize;
use thiserror::Error;

/// The largest config file read, in bytes: it holds a handful of settings.
pub const MAX_CONFIG_LEN: u64 = 64 * 1024;

/// Why the config file could not be used.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read the config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// The file is larger than any real config.
    #[error("the config file {path} is larger than {MAX_CONFIG_LEN} bytes")]
    TooLarge {
        /// The file.
        path: PathBuf,
    },
    /// The file is not valid TOML, has unknown or mistyped settings, or a value out of range.
    #[error("the config file {path} is invalid: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong: the parser's explanation (line, column, what was expected), or the
        /// setting and the values it allows.
        message: String,
    },
}

/// The settings a config file may hold.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FileConfig {
    /// What the daemon runs as; `None` means a user node unless `--relay` is given.
    pub role: Option<Role>,
    /// Addresses to listen on.
    pub listen: Option<Vec<Multiaddr>>,
    /// Whether to find peers on the local network with mDNS.
    pub mdns: Option<bool>,
    /// Whether contacts are told when their messages were read.
    pub read_receipts: Option<bool>,
    /// The relay's settings (the `[relay]` section); only allowed when the role is not `user`.
    pub relay: Option<RelaySection>,
}

/// What a daemon runs as (`role = "user"` or `role = "relay"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A person's node: usually behind NAT, keeps a reservation on its relays.
    User,
    /// A community relay on a public host: relays connections and keeps mailboxes of ciphertext.
    Relay,
}

/// A token bucket: `per_second` requests refill the bucket each second, up to `burst`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateSetting {
    /// Sustained requests per second.
    pub per_second: u32,
    /// Requests allowed at once after a quiet spell.
    pub burst: u32,
}

/// The `[relay]` section. Absent settings take the `DEFAULT_*` value of the same name.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RelaySection {
    /// Addresses at which other nodes reach this relay, without `/p2p/<peer id>`. A relay with
    /// none does not offer relaying (libp2p needs a confirmed external address).
    pub public_addresses: Option<Vec<Multiaddr>>,
    /// Directory of the mailbox store (an absolute path). Default: `<home>/mailboxes`.
    pub storage: Option<PathBuf>,
    /// Where the Prometheus metrics endpoint listens. Default: no endpoint.
    pub metrics: Option<SocketAddr>,
    /// Days a deposited envelope is kept before it is dropped unfetched.
    pub ttl_days: Option<u32>,
    /// The largest envelope accepted, in bytes.
    pub max_envelope_bytes: Option<u32>,
    /// The most envelopes one mailbox holds.
    pub mailbox_max_envelopes: Option<u32>,
    /// The most envelope bytes one mailbox holds, in MiB.
    pub mailbox_max_mib: Option<u32>,
    /// The most envelope bytes all mailboxes hold together, in MiB.
    pub disk_budget_mib: Option<u64>,
    /// The most mailboxes held at once.
    pub max_mailboxes: Option<u32>,
    /// The most envelope bytes stored from one network (IPv4 address, IPv6 /64), in MiB.
    pub network_max_mib: Option<u32>,
    /// The most envelope bytes stored from one peer, in MiB.
    pub peer_max_mib: Option<u32>,
    /// The most envelope bytes stored from one IPv6 /48, all its /64s together, in MiB.
    pub ipv6_block_max_mib: Option<u32>,
    /// Days an envelope is kept when no one has fetched its mailbox.
    pub unfetched_ttl_days: Option<u32>,
    /// Percent of the disk budget and mailbox count kept for mailboxes fetched lately.
    pub live_reserve_percent: Option<u8>,
    /// The most fetch marks kept.
    pub max_fetch_marks: Option<u32>,
    /// The most fetch marks created by one network's fetches.
    pub network_max_fetch_marks: Option<u32>,
    /// The most fetch marks created by the fetches of one IPv6 /48.
    pub ipv6_block_max_fetch_marks: Option<u32>,
    /// Mailbox requests allowed per connected peer.
    pub peer_rate: Option<RateSetting>,
    /// Mailbox requests allowed per source IP address, over all its peers.
    pub ip_rate: Option<RateSetting>,
    /// Mailbox requests allowed per IPv6 /48, over all its /64s.
    pub ipv6_block_rate: Option<RateSetting>,
    /// Relay (circuit v2) reservations held at once.
    pub max_reservations: Option<u32>,
    /// Relayed connections open at once.
    pub max_circuits: Option<u32>,
    /// The most bytes of files (blobs) kept for all users together, in MiB.
    pub blob_budget_mib: Option<u64>,
    /// The most bytes of files one user keeps at once, in MiB (its network: twice as much);
    /// also the largest file accepted.
    pub blob_user_mib: Option<u32>,
    /// Days a file is kept after its upload began.
    pub blob_ttl_days: Option<u32>,
}

impl RelaySection {
    /// Default of `ttl_days`.
    pub const DEFAULT_TTL_DAYS: u32 = 30;
    /// Default of `max_envelope_bytes`: the largest envelope the protocol allows.
    pub const DEFAULT_MAX_ENVELOPE_BYTES: u32 = MAX_ENVELOPE_LEN as u32;
    /// Default of `mailbox_max_envelopes`.
    pub const DEFAULT_MAILBOX_MAX_ENVELOPES: u32 = 10_000;
    /// Default of `mailbox_max_mib`.
    pub const DEFAULT_MAILBOX_MAX_MIB: u32 = 64;
    /// Default of `disk_budget_mib`.
    pub const DEFAULT_DISK_BUDGET_MIB: u64 = 1024;
    /// Default of `max_mailboxes`.
    pub const DEFAULT_MAX_MAILBOXES: u32 = 100_000;
    /// Default of `network_max_mib`.
    pub const DEFAULT_NETWORK_MAX_MIB: u32 = 64;
    /// Default of `peer_max_mib`.
    pub const DEFAULT_PEER_MAX_MIB: u32 = 32;
    /// Default of `ipv6_block_max_mib`.
    pub const DEFAULT_IPV6_BLOCK_MAX_MIB: u32 = 256;
    /// Default of `ipv6_block_max_fetch_marks`.
    pub const DEFAULT_IPV6_BLOCK_MAX_FETCH_MARKS: u32 = 200_000;
    /// Default of `ipv6_block_rate`.
    pub const DEFAULT_IPV6_BLOCK_RATE: RateSetting = RateSetting { per_second: 1600, burst: 8000 };
    /// Default of `unfetched_ttl_days`.
    pub const DEFAULT_UNFETCHED_TTL_DAYS: u32 = 7;
    /// Default of `live_reserve_percent`.
    pub const DEFAULT_LIVE_RESERVE_PERCENT: u8 = 20;
    /// Default of `max_fetch_marks`.
    pub const DEFAULT_MAX_FETCH_MARKS: u32 = 1_000_000;
    /// Default of `network_max_fetch_marks`.
    pub const DEFAULT_NETWORK_MAX_FETCH_MARKS: u32 = 50_000;
    /// Default of `peer_rate`.
    pub const DEFAULT_PEER_RATE: RateSetting = RateSetting { per_second: 100, burst: 500 };
    /// Default of `ip_rate`.
    pub const DEFAULT_IP_RATE: RateSetting = RateSetting { per_second: 400, burst: 2000 };
    /// Default of `max_reservations`.
    pub const DEFAULT_MAX_RESERVATIONS: u32 = 1024;
    /// Default of `max_circuits`.
    pub const DEFAULT_MAX_CIRCUITS: u32 = 256;
    /// Default of `blob_budget_mib`.
    pub const DEFAULT_BLOB_BUDGET_MIB: u64 = crate::relay::blobs::DEFAULT_BLOB_BUDGET_MIB;
    /// Default of `blob_user_mib`.
    pub const DEFAULT_BLOB_USER_MIB: u32 = crate::relay::blobs::DEFAULT_BLOB_USER_MIB as u32;
    /// Default of `blob_ttl_days`.
    pub const DEFAULT_BLOB_TTL_DAYS: u32 = crate::relay::blobs::DEFAULT_BLOB_TTL_DAYS as u32;
}

/// Allowed values. The upper bounds only catch typos and unit mistakes (bytes for MiB, seconds
/// for days); they are far above what one small server can serve.
const TTL_DAYS: RangeInclusive<i64> = 1..=365;
const MAX_ENVELOPE_BYTES: RangeInclusive<i64> = 1024..=MAX_ENVELOPE_LEN as i64;
const MAILBOX_MAX_ENVELOPES: RangeInclusive<i64> = 1..=1_000_000;
const MAILBOX_MAX_MIB: RangeInclusive<i64> = 1..=4096;
/// 16 TiB.
const DISK_BUDGET_MIB: RangeInclusive<i64> = 1..=16 * 1024 * 1024;
const MAX_MAILBOXES: RangeInclusive<i64> = 1..=100_000_000;
const DEPOSITOR_MAX_MIB: RangeInclusive<i64> = 1..=16 * 1024 * 1024;
const LIVE_RESERVE_PERCENT: RangeInclusive<i64> = 0..=90;
const MAX_FETCH_MARKS: RangeInclusive<i64> = 1_000..=1_000_000_000;
const RATE: RangeInclusive<i64> = 1..=1_000_000;
const MAX_RESERVATIONS: RangeInclusive<i64> = 1..=100_000;
const MAX_CIRCUITS: RangeInclusive<i64> = 1..=100_000;
/// At least one 25 MiB file's blob (448 chunks of 64 KiB = 28 MiB).
const BLOB_USER_MIB: RangeInclusive<i64> = 28..=1024 * 1024;

/// The file as written, before values are checked. Numbers are read as TOML's own `i64` so that
/// a negative or huge value gets our message rather than a type error.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    role: Option<String>,
    listen: Option<Vec<String>>,
    mdns: Option<bool>,
    read_receipts: Option<bool>,
    relay: Option<RawRelay>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRelay {
    public_addresses: Option<Vec<String>>,
    storage: Option<PathBuf>,
    metrics: Option<String>,
    ttl_days: Option<i64>,
    max_envelope_bytes: Option<i64>,
    mailbox_max_envelopes: Option<i64>,
    mailbox_max_mib: Option<i64>,
    disk_budget_mib: Option<i64>,
    max_mailboxes: Option<i64>,
    network_max_mib: Option<i64>,
    peer_max_mib: Option<i64>,
    ipv6_block_max_mib: Option<i64>,
    unfetched_ttl_days: Option<i64>,
    live_reserve_percent: Option<i64>,
    max_fetch_marks: Option<i64>,
    network_max_fetch_marks: Option<i64>,
    ipv6_block_max_fetch_marks: Option<i64>,
    peer_rate: Option<RawRate>,
    ip_rate: Option<RawRate>,
    ipv6_block_rate: Option<RawRate>,
    max_reservations: Option<i64>,
    max_circuits: Option<i64>,
    blob_budget_mib: Option<i64>,
    blob_user_mib: Option<i64>,
    blob_ttl_days: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRate {
    per_second: i64,
    burst: i64,
}

impl FileConfig {
    /// Reads `path`.
    pub fn load(path: &Path) -> Result<FileConfig, ConfigError> {
        let read = |source| ConfigError::Read { path: path.to_owned(), source };
        let len = std::fs::metadata(path).map_err(read)?.len();
        if len > MAX_CONFIG_LEN {
            return Err(ConfigError::TooLarge { path: path.to_owned() });
        }
        let text = std::fs::read_to_string(path).map_err(read)?;
        parse(&text).map_err(|message| ConfigError::Invalid { path: path.to_owned(), message })
    }

    /// Reads `path` if it exists.
    pub fn load_if_present(path: &Path) -> Result<FileConfig, ConfigError> {
        match std::fs::metadata(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(FileConfig::default()),
            _ => Self::load(path),
        }
    }
}

/// Parses and checks the text of a config file; the error names the setting.
fn parse(text: &str) -> Result<FileConfig, String> {
    let raw: RawConfig = toml::from_str(text).map_err(|e| e.to_string())?;
    let role = raw.role.as_deref().map(parse_role).transpose()?;
    let listen = raw.listen.map(|addrs| parse_addresses("listen", &addrs)).transpose()?;
    let relay = raw.relay.map(parse_relay).transpose()?;
    if relay.is_some() && role == Some(Role::User) {
        return Err("there is a [relay] section but role = \"user\": a [relay] section is only used \
                    by a relay, so set role = \"relay\" (or remove the section)"
            .into());
    }
    Ok(FileConfig { role, listen, mdns: raw.mdns, read_receipts: raw.read_receipts, relay })
}

fn parse_role(role: &str) -> Result<Role, String> {
    match role {
        "user" => Ok(Role::User),
        "relay" => Ok(Role::Relay),
        other => Err(format!("role = \"{other}\" is not a role: use \"user\" or \"relay\"")),
    }
}

fn parse_addresses(setting: &str, addrs: &[String]) -> Result<Vec<Multiaddr>, String> {
    addrs
        .iter()
        .map(|a| a.parse::<Multiaddr>().map_err(|e| format!("{setting}: \"{a}\" is not an address ({e})")))
        .collect()
}

fn parse_relay(raw: RawRelay) -> Result<RelaySection, String> {
    let public_addresses = raw.public_addresses.map(|a| parse_public_addresses(&a)).transpose()?;
    if let Some(storage) = &raw.storage
        && !storage.is_absolute()
    {
        return Err(format!(
            "relay.storage = {:?} is not allowed: use an absolute path, e.g. \
             \"/var/lib/merpati-relay/mailboxes\", or leave it out for <home>/mailboxes",
            storage.display().to_string()
        ));
    }
    let metrics = raw.metrics.as_deref().map(parse_metrics).transpose()?;
    let section = RelaySection {
        public_addresses,
        storage: raw.storage,
        metrics,
        ttl_days: number("relay.ttl_days", raw.ttl_days, TTL_DAYS, "days")?,
        max_envelope_bytes: number(
            "relay.max_envelope_bytes",
            raw.max_envelope_bytes,
            MAX_ENVELOPE_BYTES,
            "bytes",
        )?,
        mailbox_max_envelopes: number(
            "relay.mailbox_max_envelopes",
            raw.mailbox_max_envelopes,
            MAILBOX_MAX_ENVELOPES,
            "envelopes",
        )?,
        mailbox_max_mib: number("relay.mailbox_max_mib", raw.mailbox_max_mib, MAILBOX_MAX_MIB, "MiB")?,
        disk_budget_mib: number("relay.disk_budget_mib", raw.disk_budget_mib, DISK_BUDGET_MIB, "MiB")?,
        max_mailboxes: number("relay.max_mailboxes", raw.max_mailboxes, MAX_MAILBOXES, "mailboxes")?,
        network_max_mib: number("relay.network_max_mib", raw.network_max_mib, DEPOSITOR_MAX_MIB, "MiB")?,
        peer_max_mib: number("relay.peer_max_mib", raw.peer_max_mib, DEPOSITOR_MAX_MIB, "MiB")?,
        ipv6_block_max_mib: number(
            "relay.ipv6_block_max_mib",
            raw.ipv6_block_max_mib,
            DEPOSITOR_MAX_MIB,
            "MiB",
        )?,
        unfetched_ttl_days: number("relay.unfetched_ttl_days", raw.unfetched_ttl_days, TTL_DAYS, "days")?,
        live_reserve_percent: number(
            "relay.live_reserve_percent",
            raw.live_reserve_percent,
            LIVE_RESERVE_PERCENT,
            "percent",
        )?,
        max_fetch_marks: number("relay.max_fetch_marks", raw.max_fetch_marks, MAX_FETCH_MARKS, "marks")?,
        network_max_fetch_marks: number(
            "relay.network_max_fetch_marks",
            raw.network_max_fetch_marks,
            MAX_FETCH_MARKS,
            "marks",
        )?,
        ipv6_block_max_fetch_marks: number(
            "relay.ipv6_block_max_fetch_marks",
            raw.ipv6_block_max_fetch_marks,
            MAX_FETCH_MARKS,
            "marks",
        )?,
        peer_rate: raw.peer_rate.map(|r| rate("relay.peer_rate", r)).transpose()?,
        ip_rate: raw.ip_rate.map(|r| rate("relay.ip_rate", r)).transpose()?,
        ipv6_block_rate: raw.ipv6_block_rate.map(|r| rate("relay.ipv6_block_rate", r)).transpose()?,
        max_reservations: number(
            "relay.max_reservations",
            raw.max_reservations,
            MAX_RESERVATIONS,
            "reservations",
        )?,
        max_circuits: number("relay.max_circuits", raw.max_circuits, MAX_CIRCUITS, "circuits")?,
        blob_budget_mib: number("relay.blob_budget_mib", raw.blob_budget_mib, DISK_BUDGET_MIB, "MiB")?,
        blob_user_mib: number("relay.blob_user_mib", raw.blob_user_mib, BLOB_USER_MIB, "MiB")?,
        blob_ttl_days: number("relay.blob_ttl_days", raw.blob_ttl_days, TTL_DAYS, "days")?,
    };
    let mailbox_mib = section.mailbox_max_mib.unwrap_or(RelaySection::DEFAULT_MAILBOX_MAX_MIB);
    let budget_mib = section.disk_budget_mib.unwrap_or(RelaySection::DEFAULT_DISK_BUDGET_MIB);
    if u64::from(mailbox_mib) > budget_mib {
        return Err(format!(
            "relay.mailbox_max_mib ({mailbox_mib}) is larger than relay.disk_budget_mib ({budget_mib}): \
             one mailbox cannot hold more than the whole disk budget; lower the first or raise the second"
        ));
    }
    let user_mib = section.blob_user_mib.unwrap_or(RelaySection::DEFAULT_BLOB_USER_MIB);
    let blob_budget_mib = section.blob_budget_mib.unwrap_or(RelaySection::DEFAULT_BLOB_BUDGET_MIB);
    if u64::from(user_mib) > blob_budget_mib {
        return Err(format!(
            "relay.blob_user_mib ({user_mib}) is larger than relay.blob_budget_mib ({blob_budget_mib}): \
             one user cannot keep more files than all users together; lower the first or raise the second"
        ));
    }
    // Left out, the unfetched TTL is at most the TTL (see `MailboxLimits`); set, it must fit.
    let ttl = section.ttl_days.unwrap_or(RelaySection::DEFAULT_TTL_DAYS);
    if let Some(unfetched) = section.unfetched_ttl_days
        && unfetched > ttl
    {
        return Err(format!(
            "relay.unfetched_ttl_days ({unfetched}) is longer than relay.ttl_days ({ttl}): it is the \
             shorter life of envelopes no one has fetched; lower it or raise ttl_days"
        ));
    }
    Ok(section)
}

/// Public addresses: concrete, reachable addresses over a transport the relay speaks, with no
/// peer id (the relay appends its own) and no circuit.
fn parse_public_addresses(addrs: &[String]) -> Result<Vec<Multiaddr>, String> {
    const SETTING: &str = "relay.public_addresses";
    if addrs.is_empty() {
        return Err(format!(
            "{SETTING} is empty: list the addresses users reach this relay at, e.g. \
             [\"/ip4/203.0.113.7/tcp/4001\", \"/ip4/203.0.113.7/udp/4001/quic-v1\"], or leave the setting out"
        ));
    }
    let parsed = parse_addresses(SETTING, addrs)?;
    for addr in &parsed {
        let refuse = |why: &str| Err(format!("{SETTING}: \"{addr}\" {why}"));
        let mut transport = false;
        for protocol in addr.iter() {
            match protocol {
                Protocol::P2p(_) => {
                    return refuse(
                        "contains /p2p/<peer id>: give the address without it; the relay adds its own peer id",
                    );
                }
                Protocol::P2pCircuit => {
                    return refuse("is a relayed (p2p-circuit) address: give the relay's own public address");
                }
                Protocol::Ip4(ip) if ip.is_unspecified() => {
                    return refuse("is not a public address: give the IP address users reach, not 0.0.0.0");
                }
                Protocol::Ip6(ip) if ip.is_unspecified() => {
                    return refuse("is not a public address: give the IP address users reach, not ::");
                }
                Protocol::Tcp(0) | Protocol::Udp(0) => {
                    return refuse("has port 0: give the fixed port the relay listens on");
                }
                Protocol::Tcp(_) | Protocol::QuicV1 => transport = true,
                _ => {}
            }
        }
        if !transport {
            return refuse("names no transport: end it in /tcp/<port> or /udp/<port>/quic-v1");
        }
    }
    Ok(parsed)
}

fn parse_metrics(addr: &str) -> Result<SocketAddr, String> {
    let parsed: SocketAddr = addr.parse().map_err(|_| {
        format!("relay.metrics = \"{addr}\" is not an IP address and port: use e.g. \"127.0.0.1:9464\"")
    })?;
    if parsed.port() == 0 {
        return Err(format!(
            "relay.metrics = \"{addr}\" has port 0: give a fixed port, e.g. \"127.0.0.1:9464\""
        ));
    }
    Ok(parsed)
}

/// Checks an optional number against `allowed` and converts it.
fn number<T: TryFrom<i64>>(
    setting: &str,
    value: Option<i64>,
    allowed: RangeInclusive<i64>,
    unit: &str,
) -> Result<Option<T>, String> {
    let Some(value) = value else { return Ok(None) };
    let refused = || {
        format!(
            "{setting} = {value} is not allowed: use a number of {unit} from {} to {}",
            allowed.start(),
            allowed.end()
        )
    };
    if !allowed.contains(&value) {
        return Err(refused());
    }
    T::try_from(value).map(Some).map_err(|_| refused())
}

fn rate(setting: &str, raw: RawRate) -> Result<RateSetting, String> {
    let check = |field: &str, value: i64| {
        number::<u32>(&format!("{setting}.{field}"), Some(value), RATE, "requests")
            .map(|v| v.unwrap_or_default())
    };
    Ok(RateSetting { per_second: check("per_second", raw.per_second)?, burst: check("burst", raw.burst)? })
}

#[cfg(test)]
mod tests {
    use super::*;

    const RELAY: &str = r#"
role = "relay"
listen = ["/ip4/0.0.0.0/tcp/4001", "/ip4/0.0.0.0/udp/4001/quic-v1"]

[relay]
public_addresses = ["/ip4/203.0.113.7/tcp/4001", "/ip4/203.0.113.7/udp/4001/quic-v1"]
storage = "/var/lib/merpati-relay/mailboxes"
metrics = "127.0.0.1:9464"
ttl_days = 30
max_envelope_bytes = 65536
mailbox_max_envelopes = 10000
mailbox_max_mib = 64
disk_budget_mib = 1024
max_mailboxes = 100000
network_max_mib = 64
peer_max_mib = 32
ipv6_block_max_mib = 256
unfetched_ttl_days = 7
live_reserve_percent = 20
max_fetch_marks = 1000000
network_max_fetch_marks = 50000
ipv6_block_max_fetch_marks = 200000
peer_rate = { per_second = 100, burst = 500 }
ip_rate = { per_second = 400, burst = 2000 }
ipv6_block_rate = { per_second = 1600, burst = 8000 }
max_reservations = 1024
max_circuits = 256
blob_budget_mib = 2048
blob_user_mib = 256
blob_ttl_days = 30
"#;

    #[test]
    fn reads_settings_and_refuses_mistakes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("merpatid.toml");
        assert_eq!(FileConfig::load_if_present(&path).unwrap(), FileConfig::default());
        std::fs::write(&path, "listen = [\"/ip4/0.0.0.0/tcp/4001\"]\nmdns = false\n").unwrap();
        let config = FileConfig::load(&path).unwrap();
        assert_eq!(config.mdns, Some(false));
        assert_eq!(config.role, None);
        assert_eq!(config.relay, None);
        assert_eq!(config.listen.unwrap()[0].to_string(), "/ip4/0.0.0.0/tcp/4001");
        std::fs::write(&path, "lisen = []\n").unwrap();
        let error = FileConfig::load(&path).unwrap_err().to_string();
        assert!(error.contains("lisen"), "{error}");
        std::fs::write(&path, "listen = [\"not an address\"]\n").unwrap();
        assert!(matches!(FileConfig::load(&path), Err(ConfigError::Invalid { .. })));
    }

    #[test]
    fn reads_a_full_relay_config() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("relay.toml");
        std::fs::write(&path, RELAY).unwrap();
        let config = FileConfig::load(&path).unwrap();
        assert_eq!(config.role, Some(Role::Relay));
        assert_eq!(config.listen.as_ref().map(Vec::len), Some(2));
        let relay = config.relay.unwrap();
        let public: Vec<String> = relay.public_addresses.unwrap().iter().map(ToString::to_string).collect();
        assert_eq!(public, ["/ip4/203.0.113.7/tcp/4001", "/ip4/203.0.113.7/udp/4001/quic-v1"]);
        assert_eq!(relay.storage, Some(PathBuf::from("/var/lib/merpati-relay/mailboxes")));
        assert_eq!(relay.metrics, Some("127.0.0.1:9464".parse().unwrap()));
        assert_eq!(relay.ttl_days, Some(RelaySection::DEFAULT_TTL_DAYS));
        assert_eq!(relay.max_envelope_bytes, Some(RelaySection::DEFAULT_MAX_ENVELOPE_BYTES));
        assert_eq!(relay.mailbox_max_envelopes, Some(RelaySection::DEFAULT_MAILBOX_MAX_ENVELOPES));
        assert_eq!(relay.mailbox_max_mib, Some(RelaySection::DEFAULT_MAILBOX_MAX_MIB));
        assert_eq!(relay.disk_budget_mib, Some(RelaySection::DEFAULT_DISK_BUDGET_MIB));
        assert_eq!(relay.max_mailboxes, Some(RelaySection::DEFAULT_MAX_MAILBOXES));
        assert_eq!(relay.network_max_mib, Some(RelaySection::DEFAULT_NETWORK_MAX_MIB));
        assert_eq!(relay.unfetched_ttl_days, Some(RelaySection::DEFAULT_UNFETCHED_TTL_DAYS));
        assert_eq!(relay.peer_rate, Some(RelaySection::DEFAULT_PEER_RATE));
        assert_eq!(relay.ip_rate, Some(RelaySection::DEFAULT_IP_RATE));
        assert_eq!(relay.max_reservations, Some(RelaySection::DEFAULT_MAX_RESERVATIONS));
        assert_eq!(relay.max_circuits, Some(RelaySection::DEFAULT_MAX_CIRCUITS));
        assert_eq!(relay.blob_budget_mib, Some(RelaySection::DEFAULT_BLOB_BUDGET_MIB));
        assert_eq!(relay.blob_user_mib, Some(RelaySection::DEFAULT_BLOB_USER_MIB));
        assert_eq!(relay.blob_ttl_days, Some(RelaySection::DEFAULT_BLOB_TTL_DAYS));
    }

    /// `docs/relay-operators.md` shows the operators' example whole, as it is.
    #[test]
    fn the_operators_guide_shows_the_example_as_it_is() {
        let example = include_str!("../../../contrib/relay.toml");
        let guide = include_str!("../../../docs/relay-operators.md");
        let start = guide.find("```toml\n").map(|i| i + "```toml\n".len()).unwrap();
        let end = start + guide[start..].find("```\n").unwrap();
        assert_eq!(&guide[start..end], example, "copy contrib/relay.toml into the guide's toml block");
    }

    /// The operators' example (`contrib/relay.toml`, shown in `docs/relay-operators.md`) loads and
    /// states the defaults.
    #[test]
    fn the_operators_example_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../contrib/relay.toml");
        let config = FileConfig::load(&path).unwrap();
        assert_eq!(config.role, Some(Role::Relay));
        let relay = config.relay.unwrap();
        assert_eq!(relay.public_addresses.map(|a| a.len()), Some(2));
        assert_eq!(relay.storage, None);
        assert_eq!(relay.metrics, Some("127.0.0.1:9464".parse().unwrap()));
        let defaults = RelaySection {
            public_addresses: None,
            metrics: None,
            ttl_days: Some(RelaySection::DEFAULT_TTL_DAYS),
            max_envelope_bytes: Some(RelaySection::DEFAULT_MAX_ENVELOPE_BYTES),
            mailbox_max_envelopes: Some(RelaySection::DEFAULT_MAILBOX_MAX_ENVELOPES),
            mailbox_max_mib: Some(RelaySection::DEFAULT_MAILBOX_MAX_MIB),
            disk_budget_mib: Some(RelaySection::DEFAULT_DISK_BUDGET_MIB),
            max_mailboxes: Some(RelaySection::DEFAULT_MAX_MAILBOXES),
            network_max_mib: Some(RelaySection::DEFAULT_NETWORK_MAX_MIB),
            peer_max_mib: Some(RelaySection::DEFAULT_PEER_MAX_MIB),
            ipv6_block_max_mib: Some(RelaySection::DEFAULT_IPV6_BLOCK_MAX_MIB),
            unfetched_ttl_days: Some(RelaySection::DEFAULT_UNFETCHED_TTL_DAYS),
            live_reserve_percent: Some(RelaySection::DEFAULT_LIVE_RESERVE_PERCENT),
            max_fetch_marks: Some(RelaySection::DEFAULT_MAX_FETCH_MARKS),
            network_max_fetch_marks: Some(RelaySection::DEFAULT_NETWORK_MAX_FETCH_MARKS),
            ipv6_block_max_fetch_marks: Some(RelaySection::DEFAULT_IPV6_BLOCK_MAX_FETCH_MARKS),
            peer_rate: Some(RelaySection::DEFAULT_PEER_RATE),
            ip_rate: Some(RelaySection::DEFAULT_IP_RATE),
            ipv6_block_rate: Some(RelaySection::DEFAULT_IPV6_BLOCK_RATE),
            max_reservations: Some(RelaySection::DEFAULT_MAX_RESERVATIONS),
            max_circuits: Some(RelaySection::DEFAULT_MAX_CIRCUITS),
            blob_budget_mib: Some(RelaySection::DEFAULT_BLOB_BUDGET_MIB),
            blob_user_mib: Some(RelaySection::DEFAULT_BLOB_USER_MIB),
            blob_ttl_days: Some(RelaySection::DEFAULT_BLOB_TTL_DAYS),
            storage: None,
        };
        assert_eq!(RelaySection { public_addresses: None, metrics: None, ..relay }, defaults);
    }

    #[test]
    fn relay_settings_are_optional() {
        assert_eq!(parse("role = \"user\"\n").unwrap().role, Some(Role::User));
        // `merpatid --relay` with a file that only has the section.
        let config = parse("[relay]\nttl_days = 7\n").unwrap();
        assert_eq!(config.role, None);
        assert_eq!(config.relay, Some(RelaySection { ttl_days: Some(7), ..RelaySection::default() }));
        assert_eq!(parse("role = \"relay\"\n[relay]\n").unwrap().relay, Some(RelaySection::default()));
        let ipv6 = parse("[relay]\npublic_addresses = [\"/ip6/2001:db8::7/udp/4001/quic-v1\"]\n").unwrap();
        assert_eq!(ipv6.relay.unwrap().public_addresses.unwrap().len(), 1);
        let dns = parse("[relay]\npublic_addresses = [\"/dns4/relay.example.org/tcp/4001\"]\n").unwrap();
        assert!(dns.relay.is_some());
    }

    /// Each mistake is refused with a message naming the setting (and, where it helps, what
    /// is allowed).
    #[test]
    fn refuses_each_relay_mistake() {
        let peer = "12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA";
        let cases: &[(&str, &[&str])] = &[
            ("role = \"relai\"", &["role", "\"user\" or \"relay\""]),
            ("role = \"user\"\n[relay]\nttl_days = 7", &["[relay]", "role = \"relay\""]),
            ("[relay]\nttl_dayz = 7", &["ttl_dayz"]),
            ("[relay]\nttl_days = 0", &["relay.ttl_days", "1 to 365"]),
            ("[relay]\nttl_days = 366", &["relay.ttl_days", "1 to 365"]),
            ("[relay]\nttl_days = -1", &["relay.ttl_days"]),
            ("[relay]\nttl_days = \"30\"", &["ttl_days"]),
            ("[relay]\nmax_envelope_bytes = 1023", &["relay.max_envelope_bytes", "1024 to 65536"]),
            ("[relay]\nmax_envelope_bytes = 65537", &["relay.max_envelope_bytes", "1024 to 65536"]),
            ("[relay]\nmailbox_max_envelopes = 0", &["relay.mailbox_max_envelopes"]),
            ("[relay]\nmailbox_max_mib = 0", &["relay.mailbox_max_mib"]),
            ("[relay]\nmailbox_max_mib = 67108864", &["relay.mailbox_max_mib"]),
            ("[relay]\ndisk_budget_mib = 0", &["relay.disk_budget_mib"]),
            (
                "[relay]\nttl_days = 10\nunfetched_ttl_days = 20",
                &["relay.unfetched_ttl_days", "relay.ttl_days"],
            ),
            ("[relay]\nlive_reserve_percent = 95", &["relay.live_reserve_percent", "0 to 90"]),
            ("[relay]\nnetwork_max_mib = 0", &["relay.network_max_mib"]),
            ("[relay]\ndisk_budget_mib = 32", &["relay.mailbox_max_mib", "relay.disk_budget_mib"]),
            ("[relay]\nmax_mailboxes = 0", &["relay.max_mailboxes"]),
            ("[relay]\nmax_reservations = 0", &["relay.max_reservations"]),
            ("[relay]\nmax_circuits = 0", &["relay.max_circuits"]),
            ("[relay]\nmax_circuits = 99999999999", &["relay.max_circuits"]),
            ("[relay]\nblob_user_mib = 10", &["relay.blob_user_mib", "28 to"]),
            ("[relay]\nblob_budget_mib = 100", &["relay.blob_user_mib", "relay.blob_budget_mib"]),
            ("[relay]\nblob_ttl_days = 0", &["relay.blob_ttl_days", "1 to 365"]),
            ("[relay]\npeer_rate = { per_second = 0, burst = 5 }", &["relay.peer_rate.per_second"]),
            ("[relay]\nip_rate = { per_second = 5, burst = 0 }", &["relay.ip_rate.burst"]),
            ("[relay]\nip_rate = { per_second = 5 }", &["burst"]),
            ("[relay]\npeer_rate = { per_second = 5, burst = 5, per_minute = 1 }", &["per_minute"]),
            ("[relay]\nmetrics = \"localhost\"", &["relay.metrics", "127.0.0.1:9464"]),
            ("[relay]\nmetrics = \"127.0.0.1:0\"", &["relay.metrics", "port 0"]),
            ("[relay]\nstorage = \"mailboxes\"", &["relay.storage", "absolute"]),
            ("[relay]\npublic_addresses = []", &["relay.public_addresses", "empty"]),
            (
                "[relay]\npublic_addresses = [\"203.0.113.7:4001\"]",
                &["relay.public_addresses", "not an address"],
            ),
            (
                "[relay]\npublic_addresses = [\"/ip4/0.0.0.0/tcp/4001\"]",
                &["relay.public_addresses", "0.0.0.0"],
            ),
            ("[relay]\npublic_addresses = [\"/ip6/::/tcp/4001\"]", &["relay.public_addresses", "::"]),
            (
                "[relay]\npublic_addresses = [\"/ip4/203.0.113.7/tcp/0\"]",
                &["relay.public_addresses", "port 0"],
            ),
            ("[relay]\npublic_addresses = [\"/ip4/203.0.113.7\"]", &["relay.public_addresses", "transport"]),
        ];
        for (text, wanted) in cases {
            let error = parse(text).expect_err(text);
            for word in *wanted {
                assert!(error.contains(word), "{text:?}: {error:?} should mention {word:?}");
            }
        }
        let with_peer = format!("[relay]\npublic_addresses = [\"/ip4/203.0.113.7/tcp/4001/p2p/{peer}\"]");
        let error = parse(&with_peer).unwrap_err();
        assert!(error.contains("relay.public_addresses") && error.contains("/p2p"), "{error}");
        let circuit =
            format!("[relay]\npublic_addresses = [\"/ip4/203.0.113.7/tcp/4001/p2p/{peer}/p2p-circuit\"]");
        let error = parse(&circuit).unwrap_err();
        assert!(error.contains("relay.public_addresses"), "{error}");
        let circuit_only = "[relay]\npublic_addresses = [\"/ip4/203.0.113.7/tcp/4001/p2p-circuit\"]";
        let error = parse(circuit_only).unwrap_err();
        assert!(error.contains("p2p-circuit"), "{error}");
    }

    #[test]
    fn a_refusal_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("relay.toml");
        std::fs::write(&path, "[relay]\nttl_days = 0\n").unwrap();
        let error = FileConfig::load(&path).unwrap_err().to_string();
        assert!(error.contains("relay.toml") && error.contains("relay.ttl_days"), "{error}");
    }
}
