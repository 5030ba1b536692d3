//! Running a community relay: the node key, the mailbox and blob services on disk, the network in
//! the relay role, the metrics endpoint and the maintenance tasks, until shutdown.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use futures::future::BoxFuture;
use libp2p::identity::Keypair;
use libp2p::{Multiaddr, PeerId};
use merpati_control::home::Home;
use merpati_proto::wire::{Refusal, blob, deliver, mailbox};
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

use super::metrics::BlobMetrics;
use super::{
    BlobLimits, BlobService, Blobs, MailboxLimits, MailboxMetrics, MailboxService, Mailboxes, Rate,
    RateLimits,
};
use crate::clock::Clock;
use crate::net::{self, BlobServer, MailboxServer};

/// How often expired envelopes are purged and the stored-bytes gauges refreshed.
pub const MAINTENANCE_EVERY: Duration = Duration::from_secs(600);
/// The relay's node key file inside its home: keep it, or users' relay addresses stop working.
pub const NODE_KEY_FILE: &str = "relay.key";
/// Connections a relay accepts at once: many idle user nodes each keep one.
pub const MAX_CONNECTIONS: u32 = 20_000;

/// Everything a relay needs to start.
#[derive(Debug, Clone)]
pub struct RelayOptions {
    /// The relay's home (node key, lock, default storage).
    pub home: Home,
    /// Addresses to listen on.
    pub listen: Vec<Multiaddr>,
    /// Public addresses announced to clients; empty: the listen addresses.
    pub public_addrs: Vec<Multiaddr>,
    /// Where mailboxes are stored; default `<home>/mailboxes`.
    pub storage: Option<PathBuf>,
    /// Where to serve metrics, if anywhere.
    pub metrics: Option<SocketAddr>,
    /// What the mailboxes may hold.
    pub limits: MailboxLimits,
    /// What the file store may hold.
    pub blob_limits: BlobLimits,
    /// Request rates per peer and per address.
    pub rates: RateLimits,
    /// Relay v2 reservations at once.
    pub max_reservations: usize,
    /// Relayed connections at once.
    pub max_circuits: usize,
    /// Where every timestamp comes from (deposit times, expiry).
    pub clock: Clock,
}

impl RelayOptions {
    /// A relay in `home` with every default: TCP and QUIC on port 4001 of every interface.
    pub fn new(home: Home) -> Self {
        let defaults = net::RelayServer::default();
        Self {
            home,
            listen: default_listen(),
            public_addrs: Vec::new(),
            storage: None,
            metrics: None,
            limits: MailboxLimits::default(),
            blob_limits: BlobLimits::default(),
            rates: RateLimits::default(),
            max_reservations: defaults.max_reservations,
            max_circuits: defaults.max_circuits,
            clock: Clock::system(),
        }
    }

    /// Applies a config file's `[relay]` section and listen addresses.
    pub fn with_file(mut self, file: &crate::config::FileConfig) -> Self {
        if let Some(listen) = &file.listen {
            self.listen = listen.clone();
        }
        let Some(relay) = &file.relay else { return self };
        if let Some(public) = &relay.public_addresses {
            self.public_addrs = public.clone();
        }
        self.storage = relay.storage.clone().or(self.storage);
        self.metrics = relay.metrics.or(self.metrics);
        let limits = &mut self.limits;
        if let Some(days) = relay.ttl_days {
            limits.ttl_ms = u64::from(days) * merpati_proto::Timestamp::DAY;
        }
        if let Some(max) = relay.max_envelope_bytes {
            limits.max_envelope_len = max as usize;
        }
        if let Some(max) = relay.mailbox_max_envelopes {
            limits.max_envelopes_per_mailbox = max;
        }
        if let Some(mib) = relay.mailbox_max_mib {
            limits.max_bytes_per_mailbox = u64::from(mib) * 1024 * 1024;
        }
        if let Some(mib) = relay.disk_budget_mib {
            limits.disk_budget = mib.saturating_mul(1024 * 1024);
        }
        if let Some(max) = relay.max_mailboxes {
            limits.max_mailboxes = u64::from(max);
        }
        if let Some(mib) = relay.network_max_mib {
            limits.max_bytes_per_network = u64::from(mib) * 1024 * 1024;
        }
        if let Some(mib) = relay.peer_max_mib {
            limits.max_bytes_per_peer = u64::from(mib) * 1024 * 1024;
        }
        if let Some(days) = relay.unfetched_ttl_days {
            limits.unfetched_ttl_ms = u64::from(days) * merpati_proto::Timestamp::DAY;
        }
        if let Some(percent) = relay.live_reserve_percent {
            limits.live_reserve_percent = percent;
        }
        if let Some(max) = relay.max_fetch_marks {
            limits.max_fetch_marks = u64::from(max);
        }
        if let Some(max) = relay.network_max_fetch_marks {
            limits.max_fetch_marks_per_network = u64::from(max);
        }
        if let Some(max) = relay.ipv6_block_max_fetch_marks {
            limits.max_fetch_marks_per_ipv6_block = u64::from(max);
        }
        if let Some(mib) = relay.ipv6_block_max_mib {
            limits.max_bytes_per_ipv6_block = u64::from(mib) * 1024 * 1024;
        }
        if let Some(mib) = relay.blob_budget_mib {
            self.blob_limits.budget = mib.saturating_mul(1024 * 1024);
        }
        if let Some(mib) = relay.blob_user_mib {
            self.blob_limits.per_user = u64::from(mib) * 1024 * 1024;
        }
        if let Some(days) = relay.blob_ttl_days {
            self.blob_limits.ttl_ms = u64::from(days) * merpati_proto::Timestamp::DAY;
        }
        if let Some(rate) = relay.peer_rate {
            self.rates.per_peer = Rate { per_second: rate.per_second, burst: rate.burst };
        }
        if let Some(rate) = relay.ip_rate {
            self.rates.per_ip = Rate { per_second: rate.per_second, burst: rate.burst };
        }
        if let Some(rate) = relay.ipv6_block_rate {
            self.rates.per_ipv6_block = Rate { per_second: rate.per_second, burst: rate.burst };
        }
        if let Some(max) = relay.max_reservations {
            self.max_reservations = max as usize;
        }
        if let Some(max) = relay.max_circuits {
            self.max_circuits = max as usize;
        }
        self
    }
}

