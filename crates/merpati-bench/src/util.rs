//! What the scenarios share: statistics, `/proc` readings, starting daemons, the output line.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use anyhow::Context as _;
use merpati_control::client::Client;
use merpati_control::home::Home;
use serde_json::{Value, json};

/// Prints one scenario's JSON object on stdout.
pub(crate) fn report(scenario: &str, params: Value, figures: Value) {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    #[allow(clippy::print_stdout)] // the figures are the program's output
    {
        println!("{}", json!({ "scenario": scenario, "params": params, "figures": figures, "cores": cores }));
    }
}

/// Median, p99 and max of a set of durations, in the unit `scale` gives (µs or ms).
pub(crate) fn summary(mut samples: Vec<Duration>, unit: Unit) -> Value {
    if samples.is_empty() {
        return json!(null);
    }
    samples.sort();
    let pick = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
    let f = |d: Duration| unit.of(d);
    json!({
        "p50": f(pick(0.50)),
        "p99": f(pick(0.99)),
        "max": f(*samples.last().unwrap_or(&Duration::ZERO)),
        "samples": samples.len(),
    })
}

/// The unit a latency is reported in.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Unit {
    Micros,
    Millis,
}

impl Unit {
    fn of(self, d: Duration) -> f64 {
        match self {
            Unit::Micros => round(d.as_secs_f64() * 1e6, 2),
            Unit::Millis => round(d.as_secs_f64() * 1e3, 3),
        }
    }
}

/// `x` rounded to `digits` decimals.
pub(crate) fn round(x: f64, digits: i32) -> f64 {
    let scale = 10f64.powi(digits);
    (x * scale).round() / scale
}

/// A `/proc/<pid>/status` value in KiB (`VmRSS`, `VmHWM`).
pub(crate) fn status_kib(pid: u32, key: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .with_context(|| format!("no {key} in /proc/{pid}/status"))
}

/// Resident memory in KiB.
pub(crate) fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    status_kib(pid, "VmRSS")
}

/// Peak resident memory in KiB.
pub(crate) fn peak_rss_kib(pid: u32) -> anyhow::Result<u64> {
    status_kib(pid, "VmHWM")
}

/// KiB to MiB, one decimal.
pub(crate) fn mib(kib: u64) -> f64 {
    round(kib as f64 / 1024.0, 1)
}

/// User plus system CPU time of a process, in seconds.
pub(crate) fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).context("bad /proc stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11).and_then(|u| u.parse::<f64>().ok()).unwrap_or(0.0)
        + fields.get(12).and_then(|s| s.parse::<f64>().ok()).unwrap_or(0.0);
    // USER_HZ is 100 on Linux.
    Ok(ticks / 100.0)
}

/// The total size of the files under `dir`, in bytes.
pub(crate) fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .map(|entry| match entry.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&entry.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// Raises this process's open-file limit to its hard limit (children inherit it): thousands of
/// connections need thousands of descriptors, on both ends.
pub(crate) fn raise_nofile() -> u64 {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.maximum.is_some() && limit.current != limit.maximum {
        limit.current = limit.maximum;
        let _ = setrlimit(Resource::Nofile, limit);
    }
    getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX)
}

/// A free TCP port on 127.0.0.1 (free when asked; good enough on a quiet loopback).
pub(crate) fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A `merpatid` process started by the bench, killed when dropped.
#[derive(Debug)]
pub(crate) struct Daemon {
    /// Its home.
    pub(crate) home: Home,
    /// The JSON line it printed once ready.
    pub(crate) ready: Value,
    child: Child,
}

impl Daemon {
    /// Starts `exe --home HOME ARGS…` and waits for its ready line.
    pub(crate) fn start(exe: &Path, home: &Path, args: &[&str]) -> anyhow::Result<Daemon> {
        let home = Home::at(home.to_path_buf())?;
        home.create_dir()?;
        let mut command = Command::new(exe);
        command.arg("--home").arg(home.dir()).args(args);
        let (child, ready) =
            merpati_node::local::spawn_until_ready(command, &home.dir().join("merpatid.log"))?;
        Ok(Daemon { home, ready, child })
    }