fn default_listen() -> Vec<Multiaddr> {
    ["/ip4/0.0.0.0/tcp/4001", "/ip4/0.0.0.0/udp/4001/quic-v1"]
        .iter()
        .filter_map(|addr| addr.parse().ok())
        .collect()
}

/// What a started relay prints once it is ready (one JSON line on stdout).
#[derive(Debug, Clone, serde::Serialize)]
pub struct RelayReady {
    /// Always `"relay"`.
    pub role: &'static str,
    /// The relay's peer id.
    pub peer_id: String,
    /// Listen addresses, with `/p2p/<peer id>`.
    pub listen: Vec<String>,
    /// The addresses users should add (`merpati relay add …`), with `/p2p/<peer id>`.
    pub public: Vec<String>,
    /// The metrics endpoint, if served.
    pub metrics: Option<String>,
}

/// Runs a relay until `shutdown` is cancelled; `ready` receives the startup line.
pub async fn run(
    options: RelayOptions,
    shutdown: CancellationToken,
    ready: impl FnOnce(&RelayReady),
) -> anyhow::Result<()> {
    let home = &options.home;
    home.create_dir().context("cannot create the home directory")?;
    let _lock = crate::lock::HomeLock::acquire(&home.lock_file())?;
    let keypair = load_or_create_key(&home.dir().join(NODE_KEY_FILE))?;
    let storage = options.storage.clone().unwrap_or_else(|| home.dir().join("mailboxes"));
    std::fs::create_dir_all(&storage)
        .with_context(|| format!("cannot create the mailbox directory {}", storage.display()))?;
    let mailboxes = Mailboxes::open(&storage, options.limits)
        .with_context(|| format!("cannot open the mailboxes in {}", storage.display()))?;
    let blobs = Blobs::open(&mailboxes, options.blob_limits)
        .with_context(|| format!("cannot open the file store in {}", storage.display()))?;

    let mut registry = Registry::default();
    let libp2p_metrics = libp2p::metrics::Metrics::new(&mut registry);
    let mailbox_metrics = MailboxMetrics::register(&mut registry);
    super::process::register(&mut registry);
    let reservations = mailbox_metrics.relay_reservations_gauge();
    let blob_service = BlobService::new(blobs, options.rates, BlobMetrics::register(&mut registry));
    let service =
        MailboxService::new(&keypair.public().to_peer_id(), mailboxes, options.rates, mailbox_metrics);

    let config = net::Config::default()
        .with_listen_addrs(options.listen.clone())
        .with_mdns(false)
        .with_max_connections(MAX_CONNECTIONS)
        .with_relay_server(net::RelayServer {
            public_addrs: options.public_addrs.clone(),
            max_reservations: options.max_reservations,
            max_circuits: options.max_circuits,
        });
    let extras = net::Extras {
        mailbox_server: Some(Arc::new(Clocked { service: service.clone(), clock: options.clock.clone() })),
        blob_server: Some(Arc::new(Clocked { service: blob_service.clone(), clock: options.clock.clone() })),
        metrics: Some(libp2p_metrics),
        reservations_gauge: Some(reservations),
    };
    // libp2p binds with SO_REUSEPORT: without this a second relay would share the port.
    crate::ports::check_free(&options.listen)?;
    let (net, mut inbound, net_task) =
        net::spawn_with(config, keypair, extras, shutdown.child_token()).await?;

    let mut tasks = tokio::task::JoinSet::new();
    let metrics_addr = match options.metrics {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot serve metrics on {addr}"))?;
            let bound = listener.local_addr().context("the metrics listener has no address")?;
            tasks.spawn(super::serve_metrics(listener, Arc::new(registry), shutdown.clone()));
            Some(bound)
        }
        None => None,
    };
    {
        let service = service.clone();
        let shutdown = shutdown.clone();
        let clock = options.clock.clone();
        tasks.spawn(async move { service.run_maintenance(MAINTENANCE_EVERY, clock, shutdown).await });
    }
    {
        let service = blob_service.clone();
        let shutdown = shutdown.clone();
        let clock = options.clock.clone();
        tasks.spawn(async move { service.run_maintenance(MAINTENANCE_EVERY, clock, shutdown).await });
    }

    let peer = net.local_peer_id();
    let listen = net.listen_addrs().await;
    let public = if options.public_addrs.is_empty() {
        listen.clone()
    } else {
        options.public_addrs.iter().map(|addr| with_peer(addr, peer)).collect()
    };
    ready(&RelayReady {
        role: "relay",
        peer_id: peer.to_string(),
        listen: listen.iter().map(ToString::to_string).collect(),
        public: public.iter().map(ToString::to_string).collect(),
        metrics: metrics_addr.map(|addr| format!("http://{addr}/metrics")),
    });

    // A relay keeps mailboxes, not conversations, and does not speak the deliver protocol; should
    // a delivery reach it anyway, it is refused.
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            event = inbound.recv() => match event {
                Some(net::Event::Delivery { reply, .. }) => {
                    reply.send(deliver::Response::Refused(Refusal::UnknownMailbox));
                }
                Some(net::Event::Deliveries { batch, reply, .. }) => {
                    reply.send(vec![deliver::Response::Refused(Refusal::UnknownMailbox); batch.envelopes.len()]);
                }
                Some(_) => {}
                None => break,
            },
        }
    }
    shutdown.cancel();
    let _ = net_task.await;
    while tasks.join_next().await.is_some() {}
    // Everything answered `Stored` is already on disk; this only flushes deletions.
    let _ = service.mailboxes().flush().await;
    Ok(())
}