    /// The process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A control-API client (user nodes only).
    pub(crate) fn client(&self) -> anyhow::Result<Client> {
        Ok(Client::connect(&self.home)?)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A community relay on 127.0.0.1 whose request rates and quotas per depositor are raised so a
/// benchmark (all of whose clients share one address) is not throttled; `extra` is appended to
/// its `[relay]` section.
#[derive(Debug)]
pub(crate) struct Relay {
    pub(crate) daemon: Daemon,
    /// Its peer id.
    pub(crate) peer: libp2p::PeerId,
    /// Its address, ending in `/p2p/<peer id>`.
    pub(crate) addr: libp2p::Multiaddr,
    /// Its TCP port.
    pub(crate) port: u16,
}

impl Relay {
    pub(crate) fn start(exe: &Path, home: &Path, extra: &str) -> anyhow::Result<Relay> {
        Self::start_on(exe, home, extra, 0)
    }

    /// Like [`Relay::start`], on TCP port `port` (any free one for 0): a relay started again on
    /// its home and port is the same relay at the same address.
    pub(crate) fn start_on(exe: &Path, home: &Path, extra: &str, port: u16) -> anyhow::Result<Relay> {
        let section = format!(
            "peer_rate = {{ per_second = 1000000, burst = 1000000 }}\n\
             ip_rate = {{ per_second = 1000000, burst = 1000000 }}\n\
             network_max_mib = 16384\n\
             peer_max_mib = 16384\n{extra}"
        );
        Self::start_configured(exe, home, &section, port)
    }

    /// A relay with exactly `section` as its `[relay]` section (its own limits, nothing raised),
    /// on TCP port `port` of 127.0.0.1 (any free one for 0).
    pub(crate) fn start_configured(
        exe: &Path,
        home: &Path,
        section: &str,
        port: u16,
    ) -> anyhow::Result<Relay> {
        std::fs::create_dir_all(home)?;
        let config: PathBuf = home.join("bench-relay.toml");
        std::fs::write(&config, format!("role = \"relay\"\n[relay]\n{section}"))?;
        let config = config.display().to_string();
        let listen = format!("/ip4/127.0.0.1/tcp/{port}");
        let daemon = Daemon::start(exe, home, &["--relay", "--config", &config, "--listen", &listen])?;
        let addr: libp2p::Multiaddr =
            daemon.ready["public"][0].as_str().context("the relay announced no public address")?.parse()?;
        let peer = daemon.ready["peer_id"].as_str().context("no peer id")?.parse()?;
        let port = addr
            .iter()
            .find_map(|p| match p {
                libp2p::multiaddr::Protocol::Tcp(port) => Some(port),
                _ => None,
            })
            .context("the relay's address has no TCP port")?;
        Ok(Relay { daemon, peer, addr, port })
    }

    pub(crate) fn pid(&self) -> u32 {
        self.daemon.pid()
    }

    /// The mailbox store's directory.
    pub(crate) fn mailboxes_dir(&self) -> PathBuf {
        self.daemon.home.dir().join("mailboxes")
    }
}

/// Takes a reservation on `relay` with a network of the bench's own, and holds it while the
/// handle lives: a relay started with `max_reservations = 1` then gives none to the nodes under
/// test, so no circuit leads to them.
pub(crate) async fn hold_reservation(
    relay: &Relay,
    shutdown: &tokio_util::sync::CancellationToken,
) -> anyhow::Result<merpati_node::net::Handle> {
    let handle = client_net(shutdown).await?;
    handle.set_relays(vec![relay.addr.clone()]).await?;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !handle.relays().await.first().is_some_and(|r| r.reserved) {
        if std::time::Instant::now() > deadline {
            anyhow::bail!("the bench got no reservation on the relay");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(handle)
}

/// A user node's network in this process: dials out only, no mDNS. For relay clients.
pub(crate) async fn client_net(
    shutdown: &tokio_util::sync::CancellationToken,
) -> anyhow::Result<merpati_node::net::Handle> {
    let config = merpati_node::net::Config::default()
        .with_listen_addrs(Vec::new())
        .with_mdns(false)
        .with_idle_connection_timeout(Duration::from_secs(600));
    let keypair = libp2p::identity::Keypair::generate_ed25519();
    let (handle, mut inbound, _task) =
        merpati_node::net::spawn(config, keypair, shutdown.child_token()).await?;
    // Nobody delivers to a client; drain its events so its queue never fills.
    tokio::spawn(async move { while inbound.recv().await.is_some() {} });
    Ok(handle)
}

/// A TCP forwarder on 127.0.0.1 to `target_port` whose upstream connections come from `source`
/// (a loopback address of its own); returns its port. A relay keeps its limits per network, so
/// clients that reach it through forwarders of different sources count as different networks,
/// as they would from different hosts. Runs on the current runtime until it ends.
pub(crate) async fn source_forwarder(target_port: u16, source: std::net::Ipv4Addr) -> anyhow::Result<u16> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    tokio::spawn(async move {
        while let Ok((mut downstream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let upstream = async {
                    let socket = tokio::net::TcpSocket::new_v4()?;
                    socket.bind((source, 0).into())?;
                    socket.connect(([127, 0, 0, 1], target_port).into()).await
                };
                if let Ok(mut upstream) = upstream.await {
                    let _ = downstream.set_nodelay(true);
                    let _ = upstream.set_nodelay(true);
                    let _ = tokio::io::copy_bidirectional(&mut downstream, &mut upstream).await;
                }
            });
        }
    });
    Ok(port)
}

/// A multi-threaded runtime with two workers (the machine's size; the daemons use two too).
pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?)
}

/// A node key for an engine the bench runs in process (its libp2p key, as the daemon stores it).
pub(crate) fn node_key() -> Vec<u8> {
    libp2p::identity::Keypair::generate_ed25519().to_protobuf_encoding().unwrap_or_default()
}

/// A contact the bench plays in process: a new identity named `name`, with an in-memory store.
pub(crate) fn contact_engine(
    name: &str,
    now: merpati_proto::Timestamp,
) -> anyhow::Result<merpati_node::engine::Engine<merpati_node::store::MemoryStore>> {
    let mut rng = merpati_node::daemon::os_rng()?;
    let me = merpati_node::engine::Me {
        identity: merpati_proto::identity::IdentityKey::generate(&mut rng),
        device_static: merpati_proto::keys::X25519Secret::generate(&mut rng),
        inbox_secret: merpati_proto::keys::SymmetricKey::generate(&mut rng),
        name: Some(name.to_owned()),
        created_at: now,
    };
    let store = merpati_node::store::MemoryStore::new();
    Ok(merpati_node::engine::Engine::start(store, me, node_key, now, rng)?)
}