/// A service as the network serves it: each request stamped by the relay's clock.
struct Clocked<S> {
    service: S,
    clock: Clock,
}

impl MailboxServer for Clocked<MailboxService> {
    fn serve(
        &self,
        peer: PeerId,
        ip: Option<std::net::IpAddr>,
        request: mailbox::Request,
    ) -> BoxFuture<'static, mailbox::Response> {
        let service = self.service.clone();
        let now = self.clock.now();
        Box::pin(async move { service.handle(peer, ip, request, now).await })
    }

    fn undecodable(&self) {
        self.service.undecodable();
    }
}

impl BlobServer for Clocked<BlobService> {
    fn serve(
        &self,
        peer: PeerId,
        ip: Option<std::net::IpAddr>,
        reserved: bool,
        request: blob::Request,
    ) -> BoxFuture<'static, blob::Response> {
        let service = self.service.clone();
        let now = self.clock.now();
        Box::pin(async move { service.handle(peer, ip, reserved, request, now).await })
    }
}

fn with_peer(addr: &Multiaddr, peer: PeerId) -> Multiaddr {
    addr.clone().with_p2p(peer).unwrap_or_else(|addr| addr)
}

/// Loads the relay's node key, or creates it (readable by the owner only) on first start.
fn load_or_create_key(path: &Path) -> anyhow::Result<Keypair> {
    match std::fs::read(path) {
        Ok(bytes) => Keypair::from_protobuf_encoding(&bytes)
            .with_context(|| format!("the relay's node key {} is damaged", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let keypair = Keypair::generate_ed25519();
            let bytes = keypair.to_protobuf_encoding().context("cannot encode the new node key")?;
            let bytes = zeroize::Zeroizing::new(bytes);
            write_private(path, &bytes)
                .with_context(|| format!("cannot write the relay's node key {}", path.display()))?;
            Ok(keypair)
        }
        Err(e) => Err(e).with_context(|| format!("cannot read the relay's node key {}", path.display())),
    }
}

/// Writes `bytes` to `path` atomically with mode 0600.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let tmp = path.with_extension("tmp");
    let mut file =
        std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}
